//! End-to-end synchronisation through the real binary: participants on one
//! grid, each with its own config directory and daemon.
//!
//! The scenarios in [`on_both_grids!`] run twice: on an embedded grid, and on
//! a real Tahoe-LAFS grid (this binary's shared test grid, each participant
//! through its own Tahoe client node). Every test waits for conditions (see
//! `common`), never for fixed times.

mod common;

use common::*;
use std::fs;

/// Makes each scenario (a `fn(&World)`) two tests: `SCENARIO::embedded` and
/// `SCENARIO::tahoe`. Each test makes its own collective, so the Tahoe ones
/// safely share one grid.
macro_rules! on_both_grids {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn embedded() {
                super::$scenario(&super::World::new());
            }

            #[test]
            fn tahoe() {
                super::$scenario(&super::World::tahoe());
            }
        }
    )*};
}

on_both_grids!(
    a_flat_folder_converts_while_syncing,
    two_participants_sync_both_ways,
    three_participants_converge,
    concurrent_edits_conflict_then_resolve_mine,
    concurrent_edits_conflict_then_resolve_use,
);

/// The same scenarios in a folder of the sharded layout (see
/// `mf_daemon::personal`): the joiner learns the layout from the folder.
mod sharded {
    use super::*;

    #[test]
    fn two_participants_sync_both_ways_embedded() {
        super::two_participants_sync_both_ways(&World::new().sharded());
    }

    #[test]
    fn two_participants_sync_both_ways_tahoe() {
        super::two_participants_sync_both_ways(&World::tahoe().sharded());
    }

    #[test]
    fn concurrent_edits_conflict_then_resolve_use_embedded() {
        super::concurrent_edits_conflict_then_resolve_use(&World::new().sharded());
    }

    #[test]
    fn concurrent_edits_conflict_then_resolve_use_tahoe() {
        super::concurrent_edits_conflict_then_resolve_use(&World::tahoe().sharded());
    }
}

/// `convert` while both daemons run: each follows the folder to the
/// sharded layout and chunked contents (the admin's `convert` records it,
/// each daemon moves its own directory), and the folder syncs on both ways
/// with nothing lost: a change made while the folder moves, a large file
/// in chunks, a restart.
fn a_flat_folder_converts_while_syncing(w: &World) {
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();
    let ps = [&alice, &bob];
    alice.write("a.txt", b"from alice");
    bob.write("sub/b.txt", b"from bob");
    let mut want = expect(&[
        ("a.txt", Some(b"from alice")),
        ("sub/b.txt", Some(b"from bob")),
        ("sub", None),
    ]);
    wait_tree("both sides' files sync before the move", &ps, &want);

    if w.kind() == "tahoe" {
        // A folder a 24.3 participant could share needs --force.
        let err = bob.fails(&["convert", FOLDER, "--force"]);
        assert!(err.contains("admin"), "{err}");
        let err = alice.fails(&["convert", FOLDER]);
        assert!(err.contains("24.3") && err.contains("--force"), "{err}");
    }
    let out = alice.ok(&["convert", FOLDER, "--layout", "sharded", "--force"]);
    assert!(out.contains("converted from the flat layout"), "{out}");
    alice.write("during.txt", b"written while the folder moves");
    let format = |p: &Participant| {
        let list: serde_json::Value = serde_json::from_str(&p.ok(&["list", "--json"])).unwrap();
        (
            list[FOLDER]["layout"].clone(),
            list[FOLDER]["content"].clone(),
        )
    };
    wait_until("both daemons follow the folder", &ps, || {
        ps.iter()
            .all(|p| format(p) == ("sharded".into(), "chunked".into()))
    });

    // Chunked from now on (8 MiB on the embedded grid, 16 on Tahoe).
    let big = random_bytes(
        7,
        if w.kind() == "tahoe" {
            17 << 20
        } else {
            9 << 20
        },
    );
    bob.write("big.bin", &big);
    bob.write("sub/b.txt", b"bob, after the move");
    want = expect(&[
        ("a.txt", Some(b"from alice")),
        ("during.txt", Some(b"written while the folder moves")),
        ("sub/b.txt", Some(b"bob, after the move")),
        ("sub", None),
        ("big.bin", Some(&big)),
    ]);
    wait_tree("changes made during and after the move sync", &ps, &want);

    // Run again, convert links bob's new directory and reports everyone moved.
    wait_until("convert reports everyone moved", &ps, || {
        let out: serde_json::Value =
            serde_json::from_str(&alice.ok(&["convert", FOLDER, "--json"])).unwrap();
        out["participants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p[1] == "moved")
    });
    if w.kind() == "embedded" {
        // gc knows the old directories (the new ones name them): nothing
        // unreadable, and what no version references may go.
        let gc: serde_json::Value =
            serde_json::from_str(&alice.ok(&["gc", FOLDER, "--dry-run", "--json"])).unwrap();
        assert_eq!(gc[0]["problems"], serde_json::json!([]), "{gc}");
        assert_eq!(gc[0]["orphans_collected"], true, "{gc}");
    }
    alice.stop();
    bob.stop();
    alice.start();
    bob.start();
    let ps = [&alice, &bob];
    alice.write("a.txt", b"alice, after a restart");
    want = expect(&[
        ("a.txt", Some(b"alice, after a restart")),
        ("during.txt", Some(b"written while the folder moves")),
        ("sub/b.txt", Some(b"bob, after the move")),
        ("sub", None),
        ("big.bin", Some(&big)),
    ]);
    wait_tree("the moved folder syncs after a restart", &ps, &want);
}

fn two_participants_sync_both_ways(w: &World) {
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    // The joiner takes the folder's layout from the folder.
    for p in [&alice, &bob] {
        let list: serde_json::Value = serde_json::from_str(&p.ok(&["list", "--json"])).unwrap();
        assert_eq!(list[FOLDER]["layout"], w.layout(), "{list}");
    }
    alice.start();
    bob.start();
    let ps = [&alice, &bob];
    let big = random_bytes(1, 3 << 20);

    // New files, nested directories, an empty directory, a binary file.
    alice.write("hello.txt", b"hello from alice");
    alice.write("docs/deep/nested/a.md", b"# nested");
    alice.write("big.bin", &big);
    fs::create_dir_all(alice.path("empty/inner")).unwrap();
    let mut want = expect(&[
        ("hello.txt", Some(b"hello from alice")),
        ("docs/deep/nested/a.md", Some(b"# nested")),
        ("big.bin", Some(&big)),
        ("empty/inner", None),
    ]);
    wait_tree("alice's new files reach bob", &ps, &want);

    // Edits and new files the other way.
    bob.write("hello.txt", b"bob was here");
    bob.write("docs/bob.txt", b"from bob");
    want = expect(&[
        ("hello.txt", Some(b"bob was here")),
        ("docs/deep/nested/a.md", Some(b"# nested")),
        ("docs/bob.txt", Some(b"from bob")),
        ("big.bin", Some(&big)),
        ("empty/inner", None),
    ]);
    wait_tree("bob's edits reach alice", &ps, &want);

    // Deletions: a file, then a now-empty directory chain, and an empty dir.
    fs::remove_file(alice.path("docs/deep/nested/a.md")).unwrap();
    fs::remove_dir(alice.path("docs/deep/nested")).unwrap();
    fs::remove_dir(alice.path("docs/deep")).unwrap();
    fs::remove_dir(bob.path("empty/inner")).unwrap();
    want = expect(&[
        ("hello.txt", Some(b"bob was here")),
        ("docs/bob.txt", Some(b"from bob")),
        ("big.bin", Some(&big)),
        ("empty", None),
    ]);
    wait_tree("deletions propagate both ways", &ps, &want);

    // A rename is a delete plus a create.
    fs::create_dir_all(bob.path("moved")).unwrap();
    fs::rename(bob.path("hello.txt"), bob.path("moved/hello.txt")).unwrap();
    fs::rename(alice.path("docs"), alice.path("documents")).unwrap();
    want = expect(&[
        ("moved/hello.txt", Some(b"bob was here")),
        ("documents/bob.txt", Some(b"from bob")),
        ("big.bin", Some(&big)),
        ("empty", None),
    ]);
    wait_tree("renames of a file and of a directory propagate", &ps, &want);

    // An edit of the big file.
    let mut big2 = big.clone();
    big2[12345] ^= 0xff;
    big2.extend_from_slice(b"tail");
    alice.write("big.bin", &big2);
    want.insert("big.bin".into(), Node::File(big2));
    wait_tree("a changed binary propagates", &ps, &want);
    let t = wait_converged("both daemons settle", &ps);
    assert_eq!(t, want);
    alice.stop();
    bob.stop();
}

fn three_participants_converge(w: &World) {
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    let mut carol = w.joined(&alice, "carol");
    // Carol has a file before she starts: it is shared too.
    carol.write("carol/early.txt", b"written before joining the sync");
    alice.start();
    bob.start();
    carol.start();
    let ps = [&alice, &bob, &carol];

    alice.write("a.txt", b"from alice");
    bob.write("b/b.txt", b"from bob");
    let want = expect(&[
        ("a.txt", Some(b"from alice")),
        ("b/b.txt", Some(b"from bob")),
        ("carol/early.txt", Some(b"written before joining the sync")),
    ]);
    wait_tree("everyone's files reach everyone", &ps, &want);

    // An edit by one reaches the two others; a deletion too.
    carol.write("b/b.txt", b"carol edited bob's file");
    fs::remove_file(bob.path("a.txt")).unwrap();
    let want = expect(&[
        ("b/b.txt", Some(b"carol edited bob's file")),
        ("carol/early.txt", Some(b"written before joining the sync")),
    ]);
    wait_tree("an edit and a deletion reach everyone", &ps, &want);
    let t = wait_converged("all three settle", &ps);
    assert_eq!(t, want);
    for p in ps {
        assert!(p.conflicts().is_empty(), "{}: no conflicts", p.name);
    }
    alice.stop();
    bob.stop();
    carol.stop();
}

/// Alice and Bob share `notes.txt`, then both edit it while Bob's daemon is
/// stopped. Returns (alice, bob, winner content, loser name, loser content)
/// once both sides show the conflict.
fn make_conflict(w: &World) -> (Participant, Participant, Vec<u8>, String, Vec<u8>) {
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();
    alice.write("notes.txt", b"base version");
    alice.write("other.txt", b"unrelated");
    let base = expect(&[
        ("notes.txt", Some(b"base version")),
        ("other.txt", Some(b"unrelated")),
    ]);
    wait_tree("the base version reaches bob", &[&alice, &bob], &base);
    wait_converged("both settle on the base version", &[&alice, &bob]);

    bob.stop();
    alice.write("notes.txt", b"alice's edit");
    alice.wait_settled();
    bob.write("notes.txt", b"bob's edit, made offline");
    bob.start();

    // Both sides end with the same two versions: the winner at the path,
    // the loser beside it as notes.txt.conflict-<its author>.
    let mut outcome = None;
    wait_until("both sides show the same conflict", &[&alice, &bob], || {
        let (ta, tb) = (alice.tree(), bob.tree());
        if ta != tb {
            return false;
        }
        let copies: Vec<&String> = ta
            .keys()
            .filter(|k| k.starts_with("notes.txt.conflict-"))
            .collect();
        if copies.len() != 1 {
            return false;
        }
        let loser = copies[0]
            .trim_start_matches("notes.txt.conflict-")
            .to_owned();
        let (Some(Node::File(win)), Some(Node::File(lose))) =
            (ta.get("notes.txt"), ta.get(copies[0]))
        else {
            return false;
        };
        let mut contents = [win.clone(), lose.clone()];
        contents.sort();
        if contents
            != [
                b"alice's edit".to_vec(),
                b"bob's edit, made offline".to_vec(),
            ]
        {
            return false;
        }
        outcome = Some((win.clone(), loser, lose.clone()));
        true
    });
    let (win, loser, lose) = outcome.unwrap();
    let expected_author = if lose == b"alice's edit" {
        "alice"
    } else {
        "bob"
    };
    assert_eq!(
        loser, expected_author,
        "the copy is named after the author of the version it holds"
    );
    assert_eq!(
        alice.read("other.txt").as_deref(),
        Some(&b"unrelated"[..]),
        "other files are untouched"
    );

    // status --json lists the conflict on both sides.
    for p in [&alice, &bob] {
        wait_until(&format!("{} lists the conflict", p.name), &[p], || {
            p.conflicts() == vec![("notes.txt".to_owned(), loser.clone())]
        });
    }
    // (24.3 cannot read a sharded folder, and is never let in one.)
    if w.kind() == "tahoe" && w.layout() == "flat" {
        names_readable_by_24_3(&alice);
    }
    (alice, bob, win, loser, lose)
}

/// On Tahoe: magic-folder 24.3's own decoder (`magic2path`, from PyPI)
/// accepts every name in every participant's personal directory — one it
/// could not decode would stop its whole poll — once the conflict loser is
/// published (under `@metadata`).
fn names_readable_by_24_3(p: &Participant) {
    let node = p.tahoe_node().url().expect("a Tahoe node URL");
    let (api, token) = p.api();
    let list = |cap: &str| -> serde_json::Value {
        let (code, body) = http(&node, "GET", &format!("/uri/{cap}?t=json"), None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()[1]["children"].clone()
    };
    let mut names: Vec<String> = Vec::new();
    wait_until(
        "the conflict loser is published under @metadata",
        &[p],
        || {
            let (code, body) = http(
                &api,
                "GET",
                &format!("/v1/magic-folder/{FOLDER}/participants"),
                Some(&token),
            );
            assert_eq!(code, 200, "{body}");
            let parts: serde_json::Value = serde_json::from_str(&body).unwrap();
            names.clear();
            let mut losers = 0;
            for v in parts.as_object().unwrap().values() {
                let children = list(v["personal_dmd"].as_str().unwrap());
                for (name, child) in children.as_object().unwrap() {
                    names.push(name.clone());
                    if name == "@metadata" && child[0] == "dirnode" {
                        let cap = child[1]["ro_uri"].as_str().unwrap();
                        losers += list(cap).as_object().unwrap().len();
                    }
                }
            }
            losers > 0
        },
    );
    let script = "import json, sys\n\
        from magic_folder.magicpath import magic2path\n\
        for n in json.load(sys.stdin):\n    \
            if n != '@metadata': magic2path(n)\n";
    let out = venv_python(script, serde_json::to_string(&names).unwrap().as_bytes());
    assert!(
        out.status.success(),
        "24.3 cannot decode a personal-directory name among {names:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn concurrent_edits_conflict_then_resolve_mine(w: &World) {
    let (mut alice, mut bob, _win, _loser, _lose) = make_conflict(w);
    let human = bob.ok(&["status", FOLDER]);
    assert!(human.contains("conflicts (1)"), "{human}");

    // Bob keeps his own version, wherever it is (the file if it won, his
    // copy if it lost); the copy goes everywhere.
    let win = b"bob's edit, made offline".to_vec();
    let out = bob.ok(&["resolve", bob.path("notes.txt").to_str().unwrap(), "--mine"]);
    assert!(out.contains("Resolved notes.txt"), "{out}");
    assert!(
        bob.read("notes.txt.conflict-alice").is_none()
            && bob.read("notes.txt.conflict-bob").is_none()
    );
    let versions = bob.dir.join(".magic-folder").join("versions");
    assert!(
        fs::read_dir(&versions)
            .map(|d| d.count() > 0)
            .unwrap_or(false),
        "the copy went to the versions area"
    );

    let want = expect(&[("notes.txt", Some(&win)), ("other.txt", Some(b"unrelated"))]);
    wait_tree(
        "the resolution removes the copy everywhere",
        &[&alice, &bob],
        &want,
    );
    for p in [&alice, &bob] {
        wait_until(&format!("{} lists no conflict", p.name), &[p], || {
            p.conflicts().is_empty()
        });
    }
    assert_eq!(wait_converged("both settle", &[&alice, &bob]), want);
    alice.stop();
    bob.stop();
}

fn concurrent_edits_conflict_then_resolve_use(w: &World) {
    let (mut alice, mut bob, _win, loser, lose) = make_conflict(w);
    let notes = alice.path("notes.txt");
    let notes = notes.to_str().unwrap();

    // Mistakes first: clear errors, nothing changed.
    let err = alice.fails(&["resolve", notes, "--use", "nobody"]);
    assert!(
        err.contains("no conflict copy") && err.contains(&loser),
        "{err}"
    );
    let copy = alice.path(&format!("notes.txt.conflict-{loser}"));
    let err = alice.fails(&["resolve", copy.to_str().unwrap(), "--mine"]);
    assert!(err.contains("is a conflict copy"), "{err}");
    let err = alice.fails(&[
        "resolve",
        alice.path("other.txt").to_str().unwrap(),
        "--mine",
    ]);
    assert!(err.contains("no conflict copies"), "{err}");
    let err = alice.fails(&[
        "resolve",
        w.tmp.path().join("elsewhere").to_str().unwrap(),
        "--mine",
    ]);
    assert!(err.contains("not inside any magic folder"), "{err}");

    // Alice takes the losing version; it becomes the content everywhere.
    let out = alice.ok(&["resolve", notes, "--use", &loser, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kept"], loser.as_str());
    assert_eq!(v["daemon_notified"], true);
    assert_eq!(alice.read("notes.txt").unwrap(), lose);

    let want = expect(&[
        ("notes.txt", Some(&lose)),
        ("other.txt", Some(b"unrelated")),
    ]);
    wait_tree(
        "the chosen version and no copies everywhere",
        &[&alice, &bob],
        &want,
    );
    for p in [&alice, &bob] {
        wait_until(&format!("{} lists no conflict", p.name), &[p], || {
            p.conflicts().is_empty()
        });
    }
    assert_eq!(wait_converged("both settle", &[&alice, &bob]), want);

    // The resolved file keeps syncing normally afterwards.
    bob.write("notes.txt", b"after the resolution");
    let want = expect(&[
        ("notes.txt", Some(b"after the resolution")),
        ("other.txt", Some(b"unrelated")),
    ]);
    wait_tree("a later edit is a plain edit", &[&alice, &bob], &want);
    assert!(alice.conflicts().is_empty());
    alice.stop();
    bob.stop();
}

/// Big files so transfers take a while, two of them large enough to be
/// chunked on either grid where the folder chunks; returns the expected
/// tree.
fn write_big_files(p: &Participant, seed: u64) -> Tree {
    let mut want = Tree::new();
    want.insert("big".into(), Node::Dir);
    for i in 0..6 {
        let mib = if i % 3 == 2 { 17 } else { 8 };
        let data = random_bytes(seed + i, (mib << 20) + i as usize * 4099);
        let rel = format!("big/file-{i}.bin");
        p.write(&rel, &data);
        want.insert(rel, Node::File(data));
    }
    want
}

#[test]
fn clean_restart_in_the_middle_of_a_transfer_converges() {
    let w = World::new();
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();
    let want = write_big_files(&alice, 100);
    wait_until("bob starts downloading", &[&alice, &bob], || {
        bob.path("big").exists()
    });
    wait_in_flight(&bob);
    bob.stop();
    bob.start();
    wait_tree(
        "bob gets everything after a restart",
        &[&alice, &bob],
        &want,
    );
    assert_eq!(wait_converged("both settle", &[&alice, &bob]), want);
    alice.stop();
    bob.stop();
}

#[test]
fn kill_9_during_upload_then_restart_loses_nothing() {
    let w = World::new();
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();
    let want = write_big_files(&alice, 200);
    let caught = wait_in_flight(&alice);
    alice.kill9();
    eprintln!("alice killed while uploading: {caught}");
    assert_eq!(
        alice.tree(),
        want,
        "alice's own files are intact after the kill"
    );
    alice.start();
    wait_tree(
        "bob gets everything once alice restarts",
        &[&alice, &bob],
        &want,
    );
    assert_eq!(wait_converged("both settle", &[&alice, &bob]), want);
    alice.stop();
    bob.stop();
}

#[test]
fn kill_9_during_download_then_restart_loses_nothing() {
    let w = World::new();
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();
    bob.write("bobs-own.txt", b"bob's file stays");
    let mut want = write_big_files(&alice, 300);
    want.insert(
        "bobs-own.txt".into(),
        Node::File(b"bob's file stays".to_vec()),
    );
    wait_until("bob starts downloading", &[&alice, &bob], || {
        bob.path("big").exists()
    });
    let caught = wait_in_flight(&bob);
    bob.kill9();
    eprintln!("bob killed while downloading: {caught}");
    // Whatever bob has is either absent or complete: writes are atomic.
    for (path, node) in bob.tree() {
        if let (Some(Node::File(w)), Node::File(got)) = (want.get(&path), &node) {
            assert_eq!(got.len(), w.len(), "{path} is never half-written");
        }
    }
    // Alice keeps editing meanwhile.
    alice.write("while-bob-was-down.txt", b"hello");
    want.insert(
        "while-bob-was-down.txt".into(),
        Node::File(b"hello".to_vec()),
    );
    bob.start();
    wait_tree("bob catches up after the kill", &[&alice, &bob], &want);
    assert_eq!(wait_converged("both settle", &[&alice, &bob]), want);
    alice.stop();
    bob.stop();
}

/// A conflict on a file name near NAME_MAX: the copy's name is shortened
/// to fit (the same on both sides), and deleting it resolves the conflict.
#[test]
fn a_conflict_on_a_long_file_name_converges_and_resolves() {
    let w = World::new();
    let name = format!("{}.txt", "long-name-".repeat(24)); // 244 bytes
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();
    alice.write(&name, b"base");
    wait_until("bob has the base", &[&alice, &bob], || {
        bob.read(&name).as_deref() == Some(b"base")
    });
    wait_converged("both settle", &[&alice, &bob]);
    bob.stop();
    alice.write(&name, b"alice's edit");
    alice.wait_settled();
    bob.write(&name, b"bob's offline edit");
    bob.start();

    let copy_of = |t: &Tree| -> Vec<String> {
        t.keys()
            .filter(|k| k.contains(".conflict-"))
            .cloned()
            .collect()
    };
    let mut copy = String::new();
    wait_until("both keep both versions", &[&alice, &bob], || {
        let (ta, tb) = (alice.tree(), bob.tree());
        let copies = copy_of(&ta);
        if ta != tb || copies.len() != 1 || !ta.contains_key(&name) {
            return false;
        }
        copy = copies[0].clone();
        true
    });
    assert!(copy.len() <= 255 && copy.len() > 240, "{copy}");

    // Deleting the copy resolves it, everywhere.
    std::fs::remove_file(bob.path(&copy)).unwrap();
    wait_until("the resolution reaches alice", &[&alice, &bob], || {
        let (ta, tb) = (alice.tree(), bob.tree());
        ta == tb && copy_of(&ta).is_empty() && ta.contains_key(&name)
    });
    wait_converged("both settle after the resolution", &[&alice, &bob]);
    alice.stop();
    bob.stop();
}

/// On an embedded grid a participant hears the others' changes as they are
/// published, not at its next poll: with a poll interval of an hour, a new
/// file still arrives (the test waits at most its usual minute).
#[test]
fn the_embedded_grid_is_watched_not_only_polled() {
    let w = World::new();
    let slow = ["--poll-interval", "1h", "--pending-delay", "150ms"];
    let alice = w.participant("alice");
    let dir = alice.dir.to_str().unwrap().to_owned();
    let grid = w.grid.to_str().unwrap().to_owned();
    let mut args = vec!["create", FOLDER, &dir, "--author", "alice", "--grid", &grid];
    args.extend_from_slice(&slow);
    alice.ok(&args);
    let code = alice.ok(&["invite", FOLDER, "bob"]).trim().to_owned();
    let bob = w.participant("bob");
    let bob_dir = bob.dir.to_str().unwrap().to_owned();
    let mut args = vec!["join", &code, &bob_dir];
    args.extend_from_slice(&slow);
    bob.ok(&args);
    let (mut alice, mut bob) = (alice, bob);
    alice.start();
    bob.start();
    // Both have made their first poll (at start) before the change.
    wait_until("both have polled", &[&alice, &bob], || {
        [&alice, &bob].iter().all(|p| {
            p.live_status()
                .is_some_and(|s| s["last_poll"].as_u64().is_some())
        })
    });
    alice.write("news.txt", b"heard at once");
    wait_until("bob hears of it without polling", &[&alice, &bob], || {
        bob.read("news.txt").as_deref() == Some(b"heard at once")
    });
    alice.stop();
    bob.stop();
}

/// An edit beats a concurrent deletion (the file is kept, the deletion is
/// only remembered): no conflict copy, and `status` lists no conflict —
/// also from the state database when the daemon is stopped.
#[test]
fn an_edit_beats_a_deletion_and_status_lists_no_conflict() {
    let w = World::new();
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();
    alice.write("f.txt", b"base");
    wait_until("bob has the base", &[&alice, &bob], || {
        bob.read("f.txt").as_deref() == Some(b"base")
    });
    wait_converged("both settle", &[&alice, &bob]);
    bob.stop();
    fs::remove_file(alice.path("f.txt")).unwrap();
    alice.wait_settled();
    bob.write("f.txt", b"bob's offline edit");
    bob.start();
    let want = expect(&[("f.txt", Some(b"bob's offline edit"))]);
    wait_tree("the edit wins everywhere", &[&alice, &bob], &want);
    wait_converged("both settle after the conflict", &[&alice, &bob]);
    alice.stop();
    bob.stop();
    for p in [&alice, &bob] {
        let s = p.status();
        assert_eq!(s["running"], false, "{s}");
        assert_eq!(s["conflicts"], serde_json::json!([]), "{}: {s}", p.name);
    }
}

/// `participants list|remove|add`: a removed participant's new files reach
/// no one; added back by their directory's read capability (24.3's
/// add-participant), they do again. Only the admin changes membership.
#[test]
fn participants_are_listed_removed_and_added_back() {
    let w = World::new();
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    let mut carol = w.joined(&alice, "carol");
    let listed: serde_json::Value =
        serde_json::from_str(&alice.ok(&["participants", "list", FOLDER, "--json"])).unwrap();
    let names: Vec<(&str, bool, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["is_self"].as_bool().unwrap(),
                p["mode"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("alice", true, "read-write"),
            ("bob", false, "read-write"),
            ("carol", false, "read-write")
        ]
    );
    let bob_dmd = listed[1]["personal_dmd"].as_str().unwrap().to_owned();
    let err = bob.fails(&["participants", "remove", FOLDER, "alice"]);
    assert!(err.contains("only an admin"), "{err}");
    // With the daemons running, changes go through alice's daemon.
    alice.start();
    bob.start();
    carol.start();
    alice.ok(&["participants", "remove", FOLDER, "bob"]);
    let err = alice.fails(&["participants", "remove", FOLDER, "bob"]);
    assert!(err.contains("no participant called"), "{err}");
    bob.write("from-bob.txt", b"after removal");
    alice.write("from-alice.txt", b"alice");
    // Bob still reads the folder (his read capability is his), but alice
    // no longer takes anything from him: carol's file, published after
    // his, reaches alice; his does not.
    wait_until("bob has alice's file", &[&alice, &bob], || {
        bob.read("from-alice.txt").is_some()
    });
    wait_until("bob published his file", &[&bob], || bob.idle());
    carol.write("from-carol.txt", b"carol");
    wait_until("alice has carol's later file", &[&alice, &carol], || {
        alice.read("from-carol.txt").is_some()
    });
    assert!(alice.read("from-bob.txt").is_none());
    let err = alice.fails(&["participants", "add", FOLDER, "carol", "URI:CHK:abc"]);
    assert!(err.contains("read-only directory capability"), "{err}");
    alice.ok(&["participants", "add", FOLDER, "bob", &bob_dmd]);
    wait_until(
        "bob's file arrives once he is back",
        &[&alice, &bob],
        || alice.read("from-bob.txt").as_deref() == Some(b"after removal".as_slice()),
    );
}
