//! Services created in the order their `dependsOn` says. Swarm starts every service at once
//! (`docker stack deploy` ignores Compose's `depends_on`), so a service that must find its
//! dependencies up is created only once they run. Pure.

use std::collections::BTreeMap;

use super::desired::DesiredLab;
use super::diff::Observed;

/// `desired` with the services that must wait listed in [`DesiredLab::held`], each with the
/// dependencies (short names) that do not run yet: a service Swarm does not have, one of whose
/// dependencies does not run all its replicas. One Swarm has is never held: only a creation
/// waits (a service removed by hand waits again), as Compose orders starts, not restarts.
pub fn hold_dependents(mut desired: DesiredLab, observed: &Observed) -> DesiredLab {
    let runs = |full: &str| -> bool {
        let Some(want) = desired.services.iter().find(|s| s.name == full) else { return true };
        let have = observed.services.iter().find(|o| o.name == full);
        match (want.replicas, have) {
            (Some(0), _) => true,
            (_, None) => false,
            (Some(n), Some(h)) => h.running >= n,
            // Global: as many as Swarm wants, once it wants some.
            (None, Some(h)) => h.desired > 0 && h.running >= h.desired,
        }
    };
    let mut held = BTreeMap::new();
    for svc in desired.services.iter().filter(|s| observed.services.iter().all(|o| o.name != s.name)) {
        let waiting: Vec<String> = svc.depends_on.iter().filter(|dep| !runs(&super::object_name(&desired.lab, dep))).cloned().collect();
        if !waiting.is_empty() {
            held.insert(svc.name.clone(), waiting);
        }
    }
    desired.held = held;
    desired
}

/// What a held service waits for, in words: `db runs`, `app and db run`.
pub fn awaited(deps: &[String]) -> String {
    format!("{} run{}", deps.join(" and "), if deps.len() == 1 { "s" } else { "" })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::plan::{desired_lab, diff, Action, ObservedService};

    fn desired() -> DesiredLab {
        let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: o}\nspec:\n  defaults: {image: labbox:latest}\n  services:\n    db: {replicas: 2}\n    app: {dependsOn: [db]}\n    web: {dependsOn: [app, db]}\n    free: {}\n";
        desired_lab(&crate::spec::parse_file(Path::new("o.yaml"), text).remove(0).result.expect("valid").lab)
    }

    /// The service as labd creates it, with `running` tasks.
    fn on_swarm(name: &str, running: u64) -> ObservedService {
        let d = desired();
        let s = d.services.iter().find(|s| s.name == name).expect("a service of the lab");
        ObservedService { id: s.name.clone(), name: s.name.clone(), labels: s.labels.clone(), replicas: s.replicas, mode: s.mode, image: s.image.clone(), running, desired: s.replicas.unwrap_or(1), ..Default::default() }
    }

    fn created(desired: &DesiredLab, observed: &Observed) -> Vec<String> {
        let held = hold_dependents(desired.clone(), observed);
        diff(&held, observed).actions.iter().filter_map(|a| if let Action::CreateService(s) = a { Some(s.short_name.clone()) } else { None }).collect()
    }

    #[test]
    fn a_service_is_created_once_its_dependencies_run_and_never_held_once_it_exists() {
        let d = desired();
        let mut observed = Observed::default();
        assert_eq!(created(&d, &observed), ["db", "free"], "first what depends on nothing");
        let held = hold_dependents(d.clone(), &observed);
        assert_eq!(held.held.get("o_web"), Some(&vec!["app".to_string(), "db".to_string()]));
        observed.services.push(on_swarm("o_db", 1));
        observed.services.push(on_swarm("o_free", 1));
        assert!(created(&d, &observed).is_empty(), "db runs 1 of its 2 replicas");
        observed.services[0].running = 2;
        assert_eq!(created(&d, &observed), ["app"], "web waits for app too");
        observed.services.push(on_swarm("o_app", 1));
        assert_eq!(created(&d, &observed), ["web"]);
        // Its dependency down again: a service on Swarm is never held back (nor removed).
        observed.services.push(on_swarm("o_web", 1));
        observed.services[0].running = 0;
        assert!(hold_dependents(d.clone(), &observed).held.is_empty());
        assert!(!diff(&hold_dependents(d, &observed), &observed).actions.iter().any(|a| matches!(a, Action::RemoveService { .. })));
    }
}
