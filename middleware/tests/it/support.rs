//! Test doubles: a real in-memory metadata store that counts lookups and can be switched off, a
//! plain-text `Reject`, and an inner service that records the extensions it saw.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{Request, Response, StatusCode};
use pairdb_core::{Consistency, Placement};
use pairdb_metadata::memory::MemoryStore;
use pairdb_metadata::{
    ApiKeyRecord, MetadataError, MetadataStore, NodeRecord, RateLimit, TenantConfig,
};
use pairdb_middleware::{Forwarded, LayerError, Principal, Reject, TraceContext};

pub const KEY_SECRET: &[u8] = b"test-key-secret";
pub const ADMIN_KEY: &str = "admin-key-for-tests";
pub const INTERNAL_TOKEN: &str = "internal-token-for-tests";

/// A [`MemoryStore`] that counts `get_api_key` and `get_tenant` calls; while `fail` is set every
/// call answers `Unavailable`, as an unreachable store would.
#[derive(Default)]
pub struct TestStore {
    inner: Mutex<MemoryStore>,
    pub fail: AtomicBool,
    pub key_lookups: AtomicUsize,
    pub tenant_lookups: AtomicUsize,
}

impl TestStore {
    /// The backing store, unless switched off.
    fn up(&self) -> Result<MemoryStore, MetadataError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(MetadataError::Unavailable("store switched off".into()))
        } else {
            Ok(self.inner.lock().unwrap().clone())
        }
    }

    /// Creates tenant `id` (default consistency `level`) through the trait, installing a first
    /// placement if there is none, and returns the full API key it was created with. Counts no
    /// lookup.
    pub async fn add_tenant(&self, id: &str, level: Consistency) -> String {
        let store = self.inner.lock().unwrap().clone();
        let current = match store.placement().await.unwrap() {
            Some(p) => p,
            None => {
                let p = Placement::initial(Vec::new(), 8);
                assert!(store.swap_placement(None, &p).await.unwrap());
                p
            }
        };
        let key = pairdb_metadata::api_key::generate(KEY_SECRET);
        let record = ApiKeyRecord {
            key_id: key.key_id,
            tenant_id: id.to_owned(),
            secret_hash: key.secret_hash,
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        let next = current.with_tenant(id, 3);
        store
            .create_tenant(&tenant(id, level), &record, current.epoch, &next)
            .await
            .unwrap();
        key.api_key
    }

    /// Replaces everything stored with nothing, as if the rows were rewritten behind the caches'
    /// backs (the trait has no way to change a tenant). Counters and the switch are kept.
    pub fn clear(&self) {
        *self.inner.lock().unwrap() = MemoryStore::new();
    }
}

pub fn tenant(id: &str, level: Consistency) -> TenantConfig {
    TenantConfig {
        tenant_id: id.to_owned(),
        replication_factor: 3,
        default_consistency: level,
        rate_limit: RateLimit::default(),
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}

#[async_trait]
impl MetadataStore for TestStore {
    async fn create_tenant(
        &self,
        tenant: &TenantConfig,
        first_key: &ApiKeyRecord,
        expected_epoch: u64,
        next: &Placement,
    ) -> Result<(), MetadataError> {
        self.up()?
            .create_tenant(tenant, first_key, expected_epoch, next)
            .await
    }
    async fn get_tenant(&self, id: &str) -> Result<Option<TenantConfig>, MetadataError> {
        self.tenant_lookups.fetch_add(1, Ordering::SeqCst);
        self.up()?.get_tenant(id).await
    }
    async fn list_tenants(&self) -> Result<Vec<TenantConfig>, MetadataError> {
        self.up()?.list_tenants().await
    }
    async fn update_tenant(
        &self,
        id: &str,
        default_consistency: Option<pairdb_core::Consistency>,
        rate_limit: Option<RateLimit>,
    ) -> Result<Option<TenantConfig>, MetadataError> {
        self.up()?
            .update_tenant(id, default_consistency, rate_limit)
            .await
    }
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), MetadataError> {
        self.up()?.insert_api_key(key).await
    }
    async fn get_api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, MetadataError> {
        self.key_lookups.fetch_add(1, Ordering::SeqCst);
        self.up()?.get_api_key(key_id).await
    }
    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyRecord>, MetadataError> {
        self.up()?.list_api_keys(tenant_id).await
    }
    async fn delete_api_key(&self, tenant_id: &str, key_id: &str) -> Result<bool, MetadataError> {
        self.up()?.delete_api_key(tenant_id, key_id).await
    }
    async fn upsert_node(&self, node: &NodeRecord) -> Result<(), MetadataError> {
        self.up()?.upsert_node(node).await
    }
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, MetadataError> {
        self.up()?.list_nodes().await
    }
    async fn placement(&self) -> Result<Option<Placement>, MetadataError> {
        self.up()?.placement().await
    }
    async fn swap_placement(
        &self,
        expected_epoch: Option<u64>,
        next: &Placement,
    ) -> Result<bool, MetadataError> {
        self.up()?.swap_placement(expected_epoch, next).await
    }
    async fn heartbeat(
        &self,
        role: &str,
        instance: &str,
        ttl: std::time::Duration,
    ) -> Result<u32, MetadataError> {
        self.up()?.heartbeat(role, instance, ttl).await
    }

    async fn leave(&self, role: &str, instance: &str) -> Result<(), MetadataError> {
        self.up()?.leave(role, instance).await
    }

    async fn ping(&self) -> Result<(), MetadataError> {
        self.up()?.ping().await
    }

    async fn start_job(
        &self,
        job: &pairdb_metadata::JobRecord,
        placement: Option<(u64, &Placement)>,
    ) -> Result<(), MetadataError> {
        self.up()?.start_job(job, placement).await
    }

    async fn get_job(&self, id: &str) -> Result<Option<pairdb_metadata::JobRecord>, MetadataError> {
        self.up()?.get_job(id).await
    }

    async fn delete_finished_job(&self, id: &str) -> Result<bool, MetadataError> {
        self.up()?.delete_finished_job(id).await
    }

    async fn list_jobs(
        &self,
        unfinished: bool,
    ) -> Result<Vec<pairdb_metadata::JobRecord>, MetadataError> {
        self.up()?.list_jobs(unfinished).await
    }

    async fn save_job(
        &self,
        job: &pairdb_metadata::JobRecord,
        owner: &str,
        ttl: std::time::Duration,
        placement: Option<(u64, &Placement)>,
    ) -> Result<bool, MetadataError> {
        self.up()?.save_job(job, owner, ttl, placement).await
    }

    async fn delete_tenant(&self, id: &str) -> Result<bool, MetadataError> {
        self.up()?.delete_tenant(id).await
    }

    async fn ack_epoch(
        &self,
        instance: &str,
        epoch: u64,
        ttl: std::time::Duration,
    ) -> Result<u64, MetadataError> {
        self.up()?.ack_epoch(instance, epoch, ttl).await
    }
}

/// Renders a rejection as plain text: status from the kind, body = slug, `x-trace-id` = the
/// trace id the layer passed.
#[derive(Clone, Debug)]
pub struct TextReject;

impl Reject for TextReject {
    type Body = String;

    fn reject(&self, error: LayerError, trace: Option<&TraceContext>) -> Response<String> {
        let mut response = Response::new(error.kind.slug().to_owned());
        *response.status_mut() = StatusCode::from_u16(error.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in error.headers {
            response.headers_mut().append(name, value);
        }
        if let Some(trace) = trace {
            response
                .headers_mut()
                .insert("x-trace-id", trace.trace_id_hex().parse().unwrap());
        }
        response
    }
}

/// What the innermost service saw.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub calls: usize,
    pub principal: Option<Principal>,
    pub forwarded: bool,
    pub tenant: Option<TenantConfig>,
    pub consistency: Option<Consistency>,
    pub trace: Option<TraceContext>,
}

/// An inner service answering 200 "ok" and recording the request's extensions into `seen`.
pub fn recorder(
    seen: Arc<Mutex<Seen>>,
) -> impl tower::Service<
    Request<String>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: Request<String>| {
        let seen = seen.clone();
        async move {
            let mut s = seen.lock().unwrap();
            s.calls += 1;
            s.principal = request.extensions().get::<Principal>().cloned();
            s.forwarded = request.extensions().get::<Forwarded>().is_some();
            s.tenant = request.extensions().get::<TenantConfig>().cloned();
            s.consistency = request.extensions().get::<Consistency>().copied();
            s.trace = request.extensions().get::<TraceContext>().copied();
            Ok::<_, Infallible>(Response::new("ok".to_owned()))
        }
    })
}

/// A GET of `uri` with the given headers.
pub fn request(uri: &str, headers: &[(&str, &str)]) -> Request<String> {
    let mut builder = Request::get(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(String::new()).unwrap()
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn new_seen() -> Arc<Mutex<Seen>> {
    Arc::new(Mutex::new(Seen::default()))
}

/// An inner service that is never ready.
#[derive(Clone)]
pub struct NeverReady;

impl tower::Service<Request<String>> for NeverReady {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Pending
    }

    fn call(&mut self, _: Request<String>) -> Self::Future {
        std::future::ready(Ok(Response::new(String::new())))
    }
}
