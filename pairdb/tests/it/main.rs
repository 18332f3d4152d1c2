//! Cluster tests: the real gRPC services on loopback, driven through the REST gateway and, where a
//! test must force a situation, directly over the storage RPC.

mod anti_entropy;
mod checker;
mod handoff;
mod harness;

mod conflicts;
mod exactly_once;
mod faults;
mod grpc_api;
mod http_errors;
mod idempotency;
mod loadtest;
mod membership;
mod process_faults;
mod process_membership;
mod processes;
mod proxy;
mod read_repair;
mod sdk;
mod storage_security;
mod stores;
mod tenant_changes;
mod traces;
