//! Key encoding: `(namespace, user key)` → ring token → stored key bytes.
//!
//! ```text
//! stored key = ns_len:u8 | namespace bytes | token:u64 big-endian | user key bytes
//! ```
//!
//! The namespace is length-prefixed, so `("ab","c")` and `("a","bc")` never collide, and keys of
//! one namespace and one token range are contiguous in byte order: range scans, digests and range
//! drops never need a full scan.

use xxhash_rust::xxh3::xxh3_64;

/// The ring token of a key: a stable 64-bit hash of its namespace and bytes.
pub fn token(namespace: &str, key: &[u8]) -> u64 {
    let mut buf = Vec::with_capacity(1 + namespace.len() + key.len());
    buf.push(namespace.len() as u8);
    buf.extend_from_slice(namespace.as_bytes());
    buf.extend_from_slice(key);
    xxh3_64(&buf)
}

/// A key as stored: namespace, ring token and user key bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageKey {
    /// The tenant's opaque namespace (at most 255 bytes).
    pub namespace: String,
    /// The ring token, always `token(namespace, key)` for keys built by [`StorageKey::new`].
    pub token: u64,
    /// The user's key bytes.
    pub key: Vec<u8>,
}

/// A stored key could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Shorter than its own length prefix and token say.
    #[error("stored key truncated")]
    Truncated,
    /// The namespace is not UTF-8.
    #[error("stored key namespace is not UTF-8")]
    Namespace,
    /// The namespace does not fit the one-byte length prefix.
    #[error("namespace longer than 255 bytes")]
    NamespaceTooLong,
}

impl StorageKey {
    /// Builds the key of `(namespace, key)`, computing its token. Fails if the namespace exceeds
    /// 255 bytes.
    pub fn new(namespace: &str, key: &[u8]) -> Result<Self, KeyError> {
        if namespace.len() > 255 {
            return Err(KeyError::NamespaceTooLong);
        }
        Ok(StorageKey {
            namespace: namespace.to_owned(),
            token: token(namespace, key),
            key: key.to_vec(),
        })
    }

    /// The stored byte form; byte order sorts by (namespace, token, key).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.namespace.len() + 8 + self.key.len());
        out.push(self.namespace.len() as u8);
        out.extend_from_slice(self.namespace.as_bytes());
        out.extend_from_slice(&self.token.to_be_bytes());
        out.extend_from_slice(&self.key);
        out
    }

    /// The smallest stored key of `namespace` at `token`: scans start here.
    pub fn range_start(namespace: &str, token: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + namespace.len() + 8);
        out.push(namespace.len() as u8);
        out.extend_from_slice(namespace.as_bytes());
        out.extend_from_slice(&token.to_be_bytes());
        out
    }

    /// Parses the stored byte form.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let (&ns_len, rest) = bytes.split_first().ok_or(KeyError::Truncated)?;
        let ns_len = usize::from(ns_len);
        if rest.len() < ns_len + 8 {
            return Err(KeyError::Truncated);
        }
        let (ns, rest) = rest.split_at(ns_len);
        let (tok, key) = rest.split_at(8);
        let namespace = std::str::from_utf8(ns)
            .map_err(|_| KeyError::Namespace)?
            .to_owned();
        let mut t = [0u8; 8];
        t.copy_from_slice(tok);
        Ok(StorageKey {
            namespace,
            token: u64::from_be_bytes(t),
            key: key.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_length_prefixed() {
        let a = StorageKey::new("ab", b"c").unwrap_or_else(|e| panic!("{e}"));
        let b = StorageKey::new("a", b"bc").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.encode(), b.encode());
    }

    #[test]
    fn round_trips_and_orders_by_token() {
        let a = StorageKey::new("t", b"k1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(StorageKey::decode(&a.encode()), Ok(a.clone()));
        let start = StorageKey::range_start("t", a.token);
        assert!(start <= a.encode());
        assert!(StorageKey::decode(&[3, b'a']).is_err());
    }
}
