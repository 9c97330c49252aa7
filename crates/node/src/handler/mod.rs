//! JS route handlers. The data plane hands each request to the app's dispatcher (one JS
//! function for all handler routes, through the callback bridge) with a request id; JS
//! reads the body or forwards the request by id (`readBody`, `forward`: the work runs on
//! the data plane and its result comes back through the app's completer), and answers
//! with `respond(token, reply)`. A forwarded reply streams the upstream response from
//! Rust without entering JS.

mod reply;
mod request;

use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, FnArgs, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use tokio::runtime::Handle;
use velithon_core::server::{HandlerRequest, RequestHandler, ResponseFuture};

use crate::callback::{JsCallback, Registry};

pub use reply::HandlerReply;
pub use request::{Completion, ForwardPolicies, JsForwardOptions, RequestHead, RequestState};

/// `(token, routeId, requestId, method, url, headers, params, clientAddress,
/// clientPort, httpVersion)`; JS answers with `respond(token, …)`.
pub type DispatchArgs = FnArgs<(
    u32,
    u32,
    u32,
    String,
    String,
    String,
    Vec<String>,
    String,
    u32,
    String,
)>;
/// `(token, ok, status, headers, body, error)`: the result of a `readBody` or `forward`.
pub type CompleteArgs = FnArgs<(u32, bool, u32, String, Option<Buffer>, String)>;
pub type Completer =
    ThreadsafeFunction<CompleteArgs, Unknown<'static>, CompleteArgs, Status, false, true>;

/// What every handler route of one app shares.
pub struct HandlerBridge {
    pub dispatcher: JsCallback<DispatchArgs, HandlerReply>,
    pub completer: Completer,
    /// Requests a handler is working on, by id.
    pub requests: Registry<Arc<RequestState>>,
}

impl HandlerBridge {
    /// Sends the result of a `readBody`/`forward` to JS.
    pub fn complete(&self, token: u32, completion: Completion) {
        // NonBlocking on an unbounded queue only fails while Node shuts down.
        let Completion {
            ok,
            status,
            headers,
            body,
            error,
        } = completion;
        let _ = self.completer.call(
            FnArgs::from((token, ok, status, headers, body, error)),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }
}

/// One JS handler route: `route_id` tells the dispatcher which user function to run.
pub struct JsRouteHandler {
    pub route_id: u32,
    pub bridge: Arc<HandlerBridge>,
    pub runtime: Handle,
    /// The most a handler may read with `body()` (413 beyond).
    pub max_body_size: usize,
}

/// Forgets a request when its response is done or the client went away.
struct Registered {
    bridge: Arc<HandlerBridge>,
    id: u32,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.bridge.requests.take(self.id);
    }
}

impl RequestHandler for JsRouteHandler {
    fn handle(&self, req: HandlerRequest) -> ResponseFuture {
        let head = RequestHead::new(&req);
        let state = RequestState::new(req, self.runtime.clone(), self.max_body_size);
        let id = self.bridge.requests.insert(state.clone());
        let registered = Registered {
            bridge: self.bridge.clone(),
            id,
        };
        let route_id = self.route_id;
        Box::pin(async move {
            let bridge = registered.bridge.clone();
            let answer = bridge
                .dispatcher
                .call(|token| {
                    FnArgs::from((
                        token,
                        route_id,
                        id,
                        head.method,
                        head.url,
                        head.headers,
                        head.params,
                        head.client_address,
                        head.client_port,
                        head.http_version,
                    ))
                })
                .await;
            drop(registered);
            match answer {
                Ok(reply) => reply.into_response(&state),
                Err(err) => err
                    .into_gateway_error(bridge.dispatcher.option())
                    .to_response(),
            }
        })
    }
}
