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
//! * [`RateLimitLayer`] — the tenant's token bucket: `RateLimit` headers, or 429;
//! * [`ConsistencyLayer`] — the request's [`Consistency`](pairdb_core::Consistency);
//! * [`IdempotencyLayer`] — a retried write answered from its first attempt's record.
//!
//! Every layer's service delegates `poll_ready` to its inner service, so backpressure passes
//! through unchanged.
//!
//! A role builds its stack in one function, outermost first, with its own [`Reject`]:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use pairdb_metadata::MetadataStore;
//! use pairdb_middleware::tenant::DEFAULT_TENANT_TTL;
//! use pairdb_middleware::{
//!     AuthConfig, AuthLayer, Authenticator, ConsistencyLayer, LayerError, Reject, TenantCache,
//!     TenantLayer, TraceContext, TraceLayer,
//! };
//!
//! /// Renders rejections as plain-text HTTP (a coordinator renders a `tonic::Status`).
//! #[derive(Clone)]
//! struct Text;
//!
//! impl Reject for Text {
//!     type Body = String;
//!     fn reject(&self, e: LayerError, _: Option<&TraceContext>) -> http::Response<String> {
//!         let mut response = http::Response::new(e.detail);
//!         *response.status_mut() = http::StatusCode::from_u16(e.kind.http_status())
//!             .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
//!         response
//!     }
//! }
//!
//! fn stack(store: Arc<dyn MetadataStore>, config: AuthConfig) -> impl Clone {
//!     tower::ServiceBuilder::new()
//!         .layer(TraceLayer::new())
//!         .layer(AuthLayer::new(Authenticator::new(store.clone(), config), Text))
//!         .layer(TenantLayer::new(TenantCache::new(store, DEFAULT_TENANT_TTL), Text))
//!         .layer(ConsistencyLayer::new(Text))
//! }
//! ```
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![warn(missing_docs)]

pub mod auth;
mod cache;
pub mod consistency;
#[cfg(feature = "failpoints")]
pub mod failpoint;
pub mod idempotency;
pub mod metered;
pub mod metrics;
pub mod principal;
pub mod rate_limit;
pub mod redis_pool;
pub mod reject;
pub mod tenant;
pub mod tenant_cache;
pub mod trace;

pub use auth::{AuthConfig, AuthLayer, AuthService, Authenticator};
pub use consistency::{ConsistencyLayer, ConsistencyService};
pub use idempotency::{IdempotencyConfig, IdempotencyLayer, IdempotencyService};
pub use metrics::{Metrics, MetricsLayer};
pub use principal::{Forwarded, Principal};
pub use rate_limit::{RateLimitLayer, RateLimitService, RateLimits};
pub use redis_pool::Redis;
pub use reject::{LayerError, Reject};
pub use tenant::{TenantCache, TenantLayer, TenantService};
pub use trace::{
    TraceContext, TraceLayer, TraceService, background_span, call_span, current_traceparent,
};
