//! A user's `LoadBalancingStrategy` subclass, called from pure routes through the
//! callback bridge. The facade's wrapper validates the answer and reports failures;
//! here an empty answer, a failure or a timeout mean "fall back".

use std::sync::Arc;

use napi::bindgen_prelude::FnArgs;
use napi_derive::napi;
use velithon_core::balancer::{AsyncSelector, OwnedPickContext, SelectFuture};

use crate::callback::JsCallback;

/// What `selectServer` gets as `requestContext` (before the facade shapes it).
#[napi(object)]
pub struct SelectContext {
    pub method: String,
    pub path: String,
    /// `name\nvalue\n…`
    pub headers: String,
    pub client_address: String,
    pub client_port: u32,
}

/// `(token, servers, context)`; JS answers with `completeSelect(token, url)`.
pub type SelectArgs = FnArgs<(u32, Vec<String>, SelectContext)>;
pub type SelectCallback = JsCallback<SelectArgs, String>;

pub struct JsSelector {
    pub callback: Arc<SelectCallback>,
}

impl AsyncSelector for JsSelector {
    fn select(&self, servers: Vec<String>, ctx: OwnedPickContext) -> SelectFuture {
        let callback = self.callback.clone();
        Box::pin(async move {
            let js_ctx = SelectContext {
                method: ctx.method,
                path: ctx.path,
                headers: ctx.headers.iter().fold(String::new(), |mut out, (k, v)| {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(k);
                    out.push('\n');
                    out.push_str(v);
                    out
                }),
                client_address: ctx.client.map(|c| c.ip().to_string()).unwrap_or_default(),
                client_port: ctx.client.map_or(0, |c| u32::from(c.port())),
            };
            match callback
                .call(|token| FnArgs::from((token, servers, js_ctx)))
                .await
            {
                Ok(url) if !url.is_empty() => Some(url),
                _ => None,
            }
        })
    }
}
