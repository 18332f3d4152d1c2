//! API keys: `pdb_<key id>_<secret>`.
//!
//! The key id (16 lowercase hex digits) is public and indexes the store; the secret (32 lowercase
//! hex digits, 128 bits) is shown once and stored only as HMAC-SHA256 under the server secret, so
//! a leaked metadata store does not leak usable keys. Verification compares in constant time.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Prefix of every tenant API key.
pub const PREFIX: &str = "pdb_";

/// The parts of a well-formed key.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// Public id.
    pub key_id: &'a str,
    /// Secret part.
    pub secret: &'a str,
}

/// A freshly minted key.
#[derive(Debug)]
pub struct NewKey {
    /// The full key to hand to the client, once.
    pub api_key: String,
    /// Its public id.
    pub key_id: String,
    /// HMAC-SHA256(server secret, secret), what the store keeps.
    pub secret_hash: Vec<u8>,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Splits `pdb_<16 hex>_<32 hex>`; `None` for anything else.
pub fn parse(key: &str) -> Option<ParsedKey<'_>> {
    let rest = key.strip_prefix(PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    (is_hex(key_id, 16) && is_hex(secret, 32)).then_some(ParsedKey { key_id, secret })
}

/// HMAC-SHA256(server secret, secret).
pub fn hash_secret(server_secret: &[u8], secret: &str) -> Vec<u8> {
    #[expect(
        clippy::expect_used,
        reason = "HMAC takes keys of any length: new_from_slice never fails"
    )]
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(server_secret).expect("HMAC takes any key length");
    mac.update(secret.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// True when `secret` hashes to `stored_hash`, compared in constant time.
pub fn verify(server_secret: &[u8], secret: &str, stored_hash: &[u8]) -> bool {
    bool::from(hash_secret(server_secret, secret).ct_eq(stored_hash))
}

/// Mints a new random key.
pub fn generate(server_secret: &[u8]) -> NewKey {
    let mut rng = rand::rng();
    let mut id = [0u8; 8];
    let mut secret = [0u8; 16];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let key_id = hex::encode(id);
    let secret = hex::encode(secret);
    NewKey {
        api_key: format!("{PREFIX}{key_id}_{secret}"),
        secret_hash: hash_secret(server_secret, &secret),
        key_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let k = generate(b"server");
        let p = parse(&k.api_key).unwrap_or_else(|| panic!("unparsable {}", k.api_key));
        assert_eq!(p.key_id, k.key_id);
        assert!(verify(b"server", p.secret, &k.secret_hash));
        assert!(!verify(b"other", p.secret, &k.secret_hash));
        assert!(!verify(b"server", "0".repeat(32).as_str(), &k.secret_hash));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "pdb_",
            "pdb_abc_def",
            "xyz_0123456789abcdef_0123456789abcdef0123456789abcdef",
            "pdb_0123456789ABCDEF_0123456789abcdef0123456789abcdef",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
