//! Scriptable storage nodes over real gRPC on loopback, and a coordinator in front of them.
//!
//! A [`FakeNode`] is a real storage node (the real service over the memory engine) behind a
//! script: each Mint, Apply and Read call takes the next [`Step`] of its RPC's queue (an empty
//! queue passes calls through), so a test decides exactly which node refuses, breaks after
//! applying, hangs, or answers late. Each node runs on a runtime of its own, so
//! [`FakeNode::kill`] drops its connections the way a crashed process would.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pairdb_coordinator::CoordinatorConfig;
use pairdb_coordinator::cluster::Cluster;
use pairdb_coordinator::replication::{ReadOp, Replicator, WriteOp};
use pairdb_core::{Consistency, NodeAddr, Placement, StorageKey, Version};
use pairdb_metadata::{
    ApiKeyRecord, MemoryStore, MetadataError, MetadataStore, NodeRecord, TenantConfig,
};
use pairdb_proto::storage as pb;
use pairdb_proto::storage::RefusalReason;
use pairdb_proto::storage::storage_server::{Storage, StorageServer};
use pairdb_storage::engine::StorageEngine;
use pairdb_storage::memory::MemoryEngine;
use pairdb_storage::node::NodeState;
use pairdb_storage::service::StorageService;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};

pub const TOKEN: &str = "fake-internal-token";
pub const TENANT: &str = "t";

/// What a node does with one call.
#[derive(Clone)]
pub enum Step {
    /// Serve it normally.
    Pass,
    /// Refuse it explicitly, changing nothing.
    Refuse(RefusalReason),
    /// Fail it with a bare status (no refusal), changing nothing.
    Bare(Code),
    /// Serve it (it takes effect), then answer a bare error instead of the result: a stream
    /// broken after the work was done.
    PassThenBare(Code),
    /// Serve it, announce it on [`Counters::served`], then never answer (kill the node to break
    /// the stream).
    PassThenHang,
    /// Never answer, changing nothing.
    Hang,
    /// Wait for the notification, then serve it (a late answer).
    After(Arc<Notify>),
}

/// Per-RPC scripts; an empty queue passes calls through.
#[derive(Default)]
pub struct Script {
    mint: Mutex<VecDeque<Step>>,
    apply: Mutex<VecDeque<Step>>,
    read: Mutex<VecDeque<Step>>,
}

impl Script {
    pub fn mint(&self, steps: impl IntoIterator<Item = Step>) {
        lock(&self.mint).extend(steps);
    }
    pub fn apply(&self, steps: impl IntoIterator<Item = Step>) {
        lock(&self.apply).extend(steps);
    }
    pub fn read(&self, steps: impl IntoIterator<Item = Step>) {
        lock(&self.read).extend(steps);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn next(queue: &Mutex<VecDeque<Step>>) -> Step {
    lock(queue).pop_front().unwrap_or(Step::Pass)
}

/// What a node saw and did.
#[derive(Default)]
pub struct Counters {
    pub mints: AtomicUsize,
    pub mints_served: AtomicUsize,
    pub applies: AtomicUsize,
    pub applies_served: AtomicUsize,
    pub reads: AtomicUsize,
    /// Notified each time a `PassThenHang` step has served its call.
    pub served: Notify,
}

impl Counters {
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

fn refusal_code(reason: RefusalReason) -> Code {
    match reason {
        RefusalReason::Unauthenticated => Code::Unauthenticated,
        RefusalReason::InvalidArgument => Code::InvalidArgument,
        RefusalReason::StaleEpoch => Code::Aborted,
        RefusalReason::IdempotencyKeyReused => Code::AlreadyExists,
        RefusalReason::Engine => Code::Internal,
        _ => Code::FailedPrecondition,
    }
}

#[derive(Clone)]
struct FakeService {
    inner: StorageService,
    script: Arc<Script>,
    counters: Arc<Counters>,
}

impl FakeService {
    /// Runs `step` around `serve`; `served` counts calls that took effect.
    async fn run<T>(
        &self,
        step: Step,
        served: &AtomicUsize,
        serve: impl std::future::Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        let served_ok = |r: &Result<Response<T>, Status>| {
            if r.is_ok() {
                served.fetch_add(1, Ordering::SeqCst);
            }
        };
        match step {
            Step::Pass => {
                let r = serve.await;
                served_ok(&r);
                r
            }
            Step::Refuse(reason) => Err(pairdb_proto::refused(
                refusal_code(reason),
                reason,
                "scripted refusal",
                0,
            )),
            Step::Bare(code) => Err(Status::new(code, "scripted failure")),
            Step::PassThenBare(code) => {
                let r = serve.await;
                served_ok(&r);
                r?;
                Err(Status::new(code, "scripted: broken after serving"))
            }
            Step::PassThenHang => {
                let r = serve.await;
                served_ok(&r);
                self.counters.served.notify_one();
                std::future::pending().await
            }
            Step::Hang => std::future::pending().await,
            Step::After(go) => {
                go.notified().await;
                let r = serve.await;
                served_ok(&r);
                r
            }
        }
    }
}

#[tonic::async_trait]
impl Storage for FakeService {
    type CallsStream = pairdb_storage::calls::ReplyStream;

    /// The coordinator's data path: each call of the stream runs through the scripted unary
    /// methods below.
    async fn calls(
        &self,
        request: Request<tonic::Streaming<pb::CallBatch>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        Ok(Response::new(pairdb_storage::calls::serve(
            self.clone(),
            request,
            self.inner.call_hooks(),
        )))
    }

    async fn mint(
        &self,
        request: Request<pb::MintRequest>,
    ) -> Result<Response<pb::MintResponse>, Status> {
        self.counters.mints.fetch_add(1, Ordering::SeqCst);
        let step = next(&self.script.mint);
        self.run(step, &self.counters.mints_served, self.inner.mint(request))
            .await
    }

    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        self.counters.applies.fetch_add(1, Ordering::SeqCst);
        let step = next(&self.script.apply);
        self.run(
            step,
            &self.counters.applies_served,
            self.inner.apply(request),
        )
        .await
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        self.counters.reads.fetch_add(1, Ordering::SeqCst);
        let step = next(&self.script.read);
        let unused = AtomicUsize::new(0);
        self.run(step, &unused, self.inner.read(request)).await
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        self.inner.scan(request).await
    }

    async fn digest(
        &self,
        request: Request<pb::DigestRequest>,
    ) -> Result<Response<pb::DigestResponse>, Status> {
        self.inner.digest(request).await
    }

    async fn ingest(
        &self,
        request: Request<pb::IngestRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        self.inner.ingest(request).await
    }

    async fn drop_ranges(
        &self,
        request: Request<pb::DropRangesRequest>,
    ) -> Result<Response<pb::DropRangesResponse>, Status> {
        self.inner.drop_ranges(request).await
    }

    async fn record_hints(
        &self,
        request: Request<pb::RecordHintsRequest>,
    ) -> Result<Response<pb::RecordHintsResponse>, Status> {
        self.inner.record_hints(request).await
    }

    async fn set_repaired_until(
        &self,
        request: Request<pb::SetRepairedUntilRequest>,
    ) -> Result<Response<pb::SetRepairedUntilResponse>, Status> {
        self.inner.set_repaired_until(request).await
    }

    async fn push_placement(
        &self,
        request: Request<pb::PushPlacementRequest>,
    ) -> Result<Response<pb::PushPlacementResponse>, Status> {
        self.inner.push_placement(request).await
    }

    async fn health(
        &self,
        request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        self.inner.health(request).await
    }
}

/// A scriptable storage node on a runtime and thread of its own.
pub struct FakeNode {
    pub id: String,
    pub addr: SocketAddr,
    pub engine: Arc<MemoryEngine>,
    pub state: Arc<NodeState>,
    pub script: Arc<Script>,
    pub counters: Arc<Counters>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl FakeNode {
    pub fn start(id: &str) -> FakeNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(MemoryEngine::new(Duration::from_secs(3600)));
        let state = Arc::new(NodeState::open(dir.path(), id, false).expect("node state"));
        let script = Arc::new(Script::default());
        let counters = Arc::new(Counters::default());
        let service = FakeService {
            inner: StorageService::new(
                Arc::clone(&engine) as Arc<dyn StorageEngine>,
                Arc::clone(&state),
                TOKEN,
            ),
            script: Arc::clone(&script),
            counters: Arc::clone(&counters),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let server = tonic::transport::Server::builder()
                    .add_service(StorageServer::new(service))
                    .serve_with_incoming(incoming);
                // Killed: stop here, dropping calls in flight without an answer.
                tokio::select! {
                    _ = server => {}
                    _ = kill_rx => {}
                }
            });
            // Dropping the runtime drops every connection at once, like a crash.
            runtime.shutdown_background();
        });
        FakeNode {
            id: id.to_owned(),
            addr,
            engine,
            state,
            script,
            counters,
            kill: Some(kill_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Drops the node and every connection to it at once.
    pub fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The version this node stores for `key` of [`TENANT`].
    pub fn stored(&self, key: &str) -> Option<Version> {
        self.engine
            .get(&StorageKey::new(TENANT, key.as_bytes()).expect("key"))
            .expect("get")
    }

    /// Stores `version` for `key` directly in the engine, as if replicated earlier.
    pub fn put(&self, key: &str, version: Version) {
        self.engine
            .apply(
                &StorageKey::new(TENANT, key.as_bytes()).expect("key"),
                version,
                None,
            )
            .expect("apply");
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A metadata store counting placement reads, whose placement reads can be made to hang.
#[derive(Default)]
pub struct CountingStore {
    pub inner: MemoryStore,
    pub placement_reads: AtomicUsize,
    stall: std::sync::atomic::AtomicBool,
}

impl CountingStore {
    /// While `on`, placement reads never answer (a metadata store that stopped responding).
    pub fn stall_placement_reads(&self, on: bool) {
        self.stall.store(on, Ordering::SeqCst);
    }
}

#[async_trait]
impl MetadataStore for CountingStore {
    async fn create_tenant(
        &self,
        tenant: &TenantConfig,
        first_key: &ApiKeyRecord,
        expected_epoch: u64,
        next: &Placement,
    ) -> Result<(), MetadataError> {
        self.inner
            .create_tenant(tenant, first_key, expected_epoch, next)
            .await
    }
    async fn get_tenant(&self, id: &str) -> Result<Option<TenantConfig>, MetadataError> {
        self.inner.get_tenant(id).await
    }
    async fn list_tenants(&self) -> Result<Vec<TenantConfig>, MetadataError> {
        self.inner.list_tenants().await
    }
    async fn update_tenant(
        &self,
        id: &str,
        default_consistency: Option<pairdb_core::Consistency>,
        rate_limit: Option<pairdb_metadata::RateLimit>,
    ) -> Result<Option<TenantConfig>, MetadataError> {
        self.inner
            .update_tenant(id, default_consistency, rate_limit)
            .await
    }
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), MetadataError> {
        self.inner.insert_api_key(key).await
    }
    async fn get_api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, MetadataError> {
        self.inner.get_api_key(key_id).await
    }
    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyRecord>, MetadataError> {
        self.inner.list_api_keys(tenant_id).await
    }
    async fn delete_api_key(&self, tenant_id: &str, key_id: &str) -> Result<bool, MetadataError> {
        self.inner.delete_api_key(tenant_id, key_id).await
    }
    async fn upsert_node(&self, node: &NodeRecord) -> Result<(), MetadataError> {
        self.inner.upsert_node(node).await
    }
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, MetadataError> {
        self.inner.list_nodes().await
    }
    async fn placement(&self) -> Result<Option<Placement>, MetadataError> {
        self.placement_reads.fetch_add(1, Ordering::SeqCst);
        while self.stall.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.placement().await
    }
    async fn swap_placement(
        &self,
        expected_epoch: Option<u64>,
        next: &Placement,
    ) -> Result<bool, MetadataError> {
        self.inner.swap_placement(expected_epoch, next).await
    }
    async fn heartbeat(
        &self,
        role: &str,
        instance: &str,
        ttl: std::time::Duration,
    ) -> Result<u32, MetadataError> {
        self.inner.heartbeat(role, instance, ttl).await
    }

    async fn leave(&self, role: &str, instance: &str) -> Result<(), MetadataError> {
        self.inner.leave(role, instance).await
    }

    async fn ping(&self) -> Result<(), MetadataError> {
        self.inner.ping().await
    }

    async fn start_job(
        &self,
        job: &pairdb_metadata::JobRecord,
        placement: Option<(u64, &Placement)>,
    ) -> Result<(), MetadataError> {
        self.inner.start_job(job, placement).await
    }

    async fn get_job(&self, id: &str) -> Result<Option<pairdb_metadata::JobRecord>, MetadataError> {
        self.inner.get_job(id).await
    }

    async fn delete_finished_job(&self, id: &str) -> Result<bool, MetadataError> {
        self.inner.delete_finished_job(id).await
    }

    async fn list_jobs(
        &self,
        unfinished: bool,
    ) -> Result<Vec<pairdb_metadata::JobRecord>, MetadataError> {
        self.inner.list_jobs(unfinished).await
    }

    async fn save_job(
        &self,
        job: &pairdb_metadata::JobRecord,
        owner: &str,
        ttl: std::time::Duration,
        placement: Option<(u64, &Placement)>,
    ) -> Result<bool, MetadataError> {
        self.inner.save_job(job, owner, ttl, placement).await
    }

    async fn delete_tenant(&self, id: &str) -> Result<bool, MetadataError> {
        self.inner.delete_tenant(id).await
    }

    async fn ack_epoch(
        &self,
        instance: &str,
        epoch: u64,
        ttl: std::time::Duration,
    ) -> Result<u64, MetadataError> {
        self.inner.ack_epoch(instance, epoch, ttl).await
    }
}

/// Three fake nodes, a metadata store with tenant [`TENANT`] at RF 3, and a coordinator's
/// cluster view and replicator over them.
pub struct Fixture {
    pub nodes: Vec<FakeNode>,
    pub store: Arc<CountingStore>,
    pub cluster: Arc<Cluster>,
    pub replicator: Replicator,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut CoordinatorConfig)) -> Fixture {
        let nodes: Vec<FakeNode> = (1..=3).map(|i| FakeNode::start(&format!("n{i}"))).collect();
        let addrs = nodes
            .iter()
            .map(|n| NodeAddr {
                id: n.id.clone(),
                address: n.addr.to_string(),
            })
            .collect();
        let placement = Placement::initial(addrs, 64).with_tenant(TENANT, 3);
        let store = Arc::new(CountingStore::default());
        assert!(
            store
                .swap_placement(None, &placement)
                .await
                .expect("placement")
        );
        let mut config = CoordinatorConfig::new(TOKEN.into(), b"secret".to_vec(), String::new());
        adjust(&mut config);
        let cluster = Cluster::new(store.clone(), config).expect("cluster");
        cluster.refresh().await.expect("first placement");
        let replicator = Replicator::new(Arc::clone(&cluster));
        Fixture {
            nodes,
            store,
            cluster,
            replicator,
        }
    }

    /// The replicas of `key`, leader first.
    pub fn prefs(&self, key: &str) -> Vec<String> {
        self.cluster
            .view()
            .expect("view")
            .preference_list(TENANT, key.as_bytes())
            .expect("tenant")
    }

    pub fn node(&self, id: &str) -> &FakeNode {
        self.nodes.iter().find(|n| n.id == id).expect("node")
    }

    pub fn node_mut(&mut self, id: &str) -> &mut FakeNode {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node")
    }

    /// The replicas of `key` as nodes, leader first.
    pub fn replicas(&self, key: &str) -> Vec<&FakeNode> {
        self.prefs(key).iter().map(|id| self.node(id)).collect()
    }

    pub fn placement_reads(&self) -> usize {
        self.store.placement_reads.load(Ordering::SeqCst)
    }

    /// Moves the placement to the next epoch (same nodes) in metadata and on every node, leaving
    /// the coordinator's view behind.
    pub async fn advance_epoch_behind_the_coordinator(&self) -> u64 {
        let current = self
            .store
            .inner
            .placement()
            .await
            .expect("read")
            .expect("placement");
        let next = Placement {
            epoch: current.epoch + 1,
            ..current.clone()
        };
        assert!(
            self.store
                .inner
                .swap_placement(Some(current.epoch), &next)
                .await
                .expect("swap")
        );
        for node in &self.nodes {
            node.state.install(next.clone()).await.expect("install");
        }
        next.epoch
    }
}

/// A PUT of `value` to `key` at `level`, with idempotency key `idem`, deadline `timeout` away.
pub fn put(key: &str, value: &str, level: Consistency, idem: &str, timeout: Duration) -> WriteOp {
    WriteOp {
        tenant: TENANT.into(),
        key: key.as_bytes().to_vec(),
        tombstone: false,
        value: value.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        context: String::new(),
        idempotency_key: idem.into(),
        consistency: level,
        deadline: Instant::now() + timeout,
    }
}

/// A GET of `key` at `level`, deadline `timeout` away.
pub fn get(key: &str, level: Consistency, timeout: Duration) -> ReadOp {
    ReadOp {
        tenant: TENANT.into(),
        key: key.as_bytes().to_vec(),
        consistency: level,
        deadline: Instant::now() + timeout,
    }
}

/// Waits (bounded) until `check` holds: for effects that happen in the background after an
/// answer. Fails the test if it never does.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

pub const LONG: Duration = Duration::from_secs(10);
