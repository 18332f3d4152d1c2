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

#[derive(Debug)]
struct Inner {
    clients: Vec<CoordinatorClient<Channel>>,
    next: AtomicUsize,
    authorization: AsciiMetadataValue,
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
        let clients = addresses
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
                    .tcp_nodelay(true);
                Ok(CoordinatorClient::new(endpoint.connect_lazy()))
            })
            .collect::<Result<Vec<_>, GatewayError>>()?;
        Ok(Coordinators {
            inner: Arc::new(Inner {
                clients,
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
}
