//! Moving a flat folder to the sharded layout (`mf_daemon::convert`)
//! through the real embedded grid: the admin's `convert` records the new
//! format, each participant moves its own directory, readers follow the
//! move (flat and sharded readers alike) and see every entry throughout; a
//! crash at any grid write of a move leaves a retry that finishes it; a
//! hostile participant's move is rejected by name while the others sync.

use std::collections::BTreeMap;
use std::sync::Arc;

use mf_core::engine::{Action, EntryShape, Event, OpId, PublishEntry, RemoteListing};
use mf_core::relpath::RelPath;
use mf_core::snapshot::{self, Cap, ShardId};
use mf_daemon::chunked::ContentFormat;
use mf_daemon::config::{ConfigDir, FolderConfig, GridLocation, Secret32};
use mf_daemon::convert::{self, MoveState};
use mf_daemon::executor::Executor;
use mf_daemon::format::FolderFormat;
use mf_daemon::fsops;
use mf_daemon::pack::Snapshots;
use mf_daemon::personal::{Layout, METADATA_ENTRY, MOVED_ENTRY, MOVED_FROM_ENTRY};
use mf_grid::{Capability, DirChildren, DirEntry, Grid, Replace};

mod common;
use common::Faulty;

/// A flat folder with whole contents on one embedded grid: alice (the
/// admin) and bob, each with a config directory of their own.
struct World {
    grid: Arc<Faulty>,
    store: tempfile::TempDir,
    collective: Capability,
    homes: Vec<tempfile::TempDir>,
}

/// The format the tests convert to.
const TARGET: FolderFormat = FolderFormat {
    layout: Layout::Sharded,
    content: ContentFormat::Chunked,
    snapshots: Snapshots::Packed,
};

/// What a reader holds: each (participant, part) as last listed.
type View = BTreeMap<(String, Option<ShardId>), BTreeMap<String, Cap>>;

impl World {
    async fn new() -> World {
        let store = tempfile::tempdir().unwrap();
        let grid = Arc::new(Faulty::create(store.path()));
        let collective = grid.create_mutable_dir().await.unwrap();
        let mut w = World {
            grid,
            store,
            collective,
            homes: Vec::new(),
        };
        w.set_format(FolderFormat::default()).await;
        for name in ["alice", "bob"] {
            let personal = w.grid.create_mutable_dir().await.unwrap();
            w.link(name, mf_grid::read_only(&personal).unwrap()).await;
            let home = tempfile::tempdir().unwrap();
            let root = home.path().join("folder");
            std::fs::create_dir(&root).unwrap();
            fsops::ensure_marker(&root).unwrap();
            let config = ConfigDir::at(home.path().join("config"));
            config.init().unwrap();
            let collective = if name == "alice" {
                w.collective.clone()
            } else {
                mf_grid::read_only(&w.collective).unwrap()
            };
            config
                .add_folder(&FolderConfig {
                    version: 1,
                    name: "docs".into(),
                    local_path: root,
                    grid: GridLocation::Embedded {
                        dir: w.store.path().to_path_buf(),
                    },
                    collective_cap: collective,
                    personal_cap: personal,
                    participant: name.into(),
                    author_name: name.into(),
                    author_seed: Secret32([name.len() as u8; 32]),
                    convergence_secret: Secret32([5; 32]),
                    poll_interval_ms: 3000,
                    scan_interval_ms: 60_000,
                    pending_delay_ms: 1000,
                    umask: 0o077,
                    versions_max_age_ms: 86_400_000,
                    versions_per_file: 3,
                    layout: Layout::Flat,
                    content: ContentFormat::Whole,
                    snapshots: Snapshots::Single,
                    moved_from: None,
                })
                .unwrap();
            w.homes.push(home);
        }
        w
    }

    fn config_dir(&self, name: &str) -> ConfigDir {
        let i = if name == "alice" { 0 } else { 1 };
        ConfigDir::at(self.homes[i].path().join("config"))
    }

    fn config(&self, name: &str) -> FolderConfig {
        self.config_dir(name).load_folder("docs").unwrap()
    }

    fn executor(&self, name: &str) -> Executor<Faulty> {
        mf_daemon::folder::executor(&self.config(name), self.grid.clone()).unwrap()
    }

    async fn set_format(&self, format: FolderFormat) {
        let meta = self
            .grid
            .upload(mf_grid::UploadSource::Bytes(format.to_metadata().into()))
            .await
            .unwrap();
        self.link(METADATA_ENTRY, meta).await;
    }

    async fn link(&self, name: &str, cap: Capability) {
        let mut c = DirChildren::new();
        c.insert(name.into(), DirEntry::new(cap));
        self.grid
            .set_children(&self.collective, c, Replace::Yes)
            .await
            .unwrap();
    }

    /// A distinct immutable directory to stand for a snapshot.
    async fn snapshot(&self, label: &str) -> Cap {
        common::stand_in_snapshot(&self.grid, label).await
    }

    /// `name` publishes `files`, each with a fresh snapshot; returns the
    /// entries as readers should see them.
    async fn publish(&self, name: &str, files: &[&str]) -> BTreeMap<String, Cap> {
        let mut entries = Vec::new();
        let mut expected = BTreeMap::new();
        for f in files {
            let cap = self.snapshot(&format!("{name} {f}")).await;
            let entry = snapshot::entry_name(&RelPath::new(f).unwrap());
            expected.insert(entry.clone(), cap.clone());
            entries.push(PublishEntry {
                name: entry,
                snapshot: cap,
                shape: EntryShape::File,
            });
        }
        let ex = self.executor(name);
        match ex
            .execute(Action::Publish {
                op: OpId(1),
                entries,
            })
            .await
        {
            Event::Published { result, .. } => result.map_err(|e| e.message).unwrap(),
            other => panic!("{other:?}"),
        }
        expected
    }

    /// `reader`, polling afresh, reads exactly `has` of `writer`'s.
    async fn assert_reads(
        &self,
        reader: &str,
        writer: &str,
        has: &BTreeMap<String, Cap>,
        when: &str,
    ) {
        let mut view = View::new();
        assert!(take_in(&mut view, poll(&self.executor(reader)).await).is_empty());
        assert_eq!(&entries_of(&view, writer), has, "{when}");
    }

    /// The admin's `convert`, as the CLI runs it.
    async fn convert(&self) -> BTreeMap<String, MoveState> {
        let r = mf_daemon::commands::convert(
            &self.config_dir("alice"),
            "docs",
            Some(Layout::Sharded),
            false,
        )
        .await
        .unwrap();
        r.participants.into_iter().collect()
    }
}

async fn poll(ex: &Executor<Faulty>) -> Vec<RemoteListing> {
    match ex.execute(Action::Poll).await {
        Event::Polled(r) => r.unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Takes in a poll as the engine does: each part replaces its last listing;
/// returns the problems it reported.
fn take_in(view: &mut View, listings: Vec<RemoteListing>) -> Vec<String> {
    let mut problems = Vec::new();
    for l in listings {
        problems.extend(l.rejected.iter().cloned());
        match l.entries {
            Ok(entries) => {
                let part = entries
                    .into_iter()
                    .map(|(name, (_, cap))| (name, cap))
                    .collect();
                view.insert((l.participant, l.shard), part);
            }
            Err(e) => problems.push(format!("{}: {}", l.participant, e.message)),
        }
    }
    problems
}

/// Everything `participant` publishes, in the view.
fn entries_of(view: &View, participant: &str) -> BTreeMap<String, Cap> {
    view.iter()
        .filter(|((p, _), _)| p == participant)
        .flat_map(|(_, part)| part.clone())
        .collect()
}

fn files(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}/f{i}")).collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The whole move: convert, alice moves (as the admin her new directory is
/// linked at once), bob reads her through the move until then and after;
/// bob moves and alice reads him through his old directory's link until a
/// second `convert` links his new one; nothing is lost on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_folder_moves_to_shards_and_readers_follow() {
    let w = World::new().await;
    let alice_files = files("a", 40);
    let bob_files = files("b", 30);
    let mut alice_has = w.publish("alice", &strs(&alice_files)).await;
    let bob_has = w.publish("bob", &strs(&bob_files)).await;
    let bob_reader = w.executor("bob");
    let mut bobs_view = View::new();
    assert!(take_in(&mut bobs_view, poll(&bob_reader).await).is_empty());
    assert_eq!(entries_of(&bobs_view, "alice"), alice_has);
    assert!(!bob_reader.format_changed());

    // The admin converts: nobody has moved yet.
    let report = w.convert().await;
    assert_eq!(report["alice"], MoveState::Waiting);
    assert_eq!(report["bob"], MoveState::Waiting);
    assert!(take_in(&mut bobs_view, poll(&bob_reader).await).is_empty());
    assert!(bob_reader.format_changed(), "a poll notices");

    // Alice's daemon follows: her entries go into shards of a new directory.
    let old_alice = w.config("alice").personal_cap;
    let alice = convert::follow(&w.config_dir("alice"), w.config("alice"), &w.grid, true)
        .await
        .unwrap();
    assert_eq!(
        (alice.layout, alice.content),
        (TARGET.layout, TARGET.content)
    );
    assert_eq!(alice.moved_from, None);
    assert_ne!(alice.personal_cap, old_alice);
    assert_eq!(w.config("alice").personal_cap, alice.personal_cap, "saved");
    // As the admin she links her new directory in the collective herself.
    assert_eq!(
        w.grid.list(&w.collective).await.unwrap()["alice"].cap,
        mf_grid::read_only(&alice.personal_cap).unwrap()
    );
    assert!(!w
        .grid
        .list(&old_alice)
        .await
        .unwrap()
        .contains_key(MOVED_ENTRY));
    // The old flat reader takes her shards; nothing is missing.
    assert!(take_in(&mut bobs_view, poll(&bob_reader).await).is_empty());
    assert_eq!(entries_of(&bobs_view, "alice"), alice_has);
    assert!(bobs_view.keys().any(|(p, s)| p == "alice" && s.is_some()));
    // Following again is nothing to do.
    let again = convert::follow(&w.config_dir("alice"), alice.clone(), &w.grid, false)
        .await
        .unwrap();
    assert_eq!(again.personal_cap, alice.personal_cap);

    // Alice writes on in her new directory; bob sees it.
    alice_has.extend(w.publish("alice", &["a/new"]).await);
    assert!(take_in(&mut bobs_view, poll(&bob_reader).await).is_empty());
    assert_eq!(entries_of(&bobs_view, "alice"), alice_has);

    // Alice (sharded now) reads bob's flat directory.
    let alice_reader = w.executor("alice");
    let mut alices_view = View::new();
    assert!(take_in(&mut alices_view, poll(&alice_reader).await).is_empty());
    assert_eq!(entries_of(&alices_view, "bob"), bob_has);

    // Bob moves and leaves a link in his old directory, which the admin's
    // `convert` follows and links in the collective...
    let old_bob = w.config("bob").personal_cap;
    let bob = convert::follow(&w.config_dir("bob"), w.config("bob"), &w.grid, true)
        .await
        .unwrap();
    assert_eq!(bob.layout, Layout::Sharded);
    let bob_new = mf_grid::read_only(&bob.personal_cap).unwrap();
    assert_eq!(
        w.grid.list(&old_bob).await.unwrap()[MOVED_ENTRY].cap,
        bob_new
    );
    let report = w.convert().await;
    assert_eq!(report["alice"], MoveState::Moved);
    assert_eq!(report["bob"], MoveState::LinkedNow);
    assert_eq!(
        w.grid.list(&w.collective).await.unwrap()["bob"].cap,
        bob_new
    );
    assert!(take_in(&mut alices_view, poll(&alice_reader).await).is_empty());
    assert_eq!(entries_of(&alices_view, "bob"), bob_has);
    // ... as does the admin's daemon when a poll finds a move.
    w.link("bob", mf_grid::read_only(&old_bob).unwrap()).await;
    let mut fresh = View::new();
    assert!(take_in(&mut fresh, poll(&w.executor("alice")).await).is_empty());
    assert_eq!(entries_of(&fresh, "bob"), bob_has);
    assert_eq!(
        w.grid.list(&w.collective).await.unwrap()["bob"].cap,
        bob_new
    );
    // A fresh reader (as after a restart) finds everything at once.
    let mut fresh = View::new();
    assert!(take_in(&mut fresh, poll(&w.executor("bob")).await).is_empty());
    assert_eq!(entries_of(&fresh, "alice"), alice_has);
    assert_eq!(w.convert().await["bob"], MoveState::Moved);
}

/// A crash at any grid write of a move (before its config is saved, or
/// after), the admin's or another participant's, leaves a folder that the
/// next start finishes moving, with every entry where readers find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_write_of_a_move_is_finished_at_the_next_start() {
    for (mover, reader) in [("alice", "bob"), ("bob", "alice")] {
        let mut crash_at = 0;
        loop {
            let w = World::new().await;
            let moved_files = files(mover, 30);
            let has = w.publish(mover, &strs(&moved_files)).await;
            w.convert().await;
            let old = w.config(mover).personal_cap;
            w.grid.crash_at_write(crash_at);
            let outcome =
                convert::follow(&w.config_dir(mover), w.config(mover), &w.grid, true).await;
            let writes = w.grid.writes();
            w.grid.heal();
            let when = format!("{mover}, crash at {crash_at}");
            if let Err(e) = &outcome {
                assert!(e.contains("crashed"), "{e}");
                // Whatever the crash left, the reader reads every entry.
                w.assert_reads(reader, mover, &has, &when).await;
            }
            let done = convert::follow(&w.config_dir(mover), w.config(mover), &w.grid, false)
                .await
                .unwrap();
            assert_eq!(done.layout, Layout::Sharded);
            assert_eq!(done.moved_from, None);
            let new_read = mf_grid::read_only(&done.personal_cap).unwrap();
            let told = if mover == "alice" {
                w.grid.list(&w.collective).await.unwrap()["alice"]
                    .cap
                    .clone()
            } else {
                w.grid.list(&old).await.unwrap()[MOVED_ENTRY].cap.clone()
            };
            assert_eq!(told, new_read, "{when}");
            w.assert_reads(reader, mover, &has, &when).await;
            if outcome.is_ok() {
                assert!(crash_at >= writes, "a move that crashed cannot succeed");
                break;
            }
            crash_at += 1;
        }
        assert!(crash_at > 3, "a move makes several writes: {crash_at}");
    }
}

/// A participant's move that does not lead to a directory of its own is
/// rejected, by name, and the others sync on; a format a daemon cannot
/// follow stops the folder with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_moves_are_rejected_by_name() {
    let w = World::new().await;
    let alice_has = w.publish("alice", &["a/x"]).await;
    let bob_personal = w.config("bob").personal_cap;
    let mallory = w.grid.create_mutable_dir().await.unwrap();
    w.link("mallory", mf_grid::read_only(&mallory).unwrap())
        .await;
    let elsewhere = w.grid.create_mutable_dir().await.unwrap();
    let mut onward = DirChildren::new();
    onward.insert(
        MOVED_ENTRY.into(),
        DirEntry::new(mf_grid::read_only(&w.grid.create_mutable_dir().await.unwrap()).unwrap()),
    );
    w.grid
        .set_children(&elsewhere, onward, Replace::Yes)
        .await
        .unwrap();
    // Carol moved (her new directory names her old one, which names the
    // new one) and nobody has linked her new directory yet: mallory cannot
    // claim it.
    let carol_old = w.grid.create_mutable_dir().await.unwrap();
    w.link("carol", mf_grid::read_only(&carol_old).unwrap())
        .await;
    let carol_new = w.grid.create_mutable_dir().await.unwrap();
    let carol_has = {
        let cap = w.snapshot("carol's").await;
        let name = snapshot::entry_name(&RelPath::new("c/x").unwrap());
        let mut c = DirChildren::new();
        c.insert(
            MOVED_FROM_ENTRY.into(),
            DirEntry::new(mf_grid::read_only(&carol_old).unwrap()),
        );
        c.insert(
            name.clone(),
            DirEntry::new(Capability::parse(cap.as_str()).unwrap()),
        );
        w.grid
            .set_children(&carol_new, c, Replace::Yes)
            .await
            .unwrap();
        BTreeMap::from([(name, cap)])
    };
    let mut c = DirChildren::new();
    c.insert(
        MOVED_ENTRY.into(),
        DirEntry::new(mf_grid::read_only(&carol_new).unwrap()),
    );
    w.grid
        .set_children(&carol_old, c, Replace::Yes)
        .await
        .unwrap();
    let cases = [
        (mf_grid::read_only(&carol_new).unwrap(), "not its own"),
        (mf_grid::read_only(&bob_personal).unwrap(), "links already"),
        (
            Capability::parse(w.snapshot("not a directory").await.as_str()).unwrap(),
            "names no mutable",
        ),
        (mf_grid::read_only(&elsewhere).unwrap(), "moved again"),
    ];
    for (to, why) in cases {
        let mut link = DirChildren::new();
        link.insert(MOVED_ENTRY.into(), DirEntry::new(to));
        w.grid
            .set_children(&mallory, link, Replace::Yes)
            .await
            .unwrap();
        let mut view = View::new();
        let problems = take_in(&mut view, poll(&w.executor("bob")).await);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("mallory") && p.contains("rejected") && p.contains(why)),
            "{why}: {problems:?}"
        );
        assert_eq!(entries_of(&view, "alice"), alice_has, "the others sync on");
        assert_eq!(
            entries_of(&view, "carol"),
            carol_has,
            "carol's move is hers"
        );
    }

    // Back from sharded to flat is not a move a daemon makes.
    w.set_format(TARGET).await;
    convert::follow(&w.config_dir("bob"), w.config("bob"), &w.grid, true)
        .await
        .unwrap();
    w.set_format(FolderFormat::default()).await;
    let err = convert::follow(&w.config_dir("bob"), w.config("bob"), &w.grid, true)
        .await
        .unwrap_err();
    assert!(err.contains("cannot follow"), "{err}");

    // A format from a later release: the poll notices, and following it
    // fails with the reason (the folder stops and says so).
    w.set_format(TARGET).await;
    let bob = w.executor("bob");
    poll(&bob).await;
    assert!(!bob.format_changed());
    let unknown = w
        .grid
        .upload(mf_grid::UploadSource::Bytes(
            br#"{"version":1,"layout":"hamt"}"#.to_vec().into(),
        ))
        .await
        .unwrap();
    w.link(METADATA_ENTRY, unknown).await;
    poll(&bob).await;
    assert!(bob.format_changed());
    for changed in [true, false] {
        let err = convert::follow(&w.config_dir("bob"), w.config("bob"), &w.grid, changed)
            .await
            .unwrap_err();
        assert!(err.contains("\"hamt\"") && err.contains("upgrade"), "{err}");
    }
}

/// Contents alone (whole → chunked, the embedded grid's default `convert`;
/// a flat folder keeps single snapshots) move nothing: the daemon writes chunks from then on, in the same
/// directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contents_alone_change_without_a_move() {
    let w = World::new().await;
    w.publish("alice", &["a/x"]).await;
    let report = mf_daemon::commands::convert(&w.config_dir("alice"), "docs", None, false)
        .await
        .unwrap();
    assert_eq!(report.to, "flat layout, chunked contents, single snapshots");
    assert!(report.participants.is_empty(), "{:?}", report.participants);
    let before = w.config("alice");
    let after = convert::follow(&w.config_dir("alice"), before.clone(), &w.grid, true)
        .await
        .unwrap();
    assert_eq!(
        (after.content, after.snapshots),
        (ContentFormat::Chunked, Snapshots::Single),
        "a flat folder keeps single snapshots"
    );
    assert_eq!(w.config("alice").format(), after.format(), "saved");
    assert_eq!(
        (after.layout, &after.personal_cap),
        (Layout::Flat, &before.personal_cap)
    );
    let old = w.grid.list(&before.personal_cap).await.unwrap();
    assert!(!old.contains_key(MOVED_ENTRY));
}

/// A participant that has published nothing moves too (its new directory
/// holds only where it came from), and `convert` tells it apart from one
/// that has not moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_directory_moves_and_is_reported_so() {
    let w = World::new().await;
    let first = w.convert().await;
    assert_eq!(first["bob"], MoveState::Waiting);
    convert::follow(&w.config_dir("bob"), w.config("bob"), &w.grid, true)
        .await
        .unwrap();
    let report = w.convert().await;
    assert_eq!(report["bob"], MoveState::LinkedNow);
    assert_eq!(report["alice"], MoveState::Empty);
    assert_eq!(w.convert().await["bob"], MoveState::Moved);
}
