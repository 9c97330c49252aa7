//! Tests of `registry`.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn counts_by_status_class_and_route() {
    let m = Metrics::new();
    let users = m.route("GET /users/{id}");
    let files = m.route("GET /files/{path:path}");
    assert_eq!(m.route("GET /users/{id}"), users, "same label, same id");
    assert_ne!(users, files);

    m.record(Some(users), 200, ms(10));
    m.record(Some(users), 200, ms(20));
    m.record(Some(users), 404, ms(1));
    m.record(Some(files), 503, ms(30));
    m.record(Some(files), 101, ms(2));
    m.record(None, 404, ms(5)); // no route: totals only
    m.record(None, 999, ms(5)); // out of range: class "other"
    m.record(Some(RouteId(77)), 200, ms(5)); // foreign id: totals only

    let s = m.snapshot();
    assert_eq!(s.total_requests, 8);
    assert_eq!(
        s.requests_by_status,
        BTreeMap::from([(101, 1), (200, 3), (404, 2), (503, 1)])
    );
    assert_eq!(
        s.requests_by_class,
        ClassCounts {
            informational: 1,
            success: 3,
            redirection: 0,
            client_error: 2,
            server_error: 1,
            other: 1,
        }
    );
    assert_eq!(s.latency.count, 8);
    assert_eq!(s.latency.sum_ms, 78.0);
    assert_eq!(s.average_response_time_ms, 78.0 / 8.0);

    assert_eq!(s.routes.len(), 2);
    let (u, f) = (&s.routes[0], &s.routes[1]);
    assert_eq!((u.route.as_str(), u.requests), ("GET /users/{id}", 3));
    assert_eq!((u.by_class.success, u.by_class.client_error), (2, 1));
    assert_eq!((u.latency.count, u.latency.sum_ms), (3, 31.0));
    assert_eq!(
        (f.route.as_str(), f.requests),
        ("GET /files/{path:path}", 2)
    );
    assert_eq!((f.by_class.server_error, f.by_class.informational), (1, 1));
    assert_eq!(f.latency.p99_ms, 30.0);
}

#[test]
fn counts_upstreams_retries_and_rejections() {
    let m = Metrics::new();
    let a = "http://10.0.0.1:8080";
    let b = "http://10.0.0.2:8080";
    m.record_upstream(b, 200, ms(4));
    m.record_upstream(a, 200, ms(2));
    m.record_upstream(a, 502, ms(3));
    m.record_upstream(a, 0, ms(1000)); // timeout
    m.record_upstream(a, 404, ms(1));
    m.count_retry();
    m.count_retry();
    m.count_rejection(Rejection::RateLimited);
    m.count_rejection(Rejection::BodyTooLarge);
    m.count_rejection(Rejection::BodyTooLarge);

    let s = m.snapshot();
    assert_eq!(
        s.total_requests, 0,
        "upstream requests are not client requests"
    );
    let servers: Vec<_> = s.upstreams.iter().map(|u| u.server.as_str()).collect();
    assert_eq!(servers, [a, b], "sorted by URL");
    let ua = &s.upstreams[0];
    assert_eq!((ua.requests, ua.errors), (4, 2));
    assert_eq!((ua.by_class.success, ua.by_class.client_error), (1, 1));
    assert_eq!((ua.by_class.server_error, ua.by_class.other), (1, 1));
    assert_eq!(ua.latency.count, 4);
    assert_eq!(ua.latency.p99_ms, 1000.0);
    assert_eq!((s.upstreams[1].requests, s.upstreams[1].errors), (1, 0));
    assert_eq!(s.retries, 2);
    assert_eq!(
        s.rejections,
        RejectionCounts {
            rate_limited: 1,
            circuit_open: 0,
            no_healthy_upstream: 0,
            body_too_large: 2,
        }
    );

    assert!(m.forget_upstream(b));
    assert!(!m.forget_upstream(b));
    assert_eq!(m.snapshot().upstreams.len(), 1);
}

#[test]
fn concurrent_recording_is_exact() {
    let m = Arc::new(Metrics::new());
    let route = m.route("/r");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let server = format!("http://s{}", t % 3);
                for i in 0..10_000u64 {
                    let status = if i % 10 == 0 { 500 } else { 200 };
                    m.record(Some(route), status, Duration::from_micros(i));
                    m.record_upstream(&server, status, Duration::from_micros(i));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("recorder thread");
    }
    let s = m.snapshot();
    assert_eq!(s.total_requests, 80_000);
    assert_eq!(s.requests_by_status[&500], 8_000);
    assert_eq!(s.routes[0].requests, 80_000);
    assert_eq!(s.routes[0].latency.count, 80_000);
    let upstream_total: u64 = s.upstreams.iter().map(|u| u.requests).sum();
    let errors: u64 = s.upstreams.iter().map(|u| u.errors).sum();
    assert_eq!(
        (s.upstreams.len(), upstream_total, errors),
        (3, 80_000, 8_000)
    );
}

#[test]
fn serializes_camel_case() {
    let m = Metrics::new();
    let r = m.route("/x");
    m.record(Some(r), 200, ms(1));
    m.record_upstream("http://u", 0, ms(1));
    m.count_rejection(Rejection::NoHealthyUpstream);
    let json = serde_json::to_value(m.snapshot()).expect("serialize");
    assert_eq!(json["totalRequests"], 1);
    assert_eq!(json["requestsByStatus"]["200"], 1);
    assert_eq!(json["requestsByClass"]["2xx"], 1);
    assert_eq!(json["requestsByClass"]["other"], 0);
    assert_eq!(json["averageResponseTimeMs"], 1.0);
    assert_eq!(json["latency"]["p50Ms"], 1.0);
    assert_eq!(json["routes"][0]["route"], "/x");
    assert_eq!(json["routes"][0]["byClass"]["2xx"], 1);
    assert_eq!(json["upstreams"][0]["errors"], 1);
    assert_eq!(json["upstreams"][0]["byClass"]["other"], 1);
    assert_eq!(json["rejections"]["noHealthyUpstream"], 1);
    assert_eq!(json["rejections"]["bodyTooLarge"], 0);
    assert_eq!(json["retries"], 0);
}
