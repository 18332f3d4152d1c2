//! Storage nodes on ephemeral ports, clients for them, request builders, and fault injection:
//! an engine and a state file whose calls can be held at a [`Gate`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use pairdb_core::version::{AppliedWrite, WriteRecord};
use pairdb_core::{ApplyOutcome, NodeAddr, Placement, StorageKey, Version};
use pairdb_proto::convert::{placement_to_pb, version_from_pb};
use pairdb_proto::storage as pb;
use pairdb_proto::storage::storage_client::StorageClient;
use pairdb_storage::dir_lock::DirLock;
use pairdb_storage::engine::{
    EngineError, EngineStats, PageLimit, RangeDigest, ScanPage, StorageEngine, TokenRange,
};
use pairdb_storage::memory::MemoryEngine;
use pairdb_storage::node::{DirStateFile, NodeError, NodeState, StateFile};
use pairdb_storage::server;
use pairdb_storage::service::StorageService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

pub const TOKEN: &str = "internal-test-token";
pub const NODE: &str = "n1";

/// Adds `authorization: Bearer <token>` to every call, as coordinators do.
#[derive(Clone)]
pub struct BearerToken(pub MetadataValue<Ascii>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(pairdb_proto::AUTHORIZATION, self.0.clone());
        Ok(request)
    }
}

pub type Client = StorageClient<InterceptedService<Channel, BearerToken>>;

pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

/// A client presenting `token` as its internal credential.
pub async fn client_with_token(addr: SocketAddr, token: &str) -> Client {
    let value = format!("Bearer {token}").parse().expect("ascii token");
    StorageClient::with_interceptor(channel(addr).await, BearerToken(value))
}

pub async fn client(addr: SocketAddr) -> Client {
    client_with_token(addr, TOKEN).await
}

pub fn memory() -> Arc<MemoryEngine> {
    Arc::new(MemoryEngine::new(Duration::from_secs(3600)))
}

/// A storage node serving on an ephemeral port until [`TestNode::stop`].
pub struct TestNode {
    pub addr: SocketAddr,
    pub engine: Arc<dyn StorageEngine>,
    pub state: Arc<NodeState>,
    shutdown: oneshot::Sender<()>,
    served: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestNode {
    /// Node [`NODE`] on the memory engine with its state in `data_dir`.
    pub async fn start(data_dir: &Path) -> TestNode {
        let engine = memory();
        let state = NodeState::open(data_dir, NODE, engine.is_durable()).expect("node state");
        TestNode::start_with(engine, state).await
    }

    /// A node over `engine` and `state`.
    pub async fn start_with(engine: Arc<dyn StorageEngine>, state: NodeState) -> TestNode {
        let state = Arc::new(state);
        let service = StorageService::new(Arc::clone(&engine), Arc::clone(&state), TOKEN);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, stop) = oneshot::channel::<()>();
        let served = tokio::spawn(server::run(service, listener, async move {
            let _ = stop.await;
        }));
        TestNode {
            addr,
            engine,
            state,
            shutdown,
            served,
        }
    }

    /// A node with placement `epoch` installed, and a client for it.
    pub async fn with_epoch(data_dir: &Path, epoch: u64) -> (TestNode, Client) {
        let node = TestNode::start(data_dir).await;
        let c = node.pushed(epoch).await;
        (node, c)
    }

    /// Pushes placement `epoch` and returns a client.
    pub async fn pushed(&self, epoch: u64) -> Client {
        let mut c = client(self.addr).await;
        let held = c
            .push_placement(push(epoch))
            .await
            .expect("push placement")
            .into_inner()
            .epoch;
        assert_eq!(held, epoch);
        c
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        self.served
            .await
            .expect("server task")
            .expect("server stopped cleanly");
    }
}

pub fn placement(epoch: u64) -> Placement {
    Placement {
        epoch,
        ..Placement::initial(
            vec![NodeAddr {
                id: NODE.into(),
                address: "127.0.0.1:1".into(),
            }],
            8,
        )
    }
}

pub fn push(epoch: u64) -> pb::PushPlacementRequest {
    pb::PushPlacementRequest {
        placement: Some(placement_to_pb(&placement(epoch))),
    }
}

pub fn key_ref(namespace: &str, key: &str) -> Option<pb::KeyRef> {
    Some(pb::KeyRef {
        namespace: namespace.into(),
        key: key.as_bytes().to_vec(),
    })
}

pub fn storage_key(key: &str) -> StorageKey {
    StorageKey::new("t", key.as_bytes()).expect("key")
}

pub fn read(epoch: u64, key: &str) -> pb::ReadRequest {
    pb::ReadRequest {
        epoch,
        key: key_ref("t", key),
    }
}

pub fn put(epoch: u64, key: &str, value: &str) -> pb::MintRequest {
    pb::MintRequest {
        epoch,
        key: key_ref("t", key),
        value: value.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        ..pb::MintRequest::default()
    }
}

pub fn with_context(mut request: pb::MintRequest, seen: &Version) -> pb::MintRequest {
    request.context = Some(pairdb_proto::convert::context_to_pb(&seen.context()));
    request
}

pub async fn mint_version(c: &mut Client, request: pb::MintRequest) -> (Version, pb::MintResponse) {
    let response = c.mint(request).await.expect("mint").into_inner();
    let version = version_from_pb(response.version.clone().expect("version")).expect("valid");
    (version, response)
}

pub fn code<T: std::fmt::Debug>(result: Result<T, Status>) -> Code {
    result.expect_err("call should fail").code()
}

/// The refusal reason a failed call carried; panics when the call succeeded or carried none.
pub fn refusal<T: std::fmt::Debug>(result: Result<T, Status>) -> pb::RefusalReason {
    let status = result.expect_err("call should fail");
    pairdb_proto::refusal(&status)
        .unwrap_or_else(|| panic!("no refusal in {status:?}"))
        .reason()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Holds calls that pass it while armed, until released; counts the calls held.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    armed: bool,
    entered: usize,
}

impl Gate {
    /// From now on, calls passing the gate wait until [`release`](Self::release).
    fn arm(&self) {
        self.lock().armed = true;
    }

    /// Lets every held call, and every later one, through.
    pub fn release(&self) {
        self.lock().armed = false;
        self.changed.notify_all();
    }

    /// Arms the gate and returns a guard that releases it when dropped — also when a failing
    /// assertion unwinds, so held blocking calls never keep the test's runtime from shutting down.
    pub fn arm_until_dropped(self: &Arc<Self>) -> Released {
        self.arm();
        Released(Arc::clone(self))
    }

    /// Called by the instrumented code: waits here while the gate is armed.
    fn pass(&self) {
        let mut state = self.lock();
        if !state.armed {
            return;
        }
        state.entered += 1;
        self.changed.notify_all();
        while state.armed {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Calls held so far.
    pub fn entered_count(&self) -> usize {
        self.lock().entered
    }

    /// Waits (off the async workers) until `n` calls in all have been held.
    pub async fn entered(self: &Arc<Self>, n: usize) {
        let gate = Arc::clone(self);
        let wait = tokio::task::spawn_blocking(move || {
            let mut state = gate.lock();
            while state.entered < n {
                state = gate
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        });
        // A bound on a hang, not a timing assertion.
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("the gated call never came")
            .expect("wait task");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Releases its gate when dropped.
pub struct Released(Arc<Gate>);

impl Drop for Released {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The memory engine, with `apply` held at a gate while it is armed.
pub struct GatedEngine {
    pub inner: Arc<MemoryEngine>,
    pub apply_gate: Arc<Gate>,
}

impl GatedEngine {
    pub fn new() -> Arc<GatedEngine> {
        Arc::new(GatedEngine {
            inner: memory(),
            apply_gate: Arc::default(),
        })
    }
}

impl StorageEngine for GatedEngine {
    fn get(&self, key: &StorageKey) -> Result<Option<Version>, EngineError> {
        self.inner.get(key)
    }
    fn apply(
        &self,
        key: &StorageKey,
        incoming: Version,
        record: Option<WriteRecord>,
    ) -> Result<(ApplyOutcome, Version), EngineError> {
        self.apply_gate.pass();
        self.inner.apply(key, incoming, record)
    }
    fn applied(&self, key: &StorageKey, idem: &str) -> Result<Option<AppliedWrite>, EngineError> {
        self.inner.applied(key, idem)
    }
    fn scan(
        &self,
        range: &TokenRange,
        after: Option<&StorageKey>,
        limit: PageLimit,
    ) -> Result<ScanPage, EngineError> {
        self.inner.scan(range, after, limit)
    }
    fn digest(&self, range: &TokenRange) -> Result<RangeDigest, EngineError> {
        self.inner.digest(range)
    }
    fn delete_range(&self, range: &TokenRange) -> Result<u64, EngineError> {
        self.inner.delete_range(range)
    }
    fn set_repaired_until(&self, range: &TokenRange, until: u64) -> Result<(), EngineError> {
        self.inner.set_repaired_until(range, until)
    }
    fn flush(&self) -> Result<(), EngineError> {
        self.inner.flush()
    }
    fn stats(&self) -> EngineStats {
        self.inner.stats()
    }
    fn is_durable(&self) -> bool {
        false
    }
}

/// `node.json` with writes held at a gate while it is armed (an fsync that takes forever), and
/// a second gate passed once each write is done.
#[derive(Debug)]
pub struct GatedStateFile {
    inner: DirStateFile,
    pub before_write: Arc<Gate>,
    pub after_write: Arc<Gate>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

impl StateFile for GatedStateFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn read(&self) -> Result<Option<Vec<u8>>, NodeError> {
        self.inner.read()
    }
    fn replace(&self, bytes: &[u8]) -> Result<(), NodeError> {
        self.before_write.pass();
        let written = self.inner.replace(bytes);
        self.after_write.pass();
        written
    }
}

/// Node state in `data_dir` whose file writes pass the returned gates.
pub fn gated_state(data_dir: &Path) -> (NodeState, Arc<Gate>, Arc<Gate>) {
    let lock = DirLock::acquire(data_dir).expect("lock");
    let before_write = Arc::new(Gate::default());
    let after_write = Arc::new(Gate::default());
    let file = GatedStateFile {
        inner: DirStateFile::new(data_dir),
        before_write: Arc::clone(&before_write),
        after_write: Arc::clone(&after_write),
    };
    let state = NodeState::open_with(Some(lock), Box::new(file), NODE, false).expect("node state");
    (state, before_write, after_write)
}
