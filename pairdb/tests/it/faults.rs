//! Storage nodes killed without telling the coordinator.

use reqwest::{Method, StatusCode};

use crate::harness::{header, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_write_then_read_at_all() {
    let t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let put = t
        .kv(
            Method::PUT,
            "greeting",
            &key,
            &[("X-Consistency", "quorum"), ("Content-Type", "text/plain")],
            Some(b"hello".to_vec()),
        )
        .await;
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(header(&put, "x-consistency"), Some("quorum"));
    let acked = header(&put, "x-pairdb-replicas")
        .unwrap_or_default()
        .to_owned();
    assert!(acked == "acked=2/3" || acked == "acked=3/3", "{acked}");
    let body: serde_json::Value = put.json().await.expect("json");
    assert_eq!(body["replicas"], 3);
    assert!(body["context"].as_str().is_some_and(|c| !c.is_empty()));

    let get = t
        .kv(
            Method::GET,
            "greeting",
            &key,
            &[("X-Consistency", "all")],
            None,
        )
        .await;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(header(&get, "x-pairdb-replicas"), Some("answered=3/3"));
    assert_eq!(header(&get, "content-type"), Some("text/plain"));
    assert_eq!(header(&get, "cache-control"), Some("no-store"));
    assert!(header(&get, "x-pairdb-context").is_some());
    assert_eq!(get.bytes().await.expect("body").as_ref(), b"hello");
    t.cluster.stop().await.expect("every node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_survives_a_killed_leader_and_all_does_not() {
    let mut t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    // Kill the natural leader of the key, without telling the coordinator.
    let replicas = t.replicas("acme", b"k1");
    let leader = replicas[0].clone();
    let put = t
        .kv(Method::PUT, "k1", &key, &[], Some(b"v1".to_vec()))
        .await;
    assert_eq!(put.status(), StatusCode::OK);
    t.kill(&leader);
    t.await_unreachable(&leader).await;

    // The first write after the kill still finds a leader within the request: the dead
    // leader's port refuses, which proves nothing was minted there.
    for i in 0..5 {
        let put = t
            .kv(
                Method::PUT,
                "k1",
                &key,
                &[("X-Consistency", "quorum")],
                Some(format!("v{i}").into_bytes()),
            )
            .await;
        assert_eq!(
            put.status(),
            StatusCode::OK,
            "quorum write {i} after the leader died"
        );
        assert_eq!(header(&put, "x-pairdb-replicas"), Some("acked=2/3"));
        let get = t
            .kv(
                Method::GET,
                "k1",
                &key,
                &[("X-Consistency", "quorum")],
                None,
            )
            .await;
        assert_eq!(get.status(), StatusCode::OK);
        assert_eq!(
            get.bytes().await.expect("body").as_ref(),
            format!("v{i}").as_bytes()
        );
    }

    let put_all = t
        .kv(
            Method::PUT,
            "k1",
            &key,
            &[("X-Consistency", "all")],
            Some(b"x".to_vec()),
        )
        .await;
    assert_eq!(put_all.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(header(&put_all, "retry-after").is_some());
    assert_eq!(
        header(&put_all, "content-type"),
        Some("application/problem+json")
    );
    let problem: serde_json::Value = put_all.json().await.expect("json");
    assert_eq!(problem["required"], 3);
    // Five writes each found the dead leader refusing connections, so it is marked down, and a
    // write at `all` is refused before anything is minted.
    assert!(!t.cluster.coordinator.cluster.pool().is_live(&leader));
    assert_eq!(problem["applied"], "none", "{problem}");

    let get_all = t
        .kv(Method::GET, "k1", &key, &[("X-Consistency", "all")], None)
        .await;
    assert_eq!(get_all.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: serde_json::Value = get_all.json().await.expect("json");
    assert_eq!(problem["required"], 3);

    // A key whose leader is alive is just as available at quorum.
    let put = t
        .kv(Method::PUT, "other-key", &key, &[], Some(b"v".to_vec()))
        .await;
    assert_eq!(put.status(), StatusCode::OK);

    // With a second node gone, quorum cannot be met either.
    let second = replicas[1].clone();
    t.kill(&second);
    // Until the coordinator has seen the connection close, a call written on it is honestly of
    // unknown outcome (504); wait so the write below proves what it means to.
    t.await_unreachable(&second).await;
    let put = t
        .kv(
            Method::PUT,
            "k1",
            &key,
            &[("X-Consistency", "quorum")],
            Some(b"y".to_vec()),
        )
        .await;
    assert_eq!(put.status(), StatusCode::SERVICE_UNAVAILABLE);
    let get = t
        .kv(Method::GET, "k1", &key, &[("X-Consistency", "one")], None)
        .await;
    assert_eq!(
        get.status(),
        StatusCode::OK,
        "one replica is still enough at `one`"
    );
    t.cluster.stop().await.expect("every node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_probed_back_and_repaired() {
    let mut t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    let victim = t.replicas("acme", b"k")[0].clone();
    let addr = t
        .cluster
        .nodes
        .iter()
        .find(|n| n.id == victim)
        .expect("node")
        .addr;
    t.kill(&victim);
    // A mint written before the coordinator sees the connection close would be of unknown
    // outcome (504), which is right but not what this test is about.
    t.await_unreachable(&victim).await;
    // Enough failed calls to mark it down; quorum keeps working meanwhile.
    for i in 0..5 {
        let put = t
            .kv(
                Method::PUT,
                "k",
                &key,
                &[],
                Some(format!("v{i}").into_bytes()),
            )
            .await;
        assert_eq!(put.status(), StatusCode::OK);
    }
    let all = t
        .kv(
            Method::PUT,
            "k",
            &key,
            &[("X-Consistency", "all")],
            Some(b"x".to_vec()),
        )
        .await;
    assert_eq!(all.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: serde_json::Value = all.json().await.expect("json");
    assert_eq!(
        problem["applied"], "none",
        "a node marked down is not even tried: {problem}"
    );

    // The node comes back (empty: memory engine) at the same address, on a new incarnation.
    let dir = tempfile::tempdir().expect("tempdir");
    t.restart(&victim, addr, dir.path());
    let coordinator = t.cluster.coordinator.cluster.clone();
    let mut back = false;
    for _ in 0..500 {
        if coordinator.pool().is_live(&victim) {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(back, "the coordinator never probed the node back");

    // It is repaired from the hints of the writes it missed: it ends up holding the last one,
    // with no read or write of the key in between.
    let mut repaired = None;
    for _ in 0..500 {
        // Until the coordinator pushes it the placement, the new node refuses reads.
        repaired = t.try_stored(&victim, "acme", b"k").await.ok().flatten();
        if repaired.as_ref().is_some_and(|v| v.value == b"v4") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        repaired.map(|v| v.value),
        Some(b"v4".to_vec()),
        "the missed writes were not replayed"
    );
    assert_eq!(coordinator.hints().pending_for(&victim), 0);
    // So a read at `all` finds every replica in agreement: nothing left to repair.
    let get = t
        .kv(Method::GET, "k", &key, &[("X-Consistency", "all")], None)
        .await;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(header(&get, "x-pairdb-read-repair"), None);
    assert_eq!(get.bytes().await.expect("body").as_ref(), b"v4");

    let put = t
        .kv(
            Method::PUT,
            "k",
            &key,
            &[("X-Consistency", "all")],
            Some(b"final".to_vec()),
        )
        .await;
    assert_eq!(put.status(), StatusCode::OK);
    let stored = t
        .stored(&victim, "acme", b"k")
        .await
        .expect("written at all");
    assert_eq!(stored.value, b"final");
    t.cluster.stop().await.expect("every node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_never_answers_yields_504_unknown() {
    let mut t = start(3).await;
    let key = t.create_tenant("acme", 3).await;
    assert_eq!(
        t.kv(Method::PUT, "slow", &key, &[], Some(b"v0".to_vec()))
            .await
            .status(),
        StatusCode::OK
    );
    // Replace a replica by a "blackhole": it accepts connections and never answers.
    let victim = t.replicas("acme", b"slow")[1].clone();
    let addr = t
        .cluster
        .nodes
        .iter()
        .find(|n| n.id == victim)
        .expect("node")
        .addr;
    t.kill(&victim);
    // Wait until the coordinator has dropped its connection to the dead node: a call still
    // queued on that connection when it closes is proven unsent, and the write below would
    // rightly be `503 applied: partial`. Only after that does the blackhole take the port.
    t.await_unreachable(&victim).await;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("rebind the port");
    let blackhole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });

    let put = t
        .kv(
            Method::PUT,
            "slow",
            &key,
            &[("X-Consistency", "all"), ("X-Pairdb-Timeout", "300")],
            Some(b"v1".to_vec()),
        )
        .await;
    let status = put.status();
    assert!(
        header(&put, "idempotency-key").is_some(),
        "the key to retry with"
    );
    let problem: serde_json::Value = put.json().await.expect("json");
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{problem}");
    assert_eq!(problem["applied"], "unknown", "{problem}");
    assert_eq!(problem["required"], 3);

    let get = t
        .kv(
            Method::GET,
            "slow",
            &key,
            &[("X-Consistency", "all"), ("X-Pairdb-Timeout", "300")],
            None,
        )
        .await;
    assert_eq!(get.status(), StatusCode::GATEWAY_TIMEOUT);
    // Quorum does not wait for the silent replica.
    let quorum = t
        .kv(
            Method::GET,
            "slow",
            &key,
            &[("X-Pairdb-Timeout", "2000")],
            None,
        )
        .await;
    assert_eq!(quorum.status(), StatusCode::OK);
    blackhole.abort();
    t.cluster.stop().await.expect("every node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_not_ready_once_tenants_cannot_be_served() {
    let mut t = start(3).await;
    t.create_tenant("acme", 3).await;
    let ready = |t: &crate::harness::TestCluster| {
        let http = t.http.clone();
        let url = t.url("/readyz");
        async move { http.get(url).send().await.expect("readyz").status() }
    };
    assert_eq!(ready(&t).await, StatusCode::OK);

    // One node down: quorum of 3 is still met for every key.
    let ids: Vec<String> = t.cluster.nodes.iter().map(|n| n.id.clone()).collect();
    t.kill(&ids[0]);
    let coordinator = t.cluster.coordinator.cluster.clone();
    let mut down = false;
    for _ in 0..500 {
        if !coordinator.pool().is_live(&ids[0]) {
            down = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(down, "the health probes never marked the node down");
    assert_eq!(ready(&t).await, StatusCode::OK);

    // Two down: acme's default level (quorum) cannot be met, though no request was made.
    t.kill(&ids[1]);
    let mut status = StatusCode::OK;
    for _ in 0..500 {
        status = ready(&t).await;
        if status != StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = t
        .http
        .get(t.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("acme")),
        "{body}"
    );
    t.cluster.stop().await.expect("every node stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_mints_past_the_clock_it_recorded() {
    use pairdb_storage::clock_file::ClockFile;
    let mut t = start(3).await;
    let key = t.create_tenant("clock", 1).await;
    // A key whose only replica, so its leader, is node-1.
    let k = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| t.replicas("clock", k.as_bytes()) == ["node-1"])
        .expect("a key on node-1");
    let addr = t
        .cluster
        .nodes
        .iter()
        .find(|n| n.id == "node-1")
        .expect("node")
        .addr;
    t.kill("node-1");
    // As if its wall clock had stepped back 30 s since: the clock it recorded lies ahead.
    let recorded = (pairdb_core::hlc::wall_ms() + 30_000) << pairdb_core::hlc::LOGICAL_BITS;
    let file = ClockFile::new(&t.data_dir("node-1"));
    file.write(recorded).expect("plant the clock");
    t.restart_in_place("node-1", addr);
    let mut stored = None;
    for _ in 0..200 {
        let put = t
            .kv(Method::PUT, &k, &key, &[], Some(b"after".to_vec()))
            .await;
        if put.status() == StatusCode::OK {
            stored = t.stored("node-1", "clock", k.as_bytes()).await;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let version = stored.expect("the write after the restart is stored on node-1");
    assert!(
        version.timestamp > recorded,
        "minted at {} after recording {recorded}",
        version.timestamp
    );
    // It goes on recording its clock.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(file.read().expect("read") >= version.timestamp);
}
