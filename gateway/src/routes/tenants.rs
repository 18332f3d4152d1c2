//! Tenant administration: `/v1/tenants…`, forwarded to the coordinator, which authorizes
//! (admin key, or a tenant key on its own tenant) and validates. The gateway parses JSON and
//! maps errors.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use http::StatusCode;
use pairdb_core::{Consistency, ErrorKind};
use pairdb_proto::coordinator as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::{Caller, JsonBody, PathParams};
use crate::problem::{Problem, ProblemBody};
use crate::state::AppState;

/// A tenant's request-rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    /// Sustained requests per second.
    pub requests_per_second: u32,
    /// Bucket size.
    pub burst: u32,
}

/// Body of `POST /v1/tenants`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    /// `[a-z0-9][a-z0-9_-]{0,62}`.
    pub tenant_id: String,
    /// Replicas per key, 1–7 and at most the active storage nodes; default 3.
    #[serde(default)]
    pub replication_factor: Option<u32>,
    /// `one`, `quorum` or `all`; default `quorum`.
    #[serde(default)]
    pub default_consistency: Option<String>,
    /// Default: the server's limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitBody>,
}

/// Body of `PATCH /v1/tenants/{tenant_id}`: what to change; the rest stays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantBody {
    /// `one`, `quorum` or `all`.
    #[serde(default)]
    pub default_consistency: Option<String>,
    /// The new limit (both fields at least 1).
    #[serde(default)]
    pub rate_limit: Option<RateLimitBody>,
}

/// Body of `PUT /v1/tenants/{tenant_id}/replication-factor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplicationFactorBody {
    /// Replicas per key, 1–7 and at most the storage nodes.
    pub replication_factor: u32,
}

/// A migration started by a membership or replication change (`202 Accepted`); follow it at
/// `GET /v1/admin/migrations/{migration_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MigrationStartedBody {
    /// The migration's id.
    pub migration_id: String,
}

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantBody {
    /// The tenant id.
    pub tenant_id: String,
    /// Replicas per key.
    pub replication_factor: u32,
    /// Level used when a request names none.
    pub default_consistency: String,
    /// Request-rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitBody>,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// Body of a created tenant: the tenant and its first API key, shown once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedTenantBody {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: TenantBody,
    /// The tenant's first API key; it is never shown again.
    pub api_key: String,
}

/// A newly minted API key, shown once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKeyBody {
    /// The key's public id.
    pub key_id: String,
    /// The full key, `pdb_<key id>_<secret>`.
    pub api_key: String,
}

/// An API key as listed (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyInfoBody {
    /// The key's public id.
    pub key_id: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

impl From<pb::Tenant> for TenantBody {
    fn from(t: pb::Tenant) -> Self {
        TenantBody {
            tenant_id: t.tenant_id,
            replication_factor: t.replication_factor,
            default_consistency: t.default_consistency,
            rate_limit: t.rate_limit.map(|r| RateLimitBody {
                requests_per_second: r.requests_per_second,
                burst: r.burst,
            }),
            created_at: t.created_at,
        }
    }
}

/// The tenant routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/v1/tenants/{tenant_id}",
            get(get_tenant).patch(update_tenant).delete(delete_tenant),
        )
        .route(
            "/v1/tenants/{tenant_id}/replication-factor",
            put(set_replication_factor),
        )
        .route(
            "/v1/tenants/{tenant_id}/api-keys",
            get(list_api_keys).post(create_api_key),
        )
        .route(
            "/v1/tenants/{tenant_id}/api-keys/{key_id}",
            delete(delete_api_key),
        )
}

/// Creates a tenant and its first API key.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    request_body = CreateTenantBody,
    responses(
        (status = 201, description = "Created; api_key is shown once", body = CreatedTenantBody),
        (status = 400, description = "Malformed JSON, bad tenant id, replication factor or consistency", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The tenant exists", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn create_tenant(
    State(state): State<AppState>,
    Caller(call): Caller,
    JsonBody(body): JsonBody<CreateTenantBody>,
) -> Result<Response, Problem> {
    let traced = |p: Problem| p.with_trace(call.trace.as_ref());
    if body.replication_factor == Some(0) {
        return Err(traced(Problem::new(
            ErrorKind::BadRequest,
            "replication_factor must be 1–7",
        )));
    }
    let default_consistency = match &body.default_consistency {
        Some(name) => name
            .parse::<Consistency>()
            .map_err(|e| traced(Problem::new(ErrorKind::BadConsistency, e.to_string())))?
            .as_str()
            .to_owned(),
        None => String::new(),
    };
    let message = pb::CreateTenantRequest {
        tenant_id: body.tenant_id,
        replication_factor: body.replication_factor.unwrap_or(0),
        default_consistency,
        rate_limit: body.rate_limit.map(|r| pb::RateLimit {
            requests_per_second: r.requests_per_second,
            burst: r.burst,
        }),
    };
    let created = state
        .coordinators
        .call(&call, message, |mut c, r| async move {
            c.create_tenant(r).await
        })
        .await
        .map_err(|s| traced(Problem::from_status(&s)))?;
    let tenant = created.tenant.ok_or_else(|| {
        traced(Problem::new(
            ErrorKind::Internal,
            "the coordinator returned no tenant",
        ))
    })?;
    let body = CreatedTenantBody {
        tenant: tenant.into(),
        api_key: created.api_key,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Lists tenants.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses(
        (status = 200, description = "Every tenant, ordered by id", body = [TenantBody]),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn list_tenants(
    State(state): State<AppState>,
    Caller(call): Caller,
) -> Result<Json<Vec<TenantBody>>, Problem> {
    let listed = state
        .coordinators
        .call(&call, pb::ListTenantsRequest {}, |mut c, r| async move {
            c.list_tenants(r).await
        })
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok(Json(
        listed.tenants.into_iter().map(TenantBody::from).collect(),
    ))
}

/// Reads one tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}", tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant id")),
    responses(
        (status = 200, description = "The tenant", body = TenantBody),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Another tenant's key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_tenant(
    State(state): State<AppState>,
    Caller(call): Caller,
    PathParams(tenant_id): PathParams<String>,
) -> Result<Json<TenantBody>, Problem> {
    let tenant = state
        .coordinators
        .call(
            &call,
            pb::GetTenantRequest { tenant_id },
            |mut c, r| async move { c.get_tenant(r).await },
        )
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok(Json(tenant.into()))
}

/// Changes a tenant's default consistency or rate limit; every role applies it within 1 s.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}", tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant id")),
    request_body = UpdateTenantBody,
    responses(
        (status = 200, description = "The tenant as changed", body = TenantBody),
        (status = 400, description = "Malformed JSON, unknown consistency, or a zero rate limit", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn update_tenant(
    State(state): State<AppState>,
    Caller(call): Caller,
    PathParams(tenant_id): PathParams<String>,
    JsonBody(body): JsonBody<UpdateTenantBody>,
) -> Result<Json<TenantBody>, Problem> {
    let request = pb::UpdateTenantRequest {
        tenant_id,
        default_consistency: body.default_consistency,
        rate_limit: body.rate_limit.map(|r| pb::RateLimit {
            requests_per_second: r.requests_per_second,
            burst: r.burst,
        }),
    };
    let tenant = state
        .coordinators
        .call(&call, request, |mut c, r| async move {
            c.update_tenant(r).await
        })
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok(Json(tenant.into()))
}

/// Changes a tenant's replication factor online: new replicas receive the data before they
/// serve reads, replicas no longer needed drop it afterwards.
#[utoipa::path(put, path = "/v1/tenants/{tenant_id}/replication-factor", tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant id")),
    request_body = ReplicationFactorBody,
    responses(
        (status = 202, description = "The migration started", body = MigrationStartedBody),
        (status = 400, description = "Malformed JSON, or a factor outside 1–7 or above the storage nodes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Another migration is running", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn set_replication_factor(
    State(state): State<AppState>,
    Caller(call): Caller,
    PathParams(tenant_id): PathParams<String>,
    JsonBody(body): JsonBody<ReplicationFactorBody>,
) -> Result<Response, Problem> {
    let request = pb::SetReplicationFactorRequest {
        tenant_id,
        replication_factor: body.replication_factor,
    };
    let started = state
        .coordinators
        .call(&call, request, |mut c, r| async move {
            c.set_replication_factor(r).await
        })
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok(accepted(started))
}

/// Deletes a tenant: its API keys stop working at once and its data is removed from every node
/// in the background.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}", tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant id")),
    responses(
        (status = 202, description = "The deletion started", body = MigrationStartedBody),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Another migration is running", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    Caller(call): Caller,
    PathParams(tenant_id): PathParams<String>,
) -> Result<Response, Problem> {
    let started = state
        .coordinators
        .call(
            &call,
            pb::DeleteTenantRequest { tenant_id },
            |mut c, r| async move { c.delete_tenant(r).await },
        )
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok(accepted(started))
}

/// `202 Accepted` with the migration's id.
pub fn accepted(started: pb::MigrationStarted) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(MigrationStartedBody {
            migration_id: started.migration_id,
        }),
    )
        .into_response()
}

/// Mints a new API key for the tenant.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/api-keys", tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant id")),
    responses(
        (status = 201, description = "The new key, shown once", body = CreatedApiKeyBody),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Another tenant's key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn create_api_key(
    State(state): State<AppState>,
    Caller(call): Caller,
    PathParams(tenant_id): PathParams<String>,
) -> Result<Response, Problem> {
    let created = state
        .coordinators
        .call(
            &call,
            pb::CreateApiKeyRequest { tenant_id },
            |mut c, r| async move { c.create_api_key(r).await },
        )
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    let body = CreatedApiKeyBody {
        key_id: created.key_id,
        api_key: created.api_key,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Lists the tenant's API keys (never their secrets).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/api-keys", tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant id")),
    responses(
        (status = 200, description = "The keys, oldest first", body = [ApiKeyInfoBody]),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Another tenant's key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    Caller(call): Caller,
    PathParams(tenant_id): PathParams<String>,
) -> Result<Json<Vec<ApiKeyInfoBody>>, Problem> {
    let listed = state
        .coordinators
        .call(
            &call,
            pb::ListApiKeysRequest { tenant_id },
            |mut c, r| async move { c.list_api_keys(r).await },
        )
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok(Json(
        listed
            .keys
            .into_iter()
            .map(|k| ApiKeyInfoBody {
                key_id: k.key_id,
                created_at: k.created_at,
            })
            .collect(),
    ))
}

/// Revokes one of the tenant's API keys; it stops working within a second.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/api-keys/{key_id}", tag = "tenants",
    params(
        ("tenant_id" = String, Path, description = "The tenant id"),
        ("key_id" = String, Path, description = "The key's public id"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Another tenant's key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant or key", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn delete_api_key(
    State(state): State<AppState>,
    Caller(call): Caller,
    PathParams((tenant_id, key_id)): PathParams<(String, String)>,
) -> Result<StatusCode, Problem> {
    let revoked = key_id.clone();
    state
        .coordinators
        .call(
            &call,
            pb::DeleteApiKeyRequest { tenant_id, key_id },
            |mut c, r| async move { c.delete_api_key(r).await },
        )
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    // This gateway stops accepting the key at once; others within their cache TTL.
    state.authenticator.forget(&revoked);
    Ok(StatusCode::NO_CONTENT)
}
