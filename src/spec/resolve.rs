//! Turning what a user wrote into what applies: service defaults, and the effective traffic
//! conditions of one service on one network (the precedence rule of the brief lives here, and
//! only here).

use serde::{Deserialize, Serialize};

use super::model::{Conditions, Lab, NetworkAttachment, Service, DEFAULT_NETWORK};
use super::presets::Preset;
use super::stochastic::{Correlation, DelayDistribution, LossModel};
use super::units::{Duration, Percent, Rate};

/// Packets held at most when a lab sets no `limit` (netem's default, kept by both backends).
pub const DEFAULT_LIMIT: u32 = 1000;

/// The conditions that apply to one attachment after precedence is resolved.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveConditions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<Percent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<Percent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<Percent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reorder: Option<Percent>,
    /// Only in what labd computes: published to the agents as loss 100% ([`Self::normalized`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down: Option<bool>,
    /// Only in what labd computes: the addresses (`10.0.1.5/32`, sorted) this attachment may not
    /// send to, because a partition puts their tasks in another group. Every backend applies
    /// it the same way: DROP rules in the task's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_model: Option<LossModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Correlation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_distribution: Option<DelayDistribution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<super::ingress::Ingress>,
    /// Only in what labd computes: conditions toward the current addresses of a link's
    /// destination, instead of these (`spec.links`, resolved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub toward: Vec<super::links::Toward>,
}

impl EffectiveConditions {
    pub fn is_empty(&self) -> bool {
        *self == EffectiveConditions::default()
    }

    /// For people: `delay 20ms, loss 2%` (empty when nothing is set).
    pub fn summary(&self) -> String {
        let EffectiveConditions { delay, jitter, loss, rate, corrupt, duplicate, reorder, down, blocked, loss_model, correlation, delay_distribution, limit, seed, ingress, toward } =
            self;
        let mut parts = Vec::new();
        if *down == Some(true) {
            parts.push("down".to_string());
        }
        if !blocked.is_empty() {
            parts.push(format!("cut off from {}", blocked.join(" ")));
        }
        let fields: [(&str, Option<String>); 7] = [
            ("delay", delay.map(|v| v.to_string())),
            ("jitter", jitter.map(|v| v.to_string())),
            ("loss", loss.map(|v| v.to_string())),
            ("rate", rate.map(|v| v.to_string())),
            ("corrupt", corrupt.map(|v| v.to_string())),
            ("duplicate", duplicate.map(|v| v.to_string())),
            ("reorder", reorder.map(|v| v.to_string())),
        ];
        parts.extend(fields.into_iter().filter_map(|(name, v)| v.map(|v| format!("{name} {v}"))));
        match loss_model {
            Some(LossModel::GilbertElliott(ge)) => parts.push(format!(
                "loss gilbert-elliott p {} r {} h {} k {}",
                ge.p,
                ge.r,
                ge.delivered_in_bad(),
                ge.delivered_in_good()
            )),
            Some(LossModel::FourState(m)) => {
                let [p13, p31, p32, p23, p14] = m.probabilities();
                parts.push(format!("loss 4-state p13 {p13} p31 {p31} p32 {p32} p23 {p23} p14 {p14}"))
            }
            None => {}
        }
        if let Some(c) = correlation.filter(|c| *c != Correlation::default()) {
            parts.push(format!("correlation {}", c.summary()));
        }
        if let Some(d) = delay_distribution {
            parts.push(format!("{} delay", d.name()));
        }
        if let Some(l) = limit {
            parts.push(format!("limit {l}"));
        }
        if let Some(s) = seed {
            parts.push(format!("seed {s}"));
        }
        if let Some(i) = ingress.filter(|i| !i.is_empty()) {
            parts.push(format!("ingress {}", i.summary()));
        }
        parts.extend(toward.iter().map(|t| format!("toward {}: {}", t.to, t.conditions.summary())));
        parts.join(", ")
    }

    /// Each field from `self`, or from `lower` where `self` does not set it.
    pub fn or(self, lower: EffectiveConditions) -> EffectiveConditions {
        let EffectiveConditions { delay, jitter, loss, rate, corrupt, duplicate, reorder, down, blocked, loss_model, correlation, delay_distribution, limit, seed, ingress, toward } =
            self;
        // `loss` and `lossModel` are one choice: how packets are lost. The higher layer that
        // says anything about it decides it whole.
        let (loss, loss_model) = if loss.is_some() || loss_model.is_some() { (loss, loss_model) } else { (lower.loss, lower.loss_model) };
        EffectiveConditions {
            blocked: if blocked.is_empty() { lower.blocked } else { blocked },
            toward: if toward.is_empty() { lower.toward } else { toward },
            delay: delay.or(lower.delay),
            jitter: jitter.or(lower.jitter),
            loss,
            loss_model,
            correlation: merged(correlation, lower.correlation, Correlation::or),
            delay_distribution: delay_distribution.or(lower.delay_distribution),
            limit: limit.or(lower.limit),
            seed: seed.or(lower.seed),
            ingress: merged(ingress, lower.ingress, super::ingress::Ingress::or),
            rate: rate.or(lower.rate),
            corrupt: corrupt.or(lower.corrupt),
            duplicate: duplicate.or(lower.duplicate),
            reorder: reorder.or(lower.reorder),
            down: down.or(lower.down),
        }
    }

    /// What the agents apply: `down` becomes loss 100% (both backends drop every packet);
    /// `down: false` is just up.
    pub fn normalized(self) -> EffectiveConditions {
        match self.down {
            Some(true) => EffectiveConditions { loss: Some(Percent(100.0)), loss_model: None, down: None, ..self },
            _ => EffectiveConditions { down: None, ..self },
        }
        .canonical()
    }

    /// One way to write each meaning, as a kernel reads it back: defaults spelled out in the
    /// loss models, netem's defaults (limit 1000, uniform delay, 0% correlations) left out.
    pub fn canonical(self) -> EffectiveConditions {
        use super::stochastic::{FourState, GilbertElliott};
        let zero = |p: Option<Percent>| p.filter(|p| p.0 > 0.0);
        let correlation = self.correlation.map(|k| Correlation {
            delay: zero(k.delay),
            loss: zero(k.loss),
            duplicate: zero(k.duplicate),
            corrupt: zero(k.corrupt),
            reorder: zero(k.reorder),
        });
        let loss_model = self.loss_model.map(|m| match m {
            LossModel::GilbertElliott(ge) => {
                LossModel::GilbertElliott(GilbertElliott { h: Some(ge.delivered_in_bad()), k: Some(ge.delivered_in_good()), ..ge })
            }
            LossModel::FourState(f) => {
                let [p13, p31, p32, p23, p14] = f.probabilities();
                LossModel::FourState(FourState { p13, p31, p32: Some(p32), p23: Some(p23), p14: Some(p14) })
            }
        });
        EffectiveConditions {
            correlation: correlation.filter(|k| *k != Correlation::default()),
            loss_model,
            limit: self.limit.filter(|l| *l != DEFAULT_LIMIT),
            ingress: self.ingress.filter(|i| !i.is_empty()),
            delay_distribution: self.delay_distribution.filter(|d| *d != DelayDistribution::Uniform && self.jitter.is_some()),
            ..self
        }
    }

    /// Conditions from `(field, value)` pairs written as in a lab file, e.g.
    /// `[("delay", "50ms"), ("loss", "1%")]` (tests, benchmarks, tools).
    pub fn from_fields(fields: &[(&str, &str)]) -> Result<Self, String> {
        let mut c = EffectiveConditions::default();
        for (field, value) in fields {
            let bad = |e: super::units::UnitError| format!("{field}: {e}");
            match *field {
                "delay" => c.delay = Some(value.parse().map_err(bad)?),
                "jitter" => c.jitter = Some(value.parse().map_err(bad)?),
                "loss" => c.loss = Some(value.parse().map_err(bad)?),
                "rate" => c.rate = Some(value.parse().map_err(bad)?),
                "corrupt" => c.corrupt = Some(value.parse().map_err(bad)?),
                "duplicate" => c.duplicate = Some(value.parse().map_err(bad)?),
                "reorder" => c.reorder = Some(value.parse().map_err(bad)?),
                "down" => c.down = Some(value.parse().map_err(|_| format!("{field}: expected true or false"))?),
                "limit" => c.limit = Some(value.parse().map_err(|_| format!("{field}: expected a number of packets"))?),
                "seed" => c.seed = Some(value.parse().map_err(|_| format!("{field}: expected a number"))?),
                "delayDistribution" => {
                    c.delay_distribution = Some(serde_json::from_value(serde_json::Value::String(value.to_string())).map_err(|e| format!("{field}: {e}"))?)
                }
                other => return Err(format!("unknown condition field `{other}`")),
            }
        }
        Ok(c)
    }
}

/// Blocks of fields (correlation, ingress) merged field by field when both layers have one.
fn merged<T>(higher: Option<T>, lower: Option<T>, or: fn(T, T) -> T) -> Option<T> {
    match (higher, lower) {
        (Some(h), Some(l)) => Some(or(h, l)),
        (h, l) => h.or(l),
    }
}

/// Resolves condition layers given highest precedence first (the service's entry for the
/// network, the service's `conditions`, the network's `conditions`). Each field comes from the
/// highest layer that sets it; a field no layer sets comes from the preset of the highest
/// layer that names one. So the preset always has the lowest precedence.
pub fn resolve_conditions(layers: &[Option<&Conditions>]) -> EffectiveConditions {
    let layers: Vec<&Conditions> = layers.iter().flatten().copied().collect();
    let set = layers.iter().map(|c| c.fields()).fold(EffectiveConditions::default(), EffectiveConditions::or);
    let preset = layers.iter().find_map(|c| c.preset).map(Preset::values);
    let from_preset = preset.map(|p| EffectiveConditions { delay: Some(p.delay), jitter: p.jitter, rate: Some(p.rate), ..Default::default() });
    set.or(from_preset.unwrap_or_default())
}

impl Conditions {
    /// The fields this layer sets itself (its preset aside).
    pub fn fields(&self) -> EffectiveConditions {
        // Destructured, not accessed: a field added to one struct and not the other fails here.
        let Conditions { preset: _, delay, jitter, loss, rate, corrupt, duplicate, reorder, down, loss_model, correlation, delay_distribution, limit, seed, ingress } =
            self.clone();
        // `blocked` is labd's, from partitions: never written in a lab's conditions.
        EffectiveConditions {
            delay,
            jitter,
            loss,
            rate,
            corrupt,
            duplicate,
            reorder,
            down,
            blocked: vec![],
            loss_model,
            correlation,
            delay_distribution,
            limit,
            seed,
            ingress,
            toward: vec![],
        }
    }
}

impl Service {
    /// This service with `defaults` filled in wherever it sets nothing itself; maps (env,
    /// labels, sysctls, ulimits, extraHosts) are merged with the service's keys winning.
    pub fn with_defaults(&self, defaults: Option<&Service>) -> Service {
        let Some(d) = defaults else { return self.clone() };
        let mut env = d.env.clone();
        env.extend(self.env.clone());
        let mut labels = d.labels.clone();
        labels.extend(self.labels.clone());
        let mut sysctls = d.sysctls.clone();
        sysctls.extend(self.sysctls.clone());
        let mut ulimits = d.ulimits.clone();
        ulimits.extend(self.ulimits.clone());
        let mut extra_hosts = d.extra_hosts.clone();
        extra_hosts.extend(self.extra_hosts.clone());
        Service {
            image: self.image.clone().or_else(|| d.image.clone()),
            replicas: self.replicas.or(d.replicas),
            mode: self.mode.or(d.mode),
            // Names the lab's services: never inherited (validation refuses it in defaults).
            depends_on: self.depends_on.clone(),
            max_concurrent: self.max_concurrent.or(d.max_concurrent),
            command: self.command.clone().or_else(|| d.command.clone()),
            args: self.args.clone().or_else(|| d.args.clone()),
            env,
            networks: self.networks.clone().or_else(|| d.networks.clone()),
            conditions: self.conditions.clone().or_else(|| d.conditions.clone()),
            resources: self.resources.clone().or_else(|| d.resources.clone()),
            placement: self.placement.clone().or_else(|| d.placement.clone()),
            cap_add: if self.cap_add.is_empty() { d.cap_add.clone() } else { self.cap_add.clone() },
            cap_drop: if self.cap_drop.is_empty() { d.cap_drop.clone() } else { self.cap_drop.clone() },
            read_only: self.read_only.or(d.read_only),
            hostname: self.hostname.clone().or_else(|| d.hostname.clone()),
            extra_hosts,
            dns: self.dns.clone().or_else(|| d.dns.clone()),
            endpoint_mode: self.endpoint_mode.or(d.endpoint_mode),
            ports: if self.ports.is_empty() { d.ports.clone() } else { self.ports.clone() },
            init: self.init.or(d.init),
            tty: self.tty.or(d.tty),
            stdin_open: self.stdin_open.or(d.stdin_open),
            stop_grace_period: self.stop_grace_period.or(d.stop_grace_period),
            stop_signal: self.stop_signal.clone().or_else(|| d.stop_signal.clone()),
            user: self.user.clone().or_else(|| d.user.clone()),
            working_dir: self.working_dir.clone().or_else(|| d.working_dir.clone()),
            healthcheck: self.healthcheck.clone().or_else(|| d.healthcheck.clone()),
            configs: self.configs.clone().or_else(|| d.configs.clone()),
            restart_policy: self.restart_policy.or(d.restart_policy),
            update: self.update.or(d.update),
            logging: self.logging.clone().or_else(|| d.logging.clone()),
            volumes: self.volumes.clone().or_else(|| d.volumes.clone()),
            sysctls,
            ulimits,
            labels,
        }
    }

    /// The networks this service joins; Compose's rule: none listed means `default`.
    pub fn attachments(&self) -> Vec<NetworkAttachment> {
        match &self.networks {
            Some(list) if !list.is_empty() => list.clone(),
            _ => vec![NetworkAttachment::Name(DEFAULT_NETWORK.to_string())],
        }
    }
}

impl Lab {
    /// Every service with defaults applied, by short name.
    pub fn resolved_services(&self) -> impl Iterator<Item = (&str, Service)> + '_ {
        let defaults = self.spec.defaults.as_ref();
        self.spec.services.iter().map(move |(name, s)| (name.as_str(), s.with_defaults(defaults)))
    }

    /// The effective conditions of `service` (already resolved) on `attachment`.
    pub fn effective_conditions(&self, service: &Service, attachment: &NetworkAttachment) -> EffectiveConditions {
        let network = self.spec.networks.get(attachment.name()).and_then(|n| n.conditions.as_ref());
        resolve_conditions(&[attachment.conditions(), service.conditions.as_ref(), network])
    }

    /// Short names of the networks the lab needs: those declared plus `default` when used.
    pub fn network_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.spec.networks.keys().cloned().collect();
        let uses_default = self
            .resolved_services()
            .any(|(_, s)| s.attachments().iter().any(|a| a.name() == DEFAULT_NETWORK));
        if uses_default && !names.iter().any(|n| n == DEFAULT_NETWORK) {
            names.push(DEFAULT_NETWORK.to_string());
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(f: impl FnOnce(&mut Conditions)) -> Conditions {
        let mut c = Conditions::default();
        f(&mut c);
        c
    }

    #[test]
    fn defaults_fill_what_a_service_leaves_out_and_maps_merge_with_the_service_winning() {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: d}\nspec:\n  defaults:\n    image: labbox:latest\n    env: {A: '1', B: '2'}\n    sysctls: {net.ipv4.ip_default_ttl: 42, net.core.somaxconn: 128}\n    healthcheck: {test: 'true'}\n  services:\n    web:\n      env: {B: '3'}\n      sysctls: {net.core.somaxconn: 1024}\n      healthcheck: {disable: true}\n";
        let lab = crate::spec::parse_file(std::path::Path::new("d.yaml"), text).remove(0).result.expect("valid").lab;
        let (_, web) = lab.resolved_services().next().unwrap();
        let text_of = |m: &std::collections::BTreeMap<String, crate::spec::EnvValue>| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!(text_of(&web.env), ["A=1", "B=3"]);
        assert_eq!(text_of(&web.sysctls), ["net.core.somaxconn=1024", "net.ipv4.ip_default_ttl=42"]);
        assert_eq!(web.healthcheck.and_then(|h| h.disable), Some(true), "a health check is taken whole, not merged");
        assert_eq!(web.image.as_deref(), Some("labbox:latest"));
    }

    #[test]
    fn entry_beats_service_beats_network_beats_preset() {
        let entry = cond(|c| c.delay = Some("1ms".parse().unwrap()));
        let service = cond(|c| {
            c.delay = Some("2ms".parse().unwrap());
            c.loss = Some("2%".parse().unwrap());
        });
        let network = cond(|c| {
            c.preset = Some(Preset::Regular3g);
            c.loss = Some("3%".parse().unwrap());
            c.corrupt = Some("0.1%".parse().unwrap());
        });
        let eff = resolve_conditions(&[Some(&entry), Some(&service), Some(&network)]);
        assert_eq!(eff.delay, Some(Duration::from_millis(1)));
        assert_eq!(eff.loss, Some(Percent(2.0)));
        assert_eq!(eff.corrupt, Some(Percent(0.1)));
        assert_eq!(eff.rate, Some(Rate { bits_per_sec: 750_000 }), "rate comes from the preset");
    }

    #[test]
    fn a_lower_layer_field_beats_a_higher_layer_preset() {
        let service = cond(|c| c.preset = Some(Preset::Gprs));
        let network = cond(|c| c.delay = Some("7ms".parse().unwrap()));
        let eff = resolve_conditions(&[None, Some(&service), Some(&network)]);
        assert_eq!(eff.delay, Some(Duration::from_millis(7)));
        assert_eq!(eff.rate, Some(Rate { bits_per_sec: 50_000 }));
    }

    #[test]
    fn no_layers_means_no_shaping() {
        assert!(resolve_conditions(&[None, None, None]).is_empty());
    }
}
