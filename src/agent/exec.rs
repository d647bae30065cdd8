//! Commands for a `labctl exec`, and files for a `labctl cp`, run on another node: Docker
//! reaches only the containers of its own node, so each node's agent acts on its own tasks that
//! a request names (`swarmlab:execs`, see `exec_relay`), once per request, and relays what comes
//! out and how each ends to the request's stream in Redis. Off unless the agent is started with
//! `--allow-exec`: whoever can write to Redis could otherwise run commands in the lab's tasks.
//! An agent that does not allow it says so, naming the tasks it left alone, so labctl can say
//! what to do instead of waiting. (`cp` only reads, but what it reads may be as private.) A
//! `labctl probe` is served either way: it runs the host's `ping` in the task's namespace,
//! nothing of the user's.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;

use super::requests::{self, RequestServer, Requests};
use super::usage::Snapshot;
use crate::exec_relay::{ExecInput, ExecRelayed, ExecRequest, TaskAction, DATA_FIELD, HEADER_FIELD, INPUT_GONE_AFTER, STREAM_KEPT};
use crate::store::keys;
use crate::swarm::{task_label, DockerSwarm, ExecOutput, SwarmError};

/// How often the requests are read (a command starts on this node up to this late).
const LOOK_EVERY: Duration = Duration::from_millis(300);
/// A request's stream outlives its labctl (killed before deleting it) by at most this.
const STREAM_EXPIRY_SECS: i64 = 60;
/// Entries a task's output may have waiting in the stream (labctl trims what it has read).
/// Docker's archive comes in pieces of ~64 KB: ~32 MB per task at most (measured: Redis at
/// 67 MB with 1,000 entries waiting).
const BACKLOG: usize = 500;
/// A labctl that reads nothing for this long is gone: the task's relaying stops.
const READER_GONE_AFTER: Duration = Duration::from_secs(30);

pub struct ExecServer {
    swarm: DockerSwarm,
    node: String,
    allowed: bool,
    /// Where a `-i`/`-t` command's input is read from, on a connection of its own (a blocking
    /// read would hold up the output relayed on the shared one).
    redis_url: String,
    requests: Requests,
    /// The requests answered, while they stand: each is served once.
    served: HashSet<String>,
}

impl ExecServer {
    pub fn new(swarm: DockerSwarm, node: String, allowed: bool, redis_url: String) -> ExecServer {
        let requests = Requests::new(keys::EXECS, swarm.clone());
        ExecServer { swarm, node, allowed, redis_url, requests, served: HashSet::new() }
    }
}

impl RequestServer for ExecServer {
    const REQUESTS: &'static str = "exec";
    const LOOK_EVERY: Duration = LOOK_EVERY;

    async fn look(&mut self, conn: &mut redis::aio::MultiplexedConnection, snapshot: &Snapshot) -> Result<(), String> {
        let mut conn = conn.clone();
        let standing: HashMap<String, ExecRequest> = self.requests.standing(&mut conn).await?;
        self.served.retain(|id| standing.contains_key(id));
        for (id, request) in standing {
            if self.served.contains(&id) {
                continue;
            }
            let tasks: Vec<(String, String)> = match &request.action {
                // The running tasks, as the shaping passes know them.
                TaskAction::Run { .. } | TaskAction::Probe { .. } => snapshot.tasks.iter().filter(|t| request.wants(&t.lab, &t.service, t.slot)).map(|t| (t.container.clone(), task_label(&t.service, t.slot, &self.node))).collect(),
                // Each slot's latest container, an ended one too: a job's results.
                TaskAction::Copy { .. } => match self.swarm.latest_task_containers(&request.lab, &request.service, request.slot).await {
                    Ok(containers) => containers.into_iter().map(|c| (c.id, task_label(&c.service, c.slot, &self.node))).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list this node's task containers for labctl cp");
                        vec![]
                    }
                },
            };
            let labels: Vec<String> = tasks.iter().map(|(_, label)| label.clone()).collect();
            let needs_allowing = !matches!(request.action, TaskAction::Probe { .. });
            let refused = (needs_allowing && !self.allowed && !tasks.is_empty())
                .then(|| format!("the agent on {} does not run commands or give files for labctl on other nodes: start it with --allow-exec (LABD_ALLOW_EXEC=true), or run labctl on {}", self.node, self.node));
            let stream = keys::exec(&id);
            let answer = ExecRelayed::Answered { node: self.node.clone(), tasks: labels.clone(), refused: refused.clone() };
            requests::append(&mut conn, &stream, [answer.to_fields()], STREAM_KEPT, STREAM_EXPIRY_SECS).await?;
            self.served.insert(id.clone());
            if refused.is_some() {
                continue;
            }
            if !tasks.is_empty() {
                tracing::info!(exec = %id, lab = %request.lab, tasks = ?labels, action = ?request.action, "acting on this node's tasks for labctl on another node");
            }
            for (container, label) in tasks {
                let run = RunIn { swarm: self.swarm.clone(), conn: conn.clone(), stream: stream.clone(), waiting: 0, node: self.node.clone(), task: label, input: keys::exec_input(&id), redis_url: self.redis_url.clone() };
                tokio::spawn(run.run(container, request.action.clone()));
            }
        }
        Ok(())
    }
}

/// The action in one task, relayed.
struct RunIn {
    swarm: DockerSwarm,
    conn: redis::aio::MultiplexedConnection,
    stream: String,
    /// The stream's length as last seen (after this task's last append): asked of Redis again
    /// only while above `BACKLOG`, not before every piece.
    waiting: usize,
    node: String,
    task: String,
    /// The stream labctl's input comes by (`-i`, `-t`).
    input: String,
    redis_url: String,
}

impl RunIn {
    async fn run(mut self, container: String, action: TaskAction) {
        let outcome = match &action {
            TaskAction::Run { command, stdin, tty } => self.run_command(&container, command, *stdin, *tty).await,
            TaskAction::Copy { path } => self.copy(&container, path).await.map(|()| 0),
            TaskAction::Probe { to, count, interval_ms, first_only } => self.probe(&container, to, *count, *interval_ms, *first_only).await.map(|()| 0),
        };
        let end = match outcome {
            Ok(code) => ExecRelayed::Exited { node: self.node.clone(), task: self.task.clone(), code },
            Err(message) => ExecRelayed::Failed { node: self.node.clone(), task: self.task.clone(), message },
        };
        if let Err(e) = self.add(&end).await {
            tracing::warn!(stream = %self.stream, error = %e, "cannot relay a task's end to Redis");
        }
    }

    /// Runs the command, relaying its output as it comes (and feeding it labctl's input and
    /// terminal size when asked); its exit code.
    async fn run_command(&mut self, container: &str, command: &[String], stdin: bool, tty: bool) -> Result<i64, String> {
        // Docker would say "unpause the container": here a schedule froze it, and holds it so.
        if self.swarm.task_paused(container).await.unwrap_or(false) {
            return Err(format!("{} is frozen by a pause step of the lab's schedule: a command runs in it once the schedule thaws it", self.task));
        }
        let mut exec = self.swarm.exec_in_task(container, command, stdin, tty).await.map_err(|e| format!("cannot run {}: {e}", command.join(" ")))?;
        let feeding = (stdin || tty).then(|| {
            let from = InputFrom { redis_url: self.redis_url.clone(), stream: self.input.clone(), swarm: self.swarm.clone(), exec_id: exec.id.clone() };
            tokio::spawn(from.feed(exec.input.take()))
        });
        let relayed = async {
            while let Some(piece) = exec.output.next().await {
                let (stderr, bytes) = match piece.map_err(|e| e.to_string())? {
                    ExecOutput::Stdout(bytes) => (false, bytes),
                    ExecOutput::Stderr(bytes) => (true, bytes),
                };
                self.output(stderr, bytes).await?;
            }
            Ok::<(), String>(())
        }
        .await;
        if let Some(feeding) = feeding {
            feeding.abort();
        }
        relayed?;
        self.swarm.exec_ended(&exec.id).await.map_err(|e| e.to_string())
    }

    /// Relays what the round trips from the task measured, as JSON.
    async fn probe(&mut self, container: &str, to: &[String], count: u32, interval_ms: u32, first_only: bool) -> Result<(), String> {
        let task = self.swarm.local_task(container).await.ok_or_else(|| format!("{} is no longer running", self.task))?;
        if !self.swarm.runs_here(std::slice::from_ref(&task.container)).await {
            return Err(format!("{}: this agent's Docker daemon runs it on another machine, whose namespaces it cannot enter", self.task));
        }
        let probed = crate::shaping::measure::probe_from(task.pid, &task.networks, to, count, interval_ms, first_only).await?;
        self.output(false, serde_json::to_vec(&probed).map_err(|e| e.to_string())?).await
    }

    /// Relays Docker's tar archive of `path` in the container.
    async fn copy(&mut self, container: &str, path: &str) -> Result<(), String> {
        let archive = self.swarm.copy_from_task(container, path);
        futures::pin_mut!(archive);
        while let Some(piece) = archive.next().await {
            match piece {
                Ok(bytes) => self.output(false, bytes.to_vec()).await?,
                Err(SwarmError::NotFound(_)) => return Err(format!("no {path} in its container")),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Relays a piece of output once labctl has read what waits in the stream down to
    /// `BACKLOG` entries: nothing is dropped (a copy's archive must arrive whole), and the
    /// command or copy waits as a pipe's writer does.
    async fn output(&mut self, stderr: bool, bytes: Vec<u8>) -> Result<(), String> {
        let waiting_since = tokio::time::Instant::now();
        while self.waiting > BACKLOG {
            if waiting_since.elapsed() > READER_GONE_AFTER {
                return Err(format!("labctl read nothing for {} s: the rest was not relayed", READER_GONE_AFTER.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.waiting = self.conn.xlen(&self.stream).await.map_err(|e| e.to_string())?;
        }
        let output = ExecRelayed::Output { node: self.node.clone(), task: self.task.clone(), stderr, bytes };
        self.add(&output).await.map_err(|e| format!("cannot relay the output to Redis: {e}"))
    }

    async fn add(&mut self, entry: &ExecRelayed) -> Result<(), String> {
        self.waiting = requests::append(&mut self.conn, &self.stream, [entry.to_fields()], STREAM_KEPT, STREAM_EXPIRY_SECS).await?;
        Ok(())
    }
}

/// Where a `-i`/`-t` command's input comes from: labctl's entries in the request's input stream.
struct InputFrom {
    redis_url: String,
    stream: String,
    swarm: DockerSwarm,
    exec_id: String,
}

impl InputFrom {
    /// Writes what labctl sends into the command's input and sizes its terminal as labctl's,
    /// until labctl's input ends, or labctl is gone (nothing heard for `INPUT_GONE_AFTER`): then
    /// the command reads end-of-file, as from a `docker exec -i` whose client died.
    async fn feed(self, mut input: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>) {
        use tokio::io::AsyncWriteExt;
        let mut conn = match super::connect_redis(&self.redis_url).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(stream = %self.stream, error = %e, "cannot read a command's input from Redis; it reads end-of-file");
                if let Some(input) = input.as_mut() {
                    let _ = input.shutdown().await;
                }
                return;
            }
        };
        let options = redis::streams::StreamReadOptions::default().block(1000).count(100);
        let mut last = "0-0".to_string();
        let mut heard = tokio::time::Instant::now();
        'reading: while heard.elapsed() < INPUT_GONE_AFTER {
            let reply: redis::RedisResult<Option<redis::streams::StreamReadReply>> = conn.xread_options(&[&self.stream], &[&last], &options).await;
            let entries = match reply {
                Ok(reply) => reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>()).unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(stream = %self.stream, error = %e, "cannot read a command's input from Redis");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for entry in entries {
                last.clone_from(&entry.id);
                heard = tokio::time::Instant::now();
                let Some(header) = entry.get::<Vec<u8>>(HEADER_FIELD) else { continue };
                match ExecInput::from_fields(&header, entry.get::<Vec<u8>>(DATA_FIELD)) {
                    Some(ExecInput::Data(bytes)) => {
                        let Some(writer) = input.as_mut() else { continue };
                        if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                            // The command closed its input or ended.
                            return;
                        }
                    }
                    Some(ExecInput::Resize { rows, columns }) => {
                        let _ = self.swarm.resize_exec_terminal(&self.exec_id, rows, columns).await;
                    }
                    Some(ExecInput::End) => break 'reading,
                    Some(ExecInput::Alive) | None => {}
                }
            }
            let _: redis::RedisResult<()> = redis::cmd("XTRIM").arg(&self.stream).arg("MINID").arg(&last).query_async(&mut conn).await;
        }
        if let Some(input) = input.as_mut() {
            let _ = input.shutdown().await;
        }
    }
}
