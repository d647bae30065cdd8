//! Planning cost of a large lab: parse + validate, desired objects, and the diff against an
//! empty Swarm and against a converged one. Pure; no Docker needed.
//! Run: `cargo bench --bench plan`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use swarmlab::plan::{desired_lab, diff, Observed, ObservedNetwork, ObservedService};

/// A lab of `services` services with `replicas` tasks each, on four networks with conditions.
fn big_lab(services: usize, replicas: usize) -> String {
    let mut s = String::from(
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: big}\nspec:\n  defaults: {image: labbox:latest, init: true, networks: [a, b]}\n  networks:\n    a: {conditions: {delay: 20ms, loss: 1%}}\n    b: {}\n    c: {}\n    d: {}\n  services:\n",
    );
    for i in 0..services {
        let _ = writeln!(s, "    s{i}: {{replicas: {replicas}, env: {{ID: \"{i}\"}}, conditions: {{rate: 10mbit}}}}");
    }
    s
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

fn main() {
    println!("\n| lab | tasks | parse + validate | desired objects | diff vs empty Swarm | diff vs converged Swarm |");
    println!("|---|---|---|---|---|---|");
    for (services, replicas) in [(100, 100), (1000, 10)] {
        let text = big_lab(services, replicas);
        let parse = time(5, || swarmlab::spec::parse_file(Path::new("big.yaml"), &text));
        let lab = swarmlab::spec::parse_file(Path::new("big.yaml"), &text).remove(0).result.expect("the benchmark lab is valid").lab;
        let desired_time = time(5, || desired_lab(&lab));
        let desired = desired_lab(&lab);
        let empty = Observed::default();
        let from_empty = time(5, || diff(&desired, &empty));
        let converged = Observed {
            services: desired
                .services
                .iter()
                .enumerate()
                .map(|(i, s)| ObservedService {
                    id: format!("s{i}"),
                    name: s.name.clone(),
                    version: 1,
                    labels: s.labels.clone(),
                    replicas: s.replicas,
                    mode: s.mode,
                    image: s.image.clone(),
                    running: s.replicas.unwrap_or(1),
                    desired: s.replicas.unwrap_or(1),
                    ..Default::default()
                })
                .collect(),
            networks: desired
                .networks
                .iter()
                .enumerate()
                .map(|(i, n)| ObservedNetwork { id: format!("n{i}"), name: n.name.clone(), labels: n.labels.clone(), subnet: n.subnet.clone(), internal: n.internal })
                .collect(),
            ..Default::default()
        };
        assert!(diff(&desired, &converged).is_empty(), "a converged lab plans nothing");
        let no_op = time(5, || diff(&desired, &converged));
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {services} services × {replicas} replicas | {} | {} | {} | {} | {} |",
            services * replicas,
            ms(parse),
            ms(desired_time),
            ms(from_empty),
            ms(no_op)
        );
    }
}
