//! A deadline for a connection's first bytes.
//!
//! hyper-util's auto builder reads the first bytes of a connection (to tell HTTP/1 from
//! HTTP/2) with no timeout of its own. On plain TCP the accept loop peeks with a timeout
//! before handing the socket over; a TLS stream cannot be peeked, so its reads go through
//! this wrapper instead: until the first read brings bytes, reading fails with
//! `TimedOut` once the deadline passes. After that it only forwards.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pin_project! {
    pub struct FirstReadDeadline<S> {
        #[pin]
        io: S,
        // Boxed: `None` for the rest of the connection once bytes came.
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl<S> FirstReadDeadline<S> {
    pub fn new(io: S, deadline: Instant) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
}

impl<S: AsyncRead> AsyncRead for FirstReadDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let Some(deadline) = this.deadline else {
            return this.io.poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    *this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                ready!(deadline.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the request-head timeout",
                )))
            }
        }
    }
}

impl<S: AsyncWrite> AsyncWrite for FirstReadDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn silence_past_the_deadline_fails_the_first_read() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = FirstReadDeadline::new(server, Instant::now() + Duration::from_secs(5));
        let mut buf = [0u8; 8];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn once_bytes_came_the_deadline_is_gone() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = FirstReadDeadline::new(server, Instant::now() + Duration::from_secs(5));
        client.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b" /").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 2);
    }
}
