//! What a route changes in what passes through it, in one documented order.
//!
//! Request: client-sent identity headers are stripped; the request id is set when absent;
//! header rules (gateway, load balancer, route) apply in that order; then the JS header
//! functions; then path rules; then a JS body function. Response (the final attempt's
//! only): header rules in the reverse order (route, load balancer, gateway); then the JS
//! header functions; then a JS body function; the request id goes back to the client.
//! Static parts never enter JavaScript.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body as _;

use crate::body::{full, ProxyBody};
use crate::error::{ErrorCode, GatewayError};
use crate::transform::{HeaderRules, PathRules};

use super::latin1_pairs;

pub type TransformFuture<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

/// What a JS header function sees.
#[derive(Debug, Clone)]
pub struct HeaderCall {
    pub method: String,
    pub path: String,
    /// For responses, the status; 0 for requests.
    pub status: u16,
    /// Lower-case names, values as latin-1, in order.
    pub headers: Vec<(String, String)>,
}

/// A user's header functions (e.g. JS): the headers to set, as (name, value) pairs.
pub trait HeaderFunctions: Send + Sync + 'static {
    fn on_request(&self) -> bool;
    fn on_response(&self) -> bool;
    fn request(&self, call: HeaderCall) -> TransformFuture<Vec<(String, String)>>;
    fn response(&self, call: HeaderCall) -> TransformFuture<Vec<(String, String)>>;
}

/// A user's body function (e.g. JS): the new body.
pub trait BodyFunction: Send + Sync + 'static {
    fn transform(&self, body: Bytes, content_type: String) -> TransformFuture<Bytes>;
}

/// A body function and the bodies it applies to.
pub struct BodyStage {
    pub function: Arc<dyn BodyFunction>,
    /// Media types (`application/json`) or families (`text/`) it applies to; empty = all.
    pub content_types: Vec<String>,
    /// Larger bodies are refused: 413 on requests, 502 on responses.
    pub max_size: usize,
}

#[derive(Default)]
pub struct RouteTransforms {
    pub strip_incoming: Vec<HeaderName>,
    pub request_id: Option<HeaderName>,
    pub request_headers: Vec<HeaderRules>,
    pub path: Vec<PathRules>,
    pub response_headers: Vec<HeaderRules>,
    pub header_functions: Option<Arc<dyn HeaderFunctions>>,
    pub request_body: Option<BodyStage>,
    pub response_body: Option<BodyStage>,
}

/// What the request phase leaves for the response phase.
pub struct Applied {
    request_id: Option<HeaderValue>,
    method: http::Method,
    path: String,
}

impl RouteTransforms {
    pub fn is_empty(&self) -> bool {
        self.strip_incoming.is_empty()
            && self.request_id.is_none()
            && self.request_headers.iter().all(HeaderRules::is_empty)
            && self.path.iter().all(PathRules::is_empty)
            && self.response_headers.iter().all(HeaderRules::is_empty)
            && self.header_functions.is_none()
            && self.request_body.is_none()
            && self.response_body.is_none()
    }

    pub fn has_path_rules(&self) -> bool {
        self.path.iter().any(|p| !p.is_empty())
    }

    /// The request phase. Errors are the client's response (400 bad path or a body that
    /// did not arrive within `read_timeout`, 413 body too large, 500/504 a failing
    /// function).
    pub async fn apply_request(
        &self,
        req: Request<ProxyBody>,
        read_timeout: std::time::Duration,
    ) -> Result<(Request<ProxyBody>, Applied), GatewayError> {
        let (mut parts, body) = req.into_parts();
        strip_headers(&mut parts.headers, &self.strip_incoming);
        if self.response_body.is_some() {
            // A response body transformer needs bytes it can read: ask for no compression.
            parts.headers.remove(header::ACCEPT_ENCODING);
        }
        let request_id = self.request_id.as_ref().map(|name| {
            // A client's id is kept when it is a sane token (≤ 200 visible ASCII bytes);
            // anything else is replaced. Either way exactly one value goes upstream.
            let id = match parts.headers.get(name) {
                Some(v) if is_sane_id(v) => v.clone(),
                _ => new_request_id(),
            };
            parts.headers.insert(name.clone(), id.clone());
            id
        });
        let tag = |err: GatewayError| self.tag_error(err, request_id.as_ref());
        self.request_rest(parts, body, request_id.clone(), read_timeout)
            .await
            .map_err(tag)
    }

    /// Puts the request id on an error response too.
    pub fn tag_error(&self, err: GatewayError, id: Option<&HeaderValue>) -> GatewayError {
        match (&self.request_id, id) {
            (Some(name), Some(id)) => err.with_header(name.clone(), id.clone()),
            _ => err,
        }
    }

    /// The request id `applied` carries, to tag later errors with.
    pub fn tag_applied(&self, err: GatewayError, applied: &Applied) -> GatewayError {
        self.tag_error(err, applied.request_id.as_ref())
    }

    async fn request_rest(
        &self,
        mut parts: http::request::Parts,
        body: ProxyBody,
        request_id: Option<HeaderValue>,
        read_timeout: std::time::Duration,
    ) -> Result<(Request<ProxyBody>, Applied), GatewayError> {
        for rules in &self.request_headers {
            rules.apply(&mut parts.headers);
        }
        if let Some(functions) = self.header_functions.as_ref().filter(|f| f.on_request()) {
            let call = HeaderCall {
                method: parts.method.as_str().to_string(),
                path: parts.uri.path().to_string(),
                status: 0,
                headers: latin1_pairs(&parts.headers),
            };
            let set = functions.request(call).await.map_err(function_failed)?;
            set_pairs(&mut parts.headers, &set)?;
        }
        if !self.path.is_empty() {
            let mut path = parts.uri.path().to_string();
            for rules in &self.path {
                path = rules
                    .apply(&path)
                    .map(|p| single_leading_slash(p))
                    .map_err(|e| {
                        GatewayError::new(
                            ErrorCode::BadRequest,
                            format!("the request path cannot be forwarded: {e}"),
                        )
                    })?
                    .into_owned();
            }
            let pq = match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            let mut uri = http::uri::Parts::from(parts.uri.clone());
            uri.path_and_query = Some(pq.parse().map_err(|_| {
                GatewayError::new(
                    ErrorCode::BadRequest,
                    "the rewritten path is not a valid path",
                )
            })?);
            parts.uri = http::Uri::from_parts(uri).map_err(|_| {
                GatewayError::new(
                    ErrorCode::BadRequest,
                    "the rewritten path is not a valid path",
                )
            })?;
        }
        let applied = Applied {
            request_id,
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
        };
        // A request without a body (a GET) has nothing to transform.
        let body = match &self.request_body {
            Some(stage)
                if !body.is_end_stream()
                    && !is_encoded(&parts.headers)
                    && stage.applies_to(&parts.headers) =>
            {
                // Boxed, as every await off the common path: the request's future stays
                // small (it is moved, whole, at each level on every request).
                Box::pin(stage.run(body, &mut parts.headers, read_timeout, Side::Request)).await?
            }
            _ => body,
        };
        Ok((Request::from_parts(parts, body), applied))
    }

    /// The response phase, on the answer the client will get.
    pub async fn apply_response(
        &self,
        res: Response<ProxyBody>,
        applied: &Applied,
        read_timeout: std::time::Duration,
    ) -> Result<Response<ProxyBody>, GatewayError> {
        let (mut parts, body) = res.into_parts();
        for rules in self.response_headers.iter() {
            rules.apply(&mut parts.headers);
        }
        if let Some(functions) = self.header_functions.as_ref().filter(|f| f.on_response()) {
            let call = HeaderCall {
                method: applied.method.as_str().to_string(),
                path: applied.path.clone(),
                status: parts.status.as_u16(),
                headers: latin1_pairs(&parts.headers),
            };
            let set = functions.response(call).await.map_err(function_failed)?;
            set_pairs(&mut parts.headers, &set)?;
        }
        if let (Some(name), Some(id)) = (&self.request_id, &applied.request_id) {
            parts.headers.insert(name.clone(), id.clone());
        }
        // Bodies a transformer must not touch: none at all, partial (206), still
        // compressed, or an event stream that never ends.
        let untouchable = applied.method == http::Method::HEAD
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED
            || parts.status == StatusCode::PARTIAL_CONTENT
            || parts.status.is_informational()
            || body.is_end_stream()
            || is_encoded(&parts.headers)
            || content_type(&parts.headers)
                .to_ascii_lowercase()
                .starts_with("text/event-stream");
        let body = match &self.response_body {
            Some(stage) if !untouchable && stage.applies_to(&parts.headers) => {
                Box::pin(stage.run(body, &mut parts.headers, read_timeout, Side::Response)).await?
            }
            _ => body,
        };
        Ok(Response::from_parts(parts, body))
    }
}

/// Which body a stage works on: it decides what a failure is called.
#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

impl Side {
    fn late(self) -> GatewayError {
        match self {
            Side::Request => GatewayError::new(
                ErrorCode::BadRequest,
                "the request body did not arrive in time",
            ),
            Side::Response => GatewayError::new(
                ErrorCode::UpstreamTimeout,
                "the upstream response body did not arrive in time to be transformed",
            ),
        }
    }

    fn failed(self, why: Collect, limit: usize) -> GatewayError {
        match (self, why) {
            (Side::Request, Collect::TooLarge) => GatewayError::new(
                ErrorCode::BodyTooLarge,
                format!("the request body is larger than {limit} bytes"),
            ),
            (Side::Request, Collect::Broken(e)) => {
                GatewayError::new(ErrorCode::BadRequest, "the client's request body broke off")
                    .with_cause(e)
            }
            (Side::Response, Collect::TooLarge) => GatewayError::new(
                ErrorCode::UpstreamProtocol,
                format!(
                    "the upstream response body is larger than the transformer's {limit} bytes"
                ),
            ),
            (Side::Response, Collect::Broken(e)) => GatewayError::new(
                ErrorCode::UpstreamProtocol,
                "the upstream response body broke off",
            )
            .with_cause(e),
        }
    }
}

impl BodyStage {
    /// Reads `body` (bounded in size and time), runs the function, and returns the new
    /// body with `headers` framing it.
    async fn run(
        &self,
        body: ProxyBody,
        headers: &mut HeaderMap,
        read_timeout: std::time::Duration,
        side: Side,
    ) -> Result<ProxyBody, GatewayError> {
        let read = tokio::time::timeout(read_timeout, collect_limited(body, self.max_size))
            .await
            .map_err(|_| side.late())?;
        let bytes = read.map_err(|e| side.failed(e, self.max_size))?;
        let out = self
            .function
            .transform(bytes, content_type(headers))
            .await
            .map_err(function_failed)?;
        set_length(headers, out.len());
        Ok(full(out))
    }

    fn applies_to(&self, headers: &HeaderMap) -> bool {
        if self.content_types.is_empty() {
            return true;
        }
        let ct = content_type(headers);
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.content_types.iter().any(|t| {
            if t.ends_with('/') {
                media.starts_with(t.as_str())
            } else {
                media == *t
            }
        })
    }
}

/// `//host/x` would read as a host to an upstream resolving the path against a base
/// URL: after a rewrite, a path starts with exactly one '/'.
fn single_leading_slash(p: std::borrow::Cow<'_, str>) -> std::borrow::Cow<'_, str> {
    if p.starts_with("//") {
        std::borrow::Cow::Owned(format!("/{}", p.trim_start_matches('/')))
    } else {
        p
    }
}

/// Whether a body is compressed (or otherwise encoded): a transformer would see bytes it
/// cannot read, so such bodies pass untouched.
fn is_encoded(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

fn is_sane_id(v: &HeaderValue) -> bool {
    is_sane_id_bytes(v.as_bytes())
}

/// A request id worth keeping: 1 to 200 visible ASCII bytes.
pub(crate) fn is_sane_id_bytes(b: &[u8]) -> bool {
    !b.is_empty() && b.len() <= 200 && b.iter().all(|&c| (0x21..=0x7e).contains(&c))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

enum Collect {
    TooLarge,
    Broken(crate::body::BoxError),
}

async fn collect_limited(mut body: ProxyBody, limit: usize) -> Result<Bytes, Collect> {
    use hyper::body::Body as _;
    if body.size_hint().lower() > limit as u64 {
        return Err(Collect::TooLarge);
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Collect::Broken)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(Collect::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A failing user function: the client learns which kind of function failed, never
/// what it said (that goes to the gateway's `onError`).
fn function_failed(why: String) -> GatewayError {
    // The bridge words timeouts so; everything else is a failure.
    if why.contains("did not answer in time") {
        GatewayError::new(
            ErrorCode::CallbackTimeout,
            "a transformer did not answer in time",
        )
    } else {
        GatewayError::new(ErrorCode::CallbackFailed, "a transformer failed").with_cause(why)
    }
}

/// Sets headers a function returned; an empty value removes the header.
fn set_pairs(headers: &mut HeaderMap, pairs: &[(String, String)]) -> Result<(), GatewayError> {
    for (name, value) in pairs {
        let bad = |what: &str| {
            GatewayError::new(
                ErrorCode::CallbackFailed,
                format!("a header function returned {what} for {name:?}"),
            )
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("a bad header name"))?;
        if value.is_empty() {
            headers.remove(&name);
            continue;
        }
        let value =
            HeaderValue::from_str(value).map_err(|_| bad("a value with control characters"))?;
        headers.insert(name, value);
    }
    Ok(())
}

/// Removes `names` from `headers`. A request has few headers and most carry none of
/// the names, so one pass over the request's headers beats a lookup per name.
fn strip_headers(headers: &mut HeaderMap, names: &[HeaderName]) {
    if names.is_empty() {
        return;
    }
    let hits: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_stripped(k.as_str(), names))
        .cloned()
        .collect();
    for name in hits {
        headers.remove(&name);
    }
}

/// Whether `name` (lower case) is one of `names`. `x_user_id` is `X-User-Id` to
/// CGI-style servers (Rack, Puma < 6.4.3): those spellings are stripped too.
pub(crate) fn is_stripped(name: &str, names: &[HeaderName]) -> bool {
    names.iter().any(|n| {
        let n = n.as_str();
        name == n
            || (name.len() == n.len()
                && name
                    .bytes()
                    .zip(n.bytes())
                    .all(|(a, b)| a == b || (a == b'_' && b == b'-')))
    })
}

/// A random (version 4) UUID, as X-Request-ID values usually are.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hi = (fastrand::u64(..) & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let lo = (fastrand::u64(..) & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let mut out = [b'-'; 36];
    let mut pos = 0;
    for (i, nibble) in (0..32).map(|i| {
        let word = if i < 16 { hi } else { lo };
        (i, ((word >> (60 - 4 * (i % 16))) & 0xf) as usize)
    }) {
        if matches!(i, 8 | 12 | 16 | 20) {
            pos += 1; // the dash
        }
        out[pos] = HEX[nibble];
        pos += 1;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_v4_uuids_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
    }
}
