//! Hearing that a task's traffic rules changed instead of asking for them again and again.
//!
//! The kernel announces every change of a qdisc or a filter (`RTNLGRP_TC`) and every nftables
//! commit (`NFNLGRP_NFTABLES`, which the nf_tables `iptables` goes through) to the netlink
//! sockets of that namespace that subscribed. Reading a task's rules back costs an `nsenter tc`
//! and an `nsenter iptables` (a fork and exec each); done every 3 s for 30 idle tasks, that kept
//! 12-15 % of a core busy. With a watch, the agent reads a task back when its namespace spoke,
//! which also repairs a rule deleted by hand at the next pass rather than up to 3 s later.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

/// Two netlink sockets in one network namespace, subscribed to its traffic-control and
/// nftables announcements.
#[derive(Debug)]
pub struct ChangeWatch {
    sockets: [OwnedFd; 2],
}

impl ChangeWatch {
    /// Subscribes inside the namespace at `ns` (`/proc/PID/ns/net`, `/run/netns/NAME`). A socket
    /// belongs to the namespace it was made in, so a thread of its own enters the namespace,
    /// makes the sockets and ends; no thread of the agent ever changes namespace.
    pub fn open(ns: &Path) -> io::Result<Self> {
        let ns = File::open(ns)?;
        let made = std::thread::scope(|scope| {
            scope
                .spawn(move || -> nix::Result<[OwnedFd; 2]> {
                    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                    let tc = subscribed(SockProtocol::NetlinkRoute, libc::RTMGRP_TC as u32)?;
                    let nftables = subscribed(SockProtocol::NetlinkNetFilter, 1 << (libc::NFNLGRP_NFTABLES - 1))?;
                    Ok([tc, nftables])
                })
                .join()
        });
        match made {
            Ok(sockets) => Ok(Self { sockets: sockets.map_err(io::Error::from)? }),
            Err(_) => Err(io::Error::other("the thread entering the namespace panicked")),
        }
    }

    /// Whether anything was announced since the last call, emptying what is queued. Announcements
    /// lost to a full socket buffer count as heard: something changed, we do not know what.
    pub fn heard(&self) -> bool {
        let mut heard = false;
        let mut buf = [0u8; 8192];
        for socket in &self.sockets {
            loop {
                match recv(socket.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(_) => heard = true,
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    // ENOBUFS (overflowed) or anything unexpected: read the rules back.
                    Err(_) => {
                        heard = true;
                        break;
                    }
                }
            }
        }
        heard
    }
}

/// A non-blocking netlink socket of `protocol`, bound to the multicast `groups` (a bit mask).
fn subscribed(protocol: SockProtocol, groups: u32) -> nix::Result<OwnedFd> {
    let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, protocol)?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A scratch namespace, deleted on drop (as the capability probe makes one; root).
    struct Scratch(String);

    impl Scratch {
        fn new() -> Self {
            let name = format!("swl-watch-test-{}", std::process::id());
            assert!(Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success()), "ip netns add {name}");
            Scratch(name)
        }

        fn run(&self, args: &[&str]) {
            let out = Command::new("ip").args(["netns", "exec", &self.0]).args(args).output().expect("ip netns exec");
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    #[test]
    fn changes_to_qdiscs_and_iptables_rules_are_heard_and_reading_them_is_not() {
        let ns = Scratch::new();
        let watch = ChangeWatch::open(Path::new(&format!("/run/netns/{}", ns.0))).expect("watch");
        assert!(!watch.heard(), "nothing changed yet");
        ns.run(&["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "1mbit", "burst", "1600", "latency", "50ms"]);
        assert!(watch.heard(), "a qdisc added");
        assert!(!watch.heard(), "heard once, then drained");
        ns.run(&["iptables", "-w", "-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"]);
        assert!(watch.heard(), "an iptables rule added");
        // What a read-back runs must not sound like a change, or every pass would read back.
        ns.run(&["tc", "-j", "qdisc", "show", "dev", "lo"]);
        ns.run(&["iptables", "-w", "-C", "OUTPUT", "-o", "lo", "-j", "ACCEPT"]);
        ns.run(&["iptables", "-w", "-S", "OUTPUT"]);
        assert!(!watch.heard(), "reading rules is not a change");
        ns.run(&["iptables", "-w", "-F", "OUTPUT"]);
        assert!(watch.heard(), "rules flushed");
        ns.run(&["tc", "qdisc", "del", "dev", "lo", "root"]);
        assert!(watch.heard(), "the qdisc deleted");
        assert!(!watch.heard());
    }
}
