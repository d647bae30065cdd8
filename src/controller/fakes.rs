//! In-memory stand-ins for the Swarm and the status store, for unit tests of the controller
//! logic. The fake Swarm starts a service's tasks a chosen number of observes after it is
//! created (a scheduler with a delay), fails on demand and reports task trouble.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::plan::{labels, DesiredNetwork, DesiredService, Observed, ObservedNetwork, ObservedService};
use crate::status::{LabEvent, TaskShaping};
use crate::store::LabStore;
use crate::swarm::{Swarm, SwarmError, TaskTrouble};

#[derive(Debug, Default)]
pub struct FakeState {
    pub networks: Vec<ObservedNetwork>,
    pub services: Vec<ObservedService>,
    pub down_nodes: Vec<String>,
    /// Observes between a service's creation and its tasks running.
    pub start_after: u32,
    /// The next this many changing calls fail with an API error.
    pub fail_next: u32,
    pub trouble: Option<TaskTrouble>,
    starting: HashMap<String, u32>,
    next_id: u64,
}

#[derive(Debug, Default)]
pub struct FakeSwarm {
    pub state: Mutex<FakeState>,
    calls: AtomicU64,
}

impl FakeSwarm {
    fn change(&self, what: &str, f: impl FnOnce(&mut FakeState) -> Result<(), SwarmError>) -> Result<(), SwarmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state.lock().unwrap();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(SwarmError::Api { action: what.to_string(), message: "rpc error: injected failure".into() });
        }
        f(&mut s)
    }

    pub fn service(&self, name: &str) -> Option<ObservedService> {
        self.state.lock().unwrap().services.iter().find(|s| s.name == name).cloned()
    }
}

impl Swarm for FakeSwarm {
    async fn observe(&self, lab: &str) -> Result<Observed, SwarmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state.lock().unwrap();
        let prefix = format!("{lab}_");
        let FakeState { services, starting, .. } = &mut *s;
        for svc in services.iter_mut() {
            match starting.get_mut(&svc.id) {
                Some(0) | None => svc.running = svc.desired,
                Some(left) => *left -= 1,
            }
        }
        Ok(Observed {
            services: s.services.iter().filter(|x| x.name.starts_with(&prefix)).cloned().collect(),
            networks: s.networks.iter().filter(|x| x.name.starts_with(&prefix)).cloned().collect(),
            down_nodes: s.down_nodes.clone(),
        })
    }

    async fn owned_labs(&self) -> Result<Vec<String>, SwarmError> {
        let s = self.state.lock().unwrap();
        let mut labs: Vec<String> = s
            .services
            .iter()
            .map(|x| &x.labels)
            .chain(s.networks.iter().map(|x| &x.labels))
            .filter_map(|l| labels::owner(l).map(str::to_string))
            .collect();
        labs.sort();
        labs.dedup();
        Ok(labs)
    }

    async fn create_network(&self, net: &DesiredNetwork) -> Result<(), SwarmError> {
        self.change("create network", |s| {
            if s.networks.iter().any(|n| n.name == net.name) {
                return Err(SwarmError::AlreadyExists(net.name.clone()));
            }
            s.next_id += 1;
            s.networks.push(ObservedNetwork {
                id: format!("n{}", s.next_id),
                name: net.name.clone(),
                labels: net.labels.clone(),
                subnet: net.subnet.clone(),
                internal: net.internal,
            });
            Ok(())
        })
    }

    async fn remove_network(&self, id: &str) -> Result<(), SwarmError> {
        self.change("remove network", |s| {
            s.networks.retain(|n| n.id != id);
            Ok(())
        })
    }

    async fn create_service(&self, svc: &DesiredService) -> Result<(), SwarmError> {
        self.change("create service", |s| {
            s.next_id += 1;
            let id = format!("s{}", s.next_id);
            let replicas = svc.replicas.unwrap_or(1);
            s.starting.insert(id.clone(), s.start_after);
            s.services.push(ObservedService {
                id,
                name: svc.name.clone(),
                version: 1,
                labels: svc.spec.labels.clone().unwrap_or_default(),
                replicas: svc.replicas,
                image: svc.image.clone(),
                running: 0,
                desired: replicas,
            });
            Ok(())
        })
    }

    async fn update_service(&self, id: &str, version: u64, svc: &DesiredService) -> Result<(), SwarmError> {
        self.change("update service", |s| {
            let have = s.services.iter_mut().find(|x| x.id == id).ok_or(SwarmError::Api { action: "update".into(), message: "not found".into() })?;
            if have.version != version {
                return Err(SwarmError::Api { action: "update".into(), message: "update out of sequence".into() });
            }
            have.version += 1;
            have.labels = svc.spec.labels.clone().unwrap_or_default();
            have.replicas = svc.replicas;
            have.image = svc.image.clone();
            have.desired = svc.replicas.unwrap_or(1);
            Ok(())
        })
    }

    async fn remove_service(&self, id: &str) -> Result<(), SwarmError> {
        self.change("remove service", |s| {
            s.services.retain(|x| x.id != id);
            Ok(())
        })
    }

    async fn task_trouble(&self, _service_id: &str) -> Result<Option<TaskTrouble>, SwarmError> {
        Ok(self.state.lock().unwrap().trouble.clone())
    }

    fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// The status store in memory: events and desired shaping as written, agent reports as set.
#[derive(Debug, Default)]
pub struct FakeStore {
    pub events: Mutex<Vec<(String, LabEvent)>>,
    pub shaping: Mutex<BTreeMap<String, Option<String>>>,
    /// What the agents report; `None`: Redis unreadable.
    pub reports: Mutex<Option<Vec<TaskShaping>>>,
}

impl LabStore for FakeStore {
    fn event(&self, lab: &str, event: LabEvent) {
        self.events.lock().unwrap().push((lab.to_string(), event));
    }
    fn put_shaping(&self, lab: &str, json: Option<String>) {
        self.shaping.lock().unwrap().insert(lab.to_string(), json);
    }
    async fn task_shaping(&self, _lab: &str) -> Option<Vec<TaskShaping>> {
        self.reports.lock().unwrap().clone()
    }
}
