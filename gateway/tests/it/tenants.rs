//! Tenant and admin routes.

use reqwest::Method;
use serde_json::json;

use crate::support::{Harness, problem, type_of};

#[tokio::test]
async fn create_tenant_forwards_fields_and_answers_201() {
    let h = Harness::start().await;
    let response = h
        .admin(Method::POST, "/v1/tenants")
        .json(&json!({
            "tenant_id": "newco",
            "replication_factor": 2,
            "default_consistency": "ONE",
            "rate_limit": {"requests_per_second": 10, "burst": 20}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["tenant_id"], "newco");
    assert_eq!(body["replication_factor"], 2);
    assert_eq!(body["default_consistency"], "one");
    assert_eq!(
        body["rate_limit"],
        json!({"requests_per_second": 100, "burst": 200})
    );
    assert_eq!(body["created_at"], "2026-01-01T00:00:00Z");
    assert!(body["api_key"].as_str().unwrap().starts_with("pdb_"));
    let sent = h.last_call().create_tenant.unwrap();
    assert_eq!(sent.tenant_id, "newco");
    assert_eq!(sent.replication_factor, 2);
    assert_eq!(sent.default_consistency, "one");
    assert_eq!(
        sent.rate_limit.map(|r| (r.requests_per_second, r.burst)),
        Some((10, 20))
    );

    let response = h
        .admin(Method::POST, "/v1/tenants")
        .json(&json!({"tenant_id": "minimal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let sent = h.last_call().create_tenant.unwrap();
    assert_eq!(
        (
            sent.replication_factor,
            sent.default_consistency.as_str(),
            sent.rate_limit
        ),
        (0, "", None)
    );
}

#[tokio::test]
async fn create_tenant_refuses_bad_fields() {
    let h = Harness::start().await;
    let body = problem(
        h.admin(Method::POST, "/v1/tenants")
            .json(&json!({"tenant_id": "x", "replication_factor": 0}))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(body["type"], type_of("bad-request"));
    let body = problem(
        h.admin(Method::POST, "/v1/tenants")
            .json(&json!({"tenant_id": "x", "default_consistency": "most"}))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(body["type"], type_of("bad-consistency"));
    let body = problem(
        h.tenant(Method::POST, "/v1/tenants")
            .json(&json!({"tenant_id": "x"}))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    assert_eq!(body["type"], type_of("forbidden"));
}

#[tokio::test]
async fn tenant_reads() {
    let h = Harness::start().await;
    let response = h.admin(Method::GET, "/v1/tenants").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let list: Vec<serde_json::Value> = response.json().await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["tenant_id"], "acme");

    let response = h
        .tenant(Method::GET, "/v1/tenants/acme")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let one: serde_json::Value = response.json().await.unwrap();
    assert_eq!(one["tenant_id"], "acme");
    assert_eq!(one["default_consistency"], "quorum");
    assert_eq!(
        h.last_call().header("x-pairdb-tenant").as_deref(),
        Some("acme")
    );

    let body = problem(
        h.admin(Method::GET, "/v1/tenants/missing")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_eq!(body["type"], type_of("tenant-not-found"));
}

#[tokio::test]
async fn api_keys() {
    let h = Harness::start().await;
    let response = h
        .admin(Method::POST, "/v1/tenants/acme/api-keys")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: serde_json::Value = response.json().await.unwrap();
    assert_eq!(created["key_id"], "0123456789abcdef");
    assert!(
        created["api_key"]
            .as_str()
            .unwrap()
            .starts_with("pdb_0123456789abcdef_")
    );

    let response = h
        .admin(Method::GET, "/v1/tenants/acme/api-keys")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let keys: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        keys,
        json!([{"key_id": "0123456789abcdef", "created_at": "2026-01-01T00:00:00Z"}])
    );

    let response = h
        .admin(Method::DELETE, "/v1/tenants/acme/api-keys/0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let body = problem(
        h.admin(Method::DELETE, "/v1/tenants/acme/api-keys/nokey")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_eq!(body["type"], type_of("api-key-not-found"));
}

#[tokio::test]
async fn admin_nodes() {
    let h = Harness::start().await;
    let response = h
        .admin(Method::GET, "/v1/admin/nodes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let nodes: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        nodes,
        json!([{"node_id": "n1", "address": "127.0.0.1:7001", "state": "active", "tokens": 256, "load_bytes": 4096}])
    );
}

#[tokio::test]
async fn patch_changes_what_it_is_given_and_only_for_the_admin() {
    let h = Harness::start().await;
    let changed = h
        .admin(Method::PATCH, "/v1/tenants/acme")
        .json(&serde_json::json!({
            "default_consistency": "one",
            "rate_limit": {"requests_per_second": 5, "burst": 9}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let body: serde_json::Value = changed.json().await.unwrap();
    assert_eq!(body["default_consistency"], "one");
    assert_eq!(
        body["rate_limit"],
        serde_json::json!({"requests_per_second": 5, "burst": 9})
    );
    let sent = h.coordinator.calls.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent.method, "update_tenant");

    let missing = h
        .admin(Method::PATCH, "/v1/tenants/missing")
        .json(&serde_json::json!({"default_consistency": "all"}))
        .send()
        .await
        .unwrap();
    problem(missing, 404).await;
    let unknown_field = h
        .admin(Method::PATCH, "/v1/tenants/acme")
        .json(&serde_json::json!({"replication_factor": 5}))
        .send()
        .await
        .unwrap();
    problem(unknown_field, 400).await;
    let by_tenant = h
        .tenant(Method::PATCH, "/v1/tenants/acme")
        .json(&serde_json::json!({"default_consistency": "all"}))
        .send()
        .await
        .unwrap();
    problem(by_tenant, 403).await;
}
