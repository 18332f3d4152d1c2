//! Every failure status of docs/api.md for the routes in scope, as problem+json.

use std::time::{Duration, Instant};

use axum::body::Body;
use http::Request;
use reqwest::Method;
use tower::ServiceExt;

use crate::support::{Harness, problem, type_of};

#[tokio::test]
async fn bad_keys_are_400() {
    let h = Harness::start().await;
    let too_long = format!("/v1/kv/{}", "k".repeat(1025));
    let too_long_decoded = format!("/v1/kv/{}", "%41".repeat(1025));
    for path in [
        "/v1/kv/",
        too_long.as_str(),
        too_long_decoded.as_str(),
        "/v1/kv/a%zz",
        "/v1/kv/a%2",
        "/v1/kv/a/b",
    ] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let response = h
                .tenant(method.clone(), path)
                .body("v")
                .send()
                .await
                .unwrap();
            let body = problem(response, 400).await;
            assert_eq!(body["type"], type_of("bad-key"), "{method} {path}");
        }
    }
    assert!(h.calls().is_empty(), "nothing reached the coordinator");
}

/// Request headers of a case.
type Headers<'a> = Vec<(&'a str, &'a str)>;

#[tokio::test]
async fn bad_headers_are_400() {
    let h = Harness::start().await;
    let long_idem = "i".repeat(256);
    let cases: Vec<(Headers, &str, &str)> = vec![
        (
            vec![("x-consistency", "most")],
            "/v1/kv/k",
            "bad-consistency",
        ),
        (vec![], "/v1/kv/k?consistency=two", "bad-consistency"),
        (
            vec![("idempotency-key", "has space")],
            "/v1/kv/k",
            "bad-request",
        ),
        (
            vec![("idempotency-key", long_idem.as_str())],
            "/v1/kv/k",
            "bad-request",
        ),
        (vec![("idempotency-key", "\"\"")], "/v1/kv/k", "bad-request"),
        (
            vec![("x-pairdb-timeout", "soon")],
            "/v1/kv/k",
            "bad-request",
        ),
        (vec![("x-pairdb-timeout", "0")], "/v1/kv/k", "bad-request"),
    ];
    for (headers, path, slug) in cases {
        let mut request = h.tenant(Method::PUT, path).body("v");
        for (k, v) in &headers {
            request = request.header(*k, *v);
        }
        let body = problem(request.send().await.unwrap(), 400).await;
        assert_eq!(body["type"], type_of(slug), "{headers:?} {path}");
    }
    assert!(h.calls().is_empty());
}

#[tokio::test]
async fn bad_json_is_400_never_422() {
    let h = Harness::start().await;
    for body in [
        "{not json",
        r#"{"tenant_id": "x", "surprise": 1}"#,
        r#"{"tenant_id": 7}"#,
        r#"{}"#,
        r#"{"tenant_id": "x", "rate_limit": {"requests_per_second": 1}}"#,
    ] {
        let response = h
            .admin(Method::POST, "/v1/tenants")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let problem = problem(response, 400).await;
        assert_eq!(problem["type"], type_of("bad-request"), "{body}");
    }
    let response = h
        .admin(Method::POST, "/v1/tenants")
        .header("content-type", "text/plain")
        .body(r#"{"tenant_id": "x"}"#)
        .send()
        .await
        .unwrap();
    problem(response, 400).await;
}

#[tokio::test]
async fn missing_or_unknown_key_is_401_with_www_authenticate() {
    let h = Harness::start().await;
    let unknown = pairdb_metadata::api_key::generate(crate::support::KEY_SECRET).api_key;
    for request in [
        h.http.get(h.url("/v1/kv/k")),
        h.http.get(h.url("/v1/kv/k")).bearer_auth(&unknown),
        h.http.get(h.url("/v1/kv/k")).bearer_auth("not-a-key"),
        h.http
            .get(h.url("/v1/tenants"))
            .header("authorization", "Basic abc"),
        h.http
            .get(h.url("/v1/kv/k"))
            .bearer_auth(crate::support::INTERNAL_TOKEN),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(
            response.headers().get("www-authenticate").unwrap(),
            "Bearer"
        );
        let body = problem(response, 401).await;
        assert_eq!(body["type"], type_of("unauthorized"));
    }
    assert!(h.calls().is_empty());
}

#[tokio::test]
async fn coordinator_refusals_map_to_403_409_and_400() {
    let h = Harness::start().await;
    let body = problem(
        h.tenant(Method::GET, "/v1/kv/forbidden")
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    assert_eq!(body["type"], type_of("forbidden"));
    let body = problem(
        h.tenant(Method::GET, "/v1/tenants").send().await.unwrap(),
        403,
    )
    .await;
    assert_eq!(body["type"], type_of("forbidden"));
    let body = problem(
        h.admin(Method::POST, "/v1/tenants")
            .json(&serde_json::json!({"tenant_id": "exists"}))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
    assert_eq!(body["type"], type_of("tenant-exists"));
    let body = problem(
        h.tenant(Method::PUT, "/v1/kv/bad-context")
            .body("v")
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(body["type"], type_of("bad-context"));
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_405_with_allow() {
    let h = Harness::start().await;
    let body = problem(h.http.get(h.url("/nope")).send().await.unwrap(), 404).await;
    assert_eq!(body["type"], type_of("route-not-found"));
    let body = problem(h.tenant(Method::GET, "/v1/nope").send().await.unwrap(), 404).await;
    assert_eq!(body["type"], type_of("route-not-found"));

    let response = h.http.post(h.url("/healthz")).send().await.unwrap();
    let allow = response
        .headers()
        .get("allow")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allow.contains("GET"), "{allow}");
    let body = problem(response, 405).await;
    assert_eq!(body["type"], type_of("method-not-allowed"));

    let response = h.tenant(Method::PATCH, "/v1/kv/k").send().await.unwrap();
    let allow = response
        .headers()
        .get("allow")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for m in ["GET", "PUT", "DELETE"] {
        assert!(allow.contains(m), "{allow}");
    }
    problem(response, 405).await;
}

#[tokio::test]
async fn value_over_limit_is_413() {
    let h = Harness::start_with(|c, _| c.max_value_bytes = 1024).await;
    let ok = h
        .tenant(Method::PUT, "/v1/kv/k")
        .body(vec![7u8; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // Just over, and far over: the client still reads the 413 (the body is drained, not reset).
    for size in [1025, 3 * 1024 * 1024] {
        let response = h
            .tenant(Method::PUT, "/v1/kv/k")
            .body(vec![7u8; size])
            .send()
            .await
            .unwrap();
        let body = problem(response, 413).await;
        assert_eq!(body["type"], type_of("payload-too-large"), "{size}");
    }
    assert_eq!(
        h.calls().len(),
        1,
        "only the value within the limit was forwarded"
    );
}

#[tokio::test]
async fn streamed_value_over_limit_is_413() {
    // Without Content-Length the limit is enforced while reading.
    let h = Harness::start().await;
    let config = pairdb_gateway::GatewayConfig {
        coordinators: vec!["127.0.0.1:1".into()],
        internal_token: "t".into(),
        key_secret: crate::support::KEY_SECRET.to_vec(),
        max_value_bytes: 16,
        ..Default::default()
    };
    let router = pairdb_gateway::build_router(config, h.store.clone())
        .await
        .unwrap();
    let request = Request::put("/v1/kv/k")
        .header("authorization", format!("Bearer {}", h.api_key))
        .body(Body::from(vec![1u8; 17]))
        .unwrap();
    assert!(request.headers().get("content-length").is_none());
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
}

#[tokio::test]
async fn quorum_failure_is_503_with_members_and_retry_after() {
    let h = Harness::start().await;
    let response = h
        .tenant(Method::PUT, "/v1/kv/quorum")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    let body = problem(response, 503).await;
    assert_eq!(body["type"], type_of("quorum-unavailable"));
    assert_eq!(body["acks"], 1);
    assert_eq!(body["required"], 2);
    assert_eq!(body["applied"], "partial");
    assert_eq!(body["detail"], "only 1 of 2 required replicas acknowledged");

    let response = h
        .tenant(Method::GET, "/v1/kv/read-quorum")
        .send()
        .await
        .unwrap();
    let body = problem(response, 503).await;
    assert_eq!(body["answered"], 1);
    assert_eq!(body["required"], 2);
    assert!(body.get("applied").is_none());
}

#[tokio::test]
async fn deadline_is_504() {
    let h = Harness::start().await;
    let body = problem(
        h.tenant(Method::PUT, "/v1/kv/timeout")
            .body("v")
            .send()
            .await
            .unwrap(),
        504,
    )
    .await;
    assert_eq!(body["type"], type_of("timeout"));
    assert_eq!(body["applied"], "unknown");

    // The gateway's own deadline: the coordinator is slower than X-Pairdb-Timeout.
    let started = Instant::now();
    let response = h
        .tenant(Method::PUT, "/v1/kv/slow")
        .header("x-pairdb-timeout", "100")
        .body("v")
        .send()
        .await
        .unwrap();
    let body = problem(response, 504).await;
    assert_eq!(body["applied"], "unknown");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "gave up near the deadline"
    );
}

#[tokio::test]
async fn internal_faults_are_500_without_internals() {
    let h = Harness::start().await;
    let body = problem(
        h.tenant(Method::GET, "/v1/kv/internal")
            .send()
            .await
            .unwrap(),
        500,
    )
    .await;
    assert_eq!(body["type"], type_of("internal"));
    assert!(!body["detail"].as_str().unwrap().contains("secret"));
}

#[tokio::test]
async fn store_outage_is_503() {
    let h = Harness::start().await;
    h.store
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let response = h.tenant(Method::GET, "/v1/kv/k").send().await.unwrap();
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    let body = problem(response, 503).await;
    assert_eq!(body["type"], type_of("not-ready"));
}

#[tokio::test]
async fn unreachable_coordinator_is_503() {
    let (dead, _reserved) = crate::support::dead_address();
    let h = Harness::start_with(move |c, _| c.coordinators = vec![dead.to_string()]).await;
    let response = h.tenant(Method::GET, "/v1/kv/k").send().await.unwrap();
    let body = problem(response, 503).await;
    assert_eq!(body["type"], type_of("quorum-unavailable"));
}
