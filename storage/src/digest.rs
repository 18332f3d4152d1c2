//! The canonical digest of a token range.
//!
//! Replicas compare digests across engines (a memory node against an LSM node), so the bytes fed
//! to the hash are fixed here, once, and every engine feeds its entries through
//! [`RangeHasher`] in stored-key order:
//!
//! ```text
//! digest  = SHA-256( entry* )                       entries in stored-key byte order
//! entry   = key_len:u64 BE | stored key bytes | version_len:u64 BE | version bytes
//! version = tombstone:u8 | len:u64 BE content_type | len:u64 BE value
//!         | len:u64 BE clock (canonical vclock encoding) | timestamp:u64 BE
//!         | len:u64 BE minted_by | len:u64 BE idempotency_key
//! ```
//!
//! Every variable-length field is length-prefixed, so two different sequences of entries never
//! feed the same bytes. Vector clocks are canonical, so equal versions always hash equally.

use pairdb_core::Version;
use sha2::{Digest, Sha256};

use crate::engine::RangeDigest;

/// The canonical byte form of a version used by range digests (see the module docs). Equal
/// versions give equal bytes; different versions give different bytes.
pub fn canonical_version_bytes(version: &Version) -> Vec<u8> {
    let clock = version.clock.encode();
    let mut out = Vec::with_capacity(
        1 + 5 * 8
            + 8
            + version.content_type.len()
            + version.value.len()
            + clock.len()
            + version.minted_by.len()
            + version.idempotency_key.len(),
    );
    out.push(u8::from(version.tombstone));
    put_len_prefixed(&mut out, version.content_type.as_bytes());
    put_len_prefixed(&mut out, &version.value);
    put_len_prefixed(&mut out, &clock);
    out.extend_from_slice(&version.timestamp.to_be_bytes());
    put_len_prefixed(&mut out, version.minted_by.as_bytes());
    put_len_prefixed(&mut out, version.idempotency_key.as_bytes());
    out
}

fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Accumulates a [`RangeDigest`]. Feeding the same entries in the same order always yields the
/// same digest, whatever engine does the feeding.
#[derive(Clone, Debug, Default)]
pub struct RangeHasher {
    sha: Sha256,
    keys: u64,
}

impl RangeHasher {
    /// A hasher over no entries yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one entry. Callers must add entries in ascending stored-key order.
    pub fn add(&mut self, encoded_key: &[u8], version: &Version) {
        let version_bytes = canonical_version_bytes(version);
        self.sha.update((encoded_key.len() as u64).to_be_bytes());
        self.sha.update(encoded_key);
        self.sha.update((version_bytes.len() as u64).to_be_bytes());
        self.sha.update(&version_bytes);
        self.keys += 1;
    }

    /// The digest of everything added.
    pub fn finish(self) -> RangeDigest {
        RangeDigest {
            digest: self.sha.finalize().into(),
            keys: self.keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_changes_the_bytes() {
        let base = Version {
            value: b"v".to_vec(),
            content_type: "text/plain".into(),
            timestamp: 7,
            minted_by: "n1".into(),
            idempotency_key: "k".into(),
            ..Version::default()
        };
        let variants = [
            Version {
                tombstone: true,
                ..base.clone()
            },
            Version {
                value: b"w".to_vec(),
                ..base.clone()
            },
            Version {
                content_type: "text/html".into(),
                ..base.clone()
            },
            Version {
                timestamp: 8,
                ..base.clone()
            },
            Version {
                minted_by: "n2".into(),
                ..base.clone()
            },
            Version {
                idempotency_key: String::new(),
                ..base.clone()
            },
            Version {
                clock: pairdb_core::VectorClock::from_entries([(
                    pairdb_core::Actor::new("n1", 1),
                    1,
                )]),
                ..base.clone()
            },
        ];
        for v in &variants {
            assert_ne!(canonical_version_bytes(v), canonical_version_bytes(&base));
        }
    }

    #[test]
    fn empty_range_has_a_fixed_digest() {
        let a = RangeHasher::new().finish();
        assert_eq!(a.keys, 0);
        assert_eq!(a, RangeHasher::new().finish());
    }
}
