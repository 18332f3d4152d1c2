//! The coordinator's side of call streams (`Storage.Calls`): Mint, Apply and Read calls to one
//! storage node over a few long-lived gRPC streams ([`pairdb_mux::client`]) instead of an HTTP/2
//! stream per call.
//!
//! What a caller sees is what the unary RPC gave it, so the replication core's reasoning about
//! failures holds unchanged: a reply is the unary answer (a refusal arrives with its `Refusal`
//! details untouched); a call still queued when its stream fails was provably never sent
//! ([`pairdb_mux::NotSent`], which [`never_sent`](crate::pool::never_sent) recognises); a call
//! written to a stream that then failed may have run (`applied: unknown` for a write); a stream
//! the node refused when it opened fails each call with the node's refusal.

use std::sync::Arc;

use futures::future::BoxFuture;
use pairdb_proto::storage as pb;
use pairdb_proto::storage::call::Op;
use pairdb_proto::storage::reply::Result as ReplyResult;
use tokio::time::Instant;
use tonic::Status;

use crate::pool::StorageRpc;

/// Streams opened to each storage node.
pub const STREAMS_PER_NODE: usize = 2;

/// The call streams to one storage node.
pub type CallStreams = pairdb_mux::CallStreams<pb::CallBatch, pb::ReplyBatch, Opener>;

/// Opens call streams with a storage client (which carries the internal credential).
#[derive(Clone)]
pub struct Opener(StorageRpc);

impl pairdb_mux::Opener<pb::CallBatch, pb::ReplyBatch> for Opener {
    fn open(
        &self,
        outbound: pairdb_mux::Outbound<pb::CallBatch>,
    ) -> BoxFuture<'static, Result<tonic::Streaming<pb::ReplyBatch>, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move { Ok(client.calls(outbound).await?.into_inner()) })
    }

    /// A refusal the node sent (not one built from a transport error): it ran none of the calls.
    fn is_refusal(&self, status: &Status) -> bool {
        std::error::Error::source(status).is_none() && pairdb_proto::refusal(status).is_some()
    }
}

/// `streams` call streams to the node `client` calls; none is opened before the first call.
pub fn streams(client: StorageRpc, streams: usize) -> CallStreams {
    CallStreams::new(Opener(client), streams)
}

/// The call for `op`, carrying the `traceparent` of the span it is made in.
pub fn call_of(op: Op) -> pb::Call {
    pb::Call {
        traceparent: pairdb_middleware::current_traceparent().unwrap_or_default(),
        op: Some(op),
        ..pb::Call::default()
    }
}

/// A handle making storage calls to one node over its call streams, under one deadline: what
/// the replication core calls `mint`, `apply` and `read` on, with the unary client's signatures.
#[derive(Clone)]
pub struct StorageCalls {
    streams: Arc<CallStreams>,
    deadline: Instant,
}

impl StorageCalls {
    /// Calls on `streams` that give up at `deadline`.
    pub fn new(streams: Arc<CallStreams>, deadline: Instant) -> Self {
        StorageCalls { streams, deadline }
    }

    /// Makes the call for `op`; its reply must be the kind `pick` takes.
    async fn call<T>(
        &self,
        op: Op,
        pick: fn(ReplyResult) -> Option<T>,
    ) -> Result<tonic::Response<T>, Status> {
        let reply = self.streams.call(call_of(op), self.deadline).await?;
        pick(reply).map(tonic::Response::new).ok_or_else(mismatched)
    }

    /// `Storage.Mint`.
    pub async fn mint(
        &mut self,
        request: pb::MintRequest,
    ) -> Result<tonic::Response<pb::MintResponse>, Status> {
        self.call(Op::Mint(request), |r| match r {
            ReplyResult::Mint(r) => Some(r),
            _ => None,
        })
        .await
    }

    /// `Storage.Apply`.
    pub async fn apply(
        &mut self,
        request: pb::ApplyRequest,
    ) -> Result<tonic::Response<pb::ApplyResponse>, Status> {
        self.call(Op::Apply(request), |r| match r {
            ReplyResult::Apply(r) => Some(r),
            _ => None,
        })
        .await
    }

    /// `Storage.Read`.
    pub async fn read(
        &mut self,
        request: pb::ReadRequest,
    ) -> Result<tonic::Response<pb::ReadResponse>, Status> {
        self.call(Op::Read(request), |r| match r {
            ReplyResult::Read(r) => Some(r),
            _ => None,
        })
        .await
    }
}

/// A reply of another kind than its call: the node is broken, and the call may have run.
fn mismatched() -> Status {
    Status::internal("the node answered a call with a reply of another kind")
}
