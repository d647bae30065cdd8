//! labd's Prometheus metrics, named after the Prometheus conventions (`swarmlab_` prefix, base
//! units, `_total` counters), with the `prometheus-client` crate (the Prometheus project's
//! own Rust client: typed families, exposition in the text format). Redis keeps its own
//! counters for `labctl`; these are for Prometheus and Grafana.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::status::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LabLabel {
    pub lab: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub lab: String,
    pub phase: String,
}

/// One service (or job) of one lab.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ServiceLabels {
    pub lab: String,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub node: String,
    pub backend: String,
}

/// One attachment of one task on an agent's node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct AttachmentLabels {
    pub lab: String,
    pub service: String,
    pub container: String,
    pub network: String,
}

/// One task (its container) of one lab on an agent's node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct TaskLabels {
    pub lab: String,
    pub service: String,
    pub container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PacketLabels {
    pub lab: String,
    pub service: String,
    pub container: String,
    pub network: String,
    /// seen, dropped, delayed, corrupted, duplicated, reordered
    pub outcome: String,
}

/// A kill, freeze or thaw the agent made of a task, as the schedule says.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskFaultLabels {
    pub lab: String,
    pub service: String,
    /// kill, pause, unpause
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub lab: String,
    pub kind: String,
}

/// The task usage series set at an agent's last sample: each task's CPU seconds, each task
/// network's counters (`TASK_NETWORK_SERIES`' order).
#[derive(Default)]
struct LastUsage {
    tasks: std::collections::BTreeMap<TaskLabels, f64>,
    networks: std::collections::BTreeMap<AttachmentLabels, [u64; 6]>,
}

/// Every phase a lab can be in, so each lab has one series per phase (1 for the current one),
/// as kube-state-metrics does for pods.
const PHASES: [Phase; 10] = [
    Phase::Pending,
    Phase::Progressing,
    Phase::Ready,
    Phase::Degraded,
    Phase::Failed,
    Phase::Invalid,
    Phase::Deleting,
    Phase::Orphaned,
    Phase::Suspended,
    Phase::Completed,
];

pub struct Metrics {
    registry: Registry,
    phase: Family<PhaseLabels, Gauge>,
    ready: Family<LabLabel, Gauge>,
    reconciles: Family<LabLabel, Counter>,
    reconcile_seconds: Family<LabLabel, Histogram>,
    actions: Family<ActionLabels, Counter>,
    drift_repairs: Family<LabLabel, Counter>,
    errors: Family<LabLabel, Counter>,
    time_to_ready_seconds: Family<LabLabel, Gauge<f64, AtomicU64>>,
    docker_api_calls: Counter,
    leader: Gauge,
    source_readable: Gauge,
    agent: Family<AgentLabels, Gauge>,
    shaping_converged: Family<AttachmentLabels, Gauge>,
    packets: Family<PacketLabels, Counter>,
    task_faults: Family<TaskFaultLabels, Counter>,
    tasks_desired: Family<ServiceLabels, Gauge>,
    tasks_running: Family<ServiceLabels, Gauge>,
    tasks_outdated: Family<ServiceLabels, Gauge>,
    job_completed: Family<ServiceLabels, Gauge>,
    service_restarts: Family<ServiceLabels, Counter>,
    task_cpu: Family<TaskLabels, Counter<f64, AtomicU64>>,
    task_memory: Family<TaskLabels, Gauge>,
    /// Receive and transmit bytes, packets and dropped packets of each task on each network.
    task_network: [Family<AttachmentLabels, Counter>; 6],
    /// The task series set at the last sample, with their values (counters only go up
    /// here, as `last_packets`).
    last_usage: std::sync::Mutex<LastUsage>,
    /// The services each lab's series were last set for, so a service edited out of its lab
    /// loses its series.
    services: std::sync::Mutex<std::collections::BTreeMap<String, Vec<ServiceLabels>>>,
    /// What each attachment's counters were at the last pass (counters only go up here; a
    /// worker restarted from zero adds its new count).
    last_packets: std::sync::Mutex<std::collections::BTreeMap<AttachmentLabels, [u64; 8]>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("swarmlab");
        let m = Metrics {
            phase: Family::default(),
            ready: Family::default(),
            reconciles: Family::default(),
            reconcile_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16))),
            actions: Family::default(),
            drift_repairs: Family::default(),
            errors: Family::default(),
            time_to_ready_seconds: Family::default(),
            docker_api_calls: Counter::default(),
            leader: Gauge::default(),
            source_readable: Gauge::default(),
            agent: Family::default(),
            shaping_converged: Family::default(),
            packets: Family::default(),
            task_faults: Family::default(),
            tasks_desired: Family::default(),
            tasks_running: Family::default(),
            tasks_outdated: Family::default(),
            job_completed: Family::default(),
            service_restarts: Family::default(),
            task_cpu: Family::default(),
            task_memory: Family::default(),
            task_network: Default::default(),
            last_usage: Default::default(),
            services: Default::default(),
            last_packets: Default::default(),
            registry: Registry::default(),
        };
        registry.register("lab_phase", "1 for the phase each lab is in, 0 for the others", m.phase.clone());
        registry.register("lab_ready", "1 when the lab is Ready", m.ready.clone());
        registry.register("reconciles", "Reconcile passes", m.reconciles.clone());
        registry.register("reconcile_duration_seconds", "Time of one reconcile pass", m.reconcile_seconds.clone());
        registry.register("actions", "Changes made to Swarm, by kind (create, update, remove)", m.actions.clone());
        registry.register("drift_repairs", "Objects changed outside labd and put back", m.drift_repairs.clone());
        registry.register("reconcile_errors", "Reconcile passes that failed", m.errors.clone());
        registry.register("time_to_ready_seconds", "From a lab's new definition to Ready, for its current generation", m.time_to_ready_seconds.clone());
        registry.register("docker_api_calls", "Docker Engine API calls made by labd", m.docker_api_calls.clone());
        registry.register("leader", "1 while this labd holds the leader lease and reconciles", m.leader.clone());
        registry.register("source_readable", "1 when the leader's last read of its labs (the directory, or the Git fetch) worked, 0 when it did not (labs then stay as they are)", m.source_readable.clone());
        registry.register("agent_info", "The node agent of this node and the shaping backend it chose", m.agent.clone());
        registry.register("task_shaping_converged", "1 when a task's attachment carries the conditions in force", m.shaping_converged.clone());
        registry.register("nfqueue_packets", "Packets of a task's attachment through the userspace backend, by outcome", m.packets.clone());
        registry.register("service_tasks_desired", "Tasks each service of a lab should run (a job: the completions its run needs)", m.tasks_desired.clone());
        registry.register("service_tasks_running", "Tasks of each service of a lab that run (while Swarm rolls a change out, those on the new spec)", m.tasks_running.clone());
        registry.register("service_tasks_outdated", "Running tasks of each service of a lab still on the previous spec while Swarm rolls a change out", m.tasks_outdated.clone());
        registry.register("job_tasks_completed", "Tasks of a job's current run that completed (exited 0)", m.job_completed.clone());
        registry.register("service_restarts", "Tasks of each service of a lab that exited on their own and Swarm restarted", m.service_restarts.clone());
        registry.register("task_cpu_seconds", "CPU time of a task's processes (as sampled by its node's agent)", m.task_cpu.clone());
        registry.register("task_memory_bytes", "Memory a task uses, less reclaimable page cache (what docker stats shows)", m.task_memory.clone());
        for (i, (name, help)) in TASK_NETWORK_SERIES.iter().enumerate() {
            registry.register(*name, *help, m.task_network[i].clone());
        }
        registry.register("task_faults", "Tasks this node's agent killed, paused or unpaused as their lab's schedule says, by action", m.task_faults.clone());
        Metrics { registry, ..m }
    }

    pub fn set_phase(&self, lab: &str, phase: Phase) {
        for p in PHASES {
            self.phase.get_or_create(&PhaseLabels { lab: lab.into(), phase: p.to_string() }).set(i64::from(p == phase));
        }
        self.ready.get_or_create(&LabLabel { lab: lab.into() }).set(i64::from(phase == Phase::Ready));
    }

    /// Each service's task counts, as the lab's status has them; series of services no longer
    /// in the status go.
    pub fn set_services(&self, lab: &str, services: &std::collections::BTreeMap<String, crate::status::ServiceStatus>) {
        let now: Vec<ServiceLabels> = services.keys().map(|s| ServiceLabels { lab: lab.into(), service: s.clone() }).collect();
        for (l, s) in now.iter().zip(services.values()) {
            self.tasks_desired.get_or_create(l).set(gauge_value(s.desired));
            self.tasks_running.get_or_create(l).set(gauge_value(s.running));
            self.tasks_outdated.get_or_create(l).set(gauge_value(s.outdated));
            // A job turned into a service kept running loses its completions.
            if let Some(done) = s.completed {
                self.job_completed.get_or_create(l).set(gauge_value(done));
            } else {
                self.job_completed.remove(l);
            }
            // The count lives in the lab's status (it outlives labd), so the counter is raised
            // to it: after a restart of labd the series goes on where it was.
            let restarts = self.service_restarts.get_or_create(l);
            restarts.inc_by(s.restarts.saturating_sub(restarts.get()));
        }
        let mut known = self.services.lock().unwrap_or_else(|e| e.into_inner());
        for gone in known.insert(lab.to_string(), now.clone()).unwrap_or_default().into_iter().filter(|l| !now.contains(l)) {
            self.remove_service(&gone);
        }
    }

    fn remove_service(&self, l: &ServiceLabels) {
        self.tasks_desired.remove(l);
        self.tasks_running.remove(l);
        self.tasks_outdated.remove(l);
        self.job_completed.remove(l);
        self.service_restarts.remove(l);
    }

    /// A lab is gone: its series go too.
    pub fn forget(&self, lab: &str) {
        let services = self.services.lock().unwrap_or_else(|e| e.into_inner()).remove(lab).unwrap_or_default();
        for l in &services {
            self.remove_service(l);
        }
        for p in PHASES {
            self.phase.remove(&PhaseLabels { lab: lab.into(), phase: p.to_string() });
        }
        let l = LabLabel { lab: lab.into() };
        self.ready.remove(&l);
        self.reconciles.remove(&l);
        self.reconcile_seconds.remove(&l);
        self.drift_repairs.remove(&l);
        self.errors.remove(&l);
        self.time_to_ready_seconds.remove(&l);
        for kind in ["create", "update", "remove"] {
            self.actions.remove(&ActionLabels { lab: lab.into(), kind: kind.into() });
        }
    }

    pub fn reconciled(&self, lab: &str, seconds: f64, failed: bool) {
        let l = LabLabel { lab: lab.into() };
        self.reconciles.get_or_create(&l).inc();
        self.reconcile_seconds.get_or_create(&l).observe(seconds);
        if failed {
            self.errors.get_or_create(&l).inc();
        }
    }

    pub fn acted(&self, lab: &str, kind: &str, n: u64) {
        self.actions.get_or_create(&ActionLabels { lab: lab.into(), kind: kind.into() }).inc_by(n);
    }

    pub fn drift_repaired(&self, lab: &str, n: u64) {
        self.drift_repairs.get_or_create(&LabLabel { lab: lab.into() }).inc_by(n);
    }

    pub fn ready_after(&self, lab: &str, seconds: f64) {
        self.time_to_ready_seconds.get_or_create(&LabLabel { lab: lab.into() }).set(seconds);
    }

    /// Docker API calls so far (a counter fed from the client's own count).
    pub fn api_calls(&self, total: u64) {
        let seen = self.docker_api_calls.get();
        if total > seen {
            self.docker_api_calls.inc_by(total - seen);
        }
    }

    /// What one agent pass found: its backend, and per attachment whether it converged and
    /// its packet counters. Attachments not reported any more lose their series.
    pub fn agent_pass(&self, node: &str, backend: &str, attachments: &[(AttachmentLabels, bool, Option<[u64; 8]>)]) {
        self.agent.clear();
        self.agent.get_or_create(&AgentLabels { node: node.into(), backend: backend.into() }).set(1);
        const OUTCOMES: [&str; 8] = ["seen", "dropped", "delayed", "corrupted", "duplicated", "reordered", "overrun", "overflow"];
        let Ok(mut last) = self.last_packets.lock() else { return };
        let now: std::collections::BTreeSet<&AttachmentLabels> = attachments.iter().map(|(a, _, _)| a).collect();
        for gone in last.keys().filter(|k| !now.contains(k)).cloned().collect::<Vec<_>>() {
            self.shaping_converged.remove(&gone);
            for outcome in OUTCOMES {
                self.packets.remove(&PacketLabels { lab: gone.lab.clone(), service: gone.service.clone(), container: gone.container.clone(), network: gone.network.clone(), outcome: outcome.into() });
            }
            last.remove(&gone);
        }
        for (a, converged, counters) in attachments {
            self.shaping_converged.get_or_create(a).set(i64::from(*converged));
            // Every attachment is remembered, so that its series go with it.
            let before = last.entry(a.clone()).or_insert([0; 8]);
            let Some(counts) = counters else { continue };
            for (i, outcome) in OUTCOMES.iter().enumerate() {
                let delta = if counts[i] >= before[i] { counts[i] - before[i] } else { counts[i] };
                let labels = PacketLabels { lab: a.lab.clone(), service: a.service.clone(), container: a.container.clone(), network: a.network.clone(), outcome: (*outcome).into() };
                self.packets.get_or_create(&labels).inc_by(delta);
            }
            *before = *counts;
        }
    }

    /// What the tasks of an agent's node use, at its last sample (lab, usage); tasks not in
    /// it lose their series.
    pub fn task_usage<'a>(&self, tasks: impl Iterator<Item = (&'a str, &'a crate::usage::TaskUsage)>) {
        let Ok(mut last) = self.last_usage.lock() else { return };
        let (mut tasks_now, mut networks_now) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
        for (lab, usage) in tasks {
            let task = TaskLabels { lab: lab.into(), service: usage.service.clone(), container: usage.container.clone() };
            let cpu_before = last.tasks.get(&task).copied().unwrap_or(0.0);
            self.task_cpu.get_or_create(&task).inc_by((usage.cpu_seconds - cpu_before).max(0.0));
            self.task_memory.get_or_create(&task).set(gauge_value(usage.memory_bytes));
            tasks_now.insert(task, usage.cpu_seconds);
            for net in &usage.networks {
                let labels = AttachmentLabels { lab: lab.into(), service: usage.service.clone(), container: usage.container.clone(), network: net.network.clone() };
                let values = network_values(&net.counters);
                let was = last.networks.get(&labels).copied().unwrap_or_default();
                for (family, (value, previous)) in self.task_network.iter().zip(values.into_iter().zip(was)) {
                    family.get_or_create(&labels).inc_by(if value >= previous { value - previous } else { value });
                }
                networks_now.insert(labels, values);
            }
        }
        // A dying container's last sample may lack its interfaces: series go by what was set.
        for gone in last.tasks.keys().filter(|t| !tasks_now.contains_key(*t)) {
            self.task_cpu.remove(gone);
            self.task_memory.remove(gone);
        }
        for gone in last.networks.keys().filter(|n| !networks_now.contains_key(*n)) {
            for family in &self.task_network {
                family.remove(gone);
            }
        }
        *last = LastUsage { tasks: tasks_now, networks: networks_now };
    }

    /// The agent killed, paused or unpaused a task of `service` (`action`).
    pub fn task_fault(&self, lab: &str, service: &str, action: &str) {
        self.task_faults.get_or_create(&TaskFaultLabels { lab: lab.into(), service: service.into(), action: action.into() }).inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Whether the last read of the labs (directory or Git fetch) worked.
    pub fn set_source_readable(&self, readable: bool) {
        self.source_readable.set(i64::from(readable));
    }

    /// The exposition in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub type SharedMetrics = Arc<Metrics>;

/// The six traffic series of a task on a network, named as cAdvisor names a container's.
const TASK_NETWORK_SERIES: [(&str, &str); 6] = [
    ("task_network_receive_bytes", "Bytes a task received on a lab network"),
    ("task_network_transmit_bytes", "Bytes a task sent on a lab network"),
    ("task_network_receive_packets", "Packets a task received on a lab network"),
    ("task_network_transmit_packets", "Packets a task sent on a lab network"),
    ("task_network_receive_packets_dropped", "Packets the kernel dropped on a task's receiving side of a lab network"),
    ("task_network_transmit_packets_dropped", "Packets the kernel dropped on a task's sending side of a lab network"),
];

/// The counters in `TASK_NETWORK_SERIES`' order.
fn network_values(c: &crate::usage::InterfaceCounters) -> [u64; 6] {
    [c.rx_bytes, c.tx_bytes, c.rx_packets, c.tx_packets, c.rx_dropped, c.tx_dropped]
}

/// A count as a gauge's value (counts of tasks never come near `i64::MAX`).
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::status::ServiceStatus;

    fn status(desired: u64, running: u64, completed: Option<u64>) -> ServiceStatus {
        ServiceStatus { desired, running, completed, ..Default::default() }
    }

    #[test]
    fn each_service_has_its_task_counts_and_a_service_or_lab_gone_takes_its_series() {
        let m = Metrics::new();
        m.set_services("kv", &BTreeMap::from([("kv".to_string(), status(3, 2, None)), ("load".to_string(), status(4, 2, Some(1)))]));
        m.set_services("other", &BTreeMap::from([("web".to_string(), status(1, 1, None))]));
        let text = m.encode();
        for line in [
            "swarmlab_service_tasks_desired{lab=\"kv\",service=\"kv\"} 3",
            "swarmlab_service_tasks_running{lab=\"kv\",service=\"kv\"} 2",
            "swarmlab_service_tasks_outdated{lab=\"kv\",service=\"kv\"} 0",
            "swarmlab_service_tasks_desired{lab=\"kv\",service=\"load\"} 4",
            "swarmlab_job_tasks_completed{lab=\"kv\",service=\"load\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(!text.contains("swarmlab_job_tasks_completed{lab=\"kv\",service=\"kv\"}"), "a service kept running has no completions");
        assert!(text.lines().any(|l| l == "swarmlab_service_restarts_total{lab=\"kv\",service=\"kv\"} 0"), "{text}");
        // Restarted twice, as the status counts (after a labd restart too: the counter starts
        // where the status is).
        m.set_services("kv", &BTreeMap::from([("kv".to_string(), ServiceStatus { restarts: 2, ..status(3, 2, None) }), ("load".to_string(), status(4, 2, Some(1)))]));
        m.set_services("kv", &BTreeMap::from([("kv".to_string(), ServiceStatus { restarts: 2, ..status(3, 3, None) }), ("load".to_string(), status(4, 2, Some(1)))]));
        assert!(m.encode().lines().any(|l| l == "swarmlab_service_restarts_total{lab=\"kv\",service=\"kv\"} 2"), "{}", m.encode());
        m.set_services("kv", &BTreeMap::from([("kv".to_string(), status(3, 2, None)), ("load".to_string(), status(4, 4, None))]));
        assert!(!m.encode().contains("swarmlab_job_tasks_completed"), "a job made a service: {}", m.encode());
        // `load` edited out of the lab, then the lab gone.
        m.set_services("kv", &BTreeMap::from([("kv".to_string(), status(3, 3, None))]));
        assert!(!m.encode().contains("service=\"load\""), "{}", m.encode());
        m.forget("kv");
        let text = m.encode();
        assert!(!text.contains("lab=\"kv\"") && text.contains("lab=\"other\""), "{text}");
    }

    /// Every metric family labd serves (families without a series are not written: one of
    /// each is made).
    fn served_families() -> std::collections::BTreeSet<String> {
        let m = Metrics::new();
        m.set_phase("lab", Phase::Ready);
        m.set_services("lab", &BTreeMap::from([("job".to_string(), status(1, 0, Some(1)))]));
        m.reconciled("lab", 0.01, true);
        m.acted("lab", "create", 1);
        m.drift_repaired("lab", 1);
        m.ready_after("lab", 1.0);
        m.api_calls(1);
        m.set_leader(true);
        m.set_source_readable(true);
        let usage = crate::usage::TaskUsage { networks: vec![Default::default()], ..Default::default() };
        m.task_usage([("lab", &usage)].into_iter());
        let attachment = AttachmentLabels { lab: "lab".into(), service: "s".into(), container: "c".into(), network: "lan".into() };
        m.agent_pass("n1", "userspace", &[(attachment, true, Some([1, 0, 0, 0, 0, 0, 0, 0]))]);
        m.encode().lines().filter_map(|l| Some(l.strip_prefix("# TYPE ")?.split_whitespace().next()?.to_string())).collect()
    }

    /// `expr` is PromQL that Prometheus takes.
    fn assert_promql(expr: &str) {
        if let Err(e) = promql_parser::parser::parse(expr) {
            panic!("not PromQL: {expr}: {e}");
        }
    }

    /// The series `expr` names that labd does not serve.
    fn unserved(expr: &str, served: &std::collections::BTreeSet<String>) -> Vec<String> {
        expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("swarmlab_"))
            .filter(|name| !served.contains(["_total", "_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix)).unwrap_or(name)))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_series_the_grafana_dashboard_queries_is_one_labd_serves() {
        let dashboard: serde_json::Value = serde_json::from_str(include_str!("../charts/grafana-dashboard.json")).unwrap();
        let served = served_families();
        let exprs: Vec<String> = dashboard["panels"].as_array().unwrap().iter().flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default()).filter_map(|t| t["expr"].as_str().map(str::to_string)).collect();
        assert!(exprs.len() > 10, "{exprs:?}");
        for expr in &exprs {
            assert_promql(expr);
            assert_eq!(unserved(expr, &served), Vec::<String>::new(), "the dashboard queries series labd does not serve: {expr}");
        }
    }

    #[test]
    fn every_alert_queries_series_labd_serves_and_says_what_to_do() {
        let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(include_str!("../charts/prometheus-alerts.yml")).expect("YAML");
        let served = served_families();
        let rules = rules["groups"][0]["rules"].as_sequence().expect("rules");
        assert!(rules.len() >= 8, "{rules:?}");
        for rule in rules {
            let (alert, expr) = (rule["alert"].as_str().expect("alert"), rule["expr"].as_str().expect("expr"));
            assert!(alert.starts_with("Swarmlab"), "{alert}");
            assert_promql(expr);
            assert_eq!(unserved(expr, &served), Vec::<String>::new(), "{alert} queries series labd does not serve: {expr}");
            assert!(rule["annotations"]["summary"].is_string() && rule["annotations"]["description"].is_string(), "{alert}");
            if let Some(wait) = rule["for"].as_str() {
                assert!(wait.parse::<crate::spec::units::Duration>().is_ok(), "{alert}: for {wait}");
            }
        }
    }

    #[test]
    fn an_attachment_gone_takes_its_series_whether_or_not_it_had_packet_counters() {
        let m = Metrics::new();
        let attachment = |container: &str| AttachmentLabels { lab: "lab".into(), service: "s".into(), container: container.into(), network: "lan".into() };
        // A rate alone is the kernel's (no queue, no counters); a delay goes through the queue.
        m.agent_pass("n1", "userspace", &[(attachment("rate"), true, None), (attachment("delay"), true, Some([5, 0, 5, 0, 0, 0, 0, 0]))]);
        assert!(m.encode().contains("container=\"rate\"") && m.encode().contains("container=\"delay\""), "{}", m.encode());
        m.agent_pass("n1", "userspace", &[]);
        assert!(!m.encode().contains("lab=\"lab\""), "{}", m.encode());
    }

    #[test]
    fn task_usage_counts_up_per_network_and_a_task_gone_takes_its_series() {
        use crate::usage::{InterfaceCounters, NetworkUsage, TaskUsage};
        let usage = |container: &str, cpu: f64, rx: u64| TaskUsage {
            container: container.into(),
            service: "kv".into(),
            cpu_seconds: cpu,
            memory_bytes: 5 << 20,
            networks: vec![NetworkUsage { network: "dht".into(), interface: "eth1".into(), counters: InterfaceCounters { rx_bytes: rx, tx_packets: 3, ..Default::default() }, ..Default::default() }],
            ..Default::default()
        };
        let m = Metrics::new();
        let (a, b) = (usage("aaaa", 1.5, 1000), usage("bbbb", 0.5, 10));
        m.task_usage([("lab", &a), ("lab", &b)].into_iter());
        m.task_usage([("lab", &a), ("lab", &b)].into_iter());
        let a2 = usage("aaaa", 2.0, 4000);
        m.task_usage([("lab", &a2)].into_iter());
        // b's last sample, dying, had no interfaces: its network series go all the same.
        let b_dying = TaskUsage { networks: vec![], ..usage("bbbb", 0.6, 0) };
        m.task_usage([("lab", &a2), ("lab", &b_dying)].into_iter());
        m.task_usage([("lab", &a2)].into_iter());
        let text = m.encode();
        for line in [
            "swarmlab_task_cpu_seconds_total{lab=\"lab\",service=\"kv\",container=\"aaaa\"} 2.0",
            "swarmlab_task_memory_bytes{lab=\"lab\",service=\"kv\",container=\"aaaa\"} 5242880",
            "swarmlab_task_network_receive_bytes_total{lab=\"lab\",service=\"kv\",container=\"aaaa\",network=\"dht\"} 4000",
            "swarmlab_task_network_transmit_packets_total{lab=\"lab\",service=\"kv\",container=\"aaaa\",network=\"dht\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(!text.contains("bbbb"), "a task no longer sampled keeps no series:\n{text}");
    }
}
