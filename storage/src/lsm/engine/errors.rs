//! Errors of the engine's parts, as the engine reports them.

use super::super::log::LogError;
use super::super::manifest::ManifestError;
use super::super::sstable::table::TableError;
use crate::engine::EngineError;

impl From<LogError> for EngineError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Io { path, source } => EngineError::Io {
                path: path.display().to_string(),
                source,
            },
            LogError::Corrupt {
                path,
                offset,
                detail,
            } => EngineError::Corruption {
                path: path.display().to_string(),
                offset,
                detail,
            },
            LogError::Closed => EngineError::Closed,
            e @ LogError::TooLarge { .. } => EngineError::Refused(e.to_string()),
            other => EngineError::Stopped(other.to_string()),
        }
    }
}

impl From<TableError> for EngineError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::Io { path, source } => EngineError::Io {
                path: path.display().to_string(),
                source,
            },
            TableError::Corrupt {
                path,
                offset,
                detail,
            } => EngineError::Corruption {
                path: path.display().to_string(),
                offset,
                detail,
            },
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
            } => EngineError::Corruption {
                path: path.display().to_string(),
                offset,
                detail,
            },
            other => EngineError::Stopped(other.to_string()),
        }
    }
}
