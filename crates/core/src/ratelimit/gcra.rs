//! The generic cell rate algorithm, as pure arithmetic on integers.
//!
//! A limit of `rate` requests per `period` has an emission interval
//! `T = period / rate` (rounded *up* to the clock unit, so the configured rate is
//! never exceeded) and a tolerance `τ = T × burst`. The state of one key is, per
//! limit, its theoretical arrival time `TAT`: the time at which the key would be
//! fully replenished. A request at `now` is allowed iff `max(TAT, now) − now ≤ τ`;
//! when it is, `TAT := max(TAT, now) + T`.
//!
//! Consequences, for `requestsPerMinute: 60`, `burst: 0`: `T` = 1 s and `τ` = 0, so
//! one request per second is sustained and a second request within the same second
//! is refused; over any 60 s a client gets 60 requests. With `burst: b` a client can
//! send `b + 1` requests at once (the *capacity*), then one per `T`.
//!
//! The numbers reported, as in redis-cell:
//! - `limit` = capacity = `burst + 1`: how many requests a fully replenished key may
//!   send at once;
//! - `remaining` = how many more requests would be allowed right now,
//!   `⌊(now + τ − TAT') / T⌋ + 1` after the update (0 when refused);
//! - `reset_secs` = `TAT − now` rounded up: when the key is fully replenished;
//! - `retry_after_secs` (refused only) = `TAT − τ − now` rounded up, at least 1.
//!
//! Several limits (per minute *and* per hour) are checked together: the request is
//! allowed only if every limit allows it, and only then are all TATs advanced. The
//! reported numbers are those of the tightest limit: when allowed, the one with the
//! fewest `remaining` (ties: the later `reset`); when refused, the refusing limit
//! with the longest wait.
//!
//! A limit with `rate` 0 refuses everything; a limit with a zero `period` allows
//! everything. Time going backwards (`now` below an earlier `now`) only makes a
//! decision stricter: nothing underflows and no extra request is allowed.

use std::time::Duration;

use super::{Decision, Limit};

/// Clock units per second of a time base: nanoseconds for the in-memory store,
/// microseconds in Redis (where Lua numbers are doubles, exact only below 2^53).
pub(crate) const NANOS_PER_SEC: u64 = 1_000_000_000;
pub(crate) const MICROS_PER_SEC: u64 = 1_000_000;

/// One limit turned into GCRA parameters in some clock unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Params {
    /// Emission interval `T`.
    pub(crate) t: u64,
    /// Tolerance `τ = T × burst`.
    pub(crate) tau: u64,
    /// `burst + 1`, reported as `limit`.
    pub(crate) capacity: u32,
    /// `rate == 0`: every request is refused.
    pub(crate) blocked: bool,
    /// The period in clock units (for the retry hint of a blocked limit).
    pub(crate) period: u64,
}

impl Params {
    /// The parameters of `limit` in a clock with `units_per_sec` units per second.
    pub(crate) fn new(limit: &Limit, units_per_sec: u64) -> Params {
        let period = duration_units(limit.period, units_per_sec);
        let t = if limit.rate == 0 {
            period
        } else {
            period.div_ceil(u128::from(limit.rate))
        };
        let t = saturate(t);
        Params {
            t,
            tau: t.saturating_mul(u64::from(limit.burst)),
            capacity: limit.burst.saturating_add(1),
            blocked: limit.rate == 0,
            period: saturate(period),
        }
    }
}

fn duration_units(d: Duration, units_per_sec: u64) -> u128 {
    // Exact: whole seconds times the unit plus the sub-second part, rounded up.
    u128::from(d.as_secs()) * u128::from(units_per_sec)
        + (u128::from(d.subsec_nanos()) * u128::from(units_per_sec)).div_ceil(1_000_000_000)
}

fn saturate(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// `units` rounded up to whole seconds.
fn ceil_secs(units: u64, units_per_sec: u64) -> u64 {
    units.div_ceil(units_per_sec)
}

/// Decides one request at `now` (nanoseconds) against `limits`, given the key's
/// TATs (aligned with `limits`; missing entries count as 0, a fresh key). Returns
/// the decision and, when allowed, the new TATs to store.
pub fn decide(tat: &[u64], now: u64, limits: &[Limit]) -> (Decision, Option<Vec<u64>>) {
    let params: Vec<Params> = limits
        .iter()
        .map(|l| Params::new(l, NANOS_PER_SEC))
        .collect();
    let mut tats: Vec<u64> = (0..limits.len())
        .map(|i| tat.get(i).copied().unwrap_or(0))
        .collect();
    let decision = decide_in_place(&mut tats, now, &params, NANOS_PER_SEC);
    (decision, decision.allowed.then_some(tats))
}

/// The same decision, updating `tats` (one per `params`) in place only when
/// allowed. Used directly by the stores: no allocation.
pub(crate) fn decide_in_place(
    tats: &mut [u64],
    now: u64,
    params: &[Params],
    units_per_sec: u64,
) -> Decision {
    debug_assert_eq!(tats.len(), params.len());
    // First pass: does every limit allow, and if not, which refusal waits longest?
    let mut refusal: Option<(u64, usize)> = None; // (wait in units, index)
    for (i, (p, &tat)) in params.iter().zip(tats.iter()).enumerate() {
        let wait = if p.blocked {
            Some(p.period.max(1))
        } else {
            let tat = tat.max(now);
            (tat - now > p.tau).then(|| tat - now - p.tau)
        };
        if let Some(wait) = wait {
            if refusal.is_none_or(|(longest, _)| wait > longest) {
                refusal = Some((wait, i));
            }
        }
    }

    if let Some((wait, i)) = refusal {
        let p = &params[i];
        let reset = if p.blocked {
            0
        } else {
            ceil_secs(tats[i].max(now) - now, units_per_sec)
        };
        return Decision {
            allowed: false,
            limit: p.capacity,
            remaining: 0,
            reset_secs: reset,
            retry_after_secs: ceil_secs(wait, units_per_sec).max(1),
        };
    }

    // Every limit allows: advance all TATs, report the tightest.
    let mut best: Option<(u32, u64, u32)> = None; // (remaining, reset, capacity)
    for (p, tat) in params.iter().zip(tats.iter_mut()) {
        let new_tat = (*tat).max(now).saturating_add(p.t);
        *tat = new_tat;
        let remaining = if p.t == 0 {
            p.capacity
        } else {
            // new_tat ≤ now + τ + T because the limit allowed, so this is ≥ 0.
            let slack = (u128::from(now) + u128::from(p.tau) + u128::from(p.t))
                .saturating_sub(u128::from(new_tat));
            u32::try_from(slack / u128::from(p.t)).unwrap_or(u32::MAX)
        };
        let reset = ceil_secs(new_tat - now, units_per_sec);
        let tighter = match best {
            None => true,
            Some((r, s, _)) => remaining < r || (remaining == r && reset > s),
        };
        if tighter {
            best = Some((remaining, reset, p.capacity));
        }
    }
    let (remaining, reset_secs, limit) = best.unwrap_or((0, 0, 0));
    Decision {
        allowed: true,
        limit,
        remaining,
        reset_secs,
        retry_after_secs: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SEC;

    fn limit(rate: u32, period_secs: u64, burst: u32) -> Limit {
        Limit {
            rate,
            period: Duration::from_secs(period_secs),
            burst,
        }
    }

    /// Feeds requests at the given times through `decide`, keeping the state.
    struct Key {
        tats: Vec<u64>,
        limits: Vec<Limit>,
    }

    impl Key {
        fn new(limits: &[Limit]) -> Key {
            Key {
                tats: Vec::new(),
                limits: limits.to_vec(),
            }
        }

        fn hit(&mut self, now: u64) -> Decision {
            let (d, new) = decide(&self.tats, now, &self.limits);
            assert_eq!(d.allowed, new.is_some());
            if let Some(new) = new {
                self.tats = new;
            }
            d
        }
    }

    #[test]
    fn ten_per_minute_boundary_is_exact() {
        let mut k = Key::new(&[limit(10, 60, 0)]);
        let first = k.hit(0);
        assert_eq!(
            first,
            Decision {
                allowed: true,
                limit: 1,
                remaining: 0,
                reset_secs: 6,
                retry_after_secs: 0
            }
        );
        let second = k.hit(0);
        assert_eq!(
            second,
            Decision {
                allowed: false,
                limit: 1,
                remaining: 0,
                reset_secs: 6,
                retry_after_secs: 6
            }
        );
        // One nanosecond early: still refused, and the hint rounds up to 1 s.
        let early = k.hit(6 * S - 1);
        assert!(!early.allowed);
        assert_eq!(early.retry_after_secs, 1);
        // Exactly on time: allowed.
        assert!(k.hit(6 * S).allowed);
    }

    #[test]
    fn a_refused_request_consumes_nothing() {
        let mut k = Key::new(&[limit(10, 60, 0)]);
        assert!(k.hit(0).allowed);
        let before = k.tats.clone();
        for _ in 0..100 {
            assert!(!k.hit(1).allowed);
        }
        assert_eq!(k.tats, before);
        assert!(k.hit(6 * S).allowed);
    }

    /// Hammer the key every `step` ns over [start, start + window) and count passes.
    fn count_in_window(k: &mut Key, start: u64, window: u64, step: u64) -> usize {
        (0..window / step)
            .filter(|i| k.hit(start + i * step).allowed)
            .count()
    }

    #[test]
    fn over_a_minute_exactly_the_configured_count() {
        for rate in [1u32, 7, 10, 60, 100, 1000] {
            let mut k = Key::new(&[limit(rate, 60, 0)]);
            let n = count_in_window(&mut k, 0, 60 * S, 1_000_000);
            assert_eq!(n, rate as usize, "rate {rate}");
            // And in every following minute, too.
            let n = count_in_window(&mut k, 60 * S, 60 * S, 1_000_000);
            assert_eq!(n, rate as usize, "rate {rate}, second minute");
        }
    }

    #[test]
    fn sixty_per_minute_is_one_per_second() {
        let mut k = Key::new(&[limit(60, 60, 0)]);
        for s in 0..120 {
            assert!(k.hit(s * S).allowed, "at {s} s");
            assert!(!k.hit(s * S + S / 2).allowed, "at {s}.5 s");
        }
    }

    #[test]
    fn burst_allows_burst_plus_one_at_once_then_the_rate() {
        let mut k = Key::new(&[limit(60, 60, 4)]);
        let remaining: Vec<u32> = (0..5).map(|_| k.hit(0).remaining).collect();
        assert_eq!(remaining, vec![4, 3, 2, 1, 0]);
        let refused = k.hit(0);
        assert!(!refused.allowed);
        assert_eq!(refused.limit, 5);
        assert_eq!(refused.retry_after_secs, 1);
        assert_eq!(refused.reset_secs, 5);
        // One more each second after that.
        assert!(k.hit(S).allowed);
        assert!(!k.hit(S).allowed);
        // Fully replenished after 5 s of silence: 5 at once again.
        let n = (0..10).filter(|_| k.hit(7 * S).allowed).count();
        assert_eq!(n, 5);
        // Over a minute starting full: burst + rate.
        let mut k = Key::new(&[limit(60, 60, 4)]);
        assert_eq!(count_in_window(&mut k, 0, 60 * S, 10_000_000), 64);
    }

    #[test]
    fn remaining_and_reset_follow_replenishment() {
        let mut k = Key::new(&[limit(10, 10, 9)]); // T = 1 s, capacity 10
        for _ in 0..10 {
            assert!(k.hit(0).allowed);
        }
        let d = k.hit(3 * S); // 3 s replenished 3, this one takes 1
        assert_eq!(d.remaining, 2);
        assert_eq!(d.reset_secs, 8);
        assert_eq!(d.limit, 10);
    }

    #[test]
    fn two_limits_the_hourly_one_binds() {
        let minute = limit(10, 60, 9); // 10 at once, 1 per 6 s
        let hour = limit(20, 3600, 0); // 1 per 3 min
        let mut k = Key::new(&[minute, hour]);
        let first = k.hit(0);
        assert!(first.allowed);
        // The hourly limit is the tightest: capacity 1, nothing remaining.
        assert_eq!(
            (first.limit, first.remaining, first.reset_secs),
            (1, 0, 180)
        );
        let second = k.hit(0);
        assert!(!second.allowed);
        assert_eq!(second.retry_after_secs, 180);
        // The refusal consumed nothing from the minute limit.
        assert_eq!(k.tats[0], 6 * S);
        // Over an hour: exactly 20, though the minute limit would allow 600+.
        let mut k = Key::new(&[minute, hour]);
        assert_eq!(count_in_window(&mut k, 0, 3600 * S, S), 20);
    }

    #[test]
    fn two_limits_the_minute_one_binds() {
        let minute = limit(2, 60, 0); // 1 per 30 s
        let hour = limit(100, 3600, 9);
        let mut k = Key::new(&[minute, hour]);
        let d = k.hit(0);
        assert_eq!((d.limit, d.remaining, d.reset_secs), (1, 0, 30));
        let d = k.hit(S);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 29);
        // The hourly TAT did not move on the refusal.
        assert_eq!(k.tats[1], 36 * S);
    }

    #[test]
    fn refusal_reports_the_longest_wait() {
        let a = limit(1, 10, 0);
        let b = limit(1, 100, 0);
        let mut k = Key::new(&[a, b]);
        assert!(k.hit(0).allowed);
        let d = k.hit(0);
        assert_eq!(d.retry_after_secs, 100);
        let d = k.hit(50 * S);
        assert_eq!(d.retry_after_secs, 50);
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let mut k = Key::new(&[limit(10, 60, 2)]);
        for _ in 0..3 {
            assert!(k.hit(100 * S).allowed);
        }
        // Time jumps back 90 s: no panic, no extra requests, sane numbers.
        let d = k.hit(10 * S);
        assert!(!d.allowed);
        assert!(d.retry_after_secs >= 1);
        assert!(k.hit(0).retry_after_secs > 0);
        // Back to the real time: the state is as if nothing happened.
        let d = k.hit(106 * S);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn missing_tats_are_a_fresh_key() {
        let limits = [limit(1, 60, 0), limit(1, 3600, 0)];
        let (d, new) = decide(&[], 5 * S, &limits);
        assert!(d.allowed);
        assert_eq!(new, Some(vec![65 * S, 3605 * S]));
        // Extra TATs (fewer limits than before) are ignored.
        let (d, new) = decide(&[0, 0, 0], 5 * S, &limits[..1]);
        assert!(d.allowed);
        assert_eq!(new.map(|v| v.len()), Some(1));
    }

    #[test]
    fn rate_zero_refuses_and_zero_period_allows() {
        let (d, new) = decide(&[], 0, &[limit(0, 60, 3)]);
        assert!(!d.allowed);
        assert!(new.is_none());
        assert_eq!(d.retry_after_secs, 60);
        let free = Limit {
            rate: 5,
            period: Duration::ZERO,
            burst: 0,
        };
        for now in [0, 0, 1, 1] {
            let (d, _) = decide(&[now], now, &[free]);
            assert!(d.allowed);
            assert_eq!(d.remaining, 1);
        }
    }

    #[test]
    fn no_limits_allows() {
        let (d, new) = decide(&[], 7, &[]);
        assert!(d.allowed);
        assert_eq!(new, Some(vec![]));
        assert_eq!(d.limit, 0);
    }

    #[test]
    fn rates_that_do_not_divide_round_the_interval_up() {
        let p = Params::new(&limit(3, 1, 0), NANOS_PER_SEC);
        assert_eq!(p.t, 333_333_334);
        let p = Params::new(&limit(3, 1, 0), MICROS_PER_SEC);
        assert_eq!(p.t, 333_334);
        let p = Params::new(
            &Limit {
                rate: 1,
                period: Duration::from_nanos(1_500),
                burst: 0,
            },
            MICROS_PER_SEC,
        );
        assert_eq!(p.t, 2);
    }

    #[test]
    fn huge_values_saturate() {
        let l = Limit {
            rate: 1,
            period: Duration::MAX,
            burst: u32::MAX,
        };
        let (d, new) = decide(&[u64::MAX], u64::MAX, &[l]);
        assert!(d.allowed);
        assert_eq!(d.limit, u32::MAX);
        assert_eq!(new, Some(vec![u64::MAX]));
        let (d, _) = decide(&[u64::MAX], 0, &[limit(1, 1, 0)]);
        assert!(!d.allowed);
        assert!(d.retry_after_secs >= 1);
    }
}
