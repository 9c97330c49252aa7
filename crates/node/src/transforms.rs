//! `NativeTransforms`: a route's transformations (see `velithon_core::proxy::
//! RouteTransforms`), built from the facade's validated options, and the bridges to the
//! user's header and body functions (called only when the user gave one).

use std::sync::Arc;

use bytes::Bytes;
use napi::bindgen_prelude::{Buffer, FnArgs, Function, Unknown};
use napi_derive::napi;
use velithon_core::proxy::{
    BodyFunction, BodyStage, HeaderCall, HeaderFunctions, RouteTransforms, TransformFuture,
};
use velithon_core::transform::{HeaderRules, PathMapping, PathRewrite, PathRules};

use crate::callback::{CallbackError, JsCallback};
use crate::client::millis;
use crate::errors::invalid;

#[napi(object)]
pub struct HeaderRuleOptions {
    pub remove: Vec<String>,
    /// Flat name/value pairs.
    pub modify: Vec<String>,
    /// Flat name/value pairs.
    pub add: Vec<String>,
}

#[napi(object)]
pub struct PathMappingOptions {
    pub from: String,
    pub to: String,
    pub prefix: bool,
}

#[napi(object)]
pub struct PathRuleOptions {
    pub strip_prefix: Option<String>,
    pub add_prefix: Option<String>,
    pub mappings: Vec<PathMappingOptions>,
    pub rewrite_pattern: Option<String>,
    pub rewrite_replacement: Option<String>,
}

#[napi(object)]
pub struct BodyStageOptions {
    pub content_types: Vec<String>,
    pub max_size: f64,
}

#[napi(object)]
pub struct TransformOptions {
    pub strip_incoming: Vec<String>,
    pub request_id: Option<String>,
    pub request_headers: Vec<HeaderRuleOptions>,
    pub path: Vec<PathRuleOptions>,
    pub response_headers: Vec<HeaderRuleOptions>,
    /// The header function has request (and/or response) work.
    pub request_functions: bool,
    pub response_functions: bool,
    pub request_body: Option<BodyStageOptions>,
    pub response_body: Option<BodyStageOptions>,
}

/// `(token, phase (0 request, 1 response), method, path, status, headers "k\nv\n…")`;
/// JS answers `completeHeaders(token, ok, pairs, error)`.
pub type HeaderArgs = FnArgs<(u32, u32, String, String, u32, String)>;
/// `(token, phase, body, contentType)`; JS answers `completeBody(token, ok, body, error)`.
pub type BodyArgs = FnArgs<(u32, u32, Buffer, String)>;

type HeaderCallback = JsCallback<HeaderArgs, Vec<(String, String)>>;
type BodyCallback = JsCallback<BodyArgs, Bytes>;

#[napi]
pub struct NativeTransforms {
    pub(crate) inner: Arc<RouteTransforms>,
    headers: Option<Arc<HeaderCallback>>,
    body: Option<Arc<BodyCallback>>,
}

fn pairs(flat: &[String]) -> Vec<(String, String)> {
    flat.chunks_exact(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect()
}

fn header_rules(options: &[HeaderRuleOptions]) -> napi::Result<Vec<HeaderRules>> {
    options
        .iter()
        .map(|o| {
            HeaderRules::from_lists(&o.remove, &pairs(&o.modify), &pairs(&o.add))
                .map_err(|e| invalid(e.to_string()))
        })
        .collect()
}

fn path_rule(o: &PathRuleOptions) -> Result<PathRules, String> {
    let mappings = o
        .mappings
        .iter()
        .map(|m| PathMapping::new(&m.from, &m.to, m.prefix))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let rewrite = match (&o.rewrite_pattern, &o.rewrite_replacement) {
        (Some(p), Some(r)) => Some(PathRewrite::new(p, r).map_err(|e| e.to_string())?),
        _ => None,
    };
    PathRules::new(
        o.strip_prefix.as_deref(),
        mappings,
        rewrite,
        o.add_prefix.as_deref(),
    )
    .map_err(|e| e.to_string())
}

fn path_rules(options: &[PathRuleOptions]) -> napi::Result<Vec<PathRules>> {
    options
        .iter()
        .map(|o| path_rule(o).map_err(invalid))
        .collect()
}

/// Checks path rules as the data plane will build them: '' when they are fine, else why
/// not (the facade turns it into a ConfigError naming the option).
#[napi(catch_unwind)]
#[cfg_attr(test, allow(dead_code))]
pub fn check_path_rule(rule: PathRuleOptions) -> String {
    path_rule(&rule).err().unwrap_or_default()
}

impl NativeTransforms {
    /// The transformations for a route or forward; `None` when there is nothing to do,
    /// decided once here instead of on every request.
    pub(crate) fn active(&self) -> Option<Arc<RouteTransforms>> {
        (!self.inner.is_empty()).then(|| self.inner.clone())
    }
}

#[napi]
impl NativeTransforms {
    #[napi(constructor, catch_unwind)]
    pub fn new(
        options: TransformOptions,
        header_fn: Option<Function<'_, HeaderArgs, Unknown<'static>>>,
        body_fn: Option<Function<'_, BodyArgs, Unknown<'static>>>,
        timeout_ms: f64,
    ) -> napi::Result<Self> {
        let timeout = millis(timeout_ms);
        let headers = match header_fn {
            Some(f) => Some(Arc::new(JsCallback::new(f, "header transformer", timeout)?)),
            None => None,
        };
        let body = match body_fn {
            Some(f) => Some(Arc::new(JsCallback::new(f, "transformFunction", timeout)?)),
            None => None,
        };
        let strip_incoming = options
            .strip_incoming
            .iter()
            .map(|n| {
                http::HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                    invalid(format!("stripIncomingHeaders: {n:?} is not a header name"))
                })
            })
            .collect::<napi::Result<Vec<_>>>()?;
        let request_id = match &options.request_id {
            Some(n) => Some(
                http::HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| invalid(format!("requestId: {n:?} is not a header name")))?,
            ),
            None => None,
        };
        let stage = |o: &Option<BodyStageOptions>, cb: &Option<Arc<BodyCallback>>, phase: u32| {
            match (o, cb) {
                (Some(o), Some(cb)) => Some(BodyStage {
                    function: Arc::new(JsBody {
                        callback: cb.clone(),
                        phase,
                    }),
                    content_types: o
                        .content_types
                        .iter()
                        .map(|t| t.to_ascii_lowercase())
                        .collect(),
                    max_size: o.max_size.max(0.0) as usize,
                }),
                _ => None,
            }
        };
        let header_functions = headers.clone().and_then(|callback| {
            (options.request_functions || options.response_functions).then(|| {
                Arc::new(JsHeaders {
                    callback,
                    on_request: options.request_functions,
                    on_response: options.response_functions,
                }) as Arc<dyn HeaderFunctions>
            })
        });
        let inner = RouteTransforms {
            strip_incoming,
            request_id,
            request_headers: header_rules(&options.request_headers)?,
            path: path_rules(&options.path)?,
            response_headers: header_rules(&options.response_headers)?,
            header_functions,
            request_body: stage(&options.request_body, &body, 0),
            response_body: stage(&options.response_body, &body, 1),
        };
        Ok(Self {
            inner: Arc::new(inner),
            headers,
            body,
        })
    }

    /// The header function's answer: flat name/value pairs to set ('' removes).
    #[napi(catch_unwind)]
    pub fn complete_headers(
        &self,
        token: u32,
        ok: bool,
        pairs_flat: Vec<String>,
        error: String,
    ) -> bool {
        let value = if ok {
            Ok(pairs(&pairs_flat))
        } else {
            Err(error)
        };
        self.headers
            .as_ref()
            .is_some_and(|cb| cb.complete(token, value))
    }

    /// The body function's answer.
    #[napi(catch_unwind)]
    pub fn complete_body(&self, token: u32, ok: bool, body: Option<Buffer>, error: String) -> bool {
        let value = if ok {
            Ok(body.map_or_else(Bytes::new, |b| Bytes::from(b.to_vec())))
        } else {
            Err(error)
        };
        self.body
            .as_ref()
            .is_some_and(|cb| cb.complete(token, value))
    }
}

fn callback_error(option: &str, err: CallbackError) -> String {
    match err {
        CallbackError::Failed(why) => format!("the {option} failed: {why}"),
        CallbackError::Timeout => format!("the {option} did not answer in time"),
        CallbackError::Closing => format!("the {option} cannot be called: Node is shutting down"),
    }
}

struct JsHeaders {
    callback: Arc<HeaderCallback>,
    on_request: bool,
    on_response: bool,
}

impl JsHeaders {
    fn call(&self, phase: u32, call: HeaderCall) -> TransformFuture<Vec<(String, String)>> {
        let callback = self.callback.clone();
        Box::pin(async move {
            let joined = call
                .headers
                .iter()
                .flat_map(|(k, v)| [k.as_str(), v.as_str()])
                .collect::<Vec<_>>()
                .join("\n");
            callback
                .call(|token| {
                    FnArgs::from((
                        token,
                        phase,
                        call.method,
                        call.path,
                        u32::from(call.status),
                        joined,
                    ))
                })
                .await
                .map_err(|e| callback_error("header transformer", e))
        })
    }
}

impl HeaderFunctions for JsHeaders {
    fn on_request(&self) -> bool {
        self.on_request
    }
    fn on_response(&self) -> bool {
        self.on_response
    }
    fn request(&self, call: HeaderCall) -> TransformFuture<Vec<(String, String)>> {
        self.call(0, call)
    }
    fn response(&self, call: HeaderCall) -> TransformFuture<Vec<(String, String)>> {
        self.call(1, call)
    }
}

struct JsBody {
    callback: Arc<BodyCallback>,
    phase: u32,
}

impl BodyFunction for JsBody {
    fn transform(&self, body: Bytes, content_type: String) -> TransformFuture<Bytes> {
        let callback = self.callback.clone();
        let phase = self.phase;
        Box::pin(async move {
            callback
                .call(|token| {
                    FnArgs::from((token, phase, Buffer::from(body.to_vec()), content_type))
                })
                .await
                .map_err(|e| callback_error("transformFunction", e))
        })
    }
}
