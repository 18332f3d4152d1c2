//! Prometheus metrics (OpenMetrics text): a role's [`Metrics`] registry, and [`MetricsLayer`],
//! which counts and times every request by route, method and status.
//!
//! Names are prefixed `pairdb_`. Routes are the role's route templates (`/v1/kv/{key}`), never
//! raw paths, so a label set stays small whatever clients send.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Method, Request, Response};
use pin_project_lite::pin_project;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

use crate::idempotency::IDEMPOTENT_REPLAYED;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Names a request's route template from its method and path (`"other"` for anything unknown;
/// `""` leaves the request out of the metrics, e.g. a stream metered call by call).
pub type RouteOf = fn(&Method, &str) -> &'static str;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
    level: &'static str,
}

/// The consistency level a message names in `x-consistency` (`none` when it names none).
fn level_of(headers: &http::HeaderMap) -> Option<&'static str> {
    let value = headers.get(pairdb_core::headers::CONSISTENCY)?.as_bytes();
    Some(if value.eq_ignore_ascii_case(b"one") {
        "one"
    } else if value.eq_ignore_ascii_case(b"quorum") {
        "quorum"
    } else if value.eq_ignore_ascii_case(b"all") {
        "all"
    } else {
        "invalid"
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

/// A role's metrics. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

/// Counters of a role's own events, by label pairs ([`Metrics::counter_family`]).
pub type EventCounters = Family<Vec<(&'static str, &'static str)>, Counter>;

struct Inner {
    registry: RwLock<Registry>,
    families: std::sync::Mutex<std::collections::HashMap<String, EventCounters>>,
    counters: std::sync::Mutex<std::collections::HashMap<String, Counter>>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    rate_limited: Counter,
    replayed: Counter,
    store_duration: Family<StoreLabels, Histogram>,
    store_errors: Family<StoreLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
    op: &'static str,
}

/// The calls to one external store (`metadata`, `idempotency`), timed and counted by operation
/// into `pairdb_store_duration_seconds` and `pairdb_store_errors_total`.
#[derive(Clone)]
pub struct StoreCalls {
    store: &'static str,
    duration: Family<StoreLabels, Histogram>,
    errors: Family<StoreLabels, Counter>,
}

impl StoreCalls {
    /// Records one call of `op` that took `took` and failed or not.
    pub fn observe(&self, op: &'static str, took: std::time::Duration, failed: bool) {
        let labels = StoreLabels {
            store: self.store,
            op,
        };
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if failed {
            self.errors.get_or_create(&labels).inc();
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    /// A registry holding the request metrics.
    pub fn new() -> Self {
        Metrics::build(true)
    }

    /// A registry for collectors only (a role that serves no requests through [`MetricsLayer`]).
    pub fn without_requests() -> Self {
        Metrics::build(false)
    }

    fn build(requests_metrics: bool) -> Self {
        let mut registry = Registry::with_prefix("pairdb");
        let mut scratch = Registry::default();
        let target = if requests_metrics {
            &mut registry
        } else {
            &mut scratch
        };
        let requests = Family::<RequestLabels, Counter>::default();
        target.register(
            "requests",
            "Requests answered, by route, method, status and consistency level (`none` where none applies)",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 0.25 ms to about 8 s.
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        target.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response head, by route and method",
            duration.clone(),
        );
        let rate_limited = Counter::default();
        target.register(
            "rate_limited",
            "Requests refused because their tenant was over its rate limit",
            rate_limited.clone(),
        );
        let replayed = Counter::default();
        target.register(
            "idempotent_replays",
            "Writes answered from their idempotency record instead of running again",
            replayed.clone(),
        );
        let store_duration = Family::<StoreLabels, Histogram>::new_with_constructor(|| {
            // 0.1 ms to about 3 s.
            Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
        });
        registry.register(
            "store_duration_seconds",
            "Calls to the metadata and idempotency stores, by store and operation",
            store_duration.clone(),
        );
        let store_errors = Family::<StoreLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Calls to the metadata and idempotency stores that failed, by store and operation",
            store_errors.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry: RwLock::new(registry),
                families: std::sync::Mutex::new(std::collections::HashMap::new()),
                counters: std::sync::Mutex::new(std::collections::HashMap::new()),
                requests,
                duration,
                rate_limited,
                replayed,
                store_duration,
                store_errors,
            }),
        }
    }

    /// The counter family `pairdb_<name>_total`, labelled by `(name, value)` pairs, for a role's
    /// own events: registered on the first call, the same family on later calls with `name`.
    pub fn counter_family(&self, name: &str, help: &str) -> EventCounters {
        let mut families = self
            .inner
            .families
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(family) = families.get(name) {
            return family.clone();
        }
        let family = EventCounters::default();
        self.inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, family.clone());
        families.insert(name.to_owned(), family.clone());
        family
    }

    /// The counter `pairdb_<name>_total` (no labels), for a role's own events: registered on the
    /// first call, the same counter on later calls with `name`.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let mut counters = self
            .inner
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(counter) = counters.get(name) {
            return counter.clone();
        }
        let counter = Counter::default();
        self.inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, counter.clone());
        counters.insert(name.to_owned(), counter.clone());
        counter
    }

    /// The timers of calls to `store` (`metadata`, `idempotency`).
    pub fn store_calls(&self, store: &'static str) -> StoreCalls {
        StoreCalls {
            store,
            duration: self.inner.store_duration.clone(),
            errors: self.inner.store_errors.clone(),
        }
    }

    /// Adds `collector`, asked for its values on every scrape (engine statistics, placement).
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .register_collector(collector);
    }

    /// Every metric, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self
            .inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }

    /// Records one call of a call stream as the metrics layer records a unary request: `route`
    /// (the RPC), `POST`, the HTTP status of its gRPC `code`, its `level`.
    pub fn observe_call(
        &self,
        route: &'static str,
        code: tonic::Code,
        level: &'static str,
        took: std::time::Duration,
    ) {
        self.observe(
            route,
            "POST",
            grpc_code_as_http(code as u8),
            level,
            took.as_secs_f64(),
        );
    }

    fn observe(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        level: &'static str,
        took: f64,
    ) {
        self.inner
            .requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
                level,
            })
            .inc();
        self.inner
            .duration
            .get_or_create(&RouteLabels { route, method })
            .observe(took);
        if status == 429 {
            self.inner.rate_limited.inc();
        }
    }
}

/// Builds [`MetricsService`].
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Metrics,
    route_of: RouteOf,
}

impl MetricsLayer {
    /// Records into `metrics`, naming routes with `route_of`.
    pub fn new(metrics: Metrics, route_of: RouteOf) -> Self {
        MetricsLayer { metrics, route_of }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
            route_of: self.route_of,
        }
    }
}

/// The status a response is counted under: its HTTP status, or for a gRPC answer that carries
/// its code in the head (every refusal, every failed call) the HTTP status of that code.
fn status_of<B>(response: &Response<B>) -> u16 {
    grpc_status_as_http(response.headers()).unwrap_or_else(|| response.status().as_u16())
}

/// The HTTP status of the gRPC code in `fields`' `grpc-status` (a response head, or trailers),
/// as pairdb maps its error kinds both ways; `None` when there is none.
pub fn grpc_status_as_http(fields: &http::HeaderMap) -> Option<u16> {
    let code = fields
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<u8>()
        .ok()?;
    Some(grpc_code_as_http(code))
}

/// The HTTP status of gRPC code `code`, as pairdb maps its error kinds both ways.
fn grpc_code_as_http(code: u8) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 11 => 400,
        4 => 504,
        5 => 404,
        6 => 409,
        7 => 403,
        8 => 429,
        9 => 422,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// Service of [`MetricsLayer`]: counts and times every request it passes on.
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
    route_of: RouteOf,
}

pin_project! {
    /// Future of [`MetricsService`]: the inner future, observed when it completes.
    pub struct Observed<F> {
        #[pin]
        inner: F,
        metrics: Metrics,
        route: &'static str,
        method: &'static str,
        // The level the request asked for, if it named one.
        asked: Option<&'static str>,
        started: Instant,
    }
}

impl<F, B, E> Future for Observed<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result
            && !this.route.is_empty()
        {
            if response.headers().contains_key(IDEMPOTENT_REPLAYED) {
                this.metrics.inner.replayed.inc();
            }
            // The level served (a response naming it) or else the level asked for.
            let level = level_of(response.headers())
                .or(*this.asked)
                .unwrap_or("none");
            this.metrics.observe(
                this.route,
                this.method,
                status_of(response),
                level,
                this.started.elapsed().as_secs_f64(),
            );
        }
        Poll::Ready(result)
    }
}

impl<S, B, RB> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = (self.route_of)(request.method(), request.uri().path());
        let method = method_label(request.method());
        let asked = level_of(request.headers());
        Observed {
            inner: self.inner.call(request),
            metrics: self.metrics.clone(),
            route,
            method,
            asked,
            started: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(_: &Method, path: &str) -> &'static str {
        if path.starts_with("/v1/kv/") {
            "/v1/kv/{key}"
        } else if path == "/stream" {
            ""
        } else {
            "other"
        }
    }

    /// A stream metered call by call is left out as a whole; its calls count like requests.
    #[tokio::test]
    async fn unnamed_routes_are_left_out_and_calls_count_like_requests() {
        use tower::ServiceExt;
        let metrics = Metrics::new();
        let svc = MetricsLayer::new(metrics.clone(), route).layer(tower::service_fn(
            |_: Request<()>| async { Ok::<_, std::convert::Infallible>(Response::new(())) },
        ));
        let request = Request::post("/stream").body(()).unwrap_or_default();
        let _ = svc.oneshot(request).await;
        metrics.observe_call(
            "Get",
            tonic::Code::DeadlineExceeded,
            "quorum",
            std::time::Duration::from_millis(3),
        );
        let text = metrics.encode();
        assert!(!text.contains("route=\"\""), "{text}");
        assert!(
            text.contains(
                "pairdb_requests_total{route=\"Get\",method=\"POST\",status=\"504\",level=\"quorum\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn grpc_answers_count_under_the_status_of_their_code() {
        let grpc = |code: &'static str| {
            let mut r = Response::new(());
            r.headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static(code));
            r
        };
        assert_eq!(status_of(&grpc("0")), 200);
        assert_eq!(status_of(&grpc("8")), 429);
        assert_eq!(status_of(&grpc("14")), 503);
        assert_eq!(status_of(&grpc("junk")), 200);
        assert_eq!(status_of(&Response::new(())), 200);
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_method_and_status() {
        use tower::ServiceExt;
        let metrics = Metrics::new();
        let svc = MetricsLayer::new(metrics.clone(), route).layer(tower::service_fn(
            |r: Request<()>| async move {
                let status = if r.uri().path().ends_with("/limited") {
                    429
                } else {
                    200
                };
                let mut response = Response::new(());
                *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
                if r.uri().path().ends_with("/again") {
                    response
                        .headers_mut()
                        .insert(IDEMPOTENT_REPLAYED, http::HeaderValue::from_static("true"));
                }
                Ok::<_, std::convert::Infallible>(response)
            },
        ));
        for path in [
            "/v1/kv/a",
            "/v1/kv/b",
            "/v1/kv/limited",
            "/v1/kv/again",
            "/x",
        ] {
            let mut request = Request::put(path).body(()).unwrap_or_default();
            if path == "/v1/kv/a" {
                request.headers_mut().insert(
                    pairdb_core::headers::CONSISTENCY,
                    http::HeaderValue::from_static("One"),
                );
            }
            let _ = svc.clone().oneshot(request).await;
        }
        let text = metrics.encode();
        assert!(
            text.contains(
                "pairdb_requests_total{route=\"/v1/kv/{key}\",method=\"PUT\",status=\"200\",level=\"none\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "pairdb_requests_total{route=\"/v1/kv/{key}\",method=\"PUT\",status=\"200\",level=\"one\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "pairdb_requests_total{route=\"other\",method=\"PUT\",status=\"200\",level=\"none\"} 1"
        ));
        assert!(text.contains("pairdb_rate_limited_total 1"));
        assert!(text.contains("pairdb_idempotent_replays_total 1"));
        assert!(text.contains(
            "pairdb_request_duration_seconds_count{route=\"/v1/kv/{key}\",method=\"PUT\"} 4"
        ));
    }
}
