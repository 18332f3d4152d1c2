//! How many hints a storage node's hint log records per second — each recording fsynced before
//! it returns, as `RecordHints` does — with 1 to 64 concurrent recorders (coordinators handing
//! off writes that a down replica missed, one key per call).
//!
//! `cargo run --release -p pairdb-storage --example hint_rate` (`make bench-hints`); the log goes
//! in a temporary dir under `PAIRDB_BENCH_DIR` (default: the system's), for
//! `PAIRDB_HINT_SECS` (default 3, at most 10: the log holds at most a million hints) seconds per
//! row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pairdb_storage::handoff::HintLog;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: u64 = std::env::var("PAIRDB_HINT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3u64)
        .clamp(1, 10);
    let base = std::env::var_os("PAIRDB_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!(
        "hint log, fsync per recording, {secs} s per row, in {}",
        base.display()
    );
    println!(
        "{:>10} {:>12} {:>14}",
        "recorders", "hints/s", "mean latency"
    );
    for recorders in [1usize, 4, 16, 64] {
        let dir = tempfile::tempdir_in(&base)?;
        let log = Arc::new(HintLog::open(dir.path())?);
        let until = Instant::now() + Duration::from_secs(secs);
        let threads: Vec<_> = (0..recorders)
            .map(|r| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || -> Result<u64, String> {
                    let mut n = 0u64;
                    while Instant::now() < until {
                        let key = format!("key-{r}-{n}").into_bytes();
                        log.record(&[("node-9".into(), "tenant".into(), key)], 0)
                            .map_err(|e| e.to_string())?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        let mut total = 0u64;
        for t in threads {
            total += t.join().map_err(|_| "a recorder panicked")??;
        }
        let rate = total as f64 / secs as f64;
        let latency_us = recorders as f64 * 1e6 / rate.max(1.0);
        println!("{recorders:>10} {rate:>12.0} {latency_us:>12.0}µs");
        assert_eq!(log.counts().pending, total, "every recorded hint is held");
    }
    Ok(())
}
