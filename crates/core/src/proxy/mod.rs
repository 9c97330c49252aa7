//! Forwarding: one request in, one upstream request out, the response streamed back.
//! Nothing is buffered: the client's body is the upstream request's body and the
//! upstream's body is the client response's body.

mod attempts;
mod headers;
mod replay;
mod retry;
mod transforms;
mod trust;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use hyper::upgrade::OnUpgrade;

pub(crate) use attempts::{count_lease_error, outcome_of_error, record_attempt_status};
pub use attempts::{forward_balanced, FirstPick};
pub(crate) use headers::is_hop_by_hop_name;
pub use headers::{latin1_pairs, normalize_length, remove_hop_by_hop, set_forwarded};
pub use replay::Replay;
pub use retry::{is_idempotent, AttemptReport, DecideFuture, RetryDecider, RetryPolicy};
pub(crate) use transforms::{is_sane_id_bytes, is_stripped};
pub use transforms::{
    new_request_id, Applied, BodyFunction, BodyStage, HeaderCall, HeaderFunctions, RouteTransforms,
    TransformFuture,
};
pub use trust::{ConnInfo, TrustedProxies};
pub use upgrade::Tunnel;

use crate::balancer::{LoadBalancer, Upstream};
use crate::body::ProxyBody;
use crate::client::{UpstreamClient, UpstreamTransport};
use crate::error::{ErrorCode, GatewayError};
use crate::router::Pattern;
use crate::transform::has_dot_segment;

/// Everything a proxy route needs to forward.
pub struct ProxyRoute {
    pub balancer: Arc<LoadBalancer>,
    pub client: Arc<UpstreamClient>,
    /// Remove the part of the path before `{…:path}`.
    pub strip_path: bool,
    /// Send the client's `Host` instead of the upstream's.
    pub preserve_host: bool,
    /// How long to wait for the upstream's response head (all attempts together).
    pub timeout: Duration,
    /// Retries; `None` sends each request once.
    pub retry: Option<Arc<RetryPolicy>>,
    /// Header, path and body transformations; `None` changes nothing (never `Some` of empty ones).
    pub transforms: Option<Arc<RouteTransforms>>,
    /// Where attempts, retries and rejections are counted (set when the app has metrics).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Upstream TLS options and HTTP/2 (`None`: the client's defaults).
    pub transport: Option<Arc<UpstreamTransport>>,
}

/// How one request is sent to one upstream server.
#[derive(Clone, Copy)]
pub struct ForwardOptions<'a> {
    /// Strip the part of the path before this pattern's `{…:path}` (stripPath).
    pub strip: Option<&'a Pattern>,
    pub preserve_host: bool,
    pub timeout: Duration,
    /// Headers set on the upstream request after the proxy's own (replacing same names).
    pub extra_headers: &'a [(HeaderName, HeaderValue)],
    /// Transformations around the attempts (`None`: nothing to change).
    pub transforms: Option<&'a RouteTransforms>,
    /// Where attempts, retries and rejections are counted.
    pub metrics: Option<&'a crate::metrics::Metrics>,
    /// Upstream TLS options and HTTP/2 (`None`: the client's defaults).
    pub transport: Option<&'a UpstreamTransport>,
}

/// Forwards `req` as a pure route says. Errors become the client's response (502/503/504).
pub async fn forward(
    route: &ProxyRoute,
    pattern: &Pattern,
    req: Request<ProxyBody>,
    conn: &ConnInfo,
) -> Response<ProxyBody> {
    let transforms = route.transforms.as_deref();
    // With path rules, stripPath comes first: the rules see the path after the strip.
    let (req, strip) = match (route.strip_path, transforms) {
        (true, Some(t)) if t.has_path_rules() => match strip_now(req, pattern) {
            Ok(req) => (req, None),
            Err(err) => return err.to_response(),
        },
        (strip, _) => (req, strip.then_some(pattern)),
    };
    let options = ForwardOptions {
        strip,
        preserve_host: route.preserve_host,
        timeout: route.timeout,
        extra_headers: &[],
        transforms,
        metrics: route.metrics.as_deref(),
        transport: route.transport.as_deref(),
    };
    forward_balanced(
        &route.balancer,
        &route.client,
        req,
        conn,
        &options,
        route.retry.as_deref(),
        FirstPick::Balancer,
    )
    .await
    .unwrap_or_else(|err| err.to_response())
}

/// The request with the part of its path before `{…:path}` removed (query kept).
fn strip_now(
    req: Request<ProxyBody>,
    pattern: &Pattern,
) -> Result<Request<ProxyBody>, GatewayError> {
    let (mut parts, body) = req.into_parts();
    let path = pattern.strip(parts.uri.path());
    let pq = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut uri = http::uri::Parts::from(parts.uri.clone());
    uri.path_and_query = Some(pq.parse().map_err(|_| {
        GatewayError::new(
            ErrorCode::BadRequest,
            "the request path cannot be forwarded",
        )
    })?);
    parts.uri = http::Uri::from_parts(uri).map_err(|_| {
        GatewayError::new(
            ErrorCode::BadRequest,
            "the request path cannot be forwarded",
        )
    })?;
    Ok(Request::from_parts(parts, body))
}

/// Sends one request to `upstream` and returns the response head, its body streaming.
pub async fn send_upstream(
    upstream: &Upstream,
    client: &UpstreamClient,
    req: Request<ProxyBody>,
    conn: &ConnInfo,
    options: &ForwardOptions<'_>,
) -> Result<Response<ProxyBody>, GatewayError> {
    let (mut parts, body) = req.into_parts();
    // An upgrade (WebSocket) keeps the client's side of the switch, to join it to the
    // upstream's once both have switched.
    let upgrade = upgrade::requested(parts.version, &parts.headers)
        .and_then(|protocol| Some((protocol, parts.extensions.remove::<OnUpgrade>()?)));
    // A `.` or `..` segment (also percent-encoded) would let the upstream resolve the
    // path outside what the route forwards (`/api/../admin`): refused, as Envoy does with
    // path normalisation on. Other paths pass byte for byte.
    if has_dot_segment(parts.uri.path()) {
        return Err(GatewayError::new(
            ErrorCode::BadRequest,
            "the request path has a '.' or '..' segment",
        ));
    }
    let path = match options.strip {
        Some(pattern) => pattern.strip(parts.uri.path()),
        None => parts.uri.path(),
    };
    let uri = upstream.uri_for(path, parts.uri.query()).map_err(|e| {
        GatewayError::new(
            ErrorCode::BadRequest,
            "the request path cannot be forwarded",
        )
        .with_cause(e)
    })?;

    // The Host the client asked for: the header (HTTP/1) or the :authority (HTTP/2).
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers, true);
    set_forwarded(headers, conn, original_host.clone());
    let host = match (options.preserve_host, original_host) {
        (true, Some(h)) => h,
        _ => upstream.host_header().clone(),
    };
    headers.insert(header::HOST, host);
    for (name, value) in options.extra_headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some((protocol, _)) = &upgrade {
        headers.insert(header::UPGRADE, protocol.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }

    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body);

    // Waiting for a connection slot has its own bound (connectionPoolTimeout, 503); the
    // route timeout counts from there. An `http2: true` upstream takes none: its requests
    // share one multiplexed connection (an upgrade still opens a connection of its own).
    let multiplexed = upgrade.is_none() && options.transport.is_some_and(|t| t.http2());
    let slot = match multiplexed {
        true => None,
        false => client.acquire(upstream.authority().as_str()).await?,
    };
    if let Some((offered, client_side)) = upgrade {
        // Boxed: rare, and the plain request's future should not carry its size.
        let sent = Box::pin(client.send_upgrade(upstream_req, options.transport));
        let res = tokio::time::timeout(options.timeout, sent)
            .await
            .map_err(|_| no_answer_in(options.timeout))??;
        let idle = client.settings().upgrade_idle_timeout;
        return upgrade::answer(res, &offered, client_side, slot, idle);
    }
    let sent = client.send_via(slot, upstream_req, options.transport);
    let mut res = match tokio::time::timeout(options.timeout, sent).await {
        Ok(res) => res?,
        Err(_) => return Err(no_answer_in(options.timeout)),
    };
    if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // Nobody asked (a plain request, or HTTP/1.0): the connection is lost to
        // whatever the upstream switched to.
        return Err(GatewayError::new(
            ErrorCode::UpstreamProtocol,
            "the upstream switched protocols on a request that did not ask to",
        ));
    }
    normalize_length(res.headers_mut());
    remove_hop_by_hop(res.headers_mut(), false);
    Ok(res)
}

pub(crate) fn no_answer_in(timeout: Duration) -> GatewayError {
    GatewayError::new(
        ErrorCode::UpstreamTimeout,
        format!(
            "the upstream did not answer within {} ms",
            timeout.as_millis()
        ),
    )
}
