//! Running migrations: claim one, drive it through its phases, record progress under a
//! [`Lease`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pairdb_core::Placement;
use pairdb_core::movement::{Plan, RangeMove};
use pairdb_metadata::{MetadataError, NodeRecord, NodeState};
use pairdb_proto::storage::TokenRange;
use tokio::time::Instant;

use super::stream::{Pacer, Streamed, drop_ranges, stream_range};
use super::{Change, JOB_KIND, Migration, Phase, ranges_by_node};
use crate::cluster::Cluster;
use crate::error::CoordinatorError;
use crate::jobs::{self, Lease};

/// How often unfinished migrations are looked for (a migration started here is picked up at
/// once).
const POLL: Duration = Duration::from_secs(2);
/// How often finished jobs past [`jobs::KEEP_FINISHED`] per kind are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Progress is recorded at least this often while a phase runs.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Wait before retrying a range or a step that failed.
const RETRY: Duration = Duration::from_millis(500);
/// How long a cancelled migration keeps asking a live node to drop what it received before it
/// records the node as undropped and finishes.
const ROLLBACK_PATIENCE: Duration = Duration::from_secs(60);
/// How long a rollback keeps asking a node seen down.
const DOWN_PATIENCE: Duration = Duration::from_secs(10);

/// Why a run stopped before the migration finished.
enum Stop {
    /// Another coordinator holds the migration now.
    LeaseLost,
    /// The metadata store failed; try again later.
    Store(CoordinatorError),
}

impl From<CoordinatorError> for Stop {
    fn from(e: CoordinatorError) -> Self {
        Stop::Store(e)
    }
}

impl From<MetadataError> for Stop {
    fn from(e: MetadataError) -> Self {
        Stop::Store(e.into())
    }
}

/// Runs forever: finds unfinished migrations, claims one whose lease is free, and drives it to
/// its end. Part of the coordinator's maintenance ([`Cluster::maintain`]).
pub async fn run_migrations(cluster: Arc<Cluster>) {
    let mut pruned: Option<Instant> = None;
    loop {
        if let Err(error) = run_pending(&cluster).await {
            tracing::debug!(%error, "cannot look for migrations");
        }
        if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned = Some(Instant::now());
            match jobs::prune(cluster.store().as_ref()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "old finished jobs deleted"),
                Err(error) => tracing::warn!(%error, "cannot prune finished jobs"),
            }
        }
        cluster.wait_for_migrations(POLL).await;
    }
}

async fn run_pending(cluster: &Arc<Cluster>) -> Result<(), CoordinatorError> {
    jobs::each_unfinished(cluster, JOB_KIND, |record| {
        let cluster = Arc::clone(cluster);
        async move {
            let migration = match Migration::from_record(&record) {
                Ok(m) => m,
                Err(error) => {
                    tracing::error!(migration = %record.id, %error, "unreadable migration skipped");
                    return Ok(());
                }
            };
            let lease = Lease::new(cluster, record);
            let mut run = Run {
                lease: Arc::clone(&lease),
                migration,
                saved: Instant::now(),
            };
            // Claims it, or learns that another coordinator holds it.
            match run.save().await {
                Ok(()) => {}
                Err(Stop::LeaseLost) => return Ok(()),
                Err(Stop::Store(e)) => return Err(e),
            }
            tracing::info!(migration = %run.migration.id, phase = run.migration.phase.as_str(), "running migration");
            match lease.holding(run.drive()).await {
                Ok(()) => Ok(()),
                Err(Stop::LeaseLost) => {
                    tracing::warn!(migration = %run.migration.id, "another coordinator took the migration over");
                    Ok(())
                }
                Err(Stop::Store(e)) => Err(e),
            }
        }
    })
    .await
}

/// One coordinator's run of one migration.
struct Run {
    lease: Arc<Lease>,
    migration: Migration,
    saved: Instant,
}

impl Run {
    fn cluster(&self) -> &Arc<Cluster> {
        self.lease.cluster()
    }

    /// Records the migration as it is, renewing this coordinator's lease.
    async fn save(&mut self) -> Result<(), Stop> {
        let record = self.migration.record()?;
        if self.lease.save(record, None).await? {
            self.saved = Instant::now();
            Ok(())
        } else {
            Err(Stop::LeaseLost)
        }
    }

    async fn save_now_and_then(&mut self) -> Result<(), Stop> {
        if !self.lease.held() {
            return Err(Stop::LeaseLost);
        }
        if self.saved.elapsed() >= SAVE_EVERY {
            self.save().await
        } else {
            Ok(())
        }
    }

    async fn drive(&mut self) -> Result<(), Stop> {
        loop {
            match self.migration.phase {
                Phase::Streaming => self.stream().await?,
                Phase::Completing => self.complete().await?,
                Phase::Dropping => self.drop_old().await?,
                Phase::RollingBack => self.roll_back().await?,
                Phase::Done | Phase::Failed | Phase::Cancelled => return Ok(()),
            }
        }
    }

    /// Whether placement `p` still carries this migration's transition.
    fn ours(&self, p: &Placement) -> bool {
        carries(p, &self.migration.id)
    }

    /// Whether the transition is still in force — false once an administrator cancelled the
    /// migration. The placement it runs under is noted as it changes (tenants come and go), so
    /// a rollback knows every range the new replicas received.
    async fn in_force(&mut self) -> Result<bool, Stop> {
        let view = self.cluster().view()?;
        let stored;
        let placement = if self.ours(&view.placement) {
            &view.placement
        } else {
            // The local view may lag: the metadata store decides.
            stored = match self.cluster().store().placement().await? {
                Some(p) if self.ours(&p) => p,
                _ => return Ok(false),
            };
            &stored
        };
        let newer = self
            .migration
            .from
            .as_ref()
            .is_none_or(|f| f.epoch < placement.epoch);
        if newer {
            self.migration.from = Some(Placement::clone(placement));
        }
        Ok(true)
    }

    /// Phase 1: streams every range from `ranges_done` on, then moves to completing.
    async fn stream(&mut self) -> Result<(), Stop> {
        let mut view = self.cluster().view()?;
        if !self.ours(&view.placement) {
            // This coordinator may not have caught up with the placement that started it.
            view = self.cluster().refresh().await?;
        }
        if !self.in_force().await? {
            return self.cancelled().await;
        }
        let from = view.ring.clone();
        let to = view.next_ring.clone().unwrap_or_else(|| view.ring.clone());
        let tenants = self.migration.tenants.clone();
        let plan = tokio::task::spawn_blocking(move || Plan::new(&from, &to, &tenants))
            .await
            .map_err(|e| CoordinatorError::Internal(format!("planning failed: {e}")))?;
        if plan.len() as u64 != self.migration.ranges_total {
            return self
                .fail("the planned ranges changed since the migration started")
                .await;
        }
        let mut pacer = Pacer::new(self.cluster().config().stream_bytes_per_sec);
        let started = Instant::now();
        let first = self.migration.bytes_streamed;
        while let Some(mv) = plan.get(self.migration.ranges_done as usize) {
            if !self.in_force().await? {
                return self.cancelled().await;
            }
            let mut streamed = Streamed::default();
            let lease = Arc::clone(&self.lease);
            let (cluster, id) = (Arc::clone(self.cluster()), self.migration.id.clone());
            let outcome = stream_range(self.cluster(), &mv, &mut pacer, &mut |s| {
                streamed.keys += s.keys;
                streamed.bytes += s.bytes;
                // Stops at a lost lease, and early at a cancel this coordinator has seen.
                lease.held() && cluster.view().is_ok_and(|v| carries(&v.placement, &id))
            })
            .await;
            self.migration.keys_streamed += streamed.keys;
            self.migration.bytes_streamed += streamed.bytes;
            if !self.lease.held() {
                return Err(Stop::LeaseLost);
            }
            match outcome {
                Ok(()) => {
                    self.migration.ranges_done += 1;
                    self.migration.error = None;
                    self.save_now_and_then().await?;
                }
                Err(error) => {
                    tracing::debug!(migration = %self.migration.id, %error, "range not streamed; retrying");
                    self.migration.error = Some(error);
                    self.save().await?;
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let bytes = self.migration.bytes_streamed - first;
        tracing::info!(
            migration = %self.migration.id,
            keys = self.migration.keys_streamed,
            bytes,
            mib_per_sec = bytes as f64 / secs / f64::from(1u32 << 20),
            "every range streamed"
        );
        self.migration.phase = Phase::Completing;
        self.save().await
    }

    /// Phase 2: installs the transition's placement, recorded in the same transaction as the
    /// step to dropping (with what to drop).
    async fn complete(&mut self) -> Result<(), Stop> {
        let store = Arc::clone(self.cluster().store());
        loop {
            let Some(current) = store.placement().await? else {
                return self.fail("the placement is gone").await;
            };
            if current.transition.is_none() {
                // Cancelled after the last range streamed, before it took effect.
                return self.cancelled().await;
            }
            let ours = self.ours(&current);
            let Some(next) = current.complete().filter(|_| ours) else {
                return self
                    .fail("the placement carries another migration's transition")
                    .await;
            };
            let mut after = self.migration.clone();
            after.phase = Phase::Dropping;
            after.completed_epoch = Some(next.epoch);
            after.from = Some(current.clone());
            let saved = self
                .lease
                .save(after.record()?, Some((current.epoch, &next)))
                .await;
            match saved {
                Ok(true) => {
                    self.migration = after;
                    self.saved = Instant::now();
                    if let Change::AddNode { node } = &self.migration.change {
                        let record = NodeRecord {
                            node_id: node.id.clone(),
                            address: node.address.clone(),
                            state: NodeState::Active,
                            created_at: pairdb_metadata::model::now_rfc3339(),
                        };
                        if let Err(error) = store.upsert_node(&record).await {
                            tracing::warn!(node = %node.id, %error, "cannot record the node active");
                        }
                    }
                    tracing::info!(migration = %self.migration.id, epoch = next.epoch, "placement moved");
                    self.cluster().install(next).await;
                    return Ok(());
                }
                Ok(false) => return Err(Stop::LeaseLost),
                // A tenant was created meanwhile: read the placement again.
                Err(MetadataError::PlacementConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Phase 3: once every live coordinator routes with the completed epoch, the replicas that
    /// lost ranges drop them — every member, retried until it answers (a member that keeps
    /// data it no longer serves could bring back deleted keys if it ever owned them again).
    async fn drop_old(&mut self) -> Result<(), Stop> {
        let Some(epoch) = self.migration.completed_epoch else {
            return self.fail("no completed epoch recorded").await;
        };
        if let Change::DeleteTenant { tenant } = &self.migration.change {
            // Idempotent: finishes a deletion whose coordinator stopped right after starting it.
            self.cluster().store().delete_tenant(tenant).await?;
        }
        self.await_routing(epoch).await?;
        let drops = self.drops().await?;
        for (node, ranges) in drops {
            self.drop_on(&node, ranges, None).await?;
        }
        self.migration.error = None;
        self.migration.phase = Phase::Done;
        self.save().await?;
        tracing::info!(migration = %self.migration.id, "migration done");
        Ok(())
    }

    /// Records that the migration was cancelled (its transition is gone from the placement):
    /// what its new replicas received is dropped next.
    async fn cancelled(&mut self) -> Result<(), Stop> {
        let Some(current) = self.cluster().store().placement().await? else {
            return self.fail("the placement is gone").await;
        };
        tracing::warn!(migration = %self.migration.id, epoch = current.epoch, "migration cancelled; rolling back");
        if let Some(from) = self.migration.from.as_mut() {
            // Tenants created since the placement was last noted wrote to the pending replicas
            // too: their ranges are dropped as well.
            for (tenant, rf) in &current.tenants {
                if !from.tenants.contains_key(tenant) {
                    *from = from.with_tenant(tenant, *rf);
                }
            }
        }
        self.migration.phase = Phase::RollingBack;
        self.migration.completed_epoch = Some(current.epoch);
        self.migration.error = None;
        self.save().await?;
        if let Change::RemoveNode { node_id } = &self.migration.change
            && let Some(address) = current.address_of(node_id)
        {
            let record = NodeRecord {
                node_id: node_id.clone(),
                address: address.to_owned(),
                state: NodeState::Active,
                created_at: pairdb_metadata::model::now_rfc3339(),
            };
            if let Err(error) = self.cluster().store().upsert_node(&record).await {
                tracing::warn!(node = %node_id, %error, "cannot record the node active again");
            }
        }
        Ok(())
    }

    /// After a cancel: once every live coordinator routes without the transition, the nodes
    /// that were only pending replicas drop what they received (streamed ranges and the writes
    /// sent to them meanwhile). A node that is down, or keeps failing for
    /// [`ROLLBACK_PATIENCE`], is listed in `undropped` instead of holding the cancel up.
    async fn roll_back(&mut self) -> Result<(), Stop> {
        let Some(epoch) = self.migration.completed_epoch else {
            return self.fail("no epoch recorded for the cancel").await;
        };
        self.await_routing(epoch).await?;
        let drops = self.drops().await?;
        for (node, ranges) in drops {
            self.drop_on(&node, ranges, Some(ROLLBACK_PATIENCE)).await?;
        }
        self.migration.error = None;
        self.migration.phase = Phase::Cancelled;
        self.save().await?;
        tracing::info!(migration = %self.migration.id, undropped = ?self.migration.undropped, "migration cancelled and rolled back");
        Ok(())
    }

    /// Waits until every live coordinator routes with `epoch` or newer.
    async fn await_routing(&mut self, epoch: u64) -> Result<(), Stop> {
        loop {
            let lowest = self.cluster().ack_epoch().await?;
            if lowest >= epoch {
                self.migration.error = None;
                return Ok(());
            }
            self.migration.error = Some(format!(
                "waiting for every coordinator to route with epoch {epoch} (lowest: {lowest})"
            ));
            self.save_now_and_then().await?;
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Tells `node` to drop `ranges`, retrying until it answers — or, with `patience`, until
    /// it has failed for that long (or for [`DOWN_PATIENCE`] if it is seen down then), when it
    /// is recorded in `undropped`. A node that left the ring takes its data with it.
    async fn drop_on(
        &mut self,
        node: &str,
        ranges: Vec<TokenRange>,
        patience: Option<Duration>,
    ) -> Result<(), Stop> {
        let started = Instant::now();
        loop {
            let member = self
                .cluster()
                .view()
                .is_ok_and(|v| v.placement.address_of(node).is_some());
            if !member {
                break;
            }
            let waited = started.elapsed();
            let give_up = patience.is_some_and(|p| {
                waited >= p || (waited >= DOWN_PATIENCE && !self.cluster().pool().is_live(node))
            });
            if give_up {
                tracing::warn!(migration = %self.migration.id, %node, "node not told to drop its ranges");
                if !self.migration.undropped.iter().any(|n| n == node) {
                    self.migration.undropped.push(node.to_owned());
                }
                break;
            }
            match drop_ranges(self.cluster(), node, ranges.clone()).await {
                Ok(dropped) => {
                    tracing::info!(migration = %self.migration.id, %node, dropped, "ranges dropped");
                    break;
                }
                Err(error) => {
                    tracing::debug!(migration = %self.migration.id, %node, %error, "cannot drop ranges yet");
                    self.migration.error =
                        Some(format!("cannot drop ranges on {node} yet: {error}"));
                    self.save_now_and_then().await?;
                    tokio::time::sleep(RETRY * 4).await;
                }
            }
        }
        self.save_now_and_then().await
    }

    /// The ranges each node drops: those it held before the change and not after, all of a
    /// deleted tenant's, or — rolling back a cancel — those it received as a pending replica
    /// only. Planned off the async workers.
    async fn drops(&self) -> Result<BTreeMap<String, Vec<TokenRange>>, Stop> {
        let Some(from) = self.migration.from.clone() else {
            return Ok(BTreeMap::new());
        };
        let change = self.migration.change.clone();
        let rolling_back = self.migration.phase == Phase::RollingBack;
        let planned = tokio::task::spawn_blocking(move || {
            if let Change::DeleteTenant { tenant } = &change {
                let whole = TokenRange {
                    namespace: tenant.clone(),
                    start: 0,
                    end: u64::MAX,
                };
                return from
                    .all_nodes()
                    .into_iter()
                    .map(|n| (n.id, vec![whole.clone()]))
                    .collect();
            }
            let Some(to) = from.next_ring() else {
                return BTreeMap::new();
            };
            // Every tenant the placement had at the change, not only those that streamed: a
            // tenant created during the migration wrote to the old replicas too. A rollback
            // drops from the nodes that were arriving; a completed change, from those leaving.
            let plan = Plan::new(&from.ring(), &to, &tenants_of(&from));
            if rolling_back {
                ranges_by_node(&plan, RangeMove::arriving)
            } else {
                ranges_by_node(&plan, RangeMove::leaving)
            }
        })
        .await
        .map_err(|e| CoordinatorError::Internal(format!("planning drops failed: {e}")))?;
        Ok(planned)
    }

    /// Gives up: the transition (if still in force) is abandoned in the same transaction that
    /// records the failure, so writes stop needing both replica sets and new migrations may
    /// start.
    async fn fail(&mut self, why: &str) -> Result<(), Stop> {
        tracing::error!(migration = %self.migration.id, why, "migration failed");
        self.migration.error = Some(why.to_owned());
        self.migration.phase = Phase::Failed;
        let store = Arc::clone(self.cluster().store());
        loop {
            let current = store.placement().await?;
            let rollback = current.as_ref().and_then(|p| {
                self.ours(p)
                    .then(|| p.abandon().map(|next| (p.epoch, next)))
                    .flatten()
            });
            let record = self.migration.record()?;
            let placement = rollback.as_ref().map(|(epoch, next)| (*epoch, next));
            match self.lease.save(record, placement).await {
                Ok(true) => {
                    if let Some((_, next)) = rollback {
                        self.cluster().install(next).await;
                    }
                    return Ok(());
                }
                Ok(false) => return Err(Stop::LeaseLost),
                Err(MetadataError::PlacementConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Whether placement `p` carries migration `id`'s transition.
pub(super) fn carries(p: &Placement, id: &str) -> bool {
    p.transition.as_ref().is_some_and(|t| t.migration_id == id)
}

/// Each tenant of `p` with its RF before and after `p`'s transition.
fn tenants_of(p: &Placement) -> Vec<(String, u32, u32)> {
    p.tenants
        .iter()
        .map(|(t, rf)| {
            let after = p
                .transition
                .as_ref()
                .and_then(|tr| tr.tenants.get(t))
                .copied()
                .unwrap_or(*rf);
            (t.clone(), *rf, after)
        })
        .collect()
}
