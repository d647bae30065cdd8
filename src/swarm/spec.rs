//! Our desired objects in the Docker Engine API's terms: the only place that knows how a lab's
//! service becomes a bollard `ServiceSpec`.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum, HealthConfig, Ipam,
    IpamConfig, Limit, Mount, MountTmpfsOptions, MountType, MountVolumeOptions, NetworkAttachmentConfig, ResourceObject, ResourcesUlimits, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecModeReplicatedJob, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecDnsConfig, TaskSpecContainerSpecFile1, TaskSpecLogDriver, TaskSpecPlacement, TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum,
};

use crate::plan::{DesiredMount, DesiredNetwork, DesiredService};
use crate::spec::{EndpointMode, Mode, MountKind, UpdateFailureAction, UpdateOrder};

pub fn ipam(net: &DesiredNetwork) -> Option<Ipam> {
    net.subnet.as_ref().map(|s| Ipam { config: Some(vec![IpamConfig { subnet: Some(s.clone()), ..Default::default() }]), ..Default::default() })
}

fn non_empty<T>(v: &[T]) -> Option<Vec<T>>
where
    T: Clone,
{
    (!v.is_empty()).then(|| v.to_vec())
}

/// `config_ids`: the Swarm id of each of the service's file configs, by name (Swarm takes a
/// reference by both).
fn mount(m: &DesiredMount) -> Mount {
    Mount {
        target: Some(m.target.clone()),
        source: m.source.clone(),
        typ: Some(match m.kind {
            MountKind::Volume => MountType::VOLUME,
            MountKind::Bind => MountType::BIND,
            MountKind::Tmpfs => MountType::TMPFS,
        }),
        read_only: m.read_only.then_some(true),
        volume_options: (m.kind == MountKind::Volume).then(|| MountVolumeOptions { labels: Some(m.labels.clone()), ..Default::default() }),
        tmpfs_options: m.tmpfs_bytes.map(|b| MountTmpfsOptions { size_bytes: Some(b as i64), ..Default::default() }),
        ..Default::default()
    }
}

pub fn service_spec(svc: &DesiredService, config_ids: &BTreeMap<String, String>) -> ServiceSpec {
    let publish_mode = match svc.endpoint_mode {
        // Ingress publishing needs a VIP; with dnsrr Swarm only allows host-mode ports.
        EndpointMode::Dnsrr => EndpointPortConfigPublishModeEnum::HOST,
        EndpointMode::Vip => EndpointPortConfigPublishModeEnum::INGRESS,
    };
    let ports: Vec<EndpointPortConfig> = svc
        .ports
        .iter()
        .map(|p| EndpointPortConfig {
            protocol: Some(if p.udp { EndpointPortConfigProtocolEnum::UDP } else { EndpointPortConfigProtocolEnum::TCP }),
            target_port: Some(p.target.into()),
            published_port: p.published.map(Into::into),
            publish_mode: Some(publish_mode),
            ..Default::default()
        })
        .collect();
    let networks = svc
        .networks
        .iter()
        .map(|n| NetworkAttachmentConfig { target: Some(n.target.clone()), aliases: Some(n.aliases.clone()), ..Default::default() })
        .collect();
    let container = TaskSpecContainerSpec {
        image: Some(svc.image.clone()),
        labels: Some(svc.container_labels.clone()),
        command: svc.command.clone(),
        args: svc.args.clone(),
        hostname: svc.hostname.clone(),
        env: non_empty(&svc.env),
        init: svc.init,
        tty: svc.tty,
        open_stdin: svc.stdin_open,
        stop_grace_period: svc.stop_grace_period.map(|d| d.as_nanos() as i64),
        stop_signal: svc.stop_signal.clone(),
        user: svc.user.clone(),
        dir: svc.working_dir.clone(),
        health_check: svc.health.as_ref().map(|h| HealthConfig {
            test: non_empty(&h.test),
            interval: h.interval.map(|d| d.as_nanos() as i64),
            timeout: h.timeout.map(|d| d.as_nanos() as i64),
            retries: h.retries.map(i64::from),
            start_period: h.start_period.map(|d| d.as_nanos() as i64),
            ..Default::default()
        }),
        capability_add: non_empty(&svc.cap_add),
        capability_drop: non_empty(&svc.cap_drop),
        read_only: svc.read_only.then_some(true),
        hosts: non_empty(&svc.hosts),
        dns_config: svc.dns.as_ref().map(|d| TaskSpecContainerSpecDnsConfig {
            nameservers: non_empty(&d.nameservers),
            search: non_empty(&d.search),
            options: non_empty(&d.options),
        }),
        sysctls: (!svc.sysctls.is_empty()).then(|| svc.sysctls.clone()),
        configs: (!svc.files.is_empty()).then(|| {
            svc.files
                .iter()
                .map(|f| TaskSpecContainerSpecConfigs {
                    file: Some(TaskSpecContainerSpecFile1 { name: Some(f.target.clone()), uid: Some(f.uid.clone()), gid: Some(f.gid.clone()), mode: Some(f.mode) }),
                    config_id: config_ids.get(&f.config_name).cloned(),
                    config_name: Some(f.config_name.clone()),
                    ..Default::default()
                })
                .collect()
        }),
        ulimits: (!svc.ulimits.is_empty()).then(|| {
            svc.ulimits.iter().map(|(name, (soft, hard))| ResourcesUlimits { name: Some(name.clone()), soft: Some(*soft), hard: Some(*hard) }).collect()
        }),
        mounts: (!svc.mounts.is_empty()).then(|| svc.mounts.iter().map(mount).collect()),
        ..Default::default()
    };
    let placement = (!svc.constraints.is_empty() || svc.max_replicas_per_node.is_some() || !svc.spread_over.is_empty()).then(|| TaskSpecPlacement {
        constraints: non_empty(&svc.constraints),
        max_replicas: svc.max_replicas_per_node.map(|m| m as i64),
        preferences: (!svc.spread_over.is_empty()).then(|| {
            svc.spread_over.iter().map(|label| TaskSpecPlacementPreferences { spread: Some(TaskSpecPlacementSpread { spread_descriptor: Some(label.clone()) }) }).collect()
        }),
        ..Default::default()
    });
    let replicas = svc.replicas.unwrap_or(0) as i64;
    let mode = match svc.mode {
        Mode::Replicated => ServiceSpecMode { replicated: Some(ServiceSpecModeReplicated { replicas: Some(replicas) }), ..Default::default() },
        Mode::Global => ServiceSpecMode { global: Some(HashMap::new()), ..Default::default() },
        Mode::ReplicatedJob => ServiceSpecMode {
            replicated_job: Some(ServiceSpecModeReplicatedJob {
                max_concurrent: Some(svc.max_concurrent.map_or(replicas, |m| (m as i64).min(replicas))),
                total_completions: Some(replicas),
            }),
            ..Default::default()
        },
        Mode::GlobalJob => ServiceSpecMode { global_job: Some(HashMap::new()), ..Default::default() },
    };
    // A lab's services are meant to run: Swarm always starts them again. A job's task that
    // completed is done; one that failed is started again (`maxAttempts` bounds it).
    let condition = if svc.mode.is_job() { TaskSpecRestartPolicyConditionEnum::ON_FAILURE } else { TaskSpecRestartPolicyConditionEnum::ANY };
    let restart = match svc.restart {
        None if !svc.mode.is_job() => None,
        r => Some(r.unwrap_or_default()),
    };
    ServiceSpec {
        name: Some(svc.name.clone()),
        labels: Some(svc.labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: (svc.limits.is_some() || svc.reservations.is_some()).then(|| TaskSpecResources {
                limits: svc.limits.map(|l| Limit { nano_cpus: l.nano_cpus, memory_bytes: l.memory_bytes, ..Default::default() }),
                reservations: svc.reservations.map(|r| ResourceObject { nano_cpus: r.nano_cpus, memory_bytes: r.memory_bytes, ..Default::default() }),
                ..Default::default()
            }),
            placement,
            restart_policy: restart.map(|r| TaskSpecRestartPolicy {
                condition: Some(condition),
                delay: r.delay.map(|d| d.as_nanos() as i64),
                max_attempts: r.max_attempts.map(i64::from),
                window: r.window.map(|d| d.as_nanos() as i64),
            }),
            networks: Some(networks),
            // A driver left out is the daemon's default, given these options.
            log_driver: svc.logging.as_ref().map(|(driver, options)| TaskSpecLogDriver {
                name: Some(driver.clone().unwrap_or_default()),
                options: Some(options.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            }),
            ..Default::default()
        }),
        mode: Some(mode),
        update_config: svc.update.map(|u| ServiceSpecUpdateConfig {
            // Docker reads a missing parallelism as 0 (all at once); its CLI's default is 1.
            parallelism: Some(u.parallelism.map_or(1, i64::from)),
            delay: u.delay.map(|d| d.as_nanos() as i64),
            order: u.order.map(|o| match o {
                UpdateOrder::StopFirst => ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
                UpdateOrder::StartFirst => ServiceSpecUpdateConfigOrderEnum::START_FIRST,
            }),
            failure_action: u.failure_action.map(|a| match a {
                UpdateFailureAction::Pause => ServiceSpecUpdateConfigFailureActionEnum::PAUSE,
                UpdateFailureAction::Continue => ServiceSpecUpdateConfigFailureActionEnum::CONTINUE,
            }),
            monitor: u.monitor.map(|d| d.as_nanos() as i64),
            max_failure_ratio: u.max_failure_ratio,
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(match svc.endpoint_mode {
                EndpointMode::Dnsrr => EndpointSpecModeEnum::DNSRR,
                EndpointMode::Vip => EndpointSpecModeEnum::VIP,
            }),
            ports: (!ports.is_empty()).then_some(ports),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn an_update_policy_is_swarm_s_update_config_with_the_docker_cli_s_parallelism_when_left_out() {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: k}\nspec:\n  defaults: {image: labbox:latest, update: {order: start-first, delay: 2s}}\n  services:\n    a: {}\n    b: {update: {parallelism: 0, failureAction: continue, monitor: 500ms, maxFailureRatio: 25%}}\n";
        let lab = crate::spec::parse_file(Path::new("k.yaml"), text).remove(0).result.expect("valid");
        let desired = crate::plan::desired_lab(&lab.lab);
        let config = |i: usize| service_spec(&desired.services[i], &BTreeMap::new()).update_config;
        let a = config(0).expect("inherited from the defaults");
        assert_eq!((a.parallelism, a.delay, a.order, a.failure_action), (Some(1), Some(2_000_000_000), Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST), None));
        let b = config(1).expect("its own");
        assert_eq!((b.parallelism, b.order, b.failure_action, b.monitor, b.max_failure_ratio), (Some(0), None, Some(ServiceSpecUpdateConfigFailureActionEnum::CONTINUE), Some(500_000_000), Some(0.25)));
    }

    #[test]
    fn a_service_becomes_the_spec_docker_service_create_would_send() {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: k}\nspec:\n  networks: {dht: {}}\n  services:\n    worker:\n      image: labbox:latest\n      replicas: 3\n      command: [sleep, '100']\n      env: {A: '1'}\n      init: true\n      stopGracePeriod: 2s\n      resources: {cpus: 0.5, memory: 64M, reservations: {cpus: 0.25, memory: 32M}}\n      placement: {constraints: [node.role==worker], maxReplicasPerNode: 2, preferences: [{spread: node.labels.zone}]}\n      capDrop: [NET_RAW]\n      readOnly: true\n      ports: ['8080:80/udp']\n      networks: [dht]\n      sysctls: {net.ipv4.ip_default_ttl: 42, net.ipv4.tcp_congestion_control: reno}\n      user: '1000:1000'\n      ulimits: {nofile: {soft: 1024, hard: 4096}, core: 0}\n      restartPolicy: {delay: 0s, maxAttempts: 3, window: 1m}\n      workingDir: /srv\n      stopSignal: SIGINT\n      tty: true\n      stdinOpen: true\n      logging: {driver: json-file, options: {max-size: 10m, max-file: 3}}\n";
        let lab = crate::spec::parse_file(Path::new("k.yaml"), text).remove(0).result.expect("valid");
        let desired = crate::plan::desired_lab(&lab.lab);
        let spec = service_spec(&desired.services[0], &BTreeMap::new());
        assert_eq!(spec.name.as_deref(), Some("k_worker"));
        assert_eq!(spec.mode.unwrap().replicated.unwrap().replicas, Some(3));
        let task = spec.task_template.unwrap();
        let c = task.container_spec.unwrap();
        assert_eq!(c.command, Some(vec!["sleep".to_string(), "100".to_string()]));
        assert_eq!(c.env, Some(vec!["A=1".to_string()]));
        assert_eq!((c.init, c.stop_grace_period, c.tty, c.open_stdin), (Some(true), Some(2_000_000_000), Some(true), Some(true)));
        assert_eq!((c.user.as_deref(), c.dir.as_deref(), c.stop_signal.as_deref()), (Some("1000:1000"), Some("/srv"), Some("SIGINT")));
        assert_eq!((c.capability_drop.clone(), c.read_only), (Some(vec!["NET_RAW".to_string()]), Some(true)));
        let restart = task.restart_policy.clone().unwrap();
        assert_eq!((restart.condition, restart.delay, restart.max_attempts, restart.window), (Some(TaskSpecRestartPolicyConditionEnum::ANY), Some(0), Some(3), Some(60_000_000_000)));
        let ulimits: Vec<_> = c.ulimits.unwrap().into_iter().map(|u| (u.name.unwrap(), u.soft.unwrap(), u.hard.unwrap())).collect();
        assert_eq!(ulimits, [("core".to_string(), 0, 0), ("nofile".to_string(), 1024, 4096)]);
        let log = task.log_driver.clone().unwrap();
        assert_eq!(log.name.as_deref(), Some("json-file"));
        assert_eq!(log.options.unwrap().into_iter().collect::<BTreeMap<_, _>>(), BTreeMap::from([("max-file".into(), "3".into()), ("max-size".into(), "10m".into())]));
        let resources = task.resources.unwrap();
        let limits = resources.limits.unwrap();
        assert_eq!((limits.nano_cpus, limits.memory_bytes), (Some(500_000_000), Some(64 * 1024 * 1024)));
        let reserved = resources.reservations.unwrap();
        assert_eq!((reserved.nano_cpus, reserved.memory_bytes), (Some(250_000_000), Some(32 * 1024 * 1024)));
        let placement = task.placement.unwrap();
        assert_eq!((placement.constraints, placement.max_replicas), (Some(vec!["node.role==worker".to_string()]), Some(2)));
        let spread = placement.preferences.unwrap().remove(0).spread.unwrap().spread_descriptor;
        assert_eq!(spread.as_deref(), Some("node.labels.zone"));
        let net = &task.networks.unwrap()[0];
        assert_eq!((net.target.as_deref(), net.aliases.clone()), (Some("k_dht"), Some(vec!["worker".to_string()])));
        let endpoint = spec.endpoint_spec.unwrap();
        assert_eq!(endpoint.mode, Some(EndpointSpecModeEnum::DNSRR));
        let port = &endpoint.ports.unwrap()[0];
        assert_eq!((port.target_port, port.published_port, port.protocol), (Some(80), Some(8080), Some(EndpointPortConfigProtocolEnum::UDP)));
        assert_eq!(port.publish_mode, Some(EndpointPortConfigPublishModeEnum::HOST));
        assert_eq!(c.health_check, None, "no check asked: the image's own stays");
        let sysctls = c.sysctls.unwrap();
        assert_eq!((sysctls["net.ipv4.ip_default_ttl"].as_str(), sysctls["net.ipv4.tcp_congestion_control"].as_str()), ("42", "reno"));
    }

    #[test]
    fn files_are_config_references_at_their_targets_with_owner_and_mode() {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: k}\nspec:\n  configs:\n    app.conf: {content: \"x = 1\\n\"}\n  services:\n    web:\n      image: labbox:latest\n      configs: [app.conf, {source: app.conf, target: /etc/app.conf, uid: '1000', gid: 100, mode: 0440}, {source: app.conf, target: /b, mode: '640'}]\n";
        let lab = crate::spec::parse_file(Path::new("k.yaml"), text).remove(0).result.expect("valid");
        let desired = crate::plan::desired_lab(&lab.lab);
        let svc = &desired.services[0];
        let name = svc.files[0].config_name.clone();
        assert!(name.starts_with("k_web-") && name.len() == "k_web-".len() + 12, "{name}");
        let ids = BTreeMap::from([(name.clone(), "cfg1".to_string())]);
        let configs = service_spec(svc, &ids).task_template.unwrap().container_spec.unwrap().configs.unwrap();
        let view: Vec<_> = configs
            .iter()
            .map(|c| {
                let f = c.file.clone().unwrap();
                (c.config_id.as_deref(), c.config_name.as_deref(), f.name.unwrap(), f.uid.unwrap(), f.gid.unwrap(), f.mode.unwrap())
            })
            .collect();
        assert_eq!(view, vec![
            (Some("cfg1"), Some(name.as_str()), "/app.conf".to_string(), "0".to_string(), "0".to_string(), 0o444),
            (Some("cfg1"), Some(name.as_str()), "/etc/app.conf".to_string(), "1000".to_string(), "100".to_string(), 0o440),
            (Some("cfg1"), Some(name.as_str()), "/b".to_string(), "0".to_string(), "0".to_string(), 0o640),
        ]);
    }

    #[test]
    fn volumes_per_task_or_per_node_binds_and_tmpfs_become_mounts() {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: k}\nspec:\n  volumes: {log: {perTask: true}, shared: {}}\n  defaults: {image: labbox:latest, volumes: ['log:/var/lib/raft', 'shared:/shared:ro', '/srv/results:/results', {type: tmpfs, target: /scratch, size: 64M}]}\n  services:\n    node: {replicas: 3}\n    agent: {mode: global}\n";
        let lab = crate::spec::parse_file(Path::new("k.yaml"), text).remove(0).result.expect("valid");
        let desired = crate::plan::desired_lab(&lab.lab);
        let mounts = |name: &str| {
            let svc = desired.services.iter().find(|s| s.short_name == name).unwrap();
            service_spec(svc, &BTreeMap::new()).task_template.unwrap().container_spec.unwrap().mounts.unwrap()
        };
        let node = mounts("node");
        let view: Vec<_> = node.iter().map(|m| (m.typ, m.source.as_deref(), m.target.as_deref().unwrap(), m.read_only)).collect();
        assert_eq!(view, vec![
            (Some(MountType::VOLUME), Some("k_log-{{.Task.Slot}}"), "/var/lib/raft", None),
            (Some(MountType::VOLUME), Some("k_shared"), "/shared", Some(true)),
            (Some(MountType::BIND), Some("/srv/results"), "/results", None),
            (Some(MountType::TMPFS), None, "/scratch", None),
        ]);
        let labels = node[0].volume_options.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels.get("io.swarmlab.lab").map(String::as_str), Some("k"), "a volume says whose it is");
        assert_eq!(node[3].tmpfs_options.as_ref().unwrap().size_bytes, Some(64 * 1024 * 1024));
        assert_eq!(mounts("agent")[0].source.as_deref(), Some("k_log"), "a global service's tasks have one per node anyway");
    }

    #[test]
    fn health_checks_become_dockers_test_forms_and_nanoseconds() {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: k}\nspec:\n  defaults: {image: labbox:latest}\n  services:\n    exec: {healthcheck: {test: [nc, -z, localhost, '80'], interval: 500ms, timeout: 2s, retries: 5, startPeriod: 10s}}\n    shell: {healthcheck: {test: test -f /tmp/ok}}\n    timings: {healthcheck: {interval: 1s}}\n    off: {healthcheck: {disable: true}}\n";
        let lab = crate::spec::parse_file(Path::new("k.yaml"), text).remove(0).result.expect("valid");
        let desired = crate::plan::desired_lab(&lab.lab);
        let check = |name: &str| {
            let svc = desired.services.iter().find(|s| s.short_name == name).unwrap();
            service_spec(svc, &BTreeMap::new()).task_template.unwrap().container_spec.unwrap().health_check.unwrap()
        };
        let exec = check("exec");
        assert_eq!(exec.test, Some(["CMD", "nc", "-z", "localhost", "80"].map(String::from).to_vec()));
        assert_eq!((exec.interval, exec.timeout, exec.retries, exec.start_period), (Some(500_000_000), Some(2_000_000_000), Some(5), Some(10_000_000_000)));
        assert_eq!(check("shell").test, Some(vec!["CMD-SHELL".to_string(), "test -f /tmp/ok".to_string()]));
        let timings = check("timings");
        assert_eq!((timings.test, timings.interval), (None, Some(1_000_000_000)), "no test: the image's, at this interval");
        assert_eq!(check("off").test, Some(vec!["NONE".to_string()]));
    }

    #[test]
    fn a_job_is_swarm_s_job_mode_restarted_on_failure_only() {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: k}\nspec:\n  defaults: {image: labbox:latest}\n  services:\n    load: {mode: replicated-job, replicas: 4, maxConcurrent: 2}\n    once: {mode: replicated-job, restartPolicy: {maxAttempts: 2}}\n    each: {mode: global-job}\n    web: {}\n";
        let lab = crate::spec::parse_file(Path::new("k.yaml"), text).remove(0).result.expect("valid");
        let desired = crate::plan::desired_lab(&lab.lab);
        let spec = |name: &str| service_spec(desired.services.iter().find(|s| s.short_name == name).expect("service"), &BTreeMap::new());
        let load = spec("load");
        let job = load.mode.as_ref().and_then(|m| m.replicated_job.clone()).expect("a replicated job");
        assert_eq!((job.total_completions, job.max_concurrent), (Some(4), Some(2)));
        let restart = |s: &ServiceSpec| s.task_template.as_ref().and_then(|t| t.restart_policy.clone());
        assert_eq!(restart(&load).and_then(|r| r.condition), Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE));
        let once = spec("once");
        assert_eq!(once.mode.as_ref().and_then(|m| m.replicated_job.clone()).map(|j| (j.total_completions, j.max_concurrent)), Some((Some(1), Some(1))));
        assert_eq!(restart(&once).map(|r| (r.condition, r.max_attempts)), Some((Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE), Some(2))));
        assert!(spec("each").mode.is_some_and(|m| m.global_job.is_some() && m.global.is_none()));
        assert_eq!(restart(&spec("web")), None, "a service keeps Swarm's default (any)");
    }
}
