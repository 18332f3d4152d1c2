//! The durable hint log: which keys which replica missed, kept on the write's leader.
//!
//! A hint names a target node and a key — not a version: when the target is back, the leader
//! sends it the key's *current* version, so one hint covers every write the target missed on that
//! key, and a hint never resurrects an overwritten or deleted value.
//!
//! Hints live in memory, indexed by target, and in one append-only file, `hints.log` in the
//! node's data dir, rewritten when mostly dead. Each record is
//!
//! ```text
//! record  = crc32c:u32 LE (of len and body) | len:u32 LE | body
//! body    = op:u8 (1 add, 2 remove) | target_len:u8 | target | ns_len:u8 | namespace
//!         | key_len:u32 LE | key | recorded_ms:u64 LE
//! ```
//!
//! On open the file is replayed up to the first record that does not check out (a torn tail
//! after a crash), and truncated there: hints are a fast path — anti-entropy converges replicas
//! without them — so a lost hint delays convergence and loses nothing acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// File name of the hint log in a node's data dir.
pub const FILE: &str = "hints.log";
/// Most hints held; past it new hints are dropped (and counted).
pub const MAX_HINTS: usize = 1_000_000;
/// Longest key a hint holds (a stored key is never longer).
const MAX_KEY: usize = 1 << 20;
/// Bytes of records buffered before an append must write them out: recordings append to the
/// buffer while another one's fsync runs (a write to the file would wait for the fsync), and the
/// next fsync writes them out and covers them all.
const BUFFER: usize = 1 << 20;

/// A hint log failed.
#[derive(Debug, thiserror::Error)]
#[error("hint log {path}: {source}")]
pub struct HintError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub source: std::io::Error,
}

/// One missed key, as [`HintLog::peek`] hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The tenant (namespace).
    pub namespace: String,
    /// The user key.
    pub key: Vec<u8>,
    /// When it was last recorded, in Unix milliseconds.
    pub recorded_ms: u64,
    /// Which recording of it this is: a hint recorded again after it was handed out is a new
    /// one, which removing the old one leaves in place.
    pub seq: u64,
}

/// Counts since the log opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HintCounts {
    /// Hints held now.
    pub pending: u64,
    /// Hints recorded.
    pub recorded: u64,
    /// Hints removed after their replay.
    pub replayed: u64,
    /// Hints dropped unreplayed: expired, for a removed node or a key it no longer holds, or
    /// over [`MAX_HINTS`].
    pub dropped: u64,
}

/// One target's hints: `(namespace, key)` → `(recorded_ms, seq)`.
type Hinted = BTreeMap<(String, Vec<u8>), (u64, u64)>;

#[derive(Default)]
struct State {
    /// target → (namespace, key) → (recorded_ms, seq).
    by_target: HashMap<String, Hinted>,
    /// The next recording's sequence number.
    next_seq: u64,
    count: usize,
    file: Option<BufWriter<File>>,
    /// Bytes of the file known good: a failed append is cut back to it.
    good_len: u64,
    /// Records in the file; live ones are `count`.
    records: u64,
    /// Recordings appended so far (each one call of [`HintLog::record`]).
    written: u64,
    /// Recordings up to this one were appended before a write failed and the file was cut
    /// back: they are not in the file, and their callers must hear so.
    lost_through: u64,
}

/// Where the log's fsyncs are.
#[derive(Default)]
struct Synced {
    /// Recordings up to this one are durable (unless lost: see `State::lost_through`).
    through: u64,
    /// A recorder is fsyncing for everyone.
    running: bool,
}

/// The fsync under way: on drop, whatever the outcome, it is over and the waiters are told.
struct Leading<'a>(&'a HintLog);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let log = self.0;
        log.synced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .running = false;
        log.synced_changed.notify_all();
    }
}

/// Counters read without the log's lock (health answers and metrics never wait for an fsync).
#[derive(Default)]
struct Counters {
    pending: AtomicU64,
    recorded: AtomicU64,
    replayed: AtomicU64,
    dropped: AtomicU64,
}

/// The durable hints of one storage node. Thread-safe; every method does file I/O and belongs
/// on a blocking thread.
pub struct HintLog {
    path: PathBuf,
    state: Mutex<State>,
    /// Recordings known durable, and whether an fsync is under way: concurrent recorders
    /// share fsyncs (group commit), and appends go on meanwhile.
    synced: Mutex<Synced>,
    /// Signalled when an fsync ends.
    synced_changed: Condvar,
    counts: Counters,
}

impl std::fmt::Debug for HintLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HintLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const ADD: u8 = 1;
const REMOVE: u8 = 2;

impl HintLog {
    /// Opens (creating it if missing) the hint log in `dir`, replaying what it holds.
    pub fn open(dir: &Path) -> Result<HintLog, HintError> {
        let path = dir.join(FILE);
        let err = |source| HintError {
            path: path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(err)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let mut state = State::default();
        let mut offset = 0usize;
        while offset < bytes.len() {
            let Some((record, len)) = bytes.get(offset..).and_then(decode) else {
                tracing::warn!(file = %path.display(), offset, "hint log ends in a torn or corrupt record; truncated there");
                break;
            };
            state.apply(record);
            state.records += 1;
            offset += len;
        }
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        file.set_len(offset as u64).map_err(err)?;
        if !existed {
            sync_dir(&path);
        }
        let mut writer = BufWriter::with_capacity(BUFFER, file);
        std::io::Seek::seek(&mut writer, std::io::SeekFrom::End(0)).map_err(err)?;
        state.file = Some(writer);
        state.good_len = offset as u64;
        let counts = Counters::default();
        counts.pending.store(state.count as u64, Ordering::Relaxed);
        Ok(HintLog {
            path,
            state: Mutex::new(state),
            synced: Mutex::new(Synced::default()),
            synced_changed: Condvar::new(),
            counts,
        })
    }

    /// Records, durably (written and fsynced before it returns), that `target` missed each
    /// `(namespace, key)`. A key hinted again for the target takes the later time (its hint
    /// expires counting from the last miss). Concurrent recordings share their fsyncs.
    pub fn record(
        &self,
        hints: &[(String, String, Vec<u8>)],
        now_ms: u64,
    ) -> Result<(), HintError> {
        let written = self.write(hints, now_ms)?;
        match written {
            Some(n) => self.sync_through(n),
            None => Ok(()),
        }
    }

    /// Appends `hints` to the buffer; the recording's number when it wrote any.
    fn write(
        &self,
        hints: &[(String, String, Vec<u8>)],
        now_ms: u64,
    ) -> Result<Option<u64>, HintError> {
        let mut s = self.lock();
        let mut wrote = false;
        for (target, namespace, key) in hints {
            if target.len() > 255 || namespace.len() > 255 || key.len() > MAX_KEY {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let known = s
                .by_target
                .get(target)
                .is_some_and(|m| m.contains_key(&(namespace.clone(), key.clone())));
            if !known && s.count >= MAX_HINTS {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let record = Record {
                op: ADD,
                target: target.clone(),
                namespace: namespace.clone(),
                key: key.clone(),
                recorded_ms: now_ms,
            };
            self.append(&mut s, &record)?;
            s.apply(record);
            if !known {
                self.counts.recorded.fetch_add(1, Ordering::Relaxed);
            }
            wrote = true;
        }
        self.counts.pending.store(s.count as u64, Ordering::Relaxed);
        if !wrote {
            return Ok(None);
        }
        s.written += 1;
        Ok(Some(s.written))
    }

    /// Returns once recording `n` is durable: the buffer is written out and fsynced, which
    /// covers every recording appended before, so a recorder that waited for another's fsync
    /// usually finds its own done. (A rewrite of the log in between copies every live hint into
    /// a file it fsyncs itself.)
    fn sync_through(&self, n: u64) -> Result<(), HintError> {
        // Synced, unless a failed write or fsync lost it on the way.
        let kept = || {
            if self.lock().lost_through >= n {
                Err(self.error(std::io::Error::other("a write to the hint log failed")))
            } else {
                Ok(())
            }
        };
        let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if synced.through >= n {
                drop(synced);
                return kept();
            }
            if !synced.running {
                break;
            }
            synced = self
                .synced_changed
                .wait(synced)
                .unwrap_or_else(PoisonError::into_inner);
        }
        synced.running = true;
        drop(synced);
        // Hands the fsync on to the next waiter however this one ends, panic included.
        let leading = Leading(self);
        let outcome = self.sync_all();
        if let Ok(through) = outcome {
            let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
            synced.through = synced.through.max(through);
        }
        drop(leading);
        outcome.and_then(|_| kept())
    }

    /// Writes the buffer out and fsyncs it; the recordings it made durable.
    fn sync_all(&self) -> Result<u64, HintError> {
        let (through, file) = {
            let mut s = self.lock();
            self.flush(&mut s)?;
            let file = s.file.as_ref().map(|f| f.get_ref().try_clone());
            (s.written, file)
        };
        let synced = match file {
            Some(Ok(f)) => f.sync_data(),
            Some(Err(e)) => Err(e),
            None => Err(std::io::Error::other("hint log closed")),
        };
        if let Err(e) = synced {
            // A failed fsync may have dropped the written pages, and a second one would not
            // say so: every recording it was to cover is lost, and the file may hold a hole
            // that replay would stop at. The live hints are written afresh from memory into a
            // new file (fsynced) — or, if even that fails, the log takes no more hints.
            let mut s = self.lock();
            s.lost_through = s.lost_through.max(through);
            if let Err(error) = self.rewrite(&mut s) {
                tracing::error!(file = %self.path.display(), %error, "hint log unusable after a failed fsync; no more hints are kept");
                if let Some(old) = s.file.take() {
                    drop(old.into_parts());
                }
            }
            return Err(self.error(e));
        }
        Ok(through)
    }

    /// Up to `max` hints for `target`, oldest key order first (they stay until removed).
    pub fn peek(&self, target: &str, max: usize) -> Vec<Hint> {
        let s = self.lock();
        s.by_target
            .get(target)
            .map(|m| m.iter().take(max).map(hint_of).collect())
            .unwrap_or_default()
    }

    /// Removes `target`'s hints `done` (`replayed`: they were delivered, else dropped) — each
    /// only if it was not recorded again since it was handed out.
    pub fn remove(&self, target: &str, done: &[Hint], replayed: bool) -> Result<(), HintError> {
        let mut s = self.lock();
        let mut wrote = false;
        for hint in done {
            let (namespace, key) = (&hint.namespace, &hint.key);
            let held = s
                .by_target
                .get(target)
                .and_then(|m| m.get(&(namespace.clone(), key.clone())))
                .is_some_and(|(_, seq)| *seq == hint.seq);
            if !held {
                continue;
            }
            let record = Record {
                op: REMOVE,
                target: target.to_owned(),
                namespace: namespace.clone(),
                key: key.clone(),
                recorded_ms: 0,
            };
            self.append(&mut s, &record)?;
            s.apply(record);
            if replayed {
                self.counts.replayed.fetch_add(1, Ordering::Relaxed);
            } else {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
            wrote = true;
        }
        if wrote {
            // Removals need no fsync: a removal lost in a crash replays a hint twice, harmlessly.
            self.flush(&mut s)?;
            self.maybe_rewrite(&mut s)?;
        }
        self.counts.pending.store(s.count as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Drops every hint recorded more than `ttl_ms` before `now_ms`, whatever its target's
    /// state (a target that never comes back must not hold hints for ever).
    pub fn expire(&self, now_ms: u64, ttl_ms: u64) -> Result<u64, HintError> {
        let old: Vec<(String, Vec<Hint>)> = {
            let s = self.lock();
            s.by_target
                .iter()
                .map(|(t, m)| {
                    let hints = m
                        .iter()
                        .filter(|(_, (ms, _))| now_ms.saturating_sub(*ms) > ttl_ms)
                        .map(hint_of)
                        .collect::<Vec<_>>();
                    (t.clone(), hints)
                })
                .filter(|(_, hints)| !hints.is_empty())
                .collect()
        };
        let mut n = 0;
        for (target, hints) in old {
            n += hints.len() as u64;
            self.remove(&target, &hints, false)?;
        }
        Ok(n)
    }

    /// Drops every hint for `target` (a node removed from the cluster).
    pub fn drop_target(&self, target: &str) -> Result<(), HintError> {
        let hints = self.peek(target, usize::MAX);
        self.remove(target, &hints, false)
    }

    /// Targets with hints waiting.
    pub fn targets(&self) -> Vec<String> {
        self.lock().by_target.keys().cloned().collect()
    }

    /// Counts since the log opened. Never waits for the log's lock.
    pub fn counts(&self) -> HintCounts {
        HintCounts {
            pending: self.counts.pending.load(Ordering::Relaxed),
            recorded: self.counts.recorded.load(Ordering::Relaxed),
            replayed: self.counts.replayed.load(Ordering::Relaxed),
            dropped: self.counts.dropped.load(Ordering::Relaxed),
        }
    }

    fn append(&self, s: &mut State, record: &Record) -> Result<(), HintError> {
        let bytes = encode(record);
        let file = s
            .file
            .as_mut()
            .ok_or_else(|| self.error(std::io::Error::other("hint log closed")))?;
        if let Err(e) = file.write_all(&bytes) {
            self.cut_back(s);
            return Err(self.error(e));
        }
        s.records += 1;
        Ok(())
    }

    /// Writes what is buffered; on failure, cuts the file back to its last good length.
    fn flush(&self, s: &mut State) -> Result<(), HintError> {
        let Some(file) = s.file.as_mut() else {
            return Ok(());
        };
        match file.flush() {
            Ok(()) => {
                if let Ok(len) = file.get_ref().metadata().map(|m| m.len()) {
                    s.good_len = len;
                }
                Ok(())
            }
            Err(e) => {
                self.cut_back(s);
                Err(self.error(e))
            }
        }
    }

    /// After a failed write: a torn record must not stay in the middle of the log (replay
    /// would stop there and lose what follows), so the file goes back to its last good length
    /// and appending resumes from there — or, if even that fails, the log stops taking hints.
    fn cut_back(&self, s: &mut State) {
        // Whatever was buffered or half-written is gone with the cut (the old writer is not
        // flushed on its way out).
        s.lost_through = s.written;
        if let Some(old) = s.file.take() {
            drop(old.into_parts());
        }
        let good = s.good_len;
        let reopened = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|f| {
                f.set_len(good)?;
                let mut w = BufWriter::with_capacity(BUFFER, f);
                std::io::Seek::seek(&mut w, std::io::SeekFrom::End(0))?;
                Ok(w)
            });
        match reopened {
            Ok(w) => s.file = Some(w),
            Err(error) => {
                tracing::error!(file = %self.path.display(), %error, "hint log unusable; no more hints are kept");
                s.file = None;
            }
        }
    }

    /// Rewrites the file with only the live hints once most records are dead.
    fn maybe_rewrite(&self, s: &mut State) -> Result<(), HintError> {
        if s.records < 1024 || s.records < 4 * s.count as u64 {
            return Ok(());
        }
        self.rewrite(s)
    }

    /// Writes the live hints into a new file, fsyncs it and puts it in the log's place. What
    /// was buffered for the old file is dropped with it: every hint is in the new one.
    fn rewrite(&self, s: &mut State) -> Result<(), HintError> {
        let tmp = self.path.with_extension("log.tmp");
        let err = |source| HintError {
            path: tmp.clone(),
            source,
        };
        let mut out = BufWriter::new(File::create(&tmp).map_err(err)?);
        let mut records = 0u64;
        for (target, keys) in &s.by_target {
            for ((namespace, key), (ms, _)) in keys {
                let record = Record {
                    op: ADD,
                    target: target.clone(),
                    namespace: namespace.clone(),
                    key: key.clone(),
                    recorded_ms: *ms,
                };
                out.write_all(&encode(&record)).map_err(err)?;
                records += 1;
            }
        }
        out.flush().map_err(err)?;
        out.get_ref().sync_data().map_err(err)?;
        // The rewritten file is opened before it replaces the log: appends never go to an
        // unlinked file.
        let file = OpenOptions::new().append(true).open(&tmp).map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.error(e))?;
        sync_dir(&self.path);
        s.good_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if let Some(old) = s.file.replace(BufWriter::with_capacity(BUFFER, file)) {
            drop(old.into_parts());
        }
        s.records = records;
        Ok(())
    }

    fn error(&self, source: std::io::Error) -> HintError {
        HintError {
            path: self.path.clone(),
            source,
        }
    }

    // Nothing panics while holding the lock, so a poisoned lock guards consistent state.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn apply(&mut self, r: Record) {
        match r.op {
            ADD => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let m = self.by_target.entry(r.target).or_default();
                if m.insert((r.namespace, r.key), (r.recorded_ms, seq))
                    .is_none()
                {
                    self.count += 1;
                }
            }
            _ => {
                if let Some(m) = self.by_target.get_mut(&r.target) {
                    if m.remove(&(r.namespace, r.key)).is_some() {
                        self.count -= 1;
                    }
                    if m.is_empty() {
                        self.by_target.remove(&r.target);
                    }
                }
            }
        }
    }
}

/// The hint an index entry stands for.
fn hint_of(((namespace, key), (ms, seq)): (&(String, Vec<u8>), &(u64, u64))) -> Hint {
    Hint {
        namespace: namespace.clone(),
        key: key.clone(),
        recorded_ms: *ms,
        seq: *seq,
    }
}

/// Makes a created or renamed entry of `path`'s directory durable (best effort).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

struct Record {
    op: u8,
    target: String,
    namespace: String,
    key: Vec<u8>,
    recorded_ms: u64,
}

fn encode(r: &Record) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + r.target.len() + r.namespace.len() + r.key.len());
    body.push(r.op);
    body.push(r.target.len() as u8);
    body.extend_from_slice(r.target.as_bytes());
    body.push(r.namespace.len() as u8);
    body.extend_from_slice(r.namespace.as_bytes());
    body.extend_from_slice(&(r.key.len() as u32).to_le_bytes());
    body.extend_from_slice(&r.key);
    body.extend_from_slice(&r.recorded_ms.to_le_bytes());
    let len = (body.len() as u32).to_le_bytes();
    let mut crc_input = len.to_vec();
    crc_input.extend_from_slice(&body);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&crc32c::crc32c(&crc_input).to_le_bytes());
    out.extend_from_slice(&len);
    out.extend_from_slice(&body);
    out
}

/// Decodes the record at the start of `bytes` and its length; `None` if it is torn or corrupt.
fn decode(bytes: &[u8]) -> Option<(Record, usize)> {
    let crc = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    let len_bytes = bytes.get(4..8)?;
    let len = u32::from_le_bytes(len_bytes.try_into().ok()?) as usize;
    let body = bytes.get(8..8usize.checked_add(len)?)?;
    let mut crc_input = len_bytes.to_vec();
    crc_input.extend_from_slice(body);
    if crc32c::crc32c(&crc_input) != crc {
        return None;
    }
    let mut cur = Cursor { bytes: body, at: 0 };
    let op = cur.u8()?;
    if op != ADD && op != REMOVE {
        return None;
    }
    let target_len = cur.u8()? as usize;
    let target = String::from_utf8(cur.take(target_len)?.to_vec()).ok()?;
    let ns_len = cur.u8()? as usize;
    let namespace = String::from_utf8(cur.take(ns_len)?.to_vec()).ok()?;
    let key_len = u32::from_le_bytes(cur.take(4)?.try_into().ok()?) as usize;
    if key_len > MAX_KEY {
        return None;
    }
    let key = cur.take(key_len)?.to_vec();
    let recorded_ms = u64::from_le_bytes(cur.take(8)?.try_into().ok()?);
    if cur.at != body.len() {
        return None;
    }
    Some((
        Record {
            op,
            target,
            namespace,
            key,
            recorded_ms,
        },
        8 + len,
    ))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }
}

/// Decodes every record of `bytes` until the first bad one: the fuzz target's entry point. Never
/// panics, whatever the input.
pub fn decode_all(bytes: &[u8]) -> usize {
    let mut offset = 0;
    let mut n = 0;
    while let Some((_, len)) = bytes.get(offset..).and_then(decode) {
        offset += len;
        n += 1;
    }
    n
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests index buffers they built")]
mod tests {
    use super::*;

    fn h(target: &str, key: &str) -> (String, String, Vec<u8>) {
        (target.into(), "t".into(), key.as_bytes().to_vec())
    }

    #[test]
    fn concurrent_recordings_share_fsyncs_and_all_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::sync::Arc::new(HintLog::open(dir.path()).expect("open"));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = std::sync::Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        log.record(&[h("a", &format!("k{t}-{i}"))], 1)
                            .expect("record");
                        if i % 10 == 0 {
                            // Removals (and the rewrites they trigger) run among the recordings.
                            let done = log.peek("a", 5);
                            log.remove("a", &done, true).expect("remove");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recorder");
        }
        let held: std::collections::BTreeSet<Vec<u8>> = log
            .peek("a", usize::MAX)
            .into_iter()
            .map(|h| h.key)
            .collect();
        assert!(held.len() >= 200, "{} held", held.len());
        drop(log);
        let log = HintLog::open(dir.path()).expect("reopen");
        let reopened: std::collections::BTreeSet<Vec<u8>> = log
            .peek("a", usize::MAX)
            .into_iter()
            .map(|h| h.key)
            .collect();
        assert_eq!(reopened, held);
    }

    #[test]
    fn hints_survive_a_reopen_and_removals_stick() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = HintLog::open(dir.path()).expect("open");
        log.record(&[h("a", "k1"), h("a", "k2"), h("b", "k1")], 10)
            .expect("record");
        // A key already hinted keeps its first time.
        log.record(&[h("a", "k1")], 99).expect("record");
        let k1: Vec<Hint> = log
            .peek("a", 10)
            .into_iter()
            .filter(|h| h.key == b"k1")
            .collect();
        log.remove("a", &k1, true).expect("remove");
        drop(log);
        let log = HintLog::open(dir.path()).expect("reopen");
        let a = log.peek("a", 10);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].key.as_slice(), a[0].recorded_ms), (&b"k2"[..], 10));
        // A hint recorded again after it was handed out survives the removal of the old one.
        let old = log.peek("a", 10);
        log.record(&[h("a", "k2")], 20).expect("again");
        log.remove("a", &old, true).expect("remove");
        assert_eq!(log.peek("a", 10).len(), 1);
        let new = log.peek("a", 10);
        log.remove("a", &new, true).expect("remove");
        assert!(log.peek("a", 10).is_empty());
        log.record(&[h("a", "k2")], 30).expect("once more");
        let mut targets = log.targets();
        targets.sort();
        assert_eq!(targets, ["a", "b"]);
        log.drop_target("b").expect("drop");
        assert_eq!(log.targets(), ["a"]);
        assert_eq!(log.counts().pending, 1);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = HintLog::open(dir.path()).expect("open");
        log.record(&[h("a", "k1"), h("a", "k2")], 1)
            .expect("record");
        drop(log);
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let whole = bytes.len();
        bytes.extend_from_slice(&encode(&Record {
            op: ADD,
            target: "a".into(),
            namespace: "t".into(),
            key: b"k3".to_vec(),
            recorded_ms: 1,
        }));
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).expect("write");
        let log = HintLog::open(dir.path()).expect("reopen");
        assert_eq!(log.peek("a", 10).len(), 2);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), whole as u64);
        // A flipped byte in the middle stops replay there.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[5] ^= 0xff;
        assert_eq!(decode_all(&bytes), 0);
    }

    #[test]
    fn mostly_dead_logs_are_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = HintLog::open(dir.path()).expect("open");
        let many: Vec<_> = (0..2000).map(|i| h("a", &format!("k{i}"))).collect();
        log.record(&many, 1).expect("record");
        let done = log.peek("a", 1990);
        log.remove("a", &done, true).expect("remove");
        let size = std::fs::metadata(dir.path().join(FILE))
            .expect("meta")
            .len();
        assert!(size < 1000, "not rewritten: {size} bytes");
        drop(log);
        let log = HintLog::open(dir.path()).expect("reopen");
        assert_eq!(log.peek("a", 100).len(), 10);
        let c = log.counts();
        assert_eq!(c.pending, 10);
    }
}
