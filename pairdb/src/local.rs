//! Starting pairdb's roles inside this process, on bound listeners: what `pairdb dev` and the
//! role commands run, and what the cluster tests drive.
//!
//! The coordinator and the gateway run on the process's runtime; each storage node runs on a
//! multi-threaded runtime of its own, as if it were a process of its own. Listeners are bound before
//! anything is written anywhere, so a process that cannot have its ports (or its data dir, which
//! it locks first) fails having changed nothing.

use pairdb_gateway::server::redacted;
use pairdb_middleware::Redis;
use pairdb_middleware::tenant_cache::{
    MemoryTenantConfigCache, RedisTenantConfigCache, TenantConfigCache,
};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use pairdb_coordinator::CoordinatorConfig;
use pairdb_coordinator::cluster::Cluster;
use pairdb_core::{NodeAddr, Placement};
use pairdb_gateway::server::ConnectionLimits;
use pairdb_metadata::{MetadataStore, NodeRecord, NodeState as StoredNodeState, RateLimit};
use pairdb_storage::clock_file::ClockFile;
use pairdb_storage::dir_lock::DirLock;
use pairdb_storage::durability::Durability;
use pairdb_storage::engine::StorageEngine;
use pairdb_storage::lsm::engine::{LsmEngine, LsmOptions};
use pairdb_storage::memory::MemoryEngine;
use pairdb_storage::node::{Continuity, DirStateFile, NodeState};
use pairdb_storage::service::StorageService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::cli::EngineKind;
use crate::secrets::Secrets;
use crate::shutdown::Shutdown;

/// How long a storage node remembers the idempotency keys it applied.
pub const APPLIED_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Opens the metadata store at `url` (`sqlite://…` or `postgres://…`).
pub async fn open_metadata(url: &str) -> anyhow::Result<Arc<dyn MetadataStore>> {
    if url.starts_with("sqlite:") {
        let store = pairdb_metadata::sqlite::SqliteStore::open(url)
            .await
            .with_context(|| format!("opening metadata store {}", redacted(url)))?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let store = pairdb_metadata::postgres::PostgresStore::open(url)
            .await
            .with_context(|| format!("opening metadata store {}", redacted(url)))?;
        Ok(Arc::new(store))
    } else {
        bail!(
            "unsupported metadata URL {:?}: expected sqlite://PATH or postgres://…",
            redacted(url)
        )
    }
}

/// Opens a storage node's engine in its data dir — called only once the dir is locked.
pub type EngineOpener = Box<dyn FnOnce(&Path) -> anyhow::Result<Arc<dyn StorageEngine>> + Send>;

/// Opens the engine of `kind` in a storage node's data dir `data_dir`, once it is locked (the
/// LSM engine keeps its files in `<data_dir>/lsm`), acknowledging writes as `durability` says.
pub fn engine_opener(kind: EngineKind, durability: Durability) -> EngineOpener {
    Box::new(move |data_dir| open_engine(kind, data_dir, durability))
}

fn open_engine(
    kind: EngineKind,
    data_dir: &Path,
    durability: Durability,
) -> anyhow::Result<Arc<dyn StorageEngine>> {
    Ok(match kind {
        EngineKind::Memory => Arc::new(MemoryEngine::new(APPLIED_KEY_TTL)),
        EngineKind::Lsm => {
            let dir = data_dir.join("lsm");
            let options = LsmOptions::new(durability, APPLIED_KEY_TTL);
            Arc::new(
                LsmEngine::open(&dir, options)
                    .with_context(|| format!("opening the LSM engine in {}", dir.display()))?,
            )
        }
    })
}

/// Binds `addr` for a role, naming the role in the error.
pub fn bind(role: &str, addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("binding the {role} to {addr}"))?;
    listener.set_nonblocking(true)?;
    // The bound address, so a port given as 0 can be found (scripts and tests read it here).
    tracing::info!(listen = %listener.local_addr()?, "{role} listening");
    Ok(listener)
}

/// Everything a storage node needs to start.
pub struct NodeSpec {
    /// Node id.
    pub id: String,
    /// Its bound gRPC listener.
    pub listener: std::net::TcpListener,
    /// Its data directory (locked when the node starts).
    pub data_dir: PathBuf,
    /// Opens its engine once the data dir is locked.
    pub engine: EngineOpener,
    /// The internal credential it accepts.
    pub internal_token: String,
    /// How far ahead of its wall clock it accepts a version's timestamp.
    pub max_clock_skew: Duration,
}

impl NodeSpec {
    /// Locks the node's data dir — before anything in it is read or written — then opens its
    /// engine, its state and its service.
    pub fn open(self) -> anyhow::Result<OpenNode> {
        let what = || {
            format!(
                "opening storage node {} in {}",
                self.id,
                self.data_dir.display()
            )
        };
        std::fs::create_dir_all(&self.data_dir).with_context(what)?;
        let lock = DirLock::acquire(&self.data_dir).with_context(what)?;
        let engine = (self.engine)(&self.data_dir).with_context(what)?;
        let state = Arc::new(
            NodeState::open_continuing(
                Some(lock),
                Box::new(DirStateFile::new(&self.data_dir)),
                &self.id,
                Continuity::of(engine.durability()),
            )
            .with_context(what)?,
        );
        // Past the clock the node's previous run recorded, whatever the wall clock says now.
        let clock = ClockFile::new(&self.data_dir);
        let floor = clock.read().with_context(what)?;
        let ahead_ms =
            pairdb_core::hlc::physical_ms(floor).saturating_sub(pairdb_core::hlc::wall_ms());
        if u128::from(ahead_ms) > self.max_clock_skew.as_millis() {
            tracing::warn!(
                node = %self.id,
                ahead_ms,
                file = %self.data_dir.join(pairdb_storage::clock_file::FILE).display(),
                "the clock this node recorded is ahead of its wall clock by more than other nodes accept: \
                 its versions are refused until the wall clock catches up (delete the file to start \
                 from the wall clock, and let new writes order before its latest ones)"
            );
        }
        let service = StorageService::new(
            Arc::clone(&engine),
            Arc::clone(&state),
            &self.internal_token,
        )
        .with_clock_floor(floor)
        .with_max_clock_skew(self.max_clock_skew)
        .with_call_spans(Arc::new(|rpc, traceparent| {
            pairdb_middleware::call_span("storage", rpc, traceparent)
        }));
        let handoff = pairdb_storage::handoff::Handoff::open(
            &self.data_dir,
            Arc::clone(&state),
            Arc::clone(&engine),
            &self.internal_token,
        )
        .with_context(what)?;
        state.record_clock_in(Arc::clone(service.clock()), clock);
        let service = service.with_handoff(handoff);
        Ok(OpenNode {
            listener: self.listener,
            engine,
            state,
            service,
        })
    }
}

/// A storage node opened, not yet serving.
pub struct OpenNode {
    /// Its bound listener.
    pub listener: std::net::TcpListener,
    /// Its engine.
    pub engine: Arc<dyn StorageEngine>,
    /// Its identity and placement.
    pub state: Arc<NodeState>,
    /// Its gRPC service.
    pub service: StorageService,
}

/// A storage node of a local cluster.
pub trait LocalNode: Send + Sized + 'static {
    /// Node id.
    fn id(&self) -> &str;
    /// Bound gRPC address.
    fn addr(&self) -> SocketAddr;
    /// Stops the node gracefully: in-flight calls finish, the engine is flushed, and only then is
    /// the stop recorded as clean. Fails unless all of that happened.
    fn stop(self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A storage node serving on a runtime and thread of its own, as if it were a process of its
/// own — its calls scheduled apart from the other roles of this process — or on the process's
/// runtime ([`start`](Self::start) with no workers). Engine calls that may block run on a
/// blocking pool, never on async workers.
///
/// Stop it with [`shutdown`](Self::shutdown) (or [`LocalNode::stop`]). A node dropped without
/// either is stopped gracefully in the background, and nothing waits for that stop.
pub struct StorageNode {
    /// Node id.
    pub id: String,
    /// Bound gRPC address.
    pub addr: SocketAddr,
    /// Its engine (shared with the running service).
    pub engine: Arc<dyn StorageEngine>,
    /// Its identity and newest placement.
    pub state: Arc<NodeState>,
    /// Its hints and peers.
    pub handoff: Option<Arc<pairdb_storage::handoff::Handoff>>,
    graceful: Option<oneshot::Sender<()>>,
    /// Says, when the node stops serving, whether it stopped cleanly.
    ended: Option<oneshot::Receiver<bool>>,
    /// What `ended` said, once [`stopped`](Self::stopped) heard it.
    outcome: Option<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A node's runtime. Dropped from any context — even an async one, where dropping a runtime
/// would panic — it shuts down without waiting for its blocking tasks.
struct NodeRuntime(Option<tokio::runtime::Runtime>);

impl Drop for NodeRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// How long a node that stopped gracefully waits for blocking engine work still running.
const BLOCKING_DRAIN: Duration = Duration::from_secs(10);

impl StorageNode {
    /// Starts the node `spec` describes on a multi-threaded runtime of its own with `workers`
    /// worker threads — or, with `workers == 0`, on the current runtime beside the other roles of
    /// the process (it still serves its own gRPC port over TCP; only the scheduler is shared).
    pub fn start(spec: NodeSpec, workers: usize) -> anyhow::Result<StorageNode> {
        if workers == 0 {
            return Self::start_here(spec);
        }
        Self::start_until(spec, workers, std::future::pending())
    }

    /// Starts the node on the current runtime: `pairdb dev`'s default, so one process's roles
    /// share one scheduler sized to the machine instead of a runtime per node. Stops only
    /// gracefully (no abort).
    fn start_here(spec: NodeSpec) -> anyhow::Result<StorageNode> {
        let id = spec.id.clone();
        let OpenNode {
            listener,
            engine,
            state,
            service,
        } = spec.open()?;
        let handoff = service.handoff().cloned();
        let addr = listener.local_addr()?;
        let listener = TcpListener::from_std(listener)
            .with_context(|| format!("registering the listener of storage node {id}"))?;
        let (graceful_tx, graceful_rx) = oneshot::channel::<()>();
        let (ended_tx, ended_rx) = oneshot::channel::<bool>();
        let (task_engine, task_state) = (Arc::clone(&engine), Arc::clone(&state));
        let node = id.clone();
        tokio::spawn(async move {
            // Dropping the sender (the node dropped without a stop) stops it gracefully.
            let served = serve(service, listener, async {
                let _ = graceful_rx.await;
            })
            .await;
            let clean = after_serving(node, served, task_engine, task_state).await;
            let _ = ended_tx.send(clean);
        });
        Ok(StorageNode {
            id,
            addr,
            engine,
            state,
            handoff,
            graceful: Some(graceful_tx),
            ended: Some(ended_rx),
            outcome: None,
            thread: None,
        })
    }

    /// Like [`start`](Self::start), but the node is dropped abruptly — listener and every open
    /// connection at once, nothing flushed, no clean stop recorded — when `abort` completes
    /// before the node has stopped serving (it wins over a graceful stop under way).
    pub(crate) fn start_until(
        spec: NodeSpec,
        workers: usize,
        abort: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<StorageNode> {
        let id = spec.id.clone();
        let OpenNode {
            listener,
            engine,
            state,
            service,
        } = spec.open()?;
        let handoff = service.handoff().cloned();
        let addr = listener.local_addr()?;
        let mut runtime = NodeRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers.max(1))
                .thread_name(format!("storage-{id}"))
                .enable_all()
                .build()
                .with_context(|| format!("building the runtime of storage node {id}"))?,
        ));
        let listener = {
            let Some(rt) = runtime.0.as_ref() else {
                bail!("the runtime of storage node {id} is gone");
            };
            let _entered = rt.enter();
            TcpListener::from_std(listener)
                .with_context(|| format!("registering the listener of storage node {id}"))?
        };
        let (graceful_tx, graceful_rx) = oneshot::channel::<()>();
        let (ended_tx, ended_rx) = oneshot::channel::<bool>();
        let (task_engine, task_state) = (Arc::clone(&engine), Arc::clone(&state));
        let node = id.clone();
        let thread = std::thread::Builder::new()
            .name(format!("storage-{id}-main"))
            .spawn(move || {
                let Some(rt) = runtime.0.take() else {
                    return;
                };
                let clean = rt.block_on(async move {
                    // Dropping the sender (the node dropped without a stop) stops it gracefully.
                    let server = serve(service, listener, async {
                        let _ = graceful_rx.await;
                    });
                    tokio::select! {
                        biased;
                        () = abort => None,
                        r = server => Some(r),
                    }
                    .map(|served| after_serving(node, served, task_engine, task_state))
                });
                let clean = match clean {
                    // Aborted: every connection task goes with the runtime, at once.
                    None => {
                        rt.shutdown_background();
                        false
                    }
                    Some(stop) => {
                        let clean = rt.block_on(stop);
                        rt.shutdown_timeout(BLOCKING_DRAIN);
                        clean
                    }
                };
                let _ = ended_tx.send(clean);
            })
            .with_context(|| format!("starting the thread of storage node {id}"))?;
        Ok(StorageNode {
            id,
            addr,
            engine,
            state,
            handoff,
            graceful: Some(graceful_tx),
            ended: Some(ended_rx),
            outcome: None,
            thread: Some(thread),
        })
    }

    /// Completes when the node stops serving by itself (a server error or a panic), which
    /// only [`shutdown`](Self::shutdown) should make it do; then `shutdown` reports how it ended.
    /// Cancel-safe.
    pub async fn stopped(&mut self) {
        if let Some(ended) = self.ended.as_mut() {
            self.outcome = Some(ended.await.unwrap_or(false));
            self.ended = None;
        }
    }

    /// Stops the node gracefully — in-flight calls finish, the engine is flushed, and only then
    /// is the stop recorded as clean — and fails unless all of that happened.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let stopped_already = self.outcome.is_some();
        if let Some(g) = self.graceful.take() {
            let _ = g.send(());
        }
        let clean = match self.ended.take() {
            // A thread that panicked never says.
            Some(ended) => ended.await.unwrap_or(false),
            None => self.outcome.unwrap_or(false),
        };
        if let Some(t) = self.thread.take() {
            match tokio::task::spawn_blocking(move || t.join()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => tracing::error!(node = %self.id, "storage node thread panicked"),
                Err(e) => {
                    tracing::error!(node = %self.id, error = %e, "cannot join storage node thread")
                }
            }
        }
        if stopped_already {
            bail!(
                "storage node {} stopped by itself before it was asked to",
                self.id
            );
        }
        if !clean {
            bail!("storage node {} did not stop cleanly", self.id);
        }
        Ok(())
    }

    /// Waits for the node's thread to end (after a stop or an abort).
    #[cfg(feature = "testing")]
    pub(crate) fn join_blocking(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl LocalNode for StorageNode {
    fn id(&self) -> &str {
        &self.id
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown().await
    }
}

/// After a node's server returned: [`stop_cleanly`] if it stopped as asked, else logs why it
/// ended (an unclean stop). Returns whether the stop was clean.
async fn after_serving(
    node: String,
    served: Result<(), tonic::transport::Error>,
    engine: Arc<dyn StorageEngine>,
    state: Arc<NodeState>,
) -> bool {
    match served {
        Ok(()) => stop_cleanly(engine, state).await,
        Err(e) => {
            tracing::error!(%node, error = %e, "storage node stopped with an error");
            false
        }
    }
}

/// After a node stopped serving: waits for engine work still running (a call whose caller gave
/// up goes on until its engine call returns), flushes the engine and, only if that worked, records
/// the stop as clean (so a durable engine's next start may keep the incarnation). Returns whether
/// it did.
pub async fn stop_cleanly(engine: Arc<dyn StorageEngine>, state: Arc<NodeState>) -> bool {
    let node = state.node_id().to_owned();
    state.close().await;
    let done = tokio::task::spawn_blocking(move || {
        engine
            .flush()
            .map_err(|e| format!("cannot flush the engine: {e}"))?;
        state
            .mark_clean_shutdown()
            .map_err(|e| format!("cannot record the clean shutdown: {e}"))
    })
    .await;
    match done {
        Ok(Ok(())) => {
            tracing::info!(%node, "storage node stopped cleanly");
            true
        }
        Ok(Err(e)) => {
            tracing::error!(%node, error = %e, "storage node stop not clean");
            false
        }
        Err(e) => {
            tracing::error!(%node, error = %e, "storage node stop task failed");
            false
        }
    }
}

/// Stops `nodes` gracefully, one after the other; fails (with the first failure) unless every
/// one stopped cleanly.
async fn stop_all<N: LocalNode>(nodes: Vec<N>) -> anyhow::Result<()> {
    let mut first = Ok(());
    for node in nodes {
        if let Err(e) = node.stop().await {
            tracing::error!(error = %e, "storage node stop failed");
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// Writes the first placement of `nodes` if there is none; otherwise moves each of `nodes` that
/// the placement names to its current address (a new epoch, if any moved). Membership is not a
/// restart's business: nodes added to the cluster since (`pairdb storage --join`, `POST
/// /v1/admin/nodes`) stay, and one of `nodes` that is not a member — it was decommissioned, or
/// `--nodes` grew — runs but serves nothing until it is added.
pub async fn reconcile_placement(
    store: &dyn MetadataStore,
    nodes: &[NodeAddr],
    vnodes: u32,
) -> anyhow::Result<()> {
    for n in nodes {
        store
            .upsert_node(&NodeRecord {
                node_id: n.id.clone(),
                address: n.address.clone(),
                state: StoredNodeState::Active,
                created_at: pairdb_metadata::model::now_rfc3339(),
            })
            .await?;
    }
    for _ in 0..8 {
        let current = store.placement().await?;
        let next = match &current {
            None => Placement::initial(nodes.to_vec(), vnodes),
            Some(p) => {
                let outsiders: Vec<&str> = nodes
                    .iter()
                    .filter(|n| p.address_of(&n.id).is_none())
                    .map(|n| n.id.as_str())
                    .collect();
                if !outsiders.is_empty() {
                    tracing::warn!(nodes = %outsiders.join(", "),
                        "storage nodes started that are not members of the cluster: add them with POST /v1/admin/nodes to use them");
                }
                let moved = |list: &mut Vec<NodeAddr>| {
                    let mut any = false;
                    for member in list.iter_mut() {
                        if let Some(n) = nodes.iter().find(|n| n.id == member.id)
                            && n.address != member.address
                        {
                            member.address = n.address.clone();
                            any = true;
                        }
                    }
                    any
                };
                let mut next = p.clone();
                let mut any = moved(&mut next.nodes);
                if let Some(t) = &mut next.transition {
                    any |= moved(&mut t.nodes);
                }
                if !any {
                    return Ok(());
                }
                next.epoch += 1;
                next
            }
        };
        if store
            .swap_placement(current.map(|p| p.epoch), &next)
            .await?
        {
            return Ok(());
        }
    }
    bail!("the placement kept changing while it was being written")
}

/// A coordinator running on the current runtime.
pub struct CoordinatorNode {
    /// Bound gRPC address.
    pub addr: SocketAddr,
    /// Its view of the cluster.
    pub cluster: Arc<Cluster>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl CoordinatorNode {
    /// Starts a coordinator over `store` on `listener`, loading the placement first.
    pub async fn start(
        store: Arc<dyn MetadataStore>,
        listener: std::net::TcpListener,
        config: CoordinatorConfig,
    ) -> anyhow::Result<CoordinatorNode> {
        let cluster = Cluster::new(store, config)?;
        if let Err(e) = cluster.refresh().await {
            tracing::warn!(error = %e, "no placement yet; the coordinator will retry");
        }
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let wait = shutdown.wait();
        let c = cluster.clone();
        let task = tokio::spawn(async move {
            if let Err(e) =
                pairdb_coordinator::server::run(c, listener, RateLimit::default(), wait).await
            {
                tracing::error!(error = %e, "coordinator stopped with an error");
            }
        });
        Ok(CoordinatorNode {
            addr,
            cluster,
            shutdown,
            task,
        })
    }

    /// Stops gracefully and waits.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.task.await;
    }
}

/// Serves a storage node's gRPC behind the storage trace layer until `shutdown` completes.
async fn serve(
    service: StorageService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    pairdb_storage::server::run_layered(
        service,
        listener,
        pairdb_middleware::TraceLayer::new()
            .role("storage")
            .route_names(storage_rpc_of)
            .untraced(&[CALLS_PATH]),
        shutdown,
    )
    .await
}

/// The call-stream RPC: its calls are traced one by one, the stream itself not at all.
const CALLS_PATH: &str = "/pairdb.storage.v1.Storage/Calls";

/// The storage RPC a gRPC path names, for span names (`other` for an unknown one).
fn storage_rpc_of(_: &axum::http::Method, path: &str) -> &'static str {
    match path.rsplit('/').next().unwrap_or_default() {
        "Mint" => "Mint",
        "Apply" => "Apply",
        "Read" => "Read",
        "Scan" => "Scan",
        "Digest" => "Digest",
        "PushPlacement" => "PushPlacement",
        "Health" => "Health",
        "Calls" => "Calls",
        _ => "other",
    }
}

/// A REST gateway running on the current runtime.
pub struct GatewayNode {
    /// Bound HTTP address.
    pub addr: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
    registration: Option<pairdb_middleware::rate_limit::Registration>,
}

impl GatewayNode {
    /// Starts a gateway on `listener` in front of `coordinators`, serving within `limits`.
    pub async fn start(
        store: Arc<dyn MetadataStore>,
        listener: std::net::TcpListener,
        coordinators: Vec<String>,
        secrets: &Secrets,
        request_timeout: Duration,
        limits: ConnectionLimits,
        admission: Admission,
    ) -> anyhow::Result<GatewayNode> {
        let mut config = pairdb_gateway::GatewayConfig::new(
            coordinators,
            secrets.internal_token.clone(),
            secrets.key_secret.clone(),
            secrets.admin_key.clone(),
        );
        config.request_timeout = request_timeout;
        config.max_connections = limits.max_connections;
        config.header_read_timeout = limits.header_read_timeout;
        config.admission = admission.enabled;
        config.redis_url = admission.redis_url;
        config.tenant_cache = admission.tenant_cache;
        let limits = config.connection_limits();
        let (router, registration) =
            pairdb_gateway::server::build_router_registered(config, store).await?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let wait = shutdown.wait();
        let task = tokio::spawn(async move {
            if let Err(e) = pairdb_gateway::server::serve(listener, router, limits, wait).await {
                tracing::error!(error = %e, "gateway stopped with an error");
            }
        });
        Ok(GatewayNode {
            addr,
            shutdown,
            task,
            registration,
        })
    }

    /// Stops gracefully and waits; then leaves the registry of live gateways.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.task.await;
        if let Some(registration) = self.registration {
            registration.leave().await;
        }
    }
}

/// Settings of a whole local cluster.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Gateway address (port 0: any).
    pub http: SocketAddr,
    /// Storage nodes.
    pub nodes: u32,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Engine.
    pub engine: EngineKind,
    /// Metadata URL (default: SQLite in the data dir).
    pub metadata_url: Option<String>,
    /// Request deadline.
    pub request_timeout: Duration,
    /// Virtual nodes per storage node.
    pub vnodes: u32,
    /// How far ahead of their wall clocks storage nodes accept versions' timestamps.
    pub max_clock_skew: Duration,
    /// The gateway's connection bounds.
    pub edge: ConnectionLimits,
    /// The gateway's rate limiting and idempotency records.
    pub admission: Admission,
    /// Worker threads of each storage node's runtime; 0: the nodes run on the process's runtime.
    pub node_workers: usize,
    /// When the storage nodes' acknowledged writes are on stable storage (`lsm` engine).
    pub durability: Durability,
}

/// A gateway's rate limiting and idempotency records.
#[derive(Clone, Debug)]
pub struct Admission {
    /// Both on (see `GatewayConfig::admission`).
    pub enabled: bool,
    /// Redis for the idempotency records and the shared tenant-config cache (`None`: records
    /// in the gateway's memory).
    pub redis_url: Option<String>,
    /// The tenant-config cache tier the gateway shares with other roles; `None`: one in
    /// `redis_url`, if set.
    pub tenant_cache: Option<Arc<dyn TenantConfigCache>>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            enabled: true,
            redis_url: None,
            tenant_cache: None,
        }
    }
}

/// One connection pool to the Redis at `url`, for every Redis-backed store of this process;
/// it does not wait for the server (a role may start before its Redis).
pub async fn redis(url: Option<&str>) -> anyhow::Result<Option<Redis>> {
    let Some(url) = url else { return Ok(None) };
    let redis = Redis::connect_lazy(url)
        .await
        .map_err(|e| anyhow::anyhow!("Redis at {}: {e}", pairdb_gateway::server::redacted(url)))?;
    Ok(Some(redis))
}

/// Where a coordinator keeps its gRPC clients' idempotency records: in `redis` (shared with
/// every coordinator using it), else `None`, its own memory.
pub fn coordinator_records(
    redis: Option<&Redis>,
) -> Option<Arc<dyn pairdb_middleware::idempotency::IdempotencyStore>> {
    redis.map(|r| {
        Arc::new(pairdb_middleware::idempotency::RedisIdempotencyStore::new(
            r,
        )) as Arc<dyn pairdb_middleware::idempotency::IdempotencyStore>
    })
}

/// The tenant-config cache tier the roles of one process share: in `redis` when given (shared
/// with every other process using it too), else in this process's memory.
pub fn shared_tenant_cache(redis: Option<&Redis>) -> Arc<dyn TenantConfigCache> {
    match redis {
        Some(r) => Arc::new(RedisTenantConfigCache::new(r)),
        None => Arc::new(MemoryTenantConfigCache::default()),
    }
}

/// A whole cluster in this process: storage nodes, one coordinator, one gateway.
pub struct LocalCluster<N: LocalNode = StorageNode> {
    /// Storage nodes, `node-1` … `node-N`.
    pub nodes: Vec<N>,
    /// The coordinator.
    pub coordinator: CoordinatorNode,
    /// The gateway.
    pub gateway: GatewayNode,
    /// The metadata store.
    pub store: Arc<dyn MetadataStore>,
    /// The secrets in use.
    pub secrets: Secrets,
    _lock: DirLock,
}

impl LocalCluster<StorageNode> {
    /// Starts every role on loopback with `secrets`, holding `lock` on `opts.data_dir`.
    pub async fn start(
        opts: &LocalOptions,
        lock: DirLock,
        secrets: Secrets,
    ) -> anyhow::Result<Self> {
        Self::start_with(opts, lock, secrets, |spec| {
            StorageNode::start(spec, opts.node_workers)
        })
        .await
    }
}

impl<N: LocalNode> LocalCluster<N> {
    /// Starts every role on loopback with `secrets`, each storage node through `start_node`.
    ///
    /// The caller locked the data dir first (`lock`), so a second process on it has already
    /// failed, having touched nothing. Then, in order: binds every listener, starts the storage
    /// nodes, and only then records their addresses in the placement and starts the coordinator
    /// and the gateway.
    pub async fn start_with(
        opts: &LocalOptions,
        lock: DirLock,
        secrets: Secrets,
        start_node: impl Fn(NodeSpec) -> anyhow::Result<N>,
    ) -> anyhow::Result<Self> {
        if lock.dir() != opts.data_dir {
            bail!(
                "the lock is on {}, not on the data dir {}",
                lock.dir().display(),
                opts.data_dir.display()
            );
        }
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let gateway_listener = bind("gateway", opts.http)?;
        let coordinator_listener = bind("coordinator", loopback)?;
        let mut node_listeners = Vec::with_capacity(opts.nodes as usize);
        for i in 1..=opts.nodes {
            node_listeners.push((format!("node-{i}"), bind("storage node", loopback)?));
        }
        let url = match &opts.metadata_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", opts.data_dir.join("metadata.db").display()),
        };
        let store = open_metadata(&url).await?;

        let mut nodes = Vec::with_capacity(node_listeners.len());
        for (id, listener) in node_listeners {
            let data_dir = opts.data_dir.join(&id);
            let started = start_node(NodeSpec {
                engine: engine_opener(opts.engine, opts.durability),
                id,
                listener,
                data_dir,
                internal_token: secrets.internal_token.clone(),
                max_clock_skew: opts.max_clock_skew,
            });
            match started {
                Ok(node) => nodes.push(node),
                Err(e) => {
                    let _ = stop_all(nodes).await;
                    return Err(e);
                }
            }
        }
        let addrs: Vec<NodeAddr> = nodes
            .iter()
            .map(|n| NodeAddr {
                id: n.id().to_owned(),
                address: n.addr().to_string(),
            })
            .collect();
        let front = async {
            reconcile_placement(store.as_ref(), &addrs, opts.vnodes).await?;
            // The gateway and the coordinator share one tier: a tenant change the coordinator
            // makes reaches the gateway at once.
            let redis = redis(opts.admission.redis_url.as_deref()).await?;
            let tenant_cache = shared_tenant_cache(redis.as_ref());
            let mut config = CoordinatorConfig::new(
                secrets.internal_token.clone(),
                secrets.key_secret.clone(),
                secrets.admin_key.clone(),
            );
            config.request_timeout = opts.request_timeout;
            config.tenant_cache = Some(tenant_cache.clone());
            config.idempotency = coordinator_records(redis.as_ref());
            let coordinator =
                CoordinatorNode::start(store.clone(), coordinator_listener, config).await?;
            let gateway = GatewayNode::start(
                store.clone(),
                gateway_listener,
                vec![coordinator.addr.to_string()],
                &secrets,
                opts.request_timeout,
                opts.edge,
                Admission {
                    tenant_cache: Some(tenant_cache),
                    ..opts.admission.clone()
                },
            )
            .await;
            match gateway {
                Ok(gateway) => Ok((coordinator, gateway)),
                Err(e) => {
                    coordinator.stop().await;
                    Err(e)
                }
            }
        };
        // Started nodes are stopped (flushed) before a failure is reported, never abandoned.
        let (coordinator, gateway) = match front.await {
            Ok(front) => front,
            Err(e) => {
                let _ = stop_all(nodes).await;
                return Err(e);
            }
        };
        Ok(LocalCluster {
            nodes,
            coordinator,
            gateway,
            store,
            secrets,
            _lock: lock,
        })
    }

    /// Stops every role gracefully, gateway first.
    /// Fails unless every storage node stopped cleanly.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.gateway.stop().await;
        self.coordinator.stop().await;
        stop_all(self.nodes).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use pairdb_core::version::{AppliedWrite, WriteRecord};
    use pairdb_core::{ApplyOutcome, StorageKey, Version};
    use pairdb_storage::engine::{
        EngineError, EngineStats, PageLimit, RangeDigest, ScanPage, TokenRange,
    };

    use super::*;

    /// A durable-claiming engine whose flush fails or succeeds on demand and records what
    /// `node.json` said when it was flushed.
    struct FlushProbe {
        inner: MemoryEngine,
        fail: bool,
        state_file: PathBuf,
        seen_at_flush: Mutex<Option<String>>,
    }

    impl StorageEngine for FlushProbe {
        fn get(&self, key: &StorageKey) -> Result<Option<Version>, EngineError> {
            self.inner.get(key)
        }
        fn apply(
            &self,
            key: &StorageKey,
            incoming: Version,
            record: Option<WriteRecord>,
        ) -> Result<(ApplyOutcome, Version), EngineError> {
            self.inner.apply(key, incoming, record)
        }
        fn applied(
            &self,
            key: &StorageKey,
            idem: &str,
        ) -> Result<Option<AppliedWrite>, EngineError> {
            self.inner.applied(key, idem)
        }
        fn scan(
            &self,
            range: &TokenRange,
            after: Option<&StorageKey>,
            limit: PageLimit,
        ) -> Result<ScanPage, EngineError> {
            self.inner.scan(range, after, limit)
        }
        fn digest(&self, range: &TokenRange) -> Result<RangeDigest, EngineError> {
            self.inner.digest(range)
        }
        fn delete_range(&self, range: &TokenRange) -> Result<u64, EngineError> {
            self.inner.delete_range(range)
        }
        fn set_repaired_until(&self, range: &TokenRange, until: u64) -> Result<(), EngineError> {
            self.inner.set_repaired_until(range, until)
        }
        fn flush(&self) -> Result<(), EngineError> {
            let file = std::fs::read_to_string(&self.state_file).unwrap_or_default();
            *self.seen_at_flush.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
            if self.fail {
                Err(EngineError::Closed)
            } else {
                Ok(())
            }
        }
        fn stats(&self) -> EngineStats {
            self.inner.stats()
        }
        fn is_durable(&self) -> bool {
            true
        }
    }

    async fn stop_with(fail: bool) -> (u64, u64, String) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let probe = Arc::new(FlushProbe {
            inner: MemoryEngine::new(APPLIED_KEY_TTL),
            fail,
            state_file: dir.path().join(pairdb_storage::node::NODE_FILE),
            seen_at_flush: Mutex::new(None),
        });
        let state =
            Arc::new(NodeState::open(dir.path(), "n1", true).unwrap_or_else(|e| panic!("{e}")));
        let before = state.incarnation();
        stop_cleanly(probe.clone(), Arc::clone(&state)).await;
        drop(state);
        let after = NodeState::open(dir.path(), "n1", true)
            .unwrap_or_else(|e| panic!("{e}"))
            .incarnation();
        let seen = probe
            .seen_at_flush
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        (before, after, seen)
    }

    #[tokio::test]
    async fn a_clean_stop_flushes_the_engine_before_recording_itself() {
        let (before, after, seen_at_flush) = stop_with(false).await;
        assert!(
            seen_at_flush.contains("\"clean_shutdown\": false"),
            "flushed after the stop was recorded clean: {seen_at_flush}"
        );
        assert_eq!(
            after, before,
            "a clean stop of a durable engine keeps the incarnation"
        );
    }

    #[tokio::test]
    async fn a_failed_flush_leaves_the_stop_unclean() {
        let (before, after, _) = stop_with(true).await;
        assert!(
            after > before,
            "an unflushed stop must start a new incarnation"
        );
    }
}
