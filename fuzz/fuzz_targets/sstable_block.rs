//! Table blocks and bloom filters: decoding and reading arbitrary bytes never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pairdb_storage::lsm::sstable::block::Block;
use pairdb_storage::lsm::sstable::filter::Filter;

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode(data.to_vec()) {
        let _ = block.iter_from(None).count();
        let _ = block.iter_from(Some(b"m")).count();
        let _ = block.get(b"key");
    }
    if let Ok(filter) = Filter::decode(data.to_vec()) {
        let _ = filter.may_contain(b"key");
    }
});
