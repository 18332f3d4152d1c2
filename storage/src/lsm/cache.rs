//! The engine's caches, both bounded in bytes and shared by every table of an engine:
//!
//! * the **block cache** keeps decoded data blocks, keyed by (table, block offset): a point read
//!   whose block is cached reads nothing from disk, and a scan reads cached blocks from memory
//!   (scans and compactions look blocks up but never insert them, so one long scan does not
//!   evict the hot blocks);
//! * the **row cache** keeps the values point reads found, keyed by (table, key): a hot key
//!   costs no block search, and many hot rows fit where their blocks would not.
//!
//! Tables never change once written, so nothing cached is ever stale: an entry simply stops
//! being asked for once its table is compacted away, and ages out. Table ids here are unique
//! per process ([`next_table_id`]), never reused, even across reopens of the engine.
//!
//! Both caches are [`quick_cache`]'s (a CLOCK-Pro-style policy that resists scans), sharded for
//! concurrent readers.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};

use super::sstable::block::Block;

/// Bytes an entry costs beyond its payload (the cache's own bookkeeping, approximately).
const ENTRY_OVERHEAD: u64 = 64;

/// A fresh id for a table being opened: unique in this process.
pub fn next_table_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Clone, Copy)]
struct BlockWeight;

impl Weighter<(u64, u64), Arc<Block>> for BlockWeight {
    fn weight(&self, _key: &(u64, u64), block: &Arc<Block>) -> u64 {
        block.size() as u64 + ENTRY_OVERHEAD
    }
}

/// Hits and misses of one cache.
#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Counters {
    fn count<T>(&self, found: Option<T>) -> Option<T> {
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn add(&self, hits: u64, misses: u64) {
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(misses, Ordering::Relaxed);
    }

    fn read(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// Decoded data blocks, bounded in bytes.
pub struct BlockCache {
    cache: Cache<(u64, u64), Arc<Block>, BlockWeight>,
    counters: Counters,
}

impl BlockCache {
    /// A cache holding about `bytes` of blocks (at least one block).
    pub fn new(bytes: u64) -> BlockCache {
        let items = usize::try_from(bytes / 4096).unwrap_or(usize::MAX).max(16);
        BlockCache {
            cache: Cache::with_weighter(items, bytes.max(1), BlockWeight),
            counters: Counters::default(),
        }
    }

    /// The block at `offset` of table `table`, if cached; counted as a hit or miss if `count`
    /// (point reads are; scans and compactions are not, so the hit rate is the point reads').
    pub fn get(&self, table: u64, offset: u64, count: bool) -> Option<Arc<Block>> {
        let found = self.cache.get(&(table, offset));
        if count {
            self.counters.count(found)
        } else {
            found
        }
    }

    /// Counts lookups made uncounted (`count` false) that are to count after all.
    pub fn count(&self, hits: u64, misses: u64) {
        self.counters.add(hits, misses);
    }

    /// Caches the block at `offset` of table `table`.
    pub fn insert(&self, table: u64, offset: u64, block: Arc<Block>) {
        self.cache.insert((table, offset), block);
    }

    /// Lookups that found their block, and lookups that did not.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        self.counters.read()
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }
}

/// A row cache key: (table, key).
#[derive(PartialEq, Eq)]
struct RowKey(u64, Vec<u8>);

/// A row cache key looked up without copying the key.
struct RowRef<'a>(u64, &'a [u8]);

impl Hash for RowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        RowRef(self.0, &self.1).hash(state);
    }
}

impl Hash for RowRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
        state.write(self.1);
    }
}

impl Equivalent<RowKey> for RowRef<'_> {
    fn equivalent(&self, key: &RowKey) -> bool {
        self.0 == key.0 && self.1 == key.1.as_slice()
    }
}

#[derive(Clone, Copy)]
struct RowWeight;

impl Weighter<RowKey, Arc<[u8]>> for RowWeight {
    fn weight(&self, key: &RowKey, value: &Arc<[u8]>) -> u64 {
        (key.1.len() + value.len()) as u64 + ENTRY_OVERHEAD
    }
}

/// Values found by point reads, per table, bounded in bytes.
pub struct RowCache {
    cache: Cache<RowKey, Arc<[u8]>, RowWeight>,
    counters: Counters,
}

impl RowCache {
    /// A cache holding about `bytes` of keys and values.
    pub fn new(bytes: u64) -> RowCache {
        let items = usize::try_from(bytes / 256).unwrap_or(usize::MAX).max(16);
        RowCache {
            cache: Cache::with_weighter(items, bytes.max(1), RowWeight),
            counters: Counters::default(),
        }
    }

    /// The value table `table` holds under `key`, if cached.
    pub fn get(&self, table: u64, key: &[u8]) -> Option<Arc<[u8]>> {
        self.counters.count(self.peek(table, key))
    }

    /// [`get`](Self::get), not counted as a hit or a miss.
    pub fn peek(&self, table: u64, key: &[u8]) -> Option<Arc<[u8]>> {
        self.cache.get(&RowRef(table, key))
    }

    /// Counts lookups made with [`peek`](Self::peek) that are to count after all.
    pub fn count(&self, hits: u64, misses: u64) {
        self.counters.add(hits, misses);
    }

    /// Caches the value table `table` holds under `key`.
    pub fn insert(&self, table: u64, key: &[u8], value: Arc<[u8]>) {
        self.cache.insert(RowKey(table, key.to_vec()), value);
    }

    /// Lookups that found their row, and lookups that did not.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        self.counters.read()
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_found_by_borrowed_keys_and_counted() {
        let rows = RowCache::new(1 << 20);
        assert!(rows.get(1, b"k").is_none());
        rows.insert(1, b"k", Arc::from(&b"v"[..]));
        assert_eq!(rows.get(1, b"k").as_deref(), Some(&b"v"[..]));
        assert!(rows.get(2, b"k").is_none(), "another table's row");
        assert_eq!(rows.hits_and_misses(), (1, 2));
    }

    #[test]
    fn caches_stay_within_their_bytes() {
        let rows = RowCache::new(64 << 10);
        for i in 0..10_000u32 {
            rows.insert(1, &i.to_be_bytes(), Arc::from(vec![0u8; 100]));
        }
        assert!(rows.bytes() <= 64 << 10, "{} bytes", rows.bytes());
    }
}
