//! Problem details (RFC 9457) as the server reports failures.

use std::fmt;
use std::time::Duration;

use pairdb_core::ErrorKind;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::wire;

/// How much of a failed write was applied, from the problem's `applied` member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Applied {
    /// `none`: too few replicas were live to try; nothing was written.
    None,
    /// `partial`: some replicas took the write, fewer than the level required. Retrying with the
    /// same idempotency key is safe.
    Partial,
    /// `unknown`: replicas did not answer in time, or the server sent a value this client does
    /// not know (read conservatively as unknown). Retrying with the same idempotency key is safe.
    Unknown,
}

impl Applied {
    fn parse(s: &str) -> Applied {
        match s {
            "none" => Applied::None,
            "partial" => Applied::Partial,
            _ => Applied::Unknown,
        }
    }
}

/// A failure answered by the server (any non-2xx status other than 404 on a read).
///
/// `kind` is what to switch on: the last path segment of the stable `type` URI, e.g.
/// `quorum-unavailable` for `https://pairdb.dev/problems/quorum-unavailable`.
/// [`Problem::error_kind`] maps it onto [`pairdb_core::ErrorKind`].
///
/// A body that is not problem JSON (for example from a proxy) still yields a `Problem`: its
/// `type_uri` is `about:blank`, `kind` is `blank`, `title` is the status's reason phrase and
/// `detail` holds the start of the body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// Last path segment of `type_uri`.
    pub kind: String,
    /// The `type` member; `about:blank` when absent.
    pub type_uri: String,
    /// The `title` member, or the status's reason phrase.
    pub title: String,
    /// The HTTP status of the response (authoritative over the body's `status` member).
    pub status: u16,
    /// The `detail` member.
    pub detail: Option<String>,
    /// The `trace_id` member: find the request in the tracing backend with it.
    pub trace_id: Option<String>,
    /// Replicas that acknowledged a failed write (`acks`).
    pub acks: Option<u32>,
    /// Replicas the level required (`required`).
    pub required: Option<u32>,
    /// Replicas that answered a failed read (`answered`).
    pub answered: Option<u32>,
    /// How much of a failed write was applied (`applied`).
    pub applied: Option<Applied>,
    /// The `Retry-After` header, in its delta-seconds form.
    pub retry_after: Option<Duration>,
}

/// Longest stretch of a non-problem body kept in `detail`.
const MAX_RAW_DETAIL: usize = 512;

impl Problem {
    /// Builds the problem of a response from its status, headers and body. Never fails: fields
    /// missing from the body are absent, and a body that is not JSON becomes `detail`.
    pub fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Problem {
        let members = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(members)) => Some(members),
            _ => None,
        };
        // Each member is read on its own, so one malformed member loses only itself.
        let text = |name: &str| {
            members
                .as_ref()
                .and_then(|m| m.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let count = |name: &str| {
            members
                .as_ref()
                .and_then(|m| m.get(name))
                .and_then(|v| v.as_u64())
                .and_then(|n| u32::try_from(n).ok())
        };
        let detail = match &members {
            Some(_) => text("detail"),
            None => {
                let raw = String::from_utf8_lossy(body);
                let raw = raw.trim();
                (!raw.is_empty()).then(|| raw.chars().take(MAX_RAW_DETAIL).collect())
            }
        };
        let type_uri = text("type").unwrap_or_else(|| "about:blank".to_owned());
        Problem {
            kind: kind_of(&type_uri),
            title: text("title").unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("Unknown status")
                    .to_owned()
            }),
            type_uri,
            status: status.as_u16(),
            detail,
            trace_id: text("trace_id"),
            acks: count("acks"),
            required: count("required"),
            answered: count("answered"),
            applied: text("applied").as_deref().map(Applied::parse),
            retry_after: wire::retry_after(headers),
        }
    }

    /// The stable kind, if this client knows it (`None` for kinds added after this client).
    pub fn error_kind(&self) -> Option<ErrorKind> {
        ErrorKind::from_slug(&self.kind)
    }
}

/// The last path segment of a `type` URI (after the last `/`, or after the scheme's `:`).
fn kind_of(type_uri: &str) -> String {
    let trimmed = type_uri.trim_end_matches('/');
    let tail = trimmed.rsplit('/').next().unwrap_or(trimmed);
    tail.rsplit(':').next().unwrap_or(tail).to_owned()
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.status, self.title, self.kind)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_last_segments() {
        assert_eq!(
            kind_of("https://pairdb.dev/problems/quorum-unavailable"),
            "quorum-unavailable"
        );
        assert_eq!(kind_of("https://pairdb.dev/problems/timeout/"), "timeout");
        assert_eq!(kind_of("about:blank"), "blank");
        assert_eq!(kind_of("bad-key"), "bad-key");
    }

    #[test]
    fn non_json_bodies_still_make_problems() {
        let p =
            Problem::from_response(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"upstream gone");
        assert_eq!(p.status, 502);
        assert_eq!(p.type_uri, "about:blank");
        assert_eq!(p.title, "Bad Gateway");
        assert_eq!(p.detail.as_deref(), Some("upstream gone"));
    }

    #[test]
    fn unknown_applied_values_read_as_unknown() {
        let p = Problem::from_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &HeaderMap::new(),
            br#"{"applied":"mostly"}"#,
        );
        assert_eq!(p.applied, Some(Applied::Unknown));
    }
}
