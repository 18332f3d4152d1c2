//! Many writers at once: three storage nodes, tasks minting the same few keys on whichever node
//! they pick as leader and replicating each version to the other two, all concurrently.

use std::collections::{HashMap, HashSet};

use pairdb_core::Version;
use pairdb_core::vclock::Actor;
use pairdb_proto::storage as pb;

use crate::support::*;

const NODES: usize = 3;
const TASKS: usize = 12;
const WRITES_PER_TASK: usize = 20;
const KEYS: usize = 3;

struct Written {
    request: pb::MintRequest,
    key: String,
    idempotency_key: String,
    version: Version,
    leader: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mints_and_applies_converge_and_lose_no_index_entry() {
    let dirs: Vec<_> = (0..NODES).map(|_| tempdir()).collect();
    let mut nodes = Vec::new();
    for dir in &dirs {
        nodes.push(TestNode::start(dir.path()).await);
    }
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.pushed(1).await);
    }

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let clients = clients.clone();
        tasks.push(tokio::spawn(async move {
            let mut clients = clients;
            let mut written = Vec::new();
            for i in 0..WRITES_PER_TASK {
                let key = format!("key-{}", (task + i) % KEYS);
                let leader = (task * 7 + i) % NODES;
                let idempotency_key = format!("w-{task}-{i}");
                // Half the writes carry the context of what the leader holds.
                let mut request = pb::MintRequest {
                    idempotency_key: idempotency_key.clone(),
                    ..put(1, &key, &format!("{task}/{i}"))
                };
                if i % 2 == 0
                    && let Some(seen) = clients[leader]
                        .read(read(1, &key))
                        .await
                        .expect("read")
                        .into_inner()
                        .version
                {
                    let seen = pairdb_proto::convert::version_from_pb(seen).expect("valid");
                    request = with_context(request, &seen);
                }
                let response = clients[leader]
                    .mint(request.clone())
                    .await
                    .expect("mint")
                    .into_inner();
                assert!(!response.deduplicated);
                let version_pb = response.version.clone().expect("version");
                let version =
                    pairdb_proto::convert::version_from_pb(version_pb.clone()).expect("valid");
                // Replicate to the others at once, as a coordinator does.
                let applies = (0..NODES).filter(|n| *n != leader).map(|n| {
                    let mut c = clients[n].clone();
                    let request = pb::ApplyRequest {
                        epoch: 1,
                        key: key_ref("t", &key),
                        version: Some(version_pb.clone()),
                        record: response.record.clone(),
                    };
                    async move { c.apply(request).await.expect("apply") }
                });
                futures::future::join_all(applies).await;
                written.push(Written {
                    request,
                    key,
                    idempotency_key,
                    version,
                    leader,
                });
            }
            written
        }));
    }
    let mut written = Vec::new();
    for t in tasks {
        written.extend(t.await.expect("task"));
    }
    assert_eq!(written.len(), TASKS * WRITES_PER_TASK);

    // The key lock held: no leader issued one counter twice on a key, so no two different
    // versions share a clock.
    let mut counters: HashSet<(String, Actor, u64)> = HashSet::new();
    for w in &written {
        let actor = nodes[w.leader].state.actor();
        let counter = w.version.clock.get(&actor);
        assert!(counter > 0);
        assert!(
            counters.insert((w.key.clone(), actor, counter)),
            "counter {counter} issued twice on {}",
            w.key
        );
    }

    // Every replica holds the identical version of every key: the join of everything written.
    let mut expected: HashMap<String, Version> = HashMap::new();
    for w in &written {
        let joined = match expected.remove(&w.key) {
            None => w.version.clone(),
            Some(v) => v.resolve(&w.version),
        };
        expected.insert(w.key.clone(), joined);
    }
    for k in 0..KEYS {
        let key = format!("key-{k}");
        let stored: Vec<_> = nodes
            .iter()
            .map(|n| n.engine.get(&storage_key(&key)).expect("get"))
            .collect();
        for s in &stored {
            assert_eq!(s.as_ref(), expected.get(&key), "replicas of {key} diverged");
        }
    }

    // No applied-keys entry was lost: every node finds every write exactly as minted, and a retry
    // on any node as leader mints nothing.
    for w in &written {
        for (n, node) in nodes.iter().enumerate() {
            let entry = node
                .engine
                .applied(&storage_key(&w.key), &w.idempotency_key)
                .expect("applied")
                .unwrap_or_else(|| panic!("node {n} lost {}", w.idempotency_key));
            assert_eq!(entry.version, w.version);
        }
    }
    for sample in written.iter().step_by(37) {
        for c in &mut clients {
            let (again, response) = mint_version(c, sample.request.clone()).await;
            assert!(response.deduplicated);
            assert_eq!(again, sample.version);
            let reused = pb::MintRequest {
                value: b"another value".to_vec(),
                ..sample.request.clone()
            };
            assert_eq!(
                refusal(c.mint(reused).await),
                pairdb_proto::storage::RefusalReason::IdempotencyKeyReused
            );
        }
    }
    for node in nodes {
        node.stop().await;
    }
}
