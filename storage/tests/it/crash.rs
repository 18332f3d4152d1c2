//! Crash safety of the LSM engine, level (a): a writer process (`lsm-writer`) killed with SIGKILL
//! at random moments, many times over one directory — each kill after it has flushed, compacted
//! and rewritten its manifest at least once in that run — and after every kill each acknowledged
//! write is checked. `PAIRDB_CRASH_ROUNDS` sets the number of kills (default 8; `make
//! soak-engine` runs hundreds).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pairdb_core::StorageKey;
use pairdb_storage::durability::Durability;
use pairdb_storage::engine::StorageEngine;
use pairdb_storage::lsm::engine::{LsmEngine, LsmOptions};

const KEYS: u64 = 300;

/// A small deterministic generator: kill moments differ per round, and a failing seed replays.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Runs the writer from write `first` until it is killed after a random moment past its first
/// flush, compaction and manifest rewrite. Returns the highest acknowledged write.
fn run_and_kill(dir: &std::path::Path, first: u64, fsync: &str, rng: &mut u64) -> Option<u64> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lsm-writer"))
        .args([
            dir.to_str().expect("utf-8 path"),
            &first.to_string(),
            &KEYS.to_string(),
            fsync,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn lsm-writer");
    let stdout = child.stdout.take().expect("stdout");
    // A writer that hangs without a word still gets killed, and the test fails below.
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            watchdog.recv_timeout(Duration::from_secs(120))
        {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = None;
    let mut armed_at: Option<Instant> = None;
    let delay = Duration::from_micros(next(rng) % 30_000);
    let started = Instant::now();
    while let Some(Ok(line)) = lines.next() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("ack") => acked = words.next().and_then(|n| n.parse().ok()),
            Some("stats") => {
                let n: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
                if armed_at.is_none() && n.len() == 3 && n.iter().all(|&c| c > 0) {
                    armed_at = Some(Instant::now());
                }
            }
            _ => {}
        }
        if armed_at.is_some_and(|at| at.elapsed() >= delay) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writer never flushed, compacted and rewrote its manifest"
        );
    }
    assert!(
        armed_at.is_some(),
        "the writer stopped before it flushed, compacted and rewrote its manifest"
    );
    child.kill().expect("SIGKILL");
    let _ = done.send(());
    // Acknowledgements already in the pipe were given before the kill: they count.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("ack ").and_then(|n| n.parse().ok()) {
            acked = Some(n);
        }
    }
    let status = child.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the writer died of the SIGKILL, not of an error ({status})"
    );
    eprintln!("writes {first}..={acked:?} acknowledged before the kill");
    acked
}

/// Checks that every key holds its last acknowledged write, or a later one (a write in flight at
/// the kill may or may not have survived).
fn check(dir: &std::path::Path, last: &HashMap<u64, u64>, round: u32, seed: u64) {
    let engine = LsmEngine::open(
        dir,
        LsmOptions::new(Durability::Always, Duration::from_secs(3600)),
    )
    .unwrap_or_else(|e| panic!("round {round} (seed {seed}): reopen failed: {e}"));
    for (&k, &acked) in last {
        let key = StorageKey::new("crash", format!("k{k}").as_bytes()).expect("key");
        let stored = engine
            .get(&key)
            .unwrap_or_else(|e| panic!("round {round}: get k{k}: {e}"))
            .unwrap_or_else(|| {
                panic!("round {round} (seed {seed}): k{k} lost (acknowledged write {acked})")
            });
        let text = String::from_utf8(stored.value).expect("utf-8 value");
        let n: u64 = text
            .strip_prefix('w')
            .and_then(|t| t.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("round {round}: k{k} holds a value never written: {text:?}"));
        assert_eq!(
            n % KEYS,
            k,
            "round {round}: k{k} holds another key's write {n}"
        );
        assert!(
            n >= acked,
            "round {round} (seed {seed}): k{k} went back from acknowledged write {acked} to {n}"
        );
    }
}

fn crash_rounds(fsync: &str) {
    let rounds: u32 = std::env::var("PAIRDB_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("PAIRDB_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut rng = seed;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut next_write = 0u64;
    for round in 0..rounds {
        let acked = run_and_kill(dir.path(), next_write, fsync, &mut rng);
        if let Some(top) = acked {
            for n in next_write..=top {
                last.insert(n % KEYS, n);
            }
            // Writes numbered after the last acknowledgement may have landed; start past them.
            next_write = top + 2;
        }
        check(dir.path(), &last, round, seed);
    }
    assert!(!last.is_empty(), "nothing was ever acknowledged");
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_write() {
    crash_rounds("always");
}

#[test]
fn sigkill_loses_nothing_written_to_the_os_even_without_fsync() {
    // The page cache outlives the process: `never` still keeps every acknowledged write.
    crash_rounds("never");
}
