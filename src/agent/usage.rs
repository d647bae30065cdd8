//! Samples what this node's tasks use (CPU, memory, traffic per lab network) every interval,
//! apart from the shaping passes: from the kernel's files where this agent can read them
//! (`cgroup`), else from Docker's stats, which answers at its collector's next tick, up to a
//! second later (a shaping pass must not wait for that).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::Utc;

use crate::metrics::SharedMetrics;
use crate::shaping::netns::interface_for;
use crate::store::keys;
use crate::swarm::{DockerSwarm, SwarmError};
use crate::usage::{TaskIdentity, TaskUsage, UsageRecord};

use super::cgroup::CgroupFiles;

/// A task of this node, as the sampler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledTask {
    pub container: String,
    pub lab: String,
    pub service: String,
    pub slot: Option<u64>,
    pub pid: i64,
    /// (network short name, MAC, IPv4)
    pub networks: Vec<(String, String, String)>,
}

/// What the agent's last pass knew: its tasks, and the labs Redis listed (only theirs are
/// written, so a deleted lab's key does not come back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub tasks: Vec<SampledTask>,
    pub labs: BTreeSet<String>,
}

pub struct UsageSampler {
    swarm: DockerSwarm,
    redis_url: String,
    node: String,
    every: Duration,
    metrics: SharedMetrics,
    redis: Option<redis::aio::MultiplexedConnection>,
    /// Each container's lab networks by interface (found once: they stay for its life).
    interfaces: HashMap<String, BTreeMap<String, String>>,
    /// Each container's cgroup and interface files (`None`: not readable here, Docker is asked),
    /// found once.
    files: HashMap<String, Option<CgroupFiles>>,
    /// Whether the log has said that some task's usage comes from Docker (said once).
    told_fallback: bool,
    /// Each container's last sample, for rates.
    last: HashMap<String, TaskUsage>,
    /// The entries this sampler wrote, by lab, so those of tasks gone are removed.
    published: BTreeMap<String, BTreeSet<String>>,
}

impl UsageSampler {
    pub fn new(swarm: DockerSwarm, redis_url: String, node: String, every: Duration, metrics: SharedMetrics) -> UsageSampler {
        UsageSampler { swarm, redis_url, node, every, metrics, redis: None, interfaces: HashMap::new(), files: HashMap::new(), told_fallback: false, last: HashMap::new(), published: BTreeMap::new() }
    }

    pub async fn run(mut self, mut tasks: tokio::sync::watch::Receiver<Snapshot>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let snapshot = tasks.borrow_and_update().clone();
            let result = self.sample(snapshot).await;
            if result.is_err() {
                self.redis = None;
            }
            match result {
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot write task usage to Redis; retrying every interval");
                    failing = true;
                }
                Ok(()) => failing = false,
                Err(_) => {}
            }
        }
    }

    /// Samples every task at once, counts it for Prometheus, and writes it to Redis.
    async fn sample(&mut self, snapshot: Snapshot) -> Result<(), String> {
        // Bounded: a container removed during the request may leave Docker's answer hanging.
        let limit = self.every.max(Duration::from_secs(2)) * 2;
        for t in &snapshot.tasks {
            if !self.files.contains_key(&t.container) {
                let found = CgroupFiles::locate(t.pid);
                tracing::debug!(container = %t.container, from_files = found.is_some(), "where a task's usage is read");
                if found.is_none() && !self.told_fallback {
                    tracing::info!(container = %t.container, "a task's cgroup files are not readable here: its usage comes from Docker's stats, at more CPU for dockerd (an agent in a container needs the host's /sys/fs/cgroup mounted, LABD_CGROUP)");
                    self.told_fallback = true;
                }
                self.files.insert(t.container.clone(), found);
            }
        }
        let (swarm, files) = (&self.swarm, &self.files);
        let samples = futures::future::join_all(snapshot.tasks.iter().map(|t| async move {
            match files.get(&t.container).and_then(Option::as_ref) {
                // A container that ended meanwhile took its files with it.
                Some(f) => f.read().map_err(|e| SwarmError::NotFound(format!("container {} ({e})", t.container))),
                None => tokio::time::timeout(limit, swarm.task_sample(&t.container)).await.unwrap_or_else(|_| Err(SwarmError::NotFound(format!("container {} (no stats in time)", t.container)))),
            }
        }))
        .await;
        let at = Utc::now();
        let mut usage: Vec<(String, TaskUsage)> = Vec::new();
        for (task, sample) in snapshot.tasks.iter().zip(samples) {
            let sample = match sample {
                Ok(s) => s,
                Err(SwarmError::NotFound(_)) => continue, // ended meanwhile
                Err(e) => {
                    tracing::debug!(container = %task.container, error = %e, "cannot read a task's stats");
                    continue;
                }
            };
            let interfaces = match self.interfaces.get(&task.container) {
                Some(known) => known.clone(),
                None => {
                    let mut found = BTreeMap::new();
                    for (network, mac, ip) in &task.networks {
                        if let Ok(Some(interface)) = interface_for(task.pid, mac, ip).await {
                            found.insert(network.clone(), interface);
                        }
                    }
                    // Kept once every network is found; else looked for again next time.
                    if found.len() == task.networks.len() {
                        self.interfaces.insert(task.container.clone(), found.clone());
                    }
                    found
                }
            };
            let identity = TaskIdentity { container: short(&task.container), service: task.service.clone(), slot: task.slot, node: self.node.clone() };
            let now = TaskUsage::from_sample(identity, &sample, &interfaces, at, self.last.get(&task.container));
            self.last.insert(task.container.clone(), now.clone());
            usage.push((task.lab.clone(), now));
        }
        let live: BTreeSet<&String> = snapshot.tasks.iter().map(|t| &t.container).collect();
        self.interfaces.retain(|id, _| live.contains(id));
        self.files.retain(|id, _| live.contains(id));
        self.last.retain(|id, _| live.contains(id));
        tracing::debug!(tasks = snapshot.tasks.len(), sampled = usage.len(), "task usage sampled");
        self.metrics.task_usage(usage.iter().map(|(lab, u)| (lab.as_str(), u)));
        self.publish(&usage, &snapshot.labs).await
    }

    /// Writes each lab's entries and removes those of its tasks gone from this node. Per lab
    /// in one script that first checks the lab is still listed: a lab deleted between the
    /// agent's read and this write does not get its key back.
    async fn publish(&mut self, usage: &[(String, TaskUsage)], labs: &BTreeSet<String>) -> Result<(), String> {
        let mut now_published: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut writes: BTreeMap<&String, Vec<(&String, String)>> = BTreeMap::new();
        for (lab, u) in usage.iter().filter(|(lab, _)| labs.contains(lab)) {
            writes.entry(lab).or_default().push((&u.container, serde_json::to_string(u).unwrap_or_default()));
            now_published.entry(lab.clone()).or_default().insert(u.container.clone());
        }
        // Entries of an agent that stops last a few intervals at most.
        let ttl = (self.every.as_secs() * 5).max(30);
        let gone: Vec<(String, Vec<String>)> = self
            .published
            .iter()
            .map(|(lab, containers)| (lab.clone(), containers.iter().filter(|c| !now_published.get(lab).is_some_and(|n| n.contains(*c))).cloned().collect::<Vec<_>>()))
            .filter(|(_, gone)| !gone.is_empty())
            .collect();
        let (node, every) = (self.node.clone(), self.every.as_secs_f64());
        let conn = self.connection().await?;
        for (lab, containers) in gone {
            let removed: redis::RedisResult<()> = redis::cmd("HDEL").arg(keys::usage(&lab)).arg(containers).query_async(conn).await;
            removed.map_err(|e| e.to_string())?;
        }
        let script = redis::Script::new(WRITE_IF_LISTED);
        for (lab, entries) in writes {
            let tasks = usage.iter().filter(|(l, _)| l == lab).map(|(_, u)| u);
            let record = UsageRecord::of(&node, every, tasks).and_then(|r| serde_json::to_string(&r).ok()).unwrap_or_default();
            let mut invocation = script.prepare_invoke();
            invocation.key(keys::usage(lab)).key(keys::LABS).key(keys::usage_history(lab)).arg(lab).arg(ttl).arg(record).arg(USAGE_HISTORY_LEN);
            for (container, json) in entries {
                invocation.arg(container).arg(json);
            }
            let written: redis::RedisResult<i64> = invocation.invoke_async(conn).await;
            written.map_err(|e| e.to_string())?;
        }
        self.published = now_published;
        Ok(())
    }

    async fn connection(&mut self) -> Result<&mut redis::aio::MultiplexedConnection, String> {
        if self.redis.is_none() {
            self.redis = Some(super::connect_redis(&self.redis_url).await?);
        }
        self.redis.as_mut().ok_or_else(|| "no redis".to_string())
    }
}

/// KEYS: the lab's usage hash, the set of labs, the lab's usage history; ARGV: the lab, the
/// TTL in seconds, the history record (empty: none), the history's length, then container and
/// JSON pairs.
const WRITE_IF_LISTED: &str = r#"
if redis.call("SISMEMBER", KEYS[2], ARGV[1]) == 0 then return 0 end
for i = 5, #ARGV, 2 do redis.call("HSET", KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call("EXPIRE", KEYS[1], ARGV[2])
if ARGV[3] ~= "" then redis.call("XADD", KEYS[3], "MAXLEN", "~", ARGV[4], "*", "usage", ARGV[3]) end
return 1
"#;

/// Records kept per lab (all nodes): seven hours of one node at 5 s.
const USAGE_HISTORY_LEN: u32 = 5000;

fn short(container: &str) -> String {
    container[..12.min(container.len())].to_string()
}
