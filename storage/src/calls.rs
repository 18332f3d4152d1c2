//! The node's side of a call stream (`Storage.Calls`): many Mint, Apply and Read calls over one
//! long-lived gRPC stream, the coordinators' data path.
//!
//! What a stream guarantees, call by call, is what the unary RPC guarantees:
//!
//! * **Credential.** The stream is refused `UNAUTHENTICATED` when it opens without the internal
//!   credential, and each call is then made with the credential the stream presented, so the
//!   service checks it again exactly as for a unary call.
//! * **Independence.** Each call runs in a task of its own, in parallel with the others, and its
//!   reply is written as soon as it is ready, in any order, under the call's id. A call's
//!   failure is its reply (a [`pb::CallError`] carrying the unary status, refusal included); it
//!   never ends the stream.
//! * **Deadline and cancellation.** A call with `timeout_ms` is dropped when that much time has
//!   passed since it arrived, and answered `DEADLINE_EXCEEDED`; a cancelled id drops its call and
//!   gets no reply — as a unary call whose stream was reset. A call that panics is answered
//!   `INTERNAL` (without a refusal: it may have changed something).
//! * **Backpressure.** At most [`MAX_CALLS_IN_FLIGHT`] calls of one stream run at once; past
//!   that the node stops reading the stream, and HTTP/2 flow control holds the caller back.
//! * **Stop.** When the server stops, the node refuses (`SHUTTING_DOWN`) the calls it has
//!   received but not started, lets the running ones answer, and ends the stream, so graceful
//!   shutdown never waits on a caller. A broken stream, a caller that stops reading replies,
//!   and a protocol error (an id reused while its call runs, more than
//!   [`MAX_CALLS_PER_MESSAGE`] calls in a message) drop the running calls and end the stream.
//! * **Coalescing.** Replies ready together leave in one message; nothing waits to fill one.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::FutureExt as _;
use pairdb_proto::storage as pb;
use pairdb_proto::storage::RefusalReason;
use pairdb_proto::storage::call::Op;
use pairdb_proto::storage::reply::Result as ReplyResult;
use pairdb_proto::storage::storage_server::Storage;
use prost::Message as _;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status, Streaming};
use tracing::Instrument as _;

use crate::service::CallSpan;

/// Calls of one stream running at once; past it the node reads no more of the stream.
pub const MAX_CALLS_IN_FLIGHT: usize = 1024;
/// Most replies in one message of the stream.
pub const MAX_REPLIES_PER_MESSAGE: usize = 256;
/// Bytes of replies past which a message takes no more: half the message limit.
pub const MAX_REPLY_BYTES: usize = crate::server::MAX_MESSAGE_BYTES / 2;
/// Most calls one message may carry; more is a protocol error that ends the stream.
pub const MAX_CALLS_PER_MESSAGE: usize = 4096;

/// What a call stream needs from the server it runs in.
#[derive(Clone)]
pub struct CallHooks {
    /// Makes each call's span (none: a plain `call` span).
    pub span: Option<CallSpan>,
    /// Turns true when the server stops.
    pub stopping: watch::Receiver<bool>,
}

/// Serves the call stream `request` opened, each call through `service`'s unary method (the
/// stream's credential is checked there again, call by call). Returns the stream of replies; the
/// calls run on tasks of their own.
pub fn serve<S>(
    service: S,
    request: Request<Streaming<pb::CallBatch>>,
    hooks: CallHooks,
) -> ReplyStream
where
    S: Storage + Clone,
{
    let credential = request.metadata().get(pairdb_proto::AUTHORIZATION).cloned();
    let (replies, rx) = mpsc::channel(MAX_CALLS_IN_FLIGHT);
    tokio::spawn(drive(
        service,
        credential,
        request.into_inner(),
        replies,
        hooks,
    ));
    ReplyStream { rx, carry: None }
}

/// The replies of a call stream: every reply ready when polled goes in one message, up to
/// [`MAX_REPLIES_PER_MESSAGE`] and [`MAX_REPLY_BYTES`] (a larger reply goes alone).
pub struct ReplyStream {
    rx: mpsc::Receiver<pb::Reply>,
    /// A reply taken that did not fit the previous message.
    carry: Option<pb::Reply>,
}

impl futures::Stream for ReplyStream {
    type Item = Result<pb::ReplyBatch, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let first = match this.carry.take() {
            Some(reply) => reply,
            None => match ready!(this.rx.poll_recv(cx)) {
                Some(reply) => reply,
                None => return Poll::Ready(None),
            },
        };
        let mut bytes = first.encoded_len();
        let mut replies = Vec::with_capacity(8);
        replies.push(first);
        while replies.len() < MAX_REPLIES_PER_MESSAGE && bytes < MAX_REPLY_BYTES {
            match this.rx.try_recv() {
                Ok(reply) => {
                    let len = reply.encoded_len();
                    if bytes + len > MAX_REPLY_BYTES {
                        this.carry = Some(reply);
                        break;
                    }
                    bytes += len;
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        Poll::Ready(Some(Ok(pb::ReplyBatch { replies })))
    }
}

/// The calls of one stream still running, by id.
type Running = Arc<Mutex<HashMap<u64, AbortHandle>>>;

fn lock(running: &Running) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
    running.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads the stream and starts its calls until the caller closes it (running calls then finish
/// and answer), it breaks or the caller stops reading replies (running calls are dropped), or
/// the server stops. A protocol error (a duplicate id in flight, an oversized message) ends it
/// like a break.
async fn drive<S>(
    service: S,
    credential: Option<MetadataValue<tonic::metadata::Ascii>>,
    mut incoming: Streaming<pb::CallBatch>,
    replies: mpsc::Sender<pb::Reply>,
    hooks: CallHooks,
) where
    S: Storage + Clone,
{
    let permits = Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT));
    let running: Running = Arc::new(Mutex::new(HashMap::new()));
    let mut stopping = hooks.stopping.clone();
    let drop_all = |why: &str| {
        tracing::debug!(why, "call stream ended: dropping its calls");
        for (_, call) in lock(&running).drain() {
            call.abort();
        }
    };
    loop {
        let batch = tokio::select! {
            biased;
            () = replies.closed() => return drop_all("the caller stopped reading replies"),
            () = stopped(&mut stopping) => {
                // Refuse what already arrived; what the caller sends later it learns about from
                // the end of the stream.
                while let Some(Ok(Some(batch))) = incoming.message().now_or_never() {
                    cancel(&running, &batch.cancel);
                    for call in batch.calls {
                        let _ = replies.try_send(refusal(call.id, shutting_down()));
                    }
                }
                break;
            }
            next = incoming.message() => match next {
                Ok(Some(batch)) => batch,
                // The caller closed its side: the running calls answer, then the stream ends.
                Ok(None) => break,
                Err(_) => return drop_all("the stream broke"),
            },
        };
        cancel(&running, &batch.cancel);
        if batch.calls.len() > MAX_CALLS_PER_MESSAGE {
            return drop_all("a message carried too many calls");
        }
        for call in batch.calls {
            // Its deadline runs from its arrival, whatever it waits for here.
            let deadline = match call.timeout_ms {
                0 => None,
                ms => Some(Instant::now() + Duration::from_millis(u64::from(ms))),
            };
            let permit = tokio::select! {
                biased;
                () = replies.closed() => return drop_all("the caller stopped reading replies"),
                () = stopped(&mut stopping) => {
                    let _ = replies.try_send(refusal(call.id, shutting_down()));
                    continue;
                }
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let id = call.id;
            let task = run(
                service.clone(),
                credential.clone(),
                call,
                deadline,
                replies.clone(),
                Arc::clone(&running),
                hooks.span.clone(),
            );
            // Registered under the lock the task takes to unregister, so it cannot finish first.
            let mut calls = lock(&running);
            if calls.contains_key(&id) {
                drop(calls);
                return drop_all("a call id was reused while in flight");
            }
            let handle = tokio::spawn(async move {
                let _permit = permit;
                task.await;
            });
            calls.insert(id, handle.abort_handle());
        }
    }
}

/// Drops the running calls `ids` names (ids of calls that finished, or never were, are ignored).
fn cancel(running: &Running, ids: &[u64]) {
    if ids.is_empty() {
        return;
    }
    let mut calls = lock(running);
    for id in ids {
        if let Some(call) = calls.remove(id) {
            call.abort();
        }
    }
}

/// Resolves once `stopping` turns true; never when its sender is gone without doing so.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    if stopping.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn shutting_down() -> Status {
    pairdb_proto::refused(
        Code::Unavailable,
        RefusalReason::ShuttingDown,
        "the storage node is shutting down",
        0,
    )
}

fn refusal(id: u64, status: Status) -> pb::Reply {
    pb::Reply {
        id,
        result: Some(ReplyResult::Error(pairdb_proto::call_error(&status))),
    }
}

/// Runs one call through the service's unary method, with the stream's credential, and sends
/// its reply.
async fn run<S>(
    service: S,
    credential: Option<MetadataValue<tonic::metadata::Ascii>>,
    call: pb::Call,
    deadline: Option<Instant>,
    replies: mpsc::Sender<pb::Reply>,
    running: Running,
    span: Option<CallSpan>,
) where
    S: Storage,
{
    let id = call.id;
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
    let work = async {
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
    .instrument(span);
    // A panic answers like an error the node did not refuse: it may have changed something.
    let work = std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .map(|done| {
            done.unwrap_or_else(|_| {
                tracing::error!(rpc, "a storage call panicked");
                Err(Status::internal("the storage call failed"))
            })
        });
    let result = match deadline {
        None => work.await,
        Some(deadline) => tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("the call's timeout passed"))),
    };
    lock(&running).remove(&id);
    let reply = pb::Reply {
        id,
        result: Some(match result {
            Ok(result) => result,
            Err(status) => ReplyResult::Error(pairdb_proto::call_error(&status)),
        }),
    };
    // A caller that went away takes no reply.
    let _ = replies.send(reply).await;
}

fn request<T>(message: T, credential: Option<MetadataValue<tonic::metadata::Ascii>>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(credential) = credential {
        request
            .metadata_mut()
            .insert(pairdb_proto::AUTHORIZATION, credential);
    }
    request
}
