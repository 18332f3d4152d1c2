//! `PATCH /v1/tenants/{id}` on a real cluster: every role applies the change within the design
//! bound of a second, without a restart (polled with a generous bound, never timed).

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::{ADMIN_KEY, header, start};

/// Polls `check` every 50 ms until it holds, for at most `bound`.
async fn eventually<F, Fut>(bound: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if started.elapsed() > bound {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patched_consistency_and_rate_limit_apply_on_every_role() {
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let put = t.kv(Method::PUT, "k", &key, &[], Some(b"v".to_vec())).await;
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(header(&put, "x-consistency"), Some("quorum"));
    assert_eq!(
        header(&put, "ratelimit-policy"),
        Some("\"tenant\";q=2000;w=2")
    );

    let patched = t
        .http
        .patch(t.url("/v1/tenants/acme"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({
            "default_consistency": "one",
            "rate_limit": {"requests_per_second": 1, "burst": 1}
        }))
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status(), StatusCode::OK);
    let body: serde_json::Value = patched.json().await.expect("json");
    assert_eq!(body["default_consistency"], "one");

    // Within the tenant caches' TTL (1 s; 10 s allowed here for a loaded machine), requests
    // see the new level and the new limit.
    let applied = eventually(Duration::from_secs(10), || async {
        let got = t.kv(Method::GET, "k", &key, &[], None).await;
        header(&got, "ratelimit-policy") == Some("\"tenant\";q=1;w=1")
    })
    .await;
    assert!(applied, "the new limit never reached the gateway");
    // One token a second: the next request is refused, with when to retry.
    let refused = eventually(Duration::from_secs(10), || async {
        let got = t.kv(Method::GET, "k", &key, &[], None).await;
        got.status() == StatusCode::TOO_MANY_REQUESTS && header(&got, "retry-after") == Some("1")
    })
    .await;
    assert!(refused, "never refused over the new limit");
    // Once the bucket refilled, a read is admitted, at the new default level.
    let admitted = eventually(Duration::from_secs(10), || async {
        let got = t.kv(Method::GET, "k", &key, &[], None).await;
        got.status() == StatusCode::OK && header(&got, "x-consistency") == Some("one")
    })
    .await;
    assert!(admitted, "no read at the new default level");

    // A bad change is refused, and changes nothing.
    let zero = t
        .http
        .patch(t.url("/v1/tenants/acme"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"rate_limit": {"requests_per_second": 0, "burst": 1}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(zero.status(), StatusCode::BAD_REQUEST);
    let read = t
        .http
        .get(t.url("/v1/tenants/acme"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("get");
    let body: serde_json::Value = read.json().await.expect("json");
    assert_eq!(
        body["rate_limit"],
        serde_json::json!({"requests_per_second": 1, "burst": 1})
    );
}
