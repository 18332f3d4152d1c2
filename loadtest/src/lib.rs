//! `pairdb-loadtest`: k6-style scenarios and YCSB workloads against pairdb.
//!
//! A scenario file (TOML, k6's shape) names scenarios — each an executor (how iterations are
//! scheduled: open-model arrival rates, or closed-model VUs) and a workload (a YCSB core
//! workload or a weighted mix of requests) — and thresholds on the run's metrics.
//!
//! - [`duration`]: k6 durations (`"1m30s"`).
//! - [`scenario`]: the file, parsed and validated, errors naming the line.
//! - [`threshold`]: k6 threshold expressions and their evaluation.
//! - [`schedule`]: when each iteration is due (arrival-rate executors) and how many VUs run
//!   (VU executors), as pure functions of time.
//! - [`ycsb`]: YCSB's key choosers (scrambled zipfian, latest, uniform) and core workloads A–F.
//! - [`driver`]: one iteration against pairdb through the SDK; [`runner`]: the executors;
//!   [`metrics`]: what was measured; [`summary`]: k6's summary and summary export.
//!
//! [`execute`] runs a whole plan against a pairdb URL and judges its thresholds.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![warn(missing_docs)]

pub mod driver;
pub mod duration;
pub mod metrics;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod summary;
pub mod threshold;
pub mod ycsb;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pairdb_client::{Client, ClientError, RetryPolicy};

use crate::driver::Driver;
use crate::metrics::Recorder;
use crate::runner::Vus;
use crate::scenario::{Plan, Workload};
use crate::threshold::{Selector, Stat, Statistics, Verdict};

/// Where the load goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// pairdb's base URL.
    pub url: String,
    /// A tenant API key.
    pub api_key: String,
}

/// How a run behaves besides its plan.
#[derive(Clone, Debug)]
pub struct Options {
    /// Writes in flight at once while loading records.
    pub load_concurrency: usize,
    /// Each request's deadline.
    pub timeout: Duration,
    /// Draw a live progress line on stderr, refreshed every second (on a terminal).
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            load_concurrency: 32,
            timeout: Duration::from_secs(10),
            progress: false,
        }
    }
}

/// A run that could not take place (thresholds failing is not an error: see [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The SDK client could not be built (a bad URL or key).
    #[error("cannot reach pairdb: {0}")]
    Client(#[from] ClientError),
    /// Too many of the load phase's writes failed for the run to mean anything.
    #[error("scenario `{scenario}`: {failed} of {total} records failed to load")]
    Load {
        /// The scenario.
        scenario: String,
        /// Writes that failed.
        failed: u64,
        /// Writes attempted.
        total: u64,
    },
}

/// What a run measured and how its thresholds fared.
pub struct Report {
    /// Every sample.
    pub recorder: Arc<Recorder>,
    /// Each threshold's verdict.
    pub verdicts: Vec<Verdict>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Report {
    /// True when every threshold held.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed)
    }

    /// k6's exit code: 0 when every threshold held, 99 when one failed.
    pub fn exit_code(&self) -> i32 {
        if self.passed() { 0 } else { 99 }
    }
}

/// Loads each scenario's records, runs every scenario, and judges the thresholds.
pub async fn execute(plan: &Plan, target: &Target, options: &Options) -> Result<Report, RunError> {
    let client = Client::builder(target.url.clone(), target.api_key.clone())
        .retry(RetryPolicy::none())
        .timeout(options.timeout)
        .build()?;
    let recorder = Arc::new(Recorder::default());
    let mut drivers = Vec::new();
    for scenario in &plan.scenarios {
        let driver = Arc::new(Driver::new(scenario, client.clone(), Arc::clone(&recorder)));
        let loads = matches!(scenario.workload, Workload::Ycsb(_)) && scenario.load;
        if loads {
            let total = scenario.record_count;
            let failed = driver.load(total, options.load_concurrency).await;
            if failed * 100 > total {
                return Err(RunError::Load {
                    scenario: scenario.name.clone(),
                    failed,
                    total,
                });
            }
        }
        drivers.push(driver);
    }
    let vus = Arc::new(Vus::default());
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for (scenario, driver) in plan.scenarios.iter().cloned().zip(drivers) {
        let (recorder, vus) = (Arc::clone(&recorder), Arc::clone(&vus));
        tasks.push(tokio::spawn(async move {
            runner::run_scenario(&scenario, driver, recorder, vus, start).await;
        }));
    }
    // The live line: redrawn in place on a terminal (indicatif draws to stderr only when it is
    // one), cleared when the run ends.
    let bar = options.progress.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    });
    let sampler = {
        let (recorder, vus) = (Arc::clone(&recorder), Arc::clone(&vus));
        let bar = bar.clone();
        let total = plan_length(plan);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            // A stalled sampler does not fire its missed ticks back to back (near-empty windows).
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            let mut window_start = Duration::ZERO;
            loop {
                tick.tick().await;
                recorder.vus(
                    vus.running.load(Ordering::Relaxed),
                    vus.allocated.load(Ordering::Relaxed),
                );
                n += 1;
                if n.is_multiple_of(5) {
                    let now = start.elapsed();
                    recorder.roll(window_start, now);
                    window_start = now;
                    if let Some(bar) = &bar {
                        bar.set_message(progress_line(&recorder, &vus, now, total));
                        bar.tick();
                    }
                }
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    sampler.abort();
    // Stopped for sure: it must not roll a window after the last one below.
    let _ = sampler.await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let elapsed = start.elapsed();
    let last = recorder
        .windows()
        .last()
        .map_or(Duration::ZERO, |w| Duration::from_secs_f64(w.end));
    recorder.roll(last, elapsed);
    recorder.finish(elapsed);
    let verdicts = threshold::evaluate(&plan.thresholds, &*recorder);
    Ok(Report {
        recorder,
        verdicts,
        elapsed,
    })
}

/// The longest a plan's scenarios are scheduled for (start times included).
pub fn plan_length(plan: &Plan) -> Duration {
    use crate::scenario::Executor;
    plan.scenarios
        .iter()
        .map(|s| {
            s.start_time
                + match &s.executor {
                    Executor::ArrivalRate { arrivals, .. } => arrivals.total(),
                    Executor::ConstantVus { duration, .. } => *duration,
                    Executor::RampingVus { stages, .. } => stages.iter().map(|s| s.duration).sum(),
                    Executor::SharedIterations { max_duration, .. }
                    | Executor::PerVuIterations { max_duration, .. } => *max_duration,
                }
        })
        .max()
        .unwrap_or_default()
}

fn progress_line(recorder: &Recorder, vus: &Vus, elapsed: Duration, total: Duration) -> String {
    let all = |metric: &str| Selector {
        metric: metric.to_owned(),
        tags: Vec::new(),
    };
    let (reqs, failed) = recorder.request_counts();
    let p95 = recorder
        .stat(&all("http_req_duration"), Stat::P(95.0))
        .unwrap_or(0.0);
    format!(
        "running [{:>5.1}s / {:.0}s]  VUs {}/{}  {:.0} req/s (average)  p(95) {:.2}ms  errors {}",
        elapsed.as_secs_f64(),
        total.as_secs_f64(),
        vus.running.load(Ordering::Relaxed),
        vus.allocated.load(Ordering::Relaxed),
        reqs as f64 / elapsed.as_secs_f64().max(1e-9),
        p95,
        failed
    )
}
