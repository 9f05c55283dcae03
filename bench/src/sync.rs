//! `mf-bench sync`: end-to-end sync between two real `magic-folder` daemons
//! (separate processes) on an embedded grid, next to this machine's limits
//! measured in the same run and to Syncthing's figures measured on this
//! machine (the peer to beat).
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
//!   [5]);
//! * **W4** the same file edited on both sides at once: time until both
//!   sides show both versions (the file and one `.conflict-<author>` copy,
//!   the same on both sides, both contents present);
//! * **W5** 100 deletions: time until all are gone at bob;
//! * **idle** a folder of 100,000 files [10,000] with nothing changing: each
//!   daemon's CPU over 60 s [10 s] and RSS (the initial sync of that folder
//!   is reported too);
//! * **rescan** restart of a daemon on that unchanged folder: time from
//!   starting the process until its status says it is up to date (scanned,
//!   polled, nothing queued, in flight or unpublished).
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
//! for W2 also AES-256-GCM in memory. "ratio" is our time over the
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
    content, hash_bytes, hash_file, settle, write_content, write_small_tree, Expected, SMALL,
};
use crate::limits::{copy_files, tree_files};
use crate::phase::{self, Measured};
use crate::report::{print_columns, write_json};
use crate::world::{
    clock_ticks_per_s, settle_daemons, wait_for, wait_until, Participant, RunOptions, World,
};

const USAGE: &str = "usage: mf-bench sync [--only W1,W2,W3,W4,W5,idle,rescan] [--quick] \
[--dir PATH] [--json PATH] [--bin PATH] [--poll-interval 1s] [--pending-delay 200ms] \
[--idle-seconds N]";

/// MiB pushed through the in-memory AES-GCM limit.
const CRYPTO_MIB: u64 = 512;

/// The workloads, in the order they run.
const WORKLOADS: [&str; 7] = ["W1", "W2", "W3", "W4", "W5", "idle", "rescan"];

/// Options of `mf-bench sync`.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    run: RunOptions,
    idle_seconds: Option<u64>,
}

impl SyncOptions {
    /// Parses the arguments after `sync`.
    pub fn parse(args: &[String]) -> Result<SyncOptions> {
        let mut idle_seconds = None;
        let run = RunOptions::parse(args, &WORKLOADS, USAGE, |flag, value| {
            if flag != "--idle-seconds" {
                return Ok(false);
            }
            idle_seconds = Some(value()?.parse().context("--idle-seconds")?);
            Ok(true)
        })?;
        Ok(SyncOptions { run, idle_seconds })
    }
}

/// Workload sizes: the full run, or `--quick`'s smoke run.
struct Sizes {
    /// (files, directories) per W1 run.
    w1: Vec<(usize, usize)>,
    /// W2 file sizes, MiB.
    w2_mib: Vec<u64>,
    /// The steady folder of W3–W5: (files, directories).
    steady: (usize, usize),
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
                w1: vec![(100, 10), (1_000, 100)],
                w2_mib: vec![8, 64],
                steady: (1_000, 10),
                w3_samples: 5,
                w4_rounds: 2,
                w5_deletions: 100,
                big: (10_000, 100),
                idle_seconds: 10,
                rescan_rounds: 2,
            }
        } else {
            Sizes {
                w1: vec![(1_000, 10), (10_000, 100)],
                w2_mib: vec![64, 1024],
                steady: (10_000, 100),
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

/// What a figure is measured in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Seconds,
    CpuPercent,
}

/// One line of the table.
struct Figure {
    workload: &'static str,
    what: String,
    /// Our figure (the median for repeated measurements); `None` if it
    /// timed out or failed.
    value: Option<f64>,
    unit: Unit,
    /// Why there is no value.
    failure: Option<String>,
    /// Shown after the value: max, rate, ….
    detail: String,
    /// Limits from the same run, seconds.
    copy_s: Option<f64>,
    read_s: Option<f64>,
    walk_s: Option<f64>,
    /// Our time over this limit (seconds) is the ratio shown.
    ratio_base_s: Option<f64>,
    /// Peak (or, for idle, current) RSS of alice's and bob's daemons, MiB.
    rss_mib: Option<(f64, f64)>,
    /// Syncthing on this machine (reference §5).
    peer: &'static str,
    /// The target, and whether it was met.
    target: Option<(String, bool)>,
    extra: Value,
}

impl Figure {
    fn new(workload: &'static str, what: String) -> Figure {
        Figure {
            workload,
            what,
            value: None,
            unit: Unit::Seconds,
            failure: None,
            detail: String::new(),
            copy_s: None,
            read_s: None,
            walk_s: None,
            ratio_base_s: None,
            rss_mib: None,
            peer: "",
            target: None,
            extra: json!({}),
        }
    }

    fn failed(workload: &'static str, what: String, why: String) -> Figure {
        Figure {
            failure: Some(why),
            ..Figure::new(workload, what)
        }
    }

    fn ratio(&self) -> Option<f64> {
        match (self.unit, self.value, self.ratio_base_s) {
            (Unit::Seconds, Some(v), Some(b)) if b > 0.0 => Some(v / b),
            _ => None,
        }
    }

    fn shown_value(&self) -> String {
        match (&self.failure, self.value, self.unit) {
            (Some(f), _, _) => f.clone(),
            (None, Some(v), Unit::Seconds) => format!("{v:.2} s"),
            (None, Some(v), Unit::CpuPercent) => format!("{v:.2} % CPU"),
            (None, None, _) => "—".into(),
        }
    }

    fn line(&self) -> Vec<String> {
        let opt = |v: Option<f64>| v.map_or("—".into(), |s| format!("{s:.3}"));
        let ours = if self.detail.is_empty() {
            self.shown_value()
        } else {
            format!("{} ({})", self.shown_value(), self.detail)
        };
        vec![
            self.workload.to_owned(),
            self.what.clone(),
            ours,
            format!(
                "{} / {} / {}",
                opt(self.copy_s),
                opt(self.read_s),
                opt(self.walk_s)
            ),
            self.ratio().map_or("—".into(), |r| format!("{r:.2}")),
            self.rss_mib
                .map_or("—".into(), |(a, b)| format!("{a:.0} / {b:.0}")),
            self.peer.to_owned(),
            match &self.target {
                Some((t, ok)) => format!("{t}: {}", if *ok { "ok" } else { "MISSED" }),
                None => String::new(),
            },
        ]
    }

    fn to_json(&self) -> Value {
        json!({
            "workload": self.workload,
            "what": self.what,
            "value": self.value,
            "unit": match self.unit { Unit::Seconds => "s", Unit::CpuPercent => "% of one core" },
            "failure": self.failure,
            "detail": self.detail,
            "limit_copy_fsync_s": self.copy_s,
            "limit_read_s": self.read_s,
            "limit_walk_s": self.walk_s,
            "ratio": self.ratio(),
            "ratio_base_s": self.ratio_base_s,
            "rss_mib": self.rss_mib.map(|(a, b)| json!({ "alice": a, "bob": b })),
            "syncthing": self.peer,
            "target": self.target.as_ref().map(|(t, _)| t),
            "target_met": self.target.as_ref().map(|(_, ok)| ok),
            "extra": self.extra,
        })
    }
}

/// Runs the selected workloads and prints (and optionally saves) the table.
pub fn run(o: &SyncOptions) -> Result<()> {
    let (work, remove_after) = match &o.run.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("mf-bench-sync-{}", std::process::id())),
            true,
        ),
    };
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = run_in(o, &work);
    if remove_after {
        let _ = fs::remove_dir_all(&work);
    }
    result
}

fn run_in(o: &SyncOptions, work: &Path) -> Result<()> {
    // Run both binaries from copies: a rebuild in target/release during a
    // long run must not swap the daemon (or this program) mid-measurement.
    let bin_dir = work.join("bin");
    fs::create_dir_all(&bin_dir)?;
    phase::run_from_copy_in(&bin_dir)?;
    let daemon = bin_dir.join("magic-folder");
    fs::copy(&o.run.bin, &daemon).with_context(|| format!("copying {}", o.run.bin.display()))?;
    let o = &SyncOptions {
        run: RunOptions {
            bin: daemon,
            ..o.run.clone()
        },
        ..o.clone()
    };
    let sizes = Sizes::new(o);
    let mut figures: Vec<Figure> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let b = Bench {
        o,
        work,
        scratch: Default::default(),
    };

    if o.run.wants("W1") {
        for &(n, dirs) in &sizes.w1 {
            let what = format!("{} × 4 KiB in {dirs} dirs", thousands(n));
            figures.push(b.guard("W1", what, |b| b.w1(n, dirs, n == 10_000)));
        }
    }
    if o.run.wants("W2") {
        let aead = b.step("AES-256-GCM", "limit-aead", json!({ "mib": CRYPTO_MIB }))?;
        for &mib in &sizes.w2_mib {
            let what = format!("1 × {}", mib_text(mib));
            figures.push(b.guard("W2", what, |b| b.w2(mib, aead.mib_per_s())));
        }
    }
    if ["W3", "W4", "W5"].iter().any(|w| o.run.wants(w)) {
        match b.steady(&sizes, &mut figures) {
            Ok(note) => notes.push(note),
            Err(e) => notes.push(format!("steady folder (W3–W5): {e:#}")),
        }
    }
    if o.run.wants("idle") || o.run.wants("rescan") {
        match b.big(&sizes, &mut figures) {
            Ok(()) => {}
            Err(e) => notes.push(format!("idle/rescan folder: {e:#}")),
        }
    }

    println!();
    println!(
        "Sync between two magic-folder daemons on an embedded grid, this machine, same run \
         (poll interval {}, pending delay {}):",
        o.run.poll_interval, o.run.pending_delay
    );
    let header = [
        "",
        "workload",
        "ours",
        "limits: cp -r+fsync / read / walk (s)",
        "ratio",
        "RSS alice/bob MiB",
        "Syncthing 1.19 (tuned)",
        "target",
    ];
    let lines: Vec<Vec<String>> = figures.iter().map(Figure::line).collect();
    print_columns(&header, &lines);
    for n in &notes {
        println!("note: {n}");
    }
    if let Some(path) = &o.run.json {
        let doc = json!({
            "benchmark": "sync",
            "params": {
                "quick": o.run.quick,
                "poll_interval": o.run.poll_interval,
                "pending_delay": o.run.pending_delay,
                "idle_seconds": sizes.idle_seconds,
                "workloads": o.run.only,
                "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            },
            "notes": notes,
            "results": figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
        });
        write_json(path, &doc)?;
    }
    Ok(())
}

/// The shared context of the workloads.
struct Bench<'a> {
    o: &'a SyncOptions,
    work: &'a Path,
    /// Numbers the scratch directories.
    scratch: std::cell::Cell<usize>,
}

/// Two participants on one grid: alice created the folder, bob joined.
struct Pair {
    alice: Participant,
    bob: Participant,
}

impl Pair {
    fn daemons(&self) -> [&Participant; 2] {
        [&self.alice, &self.bob]
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
        let of = |p: &Participant| p.sample().map_or(f64::NAN, |s| s.cpu_ticks as f64 / tick);
        (of(&self.alice), of(&self.bob))
    }

    /// Waits for `arrival` at bob's; also notes when alice was done (her
    /// status showed work, then none: everything uploaded and published),
    /// in seconds after `t0`, to tell the upload from the download side.
    fn wait_arrival(
        &self,
        t0: Instant,
        timeout: Duration,
        arrival: &mut Arrival,
    ) -> Result<(Option<Duration>, Option<f64>)> {
        let (mut busy, mut done) = (false, None);
        let took = wait_for(t0, timeout, || {
            if done.is_none() {
                if let Some(s) = self.alice.status() {
                    let idle = s["queued"] == 0 && s["in_flight"] == 0 && s["unpublished"] == 0;
                    if !idle {
                        busy = true;
                    } else if busy {
                        done = Some(t0.elapsed().as_secs_f64());
                    }
                }
            }
            arrival.check()
        })?;
        Ok((took, done))
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
    /// Runs a workload producing one figure; an error becomes a failed row.
    fn guard(
        &self,
        workload: &'static str,
        what: String,
        f: impl FnOnce(&Self) -> Result<Figure>,
    ) -> Figure {
        eprintln!("{workload}: {what}");
        f(self).unwrap_or_else(|e| {
            eprintln!("  failed: {e:#}");
            Figure::failed(workload, what, format!("failed: {e:#}"))
        })
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

    /// A fresh pair under `work/<name>` with empty folders (or what
    /// `prepare` puts into alice's before the daemons start), both daemons
    /// running.
    fn pair(&self, name: &str, prepare: impl FnOnce(&Path) -> Result<()>) -> Result<Pair> {
        let root = self.work.join(name);
        let world = World::new(&root.join("world"), &self.o.run.bin, &self.o.run.tuning())?;
        let mut alice = world.create("alice")?;
        let mut bob = world.join(&alice, "bob")?;
        prepare(&alice.dir)?;
        settle()?;
        alice.start()?;
        bob.start()?;
        Ok(Pair { alice, bob })
    }

    // ----- W1 -----------------------------------------------------------

    fn w1(&self, n: usize, dirs: usize, targeted: bool) -> Result<Figure> {
        let root = self.work.join(format!("w1-{n}"));
        let payload = root.join("payload");
        let expected = write_small_tree(&payload, n, dirs, 1)?;
        let (copy_s, read_s) = self.tree_limits(&payload)?;
        let pair = self.pair(&format!("w1-{n}/pair"), |_| Ok(()))?;
        pair.settle(Duration::from_secs(60))?;
        let mut arrival = Arrival::new(&pair.bob.dir, &expected);
        let timeout = Duration::from_secs(60) + Duration::from_millis(50) * n as u32;
        eprintln!("  syncing…");
        let cpu0 = pair.cpu_s();
        let t0 = Instant::now();
        move_children_into(&payload, &pair.alice.dir)?;
        let (took, alice_done) = pair.wait_arrival(t0, timeout, &mut arrival)?;
        let cpu = cpu_delta(cpu0, pair.cpu_s());
        let mut f = Figure::new("W1", format!("{} × 4 KiB in {dirs} dirs", thousands(n)));
        f.copy_s = Some(copy_s);
        f.read_s = Some(read_s);
        f.ratio_base_s = Some(copy_s);
        f.rss_mib = pair.peak_rss_mib();
        f.peer = match n {
            1_000 => "2.06 s (487 files/s)",
            10_000 => "13.5–15.2 s (≤ 740 files/s)",
            _ => "",
        };
        match took {
            Some(t) => {
                let s = t.as_secs_f64();
                f.value = Some(s);
                f.detail = format!(
                    "{:.0} files/s; alice done {}; CPU {:.1} + {:.1} s",
                    n as f64 / s,
                    alice_done.map_or("?".into(), |d| format!("{d:.1} s")),
                    cpu.0,
                    cpu.1
                );
                if targeted {
                    f.target = Some(("≤ 2× cp+fsync".into(), s <= 2.0 * copy_s));
                }
            }
            None => f.failure = Some(format!("timeout after {:.0} s", timeout.as_secs_f64())),
        }
        f.extra = json!({
            "files": n,
            "dirs": dirs,
            "missing_at_end": arrival.missing(),
            "cpu_s": { "alice": cpu.0, "bob": cpu.1 },
            "alice_done_s": alice_done,
        });
        pair.finish();
        Ok(f)
    }

    // ----- W2 -----------------------------------------------------------

    fn w2(&self, mib: u64, aead_mib_s: f64) -> Result<Figure> {
        let root = self.work.join(format!("w2-{mib}"));
        let payload = root.join("payload");
        fs::create_dir_all(&payload)?;
        let src = payload.join("big.bin");
        write_content(&src, mib << 20, 7)?;
        let expected: Expected =
            BTreeMap::from([(PathBuf::from("big.bin"), (mib << 20, hash_file(&src)?))]);
        settle()?;
        let copy_dst = self.fresh("limit-copy.bin");
        let copy = self.step(
            "copy + fsync",
            "limit-copy-large",
            json!({ "src": path_text(&src), "dst": path_text(&copy_dst) }),
        )?;
        let read = self.step(
            "raw read",
            "limit-read-tree",
            json!({ "dir": path_text(&payload) }),
        )?;
        let pair = self.pair(&format!("w2-{mib}/pair"), |_| Ok(()))?;
        pair.settle(Duration::from_secs(60))?;
        let mut arrival = Arrival::new(&pair.bob.dir, &expected);
        let timeout = Duration::from_secs(60) + Duration::from_millis(200) * mib as u32;
        eprintln!("  syncing…");
        let cpu0 = pair.cpu_s();
        let t0 = Instant::now();
        move_children_into(&payload, &pair.alice.dir)?;
        let (took, alice_done) = pair.wait_arrival(t0, timeout, &mut arrival)?;
        let cpu = cpu_delta(cpu0, pair.cpu_s());
        let disk = copy.mib_per_s();
        let speed = disk.min(aead_mib_s);
        let limit_s = mib as f64 / speed;
        let mut f = Figure::new("W2", format!("1 × {}", mib_text(mib)));
        f.copy_s = Some(copy.seconds);
        f.read_s = Some(read.seconds);
        f.ratio_base_s = Some(limit_s);
        f.rss_mib = pair.peak_rss_mib();
        f.peer = match mib {
            64 => "1.55 s; RSS 129–162 MiB",
            1024 => "6.4 s (159 MiB/s); RSS 129–162 MiB",
            _ => "",
        };
        let rss_ok = f.rss_mib.is_some_and(|(a, b)| a <= 64.0 && b <= 64.0);
        match took {
            Some(t) => {
                let s = t.as_secs_f64();
                f.value = Some(s);
                f.detail = format!(
                    "{:.0} MiB/s; CPU {:.1} + {:.1} s",
                    mib as f64 / s,
                    cpu.0,
                    cpu.1
                );
                f.target = Some(if mib >= 1024 {
                    (
                        "≤ 1.5× min(disk, AES-GCM); RSS ≤ 64 MiB".into(),
                        s <= 1.5 * limit_s && rss_ok,
                    )
                } else {
                    ("RSS ≤ 64 MiB".into(), rss_ok)
                });
            }
            None => f.failure = Some(format!("timeout after {:.0} s", timeout.as_secs_f64())),
        }
        f.extra = json!({
            "mib": mib,
            "copy_fsync_mib_per_s": disk,
            "aes256gcm_mib_per_s": aead_mib_s,
            "limit_s": limit_s,
            "limit_name": if disk <= aead_mib_s { "copy+fsync" } else { "AES-GCM" },
            "cpu_s": { "alice": cpu.0, "bob": cpu.1 },
            "alice_done_s": alice_done,
        });
        pair.finish();
        Ok(f)
    }

    // ----- W3–W5: a steady folder ------------------------------------------

    /// Builds the steady folder, runs W3–W5 on it (those selected), checks
    /// that both trees are identical at the end; returns a note on the setup.
    fn steady(&self, sizes: &Sizes, figures: &mut Vec<Figure>) -> Result<String> {
        let (n, dirs) = sizes.steady;
        eprintln!("steady folder: {} files in {dirs} dirs", thousands(n));
        let mut expected = Expected::new();
        let pair = self.pair("steady", |dir| {
            expected = write_small_tree(dir, n, dirs, 2)?;
            Ok(())
        })?;
        let files: Vec<PathBuf> = expected.keys().cloned().collect();
        let sync_timeout = Duration::from_secs(60) + Duration::from_millis(50) * n as u32;
        let t0 = Instant::now();
        let mut arrival = Arrival::new(&pair.bob.dir, &expected);
        if wait_for(t0, sync_timeout, || arrival.check())?.is_none() {
            bail!("initial sync of the steady folder timed out");
        }
        pair.settle(Duration::from_secs(120))?;
        let setup = t0.elapsed().as_secs_f64();
        let big = n >= 10_000;
        // Each workload uses its own files: W3 the first ones, W4 the next,
        // W5 the last ones.
        let mut next = 0;
        let mut take = |k: usize| {
            let s: Vec<PathBuf> = files[next..next + k].to_vec();
            next += k;
            s
        };
        if self.o.run.wants("W3") {
            let rels = take(sizes.w3_samples);
            figures.push(self.guard(
                "W3",
                format!("1 KiB edit, folder of {}", thousands(n)),
                |b| b.w3(&pair, &rels, n, big),
            ));
        }
        if self.o.run.wants("W4") {
            let rels = take(sizes.w4_rounds);
            figures.push(self.guard(
                "W4",
                format!("edit on both sides, folder of {}", thousands(n)),
                |b| b.w4(&pair, &rels),
            ));
        }
        if self.o.run.wants("W5") {
            let k = sizes.w5_deletions.min(files.len() - next);
            let rels: Vec<PathBuf> = files[files.len() - k..].to_vec();
            figures.push(self.guard(
                "W5",
                format!("{k} deletions, folder of {}", thousands(n)),
                |b| b.w5(&pair, &rels),
            ));
        }
        pair.settle(Duration::from_secs(120))?;
        let same = same_tree(&pair.alice.dir, &pair.bob.dir)?;
        pair.finish();
        Ok(format!(
            "steady folder of {} files: initial sync + settle {setup:.1} s; trees identical after \
             W3–W5: {}",
            thousands(n),
            match same {
                Ok(()) => "yes".to_owned(),
                Err(diff) => format!("NO ({diff})"),
            }
        ))
    }

    fn w3(&self, pair: &Pair, rels: &[PathBuf], n: usize, targeted: bool) -> Result<Figure> {
        let (copy_s, read_s) = self.file_limits(&pair.alice.dir, &rels[..1])?;
        let mut samples = Vec::new();
        let mut failure = None;
        for (k, rel) in rels.iter().enumerate() {
            pair.settle(Duration::from_secs(60))?;
            // Spread the edits over the poll cycle.
            std::thread::sleep(Duration::from_millis((k as u64 * 377) % 1000));
            let a = pair.alice.dir.join(rel);
            let mut want = fs::read(&a)?;
            let edit = content(1024, 5000 + k as u64);
            want[..1024].copy_from_slice(&edit);
            let b = pair.bob.dir.join(rel);
            let t0 = Instant::now();
            fs::OpenOptions::new()
                .write(true)
                .open(&a)?
                .write_all_at(&edit, 0)?;
            let took = wait_until(t0, Duration::from_secs(30), || {
                Ok(fs::read(&b).is_ok_and(|d| d == want))
            })?;
            match took {
                Some(t) => samples.push(t.as_secs_f64()),
                None => {
                    failure = Some("timeout after 30 s".to_owned());
                    break;
                }
            }
        }
        let mut f = Figure::new("W3", format!("1 KiB edit, folder of {}", thousands(n)));
        f.copy_s = Some(copy_s);
        f.read_s = Some(read_s);
        f.ratio_base_s = Some(copy_s);
        f.rss_mib = pair.peak_rss_mib();
        f.peer = "1.25 s (median)";
        f.failure = failure;
        f.extra = json!({ "samples_s": samples });
        if f.failure.is_none() {
            let (median, max) = median_max(&samples);
            f.value = Some(median);
            f.detail = format!("median of {}, max {max:.2} s", samples.len());
            if targeted {
                f.target = Some(("median ≤ 1 s".into(), median <= 1.0));
            }
        }
        Ok(f)
    }

    fn w4(&self, pair: &Pair, rels: &[PathBuf]) -> Result<Figure> {
        let (copy_s, read_s) = self.file_limits(&pair.alice.dir, &rels[..1])?;
        let mut samples = Vec::new();
        let mut failure = None;
        for (k, rel) in rels.iter().enumerate() {
            pair.settle(Duration::from_secs(60))?;
            let mine = content(SMALL, 7000 + k as u64);
            let theirs = content(SMALL, 8000 + k as u64);
            let want = BTreeSet::from([hash_bytes(&mine), hash_bytes(&theirs)]);
            let (a, b) = (pair.alice.dir.join(rel), pair.bob.dir.join(rel));
            let t0 = Instant::now();
            fs::write(&a, &mine)?;
            fs::write(&b, &theirs)?;
            let took = wait_until(t0, Duration::from_secs(60), || {
                let ours = versions_of(&a)?;
                let other = versions_of(&b)?;
                let hashes: BTreeSet<[u8; 32]> = ours.values().copied().collect();
                Ok(ours.len() == 2 && ours == other && hashes == want)
            })?;
            match took {
                Some(t) => samples.push(t.as_secs_f64()),
                None => {
                    failure = Some(format!(
                        "timeout after 60 s (alice has {:?}, bob {:?})",
                        versions_of(&a)?.keys().collect::<Vec<_>>(),
                        versions_of(&b)?.keys().collect::<Vec<_>>()
                    ));
                    break;
                }
            }
        }
        let mut f = Figure::new("W4", format!("edit on both sides ({} rounds)", rels.len()));
        f.copy_s = Some(copy_s);
        f.read_s = Some(read_s);
        f.ratio_base_s = Some(copy_s);
        f.rss_mib = pair.peak_rss_mib();
        f.peer = "1.5 s, nothing lost";
        f.failure = failure;
        f.extra = json!({ "samples_s": samples });
        if f.failure.is_none() {
            let (median, max) = median_max(&samples);
            f.value = Some(median);
            f.detail = format!("median of {}, max {max:.2} s; nothing lost", samples.len());
        }
        Ok(f)
    }

    fn w5(&self, pair: &Pair, rels: &[PathBuf]) -> Result<Figure> {
        let (copy_s, read_s) = self.file_limits(&pair.alice.dir, rels)?;
        pair.settle(Duration::from_secs(60))?;
        let t0 = Instant::now();
        for rel in rels {
            fs::remove_file(pair.alice.dir.join(rel))?;
        }
        let mut left: Vec<PathBuf> = rels.iter().map(|r| pair.bob.dir.join(r)).collect();
        let took = wait_until(t0, Duration::from_secs(60), || {
            left.retain(|p| p.symlink_metadata().is_ok());
            Ok(left.is_empty())
        })?;
        let mut f = Figure::new("W5", format!("{} deletions", rels.len()));
        f.copy_s = Some(copy_s);
        f.read_s = Some(read_s);
        f.ratio_base_s = Some(copy_s);
        f.rss_mib = pair.peak_rss_mib();
        f.peer = "1.27 s";
        match took {
            Some(t) => {
                let s = t.as_secs_f64();
                f.value = Some(s);
                f.target = Some(("≤ 2 s".into(), s <= 2.0));
            }
            None => {
                f.failure = Some(format!("timeout after 60 s ({} left)", left.len()));
            }
        }
        Ok(f)
    }

    // ----- idle and rescan: a big folder ---------------------------------

    fn big(&self, sizes: &Sizes, figures: &mut Vec<Figure>) -> Result<()> {
        let (n, dirs) = sizes.big;
        let targeted = n >= 100_000;
        eprintln!("big folder: {} files in {dirs} dirs", thousands(n));
        let mut expected = Expected::new();
        let mut pair = self.pair("big", |dir| {
            expected = write_small_tree(dir, n, dirs, 3)?;
            Ok(())
        })?;
        // The daemons started when `pair` returned; close enough for a
        // figure measured in minutes.
        let t0 = Instant::now();
        let sync_timeout = Duration::from_secs(120) + Duration::from_millis(20) * n as u32;
        let mut arrival = Arrival::new(&pair.bob.dir, &expected);
        let took = wait_for(t0, sync_timeout, || arrival.check())?;
        let mut init = Figure::new("init", format!("initial sync, {} × 4 KiB", thousands(n)));
        init.rss_mib = pair.peak_rss_mib();
        init.peer = "206 s (485 files/s) (default)";
        match took {
            Some(t) => {
                let s = t.as_secs_f64();
                init.value = Some(s);
                init.detail = format!("{:.0} files/s", n as f64 / s);
            }
            None => {
                init.failure = Some(format!(
                    "timeout after {:.0} s ({} missing)",
                    sync_timeout.as_secs_f64(),
                    arrival.missing()
                ))
            }
        }
        let synced = init.failure.is_none();
        figures.push(init);
        if !synced {
            pair.finish();
            bail!("initial sync of the big folder timed out");
        }
        pair.settle(Duration::from_secs(300))?;
        drop(expected);
        let walk = self.step(
            "walk",
            "limit-walk",
            json!({ "dir": path_text(&pair.alice.dir) }),
        )?;

        if self.o.run.wants("idle") {
            let what = format!("idle, folder of {}", thousands(n));
            figures.push(self.guard("idle", what, |b| {
                b.idle(&pair, n, sizes.idle_seconds, walk.seconds, targeted)
            }));
        }
        if self.o.run.wants("rescan") {
            let what = format!("restart → up to date, {}", thousands(n));
            figures.push(self.guard("rescan", what, |b| {
                b.rescan(&mut pair, n, sizes.rescan_rounds, walk.seconds, targeted)
            }));
        }
        pair.finish();
        Ok(())
    }

    fn idle(
        &self,
        pair: &Pair,
        n: usize,
        seconds: u64,
        walk_s: f64,
        targeted: bool,
    ) -> Result<Figure> {
        pair.settle(Duration::from_secs(120))?;
        eprintln!("  measuring for {seconds} s…");
        let sample = |p: &Participant| p.sample().with_context(|| format!("{} is gone", p.name));
        let (a0, b0) = (sample(&pair.alice)?, sample(&pair.bob)?);
        let t0 = Instant::now();
        let mut max_rss = (a0.rss_kib, b0.rss_kib);
        while t0.elapsed() < Duration::from_secs(seconds) {
            std::thread::sleep(Duration::from_millis(500));
            let (a, b) = (sample(&pair.alice)?, sample(&pair.bob)?);
            max_rss = (max_rss.0.max(a.rss_kib), max_rss.1.max(b.rss_kib));
        }
        let (a1, b1) = (sample(&pair.alice)?, sample(&pair.bob)?);
        let elapsed = t0.elapsed().as_secs_f64();
        let tick = clock_ticks_per_s() as f64;
        let cpu = |t0: u64, t1: u64| (t1 - t0) as f64 / tick / elapsed * 100.0;
        let (ca, cb) = (
            cpu(a0.cpu_ticks, a1.cpu_ticks),
            cpu(b0.cpu_ticks, b1.cpu_ticks),
        );
        let mib = |k: u64| k as f64 / 1024.0;
        let mut f = Figure::new(
            "idle",
            format!("idle {seconds} s, folder of {}", thousands(n)),
        );
        f.unit = Unit::CpuPercent;
        f.value = Some(ca.max(cb));
        f.detail = format!("alice {ca:.2} %, bob {cb:.2} %");
        f.walk_s = Some(walk_s);
        f.rss_mib = Some((mib(max_rss.0), mib(max_rss.1)));
        f.peer = "0.08 %, RSS 117–133 MiB (default)";
        if targeted {
            let ok = ca.max(cb) <= 1.0 && mib(max_rss.0.max(max_rss.1)) <= 100.0;
            f.target = Some(("≤ 1 % CPU, RSS ≤ 100 MiB".into(), ok));
        }
        f.extra = json!({
            "cpu_percent": { "alice": ca, "bob": cb },
            "rss_mib_max": { "alice": mib(max_rss.0), "bob": mib(max_rss.1) },
            "peak_rss_mib_since_start": { "alice": mib(a1.hwm_kib), "bob": mib(b1.hwm_kib) },
            "seconds": elapsed,
        });
        Ok(f)
    }

    fn rescan(
        &self,
        pair: &mut Pair,
        n: usize,
        rounds: usize,
        walk_s: f64,
        targeted: bool,
    ) -> Result<Figure> {
        let mut samples = Vec::new();
        let mut failure = None;
        for _ in 0..rounds {
            pair.settle(Duration::from_secs(120))?;
            pair.alice.stop()?;
            settle()?;
            let t0 = Instant::now();
            pair.alice.start()?;
            let took = wait_until(t0, Duration::from_secs(120), || Ok(pair.alice.up_to_date()))?;
            match took {
                Some(t) => samples.push(t.as_secs_f64()),
                None => {
                    failure = Some("timeout after 120 s".to_owned());
                    break;
                }
            }
        }
        let mut f = Figure::new("rescan", format!("restart → up to date, {}", thousands(n)));
        f.walk_s = Some(walk_s);
        f.ratio_base_s = Some(walk_s);
        f.peer = "3.8 s (default)";
        f.failure = failure;
        f.extra = json!({ "samples_s": samples, "daemon": "alice" });
        if f.failure.is_none() {
            let (median, max) = median_max(&samples);
            f.value = Some(median);
            f.detail = format!("median of {}, max {max:.2} s", samples.len());
            if targeted {
                f.target = Some(("≤ 1 s".into(), median <= 1.0));
            }
        }
        Ok(f)
    }
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

/// Watches files arrive in a folder: cheap checks (directory listings, in
/// path order, stopping at the first directory still incomplete), then a
/// verification by hashing once everything is there.
struct Arrival {
    root: PathBuf,
    /// Directory → file name → (length, hash), for files not yet seen.
    pending: BTreeMap<PathBuf, BTreeMap<String, (u64, [u8; 32])>>,
    /// Everything, for the verification.
    all: Expected,
    /// When the last pending file was seen.
    complete_at: Option<Instant>,
}

impl Arrival {
    fn new(root: &Path, expected: &Expected) -> Arrival {
        let mut a = Arrival {
            root: root.to_path_buf(),
            pending: BTreeMap::new(),
            all: expected.clone(),
            complete_at: None,
        };
        for (rel, v) in expected {
            a.expect(rel, *v);
        }
        a
    }

    fn expect(&mut self, rel: &Path, v: (u64, [u8; 32])) {
        let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.pending.entry(dir).or_default().insert(name, v);
    }

    fn missing(&self) -> usize {
        self.pending.values().map(BTreeMap::len).sum()
    }

    /// `Some(when everything was there)` once every file is present with
    /// the expected contents.
    fn check(&mut self) -> Result<Option<Instant>> {
        while let Some(mut entry) = self.pending.first_entry() {
            let dir = self.root.join(entry.key());
            let Ok(rd) = fs::read_dir(&dir) else {
                return Ok(None);
            };
            let names = entry.get_mut();
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some((len, _)) = names.get(&name) {
                    if e.metadata().is_ok_and(|m| m.len() == *len) {
                        names.remove(&name);
                    }
                }
            }
            if !names.is_empty() {
                return Ok(None);
            }
            entry.remove();
        }
        let at = *self.complete_at.get_or_insert_with(Instant::now);
        // Everything is there: confirm the contents.
        let mut wrong = Vec::new();
        for (rel, (len, hash)) in &self.all {
            let ok = hash_file(&self.root.join(rel)).is_ok_and(|h| h == *hash);
            if !ok {
                wrong.push((rel.clone(), (*len, *hash)));
            }
        }
        if wrong.is_empty() {
            return Ok(Some(at));
        }
        self.complete_at = None;
        for (rel, v) in wrong {
            self.expect(&rel, v);
        }
        Ok(None)
    }
}

/// The versions of a file shown in its directory: the file itself and its
/// `.conflict-*` copies, by name, with their hashes.
fn versions_of(path: &Path) -> Result<BTreeMap<String, [u8; 32]>> {
    let dir = path.parent().context("no parent")?;
    let name = path
        .file_name()
        .context("no name")?
        .to_string_lossy()
        .into_owned();
    let copy_prefix = format!("{name}.conflict-");
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n == name || n.starts_with(&copy_prefix) {
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
