//! `Upgrade` proxying (WebSocket and friends, RFC 9110 §7.8): the upgrade request goes
//! upstream on a connection of its own; when the upstream answers `101 Switching
//! Protocols`, the client gets the 101 and both connections are joined into a tunnel that
//! copies bytes both ways until either side closes, a half-close passed on as a
//! half-close, or until nothing has moved for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tokio::time::Instant;

use super::headers::remove_hop_by_hop;
use crate::body::{boxed, empty, ProxyBody};
use crate::client::ConnectionSlot;

/// The protocol a client asks to switch to, when it asks in a way the gateway passes
/// on: HTTP/1.1, an `Upgrade` header, and `upgrade` among the `Connection` tokens
/// (Firefox sends `Connection: keep-alive, Upgrade`). `h2c` is the server's own
/// business and never forwarded.
pub(crate) fn requested(parts: &request::Parts) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let protocol = parts.headers.get(header::UPGRADE)?;
    if protocol.as_bytes().eq_ignore_ascii_case(b"h2c") || protocol.is_empty() {
        return None;
    }
    connection_has_upgrade(&parts.headers).then(|| protocol.clone())
}

fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
}

/// The client's answer to an upgrade request the upstream answered: a `101` carries the
/// tunnel-to-be in its extensions (started by whoever holds the server's lease, see
/// `Tunnel::run`); anything else is an ordinary response.
pub(crate) fn answer(
    mut res: Response<Incoming>,
    client_side: OnUpgrade,
    slot: Option<ConnectionSlot>,
    idle_timeout: Duration,
) -> Response<ProxyBody> {
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        remove_hop_by_hop(res.headers_mut(), false);
        return res.map(boxed);
    }
    let upstream_side = hyper::upgrade::on(&mut res);
    let protocol = res.headers().get(header::UPGRADE).cloned();
    let (mut parts, _) = res.into_parts();
    remove_hop_by_hop(&mut parts.headers, false);
    if let Some(protocol) = protocol {
        parts.headers.insert(header::UPGRADE, protocol);
    }
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let tunnel = Tunnel {
        client: client_side,
        upstream: upstream_side,
        slot,
        idle_timeout,
    };
    parts
        .extensions
        .insert(PendingTunnel(Arc::new(Mutex::new(Some(tunnel)))));
    Response::from_parts(parts, empty())
}

/// A tunnel in a response's extensions (which must be `Clone`; the tunnel is taken once).
#[derive(Clone)]
struct PendingTunnel(Arc<Mutex<Option<Tunnel>>>);

/// Both ends of an accepted upgrade, waiting to be joined: carried in the 101
/// response's extensions until whoever holds the server's lease starts it.
pub struct Tunnel {
    pub(crate) client: OnUpgrade,
    pub(crate) upstream: OnUpgrade,
    /// The `maxConnectionsPerHost` slot: the tunnel is an upstream connection.
    pub(crate) slot: Option<ConnectionSlot>,
    pub(crate) idle_timeout: Duration,
}

impl Tunnel {
    /// The tunnel a `101` response carries, if any (taken: a second call gets `None`).
    pub fn take_from<B>(res: &mut Response<B>) -> Option<Tunnel> {
        let pending = res.extensions_mut().remove::<PendingTunnel>()?;
        let taken = pending.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        taken
    }

    /// Joins the two connections once the client has its 101 and copies until both
    /// directions are done, an error, or idleness ends it. `hold` (the server's
    /// in-flight lease) lives as long as the tunnel.
    pub async fn run<H: Send + 'static>(self, hold: H) {
        let (client, upstream) = match tokio::join!(self.client, self.upstream) {
            (Ok(c), Ok(u)) => (c, u),
            // The 101 never reached the client (it went away, or a later stage
            // answered something else): nothing to join.
            _ => return,
        };
        let activity = Arc::new(Activity::new());
        let mut client = Active::new(client, activity.clone());
        let mut upstream = Active::new(upstream, activity.clone());
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = activity.idle_for(self.idle_timeout) => {}
        }
        drop(hold);
        drop(self.slot);
    }
}

/// When bytes last moved through a tunnel (either way), in nanoseconds since it opened.
struct Activity {
    opened: Instant,
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// Resolves once nothing has been read on either side for `timeout` (never for 0).
    async fn idle_for(&self, timeout: Duration) {
        if timeout.is_zero() {
            return std::future::pending().await;
        }
        let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        loop {
            let since = self.now().saturating_sub(self.last.load(Ordering::Relaxed));
            if since >= timeout_ns {
                return;
            }
            tokio::time::sleep(Duration::from_nanos(timeout_ns - since)).await;
        }
    }
}

/// An upgraded connection that notes when it last delivered bytes.
struct Active {
    io: TokioIo<Upgraded>,
    activity: Arc<Activity>,
}

impl Active {
    fn new(io: Upgraded, activity: Arc<Activity>) -> Self {
        Self {
            io: TokioIo::new(io),
            activity,
        }
    }
}

impl AsyncRead for Active {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Active {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, headers: &[(&str, &str)]) -> request::Parts {
        let mut req = http::Request::builder().version(version).uri("/ws");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_websocket_upgrade_is_recognised_in_every_connection_spelling() {
        for connection in [
            "Upgrade",
            "upgrade",
            "keep-alive, Upgrade",
            "Keep-Alive,upgrade",
        ] {
            let p = parts(
                Version::HTTP_11,
                &[("connection", connection), ("upgrade", "websocket")],
            );
            assert_eq!(requested(&p).unwrap(), "websocket", "{connection}");
        }
    }

    #[test]
    fn no_upgrade_without_the_connection_token_on_http2_or_for_h2c() {
        let cases = [
            parts(Version::HTTP_11, &[("upgrade", "websocket")]),
            parts(
                Version::HTTP_11,
                &[("connection", "keep-alive"), ("upgrade", "websocket")],
            ),
            parts(
                Version::HTTP_11,
                &[("connection", "upgrade-insecure"), ("upgrade", "websocket")],
            ),
            parts(
                Version::HTTP_2,
                &[("connection", "upgrade"), ("upgrade", "websocket")],
            ),
            parts(
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", "h2c")],
            ),
            parts(
                Version::HTTP_10,
                &[("connection", "upgrade"), ("upgrade", "websocket")],
            ),
        ];
        for p in cases {
            assert!(requested(&p).is_none(), "{:?}", p.headers);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_waits_until_nothing_moved_for_the_timeout() {
        let activity = Activity::new();
        tokio::time::sleep(Duration::from_secs(3)).await;
        activity.touch();
        let touched = Instant::now();
        activity.idle_for(Duration::from_secs(5)).await;
        // Five seconds after the last activity, not after the tunnel opened.
        assert_eq!(touched.elapsed(), Duration::from_secs(5));
    }
}
