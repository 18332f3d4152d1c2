//! Integration tests of the middleware layers, each layer alone over `tower::service_fn`, then
//! the whole stack under axum-free `http` services and under a tonic server.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod auth;
mod consistency;
mod idempotency;
mod idempotency_store;
mod rate_limit;
mod stack;
mod support;
mod tenant;
mod tenant_cache;
mod trace;
