//! Header names of the REST contract and parsers for the structured ones.
//!
//! Parsers return `None` for a value that does not follow the contract; callers decide whether
//! that is an error ([`ClientError::UnexpectedResponse`](crate::ClientError::UnexpectedResponse))
//! or an absent, informative field.

use std::time::Duration;

use pairdb_core::headers;
use reqwest::header::{HeaderMap, HeaderName};

/// `X-Consistency`: the requested level (request) or the level applied (response).
pub const CONSISTENCY: HeaderName = HeaderName::from_static(headers::CONSISTENCY);
/// `X-Pairdb-Context`: the opaque causal context.
pub const CONTEXT: HeaderName = HeaderName::from_static(headers::CONTEXT);
/// `Idempotency-Key`: the write's idempotency key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static(headers::IDEMPOTENCY_KEY);
/// `Idempotent-Replayed: true`: the response is a replay of an earlier completed write.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static(headers::IDEMPOTENT_REPLAYED);
/// `X-Pairdb-Timeout: <ms>`: the request's deadline.
pub const TIMEOUT: HeaderName = HeaderName::from_static(headers::TIMEOUT);
/// `X-Pairdb-Replicas: acked=<a>/<n>` (writes) or `answered=<a>/<n>` (reads).
pub const REPLICAS: HeaderName = HeaderName::from_static(headers::REPLICAS);
/// `X-Pairdb-Conflict: lww[; outcome=won|lost]`.
pub const CONFLICT: HeaderName = HeaderName::from_static(headers::CONFLICT);
/// `X-Pairdb-Read-Repair: <count>`.
pub const READ_REPAIR: HeaderName = HeaderName::from_static(headers::READ_REPAIR);

/// The header's value as text, if present and visible ASCII.
pub(crate) fn text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
}

/// Parses `<label>=<a>/<n>` (e.g. `acked=2/3`) into `(a, n)`.
pub(crate) fn parse_replicas(value: &str, label: &str) -> Option<(u32, u32)> {
    let (name, counts) = value.trim().split_once('=')?;
    if !name.trim().eq_ignore_ascii_case(label) {
        return None;
    }
    let (a, n) = counts.split_once('/')?;
    Some((a.trim().parse().ok()?, n.trim().parse().ok()?))
}

/// Parses the `outcome` parameter of `lww; outcome=won|lost`: `Some(Some(won))` for
/// `won`, `Some(Some(false))` for `lost`, `Some(None)` when the parameter is absent, `None` when
/// the value is not an `lww` conflict header or the outcome is unknown.
pub(crate) fn parse_conflict_outcome(value: &str) -> Option<Option<bool>> {
    let mut parts = value.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("lww") {
        return None;
    }
    let mut outcome = None;
    for part in parts {
        if let Some((name, v)) = part.split_once('=')
            && name.trim().eq_ignore_ascii_case("outcome")
        {
            outcome = Some(match v.trim().trim_matches('"') {
                "won" => true,
                "lost" => false,
                _ => return None,
            });
        }
    }
    Some(outcome)
}

/// Parses `Retry-After` in its delta-seconds form. The HTTP-date form is not used by pairdb
/// and reads as absent.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = text(headers, &reqwest::header::RETRY_AFTER)?;
    value.parse::<u64>().ok().map(Duration::from_secs)
}

/// Strips the optional double quotes around an `Idempotency-Key` value.
pub(crate) fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replica_counts() {
        assert_eq!(parse_replicas("acked=2/3", "acked"), Some((2, 3)));
        assert_eq!(
            parse_replicas(" answered = 1 / 3 ", "answered"),
            Some((1, 3))
        );
        assert_eq!(parse_replicas("answered=1/3", "acked"), None);
        assert_eq!(parse_replicas("acked=x/3", "acked"), None);
        assert_eq!(parse_replicas("acked", "acked"), None);
    }

    #[test]
    fn parses_conflict_outcomes() {
        assert_eq!(parse_conflict_outcome("lww; outcome=won"), Some(Some(true)));
        assert_eq!(
            parse_conflict_outcome("LWW;outcome=lost"),
            Some(Some(false))
        );
        assert_eq!(parse_conflict_outcome("lww"), Some(None));
        assert_eq!(parse_conflict_outcome("lww; outcome=tie"), None);
        assert_eq!(parse_conflict_outcome("crdt"), None);
    }

    #[test]
    fn unquotes() {
        assert_eq!(unquote("\"abc\""), "abc");
        assert_eq!(unquote("abc"), "abc");
        assert_eq!(unquote("\""), "\"");
    }
}
