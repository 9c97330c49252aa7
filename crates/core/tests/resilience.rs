//! Retries, breakers and the in-flight count, through a real gateway to real origins.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request};
use http_body_util::BodyExt;
use velithon_core::proxy::RetryPolicy;
use velithon_core::resilience::{BreakerConfig, RetryBudget};

use common::*;

fn counting(
    status: u16,
    hits: Arc<AtomicUsize>,
    name: &'static str,
) -> impl Fn(http::Request<hyper::body::Incoming>) -> std::future::Ready<http::Response<Body>> + Clone
{
    move |_req| {
        hits.fetch_add(1, Ordering::SeqCst);
        let mut res = http::Response::new(full(name));
        *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
        std::future::ready(res)
    }
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_is_retried_on_the_other_server() {
    bounded(async {
        let (bad_hits, good_hits) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let bad = Origin::start(counting(503, bad_hits.clone(), "bad")).await;
        let good = Origin::start(counting(200, good_hits.clone(), "good")).await;
        let mut route = proxy_route(&[bad.url(), good.url()], client_settings());
        route.retry = Some(Arc::new(fast_retry(2)));
        let gw = start_gateway(vec![("/{p:path}", None, route)]).await;
        let client = client();
        for i in 0..6 {
            let reply = get(&client, &gw_url(&gw, &format!("/r{i}"))).await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.text(), "good");
        }
        // Every attempt on the bad server was retried once, on the good one (retries
        // advance round robin too, so here each request starts on the bad server).
        let bad_attempts = bad_hits.load(Ordering::SeqCst);
        assert!((1..=6).contains(&bad_attempts), "{bad_attempts}");
        assert_eq!(good_hits.load(Ordering::SeqCst), 6);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_is_sent_once_unless_allowed_and_then_with_the_same_body() {
    bounded(async {
        let bodies = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = bodies.clone();
        let bad = Origin::start(move |req: http::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                let mut res = http::Response::new(full("no"));
                *res.status_mut() = http::StatusCode::BAD_GATEWAY;
                res
            }
        })
        .await;
        let post = |url: String| {
            Request::builder()
                .method(Method::POST)
                .uri(url)
                .body(full("payload-1"))
                .unwrap()
        };
        let mut once = proxy_route(&[bad.url()], client_settings());
        once.retry = Some(Arc::new(fast_retry(3)));
        let mut again = proxy_route(&[bad.url()], client_settings());
        again.retry = Some(Arc::new(RetryPolicy {
            retry_non_idempotent: true,
            ..fast_retry(3)
        }));
        let gw = start_gateway(vec![("/once", None, once), ("/again", None, again)]).await;
        let client = client();
        assert_eq!(send(&client, post(gw_url(&gw, "/once"))).await.status, 502);
        assert_eq!(bodies.lock().unwrap().len(), 1);
        assert_eq!(send(&client, post(gw_url(&gw, "/again"))).await.status, 502);
        let all = bodies.lock().unwrap().clone();
        assert_eq!(
            all,
            vec!["payload-1"; 4],
            "three attempts, the same bytes each time"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_fails_over_and_the_budget_caps_a_storm() {
    bounded(async {
        let hits = Arc::new(AtomicUsize::new(0));
        let down = Origin::start(counting(503, hits.clone(), "down")).await;
        let mut route = proxy_route(
            &[format!("http://{}", refused_addr()), down.url()],
            client_settings(),
        );
        route.retry = Some(Arc::new(RetryPolicy {
            budget: Some(Arc::new(RetryBudget::new(0.1, 1, Duration::from_secs(10)))),
            ..fast_retry(3)
        }));
        let gw = start_gateway(vec![("/{p:path}", None, route)]).await;
        let client = client();
        let requests = 200;
        for i in 0..requests {
            let reply = get(&client, &gw_url(&gw, &format!("/s{i}"))).await;
            assert!(
                reply.status == 503 || reply.status == 502,
                "{}",
                reply.status
            );
        }
        // Without a budget: up to 3 attempts each. With it: ≤ 10% more plus a floor of 10.
        let upstream_attempts = hits.load(Ordering::SeqCst);
        assert!(
            upstream_attempts <= requests + requests / 10 + 10,
            "{upstream_attempts} attempts reached the live server"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_breaker_answers_503_with_retry_after_and_admits_a_probe_later() {
    bounded(async {
        let hits = Arc::new(AtomicUsize::new(0));
        let failing = Origin::start(counting(500, hits.clone(), "err")).await;
        let route = proxy_route(&[failing.url()], client_settings());
        assert!(route.balancer.set_breaker(
            BreakerConfig {
                failure_threshold: 2,
                open_for: Duration::from_millis(300),
                ..BreakerConfig::default()
            },
            None,
        ));
        let balancer = route.balancer.clone();
        let gw = start_gateway(vec![("/{p:path}", None, route)]).await;
        let client = client();
        for _ in 0..2 {
            assert_eq!(get(&client, &gw_url(&gw, "/x")).await.status, 500);
        }
        let refused = get(&client, &gw_url(&gw, "/x")).await;
        refused.assert_error(503, "VG_CIRCUIT_OPEN");
        assert_eq!(refused.headers["retry-after"], "1");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "an open breaker sends nothing"
        );
        assert_eq!(balancer.status()[0].breaker.as_ref().unwrap().state, "open");
        tokio::time::sleep(Duration::from_millis(350)).await;
        // Half-open: one probe goes through (and fails, so it reopens).
        assert_eq!(get(&client, &gw_url(&gw, "/x")).await.status, 500);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        get(&client, &gw_url(&gw, "/x"))
            .await
            .assert_error(503, "VG_CIRCUIT_OPEN");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_counts_last_until_the_response_body_ends() {
    bounded(async {
        let (tx, body) = channel_body(4);
        let body = std::sync::Mutex::new(Some(body));
        let origin = Origin::start(move |_req| {
            let b = body.lock().unwrap().take().unwrap_or_else(empty);
            async move { http::Response::new(b) }
        })
        .await;
        let route = proxy_route(&[origin.url()], client_settings());
        let balancer = route.balancer.clone();
        let gw = start_gateway(vec![("/{p:path}", None, route)]).await;
        let client = client();
        let res = client
            .request(Request::get(gw_url(&gw, "/stream")).body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            balancer.status()[0].in_flight,
            1,
            "head arrived, body still open"
        );
        tx.send(bytes::Bytes::from_static(b"end")).await.unwrap();
        drop(tx);
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"end");
        let mut waited = 0;
        while balancer.status()[0].in_flight != 0 && waited < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        assert_eq!(balancer.status()[0].in_flight, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_aborts_its_upload_does_not_count_against_the_upstream() {
    use tokio::io::AsyncWriteExt;
    bounded(async {
        let origin = Origin::start(|req: http::Request<hyper::body::Incoming>| async move {
            let _ = req.into_body().collect().await;
            http::Response::new(full("got it"))
        })
        .await;
        let route = proxy_route(&[origin.url()], client_settings());
        assert!(route.balancer.set_breaker(
            BreakerConfig {
                failure_threshold: 1,
                ..BreakerConfig::default()
            },
            None,
        ));
        let balancer = route.balancer.clone();
        let gw = start_gateway(vec![("/{p:path}", None, route)]).await;
        for _ in 0..3 {
            let mut stream = tokio::net::TcpStream::connect(gw.local_addr())
                .await
                .unwrap();
            stream
                .write_all(
                    b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000\r\n\r\npartial",
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(stream);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = &balancer.status()[0];
        assert_eq!(status.failures, 0, "{status:?}");
        assert_eq!(status.breaker.as_ref().unwrap().state, "closed");
        let client = client();
        assert_eq!(get(&client, &gw_url(&gw, "/after")).await.status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_take_a_server_out_and_stopping_them_lets_it_back() {
    use velithon_core::balancer::{LoadBalancer, RoundRobin};
    use velithon_core::health::{HealthCheckConfig, HealthChecker};
    bounded(async {
        let sick = Origin::start(|_req| async {
            let mut res = http::Response::new(full("sick"));
            *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            res
        })
        .await;
        let balancer =
            Arc::new(LoadBalancer::new(&[sick.url()], Box::<RoundRobin>::default()).unwrap());
        let checker = HealthChecker::spawn(
            &tokio::runtime::Handle::current(),
            balancer.clone(),
            HealthCheckConfig {
                interval: Duration::from_millis(30),
                fail_after: 1,
                ..HealthCheckConfig::default()
            },
            None,
            None,
        );
        let mut waited = 0;
        while balancer.status()[0].available && waited < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        let status = &balancer.status()[0];
        assert!(!status.available, "{status:?}");
        assert_eq!(status.health.last_error.as_deref(), Some("status 500"));
        checker.stop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            balancer.status()[0].available,
            "nothing would bring it back otherwise"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_fails_fast_does_not_look_fast() {
    use velithon_core::balancer::{LoadBalancer, Outcome, Outcomes, PickContext, RoundRobin};
    let balancer = Arc::new(
        LoadBalancer::new(&["http://a:1".to_string()], Box::<RoundRobin>::default()).unwrap(),
    );
    let headers = http::HeaderMap::new();
    let ctx = PickContext {
        method: &Method::GET,
        path: "/",
        headers: &headers,
        client: None,
    };
    let lease = balancer.acquire(&ctx, &[]).unwrap();
    drop(lease.finish(Outcomes::both(Outcome::Failure)));
    let latency = balancer.status()[0].latency_ms;
    assert!(
        latency >= 200.0,
        "a failure is recorded as slow: {latency} ms"
    );
}
