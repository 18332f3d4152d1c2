//! The read path: ask every replica, answer after `R`, resolve, repair.
//!
//! Every live replica is asked under the replication deadline, so answers that come after the
//! client's answer still arrive. The client gets the resolution of the first `R` answers. Every
//! answer, early or late, is then folded into one join, and every replica known to hold less than
//! the join — an older, concurrent or missing version — is repaired with it: the first answers at
//! once (awaited for `quorum` and `all`, counted in the response), later ones as late answers
//! arrive, including when a late answer is the only one holding the key, or is newer than what
//! the early ones held (its version then reaches them too).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::future::{BoxFuture, OptionFuture};
use futures::stream::FuturesUnordered;
use pairdb_core::Consistency;
use pairdb_core::version::Version;
use pairdb_proto::convert::{version_from_pb, version_to_pb};
use pairdb_proto::storage::{ApplyRequest, ReadRequest};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{AttemptError, ReadOp, ReadOutcome, Replicator, key_ref};
use crate::cluster::{Cluster, PlacementView, RpcError};
use crate::error::CoordinatorError;

type Answer = (String, Result<Option<Version>, RpcError>);

impl Replicator {
    /// Reads `op.key`: asks every live replica, answers after `R` of them with the resolution of
    /// their answers, and repairs every replica that holds less than the join of all answers,
    /// early or late (tombstones included). Repair of the first answers is awaited for `quorum`
    /// and `all` and counted; the rest runs in the background.
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

        let background = Instant::now() + self.cluster.config().replication_timeout;
        let request = ReadRequest {
            epoch,
            key: Some(key_ref(&op.tenant, &op.key)),
        };
        // One task asks every replica, feeds the answers to this request, and once it has
        // answered, is handed the repair to finish with the late answers.
        let (tx, mut rx) = mpsc::channel::<Answer>(targets.len());
        let (handoff, handed) = oneshot::channel::<(Repair, mpsc::Receiver<Answer>)>();
        tokio::spawn(
            ask_replicas(
                Arc::clone(&self.cluster),
                targets.clone(),
                request,
                background,
                tx,
                handed,
            )
            // Its calls (and repairs) belong to this request's trace.
            .instrument(pairdb_middleware::background_span(
                "coordinator read replicas",
            )),
        );

        let mut answers: Vec<(String, Option<Version>)> = Vec::with_capacity(targets.len());
        let mut failed = 0usize;
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
                Ok(Some((_, Err(RpcError::StaleEpoch { .. })))) => return Err(AttemptError::Stale),
                Ok(Some((_, Err(_)))) => failed += 1,
            }
        }
        if answers.len() < r {
            return Err(CoordinatorError::ReadUnavailable {
                answered: answers.len() as u32,
                required: r as u32,
            }
            .into());
        }

        let (resolved, conflict) = resolve_answers(answers.iter().map(|(_, v)| v.as_ref()));
        let mut repair = Repair {
            cluster: Arc::clone(&self.cluster),
            epoch,
            tenant: op.tenant.clone(),
            key: op.key.clone(),
            join: resolved.clone(),
            holdings: answers.iter().cloned().collect(),
            deadline: background,
            _budget: None,
        };
        let mut read_repairs = 0u32;
        if op.consistency != Consistency::One {
            // Each repair gives up at the deadline, so this wait is bounded by it too.
            read_repairs = repair.round(op.deadline).await;
        }
        // The rest — repair for `one`, late answers, and what they change — in the background,
        // within the coordinator's in-flight budget (past it, late answers go unrepaired here;
        // later reads repair them).
        let held: usize = answers
            .iter()
            .filter_map(|(_, v)| v.as_ref().map(|v| v.value.len()))
            .sum();
        let reserved = self
            .cluster
            .reserve_repair((held + 1024).saturating_mul(targets.len() + 2));
        if let Some(budget) = reserved {
            repair._budget = Some(budget);
            // The task ends at once if it cannot take it (it already ended).
            let _ = handoff.send((repair, rx));
        } else {
            tracing::debug!("in-flight budget spent: late read answers left unrepaired");
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

/// Asks every target for its version of the key (all in this one task), passing each answer to
/// the request as it comes. Once the request has answered its client it hands over the repair
/// and the answers it did not read; the task then repairs with those and every later answer.
/// If the request stops without handing over (it failed, or the repair budget is spent), the
/// task ends, dropping the calls still out: a failed read does not wait on slow replicas (the
/// health probes, not reads, tell the failure detector about them).
async fn ask_replicas(
    cluster: Arc<Cluster>,
    targets: Vec<String>,
    request: ReadRequest,
    deadline: Instant,
    answers: mpsc::Sender<Answer>,
    mut handed: oneshot::Receiver<(Repair, mpsc::Receiver<Answer>)>,
) {
    let mut calls: FuturesUnordered<_> = targets
        .into_iter()
        .map(|node| {
            let cluster = Arc::clone(&cluster);
            let request = request.clone();
            async move {
                let answer = cluster
                    .rpc(&node, deadline, |mut c| {
                        let request = request.clone();
                        async move { c.read(request).await }
                    })
                    .await
                    .and_then(|resp| match resp.version {
                        None => Ok(None),
                        Some(v) => version_from_pb(v).map(Some).map_err(|e| {
                            RpcError::Failed(tonic::Status::internal(format!("bad version: {e}")))
                        }),
                    });
                (node, answer)
            }
        })
        .collect();
    let (mut repair, mut unread) = loop {
        tokio::select! {
            handoff = &mut handed => match handoff {
                Ok(handoff) => break handoff,
                Err(_) => return,
            },
            // The channel holds one answer per target, so this never waits.
            Some(answer) = calls.next() => {
                let _ = answers.try_send(answer);
            }
        }
    };
    drop(answers);
    while let Ok((node, answer)) = unread.try_recv() {
        if let Ok(held) = answer {
            repair.fold(node, held);
        }
    }
    // Repair rounds run while late answers keep coming in: each round repairs with the join as it
    // was when it started, and a late answer that changes what someone must receive starts the
    // next round once this one is done. (A replica a round could not repair is not retried until
    // another answer comes: no loop against a replica that keeps failing.)
    let deadline = repair.deadline;
    let mut round = repair.next_round(deadline);
    let mut changed = false;
    loop {
        tokio::select! {
            Some((node, answer)) = calls.next() => {
                if let Ok(held) = answer {
                    repair.fold(node, held);
                    changed = true;
                }
            }
            Some(stored) = OptionFuture::from(round.as_mut()), if round.is_some() => {
                round = None;
                repair.record(stored);
            }
            else => break,
        }
        if round.is_none() && changed {
            changed = false;
            round = repair.next_round(deadline);
        }
    }
}

/// Read repair of one key: the join of every answer so far, and what each answering replica is
/// known to hold.
struct Repair {
    cluster: Arc<Cluster>,
    epoch: u64,
    tenant: String,
    key: Vec<u8>,
    join: Option<Version>,
    holdings: BTreeMap<String, Option<Version>>,
    /// When background repair gives up.
    deadline: Instant,
    /// Its share of the coordinator's repair budget, while it runs in the background.
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Repair {
    /// Folds `node`'s answer into the join.
    fn fold(&mut self, node: String, held: Option<Version>) {
        if let Some(v) = &held {
            self.join = Some(match self.join.take() {
                None => v.clone(),
                Some(j) => j.resolve(v),
            });
        }
        self.holdings.insert(node, held);
    }

    /// Sends the join to every replica holding less, concurrently, giving up at `deadline`;
    /// returns how many stored it. A replica that stored it is then known to hold the join.
    async fn round(&mut self, deadline: Instant) -> u32 {
        match self.next_round(deadline) {
            Some(round) => {
                let stored = round.await;
                self.record(stored)
            }
            None => 0,
        }
    }

    /// The round the current join calls for, if any replica holds less: a future owning what it
    /// needs, so answers can be folded in while it runs. It resolves to the replicas that
    /// stored the join, with the join they now hold.
    fn next_round(&self, deadline: Instant) -> Option<BoxFuture<'static, Vec<(String, Version)>>> {
        let join = self.join.clone()?;
        let stale: Vec<String> = self
            .holdings
            .iter()
            .filter(|(_, held)| held.as_ref() != Some(&join))
            .map(|(node, _)| node.clone())
            .collect();
        if stale.is_empty() {
            return None;
        }
        // No write record: a repair never rewrites a replica's applied-keys entry.
        let request = ApplyRequest {
            epoch: self.epoch,
            key: Some(key_ref(&self.tenant, &self.key)),
            version: Some(version_to_pb(&join)),
            record: None,
        };
        let cluster = Arc::clone(&self.cluster);
        Some(
            async move {
                let repairs = stale.into_iter().map(|node| {
                    let request = &request;
                    let cluster = &cluster;
                    async move {
                        let stored = cluster
                            .rpc(&node, deadline, |mut c| {
                                let request = request.clone();
                                async move { c.apply(request).await }
                            })
                            .await
                            .is_ok();
                        (node, stored)
                    }
                });
                futures::future::join_all(repairs)
                    .await
                    .into_iter()
                    .filter(|(_, stored)| *stored)
                    .map(|(node, _)| (node, join.clone()))
                    .collect()
            }
            .boxed(),
        )
    }

    /// Records what a round stored; returns how many replicas it repaired.
    fn record(&mut self, stored: Vec<(String, Version)>) -> u32 {
        let repaired = stored.len() as u32;
        for (node, held) in stored {
            tracing::debug!(%node, "read repair");
            self.holdings.insert(node, Some(held));
        }
        repaired
    }
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
