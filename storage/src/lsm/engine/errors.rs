//! Errors of the engine's parts, as the engine reports them.

use std::path::Path;

use super::super::log::LogError;
use super::super::manifest::ManifestError;
use super::super::sstable::table::TableError;
use crate::engine::EngineError;

/// Damage in the file (or directory) at `path`, at byte `offset`.
pub(super) fn corruption(path: &Path, offset: u64, detail: impl Into<String>) -> EngineError {
    EngineError::Corruption {
        path: path.display().to_string(),
        offset,
        detail: detail.into(),
    }
}

/// An I/O failure on `path`.
pub(super) fn io_error(path: &Path, source: std::io::Error) -> EngineError {
    EngineError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl From<LogError> for EngineError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Io { path, source } => io_error(&path, source),
            LogError::Corrupt {
                path,
                offset,
                detail,
            } => corruption(&path, offset, detail),
            LogError::Closed => EngineError::Closed,
            e @ LogError::TooLarge { .. } => EngineError::Refused(e.to_string()),
            other => EngineError::Stopped(other.to_string()),
        }
    }
}

impl From<TableError> for EngineError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::Io { path, source } => io_error(&path, source),
            TableError::Corrupt {
                path,
                offset,
                detail,
            } => corruption(&path, offset, detail),
            other => EngineError::Stopped(other.to_string()),
        }
    }
}

impl From<ManifestError> for EngineError {
    fn from(e: ManifestError) -> Self {
        match e {
            ManifestError::Log(e) => e.into(),
            ManifestError::Corrupt {
                path,
                offset,
                detail,
            } => corruption(&path, offset, detail),
            other => EngineError::Stopped(other.to_string()),
        }
    }
}
