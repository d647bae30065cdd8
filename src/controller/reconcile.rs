//! Reconciling one lab: observe, plan, act, and compute its status. Runs as its own task, so a
//! slow or failing lab never holds up another.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;


use chrono::Utc;

use crate::plan::{self, desired_lab, labels, diff, shaping_in_force, teardown, Action, ActionKind, DesiredLab, DesiredService, JobGate, JobWait, LabMemory, Observed, ObservedService, Plan, RolloutState, Shaping, TroubleCause};
use crate::spec::{Diagnostic, ValidLab};
use crate::status::{condition_types as ct, ConditionStatus, EventReason, LabStatus, Phase, ScheduleStatus, ServiceStatus};
use crate::store::LabStore;
use crate::swarm::{Swarm, SwarmError};

use super::clock;
use super::verdict::{self, Findings, ShapingState};

/// Who suspended a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendedBy {
    /// `labctl suspend LAB` (until `labctl resume LAB`).
    Labctl,
    /// `suspend: true` in the lab's spec.
    Spec,
}

impl std::fmt::Display for SuspendedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SuspendedBy::Labctl => "`labctl suspend` (undo with `labctl resume`)",
            SuspendedBy::Spec => "`suspend: true` in the lab's spec",
        })
    }
}

/// What the controller asks of one reconcile.
#[derive(Debug, Clone)]
pub enum Target {
    /// Converge to `lab`. `invalid` holds the errors of a newer, broken definition: the lab
    /// then keeps its last good version and its phase is Invalid.
    /// `started_by_hand`: the last `labctl start` (time 0 of a `start: manual` schedule).
    /// `last_seen`: the lab's services on Swarm at its last pass; one of them missing now was
    /// removed outside labd (drift), whatever its tasks were doing.
    Apply {
        lab: Option<ValidLab>,
        invalid: Option<Vec<Diagnostic>>,
        suspended: Option<SuspendedBy>,
        started_by_hand: Option<chrono::DateTime<Utc>>,
        last_seen: BTreeSet<String>,
        /// Each service's settings as labd last saw them right after it applied its spec, by
        /// service name: a hand edit shows against them.
        applied: BTreeMap<String, AppliedSettings>,
        /// What labd remembers of the lab on Swarm (`None`: no memory config).
        remembered: Option<LabMemory>,
    },
    /// No file defines the lab any more: remove everything it owns.
    Delete,
    /// No file defines the lab, but nothing shows a person removed it: leave it, say why.
    Orphaned(String),
}

/// A service's task settings (the Swarm edge's digest of them) at the first look after labd
/// applied the spec `spec_hash` names: Docker reports the same for the same spec, so another
/// value under the same hash is a hand edit. Taken again after each of labd's own changes of
/// the service, so a repair can never chase a value it cannot reach (it would restart the tasks
/// at every pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedSettings {
    pub spec_hash: String,
    pub settings: u64,
}

/// When to look at a lab again after a pass that did not fail (kube-runtime's `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Settled (Ready, never valid, orphaned): only an event, a file change or the resync.
    AwaitChange,
    /// Still converging: check again after this long, even without an event.
    After(Duration),
}

/// Why a pass failed; the controller's error policy (the lab's backoff) decides the retry.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Observe(SwarmError),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Actions(Vec<SwarmError>),
    #[error("internal error (reconcile panicked: {0}); retrying")]
    Panicked(String),
    #[error("reconcile took longer than {}s (Docker not answering?); retrying", .0.as_secs())]
    TimedOut(Duration),
}

#[derive(Debug)]
pub struct Outcome {
    pub status: LabStatus,
    /// Actions performed, by kind.
    pub actions: BTreeMap<&'static str, u64>,
    pub result: Result<Requeue, ReconcileError>,
    /// Nothing of the lab is left on Swarm (after a Delete).
    pub gone: bool,
    /// Repairs of changes made outside labd: services scaled or changed by hand, and services
    /// that were on Swarm at the last pass and are gone now.
    pub drift: u64,
    /// The lab's services left on Swarm after this pass (`None`: this pass did not look).
    pub seen: Option<BTreeSet<String>>,
    /// The services' applied settings to remember (`None`: this pass did not look).
    pub applied: Option<BTreeMap<String, AppliedSettings>>,
    /// What this pass wrote of the lab's memory on Swarm (`None`: nothing new).
    pub memory: Option<LabMemory>,
}

fn kind_name(k: ActionKind) -> &'static str {
    match k {
        ActionKind::Create => "create",
        ActionKind::Update => "update",
        ActionKind::Remove => "remove",
    }
}

/// How many changes of one stage are in flight at once.
const CONCURRENT_ACTIONS: usize = 16;

async fn perform<S: Swarm>(swarm: &S, action: &Action) -> Result<(), SwarmError> {
    let (result, removed) = match action {
        Action::CreateNetwork(n) => (swarm.create_network(n).await, None),
        Action::RemoveNetwork { id, name, .. } => (swarm.remove_network(id).await, Some(("network", name))),
        Action::CreateService(s) => (swarm.create_service(s).await, None),
        Action::UpdateService { id, version, force_update, desired, .. } => (swarm.update_service(id, *version, *force_update, desired).await, None),
        Action::RemoveService { id, name, .. } => (swarm.remove_service(id).await, Some(("service", name))),
    };
    // A removal goes by id; what a user reads (status, events) names the object.
    match (result, removed) {
        (Err(SwarmError::Api { message, .. }), Some((kind, name))) => Err(SwarmError::Api { action: format!("remove {kind} {name}"), message }),
        (result, _) => result,
    }
}

/// Runs the plan stage by stage; the actions of a stage, independent of each other, are sent
/// concurrently (as many creates as the lab has services take one round trip, not N).
async fn execute<S: Swarm>(swarm: &S, store: &impl LabStore, lab: &str, plan: &Plan) -> Executed {
    let mut executed = Executed::default();
    let mut stages: BTreeMap<u8, Vec<&Action>> = BTreeMap::new();
    for action in &plan.actions {
        stages.entry(action.stage()).or_default().push(action);
    }
    for actions in stages.into_values() {
        for batch in actions.chunks(CONCURRENT_ACTIONS) {
            let results = futures::future::join_all(batch.iter().map(|action| perform(swarm, action))).await;
            for (action, result) in batch.iter().zip(results) {
                executed.record(store, lab, action, result);
            }
        }
    }
    executed
}

/// What running a plan did.
#[derive(Debug, Default)]
struct Executed {
    /// Actions applied, by kind.
    done: BTreeMap<&'static str, u64>,
    errors: Vec<SwarmError>,
    /// Networks Swarm would not remove yet: tasks on them are still stopping. Not an error;
    /// the removal is tried again at the next pass.
    in_use: Vec<String>,
    /// Services whose update Swarm refused: they still carry what they had (a hand edit
    /// included), so what labd remembers of them stays, and the next pass tries again.
    failed_updates: BTreeSet<String>,
}

impl Executed {
    fn record(&mut self, store: &impl LabStore, lab: &str, action: &Action, result: Result<(), SwarmError>) {
        let Executed { done, errors, in_use, failed_updates } = self;
        if let (Action::UpdateService { desired, .. }, Err(_)) = (action, &result) {
            failed_updates.insert(desired.name.clone());
        }
        match result {
            Ok(()) => {
                *done.entry(kind_name(action.kind())).or_default() += 1;
                tracing::info!(lab, action = %action.describe(), "applied");
                store.event(lab, event(EventReason::Applied, action.describe()));
            }
            Err(SwarmError::AlreadyExists(name)) => tracing::debug!(lab, %name, "already exists; the next pass sees it"),
            // A removal that found nothing: what the next observation confirms, not an action.
            Err(SwarmError::NotFound(what)) => tracing::debug!(lab, %what, "gone already"),
            // A network whose tasks are still stopping: removed by a later pass.
            Err(e @ SwarmError::InUse { .. }) => {
                tracing::debug!(lab, action = %action.describe(), error = %e, "still in use");
                match action {
                    Action::RemoveNetwork { name, .. } => in_use.push(name.clone()),
                    _ => errors.push(e),
                }
            }
            Err(e) => {
                tracing::warn!(lab, action = %action.describe(), error = %e, "action failed");
                errors.push(e);
            }
        }
    }
}

pub fn event(reason: EventReason, message: impl Into<String>) -> crate::status::LabEvent {
    crate::status::LabEvent::now(reason, message)
}

/// One pass over one lab. `poll`: how soon a lab still converging is looked at again.
pub async fn reconcile<S: Swarm>(swarm: &S, store: &impl LabStore, name: &str, target: Target, mut status: LabStatus, poll: Duration) -> Outcome {
    let now = Utc::now();
    status.name = name.to_string();
    status.updated_at = Some(now);
    status.created_at.get_or_insert(now);
    let observed = match swarm.observe(name).await {
        Ok(o) => o,
        Err(e) => return failed(status, ReconcileError::Observe(e)),
    };
    let memory = match &target {
        Target::Apply { suspended, remembered, .. } => Some((remembered.clone(), *suspended == Some(SuspendedBy::Labctl))),
        _ => None,
    };
    let deleting = matches!(target, Target::Delete);
    let progress_deadline = match &target {
        Target::Apply { lab: Some(lab), .. } => lab.lab.spec.progress_deadline.map(|d| d.as_std()),
        _ => None,
    }
    .unwrap_or(verdict::DEFAULT_PROGRESS_DEADLINE);
    // The progress deadline's clock runs only while labd applies the lab: a resumed lab starts
    // it again.
    if !matches!(target, Target::Apply { suspended: None, .. }) {
        status.waiting = None;
    }
    let mut outcome = match target {
        Target::Delete => delete(swarm, store, name, &observed, status).await,
        Target::Orphaned(why) => orphaned(name, &observed, status, why),
        Target::Apply { lab: Some(lab), suspended: Some(by), started_by_hand, .. } => suspended(name, &lab, &observed, status, by, started_by_hand),
        Target::Apply { lab, invalid, started_by_hand, last_seen, applied, .. } => {
            apply(swarm, store, name, lab, invalid, started_by_hand, (&last_seen, &applied), &observed, status).await
        }
    };
    if let Some((remembered, by_labctl)) = memory {
        // Drift repaired: what removed the services (`docker stack rm`) may have taken the
        // memory with them, so it is written again if there is anything to remember.
        let remembered = remembered.filter(|_| outcome.drift == 0);
        outcome.memory = remember(swarm, name, LabMemory::of(&outcome.status, by_labctl), remembered).await;
    }
    if deleting && outcome.gone {
        // The memory goes last, so a teardown cut short still finds the lab by it.
        if let Err(e) = swarm.forget(name).await {
            outcome.gone = false;
            outcome.result = Err(ReconcileError::Actions(vec![e]));
        }
    }
    if let Ok(requeue) = &mut outcome.result {
        *requeue = requeue_of(&outcome.status, outcome.gone, poll, progress_deadline, now);
        // Jobs waiting for Ready run as soon as it is (and a schedule's, at its start, below).
        if outcome.status.ready_for_jobs() && outcome.status.services.values().any(|s| s.waits_for == Some(JobWait::LabReady)) {
            *requeue = Requeue::After(Duration::ZERO);
        }
        // The schedule's next change, or its start now that the lab is Ready.
        if let Some(s) = outcome.status.schedule.as_ref().filter(|_| !matches!(outcome.status.phase, Phase::Deleting | Phase::Suspended)) {
            let wake = match (s.started_at, s.next_change_at) {
                (None, _) if outcome.status.ready_since.is_some() => Some(Duration::ZERO),
                (_, Some(at)) => Some((at - Utc::now()).to_std().unwrap_or(Duration::ZERO)),
                _ => None,
            };
            if let Some(wake) = wake {
                *requeue = match *requeue {
                    Requeue::After(d) if d <= wake => Requeue::After(d),
                    _ => Requeue::After(wake),
                };
            }
        }
    }
    outcome
}

/// Writes the lab's memory on Swarm when it differs from what is there (a lab that never had
/// anything to remember gets no config). A failed write is retried at the next pass; it
/// fails nothing else.
async fn remember<S: Swarm>(swarm: &S, name: &str, wanted: LabMemory, remembered: Option<LabMemory>) -> Option<LabMemory> {
    if wanted == remembered.unwrap_or_default() {
        return None;
    }
    match swarm.remember(name, &wanted).await {
        Ok(()) => {
            tracing::debug!(lab = name, memory = ?wanted, "memory written on Swarm");
            Some(wanted)
        }
        Err(e) => {
            tracing::warn!(lab = name, error = %e, "cannot write the lab's memory on Swarm (its suspension and schedule clock); retrying at the next pass");
            None
        }
    }
}

/// The longest a stuck lab goes without a look of its own. Its Docker events (a task started or
/// failed, an object removed) and file changes still bring one at once: the poll is the safety
/// net for what sends no event (an agent's shaping report, a task Swarm counts late).
pub const STUCK_POLL_MAX: Duration = Duration::from_secs(5);

/// The requeue rule: settled labs wait for a change; the rest are looked at again after `poll`,
/// or, when stuck on the same thing (waiting for it, or Stalled: Failed, Degraded, Invalid),
/// after an eighth of the time they have been stuck, up to [`STUCK_POLL_MAX`]; a waiting lab
/// never past its progress deadline, which must make it Degraded on time. (Measured: a lab
/// Failed on a name conflict was looked at four times a second for as long as it stayed so.)
fn requeue_of(status: &LabStatus, gone: bool, poll: Duration, progress_deadline: Duration, now: chrono::DateTime<Utc>) -> Requeue {
    let never_valid = status.phase == Phase::Invalid && status.revision.is_empty();
    let settled = match status.phase {
        Phase::Deleting => gone,
        Phase::Orphaned | Phase::Suspended | Phase::Completed => true,
        _ => status.ready_since.is_some() || never_valid,
    };
    if settled {
        return Requeue::AwaitChange;
    }
    let waiting_since = status.waiting.as_ref().map(|w| w.since);
    let stalled_since = status.condition(ct::STALLED).filter(|c| c.status == ConditionStatus::True).map(|c| c.last_transition_time);
    let Some(since) = waiting_since.or(stalled_since) else { return Requeue::After(poll) };
    let stuck = (now - since).to_std().unwrap_or_default();
    let mut wait = (stuck / 8).min(STUCK_POLL_MAX).max(poll);
    if waiting_since.is_some() && stuck < progress_deadline {
        wait = wait.min(progress_deadline - stuck);
    }
    Requeue::After(wait)
}

pub(crate) fn failed(mut status: LabStatus, error: ReconcileError) -> Outcome {
    let now = Utc::now();
    let message = error.to_string();
    status.phase = Phase::Failed;
    status.message = message.clone();
    status.last_error = Some(message.clone());
    status.set_condition(ct::READY, false, "ReconcileFailed", message.clone(), now);
    status.set_abnormal(ct::STALLED, true, "ReconcileFailed", message, now);
    status.ready_since = None;
    Outcome { status, actions: BTreeMap::new(), result: Err(error), gone: false, drift: 0, seen: None, applied: None, memory: None }
}

/// Whether a lab without a schedule may start its jobs: the last pass found it up (networks,
/// services, conditions), and for this very definition: after an edit, its services converge
/// first (one pass more for an edit of a job alone).
fn jobs_may_start(last: &LabStatus, lab: &ValidLab) -> bool {
    last.revision == lab.revision && last.ready_for_jobs()
}

/// The lab's Swarm objects with what its schedule has in force: all of it, or stopped (marked
/// with the clock that stopped it); its jobs held until they may run.
fn desired_in_force(lab: &ValidLab, tick: Option<&clock::Tick>, ready: bool, observed: &Observed) -> DesiredLab {
    let gate = match tick {
        // With a schedule, its jobs run with each of its runs.
        Some(t) => match (&t.in_force, t.status.started_at) {
            (Some(f), Some(at)) => JobGate::Open { run: Some(format!("{}#{}", labels::schedule_clock(&t.status.revision, at), f.run)) },
            _ => JobGate::Closed(JobWait::ScheduleStart),
        },
        None if ready => JobGate::Open { run: None },
        None => JobGate::Closed(JobWait::LabReady),
    };
    let desired = plan::hold_dependents(plan::gate_jobs(desired_lab(&lab.lab), &gate, observed), observed);
    let stopped_by = tick.filter(|t| t.in_force.as_ref().is_some_and(|f| f.stopped)).and_then(|t| Some(labels::schedule_clock(&t.status.revision, t.status.started_at?)));
    match stopped_by {
        Some(clock) => plan::stopped(desired, &clock),
        None => desired,
    }
}

/// The lab's schedule clock now (`None`: no schedule), from the clock the last pass left: in
/// the status, or, when the status is gone (Redis lost it) and the schedule had stopped the
/// lab, on the stopped services. Without that the clock would wait for Ready again, and the
/// lab would start and run its schedule anew.
fn tick_of(name: &str, lab: &ValidLab, status: &LabStatus, observed: &Observed, started_by_hand: Option<chrono::DateTime<Utc>>, now: chrono::DateTime<Utc>) -> Option<clock::Tick> {
    let schedule = lab.lab.spec.schedule.as_ref()?;
    let on_swarm = || {
        let found = observed.services.iter().filter(|s| labels::owned_by(name, &s.labels)).find_map(|s| labels::parse_schedule_clock(s.labels.get(labels::SCHEDULE_CLOCK)?));
        found.map(|(revision, started_at)| ScheduleStatus { revision, started_at: Some(started_at), finished: true, ..Default::default() })
    };
    let previous = status.schedule.clone().or_else(on_swarm);
    Some(clock::tick(schedule, previous.as_ref(), status.ready_since.is_some(), started_by_hand, now, &lab.replicas()))
}

/// A suspended lab is looked at, never changed: its status shows what runs, and why nothing is
/// done about the rest. Its shaping and its schedule stay as they were.
fn suspended(name: &str, lab: &ValidLab, observed: &Observed, mut status: LabStatus, by: SuspendedBy, started_by_hand: Option<chrono::DateTime<Utc>>) -> Outcome {
    let now = Utc::now();
    // What the resume would run: a schedule that stopped the lab (its clock runs on, read
    // here and not kept) leaves nothing waiting in a lab that stays stopped.
    let tick = tick_of(name, lab, &status, observed, started_by_hand, now);
    let desired = desired_in_force(lab, tick.as_ref(), jobs_may_start(&status, lab), observed);
    let pending = diff(&desired, observed).actions.len();
    status.services = desired
        .services
        .iter()
        .map(|want| {
            let have = observed.services.iter().find(|o| o.name == want.name);
            let mut s = ServiceStatus {
                desired: want.replicas.unwrap_or_else(|| have.map(|h| h.desired).unwrap_or(0)),
                running: have.map(|h| h.running).unwrap_or(0),
                outdated: have.map(|h| h.outdated).unwrap_or(0),
                completed: have.and_then(|h| h.completed),
                waits_for: desired.waiting_jobs.get(&want.name).copied(),
                waits_for_services: desired.held.get(&want.name).cloned().unwrap_or_default(),
                message: String::new(),
                ..Default::default()
            };
            s.count_restarts(status.services.get(&want.short_name), have.map_or(&[], |h| &h.exits));
            (want.short_name.clone(), s)
        })
        .collect();
    status.phase = Phase::Suspended;
    let waiting = if pending == 0 { "nothing is waiting".to_string() } else { format!("{pending} changes wait for the resume") };
    status.message = format!("suspended by {by}: labd changes nothing; {waiting}");
    status.set_condition(ct::SUSPENDED, true, "Suspended", status.message.clone(), now);
    status.set_abnormal(ct::RECONCILING, false, "", "", now);
    Outcome { status, actions: BTreeMap::new(), result: Ok(Requeue::AwaitChange), gone: false, drift: 0, seen: None, applied: None, memory: None }
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
    Outcome { status, actions: BTreeMap::new(), result: Ok(Requeue::AwaitChange), gone: owned.is_empty(), drift: 0, seen: None, applied: None, memory: None }
}

async fn delete<S: Swarm>(swarm: &S, store: &impl LabStore, name: &str, observed: &Observed, mut status: LabStatus) -> Outcome {
    let plan = teardown(name, observed);
    if plan.is_empty() {
        status.phase = Phase::Deleting;
        return Outcome { status, actions: BTreeMap::new(), result: Ok(Requeue::AwaitChange), gone: true, drift: 0, seen: None, applied: None, memory: None };
    }
    let Executed { done: actions, errors, .. } = execute(swarm, store, name, &plan).await;
    status.phase = Phase::Deleting;
    status.ready_since = None;
    status.message = format!("removing {} objects", plan.actions.len());
    status.set_abnormal(ct::RECONCILING, true, "Deleting", "the lab's file is gone", Utc::now());
    // Networks are only removable once their tasks have stopped: not an error, just later.
    let result = if errors.is_empty() { Ok(Requeue::AwaitChange) } else { Err(ReconcileError::Actions(errors)) };
    Outcome { status, actions, result, gone: false, drift: 0, seen: None, applied: None, memory: None }
}

#[allow(clippy::too_many_arguments)]
async fn apply<S: Swarm>(
    swarm: &S,
    store: &impl LabStore,
    name: &str,
    lab: Option<ValidLab>,
    invalid: Option<Vec<Diagnostic>>,
    started_by_hand: Option<chrono::DateTime<Utc>>,
    (last_seen, applied): (&BTreeSet<String>, &BTreeMap<String, AppliedSettings>),
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
        return Outcome { status, actions: BTreeMap::new(), result: Ok(Requeue::AwaitChange), gone: false, drift: 0, seen: None, applied: None, memory: None };
    };
    let jobs_may_start = jobs_may_start(&status, &lab);
    status.revision = lab.revision.clone();
    status.conditions.retain(|c| c.type_ != ct::SUSPENDED);
    // The schedule's clock runs in labd: the agents get the conditions in force, never time.
    // A stopped lab keeps its clock (and so stays stopped); an edited schedule starts when the
    // lab is Ready again.
    let tick = tick_of(name, &lab, &status, observed, started_by_hand, now);
    let in_force = tick.as_ref().and_then(|t| t.in_force.as_ref());
    let stopped = in_force.is_some_and(|f| f.stopped);
    let desired = desired_in_force(&lab, tick.as_ref(), jobs_may_start, observed);
    // A partition cuts tasks off by address: where the other groups' tasks are now. Unknown
    // addresses would publish a partition that cuts nothing, and agents would report it applied.
    // Links classify packets by destination address the same way.
    let mut addresses = BTreeMap::new();
    if in_force.is_some_and(|f| !f.partition.is_empty()) || !desired.links.is_empty() {
        match swarm.lab_addresses(&desired, observed).await {
            Ok(found) => addresses = found,
            Err(e) => return failed(status, ReconcileError::Observe(e)),
        }
    }
    let shaping = shaping_in_force(&desired, in_force, &addresses);
    publish_shaping(store, &desired.lab, &shaping);
    // A stop's grace is the service's, as `docker stop` and Swarm use it.
    let stop_grace = |short: &str| desired.services.iter().find(|s| s.short_name == short).and_then(|s| s.stop_grace_period).unwrap_or(plan::faults::SWARM_STOP_GRACE);
    let faults = plan::faults_in_force(lab.lab.spec.schedule.as_ref(), in_force, tick.as_ref().and_then(|t| t.status.started_at), stop_grace);
    store.put_faults(&desired.lab, (!faults.is_empty()).then(|| serde_json::to_string(&faults).unwrap_or_default()));
    let observed = &with_applied_settings(observed, applied);
    let plan = diff(&desired, observed);
    // Not "was running": a service listed just before its removal, its tasks just after, looks
    // stopped, and a service removed while its tasks start is drift too.
    let vanished = plan.actions.iter().filter(|a| matches!(a, Action::CreateService(s) if last_seen.contains(&s.name))).count() as u64;
    let drift = plan.drift as u64 + vanished;
    let seen = Some(seen_after(name, observed, &plan));
    let Executed { done: actions, errors: swarm_errors, in_use, failed_updates } = execute(swarm, store, name, &plan).await;
    let applied = Some(applied_after(name, observed, &plan, applied, &failed_updates));
    // Files no service names any more (a new content is a new config; a file or a service
    // dropped) go once the services are updated. Swarm keeps any a service still names (an
    // update that failed); the lab's removal takes whatever is left.
    if plan.actions.iter().any(|a| matches!(a, Action::UpdateService { .. } | Action::RemoveService { .. })) {
        let keep = desired.services.iter().flat_map(|s| &s.files).map(|f| f.config_name.clone()).collect();
        if let Err(e) = swarm.prune_files(name, &keep).await {
            tracing::warn!(lab = name, error = %e, "cannot remove the file configs no service names any more; they go with the next update or with the lab");
        }
    }
    let errors: Vec<String> = swarm_errors.iter().map(|e| e.to_string()).collect();


    // Networks being recreated count as missing until the new one exists.
    let recreating: Vec<&str> = plan.actions.iter().filter_map(|a| if let Action::RemoveNetwork { name, recreate: true, .. } = a { Some(name.as_str()) } else { None }).collect();
    let missing_networks: Vec<String> = desired
        .networks
        .iter()
        .filter(|n| recreating.contains(&n.name.as_str()) || !observed.networks.iter().any(|o| o.name == n.name))
        .map(|n| n.name.clone())
        .collect();

    // Services
    let mut services = BTreeMap::new();
    let mut not_running = Vec::new();
    let mut failing_tasks = Vec::new();
    let mut jobs = Vec::new();
    let mut jobs_to_start = Vec::new();
    for want in &desired.services {
        let have = observed.services.iter().find(|o| o.name == want.name);
        let job = want.mode.is_job();
        let waits_for = desired.waiting_jobs.get(&want.name).copied();
        let after = desired.held.get(&want.name).cloned().unwrap_or_default();
        let mut s = ServiceStatus {
            desired: want.replicas.unwrap_or_else(|| have.map(|h| h.desired).unwrap_or(0)),
            running: have.map(|h| h.running).unwrap_or(0),
            outdated: have.map(|h| h.outdated).unwrap_or(0),
            // A run that waits has completed nothing yet (what Swarm has is an earlier one).
            completed: job.then(|| have.filter(|_| waits_for.is_none()).and_then(|h| h.completed).unwrap_or(0)),
            waits_for,
            message: match (waits_for, after.is_empty()) {
                (Some(w), _) => w.to_string(),
                (None, false) => format!("created once {} (`dependsOn`)", plan::order::awaited(&after)),
                (None, true) => String::new(),
            },
            waits_for_services: after.clone(),
            ..Default::default()
        };
        s.count_restarts(status.services.get(&want.short_name), have.map_or(&[], |h| &h.exits));
        // A job's tasks end by design: only its tasks not done are of interest.
        let short = if job { !s.job_done() } else { s.running < s.desired };
        // Said before the tasks' trouble: the paused update is what holds them back.
        let paused_at = failing_tasks.len();
        if let Some(h) = have.filter(|_| short && waits_for.is_none()) {
            if let Some(t) = &h.trouble {
                let mut message = format!("{}: {}", t.state, t.message);
                // Swarm holds a task with a health check in `starting` until the check passes.
                if !t.failed && want.health.as_ref().is_some_and(plan::Health::runs) {
                    message = format!("{}: {} (its health check has not passed yet)", t.state, t.message);
                }
                match t.cause {
                    Some(TroubleCause::ImageMissing) => message.push_str(" (labd never pulls: build or `docker load` the image on every node)"),
                    Some(TroubleCause::Unhealthy) => message.push_str(" (its health check kept failing: `docker inspect` a task's container; .State.Health.Log has the check's output)"),
                    Some(TroubleCause::Unschedulable) => message.push_str(" (Swarm starts it once a node satisfies its `placement` and has the memory and CPUs it reserves: see `docker node ls` and each node's labels)"),
                    Some(TroubleCause::PortInUse) => message.push_str(&format!(" (Swarm starts it once nothing else holds {} on a node that may run it: `docker service ls` shows who publishes it; or change `ports`)", published_ports(&want.ports))),
                    Some(TroubleCause::CommandReturned) => message.push_str(" (its command returned, exit 0, and Swarm starts a service's tasks again: give it a command that keeps running, or make it a job, `mode: replicated-job`, to run it once)"),
                    Some(TroubleCause::CommandNotFound { not_executable: false }) => message.push_str(" (exit 127: its command was not found in the image; check `command` and the image's PATH)"),
                    Some(TroubleCause::CommandNotFound { not_executable: true }) => message.push_str(" (exit 126: its command is not executable in the image)"),
                    Some(TroubleCause::Killed) => match want.limits.as_ref().and_then(|l| l.memory_bytes) {
                        Some(bytes) => message.push_str(&format!(" (exit 137: killed, most likely by the kernel at its memory limit of {}: raise `resources.memory`, or it was killed by hand)", crate::usage::binary_bytes(bytes.max(0) as u64))),
                        None => message.push_str(" (exit 137: killed by SIGKILL, by hand or by the kernel when the node ran out of memory)"),
                    },
                    None => {}
                }
                // A task that ran and ended: what it printed says why, and Swarm's word does not.
                if t.failed && matches!(t.cause, None | Some(TroubleCause::CommandNotFound { .. } | TroubleCause::Killed | TroubleCause::CommandReturned)) {
                    message.push_str(&format!("; `labctl logs {} {}` shows what it printed", desired.lab, want.short_name));
                }
                if t.failed {
                    failing_tasks.push(format!("{}: {message}", want.short_name));
                    s.failing = true;
                }
                s.message = message;
            }
        }
        // A rollout Swarm paused holds the lab back until the lab's service changes again.
        if let Some((h, rollout)) = have.and_then(|h| Some((h, h.rollout.as_ref()?))).filter(|(_, r)| matches!(r.state, RolloutState::Paused | RolloutState::RollbackPaused)) {
            let message = format!(
                "Swarm paused its update ({}): {} of {} running tasks still run the previous spec; fix the service in the lab (labd updates it again), or set `update.failureAction: continue`",
                rollout.message, h.outdated, h.outdated + h.running
            );
            failing_tasks.insert(paused_at, format!("{}: {message}", want.short_name));
            s.failing = true;
            s.message = if s.message.is_empty() { message } else { format!("{message}; {}", s.message) };
        }
        // More tasks than wanted is converging too: a scale-down still stopping its tasks.
        let stopping = have.map_or(0, |h| h.stopping);
        let outdated = have.map_or(0, |h| h.outdated);
        // A job does not hold the lab back while it runs (a client may run for the whole
        // experiment): it is waited for once created, and its failures degrade the lab.
        if (!job && s.running != s.desired) || (have.is_none() && waits_for.is_none()) {
            // What a user can act on shows in the lab's message too, not only the service's.
            let why = match have.and_then(|h| h.trouble.as_ref()).and_then(|t| t.cause) {
                Some(TroubleCause::Unschedulable) => " (no node may run it)".to_string(),
                Some(TroubleCause::PortInUse) => format!(" ({} in use on every node that may run it)", published_ports(&want.ports)),
                _ if !after.is_empty() => format!(" (after {})", after.join(", ")),
                _ if outdated > 0 => updating(outdated, have, want),
                _ => String::new(),
            };
            not_running.push(format!("{} {}/{}{why}", want.short_name, s.running, s.desired));
        } else if outdated > 0 {
            not_running.push(format!("{} {}/{}{}", want.short_name, s.running, s.desired, updating(outdated, have, want)));
        } else if stopping > 0 {
            not_running.push(format!("{} {}/{} ({stopping} stopping)", want.short_name, s.running, s.desired));
        }
        match (s.completed, waits_for) {
            (_, Some(JobWait::LabReady)) => jobs_to_start.push(want.short_name.clone()),
            (_, Some(JobWait::ScheduleStart)) => jobs.push(format!("{} waiting for the schedule", want.short_name)),
            (Some(done), None) => jobs.push(format!("{} {done}/{} completed", want.short_name, s.desired)),
            (None, None) => {}
        }
        services.insert(want.short_name.clone(), s);
    }
    // Services labd removed itself (to move them to a recreated network) are not running now,
    // and their coming back next pass is no drift.
    for a in &plan.actions {
        if let Action::RemoveService { name: full, recreate: Some(why), .. } = a {
            if let Some(s) = desired.services.iter().find(|d| &d.name == full).and_then(|d| services.get_mut(&d.short_name)) {
                s.running = 0;
                s.message = match why {
                    plan::Recreate::Network => "recreating on its recreated network",
                    plan::Recreate::Mode => "recreating in its new mode",
                }
                .into();
            }
        }
    }
    // Services waiting to be created on a network being recreated: Swarm has removed the old
    // network, but a node keeps its copy (and Docker the name) until the tasks that were on it
    // have stopped, which can take their whole stop grace period.
    for want in desired.services.iter().filter(|d| observed.services.iter().all(|o| o.name != d.name)) {
        if let (Some(network), Some(s)) = (want.network_targets().find(|t| recreating.contains(t)), services.get_mut(&want.short_name)) {
            s.message = format!("waiting for network {network} to be created again (Docker keeps the old one until the tasks that were on it have stopped)");
        }
    }
    status.services = services;
    let (shaping_state, last_applied) = shaping_condition(store, &desired, &shaping, (&faults, in_force.is_some()), observed).await;
    let findings = Findings {
        spec_error,
        conflicts: plan.conflicts.clone(),
        errors: errors.clone(),
        // What changed Swarm: a removal that found its object gone already changed nothing
        // (a recreated network's old copy, listed until its tasks have stopped, is removed
        // again by every pass meanwhile).
        acted: actions.values().sum::<u64>() as usize,
        networks: desired.networks.len(),
        missing_networks,
        networks_in_use: in_use,
        services: desired.services.iter().filter(|s| !s.mode.is_job()).count(),
        jobs,
        jobs_to_start,
        not_running,
        failing_tasks,
        down_nodes: observed.down_nodes.clone(),
        shaping: shaping_state,
        stopped,
        progress_deadline: lab.lab.spec.progress_deadline.map_or(verdict::DEFAULT_PROGRESS_DEADLINE, |d| d.as_std()),
    };
    let mut status = verdict::derive(status, &findings, now);
    status.schedule = tick.map(|t| schedule_events(store, name, t, &findings.shaping, last_applied, now));
    let result = if swarm_errors.is_empty() { Ok(Requeue::AwaitChange) } else { Err(ReconcileError::Actions(swarm_errors)) };
    Outcome { status, actions, result, gone: false, drift, seen, applied, memory: None }
}

/// What a service's count waits for while Swarm rolls a change out over its tasks, and how to
/// make it quicker where the lab keeps Swarm's pace (one task at a time).
fn updating(outdated: u64, have: Option<&ObservedService>, want: &DesiredService) -> String {
    if have.is_some_and(|h| h.outdated_by_restart) {
        return format!(" (restarting: {outdated} still to be replaced)");
    }
    let pace = match want.update.and_then(|u| u.parallelism) {
        None | Some(1) => ", one at a time: `update.parallelism` sets how many at once",
        _ => "",
    };
    format!(" (updating: {outdated} still on the previous spec{pace})")
}

/// The host ports a service publishes, as a user wrote them (`port 8080`, `ports 8080, 53/udp`).
fn published_ports(ports: &[crate::spec::Port]) -> String {
    let published: Vec<String> = ports.iter().filter_map(|p| p.published.map(|n| if p.udp { format!("{n}/udp") } else { n.to_string() })).collect();
    match published.len() {
        0 => "its published port".to_string(),
        1 => format!("port {}", published[0]),
        _ => format!("ports {}", published.join(", ")),
    }
}

/// `observed` with each service's remembered settings, where it still carries the spec they
/// were taken under.
fn with_applied_settings(observed: &Observed, applied: &BTreeMap<String, AppliedSettings>) -> Observed {
    let mut out = observed.clone();
    for s in &mut out.services {
        s.applied_settings = applied.get(&s.name).filter(|a| s.labels.get(labels::SPEC_HASH) == Some(&a.spec_hash)).map(|a| a.settings);
    }
    out
}

/// The settings to remember after `plan`: kept while a service carries the spec they were
/// taken under, taken from this look for a service labd did not touch and has none for, and
/// dropped for one `plan` changed (the next look, after the change, takes them). An update
/// Swarm refused changed nothing: a repair of a hand edit is then tried again.
fn applied_after(lab: &str, observed: &Observed, plan: &Plan, applied: &BTreeMap<String, AppliedSettings>, failed_updates: &BTreeSet<String>) -> BTreeMap<String, AppliedSettings> {
    let touched: BTreeSet<&str> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::UpdateService { desired, .. } if !failed_updates.contains(&desired.name) => Some(desired.name.as_str()),
            Action::RemoveService { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    observed
        .services
        .iter()
        .filter(|s| labels::owned_by(lab, &s.labels) && s.settings_digest != 0 && !touched.contains(s.name.as_str()))
        .filter_map(|s| {
            let spec_hash = s.labels.get(labels::SPEC_HASH)?.clone();
            let kept = applied.get(&s.name).filter(|a| a.spec_hash == spec_hash).cloned();
            Some((s.name.clone(), kept.unwrap_or(AppliedSettings { spec_hash, settings: s.settings_digest })))
        })
        .collect()
}

/// The lab's own services on Swarm once `plan` ran: what it observed, less what it removed.
fn seen_after(lab: &str, observed: &Observed, plan: &Plan) -> BTreeSet<String> {
    let removed: BTreeSet<&str> = plan.actions.iter().filter_map(|a| if let Action::RemoveService { name, .. } = a { Some(name.as_str()) } else { None }).collect();
    observed
        .services
        .iter()
        .filter(|s| labels::owned_by(lab, &s.labels) && !removed.contains(s.name.as_str()))
        .map(|s| s.name.clone())
        .collect()
}


/// Records the schedule's steps as events: a new set of conditions in force, the time the
/// agents took to apply it, the end of the schedule. The time is the agents' own (`last_applied`:
/// the latest application among the reports), so labd's polling does not inflate it; labd's
/// clock is the fallback for reports without one.
fn schedule_events(
    store: &impl LabStore,
    lab: &str,
    tick: clock::Tick,
    shaping: &ShapingState,
    last_applied: Option<chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
) -> ScheduleStatus {
    let mut s = tick.status;
    if tick.in_force.is_none() {
        return s;
    }
    if tick.changed {
        let message = format!("step {}/{} (run {}): {}", s.step, s.steps, s.run, s.in_force);
        tracing::info!(lab, step = s.step, run = s.run, in_force = %s.in_force, "schedule step");
        store.event(lab, event(EventReason::Step, message));
    }
    if tick.ended {
        let message = if tick.in_force.as_ref().is_some_and(|f| f.stopped) {
            "the schedule ran to its end; stopping every task (`end: stop`)".to_string()
        } else {
            format!("the schedule ran to its end; in force: {}", s.in_force)
        };
        store.event(lab, event(EventReason::ScheduleFinished, message));
    }
    if s.applied_after_ms.is_none() && matches!(shaping, ShapingState::Done(_)) {
        // An application older than the step was of an earlier one (a kill leaves no report
        // behind): labd's own clock then.
        let done_at = last_applied.filter(|t| *t <= now && s.changed_at.is_none_or(|c| *t >= c)).unwrap_or(now);
        let took = s.changed_at.map(|t| (done_at - t).num_milliseconds().max(0) as u64).unwrap_or(0);
        s.applied_after_ms = Some(took);
        store.event(lab, event(EventReason::StepApplied, format!("step {}/{} applied on every task {:.1}s after its time", s.step, s.steps, took as f64 / 1000.0)));
    }
    s
}

/// Compares what the agents report with the running tasks of services that have conditions.
/// A report counts only once it carries what is in force now (an older one says nothing about
/// a change just published). Also returns the latest time an agent changed an attachment.
/// What the schedule asks of the tasks' processes (paused, killed) counts as shaping too: a
/// step is applied when its conditions and its faults are.
async fn shaping_condition(
    store: &impl LabStore,
    desired: &DesiredLab,
    in_force: &Shaping,
    (faults, schedule_running): (&plan::TaskFaults, bool),
    observed: &Observed,
) -> (ShapingState, Option<chrono::DateTime<Utc>>) {
    let fresh = |r: &&crate::status::TaskShaping| r.is_fresh();
    let reports = store.task_shaping(&desired.lab).await;
    let last_applied = reports.iter().flatten().filter(fresh).flat_map(|r| r.attachments.iter().filter_map(|a| a.applied_at).chain(r.paused_changed_at)).max();
    let on_tasks = super::task_faults::faults_state(reports.as_deref(), faults, schedule_running, desired, observed);
    let shaping = match shaping_tally(reports, desired, in_force, observed) {
        Tally::Settled(state) => state,
        // Only a wait names the nodes without an agent: the agents are read for it alone, not
        // at every pass of every shaped lab.
        Tally::Short { done, expected } => waiting_for_agents(done, expected, desired, in_force, observed, store.live_agents().await.as_deref()),
    };
    let state = match (shaping, on_tasks) {
        (ShapingState::Failing(m), _) => ShapingState::Failing(m),
        (_, Err(m)) => ShapingState::Failing(m),
        (ShapingState::Pending(m), _) => ShapingState::Pending(m),
        (ShapingState::Done(_), Ok(Some(m))) => ShapingState::Pending(m),
        (done, Ok(None)) => done,
    };
    (state, last_applied)
}

/// The services with conditions in force.
fn shaped_services<'a>(desired: &'a DesiredLab, in_force: &Shaping) -> Vec<&'a crate::plan::DesiredService> {
    desired.services.iter().filter(|s| in_force.contains_key(&s.short_name)).collect()
}

/// What the agents' reports say: a verdict, or `done` of the `expected` running tasks shaped.
enum Tally {
    Settled(ShapingState),
    Short { done: u64, expected: u64 },
}

/// The wait for shaping, saying why when no agent can do it: none alive at all, or none on
/// the nodes where the shaped tasks run (matched by hostname). `agents`: the nodes with a live
/// agent (`None`: unreadable).
fn waiting_for_agents(done: u64, expected: u64, desired: &DesiredLab, in_force: &Shaping, observed: &Observed, agents: Option<&[String]>) -> ShapingState {
    let Some(agents) = agents else {
        return ShapingState::Pending(format!("{done}/{expected} tasks shaped"));
    };
    if agents.is_empty() {
        // The usual first multi-node mistake (or labd --no-agent alone): nothing will ever apply.
        return ShapingState::Pending(format!(
            "{done}/{expected} tasks shaped: no node agent is running (none has reported within {}s): labd runs one unless --no-agent, and every other node needs `labd agent`",
            crate::store::AGENT_ALIVE_WITHIN.as_secs()
        ));
    }
    let without: std::collections::BTreeSet<&String> = shaped_services(desired, in_force)
        .iter()
        .filter_map(|s| observed.services.iter().find(|o| o.name == s.name))
        .flat_map(|o| o.running_on.iter())
        .filter(|node| !agents.contains(node))
        .collect();
    if without.is_empty() {
        ShapingState::Pending(format!("{done}/{expected} tasks shaped"))
    } else {
        let without = without.into_iter().cloned().collect::<Vec<_>>().join(", ");
        ShapingState::Pending(format!("{done}/{expected} tasks shaped: no agent has reported from {without} (start `labd agent` there, its --node the node's hostname)"))
    }
}

fn shaping_tally(reports: Option<Vec<crate::status::TaskShaping>>, desired: &DesiredLab, in_force: &Shaping, observed: &Observed) -> Tally {
    let in_force_of = |service: &str, network: &str| in_force.get(service).and_then(|n| n.get(network)).cloned().unwrap_or_default();
    let shaped = shaped_services(desired, in_force);
    let current = |r: &crate::status::TaskShaping| r.attachments.iter().all(|a| a.desired == in_force_of(&r.service, &a.network));
    let fresh = |r: &&crate::status::TaskShaping| r.is_fresh();
    if shaped.is_empty() {
        // Nothing in force: done once no agent still applies conditions that were (a step
        // restored, a file edited), or when the reports cannot be read at all.
        let behind = reports.iter().flatten().filter(fresh).filter(|r| !current(r)).count();
        return Tally::Settled(if behind == 0 {
            ShapingState::Done("no conditions".into())
        } else {
            ShapingState::Pending(format!("{behind} tasks still carry conditions no longer in force"))
        });
    }
    let Some(reports) = reports else {
        return Tally::Settled(ShapingState::Pending("cannot read the agents' reports from redis".into()));
    };
    let expected: u64 = shaped
        .iter()
        .filter_map(|s| observed.services.iter().find(|o| o.name == s.name))
        .map(|o| o.running)
        .sum();
    let relevant: Vec<&crate::status::TaskShaping> = reports.iter().filter(|r| shaped.iter().any(|s| s.short_name == r.service)).filter(fresh).collect();
    let failing: Vec<String> = relevant
        .iter()
        .flat_map(|r| r.attachments.iter().map(move |a| (r, a)))
        .filter_map(|(r, a)| {
            let mut why: Vec<String> = a.error.iter().cloned().collect();
            why.extend(a.unsupported.iter().cloned());
            (!why.is_empty()).then(|| format!("{} {} on {}: {}", r.service, r.container, a.network, why.join(", ")))
        })
        .collect();
    let done = relevant.iter().filter(|r| r.converged() && current(r)).count() as u64;
    let backends: std::collections::BTreeSet<String> =
        relevant.iter().flat_map(|r| r.attachments.iter().filter_map(|a| a.backend.map(|b| b.to_string()))).collect();
    let backends = backends.into_iter().collect::<Vec<_>>().join(", ");
    if !failing.is_empty() {
        Tally::Settled(ShapingState::Failing(failing.join("; ")))
    } else if done >= expected {
        Tally::Settled(ShapingState::Done(format!("{done} tasks shaped ({backends})")))
    } else {
        Tally::Short { done, expected }
    }
}

/// The conditions in force per service and network, for the node agents.
fn publish_shaping(store: &impl LabStore, lab: &str, shaping: &Shaping) {
    let json = (!shaping.is_empty()).then(|| serde_json::to_string(shaping).unwrap_or_default());
    store.put_shaping(lab, json);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::controller::fakes::{FakeStore, FakeSwarm};
    use crate::plan::ObservedService;
    use crate::status::{AttachmentShaping, EventReason, TaskShaping};
    use crate::swarm::TaskTrouble;

    fn lab(text: &str) -> ValidLab {
        let body = format!("apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: t}}\nspec:\n  defaults: {{image: labbox:latest}}\n{text}");
        parse_lab(&body)
    }

    fn parse_lab(text: &str) -> ValidLab {
        crate::spec::parse_file(Path::new("t.yaml"), text).remove(0).result.expect("valid test lab")
    }

    const POLL: Duration = Duration::from_secs(1);

    const TWO: &str = "  networks: {lan: {}}\n  services:\n    a: {networks: [lan]}\n    b: {replicas: 2, networks: [lan]}\n";

    async fn pass(swarm: &FakeSwarm, store: &FakeStore, target: Target, status: LabStatus) -> Outcome {
        reconcile(swarm, store, "t", target, status, POLL).await
    }

    fn apply(l: &ValidLab) -> Target {
        Target::Apply { lab: Some(l.clone()), invalid: None, suspended: None, started_by_hand: None, last_seen: BTreeSet::new(), applied: BTreeMap::new(), remembered: None }
    }

    /// The next pass after `before`, remembering what it saw on Swarm as the controller does.
    async fn next_pass(swarm: &FakeSwarm, store: &FakeStore, l: &ValidLab, before: Outcome) -> Outcome {
        let last_seen = before.seen.unwrap_or_default();
        let applied = before.applied.unwrap_or_default();
        let target = Target::Apply { lab: Some(l.clone()), invalid: None, suspended: None, started_by_hand: None, last_seen, applied, remembered: None };
        pass(swarm, store, target, before.status).await
    }

    #[tokio::test]
    async fn a_new_lab_is_created_then_waits_for_its_tasks_then_is_ready() {
        let swarm = FakeSwarm::default();
        swarm.state.lock().unwrap().start_after = 1;
        let store = FakeStore::default();
        let l = lab(TWO);
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        assert_eq!(o.status.phase, Phase::Progressing);
        assert_eq!(o.actions.get("create"), Some(&3), "one network, two services");
        assert_eq!(o.status.message, "applied 3 changes");
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!((o.status.phase, o.status.message.as_str()), (Phase::Progressing, "waiting for a 0/1, b 0/2"));
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!((o.status.phase, o.status.message.as_str()), (Phase::Ready, "2/2 services running"));
        assert!(o.actions.is_empty() && o.drift == 0);
        assert_eq!(o.result.as_ref().ok(), Some(&Requeue::AwaitChange), "Ready: nothing to poll");
        let applied = store.events.lock().unwrap().iter().filter(|(_, e)| e.reason == EventReason::Applied).count();
        assert_eq!(applied, 3);
        // Converged: a further pass changes nothing and keeps ready_since.
        let since = o.status.ready_since;
        let calls = swarm.api_calls();
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!((o.status.phase, o.status.ready_since), (Phase::Ready, since));
        assert_eq!(swarm.api_calls() - calls, 1, "a no-op pass only observes");
    }

    #[tokio::test]
    async fn a_service_waits_uncreated_until_the_services_it_depends_on_run() {
        let swarm = FakeSwarm::default();
        swarm.state.lock().unwrap().start_after = 1;
        let store = FakeStore::default();
        let l = lab("  services:\n    db: {replicas: 2}\n    app: {dependsOn: [db]}\n");
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        assert_eq!(o.actions.get("create"), Some(&2), "the network and db");
        assert!(swarm.service("t_app").is_none());
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!((o.status.phase, o.status.message.as_str()), (Phase::Progressing, "waiting for app 0/1 (after db), db 0/2"));
        assert_eq!(o.status.services["app"].message, "created once db runs (`dependsOn`)");
        assert_eq!(o.status.services["app"].waits_for_services, ["db"]);
        // db runs: app is created, and runs.
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!(o.actions.get("create"), Some(&1));
        assert!(swarm.service("t_app").is_some());
        let o = passes_until(&swarm, &store, &l, o, |o| o.status.phase == Phase::Ready).await;
        assert!(o.status.services["app"].waits_for_services.is_empty());
    }

    const WITH_JOB: &str = "  services:\n    web: {}\n    load: {mode: replicated-job, replicas: 2, command: [sh, -c, 'true']}\n";

    /// Passes until `done` holds (at most 10).
    async fn passes_until(swarm: &FakeSwarm, store: &FakeStore, l: &ValidLab, mut o: Outcome, done: impl Fn(&Outcome) -> bool) -> Outcome {
        for _ in 0..10 {
            if done(&o) {
                return o;
            }
            o = next_pass(swarm, store, l, o).await;
        }
        panic!("not reached in 10 passes: {:?} {}", o.status.phase, o.status.message);
    }

    /// A fake Swarm and store running the lab of `text` (under `spec:`), Ready.
    async fn ready(text: &str) -> (FakeSwarm, FakeStore, ValidLab, Outcome) {
        let (swarm, store, l) = (FakeSwarm::default(), FakeStore::default(), lab(text));
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        let o = passes_until(&swarm, &store, &l, o, |o| o.status.phase == Phase::Ready).await;
        (swarm, store, l, o)
    }

    #[tokio::test]
    async fn a_job_runs_once_the_lab_is_ready_holds_nothing_back_and_its_completion_is_counted() {
        let swarm = FakeSwarm::default();
        swarm.state.lock().unwrap().start_after = 2;
        let store = FakeStore::default();
        let l = lab(WITH_JOB);
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        assert_eq!(o.actions.get("create"), Some(&2), "the network and the service; the job waits for Ready");
        assert_eq!((o.status.services["load"].waits_for, o.status.services["load"].message.as_str()), (Some(JobWait::LabReady), "starts once the lab is Ready"));
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!((o.status.phase, o.status.message.as_str()), (Phase::Progressing, "waiting for web 0/1, job load to start"));
        let o = passes_until(&swarm, &store, &l, o, |o| o.status.services["web"].running == 1).await;
        // The service runs: not Ready yet, the job is to start, at once.
        assert_eq!((o.status.phase, o.status.message.as_str()), (Phase::Progressing, "waiting for job load to start"));
        assert_eq!(o.status.ready_services(), (1, 2), "a job to start is not ready");
        assert_eq!(o.result.as_ref().ok(), Some(&Requeue::After(Duration::ZERO)), "the job starts at once");
        assert!(swarm.service("t_load").is_none());
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!(o.actions.get("create"), Some(&1), "the job");
        let o = passes_until(&swarm, &store, &l, o, |o| o.status.services["load"].running == 2).await;
        // Its two tasks run: the lab is Ready meanwhile.
        assert_eq!((o.status.phase, o.status.message.as_str()), (Phase::Ready, "1/1 services running; jobs: load 0/2 completed"));
        assert_eq!(o.status.services["load"].waits_for, None);
        let o = passes_until(&swarm, &store, &l, o, |o| o.status.services["load"].job_done()).await;
        assert_eq!((o.status.phase, o.status.message.as_str()), (Phase::Ready, "1/1 services running; jobs: load 2/2 completed"));
        assert!(o.status.services["web"].completed.is_none());
        assert_eq!(o.status.ready_services(), (2, 2));
        // Completed tasks are no drift: nothing to do, and no rerun.
        let version = swarm.service("t_load").map(|s| s.version);
        let o = next_pass(&swarm, &store, &l, o).await;
        assert!(o.actions.is_empty() && o.drift == 0, "{:?}", o.actions);
        assert_eq!(swarm.service("t_load").map(|s| s.version), version);
        // A status lost (Redis emptied): the job Swarm runs as defined is kept, not run again.
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        assert!(o.actions.is_empty(), "{:?}", o.actions);
        assert_eq!((o.status.phase, o.status.services["load"].completed), (Phase::Ready, Some(2)));
        // An edit runs it again (as Swarm does on any update of a job) once the lab is up for
        // the new definition: here at once, the services unchanged.
        let edited = lab(&WITH_JOB.replace("replicas: 2", "replicas: 3"));
        let o = next_pass(&swarm, &store, &edited, o).await;
        assert_eq!((o.status.phase, o.status.services["load"].waits_for), (Phase::Progressing, Some(JobWait::LabReady)));
        assert_eq!(o.result.as_ref().ok(), Some(&Requeue::After(Duration::ZERO)));
        let o = next_pass(&swarm, &store, &edited, o).await;
        assert_eq!(o.actions.get("update"), Some(&1));
        let o = next_pass(&swarm, &store, &edited, o).await;
        // Its three tasks run: a running job holds nothing back.
        assert_eq!((o.status.phase, o.status.message.as_str()), (Phase::Ready, "1/1 services running; jobs: load 0/3 completed"), "a new run counts afresh");
        assert_eq!(o.status.services["load"].running, 3);
        // The service and the job edited together: the job's new run waits for the service's.
        swarm.state.lock().unwrap().start_after = 2;
        let both = lab(&WITH_JOB.replace("replicas: 2", "replicas: 4").replace("web: {}", "web: {replicas: 2}"));
        let o = next_pass(&swarm, &store, &both, o).await;
        assert_eq!(o.actions.get("update"), Some(&1), "the service only: {:?}", o.actions);
        assert_eq!(swarm.service("t_load").and_then(|s| s.replicas), Some(3));
        let o = next_pass(&swarm, &store, &both, o).await;
        let o = passes_until(&swarm, &store, &both, o, |o| o.actions.contains_key("update")).await;
        assert_eq!(swarm.service("t_load").and_then(|s| s.replicas), Some(4));
        assert_eq!(o.status.services["web"].running, 2, "the service ran first");
    }

    #[tokio::test]
    async fn a_schedule_runs_its_jobs_at_time_0_and_again_with_each_run() {
        let swarm = FakeSwarm::default();
        let store = FakeStore::default();
        let l = lab(&format!("{WITH_JOB}  schedule:\n    start: manual\n    steps:\n    - {{at: 0s, network: default, conditions: {{delay: 5ms}}}}\n"));
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        let o = passes_until(&swarm, &store, &l, o, |o| o.status.phase == Phase::Ready).await;
        assert_eq!(o.status.services["load"].waits_for, Some(JobWait::ScheduleStart), "Ready, not started");
        assert_eq!(o.status.ready_services(), (2, 2), "the job holds nothing back");
        assert_eq!(o.status.message, "1/1 services running; jobs: load waiting for the schedule");
        assert!(swarm.service("t_load").is_none());
        let start = |o: Outcome, at: chrono::DateTime<Utc>| {
            let target = Target::Apply { lab: Some(l.clone()), invalid: None, suspended: None, started_by_hand: Some(at), last_seen: o.seen.clone().unwrap_or_default(), applied: o.applied.clone().unwrap_or_default(), remembered: None };
            pass(&swarm, &store, target, o.status)
        };
        let o = start(o, Utc::now() - chrono::Duration::seconds(2)).await;
        assert_eq!(o.actions.get("create"), Some(&1), "the job, at time 0");
        let run = swarm.service("t_load").map(|s| s.labels[labels::JOB_RUN].clone()).expect("created");
        assert!(run.ends_with("#1"), "{run}");
        // `labctl start` again: a new run, the job's update runs it again.
        let o = start(o, Utc::now() - chrono::Duration::seconds(1)).await;
        assert_eq!(o.actions.get("update"), Some(&1), "{:?}", o.actions);
        assert_ne!(swarm.service("t_load").map(|s| s.labels[labels::JOB_RUN].clone()), Some(run));
    }

    #[tokio::test]
    async fn a_failing_job_degrades_the_lab_with_its_error() {
        let swarm = FakeSwarm::default();
        {
            let mut s = swarm.state.lock().unwrap();
            s.start_after = 0;
            s.trouble = Some(TaskTrouble { state: "failed".into(), message: "task: non-zero exit (3)".into(), node: "n1".into(), failed: true, cause: None });
        }
        let store = FakeStore::default();
        let l = lab(WITH_JOB);
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        let o = passes_until(&swarm, &store, &l, o, |o| o.status.phase == Phase::Degraded).await;
        assert!(o.status.message.contains("load: failed: task: non-zero exit (3)"), "{}", o.status.message);
    }

    #[tokio::test]
    async fn a_mode_changed_is_a_removal_then_a_create_as_swarm_cannot_update_it() {
        let swarm = FakeSwarm::default();
        let store = FakeStore::default();
        let l = lab(TWO);
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!(o.status.phase, Phase::Ready);
        let to_job = lab(&TWO.replace("b: {replicas: 2,", "b: {replicas: 2, mode: replicated-job,"));
        // The job's run waits one pass for the lab to be up as now defined.
        let o = passes_until(&swarm, &store, &to_job, o, |o| o.actions.contains_key("remove")).await;
        assert_eq!((o.actions.get("remove"), o.actions.get("update")), (Some(&1), None));
        assert_eq!(o.status.services["b"].message, "recreating in its new mode");
        let o = passes_until(&swarm, &store, &to_job, o, |o| o.actions.contains_key("create")).await;
        assert_eq!((o.actions.get("create"), o.drift), (Some(&1), 0), "created again, and that is no drift");
        assert_eq!(swarm.service("t_b").map(|s| s.mode), Some(crate::spec::Mode::ReplicatedJob));
    }

    #[tokio::test]
    async fn hand_made_drift_is_repaired_and_counted() {
        let swarm = FakeSwarm::default();
        let store = FakeStore::default();
        let l = lab(TWO);
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!(o.status.phase, Phase::Ready);
        {
            let mut s = swarm.state.lock().unwrap();
            let b = s.services.iter_mut().find(|x| x.name == "t_b").unwrap();
            b.replicas = Some(5); // `docker service scale t_b=5`
            s.services.retain(|x| x.name != "t_a"); // `docker service rm t_a`
        }
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!(o.drift, 2, "one scaled, one removed while running");
        assert_eq!(swarm.service("t_b").unwrap().replicas, Some(2));
        assert!(swarm.service("t_a").is_some());
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!(o.drift, 0, "repaired: nothing more to count");
    }

    #[tokio::test]
    async fn a_service_removed_by_hand_while_its_tasks_start_is_drift_too() {
        // Seen on Swarm at the last pass with no task running yet (or listed just after its
        // removal began): gone now is still a change made outside labd.
        let swarm = FakeSwarm::default();
        swarm.state.lock().unwrap().start_after = 10;
        let store = FakeStore::default();
        let l = lab(TWO);
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!(o.status.services["a"].running, 0, "{:?}", o.status.services);
        swarm.state.lock().unwrap().services.retain(|x| x.name != "t_a");
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!((o.drift, o.actions.get("create")), (1, Some(&1)));
        // A service the file drops, removed by labd, is no drift when it is gone next pass.
        let smaller = lab(&TWO.replace("    b: {replicas: 2, networks: [lan]}\n", ""));
        let o = next_pass(&swarm, &store, &smaller, o).await;
        assert_eq!((o.drift, o.actions.get("remove")), (0, Some(&1)));
        let o = next_pass(&swarm, &store, &smaller, o).await;
        assert_eq!(o.drift, 0);
        assert!(o.seen.is_some_and(|s| s == BTreeSet::from(["t_a".to_string()])));
    }

    #[tokio::test]
    async fn restarts_are_counted_once_each_and_outlast_the_tasks_swarm_forgets() {
        let swarm = FakeSwarm::default();
        let store = FakeStore::default();
        let l = lab(TWO);
        let o = passes_until(&swarm, &store, &l, pass(&swarm, &store, apply(&l), LabStatus::default()).await, |o| o.status.phase == Phase::Ready).await;
        assert_eq!((o.status.services["b"].restarts, o.status.services["b"].last_restart), (0, None));
        let exits = |at: &[i64]| {
            let mut state = swarm.state.lock().unwrap();
            let b = state.services.iter_mut().find(|s| s.name == "t_b").expect("t_b");
            b.exits = at.iter().map(|s| crate::plan::TaskExit { slot: "1".into(), at: chrono::DateTime::<Utc>::from_timestamp(1_700_000_000 + s, 0).expect("a time") }).collect();
        };
        exits(&[10, 20]);
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!(o.status.services["b"].restarts, 2);
        assert_eq!(o.status.services["a"].restarts, 0, "another service's");
        // Seen again with a third: counted once each.
        exits(&[10, 20, 30]);
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!(o.status.services["b"].restarts, 3);
        // Swarm's task history trimmed: the count stays; suspended, it is still counted.
        exits(&[30, 40]);
        let mut status = o.status;
        status.phase = Phase::Ready;
        let target = Target::Apply { lab: Some(l.clone()), invalid: None, suspended: Some(SuspendedBy::Labctl), started_by_hand: None, last_seen: BTreeSet::new(), applied: BTreeMap::new(), remembered: None };
        let o = pass(&swarm, &store, target, status).await;
        assert_eq!((o.status.phase, o.status.services["b"].restarts), (Phase::Suspended, 4));
        assert_eq!(o.status.services["b"].last_restart, chrono::DateTime::<Utc>::from_timestamp(1_700_000_040, 0));
    }

    #[tokio::test]
    async fn a_clash_fails_the_lab_and_the_foreign_object_is_never_touched() {
        let swarm = FakeSwarm::default();
        swarm.state.lock().unwrap().services.push(ObservedService {
            id: "foreign".into(),
            name: "t_a".into(),
            version: 7,
            replicas: Some(1),
            desired: 1,
            running: 1,
            ..Default::default()
        });
        let store = FakeStore::default();
        let o = pass(&swarm, &store, apply(&lab(TWO)), LabStatus::default()).await;
        assert_eq!(o.status.phase, Phase::Failed);
        assert!(o.status.message.contains("service t_a already exists and is not managed by swarmlab"), "{}", o.status.message);
        assert_eq!(swarm.service("t_a").unwrap().version, 7, "the foreign service was updated");
        assert!(swarm.service("t_b").is_some(), "what does not clash is still created");
        // Stuck on it: looked at less and less often (its events still bring a look at once).
        let mut status = o.status;
        let since = status.condition(ct::STALLED).map(|c| c.last_transition_time).expect("Stalled");
        status.conditions.iter_mut().filter(|c| c.type_ == ct::STALLED).for_each(|c| c.last_transition_time = since - chrono::Duration::seconds(60));
        let o = pass(&swarm, &store, apply(&lab(TWO)), status).await;
        assert_eq!(o.status.phase, Phase::Failed);
        assert_eq!(o.result.as_ref().ok(), Some(&Requeue::After(STUCK_POLL_MAX)), "Failed for a minute");
    }

    #[test]
    fn a_lab_stuck_on_the_same_thing_is_looked_at_less_often_but_on_time_for_its_deadline() {
        let now = Utc::now();
        let poll = Duration::from_millis(250);
        let deadline = Duration::from_secs(600);
        let ago = |secs: i64| now - chrono::Duration::seconds(secs);
        let waiting = |secs: i64| LabStatus { phase: Phase::Progressing, waiting: Some(crate::status::Waiting { what: "a 0/1".into(), since: ago(secs) }), ..Default::default() };
        let after = |status: &LabStatus, deadline: Duration| requeue_of(status, false, poll, deadline, now);
        assert_eq!(after(&LabStatus { phase: Phase::Progressing, ..Default::default() }, deadline), Requeue::After(poll), "moving: the poll");
        assert_eq!(after(&waiting(1), deadline), Requeue::After(poll), "just started waiting");
        assert_eq!(after(&waiting(8), deadline), Requeue::After(Duration::from_secs(1)), "an eighth of the time waited");
        assert_eq!(after(&waiting(3600), deadline), Requeue::After(STUCK_POLL_MAX), "never longer");
        assert_eq!(after(&waiting(28), Duration::from_secs(30)), Requeue::After(Duration::from_secs(2)), "looked at when the deadline passes");
        let mut stalled = LabStatus { phase: Phase::Degraded, ..Default::default() };
        stalled.set_condition(ct::STALLED, true, "TasksFailing", "a: no such image", ago(40));
        assert_eq!(after(&stalled, deadline), Requeue::After(STUCK_POLL_MAX));
        stalled.set_condition(ct::STALLED, true, "TasksFailing", "a: no such image", ago(2));
        stalled.conditions[0].last_transition_time = ago(2);
        assert_eq!(after(&stalled, deadline), Requeue::After(poll));
        let ready = LabStatus { phase: Phase::Ready, ready_since: Some(ago(5)), ..Default::default() };
        assert_eq!(after(&ready, deadline), Requeue::AwaitChange);
    }

    #[tokio::test]
    async fn a_docker_error_is_a_failed_pass_with_the_error() {
        let swarm = FakeSwarm::default();
        swarm.state.lock().unwrap().fail_next = 1;
        let store = FakeStore::default();
        let o = pass(&swarm, &store, apply(&lab(TWO)), LabStatus::default()).await;
        assert_eq!(o.status.phase, Phase::Failed);
        assert!(matches!(&o.result, Err(ReconcileError::Actions(e)) if e[0].to_string().contains("injected failure")), "{:?}", o.result);
        // A removal that fails names what it removes, not its id.
        let o = pass(&swarm, &store, apply(&lab(TWO)), o.status).await;
        let id = swarm.service("t_b").map(|s| s.id).expect("t_b created");
        swarm.state.lock().unwrap().fail_next = 1;
        let o = pass(&swarm, &store, apply(&lab("  networks: {lan: {}}\n  services:\n    a: {networks: [lan]}\n")), o.status).await;
        assert!(o.status.message.starts_with("remove service t_b: rpc error: injected failure"), "{}", o.status.message);
        assert!(!o.status.message.contains(&id), "{}", o.status.message);
    }

    #[tokio::test]
    async fn failing_tasks_degrade_the_lab_and_name_the_missing_image() {
        let missing = TaskTrouble { state: "rejected".into(), message: "No such image: nope:latest".into(), node: "n1".into(), failed: true, cause: Some(TroubleCause::ImageMissing) };
        let o = troubled_tasks(TWO, missing).await;
        assert_eq!(o.status.phase, Phase::Degraded);
        assert!(o.status.message.contains("labd never pulls"), "{}", o.status.message);
    }

    #[tokio::test]
    async fn a_rollout_is_ready_once_every_task_runs_the_new_spec_and_one_swarm_paused_degrades_the_lab() {
        let (swarm, store, l, o) = ready("  services:\n    a: {replicas: 3, update: {order: start-first}}\n").await;
        let roll = |state: Option<RolloutState>, outdated: u64| {
            let mut s = swarm.state.lock().unwrap();
            s.services[0].rollout = state.map(|state| plan::Rollout { state, message: "update paused due to failure or early termination of task x1".into() });
            s.services[0].outdated = outdated;
        };
        // Swarm rolls a change out (start-first: every replica runs, two on the previous spec).
        roll(Some(RolloutState::Updating), 2);
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!(o.status.phase, Phase::Progressing);
        assert_eq!(o.status.message, "waiting for a 1/3 (updating: 2 still on the previous spec, one at a time: `update.parallelism` sets how many at once)");
        assert_eq!((o.status.services["a"].running, o.status.services["a"].outdated), (1, 2));
        roll(Some(RolloutState::Paused), 1);
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!(o.status.phase, Phase::Degraded);
        assert!(o.status.message.starts_with("a: Swarm paused its update (update paused due to failure or early termination of task x1): 1 of 3 running tasks still run the previous spec; fix the service in the lab"), "{}", o.status.message);
        assert!(o.status.services["a"].failing);
        assert_eq!(o.status.condition(ct::STALLED).map(|c| c.status), Some(ConditionStatus::True));
        // The file fixed, Swarm's new update done.
        roll(None, 0);
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!((o.status.phase, o.status.message.as_str()), (Phase::Ready, "1/1 services running"));
        // `labctl restart`: the same spec, its tasks replaced one by one.
        roll(Some(RolloutState::Updating), 2);
        swarm.state.lock().unwrap().services[0].outdated_by_restart = true;
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!(o.status.message, "waiting for a 1/3 (restarting: 2 still to be replaced)");
    }

    #[tokio::test]
    async fn a_hand_edit_of_a_service_s_settings_is_put_back_once_and_labd_s_own_edits_are_no_drift() {
        let (swarm, store, l, o) = ready("  services:\n    a: {replicas: 2}\n").await;
        let o = next_pass(&swarm, &store, &l, o).await;
        assert!(o.applied.as_ref().is_some_and(|a| a.contains_key("t_a")), "settings taken once it runs: {:?}", o.applied);
        // `docker service update --env-add DEBUG=1 t_a`: the labels, and the spec hash, stay.
        swarm.state.lock().unwrap().services[0].settings_digest = 42;
        let o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!((o.actions.get("update"), o.drift), (Some(&1), 1));
        assert!(store.events.lock().unwrap().iter().any(|(_, e)| e.message.contains("update service t_a (its settings changed outside labd")));
        // Put back once: the settings are taken again after labd's own change.
        let mut o = o;
        o = next_pass(&swarm, &store, &l, o).await;
        // A repair Swarm refuses (an update conflict, a manager without a leader) is tried again.
        swarm.state.lock().unwrap().services[0].settings_digest = 43;
        swarm.state.lock().unwrap().fail_next = 1;
        o = next_pass(&swarm, &store, &l, o).await;
        assert!(o.result.is_err() && !o.actions.contains_key("update"), "{:?}", o.result);
        o = next_pass(&swarm, &store, &l, o).await;
        assert_eq!((o.actions.get("update"), o.drift), (Some(&1), 1), "the edit put back at the next pass");
        for _ in 0..3 {
            o = next_pass(&swarm, &store, &l, o).await;
            assert_eq!(o.actions.get("update"), None, "{:?}", o.actions);
        }
        // An edit of the file is an update, not drift; nor is what follows it.
        let edited = lab("  services:\n    a: {replicas: 2, env: {V: '2'}}\n");
        let o = next_pass(&swarm, &store, &edited, o).await;
        assert_eq!((o.actions.get("update"), o.drift), (Some(&1), 0));
        let o = next_pass(&swarm, &store, &edited, o).await;
        let o = next_pass(&swarm, &store, &edited, o).await;
        assert_eq!((o.actions.get("update"), o.drift), (None, 0));
    }

    #[tokio::test]
    async fn a_loop_of_exits_127_or_137_says_what_the_exit_code_means() {
        let looping = |message: &str, cause: TroubleCause| TaskTrouble { state: "failed".into(), message: message.into(), node: "n1".into(), failed: true, cause: Some(cause) };
        for (services, trouble, said) in [
            ("  services:\n    a: {}\n", looping("task: non-zero exit (127) (again and again: a crash loop)", TroubleCause::CommandNotFound { not_executable: false }), "(exit 127: its command was not found in the image"),
            ("  services:\n    a: {resources: {memory: 64M}}\n", looping("task: non-zero exit (137) (again and again: a crash loop)", TroubleCause::Killed), "at its memory limit of 64.0MiB"),
            ("  services:\n    a: {}\n", looping("task: non-zero exit (137) (again and again: a crash loop)", TroubleCause::Killed), "(exit 137: killed by SIGKILL, by hand or by the kernel"),
        ] {
            let o = troubled_tasks(services, trouble).await;
            assert_eq!(o.status.phase, Phase::Degraded);
            assert!(o.status.services["a"].message.contains(said), "{}", o.status.services["a"].message);
            assert!(o.status.services["a"].message.ends_with("; `labctl logs t a` shows what it printed"), "{}", o.status.services["a"].message);
        }
    }

    /// Two passes over `services` whose tasks Swarm keeps pending, saying `message`.
    async fn pending_tasks(services: &str, message: &str, cause: TroubleCause) -> Outcome {
        troubled_tasks(services, TaskTrouble { state: "pending".into(), message: message.into(), node: String::new(), failed: false, cause: Some(cause) }).await
    }

    /// Two passes over `services` whose tasks never run, Swarm saying `trouble`.
    async fn troubled_tasks(services: &str, trouble: TaskTrouble) -> Outcome {
        let swarm = FakeSwarm::default();
        swarm.state.lock().unwrap().start_after = 100;
        swarm.state.lock().unwrap().trouble = Some(trouble);
        let store = FakeStore::default();
        let l = lab(services);
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        pass(&swarm, &store, apply(&l), o.status).await
    }

    #[tokio::test]
    async fn a_task_no_node_may_run_keeps_the_lab_progressing_and_the_lab_s_message_says_why() {
        let message = "no suitable node (scheduling constraints not satisfied on 1 node)";
        let o = pending_tasks("  services:\n    a: {placement: {constraints: [node.labels.zone==mars]}}\n", message, TroubleCause::Unschedulable).await;
        // Swarm keeps trying (a node may join or get the label): not a failure.
        assert_eq!((o.status.phase, o.status.message.as_str()), (Phase::Progressing, "waiting for a 0/1 (no node may run it)"));
        assert!(o.status.services["a"].message.starts_with(&format!("pending: {message} (Swarm starts it once a node satisfies its `placement`")), "{}", o.status.services["a"].message);
    }

    #[tokio::test]
    async fn a_task_whose_host_port_is_taken_says_which_port_not_placement() {
        let message = "no suitable node (host-mode port already in use on 1 node)";
        let o = pending_tasks("  services:\n    a: {ports: ['18080:80', '53:53/udp', '9000']}\n", message, TroubleCause::PortInUse).await;
        assert_eq!((o.status.phase, o.status.message.as_str()), (Phase::Progressing, "waiting for a 0/1 (ports 18080, 53/udp in use on every node that may run it)"));
        assert_eq!(o.status.services["a"].message, format!("pending: {message} (Swarm starts it once nothing else holds ports 18080, 53/udp on a node that may run it: `docker service ls` shows who publishes it; or change `ports`)"));
    }

    #[tokio::test]
    async fn a_task_waiting_for_its_health_check_or_killed_by_it_says_so() {
        let swarm = FakeSwarm::default();
        swarm.state.lock().unwrap().start_after = 100;
        let starting = TaskTrouble { state: "starting".into(), message: "starting".into(), node: "n1".into(), failed: false, cause: None };
        swarm.state.lock().unwrap().trouble = Some(starting);
        let store = FakeStore::default();
        let l = lab("  services:\n    db: {healthcheck: {test: test -f /up}}\n");
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!(o.status.phase, Phase::Progressing);
        assert_eq!(o.status.services["db"].message, "starting: starting (its health check has not passed yet)");

        let unhealthy = "task: non-zero exit (143): dockerexec: unhealthy container";
        let killed = TaskTrouble { state: "failed".into(), message: unhealthy.into(), node: "n1".into(), failed: true, cause: Some(TroubleCause::Unhealthy) };
        swarm.state.lock().unwrap().trouble = Some(killed);
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!(o.status.phase, Phase::Degraded);
        assert!(o.status.message.contains(unhealthy) && o.status.message.contains("its health check kept failing"), "{}", o.status.message);
    }

    #[tokio::test]
    async fn with_no_live_agent_or_none_on_the_task_s_node_the_wait_for_shaping_says_so() {
        let swarm = FakeSwarm::default();
        let store = FakeStore::default();
        let l = lab("  networks: {lan: {conditions: {delay: 20ms}}}\n  services:\n    a: {networks: [lan]}\n");
        *store.reports.lock().unwrap() = Some(vec![]);
        store.agents.lock().unwrap().clear();
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!(o.status.phase, Phase::Progressing);
        assert!(o.status.message.starts_with("waiting for shaping (0/1 tasks shaped: no node agent is running") && o.status.message.contains("labd agent"), "{}", o.status.message);
        // One comes, on another node than the task's: that node is named.
        store.agents.lock().unwrap().push("node-2".into());
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert!(o.status.message.starts_with("waiting for shaping (0/1 tasks shaped: no agent has reported from node-1 (start `labd agent` there"), "{}", o.status.message);
        // The task's node's: the plain count again.
        store.agents.lock().unwrap().push("node-1".into());
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!(o.status.message, "waiting for shaping (0/1 tasks shaped)");
    }

    #[tokio::test]
    async fn shaping_holds_ready_back_until_the_agents_report_it_applied() {
        let swarm = FakeSwarm::default();
        let store = FakeStore::default();
        let l = lab("  networks: {lan: {conditions: {delay: 20ms}}}\n  services:\n    a: {networks: [lan]}\n");
        *store.reports.lock().unwrap() = Some(vec![]);
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        assert!(store.shaping.lock().unwrap()["t"].as_deref().is_some_and(|j| j.contains("20ms")), "desired shaping published");
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!((o.status.phase, o.status.message.as_str()), (Phase::Progressing, "waiting for shaping (0/1 tasks shaped)"));
        let want = l.lab.effective_conditions(&l.lab.spec.services["a"], &crate::spec::NetworkAttachment::Name("lan".into()));
        let report = |applied: crate::spec::EffectiveConditions| TaskShaping {
            container: "c1".into(),
            service: "a".into(),
            node: "n1".into(),
            updated_at: Some(Utc::now()),
            attachments: vec![AttachmentShaping { network: "lan".into(), desired: want.clone(), applied, ..Default::default() }],
            ..Default::default()
        };
        *store.reports.lock().unwrap() = Some(vec![report(want.clone())]);
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!(o.status.phase, Phase::Ready);
        *store.reports.lock().unwrap() = Some(vec![TaskShaping {
            attachments: vec![AttachmentShaping { error: Some("nsenter failed".into()), ..report(want.clone()).attachments[0].clone() }],
            ..report(want.clone())
        }]);
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!(o.status.phase, Phase::Degraded);
        assert!(o.status.message.contains("nsenter failed"));
    }

    #[tokio::test]
    async fn a_pause_step_is_published_for_the_agents_and_applied_once_they_report_the_task_frozen() {
        let swarm = FakeSwarm::default();
        let store = FakeStore::default();
        *store.reports.lock().unwrap() = Some(vec![]);
        let l = lab("  services:\n    a: {replicas: 2}\n  schedule:\n    steps:\n    - at: 0s\n      service: a\n      slots: [2]\n      pause: true\n");
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        let faults = |store: &FakeStore| -> crate::plan::TaskFaults { serde_json::from_str(store.faults.lock().unwrap()["t"].as_deref().unwrap()).unwrap() };
        assert!(faults(&store)["a"].paused.is_empty(), "listed, thawed, before the schedule starts");
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!(o.status.phase, Phase::Ready);
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert!(faults(&store)["a"].paused.contains(Some(2)) && !faults(&store)["a"].paused.contains(Some(1)));
        assert_eq!(o.status.phase, Phase::Progressing);
        assert!(o.status.message.contains("a: 0/2 tasks reported"), "{}", o.status.message);
        let report = |slot: u64, paused: bool| TaskShaping {
            container: format!("c{slot}"),
            service: "a".into(),
            updated_at: Some(Utc::now()),
            slot: Some(slot),
            started_at: Some(Utc::now()),
            paused: Some(paused),
            paused_changed_at: paused.then(Utc::now),
            ..Default::default()
        };
        *store.reports.lock().unwrap() = Some(vec![report(1, false), report(2, false)]);
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert!(o.status.message.contains("a.2 not paused yet"), "{}", o.status.message);
        assert!(o.status.schedule.as_ref().is_some_and(|s| s.applied_after_ms.is_none()));
        *store.reports.lock().unwrap() = Some(vec![report(1, false), report(2, true)]);
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!(o.status.phase, Phase::Ready, "{}", o.status.message);
        assert!(o.status.schedule.as_ref().is_some_and(|s| s.applied_after_ms.is_some()));
    }

    #[tokio::test]
    async fn a_schedule_starts_once_the_lab_is_ready_and_publishes_what_each_step_puts_in_force() {
        let swarm = FakeSwarm::default();
        let store = FakeStore::default();
        *store.reports.lock().unwrap() = Some(vec![]);
        let l = lab("  networks: {lan: {}}\n  services:\n    a: {networks: [lan]}\n  schedule:\n    steps:\n    - at: 0s\n      network: lan\n      conditions: {delay: 30ms}\n    - at: 60s\n      network: lan\n      restore: true\n");
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!(o.status.phase, Phase::Ready);
        assert!(o.status.schedule.as_ref().is_some_and(|s| s.started_at.is_none()), "started before Ready");
        assert_eq!(o.result.as_ref().ok(), Some(&Requeue::After(Duration::ZERO)), "start the clock at once");
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        let clock = o.status.schedule.clone().unwrap();
        assert_eq!((clock.step, clock.in_force.as_str()), (1, "network lan: delay 30ms"));
        assert!(store.shaping.lock().unwrap()["t"].as_deref().is_some_and(|j| j.contains("30ms")), "step 1 published");
        assert_eq!(o.status.phase, Phase::Progressing, "waiting for the agents to apply the step");
        assert_eq!(o.result.as_ref().ok(), Some(&Requeue::After(POLL)), "converging: the poll comes before the next step");
        let steps = store.events.lock().unwrap().iter().filter(|(_, e)| e.reason == EventReason::Step).count();
        assert_eq!(steps, 1);
        // The agent applied it 300 ms after it came, by its clock: that is the step's time,
        // however late labd's next look comes.
        let came = clock.changed_at.unwrap();
        let delay30 = crate::spec::EffectiveConditions::from_fields(&[("delay", "30ms")]).unwrap();
        *store.reports.lock().unwrap() = Some(vec![TaskShaping {
            container: "c1".into(),
            service: "a".into(),
            node: "n1".into(),
            updated_at: Some(Utc::now()),
            attachments: vec![AttachmentShaping {
                network: "lan".into(),
                desired: delay30.clone(),
                applied: delay30.clone(),
                applied_at: Some(came + chrono::Duration::milliseconds(300)),
                ..Default::default()
            }],
            ..Default::default()
        }]);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let o = pass(&swarm, &store, apply(&l), o.status).await;
        assert_eq!(o.status.phase, Phase::Ready, "{}", o.status.message);
        assert_eq!(o.status.schedule.as_ref().and_then(|s| s.applied_after_ms), Some(300));
        let applied = store.events.lock().unwrap().iter().filter(|(_, e)| e.reason == EventReason::StepApplied).count();
        assert_eq!(applied, 1);
        // An agent still applying conditions no longer in force holds Ready back.
        let mut stale = o.status.clone();
        stale.schedule = None;
        let plain = lab("  networks: {lan: {}}\n  services:\n    a: {networks: [lan]}\n");
        *store.reports.lock().unwrap() = Some(vec![TaskShaping {
            container: "c1".into(),
            service: "a".into(),
            node: "n1".into(),
            updated_at: Some(Utc::now()),
            attachments: vec![AttachmentShaping {
                network: "lan".into(),
                desired: crate::spec::EffectiveConditions::from_fields(&[("delay", "30ms")]).unwrap(),
                ..Default::default()
            }],
            ..Default::default()
        }]);
        let o = pass(&swarm, &store, apply(&plain), stale).await;
        assert_eq!(o.status.phase, Phase::Progressing, "{}", o.status.message);
        assert!(o.status.message.contains("no longer in force"), "{}", o.status.message);
    }

    #[tokio::test]
    async fn a_broken_file_keeps_the_last_good_version_converging_and_says_invalid() {
        let swarm = FakeSwarm::default();
        let store = FakeStore::default();
        let l = lab(TWO);
        let bad = crate::spec::Diagnostic { file: "t.yaml".into(), line: 3, column: 1, field: "spec".into(), message: "broken".into() };
        let target = Target::Apply { lab: Some(l.clone()), invalid: Some(vec![bad]), suspended: None, started_by_hand: None, last_seen: BTreeSet::new(), applied: BTreeMap::new(), remembered: None };
        let o = pass(&swarm, &store, target, LabStatus::default()).await;
        assert_eq!(o.status.phase, Phase::Invalid);
        assert_eq!(o.status.message, "t.yaml:3:1: spec: broken");
        assert!(swarm.service("t_b").is_some(), "the last good version is still applied");
    }

    #[tokio::test]
    async fn delete_removes_everything_owned_then_reports_gone_and_orphans_are_left_alone() {
        let swarm = FakeSwarm::default();
        let store = FakeStore::default();
        let l = lab(TWO);
        let o = pass(&swarm, &store, apply(&l), LabStatus::default()).await;
        let o = pass(&swarm, &store, Target::Orphaned("empty directory at start".into()), o.status).await;
        assert_eq!(o.status.phase, Phase::Orphaned);
        assert!(!o.gone && o.actions.is_empty());
        assert_eq!(swarm.state.lock().unwrap().services.len(), 2, "an orphan is never touched");
        let o = pass(&swarm, &store, Target::Delete, o.status).await;
        assert_eq!(o.status.phase, Phase::Deleting);
        assert_eq!(o.actions.get("remove"), Some(&3));
        let o = pass(&swarm, &store, Target::Delete, o.status).await;
        assert!(o.gone);
        let o = pass(&swarm, &store, Target::Orphaned("x".into()), o.status).await;
        assert!(o.gone, "an orphan with nothing on Swarm is only a stale status");
    }

    #[tokio::test]
    async fn a_files_new_content_rolls_its_services_onto_a_new_config_and_the_old_one_goes_then_all_go_with_the_lab() {
        let swarm = FakeSwarm::default();
        let store = FakeStore::default();
        let files = |content: &str| format!("  configs: {{app.conf: {{content: '{content}'}}}}\n  services:\n    a: {{configs: [app.conf]}}\n    b: {{configs: [{{source: app.conf, target: /etc/app.conf}}]}}\n    c: {{}}\n");
        let configs = || swarm.state.lock().unwrap().file_configs.clone();
        let v1 = lab(&files("x = 1"));
        let o = pass(&swarm, &store, apply(&v1), LabStatus::default()).await;
        let first = configs();
        assert_eq!(first.len(), 2, "one config per service that mounts the file: {first:?}");
        assert!(first.iter().all(|c| c.starts_with("t_a-") || c.starts_with("t_b-")), "{first:?}");
        let v2 = lab(&files("x = 2"));
        let o = pass(&swarm, &store, apply(&v2), o.status).await;
        assert_eq!(o.actions.get("update"), Some(&2), "the two services that mount it, not c");
        let second = configs();
        assert_eq!(second.len(), 2, "the old contents' configs are gone: {second:?}");
        assert!(second.is_disjoint(&first));
        // A service that stops mounting it: its config goes with the update.
        let v3 = lab("  configs: {app.conf: {content: 'x = 2'}}\n  services:\n    a: {configs: [app.conf]}\n    b: {}\n    c: {}\n");
        let o = pass(&swarm, &store, apply(&v3), o.status).await;
        let third = configs();
        assert_eq!(third.len(), 1);
        assert!(third.is_subset(&second) && third.iter().all(|c| c.starts_with("t_a-")), "{third:?}");
        let o = pass(&swarm, &store, Target::Delete, o.status).await;
        let o = pass(&swarm, &store, Target::Delete, o.status).await;
        assert!(o.gone);
        assert!(configs().is_empty(), "removed with the lab");
    }

    #[tokio::test]
    async fn a_teardown_waits_for_a_network_in_use_without_failing_and_a_vanished_object_is_no_action() {
        let swarm = FakeSwarm::default();
        let store = FakeStore::default();
        let o = pass(&swarm, &store, apply(&lab(TWO)), LabStatus::default()).await;
        swarm.state.lock().unwrap().network_in_use = 2;
        let o = pass(&swarm, &store, Target::Delete, o.status).await;
        assert_eq!((o.status.phase, o.actions.get("remove")), (Phase::Deleting, Some(&2)), "services removed, the network still used");
        assert_eq!(o.result.as_ref().ok(), Some(&Requeue::After(POLL)), "waiting on Swarm is no error (no backoff): {:?}", o.result);
        let o = pass(&swarm, &store, Target::Delete, o.status).await;
        assert!(o.result.is_ok() && !o.gone);
        let o = pass(&swarm, &store, Target::Delete, o.status).await;
        assert_eq!(o.actions.get("remove"), Some(&1));
        assert!(pass(&swarm, &store, Target::Delete, o.status).await.gone);
        // Gone between the observation and the removal: done, and nothing counted as applied.
        let removal = crate::plan::Action::RemoveService { id: "s404".into(), name: "t_a".into(), recreate: None };
        let mut executed = Executed::default();
        executed.record(&store, "t", &removal, swarm.remove_service("s404").await);
        assert!(executed.done.is_empty() && executed.errors.is_empty(), "{executed:?}");
    }
}
