//! Commit-log segments: decoding a header or a fragment never panics on any bytes, at any offset,
//! and a record or sync mark that decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pairdb_storage::lsm::log::format::{self, Kind};

fuzz_target!(|data: &[u8]| {
    let _ = format::decode_header(data);
    for offset in 0..data.len().min(64) {
        if let Ok(f) = format::decode_fragment(data, offset) {
            if f.kind == Kind::Full && !f.batch_start {
                let mut out = Vec::new();
                format::encode_record(&mut out, offset as u64, f.payload);
                assert_eq!(out.as_slice(), &data[offset..offset + out.len()]);
            }
            if f.kind == Kind::Synced && !f.batch_start {
                if let Some((segment, through)) = format::decode_synced(f.payload) {
                    let mut out = Vec::new();
                    format::encode_synced(&mut out, offset as u64, segment, through);
                    assert_eq!(out.as_slice(), &data[offset..offset + out.len()]);
                }
            }
        }
    }
});
