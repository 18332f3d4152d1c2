//! Vector clocks keyed by leader incarnation.
//!
//! An entry counts the versions one leader *incarnation* — a `(node id, incarnation)` pair —
//! has minted on a key's causal history, and remembers when the latest of them was minted (its
//! HLC timestamp). A node starts a new incarnation whenever it cannot prove its counters durable,
//! so counters never repeat.
//!
//! **Bound.** A key's clock keeps the entries of the [`crate::version::MAX_CLOCK_ENTRIES`] actors
//! that minted on it most recently ([`VectorClock::bound`]); older ones are dropped. Recency is
//! the entry's last-event timestamp, which merging only ever raises, so bounding commutes with
//! merging and resolution stays a join. A leader's own fresh event is always the most recent in
//! the clock it mints (its timestamp exceeds everything the clock covers), so it is never the
//! one dropped.
//!
//! Clocks are canonical by construction: entries sorted by actor, no zero counters. The encoding
//!
//! ```text
//! clock = count:varint { node_len:varint node:bytes incarnation:varint counter:varint last:varint }*
//! ```
//!
//! is therefore unique per clock, and [`VectorClock::decode`] rejects anything non-canonical.

use std::collections::BTreeMap;

use crate::varint;

/// A leader incarnation: the owner of one clock entry.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Actor {
    /// Storage node id.
    pub node: String,
    /// Incarnation of that node.
    pub incarnation: u64,
}

impl Actor {
    /// The actor of `node` at `incarnation`.
    pub fn new(node: impl Into<String>, incarnation: u64) -> Self {
        Actor {
            node: node.into(),
            incarnation,
        }
    }
}

/// One clock entry: how many versions an actor minted on the key's history, and the HLC
/// timestamp of the latest.
///
/// Entries are ordered by `(last, counter)` — recency first — and two entries of one actor merge
/// to the greater. An actor's later events have later times, so for every clock leaders mint this
/// is the pointwise maximum of counters; and because the merge is a maximum in the very order
/// bounding ranks by, bounding commutes with merging even for clocks a faulty peer made up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dot {
    /// HLC timestamp of the latest version counted: the entry's recency when bounding.
    pub last: u64,
    /// Versions counted (≥ 1 in a canonical clock).
    pub counter: u64,
}

/// How two clocks relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockOrdering {
    /// Identical.
    Equal,
    /// The left clock is strictly covered by the right.
    Before,
    /// The left clock strictly covers the right.
    After,
    /// Neither covers the other.
    Concurrent,
}

/// A canonical vector clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VectorClock {
    entries: BTreeMap<Actor, Dot>,
}

/// A clock encoding was malformed or not canonical.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClockDecodeError {
    /// The bytes ended inside an entry.
    #[error("clock truncated")]
    Truncated,
    /// A node id is not UTF-8.
    #[error("clock node id is not UTF-8")]
    NodeId,
    /// Entries out of order, duplicated, or with a zero counter.
    #[error("clock is not canonical")]
    NotCanonical,
    /// More bytes follow the clock.
    #[error("trailing bytes after clock")]
    Trailing,
}

impl VectorClock {
    /// The empty clock, covered by every clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a clock from `(actor, counter)` entries with no event times (for tests and
    /// tools); zero counters are dropped and duplicate actors keep the greatest counter.
    pub fn from_entries(entries: impl IntoIterator<Item = (Actor, u64)>) -> Self {
        Self::from_dots(
            entries
                .into_iter()
                .map(|(a, counter)| (a, Dot { counter, last: 0 })),
        )
    }

    /// Builds a clock from entries; zero counters are dropped and duplicate actors are merged.
    pub fn from_dots(entries: impl IntoIterator<Item = (Actor, Dot)>) -> Self {
        let mut clock = VectorClock::new();
        for (actor, dot) in entries {
            if dot.counter > 0 {
                clock.merge_dot(actor, dot);
            }
        }
        clock
    }

    /// Builds a clock from wire entries, rejecting zero counters and out-of-order or duplicate
    /// actors, so a decoded clock is exactly what its sender meant.
    pub fn try_from_canonical(
        entries: impl IntoIterator<Item = (Actor, Dot)>,
    ) -> Result<Self, ClockDecodeError> {
        let mut clock = VectorClock::new();
        let mut last: Option<Actor> = None;
        for (actor, dot) in entries {
            if dot.counter == 0 || last.as_ref().is_some_and(|l| *l >= actor) {
                return Err(ClockDecodeError::NotCanonical);
            }
            last = Some(actor.clone());
            clock.entries.insert(actor, dot);
        }
        Ok(clock)
    }

    /// The counter of `actor` (0 if absent).
    pub fn get(&self, actor: &Actor) -> u64 {
        self.entries.get(actor).map_or(0, |d| d.counter)
    }

    /// Counters in canonical order.
    pub fn entries(&self) -> impl Iterator<Item = (&Actor, u64)> {
        self.entries.iter().map(|(a, d)| (a, d.counter))
    }

    /// Entries with their event times, in canonical order.
    pub fn dots(&self) -> impl Iterator<Item = (&Actor, Dot)> {
        self.entries.iter().map(|(a, d)| (a, *d))
    }

    /// The latest event time the clock records (0 for the empty clock).
    pub fn latest(&self) -> u64 {
        self.entries.values().map(|d| d.last).max().unwrap_or(0)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True for the empty clock.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counts one more event of `actor`, minted at HLC timestamp `at`; returns its counter.
    pub fn increment(&mut self, actor: &Actor, at: u64) -> u64 {
        let e = self.entries.entry(actor.clone()).or_default();
        e.counter += 1;
        e.last = e.last.max(at);
        e.counter
    }

    fn merge_dot(&mut self, actor: Actor, dot: Dot) {
        let e = self.entries.entry(actor).or_default();
        *e = (*e).max(dot);
    }

    /// Entrywise maximum with `other` (see [`Dot`]): the least clock descending both.
    pub fn merge(&mut self, other: &VectorClock) {
        for (a, d) in &other.entries {
            let e = self.entries.entry(a.clone()).or_default();
            *e = (*e).max(*d);
        }
    }

    /// The merge of `self` and `other`, leaving both untouched.
    pub fn merged(&self, other: &VectorClock) -> VectorClock {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// True when every entry of `other` is ≤ the same entry here, entries ordered as [`Dot`]
    /// says (every clock descends itself). For clocks leaders mint this is the classic rule —
    /// every counter of `other` ≤ the same counter here — since an actor's later events have
    /// later times; and it is the order merge maximises, so a merge always descends its inputs,
    /// even when an actor forgotten at the bound mints again and its counter restarts.
    pub fn descends(&self, other: &VectorClock) -> bool {
        other
            .entries
            .iter()
            .all(|(a, d)| self.entries.get(a).is_some_and(|mine| mine >= d))
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VectorClock) -> ClockOrdering {
        match (self.descends(other), other.descends(self)) {
            (true, true) => ClockOrdering::Equal,
            (true, false) => ClockOrdering::After,
            (false, true) => ClockOrdering::Before,
            (false, false) => ClockOrdering::Concurrent,
        }
    }

    /// Keeps the entries of the `max` most recent actors — greatest `(entry, actor)`, entries
    /// ordered as [`Dot`] says, recency first — and drops the rest.
    ///
    /// This is the documented bound on a key's clock (DESIGN §2 "Clocks of time"). Recency only
    /// grows when clocks merge, so bounding commutes with merging:
    /// `bound(merge(bound(a), b)) == bound(merge(a, b))`. Bounding after every merge therefore
    /// keeps resolution a join (commutative, associative, idempotent), and replicas that merge
    /// the same clocks in any order hold the same bounded clock. The cost is precision at the
    /// bound: an actor that minted nothing on the key while `max` others did is forgotten, so
    /// two clocks that differ only in such entries compare as equal, and a concurrent write that
    /// differs only there is not reported as a conflict (resolution is by timestamp, so no write
    /// is lost for it).
    pub fn bound(&mut self, max: usize) {
        if self.entries.len() <= max {
            return;
        }
        let mut ranked: Vec<(Dot, Actor)> =
            self.entries.iter().map(|(a, d)| (*d, a.clone())).collect();
        ranked.sort_unstable();
        let excess = self.entries.len() - max;
        for (_, actor) in ranked.into_iter().take(excess) {
            self.entries.remove(&actor);
        }
    }

    /// The merge of `self` and `other` bounded to `max` entries (see [`bound`](Self::bound)).
    pub fn merged_bounded(&self, other: &VectorClock, max: usize) -> VectorClock {
        let mut out = self.merged(other);
        out.bound(max);
        out
    }

    /// The canonical byte encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode_into(&mut buf);
        buf
    }

    /// Appends the canonical encoding to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        varint::put(buf, self.entries.len() as u64);
        for (a, d) in &self.entries {
            varint::put(buf, a.node.len() as u64);
            buf.extend_from_slice(a.node.as_bytes());
            varint::put(buf, a.incarnation);
            varint::put(buf, d.counter);
            varint::put(buf, d.last);
        }
    }

    /// Decodes a canonical encoding that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<Self, ClockDecodeError> {
        let mut rest = bytes;
        let clock = Self::decode_from(&mut rest)?;
        if !rest.is_empty() {
            return Err(ClockDecodeError::Trailing);
        }
        Ok(clock)
    }

    /// Decodes a canonical encoding from the front of `buf`, advancing it.
    pub fn decode_from(buf: &mut &[u8]) -> Result<Self, ClockDecodeError> {
        let count = varint::take(buf).ok_or(ClockDecodeError::Truncated)?;
        // Each entry takes at least 4 bytes: bound the count before allocating anything.
        if count > (buf.len() as u64) / 4 {
            return Err(ClockDecodeError::Truncated);
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = varint::take(buf).ok_or(ClockDecodeError::Truncated)?;
            let len = usize::try_from(len).map_err(|_| ClockDecodeError::Truncated)?;
            let node = varint::take_bytes(buf, len).ok_or(ClockDecodeError::Truncated)?;
            let node = std::str::from_utf8(node).map_err(|_| ClockDecodeError::NodeId)?;
            let incarnation = varint::take(buf).ok_or(ClockDecodeError::Truncated)?;
            let counter = varint::take(buf).ok_or(ClockDecodeError::Truncated)?;
            let last = varint::take(buf).ok_or(ClockDecodeError::Truncated)?;
            entries.push((Actor::new(node, incarnation), Dot { counter, last }));
        }
        Self::try_from_canonical(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Clocks over 4 nodes × 3 incarnations. An event's time is a function of its actor and
    /// counter, as for minted events (the same event has one time everywhere).
    fn clock_strategy() -> impl Strategy<Value = VectorClock> {
        proptest::collection::vec((0u8..4, 0u64..3, 0u64..5), 0..6).prop_map(|v| {
            VectorClock::from_dots(v.into_iter().map(|(n, i, c)| {
                (
                    Actor::new(format!("n{n}"), i),
                    Dot {
                        last: c * 100 + u64::from(n) * 10 + i,
                        counter: c,
                    },
                )
            }))
        })
    }

    proptest! {
        #[test]
        fn canonical_encoding_round_trips(c in clock_strategy()) {
            let bytes = c.encode();
            prop_assert_eq!(VectorClock::decode(&bytes), Ok(c.clone()));
            // Canonical: re-encoding the decoded clock gives the same bytes.
            prop_assert_eq!(VectorClock::decode(&bytes).map(|d| d.encode()), Ok(bytes));
        }

        #[test]
        fn merge_is_a_join(a in clock_strategy(), b in clock_strategy(), c in clock_strategy()) {
            prop_assert_eq!(a.merged(&b), b.merged(&a));
            prop_assert_eq!(a.merged(&b).merged(&c), a.merged(&b.merged(&c)));
            prop_assert_eq!(a.merged(&a), a.clone());
            let m = a.merged(&b);
            prop_assert!(m.descends(&a) && m.descends(&b));
        }

        #[test]
        fn ordering_is_antisymmetric(a in clock_strategy(), b in clock_strategy()) {
            let ab = a.compare(&b);
            let ba = b.compare(&a);
            let expected = match ab {
                ClockOrdering::Equal => ClockOrdering::Equal,
                ClockOrdering::Before => ClockOrdering::After,
                ClockOrdering::After => ClockOrdering::Before,
                ClockOrdering::Concurrent => ClockOrdering::Concurrent,
            };
            prop_assert_eq!(ba, expected);
            prop_assert_eq!(ab == ClockOrdering::Equal, a == b);
        }

        #[test]
        fn bounding_commutes_with_merging(a in clock_strategy(), b in clock_strategy(), c in clock_strategy(), max in 1usize..5) {
            let mut ba = a.clone();
            ba.bound(max);
            // bound(merge(bound(a), b)) == bound(merge(a, b)): bounding early loses nothing.
            prop_assert_eq!(ba.merged_bounded(&b, max), a.merged_bounded(&b, max));
            // So the bounded merge is still a join.
            prop_assert_eq!(a.merged_bounded(&b, max), b.merged_bounded(&a, max));
            prop_assert_eq!(
                a.merged_bounded(&b, max).merged_bounded(&c, max),
                a.merged_bounded(&b.merged_bounded(&c, max), max)
            );
            prop_assert!(a.merged_bounded(&b, max).len() <= max);
        }

        #[test]
        fn bounding_commutes_with_merging_whatever_the_event_times(
            a in proptest::collection::vec((0u8..6, 1u64..4, 0u64..4), 0..8),
            b in proptest::collection::vec((0u8..6, 1u64..4, 0u64..4), 0..8),
            max in 1usize..5,
        ) {
            // Adversarial input: times unrelated to counters (a peer may send anything).
            let clock = |v: Vec<(u8, u64, u64)>| VectorClock::from_dots(v.into_iter().map(|(n, c, t)| {
                (Actor::new(format!("n{n}"), 1), Dot { counter: c, last: t })
            }));
            let (a, b) = (clock(a), clock(b));
            let mut ba = a.clone();
            ba.bound(max);
            prop_assert_eq!(ba.merged_bounded(&b, max), a.merged_bounded(&b, max));
            prop_assert_eq!(a.merged_bounded(&b, max), b.merged_bounded(&a, max));
            // And a merge covers what it merged, however the times run.
            let m = a.merged(&b);
            prop_assert!(m.descends(&a) && m.descends(&b));
            prop_assert_eq!(a.compare(&b) == ClockOrdering::Equal, a == b);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = VectorClock::decode(&bytes);
        }
    }

    #[test]
    fn rejects_non_canonical() {
        let a = Actor::new("a", 1);
        let dot = |counter| Dot { counter, last: 1 };
        assert!(VectorClock::try_from_canonical([(a.clone(), dot(0))]).is_err());
        assert!(VectorClock::try_from_canonical([(a.clone(), dot(1)), (a, dot(2))]).is_err());
        let mut bytes = VectorClock::from_entries([(Actor::new("a", 1), 1)]).encode();
        bytes.push(0);
        assert_eq!(VectorClock::decode(&bytes), Err(ClockDecodeError::Trailing));
    }

    #[test]
    fn bound_keeps_the_most_recently_active_actors() {
        // Ten actors; actor i last minted at time 100 + i, whatever its incarnation.
        let mut c = VectorClock::from_dots((0..10u64).map(|i| {
            (
                Actor::new(format!("n{i}"), 1_000 - i),
                Dot {
                    counter: 10 - i,
                    last: 100 + i,
                },
            )
        }));
        c.bound(4);
        assert_eq!(c.len(), 4);
        for i in 6..10u64 {
            assert_eq!(c.get(&Actor::new(format!("n{i}"), 1_000 - i)), 10 - i);
        }
        assert_eq!(c.get(&Actor::new("n0", 1_000)), 0);
        let before = c.clone();
        c.bound(4);
        assert_eq!(c, before, "bounding is idempotent");

        // An old incarnation that just minted is the most recent actor: it stays.
        let old = Actor::new("old", 1);
        c.increment(&old, 500);
        c.bound(4);
        assert_eq!(c.get(&old), 1);
        assert_eq!(c.len(), 4);
    }
}
