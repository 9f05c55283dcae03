//! A real magic-folder 24.3 daemon (from PyPI, installed beside Tahoe by
//! `scripts/tahoe-venv.sh`) and ours in one folder on a local Tahoe-LAFS
//! grid, each participant on its own node, joined by 24.3's invite-v1 over
//! a local Magic Wormhole mailbox server, both ways. Fails, never skips,
//! if 24.3 cannot start.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mf_grid::tahoe::testgrid::{venv_executable, MailboxServer, TestNode};

/// A magic-folder 24.3 participant: its config, folder, node and daemon.
struct Py {
    config: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    daemon: Child,
    /// 24.3's `run` may exit when its stdin closes: held open.
    _stdin: ChildStdin,
    /// Its Tahoe node (stopped to take 24.3 offline).
    node: TestNode,
}

impl Py {
    fn start(w: &World, name: &str, mailbox: &str) -> Py {
        let node = w
            .test_grid()
            .add_client(name)
            .unwrap_or_else(|e| panic!("{name}: no Tahoe node: {e}"));
        let home = w.tmp.path().join(name);
        let config = home.join("config");
        let dir = home.join("folder");
        fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let node_dir = node.dir().to_str().unwrap().to_owned();
        let endpoint = format!("tcp:{port}:interface=127.0.0.1");
        let py = |args: &[&str]| {
            let out = mf24(&config, args);
            assert!(out.status.success(), "24.3 {args:?}: {}", text(&out));
        };
        py(&[
            "init",
            "--node-directory",
            &node_dir,
            "--listen-endpoint",
            &endpoint,
            "--mailbox",
            mailbox,
        ]);
        let log = home.join("daemon.log");
        let mut daemon = Command::new(venv_executable("magic-folder").unwrap())
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdin(Stdio::piped())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("magic-folder 24.3 runs");
        let stdin = daemon.stdin.take().unwrap();
        let p = Py {
            config,
            dir,
            log,
            daemon,
            _stdin: stdin,
            node,
        };
        // Up when its API answers.
        let deadline = Instant::now() + TAHOE_TIMEOUT;
        while !mf24(&p.config, &["list"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "24.3 did not start:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        // Its CLI's invite and join are behind this switch (its API is not).
        let out = mf24(&p.config, &["set-config", "--enable", "invites"]);
        assert!(out.status.success(), "24.3 set-config: {}", text(&out));
        p
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        fs::read(self.dir.join(rel)).ok()
    }

    /// Writes `rel` with an mtime `secs_ago` in the past, in one step (its
    /// scanner must not see the file between the write and the mtime: it
    /// would take them as two versions).
    fn write_aged(&self, rel: &str, content: &[u8], secs_ago: u64) {
        let staged = self.dir.with_file_name(format!("staged-{rel}"));
        fs::write(&staged, content).unwrap();
        set_mtime(&staged, secs_ago);
        fs::rename(&staged, self.dir.join(rel)).unwrap();
    }

    fn write(&self, rel: &str, content: &[u8]) {
        let path = self.dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// `magic-folder` (24.3) `--config CONFIG ARGS…`.
fn mf24(config: &Path, args: &[&str]) -> Output {
    Command::new(venv_executable("magic-folder").expect("magic-folder 24.3 is installed"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("magic-folder 24.3 runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until `cond`, showing both sides on a timeout.
fn wait(what: &str, ours: &[&Participant], py: &Py, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TAHOE_TIMEOUT;
    while !cond() {
        if Instant::now() > deadline {
            let log = py.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- 24.3's tree: {:?}\n--- 24.3's log (tail, newest first):\n{}",
                tree(&py.dir),
                tail.join("\n")
            );
            // Our side's report (trees, status, logs), then the panic.
            wait_until_for(what, Duration::ZERO, ours, &mut || false);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sets a file's mtime `secs_ago` seconds in the past.
fn set_mtime(path: &Path, secs_ago: u64) {
    let t = std::time::SystemTime::now() - Duration::from_secs(secs_ago);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// The size 24.3 records for a path it has uploaded or downloaded.
fn py_file_size(py: &Py, rel: &str) -> Option<u64> {
    let out = Command::new(venv_executable("magic-folder-api").unwrap())
        .arg("--config")
        .arg(&py.config)
        .args(["file-status", "--folder", FOLDER])
        .output()
        .unwrap();
    let files: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    files.as_array()?.iter().find(|f| f["relpath"] == rel)?["size"].as_u64()
}

/// Whether 24.3 holds a local snapshot of `rel` (an edit not uploaded yet).
fn py_local_snapshot(py: &Py, rel: &str) -> bool {
    let out = Command::new(venv_executable("magic-folder-api").unwrap())
        .arg("--config")
        .arg(&py.config)
        .args(["dump-state", "--folder", FOLDER])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let local = text
        .split("local snapshots:")
        .nth(1)
        .and_then(|rest| rest.split("remote snapshots:").next())
        .unwrap_or_default();
    local.contains(&format!("{rel}:"))
}

/// Both versions of `path` on both sides: 24.3 keeps its own in the file
/// and ours as `.conflict-alice`; we hold both, the ranked winner in the
/// file (usually ours, the later; 24.3 may have made two versions of its
/// edit, whose longer history then wins).
fn both_on_both_sides(
    alice: &Participant,
    py: &Py,
    path: &str,
    ours: &[u8],
    theirs: &[u8],
) -> bool {
    holds_both(&tree(&alice.dir), path, &[ours, theirs])
        && py.read(path).as_deref() == Some(theirs)
        && py.read(&format!("{path}.conflict-alice")).as_deref() == Some(ours)
}

/// Whether `tree` holds each of `versions` at `path` or in a conflict
/// copy of it, and nothing else there.
fn holds_both(tree: &Tree, path: &str, versions: &[&[u8]]) -> bool {
    let mut found: Vec<Vec<u8>> = tree
        .iter()
        .filter(|(k, _)| *k == path || k.starts_with(&format!("{path}.conflict-")))
        .filter_map(|(_, v)| match v {
            Node::File(b) => Some(b.clone()),
            Node::Dir => None,
        })
        .collect();
    let mut want: Vec<Vec<u8>> = versions.iter().map(|v| v.to_vec()).collect();
    found.sort();
    want.sort();
    found == want
}

/// Starts `cmd` and returns it with the first line it printed.
fn first_line(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// One of ours, invited by 24.3 (`magic-folder invite`) to its folder
/// `pyf` in `mode`, who joined with the code.
fn joined_through_24_3(w: &World, py: &Py, name: &str, mode: &str, mailbox: &str) -> Participant {
    let mut cmd = Command::new(venv_executable("magic-folder").unwrap());
    cmd.arg("--config")
        .arg(&py.config)
        .args(["invite", "--folder", "pyf", "--mode", mode, name]);
    let (inv, line) = first_line(&mut cmd);
    let code = line
        .trim()
        .strip_prefix("Secret invite code: ")
        .unwrap_or_else(|| panic!("24.3 invite printed {line:?}"))
        .to_owned();
    let p = w.participant(name);
    let dir = p.dir.to_str().unwrap().to_owned();
    let mut args = vec![
        "join",
        &code,
        &dir,
        "--name",
        "pyf",
        "--author",
        name,
        "--mailbox",
        mailbox,
    ];
    let grid = p.grid_args(w);
    args.extend(grid.iter().map(String::as_str));
    args.extend_from_slice(w.tuning());
    p.ok(&args);
    let invited = inv.wait_with_output().unwrap();
    assert!(invited.status.success(), "24.3 invite: {}", text(&invited));
    p
}

/// Starts `magic-folder invite … --wormhole --json` and returns it with the
/// code it printed first.
fn our_wormhole_invite(
    admin: &Participant,
    who: &str,
    mailbox: &str,
    read_only: bool,
) -> (Child, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(&admin.config).args([
        "invite",
        FOLDER,
        who,
        "--wormhole",
        "--mailbox",
        mailbox,
        "--json",
    ]);
    if read_only {
        cmd.arg("--read-only");
    }
    let (child, first) = first_line(&mut cmd);
    let v: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first:?}"));
    let code = v["wormhole-code"].as_str().unwrap().to_owned();
    (child, code)
}

#[test]
fn a_24_3_participant_and_ours_share_one_folder_both_ways() {
    let w = World::tahoe();
    let mailbox = MailboxServer::start().expect("a local mailbox server");
    let mut alice = w.admin("alice");
    let mut py = Py::start(&w, "py", mailbox.url());

    // Our invite, 24.3's join.
    let (invite, code) = our_wormhole_invite(&alice, "py", mailbox.url(), false);
    let py_dir = py.dir.to_str().unwrap().to_owned();
    let joined = mf24(
        &py.config,
        &[
            "join",
            "--name",
            FOLDER,
            "--author",
            "py",
            "--poll-interval",
            "1",
            "--scan-interval",
            "1",
            &code,
            &py_dir,
        ],
    );
    assert!(joined.status.success(), "24.3 join: {}", text(&joined));
    let invited = invite.wait_with_output().unwrap();
    assert!(invited.status.success(), "our invite: {}", text(&invited));
    alice.start();

    // Files both ways, nested, then edits. The largest file we carry in a
    // literal cap: 24.3 reads it by putting the cap in a URL.
    let literal = random_bytes(7, mf_grid::tahoe::LITERAL_MAX);
    alice.write("a.txt", b"from alice");
    alice.write("docs/deep/b.txt", b"nested, from alice");
    alice.write("literal.bin", &literal);
    py.write("c.txt", b"from 24.3");
    py.write("sub/d.txt", b"nested, from 24.3");
    wait("each side has the other's files", &[&alice], &py, || {
        py.read("a.txt").as_deref() == Some(b"from alice".as_slice())
            && py.read("docs/deep/b.txt").as_deref() == Some(b"nested, from alice".as_slice())
            && py.read("literal.bin").as_deref() == Some(literal.as_slice())
            && alice.read("c.txt").as_deref() == Some(b"from 24.3".as_slice())
            && alice.read("sub/d.txt").as_deref() == Some(b"nested, from 24.3".as_slice())
    });
    alice.write("a.txt", b"alice, edited");
    py.write("c.txt", b"24.3, edited");
    wait("edits arrive both ways", &[&alice], &py, || {
        py.read("a.txt").as_deref() == Some(b"alice, edited".as_slice())
            && alice.read("c.txt").as_deref() == Some(b"24.3, edited".as_slice())
    });

    // Deletions both ways, and an empty directory of ours (which 24.3 must
    // never take for a deletion), then a large file from 24.3.
    fs::remove_file(alice.path("a.txt")).unwrap();
    fs::create_dir_all(alice.path("empty")).unwrap();
    fs::remove_file(py.dir.join("c.txt")).unwrap();
    let big = random_bytes(24, 5 << 20);
    py.write("big.bin", &big);
    wait(
        "deletions and the large file arrive",
        &[&alice],
        &py,
        || {
            py.read("a.txt").is_none()
                && alice.read("c.txt").is_none()
                && alice.read("big.bin").as_deref() == Some(big.as_slice())
        },
    );
    // The directory's deletion stays away from 24.3 too.
    fs::remove_dir(alice.path("empty")).unwrap();
    alice.write("after.txt", b"still syncing");
    wait(
        "24.3 still receives after our directories",
        &[&alice],
        &py,
        || py.read("after.txt").as_deref() == Some(b"still syncing".as_slice()),
    );
    assert!(
        py.read("docs/deep/b.txt").is_some(),
        "24.3 kept the nested file"
    );

    // A conflict that 24.3's version wins here (it is the later one): ours
    // must still reach 24.3, and both versions end on both sides, alike.
    alice.write("conf.txt", b"base");
    wait("24.3 has conf.txt", &[&alice], &py, || {
        py.read("conf.txt").as_deref() == Some(b"base".as_slice())
    });
    alice.stop();
    alice.write("conf.txt", b"alice's edit");
    set_mtime(&alice.path("conf.txt"), 100);
    py.write("conf.txt", b"24.3's edit");
    wait("24.3 uploaded its edit", &[&alice], &py, || {
        py_file_size(&py, "conf.txt") == Some(11)
    });
    alice.start();
    let both = |read: &dyn Fn(&str) -> Option<Vec<u8>>| {
        read("conf.txt").as_deref() == Some(b"24.3's edit".as_slice())
            && read("conf.txt.conflict-alice").as_deref() == Some(b"alice's edit".as_slice())
    };
    wait("both versions on both sides", &[&alice], &py, || {
        both(&|p| alice.read(p)) && both(&|p| py.read(p))
    });
    // And one that ours should win (it is the later one): 24.3 keeps its
    // own and writes ours as its copy; we keep both (see conf3 below).
    alice.write("conf2.txt", b"base");
    wait("24.3 has conf2.txt", &[&alice], &py, || {
        py.read("conf2.txt").as_deref() == Some(b"base".as_slice())
    });
    alice.stop();
    py.write_aged("conf2.txt", b"24.3's edit", 100);
    wait("24.3 uploaded its edit", &[&alice], &py, || {
        py_file_size(&py, "conf2.txt") == Some(11)
    });
    alice.write("conf2.txt", b"alice's edit");
    alice.start();
    wait(
        "both versions on both sides, each side its own in the file",
        &[&alice],
        &py,
        || both_on_both_sides(&alice, &py, "conf2.txt", b"alice's edit", b"24.3's edit"),
    );
    // And with 24.3 offline (its node down): it takes its edit as a local
    // snapshot, and once back uploads it before it takes in ours; ours is
    // the later one and wins here, 24.3 keeps its own: both on both sides.
    alice.write("conf3.txt", b"base");
    wait("24.3 has conf3.txt", &[&alice], &py, || {
        py.read("conf3.txt").as_deref() == Some(b"base".as_slice())
    });
    py.node.stop();
    py.write_aged("conf3.txt", b"24.3's offline edit", 100);
    wait("24.3 snapshots its edit locally", &[&alice], &py, || {
        py_local_snapshot(&py, "conf3.txt")
    });
    alice.write("conf3.txt", b"alice's edit");
    alice.wait_settled();
    py.node.start().expect("24.3's node restarts");
    wait(
        "both versions on both sides after 24.3 was offline",
        &[&alice],
        &py,
        || {
            both_on_both_sides(
                &alice,
                &py,
                "conf3.txt",
                b"alice's edit",
                b"24.3's offline edit",
            )
        },
    );
    // Other paths go on syncing both ways.
    alice.write("later.txt", b"after the conflict");
    py.write("later-py.txt", b"after the conflict, from 24.3");
    wait(
        "changes after the conflict arrive both ways",
        &[&alice],
        &py,
        || py.read("later.txt").is_some() && alice.read("later-py.txt").is_some(),
    );

    // 24.3's invite (to a folder it created: only the admin invites), our join.
    let py_own = py.dir.with_file_name("own");
    fs::create_dir_all(&py_own).unwrap();
    let added = mf24(
        &py.config,
        &[
            "add",
            "--name",
            "pyf",
            "--author",
            "py",
            "--poll-interval",
            "1",
            "--scan-interval",
            "1",
            py_own.to_str().unwrap(),
        ],
    );
    assert!(added.status.success(), "24.3 add: {}", text(&added));
    let mut bob = joined_through_24_3(&w, &py, "bob", "read-write", mailbox.url());
    bob.start();
    fs::write(py_own.join("from-py.txt"), b"24.3's own folder").unwrap();
    bob.write("from-bob.txt", b"bob joined through 24.3");
    wait("files cross in 24.3's folder", &[&bob], &py, || {
        bob.read("from-py.txt").as_deref() == Some(b"24.3's own folder".as_slice())
            && fs::read(py_own.join("from-bob.txt")).ok().as_deref()
                == Some(b"bob joined through 24.3".as_slice())
    });
    fs::remove_file(bob.path("from-bob.txt")).unwrap();
    wait("bob's deletion reaches 24.3", &[&bob], &py, || {
        !py_own.join("from-bob.txt").exists()
    });

    // A read-only participant, invited by 24.3: it receives everything,
    // and 24.3 records it (an empty immutable directory) as 24.3 does.
    let mut ro = joined_through_24_3(&w, &py, "ro", "read-only", mailbox.url());
    let listed: serde_json::Value =
        serde_json::from_str(&ro.ok(&["participants", "list", "pyf", "--json"])).unwrap();
    let me = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ro")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(me["mode"], "read-only", "{listed}");
    ro.start();
    fs::write(py_own.join("for-everyone.txt"), b"read me").unwrap();
    wait("the read-only participant receives", &[&ro], &py, || {
        ro.read("for-everyone.txt").as_deref() == Some(b"read me".as_slice())
    });

    // And ours read-only, taken by 24.3: it receives, and the collective
    // records it as 24.3 does (an empty immutable directory).
    let (invite, code) = our_wormhole_invite(&alice, "py-ro", mailbox.url(), true);
    let ro_dir = py.dir.with_file_name("ro");
    fs::create_dir_all(&ro_dir).unwrap();
    let joined = mf24(
        &py.config,
        &[
            "join",
            "--name",
            "ro-shared",
            "--author",
            "py",
            "--poll-interval",
            "1",
            "--scan-interval",
            "1",
            &code,
            ro_dir.to_str().unwrap(),
        ],
    );
    assert!(joined.status.success(), "24.3 join: {}", text(&joined));
    let invited = invite.wait_with_output().unwrap();
    assert!(invited.status.success(), "our invite: {}", text(&invited));
    let listed: serde_json::Value =
        serde_json::from_str(&alice.ok(&["participants", "list", FOLDER, "--json"])).unwrap();
    let ro = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "py-ro")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(ro["mode"], "read-only", "{listed}");
    alice.write("to-read-only.txt", b"for 24.3, read-only");
    wait("24.3's read-only folder receives", &[&alice], &py, || {
        fs::read(ro_dir.join("to-read-only.txt")).ok().as_deref()
            == Some(b"for 24.3, read-only".as_slice())
    });

    // 24.3 stayed healthy throughout: its polls still complete, and it
    // raised nothing but the one error it logs on every download of any
    // peer's file (its `perform_download`, magic_file.py:529, is an
    // `inline_callbacks` without a `yield`; two 24.3 peers log it alike),
    // and, on a busy machine, the one its status stream raises when its own
    // `magic-folder-api monitor --once` hangs up (status.py:565 removes the
    // client from a set it may not be in: `remove`, not `discard`).
    let polled = || -> f64 {
        let out = Command::new(venv_executable("magic-folder-api").unwrap())
            .arg("--config")
            .arg(&py.config)
            .args(["monitor", "--once"])
            .output()
            .unwrap();
        let frame: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        frame["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "poll-completed" && e["folder"] == FOLDER)
            .and_then(|e| e["timestamp"].as_f64())
            .unwrap_or_else(|| panic!("no poll-completed in {frame}"))
    };
    let first = polled();
    wait(
        "24.3 completes another poll of the shared folder",
        &[&alice],
        &py,
        || polled() > first,
    );
    let log = py.log_text();
    let unexpected: Vec<&str> = log
        .split("Traceback (most recent call last):")
        .skip(1)
        .filter(|t| !t.contains("'Deferred' object has no attribute 'send'"))
        .filter(|t| !(t.contains("in client_disconnected") && t.contains("KeyError")))
        .collect();
    assert!(
        unexpected.is_empty() && !log.contains("InvalidMangledPath"),
        "24.3 logged errors:\n{log}"
    );
}

/// A folder of the sharded layout is never a trap for 24.3, which cannot
/// read it: our wormhole invite refuses a 24.3 daemon (which is left out of
/// the collective and says the invite failed), and lets ours in, who
/// learns the layout from the folder.
#[test]
fn a_sharded_folder_refuses_24_3_and_admits_ours() {
    let w = World::tahoe().sharded();
    let mailbox = MailboxServer::start().expect("a local mailbox server");
    let alice = w.admin("alice");
    let py = Py::start(&w, "py", mailbox.url());

    let (invite, code) = our_wormhole_invite(&alice, "py", mailbox.url(), false);
    let py_dir = py.dir.to_str().unwrap().to_owned();
    let joined = mf24(
        &py.config,
        &["join", "--name", FOLDER, "--author", "py", &code, &py_dir],
    );
    assert!(!joined.status.success(), "24.3 joined: {}", text(&joined));
    // 24.3's CLI says only "error 500"; its daemon logs our reason.
    assert!(
        py.log_text().contains("sharded layout"),
        "24.3 is told why: {}",
        py.log_text()
    );
    let invited = invite.wait_with_output().unwrap();
    assert!(!invited.status.success(), "our invite: {}", text(&invited));
    assert!(
        text(&invited).contains("cannot read or write this folder's sharded layout"),
        "{}",
        text(&invited)
    );
    let members = alice.ok(&["participants", "list", FOLDER, "--json"]);
    assert!(!members.contains("\"py\""), "{members}");

    let (invite, code) = our_wormhole_invite(&alice, "bob", mailbox.url(), false);
    let bob = w.participant("bob");
    let dir = bob.dir.to_str().unwrap().to_owned();
    let mut args = vec!["join", &code, &dir, "--name", FOLDER, "--author", "bob"];
    args.extend(["--mailbox", mailbox.url()]);
    let grid = bob.grid_args(&w);
    args.extend(grid.iter().map(String::as_str));
    bob.ok(&args);
    let invited = invite.wait_with_output().unwrap();
    assert!(invited.status.success(), "our invite: {}", text(&invited));
    let list: serde_json::Value = serde_json::from_str(&bob.ok(&["list", "--json"])).unwrap();
    assert_eq!(list[FOLDER]["layout"], "sharded", "{list}");
}
