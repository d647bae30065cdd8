//! [`Swarm`] over the Docker Engine API with bollard, negotiating the API version so Engine
//! 20.10 (API 1.41) and newer both work.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bollard::models::{ConfigSpec, EventMessageTypeEnum, NetworkCreateRequest, Service, TaskState};
use bollard::query_parameters::{
    EventsOptions, ListConfigsOptions, ListNetworksOptions, ListServicesOptions, ListTasksOptions, UpdateConfigOptions, UpdateServiceOptions,
};
use bollard::Docker;
use futures::{Stream, StreamExt};

use super::rollout;
use super::endpoint::{DockerEnv, Endpoint, CERT_FILES};
use super::{ContainerChange, EventSubject, Swarm, SwarmError, SwarmEvent, TaskTrouble};
use crate::spec::Mode;
use crate::plan::{labels, memory, DesiredNetwork, DesiredService, LabMemory, Observed, ObservedNetwork, ObservedService, TaskExit, TroubleCause};

#[derive(Clone)]
pub struct DockerSwarm {
    docker: Docker,
    calls: Arc<AtomicU64>,
    /// Whether the daemon's containers are processes of this machine, once a container told.
    pub(super) runs_here: Arc<tokio::sync::OnceCell<bool>>,
}

/// The innermost cause says why ("Connection refused", "No such file or directory", "received
/// fatal alert: CertificateUnknown"); bollard's and hyper's wrappers around it say nothing more.
fn innermost_cause(e: &bollard::errors::Error) -> String {
    std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| e.source()).last().map(|c| c.to_string()).unwrap_or_default()
}

/// A bollard error as ours, told apart where the controller acts on the difference.
pub(crate) fn api_err(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> SwarmError {
    let action = action.into();
    move |e| {
        // No answer at all (dockerd stopped or restarting, a wrong socket): say so, not
        // "client error (Connect)".
        let unreachable = match &e {
            bollard::errors::Error::HyperLegacyError { err } => err.is_connect(),
            bollard::errors::Error::IOError { err } => {
                use std::io::ErrorKind::*;
                matches!(err.kind(), ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe | NotFound | PermissionDenied)
            }
            bollard::errors::Error::SocketNotFoundError(_) => true,
            _ => false,
        };
        if unreachable {
            return SwarmError::Connect(format!("{action}: {}", innermost_cause(&e)));
        }
        let message = match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message,
            other => other.to_string(),
        };
        // A network still attached: "has active endpoints" (the engine), "is in use by task"
        // (Swarm, while the removed services' tasks stop).
        // A config a service still names: "is in use by the following service".
        if message.contains("has active endpoints") || message.contains("is in use by task") || message.contains("is in use by the following service") {
            return SwarmError::InUse { action, message };
        }
        SwarmError::Api { action, message }
    }
}

/// Why the first call to the daemon failed, said as what to look at.
async fn first_call_failed(endpoint: &Endpoint, e: bollard::errors::Error) -> SwarmError {
    use bollard::errors::Error::{DockerResponseServerError, HyperLegacyError};
    // ssh's own words (a refused key, an unknown host key, no docker there) are the ones to
    // act on; the connection only saw its output end.
    if let Endpoint::Ssh { target, .. } = endpoint {
        if let Some(said) = target.diagnose().await {
            return SwarmError::Endpoint(format!("{endpoint}: `{}` failed: {said}{}", target.shown(), ssh_advice(&said)));
        }
    }
    match (endpoint, &e) {
        // A daemon that refuses our certificate (or whose certificate we refuse) ends the
        // connection during or right after the handshake: the certificates are what to look
        // at, not whether dockerd runs.
        (Endpoint::Tls { .. }, HyperLegacyError { .. }) => SwarmError::Endpoint(format!("{endpoint}: {}", innermost_cause(&e))),
        // dockerd --tlsverify asked in plain HTTP (Go's TLS server answers so).
        (Endpoint::Http(addr), DockerResponseServerError { message, .. }) if message.contains("HTTPS server") => SwarmError::Endpoint(format!(
            "{addr} answers only TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to the directory of ca.pem, cert.pem and key.pem, as for the docker CLI"
        )),
        _ => api_err("version")(e),
    }
}

/// What to do about what ssh said, for the common cases.
fn ssh_advice(said: &str) -> &'static str {
    if said.contains("Host key verification failed") {
        " (labd and labctl accept no new host key: `ssh` to it once, or add its key to known_hosts)"
    } else if said.contains("Permission denied") {
        " (keys or ssh-agent only, no passwords: the key must work for `ssh -o BatchMode=yes` as this user)"
    } else if said.contains("command not found") || said.contains("No such file") {
        " (the docker CLI must be on the manager's PATH for ssh://, as for the docker CLI's own ssh)"
    } else {
        ""
    }
}

impl DockerSwarm {
    /// Connects to `host` (`unix:///var/run/docker.sock`, `tcp://…`), else to the daemon the
    /// docker CLI would reach from this environment (its TLS settings and contexts included).
    pub async fn connect(host: Option<&str>) -> Result<Self, SwarmError> {
        let endpoint = Endpoint::of(&DockerEnv::of_process(host))?;
        let timeout = 120;
        let docker = match &endpoint {
            Endpoint::Unix(path) => Docker::connect_with_unix(path, timeout, bollard::API_DEFAULT_VERSION),
            Endpoint::Http(addr) => Docker::connect_with_http(addr, timeout, bollard::API_DEFAULT_VERSION),
            Endpoint::Tls { addr, certs } => {
                let [ca, cert, key] = CERT_FILES.map(|f| certs.join(f));
                Docker::connect_with_ssl(addr, &key, &cert, &ca, timeout, bollard::API_DEFAULT_VERSION)
            }
            Endpoint::Ssh { target, .. } => super::ssh::docker(target.clone(), timeout),
            Endpoint::Local => Docker::connect_with_local_defaults(),
        }
        .map_err(|e| match e {
            // No socket yet: dockerd not started, or restarting.
            bollard::errors::Error::SocketNotFoundError(_) => SwarmError::Connect(format!("{endpoint}: {e}")),
            e => SwarmError::Endpoint(format!("{endpoint}: {e}")),
        })?;
        let docker = match docker.negotiate_version().await {
            Ok(docker) => docker,
            Err(e) => return Err(first_call_failed(&endpoint, e).await),
        };
        Ok(DockerSwarm { docker, calls: Arc::new(AtomicU64::new(0)), runs_here: Arc::default() })
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub(super) fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Our event for one of Docker's, or `None` for one labd does not act on: a container
    /// event other than a start or a death, or a container joining or leaving a network (not
    /// asked for; its start and death say it, and as a network event it would cost every lab a
    /// full look).
    fn to_event(item: Result<bollard::models::EventMessage, bollard::errors::Error>) -> Option<Result<SwarmEvent, SwarmError>> {
        let e = match item.map_err(api_err("stream events")) {
            Ok(e) => e,
            Err(err) => return Some(Err(err)),
        };
        let subject = match (e.typ, e.action.as_deref()) {
            (Some(EventMessageTypeEnum::SERVICE), _) => EventSubject::Service,
            (Some(EventMessageTypeEnum::NETWORK), Some("connect" | "disconnect")) => return None,
            (Some(EventMessageTypeEnum::NETWORK), _) => EventSubject::Network,
            (Some(EventMessageTypeEnum::NODE), _) => EventSubject::Node,
            (Some(EventMessageTypeEnum::CONTAINER), Some(action)) => EventSubject::Container(ContainerChange::from_action(action)?),
            (Some(EventMessageTypeEnum::CONFIG), Some("remove")) => EventSubject::MemoryRemoved,
            _ => return None,
        };
        let attrs = e.actor.and_then(|a| a.attributes).unwrap_or_default();
        let name = attrs.get("name").cloned().unwrap_or_default();
        if subject == EventSubject::MemoryRemoved {
            // Only memory configs; they carry no labels in the event, their name says the lab.
            let lab = memory::lab_of_memory(&name)?.to_string();
            return Some(Ok(SwarmEvent { subject, name, lab: Some(lab) }));
        }
        let lab = attrs
            .get(labels::LAB)
            .or_else(|| attrs.get(labels::STACK_NAMESPACE))
            .cloned()
            .or_else(|| attrs.get("com.docker.swarm.service.name").and_then(|s| s.split_once('_')).map(|(l, _)| l.to_string()))
            .or_else(|| name.split_once('_').map(|(l, _)| l.to_string()));
        Some(Ok(SwarmEvent { subject, name, lab }))
    }
}

pub(super) fn observed_service(s: Service) -> Option<ObservedService> {
    let spec = s.spec?;
    let spec_mode = spec.mode.clone().unwrap_or_default();
    let (mode, replicas) = if let Some(job) = &spec_mode.replicated_job {
        (Mode::ReplicatedJob, Some(job.total_completions.or(job.max_concurrent).unwrap_or(1).max(0) as u64))
    } else if spec_mode.global_job.is_some() {
        (Mode::GlobalJob, None)
    } else if spec_mode.global.is_some() {
        (Mode::Global, None)
    } else {
        (Mode::Replicated, Some(spec_mode.replicated.and_then(|r| r.replicas).unwrap_or(1).max(0) as u64))
    };
    // A job's tasks of its current run carry this; a rerun (any update) increments it.
    let job_run = mode.is_job().then(|| s.job_status.and_then(|j| j.job_iteration).and_then(|v| v.index).unwrap_or(0));
    let image = spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let force_update = spec.task_template.as_ref().and_then(|t| t.force_update).unwrap_or(0);
    let template_digest = spec.task_template.as_ref().map_or(0, rollout::spec_digest);
    let template_settings_digest = spec.task_template.as_ref().map_or(0, rollout::settings_digest);
    let settings_digest = rollout::service_settings_digest(&spec);
    Some(ObservedService {
        id: s.id?,
        name: spec.name.unwrap_or_default(),
        version: s.version.and_then(|v| v.index).unwrap_or(0),
        labels: spec.labels.unwrap_or_default(),
        replicas,
        mode,
        job_run,
        image,
        // Counted from the tasks (see `tally_tasks`).
        running: 0,
        // A global service's count comes from its tasks (see `tally_tasks`).
        desired: replicas.unwrap_or(0),
        stopping: 0,
        trouble: None,
        completed: None,
        exits: vec![],
        // Placed from the tasks (see `place_running`).
        running_on: Default::default(),
        force_update,
        rollout: rollout::rollout_of(s.update_status),
        template_digest,
        template_settings_digest,
        settings_digest,
        // The controller's memory (see `ObservedService::applied_settings`).
        applied_settings: None,
        // Counted from the tasks (see `tally_tasks`).
        outdated: 0,
        outdated_by_restart: false,
    })
}

impl DockerSwarm {
    /// (id, hostname, Ready) of every node.
    async fn nodes(&self) -> Result<Vec<(String, String, bool)>, SwarmError> {
        self.count();
        let nodes = self.docker.list_nodes(None::<bollard::query_parameters::ListNodesOptions>).await.map_err(api_err("list nodes"))?;
        Ok(nodes
            .into_iter()
            .filter_map(|n| {
                let ready = n.status.as_ref().and_then(|s| s.state) == Some(bollard::models::NodeState::READY);
                let id = n.id?;
                let host = n.description.and_then(|d| d.hostname).unwrap_or_else(|| id.clone());
                Some((id, host, ready))
            })
            .collect())
    }

    /// The hostnames of the nodes each service's running tasks are on.
    fn place_running(tasks: &[bollard::models::Task], services: &mut [ObservedService], nodes: &[(String, String, bool)]) {
        for s in services.iter_mut() {
            s.running_on = tasks
                .iter()
                .filter(|t| t.service_id.as_deref() == Some(s.id.as_str()) && t.status.as_ref().and_then(|st| st.state) == Some(TaskState::RUNNING))
                .filter_map(|t| nodes.iter().find(|(id, _, _)| t.node_id.as_deref() == Some(id.as_str())).map(|(_, host, _)| host.clone()))
                .collect();
        }
    }

    /// Every task, the retained history included.
    async fn list_tasks(&self) -> Result<Vec<bollard::models::Task>, SwarmError> {
        self.count();
        self.docker.list_tasks(None::<ListTasksOptions>).await.map_err(api_err("list tasks"))
    }

    /// Counts running tasks on Ready nodes (and the tasks a global service wants) and finds each
    /// short service's newest task problem, from one listing of every task. Tasks Swarm is stopping (a scale-down, a stop, the old
    /// task of an update) whose containers still run are counted apart: a lab is not Ready (or
    /// Completed) while they run, and they never stand in for a new task not yet started.
    fn tally_tasks(tasks: Vec<bollard::models::Task>, services: &mut [ObservedService], down: &[(String, String)]) {
        Self::tally_tasks_at(tasks, services, down, chrono::Utc::now());
    }

    fn tally_tasks_at(mut tasks: Vec<bollard::models::Task>, services: &mut [ObservedService], down: &[(String, String)], now: chrono::DateTime<chrono::Utc>) {
        tasks.sort_by_key(|t| std::cmp::Reverse(t.updated_at.clone().unwrap_or_default()));
        for s in services.iter_mut() {
            let mine = || tasks.iter().filter(|t| t.service_id.as_deref() == Some(s.id.as_str()));
            if let Some(run) = s.job_run {
                let id = s.id.clone();
                let of_run = tasks.iter().filter(|t| t.service_id.as_deref() == Some(id.as_str()) && t.job_iteration.as_ref().and_then(|v| v.index).unwrap_or(0) == run);
                Self::tally_job(of_run, s, down);
                continue;
            }
            if s.replicas.is_none() {
                // As Swarm's own service status counts a global service: its tasks that are
                // not to be shut down (one per eligible node).
                s.desired = mine().filter(|t| !matches!(t.desired_state, Some(TaskState::SHUTDOWN | TaskState::REMOVE) | None)).count() as u64;
            }
            let up = || {
                mine()
                    .filter(|t| t.status.as_ref().and_then(|st| st.state) == Some(TaskState::RUNNING))
                    .filter(|t| !down.iter().any(|(id, _)| t.node_id.as_deref() == Some(id.as_str())))
                    .filter(|t| !settling(mine(), t, now))
            };
            let (mut running, mut outdated, mut stopping, mut only_restarted) = (0, 0, 0, true);
            for t in up() {
                if t.desired_state != Some(TaskState::RUNNING) {
                    stopping += 1;
                } else if s.rollout.is_none() || t.spec.as_ref().map(rollout::spec_digest) == Some(s.template_digest) {
                    // While Swarm rolls a change out, a task on an earlier spec is not one the
                    // lab wants: outside a rollout every task is (Swarm replaces none), which
                    // also keeps a spec some Engine reports otherwise from holding a lab back.
                    running += 1;
                } else {
                    outdated += 1;
                    only_restarted &= t.spec.as_ref().map(rollout::settings_digest) == Some(s.template_settings_digest);
                }
            }
            (s.running, s.outdated, s.stopping) = (running, outdated, stopping);
            s.outdated_by_restart = outdated > 0 && only_restarted;
            s.trouble = if s.running < s.desired { service_trouble(mine()) } else { None };
            s.exits = restarted_exits(mine());
        }
    }

    /// A job's current run, from its tasks of that run (newest first): Swarm wants each
    /// `complete` (a running one is not stopping), one that failed is shut down and replaced,
    /// and those of an earlier run are no part of it.
    fn tally_job<'t>(run: impl Iterator<Item = &'t bollard::models::Task> + Clone, s: &mut ObservedService, down: &[(String, String)]) {
        let state = |t: &bollard::models::Task| t.status.as_ref().and_then(|st| st.state);
        let wanted = |t: &&bollard::models::Task| t.desired_state == Some(TaskState::COMPLETE);
        if s.replicas.is_none() {
            // A global job: one task per eligible node, each to complete.
            s.desired = run.clone().filter(wanted).count() as u64;
        }
        let up = run.clone().filter(|t| state(t) == Some(TaskState::RUNNING)).filter(|t| !down.iter().any(|(id, _)| t.node_id.as_deref() == Some(id.as_str())));
        s.running = up.clone().filter(wanted).count() as u64;
        s.stopping = up.filter(|t| !wanted(t)).count() as u64;
        let completed = run.clone().filter(|t| state(t) == Some(TaskState::COMPLETE)).count() as u64;
        s.completed = Some(completed);
        s.trouble = if completed < s.desired { run.filter(|t| state(t) != Some(TaskState::COMPLETE)).find_map(trouble_of) } else { None };
    }

    /// The observation with `tasks` counted on the nodes that are up. Swarm's own count lags:
    /// it keeps counting the tasks of a Down node as running, and for a while after the node
    /// returns, so labd counts running tasks on Ready nodes itself.
    async fn counted(&self, tasks: Vec<bollard::models::Task>, mut services: Vec<ObservedService>, networks: Vec<ObservedNetwork>) -> Result<Observed, SwarmError> {
        let nodes = self.nodes().await?;
        Self::place_running(&tasks, &mut services, &nodes);
        let down: Vec<(String, String)> = nodes.into_iter().filter(|(_, _, ready)| !ready).map(|(id, host, _)| (id, host)).collect();
        Self::tally_tasks(tasks, &mut services, &down);
        Ok(Observed { services, networks, down_nodes: down.into_iter().map(|(_, host)| host).collect(), neighbours: vec![] })
    }
}

/// Why a service's tasks (newest first) do not all run: its newest task's problem, unless that
/// task is only on its way (pending, starting) after one that failed for a cause that comes
/// back (an unhealthy container, a missing image): a crash loop says why it loops, not that its
/// next try starts. Swarm's restart delay is most of such a loop, but no event marks the
/// failure itself, so a pass may well see only the tries.
///
/// Newest by creation, not by last update: Swarm marks a failed task for shutdown a moment
/// after it creates its replacement, which made the failure the newest task again and the
/// service flap failing → starting → failing (two `TasksFailing` events for one failure).
fn service_trouble<'t>(tasks: impl Iterator<Item = &'t bollard::models::Task> + Clone) -> Option<TaskTrouble> {
    let mut by_creation: Vec<&bollard::models::Task> = tasks.clone().collect();
    by_creation.sort_by_key(|t| std::cmp::Reverse(created(t)));
    let mut not_running = by_creation.into_iter().filter_map(|t| Some((t, trouble_of(t)?)));
    let (newest_task, newest) = not_running.next()?;
    if ended(newest_task) {
        let looping = slot_from(tasks, newest_task).nth(1).and_then(|older| failed_twice(newest_task, older));
        return Some(looping.unwrap_or(newest));
    }
    if let Some(failure) = crash_loop_before(tasks, newest_task) {
        return Some(failure);
    }
    match not_running.map(|(_, t)| t).find(|t| t.failed) {
        Some(failure) if failure.cause.is_some_and(TroubleCause::outlasts_a_try) => Some(failure),
        _ => Some(newest),
    }
}

/// How close together two failures of one slot must come to make a crash loop: Swarm's
/// default restart delay is 5 s, a task that exits at once fails every ~6 s.
const CRASH_LOOP_WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// How long a task of a crash-looping slot must run before it counts as running: a task that
/// exits a moment after its start is seen running by some passes, which made such a lab flap
/// to Ready (and `labctl wait --for ready` return) between failures.
const CRASH_LOOP_SETTLE: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// `t` and the tasks created before it in its slot (its node, for a global service), newest
/// first. By creation, not by last update: Swarm marks a failed task for shutdown a moment
/// after it creates its replacement.
fn slot_from<'t>(tasks: impl Iterator<Item = &'t bollard::models::Task>, t: &'t bollard::models::Task) -> impl Iterator<Item = &'t bollard::models::Task> {
    let mut slot: Vec<&bollard::models::Task> = tasks.filter(|x| same_slot(x, t)).collect();
    slot.sort_by_key(|x| std::cmp::Reverse(created(x)));
    slot.into_iter().skip_while(move |x| !std::ptr::eq(*x, t))
}

fn same_slot(a: &bollard::models::Task, b: &bollard::models::Task) -> bool {
    match b.slot {
        Some(slot) => a.slot == Some(slot),
        None => a.node_id == b.node_id,
    }
}

fn created(t: &bollard::models::Task) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    t.created_at.as_deref().and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
}

/// When the service's tasks that were restarted ended: each ran and ended on its own (failed,
/// or completed), and Swarm created a newer task in its slot. Its desired state does not tell:
/// with `restartPolicy.condition: none` (or `on-failure` after exit 0) Swarm marks an ended
/// task `shutdown` too and starts none. A task `rejected` never ran; one `shutdown` was stopped
/// (an update, a scale-down, a removal). The newest creation per slot is found once: a look
/// walks every task Swarm keeps (5 per slot), not every pair of them.
fn restarted_exits<'t>(tasks: impl Iterator<Item = &'t bollard::models::Task> + Clone) -> Vec<TaskExit> {
    // A replicated service's slot number, a global service's node.
    let slot_of = |t: &bollard::models::Task| t.slot.map_or_else(|| t.node_id.clone().unwrap_or_default(), |n| n.to_string());
    let mut newest = HashMap::new();
    for (slot, at) in tasks.clone().filter_map(|t| Some((slot_of(t), created(t)?))) {
        newest.entry(slot).and_modify(|n: &mut chrono::DateTime<chrono::FixedOffset>| *n = (*n).max(at)).or_insert(at);
    }
    tasks
        .filter(|t| ended(t) && t.status.as_ref().and_then(|st| st.state) != Some(TaskState::REJECTED))
        .filter_map(|t| {
            let slot = slot_of(t);
            let replaced = created(t).is_some_and(|at| newest.get(&slot).is_some_and(|n| *n > at));
            let at = status_time(t)?.with_timezone(&chrono::Utc);
            replaced.then_some(TaskExit { slot, at })
        })
        .collect()
}

fn status_time(t: &bollard::models::Task) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    t.status.as_ref()?.timestamp.as_deref().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
}

/// A crash loop's failure: `newer` and `older`, one after the other in a slot, both ended
/// (failed, rejected, or returned: a service's task is to keep running, and a command that
/// returns at once loops as surely as one that fails), `CRASH_LOOP_WINDOW` apart at most. One
/// end is not a loop (a schedule's kill, an OOM kill): the lab is Progressing while its
/// replacement starts.
fn failed_twice(newer: &bollard::models::Task, older: &bollard::models::Task) -> Option<TaskTrouble> {
    let close = status_time(newer)? - status_time(older)? <= CRASH_LOOP_WINDOW;
    let failure = trouble_of(newer)?;
    // A missing image is rejected before anything runs: no loop of its own to speak of.
    let looping = if failure.cause == Some(TroubleCause::ImageMissing) {
        String::new()
    } else {
        format!(" (again and again: a crash loop; a task of it counts as running once it has run {} s)", CRASH_LOOP_SETTLE.num_seconds())
    };
    (close && ended(newer) && ended(older)).then(|| TaskTrouble {
        message: format!("{}{looping}", failure.message),
        failed: true,
        ..failure
    })
}

/// A task of a service kept running that stopped on its own: it failed, Swarm rejected it, or
/// its command returned.
fn ended(t: &bollard::models::Task) -> bool {
    matches!(t.status.as_ref().and_then(|st| st.state), Some(TaskState::FAILED | TaskState::REJECTED | TaskState::COMPLETE))
}

/// The crash loop `t` (running, or on its way) is one more try of: the two tasks before it in
/// its slot ended (see [`failed_twice`]).
fn crash_loop_before<'t>(tasks: impl Iterator<Item = &'t bollard::models::Task>, t: &'t bollard::models::Task) -> Option<TaskTrouble> {
    let mut before = slot_from(tasks, t).skip(1);
    failed_twice(before.next()?, before.next()?)
}

/// A task running for less than `CRASH_LOOP_SETTLE` after its slot failed twice in a row.
fn settling<'t>(tasks: impl Iterator<Item = &'t bollard::models::Task>, t: &'t bollard::models::Task, now: chrono::DateTime<chrono::Utc>) -> bool {
    status_time(t).is_some_and(|since| now.signed_duration_since(since) < CRASH_LOOP_SETTLE) && crash_loop_before(tasks, t).is_some()
}

/// What a task that is not running says about why.
fn trouble_of(t: &bollard::models::Task) -> Option<TaskTrouble> {
    let status = t.status.clone()?;
    let state = status.state.unwrap_or(TaskState::NEW);
    if state == TaskState::RUNNING {
        return None;
    }
    let message = status.err.filter(|e| !e.is_empty()).or(status.message)?;
    let cause = if message.contains("No such image") || message.contains("does not exist") {
        Some(TroubleCause::ImageMissing)
    } else if message.contains("unhealthy container") {
        Some(TroubleCause::Unhealthy)
    } else if message.contains("no suitable node") && message.contains("port already in use") {
        Some(TroubleCause::PortInUse)
    } else if message.contains("no suitable node") {
        Some(TroubleCause::Unschedulable)
    } else if message.ends_with("non-zero exit (127)") || message.ends_with("non-zero exit (126)") {
        Some(TroubleCause::CommandNotFound { not_executable: message.ends_with("(126)") })
    } else if message.ends_with("non-zero exit (137)") {
        Some(TroubleCause::Killed)
    } else if state == TaskState::COMPLETE {
        // Of a service kept running (a job's completed tasks are no trouble).
        Some(TroubleCause::CommandReturned)
    } else {
        None
    };
    let failed = matches!(state, TaskState::FAILED | TaskState::REJECTED);
    Some(TaskTrouble { state: state.to_string(), message, node: t.node_id.clone().unwrap_or_default(), failed, cause })
}

impl Swarm for DockerSwarm {
    async fn recount(&self, observed: &Observed) -> Result<Observed, SwarmError> {
        let tasks = self.list_tasks().await?;
        let recounted = self.counted(tasks, observed.services.clone(), observed.networks.clone()).await?;
        Ok(Observed { neighbours: observed.neighbours.clone(), ..recounted })
    }

    async fn observe_all(&self) -> Result<Observed, SwarmError> {
        // Tasks before services: a service listed is never paired with tasks listed after its
        // removal began (they would all look stopped, and the service would look scaled to 0).
        let tasks = self.list_tasks().await?;
        self.count();
        let services = self
            .docker
            // Without Swarm's status (it costs dockerd half again the listing): the tasks
            // listed above give the counts.
            .list_services(Some(ListServicesOptions { filters: None, status: Some(false) }))
            .await
            .map_err(api_err("list services"))?;
        self.count();
        let networks = self.docker.list_networks(None::<ListNetworksOptions>).await.map_err(api_err("list networks"))?;
        let services: Vec<ObservedService> = services.into_iter().filter_map(observed_service).collect();
        let networks = networks
            .into_iter()
            .filter(|n| n.scope.as_deref() == Some("swarm") || n.labels.as_ref().is_some_and(|l| labels::owner(l).is_some()))
            .filter_map(|n| {
                let subnet = n.ipam.as_ref().and_then(|i| i.config.as_ref()).and_then(|c| c.iter().find_map(|c| c.subnet.clone()));
                Some(ObservedNetwork {
                    id: n.id?,
                    name: n.name.unwrap_or_default(),
                    labels: n.labels.unwrap_or_default(),
                    subnet,
                    internal: n.internal.unwrap_or(false),
                })
            })
            .collect();
        self.counted(tasks, services, networks).await
    }

    /// Service, network and node events, task containers starting or dying, and memory configs
    /// removed, each tagged with the lab it belongs to.
    fn events(&self) -> impl Stream<Item = Result<SwarmEvent, SwarmError>> + Send + 'static {
        let types = ["service", "network", "container", "node", "config"];
        // Docker ANDs the keys: of every type, only the actions labd acts on. A task
        // container's create and destroy still come (dropped in `to_event`); the rest of its
        // life (attach, exec, kill, stop, network connect and disconnect) is not sent.
        let actions = ["create", "update", "remove", "destroy"].into_iter().chain(ContainerChange::ACTIONS);
        let filters: HashMap<String, Vec<String>> = HashMap::from([
            ("type".to_string(), types.map(String::from).to_vec()),
            ("event".to_string(), actions.map(String::from).collect()),
        ]);
        let options = EventsOptions { filters: Some(filters), ..Default::default() };
        self.docker.events(Some(options)).filter_map(|item| async move { Self::to_event(item) })
    }


    async fn create_network(&self, net: &DesiredNetwork) -> Result<(), SwarmError> {
        self.count();
        let request = NetworkCreateRequest {
            name: net.name.clone(),
            driver: Some("overlay".into()),
            internal: Some(net.internal),
            // Attachable so probes and the node agent's tools can join for measurements.
            attachable: Some(true),
            ipam: super::spec::ipam(net),
            labels: Some(net.labels.clone()),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            // Swarm lists a new network a moment after creating it; a clash with an object we
            // do not own is reported by the next observe, so this is not an error.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                return Err(SwarmError::AlreadyExists(net.name.clone()))
            }
            other => other.map(|_| ()).map_err(api_err(format!("create network {}", net.name)))?,
        }
        // Swarm makes a new network usable by services a moment after answering; wait for it
        // so the services created next do not fail with "network not found".
        for _ in 0..40 {
            self.count();
            if self.docker.inspect_network(&net.name, None::<bollard::query_parameters::InspectNetworkOptions>).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn remove_network(&self, id: &str) -> Result<(), SwarmError> {
        self.count();
        match self.docker.remove_network(id).await {
            // Gone already (404, or Swarm's "not found" while it finishes a removal): done.
            Err(bollard::errors::Error::DockerResponseServerError { status_code, message }) if status_code == 404 || message.contains("not found") => Err(SwarmError::NotFound(format!("network {id}"))),
            other => other.map_err(api_err(format!("remove network {id}"))),
        }
    }

    async fn task_addresses(&self, network: &str) -> Result<super::TaskAddresses, SwarmError> {
        self.count();
        let options = bollard::query_parameters::InspectNetworkOptionsBuilder::default().verbose(true).scope("swarm").build();
        let inspected = self.docker.inspect_network(network, Some(options)).await.map_err(api_err(format!("inspect network {network}")))?;
        // `Services` (verbose only): {name: {Tasks: [{EndpointIP: "10.0.1.5", …}]}}.
        let mut out = super::TaskAddresses::new();
        for (service, info) in inspected.services.unwrap_or_default() {
            let tasks = info.get("Tasks").and_then(|t| t.as_array()).cloned().unwrap_or_default();
            let mut ips: Vec<std::net::Ipv4Addr> = tasks.iter().filter_map(|t| t.get("EndpointIP")?.as_str()?.parse().ok()).collect();
            ips.sort();
            ips.dedup();
            out.insert(service, ips);
        }
        Ok(out)
    }

    async fn create_service(&self, svc: &DesiredService) -> Result<(), SwarmError> {
        let config_ids = self.ensure_files(svc).await?;
        self.count();
        match self.docker.create_service(super::spec::service_spec(svc, &config_ids), None).await {
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                Err(SwarmError::AlreadyExists(svc.name.clone()))
            }
            other => other.map(|_| ()).map_err(api_err(format!("create service {}", svc.name))),
        }
    }

    async fn update_service(&self, id: &str, version: u64, force_update: u64, svc: &DesiredService) -> Result<(), SwarmError> {
        let config_ids = self.ensure_files(svc).await?;
        self.count();
        let options = UpdateServiceOptions { version: version as i32, ..Default::default() };
        let mut spec = super::spec::service_spec(svc, &config_ids);
        if let Some(template) = spec.task_template.as_mut().filter(|_| force_update > 0) {
            template.force_update = Some(force_update);
        }
        self.docker
            .update_service(id, spec, options, None)
            .await
            .map_err(api_err(format!("update service {}", svc.name)))?;
        Ok(())
    }

    async fn remove_service(&self, id: &str) -> Result<(), SwarmError> {
        self.count();
        match self.docker.delete_service(id).await {
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Err(SwarmError::NotFound(format!("service {id}"))),
            other => other.map_err(api_err(format!("remove service {id}"))),
        }
    }

    async fn memories(&self) -> Result<BTreeMap<String, LabMemory>, SwarmError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE)])]);
        let configs = self.list_configs(filters).await?;
        Ok(configs.iter().filter_map(|c| {
            let spec = c.spec.as_ref()?;
            LabMemory::from_config(spec.name.as_deref()?, spec.labels.as_ref()?)
        }).collect())
    }

    async fn remember(&self, lab: &str, memory: &LabMemory) -> Result<(), SwarmError> {
        let name = memory::memory_name(lab);
        let action = format!("write config {name}");
        let found = self.memory_config(&name).await?;
        let labels = memory.labels(lab);
        self.count();
        let Some(config) = found else {
            let spec = ConfigSpec { name: Some(name.clone()), labels: Some(labels), data: Some(memory::DATA_BASE64.into()), ..Default::default() };
            return self.docker.create_config(spec).await.map(|_| ()).map_err(api_err(action));
        };
        let mut spec = config.spec.unwrap_or_default();
        if !spec.labels.as_ref().is_some_and(|l| labels::owned_by(lab, l)) {
            return Err(SwarmError::Api { action, message: format!("a config named {name} exists that swarmlab does not own; it is left alone") });
        }
        spec.labels = Some(labels);
        let version = config.version.and_then(|v| v.index).unwrap_or_default() as i64;
        let id = config.id.unwrap_or(name);
        self.docker.update_config(&id, spec, UpdateConfigOptions { version }).await.map_err(api_err(action))
    }

    async fn prune_files(&self, lab: &str, keep: &BTreeSet<String>) -> Result<(), SwarmError> {
        self.remove_files(lab, keep).await
    }

    async fn forget(&self, lab: &str) -> Result<(), SwarmError> {
        // One listing for the files and the memory: both carry the lab's label.
        let configs = self.list_configs(HashMap::from([("label".to_string(), vec![format!("{}={lab}", labels::LAB)])])).await?;
        if let Some(e) = self.delete_files(lab, &configs, &BTreeSet::new()).await.into_iter().next() {
            return Err(e); // the memory goes last, so a teardown cut short still finds the lab by it
        }
        let name = memory::memory_name(lab);
        let Some(config) = configs.iter().find(|c| c.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name.as_str())) else { return Ok(()) };
        if !config.spec.as_ref().and_then(|s| s.labels.as_ref()).is_some_and(|l| labels::owned_by(lab, l)) {
            return Ok(()); // not ours: never touched
        }
        self.count();
        match self.docker.delete_config(config.id.as_deref().unwrap_or(&name)).await {
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            other => other.map_err(api_err(format!("remove config {name}"))),
        }
    }

    fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl DockerSwarm {
    pub(super) async fn list_configs(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<bollard::models::Config>, SwarmError> {
        self.count();
        self.docker.list_configs(Some(ListConfigsOptions { filters: Some(filters) })).await.map_err(api_err("list configs"))
    }

    /// The config named `name` exactly (Docker's name filter also matches longer names).
    async fn memory_config(&self, name: &str) -> Result<Option<bollard::models::Config>, SwarmError> {
        let configs = self.list_configs(HashMap::from([("name".to_string(), vec![name.to_string()])])).await?;
        Ok(configs.into_iter().find(|c| c.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{Task, TaskStatus};

    /// A daemon that does not answer (stopped, restarting, the wrong socket) is named as such,
    /// with what to check, not as bollard's "client error (Connect)".
    #[tokio::test]
    async fn a_daemon_that_does_not_answer_is_unreachable_not_an_api_error() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let socket = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).expect("a socket")); // left behind, refusing
        let docker = Docker::connect_with_unix(&socket.to_string_lossy(), 5, bollard::API_DEFAULT_VERSION).expect("a client");
        let e = docker.list_services(None::<bollard::query_parameters::ListServicesOptions>).await.map_err(api_err("list services")).expect_err("nothing listens");
        let text = e.to_string();
        assert!(matches!(e, SwarmError::Connect(_)) && text.starts_with("cannot reach the Docker daemon: list services: Connection refused") && text.contains("is dockerd running?"), "{text}");
        let refused = api_err("list tasks")(bollard::errors::Error::IOError { err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused) });
        assert!(matches!(refused, SwarmError::Connect(_)), "{refused}");
        let other = api_err("copy out")(bollard::errors::Error::IOError { err: std::io::Error::other("unexpected end of archive") });
        assert!(matches!(other, SwarmError::Api { .. }), "{other}");
        // An answer, even an error, is the daemon's.
        let answered = api_err("create service x")(bollard::errors::Error::DockerResponseServerError { status_code: 500, message: "rpc error: bad".into() });
        assert_eq!(answered.to_string(), "create service x: rpc error: bad");
    }

    fn task(service: &str, node: &str, desired: TaskState, state: TaskState) -> Task {
        Task {
            service_id: Some(service.into()),
            node_id: Some(node.into()),
            desired_state: Some(desired),
            status: Some(TaskStatus { state: Some(state), ..Default::default() }),
            ..Default::default()
        }
    }

    fn docker_event(typ: EventMessageTypeEnum, action: &str, name: &str) -> Result<bollard::models::EventMessage, bollard::errors::Error> {
        let attributes = HashMap::from([("name".to_string(), name.to_string())]);
        let actor = bollard::models::EventActor { id: Some("id".into()), attributes: Some(attributes) };
        Ok(bollard::models::EventMessage { typ: Some(typ), action: Some(action.into()), actor: Some(actor), ..Default::default() })
    }

    #[test]
    fn container_starts_and_deaths_are_kept_and_network_attachments_dropped() {
        let subject = |typ, action| DockerSwarm::to_event(docker_event(typ, action, "lab_web.1.x")).map(|e| e.unwrap().subject);
        assert_eq!(subject(EventMessageTypeEnum::CONTAINER, "start"), Some(EventSubject::Container(ContainerChange::Started)));
        assert_eq!(subject(EventMessageTypeEnum::CONTAINER, "die"), Some(EventSubject::Container(ContainerChange::Died)));
        assert_eq!(subject(EventMessageTypeEnum::CONTAINER, "exec_start"), None);
        // Each task's container joining its network: said by its start already.
        assert_eq!(subject(EventMessageTypeEnum::NETWORK, "connect"), None);
        assert_eq!(subject(EventMessageTypeEnum::NETWORK, "disconnect"), None);
        assert_eq!(subject(EventMessageTypeEnum::NETWORK, "destroy"), Some(EventSubject::Network));
        assert_eq!(subject(EventMessageTypeEnum::SERVICE, "remove"), Some(EventSubject::Service));
        let lab = DockerSwarm::to_event(docker_event(EventMessageTypeEnum::SERVICE, "remove", "lab_web")).unwrap().unwrap().lab;
        assert_eq!(lab.as_deref(), Some("lab"));
    }

    #[test]
    fn each_service_s_running_tasks_are_placed_on_their_nodes_by_hostname() {
        let mut services = vec![ObservedService { id: "s".into(), ..Default::default() }, ObservedService { id: "idle".into(), ..Default::default() }];
        let tasks = vec![
            task("s", "n1", TaskState::RUNNING, TaskState::RUNNING),
            task("s", "n2", TaskState::RUNNING, TaskState::RUNNING),
            task("s", "n3", TaskState::RUNNING, TaskState::STARTING),
            task("other", "n3", TaskState::RUNNING, TaskState::RUNNING),
        ];
        let nodes = [("n1".into(), "alpha".into(), true), ("n2".into(), "beta".into(), false), ("n3".into(), "gamma".into(), true)];
        DockerSwarm::place_running(&tasks, &mut services, &nodes);
        assert_eq!(services[0].running_on.iter().map(String::as_str).collect::<Vec<_>>(), ["alpha", "beta"]);
        assert!(services[1].running_on.is_empty());
    }

    #[test]
    fn during_a_rollout_a_task_on_the_previous_spec_is_outdated_and_after_it_counts_again() {
        let spec = |env: &str| bollard::models::TaskSpec {
            container_spec: Some(bollard::models::TaskSpecContainerSpec { image: Some("labbox:latest".into()), env: Some(vec![env.into()]), ..Default::default() }),
            ..Default::default()
        };
        let on = |env: &str| Task { spec: Some(spec(env)), ..task("s", "n1", TaskState::RUNNING, TaskState::RUNNING) };
        let service = |rollout| ObservedService { id: "s".into(), replicas: Some(3), desired: 3, template_digest: rollout::spec_digest(&spec("V=2")), rollout, ..Default::default() };
        let tasks = vec![on("V=2"), on("V=1"), on("V=1"), Task { spec: Some(spec("V=2")), ..task("s", "n1", TaskState::RUNNING, TaskState::STARTING) }];
        let updating = Some(crate::plan::Rollout { state: crate::plan::RolloutState::Updating, message: "update in progress".into() });
        let mut services = vec![service(updating)];
        DockerSwarm::tally_tasks(tasks.clone(), &mut services, &[]);
        assert_eq!((services[0].running, services[0].outdated), (1, 2));
        // Outside a rollout Swarm replaces no task: each counts.
        let mut services = vec![service(None)];
        DockerSwarm::tally_tasks(tasks, &mut services, &[]);
        assert_eq!((services[0].running, services[0].outdated), (3, 0));
    }

    #[test]
    fn a_forced_restart_under_way_is_told_from_a_change() {
        let spec = |force: u64| bollard::models::TaskSpec {
            container_spec: Some(bollard::models::TaskSpecContainerSpec { image: Some("labbox:latest".into()), ..Default::default() }),
            force_update: Some(force),
            ..Default::default()
        };
        let on = |spec| Task { spec: Some(spec), ..task("s", "n1", TaskState::RUNNING, TaskState::RUNNING) };
        let updating = Some(crate::plan::Rollout { state: crate::plan::RolloutState::Updating, message: "update in progress".into() });
        let template = spec(1);
        let service = ObservedService { id: "s".into(), replicas: Some(2), desired: 2, template_digest: rollout::spec_digest(&template), template_settings_digest: rollout::settings_digest(&template), rollout: updating, ..Default::default() };
        // `labctl restart`: the one task not yet replaced differs only by the counter.
        let mut services = vec![service.clone()];
        DockerSwarm::tally_tasks(vec![on(spec(1)), on(spec(0))], &mut services, &[]);
        assert_eq!((services[0].running, services[0].outdated, services[0].outdated_by_restart), (1, 1, true));
        // An edit: the task runs another image.
        let mut edited = spec(1);
        edited.container_spec.as_mut().unwrap().image = Some("other:1".into());
        let mut services = vec![service];
        DockerSwarm::tally_tasks(vec![on(spec(1)), on(edited)], &mut services, &[]);
        assert_eq!((services[0].running, services[0].outdated, services[0].outdated_by_restart), (1, 1, false));
    }

    #[test]
    fn tasks_being_stopped_are_counted_apart_and_tasks_on_down_nodes_never() {
        let mut services = vec![ObservedService { id: "s".into(), replicas: Some(1), desired: 1, ..Default::default() }];
        let tasks = vec![
            task("s", "n1", TaskState::RUNNING, TaskState::RUNNING),
            // Scaled down: Swarm wants it shut down, its container still runs.
            task("s", "n1", TaskState::SHUTDOWN, TaskState::RUNNING),
            task("s", "n1", TaskState::SHUTDOWN, TaskState::SHUTDOWN),
            task("s", "n2", TaskState::RUNNING, TaskState::RUNNING),
            task("other", "n1", TaskState::RUNNING, TaskState::RUNNING),
        ];
        DockerSwarm::tally_tasks(tasks, &mut services, &[("n2".into(), "node2".into())]);
        assert_eq!((services[0].running, services[0].stopping), (1, 1));
    }

    #[test]
    fn a_crash_loop_says_why_it_loops_while_its_next_try_starts() {
        let with = |mut t: Task, err: &str| {
            t.status.as_mut().expect("status").err = Some(err.into());
            t
        };
        let mut starting = task("s", "n1", TaskState::RUNNING, TaskState::STARTING);
        starting.status.as_mut().expect("status").message = Some("starting".into());
        let unhealthy = with(task("s", "n1", TaskState::SHUTDOWN, TaskState::FAILED), "task: non-zero exit (143): dockerexec: unhealthy container");
        let killed = with(task("s", "n1", TaskState::SHUTDOWN, TaskState::FAILED), "task: non-zero exit (137)");
        let tally = |tasks: Vec<Task>| {
            let mut services = vec![ObservedService { id: "s".into(), replicas: Some(1), desired: 1, ..Default::default() }];
            DockerSwarm::tally_tasks(tasks, &mut services, &[]);
            services.remove(0).trouble.expect("a trouble")
        };
        let t = tally(vec![starting.clone(), unhealthy.clone(), killed.clone()]);
        assert_eq!((t.cause, t.failed), (Some(TroubleCause::Unhealthy), true), "the loop's cause, not the try");
        // A task killed (a schedule's kill, an OOM): its replacement starting is what goes on.
        let t = tally(vec![starting.clone(), killed, unhealthy]);
        assert_eq!((t.state.as_str(), t.failed), ("starting", false));
        let t = tally(vec![starting.clone()]);
        assert_eq!((t.state.as_str(), t.message.as_str()), ("starting", "starting"));
        // Exit codes that say why: their cause is named, and one end is still no loop.
        let not_found = with(task("s", "n1", TaskState::SHUTDOWN, TaskState::FAILED), "task: non-zero exit (127)");
        assert_eq!(trouble_of(&not_found).and_then(|t| t.cause), Some(TroubleCause::CommandNotFound { not_executable: false }));
        assert_eq!(trouble_of(&with(task("s", "n1", TaskState::SHUTDOWN, TaskState::FAILED), "task: non-zero exit (126)")).and_then(|t| t.cause), Some(TroubleCause::CommandNotFound { not_executable: true }));
        let t = tally(vec![starting, not_found]);
        assert_eq!((t.state.as_str(), t.failed), ("starting", false));
    }

    #[test]
    fn a_slot_that_fails_twice_in_a_row_is_a_crash_loop_while_its_next_try_starts() {
        let at = |mut t: Task, slot: i64, when: &str, err: &str| {
            t.slot = Some(slot);
            let status = t.status.as_mut().expect("status");
            status.timestamp = Some(format!("2026-12-04T10:{when}Z"));
            status.err = (!err.is_empty()).then(|| err.to_string());
            status.message = Some("starting".into());
            t
        };
        let starting = |slot| at(task("s", "n1", TaskState::RUNNING, TaskState::STARTING), slot, "01:00", "");
        let failed = |slot, when| at(task("s", "n1", TaskState::SHUTDOWN, TaskState::FAILED), slot, when, "task: non-zero exit (3)");
        let tally = |tasks: Vec<Task>| {
            let mut services = vec![ObservedService { id: "s".into(), replicas: Some(2), desired: 2, ..Default::default() }];
            // Newest first, as `tally_tasks` sorts them (these carry no `UpdatedAt`).
            DockerSwarm::tally_tasks(tasks, &mut services, &[]);
            services.remove(0).trouble.expect("a trouble")
        };
        let t = tally(vec![starting(1), failed(1, "00:54"), failed(1, "00:48")]);
        assert!(t.failed && t.message.starts_with("task: non-zero exit (3) (again and again: a crash loop"), "{t:?}");
        // Killed once: its replacement starting is what goes on.
        assert!(!tally(vec![starting(1), failed(1, "00:54")]).failed);
        // Two failures an hour apart (a kill now, another long ago) are no loop.
        let mut long_ago = failed(1, "00:00");
        long_ago.status.as_mut().expect("status").timestamp = Some("2026-12-04T09:00:00Z".into());
        assert!(!tally(vec![starting(1), failed(1, "00:54"), long_ago]).failed);
        // Another slot's failures are not this slot's loop.
        assert!(!tally(vec![starting(1), failed(2, "00:54"), failed(2, "00:48")]).failed);
        // Swarm marks a failed task for shutdown a moment after creating its replacement: by
        // last update the failure comes first, by creation the replacement does.
        let created = |mut t: Task, when: &str| {
            t.created_at = Some(format!("2026-12-04T10:{when}Z"));
            t
        };
        let t = tally(vec![created(failed(1, "00:54"), "00:48.5"), created(starting(1), "00:54.1"), created(failed(1, "00:48"), "00:42")]);
        assert!(t.failed && t.message.contains("a crash loop"), "{t:?}");
        // Its first failure alike: once the replacement exists, the service is starting, also
        // after Swarm marks the failure (newer by last update): before, it went failing →
        // starting → failing, and said TasksFailing twice for one failure.
        let t = tally(vec![created(failed(1, "00:54"), "00:48.5"), created(starting(1), "00:54.1")]);
        assert_eq!((t.state.as_str(), t.failed), ("starting", false));
        // The loop's next task seen running a moment after its start counts once it has run
        // 10 s: until then the lab is not Ready (it flapped to Ready between failures).
        let running = at(task("s", "n1", TaskState::RUNNING, TaskState::RUNNING), 1, "01:00", "");
        let other = at(task("s", "n1", TaskState::RUNNING, TaskState::RUNNING), 2, "00:00", "");
        let counted_at = |now: &str| {
            let mut services = vec![ObservedService { id: "s".into(), replicas: Some(2), desired: 2, ..Default::default() }];
            let now = chrono::DateTime::parse_from_rfc3339(now).expect("a time").with_timezone(&chrono::Utc);
            DockerSwarm::tally_tasks_at(vec![running.clone(), failed(1, "00:54"), failed(1, "00:48"), other.clone()], &mut services, &[], now);
            services.remove(0)
        };
        let early = counted_at("2026-12-04T10:01:03Z");
        assert_eq!(early.running, 1, "slot 2 only");
        let trouble = early.trouble.expect("a trouble");
        assert!(trouble.failed && trouble.message.contains("a crash loop; a task of it counts as running once it has run 10 s"), "{trouble:?}");
        let settled = counted_at("2026-12-04T10:01:11Z");
        assert_eq!((settled.running, settled.trouble), (2, None));
    }

    #[test]
    fn a_command_that_returns_again_and_again_is_a_crash_loop_and_once_is_not() {
        let at = |desired, state, created: &str, ended: &str| {
            let mut t = task("s", "n1", desired, state);
            t.slot = Some(1);
            t.created_at = Some(format!("2026-12-04T10:{created}Z"));
            let status = t.status.as_mut().expect("status");
            status.timestamp = Some(format!("2026-12-04T10:{ended}Z"));
            status.message = Some(if state == TaskState::COMPLETE { "finished" } else { "starting" }.into());
            t
        };
        let returned = |created, ended| at(TaskState::SHUTDOWN, TaskState::COMPLETE, created, ended);
        let tally = |tasks: Vec<Task>| {
            let mut services = vec![ObservedService { id: "s".into(), replicas: Some(1), desired: 1, ..Default::default() }];
            DockerSwarm::tally_tasks(tasks, &mut services, &[]);
            services.remove(0).trouble.expect("a trouble")
        };
        let t = tally(vec![at(TaskState::RUNNING, TaskState::STARTING, "00:20", "00:20"), returned("00:10", "00:19"), returned("00:00", "00:09")]);
        assert_eq!((t.cause, t.failed), (Some(TroubleCause::CommandReturned), true), "{t:?}");
        assert!(t.message.starts_with("finished (again and again: a crash loop"), "{t:?}");
        // Once, after a long run: its next try starting is what goes on.
        let t = tally(vec![at(TaskState::RUNNING, TaskState::STARTING, "00:20", "00:20"), returned("00:00", "00:19")]);
        assert_eq!((t.state.as_str(), t.failed), ("starting", false));
    }

    #[test]
    fn restarts_are_tasks_that_ended_on_their_own_and_have_a_newer_task_in_their_slot() {
        let at = |desired, state, slot: i64, created: &str, ended: &str| {
            let mut t = task("s", "n1", desired, state);
            t.slot = Some(slot);
            t.created_at = Some(format!("2026-12-04T10:{created}Z"));
            t.status.as_mut().expect("status").timestamp = Some(format!("2026-12-04T10:{ended}Z"));
            t
        };
        let tasks = vec![
            at(TaskState::RUNNING, TaskState::RUNNING, 1, "00:30", "00:31"),
            // Killed, then crashed: each restarted in slot 1.
            at(TaskState::SHUTDOWN, TaskState::FAILED, 1, "00:20", "00:29"),
            at(TaskState::SHUTDOWN, TaskState::COMPLETE, 1, "00:10", "00:19"),
            // Stopped by an update: not a restart.
            at(TaskState::SHUTDOWN, TaskState::SHUTDOWN, 1, "00:00", "00:09"),
            // Slot 2 exited 0 under `condition: none`: Swarm marks it shutdown and starts none.
            at(TaskState::SHUTDOWN, TaskState::COMPLETE, 2, "00:00", "00:05"),
            // Slot 3 was rejected (it never ran), then its next try runs.
            at(TaskState::RUNNING, TaskState::RUNNING, 3, "00:12", "00:13"),
            at(TaskState::SHUTDOWN, TaskState::REJECTED, 3, "00:00", "00:11"),
        ];
        let mut services = vec![ObservedService { id: "s".into(), replicas: Some(3), desired: 3, ..Default::default() }];
        DockerSwarm::tally_tasks(tasks, &mut services, &[]);
        let at = |t: &str| chrono::DateTime::parse_from_rfc3339(&format!("2026-12-04T10:{t}Z")).expect("a time").with_timezone(&chrono::Utc);
        let mut exits = services[0].exits.clone();
        exits.sort();
        let exit = |slot: &str, t: &str| TaskExit { slot: slot.to_string(), at: at(t) };
        assert_eq!(exits, [exit("1", "00:19"), exit("1", "00:29")]);
    }

    #[test]
    fn a_task_no_node_may_run_is_unschedulable() {
        let mut pending = task("s", "", TaskState::RUNNING, TaskState::PENDING);
        pending.status.as_mut().expect("status").err = Some("no suitable node (scheduling constraints not satisfied on 3 nodes)".into());
        let t = trouble_of(&pending).expect("a trouble");
        assert_eq!((t.cause, t.failed, t.state.as_str()), (Some(TroubleCause::Unschedulable), false, "pending"));
        // Swarm 20.10's words for a host-mode port taken on the only node.
        pending.status.as_mut().expect("status").err = Some("no suitable node (host-mode port already in use on 1 node)".into());
        let t = trouble_of(&pending).expect("a trouble");
        assert_eq!((t.cause, t.failed), (Some(TroubleCause::PortInUse), false));
    }

    #[test]
    fn a_global_service_wants_its_tasks_that_are_not_to_be_shut_down() {
        let mut services = vec![ObservedService { id: "g".into(), replicas: None, ..Default::default() }];
        let tasks = vec![
            task("g", "n1", TaskState::RUNNING, TaskState::RUNNING),
            task("g", "n2", TaskState::RUNNING, TaskState::PREPARING),
            // An old task on n1 (the service was updated): history, not wanted.
            task("g", "n1", TaskState::SHUTDOWN, TaskState::SHUTDOWN),
            task("g", "n3", TaskState::REMOVE, TaskState::RUNNING),
        ];
        DockerSwarm::tally_tasks(tasks, &mut services, &[]);
        assert_eq!((services[0].desired, services[0].running, services[0].stopping), (2, 1, 1));
    }

    #[test]
    fn a_job_counts_its_current_run_whose_tasks_swarm_wants_complete() {
        let of_run = |mut t: Task, run: u64| {
            t.job_iteration = Some(bollard::models::ObjectVersion { index: Some(run) });
            t
        };
        let mut failed = task("j", "n1", TaskState::SHUTDOWN, TaskState::FAILED);
        failed.status.as_mut().unwrap().err = Some("task: non-zero exit (3)".into());
        let tasks = vec![
            of_run(task("j", "n1", TaskState::COMPLETE, TaskState::RUNNING), 2),
            of_run(task("j", "n2", TaskState::COMPLETE, TaskState::COMPLETE), 2),
            of_run(failed, 2),
            // The run before (the job was updated since): no part of this one.
            of_run(task("j", "n1", TaskState::COMPLETE, TaskState::COMPLETE), 1),
            of_run(task("j", "n1", TaskState::COMPLETE, TaskState::COMPLETE), 1),
        ];
        let job = ObservedService { id: "j".into(), replicas: Some(3), desired: 3, mode: Mode::ReplicatedJob, job_run: Some(2), ..Default::default() };
        let mut services = vec![job.clone()];
        DockerSwarm::tally_tasks(tasks.clone(), &mut services, &[]);
        let s = &services[0];
        assert_eq!((s.desired, s.running, s.stopping, s.completed), (3, 1, 0, Some(1)), "a running task of a job is not one being stopped");
        assert!(s.trouble.as_ref().is_some_and(|t| t.failed && t.message.contains("non-zero exit")), "{:?}", s.trouble);
        // A global job wants one task per node of its run; done, it has no trouble.
        let mut services = vec![ObservedService { replicas: None, desired: 0, mode: Mode::GlobalJob, ..job }];
        let done = vec![of_run(task("j", "n1", TaskState::COMPLETE, TaskState::COMPLETE), 2), of_run(task("j", "n2", TaskState::COMPLETE, TaskState::COMPLETE), 2)];
        DockerSwarm::tally_tasks(done, &mut services, &[]);
        assert_eq!((services[0].desired, services[0].completed, services[0].trouble.is_none()), (2, Some(2), true));
    }
}
