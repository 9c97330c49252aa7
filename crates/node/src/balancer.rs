//! `NativeLoadBalancer`: a core `LoadBalancer` held by a JS `LoadBalancer`, with its
//! breakers, outlier detection and active health checks.

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{Function, Unknown};
use napi_derive::napi;
use velithon_core::balancer::{
    ConsistentHash, HashKey, LeastConnections, LoadBalancer, PowerOfTwoChoices, Random, RoundRobin,
    Strategy, Weighted,
};
use velithon_core::health::{HealthCheckConfig, HealthChecker};
use velithon_core::resilience::{BreakerConfig, OutlierConfig, RateMode};
use velithon_core::status_set::StatusSet;

use crate::callback::JsCallback;
use crate::client::millis;
use crate::control_plane;
use crate::errors::invalid;
use crate::health::{check_result, CheckArgs, CheckCallback, JsHealthCheck};
use crate::selector::{JsSelector, SelectArgs, SelectCallback};
use crate::transport::{transport_options, NativeTransportOptions};

#[napi]
pub struct NativeLoadBalancer {
    pub(crate) inner: Arc<LoadBalancer>,
    selector: Option<Arc<SelectCallback>>,
    health: Mutex<Option<(HealthChecker, Option<Arc<CheckCallback>>)>>,
}

/// `strategy` is a built-in name; `hash_key` ('ip', 'path', 'header:<name>',
/// 'cookie:<name>') is consistent hashing's key.
fn strategy_named(name: &str, hash_key: Option<&str>) -> napi::Result<Box<dyn Strategy>> {
    Ok(match name {
        "round_robin" => Box::<RoundRobin>::default(),
        "random" => Box::<Random>::default(),
        "weighted" => Box::<Weighted>::default(),
        "least_connections" => Box::<LeastConnections>::default(),
        "p2c" => Box::<PowerOfTwoChoices>::default(),
        "consistent_hash" => Box::new(ConsistentHash::new(hash_key_named(
            hash_key.unwrap_or("ip"),
        )?)),
        other => {
            return Err(invalid(format!(
                "unknown load-balancing strategy {other:?}"
            )))
        }
    })
}

fn hash_key_named(key: &str) -> napi::Result<HashKey> {
    Ok(match key.split_once(':') {
        None if key == "ip" => HashKey::ClientIp,
        None if key == "path" => HashKey::Path,
        Some(("header", name)) => HashKey::Header(
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("key: {name:?} is not a header name")))?,
        ),
        Some(("cookie", name)) if !name.is_empty() => HashKey::Cookie(name.to_string()),
        _ => return Err(invalid(format!("key: {key:?} is not a hash key"))),
    })
}

fn specs(servers: Vec<String>, weights: Vec<u32>) -> napi::Result<Vec<(String, u32)>> {
    if !weights.is_empty() && weights.len() != servers.len() {
        return Err(invalid("weights must give one weight per server"));
    }
    Ok(servers
        .into_iter()
        .enumerate()
        .map(|(i, url)| (url, weights.get(i).copied().unwrap_or(1).max(1)))
        .collect())
}

#[napi(object)]
pub struct BreakerOptions {
    pub failure_threshold: u32,
    pub timeout_duration_ms: f64,
    pub half_open_requests: u32,
    pub success_threshold: u32,
    pub failure_status_codes: Vec<u32>,
    /// Failure-rate mode: open when at least this share of requests in the window failed…
    pub failure_rate: Option<f64>,
    /// …over at least this many requests…
    pub minimum_requests: u32,
    /// …in a rolling window this long.
    pub rolling_window_ms: f64,
}

#[napi(object)]
pub struct OutlierOptions {
    pub consecutive_failures: u32,
    pub base_ejection_ms: f64,
    pub max_ejection_ms: f64,
    pub max_ejected_percent: u32,
}

#[napi(object)]
pub struct HealthOptions {
    pub interval_ms: f64,
    pub timeout_ms: f64,
    pub path: String,
    pub expected_status: Vec<u32>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// The load balancer's upstream TLS options and HTTP version, if it has any.
    pub tls: Option<NativeTransportOptions>,
}

fn status_set(codes: &[u32]) -> StatusSet {
    codes
        .iter()
        .filter_map(|&c| u16::try_from(c).ok())
        .collect()
}

#[napi]
impl NativeLoadBalancer {
    #[napi(constructor, catch_unwind)]
    pub fn new(
        servers: Vec<String>,
        weights: Vec<u32>,
        strategy: String,
        hash_key: Option<String>,
    ) -> napi::Result<Self> {
        let inner = LoadBalancer::weighted(
            &specs(servers, weights)?,
            strategy_named(&strategy, hash_key.as_deref())?,
        )
        .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(inner),
            selector: None,
            health: Mutex::new(None),
        })
    }

    /// Replaces the server list (and weights, when given) atomically; in-flight
    /// requests are not disturbed and servers that stay keep their state.
    #[napi(catch_unwind)]
    pub fn set_servers(&self, servers: Vec<String>, weights: Vec<u32>) -> napi::Result<()> {
        let result = if weights.is_empty() {
            self.inner.set_servers(&servers)
        } else {
            self.inner.set_weighted_servers(&specs(servers, weights)?)
        };
        result.map_err(|e| invalid(e.to_string()))
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

    /// Gives every server a circuit breaker. False when one was installed before.
    #[napi(catch_unwind)]
    pub fn set_circuit_breaker(&self, options: BreakerOptions) -> bool {
        let config = BreakerConfig {
            failure_threshold: options.failure_threshold.max(1),
            open_for: millis(options.timeout_duration_ms),
            half_open_requests: options.half_open_requests.max(1),
            success_threshold: options.success_threshold.max(1),
            rate: options.failure_rate.map(|failure_rate| RateMode {
                window: millis(options.rolling_window_ms),
                min_requests: options.minimum_requests.max(1),
                failure_rate,
            }),
        };
        self.inner
            .set_breaker(config, Some(status_set(&options.failure_status_codes)))
    }

    #[napi(catch_unwind)]
    pub fn has_circuit_breaker(&self) -> bool {
        self.inner.breaker_config().is_some()
    }

    /// Turns on passive outlier detection. False when it was on.
    #[napi(catch_unwind)]
    pub fn set_outlier_detection(&self, options: OutlierOptions) -> bool {
        self.inner.set_outlier_detection(OutlierConfig {
            consecutive_failures: options.consecutive_failures.max(1),
            base_ejection: millis(options.base_ejection_ms),
            max_ejection: millis(options.max_ejection_ms),
            max_ejected_percent: options.max_ejected_percent.min(100),
        })
    }

    /// Starts active health checks (once per balancer: a second start would mix the
    /// tokens of two checkers). `check` is the customCheckFunction bridge:
    /// `(token, serverUrl)`, answered by `completeCheck`.
    #[napi(catch_unwind)]
    pub fn start_health_checks(
        &self,
        options: HealthOptions,
        check: Option<Function<'_, CheckArgs, Unknown<'static>>>,
    ) -> napi::Result<()> {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if health.is_some() {
            return Err(invalid(
                "this load balancer's health checks were started already",
            ));
        }
        let config = HealthCheckConfig {
            interval: millis(options.interval_ms),
            timeout: millis(options.timeout_ms),
            path: options.path,
            expected_status: status_set(&options.expected_status),
            fail_after: options.consecutive_failures.max(1),
            pass_after: options.consecutive_successes.max(1),
            transport: options.tls.map(transport_options),
        };
        let callback = match check {
            // The bridge waits a little longer than the check's own timeout.
            Some(f) => Some(Arc::new(JsCallback::new(
                f,
                "customCheckFunction",
                config.timeout + std::time::Duration::from_millis(50),
            )?)),
            None => None,
        };
        let custom = callback.clone().map(|callback| {
            Arc::new(JsHealthCheck { callback }) as Arc<dyn velithon_core::health::CustomCheck>
        });
        let checker = HealthChecker::spawn(
            &control_plane::handle()?,
            self.inner.clone(),
            config,
            custom,
            None,
        );
        *health = Some((checker, callback));
        Ok(())
    }

    /// A customCheckFunction's answer; `latency_ms` < 0 means none was given.
    #[napi(catch_unwind)]
    pub fn complete_check(
        &self,
        token: u32,
        healthy: bool,
        latency_ms: f64,
        error: String,
    ) -> bool {
        let guard = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref().and_then(|(_, cb)| cb.clone()) {
            Some(cb) => cb.complete(token, Ok(check_result(healthy, latency_ms, error))),
            None => false,
        }
    }

    /// Stops active health checks; servers keep their last known state.
    #[napi(catch_unwind)]
    pub fn stop_health_checks(&self) {
        if let Some((checker, _)) = self.health.lock().unwrap_or_else(|p| p.into_inner()).take() {
            checker.stop();
        }
    }

    /// How often the user strategy's answer was replaced by the built-in strategy.
    #[napi(catch_unwind)]
    pub fn fallback_count(&self) -> f64 {
        self.inner.fallback_count() as f64
    }

    /// The servers that may take a request now (up, not ejected, breaker admitting).
    #[napi(catch_unwind)]
    pub fn available_servers(&self) -> Vec<String> {
        self.inner.available_urls()
    }

    #[napi(catch_unwind)]
    pub fn servers(&self) -> Vec<String> {
        self.inner
            .servers()
            .iter()
            .map(|s| s.url().to_string())
            .collect()
    }

    /// Every server's state (see `ServerStatus`), as plain objects.
    #[napi(catch_unwind)]
    pub fn status(&self) -> napi::Result<serde_json::Value> {
        serde_json::to_value(self.inner.status())
            .map_err(|e| napi::Error::from_reason(e.to_string()))
    }
}
