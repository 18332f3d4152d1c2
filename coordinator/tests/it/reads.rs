//! The read path against scripted storage nodes: late answers folded in and repaired.

use std::sync::Arc;

use pairdb_core::version::{MintRequest, mint};
use pairdb_core::{Actor, Consistency, Hlc, Version};
use tokio::sync::Notify;
use tonic::Code;

use crate::fake::*;

fn version(value: &str, stored: Option<&Version>, actor: &str, hlc: &Hlc) -> Version {
    let request = MintRequest {
        value: value.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        context: stored.map(Version::context),
        ..MintRequest::default()
    };
    mint(stored, request, &Actor::new(actor, 1), hlc).0
}

/// Holds `node`'s next read until the returned notification fires.
fn late(node: &FakeNode) -> Arc<Notify> {
    let go = Arc::new(Notify::new());
    node.script.read([Step::After(Arc::clone(&go))]);
    go
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_holding_the_only_copy_reaches_the_others() {
    let f = Fixture::start().await;
    let [a, b, c] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    let hlc = Hlc::new();
    let only = version("only", None, "n9", &hlc);
    c.put("k", only.clone());
    let go = late(c);

    // The first two answers (quorum) are both "missing": the client sees nothing.
    let out = f
        .replicator
        .read(get("k", Consistency::Quorum, LONG))
        .await
        .expect("read");
    assert_eq!(out.version, None);
    assert_eq!(out.answered, 2);

    go.notify_one();
    eventually("the late copy repaired onto a and b", || {
        a.stored("k") == Some(only.clone()) && b.stored("k") == Some(only.clone())
    })
    .await;
    assert_eq!(c.stored("k"), Some(only));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_newer_answer_reaches_the_early_ones() {
    let f = Fixture::start().await;
    let [a, b, c] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    let hlc = Hlc::new();
    let old = version("old", None, "n9", &hlc);
    let new = version("new", Some(&old), "n9", &hlc);
    a.put("k", old.clone());
    b.put("k", old.clone());
    c.put("k", new.clone());
    let go = late(c);

    let out = f
        .replicator
        .read(get("k", Consistency::Quorum, LONG))
        .await
        .expect("read");
    assert_eq!(out.version, Some(old));
    assert_eq!(out.read_repairs, 0, "the first answers agreed");

    go.notify_one();
    eventually("the newer version on a and b", || {
        a.stored("k") == Some(new.clone()) && b.stored("k") == Some(new.clone())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_concurrent_answer_makes_everyone_hold_the_join() {
    let f = Fixture::start().await;
    let [a, b, c] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    let hlc = Hlc::new();
    let x = version("x", None, "n8", &hlc);
    let y = version("y", None, "n9", &hlc);
    assert!(x.is_concurrent_with(&y));
    let join = x.resolve(&y);
    a.put("k", x.clone());
    b.put("k", x.clone());
    c.put("k", y.clone());
    let go = late(c);

    let out = f
        .replicator
        .read(get("k", Consistency::Quorum, LONG))
        .await
        .expect("read");
    assert_eq!(out.version, Some(x));

    go.notify_one();
    eventually("the join on every replica", || {
        [a, b, c]
            .iter()
            .all(|n| n.stored("k") == Some(join.clone()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_stale_answers_are_repaired_before_answering_at_quorum() {
    let f = Fixture::start().await;
    let [a, b, c] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    let hlc = Hlc::new();
    let old = version("old", None, "n9", &hlc);
    let new = version("new", Some(&old), "n9", &hlc);
    a.put("k", new.clone());
    b.put("k", old);
    // c answers only after the client's answer.
    let go = late(c);
    let out = f
        .replicator
        .read(get("k", Consistency::Quorum, LONG))
        .await
        .expect("read");
    assert_eq!(out.version, Some(new.clone()));
    assert_eq!(out.read_repairs, 1, "b was repaired before the answer");
    assert_eq!(b.stored("k"), Some(new.clone()));
    go.notify_one();
    eventually("c, which held nothing, repaired too", || {
        c.stored("k") == Some(new.clone())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_never_rewrites_an_applied_keys_entry() {
    use pairdb_storage::engine::StorageEngine as _;
    let f = Fixture::start().await;
    let [a, b, c] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    // c misses the write (it gets a hint, never replayed here: no maintenance runs).
    c.script.apply([Step::Bare(Code::Unavailable)]);
    let written = f
        .replicator
        .write(put("k", "v", Consistency::Quorum, "idem-r", LONG))
        .await
        .expect("write");
    // A concurrent, older version reaches c only; a read at `all` repairs everyone with the
    // join, whose payload — and idempotency key — is the written version's (it resolves
    // greater). A repair that recorded applied keys would rewrite its entries with the join.
    let earlier = written.version.timestamp - 1;
    let other = Version {
        value: b"other".to_vec(),
        clock: pairdb_core::VectorClock::from_dots([(
            Actor::new("n9", 1),
            pairdb_core::vclock::Dot {
                last: earlier,
                counter: 1,
            },
        )]),
        timestamp: earlier,
        minted_by: "n9".into(),
        ..Version::default()
    };
    c.put("k", other);
    let read = f
        .replicator
        .read(get("k", Consistency::All, LONG))
        .await
        .expect("read");
    let join = read.version.expect("the join");
    assert_eq!(join.idempotency_key, "idem-r");
    assert_ne!(
        join.clock, written.version.clock,
        "the join merged the other clock"
    );
    assert!(read.read_repairs >= 2, "the join repaired the replicas");
    let key = pairdb_core::StorageKey::new(TENANT, b"k").expect("key");
    // c now holds the join, which carries idem-r, yet repair recorded nothing there.
    assert_eq!(
        c.stored("k").map(|v| v.idempotency_key),
        Some("idem-r".into())
    );
    assert_eq!(c.engine.applied(&key, "idem-r").expect("applied"), None);
    for n in [a, b] {
        let entry = n.engine.applied(&key, "idem-r").expect("applied");
        assert_eq!(
            entry.map(|w| w.version),
            Some(written.version.clone()),
            "{} rewrote the entry",
            n.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_arriving_during_the_blocking_repair_is_not_lost() {
    let f = Fixture::start().await;
    let [a, b, c] = <[&FakeNode; 3]>::try_from(f.replicas("k")).ok().expect("3");
    let hlc = Hlc::new();
    let old = version("old", None, "n9", &hlc);
    let new = version("new", Some(&old), "n9", &hlc);
    let newest = version("newest", Some(&new), "n9", &hlc);
    a.put("k", new.clone());
    b.put("k", old);
    c.put("k", newest.clone());
    // c answers only when told; b's repair (blocking, at quorum) holds until told.
    let go_c = late(c);
    let go_b = Arc::new(Notify::new());
    b.script.apply([Step::After(Arc::clone(&go_b))]);
    let replicator = f.replicator.clone();
    let read =
        tokio::spawn(async move { replicator.read(get("k", Consistency::Quorum, LONG)).await });
    // While the request repairs b, c's answer comes in: the request no longer reads answers, so
    // it waits in the channel for the repair task (or, if it lands just after the handover, the
    // task reads it directly; either way it must be folded in).
    eventually("b's repair under way", || {
        Counters::get(&b.counters.applies) == 1
    })
    .await;
    go_c.notify_one();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    go_b.notify_one();
    let out = read.await.expect("task").expect("read");
    assert_eq!(out.version, Some(new));
    // The answer it did not read still reaches everyone.
    eventually("the newest version on a and b", || {
        a.stored("k") == Some(newest.clone()) && b.stored("k") == Some(newest.clone())
    })
    .await;
}
