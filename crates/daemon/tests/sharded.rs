//! The sharded personal-directory layout (`mf_daemon::personal`) through
//! the executor and the real embedded grid: a change reads and writes only
//! the recent shard, and moving its entries only the hashed shards they
//! fall in; a shard that grows too big splits and readers follow; a crash
//! between any two grid writes of a publish (of a move or a split too)
//! publishes all or nothing; concurrent publishes lose nothing; and a
//! hostile participant's broken shards are rejected one by one, by name,
//! while the rest of its directory syncs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use mf_core::engine::{Action, EntryShape, Event, OpId, PublishEntry, RemoteListing};
use mf_core::relpath::RelPath;
use mf_core::snapshot::{self, Cap, ShardId};
use mf_daemon::executor::{Executor, ExecutorConfig};
use mf_daemon::fsops;
use mf_daemon::personal::{
    folder_tag, parse_shard_link, shard_header, shard_link, Layout, ShardLinks, RECENT_AT_MOST,
    SPLIT_AT,
};
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

    /// Alice's personal directory as a reader sees it, merged across the
    /// shards in use: entry name → snapshot capability.
    async fn alice_entries(&self) -> BTreeMap<String, String> {
        let tag = folder_tag(&self.collective).unwrap();
        let root = self.grid.list(&self.alice_personal).await.unwrap();
        for name in root.keys() {
            assert!(
                name == "@metadata" || parse_shard_link(name).is_some(),
                "only links and metadata at the top: {name}"
            );
        }
        let mut out = BTreeMap::new();
        for (id, cap) in ShardLinks::of(&root).current() {
            let shard = mf_daemon::personal::read_shard(&*self.grid, *id, cap, &tag)
                .await
                .unwrap();
            assert!(shard.problems.is_empty(), "{:?}", shard.problems);
            out.extend(
                shard
                    .entries
                    .into_iter()
                    .map(|(k, v)| (k, v.cap.as_str().to_owned())),
            );
        }
        out
    }

    /// The shards alice's directory links: in use, and split but still
    /// linked.
    async fn alice_links(&self) -> (BTreeSet<ShardId>, BTreeSet<ShardId>) {
        let links = ShardLinks::of(&self.grid.list(&self.alice_personal).await.unwrap());
        (
            links.current().keys().copied().collect(),
            links.superseded().clone(),
        )
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
fn take_in(
    view: &mut BTreeMap<Option<ShardId>, BTreeMap<String, Cap>>,
    listings: &[RemoteListing],
) {
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

/// The entries a reader's view amounts to: the recent shard's over the
/// others' (the engine finds the same by ancestry).
fn merged(view: &BTreeMap<Option<ShardId>, BTreeMap<String, Cap>>) -> BTreeMap<String, String> {
    let recent = Some(ShardId::RECENT);
    view.iter()
        .filter(|(part, _)| **part != recent)
        .chain(view.get_key_value(&recent))
        .flat_map(|(_, entries)| entries)
        .map(|(k, v)| (k.clone(), v.as_str().to_owned()))
        .collect()
}

/// A change costs the recent shard, not the folder: once the recent shard
/// overflows, its entries are filed in their hashed shards (16 in a small
/// folder) and a reader gets each; after one edit, a reader lists the
/// collective, the writer's directory and the recent shard, and gets that
/// shard alone; what it had from the other shards stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_costs_the_recent_shard_not_the_folder() {
    let mut w = World::new().await;
    let alice = w.executor("alice");
    let bob = w.executor("bob");
    let paths: Vec<String> = (0..=RECENT_AT_MOST)
        .map(|i| format!("dir/file-{i}"))
        .collect();
    let (entries, mut expected) = entries_at(&paths, &w.snapshot("first").await);
    publish(&alice, entries).await.unwrap();
    let on_grid = w.alice_entries().await;
    assert_eq!(on_grid, expected);

    let mut view = BTreeMap::new();
    let first = poll(&bob).await;
    take_in(&mut view, &first);
    assert_eq!(merged(&view), expected);
    let parts: BTreeSet<Option<ShardId>> = first.iter().map(|l| l.shard).collect();
    let mut want: BTreeSet<Option<ShardId>> =
        expected.keys().map(|n| Some(ShardId::of(n, 1))).collect();
    assert_eq!(want.len(), 16);
    want.extend([None, Some(ShardId::RECENT)]);
    assert_eq!(parts, want, "the directory itself and each shard");
    let root = first.iter().find(|l| l.shard.is_none()).unwrap();
    assert_eq!(root.author.as_ref().map(|a| a.name.as_str()), Some("alice"));
    for l in &first {
        let entries = l.entries.as_ref().unwrap();
        match l.shard {
            Some(ShardId::RECENT) | None => assert!(entries.is_empty(), "all moved"),
            Some(id) => assert!(entries.keys().all(|name| id.holds(name))),
        }
    }
    assert!(
        poll(&bob).await.is_empty(),
        "nothing changed, nothing listed"
    );

    let edited = w.snapshot("edited").await;
    let (entries, named) = entries_at(&paths[7..8], &edited);
    publish(&alice, entries).await.unwrap();
    let before = w.grid.lists();
    let second = poll(&bob).await;
    assert_eq!(
        w.grid.lists() - before,
        3,
        "the collective, alice's directory, the recent shard"
    );
    assert_eq!(
        second.iter().map(|l| l.shard).collect::<Vec<_>>(),
        vec![Some(ShardId::RECENT)]
    );
    take_in(&mut view, &second);
    expected.extend(named);
    assert_eq!(merged(&view), expected);

    // A reader that starts afresh gets the edited entry from the recent
    // shard alone: its older version in its hashed shard is left out.
    let fresh = w.executor("bob");
    let name = snapshot::entry_name(&RelPath::new(&paths[7]).unwrap());
    let holding: Vec<Option<ShardId>> = poll(&fresh)
        .await
        .into_iter()
        .filter(|l| l.entries.as_ref().unwrap().contains_key(&name))
        .map(|l| l.shard)
        .collect();
    assert_eq!(holding, vec![Some(ShardId::RECENT)]);

    // A batch that overflows the recent shard is filed with the recent
    // shard's entries in their hashed shards; where both name an entry,
    // the batch's is newer and stands.
    let (entries, named) = entries_at(&paths[9..10], &edited);
    publish(&alice, entries).await.unwrap();
    expected.extend(named);
    let more: Vec<String> = (0..RECENT_AT_MOST)
        .map(|i| format!("more/file-{i}"))
        .chain([paths[9].clone()])
        .collect();
    let (entries, named) = entries_at(&more, &w.snapshot("more").await);
    publish(&alice, entries).await.unwrap();
    expected.extend(named);
    assert_eq!(w.alice_entries().await, expected);
    take_in(&mut view, &poll(&bob).await);
    assert_eq!(merged(&view), expected);
}

/// `count` paths (each its own entry name) in the one-digit shard `one`.
fn paths_in(one: ShardId, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("s{i}"))
        .filter(|p| ShardId::of(&snapshot::entry_name(&RelPath::new(p).unwrap()), 1) == one)
        .take(count)
        .collect()
}

/// Entries for `paths`, all pointing at `cap` (the writer never reads a
/// snapshot it publishes), and what the directory then maps them to.
fn entries_at(paths: &[String], cap: &Cap) -> (Vec<PublishEntry>, BTreeMap<String, String>) {
    let entries: Vec<PublishEntry> = paths.iter().map(|p| file_entry(p, cap)).collect();
    let names = entries
        .iter()
        .map(|e| (e.name.clone(), cap.as_str().to_owned()))
        .collect();
    (entries, names)
}

/// A one-digit shard that grows past [`SPLIT_AT`] splits into two-digit
/// shards in the publish that files entries in it: its link is swapped for
/// theirs, the other shards stay as they were, and a reader that had the
/// one-digit shard ends up with the same entries, from the new shards.
/// Entries of that part of the folder are filed in the two-digit shards
/// from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_past_the_threshold_splits_and_readers_follow() {
    let mut w = World::new().await;
    let alice = w.executor("alice");
    let bob = w.executor("bob");
    let full = ShardId::of("x", 1);
    let paths = paths_in(full, SPLIT_AT + 2);
    let elsewhere: Vec<String> = (0..)
        .map(|i| format!("e{i}"))
        .filter(|p| ShardId::of(p, 1) != full)
        .take(RECENT_AT_MOST + 3)
        .collect();
    let hashed = |ids: BTreeSet<ShardId>| -> BTreeSet<ShardId> {
        ids.into_iter()
            .filter(|id| *id != ShardId::RECENT)
            .collect()
    };
    let old = w.snapshot("old").await;
    // Enough to overflow the recent shard: all filed, `full` just full.
    let (mut entries, mut expected) = entries_at(&paths[..SPLIT_AT], &old);
    let (more, named) = entries_at(&elsewhere[..3], &old);
    entries.extend(more);
    expected.extend(named);
    publish(&alice, entries).await.unwrap();
    let (before, superseded) = w.alice_links().await;
    let before = hashed(before);
    assert!(before.contains(&full) && before.iter().all(|id| id.digits() == 1));
    assert!(superseded.is_empty());
    let mut view = BTreeMap::new();
    take_in(&mut view, &poll(&bob).await);

    // One more in `full`, and enough elsewhere to file them all again.
    let new = w.snapshot("new").await;
    let (mut entries, named) = entries_at(&paths[SPLIT_AT..SPLIT_AT + 1], &new);
    expected.extend(named);
    let (more, named) = entries_at(&elsewhere[3..], &old);
    entries.extend(more);
    expected.extend(named);
    publish(&alice, entries).await.unwrap();
    let (after, superseded) = w.alice_links().await;
    let after = hashed(after);
    assert!(superseded.is_empty(), "the split shard is unlinked");
    assert!(!after.contains(&full));
    let split: BTreeSet<ShardId> = after
        .iter()
        .filter(|id| id.digits() == 2)
        .copied()
        .collect();
    assert!(split.len() > 1 && split.iter().all(|id| id.parent() == Some(full)));
    assert!(
        before.iter().all(|id| *id == full || after.contains(id)),
        "the other shards stay"
    );
    assert_eq!(w.alice_entries().await, expected.clone());
    let listings = poll(&bob).await;
    let emptied = listings.iter().find(|l| l.shard == Some(full)).unwrap();
    assert!(emptied.entries.as_ref().unwrap().is_empty());
    take_in(&mut view, &listings);
    assert_eq!(merged(&view), expected);

    // That part of the folder is filed two digits deep from now on.
    let root = w.grid.list(&w.alice_personal).await.unwrap();
    let name = snapshot::entry_name(&RelPath::new(&paths[SPLIT_AT + 1]).unwrap());
    assert_eq!(
        ShardLinks::of(&root).shard_for(&name),
        ShardId::of(&name, 2)
    );
}

/// A crash between any two grid writes of a publish publishes all of it
/// or none of it (the shards are written first, the links to them in one
/// last write), and the publish retried after a restart publishes it all
/// — nothing of what was there before is lost either way. For a publish
/// into the recent shard, one that files its entries in the hashed shards,
/// and one that splits a shard (whose last write, unlinking the split
/// shard, only tidies: a crash there publishes all, and the next publish
/// unlinks it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_any_two_writes_publishes_all_or_nothing() {
    let names = |r: std::ops::Range<usize>| -> Vec<String> { r.map(|i| format!("f{i}")).collect() };
    // Ten edits and ten new files: the recent shard and the root.
    crash_anywhere(&names(0..20), &names(10..30), 2).await;
    // Twelve edits and eight new files overflow it: filed in 16 shards.
    crash_anywhere(&names(0..RECENT_AT_MOST), &names(500..520), 18).await;
    let full = ShardId::of("x", 1);
    let paths = paths_in(full, SPLIT_AT + 1);
    let mut second = paths[SPLIT_AT - 2..].to_vec();
    second.extend(names(0..2));
    crash_anywhere(&paths[..SPLIT_AT], &second, 18).await;
}

/// Crashes a publish of `second` over `first` at every write in turn (it
/// makes at least `writes_at_least` of them).
async fn crash_anywhere(first: &[String], second: &[String], writes_at_least: usize) {
    let mut crash_at = 0;
    loop {
        let mut w = World::new().await;
        let alice = w.executor("alice");
        let (entries, before) = entries_at(first, &w.snapshot("first").await);
        publish(&alice, entries).await.unwrap();
        let (second, mut after) = entries_at(second, &w.snapshot("second").await);
        after = before.clone().into_iter().chain(after).collect();
        w.grid.crash_at_write(crash_at);
        let outcome = publish(&alice, second.clone()).await;
        let writes = w.grid.writes();
        w.grid.heal();
        let on_grid = w.alice_entries().await;
        match outcome {
            Ok(()) => {
                assert_eq!(on_grid, after);
                if crash_at >= writes {
                    assert!(w.alice_links().await.1.is_empty(), "tidied");
                    break;
                }
            }
            Err(e) => {
                assert!(e.contains("crashed"), "{e}");
                assert_eq!(
                    on_grid, before,
                    "crash at write {crash_at}: nothing half-way"
                );
            }
        }
        // After a restart, the retry publishes it all, and tidies.
        let restarted = w.executor("alice");
        publish(&restarted, second).await.unwrap();
        let on_grid = w.alice_entries().await;
        assert_eq!(on_grid, after, "crash at write {crash_at}, then the retry");
        assert!(w.alice_links().await.1.is_empty(), "tidied after the retry");
        crash_at += 1;
    }
    assert!(
        crash_at >= writes_at_least,
        "the publish made {crash_at} writes"
    );
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
                cap.as_str().to_owned(),
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
    let good = ShardId::of(&good_name, 2);
    // Another name in another shard, for the misfiled entry.
    let (stray_name, stray_shard) = (0..)
        .map(|i| snapshot::entry_name(&RelPath::new(&format!("stray{i}")).unwrap()))
        .map(|n| {
            let s = ShardId::of(&n, 2);
            (n, s)
        })
        .find(|(_, s)| *s != good)
        .unwrap();
    let snap = w.snapshot("good").await;
    let snap = Capability::parse(snap.as_str()).unwrap();
    let shard = |n: ShardId, folder: &str, entries: &[(&str, &Capability)]| {
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
    // Four bad links, at shards other than the good one's.
    let byte = |n: u8| ShardId::parse(&format!("{n:02x}")).unwrap();
    let bad: Vec<ShardId> = (0..=u8::MAX)
        .map(byte)
        .filter(|n| *n != good)
        .take(5)
        .collect();
    let other_index = grid
        .create_immutable_dir(shard(bad[4], &tag, &[]))
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
    let part = |n: ShardId| listings.iter().find(|l| l.shard == Some(n)).unwrap();
    let error = |n: ShardId| part(n).entries.as_ref().unwrap_err().message.clone();
    let listed = part(good).entries.as_ref().unwrap();
    assert_eq!(listed.keys().collect::<Vec<_>>(), vec![&good_name]);
    assert!(
        part(good)
            .rejected
            .iter()
            .any(|r| r.starts_with("mallory: ")
                && r.contains(&stray_name)
                && r.contains(&format!("not in its own ({stray_shard})"))),
        "{:?}",
        part(good).rejected
    );
    assert!(error(bad[0]).contains(&format!("leads to shard {}", bad[4])));
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
    let again: Vec<Option<ShardId>> = poll(&bob)
        .await
        .into_iter()
        .filter(|l| l.participant == "mallory")
        .map(|l| l.shard)
        .collect();
    assert_eq!(again, vec![None, Some(bad[3])]);
}
