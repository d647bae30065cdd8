//! The tasks of this node: the containers of owned services that run here, with what the node
//! agent and `labctl probe` need to reach into them (the pid whose network namespace they
//! enter, and each attachment's MAC and address). Docker sends container events only for the
//! local engine, so this is the one part of the Swarm edge that is per node.

use std::collections::HashMap;

use bollard::models::ContainerUpdateBody;
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, KillContainerOptions, ListContainersOptions, StopContainerOptions};
use futures::{Stream, StreamExt};

use super::{api_err, ContainerChange, DockerSwarm, SwarmError};
use crate::plan::labels;

/// A task container's process, by Docker's read-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessState {
    pub paused: bool,
    /// The CPUs it may use, in billionths of one (0: no cap).
    pub nano_cpus: i64,
}

/// The period of the kernel's CPU quota that a cap uses (its default, 100 ms).
const CPU_PERIOD_MICROS: i64 = 100_000;

/// A container's CPU limit in billionths of a CPU from its host config: the kernel's quota when
/// one is set (over its period, 100 ms unless given), else `NanoCpus`; 0 when neither.
fn cpu_limit(nano_cpus: Option<i64>, quota: Option<i64>, period: Option<i64>) -> i64 {
    match quota.filter(|q| *q > 0) {
        Some(q) => q * 1_000_000_000 / period.filter(|p| *p > 0).unwrap_or(CPU_PERIOD_MICROS),
        None => nano_cpus.unwrap_or(0).max(0),
    }
}

/// A running task container on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTask {
    pub container: String,
    pub lab: String,
    /// The service's short name in the lab.
    pub service: String,
    pub pid: i64,
    /// (network short name, MAC, IPv4) of each of the lab's networks it is attached to.
    pub networks: Vec<(String, String, String)>,
    /// Its slot (tasks of replicated services).
    pub slot: Option<u64>,
    /// When its container started, by the node's clock.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// An error about a task's container; one that is gone or no longer running (it died between
/// the agent's look and its call) is `NotFound`: its task is going away, nothing failed.
pub(super) fn container_err(action: &'static str, container: &str) -> impl FnOnce(bollard::errors::Error) -> SwarmError {
    let container = container.to_string();
    move |e| {
        let gone = match &e {
            bollard::errors::Error::DockerResponseServerError { status_code, message } => *status_code == 404 || message.contains("is not running"),
            _ => false,
        };
        if gone { SwarmError::NotFound(format!("container {container}")) } else { api_err(action)(e) }
    }
}

/// Swarm names a task's container's `com.docker.swarm.task.name` `<service>.<slot>.<task id>`
/// for a replicated service, `<service>.<node id>.<task id>` for a global one.
pub(super) fn slot_of(task_name: &str, service: &str) -> Option<u64> {
    task_name.strip_prefix(service)?.strip_prefix('.')?.split('.').next()?.parse().ok()
}

/// A task container of this node started or died (its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalTaskEvent {
    Started(String),
    Died(String),
}

fn owned_filter() -> (String, Vec<String>) {
    ("label".to_string(), vec![format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE)])
}

impl DockerSwarm {
    /// Ids of the running containers of owned services on this node (frozen ones included:
    /// Docker lists a paused container as `paused`, not `running`, and a schedule's pause must
    /// not make its task vanish from the agent's view).
    pub async fn local_task_ids(&self) -> Result<Vec<String>, SwarmError> {
        let filters = HashMap::from([owned_filter(), ("status".to_string(), vec!["running".to_string(), "paused".to_string()])]);
        let list = self
            .docker()
            .list_containers(Some(ListContainersOptions { filters: Some(filters), ..Default::default() }))
            .await
            .map_err(api_err("list containers"))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Whether the daemon asked runs its containers on this machine, so that the pids it reports
    /// are processes here whose namespaces may be entered: told by the first of `running` (the
    /// ids of its task containers) whose process Docker reports, then remembered. A daemon
    /// reached on another machine (DOCKER_HOST, a context, a forwarded socket) reports pids that
    /// here are another process or none. `true` while it runs no task to tell by.
    pub async fn runs_here(&self, running: &[String]) -> bool {
        if let Some(known) = self.runs_here.get() {
            return *known;
        }
        for id in running {
            let Ok(info) = self.docker().inspect_container(id, None::<InspectContainerOptions>).await else { continue };
            let Some(pid) = info.state.and_then(|s| s.pid).filter(|p| *p > 0) else { continue };
            let here = crate::shaping::netns::process_is_container(&crate::shaping::netns::proc_root(), pid, info.id.as_deref().unwrap_or(id));
            if !here {
                tracing::warn!(container = id.get(..12).unwrap_or(id), pid, "the Docker daemon asked runs its containers on another machine: its tasks' namespaces cannot be entered from here");
            }
            let _ = self.runs_here.set(here);
            return here;
        }
        true
    }

    /// The task a running container holds; `None` if it is not one of ours or not running.
    pub async fn local_task(&self, container: &str) -> Option<LocalTask> {
        let info = self.docker().inspect_container(container, None::<InspectContainerOptions>).await.ok()?;
        let state = info.state.unwrap_or_default();
        let pid = state.pid.filter(|p| *p > 0)?;
        let started_at = state.started_at.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&chrono::Utc));
        let labels_of = info.config.and_then(|c| c.labels).unwrap_or_default();
        let lab = labels::owner(&labels_of)?.to_string();
        let service = labels_of.get(labels::MEMBER).cloned().unwrap_or_default();
        let prefix = format!("{lab}_");
        let slot = labels_of.get("com.docker.swarm.task.name").and_then(|n| slot_of(n, &format!("{prefix}{service}")));
        let networks = info
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, ep)| {
                let short = name.strip_prefix(&prefix)?.to_string();
                Some((short, ep.mac_address.unwrap_or_default(), ep.ip_address.unwrap_or_default()))
            })
            .collect();
        Some(LocalTask { container: container.to_string(), lab, service, pid, networks, slot, started_at })
    }

    /// Swarm's id of this node (`None` when the daemon is not in a swarm or cannot be asked):
    /// what tells one node from another when their names may be spelled differently.
    pub async fn this_node_id(&self) -> Option<String> {
        self.docker().info().await.ok()?.swarm?.node_id.filter(|id| !id.is_empty())
    }

    /// The running tasks of `lab` on this node, by service and slot: listed once for a whole
    /// command (a probe matrix asks for every service's).
    pub async fn local_tasks_of(&self, lab: &str) -> Result<Vec<LocalTask>, SwarmError> {
        let mut tasks = Vec::new();
        for id in self.local_task_ids().await? {
            tasks.extend(self.local_task(&id).await.filter(|t| t.lab == lab));
        }
        tasks.sort_by(|a, b| (&a.service, a.slot).cmp(&(&b.service, b.slot)));
        Ok(tasks)
    }

    /// Whether the task's container is frozen (`docker pause`).
    pub async fn task_paused(&self, container: &str) -> Result<bool, SwarmError> {
        let info = self.docker().inspect_container(container, None::<InspectContainerOptions>).await.map_err(container_err("inspect container", container))?;
        Ok(info.state.and_then(|s| s.paused).unwrap_or(false))
    }

    /// Whether the task's container is frozen, and the CPUs it may use, by Docker's read-back.
    pub async fn task_process(&self, container: &str) -> Result<ProcessState, SwarmError> {
        let info = self.docker().inspect_container(container, None::<InspectContainerOptions>).await.map_err(container_err("inspect container", container))?;
        let paused = info.state.and_then(|s| s.paused).unwrap_or(false);
        let host = info.host_config.unwrap_or_default();
        Ok(ProcessState { paused, nano_cpus: cpu_limit(host.nano_cpus, host.cpu_quota, host.cpu_period) })
    }

    /// Caps the task's container at `nano_cpus` billionths of a CPU (0: no cap), live, as
    /// `docker update --cpus` does. Docker cannot lift a `NanoCpus` limit (0 there means "leave
    /// it") nor change a quota where `NanoCpus` is set: a container Swarm made with a limit
    /// (its service's `resources.cpus`) is capped through `NanoCpus`, which is only ever set back
    /// to that limit; any other through the kernel's quota (`CpuQuota` over a 100 ms period),
    /// lifted with -1.
    pub async fn cap_task_cpus(&self, container: &str, nano_cpus: i64) -> Result<(), SwarmError> {
        let info = self.docker().inspect_container(container, None::<InspectContainerOptions>).await.map_err(container_err("inspect container", container))?;
        let by_nano = info.host_config.and_then(|h| h.nano_cpus).unwrap_or(0) > 0;
        let update = match (by_nano, nano_cpus) {
            (true, n) => ContainerUpdateBody { nano_cpus: Some(n), ..Default::default() },
            (false, 0) => ContainerUpdateBody { cpu_quota: Some(-1), ..Default::default() },
            (false, n) => ContainerUpdateBody { cpu_period: Some(CPU_PERIOD_MICROS), cpu_quota: Some(n / (1_000_000_000 / CPU_PERIOD_MICROS)), ..Default::default() },
        };
        self.docker().update_container(container, update).await.map_err(container_err("update container", container))
    }

    /// Freezes (`true`) or thaws the task's container, as `docker pause`/`unpause`.
    pub async fn pause_task(&self, container: &str, paused: bool) -> Result<(), SwarmError> {
        if paused {
            self.docker().pause_container(container).await.map_err(container_err("pause container", container))
        } else {
            self.docker().unpause_container(container).await.map_err(container_err("unpause container", container))
        }
    }

    /// Kills the task's container (SIGKILL), as `docker kill`: Swarm sees its task fail and
    /// starts another in its slot. Docker refuses to kill a frozen container: it is thawed first.
    pub async fn kill_task(&self, container: &str) -> Result<(), SwarmError> {
        if self.task_paused(container).await? {
            self.pause_task(container, false).await?;
        }
        self.docker().kill_container(container, None::<KillContainerOptions>).await.map_err(container_err("kill container", container))
    }

    /// Stops the task's container as `docker stop` does: its stop signal (SIGTERM unless the
    /// service sets `stopSignal`), then SIGKILL after `grace`. Returns once it has exited, so
    /// it may take `grace`: callers that must not wait run it apart. A frozen container is
    /// thawed first (it could not handle the signal).
    pub async fn stop_task(&self, container: &str, grace: std::time::Duration) -> Result<(), SwarmError> {
        if self.task_paused(container).await? {
            self.pause_task(container, false).await?;
        }
        // Docker counts whole seconds: a part of one is a whole one (never less than asked).
        let t = i32::try_from(grace.as_millis().div_ceil(1000)).unwrap_or(i32::MAX);
        let options = StopContainerOptions { t: Some(t), ..Default::default() };
        // Docker answers once the container has exited: the client's timeout (2 minutes for
        // every other call) must outlast the grace.
        let docker = self.docker().clone().with_timeout(grace.max(self.docker().timeout()) + std::time::Duration::from_secs(30));
        docker.stop_container(container, Some(options)).await.map_err(container_err("stop container", container))
    }

    /// Starts and deaths of owned task containers on this node (`None`: an event without a
    /// container id). Ends when the daemon goes away.
    pub fn local_task_events(&self) -> impl Stream<Item = Result<Option<LocalTaskEvent>, SwarmError>> + Send + 'static {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), ContainerChange::ACTIONS.map(String::from).to_vec()),
            owned_filter(),
        ]);
        self.docker().events(Some(EventsOptions { filters: Some(filters), ..Default::default() })).map(|e| {
            let e = e.map_err(api_err("stream events"))?;
            let id = e.actor.and_then(|a| a.id);
            Ok(match (e.action.as_deref().and_then(ContainerChange::from_action), id) {
                (Some(ContainerChange::Started), Some(id)) => Some(LocalTaskEvent::Started(id)),
                (Some(ContainerChange::Died), Some(id)) => Some(LocalTaskEvent::Died(id)),
                _ => None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_quota_counts_over_its_period_and_otherwise_nano_cpus() {
        assert_eq!(super::cpu_limit(Some(0), Some(20_000), Some(100_000)), 200_000_000);
        assert_eq!(super::cpu_limit(Some(0), Some(20_000), None), 200_000_000, "the kernel's default period");
        assert_eq!(super::cpu_limit(Some(500_000_000), Some(0), Some(0)), 500_000_000);
        assert_eq!(super::cpu_limit(Some(0), Some(-1), Some(100_000)), 0, "a lifted quota is no cap");
        assert_eq!(super::cpu_limit(None, None, None), 0);
    }

    #[test]
    fn a_replicated_task_has_a_slot_and_a_global_one_none() {
        assert_eq!(super::slot_of("lab_raft.3.k2x9q8w7e6r5t4y3u2i1o0p9a", "lab_raft"), Some(3));
        assert_eq!(super::slot_of("lab_agent.vzq0d3u2cm0gnwa3rpwyxdq2q.k2x9q8w7e6r5t4y3u2i1o0p9a", "lab_agent"), None);
        assert_eq!(super::slot_of("lab_raft2.3.x", "lab_raft"), None, "another service's task");
    }
}
