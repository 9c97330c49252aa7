//! The eligible server with the fewest requests in flight. Servers tied at the fewest
//! take turns: a rotating counter chooses among the tied ones, so equally loaded servers
//! share evenly (exactly in turn while the set of tied servers stays the same), also
//! when only some of them are tied.
//!
//! Weights are not read: like the other strategies but `Weighted`, this one treats every
//! server alike (`ServerSpec`'s weight is for `Weighted` only). In-flight counts are
//! compared as they are, not divided by weight.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::random::Bits;
use super::{Candidates, PickContext, Strategy};

#[derive(Debug, Default)]
pub struct LeastConnections {
    turn: AtomicUsize,
}

impl LeastConnections {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Strategy for LeastConnections {
    fn pick(&self, candidates: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        let servers = candidates.servers();
        let mut fewest = u32::MAX;
        let mut tied = Bits::with_capacity(servers.len());
        let mut ties = 0usize;
        for (i, server) in servers.iter().enumerate() {
            let load = server.state.in_flight();
            // Ask eligibility (the dearer test) only of servers that could win.
            if load > fewest || !candidates.ok(i) {
                continue;
            }
            if load < fewest || ties == 0 {
                fewest = load;
                tied.clear();
                ties = 0;
            }
            tied.insert(i);
            ties += 1;
        }
        if ties == 0 {
            return None;
        }
        if ties == 1 {
            return tied.nth(0);
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        tied.nth(turn % ties)
    }

    fn name(&self) -> &'static str {
        "least_connections"
    }
}

#[cfg(test)]
mod tests {
    use super::super::random::testing::{
        counts, ctx, none_when_nothing_is_ok_and_one_server_works, servers,
    };
    use super::*;
    use crate::balancer::Upstream;

    fn load(servers: &[std::sync::Arc<Upstream>], loads: &[u32]) {
        for (s, &l) in servers.iter().zip(loads) {
            s.state.in_flight.store(l, Ordering::Relaxed);
        }
    }

    #[test]
    fn picks_the_least_loaded() {
        let servers = servers(4);
        load(&servers, &[5, 2, 7, 3]);
        assert_eq!(
            counts(&LeastConnections::new(), &servers, &[], 1_000),
            [0, 1_000, 0, 0]
        );
        // The least loaded is out: the next least.
        assert_eq!(
            counts(&LeastConnections::new(), &servers, &[1], 1_000),
            [0, 0, 0, 1_000]
        );
    }

    #[test]
    fn equal_loads_share_evenly() {
        let s = LeastConnections::new();
        let servers = servers(5);
        load(&servers, &[4; 5]);
        let counts = counts(&s, &servers, &[], 10_003);
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "{counts:?}");
    }

    /// Only some tied: a server right after a busy one gets no extra turns (a scan
    /// from a rotating start keeping the first minimum would give server 2 two thirds).
    #[test]
    fn partial_ties_share_evenly() {
        let s = LeastConnections::new();
        let servers = servers(3);
        load(&servers, &[9, 1, 1]);
        let counts = counts(&s, &servers, &[], 10_000);
        assert_eq!(counts, [0, 5_000, 5_000]);
    }

    /// As requests are leased (in flight +1 per pick), loads level out: after 12 picks
    /// from [0, 3, 1] every server has 16 / 3 ≈ 5 or 6.
    #[test]
    fn picks_level_the_load() {
        let s = LeastConnections::new();
        let servers = servers(3);
        load(&servers, &[0, 3, 1]);
        let headers = http::HeaderMap::new();
        let ctx = ctx(&headers);
        let all = |_: &Upstream| true;
        let candidates = Candidates::new(&servers, &[], &all);
        for _ in 0..12 {
            let i = s.pick(&candidates, &ctx).unwrap();
            servers[i].state.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        let loads: Vec<u32> = servers.iter().map(|s| s.state.in_flight()).collect();
        assert!(loads.iter().all(|&l| l == 5 || l == 6), "{loads:?}");
    }

    #[test]
    fn many_servers_use_the_heap_set() {
        let s = LeastConnections::new();
        let servers = servers(130);
        let loads: Vec<u32> = (0..130).map(|i| if i % 40 == 7 { 0 } else { 1 }).collect();
        load(&servers, &loads);
        let counts = counts(&s, &servers, &[], 4_000);
        for (i, &c) in counts.iter().enumerate() {
            let want = if i % 40 == 7 { 1_000 } else { 0 };
            assert_eq!(c, want, "server {i}");
        }
    }

    #[test]
    fn none_when_nothing_is_ok() {
        none_when_nothing_is_ok_and_one_server_works(&LeastConnections::new());
        assert_eq!(LeastConnections::new().name(), "least_connections");
    }
}
