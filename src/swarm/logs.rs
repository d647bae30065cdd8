//! The output of a lab's tasks, as `docker service logs` shows it: every task of each service
//! (those that ended, a killed one, included), each line with its time and the task it came
//! from. Read per task (`/tasks/{id}/logs`): Docker's service logs name a line's task only in
//! their `details`, which the client library does not ask for, and per task the slot and node
//! are known from the listing.

use std::collections::HashMap;

use bollard::container::LogOutput;
use bollard::query_parameters::{ListNodesOptions, ListTasksOptions, LogsOptions};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};

use super::{api_err, DockerSwarm, SwarmError};
use crate::plan::labels;

/// One task of a lab's service, as its output is labelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabTask {
    pub id: String,
    /// The service's short name in the lab.
    pub service: String,
    /// Its slot (replicated services).
    pub slot: Option<u64>,
    /// The hostname of its node.
    pub node: String,
    pub created_at: Option<DateTime<Utc>>,
    /// Swarm wants it running, or (a job's) completed: not one that failed or was replaced.
    pub current: bool,
    /// Its log driver, when the lab sets one (`logging.driver`): `none` keeps nothing to read.
    pub log_driver: Option<String>,
}

impl LabTask {
    /// `service.slot` for a replicated service's task, `service@node` for a global one's.
    pub fn label(&self) -> String {
        task_label(&self.service, self.slot, &self.node)
    }
}

/// How a task is named to users (`labctl logs`, `exec`, `cp`): `service.slot` for a task with
/// a slot, `service@node` for a global service's.
pub fn task_label(service: &str, slot: Option<u64>, node: &str) -> String {
    match slot {
        Some(slot) => format!("{service}.{slot}"),
        None => format!("{service}@{node}"),
    }
}

/// One line a task wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: DateTime<Utc>,
    pub stderr: bool,
    pub text: String,
}

/// Which lines: all, or the last `tail` of each task; since a time; and on as they come.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogRange {
    pub follow: bool,
    pub since: Option<DateTime<Utc>>,
    pub tail: Option<u64>,
}

/// Splits Docker's `<RFC 3339 time> <text>` (what `timestamps=true` gives) into its parts.
fn timed(line: &str) -> Option<(DateTime<Utc>, &str)> {
    let (time, text) = line.split_once(' ').unwrap_or((line, ""));
    Some((DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc), text))
}

impl DockerSwarm {
    /// The tasks of the lab's services (`services`: short names; empty: every service the lab
    /// has on Swarm), the ended ones Swarm keeps included, oldest first.
    pub async fn lab_tasks(&self, lab: &str, services: &[String]) -> Result<Vec<LabTask>, SwarmError> {
        let wanted: HashMap<String, (String, bool)> =
            self.lab_services(lab).await?.into_iter().filter(|(_, (short, _))| services.is_empty() || services.contains(short)).collect();
        if wanted.is_empty() {
            return Ok(vec![]);
        }
        let nodes: HashMap<String, String> = self
            .docker()
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(api_err("list nodes"))?
            .into_iter()
            .filter_map(|n| Some((n.id?, n.description.and_then(|d| d.hostname).unwrap_or_default())))
            .collect();
        // One listing for every service (Docker ORs the values of one filter).
        let filters = HashMap::from([("service".to_string(), wanted.keys().cloned().collect())]);
        let listed = self.docker().list_tasks(Some(ListTasksOptions { filters: Some(filters) })).await.map_err(api_err("list tasks"))?;
        let mut tasks = Vec::new();
        for t in listed {
            // A task never given a container has no output.
            if t.status.as_ref().and_then(|s| s.container_status.as_ref()).and_then(|c| c.container_id.as_ref()).is_none() {
                continue;
            }
            let (Some(id), Some((short, global))) = (t.id, t.service_id.as_ref().and_then(|s| wanted.get(s))) else { continue };
            let node = t.node_id.as_ref().map(|n| nodes.get(n).cloned().unwrap_or_else(|| n.clone())).unwrap_or_default();
            let created_at = t.created_at.as_deref().and_then(|c| DateTime::parse_from_rfc3339(c).ok()).map(|c| c.with_timezone(&Utc));
            // Docker leaves a slot 0 out (a replicated job's first task has it).
            let slot = (!global).then(|| t.slot.unwrap_or(0) as u64);
            let current = matches!(t.desired_state, Some(bollard::models::TaskState::RUNNING | bollard::models::TaskState::COMPLETE));
            let log_driver = t.spec.and_then(|s| s.log_driver).and_then(|l| l.name).filter(|n| !n.is_empty());
            tasks.push(LabTask { id, service: short.clone(), slot, node, created_at, current, log_driver });
        }
        tasks.sort_by_key(|t| (t.created_at, t.service.clone(), t.slot));
        Ok(tasks)
    }

    /// (Swarm id, (short name, one task per node)) of the lab's own services on Swarm.
    pub(super) async fn lab_services(&self, lab: &str) -> Result<Vec<(String, (String, bool))>, SwarmError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{}={lab}", labels::STACK_NAMESPACE)])]);
        let services = self
            .docker()
            .list_services(Some(bollard::query_parameters::ListServicesOptions { filters: Some(filters), ..Default::default() }))
            .await
            .map_err(api_err("list services"))?;
        let ids = services
            .into_iter()
            .filter_map(|s| {
                let spec = s.spec?;
                let of = spec.labels.unwrap_or_default();
                let short = of.get(labels::MEMBER).cloned().filter(|_| labels::owned_by(lab, &of))?;
                let global = spec.mode.is_some_and(|m| m.global.is_some() || m.global_job.is_some());
                Some((s.id?, (short, global)))
            })
            .collect();
        Ok(ids)
    }

    /// What one task wrote, line by line, with Docker's time of each line.
    pub fn task_log(&self, task: &str, range: LogRange) -> impl Stream<Item = Result<LogLine, SwarmError>> + Send + 'static {
        let options = LogsOptions {
            follow: range.follow,
            stdout: true,
            stderr: true,
            since: range.since.map(|t| t.timestamp() as i32).unwrap_or(0),
            timestamps: true,
            tail: range.tail.map(|n| n.to_string()).unwrap_or_else(|| "all".into()),
            ..Default::default()
        };
        self.docker().task_logs(task, Some(options)).filter_map(|item| async move {
            let (stderr, bytes) = match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => (false, message),
                Ok(LogOutput::StdErr { message }) => (true, message),
                Ok(LogOutput::StdIn { .. }) => return None,
                Err(e) => return Some(Err(api_err("read task logs")(e))),
            };
            let line = String::from_utf8_lossy(&bytes);
            let (time, text) = timed(line.trim_end_matches(['\n', '\r']))?;
            Some(Ok(LogLine { time, stderr, text: text.to_string() }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_splits_into_its_time_and_text() {
        let (time, text) = timed("2026-12-02T01:02:03.123456789Z tick 10 and more").unwrap();
        assert_eq!((time.timestamp_subsec_millis(), text), (123, "tick 10 and more"));
        assert_eq!(timed("2026-12-02T01:02:03Z").map(|(_, t)| t), Some(""), "an empty line");
        assert!(timed("no time here").is_none());
        let task = |slot| LabTask { id: "x".into(), service: "raft".into(), slot, node: "n1".into(), created_at: None, current: true, log_driver: None };
        assert_eq!((task(Some(2)).label(), task(None).label()), ("raft.2".to_string(), "raft@n1".to_string()));
    }
}
