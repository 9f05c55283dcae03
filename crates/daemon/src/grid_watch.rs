//! Hearing about the other participants' changes as they happen, on an
//! embedded grid.
//!
//! Every participant publishes by linking a new version file into its
//! directory's folder under `<grid>/mutable/` (see `mf_grid::embedded`), so
//! where the grid directory is on a local filesystem, inotify on that folder
//! says "something was published" the moment it is: the folder loop then
//! polls at once instead of at its next interval (on average half an
//! interval later). Polling an unchanged directory costs a `readdir` and a
//! `stat`, so a poll for an event that was our own publish, or a prune, is
//! cheap. The periodic poll goes on all the same: on a network or removable
//! filesystem inotify does not see other machines' writes, and an event
//! lost for any reason costs at most one interval.
//!
//! Our own publishes are left out (a bulk upload publishes every fraction
//! of a second), and events are coalesced into a channel of capacity one:
//! however many arrive, at most one poll is waiting.

use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Watches the mutable directories of the embedded grid at `grid_dir`;
/// sends `()` on `tx` (dropping it if one is already waiting) whenever a
/// version may have been published in one other than `ours` (our personal
/// directory's versions). Dropping the watcher stops it.
pub fn watch(
    grid_dir: &Path,
    ours: Option<PathBuf>,
    tx: mpsc::Sender<()>,
) -> notify::Result<RecommendedWatcher> {
    let mutable: PathBuf = grid_dir.join("mutable");
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let published = match event {
            // A version file linked into place, or (rarely) a new directory.
            Ok(e) => {
                matches!(e.kind, EventKind::Create(_) | EventKind::Modify(_))
                    && !e
                        .paths
                        .iter()
                        .all(|p| ours.as_ref().is_some_and(|o| p.starts_with(o)))
            }
            // Lost track (queue overflow): a poll finds out what changed.
            Err(_) => true,
        };
        if published {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&mutable, RecursiveMode::Recursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_published_version_is_heard_and_coalesced() {
        let grid = tempfile::tempdir().unwrap();
        let dir = grid.path().join("mutable").join("SOMEDIR");
        std::fs::create_dir_all(&dir).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let ours = grid.path().join("mutable").join("OURS");
        std::fs::create_dir_all(&ours).unwrap();
        let _w = watch(grid.path(), Some(ours.clone()), tx).unwrap();
        // Our own publish is not news. (A slow machine could only make
        // this pass without proving much, never fail.)
        std::fs::write(ours.join(format!("{:020}", 1)), b"ours").unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
        assert!(quiet.is_err(), "our own publish woke the poll");
        for seq in 1..=5 {
            std::fs::write(dir.join(format!("{seq:020}")), b"version").unwrap();
        }
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("heard within a minute")
            .expect("the watcher is alive");
        // Five publishes are at most one waiting poll (plus any sent after
        // the first was taken), never five queued.
        assert!(rx.len() <= 1);
    }
}
