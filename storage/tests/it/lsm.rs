//! The LSM engine: the conformance suite (with default settings, and with memtables and tables
//! so small that every case flushes and compacts), recovery across reopen, and a model test
//! against the memory engine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pairdb_core::version::{AppliedWrite, MintRequest, WriteRecord, mint};
use pairdb_core::{Actor, ApplyOutcome, Hlc, StorageKey, Version};
use pairdb_storage::conformance;
use pairdb_storage::durability::Durability;
use pairdb_storage::engine::{
    EngineError, EngineStats, PageLimit, RangeDigest, ScanPage, StorageEngine, TokenRange,
};
use pairdb_storage::lsm::engine::{LsmEngine, LsmOptions};
use pairdb_storage::lsm::sstable::table::TableOptions;
use pairdb_storage::memory::MemoryEngine;
use proptest::prelude::*;

pub(crate) const TTL: Duration = Duration::from_secs(3600);

/// An engine in a temporary directory that goes with it.
struct TempLsm {
    engine: LsmEngine,
    _dir: tempfile::TempDir,
}

impl StorageEngine for TempLsm {
    fn get(&self, key: &StorageKey) -> Result<Option<Version>, EngineError> {
        self.engine.get(key)
    }
    fn get_in_memory(&self, key: &StorageKey) -> Option<Result<Option<Version>, EngineError>> {
        self.engine.get_in_memory(key)
    }
    fn apply(
        &self,
        key: &StorageKey,
        incoming: Version,
        record: Option<WriteRecord>,
    ) -> Result<(ApplyOutcome, Version), EngineError> {
        self.engine.apply(key, incoming, record)
    }
    fn applied(&self, key: &StorageKey, idem: &str) -> Result<Option<AppliedWrite>, EngineError> {
        self.engine.applied(key, idem)
    }
    fn scan(
        &self,
        range: &TokenRange,
        after: Option<&StorageKey>,
        limit: PageLimit,
    ) -> Result<ScanPage, EngineError> {
        self.engine.scan(range, after, limit)
    }
    fn digest(&self, range: &TokenRange) -> Result<RangeDigest, EngineError> {
        self.engine.digest(range)
    }
    fn delete_range(&self, range: &TokenRange) -> Result<u64, EngineError> {
        self.engine.delete_range(range)
    }
    fn set_repaired_until(&self, range: &TokenRange, until: u64) -> Result<(), EngineError> {
        self.engine.set_repaired_until(range, until)
    }
    fn flush(&self) -> Result<(), EngineError> {
        self.engine.flush()
    }
    fn stats(&self) -> EngineStats {
        self.engine.stats()
    }
    fn is_durable(&self) -> bool {
        self.engine.is_durable()
    }
}

/// Settings under which a few kilobytes of writes flush and compact.
pub(crate) fn tiny() -> LsmOptions {
    LsmOptions {
        memtable_bytes: 2 << 10,
        table: TableOptions {
            block_bytes: 256,
            ..TableOptions::default()
        },
        l0_compaction_trigger: 2,
        level1_bytes: 8 << 10,
        table_target_bytes: 4 << 10,
        log_segment_bytes: 64 << 10,
        // A few keys per piece: every range drop takes several.
        range_delete_piece_bytes: 64,
        ..LsmOptions::new(Durability::Always, TTL)
    }
}

pub(crate) fn open(dir: &Path, options: LsmOptions) -> LsmEngine {
    LsmEngine::open(dir, options).expect("open the LSM engine")
}

fn lsm() -> Arc<dyn StorageEngine> {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), LsmOptions::new(Durability::Always, TTL));
    Arc::new(TempLsm { engine, _dir: dir })
}

fn lsm_tiny() -> Arc<dyn StorageEngine> {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), tiny());
    Arc::new(TempLsm { engine, _dir: dir })
}

macro_rules! conformance_cases {
    ($module:ident, $factory:ident) => {
        mod $module {
            use super::*;

            #[test]
            fn apply_order_does_not_matter() {
                conformance::apply_order_does_not_matter(&$factory);
            }
            #[test]
            fn apply_reports_outcomes() {
                conformance::apply_reports_outcomes(&$factory);
            }
            #[test]
            fn tombstones_are_stored_and_returned() {
                conformance::tombstones_are_stored_and_returned(&$factory);
            }
            #[test]
            fn scans_respect_ranges_and_pages() {
                conformance::scans_respect_ranges_and_pages(&$factory);
            }
            #[test]
            fn digests_compare_contents() {
                conformance::digests_compare_contents(&$factory);
            }
            #[test]
            fn delete_range_drops_only_the_range() {
                conformance::delete_range_drops_only_the_range(&$factory);
            }
            #[test]
            fn scans_respect_byte_budgets() {
                conformance::scans_respect_byte_budgets(&$factory);
            }
            #[test]
            fn applied_keys_index_finds_recorded_writes() {
                conformance::applied_keys_index_finds_recorded_writes(&$factory);
            }
            #[test]
            fn watermarks_never_purge_what_they_must_keep() {
                conformance::watermarks_never_purge_what_they_must_keep(&$factory);
            }
        }
    };
}

conformance_cases!(conformance_default, lsm);
conformance_cases!(conformance_flushing, lsm_tiny);

pub(crate) fn key(i: u32) -> StorageKey {
    StorageKey::new("tenant", format!("key-{i}").as_bytes()).expect("key")
}

fn put(stored: Option<&Version>, value: &str, actor: &Actor, hlc: &Hlc) -> Version {
    let request = MintRequest {
        value: value.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        ..MintRequest::default()
    };
    mint(stored, request, actor, hlc).0
}

pub(crate) fn everything(engine: &dyn StorageEngine) -> Vec<(StorageKey, Version)> {
    let mut out = Vec::new();
    let mut after: Option<StorageKey> = None;
    loop {
        let page = engine
            .scan(
                &TokenRange::full("tenant"),
                after.as_ref(),
                PageLimit::entries(7),
            )
            .expect("scan");
        after = page.entries.last().map(|(k, _)| k.clone());
        out.extend(page.entries);
        if !page.more {
            return out;
        }
    }
}

#[test]
fn everything_acknowledged_survives_reopen_through_flushes_and_compactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let actor = Actor::new("n1", 1);
    let hlc = Hlc::new();
    let model = MemoryEngine::new(TTL);
    {
        let engine = open(dir.path(), tiny());
        for round in 0..5 {
            for i in 0..200u32 {
                let k = key(i);
                let stored = engine.get(&k).expect("get");
                let v = put(
                    stored.as_ref(),
                    &format!("{round}-{i}-{}", "x".repeat(40)),
                    &actor,
                    &hlc,
                );
                engine.apply(&k, v.clone(), None).expect("apply");
                model.apply(&k, v, None).expect("model");
            }
        }
        engine.wait_idle().expect("idle");
        let levels = engine.level_counts();
        assert!(
            levels.iter().skip(1).any(|&n| n > 0),
            "compacted into deeper levels: {levels:?}"
        );
        assert_eq!(everything(&engine), everything(&model));
    }
    let engine = open(dir.path(), tiny());
    assert_eq!(everything(&engine), everything(&model));
    for i in (0..200).step_by(13) {
        assert_eq!(
            engine.get(&key(i)).expect("get"),
            model.get(&key(i)).expect("model")
        );
    }
    let full = TokenRange::full("tenant");
    assert_eq!(
        engine.digest(&full).expect("digest"),
        model.digest(&full).expect("model")
    );
}

#[test]
fn unflushed_writes_come_back_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let actor = Actor::new("n1", 1);
    let hlc = Hlc::new();
    let written;
    {
        let engine = open(dir.path(), LsmOptions::new(Durability::Always, TTL));
        let v = put(None, "only in the log", &actor, &hlc);
        engine.apply(&key(1), v.clone(), None).expect("apply");
        written = v;
        // Dropped without a flush of the memtable.
    }
    let engine = open(dir.path(), LsmOptions::new(Durability::Always, TTL));
    assert_eq!(engine.get(&key(1)).expect("get"), Some(written));
}

#[test]
fn deleted_ranges_stay_deleted_across_compaction_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let actor = Actor::new("n1", 1);
    let hlc = Hlc::new();
    {
        let engine = open(dir.path(), tiny());
        for i in 0..300u32 {
            engine
                .apply(&key(i), put(None, &"v".repeat(30), &actor, &hlc), None)
                .expect("apply");
        }
        let dropped = engine
            .delete_range(&TokenRange::full("tenant"))
            .expect("delete_range");
        assert_eq!(dropped, 300);
        engine.freeze().expect("freeze");
        engine.wait_idle().expect("idle");
        assert!(everything(&engine).is_empty());
    }
    let engine = open(dir.path(), tiny());
    assert!(everything(&engine).is_empty());
    assert_eq!(engine.get(&key(7)).expect("get"), None);
}

/// One operation of a model test.
#[derive(Clone, Debug)]
enum Op {
    Put(u32, usize),
    Delete(u32),
    DropAll,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u32..40, 0usize..200).prop_map(|(k, n)| Op::Put(k, n)),
        2 => (0u32..40).prop_map(Op::Delete),
        1 => Just(Op::DropAll),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any sequence of writes, deletes, range drops and reopens reads back exactly as the
    /// memory engine does, with memtables small enough that it flushes and compacts throughout.
    #[test]
    fn reads_match_the_memory_engine(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let actor = Actor::new("n1", 1);
        let hlc = Hlc::new();
        let model = MemoryEngine::new(TTL);
        let mut engine = open(dir.path(), tiny());
        for op in ops {
            match op {
                Op::Put(k, _) | Op::Delete(k) => {
                    let k = key(k);
                    let stored = model.get(&k).expect("model get");
                    let v = match op {
                        Op::Put(_, n) => put(stored.as_ref(), &"p".repeat(n), &actor, &hlc),
                        _ => mint(stored.as_ref(), MintRequest { tombstone: true, ..MintRequest::default() }, &actor, &hlc).0,
                    };
                    let got = engine.apply(&k, v.clone(), None).expect("apply");
                    let want = model.apply(&k, v, None).expect("model apply");
                    prop_assert_eq!(got, want);
                }
                Op::DropAll => {
                    let range = TokenRange::full("tenant");
                    prop_assert_eq!(engine.delete_range(&range).expect("drop"), model.delete_range(&range).expect("model drop"));
                }
                Op::Reopen => {
                    drop(engine);
                    engine = open(dir.path(), tiny());
                }
            }
        }
        prop_assert_eq!(everything(&engine), everything(&model));
        engine.wait_idle().expect("idle");
        prop_assert_eq!(everything(&engine), everything(&model));
        drop(engine);
        let engine = open(dir.path(), tiny());
        prop_assert_eq!(everything(&engine), everything(&model));
        // The count of keys at open runs in the background.
        engine.wait_idle().expect("idle");
        prop_assert_eq!(engine.stats().keys, model.stats().keys);
        let full = TokenRange::full("tenant");
        prop_assert_eq!(engine.digest(&full).expect("digest"), model.digest(&full).expect("model digest"));
    }
}

/// Writes `n` keys with tiny settings, flushed and compacted, and returns the model.
fn filled(dir: &Path, n: u32) -> MemoryEngine {
    let actor = Actor::new("n1", 1);
    let hlc = Hlc::new();
    let model = MemoryEngine::new(TTL);
    let engine = open(dir, tiny());
    for i in 0..n {
        let v = put(None, &format!("value-{i}-{}", "y".repeat(20)), &actor, &hlc);
        engine.apply(&key(i), v.clone(), None).expect("apply");
        model.apply(&key(i), v, None).expect("model");
    }
    engine.freeze().expect("freeze");
    engine.wait_idle().expect("idle");
    model
}

fn files(dir: &Path, sub: &str, ext: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir.join(sub))
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

#[test]
fn a_flipped_byte_in_a_table_is_reported_never_answered_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = filled(dir.path(), 400);
    let table = files(dir.path(), "tables", "sst")
        .into_iter()
        .next()
        .expect("a table");
    let mut bytes = std::fs::read(&table).expect("read");
    // Inside the first data block.
    bytes[100] ^= 0x5A;
    std::fs::write(&table, &bytes).expect("write");
    // The damage is reported when first read: by the open (which walks every key to count
    // them), or else by the reads that touch the block.
    let engine = match LsmEngine::open(dir.path(), tiny()) {
        Err(EngineError::Corruption { path, .. }) => {
            assert_eq!(
                std::path::Path::new(&path),
                table.as_path(),
                "names the damaged table"
            );
            return;
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(engine) => engine,
    };
    let mut reported = 0;
    for i in 0..400 {
        match engine.get(&key(i)) {
            Ok(got) => assert_eq!(
                got,
                model.get(&key(i)).expect("model"),
                "key {i}: a wrong answer"
            ),
            Err(EngineError::Corruption { path, .. }) => {
                assert_eq!(
                    std::path::Path::new(&path),
                    table.as_path(),
                    "names the damaged table"
                );
                reported += 1;
            }
            Err(e) => panic!("key {i}: {e}"),
        }
    }
    assert!(reported > 0, "the damaged block was read and reported");
    assert!(matches!(
        engine.scan(
            &TokenRange::full("tenant"),
            None,
            PageLimit::entries(10_000)
        ),
        Err(EngineError::Corruption { .. })
    ));
}

#[test]
fn a_truncated_table_stops_the_open_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    filled(dir.path(), 300);
    let table = files(dir.path(), "tables", "sst")
        .into_iter()
        .next()
        .expect("a table");
    let len = std::fs::metadata(&table).expect("meta").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&table)
        .expect("file");
    file.set_len(len / 2).expect("truncate");
    drop(file);
    match LsmEngine::open(dir.path(), tiny()) {
        Err(EngineError::Corruption { path, .. }) => {
            assert_eq!(std::path::Path::new(&path), table.as_path())
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a truncated table opened"),
    }
}

#[test]
fn a_torn_log_tail_loses_only_the_write_it_tore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let actor = Actor::new("n1", 1);
    let hlc = Hlc::new();
    {
        let engine = open(dir.path(), LsmOptions::new(Durability::Always, TTL));
        for i in 0..20 {
            engine
                .apply(&key(i), put(None, &format!("v{i}"), &actor, &hlc), None)
                .expect("apply");
        }
    }
    // The segment the writes went to (the newest may be one made ready ahead of time).
    let segment = files(dir.path(), "log", "log")
        .into_iter()
        .rfind(|p| {
            std::fs::read(p)
                .map(|b| b.iter().skip(20).any(|&x| x != 0))
                .unwrap_or(false)
        })
        .expect("a segment with records");
    // The segment is preallocated: what was written ends at its last non-zero byte. The last
    // record loses its end, as if the crash came before those bytes reached the disk.
    let mut bytes = std::fs::read(&segment).expect("read");
    let end = bytes.iter().rposition(|&b| b != 0).expect("written bytes") + 1;
    bytes[end - 5..end].fill(0);
    std::fs::write(&segment, &bytes).expect("tear");
    let engine = open(dir.path(), LsmOptions::new(Durability::Always, TTL));
    for i in 0..19 {
        let v = engine.get(&key(i)).expect("get").expect("kept");
        assert_eq!(v.value, format!("v{i}").into_bytes());
    }
    assert_eq!(
        engine.get(&key(19)).expect("get"),
        None,
        "the torn write is gone, nothing else"
    );
}

#[test]
fn a_corrupt_manifest_stops_the_open_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    filled(dir.path(), 300);
    // Reopen once so the manifest holds a snapshot and later edits.
    {
        let engine = open(dir.path(), tiny());
        let actor = Actor::new("n1", 2);
        let hlc = Hlc::new();
        for i in 300..600 {
            engine
                .apply(&key(i), put(None, &"z".repeat(40), &actor, &hlc), None)
                .expect("apply");
        }
        engine.freeze().expect("freeze");
        engine.wait_idle().expect("idle");
    }
    let segment = files(dir.path(), "manifest", "log")
        .into_iter()
        .last()
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    // The first record's payload, with intact records after it.
    bytes[40] ^= 0xFF;
    std::fs::write(&segment, &bytes).expect("write");
    match LsmEngine::open(dir.path(), tiny()) {
        Err(EngineError::Corruption { path, offset, .. }) => {
            assert_eq!(std::path::Path::new(&path), segment.as_path());
            assert!(offset > 0);
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a corrupt manifest opened"),
    }
}

/// Point reads of flushed keys are served from the row cache once read, and from the block
/// cache without it; the counters say so.
#[test]
fn point_reads_are_served_from_the_caches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = filled(dir.path(), 200);
    let engine = open(dir.path(), tiny());
    let before = engine.stats();
    for _ in 0..3 {
        for i in 0..200 {
            assert_eq!(
                engine.get(&key(i)).expect("get"),
                model.get(&key(i)).expect("model")
            );
        }
    }
    let after = engine.stats();
    let row_hits = after.row_cache_hits - before.row_cache_hits;
    let row_misses = after.row_cache_misses - before.row_cache_misses;
    assert!(row_misses >= 200, "every key misses once: {row_misses}");
    assert!(row_hits >= 400, "then hits: {row_hits}");
    assert!(after.cache_bytes > 0);

    drop(engine);
    let mut options = tiny();
    options.row_cache_bytes = 0;
    let engine = open(dir.path(), options);
    for _ in 0..2 {
        for i in 0..200 {
            engine.get(&key(i)).expect("get");
        }
    }
    let stats = engine.stats();
    assert_eq!(stats.row_cache_hits + stats.row_cache_misses, 0);
    assert!(
        stats.block_cache_hits > stats.block_cache_misses,
        "blocks read once, then cached: {stats:?}"
    );
}

/// A read from memory alone answers from the memtable, and from tables only once their block
/// is cached; what it answers is always what `get` answers.
#[test]
fn reads_from_memory_need_the_block_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(
        dir.path(),
        LsmOptions {
            // Only cached blocks answer: no row cache in the way.
            row_cache_bytes: 0,
            ..tiny()
        },
    );
    let (actor, hlc) = (Actor::new("n1", 1), Hlc::new());
    let k = key(1);
    let v = put(None, "in the memtable", &actor, &hlc);
    engine.apply(&k, v.clone(), None).expect("apply");
    let in_memory = engine
        .get_in_memory(&k)
        .expect("a memtable answers from memory");
    assert_eq!(in_memory.expect("read"), Some(v.clone()));
    // Absent everywhere in memory, and no table yet: answered too.
    assert_eq!(
        engine.get_in_memory(&key(2)).map(|r| r.ok()),
        Some(Some(None))
    );

    // Reopened after enough writes to push it out of the memtables, the key lives only in a
    // table whose blocks nobody has read yet.
    for i in 10..400 {
        let other = put(None, &format!("filler {i}"), &actor, &hlc);
        engine.apply(&key(i), other, None).expect("apply");
    }
    engine.flush().expect("flush");
    drop(engine);
    let engine = open(
        dir.path(),
        LsmOptions {
            row_cache_bytes: 0,
            ..tiny()
        },
    );
    // No compaction may swap the table (and its cache entries) under the checks below.
    engine.wait_idle().expect("idle");
    assert!(
        engine.get_in_memory(&k).is_none(),
        "an uncached block needs a file read"
    );
    assert_eq!(engine.get(&k).expect("read"), Some(v.clone()));
    // The read cached the block: now memory answers, the same.
    let in_memory = engine
        .get_in_memory(&k)
        .expect("a cached block answers from memory");
    assert_eq!(in_memory.expect("read"), Some(v));
}
