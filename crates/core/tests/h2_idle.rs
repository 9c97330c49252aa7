//! Idle HTTP/2 client connections: closed (GOAWAY) once no stream has been open for the
//! request-head timeout; a long stream keeps its connection.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use common::*;
use velithon_core::router::Router;
use velithon_core::server::{App, RouteAction, RunningServer, ServerSettings};

const IDLE: Duration = Duration::from_millis(300);

/// An origin: `/slow` streams 12 chunks 100 ms apart, anything else answers at once.
async fn origin() -> Origin {
    Origin::start(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow" {
            let (tx, body) = channel_body(1);
            tokio::spawn(async move {
                for i in 0..12 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if tx.send(Bytes::from(format!("{i},"))).await.is_err() {
                        return;
                    }
                }
            });
            Response::new(body)
        } else {
            Response::new(full("fast"))
        }
    })
    .await
}

async fn gateway(origin: &Origin) -> RunningServer {
    let mut router = Router::new();
    let route = proxy_route(&[format!("http://{}", origin.addr)], client_settings());
    router
        .add("/{p:path}", None, RouteAction::Proxy(route))
        .unwrap();
    let settings = ServerSettings {
        request_header_timeout: IDLE,
        ..ServerSettings::default()
    };
    RunningServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(App::new(router)),
        settings,
    )
    .await
    .unwrap()
}

/// An h2c (prior knowledge) client connection; the task ends when the connection does.
async fn h2_client(
    gw: &RunningServer,
) -> (
    hyper::client::conn::http2::SendRequest<Body>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = TcpStream::connect(gw.local_addr()).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    (
        sender,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

fn get(gw: &RunningServer, path: &str) -> Request<Body> {
    Request::builder()
        .uri(format!("http://{}{path}", gw.local_addr()))
        .body(empty())
        .unwrap()
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_head_timeout() {
    bounded(async {
        let origin = origin().await;
        let gw = gateway(&origin).await;
        let (mut sender, conn) = h2_client(&gw).await;
        let res = sender.send_request(get(&gw, "/fast")).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "fast");
        let idle_since = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the gateway closes the idle connection")
            .unwrap();
        assert!(idle_since.elapsed() >= Duration::from_millis(250));
    })
    .await;
}

#[tokio::test]
async fn a_stream_longer_than_the_timeout_keeps_its_connection() {
    bounded(async {
        let origin = origin().await;
        let gw = gateway(&origin).await;
        let (mut sender, conn) = h2_client(&gw).await;
        let started = Instant::now();
        let res = sender.send_request(get(&gw, "/slow")).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "0,1,2,3,4,5,6,7,8,9,10,11,");
        assert!(started.elapsed() >= Duration::from_millis(1100));
        // Still open for another request right after the long one.
        let res = sender.send_request(get(&gw, "/fast")).await.unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("then closed once idle")
            .unwrap();
    })
    .await;
}
