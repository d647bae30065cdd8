//! The status store: where labd writes status, events and metrics, and labctl reads them.
//! Redis, with the keys documented in the README.

pub mod lease;
mod redis_store;

pub use redis_store::{keys, RedisStore, StoreReader};

use std::future::Future;

use crate::status::{LabEvent, TaskShaping};

/// What one reconcile needs of the status store: record events, publish the desired shaping
/// for the node agents, read what the agents applied. Redis in labd; in memory in unit tests.
pub trait LabStore: Send + Sync + 'static {
    fn event(&self, lab: &str, event: LabEvent);
    fn put_shaping(&self, lab: &str, json: Option<String>);
    /// The agents' reports for the lab's tasks; `None` when they cannot be read.
    fn task_shaping(&self, lab: &str) -> impl Future<Output = Option<Vec<TaskShaping>>> + Send;
}

impl LabStore for RedisStore {
    fn event(&self, lab: &str, event: LabEvent) {
        RedisStore::event(self, lab, event)
    }
    fn put_shaping(&self, lab: &str, json: Option<String>) {
        RedisStore::put_shaping(self, lab, json)
    }
    async fn task_shaping(&self, lab: &str) -> Option<Vec<TaskShaping>> {
        RedisStore::task_shaping(self, lab).await
    }
}
