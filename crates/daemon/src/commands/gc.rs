//! `gc`: space back from an embedded grid.
//!
//! What may go is decided from the snapshot graphs of every folder this
//! device has on that grid, read from the grid itself:
//!
//! * **kept whole**: every version some participant's directory lists
//!   (current versions and conflict losers), every version this device
//!   records (including ones it has not published yet), and older versions
//!   of a file within the retention — the folder's versions policy (30 days
//!   and 10 versions per file by default) unless `--keep-versions-for` /
//!   `--keep-versions` say otherwise;
//! * **kept as history**: the snapshot and metadata objects of every
//!   version, however old (a few hundred bytes each) — so `history` stays
//!   complete and every parent stays provable (ranks are proved from the
//!   parents, `engine/rank.rs`); only the *content* of versions outside the
//!   retention goes;
//! * **orphans** — objects no version references, left by interrupted
//!   uploads — go too, but only when every mutable directory in the grid
//!   belongs to a folder this device knows: the objects of a folder we
//!   cannot read would look like orphans.
//!
//! Against writers running meanwhile (daemons on this machine or on others
//! sharing the directory): an object goes only if it was neither written
//! nor found again by an upload for `--grace` (1 day by default), checked
//! by the grid at the moment of removal (`mf_grid::embedded` `upkeep`).
//! A writer that re-uploads content gc is about to remove (a file restored
//! to an old content) refreshes the object first, so it stays; a writer
//! publishes a new version within seconds of uploading it, well inside the
//! grace. The one case beyond it — a device that stopped between uploading
//! a version and publishing it and publishes it more than the grace later —
//! is what `verify` finds (and, with the file still on disk, repairs).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use mf_core::relpath::RelPath;
use mf_core::snapshot::{parse_entry_name, Cap, Content, SnapshotInfo};
use mf_grid::embedded::EmbeddedGrid;
use mf_grid::{CapKind, Capability, Grid, GridError};

use crate::pack::{PackCache, SnapshotRef};
use crate::personal::{
    folder_tag, moved_to, parse_shard_link, read_shard, ShardId, MOVED_FROM_ENTRY,
};
use mf_state::StateReader;
use serde::Serialize;

use super::grid::{AnyGrid, OpenMode};
use crate::config::{ConfigDir, FolderConfig, GridLocation};

/// Objects untouched for less than this are never removed by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// How `gc` chooses.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Keep the content of older versions this young (default: each
    /// folder's `keep-versions-for`).
    pub keep_for: Option<Duration>,
    /// Keep the content of this many older versions per file (default: each
    /// folder's `keep-versions`).
    pub keep_versions: Option<usize>,
    /// Never remove an object written or found again within this time.
    pub grace: Duration,
    /// Only say what would be removed.
    pub dry_run: bool,
}

/// What `gc` did on one grid.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    /// The grid directory.
    pub grid: PathBuf,
    /// The folders whose versions were walked.
    pub folders: Vec<String>,
    /// Versions found (every snapshot reachable from every participant).
    pub versions: u64,
    /// Of those, versions whose content is outside the retention.
    pub versions_pruned: u64,
    /// Objects stored in the grid before.
    pub objects: u64,
    /// Objects removed (or, with `--dry-run`, that would be).
    pub removed: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects that could go but were written or found again within the
    /// grace period.
    pub spared: u64,
    /// Whether objects no version references were collected.
    pub orphans_collected: bool,
    /// Why not, and anything else worth knowing.
    pub notes: Vec<String>,
    /// What stopped gc from removing anything.
    pub problems: Vec<String>,
    /// Nothing was removed: `--dry-run`.
    pub dry_run: bool,
}

/// `gc [FOLDER]`: every embedded grid of this device's folders, or the one
/// `FOLDER` is on — each with all of this device's folders on it.
pub async fn gc(
    config: &ConfigDir,
    folder: Option<&str>,
    options: &GcOptions,
) -> anyhow::Result<Vec<GcReport>> {
    config.require_initialised()?;
    let all = config.load_folders()?;
    let mut grids: BTreeMap<PathBuf, Vec<FolderConfig>> = BTreeMap::new();
    for cfg in &all {
        if let GridLocation::Embedded { dir } = &cfg.grid {
            let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
            grids.entry(dir).or_default().push(cfg.clone());
        }
    }
    if let Some(name) = folder {
        let cfg = config.load_folder(name)?;
        let GridLocation::Embedded { dir } = &cfg.grid else {
            anyhow::bail!(
                "folder {name:?} is on a Tahoe-LAFS grid: there, storage servers reclaim space \
                 by their own lease expiry; `gc` is for the embedded grid"
            );
        };
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        grids.retain(|d, _| *d == dir);
    }
    let mut reports = Vec::new();
    for (dir, folders) in grids {
        reports.push(gc_grid(config, dir, folders, options).await?);
    }
    Ok(reports)
}

async fn gc_grid(
    config: &ConfigDir,
    dir: PathBuf,
    folders: Vec<FolderConfig>,
    options: &GcOptions,
) -> anyhow::Result<GcReport> {
    let mut report = GcReport {
        grid: dir,
        folders: folders.iter().map(|f| f.name.clone()).collect(),
        dry_run: options.dry_run,
        ..Default::default()
    };
    let now = SystemTime::now();
    // Taken before anything is read: whatever is written after it is spared.
    let cutoff = now.checked_sub(options.grace).unwrap_or(UNIX_EPOCH);
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut prunable: BTreeSet<String> = BTreeSet::new();
    let mut known_mutables: BTreeSet<String> = BTreeSet::new();
    let mut handle = None;
    for cfg in &folders {
        let grid = AnyGrid::open(&cfg.grid, &cfg.convergence_secret, OpenMode::MustExist)?;
        let AnyGrid::Embedded(embedded) = &grid else {
            unreachable!("grouped by embedded grid directory")
        };
        handle.get_or_insert_with(|| embedded.clone());
        let mut walk = Walk::run(config, cfg, Arc::new(grid.clone())).await?;
        report.problems.extend(std::mem::take(&mut walk.problems));
        report.versions += walk.infos.len() as u64;
        known_mutables.extend(std::mem::take(&mut walk.mutables));
        live.extend(std::mem::take(&mut walk.skeleton));
        let policy = Retention {
            keep_for: options
                .keep_for
                .unwrap_or(Duration::from_millis(cfg.versions_max_age_ms)),
            keep_versions: options.keep_versions.unwrap_or(cfg.versions_per_file),
        };
        let (kept, pruned, versions) = policy.split(&walk, now);
        report.versions_pruned += versions;
        live.extend(kept);
        prunable.extend(pruned);
    }
    let Some(grid) = handle else {
        return Ok(report);
    };
    prunable.retain(|o| !live.contains(o));
    let stored = grid.stored_objects().await?;
    report.objects = stored.len() as u64;
    let unknown = grid
        .mutable_names()
        .await?
        .into_iter()
        .filter(|m| !known_mutables.contains(m))
        .count();
    report.orphans_collected = unknown == 0 && report.problems.is_empty();
    if unknown > 0 {
        report.notes.push(format!(
            "{unknown} mutable director{} in this grid belong to no folder of this device \
             (another device's folder, or a participant that left): objects no version of \
             ours references are kept, as they may be that folder's",
            if unknown == 1 { "y" } else { "ies" }
        ));
    }
    if !report.problems.is_empty() {
        report.notes.push(
            "nothing was removed: a version that cannot be read could reference any object \
             (`magic-folder verify` tells more)"
                .into(),
        );
        return Ok(report);
    }
    let mut doomed = Vec::new();
    for o in &stored {
        let wanted =
            prunable.contains(&o.name) || (report.orphans_collected && !live.contains(&o.name));
        if !wanted {
            continue;
        }
        if o.modified >= cutoff {
            report.spared += 1;
        } else if options.dry_run {
            report.removed += 1;
            report.bytes += o.len;
        } else {
            doomed.push(o.name.clone());
        }
    }
    if !doomed.is_empty() {
        let done = grid.collect(doomed, cutoff).await?;
        report.removed = done.removed;
        report.bytes = done.bytes;
        report.spared += done.spared;
    }
    Ok(report)
}

/// Which older versions keep their content.
struct Retention {
    keep_for: Duration,
    keep_versions: usize,
}

impl Retention {
    /// Splits the content objects of `infos` into kept and prunable (stored
    /// names), and counts the versions whose content is prunable. Heads
    /// always keep theirs.
    fn split(&self, walk: &Walk, now: SystemTime) -> (BTreeSet<String>, BTreeSet<String>, u64) {
        // In milliseconds: a version's time is whole seconds, the age
        // limit need not be.
        let young_ms = now
            .checked_sub(self.keep_for)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i128;
        let objects = |info: &SnapshotInfo| match &info.content {
            Content::File { cap, .. } => walk.contents.get(cap).map(Vec::as_slice),
            _ => None,
        };
        let mut older: BTreeMap<&RelPath, Vec<&SnapshotInfo>> = BTreeMap::new();
        let (mut kept, mut pruned, mut count) = (BTreeSet::new(), BTreeSet::new(), 0);
        for info in walk.infos.values() {
            let Some(names) = objects(info) else {
                continue;
            };
            if walk.heads.contains(&info.cap) {
                kept.extend(names.iter().cloned());
            } else {
                older.entry(&info.relpath).or_default().push(info);
            }
        }
        for mut versions in older.into_values() {
            versions.sort_by(|a, b| (b.mtime_s, &b.cap).cmp(&(a.mtime_s, &a.cap)));
            for (i, info) in versions.into_iter().enumerate() {
                let Some(names) = objects(info) else {
                    continue;
                };
                if i < self.keep_versions || i128::from(info.mtime_s) * 1000 >= young_ms {
                    kept.extend(names.iter().cloned());
                } else {
                    pruned.extend(names.iter().cloned());
                    count += 1;
                }
            }
        }
        (kept, pruned, count)
    }
}

/// The stored names of a content's objects: the one file, or a chunk list
/// and its chunks (`crate::chunked`). A chunk list an earlier `gc` removed
/// names only itself: its chunks went with it, or are some kept version's.
async fn content_objects(grid: &AnyGrid, content: &Capability) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = EmbeddedGrid::object_name(content).into_iter().collect();
    if content.kind() == CapKind::ImmutableDir {
        match grid.list(content).await {
            Ok(chunks) => names.extend(
                chunks
                    .values()
                    .filter_map(|c| EmbeddedGrid::object_name(&c.cap)),
            ),
            Err(GridError::NotFound(_)) => {}
            Err(e) => return Err(format!("its chunk list cannot be read: {e}")),
        }
    }
    Ok(names)
}

/// Every version of one folder, read from the grid.
struct Walk {
    infos: BTreeMap<Cap, SnapshotInfo>,
    /// Versions someone keeps as current or as a conflict copy.
    heads: BTreeSet<Cap>,
    /// Stored names of every snapshot and metadata object.
    skeleton: BTreeSet<String>,
    /// Stored names of each file content's objects.
    contents: BTreeMap<Cap, Vec<String>>,
    /// Stored names of the folder's mutable directories.
    mutables: BTreeSet<String>,
    problems: Vec<String>,
}

impl Walk {
    async fn run(
        config: &ConfigDir,
        cfg: &FolderConfig,
        grid: Arc<AnyGrid>,
    ) -> anyhow::Result<Walk> {
        let executor = crate::folder::executor(cfg, grid.clone()).map_err(|e| anyhow!(e))?;
        // A pack is listed once for all its members.
        let packs = PackCache::default();
        let mut walk = Walk {
            infos: BTreeMap::new(),
            heads: BTreeSet::new(),
            skeleton: BTreeSet::new(),
            contents: BTreeMap::new(),
            mutables: BTreeSet::new(),
            problems: Vec::new(),
        };
        let name = &cfg.name;
        let tag = folder_tag(&cfg.collective_cap)?;
        let mut queue: VecDeque<(Cap, RelPath)> = VecDeque::new();
        // What this device records, published or not yet.
        let db = config.state_db(name);
        let reader = if db.exists() {
            Some(StateReader::open(&db)?)
        } else {
            None
        };
        if let Some(r) = &reader {
            let loaded = r.load()?;
            for (path, cur) in loaded.current {
                queue.push_back((cur.snapshot, path));
            }
            for c in loaded.conflicts {
                queue.push_back((c.snapshot, c.path));
            }
        }
        // What every participant lists.
        // (And the directory we are moving away from, until the move ends.)
        for cap in [&cfg.collective_cap, &cfg.personal_cap]
            .into_iter()
            .chain(&cfg.moved_from)
        {
            walk.mutables.extend(EmbeddedGrid::mutable_name(cap));
        }
        // Our invites' reply slots are this folder's too.
        for slot in super::invite_codes::reply_slots(config, name)? {
            walk.mutables.extend(EmbeddedGrid::mutable_name(&slot));
        }
        let mut participants: Vec<(String, mf_grid::DirEntry)> = grid
            .list(&cfg.collective_cap)
            .await
            .map_err(|e| anyhow!("folder {name:?}: cannot list the participants: {e}"))?
            .into_iter()
            .collect();
        // While our move is unfinished the collective links only our old
        // directory: the new one's shards are the folder's too.
        if cfg.moved_from.is_some() {
            let ours = mf_grid::read_only(&cfg.personal_cap)?;
            participants.push((cfg.participant.clone(), mf_grid::DirEntry::new(ours)));
        }
        for (participant, entry) in participants {
            if !entry.cap.kind().is_dir() {
                continue;
            }
            // A participant that moved writes where its old directory says
            // (one hop, as readers follow it).
            let mut dir = entry.cap.clone();
            let listing = loop {
                walk.mutables.extend(EmbeddedGrid::mutable_name(&dir));
                let listing = match grid.list_changed(&dir, None).await {
                    Ok(Some(l)) => l,
                    Ok(None) => unreachable!("a first listing is never unchanged"),
                    Err(e) => {
                        walk.problems.push(format!(
                            "folder {name:?}: {participant}'s directory cannot be listed: {e}"
                        ));
                        break None;
                    }
                };
                let why = match moved_to(&listing.children) {
                    None => break Some(listing),
                    Some(Ok(to)) if dir == entry.cap => {
                        dir = to;
                        continue;
                    }
                    Some(Ok(_)) => "the directory it moved to says it moved again".to_owned(),
                    Some(Err(why)) => why,
                };
                walk.problems
                    .push(format!("folder {name:?}: {participant}'s directory: {why}"));
                break None;
            };
            let Some(mut listing) = listing else {
                continue;
            };
            for p in listing.problems {
                walk.problems
                    .push(format!("folder {name:?}: {participant}'s directory: {p}"));
            }
            // The directory it moved from is the folder's, not an orphan's.
            if let Some(old) = listing.children.remove(MOVED_FROM_ENTRY) {
                walk.mutables.extend(EmbeddedGrid::mutable_name(&old.cap));
            }
            let mut children = match crate::executor::with_aside(&*grid, listing.children).await {
                Ok(personal) => {
                    walk.skeleton
                        .extend(personal.aside.as_ref().and_then(EmbeddedGrid::object_name));
                    personal.children
                }
                Err(e) => {
                    walk.problems.push(format!(
                        "folder {name:?}: {participant}'s directories and conflict copies cannot be listed: {e}"
                    ));
                    continue;
                }
            };
            // A sharded directory's shards, and the entries in them (a
            // split one too, until its owner unlinks it).
            let links: Vec<(ShardId, Capability)> = children
                .iter()
                .filter_map(|(n, e)| Some((parse_shard_link(n)?, e.cap.clone())))
                .collect();
            children.retain(|n, _| parse_shard_link(n).is_none());
            for (n, link) in links {
                walk.skeleton.extend(EmbeddedGrid::object_name(&link));
                match read_shard(&*grid, n, &link, &tag).await {
                    Ok(shard) => {
                        for p in shard.problems {
                            walk.problems
                                .push(format!("folder {name:?}: {participant}'s directory: {p}"));
                        }
                        children.extend(shard.entries);
                    }
                    Err(e) => walk.problems.push(format!(
                        "folder {name:?}: {participant}'s shard {n} cannot be read: {e}"
                    )),
                }
            }
            for (entry_name, e) in children {
                match parse_entry_name(&entry_name) {
                    None => {}
                    Some(Ok((path, _))) => match SnapshotRef::of_entry(&e) {
                        Ok(snapshot) => queue.push_back((snapshot.cap(), path)),
                        Err(why) => walk.problems.push(format!(
                            "folder {name:?}: {participant}'s entry {entry_name:?}: {why}"
                        )),
                    },
                    Some(Err(err)) => walk.problems.push(format!(
                        "folder {name:?}: {participant}'s entry {entry_name:?} cannot be read: {err}"
                    )),
                }
            }
        }
        walk.heads = queue.iter().map(|(c, _)| c.clone()).collect();
        // Every ancestor, each once.
        let mut seen = BTreeSet::new();
        while let Some((cap, path)) = queue.pop_front() {
            if !seen.insert(cap.clone()) {
                continue;
            }
            let snapshot = match SnapshotRef::parse(&cap) {
                Ok(s) => s,
                Err(e) => {
                    walk.problems
                        .push(format!("folder {name:?}: a version of {path}: {e}"));
                    continue;
                }
            };
            // A pack is kept whole while any member is known.
            walk.skeleton
                .extend(EmbeddedGrid::object_name(snapshot.dir()));
            match packs.parts(&*grid, &snapshot).await {
                Ok(children) => {
                    if let Some(m) = children.get("metadata") {
                        walk.skeleton.extend(EmbeddedGrid::object_name(&m.cap));
                    }
                }
                Err(e) => {
                    walk.problems.push(format!(
                        "folder {name:?}: a version of {path} cannot be read: {e}"
                    ));
                    continue;
                }
            }
            let cached = reader
                .as_ref()
                .map(|r| r.snapshot(&cap))
                .transpose()?
                .flatten();
            let info = match super::history::snapshot_info(cached, &executor, &cap, &path).await? {
                Ok(i) => i,
                Err(e) => {
                    walk.problems.push(format!(
                        "folder {name:?}: a version of {path} cannot be verified: {e}"
                    ));
                    continue;
                }
            };
            for p in &info.parents {
                queue.push_back((p.clone(), path.clone()));
            }
            if let Content::File { cap: content, .. } = &info.content {
                if !walk.contents.contains_key(content) {
                    let objects = match Capability::parse(content.as_str()) {
                        Ok(c) => content_objects(&grid, &c).await,
                        // The state database keeps a literal by reference
                        // (`Content::kept`): a literal is no object.
                        Err(_) if content.is_literal_ref() => Ok(Vec::new()),
                        Err(e) => Err(e.to_string()),
                    };
                    match objects {
                        Ok(names) => {
                            walk.contents.insert(content.clone(), names);
                        }
                        Err(e) => walk.problems.push(format!(
                            "folder {name:?}: the content of a version of {path}: {e}"
                        )),
                    }
                }
            }
            walk.infos.insert(cap, info);
        }
        Ok(walk)
    }
}
