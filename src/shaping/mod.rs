//! Traffic conditions inside tasks: the capability probe, the netem and userspace backends, and
//! the pure pieces they are built from (the packet policy, the exact `tc` requests).

pub mod measure;
pub mod distribution;
pub mod netns;
pub mod policy;
pub mod probe;
pub mod tc;
pub mod userspace;
pub mod watch;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Netem,
    Userspace,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Netem => "netem",
            BackendKind::Userspace => "userspace",
        })
    }
}

/// The backend to use: the one forced by the user, else netem where the kernel has it, else
/// userspace where NFQUEUE works. `None`: nothing but (maybe) rate can be applied here.
pub fn choose_backend(caps: &probe::Capabilities, forced: Option<BackendKind>) -> Option<BackendKind> {
    match forced {
        Some(BackendKind::Netem) if caps.netem => Some(BackendKind::Netem),
        Some(BackendKind::Userspace) if caps.nfqueue => Some(BackendKind::Userspace),
        Some(_) => None,
        None if caps.netem => Some(BackendKind::Netem),
        None if caps.nfqueue => Some(BackendKind::Userspace),
        None => None,
    }
}
