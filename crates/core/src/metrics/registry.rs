//! The data plane's counters: requests by status, class and route, upstream requests,
//! retries and rejections, with latency histograms.
//!
//! # Hot path
//!
//! * [`Metrics::record`]: relaxed atomic adds only — the status slot (a flat array indexed
//!   by `status - 100`), the global histogram, and for a route the slot found by its
//!   [`RouteId`] in a copy-on-write `ArcSwap<Vec<_>>` (one lock-free `load`, then an index).
//!   Routes are registered once, at setup, by [`Metrics::route`].
//! * [`Metrics::record_upstream`]: servers come and go (`setServers`) and are only known by
//!   URL, so they live in a copy-on-write `ArcSwap<HashMap<url, slot>>`: a lock-free `load`
//!   and one hash lookup per upstream response; the first response of a new server takes a
//!   writers' mutex and republishes the map (rare, O(servers)). Chosen over an `RwLock`
//!   because readers then never write a shared cache line (an `RwLock` read does).
//!   Counters of removed servers stay until [`Metrics::forget_upstream`].
//! * [`Metrics::count_retry`], [`Metrics::count_rejection`]: one atomic add.
//!
//! [`Metrics::snapshot`] reads everything without stopping writers; figures read at
//! slightly different instants may disagree by the requests in flight.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;

use super::histogram::{duration_us, HistogramSnapshot, LatencyHistogram};

/// A registered route: an index into the registry's route slots. Only meaningful for the
/// [`Metrics`] that issued it (a foreign id counts in the totals only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub u32);

/// Why the gateway refused a request without forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    RateLimited,
    CircuitOpen,
    NoHealthyUpstream,
    BodyTooLarge,
}

impl Rejection {
    pub const ALL: [Rejection; 4] = [
        Rejection::RateLimited,
        Rejection::CircuitOpen,
        Rejection::NoHealthyUpstream,
        Rejection::BodyTooLarge,
    ];

    /// The snake_case name used as the Prometheus `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::RateLimited => "rate_limited",
            Rejection::CircuitOpen => "circuit_open",
            Rejection::NoHealthyUpstream => "no_healthy_upstream",
            Rejection::BodyTooLarge => "body_too_large",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Status classes: `1xx` … `5xx`, then `other` (outside 100..=599; for upstreams 0 = no
/// response).
const CLASSES: usize = 6;
const OTHER_CLASS: usize = 5;
const STATUS_MIN: u16 = 100;
const STATUS_MAX: u16 = 599;

#[inline]
fn class_index(status: u16) -> usize {
    match status {
        STATUS_MIN..=STATUS_MAX => usize::from(status / 100 - 1),
        _ => OTHER_CLASS,
    }
}

struct ClassCounters([AtomicU64; CLASSES]);

impl ClassCounters {
    fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    #[inline]
    fn add(&self, status: u16) {
        self.0[class_index(status)].fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> ClassCounts {
        let c: [u64; CLASSES] = std::array::from_fn(|i| self.0[i].load(Relaxed));
        ClassCounts::from_array(c)
    }
}

/// Requests by status class. Serialized as `{"1xx":…, "2xx":…, …, "other":…}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClassCounts {
    #[serde(rename = "1xx")]
    pub informational: u64,
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "3xx")]
    pub redirection: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
    /// Statuses outside 100..=599; for upstreams, 0 = no response (connect error, timeout).
    pub other: u64,
}

impl ClassCounts {
    fn from_array(c: [u64; CLASSES]) -> Self {
        Self {
            informational: c[0],
            success: c[1],
            redirection: c[2],
            client_error: c[3],
            server_error: c[4],
            other: c[5],
        }
    }

    /// `(label, count)` for every class, in order: `1xx` … `5xx`, `other`.
    pub fn entries(&self) -> [(&'static str, u64); CLASSES] {
        [
            ("1xx", self.informational),
            ("2xx", self.success),
            ("3xx", self.redirection),
            ("4xx", self.client_error),
            ("5xx", self.server_error),
            ("other", self.other),
        ]
    }

    pub fn total(&self) -> u64 {
        self.entries().iter().map(|e| e.1).sum()
    }
}

struct RouteSlot {
    label: Box<str>,
    classes: ClassCounters,
    latency: LatencyHistogram,
}

struct UpstreamSlot {
    classes: ClassCounters,
    errors: AtomicU64,
    latency: LatencyHistogram,
}

impl UpstreamSlot {
    fn new() -> Self {
        Self {
            classes: ClassCounters::new(),
            errors: AtomicU64::new(0),
            latency: LatencyHistogram::new(),
        }
    }

    #[inline]
    fn record(&self, status: u16, us: u64) {
        self.classes.add(status);
        if status == 0 || status >= 500 {
            self.errors.fetch_add(1, Relaxed);
        }
        self.latency.record(us);
    }
}

type UpstreamMap = HashMap<Box<str>, Arc<UpstreamSlot>>;

/// The gateway's metrics registry. Share it behind an `Arc`; every method takes `&self`.
pub struct Metrics {
    /// Index `status - 100` for 100..=599.
    by_status: Box<[AtomicU64]>,
    other_status: AtomicU64,
    latency: LatencyHistogram,
    routes: ArcSwap<Vec<Arc<RouteSlot>>>,
    /// Writers' side of `routes`: label → id, also serializing registrations.
    route_ids: Mutex<HashMap<Box<str>, RouteId>>,
    upstreams: ArcSwap<UpstreamMap>,
    upstream_writer: Mutex<()>,
    retries: AtomicU64,
    rejections: [AtomicU64; 4],
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            by_status: (STATUS_MIN..=STATUS_MAX)
                .map(|_| AtomicU64::new(0))
                .collect(),
            other_status: AtomicU64::new(0),
            latency: LatencyHistogram::new(),
            routes: ArcSwap::from_pointee(Vec::new()),
            route_ids: Mutex::new(HashMap::new()),
            upstreams: ArcSwap::from_pointee(HashMap::new()),
            upstream_writer: Mutex::new(()),
            retries: AtomicU64::new(0),
            rejections: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Registers a route label (e.g. `"GET /api/{path:path}"` or just the pattern); returns
    /// its id. Called at setup, not per request. The same label gets the same id again;
    /// slots are never removed (counters are monotonic).
    pub fn route(&self, label: &str) -> RouteId {
        let mut ids = self
            .route_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = ids.get(label) {
            return id;
        }
        let current = self.routes.load_full();
        let id = RouteId(u32::try_from(current.len()).unwrap_or(u32::MAX));
        let mut next = Vec::with_capacity(current.len() + 1);
        next.extend(current.iter().cloned());
        next.push(Arc::new(RouteSlot {
            label: label.into(),
            classes: ClassCounters::new(),
            latency: LatencyHistogram::new(),
        }));
        self.routes.store(Arc::new(next));
        ids.insert(label.into(), id);
        id
    }

    /// One finished request: route (`None` when no route matched — counted in the totals
    /// only), HTTP status, duration. Lock-free.
    pub fn record(&self, route: Option<RouteId>, status: u16, duration: Duration) {
        let us = duration_us(duration);
        match status {
            STATUS_MIN..=STATUS_MAX => &self.by_status[usize::from(status - STATUS_MIN)],
            _ => &self.other_status,
        }
        .fetch_add(1, Relaxed);
        self.latency.record(us);
        if let Some(RouteId(id)) = route {
            if let Some(slot) = self.routes.load().get(id as usize) {
                slot.classes.add(status);
                slot.latency.record(us);
            }
        }
    }

    /// One request to an upstream server (its URL), with its status (0 = no response:
    /// connect error / timeout). Errors are status 0 or ≥ 500.
    pub fn record_upstream(&self, server: &str, status: u16, duration: Duration) {
        let us = duration_us(duration);
        if let Some(slot) = self.upstreams.load().get(server) {
            slot.record(status, us);
            return;
        }
        self.upstream_slot(server).record(status, us);
    }

    /// The slot of a server not (yet) in the map: inserted under the writers' mutex.
    #[cold]
    fn upstream_slot(&self, server: &str) -> Arc<UpstreamSlot> {
        let _writer = self
            .upstream_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.upstreams.load_full();
        if let Some(slot) = current.get(server) {
            return Arc::clone(slot);
        }
        let slot = Arc::new(UpstreamSlot::new());
        let mut next = (*current).clone();
        next.insert(server.into(), Arc::clone(&slot));
        self.upstreams.store(Arc::new(next));
        slot
    }

    /// Drops a server's counters (e.g. after it left the balancer for good). Returns
    /// whether it was known.
    pub fn forget_upstream(&self, server: &str) -> bool {
        let _writer = self
            .upstream_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.upstreams.load_full();
        if !current.contains_key(server) {
            return false;
        }
        let mut next = (*current).clone();
        next.remove(server);
        self.upstreams.store(Arc::new(next));
        true
    }

    /// One retry of an upstream request.
    pub fn count_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// One request refused by the gateway. Independent of [`Metrics::record`]: the refused
    /// request's response (429, 503, 413 …) is recorded there as usual.
    pub fn count_rejection(&self, why: Rejection) {
        self.rejections[why.index()].fetch_add(1, Relaxed);
    }

    /// Everything, read now. Routes in registration order, upstreams sorted by URL.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut requests_by_status = BTreeMap::new();
        let mut classes = [0u64; CLASSES];
        for (status, counter) in (STATUS_MIN..=STATUS_MAX).zip(self.by_status.iter()) {
            let n = counter.load(Relaxed);
            if n > 0 {
                requests_by_status.insert(status, n);
                classes[class_index(status)] += n;
            }
        }
        classes[OTHER_CLASS] = self.other_status.load(Relaxed);
        let requests_by_class = ClassCounts::from_array(classes);
        let latency = self.latency.snapshot();

        let routes = self
            .routes
            .load()
            .iter()
            .map(|slot| {
                let by_class = slot.classes.snapshot();
                RouteSnapshot {
                    route: slot.label.to_string(),
                    requests: by_class.total(),
                    by_class,
                    latency: slot.latency.snapshot(),
                }
            })
            .collect();

        let mut upstreams: Vec<UpstreamSnapshot> = self
            .upstreams
            .load()
            .iter()
            .map(|(server, slot)| {
                let by_class = slot.classes.snapshot();
                UpstreamSnapshot {
                    server: server.to_string(),
                    requests: by_class.total(),
                    errors: slot.errors.load(Relaxed),
                    by_class,
                    latency: slot.latency.snapshot(),
                }
            })
            .collect();
        upstreams.sort_by(|a, b| a.server.cmp(&b.server));

        let rejection = |r: Rejection| self.rejections[r.index()].load(Relaxed);
        MetricsSnapshot {
            total_requests: requests_by_class.total(),
            requests_by_status,
            requests_by_class,
            average_response_time_ms: latency.mean_ms,
            latency,
            routes,
            upstreams,
            retries: self.retries.load(Relaxed),
            rejections: RejectionCounts {
                rate_limited: rejection(Rejection::RateLimited),
                circuit_open: rejection(Rejection::CircuitOpen),
                no_healthy_upstream: rejection(Rejection::NoHealthyUpstream),
                body_too_large: rejection(Rejection::BodyTooLarge),
            },
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("requests", &self.latency.count())
            .field("routes", &self.routes.load().len())
            .field("upstreams", &self.upstreams.load().len())
            .finish_non_exhaustive()
    }
}

/// Everything counted, at one moment. Serialized in camelCase.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSnapshot {
    /// Every recorded request: the sum of `requestsByStatus` and `requestsByClass.other`.
    pub total_requests: u64,
    /// Statuses 100..=599 seen at least once (others are counted in `requestsByClass.other`).
    pub requests_by_status: BTreeMap<u16, u64>,
    pub requests_by_class: ClassCounts,
    /// `latency.meanMs`.
    pub average_response_time_ms: f64,
    pub latency: HistogramSnapshot,
    pub routes: Vec<RouteSnapshot>,
    pub upstreams: Vec<UpstreamSnapshot>,
    pub retries: u64,
    pub rejections: RejectionCounts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSnapshot {
    pub route: String,
    pub requests: u64,
    pub by_class: ClassCounts,
    pub latency: HistogramSnapshot,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSnapshot {
    /// The server's URL.
    pub server: String,
    pub requests: u64,
    /// Responses with status 0 (none) or ≥ 500.
    pub errors: u64,
    pub by_class: ClassCounts,
    pub latency: HistogramSnapshot,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectionCounts {
    pub rate_limited: u64,
    pub circuit_open: u64,
    pub no_healthy_upstream: u64,
    pub body_too_large: u64,
}

impl RejectionCounts {
    /// `(reason, count)` for every [`Rejection`], in [`Rejection::ALL`] order.
    pub fn entries(&self) -> [(Rejection, u64); 4] {
        [
            (Rejection::RateLimited, self.rate_limited),
            (Rejection::CircuitOpen, self.circuit_open),
            (Rejection::NoHealthyUpstream, self.no_healthy_upstream),
            (Rejection::BodyTooLarge, self.body_too_large),
        ]
    }
}

#[cfg(test)]
mod tests;
