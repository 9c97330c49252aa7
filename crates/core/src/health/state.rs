//! What active health checks know of one server. The hot path reads one atomic flag;
//! the rest is written only by the checker.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

pub struct HealthState {
    up: AtomicBool,
    consecutive_failures: AtomicU32,
    consecutive_successes: AtomicU32,
    /// The last check's latency in microseconds (0 = none yet).
    last_latency_us: AtomicU64,
    checks: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Default for HealthState {
    /// A server is up until checks say otherwise (as NGINX and Envoy without warm-up).
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            consecutive_successes: AtomicU32::new(0),
            last_latency_us: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }
}

/// A health report for status pages.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSnapshot {
    pub healthy: bool,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_latency_ms: Option<f64>,
    pub checks: u64,
    pub last_error: Option<String>,
}

impl HealthState {
    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records one check. Goes down after `fail_after` failures in a row and back up
    /// after `pass_after` successes in a row. Returns the new up/down state when it changed.
    pub fn record(
        &self,
        healthy: bool,
        latency_us: Option<u64>,
        error: Option<String>,
        fail_after: u32,
        pass_after: u32,
    ) -> Option<bool> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if let Some(us) = latency_us {
            self.last_latency_us.store(us.max(1), Ordering::Relaxed);
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
        let up = self.is_up();
        if healthy {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            let n = self.consecutive_successes.fetch_add(1, Ordering::Relaxed) + 1;
            if !up && n >= pass_after.max(1) {
                self.up.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.consecutive_successes.store(0, Ordering::Relaxed);
            let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if up && n >= fail_after.max(1) {
                self.up.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// Forgets what checks found: up, no counts (when checks stop, a server is no
    /// longer kept out by a result nobody will update).
    pub fn reset(&self) {
        self.up.store(true, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.consecutive_successes.store(0, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let us = self.last_latency_us.load(Ordering::Relaxed);
        HealthSnapshot {
            healthy: self.is_up(),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            consecutive_successes: self.consecutive_successes.load(Ordering::Relaxed),
            last_latency_ms: (us > 0).then(|| us as f64 / 1000.0),
            checks: self.checks.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_down_after_n_failures_and_up_after_m_successes() {
        let h = HealthState::default();
        assert!(h.is_up());
        assert_eq!(h.record(false, None, Some("x".into()), 3, 2), None);
        assert_eq!(h.record(false, None, None, 3, 2), None);
        assert_eq!(
            h.record(true, Some(5), None, 3, 2),
            None,
            "a success resets"
        );
        for _ in 0..2 {
            assert_eq!(h.record(false, None, None, 3, 2), None);
        }
        assert_eq!(
            h.record(false, None, Some("refused".into()), 3, 2),
            Some(false)
        );
        assert!(!h.is_up());
        assert_eq!(h.snapshot().last_error.as_deref(), Some("refused"));
        assert_eq!(h.record(true, Some(1000), None, 3, 2), None);
        assert_eq!(h.record(true, Some(1000), None, 3, 2), Some(true));
        assert_eq!(h.snapshot().last_latency_ms, Some(1.0));
    }
}
