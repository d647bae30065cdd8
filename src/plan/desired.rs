//! From a valid lab to the Swarm networks and services that realise it. Pure: the same lab
//! always gives the same objects with the same hashes.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec,
    EndpointSpecModeEnum, Ipam, IpamConfig, Limit, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::labels;
use crate::spec::{EffectiveConditions, EndpointMode, Lab, Mode, Service};

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
    pub spec: ServiceSpec,
    /// Replicas for replicated services; `None` for global ones.
    pub replicas: Option<u64>,
    pub image: String,
    pub hash: String,
    /// Effective conditions per network short name (not part of the Swarm spec: changing them
    /// must never restart a task, so the node agent applies them in place).
    pub shaping: BTreeMap<String, EffectiveConditions>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DesiredLab {
    pub lab: String,
    pub networks: Vec<DesiredNetwork>,
    pub services: Vec<DesiredService>,
}

pub fn object_name(lab: &str, member: &str) -> String {
    format!("{lab}_{member}")
}

fn hash_of<T: Serialize>(value: &T) -> String {
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
    DesiredLab { lab: name.clone(), networks, services }
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
    let attachment_view: Vec<(String, Vec<String>)> =
        attachments.iter().map(|a| (a.name().to_string(), a.aliases().to_vec())).collect();
    unshaped.networks = None;
    let hash = hash_of(&(&unshaped, &attachment_view, &lab.metadata.labels));

    let labels = owned_labels(lab, short, &svc.labels, &hash);

    let endpoint_mode = svc.endpoint_mode.unwrap_or_default();
    let publish_mode = match endpoint_mode {
        // Ingress publishing needs a VIP; with dnsrr Swarm only allows host-mode ports.
        EndpointMode::Dnsrr => EndpointPortConfigPublishModeEnum::HOST,
        EndpointMode::Vip => EndpointPortConfigPublishModeEnum::INGRESS,
    };
    let ports: Vec<EndpointPortConfig> = svc
        .ports
        .iter()
        .filter_map(|p| p.parse())
        .map(|p| EndpointPortConfig {
            protocol: Some(if p.udp { EndpointPortConfigProtocolEnum::UDP } else { EndpointPortConfigProtocolEnum::TCP }),
            target_port: Some(p.target.into()),
            published_port: p.published.map(Into::into),
            publish_mode: Some(publish_mode),
            ..Default::default()
        })
        .collect();

    let networks: Vec<NetworkAttachmentConfig> = attachments
        .iter()
        .map(|a| {
            let mut aliases = vec![short.to_string()];
            aliases.extend(a.aliases().iter().cloned());
            NetworkAttachmentConfig {
                target: Some(object_name(lab_name, a.name())),
                aliases: Some(aliases),
                ..Default::default()
            }
        })
        .collect();

    let mode = svc.mode.unwrap_or_default();
    let replicas = match mode {
        Mode::Replicated => Some(u64::from(svc.replicas.unwrap_or(1))),
        Mode::Global => None,
    };
    let image = svc.image.clone().unwrap_or_default();
    let resources = svc.resources.as_ref().map(|r| TaskSpecResources {
        limits: Some(Limit {
            nano_cpus: r.cpus.map(|c| (c * 1e9).round() as i64),
            memory_bytes: r.memory.map(|m| m.bytes as i64),
            ..Default::default()
        }),
        ..Default::default()
    });
    let placement = svc.placement.as_ref().map(|p| TaskSpecPlacement {
        constraints: (!p.constraints.is_empty()).then(|| p.constraints.clone()),
        max_replicas: p.max_replicas_per_node.map(|m| m as i64),
        ..Default::default()
    });
    let container = TaskSpecContainerSpec {
        image: Some(image.clone()),
        labels: Some(base_labels(lab, short)),
        // Exec form replaces the image's entrypoint too, as `docker service create IMAGE CMD`.
        command: svc.command.as_ref().map(|c| c.to_args()),
        hostname: svc.hostname.clone(),
        env: (!svc.env.is_empty()).then(|| svc.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        init: svc.init,
        stop_grace_period: svc.stop_grace_period.map(|d| (d.micros * 1000) as i64),
        capability_add: (!svc.cap_add.is_empty()).then(|| svc.cap_add.clone()),
        ..Default::default()
    };
    let spec = ServiceSpec {
        name: Some(object_name(lab_name, short)),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources,
            placement,
            networks: Some(networks),
            ..Default::default()
        }),
        mode: Some(match mode {
            Mode::Replicated => ServiceSpecMode { replicated: Some(ServiceSpecModeReplicated { replicas: replicas.map(|r| r as i64) }), ..Default::default() },
            Mode::Global => ServiceSpecMode { global: Some(HashMap::new()), ..Default::default() },
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(match endpoint_mode {
                EndpointMode::Dnsrr => EndpointSpecModeEnum::DNSRR,
                EndpointMode::Vip => EndpointSpecModeEnum::VIP,
            }),
            ports: (!ports.is_empty()).then_some(ports),
        }),
        ..Default::default()
    };
    DesiredService { name: object_name(lab_name, short), short_name: short.to_string(), spec, replicas, image, hash, shaping }
}

impl DesiredService {
    /// Swarm names of the networks the service joins.
    pub fn network_targets(&self) -> impl Iterator<Item = &str> {
        self.spec
            .task_template
            .iter()
            .flat_map(|t| t.networks.iter().flatten())
            .filter_map(|n| n.target.as_deref())
    }
}

impl DesiredNetwork {
    pub fn ipam(&self) -> Option<Ipam> {
        self.subnet.as_ref().map(|s| Ipam {
            config: Some(vec![IpamConfig { subnet: Some(s.clone()), ..Default::default() }]),
            ..Default::default()
        })
    }
}
