//! Faults injected into real processes while a checker records every acknowledged write:
//! a storage process frozen with SIGSTOP and resumed, one killed with SIGKILL and restarted on
//! its data, and one cut off by a network partition (a fault-injecting TCP proxy) and healed.
//! In each, quorum keeps serving, the failed node is judged down within seconds and up again
//! within seconds of its return, and then it holds every acknowledged write and no deleted key
//! reappears — caught up by the leaders' hints alone (nothing reads the keys in between), or,
//! after a partition, by one anti-entropy repair that leaves every replica identical.
//!
//! `PAIRDB_FAULT_SECS` (default 5; `make test-faults` sets 60) is how long each fault lasts
//! under load.

use std::collections::BTreeMap;
use std::time::Duration;

use pairdb_proto::storage::storage_client::StorageClient;
use pairdb_proto::storage::{KeyRef, MintRequest, ReadRequest, ScanRequest, TokenRange};
use reqwest::StatusCode;
use tokio::process::Command;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::checker::{Expect, Ledger, Load, verify_at};
use crate::harness::{ADMIN_KEY, INTERNAL_TOKEN, StorageAuth};
use crate::processes::{ANY_PORT, Processes, create_tenant, listening, pairdb_with_env};

type Storage = StorageClient<InterceptedService<Channel, StorageAuth>>;

fn fault_secs() -> u64 {
    std::env::var("PAIRDB_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

fn storage(addr: &str) -> Storage {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_lazy();
    StorageClient::with_interceptor(channel, StorageAuth(Some(INTERNAL_TOKEN)))
}

async fn signal(pid: u32, sig: &str) {
    let sent = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .await;
    assert!(sent.is_ok_and(|s| s.success()), "kill {sig} {pid}");
}

/// The state GET /v1/admin/nodes reports for `node`.
async fn node_state(http: &reqwest::Client, base: &str, node: &str) -> Option<String> {
    let nodes: serde_json::Value = http
        .get(format!("{base}/v1/admin/nodes"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    nodes
        .as_array()?
        .iter()
        .find(|n| n["node_id"] == node)
        .and_then(|n| n["state"].as_str().map(str::to_owned))
}

/// Waits up to `limit` for `node` to be reported `state`; answers how long it took.
async fn await_state(
    http: &reqwest::Client,
    base: &str,
    node: &str,
    state: &str,
    limit: Duration,
) -> Duration {
    let started = std::time::Instant::now();
    loop {
        if node_state(http, base, node).await.as_deref() == Some(state) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{node} not {state} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `n` keys before the fault.
async fn preload(http: &reqwest::Client, base: &str, key: &str, n: usize) -> Ledger {
    let mut ledger = Ledger::default();
    for i in 0..n {
        let k = format!("pre-{i}");
        let resp = http
            .put(format!("{base}/v1/kv/{k}"))
            .bearer_auth(key)
            .body(format!("pre-{i}"))
            .send()
            .await
            .expect("preload");
        assert!(resp.status().is_success());
        ledger.keys.insert(k, Expect::Value(format!("pre-{i}")));
    }
    ledger
}

/// The placement epoch `addr` holds.
async fn epoch_of(addr: &str) -> u64 {
    storage(addr)
        .health(pairdb_proto::storage::HealthRequest {})
        .await
        .expect("health")
        .into_inner()
        .epoch
}

/// Waits up to 30 s (without reading through the cluster) until the node at `addr` holds every
/// acknowledged write of `ledger` as acknowledged: the value, or a tombstone. Answers how long.
async fn caught_up(addr: &str, ledger: &Ledger) -> Duration {
    let started = std::time::Instant::now();
    let mut client = storage(addr);
    loop {
        let epoch = epoch_of(addr).await;
        let mut missing = Vec::new();
        for (key, expect) in &ledger.keys {
            let read = client
                .read(ReadRequest {
                    epoch,
                    key: Some(KeyRef {
                        namespace: "acme".into(),
                        key: key.as_bytes().to_vec(),
                    }),
                })
                .await
                .map(|r| r.into_inner().version);
            let ok = match (expect, read) {
                (Expect::Unknown, _) => true,
                (Expect::Value(v), Ok(Some(got))) => !got.tombstone && got.value == v.as_bytes(),
                (Expect::Deleted, Ok(Some(got))) => got.tombstone,
                _ => false,
            };
            if !ok {
                missing.push(key.clone());
            }
        }
        if missing.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} acknowledged writes still missing or stale after 30 s, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every `(key, version)` node `addr` holds of tenant `acme`.
async fn contents(addr: &str) -> BTreeMap<Vec<u8>, pairdb_proto::storage::Version> {
    let mut client = storage(addr);
    let epoch = epoch_of(addr).await;
    let mut out = BTreeMap::new();
    let mut after = None;
    loop {
        let page = client
            .scan(ScanRequest {
                epoch,
                range: Some(TokenRange {
                    namespace: "acme".into(),
                    start: 0,
                    end: u64::MAX,
                }),
                after: after.clone(),
                limit: 1000,
            })
            .await
            .expect("scan")
            .into_inner();
        if let Some(last) = page.entries.last() {
            after = Some(pairdb_proto::storage::ScanCursor {
                token: last.token,
                key: last.key.clone(),
            });
        }
        for e in page.entries {
            out.insert(e.key, e.version.expect("version"));
        }
        if !page.more {
            return out;
        }
    }
}

/// How one fault is injected and lifted on node-3.
enum Fault {
    /// SIGSTOP, then SIGCONT.
    Freeze,
    /// SIGKILL, then a restart on its data dir and address.
    Crash,
}

async fn survive(fault: Fault) {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path();
    let mut p = Processes::start(logs, &[]).await;
    let http = reqwest::Client::new();
    let key = create_tenant(&http, &p.base).await;
    let mut ledger = preload(&http, &p.base, &key, 300).await;
    let load = Load::start_at(&http, &p.base, &key, "live-");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let victim = "node-3";
    let idx = p.ids.iter().position(|i| i == victim).expect("victim");
    let addr = p.addrs[idx].clone();
    let pid = p.storage[idx].1.id().expect("pid");
    match fault {
        Fault::Freeze => signal(pid, "-STOP").await,
        Fault::Crash => {
            p.storage[idx].1.start_kill().expect("SIGKILL");
            p.storage[idx].1.wait().await.expect("reaped");
        }
    }
    let down_after = await_state(&http, &p.base, victim, "down", Duration::from_secs(10)).await;
    // Writes it was leading when it froze have an unknown outcome (504 at their deadline, 5 s):
    // the coordinator never fails a leader over without proof that it minted nothing. Once
    // those are answered and it is marked down, quorum keeps serving while it is gone.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = load.ledger.lock().expect("ledger").acked;
    tokio::time::sleep(Duration::from_secs(fault_secs())).await;
    let during = load.ledger.lock().expect("ledger").acked - before;
    assert!(
        during > 50,
        "only {during} writes acknowledged with a node gone"
    );

    match fault {
        Fault::Freeze => signal(pid, "-CONT").await,
        Fault::Crash => {
            let log = logs.join("node-3-restarted.log");
            let data = logs.join("node-3");
            let mut child = pairdb_with_env(
                &[
                    "storage",
                    "--node-id",
                    victim,
                    "--listen",
                    &addr,
                    "--data-dir",
                    data.to_str().expect("utf-8"),
                    "--metrics-listen",
                    ANY_PORT,
                ],
                &log,
                &[],
            );
            listening(&mut child, &log, "storage node").await;
            p.storage[idx].1 = child;
        }
    }
    let up_after = await_state(&http, &p.base, victim, "active", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = load.stop().await;
    let failed = live.failed;
    ledger.keys.extend(live.keys);
    let converged = caught_up(&addr, &ledger).await;
    // The leaders kept durable hints, and report the ones they replayed.
    let mut replayed = 0u64;
    let mut recorded = 0u64;
    for (id, _, metrics) in &p.storage {
        if id == victim {
            continue;
        }
        let text = http
            .get(format!("http://{metrics}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let figure = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} in {text}"))
        };
        replayed += figure("pairdb_hints_replayed_total ");
        recorded += figure("pairdb_hints_recorded_total ");
    }
    assert!(recorded > 0, "no durable hint recorded on a leader");
    assert!(replayed > 0, "no hint replayed");
    eprintln!(
        "fault survived: down after {down_after:?}, up after {up_after:?}, caught up {converged:?} later by {replayed} of {recorded} durable hints; {} keys, {failed} writes failed",
        ledger.keys.len()
    );
    verify_at(&http, &p.base, &key, &ledger, "quorum").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_judged_down_and_caught_up_by_hints_when_resumed() {
    survive(Fault::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarted_on_its_data_is_caught_up_by_hints() {
    survive(Fault::Crash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_converges_through_anti_entropy_once_healed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path();
    let p = Processes::start_full(logs, &[], &[], &[], Some("node-3")).await;
    let proxy = p.proxy.as_ref().expect("proxy");
    let http = reqwest::Client::new();
    let key = create_tenant(&http, &p.base).await;
    let mut ledger = preload(&http, &p.base, &key, 200).await;
    let load = Load::start_at(&http, &p.base, &key, "live-");
    tokio::time::sleep(Duration::from_millis(500)).await;

    proxy.cut();
    await_state(&http, &p.base, "node-3", "down", Duration::from_secs(10)).await;
    let before = load.ledger.lock().expect("ledger").acked;
    tokio::time::sleep(Duration::from_secs(fault_secs())).await;
    let during = load.ledger.lock().expect("ledger").acked - before;
    assert!(
        during > 50,
        "only {during} writes acknowledged during the partition"
    );
    // Versions no hint covers: minted on node-1 alone, as when a coordinator dies mid-write.
    let epoch = epoch_of(&p.addrs[0]).await;
    let mut node1 = storage(&p.addrs[0]);
    for i in 0..30 {
        node1
            .mint(MintRequest {
                epoch,
                key: Some(KeyRef {
                    namespace: "acme".into(),
                    key: format!("lone-{i}").into_bytes(),
                }),
                context: None,
                tombstone: false,
                value: b"lone".to_vec(),
                content_type: "text/plain".into(),
                idempotency_key: String::new(),
            })
            .await
            .expect("mint");
    }
    proxy.heal();
    await_state(&http, &p.base, "node-3", "active", Duration::from_secs(10)).await;
    let live = load.stop().await;
    ledger.keys.extend(live.keys);

    let started = std::time::Instant::now();
    let resp = http
        .post(format!("{}/v1/admin/repair", p.base))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("repair");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let body: serde_json::Value = resp.json().await.expect("json");
    let id = body["repair_id"].as_str().expect("id").to_owned();
    let done = loop {
        let r: serde_json::Value = http
            .get(format!("{}/v1/admin/repairs/{id}", p.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("get repair")
            .json()
            .await
            .expect("json");
        if r["state"] == "done" {
            break r;
        }
        assert_ne!(r["state"], "failed", "{r}");
        assert!(started.elapsed() < Duration::from_secs(60), "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["ranges_incomplete"], 0, "{done}");
    assert!(done["keys_repaired"].as_u64().unwrap_or(0) >= 60, "{done}");
    // Every replica identical, the lone versions included.
    let all: Vec<_> = futures::future::join_all(p.addrs.iter().map(|a| contents(a))).await;
    assert_eq!(all[0].len(), all[1].len());
    assert!(
        all.windows(2).all(|w| w[0] == w[1]),
        "replicas still differ"
    );
    assert!(all[2].contains_key(&b"lone-0"[..]));
    eprintln!(
        "partition healed: {} keys identical on every replica after a repair of {:?}",
        all[0].len(),
        started.elapsed()
    );
    verify_at(&http, &p.base, &key, &ledger, "quorum").await;
}
