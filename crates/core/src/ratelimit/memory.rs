//! The in-process store: GCRA state per key in a sharded map.
//!
//! 64 shards, each a `Mutex<HashMap<Box<str>, Box<[u64]>>>` from key to one TAT per
//! limit. A check hashes the key once to pick the shard, locks it only for the
//! arithmetic (no allocation for a known key), and never touches another shard.
//!
//! Memory stays bounded: a key whose every TAT lies in the past is indistinguishable
//! from a key never seen, so it can be dropped at any time. That happens
//! - on access: such an entry is simply overwritten (as a fresh key would be);
//! - by a sweep of the one shard being written to, whenever it has grown to twice
//!   its size after its previous sweep (and at least [`SWEEP_MIN`] entries). A sweep
//!   visits only that shard, 1/64 of the keys, and the doubling makes its cost
//!   amortised O(1) per insertion; a shard thus never holds more than about twice
//!   its live keys.
//! - by [`MemoryStore::sweep`], which callers may run from a timer.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

use super::gcra::{decide_in_place, Params, NANOS_PER_SEC};
use super::{Decision, Limit};

const SHARDS: usize = 64;
/// A shard is not swept before it holds this many entries.
pub(crate) const SWEEP_MIN: usize = 256;

#[derive(Debug)]
struct Shard {
    map: HashMap<Box<str>, Box<[u64]>>,
    /// Sweep when `map.len()` reaches this.
    sweep_at: usize,
}

impl Shard {
    fn sweep(&mut self, now: u64) {
        self.map.retain(|_, tats| tats.iter().any(|&tat| tat > now));
        let len = self.map.len();
        self.sweep_at = (len * 2).max(SWEEP_MIN);
        if self.map.capacity() > 4 * self.sweep_at {
            self.map.shrink_to(self.sweep_at);
        }
    }
}

/// GCRA state of many keys, in process memory. `now` is nanoseconds of a monotonic
/// clock, supplied by the caller.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        sweep_at: SWEEP_MIN,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        lock(&self.shards[i])
    }

    /// Decides one request for `key` at `now` (ns) against `limits`, consuming from
    /// every limit if and only if all allow it. Atomic per key.
    pub fn check(&self, key: &str, limits: &[Limit], now: u64) -> Decision {
        // Parameters computed before taking the lock (a handful of divisions).
        let mut params_buf = [Params::default(); 4];
        let params_vec: Vec<Params>;
        let params: &[Params] = if limits.len() <= params_buf.len() {
            for (slot, l) in params_buf.iter_mut().zip(limits) {
                *slot = Params::new(l, NANOS_PER_SEC);
            }
            &params_buf[..limits.len()]
        } else {
            params_vec = limits
                .iter()
                .map(|l| Params::new(l, NANOS_PER_SEC))
                .collect();
            &params_vec
        };

        let mut shard = self.shard(key);
        if let Some(tats) = shard.map.get_mut(key) {
            if tats.len() == params.len() {
                return decide_in_place(tats, now, params, NANOS_PER_SEC);
            }
            // The limits changed shape: start this key afresh.
            *tats = vec![0; params.len()].into_boxed_slice();
            return decide_in_place(tats, now, params, NANOS_PER_SEC);
        }
        let mut tats = vec![0; params.len()].into_boxed_slice();
        let decision = decide_in_place(&mut tats, now, params, NANOS_PER_SEC);
        if decision.allowed && tats.iter().any(|&tat| tat > now) {
            if shard.map.len() >= shard.sweep_at {
                shard.sweep(now);
            }
            shard.map.insert(key.into(), tats);
        }
        decision
    }

    /// Drops every key that is fully replenished at `now`, shard by shard (one lock
    /// at a time). Returns how many keys remain.
    pub fn sweep(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut shard = lock(s);
                shard.sweep(now);
                shard.map.len()
            })
            .sum()
    }

    /// How many keys are held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The arithmetic under the lock cannot panic, but a poisoned lock must not take the
/// rate limiter down with it.
fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    const S: u64 = NANOS_PER_SEC;

    fn limit(rate: u32, period_secs: u64, burst: u32) -> Limit {
        Limit {
            rate,
            period: Duration::from_secs(period_secs),
            burst,
        }
    }

    #[test]
    fn matches_the_pure_decision() {
        let store = MemoryStore::new();
        let limits = [limit(10, 60, 2), limit(30, 3600, 5)];
        let mut tats = Vec::new();
        for i in 0..200u64 {
            let now = i * 700_000_000;
            let (want, new) = super::super::gcra::decide(&tats, now, &limits);
            if let Some(new) = new {
                tats = new;
            }
            assert_eq!(store.check("k", &limits, now), want, "request {i}");
        }
    }

    #[test]
    fn keys_are_independent() {
        let store = MemoryStore::new();
        let l = [limit(1, 60, 0)];
        assert!(store.check("a", &l, S).allowed);
        assert!(!store.check("a", &l, S).allowed);
        assert!(store.check("b", &l, S).allowed);
        assert!(store.check("a", &l, 61 * S).allowed);
    }

    #[test]
    fn exact_under_eight_threads_on_one_key() {
        let store = MemoryStore::new();
        let limits = [limit(100, 3600, 99), limit(1000, 60, 999)];
        let passed = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (store, passed) = (&store, &passed);
                s.spawn(move || {
                    for i in 0..2_000u64 {
                        // Time moves a little but not enough to replenish one (36 s).
                        let now = S + t * 1_000 + i;
                        if store.check("hot", &limits, now).allowed {
                            passed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(passed.load(Ordering::Relaxed), 100);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn many_keys_then_cleanup() {
        let store = MemoryStore::new();
        let l = [limit(1, 1, 0)]; // a key is replenished 1 s after its request
        for i in 0..50_000 {
            store.check(&format!("client-{i}"), &l, S);
        }
        assert_eq!(store.len(), 50_000);
        // Later, a new wave of keys: the shards they land in sweep the old ones as
        // they grow, so memory tracks the live keys, not every key ever seen.
        for i in 0..50_000 {
            store.check(&format!("other-{i}"), &l, 10 * S);
        }
        assert!(
            store.len() < 75_000,
            "old keys were not swept: {}",
            store.len()
        );
        // An explicit sweep drops everything replenished.
        assert_eq!(store.sweep(10 * S), 50_000);
        assert_eq!(store.sweep(12 * S), 0);
        assert!(store.is_empty());
        // And the keys behave as fresh ones.
        assert!(store.check("client-1", &l, 12 * S).allowed);
    }

    #[test]
    fn memory_is_bounded_by_live_keys() {
        let store = MemoryStore::new();
        let l = [limit(1, 1, 0)];
        // A million distinct keys over 100 s, 10 000 live at any time.
        for i in 0..1_000_000u64 {
            let now = S + i * 100_000; // 10 000 keys per second
            store.check(&format!("k{i}"), &l, now);
        }
        // Live: ~10 000; bound: 2 × live per shard plus the floor of each shard.
        assert!(
            store.len() <= 2 * 10_000 + SHARDS * SWEEP_MIN,
            "{}",
            store.len()
        );
    }

    #[test]
    fn refused_fresh_key_stores_nothing() {
        let store = MemoryStore::new();
        assert!(!store.check("x", &[limit(0, 60, 0)], S).allowed);
        assert!(store.is_empty());
    }

    #[test]
    fn changed_limits_start_afresh() {
        let store = MemoryStore::new();
        assert!(store.check("x", &[limit(1, 60, 0)], S).allowed);
        assert!(!store.check("x", &[limit(1, 60, 0)], S).allowed);
        let two = [limit(1, 60, 0), limit(5, 60, 0)];
        assert!(store.check("x", &two, S).allowed);
        assert!(!store.check("x", &two, S).allowed);
        let many = [limit(1, 60, 0); 6];
        assert!(store.check("x", &many, S).allowed);
        assert!(!store.check("x", &many, S).allowed);
    }
}
