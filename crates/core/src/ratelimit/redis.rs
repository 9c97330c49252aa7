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

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, MutexGuard};

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
/// Longest reply line / bulk string accepted (replies here are a few numbers).
const MAX_LINE: u64 = 64 * 1024;
const MAX_BULK: usize = 1024 * 1024;
const MAX_ARRAY: usize = 64 * 1024;

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

/// Where and how to connect, from `redis://[[user]:password@]host[:port][/db]`.
#[derive(Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: u32,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
    }
}

fn parse_url(url: &str) -> Result<Target, RedisError> {
    let bad = |m: &str| RedisError::Url(m.to_owned());
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected redis://host:port[/db]"))?;
    match scheme.to_ascii_lowercase().as_str() {
        "redis" => {}
        "rediss" => return Err(bad("TLS (rediss://) is not supported")),
        _ => return Err(bad("the scheme must be redis://")),
    }
    if rest.contains(['?', '#']) {
        return Err(bad("query parameters are not supported"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = match u.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => (u, None),
            };
            let user = percent_decode(user)?;
            let pass = pass.map(percent_decode).transpose()?;
            ((!user.is_empty()).then_some(user), pass)
        }
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in the host"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected :port after ]"))?,
                ),
            ),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let port = match port {
        None => 6379,
        Some(p) => p.parse().map_err(|_| bad("the port must be 0–65535"))?,
    };
    let db = match path {
        "" => 0,
        p => p
            .parse()
            .map_err(|_| bad("the path must be a database number"))?,
    };
    Ok(Target {
        host: host.to_owned(),
        port,
        username,
        password,
        db,
    })
}

fn percent_decode(s: &str) -> Result<String, RedisError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| RedisError::Url("bad %-escape in the credentials".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| RedisError::Url("credentials are not UTF-8".into()))
}

/// One RESP2 reply. Errors are values here: the connection is still in sync.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn into_result(self) -> Result<Reply, RedisError> {
        match self {
            Reply::Error(e) => Err(RedisError::Server(e)),
            r => Ok(r),
        }
    }
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One connection, tagged with the generation of the pool it was opened in.
struct Conn {
    io: BufReader<TcpStream>,
    generation: u64,
}

impl Conn {
    async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        self.io.get_mut().write_all(&encode(args)).await?;
        self.read_reply().await
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, RedisError> {
        let mut line = Vec::new();
        let n = (&mut self.io)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "Redis closed the connection",
            )
            .into());
        }
        if !line.ends_with(b"\r\n") {
            return Err(RedisError::Protocol("truncated or overlong line".into()));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    /// A reply; arrays may hold scalars only (all this client ever asks for).
    async fn read_reply(&mut self) -> Result<Reply, RedisError> {
        let line = self.read_line().await?;
        if let Some(count) = line.strip_prefix(b"*") {
            let count = parse_int(count)?;
            if count < 0 {
                return Ok(Reply::Array(None));
            }
            let count = usize::try_from(count)
                .ok()
                .filter(|&c| c <= MAX_ARRAY)
                .ok_or_else(|| RedisError::Protocol("array too long".into()))?;
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                let line = self.read_line().await?;
                if line.starts_with(b"*") {
                    return Err(RedisError::Protocol("nested array".into()));
                }
                items.push(self.scalar(line).await?);
            }
            return Ok(Reply::Array(Some(items)));
        }
        self.scalar(line).await
    }

    async fn scalar(&mut self, line: Vec<u8>) -> Result<Reply, RedisError> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match line.split_first() {
            Some((b'+', rest)) => Ok(Reply::Status(text(rest))),
            Some((b'-', rest)) => Ok(Reply::Error(text(rest))),
            Some((b':', rest)) => Ok(Reply::Int(parse_int(rest)?)),
            Some((b'$', rest)) => {
                let len = parse_int(rest)?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&l| l <= MAX_BULK)
                    .ok_or_else(|| RedisError::Protocol("bulk string too long".into()))?;
                let mut buf = vec![0; len + 2];
                self.io.read_exact(&mut buf).await?;
                if !buf.ends_with(b"\r\n") {
                    return Err(RedisError::Protocol("bulk string not terminated".into()));
                }
                buf.truncate(len);
                Ok(Reply::Bulk(Some(buf)))
            }
            _ => Err(RedisError::Protocol(format!(
                "unknown reply type: {}",
                text(&line)
            ))),
        }
    }
}

fn parse_int(b: &[u8]) -> Result<i64, RedisError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RedisError::Protocol("bad integer".into()))
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
mod tests {
    use std::io::Write as _;
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    fn limit(rate: u32, period_secs: u64, burst: u32) -> Limit {
        Limit {
            rate,
            period: Duration::from_secs(period_secs),
            burst,
        }
    }

    #[test]
    fn urls() {
        let t = parse_url("redis://127.0.0.1:6390").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.db, t.password.as_deref()),
            ("127.0.0.1", 6390, 0, None)
        );
        let t = parse_url("redis://localhost").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("localhost", 6379));
        let t = parse_url("redis://:p%40ss@cache:7000/3").unwrap();
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.username, None);
        assert_eq!((t.host.as_str(), t.port, t.db), ("cache", 7000, 3));
        let t = parse_url("REDIS://alice:secret@[::1]:6380/").unwrap();
        assert_eq!(t.username.as_deref(), Some("alice"));
        assert_eq!(t.password.as_deref(), Some("secret"));
        assert_eq!((t.host.as_str(), t.port, t.db), ("::1", 6380, 0));
        let t = parse_url("redis://[::1]").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 6379));
        assert!(!format!("{t:?}").contains("secret"));
        let redacted = parse_url("redis://:hunter2@h").unwrap();
        assert!(!format!("{redacted:?}").contains("hunter2"));
        for bad in [
            "rediss://h:1",
            "http://h",
            "h:6379",
            "redis://",
            "redis://h:99999",
            "redis://h:1/x",
            "redis://h/0?timeout=1",
            "redis://:%zz@h",
            "redis://[::1",
        ] {
            assert!(
                matches!(parse_url(bad), Err(RedisError::Url(_))),
                "{bad} parsed"
            );
        }
    }

    #[test]
    fn encoding() {
        assert_eq!(
            encode(&[b"GET", b"k"]),
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()
        );
    }

    #[test]
    fn replies_are_checked_against_the_local_gcra() {
        let params = [Params::new(&limit(1, 60, 0), MICROS_PER_SEC)];
        let ok = decision_from_reply(
            Reply::Array(Some(vec![Reply::Int(1), Reply::Int(5), Reply::Int(0)])),
            &params,
        )
        .unwrap();
        assert!(ok.allowed);
        assert_eq!(ok.reset_secs, 60);
        // The script said "allowed" where the TAT says otherwise.
        let wrong = decision_from_reply(
            Reply::Array(Some(vec![
                Reply::Int(1),
                Reply::Int(5),
                Reply::Int(60_000_000),
            ])),
            &params,
        );
        assert!(matches!(wrong, Err(RedisError::Protocol(_))));
        let short = decision_from_reply(Reply::Array(Some(vec![Reply::Int(1)])), &params);
        assert!(matches!(short, Err(RedisError::Protocol(_))));
    }

    // ---- against a real redis-server ----------------------------------------

    /// A redis-server of our own on a free loopback port, killed (by PID) on drop.
    struct Server {
        child: Option<Child>,
        port: u16,
    }

    fn redis_server_missing() -> bool {
        let missing = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err();
        if missing {
            let _ = writeln!(
                io::stderr(),
                "note: redis-server not found, skipping a Redis rate-limit test"
            );
        }
        missing
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port")
    }

    impl Server {
        fn start(extra: &[&str]) -> Server {
            for _ in 0..5 {
                let mut s = Server {
                    child: None,
                    port: free_port(),
                };
                if s.spawn(extra) {
                    return s;
                }
            }
            panic!("could not start redis-server");
        }

        /// Starts redis-server on `self.port`; true once it answers PING.
        fn spawn(&mut self, extra: &[&str]) -> bool {
            let port = self.port.to_string();
            let dir = std::env::temp_dir();
            let mut args = vec![
                "--port",
                port.as_str(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.to_str().unwrap_or("/tmp"),
            ];
            args.extend_from_slice(extra);
            let child = Command::new("redis-server")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                    self.child = None;
                    return false; // exited: the port was taken
                }
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            self.kill();
            false
        }

        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        fn restart(&mut self, extra: &[&str]) {
            assert!(self.spawn(extra), "redis-server did not restart");
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        /// A raw command on a fresh connection.
        async fn raw(&self, args: &[&str]) -> Reply {
            self.raw_seq(&[args]).await.pop().expect("one reply")
        }

        /// Raw commands in order on one fresh connection.
        async fn raw_seq(&self, commands: &[&[&str]]) -> Vec<Reply> {
            let stream = TcpStream::connect(("127.0.0.1", self.port))
                .await
                .expect("connect");
            let mut c = Conn {
                io: BufReader::new(stream),
                generation: 0,
            };
            let mut replies = Vec::new();
            for args in commands {
                let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
                replies.push(c.call(&args).await.expect("raw command"));
            }
            replies
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.kill();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_share_one_limit_exactly() {
        if redis_server_missing() {
            return;
        }
        let server = Server::start(&[]);
        let a = Arc::new(RedisStore::new(&server.url()).unwrap());
        let b = Arc::new(RedisStore::new(&server.url()).unwrap().with_pool_size(2));
        let limits = Arc::new(vec![limit(10, 3600, 9)]); // 10 at once, then 1 per 6 min
        let mut tasks = Vec::new();
        for i in 0..60 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let limits = limits.clone();
            tasks.push(tokio::spawn(
                async move { store.check("shared", &limits).await },
            ));
        }
        let mut allowed = 0;
        for t in tasks {
            let d = t.await.unwrap().expect("redis check");
            assert_eq!(d.limit, 10);
            if d.allowed {
                allowed += 1;
            } else {
                assert_eq!(d.remaining, 0);
                assert!((359..=360).contains(&d.retry_after_secs), "{d:?}");
            }
        }
        assert_eq!(allowed, 10);
        // Both replicas keep refusing, and other keys are untouched.
        assert!(!a.check("shared", &limits).await.unwrap().allowed);
        assert!(!b.check("shared", &limits).await.unwrap().allowed);
        assert!(b.check("other", &limits).await.unwrap().allowed);
    }

    #[tokio::test]
    async fn numbers_ttl_and_two_limits() {
        if redis_server_missing() {
            return;
        }
        let server = Server::start(&[]);
        let store = RedisStore::new(&server.url()).unwrap();
        let burst = [limit(5, 3600, 4)]; // T = 720 s
        let remaining: Vec<u32> = futures_remaining(&store, "n", &burst, 5).await;
        assert_eq!(remaining, vec![4, 3, 2, 1, 0]);
        let refused = store.check("n", &burst).await.unwrap();
        assert!(!refused.allowed);
        assert!(
            (719..=720).contains(&refused.retry_after_secs),
            "{refused:?}"
        );
        assert!((3599..=3600).contains(&refused.reset_secs), "{refused:?}");
        // The key expires when it is fully replenished.
        match server.raw(&["PTTL", "velithon:rl:n"]).await {
            Reply::Int(ms) => assert!((3_599_000..=3_600_000).contains(&ms), "{ms}"),
            other => panic!("PTTL answered {other:?}"),
        }
        // Two limits, the hourly one binds; a refusal consumes nothing.
        let two = [limit(10, 60, 9), limit(2, 3600, 1)];
        assert_eq!(futures_remaining(&store, "t", &two, 2).await, vec![1, 0]);
        let d = store.check("t", &two).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.limit, 2);
        match server.raw(&["HGETALL", "velithon:rl:t"]).await {
            Reply::Array(Some(fields)) => assert_eq!(fields.len(), 4),
            other => panic!("HGETALL answered {other:?}"),
        }
        // Zero limits or a zero rate never reach Redis.
        assert!(store.check("z", &[]).await.unwrap().allowed);
        assert!(!store.check("z", &[limit(0, 1, 0)]).await.unwrap().allowed);
    }

    async fn futures_remaining(
        store: &RedisStore,
        key: &str,
        limits: &[Limit],
        n: usize,
    ) -> Vec<u32> {
        let mut out = Vec::new();
        for _ in 0..n {
            let d = store.check(key, limits).await.unwrap();
            assert!(d.allowed, "{d:?}");
            out.push(d.remaining);
        }
        out
    }

    #[tokio::test]
    async fn noscript_falls_back_to_eval() {
        if redis_server_missing() {
            return;
        }
        let server = Server::start(&[]);
        let store = RedisStore::new(&server.url()).unwrap();
        let l = [limit(3, 3600, 2)];
        assert!(store.check("k", &l).await.unwrap().allowed);
        assert_eq!(
            server.raw(&["SCRIPT", "FLUSH"]).await,
            Reply::Status("OK".into())
        );
        let d = store.check("k", &l).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 1);
        // EVAL cached the script again.
        let sha = store.sha.get().unwrap().clone();
        assert_eq!(
            server.raw(&["SCRIPT", "EXISTS", &sha]).await,
            Reply::Array(Some(vec![Reply::Int(1)]))
        );
    }

    #[tokio::test]
    async fn password_and_database() {
        if redis_server_missing() {
            return;
        }
        let server = Server::start(&["--requirepass", "s3cr@t"]);
        let url = format!("redis://:s3cr%40t@127.0.0.1:{}/3", server.port);
        let store = RedisStore::new(&url).unwrap();
        store.warm_up().await.unwrap();
        assert!(store.check("k", &[limit(1, 60, 0)]).await.unwrap().allowed);
        assert!(!store.check("k", &[limit(1, 60, 0)]).await.unwrap().allowed);
        let replies = server
            .raw_seq(&[
                &["AUTH", "s3cr@t"],
                &["EXISTS", "velithon:rl:k"],
                &["SELECT", "3"],
                &["EXISTS", "velithon:rl:k"],
            ])
            .await;
        assert_eq!(replies[1], Reply::Int(0), "written to db 0");
        assert_eq!(replies[3], Reply::Int(1), "not written to db 3");
        let wrong = RedisStore::new(&format!("redis://:nope@127.0.0.1:{}", server.port)).unwrap();
        assert!(matches!(
            wrong.check("k", &[limit(1, 60, 0)]).await,
            Err(RedisError::Server(_))
        ));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        // Accepts connections (the kernel does) but never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let store = RedisStore::new(&format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .with_timeout(Duration::from_millis(100));
        let started = Instant::now();
        let err = store.check("k", &[limit(1, 60, 0)]).await.unwrap_err();
        assert!(matches!(err, RedisError::Timeout), "{err}");
        assert!(started.elapsed() < Duration::from_millis(600));
        // Within the backoff: failing at once.
        let started = Instant::now();
        let err = store.check("k", &[limit(1, 60, 0)]).await.unwrap_err();
        assert!(matches!(err, RedisError::Unavailable), "{err}");
        assert!(started.elapsed() < Duration::from_millis(150));
        drop(listener);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_redis_dying_and_coming_back() {
        if redis_server_missing() {
            return;
        }
        let mut server = Server::start(&[]);
        let timeout = Duration::from_millis(250);
        let store = RedisStore::new(&server.url())
            .unwrap()
            .with_timeout(timeout)
            .with_reconnect_backoff(Duration::from_millis(100));
        let l = [limit(2, 3600, 1)];
        assert!(store.check("k", &l).await.unwrap().allowed);

        server.kill();
        for _ in 0..5 {
            let started = Instant::now();
            let result = store.check("k", &l).await;
            assert!(result.is_err(), "{result:?}");
            assert!(started.elapsed() <= timeout + Duration::from_millis(100));
        }

        server.restart(&[]);
        let deadline = Instant::now() + Duration::from_secs(3);
        let decision = loop {
            match store.check("k", &l).await {
                Ok(d) => break d,
                Err(e) => {
                    assert!(Instant::now() < deadline, "still failing: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        // A new, empty Redis (and a script it had never seen): a fresh key.
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 1);
        assert!(store.check("k", &l).await.unwrap().allowed);
        assert!(!store.check("k", &l).await.unwrap().allowed);
    }
}
