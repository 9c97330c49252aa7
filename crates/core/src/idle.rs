//! When something long-lived (a tunnel, an HTTP/2 connection) was last active, and a wait
//! for it to have been quiet long enough. Tokio's clock, so tests can pause time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub(crate) struct LastActivity {
    opened: Instant,
    /// Nanoseconds after `opened` of the last `touch`.
    last: AtomicU64,
}

impl LastActivity {
    pub(crate) fn new() -> Self {
        Self {
            opened: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn touch(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// Resolves once `quiet()` holds and nothing touched this for `timeout`; while
    /// `quiet()` does not hold, it looks again every `timeout`.
    pub(crate) async fn quiet_for(&self, timeout: Duration, quiet: impl Fn() -> bool) {
        let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        loop {
            let since = self.now().saturating_sub(self.last.load(Ordering::Relaxed));
            let still = quiet();
            if still && since >= timeout_ns {
                return;
            }
            let wait = if still {
                timeout_ns - since
            } else {
                timeout_ns
            };
            tokio::time::sleep(Duration::from_nanos(wait.max(1_000_000))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn quiet_counts_from_the_last_touch() {
        let activity = LastActivity::new();
        tokio::time::sleep(Duration::from_secs(3)).await;
        activity.touch();
        let touched = Instant::now();
        activity.quiet_for(Duration::from_secs(5), || true).await;
        // Five seconds after the last activity, not after it opened.
        assert_eq!(touched.elapsed(), Duration::from_secs(5));
    }
}
