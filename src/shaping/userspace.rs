//! The userspace backend: an NFQUEUE rule in the task's namespace hands the egress packets of
//! one interface to a worker thread of the agent, which drops, holds, corrupts and duplicates
//! them by the [`Policy`] and re-injects them. The rule uses `--queue-bypass` and the queue is
//! fail-open, so traffic flows unshaped, never stalls, when the agent is gone.

use std::collections::BinaryHeap;
use std::cmp::Reverse;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};

use super::policy::{Fate, Policies, Stream};
use crate::spec::EffectiveConditions;

/// Packets re-sent by the agent carry this mark so the NFQUEUE rule lets them pass.
pub const MARK: u32 = 0x5157;

#[cfg(test)]
mod tests {
    #[test]
    fn overruns_are_read_from_the_kernels_queue_table() {
        let table = "  100  12345     0 2 65531     7     2   881  1\n  101  12346     3 2 65531     0     0    12  1\n";
        assert_eq!(super::overruns_in(table, 100), Some(9));
        assert_eq!(super::overruns_in(table, 101), Some(0));
        assert_eq!(super::overruns_in(table, 102), None);
    }

    #[test]
    fn rules_are_exact() {
        let r = super::rules("eth0", 100);
        assert_eq!(r[0].args("-A").join(" "), "-w -t raw -A OUTPUT -o eth0 -m comment --comment swarmlab:eth0 -j CT --notrack");
        assert_eq!(r[1].args("-C").join(" "), "-w -t filter -C OUTPUT -o eth0 -m mark ! --mark 20823 -m comment --comment swarmlab:eth0 -j NFQUEUE --queue-num 100 --queue-bypass");
        assert_eq!(r[2].args("-A").join(" "), "-w -t filter -A FORWARD -o eth0 -m mark ! --mark 20823 -m comment --comment swarmlab:eth0 -j NFQUEUE --queue-num 100 --queue-bypass");
        let i = super::input_rules("eth0", 20100);
        assert_eq!(i[0].args("-A").join(" "), "-w -t raw -A PREROUTING -i eth0 -m addrtype --dst-type LOCAL -m comment --comment swarmlab-in:eth0 -j CT --notrack");
        assert_eq!(i[1].args("-D").join(" "), "-w -t filter -D INPUT -i eth0 -m comment --comment swarmlab-in:eth0 -j NFQUEUE --queue-num 20100 --queue-bypass");
        assert_eq!(i[2].args("-A").join(" "), "-w -t mangle -A FORWARD -i eth0 -m comment --comment swarmlab-in:eth0 -j NFQUEUE --queue-num 20100 --queue-bypass");
    }
}
const QUEUE_MAX_LEN: u32 = 8192;

/// What the worker did, for status and the "visible in counters" checks.
#[derive(Debug, Default)]
pub struct Counters {
    pub seen: AtomicU64,
    pub dropped: AtomicU64,
    pub delayed: AtomicU64,
    pub corrupted: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub overflowed: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    pub seen: u64,
    pub dropped: u64,
    pub delayed: u64,
    pub corrupted: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Packets dropped because `limit` packets were held already.
    #[serde(default)]
    pub overflowed: u64,
    /// Packets the kernel dropped because the queue was full or could not reach the worker
    /// (`queue_dropped` + `user_dropped` of `/proc/net/netfilter/nfnetlink_queue`).
    #[serde(default)]
    pub overruns: u64,
}

/// The kernel's overrun count for `queue` in the network namespace of `pid`, read through
/// procfs (`/proc/PID/net` is that process's namespace); `None` when unreadable.
pub fn queue_overruns(pid: i64, queue: u16) -> Option<u64> {
    let text = std::fs::read_to_string(super::netns::proc_root().join(pid.to_string()).join("net/netfilter/nfnetlink_queue")).ok()?;
    overruns_in(&text, queue)
}

/// Parses the kernel's queue table: `queue portid waiting copy_mode copy_range queue_dropped
/// user_dropped id_sequence 1`, one line per bound queue.
fn overruns_in(table: &str, queue: u16) -> Option<u64> {
    table.lines().find_map(|line| {
        let fields: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        (fields.len() >= 7 && fields[0] == u64::from(queue)).then(|| fields[5] + fields[6])
    })
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            seen: g(&self.seen),
            dropped: g(&self.dropped),
            delayed: g(&self.delayed),
            corrupted: g(&self.corrupted),
            duplicated: g(&self.duplicated),
            reordered: g(&self.reordered),
            overflowed: g(&self.overflowed),
            overruns: 0,
        }
    }
}

/// An iptables rule: its table, and its chain and match (without the verb).
pub struct Rule {
    pub table: &'static str,
    pub spec: Vec<String>,
}

impl Rule {
    /// `iptables` arguments for `verb` (`-A`, `-C`, `-D`).
    pub fn args(&self, verb: &str) -> Vec<String> {
        let mut a: Vec<String> = ["-w", "-t", self.table, verb].map(String::from).to_vec();
        a.extend(self.spec.iter().cloned());
        a
    }
}

/// The rules that hand `dev`'s egress to `queue`: what the task sends, and what it forwards (a
/// router task's traffic leaves by `dev` too, and netem's qdisc shapes it). The packets the task
/// sends skip conntrack: a packet held in the queue leaves its flow's conntrack entry
/// unconfirmed, and the packets that follow it meanwhile would be dropped on a clash when they
/// are confirmed (measured: 3 of the first 5 pings at 10 ms intervals). Nothing in a task's
/// namespace needs state for them; forwarded packets keep theirs (a router's NAT needs it).
pub fn rules(dev: &str, queue: u16) -> Vec<Rule> {
    let comment = format!("swarmlab:{dev}");
    let v = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let queued = |chain: &str| Rule {
        table: "filter",
        spec: v(&[
            chain, "-o", dev, "-m", "mark", "!", "--mark", &MARK.to_string(), "-m", "comment", "--comment", &comment,
            "-j", "NFQUEUE", "--queue-num", &queue.to_string(), "--queue-bypass",
        ]),
    };
    vec![
        Rule { table: "raw", spec: v(&["OUTPUT", "-o", dev, "-m", "comment", "--comment", &comment, "-j", "CT", "--notrack"]) },
        queued("OUTPUT"),
        queued("FORWARD"),
    ]
}

/// The rules that hand the packets arriving at `dev` to `queue` (ingress conditions): those for
/// the task, and those it forwards. As on the way out, the task's own skip conntrack and
/// forwarded ones keep it. A verdict sends a packet on (no mark needed): those forwarded are
/// queued in `mangle`, so that the `filter` rule of the interface they leave by queues them
/// again for its egress.
pub fn input_rules(dev: &str, queue: u16) -> Vec<Rule> {
    let comment = format!("swarmlab-in:{dev}");
    let v = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let queued = |table: &'static str, chain: &str| Rule { table, spec: v(&[chain, "-i", dev, "-m", "comment", "--comment", &comment, "-j", "NFQUEUE", "--queue-num", &queue.to_string(), "--queue-bypass"]) };
    vec![
        Rule { table: "raw", spec: v(&["PREROUTING", "-i", dev, "-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", &comment, "-j", "CT", "--notrack"]) },
        queued("filter", "INPUT"),
        queued("mangle", "FORWARD"),
    ]
}

/// A running worker for one interface of one task.
pub struct QueueWorker {
    pub queue: u16,
    /// What the worker shapes by: written by the worker once its policy holds them, so what is
    /// read back is what packets get.
    conditions: Arc<Mutex<EffectiveConditions>>,
    /// New conditions for the worker to take, and whether it has yet.
    pending: Arc<Mutex<Option<EffectiveConditions>>>,
    stop: Arc<AtomicBool>,
    /// Wakes the worker from its wait for packets: new conditions, or stop.
    wake: Arc<EventFd>,
    pub counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
    pub failed: Arc<Mutex<Option<String>>>,
}

impl QueueWorker {
    /// Binds queue `queue` inside the namespace at `netns` and starts shaping by `conditions`.
    /// Returns once the queue is bound (or with the reason it could not be).
    pub fn start(netns: PathBuf, queue: u16, conditions: EffectiveConditions, stream: Stream) -> Result<QueueWorker, String> {
        let conditions = Arc::new(Mutex::new(conditions));
        let pending = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let failed = Arc::new(Mutex::new(None));
        let wake = Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).map_err(|e| format!("eventfd: {e}"))?);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (c, p, s, k, f, w) = (conditions.clone(), pending.clone(), stop.clone(), counters.clone(), failed.clone(), wake.clone());
        let thread = std::thread::Builder::new()
            .name(format!("shape-q{queue}"))
            .spawn(move || {
                if let Err(e) = run(Target { netns, queue, stream, wake: w }, c, p, s, k, &ready_tx) {
                    let _ = ready_tx.send(Err(e.clone()));
                    if let Ok(mut slot) = f.lock() {
                        *slot = Some(e);
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(QueueWorker { queue, conditions, pending, stop, wake, counters, thread: Some(thread), failed }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the queue worker did not start in 5 s".into()),
        }
    }

    /// Hands the worker new conditions and waits (briefly: it is woken, or looks between
    /// packets) until its policy holds them.
    pub fn set_conditions(&self, c: EffectiveConditions) {
        if let Ok(mut slot) = self.pending.lock() {
            *slot = Some(c);
        }
        let _ = self.wake.write(1);
        let asked = Instant::now();
        while self.pending.lock().is_ok_and(|p| p.is_some()) && self.is_alive() && asked.elapsed() < Duration::from_millis(200) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The conditions the worker is shaping by right now.
    pub fn conditions(&self) -> EffectiveConditions {
        self.conditions.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for QueueWorker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Held {
    at: Instant,
    seq: u64,
    msg: nfq::Message,
    duplicate: bool,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Sends a copy of an IPv4 packet from inside the namespace, marked so it is not queued again.
fn send_copy(raw: &socket2::Socket, packet: &[u8]) {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return;
    }
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let _ = raw.send_to(packet, &SocketAddrV4::new(dst, 0).into());
}

/// Flips one bit beyond the IP header, so the packet still routes but fails its checksum.
fn corrupt(payload: &mut [u8], bit: usize) {
    let ihl = payload.first().map(|b| usize::from(b & 0x0f) * 4).unwrap_or(20);
    if payload.len() > ihl {
        let i = ihl + bit / 8 % (payload.len() - ihl);
        payload[i] ^= 1 << (bit % 8);
    }
}

/// Where a worker shapes (the task's namespace and queue), which draws it takes, and what
/// wakes it.
struct Target {
    netns: PathBuf,
    queue: u16,
    stream: Stream,
    wake: Arc<EventFd>,
}

/// Sleeps until a packet is queued, the agent wakes the worker, or `timeout` (the next held
/// packet's time) has passed. Waiting in poll(2), not waking every millisecond to look: 30
/// idle workers took 24 % of a core that way (measured), in wake-ups alone.
fn wait_for_packets(queue: &nfq::Queue, wake: &EventFd, timeout: Option<Duration>) {
    // SAFETY: the queue's socket stays open while `queue` is borrowed, for this whole call.
    let queue_fd = unsafe { BorrowedFd::borrow_raw(queue.as_raw_fd()) };
    let mut fds = [PollFd::new(queue_fd, PollFlags::POLLIN), PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
    // Interrupted (EINTR) or failed: the loop looks again, as after a wake-up.
    let _ = ppoll(&mut fds, timeout.map(TimeSpec::from_duration), None);
    if fds[1].revents().is_some_and(|r| r.contains(PollFlags::POLLIN)) {
        let _ = wake.read();
    }
}

fn run(
    Target { netns, queue: queue_num, stream, wake }: Target,
    conditions: Arc<Mutex<EffectiveConditions>>,
    pending: Arc<Mutex<Option<EffectiveConditions>>>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<(), String> {
    // setns on this thread only: the netlink and raw sockets opened next belong to the task.
    let ns = std::fs::File::open(&netns).map_err(|e| format!("open {}: {e}", netns.display()))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
    let mut q = nfq::Queue::open().map_err(|e| format!("open nfqueue: {e}"))?;
    q.bind(queue_num).map_err(|e| format!("bind queue {queue_num}: {e}"))?;
    let _ = q.set_fail_open(queue_num, true);
    let _ = q.set_queue_max_len(queue_num, QUEUE_MAX_LEN);
    q.set_nonblocking(true);
    let raw = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::from(libc_ipproto_raw())))
        .map_err(|e| format!("raw socket: {e}"))?;
    let _ = raw.set_mark(MARK);
    let _ = ready.send(Ok(()));

    let initial = conditions.lock().map(|c| c.clone()).unwrap_or_default();
    let mut policy = Policies::new(initial, stream);
    let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            // Let everything held go rather than drop it.
            while let Some(Reverse(mut h)) = held.pop() {
                h.msg.set_verdict(nfq::Verdict::Accept);
                let _ = q.verdict(h.msg);
            }
            let _ = q.unbind(queue_num);
            return Ok(());
        }
        if let Some(new) = pending.lock().ok().and_then(|p| p.clone()) {
            policy.set_conditions(new.clone());
            if let Ok(mut in_force) = conditions.lock() {
                *in_force = new.clone();
            }
            // Taken only now, so a caller who sees it taken reads back what is in force.
            if let Ok(mut p) = pending.lock() {
                if p.as_ref() == Some(&new) {
                    *p = None;
                }
            }
        }
        let mut got = 0;
        loop {
            match q.recv() {
                Ok(mut msg) => {
                    got += 1;
                    counters.seen.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    let payload = msg.get_payload();
                    let dst = (payload.len() >= 20 && payload[0] >> 4 == 4).then(|| Ipv4Addr::new(payload[16], payload[17], payload[18], payload[19]));
                    match policy.decide(dst, now, held.len(), payload.len()) {
                        Fate::Overflow => {
                            counters.overflowed.fetch_add(1, Ordering::Relaxed);
                            msg.set_verdict(nfq::Verdict::Drop);
                            let _ = q.verdict(msg);
                        }
                        Fate::Drop => {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                            msg.set_verdict(nfq::Verdict::Drop);
                            let _ = q.verdict(msg);
                        }
                        Fate::Release { at, corrupt: bad, duplicate, reordered } => {
                            if bad {
                                counters.corrupted.fetch_add(1, Ordering::Relaxed);
                                let mut payload = msg.get_payload().to_vec();
                                corrupt(&mut payload, seq as usize * 7919);
                                msg.set_payload(payload);
                            }
                            if reordered {
                                counters.reordered.fetch_add(1, Ordering::Relaxed);
                            }
                            if duplicate {
                                counters.duplicated.fetch_add(1, Ordering::Relaxed);
                            }
                            if at <= now {
                                if duplicate {
                                    send_copy(&raw, msg.get_payload());
                                }
                                msg.set_verdict(nfq::Verdict::Accept);
                                let _ = q.verdict(msg);
                            } else {
                                counters.delayed.fetch_add(1, Ordering::Relaxed);
                                seq += 1;
                                held.push(Reverse(Held { at, seq, msg, duplicate }));
                            }
                        }
                    }
                    if got >= 256 {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("nfqueue receive: {e}")),
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|Reverse(h)| h.at <= now) {
            if let Some(Reverse(mut h)) = held.pop() {
                if h.duplicate {
                    send_copy(&raw, h.msg.get_payload());
                }
                h.msg.set_verdict(nfq::Verdict::Accept);
                let _ = q.verdict(h.msg);
            }
        }
        if got == 0 {
            let next = held.peek().map(|Reverse(h)| h.at.saturating_duration_since(Instant::now()));
            wait_for_packets(&q, &wake, next);
        }
    }
}

const fn libc_ipproto_raw() -> i32 {
    255
}
