//! The canonical clock encoding: decoding never panics, and what decodes re-encodes identically.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pairdb_core::VectorClock;

fuzz_target!(|data: &[u8]| {
    if let Ok(clock) = VectorClock::decode(data) {
        assert_eq!(clock.encode(), data);
    }
});
