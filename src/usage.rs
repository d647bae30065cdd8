//! What each task uses: CPU, memory, and traffic on each of the lab's networks, sampled by the
//! node agent of the task's node and written to Redis (`labctl top`), and counted for
//! Prometheus. `docker stats` shows a node's containers by container name and interface;
//! this is every node's tasks by the lab's own names, traffic by the lab's network.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An interface's counters since its container started (the kernel's, as Docker reads them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// One sample of a container, in Docker's terms (interfaces by name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSample {
    /// When Docker read the counters (its collector's tick), so that rates divide by the time
    /// between two reads rather than between two requests.
    pub read_at: Option<DateTime<Utc>>,
    /// CPU time of all its processes since it started.
    pub cpu_seconds: f64,
    /// The cores its CPU quota allows (`None`: no quota, or not known).
    pub cpu_limit_cores: Option<f64>,
    /// Memory in use, less the page cache the kernel can reclaim (what `docker stats` shows).
    pub memory_bytes: u64,
    /// Its memory limit (the node's memory when it has none).
    pub memory_limit_bytes: Option<u64>,
    pub interfaces: BTreeMap<String, InterfaceCounters>,
}

/// The traffic of one task on one of the lab's networks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkUsage {
    pub network: String,
    pub interface: String,
    #[serde(flatten)]
    pub counters: InterfaceCounters,
    /// Over the agent's last interval (none at a task's first sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bytes_per_second: Option<f64>,
}

/// What one task uses (written by the agent of the task's node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsage {
    pub container: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    pub node: String,
    pub sampled_at: DateTime<Utc>,
    pub cpu_seconds: f64,
    /// CPU over the agent's last interval, in cores (1.0 = one core busy; `docker stats`
    /// shows it as 100%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<f64>,
    /// The cores its CPU quota allows (a service's `resources.cpus`, a schedule's `cpus` cap);
    /// absent with none, or where the agent reads Docker's stats (which do not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_cores: Option<f64>,
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    pub networks: Vec<NetworkUsage>,
}

impl TaskUsage {
    /// The task's name as `labctl` shows it: `service.slot`, or `service@node` for a task of a
    /// global service.
    pub fn task_name(&self) -> String {
        crate::status::task_name(&self.service, self.slot, &self.node)
    }

    /// From one sample: each of the lab's networks by the interface it is on in the task
    /// (`interfaces`: network → interface); rates against `previous`, the sample before of
    /// the same container.
    pub fn from_sample(identity: TaskIdentity, sample: &ContainerSample, interfaces: &BTreeMap<String, String>, requested_at: DateTime<Utc>, previous: Option<&TaskUsage>) -> TaskUsage {
        let sampled_at = sample.read_at.unwrap_or(requested_at);
        let elapsed = previous.map(|p| (sampled_at - p.sampled_at).num_milliseconds() as f64 / 1000.0).filter(|s| *s > 0.0);
        let rate = |now: u64, before: Option<u64>| -> Option<f64> {
            let (elapsed, before) = (elapsed?, before?);
            // A counter that went back (an interface that came again) has no rate this time.
            (now >= before).then(|| (now - before) as f64 / elapsed)
        };
        let networks = interfaces
            .iter()
            .filter_map(|(network, interface)| {
                let counters = *sample.interfaces.get(interface)?;
                let before = previous.and_then(|p| p.networks.iter().find(|n| &n.network == network)).map(|n| n.counters);
                Some(NetworkUsage {
                    network: network.clone(),
                    interface: interface.clone(),
                    counters,
                    rx_bytes_per_second: rate(counters.rx_bytes, before.map(|b| b.rx_bytes)),
                    tx_bytes_per_second: rate(counters.tx_bytes, before.map(|b| b.tx_bytes)),
                })
            })
            .collect();
        let cpu_cores = elapsed.zip(previous).and_then(|(elapsed, p)| (sample.cpu_seconds >= p.cpu_seconds).then(|| (sample.cpu_seconds - p.cpu_seconds) / elapsed));
        TaskUsage {
            container: identity.container,
            service: identity.service,
            slot: identity.slot,
            node: identity.node,
            sampled_at,
            cpu_seconds: sample.cpu_seconds,
            cpu_cores,
            cpu_limit_cores: sample.cpu_limit_cores,
            memory_bytes: sample.memory_bytes,
            memory_limit_bytes: sample.memory_limit_bytes,
            networks,
        }
    }
}

/// What a service's tasks on one node used over the agent's last interval (their sum).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUsage {
    pub tasks: u32,
    pub cpu_cores: f64,
    pub memory_bytes: u64,
    /// Per lab network: bytes per second received and sent.
    pub networks: BTreeMap<String, [f64; 2]>,
}

/// One agent's sample of a lab, by service: the history `labctl report` plots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    pub node: String,
    pub at: DateTime<Utc>,
    /// The agent's sampling interval: records of several nodes within one are summed.
    pub every_seconds: f64,
    pub services: BTreeMap<String, ServiceUsage>,
}

impl ServiceUsage {
    /// One task's part: `None` at its first sample (no rates yet).
    fn of_task(task: &TaskUsage) -> Option<ServiceUsage> {
        let networks = task.networks.iter().map(|n| (n.network.clone(), [n.rx_bytes_per_second.unwrap_or(0.0), n.tx_bytes_per_second.unwrap_or(0.0)])).collect();
        Some(ServiceUsage { tasks: 1, cpu_cores: task.cpu_cores?, memory_bytes: task.memory_bytes, networks })
    }

    fn add(&mut self, other: &ServiceUsage) {
        self.tasks += other.tasks;
        self.cpu_cores += other.cpu_cores;
        self.memory_bytes += other.memory_bytes;
        for (net, [rx, tx]) in &other.networks {
            let rates = self.networks.entry(net.clone()).or_default();
            rates[0] += rx;
            rates[1] += tx;
        }
    }
}

/// The sum per service of the tasks that have rates (a task's first sample has none), and the
/// latest of their samples' times (`None` when none has rates).
pub fn by_service<'a>(tasks: impl Iterator<Item = &'a TaskUsage>) -> (Option<DateTime<Utc>>, BTreeMap<String, ServiceUsage>) {
    let mut services: BTreeMap<String, ServiceUsage> = BTreeMap::new();
    let mut at: Option<DateTime<Utc>> = None;
    for task in tasks {
        let Some(part) = ServiceUsage::of_task(task) else { continue };
        at = at.max(Some(task.sampled_at));
        services.entry(task.service.clone()).or_default().add(&part);
    }
    (at, services)
}

impl UsageRecord {
    /// The sum per service of the tasks that have rates; `None` when none has.
    pub fn of<'a>(node: &str, every_seconds: f64, tasks: impl Iterator<Item = &'a TaskUsage>) -> Option<UsageRecord> {
        let (at, services) = by_service(tasks);
        Some(UsageRecord { node: node.to_string(), at: at?, every_seconds, services })
    }
}

/// A service's usage over time, summed over nodes: (seconds since the first record, value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceSeries {
    pub cpu_cores: Vec<(f64, f64)>,
    /// Per (network, "received" or "sent"): bytes per second.
    pub traffic: BTreeMap<(String, &'static str), Vec<(f64, f64)>>,
}

/// The records as series per service. Records of different nodes within one sampling interval
/// of each other are one point (their sum), at the interval's time.
pub fn service_series(records: &[UsageRecord]) -> (Option<DateTime<Utc>>, BTreeMap<String, ServiceSeries>) {
    let Some(start) = records.iter().map(|r| r.at).min() else { return (None, BTreeMap::new()) };
    let mut buckets: BTreeMap<i64, BTreeMap<String, ServiceUsage>> = BTreeMap::new();
    let mut every = 1.0_f64;
    for r in records {
        every = every.max(r.every_seconds);
    }
    for r in records {
        let offset = (r.at - start).num_milliseconds() as f64 / 1000.0;
        let bucket = buckets.entry((offset / every).round() as i64).or_default();
        for (name, u) in &r.services {
            bucket.entry(name.clone()).or_default().add(u);
        }
    }
    let mut out: BTreeMap<String, ServiceSeries> = BTreeMap::new();
    for (bucket, services) in buckets {
        let t = bucket as f64 * every;
        for (name, u) in services {
            let series = out.entry(name).or_default();
            series.cpu_cores.push((t, u.cpu_cores));
            for (net, [rx, tx]) in u.networks {
                series.traffic.entry((net.clone(), "received")).or_default().push((t, rx));
                series.traffic.entry((net, "sent")).or_default().push((t, tx));
            }
        }
    }
    (Some(start), out)
}

/// Memory as `docker stats` shows it (powers of 1024).
pub fn binary_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n}B") } else { format!("{value:.1}{}", units[unit]) }
}

/// Traffic as `docker stats` shows it (powers of 1000).
pub fn decimal_bytes(n: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{value:.0}B") } else { format!("{value:.1}{}", units[unit]) }
}

/// Which task a sample is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskIdentity {
    /// 12-character container id, as the agent's other reports name it.
    pub container: String,
    pub service: String,
    pub slot: Option<u64>,
    pub node: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> TaskIdentity {
        TaskIdentity { container: "0123456789ab".into(), service: "kv".into(), slot: Some(2), node: "n1".into() }
    }

    fn sample(cpu: f64, rx: u64, tx: u64) -> ContainerSample {
        let eth1 = InterfaceCounters { rx_bytes: rx, tx_bytes: tx, rx_packets: 10, tx_packets: 20, ..Default::default() };
        let eth0 = InterfaceCounters { rx_bytes: 7, ..Default::default() };
        ContainerSample { read_at: None, cpu_seconds: cpu, cpu_limit_cores: None, memory_bytes: 4 << 20, memory_limit_bytes: Some(64 << 20), interfaces: BTreeMap::from([("eth0".into(), eth0), ("eth1".into(), eth1)]) }
    }

    #[test]
    fn networks_are_named_by_the_lab_and_rates_come_from_the_sample_before() {
        let interfaces = BTreeMap::from([("dht".to_string(), "eth1".to_string())]);
        let t0 = Utc::now();
        let first = TaskUsage::from_sample(identity(), &sample(1.0, 1000, 500), &interfaces, t0, None);
        assert_eq!(first.task_name(), "kv.2");
        assert_eq!(first.networks.len(), 1, "only the lab's networks: {first:?}");
        assert_eq!((first.networks[0].network.as_str(), first.networks[0].counters.rx_bytes), ("dht", 1000));
        assert_eq!((first.cpu_cores, first.networks[0].rx_bytes_per_second), (None, None), "no rate at the first sample");

        let second = TaskUsage::from_sample(identity(), &sample(1.5, 3000, 1500), &interfaces, t0 + chrono::Duration::seconds(2), Some(&first));
        assert_eq!(second.cpu_cores, Some(0.25));
        assert_eq!((second.networks[0].rx_bytes_per_second, second.networks[0].tx_bytes_per_second), (Some(1000.0), Some(500.0)));

        // Counters that went back (the interface came again) give no rate, not a huge one.
        let third = TaskUsage::from_sample(identity(), &sample(2.0, 10, 1600), &interfaces, t0 + chrono::Duration::seconds(4), Some(&second));
        assert_eq!((third.networks[0].rx_bytes_per_second, third.networks[0].tx_bytes_per_second), (None, Some(50.0)));
    }

    #[test]
    fn rates_divide_by_the_time_between_docker_s_reads() {
        let interfaces = BTreeMap::from([("dht".to_string(), "eth1".to_string())]);
        let t0 = Utc::now();
        let read = |at: DateTime<Utc>, rx: u64| ContainerSample { read_at: Some(at), ..sample(1.0, rx, 0) };
        let first = TaskUsage::from_sample(identity(), &read(t0, 0), &interfaces, t0 + chrono::Duration::milliseconds(900), None);
        assert_eq!(first.sampled_at, t0);
        // Requested 1 s later, but Docker read the counters 2 s after the first read.
        let second = TaskUsage::from_sample(identity(), &read(t0 + chrono::Duration::seconds(2), 4000), &interfaces, t0 + chrono::Duration::milliseconds(1900), Some(&first));
        assert_eq!(second.networks[0].rx_bytes_per_second, Some(2000.0));
    }

    #[test]
    fn records_sum_a_service_s_tasks_and_the_nodes_within_an_interval() {
        let interfaces = BTreeMap::from([("dht".to_string(), "eth1".to_string())]);
        let t0 = Utc::now();
        let task = |slot: u64, node: &str, at: i64, rx: u64| {
            let first = TaskUsage::from_sample(TaskIdentity { slot: Some(slot), node: node.into(), ..identity() }, &sample(1.0, 0, 0), &interfaces, t0 + chrono::Duration::seconds(at - 5), None);
            TaskUsage::from_sample(TaskIdentity { slot: Some(slot), node: node.into(), ..identity() }, &sample(1.5, rx, 0), &interfaces, t0 + chrono::Duration::seconds(at), Some(&first))
        };
        let fresh = TaskUsage::from_sample(TaskIdentity { slot: Some(9), ..identity() }, &sample(1.0, 0, 0), &interfaces, t0, None);
        let n1 = UsageRecord::of("n1", 5.0, [task(1, "n1", 0, 5000), task(2, "n1", 0, 10_000), fresh.clone()].iter()).unwrap();
        assert_eq!((n1.services["kv"].tasks, n1.services["kv"].cpu_cores, n1.services["kv"].networks["dht"]), (2, 0.2, [3000.0, 0.0]), "{n1:?}");
        assert_eq!(UsageRecord::of("n1", 5.0, [fresh].iter()), None, "no task with a rate yet");
        // n2 samples 1 s after n1 (one interval: summed), then both again 5 s later.
        let n2 = UsageRecord::of("n2", 5.0, [task(3, "n2", 1, 5000)].iter()).unwrap();
        let later = UsageRecord::of("n1", 5.0, [task(1, "n1", 5, 500)].iter()).unwrap();
        let (start, series) = service_series(&[n1, n2, later]);
        assert_eq!(start, Some(t0));
        let kv = &series["kv"];
        assert_eq!(kv.traffic[&("dht".to_string(), "received")], [(0.0, 4000.0), (5.0, 100.0)]);
        assert_eq!(kv.cpu_cores.len(), 2);
    }

    #[test]
    fn an_interface_docker_does_not_report_is_left_out_and_the_json_is_camel_case() {
        let interfaces = BTreeMap::from([("dht".to_string(), "eth1".to_string()), ("mgmt".to_string(), "eth9".to_string())]);
        let usage = TaskUsage::from_sample(TaskIdentity { slot: None, ..identity() }, &sample(1.0, 1, 2), &interfaces, Utc::now(), None);
        assert_eq!(usage.task_name(), "kv@n1");
        assert_eq!(usage.networks.iter().map(|n| n.network.as_str()).collect::<Vec<_>>(), ["dht"]);
        let json = serde_json::to_value(&usage).unwrap();
        assert_eq!(json["networks"][0]["rxBytes"], 1);
        assert_eq!(json["memoryBytes"], 4 << 20);
        let back: TaskUsage = serde_json::from_value(json).unwrap();
        assert_eq!(back, usage);
    }
}
