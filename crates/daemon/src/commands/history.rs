//! `history`, `restore` and `deleted`: the snapshot DAG as a user feature.
//!
//! Every version of every file is on the grid as a signed snapshot naming
//! its parents, so the history of a path is read from the grid, not from
//! what this device happens to remember: a device that joined a minute ago
//! sees the same history as one that was there all along. The walk starts
//! from every version anyone keeps of the path (our current version and
//! conflict records, and what every participant's personal directory lists
//! for it, conflict losers included) and follows parents; snapshots this
//! device has seen come from its state database, the rest are fetched and
//! verified like any remote snapshot (signature, path).
//!
//! A restore is an ordinary local edit: the chosen version's content is
//! written into the folder (atomically, the replaced file kept in the
//! versions area, only if the target is still as it was a moment before),
//! and the daemon uploads it as a new version whose parent is the current
//! one — so it syncs, and every participant agrees, like any edit.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use mf_core::engine::{Action, Event, OpId, WriteOutcome};
use mf_core::relpath::RelPath;
use mf_core::snapshot::{Cap, Content, SnapshotInfo};
use mf_core::store::LocalState;
use mf_grid::Grid;
use mf_state::StateReader;
use serde::Serialize;
use sha2::Digest;

use super::grid::{AnyGrid, OpenMode};
use super::resolve::locate;
use crate::config::{ConfigDir, FolderConfig};
use crate::executor::Executor;
use crate::fsops;

/// Hex digits of a version id: enough to tell apart every version a folder
/// will ever have, short enough to type.
const ID_LEN: usize = 12;

/// One version of a path.
#[derive(Clone, Debug, Serialize)]
pub struct Version {
    /// Short id (hex), for `restore --version`.
    pub id: String,
    /// Who made it.
    pub author: String,
    /// Its modification time (for a deletion: when it was deleted), Unix seconds.
    pub time: i64,
    /// `file`, `directory` or `deleted`.
    pub kind: &'static str,
    /// Content size in bytes, for a file.
    pub size: Option<u64>,
    /// Ids of the versions it was made from: none for a new file, one for an
    /// edit, several for a conflict resolution.
    pub parents: Vec<String>,
    /// What this device shows it as: `current` (the file), `conflict copy`
    /// (kept beside it), or nothing (history).
    pub shown_as: Option<&'static str>,
    /// True if versions were made from it independently (a conflict arose here).
    pub diverged: bool,
}

/// The history of one path.
#[derive(Clone, Debug, Serialize)]
pub struct History {
    /// The folder.
    pub folder: String,
    /// The path, relative to the folder.
    pub path: String,
    /// Every version found, newest first (a version always before its parents).
    pub versions: Vec<Version>,
    /// Versions that could not be read (missing or damaged on the grid, or
    /// failing verification), each naming the object and why. The history
    /// below them is unknown.
    pub problems: Vec<String>,
}

/// A version id: the start of a hash of the snapshot's capability (the
/// capability itself is a secret that must not be printed).
pub fn version_id(cap: &Cap) -> String {
    let d = sha2::Sha256::digest(cap.as_str().as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect::<String>()[..ID_LEN].to_owned()
}

/// `history PATH`.
pub async fn history(config: &ConfigDir, path: &Path) -> anyhow::Result<History> {
    config.require_initialised()?;
    let (cfg, rel) = locate(config, path)?;
    let walk = Walk::run(config, &cfg, &rel).await?;
    Ok(walk.history)
}

/// What `restore` did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreOutcome {
    /// The folder.
    pub folder: String,
    /// The version restored.
    pub version: Version,
    /// Where it was written, relative to the folder.
    pub target: String,
    /// True if a running daemon was asked to scan (otherwise the restored
    /// file is uploaded when it next starts).
    pub daemon_notified: bool,
}

/// `restore PATH [--version ID] [--to FILE]`: writes a version of `path`
/// back into the folder, as `path` itself or as `to` (a path inside the
/// same folder). Without `version`, a deleted path gets its last version
/// before the deletion back.
pub async fn restore(
    config: &ConfigDir,
    path: &Path,
    version: Option<&str>,
    to: Option<&Path>,
) -> anyhow::Result<RestoreOutcome> {
    config.require_initialised()?;
    let (cfg, rel) = locate(config, path)?;
    let target = match to {
        None => rel.clone(),
        Some(t) => {
            let (other, target) = locate(config, t)?;
            if other.name != cfg.name {
                bail!(
                    "{} is not in folder {:?}: a version is restored inside its own folder",
                    t.display(),
                    cfg.name
                );
            }
            target
        }
    };
    let walk = Walk::run(config, &cfg, &rel).await?;
    let chosen = match version {
        Some(id) => walk.find(id)?,
        None => walk.last_before_deletion()?,
    };
    // The state database keeps a literal content by reference only
    // (`Content::kept`): such a version is read from the grid again.
    let reread;
    let chosen = if chosen.content.is_by_reference() {
        reread = snapshot_info(None, &walk.executor, &chosen.cap, &rel)
            .await?
            .map_err(|e| anyhow!("version {}: {e}", version_id(&chosen.cap)))?;
        &reread
    } else {
        chosen
    };
    let version = walk
        .history
        .versions
        .iter()
        .find(|v| v.id == version_id(&chosen.cap))
        .cloned()
        .ok_or_else(|| anyhow!("internal: chosen version is not in the history"))?;
    if matches!(chosen.content, Content::Deleted) {
        bail!(
            "version {} of {rel} is a deletion: choose a version with content (`magic-folder history {rel}`)",
            version.id
        );
    }
    if let Content::File { cap, .. } = &chosen.content {
        // Said before anything is touched: `gc` removes the content of
        // versions outside the retention (their history stays).
        let content = mf_grid::Capability::parse(cap.as_str())
            .map_err(|e| anyhow!("version {}: {e}", version.id))?;
        let gone = match content.kind() {
            mf_grid::CapKind::ImmutableDir => walk.grid.list(&content).await.err(),
            _ => walk.grid.download(&content).await.err(),
        };
        if let Some(mf_grid::GridError::NotFound(_)) = gone {
            bail!(
                "the content of version {} of {rel} is no longer on the grid: `gc` removed it                  (it was outside the retention); its history is kept",
                version.id
            );
        }
    }
    let expect = {
        let (root, t) = (cfg.local_path.clone(), target.clone());
        tokio::task::spawn_blocking(move || fsops::stat(&root, &t))
            .await
            .map_err(|e| anyhow!("{e}"))?
            .map_err(|e| anyhow!("cannot look at {target}: {e}"))?
    };
    if expect == LocalState::Dir && !matches!(chosen.content, Content::Dir) {
        bail!("{target} is a directory; restore the file elsewhere with --to");
    }
    // Now, not the version's own time: the restore is a new edit, and the
    // daemon must see it as one.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let written = walk
        .executor
        .execute(Action::Write {
            op: OpId(0),
            target: target.clone(),
            content: chosen.content.clone(),
            mtime_s: now,
            expect,
        })
        .await;
    match written {
        Event::Written {
            result: WriteOutcome::Done(_),
            ..
        } => {}
        Event::Written {
            result: WriteOutcome::Changed(_),
            ..
        } => bail!("{target} changed while the version was being restored; nothing was replaced, try again"),
        Event::Written {
            result: WriteOutcome::Failed(e),
            ..
        } => bail!("cannot restore {target}: {}", e.message),
        other => bail!("cannot restore {target}: unexpected result {other:?}"),
    }
    Ok(RestoreOutcome {
        folder: cfg.name.clone(),
        version,
        target: target.to_string(),
        daemon_notified: super::status::tell_daemon_of_local_change(config, &cfg.name).await,
    })
}

/// One deleted path.
#[derive(Clone, Debug, Serialize)]
pub struct Deleted {
    /// The folder.
    pub folder: String,
    /// The path, relative to the folder.
    pub path: String,
    /// Who deleted it.
    pub by: String,
    /// When, Unix seconds.
    pub time: i64,
}

/// `deleted [--folder NAME] [--since DURATION]`: paths whose current version
/// is a deletion, newest first, from what this device knows.
pub fn deleted(
    config: &ConfigDir,
    folder: Option<&str>,
    since: Option<Duration>,
) -> anyhow::Result<Vec<Deleted>> {
    config.require_initialised()?;
    let folders = match folder {
        Some(n) => vec![config.load_folder(n)?],
        None => config.load_folders()?,
    };
    let cutoff = since.map(|d| {
        SystemTime::now()
            .checked_sub(d)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs() as i64
    });
    let mut out = Vec::new();
    for cfg in folders {
        let db = config.state_db(&cfg.name);
        if !db.exists() {
            continue;
        }
        let reader = StateReader::open(&db)?;
        for (path, cur) in reader.current_entries()? {
            if cur.local != LocalState::Absent || path.is_internal() {
                continue;
            }
            let Some(info) = reader.snapshot(&cur.snapshot)? else {
                continue;
            };
            if !matches!(info.content, Content::Deleted) || cutoff.is_some_and(|c| info.mtime_s < c)
            {
                continue;
            }
            out.push(Deleted {
                folder: cfg.name.clone(),
                path: path.to_string(),
                by: info.author,
                time: info.mtime_s,
            });
        }
    }
    out.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.path.cmp(&b.path)));
    Ok(out)
}

/// A finished walk of a path's DAG.
struct Walk {
    history: History,
    infos: BTreeMap<Cap, SnapshotInfo>,
    executor: Executor<AnyGrid>,
    grid: Arc<AnyGrid>,
    current: Option<Cap>,
}

impl Walk {
    async fn run(config: &ConfigDir, cfg: &FolderConfig, rel: &RelPath) -> anyhow::Result<Walk> {
        let grid = AnyGrid::open(&cfg.grid, &cfg.convergence_secret, OpenMode::MustExist)?;
        let grid = Arc::new(grid);
        let executor = crate::folder::executor(cfg, grid.clone()).map_err(|e| anyhow!(e))?;
        let db = config.state_db(&cfg.name);
        let reader = if db.exists() {
            Some(StateReader::open(&db)?)
        } else {
            None
        };

        // Every version anyone keeps of the path.
        let mut shown: BTreeMap<Cap, &'static str> = BTreeMap::new();
        let mut current = None;
        if let Some(r) = &reader {
            let loaded = r.load()?;
            if let Some(c) = loaded.current.get(rel) {
                shown.insert(c.snapshot.clone(), "current");
                current = Some(c.snapshot.clone());
            }
            for c in loaded.conflicts.iter().filter(|c| &c.path == rel) {
                if c.copy.is_some() && !c.resolved {
                    shown.entry(c.snapshot.clone()).or_insert("conflict copy");
                }
            }
        }
        let mut starts: Vec<Cap> = shown.keys().cloned().collect();
        let mut problems = Vec::new();
        match executor.execute(Action::Poll).await {
            Event::Polled(Ok(listings)) => {
                for l in listings {
                    match l.entries {
                        Ok(entries) => starts.extend(
                            entries
                                .into_values()
                                .filter(|(p, _)| p == rel)
                                .map(|(_, cap)| cap),
                        ),
                        Err(e) => problems.push(format!(
                            "cannot list {}'s versions: {}",
                            l.participant, e.message
                        )),
                    }
                }
            }
            Event::Polled(Err(e)) => problems.push(format!("cannot list the participants: {e}")),
            other => bail!("unexpected poll result {other:?}"),
        }

        // Breadth-first through the parents, each snapshot once.
        let mut infos: BTreeMap<Cap, SnapshotInfo> = BTreeMap::new();
        let mut seen: BTreeSet<Cap> = BTreeSet::new();
        let mut queue: VecDeque<Cap> = starts.into_iter().collect();
        while let Some(cap) = queue.pop_front() {
            if !seen.insert(cap.clone()) {
                continue;
            }
            let cached = reader
                .as_ref()
                .map(|r| r.snapshot(&cap))
                .transpose()?
                .flatten();
            let info = match snapshot_info(cached, &executor, &cap, rel).await? {
                Ok(i) => i,
                Err(e) => {
                    problems.push(format!("version {} cannot be read: {e}", version_id(&cap)));
                    continue;
                }
            };
            queue.extend(info.parents.iter().cloned());
            infos.insert(cap, info);
        }
        if infos.is_empty() && problems.is_empty() {
            bail!(
                "{rel} has no history in folder {:?}: no participant ever synchronised it",
                cfg.name
            );
        }
        let versions = order(&infos, &shown);
        Ok(Walk {
            history: History {
                folder: cfg.name.clone(),
                path: rel.to_string(),
                versions,
                problems,
            },
            infos,
            executor,
            grid,
            current,
        })
    }

    /// The version whose id starts with `id`.
    fn find(&self, id: &str) -> anyhow::Result<&SnapshotInfo> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{id:?} is not a version id (at least 4 hex digits, as `history` shows them)");
        }
        let found: Vec<&SnapshotInfo> = self
            .infos
            .values()
            .filter(|i| version_id(&i.cap).starts_with(&id))
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => bail!(
                "{} has no version {id} (`magic-folder history {}` lists them)",
                self.history.path,
                self.history.path
            ),
            _ => bail!(
                "{id} names several versions of {}: give more digits",
                self.history.path
            ),
        }
    }

    /// For a deleted path, the version the deletion replaced.
    fn last_before_deletion(&self) -> anyhow::Result<&SnapshotInfo> {
        let path = &self.history.path;
        let cur = self
            .current
            .as_ref()
            .and_then(|c| self.infos.get(c))
            .ok_or_else(|| {
                anyhow!(
                    "choose a version of {path} with --version (see `magic-folder history {path}`)"
                )
            })?;
        if !matches!(cur.content, Content::Deleted) {
            bail!("{path} is not deleted: choose the version to restore with --version (see `magic-folder history {path}`)");
        }
        cur.parents
            .iter()
            .filter_map(|p| self.infos.get(p))
            .filter(|i| !matches!(i.content, Content::Deleted))
            .max_by_key(|i| i.mtime_s)
            .ok_or_else(|| anyhow!("no earlier version of {path} can be read to restore"))
    }
}

/// A snapshot of `path`: `cached` (from the state database) if this device
/// knows it, else fetched from the grid and verified as any remote one
/// (signature, path). The inner error says why it cannot be read.
pub(super) async fn snapshot_info(
    cached: Option<SnapshotInfo>,
    executor: &Executor<AnyGrid>,
    cap: &Cap,
    path: &RelPath,
) -> anyhow::Result<Result<SnapshotInfo, String>> {
    if let Some(info) = cached {
        return Ok(Ok(info));
    }
    match executor
        .execute(Action::Fetch {
            cap: cap.clone(),
            listed_as: path.clone(),
        })
        .await
    {
        Event::Fetched { result, .. } => Ok(result.map_err(|e| e.message)),
        other => bail!("unexpected fetch result {other:?}"),
    }
}

/// Orders versions newest first, every version before its parents (by the
/// length of the history behind it, then time).
fn order(infos: &BTreeMap<Cap, SnapshotInfo>, shown: &BTreeMap<Cap, &'static str>) -> Vec<Version> {
    // The length of the history behind each version, parents first (an
    // explicit stack: histories can be long). Parents that could not be
    // read count 0; so does a cycle, which only a hostile grid could make.
    let mut depth: BTreeMap<&Cap, u64> = BTreeMap::new();
    for start in infos.keys() {
        let mut stack = vec![start];
        while let Some(&top) = stack.last() {
            if depth.contains_key(top) {
                stack.pop();
                continue;
            }
            let parents = &infos[top].parents;
            let todo: Vec<&Cap> = parents
                .iter()
                .filter(|p| infos.contains_key(*p) && !depth.contains_key(*p))
                .filter(|p| !stack.contains(p))
                .collect();
            if todo.is_empty() {
                let d = 1 + parents
                    .iter()
                    .filter_map(|p| depth.get(p))
                    .max()
                    .unwrap_or(&0);
                depth.insert(top, d);
                stack.pop();
            } else {
                stack.extend(todo);
            }
        }
    }
    let mut children: BTreeMap<&Cap, usize> = BTreeMap::new();
    for info in infos.values() {
        for p in &info.parents {
            *children.entry(p).or_insert(0) += 1;
        }
    }
    let mut list: Vec<&SnapshotInfo> = infos.values().collect();
    list.sort_by(|a, b| {
        (depth[&b.cap], b.mtime_s, &b.cap).cmp(&(depth[&a.cap], a.mtime_s, &a.cap))
    });
    list.into_iter()
        .map(|i| Version {
            id: version_id(&i.cap),
            author: i.author.clone(),
            time: i.mtime_s,
            kind: match i.content {
                Content::File { .. } => "file",
                Content::Dir => "directory",
                Content::Deleted => "deleted",
            },
            size: match i.content {
                Content::File { size, .. } => Some(size),
                _ => None,
            },
            parents: i.parents.iter().map(version_id).collect(),
            shown_as: shown.get(&i.cap).copied(),
            diverged: children.get(&i.cap).copied().unwrap_or(0) > 1,
        })
        .collect()
}
