//! Everything a client call can fail with.

use crate::problem::Problem;

/// A failed client call.
///
/// Retryable failures ([`crate::retry`]) surface only after the last attempt; the variant then
/// describes that attempt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with a failure status (problem details). Boxed to keep `Result`s
    /// small; match on `problem.kind` or [`Problem::error_kind`].
    #[error("pairdb answered {0}")]
    Api(Box<Problem>),

    /// No answer was obtained: connection refused or reset, or the HTTP timeout
    /// ([`ClientBuilder::timeout`](crate::ClientBuilder::timeout) plus a margin) elapsed.
    /// For a write the outcome is unknown: the write may or may not have been applied. To retry
    /// it later without applying it twice, pass your own idempotency key in the options and
    /// reuse it.
    #[error("request failed after {attempts} attempt(s): {source}")]
    Transport {
        /// Attempts made, including the last one.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: reqwest::Error,
    },

    /// The key cannot be sent: it is empty, or it is `.` or `..` (see [`crate::key`]).
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// Why.
        reason: &'static str,
    },

    /// A tenant id that does not match `[a-z0-9][a-z0-9_-]{0,62}`; nothing was sent.
    #[error(transparent)]
    InvalidTenantId(#[from] pairdb_core::tenant::InvalidTenantId),

    /// A context token that is not a valid header value; nothing was sent.
    #[error("invalid context token: not a visible-ASCII header value")]
    InvalidContext,

    /// A caller-supplied idempotency key that is not 1–255 visible ASCII characters; nothing was
    /// sent.
    #[error("invalid idempotency key: must be 1-255 visible ASCII characters")]
    InvalidIdempotencyKey,

    /// A content type that is not a valid header value; nothing was sent.
    #[error("invalid content type: not a valid header value")]
    InvalidContentType,

    /// A request body could not be encoded as JSON; nothing was sent.
    #[error("cannot encode the request body: {0}")]
    Encode(#[source] serde_json::Error),

    /// The builder's configuration is unusable (base URL, API key, retry policy).
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),

    /// A 2xx answer that breaks the REST contract (missing or malformed header or body).
    #[error("unexpected response from pairdb: {0}")]
    UnexpectedResponse(String),
}

impl ClientError {
    /// The problem details, if the server answered with a failure status.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ClientError::Api(p) => Some(p),
            _ => None,
        }
    }
}
