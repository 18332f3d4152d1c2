//! Consistent hashing with deterministic virtual nodes.
//!
//! Every node owns `vnodes` tokens derived from its id alone, so any process that knows the node
//! ids builds the identical ring. A key's preference list is the first `n` distinct nodes found
//! walking clockwise from the key's token.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The token of virtual node `index` of `node_id`: a stable function of both.
pub fn vnode_token(node_id: &str, index: u32) -> u64 {
    xxh3_64_with_seed(
        node_id.as_bytes(),
        u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// A ring of virtual-node tokens over a set of nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    nodes: Vec<String>,
    /// `(token, index into nodes)`, sorted by token, ties broken by node id.
    tokens: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds the ring of `nodes`, each with `vnodes` tokens. Duplicate ids are ignored.
    pub fn new<S: AsRef<str>>(nodes: &[S], vnodes: u32) -> Ring {
        let mut ids: Vec<String> = nodes.iter().map(|s| s.as_ref().to_owned()).collect();
        ids.sort();
        ids.dedup();
        let mut tokens = Vec::with_capacity(ids.len() * vnodes as usize);
        for (i, id) in ids.iter().enumerate() {
            for v in 0..vnodes {
                tokens.push((vnode_token(id, v), i as u32));
            }
        }
        tokens.sort_unstable();
        Ring { nodes: ids, tokens }
    }

    /// Node ids on the ring, sorted.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The first `n` distinct nodes clockwise from `token` (fewer if the ring has fewer nodes).
    /// The first is the key's natural leader.
    pub fn preference_list(&self, token: u64, n: usize) -> Vec<&str> {
        let want = n.min(self.nodes.len());
        let mut out: Vec<&str> = Vec::with_capacity(want);
        if want == 0 || self.tokens.is_empty() {
            return out;
        }
        let start = self.tokens.partition_point(|(t, _)| *t < token);
        let mut seen = vec![false; self.nodes.len()];
        for i in 0..self.tokens.len() {
            let (_, idx) = self.tokens[(start + i) % self.tokens.len()];
            let idx = idx as usize;
            if !seen[idx] {
                seen[idx] = true;
                out.push(self.nodes[idx].as_str());
                if out.len() == want {
                    break;
                }
            }
        }
        out
    }

    /// Whether `node` is among the first `n` nodes of the preference list of any token in the
    /// inclusive range `[start, end]`: whether it holds any part of that range at replication
    /// factor `n`.
    pub fn holds_any(&self, node: &str, n: usize, start: u64, end: u64) -> bool {
        if start > end || !self.nodes.iter().any(|id| id == node) {
            return false;
        }
        // Each arc meeting the range ends at a ring token inside it, or is the arc holding `end`.
        let from = self.tokens.partition_point(|(t, _)| *t < start);
        let inside = self
            .tokens
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|(t, _)| *t <= end)
            .map(|(t, _)| *t);
        inside
            .chain(std::iter::once(end))
            .any(|t| self.preference_list(t, n).contains(&node))
    }

    /// The ring's arcs: for each vnode token `t` (sorted), the arc `(previous token, t]` whose keys
    /// map to the same preference list as `t`. Yields `(start_exclusive, end_inclusive)` token
    /// pairs covering the whole ring; the first arc wraps around zero.
    pub fn arcs(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(self.tokens.len());
        for (i, (t, _)) in self.tokens.iter().enumerate() {
            let prev = if i == 0 {
                self.tokens.last().map_or(0, |(p, _)| *p)
            } else {
                self.tokens[i - 1].0
            };
            out.push((prev, *t));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn preference_lists_are_distinct_and_deterministic() {
        let ring = Ring::new(&nodes(5), 64);
        let again = Ring::new(&nodes(5).into_iter().rev().collect::<Vec<_>>(), 64);
        for t in [0u64, 1, u64::MAX / 3, u64::MAX] {
            let p = ring.preference_list(t, 3);
            assert_eq!(p.len(), 3);
            assert_ne!(p[0], p[1]);
            assert_ne!(p[1], p[2]);
            assert_ne!(p[0], p[2]);
            assert_eq!(p, again.preference_list(t, 3));
        }
        assert_eq!(ring.preference_list(7, 9).len(), 5);
        assert!(Ring::new::<String>(&[], 8).preference_list(1, 3).is_empty());
    }

    #[test]
    fn holds_any_matches_the_preference_lists_of_the_range() {
        let ring = Ring::new(&nodes(4), 16);
        for (start, end) in [(0, u64::MAX), (5, 5), (u64::MAX / 3, u64::MAX / 2)] {
            for node in ring.nodes() {
                let step = ((end - start) / 997).max(1);
                let sampled = (0..=997u64)
                    .map(|i| start.saturating_add(i.saturating_mul(step)).min(end))
                    .any(|t| ring.preference_list(t, 2).contains(&node.as_str()));
                // Sampling can only miss ownership, never invent it.
                if sampled {
                    assert!(
                        ring.holds_any(node, 2, start, end),
                        "{node} [{start}, {end}]"
                    );
                }
            }
        }
        // Every node holds some of the whole ring; nobody holds an empty range.
        assert!(
            ring.nodes()
                .iter()
                .all(|n| ring.holds_any(n, 1, 0, u64::MAX))
        );
        assert!(!ring.holds_any("node-0", 3, 9, 8));
        assert!(!ring.holds_any("stranger", 3, 0, u64::MAX));
    }
}
