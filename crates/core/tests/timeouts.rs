//! Upstream failures become small JSON errors: refused connections (502) and upstreams
//! slower than the route's timeout (504).

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn refused_upstream_is_502_upstream_connect() {
    bounded(async {
        let dead = format!("http://{}", refused_addr());
        let gw = simple_gateway("/{p:path}", &[dead]).await;
        let client = client();
        let started = Instant::now();
        let reply = get(&client, &gw_url(&gw, "/anything")).await;
        reply.assert_error(502, "VG_UPSTREAM_CONNECT");
        assert_eq!(reply.json()["error"], "Bad Gateway");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a refused connect took {:?}",
            started.elapsed()
        );
        // The gateway keeps serving afterwards.
        let reply = get(&client, &gw_url(&gw, "/again")).await;
        reply.assert_error(502, "VG_UPSTREAM_CONNECT");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_closing_before_a_response_is_502_upstream_protocol() {
    bounded(async {
        // Accepts, reads the request, and hangs up without a word.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rude = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                drop(stream);
            }
        });
        let gw = simple_gateway("/{p:path}", &[format!("http://{addr}")]).await;
        let reply = get(&client(), &gw_url(&gw, "/x")).await;
        reply.assert_error(502, "VG_UPSTREAM_PROTOCOL");
        rude.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_slower_than_route_timeout_is_504() {
    bounded(async {
        let origin = Origin::start(|_req| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            http::Response::new(full("too late"))
        })
        .await;
        let mut route = proxy_route(&[origin.url()], client_settings());
        route.timeout = Duration::from_millis(200);
        let gw = start_gateway(vec![("/{p:path}", None, route)]).await;
        let client = client();
        let started = Instant::now();
        let reply = get(&client, &gw_url(&gw, "/slow")).await;
        let took = started.elapsed();
        reply.assert_error(504, "VG_UPSTREAM_TIMEOUT");
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
            "the 200 ms timeout answered after {took:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_route_timeout_bounds_the_head_not_a_slow_body() {
    bounded(async {
        // Head at once, then the body trickles for longer than the route timeout.
        let origin = Origin::start(|_req| async {
            let (tx, body) = channel_body(1);
            tokio::spawn(async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if tx.send(bytes::Bytes::from_static(b"x")).await.is_err() {
                        return;
                    }
                }
            });
            http::Response::new(body)
        })
        .await;
        let mut route = proxy_route(&[origin.url()], client_settings());
        route.timeout = Duration::from_millis(200);
        let gw = start_gateway(vec![("/{p:path}", None, route)]).await;
        let reply = get(&client(), &gw_url(&gw, "/trickle")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "xxxxx");
    })
    .await;
}
