//! Test support for the LSM crash tests (built only with the `crash-writer` feature, which the
//! crate's own tests enable): writes to an LSM engine as fast as it can and reports each
//! acknowledged write on stdout, so a parent can SIGKILL it at any moment and then check that
//! every acknowledged write survived.
//!
//! ```text
//! lsm-writer <dir> <first write> <keys> <fsync>
//! stdout: "ack <n>" after write n returned; "stats <flushes> <compactions> <manifest rewrites>"
//! ```
//!
//! Write `n` puts the value `w<n>` (padded) under key `k<n mod keys>` of namespace `crash`.

use std::io::Write as _;
use std::path::PathBuf;

use pairdb_core::version::{MintRequest, mint};
use pairdb_core::{Actor, Hlc, StorageKey};
use pairdb_storage::durability::Durability;
use pairdb_storage::engine::StorageEngine;
use pairdb_storage::lsm::engine::{LsmEngine, LsmOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, first, keys, fsync] = args.as_slice() else {
        return Err("usage: lsm-writer <dir> <first write> <keys> <fsync>".into());
    };
    let dir = PathBuf::from(dir);
    let first: u64 = first.parse()?;
    let keys: u64 = keys.parse()?;
    let durability: Durability = fsync.parse()?;
    let engine = LsmEngine::open(&dir, LsmOptions::crash_test(durability))?;
    let actor = Actor::new("writer", first + 1);
    let hlc = Hlc::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for n in first.. {
        let key = StorageKey::new("crash", format!("k{}", n % keys).as_bytes())?;
        let stored = engine.get(&key)?;
        let request = MintRequest {
            value: format!("w{n}:{}", "x".repeat(80)).into_bytes(),
            content_type: "text/plain".into(),
            ..MintRequest::default()
        };
        let (version, _) = mint(stored.as_ref(), request, &actor, &hlc);
        engine.apply(&key, version, None)?;
        writeln!(out, "ack {n}")?;
        if n % 50 == 0 {
            let s = engine.stats();
            writeln!(
                out,
                "stats {} {} {}",
                s.flushes, s.compactions, s.manifest_rewrites
            )?;
        }
        out.flush()?;
    }
    Ok(())
}
