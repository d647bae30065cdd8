//! Desired against observed: the actions that make Swarm equal to a lab, touching only objects
//! that carry this lab's ownership labels.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::desired::{DesiredLab, DesiredNetwork, DesiredService};
use super::labels;
use crate::spec::links::Cidr;
use crate::spec::Mode;

/// A task that exited on its own and was restarted in its slot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskExit {
    /// Its slot: a replicated service's slot number, a global service's node id.
    pub slot: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// What the Swarm adapter reports of a service, reduced to what the plan needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedService {
    pub id: String,
    pub name: String,
    pub version: u64,
    pub labels: HashMap<String, String>,
    /// `None` for global services.
    pub replicas: Option<u64>,
    pub mode: Mode,
    /// A job's current run (Swarm's job iteration), which its tasks carry; `None` for a
    /// service kept running.
    pub job_run: Option<u64>,
    pub image: String,
    pub running: u64,
    pub desired: u64,
    /// Tasks Swarm is stopping whose containers still run (not counted in `running`).
    pub stopping: u64,
    /// Why its tasks do not all run (the newest task problem), when they do not.
    pub trouble: Option<TaskTrouble>,
    /// A job's tasks of its current run that completed (`None` for a service kept running).
    pub completed: Option<u64>,
    /// When its tasks that exited on their own (failed or completed) and were restarted in
    /// their slot ended, as far as Swarm keeps its task history: the restarts `describe`
    /// counts. Empty for a job, whose tasks end by design.
    pub exits: Vec<TaskExit>,
    /// Hostnames of the nodes its running tasks are on (where an agent must shape them).
    pub running_on: std::collections::BTreeSet<String>,
    /// Swarm's `ForceUpdate` counter of its task template, which `docker service update
    /// --force` (and `labctl restart`) bump to restart every task: kept in labd's updates, or an
    /// update that changes nothing else of the tasks (a scale) would restart them all again.
    pub force_update: u64,
    /// Swarm rolling a change of the service out over its tasks, while it does (or paused).
    pub rollout: Option<Rollout>,
    /// While it does: running tasks still on an earlier spec (not counted in `running`, so a
    /// lab is not Ready half-updated: with `order: start-first` or an update `delay` every
    /// replica runs, old and new, the whole time).
    pub outdated: u64,
    /// Those outdated tasks differ from the template only by a forced restart (`labctl
    /// restart`, `docker service update --force`): the same spec, being restarted.
    pub outdated_by_restart: bool,
    /// A digest of the service's task template, which its tasks' specs are compared with (the
    /// Swarm adapter's; 0 when unknown).
    pub template_digest: u64,
    /// The same without forced restarts (0 unknown).
    pub template_settings_digest: u64,
    /// A digest of the whole service spec less its replicas and forced restarts: what a hand
    /// edit of its settings changes (0 unknown).
    pub settings_digest: u64,
    /// `settings_digest` as labd saw it just after it last applied the spec the service now
    /// carries (filled in by the controller, which remembers it): another value now means a
    /// hand edit (`docker service update --env-add …` keeps the labels and their spec hash).
    pub applied_settings: Option<u64>,
}

/// A rolling update of a service in Swarm's words (its `UpdateStatus`), once started and until
/// it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub state: RolloutState,
    /// Swarm's message: why it paused.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    Updating,
    /// A new task failed (within `update.monitor`) and the update's `failureAction` is pause:
    /// Swarm changes nothing more until the service's spec changes again.
    Paused,
    /// `docker service rollback` by hand, or a rollback Swarm started.
    RollingBack,
    RollbackPaused,
}

/// A task problem: why a service's task is not running.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskTrouble {
    pub state: String,
    pub message: String,
    pub node: String,
    /// The task ended in `failed` or `rejected` (not merely starting).
    pub failed: bool,
    /// Why, where Docker's message says and the user can act on it.
    pub cause: Option<TroubleCause>,
}

/// A task problem's cause that the status explains with what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TroubleCause {
    /// The node does not have the image (labd never pulls).
    ImageMissing,
    /// Docker stopped the container because its health check kept failing.
    Unhealthy,
    /// No node may run it (Swarm's "no suitable node": placement constraints or resources):
    /// pending until one can, for as long as that takes.
    Unschedulable,
    /// No node may run it because a port it publishes in host mode is taken there (by another
    /// task, of this lab or another, or a process of the host): Swarm's "host-mode port
    /// already in use".
    PortInUse,
    /// Its command returned (exit 0), as an image's default shell does with no command: Swarm
    /// starts a service's tasks again whatever their exit code.
    CommandReturned,
    /// It exited 127 (126): what a shell or `init` answers when the command is not found (not
    /// executable) in the image.
    CommandNotFound { not_executable: bool },
    /// It exited 137: killed by SIGKILL (the kernel's OOM killer at its memory limit, or a kill).
    Killed,
}

impl TroubleCause {
    /// Whether the next try meets it as well (a missing image, a failing health check, no node
    /// that may run it): said while the next try starts. A task's own end (killed, its command
    /// missing or returned) is said only once it repeats, as a crash loop.
    pub fn outlasts_a_try(self) -> bool {
        matches!(self, TroubleCause::ImageMissing | TroubleCause::Unhealthy | TroubleCause::Unschedulable | TroubleCause::PortInUse)
    }
}


#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedNetwork {
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    /// The network's IPv4 subnet as Docker reports it.
    pub subnet: Option<String>,
    pub internal: bool,
}

impl ObservedNetwork {
    /// Whether the network's own settings differ from what is wanted: the only changes that
    /// need a recreate. Labels are left out (Docker cannot update them, and a cosmetic change
    /// must never restart tasks); a subnet the lab does not set is Docker's to choose.
    pub fn needs_recreate(&self, want: &DesiredNetwork) -> bool {
        let subnet_differs = want.subnet.as_ref().is_some_and(|s| self.subnet.as_ref() != Some(s));
        subnet_differs || self.internal != want.internal
    }
}

/// Every object that either carries this lab's labels or has one of its names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub services: Vec<ObservedService>,
    pub networks: Vec<ObservedNetwork>,
    /// Hostnames of swarm nodes that are not Ready (their tasks do not count as running).
    pub down_nodes: Vec<String>,
    /// In a lab's view: the swarm's other networks (not named for the lab), whose subnets
    /// the lab's must not overlap.
    pub neighbours: Vec<ObservedNetwork>,
}

impl Observed {
    /// What of a Swarm-wide observation concerns `lab`: objects named `<lab>_*`, ours or not
    /// (a clash with a foreign object of the same name must be seen).
    pub fn of_lab(&self, lab: &str) -> Observed {
        let prefix = format!("{lab}_");
        Observed {
            services: self.services.iter().filter(|s| s.name.starts_with(&prefix)).cloned().collect(),
            networks: self.networks.iter().filter(|n| n.name.starts_with(&prefix)).cloned().collect(),
            down_nodes: self.down_nodes.clone(),
            neighbours: self.networks.iter().filter(|n| !n.name.starts_with(&prefix) && n.subnet.is_some()).cloned().collect(),
        }
    }

    /// Every lab that owns at least one object, sorted.
    pub fn owned_labs(&self) -> Vec<String> {
        let owners = self.services.iter().map(|s| &s.labels).chain(self.networks.iter().map(|n| &n.labels));
        let labs: std::collections::BTreeSet<String> = owners.filter_map(|l| labels::owner(l).map(str::to_string)).collect();
        labs.into_iter().collect()
    }

    /// What Swarm holds once `actions` are done (tasks as wanted, new objects with made-up
    /// ids): how `labctl diff` shows the passes after the first, and what the planner's
    /// properties are checked against.
    pub fn apply(&mut self, actions: &[Action]) {
        for (i, a) in actions.iter().enumerate() {
            match a {
                Action::CreateNetwork(n) => self.networks.push(ObservedNetwork {
                    id: format!("new{i}-{}", n.name),
                    name: n.name.clone(),
                    labels: n.labels.clone(),
                    subnet: n.subnet.clone(),
                    internal: n.internal,
                }),
                Action::RemoveNetwork { id, .. } => self.networks.retain(|n| &n.id != id),
                Action::CreateService(s) => self.services.push(ObservedService::as_wanted(format!("new{i}-{}", s.name), 1, s)),
                Action::UpdateService { id, version, desired, force_update, .. } => {
                    if let Some(have) = self.services.iter_mut().find(|s| &s.id == id) {
                        *have = ObservedService { force_update: *force_update, ..ObservedService::as_wanted(id.clone(), version + 1, desired) };
                    }
                }
                Action::RemoveService { id, .. } => self.services.retain(|s| &s.id != id),
            }
        }
    }
}

impl ObservedService {
    /// A service as Swarm holds `want` once its tasks run.
    fn as_wanted(id: String, version: u64, want: &DesiredService) -> ObservedService {
        let desired = want.replicas.unwrap_or(1);
        ObservedService {
            id,
            name: want.name.clone(),
            version,
            labels: want.labels.clone(),
            replicas: want.replicas,
            mode: want.mode,
            job_run: want.mode.is_job().then_some(0),
            image: want.image.clone(),
            running: if want.mode.is_job() { 0 } else { desired },
            desired,
            completed: want.mode.is_job().then_some(desired),
            ..Default::default()
        }
    }
}

/// The plans of every pass labd makes to converge, first to last: one, or two when a network is
/// recreated (removed first, created again once it is gone). Each next pass plans against what
/// the one before leaves (`Observed::apply`); empty when nothing differs or clashes.
pub fn passes(desired: &DesiredLab, observed: &Observed) -> Vec<Plan> {
    let mut observed = observed.clone();
    let mut plans = Vec::new();
    // A pass can only need another for a recreate; three is a bound, not an expectation.
    for _ in 0..3 {
        let plan = diff(desired, &observed);
        let last = plan.is_empty();
        if !last || !plan.conflicts.is_empty() {
            observed.apply(&plan.actions);
            plans.push(plan);
        }
        if last {
            break;
        }
    }
    plans
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreateNetwork(DesiredNetwork),
    /// Recreate: the network's own settings (subnet, internal) changed, which Docker cannot
    /// update in place. Its services are detached first (see [`Plan::detach`]).
    RemoveNetwork { id: String, name: String, recreate: bool },
    CreateService(DesiredService),
    /// `force_update`: the service's `ForceUpdate` as Swarm has it, kept.
    UpdateService { id: String, version: u64, force_update: u64, desired: DesiredService, reason: String },
    /// `recreate`: removed only to be created again by the next pass.
    RemoveService { id: String, name: String, recreate: Option<Recreate> },
}

/// Why a service is removed only to be created again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recreate {
    /// It joins a network being recreated.
    Network,
    /// Its mode changed (kept running or run to completion, replicated or global), which
    /// Swarm cannot update ("service mode change is not allowed").
    Mode,
}

impl Action {
    /// Actions of one stage do not depend on each other and may run concurrently; a stage
    /// starts when the one before has ended (networks exist before services join them, and
    /// services are gone before their networks are removed).
    pub fn stage(&self) -> u8 {
        match self {
            Action::CreateNetwork(_) => 0,
            Action::CreateService(_) | Action::UpdateService { .. } | Action::RemoveService { .. } => 1,
            Action::RemoveNetwork { .. } => 2,
        }
    }

    pub fn kind(&self) -> ActionKind {
        match self {
            Action::CreateNetwork(_) | Action::CreateService(_) => ActionKind::Create,
            Action::UpdateService { .. } => ActionKind::Update,
            Action::RemoveNetwork { .. } | Action::RemoveService { .. } => ActionKind::Remove,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Action::CreateNetwork(n) => format!("create network {}", n.name),
            Action::RemoveNetwork { name, recreate: true, .. } => {
                format!("remove network {name} to recreate it (subnet or internal changed; Docker cannot update a network)")
            }
            Action::RemoveNetwork { name, .. } => format!("remove network {name}"),
            Action::CreateService(s) => format!("create service {} ({})", s.name, mode_text(s.mode, s.replicas)),
            Action::UpdateService { desired, reason, .. } => format!("update service {} ({reason})", desired.name),
            Action::RemoveService { name, recreate: Some(Recreate::Network), .. } => {
                format!("remove service {name} from a network being recreated; it is created again on the new network")
            }
            Action::RemoveService { name, recreate: Some(Recreate::Mode), .. } => {
                format!("remove service {name} to create it again in its new mode (Swarm cannot change a service's mode)")
            }
            Action::RemoveService { name, .. } => format!("remove service {name}"),
        }
    }
}

fn mode_text(mode: Mode, r: Option<u64>) -> String {
    match (mode, r) {
        (Mode::ReplicatedJob, Some(n)) => format!("job, {n} completions"),
        (Mode::GlobalJob, _) => "job on every node".into(),
        _ => replicas_text(r),
    }
}

/// What a change of a service's spec does to its tasks, where the service says what its tasks
/// ran ([`labels::TASK_HASH`]).
fn change_of(have: &ObservedService, want: &DesiredService) -> String {
    let scale = (have.replicas != want.replicas).then(|| format!("{} → {}", replicas_text(have.replicas), replicas_text(want.replicas)));
    match (have.labels.get(labels::TASK_HASH), want.labels.get(labels::TASK_HASH)) {
        // Any update of a job runs it again.
        _ if want.mode.is_job() => "spec changed".to_string(),
        (Some(had), Some(wants)) if had != wants => {
            let pace = match want.update.and_then(|u| u.parallelism) {
                None | Some(1) => "one at a time".to_string(),
                Some(0) => "all at once".to_string(),
                Some(n) => format!("{n} at a time"),
            };
            let scale = scale.map(|s| format!(", {s}")).unwrap_or_default();
            format!("its tasks' spec changed{scale}: Swarm replaces its tasks, {pace}")
        }
        (Some(had), Some(wants)) if had == wants => scale.unwrap_or_else(|| "service settings changed (labels, update policy): no task restarts".to_string()),
        _ => "spec changed".to_string(),
    }
}

fn replicas_text(r: Option<u64>) -> String {
    match r {
        Some(n) => format!("{n} replicas"),
        None => "global".into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Create,
    Update,
    Remove,
}

/// What keeps labd from creating (or changing) one of the lab's objects until a person acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub kind: ObjectKind,
    pub name: String,
    pub cause: ConflictCause,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum ConflictCause {
    /// An object of that name exists that swarmlab does not own (or another lab owns).
    Name { owner: Option<String> },
    /// The network's subnet overlaps another network's on the swarm (not this lab's), so Swarm
    /// cannot allocate it: Engine 20.10 creates such a network without a subnet.
    SubnetOverlap { subnet: String, network: String, network_subnet: String, owner: Option<String> },
    /// The network exists without the subnet asked for: Swarm could not allocate it (two labs
    /// created with one subnet at once, or a reason labd cannot see). Swarm allocates it by
    /// itself once the subnet is free (measured: the other lab removed); labd recreates it only
    /// once its definition changes, never in a loop.
    SubnetUnallocated { subnet: String },
}

/// The kinds of Swarm object a lab owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Network,
    Service,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::Network => "network",
            ObjectKind::Service => "service",
        })
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, name) = (self.kind, &self.name);
        match &self.cause {
            ConflictCause::Name { owner: Some(o) } => write!(f, "{kind} {name} already exists and belongs to lab {o}"),
            ConflictCause::Name { owner: None } => write!(f, "{kind} {name} already exists and is not managed by swarmlab; remove or rename it"),
            ConflictCause::SubnetOverlap { subnet, network, network_subnet, owner } => {
                let whose = owner.as_ref().map_or_else(|| format!("network {network}"), |o| format!("lab {o}'s network {network}"));
                write!(f, "{kind} {name}'s subnet {subnet} overlaps {whose} ({network_subnet}), so Swarm cannot allocate it; change `subnet` or remove {network}")
            }
            ConflictCause::SubnetUnallocated { subnet } => {
                write!(f, "{kind} {name} exists without a subnet: Swarm could not allocate {subnet} yet (`docker network inspect {name}` shows no IPAM config; Swarm tries again as other networks go); change `subnet`, or remove the network for labd to create it again")
            }
        }
    }
}

/// The first of `others` whose subnet overlaps `subnet`, with that subnet.
fn overlapping<'o>(subnet: &str, mut others: impl Iterator<Item = &'o ObservedNetwork>) -> Option<(&'o ObservedNetwork, String)> {
    let wanted = Cidr::parse(subnet, 0..=32).ok()?;
    others.find_map(|n| {
        let theirs = n.subnet.as_deref()?;
        Cidr::parse(theirs, 0..=32).ok().filter(|c| c.overlaps(wanted)).map(|_| (n, theirs.to_string()))
    })
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub conflicts: Vec<Conflict>,
    /// Drift repairs among the actions: objects changed or removed behind labd's back.
    pub drift: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// The actions turning `observed` into `desired`. Networks are created before services and
/// removed after them; nothing without this lab's labels is updated or removed.
pub fn diff(desired: &DesiredLab, observed: &Observed) -> Plan {
    let lab = desired.lab.as_str();
    let mut plan = Plan::default();
    let mut creates_net = Vec::new();
    let mut removes_net = Vec::new();
    // Networks not created yet because the lab's own network they replace holds their subnet.
    let mut replacing: Vec<String> = Vec::new();

    for want in &desired.networks {
        let have = observed.networks.iter().find(|n| n.name == want.name);
        if let Some(have) = have.filter(|h| !labels::owned_by(lab, &h.labels)) {
            let owner = labels::owner(&have.labels).map(str::to_string);
            plan.conflicts.push(Conflict { kind: ObjectKind::Network, name: have.name.clone(), cause: ConflictCause::Name { owner } });
            continue;
        }
        // To be created (or is, without its subnet): not where it cannot be allocated.
        let unallocated = have.is_some_and(|h| h.subnet.is_none());
        let others = observed.neighbours.iter().chain(observed.networks.iter().filter(|n| n.name != want.name));
        let overlap = want.subnet.as_deref().filter(|_| have.is_none() || unallocated).and_then(|s| Some((s, overlapping(s, others)?)));
        if let Some((subnet, (other, network_subnet))) = overlap {
            let owner = labels::owner(&other.labels).map(str::to_string);
            let dropped = desired.networks.iter().all(|w| w.name != other.name);
            if owner.as_deref() == Some(lab) && dropped {
                // The lab's own network it replaces (renamed, its subnet kept): the services
                // wanting it leave the old one as for a recreate (the old one cannot go while
                // they are on it), and it is created once the old one is gone.
                replacing.push(want.name.clone());
            } else {
                let cause = ConflictCause::SubnetOverlap { subnet: subnet.to_string(), network: other.name.clone(), network_subnet, owner };
                plan.conflicts.push(Conflict { kind: ObjectKind::Network, name: want.name.clone(), cause });
            }
            continue;
        }
        match have {
            None => creates_net.push(Action::CreateNetwork(want.clone())),
            // Created, but Swarm gave it no subnet: recreating it as it is would only repeat that
            // (Engine 20.10 answered a create with an overlapping subnet so, and labd recreated it
            // 92 times in 8 s). Once its definition changes, it is made anew.
            Some(have) if unallocated && want.subnet.is_some() && have.labels.get(labels::SPEC_HASH) == Some(&want.hash) => {
                let cause = ConflictCause::SubnetUnallocated { subnet: want.subnet.clone().unwrap_or_default() };
                plan.conflicts.push(Conflict { kind: ObjectKind::Network, name: want.name.clone(), cause });
            }
            Some(have) if have.needs_recreate(want) => {
                // Settings changed: remove now; the next pass creates it anew once it is gone.
                removes_net.push(Action::RemoveNetwork { id: have.id.clone(), name: have.name.clone(), recreate: true });
            }
            Some(_) => {}
        }
    }
    let recreated: Vec<&str> = removes_net
        .iter()
        .filter_map(|a| if let Action::RemoveNetwork { name, .. } = a { Some(name.as_str()) } else { None })
        .chain(replacing.iter().map(String::as_str))
        .collect();

    // A service never joins a network that is not ours: it waits until the clash is resolved.
    let blocked: Vec<String> = plan.conflicts.iter().map(|c| c.name.clone()).collect();
    let mut service_actions = Vec::new();
    for want in &desired.services {
        let waits_for_network = want.network_targets().any(|t| blocked.iter().any(|b| b == t));
        let uses_recreated = want.network_targets().any(|t| recreated.contains(&t));
        match observed.services.iter().find(|s| s.name == want.name) {
            Some(have) if !labels::owned_by(lab, &have.labels) => plan.conflicts.push(Conflict {
                kind: ObjectKind::Service,
                name: have.name.clone(),
                cause: ConflictCause::Name { owner: labels::owner(&have.labels).map(str::to_string) },
            }),
            _ if waits_for_network => {}
            // Its network is still listed with the old settings: Swarm has removed it, but a
            // node lists its copy until the old tasks' containers are gone (their stop grace
            // period), and Swarm cannot attach a service to it. Created once the new one is.
            None if uses_recreated => {}
            // A job whose run waits (for the lab to be Ready, or the schedule's start).
            _ if desired.waiting_jobs.contains_key(&want.name) => {}
            // Its dependencies do not run yet (`dependsOn`).
            None if desired.held.contains_key(&want.name) => {}
            None => service_actions.push(Action::CreateService(want.clone())),
            Some(have) => {
                if uses_recreated {
                    // Detach: remove the service; it comes back on the recreated network.
                    service_actions.push(Action::RemoveService { id: have.id.clone(), name: have.name.clone(), recreate: Some(Recreate::Network) });
                    continue;
                }
                if have.mode != want.mode {
                    service_actions.push(Action::RemoveService { id: have.id.clone(), name: have.name.clone(), recreate: Some(Recreate::Mode) });
                    continue;
                }
                let reason = if have.labels.get(labels::SPEC_HASH) != Some(&want.hash) {
                    Some(match (want.labels.contains_key(labels::STOPPED), have.labels.contains_key(labels::STOPPED)) {
                        (true, false) => "the schedule ended (`end: stop`): stopping its tasks".to_string(),
                        (false, true) => "the schedule runs again: starting its tasks".to_string(),
                        _ => change_of(have, want),
                    })
                } else if have.replicas != want.replicas {
                    plan.drift += 1;
                    Some(format!("{} → {} (changed outside labd)", replicas_text(have.replicas), replicas_text(want.replicas)))
                } else if have.image != want.image {
                    plan.drift += 1;
                    Some(format!("image {} → {} (changed outside labd)", have.image, want.image))
                } else if !want.mode.is_job() && have.applied_settings.is_some_and(|was| was != have.settings_digest) {
                    // Not a job's: any update of a job runs it again.
                    plan.drift += 1;
                    Some("its settings changed outside labd (a `docker service update` by hand?): put back".to_string())
                } else {
                    None
                };
                if let Some(reason) = reason {
                    service_actions.push(Action::UpdateService { id: have.id.clone(), version: have.version, force_update: have.force_update, desired: want.clone(), reason });
                }
            }
        }
    }

    let mut removes_svc = Vec::new();
    for have in observed.services.iter().filter(|s| labels::owned_by(lab, &s.labels)) {
        if desired.services.iter().all(|w| w.name != have.name) {
            removes_svc.push(Action::RemoveService { id: have.id.clone(), name: have.name.clone(), recreate: None });
        }
    }
    for have in observed.networks.iter().filter(|n| labels::owned_by(lab, &n.labels)) {
        if desired.networks.iter().all(|w| w.name != have.name) {
            removes_net.push(Action::RemoveNetwork { id: have.id.clone(), name: have.name.clone(), recreate: false });
        }
    }

    plan.actions.extend(creates_net);
    plan.actions.extend(service_actions);
    plan.actions.extend(removes_svc);
    plan.actions.extend(removes_net);
    plan
}

/// Everything of the lab goes: services first, then networks.
pub fn teardown(lab: &str, observed: &Observed) -> Plan {
    let empty = DesiredLab { lab: lab.to_string(), ..Default::default() };
    diff(&empty, observed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(subnet: &str) -> DesiredLab {
        let text = format!("apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: r}}\nspec:\n  networks: {{lan: {{subnet: {subnet}}}}}\n  services: {{a: {{image: labbox:latest, networks: [lan]}}, b: {{image: labbox:latest}}}}\n");
        let lab = crate::spec::parse_file(std::path::Path::new("r.yaml"), &text).remove(0).result.expect("valid");
        crate::plan::desired_lab(&lab.lab)
    }

    fn observe(d: &DesiredLab, subnet: &str) -> Observed {
        Observed {
            services: d.services.iter().map(|s| ObservedService { id: s.name.clone(), name: s.name.clone(), labels: s.labels.clone(), replicas: s.replicas, mode: s.mode, image: s.image.clone(), ..Default::default() }).collect(),
            networks: d.networks.iter().map(|n| ObservedNetwork { id: n.name.clone(), name: n.name.clone(), labels: n.labels.clone(), subnet: Some(subnet.to_string()), internal: false }).collect(),
            ..Default::default()
        }
    }

    fn kinds(plan: &Plan) -> Vec<String> {
        plan.actions.iter().map(Action::describe).collect()
    }

    #[test]
    fn a_service_waits_for_its_recreated_network_while_the_old_one_is_still_listed() {
        let old = lab("10.1.0.0/24");
        let new = lab("10.2.0.0/24");
        let mut observed = observe(&old, "10.1.0.0/24");
        let first = diff(&new, &observed);
        assert_eq!(kinds(&first), ["remove service r_a from a network being recreated; it is created again on the new network", "remove network r_lan to recreate it (subnet or internal changed; Docker cannot update a network)"]);
        // Swarm removed both, but the node still lists its copy of the network until the old
        // task's container is gone: the service must not be created against it (Swarm answers
        // "network not found"), and nothing else of the lab is touched meanwhile.
        observed.services.retain(|s| s.name != "r_a");
        let lingering = diff(&new, &observed);
        assert_eq!(kinds(&lingering), ["remove network r_lan to recreate it (subnet or internal changed; Docker cannot update a network)"]);
        observed.networks.retain(|n| n.name != "r_lan");
        let gone = diff(&new, &observed);
        assert!(matches!(gone.actions.as_slice(), [Action::CreateNetwork(n), Action::CreateService(s)] if n.subnet.as_deref() == Some("10.2.0.0/24") && s.name == "r_a"), "{:?}", kinds(&gone));
    }

    #[test]
    fn a_service_s_update_says_whether_swarm_replaces_its_tasks() {
        let parse = |services: &str| {
            let text = format!("apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: r}}\nspec:\n  defaults: {{image: labbox:latest}}\n  services:\n{services}");
            crate::plan::desired_lab(&crate::spec::parse_file(std::path::Path::new("r.yaml"), &text).remove(0).result.expect("valid").lab)
        };
        let running = observe(&parse("    a: {replicas: 3, env: {V: '1'}}\n"), "");
        let reason = |services: &str| kinds(&diff(&parse(services), &running));
        assert_eq!(reason("    a: {replicas: 3, env: {V: '2'}}\n"), ["update service r_a (its tasks' spec changed: Swarm replaces its tasks, one at a time)"]);
        assert_eq!(reason("    a: {replicas: 5, env: {V: '2'}, update: {parallelism: 0}}\n"), ["update service r_a (its tasks' spec changed, 3 replicas → 5 replicas: Swarm replaces its tasks, all at once)"]);
        assert_eq!(reason("    a: {replicas: 5, env: {V: '1'}, update: {parallelism: 2}}\n"), ["update service r_a (3 replicas → 5 replicas)"]);
        assert_eq!(reason("    a: {replicas: 3, env: {V: '1'}, labels: {team: x}}\n"), ["update service r_a (service settings changed (labels, update policy): no task restarts)"]);
        // A service an older labd made carries no task hash: no guess.
        let mut older = running.clone();
        older.services[0].labels.remove(labels::TASK_HASH);
        assert_eq!(kinds(&diff(&parse("    a: {replicas: 3, env: {V: '2'}}\n"), &older)), ["update service r_a (spec changed)"]);
    }

    #[test]
    fn an_update_keeps_the_restarts_forced_by_hand() {
        let want = lab("10.1.0.0/24");
        let mut observed = observe(&want, "10.1.0.0/24");
        // `docker service update --force` twice, then a scale by hand: put back, the restarts
        // kept (their counter dropped would restart every task once more).
        let b = observed.services.iter_mut().find(|s| s.name == "r_b").expect("r_b");
        (b.force_update, b.replicas) = (2, Some(3));
        let plan = diff(&want, &observed);
        assert!(matches!(plan.actions.as_slice(), [Action::UpdateService { force_update: 2, desired, .. }] if desired.name == "r_b"), "{:?}", plan.actions);
        let after = passes(&want, &observed);
        assert_eq!(after.len(), 1);
    }

    #[test]
    fn the_passes_of_a_subnet_change_remove_then_create_again() {
        let (old, new) = (lab("10.1.0.0/24"), lab("10.2.0.0/24"));
        let passes: Vec<Vec<String>> = passes(&new, &observe(&old, "10.1.0.0/24")).iter().map(kinds).collect();
        assert_eq!(passes, [
            vec!["remove service r_a from a network being recreated; it is created again on the new network", "remove network r_lan to recreate it (subnet or internal changed; Docker cannot update a network)"],
            vec!["create network r_lan", "create service r_a (1 replicas)"],
        ]);
        assert!(super::passes(&new, &observe(&new, "10.2.0.0/24")).is_empty(), "nothing to do, no pass");
    }

    #[test]
    fn a_subnet_that_overlaps_another_network_is_not_created_and_one_swarm_left_unallocated_is_not_recreated_in_a_loop() {
        let want = lab("10.79.0.0/24");
        let foreign = ObservedNetwork { id: "f".into(), name: "foreign_net".into(), subnet: Some("10.79.0.0/16".into()), ..Default::default() };
        let empty = Observed { neighbours: vec![foreign.clone()], ..Default::default() };
        let plan = diff(&want, &empty);
        assert_eq!(kinds(&plan), ["create network r_default", "create service r_b (1 replicas)"], "neither the network nor the service on it");
        assert_eq!(plan.conflicts.iter().map(ToString::to_string).collect::<Vec<_>>(), ["network r_lan's subnet 10.79.0.0/24 overlaps network foreign_net (10.79.0.0/16), so Swarm cannot allocate it; change `subnet` or remove foreign_net"]);
        // Another lab's: named as such.
        let owned = [(labels::LAB, "other"), (labels::MANAGED_BY, labels::MANAGED_BY_VALUE)].map(|(k, v)| (k.to_string(), v.to_string()));
        let theirs = ObservedNetwork { labels: HashMap::from(owned), ..foreign.clone() };
        let plan = diff(&want, &Observed { neighbours: vec![theirs], ..Default::default() });
        assert!(plan.conflicts[0].to_string().contains("overlaps lab other's network foreign_net"), "{}", plan.conflicts[0]);
        // Named like the lab's objects but not its own: the same.
        let prefixed = ObservedNetwork { name: "r_foreign".into(), ..foreign.clone() };
        assert!(diff(&want, &Observed { networks: vec![prefixed], ..Default::default() }).conflicts[0].to_string().contains("overlaps network r_foreign"));
        // The lab's own network renamed, its subnet kept: the new one waits for the old to go,
        // nothing fails, and nothing is created on it meanwhile.
        let mut renamed = observe(&want, "10.79.0.0/24");
        renamed.networks.iter_mut().filter(|n| n.name == "r_lan").for_each(|n| n.name = "r_old".into());
        renamed.networks.iter_mut().filter(|n| n.name == "r_default").for_each(|n| n.subnet = Some("10.0.3.0/24".into()));
        let plan = diff(&want, &renamed);
        assert!(plan.conflicts.is_empty(), "{:?}", plan.conflicts);
        assert_eq!(kinds(&plan), ["remove service r_a from a network being recreated; it is created again on the new network", "remove network r_old"]);
        renamed.services.retain(|s| s.name != "r_a");
        assert_eq!(kinds(&diff(&want, &renamed)), ["remove network r_old"], "r_a waits for the new network");
        renamed.networks.retain(|n| n.name != "r_old");
        assert_eq!(kinds(&diff(&want, &renamed)), ["create network r_lan", "create service r_a (1 replicas)"]);
        // No overlap: created.
        let apart = ObservedNetwork { subnet: Some("10.80.0.0/24".into()), ..foreign.clone() };
        assert!(kinds(&diff(&want, &Observed { neighbours: vec![apart], ..Default::default() })).contains(&"create network r_lan".to_string()));

        // Created anyway (another create raced it, or a reason labd cannot see): Engine 20.10
        // keeps it without a subnet. Left alone and said, never removed and created again.
        let mut unallocated = observe(&want, "unused");
        unallocated.networks.iter_mut().filter(|n| n.name == "r_lan").for_each(|n| n.subnet = None);
        let plan = diff(&want, &unallocated);
        assert!(plan.actions.is_empty(), "{:?}", kinds(&plan));
        assert!(plan.conflicts[0].to_string().starts_with("network r_lan exists without a subnet: Swarm could not allocate 10.79.0.0/24"), "{}", plan.conflicts[0]);
        unallocated.neighbours = vec![foreign];
        assert!(matches!(&diff(&want, &unallocated).conflicts[0].cause, ConflictCause::SubnetOverlap { network, .. } if network == "foreign_net"), "the overlap said when it is seen");
        // Its subnet changed in the file: made anew.
        unallocated.neighbours.clear();
        let moved = lab("10.81.0.0/24");
        assert_eq!(kinds(&diff(&moved, &unallocated)), ["remove service r_a from a network being recreated; it is created again on the new network", "remove network r_lan to recreate it (subnet or internal changed; Docker cannot update a network)"]);
    }
}
