//! `NativeClient`: one pooled upstream client, owned by a JS `Gateway`.

use std::sync::Arc;
use std::time::Duration;

use napi_derive::napi;
use velithon_core::client::{ClientSettings, UpstreamClient};

#[napi(object)]
pub struct ClientOptions {
    pub connect_timeout_ms: f64,
    pub keep_alive_timeout_ms: f64,
    pub connection_pool_size: u32,
    pub max_connections_per_host: Option<u32>,
    pub connection_pool_timeout_ms: f64,
    pub upgrade_idle_timeout_ms: f64,
}

#[napi]
pub struct NativeClient {
    pub(crate) inner: Arc<UpstreamClient>,
}

pub(crate) fn millis(ms: f64) -> Duration {
    Duration::from_micros((ms.max(0.0) * 1000.0) as u64)
}

#[napi]
impl NativeClient {
    #[napi(constructor, catch_unwind)]
    pub fn new(options: ClientOptions) -> Self {
        let settings = ClientSettings {
            connect_timeout: millis(options.connect_timeout_ms),
            keep_alive_timeout: millis(options.keep_alive_timeout_ms),
            max_idle_per_host: options.connection_pool_size as usize,
            max_connections_per_host: options.max_connections_per_host.map(|n| n as usize),
            pool_timeout: millis(options.connection_pool_timeout_ms),
            upgrade_idle_timeout: millis(options.upgrade_idle_timeout_ms),
        };
        Self {
            inner: Arc::new(UpstreamClient::new(settings)),
        }
    }
}
