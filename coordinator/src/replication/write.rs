//! The write path (DESIGN §2, steps 1–4).

use pairdb_core::version::Version;
use pairdb_proto::convert::{context_to_pb, version_from_pb};
use pairdb_proto::storage::{ApplyOutcome, ApplyRequest, MintRequest, MintResponse};
use tokio::sync::mpsc;

use super::{AttemptError, Conflict, Replicator, WriteOp, WriteOutcome, key_ref};
use crate::cluster::{PlacementView, RpcError};
use crate::error::{Applied, CoordinatorError};
use crate::pool::{never_sent, refused_by_node};

impl Replicator {
    /// Writes `op` and answers once `W` replicas hold the version durably.
    ///
    /// Fails with `WriteUnavailable { applied: None }` when fewer than `W` replicas are believed
    /// live or no leader could mint, `WriteUnavailable { applied: Partial }` when replicas failed
    /// after the version was minted, and `Timeout { applied: Unknown }` when the deadline passed.
    /// Retrying with the same idempotency key is always safe: the leader deduplicates.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, CoordinatorError> {
        let context = self.open(&op.tenant, &op.key, &op.context)?;
        let context = context.as_ref().map(context_to_pb);
        self.with_placement(op.deadline, |view| {
            let context = context.clone();
            let op = &op;
            async move { self.write_once(&view, op, context).await }
        })
        .await
    }

    async fn write_once(
        &self,
        view: &PlacementView,
        op: &WriteOp,
        context: Option<pairdb_proto::storage::Context>,
    ) -> Result<WriteOutcome, AttemptError> {
        let prefs = view.preference_list(&op.tenant, &op.key)?;
        let n = prefs.len();
        let w = op.consistency.required(n);
        let op_has_context = context.is_some();
        let epoch = view.placement.epoch;
        let pool = self.cluster.pool();
        let live: Vec<&String> = prefs.iter().filter(|id| pool.is_live(id)).collect();
        if live.len() < w || w == 0 {
            return Err(unavailable(0, w, Applied::None).into());
        }

        // Step 1–2: the first live replica that answers mints the version.
        let request = MintRequest {
            epoch,
            key: Some(key_ref(&op.tenant, &op.key)),
            context,
            tombstone: op.tombstone,
            value: op.value.clone(),
            content_type: op.content_type.clone(),
            idempotency_key: op.idempotency_key.clone(),
        };
        let mut minted: Option<(String, MintResponse)> = None;
        for leader in live {
            let result = self
                .cluster
                .rpc(leader, op.deadline, |mut c| {
                    let r = request.clone();
                    async move { c.mint(r).await }
                })
                .await;
            match result {
                Ok(resp) => {
                    minted = Some((leader.clone(), resp));
                    break;
                }
                Err(RpcError::Timeout) => {
                    return Err(CoordinatorError::Timeout {
                        progress: 0,
                        required: w as u32,
                        applied: Some(Applied::Unknown),
                    }
                    .into());
                }
                Err(RpcError::StaleEpoch) => return Err(AttemptError::Stale),
                Err(RpcError::Status(s)) if never_sent(&s) || refused_by_node(&s) => {
                    tracing::debug!(node = %leader, error = %s, "leader minted nothing; trying the next replica");
                }
                Err(RpcError::Status(s)) => {
                    // The leader may have minted before the call broke: trying another leader
                    // could mint the write twice. Like a timeout, the outcome is unknown; the
                    // client retries with its idempotency key.
                    tracing::debug!(node = %leader, error = %s, "leader outcome unknown");
                    return Err(CoordinatorError::Timeout {
                        progress: 0,
                        required: w as u32,
                        applied: Some(Applied::Unknown),
                    }
                    .into());
                }
                Err(RpcError::UnknownNode) => {}
            }
        }
        let Some((leader, minted)) = minted else {
            return Err(unavailable(0, w, Applied::None).into());
        };
        let version_pb = minted
            .version
            .ok_or_else(|| CoordinatorError::Internal("leader returned no version".into()))?;
        let version: Version = version_from_pb(version_pb.clone()).map_err(|e| {
            CoordinatorError::Internal(format!("leader returned a bad version: {e}"))
        })?;

        // Step 3: every other replica applies it, in the background past the answer.
        let apply = ApplyRequest {
            epoch,
            key: Some(key_ref(&op.tenant, &op.key)),
            version: Some(version_pb),
        };
        let others: Vec<String> = prefs.into_iter().filter(|id| *id != leader).collect();
        let (tx, mut rx) = mpsc::channel::<ReplicaAck>(others.len().max(1));
        for node in others.clone() {
            if !pool.is_live(&node) {
                // Down nodes are not tried (hinted handoff and anti-entropy catch them up).
                let _ = tx.try_send(ReplicaAck::Failed);
                continue;
            }
            let cluster = self.cluster.clone();
            let req = apply.clone();
            let tx = tx.clone();
            let deadline = op.deadline;
            tokio::spawn(async move {
                let r = cluster
                    .rpc(&node, deadline, |mut c| {
                        let req = req.clone();
                        async move { c.apply(req).await }
                    })
                    .await;
                let msg = match r {
                    Ok(resp) => ReplicaAck::Stored {
                        merged: resp.outcome == ApplyOutcome::Merged as i32,
                        concurrent: resp.concurrent,
                    },
                    Err(RpcError::Timeout) => ReplicaAck::TimedOut,
                    Err(e) => {
                        if matches!(e, RpcError::StaleEpoch) {
                            let c = cluster.clone();
                            tokio::spawn(async move { c.refresh().await });
                        }
                        ReplicaAck::Failed
                    }
                };
                let _ = tx.send(msg).await;
            });
        }
        drop(tx);

        // Step 4: answer once W replicas hold it durably (the leader's own copy counts).
        let mut acks = 1usize;
        let mut failed = 0usize;
        let mut timed_out = false;
        let mut lost = false;
        let mut overwrote_concurrent = false;
        while acks < w {
            let remaining = others.len() - (acks - 1) - failed;
            if acks + remaining < w {
                break;
            }
            match tokio::time::timeout_at(op.deadline, rx.recv()).await {
                Err(_) => {
                    return Err(CoordinatorError::Timeout {
                        progress: acks as u32,
                        required: w as u32,
                        applied: Some(Applied::Unknown),
                    }
                    .into());
                }
                Ok(None) => break,
                Ok(Some(ReplicaAck::Stored { merged, concurrent })) => {
                    acks += 1;
                    lost |= merged;
                    overwrote_concurrent |= concurrent;
                }
                Ok(Some(ReplicaAck::TimedOut)) => {
                    failed += 1;
                    timed_out = true;
                }
                Ok(Some(ReplicaAck::Failed)) => failed += 1,
            }
        }
        if acks < w {
            if timed_out {
                // A replica that did not answer in time may still store the version.
                return Err(CoordinatorError::Timeout {
                    progress: acks as u32,
                    required: w as u32,
                    applied: Some(Applied::Unknown),
                }
                .into());
            }
            return Err(unavailable(acks, w, Applied::Partial).into());
        }
        // A blind write (no context) never reports a conflict it won; one with a context won
        // a conflict if it overwrote a version the context did not cover, at the leader or at a
        // replica that held a concurrent version the leader had not seen.
        let conflict = if lost {
            Conflict::Lost
        } else if minted.conflict || (op_has_context && overwrote_concurrent) {
            Conflict::Won
        } else {
            Conflict::None
        };
        Ok(WriteOutcome {
            context: self.seal(&op.tenant, &op.key, &version),
            version,
            acks: acks as u32,
            replicas: n as u32,
            conflict,
        })
    }
}

/// What one replica answered to the minted version.
enum ReplicaAck {
    /// Stored durably; `merged` when a concurrent stored version won there, `concurrent` when
    /// the replica held a version concurrent with it (won or lost).
    Stored { merged: bool, concurrent: bool },
    /// No answer before the deadline: it may still store it.
    TimedOut,
    /// Refused or unreachable.
    Failed,
}

fn unavailable(acks: usize, required: usize, applied: Applied) -> CoordinatorError {
    CoordinatorError::WriteUnavailable {
        acks: acks as u32,
        required: required as u32,
        applied,
    }
}
