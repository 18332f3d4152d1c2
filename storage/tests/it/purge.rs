//! Tombstone purge against the memory engine as a model (DESIGN §2.1): a tombstone goes only
//! once older than the grace period and below its range's repair watermark, and in the LSM engine
//! only when compaction rewrites it into the bottom level. Random puts, concurrent versions and
//! tombstones with timestamps on both sides of the grace boundary and of the watermarks; every
//! read equals the model's before the watermarks, after a full compaction, and after a reopen.

use std::time::Duration;

use pairdb_core::hlc::{LOGICAL_BITS, wall_ms};
use pairdb_core::version::{MintRequest, mint};
use pairdb_core::{Actor, Hlc, StorageKey, Version};
use pairdb_storage::engine::{StorageEngine, TokenRange};
use pairdb_storage::memory::MemoryEngine;
use proptest::prelude::*;

use super::lsm::{TTL, everything, key, open, tiny};

const DAY_MS: u64 = 24 * 3600 * 1000;
/// Ages of versions, in days: two past the (default, ten-day) grace period, one within it.
const AGES: [u64; 3] = [30, 20, 1];

#[derive(Clone, Debug)]
enum Op {
    /// Key, value length, age index, actor, minted over nothing (concurrent with what is stored).
    Put(u32, usize, usize, bool, bool),
    /// Key, age index, actor, concurrent.
    Delete(u32, usize, bool, bool),
    DropAll,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..30, 0usize..120, 0usize..3, any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(k, n, age, a, c)| Op::Put(k, n, age, a, c)),
        4 => (0u32..30, 0usize..3, any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(k, age, a, c)| Op::Delete(k, age, a, c)),
        1 => Just(Op::DropAll),
        1 => Just(Op::Reopen),
    ]
}

/// A repair watermark: which range (whole, lower half, upper half of the token space) and up to
/// when (between the two old ages, or now).
fn watermark() -> impl Strategy<Value = (usize, bool)> {
    (0usize..3, any::<bool>())
}

fn range(which: usize) -> TokenRange {
    let mut r = TokenRange::full("tenant");
    match which {
        1 => r.end = u64::MAX / 2,
        2 => r.start = u64::MAX / 2 + 1,
        _ => {}
    }
    r
}

/// An HLC timestamp `age_days` ago; `seq` keeps timestamps of one age distinct and ordered.
fn timestamp(age_days: u64, seq: u64) -> u64 {
    ((wall_ms() - age_days * DAY_MS) << LOGICAL_BITS) + seq
}

fn version(
    stored: Option<&Version>,
    tombstone: bool,
    len: usize,
    age: u64,
    seq: u64,
    actor: &Actor,
) -> Version {
    let request = MintRequest {
        tombstone,
        value: if tombstone {
            Vec::new()
        } else {
            vec![b'v'; len]
        },
        content_type: if tombstone {
            String::new()
        } else {
            "text/plain".into()
        },
        ..MintRequest::default()
    };
    let mut v = mint(stored, request, actor, &Hlc::new()).0;
    v.timestamp = timestamp(age, seq);
    v
}

fn tombstones(engine: &dyn StorageEngine) -> usize {
    everything(engine)
        .iter()
        .filter(|(_, v)| v.tombstone)
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn compaction_purges_exactly_the_tombstones_the_model_does(
        ops in proptest::collection::vec(op(), 1..150),
        marks in proptest::collection::vec(watermark(), 0..4),
        reopen_first in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let actors = [Actor::new("n1", 1), Actor::new("n2", 1)];
        let model = MemoryEngine::new(TTL);
        let mut engine = open(dir.path(), tiny());
        for (seq, op) in ops.into_iter().enumerate() {
            let seq = seq as u64;
            match op {
                Op::Put(k, _, _, _, _) | Op::Delete(k, _, _, _) => {
                    let key: StorageKey = key(k);
                    let stored = model.get(&key).expect("model get");
                    let v = match op {
                        Op::Put(_, n, age, a, concurrent) => version(
                            if concurrent { None } else { stored.as_ref() },
                            false, n, AGES[age], seq, &actors[usize::from(a)],
                        ),
                        Op::Delete(_, age, a, concurrent) => version(
                            if concurrent { None } else { stored.as_ref() },
                            true, 0, AGES[age], seq, &actors[usize::from(a)],
                        ),
                        _ => unreachable!("matched above"),
                    };
                    let got = engine.apply(&key, v.clone(), None).expect("apply");
                    let want = model.apply(&key, v, None).expect("model apply");
                    prop_assert_eq!(got, want);
                }
                Op::DropAll => {
                    let r = TokenRange::full("tenant");
                    prop_assert_eq!(engine.delete_range(&r).expect("drop"), model.delete_range(&r).expect("model drop"));
                }
                Op::Reopen => {
                    drop(engine);
                    engine = open(dir.path(), tiny());
                }
            }
        }
        // No watermark yet: compaction keeps every tombstone, however old.
        engine.compact_fully().expect("compact");
        prop_assert_eq!(everything(&engine), everything(&model));
        prop_assert_eq!(engine.stats().tombstones_purged, 0);

        let until_mid = timestamp(25, 0);
        for (which, to_now) in &marks {
            let until = if *to_now { timestamp(0, 0) } else { until_mid };
            engine.set_repaired_until(&range(*which), until).expect("watermark");
            model.set_repaired_until(&range(*which), until).expect("model watermark");
        }
        if reopen_first {
            // Watermarks are kept as durably as writes.
            drop(engine);
            engine = open(dir.path(), tiny());
        }
        engine.compact_fully().expect("compact");
        prop_assert_eq!(everything(&engine), everything(&model));
        prop_assert_eq!(engine.stats().tombstones_purged, model.stats().tombstones_purged);
        prop_assert_eq!(engine.stats().keys, model.stats().keys);
        drop(engine);
        let engine = open(dir.path(), tiny());
        prop_assert_eq!(everything(&engine), everything(&model));
        // The count of keys at open runs in the background.
        engine.wait_idle().expect("idle");
        prop_assert_eq!(engine.stats().keys, model.stats().keys);
    }
}

/// Tombstones within the grace period stay, whatever the watermark; past it they go once the
/// watermark passes them — and not before the compaction that rewrites them into the bottom.
#[test]
fn a_tombstone_goes_only_past_both_the_grace_period_and_the_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), tiny());
    let actor = Actor::new("n1", 1);
    let (old, recent) = (key(1), key(2));
    engine
        .apply(&old, version(None, true, 0, 30, 0, &actor), None)
        .expect("old delete");
    engine
        .apply(&recent, version(None, true, 0, 1, 0, &actor), None)
        .expect("recent delete");
    let full = TokenRange::full("tenant");
    // A watermark below the old tombstone keeps it.
    engine
        .set_repaired_until(&full, timestamp(40, 0))
        .expect("low watermark");
    engine.compact_fully().expect("compact");
    assert_eq!(tombstones(&engine), 2);
    // Raised past both: only the one beyond the grace period goes.
    engine
        .set_repaired_until(&full, timestamp(0, 0))
        .expect("watermark");
    assert_eq!(tombstones(&engine), 2, "nothing goes before a compaction");
    engine.compact_fully().expect("compact");
    assert_eq!(engine.get(&old).expect("get"), None);
    assert!(
        engine
            .get(&recent)
            .expect("get")
            .is_some_and(|v| v.tombstone)
    );
    assert_eq!(engine.stats().tombstones_purged, 1);
    // A lower watermark later does not move it back.
    engine
        .set_repaired_until(&full, timestamp(40, 0))
        .expect("lower watermark");
    drop(engine);
    let engine = open(dir.path(), tiny());
    engine
        .apply(&old, version(None, true, 0, 30, 1, &actor), None)
        .expect("old delete again");
    engine.compact_fully().expect("compact");
    assert_eq!(
        engine.get(&old).expect("get"),
        None,
        "the watermark survived the reopen"
    );
    // The engine with a shorter grace period purges the recent one too.
    drop(engine);
    let mut options = tiny();
    options.tombstone_grace = Duration::from_secs(3600);
    let engine = open(dir.path(), options);
    engine.compact_fully().expect("compact");
    assert_eq!(tombstones(&engine), 0);
}
