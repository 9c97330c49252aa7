//! Power of two choices over peak-EWMA cost, as linkerd2-proxy and Finagle balance: draw
//! two distinct eligible servers uniformly at random and take the one with the lower
//! `latency × (in flight + 1)` (`PeakEwma::cost`, both read at one instant so one clock
//! read serves the pair). One eligible server is taken alone.
//!
//! The pair is an ordered uniform draw, so taking the first on a tie is a fair coin
//! between the two. The costliest eligible server is never picked while it is strictly
//! costlier than all the others (every pair holds a cheaper one); in general the server
//! ranked `r` from cheapest (0) of `n` with distinct costs gets `2(n-1-r) / (n(n-1))`
//! of the picks. Its requests drain and its estimate decays, so it comes back.

use super::random::Bits;
use super::{Candidates, PickContext, Strategy};
use crate::resilience::clock;

#[derive(Debug, Default)]
pub struct PowerOfTwoChoices;

impl PowerOfTwoChoices {
    pub fn new() -> Self {
        Self
    }
}

/// Two distinct indexes below `n` (≥ 2), uniform over ordered pairs.
#[inline]
fn two_distinct(n: usize) -> (usize, usize) {
    let a = fastrand::usize(..n);
    let mut b = fastrand::usize(..n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

impl Strategy for PowerOfTwoChoices {
    fn pick(&self, candidates: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        let n = candidates.len();
        if n < 2 {
            return (n == 1 && candidates.ok(0)).then_some(0);
        }
        let (a, b) = two_distinct(n);
        let (a, b) = if candidates.ok(a) && candidates.ok(b) {
            (a, b)
        } else {
            // Redraw among the eligible: uniform given both were eligible, uniform here.
            let eligible = Bits::eligible(candidates);
            match eligible.count() {
                0 => return None,
                1 => return eligible.nth(0),
                m => {
                    let (x, y) = two_distinct(m);
                    (eligible.nth(x)?, eligible.nth(y)?)
                }
            }
        };
        let servers = candidates.servers();
        let now = clock::now_nanos();
        let cost = |i: usize| {
            let state = &servers[i].state;
            state.latency.estimate_at(now) * (f64::from(state.in_flight()) + 1.0)
        };
        Some(if cost(b) < cost(a) { b } else { a })
    }

    fn name(&self) -> &'static str {
        "p2c"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::super::random::testing::{
        counts, none_when_nothing_is_ok_and_one_server_works, servers,
    };
    use super::*;
    use crate::balancer::Upstream;

    const MS: u64 = 1_000_000;

    /// Records one sample on each server, all at one instant: the estimates then fade
    /// alike, so equal samples stay exactly equal.
    fn observe(servers: &[Arc<Upstream>], ms: &[u64]) {
        let now = clock::now_nanos();
        for (s, &ms) in servers.iter().zip(ms) {
            s.state.latency.observe(ms * MS, now);
        }
    }

    /// Ranks by cost with four servers: 3/6, 2/6, 1/6 and 0 of the picks. Over 60,000
    /// picks a share's σ is at most √(60000·½·½)/60000 ≈ 0.2 %; ±2 % is ~10σ.
    #[test]
    fn shares_follow_the_cost_ranking() {
        let servers = servers(4);
        observe(&servers, &[40, 10, 30, 20]);
        let picks = 60_000;
        let got = counts(&PowerOfTwoChoices, &servers, &[], picks);
        assert_eq!(got[0], 0, "the slowest is never picked: {got:?}");
        for (i, want) in [(1, 3.0 / 6.0), (3, 2.0 / 6.0), (2, 1.0 / 6.0)] {
            let share = got[i] as f64 / picks as f64;
            assert!((share - want).abs() < 0.02, "server {i}: {share}, {got:?}");
        }
    }

    /// One slow server of three: a high EWMA latency gets it no picks at all over
    /// 10,000 (each pair holds a faster one), and the other two share evenly.
    #[test]
    fn a_slow_server_gets_nothing_while_others_are_faster() {
        let servers = servers(3);
        observe(&servers[2..], &[500]);
        let got = counts(&PowerOfTwoChoices, &servers, &[], 10_000);
        assert_eq!(got[2], 0, "{got:?}");
        // The two equal ones: a fair coin each time (σ = 50 picks of 5,000).
        assert!(got[0].abs_diff(5_000) < 500, "{got:?}");
    }

    /// In-flight load moves traffic: equal latency, server 0 busy with 10 requests; it
    /// loses every pair. Then the slow server 2 (5 ms, idle) beats busy fast ones (1 ms
    /// × 11): cost, not latency alone, decides.
    #[test]
    fn in_flight_load_moves_traffic() {
        let servers = servers(3);
        observe(&servers, &[1, 1, 1]);
        servers[0].state.in_flight.store(10, Ordering::Relaxed);
        let got = counts(&PowerOfTwoChoices, &servers, &[], 10_000);
        assert_eq!(got[0], 0, "{got:?}");
        assert!(got[1].abs_diff(5_000) < 500, "{got:?}");

        servers[1].state.in_flight.store(10, Ordering::Relaxed);
        // A slower sample is taken at once (the peak).
        observe(&servers[2..], &[5]);
        let got = counts(&PowerOfTwoChoices, &servers, &[], 10_000);
        // 2 is in every pair but {0, 1}: 2/3 of the picks; 0 and 1 tie in the rest.
        let share = got[2] as f64 / 10_000.0;
        assert!((share - 2.0 / 3.0).abs() < 0.03, "{got:?}");
    }

    #[test]
    fn ineligible_servers_are_never_drawn() {
        let servers = servers(5);
        observe(&servers[1..], &[100]);
        // Only 1 and 3 may go: 3 always wins the pair.
        let got = counts(&PowerOfTwoChoices, &servers, &[0, 2, 4], 5_000);
        assert_eq!(got, [0, 0, 0, 5_000, 0]);
        // Only 1 may go: it is taken, however slow.
        let got = counts(&PowerOfTwoChoices, &servers, &[0, 2, 3, 4], 100);
        assert_eq!(got, [0, 100, 0, 0, 0]);
    }

    #[test]
    fn none_when_nothing_is_ok() {
        none_when_nothing_is_ok_and_one_server_works(&PowerOfTwoChoices);
        assert_eq!(PowerOfTwoChoices.name(), "p2c");
    }
}
