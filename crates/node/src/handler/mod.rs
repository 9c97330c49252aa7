//! JS route handlers: the data plane hands a request to the app's dispatcher (one JS
//! function for all handler routes, through the callback bridge) and turns the reply
//! into the response. A forwarded reply streams the upstream response from Rust.

mod reply;
mod request;

use std::sync::Arc;

use napi::bindgen_prelude::FnArgs;
use tokio::runtime::Handle;
use velithon_core::server::{HandlerRequest, RequestHandler, ResponseFuture};

use crate::callback::JsCallback;

pub use reply::HandlerReply;
pub use request::{NativeRequest, RequestHead};

pub type DispatchArgs = FnArgs<(u32, RequestHead, NativeRequest)>;
pub type Dispatcher = JsCallback<DispatchArgs, HandlerReply>;

/// One JS handler route: `route_id` tells the dispatcher which user function to run.
pub struct JsRouteHandler {
    pub route_id: u32,
    pub dispatcher: Arc<Dispatcher>,
    pub runtime: Handle,
    /// The most a handler may read with `body()` (413 beyond).
    pub max_body_size: usize,
}

impl RequestHandler for JsRouteHandler {
    fn handle(&self, req: HandlerRequest) -> ResponseFuture {
        let head = RequestHead::new(&req);
        let state = request::RequestState::new(req, self.runtime.clone(), self.max_body_size);
        let native = NativeRequest::new(state.clone());
        let dispatcher = self.dispatcher.clone();
        let route_id = self.route_id;
        Box::pin(async move {
            match dispatcher
                .call(FnArgs::from((route_id, head, native)))
                .await
            {
                Ok(reply) => reply.into_response(&state),
                Err(err) => err.into_gateway_error(dispatcher.option()).to_response(),
            }
        })
    }
}
