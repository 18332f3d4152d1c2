//! The background thread: memtable flushes and leveled compaction.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::super::codec;
use super::super::manifest::{Edit, LEVELS, TableMeta};
use super::super::memtable::Memtable;
use super::super::sstable::table::{Table, TableWriter};
use super::encoding::{Watermarks, covers, expired, table_path};
use super::merge::{MergeIter, Source};
use super::{DATA, ERASED, Inner, LiveTable, View, lock, now_ms};
use crate::engine::EngineError;

impl Inner {
    /// The background thread: flushes, then compactions, until the engine closes.
    pub(super) fn background(self: Arc<Self>) {
        if let Err(e) = self.log.prepare_next() {
            self.fail(e.to_string());
        }
        loop {
            // Flushed memtables readers have let go of are freed here, between pieces of work
            // (however busy), and never under a lock writers wait on.
            let buried_all = !self.bury();
            {
                let mut work = lock(&self.work);
                loop {
                    if work.closed {
                        return;
                    }
                    if self.failed.load(Ordering::Acquire) {
                        work = self.wake.wait(work).unwrap_or_else(PoisonError::into_inner);
                        continue;
                    }
                    let view = self.current();
                    if !view.frozen.is_empty()
                        || self.mem_full(&view)
                        || self.compaction_due(&view).is_some()
                        || work.compact_into.is_some()
                    {
                        break;
                    }
                    drop(view);
                    if buried_all {
                        work = self.wake.wait(work).unwrap_or_else(PoisonError::into_inner);
                    } else {
                        // Back soon to free what readers still hold now.
                        work = self
                            .wake
                            .wait_timeout(work, Duration::from_millis(20))
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                        if work.closed {
                            return;
                        }
                        if !self.failed.load(Ordering::Acquire) {
                            break;
                        }
                    }
                }
            }
            let view = self.current();
            // A panic here would leave writers waiting for work that never comes: it stops the
            // engine like an error does.
            // Flushes first while frozen memtables are at their limit; then a full memtable is
            // frozen here, off the writers' path (its next log segment made ready after).
            let frozen_full = view.frozen.len() >= self.options.max_frozen_memtables;
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let (true, Some(oldest)) = (frozen_full, view.frozen.last()) {
                    self.flush(oldest)
                } else if self.mem_full(&view) {
                    self.freeze_with(false, false)?;
                    self.log.prepare_next().map_err(EngineError::from)
                } else if let Some(oldest) = view.frozen.last() {
                    self.flush(oldest)
                } else if let Some(level) = self.compaction_due(&view) {
                    self.compact(level)
                } else if let Some(target) = self.full_compaction_target() {
                    // Asked to compact fully: the shallowest level above the target next.
                    match view.levels.iter().take(target).position(|l| !l.is_empty()) {
                        Some(level) => self.compact(level),
                        None => {
                            lock(&self.work).compact_into = None;
                            Ok(())
                        }
                    }
                } else {
                    Ok(())
                }
            }));
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.fail(e.to_string()),
                Err(_) => self.fail("the background thread panicked".into()),
            }
            let _work = lock(&self.work);
            self.progress.notify_all();
        }
    }

    /// Frees the flushed memtables and closes the compacted tables no reader holds any more;
    /// true while some are still held.
    pub(super) fn bury(&self) -> bool {
        // Only the graveyard holds one whose count is 1: no view names it any more, so no
        // reader can take it again.
        let (memtables, pending_memtables) = {
            let mut graveyard = lock(&self.graveyard);
            let free: Vec<Arc<Memtable>> = graveyard
                .extract_if(.., |m| Arc::strong_count(m) == 1)
                .collect();
            (free, !graveyard.is_empty())
        };
        let (tables, pending_tables) = {
            let mut graveyard = lock(&self.table_graveyard);
            let free: Vec<Arc<LiveTable>> = graveyard
                .extract_if(.., |t| Arc::strong_count(t) == 1)
                .collect();
            (free, !graveyard.is_empty())
        };
        drop(memtables);
        drop(tables);
        pending_memtables || pending_tables
    }

    /// Whether the memtable is due to be frozen.
    pub(super) fn mem_full(&self, view: &View) -> bool {
        view.mem.bytes() >= self.options.memtable_bytes
    }

    pub(super) fn new_table(&self) -> (u64, PathBuf) {
        let id = self.next_file.fetch_add(1, Ordering::AcqRel);
        (id, table_path(&self.dir, id))
    }

    pub(super) fn sync_tables_dir(&self) -> Result<(), EngineError> {
        let d = self.dir.join("tables");
        super::super::log::sync_dir(&*self.fs, &d).map_err(EngineError::from)
    }

    /// Writes the oldest frozen memtable into a level-0 table and retires its log segments.
    pub(super) fn flush(&self, memtable: &Arc<Memtable>) -> Result<(), EngineError> {
        let now = now_ms();
        let mut output = None;
        let mut dropped = 0u64;
        let entries = memtable.iter_from(b"", u64::MAX).filter(|(_, v)| {
            let gone = expired(v, now);
            dropped += u64::from(gone);
            !gone
        });
        let mut writer: Option<(u64, TableWriter)> = None;
        for (k, v) in entries {
            if writer.is_none() {
                let (id, path) = self.new_table();
                writer = Some((
                    id,
                    TableWriter::create(&*self.fs, &path, self.options.table)?,
                ));
            }
            if let Some((_, w)) = writer.as_mut() {
                w.add(&k, &v)?;
            }
        }
        if let Some((id, w)) = writer {
            let info = w.finish()?;
            self.sync_tables_dir()?;
            let meta = TableMeta {
                level: 0,
                id,
                size: info.size,
                entries: info.entries,
                first_key: info.first_key,
                last_key: info.last_key,
            };
            let table = Table::open(&*self.fs, &info.path, self.blocks.clone())?;
            output = Some(Arc::new(LiveTable { meta, table }));
        }
        // The next newer memtable's first segment: every older segment is now in tables.
        let view = self.current();
        let position = view.frozen.iter().position(|m| Arc::ptr_eq(m, memtable));
        let Some(position) = position else {
            return Ok(());
        };
        let log_start = match position.checked_sub(1).and_then(|i| view.frozen.get(i)) {
            Some(newer) => newer.first_segment(),
            None => view.mem.first_segment(),
        };
        let mut edits = Vec::new();
        if let Some(t) = &output {
            edits.push(Edit::Add(t.meta.clone()));
        }
        edits.push(Edit::LogStart(log_start));
        lock(&self.manifest).apply(&edits)?;
        {
            let mut current = self.view.write().unwrap_or_else(PoisonError::into_inner);
            let mut frozen = current.frozen.clone();
            frozen.retain(|m| !Arc::ptr_eq(m, memtable));
            // Freed on this thread, not by whichever reader happens to drop the last view
            // holding it: freeing a memtable takes milliseconds.
            lock(&self.graveyard).push(Arc::clone(memtable));
            let mut levels = current.levels.clone();
            if let (Some(t), Some(l0)) = (output, levels.first_mut()) {
                l0.insert(0, t);
            }
            *current = Arc::new(View {
                mem: Arc::clone(&current.mem),
                frozen,
                levels,
            });
        }
        self.log.retire_before(log_start)?;
        self.dropped_applied(dropped);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The level due for compaction, if any.
    pub(super) fn compaction_due(&self, view: &View) -> Option<usize> {
        if view.levels.first().map_or(0, Vec::len) >= self.options.l0_compaction_trigger {
            return Some(0);
        }
        let mut limit = self.options.level1_bytes;
        for (level, tables) in view.levels.iter().enumerate().skip(1) {
            if level + 1 >= LEVELS as usize {
                break;
            }
            let bytes: u64 = tables.iter().map(|t| t.meta.size).sum();
            if bytes > limit {
                return Some(level);
            }
            limit = limit.saturating_mul(10);
        }
        None
    }

    /// Merges level `level` (all of level 0, or one table of a deeper level) with the tables
    /// it overlaps one level down.
    pub(super) fn compact(&self, level: usize) -> Result<(), EngineError> {
        let view = self.current();
        let empty = Vec::new();
        let upper: Vec<Arc<LiveTable>> = match view.levels.get(level) {
            Some(tables) if level == 0 => tables.clone(),
            Some(tables) => tables.iter().take(1).cloned().collect(),
            None => return Ok(()),
        };
        if upper.is_empty() {
            return Ok(());
        }
        let lo = upper
            .iter()
            .map(|t| t.meta.first_key.clone())
            .min()
            .unwrap_or_default();
        let hi = upper
            .iter()
            .map(|t| t.meta.last_key.clone())
            .max()
            .unwrap_or_default();
        let lower: Vec<Arc<LiveTable>> = view
            .levels
            .get(level + 1)
            .unwrap_or(&empty)
            .iter()
            .filter(|t| t.meta.last_key >= lo && t.meta.first_key <= hi)
            .cloned()
            .collect();
        // Erased markers may go only if no deeper level can hold an older value of the key.
        let bottom = view
            .levels
            .iter()
            .skip(level + 2)
            .all(|tables| tables.is_empty());
        let now = now_ms();
        // Sources in priority order: newer first.
        let mut sources: Vec<Source<'_>> = Vec::new();
        for t in upper.iter().chain(lower.iter()) {
            sources.push(Box::new(
                t.table
                    .iter_from(None)?
                    .map(|r| r.map_err(EngineError::from)),
            ));
        }
        let merged = MergeIter::new(sources);
        let mut outputs: Vec<Arc<LiveTable>> = Vec::new();
        let mut writer: Option<(u64, TableWriter)> = None;
        let mut written = 0u64;
        let mut dropped = 0u64;
        let mut purged = 0u64;
        // Purged keys that hold nothing newer anywhere: the key count drops by these.
        let mut gone = 0u64;
        let marks = self.watermarks();
        for item in merged {
            let (k, v) = item?;
            if expired(&v, now) {
                dropped += 1;
                continue;
            }
            if bottom && v == ERASED {
                continue;
            }
            if bottom && !marks.is_empty() && self.purgeable(&marks, &k, &v, now) {
                purged += 1;
                // Only the key count depends on it: when unsure, count the key as still there.
                let newer = self.newer_above(level, &upper, &k).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot tell whether a purged key holds a newer value");
                    true
                });
                gone += u64::from(!newer);
                continue;
            }
            if writer.is_none() {
                let (id, path) = self.new_table();
                writer = Some((
                    id,
                    TableWriter::create(&*self.fs, &path, self.options.table)?,
                ));
                written = 0;
            }
            if let Some((_, w)) = writer.as_mut() {
                w.add(&k, &v)?;
                written += (k.len() + v.len()) as u64;
            }
            if written >= self.options.table_target_bytes
                && let Some((id, w)) = writer.take()
            {
                outputs.push(self.finish_table(id, w, level + 1)?);
            }
        }
        if let Some((id, w)) = writer.take() {
            outputs.push(self.finish_table(id, w, level + 1)?);
        }
        self.sync_tables_dir()?;
        let mut edits: Vec<Edit> = upper
            .iter()
            .chain(lower.iter())
            .map(|t| Edit::Remove {
                level: t.meta.level,
                id: t.meta.id,
            })
            .collect();
        edits.extend(outputs.iter().map(|t| Edit::Add(t.meta.clone())));
        lock(&self.manifest).apply(&edits)?;
        {
            let mut current = self.view.write().unwrap_or_else(PoisonError::into_inner);
            let gone =
                |t: &Arc<LiveTable>| upper.iter().chain(lower.iter()).any(|x| Arc::ptr_eq(x, t));
            let mut levels: Vec<Vec<Arc<LiveTable>>> = current
                .levels
                .iter()
                .map(|tables| tables.iter().filter(|t| !gone(t)).cloned().collect())
                .collect();
            if let Some(next) = levels.get_mut(level + 1) {
                next.extend(outputs);
                next.sort_by(|a, b| a.meta.first_key.cmp(&b.meta.first_key));
            }
            *current = Arc::new(View {
                mem: Arc::clone(&current.mem),
                frozen: current.frozen.clone(),
                levels,
            });
        }
        self.dropped_applied(dropped);
        if purged > 0 {
            self.keys.fetch_sub(gone as i64, Ordering::Relaxed);
            self.tombstones_purged.fetch_add(purged, Ordering::Relaxed);
        }
        self.compactions.fetch_add(1, Ordering::Relaxed);
        // Readers still holding the old view keep their open files; the names can go, and the
        // files are closed here once no reader holds them.
        for t in upper.iter().chain(lower.iter()) {
            let path = table_path(&self.dir, t.meta.id);
            if let Err(e) = self.fs.remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a compacted table");
            }
        }
        lock(&self.table_graveyard).extend(upper.into_iter().chain(lower));
        Ok(())
    }

    /// The level [`LsmEngine::compact_fully`](super::LsmEngine::compact_fully) compacts into,
    /// while one is asked for.
    fn full_compaction_target(&self) -> Option<usize> {
        lock(&self.work).compact_into
    }

    /// Whether a newer value of `key` than the compaction of `level` (from `upper`) reads is
    /// stored now: in a memtable, a level above, or a level-0 table flushed since.
    fn newer_above(
        &self,
        level: usize,
        upper: &[Arc<LiveTable>],
        key: &[u8],
    ) -> Result<bool, EngineError> {
        let view = self.current();
        let snapshot = self.visible.load(Ordering::Acquire);
        if std::iter::once(&view.mem)
            .chain(view.frozen.iter())
            .any(|m| m.get(key, snapshot).is_some())
        {
            return Ok(true);
        }
        for tables in view.levels.iter().take(level + 1) {
            for t in tables {
                if upper.iter().any(|u| Arc::ptr_eq(u, t)) || !covers(&t.meta, key) {
                    continue;
                }
                if t.table.peek(key)?.is_some() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Whether the entry `key` → `value` is a tombstone below its range's watermark and past
    /// the grace period.
    fn purgeable(&self, marks: &Watermarks, key: &[u8], value: &[u8], now: u64) -> bool {
        if key.first() != Some(&DATA) {
            return false;
        }
        let Some(timestamp) = codec::tombstone_timestamp(value) else {
            return false;
        };
        marks.until(key).is_some_and(|until| {
            crate::engine::may_purge(timestamp, until, self.options.tombstone_grace, now)
        })
    }

    pub(super) fn finish_table(
        &self,
        id: u64,
        writer: TableWriter,
        level: usize,
    ) -> Result<Arc<LiveTable>, EngineError> {
        let info = writer.finish()?;
        let table = Table::open(&*self.fs, &info.path, self.blocks.clone())?;
        Ok(Arc::new(LiveTable {
            meta: TableMeta {
                level: level as u8,
                id,
                size: info.size,
                entries: info.entries,
                first_key: info.first_key,
                last_key: info.last_key,
            },
            table,
        }))
    }
}
