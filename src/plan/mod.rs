//! The pure core's second half: the Swarm objects a lab needs, and the actions that get there.

pub mod desired;
pub mod diff;
pub mod faults;
pub mod jobs;
pub mod labels;
pub mod memory;
pub mod order;

pub use desired::{desired_lab, object_name, shaping_in_force, stopped, DesiredAttachment, DesiredFile, DesiredLab, DesiredMount, DesiredNetwork, DesiredService, Health, CpuMemory, Restart, Shaping, TaskAddresses, Update};
pub use jobs::{gate_jobs, JobGate, JobWait};
pub use faults::{faults_in_force, KillOrder, ServiceFaults, TaskFaults};
pub use memory::LabMemory;
pub use order::hold_dependents;
pub use diff::{diff, passes, teardown, Action, ActionKind, Conflict, ConflictCause, ObjectKind, Observed, ObservedNetwork, ObservedService, Plan, Recreate, Rollout, RolloutState, TaskExit, TaskTrouble, TroubleCause};
