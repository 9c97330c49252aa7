//! A pool of plain-HTTP/1.1 upstream connections driven inline: the task that forwards a
//! request also polls the upstream connection (while waiting for the response head, and
//! while streaming the response body through `PooledBody`), so a proxied request costs
//! no task spawns and no cross-task wake-ups. Idle connections wait in a per-host stack
//! (most recently used first; the longest idle are pruned from the other end) and are checked before reuse: closed by the peer, or idle
//! longer than `keepAliveTimeout`, they are dropped. A connection whose response body was
//! not read to the end is closed, never reused.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{BoxError, ProxyBody};
use crate::error::{ErrorCode, GatewayError};

use super::client_body_error;
use super::idle_stacks::IdleStacks;

type Conn = Connection<TokioIo<TcpStream>, ProxyBody>;

/// A pooled connection lives in a box: it moves between the pool, the exchange and the
/// response body on every request, and hyper's connection state is large.
type Link = Box<Upstream1>;

struct Upstream1 {
    sender: SendRequest<ProxyBody>,
    conn: Conn,
}

pub(super) struct H1Pool {
    idle: IdleStacks<Link>,
    connect_timeout: Duration,
}

impl H1Pool {
    pub(super) fn new(
        max_idle_per_host: usize,
        keep_alive: Duration,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            idle: IdleStacks::new(max_idle_per_host, keep_alive),
            connect_timeout,
        })
    }

    /// Idle pooled connections per host (`host:port`), for metrics.
    pub(super) fn idle_counts(&self) -> Vec<(String, usize)> {
        self.idle.counts()
    }

    /// Sends `req` (origin-form URI, `Host` set) to `authority` on a pooled or new
    /// connection. A request that could not be written on a reused connection (it was
    /// closed in the meantime) is sent again on a new one.
    pub(super) async fn send(
        self: &Arc<Self>,
        authority: Authority,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, GatewayError> {
        let mut req = req;
        if let Some(link) = self.checkout(&authority) {
            match exchange(link, req).await {
                Ok((res, link)) => return Ok(self.wrap(authority, res, link)),
                Err((_, Some(unsent))) => req = unsent,
                Err((err, None)) => return Err(protocol_error(err)),
            }
        }
        let link = self.connect(&authority).await?;
        match exchange(link, req).await {
            Ok((res, link)) => Ok(self.wrap(authority, res, link)),
            Err((err, _)) => Err(protocol_error(err)),
        }
    }

    fn wrap(
        self: &Arc<Self>,
        authority: Authority,
        res: Response<Incoming>,
        link: Option<Link>,
    ) -> Response<ProxyBody> {
        let pool = self.clone();
        res.map(move |body| {
            http_body_util::BodyExt::boxed_unsync(PooledBody {
                body,
                ended: false,
                link,
                pool: Some((pool, authority)),
            })
        })
    }

    fn checkout(&self, authority: &Authority) -> Option<Link> {
        self.idle.take(authority, |link| still_open(link))
    }

    fn checkin(&self, authority: Authority, mut link: Link) {
        if !still_open(&mut link) || !link.sender.is_ready() {
            return;
        }
        self.idle.put(&authority, link);
    }

    async fn connect(&self, authority: &Authority) -> Result<Link, GatewayError> {
        let stream = connect_tcp(&with_port(authority), self.connect_timeout).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(protocol_error)?;
        Ok(Box::new(Upstream1 { sender, conn }))
    }
}

/// `host:port`, port 80 when the authority names none (plain HTTP).
fn with_port(authority: &Authority) -> String {
    host_port(authority, 80)
}

/// `host:port`, with `default_port` when the authority names none.
pub(super) fn host_port(authority: &Authority, default_port: u16) -> String {
    match authority.port_u16() {
        Some(_) => authority.as_str().to_string(),
        None => format!("{}:{default_port}", authority.as_str()),
    }
}

/// `/path?query`: what HTTP/1.1 puts on the request line.
pub(super) fn origin_form(uri: &http::Uri) -> http::Uri {
    uri.path_and_query()
        .cloned()
        .map_or_else(|| http::Uri::from_static("/"), http::Uri::from)
}

/// A TCP connection to `authority` (`host:port`) within `timeout`, Nagle off, TCP
/// keepalive on (as the hyper connector's: a dead peer of an idle pooled connection or a
/// quiet tunnel is found).
pub(super) async fn connect_tcp(
    authority: &str,
    timeout: Duration,
) -> Result<TcpStream, GatewayError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(authority)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let code = if e.kind() == std::io::ErrorKind::TimedOut {
                ErrorCode::UpstreamTimeout
            } else {
                ErrorCode::UpstreamConnect
            };
            return Err(GatewayError::new(code, "could not connect to the upstream").with_cause(e));
        }
        Err(_) => {
            return Err(GatewayError::new(
                ErrorCode::UpstreamTimeout,
                "connecting to the upstream timed out",
            ))
        }
    };
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(super::connector::TCP_KEEPALIVE);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    Ok(stream)
}

/// Polls an idle connection once, without a real waker: a peer that closed it (or a
/// runtime that is gone) shows up as a finished connection.
fn still_open(link: &mut Upstream1) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(&mut link.conn).poll(&mut cx) {
        Poll::Pending => !link.sender.is_closed(),
        Poll::Ready(_) => false,
    }
}

pub(super) fn protocol_error(err: hyper::Error) -> GatewayError {
    if err.is_user() {
        // Our side of the exchange failed: the client's request body broke off.
        return client_body_error(err);
    }
    GatewayError::new(
        ErrorCode::UpstreamProtocol,
        "the upstream connection failed before a response arrived",
    )
    .with_cause(err)
}

type Exchanged =
    Result<(Response<Incoming>, Option<Link>), (hyper::Error, Option<Request<ProxyBody>>)>;

/// Sends one request and drives the connection until the response head arrives.
async fn exchange(mut link: Link, req: Request<ProxyBody>) -> Exchanged {
    let mut response = std::pin::pin!(link.sender.try_send_request(req));
    let mut link = Some(link);
    std::future::poll_fn(move |cx| {
        if let Some(l) = link.as_mut() {
            if Pin::new(&mut l.conn).poll(cx).is_ready() {
                // The connection is done (closed, or an error the response reports).
                link = None;
            }
        }
        match response.as_mut().poll(cx) {
            Poll::Ready(Ok(res)) => Poll::Ready(Ok((res, link.take()))),
            Poll::Ready(Err(mut e)) => {
                let unsent = e.take_message();
                Poll::Ready(Err((e.into_error(), unsent)))
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// The upstream's response body; polling it also drives the connection. When the body
/// has been read to the end the connection goes back to the pool; otherwise it closes.
struct PooledBody {
    body: Incoming,
    ended: bool,
    link: Option<Link>,
    pool: Option<(Arc<H1Pool>, Authority)>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(l) = self.link.as_mut() {
            if Pin::new(&mut l.conn).poll(cx).is_ready() {
                self.link = None;
            }
        }
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.ended = true;
        }
        frame.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if !(self.ended || self.body.is_end_stream()) {
            return; // not read to the end: the connection closes with `link`
        }
        if let (Some(link), Some((pool, authority))) = (self.link.take(), self.pool.take()) {
            pool.checkin(authority, link);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_have_tcp_keepalive_and_no_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stream = connect_tcp(&addr, Duration::from_secs(2)).await.unwrap();
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert!(socket.tcp_nodelay().unwrap());
    }
}
