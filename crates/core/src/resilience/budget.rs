//! A retry budget, as in Envoy, linkerd2-proxy and tower's `TpsBudget`: over a
//! rolling window, retries may be at most `ratio` × original requests plus a floor
//! of `min_per_sec` × window seconds, so retries cannot multiply the load on an
//! upstream that is already failing.
//!
//! `deposit` runs on every request and is a load and an atomic add (a mutex only
//! when a time bucket is recycled). Under contention the check in `try_withdraw`
//! and its count are not one atomic step, so concurrent callers may overshoot the
//! budget by at most their number.

use std::time::Duration;

use super::clock::duration_nanos;
use super::window::{bucket_width, RollingPair};

#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    /// Retries always allowed per window, whatever the traffic.
    floor: f64,
    bucket_width: u64,
    /// Original requests (first) and retries (second).
    counts: RollingPair,
}

impl RetryBudget {
    /// Retries may be at most `ratio` × requests seen over `window`, plus
    /// `min_per_sec` × window seconds. A NaN or negative `ratio` counts as 0 and a
    /// huge one is capped at 1e6. Callers' defaults: 0.2, 10, 10 s.
    pub fn new(ratio: f64, min_per_sec: u32, window: Duration) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1e6)
        };
        Self {
            ratio,
            floor: f64::from(min_per_sec) * window.as_secs_f64(),
            bucket_width: bucket_width(duration_nanos(window)),
            counts: RollingPair::default(),
        }
    }

    /// Counts one original request.
    pub fn deposit(&self, now: u64) {
        self.counts.add(self.bucket_width, now, 1, 0);
    }

    /// Asks for one retry: true if the budget allows it (and then counts it).
    pub fn try_withdraw(&self, now: u64) -> bool {
        let (requests, retries) = self.counts.sum(self.bucket_width, now);
        if retries >= self.allowance(requests) {
            return false;
        }
        self.counts.add(self.bucket_width, now, 0, 1);
        true
    }

    /// Original requests and retries counted in the window that ends at `now`.
    pub fn snapshot(&self, now: u64) -> (u64, u64) {
        self.counts.sum(self.bucket_width, now)
    }

    /// Retries allowed in a window that saw `requests` original requests.
    fn allowance(&self, requests: u64) -> u64 {
        // A tiny epsilon so that e.g. 0.2 × 100 is 20, not 19.999…
        let allowed = (self.ratio * requests as f64 + self.floor + 1e-9).floor();
        // `as` saturates for huge values; both terms are finite and non-negative.
        allowed as u64
    }
}

impl Default for RetryBudget {
    /// 20% of requests plus 10 retries a second, over 10 seconds.
    fn default() -> Self {
        Self::new(0.2, 10, Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn withdrawals(budget: &RetryBudget, now: u64, attempts: usize) -> usize {
        (0..attempts).filter(|_| budget.try_withdraw(now)).count()
    }

    #[test]
    fn allows_the_ratio_of_requests_and_refuses_beyond() {
        let budget = RetryBudget::new(0.2, 0, Duration::from_secs(10));
        assert!(!budget.try_withdraw(SEC), "no requests, no floor: no retry");
        for _ in 0..100 {
            budget.deposit(SEC);
        }
        assert_eq!(withdrawals(&budget, 2 * SEC, 50), 20);
        assert_eq!(budget.snapshot(2 * SEC), (100, 20));
        // More traffic earns more retries.
        for _ in 0..10 {
            budget.deposit(3 * SEC);
        }
        assert_eq!(withdrawals(&budget, 3 * SEC, 50), 2);
    }

    #[test]
    fn the_floor_allows_retries_without_traffic() {
        let budget = RetryBudget::new(0.2, 10, Duration::from_secs(10));
        assert_eq!(withdrawals(&budget, SEC, 500), 100);
        for _ in 0..50 {
            budget.deposit(SEC);
        }
        assert_eq!(withdrawals(&budget, SEC, 500), 10);
        assert_eq!(budget.snapshot(SEC), (50, 110));
    }

    #[test]
    fn recovers_after_the_window() {
        let budget = RetryBudget::new(0.5, 1, Duration::from_secs(10));
        for _ in 0..10 {
            budget.deposit(0);
        }
        assert_eq!(withdrawals(&budget, 0, 100), 15);
        assert!(!budget.try_withdraw(5 * SEC));
        // Those retries and requests have left the window: only the floor remains.
        assert_eq!(budget.snapshot(20 * SEC), (0, 0));
        assert_eq!(withdrawals(&budget, 20 * SEC, 100), 10);
    }

    #[test]
    fn odd_ratios_are_tamed() {
        let never = RetryBudget::new(f64::NAN, 0, Duration::from_secs(1));
        never.deposit(0);
        assert!(!never.try_withdraw(0));
        let negative = RetryBudget::new(-3.0, 0, Duration::from_secs(1));
        negative.deposit(0);
        assert!(!negative.try_withdraw(0));
        let huge = RetryBudget::new(f64::INFINITY, u32::MAX, Duration::MAX);
        huge.deposit(u64::MAX);
        assert!(huge.try_withdraw(u64::MAX));
        let zero_window = RetryBudget::new(1.0, 10, Duration::ZERO);
        zero_window.deposit(5);
        assert!(zero_window.try_withdraw(5));
        assert!(!zero_window.try_withdraw(5));
    }

    #[test]
    fn default_is_twenty_percent_plus_ten_a_second() {
        let budget = RetryBudget::default();
        for _ in 0..1_000 {
            budget.deposit(SEC);
        }
        assert_eq!(withdrawals(&budget, SEC, 1_000), 300);
    }
}
