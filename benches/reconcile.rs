//! Time from dropping a lab file to Ready, from a change to its tasks running, and from a
//! service removed by hand to it running again, next to `docker stack deploy` of the
//! equivalent Compose file measured in the same run; the Docker API calls of one no-op resync
//! and labd's memory with 1, 10 and 100 labs. Each first deploy is split, from Swarm's own
//! records, into the tool's part before the first service exists, Swarm's part (first service
//! created → last task running, the same pipeline for both tools) and, for labd, the time from
//! the last task running to Ready. A first deploy's time is taken from those records too
//! (file written → labd's Ready, `docker stack deploy` started → last task running), so how
//! often the bench checks does not count; and the checks cost the deploys next to nothing (a
//! `redis-cli get` every 500 ms for labd; for the stack, its container start events, then
//! `docker stack services` every 500 ms, typically once). Each first deploy also records the
//! CPU time the whole machine used during it, which on this machine is what bounds a deploy.
//! Needs the Swarm and Redis of scripts/setup.sh. Run: `cargo bench --bench reconcile`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

mod support;
use support::*;

/// When Swarm created the first service of a stack (or lab), and when its last task started
/// running: Swarm's own records (services' CreatedAt, running tasks' status timestamps).
fn swarm_span(stack: &str) -> (DateTime<Utc>, DateTime<Utc>) {
    let services: Vec<String> = docker(&["service", "ls", "-q", "--filter", &format!("label=com.docker.stack.namespace={stack}")]).lines().map(str::to_string).collect();
    let mut args = vec!["service", "inspect", "--format", "{{json .CreatedAt}}"];
    args.extend(services.iter().map(String::as_str));
    let created = times(&docker(&args)).into_iter().min().expect("services of the stack");
    let tasks: Vec<String> = docker(&["stack", "ps", stack, "-q", "--no-trunc", "--filter", "desired-state=running"]).lines().map(str::to_string).collect();
    let mut args = vec!["inspect", "--type", "task", "--format", "{{json .Status.Timestamp}}"];
    args.extend(tasks.iter().map(String::as_str));
    let running = times(&docker(&args)).into_iter().max().expect("running tasks of the stack");
    (created, running)
}

/// A first deploy split in three: the tool before the first service exists, Swarm until the
/// last task runs, the tool until it says so (labd's Ready; none for `docker stack deploy`).
#[derive(Clone, Copy)]
struct Split {
    before: Duration,
    swarm: Duration,
    after: Duration,
    /// CPU time the whole machine used from the start of the deploy until the check that saw
    /// it done: Swarm's work (dockerd, containerd, runc, the containers' start) and the tool's.
    cpu: Duration,
}

/// CPU time used so far by every process on the machine (/proc/stat's first line: user, nice,
/// system, irq, softirq and steal; not idle or iowait). /proc/stat counts in USER_HZ, which
/// Linux fixes at 100 for user space.
fn machine_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat is readable");
    let fields: Vec<u64> = stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum();
    Duration::from_millis(busy * 10)
}

/// How often a first deploy is checked. Its time comes from the tools' and Swarm's own records,
/// not from when a check saw it, so the checks can be rare: `docker stack services` every
/// 50 ms took ~0.4 s of CPU a second from the deploy it measured (each call ~30 ms of CPU).
const DEPLOY_CHECK: Duration = Duration::from_millis(500);

/// All tasks of a stack running, by `docker stack services`.
fn stack_running(stack: &str, services: usize) -> bool {
    let out = docker(&["stack", "services", stack, "--format", "{{.Replicas}}"]);
    let rows: Vec<&str> = out.lines().collect();
    rows.len() == services
        && rows.iter().all(|r| r.split_once('/').is_some_and(|(a, b)| a == b.split_whitespace().next().unwrap_or("")))
}

/// (lab YAML, compose YAML, services, tasks) for `services` services with `replicas` tasks in all.
fn synthetic(name: &str, services: usize, replicas: usize) -> (String, String, usize, usize) {
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
    (lab, compose, services, replicas)
}

fn dockercoins() -> (String, String, usize, usize) {
    let lab = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/labs/dockercoins.yaml")).unwrap();
    let parsed = swarmlab::spec::parse_file(Path::new("d.yaml"), &lab).remove(0).result.expect("example is valid").lab;
    let mut compose = "version: \"3.8\"\nnetworks: {coins: {driver: overlay}}\nservices:\n".to_string();
    let mut tasks = 0;
    for (name, svc) in parsed.resolved_services() {
        tasks += svc.replicas.unwrap_or(1) as usize;
        let cmd = serde_json::to_string(&svc.command.map(|c| c.to_args()).unwrap_or_default()).unwrap();
        let _ = write!(
            compose,
            "  {name}:\n    image: labbox:latest\n    command: {cmd}\n    init: true\n    stop_grace_period: 2s\n    networks: [coins]\n    deploy: {{replicas: {}, endpoint_mode: dnsrr}}\n",
            svc.replicas.unwrap_or(1)
        );
    }
    (lab.replace("name: coins", "name: benchcoins"), compose, parsed.spec.services.len(), tasks)
}

/// Time to Ready for the 50-replica lab on the three-node harness (scripts/multinode.sh).
fn multinode_row() -> Option<Duration> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/multinode.sh");
    if !Command::new("bash").args([script, "up", "3"]).status().ok()?.success() {
        return None;
    }
    let labs = tempfile::tempdir().unwrap();
    let labd = Labd::start(&["--labs", labs.path().to_str().unwrap(), "--docker-host", "unix:///run/slmn/n1/docker.sock", "--node", "slmn-n1"]);
    let (lab, ..) = synthetic("benchmn", 20, 50);
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

fn service_replicas(name: &str) -> String {
    docker(&["service", "ls", "--filter", &format!("name={name}"), "--format", "{{.Name}} {{.Replicas}}"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(|r| r.split_whitespace().next().unwrap_or("").to_string()))
        .unwrap_or_default()
}

/// One benchmark lab: its texts, the service whose replicas the change raises, and the service
/// removed by hand for the drift figure.
struct Case {
    label: &'static str,
    name: String,
    lab: String,
    compose: String,
    services: usize,
    tasks: usize,
    scaled: &'static str,
    scale: (&'static str, &'static str),
    removed: &'static str,
    runs: usize,
}

/// The figures of one run of a case, or the medians of its runs.
struct Run {
    labd_ready: Duration,
    stack_ready: Duration,
    labd_change: Duration,
    stack_change: Duration,
    labd_drift: Duration,
    labd_split: Split,
    stack_split: Split,
}

/// `n/n` replicas for a scale step like `replicas: 5`.
fn want(to: &str) -> String {
    let n: String = to.chars().filter(|c| c.is_ascii_digit()).collect();
    format!("{n}/{n}")
}

/// labd and `docker stack deploy`: first deploy, a change of replicas, and (labd only) a
/// service removed by hand until it runs again. Which tool goes first alternates from run to
/// run, so neither always follows the other's teardown.
fn run_case(labs: &Path, case: &Case, stack_first: bool) -> Run {
    let (stack, labd) = if stack_first {
        let stack = run_stack(labs, case);
        (stack, run_labd(labs, case))
    } else {
        let labd = run_labd(labs, case);
        (run_stack(labs, case), labd)
    };
    let ((labd_ready, labd_change, labd_drift, labd_split), (stack_ready, stack_change, stack_split)) = (labd, stack);
    Run { labd_ready, stack_ready, labd_change, stack_change, labd_drift, labd_split, stack_split }
}

/// labd's first deploy, change and drift repair: (ready, change, drift, split).
fn run_labd(labs: &Path, case: &Case) -> (Duration, Duration, Duration, Split) {
    let Case { name, lab, services, scaled, scale: (from, to), removed, .. } = case;
    let changed_lab = lab.replacen(from, to, 1);
    // labd: drop the file, wait for status Ready.
    redis(&["del", &format!("swarmlab:lab:{name}:status")]);
    let file = labs.join(format!("{name}.yaml"));
    let cpu = machine_cpu();
    let written = Utc::now();
    std::fs::write(&file, lab).unwrap();
    wait_every(DEPLOY_CHECK, "labd Ready", Duration::from_secs(180), || status_of(name).contains("\"phase\":\"Ready\""));
    let cpu = machine_cpu() - cpu;
    assert!(stack_running(name, *services), "Ready means every task runs");
    let (created, running) = swarm_span(name);
    let ready = ready_at(name);
    let labd_ready = between(written, ready);
    let labd_split = Split { before: between(written, created), swarm: between(created, running), after: between(running, ready), cpu };
    let start = Instant::now();
    std::fs::write(&file, &changed_lab).unwrap();
    wait("labd applied the change", Duration::from_secs(180), || service_replicas(&format!("{name}_{scaled}")) == want(to));
    let labd_change = start.elapsed();
    let start = Instant::now();
    docker(&["service", "rm", &format!("{name}_{removed}")]);
    wait("labd repaired the drift", Duration::from_secs(180), || {
        let r = service_replicas(&format!("{name}_{removed}"));
        !r.is_empty() && r.split_once('/').is_some_and(|(a, b)| a == b)
    });
    let labd_drift = start.elapsed();
    std::fs::remove_file(&file).unwrap();
    wait("labd teardown", Duration::from_secs(120), || stack_gone(name));
    (labd_ready, labd_change, labd_drift, labd_split)
}

/// `docker stack deploy` of the same lab until all tasks run, then the same change:
/// (ready, change, split).
fn run_stack(labs: &Path, case: &Case) -> (Duration, Duration, Split) {
    let Case { name, compose, services, tasks, scaled, scale: (from, to), .. } = case;
    let stack = format!("{name}stack");
    let compose_file = labs.join("compose.yml");
    std::fs::write(&compose_file, compose).unwrap();
    let starts = ContainerStarts::watch(&stack);
    let cpu = machine_cpu();
    let deployed = Utc::now();
    stack_deploy(&compose_file, &stack);
    starts.wait_for(*tasks, Duration::from_secs(180));
    wait_every(DEPLOY_CHECK, "stack running", Duration::from_secs(180), || stack_running(&stack, *services));
    let cpu = machine_cpu() - cpu;
    drop(starts);
    let (created, running) = swarm_span(&stack);
    let stack_ready = between(deployed, running);
    let stack_split = Split { before: between(deployed, created), swarm: between(created, running), after: Duration::ZERO, cpu };
    std::fs::write(&compose_file, compose.replacen(from, to, 1)).unwrap();
    let start = Instant::now();
    stack_deploy(&compose_file, &stack);
    wait("stack changed", Duration::from_secs(180), || service_replicas(&format!("{stack}_{scaled}")) == want(to));
    let stack_change = start.elapsed();
    docker(&["stack", "rm", &stack]);
    wait("stack removal", Duration::from_secs(120), || stack_gone(&stack));
    std::fs::remove_file(&compose_file).unwrap();
    (stack_ready, stack_change, stack_split)
}

/// Docker API calls of one no-op resync and labd's resident memory, with `counts` labs of one
/// task each running at once.
fn many_labs(counts: &[usize]) -> Vec<(usize, u64, u64)> {
    let labs = tempfile::tempdir().unwrap();
    let labd = Labd::start(&["--labs", labs.path().to_str().unwrap(), "--resync", "5"]);
    let name = |i: usize| format!("many{i}");
    let mut made = 0;
    let mut rows = Vec::new();
    let field_of_all = |n: usize, key: fn(&str) -> String, field: &str| -> Vec<String> {
        let keys: Vec<String> = (0..n).map(|i| key(&name(i))).collect();
        let script = format!("local r = {{}} for i, k in ipairs(KEYS) do r[i] = redis.call('hget', k, '{field}') or '' end return r");
        let mut args = vec!["--raw".to_string(), "eval".to_string(), script, n.to_string()];
        args.extend(keys);
        let out = Command::new("redis-cli").args(&args).output().expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    };
    let metrics_key = |lab: &str| format!("swarmlab:lab:{lab}:metrics");
    for &n in counts {
        for i in made..n {
            let text = format!(
                "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: {}}}\nspec:\n  services:\n    web: {{image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"]}}\n",
                name(i)
            );
            redis(&["del", &format!("swarmlab:lab:{}:status", name(i))]);
            std::fs::write(labs.path().join(format!("{}.yaml", name(i))), text).unwrap();
        }
        made = n;
        wait(&format!("{n} labs Ready"), Duration::from_secs(600), || (0..n).all(|i| status_of(&name(i)).contains("\"phase\":\"Ready\"")));
        // Two resync rounds: the calls between the end of one and the end of the next.
        let round = || {
            let before = field_of_all(n, metrics_key, "reconciles");
            wait("a resync of every lab", Duration::from_secs(60), || {
                field_of_all(n, metrics_key, "reconciles").iter().zip(&before).all(|(now, was)| now != was)
            });
            std::thread::sleep(Duration::from_millis(500));
            redis(&["hget", "swarmlab:metrics", "docker_api_calls"]).parse::<u64>().unwrap_or(0)
        };
        let first = round();
        let second = round();
        let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", labd.0.id()))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap_or(0))))
            .unwrap_or(0);
        rows.push((n, second - first, rss_kb / 1024));
    }
    for i in 0..made {
        let _ = std::fs::remove_file(labs.path().join(format!("{}.yaml", name(i))));
    }
    wait("every lab torn down", Duration::from_secs(600), || (0..made).all(|i| stack_gone(&name(i))));
    drop(labd);
    rows
}

fn main() {
    let labs = tempfile::tempdir().unwrap();
    let labd = Labd::start(&["--labs", labs.path().to_str().unwrap(), "--resync", "5"]);
    let (coins, coins_compose, coins_services, coins_tasks) = dockercoins();
    let (fifty, fifty_compose, fifty_services, fifty_tasks) = synthetic("bench50", 20, 50);
    let cases = [
        Case {
            label: "DockerCoins (5 services, 6 tasks)",
            name: "benchcoins".into(),
            lab: coins,
            compose: coins_compose,
            services: coins_services,
            tasks: coins_tasks,
            scaled: "worker",
            scale: ("replicas: 2", "replicas: 4"),
            removed: "rng",
            runs: 3,
        },
        Case {
            label: "20 services / 50 tasks",
            name: "bench50".into(),
            lab: fifty,
            compose: fifty_compose,
            services: fifty_services,
            tasks: fifty_tasks,
            scaled: "s0",
            scale: ("replicas: 3", "replicas: 5"),
            removed: "s1",
            runs: 3,
        },
    ];
    let mut rows = Vec::new();
    for case in &cases {
        let runs: Vec<_> = (0..case.runs)
            .map(|i| {
                let stack_first = i % 2 == 1;
                let r = run_case(labs.path(), case, stack_first);
                // Each run on its own line, so the spread and any effect of the order show.
                eprintln!(
                    "{} run {} ({} first): labd {} (Swarm {}, machine CPU {}), stack {} (Swarm {}, machine CPU {})",
                    case.label,
                    i + 1,
                    if stack_first { "stack" } else { "labd" },
                    secs(r.labd_ready),
                    secs(r.labd_split.swarm),
                    secs(r.labd_split.cpu),
                    secs(r.stack_ready),
                    secs(r.stack_split.swarm),
                    secs(r.stack_split.cpu)
                );
                r
            })
            .collect();
        let pick = |f: fn(&Run) -> Duration| median(runs.iter().map(f).collect());
        rows.push((case.label, Run {
            labd_ready: pick(|r| r.labd_ready),
            stack_ready: pick(|r| r.stack_ready),
            labd_change: pick(|r| r.labd_change),
            stack_change: pick(|r| r.stack_change),
            labd_drift: pick(|r| r.labd_drift),
            labd_split: Split { before: pick(|r| r.labd_split.before), swarm: pick(|r| r.labd_split.swarm), after: pick(|r| r.labd_split.after), cpu: pick(|r| r.labd_split.cpu) },
            stack_split: Split { before: pick(|r| r.stack_split.before), swarm: pick(|r| r.stack_split.swarm), after: Duration::ZERO, cpu: pick(|r| r.stack_split.cpu) },
        }));
    }
    drop(labd);
    let many = many_labs(&[1, 10, 100]);
    let multinode = multinode_row();
    // Which Engine: its per-container cost sets most of both tools' times.
    println!("\nDocker Engine {}", docker(&["version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"]).trim());
    println!("\n| lab | labd: file drop → Ready | `docker stack deploy` → all running | ratio | labd: replicas change → running | `docker stack deploy` of the change | labd: `docker service rm` → running again |");
    println!("|---|---|---|---|---|---|---|");
    for (label, r) in &rows {
        println!(
            "| {} | {} | {} | {:.2} | {} | {} | {} |",
            label,
            secs(r.labd_ready),
            secs(r.stack_ready),
            r.labd_ready.as_secs_f64() / r.stack_ready.as_secs_f64(),
            secs(r.labd_change),
            secs(r.stack_change),
            secs(r.labd_drift)
        );
    }
    match multinode {
        Some(t) => println!("| 20 services / 50 tasks, three nodes | {} | – | – | – | – | – |", secs(t)),
        None => println!("| 20 services / 50 tasks, three nodes | harness unavailable | – | – | – | – | – |"),
    }
    let ms = |d: Duration| format!("{} ms", d.as_millis());
    // The last column is the best ratio any client of this Swarm could reach: Swarm's part of
    // labd's run alone (a client that took no time at all) against the stack's whole deploy.
    println!("\n| lab | labd: file written → first service created | Swarm (labd's run): first service created → last task running | labd: last task running → Ready | `docker stack deploy`: command → first service created | Swarm (the stack's run) | floor: Swarm's part ÷ stack |");
    println!("|---|---|---|---|---|---|---|");
    for (label, r) in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} |",
            label,
            ms(r.labd_split.before),
            secs(r.labd_split.swarm),
            ms(r.labd_split.after),
            ms(r.stack_split.before),
            secs(r.stack_split.swarm),
            r.labd_split.swarm.as_secs_f64() / r.stack_ready.as_secs_f64()
        );
    }
    // What bounds a first deploy here: the CPU the machine spends on it, nearly all Swarm's
    // (each task's container started by dockerd, containerd and runc), whichever tool asks.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    println!("\n| lab | machine CPU during labd's deploy | during the stack's deploy | per task: labd / stack | cores busy: labd / stack | the stack's CPU ÷ {cores} cores (no core ever idle) |");
    println!("|---|---|---|---|---|---|");
    for ((label, r), case) in rows.iter().zip(&cases) {
        let (labd, stack) = (r.labd_split.cpu.as_secs_f64(), r.stack_split.cpu.as_secs_f64());
        println!(
            "| {} | {:.1} s | {:.1} s | {:.0} / {:.0} ms | {:.0} / {:.0} % | {:.1} s |",
            label,
            labd,
            stack,
            labd * 1000.0 / case.tasks as f64,
            stack * 1000.0 / case.tasks as f64,
            labd * 100.0 / (cores * r.labd_ready.as_secs_f64()),
            stack * 100.0 / (cores * r.stack_ready.as_secs_f64()),
            stack / cores
        );
    }
    println!("\n| labs running (one task each) | Docker API calls of one no-op resync | labd RSS (controller + node agent) |");
    println!("|---|---|---|");
    for (n, calls, rss) in many {
        println!("| {n} | {calls} | {rss} MB |");
    }
}
