//! The status of a lab, Kubernetes style (kstatus conventions), as labd writes it and labctl
//! reads it. Plain data: no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Phase {
    #[default]
    Pending,
    Progressing,
    Ready,
    Degraded,
    Failed,
    Invalid,
    Deleting,
    /// No file defines the lab, but nothing shows a person removed it (labd started on another
    /// or an empty directory, or lost its memory): kept running, not reconciled.
    Orphaned,
    /// Suspended (`labctl suspend`, or `suspend: true` in the spec): observed, never changed;
    /// drift and file changes wait for the resume.
    Suspended,
    /// The schedule ran to its end with `end: stop`: every task stopped, services and networks
    /// kept; drift is still repaired (a task started by hand is stopped again). An edited
    /// schedule or `labctl start` runs the lab again.
    Completed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

pub mod condition_types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const SPEC_VALID: &str = "SpecValid";
    pub const NETWORKS_READY: &str = "NetworksReady";
    pub const SERVICES_READY: &str = "ServicesReady";
    pub const SHAPING_APPLIED: &str = "ShapingApplied";
    pub const SUSPENDED: &str = "Suspended";
}

/// A condition's status, as Kubernetes writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    pub last_transition_time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// `None` for global services before Swarm reports a count.
    pub desired: u64,
    pub running: u64,
    /// Running tasks still on the previous spec while Swarm rolls a change out (not counted in
    /// `running`, as a Deployment's available replicas count only updated ones).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub outdated: u64,
    /// A job's tasks of its current run that completed (exited 0); absent for a service kept
    /// running. The job is done when it reaches `desired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
    /// What a job's run waits for before labd creates or updates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_for: Option<crate::plan::JobWait>,
    /// The services (`dependsOn`) that must run before labd creates this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits_for_services: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Times its tasks exited on their own and Swarm restarted them, since labd first saw the
    /// service (as a pod's restart count: a crash, an OOM kill, a `docker kill`, a schedule's
    /// kill; not an update's or a scale-down's stop).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u64,
    /// When the last of those tasks exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart: Option<DateTime<Utc>>,
    /// The last exit counted in each slot (a replicated service's slot number, a global
    /// service's node id): a node that reports an exit late, after another slot's newer one was
    /// counted, does not make it missed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_restart_by_slot: BTreeMap<String, DateTime<Utc>>,
    /// Its tasks fail (a crash loop, a missing image, a failing health check): `message` says
    /// how, and the lab is Degraded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failing: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ServiceStatus {
    /// Carries the restart count on from `previous` (the last pass's status of this service),
    /// adding the task exits seen now that are newer than the last one counted in their slot.
    /// Swarm keeps only a few tasks per slot (5 by default), but every task's end is an event
    /// that makes a pass, so the count misses an exit only when a slot ends more than that
    /// between two.
    pub fn count_restarts(&mut self, previous: Option<&ServiceStatus>, exits: &[crate::plan::TaskExit]) {
        let mut by_slot = previous.map(|p| p.last_restart_by_slot.clone()).unwrap_or_default();
        // A status written before counts were kept per slot has only the last exit of all.
        let before_slots = previous.filter(|p| p.last_restart_by_slot.is_empty()).and_then(|p| p.last_restart);
        let new: Vec<&crate::plan::TaskExit> = exits.iter().filter(|e| by_slot.get(&e.slot).copied().or(before_slots).is_none_or(|l| e.at > l)).collect();
        for e in &new {
            by_slot.entry(e.slot.clone()).and_modify(|l| *l = (*l).max(e.at)).or_insert(e.at);
        }
        self.restarts = previous.map_or(0, |p| p.restarts) + new.len() as u64;
        self.last_restart = new.iter().map(|e| e.at).max().max(previous.and_then(|p| p.last_restart));
        self.last_restart_by_slot = by_slot;
    }

    /// A job whose current run has every task it needs completed.
    pub fn job_done(&self) -> bool {
        self.completed.is_some_and(|c| c >= self.desired)
    }
}

/// See [`LabStatus::waiting`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    /// The status message's list (`a 0/1, shaping (1/2 tasks shaped)`).
    pub what: String,
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    pub attempt: u32,
    pub next_try: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LabStatus {
    pub name: String,
    pub phase: Phase,
    /// Bumped each time the lab's definition (valid or not) changes.
    pub generation: u64,
    /// The generation labd last acted on.
    pub observed_generation: u64,
    /// The revision (content hash) of the spec applied to Swarm.
    #[serde(default)]
    pub revision: String,
    #[serde(default)]
    pub source: String,
    pub message: String,
    pub conditions: Vec<Condition>,
    pub services: BTreeMap<String, ServiceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<DateTime<Utc>>,
    /// What a Progressing lab waits for, and since when it has waited for exactly that: the
    /// clock of its progress deadline (kept here so a restart of labd does not reset it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// Where the lab's schedule is (kept here so a restart resumes it, never restarts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleStatus>,
    /// With a Git source (`labd --git`): the commit the running definition was read at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// labd's answer to `labctl reconcile`: what it read, and which labs it looked at again.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileAnswer {
    /// With a Git source: its state after the fetch the request brought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStatus>,
    /// That fetch brought a new commit.
    #[serde(default)]
    pub moved: bool,
    /// The labs looked at again (none: the lab asked for is not defined).
    pub labs: Vec<String>,
    /// When labd queued their looks: a status written at or after this is of a look that
    /// followed the request.
    pub answered_at: Option<DateTime<Utc>>,
}

/// Where labd reads labs from, when that is a Git branch: what it fetched last and whether the
/// last fetch worked (a failed fetch keeps the last fetched commit running).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub url: String,
    pub branch: String,
    /// The commit whose labs are applied (`None`: no fetch has worked yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When the last fetch (of any outcome) ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<DateTime<Utc>>,
    /// Why the last fetch failed; `None` when it worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The clock of a lab's schedule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// Hash of the schedule this clock runs; an edited schedule starts again.
    pub revision: String,
    /// Time 0 (`None`: waiting for the lab to be Ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// The last step reached in the current run (1-based; 0: none yet) and the number of steps.
    pub step: usize,
    pub steps: usize,
    pub run: u64,
    #[serde(default)]
    pub finished: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_change_at: Option<DateTime<Utc>>,
    /// What the schedule has in force, for people (`network dht: delay 95ms`).
    #[serde(default)]
    pub in_force: String,
    /// When what is in force last changed, and how long the agents took to apply it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_after_ms: Option<u64>,
}

impl LabStatus {
    /// Degraded because it waited for the same things longer than its `progressDeadline` (the
    /// only Degraded status that keeps a waiting clock).
    pub fn past_progress_deadline(&self) -> bool {
        self.phase == Phase::Degraded && self.waiting.is_some()
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Sets a condition, keeping its transition time when its status does not change.
    pub fn set_condition(&mut self, type_: &str, status: bool, reason: &str, message: impl Into<String>, now: DateTime<Utc>) {
        let status = ConditionStatus::from(status);
        let message = message.into();
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status;
                c.reason = reason.to_string();
                c.message = message;
            }
            None => self.conditions.push(Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message,
                last_transition_time: now,
            }),
        }
    }

    /// kstatus: `Reconciling` and `Stalled` are present only while true.
    pub fn set_abnormal(&mut self, type_: &str, active: bool, reason: &str, message: impl Into<String>, now: DateTime<Utc>) {
        if active {
            self.set_condition(type_, true, reason, message, now);
        } else {
            self.conditions.retain(|c| c.type_ != type_);
        }
    }

    /// Networks created, services running and shaping applied, whatever the jobs do (one that
    /// fails makes the lab Degraded, and must not hold the others back): what jobs wait for.
    pub fn ready_for_jobs(&self) -> bool {
        let holds = |t: &str| self.condition(t).is_some_and(|c| c.status == ConditionStatus::True);
        self.phase != Phase::Invalid && [condition_types::NETWORKS_READY, condition_types::SERVICES_READY, condition_types::SHAPING_APPLIED].into_iter().all(holds)
    }

    pub fn ready_services(&self) -> (usize, usize) {
        // A job is ready while it runs, once done, or waiting for its schedule to start (it
        // holds the lab back in none of these).
        let ready = self
            .services
            .values()
            .filter(|s| match s.completed {
                Some(_) => s.job_done() || s.running > 0 || s.waits_for == Some(crate::plan::JobWait::ScheduleStart),
                None => s.running >= s.desired,
            })
            .count();
        (ready, self.services.len())
    }
}

/// Normal or Warning, as Kubernetes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Normal,
    Warning,
}

/// Why an event was recorded. Each reason has one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventReason {
    /// An action was applied to Swarm.
    Applied,
    /// The lab became Ready.
    Ready,
    ReconcileFailed,
    /// Services changed outside labd were put back.
    DriftRepaired,
    /// No file defines the lab; it goes after the grace period unless one does again.
    FileGone,
    /// The deletion rule confirmed the absence: the lab is being removed.
    Deleting,
    /// No file defines the lab but nothing shows a person removed it: kept.
    Orphaned,
    /// The schedule put new conditions in force.
    Step,
    /// Every agent applied what the schedule put in force (with the time it took).
    StepApplied,
    /// The schedule ran to its end.
    ScheduleFinished,
    /// The lab waited for the same things longer than its `progressDeadline`.
    ProgressDeadlineExceeded,
    /// A service's tasks began to fail (said once, until they run again).
    TasksFailing,
    /// A user had every task of some services replaced (`labctl restart`).
    Restarted,
    /// A reason this labctl does not know (written by a newer labd).
    #[serde(other)]
    Other,
}

impl EventReason {
    pub fn kind(self) -> EventKind {
        match self {
            EventReason::Applied
            | EventReason::Ready
            | EventReason::FileGone
            | EventReason::Deleting
            | EventReason::Step
            | EventReason::StepApplied
            | EventReason::ScheduleFinished
            | EventReason::Restarted
            | EventReason::Other => EventKind::Normal,
            EventReason::ReconcileFailed | EventReason::DriftRepaired | EventReason::Orphaned | EventReason::ProgressDeadlineExceeded | EventReason::TasksFailing => EventKind::Warning,
        }
    }
}

/// Both enums are written to Redis as their names.
macro_rules! name_text {
    ($ty:ty) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{self:?}")
            }
        }
        impl std::str::FromStr for $ty {
            type Err = serde_json::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                serde_json::from_value(serde_json::Value::String(s.to_string()))
            }
        }
    };
}
name_text!(ConditionStatus);
name_text!(EventKind);
name_text!(EventReason);

/// One entry of a lab's recent events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabEvent {
    pub time: DateTime<Utc>,
    pub kind: EventKind,
    pub reason: EventReason,
    pub message: String,
}

impl LabEvent {
    pub fn now(reason: EventReason, message: impl Into<String>) -> Self {
        LabEvent { time: Utc::now(), kind: reason.kind(), reason, message: message.into() }
    }
}

/// A task's name as `labctl` shows it (as `labctl exec` and `logs` take it): `service.slot`, or
/// `service@node` for a task of a global service.
pub fn task_name(service: &str, slot: Option<u64>, node: &str) -> String {
    match slot {
        Some(slot) => format!("{service}.{slot}"),
        None => format!("{service}@{node}"),
    }
}

/// What the node agent applied to one task (written by the agent of the task's node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskShaping {
    pub container: String,
    pub service: String,
    pub node: String,
    pub updated_at: Option<DateTime<Utc>>,
    pub attachments: Vec<AttachmentShaping>,
    /// The task's slot (tasks of replicated services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    /// When its container started (reported for the tasks of services the schedule kills or
    /// pauses: a kill is done once no task started before it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Frozen, by Docker's read-back (tasks of services the schedule pauses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// When the agent last paused or thawed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_changed_at: Option<DateTime<Utc>>,
    /// The CPUs it may use, in billionths of one (0: no cap), by Docker's read-back (tasks of
    /// services the schedule caps or pauses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    /// While the agent holds a `cpus` cap on it: the limit it had before (what lifting the cap
    /// sets again, also for the agent's next run after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus_before: Option<i64>,
    /// Why pausing, thawing, capping or killing the task failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_error: Option<String>,
    /// Its IPv4 address on each of the lab's networks, by the lab's name of the network: what
    /// `labctl capture` names the task by in frames from any node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentShaping {
    pub network: String,
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<crate::shaping::BackendKind>,
    pub desired: crate::spec::EffectiveConditions,
    /// What is in force, by the agent's read-back of the kernel and its own queue.
    pub applied: crate::spec::EffectiveConditions,
    /// Desired fields that cannot be applied here, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub readback: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<crate::shaping::userspace::CounterSnapshot>,
    /// When the agent last changed what this attachment carries (its clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<DateTime<Utc>>,
}

impl TaskShaping {
    /// An agent writes a report when it changes and every 3 s besides; one older than 10 s is
    /// from a node that is gone.
    pub fn is_fresh(&self) -> bool {
        self.updated_at.is_some_and(|t| t > chrono::Utc::now() - chrono::Duration::seconds(10))
    }

    /// Every attachment has what it asked for (fields that cannot apply here excepted).
    pub fn converged(&self) -> bool {
        self.attachments.iter().all(|a| a.error.is_none() && a.applied == a.desired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_add_up_across_passes_and_an_exit_is_counted_once() {
        let t = |s: i64| DateTime::<Utc>::from_timestamp(1_700_000_000 + s, 0).expect("a time");
        let exit = |slot: &str, at: i64| crate::plan::TaskExit { slot: slot.to_string(), at: t(at) };
        let mut first = ServiceStatus::default();
        first.count_restarts(None, &[exit("1", 5), exit("1", 1)]);
        assert_eq!((first.restarts, first.last_restart), (2, Some(t(5))));
        // The next pass sees the same two (Swarm keeps them) and a new one.
        let mut second = ServiceStatus::default();
        second.count_restarts(Some(&first), &[exit("1", 1), exit("1", 5), exit("1", 9)]);
        assert_eq!((second.restarts, second.last_restart), (3, Some(t(9))));
        // Swarm dropped old tasks from its history: the count stays.
        let mut third = ServiceStatus::default();
        third.count_restarts(Some(&second), &[]);
        assert_eq!((third.restarts, third.last_restart), (3, Some(t(9))));
        // Another slot's exit, reported late: older than the last one counted, still counted
        // (as two replicas killed at once, their nodes reporting in their own time); once.
        let mut late = ServiceStatus::default();
        late.count_restarts(Some(&third), &[exit("1", 9), exit("2", 8)]);
        assert_eq!((late.restarts, late.last_restart), (4, Some(t(9))));
        let mut again = ServiceStatus::default();
        again.count_restarts(Some(&late), &[exit("1", 9), exit("2", 8)]);
        assert_eq!(again.restarts, 4);
        // A status written before the count was kept per slot: its last exit bounds every slot.
        let mut old = serde_json::from_value::<ServiceStatus>(serde_json::json!({"desired": 2, "running": 2, "restarts": 3, "lastRestart": t(9)})).expect("an old status");
        old.count_restarts(Some(&old.clone()), &[exit("1", 9), exit("2", 8), exit("2", 10)]);
        assert_eq!(old.restarts, 4);
        // Never restarted: nothing in the status (`restarts` and `lastRestart` are left out).
        let mut quiet = ServiceStatus::default();
        quiet.count_restarts(None, &[]);
        assert_eq!(serde_json::to_value(&quiet).expect("json"), serde_json::json!({"desired": 0, "running": 0}));
        assert_eq!(serde_json::to_value(&second).expect("json")["restarts"], 3);
        assert_eq!(serde_json::to_value(&late).expect("json")["lastRestartBySlot"], serde_json::json!({"1": t(9), "2": t(8)}));
    }
}
