//! Helpers shared by the integration tests: in-process hyper origin servers, a real
//! gateway on 127.0.0.1:0, a hyper-util client and a raw TCP exchange for byte-level
//! control. Every test crate uses only part of this module.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use velithon_core::balancer::{LoadBalancer, RoundRobin};
use velithon_core::client::{ClientSettings, UpstreamClient};
use velithon_core::proxy::ProxyRoute;
use velithon_core::router::Router;
use velithon_core::server::{App, RouteAction, RunningServer, ServerSettings};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// No test may run longer than this.
pub const TEST_LIMIT: Duration = Duration::from_secs(30);

/// Runs a test body, failing it instead of hanging past `TEST_LIMIT`.
pub async fn bounded<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, fut)
        .await
        .expect("the test did not finish within its time limit")
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A body fed from a channel. It has no known length, so HTTP/1.1 sends it chunked.
/// When the body is dropped, the sender's `send` fails.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

pub fn channel_body(capacity: usize) -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelBody { rx }.boxed_unsync())
}

/// Byte `i` of a deterministic test payload.
pub fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8
}

pub fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(pattern_byte).collect()
}

/// An HTTP/1.1 origin server on 127.0.0.1:0 that counts the TCP connections it accepts
/// and how many are still open.
pub struct Origin {
    pub addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Origin {
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let handler = Arc::new(handler);
        let accepts = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (acc, opn) = (accepts.clone(), open.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                opn.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let opn = opn.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let fut = (*handler)(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    opn.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepts,
            open,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Connections whose hyper connection task has not ended yet.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An origin handler answering with what it received as JSON: method, request target,
/// headers (name → list of values) and body.
pub async fn echo(req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_string(), serde_json::json!(values));
    }
    let v = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(&v).expect("json")))
        .expect("response")
}

/// Client settings for tests: defaults with a short connect timeout.
pub fn client_settings() -> ClientSettings {
    ClientSettings {
        connect_timeout: Duration::from_secs(2),
        ..ClientSettings::default()
    }
}

/// A proxy route over `urls`, round robin, no stripping, Host rewritten, 10 s timeout.
pub fn proxy_route(urls: &[String], settings: ClientSettings) -> ProxyRoute {
    ProxyRoute {
        balancer: Arc::new(
            LoadBalancer::new(urls, Box::<RoundRobin>::default()).expect("upstream urls"),
        ),
        client: Arc::new(UpstreamClient::new(settings)),
        strip_path: false,
        preserve_host: false,
        timeout: Duration::from_secs(10),
        retry: None,
        transforms: None,
        metrics: None,
        transport: None,
    }
}

/// Starts a gateway on 127.0.0.1:0 with these proxy routes, in order.
pub async fn start_gateway(routes: Vec<(&str, Option<Vec<Method>>, ProxyRoute)>) -> RunningServer {
    let mut router = Router::new();
    for (pattern, methods, route) in routes {
        router
            .add(pattern, methods, RouteAction::Proxy(route))
            .expect("route pattern");
    }
    RunningServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        Arc::new(App::new(router)),
        ServerSettings::default(),
    )
    .await
    .expect("bind gateway")
}

/// A gateway with one route `pattern` (any method) forwarding to `urls`.
pub async fn simple_gateway(pattern: &str, urls: &[String]) -> RunningServer {
    start_gateway(vec![(pattern, None, proxy_route(urls, client_settings()))]).await
}

pub fn gw_url(server: &RunningServer, path_and_query: &str) -> String {
    format!("http://{}{}", server.local_addr(), path_and_query)
}

pub type TestClient = Client<HttpConnector, Body>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response, its body read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a gateway error response: status, JSON content type and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(self.headers["content-type"], "application/json");
        assert_eq!(self.json()["code"], code, "body: {}", self.text());
    }
}

pub async fn try_send(client: &TestClient, req: Request<Body>) -> Result<Reply, BoxError> {
    let res = client.request(req).await?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub async fn send(client: &TestClient, req: Request<Body>) -> Reply {
    try_send(client, req)
        .await
        .expect("request through the gateway")
}

pub async fn get(client: &TestClient, url: &str) -> Reply {
    let req = Request::get(url).body(empty()).expect("request");
    send(client, req).await
}

/// An address nothing listens on: bound, then released.
pub fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Header lines as sent, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("raw body is JSON")
    }
}

/// Writes `request` as is and reads one response: the head, then `Content-Length` bytes
/// (or to EOF when there is none). Chunked responses are not decoded.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read head");
        assert!(n > 0, "connection closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().expect("content-length"));
    match length {
        Some(len) => {
            while body.len() < len {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "connection closed inside the body");
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None => {
            stream.read_to_end(&mut body).await.expect("read to end");
        }
    }
    RawReply {
        status,
        headers,
        body,
    }
}
