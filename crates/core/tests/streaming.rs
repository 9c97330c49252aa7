//! Bodies stream through the gateway in both directions, nothing buffered, and a client
//! that goes away releases the upstream.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use common::*;

const CHUNK: usize = 16 * 1024;
const CHUNKS: usize = 64;

#[tokio::test(flavor = "multi_thread")]
async fn chunked_request_body_streams_to_the_origin_intact() {
    bounded(async {
        // The origin tells the client when the first bytes reach it; the client sends
        // the rest only then, so a gateway that buffered the request would hang here.
        let first_bytes = Arc::new(Notify::new());
        let notify = first_bytes.clone();
        let origin = Origin::start(move |req| {
            let notify = notify.clone();
            async move {
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                };
                let te = header("transfer-encoding");
                let cl = header("content-length");
                let mut body = req.into_body();
                let mut got = Vec::new();
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.expect("request body frame").into_data() {
                        if got.is_empty() && !data.is_empty() {
                            notify.notify_one();
                        }
                        got.extend_from_slice(&data);
                    }
                }
                http::Response::builder()
                    .header("x-seen-te", te)
                    .header("x-seen-cl", cl)
                    .body(full(got))
                    .unwrap()
            }
        })
        .await;
        let gw = simple_gateway("/{p:path}", &[origin.url()]).await;

        let (tx, body) = channel_body(1);
        let producer = tokio::spawn(async move {
            tx.send(Bytes::from(pattern(0, CHUNK))).await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), first_bytes.notified())
                .await
                .expect("the first chunk did not reach the origin before the body ended");
            for i in 1..CHUNKS {
                tx.send(Bytes::from(pattern(i * CHUNK, CHUNK)))
                    .await
                    .unwrap();
            }
        });
        let req = Request::post(gw_url(&gw, "/upload")).body(body).unwrap();
        let reply = send(&client(), req).await;
        producer.await.expect("producer");

        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers["x-seen-te"], "chunked");
        assert_eq!(reply.headers["x-seen-cl"], "");
        assert_eq!(reply.body.len(), CHUNK * CHUNKS);
        assert!(
            reply.body[..] == pattern(0, CHUNK * CHUNKS)[..],
            "body changed"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_mib_response_streams_back_intact() {
    const TOTAL: usize = 20 * 1024 * 1024;
    const PIECE: usize = 64 * 1024;
    bounded(async {
        // The origin sends its first piece, then waits until the client has the response
        // head: a gateway that buffered the whole response would never deliver it.
        let go = Arc::new(Notify::new());
        let gate = go.clone();
        let origin = Origin::start(move |_req| {
            let gate = gate.clone();
            async move {
                let (tx, body) = channel_body(4);
                tokio::spawn(async move {
                    let mut sent = 0;
                    while sent < TOTAL {
                        if tx.send(Bytes::from(pattern(sent, PIECE))).await.is_err() {
                            return;
                        }
                        sent += PIECE;
                        if sent == PIECE {
                            gate.notified().await;
                        }
                    }
                });
                http::Response::new(body)
            }
        })
        .await;
        let gw = simple_gateway("/{p:path}", &[origin.url()]).await;

        let req = Request::get(gw_url(&gw, "/big")).body(empty()).unwrap();
        let res = tokio::time::timeout(Duration::from_secs(5), client().request(req))
            .await
            .expect("no response head while the origin waited: the gateway buffers")
            .expect("response");
        assert_eq!(res.status(), 200);
        go.notify_one();
        let mut body = res.into_body();
        let mut received = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.expect("response frame").into_data() else {
                continue;
            };
            assert!(
                data[..] == pattern(received, data.len())[..],
                "bytes changed near offset {received}"
            );
            received += data.len();
        }
        assert_eq!(received, TOTAL);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_disconnect_mid_response_releases_the_origin() {
    bounded(async {
        let dropped = Arc::new(Notify::new());
        let signal = dropped.clone();
        let origin = Origin::start(move |_req| {
            let signal = signal.clone();
            async move {
                let (tx, body) = channel_body(1);
                tokio::spawn(async move {
                    // Never ends on its own: only a dropped body stops it.
                    while tx.send(Bytes::from_static(b"tick\n")).await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    signal.notify_one();
                });
                http::Response::new(body)
            }
        })
        .await;
        let gw = simple_gateway("/{p:path}", &[origin.url()]).await;

        let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
        stream
            .write_all(b"GET /ticks HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        while seen.windows(5).filter(|w| w == b"tick\n").count() < 3 {
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the gateway closed the stream early");
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(seen.starts_with(b"HTTP/1.1 200"));
        assert_eq!(origin.open(), 1);
        drop(stream);
        let gone = Instant::now();

        tokio::time::timeout(Duration::from_secs(3), dropped.notified())
            .await
            .expect("the origin kept streaming after the client went away");
        while origin.open() > 0 {
            assert!(
                gone.elapsed() < Duration::from_secs(3),
                "the upstream connection stayed open after the client went away"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_abort_before_the_response_head_closes_the_upstream_connection() {
    bounded(async {
        // A raw origin that reads the request, never answers, and reports when its
        // connection is closed by the gateway.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got_request = Arc::new(Notify::new());
        let closed = Arc::new(Notify::new());
        let (got, gone) = (got_request.clone(), closed.clone());
        let origin = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                assert!(n > 0, "the gateway hung up before sending the request");
                head.extend_from_slice(&buf[..n]);
            }
            got.notify_one();
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            gone.notify_one();
        });
        let gw = simple_gateway("/{p:path}", &[format!("http://{addr}")]).await;

        let mut stream = TcpStream::connect(gw.local_addr()).await.unwrap();
        stream
            .write_all(b"GET /never HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .await
            .unwrap();
        got_request.notified().await;
        drop(stream);
        tokio::time::timeout(Duration::from_secs(3), closed.notified())
            .await
            .expect("the upstream connection stayed open after the client went away");
        origin.await.expect("origin task");
    })
    .await;
}
