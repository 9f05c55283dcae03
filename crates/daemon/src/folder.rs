//! The per-folder service loop: the I/O driver around one [`Engine`].
//!
//! The engine decides; this loop only carries things across. Each folder runs
//! one tokio task that owns its engine (and through it the folder's
//! [`SqliteStore`]), and:
//!
//! 1. drains [`Engine::poll_action`] while fewer than [`MAX_IN_FLIGHT`]
//!    ([`MAX_IN_FLIGHT_EMBEDDED`] on an embedded grid,
//!    [`MAX_IN_FLIGHT_PACKED`] in a folder of packed snapshots)
//!    effects run, starting
//!    each action on its own task through the [`Executor`] (so a slow
//!    download does not hold up a scan; publishes and polls go first);
//! 2. waits, with `tokio::select!`, for whichever comes first: an effect's
//!    result (fed back with [`Engine::handle`]), a batch from the filesystem
//!    watcher (`Changed` → [`Event::LocalChanged`], `Rescan` →
//!    [`Engine::request_scan`]), the engine's next timer
//!    ([`Engine::poll_timeout`] → [`Engine::handle_timeout`]), a control
//!    request from the API (scan, poll, status) or shutdown.
//!
//! Time given to the engine is milliseconds on a monotonic clock that starts
//! when the folder starts ([`tokio::time::Instant`]); status converts it to
//! wall-clock time for people.
//!
//! Shutdown stops starting new effects, lets the running ones finish for a
//! short grace period (their results are still committed, so less work is
//! redone after the restart), then drops the rest. Nothing depends on a
//! clean shutdown: every engine decision is committed per event, the folder
//! itself is the queue of work, and writes are atomic, so `kill -9` at any
//! point only costs repeated work.
//!
//! The loop also copies the last scan and poll times and new errors into the
//! state database (through a second connection), so `magic-folder status`
//! can show them while no daemon runs.
//!
//! On a Tahoe grid a [`WriteGate`] holds grid writes (`Upload`, `Publish`)
//! back while the node has fewer than `shares.happy` storage servers: they
//! are parked here, in order, shown as queued with the reason in status, and
//! started as soon as the gate reopens (see [`crate::health`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mf_core::engine::{Action, DeclaredAuthor, Engine, EngineConfig, Event, Millis, Status};
use mf_core::relpath::RelPath;
use mf_core::snapshot::Author;
use mf_grid::Grid;
use mf_state::SqliteStore;
use tokio::sync::{mpsc, oneshot, watch, RwLock};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, error, info, warn, Instrument};

use crate::api::{ConflictInfo, ErrorInfo, FolderState, FolderStatus, VersionsArea};
use crate::brief::Brief;
use crate::chunked::Chunking;
use crate::config::{ConfigDir, FolderConfig, GridLocation};
use crate::events::Telemetry;
use crate::executor::Executor;
use crate::health::{writes_to_grid, WriteGate};
use crate::pack::Snapshots;
use crate::watch::WatchMsg;

/// Most effects one folder runs at once. Enough to overlap grid latency,
/// few enough not to swamp two cores or a Tahoe node.
pub const MAX_IN_FLIGHT: usize = 8;

/// Most effects one folder runs at once when its snapshots are packed:
/// most effects then cost the grid nothing (their snapshots share a pack,
/// small contents are literal), and packs are full only when enough run
/// (see [`crate::pack::MEMBERS_IN_FLIGHT`]); transfers stay at
/// [`transfers_at_once`] (`ExecutorConfig::transfers`).
pub const MAX_IN_FLIGHT_PACKED: usize = crate::pack::MEMBERS_IN_FLIGHT;

/// Most transfers one folder runs at once on `grid`.
fn transfers_at_once(grid: &GridLocation) -> usize {
    match grid {
        GridLocation::Embedded { .. } => MAX_IN_FLIGHT_EMBEDDED,
        GridLocation::Tahoe { .. } => MAX_IN_FLIGHT,
    }
}

/// Most effects one folder runs at once on an embedded grid. Its effects
/// wait mostly on fsync, whose latency overlaps well: crash-safe writes of
/// 10,000 small files took 7.2–7.9 s one at a time, 2.0–2.5 s 8 at a time
/// and 1.4 s 32 at a time on the 2-core development machine.
pub const MAX_IN_FLIGHT_EMBEDDED: usize = 32;

/// Most effects the engine asks for before earlier ones finish
/// ([`EngineConfig::max_pending_effects`]): far more than run at once, so
/// the loop always has the next one ready, and a few hundred kilobytes at
/// most. While the write gate is closed, parked writes count too: past this
/// many, downloads also wait for the grid to heal.
pub const MAX_PENDING_EFFECTS: usize = 1024;
// Room for the next effects while the most a folder runs are running.
const _: () = assert!(MAX_PENDING_EFFECTS > MAX_IN_FLIGHT_PACKED);

/// How long shutdown waits for running effects before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long an API request waits for the loop to answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// How often status is copied into the state database. Not more often:
/// [`Engine::status`] walks every path (~10–25 ms at 100,000 files), and
/// this was a third of an idle daemon's CPU time at 1 s.
const PERSIST_EVERY: Duration = Duration::from_secs(5);
/// How often transfer progress and state changes go to the event stream.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Entries handled after which, once the loop runs out of work, the work
/// tables shrink and the caches that serve work in flight are dropped.
const RELEASE_AFTER: usize = 1_000;

/// Roughly how many entries handling `event` went through.
fn handled_size(event: &Event) -> usize {
    match event {
        Event::Scanned(Ok(report)) => report.entries.len(),
        Event::Polled(Ok(listings)) => listings
            .iter()
            .map(|l| l.entries.as_ref().map_or(0, |e| e.len()))
            .sum(),
        _ => 1,
    }
}

/// How often replaced files older than the retention period are removed
/// from the versions area (also once at start).
const PRUNE_VERSIONS_EVERY: Duration = Duration::from_secs(3600);

/// Setting keys in the state database.
const KEY_LAST_SCAN: &str = "daemon.last_scan_unix_ms";
const KEY_LAST_POLL: &str = "daemon.last_poll_unix_ms";

/// The running folders of a daemon, by name; shared with the API.
pub type Folders = Arc<RwLock<BTreeMap<String, FolderHandle>>>;

/// A request to a folder's loop.
#[derive(Debug)]
pub enum Control {
    /// Scan the whole folder as soon as possible.
    Scan,
    /// Poll the other participants as soon as possible.
    Poll,
    /// Report the current status.
    Status(oneshot::Sender<FolderStatus>),
    /// Report the paths whose local change is not uploaded yet.
    LocalChanges(oneshot::Sender<Vec<RelPath>>),
}

/// The daemon's handle on one running folder.
#[derive(Debug)]
pub struct FolderHandle {
    /// The config it runs with (following the folder to a new format
    /// changes it: see [`crate::convert`]).
    config: Arc<Mutex<FolderConfig>>,
    control: mpsc::Sender<Control>,
    shutdown: watch::Sender<bool>,
    /// Why the loop stopped, if it stopped by itself.
    failure: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

/// Answers the status while the folder follows a new format: it syncs
/// nothing meanwhile, so it has no list of local changes to give (the
/// question fails) and a scan or poll waits for the folder to start again,
/// which does both.
fn answer_while_following(config: &FolderConfig, control: Control) {
    match control {
        Control::Status(reply) => {
            let _ = reply.send(FolderStatus {
                name: config.name.clone(),
                local_path: config.local_path.clone(),
                state: FolderState::Syncing,
                note: Some("following the folder to its new format".to_owned()),
                ..FolderStatus::default()
            });
        }
        Control::LocalChanges(_) | Control::Scan | Control::Poll => {}
    }
}

/// Why a folder's service loop returned.
enum Exit {
    /// It was asked to stop.
    Stopped,
    /// The collective records a new format: follow it, then run again.
    FormatChanged,
}

impl FolderHandle {
    /// Starts the service loop of one folder on the current tokio runtime,
    /// with grid writes held back while `gate` is closed (see
    /// [`crate::health`]). Its state is in `config`'s directory, where it
    /// also saves its config when it follows the folder to a new format.
    pub fn spawn<G: Grid>(
        config_dir: ConfigDir,
        config: FolderConfig,
        grid: Arc<G>,
        mut gate: Option<WriteGate>,
        telemetry: Telemetry,
    ) -> FolderHandle {
        let (control_tx, mut control_rx) = mpsc::channel(32);
        let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
        let failure = Arc::new(Mutex::new(None));
        let span = tracing::info_span!("folder", name = %config.name);
        let shared = Arc::new(Mutex::new(config.clone()));
        let task = {
            let (shared, failure) = (shared.clone(), failure.clone());
            let state_db = config_dir.state_db(&config.name);
            tokio::spawn(
                async move {
                    let name = config.name.clone();
                    let events = telemetry.events.clone();
                    events.publish(crate::events::folder_event("folder-added", &name));
                    let mut config = config;
                    let mut required = false;
                    let outcome = 'serve: loop {
                        // Stopping in the middle of a move is as safe as a
                        // crash there. Meanwhile status says what happens.
                        let follow =
                            crate::convert::follow(&config_dir, config.clone(), &grid, required);
                        tokio::pin!(follow);
                        let followed = loop {
                            tokio::select! {
                                f = &mut follow => break f,
                                _ = shutdown_rx.changed() => break 'serve Ok(()),
                                Some(c) = control_rx.recv() => answer_while_following(&config, c),
                            }
                        };
                        config = match followed {
                            Ok(c) => c,
                            Err(e) => break Err(e),
                        };
                        *shared.lock().expect("not poisoned") = config.clone();
                        let exit = run(
                            config.clone(),
                            grid.clone(),
                            state_db.clone(),
                            &mut control_rx,
                            shutdown_rx.clone(),
                            &mut gate,
                            telemetry.clone(),
                        )
                        .await;
                        match exit {
                            Ok(Exit::FormatChanged) => required = true,
                            Ok(Exit::Stopped) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    };
                    events.publish(crate::events::folder_event("folder-left", &name));
                    match outcome {
                        Ok(()) => info!("stopped"),
                        Err(e) => {
                            error!("stopped: {e}");
                            *failure.lock().expect("not poisoned") = Some(e);
                        }
                    }
                }
                .instrument(span),
            )
        };
        FolderHandle {
            config: shared,
            control: control_tx,
            shutdown: shutdown_tx,
            failure,
            task,
        }
    }

    /// The folder's configuration, as it runs.
    pub fn config(&self) -> FolderConfig {
        self.config.lock().expect("not poisoned").clone()
    }

    /// Why the loop stopped, if it has.
    pub fn failure(&self) -> Option<String> {
        if let Some(f) = self.failure.lock().expect("not poisoned").clone() {
            return Some(f);
        }
        self.task
            .is_finished()
            .then(|| "the folder's service stopped".to_owned())
    }

    /// Asks the loop for its live status. A folder whose loop stopped
    /// reports `running: false` and why.
    pub async fn status(&self) -> Result<FolderStatus, String> {
        if let Some(f) = self.failure() {
            return Ok(FolderStatus {
                name: self.config().name,
                local_path: self.config().local_path,
                state: FolderState::Error,
                state_reason: Some(f.clone()),
                note: Some(format!("not syncing: {f}")),
                ..FolderStatus::default()
            });
        }
        self.ask(Control::Status).await
    }

    /// The paths whose local change is not uploaded yet.
    pub async fn local_changes(&self) -> Result<Vec<RelPath>, String> {
        self.ask(Control::LocalChanges).await
    }

    /// Sends the loop a question and waits for its answer.
    async fn ask<T>(
        &self,
        question: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.send(question(tx)).await?;
        match tokio::time::timeout(CONTROL_TIMEOUT, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err("the folder's service stopped".into()),
            Err(_) => Err("the folder's service did not answer in time".into()),
        }
    }

    /// Asks for a full scan now.
    pub async fn request_scan(&self) -> Result<(), String> {
        self.send(Control::Scan).await
    }

    /// Asks for a poll now.
    pub async fn request_poll(&self) -> Result<(), String> {
        self.send(Control::Poll).await
    }

    async fn send(&self, c: Control) -> Result<(), String> {
        match tokio::time::timeout(CONTROL_TIMEOUT, self.control.send(c)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the folder's service stopped".into()),
            Err(_) => Err("the folder's service is not answering".into()),
        }
    }

    /// Stops the loop and waits for it (at most the shutdown grace period
    /// plus a little).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let name = self.config().name;
        let mut task = self.task;
        if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            warn!(folder = %name, "did not stop in time; aborting it");
            task.abort();
        }
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Converts the engine's clock to wall-clock time.
#[derive(Clone, Copy, Debug)]
struct Clock {
    base: Instant,
    base_unix_ms: u64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            base: Instant::now(),
            base_unix_ms: unix_ms_now(),
        }
    }
    fn now(&self) -> Millis {
        self.base.elapsed().as_millis() as Millis
    }
    fn instant(&self, t: Millis) -> Instant {
        self.base + Duration::from_millis(t)
    }
    fn unix(&self, t: Millis) -> u64 {
        self.base_unix_ms + t
    }
}

/// Turns the engine's status into the API's.
fn folder_status(
    config: &FolderConfig,
    clock: &Clock,
    s: Status,
    versions: &Mutex<Option<VersionsArea>>,
    transfers: &crate::transfers::Transfers,
) -> FolderStatus {
    // Problems are cleared when the same thing succeeds, so a poll failure
    // still listed is the last poll's.
    let unreachable = s
        .errors
        .iter()
        .rev()
        .find(|e| e.path.is_none() && e.message.starts_with("poll failed"))
        .map(|e| e.message.clone());
    let (state, state_reason) = match (&s.fatal, unreachable) {
        (Some(f), _) => (FolderState::Error, Some(f.clone())),
        (None, Some(why)) => (FolderState::Offline, Some(why)),
        (None, None) if s.queued + s.in_flight + s.unpublished > 0 => (FolderState::Syncing, None),
        (None, None) => (FolderState::UpToDate, None),
    };
    FolderStatus {
        state,
        state_reason,
        versions: *versions.lock().unwrap_or_else(|e| e.into_inner()),
        transfers: transfers.list(),
        name: config.name.clone(),
        local_path: config.local_path.clone(),
        running: s.fatal.is_none(),
        note: s.fatal.map(|f| format!("stopped: {f}")),
        files: s.files,
        directories: s.directories,
        queued: s.queued,
        in_flight: s.in_flight,
        unpublished: s.unpublished,
        conflicts: s
            .conflicts
            .into_iter()
            .map(|(p, a)| ConflictInfo {
                path: p.to_string(),
                participant: a,
            })
            .collect(),
        last_scan: s.last_scan.map(|t| clock.unix(t)),
        last_poll: s.last_poll.map(|t| clock.unix(t)),
        errors: s
            .errors
            .into_iter()
            .map(|e| ErrorInfo {
                at: clock.unix(e.at),
                path: e.path.map(|p| p.to_string()),
                message: e.message,
            })
            .collect(),
    }
}

/// Copies status into the state database for `status` without a daemon.
struct Persister {
    store: Option<SqliteStore>,
    last_scan: Option<u64>,
    last_poll: Option<u64>,
    last_error_at: u64,
}

impl Persister {
    fn open(path: &std::path::Path) -> Persister {
        let store = match SqliteStore::open(path) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("status will not be saved for offline use: {e}");
                None
            }
        };
        Persister {
            store,
            last_scan: None,
            last_poll: None,
            last_error_at: 0,
        }
    }

    fn save(&mut self, s: &FolderStatus) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let mut result = Ok(());
        if s.last_scan != self.last_scan {
            if let Some(t) = s.last_scan {
                result = result.and(store.set_setting(KEY_LAST_SCAN, &t.to_string()));
            }
            self.last_scan = s.last_scan;
        }
        if s.last_poll != self.last_poll {
            if let Some(t) = s.last_poll {
                result = result.and(store.set_setting(KEY_LAST_POLL, &t.to_string()));
            }
            self.last_poll = s.last_poll;
        }
        let since = self.last_error_at;
        for e in s.errors.iter().filter(|e| e.at > since) {
            result = result.and(
                store
                    .record_event(e.at as i64, e.path.as_deref(), "error", &e.message)
                    .map(drop),
            );
            self.last_error_at = self.last_error_at.max(e.at);
        }
        if let Err(e) = result {
            debug!("saving status for offline use: {e}");
        }
    }
}

/// Reads the last scan and poll times (Unix ms) that the folder loop saved
/// in the state database.
pub fn saved_times(reader: &mf_state::StateReader) -> (Option<u64>, Option<u64>) {
    let get = |k: &str| {
        reader
            .get_setting(k)
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
    };
    (get(KEY_LAST_SCAN), get(KEY_LAST_POLL))
}

/// Builds the executor for a folder.
pub fn executor<G: Grid>(config: &FolderConfig, grid: Arc<G>) -> Result<Executor<G>, String> {
    let author = Author::from_seed(&config.author_name, config.author_seed.0);
    let ignore = crate::ignore::IgnoreRules::load(&config.local_path).map_err(|e| e.to_string())?;
    Executor::new(
        grid,
        crate::executor::ExecutorConfig {
            root: config.local_path.clone(),
            author,
            participant: config.participant.clone(),
            collective: config.collective_cap.clone(),
            personal: config.personal_cap.clone(),
            umask: config.umask,
            ignore,
            quiet: config.pending_delay(),
            layout: config.layout,
            content: config.content,
            chunking: match config.grid {
                GridLocation::Embedded { .. } => Chunking::EMBEDDED,
                GridLocation::Tahoe { .. } => Chunking::TAHOE,
            },
            snapshots: config.snapshots,
            transfers: transfers_at_once(&config.grid),
        },
    )
    .map_err(|e| e.to_string())
}

/// The service loop of one folder; returns when `shutdown` turns true or
/// the collective records a new format, or with an error if the folder
/// cannot run at all. Grid writes wait while `gate` is closed.
async fn run<G: Grid>(
    config: FolderConfig,
    grid: Arc<G>,
    state_db: PathBuf,
    control: &mut mpsc::Receiver<Control>,
    mut shutdown: watch::Receiver<bool>,
    gate: &mut Option<WriteGate>,
    telemetry: Telemetry,
) -> Result<Exit, String> {
    if !config.local_path.is_dir() {
        return Err(format!(
            "the folder's directory {} is missing",
            config.local_path.display()
        ));
    }
    let clock = Clock::new();
    let executor = Arc::new(executor(&config, grid)?);
    let (watch_tx, mut watch_rx) = mpsc::channel::<WatchMsg>(64);
    let ignore = crate::ignore::IgnoreRules::load(&config.local_path).map_err(|e| e.to_string())?;
    // Without a watcher the folder still syncs, through periodic scans.
    // Setting the watches walks the tree's directories: not on the async
    // threads, and while the state database loads.
    let (root, delay, settled) = (
        config.local_path.clone(),
        config.pending_delay(),
        executor.settled(),
    );
    let watcher_started = tokio::task::spawn_blocking(move || {
        crate::watch::spawn(root, ignore, delay, settled, watch_tx)
    });
    let store = SqliteStore::open(&state_db).map_err(|e| e.to_string())?;
    let author = Author::from_seed(&config.author_name, config.author_seed.0);
    // Remote changes as they happen, where the grid can be watched; the
    // periodic poll stays, as a safety net where every publish is heard
    // (see `grid_watch`).
    let (published_tx, mut published_rx) = mpsc::channel::<()>(1);
    let mut poll_interval = config.poll_interval_ms;
    let grid_watcher = match &config.grid {
        GridLocation::Embedded { dir } => {
            let ours =
                mf_grid::embedded::EmbeddedGrid::mutable_dir_path_in(dir, &config.personal_cap);
            match crate::grid_watch::watch(dir, ours, published_tx) {
                Ok(w) => {
                    match crate::grid_watch::filesystem(dir) {
                        Some((_, true)) => {
                            let safety_net = crate::grid_watch::WATCHED_POLL.as_millis() as u64;
                            poll_interval = poll_interval.max(safety_net);
                        }
                        Some((fstype, false)) => info!(
                            "the grid is on a {fstype} filesystem: other machines' changes are \
                             seen at each poll"
                        ),
                        None => {}
                    }
                    Some(w)
                }
                Err(e) => {
                    warn!(
                    "cannot watch the grid at {}: {e}; the others' changes are seen at each poll",
                    dir.display()
                );
                    None
                }
            }
        }
        GridLocation::Tahoe { .. } => None,
    };
    let engine_config = EngineConfig {
        me: config.participant.clone(),
        author: DeclaredAuthor {
            name: config.author_name.clone(),
            verify_key: author.verify_key(),
        },
        poll_interval,
        scan_interval: config.scan_interval_ms,
        max_pending_effects: MAX_PENDING_EFFECTS,
    };
    let mut engine = Engine::new(store, engine_config, clock.now()).map_err(|e| e.to_string())?;
    let mut persister = Persister::open(&state_db);
    let spawned = watcher_started
        .await
        .map_err(|e| format!("starting the watcher: {e}"))?;
    let watcher = match spawned {
        Ok(w) => Some(w),
        Err(e) => {
            error!(
                "cannot watch {}: {e}; local changes are only seen by the periodic scan",
                config.local_path.display()
            );
            None
        }
    };
    let mut watcher_alive = watcher.is_some();
    info!(path = %config.local_path.display(), "syncing");

    // Each effect's event, with its kind and how long it took (for metrics).
    let mut tasks: JoinSet<(&'static str, Duration, Event)> = JoinSet::new();
    // Grid writes held back while the gate is closed, oldest first.
    let mut parked: VecDeque<Action> = VecDeque::new();
    let mut persist_tick = tokio::time::interval(PERSIST_EVERY);
    persist_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Progress and state changes for the event stream, once a second.
    let mut progress_tick = tokio::time::interval(PROGRESS_EVERY);
    progress_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_state: Option<FolderState> = None;
    // The folder's state follows from the engine's alone, so the progress
    // tick runs only while something happened since it last looked or work
    // is in flight: an idle daemon does not wake every second for nothing.
    // `housekeeping` marks a wake-up that cannot have touched the engine.
    let mut state_dirty = true;
    let mut housekeeping = false;
    // The versions area keeps replaced files for a while, then lets them go.
    // The first tick is at once: the versions area is pruned at start too.
    let mut prune_tick = tokio::time::interval(PRUNE_VERSIONS_EVERY);
    let versions_area: Arc<Mutex<Option<VersionsArea>>> = Arc::new(Mutex::new(None));
    prune_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Actions taken from the engine but not started yet. Publish, Poll and
    // Scan jump the queue: behind thousands of uploads (or downloads) they
    // would wait until all of those had started, so nothing would be
    // published until a bulk upload was nearly done and the others could not
    // download meanwhile. (The engine allows any order: the driver may run
    // all its actions concurrently.)
    let mut ready: VecDeque<Action> = VecDeque::new();
    let max_in_flight = match config.snapshots {
        Snapshots::Packed => MAX_IN_FLIGHT_PACKED,
        Snapshots::Single => transfers_at_once(&config.grid),
    };
    // Entries handled since memory was last released (see `memory`).
    let mut handled = 0;
    let mut story = crate::story::StoryLog::new();
    // Set when the loop stops to follow the folder to a new format.
    let mut following = false;
    loop {
        while let Some(notice) = engine.poll_notice() {
            telemetry.notice(&config.name, &notice);
            story.tell(notice);
        }
        while let Some(action) = engine.poll_action() {
            if matches!(action, Action::Publish { .. } | Action::Poll | Action::Scan) {
                ready.push_front(action);
            } else {
                ready.push_back(action);
            }
        }
        let gate_closed = gate.as_ref().is_some_and(WriteGate::is_closed);
        while tasks.len() < max_in_flight {
            let next = if gate_closed {
                None
            } else {
                parked.pop_front()
            };
            let Some(action) = next.or_else(|| ready.pop_front()) else {
                break;
            };
            if gate_closed && writes_to_grid(&action) {
                debug!(action = ?Brief(&action), "parked until the grid is healthy");
                parked.push_back(action);
                continue;
            }
            debug!(action = ?Brief(&action), "start");
            if let Action::Publish { entries, .. } = &action {
                // A big publish (adoptions that waited, see the engine's
                // `ADOPTED_QUIET`) leaves as much behind as the burst it
                // records: released after it too.
                handled += entries.len();
            }
            let ex = executor.clone();
            let kind = crate::metrics::op_kind(&action);
            tasks.spawn(
                async move {
                    let started = tokio::time::Instant::now();
                    let event = ex.execute(action).await;
                    (kind, started.elapsed(), event)
                }
                .in_current_span(),
            );
        }
        if handled >= RELEASE_AFTER && tasks.is_empty() {
            handled = 0;
            engine.shrink_to_fit();
            ready.shrink_to_fit();
            parked.shrink_to_fit();
            executor.release_caches();
        }
        let deadline = engine.poll_timeout().map(|t| clock.instant(t));
        state_dirty |= !std::mem::take(&mut housekeeping);
        let reporting = state_dirty || !tasks.is_empty();

        tokio::select! {
            _ = shutdown.changed() => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => match joined {
                Ok((kind, took, event)) => {
                    debug!(event = ?Brief(&event), "done");
                    let polled = matches!(event, Event::Polled(_));
                    handled += handled_size(&event);
                    telemetry.metrics.op(&config.name, kind, took);
                    let completed = match &event {
                        Event::Scanned(Ok(_)) => Some("scan-completed"),
                        Event::Polled(Ok(_)) => Some("poll-completed"),
                        _ => None,
                    };
                    if let Some(kind) = completed {
                        telemetry.events.publish(crate::events::folder_event(kind, &config.name));
                    }
                    engine.handle(clock.now(), event);
                    if polled && executor.format_changed() {
                        info!("the collective records a new format: stopping to follow it");
                        following = true;
                        break;
                    }
                }
                Err(e) => {
                    // An effect panicked: its result is lost, so the engine
                    // would wait for it for ever. Treat it like a crash.
                    return Err(format!("an operation failed unexpectedly ({e}); restart the daemon"));
                }
            },
            msg = watch_rx.recv(), if watcher_alive => match msg {
                Some(WatchMsg::Changed(changes)) => {
                    handled += changes.len();
                    if changes.iter().any(|(p, _)| p.as_str() == crate::ignore::IGNORE_FILE) {
                        reload_ignore(&config, &executor, watcher.as_ref(), &mut engine);
                    }
                    engine.handle(clock.now(), Event::LocalChanged(changes))
                }
                Some(WatchMsg::Rescan(why)) => {
                    info!("rescanning: {why}");
                    engine.request_scan();
                }
                None => {
                    warn!("the filesystem watcher stopped; relying on periodic scans");
                    watcher_alive = false;
                }
            },
            Some(()) = published_rx.recv(), if grid_watcher.is_some() => engine.request_poll(),
            Some(c) = control.recv() => match c {
                Control::Scan => engine.request_scan(),
                Control::Poll => engine.request_poll(),
                Control::LocalChanges(reply) => {
                    let _ = reply.send(engine.local_changes());
                }
                Control::Status(reply) => {
                    let s = folder_status(&config, &clock, engine.status(), &versions_area, executor.transfers());
                    let _ = reply.send(gated(s, gate.as_ref(), parked.len()));
                }
            },
            _ = sleep_until_opt(deadline) => engine.handle_timeout(clock.now()),
            _ = prune_tick.tick() => {
                let (root, retention) = (config.local_path.clone(), config.retention());
                let area = versions_area.clone();
                tokio::task::spawn_blocking(move || {
                    match crate::fsops::prune_versions(&root, &retention) {
                        Ok(st) => {
                            if st.files > 0 {
                                info!(files = st.files, bytes = st.bytes, "pruned old versions");
                            }
                            *area.lock().unwrap_or_else(|e| e.into_inner()) = Some(VersionsArea {
                                files: st.kept_files,
                                bytes: st.kept_bytes,
                                max_age_s: retention.max_age.as_secs(),
                                per_file: retention.per_file,
                            });
                        }
                        Err(e) => warn!("pruning the versions area: {e}"),
                    }
                });
            }
            _ = progress_tick.tick(), if reporting => {
                housekeeping = true;
                state_dirty = !tasks.is_empty();
                for t in executor.transfers().list() {
                    telemetry.events.publish(serde_json::json!({
                        "kind": format!("{}-progress", t.direction),
                        "folder": config.name,
                        "relpath": t.path,
                        "bytes_done": t.bytes_done,
                        "bytes_total": t.bytes_total,
                        "timestamp": crate::events::now_s(),
                    }));
                }
                let s = folder_status(&config, &clock, engine.status(), &versions_area, executor.transfers());
                if last_state != Some(s.state) {
                    last_state = Some(s.state);
                    telemetry.events.publish(serde_json::json!({
                        "kind": "folder-state-changed",
                        "folder": config.name,
                        "state": s.state,
                        "reason": s.state_reason,
                        "timestamp": crate::events::now_s(),
                    }));
                }
            }
            _ = persist_tick.tick() => {
                housekeeping = true;
                story.roll_window();
                let s = folder_status(&config, &clock, engine.status(), &versions_area, executor.transfers());
                persister.save(&gated(s, gate.as_ref(), parked.len()));
            }
            _ = gate_changed(gate) => {
                log_gate(gate.as_ref(), parked.len());
                if gate.as_ref().is_some_and(|g| g.closed().is_none()) {
                    // The grid is back: what failed while it was away need
                    // not wait out its backoff.
                    engine.retry_now(clock.now());
                }
            }
        }
    }

    // Shutdown: no new effects; let the running ones land so their results
    // are committed, within a grace period.
    let grace = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(grace);
    while !tasks.is_empty() {
        tokio::select! {
            Some(joined) = tasks.join_next() => {
                if let Ok((_, _, event)) = joined {
                    engine.handle(clock.now(), event);
                }
            }
            _ = &mut grace => {
                warn!(left = tasks.len(), "stopping with operations still running; they will be redone");
                break;
            }
        }
    }
    tasks.abort_all();
    while let Some(notice) = engine.poll_notice() {
        telemetry.notice(&config.name, &notice);
        story.tell(notice);
    }
    story.flush();
    drop(watcher);
    let s = folder_status(
        &config,
        &clock,
        engine.status(),
        &versions_area,
        executor.transfers(),
    );
    persister.save(&gated(s, gate.as_ref(), parked.len()));
    Ok(if following {
        Exit::FormatChanged
    } else {
        Exit::Stopped
    })
}

/// Adds what the write gate holds back to a status: parked writes count as
/// queued (not in flight), and the reason is the note and an error.
fn gated(mut s: FolderStatus, gate: Option<&WriteGate>, parked: usize) -> FolderStatus {
    let moved = parked.min(s.in_flight);
    s.in_flight -= moved;
    s.queued += moved;
    if let Some((reason, since)) = gate.and_then(WriteGate::closed) {
        if s.state != FolderState::Error {
            s.state = FolderState::Offline;
            s.state_reason = Some(reason.clone());
        }
        if s.note.is_none() {
            s.note = Some(format!(
                "{reason}; writes to the grid wait until it recovers ({parked} waiting)"
            ));
        }
        s.errors.push(ErrorInfo {
            at: since,
            path: None,
            message: reason,
        });
        s.errors.sort_by_key(|e| e.at);
    }
    s
}

/// The ignore file changed: everyone uses the new rules, and a scan finds
/// what they now include. (Paths they now exclude are left alone: never
/// taken for deleted.)
fn reload_ignore<G: Grid>(
    config: &FolderConfig,
    executor: &Executor<G>,
    watcher: Option<&crate::watch::WatchHandle>,
    engine: &mut Engine<SqliteStore>,
) {
    match crate::ignore::IgnoreRules::load(&config.local_path) {
        Ok(rules) => {
            info!("ignore rules changed; rescanning");
            if let Some(w) = watcher {
                w.set_ignore(rules.clone());
            }
            executor.set_ignore(rules);
            engine.request_scan();
        }
        Err(e) => warn!(
            "{}: {e}; keeping the previous rules",
            crate::ignore::IGNORE_FILE
        ),
    }
}

/// Resolves when the gate's state changes; never without a gate.
async fn gate_changed(gate: &mut Option<WriteGate>) {
    match gate {
        Some(g) => g.changed().await,
        None => std::future::pending().await,
    }
}

fn log_gate(gate: Option<&WriteGate>, parked: usize) {
    match gate.and_then(WriteGate::closed) {
        Some((reason, _)) => warn!("{reason}; holding writes to the grid back"),
        None if parked > 0 => info!(parked, "grid healthy again; resuming writes"),
        None => debug!("grid healthy"),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
