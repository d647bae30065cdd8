//! Accuracy and throughput of the userspace shaping backend, on two network namespaces joined
//! by a veth pair (no Docker needed; run as root): requested vs measured delay at p50/p99,
//! and the packets per second one queue worker forwards.
//! Run: `cargo bench --bench shaping`.

use std::process::Command;
use std::time::{Duration, Instant};

use swarmlab::shaping::userspace::{rules, QueueWorker};
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
    let out = run_in(A, &["ping", "-n", "-c", &count.to_string(), "-i", interval, "10.250.0.2"]);
    out.lines().filter_map(|l| l.split("time=").nth(1)).filter_map(|t| t.split_whitespace().next()?.parse().ok()).collect()
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
        let worker = QueueWorker::start(netns.clone(), 100, cond).expect("queue binds");
        std::thread::sleep(Duration::from_millis(200));
        let mut rtts: Vec<f64> = pings(if ms == 100 { 200 } else { 500 }, "0.005").into_iter().map(|r| r - base).collect();
        drop(worker);
        rtts.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&rtts, 0.5), percentile(&rtts, 0.99));
        println!("| {ms} ms | {p50:.3} ms | {p99:.3} ms | {:+.3} ms |", p50 - ms as f64);
    }

    // Throughput: UDP flood through a worker that only forwards (no condition).
    let worker = QueueWorker::start(netns.clone(), 100, EffectiveConditions::default()).expect("queue binds");
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
}
