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
    /// Bumped by everything that may make the view stale.
    wanted: AtomicU64,
    /// The view and the value of `wanted` when its listing started.
    view: Mutex<Option<(u64, Arc<Observed>)>>,
}

impl<S: Swarm> Cached<S> {
    pub fn new(inner: S) -> Self {
        Cached { inner, wanted: AtomicU64::new(1), view: Mutex::new(None) }
    }

    /// The next observation lists again.
    pub fn invalidate(&self) {
        self.wanted.fetch_add(1, Ordering::SeqCst);
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn view(&self) -> Result<Arc<Observed>, SwarmError> {
        // One listing at a time: labs asking meanwhile wait for it and share it.
        let mut slot = self.view.lock().await;
        let wanted = self.wanted.load(Ordering::SeqCst);
        if let Some((taken_at, view)) = slot.as_ref() {
            if *taken_at >= wanted {
                return Ok(view.clone());
            }
        }
        // A change while the listing runs bumps `wanted` past `taken_at`: the next look lists again.
        let view = Arc::new(self.inner.observe_all().await?);
        *slot = Some((wanted, view.clone()));
        Ok(view)
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

    async fn update_service(&self, id: &str, version: u64, svc: &DesiredService) -> Result<(), SwarmError> {
        self.changed(self.inner.update_service(id, version, svc).await)
    }

    async fn remove_service(&self, id: &str) -> Result<(), SwarmError> {
        self.changed(self.inner.remove_service(id).await)
    }

    /// Not cached: asked only while a partition is in force, and tasks move.
    async fn task_addresses(&self, network: &str) -> Result<crate::swarm::TaskAddresses, SwarmError> {
        self.inner.task_addresses(network).await
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
