//! The stable error kinds every role reports.
//!
//! Each kind has a slug used on the wire between coordinator and gateway, an HTTP status and a
//! problem `type` URI that clients switch on. The set is append-only: a slug, once published,
//! keeps its meaning.

/// Base of every problem `type` URI.
pub const PROBLEM_BASE: &str = "https://pairdb.dev/problems/";

/// A stable error kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A malformed request: body, field or header.
    BadRequest,
    /// The key is empty, too long, or not one path segment.
    BadKey,
    /// Unknown consistency level.
    BadConsistency,
    /// A context token that is malformed, forged, for another key, or from the future.
    BadContext,
    /// No API key, or an unknown or revoked one.
    Unauthorized,
    /// The key may not act on this resource.
    Forbidden,
    /// The key is absent or deleted.
    KeyNotFound,
    /// The tenant does not exist.
    TenantNotFound,
    /// The API key id does not exist.
    ApiKeyNotFound,
    /// No such route.
    RouteNotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The tenant already exists.
    TenantExists,
    /// The value, or another request body, exceeds its size limit.
    PayloadTooLarge,
    /// The request body did not arrive before the request's deadline.
    RequestTimeout,
    /// An idempotency key was reused for a different write.
    IdempotencyKeyReused,
    /// The tenant is over its rate limit.
    RateLimited,
    /// A request with the same idempotency key is still in flight.
    IdempotencyInFlight,
    /// The consistency level cannot be met with the replicas available.
    QuorumUnavailable,
    /// Replicas did not answer before the deadline; outcome unknown.
    Timeout,
    /// The service cannot serve yet (no placement, metadata unreachable).
    NotReady,
    /// A fault inside pairdb.
    Internal,
    /// The membership or replication change conflicts with the cluster's state (another
    /// migration runs, the node is already a member, or the change would leave a tenant with
    /// more replicas than nodes).
    ClusterConflict,
    /// The storage node is not a member of the cluster.
    NodeNotFound,
    /// No migration or repair has this id.
    JobNotFound,
}

impl ErrorKind {
    /// Every kind, for documentation.
    pub const ALL: [ErrorKind; 24] = [
        ErrorKind::BadRequest,
        ErrorKind::BadKey,
        ErrorKind::BadConsistency,
        ErrorKind::BadContext,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::KeyNotFound,
        ErrorKind::TenantNotFound,
        ErrorKind::ApiKeyNotFound,
        ErrorKind::RouteNotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::TenantExists,
        ErrorKind::PayloadTooLarge,
        ErrorKind::RequestTimeout,
        ErrorKind::IdempotencyKeyReused,
        ErrorKind::RateLimited,
        ErrorKind::IdempotencyInFlight,
        ErrorKind::QuorumUnavailable,
        ErrorKind::Timeout,
        ErrorKind::NotReady,
        ErrorKind::Internal,
        ErrorKind::ClusterConflict,
        ErrorKind::NodeNotFound,
        ErrorKind::JobNotFound,
    ];

    /// The stable slug, e.g. `quorum-unavailable`.
    pub fn slug(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::BadKey => "bad-key",
            ErrorKind::BadConsistency => "bad-consistency",
            ErrorKind::BadContext => "bad-context",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::KeyNotFound => "key-not-found",
            ErrorKind::TenantNotFound => "tenant-not-found",
            ErrorKind::ApiKeyNotFound => "api-key-not-found",
            ErrorKind::RouteNotFound => "route-not-found",
            ErrorKind::MethodNotAllowed => "method-not-allowed",
            ErrorKind::TenantExists => "tenant-exists",
            ErrorKind::PayloadTooLarge => "payload-too-large",
            ErrorKind::RequestTimeout => "request-timeout",
            ErrorKind::IdempotencyKeyReused => "idempotency-key-reused",
            ErrorKind::RateLimited => "rate-limited",
            ErrorKind::IdempotencyInFlight => "idempotency-in-flight",
            ErrorKind::QuorumUnavailable => "quorum-unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NotReady => "not-ready",
            ErrorKind::Internal => "internal",
            ErrorKind::ClusterConflict => "cluster-conflict",
            ErrorKind::NodeNotFound => "node-not-found",
            ErrorKind::JobNotFound => "job-not-found",
        }
    }

    /// The kind of a slug, if known.
    pub fn from_slug(slug: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.slug() == slug)
    }

    /// The HTTP status this kind maps to.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest
            | ErrorKind::BadKey
            | ErrorKind::BadConsistency
            | ErrorKind::BadContext => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::KeyNotFound
            | ErrorKind::TenantNotFound
            | ErrorKind::ApiKeyNotFound
            | ErrorKind::RouteNotFound
            | ErrorKind::NodeNotFound
            | ErrorKind::JobNotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::TenantExists
            | ErrorKind::IdempotencyInFlight
            | ErrorKind::ClusterConflict => 409,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::IdempotencyKeyReused => 422,
            ErrorKind::RateLimited => 429,
            ErrorKind::QuorumUnavailable | ErrorKind::NotReady => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Internal => 500,
        }
    }

    /// A short human title.
    pub fn title(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "Bad request",
            ErrorKind::BadKey => "Invalid key",
            ErrorKind::BadConsistency => "Unknown consistency level",
            ErrorKind::BadContext => "Invalid context token",
            ErrorKind::Unauthorized => "Missing or unknown API key",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::KeyNotFound => "Key not found",
            ErrorKind::TenantNotFound => "Tenant not found",
            ErrorKind::ApiKeyNotFound => "API key not found",
            ErrorKind::RouteNotFound => "No such route",
            ErrorKind::MethodNotAllowed => "Method not allowed",
            ErrorKind::TenantExists => "Tenant already exists",
            ErrorKind::PayloadTooLarge => "Payload too large",
            ErrorKind::RequestTimeout => "Request body not received in time",
            ErrorKind::IdempotencyKeyReused => "Idempotency key reused for a different request",
            ErrorKind::RateLimited => "Rate limit exceeded",
            ErrorKind::IdempotencyInFlight => "A request with this idempotency key is in flight",
            ErrorKind::QuorumUnavailable => "Consistency level cannot be met",
            ErrorKind::Timeout => "Replicas did not answer in time",
            ErrorKind::NotReady => "Not ready",
            ErrorKind::Internal => "Internal error",
            ErrorKind::ClusterConflict => "The change conflicts with the cluster's state",
            ErrorKind::NodeNotFound => "Storage node not found",
            ErrorKind::JobNotFound => "Migration or repair not found",
        }
    }

    /// The problem `type` URI.
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            assert!(seen.insert(k.slug()));
            assert_eq!(ErrorKind::from_slug(k.slug()), Some(k));
        }
    }
}
