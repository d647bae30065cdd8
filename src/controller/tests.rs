//! The whole controller loop (file watching, scheduler, queue, backoff, deletion rule, shared
//! observed view) on an in-memory Swarm and store: what a user sees, without Docker.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::fakes::{FakeStore, FakeSwarm};
use super::{Config, Controller};
use crate::source::git::git;
use crate::status::{EventReason, Phase};
use crate::swarm::{ContainerChange, EventSubject, Swarm, SwarmEvent};

struct Running {
    dir: tempfile::TempDir,
    swarm: Arc<FakeSwarm>,
    store: FakeStore,
    metrics: Arc<crate::metrics::Metrics>,
    phases: watch::Receiver<BTreeMap<String, Phase>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn config(dir: &Path, resync: Duration) -> Config {
    Config {
        labs_dir: dir.to_path_buf(),
        git: None,
        resync,
        progress_poll: Duration::from_millis(50),
        delete_grace: Duration::from_millis(500),
        allow_empty: false,
        prune_orphans: false,
        heartbeat: Duration::from_millis(100),
    }
}

fn lab_yaml(name: &str, services: &[&str]) -> String {
    let mut s = format!("apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: {name}}}\nspec:\n  defaults: {{image: labbox:latest}}\n  services:\n");
    for svc in services {
        s.push_str(&format!("    {svc}: {{}}\n"));
    }
    s
}

async fn start(files: &[(&str, String)], resync: Duration, swarm: FakeSwarm) -> Running {
    start_with(files, resync, swarm, FakeStore::default()).await
}

async fn start_with(files: &[(&str, String)], resync: Duration, swarm: FakeSwarm, store: FakeStore) -> Running {
    start_tuned(files, swarm, store, |c| c.resync = resync).await
}

/// Starts the controller with the test config changed by `tune`.
async fn start_tuned(files: &[(&str, String)], swarm: FakeSwarm, store: FakeStore, tune: impl FnOnce(&mut Config)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    start_in(dir, swarm, store, tune).await
}

/// Starts the controller on the labs directory `dir`, as it is.
async fn start_in(dir: tempfile::TempDir, swarm: FakeSwarm, store: FakeStore, tune: impl FnOnce(&mut Config)) -> Running {
    let swarm = Arc::new(swarm);
    let mut config = config(dir.path(), Duration::from_secs(600));
    tune(&mut config);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let controller = Controller::new(config, swarm.clone(), store.clone()).await.with_metrics(metrics.clone());
    let phases = controller.phases();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(controller.run(async move {
        let _ = stopped.await;
    }));
    Running { dir, swarm, store, metrics, phases, stop: Some(stop), task: Some(task) }
}

impl Running {
    /// Waits until `ok` holds for the phases, or fails after `within`.
    async fn until(&mut self, what: &str, within: Duration, ok: impl Fn(&BTreeMap<String, Phase>) -> bool) {
        let wait = self.phases.wait_for(|p| ok(p));
        if tokio::time::timeout(within, wait).await.is_err() {
            panic!("{what}: not within {within:?}; phases {:?}", *self.phases.borrow());
        }
    }

    async fn until_phase(&mut self, lab: &str, phase: Phase, within: Duration) {
        self.until(&format!("{lab} {phase}"), within, |p| p.get(lab) == Some(&phase)).await;
    }

    /// The messages of the ReconcileFailed events so far.
    fn failures(&self) -> Vec<String> {
        self.store.events.lock().unwrap().iter().filter(|(_, e)| e.reason == EventReason::ReconcileFailed).map(|(_, e)| e.message.clone()).collect()
    }

    fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self.swarm.state.lock().unwrap().services.iter().map(|s| s.name.clone()).collect();
        names.sort();
        names
    }

    async fn stop(self) {
        self.stopped().await;
    }

    /// Stops the controller; what it ran on stays (the directory, the Swarm, the store).
    async fn stopped(mut self) -> Running {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self
    }
}

async fn eventually(what: &str, within: Duration, ok: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

const SOON: Duration = Duration::from_secs(5);

/// The Swarm a stopped labd leaves, for the next one (its own call and event counters).
fn handed_over(swarm: &FakeSwarm) -> FakeSwarm {
    let next = FakeSwarm::default();
    *next.state.lock().unwrap() = std::mem::take(&mut *swarm.state.lock().unwrap());
    next
}

/// Docker API calls of labd over `resyncs` resync periods once `labs` labs are Ready.
async fn calls_over_resyncs(labs: usize, resyncs: u32) -> u64 {
    let period = Duration::from_millis(200);
    let files: Vec<(String, String)> = (0..labs).map(|i| (format!("l{i}.yaml"), lab_yaml(&format!("l{i}"), &["web"]))).collect();
    let files: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let mut c = start(&files, period, FakeSwarm::default()).await;
    c.until("every lab Ready", Duration::from_secs(20), |p| p.len() == labs && p.values().all(|ph| *ph == Phase::Ready)).await;
    tokio::time::sleep(period).await;
    let before = c.swarm.api_calls();
    tokio::time::sleep(period * resyncs).await;
    let calls = c.swarm.api_calls() - before;
    c.stop().await;
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_resync_costs_the_same_for_one_lab_and_a_hundred() {
    let one = calls_over_resyncs(1, 5).await;
    let hundred = calls_over_resyncs(100, 5).await;
    eprintln!("observations over 5 resyncs: 1 lab {one}, 100 labs {hundred}");
    assert!((4..=7).contains(&one), "one observation per resync, got {one} over 5");
    assert!(hundred <= one + 1, "100 labs cost {hundred} observations where 1 lab costs {one}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_in_place_keeps_the_lab_and_a_removed_file_goes_after_the_grace() {
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web", "db"]))], Duration::from_secs(60), FakeSwarm::default()).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    assert_eq!(c.services(), ["a_db", "a_web"]);
    let path = c.dir.path().join("a.yaml");
    std::fs::write(&path, "").unwrap();
    c.until_phase("a", Phase::Invalid, SOON).await;
    assert_eq!(c.services(), ["a_db", "a_web"], "an empty file removed services");
    // Written whole again: Ready, nothing was restarted in between.
    std::fs::write(&path, lab_yaml("a", &["web", "db"])).unwrap();
    c.until_phase("a", Phase::Ready, SOON).await;
    // Taken before the removal: labd cannot see it sooner, however late this thread resumes.
    let removed = Instant::now();
    std::fs::remove_file(&path).unwrap();
    let took = eventually("teardown", SOON, || c.services().is_empty()).await;
    assert!(removed.elapsed() >= Duration::from_millis(500), "torn down after {took:?}, before the grace");
    c.until("the lab forgotten", SOON, |p| !p.contains_key("a")).await;
    let reasons: Vec<EventReason> = c.store.events.lock().unwrap().iter().map(|(_, e)| e.reason).collect();
    assert!(reasons.contains(&EventReason::FileGone) && reasons.contains(&EventReason::Deleting), "{reasons:?}");
    assert!(c.store.statuses.lock().unwrap().get("a").is_none(), "status left behind");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_removed_while_labd_was_down_is_repaired_and_counted_as_drift() {
    // The last labd saw a_web running; Swarm no longer has it when the next labd starts.
    let store = FakeStore::default();
    let mut last = crate::status::LabStatus { name: "a".into(), phase: Phase::Ready, ..Default::default() };
    last.services.insert("web".into(), crate::status::ServiceStatus { desired: 1, running: 1, ..Default::default() });
    store.statuses.lock().unwrap().insert("a".into(), last);
    let mut c = start_with(&[("a.yaml", lab_yaml("a", &["web", "db"]))], Duration::from_secs(600), FakeSwarm::default(), store).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    assert_eq!(c.services(), ["a_db", "a_web"]);
    eventually("one repair: web, not db (new in the file)", SOON, || c.store.metric("a", "drift_repairs") == 1).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_removed_by_hand_comes_back_on_its_event_and_without_one_at_the_resync() {
    // Events on, resync far away: the event repairs.
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web"]))], Duration::from_secs(600), FakeSwarm::default()).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    c.swarm.state.lock().unwrap().services.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.services().is_empty(), "repaired with no event and no resync: the view is not shared, or polls");
    let event = SwarmEvent { subject: EventSubject::Service, name: "a_web".into(), lab: Some("a".into()) };
    c.swarm.events.send(event).unwrap();
    eventually("repair on the event", Duration::from_secs(2), || c.services() == ["a_web"]).await;
    eventually("drift counted", SOON, || c.store.metric("a", "drift_repairs") == 1).await;
    c.stop().await;

    // Events lost: the resync repairs.
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web"]))], Duration::from_millis(500), FakeSwarm::default()).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    c.swarm.state.lock().unwrap().services.clear();
    eventually("repair at the resync", Duration::from_secs(2), || c.services() == ["a_web"]).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_of_events_does_not_postpone_the_look() {
    // Tasks starting one after another for seconds (50 tasks on two cores): the first of their
    // events must bring a look soon, not the end of the stream.
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web"]))], Duration::from_secs(600), FakeSwarm::default()).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    // The service removed by hand, its event first, then other tasks' containers starting.
    c.swarm.state.lock().unwrap().services.clear();
    let swarm = c.swarm.clone();
    let stream = tokio::spawn(async move {
        let _ = swarm.events.send(SwarmEvent { subject: EventSubject::Service, name: "a_web".into(), lab: Some("a".into()) });
        for _ in 0..100 {
            let event = SwarmEvent { subject: EventSubject::Container(ContainerChange::Started), name: "a_other.1".into(), lab: Some("a".into()) };
            let _ = swarm.events.send(event);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let took = eventually("a look while the events go on", Duration::from_secs(1), || c.services() == ["a_web"]).await;
    assert!(!stream.is_finished(), "looked only once the events stopped ({took:?})");
    stream.abort();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_its_events_keep_looking_at_is_not_polled_besides() {
    // 50 tasks starting on two cores: a container starts every few hundred ms and each start
    // brings a look; a progress poll on top of those looks only takes dockerd's CPU from the
    // containers starting. The poll is for what sends no event here (tasks on other nodes).
    let swarm = FakeSwarm::default();
    // Tasks run only as the test starts them, one per container start event.
    swarm.state.lock().unwrap().start_after = u32::MAX;
    let poll = Duration::from_millis(150);
    let text = lab_yaml("a", &["web"]).replace("web: {}", "web: {replicas: 100}");
    let mut c = start_tuned(&[("a.yaml", text)], swarm, FakeStore::default(), |c| c.progress_poll = poll).await;
    c.until_phase("a", Phase::Progressing, SOON).await;
    let looks = |c: &Running| c.swarm.api_calls();
    // No events: the poll looks.
    let before = looks(&c);
    tokio::time::sleep(poll * 10).await;
    let polled = looks(&c) - before;
    assert!((4..=11).contains(&polled), "{polled} looks in 10 poll periods without events");
    // Events every 25 ms: a look 80 ms after the first of each burst, and no poll besides.
    let before = looks(&c);
    let span = Duration::from_millis(1500);
    let started = Instant::now();
    while started.elapsed() < span {
        c.swarm.state.lock().unwrap().services[0].running += 1;
        let event = SwarmEvent { subject: EventSubject::Container(ContainerChange::Started), name: "a_web.1".into(), lab: Some("a".into()) };
        c.swarm.events.send(event).unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let with_events = looks(&c) - before;
    // One per event look, and a poll due at either end of the window (polled each 150 ms
    // besides, it would be ~10 more).
    let at_most = (span.as_millis() / 80) as u64 + 2;
    eprintln!("looks: {polled} polled, {with_events} with events");
    assert!((5..=at_most).contains(&with_events), "{with_events} looks in {span:?} of events, at most {at_most} expected");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_start_that_swarm_counts_late_brings_a_second_look_not_the_poll() {
    // The last task's container started, but Swarm counts the task running only after the
    // look its event brought: Ready must not wait for the poll (5 s here).
    let swarm = FakeSwarm::default();
    // Tasks run only as the test starts them.
    swarm.state.lock().unwrap().start_after = u32::MAX;
    let mut c = start_tuned(&[("a.yaml", lab_yaml("a", &["web"]))], swarm, FakeStore::default(), |c| c.progress_poll = Duration::from_secs(5)).await;
    c.until_phase("a", Phase::Progressing, SOON).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let looks = c.swarm.api_calls();
    let event = SwarmEvent { subject: EventSubject::Container(ContainerChange::Started), name: "a_web.1".into(), lab: Some("a".into()) };
    c.swarm.events.send(event).unwrap();
    eventually("the event's look", SOON, || c.swarm.api_calls() > looks).await;
    c.swarm.state.lock().unwrap().services[0].running = 1;
    c.until_phase("a", Phase::Ready, Duration::from_secs(2)).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_counted_start_does_not_hide_the_next_one_from_the_second_look() {
    // Seen in a DockerCoins deploy: the look after one container's start found Swarm counting
    // an earlier task only then, and not yet the new one; the counts matched, so Ready waited
    // for the poll (250 ms later). Starts seen so far and still not counted bring looks.
    let swarm = FakeSwarm::default();
    // Tasks run only as the test starts them.
    swarm.state.lock().unwrap().start_after = u32::MAX;
    let text = lab_yaml("a", &["web"]).replace("web: {}", "web: {replicas: 2}");
    let mut c = start_tuned(&[("a.yaml", text)], swarm, FakeStore::default(), |c| c.progress_poll = Duration::from_secs(5)).await;
    c.until_phase("a", Phase::Progressing, SOON).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = |task: &str| SwarmEvent { subject: EventSubject::Container(ContainerChange::Started), name: format!("a_web.{task}"), lab: Some("a".into()) };
    // The first task's container starts; the look it brings finds it not counted yet.
    let looks = c.swarm.api_calls();
    c.swarm.events.send(started("1")).unwrap();
    eventually("the first start's look", SOON, || c.swarm.api_calls() > looks).await;
    // The second starts; Swarm now counts the first, not the second, at the next look.
    let looks = c.swarm.api_calls();
    c.swarm.events.send(started("2")).unwrap();
    c.swarm.state.lock().unwrap().services[0].running = 1;
    eventually("the next look", SOON, || c.swarm.api_calls() > looks).await;
    // Every task has started, so no start will bring a look: labd looks again by itself, and
    // once more when Swarm is still slow.
    let looks = c.swarm.api_calls();
    eventually("a look with no event", Duration::from_secs(1), || c.swarm.api_calls() > looks).await;
    // Then the second is counted too: a look must come soon, not at the poll 5 s on.
    c.swarm.state.lock().unwrap().services[0].running = 2;
    c.until_phase("a", Phase::Ready, Duration::from_secs(1)).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_wait_out_a_growing_backoff_then_the_lab_converges() {
    let swarm = FakeSwarm::default();
    // Two calls fail per pass (the lab's default network, then its service): two failed passes.
    swarm.state.lock().unwrap().fail_next = 4;
    let started = Instant::now();
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web"]))], Duration::from_secs(600), swarm).await;
    c.until_phase("a", Phase::Failed, SOON).await;
    c.until_phase("a", Phase::Ready, Duration::from_secs(10)).await;
    let took = started.elapsed();
    // 1 s after the first failure, 2 s after the second: never sooner (no retry storm).
    assert!(took >= Duration::from_secs(3), "converged after {took:?}, sooner than the backoff allows");
    let failures = c.failures();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures[0].contains("attempt 1, next try in 1s") && failures[1].contains("attempt 2, next try in 2s"), "{failures:?}");
    assert!(c.store.statuses.lock().unwrap()["a"].backoff.is_none(), "backoff kept after success");
    c.stop().await;
}

/// Docker lists a removed network (a node's copy) until the tasks that were on it have
/// stopped, and neither its name nor its services can be created meanwhile: a subnet change
/// waits for it to go, without failing on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_change_waits_for_the_old_network_to_go_and_never_fails() {
    let text = |subnet: &str| format!("apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: n}}\nspec:\n  defaults: {{image: labbox:latest, networks: [lan]}}\n  networks: {{lan: {{subnet: {subnet}}}}}\n  services: {{web: {{}}}}\n");
    let swarm = FakeSwarm::default();
    swarm.state.lock().unwrap().linger_removed_networks = 10;
    let mut c = start(&[("n.yaml", text("10.1.0.0/24"))], Duration::from_secs(600), swarm).await;
    c.until_phase("n", Phase::Ready, SOON).await;
    std::fs::write(c.dir.path().join("n.yaml"), text("10.2.0.0/24")).unwrap();
    let says = || {
        let status = c.store.statuses.lock().unwrap()["n"].clone();
        let web = status.services.get("web").map(|s| s.message.clone()).unwrap_or_default();
        status.message == "waiting for network n_lan, web 0/1" && web.starts_with("waiting for network n_lan to be created again")
    };
    eventually("the lab says what it waits for", SOON, says).await;
    let on_new = || {
        let s = c.swarm.state.lock().unwrap();
        s.networks.iter().any(|n| n.subnet.as_deref() == Some("10.2.0.0/24")) && s.services.iter().any(|x| x.name == "n_web")
    };
    eventually("the network and its service created again", SOON, on_new).await;
    c.until_phase("n", Phase::Ready, SOON).await;
    let failures = c.failures();
    assert!(failures.is_empty(), "the change failed on the way: {failures:?}");
    c.stop().await;
}

/// A lab that waits for the same tasks longer than its `progressDeadline` is Degraded, once
/// (one event, a labd restart included), and Ready as soon as they run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_s_report_brings_the_look_that_makes_a_shaped_lab_ready_not_the_poll() {
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: a}\nspec:\n  defaults: {image: labbox:latest}\n  networks: {lan: {conditions: {delay: 20ms}}}\n  services:\n    web: {networks: [lan]}\n";
    let store = FakeStore::default();
    *store.reports.lock().unwrap() = Some(vec![]);
    // A poll far away: only the notice can bring the look in time.
    let mut c = start_tuned(&[("a.yaml", text.to_string())], FakeSwarm::default(), store, |c| c.progress_poll = Duration::from_secs(30)).await;
    let statuses = c.store.clone();
    eventually("waiting for shaping", SOON, || statuses.statuses.lock().unwrap().get("a").is_some_and(|s| s.message.contains("shaping (0/1 tasks shaped)"))).await;
    let want: crate::spec::EffectiveConditions = serde_json::from_value(serde_json::json!({"delay": "20ms"})).unwrap();
    let attachment = crate::status::AttachmentShaping { network: "lan".into(), desired: want.clone(), applied: want, ..Default::default() };
    let report = crate::status::TaskShaping { container: "c1".into(), service: "web".into(), node: "n1".into(), updated_at: Some(chrono::Utc::now()), attachments: vec![attachment], ..Default::default() };
    *c.store.reports.lock().unwrap() = Some(vec![report]);
    let told = Instant::now();
    let _ = c.store.notices.send(crate::store::Notice::Reports(vec!["a".into(), "unknown".into()]));
    c.until_phase("a", Phase::Ready, Duration::from_secs(2)).await;
    assert!(told.elapsed() < Duration::from_millis(500), "Ready {:?} after the report", told.elapsed());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_clash_is_said_once_looked_at_less_and_less_and_cleared_by_its_removal_event() {
    let swarm = FakeSwarm::default();
    let foreign = crate::plan::ObservedService { id: "foreign".into(), name: "a_web".into(), version: 7, replicas: Some(1), desired: 1, running: 1, ..Default::default() };
    swarm.state.lock().unwrap().services.push(foreign);
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web"]))], Duration::from_secs(600), swarm).await;
    c.until_phase("a", Phase::Failed, SOON).await;
    // Was: looked at at every poll (4 a second with labd's) for as long as the clash lasted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let passes = c.store.metric("a", "reconciles");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = c.store.metric("a", "reconciles") - passes;
    // An eighth of the time stuck (125-375 ms) apart: 5-16 looks; at the poll, 40.
    assert!(later <= 16, "{later} looks in 2 s at a lab Failed for 1-3 s (the poll is 50 ms)");
    assert_eq!(c.failures().len(), 1, "said once: {:?}", c.failures());
    assert!(c.failures()[0].contains("service a_web already exists and is not managed by swarmlab"), "{:?}", c.failures());
    assert_eq!(c.swarm.service("a_web").map(|s| s.version), Some(7), "never touched");
    // The user removes it: its event brings the look, not the next poll.
    c.swarm.state.lock().unwrap().services.clear();
    c.swarm.events.send(SwarmEvent { subject: EventSubject::Service, name: "a_web".into(), lab: Some("a".into()) }).unwrap();
    let took = eventually("created on the removal's event", Duration::from_secs(2), || c.swarm.service("a_web").is_some_and(|s| s.id != "foreign")).await;
    assert!(took < Duration::from_millis(300), "{took:?}");
    c.until_phase("a", Phase::Ready, SOON).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_stuck_past_its_progress_deadline_is_degraded_until_its_tasks_run() {
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: p}\nspec:\n  progressDeadline: 1s\n  defaults: {image: labbox:latest}\n  services: {web: {}}\n";
    let swarm = FakeSwarm::default();
    swarm.state.lock().unwrap().start_after = u32::MAX;
    let mut c = start(&[("p.yaml", text.to_string())], Duration::from_secs(600), swarm).await;
    c.until_phase("p", Phase::Progressing, SOON).await;
    c.until_phase("p", Phase::Degraded, SOON).await;
    let message = c.store.statuses.lock().unwrap()["p"].message.clone();
    assert!(message.starts_with("no progress for 1s (progressDeadline 1s): waiting for web 0/1"), "{message}");
    // Still stuck over more passes: one event, not one per pass.
    let passes = c.store.metric("p", "reconciles");
    eventually("more passes", SOON, || c.store.metric("p", "reconciles") > passes + 3).await;
    let exceeded = |store: &FakeStore| store.events.lock().unwrap().iter().filter(|(_, e)| e.reason == EventReason::ProgressDeadlineExceeded).count();
    assert_eq!(exceeded(&c.store), 1);
    // labd restarted: the clock and the verdict are read back with the status, no second event.
    let since = c.store.statuses.lock().unwrap()["p"].waiting.as_ref().map(|w| w.since);
    let (swarm, store) = (c.swarm.clone(), c.store.clone());
    c.stop().await;
    let mut c = start_with(&[("p.yaml", text.to_string())], Duration::from_secs(600), handed_over(&swarm), store).await;
    let passes = c.store.metric("p", "reconciles");
    eventually("passes of the restarted labd", SOON, || c.store.metric("p", "reconciles") > passes + 3).await;
    c.until_phase("p", Phase::Degraded, SOON).await;
    assert_eq!(c.store.statuses.lock().unwrap()["p"].waiting.as_ref().map(|w| w.since), since, "the clock started again");
    assert_eq!(exceeded(&c.store), 1);
    {
        let mut s = c.swarm.state.lock().unwrap();
        s.start_after = 0;
        s.start_now();
    }
    c.until_phase("p", Phase::Ready, SOON).await;
    assert!(c.store.statuses.lock().unwrap()["p"].waiting.is_none());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_tasks_begin_to_fail_is_said_once_and_again_only_after_they_ran() {
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: f}\nspec:\n  defaults: {image: labbox:latest}\n  services: {web: {}, db: {}}\n";
    let swarm = FakeSwarm::default();
    let image_missing = crate::plan::TaskTrouble { state: "rejected".into(), message: "No such image: nope:latest".into(), node: "n1".into(), failed: true, cause: Some(crate::plan::TroubleCause::ImageMissing) };
    {
        let mut s = swarm.state.lock().unwrap();
        s.start_after = u32::MAX;
        s.trouble = Some(image_missing);
    }
    let mut c = start(&[("f.yaml", text.to_string())], Duration::from_secs(600), swarm).await;
    c.until_phase("f", Phase::Degraded, SOON).await;
    let failing = |store: &FakeStore| store.events.lock().unwrap().iter().filter(|(_, e)| e.reason == EventReason::TasksFailing).map(|(_, e)| e.message.clone()).collect::<Vec<_>>();
    let passes = c.store.metric("f", "reconciles");
    eventually("more passes", SOON, || c.store.metric("f", "reconciles") > passes + 3).await;
    let said = failing(&c.store);
    assert_eq!(said.len(), 2, "once per service, not per pass: {said:?}");
    assert!(said.iter().any(|m| m.starts_with("db: rejected: No such image: nope:latest (labd never pulls")), "{said:?}");
    {
        let mut s = c.swarm.state.lock().unwrap();
        s.start_after = 0;
        s.start_now();
        s.trouble = None;
    }
    c.until_phase("f", Phase::Ready, SOON).await;
    {
        let mut s = c.swarm.state.lock().unwrap();
        s.trouble = Some(crate::plan::TaskTrouble { state: "failed".into(), message: "task: non-zero exit (3)".into(), node: "n1".into(), failed: true, cause: None });
        s.start_after = u32::MAX;
        s.crash_all();
    }
    let _ = c.swarm.events.send(SwarmEvent { subject: EventSubject::Container(ContainerChange::Died), name: "f_web.1.x".into(), lab: Some("f".into()) });
    c.until_phase("f", Phase::Degraded, SOON).await;
    eventually("said again, after they ran", SOON, || failing(&c.store).len() == 4).await;
    c.stop().await;
}

/// A network dropped from a lab stays in use until the rolling update has moved its tasks off
/// it: removed once Swarm lets it go, and the lab never fails (nor backs off) meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_dropped_from_a_lab_is_removed_once_its_tasks_have_moved_off_and_nothing_fails() {
    let text = |networks: &[&str]| {
        let declared: Vec<String> = networks.iter().map(|n| format!("{n}: {{}}")).collect();
        format!("apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: d}}\nspec:\n  defaults: {{image: labbox:latest}}\n  networks: {{{}}}\n  services: {{web: {{networks: [{}]}}}}\n", declared.join(", "), networks.join(", "))
    };
    let mut c = start(&[("d.yaml", text(&["lan", "old"]))], Duration::from_secs(600), FakeSwarm::default()).await;
    c.until_phase("d", Phase::Ready, SOON).await;
    c.swarm.state.lock().unwrap().network_in_use = 5;
    std::fs::write(c.dir.path().join("d.yaml"), text(&["lan"])).unwrap();
    let says = || c.store.statuses.lock().unwrap()["d"].message.contains("network d_old's tasks to stop before it is removed");
    eventually("the lab says what it waits for", SOON, says).await;
    eventually("the network removed", SOON, || c.swarm.state.lock().unwrap().networks.iter().all(|n| n.name != "d_old")).await;
    c.until_phase("d", Phase::Ready, SOON).await;
    let failures = c.failures();
    assert!(failures.is_empty(), "the change failed on the way: {failures:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_lab_is_watched_but_never_changed_until_resumed() {
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web"]))], Duration::from_millis(300), FakeSwarm::default()).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    c.store.labctl_suspend("a", true);
    c.until_phase("a", Phase::Suspended, SOON).await;
    c.swarm.state.lock().unwrap().services.clear();
    std::fs::write(c.dir.path().join("a.yaml"), lab_yaml("a", &["web", "db"])).unwrap();
    // Several resyncs and a file change later: nothing recreated, nothing created.
    let calls = c.swarm.api_calls();
    eventually("three resyncs", SOON, || c.swarm.api_calls() >= calls + 3).await;
    assert!(c.services().is_empty(), "a suspended lab was changed: {:?}", c.services());
    let status = c.store.statuses.lock().unwrap()["a"].clone();
    assert!(status.message.contains("labctl suspend") && status.message.contains("2 changes wait"), "{}", status.message);
    c.store.labctl_suspend("a", false);
    eventually("resumed: drift repaired and the edit applied", SOON, || c.services() == ["a_db", "a_web"]).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    // The same from the spec.
    std::fs::write(c.dir.path().join("a.yaml"), format!("{}  suspend: true\n", lab_yaml("a", &["web"]))).unwrap();
    c.until_phase("a", Phase::Suspended, SOON).await;
    assert_eq!(c.services(), ["a_db", "a_web"], "suspend: true removed what the same edit dropped");
    c.stop().await;
}

/// A labd stopped over lab `a` (web, db) suspended with `labctl suspend`, and what it leaves:
/// the Swarm, with `a_db` removed by hand after the stop (drift, but the lab is suspended), and
/// the store.
async fn suspended_and_stopped() -> (FakeSwarm, FakeStore) {
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web", "db"]))], Duration::from_secs(600), FakeSwarm::default()).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    c.store.labctl_suspend("a", true);
    c.until_phase("a", Phase::Suspended, SOON).await;
    eventually("remembered on Swarm", SOON, || c.swarm.state.lock().unwrap().memories.get("a").is_some_and(|m| m.suspended)).await;
    let (swarm, store) = (c.swarm.clone(), c.store.clone());
    c.stop().await;
    let next = handed_over(&swarm);
    next.state.lock().unwrap().services.retain(|s| s.name != "a_db");
    (next, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_suspended_while_labd_was_down_is_not_changed_by_the_first_pass_of_the_restarted_labd() {
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web", "db"]))], Duration::from_secs(600), FakeSwarm::default()).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    let (swarm, store) = (c.swarm.clone(), c.store.clone());
    c.stop().await;
    // Suspended while labd is down (its memory on Swarm does not know), then changed by hand.
    store.labctl_suspend("a", true);
    let next = handed_over(&swarm);
    next.state.lock().unwrap().services.retain(|s| s.name != "a_db");
    let mut c = start_with(&[("a.yaml", lab_yaml("a", &["web", "db"]))], Duration::from_secs(600), next, store).await;
    c.until_phase("a", Phase::Suspended, SOON).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.services(), ["a_web"], "the restarted labd changed a suspended lab");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_restarts_empty_neither_resumes_a_suspended_lab_nor_restarts_a_running_schedule() {
    let scheduled = format!(
        "{}  schedule:\n    steps:\n    - at: 0s\n      service: web\n      restore: true\n    - at: 1h\n      service: web\n      restore: true\n",
        lab_yaml("a", &["web"])
    );
    // Steps with nothing to shape: the fake agents report nothing, and the lab must get Ready.
    let files = [("a.yaml", scheduled), ("b.yaml", lab_yaml("b", &["web", "db"]))];
    let mut c = start(&files, Duration::from_secs(600), FakeSwarm::default()).await;
    c.until("both Ready", SOON, |p| p.get("a") == Some(&Phase::Ready) && p.get("b") == Some(&Phase::Ready)).await;
    let clock = |store: &FakeStore| store.statuses.lock().unwrap().get("a").and_then(|s| s.schedule.clone());
    eventually("a's schedule at step 1", SOON, || clock(&c.store).is_some_and(|s| s.step == 1)).await;
    let t0 = clock(&c.store).and_then(|s| s.started_at).unwrap();
    c.store.labctl_suspend("b", true);
    c.until_phase("b", Phase::Suspended, SOON).await;
    let memory = |swarm: &FakeSwarm, lab: &str| swarm.state.lock().unwrap().memories.get(lab).cloned();
    eventually("both remembered on Swarm", SOON, || memory(&c.swarm, "b").is_some_and(|m| m.suspended) && memory(&c.swarm, "a").is_some_and(|m| m.clock.is_some_and(|k| k.started_at == t0))).await;
    let swarm = c.swarm.clone();
    c.stop().await;

    // Redis restarted empty and labd with it; b's db removed by hand meanwhile.
    swarm.state.lock().unwrap().services.retain(|s| s.name != "b_db");
    let files = [("a.yaml", files[0].1.clone()), ("b.yaml", files[1].1.clone())];
    let mut c = start(&files, Duration::from_secs(600), handed_over(&swarm)).await;
    c.until_phase("b", Phase::Suspended, SOON).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    eventually("a's clock resumed", SOON, || clock(&c.store).is_some_and(|s| s.step == 1)).await;
    assert_eq!(clock(&c.store).and_then(|s| s.started_at), Some(t0), "the schedule started again instead of resuming");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!c.services().contains(&"b_db".to_string()), "the suspended lab was changed: {:?}", c.services());

    // `labctl resume` on the new Redis resumes it, and the memory says so.
    c.store.labctl_suspend("b", false);
    eventually("resumed: drift repaired", SOON, || c.services().contains(&"b_db".to_string())).await;
    eventually("the memory follows", SOON, || memory(&c.swarm, "b").is_some_and(|m| !m.suspended)).await;

    // `docker stack rm` while the file stays: the services come back, and so does the memory.
    eventually("a's memory", SOON, || memory(&c.swarm, "a").is_some()).await;
    {
        let mut s = c.swarm.state.lock().unwrap();
        s.services.retain(|s| !s.name.starts_with("a_"));
        s.memories.remove("a");
    }
    let _ = c.swarm.events.send(SwarmEvent { subject: EventSubject::Service, name: "a_web".into(), lab: Some("a".into()) });
    eventually("the stack removed by hand restored with its memory", SOON, || c.services().contains(&"a_web".to_string()) && memory(&c.swarm, "a").is_some_and(|m| m.clock.is_some_and(|k| k.started_at == t0))).await;

    // `docker config rm` of the memory alone (nothing else drifts): written again at once.
    c.swarm.state.lock().unwrap().memories.remove("a");
    let _ = c.swarm.events.send(SwarmEvent { subject: EventSubject::MemoryRemoved, name: "a_swarmlab-memory".into(), lab: Some("a".into()) });
    eventually("the memory removed by hand written again", SOON, || memory(&c.swarm, "a").is_some_and(|m| m.clock.is_some_and(|k| k.started_at == t0))).await;

    // The memory goes with the lab.
    std::fs::remove_file(c.dir.path().join("a.yaml")).unwrap();
    eventually("a torn down with its memory", SOON, || memory(&c.swarm, "a").is_none() && !c.services().contains(&"a_web".to_string())).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lab_is_reconciled_until_the_memories_on_swarm_can_be_read() {
    // A host reboot: Redis comes back empty, and the manager has no leader for a few reads.
    let (swarm, _) = suspended_and_stopped().await;
    swarm.state.lock().unwrap().memories_unreadable = 3;
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web", "db"]))], Duration::from_secs(600), swarm).await;
    let told = || c.store.statuses.lock().unwrap().get("a").is_some_and(|s| s.message.contains("waiting to read what labd remembers") && s.message.contains("does not have a leader"));
    eventually("the wait told in a's status", SOON, told).await;
    c.until_phase("a", Phase::Suspended, SOON).await;
    assert_eq!(c.swarm.state.lock().unwrap().memories_unreadable, 0, "reconciled before the memories were read");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.services(), ["a_web"], "the suspended lab was changed");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_schedule_starts_with_labctl_start() {
    let text = format!(
        "{}  schedule:\n    start: manual\n    steps:\n    - at: 0s\n      service: web\n      conditions: {{delay: 5ms}}\n",
        lab_yaml("a", &["web"])
    );
    let mut c = start(&[("a.yaml", text)], Duration::from_secs(600), FakeSwarm::default()).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    let clock = || c.store.statuses.lock().unwrap().get("a").and_then(|s| s.schedule.clone());
    assert!(clock().is_some_and(|s| s.started_at.is_none() && s.in_force.contains("labctl start")), "{:?}", clock());
    let pressed = chrono::Utc::now();
    c.store.starts.lock().unwrap().insert("a".into(), pressed);
    eventually("the schedule started", SOON, || clock().is_some_and(|s| s.started_at == Some(pressed) && s.step == 1)).await;
    assert!(c.store.shaping.lock().unwrap()["a"].as_deref().is_some_and(|j| j.contains("5ms")));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_ending_with_stop_stops_every_task_keeps_the_services_and_stays_stopped_over_a_restart() {
    let schedule = |period: &str| {
        format!(
            "{}  schedule:\n    period: {period}\n    end: stop\n    steps:\n    - at: 0s\n      service: web\n      restore: true\n",
            lab_yaml("a", &["web", "db"])
        )
    };
    // A step with nothing to shape (the fake agents report nothing): Ready holds until the
    // stop, so the phases watch cannot miss it.
    let text = schedule("1s");
    let mut c = start(&[("a.yaml", text.clone())], Duration::from_secs(600), FakeSwarm::default()).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    c.until_phase("a", Phase::Completed, SOON).await;
    assert_eq!(c.services(), ["a_db", "a_web"], "a stop removes nothing");
    let wanted = |c: &Running| c.swarm.state.lock().unwrap().services.iter().map(|s| (s.name.clone(), s.replicas, s.version)).collect::<Vec<_>>();
    let stopped = wanted(&c);
    assert!(stopped.iter().all(|(_, replicas, _)| *replicas == Some(0)), "{stopped:?}");
    let finished = c.store.events.lock().unwrap().iter().any(|(lab, e)| lab == "a" && e.reason == EventReason::ScheduleFinished && e.message.contains("stopping every task"));
    assert!(finished, "no ScheduleFinished event saying the tasks stop");
    assert_eq!(c.store.metric("a", "drift_repairs"), 0, "stopping is no drift");
    let (swarm, store) = (c.swarm.clone(), c.store.clone());
    c.stop().await;

    // A new labd on the same Swarm and status: the lab stays stopped, never started in between.
    let mut c = start_with(&[("a.yaml", text)], Duration::from_millis(100), handed_over(&swarm), store).await;
    c.until_phase("a", Phase::Completed, SOON).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(wanted(&c), stopped, "the restarted labd changed the stopped services");
    assert_eq!(c.store.statuses.lock().unwrap()["a"].phase, Phase::Completed);

    // A new labd on the same Swarm with the status lost (Redis emptied): the clock is found on
    // the stopped services, and the lab stays stopped.
    let (swarm, text) = (c.swarm.clone(), schedule("1s"));
    c.stop().await;
    let mut c = start_with(&[("a.yaml", text)], Duration::from_millis(100), handed_over(&swarm), FakeStore::default()).await;
    c.until_phase("a", Phase::Completed, SOON).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(wanted(&c), stopped, "the labd without a status started the stopped lab");
    let restarted = c.store.events.lock().unwrap().iter().any(|(_, e)| e.reason == EventReason::ScheduleFinished);
    assert!(!restarted, "the schedule's end was told again");

    // Suspended while stopped: nothing waits for the resume, which keeps it stopped.
    c.store.labctl_suspend("a", true);
    c.until_phase("a", Phase::Suspended, SOON).await;
    let message = c.store.statuses.lock().unwrap()["a"].message.clone();
    assert!(message.ends_with("nothing is waiting"), "{message}");
    c.store.labctl_suspend("a", false);
    c.until_phase("a", Phase::Completed, SOON).await;
    assert_eq!(wanted(&c), stopped, "the resume changed the stopped services");

    // An edited schedule runs the lab again.
    std::fs::write(c.dir.path().join("a.yaml"), schedule("1h")).unwrap();
    c.until_phase("a", Phase::Ready, SOON).await;
    assert!(wanted(&c).iter().all(|(_, replicas, _)| *replicas == Some(1)), "{:?}", wanted(&c));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labctl_start_is_read_when_labctl_says_so_not_at_the_next_heartbeat() {
    let text = format!("{}  schedule:\n    start: manual\n    steps:\n    - at: 0s\n      service: web\n      restore: true\n", lab_yaml("a", &["web"]));
    let mut c = start_tuned(&[("a.yaml", text)], FakeSwarm::default(), FakeStore::default(), |c| c.heartbeat = Duration::from_secs(3600)).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    let started = || c.store.statuses.lock().unwrap().get("a").and_then(|s| s.schedule.as_ref()?.started_at);
    assert_eq!(started(), None);
    let at = chrono::Utc::now();
    c.store.starts.lock().unwrap().insert("a".into(), at);
    let _ = c.store.notices.send(crate::store::Notice::Flags);
    eventually("the start read", SOON, || started() == Some(at)).await;
    // Suspended the same way.
    c.store.labctl_suspend("a", true);
    let _ = c.store.notices.send(crate::store::Notice::Flags);
    c.until_phase("a", Phase::Suspended, SOON).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_schedule_that_stopped_the_lab_runs_it_again_at_the_next_labctl_start() {
    // A step with nothing to shape: the fake agents report nothing, and the lab must get Ready.
    let text = format!(
        "{}  schedule:\n    start: manual\n    period: 1s\n    end: stop\n    steps:\n    - at: 0s\n      service: web\n      restore: true\n",
        lab_yaml("a", &["web"])
    );
    let mut c = start(&[("a.yaml", text)], Duration::from_secs(600), FakeSwarm::default()).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    c.store.starts.lock().unwrap().insert("a".into(), chrono::Utc::now());
    c.until_phase("a", Phase::Completed, SOON).await;
    assert_eq!(c.swarm.service("a_web").and_then(|s| s.replicas), Some(0));
    c.store.starts.lock().unwrap().insert("a".into(), chrono::Utc::now());
    c.until_phase("a", Phase::Ready, SOON).await;
    assert_eq!(c.swarm.service("a_web").and_then(|s| s.replicas), Some(1), "running again");
    c.until_phase("a", Phase::Completed, SOON).await;
    let stopped = c.swarm.service("a_web").map(|s| (s.replicas, s.version));

    // Redis emptied (statuses and starts gone) under a running labd, then a new labd on it:
    // the lab stays stopped, not back up waiting for a start.
    c.store.starts.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(300)).await; // flags are read every 100 ms
    let passes = c.store.metric("a", "reconciles");
    let _ = c.swarm.events.send(SwarmEvent { subject: EventSubject::Service, name: "a_web".into(), lab: Some("a".into()) });
    eventually("a pass after the starts were lost", SOON, || c.store.metric("a", "reconciles") > passes).await;
    assert_eq!(c.swarm.service("a_web").map(|s| (s.replicas, s.version)), stopped, "the starts lost started the lab");
    let (swarm, text) = (c.swarm.clone(), std::fs::read_to_string(c.dir.path().join("a.yaml")).unwrap());
    c.stop().await;
    let mut c = start_with(&[("a.yaml", text)], Duration::from_millis(100), handed_over(&swarm), FakeStore::default()).await;
    c.until_phase("a", Phase::Completed, SOON).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.swarm.service("a_web").map(|s| (s.replicas, s.version)), stopped, "the labd without a status started the lab");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labs_owned_on_swarm_that_no_file_here_ever_defined_are_kept_as_orphans() {
    // Another labd's lab (its file lay elsewhere): objects on Swarm, a status naming its file.
    let swarm = FakeSwarm::default();
    let store_status = crate::status::LabStatus { name: "other".into(), source: "/elsewhere/other.yaml".into(), generation: 3, ..Default::default() };
    let other = crate::spec::parse_file(Path::new("o.yaml"), &lab_yaml("other", &["web"])).remove(0).result.unwrap();
    let desired = crate::plan::desired_lab(&other.lab);
    swarm.create_network(&desired.networks[0]).await.unwrap();
    swarm.create_service(&desired.services[0]).await.unwrap();
    let store = FakeStore::default();
    store.statuses.lock().unwrap().insert("other".into(), store_status);
    let mut c = start_with(&[("a.yaml", lab_yaml("a", &["web"]))], Duration::from_secs(600), swarm, store).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    c.until_phase("other", Phase::Orphaned, SOON).await;
    assert_eq!(c.services(), ["a_web", "other_web"], "an orphan was touched");
    let status = c.store.statuses.lock().unwrap()["other"].clone();
    assert!(status.message.contains("/elsewhere/other.yaml lies outside the labs directory"), "{}", status.message);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_git_each_commit_applies_whole_a_broken_one_keeps_the_last_good_and_a_failed_fetch_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("README.md"), "labs\n").unwrap();
    std::fs::write(repo.join("a.yaml"), lab_yaml("a", &["web"])).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "a"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let source = crate::source::GitSource {
        url: format!("file://{}", repo.display()),
        branch: "main".into(),
        path: "".into(),
        cache: work.path().join("cache"),
        credentials: None,
    };
    let mut config = config(work.path(), Duration::from_secs(60));
    config.git = Some(super::GitConfig { source, interval: Duration::from_millis(100) });
    let (swarm, store) = (Arc::new(FakeSwarm::default()), FakeStore::default());
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let controller = Controller::new(config, swarm.clone(), store.clone()).await.with_metrics(metrics.clone());
    let mut phases = controller.phases();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(controller.run(async move {
        let _ = stopped.await;
    }));
    let phase_is = |phases: &mut watch::Receiver<BTreeMap<String, Phase>>, lab: &'static str, phase: Phase| {
        let mut phases = phases.clone();
        async move { tokio::time::timeout(SOON, phases.wait_for(|p| p.get(lab) == Some(&phase))).await.is_ok() }
    };
    let commit_of = |store: &FakeStore| store.statuses.lock().unwrap().get("a").and_then(|s| s.commit.clone());
    assert!(phase_is(&mut phases, "a", Phase::Ready).await);
    eventually("the status names the commit", SOON, || commit_of(&store).as_deref() == Some(first.as_str())).await;
    assert!(metrics.encode().lines().any(|l| l == "swarmlab_source_readable 1"), "{}", metrics.encode());

    // Two files in one commit: both labs come with it.
    std::fs::write(repo.join("a.yaml"), lab_yaml("a", &["web", "db"])).unwrap();
    std::fs::write(repo.join("b.yaml"), lab_yaml("b", &["api"])).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "a and b"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    assert!(phase_is(&mut phases, "b", Phase::Ready).await);
    eventually("a at the second commit", SOON, || commit_of(&store).as_deref() == Some(second.as_str())).await;
    let services = || {
        let mut names: Vec<String> = swarm.state.lock().unwrap().services.iter().map(|s| s.name.clone()).collect();
        names.sort();
        names
    };
    assert_eq!(services(), ["a_db", "a_web", "b_api"]);

    // A broken commit: Invalid, and what runs stays (with its commit).
    std::fs::write(repo.join("a.yaml"), "metadata: {name: a\n").unwrap();
    git(&repo, &["commit", "-qam", "broken"]);
    assert!(phase_is(&mut phases, "a", Phase::Invalid).await);
    assert_eq!(services(), ["a_db", "a_web", "b_api"]);
    assert_eq!(commit_of(&store).as_deref(), Some(second.as_str()), "the running definition's commit");

    // The repository gone: the fetch fails, is said, and nothing changes.
    std::fs::rename(&repo, work.path().join("moved")).unwrap();
    eventually("the failed fetch reported", SOON, || store.source.lock().unwrap().as_ref().is_some_and(|s| s.error.is_some())).await;
    assert!(metrics.encode().lines().any(|l| l == "swarmlab_source_readable 0"), "{}", metrics.encode());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(services(), ["a_db", "a_web", "b_api"]);
    assert_eq!(store.source.lock().unwrap().as_ref().and_then(|s| s.commit.clone()), Some(git(&work.path().join("moved"), &["rev-parse", "HEAD"])));
    let _ = stop.send(());
    let _ = task.await;
}

/// The deletion rule under a storm: files truncated and written again, broken and mended,
/// moved away and back, the whole directory moved away and back, labd restarted (each within
/// the grace), in a random order from fixed seeds. No service or network of a lab a file
/// defines is ever removed, and the labs end Ready as their files say; then a file really
/// removed is torn down, so the check can see a removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_faults_and_restarts_in_any_order_never_remove_a_lab_a_file_defines() {
    // Two storms at once (each on its own directory, Swarm and store): they mostly sleep.
    tokio::join!(file_storm(7), file_storm(11));
}

async fn file_storm(seed: u64) {
    use rand::{Rng, SeedableRng};
    const GRACE: Duration = Duration::from_secs(2);
    // Every absence below lasts at most this: a fifth of the grace, so a slow machine that
    // oversleeps keeps a wide margin.
    const AWAY: u64 = 400;
    let tune = |c: &mut Config| {
        c.delete_grace = GRACE;
        c.resync = Duration::from_millis(300);
    };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let files = [("a.yaml", "a", ["web", "db"]), ("b.yaml", "b", ["web", "db"]), ("sub/c.yaml", "c", ["web", "db"])];
    for (file, lab, services) in &files {
        std::fs::write(dir.path().join(file), lab_yaml(lab, services)).unwrap();
    }
    let root = dir.path().to_path_buf();
    let mut c = start_in(dir, FakeSwarm::default(), FakeStore::default(), tune).await;
    c.until("every lab Ready", SOON, |p| ["a", "b", "c"].iter().all(|l| p.get(*l) == Some(&Phase::Ready))).await;
    let mut done = Vec::new();
    for _ in 0..25 {
        let (file, lab, services) = files[rng.random_range(0..files.len())];
        let path = root.join(file);
        let whole = lab_yaml(lab, &services);
        let away = Duration::from_millis(rng.random_range(0..=AWAY));
        match rng.random_range(0..6) {
            0 => {
                // Written in place: truncated first, the text after a while.
                let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
                tokio::time::sleep(away).await;
                std::io::Write::write_all(&mut f, whole.as_bytes()).unwrap();
                done.push(format!("{file} written in place over {away:?}"));
            }
            1 => {
                std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
                tokio::time::sleep(away).await;
                std::fs::write(&path, &whole).unwrap();
                done.push(format!("{file} half written for {away:?}"));
            }
            2 => {
                let aside = root.join(format!("{lab}.moved"));
                std::fs::rename(&path, &aside).unwrap();
                tokio::time::sleep(away).await;
                std::fs::rename(&aside, &path).unwrap();
                done.push(format!("{file} moved away for {away:?}"));
            }
            3 => {
                let aside = root.with_extension("away");
                std::fs::rename(&root, &aside).unwrap();
                tokio::time::sleep(away).await;
                std::fs::rename(&aside, &root).unwrap();
                done.push(format!("the directory moved away for {away:?}"));
            }
            4 => {
                let Running { dir, swarm, store, .. } = c.stopped().await;
                c = start_in(dir, handed_over(&swarm), store, tune).await;
                done.push("labd restarted".into());
            }
            _ => {
                std::fs::write(&path, format!("{whole}  bogus: [\n")).unwrap();
                tokio::time::sleep(away).await;
                std::fs::write(&path, &whole).unwrap();
                done.push(format!("{file} broken for {away:?}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
        let removed = c.swarm.state.lock().unwrap().removed.clone();
        assert!(removed.is_empty(), "seed {seed}: removed {removed:?} after {done:#?}");
    }
    c.until("every lab Ready again", SOON, |p| ["a", "b", "c"].iter().all(|l| p.get(*l) == Some(&Phase::Ready))).await;
    assert_eq!(c.services(), ["a_db", "a_web", "b_db", "b_web", "c_db", "c_web"], "seed {seed}");
    std::fs::remove_file(root.join("b.yaml")).unwrap();
    eventually("b torn down", GRACE * 3, || c.services().len() == 4).await;
    let removed = c.swarm.state.lock().unwrap().removed.clone();
    assert!(removed.len() == 3 && ["b_web", "b_db", "b_default"].iter().all(|n| removed.contains(&n.to_string())), "seed {seed}: {removed:?}");
    c.stop().await;
}

/// labd stopped in the middle of a teardown (its network still in use by stopping tasks): the
/// next labd finishes it, once it has its own evidence that no file defines the lab, and
/// creates nothing of it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teardown_cut_short_by_a_restart_is_finished_by_the_next_labd_and_nothing_comes_back() {
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web", "db"])), ("b.yaml", lab_yaml("b", &["web"]))], Duration::from_millis(300), FakeSwarm::default()).await;
    c.until("both Ready", SOON, |p| p.get("a") == Some(&Phase::Ready) && p.get("b") == Some(&Phase::Ready)).await;
    c.swarm.state.lock().unwrap().network_in_use = 1_000;
    std::fs::remove_file(c.dir.path().join("a.yaml")).unwrap();
    eventually("a's services removed", SOON, || c.services() == ["b_web"]).await;
    assert!(c.swarm.state.lock().unwrap().networks.iter().any(|n| n.name == "a_default"), "the network went before the restart");
    let Running { dir, swarm, store, .. } = c.stopped().await;
    let next = handed_over(&swarm);
    next.state.lock().unwrap().network_in_use = 0;
    let mut c = start_in(dir, next, store, |c| c.resync = Duration::from_millis(300)).await;
    eventually("a's network removed", SOON, || !c.swarm.state.lock().unwrap().networks.iter().any(|n| n.name == "a_default")).await;
    c.until("a forgotten", SOON, |p| !p.contains_key("a") && p.get("b") == Some(&Phase::Ready)).await;
    assert_eq!(c.services(), ["b_web"], "something of a came back");
    c.stop().await;
}

/// A labs directory that is not there (a wrong --labs, a mount not up yet) is said where
/// `labctl status` reads it, and cleared once the directory can be read; nothing is removed
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labs_directory_that_cannot_be_read_is_said_in_the_source_state_until_it_can() {
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web"]))], Duration::from_millis(200), FakeSwarm::default()).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    let source = || c.store.source.lock().unwrap().clone();
    assert_eq!(source().map(|s| s.error), Some(None), "a readable directory says so");
    let root = c.dir.path().to_path_buf();
    let aside = root.with_extension("away");
    std::fs::rename(&root, &aside).unwrap();
    eventually("the trouble said", SOON, || source().and_then(|s| s.error).is_some_and(|e| e.contains("No such file or directory"))).await;
    let said = source().unwrap();
    assert_eq!((said.url, said.branch.as_str()), (root.display().to_string(), ""));
    let readable = || c.metrics.encode().lines().find_map(|l| l.strip_prefix("swarmlab_source_readable ").map(str::to_string));
    assert_eq!(readable().as_deref(), Some("0"));
    std::fs::rename(&aside, &root).unwrap();
    eventually("the trouble cleared", SOON, || source().is_some_and(|s| s.error.is_none())).await;
    assert_eq!(readable().as_deref(), Some("1"));
    assert_eq!(c.services(), ["a_web"]);
    c.stop().await;
}

/// A shutdown is said where `labctl status` reads it (it prints STOPPED at once rather than
/// STALE 15 s later); a controller cut off (its lease lost: the future dropped) says nothing,
/// as another labd leads then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_is_said_to_the_store_and_a_lost_lease_is_not() {
    let stopped = |store: &FakeStore| store.metrics.lock().unwrap().get(&(String::new(), "stopped".to_string())).copied().unwrap_or(0);
    let mut c = start(&[("a.yaml", lab_yaml("a", &["web"]))], Duration::from_millis(200), FakeSwarm::default()).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    assert_eq!(stopped(&c.store), 0);
    let c = c.stopped().await;
    assert_eq!(stopped(&c.store), 1, "the shutdown was not said");

    let mut cut = start(&[("a.yaml", lab_yaml("a", &["web"]))], Duration::from_millis(200), FakeSwarm::default()).await;
    cut.until_phase("a", Phase::Ready, SOON).await;
    if let Some(task) = cut.task.take() {
        task.abort();
        let _ = task.await;
    }
    assert_eq!(stopped(&cut.store), 0, "a controller cut off said it stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labctl_reconcile_reads_the_directory_looks_at_the_lab_at_once_and_answers() {
    let mut c = start_tuned(&[("a.yaml", lab_yaml("a", &["web"]))], FakeSwarm::default(), FakeStore::default(), |c| c.resync = Duration::from_secs(3600)).await;
    c.until_phase("a", Phase::Ready, SOON).await;
    // Removed by hand, and no event said so (one lost): nothing looks before the hourly resync.
    c.swarm.state.lock().unwrap().services.retain(|s| s.name != "a_web");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.swarm.service("a_web").is_none(), "looked at without being asked");
    let asked = chrono::Utc::now();
    let _ = c.store.notices.send(crate::store::Notice::Reconcile { id: "r1".into(), lab: Some("a".into()) });
    eventually("the answer", SOON, || c.store.answers.lock().unwrap().contains_key("r1")).await;
    let answer = c.store.answers.lock().unwrap()["r1"].clone();
    assert_eq!(answer.labs, ["a"]);
    assert!(answer.source.is_none() && !answer.moved && answer.answered_at.is_some_and(|t| t >= asked), "{answer:?}");
    eventually("the service put back", SOON, || c.swarm.service("a_web").is_some()).await;
    // The look that answers it began after the answer's time (what `labctl reconcile` waits for).
    let looked = c.store.statuses.lock().unwrap()["a"].updated_at;
    assert!(looked >= answer.answered_at, "{looked:?} {answer:?}");

    // A lab the directory does not define: answered, with nothing looked at.
    let _ = c.store.notices.send(crate::store::Notice::Reconcile { id: "r2".into(), lab: Some("nope".into()) });
    eventually("the answer", SOON, || c.store.answers.lock().unwrap().contains_key("r2")).await;
    assert!(c.store.answers.lock().unwrap()["r2"].labs.is_empty());
    c.stop().await;
}
