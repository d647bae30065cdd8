//! `labctl wait LAB --for ready|jobs|completed|deleted|step=N [--timeout 120s]`: for scripts and CI,
//! as `kubectl wait`. Exit 0 when the lab gets there; 1 with the reason (phase, message,
//! services not running, the schedule's step) when the timeout comes first, or as soon as the
//! lab's file has been invalid, or the lab past its progress deadline, for 2 s (it will not get
//! there unless someone changes something); 2 when Redis cannot be read.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use swarmlab::status::{LabStatus, Phase, ServiceStatus};

use crate::common::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// Phase Ready for the current generation of the file (every task running, shaping applied).
    Ready,
    /// Phase Completed: its schedule ran to its end and `end: stop` stopped every task (an
    /// experiment run from a script: wait for it, then collect the results).
    Completed,
    /// The lab is gone: its file was removed and everything it owned is torn down.
    Deleted,
    /// Step N of the schedule (1-based) is in force and applied by every agent, or a later
    /// step came: what a script measures next sees step N's conditions (or what followed).
    Step(usize),
    /// Ready, and every job's current run completed (each of its tasks exited 0): the
    /// workload ran; its output is in `labctl logs`.
    Jobs,
}

impl std::str::FromStr for WaitFor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "ready" => Ok(WaitFor::Ready),
            "completed" => Ok(WaitFor::Completed),
            "deleted" => Ok(WaitFor::Deleted),
            "jobs" => Ok(WaitFor::Jobs),
            _ => match text.strip_prefix("step=").map(str::parse::<usize>) {
                Some(Ok(n)) if n >= 1 => Ok(WaitFor::Step(n)),
                _ => Err(format!("`{text}`: expected ready, jobs, completed, deleted or step=N (N from 1, the schedule's step)")),
            },
        }
    }
}

impl std::fmt::Display for WaitFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitFor::Ready => f.write_str("Ready"),
            WaitFor::Completed => f.write_str("Completed"),
            WaitFor::Deleted => f.write_str("deleted"),
            WaitFor::Step(n) => write!(f, "at step {n} of its schedule, applied"),
            WaitFor::Jobs => f.write_str("Ready with its jobs completed"),
        }
    }
}

/// Services that do not run exactly their tasks, as `web 1/3` (or `web 3/1` while scaling
/// down), and jobs not done, as `load 1/4 completed`. Services scaled to 0 converge at 0.
fn not_running(s: &LabStatus) -> Vec<String> {
    s.services
        .iter()
        .filter_map(|(n, v)| match v.completed {
            Some(done) => (!v.job_done()).then(|| format!("{n} {done}/{} completed", v.desired)),
            None => (v.running != v.desired).then(|| format!("{n} {}/{}", v.running, v.desired)),
        })
        .collect()
}

fn reached(status: Option<&LabStatus>, target: WaitFor) -> bool {
    match (target, status) {
        (WaitFor::Deleted, None) => true,
        (WaitFor::Ready, Some(s)) => s.phase == Phase::Ready && s.observed_generation >= s.generation,
        (WaitFor::Jobs, Some(s)) => {
            s.phase == Phase::Ready && s.observed_generation >= s.generation && s.services.values().filter(|v| v.completed.is_some()).all(ServiceStatus::job_done)
        }
        (WaitFor::Completed, Some(s)) => s.phase == Phase::Completed && s.observed_generation >= s.generation,
        (WaitFor::Step(n), Some(s)) => {
            let Some(c) = s.schedule.as_ref().filter(|_| s.observed_generation >= s.generation) else { return false };
            // A later run has been through every step; in the first, step N applied or passed.
            c.run > 1 || c.step > n || (c.step == n && c.applied_after_ms.is_some())
        }
        _ => false,
    }
}

/// Why the lab will not get there unless someone changes something.
#[derive(Debug, PartialEq, Eq)]
enum Blocked<'a> {
    /// Its current file is invalid: labd keeps what the last valid one made, and waits for a fix.
    Invalid(&'a str),
    /// Past its progress deadline (it waited for the same things longer than
    /// `progressDeadline`): labd keeps trying, but a script stops here, as `kubectl rollout
    /// status` does.
    Stuck(&'a str),
    /// Suspended (`labctl suspend`, or `suspend: true` in its file): labd changes nothing of it,
    /// applies no step of its schedule, so it gets nowhere new until resumed.
    Suspended(&'a str),
}

fn blocked(status: Option<&LabStatus>, target: WaitFor) -> Option<Blocked<'_>> {
    let s = status?;
    if target == WaitFor::Deleted || s.observed_generation < s.generation {
        return None;
    }
    if s.phase == Phase::Invalid {
        Some(Blocked::Invalid(&s.message))
    } else if s.phase == Phase::Suspended {
        Some(Blocked::Suspended(&s.message))
    } else if s.past_progress_deadline() {
        Some(Blocked::Stuck(&s.message))
    } else {
        None
    }
}

/// How long a lab must stay blocked before the wait gives up: a file being written (a save
/// in several writes), or a fix saved just before the wait, is read by labd within its debounce.
const BLOCKED_FOR: Duration = Duration::from_secs(2);

fn progress(status: Option<&LabStatus>) -> String {
    match status {
        None => "no status yet (is the lab's file in labd's directory?)".into(),
        Some(s) => {
            let waiting = not_running(s);
            let services = if waiting.is_empty() { String::new() } else { format!(" [{}]", waiting.join(", ")) };
            let step = s.schedule.as_ref().map(|c| format!(" (step {}/{}{}{})", c.step, c.steps, if c.run > 1 { format!(" run {}", c.run) } else { String::new() }, if c.step > 0 && c.applied_after_ms.is_none() { ", applying" } else { "" })).unwrap_or_default();
            format!("{}: {}{services}{step}", s.phase, s.message)
        }
    }
}

pub async fn run(url: &str, lab: &str, target: WaitFor, timeout: Duration) -> ExitCode {
    run_after(url, lab, target, timeout, None).await
}

/// As [`run`], counting only a status written by a look that began at or after `looked_after`
/// (labd's clock): `labctl reconcile` waits for the look it asked for.
pub async fn run_after(url: &str, lab: &str, target: WaitFor, timeout: Duration, looked_after: Option<chrono::DateTime<chrono::Utc>>) -> ExitCode {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut shown = String::new();
    let mut read_once = false;
    let mut blocked_since: Option<Instant> = None;
    loop {
        let read = match reader(url).await {
            Ok(mut r) => r.status(lab).await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        let status = match read {
            Ok(s) => {
                read_once = true;
                s
            }
            // A wrong address fails at once; Redis going away while we wait (a restart) is
            // waited out until the timeout.
            Err(e) if !read_once => {
                eprintln!("labctl wait: {}", swarmlab::error_chain::Chain(e.as_ref()));
                return ExitCode::from(2);
            }
            Err(e) if started.elapsed() >= timeout => {
                eprintln!("labctl wait: {lab}: redis unreadable at the timeout: {}", swarmlab::error_chain::Chain(e.as_ref()));
                return ExitCode::from(1);
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let fresh = looked_after.is_none_or(|after| status.as_ref().and_then(|s| s.updated_at).is_some_and(|looked| looked >= after));
        if fresh && reached(status.as_ref(), target) {
            let what = match target {
                WaitFor::Ready => format!("{lab} is Ready ({})", status.as_ref().map(|s| s.message.as_str()).unwrap_or_default()),
                WaitFor::Step(_) => format!("{lab} is {target} ({})", status.as_ref().and_then(|s| s.schedule.as_ref()).map(|c| c.in_force.as_str()).unwrap_or_default()),
                _ => format!("{lab} is {target}"),
            };
            println!("{what} after {:.1}s", started.elapsed().as_secs_f64());
            return ExitCode::SUCCESS;
        }
        match blocked(status.as_ref(), target).filter(|_| fresh) {
            Some(why) if blocked_since.is_some_and(|t| t.elapsed() >= BLOCKED_FOR) => {
                match why {
                    Blocked::Invalid(why) => eprintln!("labctl wait: {lab} cannot become {target}: its file is invalid: {why}. Fix the file (`labctl validate` says the same), then wait again"),
                    Blocked::Stuck(why) => eprintln!("labctl wait: {lab} is not becoming {target}: {why}. labd keeps trying; `labctl describe {lab}` shows its services and events"),
                    // The message says how it was suspended, and how to undo it.
                    Blocked::Suspended(why) => eprintln!("labctl wait: {lab} cannot become {target}: {why}. Resume it, then wait again"),
                }
                return ExitCode::from(1);
            }
            Some(_) => blocked_since = blocked_since.or(Some(Instant::now())),
            None => blocked_since = None,
        }
        let now = progress(status.as_ref());
        if tty && now != shown {
            eprintln!("[{:>5.1}s] {lab}: {now}", started.elapsed().as_secs_f64());
            shown = now.clone();
        }
        if started.elapsed() >= timeout {
            eprintln!("labctl wait: {lab} is not {target} after {}s: {now}", timeout.as_secs());
            return ExitCode::from(1);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_means_the_current_generation_and_scaled_to_zero_counts_as_converged() {
        let mut s = LabStatus { phase: Phase::Ready, generation: 2, observed_generation: 1, ..Default::default() };
        assert!(!reached(Some(&s), WaitFor::Ready), "Ready for an older version of the file");
        s.observed_generation = 2;
        s.services.insert("idle".into(), ServiceStatus { desired: 0, running: 0, ..Default::default() });
        assert!(reached(Some(&s), WaitFor::Ready));
        assert!(not_running(&s).is_empty());
        assert!(!reached(Some(&s), WaitFor::Deleted) && reached(None, WaitFor::Deleted));
        assert!(!reached(Some(&s), WaitFor::Completed), "Ready is not Completed");
        s.phase = Phase::Completed;
        assert!(reached(Some(&s), WaitFor::Completed) && !reached(Some(&s), WaitFor::Ready));
    }

    #[test]
    fn an_invalid_file_blocks_every_wait_but_deletion() {
        let mut s = LabStatus { phase: Phase::Invalid, generation: 3, observed_generation: 3, message: "lab.yaml:4:7: spec.services: expected a mapping".into(), ..Default::default() };
        assert_eq!(blocked(Some(&s), WaitFor::Ready), Some(Blocked::Invalid("lab.yaml:4:7: spec.services: expected a mapping")));
        assert!(blocked(Some(&s), WaitFor::Jobs).is_some() && blocked(Some(&s), WaitFor::Step(2)).is_some());
        assert_eq!(blocked(Some(&s), WaitFor::Deleted), None, "an invalid lab can still be deleted");
        s.generation = 4;
        assert_eq!(blocked(Some(&s), WaitFor::Ready), None, "a newer version of the file is not read yet");
        s.observed_generation = 4;
        s.phase = Phase::Failed;
        assert_eq!(blocked(Some(&s), WaitFor::Ready), None, "Docker's failures are retried");
        assert_eq!(blocked(None, WaitFor::Ready), None);
    }

    #[test]
    fn a_suspended_lab_blocks_every_wait_but_deletion() {
        let message = "suspended by labctl: labd changes nothing; 1 changes wait for the resume";
        let s = LabStatus { phase: Phase::Suspended, generation: 2, observed_generation: 2, message: message.into(), ..Default::default() };
        assert_eq!(blocked(Some(&s), WaitFor::Ready), Some(Blocked::Suspended(message)));
        assert!(blocked(Some(&s), WaitFor::Jobs).is_some() && blocked(Some(&s), WaitFor::Completed).is_some() && blocked(Some(&s), WaitFor::Step(2)).is_some());
        assert_eq!(blocked(Some(&s), WaitFor::Deleted), None);
    }

    #[test]
    fn a_lab_past_its_progress_deadline_blocks_every_wait_but_deletion() {
        let waiting = swarmlab::status::Waiting { what: "web 0/1".into(), since: chrono::Utc::now() };
        let message = "no progress for 10m (progressDeadline 10m): waiting for web 0/1";
        let mut s = LabStatus { phase: Phase::Degraded, generation: 1, observed_generation: 1, message: message.into(), waiting: Some(waiting), ..Default::default() };
        assert_eq!(blocked(Some(&s), WaitFor::Ready), Some(Blocked::Stuck(message)));
        assert!(blocked(Some(&s), WaitFor::Jobs).is_some() && blocked(Some(&s), WaitFor::Deleted).is_none());
        s.generation = 2;
        assert_eq!(blocked(Some(&s), WaitFor::Ready), None, "a newer version of the file is not read yet");
        s.observed_generation = 2;
        s.waiting = None;
        assert_eq!(blocked(Some(&s), WaitFor::Ready), None, "Degraded by failing tasks: waited out until the timeout");
    }

    #[test]
    fn jobs_means_ready_with_every_job_run_complete() {
        let mut s = LabStatus { phase: Phase::Ready, generation: 1, observed_generation: 1, ..Default::default() };
        s.services.insert("web".into(), ServiceStatus { desired: 2, running: 2, ..Default::default() });
        assert!(reached(Some(&s), WaitFor::Jobs), "a lab without jobs has them all done");
        s.services.insert("load".into(), ServiceStatus { desired: 4, running: 2, completed: Some(1), ..Default::default() });
        assert!(reached(Some(&s), WaitFor::Ready) && !reached(Some(&s), WaitFor::Jobs), "a running job does not hold Ready back");
        assert_eq!(not_running(&s), ["load 1/4 completed"]);
        s.services.insert("load".into(), ServiceStatus { desired: 4, running: 0, completed: Some(4), ..Default::default() });
        assert!(reached(Some(&s), WaitFor::Jobs) && not_running(&s).is_empty());
        s.phase = Phase::Degraded;
        assert!(!reached(Some(&s), WaitFor::Jobs), "not while the lab is degraded");
        assert_eq!("jobs".parse::<WaitFor>(), Ok(WaitFor::Jobs));
    }

    #[test]
    fn a_step_counts_once_applied_or_passed() {
        use swarmlab::status::ScheduleStatus;
        let at = |step: usize, run: u64, applied: bool| LabStatus {
            schedule: Some(ScheduleStatus { step, steps: 3, run, applied_after_ms: applied.then_some(40), ..Default::default() }),
            ..Default::default()
        };
        assert!(!reached(Some(&at(1, 1, true)), WaitFor::Step(2)), "not yet");
        assert!(!reached(Some(&at(2, 1, false)), WaitFor::Step(2)), "in force, not applied everywhere yet");
        assert!(reached(Some(&at(2, 1, true)), WaitFor::Step(2)));
        assert!(reached(Some(&at(3, 1, false)), WaitFor::Step(2)), "passed");
        assert!(reached(Some(&at(1, 2, false)), WaitFor::Step(2)), "a later run");
        assert!(!reached(Some(&LabStatus::default()), WaitFor::Step(1)), "no schedule running");
        assert_eq!("step=2".parse::<WaitFor>(), Ok(WaitFor::Step(2)));
        assert!("step=0".parse::<WaitFor>().is_err() && "stop".parse::<WaitFor>().is_err());
        assert!(progress(Some(&at(2, 1, false))).contains("(step 2/3, applying)"));
    }
}
