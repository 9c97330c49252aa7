//! A lock-free latency histogram with fixed, decimal log-linear buckets of microseconds.
//!
//! # Buckets
//!
//! Every bucket is *upper-inclusive*: it holds the integer microsecond values in
//! `(previous upper bound, upper bound]`.
//!
//! * `0 ..= 100 µs`: one bucket per microsecond (exact).
//! * `(100 µs, 100 s]`: six decades, each split at `10·p, 20·p, 50·p, 100·p` (with
//!   `p = 10^(decade - 1)`) into 20 buckets of width `p/2`, 30 of width `p` and 25 of
//!   width `2·p` — 75 buckets per decade, every width at most 5% of its lower bound.
//! * above 100 s: one overflow bucket (its samples' maximum is kept separately).
//!
//! 552 buckets in all (4.4 KB). Because the grid is decimal, every Prometheus boundary of
//! [`PROMETHEUS_BOUNDS_US`] (1 ms, 2.5 ms, 5 ms, …, 10 s) is exactly a bucket edge: the
//! cumulative counts of [`HistogramSnapshot::buckets`] are exact, not estimated.
//!
//! # Error bound
//!
//! [`LatencyHistogram::percentile_ms`] reports the upper bound of the bucket holding the
//! q-th sample. For that sample's true value `x` (in whole microseconds) the reported value
//! `r` satisfies `x ≤ r < 1.05·x`: at most **5% relative error, never an underestimate**
//! (exact up to 100 µs; for the overflow bucket, above 100 s, the largest sample seen).
//!
//! # Cost
//!
//! [`LatencyHistogram::record`] is three relaxed `fetch_add`s (bucket, count, sum) and an
//! index computed with one `ilog10` and one division; no locks, no allocation.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Serialize, Serializer};

/// Values up to this many microseconds have a bucket each.
const EXACT_US: u64 = 100;
/// Decades of log-linear buckets above [`EXACT_US`]: `(10², 10³] … (10⁷, 10⁸]` µs.
const DECADES: usize = 6;
const PER_DECADE: usize = 75;
/// Buckets with a finite upper bound.
const FINITE: usize = EXACT_US as usize + 1 + DECADES * PER_DECADE;
/// All buckets: the finite ones and the overflow bucket.
const BUCKETS: usize = FINITE + 1;
/// The largest value with a finite bucket: 100 s.
const MAX_FINITE_US: u64 = 100_000_000;

const POW10: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The inclusive upper bound, in µs, of every finite bucket.
const UPPER_US: [u64; FINITE] = upper_bounds();

const fn upper_bounds() -> [u64; FINITE] {
    let mut table = [0u64; FINITE];
    let mut i = 0;
    while i <= EXACT_US as usize {
        table[i] = i as u64;
        i += 1;
    }
    let mut p = 10u64;
    let mut decade = 0;
    while decade < DECADES {
        let mut s = 0u64;
        while s < PER_DECADE as u64 {
            table[i] = if s < 20 {
                10 * p + (s + 1) * (p / 2)
            } else if s < 50 {
                20 * p + (s - 19) * p
            } else {
                50 * p + (s - 49) * 2 * p
            };
            i += 1;
            s += 1;
        }
        p *= 10;
        decade += 1;
    }
    table
}

/// The Prometheus `le` boundaries of [`HistogramSnapshot::buckets`], in microseconds:
/// 1 ms, 2.5 ms, 5 ms, 10 ms, 25 ms, 50 ms, 100 ms, 250 ms, 500 ms, 1 s, 2.5 s, 5 s, 10 s
/// (then `+Inf`). Each is exactly the upper edge of a fine bucket.
pub const PROMETHEUS_BOUNDS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// The bucket of a value in microseconds.
#[inline]
fn bucket_index(us: u64) -> usize {
    if us <= EXACT_US {
        return us as usize;
    }
    if us > MAX_FINITE_US {
        return FINITE;
    }
    // Buckets are upper-inclusive: `us ∈ (a, a + w]` ⇔ `us - 1 ∈ [a, a + w)`.
    let v = us - 1; // 100 ..= 99_999_999
    let k = v.ilog10() as usize; // 2 ..= 7
    let p = POW10[k - 1];
    // Half-units of p: v ∈ [10p, 100p) ⇒ h ∈ [20, 200).
    let h = (2 * v / p) as usize;
    let sub = if h < 40 {
        h - 20 // width p/2
    } else if h < 100 {
        h / 2 // 20 + (v - 20p) / p
    } else {
        25 + h / 4 // 50 + (v - 50p) / 2p
    };
    EXACT_US as usize + 1 + (k - 2) * PER_DECADE + sub
}

/// Whole microseconds of a duration, rounded **up** (saturating at `u64::MAX`), so that
/// `d ≤ B ⇔ duration_us(d) ≤ B` for every whole-microsecond boundary `B`: Prometheus
/// `le` buckets stay exact. Sums are biased up by less than 1 µs per sample.
#[inline]
pub fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000)).unwrap_or(u64::MAX)
}

/// A concurrent latency histogram; see the [module docs](self) for buckets and error.
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_us: AtomicU64,
    /// The largest sample above 100 s (only written on that rare path).
    overflow_max_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            overflow_max_us: AtomicU64::new(0),
        }
    }

    /// Records one sample of `us` microseconds. Lock-free.
    #[inline]
    pub fn record(&self, us: u64) {
        let i = bucket_index(us);
        if i == FINITE {
            self.overflow_max_us.fetch_max(us, Relaxed);
        }
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Records a duration, rounded up to whole microseconds (see [`duration_us`]).
    #[inline]
    pub fn record_duration(&self, d: Duration) {
        self.record(duration_us(d));
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The sum of all samples, in microseconds (wrapping after ~584,000 years of latency).
    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Relaxed)
    }

    /// The exact mean in milliseconds; 0 when empty.
    pub fn mean_ms(&self) -> f64 {
        mean_ms(self.sum_us(), self.count())
    }

    /// The q-quantile (`q` in `0..=1`, clamped; NaN reads as 0) in milliseconds: the upper
    /// bound of the bucket holding the `⌈q·count⌉`-th smallest sample, within +5% of it and
    /// never below it. 0 when empty.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        let counts = self.load_buckets();
        let total = counts.iter().sum();
        quantile_ms(&counts, total, q, self.overflow_max_us.load(Relaxed))
    }

    /// Counts, sum, p50/p90/p99, mean and the Prometheus buckets, from one read of every
    /// bucket. `count` is the buckets' total, so `buckets` end exactly at `count` even
    /// while other threads record (`sum_ms` may be a sample or two ahead of them).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts = self.load_buckets();
        let sum_us = self.sum_us.load(Relaxed);
        let overflow_max = self.overflow_max_us.load(Relaxed);
        let count: u64 = counts.iter().sum();

        let mut buckets = Vec::with_capacity(PROMETHEUS_BOUNDS_US.len() + 1);
        let mut cumulative = 0u64;
        let mut next = 0;
        for (i, &c) in counts[..FINITE].iter().enumerate() {
            cumulative += c;
            if next < PROMETHEUS_BOUNDS_US.len() && UPPER_US[i] == PROMETHEUS_BOUNDS_US[next] {
                buckets.push((PROMETHEUS_BOUNDS_US[next] as f64 / 1e6, cumulative));
                next += 1;
            }
        }
        buckets.push((f64::INFINITY, count));

        HistogramSnapshot {
            count,
            sum_ms: sum_us as f64 / 1e3,
            p50_ms: quantile_ms(&counts, count, 0.5, overflow_max),
            p90_ms: quantile_ms(&counts, count, 0.9, overflow_max),
            p99_ms: quantile_ms(&counts, count, 0.99, overflow_max),
            mean_ms: mean_ms(sum_us, count),
            buckets,
        }
    }

    fn load_buckets(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Relaxed)).collect()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .field("sum_us", &self.sum_us())
            .finish_non_exhaustive()
    }
}

fn mean_ms(sum_us: u64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        sum_us as f64 / count as f64 / 1e3
    }
}

fn quantile_ms(counts: &[u64], total: u64, q: f64, overflow_max_us: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let us = if i < FINITE {
                UPPER_US[i]
            } else {
                overflow_max_us.max(MAX_FINITE_US)
            };
            return us as f64 / 1e3;
        }
    }
    // Unreachable while `total` is the sum of `counts`; the largest finite edge otherwise.
    MAX_FINITE_US as f64 / 1e3
}

/// A histogram read at one moment. Serialized in camelCase (`sumMs`, `p50Ms`, …);
/// `buckets` as `[[le, cumulative], …]` with the last `le` written `"+Inf"` (JSON has no
/// infinity).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistogramSnapshot {
    pub count: u64,
    pub sum_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// `(le in seconds, samples ≤ le)` at [`PROMETHEUS_BOUNDS_US`], then `(+∞, count)`.
    #[serde(serialize_with = "serialize_buckets")]
    pub buckets: Vec<(f64, u64)>,
}

impl HistogramSnapshot {
    /// The snapshot of an empty histogram.
    pub fn empty() -> Self {
        LatencyHistogram::new().snapshot()
    }
}

fn serialize_buckets<S: Serializer>(buckets: &[(f64, u64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;

    #[derive(Serialize)]
    #[serde(untagged)]
    enum Le {
        Finite(f64),
        Inf(&'static str),
    }

    let mut seq = s.serialize_seq(Some(buckets.len()))?;
    for &(le, cumulative) in buckets {
        let le = if le.is_finite() {
            Le::Finite(le)
        } else {
            Le::Inf("+Inf")
        };
        seq.serialize_element(&(le, cumulative))?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bucket_edges_are_consistent() {
        // Strictly increasing upper bounds, ending at 100 s.
        assert!(UPPER_US.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(UPPER_US[FINITE - 1], MAX_FINITE_US);
        // Every edge maps to its own bucket, the next value to the next bucket.
        for (i, &upper) in UPPER_US.iter().enumerate() {
            assert_eq!(bucket_index(upper), i, "upper {upper}");
            assert_eq!(bucket_index(upper + 1), i + 1, "upper {upper} + 1");
        }
        assert_eq!(bucket_index(u64::MAX), FINITE);
    }

    #[test]
    fn every_bucket_is_within_five_percent() {
        for i in EXACT_US as usize + 1..FINITE {
            let (lower, upper) = (UPPER_US[i - 1], UPPER_US[i]);
            // Any x in (lower, upper] is reported as upper: error < (upper-lower)/lower.
            assert!(
                (upper - lower) as f64 / lower as f64 <= 0.05 + 1e-12,
                "bucket ({lower}, {upper}]"
            );
        }
        // A sweep of values: the reported bound is ≥ x and < 1.05·x.
        let mut x = 1u64;
        while x <= MAX_FINITE_US {
            let r = UPPER_US[bucket_index(x)];
            assert!(r >= x && (r as f64) < x as f64 * 1.05 + 1e-9, "x {x} r {r}");
            x += 1 + x / 97;
        }
    }

    #[test]
    fn prometheus_bounds_are_bucket_edges() {
        for b in PROMETHEUS_BOUNDS_US {
            assert_eq!(UPPER_US[bucket_index(b)], b);
        }
    }

    #[test]
    fn duration_rounds_up_to_whole_microseconds() {
        assert_eq!(duration_us(Duration::from_micros(1_000)), 1_000);
        assert_eq!(duration_us(Duration::from_nanos(1_000_001)), 1_001);
        assert_eq!(duration_us(Duration::from_nanos(999_001)), 1_000);
        assert_eq!(duration_us(Duration::ZERO), 0);
        assert_eq!(duration_us(Duration::MAX), u64::MAX);
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let h = LatencyHistogram::new();
        for us in 1..=10_000 {
            h.record(us);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.sum_us(), 10_000 * 10_001 / 2);
        // Mean: exact (5000.5 µs).
        assert_eq!(h.mean_ms(), 5.0005);
        for (q, exact_ms) in [
            (0.5, 5.0),
            (0.9, 9.0),
            (0.99, 9.9),
            (0.001, 0.01),
            (1.0, 10.0),
        ] {
            let p = h.percentile_ms(q);
            assert!(
                p >= exact_ms && p < exact_ms * 1.05,
                "q {q}: {p} vs {exact_ms}"
            );
        }
        // q = 0 is the smallest sample's bucket (1 µs, exact).
        assert_eq!(h.percentile_ms(0.0), 0.001);
        let s = h.snapshot();
        assert_eq!(s.p50_ms, h.percentile_ms(0.5));
        assert_eq!(s.p99_ms, h.percentile_ms(0.99));
        assert!((s.p99_ms - 9.9).abs() / 9.9 <= 0.05);
        assert_eq!(s.mean_ms, 5.0005);
        assert_eq!(s.sum_ms, 50_005.0);
    }

    #[test]
    fn cumulative_buckets_are_exact_monotonic_and_end_at_count() {
        let h = LatencyHistogram::new();
        for us in 1..=10_000 {
            h.record(us);
        }
        h.record(20_000_000); // 20 s: beyond the last finite le (10 s)
        let s = h.snapshot();
        assert_eq!(s.buckets.len(), PROMETHEUS_BOUNDS_US.len() + 1);
        assert!(s
            .buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 10_001)));
        assert_eq!(s.count, 10_001);
        // le=1ms holds exactly the samples ≤ 1000 µs, le=2.5ms those ≤ 2500 µs …
        assert_eq!(s.buckets[0], (0.001, 1_000));
        assert_eq!(s.buckets[1], (0.0025, 2_500));
        assert_eq!(s.buckets[3], (0.01, 10_000));
        assert_eq!(s.buckets[12], (10.0, 10_000));
    }

    #[test]
    fn overflow_reports_the_largest_sample() {
        let h = LatencyHistogram::new();
        h.record(150_000_000);
        h.record(120_000_000);
        assert_eq!(h.percentile_ms(0.5), 150_000.0);
        assert_eq!(h.snapshot().buckets.last(), Some(&(f64::INFINITY, 2)));
    }

    #[test]
    fn empty_histogram_reads_zero() {
        let h = LatencyHistogram::new();
        let s = h.snapshot();
        assert_eq!((s.count, s.p50_ms, s.p99_ms, s.mean_ms), (0, 0.0, 0.0, 0.0));
        assert!(s.buckets.iter().all(|&(_, c)| c == 0));
        assert_eq!(h.percentile_ms(f64::NAN), 0.0);
    }

    #[test]
    fn concurrent_recording_sums_exactly() {
        let h = Arc::new(LatencyHistogram::new());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let h = Arc::clone(&h);
                std::thread::spawn(move || {
                    for i in 0..50_000u64 {
                        h.record((i * 7 + t) % 3_000_000);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recorder thread");
        }
        let expected_sum: u64 = (0..8u64)
            .map(|t| (0..50_000u64).map(|i| (i * 7 + t) % 3_000_000).sum::<u64>())
            .sum();
        assert_eq!(h.count(), 400_000);
        assert_eq!(h.sum_us(), expected_sum);
        let s = h.snapshot();
        assert_eq!(s.count, 400_000);
        assert_eq!(s.buckets.last().map(|b| b.1), Some(400_000));
    }

    #[test]
    fn serializes_camel_case_with_inf_as_string() {
        let h = LatencyHistogram::new();
        h.record(1_500);
        let json = serde_json::to_value(h.snapshot()).expect("serialize");
        assert_eq!(json["count"], 1);
        assert_eq!(json["sumMs"], 1.5);
        assert_eq!(json["p50Ms"], 1.5);
        assert_eq!(json["buckets"][0], serde_json::json!([0.001, 0]));
        assert_eq!(json["buckets"][1], serde_json::json!([0.0025, 1]));
        assert_eq!(json["buckets"][13], serde_json::json!(["+Inf", 1]));
    }
}
