//! The labels that mark what swarmlab owns. labd never changes or removes an object without them.

pub const STACK_NAMESPACE: &str = "com.docker.stack.namespace";
pub const LAB: &str = "io.swarmlab.lab";
pub const MANAGED_BY: &str = "io.swarmlab.managed-by";
pub const MANAGED_BY_VALUE: &str = "swarmlab";
pub const SPEC_HASH: &str = "io.swarmlab.spec-hash";
/// On a service: a hash of what its tasks run (its spec less replicas, service labels and
/// update policy), so a change can say whether Swarm replaces its tasks. Absent on services
/// an older labd made: their changes say only "spec changed".
pub const TASK_HASH: &str = "io.swarmlab.task-hash";
/// On a service the schedule's `end: stop` stopped (no task runs until the schedule runs again).
pub const STOPPED: &str = "io.swarmlab.stopped";
/// On a service the schedule stopped, and on the lab's memory config: the schedule's revision
/// and its time 0 (`<revision>@<RFC 3339>`). Swarm keeps it when Redis loses the lab's status,
/// so a labd starting on an empty Redis finds the clock again (and keeps a stopped lab
/// stopped).
pub const SCHEDULE_CLOCK: &str = "io.swarmlab.schedule-clock";
/// On a job of a lab with a schedule: the schedule's run it belongs to (`<clock>#<run>`);
/// in its hash, so each run is an update, which runs the job again.
pub const JOB_RUN: &str = "io.swarmlab.job-run";
/// The short name of a service or network inside its lab.
pub const MEMBER: &str = "io.swarmlab.name";
/// On a config holding a file a service mounts: the file's name in `spec.configs` (the
/// config's [`MEMBER`] is the service's).
pub const FILE: &str = "io.swarmlab.file";

use std::collections::HashMap;

use chrono::{DateTime, Utc};

/// The lab that owns an object with these labels, if swarmlab owns it at all.
pub fn owner(labels: &HashMap<String, String>) -> Option<&str> {
    match labels.get(MANAGED_BY).map(String::as_str) {
        Some(MANAGED_BY_VALUE) => labels.get(LAB).map(String::as_str),
        _ => None,
    }
}

/// Whether `lab` owns the object with these labels.
pub fn owned_by(lab: &str, labels: &HashMap<String, String>) -> bool {
    owner(labels) == Some(lab)
}

/// The value of [`SCHEDULE_CLOCK`].
pub fn schedule_clock(revision: &str, started_at: DateTime<Utc>) -> String {
    format!("{revision}@{}", started_at.to_rfc3339())
}

/// The schedule revision and time 0 a [`SCHEDULE_CLOCK`] label holds, if it is one.
pub fn parse_schedule_clock(value: &str) -> Option<(String, DateTime<Utc>)> {
    let (revision, started_at) = value.split_once('@')?;
    let started_at = DateTime::parse_from_rfc3339(started_at).ok()?.with_timezone(&Utc);
    Some((revision.to_string(), started_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_clock_reads_back_to_the_nanosecond_and_nothing_else_passes_for_one() {
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T06:30:12.123456789Z").unwrap().with_timezone(&Utc);
        let value = schedule_clock("0a1b2c3d4e5f6071", t0);
        assert_eq!(parse_schedule_clock(&value), Some(("0a1b2c3d4e5f6071".to_string(), t0)));
        assert_eq!(parse_schedule_clock("true"), None);
        assert_eq!(parse_schedule_clock("abc@yesterday"), None);
    }
}
