//! Passive outlier detection, like Envoy's consecutive-5xx ejection: a server that
//! fails `consecutive_failures` times in a row is taken out of rotation for a while,
//! longer each time it happens again.
//!
//! Ejection lasts `base_ejection` × (ejections so far + 1), capped at
//! `max_ejection`. Forgiveness: a success recorded once the server has been back
//! (not ejected) for at least `max_ejection` resets the ejection count, so the next
//! ejection is short again.
//!
//! The per-server state is atomics only. Whether a server may be ejected depends on
//! its peers, so the caller decides: `record` says when the threshold is reached,
//! the caller checks [`may_eject`] over all servers and then calls `eject`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::clock::{duration_nanos, nanos_to_ms_ceil};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Failures in a row that call for ejection (0 counts as 1).
    pub consecutive_failures: u32,
    /// The first ejection's length; each later one adds as much again.
    pub base_ejection: Duration,
    /// The longest an ejection lasts.
    pub max_ejection: Duration,
    /// The most servers of a balancer that may be ejected at once, in percent.
    pub max_ejected_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// The outlier detection state of one server.
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_failures: AtomicU32,
    /// Monotonic ns at which the current or latest ejection ends; 0 if never ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

impl OutlierState {
    pub fn is_ejected(&self, now: u64) -> bool {
        now < self.ejected_until.load(Ordering::Acquire)
    }

    /// Records an outcome. Returns true when this failure makes (or keeps) the
    /// consecutive count at the threshold: the caller should eject the server if
    /// [`may_eject`] allows. It keeps returning true on later failures until `eject`
    /// or a success resets the count. Outcomes arriving while ejected are ignored.
    pub fn record(&self, cfg: &OutlierConfig, success: bool, now: u64) -> bool {
        if success {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            self.forgive(cfg, now);
            return false;
        }
        if self.is_ejected(now) {
            return false;
        }
        let failures = match self.consecutive_failures.fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |n| n.checked_add(1),
        ) {
            Ok(previous) => previous.saturating_add(1),
            Err(max) => max,
        };
        failures >= cfg.consecutive_failures.max(1)
    }

    /// Ejects the server for `base_ejection` × (ejections so far + 1), capped at
    /// `max_ejection`, and resets the consecutive count. A server already ejected
    /// stays as it is, so racing callers eject it once.
    pub fn eject(&self, cfg: &OutlierConfig, now: u64) {
        let current_until = self.ejected_until.load(Ordering::Acquire);
        if now < current_until {
            return;
        }
        let multiplier = self.ejections.load(Ordering::Relaxed).saturating_add(1);
        let length = cfg
            .base_ejection
            .saturating_mul(multiplier)
            .min(cfg.max_ejection);
        let until = now.saturating_add(duration_nanos(length));
        if self
            .ejected_until
            .compare_exchange(current_until, until, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let _ = self
                .ejections
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Milliseconds (rounded up) until the current ejection ends; None if not ejected.
    pub fn ejected_ms_left(&self, now: u64) -> Option<u64> {
        let until = self.ejected_until.load(Ordering::Acquire);
        (now < until).then(|| nanos_to_ms_ceil(until - now))
    }

    /// Ejections since the count was last forgiven.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Resets the ejection count once the server has been back for `max_ejection`.
    fn forgive(&self, cfg: &OutlierConfig, now: u64) {
        if self.ejections.load(Ordering::Relaxed) == 0 {
            return;
        }
        let until = self.ejected_until.load(Ordering::Acquire);
        if now >= until && now - until >= duration_nanos(cfg.max_ejection) {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }
}

/// Whether one more of `total` servers may be ejected when `ejected` already are:
/// never the last server standing (so never with `total` ≤ 1), never with
/// `max_ejected_percent` = 0; otherwise while the ejected share stays within
/// `max_ejected_percent`, and at least one server whatever the percentage (as
/// Envoy does, so small pools still get outlier detection).
pub fn may_eject(cfg: &OutlierConfig, ejected: usize, total: usize) -> bool {
    if total < 2 || ejected >= total - 1 || cfg.max_ejected_percent == 0 {
        return false;
    }
    if ejected == 0 {
        return true;
    }
    let percent = u128::from(cfg.max_ejected_percent.min(100));
    // usize fits in u128 on every platform Rust supports.
    (ejected as u128 + 1) * 100 <= total as u128 * percent
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(100),
            max_ejected_percent: 50,
        }
    }

    /// Fails the server until `record` asks for ejection, then ejects it.
    fn fail_and_eject(state: &OutlierState, cfg: &OutlierConfig, now: u64) {
        assert!(!state.record(cfg, false, now));
        assert!(!state.record(cfg, false, now));
        assert!(state.record(cfg, false, now));
        state.eject(cfg, now);
        assert!(state.is_ejected(now));
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let cfg = OutlierConfig::default();
        assert_eq!(cfg.consecutive_failures, 5);
        assert_eq!(cfg.base_ejection, Duration::from_secs(30));
        assert_eq!(cfg.max_ejection, Duration::from_secs(300));
        assert_eq!(cfg.max_ejected_percent, 50);
    }

    #[test]
    fn the_threshold_asks_for_ejection_and_a_success_resets_it() {
        let cfg = config();
        let state = OutlierState::default();
        assert!(!state.record(&cfg, false, 0));
        assert!(!state.record(&cfg, false, 0));
        assert!(!state.record(&cfg, true, 0));
        assert!(!state.record(&cfg, false, 0));
        assert!(!state.record(&cfg, false, 0));
        assert!(state.record(&cfg, false, 0));
        // Not ejected (say the share was full): later failures ask again.
        assert!(state.record(&cfg, false, 0));
        assert!(!state.is_ejected(0));
        assert_eq!(state.ejected_ms_left(0), None);
    }

    #[test]
    fn ejection_times_grow_and_cap() {
        let cfg = config();
        let state = OutlierState::default();
        let mut now = SEC;
        for expected_secs in [30, 60, 90, 100, 100] {
            fail_and_eject(&state, &cfg, now);
            assert_eq!(state.ejected_ms_left(now), Some(expected_secs * 1_000));
            let end = now + expected_secs * SEC;
            assert!(state.is_ejected(end - 1));
            assert!(!state.is_ejected(end));
            now = end;
        }
        assert_eq!(state.ejections(), 5);
    }

    #[test]
    fn eject_resets_the_count_and_ignores_outcomes_while_ejected() {
        let cfg = config();
        let state = OutlierState::default();
        fail_and_eject(&state, &cfg, 0);
        for _ in 0..10 {
            assert!(!state.record(&cfg, false, SEC));
        }
        // Back after 30 s: the count starts from zero.
        assert!(!state.record(&cfg, false, 30 * SEC));
        assert!(!state.record(&cfg, false, 30 * SEC));
        assert!(state.record(&cfg, false, 30 * SEC));
    }

    #[test]
    fn ejecting_an_ejected_server_changes_nothing() {
        let cfg = config();
        let state = OutlierState::default();
        fail_and_eject(&state, &cfg, 0);
        state.eject(&cfg, SEC);
        assert_eq!(state.ejections(), 1);
        assert_eq!(state.ejected_ms_left(SEC), Some(29_000));
    }

    #[test]
    fn a_success_long_after_the_last_ejection_forgives() {
        let cfg = config();
        let state = OutlierState::default();
        fail_and_eject(&state, &cfg, 0); // until 30 s
        fail_and_eject(&state, &cfg, 30 * SEC); // 60 s, until 90 s
        assert_eq!(state.ejections(), 2);
        // Back, but not yet for max_ejection (100 s): not forgiven.
        state.record(&cfg, true, 150 * SEC);
        assert_eq!(state.ejections(), 2);
        state.record(&cfg, true, 190 * SEC);
        assert_eq!(state.ejections(), 0);
        fail_and_eject(&state, &cfg, 200 * SEC);
        assert_eq!(state.ejected_ms_left(200 * SEC), Some(30_000));
    }

    #[test]
    fn may_eject_respects_the_share_and_keeps_the_last_server() {
        let cfg = config(); // 50%
        assert!(!may_eject(&cfg, 0, 0));
        assert!(!may_eject(&cfg, 0, 1), "never the only server");
        assert!(may_eject(&cfg, 0, 2));
        assert!(!may_eject(&cfg, 1, 2), "never the last one up");
        assert!(may_eject(&cfg, 0, 3));
        assert!(!may_eject(&cfg, 1, 3), "2 of 3 is over 50%");
        assert!(may_eject(&cfg, 4, 10));
        assert!(!may_eject(&cfg, 5, 10));

        let all = OutlierConfig {
            max_ejected_percent: 100,
            ..config()
        };
        assert!(may_eject(&all, 8, 10));
        assert!(!may_eject(&all, 9, 10), "100% still keeps one");

        let small = OutlierConfig {
            max_ejected_percent: 10,
            ..config()
        };
        assert!(may_eject(&small, 0, 3), "at least one, as Envoy");
        assert!(!may_eject(&small, 1, 3));

        let none = OutlierConfig {
            max_ejected_percent: 0,
            ..config()
        };
        assert!(!may_eject(&none, 0, 10));
        assert!(!may_eject(&all, usize::MAX, usize::MAX));
        assert!(may_eject(&all, usize::MAX - 2, usize::MAX));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let cfg = OutlierConfig {
            consecutive_failures: 0,
            base_ejection: Duration::MAX,
            max_ejection: Duration::MAX,
            max_ejected_percent: u32::MAX,
        };
        let state = OutlierState::default();
        assert!(state.record(&cfg, false, u64::MAX - 1));
        state.eject(&cfg, u64::MAX - 1);
        assert!(state.is_ejected(u64::MAX - 1));
        assert_eq!(state.ejected_ms_left(u64::MAX - 1), Some(1));
        assert!(!may_eject(&cfg, 1, 2));
    }
}
