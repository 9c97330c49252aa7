//! A lease on one server for one request: taken when the balancer picks, it counts the
//! request in flight and holds a breaker probe slot if it got one. The caller reports the
//! outcome once the response head (or an error) is known; the in-flight count ends with
//! the response body (`InFlight`, moved into the body).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{LoadBalancer, Upstream};
use crate::resilience::{clock, Admission};

/// How one attempt ended, as the breaker and outlier detection each see it (the
/// breaker's failure statuses are configurable; outlier detection counts 5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcomes {
    pub breaker: Outcome,
    pub outlier: Outcome,
}

impl Outcomes {
    pub fn both(outcome: Outcome) -> Self {
        Self {
            breaker: outcome,
            outlier: outcome,
        }
    }
}

/// The latency a failed attempt is recorded with (at least): 250 ms.
const FAILURE_PENALTY_NS: u64 = 250_000_000;

/// How one attempt ended for one observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer that is not a failure.
    Success,
    /// Connect error, timeout, broken connection, or a failure status.
    Failure,
    /// Nothing to say of the server (the client went away, the request was bad).
    Neutral,
}

pub struct Lease {
    balancer: Arc<LoadBalancer>,
    upstream: Arc<Upstream>,
    admission: Admission,
    started: u64,
    in_flight: Option<InFlight>,
    reported: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("upstream", &self.upstream.url())
            .field("admission", &self.admission)
            .finish()
    }
}

/// Counts a request in flight on its server until dropped.
pub struct InFlight(Arc<Upstream>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lease {
    pub(super) fn new(
        balancer: Arc<LoadBalancer>,
        upstream: Arc<Upstream>,
        admission: Admission,
    ) -> Self {
        upstream.state.in_flight.fetch_add(1, Ordering::Relaxed);
        upstream.state.requests.fetch_add(1, Ordering::Relaxed);
        Self {
            balancer,
            in_flight: Some(InFlight(upstream.clone())),
            upstream,
            admission,
            started: clock::now_nanos(),
            reported: false,
        }
    }

    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// Records how the attempt ended and returns the in-flight guard, to be dropped
    /// when the response body is done.
    pub fn finish(mut self, outcomes: Outcomes) -> InFlight {
        self.report(outcomes);
        self.in_flight.take().expect("a lease finishes once")
    }

    fn report(&mut self, outcomes: Outcomes) {
        self.reported = true;
        let now = clock::now_nanos();
        let state = &self.upstream.state;
        let rtt = now.saturating_sub(self.started);
        match outcomes.outlier {
            Outcome::Success => state.latency.observe(rtt, now),
            // A server that fails fast must not look fast to latency-aware strategies
            // (P2C would send it most of the traffic): a failure counts as slow.
            Outcome::Failure => state.latency.observe(rtt.max(FAILURE_PENALTY_NS), now),
            Outcome::Neutral => {}
        }
        if outcomes.breaker == Outcome::Failure || outcomes.outlier == Outcome::Failure {
            state.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.balancer
            .record_outcome(&self.upstream, self.admission, outcomes, now);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.reported {
            // Dropped without an outcome (the request was cancelled).
            self.report(Outcomes::both(Outcome::Neutral));
        }
    }
}
