//! Idempotency (DESIGN §3): a write sent again with the same `Idempotency-Key` gets the first
//! attempt's answer instead of running again.
//!
//! For a request carrying an `Idempotency-Key` (the client's: a key the gateway generated is in no
//! header and costs no store round trip) by a tenant, other than `GET`/`HEAD`, the layer takes an
//! in-flight marker for `(tenant, key)` with an owner token and a TTL above the request deadline,
//! runs the request, and records the response for 24 h (configurable) if it is a 2xx or a
//! deterministic 4xx — never a 401, 408, 429 or 5xx, which release the key so a retry runs again.
//! A request with a recorded key and the same fingerprint — method, path, SHA-256 of the body,
//! `Content-Type` and `X-Pairdb-Context` — gets the recorded response with
//! `Idempotent-Replayed: true`; with another fingerprint, 422 `idempotency-key-reused`; while the
//! first is in flight, 409 `idempotency-in-flight` with `Retry-After`. When the store cannot be
//! reached the request is refused 503 `not-ready` and nothing runs (fail closed).
//!
//! The key still travels to the leader, which deduplicates by it: exactly-once does not rest on
//! this store alone. Calls a gateway [`Forwarded`](crate::Forwarded) pass untouched (the gateway
//! ran this layer).

mod body;
pub mod redis;
pub mod store;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, Either};
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use pairdb_core::ErrorKind;
use pairdb_metadata::TenantConfig;
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

use crate::metrics;
use crate::principal::Forwarded;
use crate::reject::{LayerError, Reject};
use crate::trace::TraceContext;

pub use body::{FromBytes, grpc_answer};
pub use redis::RedisIdempotencyStore;
pub use store::{Begin, IdempotencyStore, MemoryIdempotencyStore, Recorded, StoreError};

/// The request header carrying the client's key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header marking a replay.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The request header carrying the write's context token (part of the fingerprint).
pub const CONTEXT: HeaderName = HeaderName::from_static("x-pairdb-context");

/// How the layer behaves.
#[derive(Clone, Debug)]
pub struct IdempotencyConfig {
    /// How long a completed response is replayed.
    pub record_ttl: Duration,
    /// How long an in-flight marker holds the key: above the longest a request may run, so a
    /// marker outlives its request unless the process running it died.
    pub in_flight_ttl: Duration,
    /// The largest request body read (a larger one is refused 413); the handlers' own limit,
    /// plus room for framing.
    pub max_request_bytes: usize,
    /// The largest response recorded; a larger one is answered but not recorded (the key is
    /// released).
    pub max_record_bytes: usize,
    /// How long the layer waits for the request body.
    pub body_timeout: Duration,
    /// `None`: the layer serves HTTP, and applies to every method but GET and HEAD. `Some`: it
    /// serves gRPC, applies to the calls of these paths (`/package.Service/Method`, the writes),
    /// fingerprints each by its path and message, and reads its outcome from `grpc-status`.
    pub grpc_writes: Option<&'static [&'static str]>,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            record_ttl: Duration::from_secs(24 * 3600),
            in_flight_ttl: Duration::from_secs(60),
            max_request_bytes: 2 << 20,
            max_record_bytes: 64 << 10,
            body_timeout: Duration::from_secs(30),
            grpc_writes: None,
        }
    }
}

/// Builds [`IdempotencyService`].
#[derive(Clone)]
pub struct IdempotencyLayer<R> {
    store: Arc<dyn IdempotencyStore>,
    config: IdempotencyConfig,
    reject: R,
}

impl<R: Reject> IdempotencyLayer<R> {
    /// A layer recording in `store`, refusing through `reject`.
    pub fn new(store: Arc<dyn IdempotencyStore>, config: IdempotencyConfig, reject: R) -> Self {
        IdempotencyLayer {
            store,
            config,
            reject,
        }
    }
}

impl<S, R: Clone> Layer<S> for IdempotencyLayer<R> {
    type Service = IdempotencyService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            store: Arc::clone(&self.store),
            config: self.config.clone(),
            reject: self.reject.clone(),
        }
    }
}

/// Service of [`IdempotencyLayer`]. Put it innermost: it reads the tenant, and what it replays
/// must be what the handler answered.
#[derive(Clone)]
pub struct IdempotencyService<S, R> {
    inner: S,
    store: Arc<dyn IdempotencyStore>,
    config: IdempotencyConfig,
    reject: R,
}

/// The fingerprint of a request: method, path (as sent: one key has one encoding a client
/// keeps to), body digest, and every value of `Content-Type` and `X-Pairdb-Context` (absent,
/// empty and repeated headers all differ), each length-prefixed.
pub fn fingerprint(
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(method.as_str().as_bytes());
    part(path.as_bytes());
    for name in [CONTENT_TYPE, CONTEXT] {
        let values: Vec<&HeaderValue> = headers.get_all(&name).iter().collect();
        part(&(values.len() as u64).to_le_bytes());
        for v in values {
            part(v.as_bytes());
        }
    }
    part(&Sha256::digest(body));
    h.finalize().into()
}

/// Whether a response of `status` is recorded (and replayed) rather than released.
pub fn recorded(status: StatusCode) -> bool {
    status.is_success()
        || (status.is_client_error() && !matches!(status.as_u16(), 401 | 408 | 429 | 499))
}

fn recorded_status(status: u16) -> bool {
    StatusCode::from_u16(status).is_ok_and(recorded)
}

impl<S, B, R> Service<Request<B>> for IdempotencyService<S, R>
where
    S: Service<Request<B>, Response = Response<R::Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Body<Data = Bytes> + FromBytes + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R: Reject,
    R::Body: Body<Data = Bytes> + FromBytes + Send,
    <R::Body as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = Response<R::Body>;
    type Error = S::Error;
    /// Requests the layer does not apply to run the inner future as is, unboxed.
    type Future = Either<S::Future, BoxFuture<'static, Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was polled ready serves this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let applies = match self.config.grpc_writes {
            None => !matches!(*request.method(), Method::GET | Method::HEAD),
            Some(writes) => writes.contains(&request.uri().path()),
        } && request.extensions().get::<Forwarded>().is_none();
        let scope = request
            .extensions()
            .get::<TenantConfig>()
            .map(|t| t.tenant_id.clone());
        let key = request
            .headers()
            .get(IDEMPOTENCY_KEY)
            .and_then(|v| pairdb_core::idempotency::parse(v.as_bytes()))
            .map(str::to_owned);
        let (Some(scope), Some(key), true) = (scope, key, applies) else {
            return Either::Left(inner.call(request));
        };
        let store = Arc::clone(&self.store);
        let config = self.config.clone();
        let reject = self.reject.clone();
        Either::Right(Box::pin(async move {
            let trace = request.extensions().get::<TraceContext>().copied();
            let refuse = |error: LayerError| Ok(reject.reject(error, trace.as_ref()));
            let (parts, body) = request.into_parts();
            let collected = tokio::time::timeout(
                config.body_timeout,
                Limited::new(body, config.max_request_bytes).collect(),
            )
            .await;
            let body = match collected {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    return refuse(LayerError::new(
                        ErrorKind::PayloadTooLarge,
                        format!(
                            "the request body exceeds {} bytes",
                            config.max_request_bytes
                        ),
                    ));
                }
                Ok(Err(e)) => {
                    return refuse(LayerError::new(
                        ErrorKind::BadRequest,
                        format!("cannot read the request body: {e}"),
                    ));
                }
                Err(_) => {
                    return refuse(LayerError::new(
                        ErrorKind::RequestTimeout,
                        "the request body did not arrive in time",
                    ));
                }
            };
            let print = fingerprint(&parts.method, parts.uri.path(), &parts.headers, &body);
            let owner: u128 = rand::random();
            let began = store
                .begin(&scope, &key, print, owner, config.in_flight_ttl)
                .await;
            match began {
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency store unreachable; refusing the write");
                    refuse(LayerError::new(
                        ErrorKind::NotReady,
                        "the idempotency store is unreachable; nothing was done, retry later",
                    ))
                }
                Ok(Begin::Done(record)) if record.fingerprint == print => {
                    Ok(replay(&reject, record))
                }
                Ok(Begin::InFlight { fingerprint }) if fingerprint == print => refuse(
                    LayerError::new(
                        ErrorKind::IdempotencyInFlight,
                        "a request with this idempotency key is still in flight; retry after it",
                    )
                    .with_header(RETRY_AFTER, HeaderValue::from_static("1")),
                ),
                Ok(Begin::Done(_) | Begin::InFlight { .. }) => refuse(LayerError::new(
                    ErrorKind::IdempotencyKeyReused,
                    "this idempotency key was used for a different request",
                )),
                Ok(Begin::Started) => {
                    // If this request is dropped before it finishes (the client went away), the
                    // marker is released, so a retry runs instead of waiting out its TTL.
                    let mut marker = Marker {
                        store: Some(Arc::clone(&store)),
                        scope: scope.clone(),
                        key: key.clone(),
                        owner,
                    };
                    let request = Request::from_parts(parts, B::from_bytes(body));
                    let response = match inner.call(request).await {
                        Ok(r) => r,
                        Err(e) => {
                            marker.release().await;
                            return Err(e);
                        }
                    };
                    let response = finish(
                        &reject, &*store, &config, &scope, &key, owner, print, response,
                    )
                    .await;
                    // `finish` recorded or released the marker (a release after a record does
                    // nothing, should this be dropped while `finish` ran).
                    marker.store = None;
                    Ok(response)
                }
            }
        }))
    }
}

/// An in-flight marker held by a running request: released when the request is dropped
/// before it finishes.
struct Marker {
    /// `None` once the request's outcome took charge of the marker.
    store: Option<Arc<dyn IdempotencyStore>>,
    scope: String,
    key: String,
    owner: u128,
}

impl Marker {
    async fn release(&mut self) {
        if let Some(store) = self.store.take()
            && let Err(e) = store.release(&self.scope, &self.key, self.owner).await
        {
            tracing::warn!(error = %e, "cannot release an idempotency key; it frees at its TTL");
        }
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let (scope, key, owner) = (
            std::mem::take(&mut self.scope),
            std::mem::take(&mut self.key),
            self.owner,
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = store.release(&scope, &key, owner).await {
                    tracing::warn!(error = %e, "cannot release an idempotency key; it frees at its TTL");
                }
            });
        }
    }
}

/// The recorded response, marked as a replay.
fn replay<R>(reject: &R, record: Recorded) -> Response<R::Body>
where
    R: Reject,
    R::Body: FromBytes,
{
    let trailers = (!record.trailers.is_empty()).then(|| {
        let mut map = http::HeaderMap::new();
        for (name, value) in &record.trailers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                map.append(n, v);
            }
        }
        map
    });
    let mut response = Response::new(reject.body(record.body, trailers));
    *response.status_mut() = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
    for (name, value) in record.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Records `response` (or releases the key), and returns it.
#[allow(clippy::too_many_arguments)]
async fn finish<R>(
    reject: &R,
    store: &dyn IdempotencyStore,
    config: &IdempotencyConfig,
    scope: &str,
    key: &str,
    owner: u128,
    print: [u8; 32],
    response: Response<R::Body>,
) -> Response<R::Body>
where
    R: Reject,
    R::Body: Body<Data = Bytes> + FromBytes + Send,
    <R::Body as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let release = || async {
        if let Err(e) = store.release(scope, key, owner).await {
            tracing::warn!(error = %e, "cannot release an idempotency key; it frees at its TTL");
        }
    };
    let grpc = config.grpc_writes.is_some();
    // The outcome, when the head says it: always over HTTP; over gRPC only for an answer without
    // a message (a refusal), the others saying it in their trailers.
    let head = if grpc {
        metrics::grpc_status_as_http(response.headers())
    } else {
        Some(response.status().as_u16())
    };
    if head.is_some_and(|status| !recorded_status(status)) {
        release().await;
        return response;
    }
    // Over HTTP only a body of known, bounded size is read to be recorded; any other passes
    // through and releases the key. A gRPC answer's size is never announced: it is read within
    // the bound (a unary write's answer is a few hundred bytes).
    let fits = response
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n <= config.max_record_bytes as u64);
    if !fits && !grpc {
        release().await;
        return response;
    }
    let trace = response.extensions().get::<TraceContext>().copied();
    let (parts, body) = response.into_parts();
    let (bytes, trailers) = match Limited::new(body, config.max_record_bytes).collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            (collected.to_bytes(), trailers)
        }
        Err(e) => {
            tracing::warn!(error = %e, "a response body failed or was too large; not recorded for idempotency");
            release().await;
            return reject.reject(
                LayerError::new(
                    ErrorKind::Internal,
                    "the answer could not be read whole; the write may have been applied: retry with the same key",
                ),
                trace.as_ref(),
            );
        }
    };
    let status = head
        .or_else(|| trailers.as_ref().and_then(metrics::grpc_status_as_http))
        .unwrap_or(500);
    if !recorded_status(status) {
        release().await;
        return Response::from_parts(parts, reject.body(bytes, trailers));
    }
    let fields = |map: &http::HeaderMap| {
        map.iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect::<Vec<_>>()
    };
    let record = Recorded {
        fingerprint: print,
        status: parts.status.as_u16(),
        headers: fields(&parts.headers),
        body: bytes.clone(),
        trailers: trailers.as_ref().map(fields).unwrap_or_default(),
    };
    #[cfg(feature = "failpoints")]
    crate::failpoint::hit(crate::failpoint::BEFORE_IDEMPOTENCY_RECORD);
    if let Err(e) = store
        .complete(scope, key, owner, record, config.record_ttl)
        .await
    {
        tracing::warn!(error = %e, "cannot record a response for idempotency; a retry runs again (the leader deduplicates it)");
        release().await;
    }
    Response::from_parts(parts, reject.body(bytes, trailers))
}
