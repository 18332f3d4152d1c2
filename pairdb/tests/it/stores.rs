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
    second.stop().await;
}
