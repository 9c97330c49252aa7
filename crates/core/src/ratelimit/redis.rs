//! The shared store: GCRA state in Redis, one Lua script per decision.
//!
//! Every gateway replica pointed at the same Redis shares the limits exactly: the
//! script ([`SCRIPT`]) reads the key's TATs, decides for all its limits and, only if
//! every one allows, writes them back, atomically (Redis runs one script at a time).
//! Time is Redis' own `TIME`, read inside the script, so replicas with skewed clocks
//! agree. The state of `key` is the hash `velithon:rl:<key>`, one field per limit
//! (named after its parameters), expiring (`PEXPIRE`) when the longest limit is fully
//! replenished, at which point it is indistinguishable from a key never seen.
//!
//! The script returns the TATs it read and Redis' time; the numbers of the
//! [`Decision`] (remaining, reset, retry-after) are then computed here by the same
//! [`gcra`](super::gcra) code as the memory store, in microseconds (Lua numbers are
//! doubles, exact below 2^53 µs). The script's verdict and ours must agree; if they
//! did not, the call fails with [`RedisError::Protocol`].
//!
//! The client is a minimal RESP2 client over `tokio::net::TcpStream`: `AUTH`,
//! `SELECT`, `SCRIPT LOAD` once, then `EVALSHA`, falling back to `EVAL` on
//! `NOSCRIPT` (after a Redis restart or `SCRIPT FLUSH`; `EVAL` caches the script
//! again). A small pool of connections is opened lazily. A connection that fails is
//! dropped along with every pooled connection of its generation, and a call that
//! failed on a reused connection is retried once on a fresh one, so a restarted
//! Redis is picked up by the next call. When connecting fails (or a call times out),
//! calls fail at once with [`RedisError::Unavailable`] for a short backoff instead
//! of each waiting out its timeout. Every call is bounded by a timeout (250 ms by
//! default) covering waiting for a connection, connecting and the round trips.
//!
//! TLS (`rediss://`), Unix sockets, Sentinel and Cluster are not supported.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, MutexGuard};

mod resp;
mod url;

use resp::{Conn, Reply};
use url::{parse_url, Target};

use super::gcra::{decide, decide_in_place, Params, MICROS_PER_SEC};
use super::{Decision, Limit};
use crate::resilience::clock::{duration_nanos, now_nanos};

/// Prefix of every key this store writes.
pub const KEY_PREFIX: &str = "velithon:rl:";

/// GCRA for all the limits of one key, atomically, on Redis time.
///
/// - `KEYS[1]`: the key's hash, one field per limit holding its TAT (µs since the
///   Unix epoch, as a decimal integer).
/// - `ARGV[1]`: the number of limits `n`; then for limit `i` (1-based):
///   `ARGV[3i-1]` its field name, `ARGV[3i]` its emission interval `T` (µs),
///   `ARGV[3i+1]` its tolerance `τ` (µs).
/// - Returns `{allowed (1 or 0), now (µs), tat_1, …, tat_n}` with the TATs as they
///   were before this request (0 for a fresh limit).
///
/// A limit allows iff `max(tat, now) − now ≤ τ`. Only if all allow, every
/// `tat := max(tat, now) + T` is written and the key expires when the last of them
/// is reached (PEXPIRE, rounded up to the millisecond).
pub const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local n = tonumber(ARGV[1])
local fields = {}
for i = 1, n do fields[i] = ARGV[3 * i - 1] end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))
local result = {1, now}
local updates = {}
local ttl = 1
for i = 1, n do
  local t = tonumber(ARGV[3 * i])
  local tau = tonumber(ARGV[3 * i + 1])
  local tat = tonumber(stored[i]) or 0
  result[i + 2] = tat
  if tat < now then tat = now end
  if tat - now > tau then result[1] = 0 end
  local new_tat = tat + t
  updates[2 * i - 1] = fields[i]
  updates[2 * i] = string.format('%.0f', new_tat)
  if new_tat - now > ttl then ttl = new_tat - now end
end
if result[1] == 1 then
  redis.call('HSET', KEYS[1], unpack(updates))
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil(ttl / 1000)))
end
return result
";

/// `T` and `τ` sent to Redis are capped so that `now + τ + T` stays an exact double
/// (about 31 years each; no real limit comes near).
const MAX_PARAM_US: u64 = 1_000_000_000_000_000;
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
const DEFAULT_BACKOFF: Duration = Duration::from_millis(200);
const DEFAULT_POOL: usize = 4;

/// Why a Redis call failed.
#[derive(Debug)]
pub enum RedisError {
    /// The URL could not be used.
    Url(String),
    /// Connecting, reading or writing failed (including Redis closing the connection).
    Io(io::Error),
    /// No answer within the store's timeout.
    Timeout,
    /// A recent failure to connect: not retried until the backoff has passed.
    Unavailable,
    /// Redis answered something this client does not expect.
    Protocol(String),
    /// Redis answered with an error (wrong password, script error, …).
    Server(String),
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::Url(m) => write!(f, "invalid Redis URL: {m}"),
            RedisError::Io(e) => write!(f, "Redis connection failed: {e}"),
            RedisError::Timeout => f.write_str("Redis did not answer in time"),
            RedisError::Unavailable => {
                f.write_str("Redis is unavailable (waiting to reconnect after a failure)")
            }
            RedisError::Protocol(m) => write!(f, "unexpected reply from Redis: {m}"),
            RedisError::Server(m) => write!(f, "Redis error: {m}"),
        }
    }
}

impl std::error::Error for RedisError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RedisError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for RedisError {
    fn from(e: io::Error) -> Self {
        RedisError::Io(e)
    }
}

/// GCRA state shared through Redis. Cheap to share behind an `Arc`; connects lazily.
pub struct RedisStore {
    target: Target,
    timeout: Duration,
    backoff: Duration,
    slots: Box<[Mutex<Option<Conn>>]>,
    next_slot: AtomicUsize,
    /// Bumped when a connection fails: older pooled connections are not reused.
    generation: AtomicU64,
    /// `now_nanos()` before which calls fail with `Unavailable` (0: none).
    down_until: AtomicU64,
    /// SHA1 of [`SCRIPT`], as `SCRIPT LOAD` returned it.
    sha: OnceLock<String>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .field("pool", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `redis://[[user]:password@]host[:port][/db]` (port 6379 and
    /// database 0 by default; credentials may be %-escaped). Nothing is connected
    /// until the first call.
    pub fn new(url: &str) -> Result<RedisStore, RedisError> {
        let target = parse_url(url)?;
        Ok(RedisStore {
            target,
            timeout: DEFAULT_TIMEOUT,
            backoff: DEFAULT_BACKOFF,
            slots: (0..DEFAULT_POOL).map(|_| Mutex::new(None)).collect(),
            next_slot: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            down_until: AtomicU64::new(0),
            sha: OnceLock::new(),
        })
    }

    /// Bound on one call: waiting for a connection, connecting, round trips
    /// (default 250 ms).
    pub fn with_timeout(mut self, timeout: Duration) -> RedisStore {
        self.timeout = timeout;
        self
    }

    /// After a failure to connect or a timeout, calls fail at once with
    /// [`RedisError::Unavailable`] for this long (default 200 ms).
    pub fn with_reconnect_backoff(mut self, backoff: Duration) -> RedisStore {
        self.backoff = backoff;
        self
    }

    /// How many connections to keep (default 4; at least 1). Calls beyond that
    /// wait for a connection, within their timeout.
    pub fn with_pool_size(mut self, size: usize) -> RedisStore {
        self.slots = (0..size.max(1)).map(|_| Mutex::new(None)).collect();
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Connects one connection and loads the script now rather than on the first
    /// check: to fail fast at startup on a wrong URL or password.
    pub async fn warm_up(&self) -> Result<(), RedisError> {
        self.bounded(async {
            let mut slot = self.slot().await;
            let conn = self.connect().await?;
            *slot = Some(conn);
            Ok(())
        })
        .await
    }

    /// Decides one request of `key` against `limits` with one script run, atomic
    /// across every store sharing this Redis. Consumes from every limit only if all
    /// allow it.
    pub async fn check(&self, key: &str, limits: &[Limit]) -> Result<Decision, RedisError> {
        if limits.is_empty() || limits.iter().any(|l| l.rate == 0) {
            // Nothing to share: no limit allows everything, a zero rate refuses.
            return Ok(decide(&[], 0, limits).0);
        }
        let params: Vec<Params> = limits
            .iter()
            .map(|l| {
                let p = Params::new(l, MICROS_PER_SEC);
                Params {
                    t: p.t.min(MAX_PARAM_US),
                    tau: p.tau.min(MAX_PARAM_US),
                    ..p
                }
            })
            .collect();
        self.bounded(self.run(key, &params)).await
    }

    /// Runs `call` within the timeout, failing fast while Redis is known down.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        if now_nanos() < self.down_until.load(Ordering::Relaxed) {
            return Err(RedisError::Unavailable);
        }
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => {
                self.trip();
                Err(RedisError::Timeout)
            }
        }
    }

    fn trip(&self) {
        let until = now_nanos().saturating_add(duration_nanos(self.backoff));
        self.down_until.store(until, Ordering::Relaxed);
    }

    /// A pool slot: a free one if any, else wait for one (round robin).
    async fn slot(&self) -> MutexGuard<'_, Option<Conn>> {
        let n = self.slots.len();
        let start = self.next_slot.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(guard) = self.slots[(start + i) % n].try_lock() {
                return guard;
            }
        }
        self.slots[start].lock().await
    }

    async fn connect(&self) -> Result<Conn, RedisError> {
        let generation = self.generation.load(Ordering::Relaxed);
        let result = async {
            let t = &self.target;
            let stream = TcpStream::connect((t.host.as_str(), t.port)).await?;
            stream.set_nodelay(true)?;
            let mut conn = Conn {
                io: BufReader::new(stream),
                generation,
            };
            if let Some(pass) = &t.password {
                let mut args: Vec<&[u8]> = vec![b"AUTH"];
                if let Some(user) = &t.username {
                    args.push(user.as_bytes());
                }
                args.push(pass.as_bytes());
                conn.call(&args).await?.into_result()?;
            }
            if t.db != 0 {
                let db = t.db.to_string();
                conn.call(&[b"SELECT", db.as_bytes()])
                    .await?
                    .into_result()?;
            }
            if self.sha.get().is_none() {
                match conn
                    .call(&[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()])
                    .await?
                    .into_result()?
                {
                    Reply::Bulk(Some(sha)) if sha.len() == 40 => {
                        let _ = self.sha.set(String::from_utf8_lossy(&sha).into_owned());
                    }
                    other => {
                        return Err(RedisError::Protocol(format!(
                            "SCRIPT LOAD answered {other:?}"
                        )))
                    }
                }
            }
            Ok(conn)
        }
        .await;
        if let Err(RedisError::Io(_)) = result {
            self.trip();
        }
        result
    }

    async fn run(&self, key: &str, params: &[Params]) -> Result<Decision, RedisError> {
        let full_key = format!("{KEY_PREFIX}{key}");
        let mut argv: Vec<String> = Vec::with_capacity(1 + 3 * params.len());
        argv.push(params.len().to_string());
        for p in params {
            argv.push(format!("{}:{}", p.t, p.tau));
            argv.push(p.t.to_string());
            argv.push(p.tau.to_string());
        }

        let mut slot = self.slot().await;
        let current = self.generation.load(Ordering::Relaxed);
        let pooled = slot.take().filter(|c| c.generation == current);
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().await?,
        };
        let reply = match self.eval(&mut conn, &full_key, &argv).await {
            Err(RedisError::Io(_)) if reused => {
                // A stale connection (Redis restarted?): drop its generation and
                // retry once on a fresh one.
                self.generation.fetch_add(1, Ordering::Relaxed);
                conn = self.connect().await?;
                self.eval(&mut conn, &full_key, &argv).await
            }
            other => other,
        };
        match reply {
            Ok(reply) => {
                *slot = Some(conn);
                decision_from_reply(reply, params)
            }
            Err(e) => {
                if matches!(e, RedisError::Io(_) | RedisError::Protocol(_)) {
                    self.generation.fetch_add(1, Ordering::Relaxed);
                } else {
                    // A server error leaves the connection usable.
                    *slot = Some(conn);
                }
                Err(e)
            }
        }
    }

    /// EVALSHA, or EVAL when Redis does not know the script (any more).
    async fn eval(&self, conn: &mut Conn, key: &str, argv: &[String]) -> Result<Reply, RedisError> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(3 + argv.len());
        args.push(b"EVALSHA");
        args.push(self.sha.get().map_or(&b""[..], |s| s.as_bytes()));
        args.push(b"1");
        args.push(key.as_bytes());
        args.extend(argv.iter().map(|a| a.as_bytes()));
        let reply = conn.call(&args).await?;
        match reply {
            Reply::Error(e) if e.starts_with("NOSCRIPT") => {
                args[0] = b"EVAL";
                args[1] = SCRIPT.as_bytes();
                conn.call(&args).await?.into_result()
            }
            r => r.into_result(),
        }
    }
}

/// `{allowed, now, tat_1..tat_n}` → the decision, computed by the shared GCRA code.
fn decision_from_reply(reply: Reply, params: &[Params]) -> Result<Decision, RedisError> {
    let bad = |m: String| RedisError::Protocol(m);
    let items = match reply {
        Reply::Array(Some(items)) if items.len() == params.len() + 2 => items,
        other => return Err(bad(format!("script answered {other:?}"))),
    };
    let mut ints = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Reply::Int(v) => ints.push(u64::try_from(v).unwrap_or(0)),
            other => return Err(bad(format!("script answered {other:?} in its array"))),
        }
    }
    let (allowed, now, mut tats) = (ints[0] == 1, ints[1], ints.split_off(2));
    let decision = decide_in_place(&mut tats, now, params, MICROS_PER_SEC);
    if decision.allowed != allowed {
        return Err(bad(format!(
            "script decided allowed={allowed}, GCRA here decided {decision:?}"
        )));
    }
    Ok(decision)
}

#[cfg(test)]
mod tests;
