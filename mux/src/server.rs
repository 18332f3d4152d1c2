//! A service's side of a call stream.
//!
//! What a stream guarantees, call by call, is what a unary RPC guarantees:
//!
//! * **Independence.** Each call runs on a task of its own, in parallel with the others, and its
//!   reply is written as soon as it is ready, in any order, under the call's id. A call's
//!   failure is its reply (the unary status, details included); it never ends the stream.
//! * **Deadline and cancellation.** A call with a timeout is dropped when that much time has
//!   passed since it arrived, and answered `DEADLINE_EXCEEDED`; a cancelled id drops its call and
//!   gets no reply — as a unary call whose stream was reset. A call that panics is answered
//!   `INTERNAL`.
//! * **Backpressure.** At most [`MAX_CALLS_IN_FLIGHT`] calls of one stream run at once; past
//!   that the service stops reading the stream, and HTTP/2 flow control holds the caller back.
//! * **Stop.** When the server stops, the calls received but not started are answered with
//!   [`ServeOptions::shutting_down`], the running ones answer, and the stream ends, so a graceful
//!   shutdown never waits on a caller. A broken stream, a caller that stops reading replies, and
//!   a protocol error (an id reused while its call runs, more than [`MAX_CALLS_PER_MESSAGE`]
//!   calls in a message) drop the running calls and end the stream.
//! * **Coalescing.** Replies ready together leave in one message, up to
//!   [`MAX_REPLIES_PER_MESSAGE`] and [`ServeOptions::max_reply_bytes`]; nothing waits to fill
//!   one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::FutureExt as _;
use prost::Message as _;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tonic::{Status, Streaming};

use crate::{BatchMessage, CallMessage, RepliesMessage, ReplyMessage};

/// Calls of one stream running at once; past it the service reads no more of the stream.
pub const MAX_CALLS_IN_FLIGHT: usize = 1024;
/// Most replies in one message of the stream.
pub const MAX_REPLIES_PER_MESSAGE: usize = 256;
/// Most calls one message may carry; more is a protocol error that ends the stream.
pub const MAX_CALLS_PER_MESSAGE: usize = 4096;

/// How a stream ends when its server stops, and how large its messages grow.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Turns true when the server stops.
    pub stopping: watch::Receiver<bool>,
    /// The answer to calls received but not started when it does (nothing ran).
    pub shutting_down: Status,
    /// Bytes of replies past which a message takes no more (a larger reply goes alone): under
    /// what the caller decodes.
    pub max_reply_bytes: usize,
}

/// Serves the call stream `incoming`: each call is `handle`d on a task of its own. Returns the
/// stream of replies.
pub fn serve<B, R, H, Fut>(
    incoming: Streaming<B>,
    handle: H,
    options: ServeOptions,
) -> ReplyStream<R>
where
    B: BatchMessage,
    R: RepliesMessage,
    H: Fn(B::Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<<R::Reply as ReplyMessage>::Output, Status>> + Send + 'static,
{
    let (replies, rx) = mpsc::channel(MAX_CALLS_IN_FLIGHT);
    let max_bytes = options.max_reply_bytes;
    tokio::spawn(drive(incoming, Arc::new(handle), replies, options));
    ReplyStream {
        rx,
        carry: None,
        max_bytes,
    }
}

/// The replies of a call stream: every reply ready when polled goes in one message.
pub struct ReplyStream<R: RepliesMessage> {
    rx: mpsc::Receiver<R::Reply>,
    /// A reply taken that did not fit the previous message.
    carry: Option<R::Reply>,
    max_bytes: usize,
}

// Nothing in it is ever pinned: the replies it holds are moved, never polled.
impl<R: RepliesMessage> Unpin for ReplyStream<R> {}

impl<R: RepliesMessage> futures::Stream for ReplyStream<R> {
    type Item = Result<R, Status>;

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
        while replies.len() < MAX_REPLIES_PER_MESSAGE && bytes < this.max_bytes {
            match this.rx.try_recv() {
                Ok(reply) => {
                    let len = reply.encoded_len();
                    if bytes + len > this.max_bytes {
                        this.carry = Some(reply);
                        break;
                    }
                    bytes += len;
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        Poll::Ready(Some(Ok(R::new(replies))))
    }
}

/// The calls of one stream still running, by id.
type Running = Arc<Mutex<HashMap<u64, AbortHandle>>>;

fn lock(running: &Running) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
    running.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads the stream and starts its calls until the caller closes it (running calls then finish
/// and answer), it breaks or the caller stops reading replies, a protocol error, or the server
/// stops.
async fn drive<B, Rp, H, Fut>(
    mut incoming: Streaming<B>,
    handle: Arc<H>,
    replies: mpsc::Sender<Rp>,
    options: ServeOptions,
) where
    B: BatchMessage,
    Rp: ReplyMessage,
    H: Fn(B::Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Rp::Output, Status>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT));
    let running: Running = Arc::new(Mutex::new(HashMap::new()));
    let mut stopping = options.stopping.clone();
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
                    let (calls, cancelled) = batch.into_parts();
                    cancel(&running, &cancelled);
                    for call in calls {
                        let _ = replies.try_send(Rp::failed(call.id(), &options.shutting_down));
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
        let (calls, cancelled) = batch.into_parts();
        cancel(&running, &cancelled);
        if calls.len() > MAX_CALLS_PER_MESSAGE {
            return drop_all("a message carried too many calls");
        }
        for call in calls {
            // Its deadline runs from its arrival, whatever it waits for here.
            let deadline = match call.timeout_ms() {
                0 => None,
                ms => Some(Instant::now() + Duration::from_millis(u64::from(ms))),
            };
            let permit = tokio::select! {
                biased;
                () = replies.closed() => return drop_all("the caller stopped reading replies"),
                () = stopped(&mut stopping) => {
                    let _ = replies.try_send(Rp::failed(call.id(), &options.shutting_down));
                    continue;
                }
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let id = call.id();
            let task = run(
                id,
                handle(call),
                deadline,
                replies.clone(),
                Arc::clone(&running),
            );
            // Registered under the lock the task takes to unregister, so it cannot finish first.
            let mut calls = lock(&running);
            if calls.contains_key(&id) {
                drop(calls);
                return drop_all("a call id was reused while in flight");
            }
            let task = tokio::spawn(async move {
                let _permit = permit;
                task.await;
            });
            calls.insert(id, task.abort_handle());
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

/// Runs one call until its deadline and sends its reply.
async fn run<Rp, Fut>(
    id: u64,
    work: Fut,
    deadline: Option<Instant>,
    replies: mpsc::Sender<Rp>,
    running: Running,
) where
    Rp: ReplyMessage,
    Fut: Future<Output = Result<Rp::Output, Status>> + Send,
{
    // A panic answers like an error the service did not refuse: it may have changed something.
    let work = std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .map(|done| {
            done.unwrap_or_else(|_| {
                tracing::error!("a call of a call stream panicked");
                Err(Status::internal("the call failed"))
            })
        });
    let result = match deadline {
        None => work.await,
        Some(deadline) => tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("the call's timeout passed"))),
    };
    lock(&running).remove(&id);
    let reply = match result {
        Ok(output) => Rp::ok(id, output),
        Err(status) => Rp::failed(id, &status),
    };
    // A caller that went away takes no reply.
    let _ = replies.send(reply).await;
}
