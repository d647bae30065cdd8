//! A packet socket on one interface of a task's network namespace: the kernel's copy of every
//! frame the interface sends and receives, with the kernel's timestamp. It is opened from a
//! thread of its own that enters the namespace (a socket belongs to the namespace it was made
//! in; `setns` moves only the calling thread), so neither the task's image nor its privileges
//! matter, and nothing is installed in it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sched::CloneFlags;
use nix::sys::socket::{self, AddressFamily, ControlMessageOwned, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike};
use tokio::sync::mpsc;

use super::{CaptureError, Direction, Frame, TapEnd};

/// How long a read waits before the thread looks at the stop flag again.
const POLL: Duration = Duration::from_millis(100);
/// The socket's receive buffer (the kernel's default is ~200 KB: a few dozen merged frames).
const RECEIVE_BUFFER: usize = 8 << 20;
/// Large enough for a veth's biggest (GRO-merged) frame; longer ones are cut and say so.
const BUFFER: usize = 65_536 + 128;

/// What a tap's thread sends: frames as they come, then how it ended.
#[derive(Debug)]
pub enum TapMessage {
    Frame(Frame),
    Ended(TapEnd),
}

/// Starts capturing on `interface` in the network namespace at `netns` (a `/proc/PID/ns/net`).
/// Frames go to `out` tagged with `tap` (the interface's index in the capture) until `stop` is
/// set or the interface goes away; the last message is always `Ended`. Returns once the socket
/// is open, or why it could not be.
pub fn start(tap: usize, netns: std::path::PathBuf, interface: String, snaplen: usize, stop: Arc<AtomicBool>, out: mpsc::Sender<TapMessage>) -> Result<(), CaptureError> {
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("capture-{interface}"))
        .spawn(move || {
            let socket = match open(&netns, &interface) {
                Ok(socket) => {
                    let _ = opened_tx.send(Ok(()));
                    socket
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            let error = read_until_stopped(&socket, tap, snaplen, &stop, &out).err();
            let (received, dropped) = statistics(&socket);
            let _ = out.blocking_send(TapMessage::Ended(TapEnd { tap, received, dropped, error }));
        })
        .map_err(|e| CaptureError::Thread(e.to_string()))?;
    opened_rx.recv().map_err(|_| CaptureError::Thread("the capture thread ended before opening its socket".into()))?
}

/// Enters the namespace (this thread only, for good: it is the tap's own) and opens a packet
/// socket bound to the interface, with kernel timestamps.
fn open(netns: &std::path::Path, interface: &str) -> Result<OwnedFd, CaptureError> {
    let namespace = std::fs::File::open(netns).map_err(|e| CaptureError::Namespace(format!("{}: {e}", netns.display())))?;
    nix::sched::setns(namespace.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| match e {
        nix::errno::Errno::EPERM => CaptureError::NotPermitted,
        e => CaptureError::Namespace(format!("{}: {e}", netns.display())),
    })?;
    let index = nix::net::if_::if_nametoindex(interface).map_err(|e| CaptureError::Interface(interface.to_string(), e.to_string()))?;
    let all = (libc::ETH_P_ALL as u16).to_be();
    // Protocol 0 until bound (as libpcap does): a socket made for every protocol would get the
    // frames of every interface of the namespace until `bind` narrows it to this one.
    let fd = socket::socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, None).map_err(|e| match e {
        nix::errno::Errno::EPERM => CaptureError::NotPermitted,
        e => CaptureError::Socket(e.to_string()),
    })?;
    // nix has no constructor for a link-layer address: the kernel's struct, filled as
    // packet(7) says, read through nix's own wrapper.
    // SAFETY: sockaddr_ll is plain data, for which all zeroes is a valid value.
    let mut raw: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    raw.sll_family = libc::AF_PACKET as u16;
    raw.sll_protocol = all;
    raw.sll_ifindex = index as i32;
    let length = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `raw` is a fully initialised sockaddr_ll of the length given.
    let address = unsafe { LinkAddr::from_raw(std::ptr::addr_of!(raw).cast(), Some(length)) }.ok_or_else(|| CaptureError::Socket("cannot make the interface's address".into()))?;
    socket::bind(fd.as_raw_fd(), &address).map_err(|e| CaptureError::Socket(format!("bind to {interface}: {e}")))?;
    // Room for bursts (a download's frames come faster than they are written): past the
    // system's default cap when root may, else what the system allows.
    if socket::setsockopt(&fd, socket::sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
        let _ = socket::setsockopt(&fd, socket::sockopt::RcvBuf, &RECEIVE_BUFFER);
    }
    socket::setsockopt(&fd, socket::sockopt::ReceiveTimestampns, &true).map_err(|e| CaptureError::Socket(e.to_string()))?;
    let poll = nix::sys::time::TimeVal::new(0, POLL.as_micros() as i64);
    socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &poll).map_err(|e| CaptureError::Socket(e.to_string()))?;
    Ok(fd)
}

fn read_until_stopped(socket: &OwnedFd, tap: usize, snaplen: usize, stop: &AtomicBool, out: &mpsc::Sender<TapMessage>) -> Result<(), String> {
    let mut buffer = vec![0u8; BUFFER];
    while !stop.load(Ordering::Relaxed) {
        let mut control = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let mut iov = [std::io::IoSliceMut::new(&mut buffer)];
        // MSG_TRUNC: the frame's whole length is returned even when the buffer holds less.
        let message = match socket::recvmsg::<LinkAddr>(socket.as_raw_fd(), &mut iov, Some(&mut control), MsgFlags::MSG_TRUNC) {
            Ok(message) => message,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            // The interface went (its task ended): this tap is done.
            Err(nix::errno::Errno::ENETDOWN | nix::errno::Errno::ENXIO | nix::errno::Errno::ENODEV) => return Err("its interface went away (the task ended?)".into()),
            Err(e) => return Err(e.to_string()),
        };
        let original = message.bytes;
        let at = message
            .cmsgs()
            .ok()
            .and_then(kernel_stamp)
            .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default());
        let direction = match message.address.map(|a| a.pkttype()) {
            Some(libc::PACKET_OUTGOING) => Direction::Out,
            _ => Direction::In,
        };
        let kept = original.min(snaplen).min(BUFFER);
        let frame = Frame { tap, at, direction, original_len: original as u32, data: buffer[..kept].to_vec() };
        if out.blocking_send(TapMessage::Frame(frame)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The kernel's receive timestamp among a message's control messages (SO_TIMESTAMPNS).
pub(super) fn kernel_stamp(mut messages: impl Iterator<Item = ControlMessageOwned>) -> Option<Duration> {
    messages.find_map(|m| match m {
        ControlMessageOwned::ScmTimestampns(t) => Some(Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)),
        _ => None,
    })
}

/// (frames the socket received, frames the kernel dropped for want of room in its buffer).
fn statistics(socket: &OwnedFd) -> (u64, u64) {
    let mut stats = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
    let mut length = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: PACKET_STATISTICS writes one tpacket_stats into the buffer of the length given;
    // nix has no wrapper for it.
    let done = unsafe { libc::getsockopt(socket.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_STATISTICS, std::ptr::addr_of_mut!(stats).cast(), &mut length) };
    if done == 0 { (u64::from(stats.tp_packets), u64::from(stats.tp_drops)) } else { (0, 0) }
}
