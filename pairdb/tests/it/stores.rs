//! The cluster with its production stores: metadata in PostgreSQL and the gateways' idempotency
//! records in Redis, each a throwaway server. Tenants live in PostgreSQL, and a write retried
//! through a second gateway is replayed from the first one's record.

use std::time::Duration;

use pairdb::local::{Admission, GatewayNode};
use pairdb_metadata::MetadataStore;
use pairdb_metadata::postgres::PostgresStore;
use pairdb_testkit::{PgServer, RedisServer};
use reqwest::{Method, StatusCode};

use crate::harness::{header, secrets, start_with_stores};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_live_in_postgres_and_retries_replay_through_any_gateway() {
    let postgres = PgServer::start().await;
    let redis = RedisServer::start().await;
    let t = start_with_stores(3, Some(postgres.url.clone()), Some(redis.url.clone())).await;
    let key = t.create_tenant("acme", 3).await;
    let stored = PostgresStore::open(&postgres.url)
        .await
        .expect("open")
        .get_tenant("acme")
        .await
        .expect("get");
    assert!(stored.is_some(), "the tenant is in PostgreSQL");

    let headers = [("Idempotency-Key", "once-1")];
    let first = t
        .kv(Method::PUT, "k", &key, &headers, Some(b"v".to_vec()))
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let context = header(&first, "x-pairdb-context").map(str::to_owned);

    // A second gateway, sharing the stores, in front of the same coordinator.
    let store = pairdb::local::open_metadata(&postgres.url)
        .await
        .expect("store");
    let listener =
        pairdb::local::bind("gateway", ([127, 0, 0, 1], 0).into()).expect("bind the gateway");
    let second = GatewayNode::start(
        store,
        listener,
        vec![t.cluster.coordinator.addr.to_string()],
        &secrets(),
        Duration::from_secs(5),
        pairdb_gateway::server::ConnectionLimits::default(),
        Admission {
            enabled: true,
            redis_url: Some(redis.url.clone()),
            tenant_cache: None,
        },
    )
    .await
    .expect("second gateway");
    let retry = t
        .http
        .put(format!("http://{}/v1/kv/k", second.addr))
        .bearer_auth(&key)
        .header("Idempotency-Key", "once-1")
        .body("v")
        .send()
        .await
        .expect("retry");
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(header(&retry, "idempotent-replayed"), Some("true"));
    assert_eq!(
        header(&retry, "x-pairdb-context").map(str::to_owned),
        context
    );
    for r in t.replicas("acme", b"k") {
        let v = t.stored(&r, "acme", b"k").await.expect("stored");
        let increments: u64 = v.clock.entries().map(|(_, c)| c).sum();
        assert_eq!(increments, 1, "replica {r} minted once");
    }

    // The two gateways registered in PostgreSQL share the tenant's rate: each admits half of
    // its burst (2,000) once its heartbeat has counted the other.
    let policy = |base: String| {
        let (http, key) = (t.http.clone(), key.clone());
        async move {
            let got = http
                .get(format!("{base}/v1/kv/k"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("get");
            header(&got, "ratelimit-policy").map(str::to_owned)
        }
    };
    let first_base = t.url("");
    let second_base = format!("http://{}", second.addr);
    for base in [&first_base, &second_base] {
        let mut seen = None;
        for _ in 0..100 {
            seen = policy(base.clone()).await;
            if seen.as_deref() == Some("\"tenant\";q=1000;w=2") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen.as_deref(), Some("\"tenant\";q=1000;w=2"), "{base}");
    }
    // A tenant change made through the first gateway (its coordinator invalidates the tenant
    // in Redis) is in effect on the second within a second.
    let patched = t
        .http
        .patch(t.url("/v1/tenants/acme"))
        .bearer_auth(crate::harness::ADMIN_KEY)
        .json(&serde_json::json!({ "default_consistency": "all" }))
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status(), StatusCode::OK);
    let mut level = None;
    for _ in 0..50 {
        let got = t
            .http
            .get(format!("{second_base}/v1/kv/k"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("get");
        level = header(&got, "x-consistency").map(str::to_owned);
        if level.as_deref() == Some("all") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(level.as_deref(), Some("all"));

    // Once the second stops, the first gets the whole rate back (its registration leaves, or
    // at worst expires).
    second.stop().await;
    let mut seen = None;
    for _ in 0..200 {
        seen = policy(first_base.clone()).await;
        if seen.as_deref() == Some("\"tenant\";q=2000;w=2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.as_deref(), Some("\"tenant\";q=2000;w=2"));
}
