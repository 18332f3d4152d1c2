//! The engine's answers to the [`StorageEngine`] calls.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};

use pairdb_core::version::{self, AppliedWrite, WriteRecord};
use pairdb_core::{ApplyOutcome, StorageKey, Version};

use super::super::codec::{self, AppliedEntry};
use super::encoding::{
    Bounds, Stored, Watermarks, applied_key, data_key, decode_value, encode_watermark,
    watermark_key,
};
use super::errors::corruption;
use super::{ERASED, KEY_LOCKS, LsmEngine, lock, now_ms};
use crate::digest::RangeHasher;
use crate::engine::{
    EngineError, EngineStats, PageLimit, RangeDigest, ScanPage, StorageEngine, TokenRange,
    entry_bytes,
};

impl StorageEngine for LsmEngine {
    fn get(&self, key: &StorageKey) -> Result<Option<Version>, EngineError> {
        self.inner.get_version(&data_key(key))
    }

    /// From the memtables, the row cache and cached blocks: `None` as soon as a table's block
    /// would have to be read.
    fn get_in_memory(&self, key: &StorageKey) -> Option<Result<Option<Version>, EngineError>> {
        self.inner.get_version_in_memory(&data_key(key))
    }

    fn apply(
        &self,
        key: &StorageKey,
        incoming: Version,
        record: Option<WriteRecord>,
    ) -> Result<(ApplyOutcome, Version), EngineError> {
        let inner = &self.inner;
        inner.check()?;
        inner.throttle()?;
        let dkey = data_key(key);
        let result = {
            let _gate = inner.gate.read().unwrap_or_else(PoisonError::into_inner);
            let stripe = xxhash_rust::xxh3::xxh3_64(&dkey) as usize % KEY_LOCKS;
            let _key = inner.key_locks.get(stripe).map(lock);
            let stored = inner.get_version(&dkey)?;
            let indexed = match record {
                Some(record) if !incoming.idempotency_key.is_empty() => {
                    let akey = applied_key(key, &incoming.idempotency_key);
                    // The first write of an idempotency key stays recorded.
                    match inner.get_applied(&akey)? {
                        Some(_) => None,
                        None => Some((akey, record, incoming.clone())),
                    }
                }
                _ => None,
            };
            let incoming_clock = incoming.clock.clone();
            let (resolved, outcome) = version::apply(stored.as_ref(), incoming);
            let mut entries = Vec::with_capacity(2);
            let new_key = stored.is_none() && outcome != ApplyOutcome::Superseded;
            if outcome != ApplyOutcome::Superseded {
                entries.push((dkey, codec::encode_version(&resolved)));
            }
            let new_entry = indexed.is_some();
            if let Some((akey, record, version)) = indexed {
                let entry = AppliedEntry {
                    write: AppliedWrite {
                        concurrent: version::met_concurrent(outcome, &incoming_clock, &resolved),
                        version,
                        record,
                        outcome,
                    },
                    expires_at_ms: now_ms()
                        .saturating_add(inner.options.applied_key_ttl.as_millis() as u64),
                };
                let mut value = Vec::new();
                codec::encode_applied_into(&mut value, &entry);
                entries.push((akey, value));
            }
            if !entries.is_empty() {
                inner.write(entries)?;
            }
            inner.keys.fetch_add(i64::from(new_key), Ordering::Relaxed);
            inner
                .applied_keys
                .fetch_add(i64::from(new_entry), Ordering::Relaxed);
            (outcome, resolved)
        };
        // The write is durable: a failure now must not report it as not stored (a failure stops
        // the engine, and later calls say so).
        if let Err(e) = inner.after_write() {
            tracing::warn!(error = %e, "waiting for the memtable to be frozen failed");
        }
        Ok(result)
    }

    fn applied(
        &self,
        key: &StorageKey,
        idempotency_key: &str,
    ) -> Result<Option<AppliedWrite>, EngineError> {
        if idempotency_key.is_empty() {
            return Ok(None);
        }
        Ok(self
            .inner
            .get_applied(&applied_key(key, idempotency_key))?
            .map(|e| e.write))
    }

    fn scan(
        &self,
        range: &TokenRange,
        after: Option<&StorageKey>,
        limit: PageLimit,
    ) -> Result<ScanPage, EngineError> {
        let bounds = Bounds::new(range);
        let from = match after.map(data_key) {
            Some(mut a) if a >= bounds.start => {
                // Strictly after `after`: the smallest key greater than it.
                a.push(0);
                a
            }
            _ => bounds.start.clone(),
        };
        let view = self.inner.current();
        let snapshot = self.inner.visible.load(Ordering::Acquire);
        let mut walk = self
            .inner
            .merged_from(&view, &from, snapshot)?
            .take_while(|r| r.as_ref().map_or(true, |(k, _)| bounds.admits(k)))
            .filter(|r| r.as_ref().map_or(true, |(_, v)| v.as_slice() != ERASED))
            .peekable();
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        while entries.len() < limit.entries {
            let Some(item) = walk.peek() else { break };
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(_) => {
                    return Err(walk
                        .next()
                        .and_then(Result::err)
                        .unwrap_or(EngineError::Closed));
                }
            };
            let key = StorageKey::decode(k.get(1..).unwrap_or_default())
                .map_err(|e| corruption(&self.inner.dir, 0, format!("stored key: {e}")))?;
            let version = match decode_value(v, "version")? {
                Stored::Version(v) => v,
                _ => {
                    return Err(corruption(
                        &self.inner.dir,
                        0,
                        "a non-version under a version key",
                    ));
                }
            };
            let size = entry_bytes(&key, &version);
            if !entries.is_empty() && bytes.saturating_add(size) > limit.bytes {
                break;
            }
            bytes = bytes.saturating_add(size);
            entries.push((key, version));
            walk.next();
        }
        let more = walk.peek().is_some();
        Ok(ScanPage { entries, more })
    }

    fn digest(&self, range: &TokenRange) -> Result<RangeDigest, EngineError> {
        let bounds = Bounds::new(range);
        let view = self.inner.current();
        let snapshot = self.inner.visible.load(Ordering::Acquire);
        let mut hasher = RangeHasher::new();
        for item in self.inner.merged_from(&view, &bounds.start, snapshot)? {
            let (k, v) = item?;
            if !bounds.admits(&k) {
                break;
            }
            if v == ERASED {
                continue;
            }
            match decode_value(&v, "version")? {
                Stored::Version(version) => hasher.add(k.get(1..).unwrap_or_default(), &version),
                _ => {
                    return Err(corruption(
                        &self.inner.dir,
                        0,
                        "a non-version under a version key",
                    ));
                }
            }
        }
        Ok(hasher.finish())
    }

    /// Drops the range in pieces ([`LsmOptions::range_delete_piece_bytes`]
    /// (super::LsmOptions::range_delete_piece_bytes) of keys each), in key order, each piece
    /// one commit-log record: a crash part-way leaves a prefix of the range dropped, and the
    /// same call again finishes it.
    fn delete_range(&self, range: &TokenRange) -> Result<u64, EngineError> {
        let inner = &self.inner;
        inner.check()?;
        let bounds = Bounds::new(range);
        let mut from = bounds.start.clone();
        let mut total = 0u64;
        loop {
            let (count, next) = {
                let _gate = inner.gate.read().unwrap_or_else(PoisonError::into_inner);
                // Every key lock, in order: no apply runs in the range meanwhile.
                let _keys: Vec<MutexGuard<'_, ()>> = inner.key_locks.iter().map(lock).collect();
                let view = inner.current();
                let snapshot = inner.visible.load(Ordering::Acquire);
                let mut doomed = Vec::new();
                let mut bytes = 0usize;
                let mut next = None;
                for item in inner.merged_from(&view, &from, snapshot)? {
                    let (k, v) = item?;
                    if !bounds.admits(&k) {
                        break;
                    }
                    if bytes >= inner.options.range_delete_piece_bytes {
                        next = Some(k);
                        break;
                    }
                    if v != ERASED {
                        bytes += k.len() + ERASED.len();
                        doomed.push((k, ERASED.to_vec()));
                    }
                }
                let count = doomed.len() as u64;
                if !doomed.is_empty() {
                    // One record: all of the piece goes, or none of it.
                    inner.write(doomed)?;
                }
                inner.keys.fetch_sub(count as i64, Ordering::Relaxed);
                (count, next)
            };
            total += count;
            // Between pieces writers go on, and a full memtable is frozen.
            if let Err(e) = inner.after_write() {
                tracing::warn!(error = %e, "waiting for the memtable to be frozen failed");
            }
            match next {
                Some(key) => from = key,
                None => return Ok(total),
            }
        }
    }

    fn set_repaired_until(
        &self,
        range: &TokenRange,
        repaired_until: u64,
    ) -> Result<(), EngineError> {
        range.check()?;
        let inner = &self.inner;
        inner.check()?;
        let _gate = inner.gate.read().unwrap_or_else(PoisonError::into_inner);
        // One watermark writer at a time, so the stored and the in-memory ones agree.
        let mut marks = inner
            .watermarks
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut raised = Watermarks::clone(&marks);
        if !raised.raise_range(range, repaired_until) {
            return Ok(());
        }
        inner.write(vec![(
            watermark_key(range),
            encode_watermark(repaired_until),
        )])?;
        *marks = Arc::new(raised);
        Ok(())
    }

    fn flush(&self) -> Result<(), EngineError> {
        self.inner.check()?;
        self.inner.log.sync().map_err(EngineError::from)
    }

    fn stats(&self) -> EngineStats {
        let view = self.inner.current();
        let tables = view.levels.iter().flatten();
        let memtables = std::iter::once(&view.mem).chain(view.frozen.iter());
        let inner = &self.inner;
        let (block_cache_hits, block_cache_misses) = inner
            .blocks
            .as_ref()
            .map_or((0, 0), |c| c.hits_and_misses());
        let (row_cache_hits, row_cache_misses) =
            inner.rows.as_ref().map_or((0, 0), |c| c.hits_and_misses());
        EngineStats {
            keys: inner.keys.load(Ordering::Relaxed).max(0) as u64,
            bytes: tables.map(|t| t.meta.size).sum::<u64>()
                + memtables.map(|m| m.bytes() as u64).sum::<u64>(),
            applied_keys: inner.applied_keys.load(Ordering::Relaxed).max(0) as u64,
            flushes: inner.flushes.load(Ordering::Relaxed),
            compactions: inner.compactions.load(Ordering::Relaxed),
            manifest_rewrites: lock(&inner.manifest).rewrites(),
            write_stall_micros: inner.stall_micros.load(Ordering::Relaxed),
            level_tables: view.levels.iter().map(|l| l.len() as u64).collect(),
            level_bytes: view
                .levels
                .iter()
                .map(|l| l.iter().map(|t| t.meta.size).sum())
                .collect(),
            tombstones_purged: inner.tombstones_purged.load(Ordering::Relaxed),
            block_cache_hits,
            block_cache_misses,
            row_cache_hits,
            row_cache_misses,
            cache_bytes: inner.blocks.as_ref().map_or(0, |c| c.bytes())
                + inner.rows.as_ref().map_or(0, |c| c.bytes()),
        }
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn durability(&self) -> Option<crate::durability::Durability> {
        Some(self.inner.options.durability)
    }
}
