//! `NativeMetrics`: the data plane's metrics registry (`velithon_core::metrics`) held by
//! a JS `GatewayMetrics`, with the load balancers whose state it reports as gauges.

use std::sync::{Arc, Mutex};

use napi_derive::napi;
use velithon_core::balancer::LoadBalancer;
use velithon_core::client::UpstreamClient;
use velithon_core::metrics::{render, Gauge, Metrics};

use crate::client::NativeClient;

use crate::balancer::NativeLoadBalancer;

#[napi]
pub struct NativeMetrics {
    pub(crate) inner: Arc<Metrics>,
    pub(crate) balancers: Arc<Mutex<Vec<Arc<LoadBalancer>>>>,
    pub(crate) clients: Arc<Mutex<Vec<Arc<UpstreamClient>>>>,
}

#[napi]
impl NativeMetrics {
    #[napi(constructor, catch_unwind)]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Metrics::new()),
            balancers: Arc::new(Mutex::new(Vec::new())),
            clients: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Reports `client`'s pool (idle connections per host) with the metrics.
    #[napi(catch_unwind)]
    pub fn watch_client(&self, client: &NativeClient) {
        let mut list = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if !list.iter().any(|c| Arc::ptr_eq(c, &client.inner)) {
            list.push(client.inner.clone());
        }
    }

    /// Reports `balancer`'s servers (health, breaker, in flight) with the metrics.
    #[napi(catch_unwind)]
    pub fn watch(&self, balancer: &NativeLoadBalancer) {
        let mut list = self.balancers.lock().unwrap_or_else(|p| p.into_inner());
        if !list.iter().any(|b| Arc::ptr_eq(b, &balancer.inner)) {
            list.push(balancer.inner.clone());
        }
    }

    /// Everything counted so far, as a plain object.
    #[napi(catch_unwind)]
    pub fn snapshot(&self) -> napi::Result<serde_json::Value> {
        serde_json::to_value(self.inner.snapshot())
            .map_err(|e| napi::Error::from_reason(e.to_string()))
    }

    /// The Prometheus text exposition (format 0.0.4).
    #[napi(catch_unwind)]
    pub fn prometheus(&self) -> String {
        render(
            &self.inner.snapshot(),
            &gauges(&self.balancers, &self.clients),
        )
    }
}

impl Default for NativeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Gauges for the watched balancers' servers.
pub(crate) fn gauges(
    balancers: &Mutex<Vec<Arc<LoadBalancer>>>,
    clients: &Mutex<Vec<Arc<UpstreamClient>>>,
) -> Vec<Gauge> {
    let list = balancers.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut out = Vec::new();
    let pools = clients.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for client in pools {
        for (host, idle) in client.idle_connections() {
            out.push(Gauge {
                name: "velithon_pool_idle_connections".into(),
                help: "Idle keep-alive connections in the pool, per upstream host".into(),
                labels: vec![("host".into(), host)],
                value: idle as f64,
            });
        }
    }
    for lb in list {
        for s in lb.status() {
            let server = vec![("server".to_string(), s.url.clone())];
            out.push(Gauge {
                name: "velithon_upstream_up".into(),
                help: "1 when the upstream server may take requests (healthy, not ejected, breaker admitting)".into(),
                labels: server.clone(),
                value: if s.available { 1.0 } else { 0.0 },
            });
            out.push(Gauge {
                name: "velithon_upstream_in_flight".into(),
                help: "Requests in flight to the upstream server".into(),
                labels: server.clone(),
                value: f64::from(s.in_flight),
            });
            if let Some(b) = &s.breaker {
                for state in ["closed", "open", "half_open"] {
                    let mut labels = server.clone();
                    labels.push(("state".into(), state.into()));
                    out.push(Gauge {
                        name: "velithon_circuit_breaker_state".into(),
                        help: "1 for the circuit breaker's current state".into(),
                        labels,
                        value: if b.state == state { 1.0 } else { 0.0 },
                    });
                }
            }
        }
    }
    out
}
