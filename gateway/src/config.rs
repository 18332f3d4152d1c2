//! The gateway's configuration.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::GatewayError;
use crate::server::ConnectionLimits;

/// Default end-to-end deadline of a request (`--request-timeout`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = pairdb_core::limits::DEFAULT_REQUEST_TIMEOUT;
/// Default longest key, in bytes after percent-decoding.
pub const DEFAULT_MAX_KEY_BYTES: usize = pairdb_core::limits::MAX_KEY_BYTES;
/// Default largest value, in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = pairdb_core::limits::MAX_VALUE_BYTES;

/// Everything the gateway needs to serve. `Debug` redacts the secrets.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Coordinator gRPC addresses, `host:port` (or a full `http://` URI); at least one.
    pub coordinators: Vec<String>,
    /// The internal service credential sent to coordinators (`PAIRDB_INTERNAL_TOKEN`).
    pub internal_token: String,
    /// The server secret API keys are HMAC'd with (`PAIRDB_KEY_SECRET`).
    pub key_secret: Vec<u8>,
    /// The admin key (`PAIRDB_ADMIN_KEY`); empty disables admin access.
    pub admin_key: String,
    /// Longest deadline of a request; a client's `X-Pairdb-Timeout` is capped by it.
    pub request_timeout: Duration,
    /// Longest key, in bytes after percent-decoding (longer → 400).
    pub max_key_bytes: usize,
    /// Largest value, in bytes (larger → 413).
    pub max_value_bytes: usize,
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Time allowed for each request head to arrive (and for an idle keep-alive connection).
    pub header_read_timeout: Duration,
    /// Rate limiting and idempotency records on (the default). Off only to measure what they
    /// cost: a tenant is then unlimited and a retried write is deduplicated by the leader alone.
    pub admission: bool,
    /// Redis for idempotency records and the shared tier of the tenant-config cache
    /// (`redis://host:port/db`); `None` keeps records in this process.
    pub redis_url: Option<String>,
    /// The tenant-config cache tier shared with other roles, when the caller has one (`pairdb
    /// dev` shares one between its gateway and coordinator); else one in `redis_url`, if set.
    pub tenant_cache: Option<Arc<dyn pairdb_middleware::tenant_cache::TenantConfigCache>>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            coordinators: Vec::new(),
            internal_token: String::new(),
            key_secret: Vec::new(),
            admin_key: String::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_connections: ConnectionLimits::default().max_connections,
            header_read_timeout: ConnectionLimits::default().header_read_timeout,
            admission: true,
            redis_url: None,
            tenant_cache: None,
        }
    }
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("coordinators", &self.coordinators)
            .field("internal_token", &"<redacted>")
            .field("key_secret", &"<redacted>")
            .field("admin_key", &"<redacted>")
            .field("request_timeout", &self.request_timeout)
            .field("max_key_bytes", &self.max_key_bytes)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .finish()
    }
}

impl GatewayConfig {
    /// A configuration for `coordinators` with these secrets and every limit at its default
    /// (request timeout 5000 ms, keys ≤ 1024 bytes, values ≤ 1 MiB).
    pub fn new(
        coordinators: Vec<String>,
        internal_token: String,
        key_secret: Vec<u8>,
        admin_key: String,
    ) -> Self {
        GatewayConfig {
            coordinators,
            internal_token,
            key_secret,
            admin_key,
            ..GatewayConfig::default()
        }
    }

    /// The connection bounds [`crate::server::serve`] applies.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            ..ConnectionLimits::default()
        }
    }

    /// Checks the values the gateway cannot serve with: no coordinator, an empty internal token
    /// or key secret, a zero timeout or limit.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let problem = if self.coordinators.is_empty() {
            Some("at least one coordinator address is required")
        } else if self.internal_token.is_empty() {
            Some("the internal token is empty")
        } else if self.key_secret.is_empty() {
            Some("the key secret is empty")
        } else if self.request_timeout.is_zero() {
            Some("the request timeout is zero")
        } else if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            Some("key and value limits must be positive")
        } else if self.max_connections == 0 || self.header_read_timeout.is_zero() {
            Some("the connection limit and the header read timeout must be positive")
        } else {
            None
        };
        match problem {
            Some(p) => Err(GatewayError::Config(p.to_owned())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_and_validate_checks() {
        let config = GatewayConfig::new(
            vec!["127.0.0.1:1".into()],
            "tok-s3cret".into(),
            b"k".to_vec(),
            "adm-s3cret".into(),
        );
        assert_eq!(config.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(config.max_key_bytes, DEFAULT_MAX_KEY_BYTES);
        assert_eq!(config.max_value_bytes, DEFAULT_MAX_VALUE_BYTES);
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(config.validate().is_ok());
        assert!(GatewayConfig::default().validate().is_err());
    }
}
