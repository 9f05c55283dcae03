//! Tests of the daemon's effect side: scanner, safe file operations,
//! watcher and executor, against real temporary directories and an
//! in-memory grid (plus one round trip through the embedded grid).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mf_core::engine::{
    Action, EffectError, EntryShape, Event, OpId, PublishEntry, RemoteListing, UploadOutcome,
    WriteOutcome,
};
use mf_core::relpath::RelPath;
use mf_core::snapshot::{self, Author, Cap, Content, SnapshotInfo};
use mf_core::store::LocalState;
use mf_daemon::chunked::{Chunking, ContentFormat};
use mf_daemon::executor::{Executor, ExecutorConfig};

mod common;
use mf_daemon::fsops::{self, FsError, Outcome};
use mf_daemon::ignore::IgnoreRules;
use mf_daemon::pack::Snapshots;
use mf_daemon::personal::Layout;
use mf_daemon::scan::scan;
use mf_daemon::watch::{self, WatchMsg};
use mf_grid::{
    CapKind, Capability, DirChildren, DirEntry, Download, Grid, GridError, GridResult, Listed,
    Replace, Revision, UploadSource,
};

fn rp(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// A temporary folder with its marker.
fn folder() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("folder");
    fs::create_dir(&root).unwrap();
    fsops::ensure_marker(&root).unwrap();
    (dir, root)
}

fn state(root: &Path, p: &str) -> LocalState {
    fsops::stat(root, &rp(p)).unwrap()
}

fn file_state(root: &Path, p: &str) -> mf_core::store::PathState {
    match state(root, p) {
        LocalState::File(s) => s,
        other => panic!("{p} is {other:?}"),
    }
}

fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(mf_core::relpath::TEMP_PREFIX))
        .collect()
}

/// All files under `dir`, recursively, relative.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn versions(root: &Path) -> Vec<String> {
    files_under(&fsops::versions_dir(root))
}

// ---------------------------------------------------------------------------
// Ignore rules (the table tests live in the module; this checks the file).

#[test]
fn ignore_file_is_loaded_and_errors_name_the_line() {
    let (_t, root) = folder();
    assert!(IgnoreRules::load(&root).unwrap().is_empty());
    fs::write(
        root.join(".magic-folder-ignore"),
        "# build output\n!keep.o\n*.o\n/build/\n",
    )
    .unwrap();
    let r = IgnoreRules::load(&root).unwrap();
    assert!(r.is_ignored(&rp("src/a.o"), false));
    assert!(!r.is_ignored(&rp("src/keep.o"), false));
    assert!(r.is_ignored(&rp("build/x/y"), false));
    assert!(!r.is_ignored(&rp("src/build"), true));
    fs::write(root.join(".magic-folder-ignore"), "a\nb[\n").unwrap();
    let e = IgnoreRules::load(&root).unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
}

// ---------------------------------------------------------------------------
// Scan

#[test]
fn scan_reports_odd_names_and_skips_what_it_cannot_sync() {
    let (_t, root) = folder();
    let long = "L".repeat(255);
    for f in [
        "a b.txt",
        "x@y",
        "@metadata",
        "ünï/日本.txt",
        "d1/d2/deep.txt",
        "a b.txt.conflict-bob",
    ] {
        let p = root.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, f).unwrap();
    }
    fs::write(root.join(&long), "long").unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    symlink(root.join("a b.txt"), root.join("flink")).unwrap();
    symlink(root.join("d1"), root.join("dlink")).unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(root.join("fifo"))
        .status()
        .unwrap();
    assert!(st.success());
    fs::write(root.join(OsStr::from_bytes(b"bad\xffname")), "x").unwrap();
    fs::write(root.join("back\\slash"), "x").unwrap();
    // Ours, never reported.
    fs::write(root.join(".mf-tmp-1234"), "x").unwrap();
    fs::write(root.join("d1/.mf-tmp-5678"), "x").unwrap();
    fs::write(fsops::versions_dir(&root).join("old.1"), "x").unwrap();
    // Ignored by rule: skipped, not descended into.
    fs::write(root.join("obj.o"), "x").unwrap();
    fs::create_dir_all(root.join("build/sub")).unwrap();
    fs::write(root.join("build/sub/out"), "x").unwrap();
    // Unreadable directory.
    fs::create_dir(root.join("locked")).unwrap();
    fs::write(root.join("locked/inside"), "x").unwrap();
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    let locked_readable = fs::read_dir(root.join("locked")).is_ok(); // root bypasses modes

    let rules = IgnoreRules::parse("*.o\nbuild/\n").unwrap();
    let report = scan(&root, &rules).unwrap();
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();

    let got: BTreeMap<String, LocalState> = report
        .entries
        .iter()
        .map(|(p, s)| (p.to_string(), *s))
        .collect();
    let mut want: Vec<&str> = vec![
        "a b.txt",
        "x@y",
        "@metadata",
        "ünï",
        "ünï/日本.txt",
        "d1",
        "d1/d2",
        "d1/d2/deep.txt",
        "a b.txt.conflict-bob",
        &long,
        "empty",
        "locked",
    ];
    if locked_readable {
        want.push("locked/inside");
    }
    let mut want: Vec<String> = want.into_iter().map(String::from).collect();
    want.sort();
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        want,
        "problems: {:?}",
        report.problems
    );
    // Sorted, states right.
    assert!(report.entries.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(got["d1"], LocalState::Dir);
    assert_eq!(got["d1/d2/deep.txt"], state(&root, "d1/d2/deep.txt"));

    let skipped: HashSet<String> = report.skipped.iter().map(|p| p.to_string()).collect();
    for s in ["flink", "dlink", "fifo", "obj.o", "build"] {
        assert!(skipped.contains(s), "{s} not in skipped {skipped:?}");
    }
    assert!(
        !skipped.contains("build/sub"),
        "not descended into an ignored dir"
    );
    let problems = report.problems.join("\n");
    for s in [
        "flink: symbolic link",
        "dlink: symbolic link",
        "fifo: special file",
        "bad\u{fffd}name",
        "back\\slash",
    ] {
        assert!(problems.contains(s), "{s:?} not in problems:\n{problems}");
    }
    assert!(!problems.contains("obj.o"), "ignoring is not a problem");
    if !locked_readable {
        assert!(skipped.contains("locked"));
        assert!(
            problems.contains("locked: cannot read directory"),
            "{problems}"
        );
    }
}

#[test]
fn scan_refuses_a_missing_folder_or_marker() {
    let (t, root) = folder();
    let e = scan(&t.path().join("nope"), &IgnoreRules::empty()).unwrap_err();
    assert!(e.contains("unavailable"), "{e}");
    fs::remove_dir_all(root.join(".magic-folder")).unwrap();
    fs::write(root.join("f"), "x").unwrap();
    let e = scan(&root, &IgnoreRules::empty()).unwrap_err();
    assert!(e.contains("marker"), "{e}");
    // And stat will not call a path absent either.
    let e = fsops::stat(&root, &rp("gone")).unwrap_err();
    assert!(
        matches!(fsops::fs_error(&e), Some(FsError::FolderUnavailable { .. })),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// fsops

fn write(
    root: &Path,
    p: &str,
    data: &[u8],
    mtime: i64,
    expect: LocalState,
    umask: u32,
) -> std::io::Result<Outcome> {
    fsops::write_file(root, &rp(p), &mut &data[..], (mtime, false), expect, umask)
}

#[test]
fn atomic_replace_sets_content_and_mtime_and_keeps_the_old_version() {
    let (_t, root) = folder();
    let o = write(
        &root,
        "d/e/f.txt",
        b"one",
        1_600_000_000,
        LocalState::Absent,
        0o077,
    )
    .unwrap();
    let s1 = file_state(&root, "d/e/f.txt");
    assert_eq!(o, Outcome::Done(LocalState::File(s1)));
    assert_eq!(fs::read(root.join("d/e/f.txt")).unwrap(), b"one");
    assert_eq!(s1.mtime_ns, 1_600_000_000 * 1_000_000_000);

    let o = write(
        &root,
        "d/e/f.txt",
        b"two!",
        1_700_000_000,
        LocalState::File(s1),
        0o077,
    )
    .unwrap();
    let s2 = file_state(&root, "d/e/f.txt");
    assert_eq!(o, Outcome::Done(LocalState::File(s2)));
    assert_eq!(fs::read(root.join("d/e/f.txt")).unwrap(), b"two!");
    assert_eq!(s2.mtime_ns, 1_700_000_000 * 1_000_000_000);
    let v = versions(&root);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].starts_with("d/e/f.txt."), "{v:?}");
    assert_eq!(
        fs::read(fsops::versions_dir(&root).join(&v[0])).unwrap(),
        b"one"
    );
    assert!(temp_files(&root.join("d/e")).is_empty());

    // A second replacement in the same second gets its own version name.
    write(&root, "d/e/f.txt", b"3", 1, LocalState::File(s2), 0o077).unwrap();
    assert_eq!(versions(&root).len(), 2);
}

#[test]
fn a_target_not_in_the_expected_state_is_left_untouched() {
    let (_t, root) = folder();
    fs::write(root.join("f"), "mine").unwrap();
    let before = file_state(&root, "f");
    // The engine's idea of the file is older (e.g. the user edited it since).
    let stale = mf_core::store::PathState {
        size: 1,
        mtime_ns: 5,
        ctime_ns: 5,
    };
    let o = write(&root, "f", b"theirs", 1, LocalState::File(stale), 0o077).unwrap();
    assert_eq!(o, Outcome::Changed(LocalState::File(before)));
    assert_eq!(fs::read(root.join("f")).unwrap(), b"mine");
    assert_eq!(
        file_state(&root, "f"),
        before,
        "not even moved and moved back"
    );
    assert!(temp_files(&root).is_empty());
    assert!(versions(&root).is_empty());
    // Expecting absence when there is a file: same.
    let o = write(&root, "f", b"theirs", 1, LocalState::Absent, 0o077).unwrap();
    assert_eq!(o, Outcome::Changed(LocalState::File(before)));
    // A file the user created while we were downloading is not clobbered.
    let mut temp = fsops::TempFile::create(&root, &rp("new"), 0o077).unwrap();
    std::io::Write::write_all(&mut temp, b"downloaded").unwrap();
    fs::write(root.join("new"), "user's").unwrap();
    let o = temp.commit(1, LocalState::Absent).unwrap();
    assert_eq!(o, Outcome::Changed(state(&root, "new")));
    assert_eq!(fs::read(root.join("new")).unwrap(), b"user's");
    assert!(temp_files(&root).is_empty());
    // Dropping an uncommitted temp file removes it.
    let temp = fsops::TempFile::create(&root, &rp("x"), 0o077).unwrap();
    assert_eq!(temp_files(&root).len(), 1);
    drop(temp);
    assert!(temp_files(&root).is_empty());
}

#[test]
fn nothing_is_written_through_a_symlink() {
    let (t, root) = folder();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    symlink(&outside, root.join("link")).unwrap();
    let e = write(&root, "link/f", b"x", 1, LocalState::Absent, 0o077).unwrap_err();
    assert!(
        matches!(fsops::fs_error(&e), Some(FsError::NotSyncable { .. })),
        "{e}"
    );
    let e = write(&root, "link/new/f", b"x", 1, LocalState::Absent, 0o077).unwrap_err();
    assert!(
        matches!(fsops::fs_error(&e), Some(FsError::NotSyncable { .. })),
        "{e}"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    let e = fsops::stat(&root, &rp("link/f")).unwrap_err();
    assert!(
        matches!(fsops::fs_error(&e), Some(FsError::NotSyncable { .. })),
        "{e}"
    );
    let e = fsops::make_dir(&root, &rp("link/d"), LocalState::Absent, 0o077).unwrap_err();
    assert!(fsops::fs_error(&e).is_some(), "{e}");
    // A symlink at the target itself is not replaced either.
    fs::write(outside.join("victim"), "keep").unwrap();
    symlink(outside.join("victim"), root.join("tlink")).unwrap();
    assert!(write(&root, "tlink", b"x", 1, LocalState::Absent, 0o077).is_err());
    assert!(fsops::delete(&root, &rp("tlink"), LocalState::Absent).is_err());
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"keep");
    assert!(fs::symlink_metadata(root.join("tlink"))
        .unwrap()
        .file_type()
        .is_symlink());
    // A file in the way of a parent directory.
    fs::write(root.join("plain"), "x").unwrap();
    let e = write(&root, "plain/f", b"x", 1, LocalState::Absent, 0o077).unwrap_err();
    assert!(
        matches!(fsops::fs_error(&e), Some(FsError::Blocked { .. })),
        "{e}"
    );
    assert!(temp_files(&root).is_empty());
}

#[test]
fn the_folder_umask_decides_permissions() {
    let (_t, root) = folder();
    write(&root, "p/f", b"x", 1, LocalState::Absent, 0o077).unwrap();
    assert_eq!(
        fs::metadata(root.join("p/f")).unwrap().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::metadata(root.join("p")).unwrap().mode() & 0o777, 0o700);
    write(&root, "q/f", b"x", 1, LocalState::Absent, 0o022).unwrap();
    assert_eq!(
        fs::metadata(root.join("q/f")).unwrap().mode() & 0o777,
        0o644
    );
    assert_eq!(fs::metadata(root.join("q")).unwrap().mode() & 0o777, 0o755);
    fsops::make_dir(&root, &rp("r"), LocalState::Absent, 0o027).unwrap();
    assert_eq!(fs::metadata(root.join("r")).unwrap().mode() & 0o777, 0o750);
}

#[test]
fn delete_and_make_dir_follow_the_contract() {
    let (_t, root) = folder();
    fs::write(root.join("f"), "data").unwrap();
    let s = file_state(&root, "f");
    // Wrong expectation: untouched.
    assert_eq!(
        fsops::delete(&root, &rp("f"), LocalState::Absent).unwrap(),
        Outcome::Changed(LocalState::File(s))
    );
    // Right one: moved into the versions area, recoverable.
    assert_eq!(
        fsops::delete(&root, &rp("f"), LocalState::File(s)).unwrap(),
        Outcome::Done(LocalState::Absent)
    );
    assert!(!root.join("f").exists());
    assert_eq!(versions(&root).len(), 1);
    assert_eq!(
        fsops::delete(&root, &rp("f"), LocalState::Absent).unwrap(),
        Outcome::Done(LocalState::Absent)
    );
    // Directories: only when empty.
    fs::create_dir_all(root.join("d/sub")).unwrap();
    assert_eq!(
        fsops::delete(&root, &rp("d"), LocalState::Dir).unwrap(),
        Outcome::NotEmpty
    );
    assert_eq!(
        fsops::delete(&root, &rp("d/sub"), LocalState::Dir).unwrap(),
        Outcome::Done(LocalState::Absent)
    );
    assert_eq!(
        fsops::delete(&root, &rp("d"), LocalState::Dir).unwrap(),
        Outcome::Done(LocalState::Absent)
    );
    // make_dir: created with parents; an existing directory is success whatever expected.
    assert_eq!(
        fsops::make_dir(&root, &rp("m/n"), LocalState::Absent, 0o077).unwrap(),
        Outcome::Done(LocalState::Dir)
    );
    let anything = LocalState::File(s);
    assert_eq!(
        fsops::make_dir(&root, &rp("m/n"), anything, 0o077).unwrap(),
        Outcome::Done(LocalState::Dir)
    );
    // A file in the way: only replaced if in the expected state.
    fs::write(root.join("g"), "g").unwrap();
    let g = file_state(&root, "g");
    assert_eq!(
        fsops::make_dir(&root, &rp("g"), LocalState::Absent, 0o077).unwrap(),
        Outcome::Changed(LocalState::File(g))
    );
    assert_eq!(
        fsops::make_dir(&root, &rp("g"), LocalState::File(g), 0o077).unwrap(),
        Outcome::Done(LocalState::Dir)
    );
    assert_eq!(versions(&root).len(), 2);
    // A file replacing an empty directory.
    fs::create_dir(root.join("h")).unwrap();
    assert_eq!(
        write(&root, "h", b"h", 1, LocalState::Dir, 0o077).unwrap(),
        Outcome::Done(state(&root, "h"))
    );
    assert_eq!(fs::read(root.join("h")).unwrap(), b"h");
}

#[test]
fn writes_need_the_marker() {
    let (_t, root) = folder();
    fs::remove_dir_all(root.join(".magic-folder")).unwrap();
    let e = write(&root, "f", b"x", 1, LocalState::Absent, 0o077).unwrap_err();
    assert!(
        fsops::is_transient(&e),
        "an unmounted folder may come back: {e}"
    );
    assert!(
        fs::read_dir(&root).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn old_versions_are_pruned() {
    let (_t, root) = folder();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let v = fsops::versions_dir(&root);
    fs::create_dir_all(v.join("a/b")).unwrap();
    let old = now - 40 * 24 * 3600;
    fs::write(v.join(format!("a/b/f.{old}")), "old").unwrap();
    fs::write(v.join(format!("a/b/f.{old}-1")), "old").unwrap();
    fs::write(v.join(format!("g.{now}")), "new").unwrap();
    let stats = fsops::prune_versions(&root, &fsops::Retention::default()).unwrap();
    assert_eq!((stats.files, stats.bytes, stats.dirs), (2, 6, 2));
    assert_eq!((stats.kept_files, stats.kept_bytes), (1, 3));
    assert_eq!(versions(&root), vec![format!("g.{now}")]);
    assert!(v.exists());

    // At most `per_file` versions of each file, the newest; other files'
    // versions do not count against it.
    for i in 0..5 {
        fs::write(v.join(format!("h.{}", now - i)), "h").unwrap();
    }
    let keep_three = fsops::Retention {
        per_file: 3,
        ..fsops::Retention::default()
    };
    let stats = fsops::prune_versions(&root, &keep_three).unwrap();
    assert_eq!((stats.files, stats.kept_files), (2, 4));
    let mut left = versions(&root);
    left.sort();
    let mut want: Vec<String> = (0..3).map(|i| format!("h.{}", now - i)).collect();
    want.push(format!("g.{now}"));
    want.sort();
    assert_eq!(left, want);
}

// ---------------------------------------------------------------------------
// Watcher

struct Watched {
    rx: tokio::sync::mpsc::Receiver<WatchMsg>,
    handle: Option<watch::WatchHandle>,
    settled: watch::SettledFiles,
    seen: Vec<WatchMsg>,
}

impl Watched {
    fn start(root: &Path, rules: &str, delay_ms: u64) -> Watched {
        Watched::start_settled(root, rules, delay_ms, watch::SettledFiles::default())
    }

    /// Started with the given register of settled files (an executor's).
    fn start_settled(
        root: &Path,
        rules: &str,
        delay_ms: u64,
        settled: watch::SettledFiles,
    ) -> Watched {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let handle = watch::spawn(
            root.to_path_buf(),
            IgnoreRules::parse(rules).unwrap(),
            Duration::from_millis(delay_ms),
            settled.clone(),
            tx,
        )
        .unwrap();
        Watched {
            rx,
            handle: Some(handle),
            settled,
            seen: Vec::new(),
        }
    }

    /// Receives until `done` holds for everything seen so far, or panics after `limit`.
    fn until(&mut self, limit: Duration, what: &str, done: impl Fn(&[WatchMsg]) -> bool) {
        let end = Instant::now() + limit;
        while !done(&self.seen) {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; saw {}",
                summary(&self.seen)
            );
            match self.recv(left) {
                Some(m) => self.seen.push(m),
                None => continue,
            }
        }
    }

    fn recv(&mut self, limit: Duration) -> Option<WatchMsg> {
        let end = Instant::now() + limit;
        loop {
            match self.rx.try_recv() {
                Ok(m) => return Some(m),
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return None,
                Err(_) if Instant::now() >= end => return None,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// What the watcher said, briefly: a failure message must not be megabytes.
fn summary(seen: &[WatchMsg]) -> String {
    let mut out = format!("{} messages", seen.len());
    for m in seen.iter().take(10) {
        match m {
            WatchMsg::Changed(v) => {
                let first: Vec<&str> = v.iter().take(3).map(|(p, _)| p.as_str()).collect();
                out.push_str(&format!("; changed {} paths ({first:?}…)", v.len()));
            }
            WatchMsg::Rescan(why) => out.push_str(&format!("; rescan: {why}")),
        }
    }
    out
}

fn reported(seen: &[WatchMsg], p: &str) -> Vec<LocalState> {
    seen.iter()
        .filter_map(|m| match m {
            WatchMsg::Changed(v) => Some(v),
            WatchMsg::Rescan(_) => None,
        })
        .flatten()
        .filter(|(path, _)| path.as_str() == p)
        .map(|(_, s)| *s)
        .collect()
}

fn last_reported(seen: &[WatchMsg], p: &str) -> Option<LocalState> {
    reported(seen, p).last().copied()
}

/// Generous: only a failing test waits this long, and a busy machine may
/// deliver inotify events late.
const WAIT: Duration = Duration::from_secs(60);

#[test]
fn watcher_reports_creations_edits_deletions_and_new_trees() {
    let (_t, root) = folder();
    let mut w = Watched::start(&root, "*.o\n", 100);
    fs::write(root.join("a.txt"), "1").unwrap();
    fs::write(root.join("x.o"), "ignored").unwrap();
    fs::write(root.join(".mf-tmp-zz"), "ours").unwrap();
    fs::write(root.join("a.txt.conflict-bob"), "copy").unwrap();
    let s = state(&root, "a.txt");
    w.until(WAIT, "a.txt created", |m| {
        last_reported(m, "a.txt") == Some(s)
    });
    w.until(WAIT, "conflict copy", |m| {
        last_reported(m, "a.txt.conflict-bob").is_some()
    });

    fs::write(root.join("a.txt"), "22").unwrap();
    let s2 = state(&root, "a.txt");
    w.until(WAIT, "a.txt modified", |m| {
        last_reported(m, "a.txt") == Some(s2)
    });
    fs::remove_file(root.join("a.txt")).unwrap();
    w.until(WAIT, "a.txt deleted", |m| {
        last_reported(m, "a.txt") == Some(LocalState::Absent)
    });

    // A whole tree appearing at once (faster than inotify can add watches).
    fs::create_dir_all(root.join("n1/n2/n3")).unwrap();
    fs::write(root.join("n1/n2/n3/f"), "deep").unwrap();
    fs::write(root.join("n1/top"), "top").unwrap();
    let f = state(&root, "n1/n2/n3/f");
    w.until(WAIT, "new tree", |m| {
        last_reported(m, "n1") == Some(LocalState::Dir)
            && last_reported(m, "n1/n2") == Some(LocalState::Dir)
            && last_reported(m, "n1/n2/n3") == Some(LocalState::Dir)
            && last_reported(m, "n1/n2/n3/f") == Some(f)
            && last_reported(m, "n1/top").is_some()
    });
    // Files in the new directories are watched from now on.
    fs::write(root.join("n1/n2/n3/g"), "later").unwrap();
    let g = state(&root, "n1/n2/n3/g");
    w.until(WAIT, "file in new dir", |m| {
        last_reported(m, "n1/n2/n3/g") == Some(g)
    });

    // A symlink appearing is not reported (a scan lists it as skipped).
    symlink(root.join("n1"), root.join("slink")).unwrap();
    fs::write(root.join("after"), "x").unwrap();
    w.until(WAIT, "after", |m| last_reported(m, "after").is_some());

    for m in &w.seen {
        if let WatchMsg::Changed(v) = m {
            for (p, _) in v {
                assert!(
                    !["x.o", ".mf-tmp-zz", "slink"].contains(&p.as_str()),
                    "{p} reported"
                );
            }
            assert!(v.windows(2).all(|x| x[0].0 < x[1].0), "sorted, unique");
        }
        assert!(!matches!(m, WatchMsg::Rescan(_)), "no rescan needed: {m:?}");
    }
}

/// The directories there at start are watched, ignored ones are not,
/// and one the rules no longer ignore is watched from then on.
#[test]
fn watcher_watches_what_the_rules_let_in() {
    let (_t, root) = folder();
    fs::create_dir_all(root.join("keep/deep")).unwrap();
    fs::create_dir_all(root.join("skip/deep")).unwrap();
    let mut w = Watched::start(&root, "skip/\n", 100);
    fs::write(root.join("skip/deep/early"), "ignored").unwrap();
    fs::write(root.join("keep/deep/f"), "x").unwrap();
    let f = state(&root, "keep/deep/f");
    w.until(WAIT, "keep/deep/f", |m| {
        last_reported(m, "keep/deep/f") == Some(f)
    });
    assert!(reported(&w.seen, "skip/deep/early").is_empty());

    w.handle
        .as_ref()
        .unwrap()
        .set_ignore(IgnoreRules::parse("").unwrap());
    // The new rules apply from the next event on; their watches follow
    // soon after: write until one is heard.
    let end = Instant::now() + WAIT;
    let mut n = 0;
    while !w.seen.iter().any(|m| match m {
        WatchMsg::Changed(v) => v
            .iter()
            .any(|(p, _)| p.as_str().starts_with("skip/deep/late")),
        WatchMsg::Rescan(_) => false,
    }) {
        assert!(
            Instant::now() < end,
            "skip/deep never watched: {}",
            summary(&w.seen)
        );
        fs::write(root.join(format!("skip/deep/late{n}")), "y").unwrap();
        n += 1;
        if let Some(m) = w.recv(Duration::from_millis(200)) {
            w.seen.push(m);
        }
    }
}

/// Far longer than any test runs: a path the watcher reports under this
/// pending delay was reported because it settled.
const NEVER_MS: u64 = 600_000;

#[test]
fn watcher_debounce_coalesces_rapid_writes() {
    let (_t, root) = folder();
    // Quiet time far above any stall between two of the writes below.
    let mut w = Watched::start(&root, "", 3000);
    let mut f = fs::File::create(root.join("busy")).unwrap();
    for i in 0..10 {
        writeln!(f, "version {i}").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(f);
    let last = state(&root, "busy");
    w.until(WAIT, "busy reported", |m| !reported(m, "busy").is_empty());
    // Wait a while for any further report: there must be none.
    if let Some(m) = w.recv(Duration::from_millis(1000)) {
        w.seen.push(m);
    }
    assert_eq!(reported(&w.seen, "busy"), vec![last], "{:?}", w.seen);
}

/// A file its writer closed, one renamed into place and a deletion are
/// reported without the pending delay, and the files are entered as
/// settled with the state they were reported in; a file still open for
/// writing waits the full delay.
#[test]
fn watcher_reports_settled_paths_at_once() {
    let (t, root) = folder();
    let mut w = Watched::start(&root, "", NEVER_MS);
    let mut open = fs::File::create(root.join("open")).unwrap();
    open.write_all(b"half").unwrap();
    fs::write(root.join("closed"), "whole").unwrap();
    fs::write(t.path().join("outside"), "moved").unwrap();
    fs::rename(t.path().join("outside"), root.join("moved")).unwrap();
    let (closed, moved) = (state(&root, "closed"), state(&root, "moved"));
    w.until(WAIT, "the closed and the moved file", |m| {
        last_reported(m, "closed") == Some(closed) && last_reported(m, "moved") == Some(moved)
    });
    let ctime = |s: LocalState| match s {
        LocalState::File(s) => s.ctime_ns,
        other => panic!("not a file: {other:?}"),
    };
    assert!(w.settled.take(&rp("closed"), ctime(closed)));
    assert!(w.settled.take(&rp("moved"), ctime(moved)));
    assert!(!w.settled.take(&rp("closed"), ctime(closed)), "used up");

    fs::remove_file(root.join("closed")).unwrap();
    w.until(WAIT, "the deletion", |m| {
        last_reported(m, "closed") == Some(LocalState::Absent)
    });
    assert!(reported(&w.seen, "open").is_empty(), "open for writing");

    // Closed at last: reported, settled in its final state.
    open.write_all(b" and the rest").unwrap();
    drop(open);
    let whole = state(&root, "open");
    w.until(WAIT, "the file once closed", |m| {
        last_reported(m, "open") == Some(whole)
    });
    assert_eq!(reported(&w.seen, "open"), vec![whole]);
    assert!(w.settled.take(&rp("open"), ctime(whole)));
}

/// More paths pending than the watcher keeps is a flood: it asks for a
/// rescan instead. The quiet time is long enough that no path is reported
/// while the files are made, however slow the machine. (The files are hard
/// links: no writer closes them, so none is settled and reported early.)
#[test]
fn watcher_turns_a_flood_into_a_rescan() {
    let (t, root) = folder();
    let mut w = Watched::start(&root, "", NEVER_MS);
    let source = t.path().join("source");
    fs::write(&source, "").unwrap();
    for i in 0..=watch::MAX_PENDING {
        fs::hard_link(&source, root.join(format!("f{i}"))).unwrap();
    }
    w.until(WAIT, "rescan", |m| {
        m.iter().any(|x| matches!(x, WatchMsg::Rescan(_)))
    });
    for m in &w.seen {
        if let WatchMsg::Changed(v) = m {
            assert!(v.len() <= watch::MAX_PENDING);
        }
    }
}

#[test]
fn watcher_asks_for_a_rescan_when_a_directory_moves_away() {
    let (t, root) = folder();
    fs::create_dir_all(root.join("d/inner")).unwrap();
    fs::write(root.join("d/inner/f"), "x").unwrap();
    let mut w = Watched::start(&root, "", 100);
    // Let the watcher learn its directories, then prove it is live.
    fs::write(root.join("ping"), "x").unwrap();
    w.until(WAIT, "ping", |m| last_reported(m, "ping").is_some());
    fs::rename(root.join("d"), t.path().join("elsewhere")).unwrap();
    w.until(WAIT, "rescan", |m| {
        m.iter()
            .any(|x| matches!(x, WatchMsg::Rescan(why) if why.contains("moved away")))
    });
}

#[test]
fn watcher_needs_the_marker_and_stops_when_dropped() {
    let (t, root) = folder();
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    assert!(watch::spawn(
        t.path().join("missing"),
        IgnoreRules::empty(),
        Duration::from_millis(100),
        watch::SettledFiles::default(),
        tx
    )
    .is_err());

    let mut w = Watched::start(&root, "", 100);
    fs::write(root.join("f"), "x").unwrap();
    w.until(WAIT, "f", |m| last_reported(m, "f").is_some());
    let t0 = Instant::now();
    drop(w.handle.take());
    // Prompt, not instant: a generous bound that only a hang exceeds.
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "drop took {:?}",
        t0.elapsed()
    );
    // The thread is gone: the channel is closed.
    assert!(w.recv(Duration::from_secs(2)).is_none());
    assert!(w.rx.is_closed());

    // Removing the marker makes the watcher ask for a rescan (which will fail safely).
    let mut w = Watched::start(&root, "", 100);
    fs::remove_dir_all(root.join(".magic-folder")).unwrap();
    w.until(WAIT, "rescan", |m| {
        m.iter().any(|x| matches!(x, WatchMsg::Rescan(_)))
    });
}

// ---------------------------------------------------------------------------
// An in-memory grid

/// Called with the source path once a file upload has read it.
type UploadHook = Box<dyn Fn(&Path) + Send>;

#[derive(Default)]
struct MemGrid {
    state: Mutex<MemState>,
    /// Run after a file upload has read its source (to change it "during" the upload).
    after_upload_read: Mutex<Option<UploadHook>>,
    /// Directory caps whose listing fails (transiently).
    unavailable: Mutex<HashSet<String>>,
    /// What listing a directory (by key) reports it had to leave out, as a
    /// real backend does for entries of a kind it cannot represent.
    listing_problems: Mutex<HashMap<String, Vec<String>>>,
    /// Downloads under way, and the most there were at once.
    downloading: Mutex<(usize, usize)>,
}

#[derive(Default)]
struct MemState {
    files: HashMap<String, Bytes>,
    dirs: HashMap<String, DirChildren>,
    next: u64,
}

fn hex(data: &[u8]) -> String {
    use sha2::Digest;
    data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(data))
}

impl MemGrid {
    fn key(cap: &Capability) -> String {
        let s = cap.as_str();
        s.strip_prefix("URI:MF-DIR-RO:")
            .or_else(|| s.strip_prefix("URI:MF-DIR:"))
            .unwrap_or(s)
            .to_owned()
    }
    fn new_mutable(&self) -> (Capability, Capability) {
        let mut st = self.state.lock().unwrap();
        st.next += 1;
        let id = format!("m{}", st.next);
        st.dirs.insert(id.clone(), DirChildren::new());
        (
            Capability::parse(&format!("URI:MF-DIR:{id}")).unwrap(),
            Capability::parse(&format!("URI:MF-DIR-RO:{id}")).unwrap(),
        )
    }
    fn put_file(&self, data: &[u8]) -> Capability {
        let cap = Capability::parse(&format!("URI:MF-CHK:{}", hex(data))).unwrap();
        self.state
            .lock()
            .unwrap()
            .files
            .insert(cap.as_str().to_owned(), Bytes::copy_from_slice(data));
        cap
    }
    fn put_dir(&self, children: DirChildren) -> Capability {
        let mut st = self.state.lock().unwrap();
        st.next += 1;
        let cap = Capability::parse(&format!("URI:MF-DIR-CHK:d{}", st.next)).unwrap();
        st.dirs.insert(cap.as_str().to_owned(), children);
        cap
    }
}

impl Grid for MemGrid {
    async fn upload(&self, source: UploadSource) -> GridResult<Capability> {
        let data = match source {
            UploadSource::Bytes(b) => b.to_vec(),
            UploadSource::File(p) | UploadSource::TrackedFile(p, _) => {
                let d = fs::read(&p).map_err(|e| GridError::Io {
                    context: "read".into(),
                    source: e,
                })?;
                if let Some(hook) = self.after_upload_read.lock().unwrap().as_ref() {
                    hook(&p);
                }
                d
            }
        };
        Ok(self.put_file(&data))
    }

    async fn download(&self, cap: &Capability) -> GridResult<Download> {
        {
            let mut d = self.downloading.lock().unwrap();
            d.0 += 1;
            d.1 = d.1.max(d.0);
        }
        // A download takes a while: every other effect ready gets a turn.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        self.downloading.lock().unwrap().0 -= 1;
        let data = self.state.lock().unwrap().files.get(cap.as_str()).cloned();
        let data = data.ok_or_else(|| GridError::NotFound(cap.as_str().to_owned()))?;
        // Small chunks, to exercise streaming.
        let chunks: Vec<GridResult<Bytes>> = (0..data.len())
            .step_by(3)
            .map(|i| Ok(data.slice(i..(i + 3).min(data.len()))))
            .collect();
        Ok(Download {
            size: data.len() as u64,
            stream: Box::pin(futures_util::stream::iter(chunks)),
        })
    }

    async fn create_immutable_dir(&self, children: DirChildren) -> GridResult<Capability> {
        Ok(self.put_dir(children))
    }

    async fn create_mutable_dir(&self) -> GridResult<Capability> {
        Ok(self.new_mutable().0)
    }

    async fn list_changed(
        &self,
        dir: &Capability,
        known: Option<&Revision>,
    ) -> GridResult<Option<Listed>> {
        if self.unavailable.lock().unwrap().contains(dir.as_str()) {
            return Err(GridError::Unavailable("server away".into()));
        }
        let key = MemGrid::key(dir);
        let children = self
            .state
            .lock()
            .unwrap()
            .dirs
            .get(&key)
            .cloned()
            .ok_or_else(|| GridError::NotFound(key.clone()))?;
        let revision = Revision::digest(&[format!("{dir}{children:?}").as_bytes()]);
        let problems = self
            .listing_problems
            .lock()
            .unwrap()
            .get(&key)
            .cloned()
            .unwrap_or_default();
        Ok((known != Some(&revision)).then_some(Listed {
            revision,
            children,
            problems,
        }))
    }

    async fn set_children(
        &self,
        dir: &Capability,
        children: DirChildren,
        replace: Replace,
    ) -> GridResult<()> {
        if !dir.kind().is_writable() {
            return Err(GridError::WrongKind {
                expected: "write cap",
                got: dir.kind(),
            });
        }
        let mut st = self.state.lock().unwrap();
        let d = st
            .dirs
            .get_mut(&MemGrid::key(dir))
            .ok_or(GridError::NotFound("dir".into()))?;
        if replace == Replace::No {
            if let Some(n) = children.keys().find(|n| d.contains_key(*n)) {
                return Err(GridError::Exists(n.clone()));
            }
        }
        d.extend(children);
        Ok(())
    }

    async fn unlink(&self, dir: &Capability, name: &str) -> GridResult<()> {
        let mut st = self.state.lock().unwrap();
        let d = st
            .dirs
            .get_mut(&MemGrid::key(dir))
            .ok_or(GridError::NotFound("dir".into()))?;
        d.remove(name)
            .map(drop)
            .ok_or_else(|| GridError::NoChild(name.into()))
    }
}

const ALICE_SEED: u8 = 1;

/// An executor for participant `name` (author key from `seed`).
fn executor(
    grid: &Arc<MemGrid>,
    collective: &Capability,
    name: &str,
    seed: u8,
    root: &Path,
    personal: &Capability,
    quiet: Duration,
) -> Arc<Executor<MemGrid>> {
    let ex = Executor::new(
        grid.clone(),
        ExecutorConfig {
            root: root.to_path_buf(),
            author: Author::from_seed(name, [seed; 32]),
            participant: name.to_owned(),
            collective: collective.clone(),
            personal: personal.clone(),
            umask: fsops::DEFAULT_UMASK,
            ignore: IgnoreRules::parse("*.o\n").unwrap(),
            quiet,
            layout: Layout::Flat,
            content: ContentFormat::Whole,
            chunking: Chunking::EMBEDDED,
            snapshots: Snapshots::Single,
            transfers: 8,
        },
    )
    .unwrap();
    Arc::new(ex)
}

/// A grid with a collective holding alice and bob, and an executor for each.
struct World {
    grid: Arc<MemGrid>,
    collective: (Capability, Capability),
    alice: Arc<Executor<MemGrid>>,
    bob: Arc<Executor<MemGrid>>,
    alice_personal: Capability,
    alice_root: PathBuf,
    bob_root: PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn world() -> World {
    world_with_quiet(Duration::ZERO)
}

/// [`world`] whose executors read a file for upload only once it has been
/// left alone for `quiet`.
fn world_with_quiet(quiet: Duration) -> World {
    let grid = Arc::new(MemGrid::default());
    let collective = grid.new_mutable();
    let (ta, alice_root) = folder();
    let (tb, bob_root) = folder();
    let mut members = DirChildren::new();
    let mut make = |name: &str, root: &Path, seed: u8| {
        let (w, r) = grid.new_mutable();
        members.insert(name.to_owned(), DirEntry::new(r));
        let ex = executor(&grid, &collective.1, name, seed, root, &w, quiet);
        (ex, w)
    };
    let (alice, alice_personal) = make("alice", &alice_root, ALICE_SEED);
    let (bob, _) = make("bob", &bob_root, 2);
    members.insert(
        "@metadata".into(),
        DirEntry::new(grid.put_file(b"{\"version\": 1}")),
    );
    futures_util::FutureExt::now_or_never(grid.set_children(&collective.0, members, Replace::Yes))
        .unwrap()
        .unwrap();
    World {
        grid,
        collective,
        alice,
        bob,
        alice_personal,
        alice_root,
        bob_root,
        _dirs: (ta, tb),
    }
}

async fn upload(
    ex: &Executor<MemGrid>,
    path: &str,
    local: LocalState,
    parents: Vec<Cap>,
) -> UploadOutcome {
    match ex
        .execute(Action::Upload {
            op: OpId(1),
            path: rp(path),
            local,
            parents,
            generation: 3,
        })
        .await
    {
        Event::Uploaded {
            op: OpId(1),
            result,
        } => result,
        other => panic!("{other:?}"),
    }
}

async fn fetch(
    ex: &Executor<MemGrid>,
    cap: &Cap,
    listed_as: &str,
) -> Result<SnapshotInfo, EffectError> {
    match ex
        .execute(Action::Fetch {
            cap: cap.clone(),
            listed_as: rp(listed_as),
        })
        .await
    {
        Event::Fetched { cap: c, result } => {
            assert_eq!(&c, cap);
            result
        }
        other => panic!("{other:?}"),
    }
}

async fn write_action(
    ex: &Executor<MemGrid>,
    target: &str,
    content: Content,
    mtime_s: i64,
    expect: LocalState,
) -> WriteOutcome {
    match ex
        .execute(Action::Write {
            op: OpId(7),
            target: rp(target),
            content,
            mtime_s,
            expect,
        })
        .await
    {
        Event::Written {
            op: OpId(7),
            result,
        } => result,
        other => panic!("{other:?}"),
    }
}

async fn poll(ex: &Executor<MemGrid>) -> Vec<RemoteListing> {
    match ex.execute(Action::Poll).await {
        Event::Polled(r) => r.unwrap(),
        other => panic!("{other:?}"),
    }
}

fn entry(path: &RelPath, snapshot: &Cap, shape: EntryShape) -> PublishEntry {
    PublishEntry {
        name: snapshot::entry_name(path),
        snapshot: snapshot.clone(),
        shape,
    }
}

async fn publish(ex: &Executor<MemGrid>, entries: Vec<PublishEntry>) {
    let ev = ex
        .execute(Action::Publish {
            op: OpId(9),
            entries,
        })
        .await;
    assert!(
        matches!(ev, Event::Published { result: Ok(()), .. }),
        "{ev:?}"
    );
}

fn done(o: UploadOutcome) -> SnapshotInfo {
    match o {
        UploadOutcome::Done(i) => i,
        other => panic!("{other:?}"),
    }
}

/// A retry never repeats an interrupted attempt's bytes where we choose
/// them: each attempt's metadata carries a fresh nonce, so its metadata
/// object and snapshot directory are new (on Tahoe, the storage servers
/// refuse the bytes of an interrupted upload for up to 30 minutes).
#[tokio::test]
async fn each_upload_attempt_makes_new_objects() {
    let w = world();
    fs::write(w.alice_root.join("f"), "same bytes").unwrap();
    let s = state(&w.alice_root, "f");
    let a = done(upload(&w.alice, "f", s, vec![]).await);
    let b = done(upload(&w.alice, "f", s, vec![]).await);
    assert_ne!(a.cap, b.cap, "a retry makes a new snapshot directory");
    assert_eq!(a.content, b.content, "the content itself is convergent");
    let fetched = fetch(&w.bob, &b.cap, "f").await.unwrap();
    assert_eq!(fetched.content, b.content);
}

/// The owner's execute bit travels with a file: a script stays runnable on
/// the other side (within the folder's umask, here owner-only), a plain
/// file stays plain, and a chmod is a change that is uploaded.
#[tokio::test]
async fn the_executable_bit_travels() {
    let w = world();
    let mode =
        |root: &Path, p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o777;
    for (name, perm, want) in [("run.sh", 0o755, 0o700), ("plain.txt", 0o644, 0o600)] {
        fs::write(w.alice_root.join(name), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(w.alice_root.join(name), fs::Permissions::from_mode(perm)).unwrap();
        let info = done(upload(&w.alice, name, state(&w.alice_root, name), vec![]).await);
        let fetched = fetch(&w.bob, &info.cap, name).await.unwrap();
        assert!(
            matches!(fetched.content, Content::File { executable, .. } if executable == (perm == 0o755)),
            "{name}: {:?}",
            fetched.content
        );
        let out = write_action(
            &w.bob,
            name,
            fetched.content,
            info.mtime_s,
            LocalState::Absent,
        )
        .await;
        assert!(matches!(out, WriteOutcome::Done(_)), "{out:?}");
        assert_eq!(mode(&w.bob_root, name), want, "{name}");
    }
    // Making a file executable changes its state (ctime): it is uploaded again.
    let before = state(&w.alice_root, "plain.txt");
    fs::set_permissions(
        w.alice_root.join("plain.txt"),
        fs::Permissions::from_mode(0o744),
    )
    .unwrap();
    let after = state(&w.alice_root, "plain.txt");
    assert_ne!(before, after);
    let info = done(upload(&w.alice, "plain.txt", after, vec![]).await);
    assert!(matches!(
        info.content,
        Content::File {
            executable: true,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_then_fetch_then_write_round_trips() {
    let w = world();
    fs::create_dir(w.alice_root.join("docs")).unwrap();
    fs::write(w.alice_root.join("docs/a b@c.txt"), "hello, world").unwrap();
    let s = state(&w.alice_root, "docs/a b@c.txt");
    let info = done(upload(&w.alice, "docs/a b@c.txt", s, vec![]).await);
    let LocalState::File(ps) = s else {
        unreachable!()
    };
    assert_eq!(info.relpath, rp("docs/a b@c.txt"));
    assert_eq!(info.author, "alice");
    assert_eq!(info.generation, 3);
    assert_eq!(info.mtime_s, ps.mtime_ns / 1_000_000_000);
    assert!(matches!(&info.content, Content::File { size: 12, .. }));
    // Bob fetches and verifies it: the same info.
    let fetched = fetch(&w.bob, &info.cap, "docs/a b@c.txt").await.unwrap();
    assert_eq!(fetched, info);
    // A directory and a deletion.
    let dir = done(upload(&w.alice, "docs", LocalState::Dir, vec![]).await);
    assert_eq!(
        fetch(&w.bob, &dir.cap, "docs").await.unwrap().content,
        Content::Dir
    );
    let del = done(upload(&w.alice, "gone", LocalState::Absent, vec![info.cap.clone()]).await);
    let del_f = fetch(&w.bob, &del.cap, "gone").await.unwrap();
    assert_eq!(
        (del_f.content, del_f.parents),
        (Content::Deleted, vec![info.cap.clone()])
    );

    // Bob writes it: parents created, content streamed, mtime set.
    let out = write_action(
        &w.bob,
        "docs/a b@c.txt",
        info.content.clone(),
        info.mtime_s,
        LocalState::Absent,
    )
    .await;
    let now = state(&w.bob_root, "docs/a b@c.txt");
    assert_eq!(out, WriteOutcome::Done(now));
    assert_eq!(
        fs::read(w.bob_root.join("docs/a b@c.txt")).unwrap(),
        b"hello, world"
    );
    let LocalState::File(bs) = now else {
        unreachable!()
    };
    assert_eq!(bs.mtime_ns, info.mtime_s * 1_000_000_000);
    assert!(temp_files(&w.bob_root.join("docs")).is_empty());
    // A conflict copy is written like any file.
    let out = write_action(
        &w.bob,
        "docs/a b@c.txt.conflict-alice",
        info.content.clone(),
        5,
        LocalState::Absent,
    )
    .await;
    assert!(
        matches!(out, WriteOutcome::Done(LocalState::File(_))),
        "{out:?}"
    );
    // Replace it (old version kept), then delete it.
    let out = write_action(
        &w.bob,
        "docs/a b@c.txt",
        Content::Deleted,
        0,
        LocalState::Absent,
    )
    .await;
    assert_eq!(out, WriteOutcome::Changed(now), "expect mismatch leaves it");
    let out = write_action(&w.bob, "docs/a b@c.txt", Content::Deleted, 0, now).await;
    assert_eq!(out, WriteOutcome::Done(LocalState::Absent));
    assert_eq!(versions(&w.bob_root).len(), 1);
    // A new version of a file whose directory the user deleted meanwhile:
    // nothing is written, and the directory does not come back.
    fs::remove_file(w.bob_root.join("docs/a b@c.txt.conflict-alice")).unwrap();
    fs::remove_dir(w.bob_root.join("docs")).unwrap();
    let out = write_action(
        &w.bob,
        "docs/a b@c.txt",
        info.content.clone(),
        info.mtime_s,
        now,
    )
    .await;
    assert_eq!(out, WriteOutcome::Changed(LocalState::Absent));
    assert!(!w.bob_root.join("docs").exists(), "the directory came back");
    // Directories.
    assert_eq!(
        write_action(&w.bob, "e/f", Content::Dir, 0, LocalState::Absent).await,
        WriteOutcome::Done(LocalState::Dir)
    );
    assert_eq!(
        write_action(&w.bob, "e/f", Content::Deleted, 0, LocalState::Dir).await,
        WriteOutcome::Done(LocalState::Absent)
    );
    assert_eq!(
        write_action(&w.bob, "e", Content::Deleted, 0, LocalState::Dir).await,
        WriteOutcome::Done(LocalState::Absent)
    );
    fs::create_dir_all(w.bob_root.join("full/x")).unwrap();
    assert_eq!(
        write_action(&w.bob, "full", Content::Deleted, 0, LocalState::Dir).await,
        WriteOutcome::NotEmpty
    );
}

/// When a file last changed (its ctime), as a wall-clock time.
fn changed_at(path: &Path) -> SystemTime {
    let m = fs::symlink_metadata(path).unwrap();
    UNIX_EPOCH + Duration::new(m.ctime() as u64, m.ctime_nsec() as u32)
}

/// However a change was found, an upload reads the file only once it has
/// been left alone for the quiet time: a file changed just now is read no
/// earlier than that (a lower bound, so a slow machine cannot break it).
#[tokio::test]
async fn upload_reads_a_file_only_once_it_has_been_quiet() {
    let quiet = Duration::from_millis(700);
    let w = world_with_quiet(quiet);
    let p = w.alice_root.join("fresh.txt");
    fs::write(&p, b"all of it").unwrap();
    let ready = changed_at(&p) + quiet;
    let done_upload = upload(
        &w.alice,
        "fresh.txt",
        state(&w.alice_root, "fresh.txt"),
        vec![],
    )
    .await;
    assert!(
        SystemTime::now() >= ready,
        "read {:?} before the file had been quiet",
        ready.duration_since(SystemTime::now()).unwrap_or_default()
    );
    done(done_upload);
}

/// A file the watcher saw its writer close is uploaded at once, without
/// the quiet time (here far longer than the test may run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_a_file_its_writer_closed_does_not_wait() {
    let w = world_with_quiet(Duration::from_secs(3600));
    let root = w.alice_root.clone();
    let settled = w.alice.settled();
    let mut watched = tokio::task::spawn_blocking(move || {
        let mut watched = Watched::start_settled(&root, "", NEVER_MS, settled);
        fs::write(root.join("closed.txt"), b"written and closed").unwrap();
        watched.until(WAIT, "closed.txt", |m| {
            last_reported(m, "closed.txt").is_some()
        });
        watched
    })
    .await
    .unwrap();
    let reported = last_reported(&watched.seen, "closed.txt").unwrap();
    let uploaded = tokio::time::timeout(WAIT, upload(&w.alice, "closed.txt", reported, vec![]))
        .await
        .expect("uploaded without waiting for the quiet time");
    done(uploaded);
    drop(watched.handle.take());
}

/// A writer that pauses for less than the quiet time is never published
/// half-way: whenever the rest arrives before the quiet time is up, the
/// upload reports the change instead of a snapshot of the first half.
#[tokio::test]
async fn a_pause_shorter_than_the_quiet_time_publishes_no_half_file() {
    let quiet = Duration::from_millis(1000);
    let w = world_with_quiet(quiet);
    for attempt in 0..5 {
        let name = format!("slow-{attempt}.txt");
        let p = w.alice_root.join(&name);
        fs::write(&p, b"first half, ").unwrap();
        let half = state(&w.alice_root, &name);
        let half_at = changed_at(&p);
        let ex = w.alice.clone();
        let task = {
            let name = name.clone();
            tokio::spawn(async move { upload(&ex, &name, half, vec![]).await })
        };
        // Let the upload start (and find the first half) before the rest comes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"second half").unwrap();
        drop(f);
        let rest_at = changed_at(&p);
        let outcome = task.await.unwrap();
        if rest_at < half_at + quiet {
            assert!(
                matches!(outcome, UploadOutcome::Changed(_)),
                "the first half was published: {outcome:?}"
            );
            return;
        }
        // The machine stalled past the quiet time between the two halves:
        // then reading the first half was right. Arrange it again.
    }
    panic!("could not write two halves within the quiet time in 5 attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_reports_changes_before_and_during_reading() {
    let w = world();
    let p = w.alice_root.join("f");
    fs::write(&p, "one").unwrap();
    let s = state(&w.alice_root, "f");
    fs::write(&p, "changed").unwrap();
    let now = state(&w.alice_root, "f");
    assert_eq!(
        upload(&w.alice, "f", s, vec![]).await,
        UploadOutcome::Changed(now)
    );
    // Changed while the grid reads it.
    *w.grid.after_upload_read.lock().unwrap() = Some(Box::new(|p: &Path| {
        fs::write(p, "during the upload").unwrap()
    }));
    let out = upload(&w.alice, "f", now, vec![]).await;
    *w.grid.after_upload_read.lock().unwrap() = None;
    assert_eq!(out, UploadOutcome::Changed(state(&w.alice_root, "f")));
    // Absent / Dir mismatches.
    assert_eq!(
        upload(&w.alice, "f", LocalState::Absent, vec![]).await,
        UploadOutcome::Changed(state(&w.alice_root, "f"))
    );
    fs::create_dir(w.alice_root.join("d")).unwrap();
    assert_eq!(
        upload(&w.alice, "d", LocalState::Absent, vec![]).await,
        UploadOutcome::Changed(LocalState::Dir)
    );
    // Internal paths and symlinks are never uploaded.
    assert!(
        matches!(upload(&w.alice, "f.conflict-bob", LocalState::Absent, vec![]).await, UploadOutcome::Failed(e) if !e.transient)
    );
    symlink("/etc/hostname", w.alice_root.join("l")).unwrap();
    assert!(
        matches!(upload(&w.alice, "l", LocalState::Absent, vec![]).await, UploadOutcome::Failed(e) if !e.transient)
    );
}

/// What the grid leaves out of a listing (an entry of a capability type it
/// cannot represent, a damaged newest version) reaches status like every
/// other rejection, naming the participant.
#[tokio::test]
async fn entries_the_grid_leaves_out_are_rejections() {
    let w = world();
    let problem = "entry \"x\" skipped: unknown capability type (left untouched on the grid)";
    w.grid
        .listing_problems
        .lock()
        .unwrap()
        .insert(MemGrid::key(&w.alice_personal), vec![problem.into()]);
    let listings = poll(&w.bob).await;
    let alice = listings.iter().find(|l| l.participant == "alice").unwrap();
    assert_eq!(alice.rejected, [format!("alice: {problem}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_then_poll_decodes_names_and_rejects_unsafe_ones() {
    let w = world();
    fs::write(w.alice_root.join("f"), "x").unwrap();
    let f = done(upload(&w.alice, "f", state(&w.alice_root, "f"), vec![]).await);
    let d = done(upload(&w.alice, "sub", LocalState::Absent, vec![]).await);
    let entries = vec![
        entry(&rp("f"), &f.cap, EntryShape::File),
        entry(&rp("sub/x@y"), &d.cap, EntryShape::Deletion),
        PublishEntry {
            name: snapshot::conflict_entry_name(&rp("f"), "bob"),
            snapshot: d.cap.clone(),
            shape: EntryShape::ConflictCopy,
        },
    ];
    let ev = w
        .alice
        .execute(Action::Publish {
            op: OpId(3),
            entries,
        })
        .await;
    assert!(
        matches!(
            ev,
            Event::Published {
                op: OpId(3),
                result: Ok(()),
                ..
            }
        ),
        "{ev:?}"
    );
    // The conflict entry is not in the personal directory itself (a 24.3
    // peer reads every other name there as a path, and one it cannot
    // decode stops its whole poll): it is under `@metadata`.
    let own = w.grid.list(&w.alice_personal).await.unwrap();
    assert!(
        own.keys()
            .all(|n| n == "@metadata"
                || matches!(snapshot::parse_entry_name(n), Some(Ok((_, None))))),
        "{own:?}"
    );
    assert_eq!(own["@metadata"].cap.kind(), CapKind::ImmutableDir);
    // Hostile or broken entries, written straight into alice's directory.
    let snap = Capability::parse(d.cap.as_str()).unwrap();
    let file_cap = w.grid.put_file(b"not a snapshot");
    let mut bad = DirChildren::new();
    for name in [
        "@_etc@_passwd",
        "a@_..@_b",
        "bad@x",
        ".magic-folder@_versions@_x",
        "f.conflict-bob",
        "obj.o",
        "dir@_obj.o@_deep",
    ] {
        bad.insert(name.into(), DirEntry::new(snap.clone()));
    }
    bad.insert("plainfile".into(), DirEntry::new(file_cap.clone()));
    w.grid
        .set_children(&w.alice_personal, bad, Replace::Yes)
        .await
        .unwrap();
    // The collective: a non-directory member, an unsafe name, a member that is away.
    let (_, away) = w.grid.new_mutable();
    w.grid
        .unavailable
        .lock()
        .unwrap()
        .insert(away.as_str().to_owned());
    let mut m = DirChildren::new();
    m.insert("carol".into(), DirEntry::new(file_cap));
    m.insert("../evil".into(), DirEntry::new(away.clone()));
    m.insert("dave".into(), DirEntry::new(away));
    w.grid
        .set_children(&w.collective.0, m, Replace::Yes)
        .await
        .unwrap();

    let listings = poll(&w.bob).await;
    let names: Vec<&str> = listings.iter().map(|l| l.participant.as_str()).collect();
    assert_eq!(
        names,
        ["../evil", "alice", "carol", "dave"],
        "bob and @metadata skipped, sorted"
    );
    let alice = &listings[1];
    let got = alice.entries.as_ref().unwrap();
    let want: BTreeMap<String, (RelPath, Cap)> = [
        ("f".to_owned(), (rp("f"), f.cap.clone())),
        ("sub@_x@@y".to_owned(), (rp("sub/x@y"), d.cap.clone())),
        ("f@cbob".to_owned(), (rp("f"), d.cap.clone())),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, &want);
    let rejected = alice.rejected.join("\n");
    for name in [
        "@_etc@_passwd",
        "a@_..@_b",
        "bad@x",
        ".magic-folder@_versions@_x",
        "f.conflict-bob",
        "plainfile",
    ] {
        assert!(
            rejected.contains(&format!("{name:?}")),
            "{name} not rejected:\n{rejected}"
        );
    }
    assert!(
        !rejected.contains("obj.o"),
        "ignored entries are dropped silently"
    );
    for (i, transient) in [(0, false), (2, false), (3, true)] {
        let e = listings[i].entries.as_ref().unwrap_err();
        assert_eq!(e.transient, transient, "{}: {e:?}", listings[i].participant);
    }
    assert!(!listings[0].rejected.is_empty() && !listings[2].rejected.is_empty());

    // Alice does not list herself either; a failing collective is an error.
    let names: Vec<String> = poll(&w.alice)
        .await
        .into_iter()
        .map(|l| l.participant)
        .collect();
    assert!(names.contains(&"bob".to_owned()) && !names.contains(&"alice".to_owned()));
    w.grid
        .unavailable
        .lock()
        .unwrap()
        .insert(w.collective.1.as_str().to_owned());
    assert!(matches!(
        w.bob.execute(Action::Poll).await,
        Event::Polled(Err(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_rejects_forgeries_and_snapshots_filed_under_another_path() {
    let w = world();
    fs::write(w.alice_root.join("a"), "content").unwrap();
    let info = done(upload(&w.alice, "a", state(&w.alice_root, "a"), vec![]).await);
    // Filed under another path: refused.
    let e = fetch(&w.bob, &info.cap, "b").await.unwrap_err();
    assert!(!e.transient && e.message.contains("listed as"), "{e:?}");

    let original = w
        .grid
        .list(&Capability::parse(info.cap.as_str()).unwrap())
        .await
        .unwrap();
    let forged = |children: DirChildren| Cap::from(w.grid.put_dir(children).as_str());
    // Someone else's content under alice's signature.
    let mut c = original.clone();
    c.insert("content".into(), DirEntry::new(w.grid.put_file(b"evil")));
    let e = fetch(&w.bob, &forged(c), "a").await.unwrap_err();
    assert!(!e.transient && e.message.contains("signature"), "{e:?}");
    // A signature by another key.
    let mallory = Author::from_seed("alice", [9; 32]);
    let mut c = original.clone();
    let md = c.get_mut("metadata").unwrap();
    let content_cap = original["content"].cap.as_str().to_owned();
    md.metadata = snapshot::signature_edge_metadata(&mallory.sign(
        Some(&content_cap),
        md.cap.as_str(),
        &rp("a"),
    ));
    let e = fetch(&w.bob, &forged(c), "a").await.unwrap_err();
    assert!(!e.transient && e.message.contains("signature"), "{e:?}");
    // Unsigned, no metadata, metadata too large, not a snapshot at all.
    let mut c = original.clone();
    c.get_mut("metadata").unwrap().metadata = serde_json::json!({});
    assert!(!fetch(&w.bob, &forged(c), "a").await.unwrap_err().transient);
    let mut c = original.clone();
    c.remove("metadata");
    assert!(!fetch(&w.bob, &forged(c), "a").await.unwrap_err().transient);
    let mut c = original.clone();
    c.get_mut("metadata").unwrap().cap = w.grid.put_file(&vec![b' '; 100_000]);
    assert!(!fetch(&w.bob, &forged(c), "a").await.unwrap_err().transient);
    let file = Cap::from(w.grid.put_file(b"x").as_str());
    assert!(!fetch(&w.bob, &file, "a").await.unwrap_err().transient);
    assert!(
        !fetch(&w.bob, &Cap::from("garbage"), "a")
            .await
            .unwrap_err()
            .transient
    );
    // And the genuine one still verifies.
    assert_eq!(fetch(&w.bob, &info.cap, "a").await.unwrap(), info);
}

/// A literal's bytes are in its capability, so its write waits for no
/// transfer; but each holds its bytes while it runs, and a packed folder has
/// hundreds in flight: only a few run at once, the others wait their turn.
#[tokio::test]
async fn literal_writes_run_a_few_at_once() {
    let w = world();
    let files: Vec<(String, Cap, Bytes)> = (0..100)
        .map(|i| {
            let cap = format!("URI:MF-LIT:f{i}");
            let data = Bytes::from(format!("file {i}"));
            w.grid
                .state
                .lock()
                .unwrap()
                .files
                .insert(cap.clone(), data.clone());
            (format!("f{i}"), Cap::from(cap), data)
        })
        .collect();
    let writes = files.iter().map(|(name, cap, data)| {
        let content = Content::File {
            cap: cap.clone(),
            size: data.len() as u64,
            executable: false,
        };
        write_action(&w.bob, name, content, 1_700_000_000, LocalState::Absent)
    });
    for out in futures_util::future::join_all(writes).await {
        assert!(matches!(out, WriteOutcome::Done(_)), "{out:?}");
    }
    for (name, _, data) in &files {
        assert_eq!(fs::read(w.bob_root.join(name)).unwrap(), data.to_vec());
    }
    let most = w.grid.downloading.lock().unwrap().1;
    assert!((2..=32).contains(&most), "{most} literal writes at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_refuse_symlinked_parents_and_internal_paths() {
    let w = world();
    fs::write(w.alice_root.join("a"), "content").unwrap();
    let info = done(upload(&w.alice, "a", state(&w.alice_root, "a"), vec![]).await);
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), w.bob_root.join("link")).unwrap();
    for target in ["link/a", "link/new/a"] {
        let out = write_action(&w.bob, target, info.content.clone(), 1, LocalState::Absent).await;
        assert!(
            matches!(&out, WriteOutcome::Failed(e) if !e.transient),
            "{target}: {out:?}"
        );
    }
    let out = write_action(&w.bob, "link/d", Content::Dir, 1, LocalState::Absent).await;
    assert!(
        matches!(&out, WriteOutcome::Failed(e) if !e.transient),
        "{out:?}"
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    let out = write_action(
        &w.bob,
        ".magic-folder/x",
        info.content.clone(),
        1,
        LocalState::Absent,
    )
    .await;
    assert!(
        matches!(&out, WriteOutcome::Failed(e) if !e.transient),
        "{out:?}"
    );
    // The file's expected state changed while downloading: left alone.
    fs::write(w.bob_root.join("a"), "bob's own").unwrap();
    let out = write_action(&w.bob, "a", info.content.clone(), 1, LocalState::Absent).await;
    assert_eq!(out, WriteOutcome::Changed(state(&w.bob_root, "a")));
    assert_eq!(fs::read(w.bob_root.join("a")).unwrap(), b"bob's own");
    // Content that is not on the grid: a failure, nothing left behind.
    let missing = Content::File {
        cap: Cap::from(format!("URI:MF-CHK:{}", hex(b"nowhere"))),
        size: 3,
        executable: false,
    };
    let out = write_action(&w.bob, "m", missing, 1, LocalState::Absent).await;
    assert!(matches!(out, WriteOutcome::Failed(_)), "{out:?}");
    assert!(temp_files(&w.bob_root).is_empty());
    assert!(!w.bob_root.join("m").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_action_and_missing_folder() {
    let w = world();
    fs::write(w.alice_root.join("f"), "x").unwrap();
    match w.alice.execute(Action::Scan).await {
        Event::Scanned(Ok(r)) => assert_eq!(r.entries, vec![(rp("f"), state(&w.alice_root, "f"))]),
        other => panic!("{other:?}"),
    }
    fs::remove_dir_all(w.alice_root.join(".magic-folder")).unwrap();
    assert!(matches!(
        w.alice.execute(Action::Scan).await,
        Event::Scanned(Err(_))
    ));
    let out = write_action(&w.alice, "g", Content::Dir, 0, LocalState::Absent).await;
    assert!(
        matches!(&out, WriteOutcome::Failed(e) if e.transient),
        "{out:?}"
    );
}

/// The same flow through the real embedded grid backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_the_embedded_grid() {
    use mf_grid::embedded::EmbeddedGrid;
    let store = tempfile::tempdir().unwrap();
    let grid = Arc::new(
        EmbeddedGrid::create(store.path(), [3; 32])
            .unwrap()
            .with_chunk_size(64)
            .unwrap(),
    );
    let collective = grid.create_mutable_dir().await.unwrap();
    let (ta, a_root) = folder();
    let (tb, b_root) = folder();
    let _keep = (ta, tb);
    let mut execs = Vec::new();
    let mut members = DirChildren::new();
    for (name, root, seed) in [("alice", &a_root, 1u8), ("bob", &b_root, 2)] {
        let personal = grid.create_mutable_dir().await.unwrap();
        members.insert(
            name.into(),
            DirEntry::new(mf_grid::read_only(&personal).unwrap()),
        );
        let config = ExecutorConfig {
            author: Author::from_seed(name, [seed; 32]),
            ..common::config(name, root, &collective, personal)
        };
        execs.push(Executor::new(grid.clone(), config).unwrap());
    }
    grid.set_children(&collective, members, Replace::Yes)
        .await
        .unwrap();
    let (alice, bob) = (&execs[0], &execs[1]);

    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(a_root.join("big.bin"), &data).unwrap();
    let s = fsops::stat(&a_root, &rp("big.bin")).unwrap();
    let info = match alice
        .execute(Action::Upload {
            op: OpId(1),
            path: rp("big.bin"),
            local: s,
            parents: vec![],
            generation: 1,
        })
        .await
    {
        Event::Uploaded {
            result: UploadOutcome::Done(i),
            ..
        } => i,
        other => panic!("{other:?}"),
    };
    let ev = alice
        .execute(Action::Publish {
            op: OpId(2),
            entries: vec![entry(&info.relpath, &info.cap, EntryShape::File)],
        })
        .await;
    assert!(
        matches!(
            ev,
            Event::Published {
                op: OpId(2),
                result: Ok(()),
                ..
            }
        ),
        "{ev:?}"
    );
    let listings = match bob.execute(Action::Poll).await {
        Event::Polled(Ok(l)) => l,
        other => panic!("{other:?}"),
    };
    assert_eq!(listings.len(), 1);
    let (path, cap) = listings[0].entries.as_ref().unwrap()["big.bin"].clone();
    let fetched = match bob
        .execute(Action::Fetch {
            cap,
            listed_as: path.clone(),
        })
        .await
    {
        Event::Fetched { result: Ok(i), .. } => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(fetched, info);
    let ev = bob
        .execute(Action::Write {
            op: OpId(3),
            target: path,
            content: fetched.content,
            mtime_s: fetched.mtime_s,
            expect: LocalState::Absent,
        })
        .await;
    assert!(
        matches!(
            ev,
            Event::Written {
                result: WriteOutcome::Done(LocalState::File(_)),
                ..
            }
        ),
        "{ev:?}"
    );
    assert_eq!(fs::read(b_root.join("big.bin")).unwrap(), data);
}

/// A magic-folder 24.3 peer reads every entry of a personal directory but
/// `@metadata` as a file, and a directory's snapshot would read to it as a
/// deletion (24.3 deletes recursively): directories and their deletions
/// stay aside, files and their deletions in the directory, and whoever
/// polls sees the last entry published under each name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_and_their_deletions_stay_where_24_3_does_not_look() {
    let w = world();
    fs::create_dir(w.alice_root.join("d")).unwrap();
    fs::write(w.alice_root.join("f"), "x").unwrap();
    let dir = done(upload(&w.alice, "d", LocalState::Dir, vec![]).await);
    let file = done(upload(&w.alice, "f", state(&w.alice_root, "f"), vec![]).await);
    publish(
        &w.alice,
        vec![
            entry(&rp("d"), &dir.cap, EntryShape::Directory),
            entry(&rp("f"), &file.cap, EntryShape::File),
        ],
    )
    .await;
    let own = w.grid.list(&w.alice_personal).await.unwrap();
    assert_eq!(own.keys().collect::<Vec<_>>(), ["@metadata", "f"]);
    // Deleting both: the file's deletion where 24.3 reads it, with a
    // `content` entry that names nothing (24.3's own shape); the
    // directory's aside.
    fs::remove_dir(w.alice_root.join("d")).unwrap();
    fs::remove_file(w.alice_root.join("f")).unwrap();
    let gone_d = done(upload(&w.alice, "d", LocalState::Absent, vec![dir.cap.clone()]).await);
    let gone_f = done(upload(&w.alice, "f", LocalState::Absent, vec![file.cap.clone()]).await);
    let snap = w
        .grid
        .list(&Capability::parse(gone_f.cap.as_str()).unwrap())
        .await
        .unwrap();
    assert_eq!(snap["content"].cap.kind(), CapKind::Empty);
    publish(
        &w.alice,
        vec![
            entry(&rp("d"), &gone_d.cap, EntryShape::Deletion),
            entry(&rp("f"), &gone_f.cap, EntryShape::Deletion),
        ],
    )
    .await;
    let own = w.grid.list(&w.alice_personal).await.unwrap();
    assert_eq!(own.keys().collect::<Vec<_>>(), ["@metadata", "f"]);
    assert_eq!(own["f"].cap.as_str(), gone_f.cap.as_str());
    let listings = poll(&w.bob).await;
    let got = listings[0].entries.as_ref().unwrap();
    assert_eq!(got["d"], (rp("d"), gone_d.cap.clone()));
    assert_eq!(got["f"], (rp("f"), gone_f.cap.clone()));
    let fetched = match w
        .bob
        .execute(Action::Fetch {
            cap: gone_f.cap.clone(),
            listed_as: rp("f"),
        })
        .await
    {
        Event::Fetched { result: Ok(i), .. } => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(fetched.content, Content::Deleted);
    // A file where the directory was leaves the aside; a directory where
    // the file was overrides the file's last entry, which stays for 24.3.
    fs::write(w.alice_root.join("d"), "now a file").unwrap();
    fs::create_dir(w.alice_root.join("f")).unwrap();
    let d_file = done(
        upload(
            &w.alice,
            "d",
            state(&w.alice_root, "d"),
            vec![gone_d.cap.clone()],
        )
        .await,
    );
    let f_dir = done(upload(&w.alice, "f", LocalState::Dir, vec![gone_f.cap.clone()]).await);
    publish(
        &w.alice,
        vec![
            entry(&rp("d"), &d_file.cap, EntryShape::File),
            entry(&rp("f"), &f_dir.cap, EntryShape::Directory),
        ],
    )
    .await;
    let own = w.grid.list(&w.alice_personal).await.unwrap();
    assert_eq!(own["d"].cap.as_str(), d_file.cap.as_str());
    assert_eq!(own["f"].cap.as_str(), gone_f.cap.as_str());
    // Aside too: alice's declared author and key, which readers pin.
    let aside = w.grid.list(&own["@metadata"].cap).await.unwrap();
    assert_eq!(aside.keys().collect::<Vec<_>>(), ["@author", "f"]);
    let listings = poll(&w.bob).await;
    let got = listings[0].entries.as_ref().unwrap();
    assert_eq!(got["d"], (rp("d"), d_file.cap.clone()));
    assert_eq!(got["f"], (rp("f"), f_dir.cap.clone()));
    assert!(
        listings[0].rejected.is_empty(),
        "{:?}",
        listings[0].rejected
    );
    let declared = listings[0].author.as_ref().unwrap();
    assert_eq!(
        (declared.name.as_str(), declared.verify_key.as_str()),
        (d_file.author.as_str(), d_file.author_key.as_str())
    );
}

/// The record aside is written with a fresh nonce each time, so a retry
/// after an interrupted write never repeats its bytes (on Tahoe, storage
/// servers refuse an interrupted upload's storage index for 30 minutes);
/// and it is written only when what it records changed, also after a
/// restart, when it is read back from the grid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aside_record_is_unique_per_write_and_written_only_on_change() {
    let w = world();
    let restarted_alice = || {
        executor(
            &w.grid,
            &w.collective.1,
            "alice",
            ALICE_SEED,
            &w.alice_root,
            &w.alice_personal,
            Duration::ZERO,
        )
    };
    fs::create_dir(w.alice_root.join("d")).unwrap();
    let dir = done(upload(&w.alice, "d", LocalState::Dir, vec![]).await);
    let d = || vec![entry(&rp("d"), &dir.cap, EntryShape::Directory)];
    let record = || async {
        let own = w.grid.list(&w.alice_personal).await.unwrap();
        own["@metadata"].cap.clone()
    };
    publish(&w.alice, d()).await;
    let first = record().await;
    // As if that write's outcome were unknown: the record is gone from the
    // personal directory and a fresh daemon writes the same entries again.
    w.grid.unlink(&w.alice_personal, "@metadata").await.unwrap();
    publish(&restarted_alice(), d()).await;
    let second = record().await;
    let grid = &w.grid;
    let nonce = |cap: Capability| async move {
        let aside = grid.list(&cap).await.unwrap();
        assert_eq!(aside.keys().collect::<Vec<_>>(), ["@author", "d"]);
        aside["@author"].metadata["nonce"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_ne!(
        nonce(first).await,
        nonce(second.clone()).await,
        "the same entries, new bytes"
    );
    // A restarted daemon publishing a file leaves the unchanged record.
    fs::write(w.alice_root.join("f"), "x").unwrap();
    let file = done(upload(&w.alice, "f", state(&w.alice_root, "f"), vec![]).await);
    publish(
        &restarted_alice(),
        vec![entry(&rp("f"), &file.cap, EntryShape::File)],
    )
    .await;
    assert_eq!(record().await, second);
    // Readers still find alice's declared author.
    let listings = poll(&w.bob).await;
    let declared = listings[0].author.as_ref().unwrap();
    assert_eq!(declared.name, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_entries_of_an_earlier_release_move_under_metadata() {
    let w = world();
    fs::write(w.alice_root.join("g"), "x").unwrap();
    let g = done(upload(&w.alice, "g", state(&w.alice_root, "g"), vec![]).await);
    let loser = done(upload(&w.alice, "h", LocalState::Absent, vec![]).await);
    // As an earlier release published losers: in the personal directory.
    let mut legacy = DirChildren::new();
    legacy.insert(
        snapshot::conflict_entry_name(&rp("g"), "bob"),
        DirEntry::new(Capability::parse(loser.cap.as_str()).unwrap()),
    );
    w.grid
        .set_children(&w.alice_personal, legacy, Replace::Yes)
        .await
        .unwrap();
    let ev = w
        .alice
        .execute(Action::Publish {
            op: OpId(1),
            entries: vec![entry(&rp("g"), &g.cap, EntryShape::File)],
        })
        .await;
    assert!(
        matches!(ev, Event::Published { result: Ok(()), .. }),
        "{ev:?}"
    );
    let own = w.grid.list(&w.alice_personal).await.unwrap();
    let names: Vec<&str> = own.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["@metadata", "g"],
        "moved out of the personal directory"
    );
    // Others see the same entries as before.
    let listings = poll(&w.bob).await;
    let alice = listings.iter().find(|l| l.participant == "alice").unwrap();
    let got = alice.entries.as_ref().unwrap();
    assert_eq!(got["g@cbob"], (rp("g"), loser.cap.clone()));
    assert_eq!(got["g"], (rp("g"), g.cap.clone()));
    assert!(alice.rejected.is_empty(), "{:?}", alice.rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_listed_as_a_transfer_while_it_runs() {
    let w = world();
    fs::write(w.alice_root.join("big"), vec![1u8; 20_000]).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (transfers, record) = (w.alice.transfers().clone(), seen.clone());
    *w.grid.after_upload_read.lock().unwrap() = Some(Box::new(move |_: &Path| {
        record.lock().unwrap().push(transfers.list());
    }));
    done(upload(&w.alice, "big", state(&w.alice_root, "big"), vec![]).await);
    *w.grid.after_upload_read.lock().unwrap() = None;
    let seen = seen.lock().unwrap();
    let during = &seen[0];
    assert_eq!(during.len(), 1, "{seen:?}");
    assert_eq!(
        (
            during[0].path.as_str(),
            during[0].direction.as_str(),
            during[0].bytes_total
        ),
        ("big", "upload", 20_000)
    );
    assert!(w.alice.transfers().list().is_empty(), "gone when done");
}
