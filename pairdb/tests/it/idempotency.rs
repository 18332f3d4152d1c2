//! A write retried with the same idempotency key mints one version.

use reqwest::{Method, StatusCode};

use crate::harness::{header, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_mints_once() {
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let headers = [("Idempotency-Key", "retry-me-1"), ("X-Consistency", "all")];
    let first = t
        .kv(Method::PUT, "counter", &key, &headers, Some(b"1".to_vec()))
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "idempotency-key"), Some("retry-me-1"));
    let ctx_first = header(&first, "x-pairdb-context")
        .expect("context")
        .to_owned();
    // The response was "lost": the client retries with the same key.
    let retry = t
        .kv(Method::PUT, "counter", &key, &headers, Some(b"1".to_vec()))
        .await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(
        header(&retry, "x-pairdb-context"),
        Some(ctx_first.as_str()),
        "the same version"
    );

    for r in t.replicas("acme", b"counter") {
        let v = t.stored(&r, "acme", b"counter").await.expect("stored");
        let increments: u64 = v.clock.entries().map(|(_, c)| c).sum();
        assert_eq!(increments, 1, "replica {r} saw one minting");
        assert_eq!(v.idempotency_key, "retry-me-1");
    }

    // A generated key is returned when the client sends none.
    let fresh = t
        .kv(Method::PUT, "other", &key, &[], Some(b"x".to_vec()))
        .await;
    assert!(header(&fresh, "idempotency-key").is_some_and(|k| !k.is_empty()));
    t.cluster.stop().await.expect("every node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_key_on_another_write_is_422_and_changes_nothing() {
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let keyed = [("Idempotency-Key", "order-77")];
    let first = t
        .kv(Method::PUT, "cart", &key, &keyed, Some(b"one".to_vec()))
        .await;
    assert_eq!(first.status(), StatusCode::OK);

    // The same key with another body, another content type, as a DELETE.
    let other_body = t
        .kv(Method::PUT, "cart", &key, &keyed, Some(b"two".to_vec()))
        .await;
    let other_type = t
        .kv(
            Method::PUT,
            "cart",
            &key,
            &[
                ("Idempotency-Key", "order-77"),
                ("Content-Type", "text/plain"),
            ],
            Some(b"one".to_vec()),
        )
        .await;
    let delete = t.kv(Method::DELETE, "cart", &key, &keyed, None).await;
    for refused in [other_body, other_type, delete] {
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(header(&refused, "idempotency-key"), Some("order-77"));
        let problem: serde_json::Value = refused.json().await.expect("json");
        assert_eq!(
            problem["type"],
            "https://pairdb.dev/problems/idempotency-key-reused"
        );
    }
    let get = t.kv(Method::GET, "cart", &key, &[], None).await;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.bytes().await.expect("body").as_ref(), b"one");
    t.cluster.stop().await.expect("every node stops cleanly");
}
