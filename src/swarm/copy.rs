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
