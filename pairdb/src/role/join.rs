//! `pairdb storage --join URL`: a new storage node registers itself with the cluster, as
//! Cassandra's auto-bootstrap does, so scaling a StatefulSet up needs no manual call.
//!
//! Once the node serves, it asks a coordinator (`URL`, its gRPC address) whether it is a member
//! already — a restarted member does nothing — and otherwise asks to be added, which starts the
//! migration that streams its share of the data to it. While another migration runs (several
//! nodes scaled up at once join one after the other), or while the cluster cannot be reached,
//! it retries with backoff. Removal stays an explicit administrator's call.

use std::time::Duration;

use pairdb_proto::coordinator::coordinator_client::CoordinatorClient;
use pairdb_proto::coordinator::{AddNodeRequest, ListNodesRequest};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Endpoint;

/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Registers node `node_id`, reachable at `address`, through the coordinator at `url` with the
/// admin key; returns once it is a member (or a migration adding it has started). Runs until
/// then, retrying; cancel it by dropping the future.
pub async fn join(url: String, node_id: String, address: String, admin_key: String) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match attempt(&url, &node_id, &address, &admin_key).await {
            Ok(Some(migration)) => {
                tracing::info!(node = %node_id, %address, %migration,
                    "joined the cluster: its share of the data is streaming to it");
                return;
            }
            Ok(None) => {
                tracing::info!(node = %node_id, "already a member of the cluster");
                return;
            }
            Err(error) => {
                tracing::warn!(node = %node_id, %url, %error, retry_in = ?backoff,
                    "cannot join the cluster yet");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One try: `Ok(None)` when the node is a member already, `Ok(Some(id))` when a migration
/// adding it started.
async fn attempt(
    url: &str,
    node_id: &str,
    address: &str,
    admin_key: &str,
) -> Result<Option<String>, String> {
    let channel = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("invalid --join URL {url:?}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let bearer = AsciiMetadataValue::try_from(format!("Bearer {admin_key}"))
        .map_err(|_| "the admin key is not a valid header value".to_owned())?;
    let mut client =
        CoordinatorClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        });
    let nodes = client
        .list_nodes(ListNodesRequest {})
        .await
        .map_err(|s| format!("listing nodes: {}", s.message()))?
        .into_inner()
        .nodes;
    if nodes.iter().any(|n| n.node_id == node_id) {
        return Ok(None);
    }
    let started = client
        .add_node(AddNodeRequest {
            node_id: node_id.to_owned(),
            address: address.to_owned(),
        })
        .await
        .map_err(|s| format!("adding the node: {}", s.message()))?;
    Ok(Some(started.into_inner().migration_id))
}
