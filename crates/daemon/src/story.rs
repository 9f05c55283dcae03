//! The log that tells the story of a folder: one line per upload, download,
//! deletion, conflict and resolution (info), one per problem with its path
//! (warn) — from the engine's [`Notice`]s, which say what each effect meant.
//!
//! Under a flood (an initial sync of 100,000 files) a line each would bury
//! everything else, so each kind gets at most [`LINES_PER_WINDOW`] lines
//! per [`WINDOW`]; the rest are counted and summed up in one line when the
//! window ends ("… and 4,321 more uploads").

use std::collections::BTreeMap;
use std::time::Duration;

use mf_core::engine::Notice;
use mf_core::snapshot::Content;
use tokio::time::Instant;
use tracing::{info, warn};

/// Lines of one kind logged in full per window.
const LINES_PER_WINDOW: u32 = 20;
/// The window over which lines are counted.
const WINDOW: Duration = Duration::from_secs(5);

/// Logs notices, summarising floods.
#[derive(Debug)]
pub struct StoryLog {
    window_start: Instant,
    /// Per kind: lines logged in this window, and how many were held back.
    kinds: BTreeMap<&'static str, (u32, u64)>,
}

impl StoryLog {
    /// A log whose first window starts now.
    pub fn new() -> StoryLog {
        StoryLog {
            window_start: Instant::now(),
            kinds: BTreeMap::new(),
        }
    }

    /// Logs one notice (or counts it, under a flood).
    pub fn tell(&mut self, notice: Notice) {
        self.roll_window();
        let kind = kind(&notice);
        let (lines, held) = self.kinds.entry(kind).or_default();
        if *lines >= LINES_PER_WINDOW {
            *held += 1;
            return;
        }
        *lines += 1;
        match notice {
            Notice::Uploaded { path, content } => match content {
                Content::Deleted => info!(%path, "uploaded the deletion"),
                Content::Dir => info!(%path, "uploaded the directory"),
                Content::File { size, .. } => info!(%path, size, "uploaded"),
            },
            Notice::Downloaded {
                path,
                author,
                content,
            } => match content {
                Content::Deleted => info!(%path, %author, "deleted, as the other participant did"),
                Content::Dir => info!(%path, %author, "made the directory"),
                Content::File { size, .. } => info!(%path, %author, size, "downloaded"),
            },
            Notice::Conflict { path, label } => {
                info!(%path, copy = %label, "conflict: the other version is kept as a conflict copy")
            }
            Notice::Resolved { path } => info!(%path, "conflict resolved"),
            Notice::Error {
                path: Some(path),
                message,
            } => warn!(%path, "{message}"),
            Notice::Error {
                path: None,
                message,
            } => warn!("{message}"),
            Notice::Dropped { count } => {
                warn!(count, "status events were dropped under load")
            }
        }
    }

    /// Ends the window if it is over: one summary line per kind that was
    /// held back.
    pub fn roll_window(&mut self) {
        if self.window_start.elapsed() < WINDOW {
            return;
        }
        self.flush();
    }

    /// Sums up what was held back and starts a new window.
    pub fn flush(&mut self) {
        for (kind, (_, held)) in std::mem::take(&mut self.kinds) {
            if held > 0 {
                match kind {
                    "problems" => warn!("… and {held} more {kind} (see status)"),
                    _ => info!("… and {held} more {kind}"),
                }
            }
        }
        self.window_start = Instant::now();
    }
}

impl Default for StoryLog {
    fn default() -> StoryLog {
        StoryLog::new()
    }
}

/// The kind a notice is counted under in summaries.
fn kind(n: &Notice) -> &'static str {
    match n {
        Notice::Uploaded { .. } => "uploads",
        Notice::Downloaded { .. } => "downloads",
        Notice::Conflict { .. } => "conflicts",
        Notice::Resolved { .. } => "resolutions",
        Notice::Error { .. } | Notice::Dropped { .. } => "problems",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mf_core::relpath::RelPath;

    #[test]
    fn floods_are_held_back_and_counted() {
        let mut log = StoryLog::new();
        for i in 0..100 {
            log.tell(Notice::Uploaded {
                path: RelPath::new(&format!("f{i}")).unwrap(),
                content: Content::Deleted,
            });
        }
        log.tell(Notice::Resolved {
            path: RelPath::new("x").unwrap(),
        });
        assert_eq!(log.kinds["uploads"], (LINES_PER_WINDOW, 80));
        assert_eq!(log.kinds["resolutions"], (1, 0));
        log.flush();
        assert!(log.kinds.is_empty());
    }
}
