//! swarmlab: a declarative reconciler for Docker Swarm network labs.
//!
//! The pure core (`spec`, `plan`) has no I/O; the edges (`source`, `swarm`, `store`, `shaping`)
//! do I/O behind small traits; the `controller` wires them together.

pub mod agent;
pub mod capture;
pub mod controller;
pub mod error_chain;
pub mod exec_relay;
pub mod graph;
pub mod http;
pub mod import;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod shaping;
pub mod source;
pub mod spec;
pub mod status;
pub mod store;
pub mod swarm;
pub mod usage;
pub mod webhook;
