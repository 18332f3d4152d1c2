//! Integration tests of the client against a scripted fake gateway ([`fake`]): the wire format
//! it sends, how it reads answers, and when it retries.

mod config;
mod fake;
mod kv;
mod problems;
mod retries;
mod tenants;
