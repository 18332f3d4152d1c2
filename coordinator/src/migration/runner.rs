//! Running migrations: claim one, drive it through its phases, record progress under a lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pairdb_core::Placement;
use pairdb_core::movement::range_moves;
use pairdb_metadata::{MetadataError, NodeRecord, NodeState};
use pairdb_proto::storage::TokenRange;
use tokio::time::Instant;

use super::stream::{Pacer, drop_ranges, stream_range};
use super::{Change, JOB_KIND, LEASE, Migration, Phase};
use crate::cluster::Cluster;
use crate::error::CoordinatorError;

/// How often unfinished migrations are looked for (a migration started here is picked up at
/// once).
const POLL: Duration = Duration::from_secs(2);
/// Progress is recorded at least this often while a phase runs (renewing the lease).
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Wait before retrying a range or a step that failed.
const RETRY: Duration = Duration::from_millis(500);

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
    loop {
        if let Err(error) = run_pending(&cluster).await {
            tracing::debug!(%error, "cannot look for migrations");
        }
        cluster.wait_for_migrations(POLL).await;
    }
}

async fn run_pending(cluster: &Arc<Cluster>) -> Result<(), CoordinatorError> {
    for record in cluster.store().list_jobs(true).await? {
        if record.kind != JOB_KIND {
            continue;
        }
        let migration = Migration::from_record(&record)?;
        let mut run = Run {
            cluster: Arc::clone(cluster),
            migration,
            saved: Instant::now(),
        };
        // Claims it, or learns that another coordinator holds it.
        match run.save().await {
            Ok(()) => {}
            Err(Stop::LeaseLost) => continue,
            Err(Stop::Store(e)) => return Err(e),
        }
        tracing::info!(migration = %run.migration.id, phase = run.migration.phase.as_str(), "running migration");
        match run.drive().await {
            Ok(()) => {}
            Err(Stop::LeaseLost) => {
                tracing::warn!(migration = %run.migration.id, "another coordinator took the migration over");
            }
            Err(Stop::Store(e)) => return Err(e),
        }
    }
    Ok(())
}

/// One coordinator's run of one migration.
struct Run {
    cluster: Arc<Cluster>,
    migration: Migration,
    saved: Instant,
}

impl Run {
    /// Records the migration as it is, renewing this coordinator's lease.
    async fn save(&mut self) -> Result<(), Stop> {
        let record = self.migration.record()?;
        let owner = self.cluster.instance();
        if self
            .cluster
            .store()
            .save_job(&record, owner, LEASE, None)
            .await?
        {
            self.saved = Instant::now();
            Ok(())
        } else {
            Err(Stop::LeaseLost)
        }
    }

    async fn save_now_and_then(&mut self) -> Result<(), Stop> {
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
                Phase::Done | Phase::Failed => return Ok(()),
            }
        }
    }

    /// Phase 1: streams every range from `ranges_done` on, then moves to completing.
    async fn stream(&mut self) -> Result<(), Stop> {
        let view = self.cluster.view()?;
        let ours = view
            .placement
            .transition
            .as_ref()
            .is_some_and(|t| t.migration_id == self.migration.id);
        if !ours {
            return self
                .fail("the placement no longer carries this migration's transition")
                .await;
        }
        let to = view.next_ring.clone().unwrap_or_else(|| view.ring.clone());
        let moves = range_moves(&view.ring, &to, &self.migration.tenants);
        if moves.len() as u64 != self.migration.ranges_total {
            return self
                .fail("the planned ranges changed since the migration started")
                .await;
        }
        let mut pacer = Pacer::new(self.cluster.config().stream_bytes_per_sec);
        let started = Instant::now();
        let first = self.migration.bytes_streamed;
        while let Some(mv) = moves.get(self.migration.ranges_done as usize) {
            let mut streamed = super::stream::Streamed::default();
            let outcome = stream_range(&self.cluster, mv, &mut pacer, &mut |s| {
                streamed.keys += s.keys;
                streamed.bytes += s.bytes;
            })
            .await;
            self.migration.keys_streamed += streamed.keys;
            self.migration.bytes_streamed += streamed.bytes;
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
            mib_per_sec = bytes as f64 / secs / (1 << 20) as f64,
            "every range streamed"
        );
        self.migration.phase = Phase::Completing;
        self.save().await
    }

    /// Phase 2: installs the transition's placement, recorded in the same transaction as the
    /// step to dropping (with what to drop).
    async fn complete(&mut self) -> Result<(), Stop> {
        let store = Arc::clone(self.cluster.store());
        loop {
            let Some(current) = store.placement().await? else {
                return self.fail("the placement is gone").await;
            };
            let ours = current
                .transition
                .as_ref()
                .is_some_and(|t| t.migration_id == self.migration.id);
            let Some(next) = current.complete().filter(|_| ours) else {
                return self
                    .fail("the placement no longer carries this migration's transition")
                    .await;
            };
            let mut after = self.migration.clone();
            after.phase = Phase::Dropping;
            after.completed_epoch = Some(next.epoch);
            after.from = Some(current.clone());
            let record = after.record()?;
            let saved = store
                .save_job(
                    &record,
                    self.cluster.instance(),
                    LEASE,
                    Some((current.epoch, &next)),
                )
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
                    self.cluster.install(next).await;
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
    /// lost ranges drop them.
    async fn drop_old(&mut self) -> Result<(), Stop> {
        let Some(epoch) = self.migration.completed_epoch else {
            return self.fail("no completed epoch recorded").await;
        };
        loop {
            let lowest = self.cluster.ack_epoch().await?;
            if lowest >= epoch {
                break;
            }
            self.migration.error = Some(format!(
                "waiting for every coordinator to route with epoch {epoch} (lowest: {lowest})"
            ));
            self.save_now_and_then().await?;
            tokio::time::sleep(RETRY).await;
        }
        let drops = self.drops();
        let view = self.cluster.view()?;
        let mut undropped = Vec::new();
        for (node, ranges) in drops {
            // A node that left the ring takes its data with it.
            if view.placement.address_of(&node).is_none() {
                continue;
            }
            let mut result = Err(String::new());
            for _ in 0..3 {
                result = drop_ranges(&self.cluster, &node, ranges.clone()).await;
                if result.is_ok() {
                    break;
                }
                tokio::time::sleep(RETRY).await;
            }
            match result {
                Ok(dropped) => {
                    tracing::info!(migration = %self.migration.id, %node, dropped, "old ranges dropped");
                }
                Err(error) => {
                    tracing::warn!(migration = %self.migration.id, %node, %error, "cannot drop old ranges");
                    undropped.push(node);
                }
            }
            self.save_now_and_then().await?;
        }
        self.migration.undropped = undropped;
        self.migration.error = None;
        self.migration.phase = Phase::Done;
        self.save().await?;
        tracing::info!(migration = %self.migration.id, "migration done");
        Ok(())
    }

    /// The ranges each node drops: those it held before the change and not after, or all of a
    /// deleted tenant's.
    fn drops(&self) -> BTreeMap<String, Vec<TokenRange>> {
        let mut out: BTreeMap<String, Vec<TokenRange>> = BTreeMap::new();
        let Some(from) = &self.migration.from else {
            return out;
        };
        if let Change::DeleteTenant { tenant } = &self.migration.change {
            for node in from.all_nodes() {
                out.entry(node.id).or_default().push(TokenRange {
                    namespace: tenant.clone(),
                    start: 0,
                    end: u64::MAX,
                });
            }
            return out;
        }
        let Some(to) = from.next_ring() else {
            return out;
        };
        // Every tenant the placement had at the change, not only those that streamed: a tenant
        // created during the migration wrote to the old replicas too.
        let tenants: Vec<(String, u32, u32)> = tenants_of(from);
        for mv in range_moves(&from.ring(), &to, &tenants) {
            for node in mv.leaving() {
                out.entry(node).or_default().push(TokenRange {
                    namespace: mv.tenant.clone(),
                    start: mv.start,
                    end: mv.end,
                });
            }
        }
        out
    }

    async fn fail(&mut self, why: &str) -> Result<(), Stop> {
        tracing::error!(migration = %self.migration.id, why, "migration failed");
        self.migration.error = Some(why.to_owned());
        self.migration.phase = Phase::Failed;
        self.save().await
    }
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
