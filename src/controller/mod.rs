//! The controller: wires the labs directory, the Swarm and the status store together. One task
//! (the loop in [`Controller::run`]) owns all state; reconciles run as separate tasks and report
//! back, so a slow lab never blocks another.

pub mod queue;
pub mod reconcile;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::source::{load_dir, Catalog, DirWatcher, LabEntry};
use crate::spec::{Diagnostic, ValidLab};
use crate::status::{LabStatus, Phase};
use crate::store::{RedisStore, StoreReader};
use crate::swarm::{DockerSwarm, Swarm};
use queue::{Backoff, WorkQueue};
use reconcile::{event, reconcile, Outcome, Target};

#[derive(Debug, Clone)]
pub struct Config {
    pub labs_dir: PathBuf,
    pub redis_url: String,
    /// Every lab is re-checked this often even without events.
    pub resync: Duration,
    /// How soon a lab that is still converging is looked at again.
    pub progress_poll: Duration,
}

/// What the controller knows of one lab.
#[derive(Debug, Default)]
struct LabState {
    /// The last valid definition: what runs, even while the file is broken.
    last_good: Option<ValidLab>,
    /// Errors of the current definition, if it is invalid.
    invalid: Option<Vec<Diagnostic>>,
    /// Defined by a file right now (or kept because its file cannot be parsed).
    defined: bool,
    /// What the generation counter was bumped for last (revision or error text).
    definition_key: String,
    status: LabStatus,
    /// When the current generation appeared, for time-to-Ready.
    generation_since: Option<Instant>,
    ready_reported: bool,
}

enum Trigger {
    Files,
    Resync,
    /// A Docker event on one of the lab's objects.
    Lab(String),
    /// The lab's backoff or progress poll is over.
    Retry(String),
}

pub struct Controller<S: Swarm> {
    config: Config,
    swarm: Arc<S>,
    store: RedisStore,
    labs: BTreeMap<String, LabState>,
    /// Lab names each file defined at the last successful read.
    files: BTreeMap<PathBuf, Vec<String>>,
    queue: WorkQueue,
    backoff: Backoff,
    phases: watch::Sender<BTreeMap<String, Phase>>,
}

impl Controller<DockerSwarm> {
    pub async fn new(config: Config, swarm: DockerSwarm, store: RedisStore) -> Self {
        let (phases, _) = watch::channel(BTreeMap::new());
        let mut c = Controller { config, swarm: Arc::new(swarm), store, labs: BTreeMap::new(), files: BTreeMap::new(), queue: WorkQueue::default(), backoff: Backoff::default(), phases };
        c.restore_status().await;
        c
    }

    /// Phases of all labs, updated after each reconcile (for `--once` and tests).
    pub fn phases(&self) -> watch::Receiver<BTreeMap<String, Phase>> {
        self.phases.subscribe()
    }

    /// Runs until `shutdown` resolves. Labs keep running on Swarm after it returns.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let (trigger_tx, mut triggers) = mpsc::channel::<Trigger>(1024);
        let (files_tx, mut file_events) = mpsc::channel::<()>(1);
        let mut watcher = DirWatcher::new(&self.config.labs_dir, files_tx);

        // Docker events on owned objects: a service removed or scaled by hand comes back.
        let events_tx = trigger_tx.clone();
        let events = self.swarm.events();
        let events_task = tokio::spawn(async move {
            futures::pin_mut!(events);
            while let Some(item) = events.next().await {
                match item {
                    Ok(e) if e.kind == "node" => {
                        // A node went down or came back: every lab may have tasks there.
                        let _ = events_tx.send(Trigger::Resync).await;
                    }
                    Ok(e) => {
                        if let Some(lab) = e.lab {
                            let _ = events_tx.send(Trigger::Lab(lab)).await;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "docker event stream ended; periodic resync continues");
                        break;
                    }
                }
            }
        });

        let mut resync = tokio::time::interval(self.config.resync);
        let mut running: JoinSet<(String, Outcome)> = JoinSet::new();
        let _ = trigger_tx.send(Trigger::Files).await;
        self.adopt_orphans().await;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = file_events.recv() => { self.on_files().await; watcher.refresh(); }
                _ = resync.tick() => { self.on_trigger(Trigger::Resync).await; watcher.refresh(); }
                Some(t) = triggers.recv() => self.on_trigger(t).await,
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Ok((lab, outcome)) = done { self.on_done(&lab, outcome, &trigger_tx); }
                }
            }
            for lab in self.queue.take_ready() {
                let Some(target) = self.target_of(&lab) else { self.queue.done(&lab, false); continue };
                let swarm = self.swarm.clone();
                let store = self.store.clone();
                let status = self.labs.get(&lab).map(|s| s.status.clone()).unwrap_or_default();
                let span = tracing::info_span!("reconcile", lab = %lab);
                running.spawn(
                    async move {
                        let started = Instant::now();
                        let calls = swarm.api_calls();
                        let outcome = reconcile(swarm.as_ref(), &store, &lab, target, status).await;
                        store.gauge(&lab, "last_reconcile_ms", started.elapsed().as_millis());
                        // Exact when one lab reconciles at a time (as in the benchmark).
                        store.gauge(&lab, "last_reconcile_api_calls", swarm.api_calls() - calls);
                        (lab, outcome)
                    }
                    .instrument(span),
                );
            }
        }
        events_task.abort();
        // Let in-flight reconciles finish their current API calls rather than cut them mid-way.
        while running.join_next().await.is_some() {}
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
            Trigger::Lab(lab) => {
                if self.labs.contains_key(&lab) && !self.backoff.waiting(&lab) {
                    self.queue.add(&lab);
                }
            }
            Trigger::Retry(lab) => {
                if self.labs.contains_key(&lab) {
                    self.queue.add(&lab);
                }
            }
        }
    }

    /// Re-reads the whole directory and updates what each lab should be.
    async fn on_files(&mut self) {
        let dir = self.config.labs_dir.clone();
        let catalog = match tokio::task::spawn_blocking(move || load_dir(&dir)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                // Unknown state (a Git sync swapping a symlink?): change nothing.
                tracing::warn!(error = %e, "labs directory unreadable; keeping every lab as it is");
                return;
            }
            Err(_) => return,
        };
        self.apply_catalog(catalog);
    }

    fn apply_catalog(&mut self, catalog: Catalog) {
        // Labs whose file now fails to parse are kept: their file still "defines" them.
        let mut kept: BTreeSet<String> = BTreeSet::new();
        for (file, diags) in &catalog.file_errors {
            for lab in self.files.get(file).into_iter().flatten() {
                if !catalog.labs.contains_key(lab) {
                    kept.insert(lab.clone());
                    let state = self.labs.entry(lab.clone()).or_default();
                    Self::set_definition(state, lab, None, Some(diags.clone()));
                    self.queue.add(lab);
                }
            }
        }
        for (name, entry) in &catalog.labs {
            let state = self.labs.entry(name.clone()).or_default();
            let changed = match entry {
                LabEntry::Valid(v) => Self::set_definition(state, name, Some(v.clone()), None),
                LabEntry::Invalid(d) => Self::set_definition(state, name, None, Some(d.clone())),
            };
            if changed {
                self.queue.add(name);
            }
        }
        for (name, state) in self.labs.iter_mut() {
            let defined = catalog.labs.contains_key(name) || kept.contains(name);
            if state.defined && !defined {
                tracing::info!(lab = %name, "no file defines the lab any more: tearing it down");
                self.store.event(name, event("Normal", "Deleting", "no file defines the lab any more"));
                self.queue.add(name);
            }
            state.defined = defined;
        }
        // Remember file → labs, but keep the old mapping for files that failed to parse.
        let mut files = catalog.files.clone();
        for file in catalog.file_errors.keys() {
            if let Some(old) = self.files.get(file) {
                files.entry(file.clone()).or_default().extend(old.iter().cloned());
            }
        }
        self.files = files;
    }

    /// Records a lab's current definition; bumps its generation when it changed.
    fn set_definition(state: &mut LabState, name: &str, valid: Option<ValidLab>, invalid: Option<Vec<Diagnostic>>) -> bool {
        let key = match (&valid, &invalid) {
            (Some(v), _) => v.revision.clone(),
            (None, Some(d)) => d.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"),
            (None, None) => String::new(),
        };
        state.defined = true;
        if valid.is_some() {
            state.last_good = valid;
        }
        state.invalid = invalid;
        if state.definition_key == key {
            return false;
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
        if !state.defined {
            return Some(Target::Delete);
        }
        Some(Target::Apply { lab: state.last_good.clone(), invalid: state.invalid.clone() })
    }

    fn on_done(&mut self, lab: &str, outcome: Outcome, triggers: &mpsc::Sender<Trigger>) {
        self.queue.done(lab, outcome.error.is_some());
        for (kind, n) in &outcome.actions {
            self.store.count(lab, &format!("actions_{kind}"), *n as i64);
        }
        self.store.count(lab, "reconciles", 1);
        let Some(state) = self.labs.get_mut(lab) else { return };
        if outcome.drift > 0 && state.defined {
            self.store.count(lab, "drift_repairs", outcome.drift as i64);
            self.store.event(lab, event("Warning", "DriftRepaired", format!("{} services changed outside labd were restored", outcome.drift)));
        }
        if outcome.gone && !state.defined {
            self.store.delete_lab(lab);
            self.labs.remove(lab);
            self.backoff.succeeded(lab);
            self.publish_phases();
            return;
        }
        let mut status = outcome.status;
        status.observed_generation = status.generation;
        let requeue = match &outcome.error {
            Some(err) => {
                self.store.count(lab, "errors", 1);
                let (attempt, wait) = self.backoff.failed(lab);
                status.backoff = Some(crate::status::Backoff { attempt, next_try: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default() });
                self.store.event(lab, event("Warning", "ReconcileFailed", format!("{err} (attempt {attempt}, next try in {}s)", wait.as_secs())));
                Some(wait)
            }
            None => {
                self.backoff.succeeded(lab);
                status.backoff = None;
                // Settled labs wait for events or the resync; converging ones are polled.
                let settled = status.ready_since.is_some() || (status.phase == Phase::Invalid && status.revision.is_empty());
                (!settled).then_some(self.config.progress_poll)
            }
        };
        if status.phase == Phase::Ready && !state.ready_reported {
            state.ready_reported = true;
            if let Some(since) = state.generation_since {
                self.store.gauge(lab, "time_to_ready_ms", since.elapsed().as_millis());
            }
            self.store.event(lab, event("Normal", "Ready", status.message.clone()));
        }
        if state.status.phase != status.phase {
            tracing::info!(lab, phase = %status.phase, message = %status.message, "phase changed");
        }
        state.status = status;
        self.store.put_status(&state.status);
        if let Some(wait) = requeue {
            let tx = triggers.clone();
            let lab = lab.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = tx.send(Trigger::Retry(lab)).await;
            });
        }
        self.publish_phases();
    }

    fn publish_phases(&self) {
        let phases = self.labs.iter().map(|(n, s)| (n.clone(), s.status.phase)).collect();
        self.phases.send_replace(phases);
    }

    /// Picks up generation counters from the status a previous labd wrote.
    async fn restore_status(&mut self) {
        let Ok(mut reader) = StoreReader::connect(&self.config.redis_url).await else { return };
        for lab in reader.labs().await.unwrap_or_default() {
            if let Ok(Some(status)) = reader.status(&lab).await {
                self.labs.entry(lab).or_default().status = status;
            }
        }
    }

    /// Labs that own objects on Swarm but that this labd has never seen: tear them down once
    /// the directory is known to be readable (a lab file deleted while labd was stopped).
    async fn adopt_orphans(&mut self) {
        let Ok(owned) = self.swarm.owned_labs().await else { return };
        if load_dir(&self.config.labs_dir).is_err() {
            return;
        }
        for lab in owned {
            let state = self.labs.entry(lab.clone()).or_default();
            if !state.defined {
                state.defined = true; // on_files below decides; mark so removal is detected
            }
        }
        self.on_files().await;
    }
}
