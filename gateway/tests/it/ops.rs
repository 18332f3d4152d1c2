//! Operations routes: no auth, always a traceresponse.

use std::sync::atomic::Ordering;

use crate::support::{Harness, problem, type_of};

#[tokio::test]
async fn healthz_is_ok_without_auth() {
    let h = Harness::start().await;
    let response = h.http.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("traceresponse"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_checks_coordinator_and_metadata() {
    let h = Harness::start().await;
    let response = h.http.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ready"}));
    assert_eq!(h.last_call().method, "ready");

    h.coordinator.not_ready.store(true, Ordering::SeqCst);
    let response = h.http.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    let body = problem(response, 503).await;
    assert_eq!(body["type"], type_of("not-ready"));

    h.coordinator.not_ready.store(false, Ordering::SeqCst);
    h.store.fail.store(true, Ordering::SeqCst);
    problem(h.http.get(h.url("/readyz")).send().await.unwrap(), 503).await;
}

#[tokio::test]
async fn openapi_lists_routes_and_problem_types() {
    let h = Harness::start().await;
    let response = h.http.get(h.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    let doc: serde_json::Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/v1/kv/{key}", &["get", "put", "delete"][..]),
        ("/v1/tenants", &["get", "post"][..]),
        ("/v1/tenants/{tenant_id}", &["get", "patch", "delete"][..]),
        ("/v1/tenants/{tenant_id}/replication-factor", &["put"][..]),
        ("/v1/tenants/{tenant_id}/api-keys", &["get", "post"][..]),
        ("/v1/tenants/{tenant_id}/api-keys/{key_id}", &["delete"][..]),
        ("/v1/admin/nodes", &["get", "post"][..]),
        ("/v1/admin/nodes/{node_id}", &["delete"][..]),
        (
            "/v1/admin/migrations/{migration_id}",
            &["get", "delete"][..],
        ),
        ("/v1/admin/repair", &["post"][..]),
        ("/v1/admin/repairs/{repair_id}", &["get"][..]),
        ("/healthz", &["get"][..]),
        ("/readyz", &["get"][..]),
        ("/openapi.json", &["get"][..]),
        ("/metrics", &["get"][..]),
    ] {
        for m in methods {
            assert!(paths[path].get(*m).is_some(), "{m} {path}");
        }
    }
    assert_eq!(paths.len(), 15, "no route documented that is not served");
    let types = doc["components"]["schemas"]["ProblemType"]["enum"]
        .as_array()
        .unwrap();
    for kind in pairdb_core::ErrorKind::ALL {
        assert!(
            types.contains(&serde_json::Value::String(kind.type_uri())),
            "{}",
            kind.slug()
        );
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let h = Harness::start().await;
    for key in ["a", "b"] {
        h.tenant(reqwest::Method::PUT, &format!("/v1/kv/{key}"))
            .body("v")
            .send()
            .await
            .unwrap();
    }
    h.http.get(h.url("/nowhere")).send().await.unwrap();
    let response = h.http.get(h.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            "pairdb_requests_total{route=\"/v1/kv/{key}\",method=\"PUT\",status=\"200\",level=\"quorum\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "pairdb_requests_total{route=\"other\",method=\"GET\",status=\"404\",level=\"none\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("pairdb_request_duration_seconds_bucket{"));
    assert!(text.ends_with("# EOF\n"));
}
