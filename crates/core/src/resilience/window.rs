//! A rolling window of two counters (e.g. requests and failures), kept in
//! [`BUCKETS`] time buckets so old counts fall out as time moves on.
//!
//! Adding is a load and a `fetch_add`; a mutex is taken only to recycle a bucket
//! whose time slot has passed (once per bucket width). Counts are approximate under
//! contention: an add racing a recycle may land in the newer slot. The bucket width
//! is passed on every call, so the owner may be `Default`-constructed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Number of buckets a window is split into.
pub(crate) const BUCKETS: usize = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// Which time slot (`now / width`) the counts belong to.
    slot: AtomicU64,
    first: AtomicU64,
    second: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct RollingPair {
    buckets: [Bucket; BUCKETS],
    recycle: Mutex<()>,
}

/// The width of one bucket for a whole window of `window_nanos` (at least 1 ns).
pub(crate) fn bucket_width(window_nanos: u64) -> u64 {
    (window_nanos / BUCKETS as u64).max(1)
}

impl RollingPair {
    /// Adds `first` and `second` to the bucket of `now`.
    pub(crate) fn add(&self, width: u64, now: u64, first: u64, second: u64) {
        let slot = now / width.max(1);
        let bucket = &self.buckets[index(slot)];
        if bucket.slot.load(Ordering::Acquire) < slot {
            let _guard = self.recycle.lock().unwrap_or_else(PoisonError::into_inner);
            if bucket.slot.load(Ordering::Acquire) < slot {
                bucket.first.store(0, Ordering::Relaxed);
                bucket.second.store(0, Ordering::Relaxed);
                bucket.slot.store(slot, Ordering::Release);
            }
        }
        if first != 0 {
            bucket.first.fetch_add(first, Ordering::Relaxed);
        }
        if second != 0 {
            bucket.second.fetch_add(second, Ordering::Relaxed);
        }
    }

    /// The two sums over the buckets still inside the window that ends at `now`.
    pub(crate) fn sum(&self, width: u64, now: u64) -> (u64, u64) {
        let current = now / width.max(1);
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|bucket| {
                let slot = bucket.slot.load(Ordering::Acquire);
                (oldest..=current).contains(&slot)
            })
            .fold((0u64, 0u64), |(first, second), bucket| {
                (
                    first.saturating_add(bucket.first.load(Ordering::Relaxed)),
                    second.saturating_add(bucket.second.load(Ordering::Relaxed)),
                )
            })
    }

    /// Forgets every count.
    pub(crate) fn clear(&self) {
        let _guard = self.recycle.lock().unwrap_or_else(PoisonError::into_inner);
        for bucket in &self.buckets {
            bucket.first.store(0, Ordering::Relaxed);
            bucket.second.store(0, Ordering::Relaxed);
        }
    }
}

fn index(slot: u64) -> usize {
    // The remainder is below BUCKETS, so it always fits.
    (slot % BUCKETS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDTH: u64 = 1_000;

    #[test]
    fn sums_within_the_window_and_forgets_older_buckets() {
        let window = RollingPair::default();
        window.add(WIDTH, 0, 1, 0);
        window.add(WIDTH, 500, 1, 1);
        window.add(WIDTH, 9 * WIDTH, 3, 2);
        assert_eq!(window.sum(WIDTH, 9 * WIDTH + 999), (5, 3));
        // Slot 0 falls out once slot 10 is current.
        assert_eq!(window.sum(WIDTH, 10 * WIDTH), (3, 2));
        // Slot 10 reuses slot 0's bucket and starts from zero.
        window.add(WIDTH, 10 * WIDTH, 1, 0);
        assert_eq!(window.sum(WIDTH, 10 * WIDTH), (4, 2));
        assert_eq!(window.sum(WIDTH, 100 * WIDTH), (0, 0));
    }

    #[test]
    fn clear_forgets_everything() {
        let window = RollingPair::default();
        window.add(WIDTH, 10, 4, 4);
        window.clear();
        assert_eq!(window.sum(WIDTH, 10), (0, 0));
    }

    #[test]
    fn an_older_time_never_recycles_a_newer_bucket() {
        let window = RollingPair::default();
        window.add(WIDTH, 10 * WIDTH, 2, 0);
        window.add(WIDTH, 0, 1, 0); // same bucket, older slot: counted, not reset
        assert_eq!(window.sum(WIDTH, 10 * WIDTH), (3, 0));
    }

    #[test]
    fn bucket_width_is_never_zero() {
        assert_eq!(bucket_width(0), 1);
        assert_eq!(bucket_width(10_000), 1_000);
    }
}
