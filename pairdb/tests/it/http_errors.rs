//! Tenant isolation and every failure status of the key-value and tenant routes.

use reqwest::{Method, StatusCode};

use crate::harness::{ADMIN_KEY, header, start};

async fn problem(resp: reqwest::Response, status: StatusCode, slug: &str) -> serde_json::Value {
    assert_eq!(resp.status(), status);
    assert_eq!(
        header(&resp, "content-type"),
        Some("application/problem+json")
    );
    assert!(header(&resp, "traceresponse").is_some());
    let body: serde_json::Value = resp.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"].as_str().is_some_and(|t| t.ends_with(slug)),
        "{body}"
    );
    assert!(
        body["trace_id"].as_str().is_some_and(|t| t.len() == 32),
        "{body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() {
    let t = start(3).await;
    let a = t.create_tenant("alpha", 3).await;
    let b = t.create_tenant("beta", 2).await;
    let put = t
        .kv(
            Method::PUT,
            "shared-name",
            &a,
            &[],
            Some(b"alpha's".to_vec()),
        )
        .await;
    assert_eq!(put.status(), StatusCode::OK);
    let get_b = t.kv(Method::GET, "shared-name", &b, &[], None).await;
    problem(get_b, StatusCode::NOT_FOUND, "key-not-found").await;
    let put_b = t
        .kv(
            Method::PUT,
            "shared-name",
            &b,
            &[],
            Some(b"beta's".to_vec()),
        )
        .await;
    assert_eq!(put_b.status(), StatusCode::OK);
    assert_eq!(header(&put_b, "x-pairdb-replicas"), Some("acked=2/2"));
    let get_a = t.kv(Method::GET, "shared-name", &a, &[], None).await;
    assert_eq!(get_a.bytes().await.expect("body").as_ref(), b"alpha's");

    // A context from one tenant is refused for the other.
    let ctx = header(&put, "x-pairdb-context")
        .expect("context")
        .to_owned();
    let cross = t
        .kv(
            Method::PUT,
            "shared-name",
            &b,
            &[("X-Pairdb-Context", &ctx)],
            Some(b"x".to_vec()),
        )
        .await;
    problem(cross, StatusCode::BAD_REQUEST, "bad-context").await;

    // A tenant may read its own tenant but not another's, nor list tenants.
    let own = t
        .http
        .get(t.url("/v1/tenants/alpha"))
        .bearer_auth(&a)
        .send()
        .await
        .expect("get");
    assert_eq!(own.status(), StatusCode::OK);
    let other = t
        .http
        .get(t.url("/v1/tenants/beta"))
        .bearer_auth(&a)
        .send()
        .await
        .expect("get");
    problem(other, StatusCode::FORBIDDEN, "forbidden").await;
    let list = t
        .http
        .get(t.url("/v1/tenants"))
        .bearer_auth(&a)
        .send()
        .await
        .expect("list");
    problem(list, StatusCode::FORBIDDEN, "forbidden").await;
    let nodes = t
        .http
        .get(t.url("/v1/admin/nodes"))
        .bearer_auth(&a)
        .send()
        .await
        .expect("nodes");
    problem(nodes, StatusCode::FORBIDDEN, "forbidden").await;
    t.cluster.stop().await.expect("every node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_status() {
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;

    // 400: keys, consistency, contexts, JSON.
    let long = "k".repeat(1025);
    problem(
        t.kv(Method::GET, &long, &key, &[], None).await,
        StatusCode::BAD_REQUEST,
        "bad-key",
    )
    .await;
    let ok_len = "k".repeat(1024);
    assert_eq!(
        t.kv(Method::PUT, &ok_len, &key, &[], Some(b"v".to_vec()))
            .await
            .status(),
        StatusCode::OK
    );
    problem(
        t.kv(Method::GET, "bad%zzescape", &key, &[], None).await,
        StatusCode::BAD_REQUEST,
        "bad-key",
    )
    .await;
    problem(
        t.kv(Method::GET, "k", &key, &[("X-Consistency", "most")], None)
            .await,
        StatusCode::BAD_REQUEST,
        "bad-consistency",
    )
    .await;
    problem(
        t.kv(
            Method::PUT,
            "k",
            &key,
            &[("X-Pairdb-Context", "garbage")],
            Some(b"v".to_vec()),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad-context",
    )
    .await;
    let long_type = "x".repeat(300);
    problem(
        t.kv(
            Method::PUT,
            "k",
            &key,
            &[("Content-Type", &long_type)],
            Some(b"v".to_vec()),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await;
    problem(
        t.kv(
            Method::PUT,
            "k",
            &key,
            &[("Idempotency-Key", "has space")],
            Some(b"v".to_vec()),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await;
    let bad_json = t
        .http
        .post(t.url("/v1/tenants"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    problem(bad_json, StatusCode::BAD_REQUEST, "bad-request").await;
    let bad_rf = t
        .http
        .post(t.url("/v1/tenants"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"tenant_id": "wide", "replication_factor": 4}))
        .send()
        .await
        .expect("post");
    problem(bad_rf, StatusCode::BAD_REQUEST, "bad-request").await;
    let bad_id = t
        .http
        .post(t.url("/v1/tenants"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"tenant_id": "Not Valid"}))
        .send()
        .await
        .expect("post");
    problem(bad_id, StatusCode::BAD_REQUEST, "bad-request").await;

    // 401: no key, unknown key, malformed key.
    let none = t.http.get(t.url("/v1/kv/k")).send().await.expect("get");
    assert_eq!(
        header(&none, "www-authenticate").map(|h| h.starts_with("Bearer")),
        Some(true)
    );
    problem(none, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let unknown = t
        .kv(
            Method::GET,
            "k",
            "pdb_0123456789abcdef_0123456789abcdef0123456789abcdef",
            &[],
            None,
        )
        .await;
    problem(unknown, StatusCode::UNAUTHORIZED, "unauthorized").await;
    problem(
        t.kv(Method::GET, "k", "nonsense", &[], None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;

    // 403: the admin key has no tenant; tenant keys are not admins.
    problem(
        t.kv(Method::GET, "k", ADMIN_KEY, &[], None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    // 404: absent key, deleted key, unknown route.
    problem(
        t.kv(Method::GET, "never-written", &key, &[], None).await,
        StatusCode::NOT_FOUND,
        "key-not-found",
    )
    .await;
    assert_eq!(
        t.kv(Method::PUT, "doomed", &key, &[], Some(b"v".to_vec()))
            .await
            .status(),
        StatusCode::OK
    );
    let del = t.kv(Method::DELETE, "doomed", &key, &[], None).await;
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    assert!(header(&del, "x-pairdb-context").is_some());
    problem(
        t.kv(Method::GET, "doomed", &key, &[], None).await,
        StatusCode::NOT_FOUND,
        "key-not-found",
    )
    .await;
    assert_eq!(
        t.kv(Method::DELETE, "never-written", &key, &[], None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let route = t
        .http
        .get(t.url("/v1/nope"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("get");
    problem(route, StatusCode::NOT_FOUND, "route-not-found").await;

    // 405 names the allowed methods.
    let post = t.kv(Method::POST, "k", &key, &[], None).await;
    assert!(header(&post, "allow").is_some_and(|a| a.contains("GET")));
    problem(post, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;

    // 409: the tenant exists.
    let dup = t
        .http
        .post(t.url("/v1/tenants"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"tenant_id": "acme"}))
        .send()
        .await
        .expect("post");
    problem(dup, StatusCode::CONFLICT, "tenant-exists").await;

    // 413: a value over 1 MiB; exactly 1 MiB is fine.
    let big = vec![7u8; (1 << 20) + 1];
    problem(
        t.kv(Method::PUT, "big", &key, &[], Some(big)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    )
    .await;
    let max = vec![7u8; 1 << 20];
    assert_eq!(
        t.kv(Method::PUT, "big", &key, &[], Some(max))
            .await
            .status(),
        StatusCode::OK
    );

    // Keys are raw bytes: `%2F` is a slash inside one key, `%FF` a non-UTF-8 byte.
    assert_eq!(
        t.kv(Method::PUT, "a%2Fb", &key, &[], Some(b"slash".to_vec()))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        t.kv(Method::PUT, "%FF%00", &key, &[], Some(b"bytes".to_vec()))
            .await
            .status(),
        StatusCode::OK
    );
    let slash = t.kv(Method::GET, "a%2fb", &key, &[], None).await;
    assert_eq!(slash.bytes().await.expect("body").as_ref(), b"slash");
    let bytes = t.kv(Method::GET, "%ff%00", &key, &[], None).await;
    assert_eq!(bytes.bytes().await.expect("body").as_ref(), b"bytes");
    t.cluster.stop().await.expect("every node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_can_be_added_listed_and_revoked() {
    let t = start(3).await;
    let first = t.create_tenant("acme", 3).await;
    let created = t
        .http
        .post(t.url("/v1/tenants/acme/api-keys"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: serde_json::Value = created.json().await.expect("json");
    let second = created["api_key"].as_str().expect("api_key").to_owned();
    let key_id = created["key_id"].as_str().expect("key_id").to_owned();
    assert_eq!(
        t.kv(Method::PUT, "k", &second, &[], Some(b"v".to_vec()))
            .await
            .status(),
        StatusCode::OK
    );

    let listed: serde_json::Value = t
        .http
        .get(t.url("/v1/tenants/acme/api-keys"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|k| k.get("api_key").is_none() && k["created_at"].is_string())
    );

    let del = t
        .http
        .delete(t.url(&format!("/v1/tenants/acme/api-keys/{key_id}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    // The gateway that revoked the key forgets it at once (other gateways within their cache
    // TTL of 1 s, which the auth layer's own tests check on a paused clock).
    assert_eq!(
        t.kv(Method::GET, "k", &second, &[], None).await.status(),
        StatusCode::UNAUTHORIZED,
        "the revoked key still works"
    );
    assert_eq!(
        t.kv(Method::GET, "k", &first, &[], None).await.status(),
        StatusCode::OK
    );

    let nodes: serde_json::Value = t
        .http
        .get(t.url("/v1/admin/nodes"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("nodes")
        .json()
        .await
        .expect("json");
    let nodes = nodes.as_array().expect("array");
    assert_eq!(nodes.len(), 3);
    assert!(
        nodes
            .iter()
            .all(|n| n["state"] == "active" && n["tokens"] == 64)
    );
    assert!(
        nodes
            .iter()
            .any(|n| n["load_bytes"].as_u64().unwrap_or(0) > 0)
    );
    t.cluster.stop().await.expect("every node stops cleanly");
}
