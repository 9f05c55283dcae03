//! `mf-bench upkeep`: the snapshot DAG as a user feature, timed.
//!
//! * **history** — `magic-folder history` of a file with 1,000 versions
//!   (`--quick`: 100), run by a participant that joined after them and never
//!   synced (so every version is read from the grid and verified, none from
//!   its state database). The versions are made through the daemon's own
//!   executor (upload of a real file, a parent each), in-process, then
//!   published: as the daemon makes them, without a thousand pending delays.
//! * **verify** — `magic-folder verify` of a folder of 100,000 files of
//!   4 KiB (`--quick`: 5,000) that a real daemon synced: every snapshot and
//!   metadata object read and verified, every content read back whole, every
//!   file on disk hashed and compared.
//!
//! Limit, in the same run: a raw read (1 thread) of every object of the grid
//! — for history, a superset of the objects it reads (the history's
//! snapshot and metadata objects are two of every three) — and for verify
//! also of every file of the folder. Time and peak RSS are the command's
//! own (`wait4`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mf_core::engine::{Action, EntryShape, Event, OpId, PublishEntry, UploadOutcome};
use mf_core::relpath::RelPath;
use mf_core::snapshot::entry_name;
use mf_daemon::commands::{AnyGrid, OpenMode};
use mf_daemon::config::ConfigDir;
use serde_json::{json, Value};

use crate::limits::phase as limit_phase;
use crate::report::{print_columns, write_json};
use crate::world::{settle_daemons, Daemon, RunOptions, World, FOLDER};

/// The workloads, for `--only`.
pub const WORKLOADS: [&str; 2] = ["history", "verify"];

const USAGE: &str = "usage: mf-bench upkeep [--only history,verify] [--quick] [--dir PATH] \
[--json PATH] [--bin PATH]";

/// One measured command.
struct Measured {
    seconds: f64,
    peak_rss_mib: f64,
    stdout: String,
}

/// Runs the CLI as `config`'s participant and measures it.
fn measure(bin: &Path, config: &Path, args: &[&str]) -> Result<Measured> {
    let started = Instant::now();
    let child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    let pid = child.id() as libc::pid_t;
    // Read the output before reaping, so a full pipe never blocks it.
    let out = {
        use std::io::Read;
        let mut child = child;
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .context("stdout")?
            .read_to_string(&mut stdout)?;
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .context("stderr")?
            .read_to_string(&mut stderr)?;
        (stdout, stderr, child)
    };
    let (status, max_rss_kib) = wait_with_usage(pid)?;
    let seconds = started.elapsed().as_secs_f64();
    std::mem::forget(out.2); // reaped above
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("`magic-folder {}` failed: {}", args.join(" "), out.1.trim());
    }
    Ok(Measured {
        seconds,
        peak_rss_mib: max_rss_kib as f64 / 1024.0,
        stdout: out.0,
    })
}

/// Reaps child `pid`: its wait status and peak RSS in KiB. (std's `Child`
/// does not give the child's resource usage.)
#[allow(unsafe_code)]
fn wait_with_usage(pid: libc::pid_t) -> Result<(i32, i64)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; both pointers are valid.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if reaped != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    Ok((status, usage.ru_maxrss))
}

/// A raw read of every file below each of `dirs`: (seconds, files, bytes).
fn raw_read(dirs: &[PathBuf]) -> Result<(f64, u64, u64)> {
    let read = limit_phase("limit-read-tree").context("limit-read-tree")?;
    let (mut s, mut f, mut b) = (0.0, 0, 0);
    for d in dirs {
        let t = read(&json!({ "dir": d.to_str().context("path")? }))?;
        s += t.seconds;
        f += t.files;
        b += t.bytes;
    }
    Ok((s, f, b))
}

/// `mf-bench upkeep`.
pub fn run(args: &[String]) -> Result<()> {
    let o = RunOptions::parse(args, &WORKLOADS, USAGE, |_, _| Ok(false))?;
    let (versions, files) = if o.quick {
        (100, 5_000)
    } else {
        (1_000, 100_000)
    };
    let temp;
    let root = match &o.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempdir()?;
            temp.clone()
        }
    };
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut doc = Vec::new();
    if o.wants("history") {
        let (line, j) = history(&o, &root.join("history"), versions)?;
        lines.push(line);
        doc.push(j);
    }
    if o.wants("verify") {
        let (line, j) = verify(&o, &root.join("verify"), files)?;
        lines.push(line);
        doc.push(j);
    }
    print_columns(
        &[
            "workload",
            "ours",
            "peak RSS",
            "limit: raw read (same run)",
            "ratio",
        ],
        &lines,
    );
    if let Some(path) = &o.json {
        write_json(path, &json!({ "upkeep": doc }))?;
    }
    if o.dir.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("mf-bench-upkeep-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn row(name: String, m: &Measured, limit: (f64, u64, u64)) -> (Vec<String>, Value) {
    let line = vec![
        name.clone(),
        format!("{:.2} s", m.seconds),
        format!("{:.0} MiB", m.peak_rss_mib),
        format!(
            "{:.3} s ({} files, {:.1} MiB)",
            limit.0,
            limit.1,
            limit.2 as f64 / 1048576.0
        ),
        format!("{:.1}", m.seconds / limit.0.max(1e-9)),
    ];
    let j = json!({
        "name": name,
        "seconds": m.seconds,
        "peak_rss_mib": m.peak_rss_mib,
        "limit_seconds": limit.0,
        "limit_files": limit.1,
        "limit_bytes": limit.2,
        "ratio": m.seconds / limit.0.max(1e-9),
    });
    (line, j)
}

fn history(o: &RunOptions, root: &Path, versions: u64) -> Result<(Vec<String>, Value)> {
    // The pending delay is the executor's quiet time before a read: short,
    // so that making the versions does not take a thousand seconds.
    let world = World::new(root, &o.bin, &["--pending-delay".into(), "10ms".into()])?;
    let alice = world.create("alice")?;
    let cfg = ConfigDir::at(alice.config_dir()).load_folder(FOLDER)?;
    let rt = tokio::runtime::Runtime::new()?;
    let made = Instant::now();
    rt.block_on(async {
        let grid = AnyGrid::open(&cfg.grid, &cfg.convergence_secret, OpenMode::MustExist)?;
        let exec = mf_daemon::folder::executor(&cfg, Arc::new(grid)).map_err(anyhow::Error::msg)?;
        let path = RelPath::new("log.txt").map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut parents = Vec::new();
        for i in 0..versions {
            std::fs::write(cfg.local_path.join("log.txt"), format!("version {i}\n"))?;
            let local = mf_daemon::fsops::stat(&cfg.local_path, &path)?;
            let action = Action::Upload {
                op: OpId(i),
                path: path.clone(),
                local,
                parents: parents.clone(),
                generation: i + 1,
            };
            match exec.execute(action).await {
                Event::Uploaded {
                    result: UploadOutcome::Done(info),
                    ..
                } => parents = vec![info.cap],
                other => bail!("version {i}: {other:?}"),
            }
        }
        let entries = vec![PublishEntry {
            name: entry_name(&path),
            snapshot: parents[0].clone(),
            shape: EntryShape::File,
        }];
        match exec
            .execute(Action::Publish {
                op: OpId(versions),
                entries,
            })
            .await
        {
            Event::Published { result: Ok(()), .. } => Ok(()),
            other => bail!("publishing: {other:?}"),
        }
    })?;
    eprintln!(
        "history: {versions} versions made in {:.1?}",
        made.elapsed()
    );
    let carol = world.join(&alice, "carol")?;
    let file = carol.dir.join("log.txt");
    let m = measure(
        &o.bin,
        carol.config_dir(),
        &["history", file.to_str().context("path")?, "--json"],
    )?;
    let listed: Value = serde_json::from_str(&m.stdout)?;
    let n = listed["versions"].as_array().map_or(0, Vec::len) as u64;
    if n != versions {
        bail!("history listed {n} versions, expected {versions}");
    }
    let limit = raw_read(&[root.join("grid").join("objects")])?;
    Ok(row(
        format!("history, {versions} versions (from the grid)"),
        &m,
        limit,
    ))
}

fn verify(o: &RunOptions, root: &Path, files: usize) -> Result<(Vec<String>, Value)> {
    let world = World::new(root, &o.bin, &o.tuning())?;
    let mut alice = world.create("alice")?;
    crate::data::write_small_tree(&alice.dir, files, files.div_ceil(100), 1)?;
    let synced = Instant::now();
    alice.start()?;
    settle_daemons(&[&alice], Duration::from_secs(1800))?;
    alice.stop()?;
    eprintln!("verify: {files} files uploaded in {:.1?}", synced.elapsed());
    let m = measure(&o.bin, alice.config_dir(), &["verify", "--json"])?;
    let report: Value = serde_json::from_str(&m.stdout)?;
    let r = &report[0];
    if r["compared"].as_u64() != Some(files as u64) || r["problems"] != json!([]) {
        bail!("verify did not check every file: {r}");
    }
    let limit = raw_read(&[root.join("grid").join("objects"), alice.dir.clone()])?;
    Ok(row(format!("verify, {files} files of 4 KiB"), &m, limit))
}
