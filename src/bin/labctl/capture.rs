//! `labctl capture LAB [SERVICE[.SLOT]] [--network NET] [-w FILE|-] [-c N] [--duration D]`:
//! the frames every task of the lab sends and receives on the lab's networks, as tcpdump would
//! show them on each task's interface: on this node from here, on the others through their
//! node's agent (`relayed`), in one capture. Tasks are found by the lab's names instead of a
//! container's pid and an interface's index: a line per frame, or one pcapng file with an
//! interface per task and network (`ping.1/lan`) and the task names for the lab's addresses,
//! for Wireshark (`-w - | wireshark -k -i -`). Frames go through the task's conditions as they
//! would without the capture: what a task sends is seen after them (a frame a condition drops
//! never left it; a delayed one is stamped when it leaves), what it receives before any
//! `ingress` condition. It follows the lab: a task that starts here meanwhile (a killed one's
//! replacement, a scale-up) is captured from its start, and the schedule's steps are marked
//! where they come (`=== …` lines; comments on frames in the file).

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use swarmlab::capture::pcapng::PcapngOut;
use swarmlab::capture::socket::{self, TapMessage};
use swarmlab::capture::timestamps::Timestamps;
use swarmlab::capture::{summary, Frame, Tap, TapEnd};
use swarmlab::status::{LabEvent, TaskShaping};
use swarmlab::store::StoreReader;
use swarmlab::shaping::netns;
use swarmlab::swarm::{task_label, DockerSwarm, LocalTask};
use tokio::sync::mpsc;

use crate::common::{reader, schedule_steps, step_mark};
use crate::tasks::{node_entered_here, Placement, Target};

use swarmlab::capture::relay::{CaptureRequest, Relayed};

/// The other nodes' taps, relayed by their agents.
type RelayedTaps = crate::asked::Asked<Relayed>;

pub struct Args {
    pub lab: String,
    /// `service` or `service.slot`; every service of the lab when absent.
    pub target: Option<String>,
    /// The lab's names of the networks to capture on; all of the task's when empty.
    pub networks: Vec<String>,
    /// `-w FILE` (pcapng), `-w -` (pcapng on stdout); lines when absent.
    pub write: Option<PathBuf>,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub snaplen: usize,
}

/// Where the frames go.
enum Sink {
    Lines { names: HashMap<Ipv4Addr, String>, out: std::io::BufWriter<std::io::Stdout> },
    /// `comment`: the steps since the last frame, written on the next.
    Pcapng { file: PcapngOut<Box<dyn Write>>, comment: Option<String> },
}

/// A write that failed because the reader went (Wireshark closed, `| head`): the capture is done.
fn reader_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

fn io_error(e: pcap_file::PcapError) -> std::io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        e => std::io::Error::other(e),
    }
}

impl Sink {
    fn write(&mut self, frame: &Frame, tap: &str, width: usize) -> std::io::Result<()> {
        match self {
            Sink::Lines { names, out } => writeln!(out, "{}", summary::line(frame, tap, width, names)),
            Sink::Pcapng { file, comment } => file.write(frame, comment.take().as_deref()).map_err(io_error),
        }
    }

    /// The schedule's steps: marked among the lines at once, or noted on the next frame.
    fn steps(&mut self, steps: &[LabEvent]) -> std::io::Result<()> {
        match self {
            Sink::Lines { out, .. } => {
                for step in steps {
                    writeln!(out, "{}", step_mark(step))?;
                }
                out.flush()
            }
            Sink::Pcapng { comment, .. } => {
                for step in steps {
                    let text = format!("{} {}", step.time.format("%H:%M:%S%.3f"), step.message);
                    *comment = Some(match comment.take() {
                        Some(earlier) => format!("{earlier}; {text}"),
                        None => text,
                    });
                }
                Ok(())
            }
        }
    }

    /// A task's taps, as it joins; `why` is said among the lines (none for the first taps).
    fn join(&mut self, lab: &str, taps: &[Tap], snaplen: u32, why: Option<&str>) -> std::io::Result<()> {
        match self {
            Sink::Lines { out, .. } => {
                if let Some(why) = why.filter(|_| !taps.is_empty()) {
                    let now = chrono::Utc::now().format("%H:%M:%S%.3f");
                    writeln!(out, "=== {now} capturing {} ({why})", taps.iter().map(Tap::name).collect::<Vec<_>>().join(", "))?;
                }
                Ok(())
            }
            Sink::Pcapng { file, .. } => {
                for tap in taps {
                    file.add_tap(lab, tap, snaplen).map_err(io_error)?;
                }
                Ok(())
            }
        }
    }

    /// Names for addresses not named so (or named otherwise) before.
    fn names(&mut self, names: &[(Ipv4Addr, String)]) -> std::io::Result<()> {
        match self {
            Sink::Lines { names: known, .. } => {
                known.extend(names.iter().cloned());
                Ok(())
            }
            Sink::Pcapng { file, .. } => file.add_names(names).map_err(io_error),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Lines { out, .. } => out.flush(),
            Sink::Pcapng { file, .. } => file.get_mut().flush(),
        }
    }
}

/// The running tasks of the lab here that are not known yet.
async fn new_lab_tasks(swarm: &DockerSwarm, lab: &str, known: &mut HashSet<String>) -> anyhow::Result<Vec<LocalTask>> {
    let mut here = Vec::new();
    let ids = swarm.local_task_ids().await?;
    // A daemon on another machine: its tasks are captured through their node's agent.
    if !swarm.runs_here(&ids).await {
        return Ok(here);
    }
    for id in ids {
        if known.contains(&id) {
            continue;
        }
        if let Some(task) = swarm.local_task(&id).await {
            known.insert(id);
            if task.lab == lab {
                here.push(task);
            }
        }
    }
    here.sort_by(|a, b| (&a.service, a.slot).cmp(&(&b.service, b.slot)));
    Ok(here)
}

/// Each task's interface on each network asked for, found in its namespace by MAC or address.
async fn taps_of(here: &[LocalTask], networks: &[String], node: &str) -> Vec<(Tap, i64)> {
    let mut taps = Vec::new();
    for task in here {
        let label = task_label(&task.service, task.slot, node);
        let mut attached = task.networks.clone();
        attached.sort();
        for (network, mac, ip) in attached.into_iter().filter(|(n, _, _)| networks.is_empty() || networks.contains(n)) {
            match netns::interface_for(task.pid, &mac, &ip).await {
                Ok(Some(interface)) => taps.push((Tap { task: label.clone(), network, interface, node: node.to_string() }, task.pid)),
                Ok(None) => eprintln!("labctl capture: {label}: no interface for {network} in its namespace (MAC {mac}); left out"),
                Err(e) => eprintln!("labctl capture: {label}: {e}; left out"),
            }
        }
    }
    taps
}

/// The addresses the agents report for the lab's tasks that have no name yet: a task here was
/// named from its container, which is newer than any report.
fn reported_names(reports: &[TaskShaping], named: &HashMap<Ipv4Addr, String>) -> Vec<(Ipv4Addr, String)> {
    reports
        .iter()
        .flat_map(|r| r.addresses.values().filter_map(move |ip| Some((ip.parse::<Ipv4Addr>().ok()?, task_label(&r.service, r.slot, &r.node)))))
        .filter(|(ip, _)| !named.contains_key(ip))
        .collect()
}

/// What is being captured, and what joins it.
struct Capture {
    lab: String,
    node: String,
    target: Option<Target>,
    networks: Vec<String>,
    snaplen: usize,
    taps: Vec<Tap>,
    /// The longest tap name, for the lines' column.
    width: usize,
    /// The names given to addresses so far.
    named: HashMap<Ipv4Addr, String>,
    /// Containers looked at (captured or not), so each is inspected once.
    known: HashSet<String>,
    stop: Arc<AtomicBool>,
    frames: mpsc::Sender<TapMessage>,
    /// Other nodes' taps: (node, the agent's number for it) → its index here.
    relayed: HashMap<(String, usize), usize>,
    /// Frames that came through the agents, by index here (to tell what was lost on the way).
    relayed_frames: HashMap<usize, u64>,
    /// Frames an agent left out (the stream's backlog full) or put in the stream that never
    /// came (the stream capped meanwhile).
    lost: u64,
    /// Nodes whose agent answered (a tap, or why none).
    answered: std::collections::BTreeSet<String>,
}

impl Capture {
    /// Gives the sink the names that are new: `tasks` here first (they are what runs now),
    /// then the lab's tasks on every node as their agents report them to Redis.
    fn name(&mut self, names: impl IntoIterator<Item = (Ipv4Addr, String)>, sink: &mut Sink) -> std::io::Result<()> {
        let mut new: Vec<(Ipv4Addr, String)> = names.into_iter().filter(|(ip, name)| self.named.get(ip) != Some(name)).collect();
        new.sort();
        new.dedup_by_key(|(ip, _)| *ip);
        self.named.extend(new.iter().cloned());
        sink.names(&new)
    }

    fn wanted(&self, task: &LocalTask) -> bool {
        self.target.as_ref().is_none_or(|w| task.service == w.service && w.matches(task.slot))
    }

    /// Opens taps on the tasks given (those the target names); writes their interfaces and the
    /// names of every task's addresses to the sink first, so no frame comes before its
    /// interface. Returns the new taps' names.
    async fn join(&mut self, tasks: &[LocalTask], sink: &mut Sink, first: bool) -> anyhow::Result<Vec<String>> {
        let names: Vec<(Ipv4Addr, String)> =
            tasks.iter().flat_map(|t| t.networks.iter().filter_map(|(_, _, ip)| Some((ip.parse().ok()?, task_label(&t.service, t.slot, &self.node))))).collect();
        self.name(names, sink)?;
        let wanted: Vec<LocalTask> = tasks.iter().filter(|t| self.wanted(t)).cloned().collect();
        let found = taps_of(&wanted, &self.networks, &self.node).await;
        if first && found.is_empty() && !wanted.is_empty() && !self.networks.is_empty() {
            let mut known: Vec<&str> = wanted.iter().flat_map(|t| t.networks.iter().map(|(n, _, _)| n.as_str())).collect();
            known.sort_unstable();
            known.dedup();
            anyhow::bail!("none of these tasks is on {}: their networks are {}", self.networks.join(", "), known.join(", "));
        }
        let new: Vec<Tap> = found.iter().map(|(tap, _)| tap.clone()).collect();
        sink.join(&self.lab, &new, self.snaplen as u32, (!first).then_some("started"))?;
        let mut opened = Vec::new();
        for (tap, pid) in found {
            let index = self.taps.len();
            self.width = self.width.max(tap.name().len());
            self.taps.push(tap.clone());
            match socket::start(index, netns::ns_path(pid), tap.interface.clone(), self.snaplen, self.stop.clone(), self.frames.clone()) {
                Ok(()) => opened.push(tap.name()),
                Err(e) if first => return Err(e).with_context(|| tap.name()),
                // A task that ended as it was found: its interface stays in the file, empty.
                Err(e) => eprintln!("labctl capture: {}: {e}", tap.name()),
            }
        }
        Ok(opened)
    }
}

impl Capture {
    /// What changed since the last look: names the agents reported, steps of the schedule
    /// (marked), tasks started here (captured). Only a failed write is an error: Redis or
    /// Docker away for a moment leaves the open taps capturing.
    async fn look_again(&mut self, swarm: &DockerSwarm, mut store: Option<&mut StoreReader>, last_step: &mut Option<chrono::DateTime<chrono::Utc>>, sink: &mut Sink, announce: bool) -> std::io::Result<()> {
        if let Some(r) = store.as_deref_mut() {
            let reported = r.task_shaping(&self.lab).await.unwrap_or_default();
            let names = reported_names(&reported, &self.named);
            self.name(names, sink)?;
        }
        let steps = schedule_steps(store, &self.lab, *last_step).await;
        *last_step = steps.last().map(|e| e.time).or(*last_step);
        sink.steps(&steps)?;
        let tasks = match new_lab_tasks(swarm, &self.lab, &mut self.known).await {
            Ok(tasks) => tasks,
            Err(e) => {
                eprintln!("labctl capture: looking for new tasks: {}", swarmlab::error_chain::Chain(e.as_ref()));
                return Ok(());
            }
        };
        match self.join(&tasks, sink, false).await {
            Ok(opened) if !opened.is_empty() && announce => eprintln!("labctl capture: now also {} (started)", opened.join(", ")),
            Ok(_) => {}
            Err(e) => return Err(e.downcast::<std::io::Error>().unwrap_or_else(std::io::Error::other)),
        }
        Ok(())
    }
}

impl Capture {
    /// What an agent relayed, as this capture's own: a tap joins (named among the lines, and
    /// on stderr when `announce`), frames and ends are renumbered; `None` when nothing is left
    /// to write.
    fn take_relayed(&mut self, relayed: Relayed, sink: &mut Sink, announce: bool) -> std::io::Result<Option<TapMessage>> {
        Ok(match relayed {
            Relayed::Tap { tap, info } => {
                let index = self.taps.len();
                let node = info.node.clone();
                self.answered.insert(node.clone());
                self.width = self.width.max(info.name().len());
                sink.join(&self.lab, std::slice::from_ref(&info), self.snaplen as u32, Some(&format!("on {node}, through its agent")))?;
                if announce {
                    eprintln!("labctl capture: now also {} on {node} (through its agent)", info.name());
                }
                self.taps.push(info);
                self.relayed.insert((node, tap), index);
                None
            }
            Relayed::Frame { node, mut frame } => {
                let Some(&index) = self.relayed.get(&(node, frame.tap)) else { return Ok(None) };
                frame.tap = index;
                *self.relayed_frames.entry(index).or_default() += 1;
                Some(TapMessage::Frame(frame))
            }
            Relayed::Ended { node, mut end, forwarded, skipped } => {
                let Some(&index) = self.relayed.get(&(node, end.tap)) else { return Ok(None) };
                end.tap = index;
                self.lost += skipped + forwarded.saturating_sub(self.relayed_frames.get(&index).copied().unwrap_or(0));
                Some(TapMessage::Ended(end))
            }
            Relayed::Failed { node, task, message } => {
                eprintln!("labctl capture: {task} on {node}: {message}; left out");
                self.answered.insert(node);
                None
            }
        })
    }

    /// The relayed taps that have not ended yet.
    fn relayed_open(&self, ends: &[TapEnd]) -> usize {
        self.relayed.values().filter(|index| !ends.iter().any(|e| e.tap == **index)).count()
    }
}

/// The next thing the agents relay; never, when no agent is asked.
async fn next_relayed(relayed: &mut Option<RelayedTaps>) -> Relayed {
    match relayed {
        Some(r) => match r.messages.recv().await {
            Some(message) => message,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

pub async fn run(url: &str, docker_host: Option<&str>, args: Args) -> anyhow::Result<ExitCode> {
    let Args { lab, target, networks, write, count, duration, snaplen } = args;
    let target: Option<Target> = target.map(|t| t.parse()).transpose()?;
    let to_stdout = write.as_deref() == Some(std::path::Path::new("-"));
    if to_stdout && std::io::stdout().is_terminal() {
        anyhow::bail!("pcapng is binary: write it to a file (-w capture.pcapng) or a pipe (-w - | wireshark -k -i -), or leave -w out for a line per frame");
    }
    let swarm = DockerSwarm::connect(docker_host).await?;
    let (node, node_id) = node_entered_here(&swarm).await;
    let mut known = HashSet::new();
    let lab_here = new_lab_tasks(&swarm, &lab, &mut known).await?;
    let here = lab_here.iter().filter(|t| target.as_ref().is_none_or(|w| t.service == w.service && w.matches(t.slot))).count();
    let placed = Placement::of(&swarm, url, &lab, target.as_ref(), &node).await;
    // Steps, the other nodes' names and their tasks are best effort: without Redis, the frames
    // of this node's tasks alone.
    let mut store = reader(url).await.ok();
    // On a worker, the reports may leave tasks out: every live agent is asked then.
    let through_agents = store.is_some() && placed.ask_elsewhere();
    let asked: Vec<String> = placed.expected_answers().into_keys().collect();
    match &target {
        _ if here > 0 || through_agents => {}
        Some(target) => return Err(placed.none_here("running task", &lab, target)),
        None => anyhow::bail!("no running task of lab `{lab}` on {node}: is it deployed (`labctl status {lab}`)?"),
    }
    if store.is_none() {
        placed.warn_elsewhere("labctl capture", "captured (Redis, through which their agents capture, cannot be read)");
    }

    let mut sink = match &write {
        None => Sink::Lines { names: HashMap::new(), out: std::io::BufWriter::new(std::io::stdout()) },
        Some(path) => {
            let out: Box<dyn Write> = if to_stdout {
                Box::new(std::io::BufWriter::new(std::io::stdout()))
            } else {
                Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?))
            };
            Sink::Pcapng { file: PcapngOut::start(out).context("cannot write the capture's header")?, comment: None }
        }
    };
    // Bounded: when the output cannot keep up, the taps wait and the kernel drops (and says so)
    // rather than labctl holding the backlog in memory.
    let (frames_tx, mut frames) = mpsc::channel(4096);
    let stop = Arc::new(AtomicBool::new(false));
    // The other nodes' tasks, through their agents (they also follow tasks that start on a
    // node while the capture runs); asked for whenever Redis is there.
    let mut relayed = match &store {
        Some(_) => {
            let request = CaptureRequest {
                lab: lab.clone(),
                service: target.as_ref().map(|t| t.service.clone()),
                slot: target.as_ref().and_then(|t| t.slot),
                networks: networks.clone(),
                snaplen,
                except_node_id: node_id.clone(),
                until: chrono::Utc::now(),
            };
            match RelayedTaps::ask(url, request, "labctl capture").await {
                Ok(relayed) => Some(relayed),
                Err(e) if here == 0 => {
                    let there = if placed.elsewhere.is_empty() { asked.join(", ") } else { placed.elsewhere.join(", ") };
                    anyhow::bail!("the lab's tasks are on other nodes ({there}), and their agents cannot be asked through Redis: {e}")
                }
                Err(e) => {
                    placed.warn_elsewhere("labctl capture", &format!("captured (cannot ask their agents through Redis: {e})"));
                    None
                }
            }
        }
        None => None,
    };
    let mut capture = Capture {
        lab: lab.clone(),
        node: node.clone(),
        target,
        networks,
        snaplen,
        taps: Vec::new(),
        width: 0,
        named: HashMap::new(),
        known,
        stop: stop.clone(),
        frames: frames_tx,
        relayed: HashMap::new(),
        relayed_frames: HashMap::new(),
        lost: 0,
        answered: Default::default(),
    };
    let started = chrono::Utc::now();
    // The names come before the first frame can.
    if let Some(r) = store.as_mut() {
        let reported = r.task_shaping(&lab).await.unwrap_or_default();
        capture.name(reported_names(&reported, &capture.named), &mut sink).context("cannot write the capture")?;
    }
    // Before the first tap: a frame that arrives while the kernel's timestamps are still being
    // switched on would be stamped when read (see `timestamps`).
    let timestamps = Timestamps::on()?;
    if !timestamps.confirmed {
        eprintln!("labctl capture: the kernel's receive timestamps were not seen in force within 2 s; the first frames' times may be when they were read");
    }
    let opened = capture.join(&lab_here, &mut sink, true).await?;
    let limit = match (count, duration) {
        (Some(n), _) => format!(" until {n} frames"),
        (None, Some(d)) => format!(" for {}", swarmlab::spec::units::Duration { micros: d.as_micros() as u64 }),
        (None, None) => String::new(),
    };
    let mut parts = Vec::new();
    if !opened.is_empty() {
        parts.push(format!("on {node}, {}", opened.join(", ")));
    }
    let others: Vec<&str> = placed.elsewhere_by_node.keys().map(String::as_str).collect();
    if relayed.is_some() && !others.is_empty() {
        parts.push(format!("on {} through {} agent{}", others.join(", "), if others.len() == 1 { "its" } else { "their" }, if others.len() == 1 { "" } else { "s" }));
    } else if relayed.is_some() && through_agents {
        parts.push(format!("whatever the agents of {} find", asked.join(", ")));
    }
    eprintln!("labctl capture: {}{limit} (Ctrl-C to stop)", parts.join("; "));
    // The agents answer within a second or two: a node that has not by then is named once.
    let silent_after = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut silence_told = relayed.is_none();

    let mut last_step = Some(started);
    // Made once, so that an interrupt between two frames is kept for the next look.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).context("cannot catch Ctrl-C")?;
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut look = tokio::time::interval(Duration::from_millis(500));
    let mut written = 0u64;
    let mut ends: Vec<TapEnd> = Vec::new();
    let mut gone = false;
    loop {
        let message = tokio::select! {
            message = frames.recv() => message,
            from_agent = next_relayed(&mut relayed) => match capture.take_relayed(from_agent, &mut sink, write.is_some()) {
                Ok(Some(message)) => Some(message),
                Ok(None) => continue,
                Err(e) if reader_gone(&e) => {
                    gone = true;
                    break;
                }
                Err(e) => return Err(e).context("cannot write the capture"),
            },
            _ = interrupt.recv() => break,
            _ = async { match deadline { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => break,
            _ = look.tick() => {
                if !silence_told && tokio::time::Instant::now() >= silent_after {
                    silence_told = true;
                    for (other, tasks) in placed.elsewhere_by_node.iter().filter(|(n, _)| !capture.answered.contains(*n)) {
                        eprintln!("labctl capture: nothing from {other}'s agent for {}: is `labd agent` running there, with this Redis ({url})?", tasks.join(", "));
                    }
                    if capture.taps.is_empty() {
                        let what = capture.target.as_ref().map_or_else(|| format!("lab `{lab}`"), |t| format!("`{t}` in lab `{lab}`"));
                        eprintln!("labctl capture: no task of {what} found yet, here or by the agents of {}; waiting for one to start (`labctl status {lab}` says what runs)", asked.join(", "));
                    }
                }
                if let Err(e) = capture.look_again(&swarm, store.as_mut(), &mut last_step, &mut sink, write.is_some()).await {
                    if reader_gone(&e) {
                        gone = true;
                        break;
                    }
                    return Err(e).context("cannot write the capture");
                }
                continue;
            }
        };
        match message {
            None => break,
            Some(TapMessage::Ended(end)) => {
                if let Some(error) = &end.error {
                    eprintln!("labctl capture: {}: {error}", capture.taps[end.tap].name());
                }
                ends.push(end);
            }
            Some(TapMessage::Frame(frame)) => {
                let written_now = sink.write(&frame, &capture.taps[frame.tap].name(), capture.width);
                // A reader of a pipe sees each frame as it comes; a busy capture is written in
                // batches, when it has no more frames waiting.
                let flushed = written_now.and_then(|()| if frames.is_empty() { sink.flush() } else { Ok(()) });
                if let Err(e) = flushed {
                    if reader_gone(&e) {
                        gone = true;
                        break;
                    }
                    return Err(e).context("cannot write the capture");
                }
                written += 1;
                if count.is_some_and(|n| written >= n) {
                    break;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    // This node's taps hold the only senders left: the channel closes once they have ended.
    capture.frames = mpsc::channel(1).0;
    if let Some(r) = &relayed {
        r.withdraw();
    }
    // Each tap ends within its read timeout and says what the kernel dropped (an agent's, once
    // it has seen the request withdrawn); frames read meanwhile are past the end asked for.
    let settle = tokio::time::Instant::now() + Duration::from_secs(if relayed.is_some() { 3 } else { 2 });
    let mut here_open = true;
    while here_open || capture.relayed_open(&ends) > 0 {
        let message = tokio::select! {
            message = frames.recv(), if here_open => message,
            from_agent = next_relayed(&mut relayed) => match capture.take_relayed(from_agent, &mut sink, false) {
                Ok(Some(message)) => Some(message),
                _ => continue,
            },
            _ = tokio::time::sleep_until(settle) => break,
        };
        match message {
            Some(TapMessage::Ended(end)) => ends.push(end),
            Some(TapMessage::Frame(_)) => {}
            None => here_open = false,
        }
    }
    if let Some(r) = relayed {
        r.finish().await;
    }
    match sink.flush() {
        Err(e) if !reader_gone(&e) => return Err(e).context("cannot write the capture"),
        Err(_) => gone = true,
        Ok(()) => {}
    }
    if gone {
        return Ok(ExitCode::SUCCESS);
    }
    let dropped: u64 = ends.iter().map(|e| e.dropped).sum();
    let whereto = match &write {
        Some(path) if !to_stdout => format!(" to {}", path.display()),
        _ => String::new(),
    };
    let lost = if capture.lost > 0 { format!("; {} lost on the way from other nodes (this labctl or Redis could not keep up)", capture.lost) } else { String::new() };
    eprintln!("labctl capture: {written} frame{}{whereto}; {dropped} dropped by the kernel{lost}", if written == 1 { "" } else { "s" });
    Ok(ExitCode::SUCCESS)
}
