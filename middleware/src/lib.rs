//! The tower layers shared by the pairdb gateway (axum) and coordinator (tonic).
//!
//! Both roles are `tower::Service<http::Request<B>>` and gRPC metadata are HTTP/2 headers, so one
//! layer reads the same header on either side (DESIGN §3). Each layer stores what it resolved in
//! the request's extensions; only the rendering of a rejection differs between the roles, behind
//! the [`Reject`] trait.
//!
//! The stack, outermost first:
//!
//! * [`TraceLayer`] — W3C trace context in and out, the request span, `traceresponse`;
//! * [`AuthLayer`] — bearer credential → [`Principal`] (and [`Forwarded`] for internal calls);
//! * [`TenantLayer`] — the tenant's [`TenantConfig`](pairdb_metadata::TenantConfig);
//! * [`ConsistencyLayer`] — the request's [`Consistency`](pairdb_core::Consistency).
//!
//! Every layer's service delegates `poll_ready` to its inner service, so backpressure passes
//! through unchanged.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![warn(missing_docs)]

pub mod auth;
mod cache;
pub mod consistency;
pub mod principal;
pub mod reject;
pub mod tenant;
pub mod trace;

pub use auth::{AuthConfig, AuthLayer, AuthService, Authenticator};
pub use consistency::{ConsistencyLayer, ConsistencyService};
pub use principal::{Forwarded, Principal};
pub use reject::{LayerError, Reject};
pub use tenant::{TenantCache, TenantLayer, TenantService};
pub use trace::{TraceContext, TraceLayer, TraceService};
