//! What labctl asks of the other nodes' agents through Redis (`capture`, `exec`): a request in
//! a hash, its deadline renewed every second while labctl waits, and what the agents relay in
//! the request's stream, read as it comes and trimmed once read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::Serialize;
use swarmlab::capture::relay::{CaptureRequest, Relayed, DATA_FIELD, HEADER_FIELD};
use swarmlab::exec_relay::{ExecRelayed, ExecRequest};
use swarmlab::store::keys;
use tokio::sync::mpsc;

/// How long one read of the stream waits for entries.
const BLOCK: Duration = Duration::from_millis(200);
/// How often the request's deadline is pushed on.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// A request the agents serve while it stands.
pub trait Ask: Serialize + Send + 'static {
    /// The hash the agents read.
    const HASH: &'static str;
    /// How long it stands unless renewed.
    const LIFETIME: Duration;
    /// The stream the agents relay to, for the request `id`.
    fn stream(id: &str) -> String;
    fn lab(&self) -> &str;
    fn renew(&mut self, until: DateTime<Utc>);
}

/// One entry the agents relay.
pub trait Answer: Sized + Send + 'static {
    /// `None` for an entry this version cannot read (a newer agent's).
    fn read(header: &[u8], data: Option<Vec<u8>>) -> Option<Self>;
}

impl Ask for CaptureRequest {
    const HASH: &'static str = keys::CAPTURES;
    const LIFETIME: Duration = swarmlab::capture::relay::REQUEST_LIFETIME;
    fn stream(id: &str) -> String {
        keys::capture(id)
    }
    fn lab(&self) -> &str {
        &self.lab
    }
    fn renew(&mut self, until: DateTime<Utc>) {
        self.until = until;
    }
}

impl Answer for Relayed {
    fn read(header: &[u8], data: Option<Vec<u8>>) -> Option<Self> {
        Relayed::from_fields(header, data)
    }
}

impl Ask for ExecRequest {
    const HASH: &'static str = keys::EXECS;
    const LIFETIME: Duration = swarmlab::exec_relay::REQUEST_LIFETIME;
    fn stream(id: &str) -> String {
        keys::exec(id)
    }
    fn lab(&self) -> &str {
        &self.lab
    }
    fn renew(&mut self, until: DateTime<Utc>) {
        self.until = until;
    }
}

impl Answer for ExecRelayed {
    fn read(header: &[u8], data: Option<Vec<u8>>) -> Option<Self> {
        ExecRelayed::from_fields(header, data)
    }
}

pub struct Asked<A> {
    /// The request's id (its streams are named by it).
    pub id: String,
    /// What the agents relay, in the order they put it in the stream.
    pub messages: mpsc::Receiver<A>,
    withdrawn: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl<A: Answer> Asked<A> {
    /// Asks the agents; fails when Redis cannot be written (no agent can hear). `command`
    /// names labctl's subcommand in what it says.
    pub async fn ask<R: Ask>(url: &str, mut request: R, command: &'static str) -> redis::RedisResult<Asked<A>> {
        let client = swarmlab::store::client(url)?;
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(BLOCK + Duration::from_secs(2)));
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        let id = format!("{}-{}-{:08x}", request.lab(), std::process::id(), rand::random::<u32>());
        request.renew(Utc::now() + R::LIFETIME);
        conn.hset::<_, _, _, ()>(R::HASH, &id, serde_json::to_string(&request).unwrap_or_default()).await?;
        let (tx, messages) = mpsc::channel(4096);
        let withdrawn = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read(conn, id.clone(), request, withdrawn.clone(), tx, command));
        Ok(Asked { id, messages, withdrawn, reader })
    }

    /// Withdraws the request: the agents stop serving it; what they relay still comes.
    pub fn withdraw(&self) {
        self.withdrawn.store(true, Ordering::Relaxed);
    }

    /// What withdraws the request, to be called while `messages` is read.
    pub fn withdrawer(&self) -> impl Fn() + Send + 'static {
        let withdrawn = self.withdrawn.clone();
        move || withdrawn.store(true, Ordering::Relaxed)
    }

    /// Stops reading, and removes the request and the stream.
    pub async fn finish(self) {
        self.withdraw();
        drop(self.messages);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.reader).await;
    }
}

async fn read<R: Ask, A: Answer>(mut conn: redis::aio::MultiplexedConnection, id: String, mut request: R, withdrawn: Arc<AtomicBool>, out: mpsc::Sender<A>, command: &'static str) {
    let stream = R::stream(&id);
    let options = redis::streams::StreamReadOptions::default().block(BLOCK.as_millis() as usize).count(1000);
    let mut last = "0-0".to_string();
    let mut renewed = tokio::time::Instant::now();
    let mut asked = true;
    let mut failing = false;
    while !out.is_closed() {
        if asked && withdrawn.load(Ordering::Relaxed) {
            asked = conn.hdel::<_, _, ()>(R::HASH, &id).await.is_err();
        } else if asked && renewed.elapsed() >= RENEW_EVERY {
            request.renew(Utc::now() + R::LIFETIME);
            if conn.hset::<_, _, _, ()>(R::HASH, &id, serde_json::to_string(&request).unwrap_or_default()).await.is_ok() {
                renewed = tokio::time::Instant::now();
            }
        }
        let reply: redis::RedisResult<Option<redis::streams::StreamReadReply>> = conn.xread_options(&[&stream], &[&last], &options).await;
        let entries = match reply {
            Ok(reply) => {
                failing = false;
                reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>()).unwrap_or_default()
            }
            Err(e) => {
                if !failing {
                    eprintln!("{command}: cannot read what the other nodes' agents relay from Redis ({e}); trying again");
                    failing = true;
                }
                tokio::time::sleep(BLOCK).await;
                continue;
            }
        };
        let read = !entries.is_empty();
        for entry in entries {
            last.clone_from(&entry.id);
            let Some(header) = entry.get::<Vec<u8>>(HEADER_FIELD) else { continue };
            let Some(answer) = A::read(&header, entry.get::<Vec<u8>>(DATA_FIELD)) else { continue };
            if out.send(answer).await.is_err() {
                break;
            }
        }
        // What was read leaves Redis (the agents price the backlog by what is left).
        if read {
            let _: redis::RedisResult<()> = redis::cmd("XTRIM").arg(&stream).arg("MINID").arg(&last).query_async(&mut conn).await;
        }
    }
    let _: redis::RedisResult<()> = redis::pipe().hdel(R::HASH, &id).ignore().del(&stream).ignore().query_async(&mut conn).await;
}

/// Asks the other nodes' agents to act on the tasks placed asked for (`labctl exec`, `cp`, `probe`):
/// the request, or `None` when Redis cannot be written and this node has tasks to go on with
/// (`nothing_here`: it has none, and that is an error); `verb` says what was not done.
/// `except_node_id`: the node whose tasks labctl acts on itself.
pub async fn ask_agents(url: &str, except_node_id: Option<String>, action: swarmlab::exec_relay::TaskAction, placed: &crate::tasks::Placement, nothing_here: bool, command: &'static str, verb: &str) -> anyhow::Result<Option<Asked<ExecRelayed>>> {
    let Some(target) = &placed.target else { anyhow::bail!("{command}: no task named to act on") };
    let request = ExecRequest { lab: placed.lab.clone(), service: target.service.clone(), slot: target.slot, action, except_node_id, until: Utc::now() };
    match Asked::ask(url, request, command).await {
        Ok(asked) => Ok(Some(asked)),
        Err(e) if nothing_here => Err(placed.unreachable(&placed.lab, target, &e)),
        Err(e) => {
            placed.warn_elsewhere(command, &format!("{verb} (cannot ask their agents through Redis: {e})"));
            Ok(None)
        }
    }
}
