//! Cluster administration (`/v1/admin/…`, admin key; the coordinator authorizes).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use pairdb_proto::coordinator::{
    AddNodeRequest, CancelMigrationRequest, GetMigrationRequest, GetRepairRequest,
    ListNodesRequest, RemoveNodeRequest, StartRepairRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::{Caller, JsonBody, PathParams};
use crate::problem::{Problem, ProblemBody};
use crate::routes::tenants::{MigrationStartedBody, accepted};
use crate::state::AppState;

/// A storage node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeBody {
    /// Stable id.
    pub node_id: String,
    /// gRPC `host:port`.
    pub address: String,
    /// `joining`, `active`, `leaving` or `down`.
    pub state: String,
    /// Virtual-node tokens it owns.
    pub tokens: u32,
    /// Bytes stored.
    pub load_bytes: u64,
}

/// Body of `POST /v1/admin/nodes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNodeBody {
    /// The node's id, as it reports it (`[A-Za-z0-9][A-Za-z0-9._-]{0,63}`).
    pub node_id: String,
    /// Its gRPC `host:port`, reachable from the coordinators.
    pub address: String,
}

/// A migration's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MigrationBody {
    /// The migration's id.
    pub migration_id: String,
    /// `add_node`, `remove_node`, `replication_factor` or `delete_tenant`.
    pub kind: String,
    /// `streaming`, `completing`, `dropping`, `done`, `failed`, or after a cancel
    /// `rolling_back` then `cancelled`.
    pub state: String,
    /// Ranges whose replicas change.
    pub ranges_total: u64,
    /// Ranges streamed so far.
    pub ranges_done: u64,
    /// Versions streamed so far.
    pub keys_streamed: u64,
    /// Bytes of keys and values streamed so far.
    pub bytes_streamed: u64,
    /// The last error met, if any (transient errors are retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Nodes a cancelled migration could not tell to drop what they received (data no read
    /// consults, cleared before they receive those ranges again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undropped: Vec<String>,
}

impl From<pairdb_proto::coordinator::Migration> for MigrationBody {
    fn from(m: pairdb_proto::coordinator::Migration) -> Self {
        MigrationBody {
            migration_id: m.migration_id,
            kind: m.kind,
            state: m.state,
            ranges_total: m.ranges_total,
            ranges_done: m.ranges_done,
            keys_streamed: m.keys_streamed,
            bytes_streamed: m.bytes_streamed,
            error: (!m.error.is_empty()).then_some(m.error),
            created_at: m.created_at,
            undropped: m.undropped,
        }
    }
}

/// Body of `POST /v1/admin/repair`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRepairBody {
    /// The tenant to repair; every tenant when absent.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// A repair started (`202 Accepted`); follow it at `GET /v1/admin/repairs/{repair_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RepairStartedBody {
    /// The repair's id.
    pub repair_id: String,
}

/// A repair's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RepairBody {
    /// The repair's id.
    pub repair_id: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Ranges to compare (of every tenant it repairs).
    pub ranges_total: u64,
    /// Ranges compared so far.
    pub ranges_done: u64,
    /// Versions sent to replicas that lacked them.
    pub keys_repaired: u64,
    /// Ranges that could not be compared on every replica (one was down): repaired as far as
    /// possible, without a watermark.
    pub ranges_incomplete: u64,
    /// The last error met, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// The admin routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/nodes", get(list_nodes).post(add_node))
        .route("/v1/admin/nodes/{node_id}", delete(remove_node))
        .route(
            "/v1/admin/migrations/{migration_id}",
            get(get_migration).delete(cancel_migration),
        )
        .route("/v1/admin/repair", post(start_repair))
        .route("/v1/admin/repairs/{repair_id}", get(get_repair))
}

/// Starts anti-entropy: replicas are compared range by range with Merkle digests and only the
/// keys that differ are exchanged.
#[utoipa::path(post, path = "/v1/admin/repair", tag = "admin",
    request_body = StartRepairBody,
    responses(
        (status = 202, description = "The repair started", body = RepairStartedBody),
        (status = 400, description = "Malformed body", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "A migration or another repair is running", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn start_repair(
    State(state): State<AppState>,
    Caller(call): Caller,
    JsonBody(body): JsonBody<StartRepairBody>,
) -> Result<Response, Problem> {
    let request = StartRepairRequest {
        tenant_id: body.tenant_id.unwrap_or_default(),
    };
    let started = state
        .coordinators
        .call(
            &call,
            request,
            |mut c, r| async move { c.start_repair(r).await },
        )
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok((
        http::StatusCode::ACCEPTED,
        Json(RepairStartedBody {
            repair_id: started.repair_id,
        }),
    )
        .into_response())
}

/// A repair's progress.
#[utoipa::path(get, path = "/v1/admin/repairs/{repair_id}", tag = "admin",
    params(("repair_id" = String, Path, description = "The repair id")),
    responses(
        (status = 200, description = "Its progress", body = RepairBody),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such repair", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_repair(
    State(state): State<AppState>,
    Caller(call): Caller,
    PathParams(repair_id): PathParams<String>,
) -> Result<Json<RepairBody>, Problem> {
    let r = state
        .coordinators
        .call(
            &call,
            GetRepairRequest { repair_id },
            |mut c, r| async move { c.get_repair(r).await },
        )
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok(Json(RepairBody {
        repair_id: r.repair_id,
        state: r.state,
        ranges_total: r.ranges_total,
        ranges_done: r.ranges_done,
        keys_repaired: r.keys_repaired,
        ranges_incomplete: r.ranges_incomplete,
        error: (!r.error.is_empty()).then_some(r.error),
        created_at: r.created_at,
    }))
}

/// Adds a storage node: it takes over its share of every tenant's ranges, streamed to it
/// before it serves reads.
#[utoipa::path(post, path = "/v1/admin/nodes", tag = "admin",
    request_body = AddNodeBody,
    responses(
        (status = 202, description = "The migration started", body = MigrationStartedBody),
        (status = 400, description = "Malformed body, or the node at the address reports another id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Already a member, or another migration is running", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The node does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn add_node(
    State(state): State<AppState>,
    Caller(call): Caller,
    JsonBody(body): JsonBody<AddNodeBody>,
) -> Result<Response, Problem> {
    let request = AddNodeRequest {
        node_id: body.node_id,
        address: body.address,
    };
    let started = state
        .coordinators
        .call(
            &call,
            request,
            |mut c, r| async move { c.add_node(r).await },
        )
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok(accepted(started))
}

/// Decommissions a storage node: its ranges stream to the nodes that take them over before it
/// leaves the ring; stop it once the migration is done.
#[utoipa::path(delete, path = "/v1/admin/nodes/{node_id}", tag = "admin",
    params(("node_id" = String, Path, description = "The node id")),
    responses(
        (status = 202, description = "The migration started", body = MigrationStartedBody),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Not a member", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "A tenant's replication factor would exceed the nodes left, or another migration is running", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn remove_node(
    State(state): State<AppState>,
    Caller(call): Caller,
    PathParams(node_id): PathParams<String>,
) -> Result<Response, Problem> {
    let started = state
        .coordinators
        .call(
            &call,
            RemoveNodeRequest { node_id },
            |mut c, r| async move { c.remove_node(r).await },
        )
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok(accepted(started))
}

/// A migration's progress.
#[utoipa::path(get, path = "/v1/admin/migrations/{migration_id}", tag = "admin",
    params(("migration_id" = String, Path, description = "The migration id")),
    responses(
        (status = 200, description = "Its progress", body = MigrationBody),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such migration", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_migration(
    State(state): State<AppState>,
    Caller(call): Caller,
    PathParams(migration_id): PathParams<String>,
) -> Result<Json<MigrationBody>, Problem> {
    let m = state
        .coordinators
        .call(
            &call,
            GetMigrationRequest { migration_id },
            |mut c, r| async move { c.get_migration(r).await },
        )
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok(Json(m.into()))
}

/// Cancels a migration that has not taken effect: the old placement stays in force at once, and
/// the nodes that were receiving data drop it in the background (`rolling_back`, then
/// `cancelled`). Cancelling again answers the same.
#[utoipa::path(delete, path = "/v1/admin/migrations/{migration_id}", tag = "admin",
    params(("migration_id" = String, Path, description = "The migration id")),
    responses(
        (status = 202, description = "Cancelled; it rolls back in the background", body = MigrationBody),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such migration", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "It has taken effect or finished", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn cancel_migration(
    State(state): State<AppState>,
    Caller(call): Caller,
    PathParams(migration_id): PathParams<String>,
) -> Result<Response, Problem> {
    let m = state
        .coordinators
        .call(
            &call,
            CancelMigrationRequest { migration_id },
            |mut c, r| async move { c.cancel_migration(r).await },
        )
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok((http::StatusCode::ACCEPTED, Json(MigrationBody::from(m))).into_response())
}

/// Lists the storage nodes.
#[utoipa::path(get, path = "/v1/admin/nodes", tag = "admin",
    responses(
        (status = 200, description = "Every storage node", body = [NodeBody]),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin key", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn list_nodes(
    State(state): State<AppState>,
    Caller(call): Caller,
) -> Result<Json<Vec<NodeBody>>, Problem> {
    let listed = state
        .coordinators
        .call(&call, ListNodesRequest {}, |mut c, r| async move {
            c.list_nodes(r).await
        })
        .await
        .map_err(|s| Problem::from_status(&s).with_trace(call.trace.as_ref()))?;
    Ok(Json(
        listed
            .nodes
            .into_iter()
            .map(|n| NodeBody {
                node_id: n.node_id,
                address: n.address,
                state: n.state,
                tokens: n.tokens,
                load_bytes: n.load_bytes,
            })
            .collect(),
    ))
}
