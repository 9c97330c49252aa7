//! Keeping a request body so a retry can send it again. Only a body that fits in a
//! bounded buffer is kept; a larger one streams as usual (its prefix first) and the
//! request is then not retried.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use crate::body::{empty, full, BoxError, ProxyBody};
use crate::error::{ErrorCode, GatewayError};

/// A request body, replayable or not.
pub enum Replay {
    /// The whole body, to send as often as needed.
    Bytes(Bytes),
    /// A body too large (or with trailers) to keep: it can be sent once.
    Once(ProxyBody),
    /// A `Once` body that was sent.
    Spent,
}

impl Replay {
    /// The body for one attempt; `None` when a `Once` body was sent already.
    pub fn take(&mut self) -> Option<ProxyBody> {
        match self {
            Replay::Bytes(bytes) if bytes.is_empty() => Some(empty()),
            Replay::Bytes(bytes) => Some(full(bytes.clone())),
            Replay::Once(_) => match std::mem::replace(self, Replay::Spent) {
                Replay::Once(body) => Some(body),
                _ => None,
            },
            Replay::Spent => None,
        }
    }

    pub fn is_replayable(&self) -> bool {
        matches!(self, Replay::Bytes(_))
    }
}

/// Reads `body` into memory if it is at most `limit` bytes; otherwise returns what was
/// read followed by the rest, unbuffered.
pub async fn buffer(body: ProxyBody, limit: usize) -> Result<Replay, GatewayError> {
    if body.is_end_stream() {
        return Ok(Replay::Bytes(Bytes::new()));
    }
    if body.size_hint().lower() > limit as u64 {
        return Ok(Replay::Once(body));
    }
    let mut body = body;
    let mut buf = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Ok(Replay::Bytes(buf.freeze())),
            Some(Err(e)) => {
                return Err(GatewayError::new(
                    ErrorCode::BadRequest,
                    "the client's request body broke off",
                )
                .with_cause(e))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    buf.extend_from_slice(&data);
                    if buf.len() > limit {
                        return Ok(Replay::Once(prefixed(buf.freeze(), None, body)));
                    }
                }
                Err(trailers) => {
                    // Trailers end the body; keep them by sending it once.
                    return Ok(Replay::Once(prefixed(buf.freeze(), Some(trailers), body)));
                }
            },
        }
    }
}

fn prefixed(prefix: Bytes, trailers: Option<Frame<Bytes>>, rest: ProxyBody) -> ProxyBody {
    Prefixed {
        prefix: (!prefix.is_empty()).then_some(prefix),
        trailers,
        rest,
    }
    .boxed_unsync()
}

/// Bytes already read, then the frames still to come.
struct Prefixed {
    prefix: Option<Bytes>,
    trailers: Option<Frame<Bytes>>,
    rest: ProxyBody,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(trailers)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + extra);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + extra);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::boxed;
    use std::collections::VecDeque;

    /// A body of fixed chunks with no length known in advance (as chunked uploads).
    struct Chunks(VecDeque<&'static str>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(Bytes::from(c)))))
        }
    }

    fn chunks(parts: &[&'static str]) -> ProxyBody {
        boxed(Chunks(parts.iter().copied().collect()))
    }

    async fn text(body: ProxyBody) -> String {
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_small_body_is_kept_and_sent_again() {
        let mut replay = buffer(chunks(&["ab", "cd"]), 8).await.unwrap();
        assert!(replay.is_replayable());
        assert_eq!(text(replay.take().unwrap()).await, "abcd");
        assert_eq!(text(replay.take().unwrap()).await, "abcd");
        let mut none = buffer(empty(), 8).await.unwrap();
        assert!(none.is_replayable());
        assert_eq!(text(none.take().unwrap()).await, "");
    }

    #[tokio::test]
    async fn a_large_body_streams_once_with_nothing_lost() {
        let mut replay = buffer(chunks(&["abc", "def", "ghi"]), 4).await.unwrap();
        assert!(!replay.is_replayable());
        assert_eq!(text(replay.take().unwrap()).await, "abcdefghi");
        assert!(replay.take().is_none());
        let known = full(Bytes::from_static(b"0123456789"));
        let replay = buffer(known, 4).await.unwrap();
        assert!(
            !replay.is_replayable(),
            "a known length over the limit is not read"
        );
    }
}
