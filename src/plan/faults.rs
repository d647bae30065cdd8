//! What the schedule does to the lab's task processes, for the node agents: which tasks are
//! frozen and which are capped at some CPUs now, and which kills were reached. Pure. A kill is published as "kill the tasks that
//! started before this time", so it is idempotent without the agents keeping any state: the task
//! Swarm starts in place of a killed one started after it, and an agent that restarts kills
//! nothing twice.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::{CpuCap, InForce, Schedule, TaskSet};

/// Swarm's stop grace period when a service sets none.
pub const SWARM_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Service short name → what is asked of its tasks.
pub type TaskFaults = BTreeMap<String, ServiceFaults>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceFaults {
    /// The tasks that are frozen (none: thawed; listed, so that a thaw reaches the agents).
    #[serde(default)]
    pub paused: TaskSet,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kills: Vec<KillOrder>,
    /// CPU caps in force, in step order (none: every task at its service's own limit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<CpuCap>,
}

/// Kill each task in `tasks` that started before `before`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KillOrder {
    pub tasks: TaskSet,
    pub before: DateTime<Utc>,
    /// A stop (`stop: true`): SIGTERM, then SIGKILL once this many milliseconds have passed
    /// since `before` (the service's stop grace period). Absent: SIGKILL at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
}

impl KillOrder {
    /// When a stop turns into a kill (`before` for a kill).
    pub fn kill_at(&self) -> DateTime<Utc> {
        self.before + chrono::Duration::milliseconds(i64::try_from(self.grace_ms.unwrap_or(0)).unwrap_or(i64::MAX))
    }
}

impl ServiceFaults {
    /// The CPU cap of the task in `slot`, in billionths of a CPU (Docker's `NanoCpus`): the
    /// last cap that covers it.
    pub fn cpu_cap(&self, slot: Option<u64>) -> Option<i64> {
        self.cpus.iter().rev().find(|c| c.tasks.contains(slot)).map(|c| (c.cpus * 1e9).round() as i64)
    }

    /// The order that ends the task in `slot` started at `started`: a kill before a stop (the
    /// harsher one wins).
    pub fn kill_order(&self, slot: Option<u64>, started: DateTime<Utc>) -> Option<&KillOrder> {
        // `false` (a kill) sorts first; of equals, the first is kept.
        self.kills.iter().filter(|k| k.tasks.contains(slot) && started < k.before).min_by_key(|k| k.grace_ms.is_some())
    }
}

/// The faults in force: every service a `pause` or `cpus` step names gets an entry (frozen,
/// capped or not), so a thaw, a lifted cap or a schedule that starts over reaches the agents; each kill reached gets its time,
/// from the schedule's time 0 (`started_at`); a stop, its service's stop grace period
/// (`stop_grace`).
pub fn faults_in_force(schedule: Option<&Schedule>, in_force: Option<&InForce>, started_at: Option<DateTime<Utc>>, stop_grace: impl Fn(&str) -> std::time::Duration) -> TaskFaults {
    let mut out = TaskFaults::new();
    let Some(schedule) = schedule else { return out };
    for step in schedule.steps.iter().filter(|s| s.pause.is_some() || s.cpus.is_some()) {
        if let Some(service) = &step.service {
            out.entry(service.clone()).or_default();
        }
    }
    let Some(in_force) = in_force else { return out };
    for (service, tasks) in &in_force.paused {
        out.entry(service.clone()).or_default().paused = tasks.clone();
    }
    for (service, caps) in &in_force.cpus {
        out.entry(service.clone()).or_default().cpus = caps.clone();
    }
    if let Some(start) = started_at {
        for kill in &in_force.kills {
            let Ok(at) = chrono::Duration::from_std(kill.at) else { continue };
            let grace_ms = kill.graceful.then(|| u64::try_from(stop_grace(&kill.service).as_millis()).unwrap_or(u64::MAX));
            out.entry(kill.service.clone()).or_default().kills.push(KillOrder { tasks: kill.tasks.clone(), before: start + at, grace_ms });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(yaml: &str) -> Schedule {
        serde_json::from_value(serde_yaml_ng::from_str(yaml).expect("yaml")).expect("a schedule")
    }

    #[test]
    fn a_paused_service_is_listed_before_and_after_its_pause_and_kills_get_their_time() {
        let s = schedule("steps:\n- at: 5s\n  service: a\n  slots: [2]\n  pause: true\n- at: 9s\n  service: a\n  pause: false\n- at: 10s\n  service: b\n  kill: true\n");
        let t0 = Utc::now();
        let grace = |_: &str| std::time::Duration::from_secs(10);
        let waiting = faults_in_force(Some(&s), None, None, grace);
        assert_eq!(waiting.get("a"), Some(&ServiceFaults::default()), "listed unfrozen before the schedule runs");
        let frozen = faults_in_force(Some(&s), Some(&s.at(std::time::Duration::from_secs(6))), Some(t0), grace);
        assert!(frozen["a"].paused.contains(Some(2)) && !frozen["a"].paused.contains(Some(1)));
        assert!(!frozen.contains_key("b"), "no kill reached yet");
        let later = faults_in_force(Some(&s), Some(&s.at(std::time::Duration::from_secs(11))), Some(t0), grace);
        assert!(later["a"].paused.is_empty());
        let b = &later["b"];
        assert_eq!(b.kills[0].before, t0 + chrono::Duration::seconds(10));
        assert!(b.kill_order(Some(1), t0 + chrono::Duration::seconds(3)).is_some(), "started before the kill: killed");
        assert!(b.kill_order(Some(1), t0 + chrono::Duration::seconds(12)).is_none(), "its replacement is left alone");
        assert_eq!((b.kills[0].grace_ms, b.kills[0].kill_at()), (None, b.kills[0].before), "a kill is SIGKILL at once");
    }

    #[test]
    fn a_capped_service_is_listed_before_its_cap_and_a_slot_gets_the_last_cap_covering_it() {
        let s = schedule("steps:\n- at: 5s\n  service: a\n  cpus: 0.5\n- at: 6s\n  service: a\n  slots: [2]\n  cpus: 0.25\n");
        let grace = |_: &str| std::time::Duration::from_secs(10);
        assert_eq!(faults_in_force(Some(&s), None, None, grace).get("a"), Some(&ServiceFaults::default()), "listed uncapped before the schedule runs");
        let a = &faults_in_force(Some(&s), Some(&s.at(std::time::Duration::from_secs(7))), Some(Utc::now()), grace)["a"];
        assert_eq!((a.cpu_cap(Some(1)), a.cpu_cap(Some(2)), a.cpu_cap(None)), (Some(500_000_000), Some(250_000_000), Some(500_000_000)));
    }

    #[test]
    fn a_stop_carries_its_services_grace_period_and_a_kill_of_the_same_task_wins() {
        let s = schedule("steps:\n- at: 2s\n  service: a\n  stop: true\n- at: 4s\n  service: a\n  slots: [2]\n  kill: true\n");
        let t0 = Utc::now();
        let grace = |svc: &str| std::time::Duration::from_millis(if svc == "a" { 1500 } else { 10_000 });
        let a = &faults_in_force(Some(&s), Some(&s.at(std::time::Duration::from_secs(3))), Some(t0), grace)["a"];
        let stop = a.kill_order(Some(1), t0).expect("stopped");
        assert_eq!((stop.grace_ms, stop.kill_at()), (Some(1500), t0 + chrono::Duration::milliseconds(3500)));
        let a = &faults_in_force(Some(&s), Some(&s.at(std::time::Duration::from_secs(5))), Some(t0), grace)["a"];
        assert_eq!(a.kill_order(Some(2), t0).map(|k| k.grace_ms), Some(None), "slot 2 is killed, not stopped");
        assert_eq!(a.kill_order(Some(1), t0).map(|k| k.grace_ms), Some(Some(1500)));
        // A kill is published as before this field.
        let json = serde_json::to_value(&a.kills[1]).expect("json");
        assert!(json.get("graceMs").is_none(), "{json}");
    }
}
