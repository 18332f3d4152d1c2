//! Cluster administration (`/v1/admin/…`, admin key; the coordinator authorizes).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use pairdb_proto::coordinator::ListNodesRequest;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::Caller;
use crate::problem::{Problem, ProblemBody};
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

/// The admin routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/admin/nodes", get(list_nodes))
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
