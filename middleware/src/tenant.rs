//! The tenant's configuration for a tenant principal.
//!
//! [`TenantCache`] reads through two tiers: in-process entries served for at most a second, then
//! an optional shared tier ([`crate::tenant_cache`]: Redis, or one process's memory) that changes
//! invalidate, then the metadata store;
//! [`TenantLayer`] loads the caller's [`TenantConfig`] into the request extensions — except for
//! calls a gateway [`Forwarded`], whose tenant and level that gateway already resolved.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response};
use pairdb_core::ErrorKind;
use pairdb_metadata::{MetadataError, MetadataStore, TenantConfig};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::cache::TtlCache;
use crate::idempotency::StoreError;
use crate::principal::{Forwarded, Principal};
use crate::reject::{LayerError, Reject};
use crate::tenant_cache::{Lookup, SHARED_TENANT_TTL, TenantConfigCache};
use crate::trace::TraceContext;

/// Default time a tenant lookup is served from the cache: a change is in effect within a second.
pub const DEFAULT_TENANT_TTL: Duration = Duration::from_secs(1);
/// Most tenant ids the cache holds before it is emptied.
pub const TENANT_CACHE_MAX_ENTRIES: usize = 10_000;

/// Tenant configs read through from the metadata store, each answer (found or not) served for at
/// most `ttl`. Cheap to clone (shared).
#[derive(Clone)]
pub struct TenantCache {
    store: Arc<dyn MetadataStore>,
    ttl: Duration,
    entries: Arc<TtlCache<Option<TenantConfig>>>,
    shared: Option<Shared>,
}

impl fmt::Debug for TenantCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCache").finish_non_exhaustive()
    }
}

impl TenantCache {
    /// A cache over `store` serving each answer for at most `ttl` (zero: no caching).
    pub fn new(store: Arc<dyn MetadataStore>, ttl: Duration) -> Self {
        TenantCache {
            store,
            ttl,
            entries: Arc::new(TtlCache::new(ttl, TENANT_CACHE_MAX_ENTRIES)),
            shared: None,
        }
    }

    /// Reads through `shared` before the store (and fills it), so the roles sharing it spare the
    /// store; [`invalidate`](Self::invalidate) then reaches every one of them.
    pub fn with_shared(mut self, shared: Arc<dyn TenantConfigCache>) -> Self {
        self.shared = Some(Shared {
            cache: shared,
            skip_until: Arc::new(Mutex::new(None)),
        });
        self
    }

    /// The tenant `id` as the store held it at most `ttl` (and at most [`SHARED_TENANT_TTL`])
    /// ago; `None` if it did not exist. Store errors are returned, never cached. A shared tier
    /// that fails is skipped for [`SHARED_TIER_BACKOFF`], so a hung Redis costs one bounded wait
    /// per backoff, not one per request.
    pub async fn get(&self, id: &str) -> Result<Option<TenantConfig>, MetadataError> {
        if let Some(hit) = self.entries.get(id) {
            return Ok(hit);
        }
        let read_at = Instant::now();
        let mut fill = None;
        if let Some(shared) = self.shared.as_ref().filter(|s| s.usable()) {
            match shared.cache.lookup(id).await {
                Ok(Lookup::Hit { tenant, remaining }) => {
                    // Served here no longer than there: as if read when the shared entry was.
                    let read_at = self
                        .ttl
                        .checked_sub(remaining)
                        .and_then(|age| read_at.checked_sub(age))
                        .unwrap_or(read_at);
                    self.entries.insert(id, tenant.clone(), read_at);
                    return Ok(tenant);
                }
                Ok(Lookup::Miss { generation }) => fill = Some((shared, generation)),
                Err(error) => shared.failed(&error),
            }
        }
        let tenant = self.store.get_tenant(id).await?;
        // The shared entry expires a second after the store was read, whenever it is filled.
        let ttl = SHARED_TENANT_TTL.saturating_sub(read_at.elapsed());
        if let Some((shared, generation)) = fill
            && !ttl.is_zero()
            && let Err(error) = shared.cache.fill(id, generation, &tenant, ttl).await
        {
            shared.failed(&error);
        }
        self.entries.insert(id, tenant.clone(), read_at);
        Ok(tenant)
    }

    /// Forgets `id` here and in the shared tier, so every role sharing it reads the store at
    /// its next lookup. Call after the store changed. Even when this fails (the shared tier is
    /// unreachable), every role sees the change within [`SHARED_TENANT_TTL`].
    pub async fn invalidate(&self, id: &str) -> Result<(), StoreError> {
        self.entries.remove(id);
        match &self.shared {
            Some(shared) => shared.cache.invalidate(id).await,
            None => Ok(()),
        }
    }
}

/// How long a shared tier that failed is left out of lookups.
pub const SHARED_TIER_BACKOFF: Duration = Duration::from_secs(5);

/// The shared tier and when it may be asked again after a failure.
#[derive(Clone)]
struct Shared {
    cache: Arc<dyn TenantConfigCache>,
    skip_until: Arc<Mutex<Option<Instant>>>,
}

impl Shared {
    fn usable(&self) -> bool {
        let skip = self
            .skip_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        skip.is_none_or(|until| Instant::now() >= until)
    }

    fn failed(&self, error: &StoreError) {
        let mut skip = self
            .skip_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if skip.is_none_or(|until| now >= until) {
            tracing::warn!(%error, backoff = ?SHARED_TIER_BACKOFF, "tenant-config cache unreachable; reading the metadata store meanwhile");
        }
        *skip = Some(now + SHARED_TIER_BACKOFF);
    }
}

/// Builds [`TenantService`]: inserts the [`TenantConfig`] of a tenant principal.
#[derive(Clone, Debug)]
pub struct TenantLayer<R> {
    cache: TenantCache,
    reject: R,
}

impl<R: Reject> TenantLayer<R> {
    /// A tenant layer reading through `cache`, refusing through `reject`.
    pub fn new(cache: TenantCache, reject: R) -> Self {
        TenantLayer { cache, reject }
    }
}

impl<S, R: Clone> Layer<S> for TenantLayer<R> {
    type Service = TenantService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService {
            inner,
            cache: self.cache.clone(),
            reject: self.reject.clone(),
        }
    }
}

/// Service of [`TenantLayer`]. For a [`Principal::Tenant`] the inner service sees its
/// [`TenantConfig`] extension; a tenant that no longer exists is refused `Unauthorized`, an
/// unreadable store `NotReady`. Admin requests, and requests with no principal, pass untouched.
#[derive(Clone, Debug)]
pub struct TenantService<S, R> {
    inner: S,
    cache: TenantCache,
    reject: R,
}

impl<S, B, R> Service<Request<B>> for TenantService<S, R>
where
    S: Service<Request<B>, Response = Response<R::Body>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: Reject,
{
    type Response = Response<R::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let cache = self.cache.clone();
        let reject = self.reject.clone();
        Box::pin(async move {
            // A call a gateway forwarded carries the tenant and level it already resolved.
            if request.extensions().get::<Forwarded>().is_some() {
                return inner.call(request).await;
            }
            let tenant_id = match request.extensions().get::<Principal>() {
                Some(Principal::Tenant { tenant_id, .. }) => tenant_id.clone(),
                Some(Principal::Admin) | None => return inner.call(request).await,
            };
            let error = match cache.get(&tenant_id).await {
                Ok(Some(config)) => {
                    request.extensions_mut().insert(config);
                    return inner.call(request).await;
                }
                Ok(None) => {
                    LayerError::new(ErrorKind::Unauthorized, "the key's tenant no longer exists")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tenant lookup failed");
                    LayerError::new(ErrorKind::NotReady, "metadata store unavailable")
                }
            };
            Ok(reject.reject(error, request.extensions().get::<TraceContext>()))
        })
    }
}
