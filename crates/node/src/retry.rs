//! `NativeRetryPolicy`: a `RetryConfig` from the facade, and its optional
//! `customRetryFunction` called through the callback bridge.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::{FnArgs, Function, Unknown};
use napi_derive::napi;
use velithon_core::proxy::{AttemptReport, DecideFuture, RetryDecider, RetryPolicy};
use velithon_core::resilience::RetryBudget;
use velithon_core::status_set::StatusSet;
use velithon_core::ErrorCode;

use crate::callback::JsCallback;
use crate::client::millis;
use crate::errors::invalid;

#[napi(object)]
pub struct RetryOptions {
    pub max_attempts: u32,
    pub base_delay_ms: f64,
    pub backoff_factor: f64,
    pub max_delay_ms: f64,
    pub retryable_status_codes: Vec<u32>,
    /// Error codes: `VG_UPSTREAM_CONNECT`, `VG_UPSTREAM_TLS`, `VG_UPSTREAM_TIMEOUT`, `VG_UPSTREAM_PROTOCOL`.
    pub retryable_errors: Vec<String>,
    pub retry_non_idempotent: bool,
    pub per_try_timeout_ms: Option<f64>,
    pub max_replay_body: u32,
    /// Retries allowed per request over the budget window (e.g. 0.2); absent: no budget.
    pub budget_ratio: Option<f64>,
    pub budget_min_per_second: u32,
}

/// `(token, attempt, method, server, status (0 = none), headers "k\nv\n…", error code)`;
/// JS answers `completeRetry(token, answer)`: 1 retry, 0 don't, 2 the default rule.
pub type RetryArgs = FnArgs<(u32, u32, String, String, u32, String, String)>;
type RetryCallback = JsCallback<RetryArgs, u32>;

#[napi]
pub struct NativeRetryPolicy {
    pub(crate) inner: Arc<RetryPolicy>,
    decider: Option<Arc<RetryCallback>>,
}

fn error_code(name: &str) -> napi::Result<ErrorCode> {
    match name {
        "VG_UPSTREAM_CONNECT" => Ok(ErrorCode::UpstreamConnect),
        "VG_UPSTREAM_TLS" => Ok(ErrorCode::UpstreamTls),
        "VG_UPSTREAM_TIMEOUT" => Ok(ErrorCode::UpstreamTimeout),
        "VG_UPSTREAM_PROTOCOL" => Ok(ErrorCode::UpstreamProtocol),
        other => Err(invalid(format!(
            "retryableErrors: {other:?} is not a retryable error code"
        ))),
    }
}

#[napi]
impl NativeRetryPolicy {
    /// `decide` is the customRetryFunction bridge (absent: the default rule alone).
    #[napi(constructor, catch_unwind)]
    pub fn new(
        options: RetryOptions,
        decide: Option<Function<'_, RetryArgs, Unknown<'static>>>,
        decide_timeout_ms: f64,
    ) -> napi::Result<Self> {
        let decider = match decide {
            Some(f) => Some(Arc::new(JsCallback::new(
                f,
                "customRetryFunction",
                millis(decide_timeout_ms),
            )?)),
            None => None,
        };
        let policy = RetryPolicy {
            max_attempts: options.max_attempts.max(1),
            base_delay: millis(options.base_delay_ms),
            backoff_factor: options.backoff_factor,
            max_delay: millis(options.max_delay_ms),
            retryable_status: options
                .retryable_status_codes
                .iter()
                .filter_map(|&s| u16::try_from(s).ok())
                .collect::<StatusSet>(),
            retryable_errors: options
                .retryable_errors
                .iter()
                .map(|e| error_code(e))
                .collect::<napi::Result<_>>()?,
            retry_non_idempotent: options.retry_non_idempotent,
            per_try_timeout: options.per_try_timeout_ms.map(millis),
            max_replay_body: options.max_replay_body as usize,
            budget: options.budget_ratio.map(|ratio| {
                Arc::new(RetryBudget::new(
                    ratio,
                    options.budget_min_per_second,
                    Duration::from_secs(10),
                ))
            }),
            decider: decider
                .clone()
                .map(|callback| Arc::new(JsRetryDecider { callback }) as Arc<dyn RetryDecider>),
        };
        Ok(Self {
            inner: Arc::new(policy),
            decider,
        })
    }

    /// The customRetryFunction's answer to `token`: 1 retry, 0 don't, 2 default rule.
    #[napi(catch_unwind)]
    pub fn complete_retry(&self, token: u32, answer: u32) -> bool {
        self.decider
            .as_ref()
            .is_some_and(|cb| cb.complete(token, Ok(answer)))
    }
}

struct JsRetryDecider {
    callback: Arc<RetryCallback>,
}

impl RetryDecider for JsRetryDecider {
    fn decide(&self, report: AttemptReport) -> DecideFuture {
        let callback = self.callback.clone();
        Box::pin(async move {
            let headers = report
                .headers
                .iter()
                .flat_map(|(k, v)| [k.as_str(), v.as_str()])
                .collect::<Vec<_>>()
                .join("\n");
            let answer = callback
                .call(|token| {
                    FnArgs::from((
                        token,
                        report.attempt,
                        report.method,
                        report.server,
                        report.status.map_or(0, u32::from),
                        headers,
                        report.error.unwrap_or("").to_string(),
                    ))
                })
                .await;
            match answer {
                Ok(0) => Some(false),
                Ok(1) => Some(true),
                // The default rule decides: when asked to, or when the function failed.
                _ => None,
            }
        })
    }
}
