//! From a valid lab to the Swarm networks and services that realise it. Pure: the same lab
//! always gives the same objects with the same hashes.

use std::collections::{BTreeMap, HashMap};

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::labels;
use crate::spec::links::{Destination, Directed, Toward};
use crate::spec::{Command, ConfigMount, MountKind, VolumeMount, EffectiveConditions, EndpointMode, InForce, Lab, Mode, Port, Service, CONFIG_DEFAULT_MODE};

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredNetwork {
    /// `<lab>_<name>`
    pub name: String,
    pub short_name: String,
    pub subnet: Option<String>,
    pub internal: bool,
    pub labels: HashMap<String, String>,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredService {
    /// `<lab>_<name>`
    pub name: String,
    pub short_name: String,
    /// Replicas for replicated services (the completions a replicated job needs); `None` for
    /// global ones.
    pub replicas: Option<u64>,
    /// Kept running, or run to completion (a job); Swarm cannot change it in place.
    pub mode: Mode,
    /// A replicated job's tasks at once (`None`: all of them).
    pub max_concurrent: Option<u64>,
    pub image: String,
    pub hash: String,
    /// The service's labels, ownership labels included.
    pub labels: HashMap<String, String>,
    /// Labels of its containers (ownership only: the agent finds tasks by them).
    pub container_labels: HashMap<String, String>,
    /// Exec form; replaces the image's entrypoint too, as `docker service create IMAGE CMD`.
    pub command: Option<Vec<String>>,
    /// Arguments to the image's entrypoint.
    pub args: Option<Vec<String>>,
    pub hostname: Option<String>,
    /// `KEY=value`
    pub env: Vec<String>,
    pub init: Option<bool>,
    pub tty: Option<bool>,
    pub stdin_open: Option<bool>,
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<String>,
    /// The log driver (the daemon's default when `None`) and its options.
    pub logging: Option<(Option<String>, BTreeMap<String, String>)>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub health: Option<Health>,
    pub sysctls: HashMap<String, String>,
    /// Restart delay, attempts and their window, when the lab sets any (Swarm's defaults else).
    pub restart: Option<Restart>,
    /// How a change reaches its tasks, when the lab says (Swarm's defaults else).
    pub update: Option<Update>,
    /// name → (soft, hard)
    pub ulimits: BTreeMap<String, (i64, i64)>,
    /// Files mounted in every task, each a Swarm config of the service's own.
    pub files: Vec<DesiredFile>,
    /// Volumes, host paths and tmpfs mounted in every task.
    pub mounts: Vec<DesiredMount>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Services of the lab (short names) it is created after (see [`super::order`]).
    pub depends_on: Vec<String>,
    pub read_only: bool,
    /// `/etc/hosts` lines, `IP hostname` (Swarm's format).
    pub hosts: Vec<String>,
    pub dns: Option<crate::spec::Dns>,
    pub limits: Option<CpuMemory>,
    /// What Swarm sets aside for each task on its node, and places it by.
    pub reservations: Option<CpuMemory>,
    pub constraints: Vec<String>,
    pub max_replicas_per_node: Option<u64>,
    /// Node labels Swarm spreads the tasks over, outermost first.
    pub spread_over: Vec<String>,
    pub networks: Vec<DesiredAttachment>,
    pub endpoint_mode: EndpointMode,
    pub ports: Vec<Port>,
    /// Effective conditions per network short name (not part of the Swarm spec: changing them
    /// must never restart a task, so the node agent applies them in place).
    pub shaping: BTreeMap<String, EffectiveConditions>,
}

/// A health check in Docker's terms: `test` is `["CMD", …]`, `["CMD-SHELL", line]`, `["NONE"]`
/// (off), or empty (the image's own); `None` timings keep the image's or Docker's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Health {
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
}

impl Health {
    /// Whether a check runs at all (not `disable: true`; an empty test is the image's own).
    pub fn runs(&self) -> bool {
        self.test.first().map(String::as_str) != Some("NONE")
    }

    fn of(check: &crate::spec::Healthcheck) -> Health {
        let test = match (&check.test, check.disable) {
            (_, Some(true)) => vec!["NONE".to_string()],
            (Some(Command::Exec(args)), _) => std::iter::once("CMD".to_string()).chain(args.iter().cloned()).collect(),
            (Some(Command::Shell(line)), _) => vec!["CMD-SHELL".to_string(), line.clone()],
            (None, _) => Vec::new(),
        };
        let std = crate::spec::units::Duration::as_std;
        Health { test, interval: check.interval.map(std), timeout: check.timeout.map(std), retries: check.retries, start_period: check.start_period.map(std) }
    }
}

/// A file in the service's tasks. Swarm cannot change a config's content, so the config's
/// name carries a hash of it: new content is a new config, and the service's update rolls its
/// tasks onto it (the old one is removed once the service no longer names it).
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredFile {
    /// `<lab>_<service>-<hash of service, name and content>` (Docker takes 64 characters: a long
    /// `<lab>_<service>` is cut; the labels say whose it is).
    pub config_name: String,
    /// Its name in `spec.configs`.
    pub source: String,
    pub target: String,
    pub uid: String,
    pub gid: String,
    pub mode: u32,
    pub content: String,
    /// Ownership (the service's [`labels::MEMBER`]) and [`labels::FILE`].
    pub labels: HashMap<String, String>,
}

/// A mount of the service's tasks, in Docker's terms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesiredMount {
    pub kind: MountKind,
    /// A volume's Docker name (`<lab>_<name>`, with `-{{.Task.Slot}}` for one per task: Swarm
    /// fills the template in), a bind's node path; none for a tmpfs.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    pub tmpfs_bytes: Option<u64>,
    /// On a volume: ownership, so `docker volume ls --filter label=io.swarmlab.lab=<lab>` finds
    /// them (Docker creates them with the task; they outlive the lab, as with `docker stack rm`).
    #[serde(skip)]
    pub labels: HashMap<String, String>,
}

impl DesiredMount {
    fn of(lab: &Lab, service: &str, replicated: bool, mount: &VolumeMount) -> Option<DesiredMount> {
        let entry = mount.entry()?;
        let source = match entry.kind {
            MountKind::Volume => entry.source.as_ref().map(|name| {
                let per_task = lab.spec.volumes.get(name).and_then(|v| v.per_task).unwrap_or(false);
                let base = object_name(&lab.metadata.name, name);
                if per_task && replicated { format!("{base}-{{{{.Task.Slot}}}}") } else { base }
            }),
            MountKind::Bind => entry.source.clone(),
            MountKind::Tmpfs => None,
        };
        let labels = if entry.kind == MountKind::Volume { base_labels(lab, entry.source.as_deref().unwrap_or(service)) } else { HashMap::new() };
        Some(DesiredMount { kind: entry.kind, source, target: entry.target, read_only: entry.read_only.unwrap_or(false), tmpfs_bytes: entry.size.map(|m| m.bytes), labels })
    }
}

/// Docker's longest config name.
const CONFIG_NAME_MAX: usize = 64;

impl DesiredFile {
    fn of(lab: &Lab, service: &str, mount: &ConfigMount) -> DesiredFile {
        let source = mount.source().to_string();
        let content = lab.spec.configs.get(&source).map(|c| c.content.clone()).unwrap_or_default();
        // The service is in the hash too: names cut short stay apart.
        let hash = hex::encode(&Sha256::digest(format!("{service}\0{source}\0{content}"))[..6]);
        let owner = object_name(&lab.metadata.name, service);
        let prefix: String = owner.chars().take(CONFIG_NAME_MAX - 1 - hash.len()).collect();
        let (uid, gid, mode) = match mount {
            ConfigMount::Entry(e) => (e.uid.as_ref().map(ToString::to_string), e.gid.as_ref().map(ToString::to_string), e.mode.as_ref().and_then(|m| m.bits())),
            ConfigMount::Name(_) => (None, None, None),
        };
        let mut labels = base_labels(lab, service);
        labels.insert(labels::FILE.into(), source.clone());
        DesiredFile {
            config_name: format!("{prefix}-{hash}"),
            target: mount.target(),
            source,
            uid: uid.unwrap_or_else(|| "0".into()),
            gid: gid.unwrap_or_else(|| "0".into()),
            mode: mode.unwrap_or(CONFIG_DEFAULT_MODE),
            content,
            labels,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Restart {
    pub delay: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub window: Option<Duration>,
}

/// A service's rollout policy (see [`crate::spec::UpdatePolicy`]); `None` fields keep Swarm's.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Update {
    pub parallelism: Option<u32>,
    pub delay: Option<Duration>,
    pub order: Option<crate::spec::UpdateOrder>,
    pub failure_action: Option<crate::spec::UpdateFailureAction>,
    pub monitor: Option<Duration>,
    /// A fraction in [0, 1].
    pub max_failure_ratio: Option<f64>,
}

/// CPU and memory as Swarm counts them: a limit, or a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuMemory {
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
}

impl CpuMemory {
    fn of(cpus: Option<f64>, memory: Option<crate::spec::units::Memory>) -> Self {
        CpuMemory { nano_cpus: cpus.map(|c| (c * 1e9).round() as i64), memory_bytes: memory.map(|m| m.bytes as i64) }
    }
}

/// A network the service joins: its Swarm name and the names it answers to there.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredAttachment {
    pub target: String,
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DesiredLab {
    pub lab: String,
    pub networks: Vec<DesiredNetwork>,
    pub services: Vec<DesiredService>,
    /// Per-pair conditions, one entry per direction.
    pub links: Vec<Directed>,
    /// Jobs (by full name) whose run waits (see [`super::jobs`]): not created or updated yet.
    pub waiting_jobs: BTreeMap<String, super::jobs::JobWait>,
    /// Services (by full name) not created yet: the dependencies (short names) they wait to
    /// run (see [`super::order`]).
    pub held: BTreeMap<String, Vec<String>>,
}

pub fn object_name(lab: &str, member: &str) -> String {
    format!("{lab}_{member}")
}

pub(super) fn hash_of<T: Serialize>(value: &T) -> String {
    hex::encode(&Sha256::digest(serde_json::to_vec(value).unwrap_or_default())[..8])
}

fn base_labels(lab: &Lab, member: &str) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = lab.metadata.labels.clone().into_iter().collect();
    out.insert(labels::STACK_NAMESPACE.into(), lab.metadata.name.clone());
    out.insert(labels::LAB.into(), lab.metadata.name.clone());
    out.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
    out.insert(labels::MEMBER.into(), member.into());
    out
}

/// The lab's and the member's own labels, then the ownership labels, which nothing overrides.
fn owned_labels(lab: &Lab, member: &str, own: &std::collections::BTreeMap<String, String>, hash: &str) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = own.clone().into_iter().collect();
    out.extend(base_labels(lab, member));
    out.insert(labels::SPEC_HASH.into(), hash.to_string());
    out
}

pub fn desired_lab(lab: &Lab) -> DesiredLab {
    let name = &lab.metadata.name;
    let networks = lab
        .network_names()
        .into_iter()
        .map(|short| {
            let net = lab.spec.networks.get(&short).cloned().unwrap_or_default();
            let hash = hash_of(&(&net.subnet, net.internal, &lab.metadata.labels, &net.labels));
            let labels = owned_labels(lab, &short, &net.labels, &hash);
            DesiredNetwork {
                name: object_name(name, &short),
                short_name: short,
                subnet: net.subnet,
                internal: net.internal.unwrap_or(false),
                labels,
                hash,
            }
        })
        .collect();
    let services = lab.resolved_services().map(|(short, svc)| desired_service(lab, short, &svc)).collect();
    let links = lab.spec.links.iter().flat_map(|l| l.directions()).collect();
    DesiredLab { lab: name.clone(), networks, services, links, waiting_jobs: BTreeMap::new(), held: BTreeMap::new() }
}

/// The service as Swarm should run it. Conditions are stripped before hashing: they are applied
/// by the node agent and must not cause a service update.
fn desired_service(lab: &Lab, short: &str, svc: &Service) -> DesiredService {
    let lab_name = &lab.metadata.name;
    let attachments = svc.attachments();
    let shaping = attachments
        .iter()
        .map(|a| (a.name().to_string(), lab.effective_conditions(svc, a)))
        .filter(|(_, c)| !c.is_empty())
        .collect();

    let mut unshaped = svc.clone();
    unshaped.conditions = None;
    // When it is created, not what it runs: an edit of it updates nothing.
    unshaped.depends_on = Vec::new();
    let attachment_view: Vec<(String, Vec<String>)> =
        attachments.iter().map(|a| (a.name().to_string(), a.aliases().to_vec())).collect();
    unshaped.networks = None;
    let files: Vec<DesiredFile> = svc.configs.iter().flatten().map(|m| DesiredFile::of(lab, short, m)).collect();
    let mode = svc.mode.unwrap_or_default();
    let replicated = mode.is_replicated();
    let mounts: Vec<DesiredMount> = svc.volumes.iter().flatten().filter_map(|m| DesiredMount::of(lab, short, replicated, m)).collect();
    // The files' contents are in the hash through their configs' names, a volume's `perTask`
    // through its source; a lab with neither hashes as before they existed, so upgrading labd
    // updates no service.
    let names: Vec<&str> = files.iter().map(|f| f.config_name.as_str()).collect();
    let hash = if files.is_empty() && mounts.is_empty() {
        hash_of(&(&unshaped, &attachment_view, &lab.metadata.labels))
    } else {
        hash_of(&(&unshaped, &attachment_view, &lab.metadata.labels, &names, &mounts))
    };

    // What its tasks run: a change of anything else (replicas, the service's own labels, the
    // update policy) replaces no task.
    let task_view = Service { replicas: None, max_concurrent: None, labels: Default::default(), update: None, ..unshaped.clone() };
    let task_hash = hash_of(&(&task_view, &attachment_view, &lab.metadata.labels, &names, &mounts));
    let mut labels = owned_labels(lab, short, &svc.labels, &hash);
    labels.insert(labels::TASK_HASH.into(), task_hash);

    let networks = attachments
        .iter()
        .map(|a| {
            let mut aliases = vec![short.to_string()];
            aliases.extend(a.aliases().iter().cloned());
            DesiredAttachment { target: object_name(lab_name, a.name()), aliases }
        })
        .collect();
    let replicas = mode.is_replicated().then(|| u64::from(svc.replicas.unwrap_or(1)));
    let placement = svc.placement.clone().unwrap_or_default();
    DesiredService {
        name: object_name(lab_name, short),
        short_name: short.to_string(),
        replicas,
        mode,
        max_concurrent: svc.max_concurrent.filter(|_| mode == Mode::ReplicatedJob).map(u64::from),
        image: svc.image.clone().unwrap_or_default(),
        hash,
        labels,
        container_labels: base_labels(lab, short),
        command: svc.command.as_ref().map(|c| c.to_args()),
        args: svc.args.clone(),
        hostname: svc.hostname.clone(),
        env: svc.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        init: svc.init,
        tty: svc.tty,
        stdin_open: svc.stdin_open,
        stop_grace_period: svc.stop_grace_period.map(|d| Duration::from_micros(d.micros)),
        stop_signal: svc.stop_signal.clone(),
        logging: svc.logging.as_ref().map(|l| (l.driver.clone(), l.options.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())),
        user: svc.user.clone(),
        working_dir: svc.working_dir.clone(),
        health: svc.healthcheck.as_ref().map(Health::of),
        sysctls: svc.sysctls.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
        restart: svc.restart_policy.map(|r| Restart {
            delay: r.delay.map(crate::spec::units::Duration::as_std),
            max_attempts: r.max_attempts,
            window: r.window.map(crate::spec::units::Duration::as_std),
        }),
        update: svc.update.map(|u| Update {
            parallelism: u.parallelism,
            delay: u.delay.map(crate::spec::units::Duration::as_std),
            order: u.order,
            failure_action: u.failure_action,
            monitor: u.monitor.map(crate::spec::units::Duration::as_std),
            max_failure_ratio: u.max_failure_ratio.map(|p| p.fraction()),
        }),
        ulimits: svc.ulimits.iter().map(|(name, u)| (name.clone(), u.soft_hard())).collect(),
        files,
        mounts,
        cap_add: svc.cap_add.clone(),
        cap_drop: svc.cap_drop.clone(),
        depends_on: svc.depends_on.clone(),
        read_only: svc.read_only.unwrap_or(false),
        hosts: svc.extra_hosts.iter().map(|(host, ip)| format!("{ip} {host}")).collect(),
        dns: svc.dns.clone(),
        limits: svc.resources.as_ref().filter(|r| r.cpus.is_some() || r.memory.is_some()).map(|r| CpuMemory::of(r.cpus, r.memory)),
        reservations: svc.resources.as_ref().and_then(|r| r.reservations.as_ref()).map(|r| CpuMemory::of(r.cpus, r.memory)),
        constraints: placement.constraints,
        max_replicas_per_node: placement.max_replicas_per_node,
        spread_over: placement.preferences.into_iter().map(|p| p.spread).collect(),
        networks,
        endpoint_mode: svc.endpoint_mode.unwrap_or_default(),
        ports: svc.ports.iter().filter_map(|p| p.parse()).collect(),
        shaping,
    }
}

impl DesiredService {
    /// Swarm names of the networks the service joins.
    pub fn network_targets(&self) -> impl Iterator<Item = &str> {
        self.networks.iter().map(|n| n.target.as_str())
    }
}

/// The lab with every task stopped (a schedule's `end: stop`): replicated services at 0
/// replicas, global ones constrained to nodes labelled `io.swarmlab.stopped=true` (the global
/// orchestrator places no task on a node that does not match; Swarm cannot scale a global
/// service). Services and networks stay, so logs and `docker service ps` outlive the run. A
/// new spec hash makes the change a spec change, not drift, and the way back one too.
/// `clock` (a [`labels::SCHEDULE_CLOCK`] value) goes on every service, in the hash too, so
/// the services always carry the clock that stopped them.
pub fn stopped(mut desired: DesiredLab, clock: &str) -> DesiredLab {
    for svc in &mut desired.services {
        match svc.replicas {
            Some(_) => svc.replicas = Some(0),
            None => svc.constraints.push(format!("node.labels.{}==true", labels::STOPPED)),
        }
        svc.hash = hash_of(&(&svc.hash, labels::STOPPED, clock));
        svc.labels.insert(labels::SPEC_HASH.into(), svc.hash.clone());
        svc.labels.insert(labels::STOPPED.into(), "true".into());
        svc.labels.insert(labels::SCHEDULE_CLOCK.into(), clock.into());
    }
    desired
}

/// Conditions per service short name, then per network short name: what the agents apply.
pub type Shaping = BTreeMap<String, BTreeMap<String, EffectiveConditions>>;

/// Service Swarm name → the IPv4 addresses of its tasks on one network, sorted.
pub type TaskAddresses = BTreeMap<String, Vec<std::net::Ipv4Addr>>;

/// The conditions in force on every attachment: the static ones, under what the schedule puts
/// in force (if it runs), with `down` turned into what the backends apply, and the addresses a
/// partition cuts it off from (`addresses`: per network Swarm name, where the tasks are).
/// Attachments with nothing in force are left out.
pub fn shaping_in_force(desired: &DesiredLab, schedule: Option<&InForce>, addresses: &BTreeMap<String, TaskAddresses>) -> Shaping {
    let prefix = format!("{}_", desired.lab);
    let mut out = Shaping::new();
    for svc in &desired.services {
        for attachment in &svc.networks {
            let net = attachment.target.strip_prefix(&prefix).unwrap_or(&attachment.target);
            let fixed = svc.shaping.get(net).cloned().unwrap_or_default();
            let scheduled = schedule.and_then(|s| s.for_attachment(&svc.short_name, net));
            let mut conditions = scheduled.map_or(fixed.clone(), |over| over.or(fixed)).normalized();
            let on_network = addresses.get(&attachment.target);
            conditions.toward = desired
                .links
                .iter()
                .filter(|l| l.from == svc.short_name)
                .filter_map(|link| {
                    let mut addresses: Vec<String> = match &link.to {
                        Destination::Range(range) => vec![range.to_string()],
                        Destination::Service(other) => {
                            on_network.and_then(|by| by.get(&object_name(&desired.lab, other))).into_iter().flatten().map(|ip| format!("{ip}/32")).collect()
                        }
                    };
                    // As text, the order agents read them back in.
                    addresses.sort();
                    // The link's fields over everything else in force on the attachment's egress
                    // (ingress and partitions are the attachment's, not a destination's).
                    let over = EffectiveConditions { toward: vec![], blocked: vec![], ingress: None, ..conditions.clone() };
                    // A schedule step on the link over the link's own fields.
                    let stepped = schedule.and_then(|s| s.for_link(&svc.short_name, &link.to.to_string())).unwrap_or_default();
                    // No task of the destination on this network (yet): nothing to classify.
                    (!addresses.is_empty()).then(|| Toward { to: link.to.to_string(), addresses, conditions: stepped.or(link.conditions.clone()).or(over).normalized() })
                })
                .collect();
            if let Some(in_force) = schedule.filter(|s| !s.partition.is_empty()) {
                let on_network = addresses.get(&attachment.target).into_iter().flatten();
                let others = on_network.filter(|(other, _)| in_force.separates(&svc.short_name, other.strip_prefix(&prefix).unwrap_or(other)));
                let mut blocked: Vec<String> = others.flat_map(|(_, ips)| ips.iter().map(|ip| format!("{ip}/32"))).collect();
                blocked.sort();
                blocked.dedup();
                conditions.blocked = blocked;
            }
            if !conditions.is_empty() {
                out.entry(svc.short_name.clone()).or_default().insert(net.to_string(), conditions);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_cuts_each_attachment_off_from_the_other_groups_tasks_on_its_network() {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: p}\nspec:\n  defaults: {image: labbox:latest, networks: [lan]}\n  networks: {lan: {conditions: {delay: 5ms}}}\n  services: {a: {}, b: {}, c: {}}\n  schedule:\n    steps:\n    - at: 0s\n      partition: [[a], [b]]\n";
        let lab = crate::spec::parse_file(std::path::Path::new("p.yaml"), text).remove(0).result.expect("valid");
        let desired = desired_lab(&lab.lab);
        let in_force = lab.lab.spec.schedule.as_ref().unwrap().at(std::time::Duration::from_secs(1));
        let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
        let on_lan: TaskAddresses = [("p_a".to_string(), vec![ip("10.0.0.2")]), ("p_b".to_string(), vec![ip("10.0.0.3"), ip("10.0.0.4")]), ("p_c".to_string(), vec![ip("10.0.0.5")])].into();
        let addresses = BTreeMap::from([("p_lan".to_string(), on_lan)]);
        let shaping = shaping_in_force(&desired, Some(&in_force), &addresses);
        assert_eq!(shaping["a"]["lan"].blocked, ["10.0.0.3/32", "10.0.0.4/32"]);
        assert_eq!(shaping["b"]["lan"].blocked, ["10.0.0.2/32"]);
        assert!(shaping["c"]["lan"].blocked.is_empty(), "c is in no group");
        assert_eq!(shaping["a"]["lan"].delay, shaping["c"]["lan"].delay, "the static conditions stay");
        let healed = shaping_in_force(&desired, None, &addresses);
        assert!(healed.values().flat_map(|n| n.values()).all(|c| c.blocked.is_empty()));
    }

    #[test]
    fn links_give_the_sender_conditions_toward_the_destinations_current_addresses() {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: p}\nspec:\n  defaults: {image: labbox:latest, networks: [lan]}\n  networks: {lan: {conditions: {delay: 5ms, loss: 1%}}}\n  services: {a: {}, b: {}, c: {}}\n  links:\n  - {from: a, to: b, symmetric: true, conditions: {delay: 50ms}}\n  - {from: a, to: 203.0.113.0/24, conditions: {rate: 1mbit}}\n";
        let lab = crate::spec::parse_file(std::path::Path::new("p.yaml"), text).remove(0).result.expect("valid");
        let desired = desired_lab(&lab.lab);
        let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
        let on_lan: TaskAddresses = [("p_a".to_string(), vec![ip("10.0.0.2")]), ("p_b".to_string(), vec![ip("10.0.0.9"), ip("10.0.0.10")])].into();
        let shaping = shaping_in_force(&desired, None, &BTreeMap::from([("p_lan".to_string(), on_lan)]));
        let a = &shaping["a"]["lan"];
        assert_eq!(a.toward.len(), 2);
        assert_eq!(a.toward[0].addresses, ["10.0.0.10/32", "10.0.0.9/32"], "sorted as text, as agents read them back");
        assert_eq!(a.toward[0].conditions.delay, Some(crate::spec::units::Duration::from_millis(50)), "the link's delay");
        assert_eq!(a.toward[0].conditions.loss, a.loss, "the network's loss under the link");
        assert_eq!(a.toward[1].addresses, ["203.0.113.0/24"]);
        assert_eq!(shaping["b"]["lan"].toward[0].addresses, ["10.0.0.2/32"], "symmetric: b toward a");
        assert!(a.toward.iter().all(|t| t.conditions.ingress.is_none() && t.conditions.toward.is_empty()));
        assert!(shaping["c"]["lan"].toward.is_empty());
        // No task of b yet: nothing to classify toward it.
        let none = shaping_in_force(&desired, None, &BTreeMap::new());
        assert_eq!(none["a"]["lan"].toward.len(), 1, "only the range");
    }

    #[test]
    fn a_schedule_step_on_a_link_changes_that_destination_only() {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: p}\nspec:\n  defaults: {image: labbox:latest, networks: [lan]}\n  networks: {lan: {conditions: {delay: 5ms}}}\n  services: {a: {}, b: {}}\n  links:\n  - {from: a, to: b, symmetric: true, conditions: {delay: 50ms}}\n  schedule:\n    steps:\n    - {at: 10s, service: a, to: b, conditions: {delay: 80ms, loss: 5%}}\n";
        let lab = crate::spec::parse_file(std::path::Path::new("p.yaml"), text).remove(0).result.expect("valid");
        let desired = desired_lab(&lab.lab);
        let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
        let on_lan: TaskAddresses = [("p_a".to_string(), vec![ip("10.0.0.2")]), ("p_b".to_string(), vec![ip("10.0.0.3")])].into();
        let addresses = BTreeMap::from([("p_lan".to_string(), on_lan)]);
        let schedule = lab.lab.spec.schedule.as_ref().unwrap();
        let before = shaping_in_force(&desired, Some(&schedule.at(std::time::Duration::from_secs(1))), &addresses);
        let after = shaping_in_force(&desired, Some(&schedule.at(std::time::Duration::from_secs(11))), &addresses);
        let ms = |c: &EffectiveConditions| c.delay.map(|d| d.micros / 1000);
        assert_eq!(ms(&before["a"]["lan"].toward[0].conditions), Some(50));
        assert_eq!(ms(&after["a"]["lan"].toward[0].conditions), Some(80));
        assert!(after["a"]["lan"].toward[0].conditions.loss.is_some());
        assert_eq!(ms(&after["a"]["lan"]), Some(5), "the rest of a's traffic keeps the network's delay");
        assert_eq!(ms(&after["b"]["lan"].toward[0].conditions), Some(50), "the way back is another direction");
    }

    #[test]
    fn a_stopped_lab_runs_no_task_and_going_there_and_back_are_spec_changes_not_drift() {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: p}\nspec:\n  defaults: {image: labbox:latest, networks: [lan]}\n  networks: {lan: {}}\n  services: {a: {replicas: 3}, g: {mode: global, placement: {constraints: [node.role==manager]}}}\n";
        let lab = crate::spec::parse_file(std::path::Path::new("p.yaml"), text).remove(0).result.expect("valid");
        let running = desired_lab(&lab.lab);
        let stopped = stopped(running.clone(), "r@2026-12-01T00:00:00Z");
        let (a, g) = (&stopped.services[0], &stopped.services[1]);
        assert_eq!(a.replicas, Some(0));
        assert_eq!((g.replicas, g.constraints.as_slice()), (None, ["node.role==manager".to_string(), "node.labels.io.swarmlab.stopped==true".to_string()].as_slice()));
        assert!(stopped.services.iter().zip(&running.services).all(|(s, r)| s.hash != r.hash && s.labels[labels::SPEC_HASH] == s.hash));
        assert!(stopped.services.iter().all(|s| s.labels[labels::SCHEDULE_CLOCK] == "r@2026-12-01T00:00:00Z"), "the clock that stopped them");
        assert_eq!(stopped.networks, running.networks, "networks stay");
        let observe = |d: &DesiredLab| crate::plan::Observed {
            services: d.services.iter().map(|s| crate::plan::ObservedService { id: s.name.clone(), name: s.name.clone(), labels: s.labels.clone(), replicas: s.replicas, mode: s.mode, image: s.image.clone(), ..Default::default() }).collect(),
            networks: d.networks.iter().map(|n| crate::plan::ObservedNetwork { id: n.name.clone(), name: n.name.clone(), labels: n.labels.clone(), ..Default::default() }).collect(),
            ..Default::default()
        };
        let reasons = |plan: crate::plan::Plan| -> Vec<String> {
            assert_eq!(plan.drift, 0);
            plan.actions.into_iter().map(|a| if let crate::plan::Action::UpdateService { reason, .. } = a { reason } else { panic!("{a:?}") }).collect()
        };
        let to_stop = reasons(crate::plan::diff(&stopped, &observe(&running)));
        assert_eq!(to_stop, ["the schedule ended (`end: stop`): stopping its tasks"; 2]);
        let back = reasons(crate::plan::diff(&running, &observe(&stopped)));
        assert_eq!(back, ["the schedule runs again: starting its tasks"; 2]);
        assert!(crate::plan::diff(&stopped, &observe(&stopped)).is_empty(), "stopped is a fixed point");
    }
}
