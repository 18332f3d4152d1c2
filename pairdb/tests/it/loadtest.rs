//! The load tester end to end against a real cluster: a short scenario with a threshold that
//! holds judges 0, one with a threshold that fails judges 99 (the binary's exit codes), and the
//! summary export holds the expected counts.

use pairdb_loadtest::{Options, Target, execute, scenario, summary};

use crate::harness::start;

const PLAN: &str = r#"
[scenarios.reads]
executor = "constant-arrival-rate"
rate = 20
duration = "2s"
pre_allocated_vus = 5
max_vus = 50
workload = "ycsb-c"
record_count = 50

[scenarios.updates]
executor = "shared-iterations"
vus = 2
iterations = 30
workload = "ycsb-a"
record_count = 50
load = false
consistency = "all"

[thresholds]
http_req_failed = ["rate<0.01"]
"http_reqs{scenario:reads}" = ["count==40"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_judges_its_thresholds_and_exports_its_counts() {
    let t = start(3).await;
    let api_key = t.create_tenant("acme", 3).await;
    let target = Target {
        url: t.base.clone(),
        api_key,
    };
    let plan = scenario::parse(PLAN).expect("plan");
    let report = execute(&plan, &target, &Options::default())
        .await
        .expect("run");
    assert_eq!(report.exit_code(), 0, "{:#?}", report.verdicts);
    let export = summary::export(&report.recorder, &report.verdicts);
    let metrics = &export["metrics"];
    // 20/s for 2 s: exactly 40 reads were due, none dropped; YCSB C only reads, and every
    // record was loaded.
    assert_eq!(metrics["http_reqs{scenario:reads}"]["count"], 40.0);
    assert_eq!(metrics["dropped_iterations"]["count"], 0.0);
    assert_eq!(metrics["iterations"]["count"], 70.0, "40 reads + 30 shared");
    assert_eq!(metrics["http_req_failed"]["value"], 0.0);
    assert_eq!(metrics["pairdb_status_200"]["count"], 70.0);
    // k6's shape: a threshold's boolean says whether it failed.
    assert_eq!(
        metrics["http_reqs{scenario:reads}"]["thresholds"]["count==40"],
        false
    );

    let failing = scenario::parse(&PLAN.replace("count==40", "count==41")).expect("plan");
    let report = execute(&failing, &target, &Options::default())
        .await
        .expect("run");
    assert_eq!(report.exit_code(), 99);
    let export = summary::export(&report.recorder, &report.verdicts);
    assert_eq!(
        export["metrics"]["http_reqs{scenario:reads}"]["thresholds"]["count==41"],
        true
    );
    t.cluster.stop().await.expect("every node stops cleanly");
}
