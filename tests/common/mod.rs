//! The end-to-end harness: a real Docker Swarm (started by scripts/setup.sh), a Redis server of
//! the test's own on a free port, a labs directory in a temp dir, and `labd` as a child process.
//! Checks go through the `docker` CLI and `labctl`, as a user would make them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DOCKER: &str = "/usr/bin/docker";

pub fn docker(args: &[&str]) -> Output {
    Command::new(DOCKER).args(args).env("DOCKER_API_VERSION", "1.41").output().expect("docker CLI runs")
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `check` until it returns Ok or `timeout` passes; panics with the last error.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if start.elapsed() > timeout => panic!("timed out after {timeout:?} waiting for {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// A Redis server of this test's own, so tests never see each other's status.
pub struct Redis {
    child: Child,
    pub port: u16,
    password: Option<String>,
    /// Served over TLS only (`rediss://`).
    tls: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Redis {
        Self::start_with(port, None)
    }

    /// A server that requires `password` (AUTH), as `REDIS_PASSWORD` makes setup.sh start it.
    pub fn start_with_password(password: &str) -> Redis {
        Self::start_with(free_port(), Some(password.to_string()))
    }

    /// A server that speaks only TLS, as a managed Redis does, with the certificate `certs`
    /// holds (`server-cert.pem`, `server-key.pem`, signed by `ca.pem`), and that lets in only
    /// clients with a certificate `ca.pem` signed (`tls-auth-clients yes`).
    pub fn start_tls(certs: &std::path::Path) -> Redis {
        let port = free_port();
        let file = |f: &str| certs.join(f).to_string_lossy().to_string();
        let listen = ["--port", "0", "--tls-port", &port.to_string(), "--tls-cert-file", &file("server-cert.pem"), "--tls-key-file", &file("server-key.pem"), "--tls-ca-cert-file", &file("ca.pem"), "--tls-auth-clients", "yes"];
        Self::spawn(port, &listen, None, true)
    }

    fn start_with(port: u16, password: Option<String>) -> Redis {
        let mut listen = vec!["--port".to_string(), port.to_string()];
        if let Some(p) = &password {
            listen.extend(["--requirepass".to_string(), p.clone()]);
        }
        Self::spawn(port, &listen, password, false)
    }

    /// redis-server on `port` of 127.0.0.1 with `listen` (its port options and their own), no
    /// persistence; answering when this returns.
    fn spawn(port: u16, listen: &[impl AsRef<std::ffi::OsStr>], password: Option<String>, tls: bool) -> Redis {
        let child = Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts (scripts/setup.sh installs it)");
        let r = Redis { child, port, password, tls };
        eventually("redis to answer", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| ()).map_err(|e| e.to_string())
        });
        r
    }

    pub fn url(&self) -> String {
        match (&self.password, self.tls) {
            // The certificate names localhost, as a managed Redis' names its host.
            (_, true) => format!("rediss://localhost:{}", self.port),
            (Some(p), false) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            (None, false) => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some(p) = &self.password {
            cmd.args(["-a", p, "--no-auth-warning"]);
        }
        let out = cmd.args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A labs directory plus a running labd on it.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub labs: PathBuf,
    pub redis: Redis,
    labd: Option<Child>,
    pub log: PathBuf,
    /// Lab names to tear down at the end even if the test failed half-way.
    pub cleanup: Vec<String>,
}

impl Lab {
    pub fn new() -> Lab {
        Self::with_redis(Redis::start())
    }

    pub fn with_redis(redis: Redis) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let labs = dir.path().join("labs");
        std::fs::create_dir_all(&labs).unwrap();
        let log = dir.path().join("labd.log");
        Lab { labs, log, dir, redis, labd: None, cleanup: Vec::new() }
    }

    pub fn start_labd(&mut self) {
        self.start_labd_on(&self.labs.clone());
    }

    pub fn start_labd_on(&mut self, labs: &Path) {
        let url = self.redis.url();
        self.start_labd_with(labs, &url);
    }

    /// labd with extra arguments.
    pub fn start_labd_args(&mut self, extra: &[&str]) {
        let (labs, url) = (self.labs.clone(), self.redis.url());
        self.spawn_labd(&labs, &url, extra);
    }

    /// labd reaching Redis at `redis_url` (a proxy, say) instead of the test's server.
    pub fn start_labd_with(&mut self, labs: &Path, redis_url: &str) {
        self.spawn_labd(labs, redis_url, &[]);
    }

    fn spawn_labd(&mut self, labs: &Path, redis_url: &str, extra: &[&str]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        // A removed file's lab goes 1 s after labd saw it gone rather than the default 5 s: the
        // deletion rule is the same (tests/e2e_nothing_lost.rs checks it with its own grace).
        let grace: &[&str] = if extra.contains(&"--delete-grace") { &[] } else { &["--delete-grace", "1"] };
        let child = Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(["--labs", labs.to_str().unwrap(), "--redis", redis_url, "--resync", "5"])
            .args(grace)
            .args(extra)
            .env("DOCKER_API_VERSION", "1.41")
            .env("RUST_LOG", "info,swarmlab=debug")
            .env("LABD_LEASE_TTL", "3")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.labd = Some(child);
    }

    /// A second labd on the same directory and Redis (a standby); its log goes to `log`.
    pub fn spawn_standby(&self, log: &Path) -> Child {
        let log = std::fs::File::create(log).unwrap();
        Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(["--labs", self.labs.to_str().unwrap(), "--redis", &self.redis.url(), "--resync", "5", "--no-agent", "--node", "standby"])
            .env("DOCKER_API_VERSION", "1.41")
            .env("LABD_LEASE_TTL", "3")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// SIGKILL: a crash, no clean-up, the lease is not released.
    pub fn kill_labd(&mut self) {
        if let Some(mut c) = self.labd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The running labd's peak resident memory so far (`VmHWM`), in kB.
    pub fn labd_peak_rss_kb(&self) -> u64 {
        let pid = self.labd.as_ref().expect("labd runs").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/PID/status");
        line.split_whitespace().nth(1).and_then(|kb| kb.parse().ok()).expect("VmHWM in kB")
    }

    /// SIGTERM, as systemd or `docker stop` would, and wait for labd to exit.
    pub fn stop_labd(&mut self) {
        if let Some(mut c) = self.labd.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.labs.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Write then rename, as editors and Git do.
        let name = path.file_name().unwrap().to_string_lossy();
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.labs.join(rel)).unwrap();
    }

    pub fn labctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_labctl")).args(args).env("REDIS_URL", self.redis.url()).output().unwrap()
    }

    pub fn status_json(&self, lab: &str) -> Result<serde_json::Value, String> {
        let out = self.labctl(&["status", lab, "-o", "json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    pub fn phase(&self, lab: &str) -> Result<String, String> {
        Ok(self.status_json(lab)?["phase"].as_str().unwrap_or_default().to_string())
    }

    pub fn wait_phase(&self, lab: &str, phase: &str, timeout: Duration) -> serde_json::Value {
        if phase == "Ready" {
            // What a user's script does: `labctl wait` (Ready for the current file).
            let out = self.labctl(&["wait", lab, "--for", "ready", "--timeout", &format!("{}s", timeout.as_secs())]);
            assert!(
                out.status.success(),
                "labctl wait {lab} failed ({}): {}\n--- labd log tail ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
            return self.status_json(lab).expect("the status labctl wait saw");
        }
        eventually(&format!("{lab} to be {phase}"), timeout, || {
            let s = self.status_json(lab)?;
            if s["phase"] == phase {
                Ok(s)
            } else {
                Err(format!("phase {} ({})\n--- labd log tail ---\n{}", s["phase"], s["message"], self.log_tail()))
            }
        })
    }

    /// Waits for `phase` with a message containing `needle`: a status left by an earlier step
    /// in the same phase does not count.
    pub fn wait_phase_saying(&self, lab: &str, phase: &str, needle: &str, timeout: Duration) -> serde_json::Value {
        eventually(&format!("{lab} to be {phase} saying `{needle}`"), timeout, || {
            let s = self.status_json(lab)?;
            if s["phase"] == phase && s["message"].as_str().unwrap_or_default().contains(needle) { Ok(s) } else { Err(s.to_string()) }
        })
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn metric(&self, lab: &str, name: &str) -> i64 {
        self.redis.cli(&["hget", &format!("swarmlab:lab:{lab}:metrics"), name]).parse().unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_labd();
        for lab in &self.cleanup {
            remove_lab_objects(lab);
        }
    }
}

/// Removes every service and network of a lab (test clean-up; what `docker stack rm` does).
pub fn remove_lab_objects(lab: &str) {
    let filter = format!("label=com.docker.stack.namespace={lab}");
    let services = docker_ok(&["service", "ls", "-q", "--filter", &filter]);
    for id in services.lines().filter(|l| !l.is_empty()) {
        let _ = docker(&["service", "rm", id]);
    }
    // Its tasks are stopping: kill them rather than wait out their grace periods (a Compose
    // file's default is 10 s) before the node lets their networks go.
    let ids = lab_containers(lab);
    if !ids.is_empty() {
        let mut args = vec!["kill"];
        args.extend(ids.iter().map(String::as_str));
        let _ = docker(&args);
    }
    // labd's memory of the lab (a config), which `docker stack rm` removes too.
    for id in docker_ok(&["config", "ls", "-q", "--filter", &filter]).lines().filter(|l| !l.is_empty()) {
        let _ = docker(&["config", "rm", id]);
    }
    let start = Instant::now();
    loop {
        let nets = docker_ok(&["network", "ls", "-q", "--filter", &filter]);
        let ids: Vec<&str> = nets.lines().filter(|l| !l.is_empty()).collect();
        if ids.is_empty() || start.elapsed() > Duration::from_secs(30) {
            break;
        }
        for id in ids {
            let _ = docker(&["network", "rm", id]);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Volumes outlive a lab (as with `docker stack rm`); a test starts without them.
    for name in docker_ok(&["volume", "ls", "-q", "--filter", &filter]).lines().filter(|l| !l.is_empty()) {
        let _ = docker(&["volume", "rm", name]);
    }
}

/// `docker stack services LAB` as NAME → REPLICAS ("2/2").
pub fn stack_services(lab: &str) -> std::collections::BTreeMap<String, String> {
    let out = docker_ok(&["stack", "services", lab, "--format", "{{.Name}} {{.Replicas}}"]);
    out.lines().filter_map(|l| l.split_once(' ')).map(|(n, r)| (n.to_string(), r.to_string())).collect()
}

/// Version index and update time of a service: they change on any update.
pub fn service_version(name: &str) -> String {
    docker_ok(&["service", "inspect", name, "--format", "{{.Version.Index}} {{.UpdatedAt}}"])
}

pub fn running_container_of(service: &str) -> String {
    eventually(&format!("a running container of {service}"), Duration::from_secs(30), || {
        let out = docker_ok(&["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={service}"), "--filter", "status=running"]);
        out.lines().next().map(str::to_string).ok_or_else(|| "none yet".to_string())
    })
}

/// The short id of the running container of `service`'s task in `slot`.
pub fn running_container_of_slot(service: &str, slot: u32) -> String {
    eventually(&format!("a running container of {service}.{slot}"), Duration::from_secs(30), || {
        // Task containers are named `<service>.<slot>.<task id>`.
        let out = docker_ok(&["ps", "-q", "--filter", &format!("name={service}.{slot}."), "--filter", "status=running"]);
        out.lines().next().map(str::to_string).ok_or_else(|| "none yet".to_string())
    })
}

/// A Lab file with `services` lines under `spec.services` (indented by 4).
pub fn lab_yaml(name: &str, services: &str) -> String {
    format!(
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata:\n  name: {name}\nspec:\n  defaults:\n    image: labbox:latest\n    init: true\n    stopGracePeriod: 1s\n    command: [\"sleep\", \"100000\"]\n  services:\n{services}"
    )
}

/// `labctl probe LAB FROM --to TO` as JSON: the ping statistics of the first target task.
pub fn probe(lab: &Lab, name: &str, from: &str, to: &str, count: u32, interval_ms: u32) -> serde_json::Value {
    let out = lab.labctl(&["probe", name, from, "--to", to, "-c", &count.to_string(), "--interval", &interval_ms.to_string(), "-o", "json"]);
    assert!(out.status.success(), "labctl probe failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["stats"].clone()
}

pub fn avg_rtt(stats: &serde_json::Value) -> f64 {
    stats["avg_ms"].as_f64().unwrap()
}

/// Waits until the lab reports its shaping applied and Ready.
pub fn wait_shaped(lab: &Lab, name: &str, timeout: Duration) -> serde_json::Value {
    eventually(&format!("{name} shaped and Ready"), timeout, || {
        let s = lab.status_json(name)?;
        let shaped = s["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "ShapingApplied" && c["status"] == "True");
        if s["phase"] == "Ready" && shaped { Ok(s) } else { Err(format!("{} {}", s["phase"], s["message"])) }
    })
}

/// The agent's per-task reports of a lab, from Redis.
pub fn task_reports(lab: &Lab, name: &str) -> Vec<serde_json::Value> {
    let out = lab.redis.cli(&["--raw", "hvals", &format!("swarmlab:lab:{name}:tasks")]);
    out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// `container`'s address on the Docker network `network` (`LAB_NET`).
pub fn ip_on(container: &str, network: &str) -> String {
    docker_ok(&["inspect", container, "--format", &format!("{{{{range $k, $v := .NetworkSettings.Networks}}}}{{{{if eq $k \"{network}\"}}}}{{{{$v.IPAddress}}}}{{{{end}}}}{{{{end}}}}")])
}

pub fn pid_of(container: &str) -> String {
    docker_ok(&["inspect", container, "--format", "{{.State.Pid}}"])
}

/// Runs a command in a container's network namespace from the host.
pub fn in_netns(container: &str, args: &[&str]) -> Output {
    let pid = pid_of(container);
    Command::new("nsenter").arg(format!("--net=/proc/{pid}/ns/net")).args(args).output().unwrap()
}

/// Starts a TCP receiver (a python script) in a container's network namespace and returns once
/// it listens: the script prints `listening` on stderr after `listen()`. Waiting for that line,
/// not for a fixed time, keeps a slow start from refusing the sender's connection.
pub fn receiver_in_netns(container: &str, script: &str) -> Child {
    use std::io::BufRead;
    let pid = pid_of(container);
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["python3", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = std::io::BufReader::new(child.stderr.take().unwrap()).read_line(&mut line);
    assert_eq!(line.trim(), "listening", "the receiver in {container} did not start");
    child
}

/// Ids of the running containers of a lab's tasks, sorted: unchanged means nothing was
/// removed, recreated or restarted.
pub fn lab_containers(lab: &str) -> Vec<String> {
    let out = docker_ok(&["ps", "-q", "--no-trunc", "--filter", &format!("label=com.docker.stack.namespace={lab}")]);
    let mut ids: Vec<String> = out.lines().map(str::to_string).collect();
    ids.sort();
    ids
}

impl Lab {
    /// Waits until labd's log contains `needle` (an event, not a guess at a duration).
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        eventually(&format!("labd to log `{needle}`"), timeout, || {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(needle) { Ok(()) } else { Err(self.log_tail()) }
        });
    }

    /// How many times labd's log contains `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().matches(needle).count()
    }
}

impl Lab {
    /// Waits up to `timeout` for labd to exit on its own; its exit status if it did.
    pub fn labd_exits_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        let child = self.labd.as_mut()?;
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                self.labd = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Restarts the Docker daemon of /var/run/docker.sock (SIGTERM, then the same binary with the
/// same arguments, environment and log), as an upgrade or `systemctl restart docker` would;
/// waits until the swarm answers again. The same binary: the suite also runs on a newer Engine
/// (scripts/newer-engine.sh), which a plain `dockerd` from PATH would replace by 20.10.
pub fn restart_dockerd() {
    let pid = std::fs::read_to_string("/var/run/docker.pid").expect("dockerd's pidfile").trim().to_string();
    let proc = |what: &str| std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_else(|e| panic!("/proc/{pid}/{what}: {e}"));
    let split = |bytes: Vec<u8>| bytes.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).to_string()).collect::<Vec<_>>();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("dockerd's binary");
    let args: Vec<String> = split(proc("cmdline")).into_iter().skip(1).collect();
    let env: Vec<(String, String)> = split(proc("environ")).iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let log = std::fs::read_link(format!("/proc/{pid}/fd/1")).ok().filter(|p| p.is_absolute()).unwrap_or_else(|| "/var/log/swarmlab-dockerd.log".into());
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    eventually("dockerd to stop", Duration::from_secs(60), || {
        if Path::new(&format!("/proc/{pid}")).exists() { Err("still running".into()) } else { Ok(()) }
    });
    let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("dockerd's log");
    // setsid --fork: the daemon, a child of init, outlives this test process as one started
    // by scripts/setup.sh does; setsid itself returns at once.
    let started = Command::new("setsid")
        .arg("--fork")
        .arg(&exe)
        .args(&args)
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().expect("dockerd's log"))
        .stderr(out)
        .status()
        .expect("setsid runs");
    assert!(started.success(), "dockerd did not start again: {started}");
    eventually("the swarm to answer after the restart", Duration::from_secs(60), || {
        let out = docker(&["node", "ls", "--format", "{{.Status}}"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && text.contains("Ready") { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).to_string()) }
    });
}

/// Whether a task's namespace holds swarmlab's shaping (NFQUEUE rules or a tbf/netem qdisc).
pub fn shaping_in(container: &str) -> (bool, bool) {
    let rules = String::from_utf8_lossy(&in_netns(container, &["iptables-save"]).stdout).to_string();
    let qdisc = String::from_utf8_lossy(&in_netns(container, &["tc", "qdisc", "show"]).stdout).to_string();
    (rules.contains("swarmlab"), qdisc.contains("tbf") || qdisc.contains("netem"))
}

/// When a container last started, as Docker says.
pub fn started_at(container: &str) -> String {
    docker_ok(&["inspect", container, "--format", "{{.State.StartedAt}}"])
}

/// A bare HTTP/1.1 GET of labd's `--http` server (what a scraper sends), so tests need no HTTP
/// client: the status code and the body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("labd listens on --http");
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, body.to_string())
}

/// (interface names, name records, frames as (interface, time, outbound, ICMP type, ICMP id,
/// ICMP sequence)) of a pcapng file (`labctl capture -w`).
pub type Captured = (Vec<String>, Vec<(Vec<u8>, String)>, Vec<(usize, Duration, bool, u8, u16, u16)>);

pub fn read_capture(path: &std::path::Path) -> Captured {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    use pcap_file::pcapng::blocks::name_resolution::Record;
    use pcap_file::pcapng::{Block, PcapNgReader};
    let bytes = std::fs::read(path).unwrap();
    let mut reader = PcapNgReader::new(&bytes[..]).expect("a pcapng file");
    let (mut names, mut frames) = (Vec::new(), Vec::new());
    while let Some(block) = reader.next_block() {
        match block.expect("a readable block") {
            Block::NameResolution(nrb) => {
                for record in nrb.records {
                    if let Record::Ipv4(r) = record {
                        names.push((r.ip_addr.to_vec(), r.names[0].to_string()));
                    }
                }
            }
            Block::EnhancedPacket(p) => {
                let outbound = p.options.iter().any(|o| matches!(o, EnhancedPacketOption::Flags(f) if f & 0b11 == 0b10));
                let packet = etherparse::SlicedPacket::from_ethernet(&p.data).expect("an Ethernet frame");
                let (kind, id, seq) = match packet.transport {
                    Some(etherparse::TransportSlice::Icmpv4(icmp)) => {
                        let b = icmp.slice();
                        (icmp.type_u8(), u16::from_be_bytes([b[4], b[5]]), u16::from_be_bytes([b[6], b[7]]))
                    }
                    _ => (255, 0, 0),
                };
                frames.push((p.interface_id as usize, p.timestamp, outbound, kind, id, seq));
            }
            _ => {}
        }
    }
    let interfaces = reader
        .interfaces()
        .iter()
        .map(|i| i.options.iter().find_map(|o| if let InterfaceDescriptionOption::IfName(n) = o { Some(n.to_string()) } else { None }).unwrap_or_default())
        .collect();
    (interfaces, names, frames)
}

/// A labd or agent the test started, killed with the test even when it fails (a second agent
/// on the node would answer for the tasks of the next tests).
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `labd agent` on this node, on the lab's Redis; its log in the lab's directory.
pub fn spawn_agent(lab: &Lab, log: &str) -> std::process::Child {
    let out = std::fs::File::create(lab.dir.path().join(log)).expect("agent log");
    std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
        .args(["agent", "--redis", &lab.redis.url()])
        .env("DOCKER_API_VERSION", "1.41")
        // `labctl top` within a second or two.
        .env("LABD_USAGE_INTERVAL", "1s")
        .stdout(std::process::Stdio::null())
        .stderr(out)
        .spawn()
        .expect("labd agent")
}
