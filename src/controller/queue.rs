//! A work queue keyed by lab: a lab queued twice runs once, a lab queued while it runs runs
//! again right after, and failures wait out an exponential backoff.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct WorkQueue {
    pending: BTreeSet<String>,
    running: BTreeSet<String>,
    /// Queued while running: run again when done.
    dirty: BTreeSet<String>,
}

impl WorkQueue {
    pub fn add(&mut self, lab: &str) {
        if self.running.contains(lab) {
            self.dirty.insert(lab.to_string());
        } else {
            self.pending.insert(lab.to_string());
        }
    }

    /// Labs ready to start now (each moves to running).
    pub fn take_ready(&mut self) -> Vec<String> {
        let ready: Vec<String> = std::mem::take(&mut self.pending).into_iter().collect();
        self.running.extend(ready.iter().cloned());
        ready
    }

    /// The lab's run ended. A lab queued meanwhile runs again, unless `failed`: then its
    /// backoff timer brings it back, so a burst of events cannot turn into a retry storm.
    pub fn done(&mut self, lab: &str, failed: bool) {
        self.running.remove(lab);
        if self.dirty.remove(lab) && !failed {
            self.pending.insert(lab.to_string());
        }
    }

    pub fn is_running(&self, lab: &str) -> bool {
        self.running.contains(lab)
    }

    pub fn idle(&self) -> bool {
        self.pending.is_empty() && self.running.is_empty()
    }
}

/// Exponential backoff per lab: 1 s, 2 s, 4 s … capped at 60 s, reset on success.
#[derive(Debug, Default)]
pub struct Backoff {
    attempts: HashMap<String, (u32, Instant)>,
}

impl Backoff {
    pub const BASE: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(60);

    /// Records a failure; returns the attempt number and how long to wait.
    pub fn failed(&mut self, lab: &str) -> (u32, Duration) {
        let entry = self.attempts.entry(lab.to_string()).or_insert((0, Instant::now()));
        entry.0 += 1;
        let wait = Self::BASE.saturating_mul(1u32 << (entry.0 - 1).min(10)).min(Self::MAX);
        entry.1 = Instant::now() + wait;
        (entry.0, wait)
    }

    /// Whether the lab is waiting out a backoff (events must not cut it short).
    pub fn waiting(&self, lab: &str) -> bool {
        self.attempts.get(lab).is_some_and(|(_, until)| Instant::now() < *until)
    }

    pub fn succeeded(&mut self, lab: &str) {
        self.attempts.remove(lab);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_queued_twice_runs_once_and_again_if_queued_while_running() {
        let mut q = WorkQueue::default();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.take_ready(), ["a", "b"]);
        q.add("a");
        assert!(q.take_ready().is_empty(), "a is running");
        q.done("a", false);
        assert_eq!(q.take_ready(), ["a"]);
        q.add("a");
        q.done("a", true);
        assert!(q.take_ready().is_empty(), "a failed: its backoff brings it back, not the queue");
        q.done("b", false);
        assert!(q.idle());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.failed("x").1.as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        b.succeeded("x");
        assert_eq!(b.failed("x"), (1, Duration::from_secs(1)));
    }
}
