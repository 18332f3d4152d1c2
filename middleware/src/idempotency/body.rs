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

/// A gRPC answer read whole (or replayed): the message, then its trailers (`grpc-status`). A
/// refusal — its status in the head, no message, no trailers — stays trailers-only: an empty
/// body, never an empty data frame, which gRPC clients other than tonic take for a broken stream.
pub fn grpc_answer(data: Bytes, trailers: Option<http::HeaderMap>) -> tonic::body::Body {
    if data.is_empty() && trailers.is_none() {
        return tonic::body::Body::empty();
    }
    let mut frames = Vec::with_capacity(2);
    if !data.is_empty() {
        frames.push(Ok::<_, std::convert::Infallible>(http_body::Frame::data(
            data,
        )));
    }
    if let Some(trailers) = trailers {
        frames.push(Ok(http_body::Frame::trailers(trailers)));
    }
    tonic::body::Body::new(http_body_util::StreamBody::new(futures::stream::iter(
        frames,
    )))
}
