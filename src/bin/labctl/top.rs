//! `labctl top LAB [-o json|yaml] [--watch]`: what each task of the lab uses, on every node,
//! as the agent of its node last sampled it (CPU, memory, traffic on each of the lab's
//! networks): `docker stats` for a lab, by its own names.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use comfy_table::presets::NOTHING;
use comfy_table::Table;
use swarmlab::usage::{binary_bytes, decimal_bytes, TaskUsage};

use crate::Output;

pub async fn run(url: &str, lab: &str, output: Output, watch: bool) -> anyhow::Result<ExitCode> {
    crate::common::once_or_watched(url, watch, async |r| {
        if r.status(lab).await?.is_none() {
            return Err(crate::common::no_such_lab(r, lab, "top").await);
        }
        let mut usage = r.task_usage(lab).await?;
        usage.sort_by(|a, b| (&a.service, a.slot, &a.node).cmp(&(&b.service, b.slot, &b.node)));
        Ok(match output {
            Output::Table if usage.is_empty() => format!(
                "no task of `{lab}` sampled yet: each node's agent samples its tasks every --usage-interval (5s unless set; 0s turns it off)"
            ),
            Output::Table => usage_table(&usage, Utc::now()),
            Output::Json => serde_json::to_string_pretty(&usage)?,
            Output::Yaml => serde_yaml_ng::to_string(&usage)?,
        })
    })
    .await
}

/// CPU as `docker stats` shows it (100% = one core), with the quota when there is one:
/// `19.8% of 20%` (a schedule's `cpus` cap, or the service's own limit).
fn cpu_cell(cores: Option<f64>, limit: Option<f64>) -> String {
    let used = cores.map_or_else(|| "-".to_string(), |c| format!("{:.1}%", c * 100.0));
    match limit {
        Some(l) => format!("{used} of {}%", (l * 1000.0).round() / 10.0),
        None => used,
    }
}

/// One row per task and network; the task's own columns on its first row only.
fn usage_table(usage: &[TaskUsage], now: DateTime<Utc>) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["TASK", "NODE", "CPU", "MEMORY", "NETWORK", "RECEIVE/s", "SEND/s", "RECEIVED", "SENT", "SAMPLED"]);
    for u in usage {
        let task = [
            u.task_name(),
            u.node.clone(),
            cpu_cell(u.cpu_cores, u.cpu_limit_cores),
            binary_bytes(u.memory_bytes),
        ];
        let sampled = format!("{}s ago", (now - u.sampled_at).num_seconds().max(0));
        let rate = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{}/s", decimal_bytes(r)));
        let networks: Vec<[String; 5]> = u
            .networks
            .iter()
            .map(|n| [n.network.clone(), rate(n.rx_bytes_per_second), rate(n.tx_bytes_per_second), decimal_bytes(n.counters.rx_bytes as f64), decimal_bytes(n.counters.tx_bytes as f64)])
            .collect();
        if networks.is_empty() {
            t.add_row(task.iter().cloned().chain(["-".to_string(), String::new(), String::new(), String::new(), String::new(), sampled]).collect::<Vec<_>>());
            continue;
        }
        for (i, net) in networks.into_iter().enumerate() {
            let own: Vec<String> = if i == 0 { task.to_vec() } else { vec![String::new(); 4] };
            let when = if i == 0 { sampled.clone() } else { String::new() };
            t.add_row(own.into_iter().chain(net).chain([when]).collect::<Vec<_>>());
        }
    }
    t.trim_fmt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmlab::usage::{InterfaceCounters, NetworkUsage};

    #[test]
    fn a_row_per_task_and_network_in_docker_stats_units() {
        let now = Utc::now();
        let net = |network: &str, rx: u64, rate: Option<f64>| NetworkUsage {
            network: network.into(),
            interface: "eth0".into(),
            counters: InterfaceCounters { rx_bytes: rx, tx_bytes: 2_500, ..Default::default() },
            rx_bytes_per_second: rate,
            tx_bytes_per_second: rate.map(|r| r / 2.0),
        };
        let kv = TaskUsage {
            container: "c1".into(),
            service: "kv".into(),
            slot: Some(1),
            node: "n1".into(),
            sampled_at: now - chrono::Duration::seconds(3),
            cpu_cores: Some(0.125),
            cpu_limit_cores: Some(0.2),
            memory_bytes: 3 << 20,
            networks: vec![net("dht", 1_234_567, Some(12_000.0)), net("mgmt", 10, None)],
            ..Default::default()
        };
        let mon = TaskUsage { container: "c2".into(), service: "mon".into(), slot: None, node: "n2".into(), sampled_at: now, memory_bytes: 900, ..Default::default() };
        let text = usage_table(&[kv, mon], now);
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["TASK", "NODE", "CPU", "MEMORY", "NETWORK", "RECEIVE/s", "SEND/s", "RECEIVED", "SENT", "SAMPLED"]);
        assert_eq!(rows[1], ["kv.1", "n1", "12.5%", "of", "20%", "3.0MiB", "dht", "12.0kB/s", "6.0kB/s", "1.2MB", "2.5kB", "3s", "ago"]);
        assert_eq!(rows[2], ["mgmt", "-", "-", "10B", "2.5kB"], "{text}");
        assert_eq!(rows[3], ["mon@n2", "n2", "-", "900B", "-", "0s", "ago"], "{text}");
    }
}
