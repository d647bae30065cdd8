//! Which task containers run on this node, kept from Docker's container start and die events.
//! Listing the node's containers costs dockerd ~9 ms of CPU with 50 containers (more with
//! more): done at every pass (twice a second, and at each container start), it cost more than
//! all of labd's looks at a starting lab. So the node is listed only when the event stream
//! (re)opens, since events may have been missed, and every [`RELIST_AFTER`] as a safety net.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::swarm::LocalTaskEvent;

/// The longest the agent goes without listing the node's containers.
pub const RELIST_AFTER: Duration = Duration::from_secs(10);

/// What the event stream told since the last pass, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Event(LocalTaskEvent),
    /// The stream (re)opened: events may have been missed meanwhile.
    Reopened,
}

/// Filled by the event watcher, drained by each pass.
#[derive(Debug, Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<Seen>>>);

impl Inbox {
    pub fn push(&self, seen: Seen) {
        if let Ok(mut v) = self.0.lock() {
            v.push(seen);
        }
    }

    fn drain(&self) -> Vec<Seen> {
        self.0.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }
}

/// The running task containers of the node, as far as the last listing and the events since
/// tell.
#[derive(Debug, Default)]
pub struct Running {
    ids: HashSet<String>,
    listed_at: Option<Instant>,
}

impl Running {
    /// Takes in what the events told. True when the node must be listed now (never listed,
    /// the stream reopened, or the last listing is older than [`RELIST_AFTER`]).
    pub fn take(&mut self, inbox: &Inbox, now: Instant) -> bool {
        let mut relist = self.listed_at.is_none_or(|at| now.duration_since(at) >= RELIST_AFTER);
        for seen in inbox.drain() {
            match seen {
                Seen::Event(LocalTaskEvent::Started(id)) => {
                    self.ids.insert(id);
                }
                Seen::Event(LocalTaskEvent::Died(id)) => {
                    self.ids.remove(&id);
                }
                Seen::Reopened => relist = true,
            }
        }
        relist
    }

    /// A fresh listing replaces what the events built up.
    pub fn listed(&mut self, ids: impl IntoIterator<Item = String>, now: Instant) {
        self.ids = ids.into_iter().collect();
        self.listed_at = Some(now);
    }

    /// A container that turned out not to run (its die event is still on its way, or lost).
    pub fn forget(&mut self, id: &str) {
        self.ids.remove(id);
    }

    pub fn ids(&self) -> &HashSet<String> {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(r: &Running) -> Vec<String> {
        let mut v: Vec<String> = r.ids().iter().cloned().collect();
        v.sort();
        v
    }

    #[test]
    fn events_keep_the_set_between_listings_and_a_reopened_stream_or_old_listing_lists_again() {
        let (inbox, mut running) = (Inbox::default(), Running::default());
        let t0 = Instant::now();
        assert!(running.take(&inbox, t0), "never listed");
        running.listed(["a".to_string(), "b".to_string()], t0);
        inbox.push(Seen::Event(LocalTaskEvent::Started("c".into())));
        inbox.push(Seen::Event(LocalTaskEvent::Died("a".into())));
        // A container that started and died between two passes.
        inbox.push(Seen::Event(LocalTaskEvent::Started("d".into())));
        inbox.push(Seen::Event(LocalTaskEvent::Died("d".into())));
        assert!(!running.take(&inbox, t0 + Duration::from_secs(1)), "listed again although the events told all");
        assert_eq!(ids(&running), ["b", "c"]);
        assert!(!running.take(&inbox, t0 + Duration::from_secs(2)), "nothing new, no listing");
        inbox.push(Seen::Reopened);
        assert!(running.take(&inbox, t0 + Duration::from_secs(3)), "events may have been missed");
        running.listed(["b".to_string()], t0 + Duration::from_secs(3));
        assert_eq!(ids(&running), ["b"]);
        assert!(running.take(&inbox, t0 + Duration::from_secs(3) + RELIST_AFTER), "the safety net");
        running.forget("b");
        assert!(ids(&running).is_empty());
    }
}
