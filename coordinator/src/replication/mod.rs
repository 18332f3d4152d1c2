//! The replication core: the write and read paths of DESIGN §2.
//!
//! * [`write`] — a leader mints the version (falling over to the next live replica within the
//!   request), the other replicas apply it, and the answer comes after `W` durable acks;
//! * [`read`] — every live replica is asked, the answer comes after `R`, answers are resolved and
//!   stale replicas repaired.

pub mod read;
pub mod write;

use std::sync::Arc;

use pairdb_core::{Consistency, ContextSigner, ErrorKind, Version};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::CoordinatorError;

/// A client write (PUT or DELETE) as the coordinator sees it.
#[derive(Clone, Debug)]
pub struct WriteOp {
    /// The tenant (namespace), from the caller's credential.
    pub tenant: String,
    /// User key bytes.
    pub key: Vec<u8>,
    /// A delete.
    pub tombstone: bool,
    /// Value bytes (empty for deletes).
    pub value: Vec<u8>,
    /// Content type of the value.
    pub content_type: String,
    /// Context token from the client ("" for a blind overwrite).
    pub context: String,
    /// Idempotency key ("" for none).
    pub idempotency_key: String,
    /// Required acks level.
    pub consistency: Consistency,
    /// When the client stops waiting.
    pub deadline: Instant,
}

/// How a write met concurrent versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// No conflict.
    None,
    /// The write overwrote a version its context did not cover.
    Won,
    /// A replica resolved the write against a concurrent version with a greater key.
    Lost,
}

/// A write that met its consistency level.
#[derive(Clone, Debug)]
pub struct WriteOutcome {
    /// The version written (or the earlier one, for a repeated idempotency key).
    pub version: Version,
    /// Context token of that version.
    pub context: String,
    /// Durable acks when answering.
    pub acks: u32,
    /// Replicas of the key.
    pub replicas: u32,
    /// Conflict report.
    pub conflict: Conflict,
    /// The idempotency key had already produced this write: nothing new was minted, and the
    /// replicas answered as they answered the first attempt.
    pub replayed: bool,
}

/// A client read.
#[derive(Clone, Debug)]
pub struct ReadOp {
    /// The tenant.
    pub tenant: String,
    /// User key bytes.
    pub key: Vec<u8>,
    /// Required answers level.
    pub consistency: Consistency,
    /// When the client stops waiting.
    pub deadline: Instant,
}

/// A read that met its consistency level.
#[derive(Clone, Debug)]
pub struct ReadOutcome {
    /// The resolved version, tombstones included; `None` if no replica holds the key.
    pub version: Option<Version>,
    /// Context token of the resolved version ("" when none).
    pub context: String,
    /// Replicas that answered before the response.
    pub answered: u32,
    /// Replicas of the key.
    pub replicas: u32,
    /// Concurrent versions were found and resolved.
    pub conflict: bool,
    /// Replicas repaired before answering.
    pub read_repairs: u32,
}

/// Runs reads and writes against the cluster.
#[derive(Clone)]
pub struct Replicator {
    cluster: Arc<Cluster>,
    signer: ContextSigner,
}

impl Replicator {
    /// A replicator over `cluster`, sealing context tokens under the cluster's server secret.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        let cfg = cluster.config();
        let signer = ContextSigner::new(&cfg.key_secret, cfg.context_max_skew_ms);
        Replicator { cluster, signer }
    }

    /// The cluster.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Runs `attempt` against the current placement; when it finds the placement stale (a node
    /// holds a newer epoch, or the tenant is missing from it), reloads the placement — joining a
    /// reload other requests already started — and tries once more, all before `deadline`.
    /// Nothing was written by an attempt that asks for a retry.
    async fn with_placement<T, F, Fut>(
        &self,
        deadline: Instant,
        attempt: F,
    ) -> Result<T, CoordinatorError>
    where
        F: Fn(Arc<crate::cluster::PlacementView>) -> Fut,
        Fut: std::future::Future<Output = Result<T, AttemptError>>,
    {
        for round in 0..2 {
            let view = self.cluster.view()?;
            let epoch = view.placement.epoch;
            let tenant_missing = match attempt(view).await {
                Ok(out) => return Ok(out),
                Err(AttemptError::Failed(CoordinatorError::TenantNotFound)) if round == 0 => true,
                Err(AttemptError::Stale) if round == 0 => false,
                Err(AttemptError::Failed(e)) => return Err(e),
                Err(AttemptError::Stale) => break,
            };
            match tokio::time::timeout_at(deadline, self.cluster.refresh_past(epoch)).await {
                Ok(Ok(_)) => {}
                // The tenant passed authentication but no placement knows it yet.
                Ok(Err(_)) if tenant_missing => return Err(CoordinatorError::TenantNotFound),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(CoordinatorError::not_ready(
                        "the placement refresh did not finish before the deadline",
                    ));
                }
            }
        }
        Err(CoordinatorError::not_ready(
            "placement changed twice during the request",
        ))
    }

    fn seal(&self, tenant: &str, key: &[u8], version: &Version) -> String {
        self.signer.seal(tenant, key, &version.context())
    }

    fn open(
        &self,
        tenant: &str,
        key: &[u8],
        token: &str,
    ) -> Result<Option<pairdb_core::Context>, CoordinatorError> {
        if token.is_empty() {
            return Ok(None);
        }
        self.signer
            .open(tenant, key, token)
            .map(Some)
            .map_err(|e| CoordinatorError::invalid(ErrorKind::BadContext, e.to_string()))
    }
}

/// A key reference for storage RPCs.
fn key_ref(tenant: &str, key: &[u8]) -> pairdb_proto::storage::KeyRef {
    pairdb_proto::storage::KeyRef {
        namespace: tenant.to_owned(),
        key: key.to_vec(),
    }
}

/// One attempt's failure: either final, or the placement was stale and the attempt may be
/// retried after a refresh (nothing was minted).
enum AttemptError {
    Stale,
    Failed(CoordinatorError),
}

impl From<CoordinatorError> for AttemptError {
    fn from(e: CoordinatorError) -> Self {
        AttemptError::Failed(e)
    }
}
