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
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    pub networks: Vec<NetworkUsage>,
}

impl TaskUsage {
    /// The task's name as `labctl` shows it: `service.slot`, or `service@node` for a task of a
    /// global service.
    pub fn task_name(&self) -> String {
        match self.slot {
            Some(slot) => format!("{}.{slot}", self.service),
            None => format!("{}@{}", self.service, self.node),
        }
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
            memory_bytes: sample.memory_bytes,
            memory_limit_bytes: sample.memory_limit_bytes,
            networks,
        }
    }
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
        ContainerSample { read_at: None, cpu_seconds: cpu, memory_bytes: 4 << 20, memory_limit_bytes: Some(64 << 20), interfaces: BTreeMap::from([("eth0".into(), eth0), ("eth1".into(), eth1)]) }
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
