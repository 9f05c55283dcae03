//! A deterministic simulator for the Magic Folder sync engine.
//!
//! N participants (2–5) run the real `mf_core::engine::Engine` in one
//! process, on in-memory folders, an in-memory grid and `MemStore`s, under a
//! virtual clock. A seed generates a *schedule* — user edits (including slow,
//! two-phase writes), deletions, renames, directory changes, conflict
//! resolutions, crashes, participants going offline and the grid going away —
//! and every effect the engines ask for completes after a seeded random
//! latency, so effects of different participants (and of one participant)
//! interleave and reorder freely, users act between an engine's decision
//! and its effect, and any grid request may fail on its own.
//!
//! After the schedule the world is left alone until it settles, and the
//! invariants are checked ([`check_invariants`]):
//!
//! * every participant holds the same tree, conflict copies included;
//! * no version is lost: every file version a user wrote and nobody
//!   knowingly replaced is on every participant, as the file or a conflict copy;
//! * no torn file: every file holds bytes some user wrote, and no
//!   half-written file was ever uploaded (a slow write whose rest came
//!   before the file had been quiet for the pending delay);
//! * the engine's durable state agrees with its folder;
//! * nothing stays queued: every engine is idle.
//!
//! While it runs, one rule is checked as it happens: a periodic poll never
//! starts beside fetches and writes of the same participant sooner than
//! the engine's [`POLL_WAITS_FOR_READS`] intervals after its last poll.
//!
//! A failing run reports its seed, a shrunk schedule ([`shrink`]) and a
//! readable trace. Why a hand-written step loop rather than a deterministic
//! async runtime: the engine is sans-IO, so the simulator only has to order
//! effect completions; owning that loop makes every interleaving a plain
//! function of the seed with no runtime to trust.

#![warn(missing_docs)]

pub mod world;

use std::collections::{BTreeMap, BTreeSet};

use mf_core::engine::{
    Action, Engine, EngineConfig, Event, ScanReport, UploadOutcome, POLL_WAITS_FOR_READS,
};
use mf_core::relpath::RelPath;
use mf_core::snapshot::{Cap, Content, ShardId};
use mf_core::store::{LocalState, MemStore, Store};

use world::{execute, shard_parts, EffectFaults, MemFs, MemGrid, Node};

/// What to simulate.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    /// The seed everything derives from.
    pub seed: u64,
    /// Number of participants, 2 to 5.
    pub participants: usize,
    /// Length of the schedule.
    pub ops: usize,
    /// Crash participants at random.
    pub crashes: bool,
    /// Take the grid away, and participants offline, at random.
    pub outages: bool,
    /// A hostile participant, `mallory`, publishes versions that lie about
    /// their generation, to take files over.
    pub liars: bool,
    /// Participant 0 writes no generation into its snapshots, as a
    /// magic-folder 24.3 peer does (the others rank its versions by what
    /// their parents prove).
    pub unclaimed: bool,
    /// Personal directories are sharded: each poll lists, per participant,
    /// the directory itself and only the shards that changed since this
    /// reader last listed them (any one of which may fail on its own).
    pub sharded: bool,
    /// The folder is converted while it syncs (`magic-folder convert`):
    /// each participant, at a random moment, stops, moves its directory
    /// from the flat to the sharded layout, and starts again; readers then
    /// find its entries in shards.
    pub converts: bool,
    /// Plant a bug for the detection test: writes skip the last-moment
    /// check of the local file. Never set outside that test.
    pub plant_skip_last_moment_check: bool,
}

impl SimConfig {
    /// The default mix for a seed: participants 2–5 and all faults on.
    pub fn for_seed(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            participants: 2 + (seed % 4) as usize,
            ops: 120,
            crashes: true,
            outages: true,
            liars: seed.is_multiple_of(3),
            unclaimed: seed % 5 == 2,
            sharded: seed.is_multiple_of(2),
            converts: seed % 4 == 1,
            plant_skip_last_moment_check: false,
        }
    }
}

/// Files the simulated users work on: few, so they collide often.
const FILES: &[&str] = &["a", "b", "d/c", "d/e", "d/f/g", "h/i"];
/// Directories they make and remove.
const DIRS: &[&str] = &["d", "d/f", "h", "k"];
/// Engine intervals in the simulation.
const POLL_MS: u64 = 1_000;
const SCAN_MS: u64 = 15_000;
/// How long the simulated watcher waits before reporting a path.
const WATCH_DELAY_MS: u64 = 100;
/// How long a file must have been left alone before an upload reads it
/// (the daemon's pending delay; see `Action::Upload`).
const QUIET_MS: u64 = 1_000;
/// Longest the world may take to settle after the schedule.
const SETTLE_LIMIT_MS: u64 = 30 * 60 * 1000;

/// One step of a schedule. `who` is a participant's index; `file` and `dir`
/// index the small shared namespaces of paths the users work on.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimOp {
    /// Let virtual time pass.
    Advance(u64),
    /// A user writes a new version of a file (creating parents).
    Write { who: usize, file: usize },
    /// A user writes half a version now and the rest `rest_ms` later.
    SlowWrite {
        who: usize,
        file: usize,
        rest_ms: u64,
    },
    /// A user deletes a file.
    Delete { who: usize, file: usize },
    /// A user renames a file onto a free name.
    Rename { who: usize, from: usize, to: usize },
    /// A user makes a directory.
    Mkdir { who: usize, dir: usize },
    /// A user removes a directory and everything in it.
    RemoveDir { who: usize, dir: usize },
    /// A user resolves a conflict by deleting a conflict copy.
    ResolveCopy { who: usize, pick: usize },
    /// A participant's process dies; it restarts `down_ms` later.
    Crash { who: usize, down_ms: u64 },
    /// A participant loses the grid for a while.
    Offline { who: usize, ms: u64 },
    /// The whole grid is away for a while.
    GridAway { ms: u64 },
    /// Snapshots read as missing for a while (storage servers restarting).
    SharesHidden { ms: u64 },
    /// The hostile participant publishes a version of a file claiming a
    /// huge generation: without parents, or on top of what participant
    /// `on` currently publishes for that file.
    Lie { file: usize, on: Option<usize> },
    /// The hostile participant publishes a version of a file on top of what
    /// `victim` publishes for it, under the victim's author name and with
    /// an honest generation, signed by its own key.
    Impersonate { file: usize, victim: usize },
    /// A participant's daemon follows the folder to the sharded layout: it
    /// stops (as abruptly as a crash), moves its directory and starts again.
    MoveToShards { who: usize },
}

/// The hostile participant's name.
const LIAR: &str = "mallory";

/// Generates the schedule for a configuration.
pub fn generate(cfg: &SimConfig) -> Vec<SimOp> {
    let mut schedule = honest_schedule(cfg);
    if cfg.liars {
        // From a separate stream, so a seed's honest schedule stays what it
        // always was (regression seeds keep reproducing their runs).
        let mut rng = fastrand::Rng::with_seed(cfg.seed ^ 0x6d61_6c6c_6f72_7921);
        for _ in 0..1 + cfg.ops / 40 {
            let lie = SimOp::Lie {
                file: rng.usize(..FILES.len()),
                on: rng.bool().then(|| rng.usize(..cfg.participants)),
            };
            let at = rng.usize(..=schedule.len());
            schedule.insert(at, lie);
        }
        // Another stream, so the lies above stay where they were.
        let mut rng = fastrand::Rng::with_seed(cfg.seed ^ 0x696d_7065_7273_6f6e);
        for _ in 0..1 + cfg.ops / 40 {
            let forgery = SimOp::Impersonate {
                file: rng.usize(..FILES.len()),
                victim: rng.usize(..cfg.participants),
            };
            let at = rng.usize(..=schedule.len());
            schedule.insert(at, forgery);
        }
    }
    if cfg.converts && !cfg.sharded {
        // A stream of its own, as above.
        let mut rng = fastrand::Rng::with_seed(cfg.seed ^ 0x636f_6e76_6572_7421);
        for who in 0..cfg.participants {
            let at = rng.usize(..=schedule.len());
            schedule.insert(at, SimOp::MoveToShards { who });
        }
    }
    schedule
}

/// The schedule of the honest users and faults.
fn honest_schedule(cfg: &SimConfig) -> Vec<SimOp> {
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let n = cfg.participants;
    (0..cfg.ops)
        .map(|_| {
            let who = rng.usize(..n);
            match rng.u32(..100) {
                0..=29 => SimOp::Advance(rng.u64(1..1500)),
                30..=49 => SimOp::Write {
                    who,
                    file: rng.usize(..FILES.len()),
                },
                50..=54 => SimOp::SlowWrite {
                    who,
                    file: rng.usize(..FILES.len()),
                    rest_ms: rng.u64(10..3000),
                },
                55..=62 => SimOp::Delete {
                    who,
                    file: rng.usize(..FILES.len()),
                },
                63..=67 => SimOp::Rename {
                    who,
                    from: rng.usize(..FILES.len()),
                    to: rng.usize(..FILES.len()),
                },
                68..=71 => SimOp::Mkdir {
                    who,
                    dir: rng.usize(..DIRS.len()),
                },
                72..=74 => SimOp::RemoveDir {
                    who,
                    dir: rng.usize(..DIRS.len()),
                },
                75..=84 => SimOp::ResolveCopy {
                    who,
                    pick: rng.usize(..8),
                },
                85..=90 if cfg.crashes => SimOp::Crash {
                    who,
                    down_ms: rng.u64(0..5000),
                },
                91..=95 if cfg.outages => SimOp::Offline {
                    who,
                    ms: rng.u64(100..8000),
                },
                96..=97 if cfg.outages => SimOp::GridAway {
                    ms: rng.u64(100..5000),
                },
                98..=99 if cfg.outages => SimOp::SharesHidden {
                    ms: rng.u64(100..20_000),
                },
                _ => SimOp::Advance(rng.u64(1..500)),
            }
        })
        .collect()
}

/// What a passing run did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Effects carried out.
    pub effects: u64,
    /// Virtual milliseconds simulated.
    pub virtual_ms: u64,
    /// Conflict copies present at the end (per participant).
    pub conflict_copies: usize,
    /// The tree every participant ended with: path → file content, or
    /// `None` for a directory.
    pub tree: BTreeMap<String, Option<Vec<u8>>>,
    /// Every upload asked for, in order: (participant, path).
    pub uploads: Vec<(String, String)>,
}

/// A failing run.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Which invariant broke, and how.
    pub violation: String,
    /// The end of the run's trace.
    pub trace: Vec<String>,
}

struct Participant {
    name: String,
    fs: MemFs,
    engine: Option<Engine<MemStore>>,
    /// The store while the participant is down.
    parked: Option<MemStore>,
    restart_at: Option<u64>,
    offline_until: u64,
    /// (due, sequence, action, sent at).
    inflight: Vec<(u64, u64, Action, u64)>,
    watch: BTreeMap<RelPath, u64>,
    slow: Vec<(u64, RelPath, Vec<u8>)>,
    /// When the user last wrote each path (for the upload's quiet rule).
    last_write: BTreeMap<RelPath, u64>,
    /// The folder as it was when the scan in flight began: a real scan
    /// walks while files come and go (see `walked_meanwhile`).
    scan_began: Option<BTreeMap<RelPath, LocalState>>,
    /// When the engine running now last got a poll's result.
    polled_at: Option<u64>,
}

struct World {
    cfg: SimConfig,
    rng: fastrand::Rng,
    now: u64,
    seq: u64,
    clock: i64,
    grid: MemGrid,
    grid_away_until: u64,
    /// Until when snapshot reads answer "no such object".
    shares_hidden_until: u64,
    people: Vec<Participant>,
    /// Every (path, bytes) a user wrote, and whether someone knowingly replaced it.
    versions: BTreeMap<(RelPath, Vec<u8>), bool>,
    /// Every byte string a user ever put in a file.
    written: BTreeSet<Vec<u8>>,
    /// First halves of slow writes whose rest came within [`QUIET_MS`]:
    /// the file was never quiet while it held one, so none may be uploaded.
    never_quiet: BTreeSet<Vec<u8>>,
    effects: u64,
    /// Every upload asked for: (participant, path).
    uploads: Vec<(String, String)>,
    trace: Vec<String>,
    /// Set when the world stopped making progress in time, or an engine
    /// broke a rule checked as it runs.
    violated: Option<String>,
}

/// Participant `i`'s engine settings. The first participant decides paths
/// one effect at a time and the second four at a time, so that work waiting
/// for room is exercised in every run.
fn engine_config(i: usize, name: &str) -> EngineConfig {
    EngineConfig {
        me: name.to_owned(),
        author: mf_core::engine::DeclaredAuthor {
            name: name.to_owned(),
            verify_key: format!("key-{name}"),
        },
        poll_interval: POLL_MS,
        scan_interval: SCAN_MS,
        max_pending_effects: [1, 4, 1024][i % 3],
    }
}

fn rel(s: &str) -> RelPath {
    RelPath::new(s).expect("simulator paths are valid")
}

impl World {
    fn new(cfg: SimConfig) -> World {
        let mut people = Vec::new();
        let mut grid = MemGrid {
            sharded: cfg.sharded,
            ..MemGrid::default()
        };
        for i in 0..cfg.participants {
            let name = format!("p{i}");
            grid.personal.insert(name.clone(), BTreeMap::new());
            let engine =
                Engine::new(MemStore::new(), engine_config(i, &name), 0).expect("mem store loads");
            people.push(Participant {
                name,
                fs: MemFs::default(),
                engine: Some(engine),
                parked: None,
                restart_at: None,
                offline_until: 0,
                inflight: Vec::new(),
                watch: BTreeMap::new(),
                slow: Vec::new(),
                last_write: BTreeMap::new(),
                scan_began: None,
                polled_at: None,
            });
        }
        if cfg.liars {
            grid.personal.insert(LIAR.to_owned(), BTreeMap::new());
        }
        World {
            rng: fastrand::Rng::with_seed(cfg.seed ^ 0x9e37_79b9_7f4a_7c15),
            cfg,
            now: 0,
            seq: 0,
            clock: 0,
            grid,
            grid_away_until: 0,
            shares_hidden_until: 0,
            people,
            versions: BTreeMap::new(),
            written: BTreeSet::new(),
            never_quiet: BTreeSet::new(),
            effects: 0,
            uploads: Vec::new(),
            trace: Vec::new(),
            violated: None,
        }
    }

    fn log(&mut self, line: String) {
        self.trace.push(format!("{:>8} {line}", self.now));
    }

    /// Moves every engine's fresh actions into flight with random latencies.
    fn drain(&mut self, i: usize) {
        while let Some(action) = self.people[i].engine.as_mut().and_then(|e| e.poll_action()) {
            if let Action::Upload { path, .. } = &action {
                let who = self.people[i].name.clone();
                self.uploads.push((who, path.to_string()));
            }
            if let Action::Poll = &action {
                self.check_poll_beside_reads(i);
            }
            if let Action::Scan = &action {
                let fs = &self.people[i].fs;
                let view = fs.nodes.keys().map(|p| (p.clone(), fs.state(p))).collect();
                self.people[i].scan_began = Some(view);
            }
            let latency = match action {
                Action::Scan => self.rng.u64(5..200),
                // A publish may be slow (a big directory's rewrite on
                // Tahoe), so the next one is paced while uploads go on.
                Action::Publish { .. } => 4 * self.rng.u64(1..150),
                // So is a poll (a busy node), so the next one is spaced.
                Action::Poll => 2 * self.rng.u64(1..150),
                // A fetch now and then waits for a busy node, so that a
                // file's version can arrive (and be written, making its
                // directory) long before its directory's.
                Action::Fetch { .. } if self.rng.u8(..8) == 0 => self.rng.u64(150..2000),
                _ => self.rng.u64(1..150),
            };
            self.seq += 1;
            let due = self.now + latency;
            self.people[i]
                .inflight
                .push((due, self.seq, action, self.now));
        }
        // The daemon frees the engine's spare room (and its snapshot cache)
        // whenever it runs out of work; at random such moments here, so
        // that doing so is proven never to change what the engine decides.
        if self.people[i].inflight.is_empty() && self.rng.bool() {
            if let Some(e) = self.people[i].engine.as_mut() {
                e.shrink_to_fit();
            }
        }
    }

    /// A poll that starts while fetches or writes of participant `i` are in
    /// flight must have waited [`POLL_WAITS_FOR_READS`] intervals for them
    /// after its last poll (the engine holds it back at least that long
    /// then; an asked-for poll would not wait, but nothing here asks).
    fn check_poll_beside_reads(&mut self, i: usize) {
        let p = &self.people[i];
        let reading = p
            .inflight
            .iter()
            .any(|(_, _, a, _)| matches!(a, Action::Fetch { .. } | Action::Write { .. }));
        let held = POLL_WAITS_FOR_READS * POLL_MS;
        let Some(at) = p.polled_at.filter(|at| reading && self.now < at + held) else {
            return;
        };
        let (name, since) = (p.name.clone(), self.now - at);
        self.log(format!("{name} polls beside its reads"));
        self.violated.get_or_insert(format!(
            "{name} polled {since} ms after its last poll while fetches or writes ran \
             (a poll waits for them up to {held} ms)"
        ));
    }

    fn deliver(&mut self, i: usize, event: Event) {
        if let Some(e) = self.people[i].engine.as_mut() {
            e.handle(self.now, event);
        }
        self.drain(i);
    }

    /// The earliest thing due at or before `limit`, as (time, participant, kind).
    fn next_due(&self, limit: u64) -> Option<(u64, usize, u8)> {
        let mut best: Option<(u64, usize, u8)> = None;
        let mut consider = |t: u64, i: usize, k: u8| {
            if t <= limit && best.is_none_or(|b| (t, i, k) < b) {
                best = Some((t, i, k));
            }
        };
        for (i, p) in self.people.iter().enumerate() {
            if let Some(t) = p.restart_at {
                consider(t, i, 0);
            }
            if let Some(t) = p.slow.iter().map(|s| s.0).min() {
                consider(t, i, 1);
            }
            if let Some(t) = p.watch.values().min() {
                consider(*t, i, 2);
            }
            if let Some(t) = p.inflight.iter().map(|e| e.0).min() {
                consider(t, i, 3);
            }
            if let Some(t) = p.engine.as_ref().and_then(|e| e.poll_timeout()) {
                consider(t.max(self.now), i, 4);
            }
        }
        best
    }

    fn advance_to(&mut self, limit: u64) {
        let mut guard = 0u64;
        while let Some((t, i, kind)) = self.next_due(limit) {
            guard += 1;
            if guard > 1_000_000 {
                // Something keeps asking to run at the same instant: report it
                // as a violation instead of spinning.
                let status = self.people[i]
                    .engine
                    .as_ref()
                    .map(|e| format!("{:?}", e.status()));
                self.violated = Some(format!(
                    "livelock at {t} in {} (kind {kind}): {status:?}",
                    self.people[i].name
                ));
                self.now = limit;
                return;
            }
            self.now = self.now.max(t);
            match kind {
                0 => self.restart(i),
                1 => self.finish_slow_write(i),
                2 => self.fire_watch(i),
                3 => self.complete_effect(i),
                _ => {
                    if let Some(e) = self.people[i].engine.as_mut() {
                        e.handle_timeout(self.now);
                    }
                    self.drain(i);
                }
            }
        }
        self.now = self.now.max(limit);
    }

    fn restart(&mut self, i: usize) {
        let p = &mut self.people[i];
        p.restart_at = None;
        let store = p
            .parked
            .take()
            .expect("a crashed participant parks its store");
        p.engine =
            Some(Engine::new(store, engine_config(i, &p.name), self.now).expect("mem store loads"));
        let name = p.name.clone();
        self.log(format!("{name} restarts"));
        self.drain(i);
    }

    fn fire_watch(&mut self, i: usize) {
        let now = self.now;
        let p = &mut self.people[i];
        let due: Vec<RelPath> = p
            .watch
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut batch = Vec::new();
        for path in due {
            p.watch.remove(&path);
            batch.push((path.clone(), p.fs.state(&path)));
        }
        if p.engine.is_some() && !batch.is_empty() {
            self.deliver(i, Event::LocalChanged(batch));
        }
    }

    fn complete_effect(&mut self, i: usize) {
        let now = self.now;
        let idx = {
            let p = &self.people[i];
            let (pos, _) = p
                .inflight
                .iter()
                .enumerate()
                .filter(|(_, e)| e.0 <= now)
                .min_by_key(|(_, e)| (e.0, e.1))
                .expect("next_due found one");
            pos
        };
        let (_, seq, action, sent) = self.people[i].inflight.remove(idx);
        if let Some(quiet_at) = self.quiet_at(i, &action) {
            // The driver waits for the file to be left alone before reading it.
            self.people[i].inflight.push((quiet_at, seq, action, sent));
            return;
        }
        let mut event = self.apply(i, &action);
        if let Action::Poll = action {
            self.people[i].polled_at = Some(now);
        }
        if let Event::Published { took, .. } = &mut event {
            *took = now - sent;
        }
        if let Event::Scanned(Ok(report)) = &mut event {
            self.walked_meanwhile(i, report);
        }
        self.log(format!(
            "{} {} -> {}",
            self.people[i].name,
            short_action(&action),
            short_event(&event)
        ));
        self.deliver(i, event);
    }

    /// Makes a scan's report what a walk during the scan's time may have
    /// seen. The walk goes through the paths in order, parents first, so
    /// the paths before a random point are as they were when the scan
    /// began and the rest as they are now; and it reaches a path only
    /// through its parent directory.
    fn walked_meanwhile(&mut self, i: usize, report: &mut ScanReport) {
        let Some(began) = self.people[i].scan_began.take() else {
            return;
        };
        let ends: BTreeMap<RelPath, LocalState> = report.entries.drain(..).collect();
        let paths: BTreeSet<RelPath> = began.keys().chain(ends.keys()).cloned().collect();
        let turn = self.rng.usize(..=paths.len());
        let mut seen: BTreeMap<RelPath, LocalState> = BTreeMap::new();
        for (k, path) in paths.into_iter().enumerate() {
            let reached = path
                .parent()
                .is_none_or(|dir| seen.get(&dir) == Some(&LocalState::Dir));
            let at = if k < turn { &began } else { &ends };
            match at.get(&path) {
                Some(state) if reached => {
                    seen.insert(path, *state);
                }
                _ => {}
            }
        }
        if seen != ends {
            self.log(format!(
                "{} scan walked while the folder changed",
                self.people[i].name
            ));
        }
        report.entries = seen.into_iter().collect();
    }

    /// For an upload of a file the user wrote less than [`QUIET_MS`] ago:
    /// when the file will have been quiet that long.
    fn quiet_at(&self, i: usize, action: &Action) -> Option<u64> {
        let Action::Upload { path, .. } = action else {
            return None;
        };
        let at = self.people[i].last_write.get(path)? + QUIET_MS;
        (at > self.now).then_some(at)
    }

    /// With outages on, one poll in four fails to list one shard (of any
    /// participant's) picked at random.
    fn failing_shard(&mut self) -> Option<ShardId> {
        let any_sharded = self.cfg.sharded || !self.grid.moved.is_empty();
        if !(self.cfg.outages && any_sharded) || self.rng.u32(..4) != 0 {
            return None;
        }
        let parts: Vec<ShardId> = self
            .grid
            .personal
            .iter()
            .flat_map(|(name, dir)| shard_parts(dir, self.grid.filed.get(name)).into_keys())
            .collect();
        parts.get(self.rng.usize(..parts.len().max(1))).copied()
    }

    /// With outages on, one poll in eight fails to list one participant's
    /// directory whole, picked at random.
    fn failing_dir(&mut self) -> Option<String> {
        if !self.cfg.outages || self.rng.u32(..8) != 0 {
            return None;
        }
        let names: Vec<&String> = self.grid.personal.keys().collect();
        names
            .get(self.rng.usize(..names.len().max(1)))
            .map(|n| (*n).clone())
    }

    /// Carries out an action against the world; returns its event.
    fn apply(&mut self, i: usize, action: &Action) -> Event {
        self.effects += 1;
        // Besides outages, any single grid request may fail (a timeout, a
        // dropped connection): 3 % of them when outages are on.
        let flaky = self.cfg.outages && !matches!(action, Action::Scan) && self.rng.u32(..100) < 3;
        let faults = EffectFaults {
            grid_away: flaky
                || self.now < self.grid_away_until
                || self.now < self.people[i].offline_until,
            shares_hidden: self.now < self.shares_hidden_until,
            failing_shard: self.failing_shard(),
            failing_dir: self.failing_dir(),
            skip_last_moment_check: self.cfg.plant_skip_last_moment_check,
        };
        let p = &mut self.people[i];
        let (event, touched) = execute(
            &p.name,
            action,
            &mut p.fs,
            &mut self.grid,
            faults,
            self.now,
            &mut self.clock,
        );
        // A 24.3-like participant's versions claim no generation where
        // others read them (its own engine keeps what it asked for).
        if let (
            true,
            0,
            Event::Uploaded {
                result: UploadOutcome::Done(info),
                ..
            },
        ) = (self.cfg.unclaimed, i, &event)
        {
            if let Some(stored) = self.grid.snapshots.get_mut(&info.cap) {
                stored.generation = 0;
            }
        }
        for t in touched {
            p.watch.insert(t, self.now + WATCH_DELAY_MS);
        }
        event
    }

    // ----- users --------------------------------------------------------

    fn version_bytes(&mut self, who: usize, path: &RelPath) -> Vec<u8> {
        self.seq += 1;
        format!("{}:{}:{}", self.people[who].name, path, self.seq).into_bytes()
    }

    /// Marks whatever `who` has at `path` as knowingly replaced.
    fn replace(&mut self, who: usize, path: &RelPath) {
        if let Some(Node::File { content, .. }) = self.people[who].fs.nodes.get(path) {
            let key = match path.as_conflict_copy() {
                Some((orig, _)) => (orig, content.clone()),
                None => (path.clone(), content.clone()),
            };
            if let Some(replaced) = self.versions.get_mut(&key) {
                *replaced = true;
            }
        }
    }

    fn put_file(&mut self, who: usize, path: &RelPath, bytes: Vec<u8>, complete: bool) -> bool {
        if matches!(self.people[who].fs.nodes.get(path), Some(Node::Dir)) {
            return false;
        }
        let Some(made) = self.people[who].fs.make_parents(path) else {
            return false;
        };
        self.replace(who, path);
        self.clock += 1;
        let mtime_ns = (self.now as i64) * 1_000_000;
        self.people[who].fs.nodes.insert(
            path.clone(),
            Node::File {
                content: bytes.clone(),
                mtime_ns,
                ctime_ns: self.clock,
            },
        );
        self.people[who].last_write.insert(path.clone(), self.now);
        self.written.insert(bytes.clone());
        if complete {
            self.versions.insert((path.clone(), bytes), false);
        }
        let due = self.now + WATCH_DELAY_MS;
        for d in made {
            self.people[who].watch.insert(d, due);
        }
        self.people[who].watch.insert(path.clone(), due);
        true
    }

    fn touch(&mut self, who: usize, path: &RelPath) {
        self.people[who]
            .watch
            .insert(path.clone(), self.now + WATCH_DELAY_MS);
    }

    fn finish_slow_write(&mut self, i: usize) {
        let now = self.now;
        let p = &mut self.people[i];
        let pos = p
            .slow
            .iter()
            .position(|s| s.0 <= now)
            .expect("next_due found one");
        let (_, path, bytes) = p.slow.remove(pos);
        let name = p.name.clone();
        if self.put_file(i, &path, bytes, true) {
            self.log(format!("{name} user finishes slow write of {path}"));
        }
    }

    fn user(&mut self, op: &SimOp) {
        match *op {
            SimOp::Advance(ms) => self.advance_to(self.now + ms),
            SimOp::Write { who, file } => {
                let path = rel(FILES[file]);
                let bytes = self.version_bytes(who, &path);
                if self.put_file(who, &path, bytes, true) {
                    self.log(format!("{} user writes {path}", self.people[who].name));
                }
            }
            SimOp::SlowWrite { who, file, rest_ms } => {
                let path = rel(FILES[file]);
                let full = self.version_bytes(who, &path);
                // Marked, so that no two halves have the same bytes.
                let mut half = format!("half{}:", self.seq).into_bytes();
                half.extend_from_slice(&full[..full.len() / 2]);
                if rest_ms < QUIET_MS {
                    self.never_quiet.insert(half.clone());
                }
                if self.put_file(who, &path, half, false) {
                    self.log(format!(
                        "{} user starts slow write of {path}",
                        self.people[who].name
                    ));
                    self.people[who].slow.push((self.now + rest_ms, path, full));
                }
            }
            SimOp::Delete { who, file } => {
                let path = rel(FILES[file]);
                if matches!(
                    self.people[who].fs.nodes.get(&path),
                    Some(Node::File { .. })
                ) {
                    self.replace(who, &path);
                    self.people[who].fs.nodes.remove(&path);
                    self.touch(who, &path);
                    self.log(format!("{} user deletes {path}", self.people[who].name));
                }
            }
            SimOp::Rename { who, from, to } => {
                let (src, dst) = (rel(FILES[from]), rel(FILES[to]));
                let fs = &self.people[who].fs;
                let Some(Node::File { content, .. }) = fs.nodes.get(&src).cloned() else {
                    return;
                };
                if src == dst || fs.nodes.contains_key(&dst) {
                    return;
                }
                self.replace(who, &src);
                // Moved into place as it is: now a file its user left alone.
                self.never_quiet.remove(&content);
                if self.put_file(who, &dst, content, true) {
                    self.people[who].fs.nodes.remove(&src);
                    self.touch(who, &src);
                    self.log(format!(
                        "{} user renames {src} to {dst}",
                        self.people[who].name
                    ));
                }
            }
            SimOp::Mkdir { who, dir } => {
                let path = rel(DIRS[dir]);
                let fs = &mut self.people[who].fs;
                if fs.nodes.contains_key(&path) {
                    return;
                }
                let Some(made) = fs.make_parents(&path) else {
                    return;
                };
                fs.nodes.insert(path.clone(), Node::Dir);
                for d in made {
                    self.touch(who, &d);
                }
                self.touch(who, &path);
                self.log(format!("{} user makes dir {path}", self.people[who].name));
            }
            SimOp::RemoveDir { who, dir } => {
                let path = rel(DIRS[dir]);
                if !matches!(self.people[who].fs.nodes.get(&path), Some(Node::Dir)) {
                    return;
                }
                let doomed: Vec<RelPath> = self.people[who]
                    .fs
                    .nodes
                    .keys()
                    .filter(|k| k.starts_with(&path))
                    .cloned()
                    .collect();
                for d in &doomed {
                    self.replace(who, d);
                    self.people[who].fs.nodes.remove(d);
                    self.touch(who, d);
                }
                self.log(format!(
                    "{} user removes dir {path} ({} entries)",
                    self.people[who].name,
                    doomed.len()
                ));
            }
            SimOp::ResolveCopy { who, pick } => {
                let copies: Vec<RelPath> = self.people[who]
                    .fs
                    .nodes
                    .keys()
                    .filter(|k| k.as_conflict_copy().is_some())
                    .cloned()
                    .collect();
                if copies.is_empty() {
                    return;
                }
                let copy = copies[pick % copies.len()].clone();
                self.replace(who, &copy);
                self.people[who].fs.nodes.remove(&copy);
                self.touch(who, &copy);
                self.log(format!(
                    "{} user resolves by deleting {copy}",
                    self.people[who].name
                ));
            }
            SimOp::Crash { who, down_ms } => {
                let now = self.now;
                let Some(engine) = self.people[who].engine.take() else {
                    return;
                };
                // Effects in flight may or may not have happened; their
                // results are lost with the process.
                let inflight = std::mem::take(&mut self.people[who].inflight);
                for (_, _, action, _) in inflight {
                    // An upload still waiting for quiet has read nothing.
                    if self.rng.bool() && self.quiet_at(who, &action).is_none() {
                        self.apply(who, &action);
                    }
                }
                let p = &mut self.people[who];
                p.watch.clear();
                p.scan_began = None;
                p.polled_at = None;
                p.parked = Some(engine.into_store());
                p.restart_at = Some(now + down_ms);
                let name = p.name.clone();
                // What it listed went down with it.
                self.grid.listed.retain(|(reader, ..), _| *reader != name);
                self.log(format!("{name} CRASHES (down {down_ms} ms)"));
            }
            SimOp::Offline { who, ms } => {
                self.people[who].offline_until = self.now + ms;
                self.log(format!("{} offline for {ms} ms", self.people[who].name));
            }
            SimOp::GridAway { ms } => {
                self.grid_away_until = self.now + ms;
                self.log(format!("grid away for {ms} ms"));
            }
            SimOp::SharesHidden { ms } => {
                self.shares_hidden_until = self.now + ms;
                self.log(format!("snapshots read as missing for {ms} ms"));
            }
            SimOp::MoveToShards { who } => {
                let name = self.people[who].name.clone();
                if self.grid.moved.contains(&name) {
                    return;
                }
                self.user(&SimOp::Crash { who, down_ms: 0 });
                // Its old directory's entries, in shards of the new one:
                // readers follow it from now on.
                self.grid.moved.insert(name.clone());
                self.log(format!("{name} moves its directory to shards"));
            }
            SimOp::Lie { file, on } => self.lie(file, on),
            SimOp::Impersonate { file, victim } => self.impersonate(file, victim),
        }
    }

    /// The hostile participant publishes a version that only its signature
    /// gives away: the victim's author name, parents and a generation they
    /// prove, and the latest mtime. The victim has declared its key from
    /// its first publish on; before that there is nothing to forge against
    /// (see the README's threat model), so the forgery waits for it. Its
    /// bytes are never a user's (the no-torn-content invariant).
    fn impersonate(&mut self, file: usize, victim: usize) {
        let path = rel(FILES[file]);
        let entry = mf_core::snapshot::entry_name(&path);
        let name = self.people[victim].name.clone();
        let Some(parent) = self
            .grid
            .personal
            .get(&name)
            .and_then(|dir| dir.get(&entry))
            .cloned()
        else {
            self.log(format!(
                "{LIAR} finds no version of {path} by {name} to forge on"
            ));
            return;
        };
        let generation = self.grid.snapshots[&parent].generation + 1;
        self.forge(&path, &name, vec![parent], generation);
        self.log(format!(
            "{LIAR} publishes {path} as {name}, signed by itself"
        ));
    }

    /// The hostile participant publishes, in its own directory, a version
    /// of `path` under `author`'s name (signed by itself), on `parents`,
    /// claiming `generation`, with the latest mtime and bytes no user
    /// wrote (the no-torn-content invariant fails if anyone takes them in).
    fn forge(&mut self, path: &RelPath, author: &str, parents: Vec<Cap>, generation: u64) {
        self.seq += 1;
        let bytes = format!("{LIAR}:{path}:{}", self.seq).into_bytes();
        let size = bytes.len() as u64;
        let content = Content::File {
            cap: self.grid.put_file(bytes),
            size,
            executable: false,
        };
        let info = self.grid.put_snapshot(
            path.clone(),
            (author, LIAR),
            parents,
            content,
            (self.now / 1000) as i64 + 1_000_000,
            generation,
        );
        self.grid
            .personal
            .entry(LIAR.to_owned())
            .or_default()
            .insert(mf_core::snapshot::entry_name(path), info.cap);
    }

    /// The hostile participant publishes a version of a file that claims a
    /// generation no history proves. Its bytes are never a user's, so the
    /// no-torn-content invariant fails if any participant ever takes it in.
    fn lie(&mut self, file: usize, on: Option<usize>) {
        let path = rel(FILES[file]);
        let entry = mf_core::snapshot::entry_name(&path);
        let parents: Vec<Cap> = on
            .and_then(|i| self.grid.personal.get(&self.people[i].name))
            .and_then(|dir| dir.get(&entry))
            .cloned()
            .into_iter()
            .collect();
        let claim = 1_000_000_000_000 + self.seq;
        self.forge(&path, LIAR, parents.clone(), claim);
        self.log(format!(
            "{LIAR} publishes {path} claiming generation {claim} on {parents:?}"
        ));
    }

    fn settled(&self) -> bool {
        self.people.iter().all(|p| {
            p.inflight
                .iter()
                .all(|(_, _, a, _)| matches!(a, Action::Scan | Action::Poll))
                && p.watch.is_empty()
                && p.slow.is_empty()
                && p.restart_at.is_none()
                && p.engine.as_ref().is_some_and(|e| e.is_idle())
        })
    }

    /// Runs without users until every engine has been idle for a while.
    fn settle(&mut self) -> Result<(), String> {
        let deadline = self.now + SETTLE_LIMIT_MS;
        let mut quiet_since: Option<u64> = None;
        while self.now < deadline {
            self.advance_to(self.now + 100);
            if let Some(l) = self.violated.take() {
                return Err(l);
            }
            if self.settled() {
                let since = *quiet_since.get_or_insert(self.now);
                // Quiet for a while, and everyone has polled successfully since
                // it became quiet (an offline participant is not "in sync").
                let polled = self.people.iter().all(|p| {
                    p.engine
                        .as_ref()
                        .and_then(|e| e.status().last_poll)
                        .is_some_and(|t| t > since)
                });
                if self.now - since >= 3 * POLL_MS + 200 && polled {
                    return Ok(());
                }
            } else {
                quiet_since = None;
            }
        }
        let busy: Vec<String> = self
            .people
            .iter()
            .filter(|p| !p.engine.as_ref().is_some_and(|e| e.is_idle()))
            .map(|p| {
                format!(
                    "{}: {:?}",
                    p.name,
                    p.engine.as_ref().map(|e| e.waiting_on())
                )
            })
            .collect();
        Err(format!(
            "did not settle within {} s: {}",
            SETTLE_LIMIT_MS / 1000,
            busy.join("; ")
        ))
    }
}

fn short_action(a: &Action) -> String {
    match a {
        Action::Scan => "scan".into(),
        Action::Poll => "poll".into(),
        Action::Fetch { cap, .. } => format!("fetch {cap:?}"),
        Action::Upload {
            path,
            local,
            parents,
            generation,
            ..
        } => format!("upload {path} {local:?} parents {parents:?} gen {generation}"),
        Action::Publish { entries, .. } => format!("publish {} entries", entries.len()),
        Action::Write {
            target,
            content,
            expect,
            ..
        } => format!("write {target} {content:?} expect {expect:?}"),
    }
}

fn short_event(e: &Event) -> String {
    match e {
        Event::Uploaded { result, .. } => format!("{result:?}"),
        Event::Written { result, .. } => format!("{result:?}"),
        Event::Published { result, .. } => format!("{result:?}"),
        Event::Fetched { result, .. } => match result {
            Ok(i) => format!("ok {:?} parents {:?}", i.cap, i.parents),
            Err(e) => format!("{e:?}"),
        },
        // Each part read: whose, which shard, how many entries.
        Event::Polled(Ok(listings)) => {
            let parts: Vec<String> = listings
                .iter()
                .map(|l| {
                    let shard = l.shard.map(|id| format!("/{id}")).unwrap_or_default();
                    match &l.entries {
                        Ok(e) => format!("{}{shard}:{}", l.participant, e.len()),
                        Err(_) => format!("{}{shard}:failed", l.participant),
                    }
                })
                .collect();
            format!("ok [{}]", parts.join(" "))
        }
        Event::Polled(Err(_)) => "failed".into(),
        Event::Scanned(r) => match r {
            Ok(s) => format!("{} entries", s.entries.len()),
            Err(e) => e.clone(),
        },
        Event::LocalChanged(v) => format!("{} changes", v.len()),
    }
}

/// Checks every invariant on a settled world.
fn check_invariants(w: &World) -> Result<(), String> {
    let tree = |p: &Participant| -> BTreeMap<RelPath, Option<Vec<u8>>> {
        p.fs.nodes
            .iter()
            .map(|(k, v)| {
                let c = match v {
                    Node::File { content, .. } => Some(content.clone()),
                    Node::Dir => None,
                };
                (k.clone(), c)
            })
            .collect()
    };
    let first = tree(&w.people[0]);
    for p in &w.people[1..] {
        let t = tree(p);
        if t != first {
            let diff_paths: Vec<RelPath> = first
                .keys()
                .chain(t.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|k| first.get(*k) != t.get(*k))
                .cloned()
                .collect();
            let diff: Vec<String> = first
                .keys()
                .chain(t.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|k| first.get(*k) != t.get(*k))
                .map(|k| {
                    format!(
                        "{k}: {} has {:?}, {} has {:?}",
                        w.people[0].name,
                        show(first.get(k)),
                        p.name,
                        show(t.get(k))
                    )
                })
                .collect();
            let names = |t: &BTreeMap<RelPath, Option<Vec<u8>>>| {
                t.keys()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let currents = |q: &Participant| {
                q.engine
                    .as_ref()
                    .map(|e| {
                        diff_paths
                            .iter()
                            .map(|k| {
                                format!(
                                    "{k}={:?}",
                                    e.current(k).map(|c| (&c.snapshot, c.local, &c.adopting))
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default()
            };
            let records = |q: &Participant| {
                q.engine
                    .as_ref()
                    .map(|e| {
                        e.conflicts()
                            .map(|c| format!("{}/{}={:?}", c.path, c.author, c.snapshot))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default()
            };
            return Err(format!(
                "trees differ: {}\n  {}: {}\n  {}: {}\n  records {}: {}\n  records {}: {}\n  current {}: {}\n  current {}: {}",
                diff.join("; "),
                w.people[0].name,
                names(&first),
                p.name,
                names(&t),
                w.people[0].name,
                records(&w.people[0]),
                p.name,
                records(p),
                w.people[0].name,
                currents(&w.people[0]),
                p.name,
                currents(p)
            ));
        }
    }
    if let Some(half) = w.grid.contents().find(|b| w.never_quiet.contains(b)) {
        return Err(format!(
            "a half-written file was uploaded: {:?}",
            String::from_utf8_lossy(&half)
        ));
    }
    for p in &w.people {
        for (path, node) in &p.fs.nodes {
            if let Node::File { content, .. } = node {
                if !w.written.contains(content) {
                    return Err(format!("{} has torn or foreign content at {path}", p.name));
                }
            }
        }
        for ((path, bytes), replaced) in &w.versions {
            if *replaced {
                continue;
            }
            let present = p.fs.nodes.iter().any(|(k, n)| {
                let at = k == path || k.as_conflict_copy().is_some_and(|(orig, _)| orig == *path);
                at && matches!(n, Node::File { content, .. } if content == bytes)
            });
            if !present {
                return Err(format!(
                    "{} lost the version {:?} of {path}",
                    p.name,
                    String::from_utf8_lossy(bytes)
                ));
            }
        }
        let engine = p.engine.as_ref().expect("settled participants are running");
        let status = engine.status();
        if let Some(f) = status.fatal {
            return Err(format!("{} stopped: {f}", p.name));
        }
        for (path, node) in &p.fs.nodes {
            if path.as_conflict_copy().is_some() {
                continue;
            }
            let want = p.fs.state(path);
            let have = engine.current(path).map(|c| c.local);
            if have != Some(want) {
                return Err(format!(
                    "{}: state of {path} is {have:?} but the folder has {want:?}",
                    p.name
                ));
            }
            let _ = node;
        }
        for (path, cur) in engine.currents() {
            if cur.local != LocalState::Absent && !p.fs.nodes.contains_key(path) {
                return Err(format!(
                    "{}: state says {path} exists but it does not",
                    p.name
                ));
            }
            if !cur.published {
                return Err(format!("{}: {path} never published", p.name));
            }
        }
        let mut stored = engine.store().clone();
        let loaded = stored.load().map_err(|e| e.to_string())?;
        if &loaded.current != engine.currents() {
            return Err(format!(
                "{}: durable state differs from the engine's memory",
                p.name
            ));
        }
    }
    Ok(())
}

fn show(v: Option<&Option<Vec<u8>>>) -> String {
    match v {
        None => "nothing".into(),
        Some(None) => "a directory".into(),
        Some(Some(b)) => format!("{:?}", String::from_utf8_lossy(b)),
    }
}

/// Runs one schedule and checks the invariants.
pub fn run(cfg: &SimConfig, schedule: &[SimOp]) -> Result<Outcome, Failure> {
    let mut w = World::new(*cfg);
    for i in 0..w.people.len() {
        w.drain(i);
    }
    for op in schedule {
        w.user(op);
        if w.violated.is_some() {
            break;
        }
    }
    // Let slow writes finish and everyone restart.
    let result = match w.violated.take() {
        Some(l) => Err(l),
        None => w.settle().and_then(|()| check_invariants(&w)),
    };
    match result {
        Ok(()) => Ok(Outcome {
            effects: w.effects,
            virtual_ms: w.now,
            conflict_copies: w.people[0]
                .fs
                .nodes
                .keys()
                .filter(|k| k.as_conflict_copy().is_some())
                .count(),
            tree: w.people[0]
                .fs
                .nodes
                .iter()
                .map(|(k, n)| {
                    let content = match n {
                        Node::File { content, .. } => Some(content.clone()),
                        Node::Dir => None,
                    };
                    (k.to_string(), content)
                })
                .collect(),
            uploads: w.uploads,
        }),
        Err(violation) => {
            let keep = w.trace.len().saturating_sub(400);
            Err(Failure {
                violation,
                trace: w.trace.split_off(keep),
            })
        }
    }
}

/// Removes steps from a failing schedule while it still fails (a simple
/// delta-debugging pass), so the report is as short as it can be.
pub fn shrink(cfg: &SimConfig, schedule: Vec<SimOp>, budget: usize) -> Vec<SimOp> {
    let mut best = schedule;
    let mut runs = 0;
    let mut chunk = best.len().div_ceil(2).max(1);
    while chunk >= 1 && runs < budget {
        let mut i = 0;
        let mut shrunk = false;
        while i < best.len() && runs < budget {
            let mut candidate = best.clone();
            candidate.drain(i..(i + chunk).min(best.len()));
            runs += 1;
            if run(cfg, &candidate).is_err() {
                best = candidate;
                shrunk = true;
            } else {
                i += chunk;
            }
        }
        if !shrunk {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    best
}

/// Runs a seed; on failure returns a report with the seed, the shrunk
/// schedule and the trace of the shrunk run.
pub fn check_seed(cfg: &SimConfig) -> Result<Outcome, String> {
    let schedule = generate(cfg);
    match run(cfg, &schedule) {
        Ok(o) => Ok(o),
        Err(first) => {
            let small = shrink(cfg, schedule, 300);
            let failure = run(cfg, &small).err().unwrap_or(first);
            let mut report = format!(
                "seed {} ({} participants) violated an invariant: {}\nreplay: SEED={} cargo test -p mf-sim --test sim replay -- --nocapture\nshrunk schedule ({} steps):\n",
                cfg.seed, cfg.participants, failure.violation, cfg.seed, small.len()
            );
            for op in &small {
                report.push_str(&format!("  {op:?}\n"));
            }
            report.push_str("trace:\n");
            for line in &failure.trace {
                report.push_str(&format!("  {line}\n"));
            }
            Err(report)
        }
    }
}
