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
mod tests;
