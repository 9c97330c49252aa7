//! Tests of `breaker`.

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
