//! `RequestState`: a request a JS handler works on, known to JS by id. Its body stays in
//! Rust until JS reads it (`readBody`); `forward` sends it upstream from the data plane
//! and keeps the upstream response (its body still streaming) for the handler's reply.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use tokio::runtime::Handle;
use velithon_core::balancer::LoadBalancer;
use velithon_core::body::{full, ProxyBody};
use velithon_core::proxy::{
    forward_balanced, ConnInfo, FirstPick, ForwardOptions, RetryPolicy, RouteTransforms,
};
use velithon_core::server::HandlerRequest;
use velithon_core::{ErrorCode, GatewayError};

use velithon_core::client::{UpstreamClient, UpstreamTransport};

use crate::client::millis;
use crate::latin1;

/// The request head, handed to JS once as positional arguments of the dispatch call
/// (plain values; no object whose property names V8 would have to intern).
pub struct RequestHead {
    pub method: String,
    /// Path and query exactly as sent.
    pub url: String,
    /// `name\nvalue\n…`, names lower-case, in the order sent.
    pub headers: String,
    /// Flat pairs of path parameters, raw.
    pub params: Vec<String>,
    pub client_address: String,
    pub client_port: u32,
    pub http_version: String,
}

impl RequestHead {
    pub fn new(req: &HandlerRequest) -> Self {
        let r = &req.request;
        let headers = latin1::joined(r.headers().iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
        let params = req
            .params
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect();
        Self {
            method: r.method().as_str().to_string(),
            url: r
                .uri()
                .path_and_query()
                .map_or_else(|| r.uri().path().to_string(), |pq| pq.as_str().to_string()),
            headers,
            params,
            client_address: req.conn.peer.ip().to_string(),
            client_port: u32::from(req.conn.peer.port()),
            http_version: format!("{:?}", r.version()),
        }
    }
}

enum BodyState {
    Streaming(ProxyBody),
    Buffered(Bytes),
    /// Streamed upstream by an earlier `forward`; it cannot be sent again.
    Sent,
}

pub struct RequestState {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    conn: Arc<ConnInfo>,
    body: tokio::sync::Mutex<BodyState>,
    forwarded: Mutex<Option<Response<ProxyBody>>>,
    /// The client's side of an `Upgrade` (WebSocket), for `forwardRequest` to pass on.
    on_upgrade: Mutex<Option<hyper::upgrade::OnUpgrade>>,
    runtime: Handle,
    max_body_size: usize,
}

impl RequestState {
    pub fn new(req: HandlerRequest, runtime: Handle, max_body_size: usize) -> Arc<Self> {
        let (mut parts, body) = req.request.into_parts();
        let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let body = if hyper::body::Body::is_end_stream(&body) {
            BodyState::Buffered(Bytes::new())
        } else {
            BodyState::Streaming(body)
        };
        Arc::new(Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            conn: req.conn,
            body: tokio::sync::Mutex::new(body),
            forwarded: Mutex::new(None),
            on_upgrade: Mutex::new(on_upgrade),
            runtime,
            max_body_size,
        })
    }

    pub(crate) fn take_forwarded(&self) -> Option<Response<ProxyBody>> {
        self.forwarded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    async fn read_body(&self) -> Result<Bytes, GatewayError> {
        let mut state = self.body.lock().await;
        match &mut *state {
            BodyState::Buffered(bytes) => Ok(bytes.clone()),
            BodyState::Sent => Err(GatewayError::new(
                ErrorCode::BadRequest,
                "the request body was already forwarded upstream; read it before forwarding",
            )),
            BodyState::Streaming(_) => {
                let BodyState::Streaming(body) = std::mem::replace(&mut *state, BodyState::Sent)
                else {
                    unreachable!("matched Streaming above")
                };
                let collected = collect_limited(body, self.max_body_size).await?;
                *state = BodyState::Buffered(collected.clone());
                Ok(collected)
            }
        }
    }

    /// The body for one upstream attempt: the buffered bytes, or the stream (once).
    async fn body_for_forward(&self) -> Result<ProxyBody, GatewayError> {
        let mut state = self.body.lock().await;
        match std::mem::replace(&mut *state, BodyState::Sent) {
            BodyState::Buffered(bytes) => {
                *state = BodyState::Buffered(bytes.clone());
                Ok(full(bytes))
            }
            BodyState::Streaming(body) => Ok(body),
            BodyState::Sent => Err(GatewayError::new(
                ErrorCode::BadRequest,
                "the request body was already forwarded once; read it with body() to forward it again",
            )),
        }
    }
}

/// Reads a whole body, failing with `VG_BODY_TOO_LARGE` past `limit` bytes.
async fn collect_limited(mut body: ProxyBody, limit: usize) -> Result<Bytes, GatewayError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            GatewayError::new(
                ErrorCode::BadRequest,
                format!("reading the request body failed: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(GatewayError::new(
                    ErrorCode::BodyTooLarge,
                    format!("the request body is larger than {limit} bytes"),
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// What a `forwardRequest` runs with besides its options.
pub struct ForwardPolicies {
    pub retry: Option<Arc<RetryPolicy>>,
    pub transforms: Option<Arc<RouteTransforms>>,
    pub metrics: Option<Arc<velithon_core::metrics::Metrics>>,
    /// Upstream TLS options and HTTP/2 (`None`: the client's defaults).
    pub transport: Option<Arc<UpstreamTransport>>,
}

#[napi(object)]
pub struct JsForwardOptions {
    /// A server URL the JS strategy chose ('' = it failed, fall back); absent: the
    /// balancer picks.
    pub server: Option<String>,
    pub timeout_ms: f64,
    /// Flat name/value pairs set on the upstream request.
    pub additional_headers: Vec<String>,
    pub preserve_host: bool,
}

/// The result of `readBody` (`body`) or `forward` (`status`, `headers`; the body stays
/// in Rust), or their error as `VG_CODE: message`. Sent to JS as positional arguments.
pub struct Completion {
    pub ok: bool,
    pub status: u32,
    /// `name\nvalue\n…`
    pub headers: String,
    pub body: Option<Buffer>,
    pub error: String,
}

impl Completion {
    fn failed(err: GatewayError) -> Self {
        Self {
            ok: false,
            status: 0,
            headers: String::new(),
            body: None,
            error: format!("{}: {}", err.code().as_str(), err.message()),
        }
    }
}

fn header_pairs(flat: &[String]) -> Result<Vec<(HeaderName, HeaderValue)>, GatewayError> {
    let bad = |why: String| GatewayError::new(ErrorCode::InvalidConfig, why);
    flat.chunks(2)
        .map(|pair| match pair {
            [name, value] => {
                let n = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| bad(format!("additionalHeaders: bad header name {name:?}")))?;
                let v = latin1::to_header_value(value)
                    .ok_or_else(|| bad(format!("additionalHeaders: bad value for {name:?}")))?;
                Ok((n, v))
            }
            _ => Err(bad("additionalHeaders must be name/value pairs".into())),
        })
        .collect()
}

type DoneFn = Box<dyn FnOnce(Completion) + Send>;

/// Delivers a completion exactly once: if the task is cancelled first (the data plane
/// stopped), JS still hears of it, so no `await` in a handler waits forever.
struct Done(Option<DoneFn>);

impl Done {
    fn send(mut self, completion: Completion) {
        if let Some(done) = self.0.take() {
            done(completion);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Completion::failed(GatewayError::new(
                ErrorCode::Internal,
                "the gateway stopped before this finished",
            )));
        }
    }
}

impl RequestState {
    /// Reads the whole body (at most `maxBodySize`) on the data plane; the result goes
    /// to `done`. A later `forward` sends the same bytes.
    pub fn start_read_body(self: Arc<Self>, done: impl FnOnce(Completion) + Send + 'static) {
        let runtime = self.runtime.clone();
        let done = Done(Some(Box::new(done)));
        runtime.spawn(async move {
            done.send(match self.read_body().await {
                Ok(bytes) => Completion {
                    ok: true,
                    status: 0,
                    headers: String::new(),
                    body: Some(Buffer::from(bytes.to_vec())),
                    error: String::new(),
                },
                Err(err) => Completion::failed(err),
            })
        });
    }

    /// Sends this request to one of `balancer`'s servers through `client` on the data
    /// plane; `done` gets the response head (the upstream response is kept for the
    /// handler's reply) or the error (502/503/504 kinds).
    pub fn start_forward(
        self: Arc<Self>,
        balancer: Arc<LoadBalancer>,
        client: Arc<UpstreamClient>,
        options: JsForwardOptions,
        policies: ForwardPolicies,
        done: impl FnOnce(Completion) + Send + 'static,
    ) {
        let runtime = self.runtime.clone();
        let done = Done(Some(Box::new(done)));
        runtime.spawn(async move {
            let forwarded = self.forward(&balancer, &client, options, policies).await;
            done.send(match forwarded {
                Ok(head) => head,
                Err(err) => Completion::failed(err),
            })
        });
    }

    async fn forward(
        &self,
        balancer: &Arc<LoadBalancer>,
        client: &UpstreamClient,
        options: JsForwardOptions,
        policies: ForwardPolicies,
    ) -> Result<Completion, GatewayError> {
        let ForwardPolicies {
            retry,
            transforms,
            metrics,
            transport,
        } = policies;
        let retry = retry.as_deref();
        let extra = header_pairs(&options.additional_headers)?;
        let mut req = Request::new(self.body_for_forward().await?);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        let on_upgrade = self
            .on_upgrade
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(on_upgrade) = on_upgrade {
            req.extensions_mut().insert(on_upgrade);
        }
        let opts = ForwardOptions {
            strip: None,
            preserve_host: options.preserve_host,
            timeout: millis(options.timeout_ms),
            extra_headers: &extra,
            transforms: transforms.as_deref(),
            metrics: metrics.as_deref(),
            transport: transport.as_deref(),
        };
        // A server the JS strategy chose; '' or an unknown one falls back.
        let first = match options.server.as_deref() {
            None => FirstPick::Balancer,
            Some(url) => FirstPick::Named(url),
        };
        let res = forward_balanced(balancer, client, req, &self.conn, &opts, retry, first).await?;
        let headers = latin1::joined(
            res.headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes())),
        );
        let status = u32::from(res.status().as_u16());
        *self.forwarded.lock().unwrap_or_else(|p| p.into_inner()) = Some(res);
        Ok(Completion {
            ok: true,
            status,
            headers,
            body: None,
            error: String::new(),
        })
    }
}
