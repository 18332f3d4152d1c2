//! The coordinator's middleware stack, outermost first.
//!
//! The coordinator's gRPC API is public, so it runs the same layers as the gateway for callers
//! presenting a tenant or admin key; a gateway presents the internal credential and the principal
//! and consistency it resolved, which the auth layer trusts (`trust_forwarded`): such a call was
//! admitted by that gateway's rate limit, and passes this one untouched — and the same for
//! idempotency: a gRPC client's `Put` or `Delete` carrying `idempotency-key` metadata is recorded
//! here (fingerprint: the method and the message's SHA-256; outcome: `grpc-status`), a gateway's
//! forwarded call was recorded by that gateway.

use std::time::Duration;

use pairdb_middleware::{
    AuthConfig, AuthLayer, Authenticator, ConsistencyLayer, IdempotencyLayer, LayerError, Metrics,
    MetricsLayer, RateLimitLayer, RateLimits, Reject, TenantCache, TenantLayer, TraceContext,
    TraceLayer,
};
use tower::layer::util::{Identity, Stack};

use crate::status::status_of;

/// Renders a layer's refusal as a `tonic::Status` carrying its error kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcReject;

impl Reject for GrpcReject {
    type Body = tonic::body::Body;

    fn reject(
        &self,
        error: LayerError,
        trace: Option<&TraceContext>,
    ) -> http::Response<Self::Body> {
        let mut response = status_of(error.kind, error.detail).into_http::<tonic::body::Body>();
        for (name, value) in error.headers {
            response.headers_mut().append(name, value);
        }
        if let Some(t) = trace
            && let Ok(v) = http::HeaderValue::from_str(&t.traceresponse())
        {
            response.headers_mut().insert("traceresponse", v);
        }
        response
    }

    /// A gRPC answer read whole (or replayed), as [`grpc_answer`] builds it.
    ///
    /// [`grpc_answer`]: pairdb_middleware::idempotency::grpc_answer
    fn body(&self, data: bytes::Bytes, trailers: Option<http::HeaderMap>) -> Self::Body {
        pairdb_middleware::idempotency::grpc_answer(data, trailers)
    }
}

/// The write RPCs a gRPC client's idempotency key is recorded for.
pub const IDEMPOTENT_WRITES: &[&str] = &[
    "/pairdb.coordinator.v1.Coordinator/Put",
    "/pairdb.coordinator.v1.Coordinator/Delete",
];

/// The layer stack type [`layers`] builds.
pub type CoordinatorLayers = Stack<
    IdempotencyLayer<GrpcReject>,
    Stack<
        ConsistencyLayer<GrpcReject>,
        Stack<
            RateLimitLayer<GrpcReject>,
            Stack<
                TenantLayer<GrpcReject>,
                Stack<AuthLayer<GrpcReject>, Stack<MetricsLayer, Stack<TraceLayer, Identity>>>,
            >,
        >,
    >,
>;

/// Builds the coordinator stack: trace → metrics → auth → tenant → rate limit → consistency →
/// idempotency.
pub fn layers(
    authenticator: Authenticator,
    tenants: TenantCache,
    limits: RateLimits,
    metrics: Metrics,
    idempotency: IdempotencyLayer<GrpcReject>,
) -> CoordinatorLayers {
    tower::ServiceBuilder::new()
        // Outermost, so every response (refusals included) names its trace.
        // Call streams are traced call by call, not as a whole.
        .layer(
            TraceLayer::new()
                .role("coordinator")
                .route_names(rpc_of)
                .untraced(&[CALLS_PATH]),
        )
        // Every call, refusals included, by RPC.
        .layer(MetricsLayer::new(metrics, rpc_of))
        // Before anything that depends on who is calling.
        .layer(AuthLayer::new(authenticator, GrpcReject))
        // Needs the principal; gives the consistency layer the tenant's default level.
        .layer(TenantLayer::new(tenants, GrpcReject))
        // Callers with a tenant key of their own (not a gateway's forwarded calls).
        .layer(RateLimitLayer::new(limits, GrpcReject))
        // The level may come from the tenant's default.
        .layer(ConsistencyLayer::new(GrpcReject))
        // Innermost: what it replays must be what the service answered.
        .layer(idempotency)
        .into_inner()
}

/// The gateways' call-stream RPC.
pub const CALLS_PATH: &str = "/pairdb.coordinator.v1.Coordinator/Calls";

/// The RPC a gRPC path names, for metrics labels (`other` for an unknown one; `""` for the
/// call-stream RPC, which is not metered as a whole).
pub fn rpc_of(_: &http::Method, path: &str) -> &'static str {
    if path == CALLS_PATH {
        // Call streams are metered call by call (`Metrics::observe_call`), not as a whole.
        return "";
    }
    match path.rsplit('/').next().unwrap_or_default() {
        "Get" => "Get",
        "Put" => "Put",
        "Delete" => "Delete",
        "CreateTenant" => "CreateTenant",
        "GetTenant" => "GetTenant",
        "UpdateTenant" => "UpdateTenant",
        "ListTenants" => "ListTenants",
        "CreateApiKey" => "CreateApiKey",
        "ListApiKeys" => "ListApiKeys",
        "DeleteApiKey" => "DeleteApiKey",
        "ListNodes" => "ListNodes",
        "Ready" => "Ready",

        _ => "other",
    }
}

/// The auth settings of a coordinator: it trusts gateways presenting the internal credential.
pub fn auth_config(key_secret: &[u8], admin_key: &str, internal_token: &str) -> AuthConfig {
    AuthConfig {
        key_secret: key_secret.to_vec(),
        admin_key: admin_key.to_owned(),
        internal_token: internal_token.to_owned(),
        trust_forwarded: true,
    }
}

/// How long tenant configurations are cached in-process.
pub const TENANT_CACHE_TTL: Duration = pairdb_middleware::tenant::DEFAULT_TENANT_TTL;
