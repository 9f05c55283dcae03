//! `status`: how each folder is doing.
//!
//! The live answer comes from the running daemon's API (queued and in-flight
//! work exist only in its memory). When no daemon runs, or it does not run
//! this folder yet, the state database still knows the files, the
//! conflicts, the last scan and poll and the recent errors (the folder loop
//! copies them there), so that is shown instead, with a note saying so.

use anyhow::bail;
use mf_core::store::LocalState;
use mf_state::StateReader;

use crate::api::{ApiClient, ConflictInfo, ErrorInfo, FolderState, FolderStatus};
use crate::config::{ConfigDir, FolderConfig};

/// How many recent errors the offline status shows.
const OFFLINE_ERRORS: usize = 20;

/// Status of one folder (`Some(name)`) or of every folder.
pub async fn status(config: &ConfigDir, name: Option<&str>) -> anyhow::Result<Vec<FolderStatus>> {
    // Before `init` there are no folders (asking for one by name is an error).
    if !config.is_initialised() && name.is_none() {
        return Ok(Vec::new());
    }
    config.require_initialised()?;
    let folders = match name {
        Some(n) => vec![config.load_folder(n)?],
        None => config.load_folders()?,
    };
    if folders.is_empty() && name.is_none() {
        return Ok(Vec::new());
    }
    let client = ApiClient::for_running_daemon(config);
    let mut out = Vec::with_capacity(folders.len());
    for cfg in &folders {
        let live = match &client {
            Some(c) => match c.status(&cfg.name).await {
                Ok(s) => Ok(s),
                Err(e) => Err(format!(
                    "the daemon does not report this folder ({e}); last known state"
                )),
            },
            None => Err("the daemon is not running; last known state".to_owned()),
        };
        match live {
            Ok(s) => out.push(s),
            Err(note) => out.push(offline(config, cfg, note)?),
        }
    }
    Ok(out)
}

/// Reads what the state database knows about a folder.
fn offline(config: &ConfigDir, cfg: &FolderConfig, note: String) -> anyhow::Result<FolderStatus> {
    let mut s = FolderStatus {
        name: cfg.name.clone(),
        local_path: cfg.local_path.clone(),
        running: false,
        state: FolderState::Stopped,
        state_reason: Some(note.clone()),
        note: Some(note),
        ..FolderStatus::default()
    };
    let db = config.state_db(&cfg.name);
    if !db.exists() {
        s.note = Some("the folder has not been synchronised yet (start `magic-folder run`)".into());
        return Ok(s);
    }
    let reader = match StateReader::open(&db) {
        Ok(r) => r,
        Err(e) => bail!("cannot read the state of {:?}: {e}", cfg.name),
    };
    let loaded = reader
        .load()
        .map_err(|e| anyhow::anyhow!("cannot read the state of {:?}: {e}", cfg.name))?;
    s.files = loaded
        .current
        .values()
        .filter(|c| matches!(c.local, LocalState::File(_)))
        .count();
    s.directories = loaded
        .current
        .values()
        .filter(|c| c.local == LocalState::Dir)
        .count();
    s.unpublished = loaded.current.values().filter(|c| !c.published).count();
    let mut conflicts: Vec<ConflictInfo> = loaded
        .conflicts
        .iter()
        // As the live status counts them: a record without a copy is a
        // marker (a losing deletion or directory kept in mind), not a
        // conflict with a file to look at.
        .filter(|c| !c.resolved && c.copy.is_some())
        .map(|c| ConflictInfo {
            path: c.path.to_string(),
            participant: c.author.clone(),
        })
        .collect();
    conflicts.sort();
    s.conflicts = conflicts;
    let (scan, poll) = crate::folder::saved_times(&reader);
    s.last_scan = scan;
    s.last_poll = poll;
    if let Ok(events) = reader.recent_events(OFFLINE_ERRORS) {
        s.errors = events
            .into_iter()
            .rev()
            .filter(|e| e.kind == "error")
            .map(|e| ErrorInfo {
                at: e.unix_ms.max(0) as u64,
                path: e.path,
                message: e.message,
            })
            .collect();
    }
    Ok(s)
}

/// After a command changed files in a folder: asks the running daemon, if
/// any, to scan it now. True if one was asked (otherwise the change is
/// found when it next starts).
pub(crate) async fn tell_daemon_of_local_change(config: &ConfigDir, folder: &str) -> bool {
    let Some(client) = crate::api::ApiClient::for_running_daemon(config) else {
        return false;
    };
    match client.scan(folder).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("could not ask the daemon to scan: {e}");
            false
        }
    }
}

/// What `scan` and `poll` ask the daemon to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nudge {
    /// Walk the folder for local changes.
    Scan,
    /// Look for the other participants' changes.
    Poll,
}

/// `scan [NAME]` / `poll [NAME]`: asks the running daemon to scan or poll
/// one folder (or every folder) now rather than at its next interval.
/// Returns the folders it asked about.
pub async fn nudge(
    config: &ConfigDir,
    name: Option<&str>,
    what: Nudge,
) -> anyhow::Result<Vec<String>> {
    config.require_initialised()?;
    let names = match name {
        Some(n) => vec![config.load_folder(n)?.name],
        None => config.folder_names()?,
    };
    let Some(client) = crate::api::ApiClient::for_running_daemon(config) else {
        bail!("the daemon is not running (start it with `magic-folder run`); it scans and polls every folder as it starts");
    };
    for n in &names {
        let asked = match what {
            Nudge::Scan => client.scan(n).await,
            Nudge::Poll => client.poll(n).await,
        };
        asked.map_err(|e| anyhow::anyhow!("folder {n}: {e}"))?;
    }
    Ok(names)
}
