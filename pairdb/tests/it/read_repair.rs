//! Read repair: a version only one replica holds reaches every replica on a read at `all`.

use pairdb_proto::storage::{KeyRef, MintRequest};
use reqwest::{Method, StatusCode};

use crate::harness::{INTERNAL_TOKEN, header, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_at_all_repairs_every_replica() {
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let replicas = t.replicas("acme", b"lonely");
    // Mint a version on one replica only, over the storage RPC.
    let minted = t
        .storage(&replicas[1], Some(INTERNAL_TOKEN))
        .mint(MintRequest {
            epoch: t.epoch(),
            key: Some(KeyRef {
                namespace: "acme".into(),
                key: b"lonely".to_vec(),
            }),
            value: b"only-here".to_vec(),
            content_type: "text/plain".into(),
            ..MintRequest::default()
        })
        .await
        .expect("mint")
        .into_inner();
    assert!(minted.version.is_some());
    assert!(t.stored(&replicas[0], "acme", b"lonely").await.is_none());

    let get = t
        .kv(
            Method::GET,
            "lonely",
            &key,
            &[("X-Consistency", "all")],
            None,
        )
        .await;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(header(&get, "x-pairdb-read-repair"), Some("2"));
    assert_eq!(get.bytes().await.expect("body").as_ref(), b"only-here");

    let first = t
        .stored(&replicas[0], "acme", b"lonely")
        .await
        .expect("repaired");
    for r in &replicas {
        assert_eq!(
            t.stored(r, "acme", b"lonely").await.as_ref(),
            Some(&first),
            "replica {r}"
        );
    }
    // Nothing left to repair.
    let again = t
        .kv(
            Method::GET,
            "lonely",
            &key,
            &[("X-Consistency", "all")],
            None,
        )
        .await;
    assert_eq!(header(&again, "x-pairdb-read-repair"), None);
    // The coordinator counted the repairs, and its calls by RPC.
    let metrics = t.cluster.coordinator.cluster.config().metrics.encode();
    assert!(metrics.contains("pairdb_read_repairs_total 2"), "{metrics}");
    assert!(
        metrics.contains(
            "pairdb_requests_total{route=\"Get\",method=\"POST\",status=\"200\",level=\"all\"}"
        ),
        "{metrics}"
    );
    // Its view of the cluster, and its calls to the metadata store.
    let epoch = format!("pairdb_placement_epoch {}", t.epoch());
    assert!(metrics.contains(&epoch), "{epoch} in {metrics}");
    for node in &t.cluster.nodes {
        let up = format!("pairdb_node_up{{node=\"{}\"}} 1", node.id);
        assert!(metrics.contains(&up), "{up} in {metrics}");
    }
    assert!(
        metrics
            .contains("pairdb_store_duration_seconds_count{store=\"metadata\",op=\"placement\"}"),
        "{metrics}"
    );
    t.cluster.stop().await.expect("every node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_repaired_too() {
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let put = t
        .kv(
            Method::PUT,
            "gone",
            &key,
            &[("X-Consistency", "all")],
            Some(b"v".to_vec()),
        )
        .await;
    assert_eq!(put.status(), StatusCode::OK);
    let replicas = t.replicas("acme", b"gone");
    // A delete that only one replica saw.
    let ctx = header(&put, "x-pairdb-context")
        .expect("context")
        .to_owned();
    let ctx = t
        .signer()
        .open("acme", b"gone", &ctx)
        .expect("context opens");
    t.storage(&replicas[2], Some(INTERNAL_TOKEN))
        .mint(MintRequest {
            epoch: t.epoch(),
            key: Some(KeyRef {
                namespace: "acme".into(),
                key: b"gone".to_vec(),
            }),
            context: Some(pairdb_proto::convert::context_to_pb(&ctx)),
            tombstone: true,
            ..MintRequest::default()
        })
        .await
        .expect("mint tombstone");
    let get = t
        .kv(Method::GET, "gone", &key, &[("X-Consistency", "all")], None)
        .await;
    assert_eq!(get.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&get, "x-pairdb-read-repair"), Some("2"));
    for r in &replicas {
        assert!(
            t.stored(r, "acme", b"gone")
                .await
                .expect("tombstone")
                .tombstone,
            "replica {r}"
        );
    }
    t.cluster.stop().await.expect("every node stops cleanly");
}
