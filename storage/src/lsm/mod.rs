//! The log-structured merge-tree engine, built up module by module: so far its commit log.
//!
//! * [`log`] — the checksummed, segmented commit log with group commit.

pub mod log;
