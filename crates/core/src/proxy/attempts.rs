//! One request through a load balancer: lease a server, send, report the outcome to
//! the server's breaker and outlier detection, and, when a retry policy allows, try
//! again on another server after a jittered backoff. The route timeout bounds all
//! attempts together.

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use http_body_util::BodyExt;

use super::replay;
use super::retry::{is_idempotent, AttemptReport, RetryPolicy};
use super::{send_upstream, ConnInfo, ForwardOptions};
use crate::balancer::{InFlight, Lease, LoadBalancer, Outcome, Outcomes, PickContext, Upstream};
use crate::body::ProxyBody;
use crate::client::UpstreamClient;
use crate::error::{ErrorCode, GatewayError};
use crate::resilience::{clock, full_jitter, random_unit};

/// How the first server of a request is chosen.
#[derive(Clone, Copy)]
pub enum FirstPick<'a> {
    /// The balancer's strategy (a user strategy included).
    Balancer,
    /// A server a user strategy named already (by URL); unknown or unavailable → fallback.
    Named(&'a str),
}

/// Forwards `req` to a server of `balancer`, retrying as `retry` allows.
pub async fn forward_balanced(
    balancer: &Arc<LoadBalancer>,
    client: &UpstreamClient,
    req: Request<ProxyBody>,
    conn: &ConnInfo,
    options: &ForwardOptions<'_>,
    retry: Option<&RetryPolicy>,
    first: FirstPick<'_>,
) -> Result<Response<ProxyBody>, GatewayError> {
    let retry = retry
        .filter(|p| p.max_attempts > 1 && (p.retry_non_idempotent || is_idempotent(req.method())));
    let Some(policy) = retry else {
        // One attempt: nothing to keep, nothing to copy.
        let lease = {
            let ctx = pick_context(&req, conn);
            lease_first(balancer, &ctx, first).await?
        };
        let upstream = lease.upstream().clone();
        let result = send_upstream(&upstream, client, req, conn, options).await;
        let in_flight = lease.finish(outcome_of(balancer, &result));
        return Ok(with_in_flight(result?, in_flight));
    };
    if let Some(budget) = &policy.budget {
        budget.deposit(clock::now_nanos());
    }
    let deadline = Instant::now() + options.timeout;
    let (parts, body) = req.into_parts();
    let mut body = replay::buffer(body, policy.max_replay_body).await?;
    let ctx = PickContext {
        method: &parts.method,
        path: parts.uri.path(),
        headers: &parts.headers,
        client: Some(conn.peer),
    };
    let mut lease = lease_first(balancer, &ctx, first).await?;
    let mut tried: Vec<Arc<Upstream>> = Vec::new();
    let mut attempt = 1;
    loop {
        let upstream = lease.upstream().clone();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let try_options = ForwardOptions {
            timeout: policy
                .per_try_timeout
                .map_or(remaining, |t| t.min(remaining)),
            ..*options
        };
        let Some(attempt_body) = body.take() else {
            return Err(GatewayError::new(
                ErrorCode::Internal,
                "a request body was needed twice",
            ));
        };
        let mut attempt_req = Request::new(attempt_body);
        *attempt_req.method_mut() = parts.method.clone();
        *attempt_req.uri_mut() = parts.uri.clone();
        *attempt_req.version_mut() = parts.version;
        *attempt_req.headers_mut() = parts.headers.clone();
        let result = send_upstream(&upstream, client, attempt_req, conn, &try_options).await;
        let in_flight = lease.finish(outcome_of(balancer, &result));

        let last = attempt >= policy.max_attempts || !body.is_replayable();
        let (status, error, headers) = match &result {
            Ok(res) => (Some(res.status().as_u16()), None, Some(res.headers())),
            Err(err) => (None, Some(err.code()), None),
        };
        let asked = Attempt {
            number: attempt,
            status,
            error,
            headers,
        };
        if last || !should_retry(policy, &parts.method, &upstream, asked).await {
            return Ok(with_in_flight(result?, in_flight));
        }
        let delay = full_jitter(
            attempt,
            policy.base_delay,
            policy.backoff_factor,
            policy.max_delay,
            random_unit(),
        );
        let out_of_time = Instant::now() + delay >= deadline;
        let out_of_budget = policy
            .budget
            .as_ref()
            .is_some_and(|b| !b.try_withdraw(clock::now_nanos()));
        if out_of_time || out_of_budget {
            return Ok(with_in_flight(result?, in_flight));
        }
        tokio::time::sleep(delay).await;
        tried.push(upstream);
        match balancer.acquire(&ctx, &tried) {
            Ok(next) => {
                // The answer being replaced is dropped here, its connection with it.
                drop(result);
                drop(in_flight);
                lease = next;
                attempt += 1;
            }
            Err(_) => return Ok(with_in_flight(result?, in_flight)),
        }
    }
}

fn pick_context<'r>(req: &'r Request<ProxyBody>, conn: &ConnInfo) -> PickContext<'r> {
    PickContext {
        method: req.method(),
        path: req.uri().path(),
        headers: req.headers(),
        client: Some(conn.peer),
    }
}

async fn lease_first(
    balancer: &Arc<LoadBalancer>,
    ctx: &PickContext<'_>,
    first: FirstPick<'_>,
) -> Result<Lease, GatewayError> {
    match first {
        FirstPick::Balancer => balancer.acquire_async(ctx, &[]).await,
        FirstPick::Named(url) => balancer.acquire_named(url, ctx, &[]),
    }
}

/// How an attempt counts against its server.
fn outcome_of(
    balancer: &LoadBalancer,
    result: &Result<Response<ProxyBody>, GatewayError>,
) -> Outcomes {
    match result {
        Ok(res) => balancer.outcomes_of_status(res.status().as_u16()),
        Err(err) => Outcomes::both(match err.code() {
            ErrorCode::UpstreamConnect
            | ErrorCode::UpstreamTimeout
            | ErrorCode::UpstreamProtocol => Outcome::Failure,
            _ => Outcome::Neutral,
        }),
    }
}

/// One finished attempt, as the retry rule sees it (nothing here borrows the body).
struct Attempt<'a> {
    number: u32,
    status: Option<u16>,
    error: Option<ErrorCode>,
    headers: Option<&'a http::HeaderMap>,
}

async fn should_retry(
    policy: &RetryPolicy,
    method: &http::Method,
    upstream: &Upstream,
    attempt: Attempt<'_>,
) -> bool {
    if attempt.error.is_some_and(|code| !code.is_retryable()) {
        // Local refusals (a full pool, a bad request) are not the server's to retry.
        return false;
    }
    let default = policy.wants_retry(attempt.status, attempt.error);
    let Some(decider) = &policy.decider else {
        return default;
    };
    let report = AttemptReport {
        attempt: attempt.number,
        method: method.as_str().to_string(),
        server: upstream.url().to_string(),
        status: attempt.status,
        headers: attempt.headers.map_or_else(Vec::new, |headers| {
            headers
                .iter()
                .map(|(k, v)| {
                    let value = v.as_bytes().iter().map(|&b| char::from(b)).collect();
                    (k.as_str().to_string(), value)
                })
                .collect()
        }),
        error: attempt.error.map(ErrorCode::as_str),
    };
    decider.decide(report).await.unwrap_or(default)
}

/// Keeps the server's in-flight count until the response body is done or dropped.
fn with_in_flight(res: Response<ProxyBody>, in_flight: InFlight) -> Response<ProxyBody> {
    res.map(|body| {
        body.map_frame(move |frame| {
            let _held = &in_flight;
            frame
        })
        .boxed_unsync()
    })
}
