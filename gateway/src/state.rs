//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pairdb_metadata::MetadataStore;
use pairdb_middleware::Authenticator;

use crate::coordinators::Coordinators;

/// Shared handler state. Cloned for every request, so it is one `Arc`: a clone is one atomic
/// increment, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// State holding `shared`.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler shares.
pub struct Shared {
    /// The coordinators requests are forwarded to.
    pub coordinators: Coordinators,
    /// The metadata store (readiness only; auth and tenant layers hold their own handle).
    pub store: Arc<dyn MetadataStore>,
    /// The auth layer's authenticator: revoking a key here forgets it at once.
    pub authenticator: Authenticator,
    /// Longest deadline of a request.
    pub request_timeout: Duration,
    /// Longest key, in bytes after percent-decoding.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// The OpenAPI document, rendered once.
    pub openapi: Bytes,
    /// This gateway's metrics, served at `/metrics`.
    pub metrics: pairdb_middleware::Metrics,
}
