//! RFC 9457 problem responses: the one place errors become HTTP.
//!
//! Every failure the gateway answers — a layer's rejection, a handler's validation, a
//! coordinator's `tonic::Status` — is a [`Problem`] rendered as `application/problem+json` with
//! `type` (a stable URI per [`ErrorKind`]), `title`, `status`, `detail`, `trace_id`, and the
//! extension members `acks`, `required`, `applied`, `answered` where they apply. A 401 carries
//! `WWW-Authenticate: Bearer`, a 503 `Retry-After: 1`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use pairdb_core::ErrorKind;
use pairdb_middleware::{LayerError, Reject, TraceContext};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The JSON body of a problem response (RFC 9457 with pairdb's extension members).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProblemBody {
    /// Stable URI naming the error kind, `https://pairdb.dev/problems/<slug>`; switch on it.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short human summary of the kind.
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The request's trace id (32 hex digits), to find it in the tracing backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Write acknowledgements obtained (503/504 on writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks: Option<u32>,
    /// Acknowledgements or answers the level required (503/504).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<u32>,
    /// Whether a failed write was applied anywhere: `none`, `partial` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// Replica answers obtained (503/504 on reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<u32>,
}

/// A failure on its way to the client. Rendering never fails: an unrepresentable extra header is
/// dropped, never a reason for a 500. Boxed, so `Result<_, Problem>` stays small.
#[derive(Clone, Debug)]
pub struct Problem(Box<Fields>);

#[derive(Clone, Debug)]
struct Fields {
    kind: ErrorKind,
    detail: String,
    trace_id: Option<String>,
    acks: Option<u32>,
    required: Option<u32>,
    applied: Option<String>,
    answered: Option<u32>,
    headers: HeaderMap,
}

impl Problem {
    /// A problem of `kind` explained by `detail`.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Problem(Box::new(Fields {
            kind,
            detail: detail.into(),
            trace_id: None,
            acks: None,
            required: None,
            applied: None,
            answered: None,
            headers: HeaderMap::new(),
        }))
    }

    /// The problem's kind.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The HTTP status of the kind (500 if the kind's status were ever invalid).
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Names the request's trace in the body.
    pub fn with_trace(mut self, trace: Option<&TraceContext>) -> Self {
        self.0.trace_id = trace.map(TraceContext::trace_id_hex);
        self
    }

    /// Adds a response header (e.g. `Allow` on a 405, `X-Pairdb-Context` on a 404).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.insert(name, value);
        self
    }

    /// Marks a failed write whose outcome the gateway cannot know (it gave up waiting):
    /// `applied: unknown` unless the coordinator already said.
    pub fn for_write(mut self) -> Self {
        let quorum_or_timeout = matches!(
            self.0.kind,
            ErrorKind::Timeout | ErrorKind::QuorumUnavailable
        );
        if quorum_or_timeout && self.0.applied.is_none() {
            self.0.applied = Some("unknown".to_owned());
        }
        self
    }

    /// The problem for a coordinator's `status`.
    ///
    /// The kind comes from the `ErrorDetail` in the status details when it names a known slug,
    /// else from the gRPC code (`InvalidArgument`→bad-request, `Unauthenticated`→unauthorized,
    /// `PermissionDenied`→forbidden, `NotFound`→tenant-not-found, `AlreadyExists`→tenant-exists,
    /// `Unavailable`→quorum-unavailable, `DeadlineExceeded` and `Cancelled`→timeout, anything
    /// else→internal). Internal faults keep their message out of the response.
    pub fn from_status(status: &tonic::Status) -> Self {
        let detail = pairdb_proto::error_detail(status);
        let kind = detail
            .as_ref()
            .and_then(|d| ErrorKind::from_slug(&d.kind))
            .unwrap_or_else(|| kind_of_code(status.code()));
        let message = if kind == ErrorKind::Internal {
            tracing::warn!(code = ?status.code(), message = status.message(), "coordinator fault");
            kind.title().to_owned()
        } else if status.message().is_empty() {
            kind.title().to_owned()
        } else {
            status.message().to_owned()
        };
        let mut problem = Problem::new(kind, message);
        if let Some(d) = detail {
            if matches!(kind, ErrorKind::QuorumUnavailable | ErrorKind::Timeout) {
                problem.0.required = Some(d.required);
                if d.applied.is_empty() {
                    problem.0.answered = Some(d.answered);
                } else {
                    problem.0.acks = Some(d.acks);
                }
            }
            // Any failed write says what may have been applied (a not-ready write: none).
            if !d.applied.is_empty() {
                problem.0.applied = Some(d.applied);
            }
        }
        problem
    }

    /// The JSON body.
    pub fn body(&self) -> ProblemBody {
        ProblemBody {
            type_uri: self.0.kind.type_uri(),
            title: self.0.kind.title().to_owned(),
            status: self.status().as_u16(),
            detail: self.0.detail.clone(),
            trace_id: self.0.trace_id.clone(),
            acks: self.0.acks,
            required: self.0.required,
            applied: self.0.applied.clone(),
            answered: self.0.answered,
        }
    }
}

/// The error kind of a gRPC code when the status carries no `ErrorDetail`.
fn kind_of_code(code: tonic::Code) -> ErrorKind {
    match code {
        tonic::Code::InvalidArgument => ErrorKind::BadRequest,
        tonic::Code::Unauthenticated => ErrorKind::Unauthorized,
        tonic::Code::PermissionDenied => ErrorKind::Forbidden,
        tonic::Code::NotFound => ErrorKind::TenantNotFound,
        tonic::Code::AlreadyExists => ErrorKind::TenantExists,
        tonic::Code::Unavailable => ErrorKind::QuorumUnavailable,
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ErrorKind::Timeout,
        // tonic's answer to a message over the size limit.
        tonic::Code::OutOfRange => ErrorKind::PayloadTooLarge,
        tonic::Code::ResourceExhausted => ErrorKind::QuorumUnavailable,
        _ => ErrorKind::Internal,
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.extend(self.0.headers);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self.0.kind.http_status() {
            401 => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            503 => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// True when `headers` say the body is already a problem document.
pub fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// Renders middleware rejections as problem+json.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProblemReject;

impl Reject for ProblemReject {
    type Body = Body;

    fn reject(&self, error: LayerError, trace: Option<&TraceContext>) -> http::Response<Body> {
        let mut problem = Problem::new(error.kind, error.detail).with_trace(trace);
        for (name, value) in error.headers {
            problem = problem.with_header(name, value);
        }
        problem.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairdb_proto::coordinator::ErrorDetail;
    use prost::Message;

    #[test]
    fn status_with_detail_maps_kind_and_members() {
        let detail = ErrorDetail {
            kind: "quorum-unavailable".into(),
            acks: 1,
            required: 2,
            applied: "partial".into(),
            answered: 0,
        };
        let status = tonic::Status::with_details(
            tonic::Code::Unavailable,
            "only 1 of 2",
            detail.encode_to_vec().into(),
        );
        let body = Problem::from_status(&status).body();
        assert_eq!(body.status, 503);
        assert_eq!(
            body.type_uri,
            "https://pairdb.dev/problems/quorum-unavailable"
        );
        assert_eq!(
            (body.acks, body.required, body.applied.as_deref()),
            (Some(1), Some(2), Some("partial"))
        );
        assert_eq!(body.answered, None);
    }

    #[test]
    fn read_failures_report_answered() {
        let detail = ErrorDetail {
            kind: "timeout".into(),
            required: 2,
            answered: 1,
            ..ErrorDetail::default()
        };
        let status = tonic::Status::with_details(
            tonic::Code::DeadlineExceeded,
            "",
            detail.encode_to_vec().into(),
        );
        let body = Problem::from_status(&status).body();
        assert_eq!(
            (body.status, body.answered, body.required, body.acks),
            (504, Some(1), Some(2), None)
        );
    }

    #[test]
    fn codes_map_without_detail() {
        for (code, status) in [
            (tonic::Code::InvalidArgument, 400),
            (tonic::Code::Unauthenticated, 401),
            (tonic::Code::PermissionDenied, 403),
            (tonic::Code::NotFound, 404),
            (tonic::Code::AlreadyExists, 409),
            (tonic::Code::Unavailable, 503),
            (tonic::Code::DeadlineExceeded, 504),
            (tonic::Code::Internal, 500),
            (tonic::Code::Unknown, 500),
        ] {
            let problem = Problem::from_status(&tonic::Status::new(code, "secret internals"));
            assert_eq!(problem.status().as_u16(), status, "{code:?}");
            if status == 500 {
                assert!(!problem.body().detail.contains("secret"));
            }
        }
    }

    #[test]
    fn unknown_slug_falls_back_to_code() {
        let detail = ErrorDetail {
            kind: "from-the-future".into(),
            ..ErrorDetail::default()
        };
        let status = tonic::Status::with_details(
            tonic::Code::PermissionDenied,
            "no",
            detail.encode_to_vec().into(),
        );
        assert_eq!(Problem::from_status(&status).kind(), ErrorKind::Forbidden);
    }

    #[test]
    fn headers_by_status() {
        let r = Problem::new(ErrorKind::Unauthorized, "x").into_response();
        assert_eq!(
            r.headers().get(WWW_AUTHENTICATE).map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        assert!(is_problem(r.headers()));
        let r = Problem::new(ErrorKind::NotReady, "x").into_response();
        assert_eq!(
            r.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let r = Problem::new(ErrorKind::Timeout, "x")
            .for_write()
            .into_response();
        assert!(r.headers().get(RETRY_AFTER).is_none());
    }
}
