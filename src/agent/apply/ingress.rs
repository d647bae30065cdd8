//! Ingress conditions of one attachment: arriving traffic redirected to an `ifb` device and
//! shaped there (netem, or the rate's token bucket), and the userspace backend's queue on the
//! input path for delay, jitter and loss.

use super::Attachment;
use crate::shaping::netns::{ns_path, run_in};
use crate::shaping::tc::{clear_args, ifb_name, ingress_conditions, ingress_redirect_requests, netem_args, read_netem, read_root_qdisc, redirects_to, tbf_args};
use crate::shaping::userspace::{input_rules, QueueWorker};
use crate::shaping::BackendKind;
use crate::spec::ingress::Ingress;
use crate::spec::units::Rate;
use crate::spec::EffectiveConditions;

impl Attachment {
    fn ifb(&self) -> String {
        ifb_name(&self.interface)
    }

    /// Agents number egress queues from 100 up; arriving packets get their own range.
    fn ingress_queue(&self) -> u16 {
        self.queue.wrapping_add(20_000)
    }

    async fn run_ip(&self, args: &[&str]) -> Result<String, String> {
        run_in(self.pid, "ip", &args.iter().map(|a| a.to_string()).collect::<Vec<_>>()).await.map_err(|e| e.to_string())
    }

    /// Makes arriving traffic carry `want`: netem (or, userspace, the rate's token bucket) on
    /// an ifb device the interface redirects to; delay, jitter and loss of the userspace
    /// backend in a queue on the input path (drawing by the lab's `seed` when it sets one).
    /// `None` removes all of it.
    pub(super) async fn apply_ingress(&mut self, want: Option<&Ingress>, seed: Option<u64>, backend: Option<BackendKind>) -> Result<(), String> {
        let ifb = self.ifb();
        let on_ifb: Option<EffectiveConditions> = want.map(|i| match backend {
            Some(BackendKind::Netem) => ingress_conditions(i),
            _ => EffectiveConditions { rate: i.rate, ..Default::default() },
        });
        match on_ifb.filter(|c| !c.is_empty()) {
            None if self.ifb_held => {
                // Deleting the ingress qdisc takes its filters; "nothing to delete" is fine.
                let _ = self.tc(["qdisc", "del", "dev", &self.interface, "ingress"].map(String::from).to_vec()).await;
                let _ = self.run_ip(&["link", "del", &ifb]).await;
                self.ifb_held = false;
            }
            None => {}
            Some(c) => {
                self.ifb_held = true;
                // "File exists" when it is there already.
                let _ = self.run_ip(&["link", "add", &ifb, "type", "ifb"]).await;
                self.run_ip(&["link", "set", &ifb, "up"]).await?;
                for (i, request) in ingress_redirect_requests(&self.interface, &ifb).into_iter().enumerate() {
                    match self.tc(request).await {
                        // The qdisc exists already; there were no filters to flush.
                        Err(_) if i < 2 => {}
                        other => {
                            other?;
                        }
                    }
                }
                let request = match (backend, c.rate) {
                    (Some(BackendKind::Netem), _) => netem_args(&ifb, &c),
                    (_, Some(rate)) => tbf_args(&ifb, rate.bits_per_sec),
                    (_, None) => clear_args(&ifb),
                };
                self.tc(request).await?;
            }
        }
        let queued = want
            .filter(|i| backend == Some(BackendKind::Userspace) && i.has_delay_or_loss())
            .map(|i| EffectiveConditions { delay: i.delay, jitter: i.jitter, loss: i.loss, seed, ..Default::default() });
        match queued {
            Some(c) => {
                match self.ingress_worker.as_ref().filter(|w| w.is_alive()) {
                    Some(w) => tokio::task::block_in_place(|| w.set_conditions(c)),
                    None => {
                        self.ingress_worker = None;
                        let queue = self.ingress_queue();
                        self.ingress_worker = Some(tokio::task::block_in_place(|| QueueWorker::start(ns_path(self.pid), queue, c, self.stream.arriving()))?);
                    }
                }
                for rule in input_rules(&self.interface, self.ingress_queue()) {
                    if run_in(self.pid, "iptables", &rule.args("-C")).await.is_err() {
                        run_in(self.pid, "iptables", &rule.args("-A")).await.map_err(|e| e.to_string())?;
                    }
                }
            }
            None if self.ingress_worker.is_some() || want.is_none() => {
                for rule in input_rules(&self.interface, self.ingress_queue()) {
                    let _ = run_in(self.pid, "iptables", &rule.args("-D")).await;
                }
                self.ingress_worker = None;
            }
            None => {}
        }
        Ok(())
    }

    /// What arriving traffic really gets: the ifb device's qdisc if the interface redirects to
    /// it, and the input queue's conditions if its rule is there and its worker alive.
    pub(super) async fn read_ingress(&mut self, backend: Option<BackendKind>) -> (Option<Ingress>, Vec<String>) {
        let ifb = self.ifb();
        let mut got = Ingress::default();
        let mut notes = Vec::new();
        let filters = self.tc(["-j", "filter", "show", "dev", &self.interface, "parent", "ffff:"].map(String::from).to_vec()).await.unwrap_or_default();
        // As read: no redirect, nothing of ours on the way in to remove (an ifb device left
        // without its redirect shapes nothing). An inherited attachment then skips the removal.
        self.ifb_held = redirects_to(&filters, &ifb);
        if self.ifb_held {
            let json = self.tc(["-j", "qdisc", "show", "dev", &ifb].map(String::from).to_vec()).await.unwrap_or_default();
            if let Some(c) = read_netem(&json) {
                (got.delay, got.jitter, got.loss, got.rate) = (c.delay, c.jitter, c.loss, c.rate);
                notes.push(format!("ingress via {ifb}: netem"));
            } else if let Some((kind, rate)) = read_root_qdisc(&json) {
                got.rate = rate.map(|b| Rate { bits_per_sec: b });
                notes.push(format!("ingress via {ifb}: {kind}"));
            }
        }
        // The input queue shapes only with its worker alive: without one, its rules need no asking.
        let worker = self.ingress_worker.as_ref().filter(|w| backend == Some(BackendKind::Userspace) && w.is_alive());
        if let Some(w) = worker {
            let mut rules_held = true;
            for rule in input_rules(&self.interface, self.ingress_queue()) {
                if run_in(self.pid, "iptables", &rule.args("-C")).await.is_err() {
                    rules_held = false;
                    break; // one missing is enough to know
                }
            }
            if rules_held {
                let held = w.conditions();
                (got.delay, got.jitter, got.loss) = (held.delay, held.jitter, held.loss);
                notes.push(format!("ingress nfqueue {} rule present, worker alive", self.ingress_queue()));
            }
        }
        ((!got.is_empty()).then_some(got), notes)
    }
}
