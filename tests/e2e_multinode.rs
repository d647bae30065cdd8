//! End-to-end on a real three-node swarm (scripts/multinode.sh): placement over workers,
//! cross-node service names, shaping on every node, a node lost and back, and tasks frozen,
//! thawed and killed by each worker's agent, one capture of every node's tasks and `labctl exec`
//! in every node's tasks through the agents.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const MANAGER: &str = "unix:///run/slmn/n1/docker.sock";

fn script() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/multinode.sh"))
}

fn multinode(args: &[&str]) {
    let out = Command::new("bash").arg(script()).args(args).output().unwrap();
    assert!(out.status.success(), "multinode.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn node_docker(node: u32, args: &[&str]) -> String {
    let out = Command::new(DOCKER)
        .arg("-H")
        .arg(format!("unix:///run/slmn/n{node}/docker.sock"))
        .args(args)
        .env("DOCKER_API_VERSION", "1.41")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Cluster {
    children: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
        let _ = Command::new("bash").arg(script()).arg("down").output();
    }
}

fn spawn(args: &[&str], log: PathBuf) -> Child {
    Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(args)
        .env("DOCKER_API_VERSION", "1.41")
        .env("LABD_LEASE_TTL", "3")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn a_lab_spreads_over_workers_is_shaped_on_every_node_and_survives_a_node_loss() {
    multinode(&["up", "3"]);
    let lab = Lab::new();
    let mut cluster = Cluster { children: vec![] };
    let redis = lab.redis.url();
    let labs = lab.labs.to_str().unwrap().to_string();
    cluster.children.push(spawn(
        &["--labs", &labs, "--redis", &redis, "--docker-host", MANAGER, "--node", "slmn-n1", "--resync", "5"],
        lab.dir.path().join("labd.log"),
    ));
    for n in [2, 3] {
        let host = format!("unix:///run/slmn/n{n}/docker.sock");
        let node = format!("slmn-n{n}");
        // n3's agent runs `labctl exec` commands from other nodes; n2's (by default) does not.
        let allow: &[&str] = if n == 3 { &["--allow-exec"] } else { &[] };
        cluster.children.push(spawn(&[&["agent", "--redis", &redis, "--docker-host", &host, "--node", &node], allow].concat(), lab.dir.path().join(format!("agent{n}.log"))));
    }
    lab.write(
        "spread.yaml",
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: spread}\nspec:\n  defaults: {image: labbox:latest, init: true, stopGracePeriod: 1s, networks: [lan]}\n  networks:\n    lan: {conditions: {delay: 20ms}}\n  services:\n    w:\n      replicas: 4\n      command: [sleep, \"100000\"]\n      placement: {constraints: [\"node.role==worker\"], maxReplicasPerNode: 2}\n    m:\n      replicas: 2\n      command: [sleep, \"100000\"]\n      placement: {constraints: [\"node.role==worker\"]}\n  schedule:\n    start: manual\n    steps:\n    - {at: 2s, service: w, pause: true}\n    - {at: 6s, service: w, pause: false}\n    - {at: 10s, service: w, kill: true}\n",
    );
    wait_shaped(&lab, "spread", Duration::from_secs(120));

    let placement = node_docker(1, &["service", "ps", "spread_w", "--filter", "desired-state=running", "--format", "{{.Node}}"]);
    let mut nodes: Vec<&str> = placement.lines().collect();
    nodes.sort();
    assert_eq!(nodes, ["slmn-n2", "slmn-n2", "slmn-n3", "slmn-n3"], "two tasks on each worker, none on the manager");
    let reports = task_reports(&lab, "spread");
    let mut shaped_on: Vec<String> = reports.iter().filter(|r| r["service"] == "w").map(|r| r["node"].as_str().unwrap().to_string()).collect();
    shaped_on.sort();
    assert_eq!(shaped_on, ["slmn-n2", "slmn-n2", "slmn-n3", "slmn-n3"], "every task shaped by its node's agent");

    // From a task on n2, every task by the service's name: 20 ms on each egress.
    let out = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["probe", "spread", "w", "--to", "w", "-c", "20", "--interval", "20", "-o", "json"])
        .env("REDIS_URL", &redis)
        .env("DOCKER_HOST", "unix:///run/slmn/n2/docker.sock")
        .env("DOCKER_API_VERSION", "1.41")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 4, "the service name resolves to every task across nodes: {rows:?}");
    let m_nodes = node_docker(1, &["service", "ps", "spread_m", "--filter", "desired-state=running", "--format", "{{.Node}}"]);
    assert!(m_nodes.contains("slmn-n3"), "one task of m on the worker that will be lost: {m_nodes}");
    let remote: Vec<f64> = rows.iter().map(|r| r["stats"]["avg_ms"].as_f64().unwrap()).filter(|rtt| *rtt > 1.0).collect();
    assert_eq!(remote.len(), 3, "three other tasks, shaped: {rows:?}");
    for rtt in remote {
        assert!((rtt - 40.0).abs() <= 6.0, "cross-node rtt {rtt} ms, want 40 ms ± 15%: {rows:?}");
        assert_eq!(rows.iter().map(|r| r["stats"]["loss_percent"].as_f64().unwrap()).sum::<f64>(), 0.0);
    }

    // From the manager, which runs no task of w: every task of w probes through its node's
    // agent (n2's too, which runs no commands for other nodes: a probe runs only ping), each
    // row beside what the lab asks.
    let out = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["probe", "spread", "w", "--to", "w", "-c", "10", "--interval", "20", "-o", "json"])
        .env("REDIS_URL", &redis)
        .env("DOCKER_HOST", MANAGER)
        .env("DOCKER_API_VERSION", "1.41")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut senders: Vec<&str> = rows.iter().map(|r| r["container"].as_str().unwrap()).collect();
    senders.sort();
    senders.dedup();
    assert_eq!(senders, ["w.1", "w.2", "w.3", "w.4"], "every task of w probed from, on both workers: {rows:?}");
    assert_eq!(rows.len(), 16, "each toward the four tasks of w: {rows:?}");
    for row in rows.iter().filter(|r| r["stats"]["avg_ms"].as_f64().unwrap() > 1.0) {
        let (rtt, asked) = (row["stats"]["avg_ms"].as_f64().unwrap(), row["asked"]["rtt_ms"].as_f64().unwrap());
        assert_eq!(asked, 40.0, "the lab asks 20 ms each way: {row}");
        assert!((rtt - asked).abs() <= 6.0, "relayed rtt {rtt} ms, want 40 ms ± 15%: {row}");
    }
    assert_eq!(rows.iter().filter(|r| r["stats"]["avg_ms"].as_f64().unwrap() > 1.0).count(), 12, "three other tasks from each: {rows:?}");

    // `labctl exec` of every task of w: through n2's daemon, its two tasks run there and n3's
    // two by n3's agent (it allows it), every line labelled; through the manager, which runs no
    // task of w, n3's two by its agent, and n2's named as refused by n2's agent, with what to
    // do. One task on n3 from the manager: its output as it is, its exit code labctl's.
    let mut on_n3: Vec<String> = task_reports(&lab, "spread").iter().filter(|r| r["service"] == "w" && r["node"] == "slmn-n3").map(|r| format!("w.{}", r["slot"])).collect();
    on_n3.sort();
    assert_eq!(on_n3.len(), 2, "{on_n3:?}");
    let exec = |host: &str, target: &str, command: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_labctl"))
            .args(["exec", "spread", target, "--"])
            .args(command)
            .env("REDIS_URL", &redis)
            .env("DOCKER_HOST", host)
            .env("DOCKER_API_VERSION", "1.41")
            .output()
            .unwrap()
    };
    let hostnames = |stdout: &[u8]| -> Vec<String> {
        let mut labels: Vec<String> = String::from_utf8_lossy(stdout).lines().filter_map(|l| l.split_once(" | ")).filter(|(_, name)| name.len() == 12).map(|(label, _)| label.trim().to_string()).collect();
        labels.sort();
        labels
    };
    let out = exec("unix:///run/slmn/n2/docker.sock", "w", &["hostname"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(hostnames(&out.stdout), ["w.1", "w.2", "w.3", "w.4"], "every task of w, two of them through n3's agent: {}", String::from_utf8_lossy(&out.stdout));
    let hostname_of: std::collections::BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_once(" | ")).map(|(label, name)| (label.trim().to_string(), name.to_string())).collect();
    let out = exec(MANAGER, "w", &["hostname"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert_eq!(hostnames(&out.stdout), on_n3, "n3's tasks run through its agent: {}\n{said}", String::from_utf8_lossy(&out.stdout));
    assert!(said.contains("failed in 2 of 4 tasks") && said.matches("--allow-exec").count() == 2 && said.contains("slmn-n2"), "n2's tasks named, refused by its agent: {said}");
    let out = exec(MANAGER, &on_n3[0], &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref(), String::from_utf8_lossy(&out.stderr).as_ref()), (Some(3), "out\n", "err\n"), "one task on n3 through its agent, as docker exec there");
    // `-i` with a task on n3, from the manager: labctl's input reaches the command through
    // n3's agent, and its end ends the command's input.
    let attached = |program: &str, args: &[&str], stderr: Stdio| {
        Command::new(program)
            .args(args)
            .env("REDIS_URL", &redis)
            .env("DOCKER_HOST", MANAGER)
            .env("DOCKER_API_VERSION", "1.41")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap()
    };
    let labctl = env!("CARGO_BIN_EXE_labctl");
    let mut fed = attached(labctl, &["exec", "-i", "spread", &on_n3[0], "--", "sh", "-c", "cat; echo end of input"], Stdio::piped());
    {
        use std::io::Write;
        let mut input = fed.stdin.take().unwrap();
        input.write_all(b"first line\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        input.write_all(b"second line\n").unwrap();
    }
    let out = fed.wait_with_output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "first line\nsecond line\nend of input\n"), "{}", String::from_utf8_lossy(&out.stderr));
    // A labctl killed while its command reads its input: n3's agent hears nothing more and
    // ends that input within 10 s, so the command ends rather than waiting for ever.
    let mut orphaned = attached(labctl, &["exec", "-i", "spread", &on_n3[0], "--", "sh", "-c", "echo reading; cat > /dev/null; echo ended > /input-ended"], Stdio::null());
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(orphaned.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "reading\n");
    }
    let killed = std::time::Instant::now();
    orphaned.kill().unwrap();
    let _ = orphaned.wait();
    eventually("n3's agent to end the input of a killed labctl's command", Duration::from_secs(25), || {
        let out = exec(MANAGER, &on_n3[0], &["cat", "/input-ended"]);
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).to_string()) }
    });
    println!("input of a killed labctl's command ended {:.1?} after", killed.elapsed());
    // `-it`: a terminal on n3, sized as labctl's (`script` gives labctl one, 33 rows by 101
    // columns), Ctrl-C typed into it reaching the command there. The size arrives just after
    // the command starts (as with `docker exec -t` on API 1.41, whose CLI resizes once the exec
    // has started): the command waits until its terminal has one.
    let typed = format!("stty rows 33 cols 101; {labctl} exec -it spread {} -- sh -c 'until stty size 2>/dev/null | grep -qv \"^0 0\"; do sleep 0.05; done; stty size; tty; trap \"echo interrupted; exit 5\" INT; echo waiting; sleep 30 & wait'", on_n3[0]);
    let mut terminal = attached("script", &["-qfec", &typed, "/dev/null"], Stdio::piped());
    let mut keys = terminal.stdin.take().unwrap();
    let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (shown, mut stdout) = (shown.clone(), terminal.stdout.take().unwrap());
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                shown.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        })
    };
    eventually("the command on n3 to wait on its terminal", Duration::from_secs(20), || {
        let now = shown.lock().unwrap().clone();
        if now.contains("waiting") { Ok(()) } else { Err(now) }
    });
    {
        use std::io::Write;
        keys.write_all(b"\x03").unwrap();
        keys.flush().unwrap();
    }
    let status = terminal.wait().unwrap();
    reader.join().unwrap();
    let shown = shown.lock().unwrap().clone();
    assert!(shown.contains("33 101") && shown.contains("/dev/pts/") && shown.contains("interrupted"), "a terminal on n3, sized as labctl's, Ctrl-C reaching it: {shown:?}");
    assert_eq!(status.code(), Some(5), "the command's exit code: {shown:?}");

    // `labctl cp` through n2's daemon: each task's own file, n3's two through n3's agent; and
    // from the manager a 3 MB file made in a task on n3, relayed in pieces, arriving whole.
    let cp = |host: &str, source: &str, dest: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_labctl"))
            .args(["cp", "spread", source, dest.to_str().unwrap()])
            .env("REDIS_URL", &redis)
            .env("DOCKER_HOST", host)
            .env("DOCKER_API_VERSION", "1.41")
            .output()
            .unwrap()
    };
    let dest = lab.dir.path().join("copies");
    let out = cp("unix:///run/slmn/n2/docker.sock", "w:/etc/hostname", &dest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (label, hostname) in &hostname_of {
        let copied = std::fs::read_to_string(dest.join(label).join("hostname")).unwrap_or_default();
        assert_eq!(copied.trim(), hostname, "{label}'s own file: {}", String::from_utf8_lossy(&out.stdout));
    }
    let made = exec(MANAGER, &on_n3[0], &["sh", "-c", "head -c 3000000 /dev/urandom > /big && sha256sum /big"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let sum = String::from_utf8_lossy(&made.stdout).split_whitespace().next().unwrap_or_default().to_string();
    let started = std::time::Instant::now();
    let out = cp(MANAGER, &format!("{}:/big", on_n3[0]), &dest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let big = std::fs::read(dest.join(&on_n3[0]).join("big")).unwrap();
    use sha2::Digest;
    let got: String = sha2::Sha256::digest(&big).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!((big.len(), got), (3_000_000, sum), "the file made on n3, whole");
    println!("labctl cp through n3's agent: 3 MB in {:.2?}", started.elapsed());

    // `labctl top` from anywhere Redis is: every task of the lab with its node, sampled by
    // that node's agent, its traffic under the lab's network name.
    let tops = eventually("labctl top to list the six tasks with their nodes", Duration::from_secs(30), || {
        let out = lab.labctl(&["top", "spread", "-o", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
        let mut seen: Vec<String> = rows.iter().filter(|r| r["networks"][0]["network"] == "lan").map(|r| format!("{}@{}", r["service"].as_str().unwrap_or("?"), r["node"].as_str().unwrap_or("?"))).collect();
        seen.sort();
        if seen.len() == 6 { Ok(seen) } else { Err(format!("{seen:?}")) }
    });
    assert_eq!(tops.iter().filter(|t| t.starts_with("w@")).cloned().collect::<Vec<_>>(), ["w@slmn-n2", "w@slmn-n2", "w@slmn-n3", "w@slmn-n3"], "{tops:?}");
    assert!(tops.iter().all(|t| !t.ends_with("slmn-n1")), "nothing on the manager: {tops:?}");

    // Two captures at once while a task on n2 pings every task of w (20 pings each, one target
    // after the other): one on n2 (its two tasks there, n3's through n3's agent), a line per
    // frame; one on the manager, which runs no task of w (all four through the agents), to a
    // pcapng file. Pinging starts once the manager's capture has all four taps.
    let capture = |host: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_labctl"))
            .args(["capture", "spread", "w"])
            .args(args)
            .env("REDIS_URL", &redis)
            .env("DOCKER_HOST", host)
            .env("DOCKER_API_VERSION", "1.41")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let on_n2 = capture("unix:///run/slmn/n2/docker.sock", &["--duration", "9s"]);
    let file = lab.dir.path().join("spread.pcapng");
    let mut from_manager = capture(MANAGER, &["--duration", "9s", "-w", file.to_str().unwrap()]);
    let (said_tx, said_rx) = std::sync::mpsc::channel::<String>();
    let stderr = from_manager.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = said_tx.send(line);
        }
    });
    let mut manager_said = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while manager_said.iter().filter(|l: &&String| l.contains("now also w.")).count() < 4 {
        match said_rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(line) => manager_said.push(line),
            Err(_) => panic!("the manager's capture did not open the four taps through the agents: {manager_said:#?}"),
        }
    }
    let mut pings = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["probe", "spread", "w", "--to", "w", "-c", "20", "--interval", "50"])
        .env("REDIS_URL", &redis)
        .env("DOCKER_HOST", "unix:///run/slmn/n2/docker.sock")
        .env("DOCKER_API_VERSION", "1.41")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = on_n2.wait_with_output().unwrap();
    let manager_done = from_manager.wait().unwrap();
    let _ = pings.kill();
    let _ = pings.wait();
    // Every line it wrote: the reader thread ends (and drops its sender) at the pipe's end, which
    // may come a moment after the process has exited (`try_iter` here once missed the summary).
    manager_said.extend(said_rx.iter());
    let manager_said = manager_said.join("\n");

    let (lines, said) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(out.status.success(), "{said}");
    assert!(said.contains("on slmn-n2, w.") && said.contains("on slmn-n3 through its agent") && said.contains(" frames;"), "{said}");
    assert!(!said.contains("not captured") && !said.contains("lost on the way"), "{said}\n{lines}");
    for t in &on_n3 {
        assert!(lines.lines().any(|l| l.starts_with("=== ") && l.contains(&format!("capturing {t}/lan (on slmn-n3, through its agent)"))), "{t} joins through n3's agent:\n{lines}");
    }
    let echoes: Vec<&str> = lines.lines().filter(|l| l.contains("ICMP echo")).collect();
    assert!(!echoes.is_empty(), "{lines}");
    assert!(echoes.iter().all(|l| !l.contains(" 10.")), "every address named by its task:\n{lines}");
    // A frame seen in a task on n3 itself (its tap is the line's second column), not only on
    // n2's end of the echo.
    let tap_of = |l: &str| l.split_whitespace().nth(1).unwrap_or("").to_string();
    assert!(
        echoes.iter().any(|l| on_n3.iter().any(|t| tap_of(l) == format!("{t}/lan") && l.contains(&format!("> {t}: ICMP echo request")))),
        "pings arriving in the tasks on n3, captured there:\n{lines}"
    );

    assert!(manager_done.success(), "{manager_said}");
    assert!(manager_said.contains("on slmn-n2, slmn-n3 through their agents") && manager_said.contains("0 dropped by the kernel") && !manager_said.contains("lost"), "{manager_said}");
    let (interfaces, names, frames) = read_capture(&file);
    let mut sorted = interfaces.clone();
    sorted.sort();
    assert_eq!(sorted, ["w.1/lan", "w.2/lan", "w.3/lan", "w.4/lan"], "each task of w, on both workers");
    assert!(names.len() >= 6, "every task's address named: {names:?}");
    // Each echo request toward a task on n3 is seen leaving its sender on n2 (after the sender's
    // 20 ms, which a task's conditions add before its interface) and arriving on n3 a moment
    // later, then its reply leaving n3 20 ms after that (n3's task's own condition): the frames
    // of both nodes on one clock, each stamped by its kernel and relayed intact.
    let on_n3_tap = |tap: usize| on_n3.iter().any(|t| interfaces[tap] == format!("{t}/lan"));
    let (mut crossings, mut held) = (Vec::new(), Vec::new());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for arrived in frames.iter().filter(|f| f.3 == 8 && !f.2 && on_n3_tap(f.0)) {
        // The nearest before it: a later ping process may reuse an ICMP id.
        if let Some(sent) = frames.iter().filter(|f| f.3 == 8 && f.2 && !on_n3_tap(f.0) && f.4 == arrived.4 && f.5 == arrived.5 && f.1 <= arrived.1).max_by_key(|f| f.1) {
            crossings.push(ms(arrived.1) - ms(sent.1));
        }
        if let Some(reply) = frames.iter().filter(|f| f.3 == 0 && f.2 && f.0 == arrived.0 && f.4 == arrived.4 && f.5 == arrived.5 && f.1 >= arrived.1).min_by_key(|f| f.1) {
            held.push(ms(reply.1) - ms(arrived.1));
        }
    }
    println!("capture through the agents: {} echo requests seen at both ends across nodes, {crossings:.2?} ms apart; held on n3 {held:.1?} ms", crossings.len());
    assert!(crossings.len() >= 20 && held.len() >= 20, "the pings to n3's tasks, seen at both ends: {crossings:?} {held:?}");
    assert!(crossings.iter().all(|ms| (0.0..5.0).contains(ms)), "n2 out, then n3 in, within a few ms (one host): {crossings:?}");
    assert!(held.iter().all(|ms| (19.5..35.0).contains(ms)), "n3's task holds its reply 20 ms: {held:?}");

    // A worker's daemon goes away: Degraded, naming the node; back: Ready and shaped again.
    multinode(&["stop-node", "3"]);
    let lost_at = std::time::Instant::now();
    // A task that can move (m has no per-node limit) is rescheduled on n2 and shaped there.
    let rescheduled = eventually("m's tasks both shaped on slmn-n2", Duration::from_secs(90), || {
        let on_n2 = task_reports(&lab, "spread")
            .iter()
            .filter(|r| r["service"] == "m" && r["node"] == "slmn-n2")
            .filter(|r| r["attachments"].as_array().is_some_and(|a| a.iter().all(|a| a["applied"] == a["desired"])))
            .count();
        if on_n2 == 2 { Ok(lost_at.elapsed()) } else { Err(format!("{on_n2} of m's tasks shaped on n2")) }
    });
    println!("FAULT | worker node lost (its daemon stopped) with a task that can move | {:.1} s to the moved task shaped | nothing |", rescheduled.as_secs_f64());
    let degraded = eventually("Degraded naming the node", Duration::from_secs(60), || {
        let s = lab.status_json("spread")?;
        let m = s["message"].as_str().unwrap_or_default().to_string();
        if s["phase"] == "Degraded" && m.contains("slmn-n3") { Ok(s) } else { Err(format!("{} {m}", s["phase"])) }
    });
    eprintln!("degraded: {}", degraded["message"]);
    multinode(&["start-node", "3"]);
    wait_shaped(&lab, "spread", Duration::from_secs(120));
    let mut shaped_on: Vec<String> = task_reports(&lab, "spread").iter().filter(|r| r["service"] == "w").map(|r| r["node"].as_str().unwrap().to_string()).collect();
    shaped_on.sort();
    assert_eq!(shaped_on, ["slmn-n2", "slmn-n2", "slmn-n3", "slmn-n3"], "replacements shaped");

    // The schedule freezes, thaws, then kills w's tasks: each worker's agent acts on its own.
    // Steps 4 s apart: each is checked (8 `docker inspect`s, slow on a busy machine) before the
    // next comes.
    let w_on = |node: u32| -> Vec<String> {
        node_docker(node, &["ps", "-q", "--filter", "label=com.docker.swarm.service.name=spread_w", "--filter", "status=running"]).lines().map(str::to_string).collect()
    };
    let paused_on = |node: u32, ids: &[String]| -> Vec<String> {
        ids.iter().map(|id| node_docker(node, &["inspect", id, "--format", "{{.State.Paused}}"])).collect()
    };
    let before: Vec<Vec<String>> = [2, 3].map(w_on).to_vec();
    assert_eq!(before.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2], "{before:?}");
    // labd reads a `labctl start` at once (labctl publishes it): its first step, 2 s later, is
    // seen in force.
    let out = lab.labctl(&["start", "spread"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("the start read", Duration::from_secs(2), || {
        let s = lab.status_json("spread")?;
        if s["schedule"]["startedAt"].is_string() { Ok(()) } else { Err(s["schedule"].to_string()) }
    });
    let step_applied = |step: u64| {
        eventually(&format!("step {step} applied"), Duration::from_secs(30), || {
            let s = lab.status_json("spread")?;
            let c = &s["schedule"];
            if c["step"] == step && c["appliedAfterMs"].is_u64() { Ok(()) } else { Err(c.to_string()) }
        })
    };
    step_applied(1);
    assert_eq!([paused_on(2, &before[0]), paused_on(3, &before[1])].concat(), ["true"; 4], "every task of w frozen, on both workers");
    step_applied(2);
    assert_eq!([paused_on(2, &before[0]), paused_on(3, &before[1])].concat(), ["false"; 4], "thawed");
    step_applied(3);
    for (node, old) in [(2, &before[0]), (3, &before[1])] {
        let now = w_on(node);
        assert!(old.iter().all(|id| !now.contains(id)), "n{node}: the tasks running before the kill are gone: {old:?} → {now:?}");
    }
    wait_shaped(&lab, "spread", Duration::from_secs(60));
    assert_eq!(task_reports(&lab, "spread").iter().filter(|r| r["service"] == "w").count(), 4, "Swarm ran w's four tasks again, reported");
}
