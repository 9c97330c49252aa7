//! One request through a load balancer: lease a server, send, report the outcome to
//! the server's breaker and outlier detection, and, when a retry policy allows, try
//! again on another server after a jittered backoff. The route timeout bounds all
//! attempts together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::BodyExt;

use super::retry::{is_idempotent, AttemptReport, RetryPolicy};
use super::{latin1_pairs, replay};
use super::{send_upstream, ConnInfo, ForwardOptions, Tunnel};
use crate::balancer::{InFlight, Lease, LoadBalancer, Outcome, Outcomes, PickContext, Upstream};
use crate::body::ProxyBody;
use crate::client::UpstreamClient;
use crate::error::{ErrorCode, GatewayError};
use crate::metrics::{Metrics, Rejection};
use crate::resilience::{clock, full_jitter, random_unit};

/// How the first server of a request is chosen.
#[derive(Clone, Copy)]
pub enum FirstPick<'a> {
    /// The balancer's strategy (a user strategy included).
    Balancer,
    /// A server a user strategy named already (by URL); unknown or unavailable → fallback.
    Named(&'a str),
}

/// Forwards `req` to a server of `balancer`, retrying as `retry` allows, with the
/// route's transformations around it.
pub async fn forward_balanced(
    balancer: &Arc<LoadBalancer>,
    client: &UpstreamClient,
    req: Request<ProxyBody>,
    conn: &ConnInfo,
    options: &ForwardOptions<'_>,
    retry: Option<&RetryPolicy>,
    first: FirstPick<'_>,
) -> Result<Response<ProxyBody>, GatewayError> {
    let Some(transforms) = options.transforms else {
        return forward_attempts(balancer, client, req, conn, options, retry, first).await;
    };
    let (req, applied) = transforms
        .apply_request(req, options.timeout)
        .await
        .inspect_err(|err| {
            if let (ErrorCode::BodyTooLarge, Some(m)) = (err.code(), options.metrics) {
                m.count_rejection(Rejection::BodyTooLarge);
            }
        })?;
    let res = forward_attempts(balancer, client, req, conn, options, retry, first)
        .await
        .map_err(|e| transforms.tag_applied(e, &applied))?;
    transforms
        .apply_response(res, &applied, options.timeout)
        .await
        .map_err(|e| transforms.tag_applied(e, &applied))
}

/// The attempts of one request: lease, send, report, maybe retry.
async fn forward_attempts(
    balancer: &Arc<LoadBalancer>,
    client: &UpstreamClient,
    req: Request<ProxyBody>,
    conn: &ConnInfo,
    options: &ForwardOptions<'_>,
    retry: Option<&RetryPolicy>,
    first: FirstPick<'_>,
) -> Result<Response<ProxyBody>, GatewayError> {
    // An upgrade is tried once: the client's side of the switch cannot be copied.
    let retry = retry.filter(|p| {
        p.max_attempts > 1
            && (p.retry_non_idempotent || is_idempotent(req.method()))
            && super::upgrade::requested(req.version(), req.headers()).is_none()
    });
    let Some(policy) = retry else {
        // One attempt: nothing to keep, nothing to copy.
        let lease = {
            let ctx = pick_context(&req, conn);
            lease_first(balancer, &ctx, first, options.metrics).await?
        };
        let upstream = lease.upstream().clone();
        let started = Instant::now();
        let result = send_upstream(&upstream, client, req, conn, options).await;
        record_attempt(options.metrics, &upstream, &result, started);
        let in_flight = lease.finish(outcome_of(balancer, &result));
        return Ok(with_in_flight(result?, in_flight));
    };
    // Boxed: the retry loop's future is large, and the one-attempt path above (most
    // routes) should not carry its size (futures are moved whole on every request).
    Box::pin(forward_with_retries(
        balancer, client, req, conn, options, policy, first,
    ))
    .await
}

/// The attempts of one request under a retry policy: the body kept (up to its bound) to
/// send again, each attempt reported, the next one after a jittered backoff.
async fn forward_with_retries(
    balancer: &Arc<LoadBalancer>,
    client: &UpstreamClient,
    req: Request<ProxyBody>,
    conn: &ConnInfo,
    options: &ForwardOptions<'_>,
    policy: &RetryPolicy,
    first: FirstPick<'_>,
) -> Result<Response<ProxyBody>, GatewayError> {
    if let Some(budget) = &policy.budget {
        budget.deposit(clock::now_nanos());
    }
    let (parts, body) = req.into_parts();
    // Reading a (small) body to keep it has its own bound, the route timeout: a slow
    // client must not eat the upstream's time.
    let mut body = match tokio::time::timeout(
        options.timeout,
        replay::buffer(body, policy.max_replay_body),
    )
    .await
    {
        Ok(body) => body?,
        Err(_) => {
            return Err(GatewayError::new(
                ErrorCode::BadRequest,
                "the request body did not arrive in time",
            ))
        }
    };
    let ctx = PickContext {
        method: &parts.method,
        path: parts.uri.path(),
        headers: &parts.headers,
        client: Some(conn.peer),
    };
    let mut lease = lease_first(balancer, &ctx, first, options.metrics).await?;
    // The route timeout bounds the attempts (and the waits between them) from here.
    let deadline = Instant::now() + options.timeout;
    let full_try = policy
        .per_try_timeout
        .map_or(options.timeout, |t| t.min(options.timeout));
    let mut tried: Vec<Arc<Upstream>> = Vec::new();
    let mut attempt = 1;
    loop {
        let upstream = lease.upstream().clone();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let try_options = ForwardOptions {
            timeout: full_try.min(remaining),
            ..*options
        };
        // An attempt the overall deadline cut short says little about its server.
        let cut_short = try_options.timeout < full_try;
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
        let started = Instant::now();
        let result = send_upstream(&upstream, client, attempt_req, conn, &try_options).await;
        record_attempt(options.metrics, &upstream, &result, started);
        let outcomes = match &result {
            Err(err) if cut_short && err.code() == ErrorCode::UpstreamTimeout => {
                Outcomes::both(Outcome::Neutral)
            }
            _ => outcome_of(balancer, &result),
        };
        let in_flight = lease.finish(outcomes);

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
        if last || !should_retry(policy, &parts.method, &upstream, asked, deadline).await {
            return Ok(with_in_flight(result?, in_flight));
        }
        let delay = full_jitter(
            attempt,
            policy.base_delay,
            policy.backoff_factor,
            policy.max_delay,
            random_unit(),
        );
        // Retry only when the next attempt would still have a useful share of time.
        let least = (options.timeout / 10).min(Duration::from_millis(50));
        let out_of_time = Instant::now() + delay + least >= deadline;
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
                if let Some(m) = options.metrics {
                    m.count_retry();
                }
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
    metrics: Option<&Metrics>,
) -> Result<Lease, GatewayError> {
    let lease = match first {
        FirstPick::Balancer => balancer.acquire_async(ctx, &[]).await,
        FirstPick::Named(url) => balancer.acquire_named(url, ctx, &[]),
    };
    if let Err(err) = &lease {
        count_lease_error(metrics, err);
    }
    lease
}

/// Counts a refused lease (open breakers, no healthy server) in the metrics.
pub(crate) fn count_lease_error(metrics: Option<&Metrics>, err: &GatewayError) {
    if let Some(m) = metrics {
        match err.code() {
            ErrorCode::CircuitOpen => m.count_rejection(Rejection::CircuitOpen),
            ErrorCode::NoHealthyUpstream => m.count_rejection(Rejection::NoHealthyUpstream),
            _ => {}
        }
    }
}

/// Counts one attempt against its server in the metrics (status 0: no response).
fn record_attempt(
    metrics: Option<&Metrics>,
    upstream: &Upstream,
    result: &Result<Response<ProxyBody>, GatewayError>,
    started: Instant,
) {
    let status = result.as_ref().map_or(0, |r| r.status().as_u16());
    record_attempt_status(metrics, upstream, status, started);
}

/// Counts one attempt against its server in the metrics (status 0: no response).
pub(crate) fn record_attempt_status(
    metrics: Option<&Metrics>,
    upstream: &Upstream,
    status: u16,
    started: Instant,
) {
    if let Some(m) = metrics {
        m.record_upstream(upstream.url(), status, started.elapsed());
    }
}

/// How an attempt counts against its server.
fn outcome_of(
    balancer: &LoadBalancer,
    result: &Result<Response<ProxyBody>, GatewayError>,
) -> Outcomes {
    match result {
        Ok(res) => balancer.outcomes_of_status(res.status().as_u16()),
        Err(err) => outcome_of_error(err.code()),
    }
}

/// How a failed attempt counts against its server: the server's failures count, local
/// refusals do not.
pub(crate) fn outcome_of_error(code: ErrorCode) -> Outcomes {
    Outcomes::both(match code {
        ErrorCode::UpstreamConnect
        | ErrorCode::UpstreamTls
        | ErrorCode::UpstreamTimeout
        | ErrorCode::UpstreamProtocol => Outcome::Failure,
        _ => Outcome::Neutral,
    })
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
    deadline: Instant,
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
        headers: attempt.headers.map_or_else(Vec::new, latin1_pairs),
        error: attempt.error.map(ErrorCode::as_str),
    };
    // The user's rule may not take longer than the request has left.
    match tokio::time::timeout_at(deadline.into(), decider.decide(report)).await {
        Ok(answer) => answer.unwrap_or(default),
        Err(_) => default,
    }
}

/// Keeps the server's in-flight count until the response body is done or dropped.
/// An accepted upgrade keeps it for as long as its tunnel lives (so least-connections
/// counts open WebSockets).
fn with_in_flight(res: Response<ProxyBody>, in_flight: InFlight) -> Response<ProxyBody> {
    let in_flight = match Tunnel::keep_while_open(&res, in_flight) {
        Ok(()) => return res,
        Err(in_flight) => in_flight,
    };
    res.map(|body| {
        body.map_frame(move |frame| {
            let _held = &in_flight;
            frame
        })
        .boxed_unsync()
    })
}
