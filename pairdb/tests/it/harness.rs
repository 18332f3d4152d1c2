//! Starting a local cluster and talking to it.

use std::time::Duration;

use pairdb::cli::EngineKind;
use pairdb::local::{LocalCluster, LocalOptions, NodeSpec};
use pairdb::secrets::Secrets;
use pairdb::testing::KillableNode;
use pairdb_core::{ContextSigner, Version};
use pairdb_proto::convert::version_from_pb;
use pairdb_proto::storage::storage_client::StorageClient;
use pairdb_proto::storage::{KeyRef, ReadRequest};
use pairdb_storage::dir_lock::DirLock;
use pairdb_testkit::{PgServer, RedisServer};
use reqwest::{Method, StatusCode};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Worker threads of each test storage node: a multi-threaded runtime, as in production.
const NODE_WORKERS: usize = 2;

pub const ADMIN_KEY: &str = "pdbadmin_test_admin_key";
pub const INTERNAL_TOKEN: &str = "test-internal-token";
pub const KEY_SECRET: &[u8] = b"test-key-secret";

pub struct TestCluster {
    pub cluster: LocalCluster<KillableNode>,
    pub base: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    /// The production stores [`start`] started for this cluster (dropped after it).
    _servers: Option<(PgServer, RedisServer)>,
}

/// Set to `postgres+redis` (as `make test`'s second run of the cluster suite does), every
/// cluster [`start`] makes keeps its metadata in a throwaway PostgreSQL and its idempotency
/// records and shared tenant-config cache in a throwaway Redis; otherwise in the embedded stores.
pub const STORES_ENV: &str = "PAIRDB_TEST_STORES";

pub fn secrets() -> Secrets {
    Secrets {
        internal_token: INTERNAL_TOKEN.into(),
        key_secret: KEY_SECRET.to_vec(),
        admin_key: ADMIN_KEY.into(),
        admin_key_generated: false,
    }
}

pub async fn start(nodes: u32) -> TestCluster {
    match std::env::var(STORES_ENV).as_deref() {
        Ok("postgres+redis") => {
            let (postgres, redis) = tokio::join!(PgServer::start(), RedisServer::start());
            let mut t =
                start_with_stores(nodes, Some(postgres.url.clone()), Some(redis.url.clone())).await;
            t._servers = Some((postgres, redis));
            t
        }
        Ok("") | Err(_) => start_with_stores(nodes, None, None).await,
        Ok(other) => panic!("{STORES_ENV}={other}: expected postgres+redis or nothing"),
    }
}

/// A cluster keeping its metadata at `metadata_url` (default: SQLite in its data dir) and its
/// gateway's idempotency records in Redis at `redis_url` (default: in memory).
pub async fn start_with_stores(
    nodes: u32,
    metadata_url: Option<String>,
    redis_url: Option<String>,
) -> TestCluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LocalOptions {
        http: ([127, 0, 0, 1], 0).into(),
        nodes,
        data_dir: dir.path().to_path_buf(),
        engine: EngineKind::Lsm,
        metadata_url,
        request_timeout: Duration::from_secs(5),
        vnodes: 64,
        max_clock_skew: Duration::from_millis(pairdb_core::hlc::DEFAULT_MAX_AHEAD_MS),
        edge: pairdb_gateway::server::ConnectionLimits::default(),
        admission: pairdb::local::Admission {
            enabled: true,
            redis_url,
            tenant_cache: None,
        },
        node_workers: NODE_WORKERS,
        durability: pairdb_storage::durability::Durability::Always,
    };
    let lock = DirLock::acquire(&opts.data_dir).expect("lock the data dir");
    let cluster = LocalCluster::start_with(&opts, lock, secrets(), |spec| {
        KillableNode::start(spec, NODE_WORKERS)
    })
    .await
    .expect("start cluster");
    let base = format!("http://{}", cluster.gateway.addr);
    TestCluster {
        cluster,
        base,
        http: reqwest::Client::new(),
        _dir: dir,
        _servers: None,
    }
}

pub type Storage = StorageClient<InterceptedService<Channel, StorageAuth>>;

#[derive(Clone)]
pub struct StorageAuth(pub Option<&'static str>);

impl tonic::service::Interceptor for StorageAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = self.0 {
            let v = format!("Bearer {t}").parse().expect("header value");
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

impl TestCluster {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Creates a tenant through the REST API and returns its API key.
    pub async fn create_tenant(&self, id: &str, rf: u32) -> String {
        let resp = self
            .http
            .post(self.url("/v1/tenants"))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"tenant_id": id, "replication_factor": rf}))
            .send()
            .await
            .expect("create tenant");
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "{:?}",
            resp.text().await
        );
        let body: serde_json::Value = resp.json().await.expect("json");
        body["api_key"].as_str().expect("api_key").to_owned()
    }

    pub async fn kv(
        &self,
        method: Method,
        key_path: &str,
        api_key: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, self.url(&format!("/v1/kv/{key_path}")))
            .bearer_auth(api_key);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.expect("request")
    }

    pub fn storage(&self, node_id: &str, token: Option<&'static str>) -> Storage {
        let node = self
            .cluster
            .nodes
            .iter()
            .find(|n| n.id == node_id)
            .expect("node");
        let channel = Channel::from_shared(format!("http://{}", node.addr))
            .expect("uri")
            .connect_lazy();
        StorageClient::with_interceptor(channel, StorageAuth(token))
    }

    pub fn epoch(&self) -> u64 {
        self.cluster
            .coordinator
            .cluster
            .view()
            .expect("placement")
            .placement
            .epoch
    }

    /// The preference list of `key` for `tenant`.
    pub fn replicas(&self, tenant: &str, key: &[u8]) -> Vec<String> {
        self.cluster
            .coordinator
            .cluster
            .view()
            .expect("placement")
            .preference_list(tenant, key)
            .expect("tenant in placement")
    }

    /// The version `node` holds for `(tenant, key)`, read over the storage RPC.
    pub async fn stored(&self, node: &str, tenant: &str, key: &[u8]) -> Option<Version> {
        self.try_stored(node, tenant, key)
            .await
            .expect("storage read")
    }

    /// Like [`stored`](Self::stored), or the node's refusal (e.g. it has no placement yet).
    pub async fn try_stored(
        &self,
        node: &str,
        tenant: &str,
        key: &[u8],
    ) -> Result<Option<Version>, tonic::Status> {
        let resp = self
            .storage(node, Some(INTERNAL_TOKEN))
            .read(ReadRequest {
                epoch: self.epoch(),
                key: Some(KeyRef {
                    namespace: tenant.into(),
                    key: key.to_vec(),
                }),
            })
            .await?
            .into_inner();
        Ok(resp
            .version
            .map(|v| version_from_pb(v).expect("valid version")))
    }

    pub fn signer(&self) -> ContextSigner {
        ContextSigner::new(KEY_SECRET, 5_000)
    }

    /// The data dir of storage node `id` (one of the cluster's first nodes).
    pub fn data_dir(&self, id: &str) -> std::path::PathBuf {
        self._dir.path().join(id)
    }

    /// Restarts storage node `id` at `addr` on its own data dir and LSM engine, as after a crash.
    pub fn restart_in_place(&mut self, id: &str, addr: std::net::SocketAddr) {
        let dir = self._dir.path().join(id);
        let listener = pairdb::local::bind("storage node", addr).expect("rebind the node's port");
        let node = KillableNode::start(
            NodeSpec {
                id: id.to_owned(),
                listener,
                data_dir: dir,
                engine: pairdb::local::engine_opener(
                    EngineKind::Lsm,
                    pairdb_storage::durability::Durability::Always,
                ),
                internal_token: INTERNAL_TOKEN.to_owned(),
                max_clock_skew: Duration::from_millis(pairdb_core::hlc::DEFAULT_MAX_AHEAD_MS),
            },
            NODE_WORKERS,
        )
        .expect("restart");
        self.cluster.nodes.push(node);
    }

    /// Restarts storage node `id` at `addr` on an empty memory engine in `dir`.
    pub fn restart(&mut self, id: &str, addr: std::net::SocketAddr, dir: &std::path::Path) {
        let listener = pairdb::local::bind("storage node", addr).expect("rebind the node's port");
        let node = KillableNode::start(
            NodeSpec {
                id: id.to_owned(),
                listener,
                data_dir: dir.to_path_buf(),
                engine: pairdb::local::engine_opener(
                    EngineKind::Memory,
                    pairdb_storage::durability::Durability::Always,
                ),
                internal_token: INTERNAL_TOKEN.to_owned(),
                max_clock_skew: Duration::from_millis(pairdb_core::hlc::DEFAULT_MAX_AHEAD_MS),
            },
            NODE_WORKERS,
        )
        .expect("restart");
        self.cluster.nodes.push(node);
    }

    /// Starts a new storage node `id` (LSM engine, empty, in this cluster's temp dir) on a free
    /// loopback port, not yet a member; returns its address.
    pub fn start_node(&mut self, id: &str) -> std::net::SocketAddr {
        let listener = pairdb::local::bind("storage node", ([127, 0, 0, 1], 0).into())
            .expect("bind a free port");
        let dir = self._dir.path().join(format!("extra-{id}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let node = KillableNode::start(
            NodeSpec {
                id: id.to_owned(),
                listener,
                data_dir: dir,
                engine: pairdb::local::engine_opener(
                    EngineKind::Lsm,
                    pairdb_storage::durability::Durability::Always,
                ),
                internal_token: INTERNAL_TOKEN.to_owned(),
                max_clock_skew: Duration::from_millis(pairdb_core::hlc::DEFAULT_MAX_AHEAD_MS),
            },
            NODE_WORKERS,
        )
        .expect("start node");
        let addr = node.addr;
        self.cluster.nodes.push(node);
        addr
    }

    /// An admin request: `method` on `path` with an optional JSON body; answers the status and
    /// the JSON body (or `null`).
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(ADMIN_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// Polls migration `id` until it is `done` (panics if it fails or takes over `limit`).
    pub async fn await_migration(&self, id: &str, limit: Duration) -> serde_json::Value {
        self.await_migration_in(id, "done", limit).await
    }

    /// Polls migration `id` until it reaches `state` (panics if it fails, ends otherwise, or
    /// takes over `limit`).
    pub async fn await_migration_in(
        &self,
        id: &str,
        state: &str,
        limit: Duration,
    ) -> serde_json::Value {
        let started = std::time::Instant::now();
        loop {
            let (status, body) = self
                .admin(Method::GET, &format!("/v1/admin/migrations/{id}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            match body["state"].as_str() {
                Some(s) if s == state => return body,
                Some(s @ ("failed" | "done" | "cancelled")) => {
                    panic!("migration {id} ended {s}, not {state}: {body}")
                }
                _ => {}
            }
            assert!(
                started.elapsed() < limit,
                "migration {id} not {state} after {limit:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The keys of `tenant` storage node `node` holds (tombstones included), by a full scan.
    pub async fn keys_on(&self, node: &str, tenant: &str) -> Vec<Vec<u8>> {
        self.entries_on(node, tenant)
            .await
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// What storage node `node` holds of `tenant`: each key with its value, `None` for a
    /// tombstone.
    pub async fn entries_on(&self, node: &str, tenant: &str) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut client = self.storage(node, Some(INTERNAL_TOKEN));
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = client
                .scan(pairdb_proto::storage::ScanRequest {
                    epoch: self.epoch(),
                    range: Some(pairdb_proto::storage::TokenRange {
                        namespace: tenant.into(),
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
            out.extend(page.entries.into_iter().map(|e| {
                let v = e.version.expect("scanned version");
                (e.key, (!v.tombstone).then_some(v.value))
            }));
            if !page.more {
                return out;
            }
        }
    }

    /// Waits until the coordinator's connection to `node` is known broken: a call on it fails
    /// in a way that proves it was never sent (the node is gone and the port refuses). A write
    /// racing the discovery could have been sent on the dying connection, and its outcome would
    /// rightly be unknown; after this, the coordinator fails over deterministically.
    pub async fn await_unreachable(&self, node: &str) {
        let handle = self
            .cluster
            .coordinator
            .cluster
            .pool()
            .get(node)
            .expect("node in the pool");
        for _ in 0..500 {
            let mut client = handle.client();
            if let Err(status) = client.health(pairdb_proto::storage::HealthRequest {}).await
                && pairdb_coordinator::pool::classify(&status)
                    == pairdb_coordinator::pool::Failure::NotSent
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the coordinator still reaches {node}");
    }

    /// Kills storage node `id` abruptly (connections dropped, like a crash).
    pub fn kill(&mut self, id: &str) {
        let idx = self
            .cluster
            .nodes
            .iter()
            .position(|n| n.id == id)
            .expect("node");
        let node = self.cluster.nodes.remove(idx);
        node.kill();
    }
}

pub fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}
