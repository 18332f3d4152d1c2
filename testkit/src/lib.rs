//! Test support shared by pairdb's test suites: throwaway servers started from the Debian
//! packages `make test` installs (`postgresql`, `redis-server`), each on a free loopback port and
//! stopped when its guard drops. No test depends on a server already running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod postgres;
pub mod redis;

pub use postgres::PgServer;
pub use redis::RedisServer;
