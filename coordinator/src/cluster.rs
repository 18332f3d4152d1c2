//! The coordinator's view of the cluster: the current placement, its ring, and clients to every
//! storage node.
//!
//! A placement is pushed to every reachable storage node before the coordinator routes with it.
//! Storage nodes answer `ABORTED` to an older epoch than theirs — the coordinator then reloads the
//! placement from metadata — and `FAILED_PRECONDITION` to a newer one they were never pushed
//! (they were down), which the coordinator answers by pushing it and retrying once.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pairdb_core::{NodeAddr, Placement, Ring};
use pairdb_metadata::{MetadataStore, NodeRecord, NodeState};
use pairdb_proto::convert::placement_to_pb;
use pairdb_proto::storage::{HealthRequest, PushPlacementRequest};
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::config::CoordinatorConfig;
use crate::error::CoordinatorError;
use crate::pool::{NodeHandle, NodePool, StorageRpc};

/// A placement with its ring, built once.
#[derive(Debug)]
pub struct PlacementView {
    /// The placement.
    pub placement: Placement,
    /// Its ring.
    pub ring: Ring,
}

impl PlacementView {
    /// Builds the ring of `placement`.
    pub fn new(placement: Placement) -> Self {
        let ring = placement.ring();
        PlacementView { placement, ring }
    }

    /// The preference list of `key` for `tenant`: the first RF distinct nodes clockwise from the
    /// key's token. Fails with `TenantNotFound` for a tenant the placement does not know.
    pub fn preference_list(
        &self,
        tenant: &str,
        key: &[u8],
    ) -> Result<Vec<String>, CoordinatorError> {
        let rf = *self
            .placement
            .tenants
            .get(tenant)
            .ok_or(CoordinatorError::TenantNotFound)?;
        let token = pairdb_core::key::token(tenant, key);
        Ok(self
            .ring
            .preference_list(token, rf as usize)
            .into_iter()
            .map(str::to_owned)
            .collect())
    }
}

/// Why a storage RPC did not produce an answer.
#[derive(Debug)]
pub enum RpcError {
    /// The node answered with an error, or could not be reached.
    Status(Status),
    /// The node holds a newer placement than ours: refresh and retry.
    StaleEpoch,
    /// The deadline passed first; the outcome is unknown.
    Timeout,
    /// The node is not in the current placement.
    UnknownNode,
}

/// Placement, ring and node clients, shared by every request.
pub struct Cluster {
    store: Arc<dyn MetadataStore>,
    pool: NodePool,
    view: RwLock<Option<Arc<PlacementView>>>,
    refresh_lock: tokio::sync::Mutex<()>,
    config: CoordinatorConfig,
}

impl Cluster {
    /// A cluster view over `store` with no placement loaded yet (call [`refresh`](Self::refresh)).
    pub fn new(
        store: Arc<dyn MetadataStore>,
        config: CoordinatorConfig,
    ) -> Result<Arc<Self>, CoordinatorError> {
        let pool = NodePool::new(
            &config.internal_token,
            config.failure_threshold,
            config.connect_timeout,
        )
        .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        Ok(Arc::new(Cluster {
            store,
            pool,
            view: RwLock::new(None),
            refresh_lock: tokio::sync::Mutex::new(()),
            config,
        }))
    }

    /// The metadata store.
    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The node clients.
    pub fn pool(&self) -> &NodePool {
        &self.pool
    }

    /// The placement in use; `NotReady` until one is loaded.
    pub fn view(&self) -> Result<Arc<PlacementView>, CoordinatorError> {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| CoordinatorError::NotReady("no placement known yet".into()))
    }

    fn current_epoch(&self) -> Option<u64> {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|v| v.placement.epoch)
    }

    /// Writes the first placement of `nodes` if the metadata store holds none, and records the
    /// nodes. Does nothing when a placement exists.
    pub async fn bootstrap(
        &self,
        nodes: Vec<NodeAddr>,
        vnodes: u32,
    ) -> Result<(), CoordinatorError> {
        if self.store.placement().await?.is_some() {
            return Ok(());
        }
        for n in &nodes {
            self.store
                .upsert_node(&NodeRecord {
                    node_id: n.id.clone(),
                    address: n.address.clone(),
                    state: NodeState::Active,
                    created_at: pairdb_metadata::model::now_rfc3339(),
                })
                .await?;
        }
        let initial = Placement::initial(nodes, vnodes);
        if self.store.swap_placement(None, &initial).await? {
            tracing::info!(
                epoch = initial.epoch,
                nodes = initial.nodes.len(),
                "initial placement written"
            );
        }
        Ok(())
    }

    /// Reloads the placement from metadata; a newer one is pushed to every node, then used.
    pub async fn refresh(&self) -> Result<Arc<PlacementView>, CoordinatorError> {
        let _guard = self.refresh_lock.lock().await;
        let Some(placement) = self.store.placement().await? else {
            return Err(CoordinatorError::NotReady(
                "no placement in the metadata store".into(),
            ));
        };
        self.install_locked(placement).await;
        self.view()
    }

    /// Pushes `placement` to every node it lists (best effort: nodes that miss it get it when
    /// they next answer `FAILED_PRECONDITION`), then routes with it. A placement no newer than
    /// the one in use is ignored, so concurrent installs never step the epoch back.
    pub async fn install(&self, placement: Placement) {
        let _guard = self.refresh_lock.lock().await;
        self.install_locked(placement).await;
    }

    async fn install_locked(&self, placement: Placement) {
        if self.current_epoch().is_some_and(|e| e >= placement.epoch) {
            return;
        }
        self.pool.sync(&placement);
        let pushes = self
            .pool
            .all()
            .into_iter()
            .map(|h| {
                let p = placement.clone();
                async move { push(&h, &p).await }
            })
            .collect::<Vec<_>>();
        futures::future::join_all(pushes).await;
        tracing::info!(epoch = placement.epoch, "placement installed");
        *self.view.write().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::new(PlacementView::new(placement)));
    }

    /// Calls `node` with `f` before `deadline`, recording liveness. A node missing our epoch is
    /// pushed the placement and called once more.
    pub async fn rpc<T, F, Fut>(&self, node: &str, deadline: Instant, f: F) -> Result<T, RpcError>
    where
        F: Fn(StorageRpc) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let handle = self.pool.get(node).ok_or(RpcError::UnknownNode)?;
        let started = Instant::now();
        for attempt in 0..2 {
            match tokio::time::timeout_at(deadline, f(handle.client())).await {
                Err(_) => {
                    // A client's short deadline says nothing about the node; only a call that
                    // had a fair budget and still got no answer counts against it.
                    if deadline.saturating_duration_since(started) >= self.config.connect_timeout {
                        self.pool
                            .record_failure(&handle, &Status::deadline_exceeded("no answer"));
                    }
                    return Err(RpcError::Timeout);
                }
                Ok(Ok(resp)) => {
                    self.pool.record_success(&handle);
                    return Ok(resp.into_inner());
                }
                Ok(Err(s)) if s.code() == Code::FailedPrecondition && attempt == 0 => {
                    self.pool.record_success(&handle);
                    let view = self.view().map_err(|_| RpcError::Status(s))?;
                    push(&handle, &view.placement).await;
                }
                Ok(Err(s)) if s.code() == Code::Aborted => {
                    self.pool.record_success(&handle);
                    return Err(RpcError::StaleEpoch);
                }
                Ok(Err(s)) => {
                    self.pool.record_failure(&handle, &s);
                    return Err(RpcError::Status(s));
                }
            }
        }
        Err(RpcError::Status(Status::failed_precondition(
            "node refused the placement push",
        )))
    }

    /// Runs forever: probes down nodes every `probe_interval` and reloads the placement from
    /// metadata every few seconds. Spawn it; abort the task to stop.
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_refresh = Instant::now();
        loop {
            tick.tick().await;
            for h in self.pool.all().into_iter().filter(|h| !h.is_live()) {
                let mut client = h.client();
                let probe = tokio::time::timeout(
                    Duration::from_millis(500),
                    client.health(HealthRequest {}),
                );
                if let Ok(Ok(_)) = probe.await {
                    self.pool.record_success(&h);
                }
            }
            if last_refresh.elapsed() >= Duration::from_secs(2) {
                last_refresh = Instant::now();
                if let Err(e) = self.refresh().await {
                    tracing::debug!(error = %e, "placement refresh failed");
                }
            }
        }
    }
}

async fn push(handle: &NodeHandle, placement: &Placement) {
    let mut client = handle.client();
    let req = PushPlacementRequest {
        placement: Some(placement_to_pb(placement)),
    };
    match tokio::time::timeout(Duration::from_secs(1), client.push_placement(req)).await {
        Ok(Ok(_)) => {}
        Ok(Err(s)) => tracing::debug!(node = %handle.id, error = %s, "placement push failed"),
        Err(_) => tracing::debug!(node = %handle.id, "placement push timed out"),
    }
}
