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

/// How much more a node's loss counts per unit of its excess over the mean share.
const EXCESS_WEIGHT: f64 = 32.0;

/// How hard a joining node is kept on course for its share, against taking from the heaviest.
const STEER: f64 = 0.25;

/// Hashed candidate positions weighed for each token a joining node is allocated.
pub const CANDIDATES: u32 = 16;
/// Candidates at the middles of the widest arcs, weighed besides the hashed ones.
const WIDEST: usize = 8;

/// Candidate `c` for token `v` of `node`: a stable function of all three.
fn candidate(node: &str, v: u32, c: u32) -> u64 {
    xxh3_64_with_seed(
        node.as_bytes(),
        (u64::from(v) << 32 | u64::from(c))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0xA076_1D64_78BD_642F),
    )
}

/// A token and the index of its owner.
type Slot = (u64, usize);
/// A node's index and a share of the ring (or a change of it).
type Share = (usize, f64);

/// The replicated share each arc of `seq` (tokens in ring order with their owners) gives its
/// replicas: for each arc `(s[i-1], s[i]]` whose first `rf` distinct owners clockwise from
/// `s[i]` lie within `seq`, `(owner, width)` for each of them, widths as fractions of the ring.
/// `cyclic`: `seq` is the whole ring (the first arc wraps, walks wrap).
fn shares(seq: &[(u64, usize)], rf: usize, cyclic: bool) -> Vec<(usize, f64)> {
    let len = seq.len();
    let mut out = Vec::new();
    let ring = 2f64.powi(64);
    let first = usize::from(!cyclic);
    let mut found: Vec<usize> = Vec::with_capacity(rf);
    for i in first..len {
        let prev = if i == 0 { seq[len - 1].0 } else { seq[i - 1].0 };
        let w = if len == 1 {
            1.0
        } else {
            seq[i].0.wrapping_sub(prev) as f64 / ring
        };
        found.clear();
        let steps = if cyclic { len } else { len - i };
        for k in 0..steps {
            let owner = seq[(i + k) % len].1;
            if !found.contains(&owner) {
                found.push(owner);
                if found.len() == rf {
                    break;
                }
            }
        }
        // A walk that ran off the window's end is unknown here (and the same either way).
        if found.len() == rf || cyclic {
            out.extend(found.iter().map(|o| (*o, w)));
        }
    }
    out
}

/// How each node's replicated share changes when `fresh` takes token `p`: computed on the
/// tokens around `p` (far enough that every arc whose replicas change is seen).
fn insertion_delta(
    map: &std::collections::BTreeMap<u64, usize>,
    p: u64,
    fresh: usize,
    rf: usize,
) -> Vec<(usize, f64)> {
    let reach = 4 * rf + 4;
    let whole = map.len() <= 2 * reach + 2;
    let (before, after): (Vec<Slot>, Vec<Slot>) = if whole {
        let mut with: Vec<(u64, usize)> = map.iter().map(|(t, i)| (*t, *i)).collect();
        let without = with.clone();
        let at = with.partition_point(|(t, _)| *t < p);
        with.insert(at, (p, fresh));
        (without, with)
    } else {
        let mut lower: Vec<(u64, usize)> = map
            .range(..p)
            .rev()
            .chain(map.range(p..).rev())
            .take(reach)
            .map(|(t, i)| (*t, *i))
            .collect();
        lower.reverse();
        let upper: Vec<(u64, usize)> = map
            .range(p..)
            .chain(map.range(..p))
            .take(reach)
            .map(|(t, i)| (*t, *i))
            .collect();
        let mut without = lower.clone();
        without.extend(upper.iter().copied());
        let mut with = lower;
        with.push((p, fresh));
        with.extend(upper);
        (without, with)
    };
    let mut delta: Vec<(usize, f64)> = Vec::new();
    let mut add = |o: usize, d: f64| match delta.iter_mut().find(|(x, _)| *x == o) {
        Some(e) => e.1 += d,
        None => delta.push((o, d)),
    };
    for (o, w) in shares(&after, rf, whole) {
        add(o, w);
    }
    for (o, w) in shares(&before, rf, whole) {
        add(o, -w);
    }
    delta.retain(|(_, d)| d.abs() > 0.0);
    delta
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
        Ring::with_tokens(nodes, vnodes, &std::collections::BTreeMap::new())
    }

    /// Builds the ring of `nodes`: a node with an entry in `assigned` owns exactly those tokens
    /// (allocated when it joined, see [`allocate`](Self::allocate)); any other owns the `vnodes`
    /// tokens derived from its id. Duplicate ids are ignored.
    pub fn with_tokens<S: AsRef<str>>(
        nodes: &[S],
        vnodes: u32,
        assigned: &std::collections::BTreeMap<String, Vec<u64>>,
    ) -> Ring {
        let mut ids: Vec<String> = nodes.iter().map(|s| s.as_ref().to_owned()).collect();
        ids.sort();
        ids.dedup();
        let mut tokens = Vec::with_capacity(ids.len() * vnodes as usize);
        for (i, id) in ids.iter().enumerate() {
            match assigned.get(id) {
                Some(own) => tokens.extend(own.iter().map(|t| (*t, i as u32))),
                None => tokens.extend((0..vnodes).map(|v| (vnode_token(id, v), i as u32))),
            }
        }
        tokens.sort_unstable();
        Ring { nodes: ids, tokens }
    }

    /// Tokens for node `node` joining this ring, for replication factor `rf`: `vnodes` of them,
    /// each the best of [`CANDIDATES`] positions derived from the node's id — the one that takes
    /// the most from the nodes holding more than their share. A token at `p` makes the new node
    /// a replica of the `rf` arcs before `p` and takes them from the owners of the `rf` tokens
    /// after it, so choosing where it lands steers load from the heaviest nodes; random tokens
    /// leave whatever imbalance chance makes. A pure function of the ring's tokens and the id:
    /// every coordinator allocates the same tokens (see `make ring-sim` for the figures).
    pub fn allocate(&self, node: &str, vnodes: u32, rf: usize) -> Vec<u64> {
        use std::collections::BTreeMap;
        let n = self.nodes.len();
        if n == 0 || self.tokens.is_empty() {
            return (0..vnodes).map(|v| vnode_token(node, v)).collect();
        }
        let rf = rf.clamp(1, n + 1);
        let fresh = n;
        let mut map: BTreeMap<u64, usize> =
            self.tokens.iter().map(|(t, i)| (*t, *i as usize)).collect();
        // Each node's replicated share now, exactly as preference lists assign it.
        let seq: Vec<(u64, usize)> = map.iter().map(|(t, i)| (*t, *i)).collect();
        let mut load = vec![0f64; n + 1];
        for (owner, w) in shares(&seq, rf, true) {
            load[owner] += w;
        }
        let mean = load.iter().sum::<f64>() / (n + 1) as f64;
        // The widest arcs, widest first: where the ring is least even. (start, end) pairs that
        // are no longer arcs are skipped when met.
        let mut widest: std::collections::BinaryHeap<(u64, u64, u64)> = seq
            .iter()
            .enumerate()
            .map(|(i, (t, _))| {
                let prev = seq[(i + seq.len() - 1) % seq.len()].0;
                (t.wrapping_sub(prev), prev, *t)
            })
            .collect();
        let mut out = Vec::with_capacity(vnodes as usize);
        for v in 0..vnodes {
            let course = mean * f64::from(v + 1) / f64::from(vnodes.max(1));
            // Hashed candidates, and the middles of the widest arcs.
            let mut candidates: Vec<u64> = (0..CANDIDATES).map(|c| candidate(node, v, c)).collect();
            let mut kept = Vec::new();
            while kept.len() < WIDEST {
                let Some((w, a, b)) = widest.pop() else { break };
                let current = map
                    .range(a.wrapping_add(1)..)
                    .chain(map.range(..=a))
                    .next()
                    .is_some_and(|(t, _)| *t == b);
                if current && map.contains_key(&a) {
                    candidates.push(a.wrapping_add(w / 2));
                    kept.push((w, a, b));
                }
            }
            widest.extend(kept);
            // (score, token, each node's change of share)
            let mut best: Option<(f64, u64, Vec<Share>)> = None;
            for p in candidates {
                if map.contains_key(&p) {
                    continue;
                }
                let delta = insertion_delta(&map, p, fresh, rf);
                // Take from those above their share, keeping the new node on course for its
                // own share after its last token.
                let taken: f64 = delta
                    .iter()
                    .filter(|(o, _)| *o != fresh)
                    .map(|(o, d)| {
                        // The further above its share, the more a node's loss counts.
                        let excess = (load[*o] - mean) / mean;
                        -d * excess * (1.0 + excess.abs() * EXCESS_WEIGHT)
                    })
                    .sum::<f64>()
                    * mean;
                let gain: f64 = delta
                    .iter()
                    .filter(|(o, _)| *o == fresh)
                    .map(|(_, d)| d)
                    .sum();
                let ahead = (load[fresh] + gain - course).max(0.0);
                let score = taken - STEER * mean * ahead;
                if best.as_ref().is_none_or(|(s, ..)| score > *s) {
                    best = Some((score, p, delta));
                }
            }
            let Some((_, p, delta)) = best else {
                continue;
            };
            for (o, d) in delta {
                if let Some(l) = load.get_mut(o) {
                    *l += d;
                }
            }
            let a = map
                .range(..p)
                .next_back()
                .or_else(|| map.iter().next_back())
                .map(|(t, _)| *t);
            let b = map
                .range(p..)
                .next()
                .or_else(|| map.iter().next())
                .map(|(t, _)| *t);
            if let (Some(a), Some(b)) = (a, b) {
                widest.push((p.wrapping_sub(a), a, p));
                widest.push((b.wrapping_sub(p), p, b));
            }
            map.insert(p, fresh);
            out.push(p);
        }
        out.sort_unstable();
        out
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
    fn allocated_tokens_are_deterministic_fresh_and_even_out_shares() {
        let ids = nodes(3);
        let mut assigned = std::collections::BTreeMap::new();
        let mut all = ids.clone();
        for i in 3..10 {
            let ring = Ring::with_tokens(&all, 64, &assigned);
            let id = format!("node-{i}");
            let tokens = ring.allocate(&id, 64, 3);
            assert_eq!(tokens, ring.allocate(&id, 64, 3), "deterministic");
            assert_eq!(tokens.len(), 64);
            let mut distinct = tokens.clone();
            distinct.dedup();
            assert_eq!(distinct.len(), 64);
            assert!(
                tokens
                    .iter()
                    .all(|t| !ring.tokens.iter().any(|(x, _)| x == t))
            );
            assigned.insert(id.clone(), tokens);
            all.push(id);
        }
        let allocated = Ring::with_tokens(&all, 64, &assigned);
        let random = Ring::new(&all, 64);
        let (max_a, min_a) = crate::balance::spread(&crate::balance::ownership(&allocated, 3));
        let (max_r, min_r) = crate::balance::spread(&crate::balance::ownership(&random, 3));
        assert!(
            max_a < max_r && min_a > min_r,
            "allocated {max_a}/{min_a}, random {max_r}/{min_r}"
        );
        assert!(max_a < 1.05, "{max_a}");
        // A node with an entry owns exactly those tokens.
        let one = Ring::with_tokens(&["a"], 4, &[("a".to_string(), vec![7, 9])].into());
        assert_eq!(one.arcs(), [(9, 7), (7, 9)]);
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
