//! File watching for reloads (configuration, rule files, file discovery, TLS material).
//!
//! On Linux, notify 8's inotify backend also reports opens, reads and closes without writing
//! (`EventKind::Access`). A reload reads the files it watches, so reacting to those events reloads
//! again: every watcher would re-read its files forever, once per debounce period (seen as the edge
//! reading its config file every 100 ms, issue 25). Only events that can change what a file holds
//! or whether it exists count; a close after writing (`IN_CLOSE_WRITE`) does.

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher};

/// Whether an event can change a watched file's contents or presence.
pub fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

/// A watcher that calls `changed` for events that can change files (see [`is_change`]); errors
/// from the backend are logged and otherwise left to the callers' periodic checks.
pub fn watcher(changed: impl Fn(&Event) + Send + 'static) -> notify::Result<RecommendedWatcher> {
    notify::recommended_watcher(move |res: notify::Result<Event>| match res {
        Ok(e) if is_change(&e.kind) => changed(&e),
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "file watcher error"),
    })
}

/// Watches `dir` (not recursively) for changes (see [`is_change`]), coalesced into wake-ups on the
/// returned channel. When the directory cannot be watched the watcher is `None`, a warning naming
/// `what` is logged, and the caller's periodic checks are all there is. Keep the watcher alive as
/// long as the wake-ups are wanted.
pub fn watch_dir(
    dir: &std::path::Path,
    what: &str,
) -> (Option<RecommendedWatcher>, tokio::sync::mpsc::Receiver<()>) {
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
    let w = watcher(move |_| {
        let _ = tx.try_send(());
    })
    .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w));
    match w {
        Ok(w) => (Some(w), rx),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the {what} directory; checking periodically");
            (None, rx)
        }
    }
}

/// The directory holding `file` (`.` for a bare file name), to watch for the file's changes (which
/// also catches a ConfigMap's `..data` symlink swap).
pub fn parent_dir(file: &std::path::Path) -> std::path::PathBuf {
    file.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use notify::event::{CreateKind, ModifyKind, RemoveKind};
    use notify::{RecursiveMode, Watcher};
    use std::path::PathBuf;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn reads_are_not_changes() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Read)));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(&EventKind::Remove(RemoveKind::File)));
    }

    /// Reading a watched file produces no callback; a later change does. inotify delivers events in
    /// order, so a callback for the reads would arrive before the one for the marker file.
    #[test]
    fn reading_a_watched_file_does_not_call_back() {
        let dir = tempfile::tempdir().unwrap();
        let read = dir.path().join("config.yml");
        std::fs::write(&read, "global: {}\n").unwrap();
        let (tx, rx) = mpsc::channel::<Vec<PathBuf>>();
        let mut w = watcher(move |e| {
            let _ = tx.send(e.paths.clone());
        })
        .unwrap();
        w.watch(dir.path(), RecursiveMode::NonRecursive).unwrap();
        for _ in 0..5 {
            assert_eq!(std::fs::read_to_string(&read).unwrap(), "global: {}\n");
        }
        let marker = dir.path().join("marker");
        std::fs::write(&marker, "x").unwrap();
        let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(
            first,
            vec![marker],
            "reads of {} called back",
            read.display()
        );
    }
}
