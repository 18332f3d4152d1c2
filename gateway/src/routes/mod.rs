//! The REST routes (`docs/api.md`). Each module owns its handlers, their OpenAPI annotations and a
//! `routes()` function; [`server`](crate::server) assembles them.

pub mod admin;
pub mod kv;
pub mod ops;
pub mod tenants;

use axum::extract::Request;
use pairdb_core::ErrorKind;
use pairdb_middleware::TraceContext;

use crate::problem::Problem;

/// Fallback for paths no route matches: a `route-not-found` problem.
pub async fn route_not_found(request: Request) -> Problem {
    Problem::new(
        ErrorKind::RouteNotFound,
        format!("no route for {}", path_shape(request.uri().path())),
    )
    .with_trace(request.extensions().get::<TraceContext>())
}

/// The path as shown in a detail: key-value paths lose their key (never echoed or logged).
fn path_shape(path: &str) -> &str {
    if path.starts_with(crate::key::KV_PREFIX) {
        "/v1/kv/{key}"
    } else if path.len() > 256 {
        "this path"
    } else {
        path
    }
}
