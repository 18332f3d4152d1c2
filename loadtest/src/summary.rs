//! The end-of-test summary in k6's layout, and `--summary-export` JSON in k6's (legacy)
//! summary-export shape: `{"metrics": {"http_req_duration": {"avg": …, "p(95)": …,
//! "thresholds": {"p(95)<50": false}}, "http_reqs": {"count": …, "rate": …},
//! "http_req_failed": {"passes": …, "fails": …, "value": …}, …}}` — as in k6, a threshold's
//! boolean is whether it *failed*, and a rate metric's `passes` counts the samples that were
//! true (for `http_req_failed`: the failed requests).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::metrics::Recorder;
use crate::threshold::{MetricKind, Selector, Verdict, kind_of};

/// The metrics every summary lists, in k6's (alphabetical) order, when they have samples.
const METRICS: &[&str] = &[
    "checks",
    "data_received",
    "data_sent",
    "dropped_iterations",
    "http_req_duration",
    "http_req_failed",
    "http_reqs",
    "iteration_duration",
    "iterations",
    "pairdb_conflicts",
    "pairdb_read_repairs",
    "vus",
    "vus_max",
];

/// Every `(selector, values)` the summary shows: the metrics above over all samples, one
/// `pairdb_status_<code>` per status seen, and each threshold's narrowed metric.
pub fn rows(recorder: &Recorder, verdicts: &[Verdict]) -> Vec<(Selector, BTreeMap<String, f64>)> {
    let mut selectors: Vec<Selector> = METRICS
        .iter()
        .map(|m| Selector {
            metric: (*m).to_owned(),
            tags: Vec::new(),
        })
        .chain(recorder.statuses().into_iter().map(|code| Selector {
            metric: format!("pairdb_status_{code}"),
            tags: Vec::new(),
        }))
        .collect();
    // Per scenario, when there are several: the headline metrics of each.
    let scenarios = recorder.scenarios();
    if scenarios.len() > 1 {
        for scenario in &scenarios {
            for metric in [
                "http_req_duration",
                "http_req_failed",
                "http_reqs",
                "iterations",
                "dropped_iterations",
            ] {
                selectors.push(Selector {
                    metric: metric.to_owned(),
                    tags: vec![("scenario".to_owned(), scenario.clone())],
                });
            }
        }
    }
    for v in verdicts {
        if !selectors.contains(&v.threshold.selector) {
            selectors.push(v.threshold.selector.clone());
        }
    }
    selectors.sort();
    selectors
        .into_iter()
        .filter_map(|s| {
            let values = recorder.values(&s.metric, &s.tags)?;
            Some((s, values))
        })
        .collect()
}

fn millis(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2}s", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v:.2}ms")
    } else {
        format!("{:.2}µs", v * 1000.0)
    }
}

fn bytes(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.1} GB", v / 1e9),
        v if v >= 1e6 => format!("{:.1} MB", v / 1e6),
        v if v >= 1e3 => format!("{:.1} kB", v / 1e3),
        v => format!("{v:.0} B"),
    }
}

/// The summary text: scenarios, checks, then one dotted line per metric, then thresholds.
pub fn text(recorder: &Recorder, verdicts: &[Verdict], header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    for (selector, values) in rows(recorder, verdicts) {
        let name = selector.to_string();
        let dots = ".".repeat(40usize.saturating_sub(name.len() + 2).max(3));
        let get = |k: &str| values.get(k).copied().unwrap_or(0.0);
        let line = match selector.metric.as_str() {
            "http_req_duration" | "iteration_duration" => [
                "avg", "min", "med", "max", "p(90)", "p(95)", "p(99)", "p(99.9)",
            ]
            .iter()
            .map(|k| format!("{k}={}", millis(get(k))))
            .collect::<Vec<_>>()
            .join(" "),
            "http_req_failed" | "checks" => format!(
                "{:.2}%  ✓ {:<8} ✗ {}",
                get("rate") * 100.0,
                get("passes"),
                get("fails")
            ),
            "data_received" | "data_sent" => {
                format!("{:<8} {}/s", bytes(get("count")), bytes(get("rate")))
            }
            "vus" | "vus_max" => format!(
                "{:<8} min={:<6} max={}",
                get("value"),
                get("min"),
                get("max")
            ),
            _ => format!("{:<8} {:.1}/s", get("count"), get("rate")),
        };
        let failed = verdicts
            .iter()
            .any(|v| v.threshold.selector == selector && !v.passed);
        let passed = verdicts
            .iter()
            .any(|v| v.threshold.selector == selector && v.passed);
        let mark = if failed {
            "✗"
        } else if passed {
            "✓"
        } else {
            " "
        };
        let _ = writeln!(out, "   {mark} {name}{dots}: {line}");
    }
    if !verdicts.is_empty() {
        let _ = writeln!(out, "\n     thresholds:");
        for v in verdicts {
            let _ = writeln!(out, "       {v}");
        }
    }
    out
}

/// The summary export: every metric's values, and each threshold's verdict under its metric.
pub fn export(recorder: &Recorder, verdicts: &[Verdict]) -> serde_json::Value {
    let mut metrics = serde_json::Map::new();
    for (selector, values) in rows(recorder, verdicts) {
        let rate_metric = kind_of(&selector.metric) == Some(MetricKind::Rate);
        let entry: serde_json::Map<String, serde_json::Value> = values
            .into_iter()
            .map(|(k, v)| {
                // k6 names a rate metric's share `value`.
                let k = if rate_metric && k == "rate" {
                    "value".to_owned()
                } else {
                    k
                };
                (k, serde_json::json!(v))
            })
            .collect();
        let mut entry = entry;
        let thresholds: serde_json::Map<String, serde_json::Value> = verdicts
            .iter()
            .filter(|v| v.threshold.selector == selector)
            .map(|v| (v.threshold.source.clone(), serde_json::json!(!v.passed)))
            .collect();
        if !thresholds.is_empty() {
            entry.insert("thresholds".into(), serde_json::Value::Object(thresholds));
        }
        metrics.insert(selector.to_string(), serde_json::Value::Object(entry));
    }
    serde_json::json!({ "metrics": metrics })
}
