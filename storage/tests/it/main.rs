//! Integration tests of pairdb-storage: one test binary, one module per concern.
//!
//! * [`conformance`] — the engine conformance suite against [`MemoryEngine`], plus a property
//!   test that any apply order converges;
//! * [`service`] — the gRPC service over a real socket: credentials, epochs, minting, apply
//!   outcomes, reads, scans, digests, restarts, and the refusals errors carry;
//! * [`epochs`] — placement pushes against data calls: a push blocked in its fsyncs stalls
//!   nothing, and an old-epoch call racing a push lands before it or is refused;
//! * [`calls`] — call streams spoken by hand: the credential at open, replies under their ids,
//!   bad calls refused one by one, cancellation, and a stopping node ending its streams;
//! * [`concurrency`] — many writers minting and replicating the same keys at once;
//! * [`crash`] — the LSM engine's writer process SIGKILLed at random moments, then checked;
//! * [`idempotency`] — exact deduplication by idempotency key, and reuse refused;
//! * [`lsm`] — the LSM engine: the conformance suite (also while it flushes and compacts),
//!   recovery across reopen, and a model test against the memory engine;
//! * [`power`] — the LSM engine on a simulated file system whose power is cut at random
//!   moments: what was fsynced survives, and nothing else is relied on;
//! * [`purge`] — tombstone purge by grace period and repair watermark, against the memory
//!   engine as a model;
//! * [`support`] — nodes on ephemeral ports, request builders, and gated fault injection.
//!
//! [`MemoryEngine`]: pairdb_storage::memory::MemoryEngine

mod calls;
mod concurrency;
mod conformance;
mod crash;
mod epochs;
mod idempotency;
mod lsm;
mod power;
mod purge;
mod service;
mod support;
