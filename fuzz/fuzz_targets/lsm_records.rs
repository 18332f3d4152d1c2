//! LSM records: stored versions, applied-keys entries and manifest records decode without
//! panicking on any bytes, and a version that decodes re-encodes identically.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pairdb_storage::lsm::{codec, manifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = codec::decode_version(data) {
        assert_eq!(codec::encode_version(&v), data);
    }
    let _ = codec::decode_applied_from(&mut &data[..]);
    let _ = manifest::decode_record(data);
});
