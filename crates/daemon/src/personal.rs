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
//! * **sharded** — the entries live in immutable directories (*shards*),
//!   and the personal directory holds only `@metadata` and a link
//!   `@shard-…` to each shard. A publish files its entries in the
//!   *recent* shard ([`ShardId::RECENT`]), made anew with them over what it
//!   held, and swaps its link in one write of the personal directory: a
//!   crash before that write publishes nothing, and a burst of changes
//!   costs one shard per publish. When the recent shard would hold more than
//!   [`RECENT_AT_MOST`] entries, the publish moves them all into their
//!   *hashed* shards instead, named by the first hex digit of the entry
//!   name's hash: 16 shards while the folder is small; a shard that grows
//!   past [`SPLIT_AT`] entries splits into the 16 named by two digits, so a
//!   large folder has up to [`SHARDS`]. Each shard written is made anew, and
//!   all the new links (an empty recent shard's too) are swapped in one
//!   write, which costs O(256) however large the folder. A reader lists the
//!   personal directory (≤ 258 links) and only the shards whose link
//!   changed — an immutable shard under an unchanged link holds the same
//!   entries; an entry in the recent shard is newer than in its hashed one.
//!
//!   A split links all its new shards in the write that publishes it, so a
//!   one-digit shard whose two-digit shards are linked is *superseded*:
//!   readers ignore it, and its owner unlinks it after that write.
//!
//! A flat folder moves to the sharded layout with `magic-folder convert`
//! (see [`crate::convert`]): each participant writes its entries into a new,
//! sharded directory, which names the old one ([`MOVED_FROM_ENTRY`]), and
//! then leaves a [`MOVED_ENTRY`] in its old one, naming the new directory. Readers follow that one hop (and the admin's
//! daemon links the new directory in the collective), and a reader reads
//! each directory by what it holds: shard links, or entries.
//!
//! Every shard carries a header entry, [`SHARD_HEADER`], naming the shard
//! and its folder; a reader rejects a shard whose header does not match the
//! link that led to it (a leaf of another folder, or of another shard) and
//! any entry filed in the wrong shard, each named in status, and keeps
//! syncing the rest. The layout is two levels deep by construction, so a
//! link cannot lead into a cycle: a shard's entries are snapshots, never
//! followed further as directories.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use mf_core::snapshot::{ShardId, SHARDS};
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

/// The recent shard holds at most this many entries: a publish rewrites it
/// whole (~150 KB at most), and moves its entries into their hashed shards
/// when it would hold more, rewriting at most 256 of them once per this
/// many changes.
pub const RECENT_AT_MOST: usize = 512;

/// A one-digit shard with more entries than this is split into two-digit
/// shards: a change then rewrites at most this many entries (a 100,000-file
/// folder's two-digit shards hold ~400 each), and a burst of changes in a
/// smaller folder rewrites at most 16 shards.
pub const SPLIT_AT: usize = 512;

/// The personal directory's link to a shard.
pub fn shard_link(id: ShardId) -> String {
    format!("{SHARD_LINK_PREFIX}{id}")
}

/// The shard a personal-directory entry links to, if it is a shard link.
pub fn parse_shard_link(name: &str) -> Option<ShardId> {
    ShardId::parse(name.strip_prefix(SHARD_LINK_PREFIX)?)
}

/// A shard's header entry: no object, its name and folder on the edge.
pub fn shard_header(id: ShardId, folder: &str) -> DirEntry {
    DirEntry {
        cap: Capability::empty(),
        metadata: serde_json::json!({ "shard": id.to_string(), "folder": folder }),
    }
}

/// A sharded personal directory's links: the shards in use (the recent
/// shard and the hashed ones), and the one-digit shards that were split
/// but are still linked.
#[derive(Clone, Debug, Default)]
pub struct ShardLinks {
    current: BTreeMap<ShardId, Capability>,
    /// One-digit shards that have two-digit ones: the parents of the
    /// two-digit keys of `current`, kept rather than derived because
    /// [`ShardLinks::shard_for`] asks once per entry published (100,000 at a
    /// conversion), and each asking would scan the links.
    split: BTreeSet<ShardId>,
    /// Split shards whose link is still there, to be unlinked.
    superseded: BTreeSet<ShardId>,
}

impl ShardLinks {
    /// The shard links among a personal directory's entries.
    pub fn of(children: &DirChildren) -> ShardLinks {
        let mut links = ShardLinks::default();
        let mut one_digit = Vec::new();
        for (name, entry) in children {
            match parse_shard_link(name) {
                Some(id) if id.digits() == 1 => one_digit.push((id, entry.cap.clone())),
                Some(id) => links.insert(id, entry.cap.clone()),
                None => {}
            }
        }
        for (id, cap) in one_digit {
            links.insert(id, cap);
        }
        links
    }

    /// Links `id` to `cap`: a two-digit shard supersedes its one-digit one.
    pub fn insert(&mut self, id: ShardId, cap: Capability) {
        match id.parent() {
            Some(parent) => {
                self.split.insert(parent);
                if self.current.remove(&parent).is_some() {
                    self.superseded.insert(parent);
                }
                self.current.insert(id, cap);
            }
            None if self.split.contains(&id) => {
                self.superseded.insert(id);
            }
            None => {
                self.current.insert(id, cap);
            }
        }
    }

    /// The shards in use, each with its link.
    pub fn current(&self) -> &BTreeMap<ShardId, Capability> {
        &self.current
    }

    /// Split shards still linked: readers ignore them.
    pub fn superseded(&self) -> &BTreeSet<ShardId> {
        &self.superseded
    }

    /// Forgets a superseded shard once its link is gone.
    pub fn unlinked(&mut self, id: ShardId) {
        self.superseded.remove(&id);
    }

    /// The shard `name` goes in now: its two-digit shard where its
    /// one-digit one has been split, else its one-digit one.
    pub fn shard_for(&self, name: &str) -> ShardId {
        let two = ShardId::of(name, 2);
        match two.parent() {
            Some(one) if !self.split.contains(&one) => one,
            _ => two,
        }
    }

    /// Entries grouped by the shard they go in now.
    pub fn group<V>(
        &self,
        entries: impl IntoIterator<Item = (String, V)>,
    ) -> BTreeMap<ShardId, BTreeMap<String, V>> {
        let mut out: BTreeMap<ShardId, BTreeMap<String, V>> = BTreeMap::new();
        for (name, entry) in entries {
            out.entry(self.shard_for(&name))
                .or_default()
                .insert(name, entry);
        }
        out
    }
}

/// The entries of shard `id` as they are to be written: as they are, or,
/// when a one-digit shard has grown past [`SPLIT_AT`], split into its
/// two-digit shards.
pub fn maybe_split(id: ShardId, entries: DirChildren) -> Vec<(ShardId, DirChildren)> {
    if id.digits() != 1 || entries.len() <= SPLIT_AT {
        return vec![(id, entries)];
    }
    let mut out: BTreeMap<ShardId, DirChildren> = BTreeMap::new();
    for (name, entry) in entries {
        out.entry(ShardId::of(&name, 2))
            .or_default()
            .insert(name, entry);
    }
    out.into_iter().collect()
}

/// A whole directory's entries laid out in shards at once, as a writer
/// that published them in one go would: one-digit shards, each split where
/// it holds more than [`SPLIT_AT`].
pub fn lay_out(entries: DirChildren) -> Vec<(ShardId, DirChildren)> {
    ShardLinks::default()
        .group(entries)
        .into_iter()
        .flat_map(|(id, entries)| maybe_split(id, entries))
        .collect()
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

/// Reads shard `id` from `cap`, checking that it is an immutable directory
/// whose header names `id` and `folder`, and that each entry belongs in
/// shard `id`.
pub async fn read_shard<G: Grid>(
    grid: &G,
    id: ShardId,
    cap: &Capability,
    folder: &str,
) -> Result<Shard, ShardError> {
    if cap.kind() != CapKind::ImmutableDir {
        return Err(ShardError::Invalid(format!(
            "the link to shard {id} is not an immutable directory ({:?})",
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
        (Some(s), Some(f)) if s == id.to_string() && f == folder => {}
        (Some(s), Some(f)) if f == folder => {
            return Err(ShardError::Invalid(format!(
                "the link to shard {id} leads to shard {s}"
            )))
        }
        (Some(_), Some(_)) => {
            return Err(ShardError::Invalid(format!(
                "the link to shard {id} leads to a shard of another folder"
            )))
        }
        _ => {
            return Err(ShardError::Invalid(format!(
                "the link to shard {id} leads to a directory that is not a shard"
            )))
        }
    }
    let mut problems = Vec::new();
    entries.retain(|name, _| {
        let fits = id.holds(name);
        if !fits {
            problems.push(format!(
                "entry {name:?} is filed in shard {id}, not in its own ({})",
                ShardId::of(name, id.digits())
            ));
        }
        fits
    });
    Ok(Shard { entries, problems })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_links_round_trip_and_nothing_else_parses() {
        for name in ["a", "dir@_file-3"] {
            for digits in [1, 2] {
                let id = ShardId::of(name, digits);
                assert_eq!(parse_shard_link(&shard_link(id)), Some(id));
            }
        }
        assert_eq!(shard_link(ShardId::RECENT), "@shard-recent");
        for name in [
            "@shard",
            "@shard-",
            "@shard-3F",
            "@shard-3f0",
            "@shard-zz",
            "a",
        ] {
            assert_eq!(parse_shard_link(name), None, "{name}");
        }
    }

    fn cap(label: &str) -> Capability {
        Capability::parse(&format!("URI:DIR2-CHK:{label}")).unwrap()
    }

    /// Entry names whose one-digit shard is `one` (the hash decides).
    fn names_in(one: ShardId, count: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("f-{i}"))
            .filter(|n| ShardId::of(n, 1) == one)
            .take(count)
            .collect()
    }

    #[test]
    fn a_split_shard_is_superseded_and_its_entries_go_two_digits_deep() {
        let one = ShardId::of("a", 1);
        let other = ShardId::of(&names_in(ShardId::of("b", 1), 1)[0], 1);
        assert_ne!(one, other);
        let mut children = DirChildren::new();
        children.insert(shard_link(one), DirEntry::new(cap("one")));
        children.insert(shard_link(other), DirEntry::new(cap("other")));
        children.insert(METADATA_ENTRY.into(), DirEntry::new(cap("meta")));
        let links = ShardLinks::of(&children);
        assert_eq!(links.current().len(), 2);
        assert_eq!(links.shard_for("a"), one);

        // A two-digit link under `one`, listed in any order, supersedes it.
        let two = ShardId::of("a", 2);
        children.insert(shard_link(two), DirEntry::new(cap("two")));
        let links = ShardLinks::of(&children);
        assert_eq!(
            links.current().keys().copied().collect::<Vec<_>>(),
            [other, two]
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert_eq!(
            links.superseded().iter().copied().collect::<Vec<_>>(),
            [one]
        );
        for name in names_in(one, 20) {
            assert_eq!(links.shard_for(&name), ShardId::of(&name, 2), "{name}");
        }
        assert_eq!(links.shard_for(&names_in(other, 1)[0]), other);
    }

    #[test]
    fn a_shard_splits_only_past_the_threshold_and_keeps_every_entry() {
        let one = ShardId::of("a", 1);
        let entries = |n: usize| -> DirChildren {
            names_in(one, n)
                .into_iter()
                .map(|name| (name.clone(), DirEntry::new(cap(&name))))
                .collect()
        };
        assert_eq!(
            maybe_split(one, entries(SPLIT_AT)),
            vec![(one, entries(SPLIT_AT))]
        );
        let parts = maybe_split(one, entries(SPLIT_AT + 1));
        assert!(parts.len() > 1);
        let mut all = DirChildren::new();
        for (id, part) in parts {
            assert_eq!(id.parent(), Some(one));
            assert!(part.keys().all(|n| id.holds(n)));
            all.extend(part);
        }
        assert_eq!(all, entries(SPLIT_AT + 1));
        // A two-digit shard never splits further.
        let two = ShardId::of("a", 2);
        assert_eq!(maybe_split(two, entries(SPLIT_AT + 1)).len(), 1);
    }
}
