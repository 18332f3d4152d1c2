//! gRPC contracts of pairdb.
//!
//! * [`storage`] — the storage-node service. Every call carries the placement epoch in its message
//!   and the internal credential as `authorization: Bearer <token>` metadata; a storage node refuses
//!   anything else.
//! * [`coordinator`] — the public coordinator service: tenant-aware get/put/delete with tunable
//!   consistency, plus tenant and node administration.
//! * [`convert`] — validated conversions between wire messages and the core model.
#![deny(clippy::unwrap_used)]

pub mod convert;

/// The storage-node service (`pairdb.storage.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod storage {
    tonic::include_proto!("pairdb.storage.v1");
}

/// The coordinator service (`pairdb.coordinator.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod coordinator {
    tonic::include_proto!("pairdb.coordinator.v1");
}

/// Metadata header carrying the internal service credential (`Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";
/// Metadata header naming the tenant a gateway resolved (internal calls only).
pub const TENANT_HEADER: &str = "x-pairdb-tenant";
/// Metadata header marking a gateway-forwarded call as made by the admin key (internal calls only).
pub const PRINCIPAL_HEADER: &str = "x-pairdb-principal";
/// Metadata / HTTP header carrying the consistency level.
pub const CONSISTENCY_HEADER: &str = "x-consistency";
