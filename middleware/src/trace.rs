//! W3C trace context in and out, and the request span.
//!
//! [`TraceLayer`] honours a valid incoming `traceparent` (version `00`), otherwise starts a new
//! trace. Either way it mints a span id for this hop, stores the [`TraceContext`] as a request
//! extension, runs the inner service inside a `request` span, and adds `traceresponse` to every
//! response the inner service produces — including rejections from inner layers — so a client
//! can find its trace.
//!
//! When the process records spans with OpenTelemetry (a `tracing-opentelemetry` layer is
//! installed, as the `pairdb` binary does when `OTEL_EXPORTER_OTLP_ENDPOINT` is set), the request
//! span *is* the exported span: it is made the child of the caller's span, and the ids in
//! [`TraceContext`] — hence in `traceresponse`, in problem details and in outgoing `traceparent`s
//! — are that span's. Without such a layer the ids are minted here and nothing is exported.
//! [`current_traceparent`] gives calls made further down (in spawned tasks too, when they are
//! instrumented with the request span) the `traceparent` that makes them children of the span
//! they run in.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use rand::RngCore;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Incoming W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static(pairdb_core::headers::TRACEPARENT);
/// Outgoing W3C Trace Context level 2 response header.
pub const TRACERESPONSE: HeaderName = HeaderName::from_static(pairdb_core::headers::TRACERESPONSE);

/// The trace context of one request at this hop.
///
/// `trace_id` and `span_id` are never all zero; `span_id` is fresh for this hop, and
/// `parent_span_id` is the caller's span when it sent a valid `traceparent`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace this request belongs to.
    pub trace_id: [u8; 16],
    /// This hop's span, minted here.
    pub span_id: [u8; 8],
    /// The caller's span, when the request carried a valid `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    /// The caller's sampling decision; new traces are sampled.
    pub sampled: bool,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("trace_id", &self.trace_id_hex())
            .field("span_id", &hex::encode(self.span_id))
            .field("parent_span_id", &self.parent_span_id.map(hex::encode))
            .field("sampled", &self.sampled)
            .finish()
    }
}

fn random_nonzero<const N: usize>() -> [u8; N] {
    let mut rng = rand::rng();
    let mut out = [0u8; N];
    while out.iter().all(|b| *b == 0) {
        rng.fill_bytes(&mut out);
    }
    out
}

/// Decodes exactly `2 * N` lowercase hex digits that are not all zero.
fn parse_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    out.iter().any(|b| *b != 0).then_some(out)
}

impl TraceContext {
    /// A new sampled trace with fresh random ids and no parent.
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: random_nonzero(),
            span_id: random_nonzero(),
            parent_span_id: None,
            sampled: true,
        }
    }

    /// The context of a child hop of a valid version-`00` `traceparent`
    /// (`00-<32 hex>-<16 hex>-<2 hex>`, lowercase, ids not all zero); `None` for anything else.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let mut parts = value.split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let [flags] = parse_flags(flags)?;
        Some(TraceContext {
            trace_id: parse_id(trace)?,
            span_id: random_nonzero(),
            parent_span_id: Some(parse_id(parent)?),
            sampled: flags & 1 == 1,
        })
    }

    /// The context for a request with these headers: a child of its `traceparent` when there is
    /// exactly one valid such header, otherwise a new root.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(TRACEPARENT).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v
                .to_str()
                .ok()
                .and_then(Self::from_traceparent)
                .unwrap_or_else(Self::new_root),
            _ => Self::new_root(),
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The `traceparent` to send on outgoing calls made for this request:
    /// `00-<trace id>-<this hop's span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id_hex(),
            hex::encode(self.span_id),
            if self.sampled { "01" } else { "00" }
        )
    }

    /// The `traceresponse` header value naming this hop: the same format as
    /// [`traceparent`](Self::traceparent).
    pub fn traceresponse(&self) -> String {
        self.traceparent()
    }

    /// Makes `span` the span of this hop. When OpenTelemetry records `span`, it becomes the child
    /// of the caller's span (a new root when there is none) and the returned context carries its
    /// ids, so what this hop reports is what is exported, and it is named `name()` (only then
    /// computed: a process that exports nothing formats no span names); otherwise `self` is
    /// returned unchanged.
    fn adopt(self, span: &tracing::Span, name: impl FnOnce() -> String) -> Self {
        let parent = match self.parent_span_id {
            Some(parent) => {
                opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_bytes(self.trace_id),
                    SpanId::from_bytes(parent),
                    if self.sampled {
                        TraceFlags::SAMPLED
                    } else {
                        TraceFlags::default()
                    },
                    true,
                    TraceState::default(),
                ))
            }
            // An explicit empty parent: a request without a caller's context is a new trace,
            // whatever span happened to be current when it arrived.
            None => opentelemetry::Context::new(),
        };
        if span.set_parent(parent).is_err() {
            return self;
        }
        // Before the span starts (its context is read below): the exported name.
        span.record("otel.name", name().as_str());
        let context = span.context();
        let exported = context.span().span_context().clone();
        if !exported.is_valid() {
            return self;
        }
        TraceContext {
            trace_id: exported.trace_id().to_bytes(),
            span_id: exported.span_id().to_bytes(),
            parent_span_id: self.parent_span_id,
            sampled: exported.is_sampled(),
        }
    }
}

/// The span for work a request starts that outlives it (replication after the answer, repairs):
/// exported as a child of the current span, named `name`, but not holding the request's span
/// open — so the request's exported span ends with its answer. Without OpenTelemetry, the
/// current span itself (its logs keep the request's fields).
pub fn background_span(name: &'static str) -> tracing::Span {
    let current = tracing::Span::current();
    let parent = current.context();
    if !parent.span().span_context().is_valid() {
        return current;
    }
    let span = tracing::info_span!(parent: None, "background", otel.name = name);
    if span.set_parent(parent).is_err() {
        return current;
    }
    span
}

/// The span of one call of a call stream: what [`TraceLayer`] makes for a unary call — named
/// `{role} POST {rpc}`, exported as the child of the caller's `traceparent` when it is a valid
/// one (else as a new root), and carrying its trace id in the `trace_id` field.
pub fn call_span(role: &'static str, rpc: &'static str, traceparent: &str) -> tracing::Span {
    let trace = TraceContext::from_traceparent(traceparent).unwrap_or_else(TraceContext::new_root);
    let span = tracing::info_span!(
        parent: None,
        "request",
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        method = "POST",
        path = rpc,
        trace_id = tracing::field::Empty,
    );
    let trace = trace.adopt(&span, || format!("{role} POST {rpc}"));
    span.record("trace_id", trace.trace_id_hex().as_str());
    span
}

/// The `traceparent` for a call made now: the OpenTelemetry span the calling code runs in (the
/// current `tracing` span) as the parent. `None` when no span is recorded with OpenTelemetry —
/// the callee then starts a trace of its own.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let current = span.span_context();
    current.is_valid().then(|| {
        format!(
            "00-{}-{}-{}",
            current.trace_id(),
            current.span_id(),
            if current.is_sampled() { "01" } else { "00" }
        )
    })
}

fn parse_flags(s: &str) -> Option<[u8; 1]> {
    if s.len() != 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 1];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Builds [`TraceService`]: trace context, request span and `traceresponse` for everything inside.
///
/// Put it outermost so every response, including rejections and routing failures, carries
/// `traceresponse`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer {
    redacted_prefixes: &'static [&'static str],
    untraced: &'static [&'static str],
    role: &'static str,
    route_of: Option<crate::metrics::RouteOf>,
}

impl TraceLayer {
    /// A trace layer that records request paths in its span as they are.
    pub fn new() -> Self {
        TraceLayer::default()
    }

    /// Records a path starting with one of `prefixes` as the prefix followed by `…`, so the span
    /// never holds what follows (e.g. user keys under `/v1/kv/`; logs never contain keys).
    pub fn redact_paths_after(mut self, prefixes: &'static [&'static str]) -> Self {
        self.redacted_prefixes = prefixes;
        self
    }

    /// Passes requests to exactly these paths through untouched: no span, no `traceresponse`
    /// (long-lived streams whose messages are traced one by one, as [`call_span`]s).
    pub fn untraced(mut self, paths: &'static [&'static str]) -> Self {
        self.untraced = paths;
        self
    }

    /// Names the role serving the requests (`gateway`, `coordinator`, `storage`): the first word
    /// of every exported span's name, so one trace reads tier by tier.
    pub fn role(mut self, role: &'static str) -> Self {
        self.role = role;
        self
    }

    /// Names exported spans by the request's route template (`/v1/kv/{key}`, an RPC name)
    /// instead of its path, so span names stay few whatever paths clients send.
    pub fn route_names(mut self, route_of: crate::metrics::RouteOf) -> Self {
        self.route_of = Some(route_of);
        self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            redacted_prefixes: self.redacted_prefixes,
            untraced: self.untraced,
            role: self.role,
            route_of: self.route_of,
        }
    }
}

/// Service of [`TraceLayer`]: inserts the [`TraceContext`] extension, instruments the inner call
/// with a `request` span and adds `traceresponse` to the inner service's response.
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
    redacted_prefixes: &'static [&'static str],
    untraced: &'static [&'static str],
    role: &'static str,
    route_of: Option<crate::metrics::RouteOf>,
}

impl<S, B, ResBody> Service<Request<B>> for TraceService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if self.untraced.contains(&request.uri().path()) {
            return ResponseFuture {
                inner: self.inner.call(request).instrument(tracing::Span::none()),
                header: None,
            };
        }
        let trace = TraceContext::from_headers(request.headers());
        let path = request.uri().path();
        let path = match self
            .redacted_prefixes
            .iter()
            .find(|p| path.starts_with(**p) && path.len() > p.len())
        {
            Some(prefix) => format!("{prefix}…"),
            None => path.to_owned(),
        };
        let span = tracing::info_span!(
            "request",
            otel.name = tracing::field::Empty,
            otel.kind = "server",
            method = %request.method(),
            path = %path,
            trace_id = tracing::field::Empty,
        );
        let trace = trace.adopt(&span, || {
            let route = match self.route_of {
                Some(route_of) => route_of(request.method(), request.uri().path()),
                None => path.as_str(),
            };
            match self.role {
                "" => format!("{} {route}", request.method()),
                role => format!("{role} {} {route}", request.method()),
            }
        });
        span.record("trace_id", trace.trace_id_hex().as_str());
        let header = HeaderValue::try_from(trace.traceresponse()).ok();
        request.extensions_mut().insert(trace);
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ResponseFuture {
            inner: future.instrument(span),
            header,
        }
    }
}

pin_project_lite::pin_project! {
    /// Future of [`TraceService`]: the inner future, inside the request span, whose response gets
    /// `traceresponse`.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        header: Option<HeaderValue>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(header) = this.header.take() {
            response.headers_mut().insert(TRACERESPONSE, header);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::from_traceparent(tp).expect("valid");
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            ctx.parent_span_id.map(hex::encode).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(ctx.sampled);
        assert_ne!(ctx.span_id, [0; 8]);
        assert_ne!(Some(ctx.span_id), ctx.parent_span_id);
        let out = ctx.traceparent();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"));
        assert_eq!(out.len(), 55);
    }

    #[test]
    fn rejects_invalid_traceparent() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ] {
            assert!(TraceContext::from_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn unsampled_flag_is_kept() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let ctx = TraceContext::from_traceparent(tp).expect("valid");
        assert!(!ctx.sampled);
        assert!(ctx.traceparent().ends_with("-00"));
    }

    #[test]
    fn new_roots_differ() {
        let a = TraceContext::new_root();
        let b = TraceContext::new_root();
        assert_ne!(a.trace_id, b.trace_id);
        assert!(a.parent_span_id.is_none());
        assert!(a.sampled);
    }
}
