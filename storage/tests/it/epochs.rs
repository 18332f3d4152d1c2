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
    before_write.arm();
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

    before_write.release();
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
    let (state, _, after_write) = gated_state(dir.path());
    let engine = GatedEngine::new();
    let node = TestNode::start_with(Arc::clone(&engine) as _, state).await;
    let c = node.pushed(1).await;
    let hlc = Hlc::new();

    // An apply at epoch 1 is admitted and holds in the engine.
    engine.apply_gate.arm();
    let mut first = c.clone();
    let in_flight = {
        let request = apply_request(1, "first", &hlc);
        tokio::spawn(async move { first.apply(request).await })
    };
    engine.apply_gate.entered(1).await;

    // A push of epoch 2 persists, then waits for the admitted apply before publishing.
    after_write.arm();
    let mut pusher = c.clone();
    let push = tokio::spawn(async move { pusher.push_placement(push(2)).await });
    after_write.entered(1).await;
    after_write.release();

    // A second apply at epoch 1 arrives while the push waits to publish.
    let mut second = c.clone();
    let racing = {
        let request = apply_request(1, "second", &hlc);
        tokio::spawn(async move { second.apply(request).await })
    };

    assert!(
        !push.is_finished(),
        "published while an old-epoch apply was in flight"
    );
    engine.apply_gate.release();

    // The admitted apply landed before the push was answered...
    let landed = in_flight.await.expect("task").expect("first apply");
    assert_eq!(landed.into_inner().outcome(), pb::ApplyOutcome::Applied);
    let pushed = push.await.expect("task").expect("push");
    assert_eq!(pushed.into_inner().epoch, 2);
    // ...and the racing one either landed before the push too, or was refused; never after.
    match racing.await.expect("task") {
        Ok(_) => {}
        Err(status) => {
            assert_eq!(
                pairdb_proto::refusal(&status).map(|r| r.reason()),
                Some(RefusalReason::StaleEpoch),
                "{status:?}"
            );
            assert_eq!(
                node.engine.get(&storage_key("second")).expect("get"),
                None,
                "a refused apply stored nothing"
            );
        }
    }
    assert!(
        node.engine
            .get(&storage_key("first"))
            .expect("get")
            .is_some()
    );
    // From now on epoch 1 is refused.
    let mut c = c;
    assert_eq!(
        refusal(c.apply(apply_request(1, "third", &hlc)).await),
        RefusalReason::StaleEpoch
    );
    node.stop().await;
}
