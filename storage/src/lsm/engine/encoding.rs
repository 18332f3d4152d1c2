//! How the engine lays out keys and values: the two keyspaces, the erased marker, commit-log
//! batches, and token ranges as key bounds.

use std::path::{Path, PathBuf};

use pairdb_core::{StorageKey, Version, varint};
use sha2::{Digest as _, Sha256};

use super::super::codec::{self, AppliedEntry};
use super::super::manifest::TableMeta;
use super::{APPLIED, DATA, ERASED, WATERMARK};
use crate::engine::{EngineError, TokenRange};

pub(super) fn data_key(key: &StorageKey) -> Vec<u8> {
    // `StorageKey::encode`'s layout, behind the prefix, in one allocation.
    let mut k = Vec::with_capacity(2 + key.namespace.len() + 8 + key.key.len());
    k.push(DATA);
    k.push(key.namespace.len() as u8);
    k.extend_from_slice(key.namespace.as_bytes());
    k.extend_from_slice(&key.token.to_be_bytes());
    k.extend_from_slice(&key.key);
    k
}

pub(super) fn applied_key(key: &StorageKey, idempotency_key: &str) -> Vec<u8> {
    let mut sha = Sha256::new();
    for field in [
        key.namespace.as_bytes(),
        key.key.as_slice(),
        idempotency_key.as_bytes(),
    ] {
        sha.update((field.len() as u64).to_be_bytes());
        sha.update(field);
    }
    let mut k = vec![APPLIED];
    k.extend(sha.finalize().into_iter().take(16));
    k
}

pub(super) fn table_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("tables").join(format!("{id:016x}.sst"))
}

/// A value read back.
pub(super) enum Stored {
    Version(Version),
    Applied(AppliedEntry),
    Erased,
}

pub(super) fn decode_value(value: &[u8], at: &str) -> Result<Stored, EngineError> {
    let corrupt = |detail: String| EngineError::Corruption {
        path: at.to_owned(),
        offset: 0,
        detail,
    };
    match value.first() {
        Some(b'X') if value == ERASED => Ok(Stored::Erased),
        Some(b'A') => {
            let mut buf = value;
            let entry = codec::decode_applied_from(&mut buf).map_err(|e| corrupt(e.to_string()))?;
            Ok(Stored::Applied(entry))
        }
        _ => codec::decode_version(value)
            .map(Stored::Version)
            .map_err(|e| corrupt(e.to_string())),
    }
}

/// The key of `range`'s repair watermark: `'r'`, the range's first stored key, its last token.
pub(super) fn watermark_key(range: &TokenRange) -> Vec<u8> {
    let mut k = vec![WATERMARK];
    k.extend_from_slice(&StorageKey::range_start(&range.namespace, range.start));
    k.extend_from_slice(&range.end.to_be_bytes());
    k
}

/// Tag of a watermark's value.
const WATERMARK_TAG: u8 = b'W';

pub(super) fn encode_watermark(repaired_until: u64) -> Vec<u8> {
    let mut v = vec![WATERMARK_TAG];
    v.extend_from_slice(&repaired_until.to_le_bytes());
    v
}

/// The repair watermarks of token ranges, looked up by data key.
#[derive(Clone, Debug, Default)]
pub(super) struct Watermarks {
    /// Data-key prefix of a namespace (`'d'`, its length, its bytes) → (first token, last
    /// token, repaired until) of each range with a watermark.
    by_namespace: std::collections::HashMap<Vec<u8>, Vec<(u64, u64, u64)>>,
}

/// Splits a data key into its namespace prefix and token.
fn prefix_and_token(data_key: &[u8]) -> Option<(&[u8], u64)> {
    let ns_len = usize::from(*data_key.get(1)?);
    let prefix = data_key.get(..2 + ns_len)?;
    let token = data_key.get(2 + ns_len..10 + ns_len)?;
    Some((prefix, u64::from_be_bytes(token.try_into().ok()?)))
}

impl Watermarks {
    pub(super) fn is_empty(&self) -> bool {
        self.by_namespace.is_empty()
    }

    /// Records a watermark read back from its key and value; false for bytes that are not one.
    pub(super) fn load(&mut self, key: &[u8], value: &[u8]) -> bool {
        let Some(rest) = key.strip_prefix(&[WATERMARK]) else {
            return false;
        };
        let mut data_key = vec![DATA];
        data_key.extend_from_slice(rest);
        let (Some((prefix, start)), Some(end), Some(until)) = (
            prefix_and_token(&data_key),
            rest.len()
                .checked_sub(8)
                .and_then(|at| rest.get(at..))
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes),
            value
                .strip_prefix(&[WATERMARK_TAG])
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes),
        ) else {
            return false;
        };
        if data_key.len() != prefix.len() + 16 {
            return false;
        }
        let prefix = prefix.to_vec();
        self.raise(prefix, start, end, until);
        true
    }

    /// Raises the watermark of `range` to `until`; false if it was already there or above.
    pub(super) fn raise_range(&mut self, range: &TokenRange, until: u64) -> bool {
        self.raise(Bounds::new(range).prefix, range.start, range.end, until)
    }

    fn raise(&mut self, prefix: Vec<u8>, start: u64, end: u64, until: u64) -> bool {
        let ranges = self.by_namespace.entry(prefix).or_default();
        match ranges.iter_mut().find(|(s, e, _)| *s == start && *e == end) {
            Some((_, _, current)) if *current >= until => false,
            Some((_, _, current)) => {
                *current = until;
                true
            }
            None => {
                ranges.push((start, end, until));
                true
            }
        }
    }

    /// The highest watermark of a range holding `data_key`, if any.
    pub(super) fn until(&self, data_key: &[u8]) -> Option<u64> {
        let (prefix, token) = prefix_and_token(data_key)?;
        self.by_namespace
            .get(prefix)?
            .iter()
            .filter(|(s, e, _)| (*s..=*e).contains(&token))
            .map(|(_, _, until)| *until)
            .max()
    }
}

/// Appends the encoding of a batch of (key, value) pairs, as one commit-log record, to `out`.
pub(super) fn encode_batch(entries: &[(Vec<u8>, Vec<u8>)], out: &mut Vec<u8>) {
    out.reserve(entries.iter().map(|(k, v)| k.len() + v.len() + 8).sum());
    varint::put(out, entries.len() as u64);
    for (k, v) in entries {
        varint::put(out, k.len() as u64);
        out.extend_from_slice(k);
        varint::put(out, v.len() as u64);
        out.extend_from_slice(v);
    }
}

/// Key-value pairs, as a batch holds them.
pub(super) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

pub(super) fn decode_batch(mut buf: &[u8]) -> Result<Pairs, String> {
    let count = varint::take(&mut buf).ok_or("batch count truncated")?;
    let mut out = Vec::new();
    for _ in 0..count {
        let mut field = || -> Result<Vec<u8>, String> {
            let len = varint::take(&mut buf).ok_or("length truncated")?;
            let len = usize::try_from(len).map_err(|_| "length too large")?;
            varint::take_bytes(&mut buf, len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| "field truncated".to_owned())
        };
        let k = field()?;
        let v = field()?;
        out.push((k, v));
    }
    if !buf.is_empty() {
        return Err("trailing bytes in a batch".into());
    }
    Ok(out)
}

pub(super) fn covers(meta: &TableMeta, key: &[u8]) -> bool {
    meta.first_key.as_slice() <= key && key <= meta.last_key.as_slice()
}

/// True for an applied-keys entry past its expiry.
pub(super) fn expired(value: &[u8], now: u64) -> bool {
    value.first() == Some(&b'A')
        && codec::decode_applied_from(&mut &value[..]).is_ok_and(|e| e.expires_at_ms <= now)
}

/// The range's bounds in engine keys.
pub(super) struct Bounds {
    pub(super) start: Vec<u8>,
    pub(super) prefix: Vec<u8>,
    pub(super) end_token: u64,
}

impl Bounds {
    pub(super) fn new(range: &TokenRange) -> Self {
        let start = StorageKey::range_start(&range.namespace, range.start);
        let prefix_len = start.len().saturating_sub(8);
        let mut full = vec![DATA];
        full.extend_from_slice(&start);
        let mut prefix = vec![DATA];
        prefix.extend_from_slice(start.get(..prefix_len).unwrap_or_default());
        Bounds {
            start: full,
            prefix,
            end_token: range.end,
        }
    }

    pub(super) fn admits(&self, key: &[u8]) -> bool {
        let Some(rest) = key.strip_prefix(self.prefix.as_slice()) else {
            return false;
        };
        let Some(token) = rest.get(..8).and_then(|t| <[u8; 8]>::try_from(t).ok()) else {
            return false;
        };
        u64::from_be_bytes(token) <= self.end_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_keys_are_the_prefix_then_the_stored_key() {
        let key = StorageKey::new("ns", b"user key").expect("key");
        let mut expected = vec![DATA];
        expected.extend_from_slice(&key.encode());
        assert_eq!(data_key(&key), expected);
    }
}
