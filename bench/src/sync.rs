//! `mf-bench sync`: end-to-end sync between two real `magic-folder` daemons
//! (separate processes) on an embedded grid, next to Syncthing measured in
//! the same run on the same workloads, and to this machine's limits.
//!
//! Columns (each a fresh pair of processes per workload):
//!
//! * **ours (defaults)**: our daemons as a user meets them, with no tuning
//!   flags (poll every 3 s, pending delay 1 s). Every target is judged here.
//! * **ours (tuned)**, only with `--tuned`: `--poll-interval 1s
//!   --pending-delay 200ms` as an extra column, never instead. Giving
//!   `--poll-interval` or `--pending-delay` implies `--tuned` and sets that
//!   column's flags (the one not given keeps its tuned value).
//! * **Syncthing tuned (same run)**: two Syncthing instances (see the
//!   `syncthing` module: file-system watcher with a 1 s delay), driven by
//!   the same workload code and checked the same way. Without a `syncthing`
//!   binary on `PATH` every such cell says so and the run goes on
//!   (`scripts/bench-setup.sh` installs it); a Syncthing failure or timeout
//!   is a failed cell.
//!
//! "ours/Syncthing" divides our default figure by Syncthing's; the targets
//! (issue 16, in [`TARGETS`]) are judged on our default figure. The targets
//! are for the full sizes: a `--quick` run shows them for orientation only.
//!
//! Workloads (sizes in brackets are `--quick`'s):
//!
//! * **W1** 1,000 and 10,000 files of 4 KiB in 10 / 100 directories
//!   [100 and 1,000] appear at once in alice's folder: time until bob holds
//!   byte-identical copies;
//! * **W2** one 64 MiB and one 1 GiB file [8 and 64 MiB]: time, MiB/s and the
//!   peak RSS of both daemons;
//! * **W3** a 1 KiB edit of an existing file in a folder of 10,000 files
//!   [1,000], steady state: latency until bob sees it (median and max of 7
//!   [5]); and the same edit in the middle of a 64 MiB file [8 MiB] of that
//!   folder. The edits are spread over 3 s, our default poll cycle;
//! * **W4** the same file edited on both sides at once: time until both
//!   sides show both versions (the file and one conflict copy, the same on
//!   both sides, both contents present);
//! * **W5** 100 deletions: time until all are gone at bob;
//! * **idle** a folder of 100,000 files [10,000] with nothing changing: each
//!   daemon's CPU over 60 s [10 s] and RSS (the initial sync of that folder
//!   is reported too);
//! * **rescan** restart of a daemon on that unchanged folder: time from
//!   starting the process until it says it is up to date (ours: scanned,
//!   polled, nothing queued, in flight or unpublished; Syncthing: scanned,
//!   connected, idle, nothing needed on either side).
//!
//! How things are timed. Payloads are written outside the folder (same file
//! system), flushed to disk (`sync`), then *moved* in: the clock starts just
//! before the moves, so it measures sync, not the writing of test data.
//! Arrival is checked on bob's side by listing directories (cheaply, at an
//! interval that is 2 % of the time waited) and confirmed by hashing every
//! file; the time is when the last file was present, provided the hashes
//! then match. Every wait is bounded and a timeout is reported as such.
//!
//! Nothing is deleted until the end of the run (the work directory then
//! goes as a whole). On ext4 without a journal, as here, creating a file
//! within minutes of many deletions costs several times more CPU (the inode
//! allocator reads and skips recently deleted inodes): a cleanup between
//! phases made whichever phase came next pay for it.
//!
//! Limits, measured in the same run on the same files (each in its own
//! process, see `phase`): `cp -r` with an fsync per file (1 thread), a raw
//! read of the files, and for scans a plain walk with an `lstat` per entry;
//! for W2 also AES-256-GCM in memory. "ours/limit" is our time over the
//! `cp -r`+fsync time (W2: over the time at min(disk, AES-GCM) speed;
//! rescan: over the walk).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::data::{
    content, hash_bytes, hash_file, settle, write_content, write_small_tree, Arrival, Expected,
    SMALL,
};
use crate::limits::{copy_files, tree_files};
use crate::phase::{self, Measured};
use crate::report::{print_columns, write_json};
use crate::syncthing;
use crate::world::{
    clock_ticks_per_s, settle_daemons, wait_for, wait_until, Daemon, RunOptions, World,
};

const USAGE: &str = "usage: mf-bench sync [--only W1,W2,W3,W4,W5,idle,rescan] [--quick] \
[--tuned] [--dir PATH] [--json PATH] [--bin PATH] [--poll-interval 1s] [--pending-delay 200ms] \
[--idle-seconds N]";

/// MiB pushed through the in-memory AES-GCM limit.
const CRYPTO_MIB: u64 = 512;

/// The workloads, in the order they run.
const WORKLOADS: [&str; 7] = ["W1", "W2", "W3", "W4", "W5", "idle", "rescan"];

/// The large file of the steady folder, at its top.
const LARGE_FILE: &str = "large.bin";

/// Options of `mf-bench sync`.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    run: RunOptions,
    idle_seconds: Option<u64>,
    /// Also run our daemons tuned, as an extra column.
    tuned: bool,
}

impl SyncOptions {
    /// Parses the arguments after `sync`.
    pub fn parse(args: &[String]) -> Result<SyncOptions> {
        let mut idle_seconds = None;
        let mut tuned = false;
        let run = RunOptions::parse(args, &WORKLOADS, USAGE, |flag, value| {
            match flag {
                "--idle-seconds" => {
                    idle_seconds = Some(value()?.parse().context("--idle-seconds")?)
                }
                "--tuned" => tuned = true,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        let tuned = tuned || run.tuning_given();
        Ok(SyncOptions {
            run,
            idle_seconds,
            tuned,
        })
    }
}

/// Workload sizes: the full run, or `--quick`'s smoke run.
struct Sizes {
    /// (files, directories) per W1 run: the few, then the many.
    w1: [(usize, usize); 2],
    /// W2 file sizes, MiB: the small, then the large.
    w2_mib: [u64; 2],
    /// The steady folder of W3–W5: (files, directories).
    steady: (usize, usize),
    /// The steady folder's large file, MiB.
    large_file_mib: u64,
    w3_samples: usize,
    w4_rounds: usize,
    w5_deletions: usize,
    /// The idle and rescan folder: (files, directories).
    big: (usize, usize),
    idle_seconds: u64,
    rescan_rounds: usize,
}

impl Sizes {
    fn new(o: &SyncOptions) -> Sizes {
        let mut s = if o.run.quick {
            Sizes {
                w1: [(100, 10), (1_000, 100)],
                w2_mib: [8, 64],
                steady: (1_000, 10),
                large_file_mib: 8,
                w3_samples: 5,
                w4_rounds: 2,
                w5_deletions: 100,
                big: (10_000, 100),
                idle_seconds: 10,
                rescan_rounds: 2,
            }
        } else {
            Sizes {
                w1: [(1_000, 10), (10_000, 100)],
                w2_mib: [64, 1024],
                steady: (10_000, 100),
                large_file_mib: 64,
                w3_samples: 7,
                w4_rounds: 3,
                w5_deletions: 100,
                big: (100_000, 1_000),
                idle_seconds: 60,
                rescan_rounds: 3,
            }
        };
        if let Some(secs) = o.idle_seconds {
            s.idle_seconds = secs;
        }
        s
    }
}

// ----- Targets ---------------------------------------------------------------

/// The rows of the table, by what they measure (whatever the sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowKind {
    /// W1, 1,000 files.
    FewFiles,
    /// W1, 10,000 files.
    ManyFiles,
    /// W2, 64 MiB.
    SmallFile,
    /// W2, 1 GiB.
    LargeFile,
    /// W3, a small file.
    Edit,
    /// W3, inside the large file.
    EditInLargeFile,
    /// W4.
    Conflict,
    /// W5.
    Deletions,
    /// The big folder's initial sync.
    InitialSync,
    Idle,
    Restart,
}

/// One thing a row must achieve, judged on our figure at default settings.
#[derive(Clone, Copy, Debug)]
enum Goal {
    /// At most this multiple of Syncthing's figure (tuned, same run).
    VsSyncthing(f64),
    /// At most this multiple of the machine's limit (same run).
    VsLimit(f64),
    /// At most this many seconds (the median where there are samples).
    Seconds(f64),
    /// Each daemon's RSS at most this many MiB (peak; idle: during the
    /// idle period).
    RssMib(f64),
}

/// The targets, all at our default settings: issue 16's, and the earlier
/// ones against the machine's limits and on RSS that it does not replace.
const TARGETS: [(RowKind, &[Goal]); 11] = [
    (RowKind::FewFiles, &[Goal::VsSyncthing(0.8)]),
    (
        RowKind::ManyFiles,
        &[Goal::VsSyncthing(0.7), Goal::VsLimit(2.0)],
    ),
    (
        RowKind::SmallFile,
        &[Goal::VsSyncthing(0.8), Goal::RssMib(64.0)],
    ),
    (
        RowKind::LargeFile,
        &[
            Goal::VsSyncthing(1.0),
            Goal::VsLimit(1.5),
            Goal::RssMib(64.0),
        ],
    ),
    (RowKind::Edit, &[Goal::Seconds(0.5)]),
    (RowKind::EditInLargeFile, &[Goal::Seconds(0.5)]),
    (RowKind::Conflict, &[Goal::Seconds(0.5)]),
    (RowKind::Deletions, &[Goal::Seconds(0.5)]),
    (
        RowKind::InitialSync,
        &[Goal::Seconds(90.0), Goal::RssMib(150.0)],
    ),
    (RowKind::Idle, &[Goal::VsSyncthing(1.0), Goal::RssMib(64.0)]),
    (RowKind::Restart, &[Goal::Seconds(1.0)]),
];

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::VsSyncthing(x) => format!("≤ {x}× Syncthing"),
            Goal::VsLimit(x) => format!("≤ {x}× limit"),
            Goal::Seconds(s) => format!("≤ {s} s"),
            Goal::RssMib(m) => format!("RSS ≤ {m} MiB"),
        }
    }

    /// Whether `f` meets this goal; `None` if a figure needed is missing
    /// (ours failing is a miss; Syncthing missing is not known).
    fn met(self, f: &Figure) -> Option<bool> {
        let ours = f.ours();
        let Some(value) = ours.value else {
            return Some(false);
        };
        match self {
            // Compared, not divided: Syncthing's idle CPU may read 0.
            Goal::VsSyncthing(x) => f.syncthing().value.map(|theirs| value <= x * theirs),
            Goal::VsLimit(x) => f.vs_limit().map(|r| r <= x),
            Goal::Seconds(s) => Some(value <= s),
            Goal::RssMib(m) => ours.rss_mib.map(|(a, b)| a <= m && b <= m),
        }
    }
}

// ----- Columns and figures ---------------------------------------------------------

/// A sync program at some settings: one column of the table.
struct Contender {
    /// Its key in the JSON output and its directory in the work directory.
    key: &'static str,
    label: String,
    kind: Kind,
}

enum Kind {
    /// Our daemons, with these extra flags for `create` and `join` (none:
    /// our defaults).
    Ours(Vec<String>),
    /// Two Syncthing instances; `installed: false` if there is no binary.
    Syncthing { installed: bool },
}

/// What a figure is measured in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Seconds,
    CpuPercent,
}

/// One column's cell of a row.
#[derive(Default)]
struct Outcome {
    /// The figure (the median for repeated measurements); `None` if it
    /// timed out or failed.
    value: Option<f64>,
    /// Why there is no value.
    failure: Option<String>,
    /// Shown after the value: max, rate, ….
    detail: String,
    /// Peak (or, for idle, current) RSS of alice's and bob's daemons, MiB.
    rss_mib: Option<(f64, f64)>,
    extra: Value,
}

impl Outcome {
    fn failed(why: String) -> Outcome {
        Outcome {
            failure: Some(why),
            ..Outcome::default()
        }
    }

    /// A timed wait's outcome: its seconds with `detail`, or a timeout
    /// after `timeout` with `why` (what was left, say).
    fn timed(took: Option<Duration>, timeout: Duration, detail: String, why: &str) -> Outcome {
        match took {
            Some(t) => Outcome {
                value: Some(t.as_secs_f64()),
                detail,
                ..Outcome::default()
            },
            None => Outcome::failed(format!("timeout after {:.0} s{why}", timeout.as_secs_f64())),
        }
    }

    /// The median of repeated `samples` (seconds), or `failure` if any.
    fn of_samples(samples: Vec<f64>, failure: Option<String>, note: &str) -> Outcome {
        let mut o = Outcome {
            failure,
            ..Outcome::default()
        };
        if o.failure.is_none() {
            let (median, max) = median_max(&samples);
            o.value = Some(median);
            o.detail = format!("median of {}, max {max:.2} s{note}", samples.len());
        }
        o.extra = json!({ "samples_s": samples });
        o
    }

    fn shown(&self, unit: Unit) -> String {
        let value = match (&self.failure, self.value, unit) {
            (Some(f), _, _) => return f.clone(),
            (None, Some(v), Unit::Seconds) => format!("{v:.2} s"),
            (None, Some(v), Unit::CpuPercent) => format!("{v:.2} % CPU"),
            (None, None, _) => return "—".into(),
        };
        if self.detail.is_empty() {
            value
        } else {
            format!("{value} ({})", self.detail)
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "value": self.value,
            "failure": self.failure,
            "detail": self.detail,
            "rss_mib": self.rss_mib.map(|(a, b)| json!({ "alice": a, "bob": b })),
            "extra": self.extra,
        })
    }
}

/// One line of the table: a measurement and its cell in every column.
struct Figure {
    kind: RowKind,
    workload: &'static str,
    what: String,
    unit: Unit,
    /// Limits from the same run, seconds.
    copy_s: Option<f64>,
    read_s: Option<f64>,
    walk_s: Option<f64>,
    /// The limit our time is divided by for "ours/limit", seconds.
    limit_s: Option<f64>,
    /// One per column, in the columns' order: ours at defaults first,
    /// Syncthing last.
    outcomes: Vec<Outcome>,
    /// Facts of the row, for the JSON output.
    extra: Value,
}

impl Figure {
    fn new(kind: RowKind, workload: &'static str, what: String) -> Figure {
        Figure {
            kind,
            workload,
            what,
            unit: Unit::Seconds,
            copy_s: None,
            read_s: None,
            walk_s: None,
            limit_s: None,
            outcomes: Vec::new(),
            extra: json!({}),
        }
    }

    /// With the `cp -r`+fsync and read limits, the first being the ratio's.
    fn with_copy_limits(self, (copy_s, read_s): (f64, f64)) -> Figure {
        Figure {
            copy_s: Some(copy_s),
            read_s: Some(read_s),
            limit_s: Some(copy_s),
            ..self
        }
    }

    /// Ours at default settings.
    fn ours(&self) -> &Outcome {
        &self.outcomes[0]
    }

    fn syncthing(&self) -> &Outcome {
        &self.outcomes[self.outcomes.len() - 1]
    }

    /// Our figure over Syncthing's.
    fn vs_syncthing(&self) -> Option<f64> {
        match (self.ours().value, self.syncthing().value) {
            (Some(ours), Some(theirs)) if theirs > 0.0 => Some(ours / theirs),
            _ => None,
        }
    }

    /// Our time over the limit's.
    fn vs_limit(&self) -> Option<f64> {
        match (self.unit, self.ours().value, self.limit_s) {
            (Unit::Seconds, Some(v), Some(b)) if b > 0.0 => Some(v / b),
            _ => None,
        }
    }

    fn goals(&self) -> &'static [Goal] {
        TARGETS
            .iter()
            .find(|(k, _)| *k == self.kind)
            .map_or(&[], |(_, goals)| goals)
    }

    /// The target as text, and whether it was met (`None`: not known).
    fn target(&self) -> Option<(String, Option<bool>)> {
        let goals = self.goals();
        if goals.is_empty() {
            return None;
        }
        let text: Vec<String> = goals.iter().map(|g| g.text()).collect();
        let verdicts: Vec<Option<bool>> = goals.iter().map(|g| g.met(self)).collect();
        let met = if verdicts.contains(&Some(false)) {
            Some(false)
        } else if verdicts.contains(&None) {
            None
        } else {
            Some(true)
        };
        Some((text.join(", "), met))
    }

    fn line(&self) -> Vec<String> {
        let opt = |v: Option<f64>| v.map_or("—".into(), |s| format!("{s:.3}"));
        let ratio = |r: Option<f64>| r.map_or("—".into(), |r| format!("{r:.2}"));
        let mut cells = vec![self.workload.to_owned(), self.what.clone()];
        cells.extend(self.outcomes.iter().map(|o| o.shown(self.unit)));
        cells.extend([
            ratio(self.vs_syncthing()),
            format!(
                "{} / {} / {}",
                opt(self.copy_s),
                opt(self.read_s),
                opt(self.walk_s)
            ),
            ratio(self.vs_limit()),
            self.outcomes
                .iter()
                .map(|o| {
                    o.rss_mib
                        .map_or("—".into(), |(a, b)| format!("{a:.0}/{b:.0}"))
                })
                .collect::<Vec<_>>()
                .join(" · "),
            match self.target() {
                Some((t, met)) => format!("{t}: {}", verdict_text(met)),
                None => String::new(),
            },
        ]);
        cells
    }

    fn to_json(&self, columns: &[Contender]) -> Value {
        let target = self.target();
        let results: serde_json::Map<String, Value> = columns
            .iter()
            .zip(&self.outcomes)
            .map(|(c, o)| (c.key.to_owned(), o.to_json()))
            .collect();
        json!({
            "workload": self.workload,
            "what": self.what,
            "unit": match self.unit { Unit::Seconds => "s", Unit::CpuPercent => "% of one core" },
            "results": results,
            "ratio_ours_to_syncthing": self.vs_syncthing(),
            "limit_copy_fsync_s": self.copy_s,
            "limit_read_s": self.read_s,
            "limit_walk_s": self.walk_s,
            "ratio_ours_to_limit": self.vs_limit(),
            "limit_s": self.limit_s,
            "target": target.as_ref().map(|(t, _)| t),
            "target_met": target.and_then(|(_, met)| met),
            "extra": self.extra,
        })
    }
}

fn verdict_text(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "ok",
        Some(false) => "MISSED",
        None => "? (no Syncthing figure)",
    }
}

// ----- The run ---------------------------------------------------------------

/// Runs the selected workloads and prints (and optionally saves) the table.
pub fn run(o: &SyncOptions) -> Result<()> {
    crate::world::in_work_dir(o.run.dir.as_deref(), "sync", |work| run_in(o, work))
}

fn run_in(o: &SyncOptions, work: &Path) -> Result<()> {
    // Run both binaries from copies: a rebuild in target/release during a
    // long run must not swap the daemon (or this program) mid-measurement.
    let bin_dir = work.join("bin");
    fs::create_dir_all(&bin_dir)?;
    phase::run_from_copy_in(&bin_dir)?;
    let daemon = bin_dir.join("magic-folder");
    fs::copy(&o.run.bin, &daemon).with_context(|| format!("copying {}", o.run.bin.display()))?;
    let mut o = o.clone();
    o.run.bin = daemon;
    let o = &o;
    let sizes = Sizes::new(o);
    let syncthing_version = syncthing::version();
    let mut columns = vec![Contender {
        key: "ours",
        label: "ours (defaults)".into(),
        kind: Kind::Ours(Vec::new()),
    }];
    if o.tuned {
        columns.push(Contender {
            key: "ours_tuned",
            label: format!("ours ({})", o.run.tuning().join(" ")),
            kind: Kind::Ours(o.run.tuning()),
        });
    }
    columns.push(Contender {
        key: "syncthing",
        label: "Syncthing tuned (same run)".into(),
        kind: Kind::Syncthing {
            installed: syncthing_version.is_some(),
        },
    });
    let mut figures: Vec<Figure> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let b = Bench {
        o,
        work,
        columns,
        scratch: Default::default(),
    };

    if o.run.wants("W1") {
        for (&(n, dirs), kind) in sizes.w1.iter().zip([RowKind::FewFiles, RowKind::ManyFiles]) {
            let what = format!("{} × 4 KiB in {dirs} dirs", thousands(n));
            b.run_workload((kind, "W1", what), &mut figures, |b, f| b.w1(f, n, dirs));
        }
    }
    if o.run.wants("W2") {
        match b.step("AES-256-GCM", "limit-aead", json!({ "mib": CRYPTO_MIB })) {
            Ok(aead) => {
                let kinds = [RowKind::SmallFile, RowKind::LargeFile];
                for (&mib, kind) in sizes.w2_mib.iter().zip(kinds) {
                    let what = format!("1 × {}", mib_text(mib));
                    b.run_workload((kind, "W2", what), &mut figures, |b, f| {
                        b.w2(f, mib, aead.mib_per_s())
                    });
                }
            }
            Err(e) => notes.push(format!("W2 not run: AES-GCM limit failed: {e:#}")),
        }
    }
    if ["W3", "W4", "W5"].iter().any(|w| o.run.wants(w)) {
        if let Err(e) = b.steady(&sizes, &mut figures, &mut notes) {
            notes.push(format!("steady folder (W3–W5): {e:#}"));
        }
    }
    if o.run.wants("idle") || o.run.wants("rescan") {
        if let Err(e) = b.big(&sizes, &mut figures) {
            notes.push(format!("idle/rescan folder: {e:#}"));
        }
    }

    println!();
    println!(
        "Sync between two daemons, this machine, same run. Ours: two magic-folder daemons on an \
         embedded grid at their defaults{}. Syncthing: {}, tuned (watcher delay 1 s).",
        if o.tuned {
            format!(", and tuned ({})", o.run.tuning().join(" "))
        } else {
            String::new()
        },
        syncthing_version
            .as_deref()
            .unwrap_or(syncthing::NOT_INSTALLED)
    );
    let mut header = vec!["", "workload"];
    header.extend(b.columns.iter().map(|c| c.label.as_str()));
    header.extend([
        "ours/Syncthing",
        "limits: cp -r+fsync / read / walk (s)",
        "ours/limit",
        "RSS alice/bob MiB (columns' order)",
        "target (ours, defaults)",
    ]);
    let lines: Vec<Vec<String>> = figures.iter().map(Figure::line).collect();
    print_columns(&header, &lines);
    if o.run.quick {
        notes
            .push("--quick: the targets are for the full sizes, shown here for orientation".into());
    }
    for n in &notes {
        println!("note: {n}");
    }
    if let Some(path) = &o.run.json {
        let doc = json!({
            "benchmark": "sync",
            "params": {
                "quick": o.run.quick,
                "columns": b.columns.iter().map(|c| json!({ "key": c.key, "label": c.label })).collect::<Vec<_>>(),
                "tuned_flags": o.tuned.then(|| o.run.tuning()),
                "syncthing": syncthing_version,
                "idle_seconds": sizes.idle_seconds,
                "workloads": o.run.only,
                "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            },
            "notes": notes,
            "results": figures.iter().map(|f| f.to_json(&b.columns)).collect::<Vec<_>>(),
        });
        write_json(path, &doc)?;
    }
    Ok(())
}

/// The shared context of the workloads.
struct Bench<'a> {
    o: &'a SyncOptions,
    work: &'a Path,
    /// The columns: ours at defaults first, Syncthing last.
    columns: Vec<Contender>,
    /// Numbers the scratch directories.
    scratch: std::cell::Cell<usize>,
}

/// Two synced daemons: alice's folder is the one written to, bob's the
/// other side.
struct Pair {
    alice: Box<dyn Daemon>,
    bob: Box<dyn Daemon>,
}

/// What W1 and W2 move into alice's folder.
struct Payload<'a> {
    /// Writes the payload into a directory (the same contents each time).
    write: &'a dyn Fn(&Path) -> Result<()>,
    expected: &'a Expected,
    timeout: Duration,
    /// How much it is, and in what unit, for the rate shown.
    amount: (f64, &'a str),
}

impl Pair {
    fn daemons(&self) -> [&dyn Daemon; 2] {
        [self.alice.as_ref(), self.bob.as_ref()]
    }

    /// Peak RSS (VmHWM) of both daemons, MiB.
    fn peak_rss_mib(&self) -> Option<(f64, f64)> {
        let a = self.alice.sample()?;
        let b = self.bob.sample()?;
        Some((a.hwm_kib as f64 / 1024.0, b.hwm_kib as f64 / 1024.0))
    }

    /// CPU time both daemons have used so far, seconds.
    fn cpu_s(&self) -> (f64, f64) {
        let tick = clock_ticks_per_s() as f64;
        let of = |p: &dyn Daemon| p.sample().map_or(f64::NAN, |s| s.cpu_ticks as f64 / tick);
        (of(self.alice.as_ref()), of(self.bob.as_ref()))
    }

    /// Waits for `arrival` at bob's; also notes when alice was done (she
    /// showed work on local changes, then none: ours uploaded and
    /// published, Syncthing scanned), in seconds after `t0`, to tell the
    /// sending from the receiving side.
    fn wait_arrival(
        &self,
        t0: Instant,
        timeout: Duration,
        arrival: &mut Arrival,
    ) -> Result<(Option<Duration>, Option<f64>)> {
        let (mut busy, mut done) = (false, None);
        let took = wait_for(t0, timeout, || {
            if done.is_none() {
                match self.alice.busy_with_local_changes() {
                    Some(true) => busy = true,
                    Some(false) if busy => done = Some(t0.elapsed().as_secs_f64()),
                    _ => {}
                }
            }
            arrival.check()
        })?;
        Ok((took, done))
    }

    /// Moves the entries of `dir` (where `payload` was written) into
    /// alice's folder and waits for them at bob's: the time taken, with the
    /// rate, when alice was done and the CPU both daemons used.
    fn sync_payload(&self, dir: &Path, payload: &Payload) -> Result<Outcome> {
        self.settle(Duration::from_secs(60))?;
        let mut arrival = Arrival::new(self.bob.dir(), payload.expected);
        eprintln!("    syncing…");
        let cpu0 = self.cpu_s();
        let t0 = Instant::now();
        move_children_into(dir, self.alice.dir())?;
        let (took, alice_done) = self.wait_arrival(t0, payload.timeout, &mut arrival)?;
        let cpu = cpu_delta(cpu0, self.cpu_s());
        let (amount, unit) = payload.amount;
        let detail = took.map_or(String::new(), |t| {
            format!(
                "{:.0} {unit}/s; alice done {}; CPU {:.1} + {:.1} s",
                amount / t.as_secs_f64(),
                alice_done.map_or("?".into(), |d| format!("{d:.1} s")),
                cpu.0,
                cpu.1
            )
        });
        let missing = format!(" ({} not seen yet)", arrival.not_seen());
        let mut out = Outcome::timed(took, payload.timeout, detail, &missing);
        out.rss_mib = self.peak_rss_mib();
        out.extra = json!({
            "cpu_s": { "alice": cpu.0, "bob": cpu.1 },
            "alice_done_s": alice_done,
        });
        Ok(out)
    }

    /// Waits until both daemons have been up to date for a whole second.
    fn settle(&self, timeout: Duration) -> Result<()> {
        settle_daemons(&self.daemons(), timeout)
    }

    /// Stops both daemons. (Their files stay until the end of the run: see
    /// the module documentation.)
    fn finish(mut self) {
        for p in [&mut self.alice, &mut self.bob] {
            if let Err(e) = p.stop() {
                eprintln!("  warning: {e:#}");
            }
        }
    }
}

impl Bench<'_> {
    /// Runs a workload producing one row; an error (in its limits: the
    /// columns' own errors are their cells) becomes a row failed in every
    /// column.
    fn run_workload(
        &self,
        (kind, workload, what): (RowKind, &'static str, String),
        figures: &mut Vec<Figure>,
        f: impl FnOnce(&Self, Figure) -> Result<Figure>,
    ) {
        eprintln!("{workload}: {what}");
        let figure = Figure::new(kind, workload, what.clone());
        figures.push(f(self, figure).unwrap_or_else(|e| {
            eprintln!("  failed: {e:#}");
            let mut failed = Figure::new(kind, workload, format!("{what}: failed: {e:#}"));
            failed.outcomes = self
                .columns
                .iter()
                .map(|_| Outcome::failed("not run".into()))
                .collect();
            failed
        }));
    }

    /// Runs `measure` once per column, each in its own directory
    /// `work/<name>/<column key>`, and appends that column's outcomes to
    /// `rows` (one each, in order). A missing Syncthing, or an error, fills
    /// that column's cells with the reason: the run goes on.
    fn run_columns(
        &self,
        name: &str,
        rows: &mut [Figure],
        mut measure: impl FnMut(&Contender, &Path) -> Result<Vec<Outcome>>,
    ) {
        for c in &self.columns {
            let result = match c.kind {
                Kind::Syncthing { installed: false } => Err(syncthing::NOT_INSTALLED.to_owned()),
                _ => {
                    eprintln!("  {}:", c.label);
                    measure(c, &self.work.join(name).join(c.key)).map_err(|e| {
                        eprintln!("    failed: {e:#}");
                        format!("failed: {e:#}")
                    })
                }
            };
            let mut outcomes = result
                .unwrap_or_else(|why| rows.iter().map(|_| Outcome::failed(why.clone())).collect());
            outcomes.resize_with(rows.len(), || Outcome::failed("not measured".into()));
            for (row, outcome) in rows.iter_mut().zip(outcomes) {
                row.outcomes.push(outcome);
            }
        }
    }

    /// Runs a limit measurement in its own process.
    fn step(&self, what: &str, name: &str, args: Value) -> Result<Measured> {
        eprintln!("  limit: {what}…");
        let m = phase::run(name, args)?;
        settle()?;
        Ok(m)
    }

    /// `cp -r` with an fsync per file, and a raw read, of the tree at
    /// `src` (seconds each).
    fn tree_limits(&self, src: &Path) -> Result<(f64, f64)> {
        settle()?;
        let scratch = self.fresh("limit-copy");
        let copy = self.step(
            "cp -r + fsync per file",
            "limit-copy-tree",
            json!({ "src_dir": path_text(src), "dst_dir": path_text(&scratch), "threads": 1 }),
        )?;
        let read = self.step(
            "raw read",
            "limit-read-tree",
            json!({ "dir": path_text(src) }),
        )?;
        Ok((copy.seconds, read.seconds))
    }

    /// The same limits for some files of a folder (copied aside first).
    fn file_limits(&self, root: &Path, rels: &[PathBuf]) -> Result<(f64, f64)> {
        let staged = self.fresh("limit-src");
        copy_files(root, &staged, rels, 1, false)?;
        self.tree_limits(&staged)
    }

    /// A new path under the work directory, for scratch data.
    fn fresh(&self, prefix: &str) -> PathBuf {
        let n = self.scratch.get();
        self.scratch.set(n + 1);
        self.work.join(format!("{prefix}-{n}"))
    }

    /// A fresh pair of `c`'s daemons under `root`, with empty folders (or
    /// what `prepare` puts into alice's before they start), both running.
    fn pair(
        &self,
        c: &Contender,
        root: &Path,
        prepare: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Pair> {
        let (mut alice, mut bob): (Box<dyn Daemon>, Box<dyn Daemon>) = match &c.kind {
            Kind::Ours(tuning) => {
                let world = World::new(&root.join("world"), &self.o.run.bin, tuning)?;
                let alice = world.create("alice")?;
                let bob = world.join(&alice, "bob")?;
                (Box::new(alice), Box::new(bob))
            }
            Kind::Syncthing { .. } => {
                let [alice, bob] = syncthing::pair(root)?;
                (Box::new(alice), Box::new(bob))
            }
        };
        prepare(alice.dir())?;
        settle()?;
        alice.start()?;
        bob.start()?;
        Ok(Pair { alice, bob })
    }

    // ----- W1 -----------------------------------------------------------

    /// W1: `n` small files in `dirs` directories moved into alice's folder.
    fn w1(&self, f: Figure, n: usize, dirs: usize) -> Result<Figure> {
        // The same contents for the limits and every column (same seed).
        let write = |dir: &Path| write_small_tree(dir, n, dirs, 1);
        let template = self.fresh("limit-src");
        let expected = write(&template)?;
        let mut f = f.with_copy_limits(self.tree_limits(&template)?);
        let timeout = Duration::from_secs(60) + Duration::from_millis(50) * n as u32;
        let payload = Payload {
            write: &|dir| write(dir).map(drop),
            expected: &expected,
            timeout,
            amount: (n as f64, "files"),
        };
        self.payload_columns(&format!("w1-{n}"), &mut f, &payload);
        Ok(f)
    }

    // ----- W2 -----------------------------------------------------------

    /// W2: one file of `mib` MiB moved into alice's folder.
    fn w2(&self, mut f: Figure, mib: u64, aead_mib_s: f64) -> Result<Figure> {
        const NAME: &str = "big.bin";
        // The same contents for the limits and every column (same seed).
        let write = |dir: &Path| -> Result<()> {
            fs::create_dir_all(dir)?;
            write_content(&dir.join(NAME), mib << 20, 7)
        };
        let template = self.fresh("limit-src");
        write(&template)?;
        let src = template.join(NAME);
        let expected: Expected =
            BTreeMap::from([(PathBuf::from(NAME), (mib << 20, hash_file(&src)?))]);
        settle()?;
        let copy = self.step(
            "copy + fsync",
            "limit-copy-large",
            json!({ "src": path_text(&src), "dst": path_text(&self.fresh("limit-copy.bin")) }),
        )?;
        let read = self.step(
            "raw read",
            "limit-read-tree",
            json!({ "dir": path_text(&template) }),
        )?;
        let disk = copy.mib_per_s();
        f.copy_s = Some(copy.seconds);
        f.read_s = Some(read.seconds);
        f.limit_s = Some(mib as f64 / disk.min(aead_mib_s));
        f.extra = json!({
            "limit_name": if disk <= aead_mib_s { "copy+fsync" } else { "AES-GCM" },
            "copy_fsync_mib_per_s": disk,
            "aes256gcm_mib_per_s": aead_mib_s,
        });
        let payload = Payload {
            write: &write,
            expected: &expected,
            timeout: Duration::from_secs(60) + Duration::from_millis(200) * mib as u32,
            amount: (mib as f64, "MiB"),
        };
        self.payload_columns(&format!("w2-{mib}"), &mut f, &payload);
        Ok(f)
    }

    /// Runs every column of a W1/W2 row: a fresh pair, `payload` moved into
    /// alice's folder (see [`Pair::sync_payload`]).
    fn payload_columns(&self, name: &str, f: &mut Figure, payload: &Payload) {
        self.run_columns(name, std::slice::from_mut(f), |c, root| {
            let dir = root.join("payload");
            (payload.write)(&dir)?;
            let pair = self.pair(c, root, |_| Ok(()))?;
            let out = pair.sync_payload(&dir, payload);
            pair.finish();
            Ok(vec![out?])
        });
    }

    // ----- W3–W5: a steady folder ------------------------------------------

    /// Runs W3–W5 (those selected) on a steady folder, one per column, and
    /// notes whether both trees were identical at the end.
    fn steady(
        &self,
        sizes: &Sizes,
        figures: &mut Vec<Figure>,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        let (n, dirs) = sizes.steady;
        let large_mib = sizes.large_file_mib;
        eprintln!(
            "steady folder: {} files in {dirs} dirs and 1 × {}",
            thousands(n),
            mib_text(large_mib)
        );
        // The same contents for the limits and every column (same seeds).
        let write = |dir: &Path| -> Result<Expected> {
            let mut expected = write_small_tree(dir, n, dirs, 2)?;
            let large = dir.join(LARGE_FILE);
            write_content(&large, large_mib << 20, 11)?;
            expected.insert(LARGE_FILE.into(), (large_mib << 20, hash_file(&large)?));
            Ok(expected)
        };
        let template = self.fresh("limit-src");
        let expected = write(&template)?;
        let small: Vec<PathBuf> = expected
            .keys()
            .filter(|rel| rel.as_os_str() != LARGE_FILE)
            .cloned()
            .collect();
        // Each workload uses its own files: W3 the first ones, W4 the next,
        // W5 the last ones.
        let w3 = small[..sizes.w3_samples].to_vec();
        let w4 = small[w3.len()..w3.len() + sizes.w4_rounds].to_vec();
        let k = sizes.w5_deletions.min(small.len() - w3.len() - w4.len());
        let w5 = small[small.len() - k..].to_vec();
        let large = vec![PathBuf::from(LARGE_FILE); sizes.w3_samples];

        let folder = format!("folder of {}", thousands(n));
        let mut rows = Vec::new();
        if self.o.run.wants("W3") {
            let limits = self.file_limits(&template, &w3[..1])?;
            let what = format!("1 KiB edit, {folder}");
            rows.push(Figure::new(RowKind::Edit, "W3", what).with_copy_limits(limits));
            let what = format!("1 KiB edit inside a {} file", mib_text(large_mib));
            rows.push(Figure::new(RowKind::EditInLargeFile, "W3", what));
        }
        if self.o.run.wants("W4") {
            let limits = self.file_limits(&template, &w4[..1])?;
            let what = format!("edit on both sides ({} rounds), {folder}", w4.len());
            rows.push(Figure::new(RowKind::Conflict, "W4", what).with_copy_limits(limits));
        }
        if self.o.run.wants("W5") {
            let limits = self.file_limits(&template, &w5)?;
            let what = format!("{k} deletions, {folder}");
            rows.push(Figure::new(RowKind::Deletions, "W5", what).with_copy_limits(limits));
        }
        let kinds: Vec<RowKind> = rows.iter().map(|r| r.kind).collect();
        self.run_columns("steady", &mut rows, |c, root| {
            let pair = self.pair(c, root, |dir| write(dir).map(drop))?;
            let sync_timeout = Duration::from_secs(60) + Duration::from_millis(50) * n as u32;
            let t0 = Instant::now();
            let mut arrival = Arrival::new(pair.bob.dir(), &expected);
            if wait_for(t0, sync_timeout, || arrival.check())?.is_none() {
                pair.finish();
                bail!("initial sync of the steady folder timed out");
            }
            pair.settle(Duration::from_secs(120))?;
            let setup = t0.elapsed().as_secs_f64();
            let outcomes = kinds
                .iter()
                .map(|kind| {
                    outcome_of(|| match kind {
                        RowKind::Edit => self.edits(&pair, &w3),
                        RowKind::EditInLargeFile => self.edits(&pair, &large),
                        RowKind::Conflict => self.conflicts(&pair, &w4),
                        RowKind::Deletions => self.deletions(&pair, &w5),
                        other => unreachable!("{other:?} is not a steady-folder row"),
                    })
                })
                .collect();
            pair.settle(Duration::from_secs(120))?;
            let same = same_tree(pair.alice.dir(), pair.bob.dir())?;
            pair.finish();
            notes.push(format!(
                "{}: steady folder: initial sync + settle {setup:.1} s; trees identical after \
                 W3–W5: {}",
                c.label,
                match same {
                    Ok(()) => "yes".to_owned(),
                    Err(diff) => format!("NO ({diff})"),
                }
            ));
            Ok(outcomes)
        });
        figures.extend(rows);
        Ok(())
    }

    /// W3: a 1 KiB edit in the middle of each file of `rels` in turn (a
    /// file may come again): latency until bob's copy is the same.
    fn edits(&self, pair: &Pair, rels: &[PathBuf]) -> Result<Outcome> {
        eprintln!("    W3: {} edits of {}…", rels.len(), rels[0].display());
        let timeout = Duration::from_secs(30);
        let mut out = sampled(rels.len(), "", |k| {
            let rel = &rels[k];
            pair.settle(Duration::from_secs(60))?;
            // Spread the edits over our default poll cycle (3 s).
            std::thread::sleep(Duration::from_millis((k as u64 * 1129) % 3000));
            let a = pair.alice.dir().join(rel);
            let b = pair.bob.dir().join(rel);
            let mut want = fs::read(&a)?;
            let at = (want.len() / 2).saturating_sub(512) as u64;
            let edit = content(1024, 5000 + k as u64);
            want[at as usize..at as usize + edit.len()].copy_from_slice(&edit);
            let want_hash = hash_bytes(&want);
            drop(want);
            let t0 = Instant::now();
            fs::OpenOptions::new()
                .write(true)
                .open(&a)?
                .write_all_at(&edit, at)?;
            // Cheap check of the edited bytes, then the whole file.
            let mut region = vec![0u8; edit.len()];
            let took = wait_for(t0, timeout, || {
                let seen = Instant::now();
                let edited = fs::File::open(&b)
                    .and_then(|f| f.read_exact_at(&mut region, at))
                    .is_ok_and(|()| region == edit);
                Ok((edited && hash_file(&b).is_ok_and(|h| h == want_hash)).then_some(seen))
            })?;
            Ok(took.ok_or_else(|| format!("timeout after {:.0} s", timeout.as_secs_f64())))
        })?;
        out.rss_mib = pair.peak_rss_mib();
        Ok(out)
    }

    /// W4: the same file written on both sides at once, in rounds.
    fn conflicts(&self, pair: &Pair, rels: &[PathBuf]) -> Result<Outcome> {
        eprintln!("    W4: {} rounds…", rels.len());
        let (alice, bob) = (pair.alice.as_ref(), pair.bob.as_ref());
        let mut out = sampled(rels.len(), "; nothing lost", |k| {
            let rel = &rels[k];
            pair.settle(Duration::from_secs(60))?;
            let mine = content(SMALL, 7000 + k as u64);
            let theirs = content(SMALL, 8000 + k as u64);
            let want = BTreeSet::from([hash_bytes(&mine), hash_bytes(&theirs)]);
            let (a, b) = (alice.dir().join(rel), bob.dir().join(rel));
            let t0 = Instant::now();
            fs::write(&a, &mine)?;
            fs::write(&b, &theirs)?;
            let took = wait_until(t0, Duration::from_secs(60), || {
                let ours = versions_of(&a, alice)?;
                let other = versions_of(&b, bob)?;
                let hashes: BTreeSet<[u8; 32]> = ours.values().copied().collect();
                Ok(ours.len() == 2 && ours == other && hashes == want)
            })?;
            Ok(match took {
                Some(t) => Ok(t),
                None => Err(format!(
                    "timeout after 60 s (alice has {:?}, bob {:?})",
                    versions_of(&a, alice)?.keys().collect::<Vec<_>>(),
                    versions_of(&b, bob)?.keys().collect::<Vec<_>>()
                )),
            })
        })?;
        out.rss_mib = pair.peak_rss_mib();
        Ok(out)
    }

    /// W5: `rels` deleted at once at alice's: time until all are gone at
    /// bob's.
    fn deletions(&self, pair: &Pair, rels: &[PathBuf]) -> Result<Outcome> {
        eprintln!("    W5: {} deletions…", rels.len());
        pair.settle(Duration::from_secs(60))?;
        let timeout = Duration::from_secs(60);
        let t0 = Instant::now();
        for rel in rels {
            fs::remove_file(pair.alice.dir().join(rel))?;
        }
        let mut left: Vec<PathBuf> = rels.iter().map(|r| pair.bob.dir().join(r)).collect();
        let took = wait_until(t0, timeout, || {
            left.retain(|p| p.symlink_metadata().is_ok());
            Ok(left.is_empty())
        })?;
        let left = format!(" ({} left)", left.len());
        let mut out = Outcome::timed(took, timeout, String::new(), &left);
        out.rss_mib = pair.peak_rss_mib();
        Ok(out)
    }

    // ----- idle and rescan: a big folder ---------------------------------

    /// The initial sync of a big folder, then idle and restart on it (those
    /// selected), one per column.
    fn big(&self, sizes: &Sizes, figures: &mut Vec<Figure>) -> Result<()> {
        let (n, dirs) = sizes.big;
        eprintln!("big folder: {} files in {dirs} dirs", thousands(n));
        let files = thousands(n);
        let mut rows = vec![Figure::new(
            RowKind::InitialSync,
            "init",
            format!("initial sync, {files} × 4 KiB"),
        )];
        if self.o.run.wants("idle") {
            let what = format!("idle {} s, folder of {files}", sizes.idle_seconds);
            let mut f = Figure::new(RowKind::Idle, "idle", what);
            f.unit = Unit::CpuPercent;
            rows.push(f);
        }
        if self.o.run.wants("rescan") {
            let what = format!("restart → up to date, {files}");
            rows.push(Figure::new(RowKind::Restart, "rescan", what));
        }
        let kinds: Vec<RowKind> = rows.iter().map(|r| r.kind).collect();
        // The walk limit, measured once on the first folder synced.
        let mut walk_s: Option<f64> = None;
        self.run_columns("big", &mut rows, |c, root| {
            let mut expected = Expected::new();
            let mut pair = self.pair(c, root, |dir| {
                expected = write_small_tree(dir, n, dirs, 3)?;
                Ok(())
            })?;
            let init = outcome_of(|| self.initial_sync(&pair, &expected));
            drop(expected);
            let synced = init.failure.is_none();
            let mut outcomes = vec![init];
            // Idle and restart need the folder synced and settled, and the
            // walk limit (measured once, on the first folder synced).
            let ready = if synced {
                pair.settle(Duration::from_secs(300))
                    .and_then(|()| match walk_s {
                        Some(_) => Ok(()),
                        None => {
                            let dir = path_text(pair.alice.dir());
                            let walk = self.step("walk", "limit-walk", json!({ "dir": dir }))?;
                            walk_s = Some(walk.seconds);
                            Ok(())
                        }
                    })
            } else {
                Err(anyhow::anyhow!("the initial sync failed"))
            };
            for kind in &kinds[1..] {
                outcomes.push(match &ready {
                    Ok(()) => outcome_of(|| match kind {
                        RowKind::Idle => self.idle(&pair, sizes.idle_seconds),
                        RowKind::Restart => self.restart(&mut pair, sizes.rescan_rounds),
                        other => unreachable!("{other:?} is not a big-folder row"),
                    }),
                    Err(e) => Outcome::failed(format!("not run: {e:#}")),
                });
            }
            pair.finish();
            Ok(outcomes)
        });
        for row in &mut rows[1..] {
            row.walk_s = walk_s;
            if row.kind == RowKind::Restart {
                row.limit_s = walk_s;
            }
        }
        figures.extend(rows);
        Ok(())
    }

    /// Time from the daemons' start until bob holds all of `expected`.
    fn initial_sync(&self, pair: &Pair, expected: &Expected) -> Result<Outcome> {
        // The daemons started when the pair was made; close enough for a
        // figure measured in minutes.
        let t0 = Instant::now();
        let n = expected.len();
        let timeout = Duration::from_secs(120) + Duration::from_millis(20) * n as u32;
        eprintln!("    initial sync…");
        let mut arrival = Arrival::new(pair.bob.dir(), expected);
        let took = wait_for(t0, timeout, || arrival.check())?;
        let detail = took.map_or(String::new(), |t| {
            format!("{:.0} files/s", n as f64 / t.as_secs_f64())
        });
        let missing = format!(" ({} not seen yet)", arrival.not_seen());
        let mut out = Outcome::timed(took, timeout, detail, &missing);
        out.rss_mib = pair.peak_rss_mib();
        Ok(out)
    }

    fn idle(&self, pair: &Pair, seconds: u64) -> Result<Outcome> {
        pair.settle(Duration::from_secs(120))?;
        eprintln!("    idle: measuring for {seconds} s…");
        let sample = |p: &dyn Daemon| p.sample().with_context(|| format!("{} is gone", p.name()));
        let (alice, bob) = (pair.alice.as_ref(), pair.bob.as_ref());
        let (a0, b0) = (sample(alice)?, sample(bob)?);
        let t0 = Instant::now();
        let mut max_rss = (a0.rss_kib, b0.rss_kib);
        while t0.elapsed() < Duration::from_secs(seconds) {
            std::thread::sleep(Duration::from_millis(500));
            let (a, b) = (sample(alice)?, sample(bob)?);
            max_rss = (max_rss.0.max(a.rss_kib), max_rss.1.max(b.rss_kib));
        }
        let (a1, b1) = (sample(alice)?, sample(bob)?);
        let elapsed = t0.elapsed().as_secs_f64();
        let tick = clock_ticks_per_s() as f64;
        let cpu = |t0: u64, t1: u64| (t1 - t0) as f64 / tick / elapsed * 100.0;
        let (ca, cb) = (
            cpu(a0.cpu_ticks, a1.cpu_ticks),
            cpu(b0.cpu_ticks, b1.cpu_ticks),
        );
        let mib = |k: u64| k as f64 / 1024.0;
        Ok(Outcome {
            value: Some(ca.max(cb)),
            detail: format!("alice {ca:.2} %, bob {cb:.2} %"),
            rss_mib: Some((mib(max_rss.0), mib(max_rss.1))),
            extra: json!({
                "cpu_percent": { "alice": ca, "bob": cb },
                "rss_mib_max": { "alice": mib(max_rss.0), "bob": mib(max_rss.1) },
                "peak_rss_mib_since_start": { "alice": mib(a1.hwm_kib), "bob": mib(b1.hwm_kib) },
                "seconds": elapsed,
            }),
            ..Outcome::default()
        })
    }

    /// Restarts alice's daemon `rounds` times: time from starting the
    /// process until it says it is up to date.
    fn restart(&self, pair: &mut Pair, rounds: usize) -> Result<Outcome> {
        eprintln!("    rescan: {rounds} restarts…");
        let mut out = sampled(rounds, "", |_| {
            pair.settle(Duration::from_secs(120))?;
            pair.alice.stop()?;
            settle()?;
            let t0 = Instant::now();
            pair.alice.start()?;
            let took = wait_until(t0, Duration::from_secs(120), || Ok(pair.alice.up_to_date()))?;
            Ok(took.ok_or_else(|| "timeout after 120 s".to_owned()))
        })?;
        out.extra["daemon"] = json!("alice");
        Ok(out)
    }
}

/// Runs `round(k)` for k = 0 .. `rounds`, each a time or why it failed (the
/// first failure ends the rounds): the median of the times, with `note`.
fn sampled(
    rounds: usize,
    note: &str,
    mut round: impl FnMut(usize) -> Result<std::result::Result<Duration, String>>,
) -> Result<Outcome> {
    let mut samples = Vec::new();
    for k in 0..rounds {
        match round(k)? {
            Ok(t) => samples.push(t.as_secs_f64()),
            Err(why) => return Ok(Outcome::of_samples(samples, Some(why), note)),
        }
    }
    Ok(Outcome::of_samples(samples, None, note))
}

/// Runs one measurement of a column; an error becomes its failed cell.
fn outcome_of(f: impl FnOnce() -> Result<Outcome>) -> Outcome {
    f().unwrap_or_else(|e| {
        eprintln!("    failed: {e:#}");
        Outcome::failed(format!("failed: {e:#}"))
    })
}

/// Moves every entry of `from` into `to` (renames: the same file system).
fn move_children_into(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        fs::rename(entry.path(), to.join(entry.file_name()))
            .with_context(|| format!("moving {} into the folder", entry.path().display()))?;
    }
    Ok(())
}

/// The versions of a file shown in its directory: the file itself and
/// `daemon`'s conflict copies of it, by name, with their hashes.
fn versions_of(path: &Path, daemon: &dyn Daemon) -> Result<BTreeMap<String, [u8; 32]>> {
    let dir = path.parent().context("no parent")?;
    let name = path
        .file_name()
        .context("no name")?
        .to_string_lossy()
        .into_owned();
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n == name || daemon.is_conflict_copy(&n, &name) {
            if let Ok(h) = hash_file(&e.path()) {
                out.insert(n, h);
            }
        }
    }
    Ok(out)
}

/// Whether two folders hold the same files with the same contents (the
/// first difference otherwise).
fn same_tree(a: &Path, b: &Path) -> Result<std::result::Result<(), String>> {
    let (fa, fb) = (tree_files(a)?, tree_files(b)?);
    if fa != fb {
        let only_a: Vec<_> = fa.iter().filter(|f| !fb.contains(f)).take(3).collect();
        let only_b: Vec<_> = fb.iter().filter(|f| !fa.contains(f)).take(3).collect();
        return Ok(Err(format!(
            "{} vs {} files; only in alice's {only_a:?}, only in bob's {only_b:?}",
            fa.len(),
            fb.len()
        )));
    }
    for f in &fa {
        if hash_file(&a.join(f))? != hash_file(&b.join(f))? {
            return Ok(Err(format!("{} differs", f.display())));
        }
    }
    Ok(Ok(()))
}

/// CPU seconds each daemon used between two [`Pair::cpu_s`] readings.
fn cpu_delta(before: (f64, f64), after: (f64, f64)) -> (f64, f64) {
    (after.0 - before.0, after.1 - before.1)
}

fn median_max(samples: &[f64]) -> (f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.is_empty() {
        f64::NAN
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (median, s.last().copied().unwrap_or(f64::NAN))
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib_text(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}
