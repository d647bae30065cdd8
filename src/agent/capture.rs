//! Captures for a `labctl capture` run on another node: Docker reaches only its own node's
//! containers, so each node's agent opens the taps on its own tasks that a running capture asks
//! for (`swarmlab:captures`, see `capture::relay`) and relays their frames to the capture's
//! stream in Redis, following the tasks that start meanwhile, until the request is withdrawn
//! or lapses.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::mpsc;

use super::requests::{self, RequestServer, Requests};
use super::usage::Snapshot;
use crate::capture::relay::{CaptureRequest, Relayed, STREAM_BACKLOG_BYTES, STREAM_KEPT};
use crate::capture::socket::{self, TapMessage};
use crate::capture::timestamps::Timestamps;
use crate::capture::{Tap, TapEnd};
use crate::shaping::netns::{interface_for, ns_path};
use crate::store::keys;
use crate::swarm::{task_label, DockerSwarm};

/// How often the requests are read (a capture's first frames from this node come this late).
const LOOK_EVERY: Duration = Duration::from_millis(300);
/// Frames put in the stream in one round trip, at most.
const BATCH: usize = 256;
/// A capture stream outlives its labctl (killed before deleting it) by at most this.
const STREAM_EXPIRY_SECS: i64 = 60;

/// One capture this agent serves.
struct Session {
    request: CaptureRequest,
    /// (container, network) pairs tapped or found not to be tappable (said once).
    looked: HashSet<(String, String)>,
    taps: usize,
    stop: Arc<AtomicBool>,
    frames: mpsc::Sender<TapMessage>,
}

impl Drop for Session {
    /// The taps stop within their read timeout; each sends its end, then the relay finishes.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub struct CaptureServer {
    node: String,
    requests: Requests,
    sessions: HashMap<String, Session>,
    /// The kernel's receive timestamps, held on while any capture runs here.
    timestamps: Option<Timestamps>,
}

impl CaptureServer {
    pub fn new(swarm: DockerSwarm, node: String) -> CaptureServer {
        let requests = Requests::new(keys::CAPTURES, swarm);
        CaptureServer { node, requests, sessions: HashMap::new(), timestamps: None }
    }

    fn start(&self, id: &str, request: CaptureRequest, conn: redis::aio::MultiplexedConnection) -> Session {
        // Bounded: when Redis cannot keep up, the taps wait and the kernel drops (and counts).
        let (frames, relay) = mpsc::channel(4096);
        tokio::spawn(relay_frames(conn, keys::capture(id), self.node.clone(), relay));
        Session { request, looked: HashSet::new(), taps: 0, stop: Arc::new(AtomicBool::new(false)), frames }
    }

    /// Opens taps on the tasks here that the capture names and has not looked at yet,
    /// announcing each in the stream before its frames can come.
    async fn join(&self, id: &str, session: &mut Session, snapshot: &Snapshot, conn: &mut redis::aio::MultiplexedConnection) -> Result<(), String> {
        let stream = keys::capture(id);
        session.looked.retain(|(container, _)| snapshot.tasks.iter().any(|t| &t.container == container));
        for task in snapshot.tasks.iter().filter(|t| session.request.wants(&t.lab, &t.service, t.slot)) {
            let mut networks = task.networks.clone();
            networks.sort();
            for (network, mac, ip) in networks.into_iter().filter(|(n, _, _)| session.request.wants_network(n)) {
                if session.looked.contains(&(task.container.clone(), network.clone())) {
                    continue;
                }
                let label = task_label(&task.service, task.slot, &self.node);
                let failed = |message: String| Relayed::Failed { node: self.node.clone(), task: label.clone(), message };
                let said = match interface_for(task.pid, &mac, &ip).await {
                    Ok(Some(interface)) => {
                        let tap = Tap { task: label.clone(), network: network.clone(), interface: interface.clone(), node: self.node.clone() };
                        let index = session.taps;
                        add(conn, &stream, &[Relayed::Tap { tap: index, info: tap }]).await?;
                        session.taps += 1;
                        match socket::start(index, ns_path(task.pid), interface, session.request.snaplen, session.stop.clone(), session.frames.clone()) {
                            Ok(()) => None,
                            // Announced, so ended (labctl waits for each tap's end): through the
                            // relay, as every tap's end goes.
                            Err(e) => {
                                let end = TapEnd { tap: index, received: 0, dropped: 0, error: Some(e.to_string()) };
                                let _ = session.frames.send(TapMessage::Ended(end)).await;
                                None
                            }
                        }
                    }
                    Ok(None) => Some(failed(format!("no interface for {network} in its namespace (MAC {mac})"))),
                    Err(e) => Some(failed(e.to_string())),
                };
                if let Some(said) = said {
                    add(conn, &stream, &[said]).await?;
                }
                session.looked.insert((task.container.clone(), network));
            }
        }
        Ok(())
    }
}

impl RequestServer for CaptureServer {
    const REQUESTS: &'static str = "capture";
    const LOOK_EVERY: Duration = LOOK_EVERY;

    async fn look(&mut self, conn: &mut redis::aio::MultiplexedConnection, snapshot: &Snapshot) -> Result<(), String> {
        let mut conn = conn.clone();
        let active: HashMap<String, CaptureRequest> = self.requests.standing(&mut conn).await?;
        // Captures withdrawn or lapsed: their taps stop.
        self.sessions.retain(|id, _| active.contains_key(id));
        if active.is_empty() {
            self.timestamps = None;
            return Ok(());
        }
        if self.timestamps.is_none() {
            // Before the first tap (see `capture::timestamps`); proving it may take 2 s.
            self.timestamps = tokio::task::spawn_blocking(Timestamps::on).await.ok().and_then(Result::ok);
        }
        for (id, request) in active {
            let session = match self.sessions.remove(&id) {
                Some(mut session) => {
                    session.request = request;
                    session
                }
                None => {
                    tracing::info!(capture = %id, lab = %request.lab, "capturing for labctl capture on another node");
                    self.start(&id, request, conn.clone())
                }
            };
            let mut session = session;
            // Kept even when Redis failed meanwhile: its taps go on, numbered as announced.
            let joined = self.join(&id, &mut session, snapshot, &mut conn).await;
            self.sessions.insert(id, session);
            joined?;
        }
        Ok(())
    }
}

/// Puts entries in the capture's stream, in one round trip.
async fn add(conn: &mut redis::aio::MultiplexedConnection, stream: &str, entries: &[Relayed]) -> Result<(), String> {
    requests::append(conn, stream, entries.iter().map(Relayed::to_fields), STREAM_KEPT, STREAM_EXPIRY_SECS).await.map(|_| ())
}

/// Relays the taps' frames and ends to the stream as they come, in batches of what is waiting;
/// ends when every tap has ended (each holds a sender).
async fn relay_frames(mut conn: redis::aio::MultiplexedConnection, stream: String, node: String, mut taps: mpsc::Receiver<TapMessage>) {
    // Per tap, frames put in the stream and frames left out: a tap's end says both, so labctl
    // can tell a frame lost on the way from one never sent.
    let mut forwarded: HashMap<usize, u64> = HashMap::new();
    let mut skipped: HashMap<usize, u64> = HashMap::new();
    // Bytes and entries put in the stream so far: their mean prices the backlog.
    let (mut bytes, mut entries) = (0usize, 0usize);
    let mut failing = false;
    while let Some(first) = taps.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match taps.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        // What labctl has not read yet (it trims what it has): past the budget, this batch's
        // frames are left out; ends always go.
        let waiting: usize = conn.xlen(&stream).await.unwrap_or(0);
        let full = entries > 0 && waiting * (bytes / entries) > STREAM_BACKLOG_BYTES;
        let mut sent: HashMap<usize, u64> = HashMap::new();
        let mut batch_bytes = 0;
        let mut out = Vec::with_capacity(batch.len());
        for message in batch {
            match message {
                TapMessage::Frame(frame) if full => *skipped.entry(frame.tap).or_default() += 1,
                TapMessage::Frame(frame) => {
                    *sent.entry(frame.tap).or_default() += 1;
                    batch_bytes += frame.data.len() + 64;
                    out.push(Relayed::Frame { node: node.clone(), frame });
                }
                TapMessage::Ended(end) => {
                    let count = forwarded.get(&end.tap).copied().unwrap_or(0) + sent.get(&end.tap).copied().unwrap_or(0);
                    let left_out = skipped.get(&end.tap).copied().unwrap_or(0);
                    out.push(Relayed::Ended { node: node.clone(), end, forwarded: count, skipped: left_out });
                }
            }
        }
        if out.is_empty() {
            continue;
        }
        match add(&mut conn, &stream, &out).await {
            Ok(()) => {
                for (tap, n) in sent {
                    *forwarded.entry(tap).or_default() += n;
                }
                bytes += batch_bytes;
                entries += out.len();
                failing = false;
            }
            Err(e) if !failing => {
                tracing::warn!(stream = %stream, error = %e, "cannot relay captured frames to Redis; they are lost");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
