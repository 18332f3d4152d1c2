//! The write path against scripted storage nodes: each outcome driven deterministically.

use std::sync::Arc;
use std::time::Duration;

use pairdb_coordinator::CoordinatorError;
use pairdb_coordinator::error::Applied;
use pairdb_coordinator::replication::Conflict;
use pairdb_core::{Consistency, ErrorKind};
use pairdb_metadata::MetadataStore as _;
use pairdb_proto::storage::RefusalReason;
use pairdb_storage::engine::StorageEngine as _;
use tonic::Code;

use crate::fake::*;

fn served_mints(f: &Fixture) -> usize {
    f.nodes
        .iter()
        .map(|n| Counters::get(&n.counters.mints_served))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_refuses_is_failed_over() {
    let f = Fixture::start().await;
    let [leader, second, third] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    for reason in [RefusalReason::Engine, RefusalReason::Unauthenticated] {
        leader.script.mint([Step::Refuse(reason)]);
        let out = f
            .replicator
            .write(put("k", "v", Consistency::Quorum, "", LONG))
            .await
            .expect("failed over");
        assert_eq!(out.version.minted_by, second.id, "{reason:?}");
    }
    assert_eq!(Counters::get(&leader.counters.mints_served), 0);
    assert_eq!(Counters::get(&second.counters.mints_served), 2);
    assert_eq!(Counters::get(&third.counters.mints), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_leader_refusing_is_503_none() {
    let f = Fixture::start().await;
    for n in f.replicas("k") {
        n.script.mint([Step::Refuse(RefusalReason::Engine)]);
    }
    let err = f
        .replicator
        .write(put("k", "v", Consistency::Quorum, "", LONG))
        .await
        .expect_err("no leader");
    assert!(
        matches!(
            err,
            CoordinatorError::WriteUnavailable {
                acks: 0,
                applied: Applied::None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(served_mints(&f), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_error_after_the_mint_is_504_unknown_and_mints_once() {
    let f = Fixture::start().await;
    let leader = f.replicas("k")[0];
    // The codes tonic produces for broken streams too: none of them proves nothing was minted.
    for code in [
        Code::Internal,
        Code::Unknown,
        Code::Unavailable,
        Code::ResourceExhausted,
    ] {
        leader.script.mint([Step::PassThenBare(code)]);
        let err = f
            .replicator
            .write(put("k", "v", Consistency::Quorum, "", LONG))
            .await
            .expect_err("outcome unknown");
        assert!(
            matches!(
                err,
                CoordinatorError::Timeout {
                    applied: Some(Applied::Unknown),
                    ..
                }
            ),
            "{code:?}: {err:?}"
        );
    }
    assert_eq!(served_mints(&f), 4, "one mint per write, on the leader");
    assert_eq!(Counters::get(&leader.counters.mints_served), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_after_the_mint_is_504_unknown_and_mints_once() {
    let mut f = Fixture::start().await;
    let prefs = f.prefs("k");
    let leader = f.node(&prefs[0]);
    leader.script.mint([Step::PassThenHang]);
    let served = Arc::clone(&leader.counters);
    let replicator = f.replicator.clone();
    let write = tokio::spawn(async move {
        replicator
            .write(put("k", "v", Consistency::Quorum, "idem-1", LONG))
            .await
    });
    // The leader minted; now it crashes before answering.
    served.served.notified().await;
    let minted = f.node(&prefs[0]).stored("k").expect("minted on the leader");
    f.node_mut(&prefs[0]).kill();
    let err = write.await.expect("task").expect_err("outcome unknown");
    assert!(
        matches!(
            err,
            CoordinatorError::Timeout {
                applied: Some(Applied::Unknown),
                ..
            }
        ),
        "{err:?}"
    );
    // No other replica was asked to mint: exactly one version exists.
    for id in &prefs[1..] {
        assert_eq!(Counters::get(&f.node(id).counters.mints), 0);
        assert_eq!(f.node(id).stored("k"), None);
    }
    assert_eq!(minted.idempotency_key, "idem-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_failing_after_the_mint_is_503_partial() {
    let f = Fixture::start().await;
    let [leader, b, c] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    // Both replicas provably stored nothing: refused, or never reached.
    b.script.apply([Step::Refuse(RefusalReason::Engine)]);
    c.script.apply([Step::Refuse(RefusalReason::ShuttingDown)]);
    let err = f
        .replicator
        .write(put("k", "v", Consistency::Quorum, "idem-p", LONG))
        .await
        .expect_err("partial");
    assert!(
        matches!(
            err,
            CoordinatorError::WriteUnavailable {
                acks: 1,
                required: 2,
                applied: Applied::Partial,
            }
        ),
        "{err:?}"
    );
    assert!(leader.stored("k").is_some());
    // Both replicas that missed it are recorded to be caught up: here, since these scripted
    // leaders keep no hints of their own (the pipeline hands them off after the answer).
    eventually("both replicas hinted", || {
        f.cluster.hints().pending_for(&b.id) == 1 && f.cluster.hints().pending_for(&c.id) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_epoch_refreshes_once_then_succeeds() {
    let f = Fixture::start().await;
    let epoch = f.advance_epoch_behind_the_coordinator().await;
    let reads = f.placement_reads();
    let out = f
        .replicator
        .write(put("k", "v", Consistency::All, "", LONG))
        .await
        .expect("written after the refresh");
    assert_eq!(out.acks, 3);
    assert_eq!(f.placement_reads() - reads, 1);
    assert_eq!(f.cluster.view().expect("view").placement.epoch, epoch);
    assert_eq!(served_mints(&f), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_stale_requests_reads_the_placement_once() {
    let f = Fixture::start().await;
    f.advance_epoch_behind_the_coordinator().await;
    let reads = f.placement_reads();
    let writes = (0..200).map(|i| {
        let replicator = f.replicator.clone();
        tokio::spawn(async move {
            replicator
                .write(put(&format!("k{i}"), "v", Consistency::Quorum, "", LONG))
                .await
        })
    });
    for w in futures::future::join_all(writes).await {
        w.expect("task").expect("written after the refresh");
    }
    assert_eq!(
        f.placement_reads() - reads,
        1,
        "one metadata read for the herd"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_outlives_a_one_millisecond_client_deadline() {
    let f = Fixture::start().await;
    let result = f
        .replicator
        .write(put(
            "k",
            "v",
            Consistency::One,
            "idem-fast",
            Duration::from_millis(1),
        ))
        .await;
    // Whatever the client was told, the write reaches every replica.
    if let Err(e) = &result {
        assert!(
            matches!(
                e,
                CoordinatorError::Timeout {
                    applied: Some(Applied::Unknown),
                    ..
                }
            ),
            "{e:?}"
        );
    }
    eventually("the write on every replica", || {
        f.nodes.iter().all(|n| n.stored("k").is_some())
    })
    .await;
    let versions: Vec<_> = f.nodes.iter().map(|n| n.stored("k")).collect();
    assert!(versions.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(served_mints(&f), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_reports_exactly_what_the_first_did() {
    let f = Fixture::start().await;
    let first = f
        .replicator
        .write(put("k", "v1", Consistency::All, "", LONG))
        .await
        .expect("v1");
    let second = f
        .replicator
        .write(put("k", "v2", Consistency::All, "", LONG))
        .await
        .expect("v2");
    assert_ne!(first.version, second.version);
    // A write with the stale context of v1: it overwrites v2 unseen, a conflict it won.
    let mut op = put("k", "v3", Consistency::All, "idem-c", LONG);
    op.context = first.context.clone();
    let won = f.replicator.write(op.clone()).await.expect("v3");
    assert_eq!(won.conflict, Conflict::Won);
    let stored: Vec<_> = f.nodes.iter().map(|n| n.stored("k")).collect();
    let mut retry = op.clone();
    retry.deadline = tokio::time::Instant::now() + LONG;
    let again = f.replicator.write(retry).await.expect("retry");
    assert!(again.replayed && !won.replayed);
    assert_eq!(again.version, won.version);
    assert_eq!(again.context, won.context);
    assert_eq!(
        again.conflict,
        Conflict::Won,
        "the replay reports the first answer"
    );
    let after: Vec<_> = f.nodes.iter().map(|n| n.stored("k")).collect();
    assert_eq!(after, stored, "the retry minted nothing");

    // The same key for another write is refused, nothing minted.
    let reused = put("k", "something else", Consistency::All, "idem-c", LONG);
    let err = f.replicator.write(reused).await.expect_err("reused");
    assert!(
        matches!(
            err,
            CoordinatorError::Invalid {
                kind: ErrorKind::IdempotencyKeyReused,
                ..
            }
        ),
        "{err:?}"
    );
    let after: Vec<_> = f.nodes.iter().map(|n| n.stored("k")).collect();
    assert_eq!(after, stored, "the reuse minted nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_never_answers_is_504_unknown_and_not_failed_over() {
    // The client is told 504 unknown; the assertions come once the write's pipeline has ended
    // (it gives up on the silent leader at its own deadline), so a failover at any point of the
    // write's life would show. (By design a mint's deadline never precedes the client's, after
    // which no new leader is tried anyway: this pins the behaviour, not one mechanism.)
    let f = Fixture::start_with(|c| c.replication_timeout = Duration::from_millis(300)).await;
    let [leader, b, c] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    leader.script.mint([Step::Hang]);
    let err = f
        .replicator
        .write(put(
            "k",
            "v",
            Consistency::Quorum,
            "",
            Duration::from_secs(2),
        ))
        .await
        .expect_err("no answer");
    assert!(
        matches!(
            err,
            CoordinatorError::Timeout {
                applied: Some(Applied::Unknown),
                ..
            }
        ),
        "{err:?}"
    );
    eventually("the write pipeline ended", || {
        f.cluster.writes_in_flight_bytes() == 0
    })
    .await;
    assert_eq!(Counters::get(&b.counters.mints), 0);
    assert_eq!(Counters::get(&c.counters.mints), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_a_newer_placement_gets_the_write_at_the_new_epoch() {
    let f = Fixture::start().await;
    let [_, b, _] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    // Another coordinator moved the placement on; so far only b was pushed it.
    let current = f
        .store
        .inner
        .placement()
        .await
        .expect("read")
        .expect("placement");
    let next = pairdb_core::Placement {
        epoch: current.epoch + 1,
        ..current.clone()
    };
    assert!(
        f.store
            .inner
            .swap_placement(Some(current.epoch), &next)
            .await
            .expect("swap")
    );
    b.state.install(next.clone()).await.expect("install");
    let out = f
        .replicator
        .write(put("k", "v", Consistency::All, "", LONG))
        .await
        .expect("written everywhere");
    assert_eq!(out.acks, 3);
    assert_eq!(b.stored("k"), Some(out.version));
    assert_eq!(f.cluster.view().expect("view").placement.epoch, next.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_refresh_outlasting_the_deadline_is_503_none() {
    let f = Fixture::start().await;
    f.advance_epoch_behind_the_coordinator().await;
    // The metadata store stops answering: the refresh the stale epoch needs cannot finish.
    f.store.stall_placement_reads(true);
    let err = f
        .replicator
        .write(put(
            "k",
            "v",
            Consistency::Quorum,
            "",
            Duration::from_millis(300),
        ))
        .await
        .expect_err("no placement in time");
    assert!(
        matches!(
            err,
            CoordinatorError::NotReady {
                applied: Some(Applied::None),
                ..
            }
        ),
        "{err:?}"
    );
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), Code::Unavailable);
    let detail = pairdb_proto::error_detail(&status).expect("detail");
    assert_eq!(
        (detail.kind.as_str(), detail.applied.as_str()),
        ("not-ready", "none")
    );
    assert_eq!(served_mints(&f), 0);
    f.store.stall_placement_reads(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_a_write_is_caught_up_from_its_hint() {
    let f = Fixture::start_with(|c| c.probe_interval = Duration::from_millis(20)).await;
    let maintain = tokio::spawn(Arc::clone(&f.cluster).maintain());
    let [_, b, _] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    b.script.apply([Step::Bare(Code::Unavailable)]);
    let out = f
        .replicator
        .write(put("k", "v", Consistency::Quorum, "idem-h", LONG))
        .await
        .expect("quorum without b");
    assert_eq!(out.acks, 2);
    eventually("b caught up from its hint", || b.stored("k").is_some()).await;
    assert_eq!(b.stored("k"), Some(out.version.clone()));
    // With the write's record: b now deduplicates a retry it leads.
    let applied = b
        .engine
        .applied(
            &pairdb_core::StorageKey::new(TENANT, b"k").expect("key"),
            "idem-h",
        )
        .expect("applied");
    assert_eq!(applied.map(|w| w.version), Some(out.version));
    assert_eq!(f.cluster.hints().pending(), 0);
    maintain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_that_lost_reports_that_it_lost() {
    let f = Fixture::start().await;
    let [_, b, c] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    // Replicas b and c hold a concurrent version stamped far ahead (within the allowed skew):
    // the write loses to it there.
    let hlc = pairdb_core::Hlc::new();
    let ahead = pairdb_core::Version {
        timestamp: (pairdb_core::hlc::wall_ms() + 30_000) << pairdb_core::hlc::LOGICAL_BITS,
        ..pairdb_core::version::mint(
            None,
            pairdb_core::version::MintRequest::default(),
            &pairdb_core::Actor::new("n9", 1),
            &hlc,
        )
        .0
    };
    b.put("k", ahead.clone());
    c.put("k", ahead);
    let op = put("k", "v", Consistency::All, "idem-lost", LONG);
    let first = f.replicator.write(op.clone()).await.expect("first");
    assert_eq!(first.conflict, Conflict::Lost);
    // Now b and c hold the join, which covers the write: applying it again changes nothing,
    // yet the retry reports what the first attempt did.
    let mut retry = op;
    retry.deadline = tokio::time::Instant::now() + LONG;
    let again = f.replicator.write(retry).await.expect("retry");
    assert!(again.replayed);
    assert_eq!(again.conflict, Conflict::Lost);
    assert_eq!(again.version, first.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_in_flight_budget_are_refused_before_minting() {
    // A budget of 64 KiB; a pipeline holding a 10 KiB value (charged for each of its copies,
    // about 52 KiB) waits on a silent replica.
    let f = Fixture::start_with(|c| c.max_in_flight_bytes = 64 << 10).await;
    let [_, b, _] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    b.script.apply([Step::Hang]);
    let big = "x".repeat(10 << 10);
    let first = f
        .replicator
        .write(put("k", &big, Consistency::Quorum, "", LONG))
        .await
        .expect("quorum without b");
    assert_eq!(first.acks, 2);
    assert!(
        f.cluster.writes_in_flight_bytes() > 0,
        "its pipeline waits on b"
    );
    let err = f
        .replicator
        .write(put("k2", &big, Consistency::Quorum, "", LONG))
        .await
        .expect_err("over the budget");
    assert!(
        matches!(
            err,
            CoordinatorError::NotReady {
                applied: Some(Applied::None),
                ..
            }
        ),
        "{err:?}"
    );
    // Small writes still fit.
    f.replicator
        .write(put("k3", "small", Consistency::Quorum, "", LONG))
        .await
        .expect("a small write fits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_refused_for_now_is_kept_and_replayed_later() {
    let f = Fixture::start_with(|c| c.probe_interval = Duration::from_millis(20)).await;
    let [_, b, _] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    // b misses the write, then refuses the first replays as its engine fails for a while.
    b.script.apply([
        Step::Bare(Code::Unavailable),
        Step::Refuse(RefusalReason::Engine),
        Step::Refuse(RefusalReason::ShuttingDown),
    ]);
    let out = f
        .replicator
        .write(put("k", "v", Consistency::Quorum, "", LONG))
        .await
        .expect("quorum without b");
    let maintain = tokio::spawn(Arc::clone(&f.cluster).maintain());
    eventually("b caught up once its engine recovered", || {
        b.stored("k") == Some(out.version.clone())
    })
    .await;
    assert!(Counters::get(&b.counters.applies) >= 4);
    assert_eq!(f.cluster.hints().pending(), 0);
    maintain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_go_on_while_the_metadata_store_hangs() {
    let mut f = Fixture::start_with(|c| c.probe_interval = Duration::from_millis(20)).await;
    f.store.stall_placement_reads(true);
    let maintain = tokio::spawn(Arc::clone(&f.cluster).maintain());
    let victim = f.nodes[0].id.clone();
    f.node_mut(&victim).kill();
    let cluster = Arc::clone(&f.cluster);
    eventually("the dead node marked down", || {
        !cluster.pool().is_live(&victim)
    })
    .await;
    maintain.abort();
    f.store.stall_placement_reads(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_failing_without_proof_after_the_mint_is_504_unknown() {
    let f = Fixture::start().await;
    let [_, b, c] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    // At quorum: b refused, but c's stream broke after it stored the version — two replicas
    // may hold it, so whether the write met its level is unknown, not "partial".
    b.script.apply([Step::Refuse(RefusalReason::Engine)]);
    c.script.apply([Step::PassThenBare(Code::Internal)]);
    let err = f
        .replicator
        .write(put("k", "v", Consistency::Quorum, "", LONG))
        .await
        .expect_err("not all");
    assert!(
        matches!(
            err,
            CoordinatorError::Timeout {
                applied: Some(Applied::Unknown),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(c.stored("k").is_some(), "c did store it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_placement_met_while_replicating_retargets_the_write() {
    let f = Fixture::start().await;
    let [leader, b, c] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    // The tenant's RF drops to 2 at the next epoch; the replicas learn it, the leader and the
    // coordinator do not yet.
    let current = f
        .store
        .inner
        .placement()
        .await
        .expect("read")
        .expect("placement");
    let next = current.with_tenant(TENANT, 2);
    assert!(
        f.store
            .inner
            .swap_placement(Some(current.epoch), &next)
            .await
            .expect("swap")
    );
    for n in [b, c] {
        n.state.install(next.clone()).await.expect("install");
    }
    let stays = next
        .ring()
        .preference_list(pairdb_core::key::token(TENANT, b"k"), 2)
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let out = f
        .replicator
        .write(put("k", "v", Consistency::All, "", LONG))
        .await
        .expect("written on the new placement's replicas");
    // Level `all` of the new placement (2 replicas), not a failure of the old one (3).
    assert_eq!(out.acks, 2);
    for n in [leader, b, c] {
        let holds = n.stored("k").is_some();
        assert_eq!(holds, stays.contains(&n.id), "{}", n.id);
    }
    // The one that is no longer a replica is not hinted.
    let dropped: Vec<&FakeNode> = [b, c]
        .into_iter()
        .filter(|n| !stays.contains(&n.id))
        .collect();
    for n in dropped {
        assert_eq!(f.cluster.hints().pending_for(&n.id), 0);
    }
}
