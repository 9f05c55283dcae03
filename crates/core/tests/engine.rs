//! Engine rules driven event by event, where the simulator would need a
//! lucky interleaving: here the order of results is written out exactly.

use mf_core::engine::{
    Action, DeclaredAuthor, Engine, EngineConfig, Event, PublishEntry, RemoteListing, ScanReport,
    UploadOutcome, WriteOutcome,
};
use mf_core::relpath::RelPath;
use mf_core::snapshot::{entry_name, Cap, Content, Listing, ShardId, SnapshotInfo};
use mf_core::store::{Change, Current, LocalState, MemStore, PathState, Store};

fn path() -> RelPath {
    RelPath::new("a").unwrap()
}

fn engine(store: MemStore) -> Engine<MemStore> {
    engine_with_room(store, 1024)
}

fn engine_with_room(store: MemStore, max_pending_effects: usize) -> Engine<MemStore> {
    let cfg = EngineConfig {
        me: "me".into(),
        author: DeclaredAuthor {
            name: "me".into(),
            verify_key: "key-me".into(),
        },
        poll_interval: 1_000,
        scan_interval: 15_000,
        max_pending_effects,
    };
    Engine::new(store, cfg, 0).unwrap()
}

fn snap(cap: &str, author: &str, parents: &[&str], content: Content, mtime_s: i64) -> SnapshotInfo {
    SnapshotInfo {
        cap: Cap::from(cap),
        relpath: path(),
        author: author.into(),
        author_key: format!("key-{author}"),
        parents: parents.iter().map(|p| Cap::from(*p)).collect(),
        generation: 1 + parents.len() as u64,
        content,
        mtime_s,
    }
}

fn bytes() -> Content {
    Content::File {
        cap: Cap::from("URI:CHK:bytes"),
        size: 3,
        executable: false,
    }
}

/// The state a file shows right after a version with this mtime was written.
fn file(mtime_s: i64, ctime_ns: i64) -> LocalState {
    LocalState::File(PathState {
        size: 3,
        mtime_ns: mtime_s * 1_000_000_000,
        ctime_ns,
    })
}

/// The effects asked for so far, without the periodic scan and poll and
/// without publishing (left in flight: nothing here waits for it).
fn actions(e: &mut Engine<MemStore>) -> Vec<Action> {
    std::iter::from_fn(|| e.poll_action())
        .filter(|a| !matches!(a, Action::Scan | Action::Poll | Action::Publish { .. }))
        .collect()
}

/// A poll that finds `cap` for our path in `participant`'s directory.
fn listed(participant: &str, cap: &str) -> Event {
    let entries: Listing = [(entry_name(&path()), (path(), Cap::from(cap)))].into();
    Event::Polled(Ok(vec![RemoteListing {
        participant: participant.into(),
        shard: None,
        entries: Ok(entries),
        rejected: vec![],
        author: None,
    }]))
}

/// `participant` lists `theirs` for our path at `now`; the engine fetches
/// it and gets it at `now + 1`. Returns the effects it asks for then.
fn offer(
    e: &mut Engine<MemStore>,
    now: u64,
    participant: &str,
    theirs: SnapshotInfo,
) -> Vec<Action> {
    e.handle(now, listed(participant, theirs.cap.as_str()));
    let cap = only_fetch(&actions(e));
    assert_eq!(cap, theirs.cap);
    e.handle(
        now + 1,
        Event::Fetched {
            cap,
            result: Ok(theirs),
        },
    );
    actions(e)
}

fn scanned(state: LocalState) -> Event {
    Event::Scanned(Ok(ScanReport {
        entries: vec![(path(), state)],
        ..ScanReport::default()
    }))
}

fn only_fetch(actions: &[Action]) -> Cap {
    match actions {
        [Action::Fetch { cap, .. }] => cap.clone(),
        other => panic!("expected one fetch, got {other:?}"),
    }
}

/// A diverged winner with our version's bytes is still *written*, so that a
/// change the engine has not seen yet is caught by the last-moment check.
/// Here the user deleted the file before the winner arrived: the deletion
/// names only the version the user had, so the winner (which the user never
/// saw) is not deleted by it.
#[test]
fn a_winner_with_our_bytes_is_written_not_assumed() {
    let mut e = engine(MemStore::new());
    let ours = file(1, 10);
    e.handle(1, scanned(ours));
    let Action::Upload { op, parents, .. } = &actions(&mut e)[0] else {
        panic!("the new file is uploaded");
    };
    assert!(parents.is_empty());
    let mine = snap("X", "me", &[], bytes(), 1);
    e.handle(
        2,
        Event::Uploaded {
            op: *op,
            result: UploadOutcome::Done(mine),
        },
    );

    // Someone else makes a new version with the same bytes; it wins (later mtime).
    let write = offer(&mut e, 4, "other", snap("S", "other", &[], bytes(), 2));
    let [Action::Write {
        op, target, expect, ..
    }] = write.as_slice()
    else {
        panic!("the winner is written over our copy, got {write:?}");
    };
    assert_eq!((target, *expect), (&path(), ours));

    // The user had deleted the file meanwhile.
    e.handle(
        6,
        Event::Written {
            op: *op,
            result: WriteOutcome::Changed(LocalState::Absent),
        },
    );
    let upload = actions(&mut e);
    let [Action::Upload { local, parents, .. }] = upload.as_slice() else {
        panic!("the deletion is uploaded, got {upload:?}");
    };
    assert_eq!(*local, LocalState::Absent);
    assert_eq!(parents, &[Cap::from("X")], "it deleted our version only");
}

/// After a crash cut an adoption short, a newer version that supersedes the
/// one being adopted is taken in, and not forgotten when the file turns out
/// to show the adopted version.
#[test]
fn a_crash_cut_adoption_does_not_forget_what_superseded_it() {
    // Before the crash: our copy was a deletion D1, and a file F (which won
    // over it) was being written over it.
    let d1 = snap("D1", "other", &[], Content::Deleted, 8);
    let f = snap("F", "writer", &[], bytes(), 5);
    let mut store = MemStore::new();
    store
        .commit(&[
            Change::PutSnapshot(d1),
            Change::PutSnapshot(f),
            Change::PutCurrent(
                path(),
                Current {
                    snapshot: Cap::from("D1"),
                    local: LocalState::Absent,
                    published: true,
                    adopting: Some(Cap::from("F")),
                },
            ),
        ])
        .unwrap();
    let mut e = engine(store);
    assert!(actions(&mut e).is_empty());

    // Someone deleted F: D2 supersedes it, and wins over D1.
    let d2 = snap("D2", "deleter", &["F"], Content::Deleted, 16);
    let write = offer(&mut e, 1, "deleter", d2);
    let [Action::Write {
        op,
        content: Content::Deleted,
        expect: LocalState::Absent,
        ..
    }] = write.as_slice()
    else {
        panic!("D2 is written over our copy, got {write:?}");
    };

    // The crash-cut write had happened: the folder shows F.
    let adopted = file(5, 99);
    e.handle(3, scanned(adopted));
    e.handle(
        4,
        Event::Written {
            op: *op,
            result: WriteOutcome::Changed(adopted),
        },
    );
    let write = actions(&mut e);
    assert!(
        matches!(
            write.as_slice(),
            [Action::Write { content: Content::Deleted, expect, .. }] if *expect == adopted
        ),
        "the file, recognised as F, is deleted as D2 says: {write:?}"
    );
}

/// Answers every fetch the engine asks for from `grid` (a permanent
/// failure for a snapshot that is not there), until it asks for something
/// else; returns the other actions.
/// The grid's answer to a fetch of `cap`.
fn fetched(grid: &[SnapshotInfo], cap: Cap) -> Event {
    let result = grid
        .iter()
        .find(|s| s.cap == cap)
        .cloned()
        .ok_or_else(|| mf_core::engine::EffectError::permanent("no such object on the grid"));
    Event::Fetched { cap, result }
}

fn serve_fetches(e: &mut Engine<MemStore>, grid: &[SnapshotInfo], now: u64) -> Vec<Action> {
    let mut rest = Vec::new();
    loop {
        let batch = actions(e);
        if batch.is_empty() {
            return rest;
        }
        for a in batch {
            match a {
                Action::Fetch { cap, .. } => e.handle(now, fetched(grid, cap)),
                other => rest.push(other),
            }
        }
    }
}

/// Makes our first version of the path (`X`, no parents) and returns the engine.
fn with_our_version() -> Engine<MemStore> {
    let mut e = engine(MemStore::new());
    e.handle(1, scanned(file(100, 10)));
    let Action::Upload { op, generation, .. } = &actions(&mut e)[0] else {
        panic!("the new file is uploaded");
    };
    assert_eq!(*generation, 1, "a version without parents is generation 1");
    let mine = snap("X", "me", &[], bytes(), 100);
    let result = UploadOutcome::Done(mine);
    e.handle(2, Event::Uploaded { op: *op, result });
    e
}

fn other_bytes() -> Content {
    Content::File {
        cap: Cap::from("URI:CHK:other"),
        size: 5,
        executable: false,
    }
}

/// The target of the one write among `actions`.
fn write_target(actions: &[Action]) -> RelPath {
    match actions {
        [Action::Write { target, .. }] => target.clone(),
        other => panic!("expected one write, got {other:?}"),
    }
}

/// Serves the fetch of `snapshot`: nothing is done with it, and status
/// shows why (an error that says `why`).
fn rejected_in_status(e: &mut Engine<MemStore>, snapshot: SnapshotInfo, why: &str) {
    let rest = serve_fetches(e, &[snapshot], 4);
    assert!(rest.is_empty(), "nothing is done with it: {rest:?}");
    let errors = e.status().errors;
    assert!(
        errors.iter().any(|x| x.message.contains(why)),
        "shown in status: {errors:?}"
    );
}

/// A version that claims a generation its parents do not prove is rejected,
/// and says so in status; an honest one on the same parent is taken in.
#[test]
fn a_version_claiming_a_generation_its_parents_do_not_prove_is_rejected() {
    let mut e = with_our_version();
    let liar = SnapshotInfo {
        generation: 1_000_000_000_000,
        ..snap("L", "mallory", &["X"], other_bytes(), 200)
    };
    e.handle(3, listed("mallory", "L"));
    rejected_in_status(&mut e, liar, "claims generation 1000000000000");

    let honest = snap("H", "bob", &["X"], other_bytes(), 200);
    e.handle(5, listed("bob", "H"));
    let rest = serve_fetches(&mut e, &[honest], 6);
    assert_eq!(write_target(&rest), path(), "a proven edit is taken in");
}

/// Bob's directory itself, as listed (or not), declaring his author or
/// nothing.
fn bob_dir(
    entries: Result<Listing, mf_core::engine::EffectError>,
    declares: bool,
) -> RemoteListing {
    RemoteListing {
        participant: "bob".into(),
        shard: None,
        entries,
        rejected: vec![],
        author: declares.then(|| DeclaredAuthor {
            name: "bob".into(),
            verify_key: "key-bob".into(),
        }),
    }
}

/// Mallory's directory listing `F` for our path, and `F`: a version that
/// claims bob as its author but is signed by mallory's key.
fn mallory_forging_bob() -> (RemoteListing, SnapshotInfo) {
    let listing = RemoteListing {
        participant: "mallory".into(),
        shard: None,
        entries: Ok([(entry_name(&path()), (path(), Cap::from("F")))].into()),
        rejected: vec![],
        author: None,
    };
    let forged = SnapshotInfo {
        author_key: "key-mallory".into(),
        ..snap("F", "bob", &["X"], other_bytes(), 10_000)
    };
    (listing, forged)
}

/// A participant declares its author name and key in its own directory: a
/// version elsewhere that claims that name under another key is rejected
/// and shown in status, whatever it would win; the declared author's own
/// versions, and undeclared authors' (24.3's), are taken in.
#[test]
fn a_version_claiming_a_declared_author_under_another_key_is_rejected() {
    let mut e = with_our_version();
    let declaring = |entries: Listing| bob_dir(Ok(entries), true);
    let (mallory, forged) = mallory_forging_bob();
    e.handle(
        3,
        Event::Polled(Ok(vec![declaring(Listing::new()), mallory])),
    );
    rejected_in_status(&mut e, forged, "claims the author \"bob\"");
    let real = snap("H", "bob", &["X"], other_bytes(), 200);
    let entries = [(entry_name(&path()), (path(), Cap::from("H")))].into();
    e.handle(5, Event::Polled(Ok(vec![declaring(entries)])));
    let rest = serve_fetches(&mut e, &[real], 6);
    assert_eq!(write_target(&rest), path(), "bob's own edit is taken in");
}

/// A version claiming a participant's name is checked against what that
/// participant's directory declares, even when the directory cannot be
/// read: what it declared is kept in the store across restarts, and a
/// version claiming a participant whose directory was never read waits
/// until it can be checked (for up to ten minutes; before, both were
/// taken in unchecked).
#[test]
fn a_claimed_author_is_checked_even_while_its_directory_cannot_be_read() {
    let away = || mf_core::engine::EffectError::transient("the node is away");
    let (mallory, forged) = mallory_forging_bob();

    // Never read: the forgery waits, and is rejected once bob's directory
    // is read.
    let mut e = with_our_version();
    e.handle(
        3,
        Event::Polled(Ok(vec![bob_dir(Err(away()), false), mallory.clone()])),
    );
    let rest = serve_fetches(&mut e, std::slice::from_ref(&forged), 4);
    assert!(rest.is_empty(), "nothing is done with it yet: {rest:?}");
    let waiting = |e: &Engine<MemStore>| {
        e.status().errors.iter().any(|x| {
            x.message
                .contains("cannot check that the snapshot for a is bob's yet")
        })
    };
    assert!(waiting(&e), "{:?}", e.status().errors);
    e.handle(
        5,
        Event::Polled(Ok(vec![bob_dir(Ok(Listing::new()), true)])),
    );
    e.handle_timeout(600_000);
    rejected_in_status(&mut e, forged.clone(), "claims the author \"bob\"");

    // Read once, then restarted while bob's directory cannot be read: the
    // declaration kept in the store rejects the forgery at once.
    let mut e = engine(e.into_store());
    e.handle(
        3,
        Event::Polled(Ok(vec![bob_dir(Err(away()), false), mallory])),
    );
    rejected_in_status(&mut e, forged, "claims the author \"bob\"");

    // A directory that declares nothing any more is forgotten, across
    // restarts too.
    e.handle(
        5,
        Event::Polled(Ok(vec![bob_dir(Ok(Listing::new()), false)])),
    );
    let e = engine(e.into_store());
    assert!(e.into_store().load().unwrap().declared.is_empty());
}

/// A version whose parent cannot be read proves no generation: it ranks
/// below ours, whose history can be read, whatever it claims and however
/// late its modification time. It is kept as a conflict copy.
#[test]
fn a_version_whose_parent_cannot_be_read_does_not_outrank_ours() {
    let mut e = with_our_version();
    let orphan = SnapshotInfo {
        generation: 7,
        ..snap("T", "bob", &["GONE"], other_bytes(), 10_000)
    };
    e.handle(3, listed("bob", "T"));
    let rest = serve_fetches(&mut e, &[orphan], 4);
    assert_eq!(
        write_target(&rest),
        path().conflict_copy("bob"),
        "ours stays the file, theirs becomes the copy"
    );
}

/// A 24.3 peer writes no generation: its versions rank by the history
/// their parents prove, so a longer history wins over a later mtime, the
/// same on every participant.
#[test]
fn versions_without_a_claim_rank_by_their_proven_history() {
    let mut e = with_our_version();
    let unclaimed = |cap: &str, parents: &[&str], mtime: i64| SnapshotInfo {
        generation: 0,
        ..snap(cap, "py", parents, other_bytes(), mtime)
    };
    let chain = [
        unclaimed("A", &[], 1),
        unclaimed("B", &["A"], 2),
        unclaimed("C", &["B"], 3),
    ];
    e.handle(3, listed("py", "C"));
    let rest = serve_fetches(&mut e, &chain, 4);
    assert_eq!(
        write_target(&rest),
        path().conflict_copy("me"),
        "generation 3 beats our generation 1 despite its older mtime: ours becomes the copy"
    );
}

/// The engine says what each effect meant, for the daemon's log: an upload,
/// a rejected version (an error), a download.
#[test]
fn notices_tell_what_happened() {
    use mf_core::engine::Notice;
    let mut e = with_our_version();
    let notices: Vec<Notice> = std::iter::from_fn(|| e.poll_notice()).collect();
    assert!(
        matches!(notices.as_slice(), [Notice::Uploaded { path: p, .. }] if *p == path()),
        "{notices:?}"
    );
    let honest = snap("H", "bob", &["X"], other_bytes(), 200);
    e.handle(3, listed("bob", "H"));
    let rest = serve_fetches(&mut e, std::slice::from_ref(&honest), 4);
    let Action::Write { op, .. } = &rest[0] else {
        panic!("{rest:?}")
    };
    let result = WriteOutcome::Done(file(200, 11));
    e.handle(5, Event::Written { op: *op, result });
    let notices: Vec<Notice> = std::iter::from_fn(|| e.poll_notice()).collect();
    assert!(
        notices
            .iter()
            .any(|n| matches!(n, Notice::Downloaded { author, .. } if author == "bob")),
        "{notices:?}"
    );
}

/// Notices nobody collects never grow the engine without bound: the oldest
/// are dropped and counted.
#[test]
fn uncollected_notices_are_bounded() {
    use mf_core::engine::Notice;
    let mut e = engine(MemStore::new());
    for i in 0..5_000u64 {
        // Each failed poll is an error, hence a notice.
        e.handle(i, Event::Polled(Err(format!("grid away ({i})"))));
    }
    let notices: Vec<Notice> = std::iter::from_fn(|| e.poll_notice()).collect();
    let Some(Notice::Dropped { count }) = notices.first() else {
        panic!(
            "the first notice says how many were dropped: {:?}",
            &notices[..3]
        );
    };
    assert!(notices.len() < 5_000, "kept {}", notices.len());
    assert_eq!(*count as usize + notices.len() - 1, 5_000);
}

/// A retry that fails the same way again is one line in status, not a wall.
#[test]
fn a_repeated_error_is_listed_once() {
    let mut e = engine(MemStore::new());
    for i in 0..10 {
        e.handle(i, Event::Polled(Err("grid away".into())));
    }
    let errors = e.status().errors;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].at, 9, "with the time it last happened");
}

/// Status shows what is wrong now: a failed poll, or an upload that failed,
/// is forgotten once the same thing works.
#[test]
fn problems_that_stopped_are_cleared() {
    let mut e = engine(MemStore::new());
    e.handle(1, Event::Polled(Err("grid away".into())));
    assert_eq!(e.status().errors.len(), 1);
    e.handle(2, Event::Polled(Ok(vec![])));
    assert!(e.status().errors.is_empty(), "{:?}", e.status().errors);

    e.handle(3, scanned(file(100, 10)));
    let Action::Upload { op, .. } = &actions(&mut e)[0] else {
        panic!("the new file is uploaded");
    };
    let failed = UploadOutcome::Failed(mf_core::engine::EffectError::transient("grid away"));
    e.handle(
        4,
        Event::Uploaded {
            op: *op,
            result: failed,
        },
    );
    assert_eq!(e.status().errors.len(), 1);
    e.handle_timeout(60_000);
    let Action::Upload { op, .. } = &actions(&mut e)[0] else {
        panic!("the upload is retried");
    };
    let result = UploadOutcome::Done(snap("X", "me", &[], bytes(), 100));
    e.handle(60_001, Event::Uploaded { op: *op, result });
    assert!(e.status().errors.is_empty(), "{:?}", e.status().errors);
}

/// A scan's problems (a symlink, an unreadable directory) are listed once,
/// and go when a scan no longer finds them.
#[test]
fn scan_problems_are_current() {
    let mut e = engine(MemStore::new());
    let report = |problems: &[&str]| {
        Event::Scanned(Ok(ScanReport {
            problems: problems.iter().map(|p| p.to_string()).collect(),
            ..ScanReport::default()
        }))
    };
    e.handle(1, report(&["link: a symlink, not synced"]));
    e.handle(2, report(&["link: a symlink, not synced"]));
    assert_eq!(e.status().errors.len(), 1, "listed once");
    e.handle(3, report(&[]));
    assert!(e.status().errors.is_empty(), "{:?}", e.status().errors);
}

/// Drives every effect to success (fetches from `grid`, writes done,
/// publishes acknowledged) until none is left; returns what was published.
fn run_to_rest(e: &mut Engine<MemStore>, grid: &[SnapshotInfo], now: u64) -> Vec<PublishEntry> {
    let mut published = Vec::new();
    let mut ctime = 1_000;
    loop {
        let batch: Vec<Action> = std::iter::from_fn(|| e.poll_action()).collect();
        if batch
            .iter()
            .all(|a| matches!(a, Action::Scan | Action::Poll))
        {
            return published;
        }
        for a in batch {
            match a {
                Action::Fetch { cap, .. } => e.handle(now, fetched(grid, cap)),
                Action::Write { op, mtime_s, .. } => {
                    ctime += 1;
                    let result = WriteOutcome::Done(file(mtime_s, ctime));
                    e.handle(now, Event::Written { op, result });
                }
                Action::Publish { op, entries } => {
                    published.extend(entries);
                    e.handle(
                        now,
                        Event::Published {
                            op,
                            result: Ok(()),
                            took: 0,
                        },
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// A magic-folder 24.3 peer reads only a path's own entry in our directory.
/// When its version (no generation) wins over ours, ours stays in that
/// entry, so the 24.3 peer meets it as a conflict and keeps both, as we do;
/// our other participants still see both versions and pick the same winner.
#[test]
fn a_24_3_winner_over_our_version_leaves_ours_where_24_3_reads() {
    let mut e = engine(MemStore::new());
    e.handle(1, scanned(file(100, 10)));
    let Action::Upload { op, .. } = &actions(&mut e)[0] else {
        panic!("the new file is uploaded");
    };
    let mine = snap("X", "me", &[], bytes(), 100);
    let result = UploadOutcome::Done(mine.clone());
    e.handle(2, Event::Uploaded { op: *op, result });
    let theirs = SnapshotInfo {
        generation: 0,
        ..snap("W", "py", &[], other_bytes(), 10_000)
    };
    e.handle(3, listed("py", "W"));
    let published = run_to_rest(&mut e, &[mine, theirs], 4);
    let at = |name: &str| {
        published
            .iter()
            .rev()
            .find(|p| p.name == name)
            .map(|p| p.snapshot.as_str().to_owned())
    };
    assert_eq!(at("a").as_deref(), Some("X"), "{published:?}");
    assert_eq!(at("a@cme").as_deref(), Some("X"), "{published:?}");
    assert_eq!(
        e.status().conflicts,
        [(path(), "me".to_owned())],
        "24.3's version won here: ours is the copy"
    );
}

/// Beyond `max_pending_effects`, paths wait to be decided instead of being
/// queued as actions: a scan of ten new files asks for three uploads, and
/// one more as each finishes, until all ten are uploaded. (The publish it
/// asks for is left in flight here, so it holds one of the three places.)
#[test]
fn effects_are_asked_for_only_while_there_is_room() {
    let mut e = engine_with_room(MemStore::new(), 3);
    let names: Vec<RelPath> = (0..10)
        .map(|i| RelPath::new(&format!("f{i}")).unwrap())
        .collect();
    e.handle(
        1,
        Event::Scanned(Ok(ScanReport {
            entries: names.iter().map(|p| (p.clone(), file(1, 10))).collect(),
            ..ScanReport::default()
        })),
    );
    let mut pending = actions(&mut e);
    assert_eq!(pending.len(), 3, "{pending:?}");
    assert!(
        e.poll_timeout().is_none_or(|t| t > 1),
        "waiting work does not wake the driver while there is no room"
    );
    let mut uploaded = Vec::new();
    let mut now = 2;
    while !pending.is_empty() {
        assert!(pending.len() <= 3, "at most three at a time: {pending:?}");
        let Action::Upload { op, path, .. } = pending.remove(0) else {
            panic!("only uploads here");
        };
        let info = SnapshotInfo {
            cap: Cap::from(format!("URI:snap-{path}").as_str()),
            relpath: path.clone(),
            ..snap("unused", "me", &[], bytes(), 1)
        };
        e.handle(
            now,
            Event::Uploaded {
                op,
                result: UploadOutcome::Done(info),
            },
        );
        uploaded.push(path);
        pending.extend(actions(&mut e));
        now += 1;
    }
    uploaded.sort();
    assert_eq!(uploaded, names, "every file uploaded once");
    assert_eq!(e.status().queued, 0);
}

/// A sharded directory is listed shard by shard: a listing of one shard
/// leaves what the others listed alone (nothing in them is looked at
/// again), and a shard that cannot be listed is an error of its own, named,
/// that the other shards' listings do not clear — only its own does.
#[test]
fn shards_are_listed_and_fail_on_their_own() {
    let mut e = engine(MemStore::new());
    let shard = |n: u8, entries: Result<Listing, mf_core::engine::EffectError>| RemoteListing {
        participant: "bob".into(),
        shard: ShardId::parse(&format!("{n:02x}")),
        entries,
        rejected: vec![],
        author: None,
    };
    let one: Listing = [(entry_name(&path()), (path(), Cap::from("H")))].into();
    e.handle(1, Event::Polled(Ok(vec![shard(1, Ok(one.clone()))])));
    assert_eq!(only_fetch(&actions(&mut e)), Cap::from("H"));
    // Shard 2 changes and shard 3 fails: shard 1's entry is not new again.
    let b = RelPath::new("b").unwrap();
    let two: Listing = [(entry_name(&b), (b.clone(), Cap::from("B")))].into();
    let broken = mf_core::engine::EffectError::permanent("a shard of another folder");
    e.handle(
        2,
        Event::Polled(Ok(vec![shard(2, Ok(two.clone())), shard(3, Err(broken))])),
    );
    let fetched: Vec<Cap> = actions(&mut e)
        .into_iter()
        .filter_map(|a| match a {
            Action::Fetch { cap, .. } => Some(cap),
            _ => None,
        })
        .collect();
    assert_eq!(fetched, vec![Cap::from("B")], "only shard 2's entry is new");
    let named = |e: &Engine<MemStore>| {
        e.status().errors.iter().any(|x| {
            x.message
                .contains("cannot list bob's shard 03: a shard of another folder")
        })
    };
    assert!(named(&e), "{:?}", e.status().errors);
    e.handle(3, Event::Polled(Ok(vec![shard(1, Ok(one))])));
    assert!(named(&e), "another shard's listing does not clear it");
    e.handle(4, Event::Polled(Ok(vec![shard(3, Ok(Listing::new()))])));
    assert!(!named(&e), "its own listing does");
}

/// Versions we adopted are published together once adoptions pause for
/// two seconds (or the first has waited thirty): while a burst of files
/// arrives, recording each in our directory would rewrite it for nothing.
/// Our own changes are published at once, with whatever adoptions wait.
#[test]
fn adoptions_wait_for_a_pause_and_our_changes_do_not() {
    let publishes = |e: &mut Engine<MemStore>| -> Vec<Vec<PublishEntry>> {
        std::iter::from_fn(|| e.poll_action())
            .filter_map(|a| match a {
                Action::Publish { entries, .. } => Some(entries),
                _ => None,
            })
            .collect()
    };
    let mut e = engine(MemStore::new());
    e.handle(1, Event::Scanned(Ok(ScanReport::default())));
    let write = offer(&mut e, 2, "other", snap("S", "other", &[], bytes(), 2));
    let [Action::Write { op, .. }] = write.as_slice() else {
        panic!("the new file is written: {write:?}");
    };
    e.handle(
        10,
        Event::Written {
            op: *op,
            result: WriteOutcome::Done(file(2, 11)),
        },
    );
    assert!(publishes(&mut e).is_empty(), "an adoption waits");
    assert!(
        e.poll_timeout().is_some_and(|t| t <= 2_010),
        "a timer for it"
    );
    e.handle_timeout(2_009);
    assert!(publishes(&mut e).is_empty(), "still within the pause");
    e.handle_timeout(2_010);
    let published = publishes(&mut e);
    assert_eq!(published.len(), 1);
    assert_eq!(published[0][0].snapshot, Cap::from("S"));
}

/// The pause that lets adoptions be published starts only when no peer's
/// version is on its way in: a reader's publish in the middle of a download
/// would load the grid the download waits on. The first adoption's
/// patience still bounds the wait.
#[test]
fn adoptions_wait_while_more_are_arriving() {
    let publishes = |e: &mut Engine<MemStore>| -> usize {
        std::iter::from_fn(|| e.poll_action())
            .filter(|a| matches!(a, Action::Publish { .. }))
            .count()
    };
    // Two of the other's files listed at once, both fetched: two writes.
    let two_writes = |e: &mut Engine<MemStore>| -> Vec<mf_core::engine::OpId> {
        e.handle(1, Event::Scanned(Ok(ScanReport::default())));
        let b = RelPath::new("b").unwrap();
        let mut theirs = [
            snap("S", "other", &[], bytes(), 2),
            snap("B", "other", &[], bytes(), 2),
        ];
        theirs[1].relpath = b;
        let entries: Listing = theirs
            .iter()
            .map(|s| (entry_name(&s.relpath), (s.relpath.clone(), s.cap.clone())))
            .collect();
        e.handle(
            2,
            Event::Polled(Ok(vec![RemoteListing {
                participant: "other".into(),
                shard: None,
                entries: Ok(entries),
                rejected: vec![],
                author: None,
            }])),
        );
        assert_eq!(actions(e).len(), 2, "both fetched");
        for s in theirs {
            e.handle(
                3,
                Event::Fetched {
                    cap: s.cap.clone(),
                    result: Ok(s),
                },
            );
        }
        actions(e)
            .into_iter()
            .map(|a| match a {
                Action::Write { op, .. } => op,
                other => panic!("both are written: {other:?}"),
            })
            .collect()
    };
    let written = |op: mf_core::engine::OpId| Event::Written {
        op,
        result: WriteOutcome::Done(file(2, 11)),
    };

    let mut e = engine(MemStore::new());
    let ops = two_writes(&mut e);
    e.handle(10, written(ops[0]));
    e.handle_timeout(2_010);
    assert_eq!(
        publishes(&mut e),
        0,
        "another version is still being written"
    );
    e.handle(3_000, written(ops[1]));
    e.handle_timeout(4_999);
    assert_eq!(
        publishes(&mut e),
        0,
        "the pause starts after the last write"
    );
    e.handle_timeout(5_000);
    assert_eq!(publishes(&mut e), 1);

    // A write that never ends holds the publish for the patience only.
    let mut e = engine(MemStore::new());
    let ops = two_writes(&mut e);
    e.handle(10, written(ops[0]));
    e.handle_timeout(30_009);
    assert_eq!(publishes(&mut e), 0);
    e.handle_timeout(30_010);
    assert_eq!(
        publishes(&mut e),
        1,
        "thirty seconds after the first adoption"
    );
}

/// A publish of adoptions alone also waits nine times as long as the last
/// publish took, even with nothing in flight: nobody waits for it, and a
/// reader catching up with each batch a writer publishes would otherwise
/// rewrite its own directory after each.
#[test]
fn adoptions_alone_wait_for_the_last_publishs_share_of_the_time() {
    let mut e = engine(MemStore::new());
    e.handle(1, Event::Scanned(Ok(ScanReport::default())));
    let adopt = |e: &mut Engine<MemStore>, now: u64, theirs: SnapshotInfo| {
        let write = offer(e, now, "other", theirs);
        let [Action::Write { op, .. }] = write.as_slice() else {
            panic!("written: {write:?}");
        };
        e.handle(
            now + 8,
            Event::Written {
                op: *op,
                result: WriteOutcome::Done(file(2, now as i64)),
            },
        );
    };
    let publish = |e: &mut Engine<MemStore>| {
        std::iter::from_fn(|| e.poll_action()).find_map(|a| match a {
            Action::Publish { op, .. } => Some(op),
            _ => None,
        })
    };
    adopt(&mut e, 2, snap("S", "other", &[], bytes(), 2));
    e.handle_timeout(2_010);
    let op = publish(&mut e).expect("the first adoption is published after the pause");
    e.handle(
        3_010,
        Event::Published {
            op,
            result: Ok(()),
            took: 1_000,
        },
    );
    // That publish took a second: the next adoption's waits nine.
    adopt(&mut e, 4_000, snap("T", "other", &["S"], bytes(), 3));
    e.handle_timeout(6_010);
    assert!(publish(&mut e).is_none(), "the pause alone is not enough");
    e.handle_timeout(12_009);
    assert!(publish(&mut e).is_none(), "still within its share");
    assert_eq!(e.poll_timeout(), Some(12_010), "a timer for it");
    e.handle_timeout(12_010);
    assert!(publish(&mut e).is_some());
}

/// An upload of ours is published at once.
#[test]
fn our_change_is_published_at_once() {
    let mut e = engine(MemStore::new());
    e.handle(1, scanned(file(1, 10)));
    let all = std::iter::from_fn(|| e.poll_action()).collect::<Vec<_>>();
    let Some(Action::Upload { op, .. }) = all.iter().find(|a| matches!(a, Action::Upload { .. }))
    else {
        panic!("the new file is uploaded: {all:?}");
    };
    let mine = snap("X", "me", &[], bytes(), 1);
    e.handle(
        2,
        Event::Uploaded {
            op: *op,
            result: UploadOutcome::Done(mine),
        },
    );
    let publish =
        std::iter::from_fn(|| e.poll_action()).find(|a| matches!(a, Action::Publish { .. }));
    assert!(publish.is_some(), "published without waiting");
}

/// While uploads are in flight, the next publish waits nine
/// times as long as the last one took (at most five minutes), and then
/// carries everything uploaded meanwhile: a directory whose rewrite grows
/// with the folder is not rewritten back to back through a bulk. A failed
/// publish sets no pace (it is retried at its backoff's). Once nothing is
/// in flight the publish goes at once.
#[test]
fn publishes_take_a_tenth_of_a_burst_and_the_last_goes_at_once() {
    let paths: Vec<RelPath> = ["a", "b", "c", "d"]
        .iter()
        .map(|p| RelPath::new(p).unwrap())
        .collect();
    let mut e = engine(MemStore::new());
    e.handle(
        1,
        Event::Scanned(Ok(ScanReport {
            entries: paths.iter().map(|p| (p.clone(), file(1, 10))).collect(),
            ..ScanReport::default()
        })),
    );
    // The periodic scan and poll are left in flight: no timer but ours.
    let uploads: Vec<(RelPath, mf_core::engine::OpId)> = std::iter::from_fn(|| e.poll_action())
        .filter_map(|a| match a {
            Action::Upload { op, path, .. } => Some((path, op)),
            _ => None,
        })
        .collect();
    assert_eq!(uploads.len(), 4, "{uploads:?}");
    let publishes = |e: &mut Engine<MemStore>| {
        std::iter::from_fn(|| e.poll_action())
            .filter_map(|a| match a {
                Action::Publish { op, entries } => Some((op, entries.len())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let uploaded = |e: &mut Engine<MemStore>, now: u64, i: usize| {
        let (path, op) = &uploads[i];
        let mut mine = snap(&format!("X{i}"), "me", &[], bytes(), 1);
        mine.relpath = path.clone();
        e.handle(
            now,
            Event::Uploaded {
                op: *op,
                result: UploadOutcome::Done(mine),
            },
        );
        publishes(e)
    };
    let published = |e: &mut Engine<MemStore>, now: u64, op, result, took| {
        e.handle(now, Event::Published { op, result, took });
    };
    // The first publish goes at once, and takes a second.
    let [(op, 1)] = uploaded(&mut e, 10, 0)[..] else {
        panic!("published at once");
    };
    published(&mut e, 1_010, op, Ok(()), 1_000);
    // b is uploaded while c and d still are: its publish waits until nine
    // seconds after the first one ended.
    assert!(uploaded(&mut e, 1_020, 1).is_empty(), "b waits");
    assert_eq!(e.poll_timeout(), Some(10_010), "until its share is earned");
    e.handle_timeout(10_009);
    assert!(publishes(&mut e).is_empty(), "still waiting");
    e.handle_timeout(10_010);
    let [(op, 1)] = publishes(&mut e)[..] else {
        panic!("b is published once its share is earned");
    };
    // That publish fails after a minute: retried at its backoff, not paced.
    let failed = mf_core::engine::EffectError::transient("the node went away");
    published(&mut e, 70_010, op, Err(failed), 60_000);
    assert_eq!(e.poll_timeout(), Some(71_010), "the backoff's");
    e.handle_timeout(71_010);
    let [(op, 1)] = publishes(&mut e)[..] else {
        panic!("retried");
    };
    // The retry takes a minute too: the next waits five minutes, not nine.
    published(&mut e, 131_010, op, Ok(()), 60_000);
    assert!(uploaded(&mut e, 131_020, 2).is_empty(), "c waits");
    assert_eq!(e.poll_timeout(), Some(431_010), "at most five minutes");
    // d's upload ends before that: nothing is in flight any more, so c and
    // d are published together, at once.
    let last = uploaded(&mut e, 200_000, 3);
    assert!(
        matches!(last[..], [(_, 2)]),
        "the last upload's publish goes at once, with c: {last:?}"
    );
}

/// A publish covers the versions it was asked to publish, not the ones
/// recorded while it was written: a path whose new version was uploaded
/// meanwhile stays unpublished when it ends, and the next publish carries
/// that version.
#[test]
fn a_version_recorded_while_a_publish_is_written_waits_for_the_next() {
    let mut e = engine(MemStore::new());
    let upload = |e: &mut Engine<MemStore>| {
        std::iter::from_fn(|| e.poll_action())
            .find_map(|a| match a {
                Action::Upload { op, .. } => Some(op),
                _ => None,
            })
            .expect("an upload")
    };
    let publish = |e: &mut Engine<MemStore>| {
        std::iter::from_fn(|| e.poll_action()).find_map(|a| match a {
            Action::Publish { op, entries } => Some((op, entries)),
            _ => None,
        })
    };
    let uploaded = |e: &mut Engine<MemStore>, now: u64, op, cap: &str| {
        e.handle(
            now,
            Event::Uploaded {
                op,
                result: UploadOutcome::Done(snap(cap, "me", &[], bytes(), 1)),
            },
        );
        publish(e)
    };
    e.handle(1, scanned(file(1, 10)));
    let first = upload(&mut e);
    let (first_publish, entries) = uploaded(&mut e, 2, first, "V1").expect("published at once");
    assert_eq!(entries[0].snapshot, Cap::from("V1"));
    // The file changes and its new version is uploaded while V1 is being
    // published (the next publish is held by the one in flight).
    e.handle(3, scanned(file(2, 20)));
    let second = upload(&mut e);
    assert!(uploaded(&mut e, 4, second, "V2").is_none());
    e.handle(
        5,
        Event::Published {
            op: first_publish,
            result: Ok(()),
            took: 3,
        },
    );
    assert_eq!(e.status().unpublished, 1, "V2 is not published yet");
    let (second_publish, entries) = publish(&mut e).expect("V2 goes next");
    assert_eq!(entries[0].snapshot, Cap::from("V2"));
    e.handle(
        6,
        Event::Published {
            op: second_publish,
            result: Ok(()),
            took: 1,
        },
    );
    assert_eq!(e.status().unpublished, 0);
}

/// The next periodic poll waits four times as long as the last one took
/// (at most a minute) when that is longer than the poll interval: a busy
/// node is not polled back to back. A quick poll is followed at the
/// interval.
#[test]
fn a_slow_fruitless_poll_spaces_the_next() {
    let mut e = engine(MemStore::new());
    e.handle_timeout(0);
    assert_eq!(polls(&mut e), 1);
    // The start-up scan stays in flight: no timer but the poll's.
    e.handle(2_000, Event::Polled(Ok(vec![])));
    assert_eq!(e.poll_timeout(), Some(10_000), "four times its 2 s");
    e.handle_timeout(9_999);
    assert_eq!(polls(&mut e), 0);
    e.handle_timeout(10_000);
    assert_eq!(polls(&mut e), 1);
    e.handle(10_050, Event::Polled(Ok(vec![])));
    assert_eq!(e.poll_timeout(), Some(11_050), "a quick one: the interval");
    // One that took an hour (the machine slept): the next within a minute.
    e.handle_timeout(11_050);
    assert_eq!(polls(&mut e), 1);
    e.handle(3_611_050, Event::Polled(Ok(vec![])));
    assert_eq!(e.poll_timeout(), Some(3_671_050), "at most a minute");
    // A slow one that found changes sets no pace: more may be coming.
    e.handle_timeout(3_671_050);
    assert_eq!(polls(&mut e), 1);
    e.handle(3_681_050, listed("other", "S"));
    reject_fetches(&mut e, 3_681_050);
    assert_eq!(e.poll_timeout(), Some(3_681_300), "changes set no pace");
}

/// How many polls the engine asked for since last asked (its other
/// effects are dropped).
fn polls(e: &mut Engine<MemStore>) -> usize {
    std::iter::from_fn(|| e.poll_action())
        .filter(|a| matches!(a, Action::Poll))
        .count()
}

/// Rejects every snapshot the engine asked for, at once: a fetch left in
/// flight would hold the next poll back (see
/// `a_poll_waits_for_the_reads_of_what_earlier_polls_found`).
fn reject_fetches(e: &mut Engine<MemStore>, now: u64) {
    let asked: Vec<Action> = std::iter::from_fn(|| e.poll_action()).collect();
    for action in asked {
        if let Action::Fetch { cap, .. } = action {
            let result = Err(mf_core::engine::EffectError::permanent("not read here"));
            e.handle(now, Event::Fetched { cap, result });
        }
    }
}

/// While what earlier polls found is fetched and written, the next
/// periodic poll waits for that to end (on Tahoe the same node serves
/// both), by at most two poll intervals. An asked-for poll goes at once.
#[test]
fn a_poll_waits_for_the_reads_of_what_earlier_polls_found() {
    let mut e = engine(MemStore::new());
    e.handle_timeout(0);
    assert_eq!(polls(&mut e), 1);
    e.handle(10, listed("other", "S"));
    let fetch = only_fetch(&actions(&mut e));
    assert_eq!(
        e.poll_timeout(),
        Some(2_260),
        "due at 260 (a burst's pace), held while the fetch runs"
    );
    e.handle_timeout(2_000);
    assert_eq!(polls(&mut e), 0, "the fetch still runs");
    let theirs = snap("S", "other", &[], bytes(), 5);
    e.handle(
        2_100,
        Event::Fetched {
            cap: fetch,
            result: Ok(theirs),
        },
    );
    let [Action::Write { op, .. }] = actions(&mut e)[..] else {
        panic!("the version is written");
    };
    assert_eq!(polls(&mut e), 0, "its write still runs");
    let result = WriteOutcome::Done(file(5, 11));
    e.handle(2_150, Event::Written { op, result });
    assert_eq!(polls(&mut e), 1, "the reads ended: the poll goes at once");

    // A fetch that does not end holds the poll two intervals at most.
    e.handle(2_200, listed("other", "T"));
    only_fetch(&actions(&mut e));
    assert_eq!(e.poll_timeout(), Some(4_450), "due at 2,450, held 2 s");
    e.handle_timeout(4_449);
    assert_eq!(polls(&mut e), 0);
    e.handle_timeout(4_450);
    assert_eq!(polls(&mut e), 1, "held no longer");

    // Asked for, it goes at once however much is read.
    e.handle(4_460, Event::Polled(Ok(vec![])));
    e.request_poll();
    assert_eq!(polls(&mut e), 1);
}

/// For one interval after a poll that found changes, polls come four
/// times as often: the rest of a burst is seen a quarter of an interval
/// after it is published. Then the folder polls at the interval again.
#[test]
fn a_poll_that_found_changes_is_followed_sooner() {
    let mut e = engine(MemStore::new());
    e.handle_timeout(0);
    let poll = |e: &mut Engine<MemStore>, at: u64, result: Event| {
        e.handle_timeout(at);
        assert_eq!(polls(e), 1, "a poll at {at}");
        e.handle(at + 10, result);
        reject_fetches(e, at + 10);
        e.poll_timeout()
    };
    assert_eq!(poll(&mut e, 0, Event::Polled(Ok(vec![]))), Some(1_010));
    assert_eq!(poll(&mut e, 1_010, listed("other", "S")), Some(1_270));
    assert_eq!(
        poll(&mut e, 1_270, Event::Polled(Ok(vec![]))),
        Some(1_530),
        "still within the interval after the changes"
    );
    assert_eq!(poll(&mut e, 1_530, Event::Polled(Ok(vec![]))), Some(1_790));
    assert_eq!(poll(&mut e, 1_790, Event::Polled(Ok(vec![]))), Some(2_050));
    assert_eq!(
        poll(&mut e, 2_050, Event::Polled(Ok(vec![]))),
        Some(3_060),
        "the burst is over: the interval"
    );
    // A participant that cannot be read is reported at every poll: no burst.
    let failed = Event::Polled(Ok(vec![RemoteListing {
        participant: "other".into(),
        shard: None,
        entries: Err(mf_core::engine::EffectError::permanent("not a directory")),
        rejected: vec![],
        author: None,
    }]));
    assert_eq!(poll(&mut e, 3_060, failed), Some(4_070));
}

/// A small file's content travels in a literal capability, which the store
/// keeps by reference only (`Content::kept`): a version whose write a crash
/// cut short is read from the grid again, and written whole.
#[test]
fn a_literal_kept_by_reference_is_read_again_before_it_is_written() {
    let literal = Content::File {
        cap: Cap::from("URI:LIT:mfrgg"),
        size: 3,
        executable: false,
    };
    let theirs = snap("T", "other", &[], literal.clone(), 5);
    let mut e = engine(MemStore::new());
    let write = offer(&mut e, 1, "other", theirs.clone());
    assert!(
        matches!(write.as_slice(), [Action::Write { content, .. }] if *content == literal),
        "written from the snapshot just read: {write:?}"
    );
    let kept = e.store().snapshot(&theirs.cap).unwrap().unwrap();
    assert!(kept.content.is_by_reference(), "{kept:?}");
    assert_eq!(kept, theirs.kept());

    // The process dies before the write's result; the next run finds T
    // listed again and has only the reference.
    let mut e = engine(e.into_store());
    assert!(actions(&mut e).is_empty());
    e.handle(2, listed("other", "T"));
    assert_eq!(only_fetch(&actions(&mut e)), theirs.cap, "read again");
    e.handle(
        3,
        Event::Fetched {
            cap: theirs.cap.clone(),
            result: Ok(theirs.clone()),
        },
    );
    let write = actions(&mut e);
    assert!(
        matches!(write.as_slice(), [Action::Write { content, .. }] if *content == literal),
        "then written whole: {write:?}"
    );
}

/// A version the store keeps by reference whose snapshot can no longer be
/// read is shown as rejected, and not asked for again and again.
#[test]
fn a_literal_whose_snapshot_is_gone_is_rejected_once() {
    let literal = Content::File {
        cap: Cap::from("URI:LIT:mfrgg"),
        size: 3,
        executable: false,
    };
    let theirs = snap("T", "other", &[], literal, 5);
    let mut store = MemStore::new();
    store.commit(&[Change::PutSnapshot(theirs.kept())]).unwrap();
    let mut e = engine(store);
    assert!(actions(&mut e).is_empty());
    e.handle(1, listed("other", "T"));
    assert_eq!(only_fetch(&actions(&mut e)), theirs.cap, "read again");
    e.handle(2, fetched(&[], theirs.cap.clone()));
    assert!(actions(&mut e).is_empty());
    let errors = e.status().errors;
    assert!(
        errors.iter().any(|x| x.message.contains("rejected")),
        "shown in status: {errors:?}"
    );
    e.handle(5, listed("other", "T"));
    assert!(actions(&mut e).is_empty(), "not asked for again");
}

/// A directory appears (our writes of its files made it) while a peer's
/// version of it is being fetched: theirs is taken in, and ours is not
/// published as a rival with no history. Were theirs a file, ours would be
/// a change of our own.
#[test]
fn a_directory_made_for_a_peers_files_is_theirs() {
    for (theirs, ours_uploaded) in [(Content::Dir, false), (bytes(), true)] {
        let mut e = engine(MemStore::new());
        e.handle(1, listed("other", "D"));
        let cap = only_fetch(&actions(&mut e));
        e.handle(2, scanned(LocalState::Dir));
        assert_eq!(actions(&mut e), vec![], "nothing before theirs is known");
        let peer = snap("D", "other", &[], theirs.clone(), 1);
        e.handle(
            3,
            Event::Fetched {
                cap,
                result: Ok(peer),
            },
        );
        let next = actions(&mut e);
        if ours_uploaded {
            let [Action::Upload { local, parents, .. }] = next.as_slice() else {
                panic!("our directory is a change of our own, got {next:?}");
            };
            assert_eq!((*local, parents.len()), (LocalState::Dir, 0));
            continue;
        }
        let [Action::Write {
            op,
            target,
            content,
            expect,
            ..
        }] = next.as_slice()
        else {
            panic!("their directory is taken in, got {next:?}");
        };
        assert_eq!(
            (target, content, *expect),
            (&path(), &Content::Dir, LocalState::Absent)
        );
        e.handle(
            4,
            Event::Written {
                op: *op,
                result: WriteOutcome::Done(LocalState::Dir),
            },
        );
        assert_eq!(actions(&mut e), vec![], "nothing of ours to upload");
        e.handle(5, scanned(LocalState::Dir));
        assert_eq!(actions(&mut e), vec![], "the directory is theirs");
    }
}

/// A new directory is published no later than what is in it: a file whose
/// directory's upload is still in flight waits for it (a reader that got
/// the file first would make the directory and could take it for its own).
#[test]
fn a_directory_is_published_with_or_before_its_files() {
    let published = |e: &mut Engine<MemStore>, now: u64| -> Vec<Vec<String>> {
        let publishes: Vec<_> = std::iter::from_fn(|| e.poll_action())
            .filter_map(|a| match a {
                Action::Publish { op, entries } => Some((op, entries)),
                _ => None,
            })
            .collect();
        let mut names = Vec::new();
        for (op, entries) in publishes {
            names.push(entries.into_iter().map(|p| p.name).collect());
            let (result, took) = (Ok(()), 0);
            e.handle(now, Event::Published { op, result, took });
        }
        names
    };
    // An earlier publish, so that one is not held back by its pace.
    let mut e = with_our_version();
    assert_eq!(published(&mut e, 3), vec![vec![entry_name(&path())]]);
    let (dir, inside) = (RelPath::new("d").unwrap(), RelPath::new("d/f").unwrap());
    e.handle(
        4,
        Event::Scanned(Ok(ScanReport {
            entries: vec![
                (path(), file(100, 10)),
                (dir.clone(), LocalState::Dir),
                (inside.clone(), file(1, 10)),
            ],
            ..ScanReport::default()
        })),
    );
    let mut uploads = std::collections::BTreeMap::new();
    for a in std::iter::from_fn(|| e.poll_action()) {
        if let Action::Upload { op, path, .. } = a {
            uploads.insert(path, op);
        }
    }
    let done = |cap: &str, path: &RelPath, content: Content| SnapshotInfo {
        relpath: path.clone(),
        ..snap(cap, "me", &[], content, 1)
    };
    e.handle(
        5,
        Event::Uploaded {
            op: uploads[&inside],
            result: UploadOutcome::Done(done("F", &inside, bytes())),
        },
    );
    assert_eq!(
        published(&mut e, 5),
        Vec::<Vec<String>>::new(),
        "the file waits"
    );
    assert!(
        e.poll_timeout().is_some_and(|t| t > 5),
        "for the directory's upload, not for a timer"
    );
    e.handle(
        6,
        Event::Uploaded {
            op: uploads[&dir],
            result: UploadOutcome::Done(done("D", &dir, Content::Dir)),
        },
    );
    assert_eq!(
        published(&mut e, 6),
        vec![vec![entry_name(&dir), entry_name(&inside)]],
        "both go together"
    );
}

/// A scan walks while the engine writes: what it says of a path we wrote
/// meanwhile is no news. Here a conflict's copy is written after the walk
/// passed its directory: the scan does not list it, and that is not the
/// user removing it (which would resolve the conflict everywhere). The
/// next scan that misses the copy is the user's doing.
#[test]
fn a_scan_says_nothing_of_what_we_wrote_while_it_walked() {
    let mut e = with_our_version();
    // A diverged version that loses to ours (an older mtime): its copy is
    // written beside our file.
    let write = offer(
        &mut e,
        3,
        "other",
        snap("Y", "other", &[], other_bytes(), 50),
    );
    let [Action::Write { op, target, .. }] = write.as_slice() else {
        panic!("the loser's copy is written, got {write:?}");
    };
    assert_eq!(*target, path().conflict_copy("other"));
    e.request_scan();
    e.handle_timeout(4);
    let copy = LocalState::File(PathState {
        size: 5,
        mtime_ns: 50_000_000_000,
        ctime_ns: 11,
    });
    e.handle(
        5,
        Event::Written {
            op: *op,
            result: WriteOutcome::Done(copy),
        },
    );
    // The walk had passed the directory before the copy was there.
    e.handle(6, scanned(file(100, 10)));
    assert!(actions(&mut e).is_empty(), "nothing to do");
    assert_eq!(e.status().conflicts, [(path(), "other".to_owned())]);

    // Later the user removes the copy, and a scan is all that tells.
    e.request_scan();
    e.handle_timeout(7);
    e.handle(8, scanned(file(100, 10)));
    let resolution = actions(&mut e);
    let [Action::Upload { parents, .. }] = resolution.as_slice() else {
        panic!("the resolution is uploaded, got {resolution:?}");
    };
    assert_eq!(parents, &[Cap::from("X"), Cap::from("Y")]);
}
