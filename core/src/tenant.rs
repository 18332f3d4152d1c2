//! Tenant identifiers.

/// The id does not match `[a-z0-9][a-z0-9_-]{0,62}`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid tenant id: must match [a-z0-9][a-z0-9_-]{{0,62}}")]
pub struct InvalidTenantId;

/// Accepts exactly the ids of `[a-z0-9][a-z0-9_-]{0,62}`; every stored tenant id passed this.
pub fn validate_tenant_id(id: &str) -> Result<(), InvalidTenantId> {
    let b = id.as_bytes();
    let first_ok = b
        .first()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
    if first_ok && rest_ok && b.len() <= 63 {
        Ok(())
    } else {
        Err(InvalidTenantId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        assert!(validate_tenant_id("acme").is_ok());
        assert!(validate_tenant_id("a-b_c9").is_ok());
        assert!(validate_tenant_id(&"a".repeat(63)).is_ok());
        assert!(validate_tenant_id(&"a".repeat(64)).is_err());
        assert!(validate_tenant_id("").is_err());
        assert!(validate_tenant_id("-a").is_err());
        assert!(validate_tenant_id("Acme").is_err());
        assert!(validate_tenant_id("a/b").is_err());
    }
}
