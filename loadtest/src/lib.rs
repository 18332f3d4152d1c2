//! `pairdb-loadtest`: k6-style scenarios and YCSB workloads against pairdb.
//!
//! A scenario file (TOML, k6's shape) names scenarios — each an executor (how iterations are
//! scheduled: open-model arrival rates, or closed-model VUs) and a workload (a YCSB core
//! workload or a weighted mix of requests) — and thresholds on the run's metrics.
//!
//! - [`duration`]: k6 durations (`"1m30s"`).
//! - [`scenario`]: the file, parsed and validated, errors naming the line.
//! - [`threshold`]: k6 threshold expressions and their evaluation.
//! - [`schedule`]: when each iteration is due (arrival-rate executors) and how many VUs run
//!   (VU executors), as pure functions of time.
//! - [`ycsb`]: YCSB's key choosers (scrambled zipfian, latest, uniform) and core workloads A–F.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![warn(missing_docs)]

pub mod duration;
pub mod scenario;
pub mod schedule;
pub mod threshold;
pub mod ycsb;
