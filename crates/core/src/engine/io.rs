//! What goes into the engine ([`Event`]) and what comes out ([`Action`]).
//!
//! Each action is a request for one effect; the driver (the daemon, or the
//! simulator) carries it out and reports the result as the matching event.
//! The contract of each effect is written on its variant: both drivers
//! implement exactly that, and the engine relies on nothing more.

use crate::relpath::RelPath;
use crate::snapshot::{Cap, Content, Listing, ShardId, SnapshotInfo};
use crate::store::LocalState;

/// Milliseconds on the driver's monotonic clock.
pub type Millis = u64;

/// Identifies one in-flight effect, so its result finds its way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// One entry of an [`Action::Publish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishEntry {
    /// The entry's name.
    pub name: String,
    /// The snapshot it points at.
    pub snapshot: Cap,
    /// What the snapshot is.
    pub shape: EntryShape,
}

/// What a published entry holds. A magic-folder 24.3 peer reads every entry
/// of a personal directory as a file (a directory's snapshot would read as a
/// deletion, and 24.3 deletes recursively), so the driver keeps directories,
/// their deletions and conflict copies where 24.3 does not look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryShape {
    /// A version of a file.
    File,
    /// A directory.
    Directory,
    /// A deletion (of a file, or of a directory when the name was last
    /// published as one: the driver knows where it put it).
    Deletion,
    /// A version kept as a conflict copy.
    ConflictCopy,
}

/// An effect the engine asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Walk the whole folder; report every entry's [`LocalState`] with
    /// [`Event::Scanned`]. Symlinks, special files and names that are not
    /// UTF-8 are left out and reported as problems. If the folder or its
    /// marker directory is missing, report an error rather than an empty
    /// list, so that nothing is taken for deleted.
    Scan,
    /// List the collective and every *other* participant's personal
    /// directory, decoding entry names with `snapshot::parse_entry_name`
    /// (names that do not decode go to `rejected`); report with
    /// [`Event::Polled`].
    Poll,
    /// Download a snapshot's directory and metadata, verify its signature and
    /// that it is a version of `listed_as`; report with [`Event::Fetched`].
    Fetch {
        /// The snapshot.
        cap: Cap,
        /// The path of the entry (or child) that named it.
        listed_as: RelPath,
    },
    /// Make a new snapshot of `path` and upload it; report with
    /// [`Event::Uploaded`]. The path must still be in state `local`, before
    /// and after its content is read, or the result is
    /// [`UploadOutcome::Changed`] and nothing is created. `Absent` uploads a
    /// deletion, `Dir` a directory.
    ///
    /// A file is read only once it has been left alone for the driver's
    /// quiet time (the pending delay): if it changed more recently, the
    /// driver waits until then and checks the state again. However a change
    /// was found (watcher, scan, retry), a writer that pauses for less than
    /// the quiet time is never published half-way.
    Upload {
        /// Matches the result to this request.
        op: OpId,
        /// The path.
        path: RelPath,
        /// The state the snapshot is made from.
        local: LocalState,
        /// Parent snapshots.
        parents: Vec<Cap>,
        /// The new snapshot's generation (one more than its parents' greatest).
        generation: u64,
    },
    /// Point our personal directory's entries at new snapshots, all in one
    /// directory write (replacing entries of the same names); report with
    /// [`Event::Published`]. Where each entry goes within the personal
    /// directory is the driver's choice by its [`EntryShape`]; a later
    /// listing must give back the last entry published under each name.
    Publish {
        /// Matches the result to this request.
        op: OpId,
        /// The entries, named by `snapshot::entry_name` or
        /// `snapshot::conflict_entry_name`.
        entries: Vec<PublishEntry>,
    },
    /// Make `target` hold `content`, atomically and only if the path is still
    /// in state `expect` at the last moment; report with [`Event::Written`].
    ///
    /// * `File`: stream the content into a temporary file in the target's
    ///   directory, fsync, set the mtime to `mtime_s`; then, if the target is
    ///   in state `expect`, move any old file into the versions area and
    ///   rename the new one into place.
    /// * `Dir`: create the directory; one already there is success whatever
    ///   `expect` says (a file in state `expect` is moved to the versions
    ///   area first).
    /// * `Deleted`: a file in state `expect` is moved to the versions area;
    ///   a directory is removed only if empty ([`WriteOutcome::NotEmpty`]).
    ///
    /// A target whose state is not `expect` is left untouched
    /// ([`WriteOutcome::Changed`]). Parent directories are created as needed;
    /// nothing is ever written through a symlink or outside the folder.
    Write {
        /// Matches the result to this request.
        op: OpId,
        /// The path to write (the path itself or a conflict copy).
        target: RelPath,
        /// What to put there.
        content: Content,
        /// Modification time to give a written file.
        mtime_s: i64,
        /// The state the target must still be in.
        expect: LocalState,
    },
}

/// Something that happened: an effect's result, or a local change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Result of [`Action::Scan`]: the whole folder, or why it can't be read.
    Scanned(Result<ScanReport, String>),
    /// The watcher saw these paths change; fresh states (`Absent` if gone).
    LocalChanged(Vec<(RelPath, LocalState)>),
    /// Result of [`Action::Poll`].
    Polled(Result<Vec<RemoteListing>, String>),
    /// Result of [`Action::Fetch`].
    Fetched {
        /// The snapshot asked for.
        cap: Cap,
        /// It, verified, or why not.
        result: Result<SnapshotInfo, EffectError>,
    },
    /// Result of [`Action::Upload`].
    Uploaded {
        /// The request.
        op: OpId,
        /// What happened.
        result: UploadOutcome,
    },
    /// Result of [`Action::Publish`].
    Published {
        /// The request.
        op: OpId,
        /// Done, or why not.
        result: Result<(), EffectError>,
        /// How long its grid writes took (not the time it waited to
        /// start): the next publish is paced by it.
        took: Millis,
    },
    /// Result of [`Action::Write`].
    Written {
        /// The request.
        op: OpId,
        /// What happened.
        result: WriteOutcome,
    },
}

/// A full scan of the folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Every syncable entry (files, directories, and conflict copies).
    pub entries: Vec<(RelPath, LocalState)>,
    /// Paths that exist but were not scanned: ignored by a rule, unreadable,
    /// symlinks, special files. Nothing at or below them is taken for
    /// deleted, so adding an ignore rule or losing read permission never
    /// deletes a file at the other participants.
    pub skipped: Vec<RelPath>,
    /// Entries skipped with a reason (symlinks, special files, bad names, unreadable).
    pub problems: Vec<String>,
}

/// One participant's personal directory, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteListing {
    /// The participant's name in the collective.
    pub participant: String,
    /// Which part of the participant's directory this is: `None` for the
    /// directory itself, `Some(id)` for one of its shards when it is sharded
    /// (see [`ShardId`]). Each part replaces the last listing of the same
    /// part; parts not listed are unchanged.
    pub shard: Option<ShardId>,
    /// Entry name → (path, snapshot), or why the directory could not be listed.
    pub entries: Result<Listing, EffectError>,
    /// Entries rejected before they reached the engine (unsafe names), with reasons.
    pub rejected: Vec<String>,
    /// The author this participant declares in its own personal directory
    /// (which only it can write), if any.
    pub author: Option<DeclaredAuthor>,
}

/// An author name and the verify key that signs its snapshots, as the
/// participant who writes under that name declares them. A snapshot that
/// claims a declared name but carries another key is an impersonation and
/// is rejected. (magic-folder 24.3 declares nothing, and trusts whatever
/// key a snapshot carries; its authors stay unpinned.)
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeclaredAuthor {
    /// The author name.
    pub name: String,
    /// Its Ed25519 verify key, base64 (as snapshots carry it).
    pub verify_key: String,
}

/// Why an effect failed, and whether trying again later can help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectError {
    /// A sentence for the user.
    pub message: String,
    /// True when a retry later may succeed (grid away, timeout).
    pub transient: bool,
    /// The grid found no such object. Not transient, yet not final either:
    /// a Tahoe-LAFS node answers so while its storage servers reconnect
    /// after a restart (their shares not yet announced), so a snapshot
    /// missing is fetched again for a while before it is taken as gone.
    pub missing: bool,
}

impl EffectError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> EffectError {
        EffectError {
            message: message.into(),
            transient: true,
            missing: false,
        }
    }
    /// A failure that will not go away by itself.
    pub fn permanent(message: impl Into<String>) -> EffectError {
        EffectError {
            message: message.into(),
            transient: false,
            missing: false,
        }
    }
    /// The object was not found (see [`EffectError::missing`](Self#structfield.missing)).
    pub fn missing(message: impl Into<String>) -> EffectError {
        EffectError {
            message: message.into(),
            transient: false,
            missing: true,
        }
    }
}

/// Result of an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadOutcome {
    /// Created; not yet published.
    Done(SnapshotInfo),
    /// The path was not (or no longer) in the expected state: nothing created.
    Changed(LocalState),
    /// Failed.
    Failed(EffectError),
}

/// Result of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Done; the target's new state.
    Done(LocalState),
    /// The target was not in the expected state; untouched.
    Changed(LocalState),
    /// A directory to delete still has entries.
    NotEmpty,
    /// Failed.
    Failed(EffectError),
}

/// Something that happened to the folder, for people: the daemon logs it
/// (and will stream it). Effects report what they did; notices say what it
/// meant (a write may be a download, a conflict copy or a resolution).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A local change was uploaded (not yet published).
    Uploaded {
        /// The path.
        path: RelPath,
        /// What was uploaded, a literal by reference ([`Content::kept`]):
        /// up to 4,096 notices wait for the driver.
        content: Content,
    },
    /// A remote version was taken into the folder.
    Downloaded {
        /// The path.
        path: RelPath,
        /// Whose version it is.
        author: String,
        /// What it holds, a literal by reference ([`Content::kept`]).
        content: Content,
    },
    /// Diverged versions: the losing file is kept as a conflict copy.
    Conflict {
        /// The path.
        path: RelPath,
        /// Label of the copy (its author, maybe with a version id).
        label: String,
    },
    /// A conflict was resolved: a version naming the losers as parents.
    Resolved {
        /// The path.
        path: RelPath,
    },
    /// A problem (also kept in status).
    Error {
        /// The path concerned, if any.
        path: Option<RelPath>,
        /// What went wrong.
        message: String,
    },
    /// Notices were dropped because nobody collected them in time.
    Dropped {
        /// How many.
        count: u64,
    },
}
