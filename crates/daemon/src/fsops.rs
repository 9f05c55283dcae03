//! Safe local file operations inside a folder root.
//!
//! Every change this program makes to a user's folder goes through here, so
//! the rules are enforced in one place:
//!
//! * **Nothing is followed through a symlink.** Paths are resolved one
//!   component at a time with `lstat`; a symlink anywhere on the way, or at
//!   the target, makes the path "not syncable" ([`FsError::NotSyncable`]).
//!   Only the folder root itself may be reached through a symlink.
//! * **Nothing is taken for deleted when the folder is away.** The root must
//!   hold the marker directory `.magic-folder/` ([`ensure_marker`] creates it
//!   when a folder is created or joined). Without it — an unmounted drive, a
//!   folder moved away — reads and writes fail with
//!   [`FsError::FolderUnavailable`] instead of reporting paths as absent.
//! * **A user's edit is never lost.** A file is only replaced or deleted if it
//!   is still, at the last moment, in the state the engine expects (same size,
//!   mtime and ctime); the replaced or deleted file is moved into the
//!   **versions area** (`<root>/.magic-folder/versions/<relpath>.<unix-secs>`),
//!   from which it can be recovered; [`prune_versions`] applies the
//!   folder's [`Retention`] (by default 30 days, 10 versions of each file).
//! * **Writes are atomic and durable.** New content is streamed into a
//!   temporary file (`.mf-tmp-<random>`) in the target's own directory,
//!   fsynced, given its mtime and permissions, then put in place; the
//!   directory is fsynced.
//!
//! # Closing the check → replace window
//!
//! magic-folder 24.3 (§6.4 of the reference) checks the target, then moves
//! the staged file over it and only afterwards looks at the moved-aside copy,
//! so a file the user saves in between can end up as a conflict marker or,
//! with a save-by-rename editor, be overwritten. Here:
//!
//! 1. `lstat` the target; it must be in the expected state (cheap early out).
//! 2. `rename` it into the versions area (same filesystem: one atomic step).
//! 3. `lstat` the moved file: it must be the same inode with the same size and
//!    mtime. (The ctime cannot be compared: `rename` itself updates it.) If
//!    the user wrote to it in between, it is put back with a no-replace
//!    `link` and the result is "changed".
//! 4. The new file is put in place with a no-replace `link` (then the
//!    temporary name is removed): a file the user created at the path in the
//!    gap after step 2 makes the link fail, is left alone, and the result is
//!    "changed"; the old version stays in the versions area.
//!
//! What remains: a program that already had the old file open and writes to
//! it after step 3 writes into the moved-aside version (recoverable from the
//! versions area, not lost). On a filesystem without hard links (FAT, some
//! network filesystems) step 4 falls back to check-then-`rename`, which has
//! a window of a few microseconds.
//!
//! All functions here are blocking; async callers use `spawn_blocking`.

use std::collections::HashMap;
use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mf_core::engine::WriteOutcome;
use mf_core::relpath::{RelPath, META_DIR, TEMP_PREFIX};
use mf_core::store::{LocalState, PathState};

/// The default umask of a folder: files are created `0600`, directories `0700`.
pub const DEFAULT_UMASK: u32 = 0o077;

/// Name of the versions area inside the marker directory.
pub const VERSIONS_DIR: &str = "versions";

/// How long replaced and deleted files are kept in the versions area.
pub const DEFAULT_VERSION_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Problems specific to a magic folder, carried inside an [`io::Error`]
/// (kind `Other`); see [`fs_error`] to recognise them.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A symlink or special file where a file or directory should be.
    #[error("{path}: not syncable: {reason}")]
    NotSyncable {
        /// The relative path concerned.
        path: String,
        /// Why it is not syncable.
        reason: &'static str,
    },
    /// A file stands where a directory is needed (or the reverse).
    #[error("{path}: {reason}")]
    Blocked {
        /// The relative path of the obstacle.
        path: String,
        /// What is in the way.
        reason: &'static str,
    },
    /// The folder root or its `.magic-folder` marker is missing.
    #[error(
        "folder {root} is unavailable: {reason}; nothing is treated as deleted until it is back"
    )]
    FolderUnavailable {
        /// The folder root.
        root: PathBuf,
        /// What is missing.
        reason: String,
    },
}

impl From<FsError> for io::Error {
    fn from(e: FsError) -> io::Error {
        io::Error::other(e)
    }
}

/// The [`FsError`] inside an I/O error, if it is one of ours.
pub fn fs_error(e: &io::Error) -> Option<&FsError> {
    e.get_ref()?.downcast_ref::<FsError>()
}

/// True for the errors that may go away by themselves: a full disk or quota
/// (space can be freed), an interrupted or timed-out call, a folder that is
/// not mounted right now.
pub fn is_transient(e: &io::Error) -> bool {
    if let Some(fe) = fs_error(e) {
        return matches!(fe, FsError::FolderUnavailable { .. });
    }
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::Interrupted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::ResourceBusy
    )
}

/// Adds what was being done to an I/O error, keeping its kind (and leaving
/// our own [`FsError`]s as they are, so they stay recognisable).
fn ctx(e: io::Error, what: impl FnOnce() -> String) -> io::Error {
    if fs_error(&e).is_some() {
        return e;
    }
    let hint = match e.kind() {
        io::ErrorKind::StorageFull => " (the disk is full)",
        io::ErrorKind::QuotaExceeded => " (disk quota exceeded)",
        io::ErrorKind::PermissionDenied => " (permission denied)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("{}: {e}{hint}", what()))
}

fn not_syncable(path: &str, reason: &'static str) -> io::Error {
    FsError::NotSyncable {
        path: path.to_owned(),
        reason,
    }
    .into()
}

/// The permission bits of a new file under `umask`.
pub fn file_mode(umask: u32) -> u32 {
    0o666 & !umask
}

/// The permission bits of a new directory under `umask`.
pub fn dir_mode(umask: u32) -> u32 {
    0o777 & !umask
}

/// True if the owner may execute the file: the bit a snapshot carries.
pub fn is_executable(m: &Metadata) -> bool {
    m.permissions().mode() & 0o100 != 0
}

/// A file's [`PathState`] from its metadata.
pub fn path_state(m: &Metadata) -> PathState {
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    PathState {
        size: m.len(),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
    }
}

/// Classifies an `lstat` result: a file, a directory, or not syncable.
fn classify(m: &Metadata, rel: &str) -> io::Result<LocalState> {
    let ft = m.file_type();
    if ft.is_file() {
        Ok(LocalState::File(path_state(m)))
    } else if ft.is_dir() {
        Ok(LocalState::Dir)
    } else if ft.is_symlink() {
        Err(not_syncable(rel, "a symbolic link (never followed)"))
    } else {
        Err(not_syncable(rel, "a special file (fifo, socket or device)"))
    }
}

/// `lstat`, with "not there" (including "a file where a directory was
/// expected on the way") as `None`.
fn lstat_opt(path: &Path) -> io::Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Fails unless `root` is a directory holding the `.magic-folder` marker
/// directory. The root may be reached through a symlink; the marker may not.
pub fn check_marker(root: &Path) -> io::Result<()> {
    let unavailable = |reason: String| -> io::Error {
        FsError::FolderUnavailable {
            root: root.to_owned(),
            reason,
        }
        .into()
    };
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(unavailable("it is not a directory".into())),
        Err(e) => return Err(unavailable(format!("cannot access it ({e})"))),
    }
    match fs::symlink_metadata(root.join(META_DIR)) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(unavailable(format!("{META_DIR} is not a directory"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(unavailable(format!(
            "the marker directory {META_DIR} is missing (drive not mounted? folder moved?)"
        ))),
        Err(e) => Err(unavailable(format!("cannot access {META_DIR} ({e})"))),
    }
}

/// Creates the folder marker `<root>/.magic-folder/` (and its versions area),
/// owner-only, if missing. The root itself must already exist: it is not
/// created here, so a typo or an unmounted drive is noticed.
pub fn ensure_marker(root: &Path) -> io::Result<()> {
    let m = fs::metadata(root).map_err(|e| ctx(e, || format!("folder {}", root.display())))?;
    if !m.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("folder {} is not a directory", root.display()),
        ));
    }
    let marker = root.join(META_DIR);
    mkdir_checked(&marker, 0o700, META_DIR)?;
    mkdir_checked(
        &marker.join(VERSIONS_DIR),
        0o700,
        &format!("{META_DIR}/{VERSIONS_DIR}"),
    )?;
    Ok(())
}

/// The versions area of a folder.
pub fn versions_dir(root: &Path) -> PathBuf {
    root.join(META_DIR).join(VERSIONS_DIR)
}

/// The local state of `rel`: every component is `lstat`ed, none is followed.
///
/// A missing path (or one whose parent is a file) is `Absent` — but only
/// after checking that the folder and its marker are there, so an unmounted
/// folder gives an error rather than "everything is absent". A symlink or
/// special file at or above the path is an [`FsError::NotSyncable`] error.
pub fn stat(root: &Path, rel: &RelPath) -> io::Result<LocalState> {
    match lstat_in_folder(root, rel)? {
        Some(m) => classify(&m, rel.as_str()),
        None => Ok(LocalState::Absent),
    }
}

/// [`stat`], and whether the file there is executable, from one `lstat`
/// (so the bit belongs to exactly that state).
pub fn stat_executable(root: &Path, rel: &RelPath) -> io::Result<(LocalState, bool)> {
    match lstat_in_folder(root, rel)? {
        Some(m) => Ok((classify(&m, rel.as_str())?, is_executable(&m))),
        None => Ok((LocalState::Absent, false)),
    }
}

/// The `lstat` of `rel` under `root`, or `None` where the path cannot exist
/// (nothing there, or a file where a directory would be). A symlink on the
/// way is an error: it is never followed.
fn lstat_in_folder(root: &Path, rel: &RelPath) -> io::Result<Option<Metadata>> {
    let s = rel.as_str();
    let mut abs = PathBuf::with_capacity(root.as_os_str().len() + s.len() + 1);
    abs.push(root);
    let mut end = 0;
    let mut segs = rel.segments().peekable();
    while let Some(seg) = segs.next() {
        abs.push(seg);
        end += seg.len();
        let m = match lstat_opt(&abs).map_err(|e| ctx(e, || format!("stat {s}")))? {
            Some(m) => m,
            None => {
                check_marker(root)?;
                return Ok(None);
            }
        };
        if segs.peek().is_none() {
            return Ok(Some(m));
        }
        let ft = m.file_type();
        if ft.is_symlink() {
            return Err(not_syncable(
                &s[..end],
                "a symbolic link on the way (never followed)",
            ));
        }
        if !ft.is_dir() {
            // A file where a directory would be: the path cannot exist.
            check_marker(root)?;
            return Ok(None);
        }
        end += 1;
    }
    unreachable!("a RelPath has at least one segment")
}

/// `mkdir` with exact permissions (the process umask is overridden), never
/// through a symlink. Returns true if it was created, false if a real
/// directory was already there; anything else in the way is an error.
fn mkdir_checked(path: &Path, mode: u32, rel: &str) -> io::Result<bool> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            // The process umask may have masked bits the folder's umask
            // allows: fix them through a descriptor opened without following
            // symlinks, so a swap in between cannot redirect the chmod.
            let dir = open_dir(path).map_err(|e| ctx(e, || format!("open new directory {rel}")))?;
            dir.set_permissions(Permissions::from_mode(mode))
                .map_err(|e| ctx(e, || format!("chmod new directory {rel}")))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            match fs::symlink_metadata(path).map_err(|e| ctx(e, || format!("stat {rel}")))? {
                m if m.is_dir() => Ok(false),
                m if m.file_type().is_symlink() => Err(not_syncable(
                    rel,
                    "a symbolic link where a directory is needed",
                )),
                _ => Err(FsError::Blocked {
                    path: rel.to_owned(),
                    reason: "a file is in the way of a directory",
                }
                .into()),
            }
        }
        Err(e) => Err(ctx(e, || format!("create directory {rel}"))),
    }
}

/// Opens a directory for fsync/fchmod without following a symlink.
fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(path)
}

/// fsyncs a directory so the names just created or removed in it are durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    open_dir(path)?.sync_all()
}

/// Makes sure every directory on the way to `rel` exists and is a real
/// directory (created with the folder's umask where missing), after checking
/// the folder marker. Returns the absolute parent directory of `rel`.
pub fn ensure_parents(root: &Path, rel: &RelPath, umask: u32) -> io::Result<PathBuf> {
    check_marker(root)?;
    let s = rel.as_str();
    let mut abs = root.to_path_buf();
    let Some(parent_len) = s.rfind('/') else {
        return Ok(abs);
    };
    let mut end = 0;
    for seg in s[..parent_len].split('/') {
        abs.push(seg);
        end += seg.len();
        let prefix = &s[..end];
        match lstat_opt(&abs).map_err(|e| ctx(e, || format!("stat {prefix}")))? {
            Some(m) if m.is_dir() => {}
            Some(m) if m.file_type().is_symlink() => {
                return Err(not_syncable(
                    prefix,
                    "a symbolic link on the way (never followed)",
                ))
            }
            Some(_) => {
                return Err(FsError::Blocked {
                    path: prefix.to_owned(),
                    reason: "a file is in the way of a directory",
                }
                .into())
            }
            None => {
                mkdir_checked(&abs, dir_mode(umask), prefix)?;
            }
        }
        end += 1;
    }
    Ok(abs)
}

/// What a local write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the target's new state.
    Done(LocalState),
    /// The target was not in the expected state and was left untouched; its
    /// actual state.
    Changed(LocalState),
    /// A directory to remove (or replace) still has entries.
    NotEmpty,
}

impl From<Outcome> for WriteOutcome {
    fn from(o: Outcome) -> WriteOutcome {
        match o {
            Outcome::Done(s) => WriteOutcome::Done(s),
            Outcome::Changed(s) => WriteOutcome::Changed(s),
            Outcome::NotEmpty => WriteOutcome::NotEmpty,
        }
    }
}

/// A random file name `.mf-tmp-<16 hex digits>`.
fn temp_name() -> io::Result<String> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| io::Error::other(format!("random: {e}")))?;
    Ok(format!(
        "{TEMP_PREFIX}{}",
        data_encoding::HEXLOWER.encode(&b)
    ))
}

/// Seconds since the epoch as a [`SystemTime`] (`None` if out of range).
fn system_time(secs: i64) -> Option<SystemTime> {
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// New content for one path, being written into a temporary file next to it.
///
/// Create it with [`TempFile::create`], write the bytes ([`Write`] is
/// implemented), then [`TempFile::commit`]. Dropping it uncommitted removes
/// the temporary file.
#[derive(Debug)]
pub struct TempFile {
    file: Option<File>,
    path: PathBuf,
    dir: PathBuf,
    root: PathBuf,
    rel: RelPath,
    umask: u32,
    mode: u32,
    written: u64,
    /// How far the kernel was asked to start writing the file back.
    written_back: u64,
    /// How far the file is written back and dropped from the page cache.
    settled: u64,
}

/// A temporary file is written behind in steps of this many bytes: each
/// step's writeback starts when it is written, and the step before is
/// waited for and dropped from the page cache (`sync_file_range`, then
/// `POSIX_FADV_DONTNEED`). So a large download keeps the disk busy while it
/// goes on, instead of sitting in the page cache until the fsync in
/// [`TempFile::commit`] writes all of it while nothing else happens; and it
/// keeps only two steps of the cache, not the whole file, so a 1 GiB file
/// does not evict what the user's programs have cached, and reuses the
/// same pages instead of taking a gigabyte of new ones. New pages were the
/// receiving daemon's largest cost on this machine (a virtual machine,
/// whose memory returned to its host is faulted in anew): a 1 GiB file
/// synced in 5.5–6.4 s instead of 7.2–8.1 s (BENCHMARKS.md, 2026-12-07).
const WRITEBACK_STEP: u64 = 8 << 20;

impl TempFile {
    /// Creates the temporary file for `target` in its own directory (creating
    /// missing parent directories, never through a symlink).
    pub fn create(root: &Path, target: &RelPath, umask: u32) -> io::Result<TempFile> {
        let dir = ensure_parents(root, target, umask)?;
        let mut tries = 0;
        loop {
            let path = dir.join(temp_name()?);
            let opened = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            match opened {
                Ok(file) => {
                    return Ok(TempFile {
                        file: Some(file),
                        path,
                        dir,
                        root: root.to_owned(),
                        rel: target.clone(),
                        umask,
                        mode: file_mode(umask),
                        written: 0,
                        written_back: 0,
                        settled: 0,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
                Err(e) => {
                    return Err(ctx(e, || format!("create temporary file for {target}")));
                }
            }
        }
    }

    /// Gives the finished file execute permission (as far as the umask
    /// allows: `0o777 & !umask` rather than `0o666 & !umask`).
    pub fn set_executable(&mut self, executable: bool) {
        self.mode = if executable {
            dir_mode(self.umask)
        } else {
            file_mode(self.umask)
        };
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The temporary file's path (inside the target's directory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("temporary file already closed"))
    }

    /// Finishes the file (permissions, mtime `mtime_s`, fsync) and puts it at
    /// the target, if the target is still in state `expect`:
    ///
    /// * `Absent`: placed with a no-replace link; a file that appeared
    ///   meanwhile is left alone (`Changed`);
    /// * `File(s)`: the old file is moved into the versions area first (see
    ///   the module docs for the exact steps);
    /// * `Dir`: an empty directory is replaced (`NotEmpty` otherwise).
    ///
    /// Anything else leaves the target untouched and returns `Changed` with
    /// its actual state. The temporary file never outlives this call.
    pub fn commit(mut self, mtime_s: i64, expect: LocalState) -> io::Result<Outcome> {
        let rel = self.rel.clone();
        let what = || format!("write {rel}");
        {
            let mode = self.mode;
            let file = self.file()?;
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(|e| ctx(e, what))?;
            if let Some(t) = system_time(mtime_s) {
                file.set_modified(t).map_err(|e| ctx(e, what))?;
            }
            // Data and size; an mtime or mode lost in a crash only makes the
            // engine see a (harmless) local change.
            file.sync_data().map_err(|e| ctx(e, what))?;
        }
        // The file stays open until it is placed: its state is read from
        // this descriptor, never from the path, which a user may already
        // have replaced (see the end).
        let target = self.dir.join(rel.file_name());

        let current = match lstat_opt(&target).map_err(|e| ctx(e, what))? {
            Some(m) => Some((classify(&m, rel.as_str())?, m)),
            None => None,
        };
        let mut aside = None;
        match (expect, &current) {
            (LocalState::Absent, None) => {}
            (LocalState::File(want), Some((LocalState::File(have), m))) if *have == want => {
                match move_aside(&self.root, &rel, &target, want, m.ino())? {
                    Ok(v) => aside = Some(v),
                    Err(now) => return Ok(Outcome::Changed(now)),
                }
            }
            (LocalState::Dir, Some((LocalState::Dir, _))) => match fs::remove_dir(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                    return Ok(Outcome::NotEmpty)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ctx(e, || format!("remove directory {rel}"))),
            },
            (_, current) => {
                return Ok(Outcome::Changed(
                    current.as_ref().map_or(LocalState::Absent, |c| c.0),
                ))
            }
        }

        let placed = match place_no_replace(&self.path, &target) {
            Ok(p) => p,
            Err(e) => {
                // Do not leave the path empty: put the old file back.
                if let Some(v) = aside {
                    if fs::hard_link(&v.at, &target).is_ok() {
                        let _ = fs::remove_file(&v.at);
                    } else {
                        v.finish();
                    }
                }
                return Err(ctx(e, what));
            }
        };
        sync_dir(&self.dir).map_err(|e| ctx(e, || format!("fsync directory of {rel}")))?;
        if let Some(v) = aside {
            v.finish();
        }
        if placed {
            // The temporary name is gone: nothing for `drop` to remove.
            self.path = PathBuf::new();
        } else {
            // Someone created the path in the gap: theirs stays.
            return Ok(Outcome::Changed(stat_target(&target, &rel)?));
        }
        // The state of the file we placed, from its descriptor (placing it
        // changed its ctime). Not `stat(target)`: a user who saves over the
        // path right after would have their file recorded as this version,
        // and their edit would never be uploaded.
        let placed_state = self.file()?.metadata().map_err(|e| ctx(e, what))?;
        self.file = None;
        Ok(Outcome::Done(LocalState::File(path_state(&placed_state))))
    }
}

impl TempFile {
    /// Counts `n` more bytes written; each [`WRITEBACK_STEP`] done, starts
    /// its writeback, waits for the step before it and drops that one from
    /// the page cache.
    ///
    /// The wait's error is the write's: waiting reports a failed writeback
    /// once per descriptor, so the fsync in [`TempFile::commit`] would
    /// never see it, and a file with lost pages would be placed.
    #[allow(unsafe_code)]
    fn wrote(&mut self, n: usize) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        self.written += n as u64;
        let pending = self.written - self.written_back;
        if pending < WRITEBACK_STEP {
            return Ok(());
        }
        let fd = self.file()?.as_raw_fd();
        let started = self.written_back;
        // SAFETY (the three calls): plain system calls on a descriptor we
        // own, which `self.file` keeps open.
        unsafe {
            // A start only: its failure would show at the wait or fsync.
            libc::sync_file_range(
                fd,
                started as libc::off64_t,
                pending as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.written_back = self.written;
        let done = started - self.settled;
        if done == 0 {
            return Ok(());
        }
        // SAFETY: as above.
        let waited = unsafe {
            libc::sync_file_range(
                fd,
                self.settled as libc::off64_t,
                done as libc::off64_t,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )
        };
        if waited != 0 {
            let rel = &self.rel;
            return Err(ctx(io::Error::last_os_error(), || format!("write {rel}")));
        }
        // SAFETY: as above. Only a hint: pages it cannot drop stay cached.
        unsafe {
            libc::posix_fadvise(
                fd,
                self.settled as libc::off_t,
                done as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
        self.settled = started;
        Ok(())
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file()?.write(buf)?;
        self.wrote(n)?;
        Ok(n)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let rel = &self.rel;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("temporary file already closed"))?;
        file.write_all(buf)
            .map_err(|e| ctx(e, || format!("write {rel}")))?;
        self.wrote(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file = None;
        // Never placed: the temporary name must not outlive us. (Once
        // placed, `path` is empty.)
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `lstat` of a target whose parents were just checked.
fn stat_target(target: &Path, rel: &RelPath) -> io::Result<LocalState> {
    match lstat_opt(target).map_err(|e| ctx(e, || format!("stat {rel}")))? {
        Some(m) => classify(&m, rel.as_str()),
        None => Ok(LocalState::Absent),
    }
}

/// Puts `temp` at `target` unless something is already there. Returns false
/// (and leaves `temp` for the caller to remove) if something was.
///
/// One `renameat2(RENAME_NOREPLACE)` where the filesystem has it (one
/// directory update instead of a link and an unlink: a measurable share of
/// a many-small-files download); else [`link_no_replace`].
fn place_no_replace(temp: &Path, target: &Path) -> io::Result<bool> {
    match rename_no_replace(temp, target) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {}
        Err(e) => return Err(e),
    }
    link_no_replace(temp, target)
}

/// [`place_no_replace`] without `renameat2`: a hard link, then removing
/// `temp`; else (no hard links either) a check, then a rename.
fn link_no_replace(temp: &Path, target: &Path) -> io::Result<bool> {
    match fs::hard_link(temp, target) {
        Ok(()) => {
            let _ = fs::remove_file(temp);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
            ) || e.raw_os_error() == Some(libc::EMLINK) =>
        {
            // No hard links here (FAT, some network filesystems): check, then
            // rename. The window is a few microseconds.
            if lstat_opt(target)?.is_some() {
                return Ok(false);
            }
            fs::rename(temp, target)?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// `renameat2(temp, target, RENAME_NOREPLACE)`: `EINVAL` or `ENOSYS` where
/// the filesystem or kernel does not offer it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn rename_no_replace(temp: &Path, target: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
    };
    let (from, to) = (c(temp)?, c(target)?);
    // SAFETY: both are NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_no_replace(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// A file moved out of the way, on its way into the versions area.
struct Aside {
    /// Where it is now.
    at: PathBuf,
    /// Where it still has to go, when `at` is a sibling temporary name
    /// (the target's directory is on another filesystem than the marker).
    then: Option<PathBuf>,
}

impl Aside {
    /// Completes the move into the versions area (best effort: if the copy
    /// across filesystems fails, the old file stays under its temporary
    /// name rather than being lost).
    fn finish(self) {
        if let Some(dest) = self.then {
            match fs::copy(&self.at, &dest) {
                Ok(_) => {
                    let _ = fs::remove_file(&self.at);
                }
                Err(e) => tracing::warn!(
                    "could not copy {} into the versions area ({e}); it stays at {}",
                    dest.display(),
                    self.at.display()
                ),
            }
        }
    }
}

/// Moves the file at `target` (which had state `want` and inode `ino`) out of
/// the way, then checks that what moved is really that file, unchanged.
/// `Ok(Err(state))` means the file had changed: it was put back and this is
/// the path's state now.
fn move_aside(
    root: &Path,
    rel: &RelPath,
    target: &Path,
    want: PathState,
    ino: u64,
) -> io::Result<Result<Aside, LocalState>> {
    let dest = version_path(root, rel)?;
    let aside = match fs::rename(target, &dest) {
        Ok(()) => Aside {
            at: dest,
            then: None,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(stat_target(target, rel)?)),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            let sibling = target.with_file_name(temp_name()?);
            match fs::rename(target, &sibling) {
                Ok(()) => Aside {
                    at: sibling,
                    then: Some(dest),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Ok(Err(stat_target(target, rel)?))
                }
                Err(e) => return Err(ctx(e, || format!("move {rel} aside"))),
            }
        }
        Err(e) => return Err(ctx(e, || format!("move {rel} into the versions area"))),
    };
    let moved = fs::symlink_metadata(&aside.at)
        .map_err(|e| ctx(e, || format!("stat the old version of {rel}")))?;
    let same = moved.file_type().is_file()
        && moved.ino() == ino
        && moved.len() == want.size
        && path_state(&moved).mtime_ns == want.mtime_ns;
    if same {
        return Ok(Ok(aside));
    }
    // The user changed it after our check: put it back, never over a file
    // that appeared meanwhile (then both stay: theirs at the path, this one
    // in the versions area or, across devices, under its temporary name).
    match fs::hard_link(&aside.at, target) {
        Ok(()) => {
            let _ = fs::remove_file(&aside.at);
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            aside.finish();
        }
        Err(_) => {
            if lstat_opt(target)?.is_none() {
                fs::rename(&aside.at, target).map_err(|e| ctx(e, || format!("put back {rel}")))?;
            } else {
                aside.finish();
            }
        }
    }
    Ok(Err(stat_target(target, rel)?))
}

/// A fresh name in the versions area for the current version of `rel`:
/// `<versions>/<rel>.<unix-secs>` (with `-N` appended if taken, and the file
/// name shortened if it would exceed 255 bytes). Creates its parents.
fn version_path(root: &Path, rel: &RelPath) -> io::Result<PathBuf> {
    let mut dir = versions_dir(root);
    mkdir_checked(&dir, 0o700, &format!("{META_DIR}/{VERSIONS_DIR}"))?;
    let mut shown = format!("{META_DIR}/{VERSIONS_DIR}");
    let segs: Vec<&str> = rel.segments().collect();
    for seg in &segs[..segs.len() - 1] {
        dir.push(seg);
        shown.push('/');
        shown.push_str(seg);
        mkdir_checked(&dir, 0o700, &shown)?;
    }
    let secs = now_secs();
    let mut name = rel.file_name().to_owned();
    for n in 0u32.. {
        let suffix = if n == 0 {
            format!(".{secs}")
        } else {
            format!(".{secs}-{n}")
        };
        let mut cut = name.len().min(255 - suffix.len());
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
        let candidate = dir.join(format!("{name}{suffix}"));
        if lstat_opt(&candidate)?.is_none() {
            return Ok(candidate);
        }
    }
    unreachable!("some suffix is free")
}

/// Writes everything `reader` yields to `target` atomically (see
/// [`TempFile::commit`] for the rules), executable or not. For local
/// copies, such as the CLI's `resolve`; downloads use [`TempFile`] directly
/// to stream.
pub fn write_file(
    root: &Path,
    target: &RelPath,
    reader: &mut dyn Read,
    (mtime_s, executable): (i64, bool),
    expect: LocalState,
    umask: u32,
) -> io::Result<Outcome> {
    let mut temp = TempFile::create(root, target, umask)?;
    temp.set_executable(executable);
    io::copy(reader, &mut temp)?;
    temp.commit(mtime_s, expect)
}

/// Makes `rel` a directory: a directory already there is success whatever
/// `expect` says; otherwise the path must still be in state `expect`:
/// `Absent` → created; `File(s)` → the file is moved into the versions area,
/// then the directory created. Parents are created as needed.
pub fn make_dir(root: &Path, rel: &RelPath, expect: LocalState, umask: u32) -> io::Result<Outcome> {
    let dir = ensure_parents(root, rel, umask)?;
    let target = dir.join(rel.file_name());
    let current = lstat_opt(&target).map_err(|e| ctx(e, || format!("stat {rel}")))?;
    let state = match &current {
        Some(m) => classify(m, rel.as_str())?,
        None => LocalState::Absent,
    };
    if state == LocalState::Dir {
        return Ok(Outcome::Done(LocalState::Dir));
    }
    if state != expect {
        return Ok(Outcome::Changed(state));
    }
    let mut aside = None;
    if let (LocalState::File(want), Some(m)) = (state, &current) {
        match move_aside(root, rel, &target, want, m.ino())? {
            Ok(v) => aside = Some(v),
            Err(now) => return Ok(Outcome::Changed(now)),
        }
    }
    let created = mkdir_checked(&target, dir_mode(umask), rel.as_str());
    if let Some(v) = aside {
        v.finish();
    }
    match created {
        Ok(_) => {}
        // Something appeared in the gap: leave it.
        Err(e) if fs_error(&e).is_some() => {
            return Ok(Outcome::Changed(stat_target(&target, rel)?))
        }
        Err(e) => return Err(e),
    }
    sync_dir(&dir).map_err(|e| ctx(e, || format!("fsync directory of {rel}")))?;
    Ok(Outcome::Done(stat_target(&target, rel)?))
}

/// Deletes `rel` if it is still in state `expect`: a file is moved into the
/// versions area (recoverable), a directory is removed only if empty
/// ([`Outcome::NotEmpty`] otherwise), `Absent` is already done.
pub fn delete(root: &Path, rel: &RelPath, expect: LocalState) -> io::Result<Outcome> {
    let state = stat(root, rel)?;
    if state != expect {
        return Ok(Outcome::Changed(state));
    }
    let target = root.join(rel.as_str());
    let dir = target
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.to_owned());
    match state {
        LocalState::Absent => return Ok(Outcome::Done(LocalState::Absent)),
        LocalState::Dir => match fs::remove_dir(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => return Ok(Outcome::NotEmpty),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Ok(Outcome::Changed(stat(root, rel)?))
            }
            Err(e) => return Err(ctx(e, || format!("remove directory {rel}"))),
        },
        LocalState::File(want) => {
            let ino = match lstat_opt(&target)? {
                Some(m) => m.ino(),
                None => return Ok(Outcome::Changed(LocalState::Absent)),
            };
            match move_aside(root, rel, &target, want, ino)? {
                Ok(v) => v.finish(),
                Err(now) => return Ok(Outcome::Changed(now)),
            }
        }
    }
    sync_dir(&dir).map_err(|e| ctx(e, || format!("fsync directory of {rel}")))?;
    Ok(Outcome::Done(LocalState::Absent))
}

/// How long, and how many, old versions the versions area keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Versions older than this go (their age is the time they were
    /// replaced or deleted).
    pub max_age: Duration,
    /// Of each file, at most this many of the newest versions are kept.
    pub per_file: usize,
}

impl Default for Retention {
    /// 30 days, and at most 10 versions of each file: the grid keeps every
    /// version anyway (`history`, `restore`); this is the quick local copy.
    fn default() -> Retention {
        Retention {
            max_age: DEFAULT_VERSION_RETENTION,
            per_file: 10,
        }
    }
}

/// What [`prune_versions`] removed, and what the versions area still holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Old versions deleted.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Directories left empty and removed.
    pub dirs: u64,
    /// Versions kept.
    pub kept_files: u64,
    /// Their total size.
    pub kept_bytes: u64,
}

/// Applies `retention` to the versions area: deletes versions older than
/// its age, then all but the newest `per_file` versions of each file (and
/// the directories that leaves empty). A version's age comes from the
/// `.<unix-secs>` suffix of its name (the time it was replaced or deleted);
/// for a name without one, from its ctime. The daemon calls it at start
/// and every hour.
pub fn prune_versions(root: &Path, retention: &Retention) -> io::Result<PruneStats> {
    let base = versions_dir(root);
    let cutoff = now_secs().saturating_sub(retention.max_age.as_secs().min(i64::MAX as u64) as i64);
    let mut stats = PruneStats::default();
    let mut dirs = Vec::new();
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ctx(e, || format!("read {}", dir.display()))),
        };
        // Versions in this directory by the file they are versions of.
        let mut by_file: HashMap<String, Vec<(i64, PathBuf, u64)>> = HashMap::new();
        for entry in rd {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            let (file, when) = match version_stamp(&name) {
                Some(secs) => (name[..name.rfind('.').unwrap_or(0)].to_owned(), secs),
                None => (name.clone(), meta.ctime()),
            };
            by_file
                .entry(file)
                .or_default()
                .push((when, entry.path(), meta.len()));
        }
        for mut versions in by_file.into_values() {
            versions.sort_by_key(|v| std::cmp::Reverse(v.0));
            for (i, (when, path, len)) in versions.into_iter().enumerate() {
                let stale = when < cutoff || i >= retention.per_file;
                if stale && fs::remove_file(&path).is_ok() {
                    stats.files += 1;
                    stats.bytes += len;
                } else {
                    stats.kept_files += 1;
                    stats.kept_bytes += len;
                }
            }
        }
        if dir != base {
            dirs.push(dir);
        }
    }
    // Deepest first, so a parent emptied by its children goes too.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        if fs::remove_dir(&d).is_ok() {
            stats.dirs += 1;
        }
    }
    Ok(stats)
}

/// The `<unix-secs>` of a version name `<name>.<secs>` or `<name>.<secs>-<n>`.
fn version_stamp(name: &str) -> Option<i64> {
    let (_, tail) = name.rsplit_once('.')?;
    let secs = tail.split_once('-').map_or(tail, |(s, _)| s);
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    secs.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_stamps() {
        assert_eq!(version_stamp("a.txt.1700000000"), Some(1_700_000_000));
        assert_eq!(version_stamp("a.txt.1700000000-2"), Some(1_700_000_000));
        assert_eq!(version_stamp("a.txt"), None);
        assert_eq!(version_stamp("noext"), None);
    }

    #[test]
    fn modes() {
        assert_eq!(file_mode(0o077), 0o600);
        assert_eq!(dir_mode(0o077), 0o700);
        assert_eq!(file_mode(0o022), 0o644);
    }

    fn folder() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        ensure_marker(&root).unwrap();
        (t, root)
    }

    #[test]
    fn placing_never_replaces() {
        // Both ways: `renameat2` here, and the link where a filesystem
        // lacks it.
        for place in [place_no_replace, link_no_replace] {
            let (_t, root) = folder();
            fs::write(root.join("tmp"), "new").unwrap();
            fs::write(root.join("target"), "user's").unwrap();
            assert!(!place(&root.join("tmp"), &root.join("target")).unwrap());
            assert_eq!(fs::read(root.join("target")).unwrap(), b"user's");
            fs::remove_file(root.join("target")).unwrap();
            assert!(place(&root.join("tmp"), &root.join("target")).unwrap());
            assert_eq!(fs::read(root.join("target")).unwrap(), b"new");
            assert!(!root.join("tmp").exists());
        }
    }

    /// A file of several write-behind steps, written in pieces that do not
    /// fall on them, is placed whole, and its written-back steps left the
    /// page cache on the way.
    #[test]
    fn a_large_file_written_behind_is_whole() {
        let (_t, root) = folder();
        let rel = RelPath::new("big").unwrap();
        let len = 3 * WRITEBACK_STEP as usize + 12_345;
        let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut temp = TempFile::create(&root, &rel, 0o022).unwrap();
        let piece_len = (1 << 20) + 7;
        for (i, piece) in content.chunks(piece_len).enumerate() {
            if i % 2 == 0 {
                temp.write_all(piece).unwrap();
            } else {
                let mut rest = piece;
                while !rest.is_empty() {
                    let n = temp.write(rest).unwrap();
                    rest = &rest[n..];
                }
            }
        }
        // Steps end at 8, 16 and 24 pieces; the last two are still cached.
        assert_eq!(temp.settled, 16 * piece_len as u64);
        let placed = temp.commit(0, LocalState::Absent).unwrap();
        assert!(matches!(placed, Outcome::Done(LocalState::File(_))));
        assert!(fs::read(root.join("big")).unwrap() == content);
    }

    /// The file changed between the check and the move aside: it is put
    /// back where it was, and nothing stays in the versions area.
    #[test]
    fn a_file_changed_after_the_check_is_put_back() {
        let (_t, root) = folder();
        let rel = RelPath::new("d/f").unwrap();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), "edited").unwrap();
        let m = fs::symlink_metadata(root.join("d/f")).unwrap();
        let mut checked = path_state(&m);
        checked.size = 3; // what it was when checked
        let r = move_aside(&root, &rel, &root.join("d/f"), checked, m.ino()).unwrap();
        let now = stat(&root, &rel).unwrap();
        assert!(matches!(r, Err(s) if s == now));
        assert_eq!(fs::read(root.join("d/f")).unwrap(), b"edited");
        assert_eq!(
            fs::read_dir(versions_dir(&root).join("d")).unwrap().count(),
            0
        );
        // Same content but another inode (replaced by a save-by-rename): also put back.
        let r = move_aside(&root, &rel, &root.join("d/f"), path_state(&m), m.ino() + 1).unwrap();
        assert!(r.is_err());
        assert_eq!(fs::read(root.join("d/f")).unwrap(), b"edited");
        // Unchanged: moved.
        let m = fs::symlink_metadata(root.join("d/f")).unwrap();
        let r = move_aside(&root, &rel, &root.join("d/f"), path_state(&m), m.ino()).unwrap();
        let aside = r.ok().unwrap();
        assert!(!root.join("d/f").exists());
        assert_eq!(fs::read(&aside.at).unwrap(), b"edited");
    }

    #[test]
    fn long_names_fit_in_the_versions_area() {
        let (_t, root) = folder();
        let rel = RelPath::new(&"n".repeat(255)).unwrap();
        let v = version_path(&root, &rel).unwrap();
        assert!(v.file_name().unwrap().len() <= 255);
        fs::write(&v, "x").unwrap();
        assert_ne!(
            version_path(&root, &rel).unwrap(),
            v,
            "a taken name is not reused"
        );
    }

    #[test]
    fn transient_classification() {
        assert!(is_transient(&io::Error::from(io::ErrorKind::StorageFull)));
        assert!(!is_transient(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
        let gone: io::Error = FsError::FolderUnavailable {
            root: "/x".into(),
            reason: "gone".into(),
        }
        .into();
        assert!(is_transient(&gone));
        assert!(fs_error(&gone).is_some());
        let wrapped = ctx(gone, || "ignored".into());
        assert!(
            fs_error(&wrapped).is_some(),
            "our errors pass through ctx unchanged"
        );
    }
}
