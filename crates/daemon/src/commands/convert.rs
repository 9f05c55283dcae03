//! `convert`: moves a folder to chunked contents and, on Tahoe, the
//! sharded layout (the admin only). It records the new format in the collective; every
//! participant's daemon then moves its own directory (see
//! [`crate::convert`]). Run again, it links the moved directories in the
//! collective and says who has not moved yet.

use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use mf_grid::{DirChildren, DirEntry, Grid, Replace, UploadSource};
use serde::Serialize;

use super::grid::{AnyGrid, OpenMode};
use crate::config::{ConfigDir, GridLocation};
use crate::convert::{describe, link_moved, target, MoveState};
use crate::format::FolderFormat;
use crate::personal::{Layout, METADATA_ENTRY};

/// What `convert` did.
#[derive(Clone, Debug, Serialize)]
pub struct ConvertReport {
    /// The folder.
    pub folder: String,
    /// Its format before, as "flat layout, whole contents".
    pub from: String,
    /// Its format now.
    pub to: String,
    /// The collective recorded the new format in this run.
    pub recorded_now: bool,
    /// What was found of each participant, by name.
    pub participants: Vec<(String, MoveState)>,
    /// Seconds the command took.
    pub seconds: f64,
}

/// Converts folder `name` to chunked contents in `layout` (by default the
/// one [`target`] picks for its grid; see the module). A folder a
/// magic-folder 24.3 participant could share (flat, whole contents, on
/// Tahoe) is converted only with `force`: 24.3 reads neither shards, packs nor
/// chunks.
pub async fn convert(
    config: &ConfigDir,
    name: &str,
    layout: Option<Layout>,
    force: bool,
) -> anyhow::Result<ConvertReport> {
    let started = Instant::now();
    let cfg = config.load_folder(name)?;
    if !cfg.is_admin() {
        bail!("only the folder's admin can convert it (folder {name:?})");
    }
    let grid = AnyGrid::open(&cfg.grid, &cfg.convergence_secret, OpenMode::MustExist)?;
    let collective = grid
        .list(&cfg.collective_cap)
        .await
        .context("listing the collective")?;
    let from = FolderFormat::of_collective(&grid, &collective).await?;
    let to = target(&cfg.grid, from, layout);
    crate::convert::can_move(from, to).map_err(|e| anyhow!(e))?;
    let shareable = matches!(cfg.grid, GridLocation::Tahoe { .. })
        && from == FolderFormat::new(Layout::Flat, true);
    if shareable && !force {
        bail!(
            "folder {name:?} is in magic-folder 24.3's format ({}): a 24.3 participant \
             cannot read the {}, and would stop seeing the others' changes. \
             If no 24.3 participant shares it, convert it with --force",
            describe(from),
            describe(to)
        );
    }
    let recorded_now = from != to;
    if recorded_now {
        let metadata = grid
            .upload(UploadSource::Bytes(to.to_metadata().into()))
            .await
            .context("uploading the folder's new metadata")?;
        let mut update = DirChildren::new();
        update.insert(METADATA_ENTRY.to_owned(), DirEntry::new(metadata));
        grid.set_children(&cfg.collective_cap, update, Replace::Yes)
            .await
            .context("recording the new format in the collective")?;
    }
    // Directories move only into the sharded layout. Right after it is
    // recorded nobody has moved yet: no need to list every directory (at
    // O(folder) each on Tahoe) to learn that.
    let participants = if to.layout != Layout::Sharded {
        Vec::new()
    } else if from.layout != Layout::Sharded {
        collective
            .keys()
            .filter(|name| *name != METADATA_ENTRY)
            .map(|name| (name.clone(), MoveState::Waiting))
            .collect()
    } else {
        link_moved(&grid, &cfg.collective_cap)
            .await
            .context("linking the moved directories")?
    };
    Ok(ConvertReport {
        folder: name.to_owned(),
        from: describe(from),
        to: describe(to),
        recorded_now,
        participants,
        seconds: started.elapsed().as_secs_f64(),
    })
}
