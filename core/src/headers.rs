//! Header names of the REST contract and of gateway → coordinator metadata.
//!
//! gRPC metadata are HTTP/2 headers, so one set of names serves the gateway, the coordinator,
//! the middleware and the SDK. All names are lowercase, as HTTP/2 requires.

/// The consistency level: requested (one | quorum | all) or applied.
pub const CONSISTENCY: &str = "x-consistency";
/// The query parameter that may carry the level instead of [`CONSISTENCY`].
pub const CONSISTENCY_PARAM: &str = "consistency";
/// The opaque causal context token.
pub const CONTEXT: &str = "x-pairdb-context";
/// `acked=<a>/<n>` on writes, `answered=<a>/<n>` on reads.
pub const REPLICAS: &str = "x-pairdb-replicas";
/// `lww; outcome=won|lost` on writes, `lww` on reads.
pub const CONFLICT: &str = "x-pairdb-conflict";
/// Replicas a blocking read repaired.
pub const READ_REPAIR: &str = "x-pairdb-read-repair";
/// The write's idempotency key, in and out.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// `true` on a replayed response.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The client's deadline in milliseconds.
pub const TIMEOUT: &str = "x-pairdb-timeout";
/// Internal calls only: the tenant a gateway resolved.
pub const TENANT: &str = "x-pairdb-tenant";
/// Internal calls only: `admin` when a gateway forwards a call made with the admin key.
pub const PRINCIPAL: &str = "x-pairdb-principal";
/// W3C Trace Context, incoming.
pub const TRACEPARENT: &str = "traceparent";
/// W3C Trace Context level 2, on every response.
pub const TRACERESPONSE: &str = "traceresponse";
