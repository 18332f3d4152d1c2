//! Durable appends to the commit log with 1 and 8 writer threads: group commit should make 8
//! writers several times faster than one. Prints figures; asserts nothing.
//!
//!   cargo bench -p pairdb-storage --bench commit_log            # in the target dir's filesystem
//!   BENCH_DIR=/some/disk cargo bench -p pairdb-storage --bench commit_log

use std::time::{Duration, Instant};

use pairdb_storage::durability::Durability;
use pairdb_storage::lsm::log::{CommitLog, LogOptions};

fn run(threads: usize, durability: Durability, window: Duration) -> (f64, u64, u64) {
    let base = std::env::var_os("BENCH_DIR").map(std::path::PathBuf::from);
    let dir = match base {
        Some(b) => tempfile::tempdir_in(b),
        None => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")),
    }
    .expect("tempdir");
    let options = LogOptions {
        durability,
        ..LogOptions::default()
    };
    let log = CommitLog::open(
        pairdb_storage::lsm::fs::os(),
        dir.path(),
        options,
        |_, _| Ok::<(), ()>(()),
    )
    .expect("open");
    let record = [0x5Au8; 140]; // a 16-byte key and a 100-byte value, with version metadata
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while started.elapsed() < window {
                    log.append(&record).expect("append");
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let stats = log.stats();
    (stats.appends as f64 / elapsed, stats.appends, stats.syncs)
}

fn main() {
    let window = Duration::from_secs(3);
    println!(
        "commit log, 140-byte records, {} s per row",
        window.as_secs()
    );
    let mut one = 0.0;
    for threads in [1, 8] {
        let (rate, appends, syncs) = run(threads, Durability::Always, window);
        if threads == 1 {
            one = rate;
        }
        println!(
            "always  {threads} writer(s): {rate:>10.0} appends/s ({appends} appends, {syncs} fsyncs, {:.1} appends per fsync) — {:.2}x one writer",
            appends as f64 / syncs.max(1) as f64,
            rate / one
        );
    }
    let (rate, ..) = run(1, Durability::Never, window);
    println!("never   1 writer(s): {rate:>10.0} appends/s");
}
