//! The highest hybrid-logical-clock timestamp a node has issued, kept across restarts.
//!
//! A node's HLC starts from its wall clock; one restarted with its wall clock stepped back
//! would mint timestamps below those it minted before — a blind overwrite could then lose
//! last-write-wins to the write it replaced, and a repair watermark it vouched for could sit
//! above versions it mints afterwards. The node records its clock in `clock` in its data dir
//! about once a second and starts past it, so a restart steps back at most that much.
//!
//! The file is 8 bytes, the timestamp as u64 little-endian, replaced by write-temp, fsync,
//! rename, fsync-dir.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::node::NodeError;

/// File name of the clock file in a node's data dir.
pub const FILE: &str = "clock";
const TEMP_FILE: &str = "clock.tmp";

/// A node's clock file.
#[derive(Clone, Debug)]
pub struct ClockFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ClockFile {
    /// The clock file of `data_dir` (which must exist).
    pub fn new(data_dir: &Path) -> Self {
        ClockFile {
            dir: data_dir.to_path_buf(),
            path: data_dir.join(FILE),
        }
    }

    /// The timestamp recorded, 0 when there is none yet. A file of any other length than 8
    /// bytes is an error naming it.
    pub fn read(&self) -> Result<u64, NodeError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(NodeError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let raw: [u8; 8] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| NodeError::Corrupt {
                path: self.path.clone(),
                detail: format!(
                    "{} bytes at offset 0, expected 8 (delete it to start from the wall clock)",
                    bytes.len()
                ),
            })?;
        Ok(u64::from_le_bytes(raw))
    }

    /// Records `timestamp`, durably. Blocks on file I/O.
    pub fn write(&self, timestamp: u64) -> Result<(), NodeError> {
        let temp = self.dir.join(TEMP_FILE);
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NodeError::Io { path, source }
        };
        let mut out = File::create(&temp).map_err(io_err(&temp))?;
        out.write_all(&timestamp.to_le_bytes())
            .map_err(io_err(&temp))?;
        out.sync_all().map_err(io_err(&temp))?;
        drop(out);
        fs::rename(&temp, &self.path).map_err(io_err(&self.path))?;
        if let Ok(dir) = File::open(&self.dir) {
            // Makes the rename durable where directories can be synced.
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_clock_reads_back_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ClockFile::new(dir.path());
        assert_eq!(clock.read().expect("missing"), 0);
        clock.write(42 << 16).expect("write");
        clock.write(43 << 16).expect("write again");
        assert_eq!(clock.read().expect("read"), 43 << 16);
        fs::write(dir.path().join(FILE), b"torn").expect("plant");
        let error = clock.read().expect_err("corrupt").to_string();
        assert!(error.contains(FILE) && error.contains("4 bytes"), "{error}");
    }
}
