//! Keys as exactly one URL path segment.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::ClientError;

/// Every byte except RFC 3986's unreserved `ALPHA / DIGIT / - . _ ~` is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encodes `key` as one path segment that the gateway percent-decodes back into exactly these
/// bytes: `/` becomes `%2F`, `0xFF 0x00` becomes `%FF%00`, unreserved ASCII stays as it is.
///
/// Returns [`ClientError::InvalidKey`] for the empty key (it would name no segment) and for the
/// keys `.` and `..`, which URL normalisation would turn into a different path (the WHATWG URL
/// rules also read `%2E` as a dot, so no encoding reaches the server intact). Length limits
/// are the server's to enforce (1024 bytes by default, answered with a 400 `bad-key`).
pub fn encode_segment(key: &[u8]) -> Result<String, ClientError> {
    match key {
        [] => Err(ClientError::InvalidKey {
            reason: "the key is empty",
        }),
        b"." | b".." => Err(ClientError::InvalidKey {
            reason: "the keys \".\" and \"..\" cannot be sent as a URL path segment",
        }),
        _ => Ok(percent_encoding::percent_encode(key, SEGMENT).to_string()),
    }
}

/// Encodes a path segment that is already text (tenant ids, API key ids) with the same rules.
pub(crate) fn encode_text_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_one_segment() {
        assert_eq!(encode_segment(b"a/b").ok().as_deref(), Some("a%2Fb"));
        assert_eq!(
            encode_segment(&[0xff, 0x00]).ok().as_deref(),
            Some("%FF%00")
        );
        assert_eq!(
            encode_segment(b"Az09-._~ %?#").ok().as_deref(),
            Some("Az09-._~%20%25%3F%23")
        );
        assert_eq!(encode_segment(b"...").ok().as_deref(), Some("..."));
    }

    #[test]
    fn refuses_unaddressable_keys() {
        for key in [&b""[..], b".", b".."] {
            assert!(matches!(
                encode_segment(key),
                Err(ClientError::InvalidKey { .. })
            ));
        }
    }
}
