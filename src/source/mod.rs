//! The labs directory: reading it whole into a catalog, and watching it for changes.

pub mod catalog;
pub mod watch;

pub use catalog::{is_lab_file, load_dir, Catalog, LabEntry, UnreadableDir};
pub use watch::{DirWatcher, FileEvent, Settle};
