//! A capture of tasks on other nodes, through their agents: `labctl capture` asks in Redis
//! (a [`CaptureRequest`] in the `swarmlab:captures` hash, its deadline renewed while it runs),
//! each node's agent opens taps on its tasks the request names and relays what they see as
//! [`Relayed`] entries of the capture's stream, which labctl merges with the taps of its own
//! node into one capture. Pure: the wire format only; the Redis calls are at both ends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Direction, Frame, Tap, TapEnd};

/// How long a request stands without being renewed: a labctl killed mid-capture leaves the
/// agents capturing for no longer than this.
pub const REQUEST_LIFETIME: Duration = Duration::from_secs(5);

/// Entries kept in a capture's stream (approximately), whatever their size: a labctl that
/// cannot keep up loses the oldest frames (counted: see [`Relayed::Ended`]).
pub const STREAM_KEPT: usize = 100_000;

/// Bytes of frames an agent lets wait in a capture's stream (labctl trims what it has read):
/// past this, it leaves frames out (counted) rather than fill Redis with a backlog of large
/// frames (a TCP stream's merged frames reach 64 KB each).
pub const STREAM_BACKLOG_BYTES: usize = 64 << 20;

/// What `labctl capture` asks of the agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureRequest {
    pub lab: String,
    /// Only this service's tasks (and of it, only `slot`'s); every task of the lab when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    /// The lab's names of the networks; all of a task's when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    pub snaplen: usize,
    /// Swarm's id of the node labctl captures itself (its agent leaves it alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except_node_id: Option<String>,
    /// When the request lapses unless renewed.
    pub until: DateTime<Utc>,
}

impl CaptureRequest {
    pub fn wants(&self, lab: &str, service: &str, slot: Option<u64>) -> bool {
        self.lab == lab && self.service.as_deref().is_none_or(|s| s == service) && (self.slot.is_none() || self.slot == slot)
    }

    pub fn wants_network(&self, network: &str) -> bool {
        self.networks.is_empty() || self.networks.iter().any(|n| n == network)
    }

    pub fn lapsed(&self, now: DateTime<Utc>) -> bool {
        now > self.until
    }
}

/// One entry of a capture's stream, from one node's agent. `tap` numbers that agent's taps for
/// this capture; labctl renumbers them among its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relayed {
    /// A tap opened: before any of its frames.
    Tap { tap: usize, info: Tap },
    Frame { node: String, frame: Frame },
    /// A tap closed; `forwarded`: the frames the agent put in the stream for it; `skipped`:
    /// those it left out, the stream's backlog being full.
    Ended { node: String, end: TapEnd, forwarded: u64, skipped: u64 },
    /// A task the request names that could not be captured, and why.
    Failed { node: String, task: String, message: String },
}

/// The entry's header (JSON in field `h`); a frame's bytes go apart, raw, in field `d`. Times
/// in nanoseconds since the epoch fit a `u64` until 2554 (serde cannot read a tagged `u128`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum Header {
    Tap { tap: usize, task: String, network: String, interface: String, node: String },
    Frame { node: String, tap: usize, nanos: u64, out: bool, len: u32 },
    Ended { node: String, tap: usize, received: u64, dropped: u64, forwarded: u64, #[serde(default)] skipped: u64, error: Option<String> },
    Failed { node: String, task: String, message: String },
}

pub const HEADER_FIELD: &str = "h";
pub const DATA_FIELD: &str = "d";

/// A stream entry's fields: the header as JSON in `h`, the bytes (if any) raw in `d`. Every
/// stream of requests and answers (captures, commands, their input) is written so.
pub fn entry_fields(header: &impl Serialize, data: Option<Vec<u8>>) -> Vec<(&'static str, Vec<u8>)> {
    // A header of strings and numbers always serialises.
    let mut fields = vec![(HEADER_FIELD, serde_json::to_vec(header).unwrap_or_default())];
    fields.extend(data.map(|d| (DATA_FIELD, d)));
    fields
}

/// The header and the bytes of an entry's fields, as a reader gets them back (tests).
#[cfg(test)]
pub(crate) fn header_and_data(fields: &[(&'static str, Vec<u8>)]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let header = fields.iter().find(|(k, _)| *k == HEADER_FIELD).map(|(_, v)| v.clone())?;
    Some((header, fields.iter().find(|(k, _)| *k == DATA_FIELD).map(|(_, v)| v.clone())))
}

impl Relayed {
    /// The stream entry's fields: (name, value).
    pub fn to_fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let (header, data) = match self {
            Relayed::Tap { tap, info } => {
                (Header::Tap { tap: *tap, task: info.task.clone(), network: info.network.clone(), interface: info.interface.clone(), node: info.node.clone() }, None)
            }
            Relayed::Frame { node, frame: f } => {
                (Header::Frame { node: node.clone(), tap: f.tap, nanos: u64::try_from(f.at.as_nanos()).unwrap_or(u64::MAX), out: f.direction == Direction::Out, len: f.original_len }, Some(f.data.clone()))
            }
            Relayed::Ended { node, end, forwarded, skipped } => (
                Header::Ended { node: node.clone(), tap: end.tap, received: end.received, dropped: end.dropped, forwarded: *forwarded, skipped: *skipped, error: end.error.clone() },
                None,
            ),
            Relayed::Failed { node, task, message } => (Header::Failed { node: node.clone(), task: task.clone(), message: message.clone() }, None),
        };
        // A header of strings and numbers always serialises.
        entry_fields(&header, data)
    }

    /// The entry read back; `None` for one this version cannot read (a newer agent's).
    pub fn from_fields(header: &[u8], data: Option<Vec<u8>>) -> Option<Relayed> {
        Some(match serde_json::from_slice(header).ok()? {
            Header::Tap { tap, task, network, interface, node } => Relayed::Tap { tap, info: Tap { task, network, interface, node } },
            Header::Frame { node, tap, nanos, out, len } => {
                let at = Duration::from_nanos(nanos);
                let direction = if out { Direction::Out } else { Direction::In };
                Relayed::Frame { node, frame: Frame { tap, at, direction, original_len: len, data: data.unwrap_or_default() } }
            }
            Header::Ended { node, tap, received, dropped, forwarded, skipped, error } => Relayed::Ended { node, end: TapEnd { tap, received, dropped, error }, forwarded, skipped },
            Header::Failed { node, task, message } => Relayed::Failed { node, task, message },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(r: &Relayed) -> Option<Relayed> {
        let (header, data) = header_and_data(&r.to_fields())?;
        Relayed::from_fields(&header, data)
    }

    #[test]
    fn every_entry_reads_back_as_written() {
        let tap = Tap { task: "w.3".into(), network: "lan".into(), interface: "eth1".into(), node: "n3".into() };
        let frame = Frame { tap: 2, at: Duration::new(1_764_000_000, 123_456_789), direction: Direction::Out, original_len: 1514, data: vec![0, 1, 2, 255] };
        let entries = [
            Relayed::Tap { tap: 2, info: tap },
            Relayed::Frame { node: "n3".into(), frame },
            Relayed::Frame { node: "n3".into(), frame: Frame { tap: 0, at: Duration::ZERO, direction: Direction::In, original_len: 0, data: vec![] } },
            Relayed::Ended { node: "n3".into(), end: TapEnd { tap: 2, received: 10, dropped: 1, error: Some("its interface went away".into()) }, forwarded: 9, skipped: 3 },
            Relayed::Failed { node: "n3".into(), task: "w.4".into(), message: "no interface for lan".into() },
        ];
        for entry in &entries {
            assert_eq!(round_trip(entry).as_ref(), Some(entry));
        }
    }

    #[test]
    fn an_entry_of_a_kind_not_known_is_skipped() {
        assert_eq!(Relayed::from_fields(br#"{"kind":"marker","text":"x"}"#, None), None);
        assert_eq!(Relayed::from_fields(b"not json", None), None);
    }

    #[test]
    fn a_request_names_its_tasks_and_networks_and_lapses_unless_renewed() {
        let now = Utc::now();
        let request = CaptureRequest { lab: "l".into(), service: Some("w".into()), slot: Some(2), networks: vec!["lan".into()], snaplen: 262_144, except_node_id: None, until: now };
        assert!(request.wants("l", "w", Some(2)));
        assert!(!request.wants("l", "w", Some(1)) && !request.wants("l", "m", Some(2)) && !request.wants("other", "w", Some(2)));
        assert!(request.wants_network("lan") && !request.wants_network("wan"));
        let every = CaptureRequest { service: None, slot: None, networks: vec![], ..request.clone() };
        assert!(every.wants("l", "m", None) && every.wants_network("wan"));
        assert!(!request.lapsed(now) && request.lapsed(now + chrono::Duration::milliseconds(1)));
        let json = serde_json::to_string(&every).unwrap();
        assert_eq!(serde_json::from_str::<CaptureRequest>(&json).unwrap(), every);
    }
}
