//! RocksDB (the `rocksdb` crate, behind the `rocksdb` feature), resolving versions as our engines
//! do, with the settings every engine gets here: bloom filters of 10 bits per key, 4 KiB blocks,
//! the same cache size, LZ4 blocks, and the same durability (fsync per acknowledged write when
//! durable).

use pairdb_core::version;
use pairdb_core::{ApplyOutcome, StorageKey, Version};
use pairdb_storage::lsm::codec;
use rocksdb::{BlockBasedOptions, Cache, DB, DBCompressionType, IteratorMode, Options, WriteOptions};

use super::Engine;

pub struct Rocks {
    db: DB,
    write: WriteOptions,
}

impl Rocks {
    pub fn open(dir: &std::path::Path, durable: bool, cache_bytes: u64) -> Rocks {
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_block_size(4096);
        table.set_block_cache(&Cache::new_lru_cache(cache_bytes as usize));
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_block_based_table_factory(&table);
        options.set_compression_type(DBCompressionType::Lz4);
        // Background work on the machine's cores, as the other engines' background threads.
        options.increase_parallelism(2);
        let mut write = WriteOptions::default();
        write.set_sync(durable);
        Rocks {
            db: DB::open(&options, dir).expect("open rocksdb"),
            write,
        }
    }
}

impl Engine for Rocks {
    fn put(&self, key: &StorageKey, version: Version) {
        let k = key.encode();
        let stored = self
            .db
            .get(&k)
            .expect("rocksdb get")
            .map(|v| codec::decode_version(&v).expect("decode"));
        let (resolved, outcome) = version::apply(stored.as_ref(), version);
        if outcome != ApplyOutcome::Superseded {
            self.db
                .put_opt(k, codec::encode_version(&resolved), &self.write)
                .expect("rocksdb put");
        }
    }
    fn get(&self, key: &StorageKey) -> Option<Version> {
        self.db
            .get(key.encode())
            .expect("rocksdb get")
            .map(|v| codec::decode_version(&v).expect("decode"))
    }
    fn scan_all(&self) -> u64 {
        let mut n = 0;
        for item in self.db.iterator(IteratorMode::Start) {
            let (_, v) = item.expect("rocksdb iter");
            let _ = codec::decode_version(&v).expect("decode");
            n += 1;
        }
        n
    }
    fn settle(&self) {
        self.db.flush().expect("rocksdb flush");
        while self
            .db
            .property_int_value("rocksdb.compaction-pending")
            .ok()
            .flatten()
            .is_some_and(|p| p > 0)
            || self
                .db
                .property_int_value("rocksdb.num-running-compactions")
                .ok()
                .flatten()
                .is_some_and(|p| p > 0)
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
