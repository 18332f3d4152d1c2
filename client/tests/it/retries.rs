//! When the client retries, and that a write's retries share one idempotency key.

use std::time::Duration;

use pairdb_client::{Client, ClientError, NewTenant, RetryPolicy};

use crate::fake::{Fake, Scripted, is_generated_key, quick_retries};

fn unavailable() -> Scripted {
    Scripted::problem(
        503,
        "quorum-unavailable",
        serde_json::json!({"answered": 1, "required": 2}),
    )
}

#[tokio::test]
async fn retries_503_then_succeeds() {
    let fake = Fake::start().await;
    fake.script([unavailable(), Scripted::read(b"v", "c")]);
    let item = fake.client().get("k").await.expect("get").expect("present");
    assert_eq!(&item.value[..], b"v");
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn honours_retry_after_capped_by_max_backoff() {
    let fake = Fake::start().await;
    // Retry-After of an hour: the test finishes only because the wait is capped at 5 ms.
    fake.script([
        unavailable().header("retry-after", "3600"),
        Scripted::status(429).header("retry-after", "3600"),
        Scripted::put("c"),
    ]);
    fake.client().put("k", "v").await.expect("put");
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn does_not_retry_400() {
    let fake = Fake::start().await;
    fake.script([Scripted::problem(400, "bad-key", serde_json::json!({}))]);
    let err = fake.client().put("k", "v").await.expect_err("bad key");
    let problem = err.problem().expect("problem");
    assert_eq!(problem.status, 400);
    assert_eq!(problem.kind, "bad-key");
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn retries_504_on_put_with_the_same_idempotency_key() {
    let fake = Fake::start().await;
    fake.script([
        Scripted::problem(504, "timeout", serde_json::json!({"applied": "unknown"})),
        unavailable(),
        Scripted::put("c"),
    ]);
    let written = fake.client().put("k", "v").await.expect("put");
    let keys: Vec<_> = fake
        .seen()
        .iter()
        .map(|s| s.header("idempotency-key").expect("key").to_owned())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(is_generated_key(&keys[0]));
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(written.idempotency_key, keys[0]);
}

#[tokio::test]
async fn two_writes_get_different_idempotency_keys() {
    let fake = Fake::start().await;
    fake.script([Scripted::put("c"), Scripted::put("c")]);
    let client = fake.client();
    let a = client.put("k", "v").await.expect("put");
    let b = client.put("k", "v").await.expect("put");
    assert_ne!(a.idempotency_key, b.idempotency_key);
}

#[tokio::test]
async fn retries_a_write_in_flight_but_not_a_plain_conflict() {
    let fake = Fake::start().await;
    fake.script([
        Scripted::status(409).header("retry-after", "1"),
        Scripted::put("c"),
    ]);
    let client = fake.client();
    client.put("k", "v").await.expect("put after in-flight 409");
    assert_eq!(fake.seen().len(), 2);

    fake.script([Scripted::problem(
        409,
        "tenant-exists",
        serde_json::json!({}),
    )]);
    let err = client
        .create_tenant(&NewTenant::new("acme"))
        .await
        .expect_err("exists");
    assert_eq!(
        err.problem().map(|p| p.kind.as_str()),
        Some("tenant-exists")
    );
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn does_not_retry_an_unknown_outcome_without_an_idempotency_key() {
    let fake = Fake::start().await;
    fake.script([Scripted::problem(504, "timeout", serde_json::json!({}))]);
    let err = fake
        .client()
        .create_tenant(&NewTenant::new("acme"))
        .await
        .expect_err("timeout");
    assert_eq!(err.problem().map(|p| p.status), Some(504));
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn gives_up_after_max_attempts_with_the_last_problem() {
    let fake = Fake::start().await;
    fake.script([unavailable(), unavailable(), unavailable(), unavailable()]);
    let err = fake.client().get("k").await.expect_err("unavailable");
    let problem = err.problem().expect("problem");
    assert_eq!(problem.status, 503);
    assert_eq!((problem.answered, problem.required), (Some(1), Some(2)));
    assert_eq!(fake.seen().len(), 4);
}

#[tokio::test]
async fn retries_refused_connections_then_reports_transport() {
    // Bound but never listening: connections are refused, and no other socket can take the
    // port while the test runs.
    let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
    reserved
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let port = reserved.local_addr().expect("addr").port();
    let client = Client::builder(format!("http://127.0.0.1:{port}"), "k")
        .retry(RetryPolicy {
            max_attempts: 3,
            ..quick_retries()
        })
        .build()
        .expect("client");
    for result in [
        client.get("k").await.map(|_| ()),
        client.put("k", "v").await.map(|_| ()),
        client.list_tenants().await.map(|_| ()),
    ] {
        match result {
            Err(ClientError::Transport { attempts, source }) => {
                assert_eq!(attempts, 3);
                assert!(source.is_connect(), "{source}");
            }
            other => panic!("expected a transport error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn retries_a_timed_out_write_with_the_same_key() {
    let fake = Fake::start().await;
    fake.script([Scripted::hang(), Scripted::put("c")]);
    let client = Client::builder(&fake.base, "k")
        .timeout(Duration::from_millis(10))
        .retry(quick_retries())
        .build()
        .expect("client");
    client.put("k", "v").await.expect("put after a timeout");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].header("idempotency-key"),
        seen[1].header("idempotency-key")
    );
    assert_eq!(seen[0].header("x-pairdb-timeout"), Some("10"));
}
