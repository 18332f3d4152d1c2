//! Balancing over coordinators.
//!
//! One lazily connected tonic channel per coordinator, picked round-robin. A call that fails at
//! the transport (status `Unavailable` without an `ErrorDetail`: the coordinator was never
//! reached or went away) is tried once more on the next coordinator; retrying is safe because
//! writes carry their idempotency key. Every call carries the internal credential, the caller's
//! principal, the resolved consistency and the trace context as gRPC metadata.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pairdb_core::Consistency;
use pairdb_middleware::{Principal, TraceContext};
use pairdb_proto::coordinator as pb;
use pairdb_proto::coordinator::coordinator_client::CoordinatorClient;
use pairdb_proto::{AUTHORIZATION, CONSISTENCY_HEADER, PRINCIPAL_HEADER, TENANT_HEADER};
use tonic::Status;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::error::GatewayError;

/// How long connecting to a coordinator may take before the call fails over.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Slack added to a request's deadline for the gRPC deadline and the gateway's own timer, so the
/// coordinator's deadline (`timeout_ms`) fires first and reports what it knows.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(200);

/// Who a call is made for and under which constraints.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// Sent as `x-pairdb-principal: admin` or `x-pairdb-tenant: <id>`.
    pub principal: Principal,
    /// Sent as `x-consistency` when resolved.
    pub consistency: Option<Consistency>,
    /// Sent as `traceparent` (this hop's span as the parent).
    pub trace: Option<TraceContext>,
    /// The request's deadline; the call gives up after it plus [`DEADLINE_MARGIN`].
    pub timeout: Option<Duration>,
}

/// The coordinators of the cluster. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Coordinators {
    inner: Arc<Inner>,
}

struct Inner {
    clients: Vec<CoordinatorClient<Channel>>,
    /// The call streams to each coordinator (same order as `clients`): the data path.
    streams: Vec<CallStreams>,
    /// Whether each coordinator serves call streams: [`UNKNOWN`] until its first answer, then
    /// [`STREAMS`], or [`UNARY`] for a coordinator older than call streams (a rolling upgrade).
    modes: Vec<std::sync::atomic::AtomicU8>,
    next: AtomicUsize,
    authorization: AsciiMetadataValue,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("coordinators", &self.clients.len())
            .finish_non_exhaustive()
    }
}

/// Call streams opened per coordinator.
pub const STREAMS_PER_COORDINATOR: usize = 2;
/// Bytes of calls one message of a call stream takes at most; a larger call (a large value) goes
/// alone, within the coordinator's limit for one request.
const MAX_CALL_MESSAGE_BYTES: usize = 256 << 10;
/// The largest reply message a gateway decodes (a coordinator batches replies up to 4 MiB; one
/// reply alone stays within its own limit).
const MAX_REPLY_MESSAGE_BYTES: usize = 16 << 20;

/// The call streams to one coordinator.
type CallStreams = pairdb_mux::CallStreams<pb::CallBatch, pb::ReplyBatch, Opener>;

/// Opens call streams to one coordinator with the internal credential (as `admin`: each call
/// names its own tenant).
#[derive(Clone)]
struct Opener {
    client: CoordinatorClient<Channel>,
    authorization: AsciiMetadataValue,
}

impl pairdb_mux::Opener<pb::CallBatch, pb::ReplyBatch> for Opener {
    fn open(
        &self,
        outbound: pairdb_mux::Outbound<pb::CallBatch>,
    ) -> futures::future::BoxFuture<'static, Result<tonic::Streaming<pb::ReplyBatch>, Status>> {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(outbound);
        let metadata = request.metadata_mut();
        metadata.insert(AUTHORIZATION, self.authorization.clone());
        metadata.insert(PRINCIPAL_HEADER, MetadataValue::from_static("admin"));
        Box::pin(async move { Ok(client.calls(request).await?.into_inner()) })
    }

    /// A coordinator that does not know the call-stream RPC ran none of the calls: each gets its
    /// `UNIMPLEMENTED`, and goes to it as a unary call instead.
    fn is_refusal(&self, status: &Status) -> bool {
        std::error::Error::source(status).is_none() && is_unimplemented(status)
    }
}

/// A transport failure: no coordinator answered (a coordinator's own `Unavailable` carries an
/// `ErrorDetail`).
fn is_transport_failure(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.details().is_empty()
}

impl Coordinators {
    /// Lazily connected channels to `addresses` (`host:port` or an `http://` URI), calling with
    /// `Bearer <internal_token>`. Nothing is dialled until the first call.
    ///
    /// Fails when the list is empty, an address is not a URI, or the token is not a valid header
    /// value.
    pub fn connect_lazy(addresses: &[String], internal_token: &str) -> Result<Self, GatewayError> {
        if addresses.is_empty() {
            return Err(GatewayError::Config(
                "at least one coordinator address is required".into(),
            ));
        }
        let authorization = pairdb_proto::internal_credential(internal_token).ok_or_else(|| {
            GatewayError::Config("the internal token is not a valid header value".into())
        })?;
        let clients: Vec<CoordinatorClient<Channel>> = addresses
            .iter()
            .map(|address| {
                let uri = if address.contains("://") {
                    address.clone()
                } else {
                    format!("http://{address}")
                };
                let endpoint = Endpoint::from_shared(uri)
                    .map_err(|source| GatewayError::CoordinatorAddress {
                        address: address.clone(),
                        source,
                    })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    // A coordinator that stops answering is noticed, and its streams fail.
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true);
                Ok(CoordinatorClient::new(endpoint.connect_lazy()))
            })
            .collect::<Result<Vec<_>, GatewayError>>()?;
        let streams = clients
            .iter()
            .map(|client| {
                CallStreams::new(
                    Opener {
                        client: client
                            .clone()
                            .max_decoding_message_size(MAX_REPLY_MESSAGE_BYTES),
                        authorization: authorization.clone(),
                    },
                    STREAMS_PER_COORDINATOR,
                )
                .max_message_bytes(MAX_CALL_MESSAGE_BYTES)
            })
            .collect();
        let modes = addresses
            .iter()
            .map(|_| std::sync::atomic::AtomicU8::new(UNKNOWN))
            .collect();
        Ok(Coordinators {
            inner: Arc::new(Inner {
                clients,
                streams,
                modes,
                next: AtomicUsize::new(0),
                authorization,
            }),
        })
    }

    /// A request for `message` with the metadata of `context`.
    fn request<M>(&self, context: &CallContext, message: M) -> Result<tonic::Request<M>, Status> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert(AUTHORIZATION, self.inner.authorization.clone());
        match &context.principal {
            Principal::Admin => {
                metadata.insert(PRINCIPAL_HEADER, MetadataValue::from_static("admin"));
            }
            Principal::Tenant { tenant_id, .. } => {
                let value = AsciiMetadataValue::try_from(tenant_id.as_str())
                    .map_err(|_| Status::internal("tenant id is not a header value"))?;
                metadata.insert(TENANT_HEADER, value);
            }
        }
        if let Some(level) = context.consistency {
            metadata.insert(
                CONSISTENCY_HEADER,
                MetadataValue::from_static(level.as_str()),
            );
        }
        if let Some(trace) = &context.trace
            && let Ok(value) = AsciiMetadataValue::try_from(trace.traceparent())
        {
            metadata.insert(pairdb_core::headers::TRACEPARENT, value);
        }
        if let Some(timeout) = context.timeout {
            request.set_timeout(timeout + DEADLINE_MARGIN);
        }
        Ok(request)
    }

    /// Calls `rpc` on the next coordinator with `message`, failing over once to the following
    /// coordinator on a transport failure. With a timeout in `context`, gives up after it plus
    /// [`DEADLINE_MARGIN`] with `DeadlineExceeded`.
    pub async fn call<M, T, F, Fut>(
        &self,
        context: &CallContext,
        message: M,
        rpc: F,
    ) -> Result<T, Status>
    where
        M: Clone,
        F: Fn(CoordinatorClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let attempts = async {
            let clients = &self.inner.clients;
            let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
            let tries = clients.len().min(2);
            let mut last = Status::unavailable("no coordinator configured");
            for attempt in 0..tries {
                let Some(client) = clients.get((start + attempt) % clients.len()) else {
                    break;
                };
                let request = self.request(context, message.clone())?;
                match rpc(client.clone(), request).await {
                    Ok(response) => return Ok(response.into_inner()),
                    Err(status) if is_transport_failure(&status) => {
                        tracing::debug!(message = status.message(), "coordinator unreachable");
                        last = status;
                    }
                    Err(status) => return Err(status),
                }
            }
            Err(last)
        };
        match context.timeout {
            Some(timeout) => tokio::time::timeout(timeout + DEADLINE_MARGIN, attempts)
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("the request deadline passed"))),
            None => attempts.await,
        }
    }

    /// `Coordinator.Get`, over the call streams.
    pub async fn get(
        &self,
        context: &CallContext,
        message: pb::GetRequest,
    ) -> Result<pb::GetResponse, Status> {
        match self.kv(context, pb::call::Op::Get(message)).await? {
            pb::reply::Result::Get(r) => Ok(r),
            _ => Err(mismatched()),
        }
    }

    /// `Coordinator.Put`, over the call streams.
    pub async fn put(
        &self,
        context: &CallContext,
        message: pb::PutRequest,
    ) -> Result<pb::WriteResponse, Status> {
        match self.kv(context, pb::call::Op::Put(message)).await? {
            pb::reply::Result::Write(r) => Ok(r),
            _ => Err(mismatched()),
        }
    }

    /// `Coordinator.Delete`, over the call streams.
    pub async fn delete(
        &self,
        context: &CallContext,
        message: pb::DeleteRequest,
    ) -> Result<pb::WriteResponse, Status> {
        match self.kv(context, pb::call::Op::Delete(message)).await? {
            pb::reply::Result::Write(r) => Ok(r),
            _ => Err(mismatched()),
        }
    }

    /// `op` on a call stream, or as its unary RPC when `context` cannot travel on one (no tenant,
    /// or no resolved level); either way with failover as [`call`](Self::call) does.
    async fn kv(
        &self,
        context: &CallContext,
        op: pb::call::Op,
    ) -> Result<pb::reply::Result, Status> {
        match stream_call(context) {
            Some(call) => {
                let call = pb::Call {
                    op: Some(op),
                    ..call
                };
                self.stream(context, call).await
            }
            None => self.call(context, op, unary).await,
        }
    }

    /// Makes `call` on the next coordinator's call streams, failing over once to the following
    /// coordinator on a transport failure, exactly as [`call`](Self::call) does.
    async fn stream(
        &self,
        context: &CallContext,
        call: pb::Call,
    ) -> Result<pb::reply::Result, Status> {
        let budget = context.timeout.unwrap_or(UNBOUNDED_CALL) + DEADLINE_MARGIN;
        let deadline = tokio::time::Instant::now() + budget;
        let attempts = async {
            let streams = &self.inner.streams;
            let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
            let tries = streams.len().min(2);
            let mut last = Status::unavailable("no coordinator configured");
            let mut call = Some(call);
            for attempt in 0..tries {
                let i = (start + attempt) % streams.len();
                let Some(to) = streams.get(i) else {
                    break;
                };
                // Copied only when another attempt may follow (a value can be large).
                let this = if attempt + 1 < tries {
                    call.clone()
                } else {
                    call.take()
                };
                let Some(this) = this else { break };
                match self.call_on(i, to, context, this, deadline).await {
                    Ok(result) => return Ok(result),
                    Err(status) if is_transport_failure(&status) => {
                        tracing::debug!(message = status.message(), "coordinator unreachable");
                        last = status;
                    }
                    Err(status) => return Err(status),
                }
            }
            Err(last)
        };
        tokio::time::timeout_at(deadline, attempts)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("the request deadline passed")))
    }
}

impl Coordinators {
    /// Makes `call` on coordinator `i`: on its call streams, or as the unary RPC when it has
    /// none. Until a coordinator has answered on a stream once, the call is kept, so that one
    /// answering `UNIMPLEMENTED` (older than call streams) gets it as a unary call instead.
    async fn call_on(
        &self,
        i: usize,
        to: &CallStreams,
        context: &CallContext,
        call: pb::Call,
        deadline: tokio::time::Instant,
    ) -> Result<pb::reply::Result, Status> {
        let mode = self
            .inner
            .modes
            .get(i)
            .map_or(STREAMS, |m| m.load(Ordering::Relaxed));
        if mode == UNARY {
            return self.unary_on(i, context, call).await;
        }
        let kept = (mode == UNKNOWN).then(|| call.clone());
        match to.call(call, deadline).await {
            Err(status) if is_unimplemented(&status) => {
                let Some(kept) = kept else {
                    // It served streams before (replaced by an older build since): the call never
                    // ran; send it elsewhere, and learn this coordinator's mode again.
                    if let Some(m) = self.inner.modes.get(i) {
                        m.store(UNKNOWN, Ordering::Relaxed);
                    }
                    return Err(Status::unavailable(status.message().to_owned()));
                };
                tracing::info!("a coordinator without call streams: calling it unary");
                if let Some(m) = self.inner.modes.get(i) {
                    m.store(UNARY, Ordering::Relaxed);
                }
                self.unary_on(i, context, kept).await
            }
            answered => {
                if let (Some(m), Ok(_)) = (self.inner.modes.get(i), &answered) {
                    m.store(STREAMS, Ordering::Relaxed);
                }
                answered
            }
        }
    }

    /// `call`'s operation as the unary RPC, on coordinator `i`.
    async fn unary_on(
        &self,
        i: usize,
        context: &CallContext,
        call: pb::Call,
    ) -> Result<pb::reply::Result, Status> {
        let Some(client) = self.inner.clients.get(i) else {
            return Err(Status::unavailable("no such coordinator"));
        };
        let op = call
            .op
            .ok_or_else(|| Status::internal("a call without an operation"))?;
        let request = self.request(context, op)?;
        Ok(unary(client.clone(), request).await?.into_inner())
    }
}

/// The operation `request` carries, as its unary RPC on `client` (with `request`'s metadata).
async fn unary(
    mut client: CoordinatorClient<Channel>,
    request: tonic::Request<pb::call::Op>,
) -> Result<tonic::Response<pb::reply::Result>, Status> {
    fn with<M>(
        metadata: tonic::metadata::MetadataMap,
        extensions: tonic::Extensions,
        message: M,
    ) -> tonic::Request<M> {
        tonic::Request::from_parts(metadata, extensions, message)
    }
    let (metadata, extensions, op) = request.into_parts();
    Ok(match op {
        pb::call::Op::Get(m) => client
            .get(with(metadata, extensions, m))
            .await?
            .map(pb::reply::Result::Get),
        pb::call::Op::Put(m) => client
            .put(with(metadata, extensions, m))
            .await?
            .map(pb::reply::Result::Write),
        pb::call::Op::Delete(m) => client
            .delete(with(metadata, extensions, m))
            .await?
            .map(pb::reply::Result::Write),
    })
}

/// A coordinator's call-stream mode: not known yet.
const UNKNOWN: u8 = 0;
/// It serves call streams.
const STREAMS: u8 = 1;
/// It does not (older than call streams): unary calls only.
const UNARY: u8 = 2;

/// The coordinator does not know the call-stream RPC (gRPC's answer for an unknown method,
/// without an error detail of pairdb's).
fn is_unimplemented(status: &Status) -> bool {
    status.code() == tonic::Code::Unimplemented && status.details().is_empty()
}

/// How long a call without a deadline of its own may take on a call stream.
const UNBOUNDED_CALL: Duration = Duration::from_secs(300);

/// The call stream call (without its operation) under `context`: `None` when the context cannot
/// travel on a stream (no tenant, or no resolved level), and the unary RPC must carry it.
fn stream_call(context: &CallContext) -> Option<pb::Call> {
    let Principal::Tenant { tenant_id, .. } = &context.principal else {
        return None;
    };
    let level = context.consistency?;
    Some(pb::Call {
        id: 0,
        timeout_ms: 0,
        traceparent: context
            .trace
            .as_ref()
            .map(TraceContext::traceparent)
            .unwrap_or_default(),
        tenant: tenant_id.clone(),
        consistency: level.as_str().to_owned(),
        op: None,
    })
}

/// A reply of another kind than its call: the coordinator is broken (nothing is proven).
fn mismatched() -> Status {
    Status::internal("the coordinator answered a call with a reply of another kind")
}
