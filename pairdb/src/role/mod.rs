//! One module per role the binary runs.

pub mod coordinator;
pub mod dev;
pub mod gateway;
pub mod join;
pub mod storage;
