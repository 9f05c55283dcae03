//! `participants list|add|remove`: the collective's members, for the CLI
//! and the API alike.
//!
//! A participant is a collective entry: name → the read capability of
//! their personal directory (or, for one who may only read, an empty
//! immutable directory, as magic-folder 24.3 records one). Only the admin,
//! who holds the collective's write capability, adds and removes. Removing
//! a participant takes their entry out of the collective: nobody polls
//! their directory any more, so nothing they publish later reaches anyone.
//! (What they published before stays: it is history.)

use crate::personal::METADATA_ENTRY;
use mf_core::relpath::check_participant_name;
use mf_grid::{read_only, CapKind, Capability, DirChildren, DirEntry, Grid, GridError, Replace};
use serde::Serialize;

use super::grid::{AnyGrid, OpenMode};
use crate::config::FolderConfig;

/// One member of a folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Participant {
    /// Their name in the collective.
    pub name: String,
    /// Their personal directory's read capability (an immutable directory
    /// for one who may only read).
    pub personal_dmd: String,
    /// `read-write` or `read-only`.
    pub mode: &'static str,
    /// This is us.
    pub is_self: bool,
}

/// Why a membership change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The request cannot be carried out as asked (a bad name or
    /// capability, not the admin, a name taken or unknown).
    #[error("{0}")]
    Refused(String),
    /// The grid failed.
    #[error("{0}")]
    Grid(#[from] GridError),
    /// The folder or its grid could not be opened.
    #[error("{0:#}")]
    Open(anyhow::Error),
}

fn refused(why: impl Into<String>) -> MembershipError {
    MembershipError::Refused(why.into())
}

fn open(cfg: &FolderConfig) -> Result<AnyGrid, MembershipError> {
    AnyGrid::open(&cfg.grid, &cfg.convergence_secret, OpenMode::MustExist)
        .map_err(MembershipError::Open)
}

/// The folder's members, by name.
pub async fn list(cfg: &FolderConfig) -> Result<Vec<Participant>, MembershipError> {
    let own = read_only(&cfg.personal_cap).ok();
    let members = open(cfg)?.list(&cfg.collective_cap).await?;
    Ok(members
        .into_iter()
        .filter(|(n, _)| n != METADATA_ENTRY)
        .map(|(name, e)| Participant {
            mode: if e.cap.kind() == CapKind::MutableDirRead {
                "read-write"
            } else {
                "read-only"
            },
            // Until the admin links the directory we moved to (see
            // `crate::convert`), the collective links our old one.
            is_self: Some(&e.cap) == own.as_ref() || name == cfg.participant,
            personal_dmd: e.cap.as_str().to_owned(),
            name,
        })
        .collect())
}

/// Adds `name` with the personal directory whose read capability is
/// `personal_dmd` (24.3's `add-participant`).
pub async fn add(
    cfg: &FolderConfig,
    name: &str,
    personal_dmd: &str,
) -> Result<(), MembershipError> {
    check_participant_name(name)
        .map_err(|e| refused(format!("invalid participant name {name:?}: {e}")))?;
    let cap = Capability::parse(personal_dmd)
        .ok()
        .filter(|c| c.kind() == CapKind::MutableDirRead)
        .ok_or_else(|| refused("personal_dmd must be a read-only directory capability."))?;
    if cap.scheme() != cfg.collective_cap.scheme() {
        return Err(refused(
            "personal_dmd is a capability of another kind of grid than this folder's",
        ));
    }
    require_admin(cfg, "add")?;
    let grid = open(cfg)?;
    let members = grid.list(&cfg.collective_cap).await?;
    if let Some((other, _)) = members.iter().find(|(_, e)| e.cap == cap) {
        return Err(refused(format!(
            "Already have a participant with that personal directory ({other:?})"
        )));
    }
    let mut entry = DirChildren::new();
    entry.insert(name.to_owned(), DirEntry::new(cap));
    match grid
        .set_children(&cfg.collective_cap, entry, Replace::No)
        .await
    {
        Ok(()) => Ok(()),
        Err(GridError::Exists(n)) => {
            Err(refused(format!("Already have a participant called '{n}'")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` from the collective.
pub async fn remove(cfg: &FolderConfig, name: &str) -> Result<(), MembershipError> {
    require_admin(cfg, "remove")?;
    if name == cfg.participant {
        return Err(refused(
            "you cannot remove yourself; `leave` the folder instead",
        ));
    }
    match open(cfg)?.unlink(&cfg.collective_cap, name).await {
        Ok(()) => Ok(()),
        Err(GridError::NoChild(_)) => Err(refused(format!("no participant called {name:?}"))),
        Err(e) => Err(e.into()),
    }
}

fn require_admin(cfg: &FolderConfig, what: &str) -> Result<(), MembershipError> {
    if cfg.is_admin() {
        Ok(())
    } else {
        Err(refused(format!(
            "only an admin of the folder (holding the collective's write capability) can {what} participants"
        )))
    }
}
