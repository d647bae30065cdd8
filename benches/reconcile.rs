//! Time from dropping a lab file to Ready, next to `docker stack deploy` of the equivalent
//! Compose file until every task runs; and the Docker API calls of one no-op resync.
//! Needs the Swarm and Redis of scripts/setup.sh. Run: `cargo bench --bench reconcile`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DOCKER: &str = "/usr/bin/docker";

fn docker(args: &[&str]) -> String {
    let out = Command::new(DOCKER).args(args).env("DOCKER_API_VERSION", "1.41").output().expect("docker runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn redis(args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(args).output().expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// All tasks of a stack running, by `docker stack services`.
fn stack_running(stack: &str, services: usize) -> bool {
    let out = docker(&["stack", "services", stack, "--format", "{{.Replicas}}"]);
    let rows: Vec<&str> = out.lines().collect();
    rows.len() == services
        && rows.iter().all(|r| r.split_once('/').is_some_and(|(a, b)| a == b.split_whitespace().next().unwrap_or("")))
}

fn stack_gone(stack: &str) -> bool {
    docker(&["service", "ls", "-q", "--filter", &format!("label=com.docker.stack.namespace={stack}")]).trim().is_empty()
        && docker(&["network", "ls", "-q", "--filter", &format!("label=com.docker.stack.namespace={stack}")]).trim().is_empty()
}

/// (lab YAML, compose YAML, services) for `services` services with `replicas` tasks in all.
fn synthetic(name: &str, services: usize, replicas: usize) -> (String, String, usize) {
    let mut lab = format!(
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: {name}}}\nspec:\n  defaults: {{image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"], networks: [net]}}\n  networks: {{net: {{}}}}\n  services:\n"
    );
    let mut compose = "version: \"3.8\"\nnetworks: {net: {driver: overlay}}\nservices:\n".to_string();
    for i in 0..services {
        let r = replicas / services + usize::from(i < replicas % services);
        let _ = writeln!(lab, "    s{i}: {{replicas: {r}}}");
        let _ = write!(
            compose,
            "  s{i}:\n    image: labbox:latest\n    command: [sleep, \"100000\"]\n    init: true\n    stop_grace_period: 1s\n    networks: [net]\n    deploy: {{replicas: {r}, endpoint_mode: dnsrr}}\n"
        );
    }
    (lab, compose, services)
}

fn dockercoins() -> (String, String, usize) {
    let lab = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/labs/dockercoins.yaml")).unwrap();
    let parsed = swarmlab::spec::parse_file(Path::new("d.yaml"), &lab).remove(0).result.expect("example is valid").lab;
    let mut compose = "version: \"3.8\"\nnetworks: {coins: {driver: overlay}}\nservices:\n".to_string();
    for (name, svc) in parsed.resolved_services() {
        let cmd = serde_json::to_string(&svc.command.map(|c| c.to_args()).unwrap_or_default()).unwrap();
        let _ = write!(
            compose,
            "  {name}:\n    image: labbox:latest\n    command: {cmd}\n    init: true\n    stop_grace_period: 2s\n    networks: [coins]\n    deploy: {{replicas: {}, endpoint_mode: dnsrr}}\n",
            svc.replicas.unwrap_or(1)
        );
    }
    (lab.replace("name: coins", "name: benchcoins"), compose, parsed.spec.services.len())
}

struct Labd(Child);
impl Labd {
    fn start(args: &[&str]) -> Labd {
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

/// Time to Ready for the 50-replica lab on the three-node harness (scripts/multinode.sh).
fn multinode_row() -> Option<Duration> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/multinode.sh");
    if !Command::new("bash").args([script, "up", "3"]).status().ok()?.success() {
        return None;
    }
    let labs = tempfile::tempdir().unwrap();
    let labd = Labd::start(&["--labs", labs.path().to_str().unwrap(), "--docker-host", "unix:///run/slmn/n1/docker.sock", "--node", "slmn-n1"]);
    let (lab, _, _) = synthetic("benchmn", 20, 50);
    redis(&["del", "swarmlab:lab:benchmn:status"]);
    let start = Instant::now();
    std::fs::write(labs.path().join("benchmn.yaml"), lab).unwrap();
    wait("labd Ready on three nodes", Duration::from_secs(300), || {
        redis(&["get", "swarmlab:lab:benchmn:status"]).contains("\"phase\":\"Ready\"")
    });
    let took = start.elapsed();
    drop(labd);
    redis(&["del", "swarmlab:lab:benchmn:status"]);
    let _ = Command::new("bash").args([script, "down"]).status();
    Some(took)
}

fn main() {
    let labs = tempfile::tempdir().unwrap();
    let labd = Labd::start(&["--labs", labs.path().to_str().unwrap(), "--resync", "5"]);
    let mut rows = Vec::new();
    for (label, (lab_yaml, compose, services)) in [
        ("DockerCoins (5 services, 6 tasks)", dockercoins()),
        ("20 services / 50 replicas", synthetic("bench50", 20, 50)),
    ] {
        let name = lab_yaml.lines().find_map(|l| l.trim().strip_prefix("metadata: {name: ").map(|n| n.trim_end_matches('}').to_string()))
            .unwrap_or_else(|| "benchcoins".to_string());
        // labd: drop the file, wait for status Ready.
        redis(&["del", &format!("swarmlab:lab:{name}:status")]);
        let file = labs.path().join(format!("{name}.yaml"));
        let start = Instant::now();
        std::fs::write(&file, &lab_yaml).unwrap();
        wait("labd Ready", Duration::from_secs(180), || {
            redis(&["get", &format!("swarmlab:lab:{name}:status")]).contains("\"phase\":\"Ready\"")
        });
        let labd_time = start.elapsed();
        assert!(stack_running(&name, services), "Ready means every task runs");
        // One no-op resync (every 5 s here) of the converged lab.
        std::thread::sleep(Duration::from_secs(2));
        let reconciles = redis(&["hget", &format!("swarmlab:lab:{name}:metrics"), "reconciles"]);
        wait("a resync", Duration::from_secs(30), || {
            redis(&["hget", &format!("swarmlab:lab:{name}:metrics"), "reconciles"]) != reconciles
        });
        std::thread::sleep(Duration::from_millis(300));
        let calls = redis(&["hget", &format!("swarmlab:lab:{name}:metrics"), "last_reconcile_api_calls"]);
        std::fs::remove_file(&file).unwrap();
        wait("labd teardown", Duration::from_secs(120), || stack_gone(&name));

        // docker stack deploy of the same thing, until all tasks run.
        let stack = format!("{name}stack");
        let compose_file = labs.path().join("compose.yml");
        std::fs::write(&compose_file, &compose).unwrap();
        let start = Instant::now();
        let out = Command::new(DOCKER)
            .args(["stack", "deploy", "--resolve-image", "never", "-c", compose_file.to_str().unwrap(), &stack])
            .env("DOCKER_API_VERSION", "1.41")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        wait("stack running", Duration::from_secs(180), || stack_running(&stack, services));
        let stack_time = start.elapsed();
        docker(&["stack", "rm", &stack]);
        wait("stack removal", Duration::from_secs(120), || stack_gone(&stack));
        std::fs::remove_file(&compose_file).unwrap();
        rows.push((label, labd_time, stack_time, calls));
    }
    drop(labd);
    let multinode = multinode_row();
    println!("\n| lab | labd: file drop → Ready | docker stack deploy → all tasks running | API calls of a no-op resync |");
    println!("|---|---|---|---|");
    for (label, l, s, calls) in rows {
        println!("| {label} | {:.1} s | {:.1} s | {calls} |", l.as_secs_f64(), s.as_secs_f64());
    }
    match multinode {
        Some(t) => println!("| 20 services / 50 replicas, three nodes | {:.1} s | – | – |", t.as_secs_f64()),
        None => println!("| 20 services / 50 replicas, three nodes | harness unavailable | – | – |"),
    }
}
