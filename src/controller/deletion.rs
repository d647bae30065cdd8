//! The deletion rule: a lab disappears only because a person removed it. Absence is evidence
//! gathered over time, never one read: a lab is torn down only after at least two consecutive
//! complete reads of a readable directory, `grace` apart or more, found no file defining it.
//! Pure (the caller passes the time), so every rule is unit-tested without a clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Reads needed before absence counts: the one that first missed the lab and a later one.
const READS_NEEDED: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Absence {
    since: Instant,
    reads: u32,
}

/// What one complete read says about a lab that no file defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not yet: read again after `recheck_in`; the lab keeps running meanwhile.
    Pending { recheck_in: Duration, first: bool },
    /// Absent long enough, over enough reads: tear it down.
    Confirmed,
}

#[derive(Debug)]
pub struct AbsenceTracker {
    grace: Duration,
    absent: BTreeMap<String, Absence>,
}

impl AbsenceTracker {
    pub fn new(grace: Duration) -> Self {
        AbsenceTracker { grace, absent: BTreeMap::new() }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// A read found the lab defined (valid, invalid or kept by a file that failed to parse).
    pub fn present(&mut self, lab: &str) {
        self.absent.remove(lab);
    }

    /// A complete read of a readable directory found no file defining the lab.
    pub fn absent(&mut self, lab: &str, now: Instant) -> Verdict {
        let entry = self.absent.entry(lab.to_string()).or_insert(Absence { since: now, reads: 0 });
        entry.reads += 1;
        let waited = now.saturating_duration_since(entry.since);
        if entry.reads >= READS_NEEDED && waited >= self.grace {
            self.absent.remove(lab);
            return Verdict::Confirmed;
        }
        Verdict::Pending { recheck_in: self.grace.saturating_sub(waited), first: entry.reads == 1 }
    }

    /// A read that was not complete (a subdirectory or file could not be read): it proves
    /// nothing, and breaks the run of consecutive reads.
    pub fn incomplete(&mut self) {
        self.absent.clear();
    }

    pub fn is_pending(&self, lab: &str) -> bool {
        self.absent.contains_key(lab)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    #[test]
    fn one_read_is_never_enough_however_long_ago_it_was() {
        let mut t = AbsenceTracker::new(GRACE);
        let t0 = Instant::now();
        assert_eq!(t.absent("a", t0), Verdict::Pending { recheck_in: GRACE, first: true });
        // A second read before the grace is over: still pending, with the rest of the wait.
        assert_eq!(t.absent("a", t0 + Duration::from_secs(2)), Verdict::Pending { recheck_in: Duration::from_secs(3), first: false });
        assert_eq!(t.absent("a", t0 + GRACE), Verdict::Confirmed);
    }

    #[test]
    fn a_single_read_after_the_grace_is_not_enough() {
        let mut t = AbsenceTracker::new(Duration::ZERO);
        let t0 = Instant::now();
        assert!(matches!(t.absent("a", t0), Verdict::Pending { .. }), "grace zero still needs a second read");
        assert_eq!(t.absent("a", t0), Verdict::Confirmed);
    }

    #[test]
    fn reappearing_resets_the_evidence() {
        let mut t = AbsenceTracker::new(GRACE);
        let t0 = Instant::now();
        t.absent("a", t0);
        t.present("a");
        assert!(!t.is_pending("a"));
        assert!(matches!(t.absent("a", t0 + GRACE * 2), Verdict::Pending { first: true, .. }), "the clock starts again");
    }

    #[test]
    fn an_incomplete_read_breaks_the_run() {
        let mut t = AbsenceTracker::new(GRACE);
        let t0 = Instant::now();
        t.absent("a", t0);
        t.incomplete();
        assert!(matches!(t.absent("a", t0 + GRACE * 2), Verdict::Pending { first: true, .. }));
        assert_eq!(t.absent("a", t0 + GRACE * 3), Verdict::Confirmed);
    }
}
