//! A lab's status as a pure function of what one reconcile found: the phase, the message and
//! every kstatus condition come from [`Findings`] alone, so they can never disagree (a phase
//! Degraded with `Ready=True` was seen before this existed). No I/O; unit- and
//! property-tested.

use chrono::{DateTime, Utc};

use crate::plan::{Conflict, ObjectKind};
use crate::status::{condition_types as ct, LabStatus, Phase, Waiting};

/// How far the node agents have got with a lab's shaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapingState {
    Done(String),
    Pending(String),
    Failing(String),
}

/// What one reconcile of a lab with a valid (last good) definition found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings {
    /// The current file's errors (first one and a count) when it is invalid: the last good
    /// version runs, and the status says the file is broken first.
    pub spec_error: Option<String>,
    /// Objects with the lab's names that it does not own.
    pub conflicts: Vec<Conflict>,
    /// Docker API errors of this pass's actions.
    pub errors: Vec<String>,
    /// Actions applied this pass (creates, updates, removes).
    pub acted: usize,
    pub networks: usize,
    pub missing_networks: Vec<String>,
    /// Networks the lab no longer has that Swarm will not remove yet: tasks on them are still
    /// stopping (a rolling update moving them off). Waited for, not an error.
    pub networks_in_use: Vec<String>,
    /// Services kept running (jobs apart).
    pub services: usize,
    /// Jobs, as `name completed/desired completed`: a job's run holds nothing back.
    pub jobs: Vec<String>,
    /// Jobs labd starts once the lab is up: it has not converged until it has.
    pub jobs_to_start: Vec<String>,
    /// Services not running all their tasks, as `name running/desired`.
    pub not_running: Vec<String>,
    /// Services whose tasks fail or are rejected, with the reason.
    pub failing_tasks: Vec<String>,
    /// Swarm nodes that are not Ready.
    pub down_nodes: Vec<String>,
    pub shaping: ShapingState,
    /// The schedule ended with `end: stop`: every service is wanted at no task.
    pub stopped: bool,
    /// How long the lab may wait for the same things before it is Degraded (`progressDeadline`).
    pub progress_deadline: std::time::Duration,
}

/// Kubernetes' default `progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// Writes phase, message, conditions and `ready_since` from `f` into `status`.
pub fn derive(mut status: LabStatus, f: &Findings, now: DateTime<Utc>) -> LabStatus {
    match &f.spec_error {
        Some(e) => status.set_condition(ct::SPEC_VALID, false, "ValidationFailed", e.clone(), now),
        None => status.set_condition(ct::SPEC_VALID, true, "Valid", "the lab definition is valid", now),
    }
    let network_conflict = f.conflicts.iter().any(|c| c.kind == ObjectKind::Network);
    if f.missing_networks.is_empty() && !network_conflict {
        status.set_condition(ct::NETWORKS_READY, true, "Created", format!("{} networks", f.networks), now);
    } else {
        status.set_condition(ct::NETWORKS_READY, false, "Creating", format!("creating {}", f.missing_networks.join(", ")), now);
    }
    let running = f.services - f.not_running.len().min(f.services);
    if f.not_running.is_empty() && f.acted == 0 {
        status.set_condition(ct::SERVICES_READY, true, "AllRunning", format!("{running}/{} services running", f.services), now);
    } else if !f.failing_tasks.is_empty() {
        status.set_condition(ct::SERVICES_READY, false, "TasksFailing", f.failing_tasks.join("; "), now);
    } else {
        status.set_condition(ct::SERVICES_READY, false, "Starting", format!("waiting for {}", f.not_running.join(", ")), now);
    }
    match &f.shaping {
        ShapingState::Done(m) => status.set_condition(ct::SHAPING_APPLIED, true, "Applied", m.clone(), now),
        ShapingState::Pending(m) => status.set_condition(ct::SHAPING_APPLIED, false, "Applying", m.clone(), now),
        ShapingState::Failing(m) => status.set_condition(ct::SHAPING_APPLIED, false, "ShapingFailed", m.clone(), now),
    }

    let mut troubles = f.failing_tasks.clone();
    if !f.not_running.is_empty() {
        // Tasks missing: a node that is down is the first thing a user wants to know.
        troubles.extend(f.down_nodes.iter().map(|n| format!("node {n} is down")));
    }
    if let ShapingState::Failing(m) = &f.shaping {
        troubles.push(format!("shaping: {m}"));
    }
    let mut waiting: Vec<String> = f.missing_networks.iter().map(|n| format!("network {n}")).collect();
    waiting.extend(f.not_running.iter().cloned());
    waiting.extend(f.networks_in_use.iter().map(|n| format!("network {n}'s tasks to stop before it is removed")));
    waiting.extend(f.jobs_to_start.iter().map(|j| format!("job {j} to start")));
    if let ShapingState::Pending(m) = &f.shaping {
        waiting.push(format!("shaping ({m})"));
    }
    let problems: Vec<String> = f.conflicts.iter().map(|c| c.to_string()).chain(f.errors.iter().cloned()).collect();

    // Set again below only while the lab waits.
    let waited_for = status.waiting.take();
    let (phase, reason, message) = if let Some(e) = &f.spec_error {
        (Phase::Invalid, "SpecInvalid", e.clone())
    } else if !problems.is_empty() {
        (Phase::Failed, "ReconcileFailed", problems.join("; "))
    } else if !troubles.is_empty() {
        (Phase::Degraded, "TasksFailing", troubles.join("; "))
    } else if waiting.is_empty() && f.acted == 0 && f.stopped {
        (Phase::Completed, "Completed", "the schedule ran to its end and stopped every task (`end: stop`); an edited schedule (or `labctl start`, for `start: manual`) runs it again".to_string())
    } else if waiting.is_empty() && f.acted == 0 {
        let jobs = if f.jobs.is_empty() { String::new() } else { format!("; jobs: {}", f.jobs.join(", ")) };
        (Phase::Ready, "Converged", format!("{running}/{} services running{jobs}", f.services))
    } else if f.acted > 0 {
        (Phase::Progressing, "Progressing", format!("applied {} changes", f.acted))
    } else {
        let what = waiting.join(", ");
        // Waiting for exactly what the last pass waited for is no progress; anything else is.
        let since = waited_for.filter(|w| w.what == what).map_or(now, |w| w.since);
        let waited = (now - since).to_std().unwrap_or_default();
        status.waiting = Some(Waiting { what: what.clone(), since });
        if waited >= f.progress_deadline {
            (Phase::Degraded, "ProgressDeadlineExceeded", format!("no progress for {} (progressDeadline {}): waiting for {what}", short(waited), short(f.progress_deadline)))
        } else {
            (Phase::Progressing, "Progressing", format!("waiting for {what}"))
        }
    };
    let ready = phase == Phase::Ready;
    status.phase = phase;
    status.message = message.clone();
    status.last_error = (!problems.is_empty()).then(|| problems.join("; "));
    if ready {
        status.ready_since.get_or_insert(now);
    } else {
        status.ready_since = None;
    }
    status.set_condition(ct::READY, ready, reason, message.clone(), now);
    status.set_abnormal(ct::RECONCILING, phase == Phase::Progressing, reason, message.clone(), now);
    status.set_abnormal(ct::STALLED, matches!(phase, Phase::Failed | Phase::Degraded | Phase::Invalid), reason, message, now);
    status
}

/// `90s`, `12m`, `1h5m`: whole seconds, as a user writes a deadline.
fn short(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ConflictCause;
    use crate::status::ConditionStatus;
    use proptest::prelude::*;

    fn calm() -> Findings {
        Findings {
            spec_error: None,
            conflicts: vec![],
            errors: vec![],
            acted: 0,
            networks: 1,
            missing_networks: vec![],
            networks_in_use: vec![],
            services: 2,
            jobs: vec![],
            jobs_to_start: vec![],
            not_running: vec![],
            failing_tasks: vec![],
            down_nodes: vec![],
            shaping: ShapingState::Done("2 tasks shaped (userspace)".into()),
            stopped: false,
            progress_deadline: DEFAULT_PROGRESS_DEADLINE,
        }
    }

    fn cond(s: &LabStatus, t: &str) -> Option<(ConditionStatus, String)> {
        s.condition(t).map(|c| (c.status, c.reason.clone()))
    }

    fn derived(f: Findings) -> LabStatus {
        derive(LabStatus::default(), &f, Utc::now())
    }

    #[test]
    fn a_job_to_start_keeps_the_lab_progressing_with_its_services_ready() {
        let s = derived(Findings { jobs_to_start: vec!["load".into()], ..calm() });
        assert_eq!((s.phase, s.message.as_str()), (Phase::Progressing, "waiting for job load to start"));
        assert_eq!(cond(&s, ct::SERVICES_READY), Some((ConditionStatus::True, "AllRunning".into())), "what the job waits for");
        assert!(s.ready_for_jobs() && s.ready_since.is_none());
    }

    #[test]
    fn every_phase_and_its_conditions() {
        let s = derived(calm());
        assert_eq!((s.phase, s.message.as_str()), (Phase::Ready, "2/2 services running"));
        assert_eq!(cond(&s, ct::READY), Some((ConditionStatus::True, "Converged".into())));
        assert!(s.condition(ct::STALLED).is_none() && s.condition(ct::RECONCILING).is_none());

        let s = derived(Findings { acted: 3, ..calm() });
        assert_eq!((s.phase, s.message.as_str()), (Phase::Progressing, "applied 3 changes"));
        assert_eq!(cond(&s, ct::RECONCILING), Some((ConditionStatus::True, "Progressing".into())));

        let s = derived(Findings { shaping: ShapingState::Pending("1/2 tasks shaped".into()), ..calm() });
        assert_eq!((s.phase, s.message.as_str()), (Phase::Progressing, "waiting for shaping (1/2 tasks shaped)"));

        // A network dropped from the lab while a rolling update moves its tasks off: waited for.
        let s = derived(Findings { networks_in_use: vec!["x_old".into()], not_running: vec!["a 1/2".into()], ..calm() });
        assert_eq!((s.phase, s.message.as_str()), (Phase::Progressing, "waiting for a 1/2, network x_old's tasks to stop before it is removed"));
        assert_eq!(cond(&s, ct::STALLED), None);

        let clash = Conflict { kind: ObjectKind::Network, name: "x_n".into(), cause: ConflictCause::Name { owner: None } };
        let s = derived(Findings { conflicts: vec![clash], ..calm() });
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(cond(&s, ct::NETWORKS_READY).map(|c| c.0), Some(ConditionStatus::False));
        assert_eq!(s.last_error.as_deref(), Some("network x_n already exists and is not managed by swarmlab; remove or rename it"));

        let s = derived(Findings { not_running: vec!["a 0/1".into()], down_nodes: vec!["n3".into()], ..calm() });
        assert_eq!((s.phase, s.message.as_str()), (Phase::Degraded, "node n3 is down"));
        assert_eq!(cond(&s, ct::STALLED), Some((ConditionStatus::True, "TasksFailing".into())));

        let s = derived(Findings { spec_error: Some("x.yaml:3:1: spec: bad".into()), acted: 1, ..calm() });
        assert_eq!((s.phase, s.message.as_str()), (Phase::Invalid, "x.yaml:3:1: spec: bad"));
        assert_eq!(cond(&s, ct::READY), Some((ConditionStatus::False, "SpecInvalid".into())));
        assert!(s.condition(ct::RECONCILING).is_none(), "Invalid is not Reconciling");

        let s = derived(Findings { stopped: true, acted: 2, ..calm() });
        assert_eq!((s.phase, s.message.as_str()), (Phase::Progressing, "applied 2 changes"), "stopping");
        let s = derived(Findings { stopped: true, not_running: vec!["a 1/0".into()], ..calm() });
        assert_eq!((s.phase, s.message.as_str()), (Phase::Progressing, "waiting for a 1/0"), "a task still stopping");
        let s = derived(Findings { stopped: true, ..calm() });
        assert_eq!(s.phase, Phase::Completed);
        assert_eq!(cond(&s, ct::READY), Some((ConditionStatus::False, "Completed".into())));
        assert!(s.condition(ct::STALLED).is_none() && s.condition(ct::RECONCILING).is_none() && s.ready_since.is_none());
    }

    #[test]
    fn failing_shaping_is_never_ready() {
        // Seen before: phase Degraded with Ready=True (Converged) and ShapingApplied=False.
        let s = derived(Findings { shaping: ShapingState::Failing("a on lan: nsenter failed".into()), ..calm() });
        assert_eq!(s.phase, Phase::Degraded);
        assert_eq!(cond(&s, ct::READY).map(|c| c.0), Some(ConditionStatus::False));
        assert_eq!(cond(&s, ct::SHAPING_APPLIED).map(|c| c.1), Some("ShapingFailed".to_string()));
    }

    #[test]
    fn ready_since_survives_passes_and_resets_when_not_ready() {
        let t0 = Utc::now();
        let s = derive(LabStatus::default(), &calm(), t0);
        let s = derive(s, &calm(), t0 + chrono::Duration::seconds(30));
        assert_eq!(s.ready_since, Some(t0));
        let s = derive(s, &Findings { acted: 1, ..calm() }, t0 + chrono::Duration::seconds(60));
        assert_eq!(s.ready_since, None);
    }

    #[test]
    fn waiting_for_the_same_things_past_the_deadline_is_degraded_and_any_change_is_progress() {
        let t0 = Utc::now();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let stuck = || Findings { not_running: vec!["a 0/1 (no node may run it)".into()], progress_deadline: std::time::Duration::from_secs(60), ..calm() };
        let s = derive(LabStatus::default(), &stuck(), t0);
        assert_eq!((s.phase, s.message.as_str()), (Phase::Progressing, "waiting for a 0/1 (no node may run it)"));
        let s = derive(s, &stuck(), at(59));
        assert_eq!(s.phase, Phase::Progressing, "{}", s.message);
        let s = derive(s, &stuck(), at(60));
        assert_eq!((s.phase, s.message.as_str()), (Phase::Degraded, "no progress for 1m (progressDeadline 1m): waiting for a 0/1 (no node may run it)"));
        assert_eq!(cond(&s, ct::STALLED), Some((ConditionStatus::True, "ProgressDeadlineExceeded".into())));
        assert_eq!(cond(&s, ct::READY), Some((ConditionStatus::False, "ProgressDeadlineExceeded".into())));
        assert!(s.past_progress_deadline());
        // Still stuck: the clock keeps running from the first pass.
        let s = derive(s, &stuck(), at(95));
        assert!(s.message.starts_with("no progress for 1m35s "), "{}", s.message);
        // Something else to wait for (a task started): progress, the clock starts again.
        let moved = || Findings { not_running: vec!["a 1/2".into()], ..stuck() };
        let s = derive(s, &moved(), at(100));
        assert_eq!((s.phase, s.message.as_str()), (Phase::Progressing, "waiting for a 1/2"));
        assert_eq!(s.waiting.as_ref().map(|w| w.since), Some(at(100)));
        assert!(!s.past_progress_deadline());
        // A change applied is progress too; Ready forgets the clock.
        let s = derive(s, &Findings { acted: 1, ..moved() }, at(150));
        assert_eq!((s.phase, &s.waiting), (Phase::Progressing, &None));
        let s = derive(s, &moved(), at(200));
        let s = derive(s, &moved(), at(259));
        assert_eq!(s.phase, Phase::Progressing, "59 s since the change applied at 200 s");
        let s = derive(s, &calm(), at(300));
        assert_eq!((s.phase, &s.waiting), (Phase::Ready, &None));
    }

    #[test]
    fn the_deadline_is_written_as_a_user_writes_it() {
        let d = std::time::Duration::from_secs;
        assert_eq!([d(45), d(600), d(95), d(3600), d(3900)].map(short), ["45s", "10m", "1m35s", "1h", "1h5m"]);
    }

    fn findings() -> impl Strategy<Value = Findings> {
        let list = || prop::collection::vec("[a-z]{1,4}", 0..3);
        let shaping = prop_oneof![
            Just(ShapingState::Done("ok".into())),
            Just(ShapingState::Pending("1/2".into())),
            Just(ShapingState::Failing("x".into())),
        ];
        let conflict = (any::<bool>(), "[a-z]{1,4}").prop_map(|(net, name)| Conflict {
            kind: if net { ObjectKind::Network } else { ObjectKind::Service },
            name,
            cause: ConflictCause::Name { owner: None },
        });
        let conflicts = prop::collection::vec(conflict, 0..2);
        (prop::option::of("[a-z]{1,8}"), conflicts, list(), 0usize..4, list(), list(), list(), list(), list(), shaping, any::<bool>()).prop_map(
            |(spec_error, conflicts, errors, acted, missing_networks, networks_in_use, not_running, failing_tasks, down_nodes, shaping, stopped)| Findings {
                spec_error,
                conflicts,
                errors,
                acted,
                networks: 2,
                missing_networks,
                networks_in_use,
                services: 3,
                jobs: vec![],
                jobs_to_start: vec![],
                not_running,
                failing_tasks,
                down_nodes,
                shaping,
                stopped,
                progress_deadline: DEFAULT_PROGRESS_DEADLINE,
            },
        )
    }

    proptest! {
        #[test]
        fn phase_and_conditions_always_agree(first in findings(), second in findings()) {
            // Twice over, so conditions left by an earlier pass are covered too.
            let s = derive(derived(first), &second, Utc::now());
            let is = |t: &str| s.condition(t).map(|c| c.status);
            prop_assert_eq!(s.phase == Phase::Ready, is(ct::READY) == Some(ConditionStatus::True));
            prop_assert_eq!(s.phase == Phase::Progressing, is(ct::RECONCILING).is_some());
            prop_assert_eq!(matches!(s.phase, Phase::Failed | Phase::Degraded | Phase::Invalid), is(ct::STALLED).is_some());
            prop_assert_eq!(s.phase == Phase::Ready, s.ready_since.is_some());
            prop_assert!(s.phase != Phase::Ready || !second.stopped, "a stopped lab is never Ready");
            prop_assert!(s.phase != Phase::Ready || second.networks_in_use.is_empty(), "Ready with a network still to remove");
            prop_assert!(s.phase != Phase::Completed || second.stopped, "only a stopped lab completes");
            prop_assert_eq!(s.phase == Phase::Invalid, is(ct::SPEC_VALID) == Some(ConditionStatus::False));
            if s.phase == Phase::Ready {
                for t in [ct::NETWORKS_READY, ct::SERVICES_READY, ct::SHAPING_APPLIED] {
                    prop_assert_eq!(is(t), Some(ConditionStatus::True), "{} with phase Ready", t);
                }
            }
            prop_assert!(!s.message.is_empty());
            prop_assert!(s.waiting.is_none() || matches!(s.phase, Phase::Progressing | Phase::Degraded), "a waiting clock in phase {:?}", s.phase);
        }
    }
}
