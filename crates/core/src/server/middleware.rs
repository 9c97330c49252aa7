//! What every request of an app goes through around its route: the `/metrics` endpoint,
//! rate limiting, W3C trace context, metrics recording and the request observer (e.g. a
//! JS collector). Everything here is optional; an app without it pays one branch.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};

use crate::body::{full, ProxyBody};
use crate::error::{ErrorCode, GatewayError};
use crate::metrics::{Metrics, Rejection};
use crate::ratelimit::{self, Decision, RateLimiter};

/// How a rate limit keys requests.
pub enum RateKey {
    /// The client's address (after trusted proxies).
    ClientIp,
    /// A request header's value (absent → the client's address).
    Header(HeaderName),
    /// A user function (e.g. JS); `None` from it → the client's address.
    Function(Arc<dyn KeyFunction>),
}

pub type KeyFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// What a key function sees.
#[derive(Debug, Clone)]
pub struct KeyCall {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub client: String,
}

pub trait KeyFunction: Send + Sync + 'static {
    fn key(&self, call: KeyCall) -> KeyFuture;
}

pub struct RateLimitStage {
    pub limiter: Arc<RateLimiter>,
    pub key: RateKey,
}

/// One finished request, for a collector.
#[derive(Debug, Clone)]
pub struct RequestSummary {
    pub method: String,
    pub path: String,
    /// The route pattern that matched ('' when none).
    pub route: String,
    pub status: u16,
    pub duration: Duration,
    pub client: String,
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
}

/// Gets every request summary; must not block (queue, drop and count when full).
pub trait RequestObserver: Send + Sync + 'static {
    fn observe(&self, summary: RequestSummary);
}

#[derive(Default)]
pub struct Middleware {
    pub metrics: Option<Arc<Metrics>>,
    /// Serve the Prometheus text at this path (GET).
    pub metrics_path: Option<String>,
    /// Extra gauges for the Prometheus text (upstream health, breakers, …).
    pub gauges: Option<Arc<dyn Fn() -> Vec<crate::metrics::Gauge> + Send + Sync>>,
    pub rate_limit: Option<RateLimitStage>,
    /// Propagate `traceparent`, generating one when absent.
    pub traceparent: bool,
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// Requests refused by the rate limit (also counted in metrics when on).
    pub rate_limited: AtomicU64,
}

impl Middleware {
    pub fn is_empty(&self) -> bool {
        self.metrics.is_none()
            && self.metrics_path.is_none()
            && self.rate_limit.is_none()
            && !self.traceparent
            && self.observer.is_none()
    }

    /// The Prometheus text, when `req` asks for it.
    pub fn metrics_endpoint<B>(&self, req: &Request<B>) -> Option<Response<ProxyBody>> {
        let path = self.metrics_path.as_deref()?;
        if req.uri().path() != path
            || !matches!(*req.method(), http::Method::GET | http::Method::HEAD)
        {
            return None;
        }
        let metrics = self.metrics.as_ref()?;
        let gauges = self.gauges.as_ref().map(|g| g()).unwrap_or_default();
        let text = crate::metrics::render(&metrics.snapshot(), &gauges);
        let mut res = Response::new(full(text));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Some(res)
    }

    /// The rate limit's decision for `req` (and its headers), or `None` without one.
    pub async fn rate_limit<B>(&self, req: &Request<B>, client: IpAddr) -> Option<Decision> {
        let stage = self.rate_limit.as_ref()?;
        let key = match &stage.key {
            RateKey::ClientIp => client.to_string(),
            RateKey::Header(name) => match req.headers().get(name).and_then(|v| v.to_str().ok()) {
                Some(v) if !v.is_empty() => format!("h:{v}"),
                _ => client.to_string(),
            },
            RateKey::Function(f) => {
                let call = KeyCall {
                    method: req.method().as_str().to_string(),
                    path: req.uri().path().to_string(),
                    headers: crate::proxy::latin1_pairs(req.headers()),
                    client: client.to_string(),
                };
                match f.key(call).await {
                    Some(k) => format!("f:{k}"),
                    None => client.to_string(),
                }
            }
        };
        Some(stage.limiter.check(&bounded_key(key)).await)
    }

    /// 429 for a refused request, with the rate-limit headers.
    pub fn refused(&self, decision: &Decision) -> Response<ProxyBody> {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.count_rejection(Rejection::RateLimited);
        }
        let mut res = GatewayError::new(
            ErrorCode::RateLimited,
            format!(
                "too many requests; retry after {} s",
                decision.retry_after_secs.max(1)
            ),
        )
        .with_retry_after(decision.retry_after_secs.max(1))
        .to_response();
        for (k, v) in ratelimit::headers(decision) {
            res.headers_mut().insert(k, v);
        }
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        res
    }
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the last
/// entry of its `X-Forwarded-For` (the client it saw, as NGINX's `real_ip` without
/// recursion; `ip:port` and `[v6]:port` forms accepted). Only that last entry counts: an
/// entry the proxy wrote that does not parse (`unknown`) falls back to the peer, never
/// to an earlier entry the client may have forged.
pub fn client_ip<B>(req: &Request<B>, conn: &crate::proxy::ConnInfo) -> IpAddr {
    if conn.peer_is_trusted {
        let last = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        if let Some(ip) = last.and_then(parse_forwarded_ip) {
            return ip;
        }
    }
    conn.peer.ip()
}

fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// Keys longer than this are stored as a hash (bounded memory per key).
const MAX_KEY_LEN: usize = 128;

fn bounded_key(key: String) -> String {
    if key.len() <= MAX_KEY_LEN {
        return key;
    }
    use std::hash::{BuildHasher, Hasher};
    // Two fixed-key SipHashes: stable for the process, 128 bits.
    let mut a =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    a.write(key.as_bytes());
    let mut b =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    b.write_u8(0x5a);
    b.write(key.as_bytes());
    format!("#{:016x}{:016x}", a.finish(), b.finish())
}

/// Sets `traceparent` when absent or malformed: version 00, a random trace id and parent
/// id, sampled. A valid one passes untouched.
pub fn ensure_traceparent(headers: &mut http::HeaderMap) {
    let valid = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_valid_traceparent);
    if !valid {
        let value = format!(
            "00-{:016x}{:016x}-{:016x}-01",
            fastrand::u64(1..),
            fastrand::u64(..),
            fastrand::u64(1..)
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static("traceparent"), v);
        }
    }
}

fn is_valid_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    parts.len() >= 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_ip_is_the_last_forwarded_entry_of_a_trusted_proxy_only() {
        let peer: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let trusted = crate::proxy::ConnInfo::new(peer, false, true);
        let untrusted = crate::proxy::ConnInfo::new(peer, false, false);
        let req = |xff: &str| {
            Request::builder()
                .header("x-forwarded-for", xff)
                .body(())
                .unwrap()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_ip(&req("6.6.6.6, 1.2.3.4"), &trusted), ip("1.2.3.4"));
        assert_eq!(
            client_ip(&req("6.6.6.6, 1.2.3.4:5678"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(&req("6.6.6.6, [2001:db8::1]:443"), &trusted),
            ip("2001:db8::1")
        );
        // An entry the proxy wrote that is not an address never lets a forged one through.
        assert_eq!(
            client_ip(&req("6.6.6.6, unknown"), &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(client_ip(&req("6.6.6.6"), &untrusted), ip("10.0.0.1"));
        assert_eq!(bounded_key("short".into()), "short");
        let long = bounded_key("k".repeat(1000));
        assert!(long.starts_with('#') && long.len() == 33, "{long}");
        assert_eq!(long, bounded_key("k".repeat(1000)));
    }

    #[test]
    fn traceparent_is_kept_when_valid_and_made_when_not() {
        let mut h = http::HeaderMap::new();
        ensure_traceparent(&mut h);
        let made = h["traceparent"].to_str().unwrap().to_string();
        assert!(is_valid_traceparent(&made), "{made}");
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent", HeaderValue::from_static(given));
        ensure_traceparent(&mut h);
        assert_eq!(h["traceparent"], given);
        h.insert("traceparent", HeaderValue::from_static("00-zz-1-01"));
        ensure_traceparent(&mut h);
        assert_ne!(h["traceparent"], "00-zz-1-01");
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
    }
}
