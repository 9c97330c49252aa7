//! `NativeApp`: the routes of one `Velithon` app and, while it listens, the data
//! plane's runtime and listener. `listen` and `close` return Promises; the Node thread
//! never waits on the data plane.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use http::Method;
use napi_derive::napi;
use velithon_core::error::ErrorCode;
use velithon_core::proxy::{ProxyRoute, TrustedProxies};
use velithon_core::router::Router;
use velithon_core::server::{
    App, ListenerTls, Middleware, RouteAction, RunningServer, ServerSettings,
};

use napi::bindgen_prelude::{Buffer, Function, Unknown};

use crate::balancer::NativeLoadBalancer;
use crate::callback::{JsCallback, Registry};
use crate::client::{millis, NativeClient};
use crate::data_plane::DataPlane;
use crate::errors::{coded, invalid, to_napi};
use crate::handler::{
    CompleteArgs, DispatchArgs, ForwardPolicies, HandlerBridge, HandlerReply, JsForwardOptions,
    JsRouteHandler,
};
use crate::metrics::NativeMetrics;
use crate::middleware::{
    build as build_middleware, Built, CollectArgs, KeyArgs, MiddlewareOptions,
};
use crate::retry::NativeRetryPolicy;
use crate::transforms::NativeTransforms;
use crate::transport::NativeTransport;

#[napi(object)]
pub struct AppOptions {
    /// Data-plane worker threads; 0 means one per core.
    pub worker_threads: u32,
    pub request_header_timeout_ms: f64,
    pub trusted_proxies: Vec<String>,
    /// How long a JS handler may take to answer (504 after).
    pub handler_timeout_ms: f64,
    /// The most a JS handler may read of a request body (413 beyond).
    pub max_body_size: u32,
}

type PendingRoute = (String, Option<Vec<Method>>, RouteSpec);

/// A route as added, before the data plane exists.
enum RouteSpec {
    Proxy(ProxyRoute),
    Handler { route_id: u32 },
}

#[napi(object)]
pub struct ProxyRouteOptions {
    pub strip_path: bool,
    pub preserve_host: bool,
    pub timeout_ms: f64,
}

/// The listener's certificate chain and private key, PEM (HTTPS when given).
#[napi(object)]
pub struct ListenTls {
    pub cert: Buffer,
    pub key: Buffer,
}

#[napi(object)]
pub struct ListenInfo {
    pub host: String,
    pub port: u32,
}

struct Running {
    runtime: DataPlane,
    server: RunningServer,
}

#[napi]
pub struct NativeApp {
    worker_threads: usize,
    settings: ServerSettings,
    handler_timeout: std::time::Duration,
    max_body_size: usize,
    /// Routes as added; `None` once the app listens.
    routes: Mutex<Option<Vec<PendingRoute>>>,
    handlers: OnceLock<Arc<HandlerBridge>>,
    running: Arc<Mutex<Option<Running>>>,
    /// Set by `setMiddleware`, installed at listen.
    middleware: Mutex<Option<Built>>,
    key: OnceLock<Arc<crate::callback::JsCallback<KeyArgs, String>>>,
    collector_turn: OnceLock<Arc<tokio::sync::Semaphore>>,
    collector_dropped: OnceLock<Arc<std::sync::atomic::AtomicU64>>,
    /// The app's metrics once it listens (for `forwardRequest`).
    metrics: OnceLock<Arc<velithon_core::metrics::Metrics>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[napi]
impl NativeApp {
    #[napi(constructor, catch_unwind)]
    pub fn new(options: AppOptions) -> napi::Result<Self> {
        let trusted_proxies = TrustedProxies::parse(&options.trusted_proxies).map_err(invalid)?;
        let worker_threads = match options.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        Ok(Self {
            worker_threads,
            settings: ServerSettings {
                request_header_timeout: millis(options.request_header_timeout_ms),
                trusted_proxies,
                tls: None,
            },
            handler_timeout: millis(options.handler_timeout_ms),
            max_body_size: options.max_body_size as usize,
            routes: Mutex::new(Some(Vec::new())),
            handlers: OnceLock::new(),
            running: Arc::new(Mutex::new(None)),
            middleware: Mutex::new(None),
            key: OnceLock::new(),
            collector_turn: OnceLock::new(),
            collector_dropped: OnceLock::new(),
            metrics: OnceLock::new(),
        })
    }

    /// The app's middleware (metrics, rate limit, trace context, collector); before listen.
    #[napi(catch_unwind)]
    pub fn set_middleware(
        &self,
        options: MiddlewareOptions,
        metrics: &NativeMetrics,
        key: Option<Function<'_, KeyArgs, Unknown<'static>>>,
        collect: Option<Function<'_, CollectArgs, Unknown<'static>>>,
    ) -> napi::Result<()> {
        let built = build_middleware(options, metrics, key, collect)?;
        if let Some(k) = &built.key {
            let _ = self.key.set(k.clone());
        }
        let _ = self.collector_turn.set(built.collector_turn.clone());
        let _ = self.collector_dropped.set(built.dropped.clone());
        *lock(&self.middleware) = Some(built);
        Ok(())
    }

    /// The rate-limit key function's answer ('' = use the client's address).
    #[napi(catch_unwind)]
    pub fn complete_key(&self, token: u32, key: String) -> bool {
        self.key.get().is_some_and(|cb| cb.complete(token, Ok(key)))
    }

    /// JS finished a collector batch: the next one may come.
    #[napi(catch_unwind)]
    pub fn collector_done(&self) {
        if let Some(turn) = self.collector_turn.get() {
            turn.add_permits(1);
        }
    }

    /// Request summaries dropped because the collector fell behind.
    #[napi(catch_unwind)]
    pub fn collector_dropped(&self) -> f64 {
        self.collector_dropped
            .get()
            .map_or(0.0, |d| d.load(std::sync::atomic::Ordering::Relaxed) as f64)
    }

    /// Sets the JS side of handler routes: `dispatch(token, routeId, requestId, head)`
    /// runs a handler (answered with `respond`), `complete(token, completion)` receives
    /// the results of `readBody` and `forward`. Called on the JS thread, once.
    #[napi(catch_unwind)]
    pub fn set_handlers(
        &self,
        dispatch: Function<'_, DispatchArgs, Unknown<'static>>,
        complete: Function<'_, CompleteArgs, Unknown<'static>>,
    ) -> napi::Result<()> {
        let completer = complete
            .build_threadsafe_function::<CompleteArgs>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        let bridge = HandlerBridge {
            dispatcher: JsCallback::new(dispatch, "route handler", self.handler_timeout)?,
            completer,
            requests: Registry::default(),
        };
        self.handlers
            .set(Arc::new(bridge))
            .map_err(|_| invalid("the handlers are already set"))
    }

    /// A handler's answer to the dispatch `token`: status, headers as
    /// `name\nvalue\n…`, body, or `forwarded` to send the upstream response `forward`
    /// produced. False when nobody waits any more.
    #[napi(catch_unwind)]
    pub fn respond(
        &self,
        token: u32,
        status: u32,
        headers: String,
        body: Option<Buffer>,
        forwarded: bool,
    ) -> bool {
        let reply = HandlerReply {
            status,
            headers,
            // Copied here, on the JS thread: a Buffer released on a data-plane thread
            // would have to be sent back to this thread to be freed.
            body: body.map(|b| bytes::Bytes::copy_from_slice(&b)),
            forwarded,
        };
        self.handlers
            .get()
            .is_some_and(|b| b.dispatcher.complete(token, Ok(reply)))
    }

    /// Reads request `request_id`'s body; the result reaches `complete(token, …)`.
    #[napi(catch_unwind)]
    pub fn read_body(&self, request_id: u32, token: u32) -> napi::Result<()> {
        let (bridge, state) = self.request(request_id)?;
        state.start_read_body(move |done| bridge.complete(token, done));
        Ok(())
    }

    /// Forwards request `request_id` to one of `balancer`'s servers through `client`
    /// (under `transport`'s TLS options and HTTP version, when given); the response head
    /// (or the error) reaches `complete(token, …)`.
    // The FFI's shape: native objects are passed one by one, not in a struct.
    #[allow(clippy::too_many_arguments)]
    #[napi(catch_unwind)]
    pub fn forward(
        &self,
        request_id: u32,
        token: u32,
        balancer: &NativeLoadBalancer,
        client: &NativeClient,
        retry: &NativeRetryPolicy,
        transforms: &NativeTransforms,
        options: JsForwardOptions,
        transport: Option<&NativeTransport>,
    ) -> napi::Result<()> {
        let (bridge, state) = self.request(request_id)?;
        state.start_forward(
            balancer.inner.clone(),
            client.inner.clone(),
            options,
            ForwardPolicies {
                retry: Some(retry.inner.clone()),
                transforms: transforms.active(),
                metrics: self.metrics.get().cloned(),
                transport: transport.map(|t| t.inner.clone()),
            },
            move |done| bridge.complete(token, done),
        );
        Ok(())
    }

    /// Adds a route answered by the JS handler `route_id` (through the dispatcher).
    #[napi(catch_unwind)]
    pub fn add_handler_route(
        &self,
        pattern: String,
        methods: Option<Vec<String>>,
        route_id: u32,
    ) -> napi::Result<()> {
        self.add_route(pattern, methods, RouteSpec::Handler { route_id })
    }

    /// Adds a route forwarded natively to `balancer`'s servers through `client` (under
    /// `transport`'s TLS options and HTTP version, when given).
    // The FFI's shape: native objects are passed one by one, not in a struct.
    #[allow(clippy::too_many_arguments)]
    #[napi(catch_unwind)]
    pub fn add_proxy_route(
        &self,
        pattern: String,
        methods: Option<Vec<String>>,
        balancer: &NativeLoadBalancer,
        client: &NativeClient,
        retry: &NativeRetryPolicy,
        transforms: &NativeTransforms,
        options: ProxyRouteOptions,
        transport: Option<&NativeTransport>,
    ) -> napi::Result<()> {
        let route = ProxyRoute {
            balancer: balancer.inner.clone(),
            client: client.inner.clone(),
            strip_path: options.strip_path,
            preserve_host: options.preserve_host,
            timeout: millis(options.timeout_ms),
            retry: Some(retry.inner.clone()),
            transforms: transforms.active(),
            metrics: None,
            transport: transport.map(|t| t.inner.clone()),
        };
        self.add_route(pattern, methods, RouteSpec::Proxy(route))
    }

    /// Starts the data plane and binds `host:port` (HTTPS with `tls`); resolves to the
    /// bound address.
    #[napi(catch_unwind)]
    pub async fn listen(
        &self,
        host: String,
        port: u32,
        tls: Option<ListenTls>,
    ) -> napi::Result<ListenInfo> {
        // Checked before anything starts: a bad certificate leaves the app as it was.
        let tls = tls
            .map(|t| ListenerTls::from_pem(&t.cert, &t.key).map(Arc::new))
            .transpose()
            .map_err(to_napi)?;
        let ip: IpAddr = host
            .parse()
            .map_err(|_| invalid(format!("listen host {host:?} is not an IP address")))?;
        let port = u16::try_from(port)
            .map_err(|_| invalid(format!("listen port {port} is out of range")))?;
        let specs = lock(&self.routes).take().ok_or_else(|| {
            coded(
                ErrorCode::Bind,
                "this app is already listening (or was closed)",
            )
        })?;
        let runtime = DataPlane::start(self.worker_threads).map_err(|e| {
            coded(
                ErrorCode::Internal,
                &format!("cannot start the data plane: {e}"),
            )
        })?;
        let middleware = match lock(&self.middleware).take() {
            Some(built) => {
                if let Some(task) = built.deliver {
                    runtime.handle().spawn(task);
                }
                built.middleware
            }
            None => Middleware::default(),
        };
        if let Some(m) = &middleware.metrics {
            let _ = self.metrics.set(m.clone());
        }
        let handlers = self.handlers.get().cloned();
        let mut router = Router::new();
        for (pattern, methods, spec) in specs {
            let action = match spec {
                RouteSpec::Proxy(mut route) => {
                    route.metrics = middleware.metrics.clone();
                    RouteAction::Proxy(route)
                }
                RouteSpec::Handler { route_id } => {
                    let bridge = handlers.clone().ok_or_else(|| {
                        coded(ErrorCode::Internal, "handler routes need setHandlers()")
                    })?;
                    RouteAction::Handler(Arc::new(JsRouteHandler {
                        route_id,
                        bridge,
                        runtime: runtime.handle().clone(),
                        max_body_size: self.max_body_size,
                    }))
                }
            };
            router
                .add(&pattern, methods, action)
                .map_err(|e| invalid(e.to_string()))?;
        }
        let app = Arc::new(App::with_middleware(router, middleware));
        let settings = ServerSettings {
            tls,
            ..self.settings.clone()
        };
        let addr = SocketAddr::new(ip, port);
        let bound = runtime
            .handle()
            .spawn(async move { RunningServer::bind(addr, app, settings).await })
            .await
            .map_err(|e| {
                coded(
                    ErrorCode::Internal,
                    &format!("the listener task failed: {e}"),
                )
            })?;
        let server = bound.map_err(to_napi)?;
        let local = server.local_addr();
        *lock(&self.running) = Some(Running { runtime, server });
        Ok(ListenInfo {
            host: local.ip().to_string(),
            port: u32::from(local.port()),
        })
    }

    /// Swaps the listener's certificate and key: connections accepted from now on get
    /// the new ones, open connections keep theirs. On error the old ones stay.
    #[napi(catch_unwind)]
    pub fn reload_tls(&self, cert: Buffer, key: Buffer) -> napi::Result<()> {
        let tls = lock(&self.running)
            .as_ref()
            .and_then(|running| running.server.tls())
            .ok_or_else(|| invalid("reloadTls: the app is not listening with TLS"))?;
        tls.reload(&cert, &key).map_err(to_napi)
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace_ms`, then closes
    /// every connection and stops the data plane. Resolves when all is done.
    #[napi(catch_unwind)]
    pub async fn close(&self, grace_ms: f64) -> napi::Result<()> {
        let Some(Running {
            runtime,
            mut server,
        }) = lock(&self.running).take()
        else {
            return Ok(());
        };
        let grace = millis(grace_ms);
        let _ = runtime
            .handle()
            .spawn(async move {
                server.shutdown(grace).await;
            })
            .await;
        drop(runtime);
        Ok(())
    }
}

impl NativeApp {
    fn request(
        &self,
        request_id: u32,
    ) -> napi::Result<(Arc<HandlerBridge>, Arc<crate::handler::RequestState>)> {
        let bridge = self
            .handlers
            .get()
            .cloned()
            .ok_or_else(|| coded(ErrorCode::Internal, "no handler routes"))?;
        let state = bridge.requests.get(request_id).ok_or_else(|| {
            coded(
                ErrorCode::BadRequest,
                "this request has already been answered (or its client went away)",
            )
        })?;
        Ok((bridge, state))
    }

    fn add_route(
        &self,
        pattern: String,
        methods: Option<Vec<String>>,
        spec: RouteSpec,
    ) -> napi::Result<()> {
        let methods = parse_methods(methods)?;
        velithon_core::router::Pattern::parse(&pattern).map_err(|e| invalid(e.to_string()))?;
        lock(&self.routes)
            .as_mut()
            .ok_or_else(|| invalid("routes cannot be added after listen()"))?
            .push((pattern, methods, spec));
        Ok(())
    }
}

fn parse_methods(methods: Option<Vec<String>>) -> napi::Result<Option<Vec<Method>>> {
    methods
        .map(|list| {
            list.iter()
                .map(|m| {
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|_| invalid(format!("{m:?} is not an HTTP method")))
                })
                .collect()
        })
        .transpose()
}
