//! How the LSM engine writes versions and applied-keys entries into commit-log records and
//! table values. Decoders trust nothing: every length is checked, and a damaged value is an
//! error, never a panic.
//!
//! A version (`flags` bit 0: tombstone; lengths are varints):
//!
//! ```text
//! +------+-------+-----------+-------+-----------+--------------+------------+-------+-----------+-------+
//! | tag  | flags | timestamp | value | content   | clock        | minted_by  | ...   | idem key  | ...   |
//! | 0x56 | u8    | u64 LE    | len+  | type len+ | (VectorClock | len+bytes  |       | len+bytes |       |
//! |      |       |           | bytes | bytes     |  encoding)   |            |       |           |       |
//! +------+-------+-----------+-------+-----------+--------------+------------+-------+-----------+-------+
//! ```
//!
//! An applied-keys entry: tag `0x41`, the version as above (with its own tag), the 32-byte
//! fingerprint, flags (bit 0: conflict, bit 1: concurrent), the outcome byte (0 applied,
//! 1 merged, 2 superseded) and the expiry in milliseconds since the Unix epoch (u64 LE).

use pairdb_core::version::{AppliedWrite, WriteRecord};
use pairdb_core::{ApplyOutcome, VectorClock, Version, varint};

const VERSION_TAG: u8 = 0x56;
const APPLIED_TAG: u8 = 0x41;

/// A stored value failed to decode: what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad stored value: {0}")]
pub struct CodecError(pub String);

fn err(detail: impl Into<String>) -> CodecError {
    CodecError(detail.into())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    varint::put(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn take_bytes<'a>(buf: &mut &'a [u8], what: &str) -> Result<&'a [u8], CodecError> {
    let len = varint::take(buf).ok_or_else(|| err(format!("{what} length truncated")))?;
    let len = usize::try_from(len).map_err(|_| err(format!("{what} too long")))?;
    varint::take_bytes(buf, len).ok_or_else(|| err(format!("{what} truncated")))
}

fn take_string(buf: &mut &[u8], what: &str) -> Result<String, CodecError> {
    let bytes = take_bytes(buf, what)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| err(format!("{what} is not UTF-8")))
}

fn take_array<const N: usize>(buf: &mut &[u8], what: &str) -> Result<[u8; N], CodecError> {
    let bytes = varint::take_bytes(buf, N).ok_or_else(|| err(format!("{what} truncated")))?;
    bytes
        .try_into()
        .map_err(|_| err(format!("{what} truncated")))
}

fn take_u8(buf: &mut &[u8], what: &str) -> Result<u8, CodecError> {
    let [b] = take_array::<1>(buf, what)?;
    Ok(b)
}

/// Appends `version`'s encoding to `out`.
pub fn encode_version_into(out: &mut Vec<u8>, version: &Version) {
    out.push(VERSION_TAG);
    out.push(u8::from(version.tombstone));
    out.extend_from_slice(&version.timestamp.to_le_bytes());
    put_bytes(out, &version.value);
    put_bytes(out, version.content_type.as_bytes());
    version.clock.encode_into(out);
    put_bytes(out, version.minted_by.as_bytes());
    put_bytes(out, version.idempotency_key.as_bytes());
}

/// `version`'s encoding.
pub fn encode_version(version: &Version) -> Vec<u8> {
    let mut out = Vec::with_capacity(version.value.len() + 64);
    encode_version_into(&mut out, version);
    out
}

/// Reads a version from the front of `buf`, advancing it.
pub fn decode_version_from(buf: &mut &[u8]) -> Result<Version, CodecError> {
    if take_u8(buf, "version tag")? != VERSION_TAG {
        return Err(err("not a version"));
    }
    let flags = take_u8(buf, "version flags")?;
    if flags > 1 {
        return Err(err("unknown version flags"));
    }
    let timestamp = u64::from_le_bytes(take_array(buf, "timestamp")?);
    let value = take_bytes(buf, "value")?.to_vec();
    let content_type = take_string(buf, "content type")?;
    let clock = VectorClock::decode_from(buf).map_err(|e| err(e.to_string()))?;
    let minted_by = take_string(buf, "minting node")?;
    let idempotency_key = take_string(buf, "idempotency key")?;
    Ok(Version {
        tombstone: flags == 1,
        value,
        content_type,
        clock,
        timestamp,
        minted_by,
        idempotency_key,
    })
}

/// The timestamp of the encoded version `value` if it is a tombstone, read without decoding the
/// rest (`None` for a live version or anything else).
pub fn tombstone_timestamp(value: &[u8]) -> Option<u64> {
    match value {
        [VERSION_TAG, 1, t0, t1, t2, t3, t4, t5, t6, t7, ..] => {
            Some(u64::from_le_bytes([*t0, *t1, *t2, *t3, *t4, *t5, *t6, *t7]))
        }
        _ => None,
    }
}

/// Decodes exactly one version.
pub fn decode_version(mut bytes: &[u8]) -> Result<Version, CodecError> {
    let v = decode_version_from(&mut bytes)?;
    if !bytes.is_empty() {
        return Err(err("trailing bytes after a version"));
    }
    Ok(v)
}

/// An applied-keys entry as the engine keeps it: the write, and when it expires (milliseconds
/// since the Unix epoch, so it means the same after a restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedEntry {
    /// The write.
    pub write: AppliedWrite,
    /// When the entry expires.
    pub expires_at_ms: u64,
}

/// Appends `entry`'s encoding to `out`.
pub fn encode_applied_into(out: &mut Vec<u8>, entry: &AppliedEntry) {
    out.push(APPLIED_TAG);
    encode_version_into(out, &entry.write.version);
    out.extend_from_slice(&entry.write.record.fingerprint);
    out.push(u8::from(entry.write.record.conflict) | (u8::from(entry.write.concurrent) << 1));
    out.push(match entry.write.outcome {
        ApplyOutcome::Applied => 0,
        ApplyOutcome::Merged => 1,
        ApplyOutcome::Superseded => 2,
    });
    out.extend_from_slice(&entry.expires_at_ms.to_le_bytes());
}

/// Reads an applied-keys entry from the front of `buf`, advancing it.
pub fn decode_applied_from(buf: &mut &[u8]) -> Result<AppliedEntry, CodecError> {
    if take_u8(buf, "entry tag")? != APPLIED_TAG {
        return Err(err("not an applied-keys entry"));
    }
    let version = decode_version_from(buf)?;
    let fingerprint = take_array::<32>(buf, "fingerprint")?;
    let flags = take_u8(buf, "entry flags")?;
    if flags > 3 {
        return Err(err("unknown entry flags"));
    }
    let outcome = match take_u8(buf, "outcome")? {
        0 => ApplyOutcome::Applied,
        1 => ApplyOutcome::Merged,
        2 => ApplyOutcome::Superseded,
        _ => return Err(err("unknown apply outcome")),
    };
    let expires_at_ms = u64::from_le_bytes(take_array(buf, "expiry")?);
    Ok(AppliedEntry {
        write: AppliedWrite {
            version,
            record: WriteRecord {
                fingerprint,
                conflict: flags & 1 != 0,
            },
            outcome,
            concurrent: flags & 2 != 0,
        },
        expires_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use pairdb_core::Actor;
    use proptest::prelude::*;

    use super::*;

    fn version_strategy() -> impl Strategy<Value = Version> {
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            "[a-z/]{0,12}",
            proptest::collection::vec(("[a-z0-9-]{1,8}", 1u64..5, 1u64..1000), 0..4),
            any::<u64>(),
            "[a-z0-9-]{0,8}",
            "[ -~]{0,16}",
        )
            .prop_map(
                |(tombstone, value, content_type, entries, timestamp, minted_by, idem)| {
                    let mut clock = VectorClock::new();
                    for (node, incarnation, n) in entries {
                        let actor = Actor::new(&node, incarnation);
                        for _ in 0..n.min(3) {
                            clock.increment(&actor, timestamp);
                        }
                    }
                    Version {
                        tombstone,
                        value,
                        content_type,
                        clock,
                        timestamp,
                        minted_by,
                        idempotency_key: idem,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn versions_round_trip(v in version_strategy()) {
            prop_assert_eq!(decode_version(&encode_version(&v)), Ok(v));
        }

        #[test]
        fn applied_entries_round_trip(
            v in version_strategy(),
            fingerprint in any::<[u8; 32]>(),
            conflict in any::<bool>(),
            concurrent in any::<bool>(),
            outcome in prop_oneof![Just(ApplyOutcome::Applied), Just(ApplyOutcome::Merged), Just(ApplyOutcome::Superseded)],
            expires_at_ms in any::<u64>(),
        ) {
            let entry = AppliedEntry {
                write: AppliedWrite {
                    version: v,
                    record: WriteRecord { fingerprint, conflict },
                    outcome,
                    concurrent,
                },
                expires_at_ms,
            };
            let mut out = Vec::new();
            encode_applied_into(&mut out, &entry);
            let mut buf = out.as_slice();
            prop_assert_eq!(decode_applied_from(&mut buf), Ok(entry));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_version(&bytes);
            let _ = decode_applied_from(&mut bytes.as_slice());
        }

        #[test]
        fn a_truncated_encoding_is_an_error(v in version_strategy(), cut in 0.0f64..1.0) {
            let bytes = encode_version(&v);
            let at = ((bytes.len() as f64) * cut) as usize;
            prop_assert!(decode_version(bytes.get(..at).unwrap_or_default()).is_err());
        }
    }
}
