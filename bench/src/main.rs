//! The storage engines through one harness, db_bench style: 16-byte random keys, 100-byte values.
//! `lsm` and `memory` run through `StorageEngine::apply`/`get`; fjall through an adapter doing the
//! same resolution (read the stored version, resolve, write), with equal durability.
//!
//!   make bench-engine                      # 1,000,000 keys
//!   BENCH_KEYS=200000 make bench-engine
//!   BENCH_DIR=/mnt/disk make bench-engine  # where the engines' files go
//!   BENCH_ENGINES=lsm,fjall make bench-engine  # some of the engines only
//!
//! Prints ops/s, p99 and worst latency per engine and workload, on-disk size after settling, and
//! the ratios lsm / fjall and lsm / rocksdb per row. A benchmark, never a test: nothing is
//! asserted.
//!
//!   make bench-engine ROCKSDB=1            # RocksDB too (its C++ build takes about half an
//!                                          # hour here and needs libclang-dev)

/// The allocator `pairdb` itself runs on, for every engine alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pairdb_core::version::{self, MintRequest};
use pairdb_core::{Actor, ApplyOutcome, Hlc, StorageKey, Version};
use pairdb_storage::durability::Durability;
use pairdb_storage::engine::{PageLimit, StorageEngine, TokenRange};
use pairdb_storage::lsm::codec;
use pairdb_storage::lsm::engine::{LsmEngine, LsmOptions};
use pairdb_storage::memory::MemoryEngine;

#[cfg(feature = "rocksdb")]
mod rocks;

const TTL: Duration = Duration::from_secs(3600);
const NAMESPACE: &str = "bench";
/// Bytes of cache every engine gets.
const CACHE_BYTES: u64 = 32 << 20;

/// One engine under test.
trait Engine: Send + Sync {
    fn put(&self, key: &StorageKey, version: Version);
    fn get(&self, key: &StorageKey) -> Option<Version>;
    fn scan_all(&self) -> u64;
    /// Every engine settles the same way: its memtable flushed, its background work done.
    fn settle(&self) {}
}

struct Ours(Arc<dyn StorageEngine>);

impl Engine for Ours {
    fn put(&self, key: &StorageKey, version: Version) {
        self.0.apply(key, version, None).expect("apply");
    }
    fn get(&self, key: &StorageKey) -> Option<Version> {
        self.0.get(key).expect("get")
    }
    fn scan_all(&self) -> u64 {
        let range = TokenRange::full(NAMESPACE);
        let mut after: Option<StorageKey> = None;
        let mut n = 0;
        loop {
            let page = self
                .0
                .scan(&range, after.as_ref(), PageLimit::entries(1000))
                .expect("scan");
            n += page.entries.len() as u64;
            after = page.entries.last().map(|(k, _)| k.clone());
            if !page.more {
                return n;
            }
        }
    }
}

struct Lsm(Arc<LsmEngine>);

impl Engine for Lsm {
    fn put(&self, key: &StorageKey, version: Version) {
        self.0.apply(key, version, None).expect("apply");
    }
    fn get(&self, key: &StorageKey) -> Option<Version> {
        self.0.get(key).expect("get")
    }
    fn scan_all(&self) -> u64 {
        Ours(Arc::clone(&self.0) as Arc<dyn StorageEngine>).scan_all()
    }
    fn settle(&self) {
        let _ = self.0.freeze();
        let _ = self.0.wait_idle();
    }
}

/// fjall, resolving versions as our engines do.
struct Fjall {
    keyspace: fjall::Keyspace,
    partition: fjall::PartitionHandle,
    durable: bool,
}

impl Engine for Fjall {
    fn put(&self, key: &StorageKey, version: Version) {
        let k = key.encode();
        let stored = self
            .partition
            .get(&k)
            .expect("fjall get")
            .map(|v| codec::decode_version(&v).expect("decode"));
        let (resolved, outcome) = version::apply(stored.as_ref(), version);
        if outcome != ApplyOutcome::Superseded {
            self.partition
                .insert(k, codec::encode_version(&resolved))
                .expect("fjall insert");
            if self.durable {
                self.keyspace
                    .persist(fjall::PersistMode::SyncData)
                    .expect("fjall persist");
            }
        }
    }
    fn get(&self, key: &StorageKey) -> Option<Version> {
        self.partition
            .get(key.encode())
            .expect("fjall get")
            .map(|v| codec::decode_version(&v).expect("decode"))
    }
    fn settle(&self) {
        self.partition
            .rotate_memtable_and_wait()
            .expect("fjall flush");
    }
    fn scan_all(&self) -> u64 {
        let mut n = 0;
        for item in self.partition.iter() {
            let (_, v) = item.expect("fjall iter");
            let _ = codec::decode_version(&v).expect("decode");
            n += 1;
        }
        n
    }
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn key(i: u64) -> StorageKey {
    // 16 random-looking bytes per key.
    let mut h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD6E8_FEB8_6659_FD93;
    h ^= h >> 29;
    let user = format!("{:016x}", h);
    StorageKey::new(NAMESPACE, user.as_bytes()).expect("key")
}

fn version_for(i: u64, actor: &Actor, hlc: &Hlc) -> Version {
    let request = MintRequest {
        value: {
            let mut v = format!("{i:020}").into_bytes();
            v.resize(100, b'v');
            v
        },
        content_type: "application/octet-stream".into(),
        ..MintRequest::default()
    };
    version::mint(None, request, actor, hlc).0
}

/// Latencies and throughput of one workload.
struct Row {
    ops: u64,
    elapsed: Duration,
    p99: Duration,
    worst: Duration,
    /// Operations slower than a millisecond.
    over_1ms: u64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

fn measure(threads: usize, ops_per_thread: u64, op: impl Fn(usize, u64) + Sync) -> Row {
    let started = Instant::now();
    let mut all: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let op = &op;
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(ops_per_thread as usize);
                    for i in 0..ops_per_thread {
                        let at = Instant::now();
                        op(t, i);
                        lat.push(at.elapsed());
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let elapsed = started.elapsed();
    all.sort_unstable();
    let p99 = all
        .get(all.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default();
    Row {
        ops: all.len() as u64,
        elapsed,
        p99,
        worst: all.last().copied().unwrap_or_default(),
        over_1ms: all
            .iter()
            .filter(|d| **d > Duration::from_millis(1))
            .count() as u64,
    }
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_size(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            };
        }
    }
    total
}

fn open(name: &str, dir: &Path, durability: Durability) -> Box<dyn Engine> {
    match name {
        "lsm" => {
            // The same memory for caches as fjall gets: blocks and rows together.
            let options = LsmOptions {
                block_cache_bytes: CACHE_BYTES - CACHE_BYTES / 4,
                row_cache_bytes: CACHE_BYTES / 4,
                ..LsmOptions::new(durability, TTL)
            };
            Box::new(Lsm(Arc::new(
                LsmEngine::open(dir, options).expect("open lsm"),
            )))
        }
        "memory" => Box::new(Ours(Arc::new(MemoryEngine::new(TTL)))),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => Box::new(rocks::Rocks::open(
            dir,
            durability == Durability::Always,
            CACHE_BYTES,
        )),
        _ => {
            let keyspace = fjall::Config::new(dir)
                .cache_size(CACHE_BYTES)
                .open()
                .expect("open fjall");
            let partition = keyspace
                .open_partition("bench", fjall::PartitionCreateOptions::default())
                .expect("fjall partition");
            Box::new(Fjall {
                keyspace,
                partition,
                durable: durability == Durability::Always,
            })
        }
    }
}

fn main() {
    // As `pairdb` does: no transparent huge pages (their faults stall writers for milliseconds).
    // SAFETY: `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` only reads its integer arguments.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    let keys: u64 = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(1_000_000);
    let durable_ops: u64 = std::env::var("BENCH_DURABLE_OPS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(2_000);
    let base: PathBuf =
        std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let chosen =
        std::env::var("BENCH_ENGINES").unwrap_or_else(|_| "lsm,memory,fjall,rocksdb".into());
    let engines: Vec<&str> = ["lsm", "memory", "fjall", "rocksdb"]
        .into_iter()
        .filter(|e| *e != "rocksdb" || cfg!(feature = "rocksdb"))
        .filter(|e| chosen.split(',').any(|c| c.trim() == *e))
        .collect();
    let actor = Actor::new("bench", 1);
    let hlc = Hlc::new();
    println!(
        "{keys} keys, 16-byte keys, 100-byte values, through StorageEngine::apply/get (fjall: same resolution)"
    );
    println!(
        "{:<26} {:<7} {:>12} {:>10} {:>10} {:>8} {:>9} {:>11}",
        "workload", "engine", "ops/s", "p99 µs", "worst µs", "> 1 ms", "lsm/fjall", "lsm/rocksdb"
    );
    let mut results: Vec<(String, String, Row)> = Vec::new();
    let mut sizes = Vec::new();
    let mut opens = Vec::new();
    for &name in &engines {
        let dir = tempfile::tempdir_in(&base).expect("tempdir");
        let engine = open(name, dir.path(), Durability::Never);
        let threads = 1;
        let fill = measure(threads, keys, |_, i| {
            engine.put(&key(i), version_for(i, &actor, &hlc));
        });
        results.push(("fillrandom".into(), name.into(), fill));
        engine.settle();
        let read = measure(1, keys.min(200_000), |_, i| {
            let j = Rng(i + 1).next() % keys;
            assert!(engine.get(&key(j)).is_some(), "{name}: key {j} missing");
        });
        results.push(("readrandom".into(), name.into(), read));
        let missing = measure(1, keys.min(200_000), |_, i| {
            assert!(engine.get(&key(keys + i)).is_none());
        });
        results.push(("readmissing".into(), name.into(), missing));
        let started = Instant::now();
        let n = engine.scan_all();
        results.push((
            "full scan".into(),
            name.into(),
            Row {
                ops: n,
                elapsed: started.elapsed(),
                p99: Duration::ZERO,
                worst: Duration::ZERO,
                over_1ms: 0,
            },
        ));
        drop(engine);
        sizes.push((name, dir_size(dir.path())));
        if name != "memory" {
            let started = Instant::now();
            let reopened = open(name, dir.path(), Durability::Never);
            opens.push((name, started.elapsed()));
            drop(reopened);
        }
    }
    for threads in [1usize, 8] {
        for &name in &engines {
            if name == "memory" {
                continue;
            }
            // Earlier rows' writeback must not slow this row's fsyncs.
            let _ = std::process::Command::new("sync").status();
            let dir = tempfile::tempdir_in(&base).expect("tempdir");
            let engine = open(name, dir.path(), Durability::Always);
            let per = durable_ops / threads as u64;
            let row = measure(threads, per, |t, i| {
                let n = (t as u64) << 32 | i;
                engine.put(&key(n), version_for(n, &actor, &hlc));
            });
            results.push((format!("durable writes, {threads} thr"), name.into(), row));
        }
    }
    for (workload, name, row) in &results {
        let ratio = |other: &str| {
            let theirs = results
                .iter()
                .find(|(w, n, _)| w == workload && n == other)
                .map(|(_, _, r)| r.rate());
            match (name.as_str(), theirs) {
                ("lsm", Some(t)) if t > 0.0 => format!("{:.2}", row.rate() / t),
                _ => String::new(),
            }
        };
        println!(
            "{:<26} {:<7} {:>12.0} {:>10} {:>10} {:>8} {:>9} {:>11}",
            workload,
            name,
            row.rate(),
            row.p99.as_micros(),
            row.worst.as_micros(),
            row.over_1ms,
            ratio("fjall"),
            ratio("rocksdb")
        );
    }
    for (name, took) in opens {
        println!(
            "reopen after fillrandom:  {name:<7} {:.0} ms",
            took.as_secs_f64() * 1000.0
        );
    }
    for (name, size) in sizes {
        println!(
            "on disk after fillrandom: {name:<7} {:.1} MiB",
            size as f64 / (1 << 20) as f64
        );
    }
}
