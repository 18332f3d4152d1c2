//! The `{key}` path segment, decoded by the gateway itself into raw bytes.
//!
//! The key is read from the raw request path (never from a router's decoded parameter), so any
//! byte string works: `%2F` is a `/` byte inside the key, `%FF` a non-UTF-8 byte. A literal `/`
//! would make the key more than one segment and is refused.

use pairdb_core::ErrorKind;

use crate::problem::Problem;

/// Path prefix of the key-value routes.
pub const KV_PREFIX: &str = "/v1/kv/";

/// Why a key path segment was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Nothing after the prefix.
    #[error("the key is empty")]
    Empty,
    /// Longer than the limit after decoding.
    #[error("the key is longer than {max} bytes after percent-decoding")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-escape in the key")]
    BadEscape,
    /// A literal `/`: the key must be one path segment (encode `/` as `%2F`).
    #[error("the key must be one path segment: encode / as %2F")]
    NotOneSegment,
    /// The path does not start with the key-value prefix.
    #[error("not a key-value path")]
    NotKeyPath,
}

impl KeyError {
    /// This refusal as a `bad-key` problem.
    pub fn into_problem(self) -> Problem {
        Problem::new(ErrorKind::BadKey, self.to_string())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one raw path segment into the key's bytes: 1..=`max` bytes after decoding,
/// every `%` followed by two hex digits, no literal `/`.
pub fn decode_key(raw: &str, max: usize) -> Result<Vec<u8>, KeyError> {
    if raw.is_empty() {
        return Err(KeyError::Empty);
    }
    let mut out = Vec::with_capacity(raw.len().min(max));
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        let decoded = match b {
            b'%' => {
                let hi = bytes
                    .next()
                    .and_then(hex_value)
                    .ok_or(KeyError::BadEscape)?;
                let lo = bytes
                    .next()
                    .and_then(hex_value)
                    .ok_or(KeyError::BadEscape)?;
                hi << 4 | lo
            }
            b'/' => return Err(KeyError::NotOneSegment),
            other => other,
        };
        if out.len() == max {
            return Err(KeyError::TooLong { max });
        }
        out.push(decoded);
    }
    Ok(out)
}

/// The key of a raw request path `/v1/kv/<segment>`.
pub fn key_from_path(path: &str, max: usize) -> Result<Vec<u8>, KeyError> {
    decode_key(
        path.strip_prefix(KV_PREFIX).ok_or(KeyError::NotKeyPath)?,
        max,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_any_bytes() {
        assert_eq!(decode_key("abc", 10), Ok(b"abc".to_vec()));
        assert_eq!(decode_key("a%2Fb", 10), Ok(b"a/b".to_vec()));
        assert_eq!(decode_key("%ff%00%Fe", 10), Ok(vec![0xff, 0x00, 0xfe]));
        assert_eq!(decode_key("a+b", 10), Ok(b"a+b".to_vec()));
        assert_eq!(key_from_path("/v1/kv/x%20y", 10), Ok(b"x y".to_vec()));
    }

    #[test]
    fn refuses_bad_keys() {
        assert_eq!(decode_key("", 10), Err(KeyError::Empty));
        assert_eq!(decode_key("%", 10), Err(KeyError::BadEscape));
        assert_eq!(decode_key("%2", 10), Err(KeyError::BadEscape));
        assert_eq!(decode_key("%zz", 10), Err(KeyError::BadEscape));
        assert_eq!(decode_key("a/b", 10), Err(KeyError::NotOneSegment));
        assert_eq!(decode_key("abcd", 3), Err(KeyError::TooLong { max: 3 }));
        assert_eq!(decode_key("%41%41%41", 3), Ok(b"AAA".to_vec()));
        assert_eq!(
            decode_key("%41%41%41%41", 3),
            Err(KeyError::TooLong { max: 3 })
        );
        assert_eq!(key_from_path("/v1/other", 3), Err(KeyError::NotKeyPath));
        assert_eq!(key_from_path("/v1/kv/", 3), Err(KeyError::Empty));
    }
}
