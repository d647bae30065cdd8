//! Packet capture on a lab's tasks (`labctl capture`): every frame a task's lab interface sends
//! and receives, from inside its network namespace, written as one pcapng file with an
//! interface per task and network (`ping.1/lan`) and the lab's task names for its addresses,
//! or summarised a line a frame. The socket (`socket`) is the I/O edge; the file (`pcapng`) and
//! the lines (`summary`) are pure.

pub mod pcapng;
pub mod relay;
pub mod socket;
pub mod summary;
pub mod timestamps;

use std::time::Duration;

/// Which way a frame went through the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// One frame as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The interface's index in the capture.
    pub tap: usize,
    /// When the kernel saw it, since the Unix epoch.
    pub at: Duration,
    pub direction: Direction,
    /// Its length on the wire; `data` may be shorter (the snap length).
    pub original_len: u32,
    pub data: Vec<u8>,
}

/// One interface captured: a task's attachment to one of the lab's networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    /// `ping.1` (`mon@node` for a global service's task).
    pub task: String,
    /// The lab's name for the network.
    pub network: String,
    /// The interface's name inside the task (`eth1`).
    pub interface: String,
    pub node: String,
}

impl Tap {
    /// How the capture names it: `ping.1/lan`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.task, self.network)
    }
}

/// How a tap's capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapEnd {
    pub tap: usize,
    /// Frames the kernel gave the socket, dropped ones included.
    pub received: u64,
    /// Frames the kernel dropped because the socket's buffer was full.
    pub dropped: u64,
    /// Why it ended early, if it did.
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capturing enters the task's network namespace and opens a packet socket: run labctl as root (CAP_SYS_ADMIN and CAP_NET_RAW) on the task's node")]
    NotPermitted,
    #[error("cannot enter the task's network namespace {0}")]
    Namespace(String),
    #[error("no interface {0} in the task's namespace: {1}")]
    Interface(String, String),
    #[error("packet socket: {0}")]
    Socket(String),
    #[error("capture thread: {0}")]
    Thread(String),
}
