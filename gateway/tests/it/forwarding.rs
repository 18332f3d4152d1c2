//! What the gateway sends the coordinator: credential, principal, consistency, trace; and
//! failover between coordinators.

use reqwest::Method;

use crate::support::{
    ADMIN_KEY, Harness, INCOMING_TRACE, INTERNAL_TOKEN, TRACEPARENT, dead_address, problem,
};

#[tokio::test]
async fn tenant_calls_carry_internal_token_tenant_consistency_and_trace() {
    let h = Harness::start().await;
    let response = h
        .tenant(Method::PUT, "/v1/kv/k")
        .header("x-consistency", "ALL")
        .header("traceparent", TRACEPARENT)
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let traceresponse = response
        .headers()
        .get("traceresponse")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        traceresponse.starts_with(&format!("00-{INCOMING_TRACE}-")),
        "{traceresponse}"
    );

    let call = h.last_call();
    assert_eq!(
        call.header("authorization").as_deref(),
        Some(format!("Bearer {INTERNAL_TOKEN}").as_str())
    );
    assert_eq!(call.header("x-pairdb-tenant").as_deref(), Some("acme"));
    assert_eq!(call.header("x-pairdb-principal"), None);
    assert_eq!(call.header("x-consistency").as_deref(), Some("all"));
    let traceparent = call.header("traceparent").unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{INCOMING_TRACE}-")),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "the gateway's own span is the parent"
    );
    assert_eq!(
        traceparent, traceresponse,
        "the forwarded parent is the span named in traceresponse"
    );
    // The request's deadline travels with the call (the gateway's default here, not the call
    // stream's own far bound).
    let timeout_ms: u64 = call
        .header("x-call-timeout-ms")
        .and_then(|v| v.parse().ok())
        .expect("the call carries its deadline");
    assert!(
        (1..=60_000).contains(&timeout_ms),
        "the request's deadline, not an unbounded one: {timeout_ms} ms"
    );
}

#[tokio::test]
async fn admin_calls_carry_the_admin_principal() {
    let h = Harness::start().await;
    let response = h
        .admin(Method::GET, "/v1/admin/nodes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let call = h.last_call();
    assert_eq!(call.method, "list_nodes");
    assert_eq!(
        call.header("authorization").as_deref(),
        Some(format!("Bearer {INTERNAL_TOKEN}").as_str())
    );
    assert_eq!(call.header("x-pairdb-principal").as_deref(), Some("admin"));
    assert_eq!(call.header("x-pairdb-tenant"), None);
    assert!(
        !call
            .metadata
            .clone()
            .into_headers()
            .iter()
            .any(|(_, v)| v.to_str().unwrap_or("").contains(ADMIN_KEY)),
        "the admin key itself never travels to the coordinator"
    );
}

#[tokio::test]
async fn problems_name_the_incoming_trace() {
    let h = Harness::start().await;
    let response = h
        .http
        .get(h.url("/v1/kv/k"))
        .header("traceparent", TRACEPARENT)
        .send()
        .await
        .unwrap();
    let tr = response
        .headers()
        .get("traceresponse")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(tr.contains(INCOMING_TRACE));
    let body = problem(response, 401).await;
    assert_eq!(body["trace_id"], INCOMING_TRACE);
}

#[tokio::test]
async fn fails_over_to_the_next_coordinator() {
    let (dead, _reserved) = dead_address();
    let h = Harness::start_with(move |c, live| {
        c.coordinators = vec![dead.to_string(), live.to_string()];
    })
    .await;
    for i in 0..4 {
        let response = h
            .tenant(Method::PUT, &format!("/v1/kv/k{i}"))
            .body("v")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {i}");
    }
    assert_eq!(
        h.calls().len(),
        4,
        "each request reached the live coordinator exactly once"
    );
}

#[tokio::test]
async fn serve_stops_gracefully() {
    let h = Harness::start().await;
    assert_eq!(
        h.http.get(h.url("/healthz")).send().await.unwrap().status(),
        200
    );
    h.shutdown().await.unwrap();
}

/// A coordinator older than call streams (a rolling upgrade) answers them `UNIMPLEMENTED`: the
/// gateway sends the same requests to it as unary calls, and the client never sees a difference.
#[tokio::test]
async fn a_coordinator_without_call_streams_gets_unary_calls() {
    let h = Harness::start().await;
    h.coordinator
        .no_call_streams
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for round in 0..2 {
        let put = h
            .tenant(Method::PUT, "/v1/kv/old")
            .body(format!("v{round}"))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200, "round {round}");
        let call = h.last_call();
        assert_eq!(call.method, "put");
        assert!(
            call.header("grpc-timeout").is_some() && call.header("x-call-timeout-ms").is_none(),
            "a unary call, round {round}"
        );
        let get = h.tenant(Method::GET, "/v1/kv/old").send().await.unwrap();
        assert_eq!(get.status(), 200);
        assert_eq!(get.text().await.unwrap(), format!("v{round}"));
    }
}

#[tokio::test]
async fn membership_changes_answer_202_with_their_migration_and_map_refusals() {
    let h = Harness::start().await;
    let send = |method: Method, path: &'static str, body: Option<serde_json::Value>| {
        let mut req = h.admin(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, body)
        }
    };
    let (status, body) = send(
        Method::POST,
        "/v1/admin/nodes",
        Some(serde_json::json!({"node_id": "n4", "address": "10.0.0.4:7000"})),
    )
    .await;
    assert_eq!(
        (status, body["migration_id"].as_str()),
        (202, Some("mig-add-n4"))
    );
    assert_eq!(h.last_call().method, "add_node");
    let (status, body) = send(
        Method::POST,
        "/v1/admin/nodes",
        Some(serde_json::json!({"node_id": "n1", "address": "10.0.0.1:7000"})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "https://pairdb.dev/problems/cluster-conflict");
    let (status, body) = send(
        Method::POST,
        "/v1/admin/nodes",
        Some(serde_json::json!({"node_id": "n4", "extra": 1})),
    )
    .await;
    assert_eq!(
        status, 400,
        "unknown and missing fields are refused: {body}"
    );
    let (status, body) = send(Method::DELETE, "/v1/admin/nodes/n2", None).await;
    assert_eq!(
        (status, body["migration_id"].as_str()),
        (202, Some("mig-remove-n2"))
    );
    let (status, body) = send(
        Method::PUT,
        "/v1/tenants/acme/replication-factor",
        Some(serde_json::json!({"replication_factor": 5})),
    )
    .await;
    assert_eq!(
        (status, body["migration_id"].as_str()),
        (202, Some("mig-rf-acme-5"))
    );
    let (status, body) = send(Method::DELETE, "/v1/tenants/acme", None).await;
    assert_eq!(
        (status, body["migration_id"].as_str()),
        (202, Some("mig-delete-acme"))
    );
    let (status, body) = send(Method::GET, "/v1/admin/migrations/mig-7", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["migration_id"].as_str(),
            body["kind"].as_str(),
            body["state"].as_str(),
            body["ranges_total"].as_u64(),
            body["ranges_done"].as_u64(),
            body["keys_streamed"].as_u64(),
            body["bytes_streamed"].as_u64(),
        ),
        (
            Some("mig-7"),
            Some("add_node"),
            Some("streaming"),
            Some(10),
            Some(4),
            Some(400),
            Some(40_000)
        )
    );
    assert!(body.get("error").is_none(), "no error, no field: {body}");
    let (status, body) = send(Method::GET, "/v1/admin/migrations/missing", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["type"], "https://pairdb.dev/problems/job-not-found");
    let (status, body) = send(Method::DELETE, "/v1/admin/migrations/mig-8", None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (
            body["migration_id"].as_str(),
            body["state"].as_str(),
            body["undropped"].clone()
        ),
        (
            Some("mig-8"),
            Some("rolling_back"),
            serde_json::json!(["n3"])
        )
    );
    let (status, body) = send(Method::DELETE, "/v1/admin/migrations/finished", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "https://pairdb.dev/problems/cluster-conflict");
}
