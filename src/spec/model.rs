//! The `Lab` resource (apiVersion `swarmlab/v1alpha1`) as Rust types. The JSON Schema in
//! `schemas/` is generated from these types, and the loader validates every document against
//! that schema before deserializing, so the types and the schema cannot disagree.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::presets::Preset;
use super::stochastic::{Correlation, DelayDistribution, LossModel};
use super::units::{Duration, Memory, Percent, Rate};

pub const API_VERSION: &str = "swarmlab/v1alpha1";
pub const KIND: &str = "Lab";
/// DNS label, as Kubernetes names: lowercase alphanumerics and '-', alphanumeric at both ends.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
pub const LAB_NAME_MAX: usize = 32;
/// `<lab>_<service>` must fit Swarm's 63-character service names.
pub const MEMBER_NAME_MAX: usize = 30;
/// The network a service joins when it lists none, as in Compose.
pub const DEFAULT_NETWORK: &str = "default";
/// Most tasks one service may ask for: far beyond a one-machine lab, far below what makes
/// Swarm's scheduler or labd's plan slow.
pub const MAX_REPLICAS: u32 = 10_000;
/// Label prefixes that mark ownership (ours and `docker stack`'s): a user label must not set
/// them, or labd would create objects it then does not recognise as its own.
pub const RESERVED_LABEL_PREFIXES: [&str; 2] = ["io.swarmlab.", "com.docker.stack."];

/// Top-level fields with this prefix are the user's own (anchors to merge from), not the lab's.
pub const EXTENSION_PREFIX: &str = "x-";

/// A network lab: overlay networks, services and the traffic conditions between them.
/// Top-level fields named `x-…` are ignored, as Compose's extension fields are: a place for
/// YAML anchors that `<<` merge keys reuse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Lab", extend("$id" = "https://swarmlab.dev/schemas/lab.v1alpha1.json", "patternProperties" = {"^x-": {}}))]
pub struct Lab {
    /// Always `swarmlab/v1alpha1`.
    #[schemars(extend("const" = API_VERSION))]
    pub api_version: String,
    /// Always `Lab`.
    #[schemars(extend("const" = KIND))]
    pub kind: String,
    pub metadata: Metadata,
    pub spec: LabSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The lab's name: a DNS label of at most 32 characters. It prefixes every Swarm object.
    #[schemars(regex(pattern = NAME_PATTERN), length(min = 1, max = LAB_NAME_MAX))]
    pub name: String,
    /// Copied onto every Swarm object of the lab.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabSpec {
    /// Fields every service inherits unless it sets them itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Service>,
    /// Overlay networks by short name; Swarm names them `<lab>_<name>`.
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
    /// Services by short name; Swarm names them `<lab>_<name>`.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// Stop reconciling this lab (as Flux's `suspend`): labd observes and reports it, and
    /// changes nothing until this is removed; committed with the lab, unlike `labctl suspend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// How long the lab may wait for the same things (tasks to run, shaping, a network) before
    /// it is Degraded with `ProgressDeadlineExceeded`, as a Deployment's
    /// `progressDeadlineSeconds`: any change in what it waits for is progress. Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<Duration>,
    /// Condition changes over time (an experiment): steps, ramps, flapping, repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<super::schedule::Schedule>,
    /// Conditions between pairs: from a service toward another service or an address range.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<super::links::Link>,
    /// Files given to tasks, by name (as Compose's top-level `configs`): a service lists the
    /// ones it mounts under its own `configs`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, ConfigFile>,
    /// Named volumes services mount (as Compose's top-level `volumes`): Docker's local volumes
    /// `<lab>_<name>` on the nodes that run the tasks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeDef>,
}

/// A named volume.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeDef {
    /// One volume per task (`<lab>_<name>-<slot>`: a task restarted in its slot finds its own
    /// data again, as a StatefulSet's claim) rather than one per node shared by the tasks there
    /// (Compose's). A global service's tasks have one per node either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_task: Option<bool>,
}

/// What a service mounts: `SOURCE:TARGET[:ro]` (a named volume, or an absolute host path for
/// a bind mount), or an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum VolumeMount {
    Short(String),
    Entry(VolumeMountEntry),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A named volume from `spec.volumes`.
    Volume,
    /// A path of the node that runs the task (absolute).
    Bind,
    /// Memory of the task, empty at each start.
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMountEntry {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// The volume's name in `spec.volumes`, or the node's path for a bind; none for tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Absolute path in the task.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Largest size of a tmpfs, e.g. 64M (unbounded when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Memory>,
}

/// Whether the source of a short volume form is a path (a bind), as Compose tells them apart.
pub fn is_host_path(source: &str) -> bool {
    source.starts_with(['/', '.', '~']) || source.contains('/')
}

impl VolumeMount {
    /// The entry this mount means; a short form that is not `SOURCE:TARGET[:ro|:rw]` is `None`
    /// (validation says why).
    pub fn entry(&self) -> Option<VolumeMountEntry> {
        match self {
            VolumeMount::Entry(e) => Some(e.clone()),
            VolumeMount::Short(text) => {
                let parts: Vec<&str> = text.split(':').collect();
                let (source, target, read_only) = match parts.as_slice() {
                    [source, target] => (*source, *target, None),
                    [source, target, "ro"] => (*source, *target, Some(true)),
                    [source, target, "rw"] => (*source, *target, None),
                    _ => return None,
                };
                let kind = if is_host_path(source) { MountKind::Bind } else { MountKind::Volume };
                Some(VolumeMountEntry { kind, source: Some(source.to_string()), target: target.to_string(), read_only, size: None })
            }
        }
    }
}

/// Most bytes of one file: Swarm keeps each as a config of less than 1,024,000 bytes.
pub const CONFIG_MAX_BYTES: usize = 1_023_999;
/// A config's name: as Docker's config names (a letter or digit, then also `.`, `_`, `-`).
pub const CONFIG_NAME_PATTERN: &str = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$";
/// Permissions of a mounted file when the service gives none (Docker's and Compose's).
pub const CONFIG_DEFAULT_MODE: u32 = 0o444;

/// A file's content, written in the lab. Swarm keeps it as a config (read-only in the task,
/// the same on every node); a change of content rolls the services that mount it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    /// The file's text (1 byte to about 1000 KB; a YAML block scalar `|` keeps its lines).
    pub content: String,
}

/// A file a service mounts: a config's name (at `/<name>`, as Compose), or an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ConfigMount {
    Name(String),
    Entry(ConfigMountEntry),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMountEntry {
    /// The config's name in `spec.configs`.
    pub source: String,
    /// Absolute path of the file in the task; `/<source>` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Owner's user id (numeric), 0 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<EnvValue>,
    /// Owner's group id (numeric), 0 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<EnvValue>,
    /// Permissions, as `chmod` reads them: `0440` (a number with a leading zero is octal, as in
    /// Compose) or `"0440"`. 0444 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
}

/// File permissions: a number (octal when written with a leading zero, as in Compose: `0440`),
/// or octal digits as text (`"0440"`, what `labctl import` writes: a number would be written
/// back in decimal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FileMode {
    Number(u32),
    Octal(#[schemars(regex(pattern = r"^0?[0-7]{1,3}$"))] String),
}

impl FileMode {
    /// The permission bits, if they are some (at most 0777).
    pub fn bits(&self) -> Option<u32> {
        let bits = match self {
            FileMode::Number(n) => *n,
            FileMode::Octal(text) => u32::from_str_radix(text, 8).ok()?,
        };
        (bits <= 0o777).then_some(bits)
    }
}

impl ConfigMount {
    pub fn source(&self) -> &str {
        match self {
            ConfigMount::Name(n) => n,
            ConfigMount::Entry(e) => &e.source,
        }
    }

    /// Where the file is in the task (Compose's rule: `/<source>` unless given).
    pub fn target(&self) -> String {
        match self {
            ConfigMount::Entry(ConfigMountEntry { target: Some(t), .. }) => t.clone(),
            _ => format!("/{}", self.source()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// IPv4 subnet in CIDR notation, e.g. 10.42.0.0/24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$"))]
    pub subnet: Option<String>,
    /// No route outside the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<bool>,
    /// Egress shaping of every attachment to this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Conditions>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Traffic conditions, applied on the egress of a task's interface.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conditions {
    /// A named profile; the fields below override its values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<Percent>,
    /// No traffic at all: every packet leaving the attachment is dropped (loss 100%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<bool>,
    /// Loss with memory (bursts) instead of `loss`; a layer sets one or the other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_model: Option<LossModel>,
    /// How much each draw of delay, loss, duplicate, corrupt and reorder leans on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Correlation>,
    /// The shape of the delay `jitter` wide around `delay`; uniform when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_distribution: Option<DelayDistribution>,
    /// Most packets held at once (netem's queue `limit`, 1000 by default); beyond it, drops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub limit: Option<u32>,
    /// Seed of the random draws, for runs that repeat exactly (userspace backend; netem's
    /// kernel has no seed before Linux 6.7, so there it is reported as not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Conditions on the traffic arriving at the task (everything above shapes what leaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<super::ingress::Ingress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `replicas` tasks, kept running.
    #[default]
    Replicated,
    /// One task per node, kept running.
    Global,
    /// A run to completion (Swarm's job): `replicas` tasks must exit 0, `maxConcurrent` at a
    /// time; one that fails is started again. Runs when created and again when its definition
    /// changes; a workload client, a benchmark, a loader of data.
    ReplicatedJob,
    /// A run to completion of one task per node.
    GlobalJob,
}

impl Mode {
    /// A run to completion rather than tasks kept running.
    pub fn is_job(self) -> bool {
        matches!(self, Mode::ReplicatedJob | Mode::GlobalJob)
    }

    /// A count of tasks (`replicas`) rather than one per node.
    pub fn is_replicated(self) -> bool {
        matches!(self, Mode::Replicated | Mode::ReplicatedJob)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// Every replica has its own DNS record; needs no IPVS.
    #[default]
    Dnsrr,
    /// One virtual IP load-balanced by IPVS.
    Vip,
}

/// A command as a list (exec form), or one string run by `/bin/sh -c` (shell form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

impl Command {
    pub fn to_args(&self) -> Vec<String> {
        match self {
            Command::Exec(args) => args.clone(),
            Command::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
        }
    }
}

/// An environment value: YAML numbers and booleans are taken as their text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl std::fmt::Display for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvValue::Text(s) => f.write_str(s),
            EnvValue::Number(n) => write!(f, "{n}"),
            EnvValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A network a service joins: its name, or an entry with aliases and conditions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum NetworkAttachment {
    Name(String),
    // Boxed: an entry (conditions and all) is ~400 bytes, a name 24, and most attachments are names.
    Entry(Box<NetworkEntry>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkEntry {
    pub name: String,
    /// Extra DNS names on this network, besides the service's short name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Conditions for this service on this network; the highest precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Conditions>,
}

impl NetworkAttachment {
    pub fn name(&self) -> &str {
        match self {
            NetworkAttachment::Name(n) => n,
            NetworkAttachment::Entry(e) => &e.name,
        }
    }
    pub fn aliases(&self) -> &[String] {
        match self {
            NetworkAttachment::Name(_) => &[],
            NetworkAttachment::Entry(e) => &e.aliases,
        }
    }
    pub fn conditions(&self) -> Option<&Conditions> {
        match self {
            NetworkAttachment::Name(_) => None,
            NetworkAttachment::Entry(e) => e.conditions.as_ref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPU limit in cores, e.g. 0.5 (Docker's smallest is 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 1024))]
    pub cpus: Option<f64>,
    /// Memory limit, e.g. 150M.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// What Swarm sets aside for each task on its node (Compose's `deploy.resources.
    /// reservations`): a task goes only to a node with that much CPU and memory not reserved
    /// by other tasks yet, so replicas spread by what they need rather than pile onto one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Reservations>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reservations {
    /// CPU cores reserved, e.g. 0.25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 1024))]
    pub cpus: Option<f64>,
    /// Memory reserved, e.g. 64M.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// Swarm placement constraints, e.g. `node.role==worker`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// At most this many tasks of the service on one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_REPLICAS))]
    pub max_replicas_per_node: Option<u64>,
    /// Swarm spreads the tasks evenly over the values of a node label, each preference within
    /// the previous one's groups (Compose's `placement.preferences`): `[{spread: node.labels.zone}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PlacementPreference>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementPreference {
    /// A node label or attribute, e.g. `node.labels.zone`.
    #[schemars(length(min = 1))]
    pub spread: String,
}

/// A service. Every field is optional here so the same type serves `spec.defaults`; an image
/// is required once defaults are applied.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Image reference; must exist on the nodes (swarmlab never pulls from a registry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Number of tasks; default 1, 0 allowed. Not with `mode: global`. For a
    /// `replicated-job`, the tasks that must complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_REPLICAS))]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Services of the lab this one is created after: once each runs all its replicas (healthy,
    /// where it has a health check), as Compose's `depends_on` with `service_healthy`, which
    /// Swarm and `docker stack deploy` ignore. Only its creation waits; not in `spec.defaults`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// A `replicated-job`'s tasks running at once (all `replicas` when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub max_concurrent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
    /// Arguments to the image's own entrypoint (what Compose's `command` sets); `command`
    /// replaces the entrypoint instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Networks to join; a service that lists none joins the lab's `default` network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<NetworkAttachment>>,
    /// Conditions for every network of this service; overrides the networks' conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Conditions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Linux capabilities to add, e.g. NET_ADMIN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Linux capabilities to drop, e.g. NET_RAW (Compose's `cap_drop`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// The task's root filesystem read-only (Compose's `read_only`): what it writes goes to its
    /// volumes and tmpfs mounts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Hostname, with Swarm templates such as `sensor-{{.Task.Slot}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Lines added to every task's `/etc/hosts`: a hostname and the IP address it resolves to
    /// (Compose's `extra_hosts`), e.g. `broker.example: 10.42.0.5`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_hosts: BTreeMap<String, String>,
    /// The tasks' resolver settings (Compose's `dns`, `dns_search`, `dns_opt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_mode: Option<EndpointMode>,
    /// Published ports `PUBLISHED:TARGET[/tcp|/udp]` (host mode with dnsrr, ingress with vip).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Run an init as PID 1 so SIGTERM stops the task at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Give each task a terminal (Compose's `tty`): an image whose command is a shell keeps
    /// running instead of exiting at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    /// Keep each task's standard input open (Compose's `stdin_open`), for a command that
    /// reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_open: Option<bool>,
    /// Time between SIGTERM and SIGKILL; Swarm's default is 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<Duration>,
    /// The signal that asks a task to stop (`SIGINT`, `SIGUSR1`…); the image's, else SIGTERM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(SIG)?[A-Z][A-Z0-9+-]*$|^[0-9]{1,2}$"))]
    pub stop_signal: Option<String>,
    /// The user the command runs as: `uid`, `uid:gid`, or a name the image knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub user: Option<String>,
    /// The command's working directory (an absolute path); the image's when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub working_dir: Option<String>,
    /// Kernel settings of each task's own namespaces, e.g. `net.ipv4.tcp_congestion_control:
    /// reno` (as Compose's `sysctls`): only namespaced ones, `net.*` and the IPC ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, EnvValue>,
    /// How Swarm restarts a task whose container ended (Compose's `deploy.restart_policy`,
    /// without `condition`: a lab's tasks are meant to run, so Swarm always restarts them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// How a change of the service reaches its running tasks (Compose's
    /// `deploy.update_config`): Swarm's defaults, one task at a time and the old one stopped
    /// first, when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdatePolicy>,
    /// Where the tasks' output goes (Compose's `logging`): a Docker log driver and its
    /// options, such as `json-file` with `max-size: 10m` so a lab left running for days
    /// cannot fill its nodes' disks. The node's daemon default when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Resource limits of each task's processes (as Compose's `ulimits`): `nofile: 65536`
    /// (soft and hard), or `{soft, hard}`; merged with `spec.defaults`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// A check Swarm runs in every task: a task counts as running (and the lab as Ready) only
    /// once it passes, and one that keeps failing is replaced. As Compose's `healthcheck`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Files from `spec.configs` to mount in every task (as Compose's service `configs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<Vec<ConfigMount>>,
    /// Volumes, host paths and tmpfs mounted in every task (as Compose's service `volumes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<VolumeMount>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A log driver and its options, as Compose's `logging` and `docker service create
/// --log-driver --log-opt` take them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logging {
    /// `json-file`, `local`, `journald`, `syslog`, `none`…; the daemon's default when left out.
    /// `labctl logs` reads `json-file`, `local` and `journald`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub driver: Option<String>,
    /// The driver's options: `max-size: 10m`, `max-file: 3`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, EnvValue>,
}

/// A task's resolver settings, as Swarm's `DNSConfig`. On the lab's networks Docker's own
/// resolver still answers for the lab's services, and asks these servers for other names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dns {
    /// IP addresses of name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Domains searched for a name without dots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options, as `resolv.conf` takes them (`ndots:2`, `timeout:1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// When Swarm starts a task again after its container ended.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartPolicy {
    /// Time between the end and the new start; Swarm's default is 5s. `0s` for a fault
    /// experiment whose killed node should come back at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Restarts within `window` before Swarm gives up on the task (the lab then says Degraded
    /// with the task's last error); unlimited when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_attempts: Option<u32>,
    /// The time over which `maxAttempts` counts; unbounded when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// How Swarm rolls a service's change out over its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePolicy {
    /// Tasks replaced at once; `0` replaces them all at once. Swarm's default is 1: each task
    /// of a service kept running then takes ~3-4 s (Docker waits 2 s after taking a task off
    /// its networks before it stops it), so a change to 50 replicas takes minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_REPLICAS))]
    pub parallelism: Option<u32>,
    /// Time between one batch running and the next one's start (default 0s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// `stop-first` (default: a slot never runs two tasks) or `start-first` (the new task
    /// runs before the old one stops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<UpdateOrder>,
    /// What Swarm does when a new task fails within `monitor`: `pause` (default: the rest keep
    /// the previous spec until the lab changes again) or `continue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<UpdateFailureAction>,
    /// How long a new task must run before it counts as a success (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Duration>,
    /// The share of the service's tasks that may fail in the update before `failureAction`
    /// applies (default 0%: the first failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failure_ratio: Option<Percent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

/// No `rollback`: Swarm would put the previous spec back, which the lab's file does not say;
/// labd would apply the file again, and the two would take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpdateFailureAction {
    Pause,
    Continue,
}

/// The limits `ulimit` names (`setrlimit`'s resources), as Docker takes them.
pub const ULIMIT_NAMES: [&str; 15] = ["core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"];

/// A resource limit: one number for both, or the two.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Ulimit {
    Both(#[schemars(range(min = -1))] i64),
    Pair(UlimitPair),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UlimitPair {
    #[schemars(range(min = -1))]
    pub soft: i64,
    #[schemars(range(min = -1))]
    pub hard: i64,
}

impl Ulimit {
    /// (soft, hard); -1 is unlimited.
    pub fn soft_hard(&self) -> (i64, i64) {
        match self {
            Ulimit::Both(n) => (*n, *n),
            Ulimit::Pair(p) => (p.soft, p.hard),
        }
    }
}

/// A health check (Docker's `HEALTHCHECK`). Fields left out keep the image's own values, or
/// Docker's defaults (30s, 30s, 3, 0s).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Healthcheck {
    /// The check, healthy when it exits 0: a list is run as is, a string by `/bin/sh -c`.
    /// Left out: the image's own check, with the timings set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Command>,
    /// Time between two checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// A check running longer than this has failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Failures in a row that make the task unhealthy (Swarm then replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub retries: Option<u32>,
    /// Failures within this time of the start do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<Duration>,
    /// `true`: no health check at all, not even the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable: Option<bool>,
}

/// `PUBLISHED:TARGET` or `TARGET`, with an optional `/tcp` or `/udp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct PortSpec(#[schemars(regex(pattern = r"^([0-9]{1,5}:)?[0-9]{1,5}(/(tcp|udp))?$"))] pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    pub published: Option<u16>,
    pub target: u16,
    pub udp: bool,
}

impl PortSpec {
    pub fn parse(&self) -> Option<Port> {
        let (ports, proto) = match self.0.split_once('/') {
            Some((p, proto)) => (p, proto),
            None => (self.0.as_str(), "tcp"),
        };
        let (published, target) = match ports.split_once(':') {
            Some((p, t)) => (Some(p.parse().ok()?), t.parse().ok()?),
            None => (None, ports.parse().ok()?),
        };
        Some(Port { published, target, udp: proto == "udp" })
    }
}
