//! Placement pushes against data calls, with the node's state file and engine held at gates:
//! a push blocked in its fsyncs stalls no data call, and a call routed with the old epoch either
//! lands before the push is answered or is refused.

use std::sync::Arc;

use pairdb_core::version::{MintRequest, mint};
use pairdb_core::{Actor, Hlc};
use pairdb_proto::convert::version_to_pb;
use pairdb_proto::storage as pb;
use pairdb_proto::storage::RefusalReason;

use crate::support::*;

fn apply_request(epoch: u64, key: &str, hlc: &Hlc) -> pb::ApplyRequest {
    let version = mint(None, MintRequest::default(), &Actor::new("n2", 1), hlc).0;
    pb::ApplyRequest {
        epoch,
        key: key_ref("t", key),
        version: Some(version_to_pb(&version)),
        record: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_blocked_in_its_fsyncs_does_not_delay_reads_and_applies() {
    let dir = tempdir();
    let (state, before_write, _) = gated_state(dir.path());
    let node = TestNode::start_with(memory(), state).await;
    let mut c = node.pushed(1).await;
    let hlc = Hlc::new();

    // The next write of node.json hangs, as an fsync on a sick disk would.
    let armed = before_write.arm_until_dropped();
    let mut pusher = c.clone();
    let push = tokio::spawn(async move { pusher.push_placement(push(2)).await });
    before_write.entered(1).await;

    // Meanwhile every data call at the installed epoch goes through.
    for i in 0..20 {
        let key = format!("k{i}");
        let applied = c
            .apply(apply_request(1, &key, &hlc))
            .await
            .expect("apply during the push");
        assert_eq!(applied.into_inner().outcome(), pb::ApplyOutcome::Applied);
        let (minted, _) = mint_version(&mut c, put(1, &key, "v")).await;
        let read = c.read(read(1, &key)).await.expect("read during the push");
        assert!(read.into_inner().version.is_some());
        assert_eq!(minted.value, b"v");
    }
    assert!(!push.is_finished(), "the push is still in its fsync");
    assert_eq!(
        node.state.epoch(),
        Some(1),
        "nothing published before it is persisted"
    );

    drop(armed);
    let pushed = push.await.expect("task").expect("push");
    assert_eq!(pushed.into_inner().epoch, 2);
    assert_eq!(
        refusal(c.apply(apply_request(1, "late", &hlc)).await),
        RefusalReason::StaleEpoch
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_epoch_apply_racing_a_push_lands_before_it_or_is_refused() {
    let dir = tempdir();
    let (state, _, _) = gated_state(dir.path());
    let engine = GatedEngine::new();
    let node = TestNode::start_with(Arc::clone(&engine) as _, state).await;
    let c = node.pushed(1).await;
    let hlc = Hlc::new();

    // An apply at epoch 1 is admitted and holds in the engine.
    let armed = engine.apply_gate.arm_until_dropped();
    let mut first = c.clone();
    let in_flight = {
        let request = apply_request(1, "first", &hlc);
        tokio::spawn(async move { first.apply(request).await })
    };
    engine.apply_gate.entered(1).await;

    // A push of epoch 2 persists, then waits for the admitted apply before publishing.
    let mut pusher = c.clone();
    let push = tokio::spawn(async move { pusher.push_placement(push(2)).await });
    wait_until("the push waits to publish", || node.state.publish_pending()).await;

    // An apply at epoch 1 arriving now (on another key, so not behind the first one's key lock)
    // waits behind the pending publish and is then refused: it can never land after the push.
    let mut second = c.clone();
    let racing = {
        let request = apply_request(1, "second", &hlc);
        tokio::spawn(async move { second.apply(request).await })
    };
    // And one on the first apply's key waits for its key lock, then for the publish.
    let mut third = c.clone();
    let same_key = {
        let request = apply_request(1, "first", &hlc);
        tokio::spawn(async move { third.apply(request).await })
    };
    assert_eq!(node.state.epoch(), Some(1));
    drop(armed);

    // The admitted apply landed; the push was answered after it.
    let landed = in_flight.await.expect("task").expect("first apply");
    assert_eq!(landed.into_inner().outcome(), pb::ApplyOutcome::Applied);
    assert_eq!(
        push.await.expect("task").expect("push").into_inner().epoch,
        2
    );
    for (late, key) in [(racing, "second"), (same_key, "first")] {
        assert_eq!(
            refusal(late.await.expect("task")),
            RefusalReason::StaleEpoch,
            "an epoch-1 apply of {key} landed after the push"
        );
    }
    assert_eq!(node.engine.get(&storage_key("second")).expect("get"), None);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_mint_keeps_its_key_lock_until_its_engine_work_is_done() {
    use pairdb_proto::storage::storage_server::Storage as _;
    use pairdb_storage::engine::StorageEngine as _;
    use pairdb_storage::service::StorageService;

    // The service called in process, so cancelling a call drops its handler deterministically.
    let dir = tempdir();
    let engine = GatedEngine::new();
    let state =
        Arc::new(pairdb_storage::node::NodeState::open(dir.path(), NODE, false).expect("state"));
    state.install(placement(1)).await.expect("install");
    let service = Arc::new(StorageService::new(
        Arc::clone(&engine) as _,
        Arc::clone(&state),
        TOKEN,
    ));
    let call = |value: &'static str| {
        let service = Arc::clone(&service);
        let mut request = tonic::Request::new(put(1, "k", value));
        request.metadata_mut().insert(
            pairdb_proto::AUTHORIZATION,
            format!("Bearer {TOKEN}").parse().expect("ascii"),
        );
        tokio::spawn(async move { service.mint(request).await })
    };

    // Mint A read the (empty) key and holds in the engine (a blocking engine: on the blocking
    // pool); then its handler is dropped, as when its caller gives up.
    let armed = engine.apply_gate.arm_until_dropped();
    let a = call("a");
    engine.apply_gate.entered(1).await;
    a.abort();
    assert!(a.await.expect_err("aborted").is_cancelled());

    // Mint B of the same key must wait for A's engine work, not just for A's handler: had A's
    // key lock been dropped with its handler, B would read the empty key too, and mint the same
    // counter A did.
    let b = call("b");
    // B cannot reach the engine while A's work holds the key: give it every chance to (a
    // regression would be there within microseconds), then check it did not.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        engine.apply_gate.entered_count(),
        1,
        "B reached the engine while A's engine work was still running"
    );
    drop(armed);
    let response = b.await.expect("task").expect("mint b").into_inner();
    let b_version =
        pairdb_proto::convert::version_from_pb(response.version.expect("version")).expect("valid");
    let actor = pairdb_core::Actor::new(NODE, state.incarnation());
    assert_eq!(
        b_version.clock.get(&actor),
        2,
        "B counted after A: no counter issued twice"
    );
    let stored = engine.get(&storage_key("k")).expect("get").expect("stored");
    assert_eq!(stored.value, b"b");
}

/// Waits (bounded) until `check` holds.
async fn wait_until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..3000 {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}
