//! Test doubles: a HashMap-backed metadata store, a plain-text `Reject`, and an inner service
//! that records the extensions it saw.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{Request, Response, StatusCode};
use pairdb_core::{Consistency, Placement};
use pairdb_metadata::{
    ApiKeyRecord, MetadataError, MetadataStore, NodeRecord, RateLimit, TenantConfig,
};
use pairdb_middleware::{Forwarded, LayerError, Principal, Reject, TraceContext};

pub const KEY_SECRET: &[u8] = b"test-key-secret";
pub const ADMIN_KEY: &str = "admin-key-for-tests";
pub const INTERNAL_TOKEN: &str = "internal-token-for-tests";

/// An in-memory metadata store; `fail` makes every call answer `Unavailable`.
#[derive(Default)]
pub struct FakeStore {
    pub tenants: Mutex<HashMap<String, TenantConfig>>,
    pub keys: Mutex<HashMap<String, ApiKeyRecord>>,
    pub fail: AtomicBool,
    pub key_lookups: AtomicUsize,
    pub tenant_lookups: AtomicUsize,
}

impl FakeStore {
    fn check(&self) -> Result<(), MetadataError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(MetadataError::Unavailable("fake store down".into()))
        } else {
            Ok(())
        }
    }

    /// Adds tenant `id` (default consistency `level`) and returns a fresh API key for it.
    pub fn add_tenant(&self, id: &str, level: Consistency) -> String {
        self.tenants
            .lock()
            .unwrap()
            .insert(id.to_owned(), tenant(id, level));
        let key = pairdb_metadata::api_key::generate(KEY_SECRET);
        self.keys.lock().unwrap().insert(
            key.key_id.clone(),
            ApiKeyRecord {
                key_id: key.key_id.clone(),
                tenant_id: id.to_owned(),
                secret_hash: key.secret_hash,
                created_at: "2026-01-01T00:00:00Z".into(),
            },
        );
        key.api_key
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

fn unsupported() -> MetadataError {
    MetadataError::Unavailable("not supported by the fake".into())
}

#[async_trait]
impl MetadataStore for FakeStore {
    async fn create_tenant(
        &self,
        _: &TenantConfig,
        _: &ApiKeyRecord,
        _: u64,
        _: &Placement,
    ) -> Result<(), MetadataError> {
        Err(unsupported())
    }
    async fn get_tenant(&self, id: &str) -> Result<Option<TenantConfig>, MetadataError> {
        self.tenant_lookups.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        Ok(self.tenants.lock().unwrap().get(id).cloned())
    }
    async fn list_tenants(&self) -> Result<Vec<TenantConfig>, MetadataError> {
        Err(unsupported())
    }
    async fn insert_api_key(&self, _: &ApiKeyRecord) -> Result<(), MetadataError> {
        Err(unsupported())
    }
    async fn get_api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, MetadataError> {
        self.key_lookups.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        Ok(self.keys.lock().unwrap().get(key_id).cloned())
    }
    async fn list_api_keys(&self, _: &str) -> Result<Vec<ApiKeyRecord>, MetadataError> {
        Err(unsupported())
    }
    async fn delete_api_key(&self, tenant_id: &str, key_id: &str) -> Result<bool, MetadataError> {
        let mut keys = self.keys.lock().unwrap();
        let owned = keys.get(key_id).is_some_and(|k| k.tenant_id == tenant_id);
        if owned {
            keys.remove(key_id);
        }
        Ok(owned)
    }
    async fn upsert_node(&self, _: &NodeRecord) -> Result<(), MetadataError> {
        Err(unsupported())
    }
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, MetadataError> {
        Err(unsupported())
    }
    async fn placement(&self) -> Result<Option<Placement>, MetadataError> {
        Err(unsupported())
    }
    async fn swap_placement(&self, _: Option<u64>, _: &Placement) -> Result<bool, MetadataError> {
        Err(unsupported())
    }
    async fn ping(&self) -> Result<(), MetadataError> {
        self.check()
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
