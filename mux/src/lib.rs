//! Call streams: many calls with ids over one long-lived bidirectional gRPC stream, instead of
//! an HTTP/2 stream (headers, trailers, a flush and a task each) per call. pairdb's internal data
//! paths use them — coordinators to storage nodes (`Storage.Calls`), gateways to coordinators
//! (`Coordinator.Calls`); unary RPCs stay for administration and for clients.
//!
//! * [`server`] — a service's side: each call runs on a task of its own, its reply goes out as
//!   soon as it is ready, in any order; deadlines, cancellation, a bound on calls in flight, and
//!   an end to the stream when the server stops;
//! * [`client`] — a caller's side: a few streams per peer, calls coalesced into one message while
//!   the stream is busy (never waiting when idle), and failures that say what is proven — a call
//!   never written fails [`NotSent`], one written to a stream that then failed [`StreamBroken`].
//!
//! A protocol is four prost messages, tied together by the traits below: a call (an id, a
//! timeout and the operation), a message of calls and cancelled ids, a reply (the id and a result
//! or the unary status), and a message of replies.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![warn(missing_docs)]

pub mod client;
pub mod server;

pub use client::{CallStreams, Opener, Outbound};
pub use server::{ReplyStream, ServeOptions, serve};

/// One call of a stream.
pub trait CallMessage: prost::Message + Default + Send + 'static {
    /// Its id, unique among the caller's calls in flight on the stream.
    fn id(&self) -> u64;
    /// Sets its id (the client picks it).
    fn set_id(&mut self, id: u64);
    /// Milliseconds the caller waits for the reply; 0: no limit of its own.
    fn timeout_ms(&self) -> u32;
    /// Sets that time (the client sets it when the call is written).
    fn set_timeout_ms(&mut self, ms: u32);
}

/// A message of calls: new calls, and ids of calls the caller stopped waiting for.
pub trait BatchMessage: prost::Message + Default + Send + 'static {
    /// Its calls.
    type Call: CallMessage;
    /// A message of `calls` and `cancel`.
    fn new(calls: Vec<Self::Call>, cancel: Vec<u64>) -> Self;
    /// Its calls and cancelled ids.
    fn into_parts(self) -> (Vec<Self::Call>, Vec<u64>);
}

/// The reply to one call: a result, or the status its unary RPC would have answered.
pub trait ReplyMessage: prost::Message + Default + Send + 'static {
    /// What a successful call gives.
    type Output: Send + 'static;
    /// The id of the call it answers.
    fn id(&self) -> u64;
    /// The reply of call `id` that succeeded with `output`.
    fn ok(id: u64, output: Self::Output) -> Self;
    /// The reply of call `id` that failed with `status` (code, message and details kept).
    fn failed(id: u64, status: &tonic::Status) -> Self;
    /// The call's outcome.
    fn outcome(self) -> Result<Self::Output, tonic::Status>;
}

/// A message of replies.
pub trait RepliesMessage: prost::Message + Default + Send + 'static {
    /// Its replies.
    type Reply: ReplyMessage;
    /// A message of `replies`.
    fn new(replies: Vec<Self::Reply>) -> Self;
    /// Its replies.
    fn into_replies(self) -> Vec<Self::Reply>;
}

/// The error source of a call that was provably never written to a stream: the caller may send
/// it elsewhere.
#[derive(Debug, thiserror::Error)]
#[error("the call was never sent: {0}")]
pub struct NotSent(pub String);

/// The error source of a call written to a stream that then failed: it may have run.
#[derive(Debug, thiserror::Error)]
#[error("the call stream failed after the call was sent: {0}")]
pub struct StreamBroken(pub String);

/// `UNAVAILABLE`, with [`NotSent`] as its source.
pub fn not_sent(why: impl Into<String>) -> tonic::Status {
    let why = why.into();
    let mut status = tonic::Status::unavailable(format!("call not sent: {why}"));
    status.set_source(std::sync::Arc::new(NotSent(why)));
    status
}

/// `UNAVAILABLE`, with [`StreamBroken`] as its source.
pub fn broken(why: impl Into<String>) -> tonic::Status {
    let why = why.into();
    let mut status = tonic::Status::unavailable(format!("call stream failed: {why}"));
    status.set_source(std::sync::Arc::new(StreamBroken(why)));
    status
}

/// True when `status` (or what it was made from) says its call was never written to a stream.
pub fn is_not_sent(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some_and(|e| e.is::<NotSent>())
}
