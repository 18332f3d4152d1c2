//! The coordinator gRPC service.
//!
//! The caller's identity comes only from the middleware stack's extensions (`Principal`,
//! `Consistency`), never from a message. Key-value RPCs need a tenant principal; administration
//! needs the admin key, except that a tenant may read its own tenant.

use std::time::Duration;

use pairdb_core::{Consistency, ErrorKind};
use pairdb_metadata::TenantConfig;
use pairdb_middleware::principal::Principal;
use pairdb_proto::coordinator as pb;
use pairdb_proto::coordinator::coordinator_server::Coordinator;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::error::CoordinatorError;
use tonic::{Request, Response, Status};

use crate::admin::{Admin, NewTenant};
use crate::replication::{Conflict, ReadOp, Replicator, WriteOp};
use crate::status::status_of;

/// Implements `pairdb.coordinator.v1.Coordinator`.
#[derive(Clone)]
pub struct CoordinatorService {
    replicator: Replicator,
    admin: Admin,
    events: Events,
    /// Turns true when the server stops: call streams then end.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Bytes of replies one message of a call stream takes at most.
    max_reply_bytes: usize,
}

/// Replication events, counted into the cluster's metrics.
#[derive(Clone)]
struct Events {
    /// Reads and writes that could not meet their level (`op`, `outcome`: `unavailable` or
    /// `timeout`).
    quorum_failures: pairdb_middleware::metrics::EventCounters,
    /// Conflicts resolved by last-write-wins (`op`; for writes, `outcome` `won` or `lost`).
    conflicts: pairdb_middleware::metrics::EventCounters,
    /// Replicas repaired by reads.
    read_repairs: pairdb_middleware::metrics::Counter,
}

impl CoordinatorService {
    /// The service over a replicator and an admin handle of the same cluster.
    pub fn new(replicator: Replicator, admin: Admin) -> Self {
        let metrics = replicator.cluster().config().metrics.clone();
        let events = Events {
            quorum_failures: metrics.counter_family(
                "quorum_failures",
                "Reads and writes that could not meet their consistency level",
            ),
            conflicts: metrics.counter_family(
                "conflicts",
                "Concurrent versions resolved by last-write-wins",
            ),
            read_repairs: metrics.counter("read_repairs", "Replicas repaired by reads"),
        };
        CoordinatorService {
            replicator,
            admin,
            events,
            // Never stops until `server::run` gives it its server's signal.
            stopping: tokio::sync::watch::channel(false).1,
            max_reply_bytes: 1 << 20,
        }
    }

    /// Caps each message of replies on a call stream at `bytes`: at most the server's message
    /// limit, less room for framing.
    pub fn max_reply_bytes(mut self, bytes: usize) -> Self {
        self.max_reply_bytes = bytes;
        self
    }

    /// Ends call streams once `stopping` turns true (the server's shutdown signal).
    pub fn stopping_on(mut self, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stopping = stopping;
        self
    }

    /// Runs one call of a gateway's call stream as the unary RPC it carries, for the tenant and
    /// level the gateway resolved, in a span and metrics of its own like a unary call's.
    async fn run_call(&self, call: pb::Call) -> Result<pb::reply::Result, Status> {
        use pb::call::Op;
        let rpc = match &call.op {
            Some(Op::Get(_)) => "Get",
            Some(Op::Put(_)) => "Put",
            Some(Op::Delete(_)) => "Delete",
            None => "other",
        };
        let span = pairdb_middleware::call_span("coordinator", rpc, &call.traceparent);
        let level = call.consistency.parse::<Consistency>().ok();
        // Recorded however the call ends, dropped at its deadline or cancelled included.
        let started = std::time::Instant::now();
        let mut observed = Observed {
            metrics: self.replicator.cluster().config().metrics.clone(),
            rpc,
            level: level.map_or("none", Consistency::as_str),
            started,
            deadline: (call.timeout_ms > 0)
                .then(|| started + std::time::Duration::from_millis(u64::from(call.timeout_ms))),
            code: None,
        };
        let result = async {
            let level = level.ok_or_else(|| {
                status_of(
                    ErrorKind::BadRequest,
                    "a forwarded call names its level: one, quorum or all",
                )
            })?;
            pairdb_core::tenant::validate_tenant_id(&call.tenant)
                .map_err(|e| status_of(ErrorKind::BadRequest, e.to_string()))?;
            let principal = Principal::Tenant {
                tenant_id: call.tenant,
                key_id: pairdb_middleware::auth::INTERNAL_KEY_ID.to_owned(),
            };
            match call.op {
                Some(Op::Get(m)) => self
                    .get(forwarded(m, &principal, level))
                    .await
                    .map(|r| pb::reply::Result::Get(r.into_inner())),
                Some(Op::Put(m)) => self
                    .put(forwarded(m, &principal, level))
                    .await
                    .map(|r| pb::reply::Result::Write(r.into_inner())),
                Some(Op::Delete(m)) => self
                    .delete(forwarded(m, &principal, level))
                    .await
                    .map(|r| pb::reply::Result::Write(r.into_inner())),
                None => Err(status_of(
                    ErrorKind::BadRequest,
                    "call without an operation",
                )),
            }
        }
        .instrument(span)
        .await;
        observed.code = Some(match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        });
        result
    }

    /// Counts what a read or write that failed says about its level.
    fn count_failure(&self, op: &'static str, e: &CoordinatorError) {
        let outcome = match e {
            CoordinatorError::WriteUnavailable { .. }
            | CoordinatorError::ReadUnavailable { .. } => "unavailable",
            CoordinatorError::Timeout { .. } => "timeout",
            _ => return,
        };
        self.events
            .quorum_failures
            .get_or_create(&vec![("op", op), ("outcome", outcome)])
            .inc();
    }

    fn deadline(&self, timeout_ms: u32) -> Instant {
        let max = self.replicator.cluster().config().request_timeout;
        let asked = Duration::from_millis(u64::from(timeout_ms));
        let t = if timeout_ms == 0 { max } else { asked.min(max) };
        Instant::now() + t
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Status> {
        let max = self.replicator.cluster().config().max_key_bytes;
        if key.is_empty() || key.len() > max {
            return Err(status_of(
                ErrorKind::BadKey,
                format!("key must be 1–{max} bytes, got {}", key.len()),
            ));
        }
        Ok(())
    }
}

/// Checks the write fields a public gRPC client could abuse, by the rules of the REST contract:
/// the idempotency key (empty, or a valid key as [`pairdb_core::idempotency::is_valid`] says) and
/// the content type ([`pairdb_core::limits::valid_content_type`]).
fn check_write_fields(idempotency_key: &str, content_type: &str) -> Result<(), Status> {
    if !idempotency_key.is_empty() && !pairdb_core::idempotency::is_valid(idempotency_key) {
        return Err(status_of(
            ErrorKind::BadRequest,
            "idempotency key must be 1–255 visible ASCII characters",
        ));
    }
    if !pairdb_core::limits::valid_content_type(content_type) {
        return Err(status_of(
            ErrorKind::BadRequest,
            "content type must be at most 255 printable ASCII characters",
        ));
    }
    Ok(())
}

fn principal<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| status_of(ErrorKind::Unauthorized, "missing credential"))
}

fn tenant_of<T>(req: &Request<T>) -> Result<String, Status> {
    match principal(req)? {
        Principal::Tenant { tenant_id, .. } => Ok(tenant_id),
        Principal::Admin => Err(status_of(
            ErrorKind::Forbidden,
            "the admin key has no tenant: use a tenant API key",
        )),
    }
}

fn require_admin<T>(req: &Request<T>) -> Result<(), Status> {
    match principal(req)? {
        Principal::Admin => Ok(()),
        Principal::Tenant { .. } => Err(status_of(
            ErrorKind::Forbidden,
            "this route needs the admin key",
        )),
    }
}

/// The write's idempotency key: the message's, or else the `idempotency-key` metadata (which the
/// idempotency layer records the answer under); both given must agree.
fn idempotency_key_of<T>(req: &Request<T>, in_message: String) -> Result<String, Status> {
    // Read as the idempotency layer reads it (a quoted key is the key without its quotes).
    let in_metadata = req
        .metadata()
        .get("idempotency-key")
        .map(|v| {
            pairdb_core::idempotency::parse(v.as_bytes()).ok_or_else(|| {
                status_of(
                    ErrorKind::BadRequest,
                    "idempotency-key metadata must be 1–255 visible ASCII characters",
                )
            })
        })
        .transpose()?;
    match in_metadata {
        None => Ok(in_message),
        Some(key) if in_message.is_empty() || in_message == key => Ok(key.to_owned()),
        Some(_) => Err(status_of(
            ErrorKind::BadRequest,
            "the message's idempotency_key and the idempotency-key metadata differ",
        )),
    }
}

/// Records a call of a call stream in the request metrics when it ends: with its status, or
/// — dropped before it answered — `DEADLINE_EXCEEDED` past its deadline, else `CANCELLED`.
struct Observed {
    metrics: pairdb_middleware::Metrics,
    rpc: &'static str,
    level: &'static str,
    started: std::time::Instant,
    deadline: Option<std::time::Instant>,
    code: Option<tonic::Code>,
}

impl Drop for Observed {
    fn drop(&mut self) {
        let code = self.code.unwrap_or_else(|| match self.deadline {
            Some(d) if std::time::Instant::now() >= d => tonic::Code::DeadlineExceeded,
            _ => tonic::Code::Cancelled,
        });
        self.metrics
            .observe_call(self.rpc, code, self.level, self.started.elapsed());
    }
}

/// A forwarded call's request, carrying what the middleware stack gives a unary one.
fn forwarded<T>(message: T, principal: &Principal, level: Consistency) -> Request<T> {
    let mut request = Request::new(message);
    let extensions = request.extensions_mut();
    extensions.insert(principal.clone());
    extensions.insert(level);
    extensions.insert(pairdb_middleware::principal::Forwarded);
    request
}

fn consistency_of<T>(req: &Request<T>) -> Consistency {
    req.extensions()
        .get::<Consistency>()
        .copied()
        .unwrap_or_default()
}

fn tenant_to_pb(t: &TenantConfig) -> pb::Tenant {
    pb::Tenant {
        tenant_id: t.tenant_id.clone(),
        replication_factor: t.replication_factor,
        default_consistency: t.default_consistency.as_str().to_owned(),
        rate_limit: Some(pb::RateLimit {
            requests_per_second: t.rate_limit.requests_per_second,
            burst: t.rate_limit.burst,
        }),
        created_at: t.created_at.clone(),
    }
}

fn conflict_to_pb(c: Conflict) -> i32 {
    match c {
        Conflict::None => pb::ConflictOutcome::None as i32,
        Conflict::Won => pb::ConflictOutcome::Won as i32,
        Conflict::Lost => pb::ConflictOutcome::Lost as i32,
    }
}

impl CoordinatorService {
    async fn write(&self, op: WriteOp) -> Result<Response<pb::WriteResponse>, Status> {
        let consistency = op.consistency;
        let idempotency_key = op.idempotency_key.clone();
        let out = match self.replicator.write(op).await {
            Ok(out) => out,
            Err(e) => {
                self.count_failure("write", &e);
                return Err(e.into());
            }
        };
        let outcome = match out.conflict {
            Conflict::None => None,
            Conflict::Won => Some("won"),
            Conflict::Lost => Some("lost"),
        };
        if let Some(outcome) = outcome {
            self.events
                .conflicts
                .get_or_create(&vec![("op", "write"), ("outcome", outcome)])
                .inc();
        }
        Ok(Response::new(pb::WriteResponse {
            context: out.context,
            consistency: consistency.as_str().to_owned(),
            acks: out.acks,
            replicas: out.replicas,
            conflict: conflict_to_pb(out.conflict),
            idempotency_key,
            replayed: out.replayed,
        }))
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    type CallsStream = pairdb_mux::ReplyStream<pb::ReplyBatch>;

    /// The gateways' data path ([`pairdb_mux::server`]): only a caller presenting the internal
    /// credential may open a stream; each call then runs as its unary RPC for the tenant and level
    /// it names.
    async fn calls(
        &self,
        request: Request<tonic::Streaming<pb::CallBatch>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        if request
            .extensions()
            .get::<pairdb_middleware::principal::Forwarded>()
            .is_none()
        {
            return Err(status_of(
                ErrorKind::Forbidden,
                "call streams are for gateways: they need the internal credential",
            ));
        }
        let service = self.clone();
        let handle = move |call: pb::Call| {
            let service = service.clone();
            async move { service.run_call(call).await }
        };
        Ok(Response::new(pairdb_mux::serve(
            request.into_inner(),
            handle,
            pairdb_mux::ServeOptions {
                stopping: self.stopping.clone(),
                // Without an error detail: a transport failure to the gateway, which sends the
                // call (it never ran) to another coordinator.
                shutting_down: Status::unavailable("the coordinator is shutting down"),
                // Under this server's own message limit (one reply alone always fits it).
                max_reply_bytes: self.max_reply_bytes,
            },
        )))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let tenant = tenant_of(&req)?;
        let consistency = consistency_of(&req);
        let msg = req.into_inner();
        self.check_key(&msg.key)?;
        let read = self
            .replicator
            .read(ReadOp {
                tenant,
                key: msg.key,
                consistency,
                deadline: self.deadline(msg.timeout_ms),
            })
            .await;
        let out = match read {
            Ok(out) => out,
            Err(e) => {
                self.count_failure("read", &e);
                return Err(e.into());
            }
        };
        if out.conflict {
            self.events
                .conflicts
                .get_or_create(&vec![("op", "read")])
                .inc();
        }
        if out.read_repairs > 0 {
            self.events.read_repairs.inc_by(u64::from(out.read_repairs));
        }
        let (found, value, content_type) = match out.version {
            Some(v) if !v.tombstone => (true, v.value, v.content_type),
            _ => (false, Vec::new(), String::new()),
        };
        Ok(Response::new(pb::GetResponse {
            found,
            value,
            content_type,
            context: out.context,
            consistency: consistency.as_str().to_owned(),
            answered: out.answered,
            replicas: out.replicas,
            conflict: out.conflict,
            read_repairs: out.read_repairs,
        }))
    }

    async fn put(
        &self,
        req: Request<pb::PutRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let tenant = tenant_of(&req)?;
        let consistency = consistency_of(&req);
        let idempotency_key = idempotency_key_of(&req, req.get_ref().idempotency_key.clone())?;
        let mut msg = req.into_inner();
        msg.idempotency_key = idempotency_key;
        self.check_key(&msg.key)?;
        check_write_fields(&msg.idempotency_key, &msg.content_type)?;
        let max = self.replicator.cluster().config().max_value_bytes;
        if msg.value.len() > max {
            return Err(status_of(
                ErrorKind::PayloadTooLarge,
                format!("value is {} bytes; the limit is {max}", msg.value.len()),
            ));
        }
        let content_type = if msg.content_type.is_empty() {
            pairdb_core::limits::DEFAULT_CONTENT_TYPE.to_owned()
        } else {
            msg.content_type
        };
        self.write(WriteOp {
            tenant,
            key: msg.key,
            tombstone: false,
            value: msg.value,
            content_type,
            context: msg.context,
            idempotency_key: msg.idempotency_key,
            consistency,
            deadline: self.deadline(msg.timeout_ms),
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let tenant = tenant_of(&req)?;
        let consistency = consistency_of(&req);
        let idempotency_key = idempotency_key_of(&req, req.get_ref().idempotency_key.clone())?;
        let mut msg = req.into_inner();
        msg.idempotency_key = idempotency_key;
        self.check_key(&msg.key)?;
        check_write_fields(&msg.idempotency_key, "")?;
        self.write(WriteOp {
            tenant,
            key: msg.key,
            tombstone: true,
            value: Vec::new(),
            content_type: String::new(),
            context: msg.context,
            idempotency_key: msg.idempotency_key,
            consistency,
            deadline: self.deadline(msg.timeout_ms),
        })
        .await
    }

    async fn create_tenant(
        &self,
        req: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        require_admin(&req)?;
        let msg = req.into_inner();
        let (tenant, api_key) = self
            .admin
            .create_tenant(NewTenant {
                tenant_id: msg.tenant_id,
                replication_factor: (msg.replication_factor != 0).then_some(msg.replication_factor),
                default_consistency: Some(msg.default_consistency),
                rate_limit: msg.rate_limit.map(|r| pairdb_metadata::RateLimit {
                    requests_per_second: r.requests_per_second,
                    burst: r.burst,
                }),
            })
            .await?;
        Ok(Response::new(pb::CreateTenantResponse {
            tenant: Some(tenant_to_pb(&tenant)),
            api_key,
        }))
    }

    async fn get_tenant(
        &self,
        req: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let id = match principal(&req)? {
            Principal::Admin => req.into_inner().tenant_id,
            Principal::Tenant { tenant_id, .. } => {
                let asked = req.into_inner().tenant_id;
                if asked != tenant_id {
                    return Err(status_of(
                        ErrorKind::Forbidden,
                        "a tenant key may only read its own tenant",
                    ));
                }
                asked
            }
        };
        let tenant = self.admin.get_tenant(&id).await?;
        Ok(Response::new(tenant_to_pb(&tenant)))
    }

    async fn update_tenant(
        &self,
        req: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        require_admin(&req)?;
        let msg = req.into_inner();
        let tenant = self
            .admin
            .update_tenant(
                &msg.tenant_id,
                msg.default_consistency.as_deref(),
                msg.rate_limit.map(|r| pairdb_metadata::RateLimit {
                    requests_per_second: r.requests_per_second,
                    burst: r.burst,
                }),
            )
            .await?;
        Ok(Response::new(tenant_to_pb(&tenant)))
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        require_admin(&req)?;
        let tenants = self.admin.list_tenants().await?;
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: tenants.iter().map(tenant_to_pb).collect(),
        }))
    }

    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        require_admin(&req)?;
        let (key_id, api_key) = self
            .admin
            .create_api_key(&req.into_inner().tenant_id)
            .await?;
        Ok(Response::new(pb::CreateApiKeyResponse { key_id, api_key }))
    }

    async fn list_api_keys(
        &self,
        req: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        require_admin(&req)?;
        let keys = self
            .admin
            .list_api_keys(&req.into_inner().tenant_id)
            .await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys
                .into_iter()
                .map(|k| pb::ApiKeyInfo {
                    key_id: k.key_id,
                    created_at: k.created_at,
                })
                .collect(),
        }))
    }

    async fn delete_api_key(
        &self,
        req: Request<pb::DeleteApiKeyRequest>,
    ) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        require_admin(&req)?;
        let msg = req.into_inner();
        self.admin
            .delete_api_key(&msg.tenant_id, &msg.key_id)
            .await?;
        Ok(Response::new(pb::DeleteApiKeyResponse {}))
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        require_admin(&req)?;
        let nodes = self.admin.list_nodes().await?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: nodes
                .into_iter()
                .map(|n| pb::Node {
                    node_id: n.node_id,
                    address: n.address,
                    state: n.state,
                    tokens: n.tokens,
                    load_bytes: n.load_bytes,
                })
                .collect(),
        }))
    }

    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::MigrationStarted>, Status> {
        require_admin(&req)?;
        let msg = req.into_inner();
        let migration_id = self
            .admin
            .migrations()
            .add_node(&msg.node_id, &msg.address)
            .await?;
        Ok(Response::new(pb::MigrationStarted { migration_id }))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MigrationStarted>, Status> {
        require_admin(&req)?;
        let migration_id = self
            .admin
            .migrations()
            .remove_node(&req.into_inner().node_id)
            .await?;
        Ok(Response::new(pb::MigrationStarted { migration_id }))
    }

    async fn set_replication_factor(
        &self,
        req: Request<pb::SetReplicationFactorRequest>,
    ) -> Result<Response<pb::MigrationStarted>, Status> {
        require_admin(&req)?;
        let msg = req.into_inner();
        let migration_id = self
            .admin
            .set_replication_factor(&msg.tenant_id, msg.replication_factor)
            .await?;
        Ok(Response::new(pb::MigrationStarted { migration_id }))
    }

    async fn delete_tenant(
        &self,
        req: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::MigrationStarted>, Status> {
        require_admin(&req)?;
        let migration_id = self
            .admin
            .delete_tenant(&req.into_inner().tenant_id)
            .await?;
        Ok(Response::new(pb::MigrationStarted { migration_id }))
    }

    async fn get_migration(
        &self,
        req: Request<pb::GetMigrationRequest>,
    ) -> Result<Response<pb::Migration>, Status> {
        require_admin(&req)?;
        let m = self
            .admin
            .migrations()
            .get(&req.into_inner().migration_id)
            .await?;
        Ok(Response::new(migration_message(m)))
    }

    async fn cancel_migration(
        &self,
        req: Request<pb::CancelMigrationRequest>,
    ) -> Result<Response<pb::Migration>, Status> {
        require_admin(&req)?;
        let m = self
            .admin
            .migrations()
            .cancel(&req.into_inner().migration_id)
            .await?;
        Ok(Response::new(migration_message(m)))
    }

    async fn start_repair(
        &self,
        req: Request<pb::StartRepairRequest>,
    ) -> Result<Response<pb::RepairStarted>, Status> {
        require_admin(&req)?;
        let tenant = req.into_inner().tenant_id;
        let repair_id = self
            .admin
            .repairs()
            .start((!tenant.is_empty()).then_some(tenant.as_str()))
            .await?;
        Ok(Response::new(pb::RepairStarted { repair_id }))
    }

    async fn get_repair(
        &self,
        req: Request<pb::GetRepairRequest>,
    ) -> Result<Response<pb::Repair>, Status> {
        require_admin(&req)?;
        let r = self
            .admin
            .repairs()
            .get(&req.into_inner().repair_id)
            .await?;
        Ok(Response::new(pb::Repair {
            repair_id: r.id,
            state: r.state.as_str().to_owned(),
            ranges_total: r.ranges_total,
            ranges_done: r.ranges_done,
            keys_repaired: r.keys_repaired,
            ranges_incomplete: r.ranges_incomplete,
            error: r.error.unwrap_or_default(),
            created_at: r.created_at,
        }))
    }

    async fn ready(
        &self,
        _req: Request<pb::ReadyRequest>,
    ) -> Result<Response<pb::ReadyResponse>, Status> {
        let result = self.replicator.cluster().readiness().await;
        Ok(Response::new(match result {
            Ok(()) => pb::ReadyResponse {
                ready: true,
                detail: String::new(),
            },
            Err(detail) => pb::ReadyResponse {
                ready: false,
                detail,
            },
        }))
    }
}

/// A migration as the wire carries it.
fn migration_message(m: crate::migration::Migration) -> pb::Migration {
    pb::Migration {
        migration_id: m.id,
        kind: m.change.kind().to_owned(),
        state: m.phase.as_str().to_owned(),
        ranges_total: m.ranges_total,
        ranges_done: m.ranges_done,
        keys_streamed: m.keys_streamed,
        bytes_streamed: m.bytes_streamed,
        error: m.error.unwrap_or_default(),
        created_at: m.created_at,
        undropped: m.undropped,
    }
}
