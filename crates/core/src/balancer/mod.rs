//! Load balancers: a set of upstream servers and a strategy that picks one per request.
//! The server list is an immutable snapshot swapped atomically, so readers on the hot
//! path never lock and a change never disturbs requests already in flight. A pick
//! offers the strategy only servers that may take the request: up by health checks, not
//! ejected by outlier detection, admitted by their circuit breaker.

mod ewma;
mod lease;
mod selector;
mod state;
mod strategies;
mod upstream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

pub use lease::{InFlight, Lease, Outcome, Outcomes};
pub use selector::{AsyncSelector, OwnedPickContext, SelectFuture};
pub use state::{ServerState, ServerStatus};
pub use strategies::{
    Candidates, ConsistentHash, HashKey, LeastConnections, PickContext, PowerOfTwoChoices, Random,
    RoundRobin, Strategy, Weighted,
};
pub use upstream::{Upstream, UpstreamUrlError};

use crate::error::{ErrorCode, GatewayError};
use crate::resilience::{clock, may_eject, Admission, BreakerConfig, OutlierConfig};
use crate::status_set::StatusSet;

/// A server URL and its weight (≥ 1; only `WeightedStrategy` reads it).
pub type ServerSpec = (String, u32);

pub struct LoadBalancer {
    servers: ArcSwap<Vec<Arc<Upstream>>>,
    strategy: Box<dyn Strategy>,
    /// A user's own strategy (e.g. JS); `strategy` is then its fallback.
    selector: OnceLock<Arc<dyn AsyncSelector>>,
    /// One breaker per server with these settings, once installed.
    breaker: OnceLock<BreakerConfig>,
    /// Passive outlier detection, once installed.
    outlier: OnceLock<OutlierConfig>,
    /// Response statuses that count as failures (default 5xx).
    failure_status: OnceLock<StatusSet>,
    /// Serialises ejection decisions, so racing failures cannot eject past the limit.
    ejecting: std::sync::Mutex<()>,
    fallbacks: AtomicU64,
}

impl LoadBalancer {
    pub fn new(urls: &[String], strategy: Box<dyn Strategy>) -> Result<Self, UpstreamUrlError> {
        let specs: Vec<ServerSpec> = urls.iter().map(|u| (u.clone(), 1)).collect();
        Self::weighted(&specs, strategy)
    }

    pub fn weighted(
        servers: &[ServerSpec],
        strategy: Box<dyn Strategy>,
    ) -> Result<Self, UpstreamUrlError> {
        let parsed = servers
            .iter()
            .map(|(url, w)| Upstream::parse_weighted(url, *w).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            servers: ArcSwap::from_pointee(parsed),
            strategy,
            selector: OnceLock::new(),
            breaker: OnceLock::new(),
            outlier: OnceLock::new(),
            failure_status: OnceLock::new(),
            ejecting: std::sync::Mutex::new(()),
            fallbacks: AtomicU64::new(0),
        })
    }

    /// One server, round robin: what `forwardTo(url)` and `route(…, { upstream })` use.
    pub fn single(url: &str) -> Result<Self, UpstreamUrlError> {
        Self::new(&[url.to_string()], Box::<RoundRobin>::default())
    }

    /// Installs a user strategy. The built-in strategy stays as its fallback for when the
    /// selector fails, times out or names a server that is not in the list.
    pub fn set_selector(&self, selector: Arc<dyn AsyncSelector>) -> bool {
        self.selector.set(selector).is_ok()
    }

    /// Gives every server a circuit breaker with `config`; `failure_status` are the
    /// response statuses it counts as failures (5xx when `None`). False if one was
    /// installed before.
    pub fn set_breaker(&self, config: BreakerConfig, failure_status: Option<StatusSet>) -> bool {
        let installed = self.breaker.set(config).is_ok();
        if installed {
            if let Some(set) = failure_status {
                let _ = self.failure_status.set(set);
            }
        }
        installed
    }

    /// How a response with `status` counts for the breaker (its `failureStatusCodes`,
    /// 5xx by default) and for outlier detection (5xx).
    pub fn outcomes_of_status(&self, status: u16) -> Outcomes {
        let of = |failed: bool| {
            if failed {
                Outcome::Failure
            } else {
                Outcome::Success
            }
        };
        let server_error = (500..600).contains(&status);
        Outcomes {
            breaker: of(self
                .failure_status
                .get()
                .map_or(server_error, |set| set.contains(status))),
            outlier: of(server_error),
        }
    }

    pub fn breaker_config(&self) -> Option<&BreakerConfig> {
        self.breaker.get()
    }

    /// Turns on passive outlier detection. False if it was on.
    pub fn set_outlier_detection(&self, config: OutlierConfig) -> bool {
        self.outlier.set(config).is_ok()
    }

    /// How often a user strategy's answer was replaced by the fallback.
    pub fn fallback_count(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Replaces the server list atomically (weight 1 for new servers, kept weights for
    /// servers that stay). Servers whose URL stays keep their state and connections.
    pub fn set_servers(&self, urls: &[String]) -> Result<(), UpstreamUrlError> {
        let old = self.servers.load();
        let specs: Vec<(String, Option<u32>)> = urls.iter().map(|u| (u.clone(), None)).collect();
        self.replace(&old, &specs)
    }

    /// Replaces the server list and weights atomically.
    pub fn set_weighted_servers(&self, servers: &[ServerSpec]) -> Result<(), UpstreamUrlError> {
        let old = self.servers.load();
        let specs: Vec<(String, Option<u32>)> =
            servers.iter().map(|(u, w)| (u.clone(), Some(*w))).collect();
        self.replace(&old, &specs)
    }

    fn replace(
        &self,
        old: &[Arc<Upstream>],
        specs: &[(String, Option<u32>)],
    ) -> Result<(), UpstreamUrlError> {
        let mut next = Vec::with_capacity(specs.len());
        for (url, weight) in specs {
            match old.iter().find(|s| s.url() == url) {
                Some(kept) => {
                    if let Some(w) = weight {
                        kept.state.weight.store((*w).max(1), Ordering::Relaxed);
                    }
                    next.push(kept.clone());
                }
                None => next.push(Arc::new(Upstream::parse_weighted(
                    url,
                    weight.unwrap_or(1),
                )?)),
            }
        }
        self.servers.store(Arc::new(next));
        Ok(())
    }

    pub fn servers(&self) -> Arc<Vec<Arc<Upstream>>> {
        self.servers.load_full()
    }

    /// The URLs of the servers that may take a request now.
    pub fn available_urls(&self) -> Vec<String> {
        let now = clock::now_nanos();
        self.servers
            .load()
            .iter()
            .filter(|s| self.is_available(s, now))
            .map(|s| s.url().to_string())
            .collect()
    }

    /// Picks need only the method, path and client address: no user strategy, and a
    /// strategy that reads no header (the listener's fast lane builds no header map).
    pub fn picks_without_headers(&self) -> bool {
        self.selector.get().is_none() && !self.strategy.reads_headers()
    }

    pub fn strategy_name(&self) -> &'static str {
        self.strategy.name()
    }

    /// Whether `server` may take a request now (health, ejection, breaker).
    pub fn is_available(&self, server: &Upstream, now: u64) -> bool {
        let state = &server.state;
        state.health.is_up()
            && !(self.outlier.get().is_some() && state.outlier.is_ejected(now))
            && self
                .breaker
                .get()
                .is_none_or(|cfg| state.breaker.admits(cfg, now))
    }

    /// Picks a server with the built-in strategy and leases it. `avoid` are servers this
    /// request already tried: another one is preferred, but they are used when nothing
    /// else is left.
    pub fn acquire(
        self: &Arc<Self>,
        ctx: &PickContext<'_>,
        avoid: &[Arc<Upstream>],
    ) -> Result<Lease, GatewayError> {
        self.acquire_with(ctx, avoid, None)
    }

    /// As `acquire`, trying `preferred` (a user strategy's answer) first.
    fn acquire_with(
        self: &Arc<Self>,
        ctx: &PickContext<'_>,
        avoid: &[Arc<Upstream>],
        preferred: Option<&Arc<Upstream>>,
    ) -> Result<Lease, GatewayError> {
        let servers = self.servers.load();
        if servers.is_empty() {
            return Err(GatewayError::new(
                ErrorCode::NoHealthyUpstream,
                "the load balancer has no upstream servers",
            ));
        }
        let now = clock::now_nanos();
        if let Some(server) = preferred {
            if self.is_available(server, now) {
                if let Some(admission) = self.admit(server, now) {
                    return Ok(Lease::new(self.clone(), server.clone(), admission));
                }
            }
        }
        let available = |s: &Upstream| self.is_available(s, now);
        let mut excluded: Vec<usize> = if avoid.is_empty() {
            Vec::new()
        } else {
            (0..servers.len())
                .filter(|&i| avoid.iter().any(|a| Arc::ptr_eq(a, &servers[i])))
                .collect()
        };
        let mut tried_before = excluded.len();
        // Each round either leases a server or excludes one more, so this ends.
        for _ in 0..=servers.len() {
            let candidates = Candidates::new(&servers, &excluded, &available);
            let Some(i) = self
                .strategy
                .pick(&candidates, ctx)
                .filter(|&i| i < servers.len())
            else {
                if tried_before > 0 && excluded.len() >= tried_before {
                    // Nothing new is left: allow the servers tried before again.
                    excluded.drain(..tried_before);
                    tried_before = 0;
                    continue;
                }
                break;
            };
            if let Some(admission) = self.admit(&servers[i], now) {
                return Ok(Lease::new(self.clone(), servers[i].clone(), admission));
            }
            excluded.push(i);
        }
        Err(self.none_available(&servers, now))
    }

    fn admit(&self, server: &Upstream, now: u64) -> Option<Admission> {
        match self.breaker.get() {
            None => Some(Admission::Admitted),
            Some(cfg) => match server.state.breaker.try_acquire(cfg, now) {
                Admission::Denied => None,
                admitted => Some(admitted),
            },
        }
    }

    /// 503 with `Retry-After`: when the first breaker half-opens or ejection ends.
    fn none_available(&self, servers: &[Arc<Upstream>], now: u64) -> GatewayError {
        let soonest_ms = servers
            .iter()
            .filter_map(|s| {
                let breaker = self
                    .breaker
                    .get()
                    .and_then(|cfg| s.state.breaker.snapshot(cfg, now).retry_in_ms);
                let ejected = self
                    .outlier
                    .get()
                    .and_then(|_| s.state.outlier.ejected_ms_left(now));
                match (breaker, ejected) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                }
            })
            .min();
        let secs = soonest_ms.map_or(1, |ms| ms.div_ceil(1000).max(1));
        // A server up by health checks that its breaker refused: the breaker is why.
        let breaker_refused = self.breaker.get().is_some_and(|cfg| {
            servers
                .iter()
                .any(|s| s.state.health.is_up() && !s.state.breaker.admits(cfg, now))
        });
        // The retry time is in the message too: JS handlers read it from there.
        let err = if breaker_refused {
            GatewayError::new(
                ErrorCode::CircuitOpen,
                format!(
                    "the circuit breakers of the upstream servers are open (retry after {secs} s)"
                ),
            )
        } else {
            GatewayError::new(
                ErrorCode::NoHealthyUpstream,
                format!("no upstream server is available: all are down or ejected (retry after {secs} s)"),
            )
        };
        err.with_retry_after(secs)
    }

    /// Leases with the user strategy if there is one, else as `acquire`. The user
    /// strategy sees only the servers that may take the request.
    pub async fn acquire_async(
        self: &Arc<Self>,
        ctx: &PickContext<'_>,
        avoid: &[Arc<Upstream>],
    ) -> Result<Lease, GatewayError> {
        let Some(selector) = self.selector.get() else {
            return self.acquire(ctx, avoid);
        };
        let servers = self.servers.load_full();
        let now = clock::now_nanos();
        let urls: Vec<String> = servers
            .iter()
            .filter(|s| self.is_available(s, now))
            .map(|s| s.url().to_string())
            .collect();
        if urls.is_empty() {
            return self.acquire(ctx, avoid);
        }
        let chosen = selector.select(urls, OwnedPickContext::from(ctx)).await;
        match chosen.and_then(|url| servers.iter().find(|s| s.url() == url).cloned()) {
            Some(upstream) => self.acquire_with(ctx, avoid, Some(&upstream)),
            None => self.acquire_fallback(ctx, avoid),
        }
    }

    /// Leases the server a user strategy named (by URL), or falls back (counted) when
    /// it is not in the list or may not take the request.
    pub fn acquire_named(
        self: &Arc<Self>,
        url: &str,
        ctx: &PickContext<'_>,
        avoid: &[Arc<Upstream>],
    ) -> Result<Lease, GatewayError> {
        let servers = self.servers.load();
        match servers.iter().find(|s| s.url() == url) {
            Some(server) => {
                let now = clock::now_nanos();
                if self.is_available(server, now) {
                    if let Some(admission) = self.admit(server, now) {
                        return Ok(Lease::new(self.clone(), server.clone(), admission));
                    }
                }
                self.acquire_fallback(ctx, avoid)
            }
            None => self.acquire_fallback(ctx, avoid),
        }
    }

    /// The built-in strategy's lease, counted as a fallback of the user strategy.
    pub fn acquire_fallback(
        self: &Arc<Self>,
        ctx: &PickContext<'_>,
        avoid: &[Arc<Upstream>],
    ) -> Result<Lease, GatewayError> {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.acquire(ctx, avoid)
    }

    /// Feeds one attempt's outcome to the server's breaker and outlier detection.
    pub(crate) fn record_outcome(
        &self,
        server: &Upstream,
        admission: Admission,
        outcomes: Outcomes,
        now: u64,
    ) {
        let state = &server.state;
        if let Some(cfg) = self.breaker.get() {
            match outcomes.breaker {
                Outcome::Neutral => state.breaker.release(admission),
                outcome => state
                    .breaker
                    .record(cfg, admission, outcome == Outcome::Success, now),
            }
        }
        let outlier = outcomes.outlier;
        if let (Some(cfg), true) = (self.outlier.get(), outlier != Outcome::Neutral) {
            if state.outlier.record(cfg, outlier == Outcome::Success, now) {
                let _one_at_a_time = self.ejecting.lock().unwrap_or_else(|p| p.into_inner());
                let servers = self.servers.load();
                let ejected = servers
                    .iter()
                    .filter(|s| s.state.outlier.is_ejected(now))
                    .count();
                if may_eject(cfg, ejected, servers.len()) {
                    state.outlier.eject(cfg, now);
                }
            }
        }
    }

    /// Every server's state, for status pages.
    pub fn status(&self) -> Vec<ServerStatus> {
        let now = clock::now_nanos();
        self.servers
            .load()
            .iter()
            .map(|s| {
                s.state
                    .status(s.url(), self.is_available(s, now), self.breaker.get(), now)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_pick(lb: &Arc<LoadBalancer>) -> String {
        let headers = http::HeaderMap::new();
        let ctx = PickContext {
            method: &http::Method::GET,
            path: "/",
            headers: &headers,
            client: None,
        };
        lb.acquire(&ctx, &[]).unwrap().upstream().url().to_string()
    }

    #[test]
    fn round_robin_cycles_in_order() {
        let urls: Vec<String> = (1..=3)
            .map(|i| format!("http://127.0.0.1:900{i}"))
            .collect();
        let lb = Arc::new(LoadBalancer::new(&urls, Box::<RoundRobin>::default()).unwrap());
        let picks: Vec<String> = (0..6).map(|_| ctx_pick(&lb)).collect();
        assert_eq!(picks[..3], urls[..]);
        assert_eq!(picks[3..], urls[..]);
    }

    /// A user strategy that answers from a script: a URL, or `None` (it failed).
    struct Scripted(std::sync::Mutex<Vec<Option<String>>>);

    impl AsyncSelector for Scripted {
        fn select(&self, servers: Vec<String>, ctx: OwnedPickContext) -> SelectFuture {
            assert_eq!(servers.len(), 2);
            assert_eq!(ctx.path, "/p");
            let next = self.0.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    #[tokio::test]
    async fn a_user_strategy_falls_back_to_round_robin_and_counts_it() {
        let urls = vec!["http://a:1".to_string(), "http://b:1".to_string()];
        let lb = Arc::new(LoadBalancer::new(&urls, Box::<RoundRobin>::default()).unwrap());
        let script = vec![
            Some("http://b:1".to_string()),
            None,
            Some("http://not-listed:1".to_string()),
            Some("http://b:1".to_string()),
        ];
        assert!(lb.set_selector(Arc::new(Scripted(std::sync::Mutex::new(script)))));
        let headers = http::HeaderMap::new();
        let ctx = PickContext {
            method: &http::Method::GET,
            path: "/p",
            headers: &headers,
            client: None,
        };
        let mut picks = Vec::new();
        for _ in 0..4 {
            let lease = lb.acquire_async(&ctx, &[]).await.unwrap();
            picks.push(lease.upstream().url().to_string());
        }
        // b (chosen), a and b (round robin after a failure and a bad answer), b (chosen).
        assert_eq!(
            picks,
            ["http://b:1", "http://a:1", "http://b:1", "http://b:1"]
        );
        assert_eq!(lb.fallback_count(), 2);
    }

    #[test]
    fn set_servers_keeps_the_state_of_servers_that_stay() {
        let lb = Arc::new(
            LoadBalancer::new(
                &["http://a:1".into(), "http://b:1".into()],
                Box::<RoundRobin>::default(),
            )
            .unwrap(),
        );
        let before = lb.servers()[1].clone();
        lb.set_servers(&["http://b:1".into(), "http://c:1".into()])
            .unwrap();
        let after = lb.servers();
        assert!(Arc::ptr_eq(&before, &after[0]));
        assert_eq!(after[1].url(), "http://c:1");
        lb.set_servers(&[]).unwrap();
        let headers = http::HeaderMap::new();
        let ctx = PickContext {
            method: &http::Method::GET,
            path: "/",
            headers: &headers,
            client: None,
        };
        assert_eq!(
            lb.acquire(&ctx, &[]).unwrap_err().code(),
            ErrorCode::NoHealthyUpstream
        );
    }
}
