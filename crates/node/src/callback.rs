//! The one bridge from the data plane to JavaScript. Every user function (route
//! handler, strategy, health check, transformer, …) is called through `JsCallback`:
//!
//! - a napi ThreadsafeFunction, called non-blocking: a data-plane thread never waits on
//!   the JS thread, it awaits a future;
//! - the facade always hands over an `async` wrapper, so the JS side answers with a
//!   Promise whether the user's function returned a value or a Promise;
//! - a per-call timeout; a throw, a rejection, a wrong return type or a timeout become a
//!   `CallbackError` naming the option, never a panic. The caller picks the fallback.
//! - weak: a pending callback does not keep Node alive (the app's listener does).

use std::time::Duration;

use napi::bindgen_prelude::{FromNapiValue, Function, JsValuesTupleIntoVec, Promise};
use napi::threadsafe_function::ThreadsafeFunction;
use napi::Status;
use velithon_core::{ErrorCode, GatewayError};

type Tsfn<Args, Ret> = ThreadsafeFunction<Args, Promise<Ret>, Args, Status, false, true>;

pub struct JsCallback<Args, Ret>
where
    Args: JsValuesTupleIntoVec + 'static,
    Ret: FromNapiValue + Send + 'static,
{
    tsfn: Tsfn<Args, Ret>,
    option: String,
    timeout: Duration,
}

#[derive(Debug)]
pub enum CallbackError {
    /// The function threw, its Promise rejected, or it returned a value of the wrong type.
    Failed(String),
    /// No answer within the timeout.
    Timeout,
    /// Node is shutting down; the function can no longer be called.
    Closing,
}

impl CallbackError {
    pub fn into_gateway_error(self, option: &str) -> GatewayError {
        match self {
            CallbackError::Failed(why) => GatewayError::new(
                ErrorCode::CallbackFailed,
                format!("the {option} function failed: {why}"),
            ),
            CallbackError::Timeout => GatewayError::new(
                ErrorCode::CallbackTimeout,
                format!("the {option} function did not answer in time"),
            ),
            CallbackError::Closing => GatewayError::new(
                ErrorCode::CallbackFailed,
                format!("the {option} function cannot be called: Node is shutting down"),
            ),
        }
    }
}

impl<Args, Ret> JsCallback<Args, Ret>
where
    Args: JsValuesTupleIntoVec + 'static,
    Ret: FromNapiValue + Send + 'static,
{
    /// Wraps `func` (called on the JS thread only). `option` names it in errors.
    pub fn new(
        func: Function<'_, Args, Promise<Ret>>,
        option: impl Into<String>,
        timeout: Duration,
    ) -> napi::Result<Self> {
        let tsfn = func
            .build_threadsafe_function::<Args>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        Ok(Self {
            tsfn,
            option: option.into(),
            timeout,
        })
    }

    pub fn option(&self) -> &str {
        &self.option
    }

    /// Calls the function and awaits its Promise, at most `timeout`.
    pub async fn call(&self, args: Args) -> Result<Ret, CallbackError> {
        let call = async {
            let promise = self.tsfn.call_async_catch(args).await.map_err(|e| {
                if e.status == Status::Closing {
                    CallbackError::Closing
                } else {
                    CallbackError::Failed(e.reason.clone())
                }
            })?;
            promise
                .await
                .map_err(|e| CallbackError::Failed(e.reason.clone()))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(CallbackError::Timeout),
        }
    }
}
