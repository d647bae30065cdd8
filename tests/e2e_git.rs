//! End-to-end: labd reading its labs from a Git branch served by a local `git daemon` (labd
//! fetches with gix; nothing syncs a directory for it). A commit is applied within the interval
//! plus a few seconds and the status shows it; a broken commit keeps the previous one running
//! and says where it is broken; a force-push to an older commit is applied; a repository that
//! cannot be reached changes nothing and `labctl status` says so.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const READY: Duration = Duration::from_secs(90);
const INTERVAL_SECS: u64 = 2;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=swarmlab-test", "-c", "user.email=test@swarmlab", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(repo: &Path, file: &str, text: &str, message: &str) -> String {
    std::fs::write(repo.join(file), text).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// `git daemon` serving every repository under `base` on a free port of 127.0.0.1.
struct Daemon(Child);

impl Daemon {
    fn start(base: &Path, port: u16) -> Daemon {
        // git-daemon itself, not `git daemon` (which would leave it running when killed).
        let exec_path = Command::new("git").arg("--exec-path").output().expect("git runs");
        let daemon = Path::new(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
        let child = Command::new(daemon)
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1", &format!("--port={port}")])
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon runs (Debian's git has it)");
        eventually("git daemon to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| ()).map_err(|e| e.to_string())
        });
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn lab_text(replicas: &str) -> String {
    format!(
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: gitops}}\nspec:\n  defaults: {{image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"]}}\n  services:\n    web:\n      replicas: {replicas}\n"
    )
}

/// The lab's status once it is Ready at `commit` with `replicas` tasks of web running.
fn wait_applied(lab: &Lab, commit: &str, replicas: u64, timeout: Duration) -> serde_json::Value {
    eventually(&format!("commit {commit} applied"), timeout, || {
        let s = lab.status_json("gitops")?;
        let web = &s["services"]["web"];
        if s["commit"] == commit && s["phase"] == "Ready" && web["running"] == replicas && web["desired"] == replicas {
            Ok(s)
        } else {
            Err(format!("{} {} {} {web}", s["commit"], s["phase"], s["message"]))
        }
    })
}

/// A repository of `lab`'s directory, served by `git daemon`, whose first commit holds the
/// lab `gitops` with one replica.
struct Served {
    base: std::path::PathBuf,
    repo: std::path::PathBuf,
    port: u16,
    daemon: Daemon,
    url: String,
    /// labd's clone.
    cache: std::path::PathBuf,
    first: String,
}

fn served(lab: &mut Lab) -> Served {
    lab.cleanup.push("gitops".into());
    remove_lab_objects("gitops");
    let base = lab.dir.path().join("served");
    let repo = base.join("labs-repo");
    std::fs::create_dir_all(repo.join("labs")).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("README.md"), "labs for swarmlab\n").unwrap();
    let first = commit(&repo, "labs/gitops.yaml", &lab_text("1"), "one replica");
    let port = free_port();
    let daemon = Daemon::start(&base, port);
    let url = format!("git://127.0.0.1:{port}/labs-repo");
    let cache = lab.dir.path().join("git-cache");
    Served { base, repo, port, daemon, url, cache, first }
}

#[test]
fn commits_are_applied_a_broken_one_keeps_the_last_good_and_a_force_push_goes_back() {
    let mut lab = Lab::new();
    let Served { base, repo, port, daemon, url, cache, first } = served(&mut lab);
    let interval = format!("{INTERVAL_SECS}s");
    lab.start_labd_args(&["--git", &url, "--path", "labs", "--interval", &interval, "--git-cache", cache.to_str().unwrap()]);
    lab.wait_phase("gitops", "Ready", READY);
    wait_applied(&lab, &first, 1, Duration::from_secs(10));
    let table = String::from_utf8_lossy(&lab.labctl(&["status"]).stdout).to_string();
    assert!(table.contains(&first[..7]), "labctl status shows the short commit:\n{table}");

    // A new commit: applied within the interval plus a few seconds.
    let started = Instant::now();
    let second = commit(&repo, "labs/gitops.yaml", &lab_text("2"), "two replicas");
    wait_applied(&lab, &second, 2, Duration::from_secs(INTERVAL_SECS + 20));
    let took = started.elapsed().as_secs_f64();
    println!("GIT | commit pushed → Ready at that commit | {took:.1} s (interval {INTERVAL_SECS} s)");
    assert!(took < (INTERVAL_SECS + 8) as f64, "a commit took {took:.1}s to be applied");

    // A broken commit: Invalid, saying where, and the previous commit keeps running.
    let broken = commit(&repo, "labs/gitops.yaml", &lab_text("-1"), "broken");
    let s = lab.wait_phase_saying("gitops", "Invalid", "spec.services.web.replicas", Duration::from_secs(INTERVAL_SECS + 20));
    let message = s["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&format!("{url}/labs/gitops.yaml:")), "file:line:col of the broken file: {message}");
    assert_eq!(s["commit"], second, "the running definition is still the second commit's");
    assert_eq!(docker_ok(&["service", "inspect", "gitops_web", "--format", "{{.Spec.Mode.Replicated.Replicas}}"]).trim(), "2");
    assert_ne!(broken, second);

    // A force-push back to the first commit is applied as it is.
    git(&repo, &["reset", "-q", "--hard", &first]);
    wait_applied(&lab, &first, 1, Duration::from_secs(INTERVAL_SECS + 30));

    // The repository out of reach: nothing changes, and labctl status says why.
    drop(daemon);
    let said = eventually("labctl status to report the failed fetch", Duration::from_secs(INTERVAL_SECS + 20), || {
        let out = String::from_utf8_lossy(&lab.labctl(&["status"]).stdout).to_string();
        if out.contains("SOURCE: fetching `main`") { Ok(out) } else { Err(out) }
    });
    assert!(said.contains(&format!("labs stay at commit {}", &first[..7])), "{said}");
    std::thread::sleep(Duration::from_secs(INTERVAL_SECS * 2));
    let s = lab.status_json("gitops").unwrap();
    assert_eq!((s["phase"].as_str(), s["commit"].as_str()), (Some("Ready"), Some(first.as_str())), "{s}");
    assert_eq!(stack_services("gitops").len(), 1, "the lab keeps running");

    // Back, with the lab's file removed: the deletion rule applies to commits as to files.
    let _daemon = Daemon::start(&base, port);
    git(&repo, &["rm", "-q", "labs/gitops.yaml"]);
    git(&repo, &["commit", "-qm", "remove the lab"]);
    eventually("the lab to be torn down", Duration::from_secs(INTERVAL_SECS + 30), || {
        if stack_services("gitops").is_empty() { Ok(()) } else { Err(format!("{:?}", stack_services("gitops"))) }
    });
}

/// A POST to labd's `--http` as a Git host sends it; the status code and body.
fn post_hook(port: u16, headers: &[(&str, String)], body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("labd listens on --http");
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    write!(s, "POST /hooks/git HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}", body.len()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), body.to_string())
}

/// GitHub's signature of `body` with `secret`.
fn github_signature(secret: &str, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `labctl reconcile LAB` with an interval of an hour: the push is fetched at once, and the
/// command returns once the lab is Ready at it; then a push webhook, signed as GitHub signs;
/// a failed fetch and a missing labd are said.
#[test]
fn labctl_reconcile_and_a_push_webhook_fetch_at_once_and_a_lab_is_ready_at_that_commit() {
    let mut lab = Lab::new();
    let Served { repo, daemon, url, cache, first, .. } = served(&mut lab);
    let (http, secret) = (free_port(), "It's a Secret to Everybody");
    let secret_file = lab.dir.path().join("webhook-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    lab.start_labd_args(&["--git", &url, "--path", "labs", "--interval", "1h", "--git-cache", cache.to_str().unwrap(), "--http", &format!("127.0.0.1:{http}"), "--webhook-secret-file", secret_file.to_str().unwrap()]);
    wait_applied(&lab, &first, 1, READY);

    let second = commit(&repo, "labs/gitops.yaml", &lab_text("2"), "two replicas");
    let started = Instant::now();
    let out = lab.labctl(&["reconcile", "gitops", "--timeout", "60s"]);
    let took = started.elapsed().as_secs_f64();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains(&format!("commit {} (a new commit, applied)", &second[..7])) && said.contains("gitops is Ready"), "{said}");
    // Returned once it was so: read right after, not waited for.
    let s = lab.status_json("gitops").expect("status");
    assert_eq!((s["commit"].as_str(), s["phase"].as_str(), s["services"]["web"]["running"].as_u64()), (Some(second.as_str()), Some("Ready"), Some(2)), "{s}");
    println!("GIT | commit pushed, `labctl reconcile gitops` → returned Ready at that commit | {took:.1} s (interval 1 h) |");

    let out = lab.labctl(&["reconcile"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && said.contains("(no new commit)") && said.contains("looked at again: gitops"), "{said}");

    // The push webhook: refused unsigned or signed with another secret (nothing fetched), a
    // ping answered, then a signed push fetched at once.
    let third = commit(&repo, "labs/gitops.yaml", &lab_text("3"), "three replicas");
    let push = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{third}\"}}");
    let (code, said) = post_hook(http, &[], &push);
    assert_eq!(code, 401, "{said}");
    let (code, said) = post_hook(http, &[("X-GitHub-Event", "push".into()), ("X-Hub-Signature-256", github_signature("another secret", &push))], &push);
    assert_eq!((code, said.trim()), (401, "the signature or token does not match the webhook secret"));
    let (code, said) = post_hook(http, &[("X-GitHub-Event", "ping".into()), ("X-Hub-Signature-256", github_signature(secret, "{}"))], "{}");
    assert_eq!(code, 200, "{said}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.status_json("gitops").expect("status")["commit"], second, "fetched without a valid push");
    let started = Instant::now();
    let (code, said) = post_hook(http, &[("X-GitHub-Event", "push".into()), ("X-Hub-Signature-256", github_signature(secret, &push))], &push);
    assert_eq!(code, 202, "{said}");
    wait_applied(&lab, &third, 3, Duration::from_secs(30));
    println!("GIT | commit pushed, push webhook → Ready at that commit | {:.1} s (interval 1 h) |", started.elapsed().as_secs_f64());

    drop(daemon);
    let out = lab.labctl(&["reconcile", "gitops", "--timeout", "60s"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("fetching `main` of") && err.contains(&format!("labs stay at commit {}", &third[..7])), "{err}");

    lab.kill_labd();
    let out = lab.labctl(&["reconcile", "gitops"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no labd listens on"), "{err}");
}
