//! The key-value wire format: what the client sends and how it reads answers.

use std::time::Duration;

use pairdb_client::{
    Client, ClientError, ConflictOutcome, Consistency, Context, DeleteOptions, ReadOptions,
    WriteOptions,
};

use crate::fake::{Fake, Scripted, is_generated_key, quick_retries};

#[tokio::test]
async fn sends_bearer_key_default_level_and_deadline() {
    let fake = Fake::start().await;
    let client = Client::builder(&fake.base, "pdb_id_secret")
        .consistency(Consistency::One)
        .timeout(Duration::from_millis(1500))
        .retry(quick_retries())
        .build()
        .expect("client");
    fake.script([Scripted::read(b"v", "c1"), Scripted::read(b"v", "c2")]);

    client.get("k").await.expect("get");
    let options = ReadOptions {
        consistency: Some(Consistency::All),
    };
    client.get_with("k", &options).await.expect("get_with");

    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/v1/kv/k");
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer pdb_id_secret")
    );
    assert_eq!(seen[0].header("x-consistency"), Some("one"));
    assert_eq!(seen[0].header("x-pairdb-timeout"), Some("1500"));
    assert_eq!(
        seen[1].header("x-consistency"),
        Some("all"),
        "per-request level wins"
    );
}

#[tokio::test]
async fn sends_no_level_or_deadline_unless_configured() {
    let fake = Fake::start().await;
    fake.script([Scripted::read(b"v", "c1")]);
    fake.client().get("k").await.expect("get");
    let seen = fake.seen();
    assert_eq!(seen[0].header("x-consistency"), None);
    assert_eq!(seen[0].header("x-pairdb-timeout"), None);
    assert_eq!(
        seen[0].header("idempotency-key"),
        None,
        "reads carry no key"
    );
}

#[tokio::test]
async fn reads_item_and_its_headers() {
    let fake = Fake::start().await;
    fake.script([Scripted::read(b"hello", "ctx-1")
        .header("x-pairdb-conflict", "lww")
        .header("x-pairdb-read-repair", "2")]);
    let item = fake.client().get("k").await.expect("get").expect("present");
    assert_eq!(&item.value[..], b"hello");
    assert_eq!(item.content_type, "text/plain");
    assert_eq!(item.context.as_str(), "ctx-1");
    assert!(item.conflict);
    assert_eq!(item.read_repairs, 2);
    assert_eq!((item.answered, item.replicas), (2, 3));
    assert_eq!(item.consistency, Some(Consistency::Quorum));
}

#[tokio::test]
async fn carries_context_from_read_into_write() {
    let fake = Fake::start().await;
    fake.script([
        Scripted::read(b"v1", "ctx-from-read"),
        Scripted::put("ctx-after-write")
            .header("x-pairdb-conflict", "lww; outcome=won")
            .header("idempotent-replayed", "true"),
    ]);
    let client = fake.client();
    let item = client.get("k").await.expect("get").expect("present");
    let options = WriteOptions {
        context: Some(item.context),
        content_type: Some("text/plain".to_owned()),
        ..WriteOptions::default()
    };
    let written = client.put_with("k", "v2", &options).await.expect("put");

    let seen = fake.seen();
    let put = &seen[1];
    assert_eq!(put.method, "PUT");
    assert_eq!(put.path, "/v1/kv/k");
    assert_eq!(put.header("x-pairdb-context"), Some("ctx-from-read"));
    assert_eq!(put.header("content-type"), Some("text/plain"));
    assert_eq!(put.body, b"v2");
    let key = put.header("idempotency-key").expect("idempotency key");
    assert!(is_generated_key(key), "{key}");

    assert_eq!(written.context, Context::from_token("ctx-after-write"));
    assert_eq!((written.acks, written.replicas), (2, 3));
    assert_eq!(written.conflict, Some(ConflictOutcome::Won));
    assert_eq!(written.idempotency_key, key);
    assert!(written.replayed);
}

#[tokio::test]
async fn blind_put_sends_no_context_and_octet_stream() {
    let fake = Fake::start().await;
    fake.script([Scripted::put("c")]);
    let written = fake.client().put("k", vec![1u8, 2, 3]).await.expect("put");
    let seen = fake.seen();
    assert_eq!(seen[0].header("x-pairdb-context"), None);
    assert_eq!(
        seen[0].header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(written.conflict, None);
    assert!(!written.replayed);
}

#[tokio::test]
async fn uses_the_callers_idempotency_key() {
    let fake = Fake::start().await;
    fake.script([Scripted::put("c").header("x-pairdb-conflict", "lww; outcome=lost")]);
    let options = WriteOptions {
        idempotency_key: Some("order-42".to_owned()),
        ..WriteOptions::default()
    };
    let written = fake
        .client()
        .put_with("k", "v", &options)
        .await
        .expect("put");
    assert_eq!(fake.seen()[0].header("idempotency-key"), Some("order-42"));
    assert_eq!(written.idempotency_key, "order-42");
    assert_eq!(written.conflict, Some(ConflictOutcome::Lost));
}

#[tokio::test]
async fn deletes_with_headers_only_answer() {
    let fake = Fake::start().await;
    fake.script([Scripted::status(204)
        .header("x-pairdb-context", "tomb")
        .header("x-pairdb-replicas", "acked=3/3")]);
    let options = DeleteOptions {
        consistency: Some(Consistency::All),
        context: Some(Context::from_token("ctx-1")),
        idempotency_key: None,
    };
    let deleted = fake
        .client()
        .delete_with("k", &options)
        .await
        .expect("delete");
    let seen = fake.seen();
    assert_eq!(seen[0].method, "DELETE");
    assert_eq!(seen[0].path, "/v1/kv/k");
    assert_eq!(seen[0].header("x-consistency"), Some("all"));
    assert_eq!(seen[0].header("x-pairdb-context"), Some("ctx-1"));
    assert!(is_generated_key(
        seen[0].header("idempotency-key").expect("key")
    ));
    assert_eq!(deleted.context.as_str(), "tomb");
    assert_eq!((deleted.acks, deleted.replicas), (3, 3));
}

#[tokio::test]
async fn encodes_each_key_as_one_segment() {
    let fake = Fake::start().await;
    fake.script([
        Scripted::read(b"v", "c"),
        Scripted::read(b"v", "c"),
        Scripted::read(b"v", "c"),
    ]);
    let client = fake.client();
    client.get("a/b").await.expect("slash");
    client.get([0xffu8, 0x00]).await.expect("raw bytes");
    client
        .get("sp ace?#%~._-")
        .await
        .expect("reserved characters");
    let paths: Vec<_> = fake.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        [
            "/v1/kv/a%2Fb",
            "/v1/kv/%FF%00",
            "/v1/kv/sp%20ace%3F%23%25~._-"
        ]
    );
}

#[tokio::test]
async fn keeps_a_base_url_prefix() {
    let fake = Fake::start().await;
    fake.script([Scripted::read(b"v", "c")]);
    let client = Client::builder(format!("{}/pairdb/", fake.base), "k")
        .build()
        .expect("client");
    client.get("x").await.expect("get");
    assert_eq!(fake.seen()[0].path, "/pairdb/v1/kv/x");
}

#[tokio::test]
async fn refuses_unaddressable_keys_without_sending() {
    let fake = Fake::start().await;
    let client = fake.client();
    for key in ["", ".", ".."] {
        assert!(matches!(
            client.get(key).await,
            Err(ClientError::InvalidKey { .. })
        ));
        assert!(matches!(
            client.put(key, "v").await,
            Err(ClientError::InvalidKey { .. })
        ));
    }
    let bad_context = WriteOptions {
        context: Some(Context::from_token("line\nbreak")),
        ..WriteOptions::default()
    };
    assert!(matches!(
        client.put_with("k", "v", &bad_context).await,
        Err(ClientError::InvalidContext)
    ));
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn absent_key_reads_as_none() {
    let fake = Fake::start().await;
    fake.script([
        Scripted::problem(404, "key-not-found", serde_json::json!({})),
        Scripted::status(404),
    ]);
    let client = fake.client();
    assert!(client.get("k").await.expect("get").is_none());
    assert!(client.get("k").await.expect("bare 404").is_none());
    assert_eq!(fake.seen().len(), 2, "a 404 is not retried");
}

#[tokio::test]
async fn a_404_of_another_kind_is_an_error() {
    let fake = Fake::start().await;
    fake.script([Scripted::problem(
        404,
        "route-not-found",
        serde_json::json!({}),
    )]);
    let err = fake.client().get("k").await.expect_err("wrong route");
    assert_eq!(
        err.problem().map(|p| p.kind.as_str()),
        Some("route-not-found")
    );
}

#[tokio::test]
async fn answers_missing_the_contract_headers_are_unexpected() {
    let fake = Fake::start().await;
    fake.script([
        Scripted::status(200).body("v"),
        Scripted::status(200).header("x-pairdb-context", "c"),
    ]);
    let client = fake.client();
    assert!(matches!(
        client.get("k").await,
        Err(ClientError::UnexpectedResponse(_))
    ));
    assert!(matches!(
        client.put("k", "v").await,
        Err(ClientError::UnexpectedResponse(_))
    ));
}
