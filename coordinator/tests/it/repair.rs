//! Merkle repair against the memory engine as the model: whatever the replicas of a range hold
//! — keys missing here, older versions there, tombstones, keys on one replica only, many keys or
//! few — one repair leaves every replica holding exactly the join of what they all held.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pairdb_coordinator::repair::merkle::{Digest, Replica, repair_range};
use pairdb_core::vclock::{Actor, VectorClock};
use pairdb_core::{StorageKey, Version};
use pairdb_storage::engine::{PageLimit, StorageEngine, TokenRange};
use pairdb_storage::memory::MemoryEngine;
use proptest::prelude::*;

const NS: &str = "t";

/// A replica that is a memory engine, reached directly.
struct Mem {
    name: String,
    engine: Arc<MemoryEngine>,
    /// Unreachable: every call fails.
    down: bool,
    /// The clock its digests report.
    clock: u64,
}

impl Mem {
    fn range(start: u64, end: u64) -> TokenRange {
        TokenRange {
            namespace: NS.into(),
            start,
            end,
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.down {
            Err("down".into())
        } else {
            Ok(())
        }
    }
}

impl Replica for Mem {
    fn name(&self) -> &str {
        &self.name
    }

    async fn digest(&self, start: u64, end: u64) -> Result<Digest, String> {
        self.check()?;
        let d = self
            .engine
            .digest(&Mem::range(start, end))
            .map_err(|e| e.to_string())?;
        Ok(Digest {
            digest: d.digest.to_vec(),
            keys: d.keys,
            clock: self.clock,
        })
    }

    async fn scan(
        &self,
        start: u64,
        end: u64,
        after: Option<(u64, Vec<u8>)>,
    ) -> Result<(Vec<(u64, Vec<u8>, Version)>, bool), String> {
        self.check()?;
        let after = after.map(|(token, key)| StorageKey {
            namespace: NS.into(),
            token,
            key,
        });
        let page = self
            .engine
            .scan(
                &Mem::range(start, end),
                after.as_ref(),
                PageLimit::entries(7),
            )
            .map_err(|e| e.to_string())?;
        Ok((
            page.entries
                .into_iter()
                .map(|(k, v)| (k.token, k.key, v))
                .collect(),
            page.more,
        ))
    }

    async fn ingest(&self, entries: Vec<(u64, Vec<u8>, Version)>) -> Result<(), String> {
        self.check()?;
        for (_, key, v) in entries {
            let k = StorageKey::new(NS, &key).map_err(|e| e.to_string())?;
            self.engine.apply(&k, v, None).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Version `n` of a key, minted by `leader`: later versions of the same leader descend earlier
/// ones; versions of different leaders are concurrent.
fn version(leader: u8, n: u64, tombstone: bool) -> Version {
    let actor = Actor::new(format!("n{leader}"), 1);
    let ts = (1_000 + n) << 16 | u64::from(leader);
    Version {
        tombstone,
        value: if tombstone {
            Vec::new()
        } else {
            format!("v{leader}-{n}").into_bytes()
        },
        content_type: "text/plain".into(),
        clock: VectorClock::from_entries([(actor, n)]),
        timestamp: ts,
        minted_by: format!("n{leader}"),
        idempotency_key: String::new(),
    }
}

/// Everything an engine holds, by key.
fn contents(engine: &MemoryEngine) -> BTreeMap<Vec<u8>, Version> {
    let mut out = BTreeMap::new();
    let mut after = None;
    loop {
        let page = engine
            .scan(
                &Mem::range(0, u64::MAX),
                after.as_ref(),
                PageLimit::entries(1000),
            )
            .expect("scan");
        after = page.entries.last().map(|(k, _)| k.clone());
        for (k, v) in page.entries {
            out.insert(k.key, v);
        }
        if !page.more {
            return out;
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Per key: which replicas hold which version (`None`: missing).
type Layout = Vec<[Option<(u8, u64, bool)>; 3]>;

fn layout() -> impl Strategy<Value = Layout> {
    let one = prop_oneof![
        3 => Just(None),
        5 => (0u8..3, 1u64..5, any::<bool>()).prop_map(Some),
    ];
    prop::collection::vec([one.clone(), one.clone(), one], 0..400)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn one_repair_leaves_every_replica_holding_the_join(layout in layout()) {
        let replicas: Vec<Mem> = (0..3)
            .map(|i| Mem {
                name: format!("r{i}"),
                engine: Arc::new(MemoryEngine::new(Duration::from_secs(60))),
                down: false,
                clock: [300, 100, 200][i],
            })
            .collect();
        let mut want: BTreeMap<Vec<u8>, Version> = BTreeMap::new();
        for (i, held) in layout.iter().enumerate() {
            let key = format!("key-{i}").into_bytes();
            let k = StorageKey::new(NS, &key).expect("key");
            for (r, v) in replicas.iter().zip(held) {
                if let Some((leader, n, tomb)) = v {
                    let v = version(*leader, *n, *tomb);
                    r.engine.apply(&k, v.clone(), None).expect("apply");
                    let join = match want.get(&key) {
                        Some(w) => w.resolve(&v),
                        None => v,
                    };
                    want.insert(key.clone(), join);
                }
            }
        }
        let done = block_on(repair_range(&replicas, 0, u64::MAX));
        prop_assert!(done.complete, "{done:?}");
        // The watermark's bound: the lowest replica clock at the first comparison.
        prop_assert_eq!(done.clock, 100);
        for r in &replicas {
            prop_assert_eq!(&contents(&r.engine), &want, "{}", r.name);
        }
        // A second repair finds nothing to do.
        let again = block_on(repair_range(&replicas, 0, u64::MAX));
        prop_assert_eq!(again.keys, 0);
        prop_assert!(again.complete);
        // A lone replica is repaired by definition, and bounds no watermark.
        let alone = block_on(repair_range(&replicas[..1], 0, u64::MAX));
        prop_assert!(alone.complete);
        prop_assert_eq!(alone.clock, u64::MAX);
    }
}

#[test]
fn a_replica_down_leaves_the_range_incomplete_and_the_others_repaired() {
    let mut replicas: Vec<Mem> = (0..3)
        .map(|i| Mem {
            name: format!("r{i}"),
            engine: Arc::new(MemoryEngine::new(Duration::from_secs(60))),
            down: false,
            clock: 1,
        })
        .collect();
    for i in 0..300 {
        let key = format!("k{i}").into_bytes();
        let k = StorageKey::new(NS, &key).expect("key");
        replicas[0]
            .engine
            .apply(&k, version(0, 1, false), None)
            .expect("apply");
    }
    replicas[2].down = true;
    let done = block_on(repair_range(&replicas, 0, u64::MAX));
    assert!(!done.complete);
    assert!(
        done.error.as_deref().is_some_and(|e| e.contains("r2")),
        "{done:?}"
    );
    // The two that answer were made equal all the same.
    assert_eq!(contents(&replicas[1].engine).len(), 300);
    assert_eq!(done.keys, 300);
    replicas[2].down = false;
    let done = block_on(repair_range(&replicas, 0, u64::MAX));
    assert!(done.complete);
    assert_eq!(done.keys, 300);
    for r in &replicas {
        assert_eq!(contents(&r.engine).len(), 300);
    }
}
