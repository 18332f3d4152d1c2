//! Membership and replication changes under write load: a node added, a node decommissioned
//! (then killed), a tenant's replication factor raised and lowered, a tenant deleted. Every
//! acknowledged write stays readable, every acknowledged delete stays deleted, each key ends on
//! exactly its new replicas (enough of them to make its quorum), and the nodes that lost a range
//! no longer hold it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::checker::{Expect, Ledger, Load, verify};
use crate::harness::{self, TestCluster};

const LIMIT: Duration = Duration::from_secs(120);

/// Writes `n` keys `{prefix}{i}` before the change, so there is data to move.
async fn preload(t: &TestCluster, api_key: &str, prefix: &str, n: usize) -> Ledger {
    let mut ledger = Ledger::default();
    for i in 0..n {
        let key = format!("{prefix}{i}");
        let resp = t
            .kv(
                Method::PUT,
                &key,
                api_key,
                &[],
                Some(format!("pre-{i}").into_bytes()),
            )
            .await;
        assert!(resp.status().is_success(), "{key}: {}", resp.status());
        ledger.keys.insert(key, Expect::Value(format!("pre-{i}")));
    }
    ledger
}

/// Checks that every key of `ledger` that was acknowledged (written or deleted) sits on every one
/// of its replicas in the current placement and on no other node of `nodes`. No node failed, so
/// every write reached every replica — the natural ones, the pending ones, or through the
/// stream — and none was repaired yet: call this before any read at `all`.
async fn placed_exactly(t: &TestCluster, tenant: &str, ledger: &Ledger, nodes: &[&str]) {
    type Held = std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>;
    let mut held: std::collections::BTreeMap<String, Held> = Default::default();
    for node in nodes {
        let entries = t.entries_on(node, tenant).await.into_iter().collect();
        held.insert((*node).to_owned(), entries);
    }
    for (key, expect) in &ledger.keys {
        let want: Option<Vec<u8>> = match expect {
            Expect::Unknown => continue,
            Expect::Value(v) => Some(v.as_bytes().to_vec()),
            Expect::Deleted => None,
        };
        let replicas = t.replicas(tenant, key.as_bytes());
        // Every holder holds exactly the acknowledged state: the value, or a tombstone.
        for (node, entries) in &held {
            if let Some(got) = entries.get(key.as_bytes()) {
                assert_eq!(got, &want, "{key} on {node}");
            }
        }
        let holders: Vec<&String> = held
            .iter()
            .filter(|(_, entries)| entries.contains_key(key.as_bytes()))
            .map(|(n, _)| n)
            .collect();
        let on_replicas = holders.iter().filter(|n| replicas.contains(n)).count();
        assert_eq!(
            on_replicas,
            replicas.len(),
            "{key} is on {holders:?}, its replicas are {replicas:?}"
        );
        let strays: Vec<&&String> = holders.iter().filter(|n| !replicas.contains(n)).collect();
        assert!(
            strays.is_empty(),
            "{key}: {strays:?} still hold it (replicas {replicas:?})"
        );
    }
}

fn merge(mut a: Ledger, b: Ledger) -> Ledger {
    a.acked += b.acked;
    a.failed += b.failed;
    a.keys.extend(b.keys);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_added_under_write_load_takes_its_share_and_loses_nothing() {
    let mut t = harness::start(3).await;
    let key = t.create_tenant("grow", 3).await;
    let before = preload(&t, &key, "pre-", 600).await;
    let addr = t.start_node("node-4");

    let load = Load::start(&t, &key, "live-");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = t
        .admin(
            Method::POST,
            "/v1/admin/nodes",
            Some(json!({"node_id": "node-4", "address": addr.to_string()})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["migration_id"]
        .as_str()
        .expect("migration id")
        .to_owned();
    // While it streams, the node is joining.
    let (_, nodes) = t.admin(Method::GET, "/v1/admin/nodes", None).await;
    let joining = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["node_id"] == "node-4")
        .map(|n| n["state"].clone());
    assert!(
        joining == Some(json!("joining")) || joining == Some(json!("active")),
        "{nodes}"
    );
    let done = t.await_migration(&id, LIMIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = load.stop().await;
    assert!(during.acked > 20, "the load barely ran: {}", during.acked);
    assert!(done["ranges_total"].as_u64().expect("ranges") > 0, "{done}");
    assert_eq!(done["ranges_done"], done["ranges_total"], "{done}");
    assert!(done["keys_streamed"].as_u64().expect("keys") > 0, "{done}");
    assert!(
        done["bytes_streamed"].as_u64().expect("bytes") > 0,
        "{done}"
    );

    let ledger = merge(before, during);
    let nodes = ["node-1", "node-2", "node-3", "node-4"];
    placed_exactly(&t, "grow", &ledger, &nodes).await;
    // Right after, reads at `all` find (almost) every replica already up to date (read first at
    // `all`: a quorum read would repair what it found stale).
    let repaired = verify(&t, &key, &ledger, "all").await;
    assert!(
        repaired * 50 <= ledger.keys.len() as u64,
        "{repaired} of {} reads at all needed repair",
        ledger.keys.len()
    );
    verify(&t, &key, &ledger, "quorum").await;
    // The new node holds about its share: RF 3 of 4 nodes, so about 3/4 of the keys.
    let on_new = t.keys_on("node-4", "grow").await.len() as f64;
    let share = on_new / ledger.keys.len() as f64;
    assert!(
        (0.5..=0.95).contains(&share),
        "node-4 holds {share:.2} of the keys"
    );

    let (_, listed) = t.admin(Method::GET, "/v1/admin/nodes", None).await;
    let listed = listed.as_array().expect("nodes").clone();
    assert_eq!(listed.len(), 4, "{listed:?}");
    for n in &listed {
        assert_eq!(n["state"], "active", "{n}");
        assert!(n["load_bytes"].as_u64().expect("load") > 0, "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decommissioned_node_hands_everything_off_before_it_is_killed() {
    let mut t = harness::start(4).await;
    let key = t.create_tenant("shrink", 3).await;
    let before = preload(&t, &key, "pre-", 600).await;
    let load = Load::start(&t, &key, "live-");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = t
        .admin(Method::DELETE, "/v1/admin/nodes/node-2", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["migration_id"].as_str().expect("id").to_owned();
    t.await_migration(&id, LIMIT).await;
    let during = load.stop().await;
    // Nothing depends on the removed node any more.
    t.kill("node-2");
    let ledger = merge(before, during);
    placed_exactly(&t, "shrink", &ledger, &["node-1", "node-3", "node-4"]).await;
    verify(&t, &key, &ledger, "all").await;
    let (_, listed) = t.admin(Method::GET, "/v1/admin/nodes", None).await;
    let ids: Vec<&str> = listed
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    assert_eq!(ids, ["node-1", "node-3", "node-4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_factor_changes_online_both_ways() {
    let t = harness::start(3).await;
    let key = t.create_tenant("rf", 1).await;
    let mut ledger = preload(&t, &key, "pre-", 400).await;
    // A stale version left on a node that does not serve its key (a cancelled migration's
    // leftover, say): a node receives ranges clean, so it never comes back.
    let ghost = b"ghost".to_vec();
    let serving = t.replicas("rf", &ghost);
    let holder = ["node-1", "node-2", "node-3"]
        .into_iter()
        .find(|n| !serving.iter().any(|s| s == n))
        .expect("a node not serving the ghost");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let planted = t
        .storage(holder, Some(harness::INTERNAL_TOKEN))
        .ingest(pairdb_proto::storage::IngestRequest {
            epoch: t.epoch(),
            namespace: "rf".into(),
            entries: vec![pairdb_proto::storage::ScanEntry {
                token: pairdb_core::key::token("rf", &ghost),
                key: ghost.clone(),
                version: Some(pairdb_proto::storage::Version {
                    value: b"boo".to_vec(),
                    clock: vec![pairdb_proto::storage::ClockEntry {
                        node: holder.into(),
                        incarnation: 1,
                        counter: 1,
                        last: now_ms << 16,
                    }],
                    timestamp: now_ms << 16,
                    minted_by: holder.into(),
                    ..Default::default()
                }),
            }],
        })
        .await
        .expect("ingest")
        .into_inner();
    assert_eq!(planted.applied, 1);
    for (rf, prefix) in [(3, "up-"), (2, "down-")] {
        let load = Load::start(&t, &key, prefix);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, body) = t
            .admin(
                Method::PUT,
                "/v1/tenants/rf/replication-factor",
                Some(json!({"replication_factor": rf})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let id = body["migration_id"].as_str().expect("id").to_owned();
        t.await_migration(&id, LIMIT).await;
        ledger = merge(ledger, load.stop().await);
        // Once it has taken effect it cannot be cancelled.
        let path = format!("/v1/admin/migrations/{id}");
        let (status, answer) = t.admin(Method::DELETE, &path, None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        let (_, tenant) = t.admin(Method::GET, "/v1/tenants/rf", None).await;
        assert_eq!(tenant["replication_factor"], rf, "{tenant}");
        placed_exactly(&t, "rf", &ledger, &["node-1", "node-2", "node-3"]).await;
        verify(&t, &key, &ledger, "all").await;
        // Read at `all`: any replica holding it would answer it.
        let all = [("x-consistency", "all")];
        let resp = t.kv(Method::GET, "ghost", &key, &all, None).await;
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "the leftover came back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_migration_rolls_back_and_loses_nothing() {
    let mut t = harness::start(3).await;
    let key = t.create_tenant("undo", 2).await;
    let before = preload(&t, &key, "pre-", 300).await;
    // With node-3 gone, RF 2 → 3 cannot stream the ranges node-3 would receive: the migration
    // stays in streaming, with some ranges streamed to node-1 and node-2 already.
    t.kill("node-3");
    t.await_unreachable("node-3").await;
    let load = Load::start(&t, &key, "live-");
    let (status, body) = t
        .admin(
            Method::PUT,
            "/v1/tenants/undo/replication-factor",
            Some(json!({"replication_factor": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["migration_id"].as_str().expect("id").to_owned();
    let path = format!("/v1/admin/migrations/{id}");
    let started = std::time::Instant::now();
    loop {
        let (_, m) = t.admin(Method::GET, &path, None).await;
        assert_eq!(m["state"], "streaming", "{m}");
        if m["error"].as_str().is_some_and(|e| e.contains("node-3")) {
            break;
        }
        assert!(started.elapsed() < LIMIT, "no error names node-3: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Some of it reached node-1 and node-2 as pending replicas: the rollback has work to do.
    let mut pending_only = 0;
    for node in ["node-1", "node-2"] {
        for k in t.keys_on(node, "undo").await {
            pending_only += usize::from(!t.replicas("undo", &k).iter().any(|r| r == node));
        }
    }
    assert!(pending_only > 0, "nothing reached a pending replica");
    let (status, answer) = t.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        (answer["migration_id"].as_str(), answer["state"].as_str()),
        (Some(id.as_str()), Some("rolling_back")),
        "{answer}"
    );
    let cancelled = t.await_migration_in(&id, "cancelled", LIMIT).await;
    let during = load.stop().await;
    assert!(during.acked > 20, "the load barely ran: {}", during.acked);
    // node-3 could not be told to drop what it received; the cancel did not wait for it.
    assert_eq!(cancelled["undropped"], json!(["node-3"]), "{cancelled}");
    // Cancelling again answers the same; the old placement is in force, and other jobs may run.
    let (status, again) = t.admin(Method::DELETE, &path, None).await;
    assert_eq!(
        (status, again["state"].clone()),
        (StatusCode::ACCEPTED, json!("cancelled"))
    );
    let (_, tenant) = t.admin(Method::GET, "/v1/tenants/undo", None).await;
    assert_eq!(tenant["replication_factor"], 2, "{tenant}");
    // node-3 may hold what it received: no migration gives it ranges until it has dropped them.
    let (status, refused) = t
        .admin(
            Method::PUT,
            "/v1/tenants/undo/replication-factor",
            Some(json!({"replication_factor": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("node-3")),
        "{refused}"
    );
    let (status, repair) = t
        .admin(Method::POST, "/v1/admin/repair", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{repair}");

    // The live nodes hold only keys they serve: what they received as pending replicas — the
    // streamed ranges and the writes sent to them meanwhile — is gone.
    let ledger = merge(before, during);
    let mut held = 0;
    for node in ["node-1", "node-2"] {
        for (k, _) in t.entries_on(node, "undo").await {
            let replicas = t.replicas("undo", &k);
            assert!(
                replicas.iter().any(|r| r == node),
                "{node} still holds {:?} (replicas {replicas:?})",
                String::from_utf8_lossy(&k)
            );
            held += 1;
        }
    }
    assert!(held > 0, "the live nodes hold nothing at all");
    // Every acknowledged write and delete is still what reads see (node-3 is down: read at one,
    // which every acknowledged quorum write reached on each live replica).
    verify(&t, &key, &ledger, "one").await;

    // Back, node-3 is cleared first, and the change goes through (once the repair ends).
    let node3 = t
        .cluster
        .coordinator
        .cluster
        .view()
        .expect("placement")
        .placement
        .address_of("node-3")
        .expect("node-3 is a member")
        .parse()
        .expect("address");
    t.restart_in_place("node-3", node3);
    let started = std::time::Instant::now();
    let id = loop {
        let (status, body) = t
            .admin(
                Method::PUT,
                "/v1/tenants/undo/replication-factor",
                Some(json!({"replication_factor": 3})),
            )
            .await;
        if status == StatusCode::ACCEPTED {
            break body["migration_id"].as_str().expect("id").to_owned();
        }
        assert!(
            status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::CONFLICT,
            "{status} {body}"
        );
        assert!(started.elapsed() < LIMIT, "node-3 never cleared: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    t.await_migration(&id, LIMIT).await;
    verify(&t, &key, &ledger, "all").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_tenant_stops_at_once_and_its_data_goes() {
    let t = harness::start(3).await;
    let key = t.create_tenant("gone", 3).await;
    let other = t.create_tenant("stays", 3).await;
    preload(&t, &key, "k-", 200).await;
    let kept = preload(&t, &other, "k-", 50).await;
    let (status, body) = t.admin(Method::DELETE, "/v1/tenants/gone", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["migration_id"].as_str().expect("id").to_owned();
    // Its keys stop working within the tenant cache's TTL.
    let mut refused = false;
    for _ in 0..40 {
        let resp = t.kv(Method::GET, "k-1", &key, &[], None).await;
        if resp.status() == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the deleted tenant's key still works");
    let (status, _) = t.admin(Method::GET, "/v1/tenants/gone", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    t.await_migration(&id, LIMIT).await;
    for node in ["node-1", "node-2", "node-3"] {
        assert!(
            t.keys_on(node, "gone").await.is_empty(),
            "{node} still holds data"
        );
    }
    verify(&t, &other, &kept, "all").await;
    // The id is free again, and the new tenant starts empty.
    let again = t.create_tenant("gone", 3).await;
    let resp = t.kv(Method::GET, "k-1", &again, &[], None).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_that_cannot_be_made_are_refused_with_a_reason() {
    let mut t = harness::start(3).await;
    t.create_tenant("r3", 3).await;
    let cases = [
        (
            Method::POST,
            "/v1/admin/nodes",
            Some(json!({"node_id": "node-1", "address": "127.0.0.1:1"})),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            Method::POST,
            "/v1/admin/nodes",
            Some(json!({"node_id": "bad id", "address": "127.0.0.1:1"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/admin/nodes",
            Some(json!({"node_id": "n9", "address": "not-an-address"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            "/v1/admin/nodes/node-9",
            None,
            StatusCode::NOT_FOUND,
        ),
        // RF 3 on 3 nodes: none can leave.
        (
            Method::DELETE,
            "/v1/admin/nodes/node-1",
            None,
            StatusCode::CONFLICT,
        ),
        (
            Method::PUT,
            "/v1/tenants/r3/replication-factor",
            Some(json!({"replication_factor": 4})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/v1/tenants/nope/replication-factor",
            Some(json!({"replication_factor": 1})),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/v1/admin/migrations/mig-0",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/v1/admin/migrations/mig-0",
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, body, want) in cases {
        let (status, answer) = t.admin(method.clone(), path, body).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
        assert!(answer["type"].as_str().is_some(), "{answer}");
    }
    // A node that reports another id is not taken.
    let addr = t.start_node("node-7");
    let (status, answer) = t
        .admin(
            Method::POST,
            "/v1/admin/nodes",
            Some(json!({"node_id": "node-8", "address": addr.to_string()})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    // A member's id is refused as a conflict.
    let (status, answer) = t
        .admin(
            Method::POST,
            "/v1/admin/nodes",
            Some(json!({"node_id": "node-2", "address": addr.to_string()})),
        )
        .await;
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::CONFLICT,
        "{status} {answer}"
    );
    // Tenant keys may not change membership.
    let tenant_key = t.create_tenant("plain", 1).await;
    let resp = t
        .http
        .delete(t.url("/v1/admin/nodes/node-1"))
        .bearer_auth(&tenant_key)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}
