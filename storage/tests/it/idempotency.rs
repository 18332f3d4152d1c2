//! Exact idempotency at the leader: a retry of the same write returns what the first attempt
//! produced and reported, and mints nothing; the same key on a different write is refused.

use pairdb_core::Actor;
use pairdb_proto::convert::{version_from_pb, version_to_pb};
use pairdb_proto::storage as pb;
use pairdb_proto::storage::RefusalReason;

use crate::support::*;

#[tokio::test]
async fn a_retry_returns_the_first_version_and_its_report() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    let incarnation = node.state.incarnation();
    let (v1, _) = mint_version(&mut c, put(1, "k", "v1")).await;
    let (v2, _) = mint_version(&mut c, put(1, "k", "v2")).await;

    // A write whose context (v1) does not cover the stored v2: a conflict, reported.
    let write = pb::MintRequest {
        idempotency_key: "order-1".into(),
        ..with_context(put(1, "k", "v3"), &v1)
    };
    let (first, r1) = mint_version(&mut c, write.clone()).await;
    assert!(r1.conflict && !r1.deduplicated);
    assert!(first.clock.descends(&v2.clock));
    let counter = first
        .clock
        .get(&Actor::new(node.state.node_id(), incarnation));

    // Retried twice: the same version, the same report, one clock increment in all.
    for _ in 0..2 {
        let (again, r) = mint_version(&mut c, write.clone()).await;
        assert_eq!(again, first);
        assert!(r.deduplicated);
        assert!(r.conflict, "the retry reports what the first attempt did");
        assert_eq!(r.record, r1.record);
    }
    let stored = node.engine.get(&storage_key("k")).expect("get");
    assert_eq!(stored.as_ref(), Some(&first));
    assert_eq!(
        stored
            .map(|s| s.clock.get(&Actor::new(node.state.node_id(), incarnation)))
            .unwrap_or_default(),
        counter
    );

    // The same write, replicated to this node with a merged clock by read repair (no record),
    // does not change what a retry answers.
    let repaired = pb::ApplyRequest {
        epoch: 1,
        key: key_ref("t", "k"),
        version: Some(version_to_pb(&pairdb_core::Version {
            clock: first.clock.merged(&v1.clock),
            ..first.clone()
        })),
        record: None,
    };
    c.apply(repaired).await.expect("repair");
    let (again, _) = mint_version(&mut c, write).await;
    assert_eq!(again, first);
    node.stop().await;
}

#[tokio::test]
async fn a_reused_key_on_another_write_is_refused() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    let (seen, _) = mint_version(&mut c, put(1, "k", "before")).await;
    let original = pb::MintRequest {
        idempotency_key: "order-7".into(),
        ..put(1, "k", "value")
    };
    let (first, _) = mint_version(&mut c, original.clone()).await;

    let others = [
        // Another value.
        pb::MintRequest {
            value: b"other".to_vec(),
            ..original.clone()
        },
        // Another content type.
        pb::MintRequest {
            content_type: "application/json".into(),
            ..original.clone()
        },
        // A delete reusing a put's key.
        pb::MintRequest {
            tombstone: true,
            value: Vec::new(),
            content_type: String::new(),
            ..original.clone()
        },
        // The same value with a context.
        with_context(original.clone(), &seen),
    ];
    for other in others {
        let refused = c.mint(other).await.expect_err("reused key");
        assert_eq!(refused.code(), tonic::Code::AlreadyExists);
        assert_eq!(
            pairdb_proto::refusal(&refused).map(|r| r.reason()),
            Some(RefusalReason::IdempotencyKeyReused)
        );
    }
    let stored = c
        .read(read(1, "k"))
        .await
        .expect("read")
        .into_inner()
        .version
        .map(|v| version_from_pb(v).expect("valid"));
    assert_eq!(stored, Some(first), "nothing was minted for the reuses");
    // The same key on another user key is another write altogether.
    let elsewhere = pb::MintRequest {
        key: key_ref("t", "other-key"),
        ..original
    };
    let (_, r) = mint_version(&mut c, elsewhere).await;
    assert!(!r.deduplicated);
    node.stop().await;
}

#[tokio::test]
async fn a_replica_that_recorded_the_write_deduplicates_it_as_leader() {
    // The write was minted on another node and replicated here with its record; this node then
    // leads a retry (the first leader is down): it answers the same version and report.
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let (a, mut ca) = TestNode::with_epoch(dir_a.path(), 1).await;
    let (b, mut cb) = TestNode::with_epoch(dir_b.path(), 1).await;
    let write = pb::MintRequest {
        idempotency_key: "order-9".into(),
        ..put(1, "k", "v")
    };
    let (first, r1) = mint_version(&mut ca, write.clone()).await;
    cb.apply(pb::ApplyRequest {
        epoch: 1,
        key: key_ref("t", "k"),
        version: Some(version_to_pb(&first)),
        record: r1.record.clone(),
    })
    .await
    .expect("replicate");
    let (again, r2) = mint_version(&mut cb, write.clone()).await;
    assert!(r2.deduplicated);
    assert_eq!(again, first);
    let reused = pb::MintRequest {
        value: b"w".to_vec(),
        ..write
    };
    assert_eq!(
        refusal(cb.mint(reused).await),
        RefusalReason::IdempotencyKeyReused
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_replica_answers_a_replicated_retry_as_it_answered_the_first_time() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    let hlc = pairdb_core::Hlc::new();
    // The replica holds a concurrent version with a greater key (minted later): the write
    // loses there.
    let loser = pairdb_core::version::mint(
        None,
        pairdb_core::version::MintRequest {
            idempotency_key: "order-3".into(),
            ..pairdb_core::version::MintRequest::default()
        },
        &Actor::new("n9", 1),
        &hlc,
    )
    .0;
    let winner = pairdb_core::version::mint(
        None,
        pairdb_core::version::MintRequest::default(),
        &Actor::new("n8", 1),
        &hlc,
    )
    .0;
    node.engine
        .apply(&storage_key("k"), winner, None)
        .expect("apply");
    let replicate = |record: Option<pb::WriteRecord>| pb::ApplyRequest {
        epoch: 1,
        key: key_ref("t", "k"),
        version: Some(version_to_pb(&loser)),
        record,
    };
    let record = Some(pb::WriteRecord {
        fingerprint: vec![7; 32],
        conflict: false,
    });
    let first = c
        .apply(replicate(record.clone()))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(first.outcome(), pb::ApplyOutcome::Merged);
    assert!(first.concurrent);
    // Replicated again by a retry: the stored version now covers it, yet the replica reports
    // what the first apply did, so the retry's answer matches the first.
    let again = c
        .apply(replicate(record))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(again.outcome(), pb::ApplyOutcome::Merged);
    assert!(again.concurrent);
    // Without the record (read repair), the plain outcome.
    let repair = c.apply(replicate(None)).await.expect("apply").into_inner();
    assert_eq!(repair.outcome(), pb::ApplyOutcome::Superseded);
    node.stop().await;
}
