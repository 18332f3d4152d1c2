//! The log-structured merge-tree engine, built up module by module: so far its commit log and
//! its table files.
//!
//! * [`log`] — the checksummed, segmented commit log with group commit;
//! * [`sstable`] — sorted tables: blocks, bloom filters and table files.

pub mod log;
pub mod sstable;
