//! The coordinator's call streams against scripted nodes: replies find their callers whatever
//! their order, a call's deadline and cancellation reach the node, a node dying mid-batch fails
//! every waiting call (never a hang) with what is proven, a slow node holds callers back, and the
//! credential is checked on the stream and on each call.

use std::sync::Arc;
use std::time::Duration;

use pairdb_coordinator::calls::{CallStreams, call_of};
use pairdb_coordinator::pool::{Failure, NodePool, classify};
use pairdb_core::{NodeAddr, Placement};
use pairdb_mux::server::MAX_CALLS_IN_FLIGHT;
use pairdb_proto::storage as pb;
use pairdb_proto::storage::RefusalReason;
use pairdb_proto::storage::call::Op;
use pairdb_proto::storage::reply::Result as ReplyResult;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::Code;

use crate::fake::{Counters, FakeNode, Step, TENANT, TOKEN};

/// Bounds every wait, so a hang fails the test instead of stalling it.
const PATIENCE: Duration = Duration::from_secs(10);
/// The epoch of [`node`]'s placement (the initial one, then the tenant added).
const EPOCH: u64 = 2;

/// One scripted node with its placement installed, and a pool whose clients present `token`.
async fn node(token: &str) -> (FakeNode, NodePool) {
    let fake = FakeNode::start("n1");
    let placement = Placement::initial(
        vec![NodeAddr {
            id: "n1".into(),
            address: fake.addr.to_string(),
        }],
        8,
    )
    .with_tenant(TENANT, 1);
    assert_eq!(placement.epoch, EPOCH);
    fake.state
        .install(placement.clone())
        .await
        .expect("placement installed");
    let pool = NodePool::new(token, 3, Duration::from_secs(1)).expect("pool");
    pool.sync(&placement);
    (fake, pool)
}

/// `n` streams to the pool's node.
fn streams(pool: &NodePool, n: usize) -> Arc<CallStreams> {
    Arc::new(pairdb_coordinator::calls::streams(
        pool.get("n1").expect("node in pool").client(),
        n,
    ))
}

fn key(k: &str) -> Option<pb::KeyRef> {
    Some(pb::KeyRef {
        namespace: TENANT.into(),
        key: k.as_bytes().to_vec(),
    })
}

fn read(k: &str) -> pb::Call {
    call_of(Op::Read(pb::ReadRequest {
        epoch: EPOCH,
        key: key(k),
    }))
}

fn mint(k: &str, value: &str) -> pb::Call {
    call_of(Op::Mint(pb::MintRequest {
        epoch: EPOCH,
        key: key(k),
        value: value.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        ..pb::MintRequest::default()
    }))
}

fn later() -> Instant {
    Instant::now() + PATIENCE
}

fn value_of(result: Result<ReplyResult, tonic::Status>) -> Option<Vec<u8>> {
    match result {
        Ok(ReplyResult::Read(r)) => r.version.map(|v| v.value),
        other => panic!("expected a read reply, got {other:?}"),
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_find_their_callers_whatever_their_order() {
    let (fake, pool) = node(TOKEN).await;
    let calls = streams(&pool, 1);
    for i in 0..20 {
        let minted = calls
            .call(mint(&format!("k{i}"), &format!("v{i}")), later())
            .await;
        assert!(matches!(minted, Ok(ReplyResult::Mint(_))), "{minted:?}");
    }
    // The first read is held on the node; the others, on the same stream, overtake it.
    let go = Arc::new(Notify::new());
    fake.script.read([Step::After(Arc::clone(&go))]);
    let held = tokio::spawn({
        let calls = Arc::clone(&calls);
        async move { calls.call(read("k0"), later()).await }
    });
    until("the held read to arrive", || {
        Counters::get(&fake.counters.reads) == 1
    })
    .await;
    let overtaking = futures::future::join_all((1..20).map(|i| {
        let calls = Arc::clone(&calls);
        async move { (i, calls.call(read(&format!("k{i}")), later()).await) }
    }))
    .await;
    for (i, result) in overtaking {
        assert_eq!(value_of(result), Some(format!("v{i}").into_bytes()));
    }
    assert!(!held.is_finished(), "the held read answered early");
    go.notify_one();
    let held = tokio::time::timeout(PATIENCE, held)
        .await
        .expect("the held read answers once released")
        .expect("task");
    assert_eq!(value_of(held), Some(b"v0".to_vec()));
}

#[tokio::test]
async fn a_call_past_its_deadline_is_ended_by_the_node() {
    let (fake, pool) = node(TOKEN).await;
    let calls = streams(&pool, 1);
    fake.script.read([Step::Hang]);
    let started = Instant::now();
    let status = calls
        .call(read("k"), started + Duration::from_millis(300))
        .await
        .expect_err("a hung call fails");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // It was sent: whether it ran is not proven.
    assert_eq!(classify(&status), Failure::Unknown);
    assert!(started.elapsed() < PATIENCE);
    // The stream goes on serving.
    assert_eq!(value_of(calls.call(read("k"), later()).await), None);
}

#[tokio::test]
async fn a_cancelled_call_is_dropped_on_the_node() {
    let (fake, pool) = node(TOKEN).await;
    let calls = streams(&pool, 1);
    let go = Arc::new(Notify::new());
    fake.script.mint([Step::After(Arc::clone(&go))]);
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        calls.call(mint("k", "never"), later()),
    )
    .await;
    assert!(gave_up.is_err(), "the held mint answered: {gave_up:?}");
    assert_eq!(Counters::get(&fake.counters.mints), 1);
    // The cancellation travels on the stream; give it time to land before releasing the call.
    tokio::time::sleep(Duration::from_millis(300)).await;
    go.notify_one();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(Counters::get(&fake.counters.mints_served), 0);
    assert!(fake.stored("k").is_none(), "the cancelled mint was applied");
    // The stream is unharmed.
    let minted = calls.call(mint("k", "later"), later()).await;
    assert!(matches!(minted, Ok(ReplyResult::Mint(_))), "{minted:?}");
    assert_eq!(fake.stored("k").map(|v| v.value), Some(b"later".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dying_mid_batch_fails_every_waiting_call() {
    let (mut fake, pool) = node(TOKEN).await;
    let calls = streams(&pool, 1);
    fake.script.mint([Step::PassThenHang]);
    fake.script.read([Step::Hang, Step::Hang]);
    let served = fake.counters.served.notified();
    let mut waiting = Vec::new();
    waiting.push(tokio::spawn({
        let calls = Arc::clone(&calls);
        async move { calls.call(mint("k", "v"), later()).await }
    }));
    served.await;
    for _ in 0..2 {
        let calls = Arc::clone(&calls);
        waiting.push(tokio::spawn(
            async move { calls.call(read("k"), later()).await },
        ));
    }
    until("both reads to arrive", || {
        Counters::get(&fake.counters.reads) == 2
    })
    .await;
    fake.kill();
    for call in waiting {
        let status = tokio::time::timeout(PATIENCE, call)
            .await
            .expect("no call hangs on a dead node")
            .expect("task")
            .expect_err("a dead node answers nothing");
        // Each was written before the node died: nothing is proven.
        assert_eq!(classify(&status), Failure::Unknown, "{status:?}");
    }
    assert!(fake.stored("k").is_some(), "the mint had been applied");
    // A call made once the node is gone provably never reached it.
    let status = tokio::time::timeout(PATIENCE, calls.call(read("k"), later()))
        .await
        .expect("no hang")
        .expect_err("nothing answers");
    assert_eq!(classify(&status), Failure::NotSent, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_holds_callers_back_and_loses_none() {
    let (fake, pool) = node(TOKEN).await;
    let calls = streams(&pool, 1);
    let total = MAX_CALLS_IN_FLIGHT * 2 + 500;
    let go = Arc::new(Notify::new());
    fake.script
        .read((0..total).map(|_| Step::After(Arc::clone(&go))));
    let tasks: Vec<_> = (0..total)
        .map(|i| {
            let calls = Arc::clone(&calls);
            // Generous: thousands of calls on a shared two-core machine.
            let deadline = Instant::now() + 6 * PATIENCE;
            tokio::spawn(async move { calls.call(read(&format!("k{i}")), deadline).await })
        })
        .collect();
    until("the node to fill its bound", || {
        Counters::get(&fake.counters.reads) == MAX_CALLS_IN_FLIGHT
    })
    .await;
    // Held at the bound: the rest wait on the stream and in its queue, none fails.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(Counters::get(&fake.counters.reads), MAX_CALLS_IN_FLIGHT);
    assert!(tasks.iter().all(|t| !t.is_finished()));
    // Released, every call answers.
    let released = tokio::spawn({
        let go = Arc::clone(&go);
        async move {
            loop {
                go.notify_waiters();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    for task in tasks {
        let result = tokio::time::timeout(PATIENCE, task)
            .await
            .expect("every call answers")
            .expect("task");
        assert_eq!(value_of(result), None);
    }
    released.abort();
    assert_eq!(Counters::get(&fake.counters.reads), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_share_a_stream_without_breaking_it() {
    let (fake, pool) = node(TOKEN).await;
    let calls = streams(&pool, 1);
    // Twelve 1 MiB writes at once: far past one message's worth, so they must be spread over
    // several.
    let value = "v".repeat(1 << 20);
    let minted = futures::future::join_all((0..12).map(|i| {
        let calls = Arc::clone(&calls);
        let value = value.clone();
        async move { calls.call(mint(&format!("big{i}"), &value), later()).await }
    }))
    .await;
    for (i, result) in minted.into_iter().enumerate() {
        assert!(
            matches!(result, Ok(ReplyResult::Mint(_))),
            "write {i}: {result:?}"
        );
    }
    // And read back at once: the replies, too, are spread over messages.
    let read = futures::future::join_all((0..12).map(|i| {
        let calls = Arc::clone(&calls);
        async move { calls.call(read(&format!("big{i}")), later()).await }
    }))
    .await;
    for result in read {
        assert_eq!(value_of(result).map(|v| v.len()), Some(1 << 20));
    }
    assert_eq!(fake.stored("big11").map(|v| v.value.len()), Some(1 << 20));
}

#[tokio::test]
async fn the_credential_is_checked_on_the_stream_and_on_each_call() {
    // A real node refuses the stream itself: no call runs.
    let (fake, pool) = node("wrong-token").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let real = real_node(dir.path()).await;
    let real_pool = NodePool::new("wrong-token", 3, Duration::from_secs(1)).expect("pool");
    real_pool.sync(&Placement::initial(
        vec![NodeAddr {
            id: "n1".into(),
            address: real.0.to_string(),
        }],
        8,
    ));
    let status = streams(&real_pool, 1)
        .call(read("k"), later())
        .await
        .expect_err("refused");
    assert_eq!(
        classify(&status),
        Failure::Refused(refusal(RefusalReason::Unauthenticated)),
        "{status:?}"
    );
    let _ = real.1.send(());

    // The scripted node opens any stream, but each call is checked with the stream's
    // credential, exactly as a unary call: refused, and nothing minted.
    let status = streams(&pool, 1)
        .call(mint("k", "v"), later())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        classify(&status),
        Failure::Refused(refusal(RefusalReason::Unauthenticated))
    );
    assert!(fake.stored("k").is_none());
}

fn refusal(reason: RefusalReason) -> pb::Refusal {
    pb::Refusal {
        reason: reason as i32,
        node_epoch: 0,
        magic: pairdb_proto::REFUSAL_MAGIC,
    }
}

/// The real storage service (memory engine) on a port of its own; send on the returned channel
/// to stop it.
async fn real_node(
    dir: &std::path::Path,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    use pairdb_storage::engine::StorageEngine as _;
    let engine = Arc::new(pairdb_storage::memory::MemoryEngine::new(
        Duration::from_secs(3600),
    ));
    let state = Arc::new(
        pairdb_storage::node::NodeState::open(dir, "n1", engine.is_durable()).expect("state"),
    );
    let service = pairdb_storage::service::StorageService::new(engine, state, TOKEN);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(pairdb_storage::server::run(service, listener, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}
