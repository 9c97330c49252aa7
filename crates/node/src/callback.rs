//! The one bridge from the data plane to JavaScript. Every user function (route
//! handler, strategy, health check, transformer, …) is called through `JsCallback`:
//!
//! - a napi ThreadsafeFunction, called non-blocking and fire-and-forget: a data-plane
//!   thread never waits on the JS thread, it awaits a oneshot channel;
//! - each call carries a token; JS answers with a plain synchronous native call
//!   (`complete(token, value)` or `fail(token, why)`), whether the user's function
//!   returned a value or a Promise. No Promise is converted and no per-call threadsafe
//!   function is created, so a call costs one queue push and one JS function call;
//! - a per-call timeout; a throw, a rejection, a wrong return type (the facade checks
//!   it) or a timeout become a `CallbackError` naming the option, never a panic. The
//!   caller picks the fallback;
//! - weak: a pending call does not keep Node alive (the app's listener does).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use napi::bindgen_prelude::{Function, JsValuesTupleIntoVec, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use tokio::sync::oneshot;
use velithon_core::{ErrorCode, GatewayError};

/// Values waiting for their owner, by token (tokens wrap at 2^32, far beyond anything
/// in flight).
pub struct Registry<T> {
    next: AtomicU32,
    waiting: Mutex<HashMap<u32, T>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self {
            next: AtomicU32::new(1),
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Registry<T> {
    pub fn insert(&self, value: T) -> u32 {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(token, value);
        token
    }

    pub fn take(&self, token: u32) -> Option<T> {
        self.lock().remove(&token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, T>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Clone> Registry<T> {
    pub fn get(&self, token: u32) -> Option<T> {
        self.lock().get(&token).cloned()
    }
}

/// Removes a token from its registry when dropped.
struct Forget<'a, T> {
    replies: &'a Registry<T>,
    token: u32,
}

impl<T> Drop for Forget<'_, T> {
    fn drop(&mut self) {
        self.replies.take(self.token);
    }
}

type Tsfn<Args> = ThreadsafeFunction<Args, Unknown<'static>, Args, Status, false, true>;

pub struct JsCallback<Args, Ret>
where
    Args: JsValuesTupleIntoVec + 'static,
{
    tsfn: Tsfn<Args>,
    replies: Registry<oneshot::Sender<Result<Ret, String>>>,
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
{
    /// Wraps `func` (called on the JS thread only). `option` names it in errors.
    pub fn new(
        func: Function<'_, Args, Unknown<'static>>,
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
            replies: Registry::default(),
            option: option.into(),
            timeout,
        })
    }

    pub fn option(&self) -> &str {
        &self.option
    }

    /// Calls the function with the arguments `make(token)` builds, and waits (at most
    /// the timeout) for JS to `complete` or `fail` that token.
    pub async fn call(&self, make: impl FnOnce(u32) -> Args) -> Result<Ret, CallbackError> {
        let (tx, rx) = oneshot::channel();
        let token = self.replies.insert(tx);
        // However this ends (answer, timeout, or the caller dropped because the client
        // went away), the token leaves the registry.
        let _forget = Forget {
            replies: &self.replies,
            token,
        };
        let status = self
            .tsfn
            .call(make(token), ThreadsafeFunctionCallMode::NonBlocking);
        if status != Status::Ok {
            return Err(CallbackError::Closing);
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(why))) => Err(CallbackError::Failed(why)),
            Ok(Err(_)) => Err(CallbackError::Failed("the answer was dropped".into())),
            Err(_) => Err(CallbackError::Timeout),
        }
    }

    /// JS's answer to `token`. False when nobody waits any more (it timed out).
    pub fn complete(&self, token: u32, value: Result<Ret, String>) -> bool {
        match self.replies.take(token) {
            Some(tx) => tx.send(value).is_ok(),
            None => false,
        }
    }
}
