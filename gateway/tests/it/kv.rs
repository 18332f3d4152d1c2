//! Key-value routes: success paths, headers, and raw key bytes.

use reqwest::Method;

use crate::support::{Harness, problem, type_of};

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn put_then_get_round_trips_with_headers() {
    let h = Harness::start().await;
    let put = h
        .tenant(Method::PUT, "/v1/kv/greeting")
        .header("content-type", "text/plain; charset=utf-8")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        header(&put, "x-pairdb-context").as_deref(),
        Some("ctx-after-write")
    );
    assert_eq!(
        header(&put, "x-consistency").as_deref(),
        Some("quorum"),
        "tenant default"
    );
    assert_eq!(
        header(&put, "x-pairdb-replicas").as_deref(),
        Some("acked=2/3")
    );
    assert_eq!(header(&put, "x-pairdb-conflict"), None);
    let idem = header(&put, "idempotency-key").unwrap();
    assert_eq!(idem.len(), 32, "generated when absent");
    assert!(idem.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(header(&put, "traceresponse").is_some());
    let body: serde_json::Value = put.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"context": "ctx-after-write", "acks": 2, "replicas": 3})
    );

    let call = h.last_call();
    let sent = call.put.unwrap();
    assert_eq!(sent.key, b"greeting");
    assert_eq!(sent.value, b"hello");
    assert_eq!(sent.content_type, "text/plain; charset=utf-8");
    assert_eq!(sent.context, "");
    assert_eq!(
        sent.idempotency_key, idem,
        "the generated key is the one forwarded"
    );
    // What is left of the default request timeout once the body was read.
    assert!(
        (4000..=5000).contains(&sent.timeout_ms),
        "default request timeout, less the time spent: {}",
        sent.timeout_ms
    );

    let get = h
        .tenant(Method::GET, "/v1/kv/greeting")
        .header("x-consistency", "one")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(
        header(&get, "content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(header(&get, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        header(&get, "x-pairdb-context").as_deref(),
        Some("ctx-read")
    );
    assert_eq!(header(&get, "x-consistency").as_deref(), Some("one"));
    assert_eq!(
        header(&get, "x-pairdb-replicas").as_deref(),
        Some("answered=2/3")
    );
    assert_eq!(header(&get, "x-pairdb-read-repair"), None);
    assert_eq!(get.bytes().await.unwrap().as_ref(), b"hello");
}

#[tokio::test]
async fn put_defaults_content_type_and_forwards_context_and_idempotency_key() {
    let h = Harness::start().await;
    let put = h
        .tenant(Method::PUT, "/v1/kv/k")
        .header("x-pairdb-context", "ctx-from-client")
        .header("idempotency-key", "\"retry-42\"")
        .header("x-pairdb-timeout", "300")
        .body(vec![0u8, 1, 2])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        header(&put, "idempotency-key").as_deref(),
        Some("retry-42"),
        "quotes stripped"
    );
    let sent = h.last_call().put.unwrap();
    assert_eq!(sent.content_type, "application/octet-stream");
    assert_eq!(sent.context, "ctx-from-client");
    assert_eq!(sent.idempotency_key, "retry-42");
    assert!(
        (1..=300).contains(&sent.timeout_ms),
        "the client's 300 ms, less the time spent: {}",
        sent.timeout_ms
    );

    h.tenant(Method::PUT, "/v1/kv/k")
        .header("x-pairdb-timeout", "600000")
        .body("x")
        .send()
        .await
        .unwrap();
    let capped = h.last_call().put.unwrap().timeout_ms;
    assert!(
        (4000..=5000).contains(&capped),
        "capped by the request timeout: {capped}"
    );
}

#[tokio::test]
async fn get_of_absent_key_is_404_with_context() {
    let h = Harness::start().await;
    let response = h
        .tenant(Method::GET, "/v1/kv/never-written")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "x-pairdb-context").as_deref(),
        Some("ctx-tombstone")
    );
    let body = problem(response, 404).await;
    assert_eq!(body["type"], type_of("key-not-found"));
}

#[tokio::test]
async fn delete_is_204_with_headers() {
    let h = Harness::start().await;
    for key in ["present", "absent"] {
        if key == "present" {
            h.tenant(Method::PUT, "/v1/kv/present")
                .body("v")
                .send()
                .await
                .unwrap();
        }
        let response = h
            .tenant(Method::DELETE, &format!("/v1/kv/{key}"))
            .header("idempotency-key", format!("del-{key}"))
            .header("x-pairdb-context", "ctx-1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        assert_eq!(
            header(&response, "x-pairdb-context").as_deref(),
            Some("ctx-after-write")
        );
        assert_eq!(
            header(&response, "x-consistency").as_deref(),
            Some("quorum")
        );
        assert_eq!(
            header(&response, "x-pairdb-replicas").as_deref(),
            Some("acked=2/3")
        );
        assert_eq!(
            header(&response, "idempotency-key"),
            Some(format!("del-{key}"))
        );
        let sent = h.last_call().delete.unwrap();
        assert_eq!(sent.key, key.as_bytes());
        assert_eq!(sent.context, "ctx-1");
        assert_eq!(sent.idempotency_key, format!("del-{key}"));
    }
}

#[tokio::test]
async fn keys_are_raw_bytes_decoded_from_the_path() {
    let h = Harness::start().await;
    for (path, key) in [
        ("/v1/kv/a%2Fb", b"a/b".to_vec()),
        ("/v1/kv/%FF%00x", vec![0xff, 0x00, b'x']),
        ("/v1/kv/sp%20ace+plus", b"sp ace+plus".to_vec()),
    ] {
        let put = h.tenant(Method::PUT, path).body("v").send().await.unwrap();
        assert_eq!(put.status(), 200, "{path}");
        assert_eq!(h.last_call().key, key, "{path}");
        let get = h.tenant(Method::GET, path).send().await.unwrap();
        assert_eq!(get.status(), 200, "{path}");
        assert_eq!(h.last_call().key, key, "{path}");
    }
    let longest = format!("/v1/kv/{}", "%41".repeat(1024));
    let put = h
        .tenant(Method::PUT, &longest)
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "1024 bytes after decoding is allowed");
}

#[tokio::test]
async fn conflicts_and_read_repairs_are_reported() {
    let h = Harness::start().await;
    let won = h
        .tenant(Method::PUT, "/v1/kv/conflict-won")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&won, "x-pairdb-conflict").as_deref(),
        Some("lww; outcome=won")
    );
    let lost = h
        .tenant(Method::PUT, "/v1/kv/conflict-lost")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&lost, "x-pairdb-conflict").as_deref(),
        Some("lww; outcome=lost")
    );
    let read = h
        .tenant(Method::GET, "/v1/kv/repaired")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(header(&read, "x-pairdb-conflict").as_deref(), Some("lww"));
    assert_eq!(header(&read, "x-pairdb-read-repair").as_deref(), Some("2"));
}

#[tokio::test]
async fn consistency_from_query_parameter() {
    let h = Harness::start().await;
    let get = h
        .tenant(Method::PUT, "/v1/kv/q?consistency=all")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(header(&get, "x-consistency").as_deref(), Some("all"));
    assert_eq!(h.last_call().key, b"q", "the query is not part of the key");
}

#[tokio::test]
async fn a_retried_write_is_replayed_and_reaches_the_coordinator_once() {
    let h = Harness::start().await;
    let put = |body: &'static str| {
        h.tenant(Method::PUT, "/v1/kv/once")
            .header("content-type", "text/plain")
            .header("idempotency-key", "retry-me")
            .body(body)
            .send()
    };
    let first = put("v").await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "idempotent-replayed"), None);
    let first_body = first.text().await.unwrap();
    let again = put("v").await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        header(&again, "idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(&again, "idempotency-key").as_deref(),
        Some("retry-me")
    );
    assert_eq!(again.text().await.unwrap(), first_body);
    // The same key for another write of the key is refused, and changes nothing.
    let other = put("w").await.unwrap();
    let body = problem(other, 422).await;
    assert_eq!(body["type"], type_of("idempotency-key-reused"));
    let puts = h
        .coordinator
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.method == "put")
        .count();
    assert_eq!(puts, 1);
    // Without a key of its own, every write runs (the leader deduplicates by the generated key).
    for _ in 0..2 {
        h.tenant(Method::PUT, "/v1/kv/once")
            .body("v")
            .send()
            .await
            .unwrap();
    }
    let puts = h
        .coordinator
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.method == "put")
        .count();
    assert_eq!(puts, 3);
}

/// A gateway starts while its Redis does not answer (an operator may start them in any order):
/// reads and writes without a client key are served — the tenant cache skips Redis — and a
/// write with a client key is refused 503, since its record cannot be kept.
#[tokio::test]
async fn a_gateway_starts_and_serves_while_its_redis_is_down() {
    // Port 1 refuses connections at once.
    let h = Harness::start_with(|c, _| c.redis_url = Some("redis://127.0.0.1:1".into())).await;
    let put = h
        .tenant(reqwest::Method::PUT, "/v1/kv/k")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "{:?}", put.text().await);
    let keyed = h
        .tenant(reqwest::Method::PUT, "/v1/kv/k")
        .header("Idempotency-Key", "down-1")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 503);
    let problem: serde_json::Value = keyed.json().await.unwrap();
    assert_eq!(
        problem["type"].as_str().map(|t| t.ends_with("not-ready")),
        Some(true),
        "{problem}"
    );
}
