//! How a participant's entries are laid out in its personal directory.
//!
//! Two layouts, chosen per folder at `create` and recorded in the
//! collective's `@metadata`, so every participant writes the folder's one
//! layout (readers read each directory by what it holds):
//!
//! * **flat** — magic-folder 24.3's: the personal directory maps each entry
//!   name to its snapshot. On Tahoe a mutable directory is rewritten and read
//!   whole, so in a 100,000-file folder every change costs ~5 s of the
//!   writer's node and every poll that finds one ~11 s of the reader's
//!   (48 MB of JSON). The layout of every folder a 24.3 participant shares.
//! * **sharded** — the entries live in up to [`SHARDS`] immutable directories
//!   (*shards*; an entry's is [`shard_of`] its name), and the personal
//!   directory holds only `@metadata` and a link `@shard-xx` to each
//!   non-empty shard. A change makes new shards for the entries it touches
//!   and swaps their links in one write of the personal directory: a crash
//!   before that write publishes nothing, and the write costs O(256) however
//!   large the folder. A reader lists the personal directory (≤ 257 links)
//!   and only the shards whose link changed — an immutable shard under an
//!   unchanged link holds the same entries.
//!
//! A flat folder moves to the sharded layout with `magic-folder convert`
//! (see [`crate::convert`]): each participant writes its entries into a new,
//! sharded directory, which names the old one ([`MOVED_FROM_ENTRY`]), and
//! then leaves a [`MOVED_ENTRY`] in its old one, naming the new directory. Readers follow that one hop (and the admin's
//! daemon links the new directory in the collective), and a reader reads
//! each directory by what it holds: shard links, or entries.
//!
//! Every shard carries a header entry, [`SHARD_HEADER`], naming its index
//! and its folder; a reader rejects a shard whose header does not match the
//! link that led to it (a leaf of another folder, or of another shard) and
//! any entry filed in the wrong shard, each named in status, and keeps
//! syncing the rest. The layout is two levels deep by construction, so a
//! link cannot lead into a cycle: a shard's entries are snapshots, never
//! followed further as directories.

use std::fmt;

use mf_core::snapshot::shard_of;
pub use mf_core::snapshot::SHARDS;
use mf_grid::{CapKind, Capability, DirChildren, DirEntry, Grid, GridError};
use serde::{Deserialize, Serialize};

/// The name of a directory's own metadata entry (the collective's and each
/// personal directory's).
pub const METADATA_ENTRY: &str = "@metadata";

/// The entry in every shard that names its index and folder (`@` and a
/// letter: never a mangled path).
pub const SHARD_HEADER: &str = "@shard";

const SHARD_LINK_PREFIX: &str = "@shard-";

/// The entry a participant leaves in the personal directory it moved away
/// from: a link to the directory it writes now (`@` and a letter: never a
/// mangled path). Its owner writes nothing there afterwards.
pub const MOVED_ENTRY: &str = "@moved-to";

/// The entry a participant puts in the personal directory it moves to,
/// naming the one it moved from (read capability): a reader follows a
/// [`MOVED_ENTRY`] only into a directory that names, in turn, the directory
/// it came from — which only the owner of both can write.
pub const MOVED_FROM_ENTRY: &str = "@moved-from";

/// Where a personal directory says its owner moved, if it says so: the
/// new directory's read capability, or why the link cannot be one.
pub fn moved_to(children: &DirChildren) -> Option<Result<Capability, String>> {
    let entry = children.get(MOVED_ENTRY)?;
    Some(match entry.cap.kind() {
        CapKind::MutableDirRead => Ok(entry.cap.clone()),
        other => Err(format!(
            "its {MOVED_ENTRY} names no mutable directory's read capability ({other:?})"
        )),
    })
}

/// The directory a personal directory says its owner moved from.
pub fn moved_from(children: &DirChildren) -> Option<&Capability> {
    children.get(MOVED_FROM_ENTRY).map(|e| &e.cap)
}

/// Why a move into a directory that does not name the one it came from is
/// refused.
pub const NOT_ITS_OWN: &str =
    "the directory it moved to does not name its old one (it is not its own)";

/// True if a personal directory is laid out in shards (it links one).
pub fn is_sharded(children: &DirChildren) -> bool {
    children.keys().any(|name| parse_shard_link(name).is_some())
}

/// A folder's personal-directory layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// magic-folder 24.3's: one flat directory per participant.
    #[default]
    Flat,
    /// Entries spread over immutable shards; a change costs O(change).
    Sharded,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Flat => "flat",
            Layout::Sharded => "sharded",
        })
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Layout, String> {
        match s {
            "flat" => Ok(Layout::Flat),
            "sharded" => Ok(Layout::Sharded),
            other => Err(format!("unknown layout {other:?} (flat or sharded)")),
        }
    }
}

/// The folder a shard belongs to, as its header names it: a digest of the
/// collective's read capability (which every participant holds, and which
/// the digest does not reveal).
pub fn folder_tag(collective: &Capability) -> Result<String, GridError> {
    use sha2::{Digest, Sha256};
    let read = mf_grid::read_only(collective)?;
    let mut h = Sha256::new();
    h.update(b"magic-folder shard tag\n");
    h.update(read.as_str().as_bytes());
    Ok(data_encoding::HEXLOWER.encode(&h.finalize()[..16]))
}

/// The personal directory's link to shard `n`.
pub fn shard_link(n: u8) -> String {
    format!("{SHARD_LINK_PREFIX}{n:02x}")
}

/// The shard a personal-directory entry links to, if it is a shard link.
pub fn parse_shard_link(name: &str) -> Option<u8> {
    let hex = name.strip_prefix(SHARD_LINK_PREFIX)?;
    if hex.len() != 2 || hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Shard `n`'s header entry: no object, its index and folder on the edge.
pub fn shard_header(n: u8, folder: &str) -> DirEntry {
    DirEntry {
        cap: Capability::empty(),
        metadata: serde_json::json!({ "shard": format!("{n:02x}"), "folder": folder }),
    }
}

/// A shard as read: its entries, and those it had to leave out, each with
/// the reason.
#[derive(Debug, Default)]
pub struct Shard {
    /// Entry name → snapshot link, each in the right shard.
    pub entries: DirChildren,
    /// Entries rejected (filed in the wrong shard).
    pub problems: Vec<String>,
}

/// Why a shard could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The grid could not give it (retrying may help).
    #[error(transparent)]
    Grid(#[from] GridError),
    /// It is not a shard of this folder at this index.
    #[error("{0}")]
    Invalid(String),
}

impl ShardError {
    /// True when reading it again later may succeed: the grid was away or
    /// did not find it (a Tahoe node does not while its servers reconnect).
    pub fn is_retryable(&self) -> bool {
        match self {
            ShardError::Grid(e) => e.is_transient() || matches!(e, GridError::NotFound(_)),
            ShardError::Invalid(_) => false,
        }
    }
}

/// Reads shard `n` from `cap`, checking that it is an immutable directory
/// whose header names index `n` and `folder`, and that each entry belongs
/// in shard `n`.
pub async fn read_shard<G: Grid>(
    grid: &G,
    n: u8,
    cap: &Capability,
    folder: &str,
) -> Result<Shard, ShardError> {
    if cap.kind() != CapKind::ImmutableDir {
        return Err(ShardError::Invalid(format!(
            "the link to shard {n:02x} is not an immutable directory ({:?})",
            cap.kind()
        )));
    }
    let mut entries = grid.list(cap).await?;
    let header = entries.remove(SHARD_HEADER);
    let field = |k: &str| {
        header
            .as_ref()
            .and_then(|h| h.metadata.get(k))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    match (field("shard"), field("folder")) {
        (Some(s), Some(f)) if s == format!("{n:02x}") && f == folder => {}
        (Some(s), Some(f)) if f == folder => {
            return Err(ShardError::Invalid(format!(
                "the link to shard {n:02x} leads to shard {s}"
            )))
        }
        (Some(_), Some(_)) => {
            return Err(ShardError::Invalid(format!(
                "the link to shard {n:02x} leads to a shard of another folder"
            )))
        }
        _ => {
            return Err(ShardError::Invalid(format!(
                "the link to shard {n:02x} leads to a directory that is not a shard"
            )))
        }
    }
    let mut problems = Vec::new();
    entries.retain(|name, _| {
        let fits = shard_of(name) == n;
        if !fits {
            problems.push(format!(
                "entry {name:?} is filed in shard {n:02x}, not in its own ({:02x})",
                shard_of(name)
            ));
        }
        fits
    });
    Ok(Shard { entries, problems })
}

/// Entries grouped by the shard they belong in.
pub fn by_shard(entries: DirChildren) -> std::collections::BTreeMap<u8, DirChildren> {
    let mut out: std::collections::BTreeMap<u8, DirChildren> = Default::default();
    for (name, entry) in entries {
        out.entry(shard_of(&name)).or_default().insert(name, entry);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_links_round_trip_and_nothing_else_parses() {
        for n in [0u8, 0x3f, 0xff] {
            assert_eq!(parse_shard_link(&shard_link(n)), Some(n));
        }
        for name in [
            "@shard",
            "@shard-",
            "@shard-3",
            "@shard-3F",
            "@shard-3f0",
            "@shard-zz",
            "a",
        ] {
            assert_eq!(parse_shard_link(name), None, "{name}");
        }
    }
}
