//! Stored keys: decoding never panics, and what decodes re-encodes identically.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pairdb_core::StorageKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = StorageKey::decode(data) {
        assert_eq!(key.encode(), data);
    }
});
