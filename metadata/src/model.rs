//! Rows of the metadata store.

use pairdb_core::Consistency;

/// A tenant's request-rate limit (enforced by the rate-limit layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub requests_per_second: u32,
    /// Bucket size.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            requests_per_second: 1000,
            burst: 2000,
        }
    }
}

/// A tenant's configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TenantConfig {
    /// Matches `[a-z0-9][a-z0-9_-]{0,62}`.
    pub tenant_id: String,
    /// Replicas per key, 1–7.
    pub replication_factor: u32,
    /// Level used when a request names none.
    pub default_consistency: Consistency,
    /// Rate limit.
    pub rate_limit: RateLimit,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
}

/// A stored API key: never the secret, only its HMAC under the server secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public id, the middle part of `pdb_<key id>_<secret>`.
    pub key_id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// HMAC-SHA256(server secret, secret).
    pub secret_hash: Vec<u8>,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
}

/// Membership state of a storage node as stored (liveness is not stored: `down` is observed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Receiving its ranges.
    Joining,
    /// Serving its ranges.
    Active,
    /// Handing its ranges off.
    Leaving,
}

impl NodeState {
    /// `joining`, `active` or `leaving`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Active => "active",
            NodeState::Leaving => "leaving",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "joining" => Some(NodeState::Joining),
            "active" => Some(NodeState::Active),
            "leaving" => Some(NodeState::Leaving),
            _ => None,
        }
    }
}

/// A storage node known to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// Stable id.
    pub node_id: String,
    /// gRPC `host:port`.
    pub address: String,
    /// Membership state.
    pub state: NodeState,
    /// Registration time, RFC 3339 UTC.
    pub created_at: String,
}

/// A long-running cluster job (a migration or a repair) as stored. The body is the coordinator's
/// to define; the store keeps it whole and hands out leases on it (see
/// [`MetadataStore::save_job`](crate::MetadataStore::save_job)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    /// Unique id.
    pub id: String,
    /// What it is (`migration`, `repair`).
    pub kind: String,
    /// Its state, as the coordinator encodes it.
    pub body: String,
    /// Finished (successfully or not): nobody runs it any more.
    pub done: bool,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
}

/// Now as RFC 3339 UTC with second precision, e.g. `2026-11-22T01:02:03Z`.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Formats Unix seconds as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_395_723), "2026-11-23T01:02:03Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
