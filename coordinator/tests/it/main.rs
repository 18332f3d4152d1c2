//! Coordinator tests against scriptable storage nodes over real gRPC on loopback: every write
//! and read outcome of the replication core, driven deterministically.
//!
//! * [`calls`] — the call streams to storage nodes: ids, deadlines, cancellation, a node dying
//!   mid-batch, backpressure, and the credential checked per stream and per call;
//! * [`fake`] — the scriptable nodes, a counting metadata store, and the fixture;
//! * [`writes`] — leader failover only on proof, unknown outcomes, partial, stale epochs and
//!   the refresh herd, replication past the client's deadline, exact idempotency, hints;
//! * [`repair`] — Merkle repair against the memory engine as the model (proptest);
//! * [`reads`] — late answers folded into the join and repaired, in every case.

mod calls;
mod fake;
mod reads;
mod repair;
mod writes;
