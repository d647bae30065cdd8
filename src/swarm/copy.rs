//! Files out of the containers of a lab's tasks on this node, as `docker cp` takes them: what
//! `labctl cp` collects after a run (a node's log directory, a load generator's results). An
//! ended task's container counts: Docker keeps it until Swarm prunes the task's history, so a
//! job's results can be read after it completed.

use std::collections::HashMap;

use bollard::query_parameters::{DownloadFromContainerOptions, ListContainersOptions};
use futures::{Stream, StreamExt};

use super::{api_err, DockerSwarm, SwarmError};
use crate::plan::labels;

/// A container of one of the lab's tasks on this node, running or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContainer {
    pub id: String,
    /// The service's short name in the lab.
    pub service: String,
    /// Its slot (replicated services and jobs).
    pub slot: Option<u64>,
    /// When Docker created it (seconds since the epoch): the newest of a slot is its task's
    /// latest try.
    pub created: i64,
}

impl DockerSwarm {
    /// The containers of `lab`'s service `service` on this node, ended ones included.
    pub async fn task_containers(&self, lab: &str, service: &str) -> Result<Vec<TaskContainer>, SwarmError> {
        let wanted = [format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE), format!("{}={lab}", labels::LAB), format!("{}={service}", labels::MEMBER)];
        let filters = HashMap::from([("label".to_string(), wanted.to_vec())]);
        let list = self
            .docker()
            .list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() }))
            .await
            .map_err(api_err("list containers"))?;
        // Swarm names a slot-0 task (a replicated job's first) as a global one's, by node: the
        // service's mode tells them apart, where this daemon is a manager that can say it.
        let global = self.lab_services(lab).await.ok().and_then(|services| services.into_iter().find(|(_, (short, _))| short == service).map(|(_, (_, global))| global));
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let task_name = c.labels.as_ref()?.get("com.docker.swarm.task.name")?.clone();
                let slot = super::local::slot_of(&task_name, &format!("{lab}_{service}")).or((global == Some(false)).then_some(0));
                Some(TaskContainer { id: c.id?, service: service.to_string(), slot, created: c.created.unwrap_or(0) })
            })
            .collect())
    }

    /// The latest container of each slot of `lab`'s service on this node (of the slot `slot`
    /// only, when given), ended ones included: a slot's earlier tries are history.
    pub async fn latest_task_containers(&self, lab: &str, service: &str, slot: Option<u64>) -> Result<Vec<TaskContainer>, SwarmError> {
        Ok(latest_per_slot(self.task_containers(lab, service).await?, slot))
    }

    /// `path` in the container as a tar stream (Docker's archive of a file or a directory).
    pub fn copy_from_task(&self, container: &str, path: &str) -> impl Stream<Item = Result<bytes::Bytes, SwarmError>> + Send + 'static {
        let options = DownloadFromContainerOptions { path: path.to_string() };
        let path = path.to_string();
        self.docker().download_from_container(container, Some(options)).map(move |piece| {
            piece.map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => SwarmError::NotFound(path.clone()),
                other => api_err("copy from container")(other),
            })
        })
    }
}

/// The latest container of each slot (of each global task: slot `None`), of `slot` only when
/// given.
fn latest_per_slot(containers: Vec<TaskContainer>, slot: Option<u64>) -> Vec<TaskContainer> {
    let mut latest: std::collections::BTreeMap<Option<u64>, TaskContainer> = std::collections::BTreeMap::new();
    for c in containers.into_iter().filter(|c| slot.is_none() || c.slot == slot) {
        if latest.get(&c.slot).is_none_or(|held| c.created > held.created) {
            latest.insert(c.slot, c);
        }
    }
    latest.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slot_gives_its_latest_container() {
        let c = |id: &str, slot, created| TaskContainer { id: id.into(), service: "raft".into(), slot, created };
        let all = vec![c("old1", Some(1), 10), c("new1", Some(1), 20), c("two", Some(2), 5)];
        let ids = |v: Vec<TaskContainer>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(latest_per_slot(all.clone(), None)), ["new1", "two"]);
        assert_eq!(ids(latest_per_slot(all, Some(2))), ["two"]);
    }
}
