//! pairdb coordinators.
//!
//! A coordinator is stateless: it reads the placement from the metadata store, routes each
//! request to the replicas that own the key, and answers once the consistency level is met.
//!
//! * [`cluster`] — the current placement and ring, refreshed from metadata and pushed to
//!   storage nodes before use;
//! * [`pool`] — gRPC clients to storage nodes, with failure detection (consecutive failures mark a
//!   node down, a prober brings it back);
//! * [`hints`] — replicas that missed a write, replayed when they are live again;
//! * [`replication`] — the write and read paths of DESIGN §2: leader minting with in-request
//!   failover, `W` durable acks, reads from all replicas answering after `R`, read repair;
//! * [`admin`] — tenants, API keys and nodes; [`migration`] — adding and removing nodes,
//!   changing replication factors and deleting tenants, with data streamed first; [`repair`] —
//!   anti-entropy by Merkle comparison; [`jobs`] — the leases both run under;
//! * [`service`] — the coordinator gRPC service; [`status`] maps every error to a `Status` in one
//!   place; [`stack`] builds its middleware stack; [`server`] runs it.
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

pub mod admin;
pub mod calls;
pub mod cluster;
pub mod config;
pub mod error;
pub mod hints;
pub mod jobs;
pub mod metrics;
pub mod migration;
pub mod pool;
pub mod repair;
pub mod replication;
pub mod server;
pub mod service;
pub mod stack;
pub mod status;

pub use config::CoordinatorConfig;
pub use error::CoordinatorError;
