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
mod io;

pub use ancestry::{compare_for_win, is_ancestor, same_content, Answer};
pub use io::*;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::Serialize;

use crate::relpath::RelPath;
use crate::snapshot::{conflict_entry_name, entry_name, Cap, Content, SnapshotInfo};
use crate::store::{Change, Conflict, Current, LocalState, Store, StoreError};

/// How the engine is tuned.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Our participant name.
    pub me: String,
    /// How often to poll the other participants.
    pub poll_interval: Millis,
    /// How often to walk the whole folder.
    pub scan_interval: Millis,
}

/// What the engine reports about its folder.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// Paths with a live file or directory.
    pub files: usize,
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
/// First retry delay after a failure; doubles up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Millis = 500;
/// Longest retry delay.
const MAX_BACKOFF: Millis = 60_000;
/// Delay before re-reading a file that changed while it was uploaded.
const CHANGED_DELAY: Millis = 1_000;
/// How many times a directory deletion waits for the directory to empty
/// before the directory is kept (and re-published) instead.
const NOT_EMPTY_TRIES: u32 = 4;
/// Snapshot infos kept in memory before the cache is dropped and refilled from the store.
///
/// Paths in flight reuse their snapshots within moments, so a few thousand
/// would do; each costs ~700 bytes (at 50,000 the cache was a third of an
/// idle daemon's heap after syncing 100,000 files).
const CACHE_LIMIT: usize = 16_384;

/// An in-flight effect.
#[derive(Clone, Debug)]
enum Op {
    Upload {
        path: RelPath,
        local: LocalState,
        resolving: Vec<Cap>,
    },
    Publish {
        paths: Vec<(RelPath, Cap)>,
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
    /// Make the path hold this remote snapshot.
    Adopt(SnapshotInfo),
    /// Keep a losing version as `path.conflict-<author>`.
    Copy { author: String, snapshot: Cap },
    /// Remove a conflict copy made obsolete by a resolution.
    RemoveCopy { author: String },
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
}

#[derive(Clone, Copy, Debug)]
struct Timer {
    due: Millis,
    in_flight: bool,
    requested: bool,
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
    /// Local states seen but not yet acted on.
    observed: BTreeMap<RelPath, LocalState>,
    /// Remote snapshots to consider, per path.
    candidates: BTreeMap<RelPath, BTreeSet<Cap>>,
    /// How many current records have a file or directory (not a deletion):
    /// `status` is asked every few seconds, and counting 100,000 records
    /// each time was a third of an idle daemon's CPU.
    present: usize,
    /// The last listing of each participant, to notice what is new: the
    /// sorted [`fingerprint`]s of its entries (a 100,000-entry listing
    /// took 25 MB kept as strings, 1.6 MB as fingerprints).
    seen: BTreeMap<String, Vec<u128>>,
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
    /// Snapshots that failed verification, with the reason.
    bad: HashMap<Cap, String>,
    cache: HashMap<Cap, SnapshotInfo>,
    publishing: Option<OpId>,
    publish_backoff: Option<Backoff>,
    scan: Timer,
    poll: Timer,
    last_scan: Option<Millis>,
    last_poll: Option<Millis>,
    errors: VecDeque<StatusError>,
    out: VecDeque<Action>,
    changes: Vec<Change>,
    next_op: u64,
    fatal: Option<String>,
}

impl<S: Store> Engine<S> {
    /// Loads durable state and schedules the start-up scan and poll.
    pub fn new(mut store: S, cfg: EngineConfig, now: Millis) -> Result<Self, StoreError> {
        let loaded = store.load()?;
        let unpublished = loaded
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
            current: loaded.current,
            conflicts,
            unpublished,
            unpublished_copies,
            observed: BTreeMap::new(),
            candidates: BTreeMap::new(),
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
            bad: HashMap::new(),
            cache: HashMap::new(),
            publishing: None,
            publish_backoff: None,
            scan: timer,
            poll: timer,
            last_scan: None,
            last_poll: None,
            errors: VecDeque::new(),
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
            Event::Published { op, result } => self.on_published(op, result),
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

    /// When [`Engine::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.fatal.is_some() {
            return None;
        }
        let timers = [self.scan, self.poll]
            .into_iter()
            .filter(|t| !t.in_flight)
            .map(|t| if t.requested { self.now } else { t.due });
        let backoffs = self.backoff.values().map(|b| b.due);
        let fetches = self
            .fetching
            .values()
            .filter(|f| !f.in_flight)
            .filter_map(|f| f.backoff.map(|b| b.due));
        let waiting = self.publishing.is_none()
            && !(self.unpublished.is_empty() && self.unpublished_copies.is_empty());
        let publish = self.publish_backoff.map(|b| b.due).filter(|_| waiting);
        let work = (!self.work.is_empty()).then_some(self.now);
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
            && self.candidates.values().all(|c| c.is_empty())
            && self
                .out
                .iter()
                .all(|a| matches!(a, Action::Scan | Action::Poll))
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
        Status {
            files: self.present,
            queued: self.work.len()
                + self.observed.len()
                + self.backoff.len()
                + self.candidates.values().filter(|c| !c.is_empty()).count(),
            in_flight: self.ops.len() + self.fetching.values().filter(|f| f.in_flight).count(),
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
    /// shrink on their own. For the driver to call when it runs out of work.
    pub fn shrink_to_fit(&mut self) {
        self.ops.shrink_to_fit();
        self.busy.shrink_to_fit();
        self.out.shrink_to_fit();
        self.changes.shrink_to_fit();
        self.failures.shrink_to_fit();
        self.not_empty.shrink_to_fit();
        self.bad.shrink_to_fit();
        self.cache.shrink_to_fit();
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
            self.candidates
                .iter()
                .filter(|(_, c)| !c.is_empty())
                .collect::<Vec<_>>(),
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

    // ----- events -------------------------------------------------------

    fn on_scanned(&mut self, result: Result<ScanReport, String>) {
        self.scan.in_flight = false;
        self.scan.due = self.now + self.cfg.scan_interval;
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                self.error(None, format!("scan failed, nothing taken for deleted: {e}"));
                return;
            }
        };
        self.last_scan = Some(self.now);
        for p in report.problems {
            self.error(None, p);
        }
        let skipped: BTreeSet<RelPath> = report.skipped.into_iter().collect();
        let mut present: BTreeSet<RelPath> = BTreeSet::new();
        for (path, state) in report.entries {
            present.insert(path.clone());
            self.observe(path, state);
        }
        let under_skipped = |p: &RelPath| {
            let mut cur = Some(p.clone());
            while let Some(c) = cur {
                if skipped.contains(&c) {
                    return true;
                }
                cur = c.parent();
            }
            false
        };
        let gone: Vec<RelPath> = self
            .current
            .iter()
            .filter(|(p, c)| {
                c.local != LocalState::Absent && !present.contains(*p) && !under_skipped(p)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            self.observe(p, LocalState::Absent);
        }
        let copies: Vec<RelPath> = self
            .conflicts
            .values()
            .flat_map(|m| m.values())
            .filter(|c| c.copy.is_some() && !c.resolved)
            .map(|c| c.path.conflict_copy(&c.author))
            .filter(|copy| !present.contains(copy) && !under_skipped(copy))
            .collect();
        for copy in copies {
            self.observe(copy, LocalState::Absent);
        }
    }

    fn observe(&mut self, path: RelPath, state: LocalState) {
        if let Some((orig, author)) = path.as_conflict_copy() {
            // A conflict copy is never uploaded; its disappearance is the
            // user's resolution of that conflict.
            let author = author.to_owned();
            if state == LocalState::Absent {
                if let Some(c) = self
                    .conflicts
                    .get_mut(&orig)
                    .and_then(|m| m.get_mut(&author))
                {
                    if c.copy.is_some() && !c.resolved {
                        c.resolved = true;
                        let c = c.clone();
                        self.put_conflict(c);
                        self.work.insert(orig);
                    }
                }
            }
            return;
        }
        if path.is_internal() {
            return;
        }
        let known = self
            .current
            .get(&path)
            .map_or(LocalState::Absent, |c| c.local);
        if known == state && !self.busy.contains_key(&path) {
            self.observed.remove(&path);
            self.confirm_unchanged(&path);
        } else {
            self.observed.insert(path.clone(), state);
            self.work.insert(path);
        }
    }

    fn on_polled(&mut self, result: Result<Vec<RemoteListing>, String>) {
        self.poll.in_flight = false;
        self.poll.due = self.now + self.cfg.poll_interval;
        let listings = match result {
            Ok(l) => l,
            Err(e) => {
                self.error(None, format!("poll failed: {e}"));
                return;
            }
        };
        self.last_poll = Some(self.now);
        for listing in listings {
            for r in &listing.rejected {
                self.error_once(format!("rejected entry from {}: {r}", listing.participant));
            }
            let entries = match listing.entries {
                Ok(e) => e,
                Err(e) => {
                    self.error(
                        None,
                        format!("cannot list {}: {}", listing.participant, e.message),
                    );
                    continue;
                }
            };
            let seen = self.seen.entry(listing.participant.clone()).or_default();
            let mut now = Vec::with_capacity(entries.len());
            for (name, (path, cap)) in &entries {
                let f = fingerprint(name, path, cap);
                now.push(f);
                // Our own current version is nothing new (and after a
                // restart, when nothing is `seen` yet, that is almost every
                // entry: evaluating each would read its snapshot record).
                let ours = self.current.get(path).is_some_and(|c| c.snapshot == *cap);
                if !ours && seen.binary_search(&f).is_err() && !path.is_internal() {
                    self.candidates
                        .entry(path.clone())
                        .or_default()
                        .insert(cap.clone());
                    self.work.insert(path.clone());
                }
            }
            now.sort_unstable();
            *seen = now;
        }
    }

    fn on_fetched(&mut self, cap: Cap, result: Result<SnapshotInfo, EffectError>) {
        let Some(mut f) = self.fetching.remove(&cap) else {
            return;
        };
        match result {
            Ok(info) => {
                self.changes.push(Change::PutSnapshot(info.clone()));
                self.remember(info);
                self.work.extend(f.waiters);
            }
            Err(e) if e.transient => {
                self.error(
                    Some(f.listed_as.clone()),
                    format!("fetching a snapshot: {}", e.message),
                );
                f.in_flight = false;
                f.backoff = Some(Backoff::after_failure(f.backoff, self.now));
                self.fetching.insert(cap, f);
            }
            Err(e) => {
                self.error(
                    Some(f.listed_as.clone()),
                    format!("rejected a snapshot: {}", e.message),
                );
                self.bad.insert(cap, e.message);
                self.work.extend(f.waiters);
            }
        }
    }

    fn on_uploaded(&mut self, op: OpId, result: UploadOutcome) {
        let Some(Op::Upload {
            path,
            local: sent,
            resolving,
        }) = self.finish(op)
        else {
            return;
        };
        match result {
            UploadOutcome::Done(info) => {
                self.failures.remove(&path);
                let local = match &info.content {
                    Content::Deleted => LocalState::Absent,
                    Content::Dir => LocalState::Dir,
                    Content::File { .. } => sent,
                };
                self.changes.push(Change::PutSnapshot(info.clone()));
                let cap = info.cap.clone();
                self.remember(info);
                self.set_current(
                    &path,
                    Current {
                        snapshot: cap,
                        local,
                        published: false,
                        adopting: None,
                    },
                );
                if self.observed.get(&path) == Some(&local) {
                    self.observed.remove(&path);
                }
                for parent in resolving {
                    self.drop_conflict_with(&path, &parent);
                }
            }
            UploadOutcome::Changed(actual) => {
                self.observed.insert(path.clone(), actual);
                self.backoff.insert(
                    path.clone(),
                    Backoff {
                        due: self.now + CHANGED_DELAY,
                        attempts: 0,
                    },
                );
            }
            UploadOutcome::Failed(e) => {
                self.error(Some(path.clone()), format!("upload failed: {}", e.message));
                self.retry_later(&path);
            }
        }
        self.work.insert(path);
    }

    fn on_published(&mut self, op: OpId, result: Result<(), EffectError>) {
        let Some(Op::Publish { paths, copies }) = self.finish(op) else {
            return;
        };
        self.publishing = None;
        match result {
            Ok(()) => {
                self.publish_backoff = None;
                for (path, author, cap) in copies {
                    let still = self
                        .conflicts
                        .get(&path)
                        .and_then(|m| m.get(&author))
                        .is_some_and(|c| c.snapshot == cap);
                    if still {
                        self.unpublished_copies.remove(&(path, author));
                    }
                }
                for (path, cap) in paths {
                    self.changes
                        .push(Change::MarkPublished(path.clone(), cap.clone()));
                    if let Some(c) = self.current.get_mut(&path) {
                        if c.snapshot == cap {
                            c.published = true;
                            self.unpublished.remove(&path);
                        }
                    }
                }
            }
            Err(e) => {
                self.error(
                    None,
                    format!("publishing to our personal directory failed: {}", e.message),
                );
                self.publish_backoff = Some(Backoff::after_failure(self.publish_backoff, self.now));
            }
        }
    }

    fn on_written(&mut self, op: OpId, result: WriteOutcome) {
        let Some(Op::Write { path, purpose }) = self.finish(op) else {
            return;
        };
        self.work.insert(path.clone());
        if matches!(result, WriteOutcome::Done(_)) {
            self.failures.remove(&path);
        }
        match (purpose, result) {
            (Purpose::Adopt(info), WriteOutcome::Done(state)) => {
                self.not_empty.remove(&path);
                if let Some(c) = self.candidates.get_mut(&path) {
                    c.remove(&info.cap);
                }
                self.set_current(
                    &path,
                    Current {
                        snapshot: info.cap.clone(),
                        local: state,
                        published: false,
                        adopting: None,
                    },
                );
                if self.observed.get(&path) == Some(&state) {
                    self.observed.remove(&path);
                }
                // A kept copy that just won back its place is redundant now.
                let stale = self
                    .open_conflicts(&path)
                    .into_iter()
                    .find(|c| c.snapshot == info.cap);
                if let Some(c) = stale {
                    self.emit_remove_copy(&path, &c);
                }
            }
            (Purpose::Adopt(_), WriteOutcome::NotEmpty) if self.work_below(&path) => {
                // Its entries are still being dealt with (their deletions may
                // just be slower): look again shortly, without counting a try.
                self.backoff.insert(
                    path.clone(),
                    Backoff {
                        due: self.now + CHANGED_DELAY,
                        attempts: 0,
                    },
                );
            }
            (Purpose::Adopt(info), WriteOutcome::NotEmpty) => {
                let tries = self.not_empty.entry(path.clone()).or_insert(0);
                *tries += 1;
                if *tries >= NOT_EMPTY_TRIES {
                    // Something new lives in the directory: keep it. Re-publish
                    // it on top of the deletion so everyone keeps it too.
                    self.not_empty.remove(&path);
                    if let Some(c) = self.candidates.get_mut(&path) {
                        c.remove(&info.cap);
                    }
                    self.set_current(
                        &path,
                        Current {
                            snapshot: info.cap.clone(),
                            local: LocalState::Absent,
                            published: false,
                            adopting: None,
                        },
                    );
                    self.observed.insert(path.clone(), LocalState::Dir);
                } else {
                    self.retry_later(&path);
                }
            }
            (Purpose::Copy { author, snapshot }, WriteOutcome::Done(state)) => {
                self.found_copies.remove(&(path.clone(), author.clone()));
                let copy = match state {
                    LocalState::File(s) => Some(s),
                    _ => None,
                };
                let c = Conflict {
                    path: path.clone(),
                    author,
                    snapshot,
                    copy,
                    resolved: false,
                };
                self.put_conflict(c);
            }
            (Purpose::RemoveCopy { author }, WriteOutcome::Done(_)) => {
                self.found_copies.remove(&(path.clone(), author.clone()));
                self.remove_conflict(&path, &author);
            }
            (Purpose::RemoveCopy { author }, WriteOutcome::Changed(actual)) => {
                let key = (path.clone(), author.clone());
                let pending = self
                    .conflicts
                    .get(&path)
                    .and_then(|m| m.get(&author))
                    .is_some_and(|c| c.copy.is_none());
                if pending
                    && !matches!(actual, LocalState::Dir)
                    && self.found_copies.get(&key) != Some(&actual)
                {
                    // The half-remembered copy is there after all: remove it next.
                    self.found_copies.insert(key, actual);
                } else {
                    // A copy the user edited is left in place, no longer tracked.
                    self.found_copies.remove(&key);
                    self.remove_conflict(&path, &author);
                }
            }
            (Purpose::Copy { author, .. }, WriteOutcome::Changed(actual)) => {
                // Something else sits at the copy's name (a copy written just
                // before a crash, or a user's file): the next write moves it to
                // the versions area instead of failing again.
                if matches!(actual, LocalState::Dir) {
                    self.error(
                        Some(path.clone()),
                        format!("a directory is in the way of the conflict copy from {author}"),
                    );
                    self.retry_later(&path);
                } else {
                    self.found_copies.insert((path.clone(), author), actual);
                }
            }
            (Purpose::Adopt(info), WriteOutcome::Changed(actual))
                if self.was_adopting(&path, &info, actual) =>
            {
                // Written before a crash: the file already is that version.
                if let Some(c) = self.candidates.get_mut(&path) {
                    c.remove(&info.cap);
                }
                self.observed.remove(&path);
                self.set_current(
                    &path,
                    Current {
                        snapshot: info.cap.clone(),
                        local: actual,
                        published: false,
                        adopting: None,
                    },
                );
            }
            (Purpose::Adopt(_), WriteOutcome::Changed(actual)) => {
                // Changed under us: the local edit is uploaded first; the
                // remote version is then a conflict, never an overwrite.
                // (This write never happened; if an earlier run's may have,
                // the record stays until the edit is uploaded.)
                if !self.unsure.contains(&path) {
                    self.clear_adopting(&path);
                }
                self.observed.insert(path.clone(), actual);
            }
            (_, WriteOutcome::NotEmpty) => {}
            (_, WriteOutcome::Failed(e)) => {
                // This write did not happen; one an earlier run was making
                // may have, so that record stays until it is settled.
                if !self.unsure.contains(&path) {
                    self.clear_adopting(&path);
                }
                self.error(Some(path.clone()), format!("writing failed: {}", e.message));
                self.retry_later(&path);
            }
        }
    }

    // ----- the pump -----------------------------------------------------

    /// Does everything that can be done now, then commits the batch.
    fn pump(&mut self) {
        if self.fatal.is_some() {
            return;
        }
        for (timer, action) in [
            (&mut self.scan, Action::Scan),
            (&mut self.poll, Action::Poll),
        ] {
            if !timer.in_flight && (timer.requested || timer.due <= self.now) {
                timer.in_flight = true;
                timer.requested = false;
                self.out.push_back(action);
            }
        }
        // Deciding one path may give it (or another) more to do; settle a
        // few rounds now, and leave the rest for the next call.
        for _ in 0..8 {
            let work = std::mem::take(&mut self.work);
            if work.is_empty() {
                break;
            }
            for path in work {
                self.step(&path);
            }
        }
        self.maybe_publish();
        self.commit();
    }
}

/// True if a local state is what writing `snap` leaves on disk: its size,
/// and its author's modification time to the second (as the driver sets it).
fn shows(snap: &SnapshotInfo, state: LocalState) -> bool {
    match (&snap.content, state) {
        (Content::File { size, .. }, LocalState::File(st)) => {
            *size == st.size && st.mtime_ns == snap.mtime_s.saturating_mul(1_000_000_000)
        }
        _ => false,
    }
}

/// A 128-bit fingerprint of a listing entry, for noticing what changed
/// between two listings. Two halves from std's `DefaultHasher` (SipHash-1-3
/// today) with fixed keys and different salts: deterministic, as the engine
/// must be, and never stored, so another hash in a later release is
/// harmless. An accidental collision is out of reach, and a crafted one
/// could only hide a change its own author made, who could as well not
/// publish it.
fn fingerprint(name: &str, path: &RelPath, cap: &Cap) -> u128 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        name.hash(&mut h);
        path.as_str().hash(&mut h);
        cap.as_str().hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// The head every participant shows as the file.
fn winner(heads: &[SnapshotInfo]) -> Option<&SnapshotInfo> {
    heads.iter().max_by(|a, b| compare_for_win(a, b))
}

/// Names what is kept of each losing version. A losing file gets a copy
/// named after its author (plus a short id of the version when the author
/// has several). Everything else — a losing deletion or directory, or a file
/// whose bytes the winner already has — is kept only as a *marker*: a record
/// without a file, labelled `<author>-t<id>`, remembered and published so
/// that what it superseded stays superseded everywhere.
fn copy_labels<'a>(
    losers: &[&'a SnapshotInfo],
    winner: &SnapshotInfo,
) -> Vec<(String, &'a SnapshotInfo)> {
    let needs_copy = |h: &SnapshotInfo| {
        matches!(h.content, Content::File { .. }) && !same_content(&h.content, &winner.content)
    };
    losers
        .iter()
        .map(|h| {
            let copies_by_author = losers
                .iter()
                .filter(|o| o.author == h.author && needs_copy(o))
                .count();
            let label = if !needs_copy(h) {
                marker_label(h)
            } else if copies_by_author == 1 {
                h.author.clone()
            } else {
                unique_label(h)
            };
            (label, *h)
        })
        .collect()
}

/// A label no other version can have: the author plus a short id of the
/// version (`t` in front for a marker, as in [`copy_labels`]).
fn unique_label(h: &SnapshotInfo) -> String {
    match h.content {
        Content::File { .. } => format!("{}-{}", h.author, short_id(&h.cap)),
        _ => marker_label(h),
    }
}

/// The label of a marker: `<author>-t<id>`.
fn marker_label(h: &SnapshotInfo) -> String {
    format!("{}-t{}", h.author, short_id(&h.cap))
}

/// Six hex digits that tell versions apart in labels.
fn short_id(cap: &Cap) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(cap.as_str().as_bytes());
    d[..3].iter().map(|b| format!("{b:02x}")).collect()
}

/// True for the label of a marker (a record with no file; see [`copy_labels`]).
fn is_marker_label(label: &str) -> bool {
    label.rsplit_once('-').is_some_and(|(_, id)| {
        id.len() == 7 && id.starts_with('t') && id[1..].bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// What evaluating one remote candidate led to.
enum Eval {
    /// Nothing (more) to do for it.
    Drop,
    /// Waiting: an effect was asked for, or a snapshot must be fetched first.
    Wait,
}

impl<S: Store> Engine<S> {
    /// Decides the next thing to do for one path, if any.
    fn step(&mut self, path: &RelPath) {
        if self.busy.contains_key(path) || self.backoff.contains_key(path) {
            return;
        }
        if self.clean_up_copies(path) {
            return;
        }
        // Local changes go first: they become history before anything remote
        // is compared with it.
        if let Some(&state) = self.observed.get(path) {
            if self.recognise_adopted(path, state) {
                return;
            }
            let cur = self.current.get(path);
            let known = cur.map_or(LocalState::Absent, |c| c.local);
            if state != known {
                // After a crash mid-adopt, an edited file may hold our old
                // version or the one being adopted: claim neither as parent,
                // so both stay kept and the edit joins them as a conflict.
                let unsure = self.unsure.contains(path);
                let mut parents: Vec<Cap> = cur
                    .filter(|_| !unsure)
                    .map(|c| c.snapshot.clone())
                    .into_iter()
                    .collect();
                let resolving = self.resolved_caps(path);
                parents.extend(resolving.iter().cloned());
                self.emit_upload(path, state, parents, resolving);
                return;
            }
            self.observed.remove(path);
            self.confirm_unchanged(path);
        }
        let resolving = self.resolved_caps(path);
        if !resolving.is_empty() {
            let cur = self.current.get(path);
            let local = cur.map_or(LocalState::Absent, |c| c.local);
            let mut parents: Vec<Cap> = cur.map(|c| c.snapshot.clone()).into_iter().collect();
            parents.extend(resolving.iter().cloned());
            self.emit_upload(path, local, parents, resolving);
            return;
        }
        while let Some(t) = self
            .candidates
            .get(path)
            .and_then(|s| s.iter().next().cloned())
        {
            match self.evaluate(path, &t) {
                Eval::Drop => {
                    if let Some(s) = self.candidates.get_mut(path) {
                        s.remove(&t);
                    }
                }
                Eval::Wait => return,
            }
        }
        self.candidates.remove(path);
        // A change of the current version (a local edit, a fast-forward to a
        // deletion) can change which kept version wins, or their labels.
        if self.conflicts.contains_key(path) {
            if let Some(heads) = self.heads(path) {
                self.realize(path, &heads);
            }
        }
    }

    /// The open (unresolved) conflict records of a path.
    fn open_conflicts(&self, path: &RelPath) -> Vec<Conflict> {
        self.conflicts
            .get(path)
            .map(|m| m.values().filter(|c| !c.resolved).cloned().collect())
            .unwrap_or_default()
    }

    /// The versions of a path we keep that nothing else we keep supersedes:
    /// the maximal elements among the current version and every open
    /// conflict record. `None` if part of the DAG must be fetched first.
    fn heads(&mut self, path: &RelPath) -> Option<Vec<SnapshotInfo>> {
        let caps: Vec<Cap> = self
            .current
            .get(path)
            .map(|c| c.snapshot.clone())
            .into_iter()
            .chain(self.open_conflicts(path).into_iter().map(|c| c.snapshot))
            .collect();
        let mut kept: Vec<SnapshotInfo> = Vec::new();
        for cap in caps {
            if kept.iter().any(|h| h.cap == cap) {
                continue;
            }
            match self.lookup(&cap) {
                Some(info) => kept.push(info),
                None => {
                    self.need_fetch(cap, path);
                    return None;
                }
            }
        }
        let mut heads = Vec::new();
        for h in &kept {
            let mut superseded = false;
            for other in &kept {
                if other.cap == h.cap {
                    continue;
                }
                match self.ancestry(&h.cap, &other.cap, path) {
                    Answer::Yes => superseded = true,
                    Answer::Need(_) => return None,
                    Answer::No => {}
                }
            }
            if !superseded {
                heads.push(h.clone());
            }
        }
        Some(heads)
    }

    /// Removes conflict records (and their copies) that a version we keep
    /// already includes: someone resolved them or built on them. True if it
    /// had to act or wait.
    fn clean_up_copies(&mut self, path: &RelPath) -> bool {
        let open = self.open_conflicts(path);
        if open.is_empty() {
            return false;
        }
        let Some(heads) = self.heads(path) else {
            return true;
        };
        let cur = self.current.get(path).map(|c| c.snapshot.clone());
        for c in &open {
            if Some(&c.snapshot) == cur.as_ref() {
                // Our own version, kept aside while the winner is adopted.
                continue;
            }
            if !heads.iter().any(|h| h.cap == c.snapshot) {
                self.emit_remove_copy(path, c);
                return true;
            }
        }
        false
    }

    /// Decides what a remote snapshot `t` of `path` means for us.
    fn evaluate(&mut self, path: &RelPath, t: &Cap) -> Eval {
        if self.bad.contains_key(t) {
            return Eval::Drop;
        }
        let Some(theirs) = self.lookup(t) else {
            self.need_fetch(t.clone(), path);
            return Eval::Wait;
        };
        let Some(heads) = self.heads(path) else {
            return Eval::Wait;
        };
        // Nothing new if we keep it, or something built on it, already.
        for h in &heads {
            match self.ancestry(t, &h.cap, path) {
                Answer::Yes => return Eval::Drop,
                Answer::Need(_) => return Eval::Wait,
                Answer::No => {}
            }
        }
        // The heads it supersedes drop out; it joins the rest.
        let mut next = vec![theirs];
        for h in heads {
            match self.ancestry(&h.cap, t, path) {
                Answer::Yes => {}
                Answer::Need(_) => return Eval::Wait,
                Answer::No => next.push(h),
            }
        }
        if self.realize(path, &next) {
            Eval::Wait
        } else {
            Eval::Drop
        }
    }

    /// Makes the folder show a set of heads: the winner as the file, every
    /// other file head as a conflict copy, losing deletions remembered.
    /// Emits at most one effect; true if it did (or must wait).
    fn realize(&mut self, path: &RelPath, heads: &[SnapshotInfo]) -> bool {
        let Some(w) = winner(heads).cloned() else {
            return false;
        };
        let cur = self.current.get(path).cloned();
        let losers: Vec<&SnapshotInfo> = heads.iter().filter(|h| h.cap != w.cap).collect();
        // A label still held by another version we keep (e.g. the winner's
        // copy, until the winner is in the file) is never taken over: that
        // would forget the other version. Use the version's own id instead.
        let cur_cap = self.current.get(path).map(|c| c.snapshot.clone());
        let kept = |cap: &Cap| heads.iter().any(|h| h.cap == *cap) || cur_cap.as_ref() == Some(cap);
        let wanted: Vec<(String, &SnapshotInfo)> = copy_labels(&losers, &w)
            .into_iter()
            .map(|(label, h)| {
                let holder = self
                    .conflicts
                    .get(path)
                    .and_then(|m| m.get(&label))
                    .map(|r| r.snapshot.clone());
                match holder {
                    Some(other) if other != h.cap && kept(&other) => (unique_label(h), h),
                    _ => (label, h),
                }
            })
            .collect();
        for (label, h) in &wanted {
            let record = self.conflicts.get(path).and_then(|m| m.get(label)).cloned();
            let marker = is_marker_label(label);
            // A copy's record without a copy state is a copy still being written.
            if record
                .as_ref()
                .is_some_and(|r| r.snapshot == h.cap && (r.copy.is_some() || marker))
            {
                continue;
            }
            if !marker {
                self.emit_copy(path, label, (*h).clone());
                return true;
            }
            self.put_tombstone(path, label, h);
        }
        match cur {
            None => {
                self.emit_adopt(path, w, LocalState::Absent);
                return true;
            }
            Some(c) if c.snapshot != w.cap => {
                // Written even when our version has the winner's content:
                // only the write's last-moment check proves the file is
                // still what we recorded. Our record may be stale (a local
                // change not seen yet, or an earlier run's adoption that did
                // reach the disk); taking the winner's history on it would
                // let that change claim a version it never saw as parent, or
                // let the recognised adoption forget the winner.
                self.emit_adopt(path, w, c.local);
                return true;
            }
            Some(_) => {}
        }
        // Copies kept under a label that is no longer theirs (an author's
        // second copy appeared, or went) are removed once the new one exists.
        // A copy of our own current version is redundant only once no
        // replacement of the file is under way or pending: until then it may
        // be all that is left of that version.
        let cur = self.current.get(path);
        let settled = cur.is_some_and(|c| c.adopting.is_none())
            && self.candidates.get(path).is_none_or(|c| c.is_empty());
        let cur_cap = cur.map(|c| c.snapshot.clone()).filter(|_| !settled);
        let in_heads = |c: &Conflict| {
            Some(&c.snapshot) != cur_cap.as_ref() && heads.iter().any(|h| h.cap == c.snapshot)
        };
        let stale = self.open_conflicts(path).into_iter().find(|c| {
            in_heads(c)
                && !wanted
                    .iter()
                    .any(|(l, h)| *l == c.author && h.cap == c.snapshot)
        });
        if let Some(c) = stale {
            self.emit_remove_copy(path, &c);
            return true;
        }
        false
    }

    /// Records a losing deletion (or directory): no copy on disk, but it is
    /// remembered and published, so that what it deleted stays deleted.
    fn put_tombstone(&mut self, path: &RelPath, label: &str, loser: &SnapshotInfo) {
        let c = Conflict {
            path: path.clone(),
            author: label.to_owned(),
            snapshot: loser.cap.clone(),
            copy: None,
            resolved: false,
        };
        self.put_conflict(c);
    }

    /// After a crash, a file that shows exactly the version we were writing
    /// over it is that version, not a local edit. True if so.
    fn recognise_adopted(&mut self, path: &RelPath, state: LocalState) -> bool {
        let Some(cur) = self.current.get(path).cloned() else {
            return false;
        };
        let (Some(w), LocalState::File(st)) = (cur.adopting.clone(), state) else {
            return false;
        };
        if self.busy.contains_key(path) || cur.local == state || !self.unsure.contains(path) {
            return false;
        }
        let Some(info) = self.lookup(&w) else {
            return false;
        };
        let matches = shows(&info, LocalState::File(st));
        if matches {
            if let Some(c) = self.candidates.get_mut(path) {
                c.remove(&w);
            }
            self.observed.remove(path);
            self.set_current(
                path,
                Current {
                    snapshot: w,
                    local: state,
                    published: false,
                    adopting: None,
                },
            );
            self.work.insert(path.clone());
        }
        matches
    }

    /// True if an earlier run was writing `info` over `path` when it died,
    /// and the file now shows that version: the write happened.
    fn was_adopting(&self, path: &RelPath, info: &SnapshotInfo, actual: LocalState) -> bool {
        self.unsure.contains(path)
            && self
                .current
                .get(path)
                .is_some_and(|c| c.adopting.as_ref() == Some(&info.cap))
            && shows(info, actual)
    }

    /// The file was seen to be exactly our recorded version: an adoption
    /// that a crash cut short never reached the disk.
    fn confirm_unchanged(&mut self, path: &RelPath) {
        if self.current.get(path).is_some_and(|c| c.adopting.is_some()) {
            self.clear_adopting(path);
            self.unsure.remove(path);
            self.work.insert(path.clone());
        }
    }

    fn clear_adopting(&mut self, path: &RelPath) {
        if let Some(cur) = self
            .current
            .get(path)
            .filter(|c| c.adopting.is_some())
            .cloned()
        {
            let cleared = Current {
                adopting: None,
                ..cur
            };
            self.changes
                .push(Change::PutCurrent(path.clone(), cleared.clone()));
            self.current.insert(path.clone(), cleared);
        }
    }

    fn resolved_caps(&self, path: &RelPath) -> Vec<Cap> {
        self.conflicts
            .get(path)
            .map(|m| {
                m.values()
                    .filter(|c| c.resolved)
                    .map(|c| c.snapshot.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    // ----- emitting effects --------------------------------------------

    fn new_op(&mut self, op: Op) -> OpId {
        self.next_op += 1;
        let id = OpId(self.next_op);
        match &op {
            Op::Upload { path, .. } | Op::Write { path, .. } => {
                self.busy.insert(path.clone(), id);
            }
            Op::Publish { .. } => {}
        }
        self.ops.insert(id, op);
        id
    }

    /// Forgets a finished effect; `None` for an unknown (e.g. pre-crash) one.
    fn finish(&mut self, id: OpId) -> Option<Op> {
        let op = self.ops.remove(&id)?;
        if let Op::Upload { path, .. } | Op::Write { path, .. } = &op {
            if self.busy.get(path) == Some(&id) {
                self.busy.remove(path);
            }
        }
        Some(op)
    }

    fn emit_upload(
        &mut self,
        path: &RelPath,
        local: LocalState,
        parents: Vec<Cap>,
        resolving: Vec<Cap>,
    ) {
        let generation = 1 + parents
            .iter()
            .filter_map(|p| self.lookup(p))
            .map(|i| i.generation)
            .max()
            .unwrap_or(0);
        let op = self.new_op(Op::Upload {
            path: path.clone(),
            local,
            resolving,
        });
        self.out.push_back(Action::Upload {
            op,
            path: path.clone(),
            local,
            parents,
            generation,
        });
    }

    fn emit_adopt(&mut self, path: &RelPath, snap: SnapshotInfo, expect: LocalState) {
        let unsettled = self.unsure.contains(path);
        if let (Content::File { .. }, Some(cur), false) =
            (&snap.content, self.current.get(path), unsettled)
        {
            // Write-ahead: remember what is about to overwrite the file.
            // (Not over an earlier run's unsettled record: that one still
            // says what the file may hold.)
            let marked = Current {
                adopting: Some(snap.cap.clone()),
                ..cur.clone()
            };
            self.changes
                .push(Change::PutCurrent(path.clone(), marked.clone()));
            self.current.insert(path.clone(), marked);
        }
        let content = snap.content.clone();
        let mtime = snap.mtime_s;
        self.emit_write(
            path,
            path.clone(),
            content,
            mtime,
            expect,
            Purpose::Adopt(snap),
        );
    }

    fn emit_copy(&mut self, path: &RelPath, label: &str, loser: SnapshotInfo) {
        let recorded = self
            .conflicts
            .get(path)
            .and_then(|m| m.get(label))
            .and_then(|c| c.copy);
        let expect = match self.found_copies.get(&(path.clone(), label.to_owned())) {
            Some(found) => *found,
            None => recorded.map_or(LocalState::Absent, LocalState::File),
        };
        let target = path.conflict_copy(label);
        // Write-ahead: the record exists before the copy does, so a crash in
        // between leaves a record to finish (or remove) the copy, never a
        // stray file nobody tracks.
        let pending = Conflict {
            path: path.clone(),
            author: label.to_owned(),
            snapshot: loser.cap.clone(),
            copy: None,
            resolved: false,
        };
        self.put_conflict(pending);
        let purpose = Purpose::Copy {
            author: label.to_owned(),
            snapshot: loser.cap.clone(),
        };
        self.emit_write(path, target, loser.content, loser.mtime_s, expect, purpose);
    }

    /// Removes a conflict copy (and then its record).
    fn emit_remove_copy(&mut self, path: &RelPath, c: &Conflict) {
        let target = path.conflict_copy(&c.author);
        let key = (path.clone(), c.author.clone());
        let expect = match (c.copy, self.found_copies.get(&key).copied()) {
            (Some(state), _) => LocalState::File(state),
            // A copy whose write may or may not have happened (a crash):
            // probe, and remove what is found.
            (None, Some(found)) => found,
            (None, None) if self.is_pending_copy(c) => LocalState::Absent,
            (None, None) => {
                self.remove_conflict(path, &c.author);
                return;
            }
        };
        let purpose = Purpose::RemoveCopy {
            author: c.author.clone(),
        };
        self.emit_write(path, target, Content::Deleted, 0, expect, purpose);
    }

    /// A record of a losing *file* with no copy state: its copy is being
    /// written (or was, when the process died).
    fn is_pending_copy(&self, c: &Conflict) -> bool {
        c.copy.is_none() && !is_marker_label(&c.author)
    }

    fn emit_write(
        &mut self,
        path: &RelPath,
        target: RelPath,
        content: Content,
        mtime_s: i64,
        expect: LocalState,
        purpose: Purpose,
    ) {
        let op = self.new_op(Op::Write {
            path: path.clone(),
            purpose,
        });
        self.out.push_back(Action::Write {
            op,
            target,
            content,
            mtime_s,
            expect,
        });
    }

    fn maybe_publish(&mut self) {
        if self.publishing.is_some()
            || (self.unpublished.is_empty() && self.unpublished_copies.is_empty())
        {
            return;
        }
        if self.publish_backoff.is_some_and(|b| b.due > self.now) {
            return;
        }
        let paths: Vec<(RelPath, Cap)> = self
            .unpublished
            .iter()
            .filter_map(|p| self.current.get(p).map(|c| (p.clone(), c.snapshot.clone())))
            .collect();
        let copies: Vec<(RelPath, String, Cap)> = self
            .unpublished_copies
            .iter()
            .filter_map(|(p, a)| {
                let c = self.conflicts.get(p)?.get(a)?;
                Some((p.clone(), a.clone(), c.snapshot.clone()))
            })
            .collect();
        let entries = paths
            .iter()
            .map(|(p, c)| (entry_name(p), c.clone()))
            .chain(
                copies
                    .iter()
                    .map(|(p, a, c)| (conflict_entry_name(p, a), c.clone())),
            )
            .collect();
        let op = self.new_op(Op::Publish { paths, copies });
        self.publishing = Some(op);
        self.out.push_back(Action::Publish { op, entries });
    }

    fn need_fetch(&mut self, cap: Cap, path: &RelPath) {
        let f = self
            .fetching
            .entry(cap.clone())
            .or_insert_with(|| Fetching {
                listed_as: path.clone(),
                waiters: BTreeSet::new(),
                in_flight: false,
                backoff: None,
            });
        f.waiters.insert(path.clone());
        if !f.in_flight && f.backoff.is_none() {
            self.send_fetch(cap);
        }
    }

    fn send_fetch(&mut self, cap: Cap) {
        if let Some(f) = self.fetching.get_mut(&cap) {
            f.in_flight = true;
            let listed_as = f.listed_as.clone();
            self.out.push_back(Action::Fetch { cap, listed_as });
        }
    }

    // ----- state --------------------------------------------------------

    fn set_current(&mut self, path: &RelPath, cur: Current) {
        let was_present = self
            .current
            .get(path)
            .is_some_and(|c| c.local != LocalState::Absent);
        self.present =
            self.present + usize::from(cur.local != LocalState::Absent) - usize::from(was_present);
        if cur.adopting.is_none() {
            self.unsure.remove(path);
        }
        self.changes
            .push(Change::PutCurrent(path.clone(), cur.clone()));
        if cur.published {
            self.unpublished.remove(path);
        } else {
            self.unpublished.insert(path.clone());
        }
        self.current.insert(path.clone(), cur);
    }

    fn put_conflict(&mut self, c: Conflict) {
        self.changes.push(Change::PutConflict(c.clone()));
        self.work.insert(c.path.clone());
        if c.resolved {
            self.unpublished_copies
                .remove(&(c.path.clone(), c.author.clone()));
        } else {
            self.unpublished_copies
                .insert((c.path.clone(), c.author.clone()));
        }
        self.conflicts
            .entry(c.path.clone())
            .or_default()
            .insert(c.author.clone(), c);
    }

    fn remove_conflict(&mut self, path: &RelPath, author: &str) {
        self.changes
            .push(Change::RemoveConflict(path.clone(), author.to_owned()));
        self.work.insert(path.clone());
        self.unpublished_copies
            .remove(&(path.clone(), author.to_owned()));
        if let Some(m) = self.conflicts.get_mut(path) {
            m.remove(author);
            if m.is_empty() {
                self.conflicts.remove(path);
            }
        }
    }

    /// Drops the resolved records of a version a new snapshot names as a
    /// parent (their copies are already gone; other copies of the same
    /// version are removed by the clean-up, file and all).
    fn drop_conflict_with(&mut self, path: &RelPath, snapshot: &Cap) {
        let authors: Vec<String> = self
            .conflicts
            .get(path)
            .map(|m| {
                m.values()
                    .filter(|c| c.resolved && c.snapshot == *snapshot)
                    .map(|c| c.author.clone())
                    .collect()
            })
            .unwrap_or_default();
        for a in authors {
            self.remove_conflict(path, &a);
        }
    }

    fn remember(&mut self, info: SnapshotInfo) {
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(info.cap.clone(), info);
    }

    fn lookup(&mut self, cap: &Cap) -> Option<SnapshotInfo> {
        if let Some(i) = self.cache.get(cap) {
            return Some(i.clone());
        }
        match self.store.snapshot(cap) {
            Ok(Some(i)) => {
                self.remember(i.clone());
                Some(i)
            }
            Ok(None) => None,
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    /// Answers an ancestry question, asking for a fetch when the DAG has a gap.
    fn ancestry(&mut self, a: &Cap, b: &Cap, path: &RelPath) -> Answer {
        let Engine {
            cache, store, bad, ..
        } = self;
        let mut lookup = |c: &Cap| -> Option<SnapshotInfo> {
            if let Some(i) = cache.get(c) {
                return Some(i.clone());
            }
            let i = store.snapshot(c).ok().flatten()?;
            cache.insert(c.clone(), i.clone());
            Some(i)
        };
        let is_bad = |c: &Cap| bad.contains_key(c);
        let answer = is_ancestor(a, b, &mut lookup, &is_bad);
        if let Answer::Need(cap) = &answer {
            self.need_fetch(cap.clone(), path);
        }
        answer
    }

    fn commit(&mut self) {
        if self.changes.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.changes);
        if let Err(e) = self.store.commit(&changes) {
            self.fail(e);
        }
    }

    /// Local state cannot be written: stop, so nothing is done that would
    /// not be remembered.
    fn fail(&mut self, e: StoreError) {
        self.fatal = Some(e.to_string());
        self.out.clear();
    }

    /// True if anything below directory `dir` is still queued, in flight or
    /// waiting for a remote version to be taken in.
    fn work_below(&self, dir: &RelPath) -> bool {
        let below = |p: &RelPath| p != dir && p.starts_with(dir);
        self.busy.keys().any(below)
            || self.observed.keys().any(below)
            || self.backoff.keys().any(below)
            || self.work.iter().any(below)
            || self
                .candidates
                .iter()
                .any(|(p, c)| !c.is_empty() && below(p))
    }

    /// Schedules another try of a path after a failure, later each time.
    fn retry_later(&mut self, path: &RelPath) {
        let attempts = self.failures.entry(path.clone()).or_insert(0);
        *attempts += 1;
        let prev = Backoff {
            due: self.now,
            attempts: *attempts - 1,
        };
        self.backoff
            .insert(path.clone(), Backoff::after_failure(Some(prev), self.now));
    }

    fn error(&mut self, path: Option<RelPath>, message: String) {
        if self.errors.len() >= MAX_ERRORS {
            self.errors.pop_front();
        }
        self.errors.push_back(StatusError {
            at: self.now,
            path,
            message,
        });
    }

    fn error_once(&mut self, message: String) {
        if !self.errors.iter().any(|e| e.message == message) {
            self.error(None, message);
        }
    }
}
