//! A panic while answering one request must not take anything else down: it becomes a
//! 500 with the usual JSON body, and the connection stays usable.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use crate::body::ProxyBody;
use crate::error::{ErrorCode, GatewayError};

pin_project_lite::pin_project! {
    pub struct PanicGuard<F> {
        #[pin]
        inner: F,
    }
}

impl<F> PanicGuard<F> {
    pub fn new(inner: F) -> Self {
        Self { inner }
    }
}

/// Never an error: hyper's service wants a `Result`, and a panic is a 500.
impl<F: Future<Output = Response<ProxyBody>>> Future for PanicGuard<F> {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(_) => Poll::Ready(Ok(GatewayError::new(
                ErrorCode::Internal,
                "the gateway failed to answer this request",
            )
            .to_response())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_a_500() {
        let res = PanicGuard::new(async {
            let fail = std::hint::black_box(true);
            if fail {
                panic!("boom");
            }
            Response::new(crate::body::empty())
        })
        .await
        .unwrap();
        assert_eq!(res.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
    }
}
