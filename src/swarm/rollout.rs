//! A service's rolling update as Swarm reports it, and which of its tasks run the service's
//! current spec: a lab is Ready only once every running task does. A digest of the whole
//! service spec, less its replicas and forced restarts, shows a hand edit of its settings.

use std::hash::{Hash, Hasher};

use bollard::models::{ServiceSpec, ServiceUpdateStatus, ServiceUpdateStatusStateEnum, TaskSpec};
use serde_json::Value;

use crate::plan::{Rollout, RolloutState};

/// The update Swarm is rolling out (or has paused); `None` once it completed, or before one.
pub(super) fn rollout_of(status: Option<ServiceUpdateStatus>) -> Option<Rollout> {
    let status = status?;
    let state = match status.state? {
        ServiceUpdateStatusStateEnum::UPDATING => RolloutState::Updating,
        ServiceUpdateStatusStateEnum::PAUSED => RolloutState::Paused,
        ServiceUpdateStatusStateEnum::ROLLBACK_STARTED => RolloutState::RollingBack,
        ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED => RolloutState::RollbackPaused,
        ServiceUpdateStatusStateEnum::COMPLETED | ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED | ServiceUpdateStatusStateEnum::EMPTY => return None,
    };
    Some(Rollout { state, message: status.message.unwrap_or_default() })
}

/// A digest of what a change of the service replaces its tasks for, equal for the service's
/// task template and its tasks' copies of it. Only the parts Docker reports alike for both:
/// Engines before 23 convert a task's spec field by field (no `Runtime`, nothing of
/// `Placement` a node left alone), and Swarm keeps a task whose node still fits a changed
/// placement. Empty values and a zero `ForceUpdate` count as absent.
pub(super) fn spec_digest(spec: &TaskSpec) -> u64 {
    digest(spec, true)
}

/// The same without `ForceUpdate`: a task that differs from its template only by a restart
/// forced by `docker service update --force` or `labctl restart`.
pub(super) fn settings_digest(spec: &TaskSpec) -> u64 {
    digest(spec, false)
}

/// What a hand edit of a service changes (`docker service update --env-add`,
/// `--constraint-add`, `--label-add`, `--publish-add`, `--update-parallelism`…), compared only
/// with Docker's own report of the same service: all of its spec, less what labd watches
/// otherwise (its replicas) and forced restarts.
pub(super) fn service_settings_digest(spec: &ServiceSpec) -> u64 {
    let mut spec = spec.clone();
    if let Some(template) = spec.task_template.as_mut() {
        template.force_update = None;
    }
    if let Some(replicated) = spec.mode.as_mut().and_then(|m| m.replicated.as_mut()) {
        replicated.replicas = None;
    }
    hash_pruned(serde_json::to_value(spec).unwrap_or(Value::Null))
}

fn digest(spec: &TaskSpec, with_forced_restarts: bool) -> u64 {
    let parts = TaskSpec {
        container_spec: spec.container_spec.clone(),
        resources: spec.resources.clone(),
        restart_policy: spec.restart_policy.clone(),
        log_driver: spec.log_driver.clone(),
        networks: spec.networks.clone(),
        force_update: spec.force_update.filter(|n| *n != 0 && with_forced_restarts),
        ..Default::default()
    };
    hash_pruned(serde_json::to_value(parts).unwrap_or(Value::Null))
}

fn hash_pruned(mut value: Value) -> u64 {
    prune_empty(&mut value);
    // Compared within one labd only, never stored: std's hasher may change between releases.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    // serde_json's maps are sorted: the text is canonical (bollard's label maps are not).
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// Drops nulls, empty objects and empty lists, at every depth.
fn prune_empty(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.values_mut().for_each(prune_empty);
            map.retain(|_, v| !is_empty(v));
        }
        Value::Array(items) => items.iter_mut().for_each(prune_empty),
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{NetworkAttachmentConfig, TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources};

    use super::*;

    fn template(env: &str) -> TaskSpec {
        let labels: HashMap<String, String> = (0..20).map(|i| (format!("label{i}"), i.to_string())).collect();
        TaskSpec {
            container_spec: Some(TaskSpecContainerSpec { image: Some("labbox:latest".into()), env: Some(vec![env.into()]), labels: Some(labels), ..Default::default() }),
            networks: Some(vec![NetworkAttachmentConfig { target: Some("n1".into()), aliases: Some(vec!["node".into()]), ..Default::default() }]),
            force_update: Some(0),
            runtime: Some("container".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_s_copy_as_docker_reports_it_matches_its_template_and_a_change_does_not() {
        let service = template("V=1");
        // Engine 20.10 reports a task's spec without `Runtime`, with empty parts left out or
        // given empty, and its label map in another order.
        let mut task = template("V=1");
        task.runtime = None;
        task.force_update = None;
        task.resources = Some(TaskSpecResources::default());
        task.placement = Some(TaskSpecPlacement { constraints: Some(vec!["node.role==manager".into()]), ..Default::default() });
        assert_eq!(spec_digest(&service), spec_digest(&task));
        assert_ne!(spec_digest(&service), spec_digest(&template("V=2")), "an env change is a new spec");
        let forced = TaskSpec { force_update: Some(1), ..template("V=1") };
        assert_ne!(spec_digest(&service), spec_digest(&forced), "`docker service update --force` (labctl restart) replaces every task");
        assert_eq!(settings_digest(&service), settings_digest(&forced), "but changes no setting");
        assert_ne!(settings_digest(&service), settings_digest(&template("V=2")));
    }

    #[test]
    fn a_hand_edit_of_any_setting_changes_the_service_digest_and_a_scale_or_a_forced_restart_does_not() {
        let service = |template: TaskSpec| ServiceSpec {
            name: Some("l_a".into()),
            labels: Some(HashMap::from([("io.swarmlab.lab".to_string(), "l".to_string())])),
            task_template: Some(template),
            mode: Some(bollard::models::ServiceSpecMode { replicated: Some(bollard::models::ServiceSpecModeReplicated { replicas: Some(3) }), ..Default::default() }),
            ..Default::default()
        };
        let base = service_settings_digest(&service(template("V=1")));
        let mut scaled = service(TaskSpec { force_update: Some(2), ..template("V=1") });
        scaled.mode = Some(bollard::models::ServiceSpecMode { replicated: Some(bollard::models::ServiceSpecModeReplicated { replicas: Some(5) }), ..Default::default() });
        assert_eq!(service_settings_digest(&scaled), base, "replicas and restarts are watched apart");
        let mut labelled = service(template("V=1"));
        labelled.labels.as_mut().unwrap().insert("hand".into(), "1".into());
        let constrained = service(TaskSpec { placement: Some(TaskSpecPlacement { constraints: Some(vec!["node.role==worker".into()]), ..Default::default() }), ..template("V=1") });
        for edited in [service(template("V=2")), labelled, constrained] {
            assert_ne!(service_settings_digest(&edited), base, "{edited:?}");
        }
    }

    #[test]
    fn only_an_update_under_way_or_paused_is_a_rollout() {
        let status = |state| Some(ServiceUpdateStatus { state: Some(state), message: Some("update paused due to failure or early termination of task x".into()), ..Default::default() });
        assert_eq!(rollout_of(status(ServiceUpdateStatusStateEnum::UPDATING)).map(|r| r.state), Some(RolloutState::Updating));
        let paused = rollout_of(status(ServiceUpdateStatusStateEnum::PAUSED)).unwrap();
        assert_eq!(paused.state, RolloutState::Paused);
        assert!(paused.message.contains("early termination"));
        assert_eq!(rollout_of(status(ServiceUpdateStatusStateEnum::COMPLETED)), None);
        assert_eq!(rollout_of(status(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED)), None);
        assert_eq!(rollout_of(None), None);
    }
}
