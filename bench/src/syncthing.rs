//! Syncthing in the same run as our daemons: two `syncthing` instances
//! (the binary on `PATH`; `scripts/bench-setup.sh` installs Debian's
//! 1.19.2), alice and bob, sharing one folder on this machine.
//!
//! Each device gets its keys, a fresh API key and a `config.xml` from
//! `syncthing generate`, its ID from `syncthing serve --device-id`; that
//! config is then edited here before the first start (no REST calls to
//! configure, so nothing can half-apply):
//!
//! * sync on `tcp://127.0.0.1:PORT` only, each device given the other's
//!   address and ID (so they connect at once, with no discovery);
//! * global and local discovery, relays, NAT traversal, usage and crash
//!   reporting and automatic upgrades off: nothing leaves this machine;
//! * the GUI/REST API on 127.0.0.1 (plain HTTP), with the generated key;
//! * one folder, [`FOLDER`], type `sendreceive`, shared by both devices,
//!   "tuned": the file-system watcher on with a 1 s delay (default 10 s),
//!   the full rescan at its default (1 h). The folder and the peer device
//!   are made from the defaults for new ones that the generated config
//!   holds, so everything else is at Syncthing's defaults (it lowers its
//!   own CPU priority, keeps 10 conflict copies, …, as it does for users).
//!
//! Each instance runs as one process (`STMONITORED=yes`: no monitor process
//! in front), so the pid whose CPU and RSS are read from `/proc` is the
//! process that syncs.
//!
//! A [`Device`] is a [`Daemon`]: the workloads start, stop, sample and ask
//! it exactly as they do our daemon. "Up to date" is what Syncthing's API
//! says: connected to the other device, the folder scanned since this start
//! and `idle` with nothing needed (`/rest/db/status`), and the other
//! device's copy complete as far as this one knows (`/rest/db/completion`).

use std::fs;
use std::net::TcpListener;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::world::{http_get, open_log, spawn_ready, terminate, Daemon, FOLDER};

/// What a Syncthing cell says when the binary is missing.
pub const NOT_INSTALLED: &str = "not installed (scripts/bench-setup.sh)";

/// Fixed loopback ports (sync, GUI/REST) of alice and bob: distinct from
/// Syncthing's defaults (22000, 8384), so a user's own instance is left
/// alone.
const PORTS: [(u16, u16); 2] = [(22101, 28401), (22102, 28402)];

/// The file-system watcher's delay, seconds: the "tuned" setting.
const WATCHER_DELAY_S: u32 = 1;

/// The installed Syncthing's version line, or `None` if there is none.
pub fn version() -> Option<String> {
    let out = Command::new("syncthing").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The devices' names, in [`PORTS`] order.
const NAMES: [&str; 2] = ["alice", "bob"];

/// Two devices under `root` (`alice/`, `bob/`) that know each other and
/// share [`FOLDER`]; neither is started.
pub fn pair(root: &Path) -> Result<[Device; 2]> {
    let mut ids = Vec::new();
    for name in NAMES {
        let home = root.join(name).join("home");
        fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        syncthing(&[
            "generate",
            "--no-default-folder",
            "--home",
            path_str(&home)?,
        ])?;
        let id = syncthing(&["serve", "--device-id", "--home", path_str(&home)?])?;
        ids.push(id.trim().to_owned());
    }
    Ok([device(root, 0, &ids)?, device(root, 1, &ids)?])
}

/// Device number `me` of [`pair`], configured; `ids` are both devices' IDs.
fn device(root: &Path, me: usize, ids: &[String]) -> Result<Device> {
    let peer = 1 - me;
    let base = root.join(NAMES[me]);
    let home = base.join("home");
    let dir = base.join("folder");
    // The marker Syncthing expects in a folder it syncs, made here so that
    // a folder filled before the first start is taken as it is.
    fs::create_dir_all(dir.join(".stfolder"))?;
    let config_path = home.join("config.xml");
    let generated = fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let (sync_port, api_port) = PORTS[me];
    let api = format!("127.0.0.1:{api_port}");
    let gui = find_element(&generated, "<gui ", "</gui>", 0)?;
    let api_key = text_of(&generated[gui], "apikey")?.to_owned();
    let settings = Settings {
        folder_path: path_str(&dir)?,
        peer_id: &ids[peer],
        peer_name: NAMES[peer],
        peer_port: PORTS[peer].0,
        sync_port,
        api: &api,
    };
    fs::write(&config_path, configure(&generated, &settings)?)?;
    Ok(Device {
        name: NAMES[me].to_owned(),
        home,
        dir,
        log: base.join("syncthing.log"),
        sync_port,
        api,
        api_key,
        peer_id: ids[peer].clone(),
        child: None,
        last_scan_at_stop: None,
    })
}

/// What [`configure`] sets.
struct Settings<'a> {
    folder_path: &'a str,
    peer_id: &'a str,
    peer_name: &'a str,
    peer_port: u16,
    sync_port: u16,
    /// `host:port` of the GUI/REST API.
    api: &'a str,
}

/// The options set (see the module documentation), the listen address
/// aside.
const OPTIONS: [(&str, &str); 8] = [
    ("globalAnnounceEnabled", "false"),
    ("localAnnounceEnabled", "false"),
    ("relaysEnabled", "false"),
    ("natEnabled", "false"),
    ("startBrowser", "false"),
    ("urAccepted", "-1"),
    ("crashReportingEnabled", "false"),
    ("autoUpgradeIntervalH", "0"),
];

/// The `config.xml` that `syncthing generate` wrote, configured: the
/// shared folder and the peer device are made from the `<defaults>` it
/// holds (a folder or device written without them gets zeros, not
/// Syncthing's defaults: no conflict copies kept, for one), then the
/// settings of the module documentation applied.
fn configure(generated: &str, s: &Settings) -> Result<String> {
    let defaults = find_element(generated, "<defaults>", "</defaults>", 0)?;
    let folder = find_element(generated, "<folder ", "</folder>", defaults.start)?;
    let device = find_element(generated, "<device ", "</device>", folder.end)?;

    // The default folder is shared with this device only: add the peer.
    let mut shared = generated[folder].to_owned();
    for (name, value) in [
        ("id", FOLDER),
        ("label", FOLDER),
        ("path", s.folder_path),
        ("type", "sendreceive"),
        ("fsWatcherEnabled", "true"),
        ("fsWatcherDelayS", &WATCHER_DELAY_S.to_string()),
    ] {
        shared = with_attr(&shared, name, value)?;
    }
    let mine = find_element(&shared, "<device ", "</device>", 0)?;
    let theirs = with_attr(&shared[mine.clone()], "id", s.peer_id)?;
    shared.insert_str(mine.end, &format!("\n            {theirs}"));

    let peer = with_attr(&generated[device], "id", s.peer_id)?;
    let peer = with_attr(&peer, "name", s.peer_name)?;
    let peer = with_text(
        &peer,
        "address",
        &format!("tcp://127.0.0.1:{}", s.peer_port),
    )?;

    let gui = find_element(generated, "<gui ", "</gui>", 0)?;
    let options = find_element(generated, "<options>", "</options>", 0)?;
    if gui.end > options.start {
        bail!("Syncthing's config has <options> before <gui>");
    }
    let listen = format!("tcp://127.0.0.1:{}", s.sync_port);
    let mut tuned = with_text(&generated[options.clone()], "listenAddress", &listen)?;
    for (tag, value) in OPTIONS {
        tuned = with_text(&tuned, tag, value)?;
    }
    Ok([
        &generated[..gui.start],
        &shared,
        "\n    ",
        &peer,
        "\n    ",
        &with_text(&generated[gui.clone()], "address", s.api)?,
        &generated[gui.end..options.start],
        &tuned,
        &generated[options.end..],
    ]
    .concat())
}

/// The byte range of the first element of `xml[from..]` that starts with
/// `open` (`<folder `) and ends with the first `close` after it
/// (`</folder>`). The elements looked for here hold no element of their
/// own kind.
fn find_element(xml: &str, open: &str, close: &str, from: usize) -> Result<Range<usize>> {
    let missing = || format!("no {open}…{close} in Syncthing's config");
    let start = from + xml[from..].find(open).with_context(missing)?;
    let end = start + xml[start..].find(close).with_context(missing)? + close.len();
    Ok(start..end)
}

/// The text of `element`'s first `<tag>` child.
fn text_of<'a>(element: &'a str, tag: &str) -> Result<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let r = find_element(element, &open, &close, 0)?;
    Ok(&element[r.start + open.len()..r.end - close.len()])
}

/// `element` with the text of its first `<tag>` child set to `value`.
fn with_text(element: &str, tag: &str, value: &str) -> Result<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let r = find_element(element, &open, &close, 0)?;
    Ok(format!(
        "{}{open}{}{close}{}",
        &element[..r.start],
        xml_escape(value),
        &element[r.end..]
    ))
}

/// `element` with attribute `name` of its opening tag set to `value`
/// (added if missing).
fn with_attr(element: &str, name: &str, value: &str) -> Result<String> {
    let tag_end = element.find('>').context("no tag in Syncthing's config")?;
    let (tag, rest) = element.split_at(tag_end);
    let key = format!(" {name}=\"");
    let value = xml_escape(value);
    Ok(match tag.find(&key) {
        Some(i) => {
            let from = i + key.len();
            let to = from + tag[from..].find('"').context("unterminated attribute")?;
            format!("{}{value}{}{rest}", &tag[..from], &tag[to..])
        }
        None => format!("{tag} {name}=\"{value}\"{rest}"),
    })
}

/// Runs `syncthing` with `args` to completion; its stdout.
fn syncthing(args: &[&str]) -> Result<String> {
    let out = Command::new("syncthing")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running syncthing")?;
    if !out.status.success() {
        bail!(
            "`syncthing {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// Escapes text for an XML attribute or element.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One Syncthing instance: its home (config, keys, database), its folder,
/// maybe a running process.
pub struct Device {
    name: String,
    home: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    sync_port: u16,
    /// `host:port` of the REST API.
    api: String,
    /// The key Syncthing generated for its API.
    api_key: String,
    /// The other device's ID.
    peer_id: String,
    child: Option<Child>,
    /// The folder's `lastScan` when this device was last stopped: a scan
    /// since the next start shows as a different value (Syncthing keeps the
    /// figure in its database across restarts).
    last_scan_at_stop: Option<String>,
}

impl Device {
    /// GET `path` from the REST API, as JSON; `None` if it does not answer.
    fn rest(&self, path: &str) -> Option<Value> {
        let body = http_get(&self.api, path, &format!("X-API-Key: {}", self.api_key))?;
        serde_json::from_str(&body).ok()
    }

    /// The folder's `/rest/db/status`.
    fn folder_status(&self) -> Option<Value> {
        self.rest(&format!("/rest/db/status?folder={FOLDER}"))
    }

    /// When the folder was last scanned, as Syncthing reports it.
    fn last_scan(&self) -> Option<String> {
        let stats = self.rest("/rest/stats/folder")?;
        stats[FOLDER]["lastScan"].as_str().map(str::to_owned)
    }
}

impl Daemon for Device {
    fn name(&self) -> &str {
        &self.name
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn log(&self) -> &Path {
        &self.log
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is already running", self.name);
        }
        // A port still held (by an instance of an aborted run, say) would
        // leave the API answering for another process: say so now.
        for addr in [format!("127.0.0.1:{}", self.sync_port), self.api.clone()] {
            TcpListener::bind(&addr).with_context(|| format!("{}: {addr} is in use", self.name))?;
        }
        let log = open_log(&self.log)?;
        let mut cmd = Command::new("syncthing");
        cmd.args(["serve", "--no-browser", "--no-restart", "--no-upgrade"])
            .arg("--home")
            .arg(&self.home)
            // Run the syncing process itself, without the monitor process
            // that 1.19 otherwise puts in front of it (even with
            // --no-restart): the pid sampled for CPU and RSS is then the one
            // doing the work, and the monitor's own ~16 MiB are not counted.
            .env("STMONITORED", "yes")
            .env("STNOUPGRADE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_ready(&mut cmd, &self.name, &self.log, || {
            self.rest("/rest/system/ping").is_some()
        })?;
        self.child = Some(child);
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        self.last_scan_at_stop = self.last_scan();
        let status = terminate(child, &self.name)?;
        // Syncthing exits with 0 on SIGTERM, or dies of the signal if it
        // came before its handler was set up.
        if !status.success() && std::os::unix::process::ExitStatusExt::signal(&status).is_none() {
            bail!("{}: syncthing exited with {status}", self.name);
        }
        Ok(())
    }

    fn up_to_date(&self) -> bool {
        let idle = self.folder_status().is_some_and(|s| {
            s["state"] == "idle" && s["needTotalItems"] == 0 && s["pullErrors"] == 0
        });
        idle && self
            .last_scan()
            .is_some_and(|t| !t.starts_with("0001-") && Some(&t) != self.last_scan_at_stop.as_ref())
            && self
                .rest("/rest/system/connections")
                .is_some_and(|c| c["connections"][&self.peer_id]["connected"] == true)
            && self
                .rest(&format!(
                    "/rest/db/completion?folder={FOLDER}&device={}",
                    self.peer_id
                ))
                .is_some_and(|c| c["completion"].as_f64() == Some(100.0) && c["needItems"] == 0)
    }

    /// Scanning, waiting to scan or pulling.
    fn busy_with_local_changes(&self) -> Option<bool> {
        Some(self.folder_status()?["state"] != "idle")
    }

    /// Syncthing's are `<stem>.sync-conflict-<date>-<time>-<device><.ext>`.
    fn is_conflict_copy(&self, name: &str, of: &str) -> bool {
        let (stem, ext) = match of.rfind('.') {
            Some(i) if i > 0 => of.split_at(i),
            _ => (of, ""),
        };
        name.strip_prefix(stem)
            .and_then(|rest| rest.strip_suffix(ext))
            .is_some_and(|middle| middle.starts_with(".sync-conflict-"))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
