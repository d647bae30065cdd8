//! `labctl events` against a real Redis holding events as labd writes them (labd writing them
//! is tests/e2e_reconcile.rs's): every lab's merged in time order, the type filter, a lab that
//! is not there, and a watch that follows new events and labs that appear meanwhile.

mod common;

use std::io::BufRead;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::Redis;

fn add(redis: &Redis, lab: &str, second: u32, kind: &str, reason: &str, message: &str) {
    let time = format!("2026-12-05T10:00:{second:02}Z");
    redis.cli(&["xadd", &format!("swarmlab:lab:{lab}:events"), "*", "time", &time, "kind", kind, "reason", reason, "message", message]);
}

fn labctl(redis: &Redis, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labctl")).args(args).env("REDIS_URL", redis.url()).output().expect("labctl")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn every_lab_s_events_merge_in_time_order_and_a_watch_follows_new_ones_and_new_labs() {
    let redis = Redis::start();
    redis.cli(&["sadd", "swarmlab:labs", "a", "b"]);
    add(&redis, "a", 2, "Normal", "Applied", "create service a_web (1 replicas)");
    add(&redis, "b", 1, "Warning", "DriftRepaired", "1 services changed outside labd were restored");
    add(&redis, "a", 3, "Normal", "Ready", "1/1 services running");

    let all = text(&labctl(&redis, &["events"]));
    let rows: Vec<&str> = all.lines().collect();
    assert_eq!(rows.len(), 4, "{all}");
    assert!(rows[0].starts_with("TIME") && rows[0].contains("LAB"), "{all}");
    assert!(rows[1].contains(" b ") && rows[2].contains("create service a_web") && rows[3].ends_with("1/1 services running"), "{all}");

    let warnings = text(&labctl(&redis, &["events", "--types", "warning", "-o", "json"]));
    let lines: Vec<serde_json::Value> = warnings.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 1, "{warnings}");
    assert_eq!((lines[0]["lab"].as_str(), lines[0]["reason"].as_str()), (Some("b"), Some("DriftRepaired")));

    let one = text(&labctl(&redis, &["events", "a"]));
    assert!(!one.contains("LAB") && one.lines().count() == 3, "{one}");
    let missing = labctl(&redis, &["events", "nosuch"]);
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("no lab `nosuch`"), "{missing:?}");

    // A watch: the last event of each lab first (it watches from there), then what comes.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["events", "--watch", "-n", "1", "-o", "json"])
        .env("REDIS_URL", redis.url())
        .stdout(Stdio::piped())
        .spawn()
        .expect("labctl events --watch");
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || std::io::BufReader::new(stdout).lines().map_while(Result::ok).try_for_each(|l| tx.send(l)));
    let next = || -> serde_json::Value { serde_json::from_str(&lines.recv_timeout(Duration::from_secs(10)).expect("a line in time")).expect("JSON") };
    let first: Vec<String> = (0..2).map(|_| next()["message"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(first, ["1 services changed outside labd were restored", "1/1 services running"]);
    add(&redis, "a", 4, "Warning", "TasksFailing", "web: failed: task: non-zero exit (3)");
    assert_eq!(next()["reason"], "TasksFailing");
    // A lab created meanwhile is followed from its first event.
    redis.cli(&["sadd", "swarmlab:labs", "c"]);
    add(&redis, "c", 5, "Normal", "Applied", "create network c_default");
    let new_lab = next();
    assert_eq!((new_lab["lab"].as_str(), new_lab["message"].as_str()), (Some("c"), Some("create network c_default")));
    // Redis restarted under the watch (back empty: no persistence here): it goes on.
    let port = redis.port;
    redis.cli(&["shutdown", "nosave"]);
    drop(redis);
    let redis = Redis::start_on(port);
    redis.cli(&["sadd", "swarmlab:labs", "a"]);
    add(&redis, "a", 6, "Normal", "Ready", "1/1 services running again");
    assert_eq!(next()["message"], "1/1 services running again");
    let _ = watch.kill();
    let _ = watch.wait();
}
