//! The one owner of the controller's timers (kube-runtime's `scheduler`): a lab's retry after
//! its backoff, its next progress check, the deletion rule's second look at the directory.
//! One entry per key, and the earliest deadline wins, so triggers can never pile up timer
//! chains; the run loop awaits [`Scheduler::next`] beside its other inputs.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::time::delay_queue::{self, DelayQueue};

#[derive(Debug)]
pub struct Scheduler<K: Hash + Eq + Clone> {
    queue: DelayQueue<K>,
    entries: HashMap<K, (delay_queue::Key, Instant)>,
}

impl<K: Hash + Eq + Clone> Default for Scheduler<K> {
    fn default() -> Self {
        Scheduler { queue: DelayQueue::new(), entries: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone> Scheduler<K> {
    /// Fires `key` after `delay`, unless it is already due sooner.
    pub fn schedule(&mut self, key: K, delay: Duration) {
        let at = Instant::now() + delay;
        match self.entries.get_mut(&key) {
            Some((_, due)) if *due <= at => {}
            Some((slot, due)) => {
                self.queue.reset_at(slot, at);
                *due = at;
            }
            None => {
                let slot = self.queue.insert_at(key.clone(), at);
                self.entries.insert(key, (slot, at));
            }
        }
    }

    /// Fires `key` after exactly `delay`, sooner or later than it was due (a debounce).
    pub fn reset(&mut self, key: K, delay: Duration) {
        let at = Instant::now() + delay;
        match self.entries.get_mut(&key) {
            Some((slot, due)) => {
                self.queue.reset_at(slot, at);
                *due = at;
            }
            None => {
                let slot = self.queue.insert_at(key.clone(), at);
                self.entries.insert(key, (slot, at));
            }
        }
    }

    /// Drops the key's timer, if any (a lab deleted, a backoff reset by a file change).
    pub fn cancel(&mut self, key: &K) {
        if let Some((slot, _)) = self.entries.remove(key) {
            self.queue.remove(&slot);
        }
    }

    pub fn is_scheduled(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next key whose time has come. Pending forever while nothing is scheduled, so it can
    /// sit in a `select!` beside other inputs.
    pub async fn next(&mut self) -> K {
        loop {
            if self.queue.is_empty() {
                std::future::pending::<()>().await;
            }
            if let Some(expired) = self.queue.next().await {
                let key = expired.into_inner();
                self.entries.remove(&key);
                return key;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_earliest_deadline_wins_and_a_key_fires_once() {
        let mut s = Scheduler::default();
        s.schedule("a", Duration::from_secs(10));
        s.schedule("a", Duration::from_secs(2));
        s.schedule("a", Duration::from_secs(5)); // later than what is due: ignored
        s.schedule("b", Duration::from_secs(3));
        assert_eq!(s.len(), 2);
        let start = Instant::now();
        assert_eq!(s.next().await, "a");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(s.next().await, "b");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert!(s.is_empty());
        let nothing = tokio::time::timeout(Duration::from_secs(60), s.next()).await;
        assert!(nothing.is_err(), "a fired key does not fire again");
    }

    #[tokio::test(start_paused = true)]
    async fn reset_moves_a_deadline_either_way() {
        let mut s = Scheduler::default();
        s.schedule("a", Duration::from_secs(1));
        s.reset("a", Duration::from_secs(4));
        let start = Instant::now();
        assert_eq!(s.next().await, "a");
        assert_eq!(start.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_keys_never_fire() {
        let mut s = Scheduler::default();
        s.schedule("a", Duration::from_secs(1));
        s.schedule("b", Duration::from_secs(2));
        s.cancel(&"a");
        assert!(!s.is_scheduled(&"a"));
        assert_eq!(s.next().await, "b");
    }
}
