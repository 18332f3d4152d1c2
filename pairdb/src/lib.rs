//! The pairdb binary's library: flags, configuration, secrets, and starting each role.
//!
//! `main.rs` only parses flags and calls [`role`]; the cluster tests start the same roles in
//! process through [`local`], with the crash-like storage nodes of `testing` (behind the
//! `testing` feature, which only the crate's own tests enable).
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

pub mod cli;
pub mod config_file;
pub mod local;
pub mod ops_http;
pub mod role;
pub mod secrets;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
