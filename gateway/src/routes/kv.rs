//! `PUT/GET/DELETE /v1/kv/{key}`: values forwarded to a coordinator.
//!
//! The key is decoded from the raw path ([`crate::key`]); the value is the raw request body,
//! bounded by the configured limit. Headers in and out follow `docs/api.md`.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use pairdb_core::{ErrorKind, headers};
use pairdb_proto::coordinator::{
    ConflictOutcome, DeleteRequest, GetRequest, PutRequest, WriteResponse,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::{Caller, deadline_of, read_limited};
use crate::idempotency_key::IdempotencyKey;
use crate::key::{KeyError, key_from_path};
use crate::problem::{Problem, ProblemBody};
use crate::state::AppState;

/// Opaque causal context, in (PUT/DELETE) and out (all).
pub const CONTEXT_HEADER: HeaderName = HeaderName::from_static(headers::CONTEXT);
/// The consistency level applied.
pub const CONSISTENCY_HEADER: HeaderName = HeaderName::from_static(headers::CONSISTENCY);
/// `acked=<a>/<n>` on writes, `answered=<a>/<n>` on reads.
pub const REPLICAS_HEADER: HeaderName = HeaderName::from_static(headers::REPLICAS);
/// `lww; outcome=won|lost` on writes, `lww` on reads.
pub const CONFLICT_HEADER: HeaderName = HeaderName::from_static(headers::CONFLICT);
/// Replicas a blocking read repaired.
pub const READ_REPAIR_HEADER: HeaderName = HeaderName::from_static(headers::READ_REPAIR);
/// The write's idempotency key, in and out.
pub const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static(headers::IDEMPOTENCY_KEY);
/// The client's deadline in milliseconds.
pub const TIMEOUT_HEADER: HeaderName = HeaderName::from_static(headers::TIMEOUT);

/// Longest context token accepted, in bytes.
pub const MAX_CONTEXT_BYTES: usize = pairdb_core::context::MAX_TOKEN_LEN;
use pairdb_core::limits::DEFAULT_CONTENT_TYPE;

/// Body of a successful PUT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WriteResult {
    /// Context token of the version written; send it with the next write of this key.
    pub context: String,
    /// Replicas that acknowledged durably.
    pub acks: u32,
    /// Replicas of the key.
    pub replicas: u32,
}

/// The value bytes, as documented: any bytes, with the request's `Content-Type`.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ValueBytes(pub Vec<u8>);

/// The key-value routes. `/v1/kv/` alone and multi-segment keys reach the handlers too, so they
/// are refused as `bad-key` rather than `route-not-found`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/kv/", any(empty_key)).route(
        "/v1/kv/{*key}",
        get(get_value).put(put_value).delete(delete_value),
    )
}

async fn empty_key(Caller(call): Caller) -> Problem {
    KeyError::Empty
        .into_problem()
        .with_trace(call.trace.as_ref())
}

fn bad_request(detail: impl Into<String>) -> Problem {
    Problem::new(ErrorKind::BadRequest, detail)
}

/// The request's deadline: `X-Pairdb-Timeout` milliseconds (a positive integer) capped by
/// `cap`, else `cap`.
pub fn deadline(headers: &HeaderMap, cap: Duration) -> Result<Duration, Problem> {
    let Some(value) = headers.get(TIMEOUT_HEADER) else {
        return Ok(cap);
    };
    let millis = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .ok_or_else(|| bad_request("X-Pairdb-Timeout must be a positive number of milliseconds"))?;
    Ok(Duration::from_millis(millis).min(cap))
}

/// Whole milliseconds of `d`, saturated to the wire type.
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// The `X-Pairdb-Context` header, empty when absent. Present but empty, repeated, too long or
/// not text is `bad-context`.
fn context_token(headers: &HeaderMap) -> Result<String, Problem> {
    let mut values = headers.get_all(CONTEXT_HEADER).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(String::new()),
        (Some(_), Some(_)) => Err(Problem::new(
            ErrorKind::BadContext,
            "more than one X-Pairdb-Context header",
        )),
        (Some(v), None) if v.is_empty() => Err(Problem::new(
            ErrorKind::BadContext,
            "X-Pairdb-Context is empty: send the context from an earlier answer, or no header",
        )),
        (Some(v), None) if v.len() <= MAX_CONTEXT_BYTES => v
            .to_str()
            .map(str::to_owned)
            .map_err(|_| Problem::new(ErrorKind::BadContext, "malformed X-Pairdb-Context")),
        (Some(_), None) => Err(Problem::new(
            ErrorKind::BadContext,
            "X-Pairdb-Context is too long",
        )),
    }
}

/// The value's media type as sent, `application/octet-stream` when absent.
fn content_type(headers: &HeaderMap) -> Result<String, Problem> {
    match headers.get(CONTENT_TYPE) {
        None => Ok(DEFAULT_CONTENT_TYPE.to_owned()),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|ct| pairdb_core::limits::valid_content_type(ct))
            .map(str::to_owned)
            .ok_or_else(|| {
                bad_request("Content-Type must be at most 255 printable ASCII characters")
            }),
    }
}

/// Sets `name` to `value` when it is a non-empty valid header value (coordinator strings always
/// are).
fn set(headers: &mut HeaderMap, name: HeaderName, value: impl AsRef<str>) {
    if value.as_ref().is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        headers.insert(name, v);
    }
}

/// The consistency the coordinator reports, else the level the gateway resolved.
fn applied_level(reported: &str, resolved: Option<pairdb_core::Consistency>) -> String {
    if reported.is_empty() {
        resolved.unwrap_or_default().as_str().to_owned()
    } else {
        reported.to_owned()
    }
}

/// Response headers of a write (the idempotency-key layer adds `Idempotency-Key`).
fn write_headers(written: &WriteResponse, resolved: Option<pairdb_core::Consistency>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    set(&mut headers, CONTEXT_HEADER, &written.context);
    set(
        &mut headers,
        CONSISTENCY_HEADER,
        applied_level(&written.consistency, resolved),
    );
    set(
        &mut headers,
        REPLICAS_HEADER,
        format!("acked={}/{}", written.acks, written.replicas),
    );
    match written.conflict() {
        ConflictOutcome::Won => set(&mut headers, CONFLICT_HEADER, "lww; outcome=won"),
        ConflictOutcome::Lost => set(&mut headers, CONFLICT_HEADER, "lww; outcome=lost"),
        ConflictOutcome::None => {}
    }
    if written.replayed {
        headers.insert(
            HeaderName::from_static(headers::IDEMPOTENT_REPLAYED),
            HeaderValue::from_static("true"),
        );
    }
    headers
}

/// What is left of the request's `timeout` (counted from its arrival) for the coordinator: at
/// least 1 ms, since 0 would mean "the server's default".
fn remaining(extensions: &http::Extensions, timeout: Duration) -> Duration {
    deadline_of(extensions, timeout)
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_millis(1))
}

/// The idempotency key the stack resolved for this write ([`IdempotencyKey`]).
fn resolved_key(extensions: &http::Extensions) -> Result<String, Problem> {
    extensions
        .get::<IdempotencyKey>()
        .map(|k| k.0.clone())
        .ok_or_else(|| {
            tracing::error!("a key write ran without the idempotency-key layer");
            Problem::new(ErrorKind::Internal, ErrorKind::Internal.title())
        })
}

/// Stores the request body as the value of `{key}`.
#[utoipa::path(put, path = "/v1/kv/{key}", tag = "kv",
    params(
        ("key" = String, Path, description = "The key, one path segment, percent-decoded by the gateway into raw bytes (1–1024 bytes); encode / as %2F"),
        ("Content-Type" = Option<String>, Header, description = "Stored with the value; default application/octet-stream"),
        ("X-Consistency" = Option<String>, Header, description = "one | quorum | all (or ?consistency=); default the tenant's"),
        ("X-Pairdb-Context" = Option<String>, Header, description = "Context from an earlier GET/PUT/DELETE; absent = blind overwrite"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII, quotes optional; generated when absent"),
        ("X-Pairdb-Timeout" = Option<u64>, Header, description = "Deadline in ms, capped by the server's request timeout"),
    ),
    request_body(content = inline(ValueBytes), content_type = "application/octet-stream", description = "The value bytes (≤ 1 MiB by default)"),
    responses(
        (status = 200, description = "Written at the requested level", body = WriteResult,
            headers(
                ("X-Pairdb-Context" = String, description = "Context of the version written"),
                ("X-Consistency" = String, description = "The level applied"),
                ("X-Pairdb-Replicas" = String, description = "acked=<a>/<n>"),
                ("X-Pairdb-Conflict" = String, description = "lww; outcome=won|lost, when the write overwrote or lost to a version its context did not cover"),
                ("Idempotency-Key" = String, description = "The key the write was made with"),
            )),
        (status = 400, description = "Bad key, consistency, context, idempotency key or timeout", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not this key's tenant", body = ProblemBody, content_type = "application/problem+json"),
        (status = 408, description = "The value did not arrive before the request's deadline", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Value too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "A request with the same idempotency key is still in flight (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "The idempotency key was already used for a different request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "The tenant is over its rate limit (Retry-After, RateLimit, RateLimit-Policy)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The level cannot be met, or the cluster is not ready (acks, required, applied)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 504, description = "Replicas did not answer in time (applied: unknown)", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn put_value(
    State(state): State<AppState>,
    Caller(mut call): Caller,
    request: Request,
) -> Result<Response, Problem> {
    let trace = call.trace;
    let traced = |p: Problem| p.with_trace(trace.as_ref());
    let (parts, body) = request.into_parts();
    let key = key_from_path(parts.uri.path(), state.max_key_bytes)
        .map_err(|e| traced(e.into_problem()))?;
    let idempotency_key = resolved_key(&parts.extensions).map_err(traced)?;
    let timeout = deadline(&parts.headers, state.request_timeout).map_err(traced)?;
    let context = context_token(&parts.headers).map_err(traced)?;
    let content_type = content_type(&parts.headers).map_err(traced)?;
    let value = read_limited(
        &parts.headers,
        body,
        state.max_value_bytes,
        trace.as_ref(),
        deadline_of(&parts.extensions, timeout),
    )
    .await?;
    // The body's time counts against the request's deadline.
    let timeout = remaining(&parts.extensions, timeout);
    call.timeout = Some(timeout);
    let message = PutRequest {
        key,
        value,
        content_type,
        context,
        idempotency_key,
        timeout_ms: millis(timeout),
    };
    let written = state
        .coordinators
        .put(&call, message)
        .await
        .map_err(|s| traced(Problem::from_status(&s).for_write()))?;
    let headers = write_headers(&written, call.consistency);
    let body = WriteResult {
        context: written.context,
        acks: written.acks,
        replicas: written.replicas,
    };
    Ok((StatusCode::OK, headers, Json(body)).into_response())
}

/// Reads the value of `{key}`.
#[utoipa::path(get, path = "/v1/kv/{key}", tag = "kv",
    params(
        ("key" = String, Path, description = "The key, one path segment, percent-decoded into raw bytes"),
        ("X-Consistency" = Option<String>, Header, description = "one | quorum | all (or ?consistency=); default the tenant's"),
        ("X-Pairdb-Timeout" = Option<u64>, Header, description = "Deadline in ms, capped by the server's request timeout"),
    ),
    responses(
        (status = 200, description = "The value, with the Content-Type it was stored with", body = inline(ValueBytes), content_type = "application/octet-stream",
            headers(
                ("X-Pairdb-Context" = String, description = "Context to send with a write descending this read"),
                ("X-Consistency" = String, description = "The level applied"),
                ("X-Pairdb-Replicas" = String, description = "answered=<a>/<n>"),
                ("X-Pairdb-Conflict" = String, description = "lww, when concurrent versions were resolved"),
                ("X-Pairdb-Read-Repair" = u32, description = "Replicas repaired before answering"),
                ("Cache-Control" = String, description = "no-store"),
            )),
        (status = 400, description = "Bad key, consistency or timeout", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Key absent or deleted", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "The tenant is over its rate limit (Retry-After, RateLimit, RateLimit-Policy)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The level cannot be met (answered, required)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 504, description = "Replicas did not answer in time", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_value(
    State(state): State<AppState>,
    Caller(mut call): Caller,
    request: Request,
) -> Result<Response, Problem> {
    let trace = call.trace;
    let traced = |p: Problem| p.with_trace(trace.as_ref());
    let (parts, _) = request.into_parts();
    let key = key_from_path(parts.uri.path(), state.max_key_bytes)
        .map_err(|e| traced(e.into_problem()))?;
    let timeout = deadline(&parts.headers, state.request_timeout).map_err(traced)?;
    let timeout = remaining(&parts.extensions, timeout);
    call.timeout = Some(timeout);
    let message = GetRequest {
        key,
        timeout_ms: millis(timeout),
    };
    let read = state
        .coordinators
        .get(&call, message)
        .await
        .map_err(|s| traced(Problem::from_status(&s)))?;
    let mut out = HeaderMap::new();
    if !read.context.is_empty() {
        set(&mut out, CONTEXT_HEADER, &read.context);
    }
    set(
        &mut out,
        CONSISTENCY_HEADER,
        applied_level(&read.consistency, call.consistency),
    );
    set(
        &mut out,
        REPLICAS_HEADER,
        format!("answered={}/{}", read.answered, read.replicas),
    );
    if read.read_repairs > 0 {
        set(&mut out, READ_REPAIR_HEADER, read.read_repairs.to_string());
    }
    if !read.found {
        let mut problem = traced(Problem::new(
            ErrorKind::KeyNotFound,
            "the key is absent or deleted",
        ));
        for (name, value) in &out {
            problem = problem.with_header(name.clone(), value.clone());
        }
        return Err(problem);
    }
    if read.conflict {
        set(&mut out, CONFLICT_HEADER, "lww");
    }
    let content_type = HeaderValue::from_str(&read.content_type)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    out.insert(CONTENT_TYPE, content_type);
    out.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((StatusCode::OK, out, Body::from(read.value)).into_response())
}

/// Deletes `{key}` (writes a tombstone).
#[utoipa::path(delete, path = "/v1/kv/{key}", tag = "kv",
    params(
        ("key" = String, Path, description = "The key, one path segment, percent-decoded into raw bytes"),
        ("X-Consistency" = Option<String>, Header, description = "one | quorum | all (or ?consistency=); default the tenant's"),
        ("X-Pairdb-Context" = Option<String>, Header, description = "Context from an earlier read or write"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII, quotes optional; generated when absent"),
        ("X-Pairdb-Timeout" = Option<u64>, Header, description = "Deadline in ms, capped by the server's request timeout"),
    ),
    responses(
        (status = 204, description = "Deleted (also when it was absent)",
            headers(
                ("X-Pairdb-Context" = String, description = "The tombstone's context"),
                ("X-Consistency" = String, description = "The level applied"),
                ("X-Pairdb-Replicas" = String, description = "acked=<a>/<n>"),
                ("Idempotency-Key" = String, description = "The key the delete was made with"),
            )),
        (status = 400, description = "Bad key, consistency, context, idempotency key or timeout", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "A request with the same idempotency key is still in flight (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "The idempotency key was already used for a different request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "The tenant is over its rate limit (Retry-After, RateLimit, RateLimit-Policy)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The level cannot be met, or the cluster is not ready (acks, required, applied)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 504, description = "Replicas did not answer in time (applied: unknown)", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn delete_value(
    State(state): State<AppState>,
    Caller(mut call): Caller,
    request: Request,
) -> Result<Response, Problem> {
    let trace = call.trace;
    let traced = |p: Problem| p.with_trace(trace.as_ref());
    let (parts, _) = request.into_parts();
    let key = key_from_path(parts.uri.path(), state.max_key_bytes)
        .map_err(|e| traced(e.into_problem()))?;
    let idempotency_key = resolved_key(&parts.extensions).map_err(traced)?;
    let timeout = deadline(&parts.headers, state.request_timeout).map_err(traced)?;
    let timeout = remaining(&parts.extensions, timeout);
    let context = context_token(&parts.headers).map_err(traced)?;
    call.timeout = Some(timeout);
    let message = DeleteRequest {
        key,
        context,
        idempotency_key,
        timeout_ms: millis(timeout),
    };
    let written = state
        .coordinators
        .delete(&call, message)
        .await
        .map_err(|s| traced(Problem::from_status(&s).for_write()))?;
    let headers = write_headers(&written, call.consistency);
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: HeaderName, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn deadlines() {
        let cap = Duration::from_millis(5000);
        assert_eq!(deadline(&HeaderMap::new(), cap).ok(), Some(cap));
        let d = |v| deadline(&headers(TIMEOUT_HEADER, v), cap).ok();
        assert_eq!(d("250"), Some(Duration::from_millis(250)));
        assert_eq!(d("999999"), Some(cap));
        assert_eq!(d("0"), None);
        assert_eq!(d("-5"), None);
        assert_eq!(d("1.5"), None);
        assert_eq!(d("abc"), None);
        assert_eq!(d("99999999999999999999999"), None);
    }
}
