//! pairdb storage nodes.
//!
//! * [`engine`] — the [`StorageEngine`](engine::StorageEngine) seam every test swaps;
//! * [`memory`] — the in-memory reference engine, with exactly the semantics of the LSM;
//! * [`conformance`] — the suite every engine must pass, reusable by any future engine;
//! * [`node`] — node identity (incarnation) and placement-epoch persistence;
//! * [`service`] — the storage-node gRPC service (credential and epoch checks, leader minting);
//! * [`server`] — running the service on a bound listener until a shutdown signal.

pub mod conformance;
pub mod engine;
pub mod memory;
pub mod node;
pub mod server;
pub mod service;
