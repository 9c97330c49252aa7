//! From a request to a response: find the route, run its action.

use std::sync::Arc;

use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;

use super::handler::{HandlerRequest, RequestHandler};
use crate::body::{boxed, ProxyBody};
use crate::error::{ErrorCode, GatewayError};
use crate::proxy::{self, ConnInfo, ProxyRoute};
use crate::router::{RouteMiss, Router};

/// What a matched route does.
pub enum RouteAction {
    /// Forward to a load balancer's servers, natively.
    Proxy(ProxyRoute),
    /// Hand the request to a handler (in the binding: a JS function).
    Handler(Arc<dyn RequestHandler>),
}

/// The routes of one listening app.
pub struct App {
    router: Router<RouteAction>,
}

impl App {
    pub fn new(router: Router<RouteAction>) -> Self {
        Self { router }
    }

    pub async fn dispatch(
        &self,
        req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
    ) -> Response<ProxyBody> {
        match self.router.find(req.method(), req.uri().path()) {
            Ok(found) => match &*found.route.action {
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
            },
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
        }
    }
}
