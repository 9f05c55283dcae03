//! The filesystem watcher: turns inotify events into debounced batches of
//! fresh local states for the engine.
//!
//! Why it looks like this:
//!
//! * **Debounced per path.** A path is reported only once it has been quiet
//!   for `pending_delay` (1 s by default, down to ~100 ms for tests), so a
//!   file still being written is not uploaded half-done; a path that never
//!   goes quiet (a growing log) is reported anyway after [`MAX_WAIT`]. The
//!   executor re-checks the state around every upload, so a late write is
//!   caught there too.
//! * **Done when the writer says so.** A file whose last event is its
//!   writer closing it (`IN_CLOSE_WRITE`), a file renamed into place and a
//!   deletion have nothing more coming: they are reported after only
//!   [`SETTLED_QUIET`], which merely gathers a burst into one batch. Such a
//!   file is also entered in [`SettledFiles`] with the ctime it had when
//!   reported, so the executor skips its own quiet wait for exactly that
//!   state; any later write moves the ctime (and sends a modify event that
//!   takes the path back to the full delay), so a file written again after
//!   its close waits as any other.
//! * **States, not events.** Events only say *which* paths to look at; each
//!   reported path is `lstat`ed ([`fsops::stat`]) when it is due, and reported
//!   with what is there now (`Absent` if gone). A path that became a symlink
//!   or special file is not reported at all, just as a scan lists it as
//!   skipped rather than deleted; ignored paths are not reported either.
//! * **Never guess when track is lost.** A kernel queue overflow, a watcher
//!   error, the inotify watch limit, more than [`MAX_PENDING`] paths pending,
//!   a directory moved away (whose former contents inotify does not list),
//!   or the folder (or its marker) disappearing all produce
//!   [`WatchMsg::Rescan`] instead: the caller runs a full scan. (inotify does
//!   not say whether a path renamed away was a directory, so the watcher
//!   keeps the set of directories it knows — one walk at start, then events —
//!   and asks for a rescan only when one of those is renamed away; deleting a
//!   tree needs none, since its files are each reported deleted first.)
//! * **New directories are walked.** inotify watches a new directory only
//!   once it exists, so files created in it before the watch was added would
//!   be missed; when a directory appears (created or moved in), its subtree is
//!   scanned and reported with it.
//! * **Ignored and internal paths are dropped**, except conflict copies,
//!   which the engine needs to see.
//!
//! One inotify watch per directory that is not ignored or internal; the
//! limit is `fs.inotify.max_user_watches`. Symlinks are not followed. We
//! place the watches ourselves, each before its directory is read (at
//! start, when a directory appears, when the ignore rules change), rather
//! than through `notify`'s recursive mode: that one `lstat`s every file of
//! the tree by its full path to find the directories (100,000 files: a
//! third of a restart's time), and watches ignored trees too.
//!
//! One thread per folder does the debouncing; dropping the [`WatchHandle`]
//! stops it and the inotify thread. (Our own debouncer rather than
//! `notify-debouncer-full`: that one reports events after a fixed delay,
//! while this one reports *states* per path, caps the wait of a path that
//! never goes quiet, and turns lost track into a rescan — the rules above.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mf_core::relpath::{RelPath, META_DIR};
use mf_core::store::LocalState;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::fsops::{self, FsError};
use crate::ignore::IgnoreRules;
use crate::scan;

/// The default quiet time before a changed path is reported.
pub const DEFAULT_PENDING_DELAY: Duration = Duration::from_secs(1);

/// How long a settled path (closed after writing, renamed into place,
/// deleted) waits before it is reported: just enough to batch a burst.
pub const SETTLED_QUIET: Duration = Duration::from_millis(30);

/// Most entries [`SettledFiles`] holds; past it, it starts afresh (which
/// only costs the forgotten files the executor's quiet wait).
const MAX_SETTLED: usize = 1 << 16;

/// Files the watcher saw settled (see the module comment), each with the
/// ctime it had when reported. Shared by the watcher, which enters files,
/// and the executor, which asks before waiting for a file to go quiet.
#[derive(Clone, Debug, Default)]
pub struct SettledFiles(Arc<std::sync::Mutex<HashMap<RelPath, i64>>>);

impl SettledFiles {
    fn insert(&self, path: RelPath, ctime_ns: i64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SETTLED {
            map.clear();
        }
        map.insert(path, ctime_ns);
    }

    /// Whether `path` was reported settled in exactly the state whose
    /// ctime is `ctime_ns` (the entry is used up either way).
    pub fn take(&self, path: &RelPath, ctime_ns: i64) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(path) == Some(ctime_ns)
    }

    /// Forgets every entry and the room they took. Nothing takes the
    /// entries of the files we wrote ourselves, so after a reader's burst
    /// of downloads the map is full (4 MB at its bound) for nothing. An
    /// entry saves an upload at most the quiet time after its file's last
    /// change (see the executor's `quiet_wait`): forgetting one costs that
    /// little, once.
    pub fn forget(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = HashMap::new();
    }
}

/// A path that keeps changing is reported after this long anyway (or after
/// twice the pending delay, if that is longer).
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// More pending paths than this (or a new directory with more entries)
/// is reported as [`WatchMsg::Rescan`]: a full scan is cheaper than
/// stat'ing each.
pub const MAX_PENDING: usize = 10_000;

/// What the watcher tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMsg {
    /// These paths changed; their states now (`Absent` if gone). Sorted, each
    /// path once. Feed to the engine as `Event::LocalChanged`.
    Changed(Vec<(RelPath, LocalState)>),
    /// The watcher lost track (the reason says why): run a full scan.
    Rescan(String),
}

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The folder or its marker is missing.
    #[error(transparent)]
    Folder(io::Error),
    /// inotify refused.
    #[error("cannot watch {root}: {source}{hint}")]
    Notify {
        /// The folder.
        root: PathBuf,
        /// What notify said.
        source: notify::Error,
        /// Advice, if any.
        hint: &'static str,
    },
}

/// The inotify watches, placed by the debounce thread as directories
/// appear; `None` once the handle is dropped (which stops notify's thread).
#[derive(Clone)]
struct Watches(Arc<Mutex<Option<RecommendedWatcher>>>);

impl Watches {
    /// Watches directory `dir` (not its subdirectories). A directory gone
    /// meanwhile is nothing to watch.
    fn add(&self, dir: &Path) -> Result<(), notify::Error> {
        let mut watcher = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = watcher.as_mut() else {
            return Ok(());
        };
        match w.watch(dir, RecursiveMode::NonRecursive) {
            Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => Ok(()),
            Err(notify::Error {
                kind: notify::ErrorKind::Io(io),
                ..
            }) if io.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Watches every directory below `root` that the rules leave in, each
    /// before it is read; returns them, or the first failure.
    fn add_tree(&self, root: &Path, rules: &IgnoreRules) -> Result<Vec<RelPath>, notify::Error> {
        let mut failed = None;
        let dirs = scan::watch_dirs(root, rules, &mut self.adder(&mut failed));
        match (failed, dirs) {
            (Some(e), _) => Err(e),
            (None, Some(dirs)) => Ok(dirs),
            (None, None) => Err(notify::Error::path_not_found().add_path(root.to_path_buf())),
        }
    }

    /// A walk's hook that watches each directory, keeping the first
    /// failure in `failed` (which stops the walk).
    fn adder<'a>(
        &'a self,
        failed: &'a mut Option<notify::Error>,
    ) -> impl FnMut(&Path) -> bool + 'a {
        move |dir| match self.add(dir) {
            Ok(()) => true,
            Err(e) => {
                *failed = Some(e);
                false
            }
        }
    }

    fn stop(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// A running watcher. Dropping it stops the watcher cleanly (the debounce
/// thread is joined; pending, unreported paths are discarded).
pub struct WatchHandle {
    watches: Watches,
    ctl: std_mpsc::Sender<Msg>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    ignore: Arc<RwLock<Arc<IgnoreRules>>>,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle").finish_non_exhaustive()
    }
}

impl WatchHandle {
    /// Replaces the ignore rules (after `.magic-folder-ignore` changed).
    /// Applies to paths reported from now on, and directories no longer
    /// ignored are watched from now on; the caller should also rescan.
    pub fn set_ignore(&self, rules: IgnoreRules) {
        *self.ignore.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
        let _ = self.ctl.send(Msg::Rewatch);
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Stops the inotify thread, which drops its end of the channel.
        self.watches.stop();
        let _ = self.ctl.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum Msg {
    Fs(notify::Result<notify::Event>),
    /// The ignore rules changed: watch what they no longer leave out.
    Rewatch,
    Stop,
}

/// Starts watching the folder at `root` (recursively) and sends
/// [`WatchMsg`]s to `tx` until the handle is dropped or `tx`'s receiver is.
///
/// `pending_delay` is the quiet time before a path is reported
/// ([`DEFAULT_PENDING_DELAY`]; settled paths wait less, and are entered in
/// `settled`); `ignore` decides which paths are dropped
/// (replace later with [`WatchHandle::set_ignore`]). Fails if the folder or
/// its marker is missing, or inotify refuses (e.g. the watch limit).
///
/// Blocking: it walks the tree's directories to place the watches (their
/// files are not stat'ed); from async code, call it inside `spawn_blocking`.
pub fn spawn(
    root: PathBuf,
    ignore: IgnoreRules,
    pending_delay: Duration,
    settled: SettledFiles,
    tx: mpsc::Sender<WatchMsg>,
) -> Result<WatchHandle, WatchError> {
    fsops::check_marker(&root).map_err(WatchError::Folder)?;
    let root = std::fs::canonicalize(&root).map_err(WatchError::Folder)?;
    let (ctl, rx) = std_mpsc::channel();
    let events = ctl.clone();
    let notify_err = |source: notify::Error| {
        let hint = match source.kind {
            notify::ErrorKind::MaxFilesWatch => {
                " (inotify watch limit reached: raise fs.inotify.max_user_watches)"
            }
            _ => "",
        };
        WatchError::Notify {
            root: root.clone(),
            source,
            hint,
        }
    };
    let watcher = RecommendedWatcher::new(
        move |ev| {
            let _ = events.send(Msg::Fs(ev));
        },
        notify::Config::default().with_follow_symlinks(false),
    )
    .map_err(notify_err)?;
    let watches = Watches(Arc::new(Mutex::new(Some(watcher))));
    let known_dirs = match watches.add_tree(&root, &ignore) {
        Ok(dirs) => dirs.into_iter().collect(),
        Err(e) => {
            watches.stop();
            return Err(notify_err(e));
        }
    };

    let ignore = Arc::new(RwLock::new(Arc::new(ignore)));
    let stop = Arc::new(AtomicBool::new(false));
    let delay = pending_delay.max(Duration::from_millis(1));
    let mut state = Debouncer {
        root,
        ignore: ignore.clone(),
        delay,
        settled_quiet: SETTLED_QUIET.min(delay),
        settled,
        max_wait: MAX_WAIT.max(delay * 2),
        pending: HashMap::new(),
        next_due: None,
        known_dirs,
        watches: watches.clone(),
        rescan: None,
        out: tx,
        stop: stop.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("mf-watch".into())
        .spawn(move || state.run(rx))
        .map_err(|e| {
            WatchError::Folder(io::Error::other(format!(
                "cannot start watcher thread: {e}"
            )))
        })?;
    Ok(WatchHandle {
        watches,
        ctl,
        stop,
        thread: Some(thread),
        ignore,
    })
}

/// One path waiting to be reported.
struct Pending {
    first: Instant,
    last: Instant,
    /// Created or moved in: if it is a directory, walk it.
    appeared: bool,
    /// Moved away: if it was a directory, its contents vanished unreported.
    moved_away: bool,
    /// Nothing more is coming: the last event closed a write, moved the
    /// path in, or removed it (see the module comment).
    settled: bool,
}

impl Pending {
    /// When it is due, for a pending delay `delay` (`quiet` if settled).
    fn due(&self, delay: Duration, quiet: Duration, max_wait: Duration) -> Instant {
        let wait = if self.settled { quiet } else { delay };
        (self.last + wait).min(self.first + max_wait)
    }
}

struct Debouncer {
    root: PathBuf,
    ignore: Arc<RwLock<Arc<IgnoreRules>>>,
    delay: Duration,
    /// The wait of a settled path.
    settled_quiet: Duration,
    settled: SettledFiles,
    max_wait: Duration,
    pending: HashMap<RelPath, Pending>,
    /// No pending path is due before this.
    next_due: Option<Instant>,
    /// The directories we know of (and watch), to tell when one is moved
    /// away.
    known_dirs: HashSet<RelPath>,
    watches: Watches,
    /// A full rescan is needed, and why.
    rescan: Option<String>,
    out: mpsc::Sender<WatchMsg>,
    stop: Arc<AtomicBool>,
}

impl Debouncer {
    fn run(&mut self, rx: std_mpsc::Receiver<Msg>) {
        loop {
            let timeout = match self.next_due {
                Some(t) => t.saturating_duration_since(Instant::now()),
                None if self.rescan.is_some() => Duration::ZERO,
                None => Duration::from_secs(3600),
            };
            match rx.recv_timeout(timeout) {
                Ok(Msg::Stop) | Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                Ok(Msg::Fs(ev)) => {
                    self.on_event(ev);
                    // Take everything already queued before looking at the clock.
                    loop {
                        match rx.try_recv() {
                            Ok(Msg::Fs(ev)) => self.on_event(ev),
                            Ok(Msg::Rewatch) => self.rewatch(),
                            Ok(Msg::Stop) => return,
                            Err(_) => break,
                        }
                    }
                }
                Ok(Msg::Rewatch) => self.rewatch(),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            let due = self.next_due.is_some_and(|t| t <= now);
            if (due || self.rescan.is_some()) && !self.flush(now) {
                return;
            }
        }
    }

    fn rules(&self) -> Arc<IgnoreRules> {
        self.ignore
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Watches every directory the rules now leave in (again: a watch
    /// placed twice is one watch).
    fn rewatch(&mut self) {
        let rules = self.rules();
        match self.watches.add_tree(&self.root, &rules) {
            Ok(dirs) => self.known_dirs = dirs.into_iter().collect(),
            Err(e) => self.watch_failed(e),
        }
    }

    /// A watch could not be placed: what happens in that directory is
    /// seen only by scans.
    fn watch_failed(&mut self, e: notify::Error) {
        let why = match e.kind {
            notify::ErrorKind::MaxFilesWatch => "inotify watch limit reached (raise \
                fs.inotify.max_user_watches); new directories are not watched"
                .to_owned(),
            _ => format!("cannot watch a directory: {e}"),
        };
        self.need_rescan(why);
    }

    fn need_rescan(&mut self, why: impl Into<String>) {
        if self.rescan.is_none() {
            self.rescan = Some(why.into());
        }
    }

    fn on_event(&mut self, ev: notify::Result<notify::Event>) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                self.need_rescan(format!("watcher error: {e}"));
                return;
            }
        };
        if ev.need_rescan() {
            self.need_rescan("the kernel's event queue overflowed");
        }
        // (appeared, moved away, settled: `None` leaves it as it was)
        let (appeared, moved_away, settled) = match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => (false, false, Some(true)),
            EventKind::Access(_) | EventKind::Other => return,
            EventKind::Create(_) => (true, false, Some(false)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => (true, false, Some(true)),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => (false, true, Some(true)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                // paths = [from, to]; the separate From and To events carry the same.
                return;
            }
            EventKind::Modify(ModifyKind::Name(_)) => (true, true, Some(false)),
            // A chmod or utime after the close (cp -p, rsync) adds no data.
            EventKind::Modify(ModifyKind::Metadata(_)) => (false, false, None),
            EventKind::Remove(_) => (false, false, Some(true)),
            _ => (false, false, Some(false)),
        };
        let removed = matches!(ev.kind, EventKind::Remove(_)) || moved_away;
        let rules = self.rules();
        let now = Instant::now();
        for path in &ev.paths {
            let Some(rel) = self.relative(path, removed) else {
                continue;
            };
            // Dropped only if ignored whatever it turns out to be.
            if rules.is_ignored(&rel, false) && rules.is_ignored(&rel, true) {
                continue;
            }
            // A new directory is watched at once, so that what is written
            // in it is heard of as it happens; what came before the watch,
            // its walk finds when it is reported.
            if ev.kind == EventKind::Create(CreateKind::Folder) && !rules.is_ignored(&rel, true) {
                if let Err(e) = self.watches.add(path) {
                    self.watch_failed(e);
                }
            }
            let p = self.pending.entry(rel).or_insert(Pending {
                first: now,
                last: now,
                appeared: false,
                moved_away: false,
                settled: false,
            });
            p.last = now;
            p.appeared |= appeared;
            p.moved_away |= moved_away;
            p.settled = settled.unwrap_or(p.settled);
            let due = p.due(self.delay, self.settled_quiet, self.max_wait);
            self.next_due = Some(self.next_due.map_or(due, |t| t.min(due)));
        }
        if self.pending.len() > MAX_PENDING {
            self.pending.clear();
            self.next_due = None;
            self.need_rescan(format!("more than {MAX_PENDING} paths changed at once"));
        }
    }

    /// The folder-relative path of an event path, or `None` for paths we do
    /// not report (outside, not UTF-8, not a valid RelPath).
    fn relative(&mut self, path: &Path, removed: bool) -> Option<RelPath> {
        let rest = path.strip_prefix(&self.root).ok()?;
        let s = rest.to_str()?;
        if s.is_empty() {
            if removed {
                self.need_rescan("the folder itself was moved or deleted");
            }
            return None;
        }
        if s == META_DIR && removed {
            self.need_rescan(format!("the folder marker {META_DIR} was moved or deleted"));
            return None;
        }
        RelPath::new(s).ok()
    }

    /// Reports every due path (or a rescan). False when the receiver is gone
    /// or we are told to stop.
    fn flush(&mut self, now: Instant) -> bool {
        let mut due: Vec<RelPath> = Vec::new();
        let mut next: Option<Instant> = None;
        if self.rescan.is_none() {
            for (path, p) in &self.pending {
                let at = p.due(self.delay, self.settled_quiet, self.max_wait);
                if at <= now {
                    due.push(path.clone());
                } else {
                    next = Some(next.map_or(at, |t| t.min(at)));
                }
            }
        }
        self.next_due = next;
        due.sort_unstable();
        let rules = self.rules();
        let mut batch: BTreeMap<RelPath, LocalState> = BTreeMap::new();
        for path in due {
            if self.rescan.is_some() {
                break;
            }
            let Some(p) = self.pending.remove(&path) else {
                continue;
            };
            let state = match fsops::stat(&self.root, &path) {
                Ok(s) => s,
                Err(e) => match fsops::fs_error(&e) {
                    Some(FsError::FolderUnavailable { .. }) => {
                        self.need_rescan(e.to_string());
                        break;
                    }
                    // Not syncable (a symlink or special file at or above
                    // it): a scan reports it as skipped, and nothing is
                    // taken for deleted; so nothing to report.
                    Some(_) => continue,
                    None => {
                        tracing::warn!("watcher: cannot stat {path}: {e}");
                        continue;
                    }
                },
            };
            let is_dir = state == LocalState::Dir;
            if is_dir {
                let fresh = self.known_dirs.insert(path.clone());
                if (fresh || p.appeared) && !rules.is_ignored(&path, true) {
                    let mut failed = None;
                    let mut watch = self.watches.adder(&mut failed);
                    let sub =
                        scan::scan_subtree(&self.root, &path, &rules, MAX_PENDING, &mut watch);
                    drop(watch);
                    if let Some(e) = failed {
                        self.watch_failed(e);
                    }
                    match sub {
                        Some(sub) => {
                            for (child, st) in sub.entries {
                                if st == LocalState::Dir {
                                    self.known_dirs.insert(child.clone());
                                }
                                batch.insert(child, st);
                            }
                        }
                        None => {
                            self.need_rescan(format!(
                                "new directory {path} holds too many entries"
                            ));
                        }
                    }
                }
            } else if self.known_dirs.remove(&path) {
                self.known_dirs.retain(|d| !d.starts_with(&path));
                if p.moved_away {
                    self.need_rescan(format!("directory {path} was moved away"));
                }
            }
            if rules.is_ignored(&path, is_dir) {
                continue;
            }
            if let (true, LocalState::File(s)) = (p.settled, &state) {
                self.settled.insert(path.clone(), s.ctime_ns);
            }
            batch.insert(path, state);
        }
        if !batch.is_empty() && !self.send(WatchMsg::Changed(batch.into_iter().collect())) {
            return false;
        }
        if let Some(why) = self.rescan.take() {
            // The scan will see everything that is pending now.
            self.pending.clear();
            self.next_due = None;
            if !self.send(WatchMsg::Rescan(why)) {
                return false;
            }
        }
        true
    }

    /// Sends without blocking forever: waits while the channel is full, but
    /// gives up when told to stop or when the receiver is gone.
    fn send(&self, mut msg: WatchMsg) -> bool {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            match self.out.try_send(msg) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(m)) => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}
