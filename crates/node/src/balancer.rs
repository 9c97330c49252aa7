//! `NativeLoadBalancer`: a core `LoadBalancer` held by a JS `LoadBalancer`.

use std::sync::Arc;

use napi::bindgen_prelude::{Function, Promise};
use napi_derive::napi;
use velithon_core::balancer::{LoadBalancer, RoundRobin, Strategy};

use crate::callback::JsCallback;
use crate::client::millis;
use crate::errors::invalid;
use crate::selector::{JsSelector, SelectArgs};

#[napi]
pub struct NativeLoadBalancer {
    pub(crate) inner: Arc<LoadBalancer>,
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
        })
    }

    /// Replaces the server list atomically; in-flight requests are not disturbed.
    #[napi(catch_unwind)]
    pub fn set_servers(&self, servers: Vec<String>) -> napi::Result<()> {
        self.inner
            .set_servers(&servers)
            .map_err(|e| invalid(e.to_string()))
    }

    /// Installs a user strategy: `(servers, context) => Promise<string>` ('' = fall back).
    #[napi(catch_unwind)]
    pub fn set_selector(
        &self,
        select: Function<'_, SelectArgs, Promise<String>>,
        timeout_ms: f64,
    ) -> napi::Result<()> {
        let callback = JsCallback::new(select, "selectServer", millis(timeout_ms))?;
        if self.inner.set_selector(Arc::new(JsSelector {
            callback: Arc::new(callback),
        })) {
            Ok(())
        } else {
            Err(invalid(
                "this load balancer already has a strategy function",
            ))
        }
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
