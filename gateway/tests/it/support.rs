//! The harness: a fake coordinator, a real in-memory metadata store, and a served gateway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pairdb_core::{Consistency, Placement};
use pairdb_gateway::{GatewayConfig, build_router, serve};
use pairdb_metadata::memory::MemoryStore;
use pairdb_metadata::{
    ApiKeyRecord, MetadataError, MetadataStore, NodeRecord, RateLimit, TenantConfig, api_key,
};
use pairdb_proto::coordinator as pb;
use pairdb_proto::coordinator::coordinator_server::{Coordinator, CoordinatorServer};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

pub const KEY_SECRET: &[u8] = b"gateway-test-secret";
pub const ADMIN_KEY: &str = "gateway-test-admin-key";
pub const INTERNAL_TOKEN: &str = "gateway-test-internal-token";
pub const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// ---------------------------------------------------------------- metadata store

/// A real [`MemoryStore`] behind an outage switch: while `fail` is set every call answers
/// `Unavailable`, as an unreachable store would (for the 503 not-ready paths).
#[derive(Default)]
pub struct SwitchableStore {
    inner: MemoryStore,
    pub fail: AtomicBool,
}

impl SwitchableStore {
    fn up(&self) -> Result<&MemoryStore, MetadataError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(MetadataError::Unavailable("store switched off".into()))
        } else {
            Ok(&self.inner)
        }
    }
}

#[async_trait]
impl MetadataStore for SwitchableStore {
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

/// A store holding one tenant `acme` (default consistency quorum) with one API key, created
/// through the trait on top of a first placement; returns the store and the full key.
async fn seeded_store() -> (SwitchableStore, String) {
    let store = SwitchableStore::default();
    let first = Placement::initial(Vec::new(), 8);
    assert!(store.swap_placement(None, &first).await.unwrap());
    let tenant = TenantConfig {
        tenant_id: "acme".into(),
        replication_factor: 3,
        default_consistency: Consistency::Quorum,
        rate_limit: RateLimit::default(),
        created_at: "2026-01-01T00:00:00Z".into(),
    };
    let key = api_key::generate(KEY_SECRET);
    let record = ApiKeyRecord {
        key_id: key.key_id,
        tenant_id: "acme".into(),
        secret_hash: key.secret_hash,
        created_at: "2026-01-01T00:00:00Z".into(),
    };
    store
        .create_tenant(&tenant, &record, first.epoch, &first.with_tenant("acme", 3))
        .await
        .unwrap();
    (store, key.api_key)
}

// ---------------------------------------------------------------- fake coordinator

/// One call the fake coordinator received.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: &'static str,
    pub metadata: MetadataMap,
    pub key: Vec<u8>,
    pub put: Option<pb::PutRequest>,
    pub delete: Option<pb::DeleteRequest>,
    pub get: Option<pb::GetRequest>,
    pub create_tenant: Option<pb::CreateTenantRequest>,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<String> {
        self.metadata
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A stored value and its content type.
pub type Stored = (Vec<u8>, String);

/// Canned behaviour by key: `quorum`, `timeout`, `slow`, `forbidden`, `internal`,
/// `bad-context`, `reused`, `not-ready`, `conflict-won`, `conflict-lost`, `repaired`,
/// `read-quorum`; anything else is stored and read back.
#[derive(Default)]
pub struct FakeCoordinator {
    pub calls: Mutex<Vec<Call>>,
    pub values: Mutex<HashMap<Vec<u8>, Stored>>,
    pub not_ready: AtomicBool,
    /// Answers call streams `UNIMPLEMENTED`, as a coordinator older than them would.
    pub no_call_streams: AtomicBool,
}

fn detail_status(code: Code, message: &str, detail: pb::ErrorDetail) -> Status {
    Status::with_details(code, message, detail.encode_to_vec().into())
}

fn kind_status(code: Code, kind: &str) -> Status {
    detail_status(
        code,
        kind,
        pb::ErrorDetail {
            kind: kind.into(),
            ..Default::default()
        },
    )
}

/// A migration 4 ranges of 10 in, as the fake coordinator reports it.
fn migration(id: String, kind: &str, state: &str, undropped: &[&str]) -> pb::Migration {
    pb::Migration {
        migration_id: id,
        kind: kind.into(),
        state: state.into(),
        ranges_total: 10,
        ranges_done: 4,
        keys_streamed: 400,
        bytes_streamed: 40_000,
        error: String::new(),
        created_at: "2026-11-30T00:00:00Z".into(),
        undropped: undropped.iter().map(|n| n.to_string()).collect(),
    }
}

fn tenant(id: &str) -> pb::Tenant {
    pb::Tenant {
        tenant_id: id.into(),
        replication_factor: 3,
        default_consistency: "quorum".into(),
        rate_limit: Some(pb::RateLimit {
            requests_per_second: 100,
            burst: 200,
        }),
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}

impl FakeCoordinator {
    fn record<M>(&self, method: &'static str, request: &Request<M>, fill: impl FnOnce(&mut Call)) {
        let mut call = Call {
            method,
            metadata: request.metadata().clone(),
            key: Vec::new(),
            put: None,
            delete: None,
            get: None,
            create_tenant: None,
        };
        fill(&mut call);
        self.calls.lock().unwrap().push(call);
    }

    fn level<M>(request: &Request<M>) -> String {
        request
            .metadata()
            .get("x-consistency")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("quorum")
            .to_owned()
    }

    fn is_admin<M>(request: &Request<M>) -> bool {
        request.metadata().get("x-pairdb-principal").is_some()
    }

    /// The failure canned for `key`, if any.
    async fn canned(key: &[u8], write: bool) -> Result<(), Status> {
        match key {
            b"quorum" => Err(detail_status(
                Code::Unavailable,
                "only 1 of 2 required replicas acknowledged",
                pb::ErrorDetail {
                    kind: "quorum-unavailable".into(),
                    acks: 1,
                    required: 2,
                    applied: "partial".into(),
                    answered: 0,
                },
            )),
            b"read-quorum" if !write => Err(detail_status(
                Code::Unavailable,
                "only 1 of 2 replicas answered",
                pb::ErrorDetail {
                    kind: "quorum-unavailable".into(),
                    answered: 1,
                    required: 2,
                    ..Default::default()
                },
            )),
            b"timeout" => Err(detail_status(
                Code::DeadlineExceeded,
                "replicas did not answer in time",
                pb::ErrorDetail {
                    kind: "timeout".into(),
                    acks: 1,
                    required: 2,
                    applied: "unknown".into(),
                    answered: 0,
                },
            )),
            b"slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(())
            }
            b"forbidden" => Err(Status::permission_denied("not your tenant")),
            b"internal" => Err(Status::internal("secret stack trace")),
            b"bad-context" => Err(kind_status(Code::InvalidArgument, "bad-context")),
            b"reused" if write => Err(kind_status(
                Code::FailedPrecondition,
                "idempotency-key-reused",
            )),
            b"not-ready" => Err(detail_status(
                Code::Unavailable,
                "not ready: no placement known yet",
                pb::ErrorDetail {
                    kind: "not-ready".into(),
                    applied: if write { "none".into() } else { String::new() },
                    ..Default::default()
                },
            )),
            _ => Ok(()),
        }
    }

    fn written(request_level: String, key: &[u8]) -> pb::WriteResponse {
        let conflict = match key {
            b"conflict-won" => pb::ConflictOutcome::Won,
            b"conflict-lost" => pb::ConflictOutcome::Lost,
            _ => pb::ConflictOutcome::None,
        };
        pb::WriteResponse {
            context: "ctx-after-write".into(),
            consistency: request_level,
            acks: 2,
            replicas: 3,
            conflict: conflict as i32,
            idempotency_key: String::new(),
            replayed: key == b"replayed",
        }
    }
}

/// The served face of a [`FakeCoordinator`] (a local type, so the foreign trait can be implemented).
#[derive(Clone)]
pub struct FakeService(pub Arc<FakeCoordinator>);

impl FakeService {
    /// One call of a gateway's call stream, made as the unary call it stands for: the stream's
    /// credential, and the call's tenant, level and trace as the metadata a unary call carries
    /// them in (its deadline as `x-call-timeout-ms`), so tests see what travelled.
    async fn run_call(
        self,
        authorization: Option<tonic::metadata::AsciiMetadataValue>,
        call: pb::Call,
    ) -> Result<pb::reply::Result, Status> {
        fn request<M>(
            message: M,
            authorization: Option<tonic::metadata::AsciiMetadataValue>,
            call: &pb::Call,
        ) -> Request<M> {
            let mut request = Request::new(message);
            let metadata = request.metadata_mut();
            if let Some(a) = authorization {
                metadata.insert("authorization", a);
            }
            let mut set = |name: &'static str, value: &str| {
                if let Ok(v) = value.parse() {
                    metadata.insert(name, v);
                }
            };
            set("x-pairdb-tenant", &call.tenant);
            set("x-consistency", &call.consistency);
            if !call.traceparent.is_empty() {
                set("traceparent", &call.traceparent);
            }
            // The call's own deadline field, under a name no unary call uses.
            set("x-call-timeout-ms", &call.timeout_ms.to_string());
            request
        }
        match call.op.clone() {
            Some(pb::call::Op::Get(m)) => self
                .get(request(m, authorization, &call))
                .await
                .map(|r| pb::reply::Result::Get(r.into_inner())),
            Some(pb::call::Op::Put(m)) => self
                .put(request(m, authorization, &call))
                .await
                .map(|r| pb::reply::Result::Write(r.into_inner())),
            Some(pb::call::Op::Delete(m)) => self
                .delete(request(m, authorization, &call))
                .await
                .map(|r| pb::reply::Result::Write(r.into_inner())),
            None => Err(Status::invalid_argument("call without an operation")),
        }
    }
}

impl std::ops::Deref for FakeService {
    type Target = FakeCoordinator;
    fn deref(&self) -> &FakeCoordinator {
        &self.0
    }
}

#[tonic::async_trait]
impl Coordinator for FakeService {
    type CallsStream = pairdb_mux::ReplyStream<pb::ReplyBatch>;

    async fn calls(
        &self,
        request: Request<tonic::Streaming<pb::CallBatch>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        if self
            .no_call_streams
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Status::unimplemented(
                "Operation is not implemented or not supported",
            ));
        }
        let authorization = request.metadata().get("authorization").cloned();
        let service = self.clone();
        let handle = move |call: pb::Call| service.clone().run_call(authorization.clone(), call);
        Ok(Response::new(pairdb_mux::serve(
            request.into_inner(),
            handle,
            pairdb_mux::ServeOptions {
                stopping: tokio::sync::watch::channel(false).1,
                shutting_down: Status::unavailable("stopping"),
                max_reply_bytes: 4 << 20,
            },
        )))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let message = request.get_ref().clone();
        self.record("get", &request, |c| {
            c.key = message.key.clone();
            c.get = Some(message.clone());
        });
        FakeCoordinator::canned(&message.key, false).await?;
        let level = FakeCoordinator::level(&request);
        let stored = self.values.lock().unwrap().get(&message.key).cloned();
        let repaired = message.key == b"repaired";
        let (found, value, content_type) = match (stored, repaired) {
            (Some((v, ct)), _) => (true, v, ct),
            (None, true) => (true, b"r".to_vec(), "text/plain".into()),
            (None, false) => (false, Vec::new(), String::new()),
        };
        Ok(Response::new(pb::GetResponse {
            found,
            value,
            content_type,
            context: if found {
                "ctx-read".into()
            } else {
                "ctx-tombstone".into()
            },
            consistency: level,
            answered: 2,
            replicas: 3,
            conflict: repaired,
            read_repairs: if repaired { 2 } else { 0 },
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let message = request.get_ref().clone();
        self.record("put", &request, |c| {
            c.key = message.key.clone();
            c.put = Some(message.clone());
        });
        FakeCoordinator::canned(&message.key, true).await?;
        self.values.lock().unwrap().insert(
            message.key.clone(),
            (message.value.clone(), message.content_type.clone()),
        );
        Ok(Response::new(FakeCoordinator::written(
            FakeCoordinator::level(&request),
            &message.key,
        )))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let message = request.get_ref().clone();
        self.record("delete", &request, |c| {
            c.key = message.key.clone();
            c.delete = Some(message.clone());
        });
        FakeCoordinator::canned(&message.key, true).await?;
        self.values.lock().unwrap().remove(&message.key);
        Ok(Response::new(FakeCoordinator::written(
            FakeCoordinator::level(&request),
            &message.key,
        )))
    }

    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        let message = request.get_ref().clone();
        self.record("create_tenant", &request, |c| {
            c.create_tenant = Some(message.clone())
        });
        if !FakeCoordinator::is_admin(&request) {
            return Err(kind_status(Code::PermissionDenied, "forbidden"));
        }
        if message.tenant_id == "exists" {
            return Err(kind_status(Code::AlreadyExists, "tenant-exists"));
        }
        let mut t = tenant(&message.tenant_id);
        t.replication_factor = if message.replication_factor == 0 {
            3
        } else {
            message.replication_factor
        };
        if !message.default_consistency.is_empty() {
            t.default_consistency = message.default_consistency;
        }
        Ok(Response::new(pb::CreateTenantResponse {
            tenant: Some(t),
            api_key: "pdb_0123456789abcdef_0123456789abcdef0123456789abcdef".into(),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        self.record("get_tenant", &request, |_| {});
        match request.get_ref().tenant_id.as_str() {
            "missing" => Err(Status::not_found("no such tenant")),
            id => Ok(Response::new(tenant(id))),
        }
    }

    async fn update_tenant(
        &self,
        request: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        self.record("update_tenant", &request, |_| {});
        if !FakeCoordinator::is_admin(&request) {
            return Err(Status::permission_denied("admin only"));
        }
        let msg = request.into_inner();
        if msg.tenant_id == "missing" {
            return Err(Status::not_found("no such tenant"));
        }
        let mut t = tenant(&msg.tenant_id);
        if let Some(level) = msg.default_consistency {
            t.default_consistency = level;
        }
        if let Some(limit) = msg.rate_limit {
            t.rate_limit = Some(limit);
        }
        Ok(Response::new(t))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        self.record("list_tenants", &request, |_| {});
        if !FakeCoordinator::is_admin(&request) {
            return Err(Status::permission_denied("admin only"));
        }
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: vec![tenant("acme"), tenant("beta")],
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        self.record("create_api_key", &request, |_| {});
        Ok(Response::new(pb::CreateApiKeyResponse {
            key_id: "0123456789abcdef".into(),
            api_key: "pdb_0123456789abcdef_0123456789abcdef0123456789abcdef".into(),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        self.record("list_api_keys", &request, |_| {});
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: vec![pb::ApiKeyInfo {
                key_id: "0123456789abcdef".into(),
                created_at: "2026-01-01T00:00:00Z".into(),
            }],
        }))
    }

    async fn delete_api_key(
        &self,
        request: Request<pb::DeleteApiKeyRequest>,
    ) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        self.record("delete_api_key", &request, |_| {});
        if request.get_ref().key_id == "nokey" {
            return Err(kind_status(Code::NotFound, "api-key-not-found"));
        }
        Ok(Response::new(pb::DeleteApiKeyResponse {}))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.record("list_nodes", &request, |_| {});
        Ok(Response::new(pb::ListNodesResponse {
            nodes: vec![pb::Node {
                node_id: "n1".into(),
                address: "127.0.0.1:7001".into(),
                state: "active".into(),
                tokens: 256,
                load_bytes: 4096,
            }],
        }))
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::MigrationStarted>, Status> {
        self.record("add_node", &request, |_| {});
        if request.get_ref().node_id == "n1" {
            return Err(kind_status(Code::FailedPrecondition, "cluster-conflict"));
        }
        Ok(Response::new(pb::MigrationStarted {
            migration_id: format!("mig-add-{}", request.get_ref().node_id),
        }))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MigrationStarted>, Status> {
        self.record("remove_node", &request, |_| {});
        Ok(Response::new(pb::MigrationStarted {
            migration_id: format!("mig-remove-{}", request.get_ref().node_id),
        }))
    }

    async fn set_replication_factor(
        &self,
        request: Request<pb::SetReplicationFactorRequest>,
    ) -> Result<Response<pb::MigrationStarted>, Status> {
        self.record("set_replication_factor", &request, |_| {});
        let r = request.get_ref();
        Ok(Response::new(pb::MigrationStarted {
            migration_id: format!("mig-rf-{}-{}", r.tenant_id, r.replication_factor),
        }))
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::MigrationStarted>, Status> {
        self.record("delete_tenant", &request, |_| {});
        Ok(Response::new(pb::MigrationStarted {
            migration_id: format!("mig-delete-{}", request.get_ref().tenant_id),
        }))
    }

    async fn get_migration(
        &self,
        request: Request<pb::GetMigrationRequest>,
    ) -> Result<Response<pb::Migration>, Status> {
        self.record("get_migration", &request, |_| {});
        let id = request.into_inner().migration_id;
        if id == "missing" {
            return Err(kind_status(Code::NotFound, "job-not-found"));
        }
        Ok(Response::new(migration(id, "add_node", "streaming", &[])))
    }

    async fn cancel_migration(
        &self,
        request: Request<pb::CancelMigrationRequest>,
    ) -> Result<Response<pb::Migration>, Status> {
        self.record("cancel_migration", &request, |_| {});
        let id = request.into_inner().migration_id;
        if id == "finished" {
            return Err(kind_status(Code::FailedPrecondition, "cluster-conflict"));
        }
        Ok(Response::new(migration(
            id,
            "remove_node",
            "rolling_back",
            &["n3"],
        )))
    }

    async fn start_repair(
        &self,
        request: Request<pb::StartRepairRequest>,
    ) -> Result<Response<pb::RepairStarted>, Status> {
        self.record("start_repair", &request, |_| {});
        let tenant = request.into_inner().tenant_id;
        Ok(Response::new(pb::RepairStarted {
            repair_id: format!("rep-{}", if tenant.is_empty() { "all" } else { &tenant }),
        }))
    }

    async fn get_repair(
        &self,
        request: Request<pb::GetRepairRequest>,
    ) -> Result<Response<pb::Repair>, Status> {
        self.record("get_repair", &request, |_| {});
        Ok(Response::new(pb::Repair {
            repair_id: request.into_inner().repair_id,
            state: "done".into(),
            ranges_total: 8,
            ranges_done: 8,
            keys_repaired: 3,
            ranges_incomplete: 0,
            error: String::new(),
            created_at: "2026-11-30T00:00:00Z".into(),
        }))
    }

    async fn ready(
        &self,
        request: Request<pb::ReadyRequest>,
    ) -> Result<Response<pb::ReadyResponse>, Status> {
        self.record("ready", &request, |_| {});
        let not_ready = self.not_ready.load(Ordering::SeqCst);
        Ok(Response::new(pb::ReadyResponse {
            ready: !not_ready,
            detail: if not_ready {
                "no placement".into()
            } else {
                String::new()
            },
        }))
    }
}

// ---------------------------------------------------------------- harness

/// A served gateway in front of one fake coordinator.
pub struct Harness {
    pub base: String,
    pub http: reqwest::Client,
    pub api_key: String,
    pub store: Arc<SwitchableStore>,
    pub coordinator: Arc<FakeCoordinator>,
    stop_gateway: Option<oneshot::Sender<()>>,
    gateway: Option<JoinHandle<std::io::Result<()>>>,
    stop_coordinator: Option<oneshot::Sender<()>>,
}

/// Serves `fake` on 127.0.0.1:0; returns its address and a stop switch.
pub async fn serve_coordinator(fake: Arc<FakeCoordinator>) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CoordinatorServer::new(FakeService(fake)))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                stopped.await.ok();
            }),
    );
    (addr, stop)
}

/// An address nothing listens on, for as long as the returned socket lives: it is bound (so no
/// other socket on the machine can take the port) but never listens, so connections to it are
/// refused. (An address freed after a bind could be taken by any socket in between.)
pub fn dead_address() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap(), socket)
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(|_, _| {}).await
    }

    /// Starts with `adjust` applied to the config (given the live coordinator's address).
    pub async fn start_with(adjust: impl FnOnce(&mut GatewayConfig, SocketAddr)) -> Harness {
        let coordinator = Arc::new(FakeCoordinator::default());
        let (coordinator_addr, stop_coordinator) = serve_coordinator(coordinator.clone()).await;

        let (store, api_key) = seeded_store().await;
        let store = Arc::new(store);

        let mut config = GatewayConfig {
            coordinators: vec![coordinator_addr.to_string()],
            internal_token: INTERNAL_TOKEN.into(),
            key_secret: KEY_SECRET.to_vec(),
            admin_key: ADMIN_KEY.into(),
            ..GatewayConfig::default()
        };
        adjust(&mut config, coordinator_addr);
        let limits = config.connection_limits();
        let router = build_router(config, store.clone()).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop_gateway, stopped) = oneshot::channel::<()>();
        let gateway = tokio::spawn(serve(listener, router, limits, async {
            stopped.await.ok();
        }));
        Harness {
            base,
            http: reqwest::Client::new(),
            api_key,
            store,
            coordinator,
            stop_gateway: Some(stop_gateway),
            gateway: Some(gateway),
            stop_coordinator: Some(stop_coordinator),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the tenant key.
    pub fn tenant(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.api_key)
    }

    /// Creates tenant `id` with `rate_limit` in the store (as the admin API would) and returns
    /// its API key.
    pub async fn add_tenant(&self, id: &str, rate_limit: RateLimit) -> String {
        let current = self.store.placement().await.unwrap().unwrap();
        let tenant = TenantConfig {
            tenant_id: id.into(),
            replication_factor: 3,
            default_consistency: Consistency::Quorum,
            rate_limit,
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        let key = api_key::generate(KEY_SECRET);
        let record = ApiKeyRecord {
            key_id: key.key_id,
            tenant_id: id.into(),
            secret_hash: key.secret_hash,
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        let next = current.with_tenant(id, 3);
        self.store
            .create_tenant(&tenant, &record, current.epoch, &next)
            .await
            .unwrap();
        key.api_key
    }

    /// A request with the admin key.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(ADMIN_KEY)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.coordinator.calls.lock().unwrap().clone()
    }

    pub fn last_call(&self) -> Call {
        self.calls().pop().expect("the coordinator was called")
    }

    /// Stops the gateway gracefully and waits for `serve` to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop_gateway.take() {
            stop.send(()).ok();
        }
        let result = match self.gateway.take() {
            Some(handle) => handle.await.unwrap(),
            None => Ok(()),
        };
        if let Some(stop) = self.stop_coordinator.take() {
            stop.send(()).ok();
        }
        result
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_gateway.take() {
            stop.send(()).ok();
        }
        if let Some(stop) = self.stop_coordinator.take() {
            stop.send(()).ok();
        }
    }
}

/// A parsed problem response, after checking the status, the media type and `traceresponse`.
pub async fn problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/problem+json",
        "problem media type"
    );
    assert!(
        response.headers().contains_key("traceresponse"),
        "traceresponse"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("https://pairdb.dev/problems/")
    );
    assert!(body["title"].is_string());
    assert!(body["detail"].is_string());
    assert_eq!(body["trace_id"].as_str().unwrap().len(), 32);
    body
}

/// The problem type URI of `slug`.
pub fn type_of(slug: &str) -> String {
    format!("https://pairdb.dev/problems/{slug}")
}
