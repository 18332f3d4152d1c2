//! The gateway's middleware stack, in one function (DESIGN §3).

use axum::Router;
use axum::extract::Request;
use std::time::Duration;

use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::ALLOW;
use pairdb_core::ErrorKind;
use pairdb_middleware::idempotency::IdempotencyStore;
use pairdb_middleware::{
    AuthLayer, Authenticator, ConsistencyLayer, IdempotencyConfig, IdempotencyLayer, Metrics,
    MetricsLayer, RateLimitLayer, RateLimits, TenantCache, TenantLayer, TraceContext, TraceLayer,
};
use std::sync::Arc;
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;

use crate::extract::Received;
use crate::key::KV_PREFIX;
use crate::problem::{Problem, ProblemReject, is_problem};

/// Wraps the `/v1` routes and the open `ops` routes in the stack, outermost first:
/// received-at → trace → idempotency key → auth → tenant → rate limit → consistency →
/// idempotency (rate limit and idempotency only with `admission`).
pub fn layers(
    v1: Router,
    ops: Router,
    authenticator: Authenticator,
    tenants: TenantCache,
    admission: Option<(RateLimits, Arc<dyn IdempotencyStore>, IdempotencyConfig)>,
    metrics: Metrics,
    request_timeout: Duration,
) -> Router {
    let (limits, idempotency) = match admission {
        Some((limits, records, config)) => (
            Some(RateLimitLayer::new(limits, ProblemReject)),
            Some(IdempotencyLayer::new(records, config, ProblemReject)),
        ),
        None => (None, None),
    };
    let v1 = v1.layer(
        ServiceBuilder::new()
            // idempotency key: before anything can refuse a key write, so every answer names it.
            .layer(from_fn(crate::idempotency_key::resolve))
            // auth: first check inside /v1, so nothing below runs (or reaches a store) for an unknown caller.
            .layer(AuthLayer::new(authenticator, ProblemReject))
            // tenant: needs auth's principal; loads the config whose default consistency is used next.
            .layer(TenantLayer::new(tenants, ProblemReject))
            // rate limit: needs the tenant's limit; refuses before anything costs a store or a replica.
            .option_layer(limits)
            // consistency: after the tenant default is known; handlers read its extension.
            .layer(ConsistencyLayer::new(ProblemReject))
            // idempotency: innermost, so what it records and replays is the handler's answer.
            .option_layer(idempotency),
    );
    v1.merge(ops)
        .fallback(crate::routes::route_not_found)
        // 405 as problem: inside trace, so the problem names the trace; sees every route's 405.
        .layer(from_fn(method_not_allowed_problem))
        // metrics: every answer, refusals and 404s included, by route template.
        .layer(MetricsLayer::new(metrics, route_of))
        // trace: over everything (ops, /v1, 404s, rejections), so every response has traceresponse.
        .layer(
            TraceLayer::new()
                .role("gateway")
                .route_names(route_of)
                .redact_paths_after(&[KV_PREFIX]),
        )
        // received-at: outermost, so a request's deadline counts from its arrival.
        .layer(MapRequestLayer::new(move |mut request: Request| {
            // When it arrived ([`Received`]): body reads are bounded by deadlines from it.
            request.extensions_mut().insert(Received {
                at: tokio::time::Instant::now(),
                timeout: request_timeout,
            });
            request
        }))
}

/// The route template of a request, for metrics labels.
pub fn route_of(_: &http::Method, path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return match path {
            "/healthz" => "/healthz",
            "/readyz" => "/readyz",
            "/metrics" => "/metrics",
            "/openapi.json" => "/openapi.json",
            _ => "other",
        };
    };
    // Up to five segments are looked at (no route has more): no allocation per request.
    let mut s = rest.split('/');
    match [s.next(), s.next(), s.next(), s.next(), s.next()] {
        [Some("kv"), Some(_), None, ..] => "/v1/kv/{key}",
        [Some("tenants"), None, ..] => "/v1/tenants",
        [Some("tenants"), Some(_), None, ..] => "/v1/tenants/{tenant_id}",
        [Some("tenants"), Some(_), Some("api-keys"), None, ..] => {
            "/v1/tenants/{tenant_id}/api-keys"
        }
        [Some("tenants"), Some(_), Some("api-keys"), Some(_), None] => {
            "/v1/tenants/{tenant_id}/api-keys/{key_id}"
        }
        [Some("admin"), Some("nodes"), None, ..] => "/v1/admin/nodes",
        _ => "other",
    }
}

/// Turns axum's empty 405 into a `method-not-allowed` problem, keeping its `Allow` header.
async fn method_not_allowed_problem(request: Request, next: Next) -> Response {
    let trace = request.extensions().get::<TraceContext>().copied();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || is_problem(response.headers()) {
        return response;
    }
    let mut problem = Problem::new(
        ErrorKind::MethodNotAllowed,
        "this route does not support the method",
    )
    .with_trace(trace.as_ref());
    if let Some(allow) = response.headers().get(ALLOW) {
        problem = problem.with_header(ALLOW, allow.clone());
    }
    problem.into_response()
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn routes_are_named_by_template() {
        let get = http::Method::GET;
        for (path, route) in [
            ("/v1/kv/a%2Fb", "/v1/kv/{key}"),
            ("/v1/kv/a/b", "other"),
            ("/v1/tenants", "/v1/tenants"),
            ("/v1/tenants/acme", "/v1/tenants/{tenant_id}"),
            (
                "/v1/tenants/acme/api-keys",
                "/v1/tenants/{tenant_id}/api-keys",
            ),
            (
                "/v1/tenants/acme/api-keys/k1",
                "/v1/tenants/{tenant_id}/api-keys/{key_id}",
            ),
            ("/v1/tenants/acme/api-keys/k1/x", "other"),
            ("/v1/admin/nodes", "/v1/admin/nodes"),
            ("/metrics", "/metrics"),
            ("/nowhere", "other"),
        ] {
            assert_eq!(route_of(&get, path), route, "{path}");
        }
    }
}
