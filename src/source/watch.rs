//! Watching the labs directory. Events only say "look again": every batch re-reads the whole
//! directory, so a file written in pieces, an atomic rename or a symlink swap all end in one
//! consistent read. The parent directory is watched too, because a Git sync that swaps the
//! labs directory's symlink changes the parent, not the old target.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

/// Quiet time after the last event before the directory is re-read.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

pub struct DirWatcher {
    root: PathBuf,
    watched_target: Option<PathBuf>,
    debouncer: Option<Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>>,
    tx: mpsc::Sender<()>,
}

impl DirWatcher {
    /// Starts watching; each debounced batch of changes sends one `()` on `tx`.
    pub fn new(root: &Path, tx: mpsc::Sender<()>) -> Self {
        let mut w = DirWatcher { root: root.to_path_buf(), watched_target: None, debouncer: None, tx };
        w.refresh();
        w
    }

    /// Re-establishes the watch when the directory (or what its symlink points to) changed.
    /// Cheap when nothing changed; call it after every re-read.
    pub fn refresh(&mut self) {
        let target = std::fs::canonicalize(&self.root).ok();
        if target == self.watched_target && self.debouncer.is_some() {
            return;
        }
        let tx = self.tx.clone();
        let handler = move |result: DebounceEventResult| {
            if result.map(|events| !events.is_empty()).unwrap_or(true) {
                // A full channel already holds a pending "look again"; dropping this one is fine.
                let _ = tx.try_send(());
            }
        };
        let mut debouncer = match new_debouncer(DEBOUNCE, None, handler) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the labs directory; relying on periodic resync");
                return;
            }
        };
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = debouncer.watch(parent, RecursiveMode::NonRecursive);
        }
        if let Some(t) = &target {
            if let Err(e) = debouncer.watch(t, RecursiveMode::Recursive) {
                tracing::warn!(error = %e, dir = %t.display(), "cannot watch labs directory");
            }
        }
        tracing::debug!(target = ?target, "watching labs directory");
        self.watched_target = target;
        self.debouncer = Some(debouncer);
    }
}
