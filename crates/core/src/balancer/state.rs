//! The runtime state of one upstream server, shared by every request and strategy that
//! sees it. It lives in the `Upstream`, so a server kept across `set_servers` keeps it.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use serde::Serialize;

use super::ewma::PeakEwma;
use crate::health::{HealthSnapshot, HealthState};
use crate::resilience::{BreakerConfig, BreakerSnapshot, BreakerState, OutlierState};

#[derive(Default)]
pub struct ServerState {
    /// Requests sent and not yet finished (response body done or dropped).
    pub in_flight: AtomicU32,
    /// The weight `WeightedStrategy` uses (≥ 1).
    pub weight: AtomicU32,
    /// Smooth weighted round robin's running weight; only touched under that strategy's lock.
    pub swrr_current: AtomicI64,
    pub latency: PeakEwma,
    pub health: HealthState,
    pub breaker: BreakerState,
    pub outlier: OutlierState,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
}

impl ServerState {
    pub fn with_weight(weight: u32) -> Self {
        let state = Self::default();
        state.weight.store(weight.max(1), Ordering::Relaxed);
        state
    }

    #[inline]
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed).max(1)
    }
}

/// One server as status pages show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    pub url: String,
    /// Up by health checks, not ejected, and its breaker admits requests.
    pub available: bool,
    pub weight: u32,
    pub in_flight: u32,
    pub requests: u64,
    pub failures: u64,
    /// Peak-EWMA latency of recent responses.
    pub latency_ms: f64,
    pub health: HealthSnapshot,
    pub breaker: Option<BreakerSnapshot>,
    pub ejected_ms_left: Option<u64>,
}

impl ServerState {
    pub fn status(
        &self,
        url: &str,
        available: bool,
        breaker: Option<&BreakerConfig>,
        now: u64,
    ) -> ServerStatus {
        ServerStatus {
            url: url.to_string(),
            available,
            weight: self.weight(),
            in_flight: self.in_flight(),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            latency_ms: self.latency.estimate_ns() / 1e6,
            health: self.health.snapshot(),
            breaker: breaker.map(|cfg| self.breaker.snapshot(cfg, now)),
            ejected_ms_left: self.outlier.ejected_ms_left(now),
        }
    }
}
