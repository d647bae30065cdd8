//! One observed view of the Swarm shared by every lab (kube-runtime's reflector, adapted):
//! Docker's events carry no objects, so the view is refreshed by listing, but only when
//! something may have changed since it was taken: an event arrived, labd changed something,
//! or a resync or progress check asked for a fresh look. A resync of 100 settled labs then
//! costs the list calls of one observation, not 100.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::Stream;
use tokio::sync::Mutex;

use crate::plan::{DesiredNetwork, DesiredService, Observed};
use crate::swarm::{Swarm, SwarmError, SwarmEvent};

/// A [`Swarm`] whose observations come from the shared view; changes go through to Swarm and
/// mark the view stale.
pub struct Cached<S: Swarm> {
    inner: S,
    /// Bumped by everything that may make the whole view stale.
    wanted: AtomicU64,
    /// Bumped by what changes tasks alone (a container started or died): the next look lists
    /// the tasks again and keeps the services and networks it has.
    tasks_wanted: AtomicU64,
    view: Mutex<Option<View>>,
}

struct View {
    /// The values of `wanted` and `tasks_wanted` when the listings behind it started.
    taken_at: u64,
    tasks_taken_at: u64,
    observed: Arc<Observed>,
}

impl<S: Swarm> Cached<S> {
    pub fn new(inner: S) -> Self {
        Cached { inner, wanted: AtomicU64::new(1), tasks_wanted: AtomicU64::new(0), view: Mutex::new(None) }
    }

    /// The next observation lists everything again.
    pub fn invalidate(&self) {
        self.wanted.fetch_add(1, Ordering::SeqCst);
    }

    /// The next observation counts the tasks again.
    pub fn invalidate_tasks(&self) {
        self.tasks_wanted.fetch_add(1, Ordering::SeqCst);
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn view(&self) -> Result<Arc<Observed>, SwarmError> {
        // One listing at a time: labs asking meanwhile wait for it and share it.
        let mut slot = self.view.lock().await;
        let wanted = self.wanted.load(Ordering::SeqCst);
        let tasks_wanted = self.tasks_wanted.load(Ordering::SeqCst);
        // A change while a listing runs bumps a counter past what the view records: the next
        // look lists again.
        let observed = match slot.as_ref() {
            Some(v) if v.taken_at >= wanted && v.tasks_taken_at >= tasks_wanted => return Ok(v.observed.clone()),
            Some(v) if v.taken_at >= wanted => {
                tracing::debug!("observing: tasks recounted");
                Arc::new(self.inner.recount(&v.observed).await?)
            }
            _ => {
                tracing::debug!("observing: everything listed");
                Arc::new(self.inner.observe_all().await?)
            }
        };
        // A recount keeps a view whose `taken_at` is `wanted` already (the counter only grows).
        *slot = Some(View { taken_at: wanted, tasks_taken_at: tasks_wanted, observed: observed.clone() });
        Ok(observed)
    }

    fn changed<T>(&self, result: Result<T, SwarmError>) -> Result<T, SwarmError> {
        self.invalidate();
        result
    }
}

impl<S: Swarm> Swarm for Cached<S> {
    async fn observe_all(&self) -> Result<Observed, SwarmError> {
        Ok(self.view().await?.as_ref().clone())
    }

    async fn recount(&self, observed: &Observed) -> Result<Observed, SwarmError> {
        self.inner.recount(observed).await
    }

    async fn observe(&self, lab: &str) -> Result<Observed, SwarmError> {
        Ok(self.view().await?.of_lab(lab))
    }

    async fn owned_labs(&self) -> Result<Vec<String>, SwarmError> {
        Ok(self.view().await?.owned_labs())
    }

    fn events(&self) -> impl Stream<Item = Result<SwarmEvent, SwarmError>> + Send + 'static {
        self.inner.events()
    }

    async fn create_network(&self, net: &DesiredNetwork) -> Result<(), SwarmError> {
        self.changed(self.inner.create_network(net).await)
    }

    async fn remove_network(&self, id: &str) -> Result<(), SwarmError> {
        self.changed(self.inner.remove_network(id).await)
    }

    async fn create_service(&self, svc: &DesiredService) -> Result<(), SwarmError> {
        self.changed(self.inner.create_service(svc).await)
    }

    async fn update_service(&self, id: &str, version: u64, force_update: u64, svc: &DesiredService) -> Result<(), SwarmError> {
        self.changed(self.inner.update_service(id, version, force_update, svc).await)
    }

    async fn remove_service(&self, id: &str) -> Result<(), SwarmError> {
        self.changed(self.inner.remove_service(id).await)
    }

    /// Not cached: asked only while a partition is in force, and tasks move.
    async fn task_addresses(&self, network: &str) -> Result<crate::swarm::TaskAddresses, SwarmError> {
        self.inner.task_addresses(network).await
    }

    /// Not cached: memories are not part of the observed view (read once at start, written
    /// only by labd).
    async fn memories(&self) -> Result<std::collections::BTreeMap<String, crate::plan::LabMemory>, SwarmError> {
        self.inner.memories().await
    }

    async fn remember(&self, lab: &str, memory: &crate::plan::LabMemory) -> Result<(), SwarmError> {
        self.inner.remember(lab, memory).await
    }

    async fn prune_files(&self, lab: &str, keep: &std::collections::BTreeSet<String>) -> Result<(), SwarmError> {
        self.inner.prune_files(lab, keep).await
    }

    async fn forget(&self, lab: &str) -> Result<(), SwarmError> {
        self.inner.forget(lab).await
    }

    fn api_calls(&self) -> u64 {
        self.inner.api_calls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fakes::FakeSwarm;
    use crate::plan::ObservedService;

    fn with_labs(n: usize) -> FakeSwarm {
        let swarm = FakeSwarm::default();
        for i in 0..n {
            swarm.state.lock().unwrap().services.push(ObservedService { id: format!("s{i}"), name: format!("lab{i}_web"), ..Default::default() });
        }
        swarm
    }

    #[tokio::test]
    async fn a_hundred_labs_share_one_observation_until_something_changes() {
        let cached = Cached::new(with_labs(100));
        let before = cached.api_calls();
        for i in 0..100 {
            let seen = cached.observe(&format!("lab{i}")).await.unwrap();
            assert_eq!(seen.services.len(), 1);
        }
        assert_eq!(cached.api_calls() - before, 1, "one listing for 100 labs");
        cached.invalidate();
        cached.observe("lab0").await.unwrap();
        cached.observe("lab1").await.unwrap();
        assert_eq!(cached.api_calls() - before, 2);
    }

    #[tokio::test]
    async fn a_container_event_recounts_the_tasks_alone_and_a_service_event_lists_everything() {
        let swarm = Arc::new(with_labs(1));
        let cached = Cached::new(swarm.clone());
        let full = || swarm.full_looks.load(std::sync::atomic::Ordering::Relaxed);
        let seen = |o: Observed| (o.services[0].running, o.services[0].image.clone());
        assert_eq!(seen(cached.observe("lab0").await.unwrap()), (0, String::new()));
        let calls = cached.api_calls();
        // On Swarm: two tasks start, and the service's image changes (its event not yet here).
        {
            let mut state = swarm.state.lock().unwrap();
            state.services[0].desired = 2;
            state.services[0].image = "new".into();
        }
        // A container started: the tasks are counted again, the services kept as they were.
        cached.invalidate_tasks();
        assert_eq!(seen(cached.observe("lab0").await.unwrap()), (2, String::new()));
        assert_eq!((full(), cached.api_calls() - calls), (1, 1), "one task recount, no full look");
        cached.observe("lab0").await.unwrap();
        assert_eq!(cached.api_calls() - calls, 1, "nothing changed since: no call");
        // Both kinds of change before one look: everything is listed, once.
        cached.invalidate_tasks();
        cached.invalidate();
        assert_eq!(seen(cached.observe("lab0").await.unwrap()), (2, "new".to_string()));
        assert_eq!((full(), cached.api_calls() - calls), (2, 2));
    }

    #[tokio::test]
    async fn labd_sees_its_own_changes_at_once() {
        let cached = Cached::new(with_labs(1));
        assert!(cached.observe("lab0").await.unwrap().services.len() == 1);
        let id = cached.observe("lab0").await.unwrap().services[0].id.clone();
        cached.remove_service(&id).await.unwrap();
        assert!(cached.observe("lab0").await.unwrap().services.is_empty(), "a stale view after a removal");
    }

    #[tokio::test]
    async fn concurrent_looks_wait_for_one_listing() {
        let cached = Arc::new(Cached::new(with_labs(10)));
        let before = cached.api_calls();
        let looks = (0..10).map(|i| {
            let c = cached.clone();
            tokio::spawn(async move { c.observe(&format!("lab{i}")).await.map(|o| o.services.len()) })
        });
        for look in futures::future::join_all(looks).await {
            assert_eq!(look.unwrap().unwrap(), 1);
        }
        assert_eq!(cached.api_calls() - before, 1);
    }
}
