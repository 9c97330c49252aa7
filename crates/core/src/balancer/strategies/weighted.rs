//! Smooth weighted round robin, exactly as NGINX's `ngx_http_upstream_get_peer`: every
//! eligible server's running weight grows by its weight, the largest wins (the first of
//! equals), and the winner's running weight drops by the sum of the eligible weights.
//! Weights 5:1:1 give `a a b a c a a`, 3:2:1 give `a b a c b a`: each window of
//! Σweight picks holds every server exactly its weight times, spread out rather than in
//! bursts.
//!
//! The running weights live in each server's `ServerState::swrr_current`, so a server
//! kept across `set_servers` keeps its place. They are read and written only under this
//! strategy's mutex (the atomics are just a place to keep them). An ineligible server is
//! skipped: its running weight stays as it was and the others share its turns in their
//! own ratio. Weights are read on every pick, so a changed weight counts from the next
//! one. Unlike NGINX there is no `effective_weight` that sinks on failures: breakers and
//! outlier detection take failing servers out instead.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};

use super::random::Bits;
use super::{Candidates, PickContext, Strategy};

#[derive(Debug, Default)]
pub struct Weighted {
    /// Held while the running weights are read and written.
    lock: Mutex<()>,
}

impl Weighted {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Strategy for Weighted {
    fn pick(&self, candidates: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        // Eligibility (health, breaker) is asked before the lock, to keep it short.
        let eligible = Bits::eligible(candidates);
        let servers = candidates.servers();
        // Nothing in the critical section can panic, but a poisoned lock only guards
        // integers: carry on with them.
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, server) in servers.iter().enumerate() {
            if !eligible.contains(i) {
                continue;
            }
            let state = &server.state;
            let weight = i64::from(state.weight());
            let current = state.swrr_current.load(Ordering::Relaxed) + weight;
            state.swrr_current.store(current, Ordering::Relaxed);
            total += weight;
            if best.is_none_or(|(_, max)| current > max) {
                best = Some((i, current));
            }
        }
        let (i, current) = best?;
        servers[i]
            .state
            .swrr_current
            .store(current - total, Ordering::Relaxed);
        Some(i)
    }

    fn name(&self) -> &'static str {
        "weighted"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::random::testing::{
        counts, ctx, none_when_nothing_is_ok_and_one_server_works, weighted,
    };
    use super::*;
    use crate::balancer::Upstream;

    fn sequence(strategy: &Weighted, servers: &[Arc<Upstream>], picks: usize) -> String {
        let headers = http::HeaderMap::new();
        let ctx = ctx(&headers);
        let all = |_: &Upstream| true;
        let candidates = Candidates::new(servers, &[], &all);
        (0..picks)
            .map(|_| char::from(b'a' + strategy.pick(&candidates, &ctx).unwrap() as u8))
            .collect()
    }

    #[test]
    fn five_one_one_is_the_nginx_sequence() {
        let servers = weighted(&[5, 1, 1]);
        let s = Weighted::new();
        assert_eq!(sequence(&s, &servers, 14), "aabacaaaabacaa");
    }

    #[test]
    fn three_two_one_interleaves_in_every_window_of_six() {
        let servers = weighted(&[3, 2, 1]);
        let s = Weighted::new();
        let seq = sequence(&s, &servers, 6_000);
        assert_eq!(&seq[..12], "abacbaabacba");
        for (w, window) in seq.as_bytes().chunks(6).enumerate() {
            let count = |c: u8| window.iter().filter(|&&x| x == c).count();
            assert_eq!((count(b'a'), count(b'b'), count(b'c')), (3, 2, 1), "{w}");
        }
        // Interleaved: never three of the same server in a row.
        assert!(!seq.contains("aaa") && !seq.contains("bb") && !seq.contains("cc"));
    }

    #[test]
    fn exact_shares_over_six_thousand_picks() {
        let servers = weighted(&[3, 2, 1]);
        assert_eq!(
            counts(&Weighted::new(), &servers, &[], 6_000),
            [3_000, 2_000, 1_000]
        );
        let servers = weighted(&[1, 1, 1, 1]);
        assert_eq!(counts(&Weighted::new(), &servers, &[], 6_000), [1_500; 4]);
    }

    #[test]
    fn an_ineligible_server_leaves_the_others_ratio_alone() {
        let servers = weighted(&[3, 2, 1]);
        let s = Weighted::new();
        // Some picks with all three, then b is out: a and c go 3:1, exactly.
        counts(&s, &servers, &[], 7);
        assert_eq!(counts(&s, &servers, &[1], 4_000), [3_000, 0, 1_000]);
        // Every window of 4 holds a three times and c once.
        let headers = http::HeaderMap::new();
        let ctx = ctx(&headers);
        let all = |_: &Upstream| true;
        let without_b = Candidates::new(&servers, &[1], &all);
        for _ in 0..100 {
            let mut window = [0; 3];
            for _ in 0..4 {
                window[s.pick(&without_b, &ctx).unwrap()] += 1;
            }
            assert_eq!(window, [3, 0, 1]);
        }
        // b back: 3:2:1 again over the next full cycles.
        let back = counts(&s, &servers, &[], 6_000);
        for (got, want) in back.iter().zip([3_000, 2_000, 1_000]) {
            assert!(got.abs_diff(want) <= 6, "{back:?}");
        }
    }

    #[test]
    fn a_weight_change_counts_from_the_next_pick() {
        let servers = weighted(&[1, 1]);
        let s = Weighted::new();
        assert_eq!(counts(&s, &servers, &[], 1_000), [500, 500]);
        servers[0].state.weight.store(3, Ordering::Relaxed);
        let after = counts(&s, &servers, &[], 4_000);
        assert!(after[0].abs_diff(3_000) <= 3, "{after:?}");
        assert_eq!(after[0] + after[1], 4_000);
    }

    #[test]
    fn none_when_nothing_is_ok() {
        none_when_nothing_is_ok_and_one_server_works(&Weighted::new());
        assert_eq!(Weighted::new().name(), "weighted");
    }
}
