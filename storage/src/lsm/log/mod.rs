//! The commit log: every write is appended here before the memtable takes it, so a restart
//! replays what the memtables held.
//!
//! Records are opaque byte strings, framed and checksummed as [`format`](mod@format) describes, in numbered
//! segment files `<id>.log` (16 hex digits) in one directory. Appends share I/O by *group commit*:
//! an appender whose record is not yet written becomes the leader if no write is under way, and
//! writes (and, under [`Durability::Always`], fsyncs) every record queued so far in one call while
//! the others wait; no thread is spawned per writer. Under [`Durability::Always`] a leader first
//! *gathers*: when fewer records are queued than writers were in flight as the last fsync ended,
//! it waits — at most half an fsync's time — for the writers that fsync released to append
//! again, so concurrent writers share one fsync instead of alternating between two half-full
//! ones; a lone writer never waits, and a leader whose writers stopped coming soon stops
//! waiting for them. An I/O failure poisons the log: every later
//! append fails, since after a failed fsync nothing can tell what reached the disk.
//!
//! Opening replays every record in order ([`recovery`]), truncates a torn tail of the newest
//! segment, and appends into a fresh segment.

pub mod format;
pub mod recovery;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::fs::{Fs, FsFile};
use crate::durability::Durability;

/// Where a record was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    /// Its segment.
    pub segment: u64,
    /// Byte offset of its first fragment in that segment.
    pub offset: u64,
}

/// Segments a rotation leaves for the next sync to fsync, at most; past that, a rotation
/// fsyncs them itself.
const MAX_UNSYNCED_SEGMENTS: usize = 4;

/// Bytes a preallocating log allocates ahead of its writes at a time.
pub const ALLOCATION_STEP: u64 = 1 << 20;

/// Settings of a commit log.
#[derive(Clone, Copy, Debug)]
pub struct LogOptions {
    /// When appended records are on stable storage.
    pub durability: Durability,
    /// A segment is closed, and a new one started, once it holds this many bytes.
    pub segment_bytes: u64,
    /// The largest record accepted.
    pub max_record_bytes: usize,
    /// The first segment a fresh log starts at, at least (ids below it may be in use elsewhere).
    pub min_segment: u64,
    /// Allocate each segment ahead of its writes, [`ALLOCATION_STEP`] at a time, so most fsyncs
    /// of appends need not change the file's size (only one per step does), and a segment at
    /// rest holds at most a step of unwritten space.
    pub preallocate: bool,
    /// Under [`Durability::Always`], the longest a leader waits for writers to join its batch
    /// (it waits at most half an fsync's time below this); zero never waits.
    pub max_gather: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::Always,
            segment_bytes: 64 << 20,
            max_record_bytes: 64 << 20,
            min_segment: 1,
            preallocate: false,
            max_gather: Duration::from_millis(5),
        }
    }
}

/// A commit-log failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// An I/O call failed on `path`.
    #[error("commit log I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A record that was complete once is damaged (not a torn tail): the log refuses to open
    /// rather than lose what follows it.
    #[error("commit log corrupt in {path} at offset {offset}: {detail}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Byte offset of the damaged fragment.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// A record over [`LogOptions::max_record_bytes`].
    #[error("record of {len} bytes exceeds the commit log's limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An earlier I/O failure stopped the log; nothing more is appended.
    #[error("commit log stopped after an earlier failure: {0}")]
    Failed(String),
    /// The log was closed.
    #[error("commit log closed")]
    Closed,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The path of segment `id` in `dir`.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.log"))
}

/// Fsyncs directory `dir`, so entries created, renamed or removed in it are durable.
pub fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<(), LogError> {
    fs.sync_dir(dir).map_err(io_error(dir))
}

/// What a log has done since it opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records appended.
    pub appends: u64,
    /// Writes to the operating system (each carries every record queued when it began).
    pub writes: u64,
    /// Fsyncs.
    pub syncs: u64,
    /// Segments started.
    pub rotations: u64,
    /// Times a leader waited for writers to join its batch before its fsync.
    pub gathers: u64,
}

/// An open commit log, appending to its newest segment.
pub struct CommitLog {
    shared: Arc<Shared>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: LogOptions,
    state: Mutex<State>,
    /// Signalled whenever a write or fsync ends, and when the log closes.
    progress: Condvar,
    /// Signalled when a gathering leader's batch holds the records it waits for.
    gathered: Condvar,
}

struct State {
    segment: u64,
    /// The segment's file; `None` while a leader writes to it.
    file: Option<Arc<dyn FsFile>>,
    /// The segment's file too, for fsyncs that run beside a leader's write.
    sync_file: Arc<dyn FsFile>,
    /// Without [`Durability::Always`], earlier segments a rotation closed without an fsync
    /// (their last records and end marker may not be durable yet), oldest first: the next
    /// [`Shared::sync`] fsyncs them before the current segment.
    unsynced: Vec<(u64, Arc<dyn FsFile>)>,
    /// (segment, offset) just past the last batch written.
    written_end: (u64, u64),
    /// In a relaxed log, a position every byte before which a sync made durable, for the next
    /// append to record ([`format::encode_synced`]) — evidence for recovery that damage before
    /// it is corruption, not a lost end.
    mark: Option<(u64, u64)>,
    /// Segment offset after everything queued.
    tail: u64,
    /// Bytes of the segment allocated (it is at least this long).
    allocated: u64,
    /// Encoded records not yet handed to a leader.
    queued: Vec<u8>,
    /// How many records `queued` holds.
    queued_records: usize,
    /// Writers in flight when the last fsync of a batch ended (its own and those queued
    /// meanwhile): the records a leader gathers for.
    expected: usize,
    /// A leader is gathering (and holds `busy`).
    gathering: bool,
    /// A rotation asked the gathering leader to stop gathering.
    cut_short: bool,
    /// Gathers in a row that ended at their deadline, short of `expected`.
    gather_misses: u32,
    /// Average duration of a batch's fsync (exponentially weighted).
    sync_time: Duration,
    /// The batch number the queued records will be written in.
    next_batch: u64,
    /// Every batch up to this one was written to the operating system.
    written: u64,
    /// Every batch up to this one was fsynced.
    synced: u64,
    /// A leader is writing.
    busy: bool,
    /// Set by the first I/O failure.
    failure: Option<String>,
    closed: bool,
    stats: LogStats,
    /// The next segment, created ahead of its rotation ([`CommitLog::prepare_next`]).
    spare: Option<(u64, Arc<dyn FsFile>)>,
    /// `prepare_next` is creating the next segment: a rotation waits for it.
    preparing: bool,
    /// [`Shared::sync`] is fsyncing beside the leaders: another such fsync, and a rotation,
    /// wait for it — two fsyncs of one file never overlap, so an I/O error one of them sees is
    /// never hidden by the other's success.
    syncing: bool,
}

impl CommitLog {
    /// Opens the log in `dir` (created if missing): replays every intact record to `replay` in
    /// append order, truncates a torn tail of the newest segment, and starts a new segment.
    /// Fails with [`LogError::Corrupt`] on damage anywhere but a torn tail, or with `replay`'s
    /// error.
    pub fn open<E>(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: LogOptions,
        replay: impl FnMut(LogPosition, &[u8]) -> Result<(), E>,
    ) -> Result<CommitLog, OpenError<E>> {
        fs.create_dir_all(dir)
            .map_err(|e| OpenError::Log(io_error(dir)(e)))?;
        let last = recovery::replay(
            &*fs,
            dir,
            options.max_record_bytes,
            options.min_segment,
            replay,
        )?;
        let segment = last.map_or(1, |id| id + 1).max(options.min_segment);
        let relaxed = options.durability != Durability::Always;
        let file = create_segment(&*fs, dir, segment, relaxed).map_err(OpenError::Log)?;
        let shared = Arc::new(Shared {
            fs,
            dir: dir.to_owned(),
            options,
            state: Mutex::new(State {
                segment,
                sync_file: Arc::clone(&file),
                unsynced: Vec::new(),
                written_end: (segment, format::HEADER_LEN as u64),
                mark: None,
                file: Some(file),
                tail: format::HEADER_LEN as u64,
                allocated: format::HEADER_LEN as u64,
                queued: Vec::new(),
                queued_records: 0,
                expected: 0,
                gathering: false,
                cut_short: false,
                gather_misses: 0,
                sync_time: Duration::ZERO,
                next_batch: 1,
                written: 0,
                synced: 0,
                busy: false,
                failure: None,
                closed: false,
                stats: LogStats::default(),
                spare: None,
                preparing: false,
                syncing: false,
            }),
            progress: Condvar::new(),
            gathered: Condvar::new(),
        });
        let syncer = match options.durability {
            Durability::Interval(every) => Some(spawn_syncer(Arc::downgrade(&shared), every)),
            _ => None,
        };
        Ok(CommitLog { shared, syncer })
    }

    /// Appends `record`, returning once it is as durable as the log's [`Durability`] promises.
    pub fn append(&self, record: &[u8]) -> Result<LogPosition, LogError> {
        let max = self.shared.options.max_record_bytes;
        if record.len() > max {
            return Err(LogError::TooLarge {
                len: record.len(),
                max,
            });
        }
        let mut st = self.shared.lock();
        st.usable()?;
        if st.tail + format::encoded_len(st.tail, record.len()) > self.shared.options.segment_bytes
            && st.tail > format::HEADER_LEN as u64
        {
            let full = st.segment;
            st = self.shared.rotate(st, Some(full))?;
        }
        if let Some((segment, offset)) = st.mark.take() {
            let tail = st.tail;
            st.tail += format::encode_synced(&mut st.queued, tail, segment, offset);
        }
        let position = LogPosition {
            segment: st.segment,
            offset: st.tail,
        };
        let tail = st.tail;
        st.tail += format::encode_record(&mut st.queued, tail, record);
        st.stats.appends += 1;
        st.queued_records += 1;
        if st.gathering && st.queued_records >= st.expected {
            self.shared.gathered.notify_one();
        }
        let batch = st.next_batch;
        let sync = self.shared.options.durability == Durability::Always;
        self.shared.wait_for(st, batch, sync, true)?;
        Ok(position)
    }

    /// Fsyncs everything appended so far.
    pub fn sync(&self) -> Result<(), LogError> {
        self.shared.sync()
    }

    /// Closes the current segment (fsynced under [`Durability::Always`], else by the next
    /// [`sync`](Self::sync)) and starts a new one; returns the new segment's id. Records
    /// appended before this call are in segments with smaller ids.
    pub fn rotate(&self) -> Result<u64, LogError> {
        let st = self.shared.lock();
        st.usable()?;
        let st = self.shared.rotate(st, None)?;
        Ok(st.segment)
    }

    /// Deletes every segment with an id below `segment` (their records are no longer needed),
    /// durably.
    pub fn retire_before(&self, segment: u64) -> Result<(), LogError> {
        let current = self.shared.lock().segment;
        let (fs, dir) = (&*self.shared.fs, &self.shared.dir);
        let mut removed = false;
        for id in recovery::segment_ids(fs, dir)? {
            if id < segment && id < current {
                let path = segment_path(dir, id);
                fs.remove_file(&path).map_err(io_error(&path))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(fs, dir)?;
        }
        Ok(())
    }

    /// Creates the next segment ahead of time (durably), so the rotation that starts it has no
    /// file to create while appenders wait. Does nothing if it is ready already.
    pub fn prepare_next(&self) -> Result<(), LogError> {
        let next = {
            let mut st = self.shared.lock();
            st.usable()?;
            if st.preparing
                || st
                    .spare
                    .as_ref()
                    .is_some_and(|(id, _)| *id == st.segment + 1)
            {
                return Ok(());
            }
            // No rotation creates a segment while this is set, so `next` cannot be taken.
            st.preparing = true;
            st.segment + 1
        };
        let created = create_segment(
            &*self.shared.fs,
            &self.shared.dir,
            next,
            self.shared.relaxed(),
        );
        let mut st = self.shared.lock();
        st.preparing = false;
        match created {
            Ok(file) => st.spare = Some((next, file)),
            Err(e) => {
                // Not fatal: the current segment goes on, and the rotation creates the segment
                // itself — once the partial file, if any, is gone.
                tracing::warn!(error = %e, "cannot make the next commit-log segment ready");
                let _ = self
                    .shared
                    .fs
                    .remove_file(&segment_path(&self.shared.dir, next));
            }
        }
        self.shared.progress.notify_all();
        Ok(())
    }

    /// What the log has done since it opened.
    pub fn stats(&self) -> LogStats {
        self.shared.lock().stats
    }

    /// The segment appends go to now.
    pub fn current_segment(&self) -> u64 {
        self.shared.lock().segment
    }

    /// Fsyncs everything appended and closes the log; later appends fail with
    /// [`LogError::Closed`].
    pub fn close(&mut self) -> Result<(), LogError> {
        let synced = self.shared.sync();
        {
            let mut st = self.shared.lock();
            st.closed = true;
        }
        self.shared.progress.notify_all();
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
        synced
    }
}

impl Drop for CommitLog {
    fn drop(&mut self) {
        let closed = self.shared.lock().closed;
        if !closed && let Err(e) = self.close() {
            tracing::error!(error = %e, "commit log close failed");
        }
    }
}

/// Why a log did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError<E> {
    /// The log itself.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The replay callback's error.
    #[error("replaying the commit log: {0}")]
    Replay(E),
}

impl State {
    fn usable(&self) -> Result<(), LogError> {
        if self.closed {
            return Err(LogError::Closed);
        }
        match &self.failure {
            Some(f) => Err(LogError::Failed(f.clone())),
            None => Ok(()),
        }
    }
}

impl Shared {
    /// Segments of this log are fsynced only on [`sync`](Self::sync) ([`format::RELAXED`]).
    fn relaxed(&self) -> bool {
        self.options.durability != Durability::Always
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.progress
            .wait(st)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until batch `batch` is written (and fsynced, with `sync`), leading the write
    /// whenever no one else is.
    /// An appender (`gather`) that leads a fsynced batch may first gather ([`Shared::gather`]).
    fn wait_for<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        batch: u64,
        sync: bool,
        gather: bool,
    ) -> Result<(), LogError> {
        loop {
            if st.written >= batch && (!sync || st.synced >= batch) {
                return Ok(());
            }
            if let Some(f) = &st.failure {
                return Err(LogError::Failed(f.clone()));
            }
            if st.busy {
                st = self.wait(st);
                continue;
            }
            if sync && gather {
                st = self.gather(st);
                if st.failure.is_some() {
                    continue;
                }
            }
            st = self.lead(st, sync);
        }
    }

    /// Before an appender leads a fsynced batch: waits (holding `busy`, so no one else leads)
    /// until the writers in flight when the last fsync ended have queued again — at most half
    /// an fsync's time, not at all after two gathers in a row fell short (but every 16th batch
    /// tries again), and no longer once a rotation waits.
    fn gather<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        if st.queued_records >= st.expected
            || (st.gather_misses >= 2 && !st.next_batch.is_multiple_of(16))
            || st.sync_time.is_zero()
            || self.options.max_gather.is_zero()
        {
            return st;
        }
        let deadline = Instant::now() + (st.sync_time / 2).min(self.options.max_gather);
        st.busy = true;
        st.gathering = true;
        st.cut_short = false;
        st.stats.gathers += 1;
        loop {
            if st.queued_records >= st.expected {
                st.gather_misses = 0;
                break;
            }
            if st.cut_short {
                // A rotation waits (under the engine's freeze, writers cannot come).
                break;
            }
            let now = Instant::now();
            if now >= deadline || st.closed || st.failure.is_some() {
                st.gather_misses = st.gather_misses.saturating_add(1);
                break;
            }
            st = self
                .gathered
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        st.gathering = false;
        st.busy = false;
        st
    }

    /// Writes every queued record (and fsyncs, with `sync`) without holding the lock.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>, sync: bool) -> MutexGuard<'a, State> {
        let Some(file) = st.file.take() else {
            // Only a leader takes the file, and `busy` says none is leading.
            st.failure = Some("the segment file is missing".into());
            return st;
        };
        let batch = st.next_batch;
        st.next_batch += 1;
        st.busy = true;
        let mut buf = std::mem::take(&mut st.queued);
        let records = std::mem::take(&mut st.queued_records);
        let batch_offset = st.tail - buf.len() as u64;
        // A batch start tells recovery that everything before it was durable: only true when
        // every earlier batch was fsynced (always so under `Always`).
        let after_sync = st.synced == st.written;
        let segment = st.segment;
        let path = segment_path(&self.dir, segment);
        // Allocate the next step once the writes reach the end of what is allocated.
        let end = batch_offset + buf.len() as u64;
        let grow = (self.options.preallocate && end > st.allocated).then(|| {
            (st.allocated + ALLOCATION_STEP)
                .max(end)
                .min(self.options.segment_bytes.max(end))
        });
        drop(st);
        if after_sync {
            format::mark_batch_start(&mut buf, batch_offset);
        }
        if let Some(to) = grow {
            file.allocate(to);
        }

        let mut result = file.write_all_at(&buf, batch_offset);
        let mut synced_in = None;
        if result.is_ok() && sync {
            let started = Instant::now();
            result = file.sync_data();
            synced_in = Some(started.elapsed());
        }
        if result.is_err() {
            // The waiters are told their records were not stored: take them back out, so a
            // restart does not replay them. If even that fails, a restart may. (A preallocated
            // segment loses its unwritten rest too: recovery reads a segment's end as its tail.)
            if let Err(e) = file.set_len(batch_offset).and_then(|()| file.sync_data()) {
                tracing::error!(path = %path.display(), error = %e,
                    "cannot remove a failed commit-log batch; a restart may replay it");
            }
        }

        let mut st = self.lock();
        st.file = Some(file);
        st.busy = false;
        if let Some(to) = grow {
            st.allocated = if result.is_ok() { to } else { batch_offset };
        }
        match result {
            Ok(()) => {
                st.written = batch;
                st.written_end = (segment, end);
                st.stats.writes += 1;
                if let Some(took) = synced_in {
                    st.synced = batch;
                    st.stats.syncs += 1;
                    st.sync_time = if st.sync_time.is_zero() {
                        took
                    } else {
                        (st.sync_time * 7 + took) / 8
                    };
                    st.expected = records + st.queued_records;
                }
                // Keep the buffer's allocation for the next batch.
                if st.queued.is_empty() {
                    let mut buf = buf;
                    buf.clear();
                    st.queued = buf;
                }
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "commit log write failed; the log stops");
                st.failure = Some(format!("{}: {e}", path.display()));
            }
        }
        self.progress.notify_all();
        st
    }

    /// Fsyncs every record appended before the call. Under [`Durability::Always`] that is what
    /// every leader does anyway; otherwise the queued records are written (as a leader would),
    /// then the segments a rotation left unsynced and the current one are fsynced, in order,
    /// *beside* the leaders — appenders never wait for this fsync.
    fn sync(&self) -> Result<(), LogError> {
        let mut st = self.lock();
        st.usable()?;
        let batch = st.next_batch;
        if self.options.durability == Durability::Always {
            // Not an appender: nothing of its own for writers to join.
            return self.wait_for(st, batch, true, false);
        }
        if !st.queued.is_empty() {
            self.wait_for(st, batch, false, false)?;
            st = self.lock();
        }
        // Every batch written so far; one still being written by a leader is not covered.
        let target = st.written;
        let through = st.written_end;
        loop {
            st.usable()?;
            if st.synced >= target {
                return Ok(());
            }
            // Not beside a leader either: a rotation's leader fsyncs (and writes are short).
            if !st.syncing && !st.busy {
                break;
            }
            st = self.wait(st);
        }
        st.syncing = true;
        let mut files = std::mem::take(&mut st.unsynced);
        files.push((st.segment, Arc::clone(&st.sync_file)));
        drop(st);
        // No rotation runs meanwhile (it waits for `syncing`), so these are the segments that
        // hold `target`'s batches (or they were fsynced before). Oldest first: a batch of a
        // later segment is never durable before an earlier one's.
        let mut result = Ok(());
        let mut path = PathBuf::new();
        for (id, file) in &files {
            path = segment_path(&self.dir, *id);
            result = file.sync_data();
            if result.is_err() {
                break;
            }
        }
        let mut st = self.lock();
        st.syncing = false;
        self.progress.notify_all();
        match result {
            Ok(()) => {
                // A failure recorded meanwhile (a leader's write) leaves nothing to vouch for.
                st.usable()?;
                st.synced = st.synced.max(target);
                st.stats.syncs += 1;
                if st.mark.is_none_or(|m| m < through) {
                    st.mark = Some(through);
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "commit log fsync failed; the log stops");
                let e = io_error(&path)(e);
                st.failure.get_or_insert_with(|| e.to_string());
                Err(e)
            }
        }
    }

    /// Writes and fsyncs everything queued, then switches to a new segment — unless `full`
    /// names a segment that another caller rotated away from meanwhile.
    fn rotate<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        full: Option<u64>,
    ) -> Result<MutexGuard<'a, State>, LogError> {
        // Appenders may queue more records into the old segment while a leader writes; each
        // round writes them all, and every appender queues at most once before it waits.
        loop {
            st.usable()?;
            if full.is_some_and(|id| id != st.segment) {
                return Ok(st);
            }
            if st.busy || st.preparing || st.syncing {
                if st.gathering {
                    st.cut_short = true;
                    self.gathered.notify_one();
                }
                st = self.wait(st);
            } else if !st.queued.is_empty() {
                // Written only: under `always`, the one fsync below makes it durable.
                st = self.lead(st, false);
            } else {
                break;
            }
        }
        // The old segment ends with an end marker, so an older segment that stops short of one
        // lost its end, and its allocated rest needs no cut (a change of the file's size would
        // cost a metadata commit while appenders wait). Under `always`, one data fsync makes the
        // marker and every record durable before anything reaches the next segment (under the
        // state lock: no one writes meanwhile). Otherwise no fsync is owed now: the segment
        // waits for the next sync, which fsyncs it before any later one — and until then no
        // later batch is marked as one everything before was durable for, so recovery may
        // end the log where such a segment lost its end ([`recovery`]).
        let sync_now = self.options.durability == Durability::Always
            || st.unsynced.len() >= MAX_UNSYNCED_SEGMENTS;
        {
            let mut end = Vec::with_capacity(2 * format::FRAGMENT_HEADER_LEN);
            let tail = st.tail;
            format::encode_end(&mut end, tail);
            let mut path = segment_path(&self.dir, st.segment);
            let mut done = match st.file.as_ref() {
                Some(file) => file.write_all_at(&end, tail),
                None => Err(std::io::Error::other("the segment file is missing")),
            };
            if sync_now {
                for (id, file) in &st.unsynced {
                    if done.is_ok() {
                        path = segment_path(&self.dir, *id);
                        done = file.sync_data();
                    }
                }
                if done.is_ok() {
                    path = segment_path(&self.dir, st.segment);
                    done = st.sync_file.sync_data();
                }
            }
            if let Err(e) = done {
                let e = io_error(&path)(e);
                st.failure.get_or_insert_with(|| e.to_string());
                self.progress.notify_all();
                return Err(e);
            }
            st.written_end = (st.segment, tail + end.len() as u64);
            if sync_now {
                st.unsynced.clear();
                st.synced = st.written;
                st.stats.syncs += 1;
            } else {
                // The marker is a write no fsync covered yet (no appender waits on this batch:
                // nothing is queued).
                st.written = st.next_batch;
                st.next_batch += 1;
            }
            self.progress.notify_all();
        }
        let next = st.segment + 1;
        let ready = match st.spare.take() {
            Some((id, file)) if id == next => Ok(file),
            _ => create_segment(&*self.fs, &self.dir, next, self.relaxed()),
        };
        match ready {
            Ok(file) => {
                st.sync_file = Arc::clone(&file);
                if let Some(old) = st.file.replace(file)
                    && !sync_now
                {
                    let id = st.segment;
                    st.unsynced.push((id, old));
                }
                st.segment = next;
                st.tail = format::HEADER_LEN as u64;
                st.allocated = format::HEADER_LEN as u64;
                st.stats.rotations += 1;
                Ok(st)
            }
            Err(e) => {
                st.failure = Some(e.to_string());
                self.progress.notify_all();
                Err(e)
            }
        }
    }
}

/// Creates segment `id` in `dir` with its header, durably (file and directory fsynced). A
/// preallocating log allocates it as its writes reach the end ([`ALLOCATION_STEP`]).
fn create_segment(
    fs: &dyn Fs,
    dir: &Path,
    id: u64,
    relaxed: bool,
) -> Result<Arc<dyn FsFile>, LogError> {
    let path = segment_path(dir, id);
    let file = fs.create_new(&path).map_err(io_error(&path))?;
    file.write_all_at(&format::encode_header(id, relaxed), 0)
        .map_err(io_error(&path))?;
    file.sync_all().map_err(io_error(&path))?;
    sync_dir(fs, dir)?;
    Ok(file)
}

/// Fsyncs the log every `every` until it closes or is dropped.
fn spawn_syncer(shared: Weak<Shared>, every: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        loop {
            let Some(log) = shared.upgrade() else { return };
            let st = log.lock();
            if st.closed {
                return;
            }
            let (st, _) = log
                .progress
                .wait_timeout_while(st, every, |st| !st.closed)
                .unwrap_or_else(PoisonError::into_inner);
            if st.closed {
                return;
            }
            let dirty = st.written > st.synced || !st.queued.is_empty();
            drop(st);
            if dirty && let Err(e) = log.sync() {
                tracing::error!(error = %e, "commit log interval fsync failed");
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests;
