//! The topology of a lab as a graph: services and networks as nodes, each attachment an edge
//! labelled with the conditions in force on it. Rendered as Mermaid, Graphviz dot, or a
//! self-contained HTML page with an inline SVG (no script, no network access). Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::spec::links::Destination;
use crate::spec::{resolve_conditions, Lab};
use crate::status::{LabStatus, Phase};

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceNode {
    pub name: String,
    /// `×3`, or `global` (`job ×3`, `global job` for a run to completion).
    pub replicas: String,
    /// Running/desired from the status, when known (completed/desired for a job).
    pub running: Option<(u64, u64)>,
    /// A run to completion: `running` counts its completed tasks.
    pub job: bool,
    /// Its tasks that exited on their own and were started again (from the status).
    pub restarts: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkNode {
    pub name: String,
    pub subnet: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub service: String,
    pub network: String,
    /// The attachment's conditions (`delay 20ms, loss 2%`), empty when none.
    pub label: String,
}

/// A per-pair link (`spec.links`): traffic from one service toward another or an address range.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkEdge {
    pub from: String,
    pub to: Destination,
    /// The same conditions on the way back.
    pub symmetric: bool,
    /// The link's own conditions (what differs toward `to`), empty when none.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub lab: String,
    pub phase: Option<Phase>,
    pub services: Vec<ServiceNode>,
    pub networks: Vec<NetworkNode>,
    pub edges: Vec<Edge>,
    pub links: Vec<LinkEdge>,
    /// (service, a service it is created after): `dependsOn`.
    pub after: Vec<(String, String)>,
}

impl Topology {
    /// The lab's topology; `status` adds running counts and the phase.
    pub fn of(lab: &Lab, status: Option<&LabStatus>) -> Topology {
        let services = lab
            .resolved_services()
            .map(|(name, svc)| (name, svc, status.and_then(|s| s.services.get(name))))
            .map(|(name, svc, seen)| ServiceNode {
                name: name.to_string(),
                replicas: match (svc.mode.unwrap_or_default(), svc.replicas) {
                    (crate::spec::Mode::Global, _) => "global".into(),
                    (crate::spec::Mode::GlobalJob, _) => "global job".into(),
                    (crate::spec::Mode::ReplicatedJob, r) => format!("job ×{}", r.unwrap_or(1)),
                    (crate::spec::Mode::Replicated, r) => format!("×{}", r.unwrap_or(1)),
                },
                running: seen.map(|s| (s.completed.unwrap_or(s.running), s.desired)),
                job: svc.mode.is_some_and(crate::spec::Mode::is_job),
                restarts: seen.map_or(0, |s| s.restarts),
            })
            .collect();
        let networks = lab
            .network_names()
            .into_iter()
            .map(|n| NetworkNode { subnet: lab.spec.networks.get(&n).and_then(|x| x.subnet.clone()), name: n })
            .collect();
        let mut edges = Vec::new();
        for (name, svc) in lab.resolved_services() {
            for a in svc.attachments() {
                edges.push(Edge { service: name.to_string(), network: a.name().to_string(), label: lab.effective_conditions(&svc, &a).summary() });
            }
        }
        let links = lab
            .spec
            .links
            .iter()
            .filter_map(|l| {
                let to = Destination::parse(&l.to).ok()?;
                let symmetric = l.symmetric == Some(true) && matches!(to, Destination::Service(_));
                Some(LinkEdge { from: l.from.clone(), to, symmetric, label: resolve_conditions(&[Some(&l.conditions)]).summary() })
            })
            .collect();
        let after = lab.spec.services.iter().flat_map(|(name, svc)| svc.depends_on.iter().map(move |dep| (name.clone(), dep.clone()))).collect();
        Topology { lab: lab.metadata.name.clone(), phase: status.map(|s| s.phase), services, networks, edges, links, after }
    }

    /// The address ranges links point at, each drawn once.
    fn ranges(&self) -> Vec<String> {
        let mut ranges: Vec<String> = self.links.iter().filter(|l| matches!(l.to, Destination::Range(_))).map(|l| l.to.to_string()).collect();
        ranges.sort();
        ranges.dedup();
        ranges
    }

    fn service_text(s: &ServiceNode) -> String {
        match s.running {
            Some((r, d)) if s.restarts > 0 => format!("{} {} ({r}/{d} running, {} restart{})", s.name, s.replicas, s.restarts, if s.restarts == 1 { "" } else { "s" }),
            Some((r, d)) => format!("{} {} ({r}/{d} {})", s.name, s.replicas, if s.job { "completed" } else { "running" }),
            None => format!("{} {}", s.name, s.replicas),
        }
    }

    fn network_text(n: &NetworkNode) -> String {
        match &n.subnet {
            Some(s) => format!("{} {s}", n.name),
            None => n.name.clone(),
        }
    }

    pub fn mermaid(&self) -> String {
        let mut out = format!("graph LR\n  subgraph {}\n", mermaid_id("lab", &self.lab));
        for s in &self.services {
            let _ = writeln!(out, "    {}[\"{}\"]", mermaid_id("svc", &s.name), Self::service_text(s));
        }
        for n in &self.networks {
            let _ = writeln!(out, "    {}((\"{}\"))", mermaid_id("net", &n.name), Self::network_text(n));
        }
        out.push_str("  end\n");
        for r in self.ranges() {
            let _ = writeln!(out, "  {}[/\"{r}\"/]", mermaid_id("ext", &r));
        }
        for e in &self.edges {
            let (from, to) = (mermaid_id("svc", &e.service), mermaid_id("net", &e.network));
            if e.label.is_empty() {
                let _ = writeln!(out, "  {from} --- {to}");
            } else {
                let _ = writeln!(out, "  {from} ---|\"{}\"| {to}", e.label);
            }
        }
        // Links dashed, with arrows the way their conditions apply.
        for l in &self.links {
            let from = mermaid_id("svc", &l.from);
            let to = match &l.to {
                Destination::Service(s) => mermaid_id("svc", s),
                Destination::Range(r) => mermaid_id("ext", &r.to_string()),
            };
            let arrow = if l.symmetric { "<-.->" } else { "-.->" };
            if l.label.is_empty() {
                let _ = writeln!(out, "  {from} {arrow} {to}");
            } else {
                let _ = writeln!(out, "  {from} {arrow}|\"{}\"| {to}", l.label);
            }
        }
        // The order of creation: a thick arrow toward what a service waits for.
        for (service, dep) in &self.after {
            let _ = writeln!(out, "  {} ==>|\"after\"| {}", mermaid_id("svc", service), mermaid_id("svc", dep));
        }
        out
    }

    pub fn dot(&self) -> String {
        let mut out = format!("graph \"{}\" {{\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n", self.lab);
        for s in &self.services {
            let _ = writeln!(out, "  \"svc:{}\" [shape=box, label=\"{}\"];", s.name, Self::service_text(s));
        }
        for n in &self.networks {
            let _ = writeln!(out, "  \"net:{}\" [shape=ellipse, label=\"{}\"];", n.name, Self::network_text(n));
        }
        for r in self.ranges() {
            let _ = writeln!(out, "  \"ext:{r}\" [shape=parallelogram, label=\"{r}\"];");
        }
        for e in &self.edges {
            let _ = writeln!(out, "  \"svc:{}\" -- \"net:{}\" [label=\"{}\"];", e.service, e.network, e.label);
        }
        for l in &self.links {
            let to = match &l.to {
                Destination::Service(s) => format!("svc:{s}"),
                Destination::Range(r) => format!("ext:{r}"),
            };
            let dir = if l.symmetric { "both" } else { "forward" };
            let _ = writeln!(out, "  \"svc:{}\" -- \"{to}\" [style=dashed, dir={dir}, label=\"{}\"];", l.from, l.label);
        }
        for (service, dep) in &self.after {
            let _ = writeln!(out, "  \"svc:{service}\" -- \"svc:{dep}\" [style=bold, dir=forward, color=gray40, label=\"after\"];");
        }
        out.push_str("}\n");
        out
    }

    /// One page, one inline SVG (see [`Topology::svg`]).
    pub fn html(&self) -> String {
        let phase = self.phase.map(|p| format!(" — {p}")).unwrap_or_default();
        format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{lab}</title></head>\n<body style=\"font-family:sans-serif\">\n<h1>{lab}{phase}</h1>\n{svg}</body></html>\n",
            lab = escape(&self.lab),
            svg = self.svg()
        )
    }

    /// Services on the left, networks on the right, an edge per attachment labelled with its
    /// conditions; services coloured by how many tasks run. Links are dashed arrows named
    /// L1, L2 … (arcs left of the services, or lines to a range under the networks), and their
    /// conditions listed under the drawing: a link's conditions are too long to sit on an arc.
    pub fn svg(&self) -> String {
        let row = 56.0;
        let ranges = self.ranges();
        let right = self.networks.len() + ranges.len();
        let rows = self.services.len().max(right).max(1) as f64;
        let pair_links = self.links.iter().filter(|l| matches!(l.to, Destination::Service(_))).count();
        // Room left of the services for the arcs between them.
        let shift = if pair_links == 0 { 0.0 } else { 60.0 + 32.0 * self.services.len() as f64 + 6.0 * pair_links as f64 };
        let (svc_left, svc_right, net_x) = (30.0 + shift, 250.0 + shift, 740.0 + shift);
        let legend_top = rows * row + 80.0;
        let legend = if self.links.is_empty() { 0.0 } else { 24.0 + 20.0 * self.links.len() as f64 };
        let (width, height) = (900.0 + shift, legend_top + legend);
        let y_of = |i: usize, n: usize| 60.0 + (i as f64 + 0.5) * (rows * row / n.max(1) as f64);
        let svc_y: BTreeMap<&str, f64> = self.services.iter().enumerate().map(|(i, s)| (s.name.as_str(), y_of(i, self.services.len()))).collect();
        // Networks in the order of the mean height of their services (the barycentre rule of
        // layered drawings): fewer edges cross.
        let svc_index: BTreeMap<&str, usize> = self.services.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let mut by_height: Vec<(f64, usize, &str)> = self
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let at: Vec<f64> = self.edges.iter().filter(|e| e.network == n.name).filter_map(|e| svc_index.get(e.service.as_str()).map(|&j| j as f64)).collect();
                let mean = if at.is_empty() { f64::MAX } else { at.iter().sum::<f64>() / at.len() as f64 };
                (mean, i, n.name.as_str())
            })
            .collect();
        by_height.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let net_y: BTreeMap<&str, f64> = by_height.iter().enumerate().map(|(i, (_, _, n))| (*n, y_of(i, right))).collect();
        let range_y: BTreeMap<&str, f64> = ranges.iter().enumerate().map(|(i, r)| (r.as_str(), y_of(self.networks.len() + i, right))).collect();
        let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n");
        if !self.links.is_empty() {
            svg.push_str("<defs><marker id=\"arrow\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L8,4 L0,8 z\" fill=\"#b05a00\"/></marker></defs>\n");
        }
        // A network whose attachments all have the same conditions (its own, no service
        // overriding them) shows them once, under it; an edge is labelled where it differs.
        let shared: BTreeMap<&str, &str> = self
            .networks
            .iter()
            .filter_map(|n| {
                let labels: std::collections::BTreeSet<&str> = self.edges.iter().filter(|e| e.network == n.name).map(|e| e.label.as_str()).collect();
                let only = labels.into_iter().next().filter(|l| !l.is_empty())?;
                self.edges.iter().filter(|e| e.network == n.name).all(|e| e.label == only).then_some((n.name.as_str(), only))
            })
            .collect();
        // Each service's edges leave its box at heights of their own, in the order of their
        // networks, so that they do not share a first stretch.
        let mut start_y: BTreeMap<(&str, &str), f64> = BTreeMap::new();
        for s in &self.services {
            let mut own: Vec<&Edge> = self.edges.iter().filter(|e| e.service == s.name && net_y.contains_key(e.network.as_str())).collect();
            own.sort_by(|a, b| net_y[a.network.as_str()].total_cmp(&net_y[b.network.as_str()]));
            let spread = 24.0_f64.min(8.0 * own.len().saturating_sub(1) as f64);
            for (i, e) in own.iter().enumerate() {
                let offset = if own.len() > 1 { -spread / 2.0 + spread * i as f64 / (own.len() - 1) as f64 } else { 0.0 };
                start_y.insert((e.service.as_str(), e.network.as_str()), svc_y[s.name.as_str()] + offset);
            }
        }
        for e in &self.edges {
            let (Some(&y1), Some(y2)) = (start_y.get(&(e.service.as_str(), e.network.as_str())), net_y.get(e.network.as_str())) else { continue };
            // Labels a quarter of the way from the service, where the edges are still apart
            // (they meet at the network).
            let (mid_x, mid_y) = (svc_right + (net_x - 100.0 - svc_right) / 4.0, y1 + (y2 - y1) / 4.0);
            let _ = writeln!(svg, "<g class=\"attachment\" data-service=\"{}\" data-network=\"{}\">", escape(&e.service), escape(&e.network));
            let _ = writeln!(svg, "<line x1=\"{svc_right}\" y1=\"{y1}\" x2=\"{}\" y2=\"{y2}\" stroke=\"#888\"/>", net_x - 100.0);
            if !e.label.is_empty() && shared.get(e.network.as_str()) != Some(&e.label.as_str()) {
                let _ = writeln!(svg, "<text x=\"{mid_x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#333\">{}</text>", mid_y - 4.0, escape(&e.label));
            }
            // Filled by the live page with the service's traffic on this network.
            let _ = writeln!(svg, "<text class=\"traffic\" x=\"{mid_x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#2a5a9a\" font-size=\"12\"></text>\n</g>", mid_y + 13.0);
        }
        let mut arcs = 0;
        for (i, l) in self.links.iter().enumerate() {
            let name = format!("L{}", i + 1);
            let Some(&y1) = svc_y.get(l.from.as_str()) else { continue };
            let ends = if l.symmetric { " marker-start=\"url(#arrow)\" marker-end=\"url(#arrow)\"" } else { " marker-end=\"url(#arrow)\"" };
            let (path, label_x, label_y, anchor) = match &l.to {
                Destination::Service(to) => {
                    let Some(&y2) = svc_y.get(to.as_str()) else { continue };
                    // Longer arcs further out, so that arcs nest instead of crossing.
                    let span = ((y2 - y1).abs() / row).round();
                    arcs += 1;
                    let bulge = 24.0 + 32.0 * span + 6.0 * arcs as f64;
                    let toward = if y2 > y1 { 1.0 } else { -1.0 };
                    let (start, end) = (y1 + 8.0 * toward, y2 - 8.0 * toward);
                    let path = format!("M{svc_left},{start} C{},{start} {},{end} {svc_left},{end}", svc_left - bulge, svc_left - bulge);
                    // A cubic's middle lies three quarters of the way to its control points.
                    (path, svc_left - 0.75 * bulge - 4.0, (y1 + y2) / 2.0 + 4.0, "end")
                }
                Destination::Range(r) => {
                    let Some(&y2) = range_y.get(r.to_string().as_str()) else { continue };
                    let path = format!("M{svc_right},{y1} L{},{y2}", net_x - 100.0);
                    // Named at its arrow, away from the attachments' labels in the middle.
                    (path, net_x - 108.0, y2 - 8.0, "end")
                }
            };
            let _ = writeln!(
                svg,
                "<g class=\"link\" data-name=\"{name}\"><path d=\"{path}\" fill=\"none\" stroke=\"#b05a00\" stroke-dasharray=\"6 4\"{ends}/><text x=\"{label_x}\" y=\"{label_y}\" text-anchor=\"{anchor}\" fill=\"#b05a00\">{name}</text></g>"
            );
        }
        for s in &self.services {
            let y = svc_y[s.name.as_str()];
            let fill = match s.running {
                Some((r, d)) if r >= d => "#c8ecc8",
                // A job not done yet is on its way, not down.
                Some(_) if s.job => "#fbe6a8",
                Some((0, _)) => "#f4c2c2",
                Some(_) => "#fbe6a8",
                None => "#e4e4e4",
            };
            let _ = writeln!(
                svg,
                "<g class=\"service\" data-name=\"{}\"><rect x=\"{svc_left}\" y=\"{}\" width=\"220\" height=\"36\" rx=\"6\" fill=\"{fill}\" stroke=\"#555\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
                escape(&s.name),
                y - 18.0,
                svc_left + 110.0,
                y + 5.0,
                escape(&Self::service_text(s))
            );
        }
        for n in &self.networks {
            let y = net_y[n.name.as_str()];
            let _ = writeln!(
                svg,
                "<g class=\"network\" data-name=\"{}\"><ellipse cx=\"{net_x}\" cy=\"{y}\" rx=\"100\" ry=\"20\" fill=\"#dde8f6\" stroke=\"#555\"/><text x=\"{net_x}\" y=\"{}\" text-anchor=\"middle\">{}</text>{}</g>",
                escape(&n.name),
                y + 5.0,
                escape(&Self::network_text(n)),
                shared
                    .get(n.name.as_str())
                    .map(|l| format!("<text class=\"conditions\" x=\"{net_x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#333\" font-size=\"12\">{}</text>", y + 34.0, escape(l)))
                    .unwrap_or_default()
            );
        }
        for r in &ranges {
            let y = range_y[r.as_str()];
            let (l, rt) = (net_x - 90.0, net_x + 90.0);
            let _ = writeln!(
                svg,
                "<g class=\"range\" data-name=\"{r}\"><polygon points=\"{},{} {},{} {},{} {},{}\" fill=\"#f6efe4\" stroke=\"#555\" stroke-dasharray=\"4 3\"/><text x=\"{net_x}\" y=\"{}\" text-anchor=\"middle\">{r}</text></g>",
                l + 12.0,
                y - 18.0,
                rt + 12.0,
                y - 18.0,
                rt - 12.0,
                y + 18.0,
                l - 12.0,
                y + 18.0,
                y + 5.0
            );
        }
        for (i, l) in self.links.iter().enumerate() {
            let arrow = if l.symmetric { "⇄" } else { "→" };
            let what = if l.label.is_empty() { "as its networks" } else { l.label.as_str() };
            let _ = writeln!(
                svg,
                "<text class=\"link-legend\" x=\"30\" y=\"{}\" fill=\"#b05a00\">L{}  {} {arrow} {}: {}</text>",
                legend_top + 20.0 * (i + 1) as f64,
                i + 1,
                escape(&l.from),
                escape(&l.to.to_string()),
                escape(what)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn mermaid_id(kind: &str, name: &str) -> String {
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("{kind}_{clean}")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn kademlia() -> Lab {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/labs/kademlia.yaml")).unwrap();
        crate::spec::parse_file(Path::new("k.yaml"), &text).remove(0).result.unwrap().lab.as_ref().clone()
    }

    #[test]
    fn every_attachment_is_an_edge_labelled_with_its_conditions() {
        let t = Topology::of(&kademlia(), None);
        assert_eq!(t.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["bootstrap", "sensor"]);
        assert_eq!(t.edges.len(), 2);
        assert!(t.edges.iter().all(|e| e.network == "sensors" && e.label == "delay 20ms, jitter 5ms, loss 2%"), "{:?}", t.edges);
        let m = t.mermaid();
        assert!(m.contains("svc_sensor[\"sensor ×12\"]") && m.contains("net_sensors((\"sensors 10.42.0.0/24\"))"), "{m}");
        assert!(m.contains("svc_bootstrap ---|\"delay 20ms, jitter 5ms, loss 2%\"| net_sensors"), "{m}");
        let d = t.dot();
        assert!(d.contains("\"svc:sensor\" -- \"net:sensors\" [label=\"delay 20ms, jitter 5ms, loss 2%\"];"), "{d}");
        // Drawn, the network's conditions, the same on each attachment, sit once under it; a
        // service's own override labels its edge.
        let svg = t.svg();
        assert_eq!(svg.matches("delay 20ms, jitter 5ms, loss 2%").count(), 1, "{svg}");
        assert!(svg.contains("<text class=\"conditions\" x=\"740\""), "{svg}");
        let mut lab = kademlia();
        lab.spec.services.get_mut("bootstrap").unwrap().conditions = Some(crate::spec::Conditions { delay: Some("1ms".parse().unwrap()), ..Default::default() });
        let svg = Topology::of(&lab, None).svg();
        assert!(!svg.contains("class=\"conditions\"") && svg.contains(">delay 1ms, jitter 5ms, loss 2%</text>") && svg.contains(">delay 20ms, jitter 5ms, loss 2%</text>"), "{svg}");
    }

    fn geo() -> Lab {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/labs/geo-links.yaml")).unwrap();
        let text = text.replace("  schedule:", "    - from: edge\n      to: 203.0.113.0/24\n      conditions: {loss: 5%}\n  schedule:");
        crate::spec::parse_file(Path::new("geo.yaml"), &text).remove(0).result.unwrap().lab.as_ref().clone()
    }

    #[test]
    fn links_are_dashed_arrows_toward_services_and_ranges() {
        let t = Topology::of(&geo(), None);
        assert_eq!(t.links.len(), 4);
        assert_eq!((t.links[0].from.as_str(), t.links[0].symmetric), ("frankfurt", true));
        assert!(!t.links[3].symmetric, "a range has no way back");
        let m = t.mermaid();
        assert!(m.contains("svc_edge <-.->|\"delay 12ms\"| svc_frankfurt"), "{m}");
        assert!(m.contains("ext_203_0_113_0_24[/\"203.0.113.0/24\"/]") && m.contains("svc_edge -.->|\"loss 5%\"| ext_203_0_113_0_24"), "{m}");
        let d = t.dot();
        assert!(d.contains("\"svc:edge\" -- \"svc:virginia\" [style=dashed, dir=both, label=\"delay 60ms, loss 1%\"];"), "{d}");
        assert!(d.contains("\"svc:edge\" -- \"ext:203.0.113.0/24\" [style=dashed, dir=forward, label=\"loss 5%\"];"), "{d}");
        let svg = t.svg();
        assert_eq!(svg.matches("<g class=\"link\"").count(), 4, "{svg}");
        assert_eq!(svg.matches("<g class=\"range\"").count(), 1);
        assert!(svg.contains("L4  edge → 203.0.113.0/24: loss 5%"), "{svg}");
        assert!(svg.contains("L1  frankfurt ⇄ virginia: delay 45ms, jitter 5ms, loss gilbert-elliott"), "{svg}");
        // The lab without links draws as before: no legend, no shift.
        let plain = Topology::of(&kademlia(), None).svg();
        assert!(!plain.contains("class=\"link") && plain.contains("<rect x=\"30\""));
    }

    #[test]
    fn depends_on_is_a_thick_arrow_toward_what_a_service_waits_for() {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: d}\nspec:\n  defaults: {image: labbox:latest}\n  services:\n    db: {}\n    app: {dependsOn: [db]}\n";
        let lab = crate::spec::parse_file(Path::new("d.yaml"), text).remove(0).result.unwrap().lab.as_ref().clone();
        let t = Topology::of(&lab, None);
        assert!(t.mermaid().contains("  svc_app ==>|\"after\"| svc_db\n"), "{}", t.mermaid());
        assert!(t.dot().contains("  \"svc:app\" -- \"svc:db\" [style=bold, dir=forward, color=gray40, label=\"after\"];\n"), "{}", t.dot());
        assert!(Topology::of(&kademlia(), None).after.is_empty());
    }

    #[test]
    fn the_page_colours_services_by_running_tasks() {
        let mut status = LabStatus { phase: Phase::Degraded, ..Default::default() };
        status.services.insert("sensor".into(), crate::status::ServiceStatus { desired: 12, running: 7, restarts: 3, ..Default::default() });
        status.services.insert("bootstrap".into(), crate::status::ServiceStatus { desired: 1, running: 1, ..Default::default() });
        let html = Topology::of(&kademlia(), Some(&status)).html();
        status.services.get_mut("sensor").expect("sensor").restarts = 1;
        assert!(Topology::of(&kademlia(), Some(&status)).html().contains("sensor ×12 (7/12 running, 1 restart)"));
        assert!(html.contains("<h1>kademlia — Degraded</h1>"));
        assert!(html.contains("sensor ×12 (7/12 running, 3 restarts)") && html.contains("#fbe6a8"), "partly running is amber");
        assert!(html.contains("bootstrap ×1 (1/1 running)") && html.contains("#c8ecc8"));
        assert!(!html.contains("<script"), "no script in the page");
    }
}
