//! The controller: wires the labs directory, the Swarm and the status store together. One task
//! (the loop in [`Controller::run`]) owns all state; reconciles run as separate tasks and report
//! back, so a slow lab never blocks another.

pub mod cache;
pub mod clock;
pub mod deletion;
#[cfg(test)]
pub mod fakes;
pub mod queue;
pub mod reconcile;
pub mod scheduler;
pub mod task_faults;
#[cfg(test)]
mod tests;
pub mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::source::{load_dir, Catalog, DirWatcher, Fetched, FileEvent, GitNews, GitSource, LabEntry, Settle};
use crate::spec::{Diagnostic, ValidLab};
use crate::status::{EventReason, LabStatus, Phase, ReconcileAnswer, SourceStatus};
use crate::plan::LabMemory;
use crate::store::{LabStore, Notice, Suspensions};
use crate::swarm::{ContainerChange, EventSubject, Swarm};
use cache::Cached;
use deletion::{AbsenceTracker, Verdict};
use queue::{Backoff, WorkQueue};
use reconcile::{event, reconcile, Outcome, ReconcileError, Requeue, SuspendedBy, Target};
use scheduler::Scheduler;

/// The longest one reconcile may take before it counts as failed.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long after a Docker event its lab is looked at: Swarm counts a task running 20–70 ms
/// after its container's start event, and one look then sees a burst of events together.
const EVENT_FOLLOW_UP: Duration = Duration::from_millis(80);
/// How soon after an agent says a lab's reports changed it is looked at: they are written
/// already; the moment lets the other agents' reports of the same change come in.
const REPORT_FOLLOW_UP: Duration = Duration::from_millis(10);
/// How long after a container start labd keeps looking every `EVENT_FOLLOW_UP` for Swarm to
/// count its task (nodes report task states in batches; 20–200 ms measured here). Past it,
/// the count is off for another reason (a task died, was replaced): the poll looks.
const START_COUNTED_WITHIN: Duration = Duration::from_secs(1);
/// The longest a read of the labs directory may take (a hung network mount): unreadable then.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the labs' memories on Swarm are read again while they cannot be (a manager not
/// ready yet after a reboot); no lab is reconciled until they are.
const MEMORY_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Config {
    /// The labs directory; with `git`, the prefix of the Git source's file names.
    pub labs_dir: PathBuf,
    /// Read labs from a Git branch instead of the directory.
    pub git: Option<GitConfig>,
    /// Every lab is re-checked this often even without events.
    pub resync: Duration,
    /// How soon a lab that is still converging is looked at again.
    pub progress_poll: Duration,
    /// How long a lab must stay absent from complete reads before it is torn down.
    pub delete_grace: Duration,
    /// Argo CD's `allowEmpty`: an empty labs directory at start may prune every owned lab.
    pub allow_empty: bool,
    /// Remove labs no file defines that this labs directory never defined (orphans).
    pub prune_orphans: bool,
    /// How often labd says it is alive and picks up `labctl suspend`/`resume`.
    pub heartbeat: Duration,
}

/// A Git branch as the source of labs, fetched every `interval`.
#[derive(Debug, Clone)]
pub struct GitConfig {
    pub source: GitSource,
    pub interval: Duration,
}

/// What labd wants done with a lab, from the evidence of the labs directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Desire {
    /// Known from Redis or from Swarm, but no complete read has spoken yet: hands off.
    #[default]
    Unknown,
    /// A file defines it (validly or not): converge it to its last good version.
    Defined,
    /// No file here defines it, and there is no evidence that a person removed it (its file
    /// lay outside this directory, or labd started on an empty directory): report, keep.
    Orphaned(String),
    /// Absence confirmed by the deletion rule: tear it down.
    Delete,
}

/// What the controller knows of one lab.
#[derive(Debug, Default)]
struct LabState {
    /// The last valid definition: what runs, even while the file is broken.
    last_good: Option<ValidLab>,
    /// Errors of the current definition, if it is invalid.
    invalid: Option<Vec<Diagnostic>>,
    desire: Desire,
    /// The Git commit `last_good` was read at (a Git source).
    commit: Option<String>,
    /// What the generation counter was bumped for last (revision or error text).
    definition_key: String,
    status: LabStatus,
    /// When the current generation appeared, for time-to-Ready.
    generation_since: Option<Instant>,
    ready_reported: bool,
    /// Its services on Swarm at the last pass that looked (drift: one of them gone).
    seen: BTreeSet<String>,
    /// Its services' settings as labd saw them after applying their spec (hand edits show).
    applied: BTreeMap<String, reconcile::AppliedSettings>,
    /// Its containers started (Docker events) since its last pass began, and those before the
    /// pass running now.
    starts_unseen: u64,
    starts_in_pass: u64,
    /// The tasks its container starts so far promise to be running, while a look has found
    /// fewer: Swarm had not counted them yet. Carried from look to look, so a start that Swarm
    /// counts late cannot hide a later one that it has not counted yet.
    awaited_running: Option<u64>,
    /// When one of its containers last started.
    last_start: Option<Instant>,
    /// What labd remembers of it on Swarm (its memory config; `None`: it has none).
    memory: Option<LabMemory>,
    /// Its status was read back from the store at start: the store kept what labd wrote, so
    /// its suspensions can be trusted without the memory on Swarm.
    restored: bool,
}

enum Trigger {
    Files,
    Resync,
    /// A Docker event on one of the lab's objects.
    Lab { lab: String, subject: EventSubject },
    /// The lab's backoff or progress poll is over.
    Retry(String),
}

/// Tasks of the lab running at its last look.
fn running_tasks(status: &LabStatus) -> u64 {
    status.services.values().map(|s| s.running).sum()
}

/// What the scheduler's timers are for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Timer {
    /// Look at the lab again (its backoff is over, or it is still converging).
    Lab(String),
    /// Docker events arrived for the lab: look once they have stopped for a moment.
    Event(String),
    /// Read the directory again (the deletion rule's second look).
    Reread,
    /// Files changed: read once they are whole (see [`Settle`]).
    Settle,
    /// Try again to read the labs' memories on Swarm.
    Memories,
}

pub struct Controller<S: Swarm, St: LabStore> {
    config: Config,
    /// Swarm through the observed view every lab shares.
    swarm: Arc<Cached<S>>,
    store: St,
    labs: BTreeMap<String, LabState>,
    absence: AbsenceTracker,
    /// Whether a complete read has happened since start (the empty-directory guard applies
    /// to the first one only).
    read_once: bool,
    /// Every timer of the controller.
    timers: Scheduler<Timer>,
    /// When file events are worth a read.
    settle: Settle,
    queue: WorkQueue,
    backoff: Backoff,
    phases: watch::Sender<BTreeMap<String, Phase>>,
    metrics: Arc<Metrics>,
    /// What the live page shows (labd's HTTP endpoint), if anything.
    view: Option<Arc<watch::Sender<BTreeMap<String, crate::http::LabView>>>>,
    /// What `labctl suspend`/`resume` said, as last read from the store.
    suspensions: Suspensions,
    /// The labs' memories on Swarm have been read (failed reads so far, and the last error,
    /// while not), and the labs whose pass waits for them.
    memories_read: bool,
    memory_failures: u32,
    memory_error: String,
    awaiting_memory: BTreeSet<String>,
    /// The last `labctl start` of each lab, as last read from the store.
    starts: BTreeMap<String, chrono::DateTime<Utc>>,
    /// With a Git source: the labs of the newest commit fetched (`None`: no fetch worked yet),
    /// and what labctl shows of the source.
    fetched: Option<Catalog>,
    source: Option<SourceStatus>,
    /// With a Git source: where `labctl reconcile`'s requests go for a fetch now, and the
    /// requests waiting for one (id → the lab to look at, or every lab).
    fetch_now: Option<mpsc::Sender<String>>,
    asked: BTreeMap<String, Option<String>>,
    /// With a directory: why it could not be read at the last read (`Some(None)`: it could),
    /// as last said in the log and in Redis for labctl; and when that was last logged.
    dir_trouble: Option<Option<String>>,
    dir_trouble_logged: Option<Instant>,
}

impl<S: Swarm, St: LabStore> Controller<S, St> {
    pub async fn new(config: Config, swarm: S, store: St) -> Self {
        let (phases, _) = watch::channel(BTreeMap::new());
        let absence = AbsenceTracker::new(config.delete_grace);
        let labs_dir = match &config.git {
            Some(git) => git.source.root(),
            None => absolute(&config.labs_dir),
        };
        let source = config.git.as_ref().map(|g| SourceStatus { url: g.source.shown_url(), branch: g.source.branch.clone(), ..Default::default() });
        let config = Config { labs_dir, ..config };
        let mut c = Controller {
            config,
            swarm: Arc::new(Cached::new(swarm)),
            store,
            labs: BTreeMap::new(),
            absence,
            read_once: false,
            timers: Scheduler::default(),
            settle: Settle::default(),
            queue: WorkQueue::default(),
            backoff: Backoff::default(),
            phases,
            metrics: Arc::default(),
            view: None,
            suspensions: Default::default(),
            memories_read: false,
            memory_failures: 0,
            memory_error: String::new(),
            awaiting_memory: BTreeSet::new(),
            starts: Default::default(),
            fetched: None,
            source,
            fetch_now: None,
            asked: BTreeMap::new(),
            dir_trouble: None,
            dir_trouble_logged: None,
        };
        c.restore_status().await;
        c.restore_memories().await;
        // Before the first pass, not at the first heartbeat: a lab suspended with labctl
        // must not be changed by the first look of a restarted labd.
        c.refresh_flags().await;
        c
    }

    /// Prometheus metrics go to `metrics` (shared with the HTTP endpoint).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Every lab's definition and status go to `view` after each change (the live page).
    pub fn with_view(mut self, view: Arc<watch::Sender<BTreeMap<String, crate::http::LabView>>>) -> Self {
        self.view = Some(view);
        self
    }

    /// Phases of all labs, updated after each reconcile (for `--once` and tests).
    pub fn phases(&self) -> watch::Receiver<BTreeMap<String, Phase>> {
        self.phases.subscribe()
    }

    /// Runs until `shutdown` resolves. Labs keep running on Swarm after it returns.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let (trigger_tx, mut triggers) = mpsc::channel::<Trigger>(1024);
        let (files_tx, mut file_events) = mpsc::channel::<FileEvent>(256);
        let (git_tx, mut git_news) = mpsc::channel::<Fetched>(4);
        // A directory is watched; a Git branch is fetched on its interval (and when asked).
        let mut watcher = match &self.config.git {
            None => Some(DirWatcher::new(&self.config.labs_dir, files_tx)),
            Some(git) => {
                let (asks_tx, asks) = mpsc::channel::<String>(64);
                self.fetch_now = Some(asks_tx);
                tokio::spawn(crate::source::git::sync(git.source.clone(), git.interval, git_tx, asks));
                None
            }
        };

        // Docker events on owned objects: a service removed or scaled by hand comes back.
        let events_tx = trigger_tx.clone();
        let swarm = self.swarm.clone();
        let events_task = tokio::spawn(async move {
            // The stream ends when dockerd restarts: open it again with backoff, and resync
            // every lab once it is back, since changes made meanwhile sent no event.
            let mut backoff = Duration::from_millis(250);
            let mut reopened = false;
            loop {
                let events = swarm.events();
                futures::pin_mut!(events);
                if reopened {
                    // What changed while the stream was closed sent no event.
                    swarm.invalidate();
                    let _ = events_tx.send(Trigger::Resync).await;
                }
                while let Some(item) = events.next().await {
                    match &item {
                        // A container's start or death changes tasks, not services or networks.
                        Ok(e) if matches!(e.subject, EventSubject::Container(_)) => swarm.invalidate_tasks(),
                        // Memories are not part of the observed view.
                        Ok(e) if e.subject == EventSubject::MemoryRemoved => {}
                        Ok(_) => swarm.invalidate(),
                        Err(_) => {}
                    }
                    match item {
                        Ok(e) if e.subject == EventSubject::Node => {
                            backoff = Duration::from_millis(250);
                            // A node went down or came back: every lab may have tasks there.
                            if events_tx.send(Trigger::Resync).await.is_err() {
                                return; // the controller is gone (stopped, or no longer leading)
                            }
                        }
                        Ok(e) => {
                            backoff = Duration::from_millis(250);
                            if let Some(lab) = e.lab {
                                if events_tx.send(Trigger::Lab { lab, subject: e.subject }).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, retry_in = ?backoff, "docker event stream ended; reopening it");
                            break;
                        }
                    }
                }
                if events_tx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                reopened = true;
            }
        });

        let mut resync = tokio::time::interval(self.config.resync);
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        let mut running: JoinSet<(String, Outcome, Duration)> = JoinSet::new();
        let _ = trigger_tx.send(Trigger::Files).await;
        self.discover_owned().await;
        // `labctl start`/`suspend`/`resume` are read at once (a manual schedule's time 0 is
        // the moment of the start: a look 5 s later would pass over its first steps).
        let notices = self.store.notices();
        tokio::pin!(notices);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(notice) = notices.next() => match notice {
                    Notice::Flags => self.refresh_flags().await,
                    // An agent applied (or lost) what a lab waits for: looked at as after a
                    // Docker event, not at the lab's next poll.
                    Notice::Reports(labs) => {
                        for lab in labs.into_iter().filter(|lab| self.labs.contains_key(lab) && !self.backoff.waiting(lab)) {
                            self.timers.schedule(Timer::Event(lab), REPORT_FOLLOW_UP);
                        }
                    }
                    // Read at once (a directory), or at the next fetch, which starts now.
                    Notice::Reconcile { id, lab } => match &self.fetch_now {
                        Some(fetch_now) => {
                            if fetch_now.try_send(id.clone()).is_ok() {
                                self.asked.insert(id, lab);
                            }
                        }
                        None => {
                            self.on_files().await;
                            self.reconcile_now(&id, lab.as_deref(), false);
                        }
                    },
                },
                Some(change) = file_events.recv() => {
                    let wait = self.settle.on_event(&change, Instant::now());
                    self.timers.reset(Timer::Settle, wait);
                }
                _ = heartbeat.tick() => {
                    self.store.heartbeat(self.config.resync);
                    self.refresh_flags().await;
                }
                _ = resync.tick() => {
                    self.swarm.invalidate();
                    self.on_trigger(Trigger::Resync).await;
                    watcher.iter_mut().for_each(DirWatcher::refresh);
                }
                Some(t) = triggers.recv() => self.on_trigger(t).await,
                Some(Fetched { news, asked_by }) = git_news.recv() => {
                    let moved = matches!(news, GitNews::Moved(_));
                    self.on_git(news).await;
                    for id in asked_by {
                        let lab = self.asked.remove(&id).flatten();
                        self.reconcile_now(&id, lab.as_deref(), moved);
                    }
                }
                timer = self.timers.next() => match timer {
                    Timer::Lab(lab) | Timer::Event(lab) => {
                        // Tasks change without an event here (on other nodes; Swarm counts a
                        // started container a moment after its event): count them again.
                        // Services, networks and nodes send events, labd's own changes mark
                        // everything stale, and the resync lists everything besides.
                        self.swarm.invalidate_tasks();
                        self.on_trigger(Trigger::Retry(lab)).await;
                    }
                    Timer::Reread => self.on_trigger(Trigger::Files).await,
                    Timer::Memories => self.restore_memories().await,
                    Timer::Settle => {
                        self.settle.read();
                        self.swarm.invalidate();
                        self.on_files().await;
                        watcher.iter_mut().for_each(DirWatcher::refresh);
                    }
                },
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Ok((lab, outcome, took)) = done {
                        self.metrics.reconciled(&lab, took.as_secs_f64(), outcome.result.is_err());
                        self.on_done(&lab, outcome);
                    }
                }
            }
            for lab in self.queue.take_ready() {
                if self.awaits_memory(&lab) {
                    continue;
                }
                let Some(target) = self.target_of(&lab) else { self.queue.done(&lab, false); continue };
                let swarm = self.swarm.clone();
                let store = self.store.clone();
                let mut status = self.labs.get(&lab).map(|s| s.status.clone()).unwrap_or_default();
                if let Some(state) = self.labs.get_mut(&lab) {
                    state.starts_in_pass = std::mem::take(&mut state.starts_unseen);
                }
                if self.config.git.is_some() {
                    status.commit = self.labs.get(&lab).and_then(|s| s.commit.clone());
                }
                let poll = self.config.progress_poll;
                let span = tracing::info_span!("reconcile", lab = %lab);
                running.spawn(
                    async move {
                        let started = Instant::now();
                        let calls = swarm.api_calls();
                        let fallback = status.clone();
                        // A panic or a hung Docker call ends this lab's pass with an error (and
                        // its backoff), never a lab frozen in "running".
                        let pass = std::panic::AssertUnwindSafe(reconcile(swarm.as_ref(), &store, &lab, target, status, poll)).catch_unwind();
                        let outcome = match tokio::time::timeout(RECONCILE_TIMEOUT, pass).await {
                            Ok(Ok(outcome)) => outcome,
                            Ok(Err(panic)) => {
                                let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
                                tracing::error!(lab = %lab, panic = %what, "reconcile panicked; retrying with backoff");
                                reconcile::failed(fallback, ReconcileError::Panicked(what))
                            }
                            Err(_) => reconcile::failed(fallback, ReconcileError::TimedOut(RECONCILE_TIMEOUT)),
                        };
                        store.gauge(&lab, "last_reconcile_ms", started.elapsed().as_millis());
                        // Exact when one lab reconciles at a time (as in the benchmark).
                        store.gauge(&lab, "last_reconcile_api_calls", u128::from(swarm.api_calls() - calls));
                        (lab, outcome, started.elapsed())
                    }
                    .instrument(span),
                );
            }
        }
        events_task.abort();
        // Let in-flight reconciles finish their current API calls rather than cut them mid-way.
        while running.join_next().await.is_some() {}
        self.store.stopped();
        tracing::info!("labd stopped; labs keep running on Swarm");
    }

    async fn on_trigger(&mut self, t: Trigger) {
        match t {
            Trigger::Files | Trigger::Resync => {
                self.on_files().await;
                for lab in self.labs.keys().cloned().collect::<Vec<_>>() {
                    if !self.backoff.waiting(&lab) {
                        self.queue.add(&lab);
                    }
                }
            }
            Trigger::Lab { lab, subject } => {
                if let Some(state) = self.labs.get_mut(&lab) {
                    match subject {
                        EventSubject::Container(ContainerChange::Started) => {
                            state.starts_unseen += 1;
                            state.last_start = Some(Instant::now());
                        }
                        // Gone from Swarm (its own removal at a teardown included): the next
                        // pass writes it again if there is anything to remember.
                        EventSubject::MemoryRemoved => state.memory = None,
                        _ => {}
                    }
                }
                // Not at once: Swarm reports a task running a moment after its container's
                // start event, and events come in bursts (one per task). Not postponed by the
                // next event either: tasks that start one after another over seconds would
                // otherwise wait for the last one to be seen at all.
                if self.labs.contains_key(&lab) && !self.backoff.waiting(&lab) {
                    self.timers.schedule(Timer::Event(lab), EVENT_FOLLOW_UP);
                }
            }
            Trigger::Retry(lab) => {
                if self.labs.contains_key(&lab) {
                    self.queue.add(&lab);
                }
            }
        }
    }

    /// `labctl reconcile`, once the source is read: `lab` (or every lab) looked at now, out of
    /// any backoff, as after an event; and the answer, saying what was read and looked at.
    fn reconcile_now(&mut self, id: &str, lab: Option<&str>, moved: bool) {
        self.swarm.invalidate();
        let answered_at = Some(Utc::now());
        let labs: Vec<String> = self.labs.keys().filter(|l| lab.is_none_or(|want| want == l.as_str())).cloned().collect();
        for lab in &labs {
            self.queue.add(lab);
        }
        tracing::info!(request = id, labs = ?labs, "labctl reconcile: source read, labs looked at now");
        self.store.answer_reconcile(id, &ReconcileAnswer { source: self.source.clone(), moved, labs, answered_at });
    }

    /// What the Git sync found: a new commit is applied as one change (every lab is looked at,
    /// so each status shows the commit); a failed fetch changes nothing but says so.
    async fn on_git(&mut self, news: GitNews) {
        let Some(source) = self.source.as_mut() else { return };
        source.fetched_at = Some(Utc::now());
        self.metrics.set_source_readable(!matches!(news, GitNews::Failed(_)));
        match news {
            GitNews::Moved(catalog) => {
                tracing::info!(url = %source.url, branch = %source.branch, commit = ?catalog.commit, "new commit fetched; applying it");
                source.commit = catalog.commit.clone();
                source.error = None;
                self.fetched = Some(catalog);
                self.store.put_source(source);
                self.on_trigger(Trigger::Files).await;
            }
            GitNews::Unchanged => {
                if source.error.take().is_some() {
                    tracing::info!(url = %source.url, "fetching works again");
                }
                self.store.put_source(source);
            }
            GitNews::Failed(why) => {
                if source.error.as_deref() != Some(why.as_str()) {
                    tracing::warn!(error = %why, commit = ?source.commit, "fetch failed; the last fetched commit stays applied");
                }
                source.error = Some(why);
                self.store.put_source(source);
            }
        }
    }

    /// Re-reads the whole directory (or takes the newest fetched commit) and updates what each
    /// lab should be.
    async fn on_files(&mut self) {
        if self.config.git.is_some() {
            return match self.fetched.clone() {
                Some(catalog) => self.apply_catalog(catalog, Instant::now()),
                None => self.unreadable("no commit has been fetched yet"),
            };
        }
        let dir = self.config.labs_dir.clone();
        let read = tokio::time::timeout(READ_TIMEOUT, tokio::task::spawn_blocking(move || load_dir(&dir))).await;
        let catalog = match read {
            Ok(Ok(Ok(c))) => c,
            Ok(Ok(Err(e))) => return self.unreadable(&e.to_string()),
            Ok(Err(e)) => return self.unreadable(&format!("the read failed: {e}")),
            Err(_) => return self.unreadable(&format!("no answer within {}s", READ_TIMEOUT.as_secs())),
        };
        self.say_dir_trouble(None);
        self.apply_catalog(catalog, Instant::now());
    }

    /// Unknown state (a Git sync swapping a symlink, a mount not there yet): change nothing.
    fn unreadable(&mut self, why: &str) {
        if self.config.git.is_some() {
            tracing::warn!(error = %why, "labs unreadable; keeping every lab as it is");
        } else {
            self.say_dir_trouble(Some(why.to_string()));
        }
        self.absence.incomplete();
    }

    /// Says in the log, and in Redis for `labctl status`, that the labs directory cannot be
    /// read (once, and again each minute while it lasts, not at every retry), or can again.
    fn say_dir_trouble(&mut self, why: Option<String>) {
        const AGAIN: Duration = Duration::from_secs(60);
        let dir = self.config.labs_dir.display().to_string();
        let changed = self.dir_trouble.as_ref() != Some(&why);
        let due = self.dir_trouble_logged.is_none_or(|at| at.elapsed() >= AGAIN);
        match &why {
            Some(e) if changed || due => {
                tracing::warn!(%dir, error = %e, "labs directory unreadable; keeping every lab as it is (create it, or start labd with --labs set to where the labs are)");
                self.dir_trouble_logged = Some(Instant::now());
            }
            None if changed && self.dir_trouble.is_some() => tracing::info!(%dir, "labs directory readable again"),
            _ => {}
        }
        self.metrics.set_source_readable(why.is_none());
        if changed {
            let source = SourceStatus { url: dir, branch: String::new(), commit: None, fetched_at: Some(Utc::now()), error: why.clone() };
            self.store.put_source(&source);
            self.dir_trouble = Some(why);
        }
    }

    fn apply_catalog(&mut self, catalog: Catalog, now: Instant) {
        let complete = catalog.incomplete.is_empty();
        if !complete {
            tracing::warn!(problems = ?catalog.incomplete, "incomplete read of the labs directory: no lab is considered gone");
            self.absence.incomplete();
        }
        // Labs whose remembered file now fails to parse (or is empty, half-written) are kept:
        // that file still defines them, we just cannot read what it says.
        for (file, diags) in &catalog.file_errors {
            let kept: Vec<String> = self
                .labs
                .iter()
                .filter(|(name, st)| !catalog.labs.contains_key(*name) && Path::new(&st.status.source) == file)
                .map(|(name, _)| name.clone())
                .collect();
            for lab in kept {
                let state = self.labs.entry(lab.clone()).or_default();
                if Self::set_definition(state, &lab, None, Some(diags.clone())) {
                    self.queue.add(&lab);
                }
                self.absence.present(&lab);
            }
        }
        for (name, entry) in &catalog.labs {
            let state = self.labs.entry(name.clone()).or_default();
            if let Some(file) = catalog.file_of(name) {
                state.status.source = file.display().to_string();
            }
            let changed = match entry {
                LabEntry::Valid(v) => {
                    state.commit = catalog.commit.clone();
                    Self::set_definition(state, name, Some(v.clone()), None)
                }
                LabEntry::Invalid(d) => Self::set_definition(state, name, None, Some(d.clone())),
            };
            self.absence.present(name);
            if changed {
                self.queue.add(name);
            }
        }
        if !complete {
            return;
        }
        let first_read = !self.read_once;
        self.read_once = true;
        let root = self.config.labs_dir.clone();
        let undefined: Vec<String> = self
            .labs
            .iter()
            .filter(|(name, st)| {
                !catalog.labs.contains_key(*name) && !catalog.file_errors.keys().any(|f| Path::new(&st.status.source) == f)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in undefined {
            let Some(state) = self.labs.get_mut(&name) else { continue };
            if state.desire == Desire::Delete {
                continue;
            }
            // Is there evidence that a person removed this lab's file from this directory?
            let remembered = Path::new(&state.status.source);
            let orphan = if let Desire::Orphaned(why) = &state.desire {
                // Once orphaned, only a file defining it again (or --prune-orphans) changes it.
                Some(why.clone())
            } else if state.status.source.is_empty() {
                Some("no record of the file that defined it (labd's status in Redis was lost?)".to_string())
            } else if !remembered.starts_with(&root) {
                Some(format!("its file {} lies outside the labs directory {}", remembered.display(), root.display()))
            } else if first_read && catalog.is_empty() && !self.config.allow_empty {
                Some(format!("the labs directory {} was empty at start (start labd with --allow-empty to prune)", root.display()))
            } else {
                None
            };
            match orphan {
                Some(why) if !self.config.prune_orphans => {
                    if state.desire != Desire::Orphaned(why.clone()) {
                        tracing::warn!(lab = %name, reason = %why, "orphaned lab: no file defines it; keeping it (--prune-orphans removes such labs)");
                        self.store.event(&name, event(EventReason::Orphaned, format!("no file defines the lab and it is kept: {why}")));
                        state.desire = Desire::Orphaned(why);
                        self.queue.add(&name);
                    }
                }
                _ => match self.absence.absent(&name, now) {
                    Verdict::Confirmed => {
                        tracing::info!(lab = %name, "no file has defined the lab for the grace period: tearing it down");
                        let message = format!("no file has defined the lab for {:.1}s", self.config.delete_grace.as_secs_f64());
                        self.store.event(&name, event(EventReason::Deleting, message));
                        state.desire = Desire::Delete;
                        self.queue.add(&name);
                    }
                    Verdict::Pending { recheck_in, first } => {
                        if first && state.desire == Desire::Defined {
                            tracing::info!(lab = %name, grace = ?self.config.delete_grace, "no file defines the lab; removing it unless a file defines it again");
                            let message = format!("no file defines the lab; it is removed in {:.1}s unless a file defines it again", recheck_in.as_secs_f64());
                            self.store.event(&name, event(EventReason::FileGone, message));
                        }
                        self.timers.schedule(Timer::Reread, recheck_in + Duration::from_millis(50));
                    }
                },
            }
        }
    }

    /// Records a lab's current definition; bumps its generation when it changed.
    fn set_definition(state: &mut LabState, name: &str, valid: Option<ValidLab>, invalid: Option<Vec<Diagnostic>>) -> bool {
        let key = match (&valid, &invalid) {
            (Some(v), _) => v.revision.clone(),
            (None, Some(d)) => d.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"),
            (None, None) => String::new(),
        };
        let was_defined = state.desire == Desire::Defined;
        state.desire = Desire::Defined;
        if valid.is_some() {
            state.last_good = valid;
        }
        state.invalid = invalid;
        if state.definition_key == key {
            // Same definition; a lab that was orphaned or unknown still needs a pass.
            return !was_defined;
        }
        // A restored status with the same revision keeps its generation (labd restarted).
        if !(state.definition_key.is_empty() && state.status.revision == key && state.status.generation > 0) {
            state.status.generation += 1;
            state.generation_since = Some(Instant::now());
            state.ready_reported = false;
        }
        state.definition_key = key;
        state.status.name = name.to_string();
        true
    }

    fn target_of(&self, lab: &str) -> Option<Target> {
        let state = self.labs.get(lab)?;
        match &state.desire {
            Desire::Unknown => None,
            Desire::Delete => Some(Target::Delete),
            Desire::Orphaned(why) => Some(Target::Orphaned(why.clone())),
            Desire::Defined => {
                let by_spec = state.last_good.as_ref().is_some_and(|l| l.lab.spec.suspend == Some(true));
                let suspended = if self.labctl_suspended(lab) {
                    Some(SuspendedBy::Labctl)
                } else {
                    by_spec.then_some(SuspendedBy::Spec)
                };
                let started_by_hand = self.starts.get(lab).copied();
                Some(Target::Apply { lab: state.last_good.clone(), invalid: state.invalid.clone(), suspended, started_by_hand, last_seen: state.seen.clone(), applied: state.applied.clone(), remembered: state.memory.clone() })
            }
        }
    }

    fn on_done(&mut self, lab: &str, outcome: Outcome) {
        self.queue.done(lab, outcome.result.is_err());
        self.store.global_gauge("docker_api_calls", u128::from(self.swarm.api_calls()));
        self.metrics.api_calls(self.swarm.api_calls());
        for (kind, n) in &outcome.actions {
            self.store.count(lab, &format!("actions_{kind}"), *n as i64);
            self.metrics.acted(lab, kind, *n);
        }
        self.store.count(lab, "reconciles", 1);
        let Some(state) = self.labs.get_mut(lab) else { return };
        if let Some(applied) = outcome.applied {
            state.applied = applied;
        }
        if let Some(seen) = outcome.seen {
            state.seen = seen;
        }
        if let Some(memory) = outcome.memory {
            state.memory = Some(memory);
        }
        if outcome.drift > 0 && state.desire == Desire::Defined {
            self.store.count(lab, "drift_repairs", outcome.drift as i64);
            self.metrics.drift_repaired(lab, outcome.drift);
            self.store.event(lab, event(EventReason::DriftRepaired, format!("{} services changed outside labd were restored", outcome.drift)));
        }
        if outcome.gone && matches!(state.desire, Desire::Delete | Desire::Orphaned(_)) {
            self.store.delete_lab(lab);
            self.metrics.forget(lab);
            self.labs.remove(lab);
            self.timers.cancel(&Timer::Lab(lab.to_string()));
            self.timers.cancel(&Timer::Event(lab.to_string()));
            self.backoff.succeeded(lab);
            self.publish_phases();
            return;
        }
        let mut status = outcome.status;
        status.observed_generation = status.generation;
        // The file may have moved while this pass ran: keep what the last read said.
        status.source = state.status.source.clone();
        let requeue = match &outcome.result {
            // The error policy: every failure waits out the lab's exponential backoff.
            Err(err) => {
                self.store.count(lab, "errors", 1);
                let (attempt, wait) = self.backoff.failed(lab);
                status.backoff = Some(crate::status::Backoff { attempt, next_try: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default() });
                self.store.event(lab, event(EventReason::ReconcileFailed, format!("{err} (attempt {attempt}, next try in {}s)", wait.as_secs())));
                Some(wait)
            }
            Ok(next) => {
                self.backoff.succeeded(lab);
                status.backoff = None;
                // A pass that could not do everything without an error of its own (an object
                // of the lab's name that it does not own): said once, not at every look.
                if let Some(problem) = status.last_error.as_ref().filter(|e| state.status.last_error.as_ref() != Some(*e)) {
                    self.store.event(lab, event(EventReason::ReconcileFailed, problem.clone()));
                }
                match next {
                    Requeue::AwaitChange => None,
                    Requeue::After(wait) => Some(*wait),
                }
            }
        };
        if status.phase == Phase::Ready && !state.ready_reported {
            state.ready_reported = true;
            if let Some(since) = state.generation_since {
                self.store.gauge(lab, "time_to_ready_ms", since.elapsed().as_millis());
                self.metrics.ready_after(lab, since.elapsed().as_secs_f64());
            }
            self.store.event(lab, event(EventReason::Ready, status.message.clone()));
        }
        if state.status.phase != status.phase {
            tracing::info!(lab, phase = %status.phase, message = %status.message, "phase changed");
        }
        // As kubelet's BackOff: once when a service's tasks begin to fail, not at every look.
        for (service, s) in status.services.iter().filter(|(name, s)| s.failing && !state.status.services.get(*name).is_some_and(|was| was.failing)) {
            self.store.event(lab, event(EventReason::TasksFailing, format!("{service}: {}", s.message)));
        }
        if status.past_progress_deadline() && !state.status.past_progress_deadline() {
            self.store.event(lab, event(EventReason::ProgressDeadlineExceeded, status.message.clone()));
        }
        // Containers started before this look that Swarm did not yet count as running tasks
        // (it does 20–70 ms after the start event, sometimes 200 ms): look again as soon as
        // after an event, not at the poll. Once after a look that had starts of its own; again
        // and again once every task the lab wants has started (no later start will bring a
        // look), until Swarm counts them all or the last start is too old to be the reason.
        let running = running_tasks(&status);
        let awaited = state.awaited_running.unwrap_or(0).max(running_tasks(&state.status)) + state.starts_in_pass;
        let recent_start = state.last_start.is_some_and(|t| t.elapsed() < START_COUNTED_WITHIN);
        let promised = state.starts_in_pass > 0 || state.awaited_running.is_some();
        state.awaited_running = (promised && requeue.is_some() && running < awaited && recent_start).then_some(awaited);
        let all_started = awaited >= status.services.values().map(|s| s.desired).sum::<u64>();
        let look_again = state.awaited_running.is_some() && (state.starts_in_pass > 0 || all_started);
        if look_again && !self.backoff.waiting(lab) {
            self.timers.schedule(Timer::Event(lab.to_string()), EVENT_FOLLOW_UP);
        }
        state.status = status;
        self.store.put_status(&state.status);
        match requeue {
            // From this look, not the one before: a lab whose events keep it looked at is not
            // polled besides (each look costs dockerd ~12 ms of CPU with 50 tasks, taken from
            // the containers starting), and this pass's answer is the fresh one.
            Some(wait) => self.timers.reset(Timer::Lab(lab.to_string()), wait),
            None => self.timers.cancel(&Timer::Lab(lab.to_string())),
        }
        self.publish_phases();
    }

    /// Picks up `labctl suspend`/`resume`/`start`: labs whose flag changed are looked at now.
    async fn refresh_flags(&mut self) {
        let mut changed: Vec<String> = Vec::new();
        if let Some(starts) = self.store.starts().await {
            changed.extend(starts.iter().filter(|(lab, t)| self.starts.get(*lab) != Some(*t)).map(|(lab, _)| lab.clone()));
            self.starts = starts;
        }
        let Some(now) = self.store.suspensions().await else { return self.queue_changed(changed) };
        let before: Vec<bool> = self.labs.keys().map(|lab| self.labctl_suspended(lab)).collect();
        self.suspensions = now;
        let flipped = self.labs.keys().zip(before).filter(|(lab, was)| self.labctl_suspended(lab) != *was);
        changed.extend(flipped.map(|(lab, _)| lab.clone()));
        self.queue_changed(changed);
    }

    /// Whether `labctl suspend` holds the lab: as the store says, or, where it says nothing
    /// (a Redis that restarted empty), as labd remembers on Swarm.
    fn labctl_suspended(&self, lab: &str) -> bool {
        let remembered = self.labs.get(lab).and_then(|s| s.memory.as_ref()).is_some_and(|m| m.suspended);
        self.suspensions.holds(lab, remembered)
    }

    /// What labd remembers of each lab on Swarm: its memory, and the schedule's clock where
    /// the store has no status to resume it from (Redis lost it). A lab with only a memory
    /// left joins the others, so the deletion rule decides about it like any lab. Until the
    /// memories are read (a host that rebooted: Redis empty, the manager without a leader for
    /// a few seconds), no pass runs; the read is tried again every [`MEMORY_RETRY`].
    async fn restore_memories(&mut self) {
        let read = tokio::time::timeout(READ_TIMEOUT, self.swarm.memories()).await.unwrap_or_else(|_| {
            Err(crate::swarm::SwarmError::Api { action: "list configs".into(), message: format!("no answer within {}s", READ_TIMEOUT.as_secs()) })
        });
        match read {
            Ok(memories) => {
                if self.memory_failures > 0 {
                    tracing::info!(failures = self.memory_failures, "the labs' memories on Swarm are read; reconciling");
                }
                self.memories_read = true;
                for lab in std::mem::take(&mut self.awaiting_memory) {
                    self.queue.add(&lab);
                }
                for (lab, memory) in memories {
                    let state = self.labs.entry(lab.clone()).or_default();
                    if state.status.schedule.is_none() && memory.clock.is_some() {
                        tracing::info!(lab = %lab, "the status is gone; the schedule's clock resumes from the lab's memory on Swarm");
                        state.status.schedule = memory.schedule_status();
                    }
                    state.memory = Some(memory);
                }
            }
            Err(e) => {
                self.memory_failures += 1;
                self.memory_error = e.to_string();
                if self.memory_failures % 60 == 1 {
                    tracing::warn!(error = %e, retry_in = ?MEMORY_RETRY, "cannot read the labs' memories on Swarm (suspensions, schedule clocks); no lab is reconciled until they are read");
                }
                self.timers.schedule(Timer::Memories, MEMORY_RETRY);
            }
        }
    }

    /// A lab whose status the store did not keep waits for the memories (a Redis that lost
    /// everything also lost its suspension): its pass is held, and its status says why.
    fn awaits_memory(&mut self, lab: &str) -> bool {
        let Some(state) = self.labs.get_mut(lab).filter(|s| !self.memories_read && !s.restored) else { return false };
        self.queue.done(lab, false);
        self.awaiting_memory.insert(lab.to_string());
        let message = format!("waiting to read what labd remembers of the lab on Swarm: {} (retrying every {}s)", self.memory_error, MEMORY_RETRY.as_secs());
        if state.status.message != message {
            state.status.name = lab.to_string();
            state.status.message = message;
            self.store.put_status(&state.status);
        }
        true
    }

    fn queue_changed(&mut self, changed: Vec<String>) {
        for lab in changed {
            if self.labs.contains_key(&lab) {
                tracing::info!(lab = %lab, suspended = self.labctl_suspended(&lab), started = ?self.starts.get(&lab), "suspension or start changed");
                self.queue.add(&lab);
            }
        }
    }

    fn publish_phases(&self) {
        for (lab, state) in &self.labs {
            self.metrics.set_phase(lab, state.status.phase);
            self.metrics.set_services(lab, &state.status.services);
        }
        let phases = self.labs.iter().map(|(n, s)| (n.clone(), s.status.phase)).collect();
        self.phases.send_replace(phases);
        // Called after every reconcile: only what changed is copied (the definitions are
        // shared), and readers wake only then.
        if let Some(view) = &self.view {
            view.send_if_modified(|shown| {
                let before = shown.len();
                shown.retain(|name, _| self.labs.contains_key(name));
                let mut changed = shown.len() != before;
                for (name, state) in &self.labs {
                    let lab = state.last_good.as_ref().map(|v| v.lab.clone());
                    let same = shown.get(name).is_some_and(|v| v.status == state.status && v.lab.as_ref().map(Arc::as_ptr) == lab.as_ref().map(Arc::as_ptr));
                    if !same {
                        shown.insert(name.clone(), crate::http::LabView { lab, status: state.status.clone() });
                        changed = true;
                    }
                }
                changed
            });
        }
    }

    /// Picks up generation counters from the status a previous labd wrote.
    async fn restore_status(&mut self) {
        for status in self.store.statuses().await {
            let name = status.name.clone();
            let state = self.labs.entry(name.clone()).or_default();
            // What the last labd saw running: one of them removed while labd was down is drift.
            state.seen = status.services.iter().filter(|(_, s)| s.running > 0).map(|(short, _)| crate::plan::object_name(&name, short)).collect();
            state.status = status;
            state.restored = true;
        }
    }

    /// Labs that own objects on Swarm join the ones Redis remembers, as Unknown: the first
    /// complete read of the directory decides whether each is defined, gone or orphaned.
    async fn discover_owned(&mut self) {
        match self.swarm.owned_labs().await {
            Ok(owned) => {
                for lab in owned {
                    self.labs.entry(lab).or_default();
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the labs owned on Swarm; the resync finds them"),
        }
    }
}

/// The labs directory as an absolute path, without resolving symlinks: a Git sync swaps the
/// link's target, and the directory stays "the same" for the deletion rule.
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}
