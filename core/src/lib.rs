//! The shared model of pairdb.
//!
//! Everything here is pure: no I/O, no async. Storage nodes, coordinators and the gateway agree
//! on these types and laws:
//!
//! * [`key`] — how `(namespace, user key)` maps to a ring token and to stored key bytes;
//! * [`vclock`] — vector clocks keyed by leader incarnation, with a canonical encoding;
//! * [`hlc`] — the hybrid logical clock that timestamps minted versions;
//! * [`version`] — versions, minting, and resolution as a join (DESIGN §2.1);
//! * [`context`] — authenticated context tokens handed to clients;
//! * [`ring`] and [`placement`] — consistent hashing with deterministic virtual nodes;
//!   [`balance`] — how evenly a ring spreads replicas, and what a ring change moves;
//!   [`movement`] — the ranges a placement transition streams, from whom to whom;
//! * [`consistency`] — one / quorum / all;
//! * [`tenant`] — tenant id rules;
//! * [`problem`] — the stable error kinds every role reports;
//! * [`headers`], [`idempotency`], [`limits`] — the names and bounds of the REST contract.
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod balance;
pub mod consistency;
pub mod context;
pub mod headers;
pub mod hlc;
pub mod idempotency;
pub mod key;
pub mod limits;
pub mod movement;
pub mod placement;
pub mod problem;
pub mod ring;
pub mod tenant;
pub mod varint;
pub mod vclock;
pub mod version;

pub use consistency::Consistency;
pub use context::{Context, ContextError, ContextSigner};
pub use hlc::Hlc;
pub use key::StorageKey;
pub use placement::{Membership, NodeAddr, Placement, Replicas, Transition};
pub use problem::ErrorKind;
pub use ring::Ring;
pub use vclock::{Actor, ClockOrdering, VectorClock};
pub use version::{ApplyOutcome, Version};
