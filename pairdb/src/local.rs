//! Starting pairdb's roles inside this process, on bound listeners: what `pairdb dev` runs and
//! what the cluster tests drive.
//!
//! Each storage node runs on a runtime of its own, on its own thread, so [`StorageNode::kill`]
//! drops it abruptly — listener and every open connection at once — the way a crashed process
//! would, while [`StorageNode::stop`] shuts it down gracefully.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use pairdb_coordinator::CoordinatorConfig;
use pairdb_coordinator::cluster::Cluster;
use pairdb_core::{NodeAddr, Placement};
use pairdb_metadata::{MetadataStore, NodeRecord, NodeState as StoredNodeState, RateLimit};
use pairdb_storage::engine::StorageEngine;
use pairdb_storage::memory::MemoryEngine;
use pairdb_storage::node::NodeState;
use pairdb_storage::service::StorageService;
use tokio::sync::oneshot;

use crate::cli::EngineKind;
use crate::secrets::Secrets;
use crate::shutdown::Shutdown;

/// How long a storage node remembers the idempotency keys it applied.
pub const APPLIED_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Opens the metadata store at `url` (`sqlite://…`).
pub async fn open_metadata(url: &str) -> anyhow::Result<Arc<dyn MetadataStore>> {
    if url.starts_with("sqlite:") {
        let store = pairdb_metadata::sqlite::SqliteStore::open(url)
            .await
            .with_context(|| format!("opening metadata store {url}"))?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        bail!("PostgreSQL metadata is not available in this release; use a sqlite:// URL")
    } else {
        bail!("unsupported metadata URL {url:?}: expected sqlite://PATH")
    }
}

/// Builds the engine of `kind`.
pub fn open_engine(kind: EngineKind, _data_dir: &Path) -> Arc<dyn StorageEngine> {
    match kind {
        EngineKind::Memory => Arc::new(MemoryEngine::new(APPLIED_KEY_TTL)),
    }
}

/// A storage node running on its own runtime and thread.
pub struct StorageNode {
    /// Node id.
    pub id: String,
    /// Bound gRPC address.
    pub addr: SocketAddr,
    /// Its engine (shared with the running service).
    pub engine: Arc<dyn StorageEngine>,
    /// Its identity and newest placement.
    pub state: Arc<NodeState>,
    graceful: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StorageNode {
    /// Starts node `id` with its data in `data_dir`, serving on `listen` (port 0: any free port).
    pub fn start(
        id: &str,
        listen: SocketAddr,
        data_dir: &Path,
        engine: Arc<dyn StorageEngine>,
        internal_token: &str,
    ) -> anyhow::Result<StorageNode> {
        let state = Arc::new(
            NodeState::open(data_dir, id, engine.is_durable())
                .with_context(|| format!("opening storage node {id} in {}", data_dir.display()))?,
        );
        let service =
            StorageService::new(id, engine.clone(), state.clone(), internal_token.to_owned());
        let node_state = state.clone();
        let std_listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("binding storage node {id} to {listen}"))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (graceful_tx, graceful_rx) = oneshot::channel::<()>();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let name = format!("storage-{id}");
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build storage node runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot register storage listener");
                        return;
                    }
                };
                let server = pairdb_storage::server::run(service, listener, async {
                    let _ = graceful_rx.await;
                });
                tokio::select! {
                    r = server => {
                        if let Err(e) = r {
                            tracing::error!(error = %e, "storage node stopped with an error");
                        }
                        if let Err(e) = state.mark_clean_shutdown() {
                            tracing::error!(error = %e, "cannot record clean shutdown");
                        }
                    }
                    _ = kill_rx => {}
                }
            });
            // Dropping the runtime drops every connection task: the node is gone at once.
            drop(rt);
        })?;
        Ok(StorageNode {
            id: id.to_owned(),
            addr,
            engine,
            state: node_state,
            graceful: Some(graceful_tx),
            kill: Some(kill_tx),
            thread: Some(thread),
        })
    }

    /// Drops the node abruptly, as a crash would: the listener and every connection close now.
    pub fn kill(mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops the node gracefully: in-flight calls finish first.
    pub fn stop(mut self) {
        if let Some(g) = self.graceful.take() {
            let _ = g.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StorageNode {
    fn drop(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
    }
}

/// Makes the stored placement list exactly `nodes` at their current addresses: writes the first
/// placement if there is none, or a new epoch if addresses moved (node ids must be unchanged:
/// adding and removing nodes is a membership change, not a restart).
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
                let mut old: Vec<&str> = p.nodes.iter().map(|n| n.id.as_str()).collect();
                let mut new: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
                old.sort_unstable();
                new.sort_unstable();
                if old != new {
                    bail!(
                        "the data dir holds a cluster of {} storage nodes ({}); start with the same --nodes",
                        old.len(),
                        old.join(", ")
                    );
                }
                if nodes
                    .iter()
                    .all(|n| p.address_of(&n.id) == Some(n.address.as_str()))
                {
                    return Ok(());
                }
                Placement {
                    epoch: p.epoch + 1,
                    nodes: nodes.to_vec(),
                    ..p.clone()
                }
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
    /// Starts a coordinator over `store` on `listen`, loading the placement first.
    pub async fn start(
        store: Arc<dyn MetadataStore>,
        listen: SocketAddr,
        config: CoordinatorConfig,
    ) -> anyhow::Result<CoordinatorNode> {
        let cluster = Cluster::new(store, config)?;
        if let Err(e) = cluster.refresh().await {
            tracing::warn!(error = %e, "no placement yet; the coordinator will retry");
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding coordinator to {listen}"))?;
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

/// A REST gateway running on the current runtime.
pub struct GatewayNode {
    /// Bound HTTP address.
    pub addr: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl GatewayNode {
    /// Starts a gateway on `listen` in front of `coordinators`.
    pub async fn start(
        store: Arc<dyn MetadataStore>,
        listen: SocketAddr,
        coordinators: Vec<String>,
        secrets: &Secrets,
        request_timeout: Duration,
    ) -> anyhow::Result<GatewayNode> {
        let mut config = pairdb_gateway::GatewayConfig::new(
            coordinators,
            secrets.internal_token.clone(),
            secrets.key_secret.clone(),
            secrets.admin_key.clone(),
        );
        config.request_timeout = request_timeout;
        let router = pairdb_gateway::server::build_router(config, store).await?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the gateway to {listen}"))?;
        let addr = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let wait = shutdown.wait();
        let task = tokio::spawn(async move {
            if let Err(e) = pairdb_gateway::server::serve(listener, router, wait).await {
                tracing::error!(error = %e, "gateway stopped with an error");
            }
        });
        Ok(GatewayNode {
            addr,
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
}

/// A whole cluster in this process: storage nodes, one coordinator, one gateway.
pub struct LocalCluster {
    /// Storage nodes, `node-1` … `node-N`.
    pub nodes: Vec<StorageNode>,
    /// The coordinator.
    pub coordinator: CoordinatorNode,
    /// The gateway.
    pub gateway: GatewayNode,
    /// The metadata store.
    pub store: Arc<dyn MetadataStore>,
    /// The secrets in use.
    pub secrets: Secrets,
}

impl LocalCluster {
    /// Starts every role on loopback with `secrets`.
    pub async fn start(opts: &LocalOptions, secrets: Secrets) -> anyhow::Result<LocalCluster> {
        std::fs::create_dir_all(&opts.data_dir)
            .with_context(|| format!("creating {}", opts.data_dir.display()))?;
        let url = match &opts.metadata_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", opts.data_dir.join("metadata.db").display()),
        };
        let store = open_metadata(&url).await?;
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut nodes = Vec::with_capacity(opts.nodes as usize);
        for i in 1..=opts.nodes {
            let id = format!("node-{i}");
            let dir = opts.data_dir.join(&id);
            let engine = open_engine(opts.engine, &dir);
            nodes.push(StorageNode::start(
                &id,
                loopback,
                &dir,
                engine,
                &secrets.internal_token,
            )?);
        }
        let addrs: Vec<NodeAddr> = nodes
            .iter()
            .map(|n| NodeAddr {
                id: n.id.clone(),
                address: n.addr.to_string(),
            })
            .collect();
        reconcile_placement(store.as_ref(), &addrs, opts.vnodes).await?;
        let mut config = CoordinatorConfig::new(
            secrets.internal_token.clone(),
            secrets.key_secret.clone(),
            secrets.admin_key.clone(),
        );
        config.request_timeout = opts.request_timeout;
        let coordinator = CoordinatorNode::start(store.clone(), loopback, config).await?;
        let gateway = GatewayNode::start(
            store.clone(),
            opts.http,
            vec![coordinator.addr.to_string()],
            &secrets,
            opts.request_timeout,
        )
        .await?;
        Ok(LocalCluster {
            nodes,
            coordinator,
            gateway,
            store,
            secrets,
        })
    }

    /// Stops every role gracefully, gateway first.
    pub async fn stop(self) {
        self.gateway.stop().await;
        self.coordinator.stop().await;
        for n in self.nodes {
            tokio::task::spawn_blocking(move || n.stop()).await.ok();
        }
    }
}
