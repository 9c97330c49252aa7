//! Rate limiting with the generic cell rate algorithm (GCRA), in process memory or
//! shared through Redis.
//!
//! A [`Limit`] is `rate` requests per `period` plus `burst` extra requests allowed at
//! once. GCRA ([`gcra`]) spaces requests `T = period / rate` apart and tolerates
//! being `τ = T × burst` ahead of schedule; the whole state of a key is one
//! timestamp per limit. So `requestsPerMinute: 60` with `burst: 0` sustains one
//! request per second and refuses a second request within the same second; with
//! `burst: b` a client may send `b + 1` requests at once and then one per second.
//! Over any minute a client never gets more than `rate + burst` requests.
//!
//! Several limits (say per minute and per hour) are checked together: a request is
//! allowed only if every limit allows it, and a refused request consumes nothing.
//! The [`Decision`] reports the tightest limit, in the numbers of the IETF
//! `RateLimit` header draft ([`headers`]):
//! - `limit` = `burst + 1`, what a fully replenished client may send at once (as
//!   redis-cell reports it);
//! - `remaining`: how many more requests would be allowed right now;
//! - `reset_secs`: seconds until the limit is fully replenished;
//! - `retry_after_secs`, when refused: seconds until one request would be allowed.
//!
//! Stores:
//! - [`MemoryStore`]: a sharded map in this process, exact under concurrency, with
//!   bounded memory (fully replenished keys are dropped).
//! - [`RedisStore`]: one Lua script per decision, atomic per key, on Redis time, so
//!   every gateway replica sharing the Redis shares the limits.
//!
//! [`RateLimiter`] puts limits, a store and a [`FailMode`] together: what to decide
//! when Redis cannot be reached.

pub mod gcra;
pub mod memory;
pub mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub use gcra::decide;
pub use memory::MemoryStore;
pub use redis::{RedisError, RedisStore};

use crate::resilience::clock::now_nanos;

/// A limit: `rate` requests per `period`, with `burst` extra requests allowed at once
/// (burst 0 = smooth, no bursts beyond 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub rate: u32,
    pub period: Duration,
    pub burst: u32,
}

impl Limit {
    /// `rate` requests per minute, no burst.
    pub const fn per_minute(rate: u32) -> Limit {
        Limit {
            rate,
            period: Duration::from_secs(60),
            burst: 0,
        }
    }

    /// The same limit with `burst` extra requests allowed at once.
    pub const fn with_burst(self, burst: u32) -> Limit {
        Limit { burst, ..self }
    }
}

/// The decision for one request against one or more limits (e.g. per minute AND per
/// hour): allowed only if every limit allows; a refused request consumes nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Of the tightest limit: its capacity, `burst + 1`.
    pub limit: u32,
    /// Of the tightest limit: requests that would still be allowed now.
    pub remaining: u32,
    /// Seconds until the limit is fully replenished (RateLimit-Reset).
    pub reset_secs: u64,
    /// When refused: seconds until one request would be allowed (Retry-After, ≥ 1).
    /// 0 when allowed.
    pub retry_after_secs: u64,
}

/// What to decide when the store (Redis) fails or does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Let the request through: an outage of Redis is not an outage of the API.
    #[default]
    Open,
    /// Refuse the request (`Retry-After: 1`): the limit protects something that must
    /// not be overrun.
    Closed,
}

/// The decision to use when the store could not decide: [`FailMode::Open`] allows,
/// reporting `remaining` = `limit` (unknown, assumed full); [`FailMode::Closed`]
/// refuses with `Retry-After: 1`. `limit` is the smallest capacity of `limits`.
pub fn decide_on_error(mode: FailMode, limits: &[Limit]) -> Decision {
    let limit = limits
        .iter()
        .map(|l| l.burst.saturating_add(1))
        .min()
        .unwrap_or(0);
    match mode {
        FailMode::Open => Decision {
            allowed: true,
            limit,
            remaining: limit,
            reset_secs: 0,
            retry_after_secs: 0,
        },
        FailMode::Closed => Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_secs: 1,
            retry_after_secs: 1,
        },
    }
}

/// Where the GCRA state lives.
#[derive(Debug)]
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

/// Limits, a store and what to do when the store fails.
#[derive(Debug)]
pub struct RateLimiter {
    limits: Vec<Limit>,
    store: Store,
    fail: FailMode,
    errors: AtomicU64,
}

impl RateLimiter {
    pub fn new(limits: Vec<Limit>, store: Store, fail: FailMode) -> RateLimiter {
        RateLimiter {
            limits,
            store,
            fail,
            errors: AtomicU64::new(0),
        }
    }

    /// Decides one request of `key` (a client id, an IP, … — unique to this limiter
    /// when the store is shared). Never fails: a store error is counted in
    /// [`store_errors`](Self::store_errors) and decided by the [`FailMode`].
    pub async fn check(&self, key: &str) -> Decision {
        match &self.store {
            Store::Memory(m) => m.check(key, &self.limits, now_nanos()),
            Store::Redis(r) => match r.check(key, &self.limits).await {
                Ok(d) => d,
                Err(_) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    decide_on_error(self.fail, &self.limits)
                }
            },
        }
    }

    /// How many checks the store failed (and the fail mode decided).
    pub fn store_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn fail_mode(&self) -> FailMode {
        self.fail
    }
}

/// The response headers of a decision: `RateLimit-Limit`, `RateLimit-Remaining`,
/// `RateLimit-Reset` (seconds) and, when refused, `Retry-After` (seconds). Nothing
/// when the decision carries no limit (an empty set of limits).
pub fn headers(decision: &Decision) -> Vec<(HeaderName, HeaderValue)> {
    if decision.limit == 0 && decision.allowed {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(4);
    out.push((
        HeaderName::from_static("ratelimit-limit"),
        HeaderValue::from(decision.limit),
    ));
    out.push((
        HeaderName::from_static("ratelimit-remaining"),
        HeaderValue::from(decision.remaining),
    ));
    out.push((
        HeaderName::from_static("ratelimit-reset"),
        HeaderValue::from(decision.reset_secs),
    ));
    if !decision.allowed {
        out.push((
            http::header::RETRY_AFTER,
            HeaderValue::from(decision.retry_after_secs.max(1)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_map(d: &Decision) -> Vec<(String, String)> {
        headers(d)
            .into_iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn headers_when_allowed_and_refused() {
        let ok = Decision {
            allowed: true,
            limit: 5,
            remaining: 3,
            reset_secs: 12,
            retry_after_secs: 0,
        };
        assert_eq!(
            header_map(&ok),
            pairs(&[
                ("ratelimit-limit", "5"),
                ("ratelimit-remaining", "3"),
                ("ratelimit-reset", "12")
            ])
        );
        let no = Decision {
            allowed: false,
            limit: 1,
            remaining: 0,
            reset_secs: 6,
            retry_after_secs: 6,
        };
        assert_eq!(
            header_map(&no),
            pairs(&[
                ("ratelimit-limit", "1"),
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "6"),
                ("retry-after", "6")
            ])
        );
        let unlimited = decide(&[], 0, &[]).0;
        assert!(headers(&unlimited).is_empty());
    }

    #[test]
    fn fail_modes() {
        let limits = [Limit::per_minute(60).with_burst(9), Limit::per_minute(5)];
        let open = decide_on_error(FailMode::Open, &limits);
        assert_eq!(
            open,
            Decision {
                allowed: true,
                limit: 1,
                remaining: 1,
                reset_secs: 0,
                retry_after_secs: 0
            }
        );
        let closed = decide_on_error(FailMode::Closed, &limits);
        assert!(!closed.allowed);
        assert_eq!(closed.retry_after_secs, 1);
        assert_eq!(closed.limit, 1);
        assert_eq!(FailMode::default(), FailMode::Open);
    }

    #[tokio::test]
    async fn memory_limiter() {
        let rl = RateLimiter::new(
            vec![Limit::per_minute(60).with_burst(2)],
            Store::Memory(MemoryStore::new()),
            FailMode::Closed,
        );
        let mut allowed = 0;
        for _ in 0..10 {
            let d = rl.check("ip:1").await;
            if d.allowed {
                allowed += 1;
            } else {
                assert_eq!(d.retry_after_secs, 1);
            }
        }
        assert_eq!(allowed, 3);
        assert!(rl.check("ip:2").await.allowed);
        assert_eq!(rl.store_errors(), 0);
    }

    #[tokio::test]
    async fn redis_errors_follow_the_fail_mode_and_are_counted() {
        // A port nobody listens on: connection refused.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("redis://127.0.0.1:{port}");
        let limits = vec![Limit::per_minute(1)];
        for (mode, allowed) in [(FailMode::Open, true), (FailMode::Closed, false)] {
            let store = RedisStore::new(&url).unwrap();
            let rl = RateLimiter::new(limits.clone(), Store::Redis(store), mode);
            for _ in 0..3 {
                let d = rl.check("k").await;
                assert_eq!(d.allowed, allowed);
                assert_eq!(d, decide_on_error(mode, &limits));
            }
            assert_eq!(rl.store_errors(), 3);
        }
    }
}
