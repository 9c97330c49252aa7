//! How a load balancer picks one server. Every strategy chooses only among the
//! candidates the balancer offers (healthy, not ejected, breaker admitting, not already
//! tried by this request); a user's own strategy (a JS callback in the binding) is an
//! `AsyncSelector` beside these.

mod consistent_hash;
mod least_connections;
mod power_of_two;
mod random;
mod round_robin;
mod weighted;

use std::sync::Arc;

pub use consistent_hash::{ConsistentHash, HashKey};
pub use least_connections::LeastConnections;
pub use power_of_two::PowerOfTwoChoices;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted::Weighted;

use super::Upstream;

/// What a strategy may look at when it picks.
pub struct PickContext<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    pub client: Option<std::net::SocketAddr>,
}

/// The servers of one pick and which of them may take the request.
pub struct Candidates<'a> {
    servers: &'a [Arc<Upstream>],
    /// Indexes that may not be picked (tried already, or refused by their breaker).
    excluded: &'a [usize],
    available: &'a dyn Fn(&Upstream) -> bool,
}

impl<'a> Candidates<'a> {
    pub fn new(
        servers: &'a [Arc<Upstream>],
        excluded: &'a [usize],
        available: &'a dyn Fn(&Upstream) -> bool,
    ) -> Self {
        Self {
            servers,
            excluded,
            available,
        }
    }

    /// All servers, eligible or not (never empty when a strategy is asked).
    #[inline]
    pub fn servers(&self) -> &'a [Arc<Upstream>] {
        self.servers
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Whether server `i` may take this request.
    #[inline]
    pub fn ok(&self, i: usize) -> bool {
        !self.excluded.contains(&i) && (self.available)(&self.servers[i])
    }

    /// The first eligible index at or after `start`, wrapping around.
    pub fn first_ok_from(&self, start: usize) -> Option<usize> {
        let n = self.servers.len();
        (0..n).map(|k| (start + k) % n).find(|&i| self.ok(i))
    }

    /// The eligible indexes, in order (allocates; for the degraded path).
    pub fn ok_indexes(&self) -> Vec<usize> {
        (0..self.servers.len()).filter(|&i| self.ok(i)).collect()
    }
}

pub trait Strategy: Send + Sync + 'static {
    /// Picks an eligible index into `candidates.servers()`, or `None` when none is.
    fn pick(&self, candidates: &Candidates<'_>, ctx: &PickContext<'_>) -> Option<usize>;

    fn name(&self) -> &'static str;

    /// Whether `pick` reads the request's headers (`ctx.headers`).
    fn reads_headers(&self) -> bool {
        false
    }
}
