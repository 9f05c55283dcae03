//! The embedded grid: a directory of encrypted, tamper-evident objects that
//! this program manages itself, with no server.
//!
//! Open one with [`EmbeddedGrid::create`] (lays out the directory if needed)
//! or [`EmbeddedGrid::open`] (must exist). Both take the folder's 32-byte
//! *convergence secret*: it is per Magic Folder, travels to every participant
//! in the invite, and keys the content hashes that make uploads convergent
//! (the same file uploaded by two participants is stored once, and someone
//! without the secret cannot confirm a guess of a file's contents).
//! [`EmbeddedGrid::generate_convergence_secret`] makes a new one.
//!
//! The directory can live on a local disk or on a shared or network file
//! system used by several participants at once: no operation takes a lock,
//! every write is published atomically (rename for immutable objects,
//! exclusive hard link for directory versions) and fsynced.
//!
//! # On-disk layout
//!
//! ```text
//! <grid>/MF-GRID                     marker and format version (plain text)
//! <grid>/tmp/                        temporary files being written
//! <grid>/objects/<si[..2]>/<si>      immutable files and directories
//! <grid>/mutable/<si>/<seqnum>       versions of mutable directories
//! ```
//!
//! Files of at most 8 KiB (snapshot metadata, small files) are not stored at all:
//! their capability carries them (`URI:MF-LIT:`, see `caps`), as Tahoe's
//! literal capabilities do, which spares each small upload a file creation
//! and two fsyncs.
//!
//! `<si>` is a storage index: a 32-byte tagged hash of the object's key (or,
//! for mutable directories, of the verifying key), in base32. It reveals
//! nothing about the key or the contents. A copy of the grid directory shows
//! only how many objects there are, their sizes, and how often each mutable
//! directory changed: contents, names, metadata and the shape of the
//! directory tree are all encrypted. See the `immutable` and `mutable`
//! modules for the object formats and why they are shaped the way they are.
//!
//! # Threads
//!
//! Every operation runs as one blocking task on tokio's blocking pool
//! (`tokio::fs` would hop threads per system call). Downloads are decrypted
//! chunk by chunk on a blocking thread and handed to the caller through a
//! small bounded channel, so memory stays flat whatever the file size.

mod caps;
pub use caps::LITERAL_MAX;
mod crypto;
mod dirnode;
mod immutable;
mod mutable;
mod store;
mod upkeep;

pub use upkeep::{Collected, Repair, StoredObject};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;

use self::caps::EmbeddedCap;
use self::crypto::{Key32, ObjectKind};
use self::immutable::{Existing, ObjectReader, Stored};
use self::store::Store;
use crate::{
    CapKind, Capability, DirChildren, Download, Grid, GridError, GridResult, Listed, Replace,
    Revision, UploadSource,
};

/// Default plaintext bytes per encrypted chunk: large enough that per-chunk
/// costs (a tag, a system call, a channel hop) vanish, small enough that a
/// download in flight holds well under a few MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;

/// Decrypted chunks read ahead of the consumer.
const DOWNLOAD_QUEUE: usize = 4;

/// Largest immutable directory read into memory.
const MAX_DIR_LEN: u64 = 256 << 20;

/// Writers in one process serialise per directory (by storage-index stripe):
/// they would only make each other retry, since at most one racer can win.
const WRITE_STRIPES: usize = 64;

/// A handle on an embedded grid directory. Cheap to clone; clones share
/// state. See the [module documentation](self) for what is stored where.
#[derive(Clone)]
pub struct EmbeddedGrid {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    convergence_secret: Key32,
    chunk_size: u32,
    write_stripes: Vec<tokio::sync::Mutex<()>>,
    /// Where mutable directories are listed and updated (started on first
    /// use; `None` if it could not be).
    dirs: std::sync::OnceLock<Option<DirThread>>,
}

impl std::fmt::Debug for EmbeddedGrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the convergence secret.
        f.debug_struct("EmbeddedGrid")
            .field("root", &self.inner.store.root())
            .field("chunk_size", &self.inner.chunk_size)
            .finish_non_exhaustive()
    }
}

impl EmbeddedGrid {
    /// Opens the grid at `dir`, first creating the directory and its layout
    /// if they do not exist yet. Idempotent; safe to call from several
    /// processes at once. Does a little blocking I/O.
    ///
    /// `convergence_secret` is the folder's secret (see the module docs).
    pub fn create(dir: impl AsRef<Path>, convergence_secret: [u8; 32]) -> GridResult<EmbeddedGrid> {
        Ok(Self::with_store(
            Store::create(dir.as_ref())?,
            convergence_secret,
        ))
    }

    /// Opens an existing grid at `dir`; fails if it is not an embedded grid
    /// (or one of a format version this program does not understand). Does
    /// a little blocking I/O, including removing temporary files that
    /// crashed writers left behind more than an hour ago.
    pub fn open(dir: impl AsRef<Path>, convergence_secret: [u8; 32]) -> GridResult<EmbeddedGrid> {
        Ok(Self::with_store(
            Store::open(dir.as_ref())?,
            convergence_secret,
        ))
    }

    fn with_store(store: Store, convergence_secret: Key32) -> EmbeddedGrid {
        EmbeddedGrid {
            inner: Arc::new(Inner {
                store,
                convergence_secret,
                chunk_size: DEFAULT_CHUNK_SIZE,
                write_stripes: (0..WRITE_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                dirs: Default::default(),
            }),
        }
    }

    /// A fresh random convergence secret for a new folder.
    pub fn generate_convergence_secret() -> GridResult<[u8; 32]> {
        crypto::random_bytes().map_err(store::io_err("generating a convergence secret"))
    }

    /// Uses `chunk_size` bytes per chunk for new uploads (readers accept any
    /// size from 16 bytes to 16 MiB). The chunk size is part of the
    /// convergent key, so participants of one folder must agree on it or
    /// lose deduplication. Meant for tests (tiny chunks exercise boundaries)
    /// and benchmarks; everyone else keeps [`DEFAULT_CHUNK_SIZE`].
    pub fn with_chunk_size(self, chunk_size: u32) -> GridResult<EmbeddedGrid> {
        if !(immutable::MIN_CHUNK_SIZE..=immutable::MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(GridError::Protocol(format!(
                "chunk size {chunk_size} is out of range"
            )));
        }
        let inner = Inner {
            store: self.inner.store.clone(),
            convergence_secret: self.inner.convergence_secret,
            chunk_size,
            write_stripes: (0..WRITE_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            dirs: Default::default(),
        };
        Ok(EmbeddedGrid {
            inner: Arc::new(inner),
        })
    }

    /// The grid's directory.
    pub fn root(&self) -> &Path {
        self.inner.store.root()
    }

    /// Where the stored object behind an immutable file or directory
    /// capability lives, for tests and tools that inspect the store (e.g. to
    /// damage it on purpose). `None` for other capabilities.
    pub fn object_path(&self, cap: &Capability) -> Option<PathBuf> {
        match caps::parse(cap).ok()? {
            EmbeddedCap::Immutable { key, .. } => Some(
                self.inner
                    .store
                    .object_path(&crypto::chk_storage_index(&key)),
            ),
            _ => None,
        }
    }

    /// The directory holding a mutable directory's versions (for tests and
    /// tools). `None` for capabilities that are not mutable directories.
    pub fn mutable_dir_path(&self, cap: &Capability) -> Option<PathBuf> {
        mutable_dir_in(&self.inner.store, cap)
    }

    /// [`EmbeddedGrid::mutable_dir_path`] in the grid at `grid_dir`, without
    /// opening it (e.g. to tell which directory a filesystem event is about).
    pub fn mutable_dir_path_in(grid_dir: &Path, cap: &Capability) -> Option<PathBuf> {
        mutable_dir_in(&Store::paths(grid_dir), cap)
    }

    fn stripe(&self, si: &Key32) -> &tokio::sync::Mutex<()> {
        &self.inner.write_stripes[usize::from(si[0]) % WRITE_STRIPES]
    }

    async fn upload_kind(
        &self,
        kind: ObjectKind,
        source: UploadSource,
        existing: Existing,
    ) -> GridResult<(Key32, u64, Stored)> {
        let inner = self.inner.clone();
        blocking("upload", move || {
            immutable::upload(
                &inner.store,
                &inner.convergence_secret,
                inner.chunk_size,
                kind,
                &source,
                existing,
            )
        })
        .await
    }

    async fn modify(
        &self,
        dir: &Capability,
        mut change: impl FnMut(&mut DirChildren) -> GridResult<bool> + Send + 'static,
    ) -> GridResult<()> {
        let keys = match caps::parse(dir)? {
            EmbeddedCap::DirWrite(keys) => keys,
            _ => return Err(wrong_kind("a mutable directory write capability", dir)),
        };
        let si = keys.read.storage_index;
        let _serialised = self.stripe(&si).lock().await;
        let inner = self.inner.clone();
        self.on_dir_thread("directory update", move || {
            Ok(mutable::modify(&inner.store, &keys, &mut change))
        })
        .await?
    }
}

fn wrong_kind(expected: &'static str, cap: &Capability) -> GridError {
    GridError::WrongKind {
        expected,
        got: cap.kind(),
    }
}

/// The thread that lists and updates mutable directories.
///
/// Both hold a whole directory in memory several times over (raw version,
/// plaintext, parsed children, and for an update the new plaintext and
/// version): ~100 MB for 100,000 entries. On tokio's blocking pool each
/// operation lands on whichever thread is free, and glibc gives threads
/// their own heaps (arenas, up to 8 per core), so every arena ended up
/// keeping a directory's worth of freed memory: a daemon syncing 100,000
/// files grew to 1.5 GB resident. On one thread that memory is reused.
struct DirThread {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

impl DirThread {
    /// Starts the thread; it ends when the last handle on the grid goes.
    fn start() -> Option<DirThread> {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("mf-grid-dirs".into())
            .spawn(move || {
                for job in rx {
                    // A panic is reported to the caller (its reply is
                    // dropped); the thread goes on with the next job.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .ok()?;
        Some(DirThread {
            jobs: std::sync::Mutex::new(tx),
        })
    }
}

impl EmbeddedGrid {
    /// Runs a mutable-directory operation on the directory thread (or on
    /// the blocking pool if that thread could not be started).
    async fn on_dir_thread<T: Send + 'static>(
        &self,
        what: &str,
        op: impl FnOnce() -> GridResult<T> + Send + 'static,
    ) -> GridResult<T> {
        let Some(thread) = self.inner.dirs.get_or_init(DirThread::start) else {
            return blocking(what, op).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = tx.send(op());
        });
        let sent = thread
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job);
        let failed = || GridError::Io {
            context: format!("embedded grid: {what} task failed"),
            source: std::io::Error::other("the directory thread stopped"),
        };
        sent.map_err(|_| failed())?;
        rx.await.map_err(|_| failed())?
    }
}

/// Runs one whole blocking operation on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    what: &str,
    op: impl FnOnce() -> GridResult<T> + Send + 'static,
) -> GridResult<T> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| GridError::Io {
            context: format!("embedded grid: {what} task failed"),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// Derives the read-only capability of an embedded mutable directory from
/// its write capability, without I/O. Read capabilities (and immutable ones)
/// are returned as they are, after checking they are well-formed; a
/// malformed or foreign capability is [`GridError::BadCap`].
pub fn read_only(cap: &Capability) -> GridResult<Capability> {
    match caps::parse(cap)? {
        EmbeddedCap::DirWrite(keys) => Ok(caps::dir_read(&keys.read)),
        EmbeddedCap::DirRead(_) | EmbeddedCap::Immutable { .. } | EmbeddedCap::Literal(_) => {
            Ok(cap.clone())
        }
    }
}

impl Grid for EmbeddedGrid {
    /// A small file (most snapshot metadata among them) comes back as a
    /// literal capability, with nothing stored: each stored object costs a
    /// file creation and two fsyncs, the bulk of a small file's upload.
    async fn upload(&self, source: UploadSource) -> GridResult<Capability> {
        if let Some(content) = source.small_content(caps::LITERAL_MAX).await? {
            return Ok(caps::literal(&content));
        }
        let (key, size, _) = self
            .upload_kind(ObjectKind::File, source, Existing::Keep)
            .await?;
        Ok(caps::immutable(false, &key, size))
    }

    async fn download(&self, cap: &Capability) -> GridResult<Download> {
        let (key, size) = match caps::parse(cap)? {
            EmbeddedCap::Immutable {
                dir: false,
                key,
                size,
            } => (key, size),
            EmbeddedCap::Literal(content) => {
                let size = content.len() as u64;
                let chunks = (size > 0).then(|| Ok(bytes::Bytes::from(content)));
                return Ok(Download {
                    size,
                    stream: futures_util::stream::iter(chunks).boxed(),
                });
            }
            _ => return Err(wrong_kind("an immutable file capability", cap)),
        };
        let inner = self.inner.clone();
        let reader = blocking("download", move || {
            ObjectReader::open(&inner.store, &key, ObjectKind::File, size)
        })
        .await?;
        let size = reader.size();
        let stream = crate::blocking::stream(reader, DOWNLOAD_QUEUE, |reader| loop {
            match reader.next_chunk()? {
                Ok(chunk) if chunk.is_empty() => continue,
                chunk => return Some(chunk.map(bytes::Bytes::from)),
            }
        });
        Ok(Download {
            size,
            stream: stream.boxed(),
        })
    }

    async fn create_immutable_dir(&self, children: DirChildren) -> GridResult<Capability> {
        let bytes = dirnode::encode_immutable(&children)?;
        let (key, size, _) = self
            .upload_kind(
                ObjectKind::Dir,
                UploadSource::Bytes(bytes.into()),
                Existing::Keep,
            )
            .await?;
        Ok(caps::immutable(true, &key, size))
    }

    async fn create_mutable_dir(&self) -> GridResult<Capability> {
        let inner = self.inner.clone();
        let seed = blocking("directory creation", move || mutable::create(&inner.store)).await?;
        Ok(caps::dir_write(&seed))
    }

    async fn list_changed(
        &self,
        dir: &Capability,
        known: Option<&Revision>,
    ) -> GridResult<Option<Listed>> {
        let inner = self.inner.clone();
        let (read, writecap_key) = match caps::parse(dir)? {
            EmbeddedCap::DirWrite(keys) => {
                let keys = *keys;
                (keys.read, Some(keys.child_writecap_key))
            }
            EmbeddedCap::DirRead(keys) => (*keys, None),
            EmbeddedCap::Immutable {
                dir: true,
                key,
                size,
            } => {
                // Immutable: the capability names the one listing there is.
                let revision = Revision::digest(&[dir.as_str().as_bytes()]);
                if known == Some(&revision) {
                    return Ok(None);
                }
                let children = blocking("listing", move || {
                    let name = caps::short_name("dir", &crypto::chk_storage_index(&key));
                    if size > MAX_DIR_LEN {
                        return Err(GridError::Protocol(format!(
                            "directory {name} is too large ({size} bytes)"
                        )));
                    }
                    let bytes = ObjectReader::open(&inner.store, &key, ObjectKind::Dir, size)?
                        .read_all()?;
                    dirnode::decode(&bytes, None, &name)
                })
                .await?;
                return Ok(Some(Listed::clean(revision, children)));
            }
            EmbeddedCap::Immutable { dir: false, .. } | EmbeddedCap::Literal(_) => {
                return Err(GridError::WrongKind {
                    expected: "a directory capability",
                    got: CapKind::ImmutableFile,
                })
            }
        };
        let known = known.copied();
        self.on_dir_thread("listing", move || {
            mutable::list_changed(&inner.store, &read, writecap_key.as_ref(), known.as_ref())
        })
        .await
    }

    async fn set_children(
        &self,
        dir: &Capability,
        children: DirChildren,
        replace: Replace,
    ) -> GridResult<()> {
        self.modify(dir, move |current| {
            if replace == Replace::No {
                if let Some(name) = children.keys().find(|n| current.contains_key(*n)) {
                    return Err(GridError::Exists(name.clone()));
                }
            }
            let mut changed = false;
            for (name, entry) in &children {
                if current.get(name) != Some(entry) {
                    current.insert(name.clone(), entry.clone());
                    changed = true;
                }
            }
            Ok(changed)
        })
        .await
    }

    async fn unlink(&self, dir: &Capability, name: &str) -> GridResult<()> {
        let name = name.to_string();
        self.modify(dir, move |current| match current.remove(&name) {
            Some(_) => Ok(true),
            None => Err(GridError::NoChild(name.clone())),
        })
        .await
    }
}

/// Where `store` keeps the versions of the mutable directory `cap` names.
fn mutable_dir_in(store: &Store, cap: &Capability) -> Option<PathBuf> {
    match caps::parse(cap).ok()? {
        EmbeddedCap::DirWrite(keys) => Some(store.mutable_dir(&keys.read.storage_index)),
        EmbeddedCap::DirRead(keys) => Some(store.mutable_dir(&keys.storage_index)),
        EmbeddedCap::Immutable { .. } | EmbeddedCap::Literal(_) => None,
    }
}
