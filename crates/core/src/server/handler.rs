//! Routes answered by code outside the data plane (in the binding: a JS function).
//! The core only sees this trait; it never knows what runs behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};

use crate::body::ProxyBody;
use crate::proxy::ConnInfo;
use crate::router::Params;

/// A request on its way to a handler, with what the router and listener learnt.
pub struct HandlerRequest {
    pub request: Request<ProxyBody>,
    /// Path parameters, raw (still percent-encoded), in pattern order.
    pub params: Params,
    pub conn: Arc<ConnInfo>,
}

pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>;

pub trait RequestHandler: Send + Sync + 'static {
    /// Answers one request. Failures are the handler's to turn into a response.
    fn handle(&self, req: HandlerRequest) -> ResponseFuture;
}
