//! An app's middleware from the facade: metrics (and `/metrics`), rate limiting, trace
//! context and the request collector. Built once at `setMiddleware`, installed at listen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::{FnArgs, Function, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use tokio::sync::mpsc;
use velithon_core::ratelimit::{FailMode, Limit, MemoryStore, RateLimiter, RedisStore, Store};
use velithon_core::server::{
    KeyCall, KeyFunction, KeyFuture, Middleware, RateKey, RateLimitStage, RequestObserver,
    RequestSummary,
};

use crate::callback::JsCallback;
use crate::client::millis;
use crate::errors::invalid;
use crate::metrics::{gauges, NativeMetrics};

#[napi(object)]
pub struct RateLimitOptions {
    pub requests_per_minute: Option<u32>,
    pub requests_per_hour: Option<u32>,
    pub burst: u32,
    /// 'ip', 'header:<name>' or 'function'.
    pub key: String,
    pub redis_url: Option<String>,
    /// When Redis fails: true lets requests through, false refuses them.
    pub fail_open: bool,
    pub redis_timeout_ms: f64,
    pub key_timeout_ms: f64,
}

#[napi(object)]
pub struct MiddlewareOptions {
    pub metrics: bool,
    pub metrics_path: Option<String>,
    pub traceparent: bool,
    pub rate_limit: Option<RateLimitOptions>,
    /// Summaries queued for the collector before new ones are dropped (and counted).
    pub collector_queue: u32,
    /// Summaries per collector call, at most.
    pub collector_batch: u32,
}

/// `(token, method, path, headers "k\nv\n…", client)`; JS answers `completeKey(token, key)`.
pub type KeyArgs = FnArgs<(u32, String, String, String, String)>;
type KeyCallback = JsCallback<KeyArgs, String>;
/// `(json)`: a JSON array of request summaries.
pub type CollectArgs = FnArgs<(String,)>;
type Collector =
    ThreadsafeFunction<CollectArgs, Unknown<'static>, CollectArgs, Status, false, true>;

pub struct Built {
    pub middleware: Middleware,
    pub key: Option<Arc<KeyCallback>>,
    pub dropped: Arc<AtomicU64>,
    /// One batch at a time in JS: JS gives the permit back with `collectorDone()`.
    pub collector_turn: Arc<tokio::sync::Semaphore>,
    /// The task that hands summaries to JS, to spawn on the data plane at listen.
    pub deliver: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

pub fn build(
    options: MiddlewareOptions,
    metrics: &NativeMetrics,
    key_fn: Option<Function<'_, KeyArgs, Unknown<'static>>>,
    collector: Option<Function<'_, CollectArgs, Unknown<'static>>>,
) -> napi::Result<Built> {
    let mut key = None;
    let rate_limit = match options.rate_limit {
        None => None,
        Some(o) => {
            let mut limits = Vec::new();
            if let Some(n) = o.requests_per_minute {
                limits.push(Limit {
                    rate: n,
                    period: Duration::from_secs(60),
                    burst: o.burst,
                });
            }
            if let Some(n) = o.requests_per_hour {
                limits.push(Limit {
                    rate: n,
                    period: Duration::from_secs(3600),
                    burst: o.burst,
                });
            }
            if limits.is_empty() {
                return Err(invalid(
                    "a rate limit needs requestsPerMinute or requestsPerHour",
                ));
            }
            let store = match &o.redis_url {
                Some(url) => Store::Redis(
                    RedisStore::new(url)
                        .map(|s| s.with_timeout(millis(o.redis_timeout_ms)))
                        .map_err(|e| invalid(format!("store.redis: {e}")))?,
                ),
                None => Store::Memory(MemoryStore::new()),
            };
            let fail = if o.fail_open {
                FailMode::Open
            } else {
                FailMode::Closed
            };
            let rate_key = match o.key.split_once(':') {
                Some(("header", name)) => RateKey::Header(
                    http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| invalid(format!("key: {name:?} is not a header name")))?,
                ),
                _ if o.key == "function" => {
                    let f = key_fn.ok_or_else(|| invalid("keyFunction is missing"))?;
                    let cb = Arc::new(JsCallback::new(f, "keyFunction", millis(o.key_timeout_ms))?);
                    key = Some(cb.clone());
                    RateKey::Function(Arc::new(JsKey { callback: cb }))
                }
                _ => RateKey::ClientIp,
            };
            Some(RateLimitStage {
                limiter: Arc::new(RateLimiter::new(limits, store, fail)),
                key: rate_key,
            })
        }
    };
    let dropped = Arc::new(AtomicU64::new(0));
    let turn = Arc::new(tokio::sync::Semaphore::new(1));
    let mut deliver_task = None;
    let observer = match collector {
        None => None,
        Some(f) => {
            let tsfn: Collector = f
                .build_threadsafe_function::<CollectArgs>()
                .callee_handled::<false>()
                .weak::<true>()
                .build()?;
            let (tx, rx) = mpsc::channel(options.collector_queue.max(1) as usize);
            deliver_task = Some(Box::pin(deliver(
                rx,
                tsfn,
                options.collector_batch.max(1) as usize,
                turn.clone(),
            ))
                as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>);
            Some(Arc::new(QueueObserver {
                tx,
                dropped: dropped.clone(),
            }) as Arc<dyn RequestObserver>)
        }
    };
    let balancers = metrics.balancers.clone();
    let clients = metrics.clients.clone();
    Ok(Built {
        middleware: Middleware {
            metrics: options.metrics.then(|| metrics.inner.clone()),
            metrics_path: options.metrics_path,
            gauges: Some(Arc::new(move || gauges(&balancers, &clients))),
            rate_limit,
            traceparent: options.traceparent,
            observer,
            rate_limited: AtomicU64::new(0),
        },
        key,
        dropped,
        collector_turn: turn,
        deliver: deliver_task,
    })
}

struct JsKey {
    callback: Arc<KeyCallback>,
}

impl KeyFunction for JsKey {
    fn key(&self, call: KeyCall) -> KeyFuture {
        let callback = self.callback.clone();
        Box::pin(async move {
            let headers = call
                .headers
                .iter()
                .flat_map(|(k, v)| [k.as_str(), v.as_str()])
                .collect::<Vec<_>>()
                .join("\n");
            match callback
                .call(|token| FnArgs::from((token, call.method, call.path, headers, call.client)))
                .await
            {
                Ok(k) if !k.is_empty() => Some(k),
                _ => None,
            }
        })
    }
}

/// Queues summaries for the collector; never waits: a full queue drops and counts.
struct QueueObserver {
    tx: mpsc::Sender<RequestSummary>,
    dropped: Arc<AtomicU64>,
}

impl RequestObserver for QueueObserver {
    fn observe(&self, summary: RequestSummary) {
        if self.tx.try_send(summary).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends queued summaries to JS in batches, one batch in JS at a time: while JS works
/// on one, summaries queue up (to `collectorQueue`, then they are dropped and counted),
/// so a slow collector never slows the data plane.
async fn deliver(
    mut rx: mpsc::Receiver<RequestSummary>,
    tsfn: Collector,
    batch: usize,
    turn: Arc<tokio::sync::Semaphore>,
) {
    let mut buf = Vec::with_capacity(batch);
    loop {
        // JS's turn first: while it works on a batch, summaries wait in the channel
        // (at most `collectorQueue`), never in this buffer.
        match turn.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
        if rx.recv_many(&mut buf, batch).await == 0 {
            return;
        }
        // Whatever queued while JS was busy goes in this batch too.
        while buf.len() < batch {
            match rx.try_recv() {
                Ok(s) => buf.push(s),
                Err(_) => break,
            }
        }
        let json: Vec<serde_json::Value> = buf
            .drain(..)
            .map(|s| {
                serde_json::json!({
                    "method": s.method,
                    "path": s.path,
                    "route": s.route,
                    "status": s.status,
                    "durationMs": s.duration.as_secs_f64() * 1000.0,
                    "client": s.client,
                    "requestHeaders": s.request_headers,
                    "responseHeaders": s.response_headers,
                })
            })
            .collect();
        let text = serde_json::Value::Array(json).to_string();
        if tsfn.call(
            FnArgs::from((text,)),
            ThreadsafeFunctionCallMode::NonBlocking,
        ) != Status::Ok
        {
            return;
        }
    }
}
