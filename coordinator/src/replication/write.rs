//! The write path (DESIGN §2, steps 1–4).
//!
//! A write runs as a task of its own — the *pipeline*: the leader mints, then every other replica
//! applies, all under the replication deadline ([`CoordinatorConfig::replication_timeout`]).
//! The pipeline decides the request's answer — once `W` replicas hold the version, or once they
//! cannot — and the request waits for it until its own deadline: a client that gives up early
//! (even after 1 ms) leaves a pipeline that still mints, if its mint was already sent, and still
//! replicates to every replica. Replicas that do not ack get a hint.
//!
//! Leader failover: the next live replica leads only when the previous one provably minted
//! nothing — it refused explicitly, or the call never reached it. Any other failure (a broken
//! stream, no answer) may have minted, so the answer is 504 `applied: unknown`, and the client
//! retries with its idempotency key, which the leader deduplicates.
//!
//! [`CoordinatorConfig::replication_timeout`]: crate::CoordinatorConfig::replication_timeout

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use pairdb_core::ErrorKind;
use pairdb_core::version::{Version, WriteRecord};
use pairdb_proto::convert::{context_to_pb, version_from_pb, write_record_from_pb};
use pairdb_proto::storage::{
    ApplyOutcome, ApplyRequest, HintEntry, MintRequest, RecordHintsRequest, RefusalReason,
};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{AttemptError, Conflict, Replicator, WriteOp, WriteOutcome, key_ref};
use crate::cluster::{Cluster, PlacementView, RpcError};
use crate::error::{Applied, CoordinatorError};
use crate::hints::Hint;

impl Replicator {
    /// Writes `op` and answers once `W` replicas hold the version durably.
    ///
    /// Fails with `WriteUnavailable { applied: None }` when fewer than `W` replicas are believed
    /// live or no leader could mint, `WriteUnavailable { applied: Partial }` when replicas failed
    /// after the version was minted, `Timeout { applied: Unknown }` when the deadline passed or a
    /// leader's call broke, `Invalid { IdempotencyKeyReused }` when the idempotency key already
    /// produced a different write on this key, and `NotReady { applied: None }` when no placement
    /// could be had. Retrying with the same idempotency key is always safe: the leader
    /// deduplicates, and answers what the first attempt produced.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, CoordinatorError> {
        let context = self.open(&op.tenant, &op.key, &op.context)?;
        let context = context.as_ref().map(context_to_pb);
        self.with_placement(op.deadline, |view| {
            let context = context.clone();
            let op = &op;
            async move { self.write_once(view, op, context).await }
        })
        .await
        .map_err(CoordinatorError::minted_nothing)
    }

    async fn write_once(
        &self,
        view: Arc<PlacementView>,
        op: &WriteOp,
        context: Option<pairdb_proto::storage::Context>,
    ) -> Result<WriteOutcome, AttemptError> {
        let replicas = view.replicas(&op.tenant, &op.key)?;
        let n = replicas.natural.len();
        let w = op.consistency.required(n);
        let pool = self.cluster.pool();
        // Only natural replicas lead: a pending one may not hold the key's history yet.
        let leaders: Vec<String> = replicas
            .natural
            .iter()
            .filter(|id| pool.is_live(id))
            .cloned()
            .collect();
        let targets = replicas.all();
        // During a transition the write needs the level in both replica sets.
        let quorums: Vec<(Vec<usize>, usize)> = replicas
            .quorums(op.consistency)
            .into_iter()
            .map(|(members, required)| {
                let idx = members
                    .iter()
                    .filter_map(|m| targets.iter().position(|t| t == m))
                    .collect();
                (idx, required)
            })
            .collect();
        let reachable = quorums.iter().all(|(members, required)| {
            members
                .iter()
                .filter(|&&i| pool.is_live(&targets[i]))
                .count()
                >= *required
        });
        if !reachable || w == 0 {
            return Err(unavailable(0, w, Applied::None).into());
        }

        // The pipeline outlives the answer: it holds its value — in the mint request, the
        // minted version and each replica's apply — until the last replica answers.
        let held =
            (op.value.len() + op.key.len() + op.content_type.len() + 512) * (targets.len() + 2);
        let Some(budget) = self.cluster.reserve_write(held) else {
            return Err(CoordinatorError::NotReady {
                detail: "too many writes in flight on this coordinator; retry".into(),
                applied: Some(Applied::None),
            }
            .into());
        };
        let (verdict, answer) = oneshot::channel();
        let progress = Arc::new(AtomicU32::new(0));
        let pipeline = Pipeline {
            _budget: budget,
            cluster: Arc::clone(&self.cluster),
            epoch: view.placement.epoch,
            tenant: op.tenant.clone(),
            key: op.key.clone(),
            targets: Mutex::new(targets.clone()),
            consistency: op.consistency,
            leaders,
            mint: MintRequest {
                epoch: view.placement.epoch,
                key: Some(key_ref(&op.tenant, &op.key)),
                context: context.clone(),
                tombstone: op.tombstone,
                value: op.value.clone(),
                content_type: op.content_type.clone(),
                idempotency_key: op.idempotency_key.clone(),
            },
            client_deadline: op.deadline,
            deadline: op
                .deadline
                .max(Instant::now() + self.cluster.config().replication_timeout),
            tally: Mutex::new(Tally {
                natural: (0..n).collect(),
                quorums,
                states: vec![Reply::Waiting; targets.len()],
                minted: None,
                lost: false,
                concurrent: false,
                verdict: Some(verdict),
                progress: Arc::clone(&progress),
            }),
        };
        // Its calls belong to this request's trace.
        tokio::spawn(
            pipeline
                .run()
                .instrument(pairdb_middleware::background_span("coordinator replicate")),
        );

        // The pipeline decides the answer — once W replicas hold the version durably (the
        // leader's own copy counts), or once they cannot — and wakes this request once.
        let unknown = |acks: u32| CoordinatorError::Timeout {
            progress: acks,
            required: w as u32,
            applied: Some(Applied::Unknown),
        };
        let mut answer = answer;
        let verdict = match tokio::time::timeout_at(op.deadline, &mut answer).await {
            Ok(Ok(verdict)) => verdict,
            // No verdict in time (or none at all): the write may be anywhere — unless the verdict
            // landed just as the deadline did.
            Ok(Err(_)) | Err(_) => match answer.try_recv() {
                Ok(verdict) => verdict,
                Err(_) => {
                    let acks = progress.load(Ordering::Acquire).min(w as u32 - 1);
                    return Err(unknown(acks).into());
                }
            },
        };
        let written = match verdict {
            Verdict::Written(written) => written,
            Verdict::NoLeader => return Err(unavailable(0, w, Applied::None).into()),
            Verdict::Stale => return Err(AttemptError::Stale),
            Verdict::KeyReused => {
                return Err(CoordinatorError::invalid(
                    ErrorKind::IdempotencyKeyReused,
                    "the idempotency key was already used for a different write on this key",
                )
                .into());
            }
            Verdict::Unknown { acks } => return Err(unknown(acks).into()),
            Verdict::Partial { acks } => {
                return Err(unavailable(acks as usize, w, Applied::Partial).into());
            }
        };
        // A blind write (no context) never reports a conflict it won; one with a context won
        // a conflict if it overwrote a version the context did not cover, at the leader or at a
        // replica that held a concurrent version the leader had not seen. For a replayed write
        // (`replayed`), the leader reports what it recorded and each replica what its first apply
        // did, so the same answers make the same report as the first attempt's.
        let conflict = if written.lost {
            Conflict::Lost
        } else if written.minted_conflict || (context.is_some() && written.concurrent) {
            Conflict::Won
        } else {
            Conflict::None
        };
        Ok(WriteOutcome {
            context: self.seal(&op.tenant, &op.key, &written.version),
            version: written.version,
            acks: written.acks,
            replicas: n as u32,
            conflict,
            replayed: written.replayed,
        })
    }
}

/// The answer to a write, as its pipeline decides it.
enum Verdict {
    /// W replicas hold the version.
    Written(Written),
    /// Every live replica refused or could not be reached: nothing was minted.
    NoLeader,
    /// A leader holds a newer placement: nothing was minted; refresh and retry.
    Stale,
    /// The idempotency key already produced a different write: nothing was minted.
    KeyReused,
    /// The outcome is unknown (a leader's answer was lost, or a replica gave no answer in time).
    Unknown { acks: u32 },
    /// Replicas provably failed to store it after the mint: fewer than W hold it.
    Partial { acks: u32 },
}

/// A write W replicas hold, and what they reported.
struct Written {
    version: Version,
    /// The leader reported a conflict (for a replayed write, what it reported the first time).
    minted_conflict: bool,
    /// The leader had already minted it.
    replayed: bool,
    acks: u32,
    /// A replica resolved it against a concurrent version with a greater key.
    lost: bool,
    /// A replica held a version concurrent with it.
    concurrent: bool,
}

/// How one replica has answered so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    /// No answer yet.
    Waiting,
    /// Holds the version durably.
    Stored,
    /// Did not acknowledge; `true` when it may still have stored the version.
    Missed(bool),
}

/// What the pipeline has seen so far, and the answer until it is sent.
struct Tally {
    /// Indexes (into `states`) of the natural replicas: their acks are the ones reported.
    natural: Vec<usize>,
    /// The replica sets the write must reach, as indexes into `states`, each with the acks it
    /// needs: the natural set, and during a transition the next one too.
    quorums: Vec<(Vec<usize>, usize)>,
    /// Each target's answer, in target order.
    states: Vec<Reply>,
    /// The version, whether the leader reported a conflict, and whether it was a replay; until
    /// the answer takes it.
    minted: Option<(Version, bool, bool)>,
    lost: bool,
    concurrent: bool,
    /// Taken when the answer is sent.
    verdict: Option<oneshot::Sender<Verdict>>,
    /// Acks so far, for a request that stops waiting before the answer.
    progress: Arc<AtomicU32>,
}

impl Tally {
    /// Acks among the natural replicas (what the answer reports).
    fn acks(&self) -> usize {
        self.natural
            .iter()
            .filter(|&&i| self.states.get(i) == Some(&Reply::Stored))
            .count()
    }

    fn count(&self, members: &[usize], f: impl Fn(Reply) -> bool) -> usize {
        members
            .iter()
            .filter(|&&i| self.states.get(i).is_some_and(|s| f(*s)))
            .count()
    }

    fn set(&mut self, node: usize, reply: Reply) {
        if let Some(s) = self.states.get_mut(node) {
            *s = reply;
        }
    }

    fn observe(&mut self, event: Event) {
        match event {
            Event::Minted {
                node,
                version,
                conflict,
                deduplicated,
            } => {
                self.minted = Some((version, conflict, deduplicated));
                self.set(node, Reply::Stored);
            }
            Event::NoLeader => self.decide(Verdict::NoLeader),
            Event::Stale => self.decide(Verdict::Stale),
            Event::KeyReused => self.decide(Verdict::KeyReused),
            // A leader whose answer was lost or unreadable may have minted: unknown.
            Event::LeaderUnknown => self.decide(Verdict::Unknown { acks: 0 }),
            Event::Stored {
                node,
                merged,
                concurrent,
            } => {
                self.set(node, Reply::Stored);
                self.lost |= merged;
                self.concurrent |= concurrent;
            }
            Event::Missed {
                node,
                may_have_stored,
            } => self.set(node, Reply::Missed(may_have_stored)),
            Event::Retarget {
                targets,
                natural,
                quorums,
            } => {
                self.states.resize(targets, Reply::Waiting);
                self.natural = natural;
                self.quorums = quorums;
            }
        }
        let acks = self.acks() as u32;
        self.progress.store(acks, Ordering::Release);
        if self.minted.is_none() || self.verdict.is_none() {
            return;
        }
        let met = self
            .quorums
            .iter()
            .all(|(m, required)| self.count(m, |s| s == Reply::Stored) >= *required);
        // A set that can no longer reach its count with the replicas still answering.
        let short = self.quorums.iter().find(|(m, required)| {
            self.count(m, |s| matches!(s, Reply::Stored | Reply::Waiting)) < *required
        });
        if met {
            // Answered once: the version moves into the answer.
            if let Some((version, minted_conflict, replayed)) = self.minted.take() {
                let written = Written {
                    version,
                    minted_conflict,
                    replayed,
                    acks,
                    lost: self.lost,
                    concurrent: self.concurrent,
                };
                self.decide(Verdict::Written(written));
            }
        } else if let Some((members, required)) = short {
            let possible = self.count(members, |s| {
                matches!(s, Reply::Stored | Reply::Waiting | Reply::Missed(true))
            });
            if possible >= *required {
                // Replicas that failed without proof may hold it: whether W do is unknown.
                self.decide(Verdict::Unknown { acks });
            } else {
                self.decide(Verdict::Partial { acks });
            }
        }
    }

    /// Sends the answer, once; later events only feed the tally.
    fn decide(&mut self, verdict: Verdict) {
        if let Some(answer) = self.verdict.take() {
            // The request may have stopped waiting; the pipeline goes on regardless.
            let _ = answer.send(verdict);
        }
    }
}

/// What happens in a pipeline, in order: how the mint went, then one event per other replica.
enum Event {
    /// A leader minted (or, `deduplicated`, had already minted) the version; `conflict` is what
    /// it reported (for a deduplicated write, what it reported the first time).
    Minted {
        node: usize,
        version: Version,
        conflict: bool,
        deduplicated: bool,
    },
    /// Every live replica refused or could not be reached: nothing was minted.
    NoLeader,
    /// A leader holds a newer placement: nothing was minted; refresh and retry.
    Stale,
    /// The idempotency key already produced a different write: nothing was minted.
    KeyReused,
    /// A leader's call failed — or its answer was unreadable — in a way that does not tell
    /// whether it minted.
    LeaderUnknown,
    /// A replica stored the version durably; `merged` when a concurrent stored version won
    /// there, `concurrent` when it held a version concurrent with it (won or lost).
    Stored {
        node: usize,
        merged: bool,
        concurrent: bool,
    },
    /// A replica did not acknowledge it (hinted); `may_have_stored` unless its failure proves it
    /// stored nothing (it refused, or the call never reached it) — no answer in time, a broken
    /// stream.
    Missed { node: usize, may_have_stored: bool },
    /// A replica held a newer placement: the write now goes to `targets` replicas (the old
    /// ones, then those the new placement adds), and must meet the level in the new placement's
    /// sets (`quorums`, `natural`), whose acks are what counts from now on.
    Retarget {
        targets: usize,
        natural: Vec<usize>,
        quorums: Vec<(Vec<usize>, usize)>,
    },
}

/// One write, from the mint to the last replica's answer.
struct Pipeline {
    /// Its share of the coordinator's in-flight budget, returned when it ends.
    _budget: tokio::sync::OwnedSemaphorePermit,
    cluster: Arc<Cluster>,
    epoch: u64,
    tenant: String,
    key: Vec<u8>,
    /// Every replica the write goes to: the natural ones, then those a transition adds (and
    /// those a newer placement met on the way adds).
    targets: Mutex<Vec<String>>,
    /// The level, to count a newer placement's sets with.
    consistency: pairdb_core::Consistency,
    /// The replicas believed live, in preference order: leader candidates.
    leaders: Vec<String>,
    mint: MintRequest,
    /// When the client stops waiting: no new leader is tried after it.
    client_deadline: Instant,
    /// When the pipeline gives up: the replication deadline.
    deadline: Instant,
    tally: Mutex<Tally>,
}

impl Pipeline {
    async fn run(self) {
        let Some((leader, version, record)) = self.mint().await else {
            return;
        };
        self.replicate(&leader, version, record).await;
    }

    /// The index of `node` among the targets (leaders are always targets).
    fn index_of(&self, node: &str) -> usize {
        self.targets()
            .iter()
            .position(|t| t == node)
            .unwrap_or(usize::MAX)
    }

    fn targets(&self) -> Vec<String> {
        self.targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Moves the write onto `replicas` (of a newer placement): new targets are appended and
    /// the tally counts the new sets. Answers the index of each of `replicas`' nodes.
    fn retarget(&self, replicas: &pairdb_core::Replicas) -> Vec<(usize, String)> {
        let (all, indexed) = {
            let mut targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
            let mut indexed = Vec::new();
            for n in replicas.all() {
                let i = match targets.iter().position(|t| *t == n) {
                    Some(i) => i,
                    None => {
                        targets.push(n.clone());
                        targets.len() - 1
                    }
                };
                indexed.push((i, n));
            }
            (targets.clone(), indexed)
        };
        let index = |n: &String| all.iter().position(|t| t == n).unwrap_or(usize::MAX);
        let quorums = replicas
            .quorums(self.consistency)
            .into_iter()
            .map(|(members, required)| (members.iter().map(index).collect(), required))
            .collect();
        let natural = replicas.natural.iter().map(index).collect();
        self.tell(Event::Retarget {
            targets: all.len(),
            natural,
            quorums,
        });
        indexed
    }

    fn tell(&self, event: Event) {
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(event);
    }

    /// Steps 1–2: the first live replica that answers mints the version.
    async fn mint(&self) -> Option<(String, pairdb_proto::storage::Version, Option<WriteRecord>)> {
        for (attempt, leader) in self.leaders.iter().enumerate() {
            if attempt > 0 && Instant::now() >= self.client_deadline {
                // Nobody waits for this write any more (the client was told its outcome is
                // unknown): do not fail it over to mint it somewhere new.
                self.tell(Event::LeaderUnknown);
                return None;
            }
            let result = self
                .cluster
                .rpc(leader, self.deadline, |mut c| {
                    let r = self.mint.clone();
                    async move { c.mint(r).await }
                })
                .await;
            let response = match result {
                Ok(response) => response,
                Err(RpcError::StaleEpoch { .. }) => {
                    self.tell(Event::Stale);
                    return None;
                }
                Err(RpcError::Refused {
                    reason: RefusalReason::IdempotencyKeyReused,
                    ..
                }) => {
                    self.tell(Event::KeyReused);
                    return None;
                }
                Err(e) if e.changed_nothing() => {
                    tracing::debug!(node = %leader, error = %e, "leader minted nothing; trying the next replica");
                    continue;
                }
                Err(e) => {
                    tracing::debug!(node = %leader, error = %e, "leader outcome unknown");
                    self.tell(Event::LeaderUnknown);
                    return None;
                }
            };
            // The wire version goes on to the replicas as it came; the model one to the answer.
            let decoded = response
                .version
                .ok_or_else(|| "leader returned no version".to_owned())
                .and_then(|pb| {
                    version_from_pb(pb.clone())
                        .map(|v| (v, pb))
                        .map_err(|e| format!("leader returned a bad version: {e}"))
                })
                .and_then(|(v, pb)| {
                    let record = response
                        .record
                        .map(write_record_from_pb)
                        .transpose()
                        .map_err(|e| format!("leader returned a bad write record: {e}"))?;
                    Ok((v, pb, record))
                });
            return match decoded {
                Ok((version, pb, record)) => {
                    self.tell(Event::Minted {
                        node: self.index_of(leader),
                        version,
                        conflict: response.conflict,
                        deduplicated: response.deduplicated,
                    });
                    Some((leader.clone(), pb, record))
                }
                Err(detail) => {
                    // It may well have minted; nothing can be replicated from an unreadable answer.
                    tracing::error!(node = %leader, %detail, "malformed mint answer");
                    self.tell(Event::LeaderUnknown);
                    None
                }
            };
        }
        self.tell(Event::NoLeader);
        None
    }

    /// Step 3: every other replica applies the version; those that do not get a hint.
    async fn replicate(
        &self,
        leader: &str,
        version: pairdb_proto::storage::Version,
        record: Option<WriteRecord>,
    ) {
        let request = ApplyRequest {
            epoch: self.epoch,
            key: Some(key_ref(&self.tenant, &self.key)),
            version: Some(version),
            record: record
                .as_ref()
                .map(pairdb_proto::convert::write_record_to_pb),
        };
        let request = &request;
        let mut missed: Vec<String> = Vec::new();
        let send = |j: usize, n: String, at: u64| async move {
            let r = self.apply_to(&n, request, at).await;
            (j, n, at, r)
        };
        let mut applies = FuturesUnordered::new();
        // The epoch the applies go out with; it moves when a replica holds a newer placement.
        let mut epoch = self.epoch;
        let mut retargets = 0;
        // The key's replicas at `epoch`.
        let mut current = self.targets();
        for (i, node) in self.targets().into_iter().enumerate() {
            if node == leader {
                continue;
            }
            if !self.cluster.pool().is_live(&node) {
                // Down nodes are not tried; the hint catches them up when they are back.
                missed.push(node.clone());
                self.tell(Event::Missed {
                    node: i,
                    may_have_stored: false,
                });
                continue;
            }
            applies.push(send(i, node, epoch));
        }
        while let Some((i, node, sent_at, result)) = applies.next().await {
            match result {
                Ok(response) => self.tell(Event::Stored {
                    node: i,
                    merged: response.outcome == ApplyOutcome::Merged as i32,
                    concurrent: response.concurrent,
                }),
                // A replica on a newer placement: the write moves onto that placement's
                // replicas — the ones it adds are sent the version, and its sets are the ones
                // that must meet the level — instead of counting a failed ack.
                // Refused at an epoch older than the one the write has moved to: sent again if
                // it is still a replica there, else no longer one of the write's.
                Err(RpcError::StaleEpoch { .. }) if sent_at < epoch => {
                    if current.contains(&node) {
                        applies.push(send(i, node, epoch));
                    } else {
                        self.tell(Event::Missed {
                            node: i,
                            may_have_stored: false,
                        });
                    }
                }
                Err(RpcError::StaleEpoch { .. }) if retargets < MAX_RETARGETS => {
                    let refreshed =
                        tokio::time::timeout_at(self.deadline, self.cluster.refresh_past(sent_at))
                            .await;
                    let next = refreshed.ok().and_then(Result::ok).and_then(|view| {
                        let r = view.replicas(&self.tenant, &self.key).ok()?;
                        Some((view.placement.epoch, r))
                    });
                    let Some((next_epoch, replicas)) = next else {
                        missed.push(node.clone());
                        self.tell(Event::Missed {
                            node: i,
                            may_have_stored: false,
                        });
                        continue;
                    };
                    let mut resend: Vec<(usize, String)> = Vec::new();
                    if next_epoch > epoch {
                        retargets += 1;
                        current = replicas.all();
                        let before = self.targets().len();
                        epoch = next_epoch;
                        for (j, n) in self.retarget(&replicas) {
                            // New targets get it now; the refusing one below.
                            if j < before || n == leader {
                                continue;
                            }
                            if self.cluster.pool().is_live(&n) {
                                resend.push((j, n));
                            } else {
                                missed.push(n.clone());
                                self.tell(Event::Missed {
                                    node: j,
                                    may_have_stored: false,
                                });
                            }
                        }
                    }
                    if replicas.all().contains(&node) {
                        resend.push((i, node.clone()));
                    } else {
                        // No longer a replica of the key: nothing to catch up.
                        self.tell(Event::Missed {
                            node: i,
                            may_have_stored: false,
                        });
                    }
                    for (j, n) in resend {
                        applies.push(send(j, n, epoch));
                    }
                }
                Err(e) => {
                    tracing::debug!(%node, error = %e, "replica did not apply");
                    missed.push(node.clone());
                    self.tell(Event::Missed {
                        node: i,
                        may_have_stored: !e.changed_nothing(),
                    });
                }
            }
        }
        if !missed.is_empty() {
            self.hand_off(leader, &missed, request, record).await;
        }
    }

    /// Tells the write's leader that `missed` did not store it: the leader keeps durable hints
    /// and catches them up when they are back. If the leader cannot be told, this coordinator
    /// keeps the hints in memory instead.
    async fn hand_off(
        &self,
        leader: &str,
        missed: &[String],
        request: &ApplyRequest,
        record: Option<WriteRecord>,
    ) {
        let hints = RecordHintsRequest {
            hints: missed
                .iter()
                .map(|target| HintEntry {
                    target: target.clone(),
                    key: Some(key_ref(&self.tenant, &self.key)),
                })
                .collect(),
        };
        // A budget of its own: the replicas it hints for may have used up the write's.
        let told = match self.cluster.pool().get(leader) {
            Some(handle) => {
                let mut client = handle.client();
                let call = client.record_hints(hints);
                matches!(
                    tokio::time::timeout(HAND_OFF_TIMEOUT, call).await,
                    Ok(Ok(_))
                )
            }
            None => false,
        };
        if told {
            return;
        }
        tracing::debug!(%leader, "the leader could not take the hints; kept here");
        for node in missed {
            self.hint(node, request, record);
        }
    }

    /// Sends `request` to `node` at `epoch` (the version itself does not depend on the epoch).
    async fn apply_to(
        &self,
        node: &str,
        request: &ApplyRequest,
        epoch: u64,
    ) -> Result<pairdb_proto::storage::ApplyResponse, RpcError> {
        self.cluster
            .rpc(node, self.deadline, move |mut c| {
                let mut request = request.clone();
                request.epoch = epoch;
                async move { c.apply(request).await }
            })
            .await
    }

    /// Records that `node` missed the write `request` carries.
    fn hint(&self, node: &str, request: &ApplyRequest, record: Option<WriteRecord>) {
        // The version decoded once already, at the mint: this cannot fail.
        let Some(version) = request
            .version
            .clone()
            .and_then(|v| version_from_pb(v).ok())
        else {
            tracing::error!(%node, "cannot decode a minted version for its hint");
            return;
        };
        self.cluster.hints().record(Hint {
            node: node.to_owned(),
            tenant: self.tenant.clone(),
            key: self.key.clone(),
            version,
            record,
        });
    }
}

/// How long telling a leader about missed replicas may take.
const HAND_OFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How many newer placements one write follows before it counts a refusal as a miss.
const MAX_RETARGETS: u32 = 2;

fn unavailable(acks: usize, required: usize, applied: Applied) -> CoordinatorError {
    CoordinatorError::WriteUnavailable {
        acks: acks as u32,
        required: required as u32,
        applied,
    }
}
