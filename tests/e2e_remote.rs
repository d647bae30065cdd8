//! End-to-end: labd and labctl reach a Docker daemon over TLS and a Redis over TLS, set up as
//! a user's shell is for the docker CLI (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) and
//! for a managed Redis (`rediss://`, SSL_CERT_FILE for a private CA). The daemon's TLS listener
//! is a proxy in front of the local socket that asks for a client certificate signed by the CA,
//! as `dockerd --tlsverify` does; the docker CLI itself is checked to accept it first. And a
//! manager reached over ssh (`DOCKER_HOST=ssh://…`), through an sshd started here.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA, a server certificate for 127.0.0.1/localhost, a client certificate the CA signed (in
/// `client/` as DOCKER_CERT_PATH wants it: ca.pem, cert.pem, key.pem), and `stranger/`: the
/// same names with a client certificate no one signed.
fn make_certs(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", "/CN=swarmlab test CA"]);
    for (name, cn, ext) in [("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"), ("client", "labd", "extendedKeyUsage=clientAuth\n")] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &format!("{name}-key.pem"), "-out", &format!("{name}.csr"), "-subj", &format!("/CN={cn}")]);
        openssl(&["x509", "-req", "-in", &format!("{name}.csr"), "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-out", &format!("{name}-cert.pem"), "-days", "2", "-extfile", &format!("{name}.ext")]);
    }
    openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "stranger-key.pem", "-out", "stranger-cert.pem", "-days", "2", "-subj", "/CN=stranger"]);
    for (sub, who) in [("client", "client"), ("stranger", "stranger")] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::copy(dir.join("ca.pem"), dir.join(sub).join("ca.pem")).unwrap();
        std::fs::copy(dir.join(format!("{who}-cert.pem")), dir.join(sub).join("cert.pem")).unwrap();
        std::fs::copy(dir.join(format!("{who}-key.pem")), dir.join(sub).join("key.pem")).unwrap();
    }
}

/// Serves the local Docker socket over TLS on a free port, as `dockerd --tlsverify -H tcp://…`:
/// a client certificate signed by the CA is required, and a request in plain HTTP is answered
/// as Go's TLS server answers one (dockerd's words). Counts the connections it let through.
fn docker_tls_listener(certs: &Path) -> (u16, Arc<AtomicUsize>) {
    let ca = CertificateDer::from_pem_file(certs.join("ca.pem")).expect("ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("the CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().expect("a verifier");
    let chain = CertificateDer::pem_file_iter(certs.join("server-cert.pem")).expect("server-cert.pem").collect::<Result<Vec<_>, _>>().expect("a chain");
    let key = PrivateKeyDer::from_pem_file(certs.join("server-key.pem")).expect("server-key.pem");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("a server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let through = Arc::new(AtomicUsize::new(0));
    let counted = through.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else { continue };
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut first = [0u8; 1];
                    // A TLS connection opens with a handshake record (0x16).
                    if tcp.peek(&mut first).await.ok() != Some(1) || first[0] != 0x16 {
                        let mut request = [0u8; 4096];
                        let _ = tcp.read(&mut request).await;
                        let _ = tcp.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n").await;
                        let _ = tcp.shutdown().await;
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut docker) = tokio::net::UnixStream::connect("/var/run/docker.sock").await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut docker).await;
                });
            }
        });
    });
    (port, through)
}

/// A Redis that speaks only TLS, with the server certificate of `certs`.
/// The lab's services and networks removed when the test ends however it ends (after the
/// labd that made them is killed: declare it first).
struct LabRemovedAtEnd(&'static str);

impl Drop for LabRemovedAtEnd {
    fn drop(&mut self) {
        remove_lab_objects(self.0);
    }
}

/// What a user's shell holds for the remote daemon and the managed Redis.
struct Remote {
    docker_host: String,
    cert_path: PathBuf,
    redis_url: String,
    ca: PathBuf,
}

impl Remote {
    fn command(&self, bin: &str) -> Command {
        let mut c = Command::new(bin);
        c.env("DOCKER_HOST", &self.docker_host)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", &self.cert_path)
            .env("REDIS_URL", &self.redis_url)
            .env("SSL_CERT_FILE", &self.ca)
            // The Redis checks its clients: the same client certificate as for Docker.
            .env("REDIS_TLS_CERT_FILE", self.cert_path.join("cert.pem"))
            .env("REDIS_TLS_KEY_FILE", self.cert_path.join("key.pem"))
            .env("DOCKER_API_VERSION", "1.41");
        c
    }

    fn labctl(&self, args: &[&str]) -> Output {
        self.command(env!("CARGO_BIN_EXE_labctl")).args(args).output().unwrap()
    }
}

/// A lab of `services` on one network `lan` with `delay` on it (each way).
fn lan_lab(name: &str, delay: &str, services: &[&str]) -> String {
    let services: String = services.iter().map(|s| format!("    {s}: {{}}\n")).collect();
    format!(
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: {name}}}\nspec:\n  defaults: {{image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"], networks: [lan]}}\n  networks:\n    lan: {{conditions: {{delay: {delay}}}}}\n  services:\n{services}"
    )
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn labd_and_labctl_reach_docker_and_redis_over_tls_as_the_docker_cli_and_redis_cli_do() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let (docker_port, through_tls) = docker_tls_listener(certs.path());
    let redis = Redis::start_tls(certs.path());
    let remote = Remote {
        docker_host: format!("tcp://127.0.0.1:{docker_port}"),
        cert_path: certs.path().join("client"),
        redis_url: redis.url(),
        ca: certs.path().join("ca.pem"),
    };

    // The set-up is what the reference clients accept: the docker CLI with --tlsverify, redis-cli --tls.
    let cli = remote.command(DOCKER).args(["version", "--format", "{{.Server.Version}}"]).output().unwrap();
    assert!(cli.status.success(), "the docker CLI over TLS: {}", text(&cli));
    let ca = remote.ca.to_string_lossy().to_string();
    let client = |f: &str| remote.cert_path.join(f).to_string_lossy().to_string();
    let ping = Command::new("redis-cli").args(["--tls", "--cacert", &ca, "--cert", &client("cert.pem"), "--key", &client("key.pem"), "-h", "localhost", "-p", &redis.port.to_string(), "ping"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ping.stdout).trim(), "PONG", "redis-cli --tls with a client certificate: {}", text(&ping));

    let name = "tlslab";
    remove_lab_objects(name);
    let dir = tempfile::tempdir().unwrap();
    let labs = dir.path().join("labs");
    std::fs::create_dir_all(&labs).unwrap();
    std::fs::write(labs.join("tlslab.yaml"), lan_lab(name, "20ms", &["a", "b"])).unwrap();
    let log = dir.path().join("labd.log");
    let _removed = LabRemovedAtEnd(name);
    let _labd = KillOnDrop(remote
        .command(env!("CARGO_BIN_EXE_labd"))
        .args(["--labs", labs.to_str().unwrap(), "--resync", "5"])
        .env_remove("REDIS_PASSWORD")
        .env("RUST_LOG", "info,swarmlab=debug")
        .env("LABD_LEASE_TTL", "3")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap());

    // Ready: services created over TLS, the agent's reports of the delay read back over TLS.
    let waited = remote.labctl(&["wait", name, "--for", "ready", "--timeout", "90s"]);
    if !waited.status.success() {
        panic!("labctl wait over TLS: {}\n--- labd log ---\n{}", text(&waited), std::fs::read_to_string(&log).unwrap_or_default());
    }
    let status = remote.labctl(&["status", name, "-o", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON over rediss://");
    let shaped = status["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "ShapingApplied" && c["status"] == "True");
    assert!(shaped, "the agent's shaping read back over TLS: {status}");
    assert_eq!(stack_services(name).len(), 2, "both services on the Swarm");
    // labctl's own Docker path: nothing to change for this lab (exit 0 on a Swarm with no other
    // lab; another test's lab left behind would show as one to remove, exit 1).
    let diff = remote.labctl(&["diff", labs.to_str().unwrap()]);
    let said = text(&diff);
    assert!(matches!(diff.status.code(), Some(0 | 1)) && !said.contains(name), "labctl diff over TLS: {said}");

    // A context made and chosen with the docker CLI (`docker context create`, `use`), and no
    // DOCKER_HOST: followed as the CLI follows it.
    let config = certs.path().join("docker-config");
    let pem = |f: &str| certs.path().join(f).to_string_lossy().to_string();
    let endpoint = format!("host={},ca={},cert={},key={}", remote.docker_host, pem("ca.pem"), pem("client-cert.pem"), pem("client-key.pem"));
    for args in [vec!["context", "create", "lab-manager", "--docker", &endpoint], vec!["context", "use", "lab-manager"]] {
        let made = Command::new(DOCKER).args(&args).env("DOCKER_CONFIG", &config).output().unwrap();
        assert!(made.status.success(), "docker {args:?}: {}", text(&made));
    }
    let via_context = |bin: &str| {
        let mut c = remote.command(bin);
        c.env_remove("DOCKER_HOST").env_remove("DOCKER_TLS_VERIFY").env_remove("DOCKER_CERT_PATH").env("DOCKER_CONFIG", &config);
        c
    };
    let cli = via_context(DOCKER).args(["version", "--format", "{{.Server.Version}}"]).output().unwrap();
    assert!(cli.status.success(), "the docker CLI through its context: {}", text(&cli));
    let before = through_tls.load(Ordering::SeqCst);
    let diff = via_context(env!("CARGO_BIN_EXE_labctl")).args(["diff", labs.to_str().unwrap()]).output().unwrap();
    let said = text(&diff);
    assert!(matches!(diff.status.code(), Some(0 | 1)) && !said.contains(name), "labctl diff through the docker context: {said}");
    // The same daemon is on the local socket too: only the listener's count shows the way taken.
    assert!(through_tls.load(Ordering::SeqCst) > before, "labctl diff went through the context's TLS endpoint, not the local socket");

    // What goes wrong says what to do, before anything is touched.
    let stranger = remote.command(env!("CARGO_BIN_EXE_labctl")).args(["diff", labs.to_str().unwrap()]).env("DOCKER_CERT_PATH", certs.path().join("stranger")).output().unwrap();
    let said = text(&stranger);
    assert!(stranger.status.code() == Some(2) && said.contains("over TLS with the certificates of") && said.contains("stranger"), "a client certificate the daemon refuses: {said}");
    let plain = remote.command(env!("CARGO_BIN_EXE_labctl")).args(["diff", labs.to_str().unwrap()]).env_remove("DOCKER_TLS_VERIFY").output().unwrap();
    let said = text(&plain);
    assert!(said.contains("answers only TLS: set DOCKER_TLS_VERIFY=1"), "plain HTTP to a TLS daemon: {said}");
    let untrusted = remote.command(env!("CARGO_BIN_EXE_labctl")).args(["status"]).env_remove("SSL_CERT_FILE").output().unwrap();
    let said = text(&untrusted);
    assert!(!untrusted.status.success() && said.contains("SSL_CERT_FILE"), "a Redis certificate this machine does not trust: {said}");
    let no_client_cert = remote.command(env!("CARGO_BIN_EXE_labctl")).args(["status"]).env_remove("REDIS_TLS_CERT_FILE").env_remove("REDIS_TLS_KEY_FILE").output().unwrap();
    let said = text(&no_client_cert);
    assert!(!no_client_cert.status.success() && said.contains("checks its clients' certificates: REDIS_TLS_CERT_FILE"), "no client certificate for a Redis that checks them: {said}");
    let plain_redis = remote.command(env!("CARGO_BIN_EXE_labctl")).args(["status"]).env_remove("REDIS_TLS_CERT_FILE").env_remove("REDIS_TLS_KEY_FILE").env("REDIS_URL", format!("redis://localhost:{}", redis.port)).output().unwrap();
    let said = text(&plain_redis);
    assert!(!plain_redis.status.success() && said.contains("rediss://"), "plain text to a TLS-only Redis: {said}");
}

/// `cmd` as if on another machine than the daemon's: in a pid namespace of its own with its own
/// /proc, where the pids Docker reports are no process (on a real other machine they are
/// another process, which is worse: its namespace would be entered).
fn on_another_machine(bin: &str, args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    // --kill-child: the command goes with unshare, killed or not.
    c.args(["--pid", "--kill-child", "--mount-proc", bin]).args(args).env("DOCKER_API_VERSION", "1.41");
    c
}

/// A daemon on another machine reports pids that are not its containers' here: labctl probe
/// reaches the task through the agent of its node instead of entering whatever has that pid,
/// and an agent beside such a daemon shapes nothing and says why.
#[test]
fn tasks_of_a_daemon_on_another_machine_are_never_entered_from_here() {
    let name = "farlab";
    let mut lab = Lab::new();
    lab.cleanup.push(name.into());
    remove_lab_objects(name);
    lab.write("farlab.yaml", &lan_lab(name, "20ms", &["a", "b"]));
    lab.start_labd();
    wait_shaped(&lab, name, Duration::from_secs(90));

    // labctl probe "elsewhere": the task is this node's by the daemon's word, but its pid is no
    // process here; the node's agent (labd's, on the daemon's machine) measures instead.
    let probe = on_another_machine(env!("CARGO_BIN_EXE_labctl"), &["probe", name, "a", "--to", "b", "-c", "20", "--interval", "20", "-o", "json"]).env("REDIS_URL", lab.redis.url()).output().unwrap();
    assert!(probe.status.success(), "labctl probe from another machine: {}", text(&probe));
    let rows: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("probe JSON");
    // Named `service.slot` as the agents name what they relay; a task entered here would be
    // named by its container id.
    assert_eq!(rows[0]["container"], "a.1", "probed through a's agent: {rows}");
    let stats = &rows[0]["stats"];
    let rtt = avg_rtt(stats);
    assert!((34.0..60.0).contains(&rtt), "20 ms each way, measured by the agent of a's node: {rtt} ms ({stats})");

    // An agent beside that daemon: no namespace entered, the reason in its log.
    let log = lab.dir.path().join("far-agent.log");
    let agent = KillOnDrop(
        on_another_machine(env!("CARGO_BIN_EXE_labd"), &["agent", "--node", "far", "--redis", &lab.redis.url(), "--http", "127.0.0.1:0"])
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let said = eventually("the far agent to say why it shapes nothing", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("runs its tasks on another machine") { Ok(text) } else { Err(text) }
    });
    drop(agent);
    assert!(!said.contains("applied"), "the far agent applied something: {said}");
    let reports = task_reports(&lab, name);
    assert!(reports.iter().all(|r| r["node"] != "far"), "the far agent reported shaping tasks: {reports:?}");
}

/// A lab with conditions and no agent anywhere (labd --no-agent, and no `labd agent` started:
/// the usual first mistake on a multi-node swarm) says so while it waits, rather than counting
/// 0 tasks shaped for ever; an agent started then shapes it.
#[test]
fn with_no_agent_running_the_lab_says_so_and_an_agent_started_then_shapes_it() {
    let name = "noagent";
    let mut lab = Lab::new();
    lab.cleanup.push(name.into());
    remove_lab_objects(name);
    lab.write("noagent.yaml", &lan_lab(name, "5ms", &["a"]));
    lab.start_labd_args(&["--no-agent"]);
    let s = lab.wait_phase_saying(name, "Progressing", "no node agent is running", Duration::from_secs(60));
    assert!(s["message"].as_str().unwrap_or_default().contains("labd agent"), "says what to start: {s}");

    let agent = KillOnDrop(spawn_agent(&lab, "agent.log"));
    wait_shaped(&lab, name, Duration::from_secs(60));
    drop(agent);
}

/// An sshd on a free port of 127.0.0.1 (and ::1) that lets in one key, and what a user's shell holds for
/// it: `bin/ssh` (first on PATH) is ssh with the config `$SSH_TEST_CONFIG` names, as a user's
/// ~/.ssh/config would be read (root's own is left alone). Configs: `good.conf` (the key, the
/// host key known), `unknown-host.conf` (no known hosts), `stranger.conf` (a key sshd refuses).
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    _sshd: KillOnDrop,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let keygen = |file: &str| {
            let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(d.join(file)).output().expect("ssh-keygen runs");
            assert!(out.status.success(), "ssh-keygen: {}", text(&out));
        };
        for key in ["host_key", "user_key", "stranger_key"] {
            keygen(key);
        }
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let p = |f: &str| d.join(f).to_string_lossy().to_string();
        let config = format!(
            // MaxStartups 4: a login beyond 4 under way is dropped (sshd's default starts dropping
            // at random from 10), as a busy or hardened manager does.
            "Port {port}\nListenAddress 127.0.0.1\n{}HostKey {}\nAuthorizedKeysFile {}\nPidFile none\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nMaxStartups 4\n",
            if ipv6_loopback() { "ListenAddress ::1\n" } else { "" },
            p("host_key"),
            p("authorized_keys")
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        // Its privilege separation directory, which a package install makes at boot.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let sshd = Command::new("/usr/sbin/sshd")
            .args(["-D", "-f", &p("sshd_config"), "-E", &p("sshd.log")])
            .spawn()
            .expect("/usr/sbin/sshd runs (scripts/setup.sh installs openssh-server)");
        let sshd = KillOnDrop(sshd);
        eventually("sshd to listen", Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| ()).map_err(|e| e.to_string()));
        // Its one host key type: one connection, not one per type (MaxStartups above).
        let mut known = Vec::new();
        for host in std::iter::once("127.0.0.1").chain(ipv6_loopback().then_some("::1")) {
            let scan = Command::new("ssh-keyscan").args(["-t", "ed25519", "-p", &port.to_string(), host]).output().unwrap();
            assert!(!scan.stdout.is_empty(), "ssh-keyscan {host}: {}", text(&scan));
            known.extend(scan.stdout);
        }
        std::fs::write(d.join("known_hosts"), known).unwrap();
        for (name, key, known) in [("good", "user_key", "known_hosts"), ("unknown-host", "user_key", "no_known_hosts"), ("stranger", "stranger_key", "known_hosts")] {
            std::fs::write(d.join(format!("{name}.conf")), format!("Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n", p(key), p(known))).unwrap();
        }
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::write(d.join("bin/ssh"), "#!/bin/sh\nexec /usr/bin/ssh -F \"$SSH_TEST_CONFIG\" \"$@\"\n").unwrap();
        std::fs::set_permissions(d.join("bin/ssh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        Sshd { dir, port, _sshd: sshd }
    }

    /// `bin` with DOCKER_HOST=ssh://root@127.0.0.1:PORT and the user's ssh set up by `config`.
    fn command(&self, bin: &str, config: &str) -> Command {
        let mut c = Command::new(bin);
        let path = format!("{}:{}", self.dir.path().join("bin").display(), std::env::var("PATH").unwrap_or_default());
        c.env("PATH", path)
            .env("SSH_TEST_CONFIG", self.dir.path().join(format!("{config}.conf")))
            .env("DOCKER_HOST", format!("ssh://root@127.0.0.1:{}", self.port))
            .env("DOCKER_API_VERSION", "1.41");
        c
    }

    /// How many ssh logins sshd let in.
    fn logins(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default().matches("Accepted publickey").count()
    }
}

/// Whether this machine's loopback has its IPv6 address.
fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// `DOCKER_HOST=ssh://user@host:port` (or a context made with one), as the docker CLI takes it:
/// each connection a `docker system dial-stdio` through the user's own ssh. labd converges and
/// shapes a lab through it, labctl diffs through it, and what ssh refuses is said in ssh's words.
#[test]
fn labd_and_labctl_reach_a_manager_over_ssh_as_the_docker_cli_does() {
    let sshd = Sshd::start();
    let cli = sshd.command(DOCKER, "good").args(["version", "--format", "{{.Server.Version}}"]).output().unwrap();
    assert!(cli.status.success(), "the docker CLI over ssh: {}", text(&cli));
    let cli_logins = sshd.logins();
    assert!(cli_logins > 0, "the docker CLI logged in over ssh");

    let name = "sshlab";
    remove_lab_objects(name);
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let labs = dir.path().join("labs");
    std::fs::create_dir_all(&labs).unwrap();
    // Ten services: labd sends their creates at once.
    let services = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    std::fs::write(labs.join("sshlab.yaml"), lan_lab(name, "20ms", &services)).unwrap();
    let log = dir.path().join("labd.log");
    let _removed = LabRemovedAtEnd(name);
    let _labd = KillOnDrop(sshd
        .command(env!("CARGO_BIN_EXE_labd"), "good")
        .args(["--labs", labs.to_str().unwrap(), "--resync", "5", "--redis", &redis.url()])
        .env("RUST_LOG", "info,swarmlab=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap());
    let labctl = |args: &[&str], config: &str| sshd.command(env!("CARGO_BIN_EXE_labctl"), config).args(args).env("REDIS_URL", redis.url()).output().unwrap();

    let waited = labctl(&["wait", name, "--for", "ready", "--timeout", "90s"], "good");
    if !waited.status.success() {
        panic!("labctl wait with labd over ssh: {}\n--- labd log ---\n{}", text(&waited), std::fs::read_to_string(&log).unwrap_or_default());
    }
    let status: serde_json::Value = serde_json::from_slice(&labctl(&["status", name, "-o", "json"], "good").stdout).expect("status JSON");
    let shaped = status["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "ShapingApplied" && c["status"] == "True");
    assert!(shaped, "the lab shaped, its tasks found through the daemon over ssh: {status}");
    assert_eq!(stack_services(name).len(), services.len(), "every service on the Swarm");
    // Never more logins under way than sshd takes: no connection dropped, no create failed.
    let sshd_log = std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default();
    let labd_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!sshd_log.contains("past MaxStartups") && !labd_log.contains("action failed"), "logins beyond MaxStartups:\n{sshd_log}\n--- labd log ---\n{labd_log}");
    // The same daemon is on the local socket too: sshd's log shows the way taken.
    let labd_logins = sshd.logins() - cli_logins;
    assert!(labd_logins > 0, "labd went over ssh");
    let diff = labctl(&["diff", labs.to_str().unwrap()], "good");
    let said = text(&diff);
    assert!(matches!(diff.status.code(), Some(0 | 1)) && !said.contains(name), "labctl diff over ssh: {said}");
    println!("over ssh: the docker CLI's version took {cli_logins} login(s); labd to Ready {labd_logins}; labctl diff {}", sshd.logins() - cli_logins - labd_logins);
    // A manager by its IPv6 address, bracketed in the URL as the docker CLI takes it.
    if ipv6_loopback() {
        let diff = sshd.command(env!("CARGO_BIN_EXE_labctl"), "good").args(["diff", labs.to_str().unwrap()]).env("DOCKER_HOST", format!("ssh://root@[::1]:{}", sshd.port)).env("REDIS_URL", redis.url()).output().unwrap();
        let said = text(&diff);
        assert!(matches!(diff.status.code(), Some(0 | 1)) && !said.contains(name), "labctl diff over ssh to [::1]: {said}");
    } else {
        println!("NOT RUN: ssh://root@[::1] (this machine's loopback has no IPv6 address)");
    }

    // What ssh refuses, in its words and with what to do, before anything is touched.
    let unknown = labctl(&["diff", labs.to_str().unwrap()], "unknown-host");
    let said = text(&unknown);
    assert!(unknown.status.code() == Some(2) && said.contains("Host key verification failed") && said.contains("accept no new host key"), "an unknown host key: {said}");
    let stranger = labctl(&["diff", labs.to_str().unwrap()], "stranger");
    let said = text(&stranger);
    assert!(stranger.status.code() == Some(2) && said.contains("Permission denied") && said.contains(&format!("ssh -o BatchMode=yes -p {} root@127.0.0.1 docker system dial-stdio", sshd.port)), "a key sshd refuses: {said}");
}
