//! What a placement transition moves: the token ranges whose replicas change, and for each, who
//! streams to whom and who drops it afterwards.
//!
//! Ranges are the arcs of the union of both rings' tokens, where both preference lists are
//! constant; adjacent arcs with the same lists are merged. For each range the plan keeps every
//! write acknowledged at a level on the old replicas acknowledged at that level on the new ones
//! (the law `streaming_preserves_every_quorum` states it):
//!
//! * a new replica that takes the place of a leaving one receives the leaving one's data — the
//!   exact copy, so the new set holds each version on as many replicas as the old one did
//!   (streaming from an arbitrary replica could miss a write a quorum acknowledged elsewhere);
//! * a new replica with no one leaving (the RF grows) receives every old replica's data;
//! * a leaving replica with no one replacing it (the RF shrinks) sends its data to every
//!   replica afterwards.

use std::collections::BTreeMap;

use crate::ring::Ring;

/// An inclusive token range `[start, end]` of one tenant whose replicas change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeMove {
    /// The tenant (namespace).
    pub tenant: String,
    /// First token, inclusive.
    pub start: u64,
    /// Last token, inclusive.
    pub end: u64,
    /// Replicas before, in preference order.
    pub from: Vec<String>,
    /// Replicas after, in preference order.
    pub to: Vec<String>,
}

/// One stream of a range: `target` receives what `sources` hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// The node that receives.
    pub target: String,
    /// The nodes whose data it receives (all of them, merged).
    pub sources: Vec<String>,
}

impl RangeMove {
    /// The streams that bring this range's new replica set up to date (see the module docs).
    pub fn streams(&self) -> Vec<Stream> {
        let new = self.arriving();
        let leaving = self.leaving();
        let mut out = Vec::new();
        for (i, target) in new.iter().enumerate() {
            let sources = match leaving.get(i) {
                Some(l) => vec![l.clone()],
                None => self.from.clone(),
            };
            out.push(Stream {
                target: target.clone(),
                sources,
            });
        }
        let unpaired: Vec<String> = leaving.iter().skip(new.len()).cloned().collect();
        if !unpaired.is_empty() {
            // Nobody takes these replicas' place: every replica afterwards receives their data.
            for target in &self.to {
                match out.iter_mut().find(|s| &s.target == target) {
                    Some(s) => s.sources.extend(unpaired.iter().cloned()),
                    None => out.push(Stream {
                        target: target.clone(),
                        sources: unpaired.clone(),
                    }),
                }
            }
        }
        out
    }

    /// Replicas that hold the range after and not before: they receive it while the change runs
    /// (and drop what they received if it is cancelled).
    pub fn arriving(&self) -> Vec<String> {
        self.to
            .iter()
            .filter(|n| !self.from.contains(n))
            .cloned()
            .collect()
    }

    /// Replicas that hold the range before and not after: they drop it once the change is
    /// complete everywhere.
    pub fn leaving(&self) -> Vec<String> {
        self.from
            .iter()
            .filter(|n| !self.to.contains(n))
            .cloned()
            .collect()
    }
}

/// Every range of every tenant whose replicas differ between `(from, rf_from)` and `(to,
/// rf_to)`. Tenants are `(tenant, rf before, rf after)`; the result is in a fixed order (tenants
/// as given, then tokens ascending), so a migration can count its progress by index. Holds every
/// move at once: for many tenants, walk a [`Plan`] instead.
pub fn range_moves(from: &Ring, to: &Ring, tenants: &[(String, u32, u32)]) -> Vec<RangeMove> {
    Plan::new(from, to, tenants).iter().collect()
}

/// The moves of [`range_moves`], computed once per distinct pair of replication factors and
/// handed out by index: its memory grows with the ring, not with the number of tenants.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    tenants: Vec<(String, u32, u32)>,
    /// The ranges that move for each `(rf before, rf after)`, tenant-less.
    shapes: std::collections::HashMap<(u32, u32), Vec<RangeMove>>,
    /// Index of each tenant's first move.
    offsets: Vec<usize>,
    len: usize,
}

impl Plan {
    /// The plan of a change from `from` to `to` for `tenants` (`(tenant, rf before, rf after)`).
    pub fn new(from: &Ring, to: &Ring, tenants: &[(String, u32, u32)]) -> Plan {
        let mut shapes = std::collections::HashMap::new();
        let mut offsets = Vec::with_capacity(tenants.len());
        let mut len = 0;
        for (_, rf_from, rf_to) in tenants {
            let shape = shapes
                .entry((*rf_from, *rf_to))
                .or_insert_with(|| shape_moves(from, to, *rf_from, *rf_to));
            offsets.push(len);
            len += shape.len();
        }
        Plan {
            tenants: tenants.to_vec(),
            shapes,
            offsets,
            len,
        }
    }

    /// How many moves.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing moves.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Move `i`, in [`range_moves`]'s order.
    pub fn get(&self, i: usize) -> Option<RangeMove> {
        if i >= self.len {
            return None;
        }
        let t = self.offsets.partition_point(|o| *o <= i).checked_sub(1)?;
        let (tenant, rf_from, rf_to) = self.tenants.get(t)?;
        let shape = self.shapes.get(&(*rf_from, *rf_to))?;
        let mut m = shape.get(i - self.offsets.get(t)?)?.clone();
        m.tenant = tenant.clone();
        Some(m)
    }

    /// Every move in order.
    pub fn iter(&self) -> impl Iterator<Item = RangeMove> + '_ {
        (0..self.len).filter_map(|i| self.get(i))
    }
}

/// The moves of one `(rf before, rf after)` pair, with an empty tenant.
fn shape_moves(from: &Ring, to: &Ring, rf_from: u32, rf_to: u32) -> Vec<RangeMove> {
    let mut out = Vec::new();
    let mut current: Option<RangeMove> = None;
    for (start, end, rep) in pieces(&[from, to]) {
        let before: Vec<String> = own(from.preference_list(rep, rf_from as usize));
        let after: Vec<String> = own(to.preference_list(rep, rf_to as usize));
        if let Some(c) = &mut current
            && c.from == before
            && c.to == after
            && c.end.wrapping_add(1) == start
        {
            c.end = end;
            continue;
        }
        if let Some(done) = current.take() {
            out.push(done);
        }
        if same_set(&before, &after) {
            continue;
        }
        current = Some(RangeMove {
            tenant: String::new(),
            start,
            end,
            from: before,
            to: after,
        });
    }
    out.extend(current);
    out
}

/// The token space cut at every token of `rings` into inclusive ranges `(start, end, rep)`, in
/// token order, where `rep` (the end of the arc holding the range) has the same preference list
/// in each ring as every token of the range. The arc that wraps past zero is split in two.
fn pieces(rings: &[&Ring]) -> Vec<(u64, u64, u64)> {
    let mut bounds: Vec<u64> = rings
        .iter()
        .flat_map(|r| r.arcs())
        .map(|(_, end)| end)
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<(u64, u64, u64)> = Vec::with_capacity(bounds.len() + 1);
    match (bounds.first(), bounds.last()) {
        (Some(&first), Some(&last)) => {
            out.push((0, first, first));
            for w in bounds.windows(2) {
                out.push((w[0] + 1, w[1], w[1]));
            }
            if last < u64::MAX {
                out.push((last + 1, u64::MAX, first));
            }
        }
        _ => out.push((0, u64::MAX, 0)),
    }
    out
}

fn own(v: Vec<&str>) -> Vec<String> {
    v.into_iter().map(str::to_owned).collect()
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// The ring cut into inclusive token ranges whose replica set at `rf` is constant (adjacent
/// arcs with the same preference list merged), covering the whole token space, ascending:
/// what anti-entropy repairs range by range.
pub fn replica_ranges(ring: &Ring, rf: u32) -> Vec<(u64, u64, Vec<String>)> {
    let pieces = pieces(&[ring]);
    let mut out: Vec<(u64, u64, Vec<String>)> = Vec::new();
    for (start, end, rep) in pieces {
        let replicas = own(ring.preference_list(rep, rf as usize));
        match out.last_mut() {
            Some(last) if last.2 == replicas && last.1.wrapping_add(1) == start => last.1 = end,
            _ => out.push((start, end, replicas)),
        }
    }
    out
}

/// How many ranges, per node, a set of moves streams to it — for progress reports and tests.
pub fn targets(moves: &[RangeMove]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in moves {
        for s in m.streams() {
            *out.entry(s.target).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::Consistency;

    fn ring(ids: &[&str]) -> Ring {
        Ring::new(ids, 16)
    }

    fn mv(from: &[&str], to: &[&str]) -> RangeMove {
        RangeMove {
            tenant: "t".into(),
            start: 0,
            end: 1,
            from: from.iter().map(|s| s.to_string()).collect(),
            to: to.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_replaced_replica_streams_to_its_replacement() {
        let m = mv(&["a", "b", "c"], &["a", "b", "d"]);
        assert_eq!(
            m.streams(),
            [Stream {
                target: "d".into(),
                sources: vec!["c".into()]
            }]
        );
        assert_eq!(m.leaving(), ["c"]);
    }

    #[test]
    fn growing_streams_everything_and_shrinking_hands_off_to_who_stays() {
        let grow = mv(&["a"], &["a", "b", "c"]);
        let s = grow.streams();
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|s| s.sources == ["a"]));
        let shrink = mv(&["a", "b", "c"], &["a", "b"]);
        let s = shrink.streams();
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|s| s.sources == ["c"]));
        assert_eq!(shrink.leaving(), ["c"]);
    }

    #[test]
    fn ranges_cover_only_what_changes_and_never_overlap() {
        let before = ring(&["a", "b", "c"]);
        let after = ring(&["a", "b", "c", "d"]);
        let tenants = [("t".to_string(), 3, 3), ("u".to_string(), 1, 1)];
        let moves = range_moves(&before, &after, &tenants);
        assert!(!moves.is_empty());
        for t in ["t", "u"] {
            let mut ranges: Vec<_> = moves
                .iter()
                .filter(|m| m.tenant == t)
                .map(|m| (m.start, m.end))
                .collect();
            ranges.sort();
            for w in ranges.windows(2) {
                assert!(w[0].1 < w[1].0, "overlap {w:?}");
            }
        }
        // Only the new node receives data when one joins with the RF unchanged.
        let targets = targets(&moves);
        assert_eq!(targets.keys().collect::<Vec<_>>(), ["d"]);
        // Nothing moves when nothing changes.
        assert!(range_moves(&before, &before, &tenants).is_empty());
        // Every token of a tenant whose RF grows on a one-node ring moves.
        let single = ring(&["a", "b"]);
        let all = range_moves(&single, &single, &[("t".into(), 1, 2)]);
        let covered: u128 = all.iter().map(|m| u128::from(m.end - m.start) + 1).sum();
        assert_eq!(covered, 1u128 << 64);
    }

    #[test]
    fn a_plan_hands_out_every_tenants_moves_in_order() {
        let before = ring(&["a", "b", "c"]);
        let after = ring(&["a", "b", "c", "d"]);
        let tenants = [
            ("t1".to_string(), 3, 3),
            ("t2".to_string(), 1, 2),
            ("t3".to_string(), 3, 3),
        ];
        let plan = Plan::new(&before, &after, &tenants);
        let each: Vec<Vec<RangeMove>> = tenants
            .iter()
            .map(|t| range_moves(&before, &after, std::slice::from_ref(t)))
            .collect();
        assert_eq!(plan.len(), each.iter().map(Vec::len).sum::<usize>());
        let all: Vec<RangeMove> = plan.iter().collect();
        assert_eq!(all, each.concat());
        assert!(plan.get(plan.len()).is_none());
        let same = [("t1".to_string(), 3, 3), ("t3".to_string(), 2, 2)];
        assert!(Plan::new(&before, &before, &same).is_empty());
        assert!(!Plan::new(&before, &before, &tenants).is_empty());
    }

    #[test]
    fn replica_ranges_cover_the_ring_once() {
        let r = ring(&["a", "b", "c", "d"]);
        let ranges = replica_ranges(&r, 2);
        let covered: u128 = ranges.iter().map(|(s, e, _)| u128::from(e - s) + 1).sum();
        assert_eq!(covered, 1u128 << 64);
        for w in ranges.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0);
        }
        for (s, e, replicas) in &ranges {
            assert_eq!(replicas.len(), 2);
            for t in [*s, *e, s + (e - s) / 2] {
                assert_eq!(own(r.preference_list(t, 2)), *replicas);
            }
        }
    }

    fn holders_after(m: &RangeMove, holders: &[String]) -> Vec<String> {
        let mut out: Vec<String> =
            m.to.iter()
                .filter(|n| holders.contains(n))
                .cloned()
                .collect();
        for s in m.streams() {
            if s.sources.iter().any(|src| holders.contains(src)) && !out.contains(&s.target) {
                out.push(s.target);
            }
        }
        out
    }

    proptest! {
        /// Whatever replicas of the old set hold a write at a level, after streaming at least
        /// that level's count of the new set holds it: a write acknowledged before the change is
        /// acknowledged after it.
        #[test]
        fn streaming_preserves_every_quorum(
            before_n in 1usize..7,
            after_n in 1usize..7,
            rf_from in 1u32..5,
            rf_to in 1u32..5,
            seed in any::<u64>(),
            holders_mask in any::<u8>(),
        ) {
            let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
            let before = Ring::new(&names[..before_n], 8);
            // The ring after drops or adds nodes, never both (one change at a time).
            let after = Ring::new(&names[(seed % 2) as usize..after_n.max(1 + (seed % 2) as usize)], 8);
            let moves = range_moves(&before, &after, &[("t".into(), rf_from, rf_to)]);
            for m in &moves {
                let holders: Vec<String> = m
                    .from
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| holders_mask & (1 << i) != 0)
                    .map(|(_, n)| n.clone())
                    .collect();
                for level in [Consistency::One, Consistency::Quorum, Consistency::All] {
                    if holders.len() < level.required(m.from.len()) || holders.is_empty() {
                        continue;
                    }
                    let after = holders_after(m, &holders);
                    prop_assert!(
                        after.len() >= level.required(m.to.len()),
                        "{level:?}: {holders:?} of {:?} -> {after:?} of {:?}", m.from, m.to
                    );
                }
            }
        }
    }
}
