//! `RunningServer::shutdown`: in-flight requests finish within the grace, new
//! connections are refused, and a short grace is honoured even when an upstream hangs.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::Notify;

use common::*;

/// An origin that signals each arriving request, then sleeps `delay` before answering.
async fn sleepy_origin(delay: Duration, arrived: Arc<Notify>) -> Origin {
    Origin::start(move |_req| {
        let arrived = arrived.clone();
        async move {
            arrived.notify_one();
            tokio::time::sleep(delay).await;
            http::Response::new(full("done"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_lets_in_flight_requests_finish_and_refuses_new_ones() {
    bounded(async {
        let arrived = Arc::new(Notify::new());
        let origin = sleepy_origin(Duration::from_millis(300), arrived.clone()).await;
        let mut gw = simple_gateway("/{p:path}", &[origin.url()]).await;
        let addr = gw.local_addr();
        let client = client();
        let in_flight = tokio::spawn({
            let client = client.clone();
            let url = gw_url(&gw, "/slow");
            async move { try_send(&client, get_request(&url)).await }
        });
        arrived.notified().await;

        let started = Instant::now();
        gw.shutdown(Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "shutdown waited {took:?} for a 300 ms request"
        );

        let reply = in_flight
            .await
            .expect("request task")
            .expect("the in-flight request failed during a graceful shutdown");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "done");

        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the gateway still accepts connections after shutdown"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_stops_accepting_at_once_while_a_request_is_in_flight() {
    bounded(async {
        let arrived = Arc::new(Notify::new());
        let origin = sleepy_origin(Duration::from_millis(500), arrived.clone()).await;
        let mut gw = simple_gateway("/{p:path}", &[origin.url()]).await;
        let addr = gw.local_addr();
        let client = client();
        let in_flight = tokio::spawn({
            let client = client.clone();
            let url = gw_url(&gw, "/slow");
            async move { try_send(&client, get_request(&url)).await }
        });
        arrived.notified().await;

        let shutting = tokio::spawn(async move {
            gw.shutdown(Duration::from_secs(5)).await;
        });
        // While the request is still running, no new connection is accepted.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!shutting.is_finished());
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listener is still open during shutdown"
        );
        shutting.await.expect("shutdown task");
        let reply = in_flight.await.expect("request task").expect("request");
        assert_eq!(reply.status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn short_grace_cuts_a_hung_request() {
    bounded(async {
        let arrived = Arc::new(Notify::new());
        let origin = sleepy_origin(Duration::from_secs(10), arrived.clone()).await;
        let mut gw = simple_gateway("/{p:path}", &[origin.url()]).await;
        let client = client();
        let in_flight = tokio::spawn({
            let client = client.clone();
            let url = gw_url(&gw, "/hang");
            async move { try_send(&client, get_request(&url)).await }
        });
        arrived.notified().await;

        let started = Instant::now();
        gw.shutdown(Duration::from_millis(100)).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "shutdown with a 100 ms grace took {took:?}"
        );

        // The cut request ends promptly (without a 200), it does not wait for the origin.
        let outcome = tokio::time::timeout(Duration::from_secs(2), in_flight)
            .await
            .expect("the cut request still hangs")
            .expect("request task");
        if let Ok(reply) = outcome {
            assert_ne!(reply.status, 200, "a cut request cannot have succeeded");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_idle_keep_alive_connections() {
    bounded(async {
        let origin = Origin::start(echo).await;
        let mut gw = simple_gateway("/{p:path}", &[origin.url()]).await;
        let client = client();
        // Leaves an idle keep-alive connection from the client to the gateway.
        assert_eq!(get(&client, &gw_url(&gw, "/warm")).await.status, 200);
        let started = Instant::now();
        gw.shutdown(Duration::from_secs(5)).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "shutdown waited {:?} on an idle connection",
            started.elapsed()
        );
    })
    .await;
}

fn get_request(url: &str) -> http::Request<Body> {
    http::Request::get(url).body(empty()).expect("request")
}
