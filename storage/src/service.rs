//! The storage-node gRPC service.
//!
//! Every RPC is checked in the same order before it touches data:
//!
//! 1. **Credential.** The `authorization` metadata must be `Bearer <internal token>`, compared in
//!    constant time; anything else is `UNAUTHENTICATED`. A storage port is never open to anyone
//!    but coordinators and peers.
//! 2. **Placement epoch** (data RPCs: Mint, Apply, Read, Scan, Digest). Equal to the node's newest
//!    installed epoch, or the call is refused: an older epoch is `ABORTED` (retryable — the
//!    caller refreshes its placement), a newer one, or none installed, is `FAILED_PRECONDITION`
//!    (the caller must push its placement first). So two coordinators routing with different
//!    placements never both succeed on this node.
//! 3. **Input.** Missing fields, namespaces over 255 bytes and non-canonical clocks are
//!    `INVALID_ARGUMENT`. Nothing from the wire can make the service panic.
//!
//! Engine failures are `INTERNAL` with the engine's message, and are logged without keys or
//! values.

use std::sync::Arc;

use pairdb_core::version::{self, MintRequest};
use pairdb_core::{Actor, ApplyOutcome, Hlc, StorageKey, Version};
use pairdb_proto::convert::{self, ConvertError};
use pairdb_proto::storage as pb;
use pairdb_proto::storage::storage_server::Storage;
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

use crate::engine::{EngineError, StorageEngine, TokenRange};
use crate::node::NodeState;

/// Key locks striping the key space; two keys share a lock only when their tokens collide
/// modulo this count.
pub const KEY_LOCK_STRIPES: usize = 1024;
/// Scan page size when a request asks for 0 entries.
pub const DEFAULT_SCAN_LIMIT: usize = 100;
/// Largest scan page served, whatever the request asks.
pub const MAX_SCAN_LIMIT: usize = 1000;

/// The storage-node service: checks credentials and epochs, mints as leader under per-key locks,
/// and applies, reads, scans and digests through its [`StorageEngine`].
pub struct StorageService {
    node_id: String,
    /// The clock actor minted as: `(node_id, this run's incarnation)`.
    actor: Actor,
    engine: Arc<dyn StorageEngine>,
    node: Arc<NodeState>,
    /// `Bearer <token>`; `None` when the token is empty, which then refuses every call.
    expected_authorization: Option<Vec<u8>>,
    hlc: Hlc,
    key_locks: Box<[tokio::sync::Mutex<()>]>,
}

impl std::fmt::Debug for StorageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageService")
            .field("node_id", &self.node_id)
            .field("incarnation", &self.node.incarnation())
            .finish_non_exhaustive()
    }
}

impl StorageService {
    /// A service for node `node_id` (the same id `node` was opened with) over `engine`,
    /// accepting only callers presenting `internal_token`. An empty token accepts nobody.
    pub fn new(
        node_id: impl Into<String>,
        engine: Arc<dyn StorageEngine>,
        node: Arc<NodeState>,
        internal_token: String,
    ) -> Self {
        let expected_authorization =
            (!internal_token.is_empty()).then(|| format!("Bearer {internal_token}").into_bytes());
        let node_id = node_id.into();
        StorageService {
            actor: Actor::new(node_id.clone(), node.incarnation()),
            node_id,
            engine,
            node,
            expected_authorization,
            hlc: Hlc::new(),
            key_locks: (0..KEY_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// Refuses calls without the internal credential.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get(pairdb_proto::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let accepted = match (&self.expected_authorization, presented) {
            (Some(expected), Some(presented)) => bool::from(expected.as_slice().ct_eq(presented)),
            _ => false,
        };
        if accepted {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "missing or invalid internal credential",
            ))
        }
    }

    /// Refuses data calls routed with any epoch but the newest installed one.
    fn check_epoch(&self, epoch: u64) -> Result<(), Status> {
        match self.node.epoch() {
            Some(installed) if epoch == installed => Ok(()),
            Some(installed) if epoch < installed => Err(Status::aborted(format!(
                "stale placement epoch {epoch}: node has {installed}"
            ))),
            Some(installed) => Err(Status::failed_precondition(format!(
                "placement epoch {epoch} not installed (node has {installed})"
            ))),
            None => Err(Status::failed_precondition(format!(
                "placement epoch {epoch} not installed (node has none)"
            ))),
        }
    }

    /// The lock serializing mints and applies of `key` on this node.
    fn key_lock(&self, key: &StorageKey) -> &tokio::sync::Mutex<()> {
        let stripe = (key.token % KEY_LOCK_STRIPES as u64) as usize;
        // `stripe < KEY_LOCK_STRIPES == key_locks.len()`, so the fallback is unreachable.
        self.key_locks
            .get(stripe)
            .unwrap_or_else(|| unreachable!("stripe {stripe} out of {KEY_LOCK_STRIPES}"))
    }

    /// Mints as leader under the key's lock, or returns the version an earlier write with the
    /// same idempotency key produced.
    async fn mint_locked(
        &self,
        key: &StorageKey,
        request: MintRequest,
    ) -> Result<pb::MintResponse, Status> {
        let _guard = self.key_lock(key).lock().await;
        let stored = self.engine.get(key).map_err(|e| internal("mint", &e))?;
        if !request.idempotency_key.is_empty() {
            let earlier = match &stored {
                Some(s) if s.idempotency_key == request.idempotency_key => Some(s.clone()),
                _ => self
                    .engine
                    .applied(key, &request.idempotency_key)
                    .map_err(|e| internal("mint", &e))?,
            };
            if let Some(earlier) = earlier {
                return Ok(pb::MintResponse {
                    version: Some(convert::version_to_pb(&earlier)),
                    conflict: false,
                    deduplicated: true,
                });
            }
        }
        let (minted, conflict) = version::mint(stored.as_ref(), request, &self.actor, &self.hlc);
        let (_, now_stored) = self
            .engine
            .apply(key, minted)
            .map_err(|e| internal("mint", &e))?;
        Ok(pb::MintResponse {
            version: Some(convert::version_to_pb(&now_stored)),
            conflict,
            deduplicated: false,
        })
    }
}

/// Maps an engine failure to `INTERNAL`, logging it (the error names files, never keys).
fn internal(rpc: &'static str, error: &EngineError) -> Status {
    tracing::error!(rpc, %error, "storage engine failed");
    Status::internal(error.to_string())
}

fn invalid(field: &str, error: &ConvertError) -> Status {
    Status::invalid_argument(format!("{field}: {error}"))
}

/// The stored key a `KeyRef` addresses.
fn storage_key(key: Option<pb::KeyRef>) -> Result<StorageKey, Status> {
    let key = key.ok_or_else(|| Status::invalid_argument("missing key"))?;
    StorageKey::new(&key.namespace, &key.key)
        .map_err(|e| Status::invalid_argument(format!("key: {e}")))
}

fn token_range(range: Option<pb::TokenRange>) -> Result<TokenRange, Status> {
    let range = range.ok_or_else(|| Status::invalid_argument("missing range"))?;
    if range.namespace.len() > 255 {
        return Err(Status::invalid_argument(
            "range: namespace longer than 255 bytes",
        ));
    }
    if range.start > range.end {
        return Err(Status::invalid_argument(
            "range: start after end (split wrapping ranges)",
        ));
    }
    Ok(TokenRange {
        namespace: range.namespace,
        start: range.start,
        end: range.end,
    })
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
    /// Mints as the key's leader. Repeating an idempotency key whose write this node stored or
    /// recorded returns that version with `deduplicated` set and mints nothing.
    async fn mint(
        &self,
        request: Request<pb::MintRequest>,
    ) -> Result<Response<pb::MintResponse>, Status> {
        self.authenticate(&request)?;
        let req = request.into_inner();
        self.check_epoch(req.epoch)?;
        let key = storage_key(req.key)?;
        let context = req
            .context
            .map(convert::context_from_pb)
            .transpose()
            .map_err(|e| invalid("context", &e))?;
        let mint = MintRequest {
            tombstone: req.tombstone,
            value: req.value,
            content_type: req.content_type,
            context,
            idempotency_key: req.idempotency_key,
        };
        self.mint_locked(&key, mint).await.map(Response::new)
    }

    /// Stores `resolve(stored, incoming)`, and advances this node's HLC past the incoming
    /// timestamp so later mints here exceed it. Takes the key's lock, so a version arriving while
    /// this node mints the same key lands before or after the mint, never between its read and
    /// its write.
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        self.authenticate(&request)?;
        let req = request.into_inner();
        self.check_epoch(req.epoch)?;
        let key = storage_key(req.key)?;
        let incoming: Version = req
            .version
            .ok_or_else(|| Status::invalid_argument("missing version"))
            .and_then(|v| convert::version_from_pb(v).map_err(|e| invalid("version", &e)))?;
        let _guard = self.key_lock(&key).lock().await;
        self.hlc.advance_past(incoming.timestamp);
        let incoming_clock = incoming.clock.clone();
        let (outcome, kept) = self
            .engine
            .apply(&key, incoming)
            .map_err(|e| internal("apply", &e))?;
        Ok(Response::new(pb::ApplyResponse {
            concurrent: version::met_concurrent(outcome, &incoming_clock, &kept),
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
        self.check_epoch(req.epoch)?;
        let key = storage_key(req.key)?;
        let version = self.engine.get(&key).map_err(|e| internal("read", &e))?;
        Ok(Response::new(pb::ReadResponse {
            version: version.as_ref().map(convert::version_to_pb),
        }))
    }

    /// One page of a namespace's token range: `limit` entries (100 when 0, at most 1000)
    /// strictly after the cursor.
    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        self.authenticate(&request)?;
        let req = request.into_inner();
        self.check_epoch(req.epoch)?;
        let range = token_range(req.range)?;
        let after = req.after.map(|c| StorageKey {
            namespace: range.namespace.clone(),
            token: c.token,
            key: c.key,
        });
        let limit = match req.limit as usize {
            0 => DEFAULT_SCAN_LIMIT,
            n => n.min(MAX_SCAN_LIMIT),
        };
        let page = self
            .engine
            .scan(&range, after.as_ref(), limit)
            .map_err(|e| internal("scan", &e))?;
        Ok(Response::new(pb::ScanResponse {
            entries: page
                .entries
                .into_iter()
                .map(|(k, v)| pb::ScanEntry {
                    token: k.token,
                    key: k.key,
                    version: Some(convert::version_to_pb(&v)),
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
        self.check_epoch(req.epoch)?;
        let range = token_range(req.range)?;
        let digest = self
            .engine
            .digest(&range)
            .map_err(|e| internal("digest", &e))?;
        Ok(Response::new(pb::DigestResponse {
            digest: digest.digest.to_vec(),
            keys: digest.keys,
        }))
    }

    /// Installs a newer placement, persisted before the answer; returns the newest epoch held.
    /// Needs the credential but no epoch: this is how epochs advance.
    async fn push_placement(
        &self,
        request: Request<pb::PushPlacementRequest>,
    ) -> Result<Response<pb::PushPlacementResponse>, Status> {
        self.authenticate(&request)?;
        let placement = request
            .into_inner()
            .placement
            .map(convert::placement_from_pb)
            .ok_or_else(|| Status::invalid_argument("missing placement"))?;
        if placement.epoch == 0 {
            return Err(Status::invalid_argument(
                "placement epoch must be at least 1",
            ));
        }
        let node = Arc::clone(&self.node);
        let epoch = tokio::task::spawn_blocking(move || node.install(placement))
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
        Ok(Response::new(pb::HealthResponse {
            node_id: self.node_id.clone(),
            incarnation: self.node.incarnation(),
            epoch: self.node.epoch().unwrap_or(0),
            load_bytes: self.engine.stats().bytes,
        }))
    }
}
