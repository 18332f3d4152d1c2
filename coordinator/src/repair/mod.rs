//! Anti-entropy: replicas compared range by range with Merkle digests, and only the keys that
//! differ exchanged ([`merkle`]).
//!
//! A repair walks every range of the ring whose replica set is constant, for one tenant or all,
//! in a fixed order, as a job under a lease (like a migration: another coordinator resumes it
//! from the last range recorded). A range compared on every replica and made equal gets a
//! *repaired-until* watermark on each replica — the earlier of the repair's start (this
//! coordinator's clock) and the lowest replica hybrid logical clock at the range's first
//! comparison (each replica reports it with its digest), less a margin for writes then in
//! flight — below which the engine may purge tombstones past their grace period. Every version a
//! replica mints after its digest is stamped above its clock then, so a coordinator whose clock
//! runs ahead cannot set a watermark above versions that some replica lacks. Repairs are
//! paced to an I/O budget ([`CoordinatorConfig::repair_keys_per_sec`]); one runs on demand
//! (`POST /v1/admin/repair`) or every [`CoordinatorConfig::repair_interval`]. A repair and a
//! migration never run at once.
//!
//! [`CoordinatorConfig::repair_keys_per_sec`]: crate::CoordinatorConfig::repair_keys_per_sec
//! [`CoordinatorConfig::repair_interval`]: crate::CoordinatorConfig::repair_interval

pub mod merkle;
mod replica;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pairdb_core::ErrorKind;
use pairdb_core::movement::replica_ranges;
use pairdb_metadata::model::now_rfc3339;
use pairdb_metadata::{JobRecord, MetadataError};
use pairdb_proto::storage::{SetRepairedUntilRequest, TokenRange};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::CoordinatorError;
use crate::jobs::{self, Lease};
use replica::RpcReplica;

/// A ring cut into ranges of constant replicas: `(start, end, replicas)`.
type ReplicaRanges = Vec<(u64, u64, Vec<String>)>;

/// The job kind repairs are stored under.
pub const JOB_KIND: &str = "repair";
/// How far behind the repair's start and the replicas' clocks its watermark is set: versions
/// still in flight at the comparison (minted, not yet stored anywhere) stay above it.
pub const WATERMARK_MARGIN: Duration = Duration::from_secs(300);

/// Where a repair is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairState {
    /// Comparing and repairing ranges.
    Running,
    /// Every range visited.
    Done,
    /// Gave up (see the error).
    Failed,
}

impl RepairState {
    /// `running`, `done` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairState::Running => "running",
            RepairState::Done => "done",
            RepairState::Failed => "failed",
        }
    }
}

/// A repair's state, as stored in its job's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    /// Its id.
    pub id: String,
    /// The tenants it repairs, each with its RF, fixed at the start.
    pub tenants: Vec<(String, u32)>,
    /// Where it is.
    pub state: RepairState,
    /// Ranges (of every tenant) to compare.
    pub ranges_total: u64,
    /// Ranges visited, in order: a resumed repair starts at the next one.
    pub ranges_done: u64,
    /// Versions sent to replicas that lacked them.
    pub keys_repaired: u64,
    /// Ranges that could not be compared on every replica (a replica down): no watermark.
    pub ranges_incomplete: u64,
    /// Wall-clock milliseconds at the start.
    pub started_ms: u64,
    /// The last error met.
    #[serde(default)]
    pub error: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

impl Repair {
    fn record(&self) -> Result<JobRecord, CoordinatorError> {
        Ok(JobRecord {
            id: self.id.clone(),
            kind: JOB_KIND.to_owned(),
            body: serde_json::to_string(self)
                .map_err(|e| CoordinatorError::Internal(format!("repair body: {e}")))?,
            done: self.state != RepairState::Running,
            created_at: self.created_at.clone(),
        })
    }

    fn from_record(record: &JobRecord) -> Result<Repair, CoordinatorError> {
        serde_json::from_str(&record.body).map_err(|e| {
            CoordinatorError::Metadata(MetadataError::Corrupt(format!("repair {}: {e}", record.id)))
        })
    }
}

/// Starts and reports repairs. Cheap to clone.
#[derive(Clone)]
pub struct Repairs {
    cluster: Arc<Cluster>,
}

impl Repairs {
    /// Repairs of `cluster`; they run in its maintenance task ([`run_repairs`]).
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Repairs { cluster }
    }

    /// The repair `id`, or `JobNotFound`.
    pub async fn get(&self, id: &str) -> Result<Repair, CoordinatorError> {
        match self.cluster.store().get_job(id).await? {
            Some(r) if r.kind == JOB_KIND => Repair::from_record(&r),
            _ => Err(CoordinatorError::invalid(
                ErrorKind::JobNotFound,
                format!("no repair {id:?}"),
            )),
        }
    }

    /// Starts repairing `tenant` (every tenant when `None`); answers the repair's id.
    /// `ClusterConflict` while a migration or another repair runs.
    pub async fn start(&self, tenant: Option<&str>) -> Result<String, CoordinatorError> {
        let store = self.cluster.store();
        if let Some(running) = store.list_jobs(true).await?.into_iter().next() {
            return Err(CoordinatorError::invalid(
                ErrorKind::ClusterConflict,
                format!(
                    "{} {} is still running; one job runs at a time",
                    running.kind, running.id
                ),
            ));
        }
        let view = self.cluster.view()?;
        if let Some(t) = &view.placement.transition {
            return Err(CoordinatorError::invalid(
                ErrorKind::ClusterConflict,
                format!("migration {} is moving the placement", t.migration_id),
            ));
        }
        let tenants: Vec<(String, u32)> = match tenant {
            Some(t) => {
                let rf = view
                    .placement
                    .tenants
                    .get(t)
                    .ok_or(CoordinatorError::TenantNotFound)?;
                vec![(t.to_owned(), *rf)]
            }
            None => view
                .placement
                .tenants
                .iter()
                .map(|(t, rf)| (t.clone(), *rf))
                .collect(),
        };
        let ring = view.ring.clone();
        let rfs = tenants.clone();
        let ranges_total = tokio::task::spawn_blocking(move || {
            let mut per_rf: HashMap<u32, u64> = HashMap::new();
            rfs.iter()
                .map(|(_, rf)| {
                    *per_rf
                        .entry(*rf)
                        .or_insert_with(|| replica_ranges(&ring, *rf).len() as u64)
                })
                .sum::<u64>()
        })
        .await
        .map_err(|e| CoordinatorError::Internal(format!("planning failed: {e}")))?;
        let repair = Repair {
            id: format!("rep-{:016x}", rand::random::<u64>()),
            tenants,
            state: RepairState::Running,
            ranges_total,
            ranges_done: 0,
            keys_repaired: 0,
            ranges_incomplete: 0,
            started_ms: pairdb_core::hlc::wall_ms(),
            error: None,
            created_at: now_rfc3339(),
        };
        store.start_job(&repair.record()?, None).await?;
        self.cluster.kick_migrations();
        tracing::info!(repair = %repair.id, ranges_total, "repair started");
        Ok(repair.id)
    }
}

/// Runs forever: claims unfinished repairs and drives them; every `repair_interval` (when set)
/// starts one over every tenant if none ran meanwhile. Part of the coordinator's maintenance.
pub async fn run_repairs(cluster: Arc<Cluster>) {
    let mut last_scheduled = Instant::now();
    loop {
        if let Err(error) = run_pending(&cluster).await {
            tracing::debug!(%error, "cannot look for repairs");
        }
        if let Some(every) = cluster.config().repair_interval
            && last_scheduled.elapsed() >= every
        {
            last_scheduled = Instant::now();
            if let Err(error) = schedule(&cluster, every).await {
                tracing::debug!(%error, "no periodic repair started");
            }
        }
        cluster.wait_for_migrations(Duration::from_secs(2)).await;
    }
}

/// Starts a repair of every tenant unless one started within `every`.
async fn schedule(cluster: &Arc<Cluster>, every: Duration) -> Result<(), CoordinatorError> {
    let now = pairdb_core::hlc::wall_ms();
    let recent = cluster
        .store()
        .list_jobs(false)
        .await?
        .iter()
        .filter(|j| j.kind == JOB_KIND)
        .filter_map(|j| Repair::from_record(j).ok())
        .any(|r| now.saturating_sub(r.started_ms) < every.as_millis() as u64);
    if !recent {
        Repairs::new(Arc::clone(cluster)).start(None).await?;
    }
    Ok(())
}

async fn run_pending(cluster: &Arc<Cluster>) -> Result<(), CoordinatorError> {
    jobs::each_unfinished(cluster, JOB_KIND, |record| {
        let cluster = Arc::clone(cluster);
        async move {
            let Ok(repair) = Repair::from_record(&record) else {
                tracing::error!(repair = %record.id, "unreadable repair skipped");
                return Ok(());
            };
            let lease = Lease::new(cluster, record);
            let mut run = RepairRun {
                lease: Arc::clone(&lease),
                repair,
            };
            // Claims it, or learns that another coordinator holds it.
            if !run.save().await? {
                return Ok(());
            }
            tracing::info!(repair = %run.repair.id, "running repair");
            lease.holding(run.drive()).await
        }
    })
    .await
}

struct RepairRun {
    lease: Arc<Lease>,
    repair: Repair,
}

impl RepairRun {
    /// Saves progress; false when another coordinator holds the repair now.
    async fn save(&mut self) -> Result<bool, CoordinatorError> {
        Ok(self.lease.save(self.repair.record()?, None).await?)
    }

    async fn drive(&mut self) -> Result<(), CoordinatorError> {
        let cluster = Arc::clone(self.lease.cluster());
        let view = cluster.view()?;
        let ring = view.ring.clone();
        let tenants = self.repair.tenants.clone();
        // Each tenant's ranges, computed once per distinct RF.
        let plan = tokio::task::spawn_blocking(move || {
            let mut per_rf: HashMap<u32, Arc<ReplicaRanges>> = HashMap::new();
            tenants
                .into_iter()
                .map(|(t, rf)| {
                    let ranges = per_rf
                        .entry(rf)
                        .or_insert_with(|| Arc::new(replica_ranges(&ring, rf)))
                        .clone();
                    (t, ranges)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| CoordinatorError::Internal(format!("planning failed: {e}")))?;
        let total: u64 = plan.iter().map(|(_, r)| r.len() as u64).sum();
        if total != self.repair.ranges_total {
            // The ring changed under a resumed repair: its remaining ranges no longer exist.
            self.repair.state = RepairState::Failed;
            self.repair.error = Some("the ring changed since the repair started".into());
            self.save().await?;
            return Ok(());
        }
        let budget = cluster.config().repair_keys_per_sec;
        let started = Instant::now();
        let mut read = 0u64;
        let watermark = self
            .repair
            .started_ms
            .saturating_sub(WATERMARK_MARGIN.as_millis() as u64)
            << pairdb_core::hlc::LOGICAL_BITS;
        let mut index = 0u64;
        let mut saved = Instant::now();
        for (tenant, ranges) in &plan {
            for (start, end, replicas) in ranges.iter() {
                if index < self.repair.ranges_done {
                    index += 1;
                    continue;
                }
                index += 1;
                if !self.lease.held() {
                    return Ok(());
                }
                // A migration moving the placement (none may start while this runs; a resumed
                // repair may meet one started when it had no owner): stop rather than repair
                // replica sets that are changing.
                if let Ok(v) = cluster.view()
                    && v.placement.transition.is_some()
                {
                    self.repair.state = RepairState::Failed;
                    self.repair.error = Some("a migration is moving the placement".into());
                    self.save().await?;
                    return Ok(());
                }
                let reach: Vec<RpcReplica> = replicas
                    .iter()
                    .map(|n| RpcReplica::new(Arc::clone(&cluster), n, tenant))
                    .collect();
                let done = merkle::repair_range(&reach, *start, *end).await;
                self.repair.keys_repaired += done.keys;
                read += done.keys_read;
                let mut complete = done.complete;
                // Never above what the replicas' own clocks vouch for, whatever this
                // coordinator's clock says.
                let margin = WATERMARK_MARGIN.as_millis() as u64;
                let vouched = done
                    .clock
                    .saturating_sub(margin << pairdb_core::hlc::LOGICAL_BITS);
                let watermark = watermark.min(vouched);
                if complete && watermark == 0 {
                    // A replica reported no clock (a node older than this coordinator): it
                    // vouches for nothing, so the range gets no watermark, visibly.
                    complete = false;
                    self.repair.error.get_or_insert_with(|| {
                        "a replica reported no clock with its digest (upgrade it): no watermark set".into()
                    });
                }
                if complete {
                    for r in &reach {
                        let range = TokenRange {
                            namespace: tenant.clone(),
                            start: *start,
                            end: *end,
                        };
                        if let Err(e) = r.set_repaired_until(range, watermark).await {
                            complete = false;
                            self.repair.error.get_or_insert(e);
                        }
                    }
                } else if let Some(e) = done.error {
                    self.repair.error = Some(e);
                }
                self.repair.ranges_incomplete += u64::from(!complete);
                self.repair.ranges_done += 1;
                // Progress recorded once a second (the lease keeper renews in between).
                if saved.elapsed() >= Duration::from_secs(1) {
                    if !self.save().await? {
                        return Ok(());
                    }
                    saved = Instant::now();
                }
                // The I/O budget: keys digested and read on every replica, per second.
                if budget > 0 {
                    let due = Duration::from_secs_f64(read as f64 / budget as f64);
                    tokio::time::sleep_until(started + due).await;
                }
            }
        }
        self.repair.state = RepairState::Done;
        self.save().await?;
        tracing::info!(
            repair = %self.repair.id,
            keys_repaired = self.repair.keys_repaired,
            ranges_incomplete = self.repair.ranges_incomplete,
            "repair done"
        );
        Ok(())
    }
}

impl RpcReplica {
    /// Records the range's watermark on this replica.
    async fn set_repaired_until(&self, range: TokenRange, until: u64) -> Result<(), String> {
        self.call(|mut c, epoch| {
            let request = SetRepairedUntilRequest {
                epoch,
                range: Some(range.clone()),
                repaired_until: until,
            };
            async move { c.set_repaired_until(request).await }
        })
        .await
        .map(|_| ())
    }
}
