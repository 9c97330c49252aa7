//! Peak-EWMA latency, as linkerd2-proxy and Finagle estimate a server's cost: a slower
//! sample replaces the estimate at once (the peak), faster samples pull it down with an
//! exponential decay over time, and with no samples at all the estimate fades toward
//! zero (as tower's PeakEwma), so a server that was slow once and then got no traffic is
//! tried again. Two relaxed atomics; a lost update under a race only drops one sample.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::resilience::clock;

/// How fast old samples fade: after `DECAY_NS` a sample weighs 1/e.
const DECAY_NS: f64 = 10_000_000_000.0;
/// The estimate of a server never measured (1 ms): optimistic, so new servers get tried.
const DEFAULT_RTT_NS: f64 = 1_000_000.0;

pub struct PeakEwma {
    /// f64 bits of the estimate in nanoseconds; 0 = no sample yet.
    rtt_bits: AtomicU64,
    /// When the estimate was last updated (clock nanos).
    stamp: AtomicU64,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self {
            rtt_bits: AtomicU64::new(0),
            stamp: AtomicU64::new(0),
        }
    }
}

impl PeakEwma {
    /// Records one round trip of `rtt_ns` observed at `now`.
    pub fn observe(&self, rtt_ns: u64, now: u64) {
        let sample = rtt_ns as f64;
        let bits = self.rtt_bits.load(Ordering::Relaxed);
        let decay = self.decay(now);
        let stored = f64::from_bits(bits);
        let next = if bits == 0 || sample >= stored * decay {
            sample
        } else {
            stored * decay + sample * (1.0 - decay)
        };
        self.rtt_bits
            .store(next.max(1.0).to_bits(), Ordering::Relaxed);
        self.stamp.store(now, Ordering::Relaxed);
    }

    /// How much of the estimate is left after the time since its last update.
    fn decay(&self, now: u64) -> f64 {
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        (-elapsed / DECAY_NS).exp()
    }

    /// The estimate at `now` in nanoseconds, faded since the last sample.
    pub fn estimate_at(&self, now: u64) -> f64 {
        match self.rtt_bits.load(Ordering::Relaxed) {
            0 => DEFAULT_RTT_NS,
            bits => f64::from_bits(bits) * self.decay(now),
        }
    }

    /// The estimate now, in nanoseconds.
    pub fn estimate_ns(&self) -> f64 {
        self.estimate_at(clock::now_nanos())
    }

    /// The cost P2C compares: latency × (requests in flight + 1).
    pub fn cost(&self, in_flight: u32) -> f64 {
        self.estimate_ns() * (f64::from(in_flight) + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_sample_is_taken_at_once_and_fades() {
        let e = PeakEwma::default();
        assert_eq!(e.estimate_ns(), DEFAULT_RTT_NS);
        e.observe(1_000_000, 1);
        e.observe(50_000_000, 2);
        assert_eq!(e.estimate_at(2), 50_000_000.0);
        // Ten seconds of 1 ms answers bring it most of the way back down.
        let mut now = 2;
        for _ in 0..100 {
            now += 100_000_000;
            e.observe(1_000_000, now);
        }
        assert!(e.estimate_at(now) < 20_000_000.0, "{}", e.estimate_at(now));
        assert!(e.cost(3) > e.cost(0));
    }

    #[test]
    fn with_no_samples_the_estimate_fades() {
        let e = PeakEwma::default();
        e.observe(50_000_000, 1_000);
        let peak = e.estimate_at(1_000);
        assert_eq!(peak, 50_000_000.0);
        // After one decay period about 1/e is left; after five, under 1%.
        let later = e.estimate_at(1_000 + DECAY_NS as u64);
        assert!((later / peak - (-1.0f64).exp()).abs() < 1e-9, "{later}");
        assert!(e.estimate_at(1_000 + 5 * DECAY_NS as u64) < peak / 100.0);
    }
}
