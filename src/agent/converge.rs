//! One pass's shaping work on this node: every network attachment of every task brought to
//! its desired conditions, several at a time. Each attachment costs a few tool runs inside its
//! task's namespace (`nsenter … tc`, `iptables`), which mostly wait on process start-up: one
//! after the other (and with more tool runs each), a lab of 151 tasks took 6.1 s for an edited
//! delay to be in force everywhere, so a schedule step came into force over seconds rather
//! than at its time.

use futures::StreamExt;

use super::apply::Attachment;
use crate::shaping::policy::Stream;
use crate::shaping::probe::Capabilities;
use crate::shaping::BackendKind;
use crate::spec::EffectiveConditions;
use crate::status::AttachmentShaping;

/// How many attachments are worked on at once. Past a few, the tool runs only queue for the
/// CPU: measured on two cores, a delay edit on 151 tasks was in force everywhere 2.0–2.6 s
/// after the file was written one at a time, 1.2–1.8 s four at a time, 1.1–1.2 s eight, and
/// 1.1–1.4 s sixteen.
const AT_ONCE: usize = 8;

/// One attachment to bring to `want`.
pub(super) struct Job {
    /// (task id, network short name)
    pub key: (String, String),
    /// Where its report goes among the task's attachments (sorted by network).
    pub index: usize,
    /// What this agent applied there before (`None`: not looked at yet, or nothing held).
    pub held: Option<Attachment>,
    pub want: EffectiveConditions,
    pub pid: i64,
    pub mac: String,
    pub ip: String,
    /// The userspace backend's queue number inside the task's namespace.
    pub queue: u16,
    /// Names the draws of its userspace worker: `lab/service/slot/network`.
    pub stream: String,
    /// Found by this agent's first look: an agent killed before may have left rules there.
    pub inherited: bool,
    /// Read the kernel back though nothing new is asked (a change was heard, or it is time).
    pub readback: bool,
}

/// What became of a `Job`.
pub(super) struct Done {
    pub key: (String, String),
    pub index: usize,
    /// Kept for the next pass (`None`: nothing applied and nothing wanted, or not found).
    pub attachment: Option<Attachment>,
    /// For the task's report (`None`: nothing wanted and nothing held: not reported).
    pub report: Option<AttachmentShaping>,
}

/// Runs every job, `AT_ONCE` at a time; the results come in any order.
pub(super) async fn converge_all(jobs: Vec<Job>, backend: Option<BackendKind>, caps: &Capabilities) -> Vec<Done> {
    futures::stream::iter(jobs).map(|job| converge_one(job, backend, caps)).buffer_unordered(AT_ONCE).collect().await
}

async fn converge_one(job: Job, backend: Option<BackendKind>, caps: &Capabilities) -> Done {
    let Job { key, index, mut held, want, pid, mac, ip, queue, stream, inherited, readback } = job;
    let network = &key.1;
    let unreported = |key| Done { key, index, attachment: None, report: None };
    if inherited && held.is_none() {
        // What an agent before us left here (stopped, or killed): taken over (kept where it is
        // what is wanted, the rest applied over it), else removed and applied from scratch.
        // With nothing wanted there is nothing to keep: removed, and not reported, as before.
        if let Ok(mut found) = Attachment::locate(pid, network, &mac, &ip, queue, Stream::new(stream.clone()), false).await {
            if !want.is_empty() && found.adopt(&want, backend, caps).await {
                held = Some(found);
            } else {
                found.clear().await;
            }
        }
    }
    if want.is_empty() && held.is_none() {
        return unreported(key);
    }
    let mut attachment = match held {
        Some(a) => a,
        None => match Attachment::locate(pid, network, &mac, &ip, queue, Stream::new(stream), !inherited).await {
            Ok(a) => a,
            Err(e) => {
                let report = AttachmentShaping { network: network.clone(), desired: want, error: Some(e), ..Default::default() };
                return Done { key, index, attachment: None, report: Some(report) };
            }
        },
    };
    attachment.converge(&want, backend, caps, readback).await;
    let report = attachment.report(&want, backend, caps);
    // Nothing applied, nothing wanted: forget it.
    let attachment = (!attachment.is_idle()).then_some(attachment);
    Done { key, index, attachment, report: Some(report) }
}
