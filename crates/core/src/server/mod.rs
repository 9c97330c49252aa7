//! The listener: accepts TCP connections (optionally TLS), serves HTTP/1.1 and HTTP/2
//! (hyper-util's auto builder: over TLS as negotiated by ALPN, in cleartext by the
//! client's first bytes) and dispatches each request through the router. `shutdown`
//! stops accepting, lets in-flight requests finish within a bound, then closes what is
//! left.

mod dispatch;
mod fast_lane;
mod first_read;
mod handler;
mod idle;
mod middleware;
mod panic_guard;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use dispatch::{App, RouteAction};
pub use handler::{HandlerRequest, RequestHandler, ResponseFuture};
pub use middleware::{
    ensure_traceparent, KeyCall, KeyFunction, KeyFuture, Middleware, RateKey, RateLimitStage,
    RequestObserver, RequestSummary,
};
pub use tls::ListenerTls;

use crate::error::{ErrorCode, GatewayError};
use crate::proxy::{ConnInfo, TrustedProxies};
use first_read::FirstReadDeadline;
use idle::{StreamGuard, Streams};

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// How long a client may take to send a request head (slowloris guard); it also
    /// bounds how long an idle HTTP/1 keep-alive connection is kept.
    pub request_header_timeout: Duration,
    pub trusted_proxies: TrustedProxies,
    /// Serve HTTPS with this certificate (reloadable while running); `None` = plain HTTP.
    pub tls: Option<Arc<ListenerTls>>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            request_header_timeout: Duration::from_secs(30),
            trusted_proxies: TrustedProxies::default(),
            tls: None,
        }
    }
}

/// A running listener. Dropping it without `shutdown` closes it at once.
pub struct RunningServer {
    local_addr: SocketAddr,
    tls: Option<Arc<ListenerTls>>,
    stop: Option<oneshot::Sender<Duration>>,
    finished: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Binds `addr` and starts serving on the current tokio runtime.
    pub async fn bind(
        addr: SocketAddr,
        app: Arc<App>,
        settings: ServerSettings,
    ) -> Result<Self, GatewayError> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            GatewayError::new(ErrorCode::Bind, format!("cannot listen on {addr}: {e}"))
                .with_cause(e)
        })?;
        let local_addr = listener.local_addr().map_err(|e| {
            GatewayError::new(ErrorCode::Bind, "cannot read the bound address").with_cause(e)
        })?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let tls = settings.tls.clone();
        let finished = tokio::spawn(accept_loop(listener, app, settings, stop_rx));
        Ok(Self {
            local_addr,
            tls,
            stop: Some(stop_tx),
            finished: Some(finished),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listener's TLS settings, to `reload` its certificate; `None` for plain HTTP.
    pub fn tls(&self) -> Option<Arc<ListenerTls>> {
        self.tls.clone()
    }

    /// Stops accepting at once; in-flight requests get `grace` to finish, then their
    /// connections are closed. Resolves when every connection is gone.
    pub async fn shutdown(&mut self, grace: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(grace);
        }
        if let Some(finished) = self.finished.take() {
            let _ = finished.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Duration::ZERO);
        }
    }
}

/// Serves one connection until it ends, the listener is forced closed, or `graceful` is
/// cancelled (shutdown started, or the connection went idle as HTTP/2): then it answers
/// what is in flight and closes. Three branches only: this runs on every wake-up of the
/// connection's task.
macro_rules! drive {
    ($conn:expr, $graceful:expr, $force_close:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let ended = tokio::select! {
            _ = conn.as_mut() => true,
            _ = $force_close.cancelled() => true,
            _ = $graceful.cancelled() => {
                conn.as_mut().graceful_shutdown();
                false
            }
        };
        if !ended {
            tokio::select! {
                _ = conn => {}
                _ = $force_close.cancelled() => {}
            }
        }
        // Ends the idle watcher, if any.
        $graceful.cancel();
    }};
}

/// For a connection that is or may be HTTP/2: a task that asks it to close gracefully
/// once no stream has been open for `idle` (ends with the connection).
fn watch_idle(streams: Arc<Streams>, graceful: CancellationToken, idle: Duration) {
    tokio::spawn(async move {
        tokio::select! {
            _ = streams.idle_for(idle) => graceful.cancel(),
            _ = graceful.cancelled() => {}
        }
    });
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    settings: ServerSettings,
    mut stop: oneshot::Receiver<Duration>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.request_header_timeout)
        .keep_alive(true);
    // HTTP/2 has no head timeout: pings find dead peers and idle connections.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    // Cancelled when shutdown starts: every connection finishes what is in flight and
    // closes (HTTP/1: after the response; HTTP/2: GOAWAY).
    let draining = CancellationToken::new();
    let force_close = CancellationToken::new();
    let connections = TaskTracker::new();
    let trusted = Arc::new(settings.trusted_proxies);
    // What every request of this listener uses, behind one `Arc` (one clone per request).
    let serving = Arc::new(Serving {
        app,
        tunnels: Tunnels {
            tracker: connections.clone(),
            stop: force_close.clone(),
        },
    });

    let grace = loop {
        let accepted = tokio::select! {
            biased;
            grace = &mut stop => break grace.unwrap_or(Duration::ZERO),
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(_) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn_info = Arc::new(ConnInfo::new(
            peer,
            settings.tls.is_some(),
            trusted.contains(peer.ip()),
        ));
        let lane = settings
            .tls
            .is_none()
            .then(|| (serving.clone(), conn_info.clone()));
        let serving = serving.clone();
        let streams = Streams::new(false);
        let service_streams = streams.clone();
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            // HTTP/2 streams are counted, so an idle connection can be closed.
            let stream = (req.version() == http::Version::HTTP_2).then(|| service_streams.begin());
            // The guard is outermost: one future, not a guard beside what it guards
            // (hyper moves it whole into the connection on every request).
            panic_guard::PanicGuard::new(answer(serving.clone(), conn_info.clone(), req, stream))
        });
        let builder = builder.clone();
        let force_close = force_close.clone();
        // Cancelled by shutdown (a child of `draining`) or by the idle watcher.
        let graceful = draining.child_token();
        let first_byte_timeout = settings.request_header_timeout;
        if let Some(tls) = &settings.tls {
            let acceptor = tls.acceptor();
            connections.spawn(async move {
                // The handshake and the first bytes of a request must come within the
                // request-head timeout (slowloris); a failed handshake closes the socket.
                let deadline = tokio::time::Instant::now() + first_byte_timeout;
                let stream = tokio::select! {
                    done = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => match done {
                        Ok(Ok(stream)) => stream,
                        _ => return,
                    },
                    _ = force_close.cancelled() => return,
                };
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    streams.mark_h2();
                    watch_idle(streams, graceful.clone(), first_byte_timeout);
                }
                let io = TokioIo::new(FirstReadDeadline::new(stream, deadline));
                let conn = builder.serve_connection_with_upgrades(io, service);
                drive!(conn, graceful, force_close);
            });
            continue;
        }
        connections.spawn(async move {
            // HTTP/1.1 GETs on pure routes are served by the fast lane; the first request
            // it does not serve (or an HTTP/2 preface) hands the connection to hyper with
            // the bytes read so far. The lane bounds each request head by the
            // request-head timeout (slowloris), the first one included.
            let mut stream = stream;
            let Some((lane_serving, lane_conn)) = lane else {
                return; // made for every plain-HTTP connection
            };
            let served = fast_lane::serve(
                &mut stream,
                &lane_serving.app,
                &lane_conn,
                first_byte_timeout,
                &graceful,
            );
            let read = tokio::select! {
                end = served => end,
                _ = force_close.cancelled() => return,
            };
            let read = match read {
                fast_lane::LaneEnd::Closed => return,
                fast_lane::LaneEnd::HandOff(read) => read,
            };
            // The HTTP/2 preface starts with `P` (so do POST, PUT and PATCH: their
            // watcher never finds an HTTP/2 stream, so it never acts).
            if read.first() == Some(&b'P') {
                watch_idle(streams, graceful.clone(), first_byte_timeout);
            }
            let io = TokioIo::new(fast_lane::Prefixed::new(read, stream));
            let conn = builder.serve_connection_with_upgrades(io, service);
            drive!(conn, graceful, force_close);
        });
    };
    drop(listener);
    draining.cancel();
    let deadline = tokio::time::Instant::now() + grace;
    // Resolve only once every connection task has dropped its socket. Tunnels (upgraded
    // connections) are tracked too: they get what is left of the grace, then are cut.
    connections.close();
    if tokio::time::timeout_at(deadline, connections.wait())
        .await
        .is_err()
    {
        force_close.cancel();
        connections.wait().await;
    }
}

/// One request's answer: dispatched through the app, its tunnel started if it switched
/// protocols, an HTTP/2 stream counted open until its body ends.
async fn answer(
    serving: Arc<Serving>,
    conn_info: Arc<ConnInfo>,
    req: http::Request<hyper::body::Incoming>,
    stream: Option<StreamGuard>,
) -> http::Response<crate::body::ProxyBody> {
    let mut res = serving.app.dispatch(req, &conn_info).await;
    serving.tunnels.start_if_switching(&mut res);
    if let Some(stream) = stream {
        res = res.map(|body| {
            http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_frame(
                body,
                move |frame| {
                    let _open = &stream;
                    frame
                },
            ))
        });
    }
    res
}

struct Serving {
    app: Arc<App>,
    tunnels: Tunnels,
}

/// Where a listener's tunnels run: tracked with its connections, cut by its forced close.
struct Tunnels {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tunnels {
    /// Starts the tunnel of a final `101` (an upgrade the upstream accepted). A tunnel
    /// whose 101 was replaced by another answer is dropped, closing the upstream side.
    fn start_if_switching(&self, res: &mut http::Response<crate::body::ProxyBody>) {
        if let Some(tunnel) = crate::proxy::Tunnel::take_from(res) {
            if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                self.tracker.spawn(tunnel.run(self.stop.clone()));
            }
        }
    }
}
