//! What reaches the origin and what comes back: balancing, request target, Host and
//! X-Forwarded-*, hop-by-hop headers, routing misses.

mod common;

use http::{Method, Request};

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_over_two_origins_alternates() {
    bounded(async {
        let a = Origin::start(|_req| async { http::Response::new(full("a")) }).await;
        let b = Origin::start(|_req| async { http::Response::new(full("b")) }).await;
        let gw = simple_gateway("/rr/{path:path}", &[a.url(), b.url()]).await;
        let client = client();
        let mut seen = String::new();
        for i in 0..8 {
            let reply = get(&client, &gw_url(&gw, &format!("/rr/{i}"))).await;
            assert_eq!(reply.status, 200);
            seen.push_str(&reply.text());
        }
        assert_eq!(seen, "abababab");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn query_and_encoded_path_pass_byte_for_byte() {
    bounded(async {
        let origin = Origin::start(echo).await;
        let mut stripped = proxy_route(&[origin.url()], client_settings());
        stripped.strip_path = true;
        let gw = start_gateway(vec![
            (
                "/api/{path:path}",
                None,
                proxy_route(&[origin.url()], client_settings()),
            ),
            ("/s/{path:path}", None, stripped),
        ])
        .await;
        let target = "/api/a%2Fb/c%20d/%E2%82%AC;v=1/x+y?a=1&b=%20x&c=%2F&&d";
        let req = format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let reply = raw_exchange(gw.local_addr(), req.as_bytes()).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["uri"], target);

        // The same bytes survive stripPath.
        let req =
            "GET /s/a%2Fb/%7E?q=%26%3D&&x= HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n";
        let reply = raw_exchange(gw.local_addr(), req.as_bytes()).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["uri"], "/a%2Fb/%7E?q=%26%3D&&x=");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strip_path_sends_the_tail_only() {
    bounded(async {
        let origin = Origin::start(echo).await;
        let pattern = "/gateway/api/{path:path}";
        let mut route = proxy_route(&[origin.url()], client_settings());
        route.strip_path = true;
        let stripping = start_gateway(vec![(pattern, None, route)]).await;
        let full_path = simple_gateway(pattern, &[origin.url()]).await;
        // An upstream URL with a base path puts the stripped path under it.
        let mut route = proxy_route(&[format!("{}/base", origin.url())], client_settings());
        route.strip_path = true;
        let based = start_gateway(vec![(pattern, None, route)]).await;
        let client = client();

        let reply = get(&client, &gw_url(&stripping, "/gateway/api/users/1")).await;
        assert_eq!(reply.json()["uri"], "/users/1");
        let reply = get(&client, &gw_url(&stripping, "/gateway/api/users/1?x=2")).await;
        assert_eq!(reply.json()["uri"], "/users/1?x=2");
        let reply = get(&client, &gw_url(&stripping, "/gateway/api")).await;
        assert_eq!(reply.json()["uri"], "/");

        let reply = get(&client, &gw_url(&full_path, "/gateway/api/users/1")).await;
        assert_eq!(reply.json()["uri"], "/gateway/api/users/1");

        let reply = get(&client, &gw_url(&based, "/gateway/api/users/1")).await;
        assert_eq!(reply.json()["uri"], "/base/users/1");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_is_rewritten_unless_preserved_and_forwarded_headers_are_set() {
    bounded(async {
        let origin = Origin::start(echo).await;
        let mut preserving = proxy_route(&[origin.url()], client_settings());
        preserving.preserve_host = true;
        let gw = start_gateway(vec![
            (
                "/rewrite/{p:path}",
                None,
                proxy_route(&[origin.url()], client_settings()),
            ),
            ("/keep/{p:path}", None, preserving),
        ])
        .await;
        let client = client();
        let request = |path: &str| {
            Request::get(gw_url(&gw, path))
                .header("host", "public.example:8443")
                // A client that is not a trusted proxy cannot forge these.
                .header("x-forwarded-for", "1.2.3.4")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "forged.example")
                .body(empty())
                .unwrap()
        };

        let seen = send(&client, request("/rewrite/x")).await.json();
        let h = &seen["headers"];
        assert_eq!(h["host"][0], origin.addr.to_string());
        assert_eq!(h["host"].as_array().unwrap().len(), 1);
        assert_eq!(h["x-forwarded-for"][0], "127.0.0.1");
        assert_eq!(h["x-forwarded-for"].as_array().unwrap().len(), 1);
        assert_eq!(h["x-forwarded-proto"][0], "http");
        assert_eq!(h["x-forwarded-host"][0], "public.example:8443");

        let seen = send(&client, request("/keep/x")).await.json();
        let h = &seen["headers"];
        assert_eq!(h["host"][0], "public.example:8443");
        assert_eq!(h["host"].as_array().unwrap().len(), 1);
        assert_eq!(h["x-forwarded-for"][0], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"][0], "http");
        assert_eq!(h["x-forwarded-host"][0], "public.example:8443");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_are_dropped_and_set_cookies_all_arrive() {
    bounded(async {
        let origin = Origin::start(|req| async move {
            let mut res = echo(req).await;
            let h = res.headers_mut();
            h.append("set-cookie", "a=1; Path=/".parse().unwrap());
            h.append("set-cookie", "b=2; HttpOnly".parse().unwrap());
            h.insert("connection", "x-origin-hop".parse().unwrap());
            h.insert("x-origin-hop", "1".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("x-origin-visible", "1".parse().unwrap());
            res
        })
        .await;
        let gw = simple_gateway("/h/{p:path}", &[origin.url()]).await;
        let req = "GET /h/x HTTP/1.1\r\n\
                   Host: gw.test\r\n\
                   Connection: keep-alive, X-Secret\r\n\
                   Keep-Alive: timeout=5\r\n\
                   X-Secret: s3cret\r\n\
                   Proxy-Connection: keep-alive\r\n\
                   Upgrade: h2c\r\n\
                   X-Visible: yes\r\n\r\n";
        let reply = raw_exchange(gw.local_addr(), req.as_bytes()).await;
        assert_eq!(reply.status, 200);

        let seen = reply.json();
        let h = seen["headers"].as_object().unwrap();
        for hop in [
            "connection",
            "keep-alive",
            "x-secret",
            "proxy-connection",
            "upgrade",
        ] {
            assert!(!h.contains_key(hop), "origin saw {hop}: {seen}");
        }
        assert_eq!(h["x-visible"][0], "yes");

        assert_eq!(
            reply.header_values("set-cookie"),
            vec!["a=1; Path=/", "b=2; HttpOnly"]
        );
        assert!(reply.header_values("x-origin-hop").is_empty());
        assert!(reply.header_values("keep-alive").is_empty());
        assert_eq!(reply.header_values("x-origin-visible"), vec!["1"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_client_is_forwarded_to_an_http1_origin() {
    bounded(async {
        let origin = Origin::start(echo).await;
        let gw = simple_gateway("/h2/{p:path}", &[origin.url()]).await;
        let h2: TestClient =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http();
        let (tx, body) = channel_body(4);
        tokio::spawn(async move {
            for part in ["one ", "two ", "three"] {
                let _ = tx.send(bytes::Bytes::from_static(part.as_bytes())).await;
            }
        });
        let req = Request::post(gw_url(&gw, "/h2/x?q=%20"))
            .body(body)
            .unwrap();
        let reply = send(&h2, req).await;
        assert_eq!(reply.status, 200);
        let seen = reply.json();
        assert_eq!(seen["method"], "POST");
        assert_eq!(seen["uri"], "/h2/x?q=%20");
        assert_eq!(seen["body"], "one two three");
        let h = &seen["headers"];
        assert_eq!(h["host"][0], origin.addr.to_string());
        assert_eq!(h["x-forwarded-host"][0], gw.local_addr().to_string());
        assert_eq!(h["x-forwarded-proto"][0], "http");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_is_404_and_wrong_method_is_405_with_allow() {
    bounded(async {
        let origin = Origin::start(echo).await;
        let gw = start_gateway(vec![
            (
                "/items",
                Some(vec![Method::GET]),
                proxy_route(&[origin.url()], client_settings()),
            ),
            (
                "/items",
                Some(vec![Method::POST, Method::GET]),
                proxy_route(&[origin.url()], client_settings()),
            ),
        ])
        .await;
        let client = client();

        let reply = get(&client, &gw_url(&gw, "/nowhere")).await;
        reply.assert_error(404, "VG_NO_ROUTE");

        let req = Request::delete(gw_url(&gw, "/items"))
            .body(empty())
            .unwrap();
        let reply = send(&client, req).await;
        reply.assert_error(405, "VG_METHOD_NOT_ALLOWED");
        assert_eq!(reply.headers["allow"], "GET, POST, HEAD");

        // HEAD rides on GET; the matching method is forwarded.
        let req = Request::head(gw_url(&gw, "/items")).body(empty()).unwrap();
        assert_eq!(send(&client, req).await.status, 200);
        let reply = get(&client, &gw_url(&gw, "/items")).await;
        assert_eq!(reply.json()["method"], "GET");
    })
    .await;
}
