//! A `HealthChecker`'s `customCheckFunction`, called through the callback bridge:
//! `(token, serverUrl)`; JS answers `completeCheck(token, healthy, latencyMs, error)`.
//! A throw, a rejection, a bad answer or a timeout count as an unhealthy check.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::FnArgs;
use velithon_core::health::{CheckFuture, CheckResult, CustomCheck};

use crate::callback::{CallbackError, JsCallback};

pub type CheckArgs = FnArgs<(u32, String)>;
pub type CheckCallback = JsCallback<CheckArgs, CheckResult>;

pub struct JsHealthCheck {
    pub callback: Arc<CheckCallback>,
}

impl CustomCheck for JsHealthCheck {
    fn check(&self, server_url: String) -> CheckFuture {
        let callback = self.callback.clone();
        Box::pin(async move {
            match callback
                .call(|token| FnArgs::from((token, server_url)))
                .await
            {
                Ok(result) => result,
                Err(CallbackError::Failed(why)) => unhealthy(why),
                Err(CallbackError::Timeout) => {
                    unhealthy("customCheckFunction did not answer in time".into())
                }
                Err(CallbackError::Closing) => unhealthy("Node is shutting down".into()),
            }
        })
    }
}

fn unhealthy(error: String) -> CheckResult {
    CheckResult {
        healthy: false,
        latency: None,
        error: Some(error),
    }
}

/// JS's answer, as a `CheckResult`.
pub fn check_result(healthy: bool, latency_ms: f64, error: String) -> CheckResult {
    CheckResult {
        healthy,
        latency: (latency_ms >= 0.0 && latency_ms.is_finite())
            .then(|| Duration::from_micros((latency_ms * 1000.0) as u64)),
        error: (!error.is_empty()).then_some(error),
    }
}
