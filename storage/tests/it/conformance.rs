//! The conformance suite against the memory engine, one test per case.

use std::sync::Arc;
use std::time::Duration;

use pairdb_core::version::{MintRequest, apply, mint};
use pairdb_core::{Actor, Hlc, StorageKey, Version};
use pairdb_storage::conformance;
use pairdb_storage::engine::StorageEngine;
use pairdb_storage::memory::MemoryEngine;
use proptest::prelude::*;

fn memory() -> Arc<dyn StorageEngine> {
    Arc::new(MemoryEngine::new(Duration::from_secs(3600)))
}

#[test]
fn apply_order_does_not_matter() {
    conformance::apply_order_does_not_matter(&memory);
}

#[test]
fn apply_reports_outcomes() {
    conformance::apply_reports_outcomes(&memory);
}

#[test]
fn tombstones_are_stored_and_returned() {
    conformance::tombstones_are_stored_and_returned(&memory);
}

#[test]
fn scans_respect_ranges_and_pages() {
    conformance::scans_respect_ranges_and_pages(&memory);
}

#[test]
fn digests_compare_contents() {
    conformance::digests_compare_contents(&memory);
}

#[test]
fn delete_range_drops_only_the_range() {
    conformance::delete_range_drops_only_the_range(&memory);
}

#[test]
fn scans_respect_byte_budgets() {
    conformance::scans_respect_byte_budgets(&memory);
}

#[test]
fn applied_keys_index_finds_recorded_writes() {
    conformance::applied_keys_index_finds_recorded_writes(&memory);
}

#[test]
fn watermarks_never_purge_what_they_must_keep() {
    conformance::watermarks_never_purge_what_they_must_keep(&memory);
}

#[test]
fn run_all_covers_every_case() {
    assert_eq!(conformance::CASES.len(), 9);
    conformance::run_all(&memory);
}

/// One step of a generated history: which of four leaders mints, which earlier version (if
/// any) reached that leader's replica first, whether it deletes, and whether the client sent
/// the leader's stored version as its context.
#[derive(Clone, Debug)]
struct Step {
    leader: usize,
    received: Option<prop::sample::Index>,
    tombstone: bool,
    with_context: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0usize..4,
        prop::option::of(any::<prop::sample::Index>()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(leader, received, tombstone, with_context)| Step {
            leader,
            received,
            tombstone,
            with_context,
        })
}

/// Mints a history as leaders would: each leader keeps its own replica of the key, which holds
/// everything it minted plus whatever versions reached it, and mints over that — so no leader
/// ever issues the same clock twice, and histories contain both descendants and siblings.
fn mint_history(steps: &[Step]) -> Vec<Version> {
    let hlc = Hlc::new();
    let mut replicas: [Option<Version>; 4] = Default::default();
    let mut history: Vec<Version> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let replica = &mut replicas[s.leader];
        if let Some(received) = s.received.as_ref().filter(|_| !history.is_empty()) {
            let v = received.get(&history).clone();
            *replica = Some(apply(replica.as_ref(), v).0);
        }
        let request = MintRequest {
            tombstone: s.tombstone,
            value: format!("value-{i}").into_bytes(),
            content_type: "text/plain".into(),
            context: replica
                .as_ref()
                .filter(|_| s.with_context)
                .map(Version::context),
            idempotency_key: if i % 3 == 0 {
                format!("idem-{i}")
            } else {
                String::new()
            },
        };
        let actor = Actor::new(format!("node-{}", s.leader), 1);
        let minted = mint(replica.as_ref(), request, &actor, &hlc).0;
        *replica = Some(apply(replica.as_ref(), minted.clone()).0);
        history.push(minted);
    }
    history
}

/// A history, a permutation of it, and duplicates to insert (version index, position).
fn scenario() -> impl Strategy<
    Value = (
        Vec<Version>,
        Vec<usize>,
        Vec<(prop::sample::Index, prop::sample::Index)>,
    ),
> {
    proptest::collection::vec(step(), 1..12).prop_flat_map(|steps| {
        let history = mint_history(&steps);
        let n = history.len();
        (
            Just(history),
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            proptest::collection::vec(
                (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
                0..4,
            ),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Replicas applying the same versions in any order, with duplicates, hold the identical
    /// version: the fold of `apply` in minting order.
    #[test]
    fn random_apply_orders_converge((history, permutation, duplicates) in scenario()) {
        let mut order: Vec<Version> = permutation.iter().map(|&i| history[i].clone()).collect();
        for (which, at) in &duplicates {
            let v = which.get(&history).clone();
            let pos = at.index(order.len() + 1);
            order.insert(pos, v);
        }
        let expected = history.iter().fold(None, |stored: Option<Version>, v| {
            Some(apply(stored.as_ref(), v.clone()).0)
        });

        let engine = MemoryEngine::new(Duration::from_secs(3600));
        let key = StorageKey::new("prop", b"key").expect("key");
        for v in &order {
            engine.apply(&key, v.clone(), None).expect("apply");
        }
        prop_assert_eq!(engine.get(&key).expect("get"), expected.clone());

        // A second replica receiving the minting order digests identically.
        let other = MemoryEngine::new(Duration::from_secs(3600));
        for v in &history {
            other.apply(&key, v.clone(), None).expect("apply");
        }
        let range = pairdb_storage::engine::TokenRange::full("prop");
        prop_assert_eq!(engine.digest(&range).expect("digest"), other.digest(&range).expect("digest"));
    }
}
