//! `labctl probe LAB SERVICE [--to SVC]` and `labctl probe LAB --matrix`: measured RTT and loss
//! from inside tasks, beside what the lab asks of each round trip. A sender with no task on
//! labctl's node is probed from by the agents of the nodes that have one (relayed as `labctl
//! exec`'s commands are, but served without `--allow-exec`: it runs only `ping`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;

use comfy_table::{presets::NOTHING, Table};
use swarmlab::exec_relay::TaskAction;
use swarmlab::shaping::measure::{asked_round_trip, probe_from, Asked, PingStats, Probed};
use swarmlab::spec::links::Cidr;
use swarmlab::swarm::DockerSwarm;

use crate::asked::ask_agents;
use crate::common::*;
use crate::relayed_tasks::{follow, stopped_agents, TaskSink};
use crate::tasks::{node_entered_here, Placement, Target};
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
    /// The sender's task: its container (12 characters) on this node, `service.slot@node` on
    /// another.
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
    // Targets come from labd's status unless named (`--to` probes a lab labd does not report).
    if let (None, Some(r), true) = (&status, store.as_mut(), to.is_empty()) {
        return Err(crate::common::no_such_lab(r, &lab, "probe").await);
    }
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
    let mut failed = false;
    let (node, node_id) = node_entered_here(&swarm).await;
    let local = match node_id {
        Some(_) => swarm.local_tasks_of(&lab).await?,
        None => Vec::new(),
    };
    for from in &senders {
        let targets: Vec<String> = if !to.is_empty() {
            to.clone()
        } else {
            anyhow::ensure!(!services.is_empty(), "no status for lab `{lab}`; name targets with --to");
            services.iter().filter(|s| *s != from).cloned().collect()
        };
        // One task per pair keeps a matrix quick; the single-service form probes all.
        let probed = match local.iter().find(|t| t.service == *from) {
            Some(task) => {
                let probed = probe_from(task.pid, &task.networks, &targets, count, interval, matrix).await.map_err(anyhow::Error::msg)?;
                vec![(task.container.get(..12).unwrap_or(&task.container).to_string(), Ok(probed))]
            }
            None => {
                let action = TaskAction::Probe { to: targets, count, interval_ms: interval, first_only: matrix };
                match probe_elsewhere(url, &swarm, &lab, from, action, &node, node_id.clone()).await {
                    Ok(probed) => probed,
                    Err(_) if matrix => {
                        skipped.push(from.clone());
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        for (task, probed) in probed {
            match probed {
                Ok(probed) => rows.extend(rows_of(from, &task, &probed, reports.as_deref())),
                Err(e) => {
                    eprintln!("labctl probe: from {task}: {e}");
                    failed = true;
                }
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
        eprintln!("no running task of {} found on any node (`labctl status {lab}`)", skipped.join(", "));
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The rows of what one task of `from` (`task`, as shown) measured.
fn rows_of(from: &str, task: &str, probed: &Probed, reports: Option<&[swarmlab::status::TaskShaping]>) -> Vec<Row> {
    probed
        .targets
        .iter()
        .map(|t| Row {
            from: from.to_string(),
            container: task.to_string(),
            to: t.to.clone(),
            address: t.address.clone(),
            stats: t.stats.clone(),
            asked: reports.and_then(|r| asked_of(r, probed, from, &t.to, &t.address)),
        })
        .collect()
}

/// Probes from the tasks of `from` on the other nodes, through their agents: what each task
/// measured (or why it could not), by the name it is shown by (`service.slot`).
async fn probe_elsewhere(url: &str, swarm: &DockerSwarm, lab: &str, from: &str, action: TaskAction, node: &str, node_id: Option<String>) -> anyhow::Result<Vec<(String, Result<Probed, String>)>> {
    let target = Target { service: from.to_string(), slot: None };
    let placed = Placement::of(swarm, url, lab, Some(&target), node).await;
    if !placed.ask_elsewhere() {
        return Err(placed.none_here("running task", lab, &target));
    }
    let Some(mut asked) = ask_agents(url, node_id, action, &placed, true, "labctl probe", "probed").await? else {
        return Err(placed.none_here("running task", lab, &target));
    };
    let withdraw = asked.withdrawer();
    let mut relayed = Relayed::default();
    let ended = follow(&mut asked.messages, &placed.expected_answers(), withdraw, stopped_agents(url), &mut relayed).await;
    asked.finish().await;
    if ended.is_empty() {
        return Err(placed.none_answered("running task", lab, &target));
    }
    Ok(ended
        .into_iter()
        .map(|(task, end)| {
            let output = relayed.output.remove(&task).unwrap_or_default();
            let probed = end.and_then(|_| serde_json::from_slice::<Probed>(&output).map_err(|e| format!("cannot read what its agent measured: {e}")));
            (task, probed)
        })
        .collect())
}

/// What the agents relay of each task: its measurements as JSON, gathered by the name the
/// task is shown by.
#[derive(Default)]
struct Relayed {
    output: BTreeMap<String, Vec<u8>>,
    /// (node, task) → the name it is shown by: `task`, or `task@node` for a second of one name.
    shown: BTreeMap<(String, String), String>,
}

impl TaskSink for Relayed {
    fn started(&mut self, node: &str, task: &str) -> String {
        let name = if self.output.contains_key(task) { format!("{task}@{node}") } else { task.to_string() };
        self.output.insert(name.clone(), vec![]);
        self.shown.insert((node.to_string(), task.to_string()), name.clone());
        name
    }

    fn output(&mut self, node: &str, task: &str, _stderr: bool, bytes: Vec<u8>) {
        if let Some(output) = self.shown.get(&(node.to_string(), task.to_string())).and_then(|name| self.output.get_mut(name)) {
            output.extend(bytes);
        }
    }

    fn ended(&mut self, _node: &str, _task: &str) {}
}

/// What the lab asks of the round trip from the task `probed` measured from to `ip`: the
/// network is the one of the task's attachments whose subnet holds `ip`.
fn asked_of(reports: &[swarmlab::status::TaskShaping], probed: &Probed, from: &str, to: &str, ip: &str) -> Option<Asked> {
    let target: Ipv4Addr = ip.parse().ok()?;
    probed.networks.iter().find_map(|(network, _, address)| {
        let mine: Ipv4Addr = address.parse().ok()?;
        let (_, _, prefix) = probed.own.iter().find(|(_, a, _)| *a == mine)?;
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
            format!("{} ({})", r.from, r.container),
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
    t.trim_fmt()
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
    t.trim_fmt()
}
