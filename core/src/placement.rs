//! Placements: the ring's nodes and every tenant's replication factor, at one epoch.
//!
//! Any change — a node added or removed, a tenant created or its replication factor changed —
//! produces a placement with a greater epoch. Storage nodes refuse requests routed with an older
//! epoch than the newest they hold, so two coordinators never form non-overlapping quorums.

use std::collections::BTreeMap;

use crate::ring::Ring;

/// Default virtual nodes per storage node.
pub const DEFAULT_VNODES: u32 = 256;

/// Longest storage node id, in bytes. Node ids appear in every clock entry, so bounding them
/// bounds context tokens (see [`crate::version::MAX_CLOCK_ENTRIES`]).
pub const MAX_NODE_ID_LEN: usize = 64;

/// The node id does not match `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid node id: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")]
pub struct InvalidNodeId;

/// Accepts exactly the node ids of `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub fn validate_node_id(id: &str) -> Result<(), InvalidNodeId> {
    let b = id.as_bytes();
    let first_ok = b.first().is_some_and(u8::is_ascii_alphanumeric);
    let rest_ok = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if first_ok && rest_ok && b.len() <= MAX_NODE_ID_LEN {
        Ok(())
    } else {
        Err(InvalidNodeId)
    }
}

/// A storage node's id and gRPC address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeAddr {
    /// Stable node id.
    pub id: String,
    /// `host:port` of its gRPC service.
    pub address: String,
}

/// The ring and per-tenant replication factors at one epoch.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    /// Increases with every change.
    pub epoch: u64,
    /// Virtual nodes per storage node.
    pub vnodes: u32,
    /// The ring's storage nodes.
    pub nodes: Vec<NodeAddr>,
    /// Replication factor of each tenant.
    pub tenants: BTreeMap<String, u32>,
}

impl Placement {
    /// The first placement, epoch 1, of `nodes` with no tenants.
    pub fn initial(nodes: Vec<NodeAddr>, vnodes: u32) -> Self {
        Placement {
            epoch: 1,
            vnodes,
            nodes,
            tenants: BTreeMap::new(),
        }
    }

    /// The ring of this placement's nodes.
    pub fn ring(&self) -> Ring {
        let ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        Ring::new(&ids, self.vnodes)
    }

    /// The address of node `id`, if it is in this placement.
    pub fn address_of(&self, id: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.address.as_str())
    }

    /// A copy with `tenant` at replication factor `rf` and the epoch advanced.
    pub fn with_tenant(&self, tenant: &str, rf: u32) -> Placement {
        let mut next = self.clone();
        next.tenants.insert(tenant.to_owned(), rf);
        next.epoch += 1;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        for ok in ["node-1", "n", "Storage.7_a", &"a".repeat(64)] {
            assert_eq!(validate_node_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-n", ".n", "a b", "n/1", "é", &"a".repeat(65)] {
            assert_eq!(validate_node_id(bad), Err(InvalidNodeId), "{bad}");
        }
    }

    #[test]
    fn changes_advance_the_epoch() {
        let p = Placement::initial(
            vec![NodeAddr {
                id: "a".into(),
                address: "127.0.0.1:1".into(),
            }],
            8,
        );
        let q = p.with_tenant("t", 1);
        assert_eq!(q.epoch, p.epoch + 1);
        assert_eq!(q.tenants.get("t"), Some(&1));
        assert_eq!(q.address_of("a"), Some("127.0.0.1:1"));
        assert_eq!(q.ring().nodes(), ["a".to_owned()]);
    }
}
