//! The one place coordinator errors become gRPC statuses.
//!
//! Each status carries a prost-encoded [`ErrorDetail`] in its details, naming the stable error
//! kind and, for quorum failures, the counts, so the gateway renders the exact problem.

use pairdb_core::ErrorKind;
use pairdb_proto::coordinator::ErrorDetail;
use prost::Message;
use tonic::{Code, Status};

use crate::error::CoordinatorError;

/// The gRPC code of an error kind.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind.http_status() {
        400 => Code::InvalidArgument,
        408 => Code::DeadlineExceeded,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 if kind == ErrorKind::ClusterConflict => Code::FailedPrecondition,
        409 => Code::AlreadyExists,
        413 => Code::InvalidArgument,
        422 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

/// A status of `kind` with `detail` attached.
pub fn status_with(kind: ErrorKind, message: impl Into<String>, detail: ErrorDetail) -> Status {
    Status::with_details(
        code_of(kind),
        message,
        bytes::Bytes::from(detail.encode_to_vec()),
    )
}

/// A status of `kind` with no counts.
pub fn status_of(kind: ErrorKind, message: impl Into<String>) -> Status {
    status_with(
        kind,
        message,
        ErrorDetail {
            kind: kind.slug().to_owned(),
            ..ErrorDetail::default()
        },
    )
}

impl From<CoordinatorError> for Status {
    fn from(err: CoordinatorError) -> Status {
        let kind = err.kind();
        let mut detail = ErrorDetail {
            kind: kind.slug().to_owned(),
            ..ErrorDetail::default()
        };
        match &err {
            CoordinatorError::WriteUnavailable {
                acks,
                required,
                applied,
            } => {
                detail.acks = *acks;
                detail.required = *required;
                detail.applied = applied.as_str().to_owned();
            }
            CoordinatorError::ReadUnavailable { answered, required } => {
                detail.answered = *answered;
                detail.required = *required;
            }
            CoordinatorError::Timeout {
                progress,
                required,
                applied,
            } => {
                detail.required = *required;
                match applied {
                    Some(a) => {
                        detail.acks = *progress;
                        detail.applied = a.as_str().to_owned();
                    }
                    None => detail.answered = *progress,
                }
            }
            CoordinatorError::NotReady {
                applied: Some(a), ..
            } => {
                detail.applied = a.as_str().to_owned();
            }
            CoordinatorError::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
            }
            CoordinatorError::Metadata(e) => {
                tracing::warn!(error = %e, "metadata store error");
            }
            _ => {}
        }
        status_with(kind, err.to_string(), detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Applied;

    #[test]
    fn quorum_failures_carry_counts() {
        let s = Status::from(CoordinatorError::WriteUnavailable {
            acks: 1,
            required: 2,
            applied: Applied::Partial,
        });
        assert_eq!(s.code(), Code::Unavailable);
        let d = pairdb_proto::error_detail(&s).unwrap_or_default();
        assert_eq!(
            (d.kind.as_str(), d.acks, d.required, d.applied.as_str()),
            ("quorum-unavailable", 1, 2, "partial")
        );
        let t = Status::from(CoordinatorError::Timeout {
            progress: 1,
            required: 3,
            applied: Some(Applied::Unknown),
        });
        assert_eq!(t.code(), Code::DeadlineExceeded);
        assert_eq!(
            pairdb_proto::error_detail(&t).unwrap_or_default().applied,
            "unknown"
        );
    }
}
