//! A change of a running service's tasks (an env edit of one service of 20 replicas) until
//! every task runs the new spec: labd at Swarm's pace (no `update`: one task at a time, the old
//! one stopped first), labd with `update: {parallelism: 0}` and with `{parallelism: 5, order:
//! start-first}`, next to `docker stack deploy` of the edited Compose file with Swarm's defaults
//! and with `update_config: {parallelism: 0}`, in the same run. Each row: the edit → the last
//! new task's container start (one `docker events` stream), and for labd the edit → Ready (a
//! task on the previous spec does not count while Swarm rolls the change out, so Ready means
//! every task runs the edit). Needs the Swarm and Redis of scripts/setup.sh. Run:
//! `cargo bench --bench rollout`.

use std::time::{Duration, Instant};

use chrono::Utc;

mod support;
use support::*;

const REPLICAS: usize = 20;

/// The `V` of every running container of `service`.
fn running_envs(service: &str) -> Vec<String> {
    let ids = docker(&["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={service}"), "--filter", "status=running"]);
    ids.split_whitespace()
        .map(|id| docker(&["inspect", id, "--format", "{{range .Config.Env}}{{println .}}{{end}}"]))
        .map(|env| env.lines().find_map(|l| l.strip_prefix("V=")).unwrap_or("-").to_string())
        .collect()
}

fn lab(name: &str, update: &str, v: u32) -> String {
    format!(
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: {name}}}\nspec:\n  networks: {{net: {{}}}}\n  services:\n    node:\n      image: labbox:latest\n      replicas: {REPLICAS}\n      init: true\n      stopGracePeriod: 1s\n      command: [sleep, \"100000\"]\n      networks: [net]\n      env: {{V: \"{v}\"}}\n{update}"
    )
}

fn compose(update: &str, v: u32) -> String {
    format!(
        "version: \"3.8\"\nnetworks: {{net: {{driver: overlay}}}}\nservices:\n  node:\n    image: labbox:latest\n    command: [sleep, \"100000\"]\n    init: true\n    stop_grace_period: 1s\n    networks: [net]\n    environment: {{V: \"{v}\"}}\n    deploy: {{replicas: {REPLICAS}, endpoint_mode: dnsrr{update}}}\n"
    )
}

fn ready_with_generation(name: &str) -> bool {
    let status: serde_json::Value = serde_json::from_str(&status_of(name)).unwrap_or_default();
    status["phase"] == "Ready" && status["generation"] == status["observedGeneration"]
}

/// labd: (edit → last new container start, edit → Ready).
fn run_labd(labs: &std::path::Path, name: &str, update: &str) -> (Duration, Duration) {
    let file = labs.join(format!("{name}.yaml"));
    redis(&["del", &format!("swarmlab:lab:{name}:status")]);
    std::fs::write(&file, lab(name, update, 1)).unwrap();
    wait_every(Duration::from_millis(200), "labd Ready", Duration::from_secs(180), || ready_with_generation(name));
    let starts = ContainerStarts::watch(name);
    let edited = Utc::now();
    let start = Instant::now();
    std::fs::write(&file, lab(name, update, 2)).unwrap();
    starts.wait_for(REPLICAS, Duration::from_secs(300));
    let started = start.elapsed();
    drop(starts);
    wait_every(Duration::from_millis(200), "labd Ready after the edit", Duration::from_secs(300), || ready_with_generation(name) && ready_at(name) > edited);
    let ready = between(edited, ready_at(name));
    let envs = running_envs(&format!("{name}_node"));
    assert!(envs.len() == REPLICAS && envs.iter().all(|v| v == "2"), "Ready with every task on the edit: {envs:?}");
    std::fs::remove_file(&file).unwrap();
    wait("labd teardown", Duration::from_secs(120), || stack_gone(name));
    (started, ready)
}

/// `docker stack deploy` of the edited file: edit → last new container start.
fn run_stack(dir: &std::path::Path, stack: &str, update: &str) -> Duration {
    let file = dir.join("compose.yml");
    std::fs::write(&file, compose(update, 1)).unwrap();
    let starts = ContainerStarts::watch(stack);
    stack_deploy(&file, stack);
    starts.wait_for(REPLICAS, Duration::from_secs(180));
    drop(starts);
    std::fs::write(&file, compose(update, 2)).unwrap();
    let starts = ContainerStarts::watch(stack);
    let start = Instant::now();
    stack_deploy(&file, stack);
    starts.wait_for(REPLICAS, Duration::from_secs(300));
    let started = start.elapsed();
    drop(starts);
    docker(&["stack", "rm", stack]);
    wait("stack removal", Duration::from_secs(120), || stack_gone(stack));
    std::fs::remove_file(&file).unwrap();
    started
}

fn main() {
    let labs = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let labd = Labd::start(&["--labs", labs.path().to_str().unwrap()]);
    let mut rows = Vec::new();
    for (label, update) in [
        ("labd, no `update` (Swarm's pace: 1 at a time, stop-first)", ""),
        ("labd, `update: {parallelism: 0}`", "      update: {parallelism: 0}\n"),
        ("labd, `update: {parallelism: 5, order: start-first}`", "      update: {parallelism: 5, order: start-first}\n"),
    ] {
        let (started, ready) = run_labd(labs.path(), "benchroll", update);
        eprintln!("{label}: last new task started {}, Ready {}", secs(started), secs(ready));
        rows.push((label, started, Some(ready)));
    }
    drop(labd);
    for (label, update) in [("`docker stack deploy`, Swarm's defaults", ""), ("`docker stack deploy`, `update_config: {parallelism: 0}`", ", update_config: {parallelism: 0}")] {
        let started = run_stack(scratch.path(), "benchrollstack", update);
        eprintln!("{label}: last new task started {}", secs(started));
        rows.push((label, started, None));
    }
    println!("\nDocker Engine {}", docker(&["version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"]).trim());
    println!("\n| an env edit of a service of {REPLICAS} replicas | edit → last new task started | edit → Ready (every task on the edit) |");
    println!("|---|---|---|");
    for (label, started, ready) in rows {
        println!("| {label} | {} | {} |", secs(started), ready.map_or("–".to_string(), secs));
    }
}
