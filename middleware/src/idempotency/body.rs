//! [`FromBytes`]: the request and response bodies the idempotency layer can rebuild from bytes
//! it read whole.

use bytes::Bytes;

/// A body made of `bytes` in one piece.
pub trait FromBytes {
    /// The body holding `bytes`.
    fn from_bytes(bytes: Bytes) -> Self;
}

impl FromBytes for axum::body::Body {
    fn from_bytes(bytes: Bytes) -> Self {
        axum::body::Body::from(bytes)
    }
}

impl FromBytes for tonic::body::Body {
    fn from_bytes(bytes: Bytes) -> Self {
        tonic::body::Body::new(http_body_util::Full::new(bytes))
    }
}

impl FromBytes for http_body_util::Full<Bytes> {
    fn from_bytes(bytes: Bytes) -> Self {
        http_body_util::Full::new(bytes)
    }
}
