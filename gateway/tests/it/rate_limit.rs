//! The rate-limit layer in the gateway: every tenant response carries the `RateLimit` headers,
//! and a tenant over its limit gets a 429 problem that never reaches a coordinator.

use pairdb_metadata::RateLimit;
use reqwest::Method;

use crate::support::{Harness, problem};

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_tenant_over_its_limit_gets_429_with_the_headers() {
    let h = Harness::start().await;
    let key = h
        .add_tenant(
            "slow",
            RateLimit {
                requests_per_second: 1,
                burst: 2,
            },
        )
        .await;
    let put = |n: usize| {
        h.http
            .request(Method::PUT, h.url(&format!("/v1/kv/k{n}")))
            .bearer_auth(&key)
            .header("content-type", "text/plain")
            .body("v")
            .send()
    };
    for (n, left) in [(0, 1), (1, 0)] {
        let ok = put(n).await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(header(&ok, "ratelimit-policy"), "\"tenant\";q=2;w=2");
        assert!(
            header(&ok, "ratelimit").starts_with(&format!("\"tenant\";r={left};t=")),
            "{}",
            header(&ok, "ratelimit")
        );
    }
    let refused = put(2).await.unwrap();
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(header(&refused, "ratelimit"), "\"tenant\";r=0;t=2");
    assert_eq!(header(&refused, "ratelimit-policy"), "\"tenant\";q=2;w=2");
    let body = problem(refused, 429).await;
    assert_eq!(body["type"], "https://pairdb.dev/problems/rate-limited");
    let puts = h
        .coordinator
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.method == "put")
        .count();
    assert_eq!(puts, 2, "the refused write never reached the coordinator");

    // Another tenant is not affected, and its responses name its own limit.
    let other = h.tenant(Method::GET, "/v1/kv/k0").send().await.unwrap();
    assert_ne!(other.status(), 429);
    assert_eq!(header(&other, "ratelimit-policy"), "\"tenant\";q=2000;w=2");
}

#[tokio::test]
async fn without_admission_nothing_is_limited_or_recorded() {
    let h = Harness::start_with(|config, _| config.admission = false).await;
    let key = h
        .add_tenant(
            "slow",
            RateLimit {
                requests_per_second: 1,
                burst: 1,
            },
        )
        .await;
    for body in ["a", "b", "c"] {
        let response = h
            .http
            .request(Method::PUT, h.url("/v1/kv/k"))
            .bearer_auth(&key)
            .header("idempotency-key", "same")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit"), "");
        assert_eq!(header(&response, "idempotent-replayed"), "");
    }
}
