//! A real, local Tahoe-LAFS grid for tests: one introducer, storage nodes and
//! client nodes on free `127.0.0.1` ports, under a fresh temporary directory.
//!
//! Available with the cargo feature `test-grid` (and in this crate's unit
//! tests). Another crate's tests use it with
//!
//! ```toml
//! [dev-dependencies]
//! mf-grid = { workspace = true, features = ["test-grid"] }
//! ```
//!
//! ```no_run
//! use mf_grid::tahoe::testgrid::{GridSpec, TestGrid};
//! // Shared by every test of this test binary; started on first use.
//! let grid = TestGrid::shared();
//! let tahoe = grid.client(0).grid().unwrap(); // a TahoeGrid
//! // One Tahoe node per participant:
//! let alice = grid.add_client("alice").unwrap();
//! let alice_grid = alice.grid().unwrap();
//! // Fault tests get a private grid, so stopping servers disturbs no one:
//! let mut own = TestGrid::start(GridSpec::default()).unwrap();
//! own.stop_storage(0).unwrap();
//! own.start_storage(0).unwrap();
//! ```
//!
//! # Where Tahoe comes from
//!
//! `$MF_TAHOE` if set (path of a `tahoe` executable); otherwise
//! `scripts/tahoe-venv.sh`, which installs tahoe-lafs 1.20.0 into
//! `<repo>/.venv/tahoe` once (≈ 25 s) and reuses it. If that fails the
//! fixture fails with the script's output: tests never silently skip.
//!
//! # Never leaving daemons behind
//!
//! * Each node runs as `tahoe run NODEDIR` **without** `--allow-stdin-close`,
//!   with its stdin a pipe whose write end only this process holds. Tahoe
//!   exits when its stdin closes (since 1.19), so however this process ends
//!   (normal exit, panic, abort, SIGKILL) every node it started exits within
//!   about two seconds. This is what makes a never-dropped process-wide
//!   grid ([`TestGrid::shared`]) safe.
//! * [`TestNode`] and [`TestGrid`] also kill their processes by pid on drop,
//!   so a test's private grid is gone as soon as the test ends.
//! * Grid directories are `$TMPDIR/mf-tahoe-<pid>-<n>`. A grid removes its
//!   own on drop; directories of processes that no longer exist (such as the
//!   shared grid's) are removed when the next grid starts. Set
//!   `MF_TAHOE_KEEP=1` to keep them for post-mortems (each node logs to
//!   `NODEDIR/run.log`).
//!
//! # Timing
//!
//! Everything here blocks the calling thread (it is fine to call from inside
//! a `#[tokio::test]`). On the 2-core development machine a 1 + 3 + 1 grid is
//! ready about 3 s after the call (venv already installed); an extra client
//! node takes about 1–2 s. Readiness is a condition, never a fixed sleep:
//! every node's `GET /?t=json` must report exactly the running storage
//! servers as connected.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::{TahoeGrid, TahoeOptions};
use crate::GridResult;

/// How long a node may take to come up, or a grid to converge, before the
/// fixture gives up (generous: a timeout only ever costs time on failure).
/// A node counts a storage server as connected only while its liveness
/// check, a version request every second, answers within 5 s
/// (`storage_client.py`); on a 2-core machine starved by other work those
/// checks time out again and again, and a grid of five Python processes
/// took over 90 s to see all of its servers at once.
pub const READY_TIMEOUT: Duration = Duration::from_secs(240);

/// How long a node just started may take to see every storage server
/// before it is restarted, once. Foolscap retries a failed connection after
/// a delay that grows by e each time (1 s, 2.7 s, 7.4 s, … 148 s, 403 s):
/// on a busy machine the first attempts, made while the other nodes are
/// still coming up, can fail so often that the next one is minutes away.
/// A restarted node tries every server at once.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(90);

/// The shape of a test grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridSpec {
    /// Storage nodes (each also has a web API).
    pub storage_nodes: usize,
    /// Client-only nodes started with the grid (more with [`TestGrid::add_client`]).
    pub client_nodes: usize,
    /// `shares.needed` (k) of every node.
    pub shares_needed: u32,
    /// `shares.happy` of every node.
    pub shares_happy: u32,
    /// `shares.total` (N) of every node.
    pub shares_total: u32,
}

impl Default for GridSpec {
    /// Three storage nodes, one client, k = 2, happy = 3, N = 3: any one
    /// storage node may be down for reads, none for immutable writes.
    fn default() -> GridSpec {
        GridSpec {
            storage_nodes: 3,
            client_nodes: 1,
            shares_needed: 2,
            shares_happy: 3,
            shares_total: 3,
        }
    }
}

/// Why a test grid could not be set up; the message says what to do.
#[derive(Debug, Clone)]
pub struct TestGridError(String);

impl fmt::Display for TestGridError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TestGridError {}

fn err(msg: impl Into<String>) -> TestGridError {
    TestGridError(msg.into())
}

type Result<T> = std::result::Result<T, TestGridError>;

/// What a node is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// The introducer (no web API).
    Introducer,
    /// A storage server (with a web API, usable as a client too).
    Storage,
    /// A client-only node (`--no-storage`, no inbound Foolscap listener).
    Client,
}

/// How long each phase of [`TestGrid::start`] took.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartTimings {
    /// Finding or installing `tahoe` (≈ 0 once the venv exists).
    pub install: Duration,
    /// Writing every node's configuration.
    pub create: Duration,
    /// Starting the introducer until its fURL exists.
    pub introducer: Duration,
    /// Starting every other node until all see all storage servers.
    pub nodes: Duration,
    /// The whole call.
    pub total: Duration,
}

/// Path of the `tahoe` executable: `$MF_TAHOE`, or the project venv
/// (installed by `scripts/tahoe-venv.sh` on first use). Computed once per
/// process.
pub fn tahoe_executable() -> Result<PathBuf> {
    static TAHOE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    TAHOE
        .get_or_init(|| find_tahoe().map_err(|e| e.0))
        .clone()
        .map_err(TestGridError)
}

/// Another program of the venv that holds `tahoe` (installed beside it by
/// `scripts/tahoe-venv.sh`): `magic-folder`, `magic-folder-api` (24.3),
/// `twistd` (for the Magic Wormhole mailbox server).
pub fn venv_executable(name: &str) -> Result<PathBuf> {
    let path = tahoe_executable()?.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(err(format!(
            "{} is missing: rerun scripts/tahoe-venv.sh with TAHOE_VENV_FORCE=1",
            path.display()
        )))
    }
}

fn repo_root() -> PathBuf {
    // crates/grid → the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn find_tahoe() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MF_TAHOE") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(err(format!("MF_TAHOE={} is not a file", path.display())))
        };
    }
    let script = repo_root().join("scripts/tahoe-venv.sh");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot run {}: {e}", script.display())))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(err(format!(
            "Tahoe-LAFS is not installed and {} failed ({}); the real-grid tests need it.\n\
             Run the script by hand to see why (it needs python3 >= 3.9 with venv, and PyPI).\n{stderr}",
            script.display(),
            out.status
        )));
    }
    if !stderr.trim().is_empty() {
        eprintln!("{}", stderr.trim_end());
        eprintln!("tahoe-venv.sh took {:.1?}", started.elapsed());
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !path.is_file() {
        return Err(err(format!(
            "{} printed {path:?}, which is not a file",
            script.display()
        )));
    }
    Ok(path)
}

/// One Tahoe node directory and (while running) its process. Dropping it
/// kills the process.
pub struct TestNode {
    name: String,
    role: NodeRole,
    dir: PathBuf,
    tahoe: PathBuf,
    web_port: Option<u16>,
    tub_port: Option<u16>,
    spec: GridSpec,
    /// Behind a lock so that read-only checks (`is_running`, waits) work on a
    /// shared `&TestNode`; starting and stopping still take `&mut self`.
    process: Mutex<Option<Running>>,
}

struct Running {
    child: Child,
    /// The write end of the node's stdin: the node exits when it closes.
    lifeline: Option<ChildStdin>,
}

impl fmt::Debug for TestNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestNode")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("web_port", &self.web_port)
            .field("running", &self.started())
            .finish()
    }
}

impl TestNode {
    /// The node's nickname.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What kind of node this is.
    pub fn role(&self) -> NodeRole {
        self.role
    }

    /// The node directory (`tahoe.cfg`, `node.url`, `run.log`, …).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The web API URL, `http://127.0.0.1:PORT/` (none for the introducer).
    pub fn url(&self) -> Option<String> {
        self.web_port.map(|p| format!("http://127.0.0.1:{p}/"))
    }

    /// A [`TahoeGrid`] talking to this node (built from its directory, so it
    /// knows the node's encoding). The node must be running.
    pub fn grid(&self) -> GridResult<TahoeGrid> {
        TahoeGrid::from_node_dir(&self.dir)
    }

    /// [`grid`](Self::grid) with explicit options (e.g. MDMF directories).
    pub fn grid_with(&self, options: TahoeOptions) -> GridResult<TahoeGrid> {
        TahoeGrid::from_node_dir_with(&self.dir, options)
    }

    fn process(&self) -> MutexGuard<'_, Option<Running>> {
        self.process.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while the node's process is alive.
    pub fn is_running(&self) -> bool {
        match &mut *self.process() {
            Some(r) => matches!(r.child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// True if the node was started (and not stopped) through this handle,
    /// whether or not its process is still alive.
    fn started(&self) -> bool {
        self.process().is_some()
    }

    /// Starts the node and waits until its web API answers (or, for the
    /// introducer, until its fURL exists). Does not wait for connections:
    /// see [`wait_connected`](Self::wait_connected).
    pub fn start(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_up(Instant::now() + READY_TIMEOUT)
    }

    /// Stops the node gracefully: closes its stdin (Tahoe shuts down) and
    /// waits up to 10 s, then kills it.
    pub fn stop(&mut self) {
        let taken = self.process().take();
        if let Some(mut r) = taken {
            drop(r.lifeline.take());
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if !matches!(r.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }

    /// Kills the node at once (SIGKILL), like a crash or power cut.
    pub fn kill(&mut self) {
        let taken = self.process().take();
        if let Some(mut r) = taken {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }

    /// Storage servers this node reports as connected (`GET /?t=json`).
    pub fn connected_servers(&self) -> Result<usize> {
        let port = self
            .web_port
            .ok_or_else(|| err(format!("{} has no web API", self.name)))?;
        let body =
            http_get_json(port).map_err(|e| err(format!("{}: GET /?t=json: {e}", self.name)))?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| err(format!("{}: welcome page is not JSON: {e}", self.name)))?;
        Ok(v["servers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["connection_status"] == "connected")
                    .count()
            })
            .unwrap_or(0))
    }

    /// Waits until exactly `n` storage servers are connected (exactly, so it
    /// also serves to wait for a stopped server to be noticed).
    pub fn wait_connected(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.connected_servers() {
                Ok(c) if c == n => return Ok(()),
                Ok(c) => format!("{c} connected"),
                Err(e) => e.0,
            };
            if self.started() && !self.is_running() {
                return Err(self.failure("exited while waiting for connections"));
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "did not see {n} storage servers within {timeout:?} ({last})"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of the node's `run.log`.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.dir.join("run.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn failure(&self, what: &str) -> TestGridError {
        err(format!(
            "Tahoe node {} ({}) {what}\n--- last lines of its run.log ---\n{}",
            self.name,
            self.dir.display(),
            self.log_tail(25)
        ))
    }

    fn spawn(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        *self.process() = None;
        // A stale node.url would make the node look up before it is.
        let _ = fs::remove_file(self.dir.join("node.url"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("run.log"))
            .map_err(|e| err(format!("opening {}/run.log: {e}", self.dir.display())))?;
        let log2 = log.try_clone().map_err(|e| err(format!("run.log: {e}")))?;
        let mut child = Command::new(&self.tahoe)
            .arg("run")
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                err(format!(
                    "starting {} run {}: {e}",
                    self.tahoe.display(),
                    self.dir.display()
                ))
            })?;
        let lifeline = child.stdin.take();
        *self.process() = Some(Running { child, lifeline });
        Ok(())
    }

    fn is_up(&self) -> bool {
        match self.role {
            NodeRole::Introducer => {
                self.dir.join("private/introducer.furl").exists()
                    && self.tub_port.is_some_and(|p| {
                        TcpStream::connect_timeout(
                            &SocketAddr::from(([127, 0, 0, 1], p)),
                            Duration::from_secs(1),
                        )
                        .is_ok()
                    })
            }
            _ => self.dir.join("node.url").exists() && self.connected_servers().is_ok(),
        }
    }

    fn wait_up(&self, deadline: Instant) -> Result<()> {
        loop {
            if self.is_up() {
                return Ok(());
            }
            if !self.is_running() {
                return Err(self.failure("exited during startup"));
            }
            if Instant::now() >= deadline {
                return Err(self.failure("did not come up in time"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn port_clash(&self) -> bool {
        let log = self.log_tail(60);
        log.contains("Address already in use") || log.contains("CannotListenError")
    }

    /// Points the node's listeners at fresh free ports (after a clash).
    fn reassign_ports(&mut self) -> Result<()> {
        if self.web_port.is_some() {
            self.web_port = Some(free_ports(1)?[0]);
        }
        if self.tub_port.is_some() {
            self.tub_port = Some(free_ports(1)?[0]);
        }
        self.write_config()
    }

    /// Writes the node directory as `tahoe create-node` / `create-introducer`
    /// of tahoe-lafs 1.20.0 would (`tahoe.cfg`, the `.tac` marker `tahoe run`
    /// uses to tell node types apart, and `private/`). Doing it here instead
    /// of running those commands saves a Python start per node (≈ 1 s of CPU
    /// each, several seconds per grid on a loaded 2-core machine).
    fn write_config(&self) -> Result<()> {
        let io =
            |what: &str, e: std::io::Error| err(format!("{what} in {}: {e}", self.dir.display()));
        fs::create_dir_all(self.dir.join("private")).map_err(|e| io("creating private/", e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                fs::set_permissions(self.dir.join("private"), fs::Permissions::from_mode(0o700));
        }
        let listen = match self.tub_port {
            Some(p) => format!(
                "tub.port = tcp:{p}:interface=127.0.0.1\ntub.location = tcp:127.0.0.1:{p}\n"
            ),
            None => "tub.port = disabled\ntub.location = disabled\n".to_owned(),
        };
        let web = self
            .web_port
            .map(|w| format!("tcp:{w}:interface=127.0.0.1"))
            .unwrap_or_default();
        let (tac, cfg) = match self.role {
            NodeRole::Introducer => (
                "tahoe-introducer.tac",
                format!(
                    "[node]\nnickname = {}\nreveal-IP-address = true\nweb.port = {web}\n{listen}",
                    self.name
                ),
            ),
            NodeRole::Storage | NodeRole::Client => {
                let GridSpec {
                    shares_needed: k,
                    shares_happy: h,
                    shares_total: n,
                    ..
                } = self.spec;
                let storage = self.role == NodeRole::Storage;
                (
                    "tahoe-client.tac",
                    format!(
                        "[node]\nnickname = {}\nreveal-IP-address = true\nweb.port = {web}\nweb.static = public_html\n{listen}\n\
                         [client]\nhelper.furl =\nshares.needed = {k}\nshares.happy = {h}\nshares.total = {n}\n\n\
                         [storage]\nenabled = {storage}\nreserved_space = 100M\n\n[helper]\nenabled = false\n",
                        self.name
                    ),
                )
            }
        };
        fs::write(self.dir.join("tahoe.cfg"), cfg).map_err(|e| io("writing tahoe.cfg", e))?;
        fs::write(
            self.dir.join(tac),
            "# Written by mf_grid::tahoe::testgrid; `tahoe run` only looks at this file's name.\n",
        )
        .map_err(|e| io("writing the .tac marker", e))
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running local grid. Dropping it kills every node it started and removes
/// its directory (nodes from [`add_client`](Self::add_client) are owned by
/// the caller).
pub struct TestGrid {
    root: PathBuf,
    tahoe: PathBuf,
    spec: GridSpec,
    furl: String,
    introducer: TestNode,
    storage: Vec<TestNode>,
    clients: Vec<TestNode>,
    extra_clients: AtomicUsize,
    timings: StartTimings,
}

impl fmt::Debug for TestGrid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestGrid")
            .field("root", &self.root)
            .field("spec", &self.spec)
            .finish()
    }
}

static GRID_SEQ: AtomicUsize = AtomicUsize::new(0);

impl TestGrid {
    /// The grid shared by every test in this process: started on first use
    /// with [`GridSpec::default`], never stopped by hand (its nodes exit with
    /// the process, see the module docs). Panics with the reason if it cannot
    /// be started, so tests fail loudly instead of skipping.
    ///
    /// Do not stop its storage nodes (that needs `&mut`, which a shared grid
    /// cannot give): fault tests start their own with [`TestGrid::start`].
    pub fn shared() -> &'static TestGrid {
        static SHARED: OnceLock<std::result::Result<TestGrid, String>> = OnceLock::new();
        let grid = SHARED.get_or_init(|| {
            let grid = TestGrid::start(GridSpec::default()).map_err(|e| e.0)?;
            eprintln!("shared Tahoe test grid up: {:?}", grid.timings());
            Ok(grid)
        });
        match grid {
            Ok(g) => g,
            Err(e) => panic!("the shared Tahoe-LAFS test grid could not be started:\n{e}"),
        }
    }

    /// Creates and starts a grid, and waits until every node sees every
    /// storage server.
    pub fn start(spec: GridSpec) -> Result<TestGrid> {
        if spec.storage_nodes == 0
            || spec.shares_needed == 0
            || spec.shares_happy as usize > spec.storage_nodes
        {
            return Err(err(format!(
                "unusable grid spec {spec:?}: need storage nodes ≥ happy ≥ 1"
            )));
        }
        let t0 = Instant::now();
        let tahoe = tahoe_executable()?;
        let mut timings = StartTimings {
            install: t0.elapsed(),
            ..Default::default()
        };

        sweep_stale_roots();
        let root = std::env::temp_dir().join(format!(
            "mf-tahoe-{}-{}",
            std::process::id(),
            GRID_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).map_err(|e| err(format!("creating {}: {e}", root.display())))?;
        // Until the grid is assembled, a failure must still clean up.
        let guard = RootGuard(Some(root.clone()));

        let t = Instant::now();
        let ports = free_ports(1 + 2 * spec.storage_nodes + spec.client_nodes)?;
        let mut ports = ports.into_iter();
        let mut introducer = new_node(
            &tahoe,
            &root,
            spec,
            "introducer",
            NodeRole::Introducer,
            None,
            ports.next(),
        );
        let mut storage: Vec<TestNode> = (0..spec.storage_nodes)
            .map(|i| {
                new_node(
                    &tahoe,
                    &root,
                    spec,
                    &format!("storage{i}"),
                    NodeRole::Storage,
                    ports.next(),
                    ports.next(),
                )
            })
            .collect();
        let mut clients: Vec<TestNode> = (0..spec.client_nodes)
            .map(|i| {
                new_node(
                    &tahoe,
                    &root,
                    spec,
                    &format!("client{i}"),
                    NodeRole::Client,
                    ports.next(),
                    None,
                )
            })
            .collect();
        for node in std::iter::once(&introducer).chain(&storage).chain(&clients) {
            node.write_config()?;
        }
        timings.create = t.elapsed();

        let t = Instant::now();
        start_with_port_retry(&mut introducer)?;
        let furl_path = introducer.dir.join("private/introducer.furl");
        let furl = fs::read_to_string(&furl_path)
            .map_err(|e| err(format!("reading {}: {e}", furl_path.display())))?
            .trim()
            .to_owned();
        timings.introducer = t.elapsed();

        let t = Instant::now();
        for node in storage.iter().chain(clients.iter()) {
            write_introducer(node, &furl)?;
        }
        {
            let mut nodes: Vec<&mut TestNode> =
                storage.iter_mut().chain(clients.iter_mut()).collect();
            start_many(&mut nodes)?;
            wait_all_connected(&mut nodes, spec.storage_nodes)?;
        }
        timings.nodes = t.elapsed();
        timings.total = t0.elapsed();

        let mut guard = guard;
        guard.0 = None;
        Ok(TestGrid {
            root,
            tahoe,
            spec,
            furl,
            introducer,
            storage,
            clients,
            extra_clients: AtomicUsize::new(0),
            timings,
        })
    }

    /// How long [`start`](Self::start) took, phase by phase.
    pub fn timings(&self) -> StartTimings {
        self.timings
    }

    /// The spec the grid was started with.
    pub fn spec(&self) -> GridSpec {
        self.spec
    }

    /// The grid's directory (one subdirectory per node).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The introducer's fURL, for nodes configured by hand.
    pub fn introducer_furl(&self) -> &str {
        &self.furl
    }

    /// Client node `i` of those started with the grid.
    pub fn client(&self, i: usize) -> &TestNode {
        &self.clients[i]
    }

    /// All client nodes started with the grid.
    pub fn clients(&self) -> &[TestNode] {
        &self.clients
    }

    /// Storage node `i`.
    pub fn storage(&self, i: usize) -> &TestNode {
        &self.storage[i]
    }

    /// How many storage nodes the grid has (running or not).
    pub fn storage_count(&self) -> usize {
        self.storage.len()
    }

    fn running_storage(&self) -> usize {
        self.storage.iter().filter(|n| n.started()).count()
    }

    /// Creates and starts one more client-only node, and waits until it sees
    /// every running storage server. The caller owns it: dropping the
    /// [`TestNode`] kills it. `name` is a nickname prefix; the node directory
    /// gets a unique suffix.
    pub fn add_client(&self, name: &str) -> Result<TestNode> {
        Ok(self.add_clients(name, 1)?.pop().expect("one node"))
    }

    /// Like [`add_client`](Self::add_client) for `n` nodes at once (created
    /// and started in parallel), named `{prefix}0`, `{prefix}1`, …
    pub fn add_clients(&self, prefix: &str, n: usize) -> Result<Vec<TestNode>> {
        let ports = free_ports(n)?;
        let mut nodes: Vec<TestNode> = ports
            .into_iter()
            .enumerate()
            .map(|(i, port)| {
                let seq = self.extra_clients.fetch_add(1, Ordering::SeqCst);
                let nick = if n == 1 {
                    prefix.to_owned()
                } else {
                    format!("{prefix}{i}")
                };
                let mut node = new_node(
                    &self.tahoe,
                    &self.root,
                    self.spec,
                    &format!("x{seq}-{nick}"),
                    NodeRole::Client,
                    Some(port),
                    None,
                );
                node.name = nick;
                node
            })
            .collect();
        for node in &nodes {
            node.write_config()?;
            write_introducer(node, &self.furl)?;
        }
        let mut refs: Vec<&mut TestNode> = nodes.iter_mut().collect();
        start_many(&mut refs)?;
        wait_all_connected(&mut refs, self.running_storage())?;
        Ok(nodes)
    }

    /// Kills storage node `i` (SIGKILL, like a crash) and waits until every
    /// running node of the grid has noticed.
    pub fn stop_storage(&mut self, i: usize) -> Result<()> {
        self.storage[i].kill();
        self.wait_converged(READY_TIMEOUT)
    }

    /// Restarts storage node `i` (same ports, same shares) and waits until
    /// every running node of the grid is connected to it again.
    pub fn start_storage(&mut self, i: usize) -> Result<()> {
        self.storage[i].start()?;
        self.wait_converged(READY_TIMEOUT)
    }

    /// Stops storage node `i` gracefully and starts it again (same ports,
    /// same shares), as an operator's restart does: a server drops the
    /// partial shares of interrupted uploads when it starts. Waits until
    /// every running node of the grid is connected to it again.
    pub fn restart_storage(&mut self, i: usize) -> Result<()> {
        self.storage[i].stop();
        self.wait_converged(READY_TIMEOUT)?;
        self.start_storage(i)
    }

    /// Waits until every running storage and client node of the grid (not
    /// those from `add_client`) sees exactly the running storage servers.
    pub fn wait_converged(&self, timeout: Duration) -> Result<()> {
        let want = self.running_storage();
        for node in self.storage.iter().chain(self.clients.iter()) {
            if node.started() {
                node.wait_connected(want, timeout)?;
            }
        }
        Ok(())
    }
}

impl Drop for TestGrid {
    fn drop(&mut self) {
        for node in self.clients.iter_mut().chain(self.storage.iter_mut()) {
            node.kill();
        }
        self.introducer.kill();
        if std::env::var_os("MF_TAHOE_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.root);
        } else {
            eprintln!("MF_TAHOE_KEEP: leaving {}", self.root.display());
        }
    }
}

/// Removes a half-built grid's directory unless disarmed.
struct RootGuard(Option<PathBuf>);

impl Drop for RootGuard {
    fn drop(&mut self) {
        if let Some(root) = self.0.take() {
            if std::env::var_os("MF_TAHOE_KEEP").is_none() {
                let _ = fs::remove_dir_all(root);
            }
        }
    }
}

fn new_node(
    tahoe: &Path,
    root: &Path,
    spec: GridSpec,
    name: &str,
    role: NodeRole,
    web_port: Option<u16>,
    tub_port: Option<u16>,
) -> TestNode {
    TestNode {
        name: name.to_owned(),
        role,
        dir: root.join(name),
        tahoe: tahoe.to_owned(),
        web_port,
        tub_port,
        spec,
        process: Mutex::new(None),
    }
}

fn write_introducer(node: &TestNode, furl: &str) -> Result<()> {
    let path = node.dir.join("private/introducers.yaml");
    fs::write(
        &path,
        format!("introducers:\n  default:\n    furl: {furl}\n"),
    )
    .map_err(|e| err(format!("writing {}: {e}", path.display())))
}

/// Starts one node, moving it to new ports if another process took its own.
fn start_with_port_retry(node: &mut TestNode) -> Result<()> {
    start_many(&mut [node])
}

/// Starts nodes in parallel and waits until each is up; a node that lost a
/// race for its port is moved to new ports and retried (up to 3 times).
/// Waits until every node of `nodes`, just started, sees `n` storage
/// servers, restarting once each that has not after
/// [`RECONNECT_PATIENCE`]; then, since a restarted storage node was away
/// from the others for a moment, until each sees them all again.
fn wait_all_connected(nodes: &mut [&mut TestNode], n: usize) -> Result<()> {
    for node in nodes.iter_mut() {
        if node.wait_connected(n, RECONNECT_PATIENCE).is_err() {
            eprintln!(
                "Tahoe node {} sees fewer than {n} storage servers after {RECONNECT_PATIENCE:?}: \
                 restarting it",
                node.name
            );
            node.stop();
            node.start()?;
        }
    }
    for node in nodes.iter() {
        node.wait_connected(n, READY_TIMEOUT)?;
    }
    Ok(())
}

fn start_many(nodes: &mut [&mut TestNode]) -> Result<()> {
    for node in nodes.iter_mut() {
        node.spawn()?;
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    for node in nodes.iter_mut() {
        let mut tries = 0;
        loop {
            match node.wait_up(deadline) {
                Ok(()) => break,
                Err(e) if tries < 3 && node.port_clash() => {
                    tries += 1;
                    eprintln!(
                        "Tahoe node {}: port clash, retrying on new ports ({e})",
                        node.name
                    );
                    node.kill();
                    node.reassign_ports()?;
                    node.spawn()?;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// `n` distinct free loopback ports (all bound at once so they differ; freed
/// before returning, so another process may still take one: the caller
/// retries on a clash).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .map_err(|e| err(format!("finding free ports: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| err(format!("finding free ports: {e}")))
}

/// `GET /?t=json` over a plain HTTP/1.0 socket: the fixture stays free of
/// any async runtime, so it works from sync and async tests alike.
fn http_get_json(port: u16) -> std::io::Result<Vec<u8>> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET /?t=json HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(std::io::Error::other(format!("HTTP status {status}")));
    }
    Ok(buf[split + 4..].to_vec())
}

/// Removes `$TMPDIR/mf-tahoe-<pid>-*` directories of processes that are gone
/// (their nodes exited with them). Only on systems with `/proc`.
fn sweep_stale_roots() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("mf-tahoe-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A local Magic Wormhole mailbox server (`magic-wormhole-mailbox-server`
/// from the venv, run by `twistd`), for invite tests: never a public relay.
/// Killed on drop.
pub struct MailboxServer {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl MailboxServer {
    /// Starts one on a free loopback port and waits until it accepts
    /// connections (a condition with a generous deadline, not a sleep).
    pub fn start() -> Result<MailboxServer> {
        MailboxServer::start_with(&[])
    }

    /// [`MailboxServer::start`] with extra `wormhole-mailbox` options (such
    /// as `--motd=…` or `--signal-error=…`).
    pub fn start_with(extra: &[&str]) -> Result<MailboxServer> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let twistd = venv_executable("twistd")?;
        let dir = std::env::temp_dir().join(format!(
            "mf-mailbox-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).map_err(|e| err(format!("mailbox server directory: {e}")))?;
        let mut child = Command::new(&twistd)
            // -n: stay in the foreground; no pid file; log to stdout.
            .args(["-n", "--pidfile=", "--logfile=-", "wormhole-mailbox"])
            // Port 0: the server picks a free port and logs it, so no other
            // test can take it between our choice and its bind.
            .arg("--port=tcp:0:interface=127.0.0.1")
            .arg(format!(
                "--channel-db={}",
                dir.join("channel.sqlite").display()
            ))
            .args(extra)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("starting {}: {e}", twistd.display())))?;
        // Its log is read on threads (so the pipes never fill up and block
        // the server); the first "… starting on PORT" names the port.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("piped")),
            Box::new(child.stderr.take().expect("piped")),
        ];
        for pipe in pipes {
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let deadline = Duration::from_secs(120);
        let started = Instant::now();
        let mut log = Vec::new();
        let port = loop {
            match rx.recv_timeout(deadline.saturating_sub(started.elapsed())) {
                Ok(line) => {
                    let port = line
                        .split_once("starting on ")
                        .and_then(|(_, rest)| rest.trim().parse::<u16>().ok());
                    log.push(line);
                    if let Some(port) = port {
                        break port;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    return Err(err(format!(
                        "the mailbox server did not start within {deadline:?} ({status:?}); its log:\n{}",
                        log.join("\n")
                    )));
                }
            }
        };
        // Keep draining the log.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        let server = MailboxServer {
            child,
            url: format!("ws://127.0.0.1:{port}/v1"),
            dir,
        };
        // The port is bound once logged; still, wait until it accepts.
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > deadline {
                return Err(err(format!(
                    "the mailbox server on port {port} never accepted"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// Its URL, `ws://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills the server now (to test a dropped connection).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MailboxServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
