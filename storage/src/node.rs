//! Node identity and persisted node state.
//!
//! A storage node keeps one small JSON file, `node.json`, in its data directory:
//!
//! ```json
//! { "node_id": "n1", "incarnation": 1795395723000, "clean_shutdown": false,
//!   "placement": { "epoch": 7, "vnodes": 256, "nodes": [...], "tenants": {...} } }
//! ```
//!
//! * **Incarnation.** Vector-clock entries are keyed by `(node id, incarnation)`. A node may
//!   reuse its incarnation only when it can prove its counters durable: its engine persists data
//!   *and* the previous run stopped cleanly. Otherwise every open starts a new incarnation, so a
//!   counter is never issued twice under one actor.
//! * **Placement.** The newest placement pushed to the node, persisted before it is
//!   acknowledged, so a restarted node still refuses epochs older than one it already accepted.
//!
//! The data path never waits on the file. The current epoch is an atomic, readable without any
//! lock; writes of the file (which fsync) are serialised by a lock only [`NodeState::install`] and
//! [`NodeState::mark_clean_shutdown`] take. A new placement is persisted first and published
//! after, under an *epoch gate*: data calls that change state hold the gate shared from their
//! epoch check to the end of their engine call ([`NodeState::admit`]), and publishing takes it
//! exclusively. So once `install` returns, no call routed with an older epoch is in flight, and
//! none can start.
//!
//! Every write replaces the file atomically: write a temporary file, fsync it, rename it over
//! `node.json`, fsync the directory. A crash leaves either the old or the new file, never a mix.
//! The data directory is locked ([`crate::dir_lock`]) before the file is read.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use pairdb_core::{Actor, Placement};
use serde::{Deserialize, Serialize};

use crate::dir_lock::{DirLock, LockError};

/// Name of the state file inside the data directory.
pub const NODE_FILE: &str = "node.json";
const TEMP_FILE: &str = "node.json.tmp";

/// Opening or updating the node state failed. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Reading, writing, syncing or renaming a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The state file exists but is not valid node state.
    #[error("corrupt node state in {path}: {detail}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The data directory belongs to another node.
    #[error("{path} belongs to node {found:?}, not {expected:?}")]
    WrongNode {
        /// The state file.
        path: PathBuf,
        /// The node id this process was started with.
        expected: String,
        /// The node id recorded in the file.
        found: String,
    },
    /// The node id is not a valid node id.
    #[error("invalid node id {id:?} for {path}: {source}")]
    BadNodeId {
        /// The state file that would have been written.
        path: PathBuf,
        /// The id given.
        id: String,
        /// What is wrong with it.
        #[source]
        source: pairdb_core::placement::InvalidNodeId,
    },
    /// The data directory is locked by another process.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// Persisting ran on a blocking thread that failed.
    #[error("persisting {path} failed: {detail}")]
    Task {
        /// The state file.
        path: PathBuf,
        /// What happened to the task.
        detail: String,
    },
}

/// Where a node keeps its state file.
///
/// [`DirStateFile`] is the real one; tests wrap it to delay or fail writes.
pub trait StateFile: Send + Sync + fmt::Debug + 'static {
    /// The file's path, for errors and logs.
    fn path(&self) -> &Path;

    /// The file's contents; `None` if it does not exist.
    fn read(&self) -> Result<Option<Vec<u8>>, NodeError>;

    /// Replaces the contents atomically and durably: after `Ok`, a crash leaves `bytes`; after an
    /// error, either the old contents or `bytes`, never a mix.
    fn replace(&self, bytes: &[u8]) -> Result<(), NodeError>;
}

/// `node.json` in a data directory, replaced by write-temp, fsync, rename, fsync-dir.
#[derive(Debug)]
pub struct DirStateFile {
    dir: PathBuf,
    path: PathBuf,
}

impl DirStateFile {
    /// The state file of `data_dir` (which must exist).
    pub fn new(data_dir: &Path) -> Self {
        DirStateFile {
            dir: data_dir.to_path_buf(),
            path: data_dir.join(NODE_FILE),
        }
    }
}

impl StateFile for DirStateFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Option<Vec<u8>>, NodeError> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(NodeError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn replace(&self, bytes: &[u8]) -> Result<(), NodeError> {
        let temp = self.dir.join(TEMP_FILE);
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NodeError::Io { path, source }
        };
        let mut out = File::create(&temp).map_err(io_err(&temp))?;
        out.write_all(bytes).map_err(io_err(&temp))?;
        out.sync_all().map_err(io_err(&temp))?;
        drop(out);
        fs::rename(&temp, &self.path).map_err(io_err(&self.path))?;
        sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok(())
    }
}

/// The file's contents.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct NodeFile {
    node_id: String,
    incarnation: u64,
    clean_shutdown: bool,
    placement: Option<Placement>,
}

/// What `node.json` holds now. Guarded by the file lock.
#[derive(Debug)]
struct Persisted {
    placement: Option<Arc<Placement>>,
    clean_shutdown: bool,
}

/// Why a data call was not admitted: its epoch is not the node's current one, or the node is
/// stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EpochMismatch {
    /// The node is stopping ([`NodeState::close`]): it admits no more calls.
    #[error("the storage node is shutting down")]
    Closing,
    /// The call was routed with an older epoch than the node holds: the caller must refresh.
    #[error("stale placement epoch {called}: node has {held}")]
    Stale {
        /// The call's epoch.
        called: u64,
        /// The node's epoch.
        held: u64,
    },
    /// The node was never pushed the call's epoch (or any): the caller must push it first.
    #[error("placement epoch {called} not installed (node has {})", held.map_or_else(|| "none".to_owned(), |e| e.to_string()))]
    NotInstalled {
        /// The call's epoch.
        called: u64,
        /// The node's epoch, if any.
        held: Option<u64>,
    },
}

impl EpochMismatch {
    /// The node's epoch (0 when none is installed).
    pub fn held(&self) -> u64 {
        match self {
            EpochMismatch::Stale { held, .. } => *held,
            EpochMismatch::NotInstalled { held, .. } => held.unwrap_or(0),
            EpochMismatch::Closing => 0,
        }
    }
}

/// A data call admitted at the node's current epoch. While it is held, no newer placement is
/// published, so the call's effects belong to the epoch it was routed with. It is owned, so it can
/// travel with the call's engine work to a blocking thread and last until that work is done, even
/// if the RPC that started it is cancelled.
#[must_use = "the admission lasts as long as the guard"]
#[derive(Debug)]
pub struct Admission {
    _gate: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// Counts an install as waiting to publish for as long as it lives (cancelled or not).
struct Pending<'a>(&'a AtomicU64);

impl<'a> Pending<'a> {
    fn start(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Pending(counter)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A node's identity and persisted state. Thread-safe; share it in an `Arc`.
pub struct NodeState {
    file: Box<dyn StateFile>,
    node_id: String,
    incarnation: u64,
    /// The file's contents; its lock serialises writes of the file.
    persisted: Mutex<Persisted>,
    /// The newest placement published. Readers hold this lock only to clone an `Arc`.
    current: RwLock<Option<Arc<Placement>>>,
    /// The epoch of `current`, 0 when none: read with no lock on the data path.
    epoch: AtomicU64,
    /// Shared by admitted data calls, exclusive while a placement is published.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Installs persisted and waiting for admitted calls before they publish.
    publishing: AtomicU64,
    /// Set for good by [`NodeState::close`].
    closing: std::sync::atomic::AtomicBool,
    /// The node's clock and the file it is recorded in, once [`record_clock_in`] set them.
    ///
    /// [`record_clock_in`]: NodeState::record_clock_in
    clock: std::sync::OnceLock<(Arc<pairdb_core::Hlc>, crate::clock_file::ClockFile)>,
    _lock: Option<DirLock>,
}

impl fmt::Debug for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeState")
            .field("node_id", &self.node_id)
            .field("incarnation", &self.incarnation)
            .field("epoch", &self.epoch())
            .field("file", &self.file.path())
            .finish_non_exhaustive()
    }
}

/// What of a node's engine survives a stop, as far as its clock incarnation is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Continuity {
    /// Nothing: every start is a new incarnation.
    Volatile,
    /// Everything acknowledged survives a clean stop; a crash may lose some.
    CleanStop,
    /// Everything acknowledged survives any stop.
    Always,
}

impl Continuity {
    /// The continuity of an engine with `durability` (`None`: a volatile engine).
    pub fn of(durability: Option<crate::durability::Durability>) -> Self {
        match durability {
            None => Continuity::Volatile,
            Some(crate::durability::Durability::Always) => Continuity::Always,
            Some(_) => Continuity::CleanStop,
        }
    }
}

impl NodeState {
    /// Locks `data_dir` (creating it if missing), then opens the state in it for `node_id`,
    /// starting this run.
    ///
    /// A new incarnation is `max(previous + 1, wall-clock milliseconds)`, so even a node whose
    /// directory was wiped never reuses an incarnation of its earlier life (clocks only move
    /// forward across restarts). The previous incarnation is kept only if `engine_durable` and
    /// the previous run called [`NodeState::mark_clean_shutdown`]. The run is recorded as not yet
    /// cleanly stopped before this returns.
    ///
    /// Fails with [`NodeError::Locked`] if another process holds the directory (nothing is read
    /// or written then), [`NodeError::BadNodeId`] for an invalid id, [`NodeError::WrongNode`] if
    /// the directory belongs to another node id, [`NodeError::Corrupt`] if the file cannot be
    /// parsed, and [`NodeError::Io`] on I/O errors — never silently starting over.
    pub fn open(
        data_dir: &Path,
        node_id: &str,
        engine_durable: bool,
    ) -> Result<NodeState, NodeError> {
        let lock = DirLock::acquire(data_dir)?;
        Self::open_with(
            Some(lock),
            Box::new(DirStateFile::new(data_dir)),
            node_id,
            engine_durable,
        )
    }

    /// [`open`](Self::open) over any [`StateFile`], holding `lock` (if any) for as long as the
    /// state lives.
    pub fn open_with(
        lock: Option<DirLock>,
        file: Box<dyn StateFile>,
        node_id: &str,
        engine_durable: bool,
    ) -> Result<NodeState, NodeError> {
        let continuity = if engine_durable {
            Continuity::CleanStop
        } else {
            Continuity::Volatile
        };
        Self::open_continuing(lock, file, node_id, continuity)
    }

    /// [`open_with`](Self::open_with), keeping the previous incarnation as `continuity` allows:
    /// never for a volatile engine, after a clean stop for one that may lose acknowledged writes
    /// in a crash (`interval`, `never`), and after any stop for one that never does (`always`:
    /// every version this node minted is on its disk, so its counters cannot be reused).
    pub fn open_continuing(
        lock: Option<DirLock>,
        file: Box<dyn StateFile>,
        node_id: &str,
        continuity: Continuity,
    ) -> Result<NodeState, NodeError> {
        pairdb_core::placement::validate_node_id(node_id).map_err(|source| {
            NodeError::BadNodeId {
                path: file.path().to_path_buf(),
                id: node_id.to_owned(),
                source,
            }
        })?;
        let previous = match file.read()? {
            None => None,
            Some(bytes) => Some(serde_json::from_slice::<NodeFile>(&bytes).map_err(|e| {
                NodeError::Corrupt {
                    path: file.path().to_path_buf(),
                    detail: e.to_string(),
                }
            })?),
        };
        if let Some(prev) = &previous
            && prev.node_id != node_id
        {
            return Err(NodeError::WrongNode {
                path: file.path().to_path_buf(),
                expected: node_id.to_owned(),
                found: prev.node_id.clone(),
            });
        }
        let fresh = |prev: u64| prev.saturating_add(1).max(pairdb_core::hlc::wall_ms());
        let incarnation = match &previous {
            None => fresh(0),
            Some(prev)
                if continuity == Continuity::Always
                    || (continuity == Continuity::CleanStop && prev.clean_shutdown) =>
            {
                prev.incarnation
            }
            Some(prev) => fresh(prev.incarnation),
        };
        let placement = previous.and_then(|p| p.placement).map(Arc::new);
        let state = NodeState {
            file,
            node_id: node_id.to_owned(),
            incarnation,
            epoch: AtomicU64::new(placement.as_ref().map_or(0, |p| p.epoch)),
            current: RwLock::new(placement.clone()),
            persisted: Mutex::new(Persisted {
                placement,
                clean_shutdown: false,
            }),
            gate: Arc::new(tokio::sync::RwLock::new(())),
            publishing: AtomicU64::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
            clock: std::sync::OnceLock::new(),
            _lock: lock,
        };
        {
            let persisted = state.lock_file();
            state.write_file(&persisted)?;
        }
        Ok(state)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This run's incarnation (≥ 1).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The clock actor this node mints as during this run.
    pub fn actor(&self) -> Actor {
        Actor::new(self.node_id.clone(), self.incarnation)
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The newest placement installed, if any.
    pub fn placement(&self) -> Option<Arc<Placement>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The epoch of the newest placement installed, if any. Takes no lock.
    pub fn epoch(&self) -> Option<u64> {
        match self.epoch.load(Ordering::Acquire) {
            0 => None,
            e => Some(e),
        }
    }

    /// Checks that `epoch` is the installed one, without holding anything: for calls that only
    /// read.
    pub fn check_epoch(&self, epoch: u64) -> Result<(), EpochMismatch> {
        match self.epoch() {
            Some(held) if epoch == held => Ok(()),
            Some(held) if epoch < held => Err(EpochMismatch::Stale {
                called: epoch,
                held,
            }),
            held => Err(EpochMismatch::NotInstalled {
                called: epoch,
                held,
            }),
        }
    }

    /// Admits a call that changes state, routed with `epoch`: waits while a newer placement is
    /// being published, then checks the epoch. Hold the admission until the call's engine work
    /// is done; a placement published meanwhile waits for it.
    pub async fn admit(&self, epoch: u64) -> Result<Admission, EpochMismatch> {
        let gate = Arc::clone(&self.gate).read_owned().await;
        if self.closing.load(Ordering::Acquire) {
            return Err(EpochMismatch::Closing);
        }
        self.check_epoch(epoch)?;
        Ok(Admission { _gate: gate })
    }

    /// Stops admitting calls for good (they are refused [`EpochMismatch::Closing`]) and waits
    /// until none is in flight: for a clean stop, so the engine is flushed after the last write,
    /// never during one or before a later one.
    pub async fn close(&self) {
        self.closing.store(true, Ordering::Release);
        // Every admission holds the gate shared: having it exclusively means none is left, and
        // calls admitted after the flag was set see it and are refused.
        drop(Arc::clone(&self.gate).write_owned().await);
    }

    /// True while a newer placement is persisted and waits for admitted calls to finish before
    /// it is published (calls arriving now wait too, then see the new epoch).
    pub fn publish_pending(&self) -> bool {
        self.publishing.load(Ordering::Acquire) > 0
    }

    /// Installs `placement` if its epoch is newer than the installed one (or none is
    /// installed): persists it on a blocking thread — data calls go on meanwhile — then publishes
    /// it once every admitted call has finished. Returns the newest epoch now held, greater than
    /// `placement.epoch` when the push was stale; a repeated push returns once its epoch is
    /// published. On error nothing changes, in memory or on disk.
    pub async fn install(self: &Arc<Self>, placement: Placement) -> Result<u64, NodeError> {
        let state = Arc::clone(self);
        let newest = tokio::task::spawn_blocking(move || state.persist_placement(placement))
            .await
            .map_err(|e| NodeError::Task {
                path: self.path().to_path_buf(),
                detail: e.to_string(),
            })??;
        if self.epoch().unwrap_or(0) >= newest.epoch {
            return Ok(self.epoch().unwrap_or(0));
        }
        let exclusive = {
            let _pending = Pending::start(&self.publishing);
            Arc::clone(&self.gate).write_owned().await
        };
        let _exclusive = exclusive;
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        // Installs persist in epoch order, but two may publish out of order: never step back.
        if current.as_ref().is_none_or(|c| c.epoch < newest.epoch) {
            self.epoch.store(newest.epoch, Ordering::Release);
            *current = Some(newest);
        }
        Ok(current.as_ref().map_or(0, |c| c.epoch))
    }

    /// Writes `placement` to the file if it is newer than the persisted one; returns the newest
    /// placement persisted, to publish.
    fn persist_placement(&self, placement: Placement) -> Result<Arc<Placement>, NodeError> {
        let mut persisted = self.lock_file();
        if let Some(newest) = &persisted.placement
            && newest.epoch >= placement.epoch
        {
            return Ok(Arc::clone(newest));
        }
        let placement = Arc::new(placement);
        let previous = persisted.placement.replace(Arc::clone(&placement));
        if let Err(e) = self.write_file(&persisted) {
            persisted.placement = previous;
            return Err(e);
        }
        Ok(placement)
    }

    /// Records that this run is stopping cleanly: after everything the engine acknowledged has
    /// been flushed, so a durable engine's next open may keep this incarnation. Call last.
    /// Blocks on file I/O.
    pub fn mark_clean_shutdown(&self) -> Result<(), NodeError> {
        self.record_clock()?;
        let mut persisted = self.lock_file();
        persisted.clean_shutdown = true;
        if let Err(e) = self.write_file(&persisted) {
            persisted.clean_shutdown = false;
            return Err(e);
        }
        Ok(())
    }

    /// From now on `clock` is recorded in `file` by [`record_clock`](Self::record_clock) (the
    /// node's hint and heartbeat task calls it about once a second) and at a clean stop. Only
    /// the first call counts.
    pub fn record_clock_in(
        &self,
        clock: Arc<pairdb_core::Hlc>,
        file: crate::clock_file::ClockFile,
    ) {
        let _ = self.clock.set((clock, file));
    }

    /// Records the node's clock as it is now, if [`record_clock_in`](Self::record_clock_in)
    /// set one; answers the timestamp recorded. Blocks on file I/O.
    pub fn record_clock(&self) -> Result<Option<u64>, NodeError> {
        let Some((clock, file)) = self.clock.get() else {
            return Ok(None);
        };
        let now = clock.last();
        file.write(now)?;
        Ok(Some(now))
    }

    /// The node's clock, if one is recorded.
    pub fn clock(&self) -> Option<&Arc<pairdb_core::Hlc>> {
        self.clock.get().map(|(c, _)| c)
    }

    // Nothing panics while holding the lock, so a poisoned lock still guards consistent state.
    fn lock_file(&self) -> MutexGuard<'_, Persisted> {
        self.persisted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Atomically replaces the state file with `persisted`. Called with the file lock held, so
    /// writes never interleave.
    fn write_file(&self, persisted: &Persisted) -> Result<(), NodeError> {
        let file = NodeFile {
            node_id: self.node_id.clone(),
            incarnation: self.incarnation,
            clean_shutdown: persisted.clean_shutdown,
            placement: persisted.placement.as_deref().cloned(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| NodeError::Corrupt {
            path: self.path().to_path_buf(),
            detail: format!("cannot serialize: {e}"),
        })?;
        self.file.replace(&bytes)
    }
}

/// Makes a rename in `dir` durable. Directories cannot be opened for syncing on every
/// platform; where they cannot, the rename is as durable as the platform makes it.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairdb_core::NodeAddr;

    fn placement(epoch: u64) -> Placement {
        Placement {
            epoch,
            ..Placement::initial(
                vec![NodeAddr {
                    id: "n1".into(),
                    address: "127.0.0.1:7000".into(),
                }],
                16,
            )
        }
    }

    #[test]
    fn a_new_directory_starts_a_wall_clock_incarnation() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("nested").join("data");
        let before = pairdb_core::hlc::wall_ms();
        let state = NodeState::open(&dir, "n1", false).expect("open");
        assert!(state.incarnation() >= before);
        assert_eq!(state.actor(), Actor::new("n1", state.incarnation()));
        assert_eq!(state.placement(), None);
        assert_eq!(state.epoch(), None);
        assert!(dir.join(NODE_FILE).exists());
    }

    #[test]
    fn a_clean_stop_records_the_clock() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = NodeState::open(tmp.path(), "n1", true).expect("open");
        assert_eq!(state.record_clock().expect("no clock yet"), None);
        let clock = Arc::new(pairdb_core::Hlc::new());
        let file = crate::clock_file::ClockFile::new(tmp.path());
        state.record_clock_in(Arc::clone(&clock), file.clone());
        let last = clock.advance_past(clock.now() + (5_000 << pairdb_core::hlc::LOGICAL_BITS));
        state.mark_clean_shutdown().expect("clean stop");
        assert_eq!(file.read().expect("read"), last);
    }

    #[test]
    fn incarnation_is_kept_only_after_a_clean_stop_of_a_durable_engine() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let open = |durable| NodeState::open(tmp.path(), "n1", durable).expect("open");
        let i1 = open(false).incarnation();
        // Not durable: always a new incarnation, clean stop or not.
        let s = open(false);
        let i2 = s.incarnation();
        assert!(i2 > i1);
        s.mark_clean_shutdown().expect("mark");
        drop(s);
        let i3 = open(false).incarnation();
        assert!(i3 > i2);
        // Durable but the previous run did not stop cleanly.
        let s = open(true);
        let i4 = s.incarnation();
        assert!(i4 > i3);
        s.mark_clean_shutdown().expect("mark");
        drop(s);
        // Durable and clean: kept, once. This run is then unclean again until marked.
        assert_eq!(open(true).incarnation(), i4);
        assert!(open(true).incarnation() > i4);
    }

    #[test]
    fn an_always_fsynced_engine_keeps_its_incarnation_even_after_a_crash() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let open = |continuity| {
            NodeState::open_continuing(
                Some(DirLock::acquire(tmp.path()).expect("lock")),
                Box::new(DirStateFile::new(tmp.path())),
                "n1",
                continuity,
            )
            .expect("open")
            .incarnation()
        };
        let first = open(Continuity::Always);
        // Never marked clean (a crash): kept anyway, every minted version being on disk.
        assert_eq!(open(Continuity::Always), first);
        // Under a weaker mode, an unclean stop takes a new one.
        let weaker = open(Continuity::CleanStop);
        assert!(weaker > first);
        assert!(open(Continuity::Volatile) > weaker);
        assert_eq!(
            Continuity::of(Some(crate::durability::Durability::Never)),
            Continuity::CleanStop
        );
        assert_eq!(Continuity::of(None), Continuity::Volatile);
    }

    #[test]
    fn another_node_id_is_refused_naming_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        NodeState::open(tmp.path(), "n1", false).expect("open");
        let err = NodeState::open(tmp.path(), "n2", false).expect_err("wrong node");
        assert!(matches!(err, NodeError::WrongNode { .. }));
        assert!(err.to_string().contains(NODE_FILE), "{err}");
        for bad in ["", "a b", "../n1"] {
            assert!(matches!(
                NodeState::open(tmp.path(), bad, false),
                Err(NodeError::BadNodeId { .. })
            ));
        }
    }

    #[test]
    fn a_locked_directory_is_refused_and_left_untouched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = NodeState::open(tmp.path(), "n1", false).expect("open");
        let before = fs::read(tmp.path().join(NODE_FILE)).expect("read");
        let err = NodeState::open(tmp.path(), "n1", false).expect_err("locked");
        assert!(matches!(err, NodeError::Locked(_)), "{err}");
        assert_eq!(fs::read(tmp.path().join(NODE_FILE)).expect("read"), before);
        drop(first);
        NodeState::open(tmp.path(), "n1", false).expect("free again");
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join(NODE_FILE), b"{not json").expect("write");
        let err = NodeState::open(tmp.path(), "n1", false).expect_err("corrupt");
        assert!(matches!(err, NodeError::Corrupt { .. }));
        assert!(err.to_string().contains(NODE_FILE), "{err}");
    }

    #[tokio::test]
    async fn only_newer_placements_install_and_they_persist() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = Arc::new(NodeState::open(tmp.path(), "n1", false).expect("open"));
        assert_eq!(state.install(placement(3)).await.expect("install"), 3);
        assert_eq!(state.install(placement(2)).await.expect("install"), 3);
        assert_eq!(state.install(placement(3)).await.expect("install"), 3);
        assert_eq!(state.install(placement(5)).await.expect("install"), 5);
        assert_eq!(state.check_epoch(5), Ok(()));
        assert_eq!(
            state.check_epoch(4),
            Err(EpochMismatch::Stale { called: 4, held: 5 })
        );
        assert_eq!(
            state.check_epoch(6),
            Err(EpochMismatch::NotInstalled {
                called: 6,
                held: Some(5)
            })
        );
        assert_eq!(state.placement().as_deref(), Some(&placement(5)));
        drop(state);

        let reopened = NodeState::open(tmp.path(), "n1", false).expect("reopen");
        assert_eq!(reopened.epoch(), Some(5));
        assert_eq!(reopened.placement().as_deref(), Some(&placement(5)));
        assert!(!tmp.path().join(TEMP_FILE).exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_installs_keep_the_newest() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = Arc::new(NodeState::open(tmp.path(), "n1", false).expect("open"));
        let handles: Vec<_> = (1..=8u64)
            .map(|epoch| {
                let state = Arc::clone(&state);
                tokio::spawn(async move { state.install(placement(epoch)).await.expect("install") })
            })
            .collect();
        for h in handles {
            assert!(h.await.expect("task") >= 1);
        }
        assert_eq!(state.epoch(), Some(8));
        drop(state);
        let reopened = NodeState::open(tmp.path(), "n1", false).expect("reopen");
        assert_eq!(reopened.epoch(), Some(8));
    }
}
