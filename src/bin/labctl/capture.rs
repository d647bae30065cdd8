//! `labctl capture LAB [SERVICE[.SLOT]] [--network NET] [-w FILE|-] [-c N] [--duration D]`:
//! the frames every task of the lab on this node sends and receives on the lab's networks, as
//! tcpdump would show them on each task's interface, found by the lab's names instead of a
//! container's pid and an interface's index: a line per frame, or one pcapng file with an
//! interface per task and network (`ping.1/lan`) and the task names for the lab's addresses,
//! for Wireshark (`-w - | wireshark -k -i -`). Frames go through the task's conditions as they
//! would without the capture: what a task sends is seen after them (a frame a condition drops
//! never left it; a delayed one is stamped when it leaves), what it receives before any
//! `ingress` condition.

use std::collections::HashMap;
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
use swarmlab::capture::{summary, Frame, Tap, TapEnd};
use swarmlab::shaping::netns;
use swarmlab::swarm::{task_label, DockerSwarm, LocalTask};
use tokio::sync::mpsc;

use crate::tasks::{this_node, Placement, Target};

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
    Lines { width: usize, names: HashMap<Ipv4Addr, String>, out: std::io::BufWriter<std::io::Stdout> },
    Pcapng(PcapngOut<Box<dyn Write>>),
}

impl Sink {
    fn write(&mut self, frame: &Frame, taps: &[Tap], flush: bool) -> std::io::Result<()> {
        match self {
            Sink::Lines { width, names, out } => {
                writeln!(out, "{}", summary::line(frame, &taps[frame.tap].name(), *width, names))?;
            }
            Sink::Pcapng(file) => file.write(frame).map_err(|e| match e {
                pcap_file::PcapError::IoError(e) => e,
                e => std::io::Error::other(e),
            })?,
        }
        if flush { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Lines { out, .. } => out.flush(),
            Sink::Pcapng(file) => file.get_mut().flush(),
        }
    }
}

/// The running tasks of the lab here.
async fn lab_tasks_here(swarm: &DockerSwarm, lab: &str) -> anyhow::Result<Vec<LocalTask>> {
    let mut here = Vec::new();
    for id in swarm.local_task_ids().await? {
        if let Some(task) = swarm.local_task(&id).await.filter(|t| t.lab == lab) {
            here.push(task);
        }
    }
    here.sort_by(|a, b| (&a.service, a.slot).cmp(&(&b.service, b.slot)));
    Ok(here)
}

/// Each task's interface on each network asked for, found in its namespace by MAC or address.
async fn taps_of(here: &[LocalTask], networks: &[String], node: &str) -> anyhow::Result<Vec<(Tap, i64)>> {
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
    if taps.is_empty() && !networks.is_empty() {
        let mut known: Vec<&str> = here.iter().flat_map(|t| t.networks.iter().map(|(n, _, _)| n.as_str())).collect();
        known.sort_unstable();
        known.dedup();
        anyhow::bail!("none of these tasks is on {}: their networks are {}", networks.join(", "), known.join(", "));
    }
    Ok(taps)
}

pub async fn run(docker_host: Option<&str>, args: Args) -> anyhow::Result<ExitCode> {
    let Args { lab, target, networks, write, count, duration, snaplen } = args;
    let target: Option<Target> = target.map(|t| t.parse()).transpose()?;
    let to_stdout = write.as_deref() == Some(std::path::Path::new("-"));
    if to_stdout && std::io::stdout().is_terminal() {
        anyhow::bail!("pcapng is binary: write it to a file (-w capture.pcapng) or a pipe (-w - | wireshark -k -i -), or leave -w out for a line per frame");
    }
    let swarm = DockerSwarm::connect(docker_host).await?;
    let node = this_node(&swarm).await;
    let lab_here = lab_tasks_here(&swarm, &lab).await?;
    // Every task of the lab here names its addresses, captured or not.
    let names: HashMap<Ipv4Addr, String> =
        lab_here.iter().flat_map(|t| t.networks.iter().filter_map(|(_, _, ip)| Some((ip.parse().ok()?, task_label(&t.service, t.slot, &node))))).collect();
    let here: Vec<LocalTask> = lab_here.into_iter().filter(|t| target.as_ref().is_none_or(|w| t.service == w.service && w.matches(t.slot))).collect();
    match &target {
        Some(target) => {
            let placed = Placement::of(&swarm, &lab, target, &node).await;
            if here.is_empty() {
                return Err(placed.none_here("running task", &lab, target));
            }
            placed.warn_elsewhere("labctl capture", "captured");
        }
        None if here.is_empty() => anyhow::bail!("no running task of lab `{lab}` on {node}: is it deployed (`labctl status {lab}`), or are its tasks on other nodes (run labctl there)?"),
        None => {}
    }
    let found = taps_of(&here, &networks, &node).await?;
    let taps: Vec<Tap> = found.iter().map(|(tap, _)| tap.clone()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    // Bounded: when the output cannot keep up, the taps wait and the kernel drops (and says so)
    // rather than labctl holding the backlog in memory.
    let (frames_tx, mut frames) = mpsc::channel(4096);
    for (index, (tap, pid)) in found.iter().enumerate() {
        socket::start(index, netns::ns_path(*pid), tap.interface.clone(), snaplen, stop.clone(), frames_tx.clone()).with_context(|| tap.name())?;
    }
    drop(frames_tx);

    let mut sink = match &write {
        None => Sink::Lines { width: taps.iter().map(|t| t.name().len()).max().unwrap_or(0), names: names.clone(), out: std::io::BufWriter::new(std::io::stdout()) },
        Some(path) => {
            let out: Box<dyn Write> = if to_stdout {
                Box::new(std::io::BufWriter::new(std::io::stdout()))
            } else {
                Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?))
            };
            let mut names: Vec<(Ipv4Addr, String)> = names.clone().into_iter().collect();
            names.sort();
            Sink::Pcapng(PcapngOut::start(out, &lab, &taps, snaplen as u32, &names).context("cannot write the capture's header")?)
        }
    };
    let listed: Vec<String> = taps.iter().map(Tap::name).collect();
    let limit = match (count, duration) {
        (Some(n), _) => format!(" until {n} frames"),
        (None, Some(d)) => format!(" for {}", swarmlab::spec::units::Duration { micros: d.as_micros() as u64 }),
        (None, None) => String::new(),
    };
    eprintln!("labctl capture: on {node}, {}{limit} (Ctrl-C to stop)", listed.join(", "));

    // Made once, so that an interrupt between two frames is kept for the next look.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).context("cannot catch Ctrl-C")?;
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut written = 0u64;
    let mut ends: Vec<TapEnd> = Vec::new();
    let mut reader_gone = false;
    loop {
        let message = tokio::select! {
            message = frames.recv() => message,
            _ = interrupt.recv() => break,
            _ = async { match deadline { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => break,
        };
        match message {
            None => break,
            Some(TapMessage::Ended(end)) => ends.push(end),
            Some(TapMessage::Frame(frame)) => {
                // A reader of a pipe sees each frame as it comes; a busy capture is written in
                // batches, when it has no more frames waiting.
                let flush = frames.is_empty();
                if let Err(e) = sink.write(&frame, &taps, flush) {
                    // Wireshark closed, or `| head`: the capture is done.
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        reader_gone = true;
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
    // Each tap ends within its read timeout and says what the kernel dropped; frames it read
    // meanwhile are past the end asked for.
    let settle = tokio::time::Instant::now() + Duration::from_secs(2);
    while ends.len() < taps.len() {
        match tokio::time::timeout_at(settle, frames.recv()).await {
            Ok(Some(TapMessage::Ended(end))) => ends.push(end),
            Ok(Some(TapMessage::Frame(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    if let Err(e) = sink.flush() {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("cannot write the capture");
        }
    }
    if reader_gone {
        return Ok(ExitCode::SUCCESS);
    }
    let dropped: u64 = ends.iter().map(|e| e.dropped).sum();
    let whereto = match &write {
        Some(path) if !to_stdout => format!(" to {}", path.display()),
        _ => String::new(),
    };
    eprintln!("labctl capture: {written} frame{}{whereto}; {dropped} dropped by the kernel", if written == 1 { "" } else { "s" });
    let mut failed = false;
    for end in &ends {
        if let Some(error) = &end.error {
            failed = true;
            eprintln!("labctl capture: {}: {error}", taps[end.tap].name());
        }
    }
    Ok(if failed && ends.iter().all(|e| e.error.is_some()) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
