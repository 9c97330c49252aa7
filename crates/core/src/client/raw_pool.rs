//! Plain TCP connections to HTTP/1.1 upstreams for the listener's fast lane, which
//! writes request heads and reads responses itself. Idle connections wait per host (most
//! recently used first; the longest idle are pruned); a connection closed by its peer,
//! idle longer than `keepAliveTimeout`, or holding unread bytes is dropped, never reused.

use std::time::Duration;

use bytes::BytesMut;
use http::uri::Authority;
use tokio::net::TcpStream;

use super::h1_pool::{connect_tcp, host_port};
use super::idle_stacks::IdleStacks;
use crate::error::GatewayError;

/// An upstream connection and the bytes read from it that are not consumed yet.
pub struct RawConn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// Came from the pool (a failed write may mean the peer closed it meanwhile).
    pub reused: bool,
}

pub struct RawPool {
    idle: IdleStacks<RawConn>,
    connect_timeout: Duration,
}

impl RawPool {
    pub(super) fn new(
        max_idle_per_host: usize,
        keep_alive: Duration,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            idle: IdleStacks::new(max_idle_per_host, keep_alive),
            connect_timeout,
        }
    }

    /// Idle connections per host (`host:port`), for metrics.
    pub(super) fn idle_counts(&self) -> Vec<(String, usize)> {
        self.idle.counts()
    }

    /// A pooled connection to `authority`, or a new one.
    pub async fn get(&self, authority: &Authority) -> Result<RawConn, GatewayError> {
        if let Some(conn) = self.checkout(authority) {
            return Ok(conn);
        }
        self.connect(authority).await
    }

    /// A new connection to `authority` (within `connectTimeout`).
    pub async fn connect(&self, authority: &Authority) -> Result<RawConn, GatewayError> {
        let stream = connect_tcp(&host_port(authority, 80), self.connect_timeout).await?;
        Ok(RawConn {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            reused: false,
        })
    }

    fn checkout(&self, authority: &Authority) -> Option<RawConn> {
        let mut conn = self.idle.take(authority, |conn| is_quiet(&conn.stream))?;
        conn.reused = true;
        Some(conn)
    }

    /// Returns a connection whose last response was read to its end.
    pub fn checkin(&self, authority: &Authority, conn: RawConn) {
        if !conn.buf.is_empty() || !is_quiet(&conn.stream) {
            return; // bytes nobody asked for, or closed: not reusable
        }
        self.idle.put(authority, conn);
    }
}

/// Nothing to read: neither bytes nor the peer's close. Costs no system call while the
/// runtime has seen no readiness on the socket.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn reuses_open_connections_and_drops_closed_ones() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let pool = RawPool::new(4, Duration::from_secs(60), Duration::from_secs(2));
        let conn = pool.get(&authority).await.unwrap();
        let (mut server_side, _) = listener.accept().await.unwrap();
        assert!(!conn.reused);
        pool.checkin(&authority, conn);
        assert_eq!(pool.idle_counts(), vec![(authority.to_string(), 1)]);
        let conn = pool.get(&authority).await.unwrap();
        assert!(conn.reused);
        pool.checkin(&authority, conn);

        // The peer closes: the idle connection is not handed out again.
        server_side.shutdown().await.unwrap();
        drop(server_side);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let conn = pool.get(&authority).await.unwrap();
        assert!(!conn.reused, "a closed connection was reused");
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let pool = RawPool::new(4, Duration::from_millis(20), Duration::from_secs(2));
        let conn = pool.get(&authority).await.unwrap();
        pool.checkin(&authority, conn);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(!pool.get(&authority).await.unwrap().reused);
    }
}
