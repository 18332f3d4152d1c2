//! Coordinated omission: a server that stalls for a second in the middle of a constant-arrival-
//! rate run must show the stall — in the latency percentiles (iterations measured from when they
//! were due) or as dropped iterations — never hide it by slowing the request rate down.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use pairdb_loadtest::threshold::{Selector, Stat, Statistics};
use pairdb_loadtest::{Options, Target, execute, scenario};
use tokio::time::Instant;

/// A stand-in for pairdb's `GET /v1/kv/{key}` that answers "no such key" at once, except that
/// every request arriving between 1 s and 2 s after the server started waits until 2 s.
async fn stalling_server() -> String {
    let started = Instant::now();
    let app = Router::new().route(
        "/v1/kv/{key}",
        get(move || async move {
            let now = started.elapsed();
            if now >= Duration::from_secs(1) && now < Duration::from_secs(2) {
                tokio::time::sleep_until(started + Duration::from_secs(2)).await;
            }
            (
                axum::http::StatusCode::NOT_FOUND,
                [("content-type", "application/problem+json")],
                r#"{"type":"about:blank","title":"Not Found","status":404}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn plan(max_vus: u32) -> scenario::Plan {
    scenario::parse(&format!(
        r#"
[scenarios.steady]
executor = "constant-arrival-rate"
rate = 100
duration = "3s"
pre_allocated_vus = 10
max_vus = {max_vus}
[[scenarios.steady.requests]]
method = "GET"
key = "k{{n}}"
"#
    ))
    .expect("plan")
}

fn all(metric: &str) -> Selector {
    Selector {
        metric: metric.into(),
        tags: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_percentiles_when_vus_suffice() {
    let url = stalling_server().await;
    let report = execute(
        &plan(300),
        &Target {
            url,
            api_key: "pdb_test_key".into(),
        },
        &Options::default(),
    )
    .await
    .expect("run");
    let r = &report.recorder;
    // About 300 iterations were due; about 100 of them during the stall, waiting up to a second
    // each from their due time.
    let iterations = r.stat(&all("iterations"), Stat::Count).unwrap_or(0.0);
    assert!((290.0..=300.0).contains(&iterations), "{iterations}");
    let p99 = r
        .stat(&all("http_req_duration"), Stat::P(99.0))
        .unwrap_or(0.0);
    let p90 = r
        .stat(&all("http_req_duration"), Stat::P(90.0))
        .unwrap_or(0.0);
    assert!(p99 >= 800.0, "p99 {p99} ms hides the 1 s stall");
    assert!(p90 >= 300.0, "p90 {p90} ms hides the 1 s stall");
    assert_eq!(r.stat(&all("dropped_iterations"), Stat::Count), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_as_dropped_iterations_when_vus_run_out() {
    let url = stalling_server().await;
    let report = execute(
        &plan(10),
        &Target {
            url,
            api_key: "pdb_test_key".into(),
        },
        &Options::default(),
    )
    .await
    .expect("run");
    let r = &report.recorder;
    // 10 VUs are all stuck in the stall: the ~90 other iterations due meanwhile are dropped,
    // and every iteration due is either run or counted as dropped.
    let dropped = r
        .stat(&all("dropped_iterations"), Stat::Count)
        .unwrap_or(0.0);
    let iterations = r.stat(&all("iterations"), Stat::Count).unwrap_or(0.0);
    assert!(dropped >= 70.0, "only {dropped} dropped");
    assert!(
        (290.0..=300.0).contains(&(dropped + iterations)),
        "{dropped} + {iterations}"
    );
    let max = r.stat(&all("http_req_duration"), Stat::Max).unwrap_or(0.0);
    assert!(max >= 800.0, "max {max} ms");
}

/// An iteration that starts late (its VU's runtime was busy, its timer fired late) is measured
/// from when it was due, not from when it started.
#[tokio::test]
async fn latency_counts_from_the_due_time() {
    use std::sync::Arc;

    use pairdb_loadtest::driver::Driver;
    use pairdb_loadtest::metrics::Recorder;
    use rand::SeedableRng;

    let url = stalling_server().await;
    let plan = plan(10);
    let scenario = plan.scenarios.first().expect("scenario");
    let client = pairdb_client::Client::builder(url, "pdb_test_key")
        .build()
        .expect("client");
    let recorder = Arc::new(Recorder::default());
    let driver = Driver::new(scenario, client, Arc::clone(&recorder));
    let due = std::time::Instant::now() - Duration::from_millis(500);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    driver.iteration(due, &mut rng).await;
    let took = recorder
        .stat(&all("http_req_duration"), Stat::Max)
        .unwrap_or(0.0);
    assert!(
        took >= 500.0,
        "measured {took} ms from the start, not the due time"
    );
}
