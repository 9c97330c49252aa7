//! Idle upstream connections, one stack per host: the most recently used is handed out
//! first (its peer is the least likely to have closed it), the longest idle are pruned
//! from the other end once older than `keepAliveTimeout`. Shared by the inline HTTP/1
//! pool and the fast lane's socket pool.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::uri::Authority;

use super::h1_pool::host_port;

struct Idle<T> {
    conn: T,
    since: Instant,
}

pub(super) struct IdleStacks<T> {
    /// Per host: oldest at the front, most recently used at the back.
    idle: Mutex<HashMap<Authority, VecDeque<Idle<T>>>>,
    max_per_host: usize,
    keep_alive: Duration,
}

impl<T> IdleStacks<T> {
    pub(super) fn new(max_per_host: usize, keep_alive: Duration) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            max_per_host,
            keep_alive,
        }
    }

    /// Idle connections per host (`host:port`), sorted, for metrics.
    pub(super) fn counts(&self) -> Vec<(String, usize)> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, usize)> = idle
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(host, q)| (host_port(host, 80), q.len()))
            .collect();
        out.sort();
        out
    }

    /// The most recently used connection to `authority` that is within the keep-alive
    /// time and `usable`; the others met on the way are dropped.
    pub(super) fn take(
        &self,
        authority: &Authority,
        mut usable: impl FnMut(&mut T) -> bool,
    ) -> Option<T> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let stack = idle.get_mut(authority)?;
        let now = Instant::now();
        while let Some(Idle { mut conn, since }) = stack.pop_back() {
            if now.duration_since(since) < self.keep_alive && usable(&mut conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for reuse, unless the host already has its share idle.
    pub(super) fn put(&self, authority: &Authority, conn: T) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let stack = match idle.get_mut(authority) {
            Some(stack) => stack,
            None => idle.entry(authority.clone()).or_default(),
        };
        let now = Instant::now();
        // The oldest wait at the front: drop those idle for longer than keepAliveTimeout.
        while stack
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= self.keep_alive)
        {
            stack.pop_front();
        }
        if stack.len() < self.max_per_host {
            stack.push_back(Idle { conn, since: now });
        }
    }
}
