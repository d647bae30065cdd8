//! What the kernel offers for shaping, found once at start by trying each primitive in a
//! scratch network namespace.

use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Capabilities {
    /// `sch_netem`: delay, jitter, loss, corrupt, duplicate, reorder (and rate) in the kernel.
    pub netem: bool,
    /// `sch_tbf`: rate limiting.
    pub tbf: bool,
    /// `nfnetlink_queue` + iptables NFQUEUE: packets handed to the agent.
    pub nfqueue: bool,
    /// `ifb` devices and the `ingress` qdisc: incoming traffic redirected to be shaped.
    #[serde(default)]
    pub ifb: bool,
    /// A netlink watch in a namespace hears its qdisc and iptables changes (an nf_tables
    /// `iptables`; the legacy one announces nothing): rules are read back when they change.
    #[serde(default)]
    pub changes_heard: bool,
    pub notes: Vec<String>,
}

fn ok(cmd: &mut Command) -> Result<(), String> {
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// Tries netem, tbf and NFQUEUE in a throw-away namespace.
pub fn probe() -> Capabilities {
    let ns = format!("swarmlab-probe-{}", std::process::id());
    let mut caps = Capabilities::default();
    if let Err(e) = ok(Command::new("ip").args(["netns", "add", &ns])) {
        caps.notes.push(format!("cannot create a scratch namespace ({e}); assuming nothing"));
        return caps;
    }
    let _ = ok(&mut in_ns(&ns, &["ip", "link", "set", "lo", "up"]));
    let watch = super::watch::ChangeWatch::open(std::path::Path::new(&format!("/run/netns/{ns}")))
        .inspect_err(|e| caps.notes.push(format!("cannot watch a namespace for changes ({e}); rules are read back every few seconds")))
        .ok();
    match ok(&mut in_ns(&ns, &["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])) {
        Ok(()) => caps.netem = true,
        Err(e) => caps.notes.push(format!("netem unavailable: {e}")),
    }
    let _ = ok(&mut in_ns(&ns, &["tc", "qdisc", "del", "dev", "lo", "root"]));
    match ok(&mut in_ns(&ns, &["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "1mbit", "burst", "1600", "latency", "50ms"])) {
        Ok(()) => caps.tbf = true,
        Err(e) => caps.notes.push(format!("tbf unavailable: {e}")),
    }
    let qdisc_heard = watch.as_ref().is_some_and(|w| w.heard());
    match ok(&mut in_ns(&ns, &["iptables", "-w", "-A", "OUTPUT", "-o", "lo", "-j", "NFQUEUE", "--queue-num", "9", "--queue-bypass"])) {
        Ok(()) => caps.nfqueue = nfqueue_binds(&ns),
        Err(e) => caps.notes.push(format!("iptables NFQUEUE unavailable: {e}")),
    }
    if let Some(watch) = &watch {
        caps.changes_heard = qdisc_heard && watch.heard();
        if !caps.changes_heard {
            caps.notes.push("qdisc or iptables changes are not announced (iptables-legacy?): rules are read back every few seconds".into());
        }
    }
    match ok(&mut in_ns(&ns, &["ip", "link", "add", "swl-ifb-probe", "type", "ifb"]))
        .and_then(|()| ok(&mut in_ns(&ns, &["tc", "qdisc", "add", "dev", "lo", "handle", "ffff:", "ingress"])))
    {
        Ok(()) => caps.ifb = true,
        Err(e) => caps.notes.push(format!("ifb/ingress unavailable: {e}")),
    }
    if !caps.nfqueue && !caps.notes.iter().any(|n| n.contains("NFQUEUE")) {
        caps.notes.push("nfnetlink_queue cannot be bound".into());
    }
    let _ = ok(Command::new("ip").args(["netns", "del", &ns]));
    caps
}

/// Binding a queue needs the nfnetlink_queue module: try it from inside the namespace.
fn nfqueue_binds(ns: &str) -> bool {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> bool {
        let Ok(file) = std::fs::File::open(&path) else { return false };
        if nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
            return false;
        }
        match nfq::Queue::open() {
            Ok(mut q) => q.bind(9).is_ok(),
            Err(_) => false,
        }
    })
    .join()
    .unwrap_or(false)
}
