//! The coordinator's view of the cluster: the current placement, its ring, clients to every
//! storage node, and the hints of replicas that missed writes.
//!
//! A placement is pushed to every reachable storage node before the coordinator routes with it.
//! Storage nodes refuse an older epoch than theirs as stale — the coordinator then reloads the
//! placement from metadata, once however many requests saw it ([`Cluster::refresh_past`]) — and
//! an epoch they were never pushed (they were down), which the coordinator answers by pushing it
//! and retrying once.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use pairdb_core::{NodeAddr, Placement, Replicas, Ring};
use pairdb_metadata::{MetadataStore, NodeRecord, NodeState};
use pairdb_proto::convert::{placement_to_pb, version_to_pb, write_record_to_pb};
use pairdb_proto::storage::{ApplyRequest, HealthRequest, PushPlacementRequest, RefusalReason};
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::calls::StorageCalls;
use crate::config::CoordinatorConfig;
use crate::error::CoordinatorError;
use crate::hints::Hints;
use crate::pool::{Failure, NodeHandle, NodePool, classify};

/// A placement with its rings, built once.
#[derive(Debug)]
pub struct PlacementView {
    /// The placement.
    pub placement: Placement,
    /// Its ring.
    pub ring: Ring,
    /// The ring its transition moves to, if one is in progress.
    pub next_ring: Option<Ring>,
}

impl PlacementView {
    /// Builds the rings of `placement`.
    pub fn new(placement: Placement) -> Self {
        let ring = placement.ring();
        let next_ring = placement.next_ring();
        PlacementView {
            placement,
            ring,
            next_ring,
        }
    }

    /// The replicas of `key` for `tenant`: the natural ones (which serve reads), and during a
    /// transition those afterwards (which writes must reach too). Fails with `TenantNotFound`
    /// for a tenant the placement does not know.
    pub fn replicas(&self, tenant: &str, key: &[u8]) -> Result<Replicas, CoordinatorError> {
        let natural = self.preference_list(tenant, key)?;
        let next = match (&self.next_ring, &self.placement.transition) {
            (Some(ring), Some(t)) => {
                let rf = t
                    .tenants
                    .get(tenant)
                    .or_else(|| self.placement.tenants.get(tenant))
                    .copied()
                    .unwrap_or(0);
                let token = pairdb_core::key::token(tenant, key);
                Some(
                    ring.preference_list(token, rf as usize)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                )
            }
            _ => None,
        };
        Ok(Replicas { natural, next })
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

/// Why a storage RPC did not produce an answer, and what that proves about its effect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The node refused the call before changing anything (its answer carried a refusal).
    #[error("refused by the node ({reason:?}): {}", status.message())]
    Refused {
        /// Why.
        reason: RefusalReason,
        /// The node's answer.
        status: Status,
    },
    /// The call provably never reached the node, or the node provably did not process it.
    #[error("not sent: {}", .0.message())]
    NotSent(Status),
    /// The node holds a newer placement than the call was routed with: refresh and retry.
    #[error("stale placement epoch (the node has {node_epoch})")]
    StaleEpoch {
        /// The node's epoch.
        node_epoch: u64,
    },
    /// The call failed in a way that does not tell whether it was applied.
    #[error("call failed: {}", .0.message())]
    Failed(Status),
    /// The deadline passed first; the outcome is unknown.
    #[error("no answer before the deadline")]
    Timeout,
    /// The node is not in the current placement.
    #[error("node not in the placement")]
    UnknownNode,
}

impl RpcError {
    /// True when the error proves the call changed nothing on the node.
    pub fn changed_nothing(&self) -> bool {
        matches!(
            self,
            RpcError::Refused { .. }
                | RpcError::NotSent(_)
                | RpcError::StaleEpoch { .. }
                | RpcError::UnknownNode
        )
    }
}

/// A placement refresh in flight, shared by every request that waits for it.
type Flight = Shared<BoxFuture<'static, Result<u64, String>>>;

/// The refresh in flight: started for requests that found epoch `stale` refused, so it serves
/// every request that found an epoch at or below `stale` refused.
struct FlightSlot {
    id: u64,
    stale: u64,
    flight: Flight,
}

/// Empties the flight slot when the refresh it holds ends, however it ends (a panicking reload
/// included), unless a newer flight took the slot meanwhile.
struct ClearFlight {
    cluster: Arc<Cluster>,
    id: u64,
}

impl Drop for ClearFlight {
    fn drop(&mut self) {
        let mut slot = self
            .cluster
            .flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|f| f.id == self.id) {
            *slot = None;
        }
    }
}

/// Placement, ring, node clients and hints, shared by every request.
pub struct Cluster {
    store: Arc<dyn MetadataStore>,
    pool: NodePool,
    view: RwLock<Option<Arc<PlacementView>>>,
    /// Serialises installs, so concurrent installs never step the epoch back.
    install_lock: tokio::sync::Mutex<()>,
    /// The refresh in flight, if any: joined rather than repeated.
    flight: Mutex<Option<FlightSlot>>,
    flights_started: std::sync::atomic::AtomicU64,
    hints: Hints,
    /// Bytes held by write pipelines in flight, in KiB permits.
    writes_in_flight: Arc<tokio::sync::Semaphore>,
    /// Bytes held by background read repairs in flight, in KiB permits: apart from the writes',
    /// so reads of large values cannot starve writes.
    repairs_in_flight: Arc<tokio::sync::Semaphore>,
    config: CoordinatorConfig,
    /// This coordinator's id among the live ones (epoch acks, migration leases).
    instance: String,
    /// Wakes the migration runner (a migration was started here).
    migrations: tokio::sync::Notify,
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
        let metrics = config.metrics.clone();
        let cluster = Arc::new(Cluster {
            store: pairdb_middleware::metered::MeteredMetadataStore::wrap(store, &config.metrics),
            pool,
            view: RwLock::new(None),
            install_lock: tokio::sync::Mutex::new(()),
            flight: Mutex::new(None),
            flights_started: std::sync::atomic::AtomicU64::new(0),
            hints: Hints::default(),
            writes_in_flight: Arc::new(tokio::sync::Semaphore::new(
                (config.max_in_flight_bytes / 1024).max(1),
            )),
            repairs_in_flight: Arc::new(tokio::sync::Semaphore::new(
                (config.max_in_flight_bytes / 1024).max(1),
            )),
            config,
            instance: format!("coordinator-{:016x}", rand::random::<u64>()),
            migrations: tokio::sync::Notify::new(),
        });
        metrics.register_collector(Box::new(crate::metrics::ClusterCollector(Arc::downgrade(
            &cluster,
        ))));
        Ok(cluster)
    }

    /// This coordinator's instance id: unique among the coordinators sharing a metadata store.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Wakes the migration runner at once (a migration was just started).
    pub fn kick_migrations(&self) {
        // Both job loops wait on it (migrations and repairs): wake them all.
        self.migrations.notify_waiters();
    }

    /// Waits until [`kick_migrations`](Self::kick_migrations) or `timeout`.
    pub async fn wait_for_migrations(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.migrations.notified()).await;
    }

    /// Records in the metadata store that this coordinator routes with the epoch it has
    /// installed, and answers the lowest epoch any live coordinator routes with.
    pub async fn ack_epoch(&self) -> Result<u64, CoordinatorError> {
        let epoch = self
            .current_epoch()
            .ok_or_else(|| CoordinatorError::not_ready("no placement known yet"))?;
        Ok(self
            .store
            .ack_epoch(&self.instance, epoch, EPOCH_ACK_TTL)
            .await?)
    }

    /// Pushes the placement in use to `node` (it refused a call for want of it).
    pub async fn push_to(&self, node: &str) {
        let (Ok(view), Some(handle)) = (self.view(), self.pool.get(node)) else {
            return;
        };
        push(&handle, &view.placement, Instant::now() + PUSH_TIMEOUT).await;
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

    /// Replicas that missed writes, waiting to be caught up.
    pub fn hints(&self) -> &Hints {
        &self.hints
    }

    /// The placement in use; `NotReady` until one is loaded.
    pub fn view(&self) -> Result<Arc<PlacementView>, CoordinatorError> {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| CoordinatorError::not_ready("no placement known yet"))
    }

    fn current_epoch(&self) -> Option<u64> {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
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
    pub async fn refresh(self: &Arc<Self>) -> Result<Arc<PlacementView>, CoordinatorError> {
        self.reload().await?;
        self.view()
    }

    /// Makes the view newer than `stale_epoch`, the epoch a node refused as stale (or that did
    /// not know a tenant): returns at once if it already is, else joins the reload in flight for
    /// an epoch at least as new — or starts one. However many requests saw epoch `stale_epoch`
    /// refused, that is one metadata read. Fails with `NotReady` when metadata holds nothing
    /// newer.
    pub async fn refresh_past(
        self: &Arc<Self>,
        stale_epoch: u64,
    ) -> Result<Arc<PlacementView>, CoordinatorError> {
        let flight = {
            let mut slot = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
            // Checked under the slot lock: a flight that just finished has installed its epoch.
            if let Ok(view) = self.view()
                && view.placement.epoch > stale_epoch
            {
                return Ok(view);
            }
            match slot.as_ref() {
                // A flight started for an epoch at least this new began after a node held a
                // newer one, so it reads metadata that has it.
                Some(f) if f.stale >= stale_epoch => f.flight.clone(),
                _ => {
                    let started = self.start_flight(stale_epoch);
                    let flight = started.flight.clone();
                    *slot = Some(started);
                    flight
                }
            }
        };
        flight.await.map_err(CoordinatorError::not_ready)?;
        let view = self.view()?;
        if view.placement.epoch > stale_epoch {
            Ok(view)
        } else {
            Err(CoordinatorError::not_ready(format!(
                "the metadata store holds no placement newer than epoch {stale_epoch}"
            )))
        }
    }

    /// Starts a reload as a task of its own (a caller giving up does not cancel it) and returns
    /// its slot entry. The task empties the slot when it ends.
    fn start_flight(self: &Arc<Self>, stale: u64) -> FlightSlot {
        let id = self
            .flights_started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cluster = Arc::clone(self);
        let task = tokio::spawn(async move {
            let _clear = ClearFlight {
                cluster: Arc::clone(&cluster),
                id,
            };
            cluster.reload().await.map_err(|e| e.to_string())
        });
        let flight: Flight = async move {
            task.await
                .unwrap_or_else(|e| Err(format!("placement refresh failed: {e}")))
        }
        .boxed()
        .shared();
        FlightSlot { id, stale, flight }
    }

    /// One metadata read: installs the stored placement if it is newer. Returns the epoch in use.
    async fn reload(&self) -> Result<u64, CoordinatorError> {
        let Some(placement) = self.store.placement().await? else {
            return Err(CoordinatorError::not_ready(
                "no placement in the metadata store",
            ));
        };
        self.install(placement).await;
        self.current_epoch()
            .ok_or_else(|| CoordinatorError::not_ready("no placement known yet"))
    }

    /// Pushes `placement` to every node it lists (best effort: nodes that miss it get it when
    /// they next refuse a call for want of it), then routes with it. A placement no newer than
    /// the one in use is ignored, so concurrent installs never step the epoch back.
    pub async fn install(&self, placement: Placement) {
        let _guard = self.install_lock.lock().await;
        if self.current_epoch().is_some_and(|e| e >= placement.epoch) {
            return;
        }
        self.pool.sync(&placement);
        let deadline = Instant::now() + PUSH_TIMEOUT;
        let pushes = self
            .pool
            .all()
            .into_iter()
            .map(|h| {
                let p = placement.clone();
                async move { push(&h, &p, deadline).await }
            })
            .collect::<Vec<_>>();
        futures::future::join_all(pushes).await;
        tracing::info!(epoch = placement.epoch, "placement installed");
        *self.view.write().unwrap_or_else(PoisonError::into_inner) =
            Some(Arc::new(PlacementView::new(placement)));
    }

    /// Calls `node` with `f` before `deadline`, recording liveness. A node refusing for want of
    /// our epoch is pushed the placement (within the deadline) and called once more.
    pub async fn rpc<T, F, Fut>(&self, node: &str, deadline: Instant, f: F) -> Result<T, RpcError>
    where
        F: Fn(StorageCalls) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let handle = self.pool.get(node).ok_or(RpcError::UnknownNode)?;
        let started = Instant::now();
        for attempt in 0..2 {
            let status = match tokio::time::timeout_at(deadline, f(handle.calls(deadline))).await {
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
                // The node gave up at the call's deadline: a timeout like the one above (it may
                // have run), said by a node that answers.
                Ok(Err(status))
                    if status.code() == Code::DeadlineExceeded
                        && std::error::Error::source(&status).is_none() =>
                {
                    self.pool.record_success(&handle);
                    return Err(RpcError::Timeout);
                }
                Ok(Err(status)) => status,
            };
            match classify(&status) {
                Failure::Refused(refusal) => {
                    self.pool.record_success(&handle);
                    match refusal.reason() {
                        RefusalReason::StaleEpoch => {
                            return Err(RpcError::StaleEpoch {
                                node_epoch: refusal.node_epoch,
                            });
                        }
                        RefusalReason::EpochNotInstalled if attempt == 0 => {
                            let view = self.view().map_err(|_| RpcError::Refused {
                                reason: refusal.reason(),
                                status: status.clone(),
                            })?;
                            push(&handle, &view.placement, deadline).await;
                        }
                        reason => return Err(RpcError::Refused { reason, status }),
                    }
                }
                Failure::NotSent => {
                    self.pool.record_failure(&handle, &status);
                    return Err(RpcError::NotSent(status));
                }
                Failure::Unknown => {
                    self.pool.record_failure(&handle, &status);
                    return Err(RpcError::Failed(status));
                }
            }
        }
        Err(RpcError::Refused {
            reason: RefusalReason::EpochNotInstalled,
            status: Status::failed_precondition("the node did not take the placement push"),
        })
    }

    /// Whether this coordinator can serve: metadata reachable, a placement known, and for every
    /// tenant enough live storage nodes that every key can meet the tenant's default level even
    /// if the nodes known down all hold replicas of it. `Err` explains what is missing.
    pub async fn readiness(&self) -> Result<(), String> {
        self.store.ping().await.map_err(|e| e.to_string())?;
        let view = self.view().map_err(|e| e.to_string())?;
        let down: Vec<&str> = view
            .placement
            .nodes
            .iter()
            .map(|n| n.id.as_str())
            .filter(|id| !self.pool.is_live(id))
            .collect();
        if down.is_empty() {
            return Ok(());
        }
        let tenants = self.store.list_tenants().await.map_err(|e| e.to_string())?;
        for tenant in tenants {
            let Some(&rf) = view.placement.tenants.get(&tenant.tenant_id) else {
                continue;
            };
            let rf = rf as usize;
            let required = tenant.default_consistency.required(rf);
            if rf.saturating_sub(down.len().min(rf)) < required {
                return Err(format!(
                    "storage nodes down ({}): tenant {} needs {required} of {rf} replicas at {}",
                    down.join(", "),
                    tenant.tenant_id,
                    tenant.default_consistency.as_str()
                ));
            }
        }
        Ok(())
    }

    /// Runs forever: health-checks every node every `probe_interval` (so liveness, and
    /// readiness, reflect reachability even when no request flows), replays hints to live
    /// nodes, and reloads the placement from metadata every few seconds. The three run side by
    /// side, each bounded in time, so a slow metadata store or a slow node stalls none of the
    /// others. Spawn it; abort the task to stop.
    pub async fn maintain(self: Arc<Self>) {
        tokio::join!(
            Arc::clone(&self).probe_loop(),
            Arc::clone(&self).hint_loop(),
            Arc::clone(&self).ack_loop(),
            crate::migration::run_migrations(Arc::clone(&self)),
            crate::repair::run_repairs(Arc::clone(&self)),
            self.refresh_loop(),
        );
    }

    /// Acknowledges the epoch in use every [`EPOCH_ACK_INTERVAL`], so migrations know when
    /// every live coordinator has moved on.
    async fn ack_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(EPOCH_ACK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.current_epoch().is_none() {
                continue;
            }
            match tokio::time::timeout(EPOCH_ACK_INTERVAL, self.ack_epoch()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot acknowledge the epoch"),
                Err(_) => tracing::debug!("epoch acknowledgement timed out"),
            }
        }
    }

    async fn probe_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let probes = self.pool.all().into_iter().map(|h| {
                let cluster = Arc::clone(&self);
                async move { cluster.probe(&h).await }
            });
            futures::future::join_all(probes).await;
        }
    }

    async fn hint_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.replay_hints().await;
        }
    }

    async fn refresh_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REFRESH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The metadata read is bounded; installing what it found is bounded by its pushes.
            match tokio::time::timeout(REFRESH_INTERVAL, self.store.placement()).await {
                Ok(Ok(Some(placement))) => self.install(placement).await,
                Ok(Ok(None)) => tracing::debug!("no placement in the metadata store yet"),
                Ok(Err(e)) => tracing::debug!(error = %e, "placement refresh failed"),
                Err(_) => tracing::warn!("placement refresh timed out: metadata store slow"),
            }
        }
    }

    /// One health check of `node`, counted like any call.
    async fn probe(&self, node: &NodeHandle) {
        let mut client = node.client();
        match tokio::time::timeout(PROBE_TIMEOUT, client.health(HealthRequest {})).await {
            Ok(Ok(health)) => {
                self.pool.record_success(node);
                let views = health
                    .into_inner()
                    .peers
                    .into_iter()
                    .map(|p| (p.node_id, p.up))
                    .collect();
                self.pool.record_views(&node.id, views);
            }
            Ok(Err(status)) => self.pool.record_failure(node, &status),
            Err(_) => self
                .pool
                .record_failure(node, &Status::deadline_exceeded("health probe timed out")),
        }
    }

    /// Sends waiting hints to the nodes that are live — a batch per node per round, nodes side
    /// by side, each bounded by the replication deadline. A hint whose node is no longer a
    /// replica of its key is dropped, and so is one refused for good (a malformed request); one
    /// that fails otherwise — unreachable, a transient refusal — goes back, with its age.
    async fn replay_hints(&self) {
        let Ok(view) = self.view() else {
            return;
        };
        let deadline = Instant::now() + self.config.replication_timeout;
        let rounds = self
            .hints
            .targets()
            .into_iter()
            .filter(|node| self.pool.is_live(node))
            .map(|node| {
                let view = Arc::clone(&view);
                async move { self.replay_to(&node, &view, deadline).await }
            });
        futures::future::join_all(rounds).await;
    }

    async fn replay_to(&self, node: &str, view: &PlacementView, deadline: Instant) {
        let mut batch = self.hints.take(node, HINT_BATCH).into_iter();
        while let Some(queued) = batch.next() {
            let hint = &queued.hint;
            let still_replica = view
                .replicas(&hint.tenant, &hint.key)
                .is_ok_and(|r| r.all().contains(&hint.node));
            if !still_replica {
                continue;
            }
            let request = ApplyRequest {
                epoch: view.placement.epoch,
                key: Some(pairdb_proto::storage::KeyRef {
                    namespace: hint.tenant.clone(),
                    key: hint.key.clone(),
                }),
                version: Some(version_to_pb(&hint.version)),
                record: hint.record.as_ref().map(write_record_to_pb),
            };
            let result = self
                .rpc(&hint.node, deadline, |mut c| {
                    let request = request.clone();
                    async move { c.apply(request).await }
                })
                .await;
            match result {
                Ok(_) => tracing::debug!(node, "hint replayed"),
                Err(RpcError::Refused {
                    reason:
                        reason @ (RefusalReason::InvalidArgument | RefusalReason::IdempotencyKeyReused),
                    ..
                }) => {
                    tracing::warn!(node, ?reason, "hint refused for good; dropped");
                }
                Err(error) => {
                    // Unreachable again, or refused for now: keep this hint and the rest of the
                    // batch for a later round.
                    tracing::debug!(node, %error, "hint replay failed; kept");
                    self.hints.requeue(queued);
                    batch.for_each(|rest| self.hints.requeue(rest));
                    break;
                }
            }
        }
    }

    /// Reserves room for a write pipeline holding `bytes`, or `None` when the write budget
    /// ([`CoordinatorConfig::max_in_flight_bytes`]) is spent — the caller then refuses the write
    /// rather than hold ever more memory.
    pub fn reserve_write(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        reserve(&self.writes_in_flight, bytes)
    }

    /// Reserves room for a background read repair holding `bytes`, or `None` when the repair
    /// budget (as large as the write budget, and apart from it) is spent.
    pub fn reserve_repair(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        reserve(&self.repairs_in_flight, bytes)
    }

    /// Bytes held by write pipelines in flight (rounded up to KiB per pipeline).
    pub fn writes_in_flight_bytes(&self) -> usize {
        let total = (self.config.max_in_flight_bytes / 1024).max(1);
        total.saturating_sub(self.writes_in_flight.available_permits()) * 1024
    }
}

/// How long a coordinator's epoch acknowledgement lasts: one that stops acknowledging (it died)
/// holds migrations back at most this long.
const EPOCH_ACK_TTL: Duration = Duration::from_secs(10);
/// How often a coordinator acknowledges its epoch.
const EPOCH_ACK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a placement push may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Hints replayed per node per maintenance round.
const HINT_BATCH: usize = 64;
/// How often the placement is reloaded from metadata, and how long a reload may take.
const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

fn reserve(
    budget: &Arc<tokio::sync::Semaphore>,
    bytes: usize,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let permits = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    Arc::clone(budget).try_acquire_many_owned(permits).ok()
}

/// Pushes `placement` to `handle`, giving up at `deadline` (and after [`PUSH_TIMEOUT`]).
async fn push(handle: &NodeHandle, placement: &Placement, deadline: Instant) {
    let mut client = handle.client();
    let req = PushPlacementRequest {
        placement: Some(placement_to_pb(placement)),
    };
    let deadline = deadline.min(Instant::now() + PUSH_TIMEOUT);
    match tokio::time::timeout_at(deadline, client.push_placement(req)).await {
        Ok(Ok(_)) => {}
        Ok(Err(s)) => tracing::debug!(node = %handle.id, error = %s, "placement push failed"),
        Err(_) => tracing::debug!(node = %handle.id, "placement push timed out"),
    }
}
