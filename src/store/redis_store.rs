//! Status in Redis. Writes go through an in-memory outbox flushed in the background, so labd
//! keeps reconciling while Redis is down and writes the current state when it comes back.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::sync::Notify;

use super::Suspensions;
use crate::status::{LabEvent, LabStatus};

/// The Redis keys, in one place (the README documents them).
pub mod keys {
    pub const LABS: &str = "swarmlab:labs";
    pub const METRICS: &str = "swarmlab:metrics";
    pub const AGENTS: &str = "swarmlab:agents";
    /// Hash: `heartbeat` (RFC 3339, written by the leading labd every few seconds) and
    /// `resync_secs`, so readers can tell a stale status.
    pub const LABD: &str = "swarmlab:labd";
    /// Hash: lab → the time of its last `labctl start` (RFC 3339).
    pub const STARTS: &str = "swarmlab:starts";
    /// Set: labs suspended with `labctl suspend`.
    pub const SUSPENDED: &str = "swarmlab:suspended";
    /// Set: labs resumed with `labctl resume` (and not suspended since). A lab in neither set
    /// stays as labd remembers it on Swarm: Redis said nothing, or lost what it said.
    pub const RESUMED: &str = "swarmlab:resumed";
    /// Pub/sub channel: a lab was just started, suspended or resumed (`labctl`), so labd
    /// reads the flags at once instead of at its next heartbeat.
    pub const FLAGS_CHANGED: &str = "swarmlab:flags-changed";
    /// Pub/sub channel: a node agent's reports (`tasks(lab)`) of these labs (space-separated)
    /// changed in what labd reads of them, so labd looks at those labs at once.
    pub const REPORTS_CHANGED: &str = "swarmlab:reports-changed";
    /// Pub/sub channel: `labctl reconcile` asks the leading labd to read its source now and
    /// look at a lab (payload `ID LAB`) or every lab (`ID`) again.
    pub const RECONCILE: &str = "swarmlab:reconcile";
    /// Hash: request id → labd's answer (`ReconcileAnswer` JSON); labctl removes it once read.
    pub const RECONCILED: &str = "swarmlab:reconciled";
    pub fn status(lab: &str) -> String {
        format!("swarmlab:lab:{lab}:status")
    }
    pub fn events(lab: &str) -> String {
        format!("swarmlab:lab:{lab}:events")
    }
    pub fn metrics(lab: &str) -> String {
        format!("swarmlab:lab:{lab}:metrics")
    }
    /// Pub/sub channel: the labs whose desired shaping was just written, so the node agents
    /// apply a change at once instead of at their next poll.
    pub const SHAPING_CHANGED: &str = "swarmlab:shaping-changed";
    pub fn shaping(lab: &str) -> String {
        format!("swarmlab:lab:{lab}:shaping")
    }
    /// What the schedule does to the lab's task processes (frozen, killed), for the agents.
    pub fn faults(lab: &str) -> String {
        format!("swarmlab:lab:{lab}:faults")
    }
    pub fn tasks(lab: &str) -> String {
        format!("swarmlab:lab:{lab}:tasks")
    }
    /// Hash: per task container (12-character id), what it uses (`TaskUsage` JSON), written
    /// by the agent of its node every sampling interval; expires when no agent writes it.
    pub fn usage(lab: &str) -> String {
        format!("swarmlab:lab:{lab}:usage")
    }
    /// Stream (capped) of the node agents' samples of the lab by service (`UsageRecord`
    /// JSON): the usage plots of `labctl report`. Kept after the lab, as its probes, for labd's
    /// `--history-retention`.
    pub fn usage_history(lab: &str) -> String {
        format!("swarmlab:lab:{lab}:usage-history")
    }
    /// Stream of `labctl probe` results (capped): the time series of `labctl report`.
    pub fn probes(lab: &str) -> String {
        format!("swarmlab:lab:{lab}:probes")
    }
    /// Hash: capture id → what a running `labctl capture` asks of the node agents
    /// (`CaptureRequest` JSON), renewed while it runs.
    pub const CAPTURES: &str = "swarmlab:captures";
    /// Stream of the frames the agents relay for one capture (capped; deleted when it ends).
    pub fn capture(id: &str) -> String {
        format!("swarmlab:capture:{id}")
    }
    /// Hash: request id → the command a waiting `labctl exec` asks the node agents to run in
    /// their tasks (`ExecRequest` JSON), renewed while it waits.
    pub const EXECS: &str = "swarmlab:execs";
    /// Stream of what the agents relay for one exec request: answers, output, exit codes.
    pub fn exec(id: &str) -> String {
        format!("swarmlab:exec:{id}")
    }
    /// Stream of what a `labctl exec -i`/`-t` sends to its command on another node: input,
    /// terminal sizes, its end (`ExecInput`; expires once labctl stops sending).
    pub fn exec_input(id: &str) -> String {
        format!("swarmlab:exec:{id}:input")
    }
}

/// Events kept per lab (a capped stream).
const EVENTS_KEPT: usize = 200;
/// Events buffered while Redis is unreachable.
const OUTBOX_EVENTS: usize = 1000;

#[derive(Default)]
struct Outbox {
    /// Latest status per lab; `None` deletes the lab's keys.
    statuses: BTreeMap<String, Option<LabStatus>>,
    /// Latest desired shaping per lab (JSON); `None` deletes it.
    shaping: BTreeMap<String, Option<String>>,
    /// Latest task faults per lab (JSON); `None` deletes them.
    faults: BTreeMap<String, Option<String>>,
    events: VecDeque<(String, LabEvent)>,
    /// (hash key, field) -> increment
    counters: BTreeMap<(String, String), i64>,
    /// (hash key, field) -> value
    gauges: BTreeMap<(String, String), String>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.statuses.is_empty() && self.shaping.is_empty() && self.faults.is_empty() && self.events.is_empty() && self.counters.is_empty() && self.gauges.is_empty()
    }
}

/// What the leading labd last said of itself (`swarmlab:labd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// When it last said it was alive.
    pub at: chrono::DateTime<chrono::Utc>,
    pub resync: Duration,
    /// When it stopped, if it was stopped (not killed, nor standing by) and has not led since.
    pub stopped_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Whether Redis keeps what labd writes over a restart of its own. Statuses, suspensions,
/// `labctl start` times and the clock of a running schedule live only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// An append-only file: every write survives a restart.
    AppendOnly,
    /// Snapshots alone: a restart loses what was written since the last one.
    Snapshots,
    /// Neither: a restart loses everything labd wrote.
    MemoryOnly,
}

impl Durability {
    /// From the values of `CONFIG GET appendonly` and `CONFIG GET save` (`""`: no snapshots).
    pub fn of(appendonly: &str, save: &str) -> Self {
        if appendonly.eq_ignore_ascii_case("yes") {
            Durability::AppendOnly
        } else if save.trim().is_empty() {
            Durability::MemoryOnly
        } else {
            Durability::Snapshots
        }
    }

    /// Asks the server; `None` where `CONFIG` is not allowed (managed Redis services rename or
    /// forbid it), so nothing is claimed.
    async fn of_server(conn: &mut MultiplexedConnection) -> Option<Self> {
        let value = |reply: Vec<String>| reply.get(1).cloned();
        let appendonly: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("appendonly").query_async(conn).await.ok()?;
        let save: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("save").query_async(conn).await.ok()?;
        Some(Durability::of(&value(appendonly)?, &value(save)?))
    }
}

#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    outbox: Arc<Mutex<Outbox>>,
    wake: Arc<Notify>,
    /// For the few reads labd makes (what the agents applied).
    reader: Arc<tokio::sync::Mutex<Option<MultiplexedConnection>>>,
    /// The leader lease's generation this labd holds: writes are made only while it is still
    /// the current one, so a deposed leader's late writes cannot overwrite the new leader's.
    fence: Arc<Mutex<Option<u64>>>,
    /// What the last connection found, so a warning is said once per change, not per reconnect.
    durability: Arc<Mutex<Option<Durability>>>,
    /// How long a deleted lab's probes and usage history stay (`labctl report` of it): a lab
    /// per commit or per test run would otherwise leave them in Redis for good.
    history_retention: Duration,
}

/// `--history-retention`'s default, Prometheus's default retention.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(15 * 24 * 3600);

impl RedisStore {
    /// Yields whenever `labctl` says a lab's flags changed (start, suspend, resume), and once
    /// at each (re)subscription, since a message sent while unsubscribed is lost; and whenever
    /// an agent says its reports of some labs changed. The heartbeat's read of the flags and
    /// the labs' polls stay: a lost message costs a heartbeat or a poll, never the change.
    pub fn notices(&self) -> impl futures::Stream<Item = super::Notice> + Send + 'static {
        use futures::StreamExt;
        use super::Notice;
        let client = self.client.clone();
        let state = (client, None::<redis::aio::PubSubStream>, Duration::from_millis(250));
        futures::stream::unfold(state, |(client, mut messages, mut backoff)| async move {
            loop {
                if let Some(stream) = messages.as_mut() {
                    if let Some(message) = stream.next().await {
                        let notice = match message.get_channel_name() {
                            keys::REPORTS_CHANGED => Notice::Reports(message.get_payload::<String>().unwrap_or_default().split_whitespace().map(str::to_string).collect()),
                            keys::RECONCILE => {
                                let payload = message.get_payload::<String>().unwrap_or_default();
                                let mut words = payload.split_whitespace().map(str::to_string);
                                match words.next() {
                                    Some(id) => Notice::Reconcile { id, lab: words.next() },
                                    None => continue,
                                }
                            }
                            _ => Notice::Flags,
                        };
                        return Some((notice, (client, messages, backoff)));
                    }
                    messages = None;
                }
                let subscribed = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&[keys::FLAGS_CHANGED, keys::REPORTS_CHANGED, keys::RECONCILE]).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                };
                match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
                    Ok(Ok(pubsub)) => return Some((Notice::Flags, (client, Some(pubsub.into_on_message()), Duration::from_millis(250)))),
                    _ => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    }

    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(RedisStore {
            client: super::client(url)?,
            outbox: Arc::default(),
            wake: Arc::new(Notify::new()),
            reader: Arc::default(),
            fence: Arc::default(),
            durability: Arc::default(),
            history_retention: DEFAULT_HISTORY_RETENTION,
        })
    }

    /// Keeps a deleted lab's probes and usage history this long (at least a second).
    pub fn with_history_retention(self, retention: Duration) -> Self {
        RedisStore { history_retention: retention.max(Duration::from_secs(1)), ..self }
    }

    /// From now on, write only while the lease's generation is `token`.
    pub fn fence_with(&self, token: u64) {
        if let Ok(mut f) = self.fence.lock() {
            *f = Some(token);
        }
    }

    /// Runs one read command on the shared read connection: made on first use, dropped after
    /// an error so the next read connects again. `None` when Redis cannot be read.
    async fn read<T: redis::FromRedisValue>(&self, command: &str, key: &str) -> Option<T> {
        let mut slot = self.reader.lock().await;
        if slot.is_none() {
            let c = tokio::time::timeout(Duration::from_secs(2), self.client.get_multiplexed_async_connection()).await.ok()?.ok()?;
            *slot = Some(c);
        }
        let conn = slot.as_mut()?;
        match redis::cmd(command).arg(key).query_async(conn).await {
            Ok(value) => Some(value),
            Err(_) => {
                *slot = None;
                None
            }
        }
    }

    /// The nodes whose agent has passed within `within`; `None` when Redis cannot be read.
    pub async fn live_agents(&self, within: Duration) -> Option<Vec<String>> {
        let agents: BTreeMap<String, String> = self.read("HGETALL", keys::AGENTS).await?;
        Some(alive(agents_ages(agents), within))
    }

    /// What the node agents report for the lab's tasks; `None` when Redis cannot be read.
    pub async fn task_shaping(&self, lab: &str) -> Option<Vec<crate::status::TaskShaping>> {
        let map: BTreeMap<String, String> = self.read("HGETALL", &keys::tasks(lab)).await?;
        Some(map.values().filter_map(|v| serde_json::from_str(v).ok()).collect())
    }

    fn with_outbox(&self, f: impl FnOnce(&mut Outbox)) {
        if let Ok(mut o) = self.outbox.lock() {
            f(&mut o);
        }
        self.wake.notify_one();
    }

    pub fn put_status(&self, status: &LabStatus) {
        let status = status.clone();
        self.with_outbox(|o| {
            o.statuses.insert(status.name.clone(), Some(status));
        });
    }

    pub fn delete_lab(&self, lab: &str) {
        let metrics = keys::metrics(lab);
        self.with_outbox(|o| {
            o.statuses.insert(lab.to_string(), None);
            o.shaping.insert(lab.to_string(), None);
            o.faults.insert(lab.to_string(), None);
            o.events.retain(|(l, _)| l != lab);
            // Counted before the deletion: written after it, they would bring its key back.
            o.counters.retain(|(key, _), _| *key != metrics);
            o.gauges.retain(|(key, _), _| *key != metrics);
        });
    }

    pub fn put_shaping(&self, lab: &str, json: Option<String>) {
        self.with_outbox(|o| {
            o.shaping.insert(lab.to_string(), json);
        });
    }

    pub fn put_faults(&self, lab: &str, json: Option<String>) {
        self.with_outbox(|o| {
            o.faults.insert(lab.to_string(), json);
        });
    }

    pub fn event(&self, lab: &str, event: LabEvent) {
        self.with_outbox(|o| {
            if o.events.len() >= OUTBOX_EVENTS {
                o.events.pop_front();
            }
            o.events.push_back((lab.to_string(), event));
        });
    }

    /// Adds to a counter, globally and for the lab.
    pub fn count(&self, lab: &str, metric: &str, by: i64) {
        self.with_outbox(|o| {
            *o.counters.entry((keys::METRICS.to_string(), metric.to_string())).or_default() += by;
            *o.counters.entry((keys::metrics(lab), metric.to_string())).or_default() += by;
        });
    }

    /// Says that the leading labd is alive and reconciling (and, after a stop, running again).
    pub fn heartbeat(&self, resync: Duration) {
        let now = chrono::Utc::now().to_rfc3339();
        self.with_outbox(|o| {
            o.gauges.insert((keys::LABD.to_string(), "heartbeat".to_string()), now);
            o.gauges.insert((keys::LABD.to_string(), "resync_secs".to_string()), resync.as_secs().to_string());
            o.gauges.insert((keys::LABD.to_string(), "stopped_at".to_string()), String::new());
        });
    }

    /// Says that the leading labd stopped (SIGTERM, SIGINT): written with its last statuses.
    pub fn stopped(&self) {
        let now = chrono::Utc::now().to_rfc3339();
        self.with_outbox(|o| {
            o.gauges.insert((keys::LABD.to_string(), "stopped_at".to_string()), now);
        });
    }

    /// labd's answer to a `labctl reconcile` request.
    pub fn answer_reconcile(&self, id: &str, answer: &crate::status::ReconcileAnswer) {
        let json = serde_json::to_string(answer).unwrap_or_default();
        self.with_outbox(|o| {
            o.gauges.insert((keys::RECONCILED.to_string(), id.to_string()), json);
        });
    }

    /// The Git source's state, beside the heartbeat (`swarmlab:labd`, field `source`).
    pub fn put_source(&self, source: &crate::status::SourceStatus) {
        let json = serde_json::to_string(source).unwrap_or_default();
        self.with_outbox(|o| {
            o.gauges.insert((keys::LABD.to_string(), "source".to_string()), json);
        });
    }

    /// Sets a gauge of labd as a whole (in `swarmlab:metrics`).
    pub fn global_gauge(&self, metric: &str, value: impl ToString) {
        let value = value.to_string();
        self.with_outbox(|o| {
            o.gauges.insert((keys::METRICS.to_string(), metric.to_string()), value);
        });
    }

    /// The last `labctl start` of each lab; `None` when Redis cannot be read.
    pub async fn starts(&self) -> Option<BTreeMap<String, chrono::DateTime<chrono::Utc>>> {
        let map: BTreeMap<String, String> = self.read("HGETALL", keys::STARTS).await?;
        Some(
            map.into_iter()
                .filter_map(|(lab, t)| Some((lab, chrono::DateTime::parse_from_rfc3339(&t).ok()?.with_timezone(&chrono::Utc))))
                .collect(),
        )
    }

    /// What `labctl suspend` and `resume` said; `None` when Redis cannot be read (then nothing
    /// changes: a lab is neither suspended nor resumed by an outage).
    pub async fn suspensions(&self) -> Option<Suspensions> {
        Some(Suspensions { suspended: self.read("SMEMBERS", keys::SUSPENDED).await?, resumed: self.read("SMEMBERS", keys::RESUMED).await? })
    }

    /// Every lab status a previous labd wrote; empty when Redis cannot be read.
    pub async fn statuses(&self) -> Vec<LabStatus> {
        let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(3), self.client.get_multiplexed_async_connection()).await else {
            return Vec::new();
        };
        let mut reader = StoreReader { conn };
        let mut out = Vec::new();
        for lab in reader.labs().await.unwrap_or_default() {
            if let Ok(Some(status)) = reader.status(&lab).await {
                out.push(status);
            }
        }
        out
    }

    pub fn gauge(&self, lab: &str, metric: &str, value: impl ToString) {
        let value = value.to_string();
        self.with_outbox(|o| {
            o.gauges.insert((keys::metrics(lab), metric.to_string()), value);
        });
    }

    /// Flushes the outbox until `shutdown` resolves; retries with backoff while Redis is down.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut conn: Option<MultiplexedConnection> = None;
        let mut down_since: Option<std::time::Instant> = None;
        loop {
            let pending = self.outbox.lock().map(|o| !o.is_empty()).unwrap_or(false);
            if pending {
                match self.flush(&mut conn).await {
                    Ok(()) => {
                        if let Some(t) = down_since.take() {
                            tracing::info!(after_s = t.elapsed().as_secs(), "redis is back; current status written");
                        }
                    }
                    Err(e) => {
                        conn = None;
                        if down_since.is_none() {
                            tracing::warn!(error = %e, "cannot write status to redis; will keep retrying (labd keeps reconciling)");
                            down_since = Some(std::time::Instant::now());
                        }
                    }
                }
            }
            let pause = if down_since.is_some() { Duration::from_secs(1) } else { Duration::from_millis(200) };
            tokio::select! {
                _ = &mut shutdown => { let _ = self.flush(&mut conn).await; return; }
                _ = self.wake.notified() => tokio::time::sleep(Duration::from_millis(50)).await,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn tell_durability(&self, found: Durability) {
        let Ok(mut said) = self.durability.lock() else { return };
        if *said == Some(found) {
            return;
        }
        *said = Some(found);
        match found {
            Durability::MemoryOnly => tracing::warn!(
                "redis keeps labd's data in memory only (appendonly no, no save points): if it restarts, the labs keep running but their statuses \
                 and `labctl start` times are lost (suspensions and schedule clocks stay on Swarm); start redis with --appendonly yes"
            ),
            Durability::Snapshots => tracing::info!("redis saves snapshots without an append-only file: a restart of it loses what labd wrote since the last snapshot"),
            Durability::AppendOnly => tracing::debug!("redis keeps an append-only file"),
        }
    }

    async fn flush(&self, conn: &mut Option<MultiplexedConnection>) -> redis::RedisResult<()> {
        if conn.is_none() {
            let mut c = tokio::time::timeout(Duration::from_secs(2), self.client.get_multiplexed_async_connection())
                .await
                .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
            // A new connection may be to a new server (Redis restarted, or failed over).
            if let Some(found) = Durability::of_server(&mut c).await {
                self.tell_durability(found);
            }
            *conn = Some(c);
        }
        let Some(c) = conn.as_mut() else { return Ok(()) };
        let batch = match self.outbox.lock() {
            Ok(mut o) => std::mem::take(&mut *o),
            Err(_) => return Ok(()),
        };
        let fence = self.fence.lock().ok().and_then(|f| *f);
        let result = match fence {
            Some(token) => write_fenced(c, &batch, token, self.history_retention).await,
            None => write_batch(c, &batch, self.history_retention).await,
        };
        if result.is_err() {
            // Put back what was not written, without overwriting newer entries.
            if let Ok(mut o) = self.outbox.lock() {
                for (k, v) in batch.statuses {
                    o.statuses.entry(k).or_insert(v);
                }
                for (k, v) in batch.shaping {
                    o.shaping.entry(k).or_insert(v);
                }
                for (k, v) in batch.faults {
                    o.faults.entry(k).or_insert(v);
                }
                for e in batch.events.into_iter().rev() {
                    o.events.push_front(e);
                }
                for (k, v) in batch.counters {
                    *o.counters.entry(k).or_default() += v;
                }
                for (k, v) in batch.gauges {
                    o.gauges.entry(k).or_insert(v);
                }
            }
        }
        result
    }
}

/// Writes the batch in one transaction that fails if the lease changed hands since `token`
/// (WATCH on the generation). A fenced-off batch is dropped: it is another leader's world now.
async fn write_fenced(c: &mut MultiplexedConnection, batch: &Outbox, token: u64, retention: Duration) -> redis::RedisResult<()> {
    use super::lease::GENERATION_KEY;
    redis::cmd("WATCH").arg(GENERATION_KEY).query_async::<()>(c).await?;
    let current: Option<u64> = c.get(GENERATION_KEY).await?;
    if current != Some(token) {
        redis::cmd("UNWATCH").query_async::<()>(c).await?;
        tracing::warn!(token, current = ?current, "another labd leads now: dropping this labd's pending status writes");
        return Ok(());
    }
    let mut pipe = batch_pipeline(batch, retention);
    pipe.atomic().get(GENERATION_KEY);
    let done: Option<(Option<u64>,)> = pipe.query_async(c).await?;
    if done.is_none() {
        tracing::warn!(token, "the lease changed hands during a status write: dropped");
    }
    Ok(())
}

async fn write_batch(c: &mut MultiplexedConnection, batch: &Outbox, retention: Duration) -> redis::RedisResult<()> {
    batch_pipeline(batch, retention).query_async::<()>(c).await
}

/// `retention`: how long a deleted lab's probes and usage history are kept.
fn batch_pipeline(batch: &Outbox, retention: Duration) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for (lab, status) in &batch.statuses {
        let history = [keys::probes(lab), keys::usage_history(lab)];
        match status {
            Some(s) => {
                let json = serde_json::to_string(s).unwrap_or_default();
                pipe.sadd(keys::LABS, lab).ignore().set(keys::status(lab), json).ignore();
                // A lab of that name again: its history is kept as long as it lives.
                history.iter().for_each(|key| {
                    pipe.persist(key).ignore();
                });
            }
            None => {
                pipe.srem(keys::LABS, lab).ignore();
                pipe.del(&[keys::status(lab), keys::events(lab), keys::metrics(lab), keys::shaping(lab), keys::faults(lab), keys::tasks(lab), keys::usage(lab)]).ignore();
                history.iter().for_each(|key| {
                    pipe.expire(key, retention.as_secs() as i64).ignore();
                });
            }
        }
    }
    for (key, written) in [(keys::shaping as fn(&str) -> String, &batch.shaping), (keys::faults, &batch.faults)] {
        for (lab, json) in written {
            match json {
                Some(json) => pipe.set(key(lab), json).ignore(),
                None => pipe.del(key(lab)).ignore(),
            };
        }
    }
    // A deleted lab's shaping went with it: its agents stop at once too.
    let deleted = batch.statuses.iter().filter(|(_, status)| status.is_none()).map(|(lab, _)| lab);
    let changed: BTreeSet<&str> = batch.shaping.keys().chain(batch.faults.keys()).chain(deleted).map(String::as_str).collect();
    if !changed.is_empty() {
        pipe.publish(keys::SHAPING_CHANGED, changed.into_iter().collect::<Vec<_>>().join(" ")).ignore();
    }
    for (lab, e) in &batch.events {
        if batch.statuses.get(lab).is_some_and(Option::is_none) {
            continue;
        }
        pipe.cmd("XADD").arg(keys::events(lab)).arg("MAXLEN").arg("~").arg(EVENTS_KEPT).arg("*").arg(&event_fields(e)[..]).ignore();
    }
    // A lab deleted in this batch gets no metrics written after its keys are gone.
    let deleted: Vec<String> = batch.statuses.iter().filter(|(_, s)| s.is_none()).map(|(lab, _)| keys::metrics(lab)).collect();
    for ((key, field), by) in batch.counters.iter().filter(|((key, _), _)| !deleted.contains(key)) {
        pipe.hincr(key, field, *by).ignore();
    }
    for ((key, field), value) in batch.gauges.iter().filter(|((key, _), _)| !deleted.contains(key)) {
        pipe.hset(key, field, value).ignore();
    }
    // Answers nobody reads (a webhook's, a labctl interrupted) go a while after the last one.
    if batch.gauges.keys().any(|(key, _)| key == keys::RECONCILED) {
        pipe.expire(keys::RECONCILED, ANSWERS_KEPT.as_secs() as i64).ignore();
    }
    pipe
}

/// How long `labctl reconcile`'s answers stay unread (labctl reads its own within a second).
const ANSWERS_KEPT: Duration = Duration::from_secs(600);

/// One `labctl probe` measurement between two services.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    pub time: chrono::DateTime<chrono::Utc>,
    pub from: String,
    pub to: String,
    pub address: String,
    pub sent: u32,
    pub received: u32,
    pub loss_percent: f64,
    pub avg_ms: f64,
}

/// Read access for labctl (and tests).
pub struct StoreReader {
    conn: MultiplexedConnection,
}

/// How long ago each node's agent last passed, from its entry in `swarmlab:agents`.
fn agents_ages(agents: BTreeMap<String, String>) -> BTreeMap<String, Duration> {
    let now = chrono::Utc::now();
    agents
        .into_iter()
        .filter_map(|(node, json)| {
            let updated = serde_json::from_str::<serde_json::Value>(&json).ok()?["updatedAt"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())?;
            Some((node, (now - updated.with_timezone(&chrono::Utc)).to_std().unwrap_or_default()))
        })
        .collect()
}

fn alive(ages: BTreeMap<String, Duration>, within: Duration) -> Vec<String> {
    ages.into_iter().filter(|(_, age)| *age <= within).map(|(node, _)| node).collect()
}

impl StoreReader {
    pub async fn connect(url: &str) -> redis::RedisResult<Self> {
        Self::connect_with(url, redis::AsyncConnectionConfig::new()).await
    }

    /// A connection for [`StoreReader::wait_for_events`]: answers may take up to `block`.
    pub async fn connect_for_waiting(url: &str, block: Duration) -> redis::RedisResult<Self> {
        Self::connect_with(url, redis::AsyncConnectionConfig::new().set_response_timeout(Some(block + Duration::from_secs(2)))).await
    }

    async fn connect_with(url: &str, config: redis::AsyncConnectionConfig) -> redis::RedisResult<Self> {
        let client = super::client(url)?;
        let conn = tokio::time::timeout(Duration::from_secs(3), client.get_multiplexed_async_connection_with_config(&config))
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
        Ok(StoreReader { conn })
    }

    /// How long ago each node's agent last passed (each pass, every half second, says so in
    /// `swarmlab:agents`).
    pub async fn agent_ages(&mut self) -> redis::RedisResult<BTreeMap<String, Duration>> {
        Ok(agents_ages(self.conn.hgetall(keys::AGENTS).await?))
    }

    /// The nodes whose agent has passed within `within`.
    pub async fn live_agents(&mut self, within: Duration) -> redis::RedisResult<Vec<String>> {
        Ok(alive(self.agent_ages().await?, within))
    }

    pub async fn labs(&mut self) -> redis::RedisResult<Vec<String>> {
        let mut labs: Vec<String> = self.conn.smembers(keys::LABS).await?;
        labs.sort();
        Ok(labs)
    }

    /// Records an event of the user's (`labctl restart`) among labd's, so the lab's timeline
    /// (`labctl events`, `logs`, `report`) has it.
    pub async fn add_event(&mut self, lab: &str, event: &LabEvent) -> redis::RedisResult<()> {
        redis::cmd("XADD").arg(keys::events(lab)).arg("MAXLEN").arg("~").arg(EVENTS_KEPT).arg("*").arg(&event_fields(event)[..]).query_async(&mut self.conn).await
    }

    /// Records one probe result (kept: the last 5000).
    pub async fn add_probe(&mut self, lab: &str, probe: &ProbeResult) -> redis::RedisResult<()> {
        let json = serde_json::to_string(probe).unwrap_or_default();
        let opts = redis::streams::StreamAddOptions::default().trim(redis::streams::StreamTrimStrategy::maxlen(redis::streams::StreamTrimmingMode::Approx, 5000));
        self.conn.xadd_options::<_, _, _, ()>(keys::probes(lab), "*", &[("probe", json)], &opts).await
    }

    /// Every probe result of a lab, oldest first.
    pub async fn probes(&mut self, lab: &str) -> redis::RedisResult<Vec<ProbeResult>> {
        let reply: redis::streams::StreamRangeReply = self.conn.xrange_all(keys::probes(lab)).await?;
        Ok(reply.ids.iter().filter_map(|id| id.get::<String>("probe")).filter_map(|j| serde_json::from_str(&j).ok()).collect())
    }

    /// The node agents' samples of the lab by service, oldest first.
    pub async fn usage_history(&mut self, lab: &str) -> redis::RedisResult<Vec<crate::usage::UsageRecord>> {
        let reply: redis::streams::StreamRangeReply = self.conn.xrange_all(keys::usage_history(lab)).await?;
        Ok(reply.ids.iter().filter_map(|id| id.get::<String>("usage")).filter_map(|j| serde_json::from_str(&j).ok()).collect())
    }

    /// `labctl start`: time 0 of the lab's `start: manual` schedule is now.
    pub async fn start_schedule(&mut self, lab: &str) -> redis::RedisResult<chrono::DateTime<chrono::Utc>> {
        let now = chrono::Utc::now();
        redis::pipe().hset(keys::STARTS, lab, now.to_rfc3339()).ignore().publish(keys::FLAGS_CHANGED, lab).ignore().query_async::<()>(&mut self.conn).await?;
        Ok(now)
    }

    /// Asks the leading labd to read its source now and look at `lab` (or every lab) again:
    /// the request's id, and how many labds heard it (0: none listens).
    pub async fn request_reconcile(&mut self, lab: Option<&str>) -> redis::RedisResult<(String, u64)> {
        let id = format!("{:016x}", rand::random::<u64>());
        let payload = lab.map_or_else(|| id.clone(), |lab| format!("{id} {lab}"));
        let heard: u64 = self.conn.publish(keys::RECONCILE, payload).await?;
        Ok((id, heard))
    }

    /// labd's answer to request `id`, once written (and then removed: it is read once).
    pub async fn reconcile_answer(&mut self, id: &str) -> redis::RedisResult<Option<crate::status::ReconcileAnswer>> {
        let json: Option<String> = self.conn.hget(keys::RECONCILED, id).await?;
        let Some(json) = json else { return Ok(None) };
        let _: () = self.conn.hdel(keys::RECONCILED, id).await?;
        Ok(serde_json::from_str(&json).ok())
    }

    /// Suspends (or resumes) a lab: labd stops (or starts again) changing it.
    pub async fn set_suspended(&mut self, lab: &str, suspended: bool) -> redis::RedisResult<()> {
        let (add_to, remove_from) = if suspended { (keys::SUSPENDED, keys::RESUMED) } else { (keys::RESUMED, keys::SUSPENDED) };
        redis::pipe().atomic().sadd(add_to, lab).ignore().srem(remove_from, lab).ignore().publish(keys::FLAGS_CHANGED, lab).ignore().query_async(&mut self.conn).await
    }

    /// When the leading labd last said it was alive, and its resync period (`None`: no labd
    /// has written here).
    pub async fn heartbeat(&mut self) -> redis::RedisResult<Option<Heartbeat>> {
        let fields: BTreeMap<String, String> = self.conn.hgetall(keys::LABD).await?;
        let time = |field: &str| fields.get(field).and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&chrono::Utc));
        let resync = Duration::from_secs(fields.get("resync_secs").and_then(|s| s.parse().ok()).unwrap_or(15));
        Ok(time("heartbeat").map(|at| Heartbeat { at, resync, stopped_at: time("stopped_at") }))
    }

    /// The Git source's state, if labd reads labs from Git.
    pub async fn source(&mut self) -> redis::RedisResult<Option<crate::status::SourceStatus>> {
        let json: Option<String> = self.conn.hget(keys::LABD, "source").await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    pub async fn status(&mut self, lab: &str) -> redis::RedisResult<Option<LabStatus>> {
        let json: Option<String> = self.conn.get(keys::status(lab)).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Waits up to `block` for an event newer than now in any of the labs' streams (`XREAD
    /// BLOCK`): whether one came. Meant for a connection of its own (it holds it while waiting).
    pub async fn wait_for_events(&mut self, labs: &[String], block: Duration) -> redis::RedisResult<bool> {
        if labs.is_empty() {
            tokio::time::sleep(block).await;
            return Ok(false);
        }
        let streams: Vec<String> = labs.iter().map(|l| keys::events(l)).collect();
        let from_now = vec!["$"; streams.len()];
        let opts = redis::streams::StreamReadOptions::default().block(block.as_millis() as usize).count(1);
        let reply: Option<redis::streams::StreamReadReply> = self.conn.xread_options(&streams, &from_now, &opts).await?;
        Ok(reply.is_some_and(|r| !r.keys.is_empty()))
    }

    /// The lab's last `count` events, oldest first.
    pub async fn events(&mut self, lab: &str, count: usize) -> redis::RedisResult<Vec<LabEvent>> {
        Ok(self.recent_events(lab, count).await?.into_iter().map(|(_, e)| e).collect())
    }

    /// The lab's last `count` events, oldest first, each with its stream id (to read on after
    /// it with [`StoreReader::events_after`]).
    pub async fn recent_events(&mut self, lab: &str, count: usize) -> redis::RedisResult<Vec<(String, LabEvent)>> {
        let reply: redis::streams::StreamRangeReply = self.conn.xrevrange_count(keys::events(lab), "+", "-", count).await?;
        Ok(reply.ids.iter().rev().map(|id| (id.id.clone(), event_from(id))).collect())
    }

    /// The events of each lab in `after` newer than the stream id it maps to (`0-0`: all),
    /// waiting up to `block` for one (`XREAD BLOCK`: meant for a connection of its own, see
    /// [`StoreReader::connect_for_waiting`]); each with its lab and id.
    pub async fn events_after(&mut self, after: &BTreeMap<String, String>, block: Duration) -> redis::RedisResult<Vec<(String, String, LabEvent)>> {
        if after.is_empty() {
            tokio::time::sleep(block).await;
            return Ok(vec![]);
        }
        let streams: Vec<String> = after.keys().map(|l| keys::events(l)).collect();
        let ids: Vec<&str> = after.values().map(String::as_str).collect();
        let opts = redis::streams::StreamReadOptions::default().block(block.as_millis() as usize);
        let reply: Option<redis::streams::StreamReadReply> = self.conn.xread_options(&streams, &ids, &opts).await?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(lab) = after.keys().find(|l| keys::events(l) == key.key) else { continue };
            out.extend(key.ids.iter().map(|id| (lab.clone(), id.id.clone(), event_from(id))));
        }
        Ok(out)
    }

    pub async fn metrics(&mut self, key: &str) -> redis::RedisResult<BTreeMap<String, String>> {
        self.conn.hgetall(key).await
    }

    pub async fn task_shaping(&mut self, lab: &str) -> redis::RedisResult<Vec<crate::status::TaskShaping>> {
        let map: BTreeMap<String, String> = self.conn.hgetall(keys::tasks(lab)).await?;
        Ok(map.values().filter_map(|v| serde_json::from_str(v).ok()).collect())
    }

    /// The conditions labd tells the node agents to apply to the lab's attachments now (none
    /// when it has nothing in force, or has not written them).
    pub async fn desired_shaping(&mut self, lab: &str) -> redis::RedisResult<crate::plan::Shaping> {
        let json: Option<String> = self.conn.get(keys::shaping(lab)).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()).unwrap_or_default())
    }

    /// What the lab's tasks use, as their nodes' agents last sampled it.
    pub async fn task_usage(&mut self, lab: &str) -> redis::RedisResult<Vec<crate::usage::TaskUsage>> {
        let map: BTreeMap<String, String> = self.conn.hgetall(keys::usage(lab)).await?;
        Ok(map.values().filter_map(|v| serde_json::from_str(v).ok()).collect())
    }
}

/// An event's fields in a lab's stream.
fn event_fields(e: &LabEvent) -> [(&'static str, String); 4] {
    [("time", e.time.to_rfc3339()), ("kind", e.kind.to_string()), ("reason", e.reason.to_string()), ("message", e.message.clone())]
}

/// An event as labd wrote it to a lab's stream (fields a newer labd adds are left out, a reason
/// this one does not know is `Other`).
fn event_from(id: &redis::streams::StreamId) -> LabEvent {
    let get = |k: &str| id.get::<String>(k).unwrap_or_default();
    LabEvent {
        time: chrono::DateTime::parse_from_rfc3339(&get("time")).map(|t| t.with_timezone(&chrono::Utc)).unwrap_or_default(),
        reason: get("reason").parse().unwrap_or(crate::status::EventReason::Other),
        kind: get("kind").parse().unwrap_or(crate::status::EventKind::Normal),
        message: get("message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_follows_the_append_only_file_then_the_save_points() {
        assert_eq!(Durability::of("yes", ""), Durability::AppendOnly);
        assert_eq!(Durability::of("no", "3600 1 300 100 60 10000"), Durability::Snapshots);
        assert_eq!(Durability::of("no", ""), Durability::MemoryOnly);
        assert_eq!(Durability::of("no", "  "), Durability::MemoryOnly);
    }
}
