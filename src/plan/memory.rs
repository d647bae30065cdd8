//! What labd remembers of a lab on Swarm itself, beside its services and networks: whether
//! `labctl suspend` holds it, and its schedule's clock. Both are kept in Redis too, but a
//! Redis that restarts without persistence loses them, and then a suspended lab would be
//! changed again and a running experiment would start over from step 1. So labd also writes
//! them into the labels of one Swarm config per lab (`<lab>_swarmlab-memory`, owned like the
//! lab's other objects): Swarm keeps them in its Raft store, and a config's labels can be
//! updated in place. Pure: labels in, labels out.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::labels;
use crate::status::{LabStatus, ScheduleStatus};

/// On the memory config: `true` while `labctl suspend` holds the lab.
pub const SUSPENDED: &str = "io.swarmlab.suspended";
/// On the memory config: the schedule ran to its end (its end is not told twice).
pub const SCHEDULE_FINISHED: &str = "io.swarmlab.schedule-finished";
/// Says what the config is; its data holds nothing else.
pub const MEMORY: &str = "io.swarmlab.memory";
/// The config's data (Swarm refuses an empty one): a line for whoever inspects it, base64.
pub const DATA_BASE64: &str = "c3dhcm1sYWI6IHdoYXQgbGFiZCByZW1lbWJlcnMgb2YgdGhpcyBsYWIgaXMgaW4gdGhlIGxhYmVscwo=";

const MEMORY_SUFFIX: &str = "_swarmlab-memory";

/// The name of the lab's memory config.
pub fn memory_name(lab: &str) -> String {
    format!("{lab}{MEMORY_SUFFIX}")
}

/// The lab whose memory config has this name, if it is one.
pub fn lab_of_memory(config: &str) -> Option<&str> {
    config.strip_suffix(MEMORY_SUFFIX).filter(|lab| !lab.is_empty())
}

/// What labd keeps of a lab beyond its definition and its objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabMemory {
    /// `labctl suspend` holds the lab (not `suspend: true`, which the file keeps).
    pub suspended: bool,
    /// The schedule's clock once it has started.
    pub clock: Option<ScheduleClock>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleClock {
    pub revision: String,
    pub started_at: DateTime<Utc>,
    pub finished: bool,
}

impl LabMemory {
    /// What to remember after a pass that left `status`.
    pub fn of(status: &LabStatus, suspended_by_labctl: bool) -> Self {
        let clock = status.schedule.as_ref().and_then(|s| {
            Some(ScheduleClock { revision: s.revision.clone(), started_at: s.started_at?, finished: s.finished })
        });
        LabMemory { suspended: suspended_by_labctl, clock }
    }

    /// The config's labels: the lab's ownership labels and the memory.
    pub fn labels(&self, lab: &str) -> HashMap<String, String> {
        let mut out = HashMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
            (labels::LAB.to_string(), lab.to_string()),
            (labels::STACK_NAMESPACE.to_string(), lab.to_string()),
            (MEMORY.to_string(), "true".to_string()),
            (SUSPENDED.to_string(), self.suspended.to_string()),
        ]);
        if let Some(clock) = &self.clock {
            out.insert(labels::SCHEDULE_CLOCK.to_string(), labels::schedule_clock(&clock.revision, clock.started_at));
            out.insert(SCHEDULE_FINISHED.to_string(), clock.finished.to_string());
        }
        out
    }

    /// The lab and memory a config named `name` with `labels` holds, if it is a memory config
    /// swarmlab owns (one named like it but not ours is not read, nor ever changed).
    pub fn from_config(name: &str, labels: &HashMap<String, String>) -> Option<(String, LabMemory)> {
        let lab = labels::owner(labels)?;
        if name != memory_name(lab) || labels.get(MEMORY).map(String::as_str) != Some("true") {
            return None;
        }
        let clock = labels.get(labels::SCHEDULE_CLOCK).and_then(|v| labels::parse_schedule_clock(v)).map(|(revision, started_at)| ScheduleClock {
            revision,
            started_at,
            finished: labels.get(SCHEDULE_FINISHED).map(String::as_str) == Some("true"),
        });
        let memory = LabMemory { suspended: labels.get(SUSPENDED).map(String::as_str) == Some("true"), clock };
        Some((lab.to_string(), memory))
    }

    /// The schedule's clock as a status a pass resumes from (the step reached is worked out
    /// again from time 0).
    pub fn schedule_status(&self) -> Option<ScheduleStatus> {
        let clock = self.clock.as_ref()?;
        Some(ScheduleStatus { revision: clock.revision.clone(), started_at: Some(clock.started_at), finished: clock.finished, ..Default::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_configs_name_gives_its_lab() {
        assert_eq!(lab_of_memory(&memory_name("kad")), Some("kad"));
        assert_eq!(lab_of_memory("kad_web"), None);
        assert_eq!(lab_of_memory("_swarmlab-memory"), None);
    }

    #[test]
    fn a_memory_reads_back_from_its_labels_and_only_ours_is_read() {
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T06:30:12.5Z").unwrap().with_timezone(&Utc);
        let memory = LabMemory { suspended: true, clock: Some(ScheduleClock { revision: "0a1b".into(), started_at: t0, finished: false }) };
        let labels = memory.labels("dht");
        assert_eq!(LabMemory::from_config("dht_swarmlab-memory", &labels), Some(("dht".to_string(), memory.clone())));
        assert_eq!(LabMemory::from_config("other_swarmlab-memory", &labels), None, "named for another lab");
        let mut foreign = labels.clone();
        foreign.remove(labels::MANAGED_BY);
        assert_eq!(LabMemory::from_config("dht_swarmlab-memory", &foreign), None, "not owned");
        let empty = LabMemory::default();
        assert_eq!(LabMemory::from_config("dht_swarmlab-memory", &empty.labels("dht")), Some(("dht".to_string(), empty)));
    }

    #[test]
    fn what_is_remembered_of_a_status_is_the_started_clock_and_the_labctl_suspension() {
        let t0 = Utc::now();
        let mut status = LabStatus::default();
        assert_eq!(LabMemory::of(&status, false), LabMemory::default());
        status.schedule = Some(ScheduleStatus { revision: "r".into(), step: 2, ..Default::default() });
        assert_eq!(LabMemory::of(&status, true), LabMemory { suspended: true, clock: None }, "a clock not started yet is nothing to keep");
        status.schedule = Some(ScheduleStatus { revision: "r".into(), started_at: Some(t0), step: 2, finished: true, ..Default::default() });
        let memory = LabMemory::of(&status, false);
        let resumed = memory.schedule_status().unwrap();
        assert_eq!((resumed.revision.as_str(), resumed.started_at, resumed.finished, resumed.step), ("r", Some(t0), true, 0));
    }
}
