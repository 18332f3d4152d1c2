//! Integration tests of the gateway: the real router served on 127.0.0.1:0, driven with
//! reqwest, forwarding to a fake coordinator (a tonic server implementing the generated trait)
//! and authenticating against an in-memory metadata store.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod docs;
mod edge;
mod errors;
mod forwarding;
mod kv;
mod ops;
mod rate_limit;
mod support;
mod tenants;
