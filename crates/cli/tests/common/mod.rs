//! Helpers for end-to-end tests that run the real `magic-folder` binary.
//!
//! Each test builds a [`World`]: a temporary directory holding, for each
//! [`Participant`], its own config directory and synchronised folder, and a
//! grid shared by every participant — either
//!
//! * an embedded grid in that directory ([`World::new`]), or
//! * a real Tahoe-LAFS grid ([`World::tahoe`]: the test binary's shared
//!   grid, or [`World::tahoe_private`]: one of the test's own, for tests that
//!   stop storage nodes), where each participant runs against its own Tahoe
//!   client node (started for it, killed with it).
//!
//! The same scenario runs on both: write it as a function of `&World`.
//! Tahoe is slower (≈ 0.1–0.5 s per grid operation, and every poll lists
//! directories), so a Tahoe world polls every second and waits longer
//! ([`World::timeout`]).
//!
//! Daemons run as child processes (`magic-folder run`), are killed when
//! their `Participant` is dropped, and log to a file that is printed when a
//! wait times out.
//!
//! Nothing here sleeps for a fixed time to let something happen: tests wait
//! for a condition, checking every [`POLL`] up to a deadline.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mf_grid::tahoe::testgrid::{GridSpec, TestGrid, TestNode};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_magic-folder");

/// How often conditions are checked.
pub const POLL: Duration = Duration::from_millis(50);

/// The default deadline for a condition. Generous: the machine running the
/// suite may be busy, and a passing test never waits this long.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The deadline for a condition on a Tahoe grid (slower, and its nodes
/// compete for the same cores).
pub const TAHOE_TIMEOUT: Duration = Duration::from_secs(120);

/// The folder name every test uses.
pub const FOLDER: &str = "shared";

/// Short intervals so tests run quickly.
pub const TUNING: &[&str] = &[
    "--poll-interval",
    "300ms",
    "--pending-delay",
    "150ms",
    "--scan-interval",
    "60s",
];

/// [`TUNING`] for a Tahoe grid: a poll lists the collective and every
/// personal directory (≈ 0.1–0.3 s each), so once a second.
pub const TAHOE_TUNING: &[&str] = &[
    "--poll-interval",
    "1s",
    "--pending-delay",
    "150ms",
    "--scan-interval",
    "60s",
];

/// A temporary world: one grid, many participants.
pub struct World {
    /// Everything lives in here; removed on drop.
    pub tmp: tempfile::TempDir,
    /// The embedded grid's directory (unused on a Tahoe world).
    pub grid: PathBuf,
    tahoe: Option<Tahoe>,
    /// The layout the admin creates folders with (`flat` unless
    /// [`World::sharded`]).
    layout: &'static str,
}

/// A Tahoe world's grid.
enum Tahoe {
    /// The test binary's shared grid (never stopped: other tests use it).
    Shared(&'static TestGrid),
    /// The test's own grid (stopped with the world).
    Private(Box<TestGrid>),
}

impl World {
    /// A fresh world on an embedded grid.
    pub fn new() -> World {
        let tmp = tempfile::Builder::new()
            .prefix("mf-e2e-")
            .tempdir()
            .expect("temp dir");
        let grid = tmp.path().join("grid");
        World {
            tmp,
            grid,
            tahoe: None,
            layout: "flat",
        }
    }

    /// The layout the admin creates folders with.
    pub fn layout(&self) -> &'static str {
        self.layout
    }

    /// This world, with folders created in the sharded layout.
    pub fn sharded(self) -> World {
        World {
            layout: "sharded",
            ..self
        }
    }

    /// A fresh world on this test binary's shared Tahoe-LAFS grid (started
    /// on first use; panics, never skips, if it cannot start). Each test
    /// makes its own collective on it, so tests do not disturb each other.
    pub fn tahoe() -> World {
        World {
            tahoe: Some(Tahoe::Shared(TestGrid::shared())),
            ..World::new()
        }
    }

    /// A fresh world on a Tahoe-LAFS grid of its own, which the test may
    /// disturb (stop storage nodes: [`World::test_grid_mut`]).
    pub fn tahoe_private(spec: GridSpec) -> World {
        let grid = TestGrid::start(spec).unwrap_or_else(|e| {
            panic!("a private Tahoe-LAFS test grid ({spec:?}) could not be started:\n{e}")
        });
        eprintln!("private Tahoe test grid up: {:?}", grid.timings());
        World {
            tahoe: Some(Tahoe::Private(Box::new(grid))),
            ..World::new()
        }
    }

    /// `embedded` or `tahoe`, as `list --json` names the grid.
    pub fn kind(&self) -> &'static str {
        if self.tahoe.is_some() {
            "tahoe"
        } else {
            "embedded"
        }
    }

    /// The Tahoe test grid (panics on an embedded world).
    pub fn test_grid(&self) -> &TestGrid {
        match &self.tahoe {
            Some(Tahoe::Shared(g)) => g,
            Some(Tahoe::Private(g)) => g,
            None => panic!("not a Tahoe world"),
        }
    }

    /// The Tahoe test grid, to stop and start its storage nodes (panics
    /// unless the world has a private grid).
    pub fn test_grid_mut(&mut self) -> &mut TestGrid {
        match &mut self.tahoe {
            Some(Tahoe::Private(g)) => g,
            _ => panic!("only a private Tahoe grid may be disturbed"),
        }
    }

    /// The deadline for conditions in this world.
    pub fn timeout(&self) -> Duration {
        if self.tahoe.is_some() {
            TAHOE_TIMEOUT
        } else {
            TIMEOUT
        }
    }

    /// The daemon timing settings of this world's folders.
    pub fn tuning(&self) -> &'static [&'static str] {
        if self.tahoe.is_some() {
            TAHOE_TUNING
        } else {
            TUNING
        }
    }

    /// A participant with its own (not yet initialised) config directory
    /// (and, on Tahoe, its own running client node).
    pub fn participant(&self, name: &str) -> Participant {
        let home = self.tmp.path().join(name);
        fs::create_dir_all(&home).unwrap();
        let tahoe = self.tahoe.as_ref().map(|_| {
            self.test_grid()
                .add_client(name)
                .unwrap_or_else(|e| panic!("{name}: cannot start a Tahoe client node:\n{e}"))
        });
        Participant {
            name: name.to_owned(),
            config: home.join("config"),
            dir: home.join("folder"),
            log: home.join("daemon.log"),
            daemon: None,
            starts: 0,
            timeout: self.timeout(),
            tahoe,
        }
    }

    /// A participant that created [`FOLDER`] on this world's grid.
    pub fn admin(&self, name: &str) -> Participant {
        let p = self.participant(name);
        let dir = p.dir.to_str().unwrap().to_owned();
        let mut args = vec![
            "create",
            FOLDER,
            &dir,
            "--author",
            name,
            "--layout",
            self.layout,
        ];
        let grid = p.grid_args(self);
        args.extend(grid.iter().map(String::as_str));
        args.extend_from_slice(self.tuning());
        p.ok(&args);
        p
    }

    /// A participant invited by `admin` who joined [`FOLDER`] (on Tahoe,
    /// through its own node).
    pub fn joined(&self, admin: &Participant, name: &str) -> Participant {
        let code = admin.ok(&["invite", FOLDER, name]).trim().to_owned();
        let p = self.participant(name);
        let dir = p.dir.to_str().unwrap().to_owned();
        let mut args = vec!["join", &code, &dir];
        // On the embedded grid the code says where the grid is.
        let grid = p.grid_args(self);
        if self.tahoe.is_some() {
            args.extend(grid.iter().map(String::as_str));
        }
        args.extend_from_slice(self.tuning());
        p.ok(&args);
        // Let them in now (a running daemon would within seconds).
        admin.ok(&["admit", FOLDER]);
        p
    }
}

/// One participant: a config directory, a folder, maybe a running daemon.
pub struct Participant {
    /// Participant name.
    pub name: String,
    /// Config directory.
    pub config: PathBuf,
    /// The synchronised folder.
    pub dir: PathBuf,
    /// The daemon's log (appended to by every start).
    pub log: PathBuf,
    daemon: Option<Child>,
    starts: u32,
    /// The deadline for conditions this participant waits for.
    pub timeout: Duration,
    /// On Tahoe, the participant's own client node (its daemon's grid).
    tahoe: Option<TestNode>,
}

impl Participant {
    /// `--grid DIR` or `--tahoe NODE_DIR` for `create` and `join`.
    pub fn grid_args(&self, w: &World) -> Vec<String> {
        match &self.tahoe {
            Some(node) => vec!["--tahoe".into(), node.dir().to_str().unwrap().to_owned()],
            None => vec!["--grid".into(), w.grid.to_str().unwrap().to_owned()],
        }
    }

    /// The participant's own Tahoe client node (panics on an embedded world).
    pub fn tahoe_node(&self) -> &TestNode {
        self.tahoe.as_ref().expect("a Tahoe world")
    }

    /// [`tahoe_node`](Self::tahoe_node), to stop, kill and restart it.
    pub fn tahoe_node_mut(&mut self) -> &mut TestNode {
        self.tahoe.as_mut().expect("a Tahoe world")
    }

    /// Runs the CLI with this participant's config.
    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("MAGIC_FOLDER_CONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run magic-folder")
    }

    /// Runs the CLI and returns its stdout; panics (with stderr) on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "{}: `magic-folder {}` failed ({}):\n{}",
            self.name,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs the CLI expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "{}: `magic-folder {}` should have failed; stdout:\n{}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !stderr.contains("panicked"),
            "a panic is not an error message:\n{stderr}"
        );
        stderr
    }

    /// Starts `magic-folder run` and waits until its API is up.
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// [`start`](Self::start) with more arguments of `run`.
    pub fn start_with(&mut self, run_args: &[&str]) {
        assert!(self.daemon.is_none(), "{} is already running", self.name);
        let _ = fs::remove_file(self.config.join("api.url"));
        self.starts += 1;
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "===== start #{} =====", self.starts).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .args(run_args)
            .env_remove("MAGIC_FOLDER_CONFIG")
            .env(
                "RUST_LOG",
                std::env::var("MF_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn magic-folder run");
        self.daemon = Some(child);
        let api = self.config.join("api.url");
        let me = &mut *self;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if fs::read_to_string(&api).is_ok_and(|s| s.trim().starts_with("http://")) {
                return;
            }
            if let Some(status) = me.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{}: daemon exited at start ({status}):\n{}",
                    me.name,
                    me.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: daemon did not start:\n{}",
                me.name,
                me.log_text()
            );
            std::thread::sleep(POLL);
        }
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// True if a daemon child is running.
    pub fn is_running(&mut self) -> bool {
        match self.daemon.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Stops the daemon cleanly (SIGTERM) and waits for it; panics if it
    /// does not exit cleanly in time.
    pub fn stop(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{}: daemon exited with {status}:\n{}",
                    self.name,
                    self.log_text()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{}: daemon did not stop on SIGTERM:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills the daemon with SIGKILL (no chance to clean up).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Path of `rel` inside the folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Writes a file (creating parent directories), atomically so the
    /// watcher never sees it half-written.
    pub fn write(&self, rel: &str, content: &[u8]) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        // Staged outside the folder (same filesystem), so the watcher never
        // sees a temporary name.
        let tmp = self
            .config
            .parent()
            .unwrap()
            .join(format!("stage-{}", fastrand::u64(..)));
        fs::write(&tmp, content).unwrap();
        fs::rename(&tmp, &p).unwrap();
    }

    /// Reads a file, if it exists.
    pub fn read(&self, rel: &str) -> Option<Vec<u8>> {
        fs::read(self.path(rel)).ok()
    }

    /// The folder's contents (see [`tree`]).
    pub fn tree(&self) -> Tree {
        tree(&self.dir)
    }

    /// `status --json` of the folder.
    pub fn status(&self) -> serde_json::Value {
        let out = self.ok(&["status", FOLDER, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("status --json is JSON");
        v[FOLDER].clone()
    }

    /// The conflicts `status --json` lists, as (path, participant) pairs.
    pub fn conflicts(&self) -> Vec<(String, String)> {
        let s = self.status();
        let mut out: Vec<(String, String)> = s["conflicts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["path"].as_str().unwrap().to_owned(),
                            c["participant"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The running daemon's live status of the folder, straight from the
    /// API (cheaper than spawning the CLI in a wait loop).
    pub fn live_status(&self) -> Option<serde_json::Value> {
        let url = fs::read_to_string(self.config.join("api.url")).ok()?;
        let token = fs::read_to_string(self.config.join("api_token")).ok()?;
        let path = format!("/v1/magic-folder/{FOLDER}/status");
        let (code, body) = try_http(url.trim(), "GET", &path, Some(token.trim()))?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// True if the running daemon reports nothing queued, in flight or unpublished.
    pub fn idle(&self) -> bool {
        self.live_status().is_some_and(|s| {
            s["running"] == true && s["queued"] == 0 && s["in_flight"] == 0 && s["unpublished"] == 0
        })
    }

    /// Waits until the daemon has been idle for a whole second (so a change
    /// written just before has been noticed and fully handled).
    pub fn wait_settled(&self) {
        let mut since: Option<Instant> = None;
        wait_until(&format!("{} settles", self.name), &[self], || {
            if self.idle() {
                let t = *since.get_or_insert_with(Instant::now);
                t.elapsed() >= Duration::from_secs(1)
            } else {
                since = None;
                false
            }
        });
    }

    /// The daemon's API URL and token.
    pub fn api(&self) -> (String, String) {
        let url = fs::read_to_string(self.config.join("api.url"))
            .unwrap()
            .trim()
            .to_owned();
        let token = fs::read_to_string(self.config.join("api_token"))
            .unwrap()
            .trim()
            .to_owned();
        (url, token)
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One entry of a folder tree.
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A file and its content.
    File(Vec<u8>),
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Dir => write!(f, "dir"),
            Node::File(b) if b.len() <= 64 => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Node::File(b) => write!(f, "<{} bytes, fnv {:016x}>", b.len(), fnv(b)),
        }
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

/// A folder's synchronised contents: relative path → node. Leaves out the
/// `.magic-folder` bookkeeping directory and temporary files.
pub type Tree = BTreeMap<String, Node>;

/// Reads a folder's contents (see [`Tree`]).
pub fn tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    walk(root, "", &mut out);
    out
}

fn walk(dir: &Path, prefix: &str, out: &mut Tree) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if prefix.is_empty() && name == ".magic-folder" {
            continue;
        }
        if name.starts_with(".mf-tmp-") {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            out.insert(rel.clone(), Node::Dir);
            walk(&entry.path(), &rel, out);
        } else if ft.is_file() {
            if let Ok(b) = fs::read(entry.path()) {
                out.insert(rel, Node::File(b));
            }
        }
    }
}

/// Builds an expected tree from (path, content) pairs; `None` content is a directory.
pub fn expect(entries: &[(&str, Option<&[u8]>)]) -> Tree {
    let mut t = Tree::new();
    for (p, c) in entries {
        // Parent directories are implied.
        let mut acc = String::new();
        let segs: Vec<&str> = p.split('/').collect();
        for s in &segs[..segs.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(s);
            t.insert(acc.clone(), Node::Dir);
        }
        t.insert(
            p.to_string(),
            c.map(|c| Node::File(c.to_vec())).unwrap_or(Node::Dir),
        );
    }
    t
}

/// Waits until `cond` holds, up to the longest of the participants'
/// [timeouts](Participant::timeout); on timeout panics with `what`, the
/// participants' trees and their daemon logs.
pub fn wait_until(what: &str, ps: &[&Participant], mut cond: impl FnMut() -> bool) {
    let timeout = ps.iter().map(|p| p.timeout).max().unwrap_or(TIMEOUT);
    wait_until_for(what, timeout, ps, &mut cond)
}

/// [`wait_until`] with an explicit deadline.
pub fn wait_until_for(
    what: &str,
    timeout: Duration,
    ps: &[&Participant],
    cond: &mut dyn FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            let mut report = format!("timed out after {timeout:?} waiting until {what}\n");
            for p in ps {
                report.push_str(&format!("\n--- {}: tree {:?}\n", p.name, p.tree()));
                let st = p.cmd(&["status", FOLDER, "--json"]);
                report.push_str(&format!(
                    "--- {}: status {}\n",
                    p.name,
                    String::from_utf8_lossy(&st.stdout)
                ));
                let log = p.log_text();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(80)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                report.push_str(&format!("--- {}: daemon log (tail)\n{tail}\n", p.name));
            }
            panic!("{report}");
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until every participant's folder equals `want`.
pub fn wait_tree(what: &str, ps: &[&Participant], want: &Tree) {
    wait_until(what, ps, || ps.iter().all(|p| p.tree() == *want));
}

/// Waits (briefly) until `p`'s daemon has work in flight, to interrupt it
/// there; false if it never showed any (a fast machine may finish first,
/// which only makes the test weaker, never wrong).
pub fn wait_in_flight(p: &Participant) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if p.live_status()
            .is_some_and(|s| s["in_flight"].as_u64().unwrap_or(0) > 0)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits until every participant's folder is the same (whatever it is) and
/// every daemon is idle; returns the common tree.
pub fn wait_converged(what: &str, ps: &[&Participant]) -> Tree {
    let mut last = Tree::new();
    wait_until(what, ps, || {
        let first = ps[0].tree();
        if ps.iter().skip(1).any(|p| p.tree() != first) {
            return false;
        }
        if !ps.iter().all(|p| p.idle()) {
            return false;
        }
        // Still the same after the idle check: nothing moved meanwhile.
        let ok = ps.iter().all(|p| p.tree() == first);
        last = first;
        ok
    });
    last
}

/// A minimal HTTP/1.1 request to the daemon's API; returns (status, body).
pub fn http(url: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    try_http(url, method, path, token).expect("HTTP request to the API")
}

/// [`http`], or `None` if the daemon cannot be reached.
pub fn try_http(url: &str, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    try_http_with(url, method, path, token, "")
}

/// [`http`] with a JSON body.
pub fn http_json(url: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    try_http_with(url, method, path, Some(token), body).expect("HTTP request to the API")
}

/// A request with a JSON body and no token, or `None` if nothing answers.
pub fn try_http_body(url: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    try_http_with(url, method, path, None, body)
}

fn try_http_with(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<(u16, String)> {
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\n{auth}");
    let kind = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        s,
        "{head}{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    // Read the head, then as many bytes as Content-Length says (a server
    // may keep the connection open whatever we asked), else to the end.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())?;
    let length: Option<usize> = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())
            .flatten()
    });
    let mut body = raw.split_off(head_end);
    match length {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut buf).ok()?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            }
            body.truncate(len);
        }
        None => {
            s.read_to_end(&mut body).ok()?;
        }
    }
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// Runs `script` with the Python of the Tahoe venv (where magic-folder 24.3
/// and prometheus-client are installed), `input` on its stdin; its output.
pub fn venv_python(script: &str, input: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    let python = mf_grid::tahoe::testgrid::venv_executable("python").unwrap();
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}
