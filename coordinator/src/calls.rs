//! The coordinator's side of call streams (`Storage.Calls`): Mint, Apply and Read calls to one
//! storage node over a few long-lived gRPC streams instead of an HTTP/2 stream per call.
//!
//! What a caller sees is what the unary RPC gave it, so the replication core's reasoning about
//! failures holds unchanged:
//!
//! * a reply is the unary answer — a refusal arrives with its `Refusal` details, untouched;
//! * a call still queued when its stream fails was provably never sent: it fails with a status
//!   [`never_sent`](crate::pool::never_sent) recognises ([`NotSent`]), so a write may go to
//!   another leader;
//! * a call written to a stream that then broke or ended may have run: it fails `UNAVAILABLE`
//!   with the cause as its source, which proves nothing (`applied: unknown` for a write);
//! * a stream the node refused when it opened (no credential) fails each of its calls with the
//!   node's refusal: none ran.
//!
//! **Batching without waiting.** A stream's writer sends whatever calls are queued when the
//! transport asks for more, in one message; an idle stream sends a call at once. Under load —
//! when the previous message carried more than one call — it yields once before collecting, so
//! callers about to queue join the message: the bound of the wait is one turn of the scheduler.
//!
//! **Deadlines and cancellation.** Each call carries its remaining time (`timeout_ms`) and its
//! `traceparent`. A caller that stops waiting (its future dropped) takes its call out of the
//! queue if it was not written, or sends its id to cancel.
//!
//! **Backpressure.** Each stream queues at most [`QUEUE_DEPTH`] calls; callers wait for room
//! (within their own deadline), and the node bounds the calls it runs per stream.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use pairdb_proto::storage as pb;
use pairdb_proto::storage::call::Op;
use pairdb_proto::storage::reply::Result as ReplyResult;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

use crate::pool::StorageRpc;

/// Streams opened to each storage node.
pub const STREAMS_PER_NODE: usize = 2;
/// Calls queued on one stream before callers wait for room.
pub const QUEUE_DEPTH: usize = 1024;
/// Most calls (and, apart, cancellations) in one message.
pub const MAX_CALLS_PER_MESSAGE: usize = 128;
/// Bytes of calls a message takes at most (a larger call goes alone): well under the message
/// limit of any node (tonic's default is 4 MiB; a pairdb node's 8 MiB).
pub const MAX_MESSAGE_BYTES: usize = 2 << 20;

/// The error source of a call that was provably never written to a stream: the caller may send
/// it elsewhere.
#[derive(Debug, thiserror::Error)]
#[error("the call was never sent: {0}")]
pub struct NotSent(String);

/// The error source of a call written to a stream that then failed: it may have run.
#[derive(Debug, thiserror::Error)]
#[error("the call stream failed after the call was sent: {0}")]
pub struct StreamBroken(String);

fn not_sent(why: impl Into<String>) -> Status {
    let why = why.into();
    let mut status = Status::unavailable(format!("storage call not sent: {why}"));
    status.set_source(Arc::new(NotSent(why)));
    status
}

fn broken(why: impl Into<String>) -> Status {
    let why = why.into();
    let mut status = Status::unavailable(format!("storage call stream failed: {why}"));
    status.set_source(Arc::new(StreamBroken(why)));
    status
}

/// The call streams to one storage node, opened lazily and reopened after a failure.
pub struct CallStreams {
    client: StorageRpc,
    slots: Box<[Mutex<Option<Arc<Stream>>>]>,
    next: AtomicUsize,
}

impl CallStreams {
    /// Streams opened with `client` (which carries the internal credential); nothing is opened
    /// until the first call.
    pub fn new(client: StorageRpc, streams: usize) -> Self {
        CallStreams {
            client,
            slots: (0..streams.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A stream to send on: the next one round-robin, opened if it is not open.
    fn stream(&self) -> Arc<Stream> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        #[expect(clippy::indexing_slicing, reason = "i < slots.len()")]
        let mut slot = lock(&self.slots[i]);
        if let Some(stream) = slot.as_ref()
            && !stream.closed.load(Ordering::Acquire)
        {
            return Arc::clone(stream);
        }
        let (stream, outbound) = Stream::new();
        tokio::spawn(run(Arc::clone(&stream), self.client.clone(), outbound));
        *slot = Some(Arc::clone(&stream));
        stream
    }

    /// Makes the call `op` and waits for its reply. The node gives up on it at `deadline`
    /// (counted from when the call is written); dropping the future cancels it sooner.
    pub async fn call(&self, op: Op, deadline: Instant) -> Result<ReplyResult, Status> {
        let stream = self.stream();
        let id = stream.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        {
            let mut state = stream.state();
            if state.closed {
                return Err(not_sent("the stream closed before the call was queued"));
            }
            state.pending.insert(
                id,
                Pending {
                    tx,
                    sent: false,
                    deadline,
                },
            );
        }
        let mut guard = Cancel {
            stream: &stream,
            id,
            armed: true,
        };
        let call = pb::Call {
            id,
            // Set when the call is written, from `deadline`.
            timeout_ms: 0,
            traceparent: pairdb_middleware::current_traceparent().unwrap_or_default(),
            op: Some(op),
        };
        tokio::select! {
            biased;
            // The stream failed while the call waited for room: it was never written.
            failed = &mut rx => {
                guard.armed = false;
                return failed.unwrap_or_else(|_| Err(broken("the stream dropped the call")));
            }
            queued = stream.queue.send(call) => {
                if queued.is_err() {
                    return Err(not_sent("the stream ended before the call was queued"));
                }
            }
        }
        let result = match rx.await {
            Ok(result) => result,
            Err(_) => Err(broken("the stream dropped the call")),
        };
        guard.armed = false;
        result
    }
}

/// Removes a call its caller stopped waiting for: out of the queue if not yet written, else
/// cancelled on the node.
struct Cancel<'a> {
    stream: &'a Stream,
    id: u64,
    armed: bool,
}

impl Drop for Cancel<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let sent = self
            .stream
            .state()
            .pending
            .remove(&self.id)
            .is_some_and(|p| p.sent);
        if sent {
            // Never waits, even when the call queue is full: overload is when cancels matter.
            let _ = self.stream.control.send(Control::Cancel(self.id));
        }
    }
}

/// What travels beside the calls: cancellations, and the end of a failed stream.
enum Control {
    Cancel(u64),
    /// The stream failed: end its request half.
    Close,
}

struct Pending {
    tx: oneshot::Sender<Result<ReplyResult, Status>>,
    /// Written to the stream: it may run even if the stream fails.
    sent: bool,
    /// When the caller stops waiting; the node is told the time left when the call is written.
    deadline: Instant,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    /// The stream failed or ended: no call may join it.
    closed: bool,
}

/// One call stream.
struct Stream {
    /// Calls to write, bounded: callers wait for room.
    queue: mpsc::Sender<pb::Call>,
    /// Cancellations and the close, unbounded (at most one cancellation per call).
    control: mpsc::UnboundedSender<Control>,
    state: Mutex<State>,
    next_id: AtomicU64,
    /// Mirrors `State::closed` for picking a stream without its lock.
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stream {
    fn new() -> (Arc<Stream>, Outbound) {
        let (queue, calls) = mpsc::channel(QUEUE_DEPTH);
        let (control, controls) = mpsc::unbounded_channel();
        let stream = Arc::new(Stream {
            queue,
            control,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let outbound = Outbound {
            stream: Arc::clone(&stream),
            calls,
            controls,
            carry: None,
            loaded: false,
            yielded: false,
        };
        (stream, outbound)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Hands out the replies of one message.
    fn deliver(&self, replies: Vec<pb::Reply>) {
        let mut done = Vec::with_capacity(replies.len());
        {
            let mut state = self.state();
            for reply in replies {
                // A reply to a call nobody waits for (cancelled) is dropped.
                if let Some(pending) = state.pending.remove(&reply.id) {
                    done.push((pending.tx, reply.result));
                }
            }
        }
        for (tx, result) in done {
            let result = match result {
                Some(ReplyResult::Error(error)) => Err(pairdb_proto::call_status(error)),
                Some(result) => Ok(result),
                None => Err(broken("the node sent a reply without a result")),
            };
            let _ = tx.send(result);
        }
    }

    /// Closes the stream and fails every call still waiting: those never written as not sent,
    /// the others with `failure` — the node's refusal when it refused the stream (no call ran),
    /// else a failure that proves nothing.
    fn fail(&self, failure: &Status, refused: bool) {
        self.closed.store(true, Ordering::Release);
        let pending: Vec<Pending> = {
            let mut state = self.state();
            state.closed = true;
            state.pending.drain().map(|(_, p)| p).collect()
        };
        let _ = self.control.send(Control::Close);
        for p in pending {
            let status = if refused {
                failure.clone()
            } else if !p.sent {
                not_sent(failure.message().to_owned())
            } else {
                broken(failure.message().to_owned())
            };
            let _ = p.tx.send(Err(status));
        }
    }
}

/// Opens the stream, reads its replies until it ends, then fails what is left.
async fn run(stream: Arc<Stream>, mut client: StorageRpc, outbound: Outbound) {
    let mut replies = match client.calls(outbound).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            // A refusal the node sent (not one built from a transport error) means it ran none.
            let refused = std::error::Error::source(&status).is_none()
                && pairdb_proto::refusal(&status).is_some();
            tracing::debug!(error = %status, "cannot open a call stream");
            stream.fail(&status, refused);
            return;
        }
    };
    let failure = loop {
        match replies.message().await {
            Ok(Some(batch)) => stream.deliver(batch.replies),
            Ok(None) => break Status::unavailable("the node ended the call stream"),
            Err(status) => break status,
        }
    };
    tracing::debug!(error = %failure, "call stream ended");
    stream.fail(&failure, false);
}

/// The calls written on a stream: each message takes every cancellation and call queued when
/// the transport asks for one, up to [`MAX_CALLS_PER_MESSAGE`] and [`MAX_MESSAGE_BYTES`] (see
/// the module's "batching without waiting"). Ends when the stream fails.
struct Outbound {
    stream: Arc<Stream>,
    calls: mpsc::Receiver<pb::Call>,
    controls: mpsc::UnboundedReceiver<Control>,
    /// A call taken from the queue that did not fit the previous message.
    carry: Option<pb::Call>,
    /// The last message carried more than one call.
    loaded: bool,
    /// Already yielded once for the message being collected.
    yielded: bool,
}

impl futures::Stream for Outbound {
    type Item = pb::CallBatch;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<pb::CallBatch>> {
        let this = &mut *self;
        loop {
            if this.stream.closed.load(Ordering::Acquire) {
                return Poll::Ready(None);
            }
            if this.loaded && !this.yielded {
                // Under load: let callers about to queue join this message.
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut batch = pb::CallBatch::default();
            while batch.cancel.len() < MAX_CALLS_PER_MESSAGE {
                match this.controls.poll_recv(cx) {
                    Poll::Ready(Some(Control::Cancel(id))) => batch.cancel.push(id),
                    Poll::Ready(Some(Control::Close) | None) => return Poll::Ready(None),
                    Poll::Pending => break,
                }
            }
            let mut bytes = 0;
            if let Some(call) = this.carry.take() {
                bytes += call.encoded_len();
                batch.calls.push(call);
            }
            while batch.calls.len() < MAX_CALLS_PER_MESSAGE && bytes < MAX_MESSAGE_BYTES {
                match this.calls.poll_recv(cx) {
                    Poll::Ready(Some(call)) => {
                        let len = call.encoded_len();
                        if !batch.calls.is_empty() && bytes + len > MAX_MESSAGE_BYTES {
                            this.carry = Some(call);
                            break;
                        }
                        bytes += len;
                        batch.calls.push(call);
                    }
                    // Every handle to the queue is gone only with the stream itself.
                    Poll::Ready(None) if batch.calls.is_empty() && batch.cancel.is_empty() => {
                        return Poll::Ready(None);
                    }
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            if batch.calls.is_empty() && batch.cancel.is_empty() {
                // Idle: the next call goes out at once (both queues will wake this).
                this.loaded = false;
                this.yielded = false;
                return Poll::Pending;
            }
            {
                // Calls whose callers gave up before they were written are not sent at all; the
                // others are marked sent, and told the time their callers have left.
                let mut state = this.stream.state();
                let now = Instant::now();
                batch
                    .calls
                    .retain_mut(|call| match state.pending.get_mut(&call.id) {
                        Some(pending) => {
                            pending.sent = true;
                            let left = pending.deadline.saturating_duration_since(now);
                            call.timeout_ms =
                                u32::try_from(left.as_millis().max(1)).unwrap_or(u32::MAX);
                            true
                        }
                        None => false,
                    });
            }
            this.yielded = false;
            if batch.calls.is_empty() && batch.cancel.is_empty() {
                continue;
            }
            this.loaded = batch.calls.len() > 1;
            return Poll::Ready(Some(batch));
        }
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

    /// `Storage.Mint`.
    pub async fn mint(
        &mut self,
        request: pb::MintRequest,
    ) -> Result<tonic::Response<pb::MintResponse>, Status> {
        match self.streams.call(Op::Mint(request), self.deadline).await? {
            ReplyResult::Mint(r) => Ok(tonic::Response::new(r)),
            _ => Err(mismatched()),
        }
    }

    /// `Storage.Apply`.
    pub async fn apply(
        &mut self,
        request: pb::ApplyRequest,
    ) -> Result<tonic::Response<pb::ApplyResponse>, Status> {
        match self.streams.call(Op::Apply(request), self.deadline).await? {
            ReplyResult::Apply(r) => Ok(tonic::Response::new(r)),
            _ => Err(mismatched()),
        }
    }

    /// `Storage.Read`.
    pub async fn read(
        &mut self,
        request: pb::ReadRequest,
    ) -> Result<tonic::Response<pb::ReadResponse>, Status> {
        match self.streams.call(Op::Read(request), self.deadline).await? {
            ReplyResult::Read(r) => Ok(tonic::Response::new(r)),
            _ => Err(mismatched()),
        }
    }
}

/// A reply of another kind than its call: the node is broken, and the call may have run.
fn mismatched() -> Status {
    broken("the node answered a call with a reply of another kind")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{Failure, classify};

    fn pending(
        stream: &Stream,
        id: u64,
        sent: bool,
    ) -> oneshot::Receiver<Result<ReplyResult, Status>> {
        let (tx, rx) = oneshot::channel();
        stream.state().pending.insert(
            id,
            Pending {
                tx,
                sent,
                deadline: Instant::now(),
            },
        );
        rx
    }

    fn failure_of(mut rx: oneshot::Receiver<Result<ReplyResult, Status>>) -> Failure {
        match rx.try_recv() {
            Ok(Err(status)) => classify(&status),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// The rule the replication core stands on: when a stream fails, a call still queued was
    /// never sent (a write may go to another leader), one written may have run.
    #[tokio::test]
    async fn a_failed_stream_fails_queued_calls_as_not_sent_and_written_ones_as_unknown() {
        let (stream, _outbound) = Stream::new();
        let queued = pending(&stream, 1, false);
        let written = pending(&stream, 2, true);
        stream.fail(&Status::unavailable("connection reset"), false);
        assert_eq!(failure_of(queued), Failure::NotSent);
        assert_eq!(failure_of(written), Failure::Unknown);
        assert!(stream.closed.load(Ordering::Acquire));
        assert!(stream.state().pending.is_empty());
    }

    /// A stream the node refused at open ran none of its calls: each gets the node's refusal.
    #[tokio::test]
    async fn a_refused_stream_passes_the_refusal_to_every_call() {
        use pairdb_proto::storage::RefusalReason;
        let (stream, _outbound) = Stream::new();
        let queued = pending(&stream, 1, false);
        let written = pending(&stream, 2, true);
        let refusal = pairdb_proto::refused(
            tonic::Code::Unauthenticated,
            RefusalReason::Unauthenticated,
            "no credential",
            0,
        );
        stream.fail(&refusal, true);
        for rx in [queued, written] {
            assert!(matches!(
                failure_of(rx),
                Failure::Refused(r) if r.reason() == RefusalReason::Unauthenticated
            ));
        }
    }

    /// Written calls are marked sent and told their time left; calls whose callers gave up are
    /// not written; a call too large to join a message goes in the next one.
    #[tokio::test]
    async fn outbound_marks_what_it_writes_and_skips_abandoned_calls() {
        use futures::StreamExt as _;
        let (stream, mut outbound) = Stream::new();
        let call = |id: u64, bytes: usize| pb::Call {
            id,
            op: Some(Op::Read(pb::ReadRequest {
                epoch: 1,
                key: Some(pb::KeyRef {
                    namespace: "t".into(),
                    key: vec![b'k'; bytes],
                }),
            })),
            ..pb::Call::default()
        };
        let later = Instant::now() + std::time::Duration::from_secs(5);
        for id in [1, 3, 4] {
            let (tx, _rx) = oneshot::channel();
            stream.state().pending.insert(
                id,
                Pending {
                    tx,
                    sent: false,
                    deadline: later,
                },
            );
        }
        stream.queue.try_send(call(1, 10)).expect("room");
        // Abandoned before it was written: no pending entry.
        stream.queue.try_send(call(2, 10)).expect("room");
        stream
            .queue
            .try_send(call(3, MAX_MESSAGE_BYTES))
            .expect("room");
        stream.queue.try_send(call(4, 10)).expect("room");
        let first = outbound.next().await.expect("a message");
        assert_eq!(first.calls.iter().map(|c| c.id).collect::<Vec<_>>(), [1]);
        assert!(
            first.calls[0].timeout_ms > 4_000,
            "{}",
            first.calls[0].timeout_ms
        );
        let second = outbound.next().await.expect("a message");
        assert_eq!(second.calls.iter().map(|c| c.id).collect::<Vec<_>>(), [3]);
        let third = outbound.next().await.expect("a message");
        assert_eq!(third.calls.iter().map(|c| c.id).collect::<Vec<_>>(), [4]);
        assert!(stream.state().pending.values().all(|p| p.sent));
        stream.fail(&Status::unavailable("done"), false);
        assert!(
            outbound.next().await.is_none(),
            "a failed stream ends its request half"
        );
    }
}
