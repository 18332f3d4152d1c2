//! A scripted stand-in for the gateway: answers each request with the next scripted response
//! and records what it was sent, raw path included.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use pairdb_client::{Client, RetryPolicy};

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    /// Path and query exactly as sent (not percent-decoded).
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Scripted {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    hang: bool,
}

impl Scripted {
    pub fn status(status: u16) -> Self {
        Scripted {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            hang: false,
        }
    }

    /// Never answers (until the client gives up).
    pub fn hang() -> Self {
        Scripted {
            hang: true,
            ..Scripted::status(200)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn json(self, value: serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    /// A problem+json answer of `kind`, with `extra` members merged in.
    pub fn problem(status: u16, kind: &str, extra: serde_json::Value) -> Self {
        let mut body = serde_json::json!({
            "type": format!("https://pairdb.dev/problems/{kind}"),
            "title": kind,
            "status": status,
            "detail": format!("scripted {kind}"),
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        });
        if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        Scripted::status(status)
            .header("content-type", "application/problem+json")
            .body(body.to_string())
    }

    /// A successful read of `value` with context `context`.
    pub fn read(value: &[u8], context: &str) -> Self {
        Scripted::status(200)
            .header("content-type", "text/plain")
            .header("x-pairdb-context", context)
            .header("x-consistency", "quorum")
            .header("x-pairdb-replicas", "answered=2/3")
            .body(value)
    }

    /// A successful PUT answer (JSON body and headers) with context `context`.
    pub fn put(context: &str) -> Self {
        Scripted::status(200)
            .header("x-pairdb-context", context)
            .header("x-consistency", "quorum")
            .header("x-pairdb-replicas", "acked=2/3")
            .json(serde_json::json!({"context": context, "acks": 2, "replicas": 3}))
    }
}

#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Scripted>>,
    seen: Mutex<Vec<Seen>>,
}

/// A running fake gateway on `127.0.0.1:<ephemeral>`; stops with the test's runtime.
pub struct Fake {
    pub base: String,
    script: Arc<Script>,
}

impl Fake {
    pub async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let script = Arc::new(Script::default());
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&script));
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Fake {
            base: format!("http://{addr}"),
            script,
        }
    }

    /// Queues answers, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.script.answers.lock().expect("lock").extend(answers);
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().expect("lock").clone()
    }

    /// A client of this fake with key `k` and quick retries.
    pub fn client(&self) -> Client {
        Client::builder(&self.base, "k")
            .retry(quick_retries())
            .build()
            .expect("client")
    }
}

/// Four attempts, waits of at most 5 ms.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

/// Whether `s` looks like a generated idempotency key.
pub fn is_generated_key(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn answer(
    State(script): State<Arc<Script>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let idempotency_key = headers.get("idempotency-key").cloned();
    script.seen.lock().expect("lock").push(Seen {
        method,
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers,
        body: body.to_vec(),
    });
    let next = script.answers.lock().expect("lock").pop_front();
    let Some(scripted) = next else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "unscripted request").into_response();
    };
    if scripted.hang {
        std::future::pending::<()>().await;
    }
    let mut response = Response::new(axum::body::Body::from(scripted.body));
    *response.status_mut() = StatusCode::from_u16(scripted.status).expect("status");
    let out = response.headers_mut();
    for (name, value) in scripted.headers {
        out.append(
            HeaderName::try_from(name).expect("header name"),
            HeaderValue::try_from(value).expect("header value"),
        );
    }
    // Like the gateway: every write answer names its idempotency key.
    if let Some(key) = idempotency_key
        && !out.contains_key("idempotency-key")
    {
        out.insert("idempotency-key", key);
    }
    response
}
