//! Properties of the pure planner, checked against a simulated Swarm (a fake is fine here: the
//! planner has no I/O).

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use swarmlab::plan::{desired_lab, diff, labels, teardown, Action, Observed, ObservedNetwork, ObservedService};
use swarmlab::spec::{Lab, LabSpec, Metadata, Mode, Network, NetworkAttachment, Service};

fn lab_strategy() -> impl Strategy<Value = Lab> {
    let nets = prop::collection::btree_set("[a-c]", 0..3);
    (nets, prop::collection::btree_map("[a-e]", (0u32..5, any::<bool>(), 0usize..3, 0usize..4), 0..5)).prop_map(|(nets, svcs)| {
        let networks: BTreeMap<String, Network> = nets.iter().map(|n| (format!("net{n}"), Network::default())).collect();
        let names: Vec<String> = networks.keys().cloned().collect();
        let services = svcs
            .into_iter()
            .map(|(name, (replicas, alt_image, net_pick, mode_pick))| {
                let svc = Service {
                    image: Some(if alt_image { "labbox:other".into() } else { "labbox:latest".into() }),
                    replicas: Some(replicas),
                    // A mode changed between the two labs is a remove and a create (Swarm
                    // cannot change it in place).
                    mode: Some([Mode::Replicated, Mode::Global, Mode::ReplicatedJob, Mode::GlobalJob][mode_pick]),
                    networks: names.get(net_pick).map(|n| vec![NetworkAttachment::Name(n.clone())]),
                    ..Default::default()
                };
                (format!("svc{name}"), svc)
            })
            .collect();
        Lab {
            api_version: "swarmlab/v1alpha1".into(),
            kind: "Lab".into(),
            metadata: Metadata { name: "lab".into(), labels: BTreeMap::new() },
            spec: LabSpec { defaults: None, networks, services, schedule: None, suspend: None, progress_deadline: None, links: vec![], configs: Default::default(), volumes: Default::default() },
        }
    })
}

/// Objects that are not ours: unowned ones with names the lab might use, and another lab's.
fn foreign_strategy() -> impl Strategy<Value = Observed> {
    let unowned = prop::collection::vec(("[a-e]", any::<bool>()), 0..4);
    unowned.prop_map(|names| {
        let mut obs = Observed::default();
        for (i, (n, other_lab)) in names.into_iter().enumerate() {
            let mut l = HashMap::new();
            if other_lab {
                l.insert(labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string());
                l.insert(labels::LAB.to_string(), "other".to_string());
            }
            obs.services.push(ObservedService { id: format!("foreign-s{i}"), name: format!("lab_svc{n}"), labels: l.clone(), replicas: Some(1), ..Default::default() });
            obs.networks.push(ObservedNetwork { id: format!("foreign-n{i}"), name: format!("lab_net{n}"), labels: l, subnet: None, internal: false });
        }
        obs
    })
}

fn foreign_ids(obs: &Observed) -> Vec<String> {
    obs.services.iter().map(|s| s.id.clone()).chain(obs.networks.iter().map(|n| n.id.clone())).filter(|id| id.starts_with("foreign")).collect()
}

proptest! {
    #[test]
    fn applying_a_plan_converges_and_never_touches_foreign_objects(a in lab_strategy(), b in lab_strategy(), foreign in foreign_strategy()) {
        let mut obs = foreign.clone();
        for lab in [&a, &b] {
            let desired = desired_lab(lab);
            // Up to two passes: a network recreate needs a second one.
            for _ in 0..2 {
                let plan = diff(&desired, &obs);
                for action in &plan.actions {
                    let target = match action {
                        Action::UpdateService { id, .. } | Action::RemoveService { id, .. } | Action::RemoveNetwork { id, .. } => id.clone(),
                        _ => continue,
                    };
                    prop_assert!(!target.starts_with("foreign"), "touched a foreign object: {:?}", action);
                    prop_assert!(obs.services.iter().any(|s| s.id == target) || obs.networks.iter().any(|n| n.id == target), "acts on nothing: {:?}", action);
                }
                obs.apply(&plan.actions);
            }
            let again = diff(&desired, &obs);
            prop_assert!(again.is_empty(), "not converged: {:?}", again.actions);
            prop_assert_eq!(foreign_ids(&obs), foreign_ids(&foreign));
        }
        let gone = teardown("lab", &obs);
        obs.apply(&gone.actions);
        prop_assert!(obs.services.iter().chain(std::iter::empty()).all(|s| s.id.starts_with("foreign")));
        prop_assert!(obs.networks.iter().all(|n| n.id.starts_with("foreign")));
    }

    #[test]
    fn the_passes_labctl_diff_shows_end_where_labd_does(a in lab_strategy(), b in lab_strategy()) {
        let mut obs = Observed::default();
        obs.apply(&diff(&desired_lab(&a), &obs).actions);
        let desired = desired_lab(&b);
        for plan in swarmlab::plan::passes(&desired, &obs) {
            obs.apply(&plan.actions);
        }
        prop_assert!(diff(&desired, &obs).is_empty());
    }

    #[test]
    fn an_unchanged_lab_plans_nothing(lab in lab_strategy()) {
        let desired = desired_lab(&lab);
        let mut obs = Observed::default();
        let first = diff(&desired, &obs);
        obs.apply(&first.actions);
        prop_assert!(diff(&desired_lab(&lab.clone()), &obs).is_empty());
    }
}

#[test]
fn conditions_do_not_change_the_service_hash() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/labs/iot.yaml")).unwrap();
    let doc = swarmlab::spec::parse_file(std::path::Path::new("iot.yaml"), &text).remove(0);
    let lab = doc.result.unwrap().lab;
    let mut shaped = lab.as_ref().clone();
    shaped.spec.networks.get_mut("field").unwrap().conditions.as_mut().unwrap().delay = Some("300ms".parse().unwrap());
    let (a, b) = (desired_lab(&lab), desired_lab(&shaped));
    for (x, y) in a.services.iter().zip(&b.services) {
        assert_eq!(x.hash, y.hash, "{} would restart for a conditions change", x.name);
    }
    let sim = a.services.iter().find(|s| s.short_name == "simulator").unwrap();
    let sim2 = b.services.iter().find(|s| s.short_name == "simulator").unwrap();
    assert_ne!(sim.shaping, sim2.shaping);
}

#[test]
fn swarm_names_and_labels_follow_docker_stack() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/labs/dockercoins.yaml")).unwrap();
    let lab = swarmlab::spec::parse_file(std::path::Path::new("d.yaml"), &text).remove(0).result.unwrap().lab;
    let d = desired_lab(&lab);
    let worker = d.services.iter().find(|s| s.name == "coins_worker").unwrap();
    let l = &worker.labels;
    assert_eq!(l["com.docker.stack.namespace"], "coins");
    assert_eq!(l[labels::LAB], "coins");
    assert_eq!(worker.replicas, Some(2));
    assert_eq!(worker.networks[0].target, "coins_coins");
    assert_eq!(worker.networks[0].aliases, ["worker"]);
    assert_eq!(d.networks.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["coins_coins"]);
}
