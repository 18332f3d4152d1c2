//! Anti-entropy through the REST API: replicas that diverged without any hint to heal them —
//! a leader's version never replicated (its coordinator died mid-write), a delete that reached
//! one replica only — are made equal by one repair, which exchanges only the differing keys.

use std::time::Duration;

use pairdb_proto::storage::{KeyRef, MintRequest};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{self, INTERNAL_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repair_makes_diverged_replicas_equal_and_reports_it() {
    let t = harness::start(3).await;
    let key = t.create_tenant("ae", 3).await;
    for i in 0..300 {
        let resp = t
            .kv(
                Method::PUT,
                &format!("k{i}"),
                &key,
                &[],
                Some(b"same".to_vec()),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // Writes minted on one replica only, as when a coordinator dies right after the mint.
    let mint = |node: &'static str, k: String, tombstone: bool| {
        let mut client = t.storage(node, Some(INTERNAL_TOKEN));
        let epoch = t.epoch();
        async move {
            client
                .mint(MintRequest {
                    epoch,
                    key: Some(KeyRef {
                        namespace: "ae".into(),
                        key: k.into_bytes(),
                    }),
                    context: None,
                    tombstone,
                    value: if tombstone {
                        Vec::new()
                    } else {
                        b"only-here".to_vec()
                    },
                    content_type: "text/plain".into(),
                    idempotency_key: String::new(),
                })
                .await
                .expect("mint");
        }
    };
    for i in 0..40 {
        mint("node-1", format!("lone-{i}"), false).await;
    }
    for i in 0..25 {
        mint("node-2", format!("k{i}"), true).await;
    }

    let (status, body) = t
        .admin(
            Method::POST,
            "/v1/admin/repair",
            Some(json!({"tenant_id": "ae"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["repair_id"].as_str().expect("repair id").to_owned();
    let started = std::time::Instant::now();
    let done = loop {
        let (status, body) = t
            .admin(Method::GET, &format!("/v1/admin/repairs/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        match body["state"].as_str() {
            Some("done") => break body,
            Some("failed") => panic!("repair failed: {body}"),
            _ => {}
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["ranges_done"], done["ranges_total"], "{done}");
    assert_eq!(done["ranges_incomplete"], 0, "{done}");
    // Each lone version went to the two replicas without it, each delete to two as well; the
    // 300 equal keys were not sent anywhere.
    assert_eq!(done["keys_repaired"], 40 * 2 + 25 * 2, "{done}");

    for node in ["node-1", "node-2", "node-3"] {
        for i in 0..40 {
            let v = t
                .stored(node, "ae", format!("lone-{i}").as_bytes())
                .await
                .expect("repaired");
            assert_eq!(v.value, b"only-here", "{node}");
        }
        for i in 0..25 {
            let v = t
                .stored(node, "ae", format!("k{i}").as_bytes())
                .await
                .expect("held");
            assert!(v.tombstone, "{node} k{i}: the delete did not spread");
        }
    }
    // Nothing left to do: a second repair sends nothing.
    let (status, body) = t
        .admin(Method::POST, "/v1/admin/repair", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let again = body["repair_id"].as_str().expect("repair id").to_owned();
    // Meanwhile a third is refused: one job at a time.
    let (status, body) = t
        .admin(Method::POST, "/v1/admin/repair", Some(json!({})))
        .await;
    assert!(
        status == StatusCode::CONFLICT || status == StatusCode::ACCEPTED,
        "{status} {body}"
    );
    let started = std::time::Instant::now();
    loop {
        let (_, body) = t
            .admin(Method::GET, &format!("/v1/admin/repairs/{again}"), None)
            .await;
        if body["state"] == "done" {
            assert_eq!(body["keys_repaired"], 0, "{body}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = t.admin(Method::GET, "/v1/admin/repairs/rep-0", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // An unknown tenant, once no job runs.
    let mut status = StatusCode::CONFLICT;
    for _ in 0..100 {
        let (s, _) = t
            .admin(
                Method::POST,
                "/v1/admin/repair",
                Some(json!({"tenant_id": "nope"})),
            )
            .await;
        status = s;
        if s != StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::NOT_FOUND);
}
