//! Versions, minting and resolution (DESIGN §2.1).
//!
//! Resolution is a join over whole versions: `resolve(a, b)` takes the merged clock and the
//! payload of whichever version has the greater *resolution key* `(timestamp, minting node,
//! payload digest)`. Leaders mint with a timestamp above every timestamp the new clock covers, so
//! a descendant always has the greater key and resolution never lets an older write win over a
//! newer one it saw. Replicas that apply the same set of versions in any order, with duplicates,
//! hold identical versions.

use std::cmp::Ordering;

use sha2::{Digest, Sha256};

use crate::context::Context;
use crate::hlc::Hlc;
use crate::vclock::{Actor, VectorClock};

/// Entries a key's clock keeps: minting and resolution bound every clock to the entries of this
/// many most recent leader incarnations ([`VectorClock::bound`]). With node ids of at most
/// [`crate::placement::MAX_NODE_ID_LEN`] bytes, a bounded clock always fits a context token.
pub const MAX_CLOCK_ENTRIES: usize = 64;

/// One version of a key: a value or a tombstone, with its causal history.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Version {
    /// A delete.
    pub tombstone: bool,
    /// The value bytes (empty for tombstones).
    pub value: Vec<u8>,
    /// The value's content type as the client sent it.
    pub content_type: String,
    /// The causal history.
    pub clock: VectorClock,
    /// HLC timestamp of the minting.
    pub timestamp: u64,
    /// Node id of the leader that minted it.
    pub minted_by: String,
    /// Idempotency key of the write that minted it ("" for none).
    pub idempotency_key: String,
}

/// What storing an incoming version did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ApplyOutcome {
    /// The incoming version won and is now stored.
    #[default]
    Applied,
    /// The incoming version was concurrent with the stored one, which won; clocks were merged.
    Merged,
    /// The stored version already covered the incoming one; nothing changed.
    Superseded,
}

/// What a leader is asked to mint.
#[derive(Clone, Debug, Default)]
pub struct MintRequest {
    /// A delete.
    pub tombstone: bool,
    /// The value bytes.
    pub value: Vec<u8>,
    /// The value's content type.
    pub content_type: String,
    /// The client's context; `None` for a blind overwrite.
    pub context: Option<Context>,
    /// The write's idempotency key ("" for none).
    pub idempotency_key: String,
}

/// What the applied-keys index keeps about a write that carried an idempotency key, besides the
/// version it produced: enough to tell a retry from a reuse of the key, and to answer a retry
/// exactly as the first attempt was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WriteRecord {
    /// [`MintRequest::fingerprint`] of the write.
    pub fingerprint: [u8; 32],
    /// The leader reported a conflict when it minted the write.
    pub conflict: bool,
}

/// A write recorded in a replica's applied-keys index: the version it produced, its record, and
/// what applying it did on that replica the first time — so a retry of the write can be answered
/// exactly as the first attempt was.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AppliedWrite {
    /// The version the write produced, exactly as the leader minted it.
    pub version: Version,
    /// What the write was.
    pub record: WriteRecord,
    /// What the first apply of it did here.
    pub outcome: ApplyOutcome,
    /// The first apply met a stored version concurrent with it ([`met_concurrent`]).
    pub concurrent: bool,
}

impl MintRequest {
    /// SHA-256 of everything that makes this write what it is — delete or put, value, content
    /// type and the client's context — but not its idempotency key. Two requests carrying one
    /// idempotency key are the same write exactly when their fingerprints are equal.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"pairdb-write-v1");
        h.update([u8::from(self.tombstone)]);
        h.update((self.content_type.len() as u64).to_be_bytes());
        h.update(self.content_type.as_bytes());
        h.update((self.value.len() as u64).to_be_bytes());
        h.update(&self.value);
        match &self.context {
            None => h.update([0u8]),
            Some(ctx) => {
                h.update([1u8]);
                h.update(ctx.timestamp.to_be_bytes());
                h.update(ctx.clock.encode());
            }
        }
        h.finalize().into()
    }
}

impl Version {
    /// SHA-256 of the payload (tombstone flag, content type, value, idempotency key): the last
    /// component of the resolution key.
    pub fn payload_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([u8::from(self.tombstone)]);
        h.update((self.content_type.len() as u64).to_be_bytes());
        h.update(self.content_type.as_bytes());
        h.update((self.value.len() as u64).to_be_bytes());
        h.update(&self.value);
        h.update((self.idempotency_key.len() as u64).to_be_bytes());
        h.update(self.idempotency_key.as_bytes());
        h.finalize().into()
    }

    /// Orders versions by resolution key `(timestamp, minting node, payload digest)`; the digest
    /// is computed only on a tie.
    pub fn cmp_resolution_key(&self, other: &Version) -> Ordering {
        self.timestamp
            .cmp(&other.timestamp)
            .then_with(|| self.minted_by.cmp(&other.minted_by))
            .then_with(|| self.payload_digest().cmp(&other.payload_digest()))
    }

    /// The join of two versions: merged clocks (bounded to [`MAX_CLOCK_ENTRIES`]), payload of
    /// the greater resolution key. Commutative, associative and idempotent.
    pub fn resolve(&self, other: &Version) -> Version {
        let winner = if self.cmp_resolution_key(other) == Ordering::Less {
            other
        } else {
            self
        };
        Version {
            clock: self.clock.merged_bounded(&other.clock, MAX_CLOCK_ENTRIES),
            ..winner.clone()
        }
    }

    /// True when the two versions' clocks are concurrent: neither saw the other.
    pub fn is_concurrent_with(&self, other: &Version) -> bool {
        !self.clock.descends(&other.clock) && !other.clock.descends(&self.clock)
    }

    /// The highest timestamp this version's history covers (its own, by the minting rule).
    pub fn context(&self) -> Context {
        Context {
            clock: self.clock.clone(),
            timestamp: self.timestamp,
        }
    }
}

/// Stores `incoming` over `stored`: returns what to keep and what happened.
pub fn apply(stored: Option<&Version>, mut incoming: Version) -> (Version, ApplyOutcome) {
    let Some(stored) = stored else {
        // Bounded like every resolution, so applying a version twice changes nothing even when
        // it arrived with more entries than a clock keeps.
        incoming.clock.bound(MAX_CLOCK_ENTRIES);
        return (incoming, ApplyOutcome::Applied);
    };
    let resolved = stored.resolve(&incoming);
    let outcome = if resolved == *stored {
        ApplyOutcome::Superseded
    } else if resolved.cmp_resolution_key(&incoming) == Ordering::Equal {
        ApplyOutcome::Applied
    } else {
        ApplyOutcome::Merged
    };
    (resolved, outcome)
}

/// True when an [`apply`] of a version with `incoming_clock` met a stored version concurrent with
/// it, derived from the outcome and the version kept, without reading the stored one again:
/// a merge always means concurrency; an applied version whose kept clock is not its own had its
/// clock merged with a stored one it did not cover.
pub fn met_concurrent(outcome: ApplyOutcome, incoming_clock: &VectorClock, kept: &Version) -> bool {
    match outcome {
        ApplyOutcome::Merged => true,
        ApplyOutcome::Applied => kept.clock != *incoming_clock,
        ApplyOutcome::Superseded => false,
    }
}

/// Mints a new version as leader over `stored`: its clock descends both the stored version and
/// the client's context with `actor`'s entry incremented, and its timestamp exceeds both of
/// theirs. Returns the version and whether the write conflicted — it carried a context that did
/// not cover the stored version.
pub fn mint(
    stored: Option<&Version>,
    request: MintRequest,
    actor: &Actor,
    hlc: &Hlc,
) -> (Version, bool) {
    let mut clock = stored.map(|s| s.clock.clone()).unwrap_or_default();
    let mut seen = stored.map_or(0, |s| s.timestamp);
    let mut conflict = false;
    if let Some(ctx) = &request.context {
        if let Some(s) = stored {
            conflict = !ctx.clock.descends(&s.clock);
        }
        clock.merge(&ctx.clock);
        seen = seen.max(ctx.timestamp);
    }
    // Past every event the clock covers too (a peer's clock could claim later events than its
    // version's timestamp): the minter's event is then the clock's most recent, and bounding —
    // here and on every replica — keeps it.
    let timestamp = hlc.advance_past(seen.max(clock.latest()));
    clock.increment(actor, timestamp);
    clock.bound(MAX_CLOCK_ENTRIES);
    let version = Version {
        tombstone: request.tombstone,
        value: if request.tombstone {
            Vec::new()
        } else {
            request.value
        },
        content_type: if request.tombstone {
            String::new()
        } else {
            request.content_type
        },
        clock,
        timestamp,
        minted_by: actor.node.clone(),
        idempotency_key: request.idempotency_key,
    };
    (version, conflict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Versions drawn so that equal clocks imply equal versions, as minting guarantees: payload
    /// and timestamp are functions of the clock.
    fn version_strategy() -> impl Strategy<Value = Version> {
        proptest::collection::vec((0u8..3, 0u64..2, 0u64..4), 0..5).prop_map(|entries| {
            // An event's time is a function of its actor and counter, and stays below the
            // version's timestamp, as for minted versions.
            let clock = VectorClock::from_dots(entries.into_iter().map(|(n, i, c)| {
                (
                    Actor::new(format!("n{n}"), i),
                    crate::vclock::Dot {
                        last: c * 100 + u64::from(n) * 10 + i,
                        counter: c,
                    },
                )
            }));
            let enc = clock.encode();
            let weight: u64 = clock.entries().map(|(_, c)| c).sum();
            Version {
                tombstone: enc.len().is_multiple_of(5),
                value: if enc.len().is_multiple_of(5) {
                    Vec::new()
                } else {
                    enc.clone()
                },
                content_type: "application/octet-stream".into(),
                timestamp: weight * 1000 + (enc.iter().map(|b| u64::from(*b)).sum::<u64>() % 7),
                minted_by: format!("n{}", enc.len() % 3),
                idempotency_key: String::new(),
                clock,
            }
        })
    }

    proptest! {
        #[test]
        fn resolve_is_commutative(a in version_strategy(), b in version_strategy()) {
            prop_assert_eq!(a.resolve(&b), b.resolve(&a));
        }

        #[test]
        fn resolve_is_associative(a in version_strategy(), b in version_strategy(), c in version_strategy()) {
            prop_assert_eq!(a.resolve(&b).resolve(&c), a.resolve(&b.resolve(&c)));
        }

        #[test]
        fn resolve_is_idempotent(a in version_strategy(), b in version_strategy()) {
            prop_assert_eq!(a.resolve(&a), a.clone());
            let r = a.resolve(&b);
            prop_assert_eq!(r.resolve(&b), r.clone());
            prop_assert_eq!(r.resolve(&a), r);
        }

        #[test]
        fn apply_in_any_order_converges(mut vs in proptest::collection::vec(version_strategy(), 1..6), seed in any::<u64>()) {
            let fold = |vs: &[Version]| {
                let mut stored: Option<Version> = None;
                for v in vs {
                    let (next, _) = apply(stored.as_ref(), v.clone());
                    stored = Some(next);
                }
                stored
            };
            let forward = fold(&vs);
            // A deterministic shuffle with a duplicate appended.
            let n = vs.len();
            vs.rotate_left((seed as usize) % n);
            vs.reverse();
            let dup = vs[(seed as usize / 7) % n].clone();
            vs.push(dup);
            prop_assert_eq!(fold(&vs), forward);
        }

        #[test]
        fn minted_timestamp_exceeds_everything_covered(
            stored in proptest::option::of(version_strategy()),
            ctx in proptest::option::of(version_strategy()),
        ) {
            let hlc = Hlc::new();
            let request = MintRequest {
                value: b"v".to_vec(),
                context: ctx.as_ref().map(Version::context),
                ..MintRequest::default()
            };
            let actor = Actor::new("leader", 1);
            let (v, conflict) = mint(stored.as_ref(), request, &actor, &hlc);
            if let Some(s) = &stored {
                prop_assert!(v.timestamp > s.timestamp);
                prop_assert!(v.clock.descends(&s.clock));
                prop_assert_eq!(v.clock.compare(&s.clock), crate::vclock::ClockOrdering::After);
                // The descendant always wins resolution.
                prop_assert_eq!(s.resolve(&v).cmp_resolution_key(&v), Ordering::Equal);
                let expected_conflict = ctx.as_ref().is_some_and(|c| !c.clock.descends(&s.clock));
                prop_assert_eq!(conflict, expected_conflict);
            } else {
                prop_assert!(!conflict);
            }
            if let Some(c) = &ctx {
                prop_assert!(v.timestamp > c.timestamp);
                prop_assert!(v.clock.descends(&c.clock));
            }
        }
    }

    #[test]
    fn fingerprints_tell_writes_apart_but_not_their_keys() {
        let put = MintRequest {
            value: b"v".to_vec(),
            content_type: "text/plain".into(),
            idempotency_key: "k1".into(),
            ..MintRequest::default()
        };
        let same = MintRequest {
            idempotency_key: "k2".into(),
            ..put.clone()
        };
        assert_eq!(put.fingerprint(), same.fingerprint());
        let hlc = Hlc::new();
        let (base, _) = mint(None, MintRequest::default(), &Actor::new("a", 1), &hlc);
        let others = [
            MintRequest {
                value: b"w".to_vec(),
                ..put.clone()
            },
            MintRequest {
                content_type: "text/html".into(),
                ..put.clone()
            },
            MintRequest {
                tombstone: true,
                ..put.clone()
            },
            MintRequest {
                context: Some(base.context()),
                ..put.clone()
            },
            MintRequest {
                tombstone: true,
                value: Vec::new(),
                content_type: String::new(),
                ..put.clone()
            },
        ];
        for other in &others {
            assert_ne!(put.fingerprint(), other.fingerprint(), "{other:?}");
        }
    }

    #[test]
    fn a_key_written_through_a_thousand_incarnations_keeps_a_bounded_clock() {
        use crate::context::{ContextSigner, DEFAULT_MAX_SKEW_MS, MAX_TOKEN_LEN};
        use crate::placement::MAX_NODE_ID_LEN;

        let hlc = Hlc::new();
        let signer = ContextSigner::new(b"secret", DEFAULT_MAX_SKEW_MS);
        // Three replicas; each write is minted by a new incarnation of one of 7 leaders with the
        // longest node ids allowed, and reaches every replica in a different order.
        let mut replicas: [Option<Version>; 3] = [None, None, None];
        let mut last = None;
        for i in 0..1000u64 {
            let node = format!("{:0>width$}", i % 7, width = MAX_NODE_ID_LEN);
            let actor = Actor::new(node, u64::MAX - 1000 + i);
            let leader = (i % 3) as usize;
            let stored = replicas[leader].clone();
            let request = MintRequest {
                value: i.to_be_bytes().to_vec(),
                context: stored.as_ref().map(Version::context),
                ..MintRequest::default()
            };
            let (minted, _) = mint(stored.as_ref(), request, &actor, &hlc);
            for r in replicas.iter_mut() {
                *r = Some(apply(r.as_ref(), minted.clone()).0);
            }
            last = Some(minted);
        }
        let last = last.unwrap_or_default();
        for r in &replicas {
            let r = r.clone().unwrap_or_default();
            assert_eq!(
                r,
                replicas[0].clone().unwrap_or_default(),
                "replicas converge"
            );
            assert_eq!(r.clock.len(), MAX_CLOCK_ENTRIES);
            assert_eq!(r.value, last.value, "the newest write wins");
        }
        let context = last.context();
        let token = signer.seal("t".repeat(63).as_str(), b"key", &context);
        assert!(
            token.len() <= MAX_TOKEN_LEN,
            "token of {} chars",
            token.len()
        );
        assert_eq!(
            signer.open_at("t".repeat(63).as_str(), b"key", &token, 0),
            Err(crate::context::ContextError::FromTheFuture),
            "the synthetic timestamps are checked like any other"
        );
        let opened = ContextSigner::new(b"secret", u64::MAX)
            .open_at("t".repeat(63).as_str(), b"key", &token, 0)
            .unwrap_or_default();
        assert_eq!(opened, context, "the context round-trips");
    }

    #[test]
    fn a_minter_older_than_every_actor_of_a_full_clock_still_shows_its_event() {
        let hlc = Hlc::new();
        let mut stored: Option<Version> = None;
        for i in 0..MAX_CLOCK_ENTRIES as u64 + 5 {
            let request = MintRequest {
                context: stored.as_ref().map(Version::context),
                ..MintRequest::default()
            };
            let actor = Actor::new(format!("n{i}"), 1_000 + i);
            let (v, _) = mint(stored.as_ref(), request, &actor, &hlc);
            stored = Some(apply(stored.as_ref(), v).0);
        }
        let stored = stored.unwrap_or_default();
        assert_eq!(stored.clock.len(), MAX_CLOCK_ENTRIES);
        // A long-lived leader whose incarnation predates every actor in the clock.
        let old = Actor::new("old", 1);
        let request = MintRequest {
            context: Some(stored.context()),
            ..MintRequest::default()
        };
        let (minted, _) = mint(Some(&stored), request, &old, &hlc);
        assert_eq!(minted.clock.get(&old), 1);
        assert_eq!(minted.clock.len(), MAX_CLOCK_ENTRIES);
        assert!(
            !stored.clock.descends(&minted.clock),
            "the stored version must not appear to cover the new one"
        );
    }

    #[test]
    fn applying_an_over_bound_version_twice_changes_nothing() {
        let clock =
            VectorClock::from_entries((0..100u64).map(|i| (Actor::new(format!("n{i}"), i + 1), 1)));
        let v = Version {
            clock,
            timestamp: 5,
            minted_by: "n1".into(),
            ..Version::default()
        };
        let (once, outcome) = apply(None, v.clone());
        assert_eq!(outcome, ApplyOutcome::Applied);
        assert_eq!(once.clock.len(), MAX_CLOCK_ENTRIES);
        let (twice, outcome) = apply(Some(&once), v);
        assert_eq!(twice, once);
        assert_eq!(outcome, ApplyOutcome::Superseded);
    }

    #[test]
    fn equal_clocks_mean_equal_versions_under_minting() {
        // Two leaders minting over the same stored version produce different clocks.
        let hlc = Hlc::new();
        let (base, _) = mint(None, MintRequest::default(), &Actor::new("a", 1), &hlc);
        let (x, _) = mint(
            Some(&base),
            MintRequest::default(),
            &Actor::new("a", 1),
            &hlc,
        );
        let (y, _) = mint(
            Some(&base),
            MintRequest::default(),
            &Actor::new("b", 1),
            &hlc,
        );
        assert_ne!(x.clock, y.clock);
        assert!(x.is_concurrent_with(&y));
        // The same leader minting twice from the same base never repeats a clock either:
        // the second mint sees the first as stored.
        let (z, _) = mint(Some(&x), MintRequest::default(), &Actor::new("a", 1), &hlc);
        assert_ne!(z.clock, x.clock);
    }

    #[test]
    fn apply_reports_outcomes() {
        let hlc = Hlc::new();
        let (a, _) = mint(None, MintRequest::default(), &Actor::new("a", 1), &hlc);
        let (b, _) = mint(Some(&a), MintRequest::default(), &Actor::new("a", 1), &hlc);
        assert_eq!(apply(None, a.clone()).1, ApplyOutcome::Applied);
        assert_eq!(apply(Some(&a), b.clone()).1, ApplyOutcome::Applied);
        assert_eq!(apply(Some(&b), a.clone()).1, ApplyOutcome::Superseded);
        assert_eq!(apply(Some(&b), b.clone()).1, ApplyOutcome::Superseded);
        let (c, _) = mint(Some(&a), MintRequest::default(), &Actor::new("c", 1), &hlc);
        // c is newer than b and concurrent with it: applying b over c merges.
        let (kept, outcome) = apply(Some(&c), b.clone());
        assert_eq!(outcome, ApplyOutcome::Merged);
        assert!(met_concurrent(outcome, &b.clock, &kept));
        // Applying c over b wins, and still met a concurrent version.
        let (won, outcome) = apply(Some(&b), c.clone());
        assert_eq!(outcome, ApplyOutcome::Applied);
        assert!(met_concurrent(outcome, &c.clock, &won));
        // A descendant applied over its ancestor, or onto nothing, met no concurrency.
        let (plain, outcome) = apply(Some(&a), b.clone());
        assert!(!met_concurrent(outcome, &b.clock, &plain));
        let (first, outcome) = apply(None, a.clone());
        assert!(!met_concurrent(outcome, &a.clock, &first));
        assert!(kept.clock.descends(&b.clock) && kept.clock.descends(&c.clock));
        assert_eq!(kept.timestamp, c.timestamp);
    }
}
