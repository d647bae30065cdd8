//! Reconciling one lab: observe, plan, act, and compute its status. Runs as its own task, so a
//! slow or failing lab never holds up another.

use std::collections::BTreeMap;

use chrono::Utc;

use crate::plan::{desired_lab, diff, teardown, Action, ActionKind, DesiredLab, Observed, Plan};
use crate::spec::{Diagnostic, ValidLab};
use crate::status::{condition_types as ct, EventReason, LabStatus, Phase, ServiceStatus};
use crate::store::RedisStore;
use crate::swarm::{Swarm, SwarmError};

use super::verdict::{self, Findings, ShapingState};

/// What the controller asks of one reconcile.
#[derive(Debug, Clone)]
pub enum Target {
    /// Converge to `lab`. `invalid` holds the errors of a newer, broken definition: the lab
    /// then keeps its last good version and its phase is Invalid.
    Apply { lab: Option<ValidLab>, invalid: Option<Vec<Diagnostic>> },
    /// No file defines the lab any more: remove everything it owns.
    Delete,
    /// No file defines the lab, but nothing shows a person removed it: leave it, say why.
    Orphaned(String),
}

#[derive(Debug)]
pub struct Outcome {
    pub status: LabStatus,
    /// Actions performed, by kind.
    pub actions: BTreeMap<&'static str, u64>,
    pub error: Option<String>,
    /// Nothing of the lab is left on Swarm (after a Delete).
    pub gone: bool,
    /// Repairs of changes made outside labd: services scaled or changed by hand, and services
    /// that were running at the last reconcile and are gone now.
    pub drift: u64,
}

fn kind_name(k: ActionKind) -> &'static str {
    match k {
        ActionKind::Create => "create",
        ActionKind::Update => "update",
        ActionKind::Remove => "remove",
    }
}

async fn execute<S: Swarm>(swarm: &S, store: &RedisStore, lab: &str, plan: &Plan) -> (BTreeMap<&'static str, u64>, Vec<SwarmError>) {
    let mut done = BTreeMap::new();
    let mut errors = Vec::new();
    for action in &plan.actions {
        let result: Result<(), SwarmError> = match action {
            Action::CreateNetwork(n) => swarm.create_network(n).await,
            Action::RemoveNetwork { id, .. } => swarm.remove_network(id).await,
            Action::CreateService(s) => swarm.create_service(s).await,
            Action::UpdateService { id, version, desired, .. } => swarm.update_service(id, *version, desired).await,
            Action::RemoveService { id, .. } => swarm.remove_service(id).await,
        };
        match result {
            Ok(()) => {
                *done.entry(kind_name(action.kind())).or_default() += 1;
                tracing::info!(lab, action = %action.describe(), "applied");
                store.event(lab, event(EventReason::Applied, action.describe()));
            }
            Err(SwarmError::AlreadyExists(name)) => tracing::debug!(lab, %name, "already exists; the next pass sees it"),
            Err(e) => {
                tracing::warn!(lab, action = %action.describe(), error = %e, "action failed");
                errors.push(e);
            }
        }
    }
    (done, errors)
}

pub fn event(reason: EventReason, message: impl Into<String>) -> crate::status::LabEvent {
    crate::status::LabEvent::now(reason, message)
}

pub async fn reconcile<S: Swarm>(swarm: &S, store: &RedisStore, name: &str, target: Target, mut status: LabStatus) -> Outcome {
    let now = Utc::now();
    status.name = name.to_string();
    status.updated_at = Some(now);
    status.created_at.get_or_insert(now);
    let observed = match swarm.observe(name).await {
        Ok(o) => o,
        Err(e) => return failed(status, e.to_string()),
    };
    match target {
        Target::Delete => delete(swarm, store, name, &observed, status).await,
        Target::Orphaned(why) => orphaned(name, &observed, status, why),
        Target::Apply { lab, invalid } => apply(swarm, store, name, lab, invalid, &observed, status).await,
    }
}

pub(crate) fn failed(mut status: LabStatus, error: String) -> Outcome {
    let now = Utc::now();
    status.phase = Phase::Failed;
    status.message = error.clone();
    status.last_error = Some(error.clone());
    status.set_condition(ct::READY, false, "ReconcileFailed", error.clone(), now);
    status.set_abnormal(ct::STALLED, true, "ReconcileFailed", error.clone(), now);
    status.ready_since = None;
    Outcome { status, actions: BTreeMap::new(), error: Some(error), gone: false, drift: 0 }
}

fn orphaned(name: &str, observed: &Observed, mut status: LabStatus, why: String) -> Outcome {
    let owned = teardown(name, observed);
    let now = Utc::now();
    status.phase = Phase::Orphaned;
    status.message = format!("no file defines this lab; kept because {why}");
    status.ready_since = None;
    status.set_condition(ct::READY, false, "Orphaned", status.message.clone(), now);
    status.set_abnormal(ct::RECONCILING, false, "", "", now);
    status.set_abnormal(ct::STALLED, true, "Orphaned", status.message.clone(), now);
    // Nothing of it on Swarm: only a stale status was left; forget it.
    Outcome { status, actions: BTreeMap::new(), error: None, gone: owned.is_empty(), drift: 0 }
}

async fn delete<S: Swarm>(swarm: &S, store: &RedisStore, name: &str, observed: &Observed, mut status: LabStatus) -> Outcome {
    let plan = teardown(name, observed);
    if plan.is_empty() {
        status.phase = Phase::Deleting;
        return Outcome { status, actions: BTreeMap::new(), error: None, gone: true, drift: 0 };
    }
    let (actions, errors) = execute(swarm, store, name, &plan).await;
    status.phase = Phase::Deleting;
    status.message = format!("removing {} objects", plan.actions.len());
    status.set_abnormal(ct::RECONCILING, true, "Deleting", "the lab's file is gone", Utc::now());
    // Networks are only removable once their tasks have stopped: not an error, just later.
    let error = errors.into_iter().find(|e| !matches!(e, SwarmError::InUse { .. })).map(|e| e.to_string());
    Outcome { status, actions, error, gone: false, drift: 0 }
}

async fn apply<S: Swarm>(
    swarm: &S,
    store: &RedisStore,
    name: &str,
    lab: Option<ValidLab>,
    invalid: Option<Vec<Diagnostic>>,
    observed: &Observed,
    mut status: LabStatus,
) -> Outcome {
    let now = Utc::now();
    let spec_error = invalid.as_ref().map(|diags| {
        let first = diags.first().map(|d| d.to_string()).unwrap_or_default();
        let more = if diags.len() > 1 { format!(" (and {} more)", diags.len() - 1) } else { String::new() };
        format!("{first}{more}")
    });
    let Some(lab) = lab else {
        // Never valid so far: nothing to run.
        let message = spec_error.unwrap_or_default();
        status.set_condition(ct::SPEC_VALID, false, "ValidationFailed", message.clone(), now);
        status.phase = Phase::Invalid;
        status.message = message.clone();
        status.ready_since = None;
        status.set_condition(ct::READY, false, "SpecInvalid", message.clone(), now);
        status.set_abnormal(ct::RECONCILING, false, "", "", now);
        status.set_abnormal(ct::STALLED, true, "SpecInvalid", message, now);
        return Outcome { status, actions: BTreeMap::new(), error: None, gone: false, drift: 0 };
    };
    status.revision = lab.revision.clone();
    let desired = desired_lab(&lab.lab);
    publish_shaping(store, &desired);
    let plan = diff(&desired, observed);
    let was_running = |short: &str| status.services.get(short).is_some_and(|s| s.running > 0);
    let vanished = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::CreateService(s) if was_running(&s.short_name)))
        .count() as u64;
    let drift = plan.drift as u64 + vanished;
    let (actions, errors) = execute(swarm, store, name, &plan).await;
    let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();


    let missing_networks: Vec<String> = desired
        .networks
        .iter()
        .filter(|n| !observed.networks.iter().any(|o| o.name == n.name))
        .map(|n| n.name.clone())
        .collect();

    // Services
    let mut services = BTreeMap::new();
    let mut not_running = Vec::new();
    let mut failing_tasks = Vec::new();
    for want in &desired.services {
        let have = observed.services.iter().find(|o| o.name == want.name);
        let mut s = ServiceStatus {
            desired: want.replicas.unwrap_or_else(|| have.map(|h| h.desired).unwrap_or(0)),
            running: have.map(|h| h.running).unwrap_or(0),
            message: String::new(),
        };
        if let Some(h) = have.filter(|h| h.running < s.desired) {
            if let Ok(Some(t)) = swarm.task_trouble(&h.id).await {
                let mut message = format!("{}: {}", t.state, t.message);
                if t.image_missing {
                    message.push_str(" (labd never pulls: build or `docker load` the image on every node)");
                }
                if t.failed {
                    failing_tasks.push(format!("{}: {message}", want.short_name));
                }
                s.message = message;
            }
        }
        if s.running < s.desired || have.is_none() {
            not_running.push(format!("{} {}/{}", want.short_name, s.running, s.desired));
        }
        services.insert(want.short_name.clone(), s);
    }
    // Services labd removed itself (to move them to a recreated network) are not running now,
    // and their coming back next pass is no drift.
    for a in &plan.actions {
        if let Action::RemoveService { name: full, detach: true, .. } = a {
            if let Some(s) = desired.services.iter().find(|d| &d.name == full).and_then(|d| services.get_mut(&d.short_name)) {
                s.running = 0;
                s.message = "recreating on its recreated network".into();
            }
        }
    }
    status.services = services;
    let findings = Findings {
        spec_error,
        conflicts: plan.conflicts.clone(),
        errors: errors.clone(),
        acted: plan.actions.len(),
        networks: desired.networks.len(),
        missing_networks,
        services: desired.services.len(),
        not_running,
        failing_tasks,
        down_nodes: observed.down_nodes.clone(),
        shaping: shaping_condition(store, &desired, observed).await,
    };
    let status = verdict::derive(status, &findings, now);
    let error = (!errors.is_empty()).then(|| errors.join("; "));
    Outcome { status, actions, error, gone: false, drift }
}


/// Compares what the agents report with the running tasks of services that have conditions.
async fn shaping_condition(store: &RedisStore, desired: &DesiredLab, observed: &Observed) -> ShapingState {
    let shaped: Vec<&crate::plan::DesiredService> = desired.services.iter().filter(|s| !s.shaping.is_empty()).collect();
    if shaped.is_empty() {
        return ShapingState::Done("no conditions".into());
    }
    let Some(reports) = store.task_shaping(&desired.lab).await else {
        return ShapingState::Pending("cannot read the agents' reports from redis".into());
    };
    let expected: u64 = shaped
        .iter()
        .filter_map(|s| observed.services.iter().find(|o| o.name == s.name))
        .map(|o| o.running)
        .sum();
    // An agent refreshes its reports twice a second; older ones are from a node that is gone.
    let fresh_after = chrono::Utc::now() - chrono::Duration::seconds(10);
    let relevant: Vec<&crate::status::TaskShaping> = reports
        .iter()
        .filter(|r| shaped.iter().any(|s| s.short_name == r.service))
        .filter(|r| r.updated_at.is_some_and(|t| t > fresh_after))
        .collect();
    let failing: Vec<String> = relevant
        .iter()
        .flat_map(|r| r.attachments.iter().map(move |a| (r, a)))
        .filter_map(|(r, a)| {
            let mut why: Vec<String> = a.error.iter().cloned().collect();
            why.extend(a.unsupported.iter().cloned());
            (!why.is_empty()).then(|| format!("{} {} on {}: {}", r.service, r.container, a.network, why.join(", ")))
        })
        .collect();
    let done = relevant.iter().filter(|r| r.converged()).count() as u64;
    let backends: std::collections::BTreeSet<String> =
        relevant.iter().flat_map(|r| r.attachments.iter().filter_map(|a| a.backend.map(|b| b.to_string()))).collect();
    let backends = backends.into_iter().collect::<Vec<_>>().join(", ");
    if !failing.is_empty() {
        ShapingState::Failing(failing.join("; "))
    } else if done >= expected {
        ShapingState::Done(format!("{done} tasks shaped ({backends})"))
    } else {
        ShapingState::Pending(format!("{done}/{expected} tasks shaped"))
    }
}


/// Desired shaping per service and network, for the node agents.
fn publish_shaping(store: &RedisStore, desired: &DesiredLab) {
    let shaping: BTreeMap<&str, _> = desired.services.iter().filter(|s| !s.shaping.is_empty()).map(|s| (s.short_name.as_str(), &s.shaping)).collect();
    let json = (!shaping.is_empty()).then(|| serde_json::to_string(&shaping).unwrap_or_default());
    store.put_shaping(&desired.lab, json);
}
