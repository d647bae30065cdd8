//! The Swarm edge: what labd reads from and does to a Docker Swarm, behind a small trait so the
//! controller does not know about HTTP, and one implementation over bollard.

mod copy;
mod docker;
mod endpoint;
mod exec;
mod files;
mod local;
mod logs;
mod restart;
mod rollout;
mod ssh;
mod stats;
pub mod spec;

pub use copy::TaskContainer;
pub use docker::DockerSwarm;
pub use exec::{ExecOutput, TaskExec};
pub use local::{LocalTask, LocalTaskEvent, ProcessState};
pub use logs::{task_label, LabTask, LogLine, LogRange};
pub use restart::{RestartProgress, Restarting, RESTART_POLL};
pub(crate) use docker::api_err;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use futures::Stream;

pub use crate::plan::TaskTrouble;
use crate::plan::{DesiredNetwork, DesiredService, LabMemory, Observed};

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("cannot reach the Docker daemon: {0} (is dockerd running? is this node a swarm manager?)")]
    Connect(String),
    /// Swarm lists a new object a moment after creating it, so a create can race an observe.
    /// Not an error: a clash with an object we do not own shows in the next observe.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The object is still used (a network with tasks attached): not an error, just later.
    #[error("{action}: {message}")]
    InUse { action: String, message: String },
    /// A removal found nothing to remove (gone already, or Swarm finishing its removal while
    /// the node's copy of a network waits for its tasks): done, but nothing was applied.
    #[error("{0} is gone already")]
    NotFound(String),
    #[error("{action}: {message}")]
    Api { action: String, message: String },
    /// DOCKER_HOST and the TLS settings beside it name no daemon labd can reach as they stand
    /// (a scheme it does not speak, certificates missing, a handshake refused).
    #[error("{0}")]
    Endpoint(String),
}

/// What a Docker event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSubject {
    Service,
    Network,
    /// A task's container started or died (on this node only: Docker sends container events
    /// of the local engine). Swarm counts the task running a moment after its start.
    Container(ContainerChange),
    /// A node went down or came back: every lab may have tasks there.
    Node,
    /// The lab's memory config was removed (by hand, or by `docker stack rm` beside the file).
    MemoryRemoved,
}

/// The two things that happen to a task's container that labd acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerChange {
    Started,
    Died,
}

impl ContainerChange {
    /// Docker's actions for them, for event filters.
    pub const ACTIONS: [&'static str; 2] = ["start", "die"];

    /// The change a Docker container event's action names, if labd acts on it.
    pub fn from_action(action: &str) -> Option<Self> {
        match action {
            "start" => Some(ContainerChange::Started),
            "die" => Some(ContainerChange::Died),
            _ => None,
        }
    }
}

/// An event on an object labd cares about: a service or network changed, a container started
/// or died. `name` is the object's name (`<lab>_<member>` for ours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmEvent {
    pub subject: EventSubject,
    pub name: String,
    pub lab: Option<String>,
}


pub trait Swarm: Send + Sync + 'static {
    /// Every service (with its running tasks counted on Ready nodes), every swarm network and
    /// the nodes that are down: a few list calls, whatever the number of labs.
    fn observe_all(&self) -> impl Future<Output = Result<Observed, SwarmError>> + Send;
    /// Services and networks owned by `lab` or named like its objects (`<lab>_*`).
    fn observe(&self, lab: &str) -> impl Future<Output = Result<Observed, SwarmError>> + Send {
        async move { Ok(self.observe_all().await?.of_lab(lab)) }
    }
    /// Names of every lab that owns at least one object, for adoption and orphan clean-up.
    fn owned_labs(&self) -> impl Future<Output = Result<Vec<String>, SwarmError>> + Send {
        async move { Ok(self.observe_all().await?.owned_labs()) }
    }
    /// `observed` with its tasks counted afresh, for a look after changes to tasks alone (a
    /// container started or died): its services and networks are as they were, so only the
    /// tasks and the nodes are listed again.
    fn recount(&self, observed: &Observed) -> impl Future<Output = Result<Observed, SwarmError>> + Send;
    /// Changes to services, networks, task containers and nodes, as they happen. The stream
    /// ends (or yields an error) when the daemon goes away; the caller opens it again.
    fn events(&self) -> impl Stream<Item = Result<SwarmEvent, SwarmError>> + Send + 'static;
    fn create_network(&self, net: &DesiredNetwork) -> impl Future<Output = Result<(), SwarmError>> + Send;
    fn remove_network(&self, id: &str) -> impl Future<Output = Result<(), SwarmError>> + Send;
    fn create_service(&self, svc: &DesiredService) -> impl Future<Output = Result<(), SwarmError>> + Send;
    /// Updates service `id` at `version` to `svc`, its `ForceUpdate` counter kept at
    /// `force_update` (see [`crate::plan::ObservedService::force_update`]).
    fn update_service(&self, id: &str, version: u64, force_update: u64, svc: &DesiredService) -> impl Future<Output = Result<(), SwarmError>> + Send;
    fn remove_service(&self, id: &str) -> impl Future<Output = Result<(), SwarmError>> + Send;
    /// The addresses of the tasks on a network, by service name (what a partition cuts off).
    /// Swarm knows them where the network is present: on a manager with a task on it.
    fn task_addresses(&self, network: &str) -> impl Future<Output = Result<TaskAddresses, SwarmError>> + Send;
    /// The task addresses on each of `desired`'s networks that exist (`observed`), by network
    /// Swarm name: where partitions and links find the tasks they classify.
    fn lab_addresses(&self, desired: &crate::plan::DesiredLab, observed: &Observed) -> impl Future<Output = Result<BTreeMap<String, TaskAddresses>, SwarmError>> + Send {
        async move {
            let mut addresses = BTreeMap::new();
            // A network not created yet has no tasks to find.
            for net in desired.networks.iter().filter(|n| observed.networks.iter().any(|o| o.name == n.name)) {
                addresses.insert(net.name.clone(), self.task_addresses(&net.name).await?);
            }
            Ok(addresses)
        }
    }
    /// Every lab's memory (the `<lab>_swarmlab-memory` configs swarmlab owns), by lab.
    fn memories(&self) -> impl Future<Output = Result<BTreeMap<String, LabMemory>, SwarmError>> + Send;
    /// Writes the lab's memory: its config's labels updated in place, or the config created.
    fn remember(&self, lab: &str, memory: &LabMemory) -> impl Future<Output = Result<(), SwarmError>> + Send;
    /// Removes the lab's file configs that no service names any more (all but `keep`).
    fn prune_files(&self, lab: &str, keep: &BTreeSet<String>) -> impl Future<Output = Result<(), SwarmError>> + Send;
    /// Removes what the lab keeps in configs: its files, then its memory (none is not an error).
    fn forget(&self, lab: &str) -> impl Future<Output = Result<(), SwarmError>> + Send;
    /// How many API calls this client has made, for benchmarks and tests.
    fn api_calls(&self) -> u64;
}

pub use crate::plan::TaskAddresses;

/// A shared Swarm client is a Swarm (tests keep a handle on the fake they give the controller).
impl<T: Swarm> Swarm for std::sync::Arc<T> {
    fn observe_all(&self) -> impl Future<Output = Result<Observed, SwarmError>> + Send {
        self.as_ref().observe_all()
    }
    fn recount(&self, observed: &Observed) -> impl Future<Output = Result<Observed, SwarmError>> + Send {
        self.as_ref().recount(observed)
    }
    fn events(&self) -> impl Stream<Item = Result<SwarmEvent, SwarmError>> + Send + 'static {
        self.as_ref().events()
    }
    fn create_network(&self, net: &DesiredNetwork) -> impl Future<Output = Result<(), SwarmError>> + Send {
        self.as_ref().create_network(net)
    }
    fn remove_network(&self, id: &str) -> impl Future<Output = Result<(), SwarmError>> + Send {
        self.as_ref().remove_network(id)
    }
    fn create_service(&self, svc: &DesiredService) -> impl Future<Output = Result<(), SwarmError>> + Send {
        self.as_ref().create_service(svc)
    }
    fn update_service(&self, id: &str, version: u64, force_update: u64, svc: &DesiredService) -> impl Future<Output = Result<(), SwarmError>> + Send {
        self.as_ref().update_service(id, version, force_update, svc)
    }
    fn remove_service(&self, id: &str) -> impl Future<Output = Result<(), SwarmError>> + Send {
        self.as_ref().remove_service(id)
    }
    fn task_addresses(&self, network: &str) -> impl Future<Output = Result<TaskAddresses, SwarmError>> + Send {
        self.as_ref().task_addresses(network)
    }
    fn memories(&self) -> impl Future<Output = Result<BTreeMap<String, LabMemory>, SwarmError>> + Send {
        self.as_ref().memories()
    }
    fn remember(&self, lab: &str, memory: &LabMemory) -> impl Future<Output = Result<(), SwarmError>> + Send {
        self.as_ref().remember(lab, memory)
    }
    fn prune_files(&self, lab: &str, keep: &BTreeSet<String>) -> impl Future<Output = Result<(), SwarmError>> + Send {
        self.as_ref().prune_files(lab, keep)
    }
    fn forget(&self, lab: &str) -> impl Future<Output = Result<(), SwarmError>> + Send {
        self.as_ref().forget(lab)
    }
    fn api_calls(&self) -> u64 {
        self.as_ref().api_calls()
    }
}
