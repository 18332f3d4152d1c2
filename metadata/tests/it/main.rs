//! Integration tests of the metadata stores: one suite ([`suite`]), run against every backend.

mod memory;
mod pg_server;
mod postgres;
mod sqlite;
mod suite;
