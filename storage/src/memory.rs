//! The in-memory reference engine.
//!
//! A sorted map from stored key bytes ([`StorageKey::encode`]) to the resolved [`Version`], plus
//! the applied-keys index, all behind one reader-writer lock. It has exactly the semantics every
//! engine must have (checked by [`crate::conformance`]):
//!
//! * `apply` resolves and stores under the write lock, so it is atomic;
//! * `scan` and `digest` hold the read lock for their whole walk, so each sees one consistent
//!   state — a real snapshot, not a sequence of point reads;
//! * nothing survives the process: [`StorageEngine::is_durable`] is `false`, so a node running
//!   on it starts a new clock incarnation on every start;
//! * point calls never block on I/O, so the storage node runs them inline on its async workers
//!   — except while a range call holds the lock for a long walk
//!   ([`StorageEngine::point_calls_block`]);
//! * the applied-keys index is bounded in bytes as well as by its TTL: past
//!   [`DEFAULT_APPLIED_KEYS_BUDGET`] the oldest entries go first, so under a sustained write load
//!   the deduplication window is the shorter of the TTL and what the budget holds.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use pairdb_core::version::{self, AppliedWrite, WriteRecord};
use pairdb_core::{ApplyOutcome, StorageKey, Version};
use sha2::{Digest, Sha256};

use crate::digest::RangeHasher;
use crate::engine::{
    EngineError, EngineStats, PageLimit, RangeDigest, ScanPage, StorageEngine, TokenRange,
    entry_bytes,
};

/// The applied-keys index entry key: SHA-256 of `(namespace, user key, idempotency key)`,
/// truncated to 16 bytes.
type AppliedKeyHash = [u8; 16];

/// Default bytes the applied-keys index may hold (values included) before evicting its oldest
/// entries early.
pub const DEFAULT_APPLIED_KEYS_BUDGET: u64 = 64 << 20;

/// An engine keeping everything in memory. Cheap to create; the reference for every other
/// engine and the fast backend of tests.
#[derive(Debug)]
pub struct MemoryEngine {
    state: RwLock<State>,
    applied_key_ttl: Duration,
    applied_keys_budget: u64,
    tombstone_grace: Duration,
    /// Range calls under way: while any is, point calls may wait behind its walk.
    range_calls: AtomicUsize,
}

/// Counts a range call as under way for as long as it lives.
struct RangeCall<'a>(&'a AtomicUsize);

impl<'a> RangeCall<'a> {
    fn start(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        RangeCall(counter)
    }
}

impl Drop for RangeCall<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Default)]
struct State {
    /// Stored key bytes → resolved version.
    records: BTreeMap<Vec<u8>, Version>,
    /// Approximate bytes of keys and values in `records`.
    bytes: u64,
    /// Tombstones purged since the engine was created.
    tombstones_purged: u64,
    /// Applied-keys index: hash → (the write: version it produced and record, expiry).
    /// Writes are boxed so that growing the map moves small entries, not whole versions:
    /// a resize happens under the write lock.
    applied: HashMap<AppliedKeyHash, (Box<AppliedWrite>, Instant)>,
    /// Index entries in the order they were (re)recorded, oldest first. With a fixed TTL this is
    /// also expiry order, so purging pops from the front. An entry re-recorded later has a newer
    /// expiry in `applied` than its stale queue slot; the purge checks before removing.
    expiries: VecDeque<(Instant, AppliedKeyHash)>,
    /// Approximate bytes held by `applied`.
    applied_bytes: u64,
}

impl MemoryEngine {
    /// An empty engine whose applied-keys index remembers each idempotency key for
    /// `applied_key_ttl` after the write that carried it was applied.
    pub fn new(applied_key_ttl: Duration) -> Self {
        Self::with_applied_keys_budget(applied_key_ttl, DEFAULT_APPLIED_KEYS_BUDGET)
    }

    /// Like [`new`](Self::new), with the applied-keys index holding at most about `budget` bytes:
    /// beyond it the oldest entries are evicted before their TTL.
    pub fn with_applied_keys_budget(applied_key_ttl: Duration, budget: u64) -> Self {
        MemoryEngine {
            state: RwLock::new(State::default()),
            applied_key_ttl,
            applied_keys_budget: budget,
            tombstone_grace: crate::engine::DEFAULT_TOMBSTONE_GRACE,
            range_calls: AtomicUsize::new(0),
        }
    }

    /// The engine with tombstones kept at least `grace` (default
    /// [`DEFAULT_TOMBSTONE_GRACE`](crate::engine::DEFAULT_TOMBSTONE_GRACE)).
    pub fn with_tombstone_grace(mut self, grace: Duration) -> Self {
        self.tombstone_grace = grace;
        self
    }

    /// `f` of the live applied-keys entry of `idempotency_key` on `key`, under the read lock.
    fn with_applied<T>(
        &self,
        key: &StorageKey,
        idempotency_key: &str,
        f: impl FnOnce(&AppliedWrite) -> T,
    ) -> Option<T> {
        if idempotency_key.is_empty() {
            return None;
        }
        let hash = applied_key_hash(key, idempotency_key);
        let now = Instant::now();
        self.read()
            .applied
            .get(&hash)
            .filter(|(_, expiry)| *expiry > now)
            .map(|(write, _)| f(write))
    }

    // No code path panics while holding the lock, so a poisoned lock still guards a consistent
    // map; recover it rather than propagate another thread's panic.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The applied-keys index key of an idempotency key on `key`. Fields are length-prefixed so
/// distinct triples never hash the same bytes.
fn applied_key_hash(key: &StorageKey, idempotency_key: &str) -> AppliedKeyHash {
    let mut sha = Sha256::new();
    for field in [
        key.namespace.as_bytes(),
        key.key.as_slice(),
        idempotency_key.as_bytes(),
    ] {
        sha.update((field.len() as u64).to_be_bytes());
        sha.update(field);
    }
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(sha.finalize()) {
        *o = b;
    }
    out
}

/// Approximate bytes an applied-keys entry occupies: the version it keeps, its record, and
/// bookkeeping.
fn applied_entry_bytes(version: &Version) -> u64 {
    (version.value.len()
        + version.content_type.len()
        + version.idempotency_key.len()
        + version.minted_by.len()
        + version.clock.len() * 48
        + 136) as u64
}

/// Approximate bytes a record occupies: its stored key and its value.
fn record_bytes(encoded_key: &[u8], version: &Version) -> u64 {
    (encoded_key.len() + version.value.len()) as u64
}

/// Where a range's entries start and how to tell that an entry lies past its end.
struct RangeBounds {
    /// `[ns_len, namespace...]`: every key of the namespace starts with it.
    prefix: Vec<u8>,
    /// The smallest stored key of the range.
    start: Vec<u8>,
    end_token: u64,
}

impl RangeBounds {
    fn new(range: &TokenRange) -> Self {
        let start = StorageKey::range_start(&range.namespace, range.start);
        let prefix_len = start.len().saturating_sub(8);
        RangeBounds {
            prefix: start.get(..prefix_len).unwrap_or_default().to_vec(),
            start,
            end_token: range.end,
        }
    }

    /// True while `encoded` (reached in ascending order from `start`) is still inside the range.
    fn admits(&self, encoded: &[u8]) -> bool {
        let Some(rest) = encoded.strip_prefix(self.prefix.as_slice()) else {
            return false;
        };
        let Some(token) = rest.get(..8) else {
            return false;
        };
        let mut t = [0u8; 8];
        t.copy_from_slice(token);
        u64::from_be_bytes(t) <= self.end_token
    }

    /// The lower bound of a walk that resumes strictly after `after` (if given) but never
    /// starts before the range.
    fn lower(&self, after: Option<&StorageKey>) -> Bound<Vec<u8>> {
        match after.map(StorageKey::encode) {
            Some(after) if after >= self.start => Bound::Excluded(after),
            _ => Bound::Included(self.start.clone()),
        }
    }
}

impl State {
    /// Removes the records under `encoded` keys, keeping the byte count.
    fn remove_records(&mut self, encoded: &[Vec<u8>]) {
        for key in encoded {
            if let Some(old) = self.records.remove(key) {
                self.bytes = self.bytes.saturating_sub(record_bytes(key, &old));
            }
        }
    }

    /// Drops applied-keys entries that expired at or before `now`.
    fn purge_expired(&mut self, now: Instant) {
        while let Some(&(expiry, hash)) = self.expiries.front() {
            if expiry > now {
                break;
            }
            self.expiries.pop_front();
            if self
                .applied
                .get(&hash)
                .is_some_and(|(_, current)| *current <= now)
            {
                self.remove_applied(&hash);
            }
        }
    }

    /// Evicts the oldest applied-keys entries until the index fits `budget` bytes.
    fn evict_over(&mut self, budget: u64) {
        while self.applied_bytes > budget {
            let Some((expiry, hash)) = self.expiries.pop_front() else {
                break;
            };
            // A stale queue slot (the entry was re-recorded later) is just dropped.
            if self
                .applied
                .get(&hash)
                .is_some_and(|(_, current)| *current == expiry)
            {
                self.remove_applied(&hash);
            }
        }
    }

    fn remove_applied(&mut self, hash: &AppliedKeyHash) {
        if let Some((write, _)) = self.applied.remove(hash) {
            self.applied_bytes = self
                .applied_bytes
                .saturating_sub(applied_entry_bytes(&write.version));
        }
    }

    fn range<'a>(
        &'a self,
        bounds: &'a RangeBounds,
        lower: Bound<Vec<u8>>,
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Version)> + 'a {
        self.records
            .range((lower, Bound::Unbounded))
            .take_while(move |(k, _)| bounds.admits(k))
    }
}

impl StorageEngine for MemoryEngine {
    fn get(&self, key: &StorageKey) -> Result<Option<Version>, EngineError> {
        Ok(self.read().records.get(&key.encode()).cloned())
    }

    fn apply(
        &self,
        key: &StorageKey,
        incoming: Version,
        record: Option<WriteRecord>,
    ) -> Result<(ApplyOutcome, Version), EngineError> {
        let encoded = key.encode();
        let now = Instant::now();
        let indexed = record
            .filter(|_| !incoming.idempotency_key.is_empty())
            .map(|record| {
                (
                    applied_key_hash(key, &incoming.idempotency_key),
                    record,
                    incoming.clone(),
                )
            });
        let incoming_clock = incoming.clock.clone();

        let mut state = self.write();
        let (resolved, outcome) = version::apply(state.records.get(&encoded), incoming);
        if outcome != ApplyOutcome::Superseded {
            let added = record_bytes(&encoded, &resolved);
            if let Some(old) = state.records.insert(encoded.clone(), resolved.clone()) {
                let removed = record_bytes(&encoded, &old);
                state.bytes = state.bytes.saturating_sub(removed);
            }
            state.bytes = state.bytes.saturating_add(added);
        }
        state.purge_expired(now);
        if let Some((hash, record, version)) = indexed {
            // The first write of an idempotency key stays recorded: its result never changes.
            let live = state
                .applied
                .get(&hash)
                .is_some_and(|(_, expiry)| *expiry > now);
            if !live {
                let write = AppliedWrite {
                    concurrent: version::met_concurrent(outcome, &incoming_clock, &resolved),
                    version,
                    record,
                    outcome,
                };
                let expiry = now + self.applied_key_ttl;
                state.remove_applied(&hash);
                state.applied_bytes = state
                    .applied_bytes
                    .saturating_add(applied_entry_bytes(&write.version));
                state.applied.insert(hash, (Box::new(write), expiry));
                state.expiries.push_back((expiry, hash));
                state.evict_over(self.applied_keys_budget);
            }
        }
        Ok((outcome, resolved))
    }

    fn applied(
        &self,
        key: &StorageKey,
        idempotency_key: &str,
    ) -> Result<Option<AppliedWrite>, EngineError> {
        Ok(self.with_applied(key, idempotency_key, AppliedWrite::clone))
    }

    fn first_apply(
        &self,
        key: &StorageKey,
        idempotency_key: &str,
        fingerprint: &[u8; 32],
    ) -> Result<Option<(ApplyOutcome, bool)>, EngineError> {
        Ok(self
            .with_applied(key, idempotency_key, |w| {
                (w.record.fingerprint == *fingerprint).then_some((w.outcome, w.concurrent))
            })
            .flatten())
    }

    fn scan(
        &self,
        range: &TokenRange,
        after: Option<&StorageKey>,
        limit: PageLimit,
    ) -> Result<ScanPage, EngineError> {
        let bounds = RangeBounds::new(range);
        let _call = RangeCall::start(&self.range_calls);
        let state = self.read();
        let mut walk = state.range(&bounds, bounds.lower(after)).peekable();
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        while entries.len() < limit.entries {
            let Some((encoded, version)) = walk.peek() else {
                break;
            };
            // Keys in the map were encoded from valid `StorageKey`s; a key that fails to decode
            // would be a bug in this engine, reported rather than skipped.
            let key = StorageKey::decode(encoded).map_err(|e| EngineError::Corruption {
                path: "memory".into(),
                offset: 0,
                detail: e.to_string(),
            })?;
            let size = entry_bytes(&key, version);
            if !entries.is_empty() && bytes.saturating_add(size) > limit.bytes {
                break;
            }
            bytes = bytes.saturating_add(size);
            entries.push((key, Version::clone(version)));
            walk.next();
        }
        let more = walk.peek().is_some();
        Ok(ScanPage { entries, more })
    }

    fn digest(&self, range: &TokenRange) -> Result<RangeDigest, EngineError> {
        let bounds = RangeBounds::new(range);
        let _call = RangeCall::start(&self.range_calls);
        let state = self.read();
        let mut hasher = RangeHasher::new();
        for (encoded, version) in state.range(&bounds, bounds.lower(None)) {
            hasher.add(encoded, version);
        }
        Ok(hasher.finish())
    }

    fn delete_range(&self, range: &TokenRange) -> Result<u64, EngineError> {
        let bounds = RangeBounds::new(range);
        let _call = RangeCall::start(&self.range_calls);
        let mut state = self.write();
        let doomed: Vec<Vec<u8>> = state
            .range(&bounds, bounds.lower(None))
            .map(|(k, _)| k.clone())
            .collect();
        state.remove_records(&doomed);
        Ok(doomed.len() as u64)
    }

    /// Purges the range's eligible tombstones at once: nothing later needs the watermark.
    fn set_repaired_until(
        &self,
        range: &TokenRange,
        repaired_until: u64,
    ) -> Result<(), EngineError> {
        range.check()?;
        let bounds = RangeBounds::new(range);
        let now = pairdb_core::hlc::wall_ms();
        let _call = RangeCall::start(&self.range_calls);
        let mut state = self.write();
        let doomed: Vec<Vec<u8>> = state
            .range(&bounds, bounds.lower(None))
            .filter(|(_, v)| {
                v.tombstone
                    && crate::engine::may_purge(
                        v.timestamp,
                        repaired_until,
                        self.tombstone_grace,
                        now,
                    )
            })
            .map(|(k, _)| k.clone())
            .collect();
        state.remove_records(&doomed);
        state.tombstones_purged += doomed.len() as u64;
        Ok(())
    }

    fn flush(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn stats(&self) -> EngineStats {
        let state = self.read();
        EngineStats {
            keys: state.records.len() as u64,
            bytes: state.bytes,
            // Counted without a walk (stats are read by every health probe): expired entries
            // still count until the next write purges them.
            applied_keys: state.applied.len() as u64,
            tombstones_purged: state.tombstones_purged,
            ..EngineStats::default()
        }
    }

    fn is_durable(&self) -> bool {
        false
    }

    /// Point calls touch memory only and hold the lock for one map operation, so they never
    /// block on I/O — but they can wait behind a range call (a digest holds the lock for its
    /// whole walk). So they are declared blocking exactly while a range call is under way, and a
    /// storage node then runs them on its blocking pool too. (A range call starting between this
    /// answer and the point call's lock can still hold one inline call for one walk.)
    fn point_calls_block(&self) -> bool {
        self.range_calls.load(Ordering::Acquire) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairdb_core::Actor;
    use pairdb_core::hlc::Hlc;
    use pairdb_core::version::{MintRequest, mint};

    fn key(ns: &str, k: &[u8]) -> StorageKey {
        StorageKey::new(ns, k).expect("valid key")
    }

    fn minted(idem: &str) -> Version {
        let request = MintRequest {
            value: b"value".to_vec(),
            idempotency_key: idem.into(),
            ..MintRequest::default()
        };
        mint(None, request, &Actor::new("n1", 1), &Hlc::new()).0
    }

    fn record() -> Option<WriteRecord> {
        Some(WriteRecord::default())
    }

    #[test]
    fn the_applied_keys_index_stays_within_its_budget() {
        let one = applied_entry_bytes(&minted("idem-00"));
        let engine = MemoryEngine::with_applied_keys_budget(Duration::from_secs(3600), one * 3);
        for i in 0..10 {
            let k = key("t", format!("k{i}").as_bytes());
            engine
                .apply(&k, minted(&format!("idem-{i:02}")), record())
                .expect("apply");
        }
        let found = |i: usize| {
            let k = key("t", format!("k{i}").as_bytes());
            engine
                .applied(&k, &format!("idem-{i:02}"))
                .expect("applied")
                .is_some()
        };
        assert!(!found(0), "the oldest entries were evicted");
        assert!(found(9) && found(8) && found(7), "the newest are kept");
        assert_eq!(engine.stats().applied_keys, 3);
        // Re-recording a key does not count it twice.
        let k9 = key("t", b"k9");
        engine
            .apply(&k9, minted("idem-09"), record())
            .expect("apply");
        assert!(found(8) && found(9));
    }

    #[test]
    fn applied_keys_expire_after_the_ttl() {
        let engine = MemoryEngine::new(Duration::ZERO);
        let k = key("t", b"k");
        engine.apply(&k, minted("idem"), record()).expect("apply");
        assert_eq!(engine.applied(&k, "idem").expect("applied"), None);
        // The next write purges the expired entry from the index itself.
        engine
            .apply(&key("t", b"k2"), minted(""), record())
            .expect("apply");
        assert_eq!(engine.stats().applied_keys, 0);
        let state = engine.read();
        assert!(state.applied.is_empty());
        assert!(state.expiries.is_empty());
    }

    #[test]
    fn applied_keys_live_within_the_ttl() {
        let engine = MemoryEngine::new(Duration::from_secs(3600));
        let k = key("t", b"k");
        let v = minted("idem");
        engine.apply(&k, v.clone(), record()).expect("apply");
        assert_eq!(
            engine.applied(&k, "idem").expect("applied"),
            Some(AppliedWrite {
                version: v,
                record: WriteRecord::default(),
                outcome: ApplyOutcome::Applied,
                concurrent: false,
            })
        );
        assert_eq!(engine.applied(&k, "").expect("applied"), None);
        assert_eq!(engine.stats().applied_keys, 1);
    }

    #[test]
    fn bytes_track_keys_and_values() {
        let engine = MemoryEngine::new(Duration::from_secs(1));
        let k = key("t", b"k");
        let v = minted("");
        engine.apply(&k, v.clone(), None).expect("apply");
        let expected = (k.encode().len() + v.value.len()) as u64;
        assert_eq!(engine.stats().bytes, expected);
        assert_eq!(
            engine.delete_range(&TokenRange::full("t")).expect("delete"),
            1
        );
        assert_eq!(engine.stats(), EngineStats::default());
        assert!(!engine.is_durable());
        engine.flush().expect("flush");
    }

    #[test]
    fn scan_with_a_cursor_before_the_range_starts_at_the_range() {
        let engine = MemoryEngine::new(Duration::from_secs(1));
        let inside = StorageKey {
            namespace: "t".into(),
            token: 10,
            key: b"x".to_vec(),
        };
        engine.apply(&inside, minted(""), None).expect("apply");
        let before = StorageKey {
            token: 1,
            ..inside.clone()
        };
        let range = TokenRange {
            namespace: "t".into(),
            start: 5,
            end: 20,
        };
        let page = engine
            .scan(&range, Some(&before), PageLimit::entries(10))
            .expect("scan");
        assert_eq!(page.entries.len(), 1);
        assert!(!page.more);
    }
}
