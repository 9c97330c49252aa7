//! A circuit breaker for one upstream server.
//!
//! Closed: requests pass; consecutive failures (or, with [`RateMode`], the failure
//! rate over a rolling window) open it. Open: requests are refused for `open_for`.
//! Half-open: at most `half_open_requests` probes at once; `success_threshold` probe
//! successes close it, one probe failure opens it again.
//!
//! The phase and the instant it was entered share one atomic word, so every
//! transition is a single compare-and-swap with exactly one winner, and the closed
//! hot path (`admits`, `try_acquire`, `record`) is loads and atomic adds only. A
//! mutex serialises the outcomes of half-open probes (rare), so a success and a
//! failure racing cannot both act on the same half-open phase.
//!
//! A breaker cannot get stuck: a probe that ends without an outcome is freed by
//! [`BreakerState::release`], and when every probe slot has been held longer than
//! `LEAK_FLOOR` (or `open_for`, if longer) without news, the holders are counted as
//! leaked and a new probe is admitted anyway. The floor is far above any request
//! timeout, so a slow probe that is still waiting is never counted as leaked (which
//! would admit more probes than `half_open_requests`).
//!
//! Outcomes carry no identity, so they are judged by the phase they arrive in: an
//! `Admitted` outcome is ignored unless the breaker is still closed, and a probe
//! outcome counts towards the half-open phase it arrives in (it only frees its slot
//! when the breaker is no longer half-open).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::clock::{duration_nanos, nanos_to_ms_ceil};
use super::window::{bucket_width, RollingPair};

/// When a breaker opens and how it recovers.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker (0 counts as 1).
    pub failure_threshold: u32,
    /// How long it stays open before admitting probes.
    pub open_for: Duration,
    /// Probes admitted at once while half-open (clamped to 1..=65535).
    pub half_open_requests: u32,
    /// Probe successes that close it (0 counts as 1).
    pub success_threshold: u32,
    /// Also open on the failure rate over a rolling window.
    pub rate: Option<RateMode>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(60),
            half_open_requests: 1,
            success_threshold: 1,
            rate: None,
        }
    }
}

/// Opens the breaker when, over `window`, at least `min_requests` outcomes were
/// recorded and the share of failures among them is at least `failure_rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateMode {
    pub window: Duration,
    /// Volume below which the rate is not judged (0 counts as 1).
    pub min_requests: u32,
    /// In `0..=1`; out-of-range values are clamped and NaN counts as 1.
    pub failure_rate: f64,
}

impl Default for RateMode {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            min_requests: 20,
            failure_rate: 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerPhase {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// What [`BreakerState::try_acquire`] granted; hand it back to `record` or `release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Refused: send nothing.
    Denied,
    /// Admitted while closed.
    Admitted,
    /// Admitted as a half-open probe; holds a probe slot until recorded or released.
    Probe,
}

/// The breaker of one server as status pages show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerSnapshot {
    /// [`BreakerPhase::as_str`].
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub half_open_successes: u32,
    pub probes_in_flight: u32,
    pub times_opened: u64,
    /// While open: milliseconds until probes are admitted (0 once due).
    pub retry_in_ms: Option<u64>,
}

/// The runtime state of one breaker. Configuration is passed to each call.
#[derive(Debug, Default)]
pub struct BreakerState {
    /// `(since << 2) | phase`: the phase and the instant (ns) it was entered.
    phase: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Non-zero only while half-open; changed only under `probe_outcome`.
    half_open_successes: AtomicU32,
    /// `(admitted_at_units << 16) | in_flight` for probes; see [`ProbeSlots`].
    probes: AtomicU64,
    times_opened: AtomicU64,
    /// Serialises probe outcomes, the only writers of half-open → closed/open.
    probe_outcome: Mutex<()>,
    /// Total and failed outcomes while closed, for [`RateMode`].
    outcomes: RollingPair,
}

impl BreakerState {
    /// The phase as stored (an open breaker whose time is up stays `Open` until a
    /// request arrives).
    pub fn phase(&self) -> BreakerPhase {
        PhaseWord(self.phase.load(Ordering::Acquire)).phase()
    }

    /// Whether [`try_acquire`](Self::try_acquire) could admit a request now, without
    /// changing anything. Closed → true; open → once `open_for` has passed;
    /// half-open → while a probe slot is free (or the held ones count as leaked).
    pub fn admits(&self, cfg: &BreakerConfig, now: u64) -> bool {
        let word = PhaseWord(self.phase.load(Ordering::Acquire));
        match word.phase() {
            BreakerPhase::Closed => true,
            BreakerPhase::Open => word.open_elapsed(cfg, now),
            BreakerPhase::HalfOpen => {
                ProbeSlots::new(cfg).can_take(self.probes.load(Ordering::Acquire), now)
            }
        }
    }

    /// Admits a request or not. Closed → `Admitted`. Open and due → the first caller
    /// moves it to half-open; every caller then competes for a probe slot → `Probe`.
    /// Half-open with a free slot → `Probe`. Otherwise `Denied`.
    pub fn try_acquire(&self, cfg: &BreakerConfig, now: u64) -> Admission {
        let word = PhaseWord(self.phase.load(Ordering::Acquire));
        match word.phase() {
            BreakerPhase::Closed => Admission::Admitted,
            BreakerPhase::HalfOpen => self.take_probe(cfg, now),
            BreakerPhase::Open => {
                if !word.open_elapsed(cfg, now) {
                    return Admission::Denied;
                }
                // One caller wins the move; losers see whatever it became.
                let half_open = PhaseWord::new(BreakerPhase::HalfOpen, now).0;
                let current = match self.phase.compare_exchange(
                    word.0,
                    half_open,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => half_open,
                    Err(current) => current,
                };
                match PhaseWord(current).phase() {
                    BreakerPhase::Closed => Admission::Admitted,
                    BreakerPhase::HalfOpen => self.take_probe(cfg, now),
                    BreakerPhase::Open => Admission::Denied,
                }
            }
        }
    }

    /// Records the outcome of a request admitted as `admission`.
    ///
    /// `Admitted`, still closed: a success resets the consecutive failures, a failure
    /// counts and may open the breaker. `Admitted` in any other phase is a late
    /// outcome and is ignored. `Probe`: frees its slot; while half-open a success
    /// counts towards closing and a failure reopens at once. `Denied`: nothing.
    pub fn record(&self, cfg: &BreakerConfig, admission: Admission, success: bool, now: u64) {
        match admission {
            Admission::Denied => {}
            Admission::Admitted => self.record_closed(cfg, success, now),
            Admission::Probe => {
                self.record_probe(cfg, success, now);
                self.free_probe_slot();
            }
        }
    }

    /// A request admitted as `admission` ended without an outcome: frees its probe
    /// slot, if it held one, and changes nothing else.
    pub fn release(&self, admission: Admission) {
        if admission == Admission::Probe {
            self.free_probe_slot();
        }
    }

    pub fn snapshot(&self, cfg: &BreakerConfig, now: u64) -> BreakerSnapshot {
        let word = PhaseWord(self.phase.load(Ordering::Acquire));
        let phase = word.phase();
        let retry_in_ms = (phase == BreakerPhase::Open).then(|| {
            let due = word.since().saturating_add(duration_nanos(cfg.open_for));
            nanos_to_ms_ceil(due.saturating_sub(now))
        });
        BreakerSnapshot {
            state: phase.as_str(),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            half_open_successes: self.half_open_successes.load(Ordering::Relaxed),
            probes_in_flight: ProbeSlots::in_flight(self.probes.load(Ordering::Acquire)),
            times_opened: self.times_opened.load(Ordering::Relaxed),
            retry_in_ms,
        }
    }

    fn record_closed(&self, cfg: &BreakerConfig, success: bool, now: u64) {
        let observed = self.phase.load(Ordering::Acquire);
        if PhaseWord(observed).phase() != BreakerPhase::Closed {
            return; // admitted before it opened: no second opening
        }
        let rate_window = cfg.rate.map(|rate| {
            let width = bucket_width(duration_nanos(rate.window));
            self.outcomes.add(width, now, 1, u64::from(!success));
            (rate, width)
        });
        if success {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let failures = saturating_increment(&self.consecutive_failures);
        let rate_trips = rate_window.is_some_and(|(rate, width)| {
            let (total, failed) = self.outcomes.sum(width, now);
            rate_exceeded(&rate, total, failed)
        });
        if failures >= cfg.failure_threshold.max(1) || rate_trips {
            // Exactly one caller opens it; a breaker that opened (and maybe closed
            // again) since `observed` fails the exchange.
            let open = PhaseWord::new(BreakerPhase::Open, now).0;
            if self
                .phase
                .compare_exchange(observed, open, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                saturating_increment_u64(&self.times_opened);
            }
        }
    }

    fn record_probe(&self, cfg: &BreakerConfig, success: bool, now: u64) {
        let _guard = self
            .probe_outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let observed = self.phase.load(Ordering::Acquire);
        if PhaseWord(observed).phase() != BreakerPhase::HalfOpen {
            return; // another probe already closed or reopened it
        }
        // Only this mutex's holders leave half-open, so `observed` holds until we do.
        if success {
            let successes = self
                .half_open_successes
                .load(Ordering::Relaxed)
                .saturating_add(1);
            if successes < cfg.success_threshold.max(1) {
                self.half_open_successes.store(successes, Ordering::Relaxed);
                return;
            }
            self.half_open_successes.store(0, Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.outcomes.clear();
            let closed = PhaseWord::new(BreakerPhase::Closed, now).0;
            self.phase.store(closed, Ordering::Release);
        } else {
            self.half_open_successes.store(0, Ordering::Relaxed);
            let open = PhaseWord::new(BreakerPhase::Open, now).0;
            self.phase.store(open, Ordering::Release);
            saturating_increment_u64(&self.times_opened);
        }
    }

    fn take_probe(&self, cfg: &BreakerConfig, now: u64) -> Admission {
        let slots = ProbeSlots::new(cfg);
        match self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                slots.take(word, now)
            }) {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Denied,
        }
    }

    fn free_probe_slot(&self) {
        // Never fails: the closure always returns Some.
        let _ = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some(ProbeSlots::free(word))
            });
    }
}

/// Whether `failed` of `total` outcomes reach the configured failure rate.
fn rate_exceeded(rate: &RateMode, total: u64, failed: u64) -> bool {
    let threshold = if rate.failure_rate.is_nan() {
        1.0
    } else {
        rate.failure_rate.clamp(0.0, 1.0)
    };
    total >= u64::from(rate.min_requests.max(1)) && failed as f64 >= threshold * total as f64
}

fn saturating_increment(counter: &AtomicU32) -> u32 {
    match counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1)) {
        Ok(previous) => previous.saturating_add(1),
        Err(max) => max,
    }
}

fn saturating_increment_u64(counter: &AtomicU64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
}

/// The phase and the instant it was entered, packed in one `u64`.
#[derive(Clone, Copy)]
struct PhaseWord(u64);

impl PhaseWord {
    const PHASE_BITS: u32 = 2;
    const PHASE_MASK: u64 = (1 << Self::PHASE_BITS) - 1;

    fn new(phase: BreakerPhase, since: u64) -> Self {
        let code = match phase {
            BreakerPhase::Closed => 0,
            BreakerPhase::Open => 1,
            BreakerPhase::HalfOpen => 2,
        };
        let since = since.min(u64::MAX >> Self::PHASE_BITS);
        Self((since << Self::PHASE_BITS) | code)
    }

    fn phase(self) -> BreakerPhase {
        match self.0 & Self::PHASE_MASK {
            1 => BreakerPhase::Open,
            2 => BreakerPhase::HalfOpen,
            _ => BreakerPhase::Closed,
        }
    }

    fn since(self) -> u64 {
        self.0 >> Self::PHASE_BITS
    }

    fn open_elapsed(self, cfg: &BreakerConfig, now: u64) -> bool {
        now.saturating_sub(self.since()) >= duration_nanos(cfg.open_for)
    }
}

/// Probe slot accounting in one `u64`: the number of probes in flight (low 16 bits)
/// and when the latest was admitted, in units of 2^20 ns (about 1 ms; 48 bits last
/// thousands of years). One word, so taking a slot and reclaiming leaked ones are a
/// single compare-and-swap.
#[derive(Clone, Copy)]
struct ProbeSlots {
    limit: u64,
    /// max(`open_for`, `LEAK_FLOOR`) in time units, rounded up.
    leak_after: u64,
}

/// Probe slots silent this long count as leaked (see the module docs).
const LEAK_FLOOR: Duration = Duration::from_secs(600);

impl ProbeSlots {
    const COUNT_BITS: u32 = 16;
    const COUNT_MASK: u64 = (1 << Self::COUNT_BITS) - 1;
    const UNIT_SHIFT: u32 = 20;

    fn new(cfg: &BreakerConfig) -> Self {
        let unit = 1u64 << Self::UNIT_SHIFT;
        Self {
            limit: u64::from(cfg.half_open_requests).clamp(1, Self::COUNT_MASK),
            leak_after: duration_nanos(cfg.open_for.max(LEAK_FLOOR))
                .div_ceil(unit)
                .max(1),
        }
    }

    fn in_flight(word: u64) -> u32 {
        // Masked to 16 bits, so it always fits.
        (word & Self::COUNT_MASK) as u32
    }

    fn units(now: u64) -> u64 {
        now >> Self::UNIT_SHIFT
    }

    fn can_take(self, word: u64, now: u64) -> bool {
        self.take(word, now).is_some()
    }

    /// The word after taking a slot at `now`, if one may be taken: a free one, or,
    /// when all are held and the latest was taken `open_for` ago, a fresh start.
    fn take(self, word: u64, now: u64) -> Option<u64> {
        let count = word & Self::COUNT_MASK;
        let admitted_at = word >> Self::COUNT_BITS;
        let now_units = Self::units(now);
        let count = if count < self.limit {
            count + 1
        } else if now_units.saturating_sub(admitted_at) >= self.leak_after {
            1 // every holder has been silent for open_for: count them as leaked
        } else {
            return None;
        };
        Some((now_units.max(admitted_at) << Self::COUNT_BITS) | count)
    }

    fn free(word: u64) -> u64 {
        let count = (word & Self::COUNT_MASK).saturating_sub(1);
        (word & !Self::COUNT_MASK) | count
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
            half_open_requests: 1,
            success_threshold: 2,
            rate: None,
        }
    }

    /// Opens `breaker` at `now` with consecutive failures.
    fn trip(breaker: &BreakerState, cfg: &BreakerConfig, now: u64) {
        for _ in 0..cfg.failure_threshold {
            let admission = breaker.try_acquire(cfg, now);
            breaker.record(cfg, admission, false, now);
        }
        assert_eq!(breaker.phase(), BreakerPhase::Open);
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let cfg = BreakerConfig::default();
        assert_eq!(cfg.failure_threshold, 5);
        assert_eq!(cfg.open_for, Duration::from_secs(60));
        assert_eq!(cfg.half_open_requests, 1);
        assert_eq!(cfg.success_threshold, 1);
        assert!(cfg.rate.is_none());
        assert_eq!(BreakerState::default().phase(), BreakerPhase::Closed);
    }

    #[test]
    fn full_cycle_closed_open_half_open_closed() {
        let cfg = config();
        let breaker = BreakerState::default();
        assert_eq!(breaker.try_acquire(&cfg, SEC), Admission::Admitted);
        breaker.record(&cfg, Admission::Admitted, false, SEC);
        breaker.record(&cfg, Admission::Admitted, false, SEC);
        assert_eq!(breaker.phase(), BreakerPhase::Closed);
        breaker.record(&cfg, Admission::Admitted, false, SEC);
        assert_eq!(breaker.phase(), BreakerPhase::Open);

        // Open: refused until open_for has passed.
        assert!(!breaker.admits(&cfg, 2 * SEC));
        assert_eq!(breaker.try_acquire(&cfg, 2 * SEC), Admission::Denied);
        let snap = breaker.snapshot(&cfg, 2 * SEC);
        assert_eq!(snap.state, "open");
        assert_eq!(snap.retry_in_ms, Some(9_000));
        assert_eq!(snap.times_opened, 1);
        assert_eq!(snap.consecutive_failures, 3);

        // Due: half-open, one probe at a time.
        let due = 11 * SEC;
        assert!(breaker.admits(&cfg, due));
        assert_eq!(breaker.snapshot(&cfg, due).retry_in_ms, Some(0));
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Probe);
        assert_eq!(breaker.phase(), BreakerPhase::HalfOpen);
        assert!(!breaker.admits(&cfg, due));
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Denied);

        // First success: still half-open (success_threshold = 2), slot freed.
        breaker.record(&cfg, Admission::Probe, true, due);
        let snap = breaker.snapshot(&cfg, due);
        assert_eq!(snap.state, "half_open");
        assert_eq!(snap.half_open_successes, 1);
        assert_eq!(snap.probes_in_flight, 0);
        assert_eq!(snap.retry_in_ms, None);

        // Second success closes it and resets the counters.
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Probe);
        breaker.record(&cfg, Admission::Probe, true, due);
        let snap = breaker.snapshot(&cfg, due);
        assert_eq!(snap.state, "closed");
        assert_eq!(snap.consecutive_failures, 0);
        assert_eq!(snap.half_open_successes, 0);
        assert_eq!(snap.probes_in_flight, 0);
        assert_eq!(snap.times_opened, 1);
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Admitted);
    }

    #[test]
    fn half_open_failure_reopens_at_once() {
        let cfg = config();
        let breaker = BreakerState::default();
        trip(&breaker, &cfg, 0);
        let due = 10 * SEC;
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Probe);
        breaker.record(&cfg, Admission::Probe, false, due + SEC);
        let snap = breaker.snapshot(&cfg, due + SEC);
        assert_eq!(snap.state, "open");
        assert_eq!(snap.times_opened, 2);
        assert_eq!(snap.probes_in_flight, 0);
        assert_eq!(snap.retry_in_ms, Some(10_000));
        // Open for a full open_for again, counted from the failure.
        assert_eq!(breaker.try_acquire(&cfg, due + 10 * SEC), Admission::Denied);
        assert_eq!(breaker.try_acquire(&cfg, due + 11 * SEC), Admission::Probe);
    }

    #[test]
    fn half_open_success_count_starts_over_after_a_reopen() {
        let cfg = config(); // success_threshold = 2
        let breaker = BreakerState::default();
        trip(&breaker, &cfg, 0);
        assert_eq!(breaker.try_acquire(&cfg, 10 * SEC), Admission::Probe);
        breaker.record(&cfg, Admission::Probe, true, 10 * SEC);
        assert_eq!(breaker.try_acquire(&cfg, 10 * SEC), Admission::Probe);
        breaker.record(&cfg, Admission::Probe, false, 10 * SEC);
        assert_eq!(breaker.try_acquire(&cfg, 20 * SEC), Admission::Probe);
        breaker.record(&cfg, Admission::Probe, true, 20 * SEC);
        assert_eq!(breaker.phase(), BreakerPhase::HalfOpen);
    }

    #[test]
    fn two_probe_slots_admit_exactly_two() {
        let cfg = BreakerConfig {
            half_open_requests: 2,
            ..config()
        };
        let breaker = BreakerState::default();
        trip(&breaker, &cfg, 0);
        let due = 10 * SEC;
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Probe);
        assert!(breaker.admits(&cfg, due));
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Probe);
        assert!(!breaker.admits(&cfg, due));
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Denied);
        assert_eq!(breaker.snapshot(&cfg, due).probes_in_flight, 2);
    }

    #[test]
    fn threads_racing_the_transition_get_exactly_the_probe_slots() {
        for slots in [1u32, 2, 3] {
            let cfg = Arc::new(BreakerConfig {
                half_open_requests: slots,
                ..config()
            });
            let breaker = Arc::new(BreakerState::default());
            trip(&breaker, &cfg, 0);
            let due = 10 * SEC;
            let threads = 8;
            let barrier = Arc::new(Barrier::new(threads));
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (cfg, breaker, barrier) = (cfg.clone(), breaker.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        (0..1_000)
                            .filter(|_| breaker.try_acquire(&cfg, due) == Admission::Probe)
                            .count()
                    })
                })
                .collect();
            let probes: usize = handles
                .into_iter()
                .map(|handle| handle.join().expect("a probing thread panicked"))
                .sum();
            assert_eq!(probes, slots as usize);
            assert_eq!(breaker.phase(), BreakerPhase::HalfOpen);
            assert_eq!(breaker.snapshot(&cfg, due).times_opened, 1);
        }
    }

    #[test]
    fn a_success_resets_the_consecutive_failures() {
        let cfg = config();
        let breaker = BreakerState::default();
        for _ in 0..10 {
            breaker.record(&cfg, Admission::Admitted, false, SEC);
            breaker.record(&cfg, Admission::Admitted, false, SEC);
            assert_eq!(breaker.snapshot(&cfg, SEC).consecutive_failures, 2);
            breaker.record(&cfg, Admission::Admitted, true, SEC);
            assert_eq!(breaker.snapshot(&cfg, SEC).consecutive_failures, 0);
        }
        assert_eq!(breaker.phase(), BreakerPhase::Closed);
    }

    fn rate_config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 1_000,
            rate: Some(RateMode {
                window: Duration::from_secs(10),
                min_requests: 20,
                failure_rate: 0.5,
            }),
            ..config()
        }
    }

    #[test]
    fn rate_mode_opens_at_half_failures_over_min_volume() {
        let cfg = rate_config();
        let breaker = BreakerState::default();
        for i in 0..19 {
            breaker.record(&cfg, Admission::Admitted, i % 2 == 0, SEC);
        }
        // 19 outcomes, 9 failed: under the minimum volume.
        assert_eq!(breaker.phase(), BreakerPhase::Closed);
        breaker.record(&cfg, Admission::Admitted, false, SEC);
        // 20 outcomes, 10 failed: 50%.
        assert_eq!(breaker.phase(), BreakerPhase::Open);
    }

    #[test]
    fn rate_mode_stays_closed_below_min_volume_or_rate() {
        let cfg = rate_config();
        let breaker = BreakerState::default();
        for _ in 0..19 {
            breaker.record(&cfg, Admission::Admitted, false, SEC);
        }
        assert_eq!(breaker.phase(), BreakerPhase::Closed, "below min volume");

        let breaker = BreakerState::default();
        for i in 0..100 {
            // 40% failures
            breaker.record(&cfg, Admission::Admitted, i % 5 >= 2, SEC);
        }
        assert_eq!(breaker.phase(), BreakerPhase::Closed, "below the rate");
    }

    #[test]
    fn rate_mode_forgets_outcomes_older_than_the_window() {
        let cfg = rate_config();
        let breaker = BreakerState::default();
        for _ in 0..15 {
            breaker.record(&cfg, Admission::Admitted, false, 0);
        }
        for _ in 0..15 {
            breaker.record(&cfg, Admission::Admitted, false, 30 * SEC);
        }
        assert_eq!(breaker.phase(), BreakerPhase::Closed);
        for _ in 0..5 {
            breaker.record(&cfg, Admission::Admitted, false, 30 * SEC);
        }
        assert_eq!(breaker.phase(), BreakerPhase::Open);
    }

    #[test]
    fn rate_window_starts_empty_after_closing() {
        let cfg = BreakerConfig {
            success_threshold: 1,
            open_for: Duration::from_secs(2), // shorter than the 10 s window
            ..rate_config()
        };
        let breaker = BreakerState::default();
        for _ in 0..20 {
            breaker.record(&cfg, Admission::Admitted, false, SEC);
        }
        assert_eq!(breaker.phase(), BreakerPhase::Open);
        let due = 3 * SEC;
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Probe);
        breaker.record(&cfg, Admission::Probe, true, due);
        assert_eq!(breaker.phase(), BreakerPhase::Closed);
        // Within the old window, yet one failure must not reopen it.
        breaker.record(&cfg, Admission::Admitted, false, due);
        assert_eq!(breaker.phase(), BreakerPhase::Closed);
    }

    #[test]
    fn late_outcomes_do_not_open_twice_or_close() {
        let cfg = config();
        let breaker = BreakerState::default();
        let admitted: Vec<_> = (0..10).map(|_| breaker.try_acquire(&cfg, 0)).collect();
        for admission in &admitted {
            breaker.record(&cfg, *admission, false, SEC);
        }
        let snap = breaker.snapshot(&cfg, SEC);
        assert_eq!(snap.times_opened, 1);
        // Opened at the third failure: the late ones did not push the open time.
        assert_eq!(snap.retry_in_ms, Some(10_000));

        // A late closed-era success while half-open must not close it.
        assert_eq!(breaker.try_acquire(&cfg, 11 * SEC), Admission::Probe);
        breaker.record(&cfg, Admission::Admitted, true, 11 * SEC);
        breaker.record(&cfg, Admission::Admitted, true, 11 * SEC);
        assert_eq!(breaker.phase(), BreakerPhase::HalfOpen);
        // Nor a late closed-era failure reopen it.
        breaker.record(&cfg, Admission::Admitted, false, 11 * SEC);
        assert_eq!(breaker.phase(), BreakerPhase::HalfOpen);
        assert_eq!(breaker.snapshot(&cfg, 11 * SEC).times_opened, 1);
    }

    #[test]
    fn a_stale_probe_outcome_only_frees_its_slot() {
        let cfg = BreakerConfig {
            half_open_requests: 2,
            ..config()
        };
        let breaker = BreakerState::default();
        trip(&breaker, &cfg, 0);
        let due = 10 * SEC;
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Probe);
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Probe);
        breaker.record(&cfg, Admission::Probe, false, due); // reopens
        breaker.record(&cfg, Admission::Probe, false, due); // stale: no second reopen
        let snap = breaker.snapshot(&cfg, due);
        assert_eq!((snap.state, snap.times_opened), ("open", 2));
        assert_eq!(snap.probes_in_flight, 0);
        breaker.record(&cfg, Admission::Probe, true, due); // stale success while open
        assert_eq!(breaker.phase(), BreakerPhase::Open);
        breaker.record(&cfg, Admission::Denied, true, due);
        assert_eq!(breaker.phase(), BreakerPhase::Open);
    }

    #[test]
    fn release_frees_the_probe_slot_and_nothing_else() {
        let cfg = config();
        let breaker = BreakerState::default();
        trip(&breaker, &cfg, 0);
        let due = 10 * SEC;
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Probe);
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Denied);
        breaker.release(Admission::Probe);
        let snap = breaker.snapshot(&cfg, due);
        assert_eq!((snap.state, snap.probes_in_flight), ("half_open", 0));
        assert_eq!(snap.half_open_successes, 0);
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Probe);
        // Releasing more than was taken, or a non-probe, never underflows.
        breaker.release(Admission::Probe);
        breaker.release(Admission::Probe);
        breaker.release(Admission::Admitted);
        breaker.release(Admission::Denied);
        assert_eq!(breaker.snapshot(&cfg, due).probes_in_flight, 0);
    }

    #[test]
    fn leaked_probe_slots_are_reclaimed_after_the_leak_floor() {
        let cfg = config();
        let breaker = BreakerState::default();
        trip(&breaker, &cfg, 0);
        let due = 10 * SEC;
        assert_eq!(breaker.try_acquire(&cfg, due), Admission::Probe); // never reported
                                                                      // A slow probe (longer than open_for, within any request timeout) still holds it.
        assert_eq!(breaker.try_acquire(&cfg, due + 60 * SEC), Admission::Denied);
        assert!(!breaker.admits(&cfg, due + 599 * SEC));
        let later = due + 601 * SEC;
        assert!(breaker.admits(&cfg, later));
        assert_eq!(breaker.try_acquire(&cfg, later), Admission::Probe);
        assert_eq!(breaker.try_acquire(&cfg, later), Admission::Denied);
        breaker.record(&cfg, Admission::Probe, true, later);
        breaker.record(&cfg, Admission::Probe, true, later);
        assert_eq!(breaker.phase(), BreakerPhase::Closed);
    }

    #[test]
    fn zero_settings_are_treated_as_one() {
        let cfg = BreakerConfig {
            failure_threshold: 0,
            half_open_requests: 0,
            success_threshold: 0,
            ..config()
        };
        let breaker = BreakerState::default();
        breaker.record(&cfg, Admission::Admitted, false, 0);
        assert_eq!(breaker.phase(), BreakerPhase::Open);
        assert_eq!(breaker.try_acquire(&cfg, 10 * SEC), Admission::Probe);
        assert_eq!(breaker.try_acquire(&cfg, 10 * SEC), Admission::Denied);
        breaker.record(&cfg, Admission::Probe, true, 10 * SEC);
        assert_eq!(breaker.phase(), BreakerPhase::Closed);
    }

    #[test]
    fn extreme_times_and_durations_do_not_overflow() {
        let cfg = BreakerConfig {
            open_for: Duration::MAX,
            failure_threshold: 1,
            ..config()
        };
        let breaker = BreakerState::default();
        breaker.record(&cfg, Admission::Admitted, false, u64::MAX);
        assert_eq!(breaker.phase(), BreakerPhase::Open);
        assert_eq!(breaker.try_acquire(&cfg, u64::MAX), Admission::Denied);
        let snap = breaker.snapshot(&cfg, 0);
        assert_eq!(snap.retry_in_ms, Some(nanos_to_ms_ceil(u64::MAX)));

        let counter = AtomicU32::new(u32::MAX);
        assert_eq!(saturating_increment(&counter), u32::MAX);
    }

    #[test]
    fn phase_names() {
        assert_eq!(BreakerPhase::Closed.as_str(), "closed");
        assert_eq!(BreakerPhase::Open.as_str(), "open");
        assert_eq!(BreakerPhase::HalfOpen.as_str(), "half_open");
    }
}
