//! Migrations: membership and replication changes that move data before they take effect.
//!
//! A migration starts by installing a placement with a [`Transition`] — in the same metadata
//! transaction that records the migration, so neither exists without the other. From then on
//! writes reach the required level on both the old and the new replica sets of every key, and
//! reads use the old ones. The migration then runs in phases, on whichever coordinator holds its
//! lease (a coordinator that dies mid-way is replaced when its lease runs out, and the next one
//! resumes from the last range recorded):
//!
//! 1. **streaming** — every range whose replicas change is streamed as [`RangeMove::streams`]
//!    plans it, throttled to [`CoordinatorConfig::stream_bytes_per_sec`];
//! 2. **completing** — the transition's placement is installed (epoch + 1), recorded atomically
//!    with the step to phase 3;
//! 3. **dropping** — once every live coordinator routes with the new epoch (they acknowledge it
//!    in the metadata store), replicas that lost ranges drop them;
//! 4. **done**.
//!
//! An administrator may cancel a migration until it completes: its transition is abandoned at
//! once (the old placement stays in force, at a new epoch), and the run that notices rolls
//! back — once every live coordinator routes without the transition, the nodes that were only
//! pending replicas drop what they received (**rolling back**, then **cancelled**).
//!
//! Deleting a tenant is a migration too: its placement entry goes at once, its data in phase 3.
//! One migration runs at a time.
//!
//! [`RangeMove::streams`]: pairdb_core::movement::RangeMove::streams
//! [`CoordinatorConfig::stream_bytes_per_sec`]: crate::CoordinatorConfig::stream_bytes_per_sec

mod runner;
pub(crate) mod stream;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use pairdb_core::movement::{Plan, RangeMove};
use pairdb_core::placement::{MAX_NODE_ID_LEN, validate_node_id};
use pairdb_core::{ErrorKind, NodeAddr, Placement, Transition};
use pairdb_metadata::model::now_rfc3339;
use pairdb_metadata::{JobRecord, MetadataError, NodeRecord, NodeState};
use pairdb_proto::storage::TokenRange;
use serde::{Deserialize, Serialize};

use crate::admin::MAX_REPLICATION_FACTOR;
use crate::cluster::Cluster;
use crate::error::CoordinatorError;

pub use runner::run_migrations;

/// The job kind migrations are stored under.
pub const JOB_KIND: &str = "migration";

/// What a migration changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// A storage node joins and takes over its share of every tenant's ranges.
    AddNode {
        /// The new node.
        node: NodeAddr,
    },
    /// A storage node hands its ranges to the others and leaves.
    RemoveNode {
        /// The leaving node.
        node_id: String,
    },
    /// A tenant's replication factor changes.
    ReplicationFactor {
        /// The tenant.
        tenant: String,
        /// Replicas before.
        from: u32,
        /// Replicas after.
        to: u32,
    },
    /// A tenant is deleted; its data is dropped from every node.
    DeleteTenant {
        /// The tenant.
        tenant: String,
    },
}

impl Change {
    /// `add_node`, `remove_node`, `replication_factor` or `delete_tenant`.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::AddNode { .. } => "add_node",
            Change::RemoveNode { .. } => "remove_node",
            Change::ReplicationFactor { .. } => "replication_factor",
            Change::DeleteTenant { .. } => "delete_tenant",
        }
    }
}

/// Where a migration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Streaming ranges to their new replicas.
    Streaming,
    /// Installing the placement the transition moves to.
    Completing,
    /// Waiting for every coordinator to route with the new placement, then dropping ranges
    /// from the replicas that lost them.
    Dropping,
    /// Finished.
    Done,
    /// Gave up (see the error); the placement is as the error says.
    Failed,
    /// Cancelled: the old placement is in force again, and the nodes that were pending
    /// replicas drop what they received.
    RollingBack,
    /// Cancelled and rolled back (nodes that could not be told to drop are in `undropped`).
    Cancelled,
}

impl Phase {
    /// `streaming`, `completing`, `dropping`, `done`, `failed`, `rolling_back` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Streaming => "streaming",
            Phase::Completing => "completing",
            Phase::Dropping => "dropping",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::RollingBack => "rolling_back",
            Phase::Cancelled => "cancelled",
        }
    }
}

/// A migration's state, as stored in its job's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// Its id.
    pub id: String,
    /// What it changes.
    pub change: Change,
    /// Where it is.
    pub phase: Phase,
    /// The tenants whose data streams, each with its RF before and after, fixed at the start
    /// (tenants created meanwhile hold nothing that must move).
    pub tenants: Vec<(String, u32, u32)>,
    /// Ranges (of every tenant) whose replicas change.
    pub ranges_total: u64,
    /// Ranges streamed so far, in plan order: a resumed migration starts at the next one.
    pub ranges_done: u64,
    /// Versions streamed so far (a key sent to two new replicas counts twice).
    pub keys_streamed: u64,
    /// Bytes of keys and values streamed so far.
    pub bytes_streamed: u64,
    /// The placement the transition runs under — as started, then as last seen while
    /// streaming, then as it completed: what each node drops (after the change, or after a
    /// cancel) is computed from it.
    #[serde(default)]
    pub from: Option<Placement>,
    /// The epoch of the placement the migration installed (or its cancel did): nodes drop
    /// ranges only once every live coordinator routes with it.
    #[serde(default)]
    pub completed_epoch: Option<u64>,
    /// Nodes a cancelled migration could not tell to drop what they received (down, or failing
    /// for a minute): they keep data of ranges they do not serve, which reads and repairs never
    /// consult, and which a later migration clears before the node receives those ranges.
    #[serde(default)]
    pub undropped: Vec<String>,
    /// Nodes an earlier cancel left data on that this migration's start cleared.
    #[serde(default)]
    pub cleared: Vec<String>,
    /// The last error met (a phase retries transient errors; it is cleared on progress).
    #[serde(default)]
    pub error: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

impl Migration {
    /// The job record that stores this migration.
    pub fn record(&self) -> Result<JobRecord, CoordinatorError> {
        Ok(JobRecord {
            id: self.id.clone(),
            kind: JOB_KIND.to_owned(),
            body: serde_json::to_string(self)
                .map_err(|e| CoordinatorError::Internal(format!("migration body: {e}")))?,
            done: matches!(self.phase, Phase::Done | Phase::Failed | Phase::Cancelled),
            created_at: self.created_at.clone(),
        })
    }

    /// This migration as its run records it once it notices a cancel.
    fn rolling_back(self) -> Migration {
        Migration {
            phase: Phase::RollingBack,
            error: None,
            ..self
        }
    }

    /// The migration a job record stores.
    pub fn from_record(record: &JobRecord) -> Result<Migration, CoordinatorError> {
        serde_json::from_str(&record.body).map_err(|e| {
            CoordinatorError::Metadata(MetadataError::Corrupt(format!(
                "migration {}: {e}",
                record.id
            )))
        })
    }
}

/// Starts and reports migrations. Cheap to clone.
#[derive(Clone)]
pub struct Migrations {
    cluster: Arc<Cluster>,
}

impl Migrations {
    /// Migrations of `cluster`; they run in its maintenance task ([`run_migrations`]).
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Migrations { cluster }
    }

    /// The migration `id`, or `JobNotFound`.
    pub async fn get(&self, id: &str) -> Result<Migration, CoordinatorError> {
        let record = self.cluster.store().get_job(id).await?;
        match record {
            Some(r) if r.kind == JOB_KIND => Migration::from_record(&r),
            _ => Err(CoordinatorError::invalid(
                ErrorKind::JobNotFound,
                format!("no migration {id:?}"),
            )),
        }
    }

    /// Cancels migration `id` while it streams: its transition is abandoned at once — in one
    /// compare-and-swap of the placement, so it either completes or is cancelled, never both —
    /// and its run rolls back. Answers the migration as stored (a cancel already made answers
    /// the same). `JobNotFound` for no such migration; `ClusterConflict` once it has completed,
    /// failed or finished.
    pub async fn cancel(&self, id: &str) -> Result<Migration, CoordinatorError> {
        let store = self.cluster.store();
        for _ in 0..8 {
            let m = self.get(id).await?;
            match m.phase {
                Phase::Streaming => {}
                Phase::RollingBack | Phase::Cancelled => return Ok(m),
                Phase::Completing | Phase::Dropping => {
                    return Err(conflict(format!(
                        "migration {id} has taken effect ({}); start the opposite change instead",
                        m.phase.as_str()
                    )));
                }
                Phase::Done | Phase::Failed => {
                    return Err(conflict(format!(
                        "migration {id} is {} already",
                        m.phase.as_str()
                    )));
                }
            }
            let Some(current) = store.placement().await? else {
                return Err(CoordinatorError::not_ready("no placement yet"));
            };
            if !runner::carries(&current, id) {
                // Completed, or cancelled already, since it was read: read it again.
                if current.transition.is_none() && self.get(id).await?.phase == Phase::Streaming {
                    // Cancelled by an earlier call; its run has yet to notice.
                    self.cluster.kick_migrations();
                    return Ok(m.rolling_back());
                }
                continue;
            }
            let Some(next) = current.abandon() else {
                continue;
            };
            if store.swap_placement(Some(current.epoch), &next).await? {
                tracing::warn!(migration = %id, epoch = next.epoch, "migration cancelled");
                self.cluster.install(next).await;
                self.cluster.kick_migrations();
                return Ok(m.rolling_back());
            }
        }
        Err(CoordinatorError::not_ready(
            "placement kept changing; retry",
        ))
    }

    /// Starts adding storage node `node_id` at `address`; answers the migration's id. The node
    /// must answer a health check with that id.
    pub async fn add_node(&self, node_id: &str, address: &str) -> Result<String, CoordinatorError> {
        validate_node_id(node_id).map_err(|e| {
            CoordinatorError::invalid(
                ErrorKind::BadRequest,
                format!("node_id: {e} (at most {MAX_NODE_ID_LEN} bytes)"),
            )
        })?;
        validate_address(address)?;
        let health = self
            .cluster
            .pool()
            .health_at(address, Duration::from_secs(3))
            .await
            .map_err(|e| {
                CoordinatorError::not_ready(format!(
                    "the storage node at {address} does not answer: {e}"
                ))
            })?;
        if health.load_bytes > 0 {
            return Err(CoordinatorError::invalid(
                ErrorKind::BadRequest,
                format!(
                    "the storage node at {address} already holds data ({} bytes): a node joins empty (start it on a fresh data dir)",
                    health.load_bytes
                ),
            ));
        }
        if health.node_id != node_id {
            return Err(CoordinatorError::invalid(
                ErrorKind::BadRequest,
                format!(
                    "the storage node at {address} is {:?}, not {node_id:?}",
                    health.node_id
                ),
            ));
        }
        let node = NodeAddr {
            id: node_id.to_owned(),
            address: address.to_owned(),
        };
        let id = self
            .start(|current| {
                if current.address_of(node_id).is_some() {
                    return Err(conflict(format!("{node_id} is already a member")));
                }
                if let Some(other) = current.nodes.iter().find(|n| n.address == node.address) {
                    return Err(conflict(format!(
                        "{} already serves at {}",
                        other.id, other.address
                    )));
                }
                let mut nodes = current.nodes.clone();
                nodes.push(node.clone());
                let tenants = current
                    .tenants
                    .iter()
                    .map(|(t, rf)| (t.clone(), *rf, *rf))
                    .collect();
                Ok((
                    Change::AddNode { node: node.clone() },
                    Some((nodes, current.tenants.clone())),
                    tenants,
                ))
            })
            .await?;
        self.record_node(&node, NodeState::Joining).await;
        Ok(id)
    }

    /// Starts removing storage node `node_id`: its ranges stream to the nodes that take them
    /// over, then it leaves the ring. `ClusterConflict` if a tenant's RF exceeds the nodes left.
    pub async fn remove_node(&self, node_id: &str) -> Result<String, CoordinatorError> {
        let mut address = None;
        let id = self
            .start(|current| {
                let Some(member) = current.nodes.iter().find(|n| n.id == node_id) else {
                    return Err(CoordinatorError::invalid(
                        ErrorKind::NodeNotFound,
                        format!("{node_id} is not a member of the ring"),
                    ));
                };
                address = Some(member.clone());
                let nodes: Vec<NodeAddr> = current
                    .nodes
                    .iter()
                    .filter(|n| n.id != node_id)
                    .cloned()
                    .collect();
                if let Some((t, rf)) = current
                    .tenants
                    .iter()
                    .find(|(_, rf)| **rf as usize > nodes.len())
                {
                    return Err(conflict(format!(
                        "tenant {t} has replication factor {rf}: removing {node_id} would leave {} storage nodes",
                        nodes.len()
                    )));
                }
                let tenants = current
                    .tenants
                    .iter()
                    .map(|(t, rf)| (t.clone(), *rf, *rf))
                    .collect();
                Ok((
                    Change::RemoveNode {
                        node_id: node_id.to_owned(),
                    },
                    Some((nodes, current.tenants.clone())),
                    tenants,
                ))
            })
            .await?;
        if let Some(node) = address {
            self.record_node(&node, NodeState::Leaving).await;
        }
        Ok(id)
    }

    /// Starts changing tenant `tenant`'s replication factor to `rf` (1–7, at most the nodes):
    /// new replicas receive the data first, and replicas no longer needed drop it afterwards.
    pub async fn set_replication_factor(
        &self,
        tenant: &str,
        rf: u32,
    ) -> Result<String, CoordinatorError> {
        self.start(|current| {
            let Some(&from) = current.tenants.get(tenant) else {
                return Err(CoordinatorError::TenantNotFound);
            };
            let nodes = current.nodes.len() as u32;
            if rf == 0 || rf > MAX_REPLICATION_FACTOR || rf > nodes {
                return Err(CoordinatorError::invalid(
                    ErrorKind::BadRequest,
                    format!(
                        "replication_factor must be 1–{MAX_REPLICATION_FACTOR} and at most the {nodes} storage nodes"
                    ),
                ));
            }
            let mut tenants = current.tenants.clone();
            tenants.insert(tenant.to_owned(), rf);
            Ok((
                Change::ReplicationFactor {
                    tenant: tenant.to_owned(),
                    from,
                    to: rf,
                },
                Some((current.nodes.clone(), tenants)),
                vec![(tenant.to_owned(), from, rf)],
            ))
        })
        .await
    }

    /// Deletes tenant `tenant`: routing to it stops at once (its keys and API keys go with the
    /// tenant record), and its data is dropped from every node in the background.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<String, CoordinatorError> {
        let id = self
            .start(|current| {
                if !current.tenants.contains_key(tenant) {
                    return Err(CoordinatorError::TenantNotFound);
                }
                Ok((
                    Change::DeleteTenant {
                        tenant: tenant.to_owned(),
                    },
                    None,
                    Vec::new(),
                ))
            })
            .await?;
        self.cluster.store().delete_tenant(tenant).await?;
        Ok(id)
    }

    /// Whether a migration that deletes tenant `tenant` has yet to finish (its id cannot be
    /// taken again until its data is gone).
    pub async fn deleting(&self, tenant: &str) -> Result<bool, CoordinatorError> {
        for record in self.cluster.store().list_jobs(true).await? {
            if record.kind != JOB_KIND {
                continue;
            }
            let Ok(m) = Migration::from_record(&record) else {
                continue;
            };
            if matches!(&m.change, Change::DeleteTenant { tenant: t } if t == tenant) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records a migration and the placement that starts it in one metadata transaction, then
    /// installs the placement. `plan` sees the current placement and answers the change, the
    /// transition's `(nodes, tenants)` (`None`: a tenant deletion, which needs none) and the
    /// tenants whose data streams.
    async fn start<F>(&self, mut plan: F) -> Result<String, CoordinatorError>
    where
        F: FnMut(
            &Placement,
        ) -> Result<
            (
                Change,
                Option<(Vec<NodeAddr>, BTreeMap<String, u32>)>,
                Vec<(String, u32, u32)>,
            ),
            CoordinatorError,
        >,
    {
        let store = self.cluster.store();
        for _ in 0..8 {
            let Some(current) = store.placement().await? else {
                return Err(CoordinatorError::not_ready("no placement yet"));
            };
            if let Some(running) = store.list_jobs(true).await?.into_iter().next() {
                return Err(conflict(format!(
                    "{} {} is still running; one job runs at a time",
                    running.kind, running.id
                )));
            }
            if let Some(t) = &current.transition {
                return Err(conflict(format!(
                    "the placement is still moving for migration {}",
                    t.migration_id
                )));
            }
            let (change, transition, tenants) = plan(&current)?;
            let id = new_id();
            let (mut next, phase) = match transition {
                Some((nodes, tenant_rfs)) => (
                    current.begin(Transition {
                        migration_id: id.clone(),
                        nodes,
                        tenants: tenant_rfs,
                    }),
                    Phase::Streaming,
                ),
                None => {
                    let Change::DeleteTenant { tenant } = &change else {
                        return Err(CoordinatorError::Internal(
                            "a migration without a transition must delete a tenant".into(),
                        ));
                    };
                    (current.without_tenant(tenant), Phase::Dropping)
                }
            };
            if let Change::AddNode { node } = &change {
                // Its tokens, allocated to even out every node's share (off the async workers:
                // a large ring takes milliseconds).
                let ring = current.ring();
                let (id, vnodes) = (node.id.clone(), current.vnodes);
                let rf = current.tenants.values().copied().max().unwrap_or(3) as usize;
                let tokens = tokio::task::spawn_blocking(move || ring.allocate(&id, vnodes, rf))
                    .await
                    .map_err(|e| CoordinatorError::Internal(format!("allocation failed: {e}")))?;
                next.tokens.insert(node.id.clone(), tokens);
            }
            let (ranges_total, receiving) = match (&next.transition, phase) {
                (Some(_), Phase::Streaming) => {
                    let (from, to) = (current.ring(), next.next_ring());
                    let planned = tenants.clone();
                    tokio::task::spawn_blocking(move || {
                        let to = to.unwrap_or_else(|| from.clone());
                        let plan = Plan::new(&from, &to, &planned);
                        (plan.len() as u64, receiving(&plan))
                    })
                    .await
                    .map_err(|e| CoordinatorError::Internal(format!("planning failed: {e}")))?
                }
                _ => (0, BTreeMap::new()),
            };
            let cleared = self.clear(&current, receiving).await?;
            let migration = Migration {
                id: id.clone(),
                completed_epoch: (phase == Phase::Dropping).then_some(next.epoch),
                from: Some(if phase == Phase::Dropping {
                    current.clone()
                } else {
                    next.clone()
                }),
                change,
                phase,
                tenants,
                ranges_total,
                ranges_done: 0,
                keys_streamed: 0,
                bytes_streamed: 0,
                undropped: Vec::new(),
                cleared,
                error: None,
                created_at: now_rfc3339(),
            };
            match store
                .start_job(&migration.record()?, Some((current.epoch, &next)))
                .await
            {
                Ok(()) => {
                    self.cluster.install(next).await;
                    self.cluster.kick_migrations();
                    tracing::info!(migration = %id, change = ?migration.change, ranges_total, "migration started");
                    return Ok(id);
                }
                Err(MetadataError::PlacementConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CoordinatorError::not_ready(
            "placement kept changing; retry",
        ))
    }

    /// Before a transition begins, each member about to receive ranges drops whatever it
    /// holds in them, so it starts them clean and nothing stale (a version whose tombstone was
    /// purged since) comes back through it. They are not its ranges yet, so no acknowledged
    /// write is there. A node a cancelled migration left data on (its `undropped`) must be
    /// cleared, or the migration does not start; any other that cannot be told now (down) is
    /// logged and skipped. Answers the nodes with leftovers that were cleared.
    async fn clear(
        &self,
        current: &Placement,
        receiving: BTreeMap<String, Vec<TokenRange>>,
    ) -> Result<Vec<String>, CoordinatorError> {
        if self.cluster.view()?.placement.epoch < current.epoch {
            // Drops go out at the epoch this coordinator routes with: catch up first.
            self.cluster.refresh().await?;
        }
        let left_over = self.left_over().await?;
        let calls = receiving
            .into_iter()
            .filter(|(node, _)| current.nodes.iter().any(|n| &n.id == node))
            .map(|(node, ranges)| {
                let must = left_over.contains(&node);
                async move {
                    let limit = if must { LEFT_OVER_CLEAR_TIMEOUT } else { CLEAR_TIMEOUT };
                    let call = stream::drop_ranges(&self.cluster, &node, ranges);
                    let outcome = match tokio::time::timeout(limit, call).await {
                        Ok(Ok(dropped)) => {
                            if dropped > 0 {
                                tracing::info!(%node, dropped, "stale data cleared from ranges it receives");
                            }
                            return Ok(must.then_some(node));
                        }
                        Ok(Err(error)) => error,
                        Err(_) => format!("no answer in {limit:?}"),
                    };
                    if !must {
                        tracing::warn!(%node, error = %outcome, "cannot clear the ranges it receives");
                        return Ok(None);
                    }
                    Err(CoordinatorError::not_ready(format!(
                        "{node} holds data a cancelled migration left in ranges it would receive, and cannot drop it now ({outcome}); retry once it answers"
                    )))
                }
            });
        let cleared = futures::future::join_all(calls)
            .await
            .into_iter()
            .collect::<Result<Vec<Option<String>>, _>>()?;
        Ok(cleared.into_iter().flatten().collect())
    }

    /// Nodes some cancelled migration could not tell to drop what they received, and no
    /// migration since has cleared.
    async fn left_over(&self) -> Result<BTreeSet<String>, CoordinatorError> {
        let migrations = self
            .cluster
            .store()
            .list_jobs(false)
            .await?
            .iter()
            .filter(|r| r.kind == JOB_KIND)
            .filter_map(|r| Migration::from_record(r).ok())
            .collect();
        Ok(left_over(migrations))
    }

    async fn record_node(&self, node: &NodeAddr, state: NodeState) {
        let record = NodeRecord {
            node_id: node.id.clone(),
            address: node.address.clone(),
            state,
            created_at: now_rfc3339(),
        };
        if let Err(error) = self.cluster.store().upsert_node(&record).await {
            tracing::warn!(node = %node.id, %error, "cannot record the node's state");
        }
    }
}

/// The nodes `migrations` left data on (`undropped`) that none of them cleared since.
fn left_over(mut migrations: Vec<Migration>) -> BTreeSet<String> {
    // In the order they ran: each started at a newer placement than the one before.
    migrations.sort_by_key(|m| m.from.as_ref().map_or(0, |p| p.epoch));
    let mut out = BTreeSet::new();
    for m in migrations {
        for node in &m.cleared {
            out.remove(node);
        }
        out.extend(m.undropped);
    }
    out
}

/// How long clearing the ranges a node receives may hold up a migration's start.
const CLEAR_TIMEOUT: Duration = Duration::from_secs(5);
/// The same, for a node known to hold a cancelled migration's leftovers (it may have much to
/// drop).
const LEFT_OVER_CLEAR_TIMEOUT: Duration = Duration::from_secs(60);

/// The ranges each node receives under `plan` (a replica after that was not one before).
fn receiving(plan: &Plan) -> BTreeMap<String, Vec<TokenRange>> {
    ranges_by_node(plan, RangeMove::arriving)
}

/// For each node `nodes` names in some move of `plan`, the ranges of those moves.
pub(super) fn ranges_by_node(
    plan: &Plan,
    nodes: impl Fn(&RangeMove) -> Vec<String>,
) -> BTreeMap<String, Vec<TokenRange>> {
    let mut out: BTreeMap<String, Vec<TokenRange>> = BTreeMap::new();
    for mv in plan.iter() {
        for node in nodes(&mv) {
            out.entry(node).or_default().push(TokenRange {
                namespace: mv.tenant.clone(),
                start: mv.start,
                end: mv.end,
            });
        }
    }
    out
}

fn conflict(detail: String) -> CoordinatorError {
    CoordinatorError::invalid(ErrorKind::ClusterConflict, detail)
}

/// Accepts `host:port` with a port; refuses anything with a scheme or a path.
fn validate_address(address: &str) -> Result<(), CoordinatorError> {
    let bad = || {
        CoordinatorError::invalid(
            ErrorKind::BadRequest,
            format!("address {address:?} must be host:port"),
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty()
        || host.len() > 253
        || port.parse::<u16>().map_or(true, |p| p == 0)
        || address.contains('/')
        || address.chars().any(char::is_whitespace)
    {
        return Err(bad());
    }
    Ok(())
}

/// A fresh migration id: `mig-` and 16 random hex digits.
fn new_id() -> String {
    format!("mig-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in ["127.0.0.1:7000", "storage-3.pairdb:7000", "[::1]:7000"] {
            assert!(validate_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "host",
            "host:",
            ":7000",
            "http://h:1",
            "h:0",
            "h:99999",
            "a b:1",
        ] {
            assert!(validate_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn migrations_round_trip_through_their_job() {
        let m = Migration {
            id: "mig-1".into(),
            change: Change::ReplicationFactor {
                tenant: "t".into(),
                from: 1,
                to: 3,
            },
            phase: Phase::Streaming,
            tenants: vec![("t".into(), 1, 3)],
            ranges_total: 4,
            ranges_done: 1,
            keys_streamed: 10,
            bytes_streamed: 100,
            from: None,
            completed_epoch: None,
            undropped: Vec::new(),
            cleared: Vec::new(),
            error: None,
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        let record = m.record().expect("encode");
        assert!(!record.done);
        assert_eq!(Migration::from_record(&record).expect("decode"), m);
        let done = Migration {
            phase: Phase::Done,
            ..m
        };
        assert!(done.record().expect("encode").done);
    }

    #[test]
    fn leftovers_stay_flagged_until_a_later_start_clears_them() {
        let at = |epoch: u64, undropped: &[&str], cleared: &[&str]| Migration {
            id: format!("mig-{epoch}"),
            change: Change::DeleteTenant { tenant: "t".into() },
            phase: Phase::Cancelled,
            tenants: Vec::new(),
            ranges_total: 0,
            ranges_done: 0,
            keys_streamed: 0,
            bytes_streamed: 0,
            from: Some(Placement {
                epoch,
                ..Placement::initial(Vec::new(), 8)
            }),
            completed_epoch: None,
            undropped: undropped.iter().map(|s| s.to_string()).collect(),
            cleared: cleared.iter().map(|s| s.to_string()).collect(),
            error: None,
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        let names = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>();
        // Listed in any order: n1 left at 5, cleared at 9; n2 left at 9 and 12.
        let jobs = vec![
            at(12, &["n2"], &[]),
            at(5, &["n1"], &[]),
            at(9, &["n2"], &["n1"]),
        ];
        assert_eq!(names(left_over(jobs)), ["n2"]);
        // Cleared, then left again by a later cancel.
        let jobs = vec![at(9, &["n1"], &["n1"]), at(3, &["n1"], &[])];
        assert_eq!(names(left_over(jobs)), ["n1"]);
        let jobs = vec![at(3, &["n1"], &[]), at(9, &[], &["n1"])];
        assert!(left_over(jobs).is_empty());
    }
}
