//! Resilience state machines: a circuit breaker per server, a retry budget, backoff
//! with jitter and passive outlier detection.
//!
//! Everything here is pure bookkeeping: no networking, no timers. Callers feed in
//! outcomes and the time, as `now: u64` nanoseconds of a monotonic clock
//! ([`clock::now_nanos`] in production, fixed values in tests), and ask whether a
//! request or a retry may go. The hot paths are atomics; a mutex is taken only for
//! rare transitions (half-open probe outcomes, recycling a time bucket).
//!
//! - [`BreakerState`]: closed → open → half-open → closed, on consecutive failures
//!   or a failure rate ([`RateMode`]).
//! - [`RetryBudget`]: retries at most a share of recent requests plus a floor.
//! - [`full_jitter`]: exponential backoff with full jitter.
//! - [`OutlierState`] and [`may_eject`]: eject a server after consecutive failures,
//!   for longer each time, never more than a share of the servers.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod clock;
pub mod outlier;
mod window;

pub use backoff::{full_jitter, random_unit};
pub use breaker::{
    Admission, BreakerConfig, BreakerPhase, BreakerSnapshot, BreakerState, RateMode,
};
pub use budget::RetryBudget;
pub use clock::now_nanos;
pub use outlier::{may_eject, OutlierConfig, OutlierState};
