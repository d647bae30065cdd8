//! `labctl`: validate lab files, print the schema, and read the status labd writes.

//! One subcommand per file; `common` holds what several share.

mod asked;
mod capture;
mod common;
mod cp;
mod describe;
mod diff;
mod events;
mod exec;
mod fmt;
mod graph;
mod import;
mod probe;
mod reconcile;
mod relayed_tasks;
mod report;
mod restart;
mod status;
mod suspend;
mod tasks;
mod terminal;
mod top;
mod validate;
mod wait;
mod logs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "labctl", version, about = "Inspect and validate swarmlab labs", long_about = None)]
struct Cli {
    /// Where labd writes status (`rediss://` for TLS; a client certificate from
    /// REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE).
    #[arg(long, global = true, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
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
    /// Rewrite lab files in one layout, comments kept (exit 1 with --check if any would change).
    Fmt {
        #[arg(default_value = "labs")]
        paths: Vec<PathBuf>,
        /// List the files that would change instead of writing them.
        #[arg(long)]
        check: bool,
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
    /// What each task of a lab uses, on every node: CPU, memory, and traffic on each of the
    /// lab's networks, as the node agents last sampled it.
    Top {
        lab: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        /// Refresh every two seconds until interrupted.
        #[arg(short, long)]
        watch: bool,
    },
    /// What labd did and saw (created, repaired, failed, a schedule's steps), oldest first; all
    /// labs' merged when LAB is left out, as `kubectl events` shows a namespace's.
    Events {
        lab: Option<String>,
        /// Keep printing events as labd writes them (labs that appear meanwhile too).
        #[arg(short, long)]
        watch: bool,
        /// Only these types: Normal, Warning (comma-separated).
        #[arg(long, value_delimiter = ',', value_parser = events::parse_kind)]
        types: Vec<swarmlab::status::EventKind>,
        /// How many of each lab's last events to show first.
        #[arg(short = 'n', long, default_value_t = 50)]
        tail: usize,
        #[arg(short, long, value_enum, default_value = "table")]
        output: events::Format,
    },
    /// What labd would do to make Swarm match DIR, without doing it: the objects it would change, and the conditions it would have the node agents apply (exit 0: nothing, 1: changes, 2: error).
    Diff {
        #[arg(default_value = "labs")]
        dir: PathBuf,
        /// Docker daemon (default: DOCKER_HOST, else the docker CLI's context, else the local socket).
        #[arg(long, env = "DOCKER_HOST")]
        docker_host: Option<String>,
    },
    /// Measure round trip and loss from a task of SERVICE to the tasks of other services,
    /// from inside the task's network namespace (a task on this node, else every task of
    /// SERVICE through the agents of their nodes).
    Probe {
        lab: String,
        /// The service whose task sends the probes.
        service: Option<String>,
        /// Target services (short names); default: every other service of the lab.
        #[arg(long = "to")]
        to: Vec<String>,
        /// Every pair of services with a task on this node: a table of RTTs beside what the
        /// lab asks.
        #[arg(long, conflicts_with = "service")]
        matrix: bool,
        /// Probes per target.
        #[arg(short, long, default_value_t = 50)]
        count: u32,
        /// Milliseconds between probes.
        #[arg(long, default_value_t = 20)]
        interval: u32,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        /// Docker daemon of the task's node (default: DOCKER_HOST, else the docker CLI's context, else the local socket).
        #[arg(long, env = "DOCKER_HOST")]
        docker_host: Option<String>,
    },
    /// What the lab's tasks wrote, merged in time order and labelled by task (`raft.2 | …`), with
    /// the schedule's steps marked where they came.
    Logs {
        lab: String,
        /// Only these services (short names); default: every service of the lab.
        services: Vec<String>,
        /// Keep printing lines (and steps) as they come; joins tasks Swarm starts meanwhile.
        #[arg(short, long)]
        follow: bool,
        /// Only lines of the last DURATION (90s, 10m, 2h).
        #[arg(long, value_parser = parse_timeout)]
        since: Option<std::time::Duration>,
        /// Only the last N lines of each task.
        #[arg(short = 'n', long)]
        tail: Option<u64>,
        /// Each line's time as Docker recorded it.
        #[arg(short, long)]
        timestamps: bool,
        /// Leave the schedule's steps out.
        #[arg(long)]
        no_steps: bool,
        /// Docker daemon of a manager of the lab's swarm (default: DOCKER_HOST, else the docker CLI's context, else the local socket).
        #[arg(long, env = "DOCKER_HOST")]
        docker_host: Option<String>,
    },
    /// Run a command in a task of the lab (SERVICE.SLOT), or in every task of SERVICE, as
    /// `docker exec` does; exits with the command's status. Tasks on other nodes are reached
    /// through their agents (started with --allow-exec).
    #[command(after_help = "Examples:\n  labctl exec raft raft.2 -- ip addr\n  labctl exec raft raft -- ss -tn     # every raft task, lines labelled raft.N\n  labctl exec -it raft raft.1 -- sh   # a shell's prompt in raft.1\n  echo 'SET k v' | labctl exec -i kv kv.1 -- redis-cli")]
    Exec {
        lab: String,
        /// SERVICE.SLOT (one task) or SERVICE (each of its tasks, on every node).
        target: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
        /// Pass labctl's standard input to the command (one task, on any node).
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Give the command a terminal (one task, on any node); with -i, a shell's prompt.
        #[arg(short = 't', long)]
        tty: bool,
        /// Docker daemon of the task's node (default: DOCKER_HOST, else the docker CLI's context, else the local socket).
        #[arg(long, env = "DOCKER_HOST")]
        docker_host: Option<String>,
    },
    /// Capture the frames the lab's tasks send and receive on its networks, on every node (this
    /// node's from here, the others' through their agents): a line per frame, or pcapng for
    /// Wireshark (an interface per task and network, the tasks' names for their addresses).
    #[command(after_help = "Examples:\n  labctl capture raft                               # every task, every lab network, a line per frame\n  labctl capture raft raft.2 --network lan -c 20\n  labctl capture raft -w raft.pcapng --duration 30s  # then: wireshark raft.pcapng\n  labctl capture raft -w - | wireshark -k -i -      # live\n\nRun it as root on a node of the swarm: it enters this node's tasks' network namespaces;\neach other node's agent (`labd agent`, with the same Redis) captures its own.")]
    Capture {
        lab: String,
        /// SERVICE.SLOT (one task) or SERVICE (each of its tasks); every service when left out.
        target: Option<String>,
        /// Only this network of the lab (repeat for more); every lab network of the task by default.
        #[arg(long = "network", short = 'n', value_name = "NETWORK")]
        networks: Vec<String>,
        /// Write pcapng to FILE (`-` for stdout) instead of a line per frame.
        #[arg(short = 'w', long = "write", value_name = "FILE")]
        write: Option<PathBuf>,
        /// Stop after this many frames (of all the interfaces together).
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Stop after this long (seconds, or a duration such as 30s, 5m).
        #[arg(long, value_parser = parse_timeout)]
        duration: Option<std::time::Duration>,
        /// Bytes kept of each frame (its length on the wire is recorded whole).
        #[arg(long, default_value_t = 262_144)]
        snaplen: usize,
        /// Docker daemon of this machine's node (default: DOCKER_HOST, else the docker CLI's context, else the local socket): the
        /// tasks' pids must be this kernel's.
        #[arg(long, env = "DOCKER_HOST")]
        docker_host: Option<String>,
    },
    /// Copy a file or directory out of each task of SERVICE (or the one in SLOT) on this node
    /// into DEST/SERVICE.SLOT/, as `docker cp` does; ended tasks count (a job's results).
    #[command(after_help = "Examples:\n  labctl cp raft raft:/var/log/raft results/     # results/raft.1/raft, results/raft.2/raft, …\n  labctl cp kv-bench load:/results out/          # a job's results, once `labctl wait kv-bench --for jobs`")]
    Cp {
        lab: String,
        /// SERVICE[.SLOT]:PATH, the path absolute.
        source: String,
        /// The directory the tasks' copies go in (one directory per task).
        dest: PathBuf,
        /// Docker daemon of the tasks' node (default: DOCKER_HOST, else the docker CLI's context, else the local socket).
        #[arg(long, env = "DOCKER_HOST")]
        docker_host: Option<String>,
    },
    /// Wait until a lab is Ready (or its jobs done, Completed, deleted, or at a step of its
    /// schedule); exit 1 with the reason on timeout.
    Wait {
        lab: String,
        /// ready, jobs (Ready and every job's run completed), completed, deleted, or step=N
        /// (step N of the schedule in force and applied by every agent, or passed).
        #[arg(long = "for", default_value = "ready")]
        target: wait::WaitFor,
        /// Seconds (or a duration such as 90s, 5m).
        #[arg(long, default_value = "120s", value_parser = parse_timeout)]
        timeout: std::time::Duration,
    },
    /// Draw a lab: services, networks, and the conditions on each attachment.
    Graph {
        /// A lab name (its file found through labd's status) or a lab file.
        lab: String,
        #[arg(short, long, value_enum, default_value = "mermaid")]
        output: graph::Format,
    },
    /// Stop labd from changing LAB (drift stays, file changes wait) until `labctl resume`.
    Suspend { lab: String },
    /// Let labd reconcile LAB again.
    Resume { lab: String },
    /// Start (or start again) the `start: manual` schedule of LAB now.
    Start { lab: String },
    /// Have labd read its labs now (fetch its Git branch, or read its directory again) and
    /// look at LAB (or every lab) at once, as `flux reconcile`; with LAB, wait until it is
    /// Ready after that look.
    Reconcile {
        lab: Option<String>,
        /// Seconds (or a duration such as 90s, 5m).
        #[arg(long, default_value = "120s", value_parser = parse_timeout)]
        timeout: std::time::Duration,
    },
    /// Replace every task of the lab's services (or of SERVICEs), one after the other, as
    /// `kubectl rollout restart`; waits until Swarm has replaced them. Jobs run again only when
    /// named.
    Restart {
        lab: String,
        /// Only these services (short names).
        services: Vec<String>,
        /// Return once Swarm has the restart, without waiting for the tasks.
        #[arg(short, long)]
        detach: bool,
        /// How long to wait for the new tasks (exit 1 after).
        #[arg(long, default_value = "120s", value_parser = parse_timeout)]
        timeout: std::time::Duration,
        /// Docker daemon of a manager (default: DOCKER_HOST, else the docker CLI's context, else the local socket).
        #[arg(long, env = "DOCKER_HOST")]
        docker_host: Option<String>,
    },
    /// Convert a Compose file into a lab (every field that does not carry over is noted).
    Import {
        file: PathBuf,
        /// The lab's name (default: the Compose project name, the file's directory).
        #[arg(long)]
        name: Option<String>,
        /// Write the lab here instead of to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Use a local image: SERVICE=IMAGE, COMPOSE_IMAGE=IMAGE, or *=IMAGE (repeatable).
        #[arg(long = "image")]
        images: Vec<String>,
        /// Enable a Compose profile (repeatable; `*` all), as `docker compose --profile`: a
        /// service in profiles none of which is enabled is not imported.
        #[arg(long = "profile")]
        profiles: Vec<String>,
    },
    /// One HTML file: the lab's definition, its timeline, and plots of its probes.
    Report {
        lab: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// html, or json (every sample as stored, for one's own analysis); default: as the
        /// output file is named, else html.
        #[arg(long, value_enum)]
        format: Option<report::Format>,
    },
    /// Print the JSON Schema of the Lab resource.
    Schema,
    /// Print shell completions, e.g. `labctl completions bash > /etc/bash_completion.d/labctl`.
    Completions { shell: clap_complete::Shell },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `labctl status | head` would panic printing to a closed pipe; a
    // command-line tool ends quietly there, as `ls | head` does.
    // SAFETY: restoring a signal's default action, before any other thread exists.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { paths } => return validate::run(&paths),
        Command::Fmt { paths, check } => return fmt::run(&paths, check),
        Command::Import { file, name, output, images, profiles } => {
            return match import::run(&file, name.as_deref(), output.as_deref(), &images, &profiles) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("labctl import: {}", swarmlab::error_chain::Chain(e.as_ref()));
                    ExitCode::from(2)
                }
            }
        }
        Command::Schema => {
            print!("{}", swarmlab::spec::schema::lab_schema_text());
            return ExitCode::SUCCESS;
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "labctl", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Status { lab, output, watch } => status::run(&cli.redis, lab.as_deref(), output, watch).await,
        Command::Describe { lab } => describe::run(&cli.redis, &lab).await,
        Command::Events { lab, watch, types, tail, output } => events::run(&cli.redis, events::Args { lab, watch, types, tail, format: output }).await,
        Command::Top { lab, output, watch } => top::run(&cli.redis, &lab, output, watch).await,
        Command::Graph { lab, output } => graph::run(&cli.redis, &lab, output).await,
        Command::Report { lab, output, format } => report::run(&cli.redis, &lab, output.as_deref(), report::Format::of(format, output.as_deref())).await,
        Command::Restart { lab, services, detach, timeout, docker_host } => restart::run(&cli.redis, docker_host.as_deref(), restart::Args { lab, services, detach, timeout }).await,
        Command::Suspend { lab } => suspend::run(&cli.redis, &lab, true).await,
        Command::Resume { lab } => suspend::run(&cli.redis, &lab, false).await,
        Command::Start { lab } => suspend::start(&cli.redis, &lab).await,
        Command::Reconcile { lab, timeout } => reconcile::run(&cli.redis, lab.as_deref(), timeout).await,
        Command::Wait { lab, target, timeout } => return wait::run(&cli.redis, &lab, target, timeout).await,
        Command::Diff { dir, docker_host } => return diff::run(&cli.redis, &dir, docker_host.as_deref()).await,
        Command::Logs { lab, services, follow, since, tail, timestamps, no_steps, docker_host } => {
            logs::run(&cli.redis, docker_host.as_deref(), logs::Args { lab, services, follow, since, tail, timestamps, steps: !no_steps }).await
        }
        Command::Capture { lab, target, networks, write, count, duration, snaplen, docker_host } => {
            capture::run(&cli.redis, docker_host.as_deref(), capture::Args { lab, target, networks, write, count, duration, snaplen }).await
        }
        Command::Cp { lab, source, dest, docker_host } => cp::run(&cli.redis, docker_host.as_deref(), cp::Args { lab, source, dest }).await,
        Command::Exec { lab, target, command, interactive, tty, docker_host } => exec::run(&cli.redis, docker_host.as_deref(), exec::Args { lab, target, command, stdin: interactive, tty }).await,
        Command::Probe { lab, service, to, matrix, count, interval, output, docker_host } => {
            probe::run(&cli.redis, docker_host.as_deref(), probe::Args { lab, service, to, matrix, count, interval, output }).await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("labctl: {}", swarmlab::error_chain::Chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}


fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    text.parse::<swarmlab::spec::units::Duration>().map(|d| d.as_std()).map_err(|e| e.to_string())
}
