//! The LSM engine: the [`StorageEngine`](crate::engine::StorageEngine) made of a commit log,
//! memtables, tables in levels and a manifest.
//!
//! Layout of its directory: `log/` (the commit log), `manifest/` and `tables/<id>.sst`. Code:
//! this module opens, writes and waits; `api` answers the trait's calls; `background` flushes
//! and compacts; `merge` merges memtables and tables; `encoding` lays out keys, values and log
//! batches; `errors` maps the parts' errors.
//!
//! * **Keys.** Versions live under `'d'` + the stored key
//!   ([`StorageKey::encode`](pairdb_core::StorageKey::encode)), applied-keys
//!   entries under `'a'` + a 16-byte hash of (namespace, key, idempotency key). Each holds one
//!   value — a version, an applied-keys entry, or an *erased* marker left by `delete_range` — and
//!   the newest value of a key wins everywhere: memtables over tables, newer tables over older.
//! * **Writes.** `apply` resolves against the stored version under a per-key lock, appends one
//!   commit-log record holding the version and its applied-keys entry (so both or neither
//!   survive a crash), then inserts them into the memtable with new sequence numbers. The log
//!   makes it as durable as the [`Durability`] promises; concurrent writers share fsyncs.
//! * **Reads.** Point reads look at the newest memtable, then older ones, then level 0 (newest
//!   first), then one table per deeper level — each table through its bloom filter, then the
//!   row cache, then the block cache ([`cache`](super::cache)). Scans and digests take a
//!   snapshot — the current set of memtables and tables, and the newest visible sequence
//!   number — and merge them.
//! * **Files.** Every file goes through an [`Fs`](super::fs::Fs): the operating system's, or in
//!   tests one that simulates power loss.
//! * **Background.** One thread flushes full memtables into level-0 tables and compacts levels
//!   (level 0 by file count, deeper levels at ×10 sizes), dropping superseded values, expired
//!   applied-keys entries and, at the bottom, erased markers. Writers slow down, then wait, when
//!   memtables or level 0 pile up, instead of growing memory without bound.
//! * **Recovery.** The manifest names the tables; the commit log from the manifest's log start
//!   is replayed into a memtable.
//!
//! Damage, and what it does (each pinned by a test):
//!
//! * a torn tail of the commit log (a crash mid-write) is cut at open: only writes never
//!   acknowledged under `always` go; damage before intact log records stops the open with
//!   [`EngineError::Corruption`] naming the segment and offset;
//! * a damaged table block is reported by the first read of it — the open itself, which walks
//!   every key to count them — naming the table and offset; a truncated table stops the open;
//! * a damaged manifest record before intact ones stops the open naming the manifest segment;
//! * table files the manifest does not name are moved to `tables/orphans/`, never deleted, and
//!   tables with no manifest at all stop the open.
//!
//! Version tombstones are purged only by a compaction into the bottom level (so no older value
//! of the key is left below), once older than [`LsmOptions::tombstone_grace`] and below their
//! range's repair watermark ([`StorageEngine::set_repaired_until`](crate::engine::StorageEngine::set_repaired_until)),
//! which is stored under `'r'` + the range like any write, so it is as durable as one.

mod api;
mod background;
mod encoding;
mod errors;
mod merge;

/// Values larger than this are read on the blocking pool even when in memory: copying and
/// decoding them is not work for an async worker.
const MAX_IN_MEMORY_VALUE: usize = 64 << 10;

/// The cache lookups of a memory-only lookup, counted once it answers.
#[derive(Default)]
struct Tally {
    /// Row-cache hits and misses.
    row_hits: u64,
    row_misses: u64,
    /// Block-cache hits (a miss ends a memory-only lookup).
    block_hits: u64,
}

/// What a lookup found.
enum Found {
    /// The newest value.
    Value(Vec<u8>),
    /// Nothing under the key.
    Absent,
    /// A memory-only lookup met a table whose block is not cached: only a file read can tell.
    NotInMemory,
}

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pairdb_core::Version;

use self::encoding::{
    Stored, Watermarks, covers, decode_batch, decode_value, encode_batch, table_path,
};
use self::errors::{corruption, io_error};
use super::cache::{BlockCache, RowCache};
use super::codec::AppliedEntry;
use super::fs::Fs;
use super::log::{CommitLog, LogOptions, OpenError};
use super::manifest::{LEVELS, Manifest, TableMeta};
use super::memtable::Memtable;
use super::sstable::filter::KeyHash;
use super::sstable::table::{Table, TableOptions};
use crate::durability::Durability;
use crate::engine::EngineError;

/// Prefix of version keys.
const DATA: u8 = b'd';
/// Prefix of applied-keys entries.
const APPLIED: u8 = b'a';
/// Prefix of repair watermarks.
const WATERMARK: u8 = b'r';
/// The value `delete_range` leaves: the key holds nothing.
const ERASED: &[u8] = b"X";

/// Stripes of the per-key write lock.
const KEY_LOCKS: usize = 256;

/// Settings of an LSM engine.
#[derive(Clone, Copy, Debug)]
pub struct LsmOptions {
    /// When acknowledged writes are on stable storage.
    pub durability: Durability,
    /// A memtable is frozen and flushed once it holds this many bytes.
    pub memtable_bytes: usize,
    /// Frozen memtables that may wait for their flush before writers wait too.
    pub max_frozen_memtables: usize,
    /// How tables are written.
    pub table: TableOptions,
    /// Level-0 tables that trigger a compaction into level 1.
    pub l0_compaction_trigger: usize,
    /// Level-0 tables at which each write is slowed: by 100 µs, and 100 µs more for each table
    /// above it, up to 800 µs (so no single write waits a millisecond for it).
    pub l0_slowdown: usize,
    /// Level-0 tables at which writes wait for compaction.
    pub l0_stop: usize,
    /// Target bytes of level 1; each deeper level holds ten times more.
    pub level1_bytes: u64,
    /// Compaction cuts output tables at about this size.
    pub table_target_bytes: u64,
    /// How long the applied-keys index remembers a write.
    pub applied_key_ttl: Duration,
    /// Manifest edits between its rewrites as a snapshot.
    pub manifest_snapshot_every: u64,
    /// Bytes of each commit-log segment (allocated a MiB at a time, ahead of its writes).
    pub log_segment_bytes: u64,
    /// Tombstones are kept at least this long, whatever the repair watermark says.
    pub tombstone_grace: Duration,
    /// Bytes of decoded table blocks kept in memory (0: no block cache).
    pub block_cache_bytes: u64,
    /// Bytes of point-read results kept in memory (0: no row cache).
    pub row_cache_bytes: u64,
    /// `delete_range` drops a range in pieces of about this many bytes of keys, each one
    /// commit-log record written while writes wait: memory and the wait stay bounded however
    /// large the range.
    pub range_delete_piece_bytes: usize,
}

impl LsmOptions {
    /// Defaults for a storage node: `durability`, writes remembered for `applied_key_ttl`.
    pub fn new(durability: Durability, applied_key_ttl: Duration) -> Self {
        LsmOptions {
            durability,
            memtable_bytes: 32 << 20,
            max_frozen_memtables: 2,
            table: TableOptions::default(),
            l0_compaction_trigger: 4,
            l0_slowdown: 12,
            l0_stop: 20,
            level1_bytes: 64 << 20,
            table_target_bytes: 16 << 20,
            applied_key_ttl,
            manifest_snapshot_every: super::manifest::SNAPSHOT_EVERY,
            // Twice what one memtable's writes take (each freeze starts a new segment), so a
            // memtable allowed to grow past its size while the background thread catches up
            // rarely makes a writer rotate the log itself.
            log_segment_bytes: 64 << 20,
            tombstone_grace: crate::engine::DEFAULT_TOMBSTONE_GRACE,
            block_cache_bytes: 32 << 20,
            row_cache_bytes: 8 << 20,
            range_delete_piece_bytes: 1 << 20,
        }
    }
}

#[cfg(feature = "crash-writer")]
impl LsmOptions {
    /// Settings under which a few hundred writes flush, compact and rewrite the manifest: what
    /// the crash and power-loss tests run with (test support, with the `crash-writer` feature).
    pub fn crash_test(durability: Durability) -> Self {
        LsmOptions {
            memtable_bytes: 8 << 10,
            table: TableOptions {
                block_bytes: 512,
                ..TableOptions::default()
            },
            l0_compaction_trigger: 2,
            level1_bytes: 32 << 10,
            table_target_bytes: 16 << 10,
            manifest_snapshot_every: 8,
            log_segment_bytes: 256 << 10,
            ..LsmOptions::new(durability, Duration::from_secs(3600))
        }
    }
}

/// What readers see: the memtables and tables of one moment.
struct View {
    mem: Arc<Memtable>,
    /// Frozen memtables, newest first.
    frozen: Vec<Arc<Memtable>>,
    /// Tables by level: level 0 newest first, deeper levels by first key (disjoint).
    levels: Vec<Vec<Arc<LiveTable>>>,
}

struct LiveTable {
    meta: TableMeta,
    table: Table,
}

/// Background work state.
#[derive(Default)]
struct Work {
    closed: bool,
    /// [`LsmEngine::compact_fully`] asked for every level above this one to be compacted into it.
    compact_into: Option<usize>,
}

struct Inner {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: LsmOptions,
    log: CommitLog,
    manifest: Mutex<Manifest>,
    view: RwLock<Arc<View>>,
    /// Assigns sequence numbers and inserts into the memtable, so that every number up to
    /// `visible` is inserted.
    seq: Mutex<u64>,
    visible: AtomicU64,
    /// Held shared by writers from their log append to their memtable insert; exclusively to
    /// freeze the memtable, so every write lands in the memtable its log segment belongs to.
    gate: RwLock<()>,
    key_locks: Vec<Mutex<()>>,
    next_file: AtomicU64,
    work: Mutex<Work>,
    /// Signalled when there is background work, and when background work finished.
    wake: Condvar,
    progress: Condvar,
    failure: Mutex<Option<String>>,
    failed: AtomicBool,
    /// Keys holding a version (tombstones included): every change since the open, plus what
    /// the count at open ([`Inner::count`]) found so far — exact once it finished.
    keys: AtomicI64,
    /// Applied-keys entries (expired ones count until a flush or compaction drops them), kept
    /// as `keys` is.
    applied_keys: AtomicI64,
    /// The count at open is still walking.
    counting: AtomicBool,
    flushes: AtomicU64,
    compactions: AtomicU64,
    stall_micros: AtomicU64,
    blocks: Option<Arc<BlockCache>>,
    rows: Option<RowCache>,
    /// Flushed memtables, kept until no reader holds them, so the background thread frees them.
    graveyard: Mutex<Vec<Arc<Memtable>>>,
    /// Compacted tables, kept until no reader holds them, so the background thread closes them:
    /// closing a removed file's last descriptor frees its blocks (with a `discard` mount, a
    /// synchronous discard of every one), which must not land on a reader or writer.
    table_graveyard: Mutex<Vec<Arc<LiveTable>>>,
    /// Repair watermarks, as last written.
    watermarks: RwLock<Arc<Watermarks>>,
    tombstones_purged: AtomicU64,
}

/// The LSM engine.
pub struct LsmEngine {
    inner: Arc<Inner>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    counter: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| io_error(path, source)
}

impl LsmEngine {
    /// Opens (or creates) the engine in `dir`: recovers the manifest's tables and replays the
    /// commit log. Fails on damage it cannot prove to be a torn tail, naming file and offset.
    pub fn open(dir: &Path, options: LsmOptions) -> Result<LsmEngine, EngineError> {
        Self::open_on(super::fs::os(), dir, options)
    }

    /// [`open`](Self::open) on the file system `fs` (tests put a simulated one here).
    pub fn open_on(
        fs: Arc<dyn Fs>,
        dir: &Path,
        mut options: LsmOptions,
    ) -> Result<LsmEngine, EngineError> {
        // Settings that would leave writers waiting for a freeze or a slot that never comes.
        options.memtable_bytes = options.memtable_bytes.max(1);
        options.max_frozen_memtables = options.max_frozen_memtables.max(1);
        for sub in ["log", "manifest", "tables"] {
            let d = dir.join(sub);
            fs.create_dir_all(&d).map_err(io(&d))?;
        }
        // The new directories' entries are durable before anything is written into them.
        super::log::sync_dir(&*fs, dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            super::log::sync_dir(&*fs, parent)?;
        }
        let manifest_existed =
            !super::log::recovery::segment_ids(&*fs, &dir.join("manifest"))?.is_empty();
        if !manifest_existed && has_tables(&*fs, dir)? {
            // Tables without a manifest: moving them aside as orphans would hide the data.
            return Err(corruption(
                &dir.join("manifest"),
                0,
                "the manifest is missing but tables exist",
            ));
        }
        let manifest = Manifest::open_with(
            Arc::clone(&fs),
            &dir.join("manifest"),
            options.manifest_snapshot_every,
        )?;
        let state = manifest.state().clone();
        // The commit log must still hold everything the tables lack: the segment the manifest
        // starts it at (or, before the first flush, the first one). Anything else means a lost
        // manifest edit or lost log segments — refuse rather than serve a rolled-back store.
        let log_ids = super::log::recovery::segment_ids(&*fs, &dir.join("log"))?;
        let lowest = log_ids.iter().copied().find(|&id| id >= state.log_start);
        let consistent = match lowest {
            Some(id) => id <= state.log_start.max(1),
            None => state.log_start <= 1 && log_ids.is_empty(),
        };
        if !consistent {
            return Err(corruption(
                &dir.join("log"),
                0,
                format!(
                    "the manifest starts the commit log at segment {}, but the log holds {:?}",
                    state.log_start, log_ids
                ),
            ));
        }
        let blocks = (options.block_cache_bytes > 0)
            .then(|| Arc::new(BlockCache::new(options.block_cache_bytes)));
        let rows = (options.row_cache_bytes > 0).then(|| RowCache::new(options.row_cache_bytes));
        let mut levels: Vec<Vec<Arc<LiveTable>>> = vec![Vec::new(); LEVELS as usize];
        for meta in state.tables.values() {
            let table = Table::open(&*fs, &table_path(dir, meta.id), blocks.clone())?;
            if let Some(level) = levels.get_mut(meta.level as usize) {
                level.push(Arc::new(LiveTable {
                    meta: meta.clone(),
                    table,
                }));
            }
        }
        for (i, level) in levels.iter_mut().enumerate() {
            if i == 0 {
                level.sort_by_key(|t| std::cmp::Reverse(t.meta.id));
            } else {
                level.sort_by(|a, b| a.meta.first_key.cmp(&b.meta.first_key));
            }
        }
        let highest_file = remove_orphans(&*fs, dir, &state.tables)?;

        let replayed = Memtable::new(state.log_start);
        let mut seq = 0u64;
        let log_dir = dir.join("log");
        let log_options = LogOptions {
            durability: options.durability,
            // Never number new segments below what the manifest says is already in tables.
            min_segment: state.log_start,
            segment_bytes: options.log_segment_bytes,
            preallocate: true,
            ..LogOptions::default()
        };
        let log = CommitLog::open(Arc::clone(&fs), &log_dir, log_options, |pos, record| {
            if pos.segment < state.log_start {
                // Already in tables; the segment outlived a crash before its retirement.
                return Ok(());
            }
            let segment = super::log::segment_path(&log_dir, pos.segment);
            let batch =
                decode_batch(record).map_err(|detail| corruption(&segment, pos.offset, detail))?;
            for (k, v) in batch {
                seq += 1;
                replayed.insert(k, seq, v);
            }
            Ok(())
        })
        .map_err(|e| match e {
            OpenError::Log(e) => EngineError::from(e),
            OpenError::Replay(e) => e,
        })?;
        log.retire_before(state.log_start)?;

        let mem = Arc::new(Memtable::new(log.current_segment()));
        let frozen = if replayed.is_empty() {
            Vec::new()
        } else {
            vec![Arc::new(replayed)]
        };
        let inner = Arc::new(Inner {
            fs,
            dir: dir.to_owned(),
            options,
            log,
            manifest: Mutex::new(manifest),
            view: RwLock::new(Arc::new(View {
                mem,
                frozen,
                levels,
            })),
            seq: Mutex::new(seq),
            visible: AtomicU64::new(seq),
            gate: RwLock::new(()),
            key_locks: (0..KEY_LOCKS).map(|_| Mutex::new(())).collect(),
            // Past every id on disk, orphans included: an id is never reused.
            next_file: AtomicU64::new(state.next_file_id.max(highest_file + 1).max(1)),
            work: Mutex::new(Work::default()),
            wake: Condvar::new(),
            progress: Condvar::new(),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            keys: AtomicI64::new(0),
            applied_keys: AtomicI64::new(0),
            counting: AtomicBool::new(true),
            flushes: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            stall_micros: AtomicU64::new(0),
            blocks,
            rows,
            graveyard: Mutex::new(Vec::new()),
            table_graveyard: Mutex::new(Vec::new()),
            watermarks: RwLock::new(Arc::new(Watermarks::default())),
            tombstones_purged: AtomicU64::new(0),
        });
        inner.load_watermarks()?;
        // The count walks every key: it runs beside the engine, from what the open found (no
        // write came since) — or here, if no thread can be started for it.
        let (view, snapshot) = (inner.current(), inner.visible.load(Ordering::Acquire));
        let worker = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("lsm-background".into())
                .spawn(move || inner.background())
                .map_err(io(dir))?
        };
        let counter = {
            let (inner, view) = (Arc::clone(&inner), Arc::clone(&view));
            std::thread::Builder::new()
                .name("lsm-count".into())
                .spawn(move || inner.count(&view, snapshot))
        };
        let counter = match counter {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "no thread for the key count; counting now");
                inner.count(&view, snapshot);
                None
            }
        };
        drop(view);
        inner.wake.notify_all();
        Ok(LsmEngine {
            inner,
            worker: Mutex::new(Some(worker)),
            counter: Mutex::new(counter),
        })
    }

    /// Waits until no frozen memtable is left, no compaction is due and the count of keys at
    /// open finished (for tests and benches).
    pub fn wait_idle(&self) -> Result<(), EngineError> {
        let inner = &self.inner;
        let mut work = lock(&inner.work);
        loop {
            inner.check()?;
            let view = inner.current();
            if !inner.counting.load(Ordering::Acquire)
                && view.frozen.is_empty()
                && !inner.mem_full(&view)
                && inner.compaction_due(&view).is_none()
            {
                return Ok(());
            }
            inner.wake.notify_all();
            work = inner
                .progress
                .wait_timeout(work, Duration::from_millis(50))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Freezes the memtable so the background thread flushes it (for tests and benches).
    pub fn freeze(&self) -> Result<(), EngineError> {
        self.inner.freeze(true)
    }

    /// Flushes the memtables, then compacts every table into one level below every level that
    /// held data, so that superseded values, erased markers and purgeable tombstones all go
    /// (for tests, benchmarks and operators). Returns once done; writes meanwhile keep it going
    /// until it catches up with them. Tables already in the last level (level 6, which holds
    /// over a hundred gigabytes with the default sizes) stay as they are.
    pub fn compact_fully(&self) -> Result<(), EngineError> {
        let inner = &self.inner;
        if !inner.current().mem.is_empty() {
            inner.freeze(true)?;
        }
        self.wait_idle()?;
        let view = inner.current();
        let Some(deepest) = view.levels.iter().rposition(|l| !l.is_empty()) else {
            return Ok(());
        };
        let target = (deepest + 1).min(LEVELS as usize - 1).max(1);
        let mut work = lock(&inner.work);
        work.compact_into = Some(target);
        loop {
            inner.wake.notify_all();
            inner.check()?;
            if work.closed {
                return Err(EngineError::Closed);
            }
            if work.compact_into.is_none() {
                return Ok(());
            }
            work = inner
                .progress
                .wait_timeout(work, Duration::from_millis(50))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Tables per level.
    pub fn level_counts(&self) -> Vec<usize> {
        self.inner.current().levels.iter().map(Vec::len).collect()
    }
}

impl Drop for LsmEngine {
    fn drop(&mut self) {
        lock(&self.inner.work).closed = true;
        self.inner.wake.notify_all();
        if let Some(worker) = lock(&self.worker).take() {
            let _ = worker.join();
        }
        if let Some(counter) = lock(&self.counter).take() {
            let _ = counter.join();
        }
    }
}

fn has_tables(fs: &dyn Fs, dir: &Path) -> Result<bool, EngineError> {
    let tables_dir = dir.join("tables");
    let names = fs.read_dir(&tables_dir).map_err(io(&tables_dir))?;
    Ok(names.iter().any(|n| n.ends_with(".sst")))
}

/// Moves table files the manifest does not name — left by a flush or compaction a crash
/// interrupted — into `tables/orphans/`, where an operator may inspect or delete them: nothing a
/// damaged manifest failed to name is ever deleted.
fn remove_orphans(
    fs: &dyn Fs,
    dir: &Path,
    tables: &BTreeMap<(u8, u64), TableMeta>,
) -> Result<u64, EngineError> {
    let tables_dir = dir.join("tables");
    let orphans = tables_dir.join("orphans");
    let live: std::collections::HashSet<u64> = tables.values().map(|t| t.id).collect();
    let mut highest = tables.values().map(|t| t.id).max().unwrap_or(0);
    let mut moved = false;
    for name in fs.read_dir(&tables_dir).map_err(io(&tables_dir))? {
        let Some(id) = name
            .strip_suffix(".sst")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        else {
            continue;
        };
        highest = highest.max(id);
        if live.contains(&id) {
            continue;
        }
        fs.create_dir_all(&orphans).map_err(io(&orphans))?;
        let path = tables_dir.join(&name);
        // Never over an earlier orphan of the same name.
        let mut to = orphans.join(&name);
        let mut n = 1;
        while fs.exists(&to) {
            to = orphans.join(format!("{name}.{n}"));
            n += 1;
        }
        tracing::warn!(table = %path.display(), to = %to.display(), "moving a table the manifest does not name aside");
        fs.rename(&path, &to).map_err(io(&path))?;
        moved = true;
    }
    if let Ok(names) = fs.read_dir(&orphans) {
        for name in names {
            if let Some(id) = name
                .split(".sst")
                .next()
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            {
                highest = highest.max(id);
            }
        }
    }
    if moved {
        super::log::sync_dir(fs, &orphans)?;
        super::log::sync_dir(fs, &tables_dir)?;
    }
    Ok(highest)
}

impl Inner {
    /// Counts the keys and applied-keys entries of `view` at `snapshot` — what the engine held
    /// when it opened — adding them to the counters as it goes (every change since the open is
    /// in them already). Stops early when the engine closes; a read failure (damage the reads
    /// that touch it report too) leaves the counts short, and says so.
    fn count(&self, view: &View, snapshot: u64) {
        const PUBLISH_EVERY: i64 = 1 << 16;
        /// Says the count is over however it ends (a panic included), so no one waits for it.
        struct Done<'a>(&'a Inner);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.counting.store(false, Ordering::Release);
                let _work = lock(&self.0.work);
                self.0.progress.notify_all();
            }
        }
        let _done = Done(self);
        let (mut keys, mut applied) = (0i64, 0i64);
        let walked = (|| -> Result<(), EngineError> {
            for (n, item) in self.merged_from(view, b"", snapshot)?.enumerate() {
                let (k, v) = item?;
                match k.first() {
                    Some(&DATA) if v != ERASED => keys += 1,
                    Some(&APPLIED) => applied += 1,
                    _ => {}
                }
                if keys + applied >= PUBLISH_EVERY {
                    self.keys
                        .fetch_add(std::mem::take(&mut keys), Ordering::Relaxed);
                    self.applied_keys
                        .fetch_add(std::mem::take(&mut applied), Ordering::Relaxed);
                }
                if n % 4096 == 4095 && lock(&self.work).closed {
                    return Ok(());
                }
            }
            Ok(())
        })();
        self.keys.fetch_add(keys, Ordering::Relaxed);
        self.applied_keys.fetch_add(applied, Ordering::Relaxed);
        if let Err(e) = walked {
            tracing::error!(error = %e, "counting the keys at open failed; the key counts are short");
        }
    }

    /// Reads the repair watermarks back (at open).
    fn load_watermarks(&self) -> Result<(), EngineError> {
        let view = self.current();
        let snapshot = self.visible.load(Ordering::Acquire);
        let mut marks = Watermarks::default();
        for item in self.merged_from(&view, &[WATERMARK], snapshot)? {
            let (k, v) = item?;
            if k.first() != Some(&WATERMARK) {
                break;
            }
            // A watermark only allows purges: one that cannot be read allows none.
            if !marks.load(&k, &v) {
                tracing::warn!(key = ?k, "ignoring a malformed repair watermark");
            }
        }
        *self
            .watermarks
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(marks);
        Ok(())
    }

    fn watermarks(&self) -> Arc<Watermarks> {
        Arc::clone(
            &self
                .watermarks
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Counts applied-keys entries a flush or compaction dropped.
    fn dropped_applied(&self, n: u64) {
        if n > 0 {
            let _ = self.applied_keys.fetch_sub(n as i64, Ordering::Relaxed);
        }
    }

    fn current(&self) -> Arc<View> {
        Arc::clone(&self.view.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn check(&self) -> Result<(), EngineError> {
        if self.failed.load(Ordering::Acquire) {
            let why = lock(&self.failure).clone().unwrap_or_default();
            return Err(EngineError::Stopped(why));
        }
        Ok(())
    }

    fn fail(&self, why: String) {
        tracing::error!(error = %why, "LSM engine stopped");
        *lock(&self.failure) = Some(why);
        self.failed.store(true, Ordering::Release);
        self.progress.notify_all();
    }

    /// The newest value of `key` at `snapshot` in `view`.
    fn lookup(
        &self,
        view: &View,
        key: &[u8],
        snapshot: u64,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        match self.find(view, key, snapshot, None)? {
            Found::Value(v) => Ok(Some(v)),
            Found::Absent => Ok(None),
            // Only a memory-only lookup gives up.
            Found::NotInMemory => Err(corruption(
                &self.dir,
                0,
                "a lookup allowed to read files gave up",
            )),
        }
    }

    /// [`lookup`](Self::lookup); with a `tally`, it reads no file — it stops at the first table
    /// whose block is not cached ([`Found::NotInMemory`]) — and counts its cache lookups there
    /// instead of in the caches.
    fn find(
        &self,
        view: &View,
        key: &[u8],
        snapshot: u64,
        mut tally: Option<&mut Tally>,
    ) -> Result<Found, EngineError> {
        if let Some(v) = view.mem.get(key, snapshot) {
            return Ok(Found::Value(v));
        }
        for m in &view.frozen {
            if let Some(v) = m.get(key, snapshot) {
                return Ok(Found::Value(v));
            }
        }
        let hash = KeyHash::of(key);
        for (level, tables) in view.levels.iter().enumerate() {
            if level == 0 {
                for t in tables {
                    match self.table_get(t, key, hash, tally.as_deref_mut())? {
                        Found::Absent => {}
                        found => return Ok(found),
                    }
                }
            } else {
                let i = tables.partition_point(|t| t.meta.last_key.as_slice() < key);
                if let Some(t) = tables.get(i) {
                    match self.table_get(t, key, hash, tally.as_deref_mut())? {
                        Found::Absent => {}
                        found => return Ok(found),
                    }
                }
            }
        }
        Ok(Found::Absent)
    }

    /// The value table `t` holds under `key`: through its bloom filter, then the row cache, then
    /// the block — from the block cache only, and counted in `tally`, when there is one.
    fn table_get(
        &self,
        t: &LiveTable,
        key: &[u8],
        hash: KeyHash,
        tally: Option<&mut Tally>,
    ) -> Result<Found, EngineError> {
        if !covers(&t.meta, key) || !t.table.may_contain_hash(hash) {
            return Ok(Found::Absent);
        }
        let id = t.table.cache_id();
        let row = match (&self.rows, &tally) {
            (Some(rows), Some(_)) => rows.peek(id, key),
            (Some(rows), None) => rows.get(id, key),
            (None, _) => None,
        };
        let found = match tally {
            Some(tally) => {
                if self.rows.is_some() {
                    if row.is_some() {
                        tally.row_hits += 1;
                    } else {
                        tally.row_misses += 1;
                    }
                }
                if let Some(v) = row {
                    return Ok(Found::Value(v.to_vec()));
                }
                match t.table.get_if_cached(key)? {
                    Some(found) => {
                        tally.block_hits += 1;
                        found
                    }
                    None => return Ok(Found::NotInMemory),
                }
            }
            None => {
                if let Some(v) = row {
                    return Ok(Found::Value(v.to_vec()));
                }
                t.table.get_unfiltered(key)?
            }
        };
        match found {
            Some(v) => {
                if let Some(rows) = &self.rows {
                    rows.insert(id, key, Arc::from(v.as_slice()));
                }
                Ok(Found::Value(v))
            }
            None => Ok(Found::Absent),
        }
    }

    fn get_version(&self, key: &[u8]) -> Result<Option<Version>, EngineError> {
        let view = self.current();
        let snapshot = self.visible.load(Ordering::Acquire);
        let value = self.lookup(&view, key, snapshot)?;
        self.version_of(value)
    }

    /// [`get_version`](Self::get_version) if it needs no file read and the value is small
    /// (at most [`MAX_IN_MEMORY_VALUE`]): `None` otherwise. Its cache lookups count only when it
    /// answers (otherwise the read that follows counts them).
    fn get_version_in_memory(&self, key: &[u8]) -> Option<Result<Option<Version>, EngineError>> {
        let view = self.current();
        let snapshot = self.visible.load(Ordering::Acquire);
        let mut tally = Tally::default();
        let answer = match self.find(&view, key, snapshot, Some(&mut tally)) {
            Ok(Found::Value(v)) if v.len() > MAX_IN_MEMORY_VALUE => return None,
            Ok(Found::Value(v)) => self.version_of(Some(v)),
            Ok(Found::Absent) => Ok(None),
            Ok(Found::NotInMemory) => return None,
            Err(e) => Err(e),
        };
        if let Some(rows) = &self.rows {
            rows.count(tally.row_hits, tally.row_misses);
        }
        if let Some(blocks) = &self.blocks {
            blocks.count(tally.block_hits, 0);
        }
        Some(answer)
    }

    /// The version a stored value under a version key holds (none for an erased one).
    fn version_of(&self, value: Option<Vec<u8>>) -> Result<Option<Version>, EngineError> {
        match value {
            None => Ok(None),
            Some(v) => match decode_value(&v, "version")? {
                Stored::Version(v) => Ok(Some(v)),
                Stored::Erased => Ok(None),
                Stored::Applied(_) => Err(corruption(
                    &self.dir,
                    0,
                    "an applied-keys entry under a version key",
                )),
            },
        }
    }

    fn get_applied(&self, key: &[u8]) -> Result<Option<AppliedEntry>, EngineError> {
        let view = self.current();
        let snapshot = self.visible.load(Ordering::Acquire);
        match self.lookup(&view, key, snapshot)? {
            None => Ok(None),
            Some(v) => match decode_value(&v, "applied-keys entry")? {
                Stored::Applied(e) if e.expires_at_ms > now_ms() => Ok(Some(e)),
                Stored::Applied(_) | Stored::Erased => Ok(None),
                Stored::Version(_) => Err(corruption(
                    &self.dir,
                    0,
                    "a version under an applied-keys key",
                )),
            },
        }
    }

    /// Logs `entries` as one record, then makes them visible. The caller holds the gate shared.
    fn write(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), EngineError> {
        let mut record = Vec::new();
        encode_batch(&entries, &mut record);
        self.log.append(&record)?;
        let view = self.current();
        let mut seq = lock(&self.seq);
        for (k, v) in entries {
            *seq += 1;
            view.mem.insert(k, *seq, v);
        }
        self.visible.store(*seq, Ordering::Release);
        Ok(())
    }

    /// Wakes the background thread, then waits while `blocked` holds of the current view
    /// (until the engine closes or fails), counting the wait as a write stall.
    fn wait_while(&self, blocked: impl Fn(&View) -> bool) -> Result<(), EngineError> {
        let started = std::time::Instant::now();
        let mut work = lock(&self.work);
        loop {
            self.check()?;
            // Under the work lock, so the background thread cannot miss it between its check
            // and its wait.
            self.wake.notify_all();
            if work.closed || !blocked(&self.current()) {
                break;
            }
            work = self
                .progress
                .wait_timeout(work, Duration::from_millis(10))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        self.count_stall(started);
        Ok(())
    }

    fn count_stall(&self, started: std::time::Instant) {
        let waited = started.elapsed();
        if waited >= Duration::from_micros(100) {
            self.stall_micros
                .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// Slows or stops a writer while flushes or level 0 fall behind.
    fn throttle(&self) -> Result<(), EngineError> {
        let l0 = |view: &View| view.levels.first().map_or(0, Vec::len);
        let now = l0(&self.current());
        if now >= self.options.l0_stop {
            self.wait_while(|view| l0(view) >= self.options.l0_stop)?;
        } else if now >= self.options.l0_slowdown {
            let above = (now - self.options.l0_slowdown + 1).min(8) as u64;
            let started = std::time::Instant::now();
            std::thread::sleep(Duration::from_micros(100 * above));
            self.count_stall(started);
        }
        Ok(())
    }

    /// After a write: a full memtable is the background thread's to freeze; a writer waits only
    /// while the memtable holds twice its size (the background thread fell behind).
    fn after_write(&self) -> Result<(), EngineError> {
        let limit = self.options.memtable_bytes;
        if self.current().mem.bytes() < limit {
            return Ok(());
        }
        self.wait_while(|view| view.mem.bytes() >= limit.saturating_mul(2))
    }

    /// Freezes the memtable if it is full (or `force`): the log moves to a new segment and a
    /// fresh memtable takes its writes. Waits while too many frozen memtables wait for a flush.
    fn freeze(&self, force: bool) -> Result<(), EngineError> {
        self.freeze_with(force, true)
    }

    /// [`freeze`](Self::freeze); `wait_for_slot` false (the background thread, which is the one
    /// to free a slot) returns at once when every frozen slot is taken.
    fn freeze_with(&self, force: bool, wait_for_slot: bool) -> Result<(), EngineError> {
        let full = || self.current().mem.bytes() >= self.options.memtable_bytes;
        if !force && !full() {
            return Ok(());
        }
        let slots_taken = || self.current().frozen.len() >= self.options.max_frozen_memtables;
        if !wait_for_slot && slots_taken() {
            return Ok(());
        }
        // Wait (without the gate, so in-flight writes finish) until a frozen slot is free.
        if slots_taken() {
            self.wait_while(|view| view.frozen.len() >= self.options.max_frozen_memtables)?;
        }
        // Fsync what the log holds while writers go on (the rotation below, which they wait
        // for, fsyncs nothing then), so a power cut takes at most about a memtable's writes.
        if self.options.durability != Durability::Always {
            self.log.sync()?;
        }
        let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        let view = self.current();
        if view.mem.is_empty()
            || (!force && view.mem.bytes() < self.options.memtable_bytes)
            || (!wait_for_slot && slots_taken())
        {
            return Ok(());
        }
        // No write runs while the gate is held, so the memtable stays as it is; the background
        // thread may still change the frozen memtables and levels, so they are read under the
        // view's lock, at the swap.
        let segment = self.log.rotate()?;
        {
            let mut current = self.view.write().unwrap_or_else(PoisonError::into_inner);
            let mut frozen = vec![Arc::clone(&current.mem)];
            frozen.extend(current.frozen.iter().cloned());
            *current = Arc::new(View {
                mem: Arc::new(Memtable::new(segment)),
                frozen,
                levels: current.levels.clone(),
            });
        }
        // Under the work lock, so the background thread cannot miss it between its check and
        // its wait.
        let _work = lock(&self.work);
        self.wake.notify_all();
        Ok(())
    }
}
