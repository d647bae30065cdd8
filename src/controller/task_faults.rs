//! Whether the agents did what the schedule asks of the lab's task processes: the tasks it
//! freezes frozen (and the others thawed), those it caps at their CPUs (and no other holding a
//! cap), by Docker's read-back; no task that started before a
//! kill still running. Pure: from the agents' reports and what Swarm runs.

use crate::plan::{DesiredLab, Observed, TaskFaults};
use crate::status::TaskShaping;

/// What is not done yet, or failed; `Ok(None)` when there is nothing to do or it is all done.
/// `running`: the schedule has started (before, nothing is asked of the tasks it lists).
pub fn faults_state(reports: Option<&[TaskShaping]>, faults: &TaskFaults, running: bool, desired: &DesiredLab, observed: &Observed) -> Result<Option<String>, String> {
    if faults.is_empty() {
        return Ok(None);
    }
    let Some(reports) = reports else { return Ok(Some("cannot read the agents' reports from redis".into())) };
    let mut behind = Vec::new();
    let mut failing = Vec::new();
    for (service, asked) in faults {
        let ours: Vec<&TaskShaping> = reports.iter().filter(|r| &r.service == service && r.is_fresh()).collect();
        let name = |r: &TaskShaping| r.slot.map_or_else(|| format!("{service} {}", r.container), |s| format!("{service}.{s}"));
        for r in &ours {
            if let Some(e) = &r.fault_error {
                failing.push(format!("{}: {e}", name(r)));
            }
            if let Some(order) = r.started_at.and_then(|t| asked.kill_order(r.slot, t)) {
                behind.push(format!("{} not {} yet", name(r), if order.grace_ms.is_some() { "stopped" } else { "killed" }));
            } else if r.paused != Some(asked.paused.contains(r.slot)) {
                behind.push(format!("{} not {} yet", name(r), if asked.paused.contains(r.slot) { "paused" } else { "thawed" }));
            } else if let Some(cap) = asked.cpu_cap(r.slot).filter(|c| r.nano_cpus != Some(*c)) {
                behind.push(format!("{} not capped at {} CPUs yet", name(r), cap as f64 / 1e9));
            } else if asked.cpu_cap(r.slot).is_none() && r.nano_cpus_before.is_some() {
                behind.push(format!("{}'s CPU cap not lifted yet", name(r)));
            }
        }
        // Before the schedule starts, the services are listed only so that a thaw reaches the
        // agents: done unless a task is still reported frozen. Once it runs, every task must be
        // reported (a thaw too): silence is not "done".
        if !running {
            continue;
        }
        let tasks = desired
            .services
            .iter()
            .find(|d| &d.short_name == service)
            .and_then(|d| observed.services.iter().find(|o| o.name == d.name))
            .map_or(0, |o| o.running);
        if (ours.len() as u64) < tasks {
            behind.push(format!("{service}: {}/{tasks} tasks reported", ours.len()));
        }
    }
    if !failing.is_empty() {
        return Err(failing.join("; "));
    }
    Ok((!behind.is_empty()).then(|| behind.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{KillOrder, ObservedService, ServiceFaults};
    use crate::spec::TaskSet;
    use chrono::Utc;

    fn lab() -> DesiredLab {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: t}\nspec:\n  services:\n    a: {image: labbox:latest, replicas: 2}\n";
        let valid = crate::spec::parse_file(std::path::Path::new("t.yaml"), text).remove(0).result.expect("valid");
        crate::plan::desired_lab(&valid.lab)
    }

    fn running(n: u64) -> Observed {
        Observed { services: vec![ObservedService { name: "t_a".into(), running: n, ..Default::default() }], ..Default::default() }
    }

    fn task(slot: u64, started: chrono::DateTime<Utc>, paused: bool) -> TaskShaping {
        TaskShaping { container: format!("c{slot}"), service: "a".into(), updated_at: Some(Utc::now()), slot: Some(slot), started_at: Some(started), paused: Some(paused), ..Default::default() }
    }

    #[test]
    fn a_pause_is_done_when_docker_says_so_for_every_running_task() {
        let t0 = Utc::now() - chrono::Duration::seconds(60);
        let faults = TaskFaults::from([("a".to_string(), ServiceFaults { paused: TaskSet { all: false, slots: [2].into() }, ..Default::default() })]);
        let (l, o) = (lab(), running(2));
        assert_eq!(faults_state(Some(&[task(1, t0, false), task(2, t0, false)]), &faults, true, &l, &o), Ok(Some("a.2 not paused yet".into())));
        assert_eq!(faults_state(Some(&[task(1, t0, false), task(2, t0, true)]), &faults, true, &l, &o), Ok(None));
        assert_eq!(faults_state(Some(&[task(2, t0, true)]), &faults, true, &l, &o), Ok(Some("a: 1/2 tasks reported".into())), "a silent agent is not done");
        let thawed = TaskFaults::from([("a".to_string(), ServiceFaults::default())]);
        assert_eq!(faults_state(Some(&[task(1, t0, false), task(2, t0, true)]), &thawed, true, &l, &o), Ok(Some("a.2 not thawed yet".into())));
        assert_eq!(faults_state(Some(&[]), &thawed, false, &l, &o), Ok(None), "before the schedule starts, nothing is asked");
        assert_eq!(faults_state(Some(&[task(1, t0, false)]), &thawed, true, &l, &o), Ok(Some("a: 1/2 tasks reported".into())), "a thaw nobody reported is not done");
        let failed = TaskShaping { fault_error: Some("container is not running".into()), ..task(1, t0, false) };
        assert!(faults_state(Some(&[failed, task(2, t0, true)]), &faults, true, &l, &o).is_err());
    }

    #[test]
    fn a_kill_is_done_when_no_task_started_before_it_runs() {
        let t0 = Utc::now() - chrono::Duration::seconds(60);
        let kill_at = t0 + chrono::Duration::seconds(30);
        let faults = TaskFaults::from([("a".to_string(), ServiceFaults { paused: TaskSet::default(), kills: vec![KillOrder { tasks: TaskSet { all: false, slots: [1].into() }, before: kill_at, grace_ms: None }], ..Default::default() })]);
        let l = lab();
        assert_eq!(faults_state(Some(&[task(1, t0, false), task(2, t0, false)]), &faults, true, &l, &running(2)), Ok(Some("a.1 not killed yet".into())));
        // Killed: Swarm runs one task until it starts the slot again.
        assert_eq!(faults_state(Some(&[task(2, t0, false)]), &faults, true, &l, &running(1)), Ok(None));
        let again = task(1, kill_at + chrono::Duration::seconds(1), false);
        assert_eq!(faults_state(Some(&[again, task(2, t0, false)]), &faults, true, &l, &running(2)), Ok(None), "slot 2 was not asked");
    }

    #[test]
    fn a_cap_is_done_when_docker_reads_it_back_and_lifted_when_no_cap_is_held() {
        let t0 = Utc::now() - chrono::Duration::seconds(60);
        let cap = crate::spec::CpuCap { tasks: TaskSet { all: false, slots: [1].into() }, cpus: 0.2 };
        let faults = TaskFaults::from([("a".to_string(), ServiceFaults { cpus: vec![cap], ..Default::default() })]);
        let (l, o) = (lab(), running(2));
        let cpus = |slot: u64, nano: i64, before: Option<i64>| TaskShaping { nano_cpus: Some(nano), nano_cpus_before: before, ..task(slot, t0, false) };
        assert_eq!(faults_state(Some(&[cpus(1, 0, None), cpus(2, 0, None)]), &faults, true, &l, &o), Ok(Some("a.1 not capped at 0.2 CPUs yet".into())));
        assert_eq!(faults_state(Some(&[cpus(1, 200_000_000, Some(0)), cpus(2, 0, None)]), &faults, true, &l, &o), Ok(None));
        let lifted = TaskFaults::from([("a".to_string(), ServiceFaults::default())]);
        assert_eq!(faults_state(Some(&[cpus(1, 200_000_000, Some(0)), cpus(2, 0, None)]), &lifted, true, &l, &o), Ok(Some("a.1's CPU cap not lifted yet".into())));
        assert_eq!(faults_state(Some(&[cpus(1, 0, None), cpus(2, 0, None)]), &lifted, true, &l, &o), Ok(None));
    }
}
