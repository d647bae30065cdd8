//! `labctl probe LAB SERVICE [--to SVC]`: measured RTT and loss from inside a task.

use std::process::ExitCode;

use anyhow::Context;
use comfy_table::{presets::NOTHING, Table};

use crate::common::*;
use crate::Output;


#[allow(clippy::too_many_arguments)] // one per flag of the subcommand
pub async fn run(url: &str, docker_host: Option<&str>, lab: &str, service: &str, to: Vec<String>, count: u32, interval: u32, output: Output) -> anyhow::Result<ExitCode> {
    use swarmlab::shaping::measure::{ping, resolve};
    let full = format!("{lab}_{service}");
    let swarm = swarmlab::swarm::DockerSwarm::connect(docker_host).await?;
    let Some(task) = swarm.local_task_of(lab, service).await? else {
        anyhow::bail!("no running task of {full} on this node: run `labctl probe` on a node that has one (`docker service ps {full}`)");
    };
    let (id, pid) = (task.container, task.pid);
    let targets = if to.is_empty() {
        let mut r = reader(url).await?;
        let status = r.status(lab).await?.with_context(|| format!("no status for lab `{lab}`; name targets with --to"))?;
        status.services.keys().filter(|s| s.as_str() != service).cloned().collect()
    } else {
        to
    };
    let mut rows = Vec::new();
    for target in targets {
        for ip in resolve(pid, &target).await.map_err(anyhow::Error::msg)? {
            let stats = ping(pid, &ip, count, interval).await.map_err(anyhow::Error::msg)?;
            rows.push((target.clone(), ip, stats));
        }
    }
    // Kept as a time series for `labctl report` (best effort: a probe works without Redis).
    if let Ok(mut r) = reader(url).await {
        for (target, ip, s) in &rows {
            let result = swarmlab::store::ProbeResult {
                time: chrono::Utc::now(),
                from: service.to_string(),
                to: target.clone(),
                address: ip.clone(),
                sent: s.sent,
                received: s.received,
                loss_percent: s.loss_percent,
                avg_ms: s.avg_ms,
            };
            let _ = r.add_probe(lab, &result).await;
        }
    }
    match output {
        Output::Table => {
            let mut t = Table::new();
            t.load_preset(NOTHING);
            t.set_header(["FROM", "TO", "ADDRESS", "SENT", "RECEIVED", "LOSS", "RTT MIN/AVG/MAX/MDEV (ms)"]);
            for (target, ip, s) in &rows {
                t.add_row([
                    format!("{service} ({})", &id[..12]),
                    target.clone(),
                    ip.clone(),
                    s.sent.to_string(),
                    s.received.to_string(),
                    format!("{:.1}%", s.loss_percent),
                    format!("{:.2}/{:.2}/{:.2}/{:.2}", s.min_ms, s.avg_ms, s.max_ms, s.mdev_ms),
                ]);
            }
            println!("{t}");
        }
        Output::Json | Output::Yaml => {
            let v: Vec<serde_json::Value> = rows
                .iter()
                .map(|(target, ip, s)| serde_json::json!({"from": service, "container": id, "to": target, "address": ip, "stats": s}))
                .collect();
            if matches!(output, Output::Json) { println!("{}", serde_json::to_string_pretty(&v)?) } else { print!("{}", serde_yaml_ng::to_string(&v)?) }
        }
    }
    Ok(ExitCode::SUCCESS)
}

