//! The files a lab's services mount, kept by Swarm as configs: created before the service that
//! names them, removed once no service of the lab names them (Swarm refuses to remove a config
//! a service still names, which keeps a failed update safe), and with the lab.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine as _;
use bollard::models::ConfigSpec;

use super::docker::{api_err, DockerSwarm};
use super::SwarmError;
use crate::plan::{labels, DesiredService};

impl DockerSwarm {
    /// Creates the service's file configs that do not exist yet; their ids by name. A config
    /// of that name that swarmlab does not own is an error, never used.
    pub(super) async fn ensure_files(&self, svc: &DesiredService) -> Result<BTreeMap<String, String>, SwarmError> {
        let mut ids = BTreeMap::new();
        for file in &svc.files {
            if ids.contains_key(&file.config_name) {
                continue; // one config mounted at two paths
            }
            let action = format!("create config {}", file.config_name);
            let spec = ConfigSpec {
                name: Some(file.config_name.clone()),
                labels: Some(file.labels.clone()),
                data: Some(base64::engine::general_purpose::STANDARD.encode(&file.content)),
                ..Default::default()
            };
            self.count();
            let id = match self.docker().create_config(spec).await {
                Ok(created) => created.id,
                // Its name carries its content: one that exists holds the same, if it is ours.
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                    self.count();
                    let found = self.docker().inspect_config(&file.config_name).await.map_err(api_err(format!("inspect config {}", file.config_name)))?;
                    let lab = file.labels.get(labels::LAB).map(String::as_str).unwrap_or_default();
                    if !found.spec.as_ref().and_then(|s| s.labels.as_ref()).is_some_and(|l| labels::owned_by(lab, l)) {
                        return Err(SwarmError::Api { action, message: format!("a config named {} exists that swarmlab does not own; it is left alone (rename the lab or remove that config)", file.config_name) });
                    }
                    found.id.unwrap_or_else(|| file.config_name.clone())
                }
                Err(e) => return Err(api_err(action)(e)),
            };
            ids.insert(file.config_name.clone(), id);
        }
        Ok(ids)
    }

    /// Removes the lab's file configs not in `keep`. One a service still names (an update that
    /// failed) is kept for a later pass.
    pub(super) async fn remove_files(&self, lab: &str, keep: &BTreeSet<String>) -> Result<(), SwarmError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{}={lab}", labels::LAB), labels::FILE.to_string()])]);
        let configs = self.list_configs(filters).await?;
        let errors = self.delete_files(lab, &configs, keep).await;
        let mut errors = errors.into_iter().filter(|e| match e {
            SwarmError::InUse { message, .. } => {
                tracing::debug!(lab, %message, "file config still named by a service; kept");
                false
            }
            _ => true,
        });
        errors.next().map_or(Ok(()), Err)
    }

    /// Deletes the file configs among `configs` that `lab` owns, but those in `keep`; the
    /// failures (a config still named by a service is [`SwarmError::InUse`]).
    pub(super) async fn delete_files(&self, lab: &str, configs: &[bollard::models::Config], keep: &BTreeSet<String>) -> Vec<SwarmError> {
        let mut errors = Vec::new();
        for config in configs {
            let Some(spec) = config.spec.as_ref() else { continue };
            let (Some(name), Some(labels)) = (spec.name.as_deref(), spec.labels.as_ref()) else { continue };
            if keep.contains(name) || !labels.contains_key(labels::FILE) || !labels::owned_by(lab, labels) {
                continue;
            }
            self.count();
            match self.docker().delete_config(config.id.as_deref().unwrap_or(name)).await {
                Ok(()) => tracing::debug!(lab, config = name, "file config removed"),
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => errors.push(api_err(format!("remove config {name}"))(e)),
            }
        }
        errors
    }
}
