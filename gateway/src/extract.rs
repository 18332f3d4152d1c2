//! Extractors whose failures are problems: a malformed body or path is a 400 problem+json,
//! never axum's plain-text 400/422.

use std::time::Duration;

use tokio::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http_body_util::BodyExt;
use pairdb_core::{Consistency, ErrorKind};
use pairdb_middleware::{Principal, TraceContext};
use serde::de::DeserializeOwned;

use crate::coordinators::CallContext;
use crate::problem::Problem;

/// Largest JSON request body accepted.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// Bytes of an oversized body read and discarded before answering 413, so a client still sending
/// it gets the answer instead of a reset connection. A body declared larger than the limit plus
/// this is answered at once (and its connection closed).
pub const MAX_DRAIN_BYTES: usize = 8 * 1024 * 1024;
/// Longest time spent discarding an oversized body.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// When the gateway received the request — the start of its deadline — and the server's request
/// timeout. The stack inserts it first thing ([`crate::stack::layers`]).
#[derive(Clone, Copy, Debug)]
pub struct Received {
    /// Arrival.
    pub at: Instant,
    /// The server's request timeout (`--request-timeout`).
    pub timeout: Duration,
}

/// The instant `timeout` after the request was received (now, for a request the stack did not
/// stamp).
pub fn deadline_of(extensions: &http::Extensions, timeout: Duration) -> Instant {
    let received = extensions
        .get::<Received>()
        .map_or_else(Instant::now, |r| r.at);
    received + timeout
}

/// The request's deadline under the server's request timeout.
pub fn server_deadline(extensions: &http::Extensions) -> Instant {
    match extensions.get::<Received>() {
        Some(r) => r.at + r.timeout,
        None => Instant::now() + pairdb_core::limits::DEFAULT_REQUEST_TIMEOUT,
    }
}

/// Reads at most `limit` bytes of `body`, all of it before `deadline`.
///
/// More is `payload-too-large` — decided from `Content-Length` when declared, else while
/// reading — after discarding up to [`MAX_DRAIN_BYTES`] more for at most [`DRAIN_TIMEOUT`]. A
/// body that breaks off (or is shorter than its `Content-Length`) is `bad-request`; one still
/// arriving at `deadline` is `request-timeout`. Never buffers more than `limit` bytes.
pub async fn read_limited(
    headers: &http::HeaderMap,
    body: Body,
    limit: usize,
    trace: Option<&TraceContext>,
    deadline: Instant,
) -> Result<Vec<u8>, Problem> {
    match tokio::time::timeout_at(deadline, read_within(headers, body, limit, trace)).await {
        Ok(read) => read,
        Err(_) => Err(Problem::new(
            ErrorKind::RequestTimeout,
            "the request body did not arrive before the request's deadline",
        )
        .with_trace(trace)),
    }
}

async fn read_within(
    headers: &http::HeaderMap,
    mut body: Body,
    limit: usize,
    trace: Option<&TraceContext>,
) -> Result<Vec<u8>, Problem> {
    let too_large = || {
        Problem::new(
            ErrorKind::PayloadTooLarge,
            format!("the body exceeds {limit} bytes"),
        )
        .with_trace(trace)
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let drain_bound = limit.saturating_add(MAX_DRAIN_BYTES);
    match declared {
        Some(n) if n > drain_bound as u64 => return Err(too_large()),
        Some(n) if n > limit as u64 => {
            drain(body, drain_bound).await;
            return Err(too_large());
        }
        _ => {}
    }
    let mut value = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(
                Problem::new(ErrorKind::BadRequest, "the request body could not be read")
                    .with_trace(trace),
            );
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if value.len() + data.len() > limit {
            drain(body, drain_bound.saturating_sub(value.len() + data.len())).await;
            return Err(too_large());
        }
        value.extend_from_slice(&data);
    }
    Ok(value)
}

/// Reads and discards up to `budget` bytes of `body` within [`DRAIN_TIMEOUT`].
async fn drain(mut body: Body, budget: usize) {
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len());
                if seen > budget {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
}

/// A JSON object request body of type `T` (declare `T` with `#[serde(deny_unknown_fields)]`).
///
/// Refuses with a `bad-request` problem: a `Content-Type` other than JSON, malformed JSON, a
/// body that is not a JSON object (serde would read a struct from an array), a missing, unknown
/// or mistyped field; with `payload-too-large` past [`MAX_JSON_BYTES`], and `request-timeout`
/// when the body does not arrive within the server's request timeout.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Problem> {
        let trace = request.extensions().get::<TraceContext>().copied();
        let (parts, body) = request.into_parts();
        if let Some(content_type) = parts.headers.get(CONTENT_TYPE) {
            let json = content_type.to_str().ok().is_some_and(|ct| {
                let essence = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json" || essence.ends_with("+json")
            });
            if !json {
                return Err(Problem::new(
                    ErrorKind::BadRequest,
                    "the body must be JSON (Content-Type: application/json)",
                )
                .with_trace(trace.as_ref()));
            }
        }
        let deadline = server_deadline(&parts.extensions);
        let bytes = read_limited(
            &parts.headers,
            body,
            MAX_JSON_BYTES,
            trace.as_ref(),
            deadline,
        )
        .await?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(
                Problem::new(ErrorKind::BadRequest, "the body must be a JSON object")
                    .with_trace(trace.as_ref()),
            );
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            Problem::new(ErrorKind::BadRequest, format!("malformed JSON body: {e}"))
                .with_trace(trace.as_ref())
        })
    }
}

/// Path parameters of type `T`; an undecodable segment is a `bad-request` problem.
#[derive(Debug)]
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParams(value)),
            Err(rejection) => Err(Problem::new(ErrorKind::BadRequest, rejection.body_text())
                .with_trace(parts.extensions.get::<TraceContext>())),
        }
    }
}

/// What the middleware stack resolved for this request: principal, consistency, trace.
///
/// Only available behind the auth layer; a request without a [`Principal`] is refused as an
/// `internal` problem (a wiring fault, never a client's).
#[derive(Clone, Debug)]
pub struct Caller(pub CallContext);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let trace = parts.extensions.get::<TraceContext>().copied();
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| {
                tracing::error!("a /v1 route ran without the auth layer");
                Problem::new(ErrorKind::Internal, ErrorKind::Internal.title())
                    .with_trace(trace.as_ref())
            })?;
        Ok(Caller(CallContext {
            principal,
            consistency: parts.extensions.get::<Consistency>().copied(),
            trace,
            timeout: None,
        }))
    }
}

/// The request's [`TraceContext`], if the trace layer ran. Never fails.
#[derive(Clone, Copy, Debug)]
pub struct Trace(pub Option<TraceContext>);

impl<S: Send + Sync> FromRequestParts<S> for Trace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Trace(parts.extensions.get::<TraceContext>().copied()))
    }
}
