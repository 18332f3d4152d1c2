//! The node's side of a call stream (`Storage.Calls`): many Mint, Apply and Read calls over one
//! long-lived gRPC stream, the coordinators' data path. The stream itself — calls in parallel,
//! replies in any order, deadlines, cancellation, the bound on calls in flight, the end at a
//! stop — is [`pairdb_mux::server`]'s; this module runs each call.
//!
//! * **Credential.** The stream is refused `UNAUTHENTICATED` when it opens without the internal
//!   credential ([`StorageService`](crate::service::StorageService)), and each call is then made
//!   with the credential the stream presented, so the service checks it again exactly as for a
//!   unary call.
//! * **Same answers.** Each call runs through the service's unary method: the same checks,
//!   refusals and results.
//! * **Stop.** Calls received but not started when the server stops are refused
//!   `SHUTTING_DOWN` (nothing ran).

use pairdb_mux::ServeOptions;
use pairdb_proto::storage as pb;
use pairdb_proto::storage::RefusalReason;
use pairdb_proto::storage::call::Op;
use pairdb_proto::storage::reply::Result as ReplyResult;
use pairdb_proto::storage::storage_server::Storage;
use tokio::sync::watch;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Code, Request, Status, Streaming};
use tracing::Instrument as _;

use crate::service::CallSpan;

/// The replies of a call stream.
pub type ReplyStream = pairdb_mux::ReplyStream<pb::ReplyBatch>;

/// What a call stream needs from the server it runs in.
#[derive(Clone)]
pub struct CallHooks {
    /// Makes each call's span (none: a plain `call` span).
    pub span: Option<CallSpan>,
    /// Turns true when the server stops.
    pub stopping: watch::Receiver<bool>,
}

/// Serves the call stream `request` opened, each call through `service`'s unary method with the
/// stream's credential. Returns the stream of replies; the calls run on tasks of their own.
pub fn serve<S>(
    service: S,
    request: Request<Streaming<pb::CallBatch>>,
    hooks: CallHooks,
) -> ReplyStream
where
    S: Storage + Clone,
{
    let credential = request.metadata().get(pairdb_proto::AUTHORIZATION).cloned();
    let span = hooks.span;
    let handle = move |call: pb::Call| run(service.clone(), credential.clone(), call, span.clone());
    pairdb_mux::serve(
        request.into_inner(),
        handle,
        ServeOptions {
            stopping: hooks.stopping,
            shutting_down: pairdb_proto::refused(
                Code::Unavailable,
                RefusalReason::ShuttingDown,
                "the storage node is shutting down",
                0,
            ),
            // Coordinators decode up to 64 MiB; half a node's own 8 MiB limit is plenty.
            max_reply_bytes: crate::server::MAX_MESSAGE_BYTES / 2,
        },
    )
}

/// Runs one call through the service's unary method, in its span.
async fn run<S>(
    service: S,
    credential: Option<MetadataValue<Ascii>>,
    call: pb::Call,
    span: Option<CallSpan>,
) -> Result<ReplyResult, Status>
where
    S: Storage,
{
    let rpc = match &call.op {
        Some(Op::Mint(_)) => "Mint",
        Some(Op::Apply(_)) => "Apply",
        Some(Op::Read(_)) => "Read",
        None => "",
    };
    let span = match &span {
        Some(make) if !rpc.is_empty() => make(rpc, &call.traceparent),
        _ => tracing::info_span!("call", rpc),
    };
    async {
        match call.op {
            Some(Op::Mint(m)) => service
                .mint(request(m, credential))
                .await
                .map(|r| ReplyResult::Mint(r.into_inner())),
            Some(Op::Apply(a)) => service
                .apply(request(a, credential))
                .await
                .map(|r| ReplyResult::Apply(r.into_inner())),
            Some(Op::Read(r)) => service
                .read(request(r, credential))
                .await
                .map(|r| ReplyResult::Read(r.into_inner())),
            None => Err(pairdb_proto::refused(
                Code::InvalidArgument,
                RefusalReason::InvalidArgument,
                "call without an operation",
                0,
            )),
        }
    }
    .instrument(span)
    .await
}

fn request<T>(message: T, credential: Option<MetadataValue<Ascii>>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(credential) = credential {
        request
            .metadata_mut()
            .insert(pairdb_proto::AUTHORIZATION, credential);
    }
    request
}
