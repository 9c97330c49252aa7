//! Forwarding: one request in, one upstream request out, the response streamed back.
//! Nothing is buffered: the client's body is the upstream request's body and the
//! upstream's body is the client response's body.

mod headers;
mod trust;

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, Version};

pub use headers::{remove_hop_by_hop, set_forwarded};
pub use trust::{ConnInfo, TrustedProxies};

use crate::balancer::{LoadBalancer, PickContext};
use crate::body::ProxyBody;
use crate::client::UpstreamClient;
use crate::error::{ErrorCode, GatewayError};
use crate::router::Pattern;

/// Everything a proxy route needs to forward.
pub struct ProxyRoute {
    pub balancer: Arc<LoadBalancer>,
    pub client: Arc<UpstreamClient>,
    /// Remove the part of the path before `{…:path}`.
    pub strip_path: bool,
    /// Send the client's `Host` instead of the upstream's.
    pub preserve_host: bool,
    /// How long to wait for the upstream's response head.
    pub timeout: Duration,
}

/// Forwards `req` as `route` says. Errors become the client's response (502/503/504).
pub async fn forward(
    route: &ProxyRoute,
    pattern: &Pattern,
    req: Request<ProxyBody>,
    conn: &ConnInfo,
) -> Response<ProxyBody> {
    match try_forward(route, pattern, req, conn).await {
        Ok(res) => res,
        Err(err) => err.to_response(),
    }
}

async fn try_forward(
    route: &ProxyRoute,
    pattern: &Pattern,
    req: Request<ProxyBody>,
    conn: &ConnInfo,
) -> Result<Response<ProxyBody>, GatewayError> {
    let (mut parts, body) = req.into_parts();
    let upstream = route.balancer.pick(&PickContext {
        method: &parts.method,
        path: parts.uri.path(),
        headers: &parts.headers,
        client: Some(conn.peer),
    })?;

    let path = if route.strip_path {
        pattern.strip(parts.uri.path())
    } else {
        parts.uri.path()
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
    let host = match (route.preserve_host, original_host) {
        (true, Some(h)) => h,
        _ => HeaderValue::from_str(upstream.authority().as_str()).map_err(|e| {
            GatewayError::new(ErrorCode::Internal, "bad upstream authority").with_cause(e)
        })?,
    };
    headers.insert(header::HOST, host);

    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body);

    let mut res = match tokio::time::timeout(route.timeout, route.client.send(upstream_req)).await {
        Ok(res) => res?,
        Err(_) => {
            return Err(GatewayError::new(
                ErrorCode::UpstreamTimeout,
                format!(
                    "the upstream did not answer within {} ms",
                    route.timeout.as_millis()
                ),
            ))
        }
    };
    remove_hop_by_hop(res.headers_mut(), false);
    Ok(res)
}
