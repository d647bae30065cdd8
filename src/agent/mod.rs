//! The node agent: keeps the traffic conditions of every owned task on its node applied. labd
//! runs one in-process for its own node; `labd agent` runs the same code on other nodes. It
//! reads desired shaping from Redis and writes back, per task, what it applied.

pub mod apply;
pub mod capture;
pub mod cgroup;
mod converge;
pub mod exec;
pub mod requests;
pub mod running;
pub mod usage;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use redis::AsyncCommands;

use crate::shaping::probe::{probe, Capabilities};
use crate::shaping::{choose_backend, BackendKind};
use crate::plan::{ServiceFaults, TaskFaults};
use crate::spec::EffectiveConditions;
use crate::status::{AttachmentShaping, TaskShaping};
use crate::shaping::netns::ns_path;
use crate::shaping::watch::ChangeWatch;
use crate::store::keys;
use crate::swarm::{DockerSwarm, LocalTask, LocalTaskEvent, ProcessState};
use apply::Attachment;
use running::{Inbox, Running, Seen};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub redis_url: String,
    pub node: String,
    pub forced_backend: Option<BackendKind>,
    /// How often desired shaping is compared with what is applied.
    pub interval: Duration,
    /// Every this many intervals, read back the kernel state to repair drift (and Docker's
    /// state of the processes that schedules freeze or cap).
    pub readback_every: u32,
    /// Every this many intervals, read back a task whose namespace is watched for changes
    /// (`ChangeWatch`): it is read back when it announces one, so this is only a safety net.
    pub watched_readback_every: u32,
    /// Every this many intervals, read desired shaping from Redis though labd announced no
    /// change (it says so on `swarmlab:shaping-changed`; this catches a message lost).
    pub desired_poll_every: u32,
    /// How often what the tasks use is sampled (`None`: never).
    pub usage_every: Option<Duration>,
    /// Whether commands that labctl on another node asks for (`labctl exec`) are run in this
    /// node's tasks.
    pub allow_exec: bool,
}

/// Which tasks a pass reads back whatever else happened.
#[derive(Debug, Clone, Copy)]
struct ReadbacksDue {
    /// Tasks whose namespace is not watched, and Docker's state of their processes.
    unwatched: bool,
    /// Watched tasks too (a safety net: they are read back when they announce a change).
    watched: bool,
    /// Desired shaping from Redis, though labd said nothing (a safety net too).
    desired: bool,
}

/// A watch on the namespace `pid` is in, if it is still `netns` once the watch stands (a pid
/// that ended and was reused in between would watch another task).
fn watch_namespace(pid: i64, netns: &std::path::Path) -> Option<ChangeWatch> {
    let watch = ChangeWatch::open(&ns_path(pid)).inspect_err(|e| tracing::debug!(pid, error = %e, "cannot watch the namespace; reading it back every few seconds")).ok()?;
    std::fs::read_link(ns_path(pid)).is_ok_and(|now| now == netns).then_some(watch)
}

/// Desired conditions: lab → service → network → conditions.
type Desired = BTreeMap<String, BTreeMap<String, BTreeMap<String, EffectiveConditions>>>;

/// What the schedules do to task processes: lab → service → frozen tasks and kills.
type Faults = BTreeMap<String, TaskFaults>;

struct Task {
    lab: String,
    service: String,
    pid: i64,
    /// The namespace `pid` was in when found (`net:[inode]`): checked before each pass, so a
    /// restarted container (new pid) or a reused pid never gets rules meant for another.
    netns: std::path::PathBuf,
    /// Hears that namespace's rule changes (`None`: read back every few seconds instead).
    watch: Option<ChangeWatch>,
    /// Found by the agent's first look at this node: an earlier agent, killed, may have left
    /// rules and qdiscs in it.
    inherited: bool,
    /// (network short name, MAC, IPv4)
    networks: Vec<(String, String, String)>,
    slot: Option<u64>,
    started_at: Option<chrono::DateTime<Utc>>,
}

pub struct Agent {
    config: AgentConfig,
    swarm: DockerSwarm,
    caps: Capabilities,
    backend: Option<BackendKind>,
    tasks: HashMap<String, Task>,
    attachments: HashMap<(String, String), Attachment>,
    redis: Option<redis::aio::MultiplexedConnection>,
    /// Task entries this agent wrote at its last publish, by lab, as labd reads each
    /// ([`what_labd_reads`]; `None` before the first publish).
    published: Option<BTreeMap<String, BTreeMap<String, TaskShaping>>>,
    /// Each task's report as last written whole (counters too), and when: written again when it
    /// changed, or after `REPORT_REFRESH`.
    written: HashMap<String, (std::time::Instant, TaskShaping)>,
    /// The last desired shaping read from Redis. While Redis is down, or after it came back
    /// empty (no persistence), the data plane keeps what it had: only labd's word changes it.
    desired: Desired,
    /// The last faults read from Redis, kept as `desired` is.
    faults: Faults,
    /// Containers frozen while their schedule paused them: thawed if it no longer says
    /// anything of them.
    frozen: HashSet<String>,
    /// Containers (12-character ids) an earlier run of this node's agent reported frozen: after
    /// a restart, still this agent's to thaw.
    frozen_before: HashSet<String>,
    /// Containers this agent sent a kill (until they are gone).
    killed: HashSet<String>,
    /// Containers this agent asked to stop, within their grace period (until they are gone): a
    /// kill step reached meanwhile still kills them at its own time.
    stopping: HashSet<String>,
    /// Why Docker refused a stop, by container (written by the stop's own task): reported at
    /// the next pass, which asks again.
    stop_refused: std::sync::Arc<std::sync::Mutex<HashMap<String, String>>>,
    /// When this agent last froze or thawed each container (reported: the step's time applied).
    process_changed_at: HashMap<String, chrono::DateTime<Utc>>,
    /// Docker's last word on each container's process (frozen, CPU cap).
    process_seen: HashMap<String, ProcessState>,
    /// Containers this agent capped at some CPUs, with the limit each had before (what lifting
    /// the cap sets again).
    capped: HashMap<String, i64>,
    /// The same from an earlier run of this node's agent (12-character ids), from its reports.
    capped_before: HashMap<String, i64>,
    /// The labs Redis listed at the last successful read: only theirs get reports, so a
    /// deleted lab's keys never come back.
    known_labs: BTreeSet<String>,
    /// Whether the agent has looked at this node's containers once.
    looked: bool,
    /// The node's running task containers, and the events since the last pass.
    running: Running,
    inbox: Inbox,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// This node's tasks and the labs, for the usage sampler and the capture and exec servers.
    tasks_seen: tokio::sync::watch::Sender<usage::Snapshot>,
    /// Set when labd may have written desired shaping since the last read (its message, or a
    /// subscription that was down): the next pass reads it from Redis.
    desired_stale: Arc<AtomicBool>,
}

impl Agent {
    pub fn new(config: AgentConfig, swarm: DockerSwarm) -> Agent {
        let caps = probe();
        let backend = choose_backend(&caps, config.forced_backend);
        tracing::info!(netem = caps.netem, tbf = caps.tbf, nfqueue = caps.nfqueue, changes_heard = caps.changes_heard, backend = ?backend, notes = ?caps.notes, "shaping capabilities probed");
        if config.forced_backend.is_some() && backend.is_none() {
            tracing::error!(forced = ?config.forced_backend, "the forced shaping backend is not available on this kernel");
        }
        Agent {
            config,
            swarm,
            caps,
            backend,
            tasks: HashMap::new(),
            attachments: HashMap::new(),
            redis: None,
            published: None,
            written: HashMap::new(),
            desired: Desired::new(),
            faults: Faults::new(),
            frozen: HashSet::new(),
            frozen_before: HashSet::new(),
            killed: HashSet::new(),
            stopping: HashSet::new(),
            stop_refused: Default::default(),
            process_changed_at: HashMap::new(),
            process_seen: HashMap::new(),
            capped: HashMap::new(),
            capped_before: HashMap::new(),
            known_labs: BTreeSet::new(),
            looked: false,
            running: Running::default(),
            inbox: Inbox::default(),
            metrics: Default::default(),
            tasks_seen: tokio::sync::watch::Sender::new(usage::Snapshot::default()),
            desired_stale: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Per-task shaping state and NFQUEUE counters go to `metrics` (served on /metrics).
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn backend(&self) -> Option<BackendKind> {
        self.backend
    }

    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<()>(1);
        let wake = wake_tx.clone();
        let swarm = self.swarm.clone();
        let inbox = self.inbox.clone();
        // Container starts wake a pass at once; deaths are noted for the next. The stream ends
        // when dockerd restarts: it is opened again with backoff, and each reopening lists the
        // node again (events were missed) and wakes a pass.
        let watcher = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                let events = swarm.local_task_events();
                futures::pin_mut!(events);
                // Docker subscribes at the first poll: the node is listed once the subscription
                // stands (what starts after is seen), or at once if an event comes sooner.
                let first = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
                inbox.push(Seen::Reopened);
                let _ = wake_tx.try_send(());
                let mut next = match first {
                    Ok(item) => item,
                    Err(_) => events.next().await,
                };
                while let Some(Ok(event)) = next {
                    backoff = Duration::from_millis(250);
                    if let Some(event) = event {
                        let started = matches!(event, LocalTaskEvent::Started(_));
                        inbox.push(Seen::Event(event));
                        if started {
                            let _ = wake_tx.try_send(());
                        }
                    }
                    next = events.next().await;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        let nudges = tokio::spawn(nudge_on_shaping_changes(self.config.redis_url.clone(), wake.clone(), self.desired_stale.clone()));
        let sampler = self.config.usage_every.filter(|every| !every.is_zero()).map(|every| {
            let sampler = usage::UsageSampler::new(self.swarm.clone(), self.config.redis_url.clone(), self.config.node.clone(), every, self.metrics.clone());
            tokio::spawn(sampler.run(self.tasks_seen.subscribe()))
        });
        let captures = capture::CaptureServer::new(self.swarm.clone(), self.config.node.clone());
        let captures = tokio::spawn(requests::serve(captures, self.config.redis_url.clone(), self.tasks_seen.subscribe()));
        let execs = exec::ExecServer::new(self.swarm.clone(), self.config.node.clone(), self.config.allow_exec, self.config.redis_url.clone());
        let execs = tokio::spawn(requests::serve(execs, self.config.redis_url.clone(), self.tasks_seen.subscribe()));
        let mut tick = tokio::time::interval(self.config.interval);
        let mut n: u32 = 0;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
                Some(()) = wake_rx.recv() => {}
            }
            n = n.wrapping_add(1);
            let due = ReadbacksDue {
                unwatched: n.is_multiple_of(self.config.readback_every.max(1)),
                watched: n.is_multiple_of(self.config.watched_readback_every.max(1)),
                desired: n.is_multiple_of(self.config.desired_poll_every.max(1)),
            };
            match self.pass(due).await {
                // Say it once per outage, not twice a second.
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "shaping pass failed; retrying every interval");
                    failing = true;
                }
                Err(_) => {}
                Ok(()) if failing => {
                    tracing::info!("shaping passes work again");
                    failing = false;
                }
                Ok(()) => {}
            }
        }
        watcher.abort();
        nudges.abort();
        captures.abort();
        execs.abort();
        if let Some(sampler) = sampler {
            sampler.abort();
        }
        // The kernel's shaping stays in force (qdiscs, partition rules): a lab keeps its
        // conditions while labd is away, as it keeps its services, and the next agent takes
        // them over (`Attachment::adopt`). The userspace backend's workers end here (its
        // queues fail open).
        self.withdraw_worker_reports().await;
        let attachments = self.attachments.len();
        self.attachments.clear();
        tracing::info!(attachments, "agent stopped; shaping left in place for the next agent");
    }

    /// The reports of tasks whose shaping is partly a worker's (ending with this agent) stop
    /// saying it is in force: written again without their time, so labd counts those tasks as
    /// not shaped until the next agent reports them (which still reads what they say of frozen
    /// tasks and caps). Best effort, within a second: a stop does not wait on Redis.
    async fn withdraw_worker_reports(&mut self) {
        let ids: BTreeSet<&String> = self.attachments.iter().filter(|(_, a)| a.has_worker()).map(|((id, _), _)| id).collect();
        let withdrawn: Vec<(String, TaskShaping)> = ids
            .into_iter()
            .filter_map(|id| Some((self.tasks.get(id)?.lab.clone(), self.written.get(&id[..12.min(id.len())])?.1.clone())))
            .map(|(lab, report)| (lab, TaskShaping { updated_at: None, ..report }))
            .collect();
        if withdrawn.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (lab, report) in &withdrawn {
            pipe.hset(keys::tasks(lab), &report.container, serde_json::to_string(report).unwrap_or_default()).ignore();
        }
        let write = async {
            let conn = self.connection().await?;
            pipe.query_async::<()>(conn).await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(1), write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not mark the userspace backend's shaping as stopped in the task reports"),
            Err(_) => tracing::warn!("could not mark the userspace backend's shaping as stopped in the task reports: Redis did not answer within 1s"),
        }
    }

    async fn connection(&mut self) -> Result<&mut redis::aio::MultiplexedConnection, String> {
        if self.redis.is_none() {
            self.redis = Some(connect_redis(&self.config.redis_url).await?);
        }
        self.redis.as_mut().ok_or_else(|| "no redis".to_string())
    }

    /// Refreshes the desired shaping from Redis. A lab Redis knows and has no shaping for is
    /// unshaped; a lab Redis does not know (down, or restarted empty) keeps what was cached.
    async fn refresh_desired(&mut self) -> Result<(), String> {
        let result = self.read_desired().await;
        if result.is_err() {
            self.redis = None;
        }
        let (labs, fresh, faults) = result?;
        self.desired.retain(|lab, _| !labs.contains(lab));
        self.desired.extend(fresh);
        self.faults.retain(|lab, _| !labs.contains(lab));
        self.faults.extend(faults);
        self.known_labs = labs;
        Ok(())
    }

    /// Whether this agent knows what the lab wants: listed in Redis at its last read, or held
    /// from an earlier read (Redis came back empty since).
    fn lab_known(&self, lab: &str) -> bool {
        self.known_labs.contains(lab) || self.desired.contains_key(lab)
    }

    async fn read_desired(&mut self) -> Result<(BTreeSet<String>, Desired, Faults), String> {
        let conn = self.connection().await?;
        let labs: BTreeSet<String> = conn.smembers(keys::LABS).await.map_err(|e| e.to_string())?;
        let mut out = Desired::new();
        let mut faults = Faults::new();
        for lab in &labs {
            let (shaping, on_tasks): (Option<String>, Option<String>) =
                redis::pipe().get(keys::shaping(lab)).get(keys::faults(lab)).query_async(conn).await.map_err(|e| e.to_string())?;
            if let Some(map) = shaping.and_then(|j| serde_json::from_str(&j).ok()) {
                out.insert(lab.clone(), map);
            }
            if let Some(map) = on_tasks.and_then(|j| serde_json::from_str(&j).ok()) {
                faults.insert(lab.clone(), map);
            }
        }
        Ok((labs, out, faults))
    }

    async fn discover(&mut self) -> Result<(), String> {
        if self.running.take(&self.inbox, std::time::Instant::now()) {
            let ids = self.swarm.local_task_ids().await.map_err(|e| e.to_string())?;
            self.running.listed(ids, std::time::Instant::now());
        }
        let running = self.running.ids().clone();
        // An agent beside a daemon of another machine would enter whatever process here has
        // the pid Docker reports: shape nothing, and say why at every failed pass's warning.
        let listed: Vec<String> = running.iter().take(3).cloned().collect();
        if !self.swarm.runs_here(&listed).await {
            self.tasks.clear();
            return Err("the Docker daemon this agent asks runs its tasks on another machine: run `labd agent` on each node of the swarm, and labd here with --no-agent".into());
        }
        // A task whose pid is no longer in the namespace it was found in restarted (or its pid
        // was reused): look it up again, and forget what was applied in the old namespace.
        self.tasks.retain(|id, t| running.contains(id) && std::fs::read_link(ns_path(t.pid)).is_ok_and(|ns| ns == t.netns));
        let tasks = &self.tasks;
        self.attachments.retain(|(id, _), a| tasks.get(id).is_some_and(|t| t.pid == a.pid()));
        let inherited = !self.looked;
        self.looked = true;
        for id in running {
            if self.tasks.contains_key(&id) {
                continue;
            }
            let Some(found) = self.swarm.local_task(&id).await else {
                // Not running after all (its die event is on its way, or was lost).
                self.running.forget(&id);
                continue;
            };
            let Ok(netns) = std::fs::read_link(ns_path(found.pid)) else { continue };
            let watch = self.caps.changes_heard.then(|| watch_namespace(found.pid, &netns)).flatten();
            let LocalTask { lab, service, pid, networks, slot, started_at, .. } = found;
            self.tasks.insert(id, Task { lab, service, pid, netns, watch, inherited, networks, slot, started_at });
        }
        Ok(())
    }

    /// One comparison of desired and applied shaping on this node.
    async fn pass(&mut self, due: ReadbacksDue) -> Result<(), String> {
        // Redis down changes nothing on the data plane: new tasks are still found and shaped
        // from the cached desired state; the error is reported after the pass. Read when labd
        // said it wrote (every lab's keys at every pass cost each node's agent 4 round trips a
        // second per lab, for nothing).
        let stale = self.desired_stale.swap(false, Ordering::SeqCst);
        let redis = if stale || due.desired { self.refresh_desired().await } else { Ok(()) };
        if redis.is_err() {
            self.desired_stale.store(true, Ordering::SeqCst);
        }
        self.discover().await?;
        self.share_tasks();
        let desired = self.desired.clone();
        let mut reports: BTreeMap<String, Vec<(String, TaskShaping)>> = BTreeMap::new();
        let mut live: HashSet<(String, String)> = HashSet::new();
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        let mut jobs = Vec::new();
        for id in &ids {
            let Some(task) = self.tasks.get(id) else { continue };
            // What an agent before this one left in a task of a lab whose desired shaping this
            // one has not read (Redis down since the start, or back empty until labd writes it
            // again) is left as it is: "nothing wanted" is not known yet.
            if task.inherited && !self.lab_known(&task.lab) {
                continue;
            }
            // `heard` empties the watch at every pass, whether or not the task has shaping.
            let readback = match &task.watch {
                Some(watch) => watch.heard() || due.watched,
                None => due.unwatched,
            };
            let mut networks = task.networks.clone();
            networks.sort();
            for (index, (net, mac, ip)) in networks.into_iter().enumerate() {
                let want = desired.get(&task.lab).and_then(|s| s.get(&task.service)).and_then(|n| n.get(&net)).cloned().unwrap_or_default();
                let key = (id.clone(), net.clone());
                live.insert(key.clone());
                let held = self.attachments.remove(&key);
                if want.is_empty() && held.is_none() && !task.inherited {
                    continue; // nothing wanted, applied or left behind: no work at this pass
                }
                // Its draws (userspace backend); a global service's task is told apart by its node.
                let slot = task.slot.map_or_else(|| self.config.node.clone(), |s| s.to_string());
                let stream = format!("{}/{}/{slot}/{net}", task.lab, task.service);
                let queue = 100 + index as u16;
                jobs.push(converge::Job { key, index, held, want, pid: task.pid, mac, ip, queue, stream, inherited: task.inherited, readback });
            }
        }
        let mut shaped: HashMap<String, Vec<(usize, AttachmentShaping)>> = HashMap::new();
        for done in converge::converge_all(jobs, self.backend, &self.caps).await {
            if let Some(report) = done.report {
                shaped.entry(done.key.0.clone()).or_default().push((done.index, report));
            }
            if let Some(attachment) = done.attachment {
                self.attachments.insert(done.key, attachment);
            }
        }
        for id in ids {
            let Some(task) = self.tasks.get(&id) else { continue };
            if task.inherited && !self.lab_known(&task.lab) {
                continue; // as its shaping above: what the schedule does to it is not known yet
            }
            let (lab, service) = (task.lab.clone(), task.service.clone());
            let mut attachments = shaped.remove(&id).unwrap_or_default();
            attachments.sort_by_key(|(index, _)| *index);
            let mut report = TaskShaping {
                container: id[..12.min(id.len())].to_string(),
                service: service.clone(),
                node: self.config.node.clone(),
                updated_at: Some(Utc::now()),
                slot: task.slot,
                started_at: task.started_at,
                addresses: task.networks.iter().filter(|(_, _, ip)| !ip.is_empty()).map(|(net, _, ip)| (net.clone(), ip.clone())).collect(),
                attachments: attachments.into_iter().map(|(_, a)| a).collect(),
                ..Default::default()
            };
            let faults = self.faults.get(&lab).and_then(|f| f.get(&service)).cloned();
            self.converge_process(&id, &lab, faults.as_ref(), due.unwatched, &mut report).await;
            // Only labs that still exist: a deleted lab's keys must not come back.
            if (!report.attachments.is_empty() || faults.is_some()) && self.known_labs.contains(&lab) {
                reports.entry(lab).or_default().push((id.clone(), report));
            }
        }
        // Tasks gone from this node: their namespace went with them.
        self.attachments.retain(|k, _| live.contains(k));
        let tasks = &self.tasks;
        self.frozen.retain(|id| tasks.contains_key(id));
        self.killed.retain(|id| tasks.contains_key(id));
        self.stopping.retain(|id| tasks.contains_key(id));
        if let Ok(mut refused) = self.stop_refused.lock() {
            refused.retain(|id, _| tasks.contains_key(id));
        }
        self.process_changed_at.retain(|id, _| tasks.contains_key(id));
        self.process_seen.retain(|id, _| tasks.contains_key(id));
        self.capped.retain(|id, _| tasks.contains_key(id));
        self.frozen_before.retain(|short| tasks.keys().any(|id| id.starts_with(short.as_str())));
        self.capped_before.retain(|short, _| tasks.keys().any(|id| id.starts_with(short.as_str())));
        // Only tasks still inherited are looked at (none at most passes: nothing is collected).
        let known: BTreeSet<String> = self.tasks.values().filter(|t| t.inherited).map(|t| t.lab.clone()).filter(|lab| self.lab_known(lab)).collect();
        for task in self.tasks.values_mut().filter(|t| known.contains(&t.lab)) {
            task.inherited = false;
        }
        // Forget cached labs with no task here any more (deleted labs).
        let here: BTreeSet<&String> = self.tasks.values().map(|t| &t.lab).collect();
        self.desired.retain(|lab, _| here.contains(lab));
        self.record_metrics(&reports);
        self.publish(reports).await?;
        redis
    }

    /// Hands the usage sampler and the capture server this node's tasks, when they or the
    /// labs changed.
    fn share_tasks(&self) {
        let tx = &self.tasks_seen;
        let mut tasks: Vec<usage::SampledTask> = self
            .tasks
            .iter()
            .map(|(id, t)| usage::SampledTask { container: id.clone(), lab: t.lab.clone(), service: t.service.clone(), slot: t.slot, pid: t.pid, networks: t.networks.clone() })
            .collect();
        tasks.sort_by(|a, b| a.container.cmp(&b.container));
        let snapshot = usage::Snapshot { tasks, labs: self.known_labs.clone() };
        tx.send_if_modified(|current| {
            let changed = *current != snapshot;
            if changed {
                *current = snapshot;
            }
            changed
        });
    }

    /// Brings the task's process to what its schedule asks (`faults`: `None` when it asks
    /// nothing of this service): killed if it started before a kill reached, else frozen or
    /// thawed; reports the state Docker reads back.
    async fn converge_process(&mut self, id: &str, lab: &str, faults: Option<&ServiceFaults>, readback: bool, report: &mut TaskShaping) {
        let Some(faults) = faults else {
            // A schedule edited or removed while this agent (or its run before a restart) had
            // the task frozen.
            let ours = self.frozen.remove(id) | self.frozen_before.remove(&id[..12.min(id.len())]);
            if ours && self.swarm.task_paused(id).await.unwrap_or(false) {
                match self.swarm.pause_task(id, false).await {
                    Ok(()) => self.metrics.task_fault(lab, &report.service, "unpause"),
                    Err(e) => {
                        tracing::warn!(container = id, error = %e, "cannot thaw a task no schedule pauses any more");
                        self.frozen.insert(id.to_string());
                    }
                }
            }
            // Likewise a cap: back to the limit it had.
            if let Some(before) = self.capped.remove(id).or_else(|| self.capped_before.remove(&id[..12.min(id.len())])) {
                match self.swarm.cap_task_cpus(id, before).await {
                    Ok(()) => self.metrics.task_fault(lab, &report.service, "uncap"),
                    Err(e) => {
                        tracing::warn!(container = id, error = %e, "cannot lift a CPU cap no schedule asks for any more");
                        self.capped.insert(id.to_string(), before);
                    }
                }
            }
            report.nano_cpus_before = self.capped.get(id).copied();
            return;
        };
        if let Some(order) = report.started_at.and_then(|t| faults.kill_order(report.slot, t)) {
            // On its way out (its death event forgets it): nothing more to send, but a kill to
            // a task still within a stop's grace.
            let refused = self.stop_refused.lock().ok().and_then(|mut r| r.remove(id));
            if let Some(e) = refused {
                // Reported, and asked again below.
                report.fault_error = Some(e);
                self.stopping.remove(id);
            }
            if self.killed.contains(id) || (order.grace_ms.is_some() && self.stopping.contains(id)) {
                return;
            }
            if order.grace_ms.is_some() {
                // A stop takes up to its grace period: run apart, so that the other tasks of
                // this node are not kept waiting. Its grace counts from the step's time (an
                // agent that restarts meanwhile gives what is left of it).
                let grace = (order.kill_at() - Utc::now()).to_std().unwrap_or_default();
                let (swarm, container, service, slot) = (self.swarm.clone(), id.to_string(), report.service.clone(), report.slot);
                let refused = self.stop_refused.clone();
                tokio::spawn(async move {
                    match swarm.stop_task(&container, grace).await {
                        Ok(()) | Err(crate::swarm::SwarmError::NotFound(_)) => tracing::info!(container, service, slot, "stopped, as the schedule says"),
                        Err(e) => {
                            tracing::warn!(container, service, slot, error = %e, "cannot stop the task as the schedule says");
                            if let Ok(mut refused) = refused.lock() {
                                refused.insert(container, format!("stop refused: {e}"));
                            }
                        }
                    }
                });
                self.metrics.task_fault(lab, &report.service, "stop");
                self.stopping.insert(id.to_string());
                return;
            }
            match self.swarm.kill_task(id).await {
                Ok(()) => {
                    tracing::info!(container = id, service = %report.service, slot = ?report.slot, "killed, as the schedule says");
                    self.metrics.task_fault(lab, &report.service, "kill");
                    self.killed.insert(id.to_string());
                }
                // Died on its own meanwhile: what the kill asked.
                Err(crate::swarm::SwarmError::NotFound(_)) => {
                    self.killed.insert(id.to_string());
                }
                Err(e) => report.fault_error = Some(e.to_string()),
            }
            return;
        }
        let want = faults.paused.contains(report.slot);
        let short = &id[..12.min(id.len())];
        if let Some(before) = self.capped_before.remove(short) {
            self.capped.entry(id.to_string()).or_insert(before);
        }
        let cap = faults.cpu_cap(report.slot);
        let before = self.capped.get(id).copied();
        // The CPUs it should have: its cap, else (a cap lifted) what it had before; `None`:
        // never capped by this agent, left as Swarm made it.
        let cpus = cap.or(before);
        let settled = |st: &ProcessState| st.paused == want && cpus.is_none_or(|c| st.nano_cpus == c);
        // Docker is asked when the state may differ from what is wanted, and on read-back
        // passes (a `docker pause` or `docker update` by hand), not twice a second for every task.
        let known = self.process_seen.get(id).copied().filter(|seen| settled(seen) && !readback);
        let outcome = async {
            let mut state = match known {
                Some(seen) => seen,
                None => self.swarm.task_process(id).await?,
            };
            let mut changed = false;
            if state.paused != want {
                self.swarm.pause_task(id, want).await?;
                self.process_changed_at.insert(id.to_string(), Utc::now());
                self.metrics.task_fault(lab, &report.service, if want { "pause" } else { "unpause" });
                tracing::info!(container = id, service = %report.service, slot = ?report.slot, paused = want, "paused or unpaused, as the schedule says");
                changed = true;
            }
            if let Some(cpus) = cpus.filter(|c| *c != state.nano_cpus) {
                // The limit Swarm gave it, kept before the first cap (and reported, so that the
                // next run of this agent can lift it after a restart).
                self.capped.entry(id.to_string()).or_insert(state.nano_cpus);
                self.swarm.cap_task_cpus(id, cpus).await?;
                self.process_changed_at.insert(id.to_string(), Utc::now());
                self.metrics.task_fault(lab, &report.service, if cap.is_some() { "cap" } else { "uncap" });
                tracing::info!(container = id, service = %report.service, slot = ?report.slot, cpus = cpus as f64 / 1e9, "CPU cap set, as the schedule says");
                changed = true;
            }
            if changed {
                state = self.swarm.task_process(id).await?;
            }
            Ok::<ProcessState, crate::swarm::SwarmError>(state)
        };
        let outcome = outcome.await;
        report.paused_changed_at = self.process_changed_at.get(id).copied();
        match outcome {
            Ok(state) => {
                self.process_seen.insert(id.to_string(), state);
                report.paused = Some(state.paused);
                if state.paused {
                    self.frozen.insert(id.to_string());
                } else {
                    self.frozen.remove(id);
                }
                // A lifted cap, read back: nothing of this agent's left on it.
                if cap.is_none() && self.capped.get(id) == Some(&state.nano_cpus) {
                    self.capped.remove(id);
                }
                report.nano_cpus = Some(state.nano_cpus);
            }
            // Its task is going away (a death event follows): nothing to report of it.
            Err(crate::swarm::SwarmError::NotFound(_)) => {
                self.process_seen.remove(id);
            }
            Err(e) => {
                self.process_seen.remove(id);
                report.fault_error = Some(e.to_string());
            }
        }
        report.nano_cpus_before = self.capped.get(id).copied();
    }

    fn record_metrics(&self, reports: &BTreeMap<String, Vec<(String, TaskShaping)>>) {
        let mut rows = Vec::new();
        for (lab, tasks) in reports {
            for (_, task) in tasks {
                for a in &task.attachments {
                    let labels = crate::metrics::AttachmentLabels { lab: lab.clone(), service: task.service.clone(), container: task.container.clone(), network: a.network.clone() };
                    let converged = a.error.is_none() && a.applied == a.desired;
                    let counters = a.counters.map(|c| [c.seen, c.dropped, c.delayed, c.corrupted, c.duplicated, c.reordered, c.overruns, c.overflowed]);
                    rows.push((labels, converged, counters));
                }
            }
        }
        let backend = self.backend.map(|b| b.to_string()).unwrap_or_else(|| "none".into());
        self.metrics.agent_pass(&self.config.node, &backend, &rows);
    }

    async fn publish(&mut self, reports: BTreeMap<String, Vec<(String, TaskShaping)>>) -> Result<(), String> {
        let node = self.config.node.clone();
        let agent = serde_json::json!({"node": node, "backend": self.backend, "capabilities": self.caps, "updatedAt": Utc::now()});
        let known = self.published.clone();
        // Lost if Redis fails: every report is written at the next publish, as after a start.
        let written = std::mem::take(&mut self.written);
        let conn = self.connection().await?;
        let mut previous = BTreeMap::<String, BTreeMap<String, TaskShaping>>::new();
        let mut was_frozen = HashSet::new();
        let mut was_capped = HashMap::new();
        if known.is_none() {
            // Once per start: find what an earlier run of this node's agent left behind.
            let labs: Vec<String> = conn.smembers(keys::LABS).await.map_err(|e| e.to_string())?;
            for lab in labs {
                let existing: BTreeMap<String, String> = conn.hgetall(keys::tasks(&lab)).await.map_err(|e| e.to_string())?;
                let mine: Vec<TaskShaping> = existing.values().filter_map(|v| serde_json::from_str::<TaskShaping>(v).ok()).filter(|t| t.node == node).collect();
                was_frozen.extend(mine.iter().filter(|t| t.paused == Some(true)).map(|t| t.container.clone()));
                was_capped.extend(mine.iter().filter_map(|t| Some((t.container.clone(), t.nano_cpus_before?))));
                previous.insert(lab, mine.into_iter().map(|t| (t.container.clone(), what_labd_reads(&t))).collect());
            }
        }
        let previous = known.unwrap_or(previous);
        let mut pipe = redis::pipe();
        pipe.hset(keys::AGENTS, &node, agent.to_string()).ignore();
        let mut now_published = BTreeMap::<String, BTreeMap<String, TaskShaping>>::new();
        let mut now_written = HashMap::new();
        let now = std::time::Instant::now();
        for (lab, tasks) in &reports {
            let entries = now_published.entry(lab.clone()).or_default();
            for (_, t) in tasks {
                entries.insert(t.container.clone(), what_labd_reads(t));
                match written.get(&t.container) {
                    Some((at, last)) if now.duration_since(*at) < REPORT_REFRESH && same_but_time(last, t) => {
                        now_written.insert(t.container.clone(), (*at, last.clone()));
                    }
                    _ => {
                        pipe.hset(keys::tasks(lab), &t.container, serde_json::to_string(t).unwrap_or_default()).ignore();
                        now_written.insert(t.container.clone(), (now, t.clone()));
                    }
                }
            }
        }
        // Entries this node wrote before whose task is gone from it.
        for (lab, containers) in &previous {
            for c in containers.keys().filter(|c| !now_published.get(lab).is_some_and(|n| n.contains_key(*c))) {
                pipe.hdel(keys::tasks(lab), c).ignore();
            }
        }
        // After the writes, in the same round trip: labd looks at these labs at once.
        let changed: BTreeSet<&String> = now_published.keys().chain(previous.keys()).filter(|lab| now_published.get(*lab) != previous.get(*lab)).collect();
        if !changed.is_empty() {
            pipe.publish(keys::REPORTS_CHANGED, changed.into_iter().map(String::as_str).collect::<Vec<_>>().join(" ")).ignore();
        }
        let result: redis::RedisResult<()> = pipe.query_async(conn).await;
        if let Err(e) = result {
            // Not known to be written: the old set stays the reference for next time.
            self.redis = None;
            return Err(e.to_string());
        }
        self.published = Some(now_published);
        self.written = now_written;
        self.frozen_before.extend(was_frozen);
        self.capped_before.extend(was_capped);
        Ok(())
    }
}

/// How often a report that has not changed is written again: its time says the node's agent
/// is alive (a report older than 10 s is from a node that is gone: `TaskShaping::is_fresh`).
/// Writing every report at every pass cost Redis (and its append-only file) ~80 KB a second
/// for 60 idle tasks.
const REPORT_REFRESH: Duration = Duration::from_secs(3);

/// Whether two reports differ only in the time they were made.
fn same_but_time(a: &TaskShaping, b: &TaskShaping) -> bool {
    a.updated_at.is_some() == b.updated_at.is_some() && TaskShaping { updated_at: a.updated_at, ..b.clone() } == *a
}

/// A task's report as labd judges it: without the packet counters and the time of writing,
/// which change at every pass and tell labd nothing it waits for. Compared, not serialized.
fn what_labd_reads(report: &TaskShaping) -> TaskShaping {
    let mut settled = report.clone();
    settled.updated_at = None;
    for a in &mut settled.attachments {
        a.counters = None;
    }
    settled
}

/// A connection to the agent's Redis, given up after 2 s (a pass must not hang on it).
pub(crate) async fn connect_redis(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = crate::store::client(url).map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection())
        .await
        .map_err(|_| "redis connect timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// Marks desired shaping stale and wakes a pass whenever labd says it wrote some (a schedule
/// step, an edit, a lab deleted), so a change is applied within milliseconds. Each
/// (re)subscription marks it stale too: what was said while unsubscribed is lost. The slow poll
/// stays besides, as a safety net.
async fn nudge_on_shaping_changes(redis_url: String, wake: tokio::sync::mpsc::Sender<()>, stale: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let subscribed = async {
            let client = crate::store::client(&redis_url)?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(keys::SHAPING_CHANGED).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(Duration::from_secs(2), subscribed).await {
            backoff = Duration::from_millis(250);
            stale.store(true, Ordering::SeqCst);
            let _ = wake.try_send(());
            let mut messages = pubsub.on_message();
            while messages.next().await.is_some() {
                stale.store(true, Ordering::SeqCst);
                let _ = wake.try_send(());
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::AttachmentShaping;

    #[test]
    fn a_report_changes_for_labd_when_what_it_judges_changes_not_its_counters_or_time() {
        let report = |delay: &str, seen: u64| TaskShaping {
            container: "c1".into(),
            updated_at: Some(Utc::now()),
            attachments: vec![AttachmentShaping {
                applied: serde_json::from_value(serde_json::json!({"delay": delay})).unwrap(),
                counters: Some(crate::shaping::userspace::CounterSnapshot { seen, ..Default::default() }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(what_labd_reads(&report("20ms", 1)), what_labd_reads(&report("20ms", 900)));
        assert_ne!(what_labd_reads(&report("20ms", 1)), what_labd_reads(&report("50ms", 1)));
        // Written again at once when anything but its time changed, counters included.
        let first = report("20ms", 1);
        let later = TaskShaping { updated_at: first.updated_at.map(|t| t + chrono::Duration::seconds(1)), ..first.clone() };
        assert!(same_but_time(&first, &later));
        assert!(!same_but_time(&first, &TaskShaping { updated_at: later.updated_at, ..report("20ms", 2) }));
        assert!(!same_but_time(&first, &TaskShaping { updated_at: later.updated_at, ..report("50ms", 1) }));
    }
}
