//! How a load balancer picks one server. Built-in strategies live beside this file;
//! a user's own strategy (e.g. a JS callback in the binding) is one more implementation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::Upstream;

/// What a strategy may look at when it picks.
pub struct PickContext<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    pub client: Option<std::net::SocketAddr>,
}

pub trait Strategy: Send + Sync + 'static {
    /// Picks an index into `servers` (which is never empty), or `None` to refuse.
    fn pick(&self, servers: &[Arc<Upstream>], ctx: &PickContext<'_>) -> Option<usize>;

    fn name(&self) -> &'static str;
}

/// Each server in turn. One relaxed atomic increment a pick.
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Strategy for RoundRobin {
    fn pick(&self, servers: &[Arc<Upstream>], _ctx: &PickContext<'_>) -> Option<usize> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(n % servers.len())
    }

    fn name(&self) -> &'static str {
        "round_robin"
    }
}
