//! Route transformations through a real gateway: header and path rules, request ids,
//! stripped identity headers, a body function, and their order.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, Method, Request};
use velithon_core::proxy::{BodyFunction, BodyStage, RouteTransforms, TransformFuture};
use velithon_core::transform::{HeaderRules, PathMapping, PathRules};

use common::*;

fn rules(add: &[(&str, &str)], remove: &[&str]) -> HeaderRules {
    HeaderRules::from_lists(
        &remove.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        &[],
        &add.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn header_and_path_rules_request_ids_and_identity_headers() {
    bounded(async {
        let origin = Origin::start(echo).await;
        let mut route = proxy_route(&[origin.url()], client_settings());
        route.transforms = Some(Arc::new(RouteTransforms {
            strip_incoming: vec![HeaderName::from_static("x-user-id")],
            request_id: Some(HeaderName::from_static("x-request-id")),
            // Gateway layer, then route layer: the route's value wins.
            request_headers: vec![
                rules(&[("x-layer", "gateway"), ("x-gw", "1")], &["x-internal"]),
                rules(&[("x-layer", "route")], &[]),
            ],
            path: vec![PathRules {
                strip_prefix: Some("/api/v1".into()),
                mappings: vec![PathMapping::new("/users", "/accounts", true).unwrap()],
                rewrite: None,
                add_prefix: Some("/internal".into()),
            }],
            response_headers: vec![rules(&[("x-served-by", "gw")], &["server"])],
            ..RouteTransforms::default()
        }));
        let gw = start_gateway(vec![("/api/v1/{p:path}", None, route)]).await;
        let client = client();
        let req = Request::builder()
            .uri(gw_url(&gw, "/api/v1/users/7?x=%2F"))
            .header("x-user-id", "forged")
            .header("x-internal", "secret")
            .body(empty())
            .unwrap();
        let reply = send(&client, req).await;
        assert_eq!(reply.status, 200);
        let seen = reply.json();
        assert_eq!(seen["uri"], "/internal/accounts/7?x=%2F");
        let headers = &seen["headers"];
        assert!(headers.get("x-user-id").is_none(), "{headers}");
        assert!(headers.get("x-internal").is_none());
        assert_eq!(headers["x-layer"][0], "route");
        assert_eq!(headers["x-gw"][0], "1");
        let id = headers["x-request-id"][0].as_str().unwrap().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(
            reply.headers["x-request-id"],
            id.as_str(),
            "the id goes back"
        );
        assert_eq!(reply.headers["x-served-by"], "gw");

        // A client's own id is kept.
        let req = Request::builder()
            .uri(gw_url(&gw, "/api/v1/x"))
            .header("x-request-id", "abc-123")
            .body(empty())
            .unwrap();
        let reply = send(&client, req).await;
        assert_eq!(reply.json()["headers"]["x-request-id"][0], "abc-123");
        assert_eq!(reply.headers["x-request-id"], "abc-123");

        // Identity headers spelled with underscores go too; a bad client id is replaced.
        let req = Request::builder()
            .uri(gw_url(&gw, "/api/v1/x"))
            .header("x_user_id", "forged")
            .header("x-request-id", "has space")
            .body(empty())
            .unwrap();
        let reply = send(&client, req).await;
        let headers = &reply.json()["headers"];
        assert!(headers.get("x_user_id").is_none(), "{headers}");
        assert_ne!(headers["x-request-id"][0], "has space");

        // A dot segment never reaches the origin.
        let reply = get(&client, &gw_url(&gw, "/api/v1/%2e%2e/admin")).await;
        reply.assert_error(400, "VG_BAD_REQUEST");
    })
    .await;
}

/// Upper-cases bodies.
struct Shout;

impl BodyFunction for Shout {
    fn transform(&self, body: Bytes, content_type: String) -> TransformFuture<Bytes> {
        Box::pin(async move {
            assert!(content_type.starts_with("text/plain"));
            Ok(Bytes::from(body.to_ascii_uppercase()))
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_function_rewrites_matching_bodies_within_the_limit() {
    bounded(async {
        let origin = Origin::start(echo).await;
        let mut route = proxy_route(&[origin.url()], client_settings());
        route.transforms = Some(Arc::new(RouteTransforms {
            request_body: Some(BodyStage {
                function: Arc::new(Shout),
                content_types: vec!["text/".into()],
                max_size: 16,
            }),
            ..RouteTransforms::default()
        }));
        let gw = start_gateway(vec![("/{p:path}", None, route)]).await;
        let client = client();
        let post = |ct: &str, body: &'static str| {
            Request::builder()
                .method(Method::POST)
                .uri(gw_url(&gw, "/b"))
                .header("content-type", ct)
                .body(full(body))
                .unwrap()
        };
        let reply = send(&client, post("text/plain", "hello")).await;
        assert_eq!(reply.json()["body"], "HELLO");
        assert_eq!(reply.json()["headers"]["content-length"][0], "5");
        let reply = send(&client, post("application/json", "{\"a\":1}")).await;
        assert_eq!(
            reply.json()["body"],
            "{\"a\":1}",
            "other types pass untouched"
        );
        let reply = send(
            &client,
            post("text/plain", "this is longer than sixteen bytes"),
        )
        .await;
        reply.assert_error(413, "VG_BODY_TOO_LARGE");
    })
    .await;
}
