//! Participants as real processes: the `magic-folder` binary, one config
//! directory and one folder each, all on one embedded grid in a temporary
//! directory.
//!
//! Setup goes through the CLI exactly as a user would (`create`, `invite`,
//! `join`); each daemon is a child process (`magic-folder run`) logging to
//! its own file, stopped with SIGTERM and, if it does not stop in time,
//! killed. A [`Participant`] kills its daemon when dropped, so no daemon
//! outlives the benchmark, even on an error.
//!
//! Every wait here is bounded: on a deadline it returns an error (or
//! `None`), never hangs.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The folder name every participant uses.
pub const FOLDER: &str = "bench";

/// The tuned `--poll-interval`: what `tahoe` and `upkeep` run with, and
/// `sync`'s extra "tuned" column.
pub const TUNED_POLL_INTERVAL: &str = "1s";
/// The tuned `--pending-delay` (see [`TUNED_POLL_INTERVAL`]).
pub const TUNED_PENDING_DELAY: &str = "200ms";

/// Options of the benchmarks that run daemons (`sync`, `tahoe`).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The workloads to run.
    pub only: BTreeSet<String>,
    /// Small sizes, for a smoke run.
    pub quick: bool,
    /// Working directory (kept afterwards), else a temporary one.
    pub dir: Option<PathBuf>,
    /// Where to write the figures as JSON.
    pub json: Option<PathBuf>,
    /// The `magic-folder` binary to run.
    pub bin: PathBuf,
    /// `--poll-interval`, if given (else [`TUNED_POLL_INTERVAL`]).
    poll_interval: Option<String>,
    /// `--pending-delay`, if given (else [`TUNED_PENDING_DELAY`]).
    pending_delay: Option<String>,
}

impl RunOptions {
    /// Parses `args`: the flags above here, any other through
    /// `extra(flag, value)`, which answers whether it took the flag.
    /// `--only` accepts `workloads`; a mistake is reported with `usage`.
    pub fn parse(
        args: &[String],
        workloads: &[&str],
        usage: &str,
        mut extra: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<bool>,
    ) -> Result<RunOptions> {
        let exe = std::env::current_exe().context("locating own binary")?;
        let mut o = RunOptions {
            only: workloads.iter().map(|w| w.to_string()).collect(),
            quick: false,
            dir: None,
            json: None,
            bin: exe.with_file_name("magic-folder"),
            poll_interval: None,
            pending_delay: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value\n{usage}"))
            };
            match flag.as_str() {
                "--only" => {
                    o.only = BTreeSet::new();
                    for w in value()?.split(',') {
                        match workloads.iter().find(|k| k.eq_ignore_ascii_case(w.trim())) {
                            Some(k) => o.only.insert(k.to_string()),
                            None => bail!("unknown workload {w:?} (known: {workloads:?})"),
                        };
                    }
                }
                "--quick" => o.quick = true,
                "--dir" => o.dir = Some(value()?.into()),
                "--json" => o.json = Some(value()?.into()),
                "--bin" => o.bin = value()?.into(),
                "--poll-interval" => o.poll_interval = Some(value()?),
                "--pending-delay" => o.pending_delay = Some(value()?),
                _ => {
                    if !extra(flag, &mut value)? {
                        bail!("unknown option {flag}\n{usage}");
                    }
                }
            }
        }
        if !o.bin.is_file() {
            bail!(
                "{} not found: build it first (cargo build --release -p magic-folder -p mf-bench) \
                 or pass --bin",
                o.bin.display()
            );
        }
        Ok(o)
    }

    /// Whether workload `w` was asked for.
    pub fn wants(&self, w: &str) -> bool {
        self.only.contains(w)
    }

    /// The tuned daemons' `--poll-interval`: as given, else
    /// [`TUNED_POLL_INTERVAL`].
    pub fn poll_interval(&self) -> &str {
        self.poll_interval.as_deref().unwrap_or(TUNED_POLL_INTERVAL)
    }

    /// The tuned daemons' `--pending-delay`: as given, else
    /// [`TUNED_PENDING_DELAY`].
    pub fn pending_delay(&self) -> &str {
        self.pending_delay.as_deref().unwrap_or(TUNED_PENDING_DELAY)
    }

    /// Whether `--poll-interval` or `--pending-delay` was given.
    pub fn tuning_given(&self) -> bool {
        self.poll_interval.is_some() || self.pending_delay.is_some()
    }

    /// The tuned daemons' flags, for `create` and `join`.
    pub fn tuning(&self) -> Vec<String> {
        vec![
            "--poll-interval".into(),
            self.poll_interval().to_owned(),
            "--pending-delay".into(),
            self.pending_delay().to_owned(),
        ]
    }
}

/// How long a daemon gets to start (answer on its API) or to stop.
const START_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// One side of a sync benchmark: a sync program's process and the folder it
/// keeps in sync. Our daemon ([`Participant`]) and Syncthing
/// (`crate::syncthing::Device`) both are one, so that the same workload
/// code drives and checks both.
pub trait Daemon {
    /// Who this is (alice, bob).
    fn name(&self) -> &str;
    /// The synchronised folder.
    fn dir(&self) -> &Path;
    /// Where the program logs.
    fn log(&self) -> &Path;
    /// The running program's process id.
    fn pid(&self) -> Option<u32>;
    /// Starts the program and waits until its API answers.
    fn start(&mut self) -> Result<()>;
    /// Stops the program (bounded: killed if it does not stop in time).
    fn stop(&mut self) -> Result<()>;
    /// Scanned since it started, knows the other side's state, and has
    /// nothing left to do.
    fn up_to_date(&self) -> bool;
    /// Whether it is still taking in local changes (uploading, publishing,
    /// scanning); `None` if it cannot tell now.
    fn busy_with_local_changes(&self) -> Option<bool>;
    /// Whether `name` (in the same directory) is one of this program's
    /// conflict copies of the file named `of`.
    fn is_conflict_copy(&self, name: &str, of: &str) -> bool;

    /// The program's CPU time and memory now.
    fn sample(&self) -> Option<ProcSample> {
        ProcSample::read(self.pid()?)
    }
}

/// Opens a daemon's log for appending, with a line marking this start.
/// Runs `f` in the working directory: `dir` if given (kept afterwards),
/// else a temporary `mf-bench-NAME-PID` removed afterwards, even on errors.
pub fn in_work_dir(
    dir: Option<&Path>,
    name: &str,
    f: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let (work, remove_after) = match dir {
        Some(d) => (d.to_path_buf(), false),
        None => (
            std::env::temp_dir().join(format!("mf-bench-{name}-{}", std::process::id())),
            true,
        ),
    };
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = f(&work);
    if remove_after {
        let _ = fs::remove_dir_all(&work);
    }
    result
}

pub fn open_log(path: &Path) -> Result<File> {
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(log, "===== start =====")?;
    Ok(log)
}

/// Starts `cmd` and waits (bounded) until `ready()` holds; an error if the
/// process exits first or does not get ready in time (it is then killed).
pub fn spawn_ready(
    cmd: &mut Command,
    name: &str,
    log: &Path,
    ready: impl Fn() -> bool,
) -> Result<Child> {
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{name}: starting {:?}", cmd.get_program()))?;
    let deadline = Instant::now() + START_STOP_TIMEOUT;
    loop {
        if ready() {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "{name}: daemon exited at start ({status}); log: {}",
                log.display()
            );
        }
        if Instant::now() > deadline {
            signal(&child, "-KILL");
            let _ = child.wait();
            bail!(
                "{name}: daemon did not start within {START_STOP_TIMEOUT:?}; log: {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops `child` with SIGTERM and waits (bounded) for it to exit; kills it
/// if it does not.
pub fn terminate(mut child: Child, name: &str) -> Result<ExitStatus> {
    signal(&child, "-TERM");
    let deadline = Instant::now() + START_STOP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            signal(&child, "-KILL");
            let _ = child.wait();
            bail!("{name}: daemon did not stop on SIGTERM; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `sig` to `child` and, if it leads one (a daemon under
/// `MF_BENCH_WRAP`), to its process group: a wrapper such as heaptrack
/// does not pass signals on.
fn signal(child: &Child, sig: &str) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").arg(sig).arg(&pid).status();
    let _ = Command::new("kill")
        .arg(sig)
        .arg("--")
        .arg(format!("-{pid}"))
        .stderr(Stdio::null())
        .status();
}

/// One embedded grid and the participants sharing it.
pub struct World {
    /// Everything lives here (removed by the caller).
    pub root: PathBuf,
    grid: PathBuf,
    bin: PathBuf,
    tuning: Vec<String>,
}

impl World {
    /// A world under `root`, running `bin` with `tuning` (extra arguments of
    /// `create` and `join`, e.g. `--poll-interval 1s`).
    pub fn new(root: &Path, bin: &Path, tuning: &[String]) -> Result<World> {
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        Ok(World {
            root: root.to_path_buf(),
            grid: root.join("grid"),
            bin: bin.to_path_buf(),
            tuning: tuning.to_vec(),
        })
    }

    fn participant(&self, name: &str) -> Result<Participant> {
        Participant::new(&self.root, name, &self.bin)
    }

    /// A participant who creates [`FOLDER`] on this world's grid.
    pub fn create(&self, name: &str) -> Result<Participant> {
        let p = self.participant(name)?;
        let (dir, grid) = (path_str(&p.dir)?, path_str(&self.grid)?);
        let mut args = vec!["create", FOLDER, dir, "--author", name, "--grid", grid];
        args.extend(self.tuning.iter().map(String::as_str));
        p.cli(&args)?;
        Ok(p)
    }

    /// A participant invited by `admin` who joins [`FOLDER`].
    pub fn join(&self, admin: &Participant, name: &str) -> Result<Participant> {
        let code = admin.cli(&["invite", FOLDER, name])?;
        let p = self.participant(name)?;
        let dir = path_str(&p.dir)?;
        let mut args = vec!["join", code.trim(), dir, "--author", name];
        args.extend(self.tuning.iter().map(String::as_str));
        p.cli(&args)?;
        admin.cli(&["admit", FOLDER])?;
        Ok(p)
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// Waits until every one of `daemons` has been up to date for a whole
/// second (a timeout is an error naming their logs).
pub fn settle_daemons<D: Daemon + ?Sized>(daemons: &[&D], timeout: Duration) -> Result<()> {
    let mut since: Option<Instant> = None;
    let waited = wait_until(Instant::now(), timeout, || {
        if daemons.iter().all(|p| p.up_to_date()) {
            let t = *since.get_or_insert_with(Instant::now);
            Ok(t.elapsed() >= Duration::from_secs(1))
        } else {
            since = None;
            Ok(false)
        }
    })?;
    if waited.is_none() {
        let logs: Vec<String> = daemons
            .iter()
            .map(|p| p.log().display().to_string())
            .collect();
        bail!(
            "the daemons did not settle within {timeout:?} (logs: {})",
            logs.join(", ")
        );
    }
    Ok(())
}

/// One participant: a config directory, a folder, maybe a running daemon.
pub struct Participant {
    /// Participant name (also the author name).
    pub name: String,
    bin: PathBuf,
    config: PathBuf,
    /// The synchronised folder.
    pub dir: PathBuf,
    log: PathBuf,
    /// The daemon's `RUST_LOG`.
    log_filter: String,
    daemon: Option<Child>,
}

impl Participant {
    /// A participant with its config and folder under `root/name`, running
    /// `bin`; its daemon logs at `$MF_BENCH_LOG`, else `info`.
    pub fn new(root: &Path, name: &str, bin: &Path) -> Result<Participant> {
        let home = root.join(name);
        fs::create_dir_all(&home)?;
        Ok(Participant {
            name: name.to_owned(),
            bin: bin.to_path_buf(),
            config: home.join("config"),
            dir: home.join("folder"),
            log: home.join("daemon.log"),
            log_filter: std::env::var("MF_BENCH_LOG").unwrap_or_else(|_| "info".into()),
            daemon: None,
        })
    }

    /// The same, its daemon logging at `filter`.
    pub fn with_log(mut self, filter: &str) -> Participant {
        self.log_filter = filter.to_owned();
        self
    }

    /// Runs the CLI with this participant's config; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("MAGIC_FOLDER_CONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "{}: `magic-folder {}` failed ({}): {}",
                self.name,
                args.first().unwrap_or(&""),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The running daemon's live status of [`FOLDER`], from its API.
    pub fn status(&self) -> Option<Value> {
        let url = fs::read_to_string(self.config.join("api.url")).ok()?;
        let token = fs::read_to_string(self.config.join("api_token")).ok()?;
        let body = http_get(
            url.trim(),
            &format!("/v1/magic-folder/{FOLDER}/status"),
            &format!("Authorization: Bearer {}", token.trim()),
        )?;
        serde_json::from_str(&body).ok()
    }

    /// The participant's config directory.
    pub fn config_dir(&self) -> &Path {
        &self.config
    }
}

impl Daemon for Participant {
    fn name(&self) -> &str {
        &self.name
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn log(&self) -> &Path {
        &self.log
    }

    /// Starts `magic-folder run` and waits until its API is up.
    fn start(&mut self) -> Result<()> {
        if self.daemon.is_some() {
            bail!("{} is already running", self.name);
        }
        let _ = fs::remove_file(self.config.join("api.url"));
        let log = open_log(&self.log)?;
        // For profiling: MF_BENCH_WRAP="perf record -g -o /tmp/{name}.data --"
        // runs each daemon under that command ({name}: the participant).
        // The CPU and memory figures are then the wrapper's.
        let wrap: Vec<String> = std::env::var("MF_BENCH_WRAP")
            .map(|w| {
                w.split_whitespace()
                    .map(|a| a.replace("{name}", &self.name))
                    .collect()
            })
            .unwrap_or_default();
        let mut cmd = match wrap.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                // Its own process group, so that stopping the wrapper stops
                // the daemon under it too (`signal`).
                c.args(args).arg(&self.bin).process_group(0);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("--config")
            .arg(&self.config)
            .arg("run")
            .env_remove("MAGIC_FOLDER_CONFIG")
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let api_url = self.config.join("api.url");
        let child = spawn_ready(&mut cmd, &self.name, &self.log, || {
            fs::read_to_string(&api_url).is_ok_and(|url| url.trim().starts_with("http://"))
        })?;
        self.daemon = Some(child);
        Ok(())
    }

    /// The daemon's process id.
    fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Stops the daemon with SIGTERM and waits (bounded) for it to exit;
    /// kills it if it does not.
    fn stop(&mut self) -> Result<()> {
        let Some(child) = self.daemon.take() else {
            return Ok(());
        };
        let status = terminate(child, &self.name)?;
        if !status.success() {
            bail!("{}: daemon exited with {status}", self.name);
        }
        Ok(())
    }

    /// True when the daemon has scanned and polled since it started and
    /// has nothing queued, in flight or unpublished: it is up to date.
    fn up_to_date(&self) -> bool {
        self.status().is_some_and(|s| {
            s["running"] == true
                && !s["last_scan"].is_null()
                && !s["last_poll"].is_null()
                && s["queued"] == 0
                && s["in_flight"] == 0
                && s["unpublished"] == 0
        })
    }

    /// Anything queued, in flight or not yet published.
    fn busy_with_local_changes(&self) -> Option<bool> {
        let s = self.status()?;
        Some(s["queued"] != 0 || s["in_flight"] != 0 || s["unpublished"] != 0)
    }

    /// Ours are `<name>.conflict-<author>`.
    fn is_conflict_copy(&self, name: &str, of: &str) -> bool {
        name.strip_prefix(of)
            .is_some_and(|rest| rest.starts_with(".conflict-"))
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            signal(&child, "-KILL");
            let _ = child.wait();
        }
    }
}

/// A minimal HTTP GET on loopback (a daemon's API) with one extra header
/// line (the credentials); the body, if the status is 200. HTTP/1.0, so
/// that the server sends the body as is, never chunked.
pub fn http_get(url: &str, path: &str, header: &str) -> Option<String> {
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n{header}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code: u16 = resp.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = resp.split_once("\r\n\r\n")?;
    (code == 200).then(|| body.to_owned())
}

/// A process's CPU time and memory, from `/proc/<pid>/{stat,status}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started, KiB.
    pub hwm_kib: u64,
}

impl ProcSample {
    /// Reads the figures of process `pid`; `None` if it is gone.
    pub fn read(pid: u32) -> Option<ProcSample> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces and parentheses: the
        // fields after it start at the last ')'. utime and stime are
        // fields 14 and 15, i.e. the 12th and 13th after the name.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| -> Option<u64> {
            status
                .lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some(ProcSample {
            cpu_ticks: utime + stime,
            rss_kib: kib("VmRSS:")?,
            hwm_kib: kib("VmHWM:")?,
        })
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails).
pub fn clock_ticks_per_s() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Checks `cond` until it holds or `timeout` (counted from `started`)
/// passes; returns the time from `started` until it held, or `None` on
/// timeout. The check interval grows with the time waited (2 % of it,
/// between 5 and 100 ms), so a long wait is measured to about 2 % while the
/// checks themselves stay cheap. `cond` may report a time of its own (when
/// the condition became true before a slow verification), else the time of
/// the check is used.
pub fn wait_for(
    started: Instant,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<Option<Instant>>,
) -> Result<Option<Duration>> {
    loop {
        if let Some(at) = cond()? {
            return Ok(Some(at.saturating_duration_since(started)));
        }
        let waited = started.elapsed();
        if waited > timeout {
            return Ok(None);
        }
        let step = (waited / 50).clamp(Duration::from_millis(5), Duration::from_millis(100));
        std::thread::sleep(step);
    }
}

/// [`wait_for`] for a plain condition: the time is that of the check.
pub fn wait_until(
    started: Instant,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<Option<Duration>> {
    wait_for(started, timeout, || Ok(cond()?.then(Instant::now)))
}
