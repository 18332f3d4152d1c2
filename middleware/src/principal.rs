//! Who is calling, as resolved by the auth layer.

/// The authenticated caller, inserted as a request extension by [`AuthLayer`](crate::AuthLayer).
///
/// A request that passed the auth layer always carries exactly one `Principal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The cluster administrator (the admin key, or a gateway forwarding an admin call).
    Admin,
    /// A tenant, through one of its API keys.
    Tenant {
        /// The tenant id; it passed `validate_tenant_id`.
        tenant_id: String,
        /// The API key's public id, or `internal` when a gateway forwarded the call.
        key_id: String,
    },
}

impl Principal {
    /// The tenant id, for a tenant principal.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Principal::Admin => None,
            Principal::Tenant { tenant_id, .. } => Some(tenant_id),
        }
    }
}

/// Request extension marking a call a gateway forwarded with the internal credential: the tenant,
/// consistency and admission were resolved by that gateway and are trusted as sent.
///
/// Only present when the auth layer was configured with `trust_forwarded` and the bearer token
/// matched the internal token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarded;
