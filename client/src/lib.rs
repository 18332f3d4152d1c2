//! The Rust SDK for pairdb's REST API (`docs/api.md`, v1).
//!
//! ```no_run
//! # async fn demo() -> Result<(), pairdb_client::ClientError> {
//! use pairdb_client::{Client, WriteOptions};
//!
//! let client = Client::builder("http://127.0.0.1:8080", "pdb_key_secret").build()?;
//! client.put("greeting", "hello").await?;
//! if let Some(item) = client.get("greeting").await? {
//!     // Carry the read's context into the write: the new version descends what was read,
//!     // and the server reports a conflict if the key changed in between.
//!     let options = WriteOptions { context: Some(item.context), ..WriteOptions::default() };
//!     let written = client.put_with("greeting", "hello again", &options).await?;
//!     println!("acked by {}/{}", written.acks, written.replicas);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! What the client guarantees:
//!
//! * [`key`] — every key travels as exactly one path segment: each byte outside the unreserved
//!   set `ALPHA / DIGIT / - . _ ~` is percent-encoded, so `/` and arbitrary bytes address the key
//!   they spell;
//! * [`idempotency`] — every write carries an `Idempotency-Key` (generated unless given) and every
//!   retry of that write reuses it, so the server applies the write at most once;
//! * [`retry`] — a request is retried only where repeating it cannot apply it twice;
//! * [`problem`] — every non-2xx answer becomes a typed [`Problem`], except 404 on a read,
//!   which is `Ok(None)`.
//!
//! The client needs a Tokio runtime. It speaks plain HTTP only (no TLS is compiled in).
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![warn(missing_docs)]

pub mod builder;
pub mod client;
pub mod context;
pub mod error;
pub mod idempotency;
pub mod key;
pub mod kv;
pub mod problem;
pub mod retry;
pub mod tenants;
pub mod wire;

pub use builder::ClientBuilder;
pub use client::Client;
pub use context::Context;
pub use error::ClientError;
pub use kv::{ConflictOutcome, DeleteOptions, Item, ReadOptions, WriteOptions, WriteResult};
pub use pairdb_core::Consistency;
pub use problem::{Applied, Problem};
pub use retry::RetryPolicy;
pub use tenants::{ApiKeyInfo, CreatedApiKey, CreatedTenant, NewTenant, RateLimit, Tenant};
