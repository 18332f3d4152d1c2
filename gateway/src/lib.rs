//! The pairdb REST gateway: the public edge of the cluster (`docs/api.md`).
//!
//! Requests pass the middleware stack ([`stack::layers`]: trace → idempotency key → auth →
//! tenant → rate limit → consistency → idempotency),
//! are validated at the edge (key, value size, headers, JSON bodies; a bad request is a 4xx
//! problem+json, never a 5xx), and are forwarded over gRPC to a coordinator
//! ([`coordinators`]), whose errors are mapped back to problems in one place ([`problem`]).
//!
//! * [`config`] — [`GatewayConfig`];
//! * [`server`] — [`build_router`] and [`serve`];
//! * [`routes`] — handlers: key-value, tenants, admin, operations;
//! * [`key`] — the raw-path key decoding;
//! * [`extract`] — extractors that fail as problems, and bounded body reads;
//! * [`idempotency_key`] — the `Idempotency-Key` of key writes, named on every answer;
//! * [`openapi`] — the generated OpenAPI document.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![warn(missing_docs)]

pub mod config;
pub mod coordinators;
pub mod error;
pub mod extract;
pub mod idempotency_key;
pub mod key;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod server;
pub mod stack;
pub mod state;

pub use config::GatewayConfig;
pub use error::GatewayError;
pub use problem::{Problem, ProblemReject};
pub use server::{build_router, serve};
