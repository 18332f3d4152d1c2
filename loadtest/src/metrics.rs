//! What a run measured, with k6's metric names, kept per tag set so thresholds and the summary
//! can narrow to any tags (`scenario`, `method`, `status`, a check's `check`, and the
//! scenario's own tags).
//!
//! Durations go into HdrHistograms (microseconds, 3 significant digits, up to an hour), so
//! percentiles are exact to 0.1 % however many samples a run takes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::threshold::{Selector, Stat, Statistics};

/// A sample's tags, sorted by name.
pub type Tags = Vec<(String, String)>;

/// The longest duration recorded exactly (longer ones are recorded as this).
const MAX_MICROS: u64 = 3_600_000_000;

#[allow(clippy::expect_used)] // constant bounds, valid by construction: never fails
fn coarse_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("1 µs to an hour at 2 digits is valid")
}

#[allow(clippy::expect_used)] // constant bounds, valid by construction: never fails
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("1 µs to an hour at 3 digits is valid")
}

/// One request's outcome.
#[derive(Clone, Debug)]
pub struct RequestSample {
    /// Its tags (`scenario`, `method`, `status` and the scenario's).
    pub tags: Tags,
    /// From when it was due to its answer.
    pub duration: Duration,
    /// A failure: no answer, or a status the request did not expect.
    pub failed: bool,
    /// Payload bytes sent: the key and the value (not headers or framing).
    pub sent: u64,
    /// Payload bytes received: the value read (not headers, framing or problem bodies).
    pub received: u64,
    /// The answer reported a conflict.
    pub conflict: bool,
    /// Replicas the answer said were repaired.
    pub read_repairs: u64,
    /// The HTTP status (0: no answer).
    pub status: u16,
}

#[derive(Clone)]
struct Http {
    durations: Histogram<u64>,
    reqs: u64,
    failed: u64,
    sent: u64,
    received: u64,
    conflicts: u64,
    read_repairs: u64,
    statuses: BTreeMap<u16, u64>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            durations: histogram(),
            reqs: 0,
            failed: 0,
            sent: 0,
            received: 0,
            conflicts: 0,
            read_repairs: 0,
            statuses: BTreeMap::new(),
        }
    }
}

#[derive(Clone)]
struct Iterations {
    durations: Histogram<u64>,
    count: u64,
    dropped: u64,
}

impl Default for Iterations {
    fn default() -> Self {
        Iterations {
            durations: histogram(),
            count: 0,
            dropped: 0,
        }
    }
}

#[derive(Default)]
struct State {
    http: HashMap<Tags, Http>,
    iterations: HashMap<Tags, Iterations>,
    /// `(passes, fails)` per tag set (the check's name is a tag).
    checks: HashMap<Tags, (u64, u64)>,
    vus: u64,
    vus_max: u64,
    vus_min: Option<u64>,
    vus_peak: u64,
    /// The window being filled, and the rows of those closed.
    window: Window,
    windows: Vec<WindowRow>,
}

/// The samples of the current window (coarse: 2 significant digits).
struct Window {
    durations: Histogram<u64>,
    reqs: u64,
    failed: u64,
    iterations: u64,
    dropped: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            durations: coarse_histogram(),
            reqs: 0,
            failed: 0,
            iterations: 0,
            dropped: 0,
        }
    }
}

/// One closed sample window: what the run did between `start` and `end` (seconds from the
/// run's start). `--out json` writes one per line; the HTML report plots them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WindowRow {
    /// Window start, seconds since the run started.
    pub start: f64,
    /// Window end.
    pub end: f64,
    /// Requests answered in the window.
    pub http_reqs: u64,
    /// Of which failed.
    pub http_req_failed: u64,
    /// Iterations completed.
    pub iterations: u64,
    /// Iterations dropped.
    pub dropped_iterations: u64,
    /// VUs running at the window's end.
    pub vus: u64,
    /// Request latency in the window, milliseconds (absent without requests).
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

/// Everything a run recorded. Shared by every VU; each record takes one short lock.
#[derive(Default)]
pub struct Recorder {
    state: Mutex<State>,
    /// How long the run lasted (for per-second rates); set at its end.
    elapsed: Mutex<Duration>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_MICROS)
}

fn matches(tags: &Tags, selector: &[(String, String)]) -> bool {
    selector.iter().all(|want| tags.contains(want))
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one request.
    pub fn request(&self, sample: RequestSample) {
        let mut state = self.lock();
        let http = state.http.entry(sample.tags).or_default();
        http.durations.saturating_record(micros(sample.duration));
        http.reqs += 1;
        http.failed += u64::from(sample.failed);
        http.sent += sample.sent;
        http.received += sample.received;
        http.conflicts += u64::from(sample.conflict);
        http.read_repairs += sample.read_repairs;
        *http.statuses.entry(sample.status).or_default() += 1;
        state
            .window
            .durations
            .saturating_record(micros(sample.duration));
        state.window.reqs += 1;
        state.window.failed += u64::from(sample.failed);
    }

    /// Closes the current sample window, which ran from `start` to `end` (since the run's
    /// start), and opens the next.
    pub fn roll(&self, start: Duration, end: Duration) {
        let mut state = self.lock();
        let window = std::mem::take(&mut state.window);
        let ms = |q: f64| {
            (!window.durations.is_empty())
                .then(|| window.durations.value_at_quantile(q) as f64 / 1000.0)
        };
        let row = WindowRow {
            start: start.as_secs_f64(),
            end: end.as_secs_f64(),
            http_reqs: window.reqs,
            http_req_failed: window.failed,
            iterations: window.iterations,
            dropped_iterations: window.dropped,
            vus: state.vus,
            p50: ms(0.5),
            p95: ms(0.95),
            p99: ms(0.99),
            max: ms(1.0),
        };
        state.windows.push(row);
    }

    /// Every closed window, in order.
    pub fn windows(&self) -> Vec<WindowRow> {
        self.lock().windows.clone()
    }

    /// The run's latency distribution (every request): `(percentile, milliseconds)` points from
    /// the median to the maximum, for the HTML report.
    pub fn percentile_curve(&self) -> Vec<(f64, f64)> {
        let state = self.lock();
        let Some(merged) = durations(&state, "http_req_duration", &[]) else {
            return Vec::new();
        };
        [
            0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
        ]
        .iter()
        .map(|p| (*p, merged.value_at_quantile(p / 100.0) as f64 / 1000.0))
        .collect()
    }

    /// Records one completed iteration of the scenario tagged `tags`.
    pub fn iteration(&self, tags: &Tags, duration: Duration) {
        let mut state = self.lock();
        let it = state.iterations.entry(tags.clone()).or_default();
        it.durations.saturating_record(micros(duration));
        it.count += 1;
        state.window.iterations += 1;
    }

    /// Records an iteration that was due while no VU was free (open-model executors).
    pub fn dropped(&self, tags: &Tags) {
        let mut state = self.lock();
        state.iterations.entry(tags.clone()).or_default().dropped += 1;
        state.window.dropped += 1;
    }

    /// Records a check's outcome; `tags` holds the `check` tag.
    pub fn check(&self, tags: Tags, passed: bool) {
        let mut state = self.lock();
        let entry = state.checks.entry(tags).or_default();
        if passed {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }

    /// Records the VUs running now.
    pub fn vus(&self, running: u64, allocated: u64) {
        let mut state = self.lock();
        state.vus = running;
        state.vus_max = state.vus_max.max(allocated);
        state.vus_min = Some(state.vus_min.map_or(running, |m| m.min(running)));
        state.vus_peak = state.vus_peak.max(running);
    }

    /// Sets the run's length, the denominator of per-second rates.
    pub fn finish(&self, elapsed: Duration) {
        *self.elapsed.lock().unwrap_or_else(PoisonError::into_inner) = elapsed;
    }

    /// Requests so far, and those that failed (for the progress line; no per-second figure).
    pub fn request_counts(&self) -> (u64, u64) {
        let state = self.lock();
        state
            .http
            .values()
            .fold((0, 0), |(r, f), h| (r + h.reqs, f + h.failed))
    }

    fn seconds(&self) -> f64 {
        self.elapsed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_secs_f64()
            .max(1e-9)
    }

    /// The values of every metric named `metric` over the samples carrying every tag in
    /// `tags`, as the summary shows them; `None` when no sample matches.
    pub fn values(&self, metric: &str, tags: &[(String, String)]) -> Option<BTreeMap<String, f64>> {
        let state = self.lock();
        let seconds = self.seconds();
        let mut out = BTreeMap::new();
        let trend = |h: &Histogram<u64>, out: &mut BTreeMap<String, f64>| {
            let ms = |v: u64| v as f64 / 1000.0;
            out.insert("avg".into(), h.mean() / 1000.0);
            out.insert("min".into(), ms(h.min()));
            out.insert("med".into(), ms(h.value_at_quantile(0.5)));
            out.insert("max".into(), ms(h.max()));
            for p in [90.0, 95.0, 99.0, 99.9] {
                out.insert(format!("p({p})"), ms(h.value_at_quantile(p / 100.0)));
            }
        };
        let http: Vec<&Http> = state
            .http
            .iter()
            .filter(|(t, _)| matches(t, tags))
            .map(|(_, h)| h)
            .collect();
        let iterations: Vec<&Iterations> = state
            .iterations
            .iter()
            .filter(|(t, _)| matches(t, tags))
            .map(|(_, i)| i)
            .collect();
        let counter = |count: u64, out: &mut BTreeMap<String, f64>| {
            out.insert("count".into(), count as f64);
            out.insert("rate".into(), count as f64 / seconds);
        };
        match metric {
            "http_req_duration" | "iteration_duration" => {
                trend(&durations(&state, metric, tags)?, &mut out);
            }
            "http_reqs"
            | "data_sent"
            | "data_received"
            | "pairdb_conflicts"
            | "pairdb_read_repairs" => {
                if http.is_empty() {
                    return None;
                }
                let count = http
                    .iter()
                    .map(|h| match metric {
                        "http_reqs" => h.reqs,
                        "data_sent" => h.sent,
                        "data_received" => h.received,
                        "pairdb_conflicts" => h.conflicts,
                        _ => h.read_repairs,
                    })
                    .sum();
                counter(count, &mut out);
            }
            "http_req_failed" => {
                let reqs: u64 = http.iter().map(|h| h.reqs).sum();
                if reqs == 0 {
                    return None;
                }
                let failed: u64 = http.iter().map(|h| h.failed).sum();
                out.insert("rate".into(), failed as f64 / reqs as f64);
                out.insert("passes".into(), failed as f64);
                out.insert("fails".into(), (reqs - failed) as f64);
            }
            "iterations" | "dropped_iterations" => {
                if iterations.is_empty() {
                    return None;
                }
                let count = iterations
                    .iter()
                    .map(|i| {
                        if metric == "iterations" {
                            i.count
                        } else {
                            i.dropped
                        }
                    })
                    .sum();
                counter(count, &mut out);
            }
            "checks" => {
                let (passes, fails) = state
                    .checks
                    .iter()
                    .filter(|(t, _)| matches(t, tags))
                    .fold((0, 0), |(p, f), (_, (cp, cf))| (p + cp, f + cf));
                if passes + fails == 0 {
                    return None;
                }
                out.insert("rate".into(), passes as f64 / (passes + fails) as f64);
                out.insert("passes".into(), passes as f64);
                out.insert("fails".into(), fails as f64);
            }
            "vus" => {
                out.insert("value".into(), state.vus as f64);
                out.insert("min".into(), state.vus_min.unwrap_or(0) as f64);
                out.insert("max".into(), state.vus_peak as f64);
            }
            "vus_max" => {
                out.insert("value".into(), state.vus_max as f64);
                out.insert("min".into(), state.vus_max as f64);
                out.insert("max".into(), state.vus_max as f64);
            }
            status => {
                let code: u16 = status.strip_prefix("pairdb_status_")?.parse().ok()?;
                // Requests that matched but never got this status count 0, not "no samples".
                if http.is_empty() {
                    return None;
                }
                let count: u64 = http.iter().filter_map(|h| h.statuses.get(&code)).sum();
                counter(count, &mut out);
            }
        }
        Some(out)
    }

    /// Every scenario that recorded something, by name.
    pub fn scenarios(&self) -> Vec<String> {
        let state = self.lock();
        let mut names: Vec<String> = state
            .http
            .keys()
            .chain(state.iterations.keys())
            .filter_map(|tags| {
                tags.iter()
                    .find(|(k, _)| k == "scenario")
                    .map(|(_, v)| v.clone())
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every status seen, for the `pairdb_status_<code>` lines.
    pub fn statuses(&self) -> Vec<u16> {
        let state = self.lock();
        let mut codes: Vec<u16> = state
            .http
            .values()
            .flat_map(|h| h.statuses.keys().copied())
            .collect();
        codes.sort_unstable();
        codes.dedup();
        codes
    }
}

impl Statistics for Recorder {
    fn stat(&self, selector: &Selector, stat: Stat) -> Option<f64> {
        if let Stat::P(p) = stat {
            // Any percentile, not only the summary's.
            let state = self.lock();
            let merged = durations(&state, &selector.metric, &selector.tags)?;
            return Some(merged.value_at_quantile(p / 100.0) as f64 / 1000.0);
        }
        let values = self.values(&selector.metric, &selector.tags)?;
        values.get(&stat.to_string()).copied()
    }
}

/// The durations of trend `metric` (`http_req_duration`, else `iteration_duration`) over the
/// samples carrying every tag in `tags`, merged; `None` when there are none.
fn durations(state: &State, metric: &str, tags: &[(String, String)]) -> Option<Histogram<u64>> {
    let mut merged = histogram();
    if metric == "iteration_duration" {
        for (_, i) in state.iterations.iter().filter(|(t, _)| matches(t, tags)) {
            merged.add(&i.durations).ok()?;
        }
    } else {
        for (_, h) in state.http.iter().filter(|(t, _)| matches(t, tags)) {
            merged.add(&h.durations).ok()?;
        }
    }
    (!merged.is_empty()).then_some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(scenario: &str, method: &str, ms: u64, status: u16) -> RequestSample {
        RequestSample {
            tags: vec![
                ("method".into(), method.into()),
                ("scenario".into(), scenario.into()),
                ("status".into(), status.to_string()),
            ],
            duration: Duration::from_millis(ms),
            failed: status >= 400,
            sent: 100,
            received: 10,
            conflict: false,
            read_repairs: 0,
            status,
        }
    }

    #[test]
    fn statistics_narrow_by_tags() {
        let r = Recorder::default();
        for ms in 1..=100 {
            r.request(sample("a", "GET", ms, 200));
        }
        r.request(sample("b", "PUT", 1000, 503));
        r.finish(Duration::from_secs(10));
        let sel = |metric: &str, tags: &[(&str, &str)]| Selector {
            metric: metric.into(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let d = sel("http_req_duration", &[("scenario", "a")]);
        let p99 = r.stat(&d, Stat::P(99.0)).unwrap_or(0.0);
        assert!((98.0..=100.0).contains(&p99), "{p99}");
        assert_eq!(
            r.stat(&sel("http_req_duration", &[]), Stat::Max)
                .map(f64::round),
            Some(1000.0)
        );
        assert_eq!(r.stat(&sel("http_reqs", &[]), Stat::Count), Some(101.0));
        assert_eq!(r.stat(&sel("http_reqs", &[]), Stat::Rate), Some(10.1));
        let failed = r
            .stat(&sel("http_req_failed", &[]), Stat::Rate)
            .unwrap_or(0.0);
        assert!((failed - 1.0 / 101.0).abs() < 1e-9);
        assert_eq!(
            r.stat(&sel("pairdb_status_503", &[]), Stat::Count),
            Some(1.0)
        );
        assert_eq!(
            r.stat(&sel("http_reqs", &[("scenario", "c")]), Stat::Count),
            None
        );
        assert_eq!(r.statuses(), vec![200, 503]);
    }
}
