//! An experiment report: one self-contained HTML file with the lab's definition, the timeline
//! of its events (phases, steps, changes), a plot per pair of services of the round trip and
//! loss measured by `labctl probe`, and per service its traffic on each lab network and its
//! CPU as the node agents sampled them, the schedule's steps marked. Inline SVG, no script,
//! nothing fetched. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::status::{EventReason, LabEvent, LabStatus};
use crate::usage::{service_series, UsageRecord};
use crate::store::ProbeResult;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A line plot of (seconds, value) points, with its axis ranges written out.
pub fn plot(title: &str, unit: &str, points: &[(f64, f64)]) -> String {
    plot_lines(title, unit, &[(String::new(), points.to_vec())], &[])
}

const COLOURS: [&str; 6] = ["#2a6fdb", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#495057"];

/// Several named series of (seconds, value) points on one pair of axes, with a legend, and
/// `marks` (seconds, label) drawn as dashed vertical lines: the schedule's steps.
pub fn plot_lines(title: &str, unit: &str, series: &[(String, Vec<(f64, f64)>)], marks: &[(f64, String)]) -> String {
    let (w, h, pad) = (640.0, 200.0, 40.0);
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\" class=\"plot\">\n");
    let _ = writeln!(svg, "<text x=\"{pad}\" y=\"14\" font-size=\"13\">{}</text>", escape(title));
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    if points().next().is_none() {
        svg.push_str("<text x=\"40\" y=\"100\">no measurements</text></svg>\n");
        return svg;
    }
    let t_max = points().map(|p| p.0).chain(marks.iter().map(|m| m.0)).fold(0.0, f64::max).max(1.0);
    let v_max = points().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let x = |t: f64| pad + t / t_max * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / v_max * (h - 2.0 * pad);
    let _ = writeln!(svg, "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>", h - pad, w - pad, h - pad);
    let _ = writeln!(svg, "<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#999\"/>", h - pad);
    let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{t_max:.0} s</text>", w - pad, h - pad + 14.0);
    let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\">{v_max:.1} {unit}</text>", pad + 4.0, pad - 4.0);
    for (t, label) in marks {
        let _ = writeln!(svg, "<line x1=\"{0:.1}\" y1=\"{pad}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#aaa\" stroke-dasharray=\"4 3\"><title>{2}</title></line>", x(*t), h - pad, escape(label));
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let line: Vec<String> = points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        let _ = writeln!(svg, "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>", line.join(" "));
        for (t, v) in points {
            let _ = writeln!(svg, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{}{t:.1} s: {v:.2} {unit}</title></circle>", x(*t), y(*v), if name.is_empty() { String::new() } else { format!("{}, ", escape(name)) });
        }
        if !name.is_empty() {
            let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"{colour}\">{}</text>", w - pad, 14.0 + 12.0 * i as f64, escape(name));
        }
    }
    svg.push_str("</svg>\n");
    svg
}

pub fn render(lab: &str, definition: &str, status: Option<&LabStatus>, events: &[LabEvent], probes: &[ProbeResult], usage: &[UsageRecord]) -> String {
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
    html.push_str(&usage_section(usage, events));
    html.push_str("</body></html>\n");
    html
}

/// Per service, its traffic on each lab network and its CPU over time, as the node agents
/// sampled them, the schedule's steps marked.
fn usage_section(usage: &[UsageRecord], events: &[LabEvent]) -> String {
    let mut html = String::from("<h2>Usage (the node agents' samples)</h2>\n");
    let (Some(start), services) = service_series(usage) else {
        html.push_str("<p>No sample: each node's agent samples its tasks every <code>--usage-interval</code> (5 s unless set; 0s turns it off).</p>\n");
        return html;
    };
    let end = usage.iter().map(|r| r.at).max().unwrap_or(start);
    let marks: Vec<(f64, String)> = events
        .iter()
        .filter(|e| e.reason == EventReason::Step && e.time >= start && e.time <= end)
        .map(|e| ((e.time - start).num_milliseconds() as f64 / 1000.0, e.message.clone()))
        .collect();
    let _ = writeln!(html, "<p>From {} to {}; dashed lines: the schedule's steps.</p>", start.format("%Y-%m-%d %H:%M:%S"), end.format("%H:%M:%S"));
    for (service, series) in &services {
        let _ = writeln!(html, "<h3>{}</h3>", escape(service));
        let traffic: Vec<(String, Vec<(f64, f64)>)> = series
            .traffic
            .iter()
            .map(|((network, direction), points)| (format!("{direction} on {network}"), points.iter().map(|(t, v)| (*t, v / 1000.0)).collect()))
            .collect();
        html.push_str(&plot_lines(&format!("{service}: traffic per lab network"), "kB/s", &traffic, &marks));
        let cpu: Vec<(f64, f64)> = series.cpu_cores.iter().map(|(t, c)| (*t, c * 100.0)).collect();
        html.push_str(&plot_lines(&format!("{service}: CPU (100% is one core)"), "%", &[(String::new(), cpu)], &marks));
    }
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
        let html = render("x", "kind: Lab\n", None, &[], &probes, &[]);
        assert!(html.contains("<h3>a → b (2 probes)</h3>") && html.contains("<h3>a → c (1 probes)</h3>"), "{html}");
        assert_eq!(html.matches("<polyline").count(), 4, "round trip and loss for each pair");
        assert!(html.contains("<title>10.0 s: 40.00 ms</title>"), "{html}");
        assert!(!html.contains("<script"));
        assert!(html.contains("No sample"), "no usage recorded");
    }

    #[test]
    fn each_service_gets_its_traffic_per_network_and_cpu_with_the_steps_marked() {
        use crate::usage::ServiceUsage;
        let t0 = Utc::now();
        let record = |secs: i64, sent: f64| UsageRecord {
            node: "n1".into(),
            at: t0 + Duration::seconds(secs),
            every_seconds: 5.0,
            services: BTreeMap::from([("kv".to_string(), ServiceUsage { tasks: 3, cpu_cores: 0.5, memory_bytes: 1 << 20, networks: BTreeMap::from([("dht".to_string(), [1000.0, sent])]) })]),
        };
        let step = LabEvent { time: t0 + Duration::seconds(7), kind: crate::status::EventKind::Normal, reason: EventReason::Step, message: "step 2/3: partition dht".into() };
        let before = LabEvent { time: t0 - Duration::seconds(60), ..step.clone() };
        let html = render("x", "kind: Lab\n", None, &[before, step], &[], &[record(0, 20_000.0), record(5, 20_000.0), record(10, 0.0)]);
        assert!(html.contains("<h3>kv</h3>") && html.contains("kv: traffic per lab network") && html.contains("kv: CPU"), "{html}");
        assert!(html.contains(">received on dht</text>") && html.contains(">sent on dht</text>"), "a legend entry per direction and network: {html}");
        assert!(html.contains("<title>sent on dht, 10.0 s: 0.00 kB/s</title>") && html.contains("<title>sent on dht, 5.0 s: 20.00 kB/s</title>"), "{html}");
        assert_eq!(html.matches("stroke-dasharray").count(), 2, "the step within the samples, on both plots; the one before them not: {html}");
        assert!(html.contains("<title>step 2/3: partition dht</title>"));
        assert!(html.contains("<title>0.0 s: 50.00 %</title>"), "CPU in percent of a core: {html}");
    }
}
