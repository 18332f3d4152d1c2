//! Replicas that missed a write: the targets that must be caught up.
//!
//! Every replica that did not acknowledge a write — it was down and not tried, refused, failed,
//! or gave no answer before the replication deadline — is recorded here with the version it
//! missed. The coordinator's maintenance task replays hints to nodes that are live again
//! ([`crate::cluster::Cluster::maintain`]). Hints are a fast path only: they live in this
//! coordinator's memory, bounded in count and bytes (the oldest go first, counted in
//! [`Hints::dropped`]) and expire after [`HINT_TTL`], so convergence never rests on them
//! alone; read repair (and, later, anti-entropy) catches up whatever a hint loses.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pairdb_core::Version;
use pairdb_core::version::WriteRecord;
use tokio::time::Instant;

/// How long a hint is kept: far below the tombstone grace period, so a hint never resurrects a
/// purged delete.
pub const HINT_TTL: Duration = Duration::from_secs(3 * 3600);
/// Default bound on the hints held, in versions.
pub const DEFAULT_MAX_HINTS: usize = 100_000;
/// Default bound on the hints held, in bytes of keys and values.
pub const DEFAULT_MAX_HINT_BYTES: usize = 64 << 20;

/// A version one replica missed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The replica that must receive it.
    pub node: String,
    /// The tenant (namespace).
    pub tenant: String,
    /// The user key.
    pub key: Vec<u8>,
    /// The version it missed.
    pub version: Version,
    /// The write's record, when it carried an idempotency key: replayed with the version so the
    /// replica indexes it.
    pub record: Option<WriteRecord>,
}

impl Hint {
    /// About what the hint holds in memory: key, value, strings and clock.
    fn bytes(&self) -> usize {
        let v = &self.version;
        let clock: usize = v.clock.entries().map(|(a, _)| a.node.len() + 64).sum();
        self.node.len()
            + self.tenant.len()
            + self.key.len()
            + v.value.len()
            + v.content_type.len()
            + v.idempotency_key.len()
            + v.minted_by.len()
            + clock
            + 192
    }
}

/// A hint taken for replay, with when it was first recorded: hand it back with
/// [`Hints::requeue`] if the replay fails, and it keeps its age.
#[derive(Debug)]
pub struct Queued {
    /// The hint.
    pub hint: Hint,
    recorded: Instant,
}

#[derive(Debug, Default)]
struct Queues {
    /// Per target node, oldest first.
    by_node: HashMap<String, VecDeque<Queued>>,
    /// Every hint's node, in recording order: eviction goes oldest first across nodes.
    order: VecDeque<String>,
    count: usize,
    bytes: usize,
}

/// The hints this coordinator holds. Thread-safe.
#[derive(Debug)]
pub struct Hints {
    queues: Mutex<Queues>,
    max_count: usize,
    max_bytes: usize,
    recorded: AtomicU64,
    dropped: AtomicU64,
}

impl Default for Hints {
    fn default() -> Self {
        Hints::new(DEFAULT_MAX_HINTS, DEFAULT_MAX_HINT_BYTES)
    }
}

impl Hints {
    /// An empty set holding at most `max_count` hints and about `max_bytes` bytes.
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Hints {
            queues: Mutex::default(),
            max_count: max_count.max(1),
            max_bytes,
            recorded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Records that `hint.node` must be sent `hint.version`. Past the bounds, the oldest hints
    /// are dropped.
    pub fn record(&self, hint: Hint) {
        self.recorded.fetch_add(1, Ordering::Relaxed);
        self.queue(Queued {
            hint,
            recorded: Instant::now(),
        });
    }

    /// Hands back a hint whose replay failed: it keeps its place in age (its TTL still counts
    /// from when it was first recorded), and an expired one is dropped.
    pub fn requeue(&self, queued: Queued) {
        if queued.recorded.elapsed() > HINT_TTL {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queue(queued);
    }

    fn queue(&self, queued: Queued) {
        let mut q = self.lock();
        q.count += 1;
        q.bytes += queued.hint.bytes();
        q.order.push_back(queued.hint.node.clone());
        q.by_node
            .entry(queued.hint.node.clone())
            .or_default()
            .push_back(queued);
        while q.count > self.max_count || (q.bytes > self.max_bytes && q.count > 1) {
            let Some(node) = q.order.pop_front() else {
                break;
            };
            if let Some(oldest) = q.by_node.get_mut(&node).and_then(VecDeque::pop_front) {
                q.count -= 1;
                q.bytes = q.bytes.saturating_sub(oldest.hint.bytes());
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes up to `max` unexpired hints for `node`, oldest first (expired ones are dropped).
    pub fn take(&self, node: &str, max: usize) -> Vec<Queued> {
        let mut q = self.lock();
        let now = Instant::now();
        let mut out = Vec::new();
        let mut expired = 0u64;
        let mut removed_bytes = 0usize;
        if let Some(queue) = q.by_node.get_mut(node) {
            while out.len() < max {
                let Some(queued) = queue.pop_front() else {
                    break;
                };
                removed_bytes += queued.hint.bytes();
                if now.duration_since(queued.recorded) > HINT_TTL {
                    expired += 1;
                } else {
                    out.push(queued);
                }
            }
        }
        let removed = out.len() + expired as usize;
        q.count -= removed;
        q.bytes = q.bytes.saturating_sub(removed_bytes);
        // `order` keeps one slot per hint; drop `removed` slots of this node, oldest first.
        let mut left = removed;
        q.order.retain(|n| {
            if left > 0 && n == node {
                left -= 1;
                false
            } else {
                true
            }
        });
        if q.by_node.get(node).is_some_and(VecDeque::is_empty) {
            q.by_node.remove(node);
        }
        self.dropped.fetch_add(expired, Ordering::Relaxed);
        out
    }

    /// Drops every hint of tenant `tenant` (deleted: its versions must never reach a tenant
    /// created later with the same id).
    pub fn drop_tenant(&self, tenant: &str) {
        let mut q = self.lock();
        let mut removed_bytes = 0usize;
        let mut removed: HashMap<String, usize> = HashMap::new();
        for (node, queue) in q.by_node.iter_mut() {
            queue.retain(|queued| {
                let keep = queued.hint.tenant != tenant;
                if !keep {
                    removed_bytes += queued.hint.bytes();
                    *removed.entry(node.clone()).or_insert(0) += 1;
                }
                keep
            });
        }
        let total: usize = removed.values().sum();
        q.count -= total;
        q.bytes = q.bytes.saturating_sub(removed_bytes);
        // `order` keeps one slot per hint and node: drop as many slots per node.
        q.order.retain(|n| match removed.get_mut(n) {
            Some(left) if *left > 0 => {
                *left -= 1;
                false
            }
            _ => true,
        });
        q.by_node.retain(|_, queue| !queue.is_empty());
        self.dropped.fetch_add(total as u64, Ordering::Relaxed);
    }

    /// Nodes with hints waiting.
    pub fn targets(&self) -> Vec<String> {
        self.lock().by_node.keys().cloned().collect()
    }

    /// Hints waiting for `node`.
    pub fn pending_for(&self, node: &str) -> usize {
        self.lock().by_node.get(node).map_or(0, VecDeque::len)
    }

    /// Hints waiting in all.
    pub fn pending(&self) -> usize {
        self.lock().count
    }

    /// Hints recorded since start.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    /// Hints dropped (over the bounds, or expired) since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    // Nothing panics while holding the lock, so a poisoned lock still guards consistent queues.
    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(node: &str, key: &str, value_len: usize) -> Hint {
        Hint {
            node: node.into(),
            tenant: "t".into(),
            key: key.as_bytes().to_vec(),
            version: Version {
                value: vec![0; value_len],
                ..Version::default()
            },
            record: None,
        }
    }

    #[test]
    fn hints_are_taken_per_node_oldest_first() {
        let hints = Hints::default();
        hints.record(hint("a", "k1", 1));
        hints.record(hint("b", "k2", 1));
        hints.record(hint("a", "k3", 1));
        assert_eq!(hints.pending(), 3);
        assert_eq!(hints.pending_for("a"), 2);
        let mut targets = hints.targets();
        targets.sort();
        assert_eq!(targets, ["a", "b"]);
        let hints_of =
            |taken: Vec<Queued>| -> Vec<Hint> { taken.into_iter().map(|q| q.hint).collect() };
        assert_eq!(hints_of(hints.take("a", 1)), vec![hint("a", "k1", 1)]);
        assert_eq!(hints_of(hints.take("a", 10)), vec![hint("a", "k3", 1)]);
        assert!(hints.take("a", 10).is_empty());
        assert_eq!(
            (hints.pending(), hints.recorded(), hints.dropped()),
            (1, 3, 0)
        );
    }

    #[test]
    fn a_deleted_tenants_hints_go() {
        let hints = Hints::default();
        hints.record(hint("a", "k1", 1));
        let mut other = hint("a", "k2", 1);
        other.tenant = "u".into();
        hints.record(other);
        hints.record(hint("b", "k3", 1));
        hints.drop_tenant("t");
        assert_eq!((hints.pending(), hints.dropped()), (1, 2));
        assert_eq!(hints.targets(), ["a"]);
        assert_eq!(hints.take("a", 10).len(), 1);
        assert_eq!(hints.pending(), 0);
    }

    #[test]
    fn the_oldest_hints_go_first_past_either_bound() {
        let by_count = Hints::new(2, usize::MAX);
        for k in ["k1", "k2", "k3"] {
            by_count.record(hint("a", k, 1));
        }
        assert_eq!(by_count.dropped(), 1);
        let keys: Vec<_> = by_count
            .take("a", 10)
            .into_iter()
            .map(|q| q.hint.key)
            .collect();
        assert_eq!(keys, [b"k2".to_vec(), b"k3".to_vec()]);

        let by_bytes = Hints::new(100, 3_000);
        for k in ["k1", "k2", "k3"] {
            by_bytes.record(hint("b", k, 1_000));
        }
        assert_eq!(by_bytes.dropped(), 1);
        assert_eq!(by_bytes.pending(), 2);
        // One hint is always kept, however large.
        let one = Hints::new(100, 10);
        one.record(hint("c", "big", 1 << 20));
        assert_eq!(one.pending(), 1);
    }
}
