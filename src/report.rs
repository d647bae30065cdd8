//! An experiment report: one self-contained HTML file with the lab's definition, the timeline
//! of its events (phases, steps, changes) and a plot per pair of services of the round trip
//! and loss measured by `labctl probe`. Inline SVG, no script, nothing fetched. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::status::{LabEvent, LabStatus};
use crate::store::ProbeResult;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A line plot of (seconds, value) points, with its axis ranges written out.
pub fn plot(title: &str, unit: &str, points: &[(f64, f64)]) -> String {
    let (w, h, pad) = (640.0, 200.0, 40.0);
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\" class=\"plot\">\n");
    let _ = writeln!(svg, "<text x=\"{pad}\" y=\"14\" font-size=\"13\">{}</text>", escape(title));
    if points.is_empty() {
        svg.push_str("<text x=\"40\" y=\"100\">no measurements</text></svg>\n");
        return svg;
    }
    let t_max = points.iter().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let v_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let x = |t: f64| pad + t / t_max * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / v_max * (h - 2.0 * pad);
    let _ = writeln!(svg, "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>", h - pad, w - pad, h - pad);
    let _ = writeln!(svg, "<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#999\"/>", h - pad);
    let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{t_max:.0} s</text>", w - pad, h - pad + 14.0);
    let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v_max:.1} {unit}</text>", pad - 4.0, pad + 4.0);
    let line: Vec<String> = points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
    let _ = writeln!(svg, "<polyline fill=\"none\" stroke=\"#2a6fdb\" stroke-width=\"2\" points=\"{}\"/>", line.join(" "));
    for (t, v) in points {
        let _ = writeln!(svg, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#2a6fdb\"><title>{t:.1} s: {v:.2} {unit}</title></circle>", x(*t), y(*v));
    }
    svg.push_str("</svg>\n");
    svg
}

pub fn render(lab: &str, definition: &str, status: Option<&LabStatus>, events: &[LabEvent], probes: &[ProbeResult]) -> String {
    let mut html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>swarmlab report: {0}</title>\n<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}} pre{{background:#f4f4f4;padding:1em;overflow:auto}} td,th{{padding:2px 8px;text-align:left}}</style></head>\n<body>\n<h1>Lab {0}</h1>\n",
        escape(lab)
    );
    if let Some(s) = status {
        let _ = writeln!(html, "<p>Phase <b>{}</b>: {} (revision {}, generation {})</p>", s.phase, escape(&s.message), escape(&s.revision), s.generation);
        if let Some(c) = &s.schedule {
            let _ = writeln!(html, "<p>Schedule: step {}/{} of run {}{}; in force: {}</p>", c.step, c.steps, c.run, if c.finished { " (finished)" } else { "" }, escape(&c.in_force));
        }
    }
    let _ = writeln!(html, "<h2>Definition</h2>\n<pre>{}</pre>", escape(definition));
    html.push_str("<h2>Timeline</h2>\n<table>\n<tr><th>time</th><th>reason</th><th>message</th></tr>\n");
    for e in events {
        let _ = writeln!(html, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", e.time.format("%Y-%m-%d %H:%M:%S%.3f"), e.reason, escape(&e.message));
    }
    html.push_str("</table>\n<h2>Measurements (<code>labctl probe</code>)</h2>\n");
    let mut pairs: BTreeMap<(String, String), Vec<&ProbeResult>> = BTreeMap::new();
    for p in probes {
        pairs.entry((p.from.clone(), p.to.clone())).or_default().push(p);
    }
    if pairs.is_empty() {
        html.push_str("<p>No probe was run: <code>labctl probe LAB SERVICE --to OTHER</code> records one.</p>\n");
    }
    let start = probes.iter().map(|p| p.time).min();
    for ((from, to), series) in &pairs {
        let at = |p: &ProbeResult| start.map(|s| (p.time - s).num_milliseconds() as f64 / 1000.0).unwrap_or(0.0);
        let rtt: Vec<(f64, f64)> = series.iter().filter(|p| p.received > 0).map(|p| (at(p), p.avg_ms)).collect();
        let loss: Vec<(f64, f64)> = series.iter().map(|p| (at(p), p.loss_percent)).collect();
        let _ = writeln!(html, "<h3>{} → {} ({} probes)</h3>", escape(from), escape(to), series.len());
        html.push_str(&plot(&format!("{from} → {to}: round trip"), "ms", &rtt));
        html.push_str(&plot(&format!("{from} → {to}: loss"), "%", &loss));
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    #[test]
    fn each_pair_gets_a_plot_of_its_series_in_time_order() {
        let t0 = Utc::now();
        let probe = |secs: i64, to: &str, avg: f64, loss: f64| ProbeResult {
            time: t0 + Duration::seconds(secs),
            from: "a".into(),
            to: to.into(),
            address: "10.0.0.2".into(),
            sent: 10,
            received: 10,
            loss_percent: loss,
            avg_ms: avg,
        };
        let probes = [probe(0, "b", 20.0, 0.0), probe(10, "b", 40.0, 10.0), probe(20, "c", 5.0, 0.0)];
        let html = render("x", "kind: Lab\n", None, &[], &probes);
        assert!(html.contains("<h3>a → b (2 probes)</h3>") && html.contains("<h3>a → c (1 probes)</h3>"), "{html}");
        assert_eq!(html.matches("<polyline").count(), 4, "round trip and loss for each pair");
        assert!(html.contains("<title>10.0 s: 40.00 ms</title>"), "{html}");
        assert!(!html.contains("<script"));
    }
}
