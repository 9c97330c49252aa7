//! One structured error for the data plane: a stable code, who is to blame, the HTTP
//! status a client sees, and whether another attempt could succeed.

use std::fmt;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{full, ProxyBody};

/// Stable error codes. They cross the FFI as strings and never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No route matched the request path.
    NoRoute,
    /// A route matched the path but not the method.
    MethodNotAllowed,
    /// The request could not be turned into an upstream request.
    BadRequest,
    /// The TCP/TLS connection to the upstream failed.
    UpstreamConnect,
    /// The upstream did not answer (headers) within the route's timeout.
    UpstreamTimeout,
    /// The connection to the upstream broke before a response arrived.
    UpstreamProtocol,
    /// The TLS handshake with the upstream failed (certificate not trusted, expired, for
    /// another name; a client certificate required or refused).
    UpstreamTls,
    /// The load balancer had no server to offer.
    NoHealthyUpstream,
    /// Every server that is up has its circuit breaker open.
    CircuitOpen,
    /// Waited `connectionPoolTimeout` for a connection slot to the upstream.
    PoolTimeout,
    /// The client went over a rate limit.
    RateLimited,
    /// The request body is larger than the limit of whoever must buffer it.
    BodyTooLarge,
    /// A user callback (JS handler, strategy, …) threw or returned something unusable.
    CallbackFailed,
    /// A user callback did not answer within its timeout.
    CallbackTimeout,
    /// The listener could not bind its address.
    Bind,
    /// A configuration value the data plane cannot use.
    InvalidConfig,
    /// An invariant of the gateway itself broke.
    Internal,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NoRoute => "VG_NO_ROUTE",
            ErrorCode::MethodNotAllowed => "VG_METHOD_NOT_ALLOWED",
            ErrorCode::BadRequest => "VG_BAD_REQUEST",
            ErrorCode::UpstreamConnect => "VG_UPSTREAM_CONNECT",
            ErrorCode::UpstreamTimeout => "VG_UPSTREAM_TIMEOUT",
            ErrorCode::UpstreamProtocol => "VG_UPSTREAM_PROTOCOL",
            ErrorCode::UpstreamTls => "VG_UPSTREAM_TLS",
            ErrorCode::NoHealthyUpstream => "VG_NO_HEALTHY_UPSTREAM",
            ErrorCode::CircuitOpen => "VG_CIRCUIT_OPEN",
            ErrorCode::PoolTimeout => "VG_POOL_TIMEOUT",
            ErrorCode::RateLimited => "VG_RATE_LIMITED",
            ErrorCode::BodyTooLarge => "VG_BODY_TOO_LARGE",
            ErrorCode::CallbackFailed => "VG_CALLBACK_FAILED",
            ErrorCode::CallbackTimeout => "VG_CALLBACK_TIMEOUT",
            ErrorCode::Bind => "VG_BIND",
            ErrorCode::InvalidConfig => "VG_INVALID_CONFIG",
            ErrorCode::Internal => "VG_INTERNAL",
        }
    }

    /// The status a client sees when this error ends its request.
    pub const fn status(self) -> StatusCode {
        match self {
            ErrorCode::NoRoute => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::UpstreamConnect | ErrorCode::UpstreamProtocol | ErrorCode::UpstreamTls => {
                StatusCode::BAD_GATEWAY
            }
            ErrorCode::UpstreamTimeout | ErrorCode::CallbackTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::NoHealthyUpstream | ErrorCode::CircuitOpen | ErrorCode::PoolTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::CallbackFailed
            | ErrorCode::Bind
            | ErrorCode::InvalidConfig
            | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who is to blame: the client, the upstream, or the gateway.
    pub const fn blame(self) -> Blame {
        match self {
            ErrorCode::NoRoute
            | ErrorCode::MethodNotAllowed
            | ErrorCode::BadRequest
            | ErrorCode::BodyTooLarge
            | ErrorCode::RateLimited => Blame::Client,
            ErrorCode::UpstreamConnect
            | ErrorCode::UpstreamTimeout
            | ErrorCode::UpstreamProtocol
            | ErrorCode::UpstreamTls
            | ErrorCode::NoHealthyUpstream
            | ErrorCode::CircuitOpen
            | ErrorCode::PoolTimeout => Blame::Upstream,
            ErrorCode::CallbackFailed
            | ErrorCode::CallbackTimeout
            | ErrorCode::Bind
            | ErrorCode::InvalidConfig
            | ErrorCode::Internal => Blame::Gateway,
        }
    }

    /// Whether another attempt (perhaps on another server) could succeed.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::UpstreamConnect
                | ErrorCode::UpstreamTimeout
                | ErrorCode::UpstreamProtocol
                | ErrorCode::UpstreamTls
                | ErrorCode::PoolTimeout
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Client,
    Upstream,
    Gateway,
}

/// An error of the data plane, with a human message and an optional cause.
#[derive(Debug)]
pub struct GatewayError {
    code: ErrorCode,
    message: String,
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    retry_after_secs: Option<u64>,
    /// Headers the error response carries (e.g. the request id).
    headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl GatewayError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            cause: None,
            retry_after_secs: None,
            headers: Vec::new(),
        }
    }

    /// A header for the error response.
    pub fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn with_cause(
        mut self,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn is_timeout(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::UpstreamTimeout | ErrorCode::PoolTimeout
        )
    }

    /// The response a client sees: the code's status and a small JSON body, no internals.
    pub fn to_response(&self) -> Response<ProxyBody> {
        let status = self.code.status();
        let body = serde_json::json!({
            "error": status.canonical_reason().unwrap_or("Error"),
            "code": self.code.as_str(),
            "message": self.message,
        });
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let mut res = Response::new(full(bytes));
        *res.status_mut() = status;
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let retry_after = self.retry_after_secs.or(match self.code.status() {
            StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        });
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        res
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, " ({cause})")?;
        }
        Ok(())
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_response_is_small_json_with_code() {
        let err = GatewayError::new(ErrorCode::UpstreamConnect, "connection refused");
        let res = err.to_response();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "VG_UPSTREAM_CONNECT");
        assert_eq!(v["error"], "Bad Gateway");
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let res = GatewayError::new(ErrorCode::NoHealthyUpstream, "none").to_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert!(ErrorCode::UpstreamTimeout.is_retryable());
        assert!(!ErrorCode::NoRoute.is_retryable());
        assert_eq!(ErrorCode::NoRoute.blame(), Blame::Client);
    }
}
