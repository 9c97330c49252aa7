//! When a failed attempt is tried again: which statuses and errors, how many attempts,
//! how long to wait between them, and the budget that keeps retries from multiplying an
//! outage.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorCode;
use crate::resilience::RetryBudget;
use crate::status_set::StatusSet;

pub struct RetryPolicy {
    /// Every attempt counts, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The first retry waits up to this (full jitter), later ones `backoff_factor` times more.
    pub base_delay: Duration,
    pub backoff_factor: f64,
    pub max_delay: Duration,
    pub retryable_status: StatusSet,
    pub retryable_errors: Vec<ErrorCode>,
    /// Retry methods that are not idempotent (POST, PATCH) too.
    pub retry_non_idempotent: bool,
    /// Each attempt's own timeout; the route timeout still bounds them all.
    pub per_try_timeout: Option<Duration>,
    /// A request body up to this size is kept for replay; a larger one is not retried.
    pub max_replay_body: usize,
    pub budget: Option<Arc<RetryBudget>>,
    /// A user's own rule (e.g. a JS function); `None` from it defers to the default rule.
    pub decider: Option<Arc<dyn RetryDecider>>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            backoff_factor: 2.0,
            max_delay: Duration::from_secs(2),
            retryable_status: [502, 503, 504].into_iter().collect(),
            retryable_errors: vec![
                ErrorCode::UpstreamConnect,
                ErrorCode::UpstreamTls,
                ErrorCode::UpstreamTimeout,
                ErrorCode::UpstreamProtocol,
            ],
            retry_non_idempotent: false,
            per_try_timeout: None,
            max_replay_body: 64 * 1024,
            budget: None,
            decider: None,
        }
    }
}

/// What a user's retry rule is told of one finished attempt.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub method: String,
    /// The server that answered (its URL as configured).
    pub server: String,
    /// The response status, or `None` when the attempt failed without one.
    pub status: Option<u16>,
    /// The response headers (lower-case names, values as latin-1).
    pub headers: Vec<(String, String)>,
    /// The error code when there was no response (`VG_UPSTREAM_CONNECT`, …).
    pub error: Option<&'static str>,
}

pub type DecideFuture = Pin<Box<dyn Future<Output = Option<bool>> + Send>>;

pub trait RetryDecider: Send + Sync + 'static {
    /// Whether to try again after this attempt; `None` lets the default rule decide.
    fn decide(&self, report: AttemptReport) -> DecideFuture;
}

impl RetryPolicy {
    /// The default rule for an attempt that ended with `status` or `error`.
    pub fn wants_retry(&self, status: Option<u16>, error: Option<ErrorCode>) -> bool {
        match (status, error) {
            (Some(status), _) => self.retryable_status.contains(status),
            (None, Some(code)) => self.retryable_errors.contains(&code),
            (None, None) => false,
        }
    }
}

/// Methods that may be sent twice without changing the outcome (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::TRACE
            | http::Method::PUT
            | http::Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rule_retries_gateway_errors_and_broken_connections() {
        let p = RetryPolicy::default();
        assert!(p.wants_retry(Some(503), None));
        assert!(!p.wants_retry(Some(500), None));
        assert!(p.wants_retry(None, Some(ErrorCode::UpstreamConnect)));
        assert!(!p.wants_retry(None, Some(ErrorCode::PoolTimeout)));
        assert!(is_idempotent(&http::Method::PUT));
        assert!(!is_idempotent(&http::Method::POST));
    }
}
