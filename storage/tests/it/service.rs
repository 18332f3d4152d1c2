//! The storage-node gRPC service over a real socket, with the memory engine: credentials,
//! epochs, minting, apply outcomes, reads, scans, digests, restarts — and the refusal every
//! error that changed nothing carries.

use pairdb_core::hlc::{LOGICAL_BITS, wall_ms};
use pairdb_core::version::{MintRequest, mint};
use pairdb_core::{Actor, Hlc, StorageKey, Version};
use pairdb_proto::convert::{version_from_pb, version_to_pb};
use pairdb_proto::storage as pb;
use pairdb_proto::storage::RefusalReason;
use pairdb_proto::storage::storage_client::StorageClient;
use pairdb_storage::engine::TokenRange;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};

use crate::support::*;

#[tokio::test]
async fn calls_without_the_credential_are_unauthenticated() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;

    let mut anonymous = StorageClient::new(channel(node.addr).await);
    assert_eq!(
        code(anonymous.health(pb::HealthRequest {}).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(anonymous.push_placement(push(1)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(anonymous.read(read(1, "k")).await),
        Code::Unauthenticated
    );

    let mut wrong = client_with_token(node.addr, "not-the-token").await;
    assert_eq!(
        code(wrong.health(pb::HealthRequest {}).await),
        Code::Unauthenticated
    );
    assert_eq!(
        refusal(wrong.mint(put(1, "k", "v")).await),
        RefusalReason::Unauthenticated,
        "a refused mint says so explicitly"
    );
    assert_eq!(
        code(wrong.mint(put(1, "k", "v")).await),
        Code::Unauthenticated
    );
    let mut prefix = client_with_token(node.addr, &TOKEN[..TOKEN.len() - 1]).await;
    assert_eq!(
        code(prefix.health(pb::HealthRequest {}).await),
        Code::Unauthenticated
    );

    // The raw token without the scheme is refused too.
    let raw: MetadataValue<Ascii> = TOKEN.parse().expect("ascii");
    let mut raw = StorageClient::with_interceptor(channel(node.addr).await, BearerToken(raw));
    assert_eq!(
        code(raw.health(pb::HealthRequest {}).await),
        Code::Unauthenticated
    );

    // Nothing the refused calls carried was acted on.
    let mut c = client(node.addr).await;
    let health = c
        .health(pb::HealthRequest {})
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.epoch, 0);
    assert_eq!(node.engine.stats().keys, 0);
    node.stop().await;
}

#[tokio::test]
async fn epochs_other_than_the_installed_one_are_refused() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;
    let mut c = client(node.addr).await;

    // Nothing installed yet: the caller must push first.
    let refused = c.read(read(1, "k")).await.expect_err("no placement");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("epoch 1 not installed"),
        "{}",
        refused.message()
    );

    assert_eq!(
        c.push_placement(push(2))
            .await
            .expect("push")
            .into_inner()
            .epoch,
        2
    );
    // A stale push is ignored and answered with the newest epoch.
    assert_eq!(
        c.push_placement(push(1))
            .await
            .expect("push")
            .into_inner()
            .epoch,
        2
    );

    let stale = c.read(read(1, "k")).await.expect_err("stale epoch");
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(stale.message(), "stale placement epoch 1: node has 2");
    let detail = pairdb_proto::refusal(&stale).expect("refusal");
    assert_eq!(
        (detail.reason(), detail.node_epoch),
        (RefusalReason::StaleEpoch, 2)
    );
    assert_eq!(
        refusal(c.mint(put(3, "k", "v")).await),
        RefusalReason::EpochNotInstalled
    );
    let future = c.read(read(3, "k")).await.expect_err("future epoch");
    assert_eq!(future.code(), Code::FailedPrecondition);
    assert_eq!(
        future.message(),
        "placement epoch 3 not installed (node has 2)"
    );

    // Every data RPC checks.
    assert_eq!(code(c.mint(put(1, "k", "v")).await), Code::Aborted);
    let apply = pb::ApplyRequest {
        epoch: 1,
        key: key_ref("t", "k"),
        version: Some(pb::Version::default()),
        record: None,
    };
    assert_eq!(code(c.apply(apply).await), Code::Aborted);
    let range = Some(pb::TokenRange {
        namespace: "t".into(),
        start: 0,
        end: u64::MAX,
    });
    let scan = pb::ScanRequest {
        epoch: 3,
        range: range.clone(),
        ..pb::ScanRequest::default()
    };
    assert_eq!(code(c.scan(scan).await), Code::FailedPrecondition);
    assert_eq!(
        code(c.digest(pb::DigestRequest { epoch: 1, range }).await),
        Code::Aborted
    );
    assert_eq!(node.engine.stats().keys, 0, "refused calls stored nothing");

    // The installed epoch proceeds.
    let ok = c
        .read(read(2, "k"))
        .await
        .expect("current epoch")
        .into_inner();
    assert_eq!(ok.version, None);
    let health = c
        .health(pb::HealthRequest {})
        .await
        .expect("health")
        .into_inner();
    assert_eq!((health.node_id.as_str(), health.epoch), (NODE, 2));
    node.stop().await;
}

#[tokio::test]
async fn mint_with_a_repeated_idempotency_key_is_deduplicated() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    let write = |value: &str, idem: &str| pb::MintRequest {
        idempotency_key: idem.into(),
        ..put(1, "k", value)
    };

    let inc = c
        .health(pb::HealthRequest {})
        .await
        .expect("health")
        .into_inner()
        .incarnation;
    let (first, r1) = mint_version(&mut c, write("v1", "w-1")).await;
    assert!(!r1.deduplicated && !r1.conflict);
    let (again, r2) = mint_version(&mut c, write("v1", "w-1")).await;
    assert!(r2.deduplicated && !r2.conflict);
    assert_eq!(again, first);
    let entries: Vec<_> = first.clock.entries().collect();
    assert_eq!(
        entries,
        vec![(&Actor::new(NODE, inc), 1)],
        "minted exactly once"
    );
    assert_eq!(first.idempotency_key, "w-1");
    assert_eq!(first.minted_by, NODE);

    // After another write replaced it, the applied-keys index still deduplicates a retry.
    let (second, r3) = mint_version(&mut c, with_context(write("v2", "w-2"), &first)).await;
    assert!(!r3.deduplicated && !r3.conflict);
    assert_eq!(second.clock.get(&Actor::new(NODE, inc)), 2);
    let (retry, r4) = mint_version(&mut c, write("v1", "w-1")).await;
    assert!(r4.deduplicated);
    assert_eq!(retry, first);

    // Nothing new was stored by the retries.
    let stored = c
        .read(read(1, "k"))
        .await
        .expect("read")
        .into_inner()
        .version;
    assert_eq!(
        stored.map(|v| version_from_pb(v).expect("valid")),
        Some(second)
    );
    // Writes without an idempotency key are never deduplicated.
    let (_, r5) = mint_version(&mut c, put(1, "k", "v3")).await;
    let (_, r6) = mint_version(&mut c, put(1, "k", "v3")).await;
    assert!(!r5.deduplicated && !r6.deduplicated);
    node.stop().await;
}

#[tokio::test]
async fn mint_reports_a_context_that_does_not_cover_the_stored_version() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;

    // A context on a key with nothing stored never conflicts.
    let (v1, r) = mint_version(&mut c, with_context(put(1, "k", "v1"), &Version::default())).await;
    assert!(!r.conflict);
    let (v2, r) = mint_version(&mut c, with_context(put(1, "k", "v2"), &v1)).await;
    assert!(!r.conflict, "the context covered the stored version");
    let (v3, r) = mint_version(&mut c, with_context(put(1, "k", "v3"), &v1)).await;
    assert!(r.conflict, "the client overwrote v2 without seeing it");
    assert!(v3.clock.descends(&v2.clock) && v3.timestamp > v2.timestamp);
    assert_eq!(v3.value, b"v3");
    // A blind overwrite is never a conflict.
    let (v4, r) = mint_version(&mut c, put(1, "k", "v4")).await;
    assert!(!r.conflict);
    assert!(v4.clock.descends(&v3.clock));
    node.stop().await;
}

#[tokio::test]
async fn apply_reports_outcomes_and_advances_the_clock() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    let hlc = Hlc::new();
    let (a, b, d) = (
        Actor::new("n2", 1),
        Actor::new("n3", 1),
        Actor::new("n4", 1),
    );
    let write = |value: &str| MintRequest {
        value: value.as_bytes().to_vec(),
        ..MintRequest::default()
    };
    let a1 = mint(None, write("a1"), &a, &hlc).0;
    let a2 = mint(Some(&a1), write("a2"), &a, &hlc).0;
    let x = mint(Some(&a1), write("x"), &b, &hlc).0;
    let y = mint(Some(&a1), write("y"), &d, &hlc).0;

    let mut apply = async |key: &str, v: &Version| {
        let request = pb::ApplyRequest {
            epoch: 1,
            key: key_ref("t", key),
            version: Some(version_to_pb(v)),
            record: None,
        };
        c.apply(request)
            .await
            .expect("apply")
            .into_inner()
            .outcome()
    };
    assert_eq!(apply("k", &a1).await, pb::ApplyOutcome::Applied);
    assert_eq!(apply("k", &a2).await, pb::ApplyOutcome::Applied);
    assert_eq!(apply("k", &a1).await, pb::ApplyOutcome::Superseded);
    assert_eq!(apply("s", &y).await, pb::ApplyOutcome::Applied);
    assert_eq!(apply("s", &x).await, pb::ApplyOutcome::Merged);
    assert_eq!(apply("s", &y).await, pb::ApplyOutcome::Superseded);

    // A version from a node whose clock runs 30 s ahead (within the allowed skew): later mints
    // here exceed it, even on other keys.
    let ahead = Version {
        timestamp: (wall_ms() + 30_000) << LOGICAL_BITS,
        ..mint(None, write("ahead"), &Actor::new("n9", 1), &hlc).0
    };
    assert_eq!(apply("ahead", &ahead).await, pb::ApplyOutcome::Applied);
    let (minted, _) = mint_version(&mut c, put(1, "elsewhere", "v")).await;
    assert!(minted.timestamp > ahead.timestamp);

    let stored = node
        .engine
        .get(&StorageKey::new("t", b"s").expect("key"))
        .expect("get")
        .expect("stored");
    assert!(stored.clock.descends(&x.clock) && stored.clock.descends(&y.clock));
    assert_eq!(stored.value, b"y");
    node.stop().await;
}

#[tokio::test]
async fn a_version_from_too_far_in_the_future_is_refused_and_the_clock_stays() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    let hlc = Hlc::new();
    let hour_ahead = (wall_ms() + 3_600_000) << LOGICAL_BITS;
    let ahead = Version {
        timestamp: hour_ahead,
        ..mint(None, MintRequest::default(), &Actor::new("n9", 1), &hlc).0
    };
    let request = pb::ApplyRequest {
        epoch: 1,
        key: key_ref("t", "future"),
        version: Some(version_to_pb(&ahead)),
        record: None,
    };
    let refused = c.apply(request).await;
    assert_eq!(refusal(refused), RefusalReason::ClockSkew);
    assert_eq!(node.engine.get(&storage_key("future")).expect("get"), None);
    // The node's clock was not dragged along: its next mint is timestamped near now.
    let (minted, _) = mint_version(&mut c, put(1, "after", "v")).await;
    assert!(minted.timestamp < hour_ahead);
    node.stop().await;
}

#[tokio::test]
async fn bad_input_is_invalid_argument() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;

    let no_key = pb::MintRequest {
        key: None,
        ..put(1, "k", "v")
    };
    assert_eq!(code(c.mint(no_key.clone()).await), Code::InvalidArgument);
    assert_eq!(
        refusal(c.mint(no_key).await),
        RefusalReason::InvalidArgument
    );
    let long_ns = pb::MintRequest {
        key: key_ref(&"n".repeat(256), "k"),
        ..put(1, "k", "v")
    };
    assert_eq!(code(c.mint(long_ns).await), Code::InvalidArgument);
    let zero = pb::ClockEntry {
        node: "n2".into(),
        incarnation: 1,
        counter: 0,
        last: 1,
    };
    let bad_context = pb::MintRequest {
        context: Some(pb::Context {
            clock: vec![zero.clone()],
            timestamp: 1,
        }),
        ..put(1, "k", "v")
    };
    assert_eq!(code(c.mint(bad_context).await), Code::InvalidArgument);

    let entry = |node: &str| pb::ClockEntry {
        node: node.into(),
        incarnation: 1,
        counter: 1,
        last: 1,
    };
    let unsorted = pb::ApplyRequest {
        epoch: 1,
        key: key_ref("t", "k"),
        version: Some(pb::Version {
            clock: vec![entry("n3"), entry("n2")],
            ..pb::Version::default()
        }),
        record: None,
    };
    assert_eq!(code(c.apply(unsorted).await), Code::InvalidArgument);
    let no_version = pb::ApplyRequest {
        epoch: 1,
        key: key_ref("t", "k"),
        version: None,
        record: None,
    };
    assert_eq!(code(c.apply(no_version).await), Code::InvalidArgument);
    assert_eq!(
        code(
            c.read(pb::ReadRequest {
                epoch: 1,
                key: None
            })
            .await
        ),
        Code::InvalidArgument
    );

    let scan = |range| pb::ScanRequest {
        epoch: 1,
        range,
        ..pb::ScanRequest::default()
    };
    assert_eq!(code(c.scan(scan(None)).await), Code::InvalidArgument);
    let backwards = pb::TokenRange {
        namespace: "t".into(),
        start: 10,
        end: 5,
    };
    assert_eq!(
        code(c.scan(scan(Some(backwards.clone()))).await),
        Code::InvalidArgument
    );
    let digest = pb::DigestRequest {
        epoch: 1,
        range: Some(backwards),
    };
    assert_eq!(code(c.digest(digest).await), Code::InvalidArgument);
    assert_eq!(
        code(
            c.push_placement(pb::PushPlacementRequest { placement: None })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(code(c.push_placement(push(0)).await), Code::InvalidArgument);
    assert_eq!(node.engine.stats().keys, 0);

    // The service is still healthy after all that.
    c.health(pb::HealthRequest {}).await.expect("health");
    node.stop().await;
}

#[tokio::test]
async fn tombstones_are_read_back() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    assert_eq!(
        c.read(read(1, "k"))
            .await
            .expect("read")
            .into_inner()
            .version,
        None
    );

    let (v1, _) = mint_version(&mut c, put(1, "k", "v1")).await;
    let delete = pb::MintRequest {
        tombstone: true,
        value: Vec::new(),
        content_type: String::new(),
        ..with_context(put(1, "k", ""), &v1)
    };
    let (gone, r) = mint_version(&mut c, delete).await;
    assert!(gone.tombstone && !r.conflict);

    let stored = c
        .read(read(1, "k"))
        .await
        .expect("read")
        .into_inner()
        .version;
    let stored = version_from_pb(stored.expect("tombstone returned")).expect("valid");
    assert!(stored.tombstone);
    assert!(stored.value.is_empty());
    assert_eq!(stored, gone);
    assert!(stored.clock.descends(&v1.clock));
    node.stop().await;
}

#[tokio::test]
async fn scan_and_digest_page_through_a_range() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    for i in 0..25 {
        mint_version(&mut c, put(1, &format!("key-{i:02}"), "v")).await;
    }
    for ns in ["t2", "ta", "tt"] {
        let other = pb::MintRequest {
            key: key_ref(ns, "key-00"),
            ..put(1, "", "v")
        };
        mint_version(&mut c, other).await;
    }
    let full = pb::TokenRange {
        namespace: "t".into(),
        start: 0,
        end: u64::MAX,
    };

    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = Vec::new();
    loop {
        let page = c
            .scan(pb::ScanRequest {
                epoch: 1,
                range: Some(full.clone()),
                after: after.clone(),
                limit: 10,
            })
            .await
            .expect("scan")
            .into_inner();
        pages.push(page.entries.len());
        after = page.entries.last().map(|e| pb::ScanCursor {
            token: e.token,
            key: e.key.clone(),
        });
        seen.extend(page.entries.into_iter().map(|e| (e.token, e.key)));
        if !page.more {
            break;
        }
    }
    assert_eq!(pages, vec![10, 10, 5]);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "key order, no repeats"
    );
    let mut keys: Vec<String> = seen
        .iter()
        .map(|(_, k)| String::from_utf8(k.clone()).expect("utf8"))
        .collect();
    keys.sort();
    let expected: Vec<String> = (0..25).map(|i| format!("key-{i:02}")).collect();
    assert_eq!(keys, expected);
    for (token, key) in &seen {
        assert_eq!(*token, pairdb_core::key::token("t", key));
    }

    // Limit 0 means the default page (100).
    let all = c
        .scan(pb::ScanRequest {
            epoch: 1,
            range: Some(full.clone()),
            after: None,
            limit: 0,
        })
        .await
        .expect("scan")
        .into_inner();
    assert_eq!((all.entries.len(), all.more), (25, false));

    let digest = c
        .digest(pb::DigestRequest {
            epoch: 1,
            range: Some(full.clone()),
        })
        .await
        .expect("digest")
        .into_inner();
    let local = node.engine.digest(&TokenRange::full("t")).expect("digest");
    assert_eq!(digest.keys, 25);
    assert_eq!(digest.digest, local.digest.to_vec());
    let other = c
        .digest(pb::DigestRequest {
            epoch: 1,
            range: Some(pb::TokenRange {
                namespace: "t2".into(),
                ..full.clone()
            }),
        })
        .await
        .expect("digest")
        .into_inner();
    assert_eq!(other.keys, 1);
    assert_ne!(other.digest, digest.digest);

    // Pages are capped at 1000 entries whatever the request asks.
    let hlc = Hlc::new();
    let actor = Actor::new("n2", 1);
    for i in 0..1001 {
        let k = StorageKey::new("big", format!("k{i}").as_bytes()).expect("key");
        let v = mint(None, MintRequest::default(), &actor, &hlc).0;
        node.engine.apply(&k, v, None).expect("apply");
    }
    let capped = c
        .scan(pb::ScanRequest {
            epoch: 1,
            range: Some(pb::TokenRange {
                namespace: "big".into(),
                ..full
            }),
            after: None,
            limit: 5000,
        })
        .await
        .expect("scan")
        .into_inner();
    assert_eq!((capped.entries.len(), capped.more), (1000, true));
    node.stop().await;
}

#[tokio::test]
async fn a_restart_bumps_the_incarnation_and_keeps_the_newest_placement() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 4).await;
    let health = c
        .health(pb::HealthRequest {})
        .await
        .expect("health")
        .into_inner();
    let first_incarnation = health.incarnation;
    assert_eq!(health.epoch, 4);
    let (before, _) = mint_version(&mut c, put(4, "k", "v")).await;
    assert_eq!(before.clock.get(&Actor::new(NODE, first_incarnation)), 1);
    assert!(health.load_bytes == 0);
    drop(c);
    node.stop().await;

    // Same data directory, memory engine again: nothing survived, so a new incarnation.
    let node = TestNode::start(dir.path()).await;
    let mut c = client(node.addr).await;
    let health = c
        .health(pb::HealthRequest {})
        .await
        .expect("health")
        .into_inner();
    assert_eq!((health.node_id.as_str(), health.epoch), (NODE, 4));
    assert!(health.incarnation > first_incarnation);
    let second_incarnation = health.incarnation;
    assert_eq!(
        code(c.read(read(3, "k")).await),
        Code::Aborted,
        "epoch 4 survived"
    );
    assert_eq!(
        c.read(read(4, "k"))
            .await
            .expect("read")
            .into_inner()
            .version,
        None
    );
    let (after, _) = mint_version(&mut c, put(4, "k", "v")).await;
    let entries: Vec<_> = after.clock.entries().collect();
    assert_eq!(entries, vec![(&Actor::new(NODE, second_incarnation), 1)]);
    assert_eq!(
        c.push_placement(push(3))
            .await
            .expect("push")
            .into_inner()
            .epoch,
        4
    );
    let health = c
        .health(pb::HealthRequest {})
        .await
        .expect("health")
        .into_inner();
    assert!(health.load_bytes > 0);
    drop(c);
    node.stop().await;
}

#[tokio::test]
async fn scan_pages_stay_under_the_message_limit_with_large_values() {
    use pairdb_storage::service::SCAN_PAGE_BYTES;
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    // Twelve values of 1 MiB: a page of all of them would be 12 MiB, over the 8 MiB message
    // limit both ends enforce.
    let hlc = Hlc::new();
    let actor = Actor::new("n2", 1);
    for i in 0..12 {
        let k = StorageKey::new("large", format!("k{i:02}").as_bytes()).expect("key");
        let request = MintRequest {
            value: vec![b'x'; 1 << 20],
            ..MintRequest::default()
        };
        node.engine
            .apply(&k, mint(None, request, &actor, &hlc).0, None)
            .expect("apply");
    }
    let mut big = StorageClient::with_interceptor(
        channel(node.addr).await,
        BearerToken(format!("Bearer {TOKEN}").parse().expect("ascii")),
    )
    .max_decoding_message_size(64 << 20);
    let mut after = None;
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let page = c
            .scan(pb::ScanRequest {
                epoch: 1,
                range: Some(pb::TokenRange {
                    namespace: "large".into(),
                    start: 0,
                    end: u64::MAX,
                }),
                after: after.clone(),
                limit: 1000,
            })
            .await
            .expect("a page within the message limit")
            .into_inner();
        pages += 1;
        let bytes: usize = page
            .entries
            .iter()
            .map(|e| e.version.as_ref().map_or(0, |v| v.value.len()))
            .sum();
        assert!(!page.entries.is_empty());
        assert!(bytes <= SCAN_PAGE_BYTES, "page of {bytes} bytes");
        seen += page.entries.len();
        after = page.entries.last().map(|e| pb::ScanCursor {
            token: e.token,
            key: e.key.clone(),
        });
        if !page.more {
            break;
        }
        assert!(pages < 20, "scan never ended");
    }
    assert_eq!(seen, 12);
    assert!(pages >= 3, "{pages} pages");
    // Even a client that would accept a huge message gets bounded pages.
    let page = big
        .scan(pb::ScanRequest {
            epoch: 1,
            range: Some(pb::TokenRange {
                namespace: "large".into(),
                start: 0,
                end: u64::MAX,
            }),
            after: None,
            limit: 1000,
        })
        .await
        .expect("scan")
        .into_inner();
    assert!(page.more && page.entries.len() < 12);
    node.stop().await;
}

#[tokio::test]
async fn a_version_whose_clock_outruns_its_timestamp_is_refused() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    let hlc = Hlc::new();
    let minted = mint(None, MintRequest::default(), &Actor::new("n9", 1), &hlc).0;
    let forged = Version {
        timestamp: minted.timestamp - 1,
        ..minted
    };
    let request = pb::ApplyRequest {
        epoch: 1,
        key: key_ref("t", "k"),
        version: Some(version_to_pb(&forged)),
        record: None,
    };
    assert_eq!(
        refusal(c.apply(request).await),
        RefusalReason::InvalidArgument
    );
    assert_eq!(node.engine.get(&storage_key("k")).expect("get"), None);
    node.stop().await;
}

#[tokio::test]
async fn a_closing_node_refuses_data_calls_as_shutting_down() {
    let dir = tempdir();
    let (node, mut c) = TestNode::with_epoch(dir.path(), 1).await;
    node.state.close().await;
    assert_eq!(
        refusal(c.mint(put(1, "k", "v")).await),
        RefusalReason::ShuttingDown
    );
    node.stop().await;
}
