//! IdempotencyLayer alone, over an inner service that counts its calls: replays, refusals,
//! requests in flight, store outages, and two gateways sharing one store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use pairdb_core::Consistency;
use pairdb_middleware::idempotency::{
    Begin, IdempotencyStore, MemoryIdempotencyStore, Recorded, StoreError,
};
use pairdb_middleware::{
    Forwarded, IdempotencyConfig, IdempotencyLayer, LayerError, Reject, TraceContext,
};
use tokio::sync::Notify;
use tower::{Layer, Service, ServiceExt};

use crate::support::tenant;

/// Renders refusals as their slug, in a body the layer can record.
#[derive(Clone)]
struct SlugReject;

impl Reject for SlugReject {
    type Body = Full<Bytes>;

    fn reject(&self, error: LayerError, _: Option<&TraceContext>) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::from(error.kind.slug().to_owned()));
        *response.status_mut() = StatusCode::from_u16(error.kind.http_status()).unwrap();
        for (name, value) in error.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

/// An inner service answering `status` (shared, so a test can change it) with "call <n>",
/// counting calls; while `hold` is set it waits for `release` before answering.
#[derive(Clone, Default)]
struct Inner {
    calls: Arc<AtomicUsize>,
    status: Arc<AtomicUsize>,
    hold: Arc<AtomicBool>,
    release: Arc<Notify>,
    entered: Arc<Notify>,
}

impl Inner {
    fn service(
        &self,
    ) -> impl Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        let me = self.clone();
        tower::service_fn(move |_request: Request<Full<Bytes>>| {
            let me = me.clone();
            async move {
                let n = me.calls.fetch_add(1, Ordering::SeqCst) + 1;
                if me.hold.load(Ordering::SeqCst) {
                    me.entered.notify_one();
                    me.release.notified().await;
                }
                let status = match me.status.load(Ordering::SeqCst) {
                    0 => 200,
                    s => s as u16,
                };
                let mut response = Response::new(Full::from(format!("call {n}")));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                response
                    .headers_mut()
                    .insert("x-call", n.to_string().parse().unwrap());
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    }
}

/// A store that can be switched off and counts its calls.
#[derive(Default)]
struct Switchable {
    inner: MemoryIdempotencyStore,
    down: AtomicBool,
    calls: AtomicUsize,
}

impl Switchable {
    fn check(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError("switched off".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl IdempotencyStore for Switchable {
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: [u8; 32],
        owner: u128,
        ttl: Duration,
    ) -> Result<Begin, StoreError> {
        self.check()?;
        self.inner.begin(scope, key, fingerprint, owner, ttl).await
    }
    async fn complete(
        &self,
        scope: &str,
        key: &str,
        owner: u128,
        record: Recorded,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.complete(scope, key, owner, record, ttl).await
    }
    async fn release(&self, scope: &str, key: &str, owner: u128) -> Result<(), StoreError> {
        self.check()?;
        self.inner.release(scope, key, owner).await
    }
}

fn config() -> IdempotencyConfig {
    IdempotencyConfig::default()
}

fn write(path: &str, key: Option<&str>, body: &'static str) -> Request<Full<Bytes>> {
    let mut builder = Request::put(path).header("content-type", "text/plain");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    let mut request = builder.body(Full::from(body)).unwrap();
    request
        .extensions_mut()
        .insert(tenant("acme", Consistency::Quorum));
    request
}

async fn send<S>(
    svc: &mut S,
    request: Request<Full<Bytes>>,
) -> (StatusCode, String, http::HeaderMap)
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        String::from_utf8(body.to_vec()).unwrap(),
        parts.headers,
    )
}

#[tokio::test]
async fn a_retry_is_answered_from_the_record_and_runs_once() {
    let inner = Inner::default();
    let store = Arc::new(Switchable::default());
    let mut svc = IdempotencyLayer::new(store.clone(), config(), SlugReject).layer(inner.service());
    let (status, body, headers) = send(&mut svc, write("/v1/kv/a", Some("k1"), "v")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "call 1"));
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, body, headers) = send(&mut svc, write("/v1/kv/a", Some("\"k1\""), "v")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "call 1"));
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(headers["x-call"], "1", "the recorded headers come back");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_key_with_another_request_is_refused_422() {
    let inner = Inner::default();
    let store = Arc::new(MemoryIdempotencyStore::default());
    let mut svc = IdempotencyLayer::new(store, config(), SlugReject).layer(inner.service());
    send(&mut svc, write("/v1/kv/a", Some("k1"), "v")).await;
    for other in [
        write("/v1/kv/a", Some("k1"), "another body"),
        write("/v1/kv/b", Some("k1"), "v"),
        {
            let mut r = write("/v1/kv/a", Some("k1"), "v");
            r.headers_mut()
                .insert("x-pairdb-context", "ctx".parse().unwrap());
            r
        },
    ] {
        let (status, body, _) = send(&mut svc, other).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body, "idempotency-key-reused");
    }
    // The same key of another tenant is another key.
    let mut elsewhere = write("/v1/kv/b", Some("k1"), "v");
    elsewhere
        .extensions_mut()
        .insert(tenant("other", Consistency::Quorum));
    assert_eq!(send(&mut svc, elsewhere).await.0, StatusCode::OK);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn of_two_concurrent_requests_one_runs_and_one_gets_409() {
    let inner = Inner::default();
    inner.hold.store(true, Ordering::SeqCst);
    let store = Arc::new(MemoryIdempotencyStore::default());
    let layer = IdempotencyLayer::new(store, config(), SlugReject);
    let mut first = layer.layer(inner.service());
    let mut second = first.clone();
    let entered = inner.entered.notified();
    let running =
        tokio::spawn(async move { send(&mut first, write("/v1/kv/a", Some("k1"), "v")).await });
    entered.await;
    let (status, body, headers) = send(&mut second, write("/v1/kv/a", Some("k1"), "v")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body, "idempotency-in-flight");
    assert_eq!(headers["retry-after"], "1");
    inner.hold.store(false, Ordering::SeqCst);
    inner.release.notify_one();
    assert_eq!(running.await.unwrap().0, StatusCode::OK);
    let (status, _, headers) = send(&mut second, write("/v1/kv/a", Some("k1"), "v")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn with_the_store_down_a_write_is_refused_503_and_nothing_runs() {
    let inner = Inner::default();
    let store = Arc::new(Switchable::default());
    store.down.store(true, Ordering::SeqCst);
    let mut svc = IdempotencyLayer::new(store, config(), SlugReject).layer(inner.service());
    let (status, body, _) = send(&mut svc, write("/v1/kv/a", Some("k1"), "v")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "not-ready")
    );
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn failures_release_the_key_and_a_retry_runs_again() {
    let inner = Inner::default();
    let store = Arc::new(MemoryIdempotencyStore::default());
    let mut svc = IdempotencyLayer::new(store, config(), SlugReject).layer(inner.service());
    for status in [503, 401, 429, 504] {
        inner.status.store(status, Ordering::SeqCst);
        assert_eq!(
            send(&mut svc, write("/v1/kv/a", Some("k1"), "v"))
                .await
                .0
                .as_u16(),
            status as u16
        );
    }
    inner.status.store(404, Ordering::SeqCst);
    send(&mut svc, write("/v1/kv/a", Some("k1"), "v")).await;
    // A deterministic 4xx is recorded like a success.
    let (status, _, headers) = send(&mut svc, write("/v1/kv/a", Some("k1"), "v")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn without_a_client_key_or_a_tenant_the_store_is_never_asked() {
    let inner = Inner::default();
    let store = Arc::new(Switchable::default());
    let mut svc = IdempotencyLayer::new(store.clone(), config(), SlugReject).layer(inner.service());
    send(&mut svc, write("/v1/kv/a", None, "v")).await;
    send(&mut svc, write("/v1/kv/a", None, "v")).await;
    let mut admin = write("/v1/kv/a", Some("k1"), "v");
    admin
        .extensions_mut()
        .remove::<pairdb_metadata::TenantConfig>();
    send(&mut svc, admin).await;
    let mut forwarded = write("/v1/kv/a", Some("k1"), "v");
    forwarded.extensions_mut().insert(Forwarded);
    send(&mut svc, forwarded).await;
    let mut get = write("/v1/kv/a", Some("k1"), "");
    *get.method_mut() = http::Method::GET;
    send(&mut svc, get).await;
    assert_eq!(store.calls.load(Ordering::SeqCst), 0);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_second_gateway_replays_the_first_ones_answer_or_waits_out_its_death() {
    let store: Arc<MemoryIdempotencyStore> = Arc::new(MemoryIdempotencyStore::default());
    let short = IdempotencyConfig {
        in_flight_ttl: Duration::from_millis(200),
        ..config()
    };
    let inner = Inner::default();
    let mut a =
        IdempotencyLayer::new(store.clone(), short.clone(), SlugReject).layer(inner.service());
    let mut b = IdempotencyLayer::new(store.clone(), short, SlugReject).layer(inner.service());
    // Gateway A answered, then died: B replays its record.
    send(&mut a, write("/v1/kv/a", Some("k1"), "v")).await;
    drop(a);
    let (_, body, headers) = send(&mut b, write("/v1/kv/a", Some("k1"), "v")).await;
    assert_eq!(body, "call 1");
    assert_eq!(headers["idempotent-replayed"], "true");

    // Gateway C died mid-request (a process gone runs no cleanup): its marker holds the key
    // until its TTL, then B runs the write (the leader deduplicates it by its key).
    tokio::time::pause();
    let print = pairdb_middleware::idempotency::fingerprint(
        &http::Method::PUT,
        "/v1/kv/a",
        write("/v1/kv/a", Some("k2"), "v").headers(),
        b"v",
    );
    let left = store
        .begin("acme", "k2", print, 7, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(left, Begin::Started);
    assert_eq!(
        send(&mut b, write("/v1/kv/a", Some("k2"), "v")).await.0,
        StatusCode::CONFLICT
    );
    tokio::time::advance(Duration::from_millis(300)).await;
    let (status, body, _) = send(&mut b, write("/v1/kv/a", Some("k2"), "v")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "call 2"));
}

#[tokio::test]
async fn a_request_dropped_midway_releases_its_key() {
    let inner = Inner::default();
    inner.hold.store(true, Ordering::SeqCst);
    let store = Arc::new(MemoryIdempotencyStore::default());
    let layer = IdempotencyLayer::new(store, config(), SlugReject);
    let mut first = layer.layer(inner.service());
    let mut second = first.clone();
    let entered = inner.entered.notified();
    let running =
        tokio::spawn(async move { send(&mut first, write("/v1/kv/a", Some("k1"), "v")).await });
    entered.await;
    // The client went away: its request is dropped before it finished.
    running.abort();
    let _ = running.await;
    inner.hold.store(false, Ordering::SeqCst);
    let mut status = StatusCode::CONFLICT;
    for _ in 0..100 {
        status = send(&mut second, write("/v1/kv/a", Some("k1"), "v"))
            .await
            .0;
        if status != StatusCode::CONFLICT {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(status, StatusCode::OK, "the key was released");
}

#[test]
fn fingerprints_tell_absent_empty_and_repeated_headers_apart() {
    use pairdb_middleware::idempotency::fingerprint;
    let put = http::Method::PUT;
    let print = |headers: &[(&str, &str)]| {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        fingerprint(&put, "/v1/kv/a", &map, b"v")
    };
    let all = [
        print(&[]),
        print(&[("x-pairdb-context", "")]),
        print(&[("x-pairdb-context", "c")]),
        print(&[("x-pairdb-context", "c"), ("x-pairdb-context", "c")]),
        print(&[("content-type", "c")]),
        fingerprint(&put, "/v1/kv/a%2Fb", &http::HeaderMap::new(), b"v"),
        fingerprint(&put, "/v1/kv/a/b", &http::HeaderMap::new(), b"v"),
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

/// Two gateways sharing Redis: a retry through the second is replayed from the first's record.
#[tokio::test]
async fn gateways_sharing_redis_replay_each_others_answers() {
    let server = pairdb_testkit::RedisServer::start().await;
    let inner = Inner::default();
    let connect = || async {
        Arc::new(
            pairdb_middleware::idempotency::RedisIdempotencyStore::connect(&server.url)
                .await
                .unwrap(),
        )
    };
    let mut a = IdempotencyLayer::new(connect().await, config(), SlugReject).layer(inner.service());
    let mut b = IdempotencyLayer::new(connect().await, config(), SlugReject).layer(inner.service());
    let (status, body, _) = send(&mut a, write("/v1/kv/a", Some("k1"), "v")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "call 1"));
    let (status, body, headers) = send(&mut b, write("/v1/kv/a", Some("k1"), "v")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "call 1"));
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(headers["x-call"], "1");
    let (status, _, _) = send(&mut b, write("/v1/kv/a", Some("k1"), "other")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    // Redis gone: writes are refused, nothing runs.
    drop(server);
    let (status, _, _) = send(&mut a, write("/v1/kv/a", Some("k2"), "v")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
}

/// A gRPC answer: the message in the body, the outcome in the trailers.
#[derive(Clone)]
struct GrpcReject;

impl Reject for GrpcReject {
    type Body = tonic::body::Body;

    fn reject(&self, error: LayerError, _: Option<&TraceContext>) -> Response<tonic::body::Body> {
        tonic::Status::new(tonic::Code::Unavailable, error.detail).into_http()
    }

    fn body(&self, data: Bytes, trailers: Option<http::HeaderMap>) -> tonic::body::Body {
        pairdb_middleware::idempotency::grpc_answer(data, trailers)
    }
}

/// Over gRPC the layer applies to the listed write paths only, records the message and its
/// trailers when `grpc-status` (in the trailers) is OK, and releases the key when it is not.
#[tokio::test]
async fn grpc_answers_are_recorded_by_their_trailers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let code = Arc::new(AtomicUsize::new(0));
    let inner = {
        let (calls, code) = (calls.clone(), code.clone());
        tower::service_fn(move |_: Request<tonic::body::Body>| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let code = code.load(Ordering::SeqCst);
            async move {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", code.to_string().parse().unwrap());
                let body = GrpcReject.body(Bytes::from(format!("message {n}")), Some(trailers));
                let mut response = Response::new(body);
                response
                    .headers_mut()
                    .insert("content-type", "application/grpc".parse().unwrap());
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let config = IdempotencyConfig {
        grpc_writes: Some(&["/svc/Put"]),
        ..IdempotencyConfig::default()
    };
    let store = Arc::new(MemoryIdempotencyStore::default());
    let mut svc = IdempotencyLayer::new(store, config, GrpcReject).layer(inner);
    let call = |path: &str, message: &'static [u8]| {
        let mut request = Request::post(path)
            .header("content-type", "application/grpc")
            .header("idempotency-key", "g1")
            .body(tonic::body::Body::new(Full::new(Bytes::from_static(
                message,
            ))))
            .unwrap();
        request
            .extensions_mut()
            .insert(tenant("acme", Consistency::Quorum));
        request
    };
    let read = |response: Response<tonic::body::Body>| async move {
        let replayed = response.headers().contains_key("idempotent-replayed");
        let collected = response.into_body().collect().await.unwrap();
        let status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.to_str().unwrap().to_owned());
        (collected.to_bytes(), status, replayed)
    };

    // UNAVAILABLE (14): passed through, trailers kept, the key released.
    code.store(14, Ordering::SeqCst);
    let first = svc
        .ready()
        .await
        .unwrap()
        .call(call("/svc/Put", b"m"))
        .await
        .unwrap();
    assert_eq!(
        read(first).await,
        (Bytes::from("message 1"), Some("14".into()), false)
    );
    // OK: runs again, recorded with its trailers; the retry is replayed whole.
    code.store(0, Ordering::SeqCst);
    let second = svc
        .ready()
        .await
        .unwrap()
        .call(call("/svc/Put", b"m"))
        .await
        .unwrap();
    assert_eq!(
        read(second).await,
        (Bytes::from("message 2"), Some("0".into()), false)
    );
    let replay = svc
        .ready()
        .await
        .unwrap()
        .call(call("/svc/Put", b"m"))
        .await
        .unwrap();
    assert_eq!(
        read(replay).await,
        (Bytes::from("message 2"), Some("0".into()), true)
    );
    // Another message with the key is refused; a path not listed is not the layer's.
    let other = svc
        .ready()
        .await
        .unwrap()
        .call(call("/svc/Put", b"x"))
        .await
        .unwrap();
    assert_eq!(
        tonic::Status::from_header_map(other.headers()).map(|s| s.code()),
        Some(tonic::Code::Unavailable),
        "rendered by the rejection"
    );
    let get = svc
        .ready()
        .await
        .unwrap()
        .call(call("/svc/Get", b"m"))
        .await
        .unwrap();
    assert_eq!(read(get).await.0, Bytes::from("message 3"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}
