//! The log-structured merge-tree engine, built up module by module: so far its commit log.
//!
//! * [`log`] — the checksummed, segmented commit log with group commit;
//! * [`sstable`] — sorted tables: blocks and bloom filters so far.

pub mod log;
pub mod sstable;
