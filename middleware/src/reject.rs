//! How a layer refuses a request: the one place where gateway and coordinator differ.

use http::{HeaderName, HeaderValue};
use pairdb_core::ErrorKind;

use crate::trace::TraceContext;

/// Why a layer refused a request: a stable [`ErrorKind`], a human detail safe to show the caller
/// (it never contains a secret), and headers the refusal carries (`Retry-After`, `RateLimit`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", kind.slug())]
pub struct LayerError {
    /// The stable kind; decides the HTTP status or gRPC code.
    pub kind: ErrorKind,
    /// What was wrong, for the caller.
    pub detail: String,
    /// Response headers (gRPC metadata) every rendering of the refusal carries.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl LayerError {
    /// A refusal of `kind` explained by `detail`.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        LayerError {
            kind,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    /// The refusal, carrying header `name: value` too.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// Renders a [`LayerError`] as the response a role sends: problem+json at the gateway, a
/// `tonic::Status` at the coordinator.
///
/// A layer that refuses a request calls `reject` and never calls its inner service. `trace` is the
/// request's [`TraceContext`] when the trace layer ran, so the rendering can name the trace id.
pub trait Reject: Clone + Send + Sync + 'static {
    /// The response body type, the same as the inner service's.
    type Body: Send + 'static;

    /// The response refusing the request with `error`.
    fn reject(&self, error: LayerError, trace: Option<&TraceContext>)
    -> http::Response<Self::Body>;

    /// A body of `data` then `trailers` (an answer the idempotency layer read whole, or
    /// replays). The default serves HTTP answers, which have no trailers; a gRPC rejection
    /// keeps them (they carry `grpc-status`).
    fn body(&self, data: bytes::Bytes, trailers: Option<http::HeaderMap>) -> Self::Body
    where
        Self::Body: crate::idempotency::FromBytes,
    {
        let _ = trailers;
        crate::idempotency::FromBytes::from_bytes(data)
    }
}
