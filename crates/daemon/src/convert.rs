//! Following a folder to a new format (`magic-folder convert`).
//!
//! A folder's format is what its collective's `@metadata` records (see
//! [`crate::format`]); only the admin can write it, and only each
//! participant can write its own personal directory. So a conversion is
//! carried out by everyone: the admin's `convert` records the new format,
//! and every participant's daemon, when it sees it (at start, or at a poll),
//! follows on its own ([`follow`]):
//!
//! * **contents, whole → chunked**: the daemon writes its new versions in
//!   chunks from then on. Nothing is rewritten: readers take either kind.
//! * **layout, flat → sharded**: the daemon stops syncing the folder,
//!   copies the entries of its flat directory into the shards of a new
//!   directory that names the old one ([`MOVED_FROM_ENTRY`]: readers follow
//!   a move only into a directory that does, so nobody can claim another's),
//!   records that directory in its config, and only then leaves a
//!   [`MOVED_ENTRY`] in the old one, naming the new one (the admin links its
//!   new directory in the collective instead). Readers follow that link (see
//!   `Executor::poll`); the admin's daemon, when a poll finds it, and the
//!   admin's `convert`, run again, link the new directory in the collective,
//!   where readers then find it first.
//!   A crash before the config names the new directory leaves an unlinked
//!   directory and the move starts over; a crash after it is finished at the
//!   next start ([`FolderConfig::moved_from`]). The old directory is never
//!   written again, so a reader of either sees every version the owner
//!   published.
//!
//! Formats move only forward: a folder cannot go back to a format a 24.3
//! participant reads, because versions already written in the new one stay.

use std::sync::Arc;

use mf_core::engine::{Action, EntryShape, Event, OpId, PublishEntry};
use mf_core::snapshot::parse_entry_name;
use mf_grid::{Capability, DirChildren, DirEntry, Grid, GridError, Replace};
use tracing::{info, warn};

use crate::chunked::ContentFormat;
use crate::config::{ConfigDir, FolderConfig, GridLocation};
use crate::executor::with_aside;
use crate::format::FolderFormat;
use crate::pack::SnapshotRef;
use crate::pack::Snapshots;
use crate::personal::{
    moved_from, Layout, METADATA_ENTRY, MOVED_ENTRY, MOVED_FROM_ENTRY, NOT_ITS_OWN,
};

/// The format `convert` moves a folder on `grid` from `from` to: chunked
/// contents and packed snapshots, in `layout`, by default the sharded layout on Tahoe (where a
/// flat directory costs O(folder) per change) and the folder's own on the
/// embedded grid (where flat is the faster: see BENCHMARKS.md).
pub fn target(grid: &GridLocation, from: FolderFormat, layout: Option<Layout>) -> FolderFormat {
    let layout = layout.unwrap_or(match grid {
        GridLocation::Tahoe { .. } => Layout::Sharded,
        GridLocation::Embedded { .. } => from.layout,
    });
    FolderFormat {
        layout,
        content: ContentFormat::Chunked,
        // A folder stays packed (a daemon cannot move back).
        snapshots: match from.snapshots {
            Snapshots::Packed => Snapshots::Packed,
            Snapshots::Single => Snapshots::for_layout(layout),
        },
    }
}

/// Whether a daemon can follow a folder from `from` to `to`.
pub fn can_move(from: FolderFormat, to: FolderFormat) -> Result<(), String> {
    let layout_ok = from.layout == to.layout || from.layout == Layout::Flat;
    let content_ok = from.content == to.content || from.content == ContentFormat::Whole;
    let snapshots_ok = from.snapshots == to.snapshots || from.snapshots == Snapshots::Single;
    if layout_ok && content_ok && snapshots_ok {
        Ok(())
    } else {
        Err(format!(
            "the folder's format changed from {} to {}, which this daemon cannot follow: \
             a folder moves only from the flat to the sharded layout, from whole to \
             chunked contents and from single to packed snapshots",
            describe(from),
            describe(to)
        ))
    }
}

/// "flat layout, whole contents, single snapshots".
pub fn describe(format: FolderFormat) -> String {
    format!(
        "{} layout, {} contents, {} snapshots",
        format.layout, format.content, format.snapshots
    )
}

/// Brings `cfg` up to the format its collective records: finishes a move
/// a crash interrupted, then moves our directory if the folder moved on.
/// Returns the config to run with (saved in `config`). If the grid cannot
/// be read the folder runs as it is (its polls notice the format later),
/// unless a poll found the format `changed`: then that is an error, as is a
/// format this release does not know.
pub async fn follow<G: Grid>(
    config: &ConfigDir,
    cfg: FolderConfig,
    grid: &Arc<G>,
    changed: bool,
) -> Result<FolderConfig, String> {
    let mut cfg = finish_move(config, cfg, &**grid).await?;
    let format = match read_format(&**grid, &cfg).await {
        Ok(f) => f,
        Err(e) if !changed && e.downcast_ref::<GridError>().is_some() => {
            warn!("cannot read the folder's format ({e:#}); syncing as before");
            return Ok(cfg);
        }
        Err(e) => return Err(format!("cannot read the folder's format: {e:#}")),
    };
    let ours = cfg.format();
    if format == ours {
        return Ok(cfg);
    }
    can_move(ours, format)?;
    info!("the folder moved to the {}; following it", describe(format));
    if format.layout != cfg.layout {
        cfg = move_own_directory(grid, &cfg, format).await?;
        save(config, &cfg)?;
        cfg = finish_move(config, cfg, &**grid).await?;
    } else {
        cfg.content = format.content;
        cfg.snapshots = format.snapshots;
        save(config, &cfg)?;
    }
    Ok(cfg)
}

async fn read_format<G: Grid>(grid: &G, cfg: &FolderConfig) -> anyhow::Result<FolderFormat> {
    let collective = grid.list(&cfg.collective_cap).await?;
    FolderFormat::of_collective(grid, &collective).await
}

fn save(config: &ConfigDir, cfg: &FolderConfig) -> Result<(), String> {
    config
        .update_folder(cfg)
        .map_err(|e| format!("cannot save the folder's config: {e}"))
}

/// Writes our entries into the shards of a new personal directory in
/// `format`'s layout, and returns the config that writes there, with the
/// old directory in `moved_from` (not yet saved: nothing names the new
/// directory until the caller saves it).
pub async fn move_own_directory<G: Grid>(
    grid: &Arc<G>,
    cfg: &FolderConfig,
    format: FolderFormat,
) -> Result<FolderConfig, String> {
    let failed = |what: &str, e: &dyn std::fmt::Display| format!("cannot {what}: {e}");
    let mut listed = grid
        .list(&cfg.personal_cap)
        .await
        .map_err(|e| failed("list our personal directory", &e))?;
    listed.remove(MOVED_ENTRY);
    let ours = with_aside(&**grid, listed)
        .await
        .map_err(|e| failed("list our directories and conflict copies", &e))?;
    // Every entry a reader decodes. (In shards an entry's shape does not
    // matter: nothing goes aside.)
    let entries: Vec<PublishEntry> = ours
        .children
        .into_iter()
        .filter(|(name, _)| matches!(parse_entry_name(name), Some(Ok(_))))
        .filter_map(|(name, entry)| match SnapshotRef::of_entry(&entry) {
            Ok(snapshot) => Some(PublishEntry {
                name,
                snapshot: snapshot.cap(),
                shape: EntryShape::File,
            }),
            // Nothing a reader could take: left behind, and said so.
            Err(why) => {
                warn!("our entry {name:?} is not moved: {why}");
                None
            }
        })
        .collect();
    let new_dir = grid
        .create_mutable_dir()
        .await
        .map_err(|e| failed("create our new personal directory", &e))?;
    // The new directory names the old one, so that nobody else can claim it.
    let old_read = mf_grid::read_only(&cfg.personal_cap)
        .map_err(|e| failed("derive our personal directory's read capability", &e))?;
    let mut from = DirChildren::new();
    from.insert(MOVED_FROM_ENTRY.to_owned(), DirEntry::new(old_read));
    grid.set_children(&new_dir, from, Replace::Yes)
        .await
        .map_err(|e| failed("write our new personal directory", &e))?;
    let mut moved = cfg.clone();
    moved.moved_from = Some(cfg.personal_cap.clone());
    moved.personal_cap = new_dir;
    moved.layout = format.layout;
    moved.content = format.content;
    moved.snapshots = format.snapshots;
    let count = entries.len();
    let executor = crate::folder::executor(&moved, grid.clone())?;
    let published = executor
        .execute(Action::Publish {
            op: OpId(0),
            entries,
        })
        .await;
    match published {
        Event::Published { result: Ok(()), .. } => {}
        Event::Published { result: Err(e), .. } => {
            return Err(failed("write our new personal directory", &e.message))
        }
        other => unreachable!("a publish ends in Published, not {other:?}"),
    }
    info!(
        entries = count,
        "our entries are in our new personal directory"
    );
    Ok(moved)
}

/// Tells readers where we moved, then forgets the old directory. The admin
/// links the new directory in the collective; anyone else leaves the link
/// in the directory it moved away from (on Tahoe that rewrites the whole
/// old directory once, which the admin spares itself). Nothing to do unless
/// a move is under way.
async fn finish_move<G: Grid>(
    config: &ConfigDir,
    mut cfg: FolderConfig,
    grid: &G,
) -> Result<FolderConfig, String> {
    let Some(old) = cfg.moved_from.clone() else {
        return Ok(cfg);
    };
    let failed = |e: GridError| format!("cannot finish moving our personal directory: {e}");
    let new_read = mf_grid::read_only(&cfg.personal_cap).map_err(failed)?;
    let (dir, name) = if cfg.is_admin() {
        (&cfg.collective_cap, cfg.participant.clone())
    } else {
        (&old, MOVED_ENTRY.to_owned())
    };
    let mut link = DirChildren::new();
    link.insert(name, DirEntry::new(new_read));
    grid.set_children(dir, link, Replace::Yes)
        .await
        .map_err(failed)?;
    cfg.moved_from = None;
    save(config, &cfg)?;
    info!("moved to our new personal directory");
    Ok(cfg)
}

/// What `convert` found of one participant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveState {
    /// Its directory is in the new layout and the collective links it.
    Moved,
    /// It moved, and the collective now links its new directory.
    LinkedNow,
    /// Its daemon has not moved it yet (it does when it next runs).
    Waiting,
    /// It has published nothing: nothing to move.
    Empty,
    /// Its directory could not be read, or names no directory of its own.
    Problem(String),
}

/// Links in the collective the new directory of each participant that
/// moved (as the admin, holding `collective` for writing); returns what it
/// found of each participant.
pub async fn link_moved<G: Grid>(
    grid: &G,
    collective: &Capability,
) -> anyhow::Result<Vec<(String, MoveState)>> {
    let members = grid.list(collective).await?;
    let linked: std::collections::HashSet<Capability> =
        members.values().map(|e| e.cap.clone()).collect();
    let mut found = Vec::new();
    let mut relink = DirChildren::new();
    for (name, entry) in members {
        if name == METADATA_ENTRY {
            continue;
        }
        let progress = match grid.list(&entry.cap).await {
            Err(e) => MoveState::Problem(format!("cannot list its directory: {e}")),
            Ok(children) => match crate::personal::moved_to(&children) {
                // (A moved directory with nothing in it yet names only
                // where it came from.)
                None if crate::personal::is_sharded(&children)
                    || moved_from(&children).is_some() =>
                {
                    MoveState::Moved
                }
                None if children.keys().all(|n| n == METADATA_ENTRY) => MoveState::Empty,
                None => MoveState::Waiting,
                Some(Err(why)) => MoveState::Problem(why),
                Some(Ok(to)) if linked.contains(&to) => MoveState::Problem(
                    "it moved into a directory the collective links already".to_owned(),
                ),
                Some(Ok(to)) => match grid.list(&to).await {
                    Ok(new) if moved_from(&new) == Some(&entry.cap) => {
                        relink.insert(name.clone(), DirEntry::new(to));
                        MoveState::LinkedNow
                    }
                    Ok(_) => MoveState::Problem(NOT_ITS_OWN.to_owned()),
                    Err(e) => MoveState::Problem(format!("cannot read its new directory: {e}")),
                },
            },
        };
        found.push((name, progress));
    }
    if !relink.is_empty() {
        grid.set_children(collective, relink, Replace::Yes).await?;
    }
    Ok(found)
}
