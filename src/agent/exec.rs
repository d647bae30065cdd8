//! Commands for a `labctl exec` run on another node: Docker runs a command only in a container
//! of its own node, so each node's agent runs the command in its own tasks that a request names
//! (`swarmlab:execs`, see `exec_relay`), once per request, and relays their output and exit
//! codes to the request's stream in Redis. Off unless the agent is started with
//! `--allow-exec`: whoever can write to Redis could otherwise run commands in the lab's tasks.
//! An agent that does not allow it says so, naming the tasks it left alone, so labctl can say
//! what to do instead of waiting.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::requests::{self, Requests};
use super::usage::{SampledTask, Snapshot};
use crate::exec_relay::{ExecRelayed, ExecRequest, STREAM_KEPT};
use crate::store::keys;
use crate::swarm::{task_label, DockerSwarm, ExecOutput};

/// How often the requests are read (a command starts on this node up to this late).
const LOOK_EVERY: Duration = Duration::from_millis(300);
/// A request's stream outlives its labctl (killed before deleting it) by at most this.
const STREAM_EXPIRY_SECS: i64 = 60;

pub struct ExecServer {
    swarm: DockerSwarm,
    redis_url: String,
    node: String,
    allowed: bool,
    requests: Requests,
    redis: Option<redis::aio::MultiplexedConnection>,
    /// The requests answered, while they stand: each is served once.
    served: HashSet<String>,
}

impl ExecServer {
    pub fn new(swarm: DockerSwarm, redis_url: String, node: String, allowed: bool) -> ExecServer {
        let requests = Requests::new(keys::EXECS, swarm.clone());
        ExecServer { swarm, redis_url, node, allowed, requests, redis: None, served: HashSet::new() }
    }

    pub async fn run(mut self, tasks: watch::Receiver<Snapshot>) {
        let mut tick = tokio::time::interval(LOOK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let snapshot = tasks.borrow().clone();
            match self.look(&snapshot).await {
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot read exec requests from Redis; retrying");
                    self.redis = None;
                    failing = true;
                }
                Err(_) => self.redis = None,
                Ok(()) => failing = false,
            }
        }
    }

    async fn look(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        if self.redis.is_none() {
            self.redis = Some(super::connect_redis(&self.redis_url).await?);
        }
        let Some(mut conn) = self.redis.clone() else { return Ok(()) };
        let standing: HashMap<String, ExecRequest> = self.requests.standing(&mut conn).await?;
        self.served.retain(|id| standing.contains_key(id));
        for (id, request) in standing {
            if self.served.contains(&id) {
                continue;
            }
            let tasks: Vec<&SampledTask> = snapshot.tasks.iter().filter(|t| request.wants(&t.lab, &t.service, t.slot)).collect();
            let labels: Vec<String> = tasks.iter().map(|t| task_label(&t.service, t.slot, &self.node)).collect();
            let refused = (!self.allowed && !tasks.is_empty())
                .then(|| format!("the agent on {} does not run commands for labctl on other nodes: start it with --allow-exec (LABD_ALLOW_EXEC=true), or run labctl on {}", self.node, self.node));
            let stream = keys::exec(&id);
            let answer = ExecRelayed::Answered { node: self.node.clone(), tasks: labels.clone(), refused: refused.clone() };
            requests::append(&mut conn, &stream, [answer.to_fields()], STREAM_KEPT, STREAM_EXPIRY_SECS).await?;
            self.served.insert(id.clone());
            if refused.is_some() {
                continue;
            }
            if !tasks.is_empty() {
                tracing::info!(exec = %id, lab = %request.lab, tasks = ?labels, "running a command for labctl exec on another node");
            }
            for (task, label) in tasks.into_iter().zip(labels) {
                let run = RunIn { swarm: self.swarm.clone(), conn: conn.clone(), stream: stream.clone(), node: self.node.clone(), task: label };
                tokio::spawn(run.run(task.container.clone(), request.command.clone()));
            }
        }
        Ok(())
    }
}

/// The command in one task, relayed.
struct RunIn {
    swarm: DockerSwarm,
    conn: redis::aio::MultiplexedConnection,
    stream: String,
    node: String,
    task: String,
}

impl RunIn {
    async fn run(mut self, container: String, command: Vec<String>) {
        let end = match self.relay(&container, &command).await {
            Ok(code) => ExecRelayed::Exited { node: self.node.clone(), task: self.task.clone(), code },
            Err(message) => ExecRelayed::Failed { node: self.node.clone(), task: self.task.clone(), message },
        };
        if let Err(e) = self.add(&end).await {
            tracing::warn!(stream = %self.stream, error = %e, "cannot relay a command's end to Redis");
        }
    }

    /// Runs the command, relaying its output as it comes; its exit code.
    async fn relay(&mut self, container: &str, command: &[String]) -> Result<i64, String> {
        // Docker would say "unpause the container": here a schedule froze it, and holds it so.
        if self.swarm.task_paused(container).await.unwrap_or(false) {
            return Err(format!("{} is frozen by a pause step of the lab's schedule: a command runs in it once the schedule thaws it", self.task));
        }
        let mut exec = self.swarm.exec_in_task(container, command, false, false).await.map_err(|e| format!("cannot run {}: {e}", command.join(" ")))?;
        while let Some(piece) = exec.output.next().await {
            let (stderr, bytes) = match piece.map_err(|e| e.to_string())? {
                ExecOutput::Stdout(bytes) => (false, bytes),
                ExecOutput::Stderr(bytes) => (true, bytes),
            };
            let output = ExecRelayed::Output { node: self.node.clone(), task: self.task.clone(), stderr, bytes };
            self.add(&output).await.map_err(|e| format!("cannot relay the command's output to Redis: {e}"))?;
        }
        self.swarm.exec_ended(&exec.id).await.map_err(|e| e.to_string())
    }

    async fn add(&mut self, entry: &ExecRelayed) -> Result<(), String> {
        requests::append(&mut self.conn, &self.stream, [entry.to_fields()], STREAM_KEPT, STREAM_EXPIRY_SECS).await
    }
}
