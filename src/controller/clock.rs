//! The clock of a lab's schedule: when its time 0 was, what it puts in force now, and when
//! that changes next. Pure: the start time lives in the lab's status, so after a labd restart
//! or a change of leader the schedule resumes where it was.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::spec::{InForce, Schedule, ScheduleStart};
use crate::status::ScheduleStatus;

/// One look at the clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub status: ScheduleStatus,
    /// What the schedule puts in force (`None`: it has not started).
    pub in_force: Option<InForce>,
    /// What is in force differs from the last look (a step came).
    pub changed: bool,
    /// The schedule ran to its end since the last look.
    pub ended: bool,
}

/// The schedule's identity: an edit starts it again. With `pick` steps the replicas they draw
/// from count too (a service scaled draws other slots, and a run must not kill tasks it has
/// spared already); without, the revision is the schedule's alone, as it always was.
fn revision_of(schedule: &Schedule, replicas: &BTreeMap<String, u64>) -> String {
    let mut hash = Sha256::new();
    hash.update(serde_json::to_vec(schedule).unwrap_or_default());
    let drawn_from = schedule.drawn_from(replicas);
    if !drawn_from.is_empty() {
        hash.update(serde_json::to_vec(&drawn_from).unwrap_or_default());
    }
    hex::encode(&hash.finalize()[..8])
}

fn describe(in_force: &InForce) -> String {
    if in_force.overrides.is_empty() && in_force.partition.is_empty() && in_force.paused.is_empty() && in_force.kills.is_empty() {
        return "static conditions".into();
    }
    let mut parts: Vec<String> = in_force.overrides.iter().map(|(target, c)| format!("{target}: {}", c.summary())).collect();
    if !in_force.partition.is_empty() {
        let groups: Vec<String> = in_force.partition.iter().map(|g| format!("[{}]", g.join(", "))).collect();
        parts.push(format!("partition {}", groups.join(" | ")));
    }
    parts.extend(in_force.paused.iter().map(|(service, tasks)| format!("service {service}: {tasks} paused")));
    // The kills of this run so far: each one changes what is in force, even on the same tasks.
    parts.extend(in_force.kills.iter().map(|k| format!("service {}: {} {} at {}s", k.service, k.tasks, if k.graceful { "stopped" } else { "killed" }, k.at.as_secs_f64())));
    parts.join("; ")
}

/// Reads the clock. `ready`: the lab is Ready now (time 0 when the schedule has no `startAt`);
/// `started_by_hand`: the last `labctl start` (time 0 of a `start: manual` schedule);
/// `replicas`: each service's, the slots `pick` steps draw from.
pub fn tick(schedule: &Schedule, previous: Option<&ScheduleStatus>, ready: bool, started_by_hand: Option<DateTime<Utc>>, now: DateTime<Utc>, replicas: &BTreeMap<String, u64>) -> Tick {
    let revision = revision_of(schedule, replicas);
    // The same schedule keeps its clock; an edited one starts again.
    let same = previous.filter(|p| p.revision == revision);
    let start_at = schedule.start_at.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
    let started_at = match schedule.start.unwrap_or_default() {
        // The last `labctl start`, or, with the starts lost (Redis emptied), the time 0 the
        // clock already had.
        ScheduleStart::Manual => started_by_hand.or(same.and_then(|p| p.started_at)),
        ScheduleStart::Ready => same.and_then(|p| p.started_at).or(start_at).or(ready.then_some(now)),
    };
    let steps = schedule.steps.len();
    let waiting_for = match schedule.start.unwrap_or_default() {
        ScheduleStart::Manual => "waiting for `labctl start`".to_string(),
        ScheduleStart::Ready => "waiting for the start".to_string(),
    };
    let waiting = |next_change_at| Tick {
        status: ScheduleStatus { revision: revision.clone(), started_at, steps, next_change_at, in_force: waiting_for.clone(), ..Default::default() },
        in_force: None,
        changed: false,
        ended: false,
    };
    let Some(start) = started_at else { return waiting(None) };
    let Ok(elapsed) = (now - start).to_std() else { return waiting(Some(start)) };
    let in_force = schedule.at_with(elapsed, replicas);
    let text = describe(&in_force);
    let changed = same.is_none_or(|p| (p.run, p.step, p.in_force.as_str()) != (in_force.run, in_force.step, text.as_str()));
    // The end comes whether or not what is in force changes with it (a stop, or a last step
    // that already restored everything).
    let ended = in_force.finished && !same.is_some_and(|p| p.finished);
    let next_change_at = in_force.next_change.and_then(|n| chrono::Duration::from_std(n).ok()).map(|n| start + n);
    let (changed_at, applied_after_ms) = match same {
        Some(p) if !changed => (p.changed_at, p.applied_after_ms),
        _ => (Some(now), None),
    };
    let status = ScheduleStatus {
        revision,
        started_at,
        step: in_force.step,
        steps,
        run: in_force.run,
        finished: in_force.finished,
        next_change_at,
        in_force: text,
        changed_at,
        applied_after_ms,
    };
    Tick { status, in_force: Some(in_force), changed, ended }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Schedule {
        let yaml = "steps:\n- at: 10s\n  network: dht\n  conditions: {delay: 50ms}\n- at: 20s\n  network: dht\n  conditions: {delay: 100ms}\n";
        serde_json::from_value(serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
    }

    fn at(t0: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
        t0 + chrono::Duration::seconds(secs)
    }

    #[test]
    fn the_clock_starts_when_the_lab_is_ready_and_survives_a_restart() {
        let t0 = Utc::now();
        let s = ramp();
        let before = tick(&s, None, false, None, t0, &BTreeMap::new());
        assert!(before.in_force.is_none() && before.status.started_at.is_none());
        let first = tick(&s, Some(&before.status), true, None, t0, &BTreeMap::new());
        assert_eq!(first.status.started_at, Some(t0));
        assert_eq!(first.status.next_change_at, Some(at(t0, 10)));
        // A restarted labd reads the status back: the clock keeps its time 0, even if the lab
        // is not Ready at that moment.
        let restored: ScheduleStatus = serde_json::from_str(&serde_json::to_string(&first.status).unwrap()).unwrap();
        let later = tick(&s, Some(&restored), false, None, at(t0, 25), &BTreeMap::new());
        assert_eq!((later.status.step, later.status.started_at), (2, Some(t0)));
        assert_eq!(later.status.in_force, "network dht: delay \"100ms\"".replace('"', ""));
        assert!(later.changed, "a step came since the last look");
        let again = tick(&s, Some(&later.status), true, None, at(t0, 26), &BTreeMap::new());
        assert!(!again.changed);
        assert_eq!(again.status.changed_at, later.status.changed_at);
    }

    #[test]
    fn an_edited_schedule_starts_again_and_a_future_start_waits() {
        let t0 = Utc::now();
        let s = ramp();
        let running = tick(&s, None, true, None, t0, &BTreeMap::new());
        let mut edited = s.clone();
        edited.steps[1].at = "30s".parse().unwrap();
        let restarted = tick(&edited, Some(&running.status), true, None, at(t0, 15), &BTreeMap::new());
        assert_eq!(restarted.status.started_at, Some(at(t0, 15)));
        assert_eq!(restarted.status.step, 0);
        let mut later = s.clone();
        later.start_at = Some(at(t0, 3600).to_rfc3339());
        let waiting = tick(&later, None, true, None, t0, &BTreeMap::new());
        assert!(waiting.in_force.is_none());
        assert_eq!(waiting.status.next_change_at, Some(at(t0, 3600)));
    }

    #[test]
    fn a_manual_schedule_waits_for_labctl_start_and_each_start_begins_again() {
        let t0 = Utc::now();
        let mut s = ramp();
        s.start = Some(ScheduleStart::Manual);
        let idle = tick(&s, None, true, None, at(t0, 100), &BTreeMap::new());
        assert!(idle.in_force.is_none() && idle.status.in_force.contains("labctl start"), "{:?}", idle.status);
        let first = tick(&s, Some(&idle.status), true, Some(at(t0, 100)), at(t0, 112), &BTreeMap::new());
        assert_eq!((first.status.started_at, first.status.step), (Some(at(t0, 100)), 1));
        let again = tick(&s, Some(&first.status), true, Some(at(t0, 200)), at(t0, 201), &BTreeMap::new());
        assert_eq!((again.status.started_at, again.status.step), (Some(at(t0, 200)), 0));
        // The starts lost with Redis: the clock keeps the time 0 it had.
        let lost = tick(&s, Some(&again.status), true, None, at(t0, 215), &BTreeMap::new());
        assert_eq!((lost.status.started_at, lost.status.step), (Some(at(t0, 200)), 1));
    }

    #[test]
    fn the_end_is_told_once_even_when_nothing_in_force_changes_with_it() {
        let t0 = Utc::now();
        let yaml = "period: 30s\nsteps:\n- at: 0s\n  network: dht\n  restore: true\n";
        let s: Schedule = serde_json::from_value(serde_yaml_ng::from_str(yaml).unwrap()).unwrap();
        let first = tick(&s, None, true, None, t0, &BTreeMap::new());
        assert!(first.changed && !first.ended);
        let end = tick(&s, Some(&first.status), true, None, at(t0, 31), &BTreeMap::new());
        assert!(!end.changed && end.ended, "step and conditions as before, but the schedule ended");
        let after = tick(&s, Some(&end.status), true, None, at(t0, 40), &BTreeMap::new());
        assert!(!after.ended, "told once");
    }

    #[test]
    fn a_schedule_that_picks_starts_again_when_the_slots_it_draws_from_change() {
        let t0 = Utc::now();
        let yaml = "steps:\n- at: 10s\n  service: sensor\n  pick: 2\n  kill: true\n";
        let s: Schedule = serde_json::from_value(serde_yaml_ng::from_str(yaml).unwrap()).unwrap();
        let replicas = |n: u64| BTreeMap::from([("sensor".to_string(), n), ("bootstrap".to_string(), 1)]);
        let running = tick(&s, None, true, None, t0, &replicas(150));
        let later = tick(&s, Some(&running.status), true, None, at(t0, 12), &replicas(150));
        assert_eq!((later.status.started_at, later.status.step), (Some(t0), 1));
        assert!(later.status.in_force.contains("killed at 10s"), "{}", later.status.in_force);
        // Scaled: another draw would kill tasks this run has spared, so the run starts over.
        let scaled = tick(&s, Some(&later.status), true, None, at(t0, 13), &replicas(100));
        assert_eq!((scaled.status.started_at, scaled.status.step), (Some(at(t0, 13)), 0));
        // Another service scaled draws nothing else: the clock runs on.
        let other = BTreeMap::from([("sensor".to_string(), 100), ("bootstrap".to_string(), 3)]);
        let on = tick(&s, Some(&scaled.status), true, None, at(t0, 14), &other);
        assert_eq!(on.status.started_at, Some(at(t0, 13)));
        // Without `pick` the revision is the schedule's alone, as before `pick` existed (a
        // running lab's clock must not start over on an upgrade of labd).
        let plain = ramp();
        assert_eq!(revision_of(&plain, &replicas(3)), revision_of(&plain, &BTreeMap::new()));
        assert_eq!(revision_of(&plain, &BTreeMap::new()), hex::encode(&Sha256::digest(serde_json::to_vec(&plain).unwrap())[..8]));
    }
}
