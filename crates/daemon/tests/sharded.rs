//! The sharded personal-directory layout (`mf_daemon::personal`) through
//! the executor and the real embedded grid: a change reads and writes only
//! the shards it touches, a crash between any two grid writes of a publish
//! publishes all or nothing, concurrent publishes lose nothing, and a
//! hostile participant's broken shards are rejected one by one, by name,
//! while the rest of its directory syncs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use mf_core::engine::{Action, EntryShape, Event, OpId, PublishEntry, RemoteListing};
use mf_core::relpath::RelPath;
use mf_core::snapshot::{self, shard_of, Cap};
use mf_daemon::executor::{Executor, ExecutorConfig};
use mf_daemon::fsops;
use mf_daemon::personal::{folder_tag, parse_shard_link, shard_header, shard_link, Layout};
use mf_grid::embedded::EmbeddedGrid;

mod common;
use common::Faulty;
use mf_grid::{Capability, DirChildren, DirEntry, Grid, Replace};

/// A sharded folder on one embedded grid with alice and bob (and room for
/// a hand-written participant).
struct World {
    grid: Arc<Faulty>,
    collective: Capability,
    alice_personal: Capability,
    bob_personal: Capability,
    dirs: Vec<tempfile::TempDir>,
}

impl World {
    async fn new() -> World {
        let store = tempfile::tempdir().unwrap();
        let grid = Arc::new(Faulty::create(store.path()));
        let collective = grid.create_mutable_dir().await.unwrap();
        let mut members = DirChildren::new();
        let mut personal = Vec::new();
        for name in ["alice", "bob"] {
            let dir = grid.create_mutable_dir().await.unwrap();
            members.insert(
                name.into(),
                DirEntry::new(mf_grid::read_only(&dir).unwrap()),
            );
            personal.push(dir);
        }
        grid.set_children(&collective, members, Replace::Yes)
            .await
            .unwrap();
        World {
            grid,
            collective,
            bob_personal: personal.pop().unwrap(),
            alice_personal: personal.pop().unwrap(),
            dirs: vec![store],
        }
    }

    /// A fresh executor (as after a restart) for alice or bob.
    fn executor(&mut self, name: &str) -> Executor<Faulty> {
        let root = tempfile::tempdir().unwrap();
        fsops::ensure_marker(root.path()).unwrap();
        let personal = match name {
            "alice" => self.alice_personal.clone(),
            _ => self.bob_personal.clone(),
        };
        let ex = executor(&self.grid, &self.collective, name, root.path(), personal);
        self.dirs.push(root);
        ex
    }

    /// Alice's personal directory as the grid has it, merged across
    /// shards: entry name → snapshot capability.
    async fn alice_entries(&self) -> BTreeMap<String, String> {
        let tag = folder_tag(&self.collective).unwrap();
        let root = self.grid.list(&self.alice_personal).await.unwrap();
        let mut out = BTreeMap::new();
        for (name, e) in root {
            if let Some(n) = parse_shard_link(&name) {
                let shard = mf_daemon::personal::read_shard(&*self.grid, n, &e.cap, &tag)
                    .await
                    .unwrap();
                assert!(shard.problems.is_empty(), "{:?}", shard.problems);
                out.extend(
                    shard
                        .entries
                        .into_iter()
                        .map(|(k, v)| (k, v.cap.as_str().to_owned())),
                );
            } else {
                assert_eq!(name, "@metadata", "only links and metadata at the top");
            }
        }
        out
    }

    /// A distinct immutable directory to stand for a snapshot.
    async fn snapshot(&self, label: &str) -> Cap {
        common::stand_in_snapshot(&self.grid, label).await
    }
}

fn executor(
    grid: &Arc<Faulty>,
    collective: &Capability,
    name: &str,
    root: &Path,
    personal: Capability,
) -> Executor<Faulty> {
    let config = ExecutorConfig {
        layout: Layout::Sharded,
        ..common::config(name, root, collective, personal)
    };
    Executor::new(grid.clone(), config).unwrap()
}

fn file_entry(name: &str, cap: &Cap) -> PublishEntry {
    PublishEntry {
        name: snapshot::entry_name(&RelPath::new(name).unwrap()),
        snapshot: cap.clone(),
        shape: EntryShape::File,
    }
}

async fn publish<G: Grid>(ex: &Executor<G>, entries: Vec<PublishEntry>) -> Result<(), String> {
    match ex
        .execute(Action::Publish {
            op: OpId(1),
            entries,
        })
        .await
    {
        Event::Published { result, .. } => result.map_err(|e| e.message),
        other => panic!("{other:?}"),
    }
}

async fn poll<G: Grid>(ex: &Executor<G>) -> Vec<RemoteListing> {
    match ex.execute(Action::Poll).await {
        Event::Polled(r) => r.unwrap(),
        other => panic!("{other:?}"),
    }
}

/// What a reader holds after taking in `listings` as the engine does: each
/// part replaces the last listing of the same part.
fn take_in(view: &mut BTreeMap<Option<u8>, BTreeMap<String, Cap>>, listings: &[RemoteListing]) {
    for l in listings {
        if let Ok(entries) = &l.entries {
            let part = entries
                .iter()
                .map(|(name, (_, cap))| (name.clone(), cap.clone()))
                .collect();
            view.insert(l.shard, part);
        }
    }
}

fn merged(view: &BTreeMap<Option<u8>, BTreeMap<String, Cap>>) -> BTreeMap<String, Cap> {
    view.values()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A change reads and writes only its own shard: after one edit, a reader
/// lists the collective, the writer's directory and that one shard, and
/// gets that shard alone; what it had from the other shards stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_costs_its_shard_not_the_folder() {
    let mut w = World::new().await;
    let alice = w.executor("alice");
    let bob = w.executor("bob");
    let mut entries = Vec::new();
    let mut expected = BTreeMap::new();
    for i in 0..60 {
        let name = format!("dir/file-{i}");
        let cap = w.snapshot(&name).await;
        expected.insert(
            snapshot::entry_name(&RelPath::new(&name).unwrap()),
            cap.clone(),
        );
        entries.push(file_entry(&name, &cap));
    }
    publish(&alice, entries).await.unwrap();
    let shards: BTreeSet<u8> = expected.keys().map(|n| shard_of(n)).collect();
    let on_grid = w.alice_entries().await;
    assert_eq!(on_grid.len(), 60);

    let mut view = BTreeMap::new();
    let first = poll(&bob).await;
    take_in(&mut view, &first);
    assert_eq!(merged(&view), expected);
    let parts: BTreeSet<Option<u8>> = first.iter().map(|l| l.shard).collect();
    let mut want: BTreeSet<Option<u8>> = shards.iter().map(|n| Some(*n)).collect();
    want.insert(None);
    assert_eq!(parts, want, "the directory itself and each shard");
    let root = first.iter().find(|l| l.shard.is_none()).unwrap();
    assert_eq!(root.author.as_ref().map(|a| a.name.as_str()), Some("alice"));
    for l in &first {
        for name in l.entries.as_ref().unwrap().keys() {
            assert_eq!(Some(shard_of(name)), l.shard, "{name} is in its shard");
        }
    }
    assert!(
        poll(&bob).await.is_empty(),
        "nothing changed, nothing listed"
    );

    let name = "dir/file-7";
    let edited = w.snapshot("edited").await;
    publish(&alice, vec![file_entry(name, &edited)])
        .await
        .unwrap();
    let before = w.grid.lists();
    let second = poll(&bob).await;
    assert_eq!(
        w.grid.lists() - before,
        3,
        "the collective, alice's directory, one shard"
    );
    let entry = snapshot::entry_name(&RelPath::new(name).unwrap());
    assert_eq!(
        second.iter().map(|l| l.shard).collect::<Vec<_>>(),
        vec![Some(shard_of(&entry))]
    );
    take_in(&mut view, &second);
    expected.insert(entry, edited);
    assert_eq!(merged(&view), expected);
}

/// A crash between any two grid writes of a publish publishes all of it
/// or none of it (the shards are written first, the links to them in one
/// last write), and the publish retried after a restart publishes it all
/// — nothing of what was there before is lost either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_any_two_writes_publishes_all_or_nothing() {
    let mut crash_at = 0;
    loop {
        let mut w = World::new().await;
        let alice = w.executor("alice");
        let mut before = BTreeMap::new();
        let mut first = Vec::new();
        for i in 0..20 {
            let name = format!("f{i}");
            let cap = w.snapshot(&name).await;
            before.insert(
                snapshot::entry_name(&RelPath::new(&name).unwrap()),
                cap.0.clone(),
            );
            first.push(file_entry(&name, &cap));
        }
        publish(&alice, first).await.unwrap();
        // Ten edits and ten new files, across many shards.
        let mut after = before.clone();
        let mut second = Vec::new();
        for i in 10..30 {
            let name = format!("f{i}");
            let cap = w.snapshot(&format!("{name} again")).await;
            after.insert(
                snapshot::entry_name(&RelPath::new(&name).unwrap()),
                cap.0.clone(),
            );
            second.push(file_entry(&name, &cap));
        }
        w.grid.crash_at_write(crash_at);
        let outcome = publish(&alice, second.clone()).await;
        let writes = w.grid.writes();
        w.grid.heal();
        let on_grid = w.alice_entries().await;
        match outcome {
            Ok(()) => {
                assert_eq!(on_grid, after);
                assert!(crash_at >= writes, "a publish that crashed cannot succeed");
                break;
            }
            Err(e) => {
                assert!(e.contains("crashed"), "{e}");
                assert_eq!(
                    on_grid, before,
                    "crash at write {crash_at}: nothing half-way"
                );
            }
        }
        // After a restart, the retry publishes it all.
        let restarted = w.executor("alice");
        publish(&restarted, second).await.unwrap();
        let on_grid = w.alice_entries().await;
        assert_eq!(on_grid, after, "crash at write {crash_at}, then the retry");
        crash_at += 1;
    }
    assert!(crash_at > 5, "the publish made several writes: {crash_at}");
}

/// Publishes through one executor at once never lose each other's entries
/// (each builds on the shards the last one wrote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_lose_nothing() {
    let mut w = World::new().await;
    let alice = Arc::new(w.executor("alice"));
    let mut expected = BTreeMap::new();
    let mut batches = Vec::new();
    for b in 0..8 {
        let mut batch = Vec::new();
        for i in 0..8 {
            let name = format!("b{b}-{i}");
            let cap = w.snapshot(&name).await;
            expected.insert(
                snapshot::entry_name(&RelPath::new(&name).unwrap()),
                cap.0.clone(),
            );
            batch.push(file_entry(&name, &cap));
        }
        batches.push(batch);
    }
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let alice = alice.clone();
            tokio::spawn(async move { publish(&*alice, batch).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let on_grid = w.alice_entries().await;
    assert_eq!(on_grid, expected);
}

/// A hostile participant's directory: a link to a shard that names
/// another index, one to a shard of another folder, one to its own
/// directory (a cycle), one to a shard that does not exist, an entry filed
/// in the wrong shard and an entry outside any shard. Each is rejected with
/// its participant and shard named; its good shard is listed all the same,
/// and the missing shard is asked for again at the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_shards_are_rejected_one_by_one() {
    let mut w = World::new().await;
    let bob = w.executor("bob");
    let grid = w.grid.clone();
    let mallory = grid.create_mutable_dir().await.unwrap();
    let mut member = DirChildren::new();
    member.insert(
        "mallory".into(),
        DirEntry::new(mf_grid::read_only(&mallory).unwrap()),
    );
    grid.set_children(&w.collective, member, Replace::Yes)
        .await
        .unwrap();
    let tag = folder_tag(&w.collective).unwrap();
    let good_name = snapshot::entry_name(&RelPath::new("good").unwrap());
    let good = shard_of(&good_name);
    // Another name in another shard, for the misfiled entry.
    let (stray_name, stray_shard) = (0..)
        .map(|i| snapshot::entry_name(&RelPath::new(&format!("stray{i}")).unwrap()))
        .map(|n| {
            let s = shard_of(&n);
            (n, s)
        })
        .find(|(_, s)| *s != good)
        .unwrap();
    let snap = w.snapshot("good").await;
    let snap = Capability::parse(snap.as_str()).unwrap();
    let shard = |n: u8, folder: &str, entries: &[(&str, &Capability)]| {
        let mut c = DirChildren::new();
        c.insert("@shard".into(), shard_header(n, folder));
        for (name, cap) in entries {
            c.insert((*name).to_owned(), DirEntry::new((*cap).clone()));
        }
        c
    };
    let good_shard = grid
        .create_immutable_dir(shard(
            good,
            &tag,
            &[(&good_name, &snap), (&stray_name, &snap)],
        ))
        .await
        .unwrap();
    // Three bad links, at indexes other than the good one's.
    let bad: Vec<u8> = (0..=u8::MAX).filter(|n| *n != good).take(4).collect();
    let other_index = grid
        .create_immutable_dir(shard(bad[0].wrapping_add(1), &tag, &[]))
        .await
        .unwrap();
    let other_folder = grid
        .create_immutable_dir(shard(bad[1], "0123456789abcdef0123456789abcdef", &[]))
        .await
        .unwrap();
    // An immutable directory that was never stored (made on another grid).
    let elsewhere = EmbeddedGrid::create(w.dirs[0].path().join("elsewhere"), [9; 32]).unwrap();
    let missing = elsewhere
        .create_immutable_dir(shard(bad[3], &tag, &[]))
        .await
        .unwrap();
    let mut root = DirChildren::new();
    root.insert(shard_link(good), DirEntry::new(good_shard));
    root.insert(shard_link(bad[0]), DirEntry::new(other_index));
    root.insert(shard_link(bad[1]), DirEntry::new(other_folder));
    root.insert(
        shard_link(bad[2]),
        DirEntry::new(mf_grid::read_only(&mallory).unwrap()),
    );
    root.insert(shard_link(bad[3]), DirEntry::new(missing));
    root.insert(good_name.clone(), DirEntry::new(snap.clone()));
    grid.set_children(&mallory, root, Replace::Yes)
        .await
        .unwrap();

    let listings: Vec<RemoteListing> = poll(&bob)
        .await
        .into_iter()
        .filter(|l| l.participant == "mallory")
        .collect();
    let part = |n: u8| listings.iter().find(|l| l.shard == Some(n)).unwrap();
    let error = |n: u8| part(n).entries.as_ref().unwrap_err().message.clone();
    let listed = part(good).entries.as_ref().unwrap();
    assert_eq!(listed.keys().collect::<Vec<_>>(), vec![&good_name]);
    assert!(
        part(good)
            .rejected
            .iter()
            .any(|r| r.starts_with("mallory: ")
                && r.contains(&stray_name)
                && r.contains(&format!("not in its own ({stray_shard:02x})"))),
        "{:?}",
        part(good).rejected
    );
    assert!(error(bad[0]).contains(&format!("leads to shard {:02x}", bad[0].wrapping_add(1))));
    assert!(
        error(bad[1]).contains("another folder"),
        "{}",
        error(bad[1])
    );
    assert!(
        error(bad[2]).contains("not an immutable directory"),
        "{}",
        error(bad[2])
    );
    assert!(
        error(bad[3]).contains("no such object"),
        "{}",
        error(bad[3])
    );
    let root = listings.iter().find(|l| l.shard.is_none()).unwrap();
    assert!(
        root.rejected
            .iter()
            .any(|r| r.contains(&good_name) && r.contains("not a shard link")),
        "{:?}",
        root.rejected
    );

    // Next poll: the missing shard is asked for again (and still fails),
    // the directory's stray entry is reported again; the other shards are
    // not read again.
    let again: Vec<Option<u8>> = poll(&bob)
        .await
        .into_iter()
        .filter(|l| l.participant == "mallory")
        .map(|l| l.shard)
        .collect();
    assert_eq!(again, vec![None, Some(bad[3])]);
}
