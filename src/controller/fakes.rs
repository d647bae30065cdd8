//! In-memory stand-ins for the Swarm and the status store, for unit tests of the controller
//! logic. The fake Swarm starts a service's tasks a chosen number of observes after it is
//! created (a scheduler with a delay), fails on demand and reports task trouble.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::plan::{DesiredNetwork, DesiredService, LabMemory, Observed, ObservedNetwork, ObservedService};
use crate::status::{LabEvent, LabStatus, TaskShaping};
use crate::store::LabStore;
use crate::swarm::{Swarm, SwarmError, SwarmEvent, TaskTrouble};

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
    /// The next this many network removals answer "in use by task" (tasks still stopping).
    pub network_in_use: u32,
    /// Task addresses per network name, as `task_addresses` answers.
    pub addresses: HashMap<String, crate::swarm::TaskAddresses>,
    /// What labd remembers of each lab on Swarm (its memory configs).
    pub memories: BTreeMap<String, LabMemory>,
    /// The next this many reads of the memories fail (a manager without a leader yet).
    pub memories_unreadable: u32,
    /// A removed network stays listed (a node's copy, with its old settings) for this many
    /// looks, as Docker's does until the tasks that were on it have stopped: its name is
    /// refused and no service can join it meanwhile.
    pub linger_removed_networks: u32,
    lingering: Vec<(ObservedNetwork, u32)>,
    /// The names of the services and networks removed, in order.
    pub removed: Vec<String>,
    /// The file configs that exist, by name.
    pub file_configs: std::collections::BTreeSet<String>,
    /// The file configs each service (by id) names: Swarm refuses to remove those.
    service_files: HashMap<String, Vec<String>>,
    starting: HashMap<String, u32>,
    next_id: u64,
}

impl FakeState {
    /// Every starting task runs at the next look.
    pub fn start_now(&mut self) {
        self.starting.clear();
    }

    /// Every service's tasks end, and start again `start_after` looks later (a crash).
    pub fn crash_all(&mut self) {
        for svc in &mut self.services {
            svc.running = 0;
            self.starting.insert(svc.id.clone(), self.start_after);
        }
    }

    /// The service's files exist (created with it, as Docker's edge does) and it names them.
    fn name_files(&mut self, id: &str, svc: &DesiredService) {
        let names: Vec<String> = svc.files.iter().map(|f| f.config_name.clone()).collect();
        self.file_configs.extend(names.iter().cloned());
        self.service_files.insert(id.to_string(), names);
    }

    /// Removes the lab's file configs but `keep` and those a service still names.
    fn remove_files(&mut self, lab: &str, keep: &std::collections::BTreeSet<String>) {
        let named: std::collections::BTreeSet<&String> = self.service_files.values().flatten().collect();
        let prefix = format!("{lab}_");
        let gone: Vec<String> = self.file_configs.iter().filter(|c| c.starts_with(&prefix) && !keep.contains(*c) && !named.contains(c)).cloned().collect();
        for c in gone {
            self.file_configs.remove(&c);
        }
    }
}

/// The settings Docker would report for what labd sent: the same for the same spec, as
/// Docker's are.
fn settings_of(svc: &DesiredService) -> u64 {
    u64::from_str_radix(svc.hash.get(..12).unwrap_or_default(), 16).unwrap_or(1)
}

#[derive(Debug)]
pub struct FakeSwarm {
    pub state: Mutex<FakeState>,
    calls: AtomicU64,
    /// Of the calls, the full observations (`observe_all`, not `recount`).
    pub full_looks: AtomicU64,
    /// What `events()` streams; tests send on it (or do not, to drop events).
    pub events: tokio::sync::broadcast::Sender<SwarmEvent>,
}

impl Default for FakeSwarm {
    fn default() -> Self {
        FakeSwarm { state: Mutex::default(), calls: AtomicU64::new(0), full_looks: AtomicU64::new(0), events: tokio::sync::broadcast::channel(1024).0 }
    }
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

    /// What Swarm has now; each look moves starting tasks on.
    fn look(&self) -> Observed {
        let mut s = self.state.lock().unwrap();
        let failing = s.trouble.as_ref().is_some_and(|t| t.failed);
        let FakeState { services, starting, .. } = &mut *s;
        for svc in services.iter_mut() {
            let job = svc.mode.is_job();
            match starting.get_mut(&svc.id) {
                // A job's tasks run while it starts, then complete (unless they fail).
                Some(0) | None if job => {
                    svc.running = 0;
                    svc.completed = Some(if failing { 0 } else { svc.desired });
                }
                // A rollout under way leaves `outdated` tasks on the earlier spec.
                Some(0) | None => svc.running = svc.desired.saturating_sub(svc.outdated),
                Some(left) => {
                    *left -= 1;
                    if job {
                        svc.running = svc.desired;
                    }
                }
            }
            // Tasks a scale-down stops: one of them ends at each observe.
            svc.stopping = svc.stopping.saturating_sub(1);
            // The fake swarm is one node, `node-1` (where the fake store's one agent is).
            svc.running_on = (svc.running > 0).then(|| "node-1".to_string()).into_iter().collect();
        }
        let trouble = s.trouble.clone();
        for svc in s.services.iter_mut() {
            let short = match svc.completed {
                Some(done) => done < svc.desired && svc.running == 0,
                None => svc.running < svc.desired,
            };
            svc.trouble = short.then(|| trouble.clone()).flatten();
        }
        let mut networks = s.networks.clone();
        networks.extend(s.lingering.iter().map(|(n, _)| n.clone()));
        s.lingering.retain_mut(|(_, looks)| {
            *looks -= 1;
            *looks > 0
        });
        Observed { services: s.services.clone(), networks, down_nodes: s.down_nodes.clone(), neighbours: vec![] }
    }
}

impl Swarm for FakeSwarm {
    async fn observe_all(&self) -> Result<Observed, SwarmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.full_looks.fetch_add(1, Ordering::Relaxed);
        Ok(self.look())
    }

    /// As Docker's: the services and networks given, the task counts of now (none for a
    /// service removed since).
    async fn recount(&self, observed: &Observed) -> Result<Observed, SwarmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let now = self.look();
        let services = observed
            .services
            .iter()
            .map(|was| {
                let counted = now.services.iter().find(|s| s.id == was.id);
                ObservedService {
                    running: counted.map_or(0, |c| c.running),
                    stopping: counted.map_or(0, |c| c.stopping),
                    outdated: counted.map_or(0, |c| c.outdated),
                    outdated_by_restart: counted.is_some_and(|c| c.outdated_by_restart),
                    trouble: counted.and_then(|c| c.trouble.clone()),
                    completed: counted.and_then(|c| c.completed),
                    exits: counted.map(|c| c.exits.clone()).unwrap_or_default(),
                    running_on: counted.map(|c| c.running_on.clone()).unwrap_or_default(),
                    ..was.clone()
                }
            })
            .collect();
        Ok(Observed { services, networks: observed.networks.clone(), down_nodes: now.down_nodes, neighbours: observed.neighbours.clone() })
    }

    fn events(&self) -> impl futures::Stream<Item = Result<SwarmEvent, SwarmError>> + Send + 'static {
        futures::stream::unfold(self.events.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((Ok(e), rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    async fn create_network(&self, net: &DesiredNetwork) -> Result<(), SwarmError> {
        self.change("create network", |s| {
            if s.networks.iter().chain(s.lingering.iter().map(|(n, _)| n)).any(|n| n.name == net.name) {
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
            if !s.networks.iter().any(|n| n.id == id) {
                return Err(SwarmError::NotFound(format!("network {id}")));
            }
            if s.network_in_use > 0 {
                s.network_in_use -= 1;
                return Err(SwarmError::InUse { action: format!("remove network {id}"), message: "network is in use by task".into() });
            }
            let looks = s.linger_removed_networks;
            if let Some(at) = s.networks.iter().position(|n| n.id == id) {
                let gone = s.networks.remove(at);
                s.removed.push(gone.name.clone());
                if looks > 0 {
                    s.lingering.push((gone, looks));
                }
            }
            Ok(())
        })
    }

    async fn create_service(&self, svc: &DesiredService) -> Result<(), SwarmError> {
        self.change("create service", |s| {
            if let Some(missing) = svc.network_targets().find(|t| s.networks.iter().all(|n| n.name != *t)) {
                return Err(SwarmError::Api { action: format!("create service {}", svc.name), message: format!("network {missing} not found") });
            }
            s.next_id += 1;
            let id = format!("s{}", s.next_id);
            let replicas = svc.replicas.unwrap_or(1);
            s.starting.insert(id.clone(), s.start_after);
            s.name_files(&id, svc);
            s.services.push(ObservedService {
                id,
                name: svc.name.clone(),
                version: 1,
                labels: svc.labels.clone(),
                replicas: svc.replicas,
                mode: svc.mode,
                job_run: svc.mode.is_job().then_some(0),
                image: svc.image.clone(),
                running: 0,
                desired: replicas,
                stopping: 0,
                trouble: None,
                completed: svc.mode.is_job().then_some(0),
                exits: vec![],
                running_on: Default::default(),
                force_update: 0,
                rollout: None,
                template_digest: 0,
                template_settings_digest: 0,
                settings_digest: settings_of(svc),
                applied_settings: None,
                outdated: 0,
                outdated_by_restart: false,
            });
            Ok(())
        })
    }

    async fn update_service(&self, id: &str, version: u64, force_update: u64, svc: &DesiredService) -> Result<(), SwarmError> {
        self.change("update service", |s| {
            let have = s.services.iter_mut().find(|x| x.id == id).ok_or(SwarmError::Api { action: "update".into(), message: "not found".into() })?;
            if have.version != version {
                return Err(SwarmError::Api { action: "update".into(), message: "update out of sequence".into() });
            }
            have.version += 1;
            have.force_update = force_update;
            have.settings_digest = settings_of(svc);
            have.labels = svc.labels.clone();
            have.replicas = svc.replicas;
            have.image = svc.image.clone();
            have.desired = svc.replicas.unwrap_or(1);
            have.stopping = have.running.saturating_sub(have.desired);
            have.running = have.running.min(have.desired);
            if let Some(run) = have.job_run.as_mut() {
                // As Swarm's: any update runs the job again.
                *run += 1;
                have.completed = Some(0);
                have.stopping += have.running;
                have.running = 0;
                let after = s.start_after;
                s.starting.insert(id.to_string(), after);
            }
            s.name_files(id, svc);
            Ok(())
        })
    }

    async fn remove_service(&self, id: &str) -> Result<(), SwarmError> {
        self.change("remove service", |s| {
            if !s.services.iter().any(|x| x.id == id) {
                return Err(SwarmError::NotFound(format!("service {id}")));
            }
            let name = s.services.iter().find(|x| x.id == id).map(|x| x.name.clone()).unwrap_or_default();
            s.removed.push(name);
            s.services.retain(|x| x.id != id);
            s.service_files.remove(id);
            Ok(())
        })
    }

    async fn task_addresses(&self, network: &str) -> Result<crate::swarm::TaskAddresses, SwarmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(self.state.lock().unwrap().addresses.get(network).cloned().unwrap_or_default())
    }

    async fn memories(&self) -> Result<BTreeMap<String, LabMemory>, SwarmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state.lock().unwrap();
        if s.memories_unreadable > 0 {
            s.memories_unreadable -= 1;
            return Err(SwarmError::Api { action: "list configs".into(), message: "The swarm does not have a leader".into() });
        }
        Ok(s.memories.clone())
    }

    async fn remember(&self, lab: &str, memory: &LabMemory) -> Result<(), SwarmError> {
        self.change(&format!("write config {lab}_swarmlab-memory"), |s| {
            s.memories.insert(lab.to_string(), memory.clone());
            Ok(())
        })
    }

    async fn prune_files(&self, lab: &str, keep: &std::collections::BTreeSet<String>) -> Result<(), SwarmError> {
        self.change("remove configs", |s| {
            s.remove_files(lab, keep);
            Ok(())
        })
    }

    async fn forget(&self, lab: &str) -> Result<(), SwarmError> {
        self.change(&format!("remove config {lab}_swarmlab-memory"), |s| {
            s.remove_files(lab, &Default::default());
            s.memories.remove(lab);
            Ok(())
        })
    }

    fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// The status store in memory: statuses, events, metrics and desired shaping as written,
/// agent reports as set. Clones share their contents (as clones of a Redis client do).
#[derive(Debug, Default, Clone)]
pub struct FakeStore(Arc<FakeStoreData>);

#[derive(Debug)]
pub struct FakeStoreData {
    pub statuses: Mutex<BTreeMap<String, LabStatus>>,
    pub events: Mutex<Vec<(String, LabEvent)>>,
    pub metrics: Mutex<BTreeMap<(String, String), i128>>,
    pub shaping: Mutex<BTreeMap<String, Option<String>>>,
    pub faults: Mutex<BTreeMap<String, Option<String>>>,
    /// What the agents report; `None`: Redis unreadable.
    pub reports: Mutex<Option<Vec<TaskShaping>>>,
    /// The nodes with a live agent (one, `node-1`, unless a test says otherwise).
    pub agents: Mutex<Vec<String>>,
    /// Labs suspended with `labctl suspend`.
    pub suspended: Mutex<std::collections::BTreeSet<String>>,
    /// Labs resumed with `labctl resume` (and not suspended since).
    pub resumed: Mutex<std::collections::BTreeSet<String>>,
    /// `labctl start` times.
    pub starts: Mutex<BTreeMap<String, chrono::DateTime<chrono::Utc>>>,
    /// The Git source's state, as labd last put it.
    pub source: Mutex<Option<crate::status::SourceStatus>>,
    /// labd's answers to `labctl reconcile`, by request id.
    pub answers: Mutex<BTreeMap<String, crate::status::ReconcileAnswer>>,
    /// What `flag_changes` yields: tests send on it as `labctl` publishes.
    pub notices: tokio::sync::broadcast::Sender<crate::store::Notice>,
}

impl Default for FakeStoreData {
    fn default() -> Self {
        FakeStoreData {
            statuses: Mutex::default(),
            events: Mutex::default(),
            metrics: Mutex::default(),
            shaping: Mutex::default(),
            faults: Mutex::default(),
            reports: Mutex::default(),
            agents: Mutex::new(vec!["node-1".into()]),
            suspended: Mutex::default(),
            resumed: Mutex::default(),
            starts: Mutex::default(),
            source: Mutex::default(),
            answers: Mutex::default(),
            notices: tokio::sync::broadcast::channel(16).0,
        }
    }
}

impl std::ops::Deref for FakeStore {
    type Target = FakeStoreData;
    fn deref(&self) -> &FakeStoreData {
        &self.0
    }
}

impl FakeStore {
    /// What `labctl suspend` (`true`) or `labctl resume` writes.
    pub fn labctl_suspend(&self, lab: &str, suspend: bool) {
        let (mut suspended, mut resumed) = (self.suspended.lock().unwrap(), self.resumed.lock().unwrap());
        let (add_to, remove_from) = if suspend { (&mut suspended, &mut resumed) } else { (&mut resumed, &mut suspended) };
        add_to.insert(lab.to_string());
        remove_from.remove(lab);
    }

    pub fn metric(&self, lab: &str, metric: &str) -> i128 {
        self.metrics.lock().unwrap().get(&(lab.to_string(), metric.to_string())).copied().unwrap_or(0)
    }
}

impl LabStore for FakeStore {
    fn put_status(&self, status: &LabStatus) {
        self.statuses.lock().unwrap().insert(status.name.clone(), status.clone());
    }
    fn delete_lab(&self, lab: &str) {
        self.statuses.lock().unwrap().remove(lab);
        self.shaping.lock().unwrap().remove(lab);
        self.metrics.lock().unwrap().retain(|(l, _), _| l != lab);
    }
    fn count(&self, lab: &str, metric: &str, by: i64) {
        *self.metrics.lock().unwrap().entry((lab.to_string(), metric.to_string())).or_default() += by as i128;
    }
    fn gauge(&self, lab: &str, metric: &str, value: u128) {
        self.metrics.lock().unwrap().insert((lab.to_string(), metric.to_string()), value as i128);
    }
    fn global_gauge(&self, metric: &str, value: u128) {
        self.gauge("", metric, value)
    }
    fn heartbeat(&self, _resync: std::time::Duration) {
        self.count("", "heartbeats", 1);
    }
    fn stopped(&self) {
        self.count("", "stopped", 1);
    }
    fn put_source(&self, source: &crate::status::SourceStatus) {
        *self.source.lock().unwrap() = Some(source.clone());
    }
    fn answer_reconcile(&self, id: &str, answer: &crate::status::ReconcileAnswer) {
        self.answers.lock().unwrap().insert(id.to_string(), answer.clone());
    }
    async fn starts(&self) -> Option<BTreeMap<String, chrono::DateTime<chrono::Utc>>> {
        Some(self.starts.lock().unwrap().clone())
    }
    fn notices(&self) -> impl futures::Stream<Item = crate::store::Notice> + Send + 'static {
        futures::stream::unfold(self.notices.subscribe(), |mut rx| async move {
            match rx.recv().await {
                Ok(notice) => Some((notice, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some((crate::store::Notice::Flags, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
            }
        })
    }
    async fn suspensions(&self) -> Option<crate::store::Suspensions> {
        Some(crate::store::Suspensions { suspended: self.suspended.lock().unwrap().clone(), resumed: self.resumed.lock().unwrap().clone() })
    }
    async fn statuses(&self) -> Vec<LabStatus> {
        self.statuses.lock().unwrap().values().cloned().collect()
    }
    fn event(&self, lab: &str, event: LabEvent) {
        self.events.lock().unwrap().push((lab.to_string(), event));
    }
    fn put_shaping(&self, lab: &str, json: Option<String>) {
        self.shaping.lock().unwrap().insert(lab.to_string(), json);
    }
    fn put_faults(&self, lab: &str, json: Option<String>) {
        self.faults.lock().unwrap().insert(lab.to_string(), json);
    }
    async fn task_shaping(&self, _lab: &str) -> Option<Vec<TaskShaping>> {
        self.reports.lock().unwrap().clone()
    }
    async fn live_agents(&self) -> Option<Vec<String>> {
        Some(self.agents.lock().unwrap().clone())
    }
}
