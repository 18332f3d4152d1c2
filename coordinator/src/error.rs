//! Coordinator errors: every way a request can fail, mapped to gRPC in [`crate::status`].

use pairdb_core::ErrorKind;
use pairdb_metadata::MetadataError;

/// How much of a failed write may have been applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// Nothing was minted.
    None,
    /// Some replicas hold the version, fewer than required.
    Partial,
    /// The outcome is not known: the deadline passed, or the leader's connection broke
    /// mid-call.
    Unknown,
}

impl Applied {
    /// `none`, `partial` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::None => "none",
            Applied::Partial => "partial",
            Applied::Unknown => "unknown",
        }
    }
}

/// A coordinator request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// Bad input, with the kind to report.
    #[error("{detail}")]
    Invalid {
        /// Which kind of bad input.
        kind: ErrorKind,
        /// Human explanation (never contains keys or values).
        detail: String,
    },
    /// The tenant does not exist.
    #[error("tenant not found")]
    TenantNotFound,
    /// The API key does not exist.
    #[error("api key not found")]
    ApiKeyNotFound,
    /// The tenant already exists.
    #[error("tenant already exists")]
    TenantExists,
    /// A write could not reach its required acks.
    #[error("write needs {required} acks, got {acks}")]
    WriteUnavailable {
        /// Durable acks obtained.
        acks: u32,
        /// Acks required.
        required: u32,
        /// What may have been applied.
        applied: Applied,
    },
    /// A read could not reach its required answers.
    #[error("read needs {required} answers, got {answered}")]
    ReadUnavailable {
        /// Replicas that answered.
        answered: u32,
        /// Answers required.
        required: u32,
    },
    /// The deadline passed, or a leader's connection broke mid-call: the outcome is unknown.
    #[error("no answer in time ({progress} of {required} replicas)")]
    Timeout {
        /// Acks or answers obtained.
        progress: u32,
        /// Acks or answers required.
        required: u32,
        /// For writes, what may have been applied.
        applied: Option<Applied>,
    },
    /// No placement is known yet, or metadata is unreachable.
    #[error("not ready: {detail}")]
    NotReady {
        /// What is missing.
        detail: String,
        /// For writes, what may have been applied (always `None`: a write refused as not ready
        /// minted nothing).
        applied: Option<Applied>,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// An internal fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoordinatorError {
    /// A not-ready error explained by `detail`.
    pub fn not_ready(detail: impl Into<String>) -> Self {
        CoordinatorError::NotReady {
            detail: detail.into(),
            applied: None,
        }
    }

    /// This error as the answer to a write that minted nothing: not-ready and metadata failures
    /// say `applied: none`.
    pub fn minted_nothing(self) -> Self {
        match self {
            CoordinatorError::NotReady { detail, .. } => CoordinatorError::NotReady {
                detail,
                applied: Some(Applied::None),
            },
            CoordinatorError::Metadata(e) if !matches!(e, MetadataError::TenantExists) => {
                CoordinatorError::NotReady {
                    detail: e.to_string(),
                    applied: Some(Applied::None),
                }
            }
            other => other,
        }
    }

    /// A bad-request error of `kind`.
    pub fn invalid(kind: ErrorKind, detail: impl Into<String>) -> Self {
        CoordinatorError::Invalid {
            kind,
            detail: detail.into(),
        }
    }

    /// The stable kind reported to clients.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CoordinatorError::Invalid { kind, .. } => *kind,
            CoordinatorError::TenantNotFound => ErrorKind::TenantNotFound,
            CoordinatorError::ApiKeyNotFound => ErrorKind::ApiKeyNotFound,
            CoordinatorError::TenantExists => ErrorKind::TenantExists,
            CoordinatorError::WriteUnavailable { .. }
            | CoordinatorError::ReadUnavailable { .. } => ErrorKind::QuorumUnavailable,
            CoordinatorError::Timeout { .. } => ErrorKind::Timeout,
            CoordinatorError::NotReady { .. } => ErrorKind::NotReady,
            CoordinatorError::Metadata(MetadataError::TenantExists) => ErrorKind::TenantExists,
            CoordinatorError::Metadata(MetadataError::JobRunning { .. }) => {
                ErrorKind::ClusterConflict
            }
            CoordinatorError::Metadata(_) => ErrorKind::NotReady,
            CoordinatorError::Internal(_) => ErrorKind::Internal,
        }
    }
}
