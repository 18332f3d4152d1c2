//! Scenario files: k6's options in TOML.
//!
//! ```toml
//! [scenarios.mixed]
//! executor = "constant-arrival-rate"
//! rate = 500
//! time_unit = "1s"
//! duration = "30s"
//! pre_allocated_vus = 50
//! max_vus = 500
//! workload = "ycsb-a"
//! record_count = 10000
//!
//! [thresholds]
//! http_req_duration = ["p(95)<50", "p(99)<200"]
//! "http_req_duration{scenario:mixed}" = ["avg<20"]
//! ```
//!
//! [`parse`] reads and validates a whole file; every error names the line it is about.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::duration;
use crate::schedule::{Arrivals, Stage};
use crate::threshold::{self, Threshold};
use crate::ycsb;

/// A scenario file that cannot be run, with the line it is about when there is one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ScenarioError {
    /// 1-based line.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// A parsed, valid scenario file.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The scenarios, by name.
    pub scenarios: Vec<Scenario>,
    /// Every threshold.
    pub thresholds: Vec<Threshold>,
}

/// One scenario: how its iterations are scheduled and what each does.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name (the `scenario` tag of its samples).
    pub name: String,
    /// How iterations are scheduled.
    pub executor: Executor,
    /// When it starts, after the run's start.
    pub start_time: Duration,
    /// What each iteration does.
    pub workload: Workload,
    /// Records the workload works over (YCSB: loaded before the run unless `load = false`,
    /// named `user<hash of n>` as YCSB names them; a request mix: the range of `{n}`).
    pub record_count: u64,
    /// Whether to load them.
    pub load: bool,
    /// Value bytes of writes.
    pub field_length: usize,
    /// The consistency level its requests ask for, if any (else the tenant's default).
    pub consistency: Option<String>,
    /// Tags added to its samples.
    pub tags: BTreeMap<String, String>,
}

/// How a scenario schedules iterations (k6's executors).
#[derive(Clone, Debug, PartialEq)]
pub enum Executor {
    /// Open model: iterations due on a schedule, run by a pool of VUs that grows from
    /// `pre_allocated_vus` up to `max_vus`; an iteration due when no VU is free is dropped.
    ArrivalRate {
        /// When iterations are due.
        arrivals: Arrivals,
        /// VUs ready at the start.
        pre_allocated_vus: u32,
        /// Most VUs.
        max_vus: u32,
    },
    /// Closed model: `vus` VUs each looping for `duration`.
    ConstantVus {
        /// VUs.
        vus: u32,
        /// How long.
        duration: Duration,
    },
    /// Closed model: VUs ramped through stages.
    RampingVus {
        /// VUs at the start.
        start_vus: u32,
        /// Stages (targets are VU counts).
        stages: Vec<Stage>,
    },
    /// `iterations` in all, shared by `vus` VUs, for at most `max_duration`.
    SharedIterations {
        /// VUs.
        vus: u32,
        /// Iterations in all.
        iterations: u64,
        /// Longest run.
        max_duration: Duration,
    },
    /// `iterations` per VU, for at most `max_duration`.
    PerVuIterations {
        /// VUs.
        vus: u32,
        /// Iterations each.
        iterations: u64,
        /// Longest run.
        max_duration: Duration,
    },
}

/// What an iteration does.
#[derive(Clone, Debug)]
pub enum Workload {
    /// A YCSB core workload.
    Ycsb(char),
    /// A weighted mix of requests.
    Requests(Vec<Request>),
}

/// One request of a custom mix.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Relative weight.
    pub weight: u32,
    /// `GET`, `PUT` or `DELETE`.
    pub method: String,
    /// Key pattern: `{n}` is replaced by a record number drawn by `distribution`.
    pub key: String,
    /// How record numbers are drawn: `uniform`, `zipfian` or `latest`.
    pub distribution: String,
    /// Value bytes (PUT).
    pub value_size: usize,
    /// Consistency level, overriding the scenario's.
    pub consistency: Option<String>,
    /// Checks on the answer (`status == 200`, `status in [200, 404]`).
    pub checks: Vec<Check>,
}

/// A check on an answer's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// As written.
    pub name: String,
    /// The statuses that pass.
    pub statuses: Vec<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    scenarios: BTreeMap<String, Spanned<RawScenario>>,
    #[serde(default)]
    thresholds: BTreeMap<Spanned<String>, Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    executor: String,
    rate: Option<f64>,
    time_unit: Option<String>,
    duration: Option<String>,
    pre_allocated_vus: Option<u32>,
    max_vus: Option<u32>,
    vus: Option<u32>,
    iterations: Option<u64>,
    max_duration: Option<String>,
    start_vus: Option<u32>,
    start_rate: Option<f64>,
    stages: Option<Vec<RawStage>>,
    start_time: Option<String>,
    workload: Option<String>,
    requests: Option<Vec<RawRequest>>,
    record_count: Option<u64>,
    load: Option<bool>,
    field_length: Option<usize>,
    consistency: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    duration: String,
    target: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    #[serde(default = "one")]
    weight: u32,
    method: String,
    key: String,
    distribution: Option<String>,
    value_size: Option<usize>,
    consistency: Option<String>,
    #[serde(default)]
    checks: Vec<String>,
}

fn one() -> u32 {
    1
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |head| head.bytes().filter(|b| *b == b'\n').count())
        + 1
}

/// Reads a scenario file's text.
pub fn parse(text: &str) -> Result<Plan, ScenarioError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| ScenarioError {
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().to_owned(),
    })?;
    if raw.scenarios.is_empty() {
        return Err(ScenarioError {
            line: None,
            message: "no scenarios: add a [scenarios.NAME] table".into(),
        });
    }
    let mut scenarios = Vec::new();
    for (name, spanned) in raw.scenarios {
        let line = line_of(text, spanned.span().start);
        let scenario = build(&name, spanned.into_inner()).map_err(|message| ScenarioError {
            line: Some(line),
            message: format!("scenario `{name}`: {message}"),
        })?;
        scenarios.push(scenario);
    }
    let mut thresholds = Vec::new();
    for (key, expressions) in raw.thresholds {
        let line = line_of(text, key.span().start);
        let at = |e: threshold::BadThreshold| ScenarioError {
            line: Some(line),
            message: e.to_string(),
        };
        let selector = threshold::parse_selector(key.get_ref()).map_err(at)?;
        if let Some((_, name)) = selector.tags.iter().find(|(tag, _)| tag == "scenario")
            && !scenarios.iter().any(|s| &s.name == name)
        {
            return Err(ScenarioError {
                line: Some(line),
                message: format!("threshold on scenario `{name}`, which the file does not define"),
            });
        }
        for expression in expressions.into_inner() {
            thresholds.push(threshold::parse_expression(&selector, &expression).map_err(at)?);
        }
    }
    Ok(Plan {
        scenarios,
        thresholds,
    })
}

fn dur(field: &str, text: Option<&String>) -> Result<Option<Duration>, String> {
    let parsed = text
        .map(|t| duration::parse(t).map_err(|e| format!("{field}: {e}")))
        .transpose()?;
    if parsed.is_some_and(|d| d.is_zero()) && field != "start_time" {
        return Err(format!("{field} must be more than 0"));
    }
    Ok(parsed)
}

fn need<T>(field: &str, executor: &str, value: Option<T>) -> Result<T, String> {
    value.ok_or_else(|| format!("{executor} needs `{field}`"))
}

fn stages(raw: Option<Vec<RawStage>>, executor: &str) -> Result<Vec<Stage>, String> {
    let raw = need("stages", executor, raw)?;
    if raw.is_empty() {
        return Err(format!("{executor} needs at least one stage"));
    }
    let stages: Vec<Stage> = raw
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            if !(s.target.is_finite() && s.target >= 0.0) {
                return Err(format!("stage {}: target must be 0 or more", i + 1));
            }
            Ok(Stage {
                duration: duration::parse(&s.duration)
                    .map_err(|e| format!("stage {}: {e}", i + 1))?,
                target: s.target,
            })
        })
        .collect::<Result<_, _>>()?;
    if stages.iter().all(|s| s.duration.is_zero()) {
        return Err(format!("{executor}'s stages last no time at all"));
    }
    Ok(stages)
}

/// The most iterations per second a scenario may ask for.
pub const MAX_RATE: f64 = 1_000_000.0;
/// The most VUs.
pub const MAX_VUS: u32 = 100_000;
/// The most records (YCSB's `latest` chooser walks them once to start).
pub const MAX_RECORDS: u64 = 10_000_000;
/// The largest value.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Tags the load tester sets itself.
const RESERVED_TAGS: &[&str] = &["scenario", "method", "status", "check"];

/// Refuses fields that mean nothing to `kind`, so a misplaced one is not silently ignored.
fn check_fields(kind: &str, raw: &RawScenario) -> Result<(), String> {
    let given = [
        ("rate", raw.rate.is_some()),
        ("time_unit", raw.time_unit.is_some()),
        ("duration", raw.duration.is_some()),
        ("pre_allocated_vus", raw.pre_allocated_vus.is_some()),
        ("max_vus", raw.max_vus.is_some()),
        ("vus", raw.vus.is_some()),
        ("iterations", raw.iterations.is_some()),
        ("max_duration", raw.max_duration.is_some()),
        ("start_vus", raw.start_vus.is_some()),
        ("start_rate", raw.start_rate.is_some()),
        ("stages", raw.stages.is_some()),
    ];
    let allowed: &[&str] = match kind {
        "constant-arrival-rate" => &[
            "rate",
            "time_unit",
            "duration",
            "pre_allocated_vus",
            "max_vus",
        ],
        "ramping-arrival-rate" => &[
            "start_rate",
            "time_unit",
            "stages",
            "pre_allocated_vus",
            "max_vus",
        ],
        "constant-vus" => &["vus", "duration"],
        "ramping-vus" => &["start_vus", "stages"],
        "shared-iterations" | "per-vu-iterations" => &["vus", "iterations", "max_duration"],
        _ => return Ok(()),
    };
    match given
        .iter()
        .find(|(field, set)| *set && !allowed.contains(field))
    {
        Some((field, _)) => Err(format!("`{field}` does not apply to {kind}")),
        None => Ok(()),
    }
}

fn build(name: &str, raw: RawScenario) -> Result<Scenario, String> {
    let kind = raw.executor.as_str();
    check_fields(kind, &raw)?;
    if let Some(tag) = raw
        .tags
        .iter()
        .flat_map(|t| t.keys())
        .find(|t| RESERVED_TAGS.contains(&t.as_str()))
    {
        return Err(format!("tag `{tag}` is set by the load tester itself"));
    }
    for (what, v) in [
        ("vus", raw.vus),
        ("max_vus", raw.max_vus),
        ("pre_allocated_vus", raw.pre_allocated_vus),
        ("start_vus", raw.start_vus),
    ] {
        if let Some(v) = v
            && v > MAX_VUS
        {
            return Err(format!("{what} {v} is more than {MAX_VUS}"));
        }
    }
    if let Some(records) = raw.record_count
        && !(1..=MAX_RECORDS).contains(&records)
    {
        return Err(format!("record_count must be 1–{MAX_RECORDS}"));
    }
    if raw.field_length.is_some_and(|f| f > MAX_VALUE_BYTES) {
        return Err(format!("field_length is more than {MAX_VALUE_BYTES} bytes"));
    }
    if raw.iterations == Some(0) {
        return Err("iterations must be at least 1".into());
    }
    if raw.requests.is_some() && raw.load.is_some() {
        return Err("`load` applies to YCSB workloads only (a request mix loads nothing)".into());
    }
    let time_unit = dur("time_unit", raw.time_unit.as_ref())?.unwrap_or(Duration::from_secs(1));
    if time_unit.is_zero() {
        return Err("time_unit must be more than 0".into());
    }
    let per_second = |rate: f64| rate / time_unit.as_secs_f64();
    let vus_pool = |raw: &RawScenario| -> Result<(u32, u32), String> {
        let pre = need("pre_allocated_vus", kind, raw.pre_allocated_vus)?;
        let max = raw.max_vus.unwrap_or(pre);
        if pre == 0 || max < pre {
            return Err("pre_allocated_vus must be at least 1, and max_vus at least that".into());
        }
        Ok((pre, max))
    };
    let positive_vus = |vus: u32| {
        if vus == 0 {
            Err(format!("{kind} needs at least 1 VU"))
        } else {
            Ok(vus)
        }
    };
    let executor = match kind {
        "constant-arrival-rate" => {
            let rate = need("rate", kind, raw.rate)?;
            if !(rate.is_finite() && rate > 0.0 && per_second(rate) <= MAX_RATE) {
                return Err(format!(
                    "rate must be more than 0 and at most {MAX_RATE} a second"
                ));
            }
            let (pre_allocated_vus, max_vus) = vus_pool(&raw)?;
            Executor::ArrivalRate {
                arrivals: Arrivals::Constant {
                    rate: per_second(rate),
                    duration: need("duration", kind, dur("duration", raw.duration.as_ref())?)?,
                },
                pre_allocated_vus,
                max_vus,
            }
        }
        "ramping-arrival-rate" => {
            let (pre_allocated_vus, max_vus) = vus_pool(&raw)?;
            let start = raw.start_rate.unwrap_or(0.0);
            if !(start.is_finite() && start >= 0.0) {
                return Err("start_rate must be 0 or more".into());
            }
            let stages: Vec<Stage> = stages(raw.stages, kind)?
                .into_iter()
                .map(|s| Stage {
                    target: per_second(s.target),
                    ..s
                })
                .collect();
            if per_second(start) > MAX_RATE || stages.iter().any(|s| s.target > MAX_RATE) {
                return Err(format!("rates must be at most {MAX_RATE} a second"));
            }
            Executor::ArrivalRate {
                arrivals: Arrivals::Ramping {
                    start_rate: per_second(start),
                    stages,
                },
                pre_allocated_vus,
                max_vus,
            }
        }
        "constant-vus" => Executor::ConstantVus {
            vus: positive_vus(raw.vus.unwrap_or(1))?,
            duration: need("duration", kind, dur("duration", raw.duration.as_ref())?)?,
        },
        "ramping-vus" => {
            let stages = stages(raw.stages, kind)?;
            if stages.iter().any(|s| s.target > f64::from(MAX_VUS)) {
                return Err(format!("stage targets must be at most {MAX_VUS} VUs"));
            }
            Executor::RampingVus {
                start_vus: raw.start_vus.unwrap_or(1),
                stages,
            }
        }
        "shared-iterations" | "per-vu-iterations" => {
            let vus = positive_vus(raw.vus.unwrap_or(1))?;
            let iterations = raw.iterations.unwrap_or(1);
            let max_duration =
                dur("max_duration", raw.max_duration.as_ref())?.unwrap_or(Duration::from_secs(600));
            if kind == "shared-iterations" {
                Executor::SharedIterations {
                    vus,
                    iterations,
                    max_duration,
                }
            } else {
                Executor::PerVuIterations {
                    vus,
                    iterations,
                    max_duration,
                }
            }
        }
        other => {
            return Err(format!(
                "unknown executor `{other}` (constant-arrival-rate, ramping-arrival-rate, \
                 constant-vus, ramping-vus, shared-iterations, per-vu-iterations)"
            ));
        }
    };
    let workload = match (raw.workload.as_deref(), raw.requests) {
        (Some(_), Some(_)) => return Err("give `workload` or `requests`, not both".into()),
        (None, None) => return Err("needs a `workload` (ycsb-a … ycsb-f) or `requests`".into()),
        (Some(w), None) => {
            let lower = w.to_ascii_lowercase();
            let letter = lower
                .strip_prefix("ycsb-")
                .and_then(|l| {
                    let mut chars = l.chars();
                    let c = chars.next()?;
                    chars.next().is_none().then_some(c.to_ascii_lowercase())
                })
                .filter(|c| ycsb::Workload::core(*c, 1).is_some())
                .ok_or_else(|| format!("unknown workload `{w}` (ycsb-a … ycsb-f)"))?;
            Workload::Ycsb(letter)
        }
        (None, Some(requests)) => Workload::Requests(
            requests
                .into_iter()
                .enumerate()
                .map(|(i, r)| request(r).map_err(|e| format!("request {}: {e}", i + 1)))
                .collect::<Result<_, _>>()?,
        ),
    };
    if let Workload::Requests(requests) = &workload
        && requests.iter().all(|r| r.weight == 0)
    {
        return Err("every request has weight 0".into());
    }
    if let Some(level) = &raw.consistency {
        check_level(level)?;
    }
    Ok(Scenario {
        name: name.to_owned(),
        executor,
        start_time: dur("start_time", raw.start_time.as_ref())?.unwrap_or_default(),
        workload,
        record_count: raw.record_count.unwrap_or(1000),
        load: raw.load.unwrap_or(true),
        field_length: raw.field_length.unwrap_or(100),
        consistency: raw.consistency,
        tags: raw.tags.unwrap_or_default(),
    })
}

fn check_level(level: &str) -> Result<(), String> {
    match level {
        "one" | "quorum" | "all" => Ok(()),
        other => Err(format!("unknown consistency `{other}` (one, quorum, all)")),
    }
}

fn request(raw: RawRequest) -> Result<Request, String> {
    let method = raw.method.to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "PUT" | "DELETE") {
        return Err(format!("method `{}` (GET, PUT or DELETE)", raw.method));
    }
    if raw.key.is_empty() {
        return Err("an empty key".into());
    }
    if raw.value_size.is_some_and(|v| v > MAX_VALUE_BYTES) {
        return Err(format!("value_size is more than {MAX_VALUE_BYTES} bytes"));
    }
    let distribution = raw.distribution.unwrap_or_else(|| "uniform".into());
    if !matches!(distribution.as_str(), "uniform" | "zipfian" | "latest") {
        return Err(format!(
            "distribution `{distribution}` (uniform, zipfian, latest)"
        ));
    }
    if let Some(level) = &raw.consistency {
        check_level(level)?;
    }
    let checks = raw
        .checks
        .iter()
        .map(|c| check(c))
        .collect::<Result<_, _>>()?;
    Ok(Request {
        weight: raw.weight,
        method,
        key: raw.key,
        distribution,
        value_size: raw.value_size.unwrap_or(100),
        consistency: raw.consistency,
        checks,
    })
}

/// Parses `status == 200` or `status in [200, 404]`.
fn check(text: &str) -> Result<Check, String> {
    let bad = || format!("check `{text}` (write `status == 200` or `status in [200, 404]`)");
    let rest = text.trim().strip_prefix("status").ok_or_else(bad)?.trim();
    let statuses: Vec<u16> = if let Some(code) = rest.strip_prefix("==") {
        vec![code.trim().parse().map_err(|_| bad())?]
    } else if let Some(list) = rest.strip_prefix("in") {
        let inner = list
            .trim()
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .ok_or_else(bad)?;
        inner
            .split(',')
            .map(|c| c.trim().parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?
    } else {
        return Err(bad());
    };
    if statuses.is_empty() || statuses.iter().any(|s| !(100..=599).contains(s)) {
        return Err(bad());
    }
    Ok(Check {
        name: text.trim().to_owned(),
        statuses,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // a test that indexes past the end fails, as it should
mod tests {
    use super::*;

    fn plan(text: &str) -> Plan {
        parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> ScenarioError {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_executor_parses() {
        let p = plan(
            r#"
[scenarios.open]
executor = "constant-arrival-rate"
rate = 500
time_unit = "2s"
duration = "30s"
pre_allocated_vus = 50
max_vus = 500
workload = "ycsb-a"
record_count = 10000
field_length = 100
consistency = "quorum"
tags = { team = "storage" }

[scenarios.ramp]
executor = "ramping-arrival-rate"
start_rate = 10
stages = [{ duration = "10s", target = 50 }, { duration = "5s", target = 0 }]
pre_allocated_vus = 5
workload = "YCSB-C"
start_time = "30s"

[scenarios.closed]
executor = "constant-vus"
vus = 4
duration = "1m"
workload = "ycsb-f"
load = false

[scenarios.rampvus]
executor = "ramping-vus"
stages = [{ duration = "10s", target = 20 }]
workload = "ycsb-b"

[scenarios.shared]
executor = "shared-iterations"
vus = 2
iterations = 100
workload = "ycsb-d"

[scenarios.pervu]
executor = "per-vu-iterations"
vus = 2
iterations = 10
max_duration = "10s"
workload = "ycsb-e"
"#,
        );
        assert_eq!(p.scenarios.len(), 6);
        let open = p
            .scenarios
            .iter()
            .find(|s| s.name == "open")
            .unwrap_or_else(|| panic!("open"));
        assert_eq!(
            open.executor,
            Executor::ArrivalRate {
                arrivals: Arrivals::Constant {
                    rate: 250.0,
                    duration: Duration::from_secs(30)
                },
                pre_allocated_vus: 50,
                max_vus: 500
            }
        );
        assert_eq!(open.tags.get("team").map(String::as_str), Some("storage"));
        let ramp = p
            .scenarios
            .iter()
            .find(|s| s.name == "ramp")
            .unwrap_or_else(|| panic!("ramp"));
        assert_eq!(ramp.start_time, Duration::from_secs(30));
        assert!(matches!(ramp.workload, Workload::Ycsb('c')));
    }

    #[test]
    fn thresholds_with_tags_parse() {
        let p = plan(
            r#"
[scenarios.mixed]
executor = "constant-vus"
duration = "1s"
[[scenarios.mixed.requests]]
weight = 3
method = "get"
key = "user-{n}"
distribution = "zipfian"
checks = ["status in [200, 404]"]
[[scenarios.mixed.requests]]
method = "PUT"
key = "user-{n}"
value_size = 1000
checks = ["status == 200"]

[thresholds]
http_req_duration = ["p(95)<50", "p(99)<200"]
"http_req_duration{scenario:mixed}" = ["avg<20"]
http_req_failed = ["rate<0.01"]
checks = ["rate>0.99"]
"#,
        );
        assert_eq!(p.thresholds.len(), 5);
        let Workload::Requests(requests) = &p.scenarios[0].workload else {
            panic!("requests");
        };
        assert_eq!(requests[0].method, "GET");
        assert_eq!(requests[0].checks[0].statuses, vec![200, 404]);
        assert_eq!(requests[1].weight, 1);
    }

    #[test]
    fn bad_files_name_the_line() {
        let cases = [
            // (file, line, words the message must hold)
            (
                "[scenarios.a]\nexecutor = \"warp\"\nworkload = \"ycsb-a\"\n",
                1,
                "unknown executor",
            ),
            (
                "\n[scenarios.a]\nexecutor = \"constant-vus\"\nduration = \"1x\"\nworkload = \"ycsb-a\"\n",
                2,
                "duration",
            ),
            (
                "[scenarios.a]\nexecutor = \"constant-vus\"\nduration = \"1s\"\nworkload = \"ycsb-z\"\n",
                1,
                "unknown workload",
            ),
            (
                "[scenarios.a]\nexecutor = \"constant-vus\"\nduration = \"1s\"\nworkload = \"ycsb-a\"\nspeed = 3\n",
                5,
                "speed",
            ),
            (
                "[scenarios.a]\nexecutor = \"constant-arrival-rate\"\nduration = \"1s\"\nworkload = \"ycsb-a\"\npre_allocated_vus = 1\n",
                1,
                "rate",
            ),
            (
                "[scenarios.a]\nexecutor = \"constant-vus\"\nduration = \"1s\"\nworkload = \"ycsb-a\"\n[thresholds]\nhttp_req_duration = [\"p(95)<<5\"]\n",
                6,
                "p(95)<<5",
            ),
            (
                "[scenarios.a]\nexecutor = \"constant-vus\"\nduration = \"1s\"\nworkload = \"ycsb-a\"\n[thresholds]\n\"http_req_duration{scenario:b}\" = [\"avg<5\"]\n",
                6,
                "scenario `b`",
            ),
            (
                "[scenarios.a]\nexecutor = \"constant-vus\"\nduration = \"1s\"\nworkload = \"ycsb-a\"\nconsistency = \"most\"\n",
                1,
                "consistency",
            ),
            ("[scenarios.a\nexecutor = 1\n", 1, ""),
            (
                "[scenarios.a]\nexecutor = \"constant-vus\"\nduration = \"1s\"\nrate = 5\nworkload = \"ycsb-a\"\n",
                1,
                "`rate` does not apply",
            ),
            (
                "[scenarios.a]\nexecutor = \"constant-vus\"\nduration = \"0s\"\nworkload = \"ycsb-a\"\n",
                1,
                "more than 0",
            ),
            (
                "[scenarios.a]\nexecutor = \"constant-vus\"\nduration = \"1s\"\nworkload = \"ycsb-a\"\ntags = { status = \"x\" }\n",
                1,
                "tag `status`",
            ),
            (
                "[scenarios.a]\nexecutor = \"constant-vus\"\nduration = \"1s\"\nvus = 1000000\nworkload = \"ycsb-a\"\n",
                1,
                "more than",
            ),
            (
                "[scenarios.a]\nexecutor = \"constant-vus\"\nduration = \"1s\"\nworkload = \"ycsb-a\"\nrecord_count = 0\n",
                1,
                "record_count",
            ),
            ("", 0, "no scenarios"),
        ];
        for (text, line, words) in cases {
            let e = error(text);
            if line > 0 {
                assert_eq!(e.line, Some(line), "{e} for\n{text}");
            }
            assert!(e.to_string().contains(words), "{e} lacks `{words}`");
        }
    }

    #[test]
    fn checks_parse() {
        assert_eq!(
            check("status == 200"),
            Ok(Check {
                name: "status == 200".into(),
                statuses: vec![200]
            })
        );
        for bad in [
            "status = 200",
            "code == 200",
            "status in 200",
            "status == 999",
            "status in []",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
