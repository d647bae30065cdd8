//! The Swarm edge: what labd reads from and does to a Docker Swarm, behind a small trait so the
//! controller does not know about HTTP, and one implementation over bollard.

mod docker;

pub use docker::DockerSwarm;

use std::future::Future;

use crate::plan::{DesiredNetwork, DesiredService, Observed};

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
    #[error("{action}: {message}")]
    Api { action: String, message: String },
}

/// An event on an object labd cares about: a service or network changed, a container started
/// or died. `name` is the object's name (`<lab>_<member>` for ours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmEvent {
    pub kind: String,
    pub action: String,
    pub name: String,
    pub lab: Option<String>,
}

/// Why the tasks of a service are not running, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskTrouble {
    pub state: String,
    pub message: String,
    pub node: String,
    /// The task ended in `failed` or `rejected` (not merely starting).
    pub failed: bool,
    /// The node does not have the image (labd never pulls).
    pub image_missing: bool,
}

pub trait Swarm: Send + Sync + 'static {
    /// Services and networks owned by `lab` or named like its objects (`<lab>_*`).
    fn observe(&self, lab: &str) -> impl Future<Output = Result<Observed, SwarmError>> + Send;
    /// Names of every lab that owns at least one object, for adoption and orphan clean-up.
    fn owned_labs(&self) -> impl Future<Output = Result<Vec<String>, SwarmError>> + Send;
    fn create_network(&self, net: &DesiredNetwork) -> impl Future<Output = Result<(), SwarmError>> + Send;
    fn remove_network(&self, id: &str) -> impl Future<Output = Result<(), SwarmError>> + Send;
    fn create_service(&self, svc: &DesiredService) -> impl Future<Output = Result<(), SwarmError>> + Send;
    fn update_service(&self, id: &str, version: u64, svc: &DesiredService) -> impl Future<Output = Result<(), SwarmError>> + Send;
    fn remove_service(&self, id: &str) -> impl Future<Output = Result<(), SwarmError>> + Send;
    /// The most recent task problem of a service that does not run all its tasks.
    fn task_trouble(&self, service_id: &str) -> impl Future<Output = Result<Option<TaskTrouble>, SwarmError>> + Send;
    /// How many API calls this client has made, for benchmarks and tests.
    fn api_calls(&self) -> u64;
}
