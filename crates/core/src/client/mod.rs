//! The pooled upstream client: hyper-util's legacy client over a rustls-capable
//! connector, with keep-alive pooling, a connect timeout and an optional cap on
//! concurrent connections per upstream host.

mod alpn_gate;
mod connector;
mod h1_pool;
mod idle_stacks;
mod limit;
mod raw_pool;

pub use raw_pool::{RawConn, RawPool};
mod tls;
mod tls_error;
mod transport;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;

use crate::body::ProxyBody;
use crate::error::{ErrorCode, GatewayError};

use limit::HostLimits;

pub use tls::default_http1_tls;
pub use transport::{TransportOptions, UpstreamTransport};

/// Pool and timeout settings; the names follow the public options.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// How long a TCP (and TLS) connect may take.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept (`keepAliveTimeout`).
    pub keep_alive_timeout: Duration,
    /// Idle connections kept per upstream host (`connectionPoolSize`).
    pub max_idle_per_host: usize,
    /// Concurrent connections allowed per upstream host (`maxConnectionsPerHost`);
    /// `None` is unlimited, as undici's default.
    pub max_connections_per_host: Option<usize>,
    /// How long a request waits for a connection slot when the cap is reached
    /// (`connectionPoolTimeout`).
    pub pool_timeout: Duration,
    /// How long an upgraded connection (a WebSocket) may pass no bytes either way
    /// before the gateway closes it (`upgradeIdleTimeout`).
    pub upgrade_idle_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            max_idle_per_host: 100,
            max_connections_per_host: None,
            pool_timeout: Duration::from_secs(30),
            upgrade_idle_timeout: Duration::from_secs(60),
        }
    }
}

type Connector = connector::Connector;

pub struct UpstreamClient {
    /// Plain-HTTP/1.1 upstreams: connections driven inline by the forwarding task.
    h1: Arc<h1_pool::H1Pool>,
    /// Plain-HTTP/1.1 upstreams of the listener's fast lane (its own wire code).
    raw: raw_pool::RawPool,
    /// HTTPS (and HTTP/2 by ALPN) upstreams.
    inner: Client<Connector, ProxyBody>,
    /// One connection first to an HTTPS host, until ALPN told its protocol.
    alpn: alpn_gate::AlpnGate,
    limits: Option<HostLimits>,
    settings: ClientSettings,
}

impl UpstreamClient {
    /// Builds the client. No runtime is needed here: connections are spawned on the
    /// runtime that sends the request.
    pub fn new(settings: ClientSettings) -> Self {
        // TCP keepalive; the whole TCP + TLS connect bounded by connect_timeout.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls::default_client_config())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector::http_connector(&settings));
        let connector = connector::timed(https, settings.connect_timeout);
        // Under a connection cap, idle connections beyond it would break the cap.
        let max_idle = settings
            .max_connections_per_host
            .map_or(settings.max_idle_per_host, |cap| {
                cap.min(settings.max_idle_per_host)
            });
        // The pool settings, HTTP/2 keep-alive pings (h2 by ALPN).
        let inner =
            connector::client_builder(&settings, connector::H2_PING_INTERVAL).build(connector);
        let limits = settings.max_connections_per_host.map(HostLimits::new);
        let h1 = h1_pool::H1Pool::new(
            max_idle,
            settings.keep_alive_timeout,
            settings.connect_timeout,
        );
        let raw = raw_pool::RawPool::new(
            max_idle,
            settings.keep_alive_timeout,
            settings.connect_timeout,
        );
        let alpn = alpn_gate::AlpnGate::new(settings.keep_alive_timeout, settings.connect_timeout);
        Self {
            h1,
            raw,
            inner,
            alpn,
            limits,
            settings,
        }
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Idle keep-alive connections per plain-HTTP upstream host (`host:port`).
    pub fn idle_connections(&self) -> Vec<(String, usize)> {
        let mut counts = self.h1.idle_counts();
        for (host, n) in self.raw.idle_counts() {
            match counts.iter_mut().find(|(h, _)| *h == host) {
                Some((_, total)) => *total += n,
                None => counts.push((host, n)),
            }
        }
        counts.sort();
        counts
    }

    /// The connections of the listener's fast lane (plain HTTP/1.1).
    pub fn raw_pool(&self) -> &raw_pool::RawPool {
        &self.raw
    }

    /// Waits (at most `connectionPoolTimeout`) for a connection slot to `authority` when
    /// `maxConnectionsPerHost` is set. Hold the slot while the request is in flight.
    pub async fn acquire(&self, authority: &str) -> Result<Option<ConnectionSlot>, GatewayError> {
        match &self.limits {
            Some(limits) => Ok(Some(ConnectionSlot(
                limits
                    .acquire(authority, self.settings.pool_timeout)
                    .await?,
            ))),
            None => Ok(None),
        }
    }

    /// Sends a request and returns the response head, its body still streaming.
    /// Errors are classified: connect failures, connect timeouts, broken connections.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, GatewayError> {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let slot = self.acquire(&authority).await?;
        self.send_with(slot, req).await
    }

    /// `send_with` under a route's transport (TLS options, HTTP/2): `https://` requests,
    /// and `http://` ones when it speaks HTTP/2, go through the transport's own pool;
    /// the rest (and everything without a transport) as `send_with`.
    pub async fn send_via(
        &self,
        slot: Option<ConnectionSlot>,
        req: Request<ProxyBody>,
        transport: Option<&UpstreamTransport>,
    ) -> Result<Response<ProxyBody>, GatewayError> {
        match transport {
            // Boxed: the plain-HTTP future below stays small (see `send_with`).
            Some(t) if t.handles(req.uri()) => Ok(hold_slot(slot, Box::pin(t.send(req)).await?)),
            _ => self.send_with(slot, req).await,
        }
    }

    /// Sends a request on a slot from `acquire`; the slot is held until the response body
    /// is done or dropped.
    pub async fn send_with(
        &self,
        slot: Option<ConnectionSlot>,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, GatewayError> {
        let res = if req.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
            // A shared-bytes clone, no allocation: the pool's key.
            let Some(authority) = req.uri().authority().cloned() else {
                return Err(GatewayError::new(
                    ErrorCode::Internal,
                    "upstream URI has no authority",
                ));
            };
            let mut req = req;
            // HTTP/1 on the wire: the origin form, `/path?query`.
            *req.uri_mut() = h1_pool::origin_form(req.uri());
            self.h1.send(authority, req).await?
        } else {
            // Boxed: hyper-util's client future is large, and the plain-HTTP/1 path
            // above, taken by most requests, would carry its size (futures are moved
            // whole on every request).
            Box::pin(self.alpn.send(&self.inner, req))
                .await
                .map_err(classify)?
                .map(box_incoming)
        };
        Ok(hold_slot(slot, res))
    }
}

/// Keeps `slot` until the response body is done or dropped.
fn hold_slot(slot: Option<ConnectionSlot>, res: Response<ProxyBody>) -> Response<ProxyBody> {
    match slot {
        Some(slot) => res.map(|body| {
            body.map_frame(move |frame| {
                let _held = &slot;
                frame
            })
            .map_err(Into::into)
            .boxed_unsync()
        }),
        None => res,
    }
}

/// A slot under `maxConnectionsPerHost`; dropping it frees the slot.
pub struct ConnectionSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

fn box_incoming(body: Incoming) -> ProxyBody {
    crate::body::boxed(body)
}

/// Maps a client error to the gateway's error codes.
pub fn classify(err: hyper_util::client::legacy::Error) -> GatewayError {
    // A TLS failure, at connect or (TLS 1.3 client certificates) at the first read.
    if let Some(tls) = tls_error::tls_failure_at(&err, err.is_connect()) {
        return tls.with_cause(err);
    }
    if err.is_connect() {
        if has_timeout_cause(&err) {
            return GatewayError::new(
                ErrorCode::UpstreamTimeout,
                "connecting to the upstream timed out",
            )
            .with_cause(err);
        }
        return GatewayError::new(
            ErrorCode::UpstreamConnect,
            "could not connect to the upstream",
        )
        .with_cause(err);
    }
    let ours = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<hyper::Error>())
        .is_some_and(hyper::Error::is_user);
    if ours {
        return client_body_error(err);
    }
    GatewayError::new(
        ErrorCode::UpstreamProtocol,
        "the upstream connection failed before a response arrived",
    )
    .with_cause(err)
}

/// The client's request body failed while it was sent upstream (the client went away
/// mid-upload): the client's doing, so breakers and retries leave it alone.
pub(crate) fn client_body_error(
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> GatewayError {
    GatewayError::new(
        ErrorCode::BadRequest,
        "the client's request body broke off before it was sent",
    )
    .with_cause(cause)
}

fn has_timeout_cause(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = e.source();
    }
    false
}
