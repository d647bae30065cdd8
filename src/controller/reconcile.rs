//! Reconciling one lab: observe, plan, act, and compute its status. Runs as its own task, so a
//! slow or failing lab never holds up another.

use std::collections::BTreeMap;

use chrono::Utc;

use crate::plan::{desired_lab, diff, teardown, Action, ActionKind, DesiredLab, ObjectKind, Observed, Plan};
use crate::spec::{Diagnostic, ValidLab};
use crate::status::{condition_types as ct, ConditionStatus, EventReason, LabStatus, Phase, ServiceStatus};
use crate::store::RedisStore;
use crate::swarm::{Swarm, SwarmError};

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
    match &invalid {
        Some(diags) => {
            let first = diags.first().map(|d| d.to_string()).unwrap_or_default();
            let more = if diags.len() > 1 { format!(" (and {} more)", diags.len() - 1) } else { String::new() };
            status.set_condition(ct::SPEC_VALID, false, "ValidationFailed", format!("{first}{more}"), now);
        }
        None => status.set_condition(ct::SPEC_VALID, true, "Valid", "the lab definition is valid", now),
    }
    let Some(lab) = lab else {
        // Never valid so far: nothing to run.
        status.phase = Phase::Invalid;
        status.message = status.condition(ct::SPEC_VALID).map(|c| c.message.clone()).unwrap_or_default();
        status.set_condition(ct::READY, false, "SpecInvalid", status.message.clone(), now);
        status.set_abnormal(ct::STALLED, true, "SpecInvalid", status.message.clone(), now);
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
    let acted = !plan.actions.is_empty();

    let mut problems: Vec<String> = plan.conflicts.iter().map(|c| c.to_string()).collect();
    problems.extend(errors.iter().cloned());

    // Networks
    let missing_nets: Vec<&str> = desired
        .networks
        .iter()
        .filter(|n| !observed.networks.iter().any(|o| o.name == n.name))
        .map(|n| n.name.as_str())
        .collect();
    if missing_nets.is_empty() && plan.conflicts.iter().all(|c| c.kind != ObjectKind::Network) {
        status.set_condition(ct::NETWORKS_READY, true, "Created", format!("{} networks", desired.networks.len()), now);
    } else {
        status.set_condition(ct::NETWORKS_READY, false, "Creating", format!("creating {}", missing_nets.join(", ")), now);
    }

    // Services
    let mut services = BTreeMap::new();
    let mut not_ready = Vec::new();
    let mut troubles = Vec::new();
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
                    troubles.push(format!("{}: {message}", want.short_name));
                }
                s.message = message;
            }
        }
        if s.running < s.desired || have.is_none() {
            not_ready.push(format!("{} {}/{}", want.short_name, s.running, s.desired));
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
    let (ready_n, total) = (desired.services.len() - not_ready.len(), desired.services.len());
    if not_ready.is_empty() && !acted {
        status.set_condition(ct::SERVICES_READY, true, "AllRunning", format!("{ready_n}/{total} services running"), now);
    } else if !troubles.is_empty() {
        status.set_condition(ct::SERVICES_READY, false, "TasksFailing", troubles.join("; "), now);
    } else {
        status.set_condition(ct::SERVICES_READY, false, "Starting", format!("waiting for {}", not_ready.join(", ")), now);
    }

    if !not_ready.is_empty() {
        // Tasks missing: a node that is down is the first thing a user wants to know.
        for node in &observed.down_nodes {
            troubles.push(format!("node {node} is down"));
        }
    }
    let shaping = shaping_condition(store, &desired, observed).await;
    match &shaping {
        ShapingState::Done(msg) => status.set_condition(ct::SHAPING_APPLIED, true, "Applied", msg.clone(), now),
        ShapingState::Pending(msg) => status.set_condition(ct::SHAPING_APPLIED, false, "Applying", msg.clone(), now),
        ShapingState::Failing(msg) => status.set_condition(ct::SHAPING_APPLIED, false, "ShapingFailed", msg.clone(), now),
    }
    if let ShapingState::Failing(msg) = &shaping {
        troubles.push(format!("shaping: {msg}"));
    }
    if let ShapingState::Pending(msg) = &shaping {
        not_ready.push(format!("shaping ({msg})"));
    }

    let error = (!errors.is_empty()).then(|| errors.join("; "));
    let ready = problems.is_empty() && not_ready.is_empty() && !acted;
    status.last_error = error.clone().or_else(|| (!plan.conflicts.is_empty()).then(|| problems.join("; ")));
    let (phase, message) = if !plan.conflicts.is_empty() || error.is_some() {
        (Phase::Failed, problems.join("; "))
    } else if !troubles.is_empty() {
        (Phase::Degraded, troubles.join("; "))
    } else if ready {
        (Phase::Ready, format!("{ready_n}/{total} services running"))
    } else {
        (Phase::Progressing, if acted { format!("applied {} changes", plan.actions.len()) } else { format!("waiting for {}", not_ready.join(", ")) })
    };
    status.phase = phase;
    status.message = message.clone();
    if ready {
        status.ready_since.get_or_insert(now);
    } else {
        status.ready_since = None;
    }
    status.set_condition(ct::READY, ready, if ready { "Converged" } else { reason_of(phase) }, message.clone(), now);
    status.set_abnormal(ct::RECONCILING, matches!(phase, Phase::Progressing), "Progressing", message.clone(), now);
    status.set_abnormal(ct::STALLED, matches!(phase, Phase::Failed | Phase::Degraded), reason_of(phase), message, now);
    if let Some(c) = status.condition(ct::SPEC_VALID).filter(|c| c.status == ConditionStatus::False).cloned() {
        // The last good version runs, but the user's current file is broken: say that first.
        status.phase = Phase::Invalid;
        status.message = c.message.clone();
        status.set_condition(ct::READY, false, "SpecInvalid", c.message.clone(), now);
        status.set_abnormal(ct::STALLED, true, "SpecInvalid", c.message, now);
    }
    Outcome { status, actions, error, gone: false, drift }
}

enum ShapingState {
    Done(String),
    Pending(String),
    Failing(String),
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

fn reason_of(phase: Phase) -> &'static str {
    match phase {
        Phase::Failed => "ReconcileFailed",
        Phase::Degraded => "TasksFailing",
        Phase::Progressing => "Progressing",
        _ => "NotReady",
    }
}

/// Desired shaping per service and network, for the node agents.
fn publish_shaping(store: &RedisStore, desired: &DesiredLab) {
    let shaping: BTreeMap<&str, _> = desired.services.iter().filter(|s| !s.shaping.is_empty()).map(|s| (s.short_name.as_str(), &s.shaping)).collect();
    let json = (!shaping.is_empty()).then(|| serde_json::to_string(&shaping).unwrap_or_default());
    store.put_shaping(&desired.lab, json);
}
