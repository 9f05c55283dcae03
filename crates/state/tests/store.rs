//! `SqliteStore` and `StateReader` through their public API: round trips,
//! atomicity, files and permissions, concurrent readers, errors, events and
//! settings, and a timing print for large batches.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mf_core::relpath::RelPath;
use mf_core::snapshot::{Cap, Content, SnapshotInfo};
use mf_core::store::{Change, Conflict, Current, LocalState, PathState, Store};
use mf_state::{Durability, SqliteStore, StateReader};
use rusqlite::Connection;
use tempfile::TempDir;

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    (dir, path)
}

fn file(size: u64) -> LocalState {
    LocalState::File(PathState {
        size,
        mtime_ns: -5,
        ctime_ns: i64::MAX,
    })
}

fn current(cap: &str, local: LocalState) -> Current {
    Current {
        snapshot: Cap::from(cap),
        local,
        published: false,
        adopting: None,
    }
}

fn snap(cap: &str, path: &str, parents: &[&str], content: Content) -> SnapshotInfo {
    SnapshotInfo {
        cap: Cap::from(cap),
        relpath: p(path),
        author: "alice".into(),
        author_key: "a2V5".into(),
        parents: parents.iter().map(|c| Cap::from(*c)).collect(),
        content,
        mtime_s: 1_700_000_000,
        generation: u64::MAX,
    }
}

fn conflict(path: &str, author: &str, cap: &str) -> Conflict {
    Conflict {
        path: p(path),
        author: author.into(),
        snapshot: Cap::from(cap),
        copy: Some(PathState {
            size: u64::MAX,
            mtime_ns: 1,
            ctime_ns: 2,
        }),
        resolved: false,
    }
}

/// A raw connection to the same file, to inspect or sabotage it.
fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

#[test]
fn every_change_round_trips_through_a_reopen() {
    let (_dir, path) = db();
    let mut s = SqliteStore::open(&path).unwrap();
    let s1 = snap(
        "s1",
        "a",
        &[],
        Content::File {
            cap: Cap::from("URI:CHK:c"),
            size: u64::MAX,
            executable: true,
        },
    );
    let s2 = snap("s2", "a", &["s1", "s0", "s1"], Content::Deleted);
    let s3 = snap("s3", "d", &["s2"], Content::Dir);
    s.commit(&[
        Change::PutSnapshot(s1.clone()),
        Change::PutSnapshot(s2.clone()),
        Change::PutSnapshot(s3.clone()),
        Change::PutCurrent(p("a"), current("s2", LocalState::Absent)),
        Change::PutCurrent(p("d"), current("s3", LocalState::Dir)),
        Change::PutCurrent(
            p("f"),
            Current {
                adopting: Some(Cap::from("remote")),
                ..current("s1", file(7))
            },
        ),
        Change::PutConflict(conflict("a", "bob", "s1")),
        Change::PutConflict(Conflict {
            copy: None,
            resolved: true,
            ..conflict("a", "carol", "s3")
        }),
        Change::PutConflict(conflict("Z", "bob", "s1")),
    ])
    .unwrap();
    s.commit(&[
        Change::MarkPublished(p("a"), Cap::from("s2")),
        Change::MarkPublished(p("d"), Cap::from("not-current")),
        Change::MarkPublished(p("nowhere"), Cap::from("s1")),
        Change::RemoveConflict(p("a"), "carol".into()),
        Change::RemoveConflict(p("a"), "nobody".into()),
    ])
    .unwrap();
    drop(s);

    let mut s = SqliteStore::open(&path).unwrap();
    let loaded = s.load().unwrap();
    let cur: Vec<_> = loaded
        .current
        .iter()
        .map(|(k, v)| (k.as_str(), v.published))
        .collect();
    assert_eq!(cur, [("a", true), ("d", false), ("f", false)]);
    assert_eq!(loaded.current[&p("f")].local, file(7));
    assert_eq!(loaded.current[&p("f")].adopting, Some(Cap::from("remote")));
    assert_eq!(loaded.current[&p("d")].adopting, None);
    assert_eq!(loaded.current[&p("d")].local, LocalState::Dir);
    assert_eq!(loaded.current[&p("a")].local, LocalState::Absent);
    // Conflicts come back in (path, author) order, bytewise like Rust's.
    assert_eq!(
        loaded.conflicts,
        [conflict("Z", "bob", "s1"), conflict("a", "bob", "s1")]
    );
    assert_eq!(s.snapshot(&Cap::from("s1")).unwrap(), Some(s1));
    assert_eq!(
        s.snapshot(&Cap::from("s2")).unwrap(),
        Some(s2),
        "parents keep their order"
    );
    assert_eq!(s.snapshot(&Cap::from("s3")).unwrap(), Some(s3));
    assert_eq!(s.snapshot(&Cap::from("s4")).unwrap(), None);
    assert_eq!(s.current_entries().unwrap().len(), 3);
    assert_eq!(s.conflicts().unwrap(), loaded.conflicts);
}

#[test]
fn a_failing_batch_leaves_nothing_applied() {
    let (_dir, path) = db();
    let mut s = SqliteStore::open(&path).unwrap();
    s.commit(&[Change::PutCurrent(p("keep"), current("k", LocalState::Dir))])
        .unwrap();
    let before = s.load().unwrap();
    // Sabotage from another connection: inserting a conflict now fails.
    raw(&path)
        .execute_batch(
            "CREATE TRIGGER sabotage BEFORE INSERT ON conflicts \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let batch = [
        Change::PutCurrent(p("new"), current("s1", file(1))),
        Change::PutCurrent(p("keep"), current("s1", LocalState::Absent)),
        Change::PutSnapshot(snap("s1", "new", &[], Content::Dir)),
        Change::MarkPublished(p("keep"), Cap::from("s1")),
        Change::PutConflict(conflict("new", "bob", "s1")),
        Change::PutCurrent(p("after"), current("s1", LocalState::Dir)),
    ];
    let err = s.commit(&batch).unwrap_err();
    assert!(
        err.0.contains("change 4 (PutConflict \"new\" by \"bob\")"),
        "{err}"
    );
    assert!(err.0.contains("injected failure"), "{err}");
    assert!(!err.0.contains("s1"), "no capability in messages: {err}");
    assert_eq!(s.load().unwrap(), before, "nothing of the batch applied");
    assert_eq!(s.snapshot(&Cap::from("s1")).unwrap(), None);
    // The store is still usable, and the same batch goes through once fixed.
    raw(&path).execute_batch("DROP TRIGGER sabotage").unwrap();
    s.commit(&batch).unwrap();
    let after = s.load().unwrap();
    assert_eq!(after.current.len(), 3);
    assert!(after.current[&p("keep")].published);
    assert_eq!(after.conflicts.len(), 1);
}

#[test]
fn a_missing_table_is_an_error_not_a_panic() {
    let (_dir, path) = db();
    let mut s = SqliteStore::open(&path).unwrap();
    raw(&path).execute_batch("DROP TABLE snapshots").unwrap();
    let batch = [
        Change::PutCurrent(p("a"), current("s", LocalState::Dir)),
        Change::PutSnapshot(snap("s", "a", &[], Content::Dir)),
    ];
    let err = s.commit(&batch).unwrap_err();
    assert!(
        err.0.contains("change 1 (PutSnapshot") && err.0.contains("no such table"),
        "{err}"
    );
    assert!(
        s.load().unwrap().current.is_empty(),
        "the first change was rolled back"
    );
    assert!(s.snapshot(&Cap::from("s")).is_err());
}

#[test]
fn damaged_rows_are_reported() {
    let (_dir, path) = db();
    let mut s = SqliteStore::open(&path).unwrap();
    s.commit(&[Change::PutSnapshot(snap("s", "a", &[], Content::Dir))])
        .unwrap();
    let conn = raw(&path);
    // CHECK constraints cannot see these: a path that escapes, broken parents.
    conn.execute_batch(
        "INSERT INTO current VALUES ('../etc', 's', 'dir', NULL, NULL, NULL, 0, NULL);
         UPDATE snapshots SET parents = '{\"not\": \"a list\"}';",
    )
    .unwrap();
    let err = s.load().unwrap_err();
    assert!(
        err.0.contains("damaged row in current for \"../etc\""),
        "{err}"
    );
    let err = s.snapshot(&Cap::from("s")).unwrap_err();
    assert!(
        err.0.contains("damaged row in snapshots") && err.0.contains("parents"),
        "{err}"
    );
}

#[test]
fn garbage_files_are_refused_clearly() {
    let (_dir, path) = db();
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        err.0.contains("not a database") || err.0.contains("not an SQLite"),
        "{err}"
    );
    let err = StateReader::open(&path).unwrap_err();
    assert!(err.0.contains("not an SQLite database"), "{err}");

    // Another program's SQLite database is left alone.
    let (_dir, other) = db();
    raw(&other)
        .execute_batch("CREATE TABLE theirs (x)")
        .unwrap();
    let err = SqliteStore::open(&other).unwrap_err();
    assert!(err.0.contains("not a Magic Folder state database"), "{err}");

    // A missing directory.
    let err = SqliteStore::open("/nonexistent-dir/state.sqlite").unwrap_err();
    assert!(err.0.contains("/nonexistent-dir/state.sqlite"), "{err}");
}

#[test]
fn schema_is_created_and_a_future_version_refused() {
    let (_dir, path) = db();
    drop(SqliteStore::open(&path).unwrap());
    let conn = raw(&path);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, i64::from(mf_state::SCHEMA_VERSION));
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // Reopening an up-to-date database changes nothing.
    drop(SqliteStore::open(&path).unwrap());
    let future = mf_state::SCHEMA_VERSION + 1;
    conn.pragma_update(None, "user_version", future).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    let says = format!("schema version {future}");
    assert!(err.0.contains(&says) && err.0.contains("newer"), "{err}");
    let err = StateReader::open(&path).unwrap_err();
    assert!(err.0.contains("newer"), "{err}");
}

#[cfg(unix)]
#[test]
fn files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let (dir, path) = db();
    let mut s = SqliteStore::open(&path).unwrap();
    s.commit(&[Change::PutCurrent(
        p("a"),
        current("secret", LocalState::Dir),
    )])
    .unwrap();
    assert_eq!(mode(&path), 0o600);
    for suffix in ["-wal", "-shm"] {
        let side = dir.path().join(format!("state.sqlite{suffix}"));
        assert_eq!(mode(&side), 0o600, "{suffix}");
    }
    drop(s);
    // A file someone made world-readable is tightened at open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(SqliteStore::open(&path).unwrap());
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn a_reader_works_while_the_writer_runs() {
    let (_dir, path) = db();
    let mut w = SqliteStore::open(&path).unwrap();
    w.commit(&[Change::PutCurrent(p("a"), current("s1", LocalState::Dir))])
        .unwrap();
    let r = SqliteStore::open_read_only(&path).unwrap();
    assert_eq!(r.current_entries().unwrap().len(), 1);
    // The writer commits while the reader is open; the reader sees it next call.
    w.commit(&[
        Change::PutCurrent(p("b"), current("s2", file(3))),
        Change::PutConflict(conflict("b", "bob", "s1")),
    ])
    .unwrap();
    w.record_event(10, Some("b"), "conflict", "bob's version kept as a copy")
        .unwrap();
    w.set_setting("poll_interval", "60").unwrap();
    assert_eq!(r.current_entries().unwrap().len(), 2);
    assert_eq!(r.conflicts().unwrap(), [conflict("b", "bob", "s1")]);
    assert_eq!(r.recent_events(10).unwrap()[0].kind, "conflict");
    assert_eq!(
        r.get_setting("poll_interval").unwrap().as_deref(),
        Some("60")
    );
    assert_eq!(r.load().unwrap(), w.load().unwrap());

    // A reader in the middle of a long read does not block the writer, and
    // keeps its consistent view until that read ends.
    let guard = raw_reader_holding_a_snapshot(&path);
    w.commit(&[Change::PutCurrent(p("c"), current("s3", LocalState::Dir))])
        .unwrap();
    let n: i64 = guard
        .query_row("SELECT count(*) FROM current", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2, "the open read transaction still sees its snapshot");
    assert_eq!(r.current_entries().unwrap().len(), 3);
    drop(guard);

    // The reader cannot write, and never creates a database.
    assert!(raw_read_only(&path)
        .execute("DELETE FROM current", [])
        .is_err());
    drop(w);
    assert_eq!(
        StateReader::open(&path)
            .unwrap()
            .current_entries()
            .unwrap()
            .len(),
        3
    );
    let missing = path.with_file_name("missing.sqlite");
    assert!(StateReader::open(&missing).is_err());
    assert!(!missing.exists());
}

/// A read-only raw connection inside an open read transaction.
fn raw_reader_holding_a_snapshot(path: &Path) -> Connection {
    let conn = raw_read_only(path);
    conn.execute_batch("BEGIN").unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM current", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    conn
}

fn raw_read_only(path: &Path) -> Connection {
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

#[test]
fn a_locked_database_is_a_clear_error() {
    let (_dir, path) = db();
    let mut s = SqliteStore::open(&path).unwrap();
    s.set_busy_timeout(Duration::from_millis(50)).unwrap();
    let other = raw(&path);
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = s
        .commit(&[Change::PutCurrent(p("a"), current("s", LocalState::Dir))])
        .unwrap_err();
    assert!(
        err.0.contains("database is locked") && err.0.contains("another process"),
        "{err}"
    );
    other.execute_batch("ROLLBACK").unwrap();
    s.commit(&[Change::PutCurrent(p("a"), current("s", LocalState::Dir))])
        .unwrap();
}

#[test]
fn events_are_kept_newest_first_and_pruned() {
    let (_dir, path) = db();
    let mut s = SqliteStore::open(&path).unwrap();
    s.set_event_retention(5);
    let mut ids = Vec::new();
    for i in 0..12 {
        let path = (i % 2 == 0).then(|| format!("f{i}"));
        ids.push(
            s.record_event(1000 + i, path.as_deref(), "upload", &format!("n{i}"))
                .unwrap(),
        );
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let events = s.recent_events(100).unwrap();
    let msgs: Vec<_> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(msgs, ["n11", "n10", "n9", "n8", "n7"]);
    assert_eq!(events[1].path.as_deref(), Some("f10"));
    assert_eq!(events[0].path, None);
    assert_eq!(events[0].unix_ms, 1011);
    assert_eq!(s.recent_events(2).unwrap(), events[..2]);
    // Survives a reopen, with ids still increasing after pruning.
    drop(s);
    let mut s = SqliteStore::open(&path).unwrap();
    let id = s.record_event(0, None, "k", "m").unwrap();
    assert!(id > ids[11]);
    s.set_event_retention(0);
    s.record_event(0, None, "k", "m").unwrap();
    assert!(s.recent_events(10).unwrap().is_empty());
}

#[test]
fn settings_round_trip() {
    let (_dir, path) = db();
    let mut s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.get_setting("k").unwrap(), None);
    s.set_setting("k", "v1").unwrap();
    s.set_setting("k", "v2").unwrap();
    s.set_setting("other", "{\"json\": true}").unwrap();
    drop(s);
    let mut s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.get_setting("k").unwrap().as_deref(), Some("v2"));
    s.remove_setting("k").unwrap();
    s.remove_setting("never-set").unwrap();
    assert_eq!(s.get_setting("k").unwrap(), None);
    assert!(s.get_setting("other").unwrap().is_some());
}

#[test]
fn the_store_moves_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<SqliteStore>();
    assert_send::<StateReader>();
    let (_dir, path) = db();
    let mut s = SqliteStore::open(&path).unwrap();
    s.set_durability(Durability::Full).unwrap();
    let mut s = std::thread::spawn(move || {
        s.commit(&[Change::PutCurrent(p("a"), current("s", LocalState::Dir))])
            .unwrap();
        s
    })
    .join()
    .unwrap();
    assert_eq!(s.load().unwrap().current.len(), 1);
}

/// Wall-clock and on-CPU time of this thread (Linux; on-CPU time is what a
/// loaded, shared machine distorts least).
struct Timer(Instant, Option<Duration>);

impl Timer {
    fn start() -> Timer {
        Timer(Instant::now(), cpu())
    }

    fn stop(&self, what: &str, rows: usize) -> String {
        let wall = self.0.elapsed();
        let cpu = cpu().zip(self.1).map(|(b, a)| b - a);
        let rate = |d: Duration| rows as f64 / d.as_secs_f64();
        match cpu {
            Some(cpu) => format!(
                "{what}: {wall:.1?} wall ({:.0}/s), {cpu:.1?} on CPU ({:.0}/s)",
                rate(wall),
                rate(cpu)
            ),
            None => format!("{what}: {wall:.1?} wall ({:.0}/s)", rate(wall)),
        }
    }
}

/// This thread's on-CPU time, from /proc/thread-self/schedstat.
fn cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        s.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Not a benchmark and asserts nothing about speed: prints how long a
/// 100,000-row batch, its load and small commits take, for the test log.
#[test]
fn large_batches_timing_print() {
    const N: usize = 100_000;
    let (_dir, path) = db();
    let mut s = SqliteStore::open(&path).unwrap();
    let cap = "URI:DIR2-CHK:".to_owned() + &"x".repeat(52) + ":" + &"y".repeat(52) + ":1:1:0";
    let name = |i: usize| p(&format!("dir{:03}/sub/file-{i:07}.txt", i % 1000));
    let batch: Vec<Change> = (0..N)
        .map(|i| {
            let st = PathState {
                size: i as u64,
                mtime_ns: 1_700_000_000_000_000_000,
                ctime_ns: 1,
            };
            Change::PutCurrent(
                name(i),
                Current {
                    snapshot: Cap::from(format!("{cap}{i}")),
                    local: LocalState::File(st),
                    published: false,
                    adopting: None,
                },
            )
        })
        .collect();
    let t = Timer::start();
    s.commit(&batch).unwrap();
    let commit = t.stop("one batch of PutCurrent", N);
    let t = Timer::start();
    let loaded = s.load().unwrap();
    let load = t.stop("load", N);
    assert_eq!(loaded.current.len(), N);
    drop(s);
    let t = Timer::start();
    let mut s = SqliteStore::open(&path).unwrap();
    let loaded = s.load().unwrap();
    let cold = t.stop("reopen + load", N);
    assert_eq!(loaded.current.len(), N);
    let bytes = std::fs::metadata(&path).unwrap().len();
    // One change per commit, as the engine does for most events.
    const SMALL: usize = 2000;
    let t = Timer::start();
    for i in 0..SMALL {
        s.commit(&[Change::MarkPublished(
            name(i),
            Cap::from(format!("{cap}{i}")),
        )])
        .unwrap();
    }
    let small = t.stop("one-change commits", SMALL);
    println!(
        "timing, {N} rows: {commit}; {load}; {cold}; {small}; db file {:.0} B/row",
        bytes as f64 / N as f64,
    );
}
