//! The sans-IO sync engine of one folder.
//!
//! # Call order
//!
//! The driver owns the clock and the effects. It calls, in a loop:
//!
//! 1. [`Engine::poll_action`] until it returns `None`, carrying out each
//!    [`Action`] (concurrently if it likes) and feeding each result back with
//!    [`Engine::handle`];
//! 2. [`Engine::poll_timeout`] to learn when to call
//!    [`Engine::handle_timeout`] if nothing else happens first.
//!
//! Every call takes `now`; the engine never reads a clock, a disk or the
//! grid, so the same decisions run in the daemon and in the simulator.
//!
//! # The rules
//!
//! * **Local first, and the folder is the queue.** A path whose local state
//!   differs from its [`Current`] record is uploaded as a new snapshot whose
//!   parent is the current one. Edits made while offline or while an upload
//!   runs fold into one snapshot, because the upload reads the file as it is.
//! * **Remote by ancestry.** A remote snapshot that descends from ours is
//!   written over our copy (only if our copy is still exactly what we last
//!   recorded — checked at the last moment by the driver); one that is our
//!   ancestor is ignored; two diverged versions are a *conflict*.
//! * **Conflicts converge.** Every participant picks the same winner
//!   ([`ancestry::compare_for_win`]); the loser is kept beside the file as
//!   `<path>.conflict-<author>`. Removing that copy resolves the conflict: the
//!   next snapshot of the path names the loser as a second parent, and that
//!   resolution removes the copy everywhere.
//! * **Nothing overwritten silently.** Every write names the state it expects
//!   to replace; the driver moves anything it replaces into the folder's
//!   versions area.

mod ancestry;
mod cache;
mod candidates;
mod decide;
mod effects;
mod events;
mod io;
mod rank;
mod records;

pub use ancestry::{compare_for_win, is_ancestor, same_content, Answer};
pub use io::*;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::relpath::RelPath;
use crate::snapshot::{conflict_entry_name, entry_name, Cap, Content, ShardId, SnapshotInfo};
use crate::store::{Change, Conflict, Current, LocalState, Store, StoreError};

/// How the engine is tuned.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Our participant name.
    pub me: String,
    /// Our author name and key, as we declare them: a version claiming
    /// our name under another key is an impersonation.
    pub author: DeclaredAuthor,
    /// How often to poll the other participants.
    pub poll_interval: Millis,
    /// How often to walk the whole folder.
    pub scan_interval: Millis,
    /// How many effects on paths (uploads, writes, snapshot fetches, a
    /// publish) may be asked for and not yet finished. Beyond that, paths
    /// wait to be decided, one small queue entry each, instead of as
    /// actions holding their path three times over: at 100,000 new files,
    /// queuing every upload at once was ~57 MB of a daemon's peak. Keep it
    /// well above the driver's concurrency so the driver never starves.
    pub max_pending_effects: usize,
}

/// What the engine reports about its folder.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// Paths with a live regular file.
    pub files: usize,
    /// Paths with a live directory.
    pub directories: usize,
    /// Paths waiting for work.
    pub queued: usize,
    /// Effects in flight.
    pub in_flight: usize,
    /// Snapshots not yet linked into our personal directory.
    pub unpublished: usize,
    /// Unresolved conflicts: (path, author of the version kept as a copy).
    pub conflicts: Vec<(RelPath, String)>,
    /// When the last full scan finished.
    pub last_scan: Option<Millis>,
    /// When the last poll finished.
    pub last_poll: Option<Millis>,
    /// Recent problems, newest last.
    pub errors: Vec<StatusError>,
    /// Set when the engine stopped because its local state cannot be written.
    pub fatal: Option<String>,
}

/// One problem shown in status.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StatusError {
    /// When it happened.
    pub at: Millis,
    /// The path concerned, if any.
    pub path: Option<RelPath>,
    /// What went wrong.
    pub message: String,
}

/// How many recent errors status keeps.
const MAX_ERRORS: usize = 50;
/// How a failed scan's and a failed poll's errors begin (cleared by the next
/// one that works).
const SCAN_FAILED: &str = "scan failed, nothing taken for deleted: ";
const POLL_FAILED: &str = "poll failed: ";
/// Likewise for a path's failed upload and write (cleared by its next success).
const UPLOAD_FAILED: &str = "upload failed: ";
const WRITE_FAILED: &str = "writing failed: ";
/// Notices kept for the driver to collect; beyond this the oldest are
/// dropped and counted, so an absent reader never grows the engine.
const MAX_NOTICES: usize = 4096;
/// First retry delay after a failure; doubles up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Millis = 500;
/// Longest retry delay.
const MAX_BACKOFF: Millis = 60_000;
/// How long a snapshot the grid says is missing is fetched again (with
/// backoff) before it is rejected as gone: well beyond a Tahoe storage
/// server's restart and reconnection, short enough that a peer listing an
/// object that does not exist holds its path only for a while.
const MISSING_PATIENCE: Millis = 10 * 60_000;
/// How long a snapshot claiming the name of a participant whose directory
/// (which declares its author) could not be read yet waits for it, before
/// it is taken in unpinned, as a snapshot of an author who declares nothing
/// is. Bounded: a participant removed while its directory failed is never
/// read again.
const UNREAD_PATIENCE: Millis = 10 * 60_000;
/// A publish of nothing but versions we adopted (our directory recording
/// what we hold, which no one waits for) waits until adoptions pause this
/// long, or until the first of them has waited [`ADOPTED_PATIENCE`]: while
/// a burst of files arrives, each publish would rewrite our directory (and
/// every other participant would read it again) for nothing. The pause
/// starts only once no fetch or write of a peer's version is in flight:
/// on Tahoe a reader's publish 2 s into a 1,000-file download took its node
/// 1.2 s, beside the listings the download waited for. It is paced too (see
/// [`PUBLISH_SPACING`]).
const ADOPTED_QUIET: Millis = 2_000;
/// See [`ADOPTED_QUIET`].
const ADOPTED_PATIENCE: Millis = 30_000;
/// While an upload of ours is in flight (more of our changes are on their
/// way), the next publish waits this many times as long as the last one
/// took, so publishing takes at most a tenth of a burst's time and each
/// publish carries everything uploaded meanwhile. A publish
/// rewrites our personal directory, and in some formats its cost grows
/// with the folder: a flat directory is rewritten whole, and a sharded
/// one's batch of more than a recent shard's worth rewrites every hashed
/// shard (~60 s on Tahoe at 100,000 files, where an unpaced bulk published
/// 24 times back to back, and the reader, recording what it adopted,
/// rewrote its own shards as often). When no upload is in flight our
/// change is published at once: a lone change (or a conflict's) never
/// waits. Adoptions alone are paced always: nobody waits for them.
const PUBLISH_SPACING: Millis = 9;
/// The longest a publish waits for its share of the time (see
/// [`PUBLISH_SPACING`]): during a long bulk, the others still see progress.
const PUBLISH_WAIT_AT_MOST: Millis = 5 * 60_000;
/// After a poll that found nothing new, the next periodic poll waits at
/// least this many times as long as that one took, so fruitless polling
/// takes at most a fifth of the time. An idle poll takes milliseconds and
/// goes at the poll interval; while the grid's node is busy (a bulk on
/// Tahoe, where every poll costs it the listings of the collective and
/// each personal directory, ~0.6 s then against 0.07 s idle) the reader
/// polls less often instead of adding to its load. A poll that found
/// changes sets no pace: at 10,000 files on Tahoe, bob's poll that read
/// alice's 256 shards took ~10 s, and the 40 s it then waited were 40 s
/// her last publish went unseen.
const POLL_SPACING: Millis = 4;
/// For one poll interval after a poll that found changes, polls come this
/// many times as often: a participant that has just published is likely
/// to publish again (the rest of a burst; a bulk publishes as its uploads
/// finish), and the reader then learns of the last publish a quarter of
/// an interval after it instead of half an interval on average. An idle
/// folder polls at the interval.
const POLLS_IN_A_BURST: Millis = 4;
/// While what earlier polls found is being fetched or written, the next
/// periodic poll waits for that to end, by at most this many poll
/// intervals: a poll is a guess that something changed, those reads are
/// work known to be needed, and on Tahoe both are served by the same busy
/// node. A 1,000-file bulk reached the reader in 1.20× the raw requests'
/// time instead of 1.25× (medians of 27 and 29 runs in alternating
/// batches, the gain largest on a slow machine, where a poll beside the
/// last pack listings took ~1 s; BENCHMARKS.md). An asked-for poll
/// ([`Engine::request_poll`]) never waits.
pub const POLL_WAITS_FOR_READS: Millis = 2;
/// The longest a poll waits for its share of the time (see
/// [`POLL_SPACING`]): a poll that took hours (a machine suspended while it
/// ran) is followed within a minute.
const POLL_WAIT_AT_MOST: Millis = 60_000;
/// Delay before re-reading a file that changed while it was uploaded.
const CHANGED_DELAY: Millis = 1_000;
/// How many times a directory deletion waits for the directory to empty
/// before the directory is kept (and re-published) instead.
const NOT_EMPTY_TRIES: u32 = 4;
/// Proven generations kept in memory before they are dropped and proven
/// again from the store's snapshots, as the snapshot cache is.
const PROVEN_LIMIT: usize = 16_384;

/// An in-flight effect.
#[derive(Clone, Debug)]
enum Op {
    Upload {
        path: RelPath,
        local: LocalState,
        resolving: Vec<Cap>,
    },
    Publish {
        /// The paths published at their current snapshots (see
        /// `moved_while_publishing`).
        paths: Vec<RelPath>,
        copies: Vec<(RelPath, String, Cap)>,
    },
    Write {
        path: RelPath,
        purpose: Purpose,
    },
}

/// Why a write was asked for.
#[derive(Clone, Debug)]
enum Purpose {
    /// Make the path hold this remote snapshot (a literal content kept by
    /// reference: the write carries it).
    Adopt(SnapshotInfo),
    /// Keep a losing version as `path.conflict-<author>`.
    Copy { author: String, snapshot: Cap },
    /// Remove a conflict copy made obsolete by a resolution.
    RemoveCopy { author: String },
}

impl Purpose {
    /// The path a write for `path` with this purpose changes on disk.
    fn target(&self, path: &RelPath) -> RelPath {
        match self {
            Purpose::Adopt(_) => path.clone(),
            Purpose::Copy { author, .. } | Purpose::RemoveCopy { author } => {
                path.conflict_copy(author)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Backoff {
    due: Millis,
    attempts: u32,
}

impl Backoff {
    fn after_failure(prev: Option<Backoff>, now: Millis) -> Backoff {
        let attempts = prev.map_or(0, |b| b.attempts) + 1;
        let delay = BASE_BACKOFF
            .saturating_mul(1 << attempts.min(20))
            .min(MAX_BACKOFF);
        Backoff {
            due: now + delay,
            attempts,
        }
    }
}

#[derive(Clone, Debug)]
struct Fetching {
    listed_as: RelPath,
    waiters: BTreeSet<RelPath>,
    in_flight: bool,
    backoff: Option<Backoff>,
    /// When the grid first said the snapshot is missing (see [`MISSING_PATIENCE`]).
    missing_since: Option<Millis>,
}

#[derive(Clone, Copy, Debug)]
struct Timer {
    due: Millis,
    in_flight: bool,
    requested: bool,
    /// When it last fired.
    fired: Millis,
}

impl Timer {
    /// Fires (true) when asked for or `due` has come, unless in flight.
    fn fire(&mut self, due: Millis, now: Millis) -> bool {
        if self.in_flight || !(self.requested || due <= now) {
            return false;
        }
        self.in_flight = true;
        self.requested = false;
        self.fired = now;
        true
    }
}

/// The sync engine of one folder.
pub struct Engine<S: Store> {
    store: S,
    cfg: EngineConfig,
    now: Millis,
    /// Mirror of the store's current records.
    current: BTreeMap<RelPath, Current>,
    /// Mirror of the store's conflicts, by path then author.
    conflicts: BTreeMap<RelPath, BTreeMap<String, Conflict>>,
    /// Paths whose current snapshot is not yet in our personal directory.
    unpublished: BTreeSet<RelPath>,
    /// Conflict copies whose version is not yet published as a conflict
    /// entry (all of them after a restart: re-publishing is harmless).
    unpublished_copies: BTreeSet<(RelPath, String)>,
    /// Something of ours waits to be published (an upload, a conflict, a
    /// kept directory, whatever a restart found unpublished, a publish
    /// that failed): the next publish goes as soon as it can.
    publish_urgent: bool,
    /// Everything unpublished waits for a directory's upload in flight
    /// (see `maybe_publish`): no publish is due before the next event.
    publish_held: bool,
    /// When the first and the last version we adopted since the last
    /// publish began (see [`ADOPTED_QUIET`]).
    adopted_unpublished: Option<(Millis, Millis)>,
    /// Local states seen but not yet acted on.
    observed: BTreeMap<RelPath, LocalState>,
    /// Remote snapshots to consider, per path.
    candidates: candidates::Candidates,
    /// How many current records have a file or directory (not a deletion):
    /// `status` is asked every few seconds, and counting 100,000 records
    /// each time was a third of an idle daemon's CPU.
    present: usize,
    /// Of those, directories.
    dirs: usize,
    /// The last listing of each participant (of each of its shards, when
    /// its directory is sharded), to notice what is new: the sorted
    /// [`fingerprint`]s of its entries (a 100,000-entry listing took 25 MB
    /// kept as strings, 1.6 MB as fingerprints).
    seen: BTreeMap<(String, Option<ShardId>), Vec<u128>>,
    /// Paths to look at on the next pump.
    work: BTreeSet<RelPath>,
    /// At most one effect per path at a time.
    busy: HashMap<RelPath, OpId>,
    ops: HashMap<OpId, Op>,
    /// Paths waiting to retry after a failure.
    backoff: BTreeMap<RelPath, Backoff>,
    /// Consecutive failures per path (kept while its backoff fires and is
    /// retried, so the delay grows; cleared by a success).
    failures: HashMap<RelPath, u32>,
    /// Paths whose file may or may not have been overwritten by an adoption
    /// that a crash cut short (the `adopting` record came from a previous
    /// run): until that is settled, a local edit claims no parent.
    unsure: BTreeSet<RelPath>,
    /// Files found where a conflict copy was to go, by (path, label).
    found_copies: BTreeMap<(RelPath, String), LocalState>,
    /// Directory deletions that found the directory not yet empty.
    not_empty: HashMap<RelPath, u32>,
    fetching: BTreeMap<Cap, Fetching>,
    /// How many of `fetching` are in flight (counted, not searched: it is
    /// asked before every decision).
    fetches_in_flight: usize,
    /// Snapshots that failed verification, with the reason.
    bad: HashMap<Cap, String>,
    /// The author each participant declares (see [`DeclaredAuthor`]), from
    /// its last listing (kept in the store).
    declared: BTreeMap<String, DeclaredAuthor>,
    /// Participants whose directory could not be read while nothing is
    /// known of what it declares, and since when (see [`UNREAD_PATIENCE`]).
    unread: BTreeMap<String, Millis>,
    cache: cache::SnapshotCache,
    /// Generations proven by snapshots' histories (see `rank.rs`).
    proven: HashMap<Cap, u64>,
    publishing: Option<OpId>,
    /// Paths whose record moved to another snapshot while the publish in
    /// flight was being written: it does not cover them, so they stay
    /// unpublished when it ends. (Kept instead of each published path's
    /// snapshot in the publish op, which at 100,000 paths held another
    /// ~12 MB of capabilities for as long as the publish took.)
    moved_while_publishing: BTreeSet<RelPath>,
    publish_backoff: Option<Backoff>,
    /// When the last publish ended and how long it took (see
    /// [`PUBLISH_SPACING`]).
    last_publish: Option<(Millis, Millis)>,
    /// How many of `ops` are uploads (counted: asked at every pump).
    uploads_in_flight: usize,
    /// How many of `ops` are writes (see [`ADOPTED_QUIET`]).
    writes_in_flight: usize,
    scan: Timer,
    poll: Timer,
    last_scan: Option<Millis>,
    last_poll: Option<Millis>,
    /// When a poll last found changes (see [`POLLS_IN_A_BURST`]).
    last_found: Option<Millis>,
    errors: VecDeque<StatusError>,
    /// The problems the last full scan reported (skipped entries).
    scan_problems: BTreeSet<String>,
    /// The paths on disk our writes changed (a version we adopted, a
    /// conflict copy written or removed) while a scan was in flight (see
    /// `on_scanned`).
    written_while_scanning: BTreeSet<RelPath>,
    notices: VecDeque<Notice>,
    dropped_notices: u64,
    out: VecDeque<Action>,
    changes: Vec<Change>,
    next_op: u64,
    fatal: Option<String>,
}

impl<S: Store> Engine<S> {
    /// Loads durable state and schedules the start-up scan and poll.
    pub fn new(mut store: S, cfg: EngineConfig, now: Millis) -> Result<Self, StoreError> {
        let loaded = store.load()?;
        let unpublished: BTreeSet<RelPath> = loaded
            .current
            .iter()
            .filter(|(_, c)| !c.published)
            .map(|(p, _)| p.clone())
            .collect();
        let unsure = loaded
            .current
            .iter()
            .filter(|(_, c)| c.adopting.is_some())
            .map(|(p, _)| p.clone())
            .collect();
        let mut conflicts: BTreeMap<RelPath, BTreeMap<String, Conflict>> = BTreeMap::new();
        let mut work = BTreeSet::new();
        let mut unpublished_copies = BTreeSet::new();
        for c in loaded.conflicts {
            work.insert(c.path.clone());
            if !c.resolved {
                unpublished_copies.insert((c.path.clone(), c.author.clone()));
            }
            conflicts
                .entry(c.path.clone())
                .or_default()
                .insert(c.author.clone(), c);
        }
        let timer = Timer {
            due: now,
            in_flight: false,
            requested: true,
            fired: now,
        };
        let mut engine = Engine {
            store,
            cfg,
            now,
            present: loaded
                .current
                .values()
                .filter(|c| c.local != LocalState::Absent)
                .count(),
            dirs: loaded
                .current
                .values()
                .filter(|c| c.local == LocalState::Dir)
                .count(),
            current: loaded.current,
            conflicts,
            publish_urgent: !(unpublished.is_empty() && unpublished_copies.is_empty()),
            publish_held: false,
            unpublished,
            unpublished_copies,
            adopted_unpublished: None,
            observed: BTreeMap::new(),
            candidates: candidates::Candidates::default(),
            seen: BTreeMap::new(),
            work,
            busy: HashMap::new(),
            ops: HashMap::new(),
            backoff: BTreeMap::new(),
            failures: HashMap::new(),
            not_empty: HashMap::new(),
            found_copies: BTreeMap::new(),
            unsure,
            fetching: BTreeMap::new(),
            fetches_in_flight: 0,
            bad: HashMap::new(),
            declared: loaded.declared,
            unread: BTreeMap::new(),
            cache: cache::SnapshotCache::default(),
            proven: HashMap::new(),
            publishing: None,
            moved_while_publishing: BTreeSet::new(),
            publish_backoff: None,
            last_publish: None,
            uploads_in_flight: 0,
            writes_in_flight: 0,
            scan: timer,
            poll: timer,
            last_scan: None,
            last_poll: None,
            last_found: None,
            errors: VecDeque::new(),
            scan_problems: BTreeSet::new(),
            written_while_scanning: BTreeSet::new(),
            notices: VecDeque::new(),
            dropped_notices: 0,
            out: VecDeque::new(),
            changes: Vec::new(),
            next_op: 0,
            fatal: None,
        };
        engine.pump();
        Ok(engine)
    }

    /// Feeds one event in.
    pub fn handle(&mut self, now: Millis, event: Event) {
        self.now = self.now.max(now);
        self.publish_held = false;
        if self.fatal.is_some() {
            return;
        }
        match event {
            Event::Scanned(result) => self.on_scanned(result),
            Event::LocalChanged(entries) => {
                for (path, state) in entries {
                    self.observe(path, state);
                }
            }
            Event::Polled(result) => self.on_polled(result),
            Event::Fetched { cap, result } => self.on_fetched(cap, result),
            Event::Uploaded { op, result } => self.on_uploaded(op, result),
            Event::Published { op, result, took } => self.on_published(op, result, took),
            Event::Written { op, result } => self.on_written(op, result),
        }
        self.pump();
    }

    /// Lets timers fire.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.now = self.now.max(now);
        if self.fatal.is_some() {
            return;
        }
        let due: Vec<RelPath> = self
            .backoff
            .iter()
            .filter(|(_, b)| b.due <= self.now)
            .map(|(p, _)| p.clone())
            .collect();
        for p in due {
            self.backoff.remove(&p);
            self.work.insert(p);
        }
        let fetches: Vec<Cap> = self
            .fetching
            .iter()
            .filter(|(_, f)| !f.in_flight && f.backoff.is_some_and(|b| b.due <= self.now))
            .map(|(c, _)| c.clone())
            .collect();
        for cap in fetches {
            self.send_fetch(cap);
        }
        self.pump();
    }

    /// The next effect to carry out, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// The next thing that happened, for the driver to tell people about.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        if self.dropped_notices > 0 {
            let count = std::mem::take(&mut self.dropped_notices);
            return Some(Notice::Dropped { count });
        }
        self.notices.pop_front()
    }

    /// When [`Engine::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.fatal.is_some() {
            return None;
        }
        let timers = [(self.scan, self.scan.due), (self.poll, self.poll_due())]
            .into_iter()
            .filter(|(t, _)| !t.in_flight)
            .map(|(t, due)| if t.requested { self.now } else { due });
        let backoffs = self.backoff.values().map(|b| b.due);
        let fetches = self
            .fetching
            .values()
            .filter(|f| !f.in_flight)
            .filter_map(|f| f.backoff.map(|b| b.due));
        let waiting = self.publishing.is_none()
            && !self.publish_held
            && !(self.unpublished.is_empty() && self.unpublished_copies.is_empty());
        let publish = self.publish_not_before().filter(|_| waiting);
        let work = (!self.work.is_empty() && self.has_room()).then_some(self.now);
        timers
            .chain(backoffs)
            .chain(fetches)
            .chain(publish)
            .chain(work)
            .min()
    }

    /// Asks for a full scan as soon as possible.
    pub fn request_scan(&mut self) {
        self.scan.requested = true;
        self.pump();
    }

    /// Asks for a poll as soon as possible.
    pub fn request_poll(&mut self) {
        self.poll.requested = true;
        self.pump();
    }

    /// True when nothing is queued, in flight or unpublished. A periodic scan
    /// or poll in flight does not count: it is how an idle engine listens.
    pub fn is_idle(&self) -> bool {
        self.ops.is_empty()
            && self.work.is_empty()
            && self.observed.is_empty()
            && self.backoff.is_empty()
            && self.fetching.is_empty()
            && self.unpublished.is_empty()
            && self.unpublished_copies.is_empty()
            && self.candidates.is_empty()
            && self
                .out
                .iter()
                .all(|a| matches!(a, Action::Scan | Action::Poll))
    }

    /// Paths whose local change is not uploaded yet: seen and not acted
    /// on, or being uploaded now (what 24.3 calls local snapshots).
    pub fn local_changes(&self) -> Vec<RelPath> {
        let uploading = self.ops.values().filter_map(|op| match op {
            Op::Upload { path, .. } => Some(path),
            _ => None,
        });
        let seen = self
            .observed
            .iter()
            .filter(|(p, s)| self.current.get(*p).map_or(LocalState::Absent, |c| c.local) != **s)
            .map(|(p, _)| p);
        let all: BTreeSet<&RelPath> = uploading.chain(seen).collect();
        all.into_iter().cloned().collect()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        debug_assert_eq!(
            self.present,
            self.current
                .values()
                .filter(|c| c.local != LocalState::Absent)
                .count()
        );
        debug_assert_eq!(
            self.dirs,
            self.current
                .values()
                .filter(|c| c.local == LocalState::Dir)
                .count()
        );
        debug_assert_eq!(
            self.fetches_in_flight,
            self.fetching.values().filter(|f| f.in_flight).count()
        );
        Status {
            files: self.present - self.dirs,
            directories: self.dirs,
            queued: self.work.len()
                + self.observed.len()
                + self.backoff.len()
                + self.candidates.len(),
            in_flight: self.ops.len() + self.fetches_in_flight,
            unpublished: self.unpublished.len(),
            conflicts: self
                .conflicts
                .iter()
                .flat_map(|(p, m)| {
                    m.values()
                        .filter(|c| !c.resolved && c.copy.is_some())
                        .map(move |c| (p.clone(), c.author.clone()))
                })
                .collect(),
            last_scan: self.last_scan,
            last_poll: self.last_poll,
            errors: self.errors.iter().cloned().collect(),
            fatal: self.fatal.clone(),
        }
    }

    /// Frees the spare room of the engine's work tables. A burst of work
    /// (say 100,000 new files, all uploads at once) leaves them empty but
    /// with that much capacity — 50 MB — and hash maps and queues never
    /// shrink on their own. The snapshot cache serves paths in flight, so
    /// with no work left it is dropped too (full, it holds 4 MiB that an
    /// idle daemon would keep for nothing; the store has every entry), and
    /// so are the store's own caches ([`Store::release_memory`]). The
    /// proven generations stay: without them the next change of each path
    /// would walk its whole history again.
    /// For the driver to call when it runs out of work.
    pub fn shrink_to_fit(&mut self) {
        self.cache.release();
        self.store.release_memory();
        self.ops.shrink_to_fit();
        self.busy.shrink_to_fit();
        self.out.shrink_to_fit();
        self.changes.shrink_to_fit();
        self.notices.shrink_to_fit();
        self.failures.shrink_to_fit();
        self.not_empty.shrink_to_fit();
        self.bad.shrink_to_fit();
        // The records and proven generations that a burst added were
        // allocated among its short-lived allocations (a poll's listing, a
        // scan's report), and left there they keep the allocator from
        // returning the freed pages around them. Copied afresh, their paths
        // and capabilities too, they fill the holes instead. Moved out one
        // by one, each old record is freed as its copy is made: at no time
        // are there two tables. A proven generation is mostly a record's
        // snapshot: it shares the copy.
        self.current = std::mem::take(&mut self.current)
            .into_iter()
            .map(|(p, c)| (p.relocated(), c.relocated()))
            .collect();
        let heads: HashSet<&Cap> = self.current.values().map(|c| &c.snapshot).collect();
        let proven = self
            .proven
            .iter()
            .map(|(c, g)| {
                (
                    heads.get(c).map_or_else(|| c.relocated(), |&h| h.clone()),
                    *g,
                )
            })
            .collect();
        drop(heads);
        self.proven = proven;
    }

    /// Makes every pending retry (paths, snapshot fetches, publishing) due
    /// now, keeping its failure count: for when the driver learns that the
    /// grid is back, so work does not wait out a long backoff.
    pub fn retry_now(&mut self, now: Millis) {
        self.now = self.now.max(now);
        for b in self.backoff.values_mut() {
            b.due = self.now;
        }
        for f in self.fetching.values_mut() {
            if let Some(b) = f.backoff.as_mut() {
                b.due = self.now;
            }
        }
        if let Some(b) = self.publish_backoff.as_mut() {
            b.due = self.now;
        }
        self.handle_timeout(now);
    }

    /// What the engine is waiting on, in one line, for diagnostics.
    pub fn waiting_on(&self) -> String {
        format!(
            "work {:?}; observed {:?}; backoff {:?}; candidates {:?}; fetching {:?}; ops {}",
            self.work,
            self.observed,
            self.backoff.keys().collect::<Vec<_>>(),
            self.candidates,
            self.fetching
                .iter()
                .map(|(c, f)| (c, f.in_flight, f.backoff.map(|b| b.due)))
                .collect::<Vec<_>>(),
            self.ops.len()
        )
    }

    /// The current record of a path.
    pub fn current(&self, path: &RelPath) -> Option<&Current> {
        self.current.get(path)
    }

    /// Every current record.
    pub fn currents(&self) -> &BTreeMap<RelPath, Current> {
        &self.current
    }

    /// Every conflict record.
    pub fn conflicts(&self) -> impl Iterator<Item = &Conflict> {
        self.conflicts.values().flat_map(|m| m.values())
    }

    /// The store (read access for the driver).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back (the engine's memory is dropped, as in a crash).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Does everything that can be done now, then commits the batch.
    fn pump(&mut self) {
        if self.fatal.is_some() {
            return;
        }
        if self.scan.fire(self.scan.due, self.now) {
            self.out.push_back(Action::Scan);
        }
        // Deciding one path may give it (or another) more to do: settle up
        // to eight steps per waiting path now, and leave the rest for the
        // next call. Only while there is room for the effects a decision
        // may ask for; the rest wait in `work` for effects to finish.
        let mut steps = 8 * self.work.len();
        while steps > 0 && self.has_room() {
            let Some(path) = self.work.pop_first() else {
                break;
            };
            self.step(&path);
            steps -= 1;
        }
        // After the steps: the fetches and writes they asked for hold the
        // poll back (see [`POLL_WAITS_FOR_READS`]).
        if self.poll.fire(self.poll_due(), self.now) {
            self.out.push_back(Action::Poll);
        }
        self.maybe_publish();
        self.commit();
    }

    /// When the periodic poll goes: when due, or while fetches or writes
    /// run, when they end, at most [`POLL_WAITS_FOR_READS`] intervals later.
    fn poll_due(&self) -> Millis {
        if self.fetches_in_flight > 0 || self.writes_in_flight > 0 {
            self.poll.due + POLL_WAITS_FOR_READS * self.cfg.poll_interval
        } else {
            self.poll.due
        }
    }

    /// True while fewer effects are pending than
    /// [`EngineConfig::max_pending_effects`].
    fn has_room(&self) -> bool {
        self.ops.len() + self.fetches_in_flight < self.cfg.max_pending_effects.max(1)
    }
}
