//! Integration tests of the metadata stores: one suite ([`suite`]), run against every backend.

mod sqlite;
mod suite;
