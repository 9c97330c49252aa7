//! The active health checker of one load balancer: a task that, every `interval`
//! (jittered ±10% so many gateways don't probe in step), checks every current server at
//! once, each bounded by `timeout`, and feeds the results to the servers' `HealthState`.
//! It stops when `HealthChecker` is stopped or dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Request};
use http_body_util::BodyExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::balancer::{LoadBalancer, Upstream};
use crate::body::empty;
use crate::client::{ClientSettings, TransportOptions, UpstreamClient, UpstreamTransport};
use crate::status_set::StatusSet;

#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    pub interval: Duration,
    pub timeout: Duration,
    /// Requested with GET on each server (under its base path).
    pub path: String,
    pub expected_status: StatusSet,
    /// Failures in a row that take a server out (consecutiveFailures).
    pub fail_after: u32,
    /// Successes in a row that bring it back (consecutiveSuccesses).
    pub pass_after: u32,
    /// The load balancer's upstream TLS options and HTTP version (`None`: the defaults).
    pub transport: Option<TransportOptions>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            path: "/health".into(),
            expected_status: [200].into_iter().collect(),
            fail_after: 3,
            pass_after: 1,
            transport: None,
        }
    }
}

/// What one check found.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub healthy: bool,
    pub latency: Option<Duration>,
    pub error: Option<String>,
}

pub type CheckFuture = Pin<Box<dyn Future<Output = CheckResult> + Send>>;

/// A user's own check (e.g. a JS function) of one server URL.
pub trait CustomCheck: Send + Sync + 'static {
    fn check(&self, server_url: String) -> CheckFuture;
}

/// Told when a server goes down (`false`) or comes back (`true`).
pub type ChangeHook = Arc<dyn Fn(&str, bool) + Send + Sync>;

pub struct HealthChecker {
    cancel: CancellationToken,
    balancer: Arc<LoadBalancer>,
}

impl HealthChecker {
    /// Starts checking `balancer`'s servers on `runtime`.
    pub fn spawn(
        runtime: &tokio::runtime::Handle,
        balancer: Arc<LoadBalancer>,
        config: HealthCheckConfig,
        custom: Option<Arc<dyn CustomCheck>>,
        on_change: Option<ChangeHook>,
    ) -> Self {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let checked = balancer.clone();
        runtime.spawn(async move {
            let balancer = checked;
            let probe = Arc::new(Probe::new(&config, custom));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = check_round(&balancer, &probe, &config, on_change.as_ref(), &stop) => {}
                }
                let pause = jittered(config.interval);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        });
        Self { cancel, balancer }
    }

    /// Stops checking. Every server is marked up again: nothing would ever bring a
    /// server marked down back (as Envoy when health checking is removed).
    pub fn stop(&self) {
        if self.cancel.is_cancelled() {
            return;
        }
        self.cancel.cancel();
        for server in self.balancer.servers().iter() {
            server.state.health.reset();
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// Checks every current server once, concurrently.
async fn check_round(
    balancer: &LoadBalancer,
    probe: &Arc<Probe>,
    config: &HealthCheckConfig,
    on_change: Option<&ChangeHook>,
    stop: &CancellationToken,
) {
    let servers = balancer.servers();
    let mut checks = JoinSet::new();
    for server in servers.iter().cloned() {
        let probe = probe.clone();
        let timeout = config.timeout;
        checks.spawn(async move {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, probe.check(&server)).await {
                Ok(result) => result,
                Err(_) => CheckResult {
                    healthy: false,
                    latency: None,
                    error: Some(format!("no answer within {} ms", timeout.as_millis())),
                },
            };
            let latency = result.latency.unwrap_or_else(|| started.elapsed());
            (server, result, latency)
        });
    }
    while let Some(joined) = checks.join_next().await {
        let Ok((server, result, latency)) = joined else {
            continue;
        };
        if stop.is_cancelled() {
            // Stopped meanwhile: `stop` marked every server up; leave it so.
            return;
        }
        let changed = server.state.health.record(
            result.healthy,
            Some(latency.as_micros() as u64),
            result.error,
            config.fail_after,
            config.pass_after,
        );
        if let (Some(up), Some(hook)) = (changed, on_change) {
            hook(server.url(), up);
        }
    }
}

/// How one server is checked: the user's function, or GET `path`.
struct Probe {
    custom: Option<Arc<dyn CustomCheck>>,
    client: UpstreamClient,
    /// Checks go as the load balancer's requests do (its TLS options, HTTP/2); an error
    /// building it fails every check with its message.
    transport: Result<Option<UpstreamTransport>, String>,
    path: String,
    expected: StatusSet,
}

impl Probe {
    fn new(config: &HealthCheckConfig, custom: Option<Arc<dyn CustomCheck>>) -> Self {
        let settings = ClientSettings {
            connect_timeout: config.timeout,
            keep_alive_timeout: config.interval * 2,
            max_idle_per_host: 1,
            ..ClientSettings::default()
        };
        let transport = config
            .transport
            .clone()
            .map(|options| UpstreamTransport::new(options, &settings))
            .transpose()
            .map_err(|e| e.to_string());
        Self {
            custom,
            client: UpstreamClient::new(settings),
            transport,
            path: config.path.clone(),
            expected: config.expected_status.clone(),
        }
    }

    async fn check(&self, server: &Upstream) -> CheckResult {
        if let Some(custom) = &self.custom {
            return custom.check(server.url().to_string()).await;
        }
        let started = Instant::now();
        let (path, query) = match self.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.path.as_str(), None),
        };
        let uri = match server.uri_for(path, query) {
            Ok(uri) => uri,
            Err(e) => return failed(format!("bad health check path: {e}")),
        };
        let mut req = Request::new(empty());
        *req.uri_mut() = uri;
        req.headers_mut()
            .insert(header::HOST, server.host_header().clone());
        req.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static("velithon-gateway-health-check"),
        );
        let transport = match &self.transport {
            Ok(transport) => transport.as_ref(),
            Err(e) => return failed(e.clone()),
        };
        match self.client.send_via(None, req, transport).await {
            Ok(res) => {
                let status = res.status().as_u16();
                // Read the body so the connection can be reused (errors don't matter).
                let _ = res.into_body().collect().await;
                let latency = Some(started.elapsed());
                if self.expected.contains(status) {
                    CheckResult {
                        healthy: true,
                        latency,
                        error: None,
                    }
                } else {
                    CheckResult {
                        healthy: false,
                        latency,
                        error: Some(format!("status {status}")),
                    }
                }
            }
            Err(e) => failed(e.to_string()),
        }
    }
}

fn failed(error: String) -> CheckResult {
    CheckResult {
        healthy: false,
        latency: None,
        error: Some(error),
    }
}
