//! The key test: `SqliteStore` behaves exactly like the reference `MemStore`.
//!
//! Random sequences of change batches go to both stores; after every step
//! `load()` and `snapshot()` must agree. Values are drawn from small pools so
//! that keys collide (replacing, removing and marking published all hit
//! existing rows), and from the extremes of every numeric type (sizes are
//! `u64` on a signed SQLite column). Now and then the SQLite store is closed
//! and reopened, so what is compared is what is on disk, not a cache.

use mf_core::engine::DeclaredAuthor;
use mf_core::relpath::RelPath;
use mf_core::snapshot::{Cap, Content, SnapshotInfo};
use mf_core::store::{Change, Conflict, Current, LocalState, MemStore, PathState, Store};
use mf_state::{SqliteStore, StateReader};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const CAPS: &[&str] = &[
    "URI:DIR2-CHK:aaaa:1",
    "URI:DIR2-CHK:bbbb:2",
    "c",
    "",
    "ü✓",
    "x\"][",
];
const AUTHORS: &[&str] = &["alice", "bob", "", "Ünï", "a b", "z"];
const PATHS: &[&str] = &[
    "a",
    "b",
    "a/b",
    "A",
    "dir/ünï côdé",
    "a.conflict-bob",
    "@metadata",
    "a b",
];

fn pool(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(items).prop_map(str::to_owned)
}

fn cap() -> impl Strategy<Value = Cap> {
    prop_oneof![4 => pool(CAPS), 1 => ".{0,12}"].prop_map(Cap::from)
}

fn author() -> impl Strategy<Value = String> {
    prop_oneof![4 => pool(AUTHORS), 1 => ".{0,12}"]
}

fn relpath() -> impl Strategy<Value = RelPath> {
    let random = "[a-zA-Z0-9 ._@ü-]{1,6}(/[a-z.]{1,4}){0,2}"
        .prop_filter_map("not a valid path", |s| RelPath::new(&s).ok());
    prop_oneof![4 => pool(PATHS).prop_map(|p| RelPath::new(&p).unwrap()), 1 => random]
}

fn path_state() -> impl Strategy<Value = PathState> {
    (any::<u64>(), any::<i64>(), any::<i64>()).prop_map(|(size, mtime_ns, ctime_ns)| PathState {
        size,
        mtime_ns,
        ctime_ns,
    })
}

fn local() -> impl Strategy<Value = LocalState> {
    prop_oneof![
        Just(LocalState::Absent),
        Just(LocalState::Dir),
        path_state().prop_map(LocalState::File),
    ]
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        (cap(), any::<u64>(), any::<bool>()).prop_map(|(cap, size, executable)| Content::File {
            cap,
            size,
            executable
        }),
        Just(Content::Dir),
        Just(Content::Deleted),
    ]
}

fn snapshot() -> impl Strategy<Value = SnapshotInfo> {
    (
        cap(),
        relpath(),
        author(),
        ".{0,8}",
        proptest::collection::vec(cap(), 0..4),
        content(),
        any::<i64>(),
        any::<u64>(),
    )
        .prop_map(
            |(cap, relpath, author, author_key, parents, content, mtime_s, generation)| {
                SnapshotInfo {
                    cap,
                    relpath,
                    author,
                    author_key,
                    parents,
                    content,
                    mtime_s,
                    generation,
                }
            },
        )
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (relpath(), cap(), local(), any::<bool>(), proptest::option::of(cap())).prop_map(
            |(p, snapshot, local, published, adopting)| {
                Change::PutCurrent(p, Current { snapshot, local, published, adopting })
            }
        ),
        2 => (relpath(), cap()).prop_map(|(p, c)| Change::MarkPublished(p, c)),
        2 => snapshot().prop_map(Change::PutSnapshot),
        2 => (relpath(), author(), cap(), proptest::option::of(path_state()), any::<bool>())
            .prop_map(|(path, author, snapshot, copy, resolved)| {
                Change::PutConflict(Conflict { path, author, snapshot, copy, resolved })
            }),
        1 => (relpath(), author()).prop_map(|(p, a)| Change::RemoveConflict(p, a)),
        1 => (author(), author(), author()).prop_map(|(participant, name, verify_key)| {
            Change::PutDeclared(participant, DeclaredAuthor { name, verify_key })
        }),
        1 => author().prop_map(Change::RemoveDeclared),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    Commit(Vec<Change>),
    Reopen,
    /// The engine running out of work: caches emptied, nothing else.
    ReleaseMemory,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => proptest::collection::vec(change(), 0..10).prop_map(Step::Commit),
        1 => Just(Step::Reopen),
        1 => Just(Step::ReleaseMemory),
    ]
}

/// Every capability the changes mention, plus the pool: the ones to look up.
fn caps_of(steps: &[Step]) -> Vec<Cap> {
    let mut caps: Vec<Cap> = CAPS.iter().map(|c| Cap::from(*c)).collect();
    for s in steps {
        if let Step::Commit(batch) = s {
            for c in batch {
                if let Change::PutSnapshot(s) = c {
                    caps.push(s.cap.clone());
                }
            }
        }
    }
    caps
}

fn agree(mem: &mut MemStore, sql: &mut SqliteStore, caps: &[Cap]) -> Result<(), TestCaseError> {
    prop_assert_eq!(mem.load().unwrap(), sql.load().unwrap());
    for cap in caps {
        prop_assert_eq!(
            mem.snapshot(cap).unwrap(),
            sql.snapshot(cap).unwrap(),
            "cap {:?}",
            cap
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn sqlite_store_matches_mem_store(steps in proptest::collection::vec(step(), 1..16)) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.sqlite");
        let caps = caps_of(&steps);
        let mut mem = MemStore::new();
        let mut sql = SqliteStore::open(&db).unwrap();
        for step in &steps {
            match step {
                Step::Commit(batch) => {
                    mem.commit(batch).unwrap();
                    sql.commit(batch).unwrap();
                }
                Step::Reopen => {
                    drop(sql);
                    sql = SqliteStore::open(&db).unwrap();
                }
                Step::ReleaseMemory => sql.release_memory(),
            }
            agree(&mut mem, &mut sql, &caps)?;
        }
        // A read-only reader sees the same, while the writer is still open.
        let reader = StateReader::open(&db).unwrap();
        prop_assert_eq!(mem.load().unwrap(), reader.load().unwrap());
        for cap in &caps {
            prop_assert_eq!(mem.snapshot(cap).unwrap(), reader.snapshot(cap).unwrap());
        }
    }
}
