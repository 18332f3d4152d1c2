//! Coordinator settings.

use std::time::Duration;

/// Everything a coordinator needs besides its metadata store.
#[derive(Clone)]
pub struct CoordinatorConfig {
    /// Credential every storage RPC and every gateway call carries.
    pub internal_token: String,
    /// Server secret: API keys are HMAC'd and context tokens sealed under it.
    pub key_secret: Vec<u8>,
    /// The admin API key (empty: no admin key accepted).
    pub admin_key: String,
    /// Default and maximum deadline of a client request.
    pub request_timeout: Duration,
    /// Deadline of replication past the client's answer: a write's mint and its applies to every
    /// replica run under it, whatever deadline the client gave, and so do late reads kept for
    /// read repair. Replicas that do not ack within it get a hint.
    pub replication_timeout: Duration,
    /// Consecutive RPC failures after which a storage node is marked down.
    pub failure_threshold: u32,
    /// How often every storage node is health-checked (and hints replayed).
    pub probe_interval: Duration,
    /// Most bytes of values held by work that outlives its request's answer (write pipelines,
    /// background read repairs). Past it, new writes are refused `503 applied: none` and late
    /// read answers are not repaired, rather than memory growing without bound.
    pub max_in_flight_bytes: usize,
    /// Allowed clock skew for context-token timestamps, in milliseconds.
    pub context_max_skew_ms: u64,
    /// Timeout for connecting to a storage node.
    pub connect_timeout: Duration,
    /// Longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Where the coordinator's request metrics go (served by `--metrics-listen`).
    pub metrics: pairdb_middleware::Metrics,
    /// The tenant-config cache tier shared with the other roles (Redis, or one process's
    /// memory); a tenant change invalidates it. `None`: this coordinator's memory only.
    pub tenant_cache:
        Option<std::sync::Arc<dyn pairdb_middleware::tenant_cache::TenantConfigCache>>,
    /// Most bytes per second a migration streams (0: unpaced), so moving data never starves
    /// the foreground.
    pub stream_bytes_per_sec: u64,
    /// How often a repair of every tenant starts by itself (`None`: only on demand).
    pub repair_interval: Option<Duration>,
    /// Keys a repair digests or reads per second, on all replicas together (0: unpaced).
    pub repair_keys_per_sec: u64,
    /// Where gRPC clients' idempotency records live (Redis, shared by every coordinator);
    /// `None`: this coordinator's memory.
    pub idempotency: Option<std::sync::Arc<dyn pairdb_middleware::idempotency::IdempotencyStore>>,
}

/// Secrets are never printed.
impl std::fmt::Debug for CoordinatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorConfig")
            .field("internal_token", &"<redacted>")
            .field("key_secret", &"<redacted>")
            .field("admin_key", &"<redacted>")
            .field("request_timeout", &self.request_timeout)
            .field("replication_timeout", &self.replication_timeout)
            .field("failure_threshold", &self.failure_threshold)
            .field("probe_interval", &self.probe_interval)
            .field("max_in_flight_bytes", &self.max_in_flight_bytes)
            .field("context_max_skew_ms", &self.context_max_skew_ms)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_key_bytes", &self.max_key_bytes)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("stream_bytes_per_sec", &self.stream_bytes_per_sec)
            .field("repair_interval", &self.repair_interval)
            .field("repair_keys_per_sec", &self.repair_keys_per_sec)
            .field("shared_tenant_cache", &self.tenant_cache.is_some())
            .field("shared_idempotency_store", &self.idempotency.is_some())
            .finish_non_exhaustive()
    }
}

impl CoordinatorConfig {
    /// Defaults for everything but the secrets.
    pub fn new(internal_token: String, key_secret: Vec<u8>, admin_key: String) -> Self {
        CoordinatorConfig {
            internal_token,
            key_secret,
            admin_key,
            request_timeout: pairdb_core::limits::DEFAULT_REQUEST_TIMEOUT,
            replication_timeout: Duration::from_secs(10),
            failure_threshold: 3,
            probe_interval: Duration::from_millis(500),
            max_in_flight_bytes: 256 << 20,
            context_max_skew_ms: pairdb_core::context::DEFAULT_MAX_SKEW_MS,
            connect_timeout: Duration::from_millis(1000),
            max_key_bytes: pairdb_core::limits::MAX_KEY_BYTES,
            max_value_bytes: pairdb_core::limits::MAX_VALUE_BYTES,
            metrics: pairdb_middleware::Metrics::new(),
            tenant_cache: None,
            idempotency: None,
            stream_bytes_per_sec: 32 << 20,
            repair_interval: Some(Duration::from_secs(24 * 3600)),
            repair_keys_per_sec: 50_000,
        }
    }
}
