//! The embedded grid's directory on disk: layout, temporary files and
//! crash-safe publication.
//!
//! Nothing in this module knows about keys or formats; it moves opaque bytes
//! into place so that a reader either sees a complete, fsynced file under its
//! final name or no file at all.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::crypto::{random_bytes, Key32, BASE32};
use crate::{GridError, GridResult};

/// Name of the marker file that says "this directory is an embedded grid".
pub(crate) const MARKER: &str = "MF-GRID";
/// Contents of the marker file (format version 1).
const MARKER_TEXT: &str = "magic-folder embedded grid, format 1\n";
/// Temporary files older than this are leftovers of crashed writers.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Paths of one grid directory.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    root: PathBuf,
    tmp: PathBuf,
    objects: PathBuf,
    mutable: PathBuf,
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> GridError {
    let context = context.into();
    move |source| GridError::Io { context, source }
}

/// Makes a directory's entries (creations, renames, links) durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Store {
    /// The layout of a grid at `root`, without touching the disk.
    pub(crate) fn paths(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
            tmp: root.join("tmp"),
            objects: root.join("objects"),
            mutable: root.join("mutable"),
        }
    }

    /// Lays out a grid at `root` (creating it) unless one is already there.
    pub(crate) fn create(root: &Path) -> GridResult<Store> {
        let store = Store::paths(root);
        let ctx = || format!("creating embedded grid at {}", root.display());
        fs::create_dir_all(root).map_err(io_err(ctx()))?;
        for dir in [&store.tmp, &store.objects, &store.mutable] {
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(ctx())(e)),
            }
        }
        let marker = root.join(MARKER);
        if !marker.exists() {
            let mut temp = store.temp_file().map_err(io_err(ctx()))?;
            temp.file()
                .write_all(MARKER_TEXT.as_bytes())
                .map_err(io_err(ctx()))?;
            temp.sync().map_err(io_err(ctx()))?;
            fs::rename(temp.path(), &marker).map_err(io_err(ctx()))?;
            temp.forget();
        }
        fsync_dir(root).map_err(io_err(ctx()))?;
        Store::open(root)
    }

    /// Opens an existing grid, checking its marker and format version.
    pub(crate) fn open(root: &Path) -> GridResult<Store> {
        let store = Store::paths(root);
        let marker = root.join(MARKER);
        let text = fs::read_to_string(&marker).map_err(io_err(format!(
            "opening embedded grid: reading {}",
            marker.display()
        )))?;
        if text != MARKER_TEXT {
            return Err(GridError::Protocol(format!(
                "{} is not an embedded grid of a format this program understands",
                root.display()
            )));
        }
        for dir in [&store.tmp, &store.objects, &store.mutable] {
            if !dir.is_dir() {
                return Err(GridError::Protocol(format!(
                    "embedded grid at {} is incomplete: {} is missing",
                    root.display(),
                    dir.display()
                )));
            }
        }
        store.remove_stale_temps();
        Ok(store)
    }

    /// The grid's root directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Best effort: removes temporary files left by writers that crashed long
    /// ago. Live writers keep touching theirs, so age tells them apart.
    fn remove_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.tmp) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_TEMP_AGE);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Where the immutable object with storage index `si` lives.
    pub(crate) fn object_path(&self, si: &Key32) -> PathBuf {
        let name = BASE32.encode(si);
        self.objects.join(&name[..2]).join(name)
    }

    /// The directory holding a mutable directory's versions.
    pub(crate) fn mutable_dir(&self, si: &Key32) -> PathBuf {
        self.mutable.join(BASE32.encode(si))
    }

    /// The directory holding all mutable directories.
    pub(crate) fn mutable_root(&self) -> &Path {
        &self.mutable
    }

    /// The directory holding all immutable objects.
    pub(crate) fn objects_root(&self) -> &Path {
        &self.objects
    }

    /// Removes the immutable object at `path` if it was last written or
    /// refreshed before `cutoff`; returns its length if it did.
    ///
    /// Safe against a writer that refreshes the object meanwhile (see
    /// [`refresh_object`]): the object is first moved aside, and only then
    /// is its time looked at again. A refresh that reached it before the
    /// move shows there, and the object is put back; one that came after
    /// the move found no object, so that writer writes it anew.
    pub(crate) fn collect_object(
        &self,
        path: &Path,
        cutoff: SystemTime,
    ) -> io::Result<Option<u64>> {
        let old = |m: &fs::Metadata| m.modified().map(|t| t < cutoff);
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() && old(&m)? => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let aside = self
            .tmp
            .join(format!("{}.gc", BASE32.encode(&random_bytes::<16>()?)));
        match fs::rename(path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let m = fs::metadata(&aside)?;
        if !old(&m)? {
            // Refreshed under us: back it goes. Should a writer have stored
            // it anew meanwhile, that copy has the same content.
            fs::rename(&aside, path)?;
            return Ok(None);
        }
        fs::remove_file(&aside)?;
        if let Some(parent) = path.parent() {
            fsync_dir(parent)?;
        }
        Ok(Some(m.len()))
    }

    /// Creates a fresh temporary file (removed on drop unless published).
    pub(crate) fn temp_file(&self) -> io::Result<TempFile> {
        let name = format!("{}.tmp", BASE32.encode(&random_bytes::<16>()?));
        let path = self.tmp.join(name);
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    /// Moves a finished temporary file to `final_path` (an immutable
    /// object): fsyncs the file, renames it, fsyncs the directory. Unless
    /// `replace`, an object of the expected length already there (another
    /// upload of the same content won) is kept and refreshed, and the
    /// temporary file dropped.
    pub(crate) fn publish_object(
        &self,
        mut temp: TempFile,
        final_path: &Path,
        expected_len: u64,
        replace: bool,
    ) -> io::Result<()> {
        temp.sync()?;
        if !replace && refresh_object(final_path, expected_len)? {
            return Ok(()); // dedup: `temp` is removed on drop
        }
        let parent = final_path.parent().expect("object paths have a parent");
        match fs::rename(temp.path(), final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // First object with this prefix: create the directory
                // durably. Another upload may be creating it right now (it
                // was missing at our rename, and is there by now): then its
                // entry is made durable here too, before ours relies on it.
                match fs::create_dir(parent) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                fsync_dir(&self.objects)?;
                fs::rename(temp.path(), final_path)?;
            }
            Err(e) => return Err(e),
        }
        temp.forget();
        fsync_dir(parent)
    }
}

/// True if an object of `len` bytes is stored at `path` — and then its
/// modification time is now: a stored object counts as written again each
/// time an upload finds it there, so that `gc` (which collects only
/// objects untouched for a grace period) spares content that a writer is
/// about to reference again. False if there is none, it has another
/// length (damaged: the caller writes it anew), it cannot be touched (a
/// file of another user on a shared grid: written anew, by rename), or
/// `gc` moved it away while we touched it.
pub(crate) fn refresh_object(path: &Path, len: u64) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ) =>
        {
            return Ok(false)
        }
        Err(e) => return Err(e),
    };
    let opened = file.metadata()?;
    if opened.len() != len || file.set_modified(SystemTime::now()).is_err() {
        return Ok(false);
    }
    // `gc` moves an object away before it looks at its time again (see
    // `collect_object`): if it is still here under its name, our touch
    // came first and `gc` will see it.
    match fs::metadata(path) {
        Ok(now) => Ok(now.ino() == opened.ino() && now.dev() == opened.dev()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A temporary file in `<grid>/tmp/`, deleted when dropped unless
/// [`forget`](TempFile::forget) was called after publishing it.
pub(crate) struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// The open file.
    pub(crate) fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is open until forget")
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes contents to stable storage.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.file().sync_all()
    }

    /// The file has been renamed into place: do not delete it on drop.
    pub(crate) fn forget(mut self) {
        self.file = None;
        self.path = PathBuf::new();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            self.file = None;
            let _ = fs::remove_file(&self.path);
        }
    }
}
