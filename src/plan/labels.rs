//! The labels that mark what swarmlab owns. labd never changes or removes an object without them.

pub const STACK_NAMESPACE: &str = "com.docker.stack.namespace";
pub const LAB: &str = "io.swarmlab.lab";
pub const MANAGED_BY: &str = "io.swarmlab.managed-by";
pub const MANAGED_BY_VALUE: &str = "swarmlab";
pub const SPEC_HASH: &str = "io.swarmlab.spec-hash";
/// On a service the schedule's `end: stop` stopped (no task runs until the schedule runs again).
pub const STOPPED: &str = "io.swarmlab.stopped";
/// The short name of a service or network inside its lab.
pub const MEMBER: &str = "io.swarmlab.name";

use std::collections::HashMap;

/// The lab that owns an object with these labels, if swarmlab owns it at all.
pub fn owner(labels: &HashMap<String, String>) -> Option<&str> {
    match labels.get(MANAGED_BY).map(String::as_str) {
        Some(MANAGED_BY_VALUE) => labels.get(LAB).map(String::as_str),
        _ => None,
    }
}

/// Whether `lab` owns the object with these labels.
pub fn owned_by(lab: &str, labels: &HashMap<String, String>) -> bool {
    owner(labels) == Some(lab)
}
