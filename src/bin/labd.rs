//! `labd`: keeps a Docker Swarm equal to a directory of Lab resources.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use swarmlab::agent::{Agent, AgentConfig};
use swarmlab::shaping::BackendKind;
use swarmlab::controller::{Config, Controller};
use swarmlab::http::Role;
use swarmlab::status::Phase;
use swarmlab::store::RedisStore;
use swarmlab::swarm::DockerSwarm;

#[derive(Parser, Debug)]
#[command(name = "labd", version, about = "Reconcile a Docker Swarm to a directory of swarmlab labs")]
struct Cli {
    /// The labs directory (read recursively; a symlink is followed).
    #[arg(long, env = "LABD_LABS", default_value = "./labs")]
    labs: PathBuf,
    /// Read labs from this Git repository instead (file://, git://, ssh:// or user@host:path);
    /// labd fetches it itself and applies each new commit of --branch as one change (--labs is
    /// then not read).
    #[arg(long, env = "LABD_GIT")]
    git: Option<String>,
    /// With --git: the branch to follow.
    #[arg(long, env = "LABD_GIT_BRANCH", default_value = "main", requires = "git")]
    branch: String,
    /// With --git: the directory of the repository that holds the labs (default: all of it).
    // A string: clap refuses an empty path, and a stack file's unset variable is one.
    #[arg(long, env = "LABD_GIT_PATH", requires = "git")]
    path: Option<String>,
    /// With --git: how often to fetch (`30s`, `5m`).
    #[arg(long, env = "LABD_GIT_INTERVAL", default_value = "30s", value_parser = parse_duration, requires = "git")]
    interval: Duration,
    /// With --git: labd's own clone (bare) lives under this directory.
    #[arg(long, env = "LABD_GIT_CACHE", default_value = "/var/cache/swarmlab/git", requires = "git")]
    git_cache: PathBuf,
    /// With --git over HTTPS: a file holding `username:password` (a token as the password);
    /// without it, Git's credential helpers apply. SSH uses `ssh` (GIT_SSH_COMMAND is honoured).
    #[arg(long, env = "LABD_GIT_CREDENTIALS", requires = "git")]
    git_credentials: Option<PathBuf>,
    /// Where status, events and metrics go (`rediss://` for TLS; a client certificate from
    /// REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", global = true)]
    redis: String,
    /// Docker daemon: unix:///path, tcp://host:port or ssh://[user@]host[:port] (default:
    /// DOCKER_HOST, else the docker CLI's context, else the local socket).
    #[arg(long, env = "DOCKER_HOST", global = true)]
    docker_host: Option<String>,
    /// Seconds between full resyncs of every lab.
    #[arg(long, env = "LABD_RESYNC", default_value_t = 15)]
    resync: u64,
    /// Converge once, wait until every lab is Ready, then exit (non-zero if not Ready in time).
    #[arg(long)]
    once: bool,
    /// With --once: seconds to wait for Ready.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Do not run the node agent in-process (shaping is then up to `labd agent` elsewhere).
    #[arg(long, env = "LABD_NO_AGENT")]
    no_agent: bool,
    /// Shaping backend: auto picks netem where the kernel has it, else userspace (NFQUEUE).
    #[arg(long, env = "LABD_SHAPING_BACKEND", value_enum, default_value = "auto", global = true)]
    shaping_backend: BackendChoice,
    /// This node's name in status (default: the hostname).
    #[arg(long, env = "LABD_NODE", global = true)]
    node: Option<String>,
    /// Seconds a lab must stay undefined (over two or more complete reads of the directory)
    /// before it is torn down: a file rewritten in place, moved, or swapped by a Git sync
    /// comes back within it.
    #[arg(long, env = "LABD_DELETE_GRACE", default_value_t = 5.0)]
    delete_grace: f64,
    /// Allow an empty labs directory at start to prune every lab labd owns (Argo CD's
    /// allowEmpty). Without it such labs are reported as Orphaned and left running.
    #[arg(long, env = "LABD_ALLOW_EMPTY")]
    allow_empty: bool,
    /// Remove orphaned labs: owned labs whose file was never in this labs directory (or is
    /// not remembered). Without it they are reported as Orphaned and left running.
    #[arg(long, env = "LABD_PRUNE_ORPHANS")]
    prune_orphans: bool,
    /// Seconds the leader lease lasts without renewal (a standby takes over after this).
    #[arg(long, env = "LABD_LEASE_TTL", default_value_t = 15)]
    lease_ttl: u64,
    /// Serve /metrics (Prometheus), /healthz and /readyz here; `off` to serve nothing.
    /// Default 127.0.0.1:9464, and 127.0.0.1:9465 for `labd agent`.
    #[arg(long, env = "LABD_HTTP", global = true)]
    http: Option<String>,
    /// Serve `POST /hooks/git` on --http: a Git host's push webhook signed with (GitHub, Gitea,
    /// Forgejo) or carrying (GitLab's X-Gitlab-Token, Authorization: Bearer) the secret in this
    /// file has labd fetch its branch at once.
    #[arg(long, env = "LABD_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// How often the node agent samples what each task uses (CPU, memory, traffic per lab
    /// network: `labctl top`, and the `swarmlab_task_*` series); `0s` never.
    #[arg(long, env = "LABD_USAGE_INTERVAL", default_value = "5s", value_parser = parse_usage_interval, global = true)]
    usage_interval: Duration,
    /// How long a deleted lab's probe results and usage samples stay in Redis (`labctl report
    /// LAB` after the lab is gone): `15d`, `36h`. Kept for good while the lab lives.
    #[arg(long, env = "LABD_HISTORY_RETENTION", default_value = "15d", value_parser = parse_retention)]
    history_retention: Duration,
    /// Run the commands `labctl exec` on another node asks for in this node's tasks, and give
    /// `labctl cp` their files (off by default: whoever can write to Redis could then run
    /// commands in the lab's tasks).
    #[arg(long, env = "LABD_ALLOW_EXEC", global = true)]
    allow_exec: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run only the node agent: shape the tasks of this node (for the other nodes of a swarm).
    Agent,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendChoice {
    Auto,
    Netem,
    Userspace,
}

impl BackendChoice {
    fn forced(self) -> Option<BackendKind> {
        match self {
            BackendChoice::Auto => None,
            BackendChoice::Netem => Some(BackendKind::Netem),
            BackendChoice::Userspace => Some(BackendKind::Userspace),
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: swarmlab::spec::units::Duration = text.parse().map_err(|e| format!("{e}"))?;
    Ok(d.as_std().max(Duration::from_secs(1)))
}

/// Whole days, hours, minutes or seconds (`15d`, `36h`), as Prometheus's retention reads
/// them: the lab file's durations stop at a day.
fn parse_retention(text: &str) -> Result<Duration, String> {
    let unit = |suffix: char, seconds: u64| text.strip_suffix(suffix).and_then(|n| n.parse::<u64>().ok()).map(|n| n.saturating_mul(seconds));
    match unit('d', 86_400).or_else(|| unit('h', 3600)).or_else(|| unit('m', 60)).or_else(|| unit('s', 1)) {
        Some(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(format!("`{text}`: a whole number of days, hours, minutes or seconds from 1, e.g. `15d` or `36h`")),
    }
}

fn parse_usage_interval(text: &str) -> Result<Duration, String> {
    let d: swarmlab::spec::units::Duration = text.parse().map_err(|e| format!("{e}"))?;
    Ok(d.as_std())
}

fn agent_config(cli: &Cli) -> AgentConfig {
    let node = cli.node.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "node".into())
    });
    AgentConfig {
        redis_url: cli.redis.clone(),
        node,
        forced_backend: cli.shaping_backend.forced(),
        interval: Duration::from_millis(500),
        readback_every: 6,
        watched_readback_every: 120,
        desired_poll_every: 20,
        usage_every: Some(cli.usage_interval).filter(|d| !d.is_zero()),
        allow_exec: cli.allow_exec,
    }
}

/// glibc's allocator, tuned for a daemon that idles between bursts of reconciles: one arena
/// (by default each thread that ever allocated under contention gets one of its own, up to 8
/// per core, and keeps its freed memory; small allocations stay lock-free in each thread's
/// cache either way), and freed memory handed back to the kernel every 30 s. Measured with 100
/// labs: 4 MB less resident with one arena, 1.5 MB less with two.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod allocator {
    use nix::libc;

    pub fn limit_arenas() {
        // SAFETY: mallopt only sets a parameter of the allocator; called before any thread.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }

    pub fn give_back_periodically() {
        tokio::spawn(async {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                every.tick().await;
                // SAFETY: malloc_trim releases free pages of the arenas; no pointer is touched.
                unsafe { libc::malloc_trim(0) };
            }
        });
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod allocator {
    pub fn limit_arenas() {}
    pub fn give_back_periodically() {}
}

fn main() -> ExitCode {
    allocator::limit_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("labd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main())
}

async fn async_main() -> ExitCode {
    allocator::give_back_periodically();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,bollard=warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("labd: {}", swarmlab::error_chain::Chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `--once` waits for Docker no longer than for its labs.
    let patience = cli.once.then(|| Duration::from_secs(cli.timeout));
    let Some(swarm) = connect_when_up(cli.docker_host.as_deref(), patience).await? else {
        return Ok(ExitCode::SUCCESS); // stopped while waiting
    };
    // The Engine's version, the first thing a bug report needs (labd's alone: labctl skips it).
    match swarm.docker().version().await {
        Ok(v) => tracing::info!(engine = %v.version.unwrap_or_default(), api = %v.api_version.unwrap_or_default(), "connected to Docker"),
        Err(e) => tracing::warn!(error = %e, "connected to Docker; its version is unknown"),
    }
    let metrics = std::sync::Arc::new(swarmlab::metrics::Metrics::new());
    let (role_tx, role_rx) = tokio::sync::watch::channel(Role::Starting);
    if matches!(cli.command, Some(Cmd::Agent)) {
        let _http = serve_http(cli.http.as_deref().unwrap_or("127.0.0.1:9465"), metrics.clone(), role_rx, None, None, None).await?;
        role_tx.send_replace(Role::Agent);
        let agent = Agent::new(agent_config(&cli), swarm.clone()).with_metrics(metrics);
        agent.run(shutdown_signal()).await;
        return Ok(ExitCode::SUCCESS);
    }
    // Stop on the first signal, wherever labd is (standing by, leading, or between the two).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = std::sync::Arc::new(stop_tx);
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = on_signal.send(true);
    });
    let stopped = |rx: &tokio::sync::watch::Receiver<bool>| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    // The node agent shapes this node's tasks whoever leads: losing the lease (or Redis) must
    // not change the data plane.
    let agent_task = (!cli.no_agent).then(|| {
        let agent = Agent::new(agent_config(&cli), swarm.clone()).with_metrics(metrics.clone());
        tokio::spawn(agent.run(stopped(&stop_rx)))
    });
    let (view_tx, view_rx) = tokio::sync::watch::channel(BTreeMap::new());
    let view_tx = std::sync::Arc::new(view_tx);
    let webhook = cli.webhook_secret_file.clone().map(|secret_file| swarmlab::http::Webhook { secret_file, redis_url: cli.redis.clone() });
    let _http = serve_http(cli.http.as_deref().unwrap_or("127.0.0.1:9464"), metrics.clone(), role_rx, Some(view_rx), Some(cli.redis.clone()), webhook).await?;
    let store = RedisStore::new(&cli.redis).with_context(|| format!("bad redis URL {}", cli.redis))?.with_history_retention(cli.history_retention);
    // Stopped last, once the controller has finished: its last statuses and its word that it
    // stopped are in the final flush (on the signal itself, that flush raced the controller's
    // last writes and lost them at times).
    let (store_stop_tx, store_stop_rx) = tokio::sync::watch::channel(false);
    let store_task = tokio::spawn(store.clone().run(stopped(&store_stop_rx)));
    // One labd reconciles a swarm at a time; a second one stands by here.
    // Unique even for two replicas on one node with the same pid (containers).
    let holder = format!("{}:{}:{:08x}", agent_config(&cli).node, std::process::id(), rand::random::<u32>());
    let lease = std::sync::Arc::new(
        swarmlab::store::lease::Lease::new(&cli.redis, holder, Duration::from_secs(cli.lease_ttl.max(3)))
            .with_context(|| format!("bad redis URL {}", cli.redis))?,
    );
    // An empty LABD_GIT (a stack file's unset variable) means the directory.
    let git = cli.git.as_ref().filter(|url| !url.is_empty()).map(|url| swarmlab::controller::GitConfig {
        source: swarmlab::source::GitSource {
            url: url.clone(),
            branch: cli.branch.clone(),
            path: PathBuf::from(cli.path.clone().unwrap_or_default()),
            cache: swarmlab::source::GitSource::default_cache(&cli.git_cache, url, &cli.branch),
            credentials: cli.git_credentials.clone(),
        },
        interval: cli.interval,
    });
    let config = Config {
        labs_dir: cli.labs.clone(),
        git,
        resync: Duration::from_secs(cli.resync.max(1)),
        progress_poll: Duration::from_millis(250),
        delete_grace: Duration::from_secs_f64(cli.delete_grace.clamp(0.0, 86_400.0)),
        allow_empty: cli.allow_empty,
        prune_orphans: cli.prune_orphans,
        heartbeat: Duration::from_secs(5),
    };
    match &config.git {
        Some(git) => tracing::info!(git = %git.source.shown_url(), branch = %cli.branch, path = ?cli.path, interval = ?cli.interval, redis = %cli.redis, "labd starting"),
        None => tracing::info!(labs = %cli.labs.display(), redis = %cli.redis, "labd starting"),
    }
    let code = loop {
        role_tx.send_replace(Role::StandingBy);
        metrics.set_leader(false);
        tokio::select! {
            token = lease.acquire() => store.fence_with(token),
            _ = stopped(&stop_rx) => break ExitCode::SUCCESS,
        }
        role_tx.send_replace(Role::Leading);
        metrics.set_leader(true);
        let lost = keep_lease(lease.clone());
        let controller = Controller::new(config.clone(), swarm.clone(), store.clone()).await.with_metrics(metrics.clone()).with_view(view_tx.clone());
        if cli.once {
            break run_once(&cli, controller, view_tx.subscribe()).await?;
        }
        tokio::select! {
            _ = controller.run(stopped(&stop_rx)) => break ExitCode::SUCCESS,
            _ = lost => {
                // Not leading any more: stand by again; labs and shaping stay as they are.
                tracing::warn!("stopped reconciling; standing by for the leader lease");
            }
        }
    };
    lease.release().await;
    let _ = stop_tx.send(true);
    if let Some(t) = agent_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let _ = store_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), store_task).await;
    Ok(code)
}

/// Serves /metrics, /healthz and /readyz on `addr` (`off`: nothing).
async fn serve_http(
    addr: &str,
    metrics: std::sync::Arc<swarmlab::metrics::Metrics>,
    role: tokio::sync::watch::Receiver<Role>,
    view: Option<swarmlab::http::LabsView>,
    redis_url: Option<String>,
    webhook: Option<swarmlab::http::Webhook>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if matches!(addr, "off" | "") {
        return Ok(None);
    }
    let addr: std::net::SocketAddr = addr.parse().with_context(|| format!("--http {addr}: expected ADDRESS:PORT, e.g. 0.0.0.0:9464, or off"))?;
    // Reconciling matters more than being scraped: a busy port (a second labd on this host, a
    // standby) is reported, not fatal.
    match swarmlab::http::serve(addr, metrics, role, view, redis_url, webhook).await {
        Ok(task) => Ok(Some(task)),
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve /metrics, /healthz and /readyz (--http); running without them");
            Ok(None)
        }
    }
}

/// Renews the lease in the background; resolves when this labd must stop acting: the lease
/// went to another labd, or could not be renewed within the renew deadline.
fn keep_lease(lease: std::sync::Arc<swarmlab::store::lease::Lease>) -> impl std::future::Future<Output = ()> {
    use swarmlab::store::lease::Renewal;
    let (mut lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        // client-go's renew deadline: a leader that has not renewed within two thirds of the
        // lease stops acting, so it is gone before a standby can take the lease over.
        let deadline = lease.ttl * 2 / 3;
        // The lease was (re)set at or after this instant, so it lasts until at least +ttl.
        let mut held_since = std::time::Instant::now();
        loop {
            let left = deadline.saturating_sub(held_since.elapsed());
            tokio::select! {
                _ = tokio::time::sleep((lease.ttl / 3).min(left)) => {}
                // Not waited on any more (this labd stops, and releases the lease itself): a
                // renewal now would find the lease released and call that lost.
                _ = lost_tx.closed() => return,
            }
            let asked = std::time::Instant::now();
            let left = deadline.saturating_sub(held_since.elapsed());
            match tokio::time::timeout(left, lease.renew()).await {
                Ok(Renewal::Held) => held_since = asked,
                Ok(Renewal::Lost(_)) if lost_tx.is_closed() => return,
                Ok(Renewal::Lost(by)) => {
                    tracing::error!(holder = ?by, "leader lease lost to another labd");
                    break;
                }
                Ok(Renewal::Unknown) | Err(_) if held_since.elapsed() >= deadline => {
                    tracing::error!(deadline = ?deadline, "could not renew the leader lease within its renew deadline (Redis unreachable?); labs keep running");
                    break;
                }
                Ok(Renewal::Unknown) | Err(_) => {}
            }
        }
        let _ = lost_tx.send(());
    });
    async move {
        let _ = lost_rx.await;
    }
}

/// `--once`: converge, wait until every lab of the directory is Ready, report, exit.
async fn run_once(cli: &Cli, controller: Controller<DockerSwarm, RedisStore>, view: tokio::sync::watch::Receiver<BTreeMap<String, swarmlab::http::LabView>>) -> anyhow::Result<ExitCode> {
    let mut phases = controller.phases();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(controller.run(async move {
        let _ = stop_rx.await;
    }));
    let expected: Vec<String> = match swarmlab::source::load_dir(&cli.labs) {
        Ok(c) => c.labs.keys().cloned().collect(),
        Err(e) => anyhow::bail!("{e}"),
    };
    let all_ready = |p: &BTreeMap<String, Phase>| expected.iter().all(|l| p.get(l) == Some(&Phase::Ready));
    let waited = tokio::time::timeout(Duration::from_secs(cli.timeout), phases.wait_for(|p| all_ready(p))).await;
    let ok = matches!(&waited, Ok(Ok(_)));
    drop(waited);
    let _ = stop_tx.send(());
    let _ = handle.await;
    // Each lab's phase, and for one not Ready why (what `labctl status` says): a pipeline's log
    // is all its user sees.
    let last = view.borrow().clone();
    for lab in &expected {
        match last.get(lab).map(|v| &v.status) {
            Some(s) if s.phase == Phase::Ready => eprintln!("{lab}: Ready"),
            Some(s) => eprintln!("{lab}: {}: {}", s.phase, s.message),
            None => eprintln!("{lab}: Pending: labd did not get to it within --timeout {}s", cli.timeout),
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Connects to Docker, waiting for a daemon that does not answer yet (labd started before
/// dockerd, or beside one restarting), as a controller waits for its API server: each try
/// logged with its error, 1 s apart doubling to 30 s, for at most `patience` (`None`: until it
/// answers). A setting that names no daemon labd can use fails at once. `None`: a signal came
/// first.
async fn connect_when_up(host: Option<&str>, patience: Option<Duration>) -> anyhow::Result<Option<DockerSwarm>> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_secs(1);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let e = match DockerSwarm::connect(host).await {
            Ok(swarm) => return Ok(Some(swarm)),
            Err(e @ swarmlab::swarm::SwarmError::Connect(_)) => e,
            Err(e) => return Err(anyhow::Error::new(e).context("connecting to Docker")),
        };
        let waited = started.elapsed();
        if patience.is_some_and(|p| waited + delay > p) {
            return Err(anyhow::Error::new(e).context(format!("connecting to Docker (waited {}s)", waited.as_secs())));
        }
        tracing::warn!(error = %e, retry_in = ?delay, "Docker does not answer yet; waiting for it");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut stop => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// SIGTERM or SIGINT: stop reconciling, leave every lab running.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received: stopping");
}
