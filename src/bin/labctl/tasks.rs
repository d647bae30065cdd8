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

/// The node whose tasks' namespaces labctl enters itself (`probe`, `capture`), and its Swarm
/// id: the node of the Docker asked when that daemon runs on this machine. When it runs on
/// another (a remote DOCKER_HOST or context) no node is, and every task is reached through its
/// node's agent.
pub async fn node_entered_here(swarm: &DockerSwarm) -> (String, Option<String>) {
    let running = swarm.local_task_ids().await.unwrap_or_default();
    if swarm.runs_here(&running).await {
        (this_node(swarm).await, swarm.this_node_id().await)
    } else {
        ("this machine".into(), None)
    }
}

/// Where the lab's tasks are, as far as the Docker asked knows: a manager lists every node's.
pub struct Placement {
    node: String,
    pub lab: String,
    /// What was asked for (every task of the lab when `None`).
    pub target: Option<Target>,
    /// The lab's tasks Swarm wants running (or completed), on every node.
    listed: Vec<LabTask>,
    /// `raft.3 on n2` for each task of the target on another node.
    pub elsewhere: Vec<String>,
    /// The same by node: n2 → `raft.3`.
    pub elsewhere_by_node: std::collections::BTreeMap<String, Vec<String>>,
    /// Whether the tasks were listed by Swarm (a manager asked), not from the agents' reports,
    /// which name only the tasks they shape or sample.
    from_swarm: bool,
    /// The other nodes whose agent is alive now (it passed within the last 10 s).
    agents_elsewhere: Vec<String>,
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
        .map(|r| LabTask { id: r.container, service: r.service, slot: r.slot, node: r.node, created_at: r.started_at, current: true, log_driver: None })
        .collect();
    for used in store.task_usage(lab).await.unwrap_or_default() {
        if !tasks.iter().any(|t| t.id == used.container) {
            tasks.push(LabTask { id: used.container, service: used.service, slot: used.slot, node: used.node, created_at: None, current: true, log_driver: None });
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
        let (listed, from_swarm): (Vec<LabTask>, bool) = match swarm.lab_tasks(lab, &[]).await {
            Ok(tasks) => (tasks.into_iter().filter(|t| t.current).collect(), true),
            Err(_) => (reported(redis, lab).await, false),
        };
        let agents = match crate::common::reader(redis).await {
            Ok(mut store) => store.live_agents(swarmlab::store::AGENT_ALIVE_WITHIN).await.unwrap_or_default(),
            Err(_) => vec![],
        };
        let agents_elsewhere = agents.into_iter().filter(|a| a != node).collect();
        let mut others: Vec<&LabTask> = listed.iter().filter(|t| target.is_none_or(|w| t.service == w.service && w.matches(t.slot)) && t.node != node).collect();
        others.dedup_by_key(|t| (t.label(), t.node.clone()));
        let elsewhere = others.iter().map(|t| format!("{} on {}", t.label(), t.node)).collect();
        let mut elsewhere_by_node = std::collections::BTreeMap::<String, Vec<String>>::new();
        for t in others {
            elsewhere_by_node.entry(t.node.clone()).or_default().push(t.label());
        }
        Placement { node: node.to_string(), lab: lab.to_string(), target: target.cloned(), listed, elsewhere, elsewhere_by_node, from_swarm, agents_elsewhere }
    }

    /// Whether the other nodes' agents are worth asking: some of the target's tasks are
    /// listed there, or the list came from the agents' reports (which may leave tasks out)
    /// and other nodes have a live agent.
    pub fn ask_elsewhere(&self) -> bool {
        !self.elsewhere.is_empty() || (!self.from_swarm && !self.agents_elsewhere.is_empty())
    }

    /// The nodes whose agents' answers are waited for, with the tasks listed there: those where
    /// tasks are listed, and every other live agent (whose answer may name a task that the list
    /// missed, or that moved there meanwhile).
    pub fn expected_answers(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut expected = self.elsewhere_by_node.clone();
        for agent in &self.agents_elsewhere {
            expected.entry(agent.clone()).or_default();
        }
        expected
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

    /// Why nothing was done: no task of the target here, and the other nodes' agents, asked,
    /// found none either.
    pub fn none_answered(&self, what: &str, lab: &str, target: &Target) -> anyhow::Error {
        if self.from_swarm || self.agents_elsewhere.is_empty() {
            return self.none_here(what, lab, target);
        }
        anyhow::anyhow!("no {what} of `{target}` in lab `{lab}` on {}, nor on {} (their agents looked): `labctl status {lab}` says what runs", self.node, self.agents_elsewhere.join(", "))
    }

    /// Why nothing of the target can be reached: none is here, and the other nodes' agents
    /// cannot be asked through Redis (`error`).
    pub fn unreachable(&self, lab: &str, target: &Target, error: &dyn std::fmt::Display) -> anyhow::Error {
        if self.elsewhere.is_empty() {
            return anyhow::anyhow!("{}; and the other nodes' agents cannot be asked through Redis: {error}", self.none_here("task", lab, target));
        }
        anyhow::anyhow!("the tasks are on other nodes ({}), and their agents cannot be asked through Redis: {error}", self.elsewhere.join(", "))
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
    fn the_agents_asked_are_those_where_tasks_are_listed_and_on_a_worker_every_live_one() {
        let placement = |from_swarm, elsewhere: &[(&str, &str)], agents: &[&str]| Placement {
            node: "n1".into(),
            lab: "l".into(),
            target: None,
            listed: vec![],
            elsewhere: elsewhere.iter().map(|(task, node)| format!("{task} on {node}")).collect(),
            elsewhere_by_node: elsewhere.iter().map(|(task, node)| (node.to_string(), vec![task.to_string()])).collect(),
            from_swarm,
            agents_elsewhere: agents.iter().map(|a| a.to_string()).collect(),
        };
        // Swarm's list is the truth: nothing there, nobody asked.
        assert!(!placement(true, &[], &["n2", "n3"]).ask_elsewhere());
        let listed = placement(true, &[("w.3", "n3")], &["n2", "n3"]);
        assert!(listed.ask_elsewhere());
        let expected = listed.expected_answers();
        assert_eq!(expected.get("n3"), Some(&vec!["w.3".to_string()]));
        assert_eq!(expected.get("n2"), Some(&vec![]), "a live agent's answer is waited for too (a task may have moved there)");
        // The agents' reports may leave a task out: on a worker, every live agent is asked.
        assert!(placement(false, &[], &["n2"]).ask_elsewhere());
        assert!(!placement(false, &[], &[]).ask_elsewhere());
    }

    #[test]
    fn a_target_is_a_service_or_a_slot_of_one() {
        assert_eq!("raft".parse::<Target>().unwrap(), Target { service: "raft".into(), slot: None });
        assert_eq!("raft.3".parse::<Target>().unwrap(), Target { service: "raft".into(), slot: Some(3) });
        let e = "raft.x".parse::<Target>().unwrap_err().to_string();
        assert!(e.contains("slot number") && e.contains("raft.1"), "{e}");
        assert!(Target { service: "raft".into(), slot: None }.matches(Some(2)) && !Target { service: "raft".into(), slot: Some(1) }.matches(Some(2)));
    }
}
