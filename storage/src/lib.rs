//! pairdb storage nodes.
//!
//! * [`engine`] — the [`StorageEngine`](engine::StorageEngine) seam every test swaps;
//! * [`digest`] — the canonical range digest every engine computes identically;
//! * [`memory`] — the in-memory reference engine, with exactly the semantics of the LSM;
//! * [`conformance`] — the suite every engine must pass, reusable by any future engine (behind
//!   the `conformance` feature, so production builds do not carry it);
//! * [`durability`] — when acknowledged writes reach stable storage;
//! * [`lsm`] — the log-structured merge-tree engine (in progress: its commit log);
//! * [`dir_lock`] — the exclusive lock a process takes on each data directory it uses;
//! * [`node`] — node identity (incarnation) and placement-epoch persistence;
//! * [`service`] — the storage-node gRPC service (credential and epoch checks, leader minting);
//! * [`server`] — running the service on a bound listener until a shutdown signal.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![warn(missing_docs)]

pub mod calls;
pub mod clock_file;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod digest;
pub mod dir_lock;
pub mod durability;
pub mod engine;
pub mod handoff;
pub mod lsm;
pub mod memory;
pub mod node;
pub mod server;
pub mod service;
