//! Packed snapshots (`mf_daemon::pack`) through the executor and the real
//! embedded grid: uploads made at once are packed, a reader fetches and
//! verifies each member and writes its file, a failed pack write fails its
//! uploads so that a retry succeeds, and a hostile directory's entries —
//! a member that is not there, a member filed under another path, a member
//! number spelt two ways, a capability with a `#`, a pack linked as a
//! snapshot — are each refused by name. (The group commit itself, members
//! sharing a pack, is `mf_daemon::pack`'s unit test: deterministic there.)

use std::path::Path;
use std::sync::Arc;

use futures_util::future::join_all;
use mf_core::engine::{Action, EntryShape, Event, OpId, PublishEntry, UploadOutcome, WriteOutcome};
use mf_core::relpath::RelPath;
use mf_core::snapshot::{self, Cap, Content, SnapshotInfo};
use mf_core::store::LocalState;
use mf_daemon::executor::{Executor, ExecutorConfig};
use mf_daemon::fsops;
use mf_daemon::pack::{SnapshotRef, Snapshots, MEMBER_KEY};
use mf_grid::{DirChildren, DirEntry, Grid, Replace};

mod common;
use common::Faulty;

struct World {
    grid: Arc<Faulty>,
    alice: Arc<Executor<Faulty>>,
    bob: Executor<Faulty>,
    alice_personal: mf_grid::Capability,
    alice_root: tempfile::TempDir,
    bob_root: tempfile::TempDir,
    _store: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let store = tempfile::tempdir().unwrap();
        let grid = Arc::new(Faulty::create(store.path()));
        let collective = grid.create_mutable_dir().await.unwrap();
        let (alice_root, bob_root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut members = DirChildren::new();
        let mut execs = Vec::new();
        let mut personals = Vec::new();
        for (name, root) in [("alice", alice_root.path()), ("bob", bob_root.path())] {
            fsops::ensure_marker(root).unwrap();
            let personal = grid.create_mutable_dir().await.unwrap();
            members.insert(
                name.into(),
                DirEntry::new(mf_grid::read_only(&personal).unwrap()),
            );
            personals.push(personal.clone());
            let config = ExecutorConfig {
                snapshots: Snapshots::Packed,
                ..common::config(name, root, &collective, personal)
            };
            execs.push(Executor::new(grid.clone(), config).unwrap());
        }
        grid.set_children(&collective, members, Replace::Yes)
            .await
            .unwrap();
        let bob = execs.pop().unwrap();
        let alice = Arc::new(execs.pop().unwrap());
        World {
            grid,
            alice,
            bob,
            alice_personal: personals.swap_remove(0),
            alice_root,
            bob_root,
            _store: store,
        }
    }
}

fn rel(p: &str) -> RelPath {
    RelPath::new(p).unwrap()
}

async fn upload(ex: &Executor<Faulty>, root: &Path, path: &str) -> UploadOutcome {
    let local = fsops::stat(root, &rel(path)).unwrap();
    match ex
        .execute(Action::Upload {
            op: OpId(1),
            path: rel(path),
            local,
            parents: Vec::new(),
            generation: 1,
        })
        .await
    {
        Event::Uploaded { result, .. } => result,
        other => panic!("{other:?}"),
    }
}

async fn publish(ex: &Executor<Faulty>, infos: &[&SnapshotInfo]) {
    let entries = infos
        .iter()
        .map(|i| PublishEntry {
            name: snapshot::entry_name(&i.relpath),
            snapshot: i.cap.clone(),
            shape: EntryShape::File,
        })
        .collect();
    match ex
        .execute(Action::Publish {
            op: OpId(2),
            entries,
        })
        .await
    {
        Event::Published { result, .. } => result.unwrap(),
        other => panic!("{other:?}"),
    }
}

/// What bob's poll lists of alice's directory, and what it rejected.
async fn bob_sees(w: &World) -> (Vec<(RelPath, Cap)>, Vec<String>) {
    let listings = match w.bob.execute(Action::Poll).await {
        Event::Polled(r) => r.unwrap(),
        other => panic!("{other:?}"),
    };
    let alice = listings
        .into_iter()
        .find(|l| l.participant == "alice")
        .unwrap();
    let entries = alice.entries.unwrap().into_values().collect();
    (entries, alice.rejected)
}

async fn fetch(ex: &Executor<Faulty>, cap: &Cap, path: &RelPath) -> Result<SnapshotInfo, String> {
    match ex
        .execute(Action::Fetch {
            cap: cap.clone(),
            listed_as: path.clone(),
        })
        .await
    {
        Event::Fetched { result, .. } => result.map_err(|e| e.message),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_uploaded_at_once_are_packed_and_each_arrives_verified() {
    let w = World::new().await;
    let names: Vec<String> = (0..40).map(|i| format!("f{i:02}.txt")).collect();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(w.alice_root.path().join(name), format!("file {i}")).unwrap();
    }
    // One big enough not to be a literal: its content is an object of its own.
    let big = vec![7u8; 64 << 10];
    std::fs::write(w.alice_root.path().join("big.bin"), &big).unwrap();
    let mut all = names.clone();
    all.push("big.bin".into());

    w.grid.crash_at_write(usize::MAX); // counts writes from here
    let outcomes = join_all(all.iter().map(|name| {
        let alice = w.alice.clone();
        let root = w.alice_root.path().to_path_buf();
        let name = name.clone();
        async move { upload(&alice, &root, &name).await }
    }))
    .await;
    let infos: Vec<SnapshotInfo> = outcomes
        .into_iter()
        .map(|o| match o {
            UploadOutcome::Done(info) => info,
            other => panic!("{other:?}"),
        })
        .collect();
    // Each version is a member of a pack; the writes were each version's
    // content and metadata (literals but the big file's) and the packs.
    let mut packs = std::collections::BTreeSet::new();
    for info in &infos {
        match SnapshotRef::parse(&info.cap).unwrap() {
            SnapshotRef::Member { pack, .. } => packs.insert(pack),
            own => panic!("not packed: {own:?}"),
        };
    }
    assert_eq!(w.grid.writes(), 2 * infos.len() + packs.len());

    publish(&w.alice, &infos.iter().collect::<Vec<_>>()).await;
    // Alice's entries link the packs, each naming its member.
    let listed = w.grid.list(&w.alice_personal).await.unwrap();
    for info in &infos {
        let entry = &listed[&snapshot::entry_name(&info.relpath)];
        assert!(entry.metadata.get(MEMBER_KEY).is_some(), "{entry:?}");
        assert_eq!(SnapshotRef::of_entry(entry).unwrap().cap(), info.cap);
    }

    let (seen, rejected) = bob_sees(&w).await;
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(seen.len(), infos.len());
    for (path, cap) in &seen {
        let fetched = fetch(&w.bob, cap, path).await.unwrap();
        let sent = infos.iter().find(|i| &i.relpath == path).unwrap();
        assert_eq!(&fetched, sent);
        let Content::File { .. } = &fetched.content else {
            panic!("{fetched:?}");
        };
        let outcome = match w
            .bob
            .execute(Action::Write {
                op: OpId(3),
                target: path.clone(),
                content: fetched.content.clone(),
                mtime_s: fetched.mtime_s,
                expect: LocalState::Absent,
            })
            .await
        {
            Event::Written { result, .. } => result,
            other => panic!("{other:?}"),
        };
        assert!(matches!(outcome, WriteOutcome::Done(_)), "{outcome:?}");
        assert_eq!(
            std::fs::read(w.bob_root.path().join(path.as_str())).unwrap(),
            std::fs::read(w.alice_root.path().join(path.as_str())).unwrap(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pack_write_fails_its_uploads_and_a_retry_succeeds() {
    let w = World::new().await;
    std::fs::write(w.alice_root.path().join("a.txt"), b"alpha").unwrap();
    // Its content and metadata (literals), then the pack.
    w.grid.crash_at_write(2);
    match upload(&w.alice, w.alice_root.path(), "a.txt").await {
        UploadOutcome::Failed(e) => {
            assert!(e.transient, "{e:?}");
            assert!(e.message.contains("pack"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    w.grid.heal();
    let UploadOutcome::Done(info) = upload(&w.alice, w.alice_root.path(), "a.txt").await else {
        panic!("the retry failed");
    };
    publish(&w.alice, &[&info]).await;
    let (seen, _) = bob_sees(&w).await;
    assert_eq!(fetch(&w.bob, &seen[0].1, &seen[0].0).await.unwrap(), info);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pack_entries_are_refused_by_name() {
    let w = World::new().await;
    std::fs::write(w.alice_root.path().join("a.txt"), b"alpha").unwrap();
    let UploadOutcome::Done(info) = upload(&w.alice, w.alice_root.path(), "a.txt").await else {
        panic!("upload failed");
    };
    let SnapshotRef::Member { pack, member } = SnapshotRef::parse(&info.cap).unwrap() else {
        panic!("not packed");
    };
    // Alice's directory as a hostile alice could write it.
    let mut children = DirChildren::new();
    let link = |m: serde_json::Value| DirEntry {
        cap: pack.clone(),
        metadata: serde_json::json!({ MEMBER_KEY: m }),
    };
    // A member the pack does not hold.
    children.insert(
        snapshot::entry_name(&rel("ghost.txt")),
        link((member + 5).to_string().into()),
    );
    // Alice's a.txt, filed as b.txt.
    children.insert(
        snapshot::entry_name(&rel("b.txt")),
        link(member.to_string().into()),
    );
    // A member number with a second spelling, and one that is no string.
    children.insert(
        snapshot::entry_name(&rel("c.txt")),
        link(format!("0{member}").into()),
    );
    children.insert(snapshot::entry_name(&rel("d.txt")), link(member.into()));
    // The member's name inside the capability itself: a second spelling.
    let hashed = mf_grid::Capability::parse(&format!("{}#{member}", pack.as_str())).unwrap();
    children.insert(snapshot::entry_name(&rel("e.txt")), DirEntry::new(hashed));
    // The pack linked as a snapshot of its own.
    children.insert(
        snapshot::entry_name(&rel("f.txt")),
        DirEntry::new(pack.clone()),
    );
    w.grid
        .set_children(&w.alice_personal, children, Replace::Yes)
        .await
        .unwrap();

    let (seen, rejected) = bob_sees(&w).await;
    let mut names: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["b.txt", "f.txt", "ghost.txt"]);
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    for r in &rejected {
        assert!(
            r.contains("alice") && (r.contains("pack member") || r.contains("'#'")),
            "{r}"
        );
    }
    let f = &seen.iter().find(|(p, _)| p.as_str() == "f.txt").unwrap();
    let err = fetch(&w.bob, &f.1, &f.0).await.unwrap_err();
    assert!(
        err.contains("f.txt") && err.contains("no metadata"),
        "{err}"
    );
    let ghost = &seen
        .iter()
        .find(|(p, _)| p.as_str() == "ghost.txt")
        .unwrap();
    let err = fetch(&w.bob, &ghost.1, &ghost.0).await.unwrap_err();
    assert!(
        err.contains("ghost.txt") && err.contains("no metadata"),
        "{err}"
    );
    let b = &seen.iter().find(|(p, _)| p.as_str() == "b.txt").unwrap();
    let err = fetch(&w.bob, &b.1, &b.0).await.unwrap_err();
    assert!(
        err.contains("\"a.txt\"") && err.contains("\"b.txt\""),
        "{err}"
    );
    // The genuine member still arrives under its own name.
    assert_eq!(fetch(&w.bob, &info.cap, &rel("a.txt")).await.unwrap(), info);
}
