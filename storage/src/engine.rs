//! The `StorageEngine` seam.
//!
//! An engine stores one resolved [`Version`] per [`StorageKey`]. Every engine has the same
//! semantics, checked by [`crate::conformance`]: applying a set of versions in any order, with
//! duplicates, leaves the identical stored version; scans and digests see one consistent snapshot.

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

    /// True when `key` lies in this range.
    pub fn contains(&self, key: &StorageKey) -> bool {
        key.namespace == self.namespace && key.token >= self.start && key.token <= self.end
    }
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
    /// Keys stored (tombstones included).
    pub keys: u64,
    /// Approximate bytes of keys and values stored.
    pub bytes: u64,
    /// Entries in the applied-keys index.
    pub applied_keys: u64,
}

/// An engine operation failed. Nothing acknowledged is lost when one is returned.
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
}

/// A versioned key-value engine.
///
/// Calls are synchronous and may block on I/O; every method is atomic with respect to the others.
pub trait StorageEngine: Send + Sync + 'static {
    /// The stored (resolved) version of `key`, tombstones included.
    fn get(&self, key: &StorageKey) -> Result<Option<Version>, EngineError>;

    /// Atomically stores `resolve(stored, incoming)` and reports the outcome and the version now
    /// stored. When it returns `Ok`, the result is as durable as the engine promises. If
    /// `incoming` carries an idempotency key, records it in the applied-keys index with
    /// `incoming` (for the index TTL) whatever the outcome.
    fn apply(
        &self,
        key: &StorageKey,
        incoming: Version,
    ) -> Result<(ApplyOutcome, Version), EngineError>;

    /// The version that a write with `idempotency_key` on `key` produced, if this engine applied
    /// one within the applied-keys TTL.
    fn applied(
        &self,
        key: &StorageKey,
        idempotency_key: &str,
    ) -> Result<Option<Version>, EngineError>;

    /// Up to `limit` entries of `range` in stored-key order, strictly after `after` (a stored key
    /// of the same namespace) when given.
    fn scan(
        &self,
        range: &TokenRange,
        after: Option<&StorageKey>,
        limit: usize,
    ) -> Result<ScanPage, EngineError>;

    /// The digest of `range`'s contents.
    fn digest(&self, range: &TokenRange) -> Result<RangeDigest, EngineError>;

    /// Drops every key of `range`; returns how many were dropped.
    fn delete_range(&self, range: &TokenRange) -> Result<u64, EngineError>;

    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), EngineError>;

    /// Current counters.
    fn stats(&self) -> EngineStats;

    /// True when data survives a restart. A node whose engine is not durable starts a new clock
    /// incarnation on every start.
    fn is_durable(&self) -> bool;
}
