//! Placements: the ring's nodes and every tenant's replication factor, at one epoch.
//!
//! Any change — a node added or removed, a tenant created or its replication factor changed —
//! produces a placement with a greater epoch. Storage nodes refuse requests routed with an older
//! epoch than the newest they hold, so two coordinators never form non-overlapping quorums.

use std::collections::BTreeMap;

use crate::ring::Ring;

/// Default virtual nodes per storage node.
pub const DEFAULT_VNODES: u32 = 256;

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
