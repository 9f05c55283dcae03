//! The engine's durable state, behind the [`Store`] trait.
//!
//! The engine keeps a mirror of what it needs in memory and writes every
//! decision through to the store as one batch of [`Change`]s per event, which
//! a store applies atomically (one SQLite transaction). After a crash the
//! engine is rebuilt from [`Store::load`]; anything not committed is simply
//! re-derived from the folder and the grid, because the local folder itself is
//! the queue of work (a path whose state differs from its [`Current`] record
//! is uploaded again).
//!
//! [`MemStore`] is the in-memory implementation used by the simulator (where
//! it survives a simulated crash) and by unit tests.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::engine::DeclaredAuthor;
use crate::relpath::RelPath;
use crate::snapshot::{Cap, SnapshotInfo};

/// Identity of a local file's version: changes whenever its content may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathState {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status-change time, nanoseconds since the epoch (catches edits that restore the mtime).
    pub ctime_ns: i64,
}

/// What is at a path on local disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LocalState {
    /// Nothing.
    Absent,
    /// A directory.
    Dir,
    /// A regular file in this state.
    File(PathState),
}

/// The snapshot a path's local state corresponds to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    /// The snapshot our local copy is (the head of our history for the path).
    pub snapshot: Cap,
    /// The local state when it matched that snapshot.
    pub local: LocalState,
    /// Whether our personal directory already points at `snapshot`.
    pub published: bool,
    /// A remote version being written over the local file. If the process
    /// dies after the write but before the result is recorded, the folder
    /// shows that version (its size, and its author's mtime to the second)
    /// and the engine recognises it as adopted rather than as a local edit.
    pub adopting: Option<Cap>,
}

impl Current {
    /// A copy that shares no memory with this one (see
    /// [`RelPath::relocated`]).
    pub fn relocated(&self) -> Current {
        Current {
            snapshot: self.snapshot.relocated(),
            local: self.local,
            published: self.published,
            adopting: self.adopting.as_ref().map(Cap::relocated),
        }
    }
}

/// A version of `path`, by `author`, that lost a conflict: neither an
/// ancestor nor a descendant of ours. A losing file is kept on disk as a
/// conflict copy; a losing deletion has no copy (`copy: None`) but is
/// remembered, so the versions it deleted stay deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The conflicted path.
    pub path: RelPath,
    /// Author of the losing version; the copy is `path.conflict-<author>`.
    pub author: String,
    /// The losing version.
    pub snapshot: Cap,
    /// State of the conflict copy as we wrote it (`None`: no copy, a deletion).
    pub copy: Option<PathState>,
    /// The user resolved it (removed the copy); the next snapshot of `path`
    /// names `snapshot` as a parent, after which the record is dropped.
    pub resolved: bool,
}

/// One durable change; a batch is applied atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Sets the current record of a path.
    PutCurrent(RelPath, Current),
    /// Marks a path published, if its current snapshot is still this one.
    MarkPublished(RelPath, Cap),
    /// Caches a verified snapshot (they are immutable, so this never changes).
    PutSnapshot(SnapshotInfo),
    /// Adds or replaces the conflict record for (path, author).
    PutConflict(Conflict),
    /// Drops the conflict record for (path, author).
    RemoveConflict(RelPath, String),
    /// Records the author a participant's directory declares (see
    /// [`DeclaredAuthor`]). Kept across restarts: a snapshot claiming that
    /// author is checked against it even before the directory is read
    /// again, which may fail for a while.
    PutDeclared(String, DeclaredAuthor),
    /// Forgets what a participant declared (its directory declares nothing).
    RemoveDeclared(String),
}

/// What the engine loads at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Every path's current record.
    pub current: BTreeMap<RelPath, Current>,
    /// Every conflict record.
    pub conflicts: Vec<Conflict>,
    /// The author each participant's directory declares, by participant.
    pub declared: BTreeMap<String, DeclaredAuthor>,
}

/// A store failure. The engine stops working on the folder and reports it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("local state: {0}")]
pub struct StoreError(pub String);

/// Durable state of one folder.
pub trait Store {
    /// Reads everything the engine mirrors in memory.
    fn load(&mut self) -> Result<Loaded, StoreError>;
    /// Looks up a cached snapshot.
    fn snapshot(&self, cap: &Cap) -> Result<Option<SnapshotInfo>, StoreError>;
    /// Applies a batch of changes atomically: all or nothing.
    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError>;
    /// Frees what the store keeps only to be faster (caches): for when the
    /// engine has run out of work. Nothing is lost if it cannot.
    fn release_memory(&mut self) {}
}

/// An in-memory store: durable across simulated crashes, not across processes.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    current: BTreeMap<RelPath, Current>,
    conflicts: BTreeMap<(RelPath, String), Conflict>,
    snapshots: HashMap<Cap, SnapshotInfo>,
    declared: BTreeMap<String, DeclaredAuthor>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }
}

/// Applies one change to a [`MemStore`]'s maps.
fn apply(store: &mut MemStore, change: &Change) {
    let MemStore {
        current,
        conflicts,
        snapshots,
        declared,
    } = store;
    match change {
        Change::PutCurrent(p, c) => {
            current.insert(p.clone(), c.clone());
        }
        Change::MarkPublished(p, cap) => {
            if let Some(c) = current.get_mut(p) {
                if c.snapshot == *cap {
                    c.published = true;
                }
            }
        }
        Change::PutSnapshot(s) => {
            snapshots.insert(s.cap.clone(), s.clone());
        }
        Change::PutConflict(c) => {
            conflicts.insert((c.path.clone(), c.author.clone()), c.clone());
        }
        Change::RemoveConflict(p, a) => {
            conflicts.remove(&(p.clone(), a.clone()));
        }
        Change::PutDeclared(participant, author) => {
            declared.insert(participant.clone(), author.clone());
        }
        Change::RemoveDeclared(participant) => {
            declared.remove(participant);
        }
    }
}

impl Store for MemStore {
    fn load(&mut self) -> Result<Loaded, StoreError> {
        Ok(Loaded {
            current: self.current.clone(),
            conflicts: self.conflicts.values().cloned().collect(),
            declared: self.declared.clone(),
        })
    }

    fn snapshot(&self, cap: &Cap) -> Result<Option<SnapshotInfo>, StoreError> {
        Ok(self.snapshots.get(cap).cloned())
    }

    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        for c in changes {
            apply(self, c);
        }
        Ok(())
    }
}
