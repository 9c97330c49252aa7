//! The listener's HTTP/1.1 fast lane, for plain-HTTP connections. The commonest request
//! of a gateway, a GET on a pure proxy route, is served here from the client's bytes to
//! the upstream's and back: one parse of each head (httparse), no header maps, no hyper
//! connection state, pooled upstream sockets, the body passed through as it is framed.
//! It keeps what the general path does for such a request: the route, the balancer's
//! lease with its breaker and in-flight count, `maxConnectionsPerHost`, the route
//! timeout, the same header rewriting, request ids, the same error responses and
//! metrics. The first request the lane does not serve ([`request`] says which) hands the
//! connection, with every byte read so far, to the general path (hyper and the full
//! pipeline) for the rest of its life.

mod chunked;
mod prefixed;
mod request;
mod response;

pub use prefixed::Prefixed;

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http::{HeaderName, HeaderValue};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::dispatch::App;
use crate::balancer::Upstream;
use crate::client::{ConnectionSlot, RawConn, RawPool};
use crate::error::{ErrorCode, GatewayError};
use crate::metrics::{Metrics, RouteId};
use crate::proxy::{no_answer_in, outcome_of_error, record_attempt_status, ConnInfo, ProxyRoute};
use chunked::ChunkScanner;
use request::{Next, Plan};
use response::{Framing, Head, Parsed};

/// hyper's read buffer limit (`8 KiB + 100 × 4 KiB`): a request head that does not fit
/// goes to the general path (which answers 431), a response head that does not is a 502,
/// as there.
const MAX_HEAD: usize = 8192 + 4096 * 100;

/// How the lane left a connection.
pub enum LaneEnd {
    /// Closed (the client went, the head timed out, the listener is draining, or an
    /// answer ended it).
    Closed,
    /// The general path serves it from here; these bytes were read and not served.
    HandOff(BytesMut),
}

/// Serves requests on `stream` until one is not for the lane. A request head must
/// arrive within `head_timeout` (slowloris; it also bounds an idle keep-alive wait).
/// Once `graceful` is cancelled no new request is read.
pub async fn serve(
    stream: &mut TcpStream,
    app: &App,
    conn: &ConnInfo,
    head_timeout: Duration,
    graceful: &CancellationToken,
) -> LaneEnd {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    // Grown by the first request the lane serves (a connection handed off at once, as
    // HTTP/2 or a POST, never needs them).
    let mut upstream_head = Vec::new();
    let mut out = Vec::new();
    loop {
        if graceful.is_cancelled() {
            return LaneEnd::Closed; // draining: no new request (hyper does the same)
        }
        let deadline = tokio::time::Instant::now() + head_timeout;
        let plan = loop {
            if !buf.is_empty() {
                match request::plan(&buf, app, conn, &mut upstream_head) {
                    Next::Fast(plan) => break plan,
                    Next::General => return LaneEnd::HandOff(buf),
                    Next::Partial if buf.len() >= MAX_HEAD => return LaneEnd::HandOff(buf),
                    Next::Partial => {}
                }
            }
            buf.reserve(4 * 1024);
            let read = tokio::select! {
                biased;
                _ = graceful.cancelled() => return LaneEnd::Closed,
                read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => read,
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return LaneEnd::Closed,
            }
        };
        buf.advance(plan.head_len);
        // With a pipelined request already read, the client's side is not watched for
        // its close (a client may send its requests, then shut its side), as hyper.
        let watch = buf.is_empty();
        let open = exchange(stream, app, plan, &upstream_head, &mut out, graceful, watch).await;
        if !open {
            return LaneEnd::Closed;
        }
    }
}

/// One request: its answer written to the client. Says whether the connection may
/// serve another.
async fn exchange(
    client: &mut TcpStream,
    app: &App,
    plan: Plan<'_>,
    upstream_head: &[u8],
    out: &mut Vec<u8>,
    graceful: &CancellationToken,
    watch: bool,
) -> bool {
    let started = Instant::now();
    let closing = Closing {
        asked: plan.close,
        graceful,
    };
    let recorder = Recorder {
        metrics: app.middleware().metrics.as_deref(),
        route: app.route_id(plan.route_index),
        started,
    };
    let request_id = plan.request_id;
    let lease = match plan.lease {
        Ok(lease) => lease,
        Err(err) => return reply_error(client, err, request_id, &closing, recorder, out).await,
    };
    let route = plan.route;
    let upstream = lease.upstream().clone();
    let sent = send(
        route,
        &upstream,
        upstream_head,
        out,
        request_id.as_ref(),
        &closing,
    );
    let Some(sent) = unless_client_leaves(client, sent, watch).await else {
        // Dropping the attempt closes its upstream connection (the request may still
        // be running there) and ends the lease.
        return false;
    };
    let (up, head, slot) = match sent {
        Ok(sent) => sent,
        Err(err) => {
            record_attempt_status(route.metrics.as_deref(), &upstream, 0, started);
            drop(lease.finish(outcome_of_error(err.code())));
            return reply_error(client, err, request_id, &closing, recorder, out).await;
        }
    };
    record_attempt_status(route.metrics.as_deref(), &upstream, head.status, started);
    let in_flight = lease.finish(route.balancer.outcomes_of_status(head.status));
    recorder.record(head.status);
    let relayed = relay_body(
        client,
        up,
        &head,
        out,
        route.client.raw_pool(),
        &upstream,
        watch,
    )
    .await;
    // The server's in-flight count and the connection slot last until the body is done.
    drop(in_flight);
    drop(slot);
    relayed && !closing.now()
}

/// Whether the answer ends the connection: the client asked, or the listener is
/// draining (decided when the answer's head is written, as hyper does).
struct Closing<'a> {
    asked: bool,
    graceful: &'a CancellationToken,
}

impl Closing<'_> {
    fn now(&self) -> bool {
        self.asked || self.graceful.is_cancelled()
    }
}

/// Runs `work` unless the client closes its connection first (`None`). Bytes from the
/// client (a pipelined request) end the watch; they are read later.
async fn unless_client_leaves<T>(
    client: &TcpStream,
    work: impl std::future::Future<Output = T>,
    watch: bool,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    let mut watching = watch;
    loop {
        tokio::select! {
            biased;
            done = &mut work => return Some(done),
            left = client_left(client), if watching => match left {
                true => return None,
                false => watching = false,
            },
        }
    }
}

/// Waits until the client's side is readable: `true` if it closed (or failed).
async fn client_left(client: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    !matches!(client.peek(&mut byte).await, Ok(n) if n > 0)
}

/// The request-level metrics of the general path (`App::dispatch`).
#[derive(Clone, Copy)]
struct Recorder<'a> {
    metrics: Option<&'a Metrics>,
    route: Option<RouteId>,
    started: Instant,
}

impl Recorder<'_> {
    fn record(&self, status: u16) {
        if let Some(m) = self.metrics {
            m.record(self.route, status, self.started.elapsed());
        }
    }
}

type Sent = (RawConn, Head, Option<ConnectionSlot>);

/// Takes a connection slot, then within the route timeout: a connection, the request
/// head written, the response head read (the client's written into `out`).
async fn send(
    route: &ProxyRoute,
    upstream: &Upstream,
    upstream_head: &[u8],
    out: &mut Vec<u8>,
    request_id: Option<&(&HeaderName, HeaderValue)>,
    closing: &Closing<'_>,
) -> Result<Sent, GatewayError> {
    let slot = route.client.acquire(upstream.authority().as_str()).await?;
    let pool = route.client.raw_pool();
    let exchange = async {
        let mut conn = pool.get(upstream.authority()).await?;
        loop {
            match write_and_read_head(&mut conn, upstream_head, out, request_id, closing).await {
                Ok(head) => return Ok((conn, head)),
                // A pooled connection the upstream closed meanwhile (nothing came back):
                // the request goes once more on a new one, as NGINX does for a GET.
                Err(Failure::Stale) if conn.reused => {
                    conn = pool.connect(upstream.authority()).await?;
                }
                Err(Failure::Stale) => return Err(broke_off()),
                Err(Failure::Bad) => return Err(bad_response()),
            }
        }
    };
    match tokio::time::timeout(route.timeout, exchange).await {
        Ok(Ok((conn, head))) => Ok((conn, head, slot)),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(no_answer_in(route.timeout)),
    }
}

enum Failure {
    /// The connection failed before any byte of a response came back.
    Stale,
    /// The upstream's answer cannot be passed on.
    Bad,
}

async fn write_and_read_head(
    conn: &mut RawConn,
    upstream_head: &[u8],
    out: &mut Vec<u8>,
    request_id: Option<&(&HeaderName, HeaderValue)>,
    closing: &Closing<'_>,
) -> Result<Head, Failure> {
    conn.buf.clear();
    if conn.stream.write_all(upstream_head).await.is_err() {
        return Err(Failure::Stale);
    }
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            match response::parse(&conn.buf, out, request_id, closing.now()) {
                Parsed::Head(head) => return Ok(head),
                Parsed::Interim(n) => {
                    conn.buf.advance(n);
                    continue;
                }
                Parsed::Partial if conn.buf.len() >= MAX_HEAD => return Err(Failure::Bad),
                Parsed::Partial => {}
                Parsed::Bad => return Err(Failure::Bad),
            }
        }
        conn.buf.reserve(8 * 1024);
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(n) if n > 0 => answered = true,
            _ if answered => return Err(Failure::Bad),
            _ => return Err(Failure::Stale),
        }
    }
}

/// Writes the client's head (in `out`) and the body as the upstream frames it. A
/// connection whose response was read to its end goes back to the pool. Says whether
/// the client's connection is still sound. A client that leaves while the upstream is
/// quiet (a long poll, an event stream) ends it at once: the upstream connection, the
/// in-flight count and the slot are freed, as hyper does.
async fn relay_body(
    client: &mut TcpStream,
    mut up: RawConn,
    head: &Head,
    out: &mut Vec<u8>,
    pool: &RawPool,
    upstream: &Upstream,
    watch: bool,
) -> bool {
    up.buf.advance(head.len);
    let mut watch = watch;
    let done = match head.framing {
        Framing::Empty => client.write_all(out).await.is_ok(),
        Framing::Length(length) => {
            let mut left = length;
            loop {
                let take = (left.min(up.buf.len() as u64)) as usize;
                left -= take as u64;
                if emit(client, out, &up.buf[..take]).await.is_err() {
                    return false;
                }
                up.buf.advance(take);
                if left == 0 {
                    break true;
                }
                // The upstream broke off (or the client left): so does the answer.
                if read_more(client, &mut up, &mut watch).await != Read::More {
                    return false;
                }
            }
        }
        Framing::Chunked => {
            let mut scanner = ChunkScanner::new();
            loop {
                if up.buf.is_empty() {
                    // What is gathered goes out before waiting for more.
                    if emit(client, out, &[]).await.is_err() {
                        return false;
                    }
                    if read_more(client, &mut up, &mut watch).await != Read::More {
                        return false;
                    }
                }
                let Ok(step) = scanner.feed(&up.buf) else {
                    return false;
                };
                out.extend_from_slice(&up.buf[..step.forward]);
                up.buf.advance(step.consumed);
                if step.done {
                    // The last chunk's CRLF (its trailers are not passed on), in the
                    // same write.
                    out.extend_from_slice(b"\r\n");
                    break emit(client, out, &[]).await.is_ok();
                }
            }
        }
        Framing::UntilClose => loop {
            // Re-framed as chunks: the client's connection outlives the upstream's.
            if !up.buf.is_empty() {
                use std::io::Write;
                let _ = write!(out, "{:x}\r\n", up.buf.len());
                out.extend_from_slice(&up.buf);
                out.extend_from_slice(b"\r\n");
                up.buf.clear();
            }
            if emit(client, out, &[]).await.is_err() {
                return false;
            }
            match read_more(client, &mut up, &mut watch).await {
                Read::More => {}
                Read::End => {
                    // The upstream closed: the body is complete (not reusable).
                    return client.write_all(b"0\r\n\r\n").await.is_ok();
                }
                Read::Failed => return false,
            }
        },
    };
    if done && head.keep_alive {
        pool.checkin(upstream.authority(), up);
    }
    done
}

/// Writes `out` (when it holds something) followed by `piece`, in one write when
/// there is a head to go first; `out` is left empty.
async fn emit(client: &mut TcpStream, out: &mut Vec<u8>, piece: &[u8]) -> std::io::Result<()> {
    if out.is_empty() {
        if piece.is_empty() {
            return Ok(());
        }
        return client.write_all(piece).await;
    }
    out.extend_from_slice(piece);
    let written = client.write_all(out).await;
    out.clear();
    written
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    More,
    /// The upstream closed its connection.
    End,
    /// A read error, or the client left.
    Failed,
}

/// Reads more of the upstream's body, unless the client closes its side first. Bytes
/// from the client (a pipelined request) end the watch (`watch`); they are read later.
async fn read_more(client: &TcpStream, up: &mut RawConn, watch: &mut bool) -> Read {
    up.buf.reserve(16 * 1024);
    loop {
        tokio::select! {
            biased;
            read = up.stream.read_buf(&mut up.buf) => return match read {
                Ok(0) => Read::End,
                Ok(_) => Read::More,
                Err(_) => Read::Failed,
            },
            left = client_left(client), if *watch => match left {
                true => return Read::Failed,
                false => *watch = false,
            },
        }
    }
}

/// The general path's error response (JSON body), the request id on it.
async fn reply_error(
    client: &mut TcpStream,
    err: GatewayError,
    request_id: Option<(&HeaderName, HeaderValue)>,
    closing: &Closing<'_>,
    recorder: Recorder<'_>,
    out: &mut Vec<u8>,
) -> bool {
    let close = closing.now();
    let err = match request_id {
        Some((name, id)) => err.with_header(name.clone(), id),
        None => err,
    };
    let (parts, body) = err.to_response().into_parts();
    recorder.record(parts.status.as_u16());
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\ndate: ", body.len()).as_bytes());
    response::with_date(|d| out.extend_from_slice(d));
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    let written = client.write_all(out).await.is_ok();
    out.clear();
    written && !close
}

fn broke_off() -> GatewayError {
    GatewayError::new(
        ErrorCode::UpstreamProtocol,
        "the upstream connection failed before a response arrived",
    )
}

fn bad_response() -> GatewayError {
    GatewayError::new(
        ErrorCode::UpstreamProtocol,
        "the upstream's response could not be read as HTTP/1.1",
    )
}
