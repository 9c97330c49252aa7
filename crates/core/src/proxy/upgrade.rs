//! `Upgrade` proxying (WebSocket and friends, RFC 9110 §7.8): the upgrade request goes
//! upstream on a connection of its own; when the upstream answers `101 Switching
//! Protocols`, the client gets the 101 and both connections are joined into a tunnel that
//! copies bytes both ways until either side closes, a half-close passed on as a
//! half-close, or until nothing has moved for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::headers::remove_hop_by_hop;
use crate::body::{boxed, empty, ProxyBody};
use crate::client::ConnectionSlot;
use crate::error::{ErrorCode, GatewayError};
use crate::idle::LastActivity;

/// The protocols a client asks to switch to, when it asks in a way the gateway passes
/// on: HTTP/1.1, an `Upgrade` header, and `upgrade` among the `Connection` tokens
/// (Firefox sends `Connection: keep-alive, Upgrade`). An `h2c` among the offered
/// protocols is the server's own business: such a request is not forwarded as an
/// upgrade at all (its `Upgrade` header is dropped like any hop-by-hop header).
pub(crate) fn requested(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let mut values = headers.get_all(header::UPGRADE).iter();
    let protocol = values.next()?;
    let single = values.next().is_none();
    if !single || protocol.is_empty() || tokens(protocol).any(is_h2c) {
        return None;
    }
    connection_has_upgrade(headers).then(|| protocol.clone())
}

/// The comma-separated tokens of a header value, trimmed (`websocket`, `foo/2`).
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

fn is_h2c(token: &[u8]) -> bool {
    let name = token.split(|b| *b == b'/').next().unwrap_or(token);
    name.eq_ignore_ascii_case(b"h2c")
}

fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(tokens)
        .any(|token| token.eq_ignore_ascii_case(b"upgrade"))
}

/// Whether `chosen` (the 101's `Upgrade`) is one of the protocols the client offered.
fn was_offered(offered: &HeaderValue, chosen: &HeaderValue) -> bool {
    let chosen: Vec<&[u8]> = tokens(chosen).collect();
    chosen.len() == 1
        && !is_h2c(chosen[0])
        && tokens(offered).any(|t| t.eq_ignore_ascii_case(chosen[0]))
}

/// The client's answer to an upgrade request the upstream answered. A `101` for one of
/// the protocols the client offered carries the tunnel-to-be in its extensions (the
/// listener starts it once this is the final answer, see `Tunnel::take_from`); a `101`
/// for anything else is refused (502); any other answer is an ordinary response, its
/// body keeping the connection slot.
pub(crate) fn answer(
    mut res: Response<Incoming>,
    offered: &HeaderValue,
    client_side: OnUpgrade,
    slot: Option<ConnectionSlot>,
    idle_timeout: Duration,
) -> Result<Response<ProxyBody>, GatewayError> {
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        remove_hop_by_hop(res.headers_mut(), false);
        return Ok(res.map(|body| match slot {
            Some(slot) => boxed(body.map_frame(move |frame| {
                let _held = &slot;
                frame
            })),
            None => boxed(body),
        }));
    }
    let chosen = res.headers().get(header::UPGRADE).cloned();
    let Some(protocol) = chosen.filter(|c| was_offered(offered, c)) else {
        return Err(GatewayError::new(
            ErrorCode::UpstreamProtocol,
            "the upstream switched to a protocol the client did not ask for",
        ));
    };
    let upstream_side = hyper::upgrade::on(&mut res);
    let (mut parts, _) = res.into_parts();
    remove_hop_by_hop(&mut parts.headers, false);
    parts.headers.insert(header::UPGRADE, protocol);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let tunnel = Tunnel {
        client: client_side,
        upstream: upstream_side,
        slot,
        hold: None,
        idle_timeout,
    };
    parts
        .extensions
        .insert(PendingTunnel(Arc::new(Mutex::new(Some(tunnel)))));
    Ok(Response::from_parts(parts, empty()))
}

/// A tunnel in a response's extensions (which must be `Clone`; the tunnel is taken once).
#[derive(Clone)]
struct PendingTunnel(Arc<Mutex<Option<Tunnel>>>);

/// Both ends of an accepted upgrade, waiting to be joined. It travels in the 101's
/// extensions; if a later stage answers something else instead, the 101 and the tunnel
/// with it are dropped, which closes the upstream's connection.
pub struct Tunnel {
    client: OnUpgrade,
    upstream: OnUpgrade,
    /// The `maxConnectionsPerHost` slot: the tunnel is an upstream connection.
    slot: Option<ConnectionSlot>,
    /// The server's in-flight lease (least connections counts open tunnels).
    hold: Option<Box<dyn Send>>,
    idle_timeout: Duration,
}

/// How long the two sides may take to finish switching once the 101 is final.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(10);

impl Tunnel {
    /// The tunnel a response carries, if any (taken: a second call gets `None`).
    pub fn take_from<B>(res: &mut Response<B>) -> Option<Tunnel> {
        let pending = res.extensions_mut().remove::<PendingTunnel>()?;
        let taken = pending.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        taken
    }

    /// Gives `hold` to the tunnel `res` carries, to keep while it is open; without a
    /// tunnel, `hold` comes back.
    pub(crate) fn keep_while_open<B, H: Send + 'static>(
        res: &Response<B>,
        hold: H,
    ) -> Result<(), H> {
        let Some(pending) = res.extensions().get::<PendingTunnel>() else {
            return Err(hold);
        };
        match pending.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(tunnel) => {
                tunnel.hold = Some(Box::new(hold));
                Ok(())
            }
            None => Err(hold),
        }
    }

    /// Joins the two connections once the client has its 101 and copies until both
    /// directions are done, an error, idleness, or `stop` (the listener's forced close)
    /// ends it.
    pub async fn run(self, stop: CancellationToken) {
        let switched = tokio::time::timeout(SWITCH_TIMEOUT, async {
            tokio::join!(self.client, self.upstream)
        });
        let (client, upstream) = match switched.await {
            Ok((Ok(c), Ok(u))) => (c, u),
            // The client went away before its 101 was written, or a side never
            // finished switching: nothing to join.
            _ => return,
        };
        let activity = Arc::new(LastActivity::new());
        let mut client = Active::new(client, activity.clone());
        let mut upstream = Active::new(upstream, activity.clone());
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = idle(&activity, self.idle_timeout) => {}
            _ = stop.cancelled() => {}
        }
        drop(self.hold);
        drop(self.slot);
    }
}

/// Resolves once nothing has been read on either side for `timeout` (never for 0).
async fn idle(activity: &LastActivity, timeout: Duration) {
    if timeout.is_zero() {
        return std::future::pending().await;
    }
    activity.quiet_for(timeout, || true).await
}

/// An upgraded connection that notes when it last delivered bytes.
struct Active {
    io: TokioIo<Upgraded>,
    activity: Arc<LastActivity>,
}

impl Active {
    fn new(io: Upgraded, activity: Arc<LastActivity>) -> Self {
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

    fn parts(version: Version, headers: &[(&str, &str)]) -> (Version, HeaderMap) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        (version, map)
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
            assert_eq!(requested(p.0, &p.1).unwrap(), "websocket", "{connection}");
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
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", "websocket, H2C")],
            ),
            parts(
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", "h2c/1")],
            ),
            parts(
                Version::HTTP_11,
                &[
                    ("connection", "upgrade"),
                    ("upgrade", "websocket"),
                    ("upgrade", "h2c"),
                ],
            ),
            parts(
                Version::HTTP_10,
                &[("connection", "upgrade"), ("upgrade", "websocket")],
            ),
        ];
        for p in cases {
            assert!(requested(p.0, &p.1).is_none(), "{:?}", p.1);
        }
    }

    #[test]
    fn a_101_must_choose_one_protocol_the_client_offered() {
        let offered = HeaderValue::from_static("websocket, foo/2");
        for ok in ["websocket", "WebSocket", "foo/2"] {
            assert!(was_offered(&offered, &HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in ["h2c", "bar", "websocket, foo/2", ""] {
            assert!(
                !was_offered(&offered, &HeaderValue::from_static(bad)),
                "{bad}"
            );
        }
    }
}
