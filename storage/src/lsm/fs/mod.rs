//! The file system as the LSM engine sees it: the few calls it makes, behind a trait, so tests can
//! put a file system under it that loses what a power cut would.
//!
//! * [`OsFs`] — the operating system's file system (what the engine runs on);
//! * [`SimFs`] — an in-memory file system that remembers what was fsynced and, on
//!   [`SimFs::crash`], keeps only that (plus, at random, some of what was not): file contents
//!   not fsynced, and directory entries (creates, renames, removes) whose directory was not
//!   fsynced, are lost as a power cut loses them.
//!
//! Every engine file goes through [`Fs`]: commit-log segments, manifest segments and tables. The
//! contract is POSIX's, at its weakest: a file's data is durable once the file is fsynced; its
//! name, only once its directory is.

mod os;
mod sim;

use std::io;
use std::path::Path;
use std::sync::Arc;

pub use os::OsFs;
pub use sim::{CrashOptions, SimFs, SyncHold};

/// An open file. Reads and writes are positional, so one handle serves concurrent callers.
pub trait FsFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;

    /// Cuts or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the file's data durable (and its length, where it changed).
    fn sync_data(&self) -> io::Result<()>;

    /// Makes the file's data and metadata durable.
    fn sync_all(&self) -> io::Result<()>;

    /// Allocates the file to `len` bytes (zeros past its end) if the file system can, so later
    /// writes within it need not change its size; best effort.
    fn allocate(&self, len: u64);

    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ends before the bytes asked for",
                    ));
                }
                Ok(n) => {
                    buf = buf.get_mut(n..).unwrap_or_default();
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The whole file.
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.size()?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// A file system: directories of named files.
pub trait Fs: Send + Sync + 'static {
    /// Creates `path` and any missing parents (not durably: fsync the parents).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Names of the entries of directory `path` (names that are not UTF-8 are left out).
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;

    /// Whether `path` names a file or directory.
    fn exists(&self, path: &Path) -> bool;

    /// Creates the file `path`, which must not exist, for reading and writing.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;

    /// Opens the existing file `path` for reading (and, with `write`, writing).
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn FsFile>>;

    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Renames the file `from` to `to`, replacing any file there.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Makes the entries of directory `path` (creates, renames, removes in it) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// The whole file `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.open(path, false)?.read_all()
    }
}

/// The operating system's file system, shared.
pub fn os() -> Arc<dyn Fs> {
    Arc::new(OsFs)
}
