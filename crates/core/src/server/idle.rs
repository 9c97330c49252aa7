//! Idle HTTP/2 connections. HTTP/1 keep-alive connections are bounded by hyper's
//! request-head timeout; an HTTP/2 connection has no such bound (pings only find dead
//! peers), so a client could hold one open forever without sending anything. A
//! connection whose streams have all ended and that started none for the idle timeout
//! is closed gracefully (GOAWAY), as NGINX's `keepalive_timeout` does for HTTP/2.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::idle::LastActivity;

/// The HTTP/2 streams of one connection: how many are open and when one last began or
/// ended.
pub(super) struct Streams {
    last: LastActivity,
    active: AtomicUsize,
    /// HTTP/2 for sure (ALPN said so, or a stream was seen); an HTTP/1 connection is
    /// left to hyper's own timeouts.
    h2: AtomicBool,
}

impl Streams {
    pub(super) fn new(h2: bool) -> Arc<Self> {
        Arc::new(Self {
            last: LastActivity::new(),
            active: AtomicUsize::new(0),
            h2: AtomicBool::new(h2),
        })
    }

    /// The connection is HTTP/2 (ALPN chose `h2`).
    pub(super) fn mark_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }

    /// A stream began; it counts as open until the guard (kept by its response body) is
    /// dropped.
    pub(super) fn begin(self: &Arc<Self>) -> StreamGuard {
        self.h2.store(true, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        self.last.touch();
        StreamGuard(self.clone())
    }

    /// Resolves once the connection is HTTP/2 with no open stream and none began or
    /// ended for `timeout`.
    pub(super) async fn idle_for(&self, timeout: Duration) {
        let quiet = || self.h2.load(Ordering::Relaxed) && self.active.load(Ordering::Relaxed) == 0;
        self.last.quiet_for(timeout, quiet).await
    }
}

/// One open stream; dropping it ends the stream's count.
pub(super) struct StreamGuard(Arc<Streams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let streams = &self.0;
        streams.last.touch();
        streams.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn idle_after_the_last_stream_ends_not_while_one_is_open() {
        let streams = Streams::new(true);
        let guard = streams.begin();
        let started = Instant::now();
        let idle = tokio::spawn({
            let streams = streams.clone();
            async move { streams.idle_for(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!idle.is_finished(), "an open stream keeps the connection");
        drop(guard);
        idle.await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(25));
    }

    #[tokio::test(start_paused = true)]
    async fn an_http1_connection_is_never_idle_here() {
        let streams = Streams::new(false);
        let idle = streams.idle_for(Duration::from_secs(1));
        assert!(tokio::time::timeout(Duration::from_secs(60), idle)
            .await
            .is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_h2_connection_that_never_starts_a_stream_is_idle() {
        let streams = Streams::new(true);
        let started = Instant::now();
        streams.idle_for(Duration::from_secs(3)).await;
        assert!(started.elapsed() >= Duration::from_secs(3));
    }
}
