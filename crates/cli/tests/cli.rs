//! The command-line surface: every command's happy path and its clear
//! errors, the daemon's single-instance lock and the API's token check.
//! (Synchronisation itself is tested in `sync.rs`.)

mod common;

use common::*;
use std::fs;

#[test]
fn help_is_available_for_every_command() {
    let w = World::new();
    let p = w.participant("x");
    let top = p.ok(&["--help"]);
    for cmd in [
        "init",
        "create",
        "invite",
        "join",
        "leave",
        "list",
        "status",
        "resolve",
        "history",
        "restore",
        "deleted",
        "scan",
        "poll",
        "run",
        "service",
        "completions",
        "man",
    ] {
        assert!(top.contains(cmd), "top-level help lists {cmd}");
        let h = p.ok(&[cmd, "--help"]);
        assert!(h.contains("Usage:"), "{cmd} --help:\n{h}");
    }
    assert!(p.ok(&["--version"]).contains("magic-folder"));
}

/// A reader that stops reading (`magic-folder list --json | head`) ends
/// the command quietly: no panic, no backtrace, success.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let w = World::new();
    let p = w.participant("x");
    p.ok(&["init"]);
    for args in [&["list", "--json"][..], &["list"], &["status", "--json"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&p.config)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {}: {stderr}", out.status);
        assert!(stderr.is_empty(), "{args:?} said: {stderr}");
    }
}

#[test]
fn init_is_idempotent_and_private() {
    let w = World::new();
    let p = w.participant("x");
    assert!(p.ok(&["init"]).contains("Initialised"));
    assert!(p.ok(&["init"]).contains("already"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |path: &std::path::Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p.config), 0o700);
        assert_eq!(mode(&p.config.join("api_token")), 0o600);
    }
}

#[test]
fn commands_need_an_initialised_config() {
    let w = World::new();
    let p = w.participant("x");
    // Listing before `init` is not a mistake: there are no folders.
    assert!(p.ok(&["list"]).contains("No magic folders"));
    assert!(p.ok(&["status"]).contains("No magic folders"));
    assert_eq!(p.ok(&["list", "--json"]).trim(), "{}");
    for args in [
        &["status", "f"][..],
        &["leave", "f"],
        &["invite", "f", "bob"],
        &["run"],
    ] {
        let err = p.fails(args);
        assert!(err.contains("magic-folder init"), "{args:?}: {err}");
    }
}

#[test]
fn invite_join_list_leave_happy_path() {
    let w = World::new();
    let alice = w.admin("alice");
    let bob = w.joined(&alice, "bob");

    let list: serde_json::Value = serde_json::from_str(&alice.ok(&["list", "--json"])).unwrap();
    let f = &list[FOLDER];
    assert_eq!(f["participant"], "alice");
    assert_eq!(f["is_admin"], true);
    assert_eq!(f["grid"], "embedded");
    assert_eq!(f["poll_interval_ms"], 300);
    assert_eq!(
        f["local_path"].as_str().unwrap(),
        alice.dir.canonicalize().unwrap().to_str().unwrap()
    );
    assert!(
        !alice.ok(&["list", "--json"]).contains("URI:"),
        "list shows no capabilities"
    );

    let list: serde_json::Value = serde_json::from_str(&bob.ok(&["list", "--json"])).unwrap();
    assert_eq!(list[FOLDER]["participant"], "bob");
    assert_eq!(list[FOLDER]["is_admin"], false);
    assert!(bob.ok(&["list"]).contains("shared: "));

    // The folder config holds secrets: owner-only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let cfg = bob.config.join("folders").join(FOLDER).join("folder.json");
        assert_eq!(
            fs::metadata(cfg).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // The folder marker exists on both sides.
    assert!(alice.dir.join(".magic-folder").is_dir());
    assert!(bob.dir.join(".magic-folder").is_dir());

    // A second folder for bob under another name, from a second invite.
    let code = alice.ok(&["invite", FOLDER, "bob2"]).trim().to_owned();
    let other = w.tmp.path().join("bob-second");
    bob.ok(&[
        "join",
        &code,
        other.to_str().unwrap(),
        "--name",
        "second",
        "--author",
        "bob-two",
    ]);
    let list: serde_json::Value = serde_json::from_str(&bob.ok(&["list", "--json"])).unwrap();
    assert_eq!(list["second"]["participant"], "bob2");
    assert_eq!(list["second"]["author"], "bob-two");

    // Leaving keeps the files.
    bob.write("keep.txt", b"mine");
    let out = bob.ok(&["leave", FOLDER]);
    assert!(out.contains("not touched"), "{out}");
    assert_eq!(bob.read("keep.txt").as_deref(), Some(&b"mine"[..]));
    let list: serde_json::Value = serde_json::from_str(&bob.ok(&["list", "--json"])).unwrap();
    assert!(list.get(FOLDER).is_none());
    assert!(!bob.config.join("folders").join(FOLDER).exists());

    // The admin needs the explicit flag.
    let err = alice.fails(&["leave", FOLDER]);
    assert!(err.contains("--really-delete-write-capability"), "{err}");
    alice.ok(&["leave", FOLDER, "--really-delete-write-capability"]);
    assert!(alice.ok(&["list"]).contains("No magic folders"));
}

#[test]
fn bad_invite_codes_and_other_mistakes_are_clear_errors() {
    let w = World::new();
    let alice = w.admin("alice");
    let bob = w.participant("bob");
    let dir = bob.dir.to_str().unwrap().to_owned();

    let err = bob.fails(&["join", "not-a-code", &dir]);
    assert!(err.contains("not a Magic Folder invite code"), "{err}");
    let err = bob.fails(&["join", "mf-invite-v3:%%%garbage", &dir]);
    assert!(err.contains("damaged"), "{err}");
    let err = bob.fails(&["join", "mf-invite-v3:eyJmb28iOjF9", &dir]);
    assert!(err.contains("damaged"), "{err}");
    // The older codes carried a write capability: not taken any more.
    let err = bob.fails(&["join", "mf-invite-v2:eyJmb28iOjF9", &dir]);
    assert!(err.contains("another version"), "{err}");

    let code = alice.ok(&["invite", FOLDER, "bob"]).trim().to_owned();
    // One character changed in copying (anywhere): a clear error, no join.
    let mut edited = code.clone().into_bytes();
    let i = edited.len() / 2;
    edited[i] = if edited[i] == b'x' { b'y' } else { b'x' };
    let err = bob.fails(&["join", std::str::from_utf8(&edited).unwrap(), &dir]);
    assert!(err.contains("damaged"), "{err}");
    assert!(!bob.config.join("folders").exists(), "nothing was joined");
    let err = alice.fails(&["invite", FOLDER, "bob"]);
    assert!(err.contains("already invited"), "{err}");
    let err = alice.fails(&["invite", FOLDER, "alice"]);
    assert!(err.contains("already a participant"), "{err}");
    let err = alice.fails(&["invite", FOLDER, "bad name"]);
    assert!(err.contains("participant name"), "{err}");
    let err = alice.fails(&["invite", "nope", "carol"]);
    assert!(err.contains("no magic folder named"), "{err}");

    bob.ok(&["join", &code, &dir]);
    let err = bob.fails(&["join", &code, w.tmp.path().join("again").to_str().unwrap()]);
    assert!(err.contains("already exists"), "{err}");
    // Folders may not nest (checked before a code is used up).
    let fresh = alice
        .ok(&["invite", FOLDER, "bob-nested"])
        .trim()
        .to_owned();
    let nested = bob.dir.join("sub");
    let err = bob.fails(&["join", &fresh, nested.to_str().unwrap(), "--name", "nested"]);
    assert!(err.contains("overlaps"), "{err}");
    // A code works once: anyone else who tries it hears so.
    let carol = w.participant("carol");
    let carol_dir = carol.dir.to_str().unwrap().to_owned();
    let err = carol.fails(&["join", &code, &carol_dir]);
    assert!(err.contains("already used"), "{err}");
    // Bob is a participant once alice lets him in.
    let names = || alice.ok(&["participants", "list", FOLDER]);
    assert!(!names().contains("bob"), "{}", names());
    alice.ok(&["admit", FOLDER]);
    assert!(names().contains("bob"), "{}", names());
    // A cancelled code, and an expired one, are clear errors.
    let code = alice.ok(&["invite", FOLDER, "carol"]).trim().to_owned();
    alice.ok(&["invite", FOLDER, "carol", "--cancel"]);
    let err = carol.fails(&["join", &code, &carol_dir]);
    assert!(err.contains("cancelled"), "{err}");
    let code = alice
        .ok(&["invite", FOLDER, "carol", "--expires", "1s"])
        .trim()
        .to_owned();
    let expired = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < expired {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let err = carol.fails(&["join", &code, &carol_dir]);
    assert!(err.contains("expired"), "{err}");
    alice.ok(&["admit", FOLDER]);
    assert!(!names().contains("carol"), "{}", names());
    assert!(!carol.config.join("folders").join(FOLDER).exists());

    // Only the admin invites.
    let err = bob.fails(&["invite", FOLDER, "carol"]);
    assert!(err.contains("admin"), "{err}");

    // A file where a directory should be.
    let file = w.tmp.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    let err = alice.fails(&["create", "other", file.to_str().unwrap()]);
    assert!(err.contains("not a directory"), "{err}");
    let err = alice.fails(&[
        "create",
        "bad/name",
        w.tmp.path().join("d").to_str().unwrap(),
    ]);
    assert!(err.contains("bad folder name"), "{err}");
    let err = alice.fails(&["status", "nope"]);
    assert!(err.contains("no magic folder named"), "{err}");
    let err = alice.fails(&["create", "x", "d", "--poll-interval", "soon"]);
    assert!(err.contains("not a duration"), "{err}");

    // A corrupt folder config is named, not a crash.
    fs::write(
        alice
            .config
            .join("folders")
            .join(FOLDER)
            .join("folder.json"),
        b"{",
    )
    .unwrap();
    let err = alice.fails(&["list"]);
    assert!(err.contains("corrupt"), "{err}");
}

#[test]
fn run_refuses_to_start_twice() {
    let w = World::new();
    let mut alice = w.admin("alice");
    alice.start();
    let err = alice.fails(&["run"]);
    assert!(err.contains("already running"), "{err}");
    assert!(alice.is_running(), "the first daemon keeps running");
    alice.stop();
    assert!(
        !alice.config.join("api.url").exists(),
        "a clean stop removes api.url"
    );
    // After a kill -9 the lock is gone with the process.
    alice.start();
    alice.kill9();
    alice.start();
    alice.stop();
}

/// The daemon runs on jemalloc with the options of `allocator.rs`. Its
/// background thread, which returns freed pages while the daemon idles,
/// runs only if jemalloc read them: were the options' symbol misnamed
/// (say, by a new tikv-jemalloc-sys), jemalloc would fall back to its
/// defaults without a word, and an idle daemon would keep its bursts.
#[test]
fn the_daemon_allocates_with_jemalloc_purging_in_the_background() {
    let w = World::new();
    let mut alice = w.admin("alice");
    alice.start();
    let tasks = format!("/proc/{}/task", alice.pid().unwrap());
    let threads = || -> Vec<String> {
        fs::read_dir(&tasks)
            .unwrap()
            .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    };
    wait_until("jemalloc's background thread", &[&alice], || {
        threads().iter().any(|t| t == "jemalloc_bg_thd")
    });
    alice.stop();
}

/// Installing: shell completions and a manual page generated from the
/// commands, and a systemd user unit that runs the daemon on this config.
#[test]
fn completions_man_page_and_service_unit() {
    let w = World::new();
    let p = w.participant("x");
    let bash = p.ok(&["completions", "bash"]);
    assert!(
        bash.contains("_magic__folder()") && bash.contains("restore"),
        "{bash}"
    );
    assert!(p
        .ok(&["completions", "zsh"])
        .contains("#compdef magic-folder"));
    let man = p.ok(&["man"]);
    assert!(
        man.contains(".TH magic-folder"),
        "{}",
        &man[..man.len().min(300)]
    );

    p.ok(&["init"]);
    let xdg = w.tmp.path().join("xdg");
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&p.config)
        .args(["service", "install", "--no-enable", "--json"])
        .env("XDG_CONFIG_HOME", &xdg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = fs::read_to_string(xdg.join("systemd/user/magic-folder.service")).unwrap();
    let exec = format!(
        "ExecStart=\"{BIN}\" --config \"{}\" run",
        p.config.display()
    );
    assert!(unit.contains(&exec), "{unit}");
}

/// `--log-format json --log-file F`: the daemon appends one JSON object a
/// line to an owner-only file.
#[test]
fn the_log_can_be_json_in_a_file() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let alice = w.admin("alice");
    let log = w.tmp.path().join("daemon.jsonl");
    let mut daemon = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&alice.config)
        .args(["--log-format", "json", "--log-file"])
        .arg(&log)
        .arg("run")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    wait_until("the daemon logs to the file", &[&alice], || {
        lines = fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        !lines.is_empty()
    });
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert_eq!(
        fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn api_rejects_requests_without_the_token() {
    let w = World::new();
    let mut alice = w.admin("alice");
    alice.start();
    let (url, token) = alice.api();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let (code, body) = http(&url, "GET", "/v1/magic-folder", None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("reason"), "{body}");
    let (code, _) = http(&url, "GET", "/v1/magic-folder", Some("wrong-token"));
    assert_eq!(code, 401);
    let (code, _) = http(
        &url,
        "PUT",
        &format!("/v1/magic-folder/{FOLDER}/scan-local"),
        None,
    );
    assert_eq!(code, 401);

    let (code, body) = http(&url, "GET", "/v1/magic-folder", Some(&token));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[FOLDER]["participant"], "alice");
    let (code, body) = http(
        &url,
        "GET",
        &format!("/v1/magic-folder/{FOLDER}/status"),
        Some(&token),
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["running"], true);
    for action in ["scan-local", "poll-remote"] {
        let (code, body) = http(
            &url,
            "PUT",
            &format!("/v1/magic-folder/{FOLDER}/{action}"),
            Some(&token),
        );
        assert_eq!(code, 200, "{action}: {body}");
    }
    let (code, body) = http(&url, "GET", "/v1/magic-folder/nope/status", Some(&token));
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("reason"));
    alice.stop();
}

#[test]
fn status_works_with_and_without_the_daemon() {
    let w = World::new();
    let mut alice = w.admin("alice");
    let s = alice.status();
    assert_eq!(s["running"], false);
    assert_eq!(s["state"], "stopped");
    assert!(s["note"].as_str().unwrap().contains("run"), "{s}");

    alice.write("a.txt", b"a");
    alice.start();
    wait_until("alice uploaded a.txt", &[&alice], || {
        let s = alice.status();
        s["running"] == true && s["files"] == 1 && alice.idle() && s["last_scan"].is_u64()
    });
    // One word for "done": no client has to guess from the counters.
    wait_until("alice is up to date", &[&alice], || {
        alice.status()["state"] == "up-to-date"
    });
    let human = alice.ok(&["status"]);
    assert!(
        human.contains("1 file, 0 directories,")
            && human.contains("no conflicts")
            && human.contains("up to date"),
        "{human}"
    );
    alice.stop();

    let s = alice.status();
    assert_eq!(s["running"], false);
    assert!(s["note"].as_str().unwrap().contains("not running"), "{s}");
    assert_eq!(s["files"], 1);
    assert!(
        s["last_scan"].is_u64(),
        "the last scan time survives the daemon: {s}"
    );
}

#[test]
fn folders_added_while_the_daemon_runs_start_syncing() {
    let w = World::new();
    let mut alice = w.admin("alice");
    let mut bob = w.participant("bob");
    bob.ok(&["init"]);
    bob.start();
    alice.start();
    // Bob joins while his daemon already runs.
    let code = alice.ok(&["invite", FOLDER, "bob"]).trim().to_owned();
    let mut args = vec![
        "join".to_owned(),
        code,
        bob.dir.to_str().unwrap().to_owned(),
    ];
    args.extend(TUNING.iter().map(|s| s.to_string()));
    bob.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    alice.write("x.txt", b"hello");
    // Bob's file reaches alice only once her daemon has let him in (the
    // invite was written by the CLI, beside her running daemon).
    bob.write("from-bob.txt", b"hi");
    wait_tree(
        "the new folder syncs",
        &[&alice, &bob],
        &expect(&[("x.txt", Some(b"hello")), ("from-bob.txt", Some(b"hi"))]),
    );
    // And leaving stops it.
    bob.ok(&["leave", FOLDER]);
    wait_until("bob's daemon drops the folder", &[&bob], || {
        let (url, token) = bob.api();
        let (_, body) = http(&url, "GET", "/v1/magic-folder", Some(&token));
        body.trim() == "{}"
    });
    alice.write("y.txt", b"after");
    alice.wait_settled();
    assert!(bob.read("y.txt").is_none() && bob.read("x.txt").is_some());
    bob.stop();
    alice.stop();
}

#[test]
fn status_watch_shows_changes_as_they_happen() {
    use std::io::BufRead;
    let w = World::new();
    let mut alice = w.admin("alice");
    alice.start();
    let mut watch = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&alice.config)
        .args(["status", FOLDER, "--watch", "--json"])
        .env_remove("MAGIC_FOLDER_CONFIG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, frames) = std::sync::mpsc::channel::<serde_json::Value>();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let v: serde_json::Value =
                serde_json::from_str(&line).expect("one JSON document a line");
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let first = frames.recv_timeout(alice.timeout).expect("a first frame");
    assert_eq!(first[FOLDER]["running"], true, "{first}");
    alice.write("new.txt", b"hello");
    let deadline = std::time::Instant::now() + alice.timeout;
    let seen = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let frame = frames.recv_timeout(left).expect("frames keep coming");
        if frame[FOLDER]["files"] == 1 && frame[FOLDER]["state"] == "up-to-date" {
            break frame;
        }
    };
    assert_eq!(seen[FOLDER]["queued"], 0);
    // SIGTERM (as Ctrl-C) ends it cleanly.
    std::process::Command::new("kill")
        .args(["-TERM", &watch.id().to_string()])
        .status()
        .unwrap();
    assert!(watch.wait().unwrap().success());
    alice.stop();
}

#[test]
fn metrics_parse_with_the_reference_prometheus_parser() {
    let w = World::new();
    let mut alice = w.admin("alice");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let open = format!("127.0.0.1:{port}");
    alice.start_with(&["--metrics-listen", &open]);
    alice.write("a.txt", &random_bytes(1, 3000));
    wait_until("a.txt uploaded", &[&alice], || {
        alice.idle() && alice.status()["files"] == 1
    });
    let (url, token) = alice.api();
    assert_eq!(
        http(&url, "GET", "/metrics", None).0,
        401,
        "behind the token"
    );
    let (code, body) = http(&url, "GET", "/metrics", Some(&token));
    assert_eq!(code, 200, "{body}");
    // prometheus_client (the reference parser, from PyPI) reads every sample.
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;
    let out = venv_python(script, body.as_bytes());
    assert!(
        out.status.success(),
        "the parser refused it: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let value = |name: &str, label: (&str, &str)| -> f64 {
        samples[name]
            .as_array()
            .unwrap_or_else(|| panic!("no {name} in {samples}"))
            .iter()
            .find(|s| s[0][label.0] == label.1)
            .unwrap_or_else(|| panic!("no {name}{{{}={}}} in {samples}", label.0, label.1))[1]
            .as_f64()
            .unwrap()
    };
    let folder = ("folder", FOLDER);
    assert_eq!(value("magic_folder_files_uploaded_total", folder), 1.0);
    assert_eq!(value("magic_folder_bytes_uploaded_total", folder), 3000.0);
    assert_eq!(value("magic_folder_objects_queued", folder), 0.0);
    assert_eq!(value("magic_folder_files", folder), 1.0);
    assert_eq!(value("magic_folder_directories", folder), 0.0);
    assert_eq!(value("magic_folder_up_to_date", folder), 1.0);
    assert!(value("magic_folder_last_poll_age_seconds", folder) >= 0.0);
    assert!(value("magic_folder_operation_seconds_count", ("op", "upload")) >= 1.0);
    // The same without a token on the metrics-only loopback port, and
    // nothing else there.
    let open_url = format!("http://{open}");
    let (code, text) = http(&open_url, "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(text.contains("magic_folder_files_uploaded_total"), "{text}");
    assert_eq!(
        http(
            &open_url,
            "GET",
            &format!("/v1/magic-folder/{FOLDER}/status"),
            None
        )
        .0,
        404
    );
    alice.stop();
    let e = alice.fails(&["run", "--metrics-listen", "0.0.0.0:9"]);
    assert!(e.contains("loopback"), "{e}");
}

#[test]
fn folders_change_through_the_running_daemon_at_once() {
    let w = World::new();
    let mut alice = w.admin("alice");
    alice.start();
    let (url, token) = alice.api();
    let listing = || -> serde_json::Value {
        let (code, body) = http(&url, "GET", "/v1/magic-folder", Some(&token));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    // Created through the daemon: running when the command returns.
    let second = w.tmp.path().join("second");
    let grid = w.grid.to_str().unwrap().to_owned();
    let out = alice.ok(&[
        "create",
        "second",
        second.to_str().unwrap(),
        "--author",
        "alice",
        "--grid",
        &grid,
        "--json",
    ]);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["running"], true, "{info}");
    assert_eq!(listing()["second"]["running"], true, "{}", listing());
    // Retuned at once.
    let out = alice.ok(&["config", FOLDER, "--poll-interval", "7s", "--json"]);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["poll_interval_ms"], 7000, "{info}");
    assert_eq!(listing()[FOLDER]["poll_interval"], 7);
    // Left at once.
    alice.ok(&["leave", "second", "--really-delete-write-capability"]);
    assert!(listing().get("second").is_none(), "{}", listing());
    // Mistakes are clear, through the daemon as without it.
    let e = alice.fails(&["config", "nope", "--poll-interval", "1s"]);
    assert!(e.contains("nope"), "{e}");
    let e = alice.fails(&["leave", FOLDER]);
    assert!(e.contains("really-delete-write-capability"), "{e}");
    alice.stop();
    // Without a daemon the config changes directly.
    let out = alice.ok(&["config", FOLDER, "--scan-interval", "5m", "--json"]);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["scan_interval_ms"], 300_000, "{info}");
}
