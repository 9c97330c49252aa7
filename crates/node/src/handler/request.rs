//! `NativeRequest`: a request a JS handler holds. Its body stays in Rust until JS reads
//! it (`readBody`); `forward` sends it upstream from the data plane and keeps the
//! upstream response (its body still streaming) for the handler's reply.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use napi::bindgen_prelude::{Buffer, PromiseRaw};
use napi::Env;
use napi_derive::napi;
use tokio::runtime::Handle;
use velithon_core::balancer::PickContext;
use velithon_core::body::{full, ProxyBody};
use velithon_core::proxy::{send_upstream, ConnInfo, ForwardOptions};
use velithon_core::server::HandlerRequest;
use velithon_core::{ErrorCode, GatewayError};

use crate::balancer::NativeLoadBalancer;
use crate::client::{millis, NativeClient};
use crate::errors::{coded, to_napi};
use crate::latin1;

/// The request head, handed to JS once (one crossing, plain values).
#[napi(object)]
pub struct RequestHead {
    pub method: String,
    /// Path and query exactly as sent.
    pub url: String,
    pub path: String,
    pub query: String,
    /// Flat pairs, names lower-case, in the order sent.
    pub headers: Vec<String>,
    /// Flat pairs of path parameters, raw.
    pub params: Vec<String>,
    pub client_address: String,
    pub client_port: u32,
    pub http_version: String,
}

impl RequestHead {
    pub fn new(req: &HandlerRequest) -> Self {
        let r = &req.request;
        let mut headers = Vec::with_capacity(r.headers().len() * 2);
        for (name, value) in r.headers() {
            headers.push(name.as_str().to_string());
            headers.push(latin1::to_text(value.as_bytes()));
        }
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
            path: r.uri().path().to_string(),
            query: r.uri().query().unwrap_or("").to_string(),
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

pub(crate) struct RequestState {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    conn: Arc<ConnInfo>,
    body: tokio::sync::Mutex<BodyState>,
    forwarded: Mutex<Option<Response<ProxyBody>>>,
    runtime: Handle,
    max_body_size: usize,
}

impl RequestState {
    pub(crate) fn new(req: HandlerRequest, runtime: Handle, max_body_size: usize) -> Arc<Self> {
        let (parts, body) = req.request.into_parts();
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

/// The upstream response head `forward` resolves to; the body stays in Rust.
#[napi(object)]
pub struct ForwardedHead {
    pub status: u32,
    pub headers: Vec<String>,
}

#[napi]
pub struct NativeRequest {
    state: Arc<RequestState>,
}

impl NativeRequest {
    pub(crate) fn new(state: Arc<RequestState>) -> Self {
        Self { state }
    }
}

fn header_pairs(flat: &[String]) -> napi::Result<Vec<(HeaderName, HeaderValue)>> {
    flat.chunks(2)
        .map(|pair| match pair {
            [name, value] => {
                let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    coded(
                        ErrorCode::InvalidConfig,
                        &format!("additionalHeaders: bad header name {name:?}"),
                    )
                })?;
                let v = latin1::to_header_value(value).ok_or_else(|| {
                    coded(
                        ErrorCode::InvalidConfig,
                        &format!("additionalHeaders: bad value for {name:?}"),
                    )
                })?;
                Ok((n, v))
            }
            _ => Err(coded(
                ErrorCode::InvalidConfig,
                "additionalHeaders must be name/value pairs",
            )),
        })
        .collect()
}

#[napi]
impl NativeRequest {
    /// Reads the whole body (at most the app's `maxBodySize`, else `VG_BODY_TOO_LARGE`).
    /// A later `forward` sends the same bytes.
    #[napi(catch_unwind)]
    pub fn read_body<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Buffer>> {
        let state = self.state.clone();
        env.spawn_future(async move {
            let runtime = state.runtime.clone();
            let bytes = runtime
                .spawn(async move { state.read_body().await })
                .await
                .map_err(|e| coded(ErrorCode::Internal, &format!("body read task failed: {e}")))?
                .map_err(to_napi)?;
            Ok(Buffer::from(bytes.to_vec()))
        })
    }

    /// Sends this request to one of `balancer`'s servers through `client`; resolves to
    /// the response head, or rejects with a coded error (502/503/504 kinds).
    #[napi(catch_unwind)]
    pub fn forward<'env>(
        &self,
        env: &'env Env,
        balancer: &NativeLoadBalancer,
        client: &NativeClient,
        options: JsForwardOptions,
    ) -> napi::Result<PromiseRaw<'env, ForwardedHead>> {
        let extra = header_pairs(&options.additional_headers)?;
        let state = self.state.clone();
        let balancer = balancer.inner.clone();
        let client = client.inner.clone();
        let timeout = millis(options.timeout_ms);
        env.spawn_future(async move {
            let runtime = state.runtime.clone();
            let result = runtime
                .spawn(async move {
                    let ctx = PickContext {
                        method: &state.method,
                        path: state.uri.path(),
                        headers: &state.headers,
                        client: Some(state.conn.peer),
                    };
                    // A server the JS strategy chose; '' or an unknown one falls back.
                    let upstream = match options.server.as_deref() {
                        None => balancer.pick_async(&ctx).await?,
                        Some(url) => match balancer.servers().iter().find(|s| s.url() == url) {
                            Some(u) => u.clone(),
                            None => balancer.pick_fallback(&ctx)?,
                        },
                    };
                    let mut req = Request::new(state.body_for_forward().await?);
                    *req.method_mut() = state.method.clone();
                    *req.uri_mut() = state.uri.clone();
                    *req.version_mut() = state.version;
                    *req.headers_mut() = state.headers.clone();
                    let opts = ForwardOptions {
                        strip: None,
                        preserve_host: options.preserve_host,
                        timeout,
                        extra_headers: &extra,
                    };
                    let res = send_upstream(&upstream, &client, req, &state.conn, &opts).await?;
                    let mut headers = Vec::with_capacity(res.headers().len() * 2);
                    for (name, value) in res.headers() {
                        headers.push(name.as_str().to_string());
                        headers.push(latin1::to_text(value.as_bytes()));
                    }
                    let head = ForwardedHead {
                        status: u32::from(res.status().as_u16()),
                        headers,
                    };
                    *state.forwarded.lock().unwrap_or_else(|p| p.into_inner()) = Some(res);
                    Ok::<_, GatewayError>(head)
                })
                .await
                .map_err(|e| coded(ErrorCode::Internal, &format!("forward task failed: {e}")))?;
            result.map_err(to_napi)
        })
    }
}
