//! `labctl probe LAB SERVICE [--to SVC]` and `labctl probe LAB --matrix`: measured RTT and loss
//! from inside tasks, beside what the lab asks of each round trip.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use comfy_table::{presets::NOTHING, Table};
use swarmlab::shaping::measure::{asked_round_trip, ping, resolve, Asked, PingStats};
use swarmlab::shaping::netns::ipv4_addresses;
use swarmlab::spec::links::Cidr;

use crate::common::*;
use crate::Output;

pub struct Args {
    pub lab: String,
    /// The sender; every service of the lab with `matrix`.
    pub service: Option<String>,
    pub to: Vec<String>,
    pub matrix: bool,
    pub count: u32,
    pub interval: u32,
    pub output: Output,
}

struct Row {
    from: String,
    container: String,
    to: String,
    address: String,
    stats: PingStats,
    /// `None` when the agents' reports cannot be read (no Redis).
    asked: Option<Asked>,
}

pub async fn run(url: &str, docker_host: Option<&str>, args: Args) -> anyhow::Result<ExitCode> {
    let Args { lab, service, to, matrix, count, interval, output } = args;
    let swarm = swarmlab::swarm::DockerSwarm::connect(docker_host).await?;
    let mut store = reader(url).await.ok();
    let status = match store.as_mut() {
        Some(r) => r.status(&lab).await.ok().flatten(),
        None => None,
    };
    let services: Vec<String> = status.as_ref().map(|s| s.services.keys().cloned().collect()).unwrap_or_default();
    let senders = match (&service, matrix) {
        (Some(s), false) => vec![s.clone()],
        (None, true) => {
            anyhow::ensure!(!services.is_empty(), "no status for lab `{lab}` in redis: --matrix probes the services labd reports");
            services.clone()
        }
        (Some(_), true) => anyhow::bail!("give a service or --matrix, not both"),
        (None, false) => anyhow::bail!("name the service to probe from, or --matrix for every pair"),
    };
    let reports = match store.as_mut() {
        Some(r) => r.task_shaping(&lab).await.ok(),
        None => None,
    };
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for from in &senders {
        let full = format!("{lab}_{from}");
        let Some(task) = swarm.local_task_of(&lab, from).await? else {
            if matrix {
                skipped.push(from.clone());
                continue;
            }
            anyhow::bail!("no running task of {full} on this node: run `labctl probe` on a node that has one (`docker service ps {full}`)");
        };
        let targets: Vec<String> = if !to.is_empty() {
            to.clone()
        } else {
            anyhow::ensure!(!services.is_empty(), "no status for lab `{lab}`; name targets with --to");
            services.iter().filter(|s| *s != from).cloned().collect()
        };
        let own = ipv4_addresses(task.pid).await.unwrap_or_default();
        for target in targets {
            let mut addresses = resolve(task.pid, &target).await.map_err(anyhow::Error::msg)?;
            if matrix {
                // One task per pair keeps a matrix quick; the single-service form probes all.
                addresses.truncate(1);
            }
            for ip in addresses {
                let stats = ping(task.pid, &ip, count, interval).await.map_err(anyhow::Error::msg)?;
                let asked = reports.as_deref().and_then(|r| asked_of(r, &task, &own, from, &target, &ip));
                rows.push(Row { from: from.clone(), container: task.container.clone(), to: target.clone(), address: ip, stats, asked });
            }
        }
    }
    // Kept as a time series for `labctl report` (best effort: a probe works without Redis).
    if let Some(r) = store.as_mut() {
        for row in &rows {
            let s = &row.stats;
            let result = swarmlab::store::ProbeResult {
                time: chrono::Utc::now(),
                from: row.from.clone(),
                to: row.to.clone(),
                address: row.address.clone(),
                sent: s.sent,
                received: s.received,
                loss_percent: s.loss_percent,
                avg_ms: s.avg_ms,
            };
            let _ = r.add_probe(&lab, &result).await;
        }
    }
    match output {
        Output::Table if matrix => println!("{}", matrix_table(&senders, &rows)),
        Output::Table => println!("{}", rows_table(&rows)),
        Output::Json | Output::Yaml => {
            let v: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| serde_json::json!({"from": r.from, "container": r.container, "to": r.to, "address": r.address, "stats": r.stats, "asked": r.asked}))
                .collect();
            if matches!(output, Output::Json) { println!("{}", serde_json::to_string_pretty(&v)?) } else { print!("{}", serde_yaml_ng::to_string(&v)?) }
        }
    }
    if !skipped.is_empty() {
        eprintln!("no task on this node for {}: run `labctl probe {lab} --matrix` on their nodes too", skipped.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// What the lab asks of the round trip from `task` to `ip`: the network is the one of the
/// task's attachments whose subnet holds `ip`.
fn asked_of(
    reports: &[swarmlab::status::TaskShaping],
    task: &swarmlab::swarm::LocalTask,
    own: &[(String, Ipv4Addr, u8)],
    from: &str,
    to: &str,
    ip: &str,
) -> Option<Asked> {
    let target: Ipv4Addr = ip.parse().ok()?;
    task.networks.iter().find_map(|(network, _, address)| {
        let mine: Ipv4Addr = address.parse().ok()?;
        let (_, _, prefix) = own.iter().find(|(_, a, _)| *a == mine)?;
        Cidr::containing(mine, *prefix).contains(target).then(|| asked_round_trip(reports, (from, mine), (to, target), network))
    })
}

fn rows_table(rows: &[Row]) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["FROM", "TO", "ADDRESS", "SENT", "RECEIVED", "LOSS (ASKED)", "RTT MIN/AVG/MAX/MDEV (ms)", "ASKED RTT (ms)"]);
    for r in rows {
        let s = &r.stats;
        t.add_row([
            format!("{} ({})", r.from, r.container.get(..12).unwrap_or(&r.container)),
            r.to.clone(),
            r.address.clone(),
            s.sent.to_string(),
            s.received.to_string(),
            match r.asked {
                Some(a) => format!("{:.1}% ({:.1}%)", s.loss_percent, a.loss_percent),
                None => format!("{:.1}%", s.loss_percent),
            },
            format!("{:.2}/{:.2}/{:.2}/{:.2}", s.min_ms, s.avg_ms, s.max_ms, s.mdev_ms),
            r.asked.map(|a| format!("{:.2}", a.rtt_ms)).unwrap_or_else(|| "-".into()),
        ]);
    }
    t.to_string()
}

/// Senders down, targets across; each cell `measured ms / asked ms`, loss when there is any.
fn matrix_table(senders: &[String], rows: &[Row]) -> String {
    let targets: Vec<&String> = {
        let mut t: Vec<&String> = rows.iter().map(|r| &r.to).collect();
        t.sort();
        t.dedup();
        t
    };
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(std::iter::once("RTT ms (asked)".to_string()).chain(targets.iter().map(|s| s.to_string())));
    for from in senders {
        let mut line = vec![from.clone()];
        for to in &targets {
            let cell = rows.iter().find(|r| &r.from == from && &&r.to == to).map(|r| {
                let asked = r.asked.map(|a| format!(" ({:.1})", a.rtt_ms)).unwrap_or_default();
                let loss = if r.stats.loss_percent > 0.0 { format!(" {:.0}% lost", r.stats.loss_percent) } else { String::new() };
                format!("{:.1}{asked}{loss}", r.stats.avg_ms)
            });
            line.push(cell.unwrap_or_else(|| "-".into()));
        }
        t.add_row(line);
    }
    t.to_string()
}
