//! The node's side of call streams (`Storage.Calls`), spoken by hand: the credential checked
//! when the stream opens, replies under their ids, malformed calls refused one by one, a
//! cancelled call dropped, and a stopping node ending its streams instead of waiting on them.

use std::time::Duration;

use pairdb_proto::storage as pb;
use pairdb_proto::storage::call::Op;
use pairdb_proto::storage::reply::Result as ReplyResult;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use crate::support::{Client, TestNode, client, client_with_token, put, read, tempdir};

/// Bounds every wait, so a broken stream fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

/// An open call stream: the caller's half and the node's replies.
struct Open {
    calls: mpsc::Sender<pb::CallBatch>,
    replies: Streaming<pb::ReplyBatch>,
}

async fn open(c: &mut Client) -> Result<Open, tonic::Status> {
    let (calls, rx) = mpsc::channel(16);
    let replies = c.calls(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Open { calls, replies })
}

impl Open {
    async fn send(&self, calls: Vec<pb::Call>, cancel: Vec<u64>) {
        self.calls
            .send(pb::CallBatch { calls, cancel })
            .await
            .expect("the stream takes calls");
    }

    /// The next `n` replies, whatever messages they come in.
    async fn replies(&mut self, n: usize) -> Vec<pb::Reply> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = tokio::time::timeout(PATIENCE, self.replies.message())
                .await
                .expect("a reply in time")
                .expect("the stream is healthy")
                .expect("the stream is open");
            out.extend(batch.replies);
        }
        out
    }
}

fn call(id: u64, op: Op) -> pb::Call {
    pb::Call {
        id,
        timeout_ms: 0,
        traceparent: String::new(),
        op: Some(op),
    }
}

fn error_of(reply: &pb::Reply) -> tonic::Status {
    use pairdb_mux::ReplyMessage as _;
    match reply.clone().outcome() {
        Err(status) => status,
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_without_the_credential_is_refused_before_any_call_runs() {
    let dir = tempdir();
    let (node, _) = TestNode::with_epoch(dir.path(), 1).await;
    let mut c = client_with_token(node.addr, "wrong-token").await;
    let status = match open(&mut c).await {
        Ok(_) => panic!("the stream was accepted"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        pairdb_proto::refusal(&status).map(|r| r.reason()),
        Some(pb::RefusalReason::Unauthenticated)
    );
    node.stop().await;
}

#[tokio::test]
async fn replies_carry_their_calls_ids_and_bad_calls_are_refused_one_by_one() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    let mut stream = open(&mut c).await.expect("open");
    stream
        .send(
            vec![
                call(7, Op::Mint(put(1, "a", "va"))),
                call(9, Op::Mint(put(1, "b", "vb"))),
                // No operation: refused, and nothing else is affected.
                pb::Call {
                    id: 11,
                    ..pb::Call::default()
                },
                // A stale epoch: the unary refusal, details and all.
                call(13, Op::Read(read(0, "a"))),
            ],
            vec![],
        )
        .await;
    let mut replies = stream.replies(4).await;
    replies.sort_by_key(|r| r.id);
    assert_eq!(
        replies.iter().map(|r| r.id).collect::<Vec<_>>(),
        [7, 9, 11, 13]
    );
    assert!(matches!(replies[0].result, Some(ReplyResult::Mint(_))));
    assert!(matches!(replies[1].result, Some(ReplyResult::Mint(_))));
    let bad = error_of(&replies[2]);
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let stale = error_of(&replies[3]);
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert_eq!(
        pairdb_proto::refusal(&stale).map(|r| r.reason()),
        Some(pb::RefusalReason::StaleEpoch),
        "{stale:?}"
    );

    // Reads come back under their own ids, each with its own key's value.
    stream
        .send(
            vec![
                call(20, Op::Read(read(1, "b"))),
                call(21, Op::Read(read(1, "a"))),
            ],
            vec![],
        )
        .await;
    for reply in stream.replies(2).await {
        let Some(ReplyResult::Read(r)) = reply.result else {
            panic!("a read reply: {reply:?}");
        };
        let value = r.version.expect("stored").value;
        let expected: &[u8] = if reply.id == 20 { b"vb" } else { b"va" };
        assert_eq!(value, expected, "reply {}", reply.id);
    }
    drop(stream);
    node.stop().await;
}

#[tokio::test]
async fn a_stopping_node_ends_its_streams_instead_of_waiting_on_them() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    let mut stream = open(&mut c).await.expect("open");
    stream
        .send(vec![call(1, Op::Mint(put(1, "k", "v")))], vec![])
        .await;
    assert_eq!(stream.replies(1).await.len(), 1);
    // The caller keeps its half open; the stop must not wait for it.
    tokio::time::timeout(PATIENCE, node.stop())
        .await
        .expect("the node stopped with a call stream open");
    let end = tokio::time::timeout(PATIENCE, stream.replies.message())
        .await
        .expect("the stream ended in time");
    assert!(
        !matches!(end, Ok(Some(_))),
        "no reply after the stop: {end:?}"
    );
}

#[tokio::test]
async fn cancelling_an_unknown_or_finished_call_changes_nothing() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    let mut stream = open(&mut c).await.expect("open");
    stream
        .send(vec![call(1, Op::Mint(put(1, "k", "v")))], vec![])
        .await;
    stream.replies(1).await;
    stream
        .send(vec![call(2, Op::Read(read(1, "k")))], vec![1, 99])
        .await;
    let reply = stream.replies(1).await.remove(0);
    assert_eq!(reply.id, 2);
    assert!(
        matches!(reply.result, Some(ReplyResult::Read(_))),
        "{reply:?}"
    );
    let mut unary = client(node.addr).await;
    assert!(
        unary
            .read(read(1, "k"))
            .await
            .expect("read")
            .into_inner()
            .version
            .is_some()
    );
    drop(stream);
    node.stop().await;
}
