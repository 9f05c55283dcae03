//! Measured phases run in child processes.
//!
//! Peak RSS (`VmHWM`) is a per-process high-water mark: measured in one
//! process, a 1 GiB download would inherit whatever an earlier phase peaked
//! at. So the parent re-executes its own binary once per phase
//! (`mf-bench __phase <name> <json args>`); the child runs the phase, then
//! prints one JSON line with its timing and its own `VmHWM`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// First argument that marks a child process.
pub const CHILD_ARG: &str = "__phase";

/// What a phase measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Wall-clock seconds of the measured part.
    pub seconds: f64,
    /// Bytes processed (payload, not counting overheads).
    pub bytes: u64,
    /// Files processed.
    pub files: u64,
    /// Peak resident set size of the child process, in KiB.
    pub peak_rss_kib: u64,
    /// Anything else the phase wants to report.
    pub extra: Value,
}

impl Measured {
    /// Payload throughput in MiB/s.
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.seconds
    }

    /// Files per second.
    pub fn files_per_s(&self) -> f64 {
        self.files as f64 / self.seconds
    }
}

/// The binary phases run from, if not this process's own (see
/// [`run_from_copy_in`]).
static EXE: OnceLock<PathBuf> = OnceLock::new();

/// Copies this binary into `dir` and runs every later phase from the copy,
/// so that a rebuild of `target/release` during a long run (other people
/// build on the same machine) cannot pull the binary from under it.
pub fn run_from_copy_in(dir: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("locating own binary")?;
    let copy = dir.join("mf-bench");
    std::fs::copy(&exe, &copy).with_context(|| format!("copying {}", exe.display()))?;
    let _ = EXE.set(copy);
    Ok(())
}

/// Runs phase `name` with `args` in a child process and returns its figures.
pub fn run(name: &str, args: Value) -> Result<Measured> {
    let exe = match EXE.get() {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating own binary")?,
    };
    let out = Command::new(exe)
        .arg(CHILD_ARG)
        .arg(name)
        .arg(args.to_string())
        .output()
        .with_context(|| format!("running phase {name}"))?;
    if !out.status.success() {
        bail!(
            "phase {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(line.trim())
        .with_context(|| format!("phase {name} printed {line:?}"))?;
    let get = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("phase {name}: no {k}"))
    };
    Ok(Measured {
        seconds: get("seconds")?,
        bytes: get("bytes")? as u64,
        files: get("files")? as u64,
        peak_rss_kib: get("peak_rss_kib")? as u64,
        extra: v["extra"].clone(),
    })
}

/// A phase body: measures its own timed section (setup excluded).
pub type PhaseFn = fn(&Value) -> Result<Timed>;

/// What a phase body reports.
pub struct Timed {
    /// Seconds of the measured section.
    pub seconds: f64,
    /// Payload bytes processed.
    pub bytes: u64,
    /// Files processed.
    pub files: u64,
    /// Anything else worth recording.
    pub extra: Value,
}

/// Entry point of a child process: `<name> <json args>`.
pub fn child_main(args: &[String]) -> Result<()> {
    let [name, json_args] = args else {
        bail!("usage: {CHILD_ARG} <phase> <json args>")
    };
    let params: Value = serde_json::from_str(json_args).context("phase arguments")?;
    let body = super::grid::phase(name)
        .or_else(|| super::limits::phase(name))
        .with_context(|| format!("no phase named {name}"))?;
    let t = body(&params).with_context(|| format!("phase {name}"))?;
    let peak = peak_rss_kib()?;
    println!(
        "{}",
        json!({ "seconds": t.seconds, "bytes": t.bytes, "files": t.files, "peak_rss_kib": peak, "extra": t.extra })
    );
    Ok(())
}

/// Times `f`.
pub fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let started = Instant::now();
    let v = f()?;
    Ok((started.elapsed().as_secs_f64(), v))
}

/// This process's peak resident set size (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM line")?;
    line.split_whitespace()
        .nth(1)
        .context("empty VmHWM")?
        .parse()
        .context("VmHWM value")
}
