//! The log-structured merge-tree engine, built up module by module: so far its commit log,
//! table files, manifest and record codec; the engine that joins them comes next.
//!
//! * [`engine`] — the [`StorageEngine`](crate::engine::StorageEngine) they make up;
//! * [`cache`] — the block and row caches;
//! * [`codec`] — versions and applied-keys entries as the engine stores them;
//! * [`fs`] — the file system under it all, and a simulated one that loses power;
//! * [`log`] — the checksummed, segmented commit log with group commit;
//! * [`manifest`] — the set of tables, changed atomically by logged edits;
//! * [`memtable`] — the newest writes, in a concurrent skiplist, with sequence numbers;
//! * [`sstable`] — sorted tables: blocks, bloom filters and table files.

pub mod cache;
pub mod codec;
pub mod engine;
pub mod fs;
pub mod log;
pub mod manifest;
pub mod memtable;
pub mod sstable;
