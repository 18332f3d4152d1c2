//! The hint log: replaying any bytes as a hint log never panics, and stops at the first record
//! that does not check out.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pairdb_storage::handoff::hints;

fuzz_target!(|data: &[u8]| {
    let n = hints::decode_all(data);
    assert!(n <= data.len() / 8 + 1);
});
