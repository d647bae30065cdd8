//! The deletion rule end to end (real Swarm and Redis): a lab disappears only because a person
//! removed its file. Each scenario asserts that no owned object was removed or recreated (the
//! lab's container ids are unchanged) and that status says why.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

const READY: Duration = Duration::from_secs(60);
/// The deletion rule's tests run labd with `--delete-grace 2` (the default is 5 s; the rule is
/// the same, and each "nothing happened" wait below is 3 s shorter).
const GRACE: Duration = Duration::from_secs(2);
/// Waiting this long past an event shows nothing was scheduled for removal (the deletion rule
/// needs two reads at least the grace apart).
const PAST_GRACE: Duration = Duration::from_secs(4);

fn start_labd(lab: &mut Lab) {
    lab.start_labd_args(&["--delete-grace", &GRACE.as_secs().to_string()]);
}

fn start(name: &str, services: &str) -> Lab {
    let mut lab = Lab::new();
    lab.cleanup.push(name.into());
    remove_lab_objects(name);
    lab.write(&format!("{name}.yaml"), &lab_yaml(name, services));
    start_labd(&mut lab);
    lab.wait_phase(name, "Ready", READY);
    lab
}

fn assert_untouched(lab: &Lab, name: &str, containers: &[String]) {
    assert_eq!(lab_containers(name), containers, "containers of {name} were removed or restarted");
    assert_eq!(lab.metric(name, "actions_remove"), 0, "labd removed something of {name}");
}

#[test]
fn hundreds_of_in_place_rewrites_never_remove_anything() {
    let lab = start("inplace", "    web: {replicas: 2}\n    api: {}\n");
    let containers = lab_containers("inplace");
    let text = lab_yaml("inplace", "    web: {replicas: 2}\n    api: {}\n");
    let path = lab.labs.join("inplace.yaml");
    let started = Instant::now();
    for i in 0..300 {
        // `cat > file`: truncate, then write; every tenth time in two pieces with a pause,
        // cut mid-line, as a slow writer or a network copy does.
        let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
        if i % 10 == 0 {
            let cut = text.len() / 2 + i % 7;
            f.write_all(&text.as_bytes()[..cut]).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(150));
            f.write_all(&text.as_bytes()[cut..]).unwrap();
        } else {
            f.write_all(text.as_bytes()).unwrap();
        }
        drop(f);
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("300 in-place rewrites in {:?}", started.elapsed());
    // An empty file left in place (a write that never finished) keeps the lab running, Invalid.
    std::fs::write(&path, "").unwrap();
    lab.wait_phase_saying("inplace", "Invalid", "has no document", READY);
    std::thread::sleep(PAST_GRACE);
    assert_eq!(lab.phase("inplace").unwrap(), "Invalid");
    std::fs::write(&path, &text).unwrap();
    lab.wait_phase("inplace", "Ready", READY);
    assert_untouched(&lab, "inplace", &containers);
}

#[test]
fn a_lab_moved_between_files_or_checked_out_again_does_not_flap() {
    let lab = start("moved", "    web: {}\n");
    let containers = lab_containers("moved");
    let text = lab_yaml("moved", "    web: {}\n");
    // Moved: the old file removed, the new one written a second later.
    lab.remove("moved.yaml");
    std::thread::sleep(Duration::from_secs(1));
    lab.write("sub/renamed.yaml", &text);
    // A Git checkout: every file removed, then added back.
    lab.wait_log("no file defines the lab; removing it unless", READY);
    std::thread::sleep(Duration::from_secs(1));
    lab.remove("sub/renamed.yaml");
    std::thread::sleep(Duration::from_millis(800));
    lab.write("sub/renamed.yaml", &text);
    std::thread::sleep(PAST_GRACE);
    assert_eq!(lab.phase("moved").unwrap(), "Ready");
    assert!(lab.status_json("moved").unwrap()["source"].as_str().unwrap().ends_with("sub/renamed.yaml"));
    assert_untouched(&lab, "moved", &containers);
    // Deleting it for good still removes it, after the grace period.
    let removed_at = Instant::now();
    lab.remove("sub/renamed.yaml");
    eventually("the lab's services removed", READY, || {
        if stack_services("moved").is_empty() { Ok(()) } else { Err("still there".into()) }
    });
    let took = removed_at.elapsed();
    eprintln!("file removed -> services removed: {took:?}");
    assert!(took >= GRACE, "removed after {took:?}, before the {GRACE:?} grace");
}

#[test]
fn a_dangling_link_or_a_broken_file_hides_nothing() {
    let mut lab = Lab::new();
    lab.cleanup.push("linked".into());
    remove_lab_objects("linked");
    let target = lab.dir.path().join("linked-target.yaml");
    std::fs::write(&target, lab_yaml("linked", "    web: {}\n")).unwrap();
    std::os::unix::fs::symlink(&target, lab.labs.join("linked.yaml")).unwrap();
    start_labd(&mut lab);
    lab.wait_phase("linked", "Ready", READY);
    let containers = lab_containers("linked");
    // The link's target vanishes (a ConfigMap-style swap caught half-way): the walk fails
    // on it, so the read is incomplete and proves nothing.
    std::fs::rename(&target, lab.dir.path().join("elsewhere.yaml")).unwrap();
    lab.wait_log("incomplete read of the labs directory", READY);
    std::thread::sleep(PAST_GRACE);
    assert_eq!(lab.phase("linked").unwrap(), "Ready");
    assert_untouched(&lab, "linked", &containers);
    std::fs::rename(lab.dir.path().join("elsewhere.yaml"), &target).unwrap();

    // The file overwritten in place by 8 GiB (sparse here; a stray dump, say): refused unread,
    // with its size, the lab kept as it runs, and labd's memory untouched by it.
    std::fs::File::create(&target).unwrap().set_len(8 << 30).unwrap();
    lab.wait_phase_saying("linked", "Invalid", "file is 8589934592 bytes; lab files are limited to 1048576 bytes", READY);
    let peak = lab.labd_peak_rss_kb();
    assert!(peak < 200_000, "labd's peak RSS is {peak} kB: the 8 GiB file was read");
    assert_untouched(&lab, "linked", &containers);
    std::fs::write(&target, lab_yaml("linked", "    web: {}\n")).unwrap();
    // Polled, not `labctl wait`: the target lies outside the watched directory, so labd reads
    // it again at the next resync, and the wait ends at once on a lab still Invalid.
    lab.wait_phase_saying("linked", "Ready", "", READY);

    // A deep file, a huge one and one of too many documents beside it: located errors, no
    // crash, nothing else touched.
    lab.write("deep.yaml", &"- ".repeat(20_000));
    lab.write("huge.yaml", &format!("a: \"{}\"\n", "x".repeat(2 << 20)));
    lab.write("docs.yaml", &"{}\n---\n".repeat(100_000));
    let out = lab.labctl(&["validate", lab.labs.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("deep.yaml:1:") && stdout.contains("nested deeper than 64 levels"), "{stdout}");
    assert!(stdout.contains("huge.yaml:1:1:") && stdout.contains("limited to"), "{stdout}");
    assert!(stdout.contains("docs.yaml:2000:1: yaml: more than 1000 documents"), "{stdout}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.phase("linked").unwrap(), "Ready");
    assert_untouched(&lab, "linked", &containers);
}

#[test]
fn restarts_with_a_missing_directory_a_broken_file_or_an_empty_directory_remove_nothing() {
    let mut lab = start("restarts", "    web: {}\n");
    let containers = lab_containers("restarts");
    let text = lab_yaml("restarts", "    web: {}\n");

    // 1. The directory is missing at start (a mount or a Git sync not there yet).
    lab.stop_labd();
    let away = lab.dir.path().join("labs-away");
    std::fs::rename(&lab.labs, &away).unwrap();
    start_labd(&mut lab);
    lab.wait_log("labs directory unreadable; keeping every lab as it is", READY);
    std::thread::sleep(PAST_GRACE);
    assert_untouched(&lab, "restarts", &containers);
    std::fs::rename(&away, &lab.labs).unwrap();
    eventually("the lab reconciled again", READY, || {
        let s = lab.status_json("restarts")?;
        if s["phase"] == "Ready" && lab.log_count("labd starting") == 2 { Ok(()) } else { Err(s.to_string()) }
    });

    // 2. The file cannot be parsed at start.
    lab.stop_labd();
    std::fs::write(lab.labs.join("restarts.yaml"), "apiVersion: [unclosed\n").unwrap();
    start_labd(&mut lab);
    lab.wait_phase_saying("restarts", "Invalid", "restarts.yaml:", READY);
    std::thread::sleep(PAST_GRACE);
    assert_eq!(lab.phase("restarts").unwrap(), "Invalid");
    assert_untouched(&lab, "restarts", &containers);

    // 2b. The file parses but is invalid at start (no last good version in memory yet).
    lab.stop_labd();
    std::fs::write(lab.labs.join("restarts.yaml"), text.replace("  services:\n", "  services:\n    bad: {replicas: -1}\n")).unwrap();
    start_labd(&mut lab);
    lab.wait_phase_saying("restarts", "Invalid", "replicas", READY);
    std::thread::sleep(PAST_GRACE);
    assert_eq!(lab.phase("restarts").unwrap(), "Invalid");
    assert_untouched(&lab, "restarts", &containers);

    // 3. The directory is empty at start: the lab is Orphaned, not pruned (no --allow-empty).
    lab.stop_labd();
    lab.remove("restarts.yaml");
    start_labd(&mut lab);
    lab.wait_phase_saying("restarts", "Orphaned", "empty at start", READY);
    std::thread::sleep(PAST_GRACE);
    assert_eq!(lab.phase("restarts").unwrap(), "Orphaned");
    assert_untouched(&lab, "restarts", &containers);

    // The file back: adopted as it is, nothing recreated.
    lab.write("restarts.yaml", &text);
    lab.wait_phase("restarts", "Ready", READY);
    assert_untouched(&lab, "restarts", &containers);
}

/// The labels of the lab's memory config on Swarm.
fn memory_labels(name: &str) -> serde_json::Value {
    let out = docker(&["config", "inspect", &format!("{name}_swarmlab-memory"), "--format", "{{json .Spec.Labels}}"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Waits until labd has written its heartbeat into Redis again, twice: each heartbeat is
/// followed by a read of the suspensions, so by then labd has looked at what Redis says now.
fn two_heartbeats(lab: &Lab) {
    for round in 0..2 {
        let before = lab.redis.cli(&["hget", "swarmlab:labd", "heartbeat"]);
        eventually(&format!("heartbeat {round}"), Duration::from_secs(15), || {
            let now = lab.redis.cli(&["hget", "swarmlab:labd", "heartbeat"]);
            if !now.is_empty() && now != before { Ok(()) } else { Err(format!("heartbeat {now:?}")) }
        });
    }
}

#[test]
fn a_redis_that_loses_everything_neither_resumes_a_suspended_lab_nor_restarts_its_schedule() {
    let name = "memo";
    let mut lab = Lab::new();
    lab.cleanup.push(name.into());
    remove_lab_objects(name);
    // Steps with nothing to shape: the clock is what is checked here.
    let schedule = "  schedule:\n    steps:\n    - at: 0s\n      service: web\n      restore: true\n    - at: 1h\n      service: web\n      restore: true\n";
    lab.write("memo.yaml", &format!("{}{schedule}", lab_yaml(name, "    web: {}\n")));
    lab.start_labd();
    let status = lab.wait_phase(name, "Ready", READY);
    let t0 = eventually("the schedule at step 1", READY, || {
        let s = lab.status_json(name)?;
        if s["schedule"]["step"] == 1 { Ok(s["schedule"]["startedAt"].clone()) } else { Err(s["schedule"].to_string()) }
    });
    assert!(t0.is_string(), "{status}");
    let out = lab.labctl(&["suspend", name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    lab.wait_phase(name, "Suspended", READY);
    // On Swarm: the suspension and the clock, in the labels of a config the lab owns.
    let labels = eventually("the memory written", READY, || {
        let l = memory_labels(name);
        if l["io.swarmlab.suspended"] == "true" { Ok(l) } else { Err(l.to_string()) }
    });
    assert_eq!(labels["io.swarmlab.lab"], name);
    assert_eq!(labels["io.swarmlab.managed-by"], "swarmlab");
    let written_t0 = labels["io.swarmlab.schedule-clock"].as_str().unwrap_or_default().split_once('@').map(|(_, t)| t.to_string()).unwrap_or_default();
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
    assert_eq!(parse(&written_t0), parse(t0.as_str().unwrap()), "{labels}");

    // The memory removed by hand (`docker config rm`): labd hears of it and writes it again.
    docker_ok(&["config", "rm", "memo_swarmlab-memory"]);
    let removed = std::time::Instant::now();
    eventually("the memory written again", READY, || {
        let l = memory_labels(name);
        if l == labels { Ok(()) } else { Err(l.to_string()) }
    });
    println!("memory removed by hand -> written again: {:?}", removed.elapsed());

    // Redis emptied under a running labd: a change by hand stays (still suspended).
    lab.redis.cli(&["flushall"]);
    two_heartbeats(&lab);
    docker_ok(&["service", "scale", "--detach", "memo_web=2"]);
    lab.wait_phase(name, "Suspended", READY);
    assert_eq!(docker_ok(&["service", "inspect", "memo_web", "--format", "{{.Spec.Mode.Replicated.Replicas}}"]), "2", "the suspended lab was changed");

    // Redis emptied and labd restarted: still suspended, the change by hand still there.
    lab.stop_labd();
    lab.redis.cli(&["flushall"]);
    lab.start_labd();
    lab.wait_phase(name, "Suspended", READY);
    assert_eq!(docker_ok(&["service", "inspect", "memo_web", "--format", "{{.Spec.Mode.Replicated.Replicas}}"]), "2", "the restarted labd changed the suspended lab");

    // `labctl resume`: reconciled again, and the schedule resumes on its clock, not from 0.
    let out = lab.labctl(&["resume", name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("resumed and repaired", READY, || {
        let s = lab.status_json(name)?;
        let replicas = docker_ok(&["service", "inspect", "memo_web", "--format", "{{.Spec.Mode.Replicated.Replicas}}"]);
        if s["phase"] == "Ready" && replicas == "1" && s["schedule"]["step"] == 1 { Ok(()) } else { Err(format!("{replicas} {s}")) }
    });
    let resumed = lab.status_json(name).unwrap();
    assert_eq!(parse(resumed["schedule"]["startedAt"].as_str().unwrap()), parse(t0.as_str().unwrap()), "the schedule started again");
    eventually("the memory says resumed", READY, || {
        let l = memory_labels(name);
        if l["io.swarmlab.suspended"] == "false" { Ok(()) } else { Err(l.to_string()) }
    });

    // The memory goes with the lab.
    lab.remove("memo.yaml");
    eventually("torn down with its memory", Duration::from_secs(60), || {
        let left = docker_ok(&["config", "ls", "-q", "--filter", "label=com.docker.stack.namespace=memo"]);
        if stack_services(name).is_empty() && left.is_empty() { Ok(()) } else { Err(format!("configs {left:?}")) }
    });
}

#[test]
fn a_leader_that_cannot_renew_its_lease_stops_before_the_lease_can_pass_on() {
    let mut lab = start("fenced", "    web: {}\n");
    let containers = lab_containers("fenced");
    let port = lab.redis.port;
    // The harness runs labd with a 3 s lease: its renew deadline is 2 s.
    let _ = lab.redis.cli(&["shutdown", "nosave"]);
    let cut = Instant::now();
    lab.wait_log("renew deadline", Duration::from_secs(3));
    let took = cut.elapsed();
    eprintln!("Redis gone -> labd stopped acting: {took:?} (lease 3 s)");
    assert!(took < Duration::from_secs(3), "still acting {took:?} after losing Redis: a standby could take the lease meanwhile");
    lab.wait_log("stopped reconciling; standing by", Duration::from_secs(2));
    assert!(lab.labd_exits_within(Duration::from_millis(100)).is_none(), "labd should stand by, not exit");
    // Redis back, empty (no persistence): labd leads again and writes its status back.
    lab.redis = Redis::start_on(port);
    lab.wait_phase("fenced", "Ready", READY);
    assert_untouched(&lab, "fenced", &containers);
}

/// A TCP proxy to Redis that can be cut: the leader's own network path to Redis fails while
/// everyone else still reaches it (a partition, not an outage).
struct Partition {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Partition {
    fn to(upstream: u16) -> Partition {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let (c, k) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if c.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let mut list = k.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Partition { port, cut, conns }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// When `needle` first shows in `log` (polled every 10 ms).
fn first_seen(log: &std::path::Path, needle: &str, timeout: Duration) -> Instant {
    let start = Instant::now();
    loop {
        if std::fs::read_to_string(log).unwrap_or_default().contains(needle) {
            return Instant::now();
        }
        assert!(start.elapsed() < timeout, "`{needle}` never appeared in {}", log.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_leader_cut_off_from_redis_stops_before_the_standby_takes_over() {
    let mut lab = Lab::new();
    lab.cleanup.push("split".into());
    remove_lab_objects("split");
    lab.write("split.yaml", &lab_yaml("split", "    web: {replicas: 2}\n"));
    let partition = Partition::to(lab.redis.port);
    let labs = lab.labs.clone();
    lab.start_labd_with(&labs, &partition.url());
    lab.wait_phase("split", "Ready", READY);
    let standby_log = lab.dir.path().join("standby.log");
    let mut standby = lab.spawn_standby(&standby_log);
    first_seen(&standby_log, "standing by", READY);
    let containers = lab_containers("split");
    let generation = lab.redis.cli(&["get", "swarmlab:leader:generation"]);

    partition.cut();
    let stopped = first_seen(&lab.log, "renew deadline", Duration::from_secs(10));
    let taken = first_seen(&standby_log, "leader lease acquired", Duration::from_secs(10));
    eprintln!("old leader stopped {:?} before the standby took the lease", taken.saturating_duration_since(stopped));
    assert!(stopped < taken, "the standby took over while the old leader still acted");
    assert_eq!(lab.redis.cli(&["get", "swarmlab:leader:generation"]).parse::<u64>().unwrap(), generation.parse::<u64>().unwrap() + 1);
    // The new leader adopts the lab as it is: nothing removed, recreated or restarted.
    let reconciles = lab.metric("split", "reconciles");
    eventually("the new leader reconciling the lab", READY, || {
        let s = lab.status_json("split")?;
        if s["phase"] == "Ready" && lab.metric("split", "reconciles") > reconciles { Ok(()) } else { Err(s.to_string()) }
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab_containers("split"), containers);
    assert_eq!(lab.metric("split", "actions_remove"), 0);
    assert_eq!(lab.metric("split", "actions_update"), 0);
    let _ = standby.kill();
    let _ = standby.wait();
}
