//! Only one labd reconciles a swarm at a time: a lease in Redis (`SET NX PX`), renewed by its
//! holder; a standby waits and takes over when the holder stops renewing.

use std::time::Duration;

use redis::AsyncCommands;

pub const LEASE_KEY: &str = "swarmlab:leader";
/// Bumped each time the lease changes hands: the fencing token of the new holder's writes.
pub const GENERATION_KEY: &str = "swarmlab:leader:generation";

/// Takes the lease if free, and bumps the generation in the same step.
const ACQUIRE: &str = r#"if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then return redis.call("INCR", KEYS[2]) else return false end"#;

/// Renews only if we still hold it, atomically.
const RENEW: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end"#;

pub struct Lease {
    client: redis::Client,
    pub holder: String,
    pub ttl: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    Held,
    /// Another labd holds it now: stop reconciling.
    Lost(Option<String>),
    /// Redis cannot be reached: nobody else can take the lease either, keep going.
    Unknown,
}

impl Lease {
    pub fn new(url: &str, holder: String, ttl: Duration) -> redis::RedisResult<Lease> {
        Ok(Lease { client: super::client(url)?, holder, ttl })
    }

    async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        tokio::time::timeout(Duration::from_secs(2), self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))?
    }

    /// Waits until this labd holds the lease, saying who holds it meanwhile. Returns the
    /// fencing token: the lease's generation, which every status write is checked against.
    pub async fn acquire(&self) -> u64 {
        let mut said: Option<String> = None;
        loop {
            match self.conn().await {
                Ok(mut c) => {
                    let taken: redis::RedisResult<Option<u64>> = redis::Script::new(ACQUIRE)
                        .key(LEASE_KEY)
                        .key(GENERATION_KEY)
                        .arg(&self.holder)
                        .arg(self.ttl.as_millis() as u64)
                        .invoke_async(&mut c)
                        .await;
                    if let Ok(Some(generation)) = taken {
                        tracing::info!(holder = %self.holder, generation, "leader lease acquired: reconciling");
                        return generation;
                    }
                    let current: Option<String> = c.get(LEASE_KEY).await.ok().flatten();
                    if current != said {
                        tracing::info!(holder = ?current, "another labd holds the leader lease: standing by");
                        said = current;
                    }
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    hint = super::tls_hint(matches!(self.client.get_connection_info().addr(), redis::ConnectionAddr::TcpTls { .. }), &e).unwrap_or_default(),
                    redis = %self.client.get_connection_info().addr(),
                    "cannot reach redis for the leader lease (is redis-server running there? --redis or REDIS_URL says where); retrying"
                ),
            }
            tokio::time::sleep(self.ttl / 3).await;
        }
    }

    pub async fn renew(&self) -> Renewal {
        let Ok(mut c) = self.conn().await else { return Renewal::Unknown };
        let renewed: redis::RedisResult<i64> =
            redis::Script::new(RENEW).key(LEASE_KEY).arg(&self.holder).arg(self.ttl.as_millis() as u64).invoke_async(&mut c).await;
        match renewed {
            Ok(1) => Renewal::Held,
            // Expired (Redis was away, or came back empty) or taken: either way this holder's
            // generation is over; acquiring again starts a new one.
            Ok(_) => Renewal::Lost(c.get(LEASE_KEY).await.ok().flatten()),
            Err(_) => Renewal::Unknown,
        }
    }

    /// Gives the lease up at a clean shutdown so a standby takes over at once.
    pub async fn release(&self) {
        if let Ok(mut c) = self.conn().await {
            let _: redis::RedisResult<i64> = redis::Script::new(r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#)
                .key(LEASE_KEY)
                .arg(&self.holder)
                .invoke_async(&mut c)
                .await;
        }
    }
}
