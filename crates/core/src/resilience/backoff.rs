//! Delays between retries: exponential backoff with "full jitter" (AWS Architecture
//! Blog, "Exponential Backoff And Jitter"), which spreads retries of many clients
//! evenly instead of letting them retry in lockstep.

use std::time::Duration;

/// A delay drawn uniformly from `[0, min(max, base × factor^(retry-1))]`.
///
/// `retry` is 1 for the first retry (0 is read as 1). `unit` is the random draw in
/// `[0, 1)` ([`random_unit`]; tests pass fixed values); out-of-range values are
/// clamped and NaN counts as 0. A `factor` below 1 or NaN counts as 1. Huge retry
/// counts or factors saturate at `max` instead of overflowing.
pub fn full_jitter(retry: u32, base: Duration, factor: f64, max: Duration, unit: f64) -> Duration {
    let ceiling = backoff_ceiling(retry, base, factor, max);
    let unit = if unit.is_nan() {
        0.0
    } else {
        unit.clamp(0.0, 1.0)
    };
    // Not `mul_f64`, which panics when rounding lands past `Duration::MAX`.
    Duration::try_from_secs_f64(ceiling.as_secs_f64() * unit)
        .map_or(ceiling, |delay| delay.min(ceiling))
}

/// A uniformly random number in `[0, 1)`.
pub fn random_unit() -> f64 {
    fastrand::f64()
}

/// `min(max, base × factor^(retry-1))`, the upper bound of the jittered delay.
fn backoff_ceiling(retry: u32, base: Duration, factor: f64, max: Duration) -> Duration {
    if base.is_zero() || max.is_zero() {
        return Duration::ZERO;
    }
    let factor = if factor.is_nan() {
        1.0
    } else {
        factor.max(1.0)
    };
    let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
    let seconds = base.as_secs_f64() * factor.powi(exponent);
    // Infinite or beyond what a Duration holds: the cap applies anyway.
    Duration::try_from_secs_f64(seconds).map_or(max, |ceiling| ceiling.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    #[test]
    fn ceiling_grows_by_the_factor_and_caps_at_max() {
        let ceilings: Vec<_> = (1..=10)
            .map(|retry| backoff_ceiling(retry, BASE, 2.0, MAX))
            .collect();
        assert_eq!(ceilings[0], BASE);
        assert_eq!(ceilings[1], Duration::from_millis(200));
        assert_eq!(ceilings[2], Duration::from_millis(400));
        assert_eq!(ceilings[9], MAX);
        assert!(
            ceilings.windows(2).all(|pair| pair[0] <= pair[1]),
            "monotone"
        );
        assert_eq!(
            backoff_ceiling(0, BASE, 2.0, MAX),
            BASE,
            "retry 0 reads as 1"
        );
    }

    #[test]
    fn jitter_stays_within_zero_and_the_ceiling() {
        assert_eq!(full_jitter(3, BASE, 2.0, MAX, 0.0), Duration::ZERO);
        assert_eq!(
            full_jitter(3, BASE, 2.0, MAX, 0.5),
            Duration::from_millis(200)
        );
        let near_one = full_jitter(3, BASE, 2.0, MAX, 0.999_999);
        assert!(near_one < Duration::from_millis(400));
        assert!(near_one > Duration::from_millis(399));
        for _ in 0..1_000 {
            let delay = full_jitter(4, BASE, 2.0, MAX, random_unit());
            assert!(delay <= Duration::from_millis(800));
        }
    }

    #[test]
    fn odd_inputs_neither_overflow_nor_panic() {
        assert_eq!(full_jitter(u32::MAX, BASE, 2.0, MAX, 0.5), MAX / 2);
        assert_eq!(full_jitter(u32::MAX, BASE, f64::INFINITY, MAX, 1.0), MAX);
        assert_eq!(
            full_jitter(u32::MAX, Duration::MAX, 10.0, Duration::MAX, 0.999),
            Duration::MAX.mul_f64(0.999)
        );
        assert_eq!(
            full_jitter(u32::MAX, Duration::MAX, 10.0, Duration::MAX, 1.0),
            Duration::MAX
        );
        // A factor below 1 (or NaN) is 1: the delay never shrinks.
        assert_eq!(backoff_ceiling(9, BASE, 0.5, MAX), BASE);
        assert_eq!(backoff_ceiling(9, BASE, f64::NAN, MAX), BASE);
        assert_eq!(backoff_ceiling(9, BASE, -2.0, MAX), BASE);
        // A unit out of range or NaN is clamped.
        assert_eq!(full_jitter(1, BASE, 2.0, MAX, f64::NAN), Duration::ZERO);
        assert_eq!(full_jitter(1, BASE, 2.0, MAX, -1.0), Duration::ZERO);
        assert_eq!(full_jitter(1, BASE, 2.0, MAX, 7.0), BASE);
        // Zero base or zero cap: no delay; a cap below base wins.
        assert_eq!(
            full_jitter(5, Duration::ZERO, 2.0, MAX, 0.5),
            Duration::ZERO
        );
        assert_eq!(
            full_jitter(5, BASE, 2.0, Duration::ZERO, 0.5),
            Duration::ZERO
        );
        assert_eq!(backoff_ceiling(1, MAX, 2.0, BASE), BASE);
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..1_000 {
            let unit = random_unit();
            assert!((0.0..1.0).contains(&unit));
        }
    }
}
