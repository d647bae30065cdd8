//! The pure core's first half: the Lab resource, its units and presets, and validation that
//! points at the offending spot. No I/O here.

pub mod diagnostic;
pub mod format;
pub mod ingress;
pub mod links;
pub mod model;
pub mod presets;
pub mod resolve;
pub mod schedule;
pub mod schema;
pub mod stochastic;
pub mod units;
pub mod validate;
pub mod yaml;

pub use diagnostic::Diagnostic;
pub use model::*;
pub use presets::Preset;
pub use resolve::{resolve_conditions, EffectiveConditions};
pub use schedule::{CpuCap, InForce, Kill, Schedule, ScheduleStart, Target as ScheduleTarget, TaskSet};
pub use validate::{parse_file, revision_of, LabDocument, ValidLab};
