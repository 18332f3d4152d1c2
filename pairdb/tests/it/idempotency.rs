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
    t.cluster.stop().await;
}
