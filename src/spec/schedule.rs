//! Experiments over time: the `schedule` of a lab, and what it puts in force at elapsed time t.
//! Pure data and a pure function: labd evaluates it against the schedule's start (kept in the
//! lab's status, so a restart resumes where it was) and publishes the conditions in force; the
//! node agents know nothing of time.
//!
//! Semantics, where the issue left them open:
//! - Time 0 is the first time the lab is Ready (or `startAt`). Steps are relative to it.
//! - A step targets a network (every attachment to it), a service (every attachment of it) or
//!   one attachment (both). What a step sets overrides the static conditions of its target,
//!   field by field, until a later step on the same target; `restore: true` returns the target
//!   to its static conditions. Where several targets cover one attachment, the attachment's
//!   step wins over the service's, which wins over the network's (as the static levels).
//! - `partition: [[a, b], [c]]` cuts all traffic between services of different groups, both
//!   ways, from its step until a `heal: true` step or a later partition (which replaces it).
//!   Services in no group keep reaching everyone. Its own target: it does not end, and is not
//!   ended by, steps on networks or services.
//! - `kill: true` on a service kills its tasks (those in `slots`, or all) that run at the
//!   step's time; `stop: true` stops them as `docker stop` does; `pause: true` freezes them
//!   until `pause: false`, `restore: true` on the service, or the end of the run; `cpus: 0.2`
//!   caps them at a fifth of a core (a slow node, as `docker update --cpus` does, live) until a
//!   later `cpus` step on them, `restore: true` on the service, or the end of the run. Their own
//!   target: steps on the service's traffic neither end nor are ended by them.
//! - `pick: 3` (or `pick: 20%`) on such a step acts on that many of its tasks (of `slots`, or
//!   of every slot), drawn at random, again at each run: churn. The draw is a pure function of
//!   the schedule's `seed`, the step, the run and the slots drawn from, so the same lab draws
//!   the same slots in the same run, after any restart of labd, and every reader of the clock
//!   agrees on them.
//! - A ramp changes fields from `from` to `to` in `steps` equal steps over `over` (or by `by`
//!   every `every` until `until`), then holds `to`.
//! - A flap alternates `up` (the target's conditions) and `down` (no traffic) from its step on,
//!   for `for` if given, else until the next step on the target or the end of the run.
//! - One run lasts `period` if given, else until the last step (and its ramp or flap) is over.
//!   `repeat: N` runs it N times, `loop: true` for ever; every run starts from the static
//!   conditions. After the last run, `end: hold` (default) keeps what the last run left in
//!   force; `end: restore` returns every target to its static conditions; `end: stop` stops
//!   every task of the lab (replicated services scaled to 0, global ones placed nowhere) and
//!   keeps its services and networks, so logs and `docker service ps` stay. Not a teardown: a
//!   lab disappears only when its file does (the deletion rule).

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::Conditions;
use super::resolve::EffectiveConditions;
use super::units::{Duration, Percent, Rate};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schedule {
    /// Time 0 as an RFC 3339 timestamp (`2026-11-25T10:00:00Z`); default: when the lab is
    /// first Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// `manual`: time 0 is the last `labctl start LAB` (each one starts the schedule again);
    /// default `ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<ScheduleStart>,
    /// Changes of conditions, in order of `at`.
    pub steps: Vec<Step>,
    /// Length of one run; default: until the last step (with its ramp or flap) is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Duration>,
    /// Runs of the steps (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub repeat: Option<u32>,
    /// Run the steps again and again.
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub looped: Option<bool>,
    /// After the last run: keep what is in force (`hold`, default), go back to the static
    /// conditions (`restore`), or stop every task of the lab (`stop`: services and networks
    /// stay; an edited schedule, or `labctl start` for `start: manual`, runs it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<ScheduleEnd>,
    /// Seed of `pick`'s draws (default 0): another seed, another draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleStart {
    #[default]
    Ready,
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleEnd {
    #[default]
    Hold,
    Restore,
    Stop,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// When, from the start of the run.
    pub at: Duration,
    /// Target network (alone: every attachment to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Target service (alone: every attachment of it; with `network`: that attachment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// With `service`: the link from it toward this service or range (one of `spec.links`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Conditions in force from `at`, over the target's static ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Conditions>,
    /// Back to the target's static conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<Ramp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flap: Option<Flap>,
    /// Groups of services that cannot reach each other (no traffic between groups, both ways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Vec<Vec<String>>>,
    /// Ends the partition in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal: Option<bool>,
    /// Kills the tasks of `service` (those in `slots`, or all) running at the step's time, as
    /// `docker kill` does (SIGKILL): a crash. Swarm starts each again after the service's
    /// restart delay, on its volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<bool>,
    /// Stops the tasks of `service` (those in `slots`, or all) running at the step's time, as
    /// `docker stop` does: SIGTERM, then SIGKILL once the service's `stopGracePeriod` (10 s by
    /// default) has passed: a graceful shutdown. Swarm starts each again, as after a kill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<bool>,
    /// `true` freezes the tasks of `service` (those in `slots`, or all) as `docker pause` does;
    /// `false` thaws them. Frozen until then, `restore: true` on the service, or the end of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<bool>,
    /// Caps the tasks of `service` (those in `slots`, or all) at this many CPUs (`0.2`: a fifth
    /// of one core), as `docker update --cpus` does, without restarting them: a slow node. Until
    /// a later `cpus` step on them, `restore: true` on the service, or the end of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 1024.0))]
    pub cpus: Option<f64>,
    /// With `kill`, `stop`, `pause` or `cpus`: the task slots (1, 2, … of a replicated service) it acts on;
    /// default every task of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(range(min = 1)))]
    pub slots: Option<Vec<u64>>,
    /// With `kill`, `stop`, `pause: true` or `cpus`: act on this many tasks (`3`) or this share
    /// of them (`20%`, at least one) of `slots` (default every slot), drawn at random, again at
    /// each run. The same schedule and `seed` draw the same slots in the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pick: Option<Pick>,
}

/// How many tasks a step picks: a number, or a share of the slots it draws from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Pick {
    Count(#[schemars(range(min = 1, max = 10000))] u64),
    Share(Percent),
}

impl Pick {
    /// How many of `pool` slots: a share rounds to the nearest, and is at least one.
    pub fn of(self, pool: usize) -> usize {
        let n = match self {
            Pick::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Pick::Share(p) => ((p.0 / 100.0 * pool as f64).round() as usize).max(usize::from(p.0 > 0.0)),
        };
        n.min(pool)
    }
}

/// `n` slots of `pool`, drawn from `key` (a partial Fisher-Yates shuffle driven by SplitMix64).
/// Written here rather than taken from `rand`: a draw must stay the same across versions of
/// labd (a restarted labd that drew other slots would kill tasks a run has already spared),
/// and `rand` does not promise that of its sampling across releases.
fn draw(pool: &BTreeSet<u64>, n: usize, key: [u64; 3]) -> BTreeSet<u64> {
    let mut state = key.iter().fold(0x9E37_79B9_7F4A_7C15_u64, |h, k| splitmix(h ^ k));
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(state)
    };
    let mut slots: Vec<u64> = pool.iter().copied().collect();
    let n = n.min(slots.len());
    for i in 0..n {
        // Unbiased enough for slot counts: the modulo bias of a 64-bit draw over ≤ 10,000 is < 1e-15.
        let j = i + (next() % (slots.len() - i) as u64) as usize;
        slots.swap(i, j);
    }
    slots.truncate(n);
    slots.into_iter().collect()
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fields changed step by step: `from` → `to` in `steps` steps over `over`, or from `from` by
/// `by` every `every` until `until`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ramp {
    pub from: Conditions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Conditions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Conditions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Conditions>,
}

/// Link flapping: `up` with the target's conditions, then `down` with no traffic, and again.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Flap {
    pub up: Duration,
    pub down: Duration,
    /// How long it flaps; default: until the next step on the target or the end of the run.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

/// What a step changes: a network, a service, one service's attachment to a network, or one
/// link (a service's traffic toward `to`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub network: Option<String>,
    pub service: Option<String>,
    /// With `service`: the link from it toward this destination (as `spec.links` names it).
    pub to: Option<String>,
}

impl Target {
    /// Whether the target covers `service`'s attachment to `network` (a link covers none: it
    /// applies toward its destination only).
    pub fn covers(&self, service: &str, network: &str) -> bool {
        self.to.is_none() && self.network.as_deref().is_none_or(|n| n == network) && self.service.as_deref().is_none_or(|s| s == service)
    }

    /// Higher wins where several targets cover one attachment.
    fn precedence(&self) -> u8 {
        u8::from(self.service.is_some()) * 2 + u8::from(self.network.is_some())
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let (Some(s), Some(to)) = (&self.service, &self.to) {
            return write!(f, "{s} toward {to}");
        }
        match (&self.service, &self.network) {
            (Some(s), Some(n)) => write!(f, "{s} on {n}"),
            (Some(s), None) => write!(f, "service {s}"),
            (None, Some(n)) => write!(f, "network {n}"),
            (None, None) => f.write_str("the lab"),
        }
    }
}

/// A ramp in one form: `levels` values from `from` to `to`, each held for `hold`.
#[derive(Debug, Clone, PartialEq)]
struct Levels {
    from: EffectiveConditions,
    to: EffectiveConditions,
    /// Changes after the start (the last one reaches `to`).
    steps: u32,
    hold: std::time::Duration,
}

impl Ramp {
    fn levels(&self) -> Option<Levels> {
        let from = self.from.fields();
        if let (Some(to), Some(over), Some(steps)) = (&self.to, self.over, self.steps) {
            let steps = steps.max(1);
            return Some(Levels { from, to: to.fields(), steps, hold: over.as_std() / steps });
        }
        let (by, every, until) = (self.by.as_ref()?.fields(), self.every?, self.until.as_ref()?.fields());
        // As many increments of `by` as reach `until` on the field that needs the most.
        let needed = |f: Option<f64>, b: Option<f64>, u: Option<f64>| match (f, b, u) {
            (Some(f), Some(b), Some(u)) if b > 0.0 => ((u - f) / b).ceil().max(0.0) as u32,
            _ => 0,
        };
        let steps = numeric(&from)
            .into_iter()
            .zip(numeric(&by))
            .zip(numeric(&until))
            .map(|((f, b), u)| needed(f, b, u))
            .max()
            .unwrap_or(0)
            .clamp(1, 10_000);
        Some(Levels { from, to: until, steps, hold: every.as_std() })
    }

    /// How long the ramp takes to reach its end.
    pub fn length(&self) -> std::time::Duration {
        self.levels().map(|l| l.hold * l.steps).unwrap_or_default()
    }
}

/// The numeric fields of conditions, in a fixed order, for interpolation.
fn numeric(c: &EffectiveConditions) -> [Option<f64>; 6] {
    let EffectiveConditions { delay, jitter, loss, rate, corrupt, duplicate, .. } = c;
    let us = |d: &Option<Duration>| d.map(|d| d.micros as f64);
    let pc = |p: &Option<Percent>| p.map(|p| p.0);
    [us(delay), us(jitter), pc(loss), rate.map(|r| r.bits_per_sec as f64), pc(corrupt), pc(duplicate)]
}

/// `from` moved `k/n` of the way to `to`, field by field (fields only in `from` stay).
fn interpolate(from: &EffectiveConditions, to: &EffectiveConditions, k: u32, n: u32) -> EffectiveConditions {
    let t = f64::from(k) / f64::from(n.max(1));
    let mix = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a + (b - a) * t),
        (a, _) => a,
    };
    let [d, j, l, r, c, u] = numeric(from);
    let [d2, j2, l2, r2, c2, u2] = numeric(to);
    let dur = |v: Option<f64>| v.map(|v| Duration { micros: v.round() as u64 });
    let pct = |v: Option<f64>| v.map(|v| Percent((v * 1e4).round() / 1e4));
    EffectiveConditions {
        delay: dur(mix(d, d2)),
        jitter: dur(mix(j, j2)),
        loss: pct(mix(l, l2)),
        rate: mix(r, r2).map(|v| Rate { bits_per_sec: v.round() as u64 }),
        corrupt: pct(mix(c, c2)),
        duplicate: pct(mix(u, u2)),
        blocked: vec![],
        // The rest (reorder, the models) holds as `from` has it.
        ..from.clone()
    }
}

impl Step {
    pub fn target(&self) -> Target {
        Target { network: self.network.clone(), service: self.service.clone(), to: self.to.clone() }
    }

    /// A step that kills, stops, freezes or slows tasks: it acts on processes, not on the
    /// target's traffic.
    pub fn acts_on_tasks(&self) -> bool {
        self.kill.is_some() || self.stop.is_some() || self.pause.is_some() || self.cpus.is_some()
    }

    /// How long the step's own change lasts (a ramp's climb, a flap's `for`).
    fn length(&self) -> std::time::Duration {
        let ramp = self.ramp.as_ref().map(Ramp::length).unwrap_or_default();
        let flap = self.flap.and_then(|f| f.duration).map(Duration::as_std).unwrap_or_default();
        ramp.max(flap)
    }
}

/// Some tasks of a service: every one, or those in some slots.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSet {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub slots: BTreeSet<u64>,
}

impl TaskSet {
    fn of(slots: Option<&Vec<u64>>) -> TaskSet {
        match slots {
            Some(s) => TaskSet { all: false, slots: s.iter().copied().collect() },
            None => TaskSet { all: true, slots: BTreeSet::new() },
        }
    }

    /// Whether the task in `slot` is in the set (a global service's tasks have no slot).
    pub fn contains(&self, slot: Option<u64>) -> bool {
        self.all || slot.is_some_and(|s| self.slots.contains(&s))
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.slots.is_empty()
    }

    fn add(&mut self, other: &TaskSet) {
        self.all |= other.all;
        self.slots.extend(other.slots.iter().copied());
    }

    /// Thawing every task ends every pause; thawing slots ends theirs (a pause of every task
    /// stays: the slots it holds are not known here).
    fn remove(&mut self, other: &TaskSet) {
        if other.all {
            *self = TaskSet::default();
        } else {
            self.slots.retain(|s| !other.slots.contains(s));
        }
    }
}

impl std::fmt::Display for TaskSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots: Vec<String> = self.slots.iter().map(u64::to_string).collect();
        match (self.all, slots.is_empty()) {
            (true, _) => f.write_str("every task"),
            (false, true) => f.write_str("no task"),
            (false, false) => write!(f, "slot{} {}", if slots.len() > 1 { "s" } else { "" }, slots.join(", ")),
        }
    }
}

/// A kill reached: the tasks of `service` in `tasks` that were running before `at` are killed
/// (or stopped, when `graceful`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub service: String,
    pub tasks: TaskSet,
    /// From time 0 (runs before this one included).
    pub at: std::time::Duration,
    /// `stop: true`: SIGTERM first, SIGKILL after the service's grace period.
    pub graceful: bool,
}

/// A CPU cap in force: the tasks of a service in `tasks` may use `cpus` CPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuCap {
    pub tasks: TaskSet,
    pub cpus: f64,
}

/// What is in force at one moment, and when that changes next.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InForce {
    /// Overrides per target (a target back to its static conditions is absent).
    pub overrides: BTreeMap<Target, EffectiveConditions>,
    /// The groups of the partition in force (empty: none).
    pub partition: Vec<Vec<String>>,
    /// Frozen tasks, per service.
    pub paused: BTreeMap<String, TaskSet>,
    /// CPU caps per service, in the order of their steps: a task's cap is the last one that
    /// covers it.
    pub cpus: BTreeMap<String, Vec<CpuCap>>,
    /// The kills of this run reached so far, in order.
    pub kills: Vec<Kill>,
    /// 1-based index of the last step reached in the current run (0: none yet).
    pub step: usize,
    /// 1-based run number.
    pub run: u64,
    /// The schedule has run to its end.
    pub finished: bool,
    /// It ended with `end: stop`: no task of the lab should run.
    pub stopped: bool,
    /// Elapsed time at which the next change comes (`None`: nothing more changes).
    pub next_change: Option<std::time::Duration>,
}

impl InForce {
    /// Whether the partition in force puts `a` and `b` in different groups.
    pub fn separates(&self, a: &str, b: &str) -> bool {
        let group = |s: &str| self.partition.iter().position(|g| g.iter().any(|m| m == s));
        matches!((group(a), group(b)), (Some(x), Some(y)) if x != y)
    }

    /// The overrides for `service`'s attachment to `network`, the most specific target first.
    /// What a step puts in force on the link from `service` toward `to`.
    pub fn for_link(&self, service: &str, to: &str) -> Option<EffectiveConditions> {
        self.overrides.get(&Target { network: None, service: Some(service.into()), to: Some(to.into()) }).cloned()
    }

    pub fn for_attachment(&self, service: &str, network: &str) -> Option<EffectiveConditions> {
        let mut covering: Vec<(&Target, &EffectiveConditions)> = self.overrides.iter().filter(|(t, _)| t.covers(service, network)).collect();
        covering.sort_by_key(|(t, _)| std::cmp::Reverse(t.precedence()));
        covering.into_iter().map(|(_, c)| c.clone()).reduce(EffectiveConditions::or)
    }
}

impl InForce {
    /// This state with its kills' times counted from time 0 instead of the run's start.
    fn after(mut self, run_start: std::time::Duration) -> InForce {
        for kill in &mut self.kills {
            kill.at += run_start;
        }
        self
    }
}

/// What a run's `pick` steps draw from.
#[derive(Clone, Copy)]
struct Draws<'a> {
    replicas: &'a BTreeMap<String, u64>,
    /// 0-based: each run draws again.
    run: u64,
    seed: u64,
}

impl Draws<'_> {
    /// The tasks step `index` picks of `service`: of `slots`, or of every slot it has.
    fn pick(&self, pick: Pick, service: &str, slots: Option<&Vec<u64>>, index: usize) -> TaskSet {
        let pool: BTreeSet<u64> = match slots {
            Some(slots) => slots.iter().copied().collect(),
            None => (1..=self.replicas.get(service).copied().unwrap_or(0)).collect(),
        };
        TaskSet { all: false, slots: draw(&pool, pick.of(pool.len()), [self.seed, index as u64, self.run]) }
    }
}

impl Schedule {
    /// The replicas of each service a `pick` without `slots` draws from: what else, besides the
    /// schedule, decides its draws.
    pub fn drawn_from(&self, replicas: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        let services = self.steps.iter().filter(|s| s.pick.is_some() && s.slots.is_none()).filter_map(|s| s.service.as_ref());
        services.map(|name| (name.clone(), replicas.get(name).copied().unwrap_or(0))).collect()
    }

    /// The length of one run.
    pub fn period(&self) -> std::time::Duration {
        self.period.map(Duration::as_std).unwrap_or_else(|| {
            self.steps.iter().map(|s| s.at.as_std() + s.length()).max().unwrap_or_default()
        })
    }

    fn runs(&self) -> Option<u64> {
        if self.looped == Some(true) {
            None
        } else {
            Some(u64::from(self.repeat.unwrap_or(1).max(1)))
        }
    }

    /// What is in force `elapsed` after the start, for a lab with no `pick` step.
    #[cfg(test)]
    pub fn at(&self, elapsed: std::time::Duration) -> InForce {
        self.at_with(elapsed, &BTreeMap::new())
    }

    /// What is in force `elapsed` after the start; `replicas`: each service's, the slots a
    /// `pick` without `slots` draws from.
    pub fn at_with(&self, elapsed: std::time::Duration, replicas: &BTreeMap<String, u64>) -> InForce {
        let period = self.period();
        let runs = self.runs();
        let within_run = |t, period, run| self.within_run(t, period, Draws { replicas, run, seed: self.seed.unwrap_or(0) });
        if period.is_zero() {
            // Every step at 0: they all apply at once and stay.
            let mut state = within_run(std::time::Duration::ZERO, std::time::Duration::MAX, 0);
            state.run = 1;
            state.finished = true;
            state.next_change = None;
            return state;
        }
        let run = (elapsed.as_nanos() / period.as_nanos()) as u64;
        if runs.is_some_and(|n| run >= n) {
            let last = runs.unwrap_or(1);
            let mut state = match self.end.unwrap_or_default() {
                ScheduleEnd::Hold => within_run(period, period, last - 1).after(period * (last - 1) as u32),
                // Stopped tasks have nothing to shape; a run after a stop starts from the static
                // conditions like every run.
                ScheduleEnd::Restore | ScheduleEnd::Stop => InForce { step: self.steps.len(), ..Default::default() },
            };
            state.run = last;
            state.finished = true;
            state.stopped = self.end == Some(ScheduleEnd::Stop);
            state.next_change = None;
            return state;
        }
        let run_start = period * run as u32;
        let mut state = within_run(elapsed - run_start, period, run).after(run_start);
        state.run = run + 1;
        // The end of a run is a change too (the next run starts from the static conditions).
        let change_in_run = state.next_change.filter(|t| *t < period).unwrap_or(period);
        state.next_change = Some(run_start + change_in_run);
        state
    }

    /// The state `t` into a run that lasts `period`; `next_change` relative to the run.
    fn within_run(&self, t: std::time::Duration, period: std::time::Duration, draws: Draws) -> InForce {
        let mut state = InForce::default();
        let mut next: Option<std::time::Duration> = None;
        let mut soonest = |at: std::time::Duration| {
            if at > t && at <= period {
                next = Some(next.map_or(at, |n: std::time::Duration| n.min(at)));
            }
        };
        for (i, step) in self.steps.iter().enumerate() {
            let at = step.at.as_std();
            if at > t {
                soonest(at);
                continue;
            }
            state.step = i + 1;
            if let Some(groups) = &step.partition {
                state.partition = groups.clone();
                continue;
            }
            if step.heal == Some(true) {
                state.partition.clear();
                continue;
            }
            if let (Some(service), true) = (&step.service, step.acts_on_tasks()) {
                let tasks = match step.pick {
                    Some(pick) => draws.pick(pick, service, step.slots.as_ref(), i),
                    None => TaskSet::of(step.slots.as_ref()),
                };
                if step.kill == Some(true) || step.stop == Some(true) {
                    state.kills.push(Kill { service: service.clone(), tasks: tasks.clone(), at, graceful: step.stop == Some(true) });
                }
                match step.pause {
                    Some(true) => state.paused.entry(service.clone()).or_default().add(&tasks),
                    Some(false) => {
                        if let Some(paused) = state.paused.get_mut(service) {
                            paused.remove(&tasks);
                        }
                        state.paused.retain(|_, p| !p.is_empty());
                    }
                    None => {}
                }
                if let Some(cpus) = step.cpus {
                    let caps = state.cpus.entry(service.clone()).or_default();
                    // A cap of every task replaces the ones before it.
                    if tasks.all {
                        caps.clear();
                    }
                    caps.push(CpuCap { tasks, cpus });
                }
                continue;
            }
            let target = step.target();
            if step.restore == Some(true) && target.network.is_none() && target.to.is_none() {
                if let Some(service) = &target.service {
                    state.paused.remove(service);
                    state.cpus.remove(service);
                }
            }
            // The step lasts until the next step on the same target (its tasks' steps aside).
            let until = self.steps[i + 1..].iter().find(|s| s.target() == target && !s.acts_on_tasks()).map(|s| s.at.as_std()).unwrap_or(period);
            let since = t - at;
            let mut value: Option<EffectiveConditions> = step.conditions.as_ref().map(Conditions::fields);
            if step.restore == Some(true) {
                value = None;
            }
            if let Some(levels) = step.ramp.as_ref().and_then(Ramp::levels) {
                let k = if levels.hold.is_zero() { levels.steps } else { ((since.as_nanos() / levels.hold.as_nanos()) as u32).min(levels.steps) };
                if k < levels.steps {
                    soonest(at + levels.hold * (k + 1));
                }
                let ramped = interpolate(&levels.from, &levels.to, k, levels.steps);
                value = Some(value.map_or(ramped.clone(), |v| ramped.or(v)));
            }
            if let Some(flap) = step.flap {
                let cycle = flap.up.as_std() + flap.down.as_std();
                let stop = flap.duration.map(|d| at + d.as_std()).unwrap_or(until).min(until);
                if t < stop && !cycle.is_zero() {
                    let phase = std::time::Duration::from_nanos((since.as_nanos() % cycle.as_nanos()) as u64);
                    let cycle_start = t - phase;
                    if phase >= flap.up.as_std() {
                        value = Some(EffectiveConditions { down: Some(true), ..value.unwrap_or_default() });
                        soonest((cycle_start + cycle).min(stop));
                    } else {
                        soonest((cycle_start + flap.up.as_std()).min(stop));
                    }
                }
            }
            match value {
                Some(v) => {
                    state.overrides.insert(target, v);
                }
                None => {
                    state.overrides.remove(&target);
                }
            }
        }
        state.next_change = next;
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    fn schedule(yaml: &str) -> Schedule {
        let value: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("yaml");
        serde_json::from_value(value).expect("a schedule")
    }

    fn delay_ms(s: &InForce, t: &Target) -> Option<u64> {
        s.overrides.get(t).and_then(|c| c.delay).map(|d| d.micros / 1000)
    }

    fn net(n: &str) -> Target {
        Target { network: Some(n.into()), service: None, to: None }
    }

    #[test]
    fn a_ramp_raises_delay_step_by_step_then_holds() {
        let s = schedule("steps:\n- at: 10s\n  network: dht\n  ramp: {from: {delay: 50ms}, to: {delay: 500ms}, over: 50s, steps: 5}\n");
        let at = |secs: u64| s.at(Std::from_secs(secs));
        assert_eq!(delay_ms(&at(5), &net("dht")), None, "before the step: static");
        assert_eq!(at(5).next_change, Some(Std::from_secs(10)));
        assert_eq!(delay_ms(&at(10), &net("dht")), Some(50));
        assert_eq!(delay_ms(&at(19), &net("dht")), Some(50));
        assert_eq!(at(19).next_change, Some(Std::from_secs(20)));
        assert_eq!(delay_ms(&at(20), &net("dht")), Some(140));
        assert_eq!(delay_ms(&at(59), &net("dht")), Some(410));
        let end = at(60);
        assert_eq!(delay_ms(&end, &net("dht")), Some(500));
        assert!(end.finished && end.next_change.is_none(), "{end:?}");
        assert_eq!(delay_ms(&at(10_000), &net("dht")), Some(500), "end: hold");
    }

    #[test]
    fn a_partition_holds_until_healed_or_replaced_and_leaves_other_targets_alone() {
        let s = schedule(
            "steps:\n- at: 5s\n  partition: [[a, b], [c]]\n- at: 8s\n  network: n\n  conditions: {delay: 5ms}\n- at: 10s\n  partition: [[a], [b, c]]\n- at: 20s\n  heal: true\n",
        );
        let at = |secs: u64| s.at(Std::from_secs(secs));
        assert!(at(4).partition.is_empty());
        assert_eq!(at(4).next_change, Some(Std::from_secs(5)));
        let first = at(9);
        assert!(first.separates("a", "c") && first.separates("c", "b") && !first.separates("a", "b"));
        assert!(!first.separates("a", "d"), "a service in no group reaches everyone");
        assert_eq!(delay_ms(&first, &net("n")), Some(5), "the network step is its own target");
        let second = at(15);
        assert!(second.separates("a", "b") && !second.separates("b", "c"), "a later partition replaces the first");
        let healed = at(20);
        assert!(healed.partition.is_empty() && healed.step == 4);
        assert_eq!(delay_ms(&healed, &net("n")), Some(5), "healing touches nothing else");
    }

    #[test]
    fn an_open_ended_increment_stops_at_its_limit() {
        let s = schedule("steps:\n- at: 0s\n  network: n\n  ramp: {from: {loss: 0%}, by: {loss: 5%}, every: 10s, until: {loss: 20%}}\n");
        let loss = |secs: u64| s.at(Std::from_secs(secs)).overrides[&net("n")].loss.map(|p| p.0);
        assert_eq!([loss(0), loss(10), loss(25), loss(40), loss(99)], [Some(0.0), Some(5.0), Some(10.0), Some(20.0), Some(20.0)]);
    }

    #[test]
    fn a_flap_alternates_and_ends_with_the_next_step_on_the_target() {
        let s = schedule(
            "steps:\n- at: 0s\n  service: b\n  flap: {up: 20s, down: 3s}\n- at: 60s\n  service: b\n  restore: true\n- at: 70s\n  network: x\n  conditions: {delay: 1ms}\n",
        );
        let b = Target { network: None, service: Some("b".into()), to: None };
        let down = |secs: u64| s.at(Std::from_secs(secs)).overrides.get(&b).and_then(|c| c.down) == Some(true);
        assert!(!down(0) && !down(19) && down(20) && down(22) && !down(23) && down(43) && !down(46));
        assert!(!down(61), "restored");
        assert_eq!(s.at(Std::from_secs(1)).next_change, Some(Std::from_secs(20)));
        assert_eq!(s.at(Std::from_secs(21)).next_change, Some(Std::from_secs(23)));
        assert_eq!(s.at(Std::from_secs(47)).next_change, Some(Std::from_secs(60)), "the flap's next down is cut by the restore");
    }

    #[test]
    fn repeats_start_each_run_from_the_static_conditions_and_restore_at_the_end() {
        let s = schedule("repeat: 2\nperiod: 15s\nend: restore\nsteps:\n- at: 5s\n  network: n\n  conditions: {delay: 10ms}\n- at: 10s\n  network: n\n  conditions: {delay: 20ms}\n");
        let d = |secs: u64| delay_ms(&s.at(Std::from_secs(secs)), &net("n"));
        assert_eq!([d(0), d(5), d(10), d(14), d(15), d(20), d(25), d(30)], [None, Some(10), Some(20), Some(20), None, Some(10), Some(20), None]);
        let st = s.at(Std::from_secs(21));
        assert_eq!((st.run, st.step, st.next_change), (2, 1, Some(Std::from_secs(25))));
        assert_eq!(s.at(Std::from_secs(26)).next_change, Some(Std::from_secs(30)), "the end of the last run");
        assert!(s.at(Std::from_secs(30)).finished);
        assert!(!s.at(Std::from_secs(30)).stopped, "restore stops nothing");
    }

    #[test]
    fn a_looped_schedule_never_finishes() {
        let s = schedule("loop: true\nperiod: 10s\nsteps:\n- at: 0s\n  network: n\n  conditions: {down: true}\n- at: 5s\n  network: n\n  restore: true\n");
        let st = s.at(Std::from_secs(3603));
        assert_eq!((st.run, st.finished), (361, false));
        assert_eq!(st.overrides.get(&net("n")).and_then(|c| c.down), Some(true));
        assert_eq!(st.next_change, Some(Std::from_secs(3605)));
    }

    #[test]
    fn a_stop_is_a_kill_that_is_graceful() {
        let s = schedule("steps:\n- at: 3s\n  service: a\n  slots: [2]\n  stop: true\n- at: 4s\n  service: a\n  kill: true\n");
        let kills = s.at(Std::from_secs(5)).kills;
        assert_eq!(kills[0], Kill { service: "a".into(), tasks: TaskSet { all: false, slots: BTreeSet::from([2]) }, at: Std::from_secs(3), graceful: true });
        assert!(!kills[1].graceful);
        assert_eq!(s.at(Std::from_secs(2)).next_change, Some(Std::from_secs(3)), "a stop is a change");
    }

    #[test]
    fn pauses_hold_until_thawed_or_restored_and_kills_keep_their_time_across_runs() {
        let s = schedule(
            "repeat: 2\nperiod: 20s\nsteps:\n- at: 2s\n  service: a\n  slots: [1, 2]\n  pause: true\n- at: 4s\n  service: a\n  network: n\n  conditions: {delay: 5ms}\n- at: 5s\n  service: a\n  slots: [1]\n  pause: false\n- at: 8s\n  service: b\n  kill: true\n- at: 9s\n  service: a\n  pause: true\n- at: 12s\n  service: a\n  restore: true\n",
        );
        let at = |secs: u64| s.at(Std::from_secs(secs));
        let paused = |st: &InForce, slot: u64| st.paused.get("a").is_some_and(|p| p.contains(Some(slot)));
        assert!(at(1).paused.is_empty());
        assert!(paused(&at(2), 1) && paused(&at(2), 2) && !paused(&at(2), 3));
        assert!(paused(&at(4), 1), "a step on one attachment of the service leaves its pause alone");
        assert!(!paused(&at(5), 1) && paused(&at(5), 2), "thawing slot 1 leaves slot 2 frozen");
        assert_eq!(at(7).next_change, Some(Std::from_secs(8)), "a kill is a change");
        assert_eq!(at(8).kills, vec![Kill { service: "b".into(), tasks: TaskSet { all: true, slots: BTreeSet::new() }, at: Std::from_secs(8), graceful: false }]);
        assert!(paused(&at(9), 7) && at(9).paused["a"].all);
        assert!(at(12).paused.is_empty(), "restore on the service thaws it");
        assert_eq!(at(12).overrides.len(), 1, "the attachment's own step stays in force");
        let second = at(29);
        assert_eq!((second.run, second.kills.len()), (2, 1));
        assert_eq!(second.kills[0].at, Std::from_secs(28), "the kill of run 2, counted from time 0");
        assert!(at(21).kills.is_empty() && at(22).paused.contains_key("a"), "each run starts over");
        assert_eq!(at(45).kills[0].at, Std::from_secs(28), "end: hold keeps the last run's kill");
    }

    #[test]
    fn cpu_caps_hold_until_a_later_cap_restore_or_the_next_run() {
        let s = schedule(
            "repeat: 2\nperiod: 20s\nsteps:\n- at: 2s\n  service: a\n  slots: [1]\n  cpus: 0.2\n- at: 4s\n  service: a\n  conditions: {delay: 5ms}\n- at: 5s\n  service: a\n  cpus: 0.5\n- at: 6s\n  service: a\n  slots: [2]\n  cpus: 0.1\n- at: 9s\n  service: a\n  restore: true\n",
        );
        let at = |secs: u64| s.at(Std::from_secs(secs));
        let cap = |st: &InForce, slot: u64| st.cpus.get("a").and_then(|caps| caps.iter().rev().find(|c| c.tasks.contains(Some(slot))).map(|c| c.cpus));
        assert_eq!((cap(&at(1), 1), cap(&at(2), 1), cap(&at(2), 2)), (None, Some(0.2), None));
        assert_eq!(cap(&at(4), 1), Some(0.2), "a step on the service's traffic leaves its cap alone");
        assert_eq!((cap(&at(5), 1), cap(&at(5), 2)), (Some(0.5), Some(0.5)), "a cap of every task replaces the slot's");
        assert_eq!(at(5).cpus["a"].len(), 1);
        assert_eq!((cap(&at(6), 1), cap(&at(6), 2)), (Some(0.5), Some(0.1)), "the later cap of a slot wins");
        assert!(at(9).cpus.is_empty(), "restore on the service lifts its caps");
        assert!(at(21).cpus.is_empty() && cap(&at(22), 1) == Some(0.2), "each run starts over");
        assert_eq!(at(5).next_change, Some(Std::from_secs(6)));
    }

    #[test]
    fn the_most_specific_target_wins_field_by_field() {
        let s = schedule(
            "steps:\n- at: 0s\n  network: n\n  conditions: {delay: 10ms, loss: 1%}\n- at: 0s\n  service: a\n  conditions: {delay: 20ms}\n- at: 0s\n  service: a\n  network: n\n  conditions: {delay: 30ms}\n",
        );
        let st = s.at(Std::ZERO);
        let a = st.for_attachment("a", "n").unwrap();
        assert_eq!((a.delay.map(|d| d.micros / 1000), a.loss.map(|p| p.0)), (Some(30), Some(1.0)));
        assert_eq!(st.for_attachment("b", "n").unwrap().delay.map(|d| d.micros / 1000), Some(10));
        assert_eq!(st.for_attachment("a", "other").unwrap().delay.map(|d| d.micros / 1000), Some(20));
        assert!(st.for_attachment("b", "other").is_none());
    }

    #[test]
    fn a_pick_draws_that_many_slots_the_same_in_a_run_and_anew_at_each_run() {
        let s = schedule("repeat: 20\nperiod: 10s\nsteps:\n- at: 2s\n  service: sensor\n  pick: 5\n  kill: true\n- at: 3s\n  service: sensor\n  slots: [1, 2, 3, 4]\n  pick: 50%\n  pause: true\n");
        let replicas = BTreeMap::from([("sensor".to_string(), 150)]);
        let at = |secs: u64| s.at_with(Std::from_secs(secs), &replicas);
        let killed = |st: &InForce| st.kills.last().map(|k| k.tasks.clone()).unwrap_or_default();
        let first = killed(&at(2));
        assert_eq!(first.slots.len(), 5);
        assert!(!first.all && first.slots.iter().all(|s| (1..=150).contains(s)), "{first}");
        assert_eq!(killed(&at(9)), first, "the same draw while the run lasts");
        assert_eq!(killed(&s.at_with(Std::from_secs(2), &replicas)), first, "every reader of the clock draws alike");
        let runs: BTreeSet<BTreeSet<u64>> = (0..20).map(|run| killed(&at(run * 10 + 2)).slots).collect();
        assert!(runs.len() >= 19, "each run draws again: {} distinct draws of 20", runs.len());
        let paused = &at(3).paused["sensor"];
        assert_eq!(paused.slots.len(), 2, "half of the four slots listed");
        assert!(paused.slots.iter().all(|s| (1..=4).contains(s)), "{paused}");
        let mut other = s.clone();
        other.seed = Some(1);
        assert_ne!(killed(&other.at_with(Std::from_secs(2), &replicas)), first, "another seed, another draw");
    }

    #[test]
    fn a_share_rounds_to_the_nearest_task_and_picks_one_at_least() {
        let share = |p: f64| Pick::Share(Percent(p));
        assert_eq!((share(20.0).of(150), share(20.0).of(7), share(1.0).of(10), share(0.0).of(10)), (30, 1, 1, 0));
        assert_eq!((Pick::Count(3).of(150), Pick::Count(3).of(2), share(100.0).of(4)), (3, 2, 4));
    }

    /// The draw is part of what a lab means: a labd of another version must draw the same
    /// slots for the same schedule (a restarted labd drawing others would kill spared tasks).
    #[test]
    fn a_draw_stays_what_it_was() {
        let pool: BTreeSet<u64> = (1..=10).collect();
        assert_eq!(draw(&pool, 3, [0, 0, 0]), BTreeSet::from([3, 6, 9]));
        assert_eq!(draw(&pool, 10, [5, 1, 2]), pool, "all of them");
        // And fair: one of ten drawn over 10,000 runs lands on each about as often.
        let mut counts = [0u32; 10];
        for run in 0..10_000 {
            for slot in draw(&pool, 1, [0, 0, run]) {
                counts[(slot - 1) as usize] += 1;
            }
        }
        assert!(counts.iter().all(|c| (900..1100).contains(c)), "{counts:?}");
        assert!(draw(&BTreeSet::new(), 3, [0, 0, 0]).is_empty());
    }
}
