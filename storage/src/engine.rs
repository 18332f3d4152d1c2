//! The `StorageEngine` seam.
//!
//! An engine stores one resolved [`Version`] per [`StorageKey`]. Every engine has the same
//! semantics, checked by [`crate::conformance`]: applying a set of versions in any order, with
//! duplicates, leaves the identical stored version; scans and digests see one consistent snapshot.

use pairdb_core::version::{AppliedWrite, WriteRecord};
use pairdb_core::{ApplyOutcome, StorageKey, Version};

/// An inclusive token range `[start, end]` of one namespace (`start <= end`; callers split
/// ranges that wrap around the ring).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRange {
    /// The tenant's namespace.
    pub namespace: String,
    /// First token, inclusive.
    pub start: u64,
    /// Last token, inclusive.
    pub end: u64,
}

impl TokenRange {
    /// The whole token space of `namespace`.
    pub fn full(namespace: &str) -> Self {
        TokenRange {
            namespace: namespace.to_owned(),
            start: 0,
            end: u64::MAX,
        }
    }

    /// Refuses a range whose namespace no stored key can have (over 255 bytes).
    pub fn check(&self) -> Result<(), EngineError> {
        if self.namespace.len() > usize::from(u8::MAX) {
            return Err(EngineError::Refused(format!(
                "namespace of {} bytes (at most 255)",
                self.namespace.len()
            )));
        }
        Ok(())
    }

    /// True when `key` lies in this range.
    pub fn contains(&self, key: &StorageKey) -> bool {
        key.namespace == self.namespace && key.token >= self.start && key.token <= self.end
    }
}

/// How much one scan page may hold: at most `entries` entries and, past the first entry, at most
/// about `bytes` bytes of keys, values and clocks ([`entry_bytes`]). A page holds at least one
/// entry when any remains, whatever its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit {
    /// Most entries in a page.
    pub entries: usize,
    /// Most bytes in a page (see [`entry_bytes`]).
    pub bytes: usize,
}

impl PageLimit {
    /// A limit of `entries` entries and no byte budget to speak of.
    pub fn entries(entries: usize) -> Self {
        PageLimit {
            entries,
            bytes: usize::MAX,
        }
    }
}

/// The bytes a scan entry counts against [`PageLimit::bytes`]: an upper bound on its size in a
/// scan response (key, value, content type, idempotency key, minting node, clock entries, and
/// framing).
pub fn entry_bytes(key: &StorageKey, version: &Version) -> usize {
    let clock: usize = version
        .clock
        .entries()
        .map(|(actor, _)| actor.node.len() + 32)
        .sum();
    key.key.len()
        + version.value.len()
        + version.content_type.len()
        + version.idempotency_key.len()
        + version.minted_by.len()
        + clock
        + 64
}

/// How long a tombstone is kept at least, whatever the repair watermark says (DESIGN §2.1):
/// hints expire before it, and a node down longer rejoins only empty.
pub const DEFAULT_TOMBSTONE_GRACE: std::time::Duration =
    std::time::Duration::from_secs(10 * 24 * 3600);

/// Whether a tombstone with HLC timestamp `timestamp` may be purged at wall-clock `now_ms`,
/// given its range's watermark `repaired_until` and the grace period `grace`: below the
/// watermark and older than the grace period.
pub fn may_purge(
    timestamp: u64,
    repaired_until: u64,
    grace: std::time::Duration,
    now_ms: u64,
) -> bool {
    timestamp < repaired_until
        && pairdb_core::hlc::physical_ms(timestamp).saturating_add(grace.as_millis() as u64)
            < now_ms
}

/// One page of a scan.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScanPage {
    /// Entries in stored-key order.
    pub entries: Vec<(StorageKey, Version)>,
    /// More entries remain after the last one.
    pub more: bool,
}

/// The digest of a range: equal digests mean equal contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeDigest {
    /// SHA-256 over every `(stored key, version)` in key order.
    pub digest: [u8; 32],
    /// Keys in the range (tombstones included).
    pub keys: u64,
}

/// Counters describing an engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Keys stored (tombstones included). An engine that counts what it holds after it opens
    /// (the LSM engine, beside its work) reports less until that count is done.
    pub keys: u64,
    /// Approximate bytes of keys and values stored.
    pub bytes: u64,
    /// Entries in the applied-keys index (approximate: expired entries may count until purged).
    pub applied_keys: u64,
    /// Memtables flushed into tables since the engine opened (engines with memtables).
    pub flushes: u64,
    /// Compactions done since the engine opened.
    pub compactions: u64,
    /// Times the manifest was rewritten as a snapshot since the engine opened.
    pub manifest_rewrites: u64,
    /// Microseconds writers spent slowed down or waiting for background work.
    pub write_stall_micros: u64,
    /// Tables per level, level 0 first (empty for engines without levels).
    pub level_tables: Vec<u64>,
    /// Bytes per level, level 0 first.
    pub level_bytes: Vec<u64>,
    /// Tombstones purged (below their range's repair watermark and past the grace period)
    /// since the engine opened.
    pub tombstones_purged: u64,
    /// Point reads of table blocks the block cache answered, and those it did not, since the
    /// engine opened (hit rate: hits / (hits + misses)); scans and compactions are not counted.
    pub block_cache_hits: u64,
    /// See [`block_cache_hits`](Self::block_cache_hits).
    pub block_cache_misses: u64,
    /// Point reads of a table the row cache answered, and those it did not (after the table's
    /// bloom filter let them through).
    pub row_cache_hits: u64,
    /// See [`row_cache_hits`](Self::row_cache_hits).
    pub row_cache_misses: u64,
    /// Bytes the caches hold now.
    pub cache_bytes: u64,
}

/// An engine operation failed.
///
/// An error guarantees two things: nothing the engine acknowledged before is lost, and the
/// failed call stored nothing — a failed `apply` or `delete_range` leaves the engine, now and
/// after any restart, exactly as if it had not been called. Callers rely on this to report a
/// failed write as not applied (a storage node refuses a failed mint, and the coordinator may then
/// try another leader).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// An I/O error, naming the file (and offset, where known).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Stored data failed validation.
    #[error("corruption in {path} at offset {offset}: {detail}")]
    Corruption {
        /// The file involved.
        path: String,
        /// Byte offset of the bad record.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// The engine was closed.
    #[error("engine closed")]
    Closed,
    /// The call was refused as given (for example a write larger than the engine takes at
    /// once); nothing was stored.
    #[error("refused: {0}")]
    Refused(String),
    /// An earlier failure stopped the engine (a write or fsync that failed leaves the disk in a
    /// state nothing can vouch for); it accepts no more writes until it is reopened.
    #[error("engine stopped after an earlier failure: {0}")]
    Stopped(String),
}

/// A versioned key-value engine.
///
/// Calls are synchronous and may block on I/O: async callers run them off their async workers
/// (the storage node uses `spawn_blocking` for range calls always, and for point calls unless
/// [`point_calls_block`](Self::point_calls_block) says they never block). `apply` is atomic per
/// key (concurrent applies of one key serialise; of different keys, they need not), a
/// `delete_range` is atomic as a whole, and `scan` and `digest` each read one snapshot: every
/// write that returned before the call began, and none that began after it.
/// The memory engine is the reference; [`crate::conformance`] checks every engine against it.
pub trait StorageEngine: Send + Sync + 'static {
    /// The stored (resolved) version of `key`, tombstones included.
    fn get(&self, key: &StorageKey) -> Result<Option<Version>, EngineError>;

    /// Atomically stores `resolve(stored, incoming)` and reports the outcome and the version now
    /// stored. When it returns `Ok`, the result is as durable as the engine promises.
    ///
    /// With a `record` and an idempotency key on `incoming`, also records the write in the
    /// applied-keys index — `incoming` exactly, with its record and what this apply did — for
    /// the index TTL, whatever the outcome; unless the index already holds that idempotency key
    /// on `key`: the first write of a key stays recorded, so what it produced never changes.
    /// Without a `record` (read repair, anti-entropy) the index is left untouched.
    fn apply(
        &self,
        key: &StorageKey,
        incoming: Version,
        record: Option<WriteRecord>,
    ) -> Result<(ApplyOutcome, Version), EngineError>;

    /// The write with `idempotency_key` on `key` that this engine recorded within the
    /// applied-keys TTL, if any: the version it produced, exactly as recorded, and its record.
    fn applied(
        &self,
        key: &StorageKey,
        idempotency_key: &str,
    ) -> Result<Option<AppliedWrite>, EngineError>;

    /// What the first apply of the write with `idempotency_key` on `key` did here — its outcome
    /// and whether it met a concurrent version — if this engine recorded that write with
    /// `fingerprint`. The same answer as [`applied`](Self::applied) gives, without copying the
    /// version; engines override it when they can do better than the default.
    fn first_apply(
        &self,
        key: &StorageKey,
        idempotency_key: &str,
        fingerprint: &[u8; 32],
    ) -> Result<Option<(ApplyOutcome, bool)>, EngineError> {
        Ok(self
            .applied(key, idempotency_key)?
            .filter(|w| w.record.fingerprint == *fingerprint)
            .map(|w| (w.outcome, w.concurrent)))
    }

    /// Entries of `range` in stored-key order, strictly after `after` (a stored key of the same
    /// namespace) when given, within `limit`.
    fn scan(
        &self,
        range: &TokenRange,
        after: Option<&StorageKey>,
        limit: PageLimit,
    ) -> Result<ScanPage, EngineError>;

    /// The digest of `range`'s contents.
    fn digest(&self, range: &TokenRange) -> Result<RangeDigest, EngineError>;

    /// Drops every key of `range`; returns how many were dropped.
    fn delete_range(&self, range: &TokenRange) -> Result<u64, EngineError>;

    /// Records that every replica of `range` holds every version with a timestamp below
    /// `repaired_until` (an HLC timestamp; anti-entropy sets it after repairing the range). From
    /// then on the engine may purge a tombstone of the range whose timestamp is below it and
    /// older than the engine's tombstone grace period ([`may_purge`]) — never any other, so a
    /// deleted key cannot reappear from a replica that missed the delete. Watermarks only move
    /// forward (a lower one than the range holds is ignored), and a persistent engine keeps them
    /// as durably as its writes. Until a range has a watermark, none of its tombstones goes.
    fn set_repaired_until(
        &self,
        range: &TokenRange,
        repaired_until: u64,
    ) -> Result<(), EngineError>;

    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), EngineError>;

    /// Current counters.
    fn stats(&self) -> EngineStats;

    /// True when data survives a restart. A node whose engine is not durable starts a new clock
    /// incarnation on every start.
    fn is_durable(&self) -> bool;

    /// When acknowledged writes reach stable storage, for an engine whose data survives a
    /// restart (`None` for one whose data does not). A node keeps its clock incarnation across a
    /// crash only under [`Durability::Always`](crate::durability::Durability::Always), and across
    /// a clean stop under any mode.
    fn durability(&self) -> Option<crate::durability::Durability> {
        None
    }

    /// [`get`](Self::get) when the engine can answer from memory alone (no file read, no lock
    /// held for long): an async caller may then answer inline. `None` when only `get` can tell.
    /// When it answers, it answers exactly what `get` would. The default never answers.
    fn get_in_memory(&self, key: &StorageKey) -> Option<Result<Option<Version>, EngineError>> {
        let _ = key;
        None
    }

    /// False when the engine's point calls (`get`, `apply`, `applied`) will neither wait on I/O
    /// nor on a long-held lock now, so an async caller may run them inline rather than pay a
    /// hand-off to a blocking thread. Asked before every point call; the default, `true`, is
    /// always safe.
    fn point_calls_block(&self) -> bool {
        true
    }
}
