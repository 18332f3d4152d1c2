//! A caller's side of call streams: a few long-lived streams per peer.
//!
//! What a caller sees is what the unary RPC gave it:
//!
//! * a reply is the unary answer — its status comes back with code, message and details;
//! * a call still queued when its stream fails was provably never sent: it fails with
//!   [`NotSent`](crate::NotSent) as the source, so a write may go elsewhere;
//! * a call written to a stream that then broke or ended may have run: it fails `UNAVAILABLE`
//!   with [`StreamBroken`](crate::StreamBroken) as the source;
//! * a stream the peer refused when it opened (no credential) fails each of its calls with the
//!   peer's own status: none ran.
//!
//! **Batching without waiting.** A stream's writer sends whatever calls are queued when the
//! transport asks for more, in one message, up to [`MAX_CALLS_PER_MESSAGE`] and
//! [`MAX_MESSAGE_BYTES`]; an idle stream sends a call at once. Under load — when the previous
//! message carried more than one call — it yields once before collecting, so callers about to
//! queue join the message: the bound of the wait is one turn of the scheduler.
//!
//! **Deadlines and cancellation.** Each call is told its caller's time left when it is written.
//! A caller that stops waiting (its future dropped) takes its call out of the queue if it was not
//! written, or sends its id to cancel, beside the queue (never behind it).
//!
//! **Backpressure.** Each stream queues at most [`QUEUE_DEPTH`] calls; callers wait for room
//! (within their own deadline), and the peer bounds the calls it runs per stream.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::{Status, Streaming};

use crate::{BatchMessage, CallMessage, RepliesMessage, ReplyMessage, broken, not_sent};
use prost::Message as _;

/// Calls queued on one stream before callers wait for room.
pub const QUEUE_DEPTH: usize = 1024;
/// Most calls (and, apart, cancellations) in one message.
pub const MAX_CALLS_PER_MESSAGE: usize = 128;
/// Bytes of calls a message takes at most unless [`CallStreams::max_message_bytes`] says
/// otherwise (a larger call goes alone): well under tonic's default limit of 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = 2 << 20;

/// Opens one call stream to a peer, sending what `outbound` yields: the generated client's
/// streaming method (`client.calls(outbound)`), with whatever credential it carries.
pub trait Opener<B: BatchMessage, R: RepliesMessage>: Clone + Send + Sync + 'static {
    /// Opens a stream; resolves once the peer answered with its response head.
    fn open(&self, outbound: Outbound<B>) -> BoxFuture<'static, Result<Streaming<R>, Status>>;

    /// True when `status`, the failure to open a stream, proves the peer ran none of its calls
    /// and is what each of them should fail with (a refusal of the peer's own). Otherwise calls
    /// never written fail [`NotSent`](crate::NotSent), the others
    /// [`StreamBroken`](crate::StreamBroken). By default nothing is such a refusal.
    fn is_refusal(&self, status: &Status) -> bool {
        let _ = status;
        false
    }
}

/// Where one stream of a [`CallStreams`] lives: empty until opened, replaced once failed.
type Slot<B, R> = Mutex<Option<Arc<Stream<B, R>>>>;

type Output<R> = <<R as RepliesMessage>::Reply as ReplyMessage>::Output;
type Done<R> = oneshot::Sender<Result<Output<R>, Status>>;

/// The call streams to one peer, opened lazily and reopened after a failure.
pub struct CallStreams<B: BatchMessage, R: RepliesMessage, O> {
    opener: O,
    slots: Box<[Slot<B, R>]>,
    next: AtomicUsize,
    max_message_bytes: usize,
}

impl<B: BatchMessage, R: RepliesMessage, O: Opener<B, R>> CallStreams<B, R, O> {
    /// `streams` streams opened with `opener`; nothing is opened until the first call.
    pub fn new(opener: O, streams: usize) -> Self {
        CallStreams {
            opener,
            slots: (0..streams.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            max_message_bytes: MAX_MESSAGE_BYTES,
        }
    }

    /// Caps each message's calls at `bytes` (a larger call goes alone), for a peer whose message
    /// limit is lower than twice [`MAX_MESSAGE_BYTES`]: any single call it accepts still goes.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// A stream to send on: the next one round-robin, opened if it is not open.
    fn stream(&self) -> Arc<Stream<B, R>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        #[expect(clippy::indexing_slicing, reason = "i < slots.len()")]
        let mut slot = lock(&self.slots[i]);
        if let Some(stream) = slot.as_ref()
            && !stream.closed.load(Ordering::Acquire)
        {
            return Arc::clone(stream);
        }
        let (stream, outbound) = Stream::new(self.max_message_bytes);
        tokio::spawn(run(Arc::clone(&stream), self.opener.clone(), outbound));
        *slot = Some(Arc::clone(&stream));
        stream
    }

    /// Makes `call` (its id is set here) and waits for its reply. The peer gives up on it at
    /// `deadline` (told the time left when the call is written); dropping the future cancels it
    /// sooner.
    pub async fn call(&self, mut call: B::Call, deadline: Instant) -> Result<Output<R>, Status> {
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
        call.set_id(id);
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

impl<B: BatchMessage, R: RepliesMessage, O> Drop for CallStreams<B, R, O> {
    /// Ends every open stream's request half: the peer answers what runs, then the stream ends.
    fn drop(&mut self) {
        for slot in &self.slots {
            if let Some(stream) = lock(slot).as_ref() {
                let _ = stream.control.send(Control::Close);
            }
        }
    }
}

/// Removes a call its caller stopped waiting for: out of the queue if not yet written, else
/// cancelled on the node.
struct Cancel<'a, B: BatchMessage, R: RepliesMessage> {
    stream: &'a Stream<B, R>,
    id: u64,
    armed: bool,
}

impl<B: BatchMessage, R: RepliesMessage> Drop for Cancel<'_, B, R> {
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

struct Pending<R: RepliesMessage> {
    tx: Done<R>,
    /// Written to the stream: it may run even if the stream fails.
    sent: bool,
    /// When the caller stops waiting; the node is told the time left when the call is written.
    deadline: Instant,
}

struct State<R: RepliesMessage> {
    pending: HashMap<u64, Pending<R>>,
    /// The stream failed or ended: no call may join it.
    closed: bool,
}

/// One call stream.
struct Stream<B: BatchMessage, R: RepliesMessage> {
    /// Calls to write, bounded: callers wait for room.
    queue: mpsc::Sender<B::Call>,
    /// Cancellations and the close, unbounded (at most one cancellation per call).
    control: mpsc::UnboundedSender<Control>,
    state: Mutex<State<R>>,
    next_id: AtomicU64,
    /// Mirrors `State::closed` for picking a stream without its lock.
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B: BatchMessage, R: RepliesMessage> Stream<B, R> {
    fn new(max_bytes: usize) -> (Arc<Self>, Outbound<B>) {
        let (queue, calls) = mpsc::channel(QUEUE_DEPTH);
        let (control, controls) = mpsc::unbounded_channel();
        let stream = Arc::new(Stream {
            queue,
            control,
            state: Mutex::new(State {
                pending: HashMap::new(),
                closed: false,
            }),
            next_id: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let outbound = Outbound {
            stream: Arc::clone(&stream) as Arc<dyn Shared<B::Call>>,
            calls,
            controls,
            carry: None,
            max_bytes,
            loaded: false,
            yielded: false,
        };
        (stream, outbound)
    }

    fn state(&self) -> MutexGuard<'_, State<R>> {
        lock(&self.state)
    }

    /// Hands out the replies of one message.
    fn deliver(&self, replies: Vec<R::Reply>) {
        let mut done = Vec::with_capacity(replies.len());
        {
            let mut state = self.state();
            for reply in replies {
                // A reply to a call nobody waits for (cancelled) is dropped.
                if let Some(pending) = state.pending.remove(&reply.id()) {
                    done.push((pending.tx, reply));
                }
            }
        }
        for (tx, reply) in done {
            let _ = tx.send(reply.outcome());
        }
    }

    /// Closes the stream and fails every call still waiting: those never written as not sent,
    /// the others with `failure` — the node's refusal when it refused the stream (no call ran),
    /// else a failure that proves nothing.
    fn fail(&self, failure: &Status, refused: bool) {
        self.closed.store(true, Ordering::Release);
        let pending: Vec<Pending<R>> = {
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
async fn run<B: BatchMessage, R: RepliesMessage, O: Opener<B, R>>(
    stream: Arc<Stream<B, R>>,
    opener: O,
    outbound: Outbound<B>,
) {
    let mut replies = match opener.open(outbound).await {
        Ok(replies) => replies,
        Err(status) => {
            let refused = opener.is_refusal(&status);
            tracing::debug!(error = %status, "cannot open a call stream");
            stream.fail(&status, refused);
            return;
        }
    };
    let failure = loop {
        match replies.message().await {
            Ok(Some(batch)) => stream.deliver(batch.into_replies()),
            Ok(None) => break Status::unavailable("the node ended the call stream"),
            Err(status) => break status,
        }
    };
    tracing::debug!(error = %failure, "call stream ended");
    stream.fail(&failure, false);
}

/// What an [`Outbound`] needs of its stream, whatever its replies.
trait Shared<C>: Send + Sync {
    /// The stream failed.
    fn closed(&self) -> bool;
    /// Keeps the calls whose callers still wait, marked written and told their time left.
    fn mark_written(&self, calls: &mut Vec<C>);
}

impl<B: BatchMessage, R: RepliesMessage> Shared<B::Call> for Stream<B, R> {
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn mark_written(&self, calls: &mut Vec<B::Call>) {
        let mut state = self.state();
        let now = Instant::now();
        calls.retain_mut(|call| match state.pending.get_mut(&call.id()) {
            Some(pending) => {
                pending.sent = true;
                let left = pending.deadline.saturating_duration_since(now);
                call.set_timeout_ms(u32::try_from(left.as_millis().max(1)).unwrap_or(u32::MAX));
                true
            }
            None => false,
        });
    }
}

/// The calls written on a stream: each message takes every cancellation and call queued when
/// the transport asks for one, up to [`MAX_CALLS_PER_MESSAGE`] and [`MAX_MESSAGE_BYTES`] (see
/// the module's "batching without waiting"). Ends when the stream fails.
pub struct Outbound<B: BatchMessage> {
    stream: Arc<dyn Shared<B::Call>>,
    calls: mpsc::Receiver<B::Call>,
    controls: mpsc::UnboundedReceiver<Control>,
    /// A call taken from the queue that did not fit the previous message.
    carry: Option<B::Call>,
    max_bytes: usize,
    /// The last message carried more than one call.
    loaded: bool,
    /// Already yielded once for the message being collected.
    yielded: bool,
}

// Nothing in it is ever pinned: the calls it holds are moved, never polled.
impl<B: BatchMessage> Unpin for Outbound<B> {}

impl<B: BatchMessage> futures::Stream for Outbound<B> {
    type Item = B;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<B>> {
        let this = &mut *self;
        loop {
            if this.stream.closed() {
                return Poll::Ready(None);
            }
            if this.loaded && !this.yielded {
                // Under load: let callers about to queue join this message.
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut batch = Batch::<B::Call>::default();
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
            while batch.calls.len() < MAX_CALLS_PER_MESSAGE && bytes < this.max_bytes {
                match this.calls.poll_recv(cx) {
                    Poll::Ready(Some(call)) => {
                        let len = call.encoded_len();
                        if !batch.calls.is_empty() && bytes + len > this.max_bytes {
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
            // Calls whose callers gave up before they were written are not sent at all; the
            // others are marked sent, and told the time their callers have left.
            this.stream.mark_written(&mut batch.calls);
            this.yielded = false;
            if batch.calls.is_empty() && batch.cancel.is_empty() {
                continue;
            }
            this.loaded = batch.calls.len() > 1;
            return Poll::Ready(Some(B::new(batch.calls, batch.cancel)));
        }
    }
}

/// A message being collected.
struct Batch<C> {
    calls: Vec<C>,
    cancel: Vec<u64>,
}

impl<C> Default for Batch<C> {
    fn default() -> Self {
        Batch {
            calls: Vec::new(),
            cancel: Vec::new(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Call {
        #[prost(uint64, tag = "1")]
        id: u64,
        #[prost(uint32, tag = "2")]
        timeout_ms: u32,
        #[prost(bytes = "vec", tag = "3")]
        payload: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Calls {
        #[prost(message, repeated, tag = "1")]
        calls: Vec<Call>,
        #[prost(uint64, repeated, tag = "2")]
        cancel: Vec<u64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Reply {
        #[prost(uint64, tag = "1")]
        id: u64,
        #[prost(int32, tag = "2")]
        code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Replies {
        #[prost(message, repeated, tag = "1")]
        replies: Vec<Reply>,
    }

    impl CallMessage for Call {
        fn id(&self) -> u64 {
            self.id
        }
        fn set_id(&mut self, id: u64) {
            self.id = id;
        }
        fn timeout_ms(&self) -> u32 {
            self.timeout_ms
        }
        fn set_timeout_ms(&mut self, ms: u32) {
            self.timeout_ms = ms;
        }
    }

    impl BatchMessage for Calls {
        type Call = Call;
        fn new(calls: Vec<Call>, cancel: Vec<u64>) -> Self {
            Calls { calls, cancel }
        }
        fn into_parts(self) -> (Vec<Call>, Vec<u64>) {
            (self.calls, self.cancel)
        }
    }

    impl ReplyMessage for Reply {
        type Output = ();
        fn id(&self) -> u64 {
            self.id
        }
        fn ok(id: u64, (): ()) -> Self {
            Reply { id, code: 0 }
        }
        fn failed(id: u64, status: &Status) -> Self {
            Reply {
                id,
                code: status.code() as i32,
            }
        }
        fn outcome(self) -> Result<(), Status> {
            match self.code {
                0 => Ok(()),
                code => Err(Status::new(tonic::Code::from_i32(code), "failed")),
            }
        }
    }

    impl RepliesMessage for Replies {
        type Reply = Reply;
        fn new(replies: Vec<Reply>) -> Self {
            Replies { replies }
        }
        fn into_replies(self) -> Vec<Reply> {
            self.replies
        }
    }

    type TestStream = Stream<Calls, Replies>;

    fn pending(
        stream: &TestStream,
        id: u64,
        sent: bool,
        deadline: Instant,
    ) -> oneshot::Receiver<Result<(), Status>> {
        let (tx, rx) = oneshot::channel();
        stream
            .state()
            .pending
            .insert(id, Pending { tx, sent, deadline });
        rx
    }

    fn failure(mut rx: oneshot::Receiver<Result<(), Status>>) -> Status {
        match rx.try_recv() {
            Ok(Err(status)) => status,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn is_broken(status: &Status) -> bool {
        std::error::Error::source(status).is_some_and(|e| e.is::<crate::StreamBroken>())
    }

    /// The rule callers stand on: when a stream fails, a call still queued was never sent (a
    /// write may go elsewhere), one written may have run.
    #[tokio::test]
    async fn a_failed_stream_fails_queued_calls_as_not_sent_and_written_ones_as_broken() {
        let (stream, _outbound) = TestStream::new(MAX_MESSAGE_BYTES);
        let queued = pending(&stream, 1, false, Instant::now());
        let written = pending(&stream, 2, true, Instant::now());
        stream.fail(&Status::unavailable("connection reset"), false);
        let queued = failure(queued);
        assert!(crate::is_not_sent(&queued), "{queued:?}");
        let written = failure(written);
        assert!(
            !crate::is_not_sent(&written) && is_broken(&written),
            "{written:?}"
        );
        assert!(stream.closed.load(Ordering::Acquire));
        assert!(stream.state().pending.is_empty());
        assert!(stream.state().closed);
    }

    /// A stream the peer refused at open ran none of its calls: each gets the peer's status.
    #[tokio::test]
    async fn a_refused_stream_passes_the_peers_status_to_every_call() {
        let (stream, _outbound) = TestStream::new(MAX_MESSAGE_BYTES);
        let queued = pending(&stream, 1, false, Instant::now());
        let written = pending(&stream, 2, true, Instant::now());
        stream.fail(&Status::unauthenticated("no credential"), true);
        for rx in [queued, written] {
            let status = failure(rx);
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(std::error::Error::source(&status).is_none());
        }
    }

    /// Written calls are marked sent and told their time left; calls whose callers gave up are
    /// not written; a call too large to join a message goes in the next one; cancellations go
    /// beside the calls; a failed stream ends its request half.
    #[tokio::test]
    async fn outbound_marks_what_it_writes_and_skips_abandoned_calls() {
        use futures::StreamExt as _;
        let (stream, mut outbound) = TestStream::new(1000);
        let call = |id: u64, bytes: usize| Call {
            id,
            timeout_ms: 0,
            payload: vec![0; bytes],
        };
        let later = Instant::now() + std::time::Duration::from_secs(5);
        let _waiting: Vec<_> = [1, 3, 4]
            .into_iter()
            .map(|id| pending(&stream, id, false, later))
            .collect();
        stream.queue.try_send(call(1, 10)).expect("room");
        // Abandoned before it was written: no pending entry.
        stream.queue.try_send(call(2, 10)).expect("room");
        stream.queue.try_send(call(3, 2000)).expect("room");
        stream.queue.try_send(call(4, 10)).expect("room");
        stream.control.send(Control::Cancel(9)).expect("open");
        let first = outbound.next().await.expect("a message");
        assert_eq!(first.calls.iter().map(|c| c.id).collect::<Vec<_>>(), [1]);
        assert_eq!(first.cancel, [9]);
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
