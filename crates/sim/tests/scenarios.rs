//! Hand-written schedules with exact expected outcomes: the sync rules as a
//! table of small stories, run on the simulator (no faults unless a story
//! asks for them). Files: index 0 is `a`, 2 is `d/c`; directory 3 is `k`.

use std::collections::BTreeMap;

use mf_sim::{run, SimConfig, SimOp};

fn calm(participants: usize) -> SimConfig {
    SimConfig {
        seed: 1,
        participants,
        ops: 0,
        crashes: false,
        outages: false,
        liars: false,
        unclaimed: false,
        sharded: false,
        converts: false,
        plant_skip_last_moment_check: false,
    }
}

fn settle(cfg: &SimConfig, schedule: &[SimOp]) -> BTreeMap<String, Option<Vec<u8>>> {
    match run(cfg, schedule) {
        Ok(o) => o.tree,
        Err(f) => panic!("{}\n{}", f.violation, f.trace.join("\n")),
    }
}

fn text(v: &Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(v.as_deref().unwrap_or(b"<dir>")).into_owned()
}

#[test]
fn an_edit_reaches_everyone() {
    use SimOp::*;
    let tree = settle(
        &calm(3),
        &[
            Write { who: 1, file: 2 },
            Advance(3000),
            Write { who: 2, file: 2 },
        ],
    );
    let names: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["d", "d/c"],
        "the edit replaced the file everywhere, no conflict"
    );
    assert!(
        text(&tree["d/c"]).starts_with("p2:"),
        "{}",
        text(&tree["d/c"])
    );
}

#[test]
fn concurrent_edits_keep_both_versions_on_every_side() {
    use SimOp::*;
    // Both write `a` before either hears of the other.
    let tree = settle(
        &calm(2),
        &[Write { who: 0, file: 0 }, Write { who: 1, file: 0 }],
    );
    let names: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let copy = names
        .iter()
        .find(|n| n.starts_with("a.conflict-"))
        .expect("a conflict copy");
    let loser = copy.trim_start_matches("a.conflict-");
    assert!(
        text(&tree[*copy]).starts_with(&format!("{loser}:")),
        "the copy holds its author's version"
    );
    assert!(
        !text(&tree["a"]).starts_with(&format!("{loser}:")),
        "the file holds the other one"
    );
}

#[test]
fn deleting_the_copy_resolves_the_conflict_everywhere() {
    use SimOp::*;
    let tree = settle(
        &calm(3),
        &[
            Write { who: 0, file: 0 },
            Write { who: 1, file: 0 },
            Advance(5000),
            ResolveCopy { who: 2, pick: 0 },
        ],
    );
    let names: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(names, ["a"], "the copy is gone at every participant");
}

#[test]
fn an_edit_beats_a_concurrent_deletion() {
    use SimOp::*;
    let tree = settle(
        &calm(2),
        &[
            Write { who: 0, file: 0 },
            Advance(3000),
            Delete { who: 0, file: 0 },
            Write { who: 1, file: 0 },
        ],
    );
    assert!(
        text(&tree["a"]).starts_with("p1:"),
        "the edit survives: {tree:?}"
    );
    assert_eq!(tree.len(), 1, "a deletion leaves no copy: {tree:?}");
}

#[test]
fn empty_directories_and_their_removal_sync() {
    use SimOp::*;
    let tree = settle(&calm(2), &[Mkdir { who: 0, dir: 3 }]);
    assert_eq!(
        tree.get("k"),
        Some(&None),
        "the empty directory reached the other side"
    );
    let tree = settle(
        &calm(2),
        &[
            Mkdir { who: 0, dir: 3 },
            Advance(3000),
            RemoveDir { who: 1, dir: 3 },
        ],
    );
    assert!(tree.is_empty(), "and so did its removal: {tree:?}");
}

#[test]
fn a_rename_is_a_deletion_and_a_creation() {
    use SimOp::*;
    let tree = settle(
        &calm(2),
        &[
            Write { who: 0, file: 0 },
            Advance(3000),
            Rename {
                who: 1,
                from: 0,
                to: 2,
            },
        ],
    );
    let names: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(names, ["d", "d/c"], "{tree:?}");
    assert!(
        text(&tree["d/c"]).starts_with("p0:a:"),
        "the content moved with the name"
    );
}

/// A participant that claims a huge generation — for a new version of its
/// own, or on top of another's — takes nothing over: its versions are
/// rejected everywhere, so the file stays the honest participants' and no
/// copy of the lie appears (the run's invariants also check that no
/// participant ever holds bytes no user wrote).
#[test]
fn a_lie_about_generation_takes_nothing_over() {
    use SimOp::*;
    let cfg = SimConfig {
        liars: true,
        ..calm(2)
    };
    let tree = settle(
        &cfg,
        &[
            Write { who: 0, file: 0 },
            Advance(3000),
            Lie {
                file: 0,
                on: Some(0),
            },
            Lie { file: 2, on: None },
            Advance(3000),
            Write { who: 1, file: 0 },
            Advance(3000),
        ],
    );
    let names: Vec<&String> = tree.keys().collect();
    assert_eq!(names, ["a"], "{tree:?}");
    assert!(text(&tree["a"]).starts_with("p1:a:"), "{tree:?}");
}

#[test]
fn a_removal_after_concurrent_creations_of_one_directory_stays_removed() {
    use SimOp::*;
    // Both make `k` before either hears of the other: two versions of one
    // empty directory, one kept as a marker. The removal that follows must
    // supersede both, not lose to the marker ("a directory beats a
    // deletion") and bring `k` back.
    let tree = settle(
        &calm(2),
        &[
            Mkdir { who: 0, dir: 3 },
            Mkdir { who: 1, dir: 3 },
            Advance(5000),
            RemoveDir { who: 0, dir: 3 },
        ],
    );
    assert!(tree.is_empty(), "the removal stands everywhere: {tree:?}");
}

/// In a sharded folder `a`, `d/e` and `h/i` share a one-digit shard. Each
/// participant's third entry overflows its recent shard (the simulated
/// grid's holds two), which files them all, and that shard, holding two of
/// them, splits into two-digit shards: every reader still has every file,
/// edits included.
#[test]
fn files_sync_across_a_shard_split() {
    use SimOp::*;
    let cfg = SimConfig {
        sharded: true,
        ..calm(2)
    };
    let tree = settle(
        &cfg,
        &[
            Write { who: 0, file: 0 },
            Advance(3000),
            Write { who: 1, file: 3 },
            Advance(3000),
            Write { who: 0, file: 5 },
            Advance(3000),
            Write { who: 1, file: 0 },
        ],
    );
    let names: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(names, ["a", "d", "d/e", "h", "h/i"]);
    assert!(text(&tree["a"]).starts_with("p1:"), "{}", text(&tree["a"]));
    assert!(text(&tree["d/e"]).starts_with("p1:"));
    assert!(text(&tree["h/i"]).starts_with("p0:"));
}

#[test]
fn a_reader_takes_in_the_directories_its_writes_made() {
    use SimOp::*;
    // Whichever comes first at the reader, a file's write (making its
    // directory) or the directory's own version, the directories stay the
    // writer's: the reader uploads nothing.
    for seed in 1..=200 {
        let cfg = SimConfig { seed, ..calm(2) };
        let schedule = [2, 3, 4, 5].map(|file| Write { who: 0, file });
        let outcome = match run(&cfg, &schedule) {
            Ok(o) => o,
            Err(f) => panic!("{}\n{}", f.violation, f.trace.join("\n")),
        };
        let names: Vec<&str> = outcome.tree.keys().map(String::as_str).collect();
        assert_eq!(names, ["d", "d/c", "d/e", "d/f", "d/f/g", "h", "h/i"]);
        let writer = &outcome.uploads[0].0;
        let theirs: Vec<_> = outcome
            .uploads
            .iter()
            .filter(|(who, _)| who != writer)
            .collect();
        assert!(
            theirs.is_empty(),
            "seed {seed}: the reader uploaded {theirs:?}"
        );
    }
}
