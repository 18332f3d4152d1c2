//! Membership as an operator runs it, each role a separate `pairdb` process: a storage process
//! started with `--join` adds itself under write load, and the coordinator running that
//! migration is killed with SIGKILL mid-stream; a new coordinator resumes the migration from the
//! metadata store and completes it, and no acknowledged write is lost.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::process::Child;

use crate::checker::{Expect, Ledger, Load, verify_at};
use crate::harness::ADMIN_KEY;
use crate::processes::{ANY_PORT, Processes, create_tenant, listening, pairdb_with_env};

async fn migration(http: &reqwest::Client, base: &str, id: &str) -> serde_json::Value {
    let resp = http
        .get(format!("{base}/v1/admin/migrations/{id}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("get migration");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.expect("json")
}

/// The migration id node `log` reported when it joined.
async fn joined(child: &mut Child, log: &Path) -> String {
    for _ in 0..300 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(id) = text
            .lines()
            .filter(|l| l.contains("joined the cluster"))
            .find_map(|l| l.split_once("migration=").map(|(_, r)| r))
            .and_then(|r| r.split_whitespace().next())
        {
            return id.to_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the joining node exited ({status}):\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the node never joined:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_by_itself_and_its_migration_outlives_a_killed_coordinator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path();
    // Streaming slowed down so the kill lands mid-migration.
    let coordinator_args = ["--stream-mb-per-sec", "0.04"];
    let mut p = Processes::start_full(logs, &[], &coordinator_args, &[], None).await;
    let http = reqwest::Client::new();
    let key = create_tenant(&http, &p.base).await;
    let mut ledger = Ledger::default();
    let value = "v".repeat(200);
    for i in 0..1200 {
        let k = format!("pre-{i}");
        let resp = http
            .put(format!("{}/v1/kv/{k}", p.base))
            .bearer_auth(&key)
            .body(value.clone())
            .send()
            .await
            .expect("preload");
        assert!(resp.status().is_success());
        ledger.keys.insert(k, Expect::Value(value.clone()));
    }
    let load = Load::start_at(&http, &p.base, &key, "live-");

    // A fourth storage process adds itself.
    let log4 = logs.join("node-4.log");
    let data4 = logs.join("node-4");
    let coordinator_url = format!("http://{}", p.coordinator_addr);
    let mut node4 = pairdb_with_env(
        &[
            "storage",
            "--node-id",
            "node-4",
            "--listen",
            ANY_PORT,
            "--data-dir",
            data4.to_str().expect("utf-8"),
            "--join",
            &coordinator_url,
        ],
        &log4,
        &[],
    );
    let addr4 = listening(&mut node4, &log4, "storage node").await;
    let id = joined(&mut node4, &log4).await;

    // Once some ranges are done, the coordinator running the migration dies.
    let mut progressed = false;
    for _ in 0..200 {
        let m = migration(&http, &p.base, &id).await;
        if m["ranges_done"].as_u64().unwrap_or(0) > 0 && m["state"] == "streaming" {
            progressed = true;
            break;
        }
        assert_ne!(
            m["state"], "done",
            "the migration ended before the kill: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(progressed, "the migration never progressed");
    p.coordinator.start_kill().expect("SIGKILL the coordinator");
    p.coordinator.wait().await.expect("reaped");

    // A new coordinator on the same address and metadata resumes it once the dead one's lease
    // runs out.
    let log = logs.join("coordinator-2.log");
    let mut coordinator = pairdb_with_env(
        &[
            "coordinator",
            "--listen",
            &p.coordinator_addr,
            "--metadata-url",
            &p.metadata,
            "--stream-mb-per-sec",
            "0",
        ],
        &log,
        &[],
    );
    listening(&mut coordinator, &log, "coordinator").await;
    let mut done = serde_json::Value::Null;
    for _ in 0..900 {
        let resp = http
            .get(format!("{}/v1/admin/migrations/{id}", p.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await;
        if let Ok(r) = resp
            && r.status() == StatusCode::OK
        {
            let m: serde_json::Value = r.json().await.expect("json");
            assert_ne!(m["state"], "failed", "{m}");
            if m["state"] == "done" {
                done = m;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        done["state"],
        "done",
        "not done after 90 s:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(done["ranges_done"], done["ranges_total"], "{done}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("running migration"),
        "the new coordinator did not resume it:\n{text}"
    );

    let during = load.stop().await;
    ledger.keys.extend(during.keys);
    verify_at(&http, &p.base, &key, &ledger, "quorum").await;
    verify_at(&http, &p.base, &key, &ledger, "all").await;

    let nodes: serde_json::Value = http
        .get(format!("{}/v1/admin/nodes", p.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("nodes")
        .json()
        .await
        .expect("json");
    let four = nodes
        .as_array()
        .expect("array")
        .iter()
        .find(|n| n["node_id"] == "node-4")
        .cloned()
        .expect("node-4 listed");
    assert_eq!(four["state"], "active", "{nodes}");
    assert!(four["load_bytes"].as_u64().unwrap_or(0) > 0, "{four}");

    // Restarted with --join, a member does nothing.
    node4.start_kill().expect("kill node-4");
    node4.wait().await.expect("reaped");
    let log4b = logs.join("node-4b.log");
    let mut again = pairdb_with_env(
        &[
            "storage",
            "--node-id",
            "node-4",
            "--listen",
            &addr4,
            "--data-dir",
            data4.to_str().expect("utf-8"),
            "--join",
            &coordinator_url,
        ],
        &log4b,
        &[],
    );
    listening(&mut again, &log4b, "storage node").await;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log4b).unwrap_or_default();
        if text.contains("already a member") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&log4b).unwrap_or_default();
    assert!(text.contains("already a member"), "{text}");
    drop(coordinator);
}
