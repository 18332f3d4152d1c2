//! Crash safety of the LSM engine, level (b): power loss. The engine runs on
//! [`SimFs`], which on a simulated power cut keeps only what was fsynced, under names whose
//! directory was fsynced (and, in torn rounds, random pages of the rest) — what SIGKILL never
//! tests, since the page cache outlives a process. Writer threads write until a cut at a random
//! moment past a flush, a compaction and a manifest rewrite; then the engine reopens on what
//! survived, and:
//!
//! * under `always`, every acknowledged write is there (or a later one of its key);
//! * under every mode, what survived is a prefix of each writer's writes: a writer's later write
//!   never survives without its earlier ones, and no key holds a value never written to it.
//!
//! `PAIRDB_POWER_ROUNDS` sets the number of cuts per mode (default 12); `PAIRDB_POWER_SEED`
//! replays a failing run.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use pairdb_core::version::{MintRequest, mint};
use pairdb_core::{Actor, Hlc, StorageKey};
use pairdb_storage::durability::Durability;
use pairdb_storage::engine::StorageEngine;
use pairdb_storage::lsm::engine::{LsmEngine, LsmOptions};
use pairdb_storage::lsm::fs::{CrashOptions, Fs, SimFs};

/// Writer threads; each writes its own keys, one write at a time.
const WRITERS: u64 = 3;
/// Keys per writer: write `i` of a writer goes to its key `i % KEYS`.
const KEYS: u64 = 40;

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn key(writer: u64, k: u64) -> StorageKey {
    StorageKey::new("power", format!("w{writer}k{k}").as_bytes()).expect("key")
}

/// The write number a stored value names, checked to belong to `writer`'s key `k`.
fn write_number(engine: &LsmEngine, writer: u64, k: u64, context: &str) -> Option<u64> {
    let stored = engine
        .get(&key(writer, k))
        .unwrap_or_else(|e| panic!("{context}: get w{writer}k{k}: {e}"))?;
    let text = String::from_utf8(stored.value).expect("utf-8 value");
    let n: u64 = text
        .strip_prefix(&format!("w{writer}:"))
        .and_then(|t| t.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!("{context}: w{writer}k{k} holds a value never written: {text:?}")
        });
    assert_eq!(
        n % KEYS,
        k,
        "{context}: w{writer}k{k} holds the write {n} of another key"
    );
    Some(n)
}

/// The last write to key `k` among writes `0..end` of a writer.
fn last_write_below(end: u64, k: u64) -> Option<u64> {
    let last = end.checked_sub(1)?;
    let back = (last + KEYS - k) % KEYS;
    last.checked_sub(back)
}

/// Checks what survived against what each writer wrote (writes `0..issued[w]`, acknowledged up
/// to `acked[w]`), and returns where each writer goes on: past the newest write that survived.
fn check(
    engine: &LsmEngine,
    issued: &[u64],
    acked: &[Option<u64>],
    durability: Durability,
    context: &str,
) -> Vec<u64> {
    let mut resume = Vec::new();
    for writer in 0..WRITERS {
        let found: Vec<Option<u64>> = (0..KEYS)
            .map(|k| write_number(engine, writer, k, context))
            .collect();
        let w = writer as usize;
        for (k, n) in found.iter().enumerate() {
            assert!(
                n.is_none_or(|n| n < issued[w]),
                "{context}: w{writer}k{k} holds write {n:?}, beyond the {} issued",
                issued[w]
            );
        }
        // Every write up to the newest survivor survived too (or was overwritten by a later
        // one of its key): the log keeps a prefix.
        let newest = found.iter().flatten().max().copied();
        let survived_to = newest.map_or(0, |n| n + 1);
        if durability == Durability::Always
            && let Some(a) = acked[w]
        {
            assert!(
                survived_to > a,
                "{context}: writer {writer}'s acknowledged write {a} is lost (newest survivor {newest:?})"
            );
        }
        for (k, n) in found.iter().enumerate() {
            let expected = last_write_below(survived_to, k as u64);
            assert!(
                *n >= expected,
                "{context}: w{writer}k{k} holds {n:?} but write {expected:?} of it came before a survivor ({newest:?})"
            );
        }
        resume.push(survived_to);
    }
    resume
}

/// Runs the writers from `start` until the power is cut; returns the file system left, how
/// many writes each issued, and each one's last acknowledged write.
fn write_until_the_cut(
    fs: &SimFs,
    engine: LsmEngine,
    start: &[u64],
    cut: CrashOptions,
    after_acks: u64,
) -> (SimFs, Vec<u64>, Vec<Option<u64>>) {
    let engine = Arc::new(engine);
    let acks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(WRITERS as usize + 1));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (engine, acks, stop, barrier) = (
                Arc::clone(&engine),
                Arc::clone(&acks),
                Arc::clone(&stop),
                Arc::clone(&barrier),
            );
            let first = start[writer as usize];
            std::thread::spawn(move || {
                let actor = Actor::new(format!("writer{writer}"), 1);
                let hlc = Hlc::new();
                let mut issued = first;
                let mut acked = None;
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    let k = key(writer, issued % KEYS);
                    let Ok(stored) = engine.get(&k) else { break };
                    let request = MintRequest {
                        value: format!("w{writer}:{issued}:{}", "x".repeat(60)).into_bytes(),
                        content_type: "text/plain".into(),
                        ..MintRequest::default()
                    };
                    let (version, _) = mint(stored.as_ref(), request, &actor, &hlc);
                    issued += 1;
                    if engine.apply(&k, version, None).is_err() {
                        break;
                    }
                    acked = Some(issued - 1);
                    acks.fetch_add(1, Ordering::Relaxed);
                }
                (issued, acked)
            })
        })
        .collect();
    barrier.wait();
    // Past a flush, a compaction and a manifest rewrite, then a random number of writes more.
    let mut armed_at = None;
    let began = std::time::Instant::now();
    loop {
        let stats = engine.stats();
        let now = acks.load(Ordering::Relaxed);
        if armed_at.is_none()
            && stats.flushes > 0
            && stats.compactions > 0
            && stats.manifest_rewrites > 0
        {
            armed_at = Some(now);
        }
        if armed_at.is_some_and(|at| now >= at + after_acks) {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the engine never flushed, compacted and rewrote its manifest: {stats:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let survivor = fs.crash(cut);
    stop.store(true, Ordering::Relaxed);
    let mut issued = Vec::new();
    let mut acked = Vec::new();
    for w in writers {
        let (i, a) = w.join().expect("writer");
        issued.push(i);
        acked.push(a);
    }
    // The old engine's threads see only failing calls now; it must still close.
    drop(engine);
    (survivor, issued, acked)
}

fn power_cuts(durability: Durability) {
    let rounds: u32 = std::env::var("PAIRDB_POWER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("PAIRDB_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x2545_F491_4F6C_DD1D);
    let mut rng = seed;
    let dir = Path::new("/db");
    let mut fs = SimFs::new();
    let mut start = vec![0u64; WRITERS as usize];
    let mut total_acked = 0u64;
    for round in 0..rounds {
        let context = format!("{durability} round {round} (PAIRDB_POWER_SEED={seed})");
        let engine = LsmEngine::open_on(
            Arc::new(fs.clone()),
            dir,
            LsmOptions::crash_test(durability),
        )
        .unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
        let cut = CrashOptions {
            seed: next(&mut rng),
            torn: round % 2 == 1,
        };
        let after = next(&mut rng) % 600;
        let (survivor, issued, acked) = write_until_the_cut(&fs, engine, &start, cut, after);
        total_acked += acked.iter().flatten().count() as u64;
        let reopened = LsmEngine::open_on(
            Arc::new(survivor.clone()),
            dir,
            LsmOptions::crash_test(durability),
        )
        .unwrap_or_else(|e| panic!("{context}: reopen after the power cut failed: {e}"));
        start = check(&reopened, &issued, &acked, durability, &context);
        // Closed cleanly, so the next round opens what a clean stop left.
        drop(reopened);
        fs = survivor;
        assert!(
            fs.exists(&dir.join("manifest")),
            "{context}: the manifest directory is gone"
        );
    }
    assert!(total_acked > 0, "nothing was ever acknowledged");
}

#[test]
fn power_cuts_lose_no_write_acknowledged_under_always() {
    power_cuts(Durability::Always);
}

#[test]
fn power_cuts_without_fsync_keep_a_prefix_of_every_writer() {
    power_cuts(Durability::Never);
}

#[test]
fn power_cuts_under_interval_fsync_keep_a_prefix_of_every_writer() {
    power_cuts(Durability::Interval(Duration::from_millis(2)));
}
