//! The other nodes' part of a capture: asks their agents through Redis (a request renewed
//! every second while the capture runs) and reads what they relay from the capture's stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use swarmlab::capture::relay::{CaptureRequest, Relayed, DATA_FIELD, HEADER_FIELD, REQUEST_LIFETIME};
use swarmlab::store::keys;
use tokio::sync::mpsc;

/// How long one read of the stream waits for entries.
const BLOCK: Duration = Duration::from_millis(200);
/// How often the request's deadline is pushed on.
const RENEW_EVERY: Duration = Duration::from_secs(1);

pub struct RelayedTaps {
    /// What the agents relay, in the order they put it in the stream.
    pub messages: mpsc::Receiver<Relayed>,
    withdrawn: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl RelayedTaps {
    /// Asks the agents for the capture; fails when Redis cannot be written (no agent can hear).
    pub async fn ask(url: &str, request: CaptureRequest) -> redis::RedisResult<RelayedTaps> {
        let client = redis::Client::open(url)?;
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(BLOCK + Duration::from_secs(2)));
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        let id = format!("{}-{}-{:08x}", request.lab, std::process::id(), rand::random::<u32>());
        let request = CaptureRequest { until: chrono::Utc::now() + REQUEST_LIFETIME, ..request };
        conn.hset::<_, _, _, ()>(keys::CAPTURES, &id, serde_json::to_string(&request).unwrap_or_default()).await?;
        let (tx, messages) = mpsc::channel(4096);
        let withdrawn = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read(conn, id, request, withdrawn.clone(), tx));
        Ok(RelayedTaps { messages, withdrawn, reader })
    }

    /// Withdraws the request: the agents stop their taps, whose ends still come.
    pub fn withdraw(&self) {
        self.withdrawn.store(true, Ordering::Relaxed);
    }

    /// Stops reading, and removes the request and the stream.
    pub async fn finish(self) {
        self.withdraw();
        drop(self.messages);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.reader).await;
    }
}

async fn read(mut conn: redis::aio::MultiplexedConnection, id: String, mut request: CaptureRequest, withdrawn: Arc<AtomicBool>, out: mpsc::Sender<Relayed>) {
    let stream = keys::capture(&id);
    let options = redis::streams::StreamReadOptions::default().block(BLOCK.as_millis() as usize).count(1000);
    let mut last = "0-0".to_string();
    let mut renewed = tokio::time::Instant::now();
    let mut asked = true;
    let mut failing = false;
    while !out.is_closed() {
        if asked && withdrawn.load(Ordering::Relaxed) {
            asked = conn.hdel::<_, _, ()>(keys::CAPTURES, &id).await.is_err();
        } else if asked && renewed.elapsed() >= RENEW_EVERY {
            request.until = chrono::Utc::now() + REQUEST_LIFETIME;
            if conn.hset::<_, _, _, ()>(keys::CAPTURES, &id, serde_json::to_string(&request).unwrap_or_default()).await.is_ok() {
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
                    eprintln!("labctl capture: cannot read the other nodes' frames from Redis ({e}); trying again");
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
            let Some(relayed) = Relayed::from_fields(&header, entry.get::<Vec<u8>>(DATA_FIELD)) else { continue };
            if out.send(relayed).await.is_err() {
                break;
            }
        }
        // What was read leaves Redis (the agents price the backlog by what is left).
        if read {
            let _: redis::RedisResult<()> = redis::cmd("XTRIM").arg(&stream).arg("MINID").arg(&last).query_async(&mut conn).await;
        }
    }
    let _: redis::RedisResult<()> = redis::pipe().hdel(keys::CAPTURES, &id).ignore().del(&stream).ignore().query_async(&mut conn).await;
}
