//! What labctl on another node asks of this node's agent through Redis (a capture, a command,
//! a copy): a hash of requests by id, each with a deadline its labctl renews while it runs. An
//! agent serves those standing, leaves alone the ones for labctl's own node (labctl reaches its own
//! tasks itself), and clears those long lapsed (their labctl is gone).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::capture::relay::CaptureRequest;
use crate::exec_relay::ExecRequest;
use crate::swarm::DockerSwarm;

use super::usage::Snapshot;

/// A request lapsed this long ago is cleared by whichever agent sees it.
const CLEAR_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

pub trait Request: DeserializeOwned {
    /// Whether the request had lapsed by `now` (its labctl did not renew it in time): each
    /// request type's own rule.
    fn lapsed(&self, now: DateTime<Utc>) -> bool;
    /// Swarm's id of the node whose labctl serves the request itself.
    fn except_node_id(&self) -> Option<&str>;
}

impl Request for CaptureRequest {
    fn lapsed(&self, now: DateTime<Utc>) -> bool {
        CaptureRequest::lapsed(self, now)
    }
    fn except_node_id(&self) -> Option<&str> {
        self.except_node_id.as_deref()
    }
}

impl Request for ExecRequest {
    fn lapsed(&self, now: DateTime<Utc>) -> bool {
        ExecRequest::lapsed(self, now)
    }
    fn except_node_id(&self) -> Option<&str> {
        self.except_node_id.as_deref()
    }
}

/// The requests of one hash, as one agent reads them.
pub struct Requests {
    hash: &'static str,
    swarm: DockerSwarm,
    /// This node's Swarm id, once Docker has said it.
    node_id: Option<String>,
}

impl Requests {
    pub fn new(hash: &'static str, swarm: DockerSwarm) -> Requests {
        Requests { hash, swarm, node_id: None }
    }

    /// The requests standing now for this node, by id.
    pub async fn standing<R: Request>(&mut self, conn: &mut redis::aio::MultiplexedConnection) -> Result<HashMap<String, R>, String> {
        let all: HashMap<String, String> = conn.hgetall(self.hash).await.map_err(|e| e.to_string())?;
        let now = Utc::now();
        let mut standing = HashMap::new();
        for (id, json) in all {
            match serde_json::from_str::<R>(&json) {
                Ok(request) if !request.lapsed(now) => {
                    standing.insert(id, request);
                }
                Ok(request) if request.lapsed(now - CLEAR_AFTER) => {
                    let _: Result<(), _> = conn.hdel(self.hash, &id).await;
                }
                _ => {}
            }
        }
        if !standing.is_empty() && self.node_id.is_none() {
            self.node_id = self.swarm.this_node_id().await;
        }
        // Until this node is known, a request may be labctl's own node's: none is served
        // (Docker away, there are no tasks to find anyway).
        let Some(me) = &self.node_id else { return Ok(HashMap::new()) };
        standing.retain(|_, r| r.except_node_id() != Some(me.as_str()));
        Ok(standing)
    }
}

/// What serves one kind of request: looks at the requests standing every `LOOK_EVERY`.
pub trait RequestServer: Send + 'static {
    /// What the requests are, for the log.
    const REQUESTS: &'static str;
    const LOOK_EVERY: Duration;
    /// Serves the requests standing now, given this node's tasks.
    fn look(&mut self, conn: &mut redis::aio::MultiplexedConnection, snapshot: &Snapshot) -> impl Future<Output = Result<(), String>> + Send;
}

/// Runs `server` for as long as the agent runs, connecting to Redis (again, after a failure)
/// as needed; an outage is logged once.
pub async fn serve<S: RequestServer>(mut server: S, redis_url: String, tasks: watch::Receiver<Snapshot>) {
    let mut tick = tokio::time::interval(S::LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut redis = None;
    let mut failing = false;
    loop {
        tick.tick().await;
        let snapshot = tasks.borrow().clone();
        let looked = match &mut redis {
            Some(conn) => server.look(conn, &snapshot).await,
            None => match super::connect_redis(&redis_url).await {
                Ok(conn) => server.look(redis.insert(conn), &snapshot).await,
                Err(e) => Err(e),
            },
        };
        match looked {
            Err(e) if !failing => {
                tracing::warn!(error = %e, requests = S::REQUESTS, "cannot read requests from Redis; retrying");
                redis = None;
                failing = true;
            }
            Err(_) => redis = None,
            Ok(()) => failing = false,
        }
    }
}

/// Appends entries (each its fields) to a request's stream in one round trip, keeping about
/// `kept` entries, and lets the stream expire `expiry_secs` after the last append: it outlives
/// a labctl killed before deleting it by no more than that. Returns the stream's length after.
pub async fn append(conn: &mut redis::aio::MultiplexedConnection, stream: &str, entries: impl IntoIterator<Item = Vec<(&'static str, Vec<u8>)>>, kept: usize, expiry_secs: i64) -> Result<usize, String> {
    let mut pipe = redis::pipe();
    for fields in entries {
        let command = pipe.cmd("XADD").arg(stream).arg("MAXLEN").arg("~").arg(kept).arg("*");
        for (field, value) in fields {
            command.arg(field).arg(value);
        }
        command.ignore();
    }
    pipe.cmd("EXPIRE").arg(stream).arg(expiry_secs).ignore();
    pipe.cmd("XLEN").arg(stream);
    let (length,): (usize,) = pipe.query_async(conn).await.map_err(|e| e.to_string())?;
    Ok(length)
}
