//! Placements: the ring's nodes and every tenant's replication factor, at one epoch.
//!
//! Any change — a node added or removed, a tenant created or its replication factor changed —
//! produces a placement with a greater epoch. Storage nodes refuse requests routed with an older
//! epoch than the newest they hold, so two coordinators never form non-overlapping quorums.
//!
//! A membership or replication change runs as a [`Transition`]: while its data streams, the
//! placement names both the ring and RFs in force (the *natural* replicas, which serve reads)
//! and those it moves to (whose new members are *pending* replicas). Writes must then reach the
//! required level in both replica sets (see [`Replicas`]), so whichever set serves reads after
//! the change, it overlaps every acknowledged write.

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
    /// The change in progress, if any (at most one at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
    /// Tokens allocated to nodes as they joined ([`Ring::allocate`]); a node without an entry
    /// owns the tokens derived from its id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, Vec<u64>>,
}

/// A change of ring or replication factors in progress: what the placement becomes once its
/// migration has streamed every range.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Transition {
    /// The migration that drives it.
    pub migration_id: String,
    /// The ring's nodes afterwards.
    pub nodes: Vec<NodeAddr>,
    /// Each tenant's replication factor afterwards.
    pub tenants: BTreeMap<String, u32>,
}

/// Membership state of a storage node in a placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// Receiving ranges: in the ring the transition moves to, not yet in the natural one.
    Joining,
    /// In the ring, and staying.
    Active,
    /// Handing its ranges off: in the natural ring, not in the one the transition moves to.
    Leaving,
}

impl Membership {
    /// `joining`, `active` or `leaving`.
    pub fn as_str(self) -> &'static str {
        match self {
            Membership::Joining => "joining",
            Membership::Active => "active",
            Membership::Leaving => "leaving",
        }
    }
}

/// The replicas of one key: those that serve reads, and during a transition those that will.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replicas {
    /// The natural replicas, in preference order; the first live one leads writes.
    pub natural: Vec<String>,
    /// During a transition, the replicas afterwards (natural ones included, in preference order).
    pub next: Option<Vec<String>>,
}

impl Replicas {
    /// Every node a write goes to: the natural replicas, then the pending ones.
    pub fn all(&self) -> Vec<String> {
        let mut out = self.natural.clone();
        for n in self.next.iter().flatten() {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
        out
    }

    /// The replicas only the transition adds: they count toward the next set's quorum only.
    pub fn pending(&self) -> Vec<String> {
        self.next
            .iter()
            .flatten()
            .filter(|n| !self.natural.contains(n))
            .cloned()
            .collect()
    }

    /// The replica sets a write must reach the level in: the natural one, and the next one
    /// while a transition runs. Each is `(members, required acks)`.
    pub fn quorums(&self, level: crate::Consistency) -> Vec<(Vec<String>, usize)> {
        let mut out = vec![(self.natural.clone(), level.required(self.natural.len()))];
        if let Some(next) = &self.next {
            out.push((next.clone(), level.required(next.len())));
        }
        out
    }
}

impl Placement {
    /// The first placement, epoch 1, of `nodes` with no tenants.
    pub fn initial(nodes: Vec<NodeAddr>, vnodes: u32) -> Self {
        Placement {
            epoch: 1,
            vnodes,
            nodes,
            tenants: BTreeMap::new(),
            transition: None,
            tokens: BTreeMap::new(),
        }
    }

    /// Every node the placement names: the ring's, then those a transition adds.
    pub fn all_nodes(&self) -> Vec<NodeAddr> {
        let mut out = self.nodes.clone();
        if let Some(t) = &self.transition {
            for n in &t.nodes {
                if !out.iter().any(|m| m.id == n.id) {
                    out.push(n.clone());
                }
            }
        }
        out
    }

    /// The ring a transition moves to, if one is in progress.
    pub fn next_ring(&self) -> Option<Ring> {
        self.transition.as_ref().map(|t| {
            let ids: Vec<&str> = t.nodes.iter().map(|n| n.id.as_str()).collect();
            Ring::with_tokens(&ids, self.vnodes, &self.tokens)
        })
    }

    /// The membership state of node `id`, or `None` if the placement does not name it.
    pub fn membership(&self, id: &str) -> Option<Membership> {
        let natural = self.nodes.iter().any(|n| n.id == id);
        let next = self
            .transition
            .as_ref()
            .map(|t| t.nodes.iter().any(|n| n.id == id));
        match (natural, next) {
            (true, None | Some(true)) => Some(Membership::Active),
            (true, Some(false)) => Some(Membership::Leaving),
            (false, Some(true)) => Some(Membership::Joining),
            (false, _) => None,
        }
    }

    /// A copy that starts `transition`, epoch advanced. Tenants the transition does not name
    /// keep their replication factor.
    pub fn begin(&self, mut transition: Transition) -> Placement {
        for (t, rf) in &self.tenants {
            transition.tenants.entry(t.clone()).or_insert(*rf);
        }
        let mut next = self.clone();
        next.transition = Some(transition);
        next.epoch += 1;
        next
    }

    /// A copy with the transition completed — its ring and replication factors in force — and
    /// the epoch advanced; `None` when no transition is in progress.
    pub fn complete(&self) -> Option<Placement> {
        let t = self.transition.as_ref()?;
        let mut tokens = self.tokens.clone();
        tokens.retain(|id, _| t.nodes.iter().any(|n| &n.id == id));
        Some(Placement {
            epoch: self.epoch + 1,
            vnodes: self.vnodes,
            nodes: t.nodes.clone(),
            tenants: t.tenants.clone(),
            transition: None,
            tokens,
        })
    }

    /// A copy with the transition abandoned — the ring and replication factors in force stay —
    /// and the epoch advanced; `None` when no transition is in progress.
    pub fn abandon(&self) -> Option<Placement> {
        self.transition.as_ref()?;
        let mut next = self.clone();
        next.transition = None;
        next.tokens
            .retain(|id, _| self.nodes.iter().any(|n| &n.id == id));
        next.epoch += 1;
        Some(next)
    }

    /// A copy without tenant `tenant`, epoch advanced.
    pub fn without_tenant(&self, tenant: &str) -> Placement {
        let mut next = self.clone();
        next.tenants.remove(tenant);
        if let Some(t) = &mut next.transition {
            t.tenants.remove(tenant);
        }
        next.epoch += 1;
        next
    }

    /// The ring of this placement's nodes.
    pub fn ring(&self) -> Ring {
        let ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        Ring::with_tokens(&ids, self.vnodes, &self.tokens)
    }

    /// The address of node `id`, if this placement names it (a joining node included).
    pub fn address_of(&self, id: &str) -> Option<&str> {
        self.nodes
            .iter()
            .chain(self.transition.iter().flat_map(|t| t.nodes.iter()))
            .find(|n| n.id == id)
            .map(|n| n.address.as_str())
    }

    /// A copy with `tenant` at replication factor `rf` and the epoch advanced. During a
    /// transition the tenant has `rf` on both sides: it holds no data to stream yet.
    pub fn with_tenant(&self, tenant: &str, rf: u32) -> Placement {
        let mut next = self.clone();
        next.tenants.insert(tenant.to_owned(), rf);
        if let Some(t) = &mut next.transition {
            t.tenants.insert(tenant.to_owned(), rf);
        }
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

    fn addr(id: &str) -> NodeAddr {
        NodeAddr {
            id: id.into(),
            address: format!("{id}:1"),
        }
    }

    #[test]
    fn a_transition_names_both_sides_until_it_completes() {
        let p = Placement::initial(vec![addr("a"), addr("b")], 8).with_tenant("t", 2);
        let q = p.begin(Transition {
            migration_id: "m".into(),
            nodes: vec![addr("b"), addr("c")],
            tenants: BTreeMap::new(),
        });
        assert_eq!(q.epoch, p.epoch + 1);
        assert_eq!(q.membership("a"), Some(Membership::Leaving));
        assert_eq!(q.membership("b"), Some(Membership::Active));
        assert_eq!(q.membership("c"), Some(Membership::Joining));
        assert_eq!(q.membership("d"), None);
        assert_eq!(q.address_of("c"), Some("c:1"));
        assert_eq!(q.all_nodes().len(), 3);
        // Tenants the transition does not name keep their RF; new ones get theirs on both sides.
        let mut q = q.with_tenant("u", 1);
        q.tokens.insert("a".into(), vec![1, 2]);
        q.tokens.insert("c".into(), vec![3, 4]);
        // The ring after names c with its allocated tokens; a leaving node's go with it.
        assert!(q.next_ring().is_some_and(|r| r.holds_any("c", 1, 4, 4)));
        assert_eq!(
            q.complete()
                .map(|d| d.tokens.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["c".to_string()])
        );
        let t = q.transition.as_ref().map(|t| t.tenants.clone());
        assert_eq!(t.and_then(|t| t.get("t").copied()), Some(2));
        let done = q
            .complete()
            .map(|d| (d.epoch, d.nodes, d.tenants.get("u").copied()));
        assert_eq!(
            done,
            Some((q.epoch + 1, vec![addr("b"), addr("c")], Some(1)))
        );
        assert!(p.complete().is_none());
        assert!(p.abandon().is_none());
        let back = q.abandon().map(|b| (b.epoch, b.nodes, b.transition));
        assert_eq!(back, Some((q.epoch + 1, q.nodes.clone(), None)));
        let r = q.without_tenant("t");
        assert!(!r.tenants.contains_key("t"));
        assert!(r.transition.is_some_and(|t| !t.tenants.contains_key("t")));
    }

    #[test]
    fn a_write_needs_the_level_on_both_sides() {
        let r = Replicas {
            natural: vec!["a".into(), "b".into(), "c".into()],
            next: Some(vec!["a".into(), "b".into(), "d".into()]),
        };
        assert_eq!(r.all(), ["a", "b", "c", "d"]);
        assert_eq!(r.pending(), ["d"]);
        let q = r.quorums(crate::Consistency::Quorum);
        assert_eq!(q.len(), 2);
        assert_eq!((q[0].1, q[1].1), (2, 2));
        let stable = Replicas { next: None, ..r };
        assert_eq!(stable.quorums(crate::Consistency::All).len(), 1);
    }
}
