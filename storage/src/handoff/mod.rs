//! Hinted handoff and failure detection on a storage node.
//!
//! When a replica misses a write — it failed, timed out, or was known down — the coordinator
//! tells the write's leader, which records a durable hint `(target, key)` in its [`HintLog`].
//! The node heartbeats its peers ([`Peers`]) and, when a hinted target is up again, sends it each
//! hinted key's current version (an `Apply` with no write record, like a read repair), paced,
//! and removes the hint once the target stored it. A hint is dropped unreplayed when it expires
//! ([`HINT_TTL`], far below the tombstone grace period, so a replay never brings back a purged
//! delete), when its target left the placement, or when the target is no longer a replica of
//! the key. Hints only speed convergence up: anti-entropy converges replicas without them.

pub mod hints;
pub mod peers;

use std::sync::Arc;
use std::time::Duration;

use pairdb_core::{Placement, Ring, StorageKey};
use pairdb_proto::convert;
use pairdb_proto::storage::{ApplyRequest, KeyRef, PushPlacementRequest, RefusalReason};

pub use hints::{HintCounts, HintError, HintLog};
pub use peers::{PeerView, Peers};

use crate::engine::StorageEngine;
use crate::node::NodeState;

/// How long a hint is kept: far below the tombstone grace period (10 days by default).
pub const HINT_TTL: Duration = Duration::from_secs(3 * 3600);
/// Hints replayed per target per round.
const REPLAY_BATCH: usize = 1024;
/// Applies to one target in flight at once (the throttle: a returning node takes at most this
/// many replayed writes at a time from each leader).
const REPLAY_PARALLEL: usize = 16;
/// Pause between replay rounds (shorter while a backlog drains).
const REPLAY_IDLE: Duration = Duration::from_secs(1);
const REPLAY_BUSY: Duration = Duration::from_millis(10);
/// How often hints past their TTL are dropped, whatever their target's state.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// How often the node's clock is recorded.
const CLOCK_EVERY: Duration = Duration::from_secs(1);
/// How long one replayed apply may take.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's hints and peers, and the tasks that keep them.
pub struct Handoff {
    /// The durable hints this node holds as a leader.
    pub hints: Arc<HintLog>,
    /// The node's peers and whether each is up.
    pub peers: Arc<Peers>,
    node: Arc<NodeState>,
    engine: Arc<dyn StorageEngine>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("hints", &self.hints)
            .finish_non_exhaustive()
    }
}

impl Handoff {
    /// Opens the hint log in the node's data dir `dir`.
    pub fn open(
        dir: &std::path::Path,
        node: Arc<NodeState>,
        engine: Arc<dyn StorageEngine>,
        internal_token: &str,
    ) -> Result<Arc<Handoff>, HintError> {
        let hints = Arc::new(HintLog::open(dir)?);
        let peers = Peers::new(node.node_id(), internal_token);
        Ok(Arc::new(Handoff {
            hints,
            peers,
            node,
            engine,
        }))
    }

    /// Runs forever: heartbeats peers and replays hints to those that are up. Spawn it; abort
    /// the task to stop (every step is safe to interrupt).
    pub async fn run(self: Arc<Self>) {
        tokio::join!(
            Arc::clone(&self).heartbeat_loop(),
            Arc::clone(&self).clock_loop(),
            self.replay_loop()
        );
    }

    /// Records the node's clock whenever it moved, about once a second (see
    /// [`NodeState::record_clock_in`]).
    async fn clock_loop(self: Arc<Self>) {
        let Some(clock) = self.node.clock().cloned() else {
            return;
        };
        let mut recorded = 0;
        let mut tick = tokio::time::interval(CLOCK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if clock.last() <= recorded {
                continue;
            }
            let node = Arc::clone(&self.node);
            match tokio::task::spawn_blocking(move || node.record_clock()).await {
                Ok(Ok(Some(now))) => recorded = now,
                Ok(Ok(None)) | Err(_) => {}
                Ok(Err(error)) => tracing::warn!(%error, "cannot record the node's clock"),
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(peers::HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(p) = self.node.placement() {
                self.peers.sync(&p);
            }
            self.peers.heartbeat_all().await;
        }
    }

    async fn replay_loop(self: Arc<Self>) {
        let mut expired_at = tokio::time::Instant::now();
        loop {
            let busy = self.replay_round().await;
            if expired_at.elapsed() >= EXPIRE_EVERY {
                expired_at = tokio::time::Instant::now();
                let hints = Arc::clone(&self.hints);
                let ttl = HINT_TTL.as_millis() as u64;
                match tokio::task::spawn_blocking(move || hints.expire(now_ms(), ttl)).await {
                    Ok(Ok(0)) | Err(_) => {}
                    Ok(Ok(n)) => tracing::info!(expired = n, "hints expired unreplayed"),
                    Ok(Err(error)) => tracing::warn!(%error, "cannot expire hints"),
                }
            }
            tokio::time::sleep(if busy { REPLAY_BUSY } else { REPLAY_IDLE }).await;
        }
    }

    /// One round over every target; true when hints remain for a target that is up.
    async fn replay_round(&self) -> bool {
        let Some(placement) = self.node.placement() else {
            return false;
        };
        let mut busy = false;
        // The log's lock may be held through an fsync: read it off the async workers.
        let hints = Arc::clone(&self.hints);
        let targets = tokio::task::spawn_blocking(move || hints.targets())
            .await
            .unwrap_or_default();
        if targets.is_empty() {
            return false;
        }
        // Built only when there is something to replay: a large ring takes milliseconds.
        let ring = placement.ring();
        let next = placement.next_ring();
        for target in targets {
            if placement.address_of(&target).is_none() {
                let hints = Arc::clone(&self.hints);
                let t = target.clone();
                if let Ok(Err(error)) =
                    tokio::task::spawn_blocking(move || hints.drop_target(&t)).await
                {
                    tracing::warn!(%target, %error, "cannot drop the hints of a removed node");
                }
                tracing::info!(%target, "hints for a node no longer in the cluster dropped");
                continue;
            }
            if !self.peers.is_up(&target) {
                continue;
            }
            busy |= self
                .replay_to(&target, &placement, &ring, next.as_ref())
                .await;
        }
        busy
    }

    /// Replays one batch to `target`; true when a full batch went and some of it was delivered
    /// or dropped (more may wait).
    async fn replay_to(
        &self,
        target: &str,
        placement: &Placement,
        ring: &Ring,
        next: Option<&Ring>,
    ) -> bool {
        let hints = Arc::clone(&self.hints);
        let t = target.to_owned();
        let batch = tokio::task::spawn_blocking(move || hints.peek(&t, REPLAY_BATCH))
            .await
            .unwrap_or_default();
        let full = batch.len() == REPLAY_BATCH;
        let now_ms = now_ms();
        let mut dropped = Vec::new();
        let mut live = Vec::new();
        for h in batch {
            let expired = now_ms.saturating_sub(h.recorded_ms) > HINT_TTL.as_millis() as u64;
            if expired || !is_replica(placement, ring, next, target, &h.namespace, &h.key) {
                dropped.push(h);
            } else {
                live.push(h);
            }
        }
        // The keys' current versions, read off the async workers.
        let engine = Arc::clone(&self.engine);
        let keys: Vec<(String, Vec<u8>)> = live
            .iter()
            .map(|h| (h.namespace.clone(), h.key.clone()))
            .collect();
        // `Err`: the read failed (the hint stays); `Ok(None)`: nothing stored here any more.
        let versions = tokio::task::spawn_blocking(move || {
            keys.iter()
                .map(|(ns, key)| match StorageKey::new(ns, key) {
                    Ok(k) => engine.get(&k).map_err(|e| e.to_string()),
                    Err(_) => Ok(None),
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let Some(mut client) = self.peers.client(target) else {
            return false;
        };
        let mut replayed = Vec::new();
        let mut stop = false;
        let mut work = live.into_iter().zip(versions);
        // A window of REPLAY_PARALLEL applies in flight: each one done lets the next go.
        let mut calls = tokio::task::JoinSet::new();
        loop {
            while !stop && calls.len() < REPLAY_PARALLEL {
                let Some((hint, version)) = work.next() else {
                    break;
                };
                let version = match version {
                    Ok(Some(v)) => v,
                    // Nothing stored any more (the range was dropped here): nothing to send.
                    Ok(None) => {
                        dropped.push(hint);
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%target, %error, "cannot read a hinted key; kept");
                        continue;
                    }
                };
                let request = ApplyRequest {
                    epoch: placement.epoch,
                    key: Some(KeyRef {
                        namespace: hint.namespace.clone(),
                        key: hint.key.clone(),
                    }),
                    version: Some(convert::version_into_pb(version)),
                    record: None,
                };
                let mut c = client.clone();
                calls.spawn(async move {
                    let r = tokio::time::timeout(APPLY_TIMEOUT, c.apply(request)).await;
                    (hint, r)
                });
            }
            let Some(done) = calls.join_next().await else {
                break;
            };
            let Ok((k, r)) = done else { continue };
            {
                match r {
                    Ok(Ok(_)) => replayed.push(k),
                    Ok(Err(status)) => match refusal(&status) {
                        // The target lacks our placement: push it, and go on next round.
                        Some(RefusalReason::EpochNotInstalled) => {
                            stop = true;
                            let push = PushPlacementRequest {
                                placement: Some(convert::placement_to_pb(placement)),
                            };
                            let pushed = client.push_placement(push);
                            let _ = tokio::time::timeout(APPLY_TIMEOUT, pushed).await;
                        }
                        // This node's placement is behind: wait for it.
                        Some(RefusalReason::StaleEpoch) => stop = true,
                        // Refused for good: the hint can never be delivered.
                        Some(RefusalReason::InvalidArgument) => dropped.push(k),
                        // Refused whatever the key: wait for the next round.
                        Some(RefusalReason::Unauthenticated | RefusalReason::ShuttingDown) => {
                            stop = true;
                        }
                        // Refused for this key only (a clock ahead, an engine error): kept,
                        // and the other keys go on.
                        Some(_) => {
                            tracing::debug!(%target, error = %status.message(), "hint refused for now; kept");
                        }
                        // Not an answer of the node: it is unreachable again.
                        None => stop = true,
                    },
                    Err(_) => stop = true,
                }
            }
        }
        let replayed_n = replayed.len();
        // Busy only while the backlog shrinks: a batch refused key by key waits a full round.
        let progressed = replayed_n + dropped.len() > 0;
        let hints = Arc::clone(&self.hints);
        let t = target.to_owned();
        let removed = tokio::task::spawn_blocking(move || {
            hints.remove(&t, &replayed, true)?;
            hints.remove(&t, &dropped, false)
        })
        .await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(%target, %error, "cannot update the hint log");
        }
        if replayed_n > 0 {
            tracing::debug!(%target, replayed = replayed_n, "hints replayed");
        }
        full && !stop && progressed
    }
}

/// Whether `target` holds `(namespace, key)` under `placement`: a natural replica, or one a
/// transition adds.
fn is_replica(
    placement: &Placement,
    ring: &Ring,
    next: Option<&Ring>,
    target: &str,
    namespace: &str,
    key: &[u8],
) -> bool {
    let token = pairdb_core::key::token(namespace, key);
    let natural = placement
        .tenants
        .get(namespace)
        .is_some_and(|rf| ring.preference_list(token, *rf as usize).contains(&target));
    let pending = match (next, &placement.transition) {
        (Some(ring), Some(t)) => t
            .tenants
            .get(namespace)
            .is_some_and(|rf| ring.preference_list(token, *rf as usize).contains(&target)),
        _ => false,
    };
    natural || pending
}

fn refusal(status: &tonic::Status) -> Option<RefusalReason> {
    pairdb_proto::refusal(status).map(|r| r.reason())
}

/// Now in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
