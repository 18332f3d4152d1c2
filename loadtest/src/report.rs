//! The HTML report: one self-contained file (inline SVG, no scripts, no network) with latency
//! percentiles and request rate over time, the latency distribution by percentile, and the
//! summary — for people who would rather look than read.

use std::fmt::Write as _;

use crate::metrics::{Recorder, WindowRow};
use crate::threshold::Verdict;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 260.0;
const PAD: f64 = 48.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A named, coloured line: `(name, colour, points)`.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line chart of `series` (name, colour, points) over `x` in `[0, x_max]`, `y` in
/// `[0, y_max]`, with axis labels.
fn chart(
    title: &str,
    y_label: &str,
    series: &[Series<'_>],
    x_max: f64,
    x_label: &str,
    x_ticks: &[(f64, String)],
) -> String {
    let y_max = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let x_max = x_max.max(1e-9);
    let sx = |x: f64| PAD + x / x_max * (WIDTH - 2.0 * PAD);
    let sy = |y: f64| HEIGHT - PAD - y / y_max * (HEIGHT - 2.0 * PAD);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<h2>{}</h2><svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">"#,
        escape(title)
    );
    let _ = write!(
        svg,
        r##"<rect x="{PAD}" y="{PAD}" width="{}" height="{}" fill="#fafafa" stroke="#ccc"/>"##,
        WIDTH - 2.0 * PAD,
        HEIGHT - 2.0 * PAD
    );
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{PAD}" x2="{}" y1="{y0:.1}" y2="{y0:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{y:.2}</text>"##,
            WIDTH - PAD,
            PAD - 6.0,
            sy(y) + 4.0,
            y0 = sy(y)
        );
    }
    for (x, label) in x_ticks {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            sx(*x),
            HEIGHT - PAD + 16.0,
            escape(label)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text><text x="14" y="{:.1}" font-size="12" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        HEIGHT - 8.0,
        escape(x_label),
        HEIGHT / 2.0,
        HEIGHT / 2.0,
        escape(y_label)
    );
    for (i, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><text x="{:.1}" y="{:.1}" font-size="12" fill="{colour}">{}</text>"#,
            path.join(" "),
            PAD + 10.0 + 90.0 * i as f64,
            PAD - 12.0,
            escape(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn over_time(windows: &[WindowRow], pick: impl Fn(&WindowRow) -> Option<f64>) -> Vec<(f64, f64)> {
    windows
        .iter()
        .filter_map(|w| pick(w).map(|v| (w.end, v)))
        .collect()
}

/// The whole report.
pub fn html(recorder: &Recorder, verdicts: &[Verdict], title: &str, summary: &str) -> String {
    let windows = recorder.windows();
    let end = windows.last().map_or(1.0, |w| w.end);
    let ticks: Vec<(f64, String)> = (0..=5)
        .map(|i| {
            let t = end * f64::from(i) / 5.0;
            (t, format!("{t:.0}s"))
        })
        .collect();
    let latency = chart(
        "Request latency over time (per second, from each iteration's due time)",
        "ms",
        &[
            ("p50", "#2a7ab0", over_time(&windows, |w| w.p50)),
            ("p95", "#e08a1e", over_time(&windows, |w| w.p95)),
            ("p99", "#c0392b", over_time(&windows, |w| w.p99)),
            ("max", "#7f8c8d", over_time(&windows, |w| w.max)),
        ],
        end,
        "time",
        &ticks,
    );
    let rate = |w: &WindowRow| (w.end - w.start).max(1e-9);
    let throughput = chart(
        "Requests per second",
        "req/s",
        &[
            (
                "requests",
                "#27ae60",
                over_time(&windows, |w| Some(w.http_reqs as f64 / rate(w))),
            ),
            (
                "failed",
                "#c0392b",
                over_time(&windows, |w| Some(w.http_req_failed as f64 / rate(w))),
            ),
            (
                "dropped",
                "#8e44ad",
                over_time(&windows, |w| Some(w.dropped_iterations as f64 / rate(w))),
            ),
        ],
        end,
        "time",
        &ticks,
    );
    // Percentiles on a log scale of 1/(1-p): 0, 90, 99, 99.9, 99.99, 99.999 evenly spaced.
    let position = |p: f64| -(1.0 - p / 100.0).max(1e-6).log10();
    let curve: Vec<(f64, f64)> = recorder
        .percentile_curve()
        .into_iter()
        .map(|(p, ms)| (position(p), ms))
        .collect();
    let distribution = chart(
        "Latency by percentile (all requests)",
        "ms",
        &[("latency", "#2a7ab0", curve)],
        position(99.9999),
        "percentile",
        &[0.0, 90.0, 99.0, 99.9, 99.99, 99.999]
            .iter()
            .map(|p| (position(*p), format!("{p}%")))
            .collect::<Vec<_>>(),
    );
    let verdict_rows: String = verdicts
        .iter()
        .map(|v| format!("<li>{}</li>", escape(&v.to_string())))
        .collect();
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}h2{{font-size:1.05em;margin-top:2em}}pre{{background:#f4f4f4;padding:1em;overflow-x:auto}}</style>
</head><body><h1>{title}</h1>{latency}{throughput}{distribution}<h2>Thresholds</h2><ul>{verdict_rows}</ul><h2>Summary</h2><pre>{summary}</pre></body></html>
"#,
        title = escape(title),
        summary = escape(summary),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::RequestSample;

    #[test]
    fn the_report_is_one_self_contained_page_with_its_charts() {
        let r = Recorder::default();
        for (second, ms) in [(0u64, 2u64), (1, 40)] {
            for _ in 0..10 {
                r.request(RequestSample {
                    tags: vec![("scenario".into(), "s".into())],
                    duration: Duration::from_millis(ms),
                    failed: false,
                    sent: 1,
                    received: 1,
                    conflict: false,
                    read_repairs: 0,
                    status: 200,
                });
            }
            r.roll(Duration::from_secs(second), Duration::from_secs(second + 1));
        }
        let windows = r.windows();
        assert_eq!(windows.len(), 2);
        assert_eq!(windows.iter().map(|w| w.http_reqs).sum::<u64>(), 20);
        assert!(
            windows
                .get(1)
                .and_then(|w| w.p50)
                .is_some_and(|p| p >= 39.0)
        );
        let page = html(&r, &[], "run <1>", "summary & more");
        assert!(page.starts_with("<!doctype html>"));
        assert_eq!(
            page.matches("<svg").count(),
            3,
            "latency, rate, distribution"
        );
        assert!(page.contains("run &lt;1&gt;") && page.contains("summary &amp; more"));
        assert!(
            !page.contains("<script") && !page.contains("http://") && !page.contains("https://")
        );
    }
}
