//! Exactly once across a gateway's death: a gateway process dies after the leader applied a
//! write and before the gateway recorded the answer (a test-only failpoint, compiled out of
//! release builds); the client retries with the same key through a second gateway sharing the
//! stores, gets a 2xx, and every replica shows exactly one clock increment for the write.

use std::time::Duration;

use pairdb_metadata::MetadataStore as _;
use pairdb_proto::convert::version_from_pb;
use pairdb_proto::storage::storage_client::StorageClient;
use pairdb_proto::storage::{KeyRef, ReadRequest};
use pairdb_testkit::RedisServer;
use reqwest::StatusCode;
use tonic::transport::Channel;

use crate::harness::{INTERNAL_TOKEN, StorageAuth};
use crate::processes::{Processes, create_tenant, terminate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_gateway_died_before_recording_is_applied_once() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path();
    // Short deadlines: the dead gateway's in-flight marker lasts twice the deadline plus 5 s.
    let gateway_args = [
        "--redis-url",
        redis.url.as_str(),
        "--request-timeout",
        "1000",
    ];
    let cluster = Processes::start_with(
        logs,
        &[("PAIRDB_FAILPOINTS", "idempotency-before-record")],
        &gateway_args,
    )
    .await;
    let (mut second, second_base) = cluster
        .another_gateway(logs, "second-gateway", &[], &gateway_args)
        .await;
    let http = reqwest::Client::new();
    // The first gateway dies on this test's only keyed write, so the tenant is made through the
    // second.
    let key = create_tenant(&http, &second_base).await;

    let put = |base: &str| {
        http.put(format!("{base}/v1/kv/once"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "exactly-once-1")
            .header("X-Consistency", "all")
            .body("v")
            .send()
    };
    // The first gateway applies the write, then dies before recording: the client sees the
    // connection drop, never an answer.
    let mut first = cluster.gateway;
    let lost = put(&cluster.base).await;
    assert!(lost.is_err(), "the dying gateway answered: {lost:?}");
    let died = tokio::time::timeout(Duration::from_secs(10), first.wait())
        .await
        .expect("the gateway exits")
        .expect("wait");
    assert!(!died.success(), "the failpoint aborted the gateway");

    // The retry through the second gateway waits out the dead one's in-flight marker (409 +
    // Retry-After), then runs: the leader recognises the key and answers the first write.
    let mut answer = put(&second_base).await.expect("retry");
    // The second gateway sees the dead one's marker in the shared store: the proof that the
    // record store, not only the leader, stands between the retry and a second apply.
    assert_eq!(
        answer.status(),
        StatusCode::CONFLICT,
        "the retry first meets the in-flight marker"
    );
    for _ in 0..60 {
        if answer.status() != StatusCode::CONFLICT {
            break;
        }
        let wait: u64 = answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .expect("409 carries Retry-After");
        tokio::time::sleep(Duration::from_secs(wait)).await;
        answer = put(&second_base).await.expect("retry");
    }
    assert_eq!(answer.status(), StatusCode::OK, "{:?}", answer.text().await);

    // Every replica holds the write once: one clock increment in all.
    let metadata = pairdb_metadata::sqlite::SqliteStore::open(&cluster.metadata)
        .await
        .expect("open metadata");
    let placement = metadata
        .placement()
        .await
        .expect("placement")
        .expect("a placement");
    assert_eq!(placement.nodes.len(), 3);
    for node in &placement.nodes {
        let channel = Channel::from_shared(format!("http://{}", node.address))
            .expect("uri")
            .connect_lazy();
        let read = StorageClient::with_interceptor(channel, StorageAuth(Some(INTERNAL_TOKEN)))
            .read(ReadRequest {
                epoch: placement.epoch,
                key: Some(KeyRef {
                    namespace: "acme".into(),
                    key: b"once".to_vec(),
                }),
            })
            .await
            .expect("storage read")
            .into_inner();
        let version = version_from_pb(read.version.expect("the replica holds the write"))
            .expect("valid version");
        let increments: u64 = version.clock.entries().map(|(_, c)| c).sum();
        assert_eq!(increments, 1, "replica {} minted once", node.id);
    }

    assert!(terminate(&mut second).await);
    let Processes {
        storage,
        mut coordinator,
        ..
    } = cluster;
    assert!(terminate(&mut coordinator).await);
    for (_, mut child, _) in storage {
        assert!(terminate(&mut child).await);
    }
}
