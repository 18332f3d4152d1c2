//! The read path: ask every replica, answer after `R`, resolve, repair.

use std::sync::Arc;

use pairdb_core::Consistency;
use pairdb_core::version::Version;
use pairdb_proto::convert::{version_from_pb, version_to_pb};
use pairdb_proto::storage::{ApplyRequest, ReadRequest};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{AttemptError, ReadOp, ReadOutcome, Replicator, key_ref};
use crate::cluster::{Cluster, PlacementView, RpcError};
use crate::error::CoordinatorError;

type Answer = (String, Result<Option<Version>, RpcError>);

impl Replicator {
    /// Reads `op.key`: asks every live replica, answers after `R` of them, returns the resolved
    /// version and repairs every replica that answered an older, concurrent or missing version
    /// (tombstones included). Repair of the first answers is awaited for `quorum` and `all`,
    /// and runs in the background for `one`; late answers are repaired in the background.
    ///
    /// Fails with `ReadUnavailable` when fewer than `R` replicas can answer and `Timeout` when
    /// the deadline passes first.
    pub async fn read(&self, op: ReadOp) -> Result<ReadOutcome, CoordinatorError> {
        self.with_placement(op.deadline, |view| {
            let op = &op;
            async move { self.read_once(&view, op).await }
        })
        .await
    }

    async fn read_once(
        &self,
        view: &PlacementView,
        op: &ReadOp,
    ) -> Result<ReadOutcome, AttemptError> {
        let prefs = view.preference_list(&op.tenant, &op.key)?;
        let n = prefs.len();
        let r = op.consistency.required(n);
        let epoch = view.placement.epoch;
        let pool = self.cluster.pool();
        let targets: Vec<String> = prefs.into_iter().filter(|id| pool.is_live(id)).collect();
        if targets.len() < r || r == 0 {
            return Err(CoordinatorError::ReadUnavailable {
                answered: 0,
                required: r as u32,
            }
            .into());
        }

        let request = ReadRequest {
            epoch,
            key: Some(key_ref(&op.tenant, &op.key)),
        };
        let (tx, mut rx) = mpsc::channel::<Answer>(targets.len());
        for node in targets.iter().cloned() {
            let cluster = self.cluster.clone();
            let req = request.clone();
            let tx = tx.clone();
            let deadline = op.deadline;
            tokio::spawn(async move {
                let r = cluster
                    .rpc(&node, deadline, |mut c| {
                        let req = req.clone();
                        async move { c.read(req).await }
                    })
                    .await
                    .and_then(|resp| match resp.version {
                        None => Ok(None),
                        Some(v) => version_from_pb(v).map(Some).map_err(|e| {
                            RpcError::Status(tonic::Status::internal(format!("bad version: {e}")))
                        }),
                    });
                let _ = tx.send((node, r)).await;
            });
        }
        drop(tx);

        let mut answers: Vec<(String, Option<Version>)> = Vec::with_capacity(targets.len());
        let mut failed = 0usize;
        let mut timed_out = false;
        while answers.len() < r {
            if answers.len() + (targets.len() - answers.len() - failed) < r {
                break;
            }
            match tokio::time::timeout_at(op.deadline, rx.recv()).await {
                Err(_) => {
                    return Err(CoordinatorError::Timeout {
                        progress: answers.len() as u32,
                        required: r as u32,
                        applied: None,
                    }
                    .into());
                }
                Ok(None) => break,
                Ok(Some((node, Ok(v)))) => answers.push((node, v)),
                // A replica on a newer placement: this read may not overlap the writes made
                // with it, so start over on the new placement.
                Ok(Some((_, Err(RpcError::StaleEpoch)))) => return Err(AttemptError::Stale),
                Ok(Some((_, Err(RpcError::Timeout)))) => {
                    timed_out = true;
                    failed += 1;
                }
                Ok(Some((_, Err(_)))) => failed += 1,
            }
        }
        if answers.len() < r {
            if timed_out {
                return Err(CoordinatorError::Timeout {
                    progress: answers.len() as u32,
                    required: r as u32,
                    applied: None,
                }
                .into());
            }
            return Err(CoordinatorError::ReadUnavailable {
                answered: answers.len() as u32,
                required: r as u32,
            }
            .into());
        }

        let (resolved, conflict) = resolve_answers(answers.iter().map(|(_, v)| v.as_ref()));
        let mut read_repairs = 0u32;
        if let Some(resolved) = &resolved {
            let stale_nodes: Vec<String> = answers
                .iter()
                .filter(|(_, v)| v.as_ref() != Some(resolved))
                .map(|(node, _)| node.clone())
                .collect();
            let repair = ApplyRequest {
                epoch,
                key: Some(key_ref(&op.tenant, &op.key)),
                version: Some(version_to_pb(resolved)),
            };
            if op.consistency == Consistency::One {
                for node in stale_nodes {
                    let cluster = self.cluster.clone();
                    let req = repair.clone();
                    tokio::spawn(async move {
                        repair_node(&cluster, &node, req, background_deadline()).await
                    });
                }
            } else {
                let repairs = stale_nodes
                    .iter()
                    .map(|node| repair_node(&self.cluster, node, repair.clone(), op.deadline));
                // Each repair gives up at the deadline, so this wait is bounded by it too.
                read_repairs = futures::future::join_all(repairs)
                    .await
                    .into_iter()
                    .filter(|ok| *ok)
                    .count() as u32;
            }
            // Late answers are repaired in the background.
            let cluster = self.cluster.clone();
            let resolved = resolved.clone();
            tokio::spawn(async move {
                while let Some((node, answer)) = rx.recv().await {
                    if let Ok(v) = answer
                        && v.as_ref() != Some(&resolved)
                    {
                        repair_node(&cluster, &node, repair.clone(), background_deadline()).await;
                    }
                }
            });
        }

        let context = resolved
            .as_ref()
            .map(|v| self.seal(&op.tenant, &op.key, v))
            .unwrap_or_default();
        Ok(ReadOutcome {
            version: resolved,
            context,
            answered: answers.len() as u32,
            replicas: n as u32,
            conflict,
            read_repairs,
        })
    }
}

fn background_deadline() -> Instant {
    Instant::now() + std::time::Duration::from_secs(5)
}

/// Sends the resolved version to `node`; true if it stored it.
async fn repair_node(
    cluster: &Arc<Cluster>,
    node: &str,
    req: ApplyRequest,
    deadline: Instant,
) -> bool {
    let ok = cluster
        .rpc(node, deadline, |mut c| {
            let req = req.clone();
            async move { c.apply(req).await }
        })
        .await
        .is_ok();
    if ok {
        tracing::debug!(node, "read repair");
    }
    ok
}

/// Resolves the answered versions. The conflict flag is set when no single answer descends all
/// the others, i.e. concurrent versions had to be resolved by last-write-wins.
pub fn resolve_answers<'a>(
    answers: impl Iterator<Item = Option<&'a Version>> + Clone,
) -> (Option<Version>, bool) {
    let present: Vec<&Version> = answers.flatten().collect();
    let resolved = present.iter().fold(None::<Version>, |acc, v| match acc {
        None => Some((*v).clone()),
        Some(a) => Some(a.resolve(v)),
    });
    let conflict = !present
        .iter()
        .any(|v| present.iter().all(|o| v.clock.descends(&o.clock)));
    (resolved, conflict && !present.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairdb_core::version::{MintRequest, mint};
    use pairdb_core::{Actor, Hlc};

    #[test]
    fn conflict_only_when_no_answer_covers_the_rest() {
        let hlc = Hlc::new();
        let (a, _) = mint(None, MintRequest::default(), &Actor::new("a", 1), &hlc);
        let (b, _) = mint(None, MintRequest::default(), &Actor::new("b", 1), &hlc);
        let (c, _) = mint(
            Some(&a.resolve(&b)),
            MintRequest::default(),
            &Actor::new("a", 1),
            &hlc,
        );
        let answers = [Some(&a), Some(&b), None];
        let (r, conflict) = resolve_answers(answers.iter().copied());
        assert!(conflict);
        let r = r.unwrap_or_default();
        assert!(r.clock.descends(&a.clock) && r.clock.descends(&b.clock));
        let answers = [Some(&a), Some(&b), Some(&c)];
        assert!(!resolve_answers(answers.iter().copied()).1);
        let answers: [Option<&Version>; 2] = [None, None];
        assert_eq!(resolve_answers(answers.iter().copied()), (None, false));
    }
}
