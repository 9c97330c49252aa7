//! The pooled upstream client: keep-alive reuse and `maxConnectionsPerHost`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::sync::Notify;
use velithon_core::client::ClientSettings;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn sequential_requests_reuse_upstream_connections() {
    bounded(async {
        let origin = Origin::start(|_req| async { http::Response::new(full("pong")) }).await;
        let gw = simple_gateway("/{p:path}", &[origin.url()]).await;
        let client = client();
        for i in 0..200 {
            let reply = get(&client, &gw_url(&gw, &format!("/ping/{i}"))).await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.text(), "pong");
        }
        assert!(
            origin.accepts() <= 4,
            "200 sequential requests opened {} upstream connections",
            origin.accepts()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reuse_also_holds_for_request_bodies() {
    bounded(async {
        let origin = Origin::start(echo).await;
        let gw = simple_gateway("/{p:path}", &[origin.url()]).await;
        let client = client();
        for i in 0..50 {
            let req = http::Request::post(gw_url(&gw, "/post"))
                .body(full(format!("body {i}")))
                .unwrap();
            let reply = send(&client, req).await;
            assert_eq!(reply.json()["body"], format!("body {i}"));
        }
        assert!(
            origin.accepts() <= 4,
            "50 sequential POSTs opened {} upstream connections",
            origin.accepts()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_connections_per_host_makes_a_second_request_wait_then_503() {
    bounded(async {
        let arrived = Arc::new(Notify::new());
        let seen = arrived.clone();
        let origin = Origin::start(move |_req| {
            let seen = seen.clone();
            async move {
                seen.notify_one();
                tokio::time::sleep(Duration::from_millis(800)).await;
                http::Response::new(full("slow"))
            }
        })
        .await;
        let settings = ClientSettings {
            max_connections_per_host: Some(1),
            pool_timeout: Duration::from_millis(100),
            ..client_settings()
        };
        let route = proxy_route(&[origin.url()], settings);
        let gw = start_gateway(vec![("/{p:path}", None, route)]).await;
        let client = client();

        let first = tokio::spawn({
            let client = client.clone();
            let url = gw_url(&gw, "/first");
            async move { get(&client, &url).await }
        });
        arrived.notified().await;

        let started = Instant::now();
        let second = get(&client, &gw_url(&gw, "/second")).await;
        let waited = started.elapsed();
        second.assert_error(503, "VG_POOL_TIMEOUT");
        assert_eq!(second.headers["retry-after"], "1");
        assert!(
            waited >= Duration::from_millis(90) && waited < Duration::from_millis(600),
            "the second request waited {waited:?} for a 100 ms pool timeout"
        );

        let first = first.await.expect("first request task");
        assert_eq!(first.status, 200);
        assert_eq!(first.text(), "slow");

        // The slot is free again once the first response is done.
        let third = get(&client, &gw_url(&gw, "/third")).await;
        assert_eq!(third.status, 200);
        assert_eq!(
            origin.accepts(),
            1,
            "the capped client opened a second connection"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connection_slot_is_held_while_the_response_body_streams() {
    bounded(async {
        // The head comes at once; the body takes 600 ms more.
        let arrived = Arc::new(Notify::new());
        let seen = arrived.clone();
        let origin = Origin::start(move |_req| {
            let seen = seen.clone();
            async move {
                let (tx, body) = channel_body(1);
                tokio::spawn(async move {
                    let _ = tx.send(bytes::Bytes::from_static(b"a")).await;
                    seen.notify_one();
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    let _ = tx.send(bytes::Bytes::from_static(b"b")).await;
                });
                http::Response::new(body)
            }
        })
        .await;
        let settings = ClientSettings {
            max_connections_per_host: Some(1),
            pool_timeout: Duration::from_millis(100),
            ..client_settings()
        };
        let gw = start_gateway(vec![(
            "/{p:path}",
            None,
            proxy_route(&[origin.url()], settings),
        )])
        .await;
        let client = client();

        let req = http::Request::get(gw_url(&gw, "/first"))
            .body(empty())
            .unwrap();
        let first = client.request(req).await.expect("first head");
        assert_eq!(first.status(), 200);
        arrived.notified().await;

        let second = get(&client, &gw_url(&gw, "/second")).await;
        second.assert_error(503, "VG_POOL_TIMEOUT");

        let body = first.into_body().collect().await.expect("first body");
        assert_eq!(&body.to_bytes()[..], b"ab");
        let third = get(&client, &gw_url(&gw, "/third")).await;
        assert_eq!(third.status, 200);
    })
    .await;
}
