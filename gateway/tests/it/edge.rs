//! The public edge: the idempotency key named on every key-write answer, strict parsing of
//! what clients send, and clients that are slow, silent or too many.

use std::time::Duration;

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn every_key_write_answer_names_its_idempotency_key() {
    let h = Harness::start().await;
    let anonymous = |method: Method, path: &str| h.http.request(method, h.url(path));
    let cases = [
        // 401: no credential, with and without a client key.
        anonymous(Method::PUT, "/v1/kv/k").header("Idempotency-Key", "client-1"),
        anonymous(Method::DELETE, "/v1/kv/k"),
        // 400: a bad key, a bad level, a bad timeout.
        h.tenant(Method::PUT, "/v1/kv/a%2Fb%2")
            .header("Idempotency-Key", "client-2"),
        h.tenant(Method::PUT, "/v1/kv/k")
            .header("X-Consistency", "most")
            .header("Idempotency-Key", "client-3"),
        h.tenant(Method::DELETE, "/v1/kv/k")
            .header("X-Pairdb-Timeout", "soon"),
        // 413, 503, 422.
        h.tenant(Method::PUT, "/v1/kv/k")
            .body(vec![b'x'; (1 << 20) + 1]),
        h.tenant(Method::PUT, "/v1/kv/quorum").body("v"),
        h.tenant(Method::PUT, "/v1/kv/reused")
            .header("Idempotency-Key", "client-4"),
        // 200 and 204.
        h.tenant(Method::PUT, "/v1/kv/k")
            .header("Idempotency-Key", "\"client-5\""),
        h.tenant(Method::DELETE, "/v1/kv/k"),
    ];
    let mut statuses = Vec::new();
    for (i, request) in cases.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        statuses.push(response.status().as_u16());
        let key = response
            .headers()
            .get("idempotency-key")
            .unwrap_or_else(|| panic!("case {i} ({}) names no key", response.status()))
            .to_str()
            .unwrap()
            .to_owned();
        match i {
            0 => assert_eq!(key, "client-1"),
            2 => assert_eq!(key, "client-2"),
            3 => assert_eq!(key, "client-3"),
            7 => assert_eq!(key, "client-4"),
            8 => assert_eq!(key, "client-5"),
            _ => assert_eq!(key.len(), 32, "a generated key"),
        }
    }
    assert_eq!(statuses, [401, 401, 400, 400, 400, 413, 503, 422, 200, 204]);
    // The one answer that cannot name a key: the key itself is malformed.
    let bad = h
        .tenant(Method::PUT, "/v1/kv/k")
        .header("Idempotency-Key", "has space")
        .send()
        .await
        .unwrap();
    assert!(bad.headers().get("idempotency-key").is_none());
    assert_eq!(problem(bad, 400).await["type"], type_of("bad-request"));
    // Reads name none.
    let read = h.tenant(Method::GET, "/v1/kv/k").send().await.unwrap();
    assert!(read.headers().get("idempotency-key").is_none());
}

#[tokio::test]
async fn a_reused_idempotency_key_is_422() {
    let h = Harness::start().await;
    let body = problem(
        h.tenant(Method::DELETE, "/v1/kv/reused")
            .header("Idempotency-Key", "order-1")
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(body["type"], type_of("idempotency-key-reused"));
}

#[tokio::test]
async fn a_write_refused_as_not_ready_says_nothing_was_applied() {
    let h = Harness::start().await;
    let write = problem(
        h.tenant(Method::PUT, "/v1/kv/not-ready")
            .body("v")
            .send()
            .await
            .unwrap(),
        503,
    )
    .await;
    assert_eq!(write["type"], type_of("not-ready"));
    assert_eq!(write["applied"], "none");
    let read = problem(
        h.tenant(Method::GET, "/v1/kv/not-ready")
            .send()
            .await
            .unwrap(),
        503,
    )
    .await;
    assert!(read.get("applied").is_none());
}

#[tokio::test]
async fn malformed_client_input_is_refused_not_guessed() {
    let h = Harness::start().await;
    // An empty context is malformed, not absent.
    let empty = h
        .tenant(Method::PUT, "/v1/kv/k")
        .header("X-Pairdb-Context", "")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(empty, 400).await["type"], type_of("bad-context"));
    // A repeated consistency parameter is refused, not resolved to the first.
    let repeated = h
        .tenant(Method::GET, "/v1/kv/k?consistency=one&consistency=all")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(repeated, 400).await["type"],
        type_of("bad-consistency")
    );
    // A tenant body must be a JSON object: serde would read a struct from an array.
    let array = h
        .admin(Method::POST, "/v1/tenants")
        .header("content-type", "application/json")
        .body(r#"["acme", 3]"#)
        .send()
        .await
        .unwrap();
    let body = problem(array, 400).await;
    assert_eq!(body["type"], type_of("bad-request"));
    assert!(body["detail"].as_str().unwrap().contains("JSON object"));
    // An oversized tenant body is a payload too large, not a "value".
    let huge = h
        .admin(Method::POST, "/v1/tenants")
        .header("content-type", "application/json")
        .body(format!(r#"{{"tenant_id":"{}"}}"#, "a".repeat(100 * 1024)))
        .send()
        .await
        .unwrap();
    let body = problem(huge, 413).await;
    assert_eq!(body["title"], "Payload too large");
    assert!(!body["detail"].as_str().unwrap().contains("value"));
    assert!(h.calls().iter().all(|c| c.method != "create_tenant"));
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_off() {
    let h = Harness::start_with(|c, _| c.header_read_timeout = Duration::from_millis(300)).await;
    let mut tcp = TcpStream::connect(h.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "PUT /v1/kv/k HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
        h.api_key
    );
    // One byte every 50 ms: the whole head would take seconds. The server closes first.
    let dripping = async {
        for byte in request.bytes() {
            if tcp.write_all(&[byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    // A bound on a hang, not a timing assertion: the server must close well before the drip
    // ends (it would take 3 s and more).
    let cut_off = tokio::time::timeout(Duration::from_secs(30), dripping)
        .await
        .expect("the drip never ended");
    assert!(cut_off, "the server read a dripped head to the end");
    assert!(h.calls().is_empty());
}

#[tokio::test]
async fn a_silent_connection_is_closed() {
    let h = Harness::start_with(|c, _| c.header_read_timeout = Duration::from_millis(200)).await;
    let mut tcp = TcpStream::connect(h.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let sent = tokio::time::timeout(Duration::from_secs(30), read_to_close(&mut tcp))
        .await
        .expect("the server never closed a silent connection");
    assert!(sent.is_empty());
}

#[tokio::test]
async fn a_body_shorter_than_its_length_is_408_within_the_deadline() {
    let h = Harness::start().await;
    let mut tcp = TcpStream::connect(h.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "PUT /v1/kv/k HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         x-pairdb-timeout: 300\r\ncontent-length: 100\r\n\r\nonly ten b",
        h.api_key
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), read_to_close(&mut tcp))
        .await
        .expect("no answer to a stalled body");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("idempotency-key:"),
        "{answer}"
    );
    assert!(h.calls().is_empty(), "nothing was forwarded");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_slots_free_up() {
    const CAP: usize = 20;
    let h = Harness::start_with(|c, _| {
        c.max_connections = CAP;
        c.header_read_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = h.base.trim_start_matches("http://").to_owned();
    // Fill every slot with a connection that sent half a request head.
    let mut holders = Vec::new();
    for _ in 0..CAP {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nho").await.unwrap();
        holders.push(tcp);
    }
    // One more, with a whole request: closed at once, unanswered.
    let mut over = TcpStream::connect(&addr).await.unwrap();
    over.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(30), read_to_close(&mut over))
        .await
        .expect("a connection over the cap was kept open");
    assert!(closed.is_empty(), "answered over the cap");
    // The half-sent heads time out and free their slots: the service comes back by itself.
    for holder in &mut holders {
        tokio::time::timeout(Duration::from_secs(30), read_to_close(holder))
            .await
            .expect("a stalled head was never cut off");
    }
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = h.http.get(h.url("/healthz")).send().await
            && r.status() == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the gateway did not serve again once the slots freed");
}

#[tokio::test]
async fn a_replayed_write_says_so() {
    let h = Harness::start().await;
    let replayed = h
        .tenant(Method::PUT, "/v1/kv/replayed")
        .header("Idempotency-Key", "order-5")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 200);
    assert_eq!(
        replayed.headers().get("idempotent-replayed").unwrap(),
        "true"
    );
    let fresh = h
        .tenant(Method::PUT, "/v1/kv/k")
        .body("v")
        .send()
        .await
        .unwrap();
    assert!(fresh.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn a_stalled_http2_preface_is_cut_off_and_http2_still_served() {
    let h = Harness::start_with(|c, _| c.header_read_timeout = Duration::from_millis(300)).await;
    // Half an HTTP/2 preface, then silence: closed at the header timeout.
    let mut tcp = TcpStream::connect(h.base.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let sent = tokio::time::timeout(Duration::from_secs(30), read_to_close(&mut tcp))
        .await
        .expect("a stalled preface was never cut off");
    assert!(sent.is_empty());
    // A real HTTP/2 (prior knowledge) client is served: the sniffed bytes are put back.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
}
