//! When a lab's jobs run. Swarm starts a job the moment it is created or updated; a workload
//! client started beside the services it drives fails against servers not up yet, and one
//! started at an arbitrary moment of an experiment sees its schedule at arbitrary offsets. So a
//! job's run waits for the lab (Swarm has no `depends_on`): for the lab to be Ready, or, in a lab
//! with a schedule, for the schedule's time 0, and it runs again with each run of the
//! schedule. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::desired::{hash_of, DesiredLab};
use super::diff::Observed;
use super::labels;

/// What a job's run waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobWait {
    /// The lab's services to be Ready (a lab without a schedule).
    LabReady,
    /// The schedule's time 0: the lab Ready, or `labctl start` for `start: manual`.
    ScheduleStart,
}

impl std::fmt::Display for JobWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobWait::LabReady => "starts once the lab is Ready",
            JobWait::ScheduleStart => "starts at the schedule's time 0",
        })
    }
}

/// Whether the lab's jobs may run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobGate {
    /// They run; `run` names the schedule's run they belong to (`<clock>#<run>`), so that
    /// each run of the schedule runs them again.
    Open { run: Option<String> },
    /// Their run waits: labd neither creates nor updates them, except that one Swarm already
    /// runs as defined keeps running (a labd restart, a lab Degraded for a moment).
    Closed(JobWait),
}

/// `desired` with its jobs gated: a schedule run's jobs carry [`labels::JOB_RUN`] (in their
/// hash: a new run is an update, which runs a job again); those that must wait are listed in
/// [`DesiredLab::waiting_jobs`].
pub fn gate_jobs(mut desired: DesiredLab, gate: &JobGate, observed: &Observed) -> DesiredLab {
    let mut waiting = BTreeMap::new();
    for job in desired.services.iter_mut().filter(|s| s.mode.is_job()) {
        match gate {
            JobGate::Open { run: Some(run) } => {
                job.hash = hash_of(&(&job.hash, labels::JOB_RUN, run));
                job.labels.insert(labels::SPEC_HASH.into(), job.hash.clone());
                job.labels.insert(labels::JOB_RUN.into(), run.clone());
            }
            JobGate::Open { run: None } => {}
            JobGate::Closed(why) => {
                let runs_as_defined = observed.services.iter().any(|o| o.name == job.name && o.labels.get(labels::SPEC_HASH) == Some(&job.hash));
                if !runs_as_defined {
                    waiting.insert(job.name.clone(), *why);
                }
            }
        }
    }
    desired.waiting_jobs = waiting;
    desired
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::plan::{desired_lab, diff, Action, ObservedService};

    fn desired() -> DesiredLab {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: j}\nspec:\n  defaults: {image: labbox:latest}\n  services:\n    web: {}\n    load: {mode: replicated-job, replicas: 2}\n";
        let lab = crate::spec::parse_file(Path::new("j.yaml"), text).remove(0).result.expect("valid");
        desired_lab(&lab.lab)
    }

    fn on_swarm(d: &DesiredLab) -> Observed {
        let services = d.services.iter().map(|s| ObservedService { id: s.name.clone(), name: s.name.clone(), labels: s.labels.clone(), replicas: s.replicas, mode: s.mode, image: s.image.clone(), ..Default::default() }).collect();
        let networks = d.networks.iter().map(|n| crate::plan::ObservedNetwork { id: n.name.clone(), name: n.name.clone(), labels: n.labels.clone(), ..Default::default() }).collect();
        Observed { services, networks, ..Default::default() }
    }

    #[test]
    fn a_job_waits_uncreated_then_runs_and_a_definition_already_running_is_kept() {
        let closed = gate_jobs(desired(), &JobGate::Closed(JobWait::LabReady), &Observed::default());
        assert_eq!(closed.waiting_jobs, BTreeMap::from([("j_load".to_string(), JobWait::LabReady)]));
        let plan = diff(&closed, &Observed::default());
        let created: Vec<&str> = plan.actions.iter().filter_map(|a| if let Action::CreateService(s) = a { Some(s.short_name.as_str()) } else { None }).collect();
        assert_eq!(created, ["web"], "the service only");
        let open = gate_jobs(desired(), &JobGate::Open { run: None }, &Observed::default());
        assert!(open.waiting_jobs.is_empty() && open == desired(), "no schedule: the job as defined");
        // Swarm runs this very definition: closed again (a lab Degraded for a moment), it stays.
        let kept = gate_jobs(desired(), &JobGate::Closed(JobWait::LabReady), &on_swarm(&open));
        assert!(kept.waiting_jobs.is_empty() && diff(&kept, &on_swarm(&open)).is_empty());
        // An edited job waits, and the run on Swarm is neither updated nor removed meanwhile.
        let mut edited = desired();
        edited.services[0].hash = "edited".into();
        edited.services[0].labels.insert(labels::SPEC_HASH.into(), "edited".into());
        let waits = gate_jobs(edited, &JobGate::Closed(JobWait::LabReady), &on_swarm(&open));
        assert_eq!(waits.waiting_jobs.len(), 1);
        assert!(diff(&waits, &on_swarm(&open)).is_empty(), "{:?}", diff(&waits, &on_swarm(&open)).actions);
    }

    #[test]
    fn each_run_of_the_schedule_is_a_new_definition_of_its_jobs_and_nothing_else() {
        let run = |n: u64| gate_jobs(desired(), &JobGate::Open { run: Some(format!("r@t0#{n}")) }, &Observed::default());
        let (first, second) = (run(1), run(2));
        let job = |d: &DesiredLab| d.services.iter().find(|s| s.short_name == "load").cloned().expect("job");
        let web = |d: &DesiredLab| d.services.iter().find(|s| s.short_name == "web").cloned().expect("service");
        assert_ne!(job(&first).hash, job(&second).hash);
        assert_eq!(job(&second).labels[labels::JOB_RUN], "r@t0#2");
        assert_eq!(job(&first).labels[labels::SPEC_HASH], job(&first).hash);
        assert_eq!((web(&first), web(&second)), (web(&desired()), web(&desired())), "a service is no part of it");
        let reasons: Vec<String> = diff(&second, &on_swarm(&first)).actions.into_iter().map(|a| a.describe()).collect();
        assert_eq!(reasons, ["update service j_load (spec changed)"]);
    }
}
