//! Where labs come from: a directory (read whole into a catalog, watched for changes) or a Git
//! branch (fetched by labd, read one commit at a time).

pub mod catalog;
pub mod git;
pub mod watch;

pub use catalog::{is_lab_file, lab_files, load_dir, Catalog, LabEntry, UnreadableDir};
pub use git::{Fetched, GitError, GitNews, GitSource};
pub use watch::{DirWatcher, FileEvent, Settle};
