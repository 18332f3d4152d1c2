//! The coordinator's gRPC API is public: clients with a tenant key get the same semantics and the
//! same middleware (auth, tenant, consistency) as through the gateway.

use pairdb_proto::coordinator::coordinator_client::CoordinatorClient;
use pairdb_proto::coordinator::{GetRequest, ListTenantsRequest, PutRequest};
use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::harness::start;

fn with_auth<T>(msg: T, key: &str, consistency: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let v: MetadataValue<_> = format!("Bearer {key}").parse().expect("header");
    req.metadata_mut().insert("authorization", v);
    if let Some(c) = consistency {
        req.metadata_mut()
            .insert("x-consistency", c.parse().expect("header"));
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_keys_work_over_grpc() {
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let mut c = CoordinatorClient::connect(format!("http://{}", t.cluster.coordinator.addr))
        .await
        .expect("connect");
    let put = c
        .put(with_auth(
            PutRequest {
                key: b"g".to_vec(),
                value: b"rpc".to_vec(),
                ..PutRequest::default()
            },
            &key,
            Some("all"),
        ))
        .await
        .expect("put")
        .into_inner();
    assert_eq!(
        (put.acks, put.replicas, put.consistency.as_str()),
        (3, 3, "all")
    );
    let got = c
        .get(with_auth(
            GetRequest {
                key: b"g".to_vec(),
                timeout_ms: 0,
            },
            &key,
            None,
        ))
        .await
        .expect("get")
        .into_inner();
    assert!(got.found);
    assert_eq!(got.value, b"rpc");
    assert_eq!(got.consistency, "quorum", "the tenant default");

    let bad = c
        .get(with_auth(
            GetRequest {
                key: b"g".to_vec(),
                timeout_ms: 0,
            },
            &key,
            Some("most"),
        ))
        .await
        .expect_err("bad level");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let anon = c
        .get(GetRequest {
            key: b"g".to_vec(),
            timeout_ms: 0,
        })
        .await
        .expect_err("no key");
    assert_eq!(anon.code(), Code::Unauthenticated);
    let forbidden = c
        .list_tenants(with_auth(ListTenantsRequest {}, &key, None))
        .await
        .expect_err("not admin");
    assert_eq!(forbidden.code(), Code::PermissionDenied);
    // A tenant key cannot impersonate another tenant with the forwarding headers.
    let mut spoof = with_auth(
        GetRequest {
            key: b"g".to_vec(),
            timeout_ms: 0,
        },
        &key,
        None,
    );
    spoof
        .metadata_mut()
        .insert("x-pairdb-tenant", "other".parse().expect("header"));
    let spoofed = c.get(spoof).await.expect("own tenant still").into_inner();
    assert!(
        spoofed.found,
        "the forwarding header is ignored without the internal credential"
    );
    t.cluster.stop().await.expect("every node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_coordinator_catches_up_with_placement_changes() {
    use pairdb::local::CoordinatorNode;
    use pairdb_coordinator::CoordinatorConfig;

    let t = start(3).await;
    let secrets = crate::harness::secrets();
    let config = CoordinatorConfig::new(
        secrets.internal_token.clone(),
        secrets.key_secret.clone(),
        secrets.admin_key.clone(),
    );
    // Coordinator B starts on the initial placement (no tenants)…
    let b = CoordinatorNode::start(
        t.cluster.store.clone(),
        pairdb::local::bind("coordinator", ([127, 0, 0, 1], 0).into()).expect("bind"),
        config,
    )
    .await
    .expect("second coordinator");
    let epoch_b = b.cluster.view().expect("placement").placement.epoch;
    // …then A creates a tenant: a new epoch, pushed to every storage node.
    let key = t.create_tenant("acme", 3).await;
    assert!(t.epoch() > epoch_b);
    let mut c = CoordinatorClient::connect(format!("http://{}", b.addr))
        .await
        .expect("connect");
    // B does not know the tenant yet: it reloads the placement instead of answering 404.
    let put = c
        .put(with_auth(
            PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            },
            &key,
            Some("all"),
        ))
        .await
        .expect("put through B")
        .into_inner();
    assert_eq!(put.acks, 3);
    // A moves the epoch again; B's next call meets ABORTED from the storage nodes and refreshes.
    t.create_tenant("other", 1).await;
    let got = c
        .get(with_auth(
            GetRequest {
                key: b"k".to_vec(),
                timeout_ms: 0,
            },
            &key,
            Some("all"),
        ))
        .await
        .expect("get through B")
        .into_inner();
    assert!(got.found);
    assert_eq!(
        b.cluster.view().expect("placement").placement.epoch,
        t.epoch()
    );
    b.stop().await;
    t.cluster.stop().await.expect("every node stops cleanly");
}

/// A gRPC client's write with `idempotency-key` metadata is recorded by the coordinator: a retry
/// is answered from the record (`idempotent-replayed: true`, the same answer, one clock
/// increment on every replica), and the key on another write is refused `FAILED_PRECONDITION`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_writes_with_an_idempotency_key_are_replayed() {
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let mut c = CoordinatorClient::connect(format!("http://{}", t.cluster.coordinator.addr))
        .await
        .expect("connect");
    let put = |value: &'static [u8]| {
        let mut req = with_auth(
            PutRequest {
                key: b"once".to_vec(),
                value: value.to_vec(),
                ..PutRequest::default()
            },
            &key,
            Some("all"),
        );
        req.metadata_mut()
            .insert("idempotency-key", "grpc-once-1".parse().expect("header"));
        req
    };
    let first = c.put(put(b"v")).await.expect("put");
    assert!(first.metadata().get("idempotent-replayed").is_none());
    let first = first.into_inner();
    assert_eq!(
        first.idempotency_key, "grpc-once-1",
        "the leader saw the key"
    );

    let again = c.put(put(b"v")).await.expect("retry");
    assert_eq!(
        again
            .metadata()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(again.into_inner(), first, "the same answer");
    for r in t.replicas("acme", b"once") {
        let v = t.stored(&r, "acme", b"once").await.expect("stored");
        let increments: u64 = v.clock.entries().map(|(_, c)| c).sum();
        assert_eq!(increments, 1, "replica {r} minted once");
    }

    let other = c.put(put(b"other")).await.expect_err("reused key");
    assert_eq!(other.code(), Code::FailedPrecondition, "{other:?}");
    // The message's key and the metadata's must agree.
    let mut mismatched = put(b"v");
    mismatched
        .metadata_mut()
        .insert("idempotency-key", "grpc-mismatch".parse().expect("header"));
    mismatched.get_mut().idempotency_key = "something-else".into();
    let refused = c.put(mismatched).await.expect_err("mismatch");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    t.cluster.stop().await.expect("every node stops cleanly");
}

/// Call streams carry calls for any tenant a gateway names: only the internal credential opens
/// one. A tenant's key (or the admin key) is refused before any call runs, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_internal_credential_opens_a_call_stream() {
    use pairdb_proto::coordinator as pb;
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let victim_key = t.create_tenant("victim", 3).await;
    let mut c = CoordinatorClient::connect(format!("http://{}", t.cluster.coordinator.addr))
        .await
        .expect("connect");
    let forged = pb::CallBatch {
        calls: vec![pb::Call {
            id: 1,
            tenant: "victim".into(),
            consistency: "all".into(),
            op: Some(pb::call::Op::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"forged".to_vec(),
                ..PutRequest::default()
            })),
            ..pb::Call::default()
        }],
        cancel: vec![],
    };
    for credential in [key.as_str(), t.cluster.secrets.admin_key.as_str()] {
        let outcome = c
            .calls(with_auth(
                tokio_stream::iter([forged.clone()]),
                credential,
                None,
            ))
            .await;
        let status = match outcome {
            Ok(_) => panic!("a call stream opened without the internal credential"),
            Err(status) => status,
        };
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let read = c
        .get(with_auth(
            GetRequest {
                key: b"k".to_vec(),
                timeout_ms: 0,
            },
            &victim_key,
            Some("all"),
        ))
        .await
        .expect("get")
        .into_inner();
    assert!(!read.found, "a forged call was written");
}

/// Large values travel the call streams of both hops side by side: many reads of 600 KB values
/// at once are spread over messages each within every server's limit, and each gets its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_values_at_once_cross_the_call_streams() {
    use reqwest::Method;
    let t = start(3).await;
    let key = t.create_tenant("big", 3).await;
    let value = |i: usize| vec![b'a' + (i % 26) as u8; 600_000];
    let writes = futures::future::join_all((0..8).map(|i| {
        let (t, key) = (&t, &key);
        async move {
            t.kv(
                Method::PUT,
                &format!("big-{i}"),
                key,
                &[("x-consistency", "all")],
                Some(value(i)),
            )
            .await
            .status()
        }
    }))
    .await;
    assert!(writes.iter().all(|s| s.as_u16() == 200), "{writes:?}");
    let reads = futures::future::join_all((0..16).map(|n| {
        let (t, key) = (&t, &key);
        async move {
            let i = n % 8;
            let resp = t.kv(Method::GET, &format!("big-{i}"), key, &[], None).await;
            (i, resp.status().as_u16(), resp.bytes().await.expect("body"))
        }
    }))
    .await;
    for (i, status, body) in reads {
        assert_eq!(status, 200, "read of big-{i}");
        assert!(
            body.as_ref() == value(i).as_slice(),
            "big-{i} came back whole"
        );
    }
}
