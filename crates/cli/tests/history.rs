//! History and restore through the real binary: every version of a file is
//! read from the grid (also by a device that never synced), and a restore
//! is a new version that every participant gets.

mod common;

use common::*;

/// (id, kind) of each version `history` lists, newest first.
fn versions(p: &Participant, path: &str) -> Vec<(String, String, serde_json::Value)> {
    let out = p.ok(&["history", p.path(path).to_str().unwrap(), "--json"]);
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_owned(),
                v["kind"].as_str().unwrap().to_owned(),
                v.clone(),
            )
        })
        .collect()
}

#[test]
fn history_restore_and_deleted() {
    let w = World::new();
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();

    // Three versions, each seen by bob before the next, then a deletion.
    for v in [&b"one"[..], b"two", b"three"] {
        alice.write("notes.txt", v);
        wait_until("bob has the version", &[&alice, &bob], || {
            bob.read("notes.txt").as_deref() == Some(v)
        });
    }
    std::fs::remove_file(alice.path("notes.txt")).unwrap();
    wait_until("bob sees the deletion", &[&alice, &bob], || {
        bob.read("notes.txt").is_none()
    });

    // A device that joined now and never ran sees the whole history.
    let carol = w.joined(&alice, "carol");
    let hist = versions(&carol, "notes.txt");
    let kinds: Vec<&str> = hist.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["deleted", "file", "file", "file"], "{hist:?}");
    assert_eq!(hist[3].2["size"], 3, "the oldest is \"one\"");
    assert_eq!(
        hist[0].2["parents"][0], hist[1].0,
        "each version names its parent"
    );
    assert_eq!(hist[0].2["author"], "alice");

    // `deleted` lists it on a device that synced.
    let del: serde_json::Value = serde_json::from_str(&bob.ok(&["deleted", "--json"])).unwrap();
    assert_eq!(del[0]["path"], "notes.txt", "{del}");
    assert_eq!(del[0]["by"], "alice");

    // Undelete: the last version comes back, as a new version everyone gets.
    bob.ok(&["restore", bob.path("notes.txt").to_str().unwrap()]);
    wait_until("the restored file reaches alice", &[&alice, &bob], || {
        alice.read("notes.txt").as_deref() == Some(b"three")
    });
    let after = versions(&alice, "notes.txt");
    assert_eq!(after.len(), 5, "{after:?}");
    assert_eq!(
        after[0].2["parents"][0], hist[0].0,
        "restored on top of the deletion"
    );

    // An older version into another file of the folder.
    let oldest = &hist[3].0;
    alice.ok(&[
        "restore",
        alice.path("notes.txt").to_str().unwrap(),
        "--version",
        &oldest[..8],
        "--to",
        alice.path("notes-v1.txt").to_str().unwrap(),
    ]);
    wait_until("the old version reaches bob", &[&alice, &bob], || {
        bob.read("notes-v1.txt").as_deref() == Some(b"one")
    });
    assert_eq!(alice.read("notes.txt").as_deref(), Some(&b"three"[..]));

    // Bad input: clear errors, nothing written.
    let e = alice.fails(&[
        "restore",
        alice.path("notes.txt").to_str().unwrap(),
        "--version",
        "abcdef0123",
    ]);
    assert!(e.contains("has no version abcdef0123"), "{e}");
    let e = alice.fails(&[
        "restore",
        alice.path("notes.txt").to_str().unwrap(),
        "--version",
        "xyz",
    ]);
    assert!(e.contains("is not a version id"), "{e}");
    let outside = w.participant("mallory").dir.join("stolen.txt");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    let e = alice.fails(&[
        "restore",
        alice.path("notes.txt").to_str().unwrap(),
        "--version",
        &oldest[..8],
        "--to",
        outside.to_str().unwrap(),
    ]);
    assert!(e.contains("not inside any magic folder"), "{e}");
    assert!(!outside.exists());
    let e = alice.fails(&["history", alice.path("never-was.txt").to_str().unwrap()]);
    assert!(e.contains("no history"), "{e}");
    let e = alice.fails(&["restore", alice.path("notes.txt").to_str().unwrap()]);
    assert!(e.contains("is not deleted"), "{e}");

    // The same through the API, with paths relative to the folder.
    let (url, token) = alice.api();
    let (code, body) = http(
        &url,
        "GET",
        &format!("/v1/magic-folder/{FOLDER}/history?path=notes.txt"),
        Some(&token),
    );
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["versions"].as_array().unwrap().len(), 5, "{h}");
    let (code, body) = http(
        &url,
        "GET",
        &format!("/v1/magic-folder/{FOLDER}/deleted"),
        Some(&token),
    );
    assert_eq!((code, body.as_str()), (200, "[]"), "notes.txt is back");
    let restore = format!(
        r#"{{"path": "notes.txt", "version": "{}", "to": "via-api.txt"}}"#,
        &oldest[..8]
    );
    let (code, body) = http_json(
        &url,
        "POST",
        &format!("/v1/magic-folder/{FOLDER}/restore"),
        &token,
        &restore,
    );
    assert_eq!(code, 200, "{body}");
    wait_until("the API's restore reaches bob", &[&alice, &bob], || {
        bob.read("via-api.txt").as_deref() == Some(b"one")
    });
    for (method, path, body, want) in [
        ("GET", "history?path=../etc/passwd", "", 400),
        ("GET", "history?path=never-was.txt", "", 400),
        (
            "POST",
            "restore",
            r#"{"path": "notes.txt", "version": "abcdef0123"}"#,
            400,
        ),
        ("POST", "restore", r#"{"path": 7}"#, 400),
        ("POST", "restore", "not json", 400),
    ] {
        let (code, answer) = http_json(
            &url,
            method,
            &format!("/v1/magic-folder/{FOLDER}/{path}"),
            &token,
            body,
        );
        assert_eq!(code, want, "{method} {path}: {answer}");
        assert!(answer.contains("\"reason\""), "{answer}");
    }
    let (code, _) = http(&url, "GET", "/v1/magic-folder/nope/deleted", Some(&token));
    assert_eq!(code, 404);

    // The versions area's policy and contents are in status.
    let s = alice.live_status().unwrap();
    assert_eq!(s["versions"]["per_file"], 10, "{s}");
    assert_eq!(s["versions"]["max_age_s"], 30 * 86_400, "{s}");

    // Scan and poll now, through the running daemon; without one, a clear error.
    assert!(alice.ok(&["scan"]).contains("Asked the daemon to scan"));
    assert!(bob
        .ok(&["poll", FOLDER])
        .contains("Asked the daemon to poll"));
    let e = carol.fails(&["poll"]);
    assert!(e.contains("daemon is not running"), "{e}");

    // The daemons' logs tell the story at the default level.
    let (a, b) = (alice.log_text(), bob.log_text());
    assert!(a.contains("uploaded") && a.contains("notes.txt"), "{a}");
    assert!(
        b.contains("downloaded") && b.contains("author=alice"),
        "{b}"
    );

    alice.stop();
    bob.stop();
}
