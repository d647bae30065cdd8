//! A lab's tasks found by the names of the lab (`raft`, `raft.2`) on the node whose Docker is
//! asked, for the subcommands that reach into task containers (`exec`, `cp`, `capture`): Docker acts only
//! on its own node's containers, so the tasks elsewhere are named with their nodes (from Swarm
//! on a manager, from the agents' reports on a worker).

use anyhow::Context;
use swarmlab::swarm::{DockerSwarm, LabTask};

/// The tasks asked for: a service's, or the one in a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub slot: Option<u64>,
}

impl std::str::FromStr for Target {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Target> {
        // Service names are DNS labels (no dots), so the first dot starts the slot.
        match text.split_once('.') {
            None => Ok(Target { service: text.to_string(), slot: None }),
            Some((service, slot)) => {
                let slot = slot.parse().with_context(|| format!("`{text}`: after the dot comes a slot number, as in `{service}.1`"))?;
                Ok(Target { service: service.to_string(), slot: Some(slot) })
            }
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.slot {
            Some(slot) => write!(f, "{}.{slot}", self.service),
            None => write!(f, "{}", self.service),
        }
    }
}

impl Target {
    pub fn matches(&self, slot: Option<u64>) -> bool {
        self.slot.is_none() || self.slot == slot
    }
}

/// The node name of the Docker asked (Swarm's name of the node: its hostname).
pub async fn this_node(swarm: &DockerSwarm) -> String {
    swarm.docker().info().await.ok().and_then(|i| i.name).unwrap_or_else(|| "this node".into())
}

/// Where the lab's tasks are, as far as the Docker asked knows: a manager lists every node's.
pub struct Placement {
    node: String,
    /// The lab's tasks Swarm wants running (or completed), on every node.
    listed: Vec<LabTask>,
    /// `raft.3 on n2` for each task of the target on another node.
    pub elsewhere: Vec<String>,
    /// The same by node: n2 → `raft.3`.
    pub elsewhere_by_node: std::collections::BTreeMap<String, Vec<String>>,
}

/// The lab's tasks as their agents last reported them (none when Redis cannot be read): the
/// shaping reports, and what the usage samplers wrote (they list every task; the shaping
/// reports only those with conditions or a schedule).
async fn reported(redis: &str, lab: &str) -> Vec<LabTask> {
    let Ok(mut store) = crate::common::reader(redis).await else { return vec![] };
    let reports = store.task_shaping(lab).await.unwrap_or_default();
    let mut tasks: Vec<LabTask> = reports
        .into_iter()
        .filter(|r| r.is_fresh())
        .map(|r| LabTask { id: r.container, service: r.service, slot: r.slot, node: r.node, created_at: r.started_at, current: true })
        .collect();
    for used in store.task_usage(lab).await.unwrap_or_default() {
        if !tasks.iter().any(|t| t.id == used.container) {
            tasks.push(LabTask { id: used.container, service: used.service, slot: used.slot, node: used.node, created_at: None, current: true });
        }
    }
    tasks.sort_by(|a, b| (&a.service, a.slot, &a.node).cmp(&(&b.service, b.slot, &b.node)));
    tasks
}

impl Placement {
    /// From Swarm's task list when the Docker asked is a manager; else (a worker cannot list
    /// tasks) from the agents' reports in Redis, which every node's agent writes.
    /// Every task of the lab when `target` is `None`.
    pub async fn of(swarm: &DockerSwarm, redis: &str, lab: &str, target: Option<&Target>, node: &str) -> Placement {
        let listed: Vec<LabTask> = match swarm.lab_tasks(lab, &[]).await {
            Ok(tasks) => tasks.into_iter().filter(|t| t.current).collect(),
            Err(_) => reported(redis, lab).await,
        };
        let mut others: Vec<&LabTask> = listed.iter().filter(|t| target.is_none_or(|w| t.service == w.service && w.matches(t.slot)) && t.node != node).collect();
        others.dedup_by_key(|t| (t.label(), t.node.clone()));
        let elsewhere = others.iter().map(|t| format!("{} on {}", t.label(), t.node)).collect();
        let mut elsewhere_by_node = std::collections::BTreeMap::<String, Vec<String>>::new();
        for t in others {
            elsewhere_by_node.entry(t.node.clone()).or_default().push(t.label());
        }
        Placement { node: node.to_string(), listed, elsewhere, elsewhere_by_node }
    }

    /// Why no `what` of the target is on this node, and what to do.
    pub fn none_here(&self, what: &str, lab: &str, target: &Target) -> anyhow::Error {
        let node = &self.node;
        if !self.elsewhere.is_empty() {
            return anyhow::anyhow!("no task of `{target}` is on {node}: {}. Run labctl there, or point --docker-host (DOCKER_HOST) at that node's daemon", self.elsewhere.join(", "));
        }
        let services: std::collections::BTreeSet<&str> = self.listed.iter().map(|t| t.service.as_str()).collect();
        let mut slots: Vec<u64> = self.listed.iter().filter(|t| t.service == target.service).filter_map(|t| t.slot).collect();
        slots.sort_unstable();
        slots.dedup();
        let hint = if services.is_empty() {
            format!("is the lab deployed (`labctl status {lab}`)?")
        } else if !services.contains(target.service.as_str()) {
            format!("the lab's services: {}", services.into_iter().collect::<Vec<_>>().join(", "))
        } else if !slots.is_empty() {
            format!("its slots: {}", slots.iter().map(u64::to_string).collect::<Vec<_>>().join(", "))
        } else {
            format!("`labctl describe {lab}` says why")
        };
        anyhow::anyhow!("no {what} of `{target}` in lab `{lab}` on {node}: {hint}")
    }

    /// Says on stderr which tasks of the target were left out, being on other nodes.
    pub fn warn_elsewhere(&self, command: &str, verb: &str) {
        if !self.elsewhere.is_empty() {
            eprintln!("{command}: not {verb} in the tasks on other nodes: {} (run it there)", self.elsewhere.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_service_or_a_slot_of_one() {
        assert_eq!("raft".parse::<Target>().unwrap(), Target { service: "raft".into(), slot: None });
        assert_eq!("raft.3".parse::<Target>().unwrap(), Target { service: "raft".into(), slot: Some(3) });
        let e = "raft.x".parse::<Target>().unwrap_err().to_string();
        assert!(e.contains("slot number") && e.contains("raft.1"), "{e}");
        assert!(Target { service: "raft".into(), slot: None }.matches(Some(2)) && !Target { service: "raft".into(), slot: Some(1) }.matches(Some(2)));
    }
}
