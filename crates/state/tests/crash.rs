//! Crash safety: a writer killed with SIGKILL mid-stream loses no committed
//! batch and leaves no partial one.
//!
//! The test re-executes its own binary as the writer (selected by an
//! environment variable): it commits large batches in a loop and reports
//! each one on stdout once `commit` has returned. The parent waits for a
//! number of reports, kills the child (SIGKILL) while it is most likely in
//! the middle of the next batch, then opens the database and checks that it
//! holds exactly batches `0..m` for some `m` covering every reported batch,
//! each one complete. This is repeated, each child resuming from what the
//! last one left, so recovery of a killed writer's WAL is exercised too.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mf_core::relpath::RelPath;
use mf_core::snapshot::{Cap, Content, SnapshotInfo};
use mf_core::store::{Change, Conflict, Current, LocalState, PathState, Store};
use mf_state::SqliteStore;

/// Set (to the database path) in the child writer's environment.
const CHILD_ENV: &str = "MF_STATE_CRASH_CHILD_DB";
/// Rows per batch: large, so that a kill usually lands inside a commit.
const ROWS: usize = 5000;
/// The path whose current record names the last committed batch.
const COUNTER: &str = "counter";

fn row_path(batch: u64, row: usize) -> RelPath {
    RelPath::new(&format!("b{batch:06}/f{row:04}")).unwrap()
}

fn batch_cap(batch: u64) -> Cap {
    Cap::from(format!("batch-{batch}"))
}

/// Batch `i`: ROWS current records, a snapshot, a conflict, and the counter.
fn batch(i: u64) -> Vec<Change> {
    let mut out: Vec<Change> = (0..ROWS)
        .map(|r| {
            let st = PathState {
                size: r as u64,
                mtime_ns: i as i64,
                ctime_ns: 0,
            };
            Change::PutCurrent(
                row_path(i, r),
                Current {
                    snapshot: batch_cap(i),
                    local: LocalState::File(st),
                    published: false,
                    adopting: None,
                },
            )
        })
        .collect();
    out.push(Change::PutSnapshot(SnapshotInfo {
        cap: batch_cap(i),
        relpath: row_path(i, 0),
        author: "writer".into(),
        author_key: "k".into(),
        parents: if i == 0 {
            vec![]
        } else {
            vec![batch_cap(i - 1)]
        },
        content: Content::Dir,
        mtime_s: i as i64,
        generation: i,
    }));
    out.push(Change::PutConflict(Conflict {
        path: RelPath::new(COUNTER).unwrap(),
        author: format!("a{i:06}"),
        snapshot: batch_cap(i),
        copy: None,
        resolved: false,
    }));
    out.push(Change::PutCurrent(
        RelPath::new(COUNTER).unwrap(),
        Current {
            snapshot: batch_cap(i),
            local: LocalState::Dir,
            published: true,
            adopting: Some(batch_cap(i)),
        },
    ));
    out
}

/// How many batches the store holds, after checking it holds exactly the
/// complete batches `0..m`.
fn committed_prefix(store: &mut SqliteStore) -> u64 {
    let loaded = store.load().unwrap();
    let Some(counter) = loaded.current.get(&RelPath::new(COUNTER).unwrap()) else {
        assert!(loaded.current.is_empty() && loaded.conflicts.is_empty());
        return 0;
    };
    let last: u64 = counter
        .snapshot
        .as_str()
        .strip_prefix("batch-")
        .unwrap()
        .parse()
        .unwrap();
    let m = last + 1;
    assert_eq!(
        loaded.current.len() as u64,
        m * ROWS as u64 + 1,
        "no partial or extra batch"
    );
    assert_eq!(loaded.conflicts.len() as u64, m);
    for i in 0..m {
        for r in [0, ROWS / 2, ROWS - 1] {
            let c = &loaded.current[&row_path(i, r)];
            assert_eq!(c.snapshot, batch_cap(i));
        }
        assert!(
            store.snapshot(&batch_cap(i)).unwrap().is_some(),
            "snapshot of batch {i}"
        );
    }
    assert!(
        store.snapshot(&batch_cap(m)).unwrap().is_none(),
        "nothing of batch {m}"
    );
    m
}

/// The child: resume after the committed prefix and commit until killed
/// (or, as a safety net, until a minute has passed), saying when each commit
/// starts and when it has returned.
#[test]
fn crash_child() {
    let Some(db) = std::env::var_os(CHILD_ENV) else {
        return; // An ordinary test run: nothing to do.
    };
    let mut store = SqliteStore::open(db).unwrap();
    let start = committed_prefix(&mut store);
    println!("RESUMED {start}");
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in start.. {
        let changes = batch(i);
        println!("BEGIN {i}");
        store.commit(&changes).unwrap();
        println!("COMMITTED {i}");
        if Instant::now() > deadline {
            break;
        }
    }
}

/// The number after `marker` in a line of the child's output (libtest may
/// print its own "test crash_child ... " before it on the same line).
fn marked(line: &str, marker: &str) -> Option<u64> {
    let (_, n) = line.split_once(marker)?;
    Some(n.trim().parse().unwrap())
}

#[cfg(unix)]
#[test]
fn a_killed_writer_loses_no_committed_batch_and_leaves_no_partial_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.sqlite");
    let mut expected_at_least = 0;
    let mut rolled_back = 0;
    // Each round kills the writer at a different point of a commit, as a
    // fraction of how long its commits have been taking.
    let fractions = [0.0, 0.25, 0.5, 0.75, 0.95];
    for (round, fraction) in fractions.into_iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_child",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        // Wait (bounded) until the child has resumed, committed three
        // batches (to time them) and begun a fourth.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut resumed = None;
        let mut reported = Vec::new();
        let mut began = None;
        let mut took = Vec::new();
        let mut in_flight = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, line) = rx.recv_timeout(left).unwrap_or_else(|e| {
                let _ = child.kill();
                panic!("round {round}: the child stopped reporting ({e})");
            });
            if let Some(n) = marked(&line, "RESUMED ") {
                resumed = Some(n);
            } else if let Some(n) = marked(&line, "BEGIN ") {
                if reported.len() >= 3 {
                    break n;
                }
                began = Some(at);
            } else if let Some(n) = marked(&line, "COMMITTED ") {
                reported.push(n);
                took.push(at - began.take().unwrap());
            }
        };
        // Not a synchronisation: aims the kill inside the commit in flight.
        took.sort();
        std::thread::sleep(took[took.len() / 2].mul_f64(fraction));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: the child was killed");
        reader.join().unwrap();
        // Reports already in the pipe count as committed too; on a loaded
        // machine the child may even have begun a later batch before the kill.
        for (_, line) in rx.try_iter() {
            if let Some(n) = marked(&line, "COMMITTED ") {
                reported.push(n);
            } else if let Some(n) = marked(&line, "BEGIN ") {
                in_flight = in_flight.max(n);
            }
        }
        let resumed = resumed.expect("the child reported where it resumed");
        assert!(
            resumed >= expected_at_least,
            "round {round}: an earlier batch was lost"
        );
        let last_reported = *reported.last().unwrap();

        let mut store = SqliteStore::open(&db).unwrap();
        let m = committed_prefix(&mut store);
        assert!(
            m > last_reported,
            "round {round}: reported batch {last_reported} lost (m={m})"
        );
        assert!(
            m <= in_flight + 1,
            "round {round}: more batches than the child began"
        );
        let outcome = if m == in_flight {
            rolled_back += 1;
            "rolled back"
        } else {
            "had committed"
        };
        println!(
            "round {round}: killed {:?} into the commit of batch {in_flight} (commits take \
             ~{:?}); it {outcome}; {m} complete batches",
            took[took.len() / 2].mul_f64(fraction),
            took[took.len() / 2],
        );
        expected_at_least = m;
    }
    println!(
        "{rolled_back} of {} kills landed inside a commit",
        fractions.len()
    );
}
