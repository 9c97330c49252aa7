//! What the pooled HTTPS / HTTP/2 clients (the default one and each transport's) are
//! built from: a TCP connector with keepalive, the whole TCP + TLS connect bounded by
//! `connectTimeout`, and hyper-util's legacy client with HTTP/2 keep-alive pings.
//!
//! `HttpConnector::set_connect_timeout` bounds the TCP connect only, and hyper-rustls adds
//! no bound of its own: an upstream that accepts TCP and never answers the ClientHello
//! would hold the request for the whole route timeout. `ConnectTimeout` wraps the
//! connector so the handshake counts too; expiry is an `io::Error` of kind `TimedOut`,
//! which `client::classify` reports as "connecting to the upstream timed out" (504).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::{connect::HttpConnector, Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ClientSettings;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The connector of the legacy clients: rustls over TCP, connect bounded as a whole.
pub(super) type Connector = ConnectTimeout<hyper_rustls::HttpsConnector<HttpConnector>>;

/// How often an HTTP/2 upstream connection is pinged (while idle too), so a peer or a
/// middlebox that dropped it silently is noticed before a request is sent on it.
pub(super) const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long a ping may go unanswered before the connection is closed.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle time before TCP keepalive probes on upstream connections.
pub(super) const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// TCP: any scheme (TLS is layered on top), no Nagle, keepalive, the TCP connect bounded.
pub(super) fn http_connector(settings: &ClientSettings) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_connect_timeout(Some(settings.connect_timeout));
    http
}

/// `connector` with its whole connect (TCP and TLS) bounded by `connect_timeout`.
pub(super) fn timed<C>(connector: C, connect_timeout: Duration) -> ConnectTimeout<C> {
    ConnectTimeout {
        inner: connector,
        timeout: connect_timeout,
    }
}

/// The pool settings of `settings` and HTTP/2 keep-alive pings every `h2_ping`
/// (`H2_PING_INTERVAL` outside tests), idle connections included.
pub(super) fn client_builder(settings: &ClientSettings, h2_ping: Duration) -> Builder {
    // Under a connection cap, idle connections beyond it would break the cap.
    let max_idle = settings
        .max_connections_per_host
        .map_or(settings.max_idle_per_host, |cap| {
            cap.min(settings.max_idle_per_host)
        });
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(settings.keep_alive_timeout)
        .pool_max_idle_per_host(max_idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(h2_ping)
        .http2_keep_alive_timeout(H2_PING_TIMEOUT)
        .http2_keep_alive_while_idle(true);
    builder
}

/// A connector whose connects fail with `io::ErrorKind::TimedOut` after `timeout`.
#[derive(Clone, Debug)]
pub(super) struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
}

impl<C> tower_service::Service<Uri> for ConnectTimeout<C>
where
    C: tower_service::Service<Uri>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(done) => done.map_err(Into::into),
                Err(_) => Err(Box::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the connect (TCP and TLS) took longer than {} ms",
                        timeout.as_millis()
                    ),
                )) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty;
    use crate::error::ErrorCode;
    use http::Request;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A TCP server that accepts and never says a word (never answers a ClientHello).
    async fn silent() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        (addr, task)
    }

    fn settings() -> ClientSettings {
        ClientSettings {
            connect_timeout: Duration::from_millis(200),
            ..ClientSettings::default()
        }
    }

    fn get(uri: String) -> Request<crate::body::ProxyBody> {
        let mut req = Request::new(empty());
        *req.uri_mut() = uri.parse().unwrap();
        req
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tls_handshake_counts_in_the_connect_timeout() {
        let (addr, task) = silent().await;
        let uri = format!("https://{addr}/");
        // The default HTTPS client.
        let client = super::super::UpstreamClient::new(settings());
        let started = Instant::now();
        let sent = tokio::time::timeout(Duration::from_secs(5), client.send(get(uri.clone())));
        let err = sent
            .await
            .expect("bounded by the connect timeout")
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::UpstreamTimeout, "{err:?}");
        assert_eq!(err.message(), "connecting to the upstream timed out");
        assert!(started.elapsed() < Duration::from_secs(2));
        // A transport (TLS options), ALPN-gated and HTTP/2 only alike.
        for http2 in [false, true] {
            let transport = super::super::UpstreamTransport::new(
                super::super::TransportOptions {
                    http2,
                    ..Default::default()
                },
                &settings(),
            )
            .unwrap();
            let started = Instant::now();
            let sent = tokio::time::timeout(
                Duration::from_secs(5),
                client.send_via(None, get(uri.clone()), Some(&transport)),
            );
            let err = sent
                .await
                .expect("bounded by the connect timeout")
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::UpstreamTimeout, "{err:?}");
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        task.abort();
    }

    /// Frames of a minimal h2c server: what the client sends, by type.
    async fn pinged_within(h2_ping: Duration, wait: Duration) -> bool {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut preface = [0u8; 24];
            socket.read_exact(&mut preface).await.unwrap();
            assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
            // An empty SETTINGS frame, then read frames; never answer the request.
            socket
                .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
                .await
                .unwrap();
            loop {
                let mut head = [0u8; 9];
                if socket.read_exact(&mut head).await.is_err() {
                    return false;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let (kind, flags) = (head[3], head[4]);
                let mut payload = vec![0u8; len];
                if socket.read_exact(&mut payload).await.is_err() {
                    return false;
                }
                match (kind, flags & 1) {
                    (4, 0) => socket
                        .write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0])
                        .await
                        .unwrap(),
                    (6, 0) => return true, // a PING (not an ACK)
                    _ => {}
                }
            }
        });
        let mut s = settings();
        s.connect_timeout = Duration::from_secs(2);
        let client: Client<Connector, crate::body::ProxyBody> =
            client_builder(&s, h2_ping).http2_only(true).build(timed(
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(super::super::tls::default_client_config())
                    .https_or_http()
                    .enable_http2()
                    .wrap_connector(http_connector(&s)),
                s.connect_timeout,
            ));
        // The request only opens the connection (the server never answers it); it ends
        // with an error once the server returns and drops the socket.
        let request = tokio::spawn(client.request(get(format!("http://{addr}/"))));
        let pinged = tokio::time::timeout(wait, server)
            .await
            .map(|r| r.unwrap())
            .unwrap_or(false);
        request.abort();
        pinged
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http2_connections_are_pinged() {
        assert!(pinged_within(Duration::from_millis(100), Duration::from_secs(3)).await);
    }
}
