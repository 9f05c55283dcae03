//! The full scan: every syncable entry of a folder and its local state.
//!
//! A scan is the ground truth the engine falls back on — at start-up, on a
//! schedule, and whenever the watcher loses track (`WatchMsg::Rescan`). It
//! must therefore be trustworthy (an absent folder is an error, never an empty
//! list) and fast (a plain walk: one `getdents` per directory and one
//! `fstatat` per file, nothing per directory beyond reading it; ~200k
//! entries/s warm on a 2-core machine).
//!
//! What is reported:
//!
//! * `entries`: regular files (with size, mtime, ctime) and directories, but
//!   not the root itself; conflict copies are reported like files (the engine
//!   needs to see them to notice resolutions);
//! * `skipped`: paths that exist but are not scanned — excluded by an ignore
//!   rule (the scan does not descend into them), symlinks (never followed),
//!   special files (fifos, sockets, devices), directories that cannot be
//!   read. The engine takes nothing at or below them for deleted, so adding
//!   an ignore rule or losing read permission never deletes a file at the
//!   other participants;
//! * `problems`: one line `"<path>: <why>"` per entry left out for a reason
//!   the user may want to fix (everything in `skipped` except ignored paths,
//!   plus names that are not UTF-8 or that [`RelPath::new`] rejects, which
//!   cannot even be named in `skipped`). Never an error.
//!
//! Left out silently: our internal paths (`.magic-folder/`, `.mf-tmp-*`).
//!
//! The walk is iterative (an explicit stack), so depth is bounded only by
//! memory. It runs blocking: async callers use `spawn_blocking`.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use mf_core::relpath::RelPath;
use mf_core::store::LocalState;

pub use mf_core::engine::ScanReport;

use crate::fsops;
use crate::ignore::{IgnoreRules, Verdict};

/// Scans the whole folder at `root`.
///
/// Fails (with a sentence for the user) only when the folder itself cannot be
/// trusted: the root or its `.magic-folder` marker is missing — before or
/// after the walk, so a drive unmounted mid-scan does not yield a partial
/// list — or the root cannot be read. Entries come sorted by path.
pub fn scan(root: &Path, ignore: &IgnoreRules) -> Result<ScanReport, String> {
    fsops::check_marker(root).map_err(|e| e.to_string())?;
    let mut report = ScanReport::default();
    let mut walker = Walker {
        ignore,
        stat_files: true,
        limit: usize::MAX,
        before_reading: None,
        report: &mut report,
    };
    walker
        .walk(root.to_path_buf(), None)
        .map_err(|e| format!("cannot read folder {}: {e}", root.display()))?;
    fsops::check_marker(root).map_err(|e| e.to_string())?;
    report.entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(report)
}

/// Scans the subtree below `dir` (not `dir` itself), for the watcher when a
/// directory appears with contents, handing each directory (`dir` too) to
/// `watch` before reading it. `None` if it holds more than `limit` entries
/// (the caller rescans instead). Problems are returned alongside.
pub(crate) fn scan_subtree(
    root: &Path,
    dir: &RelPath,
    ignore: &IgnoreRules,
    limit: usize,
    watch: &mut dyn FnMut(&Path) -> bool,
) -> Option<ScanReport> {
    let mut report = ScanReport::default();
    let mut walker = Walker {
        ignore,
        stat_files: true,
        limit,
        before_reading: Some(watch),
        report: &mut report,
    };
    // A directory that vanished meanwhile simply has nothing to report.
    let _ = walker.walk(root.join(dir.as_str()), Some(dir.clone()));
    (report.entries.len() <= limit).then_some(report)
}

/// Every directory of the folder, each handed to `watch` (the root first)
/// before it is read, so that whatever appears in it afterwards is heard
/// of. Files are not stat'ed. `None` if the root cannot be read.
pub(crate) fn watch_dirs(
    root: &Path,
    ignore: &IgnoreRules,
    watch: &mut dyn FnMut(&Path) -> bool,
) -> Option<Vec<RelPath>> {
    let mut report = ScanReport::default();
    let mut walker = Walker {
        ignore,
        stat_files: false,
        limit: usize::MAX,
        before_reading: Some(watch),
        report: &mut report,
    };
    walker.walk(root.to_path_buf(), None).ok()?;
    Some(report.entries.into_iter().map(|(p, _)| p).collect())
}

struct Walker<'a> {
    ignore: &'a IgnoreRules,
    /// Stat and report files (false: directories only).
    stat_files: bool,
    /// Stop once more than this many entries are collected.
    limit: usize,
    /// Called with each directory before it is read (the watcher places
    /// its watch there); false stops the walk.
    before_reading: Option<&'a mut dyn FnMut(&Path) -> bool>,
    report: &'a mut ScanReport,
}

impl Walker<'_> {
    /// Walks below `start` (whose relative path is `start_rel`, empty for the
    /// root). Only a failure to read `start` itself is an error.
    fn walk(&mut self, start: PathBuf, start_rel: Option<RelPath>) -> io::Result<()> {
        let mut stack: Vec<(PathBuf, Option<RelPath>)> = vec![(start, start_rel)];
        let mut first = true;
        let mut rel = String::with_capacity(256);
        while let Some((dir, dir_rel)) = stack.pop() {
            if let Some(before) = self.before_reading.as_mut() {
                if !before(&dir) {
                    return Ok(());
                }
            }
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if first => return Err(e),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    if let Some(d) = dir_rel {
                        self.skip(
                            d,
                            &format!("cannot read directory ({e}); its contents are not synced"),
                        );
                    }
                    continue;
                }
            };
            first = false;
            let prefix = dir_rel.as_ref().map_or("", |d| d.as_str());
            for entry in rd {
                if self.report.entries.len() > self.limit {
                    return Ok(());
                }
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        if let Some(d) = dir_rel.clone() {
                            self.skip(d, &format!("error while reading directory ({e})"));
                        } else {
                            self.problem("", &format!("error while reading directory ({e})"));
                        }
                        break;
                    }
                };
                let name_os = entry.file_name();
                let Some(name) = name_os.to_str() else {
                    let shown = String::from_utf8_lossy(name_os.as_bytes()).into_owned();
                    let p = join(prefix, &shown);
                    self.problem(&p, "name is not valid UTF-8; not synced");
                    continue;
                };
                rel.clear();
                if !prefix.is_empty() {
                    rel.push_str(prefix);
                    rel.push('/');
                }
                rel.push_str(name);
                let ft = match entry.file_type() {
                    Ok(ft) => ft,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        self.problem(&rel, &format!("cannot stat ({e})"));
                        continue;
                    }
                };
                let is_dir = ft.is_dir();
                let verdict = self.ignore.entry_verdict(&rel, is_dir);
                if verdict == Verdict::Internal {
                    continue;
                }
                let path = match RelPath::new(&rel) {
                    Ok(p) => p,
                    Err(e) => {
                        self.problem(&rel, &format!("name not usable ({e}); not synced"));
                        continue;
                    }
                };
                if verdict == Verdict::Ignored {
                    self.report.skipped.push(path);
                    continue;
                }
                if ft.is_symlink() {
                    self.skip(path, "symbolic link; not followed, not synced");
                    continue;
                }
                if !is_dir && !ft.is_file() {
                    self.skip(path, "special file (fifo, socket or device); not synced");
                    continue;
                }
                if is_dir {
                    stack.push((entry.path(), Some(path.clone())));
                    self.report.entries.push((path, LocalState::Dir));
                } else if self.stat_files {
                    match entry.metadata() {
                        Ok(m) if m.is_file() => self
                            .report
                            .entries
                            .push((path, LocalState::File(fsops::path_state(&m)))),
                        // Replaced by something else since the directory was read.
                        Ok(_) => self.skip(path, "changed type during the scan; skipped"),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => self.skip(path, &format!("cannot stat ({e})")),
                    }
                }
            }
        }
        Ok(())
    }

    /// An entry that exists but is not scanned: nothing at or below it may
    /// be taken for deleted.
    fn skip(&mut self, path: RelPath, why: &str) {
        self.problem(path.as_str(), why);
        self.report.skipped.push(path);
    }

    fn problem(&mut self, path: &str, why: &str) {
        let path = if path.is_empty() { "." } else { path };
        self.report.problems.push(format!("{path}: {why}"));
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}
