//! The acceptance as a user sees it: each role a separate `pairdb` process, a storage process
//! killed with SIGKILL, quorum still served; the rest stop cleanly on SIGTERM.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use pairdb_core::Ring;
use reqwest::StatusCode;
use tokio::process::{Child, Command};

use crate::harness::{ADMIN_KEY, INTERNAL_TOKEN};

const KEY_SECRET: &str = "process-test-key-secret";

/// Every process binds port 0 and the test reads the address it logged: a port picked here and
/// bound later by the child could be taken in between by any other socket on the machine.
pub(crate) const ANY_PORT: &str = "127.0.0.1:0";

fn pairdb(args: &[&str], log: &Path) -> Child {
    pairdb_with_env(args, log, &[])
}

/// [`pairdb`] with extra environment variables.
pub(crate) fn pairdb_with_env(args: &[&str], log: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_pairdb"))
        .args(args)
        .envs(env.iter().copied())
        .env("PAIRDB_INTERNAL_TOKEN", INTERNAL_TOKEN)
        .env("PAIRDB_KEY_SECRET", KEY_SECRET)
        .env("PAIRDB_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn pairdb")
}

/// The address `child` logged for its `role` listener (`"<role> listening listen=ADDR"`).
/// Panics with the log if the child exits first or takes over 30 s.
pub(crate) async fn listening(child: &mut Child, log: &Path, role: &str) -> String {
    let marker = format!("{role} listening");
    for _ in 0..300 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        // Complete lines only: the child may be writing the last one.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        let addr = complete
            .lines()
            .filter(|line| line.contains(&marker))
            .find_map(|line| line.split_once("listen=").map(|(_, rest)| rest))
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(addr) = addr {
            return addr.to_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the process exited ({status}) before its {role} listened:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    panic!("no {role} listening after 30 s:\n{text}");
}

/// Waits for `url` to answer 200; panics with the logs in `logs` otherwise.
pub(crate) async fn wait_ready(http: &reqwest::Client, url: &str, logs: &Path) {
    for _ in 0..300 {
        if let Ok(r) = http.get(url).send().await
            && r.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut all = String::new();
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            all.push_str(&format!("--- {}\n{text}\n", path.display()));
        }
    }
    panic!("{url} never became ready\n{all}");
}

/// Creates tenant `acme` through the gateway at `base`; returns its API key.
pub(crate) async fn create_tenant(http: &reqwest::Client, base: &str) -> String {
    let created = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"tenant_id": "acme"}))
        .send()
        .await
        .expect("create tenant");
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: serde_json::Value = created.json().await.expect("json");
    body["api_key"].as_str().expect("api key").to_owned()
}

pub(crate) async fn terminate(child: &mut Child) -> bool {
    let Some(pid) = child.id() else { return false };
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    assert!(sent.is_ok_and(|s| s.success()));
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(Ok(status)) => status.success(),
        _ => false,
    }
}

/// One cluster of separate processes: three storage nodes, a coordinator and a gateway.
pub(crate) struct Processes {
    /// Each node's id, process and metrics address.
    pub storage: Vec<(String, Child, String)>,
    /// The storage node ids.
    pub ids: Vec<String>,
    pub coordinator: Child,
    pub gateway: Child,
    /// The gateway's base URL.
    pub base: String,
    /// The coordinator's gRPC address.
    pub coordinator_addr: String,
    /// The metadata store every role shares.
    pub metadata: String,
    /// Each storage node's own gRPC address (not the proxy's).
    pub addrs: Vec<String>,
    /// The proxy the cluster reaches one node through, if asked for.
    pub proxy: Option<crate::proxy::Proxy>,
}

impl Processes {
    /// Starts the cluster with logs (and data) under `logs`, every process with `env` added;
    /// returns once every role is ready.
    pub(crate) async fn start(logs: &Path, env: &[(&str, &str)]) -> Processes {
        Self::start_with(logs, env, &[]).await
    }

    /// [`start`](Self::start), with `gateway_args` added to the gateway's command line.
    pub(crate) async fn start_with(
        logs: &Path,
        env: &[(&str, &str)],
        gateway_args: &[&str],
    ) -> Processes {
        Self::start_full(logs, env, &[], gateway_args, None).await
    }

    /// [`start`](Self::start), with `coordinator_args` and `gateway_args` added to those roles'
    /// command lines, and with storage node `proxied` (when given) known to the cluster only
    /// through a fault-injecting [`Proxy`](crate::proxy::Proxy).
    pub(crate) async fn start_full(
        logs: &Path,
        env: &[(&str, &str)],
        coordinator_args: &[&str],
        gateway_args: &[&str],
        proxied: Option<&str>,
    ) -> Processes {
        let pairdb = |args: &[&str], log: &Path| pairdb_with_env(args, log, env);
        let mut storage = Vec::new();
        let mut addrs = Vec::new();
        let mut proxy = None;
        let mut initial = Vec::new();
        let mut ids = Vec::new();
        for i in 1..=3 {
            let id = format!("node-{i}");
            let data = logs.join(&id);
            let log = logs.join(format!("{id}.log"));
            let mut child = pairdb(
                &[
                    "storage",
                    "--node-id",
                    &id,
                    "--listen",
                    ANY_PORT,
                    "--data-dir",
                    data.to_str().expect("utf-8 path"),
                    "--metrics-listen",
                    ANY_PORT,
                ],
                &log,
            );
            let addr = listening(&mut child, &log, "storage node").await;
            let metrics = listening(&mut child, &log, "metrics endpoint").await;
            let known = if proxied == Some(id.as_str()) {
                let p = crate::proxy::Proxy::start(&addr).await;
                let known = p.addr.clone();
                proxy = Some(p);
                known
            } else {
                addr.clone()
            };
            addrs.push(addr);
            initial.push(format!("{id}={known}"));
            ids.push(id.clone());
            storage.push((id, child, metrics));
        }
        let metadata = format!("sqlite://{}", logs.join("metadata.db").display());
        let coordinator_log = logs.join("coordinator.log");
        let initial = initial.join(",");
        let mut args = vec![
            "coordinator",
            "--listen",
            ANY_PORT,
            "--metadata-url",
            &metadata,
            "--initial-nodes",
            &initial,
            "--metrics-listen",
            ANY_PORT,
        ];
        args.extend_from_slice(coordinator_args);
        let mut coordinator = pairdb(&args, &coordinator_log);
        let coordinator_addr = listening(&mut coordinator, &coordinator_log, "coordinator").await;
        let coordinator_metrics =
            listening(&mut coordinator, &coordinator_log, "metrics endpoint").await;
        let http = reqwest::Client::new();
        wait_ready(&http, &format!("http://{coordinator_metrics}/readyz"), logs).await;
        let (gateway, base) = start_gateway(
            logs,
            "gateway",
            env,
            &coordinator_addr,
            &metadata,
            gateway_args,
        )
        .await;
        for (_, _, metrics) in &storage {
            wait_ready(&http, &format!("http://{metrics}/healthz"), logs).await;
        }
        Processes {
            storage,
            ids,
            coordinator,
            gateway,
            base,
            coordinator_addr,
            metadata,
            addrs,
            proxy,
        }
    }

    /// Starts another gateway, `name`, in front of the same coordinator and metadata store;
    /// returns it once ready, with its base URL.
    pub(crate) async fn another_gateway(
        &self,
        logs: &Path,
        name: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> (Child, String) {
        start_gateway(
            logs,
            name,
            env,
            &self.coordinator_addr,
            &self.metadata,
            args,
        )
        .await
    }
}

async fn start_gateway(
    logs: &Path,
    name: &str,
    env: &[(&str, &str)],
    coordinator: &str,
    metadata: &str,
    args: &[&str],
) -> (Child, String) {
    let log = logs.join(format!("{name}.log"));
    let mut all = vec![
        "gateway",
        "--http",
        ANY_PORT,
        "--coordinators",
        coordinator,
        "--metadata-url",
        metadata,
    ];
    all.extend_from_slice(args);
    let mut gateway = pairdb_with_env(&all, &log, env);
    let base = format!("http://{}", listening(&mut gateway, &log, "gateway").await);
    wait_ready(&reqwest::Client::new(), &format!("{base}/readyz"), logs).await;
    (gateway, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_survive_a_sigkilled_storage_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path();
    let Processes {
        mut storage,
        ids,
        mut coordinator,
        mut gateway,
        base,
        ..
    } = Processes::start(logs, &[]).await;
    let http = reqwest::Client::new();
    let key = create_tenant(&http, &base).await;

    let put = |value: &'static str, level: &'static str| {
        http.put(format!("{base}/v1/kv/user-42"))
            .bearer_auth(&key)
            .header("X-Consistency", level)
            .header("Idempotency-Key", format!("{value}-{level}"))
            .body(value)
            .send()
    };
    assert_eq!(
        put("before", "all").await.expect("put").status(),
        StatusCode::OK
    );

    // SIGKILL the key's leader.
    let ring = Ring::new(&ids, pairdb_core::placement::DEFAULT_VNODES);
    let leader = ring.preference_list(pairdb_core::key::token("acme", b"user-42"), 3)[0].to_owned();
    let idx = storage
        .iter()
        .position(|(id, _, _)| *id == leader)
        .expect("leader process");
    let (_, mut victim, _) = storage.remove(idx);
    victim.start_kill().expect("SIGKILL");
    let _ = victim.wait().await;

    // The first write may race the coordinator's discovery of the dead connection: sent on it,
    // its outcome is rightly unknown (504). A client retries with the same idempotency key,
    // which is always safe; once the dead port refuses, the write fails over to a live leader.
    let mut after = put("after", "quorum").await.expect("put");
    for _ in 0..3 {
        if after.status() != StatusCode::GATEWAY_TIMEOUT {
            break;
        }
        let problem: serde_json::Value = after.json().await.expect("json");
        assert_eq!(problem["applied"], "unknown", "{problem}");
        after = put("after", "quorum").await.expect("put");
    }
    assert_eq!(after.status(), StatusCode::OK, "quorum write after SIGKILL");
    let get = http
        .get(format!("{base}/v1/kv/user-42"))
        .bearer_auth(&key)
        .header("X-Consistency", "quorum")
        .send()
        .await
        .expect("get");
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.bytes().await.expect("body").as_ref(), b"after");
    assert_eq!(
        put("all", "all").await.expect("put").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Everything left stops cleanly on SIGTERM.
    assert!(terminate(&mut gateway).await, "gateway exits 0 on SIGTERM");
    assert!(
        terminate(&mut coordinator).await,
        "coordinator exits 0 on SIGTERM"
    );
    for (id, mut child, _) in storage {
        assert!(terminate(&mut child).await, "{id} exits 0 on SIGTERM");
        let log = std::fs::read_to_string(logs.join(format!("{id}.log"))).expect("node log");
        assert!(
            log.contains("storage node stopped cleanly"),
            "{id} flushed and recorded a clean stop:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_dev_on_the_same_data_dir_refuses_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8 path").to_owned();
    let first_log = dir.path().join("first.log");
    let mut first = pairdb(
        &["dev", "--http", ANY_PORT, "--data-dir", &data_arg],
        &first_log,
    );
    let http = reqwest::Client::new();
    let base = format!(
        "http://{}",
        listening(&mut first, &first_log, "gateway").await
    );
    wait_ready(&http, &format!("{base}/readyz"), dir.path()).await;
    let key = create_tenant(&http, &base).await;
    // What the cluster's metadata says (read through SQLite, WAL included).
    let metadata_url = format!("sqlite://{}", data.join("metadata.db").display());
    let snapshot = || async {
        use pairdb_metadata::MetadataStore as _;
        let store = pairdb_metadata::sqlite::SqliteStore::open(&metadata_url)
            .await
            .expect("open metadata");
        let placement = store.placement().await.expect("placement");
        let nodes = store.list_nodes().await.expect("nodes");
        let tenants = store.list_tenants().await.expect("tenants");
        format!("{placement:?}\n{nodes:?}\n{tenants:?}")
    };
    let metadata_before = snapshot().await;

    // The second one, on another port, fails at once naming the lock, and writes nothing.
    let second_log = dir.path().join("second.log");
    let mut second = pairdb(
        &["dev", "--http", ANY_PORT, "--data-dir", &data_arg],
        &second_log,
    );
    let status = tokio::time::timeout(Duration::from_secs(30), second.wait())
        .await
        .expect("the second process exits")
        .expect("wait");
    assert!(!status.success());
    let log = std::fs::read_to_string(&second_log).expect("log");
    assert!(log.contains("in use by another pairdb process"), "{log}");
    assert_eq!(snapshot().await, metadata_before);

    // The first still serves.
    let put = http
        .put(format!("{base}/v1/kv/still-here"))
        .bearer_auth(&key)
        .header("Content-Type", "text/plain")
        .body("yes")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        StatusCode::OK
    );
    assert!(terminate(&mut first).await, "dev exits 0 on SIGTERM");
}

/// Starts `pairdb dev --engine lsm` on `data` and returns it with its base URL, once ready.
async fn dev_lsm(data: &str, log: &Path, logs: &Path) -> (Child, String) {
    let mut child = pairdb(
        &[
            "dev",
            "--engine",
            "lsm",
            "--http",
            ANY_PORT,
            "--data-dir",
            data,
        ],
        log,
    );
    let base = format!("http://{}", listening(&mut child, log, "gateway").await);
    wait_ready(&reqwest::Client::new(), &format!("{base}/readyz"), logs).await;
    (child, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_on_lsm_keeps_every_acknowledged_write_across_sigkill_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8 path").to_owned();
    let http = reqwest::Client::new();

    let (mut first, base) = dev_lsm(&data_arg, &dir.path().join("1.log"), dir.path()).await;
    let key = create_tenant(&http, &base).await;
    for i in 0..40 {
        let put = http
            .put(format!("{base}/v1/kv/k{i}"))
            .bearer_auth(&key)
            .header("Content-Type", "text/plain")
            .body(format!("value {i}"))
            .send()
            .await
            .expect("put");
        assert_eq!(put.status(), StatusCode::OK, "put k{i}");
    }
    let delete = http
        .delete(format!("{base}/v1/kv/k0"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);

    // A crash: nothing flushed, nothing recorded.
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;

    let check = |base: String, key: String| async move {
        let http = reqwest::Client::new();
        let gone = http
            .get(format!("{base}/v1/kv/k0"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("get");
        assert_eq!(gone.status(), StatusCode::NOT_FOUND, "the delete survived");
        for i in 1..40 {
            let got = http
                .get(format!("{base}/v1/kv/k{i}"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("get");
            assert_eq!(got.status(), StatusCode::OK, "k{i} after restart");
            assert_eq!(got.text().await.expect("body"), format!("value {i}"));
        }
    };
    let (mut second, base) = dev_lsm(&data_arg, &dir.path().join("2.log"), dir.path()).await;
    check(base, key.clone()).await;
    assert!(terminate(&mut second).await, "dev exits 0 on SIGTERM");

    // And after a clean stop.
    let (mut third, base) = dev_lsm(&data_arg, &dir.path().join("3.log"), dir.path()).await;
    check(base, key).await;
    assert!(terminate(&mut third).await, "dev exits 0 on SIGTERM");
}
