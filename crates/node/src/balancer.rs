//! `NativeLoadBalancer`: a core `LoadBalancer` held by a JS `LoadBalancer`.

use std::sync::Arc;

use napi::bindgen_prelude::{Function, Unknown};
use napi_derive::napi;
use velithon_core::balancer::{LoadBalancer, RoundRobin, Strategy};

use crate::callback::JsCallback;
use crate::client::millis;
use crate::errors::invalid;
use crate::selector::{JsSelector, SelectArgs, SelectCallback};

#[napi]
pub struct NativeLoadBalancer {
    pub(crate) inner: Arc<LoadBalancer>,
    selector: Option<Arc<SelectCallback>>,
}

fn strategy_named(name: &str) -> napi::Result<Box<dyn Strategy>> {
    match name {
        "round_robin" => Ok(Box::<RoundRobin>::default()),
        other => Err(invalid(format!(
            "unknown load-balancing strategy {other:?}"
        ))),
    }
}

#[napi]
impl NativeLoadBalancer {
    #[napi(constructor, catch_unwind)]
    pub fn new(servers: Vec<String>, strategy: String) -> napi::Result<Self> {
        let inner = LoadBalancer::new(&servers, strategy_named(&strategy)?)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(inner),
            selector: None,
        })
    }

    /// Replaces the server list atomically; in-flight requests are not disturbed.
    #[napi(catch_unwind)]
    pub fn set_servers(&self, servers: Vec<String>) -> napi::Result<()> {
        self.inner
            .set_servers(&servers)
            .map_err(|e| invalid(e.to_string()))
    }

    /// Installs a user strategy: `(token, servers, context) => void`; JS answers with
    /// `completeSelect(token, url)` ('' = fall back).
    #[napi(catch_unwind)]
    pub fn set_selector(
        &mut self,
        select: Function<'_, SelectArgs, Unknown<'static>>,
        timeout_ms: f64,
    ) -> napi::Result<()> {
        let callback = Arc::new(JsCallback::new(select, "selectServer", millis(timeout_ms))?);
        let installed = self.inner.set_selector(Arc::new(JsSelector {
            callback: callback.clone(),
        }));
        if !installed {
            return Err(invalid(
                "this load balancer already has a strategy function",
            ));
        }
        self.selector = Some(callback);
        Ok(())
    }

    /// The strategy's answer to `token`: a server URL, or '' to fall back. False when
    /// nobody waits for it any more (it came after the timeout).
    #[napi(catch_unwind)]
    pub fn complete_select(&self, token: u32, url: String) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|cb| cb.complete(token, Ok(url)))
    }

    /// How often the user strategy's answer was replaced by round robin.
    #[napi(catch_unwind)]
    pub fn fallback_count(&self) -> f64 {
        self.inner.fallback_count() as f64
    }

    #[napi(catch_unwind)]
    pub fn servers(&self) -> Vec<String> {
        self.inner
            .servers()
            .iter()
            .map(|s| s.url().to_string())
            .collect()
    }
}
