//! One sample of what a task's container uses, from Docker's stats (the cgroup and the
//! container's interfaces, read by the engine, so cgroup v1 and v2 look the same here).

use std::collections::BTreeMap;

use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptionsBuilder;
use futures::StreamExt;

use super::local::container_err;
use super::{DockerSwarm, SwarmError};
use crate::usage::{ContainerSample, InterfaceCounters};

impl DockerSwarm {
    /// The container's CPU time, memory and interface counters now. Docker answers a one-shot
    /// request at its collector's next tick (up to a second): callers ask for tasks at once.
    pub async fn task_sample(&self, container: &str) -> Result<ContainerSample, SwarmError> {
        let options = StatsOptionsBuilder::default().stream(false).one_shot(true).build();
        let mut stream = Box::pin(self.docker().stats(container, Some(options)));
        match stream.next().await {
            Some(Ok(stats)) => Ok(sample_of(&stats)),
            Some(Err(e)) => Err(container_err("read container stats", container)(e)),
            None => Err(SwarmError::NotFound(format!("container {container}"))),
        }
    }
}

/// Docker's stats in our terms. Memory is what `docker stats` shows: the usage less the
/// inactive page cache (`total_inactive_file` under cgroup v1, `inactive_file` under v2).
pub(crate) fn sample_of(stats: &ContainerStatsResponse) -> ContainerSample {
    let memory = stats.memory_stats.as_ref();
    let usage = memory.and_then(|m| m.usage).unwrap_or(0);
    let cache_stat = |name: &str| memory.and_then(|m| m.stats.as_ref()).and_then(|s| s.get(name)).copied();
    let reclaimable = cache_stat("total_inactive_file").or_else(|| cache_stat("inactive_file")).filter(|c| *c < usage).unwrap_or(0);
    let cpu_ns = stats.cpu_stats.as_ref().and_then(|c| c.cpu_usage.as_ref()).and_then(|u| u.total_usage).unwrap_or(0);
    let interfaces: BTreeMap<String, InterfaceCounters> = stats
        .networks
        .iter()
        .flatten()
        .map(|(name, n)| {
            let counters = InterfaceCounters {
                rx_bytes: n.rx_bytes.unwrap_or(0),
                tx_bytes: n.tx_bytes.unwrap_or(0),
                rx_packets: n.rx_packets.unwrap_or(0),
                tx_packets: n.tx_packets.unwrap_or(0),
                rx_dropped: n.rx_dropped.unwrap_or(0),
                tx_dropped: n.tx_dropped.unwrap_or(0),
            };
            (name.clone(), counters)
        })
        .collect();
    // Docker sends its zero time when it has read nothing yet.
    let read_at = stats.read.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&chrono::Utc)).filter(|t| t.timestamp() > 0);
    ContainerSample {
        read_at,
        cpu_seconds: cpu_ns as f64 / 1e9,
        // Docker's stats do not carry the quota.
        cpu_limit_cores: None,
        memory_bytes: usage - reclaimable,
        memory_limit_bytes: memory.and_then(|m| m.limit).filter(|l| *l > 0),
        interfaces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_20_10_stats_under_cgroup_v1_read_as_docker_stats_shows_them() {
        let stats: ContainerStatsResponse = serde_json::from_str(include_str!("../../tests/fixtures/docker-stats-cgroup-v1.json")).unwrap();
        let sample = sample_of(&stats);
        assert_eq!(sample.memory_bytes, 1_323_008 - 118_784, "usage less total_inactive_file");
        assert_eq!(sample.memory_limit_bytes, Some(25_275_973_632));
        assert!((sample.cpu_seconds - 0.031_882_523).abs() < 1e-9, "{}", sample.cpu_seconds);
        assert_eq!(sample.interfaces.get("eth0").map(|c| (c.rx_bytes, c.rx_packets)), Some((876, 10)));
        assert_eq!(sample.read_at.map(|t| t.to_rfc3339()), Some("2026-12-02T11:55:16.788256872+00:00".to_string()));
    }

    #[test]
    fn cgroup_v2_names_the_cache_inactive_file() {
        let stats: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000u64}},
            "memory_stats": {"usage": 10_000_000, "limit": 0, "stats": {"inactive_file": 4_000_000, "anon": 5_000_000}},
        }))
        .unwrap();
        let sample = sample_of(&stats);
        assert_eq!((sample.cpu_seconds, sample.memory_bytes, sample.memory_limit_bytes), (2.5, 6_000_000, None));
        assert!(sample.interfaces.is_empty(), "a container without networks (or stats without them)");
    }
}
