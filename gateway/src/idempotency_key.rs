//! The `Idempotency-Key` of key writes: resolved once, before anything can refuse the request,
//! and named on every answer.
//!
//! docs/api.md promises `Idempotency-Key` on every PUT and DELETE answer, refusals included, so a
//! client can always retry with the key its write was (or would have been) made with. This layer
//! sits outside authentication: for each `PUT`/`DELETE /v1/kv/…` it takes the client's key
//! (1–255 visible ASCII, surrounding quotes stripped) or generates a random one, hands it to the
//! handler as an [`IdempotencyKey`] extension, and sets it on the response whatever answered —
//! the handler, the auth layer (401), the consistency layer (400). A malformed key is refused here
//! with a `bad-request` problem, the one answer that cannot name a key.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method};
use pairdb_core::ErrorKind;
use pairdb_middleware::TraceContext;
use rand::RngCore;

use crate::key::KV_PREFIX;
use crate::problem::Problem;
use crate::routes::kv::IDEMPOTENCY_KEY_HEADER;

/// The idempotency key of this key write: the client's, or one generated for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

/// A fresh key: 32 random hex digits.
pub fn generate() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Middleware (for `axum::middleware::from_fn`): resolves the idempotency key of key writes and
/// names it on their answers. Other requests pass untouched.
pub async fn resolve(mut request: Request, next: Next) -> Response {
    let write = matches!(*request.method(), Method::PUT | Method::DELETE)
        && request.uri().path().starts_with(KV_PREFIX);
    if !write {
        return next.run(request).await;
    }
    let key = match request.headers().get(IDEMPOTENCY_KEY_HEADER) {
        None => generate(),
        Some(value) => match pairdb_core::idempotency::parse(value.as_bytes()) {
            Some(key) => key.to_owned(),
            None => {
                let trace = request.extensions().get::<TraceContext>();
                return Problem::new(
                    ErrorKind::BadRequest,
                    "Idempotency-Key must be 1–255 visible ASCII characters",
                )
                .with_trace(trace)
                .into_response();
            }
        },
    };
    // Visible ASCII is always a valid header value.
    let header = HeaderValue::from_str(&key).ok();
    request.extensions_mut().insert(IdempotencyKey(key));
    let mut response = next.run(request).await;
    if let Some(header) = header {
        response
            .headers_mut()
            .entry(IDEMPOTENCY_KEY_HEADER)
            .or_insert(header);
    }
    response
}
