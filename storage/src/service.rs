//! The storage-node gRPC service.
//!
//! Every RPC is checked in the same order before it touches data:
//!
//! 1. **Credential.** The `authorization` metadata must be `Bearer <internal token>`, compared in
//!    constant time; anything else is `UNAUTHENTICATED`. A storage port is never open to anyone
//!    but coordinators and peers.
//! 2. **Input.** Missing fields, namespaces over 255 bytes and non-canonical clocks are
//!    `INVALID_ARGUMENT`. Nothing from the wire can make the service panic.
//! 3. **Placement epoch** (data RPCs: Mint, Apply, Read, Scan, Digest). Equal to the node's newest
//!    installed epoch, or the call is refused: an older epoch is `ABORTED` (retryable — the
//!    caller refreshes its placement), a newer one, or none installed, is `FAILED_PRECONDITION`
//!    (the caller must push its placement first). Mint and Apply check it under the key's lock
//!    and stay admitted until their engine call is done, so a placement push never lands in the
//!    middle of one: once a push is answered, no call with an older epoch changes anything.
//!
//! **Refusals.** Every error the service answers before it changed anything carries a
//! [`pb::Refusal`] in its status details ([`pairdb_proto::refused`]) — the checks above, a
//! version from too far in the future, an idempotency key reused for another write, and engine
//! failures (an engine error guarantees nothing was stored). A caller may retry a refused call
//! elsewhere; any other error (a broken stream, a panic in the engine) may have been applied.
//!
//! Engine calls may block on I/O, so they run on tokio's blocking pool, never on the async
//! workers — except point calls of an engine that declares they never block
//! ([`StorageEngine::point_calls_block`]), and reads the engine can answer from memory alone
//! ([`StorageEngine::get_in_memory`]), which run inline. Engine failures are logged without
//! keys or values.

use std::sync::Arc;
use std::time::Duration;

use pairdb_core::hlc::DEFAULT_MAX_AHEAD_MS;
use pairdb_core::version::{self, AppliedWrite, MintRequest, WriteRecord};
use pairdb_core::{Actor, ApplyOutcome, Hlc, StorageKey, Version};
use pairdb_proto::convert::{self, ConvertError};
use pairdb_proto::refused;
use pairdb_proto::storage as pb;
use pairdb_proto::storage::RefusalReason;
use pairdb_proto::storage::storage_server::Storage;
use subtle::ConstantTimeEq;
use tonic::{Code, Request, Response, Status};

use crate::engine::{EngineError, PageLimit, StorageEngine, TokenRange};
use crate::handoff::Handoff;
use crate::node::{EpochMismatch, NodeState};

/// Key locks striping the key space; two keys share a lock only when their tokens collide
/// modulo this count.
pub const KEY_LOCK_STRIPES: usize = 1024;
/// Scan page size when a request asks for 0 entries.
pub const DEFAULT_SCAN_LIMIT: usize = 100;
/// Largest scan page served, whatever the request asks.
pub const MAX_SCAN_LIMIT: usize = 1000;
/// Most entries in one ingest request.
pub const MAX_INGEST_ENTRIES: usize = 1000;
/// Entries of one ingest request stored side by side.
const INGEST_PARALLEL: usize = 32;
/// Byte budget of a scan page: half the gRPC message limit, so a page always fits a response
/// (a page holds one entry at least, and one entry is far below the limit).
pub const SCAN_PAGE_BYTES: usize = crate::server::MAX_MESSAGE_BYTES / 2;

/// The storage-node service: checks credentials and epochs, mints as leader under per-key locks,
/// and applies, reads, scans and digests through its [`StorageEngine`].
///
/// Cheap to clone: clones share one node's state (a call stream runs each call on a clone).
#[derive(Clone)]
pub struct StorageService {
    inner: Arc<Inner>,
}

/// What every clone of a [`StorageService`] shares.
#[derive(Clone)]
struct Inner {
    /// The clock actor minted as: `(node id, this run's incarnation)`.
    actor: Actor,
    engine: Arc<dyn StorageEngine>,
    node: Arc<NodeState>,
    /// `Bearer <token>`; `None` when the token is empty, which then refuses every call.
    expected_authorization: Option<Vec<u8>>,
    hlc: Arc<Hlc>,
    /// How far ahead of wall time an applied version's timestamp may be.
    max_ahead_ms: u64,
    key_locks: Arc<[Arc<tokio::sync::Mutex<()>>]>,
    /// The span each call of a call stream runs in (see [`StorageService::with_call_spans`]).
    call_span: Option<CallSpan>,
    /// Turns true when the server stops: call streams then end (see [`crate::calls`]).
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Hints and peers (see [`crate::handoff`]); `None`: hints are refused.
    handoff: Option<Arc<Handoff>>,
}

/// Makes the span a call of a call stream runs in, from its RPC name (`Mint`, `Apply`, `Read`)
/// and the caller's `traceparent` ("" for none).
pub type CallSpan = Arc<dyn Fn(&'static str, &str) -> tracing::Span + Send + Sync>;

impl std::fmt::Debug for StorageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageService")
            .field("node_id", &self.inner.node.node_id())
            .field("incarnation", &self.inner.node.incarnation())
            .finish_non_exhaustive()
    }
}

/// A key's lock and the call's admission, held until the call's engine work is done — moved
/// into that work, so a call cancelled by its caller (a timeout, a reset stream) still holds them
/// until its engine call returns: no other mint of the key, and no newer placement, can overtake
/// it.
struct Held {
    _key_lock: tokio::sync::OwnedMutexGuard<()>,
    _admission: crate::node::Admission,
}

/// What a leader's mint came to.
enum Minted {
    /// A new version, stored.
    New {
        version: Version,
        conflict: bool,
        record: Option<WriteRecord>,
    },
    /// The idempotency key already produced this write.
    Earlier(AppliedWrite),
    /// The idempotency key already produced a different write on this key.
    KeyReused,
}

impl StorageService {
    /// A service for the node `node` describes, over `engine`, accepting only callers presenting
    /// `internal_token`. An empty token accepts nobody.
    pub fn new(engine: Arc<dyn StorageEngine>, node: Arc<NodeState>, internal_token: &str) -> Self {
        let expected_authorization =
            (!internal_token.is_empty()).then(|| format!("Bearer {internal_token}").into_bytes());
        StorageService {
            inner: Arc::new(Inner {
                actor: node.actor(),
                engine,
                node,
                expected_authorization,
                hlc: Arc::new(Hlc::new()),
                max_ahead_ms: DEFAULT_MAX_AHEAD_MS,
                key_locks: (0..KEY_LOCK_STRIPES)
                    .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                    .collect(),
                call_span: None,
                // Never stops until `server::run_layered` gives it its server's signal.
                stopping: tokio::sync::watch::channel(false).1,
                handoff: None,
            }),
        }
    }

    /// Keeps hints in, and reports peers from, `handoff`; the server runs its tasks.
    pub fn with_handoff(mut self, handoff: Arc<Handoff>) -> Self {
        Arc::make_mut(&mut self.inner).handoff = Some(handoff);
        self
    }

    /// Issues timestamps only above `floor` (the clock a previous run of this node recorded:
    /// see [`crate::clock_file`]).
    pub fn with_clock_floor(self, floor: u64) -> Self {
        self.inner.hlc.advance_past(floor);
        self
    }

    /// The node's hybrid logical clock.
    pub fn clock(&self) -> &Arc<Hlc> {
        &self.inner.hlc
    }

    /// The node's hints and peers, if it keeps them.
    pub fn handoff(&self) -> Option<&Arc<Handoff>> {
        self.inner.handoff.as_ref()
    }

    /// Runs each call of a call stream in the span `span` makes (the binary's: exported, a child
    /// of the caller's `traceparent`), as a unary call runs in its trace layer's. Without it,
    /// calls run in a plain `call` span.
    pub fn with_call_spans(mut self, span: CallSpan) -> Self {
        Arc::make_mut(&mut self.inner).call_span = Some(span);
        self
    }

    /// Ends call streams once `stopping` turns true (the server's shutdown signal).
    pub(crate) fn stopping_on(mut self, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        Arc::make_mut(&mut self.inner).stopping = stopping;
        self
    }

    /// What a call stream over this service needs: its call spans and its stop signal.
    pub fn call_hooks(&self) -> crate::calls::CallHooks {
        crate::calls::CallHooks {
            span: self.inner.call_span.clone(),
            stopping: self.inner.stopping.clone(),
        }
    }

    /// Refuses applied versions whose timestamp lies more than `skew` ahead of this node's wall
    /// clock (default [`DEFAULT_MAX_AHEAD_MS`]), so no peer can drag this node's clock into the
    /// future.
    pub fn with_max_clock_skew(mut self, skew: Duration) -> Self {
        Arc::make_mut(&mut self.inner).max_ahead_ms =
            u64::try_from(skew.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Refuses calls without the internal credential.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get(pairdb_proto::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let accepted = match (&self.inner.expected_authorization, presented) {
            (Some(expected), Some(presented)) => bool::from(expected.as_slice().ct_eq(presented)),
            _ => false,
        };
        if accepted {
            Ok(())
        } else {
            Err(refused(
                Code::Unauthenticated,
                RefusalReason::Unauthenticated,
                "missing or invalid internal credential",
                0,
            ))
        }
    }

    /// Takes the lock serializing mints and applies of `key` on this node. The guard is owned,
    /// so it can travel with the call's engine work (see [`Held`]).
    async fn lock_key(&self, key: &StorageKey) -> tokio::sync::OwnedMutexGuard<()> {
        let stripe = (key.token % KEY_LOCK_STRIPES as u64) as usize;
        #[expect(
            clippy::indexing_slicing,
            reason = "stripe < KEY_LOCK_STRIPES == key_locks.len()"
        )]
        let lock = Arc::clone(&self.inner.key_locks[stripe]);
        lock.lock_owned().await
    }

    /// Takes the key's lock, then admits the call at `epoch` (checked under the lock).
    async fn hold(&self, key: &StorageKey, epoch: u64) -> Result<Held, Status> {
        let key_lock = self.lock_key(key).await;
        let admission = self.inner.node.admit(epoch).await.map_err(epoch_refusal)?;
        Ok(Held {
            _key_lock: key_lock,
            _admission: admission,
        })
    }

    /// Runs a range call on the engine off the async workers. An engine error becomes a
    /// refusal (the engine stored nothing); a panic does not, since it may have stored something.
    async fn blocking<T, F>(&self, rpc: &'static str, call: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&dyn StorageEngine) -> Result<T, EngineError> + Send + 'static,
    {
        let engine = Arc::clone(&self.inner.engine);
        match tokio::task::spawn_blocking(move || call(engine.as_ref())).await {
            Ok(result) => result.map_err(|error| engine_refusal(rpc, &error)),
            Err(error) => {
                tracing::error!(rpc, %error, "storage engine call panicked");
                Err(Status::internal("storage engine call failed"))
            }
        }
    }

    /// Runs a point call: inline when the engine says its point calls never block, else like
    /// [`blocking`](Self::blocking).
    async fn point<T, F>(&self, rpc: &'static str, call: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&dyn StorageEngine) -> Result<T, EngineError> + Send + 'static,
    {
        if self.inner.engine.point_calls_block() {
            self.blocking(rpc, call).await
        } else {
            call(self.inner.engine.as_ref()).map_err(|error| engine_refusal(rpc, &error))
        }
    }

    /// Mints as leader under the key's lock, or returns the write an earlier request with the
    /// same idempotency key produced.
    async fn mint_locked(
        &self,
        epoch: u64,
        key: StorageKey,
        request: MintRequest,
    ) -> Result<pb::MintResponse, Status> {
        let held = self.hold(&key, epoch).await?;
        let actor = self.inner.actor.clone();
        let hlc = Arc::clone(&self.inner.hlc);
        let minted = self
            .point("mint", move |engine| {
                let _held = held;
                mint_in(engine, &key, request, &actor, &hlc)
            })
            .await?;
        match minted {
            Minted::New {
                version,
                conflict,
                record,
            } => Ok(pb::MintResponse {
                version: Some(convert::version_into_pb(version)),
                conflict,
                deduplicated: false,
                record: record.as_ref().map(convert::write_record_to_pb),
            }),
            Minted::Earlier(write) => Ok(pb::MintResponse {
                version: Some(convert::version_into_pb(write.version)),
                conflict: write.record.conflict,
                deduplicated: true,
                record: Some(convert::write_record_to_pb(&write.record)),
            }),
            Minted::KeyReused => Err(refused(
                Code::AlreadyExists,
                RefusalReason::IdempotencyKeyReused,
                "the idempotency key was already used for a different write on this key",
                0,
            )),
        }
    }
}

/// The leader's work on the engine, under the key's lock: deduplicate by idempotency key, or
/// mint over the stored version and store the result with its write record.
fn mint_in(
    engine: &dyn StorageEngine,
    key: &StorageKey,
    request: MintRequest,
    actor: &Actor,
    hlc: &Hlc,
) -> Result<Minted, EngineError> {
    let stored = engine.get(key)?;
    // Only a write with an idempotency key is recorded, so only its fingerprint is needed.
    let fingerprint = (!request.idempotency_key.is_empty()).then(|| request.fingerprint());
    if let Some(fingerprint) = fingerprint {
        if let Some(earlier) = engine.applied(key, &request.idempotency_key)? {
            return Ok(if earlier.record.fingerprint == fingerprint {
                Minted::Earlier(earlier)
            } else {
                Minted::KeyReused
            });
        }
        // The index entry expired or was evicted, but the stored version still names the key:
        // judge by what it keeps (it does not keep the context).
        if let Some(s) = &stored
            && s.idempotency_key == request.idempotency_key
        {
            let same = s.tombstone == request.tombstone
                && (s.tombstone
                    || (s.value == request.value && s.content_type == request.content_type));
            return Ok(if same {
                // What the first attempt reported is lost with its entry: no conflict is claimed.
                Minted::Earlier(AppliedWrite {
                    version: s.clone(),
                    record: WriteRecord {
                        fingerprint,
                        conflict: false,
                    },
                    outcome: ApplyOutcome::Applied,
                    concurrent: false,
                })
            } else {
                Minted::KeyReused
            });
        }
    }
    let (version, conflict) = version::mint(stored.as_ref(), request, actor, hlc);
    let record = fingerprint.map(|fingerprint| WriteRecord {
        fingerprint,
        conflict,
    });
    engine.apply(key, version.clone(), record)?;
    Ok(Minted::New {
        version,
        conflict,
        record,
    })
}

/// A replica's work on the engine, under the key's lock: stores the resolution, and reports what
/// applying the write did — for a write this replica already recorded (a retry being replicated
/// again), what its first apply did, so the retry is answered as the first attempt was.
fn apply_in(
    engine: &dyn StorageEngine,
    key: &StorageKey,
    incoming: Version,
    record: Option<WriteRecord>,
) -> Result<(ApplyOutcome, bool), EngineError> {
    let first = match &record {
        Some(r) if !incoming.idempotency_key.is_empty() => {
            engine.first_apply(key, &incoming.idempotency_key, &r.fingerprint)?
        }
        _ => None,
    };
    let incoming_clock = incoming.clock.clone();
    let (outcome, kept) = engine.apply(key, incoming, record)?;
    Ok(match first {
        Some(first) => first,
        None => (
            outcome,
            version::met_concurrent(outcome, &incoming_clock, &kept),
        ),
    })
}

/// The refusal of a call the engine failed: it stored nothing.
fn engine_refusal(rpc: &'static str, error: &EngineError) -> Status {
    tracing::error!(rpc, %error, "storage engine failed");
    refused(Code::Internal, RefusalReason::Engine, error.to_string(), 0)
}

/// The refusal of a call whose epoch is not the node's.
fn epoch_refusal(mismatch: EpochMismatch) -> Status {
    match mismatch {
        EpochMismatch::Stale { held, .. } => refused(
            Code::Aborted,
            RefusalReason::StaleEpoch,
            mismatch.to_string(),
            held,
        ),
        EpochMismatch::Closing => refused(
            Code::Unavailable,
            RefusalReason::ShuttingDown,
            mismatch.to_string(),
            0,
        ),
        _ => refused(
            Code::FailedPrecondition,
            RefusalReason::EpochNotInstalled,
            mismatch.to_string(),
            mismatch.held(),
        ),
    }
}

/// The refusal of a malformed request.
fn invalid(detail: impl Into<String>) -> Status {
    refused(
        Code::InvalidArgument,
        RefusalReason::InvalidArgument,
        detail,
        0,
    )
}

fn invalid_field(field: &str, error: &ConvertError) -> Status {
    invalid(format!("{field}: {error}"))
}

/// The stored key a `KeyRef` addresses.
fn storage_key(key: Option<pb::KeyRef>) -> Result<StorageKey, Status> {
    let key = key.ok_or_else(|| invalid("missing key"))?;
    StorageKey::new(&key.namespace, &key.key).map_err(|e| invalid(format!("key: {e}")))
}

fn token_range(range: Option<pb::TokenRange>) -> Result<TokenRange, Status> {
    let range = range.ok_or_else(|| invalid("missing range"))?;
    if range.namespace.len() > 255 {
        return Err(invalid("range: namespace longer than 255 bytes"));
    }
    if range.start > range.end {
        return Err(invalid("range: start after end (split wrapping ranges)"));
    }
    Ok(TokenRange {
        namespace: range.namespace,
        start: range.start,
        end: range.end,
    })
}

/// A placement with its rings, to check ranges against.
struct Owned {
    placement: Arc<pairdb_core::Placement>,
    ring: pairdb_core::Ring,
    next: Option<pairdb_core::Ring>,
}

impl Owned {
    fn of(placement: Arc<pairdb_core::Placement>) -> Owned {
        Owned {
            ring: placement.ring(),
            next: placement.next_ring(),
            placement,
        }
    }

    /// Whether `node` holds any part of `range`: a natural replica of it, or one the
    /// placement's transition adds. Such a range is never dropped, whoever asks.
    fn owns(&self, node: &str, range: &TokenRange) -> bool {
        let holds = |ring: &pairdb_core::Ring, rf: Option<&u32>| {
            rf.is_some_and(|rf| ring.holds_any(node, *rf as usize, range.start, range.end))
        };
        let natural = holds(&self.ring, self.placement.tenants.get(&range.namespace));
        let pending = match (&self.next, &self.placement.transition) {
            (Some(ring), Some(t)) => holds(ring, t.tenants.get(&range.namespace)),
            _ => false,
        };
        natural || pending
    }
}

fn outcome_to_pb(outcome: ApplyOutcome) -> pb::ApplyOutcome {
    match outcome {
        ApplyOutcome::Applied => pb::ApplyOutcome::Applied,
        ApplyOutcome::Merged => pb::ApplyOutcome::Merged,
        ApplyOutcome::Superseded => pb::ApplyOutcome::Superseded,
    }
}

#[tonic::async_trait]
impl Storage for StorageService {
    type CallsStream = crate::calls::ReplyStream;

    /// Serves a call stream ([`crate::calls`]): refused `UNAUTHENTICATED` without the internal
    /// credential; each call then runs as its unary RPC.
    async fn calls(
        &self,
        request: Request<tonic::Streaming<pb::CallBatch>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        self.authenticate(&request)?;
        Ok(Response::new(crate::calls::serve(
            self.clone(),
            request,
            self.call_hooks(),
        )))
    }

    /// Mints as the key's leader. Repeating an idempotency key with the same write returns the
    /// version the first request produced, with `deduplicated` set and what it reported, and
    /// mints nothing; repeating it with a different write is refused (`ALREADY_EXISTS`).
    async fn mint(
        &self,
        request: Request<pb::MintRequest>,
    ) -> Result<Response<pb::MintResponse>, Status> {
        self.authenticate(&request)?;
        let req = request.into_inner();
        let key = storage_key(req.key)?;
        let context = req
            .context
            .map(convert::context_from_pb)
            .transpose()
            .map_err(|e| invalid_field("context", &e))?;
        let mint = MintRequest {
            tombstone: req.tombstone,
            value: req.value,
            content_type: req.content_type,
            context,
            idempotency_key: req.idempotency_key,
        };
        self.mint_locked(req.epoch, key, mint)
            .await
            .map(Response::new)
    }

    /// Stores `resolve(stored, incoming)`, recording the write when the request carries its
    /// record, and advances this node's HLC past the incoming timestamp so later mints here
    /// exceed it. A timestamp further ahead of the wall clock than the allowed skew is refused
    /// (`FAILED_PRECONDITION`) and logged. Takes the key's lock, so a version arriving while this
    /// node mints the same key lands before or after the mint, never between its read and write.
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        self.authenticate(&request)?;
        let req = request.into_inner();
        let key = storage_key(req.key)?;
        let incoming: Version = req
            .version
            .ok_or_else(|| invalid("missing version"))
            .and_then(|v| convert::version_from_pb(v).map_err(|e| invalid_field("version", &e)))?;
        let record = req
            .record
            .map(convert::write_record_from_pb)
            .transpose()
            .map_err(|e| invalid_field("record", &e))?;
        if incoming.clock.latest() > incoming.timestamp {
            return Err(invalid(
                "version: its clock records an event later than its timestamp",
            ));
        }
        let held = self.hold(&key, req.epoch).await?;
        if let Err(skew) = self
            .inner
            .hlc
            .observe(incoming.timestamp, self.inner.max_ahead_ms)
        {
            tracing::warn!(minted_by = %incoming.minted_by, %skew,
                "refused a version from the future: the minting node's clock is ahead");
            return Err(refused(
                Code::FailedPrecondition,
                RefusalReason::ClockSkew,
                skew.to_string(),
                0,
            ));
        }
        let (outcome, concurrent) = self
            .point("apply", move |engine| {
                let _held = held;
                apply_in(engine, &key, incoming, record)
            })
            .await?;
        Ok(Response::new(pb::ApplyResponse {
            concurrent,
            outcome: outcome_to_pb(outcome).into(),
        }))
    }

    /// The stored version of a key, tombstones included; none if the node holds nothing.
    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        self.authenticate(&request)?;
        let req = request.into_inner();
        let key = storage_key(req.key)?;
        self.inner
            .node
            .check_epoch(req.epoch)
            .map_err(epoch_refusal)?;
        // Inline when the engine can answer from memory; a read that needs the disk goes to the
        // blocking pool.
        let version = match self.inner.engine.get_in_memory(&key) {
            Some(answer) => answer.map_err(|error| engine_refusal("read", &error))?,
            None => self.point("read", move |engine| engine.get(&key)).await?,
        };
        Ok(Response::new(pb::ReadResponse {
            version: version.map(convert::version_into_pb),
        }))
    }

    /// One page of a namespace's token range strictly after the cursor: `limit` entries (100 when
    /// 0, at most 1000) and at most [`SCAN_PAGE_BYTES`] (one entry at least).
    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        self.authenticate(&request)?;
        let req = request.into_inner();
        let range = token_range(req.range)?;
        self.inner
            .node
            .check_epoch(req.epoch)
            .map_err(epoch_refusal)?;
        let after = req.after.map(|c| StorageKey {
            namespace: range.namespace.clone(),
            token: c.token,
            key: c.key,
        });
        let limit = PageLimit {
            entries: match req.limit as usize {
                0 => DEFAULT_SCAN_LIMIT,
                n => n.min(MAX_SCAN_LIMIT),
            },
            bytes: SCAN_PAGE_BYTES,
        };
        let page = self
            .blocking("scan", move |engine| {
                engine.scan(&range, after.as_ref(), limit)
            })
            .await?;
        Ok(Response::new(pb::ScanResponse {
            entries: page
                .entries
                .into_iter()
                .map(|(k, v)| pb::ScanEntry {
                    token: k.token,
                    key: k.key,
                    version: Some(convert::version_into_pb(v)),
                })
                .collect(),
            more: page.more,
        }))
    }

    /// The digest of a namespace's token range.
    async fn digest(
        &self,
        request: Request<pb::DigestRequest>,
    ) -> Result<Response<pb::DigestResponse>, Status> {
        self.authenticate(&request)?;
        let req = request.into_inner();
        let range = token_range(req.range)?;
        self.inner
            .node
            .check_epoch(req.epoch)
            .map_err(epoch_refusal)?;
        // Read before the snapshot: what this node mints after it is stamped later.
        let clock = self.inner.hlc.now();
        let digest = self
            .blocking("digest", move |engine| engine.digest(&range))
            .await?;
        Ok(Response::new(pb::DigestResponse {
            digest: digest.digest.to_vec(),
            keys: digest.keys,
            clock,
        }))
    }

    /// Stores streamed versions: each entry as the resolution of what the node holds and the
    /// version, under the key's lock (a migration or repair never overwrites a newer write). At
    /// most [`MAX_INGEST_ENTRIES`] entries; a malformed entry refuses the whole request before
    /// anything is stored.
    async fn ingest(
        &self,
        request: Request<pb::IngestRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        self.authenticate(&request)?;
        let req = request.into_inner();
        if req.entries.len() > MAX_INGEST_ENTRIES {
            return Err(invalid("ingest: more than 1000 entries"));
        }
        if req.namespace.len() > 255 {
            return Err(invalid("ingest: namespace longer than 255 bytes"));
        }
        let mut decoded = Vec::with_capacity(req.entries.len());
        for (i, entry) in req.entries.into_iter().enumerate() {
            let key = StorageKey::new(&req.namespace, &entry.key)
                .map_err(|e| invalid(format!("ingest: entry {i}: {e}")))?;
            if key.token != entry.token {
                return Err(invalid(format!(
                    "ingest: entry {i}: token does not match its key"
                )));
            }
            let version = entry
                .version
                .ok_or_else(|| invalid("ingest: entry without a version"))
                .and_then(|v| {
                    convert::version_from_pb(v).map_err(|e| invalid_field("ingest version", &e))
                })?;
            if version.clock.latest() > version.timestamp {
                return Err(invalid(format!(
                    "ingest: entry {i}: its clock records an event later than its timestamp"
                )));
            }
            decoded.push((key, version));
        }
        // A version from a node whose clock ran ahead is refused as a live apply would be — the
        // whole request, before anything is stored, so the range is streamed again rather than
        // counted done.
        for (_, version) in &decoded {
            if let Err(skew) = self
                .inner
                .hlc
                .observe(version.timestamp, self.inner.max_ahead_ms)
            {
                return Err(refused(
                    Code::FailedPrecondition,
                    RefusalReason::ClockSkew,
                    format!("ingest: {skew}"),
                    0,
                ));
            }
        }
        // Entries side by side, each under its key's lock: their syncs are committed together.
        let mut applied = 0u64;
        let mut entries = decoded.into_iter();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < INGEST_PARALLEL {
                let Some((key, version)) = entries.next() else {
                    break;
                };
                let service = self.clone();
                let epoch = req.epoch;
                running.spawn(async move {
                    let held = service.hold(&key, epoch).await?;
                    service
                        .point("ingest", move |engine| {
                            let _held = held;
                            apply_in(engine, &key, version, None)
                        })
                        .await
                        .map(|(outcome, _)| outcome == ApplyOutcome::Applied)
                });
            }
            match running.join_next().await {
                None => break,
                Some(Ok(Ok(stored))) => applied += u64::from(stored),
                // The rest are cancelled (an engine call under way finishes under its lock).
                Some(Ok(Err(status))) => return Err(status),
                Some(Err(_)) => return Err(Status::internal("ingest task failed")),
            }
        }
        Ok(Response::new(pb::IngestResponse { applied }))
    }

    /// Drops every key of the given ranges (ranges the node no longer owns).
    async fn drop_ranges(
        &self,
        request: Request<pb::DropRangesRequest>,
    ) -> Result<Response<pb::DropRangesResponse>, Status> {
        self.authenticate(&request)?;
        let req = request.into_inner();
        let ranges = req
            .ranges
            .into_iter()
            .map(|r| token_range(Some(r)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut dropped = 0;
        // The rings each range is checked against, built once per placement seen.
        let mut rings: Option<Owned> = None;
        // One range at a time, each admitted on its own: a placement push waits for one range's
        // deletion at most, not the whole batch's.
        for range in ranges {
            let admission = self
                .inner
                .node
                .admit(req.epoch)
                .await
                .map_err(epoch_refusal)?;
            if let Some(placement) = self.inner.node.placement()
                && rings
                    .as_ref()
                    .is_none_or(|r| r.placement.epoch != placement.epoch)
            {
                rings = Some(Owned::of(placement));
            }
            if let Some(r) = &rings
                && r.owns(self.inner.node.node_id(), &range)
            {
                let epoch = r.placement.epoch;
                return Err(refused(
                    Code::FailedPrecondition,
                    RefusalReason::InvalidArgument,
                    format!(
                        "drop_ranges: this node still holds part of {} [{}, {}] at epoch {epoch}",
                        range.namespace, range.start, range.end
                    ),
                    epoch,
                ));
            }
            dropped += self
                .blocking("drop_ranges", move |engine| {
                    let _admission = admission;
                    engine.delete_range(&range)
                })
                .await?;
        }
        Ok(Response::new(pb::DropRangesResponse { dropped }))
    }

    /// Installs a newer placement, persisted before the answer; returns the newest epoch held.
    /// Needs the credential but no epoch: this is how epochs advance. Data calls go on while the
    /// placement is persisted; once this answers, none with an older epoch is in flight.
    async fn push_placement(
        &self,
        request: Request<pb::PushPlacementRequest>,
    ) -> Result<Response<pb::PushPlacementResponse>, Status> {
        self.authenticate(&request)?;
        let placement = request
            .into_inner()
            .placement
            .map(convert::placement_from_pb)
            .ok_or_else(|| invalid("missing placement"))?;
        if placement.epoch == 0 {
            return Err(invalid("placement epoch must be at least 1"));
        }
        // In a task of its own: a push cancelled by its caller still publishes what it persisted.
        let node = Arc::clone(&self.inner.node);
        let epoch = tokio::spawn(async move { node.install(placement).await })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "placement install task failed");
                Status::internal("placement install task failed")
            })?
            .map_err(|e| {
                tracing::error!(error = %e, "cannot persist placement");
                Status::internal(e.to_string())
            })?;
        Ok(Response::new(pb::PushPlacementResponse { epoch }))
    }

    /// This node's id, incarnation, newest epoch (0 when none is installed) and the approximate
    /// bytes its engine stores.
    async fn health(
        &self,
        request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        self.authenticate(&request)?;
        let stats = self.blocking("health", |engine| Ok(engine.stats())).await?;
        let (peers, hints_pending) = match &self.inner.handoff {
            Some(h) => (
                h.peers
                    .views()
                    .into_iter()
                    .map(|v| pb::PeerView {
                        node_id: v.node_id,
                        up: v.up,
                        phi: v.phi,
                    })
                    .collect(),
                h.hints.counts().pending,
            ),
            None => (Vec::new(), 0),
        };
        Ok(Response::new(pb::HealthResponse {
            node_id: self.inner.node.node_id().to_owned(),
            incarnation: self.inner.node.incarnation(),
            epoch: self.inner.node.epoch().unwrap_or(0),
            load_bytes: stats.bytes,
            peers,
            hints_pending,
        }))
    }

    /// Records a repaired range's watermark; watermarks only move forward.
    async fn set_repaired_until(
        &self,
        request: Request<pb::SetRepairedUntilRequest>,
    ) -> Result<Response<pb::SetRepairedUntilResponse>, Status> {
        self.authenticate(&request)?;
        let req = request.into_inner();
        let range = token_range(req.range)?;
        self.inner
            .node
            .check_epoch(req.epoch)
            .map_err(epoch_refusal)?;
        let until = req.repaired_until;
        self.blocking("set_repaired_until", move |engine| {
            engine.set_repaired_until(&range, until)
        })
        .await?;
        Ok(Response::new(pb::SetRepairedUntilResponse {}))
    }

    /// Records hints durably (written and fsynced before the answer).
    async fn record_hints(
        &self,
        request: Request<pb::RecordHintsRequest>,
    ) -> Result<Response<pb::RecordHintsResponse>, Status> {
        self.authenticate(&request)?;
        let Some(handoff) = self.inner.handoff.clone() else {
            return Err(refused(
                Code::Unimplemented,
                RefusalReason::InvalidArgument,
                "this node keeps no hints",
                0,
            ));
        };
        let req = request.into_inner();
        if req.hints.len() > MAX_INGEST_ENTRIES {
            return Err(invalid("record_hints: more than 1000 hints"));
        }
        let mut hints = Vec::with_capacity(req.hints.len());
        for (i, h) in req.hints.into_iter().enumerate() {
            let key = h
                .key
                .ok_or_else(|| invalid(format!("record_hints: hint {i} has no key")))?;
            StorageKey::new(&key.namespace, &key.key)
                .map_err(|e| invalid(format!("record_hints: hint {i}: {e}")))?;
            pairdb_core::placement::validate_node_id(&h.target)
                .map_err(|e| invalid(format!("record_hints: hint {i}: {e}")))?;
            hints.push((h.target, key.namespace, key.key));
        }
        let now = crate::handoff::now_ms();
        let recorded = tokio::task::spawn_blocking(move || handoff.hints.record(&hints, now)).await;
        match recorded {
            Ok(Ok(())) => Ok(Response::new(pb::RecordHintsResponse {})),
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot record hints");
                Err(refused(
                    Code::Internal,
                    RefusalReason::Engine,
                    error.to_string(),
                    0,
                ))
            }
            Err(_) => Err(Status::internal("hint recording failed")),
        }
    }
}
