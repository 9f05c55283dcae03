//! `verify` and `gc` through the real binary on an embedded grid: damage is
//! found and repaired from the files on disk, and space comes back while
//! two daemons go on syncing — without losing anything they need.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Every stored immutable object of the grid: (path, length).
fn objects(grid: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for prefix in std::fs::read_dir(grid.join("objects")).unwrap() {
        for obj in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let obj = obj.unwrap();
            out.push((obj.path(), obj.metadata().unwrap().len()));
        }
    }
    out
}

/// `gc` of every old version's content, of what is an hour old or older.
const GC_EVERY_OLD_VERSION: [&str; 8] = [
    "gc",
    "--keep-versions",
    "0",
    "--keep-versions-for",
    "1ms",
    "--grace",
    "1h",
    "--json",
];

/// Makes every stored object look `by` old.
fn age_objects(grid: &Path, by: Duration) {
    for (path, _) in objects(grid) {
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::now() - by)
            .unwrap();
    }
}

#[test]
fn verify_finds_damage_and_repairs_it_from_the_files_on_disk() {
    let w = World::new();
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();
    let big = random_bytes(7, 300_001);
    alice.write("big.bin", &big);
    alice.write("docs/small.txt", b"small");
    wait_converged("both files everywhere", &[&alice, &bob]);

    let r = json(&alice.ok(&["verify", "--json"]));
    assert_eq!(r[0]["problems"], serde_json::json!([]), "{r}");
    assert_eq!(r[0]["files"], 2, "{r}");
    assert_eq!(r[0]["compared"], 2, "{r}");
    assert_eq!(r[0]["bytes"], 300_006, "{r}");

    // A flipped byte in the content of big.bin (the largest object).
    let (obj, len) = objects(&w.grid).into_iter().max_by_key(|o| o.1).unwrap();
    assert!(len > 300_000);
    let mut raw = std::fs::read(&obj).unwrap();
    raw[150_000] ^= 0x10;
    std::fs::write(&obj, &raw).unwrap();

    let out = bob.cmd(&["verify", "--json"]);
    assert!(!out.status.success(), "damage is a failure");
    let r = json(&String::from_utf8_lossy(&out.stdout));
    let problems = r[0]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{r}");
    assert_eq!(problems[0]["path"], "big.bin");
    let what = problems[0]["what"].as_str().unwrap();
    assert!(
        what.contains("cannot be read") && what.contains("verify --repair"),
        "{what}"
    );

    // Repaired from bob's copy: the same content, so the same object.
    let r = json(&bob.ok(&["verify", "--repair", "--json"]));
    assert_eq!(r[0]["problems"], serde_json::json!([]), "{r}");
    assert_eq!(r[0]["repaired"][0]["path"], "big.bin", "{r}");
    assert_eq!(std::fs::read(&obj).unwrap().len() as u64, len);
    let text = alice.ok(&["verify"]);
    assert!(text.contains("OK"), "{text}");

    // A file whose content no longer matches cannot repair it.
    std::fs::write(&obj, b"truncated").unwrap();
    alice.stop();
    alice.write("big.bin", b"another content");
    let out = alice.cmd(&["verify", "--repair"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("big.bin") && text.contains("changed since"),
        "{text}"
    );

    // Bad input.
    let e = alice.fails(&["verify", "no-such-folder"]);
    assert!(e.contains("no-such-folder"), "{e}");
    bob.stop();
}

#[test]
fn gc_reclaims_old_content_while_two_daemons_sync() {
    let w = World::new();
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();

    // Three versions of a file and a deleted file: old content to reclaim.
    let versions: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(100 + i, 200_000)).collect();
    for v in &versions {
        alice.write("big.bin", v);
        wait_until("bob has the version", &[&alice, &bob], || {
            bob.read("big.bin").as_deref() == Some(&v[..])
        });
    }
    alice.write("gone.bin", &random_bytes(200, 150_000));
    wait_until("bob has gone.bin", &[&alice, &bob], || {
        bob.read("gone.bin").is_some()
    });
    std::fs::remove_file(alice.path("gone.bin")).unwrap();
    wait_converged("the deletion everywhere", &[&alice, &bob]);
    let history_before =
        json(&bob.ok(&["history", bob.path("big.bin").to_str().unwrap(), "--json"]));
    assert_eq!(history_before["versions"].as_array().unwrap().len(), 3);

    // An orphan, as an interrupted upload leaves (a valid stored name).
    let (some, _) = objects(&w.grid).pop().unwrap();
    let name = some.file_name().unwrap().to_str().unwrap().to_owned();
    // (The last character holds padding bits: change one in the middle.)
    let flipped = if name.as_bytes()[10] == b'a' {
        "b"
    } else {
        "a"
    };
    let orphan_name = format!("{}{flipped}{}", &name[..10], &name[11..]);
    let orphan = some.with_file_name(&orphan_name);
    std::fs::write(&orphan, vec![0u8; 4096]).unwrap();

    // Everything so far is two days old; what the daemons write from now
    // on is not.
    age_objects(&w.grid, Duration::from_secs(2 * 86_400));
    let gc_args = GC_EVERY_OLD_VERSION;
    let dry = json(&alice.ok(&[&gc_args[..], &["--dry-run"]].concat()));
    assert!(dry[0]["removed"].as_u64().unwrap() >= 4, "{dry}");
    assert_eq!(
        objects(&w.grid).len() as u64,
        dry[0]["objects"].as_u64().unwrap()
    );

    // gc runs again and again while both daemons sync: new files on both
    // sides, and big.bin set back to its first content (whose object gc
    // wants to remove: the upload finds it and refreshes it).
    let mut reports = Vec::new();
    for round in 0..6u64 {
        alice.write(&format!("a{round}.txt"), &random_bytes(300 + round, 5000));
        bob.write(&format!("b{round}.txt"), &random_bytes(400 + round, 5000));
        if round == 2 {
            alice.write("big.bin", &versions[0]);
        }
        reports.push(json(&alice.ok(&gc_args)));
    }
    let tree = wait_converged("everything synced after gc", &[&alice, &bob]);
    assert_eq!(tree.len(), 1 + 12, "{tree:?}");
    assert_eq!(alice.read("big.bin").as_deref(), Some(&versions[0][..]));
    let removed: u64 = reports
        .iter()
        .map(|r| r[0]["removed"].as_u64().unwrap())
        .sum();
    let bytes: u64 = reports
        .iter()
        .map(|r| r[0]["bytes"].as_u64().unwrap())
        .sum();
    assert!(removed >= 3, "{reports:?}");
    assert!(bytes >= 2 * 200_000 + 150_000, "{reports:?}");
    assert!(
        reports[0][0]["orphans_collected"].as_bool().unwrap(),
        "{reports:?}"
    );
    assert!(!orphan.exists(), "the orphan went");

    // Nothing anyone needs went: every current version reads back on both
    // sides, and the history is whole (only old contents are gone).
    for p in [&alice, &bob] {
        let r = json(&p.ok(&["verify", "--json"]));
        assert_eq!(r[0]["problems"], serde_json::json!([]), "{}: {r}", p.name);
    }
    let history = json(&bob.ok(&["history", bob.path("big.bin").to_str().unwrap(), "--json"]));
    assert_eq!(
        history["versions"].as_array().unwrap().len(),
        4,
        "{history}"
    );
    // The second version's content is gone: restoring it says so, and
    // nothing is written.
    let second = history_before["versions"][1]["id"].as_str().unwrap();
    let e = bob.fails(&[
        "restore",
        bob.path("big.bin").to_str().unwrap(),
        "--version",
        second,
        "--to",
        bob.path("second.bin").to_str().unwrap(),
    ]);
    assert!(e.contains("no longer on the grid: `gc` removed it"), "{e}");
    assert!(bob.read("second.bin").is_none());

    // A folder this device does not know on the same grid: gc keeps what
    // might be its objects.
    let carol = w.participant("carol");
    let dir = carol.dir.to_str().unwrap().to_owned();
    carol.ok(&[
        "create",
        "other",
        &dir,
        "--author",
        "carol",
        "--grid",
        w.grid.to_str().unwrap(),
    ]);
    std::fs::write(&orphan, vec![0u8; 4096]).unwrap();
    age_objects(&w.grid, Duration::from_secs(2 * 86_400));
    let r = json(&alice.ok(&gc_args));
    assert!(!r[0]["orphans_collected"].as_bool().unwrap(), "{r}");
    assert!(
        r[0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("belong to no folder"),
        "{r}"
    );
    assert!(orphan.exists());

    alice.stop();
    bob.stop();
}

#[test]
fn verify_on_tahoe_runs_the_nodes_checker_on_every_object() {
    // Flat (whole contents, 24.3's), and sharded, whose large file is a
    // chunk list of Tahoe's 4 MiB chunks: each chunk is checked too.
    for w in [World::tahoe(), World::tahoe().sharded()] {
        let mut alice = w.admin("alice");
        alice.start();
        alice.write("a.txt", &random_bytes(9, 70_000));
        alice.write("sub/b.txt", b"small");
        let files = if w.layout() == "sharded" {
            alice.write("big.bin", &random_bytes(10, (17 << 20) + 5));
            3
        } else {
            2
        };
        wait_until("all uploaded", &[&alice], || {
            let s = alice.status();
            alice.idle() && s["files"] == files && s["directories"] == 1
        });
        alice.stop();
        for args in [&["verify", "--json"][..], &["verify", "--repair", "--json"]] {
            let out = alice.cmd(args);
            let r = json(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(r[0]["problems"], serde_json::json!([]), "{r}");
            assert_eq!(r[0]["repaired"], serde_json::json!([]), "healthy: {r}");
            assert_eq!(r[0]["compared"], files, "{r}");
        }
        let e = alice.fails(&["gc", FOLDER]);
        assert!(e.contains("Tahoe-LAFS") && e.contains("lease"), "{e}");
    }
}

/// A large file is stored as chunks under a chunk list: `verify` reads
/// every chunk against its digest and repairs damaged ones from the file on
/// disk, and `gc` removes an old version's chunks but never one a kept
/// version shares.
#[test]
fn verify_and_gc_see_a_chunked_file_as_its_chunks() {
    const CHUNK: usize = 1 << 20; // the embedded grid's (`Chunking::EMBEDDED`)
    let w = World::new();
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();
    let mut big = random_bytes(9, 10 * CHUNK + 77);
    alice.write("big.bin", &big);
    wait_until("bob has big.bin", &[&alice, &bob], || {
        bob.read("big.bin").as_deref() == Some(&big[..])
    });
    big[5 * CHUNK + 10..5 * CHUNK + 1034].fill(3);
    alice.write("big.bin", &big);
    wait_until("bob has the edit", &[&alice, &bob], || {
        bob.read("big.bin").as_deref() == Some(&big[..])
    });
    wait_converged("both settle", &[&alice, &bob]);
    let chunks: Vec<PathBuf> = objects(&w.grid)
        .into_iter()
        .filter(|(_, len)| (CHUNK as u64..CHUNK as u64 + 65_536).contains(len))
        .map(|(path, _)| path)
        .collect();
    assert_eq!(
        chunks.len(),
        11,
        "10 whole chunks, and the first version of the edited one"
    );
    let r = json(&bob.ok(&["verify", "--json"]));
    assert_eq!(r[0]["problems"], serde_json::json!([]), "{r}");
    assert_eq!(r[0]["bytes"], (10 * CHUNK + 77) as u64, "{r}");

    // Every chunk damaged: found, and repaired from bob's copy.
    for chunk in &chunks {
        let mut raw = std::fs::read(chunk).unwrap();
        raw[1000] ^= 0x01;
        std::fs::write(chunk, &raw).unwrap();
    }
    let out = bob.cmd(&["verify", "--json"]);
    assert!(!out.status.success(), "damage is a failure");
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(r[0]["problems"][0]["path"], "big.bin", "{r}");
    let r = json(&bob.ok(&["verify", "--repair", "--json"]));
    assert_eq!(r[0]["problems"], serde_json::json!([]), "{r}");
    assert_eq!(r[0]["repaired"][0]["path"], "big.bin", "{r}");
    let r = json(&alice.ok(&["verify", "--json"]));
    assert_eq!(r[0]["problems"], serde_json::json!([]), "{r}");

    // The first version goes: its chunk list and its one chunk of its own.
    age_objects(&w.grid, Duration::from_secs(2 * 86_400));
    let r = json(&alice.ok(&GC_EVERY_OLD_VERSION));
    assert_eq!(r[0]["versions_pruned"], 1, "{r}");
    let bytes = r[0]["bytes"].as_u64().unwrap();
    assert!(
        (CHUNK as u64..2 * CHUNK as u64).contains(&bytes),
        "removed {bytes} bytes: {r}"
    );
    for p in [&alice, &bob] {
        let r = json(&p.ok(&["verify", "--json"]));
        assert_eq!(r[0]["problems"], serde_json::json!([]), "{}: {r}", p.name);
    }
    // And the file still syncs from its chunks.
    big[..1024].fill(4);
    alice.write("big.bin", &big);
    wait_until("bob has a later edit", &[&alice, &bob], || {
        bob.read("big.bin").as_deref() == Some(&big[..])
    });
    alice.stop();
    bob.stop();
}
