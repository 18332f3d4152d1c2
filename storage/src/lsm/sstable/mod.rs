//! Sorted string tables: immutable files of sorted key-value entries.
//!
//! * [`block`] — data and index blocks with prefix-compressed keys and restart points;
//! * [`filter`] — the bloom filter that lets a lookup skip a table;
//! * [`table`] — table files: data blocks, filter, index and footer, written once, read by many.

pub mod block;
pub mod filter;
pub mod table;
