//! k6 thresholds: `[thresholds]` maps a metric — optionally narrowed to samples with given tags,
//! `http_req_duration{scenario:mixed}` — to expressions such as `p(95)<50`, `avg<20`,
//! `rate<0.01` or `count>100`, each of which must hold at the end of the run.

use std::fmt;

/// How a metric aggregates its samples, which decides the statistics it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Durations and sizes: `avg`, `min`, `med`, `max`, `p(N)`.
    Trend,
    /// Booleans: `rate` (the share that were true).
    Rate,
    /// Sums: `count` and `rate` (per second).
    Counter,
    /// Levels: `value`, `min`, `max`.
    Gauge,
}

/// The kind of metric `name` is; `None` for a name the load tester does not record.
pub fn kind_of(name: &str) -> Option<MetricKind> {
    Some(match name {
        "http_req_duration" | "iteration_duration" => MetricKind::Trend,
        "http_req_failed" | "checks" => MetricKind::Rate,
        "http_reqs"
        | "iterations"
        | "dropped_iterations"
        | "data_sent"
        | "data_received"
        | "pairdb_conflicts"
        | "pairdb_read_repairs" => MetricKind::Counter,
        "vus" | "vus_max" => MetricKind::Gauge,
        status
            if status
                .strip_prefix("pairdb_status_")
                .is_some_and(is_status_code) =>
        {
            MetricKind::Counter
        }
        _ => return None,
    })
}

/// `0` (no answer) or a three-digit HTTP status.
fn is_status_code(code: &str) -> bool {
    code == "0" || (code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
}

/// A statistic of a metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stat {
    /// Mean (trend).
    Avg,
    /// Smallest (trend, gauge).
    Min,
    /// Median (trend).
    Med,
    /// Largest (trend, gauge).
    Max,
    /// Percentile, 0–100 (trend).
    P(f64),
    /// Share of true samples (rate), or per second (counter).
    Rate,
    /// Total (counter).
    Count,
    /// Last value (gauge).
    Value,
}

impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stat::Avg => f.write_str("avg"),
            Stat::Min => f.write_str("min"),
            Stat::Med => f.write_str("med"),
            Stat::Max => f.write_str("max"),
            Stat::P(p) => write!(f, "p({p})"),
            Stat::Rate => f.write_str("rate"),
            Stat::Count => f.write_str("count"),
            Stat::Value => f.write_str("value"),
        }
    }
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Eq => left == right,
            Op::Ne => left != right,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// The samples a threshold looks at: a metric, narrowed to those carrying every tag given.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    /// Metric name.
    pub metric: String,
    /// `(tag, value)` pairs, sorted by tag.
    pub tags: Vec<(String, String)>,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.metric)?;
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            write!(f, "{{{}}}", tags.join(","))?;
        }
        Ok(())
    }
}

/// One expression on one selector: `stat op value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// What it looks at.
    pub selector: Selector,
    /// The statistic compared.
    pub stat: Stat,
    /// The comparison.
    pub op: Op,
    /// The bound (milliseconds for durations, bytes for data, a fraction for rates).
    pub value: f64,
    /// The expression as written.
    pub source: String,
}

/// A threshold key or expression that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("threshold `{text}`: {reason}")]
pub struct BadThreshold {
    /// What was written.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(text: &str, reason: impl Into<String>) -> BadThreshold {
    BadThreshold {
        text: text.to_owned(),
        reason: reason.into(),
    }
}

/// Parses a `[thresholds]` key: `metric` or `metric{tag:value,tag:value}`.
pub fn parse_selector(key: &str) -> Result<Selector, BadThreshold> {
    let key = key.trim();
    let (metric, tags) = match key.split_once('{') {
        None => (key, ""),
        Some((metric, rest)) => {
            let tags = rest
                .strip_suffix('}')
                .ok_or_else(|| bad(key, "a tag filter ends with `}`"))?;
            (metric.trim(), tags)
        }
    };
    if kind_of(metric).is_none() {
        return Err(bad(key, format!("unknown metric `{metric}`")));
    }
    let mut pairs = Vec::new();
    for tag in tags.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (name, value) = tag
            .split_once(':')
            .ok_or_else(|| bad(key, format!("tag filter `{tag}` is not name:value")))?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || value.is_empty() {
            return Err(bad(key, format!("tag filter `{tag}` is not name:value")));
        }
        pairs.push((name.to_owned(), value.to_owned()));
    }
    pairs.sort();
    Ok(Selector {
        metric: metric.to_owned(),
        tags: pairs,
    })
}

/// Parses one expression for `selector`, checking its statistic suits the metric.
pub fn parse_expression(selector: &Selector, text: &str) -> Result<Threshold, BadThreshold> {
    let trimmed = text.trim();
    let position = trimmed
        .find(['<', '>', '=', '!'])
        .ok_or_else(|| bad(text, "expected `stat op value`, e.g. p(95)<200"))?;
    let (stat_text, rest) = trimmed.split_at(position);
    let (op, value_text) = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ]
    .into_iter()
    .find_map(|(symbol, op)| rest.strip_prefix(symbol).map(|v| (op, v)))
    .ok_or_else(|| bad(text, "unknown comparison (use <, <=, >, >=, ==, !=)"))?;
    let value: f64 = value_text
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| bad(text, format!("`{}` is not a number", value_text.trim())))?;
    let stat = parse_stat(stat_text.trim())
        .ok_or_else(|| bad(text, format!("unknown statistic `{}`", stat_text.trim())))?;
    let kind = kind_of(&selector.metric)
        .ok_or_else(|| bad(text, format!("unknown metric `{}`", selector.metric)))?;
    let fits = match kind {
        MetricKind::Trend => matches!(
            stat,
            Stat::Avg | Stat::Min | Stat::Med | Stat::Max | Stat::P(_)
        ),
        MetricKind::Rate => stat == Stat::Rate,
        MetricKind::Counter => matches!(stat, Stat::Count | Stat::Rate),
        MetricKind::Gauge => matches!(stat, Stat::Value | Stat::Min | Stat::Max),
    };
    if !fits {
        return Err(bad(
            text,
            format!("`{}` has no `{stat}` ({kind:?} metric)", selector.metric),
        ));
    }
    Ok(Threshold {
        selector: selector.clone(),
        stat,
        op,
        value,
        source: trimmed.to_owned(),
    })
}

fn parse_stat(text: &str) -> Option<Stat> {
    Some(match text {
        "avg" => Stat::Avg,
        "min" => Stat::Min,
        "med" => Stat::Med,
        "max" => Stat::Max,
        "rate" => Stat::Rate,
        "count" => Stat::Count,
        "value" => Stat::Value,
        other => {
            let p: f64 = other
                .strip_prefix("p(")?
                .strip_suffix(')')?
                .trim()
                .parse()
                .ok()?;
            if !(0.0..=100.0).contains(&p) {
                return None;
            }
            Stat::P(p)
        }
    })
}

/// Where thresholds read statistics: `None` when the selected samples have none (no sample
/// carried the tags), which fails the threshold — a threshold on nothing holds nothing.
pub trait Statistics {
    /// The statistic over the samples `selector` picks.
    fn stat(&self, selector: &Selector, stat: Stat) -> Option<f64>;
}

/// A threshold's verdict at the end of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The threshold.
    pub threshold: Threshold,
    /// The statistic's value, if there were samples.
    pub actual: Option<f64>,
    /// Whether it held.
    pub passed: bool,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.passed { "✓" } else { "✗" };
        let t = &self.threshold;
        match self.actual {
            Some(actual) => write!(
                f,
                "{mark} {} '{}' {}={actual:.3} {} {}",
                t.selector,
                t.source,
                t.stat,
                t.op.as_str(),
                t.value
            ),
            None => write!(f, "{mark} {} '{}' no samples", t.selector, t.source),
        }
    }
}

/// Evaluates every threshold against `stats`.
pub fn evaluate(thresholds: &[Threshold], stats: &dyn Statistics) -> Vec<Verdict> {
    thresholds
        .iter()
        .map(|t| {
            let actual = stats.stat(&t.selector, t.stat);
            Verdict {
                threshold: t.clone(),
                actual,
                passed: actual.is_some_and(|a| t.op.holds(a, t.value)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(key: &str) -> Selector {
        parse_selector(key).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn selectors_with_tags_are_sorted_and_printed_back() {
        let s = sel("http_req_duration{scenario:mixed, method:GET}");
        assert_eq!(s.metric, "http_req_duration");
        assert_eq!(
            s.tags,
            vec![
                ("method".to_owned(), "GET".to_owned()),
                ("scenario".to_owned(), "mixed".to_owned())
            ]
        );
        assert_eq!(
            s.to_string(),
            "http_req_duration{method:GET,scenario:mixed}"
        );
        assert!(parse_selector("pairdb_status_429").is_ok());
        for bad in [
            "nope",
            "http_req_duration{scenario}",
            "http_req_duration{scenario:x",
            "pairdb_status_4x9",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expressions_parse_and_check_their_statistic() {
        let d = sel("http_req_duration");
        let t = parse_expression(&d, "p(99.9) <= 200").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.stat, t.op, t.value), (Stat::P(99.9), Op::Le, 200.0));
        assert!(parse_expression(&d, "avg<20").is_ok());
        let failed = sel("http_req_failed");
        assert!(parse_expression(&failed, "rate<0.01").is_ok());
        assert!(parse_expression(&sel("http_reqs"), "count>100").is_ok());
        for (selector, text) in [
            (&d, "rate<1"),
            (&failed, "p(95)<1"),
            (&d, "p(101)<1"),
            (&d, "p95<1"),
            (&d, "avg<"),
            (&d, "avg<abc"),
            (&d, "avg"),
            (&d, "avg=>3"),
            (&d, "avg<inf"),
        ] {
            assert!(parse_expression(selector, text).is_err(), "{text}");
        }
    }

    struct Fixed;

    impl Statistics for Fixed {
        fn stat(&self, selector: &Selector, stat: Stat) -> Option<f64> {
            match (selector.metric.as_str(), stat) {
                ("http_req_duration", Stat::P(95.0)) => Some(40.0),
                ("http_req_failed", Stat::Rate) => Some(0.02),
                _ => None,
            }
        }
    }

    #[test]
    fn verdicts_hold_fail_and_fail_without_samples() {
        let d = sel("http_req_duration");
        let thresholds = vec![
            parse_expression(&d, "p(95)<50").unwrap_or_else(|e| panic!("{e}")),
            parse_expression(&sel("http_req_failed"), "rate<0.01")
                .unwrap_or_else(|e| panic!("{e}")),
            parse_expression(&d, "max<1000").unwrap_or_else(|e| panic!("{e}")),
        ];
        let verdicts = evaluate(&thresholds, &Fixed);
        let passed: Vec<bool> = verdicts.iter().map(|v| v.passed).collect();
        assert_eq!(passed, vec![true, false, false]);
        assert!(verdicts.iter().all(|v| !v.to_string().is_empty()));
    }
}
