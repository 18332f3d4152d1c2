//! Idempotency keys: 1–255 visible ASCII characters, optionally in double quotes.

/// Longest idempotency key, in bytes.
pub const MAX_LEN: usize = 255;

/// The key a header value names: surrounding double quotes stripped, then 1–255 visible ASCII
/// (0x21–0x7E). `None` for anything else.
pub fn parse(raw: &[u8]) -> Option<&str> {
    let unquoted = match raw {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    };
    let ok = !unquoted.is_empty()
        && unquoted.len() <= MAX_LEN
        && unquoted.iter().all(u8::is_ascii_graphic);
    // Visible ASCII is valid UTF-8.
    ok.then(|| std::str::from_utf8(unquoted).ok()).flatten()
}

/// True when `key` is a valid idempotency key as sent on the wire (no surrounding quotes):
/// 1–255 visible ASCII characters.
pub fn is_valid(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_visible_ascii_and_strips_quotes() {
        assert_eq!(parse(b"order-42"), Some("order-42"));
        assert_eq!(parse(b"\"order-42\""), Some("order-42"));
        assert_eq!(parse("k".repeat(255).as_bytes()).map(str::len), Some(255));
        for bad in [&b""[..], b"\"\"", b"has space", b"tab\t", "é".as_bytes()] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse("k".repeat(256).as_bytes()), None);
        assert!(is_valid("order-42") && is_valid(&"k".repeat(255)));
        assert!(!is_valid("") && !is_valid("a b") && !is_valid(&"k".repeat(256)));
    }
}
