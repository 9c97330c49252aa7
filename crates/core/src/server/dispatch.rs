//! From a request to a response: find the route, run its action.

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;

use super::handler::{HandlerRequest, RequestHandler};
use super::middleware::{client_ip, ensure_traceparent, Middleware, RequestSummary};
use crate::body::{boxed, ProxyBody};
use crate::error::{ErrorCode, GatewayError};
use crate::metrics::RouteId;
use crate::proxy::{self, latin1_pairs, ConnInfo, ProxyRoute};
use crate::router::{RouteMiss, Router};

/// What a matched route does.
pub enum RouteAction {
    /// Forward to a load balancer's servers, natively.
    Proxy(ProxyRoute),
    /// Hand the request to a handler (in the binding: a JS function).
    Handler(Arc<dyn RequestHandler>),
}

/// The routes of one listening app, and what every request goes through around them.
pub struct App {
    router: Router<RouteAction>,
    middleware: Middleware,
    /// Each route's metrics slot, by route index.
    route_ids: Vec<RouteId>,
}

impl App {
    pub fn new(router: Router<RouteAction>) -> Self {
        Self::with_middleware(router, Middleware::default())
    }

    pub fn with_middleware(router: Router<RouteAction>, middleware: Middleware) -> Self {
        let route_ids = match &middleware.metrics {
            Some(metrics) => router
                .routes()
                .iter()
                .map(|r| metrics.route(r.pattern.source()))
                .collect(),
            None => Vec::new(),
        };
        Self {
            router,
            middleware,
            route_ids,
        }
    }

    pub fn middleware(&self) -> &Middleware {
        &self.middleware
    }

    pub(crate) fn router(&self) -> &Router<RouteAction> {
        &self.router
    }

    /// The metrics slot of the route at `index` (when metrics are on).
    pub(crate) fn route_id(&self, index: usize) -> Option<RouteId> {
        self.route_ids.get(index).copied()
    }

    pub async fn dispatch(
        &self,
        req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
    ) -> Response<ProxyBody> {
        if self.middleware.is_empty() {
            return self.route(req, conn).await.0;
        }
        self.dispatch_with_middleware(req, conn).await
    }

    async fn dispatch_with_middleware(
        &self,
        mut req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let mw = &self.middleware;
        let observed = mw.observer.as_ref().map(|_| {
            (
                req.method().as_str().to_string(),
                req.uri().path().to_string(),
                latin1_pairs(req.headers()),
            )
        });
        let client = client_ip(&req, conn);
        // Boxed when there is a limit: the future of every request stays small.
        let decision = match &mw.rate_limit {
            Some(_) => Box::pin(mw.rate_limit(&req, client)).await,
            None => None,
        };
        if decision.as_ref().is_none_or(|d| d.allowed) {
            // After the rate limit: /metrics is limited like any path.
            if let Some(res) = mw.metrics_endpoint(&req) {
                return res;
            }
        }
        let (mut res, route) = match &decision {
            Some(d) if !d.allowed => (mw.refused(d), None),
            _ => {
                if mw.traceparent {
                    ensure_traceparent(req.headers_mut());
                }
                self.route(req, conn).await
            }
        };
        if let Some(d) = decision.filter(|d| d.allowed) {
            for (k, v) in crate::ratelimit::headers(&d) {
                res.headers_mut().insert(k, v);
            }
        }
        let elapsed = started.elapsed();
        if let Some(metrics) = &mw.metrics {
            let id = route.and_then(|i| self.route_ids.get(i).copied());
            metrics.record(id, res.status().as_u16(), elapsed);
        }
        if let (Some(observer), Some((method, path, request_headers))) = (&mw.observer, observed) {
            observer.observe(RequestSummary {
                method,
                path,
                route: route
                    .and_then(|i| self.router.routes().get(i))
                    .map(|r| r.pattern.source().to_string())
                    .unwrap_or_default(),
                status: res.status().as_u16(),
                duration: elapsed,
                client: client.to_string(),
                request_headers,
                response_headers: latin1_pairs(res.headers()),
            });
        }
        res
    }

    /// Finds the route and runs it; also says which route (by index) answered.
    async fn route(
        &self,
        req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
    ) -> (Response<ProxyBody>, Option<usize>) {
        let res = match self.router.find(req.method(), req.uri().path()) {
            Ok(found) => {
                let index = found.route.index;
                let res = match &*found.route.action {
                    RouteAction::Proxy(route) => {
                        proxy::forward(route, &found.route.pattern, req.map(boxed), conn).await
                    }
                    RouteAction::Handler(handler) => {
                        handler
                            .handle(HandlerRequest {
                                request: req.map(boxed),
                                params: found.params,
                                conn: conn.clone(),
                            })
                            .await
                    }
                };
                return (res, Some(index));
            }
            Err(RouteMiss::NotFound) => GatewayError::new(
                ErrorCode::NoRoute,
                format!("no route matches {} {}", req.method(), req.uri().path()),
            )
            .to_response(),
            Err(RouteMiss::MethodNotAllowed(mut allowed)) => {
                if allowed.contains(&http::Method::GET) && !allowed.contains(&http::Method::HEAD) {
                    allowed.push(http::Method::HEAD);
                }
                let mut res = GatewayError::new(
                    ErrorCode::MethodNotAllowed,
                    format!("{} is not allowed on {}", req.method(), req.uri().path()),
                )
                .to_response();
                let list = allowed
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                if let Ok(v) = HeaderValue::from_str(&list) {
                    res.headers_mut().insert(header::ALLOW, v);
                }
                res
            }
        };
        (res, None)
    }
}
