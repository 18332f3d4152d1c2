//! The conformance suite every [`StorageEngine`] must pass.
//!
//! Compiled into the library (not only under `cfg(test)`) so each engine's own tests run the same
//! cases: a test passing on the memory engine passes on every engine. Each case takes a factory
//! returning a fresh, empty engine, and panics (like an assertion) when the engine misbehaves.
//! Factories must give engines an applied-keys TTL of at least a minute, and a tombstone grace
//! period of at least a day.
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use pairdb_storage::{conformance, engine::StorageEngine, memory::MemoryEngine};
//!
//! conformance::run_all(&|| {
//!     Arc::new(MemoryEngine::new(Duration::from_secs(3600))) as Arc<dyn StorageEngine>
//! });
//! ```
//!
//! Versions are minted with [`pairdb_core::version::mint`] on several actors, exactly as leaders
//! mint them, so histories are realistic: descendants, concurrent siblings, tombstones.

use std::sync::Arc;

use pairdb_core::version::{self, AppliedWrite, MintRequest, WriteRecord};
use pairdb_core::{Actor, ApplyOutcome, Hlc, StorageKey, Version};

use crate::engine::{EngineError, PageLimit, ScanPage, StorageEngine, TokenRange, entry_bytes};

/// Builds a fresh, empty engine for one case.
pub type EngineFactory<'a> = &'a dyn Fn() -> Arc<dyn StorageEngine>;

/// A conformance case.
pub type Case = fn(EngineFactory<'_>);

/// Every case, by name. [`run_all`] runs them in this order; engine test suites may instead
/// generate one test per entry.
pub const CASES: &[(&str, Case)] = &[
    ("apply_order_does_not_matter", apply_order_does_not_matter),
    ("apply_reports_outcomes", apply_reports_outcomes),
    (
        "tombstones_are_stored_and_returned",
        tombstones_are_stored_and_returned,
    ),
    (
        "scans_respect_ranges_and_pages",
        scans_respect_ranges_and_pages,
    ),
    ("digests_compare_contents", digests_compare_contents),
    (
        "delete_range_drops_only_the_range",
        delete_range_drops_only_the_range,
    ),
    ("scans_respect_byte_budgets", scans_respect_byte_budgets),
    (
        "applied_keys_index_finds_recorded_writes",
        applied_keys_index_finds_recorded_writes,
    ),
    (
        "watermarks_never_purge_what_they_must_keep",
        watermarks_never_purge_what_they_must_keep,
    ),
];

/// Runs every case in [`CASES`], each on a fresh engine from `make`. Panics on the first
/// failure, naming the case.
pub fn run_all(make: EngineFactory<'_>) {
    for (name, case) in CASES {
        tracing::debug!(case = name, "conformance case");
        case(make);
    }
}

fn ok<T>(result: Result<T, EngineError>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// `engine.get(key)`, checking on the way that an answer from memory alone, when the engine
/// gives one, is the same.
fn got(engine: &dyn StorageEngine, key: &StorageKey) -> Option<Version> {
    // Before the read (nothing it caches yet) and after it.
    let before = engine.get_in_memory(key);
    let stored = ok(engine.get(key), "get");
    for in_memory in [before, engine.get_in_memory(key)].into_iter().flatten() {
        assert_eq!(
            ok(in_memory, "get_in_memory"),
            stored,
            "get_in_memory answered differently from get"
        );
    }
    stored
}

fn key(namespace: &str, user_key: &str) -> StorageKey {
    match StorageKey::new(namespace, user_key.as_bytes()) {
        Ok(k) => k,
        Err(e) => panic!("test key ({namespace:?}, {user_key:?}): {e}"),
    }
}

/// A key at an explicit token, so range boundaries can be placed exactly.
fn key_at(namespace: &str, token: u64, user_key: &str) -> StorageKey {
    StorageKey {
        namespace: namespace.to_owned(),
        token,
        key: user_key.as_bytes().to_vec(),
    }
}

fn write(value: &str) -> MintRequest {
    MintRequest {
        value: value.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        ..MintRequest::default()
    }
}

fn delete() -> MintRequest {
    MintRequest {
        tombstone: true,
        ..MintRequest::default()
    }
}

fn mint(stored: Option<&Version>, request: MintRequest, actor: &Actor, hlc: &Hlc) -> Version {
    version::mint(stored, request, actor, hlc).0
}

/// A realistic history of one key, as leaders on three nodes would mint it: a chain on `node-a`,
/// a blind write on `node-b` concurrent with everything before it, a sibling on `node-c`
/// concurrent with `node-a`'s second write (with an idempotency key), a tombstone covering all
/// of those, and a last write on `node-a` concurrent with the tombstone. Minted in this order, so
/// later versions carry greater timestamps.
pub fn sample_history() -> Vec<Version> {
    let hlc = Hlc::new();
    let a = Actor::new("node-a", 1);
    let b = Actor::new("node-b", 1);
    let c = Actor::new("node-c", 2);
    let a1 = mint(None, write("a1"), &a, &hlc);
    let b1 = mint(None, write("b1"), &b, &hlc);
    let a2 = mint(Some(&a1), write("a2"), &a, &hlc);
    let c1 = mint(
        Some(&a1),
        MintRequest {
            context: Some(a1.context()),
            idempotency_key: "retry-1".into(),
            ..write("c1")
        },
        &c,
        &hlc,
    );
    let seen_all = a2.resolve(&c1).resolve(&b1);
    let b2 = mint(
        Some(&seen_all),
        MintRequest {
            context: Some(seen_all.context()),
            ..delete()
        },
        &b,
        &hlc,
    );
    let a3 = mint(Some(&a2), write("a3"), &a, &hlc);
    vec![a1, b1, a2, c1, b2, a3]
}

/// The version an engine must hold after applying `versions` in any order: the fold of
/// [`pairdb_core::version::apply`]. `None` for no versions.
pub fn expected_resolution(versions: &[Version]) -> Option<Version> {
    versions.iter().fold(None, |stored, v| {
        Some(version::apply(stored.as_ref(), v.clone()).0)
    })
}

/// A deterministic permutation of `0..n` (Fisher–Yates driven by xorshift), so failures
/// reproduce without a random-number dependency.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = (state % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Apply orders of `n` versions: forward, reversed, seeded shuffles, and shuffles with
/// duplicates at the front, the back and in the middle.
fn apply_orders(n: usize) -> Vec<Vec<usize>> {
    let mut orders = vec![(0..n).collect::<Vec<_>>(), (0..n).rev().collect()];
    for seed in 1..=6u64 {
        let mut order = shuffled(n, seed);
        if seed % 2 == 0 && n > 0 {
            let i = seed as usize % n;
            order.insert(0, i);
            order.push(i);
            order.insert(order.len() / 2, (i + 1) % n);
        }
        orders.push(order);
    }
    // Every version applied twice in a row, and the whole set applied twice.
    orders.push((0..n).flat_map(|i| [i, i]).collect());
    orders.push((0..n).chain((0..n).rev()).collect());
    orders
}

fn pick(versions: &[Version], order: &[usize]) -> Vec<Version> {
    order
        .iter()
        .filter_map(|&i| versions.get(i).cloned())
        .collect()
}

fn apply_all(
    engine: &dyn StorageEngine,
    key: &StorageKey,
    versions: &[Version],
) -> Option<Version> {
    let mut last = None;
    for v in versions {
        let (_, stored) = ok(engine.apply(key, v.clone(), None), "apply");
        last = Some(stored);
    }
    last
}

/// Any order of applying a set of versions, with duplicates, leaves the identical stored
/// version, equal to the fold of `pairdb_core::version::apply`, and `apply` returns what `get`
/// then reads.
pub fn apply_order_does_not_matter(make: EngineFactory<'_>) {
    let engine = make();
    let history = sample_history();
    let expected = expected_resolution(&history);
    assert!(expected.is_some());
    for (i, order) in apply_orders(history.len()).iter().enumerate() {
        let k = key("conv", &format!("key-{i}"));
        let last = apply_all(engine.as_ref(), &k, &pick(&history, order));
        let stored = got(&*engine, &k);
        assert_eq!(stored, expected, "apply order {order:?} diverged");
        assert_eq!(
            last, stored,
            "apply returned another version than get reads"
        );
    }
    // Every subset's resolution is order-independent too: the first half, both ways round.
    let half = history.get(..3).unwrap_or_default();
    let (k1, k2) = (key("conv", "half-forward"), key("conv", "half-reverse"));
    apply_all(engine.as_ref(), &k1, half);
    let reversed: Vec<Version> = half.iter().rev().cloned().collect();
    apply_all(engine.as_ref(), &k2, &reversed);
    assert_eq!(got(&*engine, &k1), got(&*engine, &k2));
    assert_eq!(got(&*engine, &k1), expected_resolution(half));
}

/// `apply` answers `Applied` when the incoming version wins, `Merged` when it was concurrent and
/// lost, `Superseded` when the stored version already covered it, and returns the version now
/// stored each time.
pub fn apply_reports_outcomes(make: EngineFactory<'_>) {
    let engine = make();
    let hlc = Hlc::new();
    let (a, b, c) = (
        Actor::new("node-a", 1),
        Actor::new("node-b", 1),
        Actor::new("node-c", 1),
    );
    let a1 = mint(None, write("a1"), &a, &hlc);
    let a2 = mint(Some(&a1), write("a2"), &a, &hlc);

    let k = key("outcomes", "chain");
    assert_eq!(got(&*engine, &k), None);
    assert_eq!(
        ok(engine.apply(&k, a1.clone(), None), "apply"),
        (ApplyOutcome::Applied, a1.clone())
    );
    assert_eq!(
        ok(engine.apply(&k, a2.clone(), None), "apply"),
        (ApplyOutcome::Applied, a2.clone())
    );
    assert_eq!(
        ok(engine.apply(&k, a1.clone(), None), "apply"),
        (ApplyOutcome::Superseded, a2.clone())
    );
    assert_eq!(
        ok(engine.apply(&k, a2.clone(), None), "apply"),
        (ApplyOutcome::Superseded, a2.clone())
    );
    assert_eq!(got(&*engine, &k), Some(a2));

    // Two siblings of a1: x minted first, so y has the greater timestamp and wins.
    let x = mint(Some(&a1), write("x"), &b, &hlc);
    let y = mint(Some(&a1), write("y"), &c, &hlc);
    assert!(x.is_concurrent_with(&y));

    let k = key("outcomes", "loser-last");
    assert_eq!(
        ok(engine.apply(&k, y.clone(), None), "apply").0,
        ApplyOutcome::Applied
    );
    let (outcome, merged) = ok(engine.apply(&k, x.clone(), None), "apply");
    assert_eq!(outcome, ApplyOutcome::Merged);
    assert!(merged.clock.descends(&x.clock) && merged.clock.descends(&y.clock));
    assert_eq!(
        (&merged.value, merged.timestamp, &merged.minted_by),
        (&y.value, y.timestamp, &y.minted_by)
    );
    assert_eq!(got(&*engine, &k), Some(merged.clone()));
    assert_eq!(
        ok(engine.apply(&k, y.clone(), None), "apply").0,
        ApplyOutcome::Superseded
    );
    assert_eq!(
        ok(engine.apply(&k, x.clone(), None), "apply").0,
        ApplyOutcome::Superseded
    );

    let k2 = key("outcomes", "winner-last");
    assert_eq!(
        ok(engine.apply(&k2, x, None), "apply").0,
        ApplyOutcome::Applied
    );
    let (outcome, stored) = ok(engine.apply(&k2, y, None), "apply");
    assert_eq!(outcome, ApplyOutcome::Applied);
    assert_eq!(stored, merged, "both orders must store the same version");
}

/// Tombstones are versions like any other: stored, returned by `get` and `scan`, counted by
/// `digest` and `stats`; a concurrent older write never resurrects a deleted key.
pub fn tombstones_are_stored_and_returned(make: EngineFactory<'_>) {
    let engine = make();
    let hlc = Hlc::new();
    let (a, b) = (Actor::new("node-a", 1), Actor::new("node-b", 1));
    let v1 = mint(None, write("v1"), &a, &hlc);
    let stale = mint(Some(&v1), write("stale"), &b, &hlc);
    let gone = mint(Some(&v1), delete(), &a, &hlc);
    assert!(gone.tombstone && gone.value.is_empty());

    let k = key("tomb", "deleted");
    apply_all(engine.as_ref(), &k, &[v1.clone(), gone.clone()]);
    assert_eq!(got(&*engine, &k), Some(gone.clone()));

    // The concurrent write minted before the delete loses; the key stays deleted.
    let (outcome, kept) = ok(engine.apply(&k, stale.clone(), None), "apply");
    assert_eq!(outcome, ApplyOutcome::Merged);
    assert!(kept.tombstone);
    assert!(kept.clock.descends(&stale.clock));
    // And in the other order.
    let k_other = key("tomb", "deleted-other-order");
    apply_all(engine.as_ref(), &k_other, &[stale, gone, v1]);
    assert_eq!(got(&*engine, &k_other), Some(kept));

    // A blind delete of a key never written is stored too.
    let k_blind = key("tomb", "never-written");
    let blind = mint(None, delete(), &b, &hlc);
    assert_eq!(
        ok(engine.apply(&k_blind, blind.clone(), None), "apply").0,
        ApplyOutcome::Applied
    );
    assert_eq!(got(&*engine, &k_blind), Some(blind));

    let page = ok(
        engine.scan(&TokenRange::full("tomb"), None, PageLimit::entries(100)),
        "scan",
    );
    assert_eq!(page.entries.len(), 3);
    assert!(page.entries.iter().all(|(_, v)| v.tombstone));
    assert_eq!(
        ok(engine.digest(&TokenRange::full("tomb")), "digest").keys,
        3
    );
    assert_eq!(engine.stats().keys, 3);
}

/// Repair watermarks purge nothing but tombstones below them and past the grace period: not a
/// tombstone within the grace period, not one above the watermark, not one outside the range
/// or in another namespace, never a live version however old. (Which eligible tombstones go, and
/// when, is each engine's business: the memory engine purges at once, the LSM engine when
/// compaction rewrites them into its bottom level.)
pub fn watermarks_never_purge_what_they_must_keep(make: EngineFactory<'_>) {
    let engine = make();
    let hlc = Hlc::new();
    let a = Actor::new("node-a", 1);
    let now = pairdb_core::hlc::wall_ms();
    let aged = |mut v: Version, days: u64| {
        v.timestamp = (now - days * 24 * 3600 * 1000) << pairdb_core::hlc::LOGICAL_BITS;
        v
    };
    let young = mint(None, delete(), &a, &hlc);
    let must_stay = [
        (key_at("wm", 10, "young-tombstone"), young),
        (
            key_at("wm", 11, "old-live"),
            aged(mint(None, write("old"), &a, &hlc), 60),
        ),
        (
            key_at("wm", 5_000, "old-tombstone-outside"),
            aged(mint(None, delete(), &a, &hlc), 60),
        ),
        (
            key_at("wm-other", 10, "old-tombstone-other-namespace"),
            aged(mint(None, delete(), &a, &hlc), 60),
        ),
        (
            key_at("wm", 12, "old-tombstone-above-watermark"),
            aged(mint(None, delete(), &a, &hlc), 30),
        ),
    ];
    let may_go = (
        key_at("wm", 13, "old-tombstone"),
        aged(mint(None, delete(), &a, &hlc), 60),
    );
    for (k, v) in must_stay.iter().chain(std::iter::once(&may_go)) {
        ok(engine.apply(k, v.clone(), None), "apply");
    }
    // Below the 30-day-old tombstone, above the 60-day-old ones, over tokens 0..=1000 of `wm`.
    let until = (now - 45 * 24 * 3600 * 1000) << pairdb_core::hlc::LOGICAL_BITS;
    ok(
        engine.set_repaired_until(&range("wm", 0, 1_000), until),
        "watermark",
    );
    // Repeating it, or lowering it, is accepted and changes nothing.
    ok(
        engine.set_repaired_until(&range("wm", 0, 1_000), until),
        "same watermark",
    );
    ok(
        engine.set_repaired_until(&range("wm", 0, 1_000), 1),
        "lower watermark",
    );
    ok(
        engine.set_repaired_until(&range("wm-empty", 0, u64::MAX), until),
        "watermark",
    );
    // A namespace no key can have is refused, not stored.
    assert!(matches!(
        engine.set_repaired_until(&range(&"n".repeat(256), 0, 1), until),
        Err(EngineError::Refused(_))
    ));
    ok(engine.flush(), "flush");
    for (k, v) in &must_stay {
        assert_eq!(got(&*engine, k).as_ref(), Some(v), "{k:?} must stay");
    }
    let left = got(&*engine, &may_go.0);
    assert!(left.is_none() || left.as_ref() == Some(&may_go.1));
}

/// Stored keys across namespaces `a`, `ab` (which must not leak into `a`) and `b`, at chosen
/// tokens: `a` has tokens 0, 10, 20 (two keys), 30 and `u64::MAX`.
fn range_fixture(engine: &dyn StorageEngine) -> Vec<StorageKey> {
    let hlc = Hlc::new();
    let actor = Actor::new("node-a", 1);
    let keys = vec![
        key_at("a", 0, "x"),
        key_at("a", 10, "x"),
        key_at("a", 20, "x"),
        key_at("a", 20, "y"),
        key_at("a", 30, "x"),
        key_at("a", u64::MAX, "x"),
        key_at("ab", 10, "x"),
        key_at("ab", 20, "x"),
        key_at("b", 15, "x"),
    ];
    for k in &keys {
        let v = mint(
            None,
            write(&format!("{}/{}", k.namespace, k.token)),
            &actor,
            &hlc,
        );
        ok(engine.apply(k, v, None), "apply");
    }
    keys
}

fn range(namespace: &str, start: u64, end: u64) -> TokenRange {
    TokenRange {
        namespace: namespace.to_owned(),
        start,
        end,
    }
}

fn positions(page: &ScanPage) -> Vec<(String, u64, String)> {
    page.entries
        .iter()
        .map(|(k, _)| {
            (
                k.namespace.clone(),
                k.token,
                String::from_utf8_lossy(&k.key).into_owned(),
            )
        })
        .collect()
}

fn pos(namespace: &str, token: u64, user_key: &str) -> (String, u64, String) {
    (namespace.to_owned(), token, user_key.to_owned())
}

/// Scans return a namespace's entries in stored-key order within an inclusive token range,
/// strictly after the cursor, at most `limit` per page, with `more` telling whether entries
/// remain; other namespaces (including `ab` next to `a`) never appear.
pub fn scans_respect_ranges_and_pages(make: EngineFactory<'_>) {
    let engine = make();
    range_fixture(engine.as_ref());
    let scan = |r: &TokenRange, after: Option<&StorageKey>, limit: usize| {
        ok(engine.scan(r, after, PageLimit::entries(limit)), "scan")
    };

    let all_a = vec![
        pos("a", 0, "x"),
        pos("a", 10, "x"),
        pos("a", 20, "x"),
        pos("a", 20, "y"),
        pos("a", 30, "x"),
        pos("a", u64::MAX, "x"),
    ];
    let full = scan(&TokenRange::full("a"), None, 100);
    assert_eq!(positions(&full), all_a);
    assert!(!full.more);
    for (k, v) in &full.entries {
        assert_eq!(
            got(&*engine, k).as_ref(),
            Some(v),
            "scan returned another version"
        );
    }

    // Boundaries are inclusive at both ends.
    let inner = scan(&range("a", 10, 20), None, 100);
    assert_eq!(
        positions(&inner),
        vec![pos("a", 10, "x"), pos("a", 20, "x"), pos("a", 20, "y")]
    );
    assert!(!inner.more);
    assert_eq!(scan(&range("a", 11, 19), None, 100), ScanPage::default());
    assert_eq!(
        positions(&scan(&range("a", u64::MAX, u64::MAX), None, 100)),
        vec![pos("a", u64::MAX, "x")]
    );
    assert_eq!(
        positions(&scan(&range("a", 0, 0), None, 100)),
        vec![pos("a", 0, "x")]
    );

    // Neighbouring namespaces stay apart.
    assert_eq!(
        positions(&scan(&TokenRange::full("ab"), None, 100)),
        vec![pos("ab", 10, "x"), pos("ab", 20, "x")]
    );
    assert_eq!(
        positions(&scan(&TokenRange::full("b"), None, 100)),
        vec![pos("b", 15, "x")]
    );
    assert_eq!(scan(&TokenRange::full("c"), None, 100), ScanPage::default());
    assert_eq!(scan(&TokenRange::full(""), None, 100), ScanPage::default());

    // Limits and `more`.
    let five = scan(&TokenRange::full("a"), None, 5);
    assert_eq!(five.entries.len(), 5);
    assert!(five.more);
    let six = scan(&TokenRange::full("a"), None, 6);
    assert_eq!(six.entries.len(), 6);
    assert!(!six.more);

    // Paging with `after` visits every entry exactly once.
    let mut paged = Vec::new();
    let mut after: Option<StorageKey> = None;
    let mut pages = 0;
    loop {
        let page = scan(&TokenRange::full("a"), after.as_ref(), 2);
        pages += 1;
        assert!(page.entries.len() <= 2);
        paged.extend(positions(&page));
        after = page.entries.last().map(|(k, _)| k.clone());
        if !page.more {
            break;
        }
        assert!(pages < 10, "scan never ended");
    }
    assert_eq!(paged, all_a);
    assert_eq!(pages, 3);

    // The cursor is exclusive, even between two keys of one token.
    let after_20x = key_at("a", 20, "x");
    assert_eq!(
        positions(&scan(&range("a", 10, 20), Some(&after_20x), 100)),
        vec![pos("a", 20, "y")]
    );
    let after_last = key_at("a", u64::MAX, "x");
    assert_eq!(
        scan(&TokenRange::full("a"), Some(&after_last), 100),
        ScanPage::default()
    );
    // A cursor before the range's start does not widen the range.
    let before = key_at("a", 0, "x");
    assert_eq!(
        positions(&scan(&range("a", 10, 20), Some(&before), 1)),
        vec![pos("a", 10, "x")]
    );
}

/// Digests are equal for equal contents whatever the apply order, ignore other namespaces and
/// keys outside the range, and change when any version in the range changes.
pub fn digests_compare_contents(make: EngineFactory<'_>) {
    let (one, two) = (make(), make());
    let empty = ok(one.digest(&TokenRange::full("d")), "digest");
    assert_eq!(empty.keys, 0);
    assert_eq!(empty, ok(two.digest(&TokenRange::full("d")), "digest"));

    let history = sample_history();
    let keys = [key("d", "k1"), key("d", "k2"), key("d", "k3")];
    let orders = apply_orders(history.len());
    for (i, k) in keys.iter().enumerate() {
        apply_all(one.as_ref(), k, &history);
        let order = orders.get(i + 1).cloned().unwrap_or_default();
        apply_all(two.as_ref(), k, &pick(&history, &order));
    }
    let full = TokenRange::full("d");
    let d1 = ok(one.digest(&full), "digest");
    assert_eq!(d1.keys, 3);
    assert_eq!(d1, ok(two.digest(&full), "digest"));
    assert_ne!(d1, empty);
    // A digest is over the range only: sub-ranges agree too, and cover fewer keys.
    let mut tokens: Vec<u64> = keys.iter().map(|k| k.token).collect();
    tokens.sort_unstable();
    let lower = range("d", 0, tokens.get(1).copied().unwrap_or_default());
    let d_lower = ok(one.digest(&lower), "digest");
    assert_eq!(d_lower.keys, 2);
    assert_eq!(d_lower, ok(two.digest(&lower), "digest"));

    // Data in another namespace (even a prefix-sharing one) does not change the digest.
    let hlc = Hlc::new();
    let actor = Actor::new("node-z", 1);
    for ns in ["da", "", "e"] {
        ok(
            two.apply(
                &key(ns, "k1"),
                mint(None, write("other"), &actor, &hlc),
                None,
            ),
            "apply",
        );
    }
    assert_eq!(ok(two.digest(&full), "digest"), d1);

    // Any change to a version in the range changes the digest, keeping the key count.
    let k1 = keys.first().cloned().unwrap_or_else(|| key("d", "k1"));
    let stored = ok(two.get(&k1), "get");
    let newer = mint(stored.as_ref(), write("newer"), &actor, &hlc);
    ok(two.apply(&k1, newer.clone(), None), "apply");
    let changed = ok(two.digest(&full), "digest");
    assert_eq!(changed.keys, 3);
    assert_ne!(changed, d1);
    ok(one.apply(&k1, newer, None), "apply");
    assert_eq!(ok(one.digest(&full), "digest"), changed);
}

/// `delete_range` drops exactly the range's keys (boundaries inclusive), reports how many, and
/// leaves other ranges and namespaces intact.
pub fn delete_range_drops_only_the_range(make: EngineFactory<'_>) {
    let engine = make();
    let keys = range_fixture(engine.as_ref());
    assert_eq!(engine.stats().keys, keys.len() as u64);

    assert_eq!(
        ok(engine.delete_range(&range("a", 10, 20)), "delete_range"),
        3
    );
    for k in &keys {
        let dropped = k.namespace == "a" && (10..=20).contains(&k.token);
        assert_eq!(got(&*engine, k).is_none(), dropped, "key {k:?}");
    }
    assert_eq!(engine.stats().keys, keys.len() as u64 - 3);
    assert_eq!(
        ok(engine.delete_range(&range("a", 10, 20)), "delete_range"),
        0
    );
    assert_eq!(ok(engine.digest(&range("a", 10, 20)), "digest").keys, 0);

    assert_eq!(
        ok(engine.delete_range(&TokenRange::full("a")), "delete_range"),
        3
    );
    assert_eq!(
        ok(
            engine.scan(&TokenRange::full("a"), None, PageLimit::entries(100)),
            "scan"
        ),
        ScanPage::default()
    );
    assert_eq!(
        ok(
            engine.scan(&TokenRange::full("ab"), None, PageLimit::entries(100)),
            "scan"
        )
        .entries
        .len(),
        2
    );
    assert_eq!(
        ok(
            engine.scan(&TokenRange::full("b"), None, PageLimit::entries(100)),
            "scan"
        )
        .entries
        .len(),
        1
    );
    assert_eq!(engine.stats().keys, 3);
    ok(engine.flush(), "flush");
}

/// Scan pages stay within their byte budget as well as their entry count, always hold at least
/// one entry when any remains (however large), and page through every entry exactly once.
pub fn scans_respect_byte_budgets(make: EngineFactory<'_>) {
    let engine = make();
    let hlc = Hlc::new();
    let actor = Actor::new("node-a", 1);
    let sizes = [10usize, 5_000, 200, 20_000, 1, 3_000, 3_000];
    let mut keys = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let k = key_at("bytes", 100 + i as u64, "k");
        let v = mint(None, write(&"v".repeat(*size)), &actor, &hlc);
        ok(engine.apply(&k, v, None), "apply");
        keys.push(k);
    }
    let full = TokenRange::full("bytes");
    for budget in [1usize, 1_000, 6_000, 25_000, usize::MAX] {
        let limit = PageLimit {
            entries: 100,
            bytes: budget,
        };
        let mut seen = Vec::new();
        let mut after: Option<StorageKey> = None;
        let mut pages = 0;
        loop {
            let page = ok(engine.scan(&full, after.as_ref(), limit), "scan");
            pages += 1;
            assert!(!page.entries.is_empty(), "an empty page with more to come");
            let bytes: usize = page.entries.iter().map(|(k, v)| entry_bytes(k, v)).sum();
            assert!(
                page.entries.len() == 1 || bytes <= budget,
                "page of {bytes} bytes over a budget of {budget}"
            );
            seen.extend(page.entries.iter().map(|(k, _)| k.clone()));
            after = page.entries.last().map(|(k, _)| k.clone());
            if !page.more {
                break;
            }
            assert!(pages <= sizes.len(), "scan never ended");
        }
        assert_eq!(seen, keys, "budget {budget}");
        if budget == 1 {
            assert_eq!(pages, sizes.len(), "one entry per page under a tiny budget");
        }
        if budget == usize::MAX {
            assert_eq!(pages, 1);
        }
    }
}

/// The applied-keys index returns the write with an idempotency key — the version it produced,
/// exactly, its record and what its first apply did — whatever its apply outcome, and nothing for
/// unknown keys, other keys or no key. The first write of a key stays recorded; applies without a
/// record (read repair) neither add nor rewrite entries.
pub fn applied_keys_index_finds_recorded_writes(make: EngineFactory<'_>) {
    let engine = make();
    let hlc = Hlc::new();
    let (a, b) = (Actor::new("node-a", 1), Actor::new("node-b", 1));
    let idem = |value: &str, idempotency_key: &str| MintRequest {
        idempotency_key: idempotency_key.into(),
        ..write(value)
    };
    let record = |n: u8, conflict: bool| WriteRecord {
        fingerprint: [n; 32],
        conflict,
    };
    let found = |version: &Version, record: WriteRecord, outcome: ApplyOutcome| {
        Some(AppliedWrite {
            version: version.clone(),
            record,
            outcome,
            concurrent: false,
        })
    };

    let k = key("idem", "k");
    let first = mint(None, idem("first", "idem-1"), &a, &hlc);
    ok(
        engine.apply(&k, first.clone(), Some(record(1, true))),
        "apply",
    );
    assert_eq!(
        ok(engine.applied(&k, "idem-1"), "applied"),
        found(&first, record(1, true), ApplyOutcome::Applied)
    );
    assert_eq!(ok(engine.applied(&k, "idem-2"), "applied"), None);
    assert_eq!(ok(engine.applied(&k, ""), "applied"), None);
    assert_eq!(
        ok(engine.applied(&key("idem", "other"), "idem-1"), "applied"),
        None
    );
    assert_eq!(
        ok(engine.applied(&key("idem2", "k"), "idem-1"), "applied"),
        None
    );

    // A later write replaces the stored version; the index still finds the first one.
    let second = mint(Some(&first), idem("second", "idem-2"), &a, &hlc);
    ok(
        engine.apply(&k, second.clone(), Some(record(2, false))),
        "apply",
    );
    assert_eq!(
        ok(engine.applied(&k, "idem-1"), "applied"),
        found(&first, record(1, true), ApplyOutcome::Applied)
    );
    assert_eq!(
        ok(engine.applied(&k, "idem-2"), "applied"),
        found(&second, record(2, false), ApplyOutcome::Applied)
    );

    // Recorded even when the version loses on arrival.
    let k2 = key("idem", "late");
    let older = mint(None, idem("older", "idem-late"), &b, &hlc);
    let newer = mint(Some(&older), write("newer"), &a, &hlc);
    ok(engine.apply(&k2, newer, None), "apply");
    assert_eq!(
        ok(
            engine.apply(&k2, older.clone(), Some(record(3, false))),
            "apply"
        )
        .0,
        ApplyOutcome::Superseded
    );
    assert_eq!(
        ok(engine.applied(&k2, "idem-late"), "applied"),
        found(&older, record(3, false), ApplyOutcome::Superseded)
    );

    // Without a record nothing is indexed, and an existing entry is not rewritten: read repair
    // may carry a version with the same idempotency key but another (merged) clock.
    let k3 = key("idem", "repaired");
    let unrecorded = mint(None, idem("x", "idem-repair"), &a, &hlc);
    ok(engine.apply(&k3, unrecorded.clone(), None), "apply");
    assert_eq!(ok(engine.applied(&k3, "idem-repair"), "applied"), None);
    let repaired = Version {
        clock: first.clock.merged(&older.clock),
        ..first.clone()
    };
    ok(engine.apply(&k, repaired, None), "apply");
    assert_eq!(
        ok(engine.applied(&k, "idem-1"), "applied"),
        found(&first, record(1, true), ApplyOutcome::Applied),
        "a repair rewrote the entry"
    );

    // The first write of a key stays recorded: applying it again, even with another record,
    // leaves the entry as it was.
    ok(
        engine.apply(&k, first.clone(), Some(record(9, false))),
        "apply",
    );
    assert_eq!(
        ok(engine.applied(&k, "idem-1"), "applied"),
        found(&first, record(1, true), ApplyOutcome::Applied)
    );

    // What the first apply did is recorded with it: here, a version losing to a concurrent one.
    let k4 = key("idem", "lost");
    let winner = mint(None, write("winner"), &b, &hlc);
    let loser = Version {
        timestamp: winner.timestamp - 1,
        ..mint(None, idem("loser", "idem-lost"), &a, &hlc)
    };
    ok(engine.apply(&k4, winner, None), "apply");
    assert_eq!(
        ok(
            engine.apply(&k4, loser.clone(), Some(record(4, false))),
            "apply"
        )
        .0,
        ApplyOutcome::Merged
    );
    assert_eq!(
        ok(engine.applied(&k4, "idem-lost"), "applied"),
        Some(AppliedWrite {
            version: loser,
            record: record(4, false),
            outcome: ApplyOutcome::Merged,
            concurrent: true,
        })
    );

    assert_eq!(engine.stats().applied_keys, 4);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_with_duplicates() {
        for order in apply_orders(6) {
            for i in 0..6 {
                assert!(order.contains(&i), "{order:?} misses {i}");
            }
        }
        assert_eq!(shuffled(6, 3), shuffled(6, 3));
    }

    #[test]
    fn the_sample_history_has_concurrency_and_a_tombstone() {
        let h = sample_history();
        assert!(h.iter().any(|v| v.tombstone));
        let concurrent = h
            .iter()
            .enumerate()
            .flat_map(|(i, x)| h.iter().skip(i + 1).map(move |y| (x, y)))
            .filter(|(x, y)| x.is_concurrent_with(y))
            .count();
        assert!(concurrent >= 3);
    }
}
