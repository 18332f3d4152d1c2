//! Idempotency keys: one per write, reused on every retry of it.

use crate::error::ClientError;

/// A fresh idempotency key: 16 random bytes as 32 lowercase hex characters (128 bits, so two
/// writes never share one by chance).
pub fn generate() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Checks a caller-supplied key against the contract: 1–255 visible ASCII characters
/// (optionally in double quotes, which the server strips). Returns
/// [`ClientError::InvalidIdempotencyKey`] otherwise, before anything is sent.
pub fn validate(key: &str) -> Result<(), ClientError> {
    pairdb_core::idempotency::parse(key.as_bytes())
        .map(|_| ())
        .ok_or(ClientError::InvalidIdempotencyKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_32_hex_and_distinct() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(validate(&a).is_ok());
    }

    #[test]
    fn validates_supplied_keys() {
        assert!(validate("order-42").is_ok());
        assert!(validate("\"order-42\"").is_ok());
        assert!(validate("").is_err());
        assert!(validate("\"\"").is_err());
        assert!(validate("has space").is_err());
        assert!(validate(&"k".repeat(256)).is_err());
    }
}
