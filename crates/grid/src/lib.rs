//! The `Grid`: an end-to-end encrypted, capability-based object store modelled
//! on Tahoe-LAFS, and its backends.
//!
//! Magic Folder stores every version of every file on a grid. The grid offers
//! four kinds of object, each named by a [`Capability`]:
//!
//! * **immutable files** — uploaded once, named by a capability that is both
//!   the address and the decryption key; uploads are *convergent* (the same
//!   bytes under the same convergence secret give the same capability);
//! * **immutable directories** — a fixed map of name → (child capability,
//!   metadata JSON);
//! * **mutable directories** — the same map, changeable only by the holder of
//!   the write capability; anyone holding the read-only capability (derived
//!   one-way from the write one) can list it;
//! * nothing else: there are no mutable files, because Magic Folder does not
//!   need them.
//!
//! The [`Grid`] trait is the seam the rest of the program is written against.
//! Two backends implement it:
//!
//! * [`embedded::EmbeddedGrid`] — a directory of encrypted, tamper-evident
//!   objects that this program manages itself (the default: no server);
//! * [`tahoe::TahoeGrid`] — a Tahoe-LAFS node's web API.
//!
//! Every operation is async; file contents stream in both directions so memory
//! stays flat whatever the file size.

#![warn(missing_docs)]

pub mod blocking;
pub mod cap;
pub mod contract;
pub mod embedded;
pub mod tahoe;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

pub use cap::{CapError, CapKind, Capability, Scheme};

/// A directory's contents: child name → entry. Names are arbitrary UTF-8
/// strings without `/`; ordering is by name so listings are deterministic.
pub type DirChildren = BTreeMap<String, DirEntry>;

/// One state of a directory's listing, from [`Grid::list_changed`]: two
/// listings of one capability with equal revisions are equal. (A changed
/// listing always gets a new revision; an unchanged one may too.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Revision([u8; 32]);

impl Revision {
    /// The revision that is a digest of `parts` (SHA-256, each part
    /// length-prefixed so no two lists of parts collide).
    pub fn digest(parts: &[&[u8]]) -> Revision {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in parts {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Revision(h.finalize().into())
    }
}

/// A listing from [`Grid::list_changed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The revision of this listing.
    pub revision: Revision,
    /// The children.
    pub children: DirChildren,
    /// What this listing had to leave out or work around, each naming the
    /// entry or version, for the user to see: children of a kind this
    /// program cannot represent (left untouched on the grid), a damaged
    /// newest version of the directory read from an older one.
    pub problems: Vec<String>,
}

impl Listed {
    /// A listing with nothing to report.
    pub fn clean(revision: Revision, children: DirChildren) -> Listed {
        Listed {
            revision,
            children,
            problems: Vec::new(),
        }
    }
}

/// One child of a directory: its capability and the metadata JSON object on
/// the edge that leads to it (as in Tahoe, metadata belongs to the entry, not
/// to the child).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The child's capability.
    pub cap: Capability,
    /// Metadata on the edge: a JSON object (`{}` when there is none).
    pub metadata: serde_json::Value,
}

impl DirEntry {
    /// An entry with empty metadata.
    pub fn new(cap: Capability) -> DirEntry {
        DirEntry {
            cap,
            metadata: serde_json::Value::Object(Default::default()),
        }
    }
}

/// How far an upload is: the grid counts the work it has done of the work
/// it will do (a backend that reads the source twice counts both reads).
/// Cheap to clone; clones share the counts. For status, never for logic.
#[derive(Clone, Debug, Default)]
pub struct Progress(std::sync::Arc<(AtomicU64, AtomicU64)>);

impl Progress {
    /// A new, empty progress.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// The fraction done, from 0 to 1 (0 until the grid says how much
    /// there is to do).
    pub fn fraction(&self) -> f64 {
        let total = self.0 .1.load(Ordering::Relaxed);
        if total == 0 {
            return 0.0;
        }
        (self.0 .0.load(Ordering::Relaxed) as f64 / total as f64).min(1.0)
    }

    /// Says how much work there is in all.
    pub fn set_total(&self, total: u64) {
        self.0 .1.store(total, Ordering::Relaxed);
    }

    /// Counts `n` more units of work done.
    pub fn add(&self, n: u64) {
        self.0 .0.fetch_add(n, Ordering::Relaxed);
    }
}

/// What to upload as an immutable file.
///
/// A file is named by path rather than handed over as a one-shot reader
/// because convergent encryption reads the content twice (once to derive the
/// key, once to encrypt — Tahoe's node does the same internally); the second
/// read is also how a file that changed during the upload is caught.
#[derive(Clone, Debug)]
pub enum UploadSource {
    /// Bytes already in memory (small objects such as snapshot metadata).
    Bytes(bytes::Bytes),
    /// A local file, streamed from disk.
    File(PathBuf),
    /// A local file, streamed from disk, with its progress counted.
    TrackedFile(PathBuf, Progress),
}

impl UploadSource {
    /// The file to read, and its progress if tracked.
    pub(crate) fn file(&self) -> Option<(&std::path::Path, Option<&Progress>)> {
        match self {
            UploadSource::Bytes(_) => None,
            UploadSource::File(p) => Some((p, None)),
            UploadSource::TrackedFile(p, pr) => Some((p, Some(pr))),
        }
    }

    /// The whole content if it is at most `max` bytes (small enough for a
    /// grid to carry in a literal capability), else `None`.
    pub(crate) async fn small_content(&self, max: usize) -> GridResult<Option<Vec<u8>>> {
        let Some((path, progress)) = self.file() else {
            let UploadSource::Bytes(bytes) = self else {
                unreachable!("every source but bytes is a file")
            };
            return Ok((bytes.len() <= max).then(|| bytes.to_vec()));
        };
        let (path, progress) = (path.to_path_buf(), progress.cloned());
        let read = tokio::task::spawn_blocking(move || {
            let mut content = Vec::new();
            std::fs::File::open(&path)
                .and_then(|f| {
                    let mut head = std::io::Read::take(f, max as u64 + 1);
                    std::io::Read::read_to_end(&mut head, &mut content)
                })
                .map_err(|source| GridError::Io {
                    context: format!("reading {}", path.display()),
                    source,
                })?;
            if content.len() > max {
                return Ok(None);
            }
            if let Some(p) = progress {
                p.add(content.len() as u64);
            }
            Ok(Some(content))
        })
        .await;
        read.map_err(|e| GridError::Io {
            context: "reading an upload's source: the task failed".into(),
            source: std::io::Error::other(e.to_string()),
        })?
    }
}

/// A download in progress: its size and a stream of its bytes, chunk by chunk.
pub struct Download {
    /// Plaintext size in bytes, known before the first chunk arrives.
    pub size: u64,
    /// The content. Every chunk has been authenticated before it is yielded; a
    /// tampered chunk ends the stream with [`GridError::Integrity`].
    pub stream: ByteStream,
}

/// A stream of byte chunks from the grid.
pub type ByteStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, GridError>> + Send>>;

/// Whether `set_children` may replace an existing child of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    /// Existing children of the same name are overwritten.
    Yes,
    /// The whole write fails with [`GridError::Exists`] if any name exists.
    No,
}

/// Everything that can go wrong talking to a grid, classified by what the
/// caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    /// The capability string is not well-formed, or is for another grid.
    #[error(transparent)]
    BadCap(#[from] CapError),
    /// The operation needs a different kind of capability (e.g. a write cap).
    #[error("wrong kind of capability: expected {expected}, got {got:?}")]
    WrongKind {
        /// What the operation needs.
        expected: &'static str,
        /// What it was given.
        got: CapKind,
    },
    /// The object does not exist (or is not reachable with enough shares).
    #[error("no such object: {0}")]
    NotFound(String),
    /// A named child does not exist in the directory.
    #[error("no child named {0:?}")]
    NoChild(String),
    /// A child exists and replacement was not allowed.
    #[error("child {0:?} already exists")]
    Exists(String),
    /// Stored data failed authentication: flipped, truncated or swapped bytes.
    #[error("integrity check failed for {cap}: {detail}")]
    Integrity {
        /// A short, non-secret name for the object.
        cap: String,
        /// What did not check out.
        detail: String,
    },
    /// A file being uploaded changed while it was read; nothing was published.
    #[error("{0} changed while it was being read")]
    SourceChanged(PathBuf),
    /// The grid is temporarily unable to serve (servers away, timeouts,
    /// uncoordinated write). Retrying later may succeed.
    #[error("grid unavailable: {0}")]
    Unavailable(String),
    /// Local I/O failed (reading the source, writing the embedded store).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The grid answered something this program does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl GridError {
    /// True when retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            GridError::Unavailable(_) => true,
            GridError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> GridError {
        GridError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for grid results.
pub type GridResult<T> = Result<T, GridError>;

/// The capability store Magic Folder is written against.
///
/// Implementations must be safe to share between tasks (`Send + Sync`) and
/// every returned future must be `Send`, so the daemon can run independent
/// operations in parallel.
pub trait Grid: Send + Sync + 'static {
    /// Uploads an immutable file and returns its capability. Convergent: the
    /// same content under the same convergence secret gives the same cap.
    fn upload(&self, source: UploadSource) -> impl Future<Output = GridResult<Capability>> + Send;

    /// Starts downloading an immutable file. The bytes stream; nothing is
    /// buffered whole.
    fn download(&self, cap: &Capability) -> impl Future<Output = GridResult<Download>> + Send;

    /// Creates an immutable directory holding exactly `children`.
    fn create_immutable_dir(
        &self,
        children: DirChildren,
    ) -> impl Future<Output = GridResult<Capability>> + Send;

    /// Creates an empty mutable directory and returns its write capability.
    fn create_mutable_dir(&self) -> impl Future<Output = GridResult<Capability>> + Send;

    /// Lists a directory (any kind of directory capability).
    fn list(&self, dir: &Capability) -> impl Future<Output = GridResult<DirChildren>> + Send {
        async move {
            match self.list_changed(dir, None).await? {
                Some(listed) => Ok(listed.children),
                None => Err(GridError::Protocol(
                    "a first listing came back as unchanged".into(),
                )),
            }
        }
    }

    /// Lists a directory with the [`Revision`] of that listing, or returns
    /// `None` if it is still at revision `known` (from an earlier call for
    /// the same capability). Polling asks this every few seconds of every
    /// participant's directory, which has usually not changed: a backend
    /// answers `None` as cheaply as it can (the embedded grid without
    /// reading the directory at all).
    fn list_changed(
        &self,
        dir: &Capability,
        known: Option<&Revision>,
    ) -> impl Future<Output = GridResult<Option<Listed>>> + Send;

    /// Sets many children of a mutable directory in one write. Concurrent
    /// writers never lose each other's updates. With [`Replace::No`] the whole
    /// write fails if any name already exists, and nothing is changed.
    fn set_children(
        &self,
        dir: &Capability,
        children: DirChildren,
        replace: Replace,
    ) -> impl Future<Output = GridResult<()>> + Send;

    /// Removes one child of a mutable directory ([`GridError::NoChild`] if absent).
    fn unlink(&self, dir: &Capability, name: &str) -> impl Future<Output = GridResult<()>> + Send;
}

/// Derives the read-only capability of a mutable directory from its write
/// capability, without any I/O. Read capabilities are returned unchanged.
pub fn read_only(cap: &Capability) -> GridResult<Capability> {
    match (cap.scheme(), cap.kind()) {
        (_, CapKind::MutableDirRead | CapKind::ImmutableDir | CapKind::ImmutableFile) => {
            Ok(cap.clone())
        }
        (Some(Scheme::Embedded), CapKind::MutableDirWrite) => embedded::read_only(cap),
        (Some(Scheme::Tahoe), CapKind::MutableDirWrite) => tahoe::read_only(cap),
        _ => Err(GridError::WrongKind {
            expected: "a directory or file capability",
            got: cap.kind(),
        }),
    }
}

/// Reads a whole (small) download into memory, refusing anything over `limit`
/// bytes. For metadata and directory blobs, never for user files.
pub async fn read_small(download: Download, limit: u64) -> GridResult<Vec<u8>> {
    use futures_util::StreamExt;
    if download.size > limit {
        return Err(GridError::Protocol(format!(
            "object of {} bytes where at most {limit} were expected",
            download.size
        )));
    }
    let mut out = Vec::with_capacity(download.size as usize);
    let mut stream = download.stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
        if out.len() as u64 > download.size {
            return Err(GridError::Protocol("object larger than it said".into()));
        }
    }
    // A stream that ends early (its reader failed) is not the object.
    if out.len() as u64 != download.size {
        return Err(GridError::Protocol(format!(
            "object of {} bytes ended after {}",
            download.size,
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn download(size: u64, chunks: &[&'static [u8]]) -> Download {
        let chunks: Vec<GridResult<bytes::Bytes>> = chunks
            .iter()
            .map(|c| Ok(bytes::Bytes::from_static(c)))
            .collect();
        Download {
            size,
            stream: Box::pin(futures_util::stream::iter(chunks)),
        }
    }

    #[tokio::test]
    async fn a_small_read_is_exactly_the_size_announced() {
        assert_eq!(
            read_small(download(5, &[b"he", b"llo"]), 100)
                .await
                .unwrap(),
            b"hello"
        );
        // Ended early (a reader that failed), or longer than announced.
        assert!(read_small(download(5, &[b"he"]), 100).await.is_err());
        assert!(read_small(download(2, &[b"he", b"llo"]), 100)
            .await
            .is_err());
        assert!(read_small(download(500, &[]), 100).await.is_err());
    }
}
