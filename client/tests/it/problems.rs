//! Reading problem details.

use std::time::Duration;

use pairdb_client::{Applied, Client, ClientError, RetryPolicy};
use pairdb_core::ErrorKind;

use crate::fake::{Fake, Scripted};

fn single_attempt(fake: &Fake) -> Client {
    Client::builder(&fake.base, "k")
        .retry(RetryPolicy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn parses_a_write_failure_with_extension_members() {
    let fake = Fake::start().await;
    fake.script([Scripted::problem(
        503,
        "quorum-unavailable",
        serde_json::json!({"acks": 1, "required": 2, "applied": "partial"}),
    )
    .header("retry-after", "2")]);
    let err = single_attempt(&fake)
        .put("k", "v")
        .await
        .expect_err("unavailable");
    let ClientError::Api(problem) = &err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!(problem.kind, "quorum-unavailable");
    assert_eq!(
        problem.type_uri,
        "https://pairdb.dev/problems/quorum-unavailable"
    );
    assert_eq!(problem.error_kind(), Some(ErrorKind::QuorumUnavailable));
    assert_eq!(problem.title, "quorum-unavailable");
    assert_eq!(problem.status, 503);
    assert_eq!(
        problem.detail.as_deref(),
        Some("scripted quorum-unavailable")
    );
    assert_eq!(
        problem.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(problem.acks, Some(1));
    assert_eq!(problem.required, Some(2));
    assert_eq!(problem.answered, None);
    assert_eq!(problem.applied, Some(Applied::Partial));
    assert_eq!(problem.retry_after, Some(Duration::from_secs(2)));
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn parses_a_read_failure() {
    let fake = Fake::start().await;
    fake.script([Scripted::problem(
        503,
        "quorum-unavailable",
        serde_json::json!({"answered": 1, "required": 3}),
    )]);
    let err = single_attempt(&fake)
        .get("k")
        .await
        .expect_err("unavailable");
    let problem = err.problem().expect("problem");
    assert_eq!((problem.answered, problem.required), (Some(1), Some(3)));
    assert_eq!(problem.applied, None);
}

#[tokio::test]
async fn a_non_problem_body_still_yields_a_problem() {
    let fake = Fake::start().await;
    fake.script([Scripted::status(502).body("bad gateway from a proxy")]);
    let err = single_attempt(&fake).get("k").await.expect_err("502");
    let problem = err.problem().expect("problem");
    assert_eq!(problem.status, 502);
    assert_eq!(problem.type_uri, "about:blank");
    assert_eq!(problem.error_kind(), None);
    assert_eq!(problem.detail.as_deref(), Some("bad gateway from a proxy"));
}

#[tokio::test]
async fn unauthorized_is_an_api_error() {
    let fake = Fake::start().await;
    fake.script([
        Scripted::problem(401, "unauthorized", serde_json::json!({}))
            .header("www-authenticate", "Bearer"),
    ]);
    let err = fake.client().get("k").await.expect_err("401");
    assert_eq!(
        err.problem().and_then(|p| p.error_kind()),
        Some(ErrorKind::Unauthorized)
    );
    assert_eq!(fake.seen().len(), 1);
}
