//! What the benchmarks against the real Swarm and Redis share: the docker CLI and redis-cli,
//! waits, labd started and stopped, a stack's container starts from `docker events`.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

pub const DOCKER: &str = "/usr/bin/docker";

pub fn docker(args: &[&str]) -> String {
    let out = Command::new(DOCKER).args(args).env("DOCKER_API_VERSION", "1.41").output().expect("docker runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// RFC 3339 times printed by `docker inspect --format '{{json .X}}'`, one per line.
pub fn times(out: &str) -> Vec<DateTime<Utc>> {
    out.lines().filter_map(|l| serde_json::from_str::<String>(l.trim()).ok()).filter_map(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc)).collect()
}

pub fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

/// When labd last set the lab's Ready condition (its own clock, at the look that found it Ready).
pub fn ready_at(lab: &str) -> DateTime<Utc> {
    let status: serde_json::Value = serde_json::from_str(&status_of(lab)).expect("status JSON");
    let ready = status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready").expect("a Ready condition");
    DateTime::parse_from_rfc3339(ready["lastTransitionTime"].as_str().expect("a time")).expect("RFC 3339").with_timezone(&Utc)
}

pub fn redis(args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(args).output().expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn wait(what: &str, timeout: Duration, ok: impl FnMut() -> bool) -> Duration {
    wait_every(Duration::from_millis(50), what, timeout, ok)
}

pub fn wait_every(every: Duration, what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
    start.elapsed()
}

/// The container starts of a stack, from one `docker events` stream: a check of a deploy that
/// costs the deploy nothing (labd's is a `redis-cli get`; a `docker stack services` is ~30 ms
/// of CPU, its CLI's and dockerd's, taken from the deploy it checks).
pub struct ContainerStarts {
    events: Child,
    started: std::sync::mpsc::Receiver<()>,
}

impl ContainerStarts {
    pub fn watch(stack: &str) -> ContainerStarts {
        let mut events = Command::new(DOCKER)
            .args(["events", "--filter", "type=container", "--filter", "event=start", "--filter"])
            .arg(format!("label=com.docker.stack.namespace={stack}"))
            .args(["--format", "{{.ID}}"])
            .env("DOCKER_API_VERSION", "1.41")
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker events runs");
        let stdout = events.stdout.take().expect("piped");
        let (tx, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for _ in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
        // The stream stands once the CLI has connected; a start before that would be missed.
        std::thread::sleep(Duration::from_millis(300));
        ContainerStarts { events, started }
    }

    /// Until `n` containers have started (then Swarm's records say when each task ran).
    pub fn wait_for(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for _ in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            self.started.recv_timeout(left).expect("every container of the stack started in time");
        }
    }
}

impl Drop for ContainerStarts {
    fn drop(&mut self) {
        let _ = self.events.kill();
        let _ = self.events.wait();
    }
}

/// No service, network or container of the stack (or lab) left: containers still stopping
/// would take CPU from the next measurement.
pub fn stack_gone(stack: &str) -> bool {
    docker(&["service", "ls", "-q", "--filter", &format!("label=com.docker.stack.namespace={stack}")]).trim().is_empty()
        && docker(&["network", "ls", "-q", "--filter", &format!("label=com.docker.stack.namespace={stack}")]).trim().is_empty()
        && !docker(&["ps", "-a", "--format", "{{.Names}}"]).lines().any(|name| name.starts_with(&format!("{stack}_")))
}

pub struct Labd(pub Child);

impl Labd {
    pub fn start(args: &[&str]) -> Labd {
        let child = Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(args)
            .env("DOCKER_API_VERSION", "1.41")
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("labd starts");
        std::thread::sleep(Duration::from_secs(1));
        Labd(child)
    }
}

impl Drop for Labd {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

pub fn stack_deploy(compose: &Path, stack: &str) {
    let out = Command::new(DOCKER)
        .args(["stack", "deploy", "--resolve-image", "never", "-c", compose.to_str().unwrap(), stack])
        .env("DOCKER_API_VERSION", "1.41")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

pub fn status_of(lab: &str) -> String {
    redis(&["get", &format!("swarmlab:lab:{lab}:status")])
}

pub fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
