//! Engine rules driven event by event, where the simulator would need a
//! lucky interleaving: here the order of results is written out exactly.

use mf_core::engine::{
    Action, Engine, EngineConfig, Event, RemoteListing, ScanReport, UploadOutcome, WriteOutcome,
};
use mf_core::relpath::RelPath;
use mf_core::snapshot::{entry_name, Cap, Content, Listing, SnapshotInfo};
use mf_core::store::{Change, Current, LocalState, MemStore, PathState, Store};

fn path() -> RelPath {
    RelPath::new("a").unwrap()
}

fn engine(store: MemStore) -> Engine<MemStore> {
    let cfg = EngineConfig {
        me: "me".into(),
        poll_interval: 1_000,
        scan_interval: 15_000,
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
        entries: Ok(entries),
        rejected: vec![],
    }]))
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
    e.handle(4, listed("other", "S"));
    let cap = only_fetch(&actions(&mut e));
    let theirs = snap("S", "other", &[], bytes(), 2);
    e.handle(
        5,
        Event::Fetched {
            cap,
            result: Ok(theirs),
        },
    );
    let write = actions(&mut e);
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
    e.handle(1, listed("deleter", "D2"));
    let cap = only_fetch(&actions(&mut e));
    let d2 = snap("D2", "deleter", &["F"], Content::Deleted, 16);
    e.handle(
        2,
        Event::Fetched {
            cap,
            result: Ok(d2),
        },
    );
    let write = actions(&mut e);
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
