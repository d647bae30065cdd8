//! A command run in tasks on other nodes, or files taken out of them, through their agents:
//! `labctl exec` and `labctl cp` ask in Redis (an [`ExecRequest`] in the `swarmlab:execs` hash,
//! its deadline renewed while they wait), each node's agent that allows it acts once on its own
//! tasks the request names and relays what comes out and how each ends as [`ExecRelayed`]
//! entries of the request's stream. With `-i` or `-t`, labctl's input and terminal size go
//! the other way, as [`ExecInput`] entries of the request's input stream. Docker reaches only
//! the containers of its own node, so this is the one way labctl on one node reaches a task on
//! another. Pure: the wire format only; the Redis calls are at both ends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How long a request stands without being renewed.
pub const REQUEST_LIFETIME: Duration = Duration::from_secs(5);

/// Entries kept in a request's stream (approximately), a bound for Redis's sake only: an
/// agent lets far fewer wait for labctl to read them before it relays more.
pub const STREAM_KEPT: usize = 100_000;

/// What `labctl exec` asks of the agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    pub lab: String,
    pub service: String,
    /// Only the task of this slot; every task of the service when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    pub action: TaskAction,
    /// Swarm's id of the node labctl acts on itself (its agent leaves it alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except_node_id: Option<String>,
    /// When the request lapses unless renewed.
    pub until: DateTime<Utc>,
}

/// What an agent does in each task a request names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum TaskAction {
    /// Runs the command in each running task (`labctl exec`): its output relayed as it comes,
    /// then its exit code. `stdin`: it reads what labctl sends in the input stream (`-i`, one
    /// task); `tty`: it runs on a terminal sized as labctl's (`-t`). An agent before these
    /// fields runs the command without either.
    Run {
        command: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stdin: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tty: bool,
    },
    /// Relays `path` out of each task's latest container, ended ones too (`labctl cp`): Docker's
    /// tar archive of it as output, then exit code 0.
    Copy { path: String },
    /// Measures round trips from each running task to the tasks of `to` (`labctl probe`): a
    /// [`crate::shaping::measure::Probed`] as JSON output, then exit code 0. It runs nothing of
    /// the user's and reads nothing of the task's (the host's `ping` in its namespace), so an
    /// agent serves it without `--allow-exec`.
    Probe {
        to: Vec<String>,
        count: u32,
        interval_ms: u32,
        /// One task of each target, not all (`--matrix`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        first_only: bool,
    },
}

impl ExecRequest {
    pub fn wants(&self, lab: &str, service: &str, slot: Option<u64>) -> bool {
        self.lab == lab && self.service == service && (self.slot.is_none() || self.slot == slot)
    }

    pub fn lapsed(&self, now: DateTime<Utc>) -> bool {
        now > self.until
    }
}

/// One entry of a request's stream, from one node's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecRelayed {
    /// The node's answer, before anything else it relays: the tasks it runs the command in
    /// (none when it has no task of the target), or why it runs none.
    Answered { node: String, tasks: Vec<String>, refused: Option<String> },
    /// A piece of what the command wrote in a task.
    Output { node: String, task: String, stderr: bool, bytes: Vec<u8> },
    /// The command ended in a task, with this exit code.
    Exited { node: String, task: String, code: i64 },
    /// The command could not be run in a task, or its end not learnt.
    Failed { node: String, task: String, message: String },
}

/// The entry's header (JSON in field `h`); output bytes go apart, raw, in field `d`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum Header {
    Answered { node: String, tasks: Vec<String>, refused: Option<String> },
    Output { node: String, task: String, stderr: bool },
    Exited { node: String, task: String, code: i64 },
    Failed { node: String, task: String, message: String },
}

pub use crate::capture::relay::{DATA_FIELD, HEADER_FIELD};
use crate::capture::relay::entry_fields;

impl ExecRelayed {
    /// The stream entry's fields: (name, value).
    pub fn to_fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let (header, data) = match self {
            ExecRelayed::Answered { node, tasks, refused } => (Header::Answered { node: node.clone(), tasks: tasks.clone(), refused: refused.clone() }, None),
            ExecRelayed::Output { node, task, stderr, bytes } => (Header::Output { node: node.clone(), task: task.clone(), stderr: *stderr }, Some(bytes.clone())),
            ExecRelayed::Exited { node, task, code } => (Header::Exited { node: node.clone(), task: task.clone(), code: *code }, None),
            ExecRelayed::Failed { node, task, message } => (Header::Failed { node: node.clone(), task: task.clone(), message: message.clone() }, None),
        };
        entry_fields(&header, data)
    }

    /// The entry read back; `None` for one this version cannot read (a newer agent's).
    pub fn from_fields(header: &[u8], data: Option<Vec<u8>>) -> Option<ExecRelayed> {
        Some(match serde_json::from_slice(header).ok()? {
            Header::Answered { node, tasks, refused } => ExecRelayed::Answered { node, tasks, refused },
            Header::Output { node, task, stderr } => ExecRelayed::Output { node, task, stderr, bytes: data.unwrap_or_default() },
            Header::Exited { node, task, code } => ExecRelayed::Exited { node, task, code },
            Header::Failed { node, task, message } => ExecRelayed::Failed { node, task, message },
        })
    }
}

/// How often labctl says it is still there while it sends nothing else.
pub const INPUT_ALIVE_EVERY: Duration = Duration::from_secs(2);
/// An agent that has heard nothing from labctl for this long takes it as gone: the command's
/// input ends (a shell waiting for a line exits), as when a `docker exec -i` client dies.
pub const INPUT_GONE_AFTER: Duration = Duration::from_secs(10);

/// What labctl sends to a `-i`/`-t` command on another node, in the request's input stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    /// Bytes labctl read from its standard input (keys as typed, on a terminal).
    Data(Vec<u8>),
    /// labctl's terminal has this size now (`-t`).
    Resize { rows: u16, columns: u16 },
    /// labctl's input ended: the command reads end-of-file.
    End,
    /// Nothing to send: labctl is still there.
    Alive,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum InputHeader {
    Data,
    Resize { rows: u16, columns: u16 },
    End,
    Alive,
}

impl ExecInput {
    /// The stream entry's fields: (name, value).
    pub fn to_fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let (header, data) = match self {
            ExecInput::Data(bytes) => (InputHeader::Data, Some(bytes.clone())),
            ExecInput::Resize { rows, columns } => (InputHeader::Resize { rows: *rows, columns: *columns }, None),
            ExecInput::End => (InputHeader::End, None),
            ExecInput::Alive => (InputHeader::Alive, None),
        };
        entry_fields(&header, data)
    }

    /// The entry read back; `None` for one this version cannot read (a newer labctl's).
    pub fn from_fields(header: &[u8], data: Option<Vec<u8>>) -> Option<ExecInput> {
        Some(match serde_json::from_slice(header).ok()? {
            InputHeader::Data => ExecInput::Data(data.unwrap_or_default()),
            InputHeader::Resize { rows, columns } => ExecInput::Resize { rows, columns },
            InputHeader::End => ExecInput::End,
            InputHeader::Alive => ExecInput::Alive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::capture::relay::header_and_data;

    fn round_trip(r: &ExecRelayed) -> Option<ExecRelayed> {
        let (header, data) = header_and_data(&r.to_fields())?;
        ExecRelayed::from_fields(&header, data)
    }

    #[test]
    fn every_entry_reads_back_as_written() {
        let entries = [
            ExecRelayed::Answered { node: "n2".into(), tasks: vec!["raft.2".into(), "raft.5".into()], refused: None },
            ExecRelayed::Answered { node: "n3".into(), tasks: vec![], refused: Some("not allowed".into()) },
            ExecRelayed::Output { node: "n2".into(), task: "raft.2".into(), stderr: true, bytes: vec![0, 10, 255] },
            ExecRelayed::Output { node: "n2".into(), task: "raft.2".into(), stderr: false, bytes: vec![] },
            ExecRelayed::Exited { node: "n2".into(), task: "raft.5".into(), code: 137 },
            ExecRelayed::Failed { node: "n2".into(), task: "raft.5".into(), message: "frozen".into() },
        ];
        for entry in &entries {
            assert_eq!(round_trip(entry).as_ref(), Some(entry));
        }
        assert_eq!(ExecRelayed::from_fields(br#"{"kind":"signal","n":9}"#, None), None);
    }

    #[test]
    fn every_input_entry_reads_back_as_written() {
        for entry in [ExecInput::Data(vec![3, 10, 255]), ExecInput::Data(vec![]), ExecInput::Resize { rows: 33, columns: 101 }, ExecInput::End, ExecInput::Alive] {
            let (header, data) = header_and_data(&entry.to_fields()).unwrap();
            assert_eq!(ExecInput::from_fields(&header, data), Some(entry));
        }
        assert_eq!(ExecInput::from_fields(br#"{"kind":"signal","n":2}"#, None), None);
    }

    #[test]
    fn a_plain_run_is_written_as_before_and_an_old_one_reads_as_plain() {
        let plain = TaskAction::Run { command: vec!["true".into()], stdin: false, tty: false };
        assert_eq!(serde_json::to_string(&plain).unwrap(), r#"{"kind":"run","command":["true"]}"#);
        assert_eq!(serde_json::from_str::<TaskAction>(r#"{"kind":"run","command":["true"]}"#).unwrap(), plain);
        let attached = TaskAction::Run { command: vec!["sh".into()], stdin: true, tty: true };
        assert_eq!(serde_json::from_str::<TaskAction>(&serde_json::to_string(&attached).unwrap()).unwrap(), attached);
    }

    #[test]
    fn a_request_names_a_service_or_one_slot_and_lapses_unless_renewed() {
        let now = Utc::now();
        let request = ExecRequest { lab: "l".into(), service: "w".into(), slot: Some(2), action: TaskAction::Run { command: vec!["true".into()], stdin: false, tty: false }, except_node_id: None, until: now };
        assert!(request.wants("l", "w", Some(2)));
        assert!(!request.wants("l", "w", Some(1)) && !request.wants("l", "m", Some(2)) && !request.wants("other", "w", Some(2)));
        let every = ExecRequest { slot: None, ..request.clone() };
        assert!(every.wants("l", "w", Some(7)) && every.wants("l", "w", None));
        assert!(!request.lapsed(now) && request.lapsed(now + chrono::Duration::milliseconds(1)));
        let copy = ExecRequest { action: TaskAction::Copy { path: "/results".into() }, ..request };
        for request in [every, copy] {
            let json = serde_json::to_string(&request).unwrap();
            assert_eq!(serde_json::from_str::<ExecRequest>(&json).unwrap(), request);
        }
    }
}
