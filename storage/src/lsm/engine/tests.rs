//! The engine's internals: the count of keys at open against the changes that race it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pairdb_core::hlc::{LOGICAL_BITS, wall_ms};
use pairdb_core::version::{MintRequest, WriteRecord, mint};
use pairdb_core::{Actor, Hlc, StorageKey};

use super::{LsmEngine, LsmOptions};
use crate::durability::Durability;
use crate::engine::{StorageEngine, TokenRange};
use crate::memory::MemoryEngine;

const TTL: Duration = Duration::from_secs(3600);
const DAY_MS: u64 = 24 * 3600 * 1000;

fn key(ns: &str, i: u32) -> StorageKey {
    StorageKey::new(ns, format!("key-{i}").as_bytes()).expect("key")
}

/// The count at open walks what the engine held then and adds it to counters that writes,
/// range drops and compactions (purging tombstones) change meanwhile — here on another thread,
/// while those changes run: whenever the walk ends, the sum is exact.
#[test]
fn the_count_at_open_adds_up_with_every_change_made_while_it_walks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LsmOptions {
        memtable_bytes: 8 << 10,
        l0_compaction_trigger: 2,
        ..LsmOptions::new(Durability::Never, TTL)
    };
    let engine = LsmEngine::open(dir.path(), options).expect("open");
    let model = MemoryEngine::new(TTL);
    let (actor, hlc) = (Actor::new("n1", 1), Hlc::new());
    let write = |ns: &str, i: u32, value: &str, tombstone: bool, age_days: u64| {
        let k = key(ns, i);
        let stored = engine.get(&k).expect("get");
        let request = MintRequest {
            tombstone,
            value: if tombstone {
                Vec::new()
            } else {
                value.as_bytes().to_vec()
            },
            content_type: if tombstone { "" } else { "text/plain" }.into(),
            idempotency_key: format!("{ns}-{i}-{value}"),
            ..MintRequest::default()
        };
        let mut v = mint(stored.as_ref(), request, &actor, &hlc).0;
        if age_days > 0 {
            v.timestamp = (wall_ms() - age_days * DAY_MS) << LOGICAL_BITS;
        }
        let record = WriteRecord {
            fingerprint: [i as u8; 32],
            conflict: false,
        };
        engine.apply(&k, v.clone(), Some(record)).expect("apply");
        model.apply(&k, v, Some(record)).expect("model");
    };
    for i in 0..300 {
        write("tenant", i, "before", false, 0);
        write("other", i, "before", false, 0);
    }
    // Old tombstones, for the compaction below to purge.
    for i in 300..400 {
        write("tenant", i, "", true, 30);
    }
    engine.wait_idle().expect("idle");

    // As at open: the counters start from nothing, and the walk reads this view.
    let inner = &engine.inner;
    let (view, snapshot) = (inner.current(), inner.visible.load(Ordering::Acquire));
    inner.keys.store(0, Ordering::Relaxed);
    inner.applied_keys.store(0, Ordering::Relaxed);
    std::thread::scope(|s| {
        s.spawn(|| inner.count(&view, snapshot));
        for i in (0..450).step_by(3) {
            write("tenant", i, "during", false, 0);
        }
        let other = TokenRange::full("other");
        assert_eq!(
            engine.delete_range(&other).expect("drop"),
            model.delete_range(&other).expect("model drop")
        );
        let tenant = TokenRange::full("tenant");
        let now = wall_ms() << LOGICAL_BITS;
        engine.set_repaired_until(&tenant, now).expect("watermark");
        model
            .set_repaired_until(&tenant, now)
            .expect("model watermark");
        engine.compact_fully().expect("compact");
    });

    let (got, want) = (engine.stats(), model.stats());
    assert!(got.tombstones_purged > 0, "the purge ran: {got:?}");
    assert!(want.keys > 300 && want.applied_keys > 300, "{want:?}");
    assert_eq!((got.keys, got.applied_keys), (want.keys, want.applied_keys));
}
