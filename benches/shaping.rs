//! Accuracy and throughput of the userspace shaping backend, on two network namespaces joined
//! by a veth pair (no Docker needed; run as root): requested vs measured delay at p50/p99;
//! the loss and delay models against their own statistics (100k draws of the policy, and real
//! packets through a queue worker); per-destination delays on one interface; and the packets
//! per second one queue worker forwards.
//! Run: `cargo bench --bench shaping`.

use std::process::Command;
use std::time::{Duration, Instant};

use swarmlab::shaping::distribution;
use swarmlab::shaping::measure::{loss_runs, parse_replies, quantile};
use swarmlab::shaping::policy::{Fate, Policy, Stream};
use swarmlab::shaping::userspace::{rules, QueueWorker};
use swarmlab::spec::links::Toward;
use swarmlab::spec::stochastic::DelayDistribution;
use swarmlab::spec::EffectiveConditions;

const A: &str = "swarmlab-bench-a";
const B: &str = "swarmlab-bench-b";

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("command runs");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn in_ns(ns: &str, args: &[&str]) -> Vec<String> {
    ["ip", "netns", "exec", ns].iter().chain(args).map(|s| s.to_string()).collect()
}

fn run_in(ns: &str, args: &[&str]) -> String {
    let v = in_ns(ns, args);
    sh(&v.iter().map(String::as_str).collect::<Vec<_>>())
}

struct Namespaces;
impl Namespaces {
    fn up() -> Namespaces {
        Namespaces::down();
        sh(&["ip", "netns", "add", A]);
        sh(&["ip", "netns", "add", B]);
        sh(&["ip", "link", "add", "sl-bench-a", "netns", A, "type", "veth", "peer", "name", "sl-bench-b", "netns", B]);
        run_in(A, &["ip", "addr", "add", "10.250.0.1/24", "dev", "sl-bench-a"]);
        run_in(B, &["ip", "addr", "add", "10.250.0.2/24", "dev", "sl-bench-b"]);
        for (ns, dev) in [(A, "sl-bench-a"), (B, "sl-bench-b")] {
            run_in(ns, &["ip", "link", "set", dev, "up"]);
            run_in(ns, &["ip", "link", "set", "lo", "up"]);
        }
        Namespaces
    }
    fn down() {
        for ns in [A, B] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
impl Drop for Namespaces {
    fn drop(&mut self) {
        Namespaces::down();
    }
}

/// Per-packet round trips (ms) of `count` pings from A to B.
fn pings(count: u32, interval: &str) -> Vec<f64> {
    replies_to("10.250.0.2", count, interval).into_iter().flatten().collect()
}

/// Every echo's round trip by sequence, `None` where none came back.
fn replies_to(ip: &str, count: u32, interval: &str) -> Vec<Option<f64>> {
    let out = Command::new("ip").args(["netns", "exec", A, "ping", "-n", "-W", "1", "-c", &count.to_string(), "-i", interval, ip]).output().expect("ping runs");
    parse_replies(&String::from_utf8_lossy(&out.stdout), count)
}

fn model(json: serde_json::Value) -> EffectiveConditions {
    serde_json::from_value::<EffectiveConditions>(json).expect("conditions").canonical()
}

/// The models against their theory: 100k decisions of the policy (as the worker takes them),
/// then real packets through a worker.
fn model_accuracy(netns: &std::path::Path) {
    println!("\nloss models, 100k packets through the policy (theory from the model's parameters):\n");
    println!("| model | loss | theory | mean burst | theory | burst error |");
    println!("|---|---|---|---|---|---|");
    let ge = model(serde_json::json!({"lossModel": {"gilbertElliott": {"p": "5%", "r": "40%"}}}));
    let four = model(serde_json::json!({"lossModel": {"fourState": {"p13": "2%", "p31": "60%", "p32": "30%", "p23": "20%", "p14": "1%"}}}));
    for (name, c, burst_theory) in [("gilbertElliott p 5% r 40%", &ge, Some(2.5)), ("fourState p13 2% p31 60% p32 30% p23 20% p14 1%", &four, None)] {
        let mut policy = Policy::new(c.clone(), Stream::new("bench/a/1/lan"));
        let start = Instant::now();
        let lost: Vec<bool> = (0..100_000u64).map(|i| policy.decide(start + Duration::from_secs(i), 0, 1000) == Fate::Drop).collect();
        let (rate, burst) = loss_runs(&lost);
        let theory = c.loss_model.map(|m| m.mean_loss()).unwrap_or(0.0);
        let (burst_theory, error) = match burst_theory {
            Some(t) => (format!("{t:.2}"), format!("{:+.1}%", (burst - t) / t * 100.0)),
            None => ("-".into(), "-".into()),
        };
        println!("| {name} | {:.2}% | {:.2}% | {burst:.2} | {burst_theory} | {error} |", rate * 100.0, theory * 100.0);
    }

    println!("\ndelay 50ms jitter 10ms, 100k draws of the policy vs netem's table (ms):\n");
    println!("| distribution | q10 | q50 | q90 | q99 | worst error |");
    println!("|---|---|---|---|---|---|");
    for d in [DelayDistribution::Uniform, DelayDistribution::Normal, DelayDistribution::Pareto, DelayDistribution::Paretonormal] {
        let c = EffectiveConditions { delay_distribution: Some(d), ..model(serde_json::json!({"delay": "50ms", "jitter": "10ms"})) };
        let mut policy = Policy::new(c, Stream::new("bench/b/1/lan"));
        let start = Instant::now();
        let waits: Vec<f64> = (0..100_000u64)
            .filter_map(|i| match policy.decide(start + Duration::from_secs(i), 0, 1000) {
                Fate::Release { at, .. } => Some((at - (start + Duration::from_secs(i))).as_secs_f64() * 1000.0),
                _ => None,
            })
            .collect();
        let mut worst: f64 = 0.0;
        let cells: Vec<String> = [0.1, 0.5, 0.9, 0.99]
            .iter()
            .map(|q| {
                let (m, t) = (quantile(&waits, *q), distribution::quantile_micros(50_000.0, 10_000.0, Some(d), *q) / 1000.0);
                worst = worst.max((m - t).abs());
                format!("{m:.2} ({t:.2})")
            })
            .collect();
        println!("| {} | {} | {worst:.3} ms |", d.name(), cells.join(" | "));
    }

    // Real packets: one worker on A's egress, pings timed by the kernel.
    let base = {
        let r = pings(200, "0.005");
        quantile(&r, 0.5)
    };
    println!("\nthe same through a queue worker, real packets (unshaped p50 {base:.3} ms subtracted):\n");
    println!("| asked | measured | theory |");
    println!("|---|---|---|");
    let worker = QueueWorker::start(netns.to_path_buf(), 100, ge.clone(), Stream::new("bench/w/1/lan")).expect("queue binds");
    std::thread::sleep(Duration::from_millis(200));
    let lost: Vec<bool> = replies_to("10.250.0.2", 20_000, "0.0005").iter().map(Option::is_none).collect();
    drop(worker);
    let (rate, burst) = loss_runs(&lost);
    println!("| gilbertElliott p 5% r 40%, 20k echoes | loss {:.2}%, mean burst {burst:.2} | loss 11.11%, mean burst 2.50 |", rate * 100.0);
    for d in [DelayDistribution::Normal, DelayDistribution::Pareto] {
        let c = EffectiveConditions { delay_distribution: Some(d), ..model(serde_json::json!({"delay": "50ms", "jitter": "10ms"})) };
        let worker = QueueWorker::start(netns.to_path_buf(), 100, c, Stream::new("bench/w/1/lan")).expect("queue binds");
        std::thread::sleep(Duration::from_millis(200));
        let rtts: Vec<f64> = pings(5000, "0.002").into_iter().map(|r| r - base).collect();
        drop(worker);
        let show = |q: f64| format!("q{:.0} {:.2}", q * 100.0, quantile(&rtts, q));
        let theory = |q: f64| format!("q{:.0} {:.2}", q * 100.0, distribution::quantile_micros(50_000.0, 10_000.0, Some(d), q) / 1000.0);
        println!(
            "| delay 50ms jitter 10ms {}, {} echoes | {} | {} |",
            d.name(),
            rtts.len(),
            [0.1, 0.5, 0.9].map(show).join(" "),
            [0.1, 0.5, 0.9].map(theory).join(" ")
        );
    }

    // Per destination on one interface: 10.250.0.3 (a second address of B) far, the rest near.
    run_in(B, &["ip", "addr", "add", "10.250.0.3/24", "dev", "sl-bench-b"]);
    let linked = EffectiveConditions {
        toward: vec![Toward { to: "far".into(), addresses: vec!["10.250.0.3/32".into()], conditions: model(serde_json::json!({"delay": "50ms"})) }],
        ..model(serde_json::json!({"delay": "5ms"}))
    };
    let worker = QueueWorker::start(netns.to_path_buf(), 100, linked, Stream::new("bench/w/1/lan")).expect("queue binds");
    std::thread::sleep(Duration::from_millis(200));
    let near: Vec<f64> = replies_to("10.250.0.2", 500, "0.004").into_iter().flatten().map(|r| r - base).collect();
    let far: Vec<f64> = replies_to("10.250.0.3", 500, "0.004").into_iter().flatten().map(|r| r - base).collect();
    drop(worker);
    println!("| delay 5ms; toward 10.250.0.3: 50ms (one interface) | near p50 {:.2}, far p50 {:.2} | 5.00, 50.00 |", quantile(&near, 0.5), quantile(&far, 0.5));
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn thread_cpu_seconds(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let tick = 100.0; // USER_HZ on Linux
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).map(|c| c.trim() == name).unwrap_or(false))
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .map(|stat| {
            let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)) / tick
        })
        .sum()
}

fn main() {
    let _ns = Namespaces::up();
    let base = {
        let mut r = pings(200, "0.005");
        r.sort_by(f64::total_cmp);
        percentile(&r, 0.5)
    };
    for rule in rules("sl-bench-a", 100) {
        let args = rule.args("-A");
        run_in(A, &["iptables"].into_iter().chain(args.iter().map(String::as_str)).collect::<Vec<_>>());
    }
    let netns = std::path::PathBuf::from(format!("/run/netns/{A}"));
    println!("\nuserspace backend, delay on one egress (unshaped round trip p50 {base:.3} ms):\n");
    println!("| requested delay | measured p50 | measured p99 | error p50 |");
    println!("|---|---|---|---|");
    for ms in [1u64, 10, 100] {
        let cond = EffectiveConditions { delay: Some(swarmlab::spec::units::Duration::from_millis(ms)), ..Default::default() };
        let worker = QueueWorker::start(netns.clone(), 100, cond, Stream::new("bench/w/1/lan")).expect("queue binds");
        std::thread::sleep(Duration::from_millis(200));
        let mut rtts: Vec<f64> = pings(if ms == 100 { 200 } else { 500 }, "0.005").into_iter().map(|r| r - base).collect();
        drop(worker);
        rtts.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&rtts, 0.5), percentile(&rtts, 0.99));
        println!("| {ms} ms | {p50:.3} ms | {p99:.3} ms | {:+.3} ms |", p50 - ms as f64);
    }

    model_accuracy(&netns);

    // Throughput: UDP flood through a worker that only forwards (no condition).
    let worker = QueueWorker::start(netns.clone(), 100, EffectiveConditions::default(), Stream::new("bench/w/1/lan")).expect("queue binds");
    let flood = "import socket,time\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nend=time.time()+4\nn=0\nwhile time.time()<end:\n    try:\n        s.sendto(b'x'*64, ('10.250.0.2', 9)); n+=1\n    except OSError: pass\nprint(n)\n";
    let cpu0 = thread_cpu_seconds("shape-q100");
    let start = Instant::now();
    let seen0 = worker.counters.snapshot().seen;
    let sent: u64 = run_in(A, &["python3", "-c", flood]).trim().parse().unwrap_or(0);
    let elapsed = start.elapsed().as_secs_f64();
    let forwarded = worker.counters.snapshot().seen - seen0;
    let cpu = (thread_cpu_seconds("shape-q100") - cpu0) / elapsed * 100.0;
    drop(worker);
    println!("\nthroughput of one queue worker (64-byte UDP, 4 s):\n");
    println!("| offered (pkt/s) | forwarded (pkt/s) | worker CPU |");
    println!("|---|---|---|");
    println!("| {:.0} | {:.0} | {cpu:.0}% of one core |", sent as f64 / elapsed, forwarded as f64 / elapsed);

    // Memory: what each packet a delay holds costs the agent (the nfq crate's receive buffer
    // stays allocated while its packet waits for the verdict).
    let cond = EffectiveConditions { delay: Some(swarmlab::spec::units::Duration::from_millis(3000)), ..Default::default() };
    let worker = QueueWorker::start(netns.clone(), 100, cond, Stream::new("bench/w/1/lan")).expect("queue binds");
    std::thread::sleep(Duration::from_millis(200));
    let rss0 = rss_kb();
    let burst = "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(900):\n    s.sendto(b'x'*1200, ('10.250.0.2', 9))\n";
    run_in(A, &["python3", "-c", burst]);
    std::thread::sleep(Duration::from_millis(500));
    let held = worker.counters.snapshot().delayed;
    let rss1 = rss_kb();
    drop(worker);
    println!("\nmemory of held packets (1200-byte UDP, delay 3 s):\n");
    println!("| packets held | agent RSS before | while held | per held packet |");
    println!("|---|---|---|---|");
    println!("| {held} | {} MB | {} MB | {:.1} KB |", rss0 / 1024, rss1 / 1024, (rss1.saturating_sub(rss0)) as f64 / held.max(1) as f64);
}

/// This process's resident memory.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())))
        .unwrap_or(0)
}
