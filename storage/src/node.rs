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
//! Every write replaces the file atomically: write a temporary file, fsync it, rename it over
//! `node.json`, fsync the directory. A crash leaves either the old or the new file, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pairdb_core::{Actor, Placement};
use serde::{Deserialize, Serialize};

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
    /// The node id is empty.
    #[error("empty node id for {path}")]
    EmptyNodeId {
        /// The state file that would have been written.
        path: PathBuf,
    },
}

/// The file's contents.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct NodeFile {
    node_id: String,
    incarnation: u64,
    clean_shutdown: bool,
    placement: Option<Placement>,
}

/// A node's identity and persisted state. Thread-safe; share it in an `Arc`.
#[derive(Debug)]
pub struct NodeState {
    dir: PathBuf,
    path: PathBuf,
    node_id: String,
    incarnation: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    placement: Option<Arc<Placement>>,
    clean_shutdown: bool,
}

impl NodeState {
    /// Opens (creating if missing) the state in `data_dir` for `node_id`, starting this run.
    ///
    /// A new incarnation is `max(previous + 1, wall-clock milliseconds)`, so even a node whose
    /// directory was wiped never reuses an incarnation of its earlier life (clocks only move
    /// forward across restarts). The previous incarnation is kept only if `engine_durable` and
    /// the previous run called [`NodeState::mark_clean_shutdown`]. The run is recorded as not yet
    /// cleanly stopped before this returns.
    ///
    /// Fails with [`NodeError::WrongNode`] if the directory belongs to another node id, with
    /// [`NodeError::Corrupt`] if the file cannot be parsed, and with [`NodeError::Io`] on I/O
    /// errors — never silently starting over.
    pub fn open(
        data_dir: &Path,
        node_id: &str,
        engine_durable: bool,
    ) -> Result<NodeState, NodeError> {
        let path = data_dir.join(NODE_FILE);
        if node_id.is_empty() {
            return Err(NodeError::EmptyNodeId { path });
        }
        fs::create_dir_all(data_dir).map_err(|source| NodeError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let previous = read_file(&path)?;
        if let Some(prev) = &previous
            && prev.node_id != node_id
        {
            return Err(NodeError::WrongNode {
                path,
                expected: node_id.to_owned(),
                found: prev.node_id.clone(),
            });
        }
        let fresh = |prev: u64| prev.saturating_add(1).max(pairdb_core::hlc::wall_ms());
        let incarnation = match &previous {
            None => fresh(0),
            Some(prev) if engine_durable && prev.clean_shutdown => prev.incarnation,
            Some(prev) => fresh(prev.incarnation),
        };
        let state = NodeState {
            dir: data_dir.to_path_buf(),
            path,
            node_id: node_id.to_owned(),
            incarnation,
            inner: Mutex::new(Inner {
                placement: previous.and_then(|p| p.placement).map(Arc::new),
                clean_shutdown: false,
            }),
        };
        {
            let inner = state.lock();
            state.persist(&inner)?;
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
        &self.path
    }

    /// The newest placement installed, if any.
    pub fn placement(&self) -> Option<Arc<Placement>> {
        self.lock().placement.clone()
    }

    /// The epoch of the newest placement installed, if any.
    pub fn epoch(&self) -> Option<u64> {
        self.lock().placement.as_ref().map(|p| p.epoch)
    }

    /// Installs `placement` if its epoch is newer than the installed one (or none is
    /// installed), persisting it before returning. Returns the newest epoch now held — greater
    /// than `placement.epoch` when the push was stale. On error nothing changes, in memory or
    /// on disk.
    ///
    /// Blocks on file I/O; async callers should run it on a blocking thread.
    pub fn install(&self, placement: Placement) -> Result<u64, NodeError> {
        let mut inner = self.lock();
        if let Some(current) = &inner.placement
            && current.epoch >= placement.epoch
        {
            return Ok(current.epoch);
        }
        let epoch = placement.epoch;
        let previous = inner.placement.replace(Arc::new(placement));
        if let Err(e) = self.persist(&inner) {
            inner.placement = previous;
            return Err(e);
        }
        Ok(epoch)
    }

    /// Records that this run is stopping cleanly: after everything the engine acknowledged has
    /// been flushed, so a durable engine's next open may keep this incarnation. Call last.
    pub fn mark_clean_shutdown(&self) -> Result<(), NodeError> {
        let mut inner = self.lock();
        inner.clean_shutdown = true;
        if let Err(e) = self.persist(&inner) {
            inner.clean_shutdown = false;
            return Err(e);
        }
        Ok(())
    }

    // Nothing panics while holding the lock, so a poisoned lock still guards consistent state.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Atomically replaces the state file with `inner`. Called with the lock held, so writes
    /// never interleave.
    fn persist(&self, inner: &Inner) -> Result<(), NodeError> {
        let file = NodeFile {
            node_id: self.node_id.clone(),
            incarnation: self.incarnation,
            clean_shutdown: inner.clean_shutdown,
            placement: inner.placement.as_deref().cloned(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| NodeError::Corrupt {
            path: self.path.clone(),
            detail: format!("cannot serialize: {e}"),
        })?;
        let temp = self.dir.join(TEMP_FILE);
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NodeError::Io { path, source }
        };
        let mut out = File::create(&temp).map_err(io_err(&temp))?;
        out.write_all(&bytes).map_err(io_err(&temp))?;
        out.sync_all().map_err(io_err(&temp))?;
        drop(out);
        fs::rename(&temp, &self.path).map_err(io_err(&self.path))?;
        sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok(())
    }
}

/// Reads the state file; `None` if it does not exist.
fn read_file(path: &Path) -> Result<Option<NodeFile>, NodeError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(NodeError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| NodeError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
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
    fn incarnation_is_kept_only_after_a_clean_stop_of_a_durable_engine() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let open = |durable| NodeState::open(tmp.path(), "n1", durable).expect("open");
        let i1 = open(false).incarnation();
        // Not durable: always a new incarnation, clean stop or not.
        let s = open(false);
        let i2 = s.incarnation();
        assert!(i2 > i1);
        s.mark_clean_shutdown().expect("mark");
        let i3 = open(false).incarnation();
        assert!(i3 > i2);
        // Durable but the previous run did not stop cleanly.
        let s = open(true);
        let i4 = s.incarnation();
        assert!(i4 > i3);
        s.mark_clean_shutdown().expect("mark");
        // Durable and clean: kept, once. This run is then unclean again until marked.
        assert_eq!(open(true).incarnation(), i4);
        assert!(open(true).incarnation() > i4);
    }

    #[test]
    fn another_node_id_is_refused_naming_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        NodeState::open(tmp.path(), "n1", false).expect("open");
        let err = NodeState::open(tmp.path(), "n2", false).expect_err("wrong node");
        assert!(matches!(err, NodeError::WrongNode { .. }));
        assert!(err.to_string().contains(NODE_FILE), "{err}");
        assert!(matches!(
            NodeState::open(tmp.path(), "", false),
            Err(NodeError::EmptyNodeId { .. })
        ));
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join(NODE_FILE), b"{not json").expect("write");
        let err = NodeState::open(tmp.path(), "n1", false).expect_err("corrupt");
        assert!(matches!(err, NodeError::Corrupt { .. }));
        assert!(err.to_string().contains(NODE_FILE), "{err}");
    }

    #[test]
    fn only_newer_placements_install_and_they_persist() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = NodeState::open(tmp.path(), "n1", false).expect("open");
        assert_eq!(state.install(placement(3)).expect("install"), 3);
        assert_eq!(state.install(placement(2)).expect("install"), 3);
        assert_eq!(state.install(placement(3)).expect("install"), 3);
        assert_eq!(state.install(placement(5)).expect("install"), 5);
        assert_eq!(state.placement().as_deref(), Some(&placement(5)));
        drop(state);

        let reopened = NodeState::open(tmp.path(), "n1", false).expect("reopen");
        assert_eq!(reopened.epoch(), Some(5));
        assert_eq!(reopened.placement().as_deref(), Some(&placement(5)));
        assert!(!tmp.path().join(TEMP_FILE).exists());
    }

    #[test]
    fn concurrent_installs_keep_the_newest() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = Arc::new(NodeState::open(tmp.path(), "n1", false).expect("open"));
        let handles: Vec<_> = (1..=8u64)
            .map(|epoch| {
                let state = Arc::clone(&state);
                std::thread::spawn(move || state.install(placement(epoch)).expect("install"))
            })
            .collect();
        for h in handles {
            assert!(h.join().expect("thread") >= 1);
        }
        assert_eq!(state.epoch(), Some(8));
        drop(state);
        let reopened = NodeState::open(tmp.path(), "n1", false).expect("reopen");
        assert_eq!(reopened.epoch(), Some(8));
    }
}
