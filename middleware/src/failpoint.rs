//! Test-only failpoints: named places where a test makes the process die as if killed.
//!
//! Compiled only with the `failpoints` feature, which release builds never enable. A failpoint
//! fires when its name is listed in `PAIRDB_FAILPOINTS` (comma-separated), read once per
//! process: the process aborts on the spot — no destructor runs, nothing is released or
//! flushed, exactly as after a SIGKILL.

use std::sync::OnceLock;

/// Before the idempotency layer records a response the service below already produced (the
/// leader applied the write; the record is not written).
pub const BEFORE_IDEMPOTENCY_RECORD: &str = "idempotency-before-record";

/// Aborts the process if failpoint `name` is enabled.
pub fn hit(name: &str) {
    static ENABLED: OnceLock<Vec<String>> = OnceLock::new();
    let enabled = ENABLED.get_or_init(|| {
        std::env::var("PAIRDB_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    });
    if enabled.iter().any(|e| e == name) {
        eprintln!("failpoint {name}: aborting the process");
        std::process::abort();
    }
}
