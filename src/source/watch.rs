//! Watching the labs directory. Events only say "look again": every read takes the whole
//! directory, so a file written in pieces, an atomic rename or a symlink swap all end in one
//! consistent read. The parent directory is watched too, because a Git sync that swaps the
//! labs directory's symlink changes the parent, not the old target.
//!
//! Raw inotify events rather than a debouncer crate: when to read is decided by [`Settle`]
//! from what each event says (a closed file is complete at once; a file still open for
//! writing is not), which a fixed debounce cannot tell apart.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long after the last event a file still open for writing is read anyway (a writer that
/// pauses mid-file, or a change with no close event, such as a new symlink).
pub const QUIET: Duration = Duration::from_millis(300);
/// How long to gather a burst of completed writes (a `git checkout` of many files) into one read.
pub const GATHER: Duration = Duration::from_millis(20);
/// Continuous writes never delay a read longer than this.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// What an event says about the file it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Written and closed, renamed into place, or removed: what is there now is whole.
    Complete,
    /// Modified or created while its writer may still be writing.
    Partial,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEvent {
    pub path: PathBuf,
    pub change: Change,
}

/// Sorts a raw event; `None` for events that change nothing (our own reads open files).
pub fn classify(kind: &EventKind) -> Option<Change> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Change::Complete),
        EventKind::Access(_) => None,
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => Some(Change::Complete),
        _ => Some(Change::Partial),
    }
}

/// When to read the directory after file events: soon once every written file is closed,
/// after a quiet period while one is still open for writing, and never later than
/// [`MAX_WAIT`] after the first event. Pure; the controller's scheduler keeps the time.
#[derive(Debug, Default)]
pub struct Settle {
    open_for_writing: HashSet<PathBuf>,
    first_event: Option<Instant>,
}

impl Settle {
    /// Records an event; returns how long from `now` the read should wait.
    pub fn on_event(&mut self, event: &FileEvent, now: Instant) -> Duration {
        match event.change {
            Change::Partial => {
                self.open_for_writing.insert(event.path.clone());
            }
            Change::Complete => {
                self.open_for_writing.remove(&event.path);
            }
        }
        let first = *self.first_event.get_or_insert(now);
        let wait = if self.open_for_writing.is_empty() { GATHER } else { QUIET };
        let latest = (first + MAX_WAIT).saturating_duration_since(now);
        wait.min(latest)
    }

    /// The read is happening: start over.
    pub fn read(&mut self) {
        self.open_for_writing.clear();
        self.first_event = None;
    }
}

pub struct DirWatcher {
    root: PathBuf,
    watched_target: Option<PathBuf>,
    watcher: Option<RecommendedWatcher>,
    tx: mpsc::Sender<FileEvent>,
}

impl DirWatcher {
    /// Starts watching; each relevant event is sent on `tx` (dropped when the channel is full:
    /// a read is pending anyway).
    pub fn new(root: &Path, tx: mpsc::Sender<FileEvent>) -> Self {
        let mut w = DirWatcher { root: root.to_path_buf(), watched_target: None, watcher: None, tx };
        w.refresh();
        w
    }

    /// Re-establishes the watch when the directory (or what its symlink points to) changed.
    /// Cheap when nothing changed; call it after every re-read.
    pub fn refresh(&mut self) {
        let target = std::fs::canonicalize(&self.root).ok();
        if target == self.watched_target && self.watcher.is_some() {
            return;
        }
        let tx = self.tx.clone();
        let root = self.root.clone();
        let inside = target.clone();
        let handler = move |result: notify::Result<notify::Event>| {
            let event = match result {
                Ok(e) => e,
                // The watch itself failed (queue overflow): look again, carefully.
                Err(_) => return drop(tx.try_send(FileEvent { path: root.clone(), change: Change::Partial })),
            };
            let Some(change) = classify(&event.kind) else { return };
            for path in event.paths {
                // Of the parent directory, only the labs directory's own entry matters.
                let relevant = path == root || inside.as_ref().is_some_and(|t| path.starts_with(t)) || path.starts_with(&root);
                if relevant {
                    let _ = tx.try_send(FileEvent { path, change });
                }
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the labs directory; relying on periodic resync");
                return;
            }
        };
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = watcher.watch(parent, RecursiveMode::NonRecursive);
        }
        if let Some(t) = &target {
            if let Err(e) = watcher.watch(t, RecursiveMode::Recursive) {
                tracing::warn!(error = %e, dir = %t.display(), "cannot watch labs directory");
            }
        }
        tracing::debug!(target = ?target, "watching labs directory");
        self.watched_target = target;
        self.watcher = Some(watcher);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};

    fn ev(path: &str, change: Change) -> FileEvent {
        FileEvent { path: PathBuf::from(path), change }
    }

    #[test]
    fn events_are_sorted_by_what_they_say_about_the_file() {
        assert_eq!(classify(&EventKind::Access(AccessKind::Close(AccessMode::Write))), Some(Change::Complete));
        assert_eq!(classify(&EventKind::Modify(ModifyKind::Name(RenameMode::To))), Some(Change::Complete));
        assert_eq!(classify(&EventKind::Remove(RemoveKind::File)), Some(Change::Complete));
        assert_eq!(classify(&EventKind::Modify(ModifyKind::Data(DataChange::Any))), Some(Change::Partial));
        assert_eq!(classify(&EventKind::Create(CreateKind::File)), Some(Change::Partial));
        // labd's own reads open and close files: never a reason to read again.
        assert_eq!(classify(&EventKind::Access(AccessKind::Open(AccessMode::Any))), None);
        assert_eq!(classify(&EventKind::Access(AccessKind::Close(AccessMode::Read))), None);
    }

    #[test]
    fn a_closed_file_is_read_at_once_and_an_open_one_after_a_quiet_period() {
        let t0 = Instant::now();
        let mut s = Settle::default();
        assert_eq!(s.on_event(&ev("a.yaml", Change::Partial), t0), QUIET, "truncated, being written");
        assert_eq!(s.on_event(&ev("a.yaml", Change::Complete), t0), GATHER, "closed");
        s.read();
        // Another file still open holds the read back even when one closes.
        s.on_event(&ev("a.yaml", Change::Partial), t0);
        s.on_event(&ev("b.yaml", Change::Partial), t0);
        assert_eq!(s.on_event(&ev("a.yaml", Change::Complete), t0), QUIET);
        assert_eq!(s.on_event(&ev("b.yaml", Change::Complete), t0), GATHER);
    }

    #[test]
    fn a_writer_that_never_stops_cannot_hold_reads_off_forever() {
        let t0 = Instant::now();
        let mut s = Settle::default();
        s.on_event(&ev("log", Change::Partial), t0);
        assert_eq!(s.on_event(&ev("log", Change::Partial), t0 + Duration::from_millis(1900)), Duration::from_millis(100));
        assert_eq!(s.on_event(&ev("log", Change::Partial), t0 + Duration::from_secs(5)), Duration::ZERO);
        s.read();
        assert_eq!(s.on_event(&ev("log", Change::Partial), t0 + Duration::from_secs(5)), QUIET);
    }
}
