//! `NativeLoadBalancer`: a core `LoadBalancer` held by a JS `LoadBalancer`.

use std::sync::Arc;

use napi_derive::napi;
use velithon_core::balancer::{LoadBalancer, RoundRobin, Strategy};

use crate::errors::invalid;

#[napi]
pub struct NativeLoadBalancer {
    pub(crate) inner: Arc<LoadBalancer>,
}

fn strategy_named(name: &str) -> napi::Result<Box<dyn Strategy>> {
    match name {
        "round_robin" => Ok(Box::<RoundRobin>::default()),
        other => Err(invalid(format!("unknown load-balancing strategy {other:?}"))),
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

    #[napi(catch_unwind)]
    pub fn servers(&self) -> Vec<String> {
        self.inner
            .servers()
            .iter()
            .map(|s| s.url().to_string())
            .collect()
    }
}
