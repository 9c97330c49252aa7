//! What a JS handler answers, turned into a response.

use bytes::Bytes;
use http::{HeaderName, Response, StatusCode};
use velithon_core::body::{empty, full, ProxyBody};
use velithon_core::{ErrorCode, GatewayError};

use super::request::RequestState;
use crate::latin1;

/// The facade's normalised handler result (from `respond`'s arguments).
pub struct HandlerReply {
    pub status: u32,
    /// `name\nvalue\n…`
    pub headers: String,
    pub body: Option<Bytes>,
    /// Send the upstream response `forwardRequest` produced for this request.
    pub forwarded: bool,
}

impl HandlerReply {
    pub(crate) fn into_response(self, state: &RequestState) -> Response<ProxyBody> {
        if self.forwarded {
            return state.take_forwarded().unwrap_or_else(|| {
                GatewayError::new(
                    ErrorCode::CallbackFailed,
                    "the handler returned a forwarded response that belongs to another request",
                )
                .to_response()
            });
        }
        self.build().unwrap_or_else(|err| err.to_response())
    }

    fn build(self) -> Result<Response<ProxyBody>, GatewayError> {
        let bad = |why: String| GatewayError::new(ErrorCode::CallbackFailed, why);
        let status = u16::try_from(self.status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| bad(format!("the handler returned status {}", self.status)))?;
        if status.is_informational() {
            // hyper would switch protocols (101) or send an interim answer with nothing
            // behind it; a forwarded 101 (a WebSocket) comes through `forwardRequest`.
            return Err(bad(format!(
                "the handler returned status {}; 1xx answers cannot be built by a handler",
                self.status
            )));
        }
        let body = match self.body {
            Some(bytes) if !bytes.is_empty() => full(bytes),
            _ => empty(),
        };
        let mut res = Response::new(body);
        *res.status_mut() = status;
        let headers = res.headers_mut();
        // `name\nvalue\n…`; an empty string is no headers at all.
        let mut parts = self
            .headers
            .split('\n')
            .filter(|_| !self.headers.is_empty());
        while let Some(name) = parts.next() {
            let Some(value) = parts.next() else {
                return Err(bad("the handler's headers are not name/value pairs".into()));
            };
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(format!("the handler returned a bad header name {name:?}")))?;
            let value = latin1::to_header_value(value).ok_or_else(|| {
                bad(format!(
                    "the handler returned a bad value for header {name}"
                ))
            })?;
            headers.append(name, value);
        }
        Ok(res)
    }
}
