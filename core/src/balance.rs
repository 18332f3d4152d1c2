//! How evenly a [`Ring`] spreads the key space, and how much of it a ring change moves: the
//! measures behind `make ring-sim`.

use std::collections::HashMap;

use crate::ring::Ring;

/// Length of the arc `(start, end]` on the 2^64 token ring, as a fraction of the ring (a ring
/// of one token is the whole ring).
fn share(start: u64, end: u64) -> f64 {
    let len = if start == end {
        1u128 << 64
    } else {
        u128::from(end.wrapping_sub(start))
    };
    len as f64 / 2f64.powi(64)
}

/// The fraction of the key space each node of `ring` holds a replica of at replication factor
/// `rf`: summed over nodes, `min(rf, nodes)`.
pub fn ownership(ring: &Ring, rf: usize) -> HashMap<String, f64> {
    let mut owned: HashMap<String, f64> = ring.nodes().iter().map(|n| (n.clone(), 0.0)).collect();
    let arcs = ring.arcs();
    let whole = arcs.len() == 1;
    for (start, end) in arcs {
        // Two nodes' tokens may collide: their arc between is empty, not the whole ring.
        let w = if start == end && !whole {
            0.0
        } else {
            share(start, end)
        };
        for node in ring.preference_list(end, rf) {
            if let Some(o) = owned.get_mut(node) {
                *o += w;
            }
        }
    }
    owned
}

/// What a change from `before` to `after` moves at replication factor `rf`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Movement {
    /// The fraction of all replicas (key space × `rf`) that land on a node that did not hold
    /// them before: the data streamed.
    pub moved: f64,
    /// Of `moved`, the fraction that lands on nodes other than those `after` adds: zero when
    /// only the new nodes receive data.
    pub to_old_nodes: f64,
}

/// The replicas that change hands between `before` and `after`, compared on every arc of the
/// union of both rings' tokens.
pub fn movement(before: &Ring, after: &Ring, rf: usize) -> Movement {
    let mut bounds: Vec<u64> = before
        .arcs()
        .iter()
        .chain(after.arcs().iter())
        .map(|(_, end)| *end)
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let Some(&last) = bounds.last() else {
        return Movement::default();
    };
    let total = rf.min(after.nodes().len()).max(1) as f64;
    let mut out = Movement::default();
    let mut start = last;
    for &end in &bounds {
        let w = share(start, end);
        start = end;
        let old = before.preference_list(end, rf);
        for node in after.preference_list(end, rf) {
            if !old.contains(&node) {
                out.moved += w / total;
                if before.nodes().iter().any(|n| n == node) {
                    out.to_old_nodes += w / total;
                }
            }
        }
    }
    out
}

/// Summary of [`ownership`]: the largest and smallest node's share over the mean.
pub fn spread(owned: &HashMap<String, f64>) -> (f64, f64) {
    if owned.is_empty() {
        return (1.0, 1.0);
    }
    let mean = owned.values().sum::<f64>() / owned.len() as f64;
    if mean <= 0.0 {
        return (1.0, 1.0);
    }
    let max = owned.values().copied().fold(f64::MIN, f64::max);
    let min = owned.values().copied().fold(f64::MAX, f64::min);
    (max / mean, min / mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn replica_assignments_are_balanced() {
        let ring = Ring::new(&nodes(10), 256);
        let owned = ownership(&ring, 3);
        let mean = owned.values().sum::<f64>() / owned.len() as f64;
        assert!(
            (mean - 0.3).abs() < 1e-9,
            "RF 3 over 10 nodes: mean 0.3, got {mean}"
        );
        let (max, min) = spread(&owned);
        assert!(max <= 1.1, "max/mean = {max}");
        assert!(min >= 0.9, "min/mean = {min}");
    }

    #[test]
    fn adding_a_node_moves_little_and_only_to_it() {
        let before = Ring::new(&nodes(10), 256);
        let after = Ring::new(&nodes(11), 256);
        let m = movement(&before, &after, 3);
        assert_eq!(m.to_old_nodes, 0.0, "an assignment moved to an old node");
        assert!(m.moved > 0.0);
        assert!(m.moved <= 1.0 / 11.0 + 0.02, "moved {}", m.moved);
    }

    #[test]
    fn removing_a_node_moves_only_its_share() {
        let before = Ring::new(&nodes(11), 256);
        let after = Ring::new(&nodes(10), 256);
        let m = movement(&before, &after, 3);
        let gone = ownership(&before, 3)["node-10"] / 3.0;
        assert!(
            (m.moved - gone).abs() < 1e-9,
            "moved {} vs its share {gone}",
            m.moved
        );
    }

    #[test]
    fn an_unchanged_ring_moves_nothing() {
        let ring = Ring::new(&nodes(5), 16);
        assert_eq!(movement(&ring, &ring, 3), Movement::default());
        let empty = Ring::new::<String>(&[], 16);
        assert_eq!(movement(&empty, &empty, 3), Movement::default());
        assert_eq!(spread(&ownership(&empty, 3)), (1.0, 1.0));
    }
}
