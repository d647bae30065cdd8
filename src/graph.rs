//! The topology of a lab as a graph: services and networks as nodes, each attachment an edge
//! labelled with the conditions in force on it. Rendered as Mermaid, Graphviz dot, or a
//! self-contained HTML page with an inline SVG (no script, no network access). Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::spec::Lab;
use crate::status::{LabStatus, Phase};

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceNode {
    pub name: String,
    /// `×3`, or `global`.
    pub replicas: String,
    /// Running/desired from the status, when known.
    pub running: Option<(u64, u64)>,
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

#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub lab: String,
    pub phase: Option<Phase>,
    pub services: Vec<ServiceNode>,
    pub networks: Vec<NetworkNode>,
    pub edges: Vec<Edge>,
}

impl Topology {
    /// The lab's topology; `status` adds running counts and the phase.
    pub fn of(lab: &Lab, status: Option<&LabStatus>) -> Topology {
        let services = lab
            .resolved_services()
            .map(|(name, svc)| ServiceNode {
                name: name.to_string(),
                replicas: match (svc.mode, svc.replicas) {
                    (Some(crate::spec::Mode::Global), _) => "global".into(),
                    (_, r) => format!("×{}", r.unwrap_or(1)),
                },
                running: status.and_then(|s| s.services.get(name)).map(|s| (s.running, s.desired)),
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
        Topology { lab: lab.metadata.name.clone(), phase: status.map(|s| s.phase), services, networks, edges }
    }

    fn service_text(s: &ServiceNode) -> String {
        match s.running {
            Some((r, d)) => format!("{} {} ({r}/{d} running)", s.name, s.replicas),
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
        for e in &self.edges {
            let (from, to) = (mermaid_id("svc", &e.service), mermaid_id("net", &e.network));
            if e.label.is_empty() {
                let _ = writeln!(out, "  {from} --- {to}");
            } else {
                let _ = writeln!(out, "  {from} ---|\"{}\"| {to}", e.label);
            }
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
        for e in &self.edges {
            let _ = writeln!(out, "  \"svc:{}\" -- \"net:{}\" [label=\"{}\"];", e.service, e.network, e.label);
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
    /// conditions; services coloured by how many tasks run.
    pub fn svg(&self) -> String {
        let row = 56.0;
        let rows = self.services.len().max(self.networks.len()).max(1) as f64;
        let (width, height) = (900.0, rows * row + 80.0);
        let y_of = |i: usize, n: usize| 60.0 + (i as f64 + 0.5) * (rows * row / n.max(1) as f64);
        let svc_y: BTreeMap<&str, f64> = self.services.iter().enumerate().map(|(i, s)| (s.name.as_str(), y_of(i, self.services.len()))).collect();
        let net_y: BTreeMap<&str, f64> = self.networks.iter().enumerate().map(|(i, n)| (n.name.as_str(), y_of(i, self.networks.len()))).collect();
        let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n");
        for e in &self.edges {
            let (Some(y1), Some(y2)) = (svc_y.get(e.service.as_str()), net_y.get(e.network.as_str())) else { continue };
            let _ = writeln!(svg, "<line x1=\"250\" y1=\"{y1}\" x2=\"640\" y2=\"{y2}\" stroke=\"#888\"/>");
            if !e.label.is_empty() {
                let _ = writeln!(svg, "<text x=\"445\" y=\"{}\" text-anchor=\"middle\" fill=\"#333\">{}</text>", (y1 + y2) / 2.0 - 4.0, escape(&e.label));
            }
        }
        for s in &self.services {
            let y = svc_y[s.name.as_str()];
            let fill = match s.running {
                Some((r, d)) if r >= d => "#c8ecc8",
                Some((0, _)) => "#f4c2c2",
                Some(_) => "#fbe6a8",
                None => "#e4e4e4",
            };
            let _ = writeln!(
                svg,
                "<g class=\"service\" data-name=\"{}\"><rect x=\"30\" y=\"{}\" width=\"220\" height=\"36\" rx=\"6\" fill=\"{fill}\" stroke=\"#555\"/><text x=\"140\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
                escape(&s.name),
                y - 18.0,
                y + 5.0,
                escape(&Self::service_text(s))
            );
        }
        for n in &self.networks {
            let y = net_y[n.name.as_str()];
            let _ = writeln!(
                svg,
                "<g class=\"network\" data-name=\"{}\"><ellipse cx=\"740\" cy=\"{y}\" rx=\"100\" ry=\"20\" fill=\"#dde8f6\" stroke=\"#555\"/><text x=\"740\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
                escape(&n.name),
                y + 5.0,
                escape(&Self::network_text(n))
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
    }

    #[test]
    fn the_page_colours_services_by_running_tasks() {
        let mut status = LabStatus { phase: Phase::Degraded, ..Default::default() };
        status.services.insert("sensor".into(), crate::status::ServiceStatus { desired: 12, running: 7, message: String::new() });
        status.services.insert("bootstrap".into(), crate::status::ServiceStatus { desired: 1, running: 1, message: String::new() });
        let html = Topology::of(&kademlia(), Some(&status)).html();
        assert!(html.contains("<h1>kademlia — Degraded</h1>"));
        assert!(html.contains("sensor ×12 (7/12 running)") && html.contains("#fbe6a8"), "partly running is amber");
        assert!(html.contains("bootstrap ×1 (1/1 running)") && html.contains("#c8ecc8"));
        assert!(!html.contains("<script"), "no script in the page");
    }
}
