//! Conflicts: writes with stale contexts, and versions minted concurrently by two leaders.

use pairdb_core::Actor;
use pairdb_core::version::Version;
use pairdb_proto::convert::version_from_pb;
use pairdb_proto::storage::{ApplyRequest, KeyRef, MintRequest};
use reqwest::{Method, StatusCode};
use std::cmp::Ordering;

use crate::harness::{INTERNAL_TOKEN, header, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_context_wins_and_reports_the_conflict() {
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let first = t
        .kv(Method::PUT, "doc", &key, &[], Some(b"v0".to_vec()))
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        header(&first, "x-pairdb-conflict"),
        None,
        "a blind write never conflicts"
    );
    let ctx0 = header(&first, "x-pairdb-context")
        .expect("context")
        .to_owned();

    let second = t
        .kv(
            Method::PUT,
            "doc",
            &key,
            &[("X-Pairdb-Context", &ctx0)],
            Some(b"v1".to_vec()),
        )
        .await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(
        header(&second, "x-pairdb-conflict"),
        None,
        "the context covered what was stored"
    );
    let ctx1 = header(&second, "x-pairdb-context")
        .expect("context")
        .to_owned();

    // The same (now stale) context again: this write overwrote v1 without having seen it.
    let third = t
        .kv(
            Method::PUT,
            "doc",
            &key,
            &[("X-Pairdb-Context", &ctx0)],
            Some(b"v2".to_vec()),
        )
        .await;
    assert_eq!(third.status(), StatusCode::OK);
    assert_eq!(
        header(&third, "x-pairdb-conflict"),
        Some("lww; outcome=won")
    );

    let get = t
        .kv(Method::GET, "doc", &key, &[("X-Consistency", "all")], None)
        .await;
    assert_eq!(get.status(), StatusCode::OK);
    let ctx = header(&get, "x-pairdb-context")
        .expect("context")
        .to_owned();
    assert_eq!(get.bytes().await.expect("body").as_ref(), b"v2");
    let signer = t.signer();
    let read_ctx = signer.open("acme", b"doc", &ctx).expect("opens");
    let c1 = signer.open("acme", b"doc", &ctx1).expect("opens");
    let c0 = signer.open("acme", b"doc", &ctx0).expect("opens");
    assert!(read_ctx.clock.descends(&c1.clock), "covers v1");
    assert!(read_ctx.clock.descends(&c0.clock), "covers v0");
    assert!(read_ctx.timestamp > c1.timestamp);
    t.cluster.stop().await.expect("every node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_leaders_converge_to_the_greater_key() {
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let replicas = t.replicas("acme", b"race");
    let mut minted: Vec<Version> = Vec::new();
    for (node, value) in [(&replicas[0], "from-a"), (&replicas[1], "from-b")] {
        let resp = t
            .storage(node, Some(INTERNAL_TOKEN))
            .mint(MintRequest {
                epoch: t.epoch(),
                key: Some(KeyRef {
                    namespace: "acme".into(),
                    key: b"race".to_vec(),
                }),
                value: value.as_bytes().to_vec(),
                content_type: "text/plain".into(),
                ..MintRequest::default()
            })
            .await
            .expect("mint")
            .into_inner();
        minted.push(version_from_pb(resp.version.expect("version")).expect("valid"));
    }
    assert!(minted[0].is_concurrent_with(&minted[1]));
    let winner = if minted[0].cmp_resolution_key(&minted[1]) == Ordering::Greater {
        &minted[0]
    } else {
        &minted[1]
    };

    let get = t
        .kv(Method::GET, "race", &key, &[("X-Consistency", "all")], None)
        .await;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(header(&get, "x-pairdb-conflict"), Some("lww"));
    assert_eq!(
        get.bytes().await.expect("body").as_ref(),
        winner.value.as_slice()
    );

    let converged = t
        .stored(&replicas[0], "acme", b"race")
        .await
        .expect("stored");
    assert_eq!(converged.value, winner.value);
    assert_eq!(converged.timestamp, winner.timestamp);
    assert!(
        converged.clock.descends(&minted[0].clock) && converged.clock.descends(&minted[1].clock)
    );
    let leaders: Vec<&str> = converged
        .clock
        .entries()
        .map(|(a, _): (&Actor, u64)| a.node.as_str())
        .collect();
    assert!(
        leaders.contains(&replicas[0].as_str()) && leaders.contains(&replicas[1].as_str()),
        "{leaders:?}"
    );
    for r in &replicas {
        assert_eq!(
            t.stored(r, "acme", b"race").await.as_ref(),
            Some(&converged),
            "replica {r}"
        );
    }
    t.cluster.stop().await.expect("every node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_over_a_concurrent_version_on_a_replica_reports_it_won() {
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let base = t
        .kv(
            Method::PUT,
            "doc",
            &key,
            &[("X-Consistency", "all")],
            Some(b"v0".to_vec()),
        )
        .await;
    assert_eq!(base.status(), StatusCode::OK);
    let ctx0 = header(&base, "x-pairdb-context")
        .expect("context")
        .to_owned();
    // Another writer's version reached one replica (not the leader) only.
    let replicas = t.replicas("acme", b"doc");
    let opened = t.signer().open("acme", b"doc", &ctx0).expect("opens");
    let unseen = t
        .storage(&replicas[1], Some(INTERNAL_TOKEN))
        .mint(MintRequest {
            epoch: t.epoch(),
            key: Some(KeyRef {
                namespace: "acme".into(),
                key: b"doc".to_vec(),
            }),
            context: Some(pairdb_proto::convert::context_to_pb(&opened)),
            value: b"unseen".to_vec(),
            ..MintRequest::default()
        })
        .await
        .expect("mint")
        .into_inner()
        .version
        .expect("version");
    // The leader's clock must run past the unseen version, as a real leader's eventually does:
    // a version with that timestamp applied to another key moves the leader's HLC without
    // showing it the unseen version, so the write below is newer than it (no sleep, no race).
    let clock_mover = pairdb_proto::storage::Version {
        value: b"clock".to_vec(),
        ..unseen.clone()
    };
    t.storage(&replicas[0], Some(INTERNAL_TOKEN))
        .apply(ApplyRequest {
            epoch: t.epoch(),
            key: Some(KeyRef {
                namespace: "acme".into(),
                key: b"elsewhere".to_vec(),
            }),
            version: Some(clock_mover),
            record: None,
        })
        .await
        .expect("advance the leader's clock");
    // The leader holds v0, which ctx0 covers; the replica's version is concurrent with the write.
    let write = t
        .kv(
            Method::PUT,
            "doc",
            &key,
            &[("X-Consistency", "all"), ("X-Pairdb-Context", &ctx0)],
            Some(b"v1".to_vec()),
        )
        .await;
    assert_eq!(write.status(), StatusCode::OK);
    assert_eq!(
        header(&write, "x-pairdb-conflict"),
        Some("lww; outcome=won")
    );
    // Blind writes never report a conflict they won.
    let blind = t
        .kv(
            Method::PUT,
            "doc",
            &key,
            &[("X-Consistency", "all")],
            Some(b"v2".to_vec()),
        )
        .await;
    assert_eq!(header(&blind, "x-pairdb-conflict"), None);
    t.cluster.stop().await.expect("every node stops cleanly");
}
