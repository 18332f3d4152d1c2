//! Exclusive locks on data directories.
//!
//! A data directory belongs to one process at a time. Two processes sharing one would corrupt
//! each other's files, and a second `pairdb` started by mistake would rewrite state the running
//! one depends on. So a process locks every data directory it uses — before it reads or writes
//! anything in it — and a second process fails at once with [`LockError::Held`], having changed
//! nothing.
//!
//! The lock is an advisory exclusive `flock` on the file `LOCK` in the directory, released when
//! the [`DirLock`] is dropped or the process dies (so a crash never leaves a stale lock). The lock
//! is per open file, so it also keeps two users apart within one process.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// Name of the lock file inside a locked directory.
pub const LOCK_FILE: &str = "LOCK";

/// A data directory could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process (or another user in this one) holds the directory.
    #[error(
        "{dir} is in use by another pairdb process (lock held on {lock}); stop it or choose another data dir"
    )]
    Held {
        /// The directory.
        dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// Creating the directory or the lock file, or locking it, failed.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// An exclusive lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    // Holding the file holds the lock; closing it (on drop) releases it.
    _file: File,
}

impl DirLock {
    /// Creates `dir` if missing and locks it, without waiting: fails with [`LockError::Held`]
    /// when another process or handle holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        fs::create_dir_all(dir).map_err(|source| LockError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|source| LockError::Io {
                path: lock.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock {
                dir: dir.to_path_buf(),
                _file: file,
            }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held {
                dir: dir.to_path_buf(),
                lock,
            }),
            Err(TryLockError::Error(source)) => Err(LockError::Io { path: lock, source }),
        }
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let first = DirLock::acquire(&dir).expect("first lock");
        assert_eq!(first.dir(), dir);
        let err = DirLock::acquire(&dir).expect_err("held");
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        DirLock::acquire(&dir).expect("free again");
    }
}
