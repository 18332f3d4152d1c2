//! Per-tenant rate limiting (DESIGN §3): a token bucket per tenant (governor), refilling at the
//! tenant's `requests_per_second` up to its `burst`.
//!
//! Each gateway instance enforces its share: the tenant's rate and burst divided by the number of
//! live instances ([`RateLimits::set_instances`], kept by [`RateLimits::share_among_live`]), so
//! the cluster admits about the tenant's limit when its requests are spread evenly over the
//! instances (as a load balancer spreads them; a client pinned to one instance gets that
//! instance's share). A change in the count starts every tenant's bucket afresh, full. Every response to a tenant carries
//! `RateLimit-Policy: "tenant";q=<burst>;w=<seconds>` and `RateLimit: "tenant";r=<remaining>;t=<seconds>`
//! (the IETF RateLimit header fields); a request over the limit is refused `RateLimited` (429,
//! gRPC `RESOURCE_EXHAUSTED`) with `Retry-After` and never reaches the inner service.
//!
//! Calls without a tenant (the admin), and calls a gateway [`Forwarded`] (it admitted them
//! already), pass untouched.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::{Either, Ready};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::header::RETRY_AFTER;
use http::{HeaderName, HeaderValue, Request, Response};
use pairdb_core::ErrorKind;
use pairdb_metadata::{RateLimit, TenantConfig};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::principal::Forwarded;
use crate::reject::{LayerError, Reject};
use crate::trace::TraceContext;

/// The `RateLimit-Policy` response header.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The `RateLimit` response header.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Tenants whose buckets are kept before they are all dropped (and start full again).
const MAX_TENANTS: usize = 100_000;

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One tenant's bucket, for the limit and instance count it was made for.
struct TenantBucket {
    limit: RateLimit,
    instances: u32,
    bucket: Bucket,
    /// This instance's share: requests per second and burst.
    rate: f64,
    burst: u32,
    policy: HeaderValue,
}

impl TenantBucket {
    fn new(limit: RateLimit, instances: u32, clock: &DefaultClock) -> Self {
        let instances = instances.max(1);
        let rate = (f64::from(limit.requests_per_second.max(1)) / f64::from(instances)).max(1e-3);
        let burst = (limit.burst / instances).max(1);
        // One token every `period`, at least a nanosecond (a billion a second and up).
        let period = Duration::from_nanos(((1e9 / rate).round() as u64).max(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let window = (f64::from(burst) / rate).ceil().max(1.0) as u64;
        let policy = HeaderValue::from_str(&format!("\"tenant\";q={burst};w={window}"))
            .unwrap_or_else(|_| HeaderValue::from_static("\"tenant\""));
        TenantBucket {
            limit,
            instances,
            bucket: RateLimiter::direct_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            rate,
            burst,
            policy,
        }
    }

    /// Seconds until `used` spent tokens are back, rounded up.
    fn seconds_to_refill(&self, used: u32) -> u64 {
        (f64::from(used) / self.rate).ceil() as u64
    }
}

/// How often an instance registers itself ([`RateLimits::share_among_live`]).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// How long a registration lasts without a new heartbeat.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(10);

/// This instance's entry in the registry of live instances ([`RateLimits::share_among_live`]).
/// Dropping it leaves the heartbeat running; [`leave`](Self::leave) stops it.
pub struct Registration {
    task: tokio::task::JoinHandle<()>,
    store: Arc<dyn pairdb_metadata::MetadataStore>,
    role: &'static str,
    instance: String,
}

impl Registration {
    /// Stops heartbeating and removes this instance from the registry, so the others' shares
    /// grow back at their next heartbeat.
    pub async fn leave(self) {
        self.task.abort();
        // Once it has stopped: a heartbeat under way must not write the entry back.
        let _ = self.task.await;
        leave(&*self.store, self.role, &self.instance).await;
    }
}

async fn leave(store: &dyn pairdb_metadata::MetadataStore, role: &str, instance: &str) {
    if let Err(error) = store.leave(role, instance).await {
        tracing::debug!(role, %error, "cannot leave the instance registry; the entry expires");
    }
}

/// What [`RateLimits::check`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admitted; the response carries these headers.
    Allowed([(HeaderName, HeaderValue); 2]),
    /// Over the limit: refused, to be retried after `retry_after`.
    Limited {
        /// How long until a request would be admitted.
        retry_after: Duration,
        /// The headers the refusal carries (`RateLimit-Policy`, `RateLimit`, `Retry-After`).
        headers: [(HeaderName, HeaderValue); 3],
    },
}

/// The buckets of every tenant this instance has seen. Cheap to clone (shared).
#[derive(Clone)]
pub struct RateLimits {
    shared: Arc<Shared>,
}

struct Shared {
    tenants: RwLock<HashMap<String, Arc<TenantBucket>>>,
    instances: AtomicU32,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("instances", &self.instances())
            .finish_non_exhaustive()
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::new()
    }
}

impl RateLimits {
    /// Buckets for an instance that is the only one enforcing each tenant's limit.
    pub fn new() -> Self {
        RateLimits {
            shared: Arc::new(Shared {
                tenants: RwLock::new(HashMap::new()),
                instances: AtomicU32::new(1),
                clock: DefaultClock::default(),
            }),
        }
    }

    /// Sets how many live instances share each tenant's limit (at least 1); buckets follow on
    /// their tenant's next request.
    pub fn set_instances(&self, instances: u32) {
        self.shared
            .instances
            .store(instances.max(1), Ordering::Relaxed);
    }

    /// How many live instances share each tenant's limit.
    pub fn instances(&self) -> u32 {
        self.shared.instances.load(Ordering::Relaxed)
    }

    /// Shares every tenant's limit among the live instances of `role`: a task registers this
    /// instance in `store` every [`HEARTBEAT_INTERVAL`] with a [`HEARTBEAT_TTL`] and sets
    /// [`instances`](Self::instances) to the live count the store answers. An instance that stops
    /// heartbeating (it died or stopped) stops counting once its TTL runs out, so the others'
    /// shares grow back within that bound. A failed heartbeat keeps the last count. The task
    /// ends, leaving the registry, within an interval of every clone of these limits being
    /// dropped, or at once through [`Registration::leave`].
    pub fn share_among_live(
        &self,
        store: Arc<dyn pairdb_metadata::MetadataStore>,
        role: &'static str,
    ) -> Registration {
        let instance = format!("{role}-{:016x}", rand::random::<u64>());
        let shared = Arc::downgrade(&self.shared);
        let (registry, registered) = (Arc::clone(&store), instance.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(live) = shared.upgrade() else { break };
                match store.heartbeat(role, &instance, HEARTBEAT_TTL).await {
                    Ok(n) => {
                        let before = live.instances.swap(n.max(1), Ordering::Relaxed);
                        if before != n.max(1) {
                            tracing::info!(
                                role,
                                instances = n,
                                "rate limits shared among live instances"
                            );
                        }
                    }
                    Err(error) => {
                        tracing::warn!(role, %error, "cannot heartbeat into the metadata store; keeping the last instance count");
                    }
                }
            }
            leave(&*store, role, &instance).await;
        });
        Registration {
            task,
            store: registry,
            role,
            instance: registered,
        }
    }

    /// Takes one token from `tenant`'s bucket, whose limit is `limit` (a changed limit starts a
    /// new, full bucket).
    pub fn check(&self, tenant: &str, limit: &RateLimit) -> Decision {
        let bucket = self.bucket(tenant, limit);
        match bucket.bucket.check() {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let reset = bucket.seconds_to_refill(bucket.burst.saturating_sub(remaining));
                Decision::Allowed([
                    (RATELIMIT_POLICY, bucket.policy.clone()),
                    (RATELIMIT, ratelimit_value(remaining, reset)),
                ])
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.shared.clock.now());
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let seconds = seconds.max(1);
                // `t`: until the bucket is full again; `Retry-After`: until one token.
                let full = bucket.seconds_to_refill(bucket.burst).max(seconds);
                Decision::Limited {
                    retry_after: wait,
                    headers: [
                        (RATELIMIT_POLICY, bucket.policy.clone()),
                        (RATELIMIT, ratelimit_value(0, full)),
                        (RETRY_AFTER, HeaderValue::from(seconds)),
                    ],
                }
            }
        }
    }

    fn bucket(&self, tenant: &str, limit: &RateLimit) -> Arc<TenantBucket> {
        let instances = self.instances();
        let current = |b: &TenantBucket| b.limit == *limit && b.instances == instances;
        {
            let tenants = self
                .shared
                .tenants
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(b) = tenants.get(tenant).filter(|b| current(b)) {
                return Arc::clone(b);
            }
        }
        let mut tenants = self
            .shared
            .tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Another request may have made it meanwhile.
        if let Some(b) = tenants.get(tenant).filter(|b| current(b)) {
            return Arc::clone(b);
        }
        if tenants.len() >= MAX_TENANTS {
            tenants.clear();
        }
        let b = Arc::new(TenantBucket::new(*limit, instances, &self.shared.clock));
        tenants.insert(tenant.to_owned(), Arc::clone(&b));
        b
    }
}

fn ratelimit_value(remaining: u32, reset: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"tenant\";r={remaining};t={reset}"))
        .unwrap_or_else(|_| HeaderValue::from_static("\"tenant\""))
}

/// Builds [`RateLimitService`]: admits a tenant's request only while its bucket holds a token.
#[derive(Clone, Debug)]
pub struct RateLimitLayer<R> {
    limits: RateLimits,
    reject: R,
}

impl<R: Reject> RateLimitLayer<R> {
    /// A rate-limit layer over `limits`, refusing through `reject`.
    pub fn new(limits: RateLimits, reject: R) -> Self {
        RateLimitLayer { limits, reject }
    }
}

impl<S, R: Clone> Layer<S> for RateLimitLayer<R> {
    type Service = RateLimitService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limits: self.limits.clone(),
            reject: self.reject.clone(),
        }
    }
}

/// Service of [`RateLimitLayer`]. Put it inside the tenant layer: it reads the request's
/// [`TenantConfig`].
#[derive(Clone, Debug)]
pub struct RateLimitService<S, R> {
    inner: S,
    limits: RateLimits,
    reject: R,
}

pin_project! {
    /// Future of an admitted request: the inner service's, whose response gains the
    /// `RateLimit` headers.
    pub struct Admitted<F> {
        #[pin]
        inner: F,
        headers: Option<[(HeaderName, HeaderValue); 2]>,
    }
}

impl<F, B, E> Future for Admitted<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        for (name, value) in this.headers.take().into_iter().flatten() {
            response.headers_mut().entry(name).or_insert(value);
        }
        Poll::Ready(Ok(response))
    }
}

/// Future of [`RateLimitService`]: an immediate refusal, or the admitted request's.
pub type ResponseFuture<F, T, E> = Either<Ready<Result<T, E>>, Admitted<F>>;

impl<S, B, R> Service<Request<B>> for RateLimitService<S, R>
where
    S: Service<Request<B>, Response = Response<R::Body>>,
    R: Reject,
{
    type Response = Response<R::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let tenant = match request.extensions().get::<TenantConfig>() {
            Some(t) if request.extensions().get::<Forwarded>().is_none() => t,
            _ => {
                return Either::Right(Admitted {
                    inner: self.inner.call(request),
                    headers: None,
                });
            }
        };
        match self.limits.check(&tenant.tenant_id, &tenant.rate_limit) {
            Decision::Allowed(headers) => Either::Right(Admitted {
                inner: self.inner.call(request),
                headers: Some(headers),
            }),
            Decision::Limited { headers, .. } => {
                let mut error = LayerError::new(
                    ErrorKind::RateLimited,
                    format!(
                        "tenant {} is over its rate limit of {} requests per second",
                        tenant.tenant_id, tenant.rate_limit.requests_per_second
                    ),
                );
                for (name, value) in headers {
                    error = error.with_header(name, value);
                }
                let trace = request.extensions().get::<TraceContext>();
                Either::Left(futures::future::ready(Ok(self.reject.reject(error, trace))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests_per_second: u32, burst: u32) -> RateLimit {
        RateLimit {
            requests_per_second,
            burst,
        }
    }

    fn header(headers: &[(HeaderName, HeaderValue)], name: &HeaderName) -> String {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn a_bucket_admits_its_burst_then_refuses_with_how_long_to_wait() {
        let limits = RateLimits::new();
        let slow = limit(1, 3);
        for left in [2, 1, 0] {
            match limits.check("acme", &slow) {
                Decision::Allowed(h) => {
                    assert_eq!(header(&h, &RATELIMIT_POLICY), "\"tenant\";q=3;w=3");
                    assert!(header(&h, &RATELIMIT).starts_with(&format!("\"tenant\";r={left};")));
                }
                Decision::Limited { .. } => panic!("refused within the burst"),
            }
        }
        match limits.check("acme", &slow) {
            Decision::Limited {
                retry_after,
                headers,
            } => {
                assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
                assert_eq!(header(&headers, &RETRY_AFTER), "1");
                assert_eq!(header(&headers, &RATELIMIT), "\"tenant\";r=0;t=3");
            }
            Decision::Allowed(_) => panic!("admitted past the burst"),
        }
        // Other tenants have buckets of their own.
        assert!(matches!(limits.check("other", &slow), Decision::Allowed(_)));
    }

    #[test]
    fn any_rate_makes_a_bucket_that_admits() {
        let limits = RateLimits::new();
        for (rps, burst) in [(u32::MAX, u32::MAX), (u32::MAX, 1), (1, u32::MAX), (1, 1)] {
            assert!(matches!(
                limits.check("acme", &limit(rps, burst)),
                Decision::Allowed(_)
            ));
        }
        // The fastest bucket refills at once.
        let fast = limit(u32::MAX, 1);
        let admitted = (0..100)
            .filter(|_| matches!(limits.check("fast", &fast), Decision::Allowed(_)))
            .count();
        assert!(admitted > 50, "{admitted} of 100");
    }

    #[test]
    fn a_changed_limit_or_instance_count_starts_a_new_bucket() {
        let limits = RateLimits::new();
        let one = limit(1, 1);
        assert!(matches!(limits.check("acme", &one), Decision::Allowed(_)));
        assert!(matches!(
            limits.check("acme", &one),
            Decision::Limited { .. }
        ));
        let more = limit(1, 4);
        assert!(matches!(limits.check("acme", &more), Decision::Allowed(_)));
        // Two instances share the limit: each admits half the burst.
        limits.set_instances(2);
        let admitted = (0..4)
            .filter(|_| matches!(limits.check("acme", &more), Decision::Allowed(_)))
            .count();
        assert_eq!(admitted, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn instances_registered_in_one_store_share_the_limit() {
        let store: Arc<dyn pairdb_metadata::MetadataStore> =
            Arc::new(pairdb_metadata::MemoryStore::new());
        let (a, b) = (RateLimits::new(), RateLimits::new());
        let _a = a.share_among_live(Arc::clone(&store), "gateway");
        let b_registration = b.share_among_live(Arc::clone(&store), "gateway");
        // A coordinator does not count among gateways.
        let _c = RateLimits::new().share_among_live(Arc::clone(&store), "coordinator");
        // Both have heartbeaten twice: each has seen the other.
        tokio::time::sleep(HEARTBEAT_INTERVAL + Duration::from_millis(100)).await;
        assert_eq!((a.instances(), b.instances()), (2, 2));
        let limit = RateLimit {
            requests_per_second: 10,
            burst: 10,
        };
        let admitted = (0..20)
            .filter(|_| matches!(a.check("acme", &limit), Decision::Allowed(_)))
            .count();
        assert_eq!(admitted, 5, "half the burst");
        // One leaves: the other's next heartbeat gives it the whole limit back.
        b_registration.leave().await;
        tokio::time::sleep(HEARTBEAT_INTERVAL).await;
        assert_eq!(a.instances(), 1);
    }
}
