//! Idempotency records as stored in Redis: decoding never panics, and a decoded record encodes
//! to bytes that decode to the same record.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pairdb_middleware::idempotency::Begin;
use pairdb_middleware::idempotency::redis::{decode, encode_record};

fuzz_target!(|data: &[u8]| {
    if let Some(Begin::Done(record)) = decode(data) {
        assert_eq!(decode(&encode_record(&record)), Some(Begin::Done(record)));
    }
});
