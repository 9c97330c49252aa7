//! The data plane's metrics: lock-free counters and latency histograms for requests
//! (by status, class and route), upstream requests (by server), retries and rejections;
//! a serializable [`MetricsSnapshot`] and its Prometheus text rendering.
//!
//! ```
//! use std::time::Duration;
//! use velithon_core::metrics::{prometheus, Metrics};
//!
//! let metrics = Metrics::new();
//! let users = metrics.route("GET /users/{id}"); // at setup
//! metrics.record(Some(users), 200, Duration::from_millis(12)); // per request
//! metrics.record_upstream("http://10.0.0.1:8080", 200, Duration::from_millis(10));
//! let snapshot = metrics.snapshot();
//! assert_eq!(snapshot.total_requests, 1);
//! let text = prometheus::render(&snapshot, &[]);
//! assert!(text.contains("velithon_requests_total{status=\"200\"} 1\n"));
//! ```

pub mod histogram;
pub mod prometheus;
pub mod registry;

pub use histogram::{HistogramSnapshot, LatencyHistogram, PROMETHEUS_BOUNDS_US};
pub use prometheus::{render, Gauge};
pub use registry::{
    ClassCounts, Metrics, MetricsSnapshot, Rejection, RejectionCounts, RouteId, RouteSnapshot,
    UpstreamSnapshot,
};
