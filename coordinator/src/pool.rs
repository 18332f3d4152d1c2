//! gRPC clients to storage nodes, with failure detection.
//!
//! Every client carries the internal credential. A node is marked *down* after
//! `failure_threshold` consecutive transport failures (refused connections, timeouts); down nodes
//! are skipped as leaders and not asked to read, and a prober brings them back as soon as they
//! answer a health check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pairdb_core::Placement;
use pairdb_proto::storage::storage_client::StorageClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::calls::{CallStreams, STREAMS_PER_NODE, StorageCalls};

/// Adds `authorization: Bearer <internal token>` to every storage RPC, and the `traceparent` of
/// the span the call is made in, so the storage node's span joins the caller's trace.
#[derive(Clone)]
pub struct BearerAuth {
    value: AsciiMetadataValue,
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert(pairdb_proto::AUTHORIZATION, self.value.clone());
        if let Some(parent) = pairdb_middleware::current_traceparent()
            && let Ok(value) = AsciiMetadataValue::try_from(parent)
        {
            metadata.insert(pairdb_core::headers::TRACEPARENT, value);
        }
        Ok(request)
    }
}

/// A storage-node client that authenticates every call.
pub type StorageRpc = StorageClient<InterceptedService<Channel, BearerAuth>>;

/// One storage node: its client and liveness.
pub struct NodeHandle {
    /// Node id.
    pub id: String,
    /// gRPC address.
    pub address: String,
    client: StorageRpc,
    calls: Arc<CallStreams>,
    failures: AtomicU32,
    down: AtomicBool,
    /// Most storage nodes judge it down (their phi-accrual detectors) and this coordinator has
    /// not reached it lately either.
    suspected: AtomicBool,
    /// When a call to it last succeeded, in milliseconds since the pool started (0: never).
    last_ok: std::sync::atomic::AtomicU64,
}

impl NodeHandle {
    /// A clone of the node's client (cheap: clients share one HTTP/2 connection).
    pub fn client(&self) -> StorageRpc {
        self.client.clone()
    }

    /// Data calls (Mint, Apply, Read) to the node over its call streams, giving up at
    /// `deadline`.
    pub fn calls(&self, deadline: tokio::time::Instant) -> StorageCalls {
        StorageCalls::new(Arc::clone(&self.calls), deadline)
    }

    /// True unless the node is marked down — by this coordinator's failed calls, or by most of
    /// the storage nodes whose failure detectors judge it.
    pub fn is_live(&self) -> bool {
        !self.down.load(Ordering::Acquire) && !self.suspected.load(Ordering::Acquire)
    }
}

/// True for errors that say the node could not be reached or did not answer in time — the only
/// ones counted toward marking it down.
pub fn is_transport_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// What a failed storage call proves about its effect.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The node refused the call before changing anything: its answer carried a
    /// [`Refusal`](pairdb_proto::storage::Refusal).
    Refused(pairdb_proto::storage::Refusal),
    /// The call provably never reached the node, or the node provably did not process it.
    NotSent,
    /// Nothing is proven: the call may have been applied (a broken stream, a proxy's answer,
    /// an error the node sent without a refusal).
    Unknown,
}

/// Classifies a failed storage call. Only what is proven counts: an explicit refusal from the
/// node, or a transport error that shows the request was never processed.
pub fn classify(status: &Status) -> Failure {
    // A status the node sent is built from its trailers and has no source; one carrying a
    // source was made by the client from a transport error, whatever its code.
    if std::error::Error::source(status).is_none()
        && let Some(refusal) = pairdb_proto::refusal(status)
    {
        return Failure::Refused(refusal);
    }
    if never_sent(status) {
        Failure::NotSent
    } else {
        Failure::Unknown
    }
}

/// True when the error proves the request was never processed by the node:
///
/// * the connection could not be established (`tonic::ConnectError`);
/// * the call was still queued on its call stream when the stream failed
///   ([`NotSent`](pairdb_mux::NotSent));
/// * the request was dropped before it was written to a connection (hyper's "canceled": the
///   connection closed while the request was still queued);
/// * the node reset the stream with `REFUSED_STREAM` or sent a `GOAWAY` that excludes it — by
///   HTTP/2 (RFC 9113 §8.7) the server did not process it.
///
/// Only then may a write be retried on another leader without risking a second minting.
pub fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() || err.is::<pairdb_mux::NotSent>() {
            return true;
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_canceled()
        {
            return true;
        }
        if let Some(h2) = err.downcast_ref::<h2::Error>()
            && h2.is_remote()
            && (h2.is_go_away()
                || (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)))
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// When a storage node reported, and whether it judged each peer up.
type PeerReport = (std::time::Instant, HashMap<String, bool>);

/// How long a storage node's report on its peers counts.
const VIEW_FRESHNESS: Duration = Duration::from_secs(3);

/// Clients to every node of the current placement.
pub struct NodePool {
    nodes: RwLock<HashMap<String, Arc<NodeHandle>>>,
    /// Each storage node's latest view of its peers (`up` per peer), with when it came.
    views: std::sync::Mutex<HashMap<String, PeerReport>>,
    /// When the pool started: the origin of [`NodeHandle`]'s success times.
    started: std::time::Instant,
    auth: BearerAuth,
    threshold: u32,
    connect_timeout: Duration,
}

/// The internal token cannot be sent as a header value.
#[derive(Debug, thiserror::Error)]
#[error("internal token is not a valid header value")]
pub struct InvalidToken;

impl NodePool {
    /// An empty pool whose clients send `internal_token`; nodes go down after `threshold`
    /// consecutive transport failures.
    pub fn new(
        internal_token: &str,
        threshold: u32,
        connect_timeout: Duration,
    ) -> Result<Self, InvalidToken> {
        let value = pairdb_proto::internal_credential(internal_token).ok_or(InvalidToken)?;
        Ok(NodePool {
            nodes: RwLock::new(HashMap::new()),
            views: std::sync::Mutex::new(HashMap::new()),
            started: std::time::Instant::now(),
            auth: BearerAuth { value },
            threshold: threshold.max(1),
            connect_timeout,
        })
    }

    /// Asks the storage node at `address` (not necessarily a member) for its health, with the
    /// internal credential, within `timeout`: how an administrator's new node is checked before
    /// it joins.
    pub async fn health_at(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<pairdb_proto::storage::HealthResponse, String> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("invalid address {address:?}: {e}"))?
            .connect_timeout(timeout);
        let call = async {
            let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
            let mut client = StorageClient::with_interceptor(channel, self.auth.clone());
            client
                .health(pairdb_proto::storage::HealthRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| s.message().to_owned())
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| format!("no answer from {address} within {timeout:?}"))?
    }

    /// Makes the pool hold exactly the nodes of `placement`, keeping existing clients (and their
    /// liveness) for nodes whose address did not change.
    pub fn sync(&self, placement: &Placement) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|id, h| placement.address_of(id) == Some(h.address.as_str()));
        for n in &placement.all_nodes() {
            if nodes.contains_key(&n.id) {
                continue;
            }
            let endpoint = match Endpoint::from_shared(format!("http://{}", n.address)) {
                Ok(e) => e
                    .connect_timeout(self.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_while_idle(true),
                Err(e) => {
                    tracing::error!(node = %n.id, error = %e, "invalid storage node address");
                    continue;
                }
            };
            let client =
                StorageClient::with_interceptor(endpoint.connect_lazy(), self.auth.clone())
                    .max_decoding_message_size(64 << 20);
            nodes.insert(
                n.id.clone(),
                Arc::new(NodeHandle {
                    id: n.id.clone(),
                    address: n.address.clone(),
                    calls: Arc::new(crate::calls::streams(client.clone(), STREAMS_PER_NODE)),
                    client,
                    failures: AtomicU32::new(0),
                    down: AtomicBool::new(false),
                    suspected: AtomicBool::new(false),
                    last_ok: std::sync::atomic::AtomicU64::new(0),
                }),
            );
        }
    }

    /// The node `id`, if it is in the pool.
    pub fn get(&self, id: &str) -> Option<Arc<NodeHandle>> {
        self.nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Every node in the pool.
    pub fn all(&self) -> Vec<Arc<NodeHandle>> {
        self.nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// True when `id` is in the pool and not marked down.
    pub fn is_live(&self, id: &str) -> bool {
        self.get(id).is_some_and(|h| h.is_live())
    }

    /// Records what storage node `reporter` judges of its peers (`(id, up)`), then re-judges
    /// every node: one is suspected when more than half of the *other nodes of the pool* report
    /// it down (fresh reports only) and this coordinator has not reached it within
    /// [`VIEW_FRESHNESS`] itself — its own success outweighs any gossip, so storage nodes cut
    /// off from each other, but not from it, stay in use.
    pub fn record_views(&self, reporter: &str, views: Vec<(String, bool)>) {
        let now = std::time::Instant::now();
        let handles = self.all();
        let mut all = self.views.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(reporter.to_owned(), (now, views.into_iter().collect()));
        all.retain(|_, (at, _)| now.duration_since(*at) < VIEW_FRESHNESS);
        let now_ms = self.now_ms();
        for handle in &handles {
            let mut down = 0usize;
            for (from, (_, view)) in all.iter() {
                if *from != handle.id && view.get(&handle.id) == Some(&false) {
                    down += 1;
                }
            }
            let others = handles.len().saturating_sub(1);
            let last_ok = handle.last_ok.load(Ordering::Acquire);
            let reached =
                last_ok > 0 && now_ms.saturating_sub(last_ok) < VIEW_FRESHNESS.as_millis() as u64;
            let suspected = others > 0 && down * 2 > others && !reached;
            if handle.suspected.swap(suspected, Ordering::AcqRel) != suspected {
                if suspected {
                    tracing::warn!(node = %handle.id, down, others, "storage nodes judge it down");
                } else {
                    tracing::info!(node = %handle.id, "storage nodes judge it up again");
                }
            }
        }
    }

    /// Milliseconds since the pool started (at least 1).
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// Records a successful call: the node is live again.
    pub fn record_success(&self, node: &NodeHandle) {
        node.failures.store(0, Ordering::Release);
        node.last_ok.store(self.now_ms(), Ordering::Release);
        if node.suspected.swap(false, Ordering::AcqRel) {
            tracing::info!(node = %node.id, "storage node answers again");
        }
        if node.down.swap(false, Ordering::AcqRel) {
            tracing::info!(node = %node.id, "storage node is back up");
        }
    }

    /// Records a failed call; transport failures count toward marking the node down.
    pub fn record_failure(&self, node: &NodeHandle, status: &Status) {
        if !is_transport_failure(status) {
            return;
        }
        let n = node.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.threshold && !node.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(node = %node.id, failures = n, "storage node marked down");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairdb_core::NodeAddr;

    #[test]
    fn only_refusals_the_node_sent_and_proven_transport_errors_count() {
        use pairdb_proto::storage::RefusalReason;
        let refused = pairdb_proto::refused(Code::Internal, RefusalReason::Engine, "disk", 0);
        assert!(
            matches!(classify(&refused), Failure::Refused(r) if r.reason() == RefusalReason::Engine)
        );
        // Bare codes say nothing, whatever they are.
        for code in [
            Code::Internal,
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::Unknown,
        ] {
            assert_eq!(
                classify(&Status::new(code, "broken")),
                Failure::Unknown,
                "{code:?}"
            );
        }
        // A refusal detail on a status the client made from a transport error is not trusted.
        let mut forged = pairdb_proto::refused(Code::Internal, RefusalReason::Engine, "x", 0);
        forged.set_source(std::sync::Arc::new(std::io::Error::other("reset")));
        assert_eq!(classify(&forged), Failure::Unknown);
        // A connect error proves nothing was sent.
        let mut connect = Status::unavailable("connect");
        connect.set_source(std::sync::Arc::new(tonic::ConnectError(Box::new(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ))));
        assert_eq!(classify(&connect), Failure::NotSent);
        // A stream the server refused was not processed; one it reset otherwise may have been.
        let mut refused_stream = Status::unavailable("refused stream");
        refused_stream.set_source(std::sync::Arc::new(h2::Error::from(
            h2::Reason::REFUSED_STREAM,
        )));
        let mut reset = Status::internal("reset");
        reset.set_source(std::sync::Arc::new(h2::Error::from(
            h2::Reason::INTERNAL_ERROR,
        )));
        assert_eq!(classify(&reset), Failure::Unknown);
        // `h2::Error::from(Reason)` makes a local reset, which proves nothing either.
        assert_eq!(classify(&refused_stream), Failure::Unknown);
    }

    #[tokio::test]
    async fn marks_down_after_threshold_and_back_up() {
        let pool =
            NodePool::new("t", 2, Duration::from_millis(100)).unwrap_or_else(|e| panic!("{e}"));
        pool.sync(&Placement::initial(
            vec![NodeAddr {
                id: "a".into(),
                address: "127.0.0.1:1".into(),
            }],
            4,
        ));
        let h = pool.get("a").unwrap_or_else(|| panic!("node a"));
        let refused = Status::unavailable("refused");
        pool.record_failure(&h, &Status::aborted("stale epoch"));
        pool.record_failure(&h, &refused);
        assert!(pool.is_live("a"));
        pool.record_failure(&h, &refused);
        assert!(!pool.is_live("a"));
        pool.record_success(&h);
        assert!(pool.is_live("a"));
        assert!(!pool.is_live("b"));
    }
}
