//! Integration tests of pairdb-storage: one test binary, one module per concern.
//!
//! * [`conformance`] — the engine conformance suite against [`MemoryEngine`], plus a property
//!   test that any apply order converges;
//! * [`service`] — the gRPC service over a real socket: credentials, epochs, minting,
//!   idempotency, apply outcomes, reads, scans, digests and restarts.
//!
//! [`MemoryEngine`]: pairdb_storage::memory::MemoryEngine

mod conformance;
mod service;
