//! One network attachment of one task: its interface inside the task's namespace, and the
//! shaping applied to it by whichever backend the agent chose.

use crate::shaping::netns::{interface_for, ns_path, run_in, run_in_with_input};
use crate::shaping::probe::Capabilities;
mod ingress;

use crate::shaping::tc::{
    clear_args, has_netem_fields, needs_fresh_qdisc, netem_args, prio_tree_requests, read_netem, read_prio_bands, read_prio_filters, read_root_qdisc, tbf_args,
};
use crate::shaping::policy::Stream;
use crate::shaping::userspace::{rules, QueueWorker};
use crate::shaping::BackendKind;
use crate::spec::links::Toward;
use crate::spec::stochastic::DelayDistribution;
use crate::spec::units::Rate;
use crate::spec::EffectiveConditions;
use crate::status::AttachmentShaping;

pub struct Attachment {
    pid: i64,
    network: String,
    interface: String,
    queue: u16,
    /// Which draws the userspace backend's workers take here.
    stream: Stream,
    worker: Option<QueueWorker>,
    /// What is in force, as last read back.
    applied: EffectiveConditions,
    readback: String,
    error: Option<String>,
    /// When this agent last made the kernel carry a new set of conditions: how labd measures
    /// the time a schedule step took to apply, by the agents' own clocks.
    applied_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The delay table each netem qdisc holds (one, or one per band of a prio tree), as tc
    /// cannot read one back: `None` when not known (an agent before this one may have loaded some).
    tables: Option<Vec<Option<DelayDistribution>>>,
    /// The userspace backend's queue for arriving packets (ingress delay, jitter, loss).
    ingress_worker: Option<QueueWorker>,
    /// Whether an ifb redirect may be in place (set up here, or left by an agent before).
    ifb_held: bool,
    /// The root qdisc's kind as last read back (`None`: none, or not read yet).
    root_kind: Option<String>,
    /// The userspace backend's queue rules, as last read back or made.
    queue_rules: QueueRules,
    /// Whether this agent has read the kernel back here since it found the attachment: then
    /// `applied`, `root_kind` and `queue_rules` say what the kernel held at that read, and a
    /// new request needs no read before it (the read after it checks the outcome).
    kernel_known: bool,
}

/// What this agent knows of an attachment's userspace queue rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueRules {
    /// Not read yet, or read as "not all there".
    Unknown,
    AllHeld,
    /// A fresh namespace, or all deleted since.
    NoneHeld,
}

/// What `backend` can apply of `want` on a node with `caps`, and what it cannot, with why.
pub fn achievable(want: &EffectiveConditions, backend: Option<BackendKind>, caps: &Capabilities) -> (EffectiveConditions, Vec<String>) {
    let mut can = want.clone();
    let mut cannot = Vec::new();
    if let Some(ingress) = want.ingress {
        let mut kept = ingress;
        // Netem shapes arriving traffic on an ifb device; the userspace backend queues it on the
        // input path and limits its rate on an ifb device; with neither, only the rate.
        if ingress.has_delay_or_loss() && (backend.is_none() || (backend == Some(BackendKind::Netem) && !caps.ifb)) {
            (kept.delay, kept.jitter, kept.loss) = (None, None, None);
            cannot.push("ingress delay, jitter, loss: no ifb device with netem and no NFQUEUE on this node".into());
        }
        if ingress.rate.is_some() && !(caps.ifb && (caps.tbf || backend == Some(BackendKind::Netem))) {
            kept.rate = None;
            cannot.push("ingress rate: no ifb device (or tbf) on this node".into());
        }
        can.ingress = (!kept.is_empty()).then_some(kept);
    }
    if backend == Some(BackendKind::Netem) && (want.seed.is_some() || want.toward.iter().any(|t| t.conditions.seed.is_some())) {
        can.seed = None;
        for t in &mut can.toward {
            t.conditions.seed = None;
        }
        cannot.push("seed: netem draws from the kernel's random source (seeded runs need the userspace backend)".into());
    }
    if backend.is_none() && has_netem_fields(want) {
        cannot.push("delay, jitter, loss, corrupt, duplicate, reorder: no netem and no NFQUEUE on this node".into());
    }
    if backend.is_none() {
        // Only a token bucket on the whole interface: nothing tells destinations apart.
        for t in can.toward.iter_mut().filter(|t| t.conditions.rate != want.rate) {
            cannot.push(format!("rate toward {}: no netem and no NFQUEUE on this node (the interface's rate limits every destination)", t.to));
            t.conditions.rate = want.rate;
        }
    }
    (can, cannot)
}

/// Whether a link sets a rate of its own: then the userspace backend's worker paces every
/// destination itself, the attachment's rate included, rather than a token bucket limiting
/// the whole interface (which would cap a faster link at the attachment's rate).
fn rates_per_destination(c: &EffectiveConditions) -> bool {
    c.toward.iter().any(|t| t.conditions.rate != c.rate)
}

/// What the userspace backend's worker shapes by: the rates only when it paces them.
fn worker_conditions(want: &EffectiveConditions) -> EffectiveConditions {
    let mut c = want.clone();
    if !rates_per_destination(want) {
        c.rate = None;
        for t in &mut c.toward {
            t.conditions.rate = None;
        }
    }
    c
}

impl Attachment {
    /// The attachment of the task `pid` to `network`. `fresh`: the task started after this
    /// agent first looked at the node, so nothing but this agent has shaped its namespace and
    /// there is nothing to read or remove before the first request (a task's first shaping
    /// then takes 8 tool runs, not 22).
    pub async fn locate(pid: i64, network: &str, mac: &str, ip: &str, queue: u16, stream: Stream, fresh: bool) -> Result<Attachment, String> {
        let interface = interface_for(pid, mac, ip)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no interface with MAC {mac} / IP {ip} in the task's namespace"))?;
        Ok(Attachment {
            pid,
            network: network.to_string(),
            interface,
            queue,
            stream,
            worker: None,
            applied: EffectiveConditions::default(),
            readback: String::new(),
            error: None,
            applied_at: None,
            tables: None,
            ingress_worker: None,
            ifb_held: !fresh,
            root_kind: None,
            queue_rules: if fresh { QueueRules::NoneHeld } else { QueueRules::Unknown },
            kernel_known: fresh,
        })
    }

    /// The pid whose namespace this attachment shapes.
    pub fn pid(&self) -> i64 {
        self.pid
    }

    /// Whether some of this attachment's shaping is done by a userspace worker (it ends with the
    /// agent, where the kernel's shaping stays).
    pub fn has_worker(&self) -> bool {
        self.worker.is_some() || self.ingress_worker.is_some()
    }

    pub fn is_idle(&self) -> bool {
        self.applied.is_empty() && self.worker.is_none() && self.error.is_none()
    }

    async fn tc(&self, args: Vec<String>) -> Result<String, String> {
        run_in(self.pid, "tc", &args).await.map_err(|e| e.to_string())
    }

    /// Runs `verb` for every rule; `-C` succeeds only if all are present.
    async fn iptables(&self, verb: &str) -> Result<(), String> {
        let mut result = Ok(());
        for rule in rules(&self.interface, self.queue) {
            if let Err(e) = run_in(self.pid, "iptables", &rule.args(verb)).await {
                result = Err(e.to_string());
                if verb == "-C" {
                    break;
                }
            }
        }
        result
    }

    /// Adds whichever rule is missing: none when all were there at the last read back, each
    /// without asking where none can be.
    async fn ensure_rules(&mut self) -> Result<(), String> {
        if self.queue_rules == QueueRules::AllHeld {
            return Ok(());
        }
        for rule in rules(&self.interface, self.queue) {
            if self.queue_rules == QueueRules::NoneHeld || run_in(self.pid, "iptables", &rule.args("-C")).await.is_err() {
                if let Err(e) = run_in(self.pid, "iptables", &rule.args("-A")).await {
                    self.queue_rules = QueueRules::Unknown;
                    return Err(e.to_string());
                }
            }
        }
        self.queue_rules = QueueRules::AllHeld;
        Ok(())
    }

    /// The comment that marks this attachment's partition rules.
    fn cut_comment(&self) -> String {
        format!("swarmlab-cut:{}", self.interface)
    }

    /// A partition rule, as a line of `iptables-restore`'s filter table: packets to `address`
    /// leaving by this interface are dropped. First in the chain, before the userspace
    /// backend's queue (a queued packet is accepted there).
    fn cut_rule(&self, verb: &str, address: &str) -> String {
        let position = if verb == "-I" { "OUTPUT 1" } else { "OUTPUT" };
        format!("{verb} {position} -o {} -d {address} -m comment --comment {} -j DROP", self.interface, self.cut_comment())
    }

    /// The addresses cut off as this agent last read them back (none read: none there, as
    /// only this agent adds them), if it has read this attachment back.
    fn cut_rules_known(&self) -> Option<Vec<String>> {
        self.kernel_known.then(|| self.applied.blocked.clone())
    }

    /// The addresses this attachment's partition rules cut off, as the kernel holds them.
    async fn cut_rules(&self) -> Result<Vec<String>, String> {
        let listing = run_in(self.pid, "iptables", &["-w", "-t", "filter", "-S", "OUTPUT"].map(String::from)).await.map_err(|e| e.to_string())?;
        Ok(cut_addresses(&listing, &self.cut_comment()))
    }

    /// Makes the partition rules cut off exactly `addresses`: one `iptables-restore` of every
    /// rule to delete and insert, all or none of them (a rule a time took a partition of 150
    /// tasks, 50 against 100, 20 s to come into force).
    async fn apply_cut(&self, addresses: &[String]) -> Result<(), String> {
        // As last read back, where it was (a stale one fails the batch, and the read after it
        // corrects what the next pass asks).
        let held = match self.cut_rules_known() {
            Some(held) => held,
            None => match self.cut_rules().await {
                Ok(held) => held,
                // No iptables to ask: nothing of ours can be there, and nothing is wanted.
                Err(_) if addresses.is_empty() => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        let batch = cut_batch(&held, addresses, |verb, address| self.cut_rule(verb, address));
        if batch.is_empty() {
            return Ok(());
        }
        let script = format!("*filter\n{}\nCOMMIT\n", batch.join("\n"));
        run_in_with_input(self.pid, "iptables-restore", &["--noflush".to_string(), "-w".to_string()], Some(&script)).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Reads back what the kernel (root qdisc) and the agent's queue hold.
    /// `cut`: look for partition rules too (an nsenter more), when some are wanted or held.
    async fn read_back(&mut self, backend: Option<BackendKind>, cut: bool, want: &EffectiveConditions) {
        let json = self.tc(vec!["-j".into(), "qdisc".into(), "show".into(), "dev".into(), self.interface.clone()]).await.unwrap_or_default();
        let root = read_root_qdisc(&json);
        self.root_kind = root.as_ref().map(|(kind, _)| kind.clone());
        let mut applied = EffectiveConditions::default();
        let mut notes = Vec::new();
        match &root {
            Some((kind, rate)) if kind == "tbf" || kind == "netem" => {
                applied.rate = rate.map(|b| crate::spec::units::Rate { bits_per_sec: b });
                notes.push(format!("qdisc {kind}"));
                if kind == "netem" {
                    // What the kernel holds, field by field, never what was asked; tc prints
                    // no delay table, so that one is what this agent's accepted request loaded.
                    applied = read_netem(&json).unwrap_or_default();
                    applied.delay_distribution = self.tables.as_ref().and_then(|t| t.first().copied().flatten());
                }
            }
            Some((kind, _)) if kind == "prio" => {
                notes.push("qdisc prio (per destination)".into());
                applied = self.read_prio_tree(&json, want).await;
            }
            Some((kind, _)) => notes.push(format!("qdisc {kind}")),
            None => {}
        }
        if backend == Some(BackendKind::Userspace) {
            // None can be there where this agent never added any: nothing to ask.
            let rule = self.queue_rules != QueueRules::NoneHeld && self.iptables("-C").await.is_ok();
            // `-C` stops at the first rule missing: the others are not known, unless this agent
            // never added any (a fresh task's, or all deleted since).
            self.queue_rules = match (rule, self.queue_rules) {
                (true, _) => QueueRules::AllHeld,
                (false, QueueRules::NoneHeld) => QueueRules::NoneHeld,
                (false, _) => QueueRules::Unknown,
            };
            let alive = self.worker.as_ref().is_some_and(QueueWorker::is_alive);
            if rule && alive {
                let mut held = self.worker.as_ref().map(QueueWorker::conditions).unwrap_or_default();
                let paced = held.rate.is_some() || held.toward.iter().any(|t| t.conditions.rate.is_some());
                if paced {
                    // The worker paces each destination. A token bucket left on the interface
                    // (by hand, or from before) caps them all: what is in force is the lower.
                    if let Some(bucket) = applied.rate {
                        notes.push(format!("a token bucket of {bucket} on the interface besides the worker's rates"));
                        let capped = |r: Option<Rate>| Some(r.filter(|r| r.bits_per_sec <= bucket.bits_per_sec).unwrap_or(bucket));
                        held.rate = capped(held.rate);
                        for t in &mut held.toward {
                            t.conditions.rate = capped(t.conditions.rate);
                        }
                    }
                    notes.push(format!("nfqueue {} rule present, worker alive, pacing rates", self.queue));
                } else {
                    // The token bucket on the interface is the only rate, toward every destination.
                    held.rate = applied.rate;
                    for t in &mut held.toward {
                        t.conditions.rate = applied.rate;
                    }
                    notes.push(format!("nfqueue {} rule present, worker alive", self.queue));
                }
                applied = held;
            } else if rule || alive {
                notes.push(format!("nfqueue {}: rule {} worker {}", self.queue, if rule { "present" } else { "missing" }, if alive { "alive" } else { "gone" }));
            }
        }
        if cut {
            match self.cut_rules().await {
                Ok(cut) => {
                    if !cut.is_empty() {
                        notes.push(format!("{} addresses cut off", cut.len()));
                    }
                    applied.blocked = cut;
                }
                Err(e) => notes.push(format!("partition rules unreadable: {e}")),
            }
        }
        if want.ingress.is_some() || self.ifb_held || self.ingress_worker.is_some() {
            let (ingress, note) = self.read_ingress(backend).await;
            applied.ingress = ingress;
            notes.extend(note);
        }
        self.applied = applied;
        self.readback = notes.join("; ");
        self.kernel_known = true;
    }

    /// Makes the attachment carry `want`. Re-applies after a read-back if something drifted.
    pub async fn converge(&mut self, want: &EffectiveConditions, backend: Option<BackendKind>, caps: &Capabilities, readback: bool) {
        let (want, _) = achievable(want, backend, caps);
        let want = &want;
        // A worker that stopped announces nothing in the namespace: it is checked at every pass.
        let readback = readback || self.worker_stopped();
        if self.applied == *want && self.error.is_none() && !readback {
            return;
        }
        let asked_anew = self.applied != *want;
        // Partition rules are only ever ours: with none wanted or held there is nothing to read.
        let cut = !want.blocked.is_empty() || !self.applied.blocked.is_empty();
        // A new request where the kernel was read back before needs no read first: what drifted
        // since is heard (and read back) or found by the read after the request. One read less
        // per task is what makes a schedule step come into force on a big lab at once.
        if readback || (asked_anew && !self.kernel_known) {
            self.read_back(backend, cut, want).await;
            self.round_rate(want);
        }
        if self.applied == *want && self.error.is_none() {
            if asked_anew {
                // Already there (put back by an earlier agent): in force as of now.
                self.applied_at = Some(chrono::Utc::now());
            }
            return;
        }
        self.error = None;
        // Partitions are DROP rules whatever the backend; the backend gets the rest.
        let shaping = EffectiveConditions { blocked: vec![], ..want.clone() };
        let result = match backend {
            Some(BackendKind::Netem) => self.apply_netem(&shaping).await,
            Some(BackendKind::Userspace) => self.apply_userspace(&shaping, caps).await,
            None => self.apply_rate_only(&shaping, caps).await,
        };
        let cut_result = if cut { self.apply_cut(&want.blocked).await } else { Ok(()) };
        let ingress_result = if want.ingress.is_some() || self.ifb_held || self.ingress_worker.is_some() {
            self.apply_ingress(want.ingress.as_ref(), want.seed, backend).await
        } else {
            Ok(())
        };
        if let Err(e) = result.and(cut_result).and(ingress_result) {
            self.error = Some(e);
        }
        self.read_back(backend, cut, want).await;
        self.round_rate(want);
        if self.applied == *want {
            self.applied_at = Some(chrono::Utc::now());
            tracing::info!(pid = self.pid, network = %self.network, interface = %self.interface, conditions = %summary_or_none(want), "shaping applied");
        } else {
            let error = self.error.as_deref().unwrap_or("what the kernel holds differs");
            tracing::warn!(pid = self.pid, network = %self.network, interface = %self.interface, desired = %summary_or_none(want), applied = %summary_or_none(&self.applied), error, "shaping not in force");
        }
    }

    /// Whether a queue worker of this attachment has ended (its thread panicked or gave up).
    fn worker_stopped(&self) -> bool {
        [&self.worker, &self.ingress_worker].into_iter().flatten().any(|w| !w.is_alive())
    }

    /// The kernel stores rates in its own units and rounds them: within 1% counts as equal.
    fn round_rate(&mut self, want: &EffectiveConditions) {
        let close = |a: Option<Rate>, w: Option<Rate>| match (a, w) {
            (Some(a), Some(w)) if (a.bits_per_sec as f64 - w.bits_per_sec as f64).abs() <= w.bits_per_sec as f64 * 0.01 => Some(w),
            _ => a,
        };
        self.applied.rate = close(self.applied.rate, want.rate);
        if let (Some(a), Some(w)) = (self.applied.ingress.as_mut(), want.ingress) {
            a.rate = close(a.rate, w.rate);
        }
    }

    /// The conditions a prio tree holds: band 1 is the attachment's own, the others are the
    /// destinations (named as `want` names them in that order; the kernel knows no names).
    async fn read_prio_tree(&self, json: &str, want: &EffectiveConditions) -> EffectiveConditions {
        let Some(mut bands) = read_prio_bands(json) else { return EffectiveConditions::default() };
        let filters = self.tc(["-j", "filter", "show", "dev", &self.interface, "parent", "1:"].map(String::from).to_vec()).await.unwrap_or_default();
        let mut addresses = read_prio_filters(&filters);
        let tables = self.tables.clone().unwrap_or_default();
        let table = |band: u32| tables.get(band as usize - 1).copied().flatten();
        let mut applied = bands.remove(&1).unwrap_or_default();
        applied.delay_distribution = table(1);
        for (band, mut conditions) in bands {
            conditions.delay_distribution = table(band);
            let to = want.toward.get(band as usize - 2).map(|t| t.to.clone()).unwrap_or_else(|| format!("band {band}"));
            applied.toward.push(Toward { to, addresses: addresses.remove(&band).unwrap_or_default(), conditions });
        }
        applied
    }

    async fn apply_netem(&mut self, want: &EffectiveConditions) -> Result<(), String> {
        if want.is_empty() {
            self.tables = Some(vec![]);
            return self.clear_qdisc().await;
        }
        let bands: Vec<&EffectiveConditions> = std::iter::once(want).chain(want.toward.iter().map(|t| &t.conditions)).collect();
        // A delay table stays until its qdisc goes: uniform jitter where a table may be needs a
        // new qdisc.
        let stale = match &self.tables {
            None => true,
            Some(held) => bands.iter().enumerate().any(|(i, b)| needs_fresh_qdisc(b) && held.get(i).copied().flatten().is_some()),
        };
        // A root of another kind under the same handle cannot be replaced in place ("Invalid
        // qdisc name"): one tree becoming a single netem, or back, starts from nothing.
        let kind = if want.toward.is_empty() { "netem" } else { "prio" };
        // The kind comes from the read-back converge just made (a stale one fails the request
        // and the next read-back corrects it).
        let other_kind = self.root_kind.as_deref().is_some_and(|k| k != kind && matches!(k, "netem" | "prio" | "tbf"));
        if other_kind || (stale && bands.iter().any(|b| needs_fresh_qdisc(b))) {
            self.clear_qdisc().await?;
        }
        if want.toward.is_empty() {
            self.tc(netem_args(&self.interface, want)).await?;
        } else {
            for (i, request) in prio_tree_requests(&self.interface, want)?.into_iter().enumerate() {
                match self.tc(request).await {
                    // Flushing filters where there are none (no prio root yet) fails: fine.
                    Err(_) if i == 0 => {}
                    other => {
                        other?;
                    }
                }
            }
        }
        self.tables = Some(bands.iter().map(|b| b.delay_distribution).collect());
        Ok(())
    }

    async fn apply_rate_only(&mut self, want: &EffectiveConditions, caps: &Capabilities) -> Result<(), String> {
        match want.rate {
            Some(r) if caps.tbf => self.tc(tbf_args(&self.interface, r.bits_per_sec)).await.map(|_| ()),
            _ => self.clear_qdisc().await,
        }
    }

    async fn apply_userspace(&mut self, want: &EffectiveConditions, caps: &Capabilities) -> Result<(), String> {
        let paced = rates_per_destination(want);
        if paced {
            self.clear_qdisc().await?;
        } else {
            self.apply_rate_only(want, caps).await?;
        }
        if has_netem_fields(want) || paced {
            let healthy = self.worker.as_ref().is_some_and(QueueWorker::is_alive);
            if healthy {
                if let Some(w) = &self.worker {
                    tokio::task::block_in_place(|| w.set_conditions(worker_conditions(want)));
                }
            } else {
                self.worker = None;
                let worker = tokio::task::block_in_place(|| QueueWorker::start(ns_path(self.pid), self.queue, worker_conditions(want), self.stream.clone()))?;
                self.worker = Some(worker);
            }
            self.ensure_rules().await?;
        } else {
            if self.queue_rules != QueueRules::NoneHeld {
                // Each deleted, or not there to delete (a second copy only by hand).
                self.queue_rules = if self.iptables("-D").await.is_ok() { QueueRules::NoneHeld } else { QueueRules::Unknown };
            }
            self.worker = None;
        }
        Ok(())
    }

    async fn clear_qdisc(&self) -> Result<(), String> {
        if self.kernel_known && !self.root_kind.as_deref().is_some_and(|k| matches!(k, "netem" | "prio" | "tbf")) {
            return Ok(()); // none of ours at the last read back
        }
        // "No such file" when there is nothing to delete: fine.
        let _ = self.tc(clear_args(&self.interface)).await;
        Ok(())
    }

    /// Removes everything this attachment applied.
    /// Where this agent has read the kernel back, only what it holds (the namespace is
    /// watched, or read back every few seconds); elsewhere (an earlier agent's leftovers) every
    /// kind of ours. A task's removal is then 3 tool runs, not 10, and an agent stopping on a
    /// node of 150 tasks is done in a second.
    pub async fn clear(mut self) {
        let known = self.kernel_known;
        if !known {
            self.ifb_held = true;
        }
        if !known || self.ifb_held || self.ingress_worker.is_some() {
            let _ = self.apply_ingress(None, None, None).await;
        }
        if !known || !self.applied.blocked.is_empty() {
            let _ = self.apply_cut(&[]).await;
        }
        if self.queue_rules != QueueRules::NoneHeld {
            let _ = self.iptables("-D").await;
        }
        self.worker = None;
        let _ = self.clear_qdisc().await;
    }

    /// Takes over what an agent before this one left here, and says whether it could. A
    /// stopping agent leaves the kernel's shaping in place, so the next one finds the lab's
    /// conditions in force: what is exactly what is wanted is kept as it is (nothing applied
    /// again, the traffic never unshaped; it was for as long as labd was away, and then a tool
    /// run, when agents removed their shaping at every stop), and `converge` applies the rest
    /// over it (an edit made while labd was away; the userspace backend's workers, which went
    /// with their agent, bound again to the queues their rules name). What `converge` would not
    /// see (a queue rule no condition wanted now uses: packets pass it unshaped, fail-open) is
    /// not taken over: the caller removes everything of ours and applies from scratch.
    pub async fn adopt(&mut self, want: &EffectiveConditions, backend: Option<BackendKind>, caps: &Capabilities) -> bool {
        let (want, _) = achievable(want, backend, caps);
        // Partition rules read whether or not any are wanted: an earlier agent's may be there.
        self.read_back(backend, true, &want).await;
        self.round_rate(&want);
        let userspace = backend == Some(BackendKind::Userspace);
        let uses_queue = userspace && (has_netem_fields(&want) || rates_per_destination(&want));
        let uses_input_queue = userspace && want.ingress.is_some_and(|i| i.has_delay_or_loss());
        // No iptables here: no rule of ours can be.
        let listing = run_in(self.pid, "iptables", &["-w", "-t", "filter", "-S"].map(String::from)).await.unwrap_or_default();
        let listed = |comment: String| listing.split_whitespace().any(|w| w.trim_matches('"') == comment);
        if (listed(format!("swarmlab:{}", self.interface)) && !uses_queue) || (listed(format!("swarmlab-in:{}", self.interface)) && !uses_input_queue) {
            return false;
        }
        if self.applied == want {
            // In force since before this agent: as of now, for labd's measure of a step's time.
            self.applied_at = Some(chrono::Utc::now());
            if !want.is_empty() {
                tracing::info!(pid = self.pid, network = %self.network, interface = %self.interface, conditions = %want.summary(), "shaping kept from the agent before");
            }
        }
        true
    }

    pub fn report(&self, want: &EffectiveConditions, backend: Option<BackendKind>, caps: &Capabilities) -> AttachmentShaping {
        let (_, mut unsupported) = achievable(want, backend, caps);
        if want.reorder.is_some() && want.delay.is_none() {
            unsupported.push("reorder: has no effect without delay (as with netem)".into());
        }
        AttachmentShaping {
            network: self.network.clone(),
            interface: self.interface.clone(),
            backend,
            desired: want.clone(),
            applied: self.applied.clone(),
            unsupported,
            readback: self.readback.clone(),
            error: self.error.clone(),
            applied_at: self.applied_at,
            counters: self.worker.as_ref().map(|w| {
                let mut counts = w.counters.snapshot();
                counts.overruns = crate::shaping::userspace::queue_overruns(self.pid, self.queue).unwrap_or(0);
                counts
            }),
        }
    }
}

/// For the agent's log: `delay 20ms, loss 2%`, or `none`.
fn summary_or_none(c: &EffectiveConditions) -> String {
    if c.is_empty() {
        "none".into()
    } else {
        c.summary()
    }
}

/// The rule lines (`rule(verb, address)`) that turn the partition rules `held` into exactly
/// `wanted`: rules not wanted, and second copies of wanted ones, deleted; the missing inserted.
fn cut_batch(held: &[String], wanted: &[String], rule: impl Fn(&str, &str) -> String) -> Vec<String> {
    let mut kept: Vec<&String> = Vec::new();
    let mut lines = Vec::new();
    for address in held {
        if wanted.contains(address) && !kept.contains(&address) {
            kept.push(address);
        } else {
            lines.push(rule("-D", address));
        }
    }
    lines.extend(wanted.iter().filter(|a| !held.contains(a)).map(|a| rule("-I", a)));
    lines
}

/// The destinations of the rules tagged `comment` in an `iptables -S OUTPUT` listing, sorted,
/// a destination held twice listed twice.
fn cut_addresses(listing: &str, comment: &str) -> Vec<String> {
    let mut out: Vec<String> = listing
        .lines()
        // iptables-nft quotes the comment: `--comment "swarmlab-cut:eth0"`.
        .filter(|l| l.split_whitespace().any(|w| w.trim_matches('"') == comment))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.iter().position(|w| *w == "-d").and_then(|i| words.get(i + 1)).map(|a| a.to_string())
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linked(attachment_rate: Option<&str>, link_rate: Option<&str>) -> EffectiveConditions {
        let rate = |r: Option<&str>| r.map(|r| r.parse().unwrap());
        EffectiveConditions {
            rate: rate(attachment_rate),
            delay: Some("5ms".parse().unwrap()),
            toward: vec![Toward { to: "server".into(), addresses: vec!["10.0.1.5/32".into()], conditions: EffectiveConditions { rate: rate(link_rate), ..Default::default() } }],
            ..Default::default()
        }
    }

    #[test]
    fn a_link_s_own_rate_is_paced_by_the_userspace_worker_and_refused_only_without_a_queue() {
        let caps = Capabilities { netem: false, tbf: true, nfqueue: true, ifb: true, changes_heard: true, notes: vec![] };
        let want = linked(Some("10mbit"), Some("1mbit"));
        for backend in [Some(BackendKind::Userspace), Some(BackendKind::Netem)] {
            let (can, cannot) = achievable(&want, backend, &caps);
            assert_eq!((can, cannot), (want.clone(), vec![]), "{backend:?}");
        }
        let (can, cannot) = achievable(&want, None, &caps);
        assert_eq!(can.toward[0].conditions.rate, want.rate, "with a token bucket alone, the interface's rate is what the link gets");
        assert!(cannot.iter().any(|c| c.starts_with("rate toward server: no netem and no NFQUEUE")), "{cannot:?}");

        // The worker paces every rate when a link has its own: the attachment's too, as the
        // interface then has no token bucket; otherwise the token bucket does and the worker none.
        assert_eq!(worker_conditions(&want), want);
        let same = linked(Some("10mbit"), Some("10mbit"));
        let held = worker_conditions(&same);
        assert_eq!((held.rate, held.toward[0].conditions.rate), (None, None));
        assert_eq!(held.delay, same.delay);
        assert!(rates_per_destination(&linked(None, Some("1mbit"))), "a rate toward one destination only");
    }

    #[test]
    fn a_partition_change_is_one_batch_of_deletions_and_insertions() {
        let rule = |verb: &str, address: &str| format!("{verb} {address}");
        let held = ["10.0.1.10/32", "10.0.1.10/32", "10.0.1.9/32"].map(String::from);
        let wanted = ["10.0.1.10/32", "10.0.1.11/32"].map(String::from);
        assert_eq!(cut_batch(&held, &wanted, rule), ["-D 10.0.1.10/32", "-D 10.0.1.9/32", "-I 10.0.1.11/32"], "a second copy and an unwanted rule go");
        assert!(cut_batch(&wanted, &wanted, rule).is_empty(), "nothing to do: no tool run");
        assert_eq!(cut_batch(&held, &[], rule).len(), 3, "a heal deletes every rule");
    }

    #[test]
    fn partition_rules_are_read_from_the_listing() {
        let listing = "-P OUTPUT ACCEPT\n-A OUTPUT -d 10.0.1.9/32 -o eth0 -m comment --comment \"swarmlab-cut:eth0\" -j DROP\n-A OUTPUT -d 10.0.1.10/32 -o eth0 -m comment --comment \"swarmlab-cut:eth0\" -j DROP\n-A OUTPUT -d 10.0.1.10/32 -o eth0 -m comment --comment \"swarmlab-cut:eth0\" -j DROP\n-A OUTPUT -d 10.0.2.3/32 -o eth1 -m comment --comment \"swarmlab-cut:eth1\" -j DROP\n-A OUTPUT -o eth0 -m mark ! --mark 0x5157 -m comment --comment swarmlab:eth0 -j NFQUEUE --queue-num 100 --queue-bypass\n";
        assert_eq!(super::cut_addresses(listing, "swarmlab-cut:eth0"), ["10.0.1.10/32", "10.0.1.10/32", "10.0.1.9/32"]);
        assert!(super::cut_addresses(listing, "swarmlab-cut:eth2").is_empty());
    }
}
