//! The status store: where labd writes status, events and metrics, and labctl reads them.
//! Redis, with the keys documented in the README.

pub mod lease;
mod redis_store;

pub use redis_store::{keys, Heartbeat, ProbeResult, RedisStore, StoreReader};

use std::collections::BTreeSet;
use std::future::Future;

use crate::status::{LabEvent, LabStatus, ReconcileAnswer, SourceStatus, TaskShaping};

/// An agent that has not passed for this long is taken to be gone (it passes twice a second).
pub const AGENT_ALIVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The files of the client certificate a Redis that checks its clients' (`tls-auth-clients
/// yes`) wants, in PEM, as redis-cli's `--cert` and `--key` take them.
pub const CLIENT_CERT_ENV: [&str; 2] = ["REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE"];

/// A client of the Redis at `url`: with the client certificate the environment names
/// (CLIENT_CERT_ENV) for a `rediss://` one. The server is checked against this machine's trusted
/// certificates either way (a private CA through SSL_CERT_FILE).
pub fn client(url: &str) -> redis::RedisResult<redis::Client> {
    let [cert, key] = CLIENT_CERT_ENV.map(|name| std::env::var_os(name).filter(|v| !v.is_empty()).map(|v| (name, std::path::PathBuf::from(v))));
    client_with(url, cert, key)
}

fn client_with(url: &str, cert: Option<(&str, std::path::PathBuf)>, key: Option<(&str, std::path::PathBuf)>) -> redis::RedisResult<redis::Client> {
    let invalid = |detail: String| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "client certificate", detail));
    let (cert, key) = match (cert, key) {
        (None, None) => return redis::Client::open(url),
        (Some(cert), Some(key)) => (cert, key),
        (Some((set, _)), None) | (None, Some((set, _))) => return Err(invalid(format!("{set} is set without its pair: {} name the certificate and its key", CLIENT_CERT_ENV.join(" and ")))),
    };
    if !url.starts_with("rediss://") {
        return Err(invalid(format!("{} are set for a Redis not spoken to over TLS: its URL is rediss://", CLIENT_CERT_ENV.join(" and "))));
    }
    let read = |(name, path): (&str, std::path::PathBuf)| std::fs::read(&path).map_err(|e| invalid(format!("{name}={}: {e}", path.display())));
    let client_tls = Some(redis::ClientTlsConfig { client_cert: read(cert)?, client_key: read(key)? });
    redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls, root_cert: None })
}

/// What to do about a Redis that refused a connection over TLS, or a TLS-only one asked in
/// plain text: the TLS library's words alone ("invalid peer certificate: UnknownIssuer",
/// "Connection reset by peer") do not say it.
/// `tls`: the URL was `rediss://`.
pub fn tls_hint(tls: bool, error: &redis::RedisError) -> Option<&'static str> {
    let text = error.to_string();
    // The server's alert when it checks its clients and got no certificate, or one it refuses.
    if tls && (text.contains("CertificateRequired") || text.contains("UnknownCA") || text.contains("BadCertificate")) {
        return Some("the server checks its clients' certificates: REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE name one it trusts");
    }
    if tls && text.contains("certificate") {
        return Some("this machine does not trust the server's certificate: for a private CA, SSL_CERT_FILE=/path/to/ca.pem names it");
    }
    // Refused: nothing listens there at all (redis counts that as a dropped connection too),
    // so the caller's own hint (is Redis running?) is the one that helps.
    let refused = error.is_connection_refusal() || text.contains("Connection refused");
    if !tls && !refused && (error.is_connection_dropped() || text.contains("reset by peer")) {
        return Some("a server that speaks only TLS drops plain connections: if it does, the URL is rediss://");
    }
    None
}

/// What `labctl suspend` and `labctl resume` said, as read from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suspensions {
    pub suspended: BTreeSet<String>,
    /// Resumed, and not suspended since.
    pub resumed: BTreeSet<String>,
}

impl Suspensions {
    /// Whether `labctl suspend` holds `lab`. `remembered`: labd's memory of it on Swarm (the
    /// suspension it last acted on), which stands when the store says nothing of the lab (a
    /// Redis that restarted empty must not resume a suspended lab).
    pub fn holds(&self, lab: &str, remembered: bool) -> bool {
        self.suspended.contains(lab) || (remembered && !self.resumed.contains(lab))
    }
}

/// What the controller needs of the status store: write status, events and metrics, publish
/// the desired shaping for the node agents, read what the agents applied and what a previous
/// labd wrote. Writes never fail (they are buffered while the store is down). Redis in labd;
/// in memory in unit tests.
pub trait LabStore: Clone + Send + Sync + 'static {
    fn put_status(&self, status: &LabStatus);
    /// Forgets the lab: its status, shaping and metrics.
    fn delete_lab(&self, lab: &str);
    fn event(&self, lab: &str, event: LabEvent);
    /// Adds to a counter of the lab (and of labd as a whole).
    fn count(&self, lab: &str, metric: &str, by: i64);
    fn gauge(&self, lab: &str, metric: &str, value: u128);
    /// A gauge of labd as a whole.
    fn global_gauge(&self, metric: &str, value: u128);
    /// The leading labd is alive (readers mark statuses stale when this stops).
    fn heartbeat(&self, resync: std::time::Duration);
    /// The leading labd stopped (a shutdown, not a lost lease): readers say so at once rather
    /// than once the heartbeat is old.
    fn stopped(&self);
    /// The Git source's state (labctl status says when fetches fail).
    fn put_source(&self, source: &SourceStatus);
    /// The answer to a `labctl reconcile` request.
    fn answer_reconcile(&self, id: &str, answer: &ReconcileAnswer);
    fn put_shaping(&self, lab: &str, json: Option<String>);
    /// What the schedule does to the lab's task processes, for the agents (`None`: nothing).
    fn put_faults(&self, lab: &str, json: Option<String>);
    /// The agents' reports for the lab's tasks; `None` when they cannot be read.
    fn task_shaping(&self, lab: &str) -> impl Future<Output = Option<Vec<TaskShaping>>> + Send;
    /// The nodes whose agent passed within [`AGENT_ALIVE_WITHIN`]; `None` when unreadable.
    fn live_agents(&self) -> impl Future<Output = Option<Vec<String>>> + Send;
    /// The last `labctl start` of each lab; `None` when unreadable.
    fn starts(&self) -> impl Future<Output = Option<std::collections::BTreeMap<String, chrono::DateTime<chrono::Utc>>>> + Send;
    /// What `labctl suspend` and `resume` said; `None` when unreadable.
    fn suspensions(&self) -> impl Future<Output = Option<Suspensions>> + Send;
    /// The statuses a previous labd wrote (generations, files, start times survive restarts).
    fn statuses(&self) -> impl Future<Output = Vec<LabStatus>> + Send;
    /// What others say at once (pub/sub) that labd would otherwise see only at its next look.
    fn notices(&self) -> impl futures::Stream<Item = Notice> + Send + 'static;
}

/// Something another process said through Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `labctl` changed a lab's flags (start, suspend, resume): read them now. Also said at
    /// each (re)subscription, since a message sent while unsubscribed is lost.
    Flags,
    /// A node agent's reports for these labs changed (shaping applied, a task gone): the labs
    /// waiting for them can be looked at now rather than at their next poll.
    Reports(Vec<String>),
    /// `labctl reconcile`: read the source now, look at `lab` (or every lab) again, answer `id`.
    Reconcile { id: String, lab: Option<String> },
}

impl LabStore for RedisStore {
    fn put_status(&self, status: &LabStatus) {
        RedisStore::put_status(self, status)
    }
    fn delete_lab(&self, lab: &str) {
        RedisStore::delete_lab(self, lab)
    }
    fn event(&self, lab: &str, event: LabEvent) {
        RedisStore::event(self, lab, event)
    }
    fn count(&self, lab: &str, metric: &str, by: i64) {
        RedisStore::count(self, lab, metric, by)
    }
    fn gauge(&self, lab: &str, metric: &str, value: u128) {
        RedisStore::gauge(self, lab, metric, value)
    }
    fn global_gauge(&self, metric: &str, value: u128) {
        RedisStore::global_gauge(self, metric, value)
    }
    fn heartbeat(&self, resync: std::time::Duration) {
        RedisStore::heartbeat(self, resync)
    }
    fn stopped(&self) {
        RedisStore::stopped(self)
    }
    fn put_shaping(&self, lab: &str, json: Option<String>) {
        RedisStore::put_shaping(self, lab, json)
    }
    fn put_faults(&self, lab: &str, json: Option<String>) {
        RedisStore::put_faults(self, lab, json)
    }
    fn put_source(&self, source: &SourceStatus) {
        RedisStore::put_source(self, source)
    }
    fn answer_reconcile(&self, id: &str, answer: &ReconcileAnswer) {
        RedisStore::answer_reconcile(self, id, answer)
    }
    async fn task_shaping(&self, lab: &str) -> Option<Vec<TaskShaping>> {
        RedisStore::task_shaping(self, lab).await
    }
    async fn live_agents(&self) -> Option<Vec<String>> {
        RedisStore::live_agents(self, AGENT_ALIVE_WITHIN).await
    }
    async fn statuses(&self) -> Vec<LabStatus> {
        RedisStore::statuses(self).await
    }
    async fn suspensions(&self) -> Option<Suspensions> {
        RedisStore::suspensions(self).await
    }
    async fn starts(&self) -> Option<std::collections::BTreeMap<String, chrono::DateTime<chrono::Utc>>> {
        RedisStore::starts(self).await
    }
    fn notices(&self) -> impl futures::Stream<Item = Notice> + Send + 'static {
        RedisStore::notices(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing listening is not a TLS server dropping plain text: no TLS hint for it.
    #[test]
    fn a_refused_connection_gets_no_tls_hint_and_a_reset_one_does() {
        let io = |kind| redis::RedisError::from(std::io::Error::from(kind));
        assert_eq!(tls_hint(false, &io(std::io::ErrorKind::ConnectionRefused)), None);
        assert!(tls_hint(false, &io(std::io::ErrorKind::ConnectionReset)).is_some_and(|h| h.contains("rediss://")));
    }

    /// A client certificate is a pair of files for a `rediss://` URL; anything else is said
    /// before a connection is tried.
    #[test]
    fn a_client_certificate_is_both_files_for_a_tls_url() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let [cert, key] = ["cert.pem", "key.pem"].map(|f| dir.path().join(f));
        let named = |name: &'static str, path: &std::path::Path| Some((name, path.to_path_buf()));
        let said = |r: redis::RedisResult<redis::Client>| r.err().map(|e| e.to_string()).unwrap_or_default();

        assert!(client_with("redis://127.0.0.1:6379", None, None).is_ok(), "no certificate: as before");
        let half = said(client_with("rediss://r:6380", named("REDIS_TLS_CERT_FILE", &cert), None));
        assert!(half.contains("REDIS_TLS_CERT_FILE is set without its pair"), "{half}");
        let plain = said(client_with("redis://r:6379", named("REDIS_TLS_CERT_FILE", &cert), named("REDIS_TLS_KEY_FILE", &key)));
        assert!(plain.contains("its URL is rediss://"), "{plain}");
        let missing = said(client_with("rediss://r:6380", named("REDIS_TLS_CERT_FILE", &cert), named("REDIS_TLS_KEY_FILE", &key)));
        assert!(missing.contains(&format!("REDIS_TLS_CERT_FILE={}", cert.display())), "{missing}");
        std::fs::write(&cert, "not a certificate").expect("a file");
        std::fs::write(&key, "not a key").expect("a file");
        let garbled = said(client_with("rediss://r:6380", named("REDIS_TLS_CERT_FILE", &cert), named("REDIS_TLS_KEY_FILE", &key)));
        assert!(!garbled.is_empty(), "files that are not PEM are refused");
    }
}
