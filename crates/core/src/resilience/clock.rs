//! The monotonic clock the resilience state machines are fed with: nanoseconds since
//! a process-wide epoch taken on first use. The state machines themselves take `now`
//! as an argument so tests can drive time by hand.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process-wide epoch, plus one so it is never 0.
/// Saturates instead of wrapping (after some 584 years).
pub fn now_nanos() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    duration_nanos(epoch.elapsed()).saturating_add(1)
}

/// A duration in whole nanoseconds, saturating at `u64::MAX`.
pub(crate) fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds rounded up to whole milliseconds.
pub(crate) fn nanos_to_ms_ceil(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_never_zero_and_never_goes_back() {
        let first = now_nanos();
        let second = now_nanos();
        assert!(first >= 1);
        assert!(second >= first);
    }

    #[test]
    fn duration_nanos_saturates() {
        assert_eq!(duration_nanos(Duration::from_millis(3)), 3_000_000);
        assert_eq!(duration_nanos(Duration::MAX), u64::MAX);
    }

    #[test]
    fn milliseconds_round_up() {
        assert_eq!(nanos_to_ms_ceil(0), 0);
        assert_eq!(nanos_to_ms_ceil(1), 1);
        assert_eq!(nanos_to_ms_ceil(2_000_000), 2);
        assert_eq!(nanos_to_ms_ceil(u64::MAX), u64::MAX / 1_000_000 + 1);
    }
}
