//! `labctl`: validate lab files, print the schema, and read the status labd writes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use comfy_table::{presets::NOTHING, Table};
use swarmlab::source::{load_dir, LabEntry};
use swarmlab::status::LabStatus;
use swarmlab::store::{keys, StoreReader};

#[derive(Parser)]
#[command(name = "labctl", version, about = "Inspect and validate swarmlab labs", long_about = None)]
struct Cli {
    /// Where labd writes status.
    #[arg(long, global = true, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// Check lab files or directories; print every error as path:line:column: field: message.
    Validate {
        /// Files or directories (read recursively).
        #[arg(default_value = "labs")]
        paths: Vec<PathBuf>,
    },
    /// Show labs at a glance: phase, ready services, revision, age, message.
    Status {
        /// One lab; all labs when omitted.
        lab: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        /// Refresh every two seconds until interrupted.
        #[arg(short, long)]
        watch: bool,
    },
    /// Conditions, services and recent events of one lab.
    Describe { lab: String },
    /// What labd would do to make Swarm match DIR, without doing it.
    Diff {
        #[arg(default_value = "labs")]
        dir: PathBuf,
        /// Docker daemon (default: the local socket, or DOCKER_HOST).
        #[arg(long, env = "DOCKER_HOST")]
        docker_host: Option<String>,
    },
    /// Measure round trip and loss from a task of SERVICE to the tasks of other services,
    /// from inside the task's network namespace (run on the node of that task).
    Probe {
        lab: String,
        service: String,
        /// Target services (short names); default: every other service of the lab.
        #[arg(long = "to")]
        to: Vec<String>,
        /// Probes per target.
        #[arg(short, long, default_value_t = 50)]
        count: u32,
        /// Milliseconds between probes.
        #[arg(long, default_value_t = 20)]
        interval: u32,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Print the JSON Schema of the Lab resource.
    Schema,
    /// Print shell completions, e.g. `labctl completions bash > /etc/bash_completion.d/labctl`.
    Completions { shell: clap_complete::Shell },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { paths } => return validate(&paths),
        Command::Schema => {
            print!("{}", swarmlab::spec::schema::lab_schema_text());
            return ExitCode::SUCCESS;
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "labctl", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Status { lab, output, watch } => status(&cli.redis, lab.as_deref(), output, watch).await,
        Command::Describe { lab } => describe(&cli.redis, &lab).await,
        Command::Diff { dir, docker_host } => diff(&dir, docker_host.as_deref()).await,
        Command::Probe { lab, service, to, count, interval, output } => probe(&cli.redis, &lab, &service, to, count, interval, output).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("labctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(paths: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in paths {
        let catalog = match load_dir(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        for d in catalog.diagnostics() {
            println!("{d}");
            failed = true;
        }
        for (name, entry) in &catalog.labs {
            if let LabEntry::Valid(lab) = entry {
                let services = lab.lab.spec.services.len();
                let replicas: u32 = lab.lab.resolved_services().map(|(_, s)| s.replicas.unwrap_or(1)).sum();
                let networks = lab.lab.network_names().len();
                println!("valid   {name:<20} revision {}  {services} services, {replicas} replicas, {networks} networks", lab.revision);
            }
        }
        if catalog.labs.is_empty() && catalog.file_errors.is_empty() {
            println!("no labs in {}", path.display());
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn reader(url: &str) -> anyhow::Result<StoreReader> {
    StoreReader::connect(url)
        .await
        .with_context(|| format!("cannot reach redis at {url}: is labd's redis running? (set --redis or REDIS_URL)"))
}

fn age(status: &LabStatus) -> String {
    let Some(created) = status.created_at else { return "-".into() };
    let secs = (chrono::Utc::now() - created).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn shaping_cell(s: &LabStatus) -> String {
    match s.condition(swarmlab::status::condition_types::SHAPING_APPLIED) {
        None => "-".into(),
        Some(c) if c.message == "no conditions" => "-".into(),
        Some(c) if c.status == "True" => c.message.split(" tasks shaped").next().map(|n| format!("{n} tasks")).unwrap_or_default(),
        Some(c) => c.reason.clone(),
    }
}

fn status_table(statuses: &[LabStatus]) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["NAME", "PHASE", "READY", "SHAPING", "REVISION", "AGE", "MESSAGE"]);
    for s in statuses {
        let (ready, total) = s.ready_services();
        let mut message = s.message.clone();
        if let Some(b) = &s.backoff {
            message = format!("{message} (retry {} at {})", b.attempt, b.next_try.format("%H:%M:%S"));
        }
        t.add_row([
            s.name.clone(),
            s.phase.to_string(),
            format!("{ready}/{total}"),
            shaping_cell(s),
            s.revision.chars().take(8).collect(),
            age(s),
            message,
        ]);
    }
    t.to_string().lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
}

async fn status(url: &str, lab: Option<&str>, output: Output, watch: bool) -> anyhow::Result<ExitCode> {
    let mut r = reader(url).await?;
    loop {
        let names = match lab {
            Some(l) => vec![l.to_string()],
            None => r.labs().await?,
        };
        let mut statuses = Vec::new();
        for n in &names {
            match r.status(n).await? {
                Some(s) => statuses.push(s),
                None if lab.is_some() => anyhow::bail!("no status for lab `{n}`: is it in labd's labs directory, and is labd running?"),
                None => {}
            }
        }
        let text = match output {
            Output::Table if statuses.is_empty() => "no labs (is labd running?)".to_string(),
            Output::Table => status_table(&statuses),
            Output::Json if lab.is_some() => serde_json::to_string_pretty(&statuses[0])?,
            Output::Json => serde_json::to_string_pretty(&statuses)?,
            Output::Yaml if lab.is_some() => serde_yaml_ng::to_string(&statuses[0])?,
            Output::Yaml => serde_yaml_ng::to_string(&statuses)?,
        };
        if !watch {
            println!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        print!("\x1b[2J\x1b[H{text}\n");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

async fn describe(url: &str, lab: &str) -> anyhow::Result<ExitCode> {
    let mut r = reader(url).await?;
    let Some(s) = r.status(lab).await? else {
        anyhow::bail!("no status for lab `{lab}`: is it in labd's labs directory, and is labd running?");
    };
    println!("Name:         {}", s.name);
    println!("Phase:        {}", s.phase);
    println!("Message:      {}", s.message);
    println!("Revision:     {}", s.revision);
    println!("Generation:   {} (observed {})", s.generation, s.observed_generation);
    if let Some(e) = &s.last_error {
        println!("Last error:   {e}");
    }
    if let Some(b) = &s.backoff {
        println!("Backoff:      attempt {}, next try {}", b.attempt, b.next_try.to_rfc3339());
    }
    println!("\nConditions:");
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]);
    for c in &s.conditions {
        t.add_row([c.type_.clone(), c.status.clone(), c.reason.clone(), c.last_transition_time.format("%H:%M:%S").to_string(), c.message.clone()]);
    }
    println!("{t}");
    println!("\nServices:");
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["SERVICE", "RUNNING", "DESIRED", "MESSAGE"]);
    for (name, svc) in &s.services {
        t.add_row([name.clone(), svc.running.to_string(), svc.desired.to_string(), svc.message.clone()]);
    }
    println!("{t}");
    let tasks = r.task_shaping(lab).await.unwrap_or_default();
    if !tasks.is_empty() {
        println!("\nShaping (per task and network; egress):");
        let mut t = Table::new();
        t.load_preset(NOTHING);
        t.set_header(["TASK", "SERVICE", "NODE", "NETWORK", "IF", "BACKEND", "DESIRED", "APPLIED", "COUNTERS", "PROBLEMS"]);
        for task in &tasks {
            for a in &task.attachments {
                let cond = |c: &swarmlab::spec::EffectiveConditions| serde_json::to_string(c).unwrap_or_default().replace('"', "");
                let counters = a.counters.map(|c| format!("seen={} drop={} corrupt={} dup={} reorder={}", c.seen, c.dropped, c.corrupted, c.duplicated, c.reordered)).unwrap_or_default();
                let mut problems: Vec<String> = a.error.iter().cloned().collect();
                problems.extend(a.unsupported.iter().cloned());
                t.add_row([
                    task.container.clone(),
                    task.service.clone(),
                    task.node.clone(),
                    a.network.clone(),
                    a.interface.clone(),
                    a.backend.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
                    cond(&a.desired),
                    cond(&a.applied),
                    counters,
                    problems.join("; "),
                ]);
            }
        }
        println!("{t}");
    }
    let metrics = r.metrics(&keys::metrics(lab)).await.unwrap_or_default();
    if !metrics.is_empty() {
        let line: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("\nMetrics: {}", line.join(" "));
    }
    println!("\nEvents:");
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["TIME", "TYPE", "REASON", "MESSAGE"]);
    for e in r.events(lab, 15).await.unwrap_or_default() {
        t.add_row([e.time.format("%H:%M:%S").to_string(), e.kind, e.reason, e.message]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

async fn diff(dir: &std::path::Path, docker_host: Option<&str>) -> anyhow::Result<ExitCode> {
    use swarmlab::plan::{desired_lab, diff, teardown};
    use swarmlab::swarm::{DockerSwarm, Swarm};
    let catalog = load_dir(dir)?;
    let swarm = DockerSwarm::connect(docker_host).await?;
    let mut changes = 0;
    for (name, entry) in &catalog.labs {
        match entry {
            LabEntry::Valid(v) => {
                let plan = diff(&desired_lab(&v.lab), &swarm.observe(name).await?);
                for c in &plan.conflicts {
                    println!("! {name}: {c}");
                }
                for a in &plan.actions {
                    println!("~ {name}: {}", a.describe());
                    changes += 1;
                }
            }
            LabEntry::Invalid(d) => println!("! {name}: invalid, labd keeps its last good version: {}", d[0]),
        }
    }
    for lab in swarm.owned_labs().await? {
        if !catalog.labs.contains_key(&lab) {
            for a in teardown(&lab, &swarm.observe(&lab).await?).actions {
                println!("- {lab}: {}", a.describe());
                changes += 1;
            }
        }
    }
    if changes == 0 {
        println!("no changes: Swarm matches {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn probe(url: &str, lab: &str, service: &str, to: Vec<String>, count: u32, interval: u32, output: Output) -> anyhow::Result<ExitCode> {
    use swarmlab::shaping::measure::{ping, resolve};
    let full = format!("{lab}_{service}");
    let docker = bollard::Docker::connect_with_local_defaults()?.negotiate_version().await?;
    let filters = std::collections::HashMap::from([
        ("label".to_string(), vec![format!("com.docker.swarm.service.name={full}")]),
        ("status".to_string(), vec!["running".to_string()]),
    ]);
    let containers = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions { filters: Some(filters), ..Default::default() }))
        .await?;
    let Some(id) = containers.first().and_then(|c| c.id.clone()) else {
        anyhow::bail!("no running task of {full} on this node: run `labctl probe` on a node that has one (`docker service ps {full}`)");
    };
    let pid = docker
        .inspect_container(&id, None::<bollard::query_parameters::InspectContainerOptions>)
        .await?
        .state
        .and_then(|s| s.pid)
        .context("the task has no pid")?;
    let targets = if to.is_empty() {
        let mut r = reader(url).await?;
        let status = r.status(lab).await?.with_context(|| format!("no status for lab `{lab}`; name targets with --to"))?;
        status.services.keys().filter(|s| s.as_str() != service).cloned().collect()
    } else {
        to
    };
    let mut rows = Vec::new();
    for target in targets {
        for ip in resolve(pid, &target).await.map_err(anyhow::Error::msg)? {
            let stats = ping(pid, &ip, count, interval).await.map_err(anyhow::Error::msg)?;
            rows.push((target.clone(), ip, stats));
        }
    }
    match output {
        Output::Table => {
            let mut t = Table::new();
            t.load_preset(NOTHING);
            t.set_header(["FROM", "TO", "ADDRESS", "SENT", "RECEIVED", "LOSS", "RTT MIN/AVG/MAX/MDEV (ms)"]);
            for (target, ip, s) in &rows {
                t.add_row([
                    format!("{service} ({})", &id[..12]),
                    target.clone(),
                    ip.clone(),
                    s.sent.to_string(),
                    s.received.to_string(),
                    format!("{:.1}%", s.loss_percent),
                    format!("{:.2}/{:.2}/{:.2}/{:.2}", s.min_ms, s.avg_ms, s.max_ms, s.mdev_ms),
                ]);
            }
            println!("{t}");
        }
        Output::Json | Output::Yaml => {
            let v: Vec<serde_json::Value> = rows
                .iter()
                .map(|(target, ip, s)| serde_json::json!({"from": service, "container": id, "to": target, "address": ip, "stats": s}))
                .collect();
            if matches!(output, Output::Json) { println!("{}", serde_json::to_string_pretty(&v)?) } else { print!("{}", serde_yaml_ng::to_string(&v)?) }
        }
    }
    Ok(ExitCode::SUCCESS)
}
