//! magic-folder 24.3's own client, `magic-folder-api` (from PyPI, installed
//! beside Tahoe by `scripts/tahoe-venv.sh`), drives our daemon unchanged:
//! it finds it through 24.3's discovery files, and every route it calls
//! answers in 24.3's shapes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use mf_grid::tahoe::testgrid::venv_executable;
use mf_grid::tahoe::TahoeGrid;
use mf_grid::{read_only, Grid};

/// `magic-folder-api --config CONFIG ARGS…`.
fn api(config: &Path, args: &[&str]) -> Output {
    let bin = venv_executable("magic-folder-api").expect("magic-folder-api is installed");
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("magic-folder-api runs")
}

fn api_ok(config: &Path, args: &[&str]) -> String {
    let out = api(config, args);
    assert!(
        out.status.success(),
        "magic-folder-api {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn magic_folder_api_of_24_3_drives_our_daemon() {
    let w = World::tahoe();
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();
    alice.write("docs/a.txt", b"from alice");
    wait_until("bob has a.txt", &[&alice, &bob], || {
        bob.read("docs/a.txt").is_some()
    });
    let cfg = alice.config.clone();

    // Scan and poll now.
    api_ok(&cfg, &["scan", "--folder", FOLDER]);
    api_ok(&cfg, &["poll", "--folder", FOLDER]);

    // File status, in 24.3's shape.
    let files = json(&api_ok(&cfg, &["file-status", "--folder", FOLDER]));
    let a = files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["relpath"] == "docs/a.txt")
        .unwrap_or_else(|| panic!("{files}"));
    assert_eq!(a["size"], 10, "{a}");
    assert!(a["mtime"].is_i64() && a["last-updated"].is_i64(), "{a}");

    // What the folder occupies, as 24.3 lists it: docs/'s snapshot and
    // metadata, then a.txt's snapshot, metadata and content (10 bytes).
    let (url, token) = alice.api();
    let (code, body) = http(
        &url,
        "GET",
        &format!("/v1/magic-folder/{FOLDER}/tahoe-objects"),
        Some(&token),
    );
    assert_eq!(code, 200, "{body}");
    let sizes: Vec<u64> = serde_json::from_str(&body).unwrap();
    assert_eq!(sizes.len(), 5, "{sizes:?}");
    assert!(sizes[3] > 100 && sizes[4] == 10, "{sizes:?}");

    // Participants: list, add one by its read capability, refuse a second time.
    let parts = json(&api_ok(&cfg, &["list-participants", "--folder", FOLDER]));
    assert!(
        parts["alice"]["personal_dmd"].is_string() && parts["bob"]["personal_dmd"].is_string(),
        "{parts}"
    );
    let node: TahoeGrid = alice.tahoe_node().grid().unwrap();
    let carol_dmd = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let write = rt.block_on(node.create_mutable_dir()).unwrap();
        read_only(&write).unwrap()
    };
    let add = |config: &Path, name: &str| {
        api(
            config,
            &[
                "add-participant",
                "--folder",
                FOLDER,
                "--author-name",
                name,
                "--personal-dmd",
                carol_dmd.as_str(),
            ],
        )
    };
    assert!(add(&cfg, "carol").status.success());
    let parts = json(&api_ok(&cfg, &["list-participants", "--folder", FOLDER]));
    assert_eq!(
        parts["carol"]["personal_dmd"],
        carol_dmd.as_str(),
        "{parts}"
    );
    let again = add(&cfg, "carol");
    assert_eq!(again.status.code(), Some(2), "an API error, as JSON");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("Already have a participant"), "{err}");
    // bob is no admin: he cannot add anyone.
    let denied = add(&bob.config, "dave");
    assert_eq!(denied.status.code(), Some(2));

    // Conflicts: none.
    assert_eq!(
        json(&api_ok(&cfg, &["list-conflicts", "--folder", FOLDER])),
        serde_json::json!({})
    );

    // The status WebSocket: the state first, then events as they happen.
    let first = json(api_ok(&cfg, &["monitor", "--once"]).trim());
    let kinds: Vec<&str> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"folder-added"), "{first}");
    assert_eq!(kinds.last(), Some(&"tahoe-connection-changed"), "{first}");
    assert!(
        kinds.contains(&"scan-completed") && kinds.contains(&"poll-completed"),
        "{first}"
    );
    let mut monitor = Command::new(venv_executable("magic-folder-api").unwrap())
        .arg("--config")
        .arg(&cfg)
        .arg("monitor")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = monitor.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let snapshot = lines.recv_timeout(alice.timeout).expect("the first frame");
    assert!(snapshot.contains("folder-added"), "{snapshot}");

    // Our daemon goes on syncing with the new (empty) participant listed,
    // and the monitor sees the download.
    bob.write("from-bob.txt", b"hello");
    wait_until("alice has bob's file", &[&alice, &bob], || {
        alice.read("from-bob.txt").is_some()
    });
    let deadline = std::time::Instant::now() + alice.timeout;
    let mut seen = Vec::new();
    let downloaded = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            break false;
        };
        let frame = json(&line);
        if frame["events"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "download-finished"
                && e["relpath"] == "from-bob.txt"
                && e["folder"] == FOLDER
        }) {
            break true;
        }
        seen.push(line);
    };
    assert!(downloaded, "no download-finished event; frames: {seen:?}");
    let _ = monitor.kill();
    let _ = monitor.wait();

    // 24.3's own CLI adds and leaves a folder through our daemon's API.
    let mf = venv_executable("magic-folder").unwrap();
    let third = w.tmp.path().join("third");
    std::fs::create_dir_all(&third).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&mf)
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "magic-folder {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "add",
        "--name",
        "third",
        "--author",
        "alice",
        "--poll-interval",
        "5",
        third.to_str().unwrap(),
    ]);
    let (url, token) = alice.api();
    let (_, body) = http(&url, "GET", "/v1/magic-folder", Some(&token));
    let listed = json(&body);
    assert_eq!(listed["third"]["poll_interval"], 5, "{listed}");
    assert_eq!(listed["third"]["is_admin"], true, "{listed}");
    run(&[
        "leave",
        "--name",
        "third",
        "--really-delete-write-capability",
    ]);
    let (_, body) = http(&url, "GET", "/v1/magic-folder", Some(&token));
    assert!(json(&body).get("third").is_none(), "{body}");

    // A stopped daemon is "not running" to 24.3's clients.
    alice.stop();
    let out = api(&cfg, &["scan", "--folder", FOLDER]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not running"), "{err}");
    bob.stop();
}

/// 24.3's `/experimental` invite routes, driven by its own client:
/// `create-invite` on one of our daemons, `accept-invite` on another (a
/// daemon that knows only its node), `await-invite`, `list-invites`, and a
/// cancelled invite that `await-invite` reports as cancelled.
#[test]
fn magic_folder_api_of_24_3_invites_through_our_daemons() {
    let w = World::tahoe();
    let mailbox = mf_grid::tahoe::testgrid::MailboxServer::start().expect("a mailbox server");
    let mut alice = w.admin("alice");
    alice.ok(&["init", "--mailbox", mailbox.url()]);
    alice.start();
    let mut bob = w.participant("bob");
    let node = bob.tahoe_node().dir().to_str().unwrap().to_owned();
    bob.ok(&["init", "--mailbox", mailbox.url(), "--tahoe", &node]);
    bob.start();
    let (a, b) = (alice.config.clone(), bob.config.clone());

    let invite = json(&api_ok(
        &a,
        &[
            "create-invite",
            "--folder",
            FOLDER,
            "--participant-name",
            "bob",
        ],
    ));
    let code = invite["wormhole-code"].as_str().unwrap().to_owned();
    let id = invite["id"].as_str().unwrap().to_owned();
    assert_eq!(invite["consumed"], false, "{invite}");
    std::fs::create_dir_all(&bob.dir).unwrap();
    let dir = bob.dir.to_str().unwrap().to_owned();
    api_ok(
        &b,
        &[
            "accept-invite",
            "--folder",
            FOLDER,
            "--code",
            &code,
            "--local-dir",
            &dir,
            "--author",
            "bob",
            "--poll-interval",
            "1",
            "--scan-interval",
            "60",
        ],
    );
    let done = json(&api_ok(
        &a,
        &["await-invite", "--folder", FOLDER, "--id", &id],
    ));
    assert_eq!(
        (&done["consumed"], &done["success"]),
        (&true.into(), &true.into()),
        "{done}"
    );
    let listed = json(&api_ok(&a, &["list-invites", "--folder", FOLDER]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == id.as_str()),
        "{listed}"
    );
    alice.write("hello.txt", b"through 24.3's invite routes");
    wait_until(
        "bob, joined through the API, syncs",
        &[&alice, &bob],
        || bob.read("hello.txt").is_some(),
    );

    // Cancelled before anyone came: awaiting it says so.
    let second = json(&api_ok(
        &a,
        &[
            "create-invite",
            "--folder",
            FOLDER,
            "--participant-name",
            "carol",
        ],
    ));
    let id2 = second["id"].as_str().unwrap().to_owned();
    api_ok(&a, &["cancel-invite", "--folder", FOLDER, "--invite", &id2]);
    let waited = api(&a, &["await-invite", "--folder", FOLDER, "--id", &id2]);
    assert!(!waited.status.success());
    let err = String::from_utf8_lossy(&waited.stderr);
    assert!(err.contains("cancelled"), "{err}");

    // A cancelled code, and a used one, are clear errors for whoever tries
    // them (after a short wait: the mailbox server cannot tell which).
    let carol = w.participant("carol");
    let dir = carol.dir.to_str().unwrap().to_owned();
    let node = carol.tahoe_node().dir().to_str().unwrap().to_owned();
    for used in [second["wormhole-code"].as_str().unwrap(), code.as_str()] {
        let err = carol.fails(&[
            "join",
            used,
            &dir,
            "--name",
            "late",
            "--author",
            "carol",
            "--tahoe",
            &node,
            "--mailbox",
            mailbox.url(),
            "--wait",
            "2s",
        ]);
        assert!(err.contains("nobody answered on this code"), "{err}");
    }
    assert!(carol.ok(&["list"]).contains("No magic folders"));
}

/// `GET /v1/snapshot`: a change noticed and not uploaded yet (here held
/// back by a long pending delay) is listed as 24.3 lists a local snapshot, and leaves the
/// list once the folder has taken it.
#[test]
fn local_changes_not_yet_uploaded_are_listed_as_24_3_local_snapshots() {
    let w = World::new();
    let mut alice = w.admin("alice");
    alice.ok(&["config", FOLDER, "--pending-delay", "1h"]);
    alice.start();
    alice.write("waiting.txt", b"not uploaded yet");
    // Noticed now (the watcher would report it after the pending delay).
    alice.ok(&["scan", FOLDER]);
    let (url, token) = alice.api();
    let listed = || {
        let (code, body) = http(&url, "GET", "/v1/snapshot", Some(&token));
        assert_eq!(code, 200, "{body}");
        json(&body)
    };
    let mut snapshot = serde_json::Value::Null;
    wait_until("the change is listed", &[&alice], || {
        snapshot = listed()[FOLDER]["waiting.txt"][0].clone();
        !snapshot.is_null()
    });
    assert_eq!(snapshot["type"], "local", "{snapshot}");
    assert_eq!(snapshot["author"]["name"], "alice", "{snapshot}");
    assert_eq!(
        snapshot["content-path"]
            .as_str()
            .map(std::path::PathBuf::from),
        Some(alice.path("waiting.txt")),
        "{snapshot}"
    );
    assert_eq!(snapshot["identifier"].as_str().unwrap().len(), 36);
    alice.ok(&["config", FOLDER, "--pending-delay", "100ms"]);
    wait_until(
        "the change is uploaded and leaves the list",
        &[&alice],
        || alice.idle() && listed()[FOLDER].as_object().is_some_and(|m| m.is_empty()),
    );
}

/// A Magic Wormhole peer (Python's client) that offers `versions`, prints
/// its code, and, after the key exchange, goes away without a word.
fn python_inviter(mailbox: &str, versions: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let script = format!(
        r#"
import json, sys
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import react
import wormhole

@inlineCallbacks
def main(reactor):
    w = wormhole.create("private.storage/magic-folder/invites", "{mailbox}", reactor,
                        versions=json.loads('{versions}'))
    w.allocate_code(2)
    print((yield w.get_code()), flush=True)
    yield w.get_versions()
    yield w.close()

react(main)
"#
    );
    let mut child = Command::new(venv_executable("python").unwrap())
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut code = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut code)
        .unwrap();
    (child, code.trim().to_owned())
}

/// Joining over a wormhole whose other side is no magic-folder, or leaves
/// mid-invite, is a clear error and leaves no folder behind.
#[test]
fn a_wormhole_peer_that_is_no_magic_folder_or_leaves_is_a_clear_error() {
    let w = World::tahoe();
    let mailbox = mf_grid::tahoe::testgrid::MailboxServer::start().expect("a mailbox server");
    let bob = w.participant("bob");
    let dir = bob.dir.to_str().unwrap().to_owned();
    let node = bob.tahoe_node().dir().to_str().unwrap().to_owned();
    let join = |code: &str| {
        bob.fails(&[
            "join",
            code,
            &dir,
            "--name",
            FOLDER,
            "--author",
            "bob",
            "--tahoe",
            &node,
            "--mailbox",
            mailbox.url(),
            "--wait",
            "3s",
        ])
    };
    let (mut peer, code) = python_inviter(mailbox.url(), r#"{"file-transfer": {}}"#);
    let err = join(&code);
    assert!(
        err.contains("not a magic-folder that speaks invite-v1"),
        "{err}"
    );
    let _ = peer.kill();
    let _ = peer.wait();
    let (mut peer, code) = python_inviter(
        mailbox.url(),
        r#"{"magic-folder": {"supported-messages": ["invite-v1"]}}"#,
    );
    let err = join(&code);
    assert!(err.contains("went away mid-invite"), "{err}");
    let _ = peer.kill();
    let _ = peer.wait();
    assert!(bob.ok(&["list"]).contains("No magic folders"));
}
