//! Integration tests of the metadata stores: one suite ([`suite`]), run against every backend.

mod memory;
mod postgres;
mod sqlite;
mod suite;
