//! Hinted handoff: a replica that missed writes — killed, then restarted on its own data — is
//! caught up by the writes' leaders from their durable hints, without any read touching the
//! keys: within seconds it holds every acknowledged write, and no deleted key comes back.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::{self, INTERNAL_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_replica_is_caught_up_from_hints_without_reads() {
    let mut t = harness::start(3).await;
    let key = t.create_tenant("hinted", 3).await;
    // Written before: deleted while the node is down.
    for i in 0..40 {
        let resp = t
            .kv(
                Method::PUT,
                &format!("old-{i}"),
                &key,
                &[],
                Some(b"old".to_vec()),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let victim = "node-3";
    let addr = t
        .cluster
        .nodes
        .iter()
        .find(|n| n.id == victim)
        .expect("victim")
        .addr;
    t.kill(victim);
    t.await_unreachable(victim).await;

    let mut written = Vec::new();
    for i in 0..300 {
        let k = format!("new-{i}");
        let resp = t
            .kv(
                Method::PUT,
                &k,
                &key,
                &[("x-consistency", "quorum")],
                Some(format!("v{i}").into_bytes()),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "{k}");
        written.push((k, format!("v{i}")));
    }
    for i in 0..40 {
        let resp = t
            .kv(Method::DELETE, &format!("old-{i}"), &key, &[], None)
            .await;
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    // The leaders hold durable hints for the missed replica.
    let mut pending = 0;
    for node in ["node-1", "node-2"] {
        let h = t
            .storage(node, Some(INTERNAL_TOKEN))
            .health(pairdb_proto::storage::HealthRequest {})
            .await
            .expect("health")
            .into_inner();
        pending += h.hints_pending;
    }
    assert!(pending >= 300, "only {pending} hints held");

    t.restart_in_place(victim, addr);
    // Caught up within 30 s, with no read of these keys through the cluster.
    let started = std::time::Instant::now();
    loop {
        let mut missing = 0;
        for (k, v) in &written {
            match t.try_stored(victim, "hinted", k.as_bytes()).await {
                Ok(Some(version)) if version.value == v.as_bytes() => {}
                _ => missing += 1,
            }
        }
        for i in 0..40 {
            match t
                .try_stored(victim, "hinted", format!("old-{i}").as_bytes())
                .await
            {
                Ok(Some(version)) if version.tombstone => {}
                _ => missing += 1,
            }
        }
        if missing == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{missing} writes still missing on {victim} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The hints are gone once delivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in ["node-1", "node-2"] {
        let h = t
            .storage(node, Some(INTERNAL_TOKEN))
            .health(pairdb_proto::storage::HealthRequest {})
            .await
            .expect("health")
            .into_inner();
        assert_eq!(h.hints_pending, 0, "{node}");
        // Peers judge the restarted node up again.
        assert!(
            h.peers.iter().any(|p| p.node_id == victim && p.up),
            "{node}: {:?}",
            h.peers
        );
    }
}
