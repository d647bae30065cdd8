//! A rolling restart of a lab's services, as `docker service update --force` (and `kubectl
//! rollout restart`) do: Swarm's `ForceUpdate` counter bumped, so Swarm replaces every task,
//! one after the other as the service's update settings say. labd keeps the counter in its
//! own updates (`ObservedService::force_update`), so the restart is not undone, nor done again.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::ServiceUpdateStatusStateEnum;
use bollard::query_parameters::{InspectServiceOptions, ListServicesOptions, UpdateServiceOptions};

use super::{api_err, DockerSwarm, SwarmError};
use crate::plan::{labels, ObservedService};

/// A service whose tasks are being replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restarting {
    pub id: String,
    /// Its short name in the lab.
    pub service: String,
    /// `None` for a global service (a job's: its completions).
    pub replicas: Option<u64>,
}

/// Where a restarted service's update is, as Swarm says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartProgress {
    Updating,
    Done,
    /// Swarm paused or rolled back the update (a new task failed): its message.
    Stopped(String),
}

impl DockerSwarm {
    /// Bumps the `ForceUpdate` of the lab's services named in `only` (every service kept
    /// running when empty: a job's is run again only when named). Swarm replies "update out of
    /// sequence" when labd updated the service in between: read again and retried.
    pub async fn restart_services(&self, lab: &str, only: &[String]) -> Result<Vec<Restarting>, SwarmError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{}={lab}", labels::LAB)])]);
        self.count();
        let services = self.docker().list_services(Some(ListServicesOptions { filters: Some(filters), status: Some(false) })).await.map_err(api_err("list services"))?;
        // Read as labd observes them (mode, replicas, labels), those of the lab labd owns.
        let owned: Vec<(String, ObservedService)> = services
            .into_iter()
            .filter_map(super::docker::observed_service)
            .filter(|s| labels::owned_by(lab, &s.labels))
            .map(|s| (s.labels.get(labels::MEMBER).cloned().unwrap_or_default(), s))
            .collect();
        if owned.is_empty() {
            return Err(SwarmError::Api { action: format!("restart {lab}"), message: format!("no service of lab {lab} on this swarm (is it deployed? `labctl status {lab}`)") });
        }
        if let Some(unknown) = only.iter().find(|name| !owned.iter().any(|(short, _)| short == *name)) {
            let known: Vec<&str> = owned.iter().map(|(short, _)| short.as_str()).collect();
            return Err(SwarmError::Api { action: format!("restart {lab}"), message: format!("it has no service {unknown} (it has {})", known.join(", ")) });
        }
        let mut restarting = Vec::new();
        for (short, service) in owned {
            let named = only.contains(&short);
            if !(named || only.is_empty() && !service.mode.is_job()) {
                continue;
            }
            self.force_update(&service.id).await?;
            restarting.push(Restarting { id: service.id, service: short, replicas: service.replicas });
        }
        Ok(restarting)
    }

    async fn force_update(&self, id: &str) -> Result<(), SwarmError> {
        let mut tries = 0;
        loop {
            self.count();
            let service = self.docker().inspect_service(id, None::<InspectServiceOptions>).await.map_err(api_err(format!("inspect service {id}")))?;
            let (Some(mut spec), Some(version)) = (service.spec, service.version.and_then(|v| v.index)) else {
                return Err(SwarmError::NotFound(format!("service {id}")));
            };
            let template = spec.task_template.get_or_insert_with(Default::default);
            template.force_update = Some(template.force_update.unwrap_or(0) + 1);
            self.count();
            let options = UpdateServiceOptions { version: version as i32, ..Default::default() };
            match self.docker().update_service(id, spec, options, None).await {
                Err(bollard::errors::Error::DockerResponseServerError { message, .. }) if message.contains("out of sequence") && tries < 3 => tries += 1,
                other => return other.map(|_| ()).map_err(api_err(format!("restart service {id}"))),
            }
        }
    }

    /// Where the restart of service `id` is: done once Swarm's update completed.
    pub async fn restart_progress(&self, id: &str) -> Result<RestartProgress, SwarmError> {
        self.count();
        let service = self.docker().inspect_service(id, None::<InspectServiceOptions>).await.map_err(api_err(format!("inspect service {id}")))?;
        let status = service.update_status.unwrap_or_default();
        Ok(match status.state {
            Some(ServiceUpdateStatusStateEnum::COMPLETED) => RestartProgress::Done,
            Some(ServiceUpdateStatusStateEnum::PAUSED | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED | ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) => {
                RestartProgress::Stopped(status.message.unwrap_or_else(|| "the update stopped".into()))
            }
            _ => RestartProgress::Updating,
        })
    }
}

/// How often `labctl restart` asks Swarm where a restart is.
pub const RESTART_POLL: Duration = Duration::from_millis(500);
