//! The executor: carries out the engine's [`Action`]s against a real grid and
//! the real folder, and reports each result as the matching [`Event`].
//!
//! The engine is sans-IO; this is where its requests meet the world. The
//! contract of every effect is written on the `Action` variants in
//! `mf_core::engine`; this module implements exactly that and nothing more:
//!
//! * every action yields its event — errors become error values
//!   ([`EffectError`], `transient` when a retry later can help, from
//!   [`GridError::is_transient`] and [`fsops::is_transient`]), never panics;
//! * everything remote is distrusted: names in personal directories are
//!   decoded with the checked mangling and unsafe ones rejected, snapshots are
//!   signature-checked and must be versions of the path that listed them, and
//!   nothing is written outside the folder or through a symlink;
//! * file contents stream in both directions (uploads read the file from
//!   disk, downloads are piped chunk by chunk into a temporary file on a
//!   blocking thread), so memory stays flat whatever the file size.
//!
//! Independent actions may run concurrently: share the executor in an `Arc`
//! and call [`Executor::execute`] from as many tasks as needed; every method
//! takes `&self`.

use crate::chunked::{Chunking, ContentFormat};
use crate::pack::{MemberParts, PackCache, Packer, SnapshotRef, Snapshots};
use crate::personal::{self, Layout, METADATA_ENTRY};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::warn;

use anyhow::bail;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use mf_core::engine::{
    Action, DeclaredAuthor, EffectError, EntryShape, Event, PublishEntry, RemoteListing,
    UploadOutcome, WriteOutcome,
};
use mf_core::relpath::{check_participant_name, RelPath};
use mf_core::snapshot::{
    parse_entry_name, signature_edge_metadata, signature_from_edge, verify_snapshot, Author, Cap,
    Content, Listing, SnapshotInfo,
};
use mf_core::store::LocalState;
use mf_grid::{
    read_small, CapKind, Capability, DirChildren, DirEntry, Download, Grid, GridError, Progress,
    Replace, Revision, UploadSource,
};

mod aside;
mod content;
mod poll;
mod publish;

pub use aside::{with_aside, PersonalDir};

use crate::fsops::{self, TempFile};
use crate::ignore::IgnoreRules;
use crate::scan;
use crate::transfers::Transfers;
use crate::watch::SettledFiles;

/// Largest snapshot metadata document accepted, in bytes.
pub const METADATA_LIMIT: u64 = 64 * 1024;

/// How many personal directories a poll lists at once.
pub const POLL_PARALLELISM: usize = 8;

/// Pieces buffered between a download and the writes to disk.
const WRITE_PIPELINE_DEPTH: usize = 4;

/// Bytes after which a download's writer stops adding pieces to one
/// blocking write (a batch ends with the piece that reaches it): a stream
/// of small pieces (Tahoe's HTTP body) is written in batches, a large
/// file's 1 MiB chunks one by one.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// Downloads up to this size are received whole before they are written
/// (in one step); larger ones stream to disk as they arrive.
const WHOLE_WRITE_LIMIT: u64 = 256 * 1024;

/// Everything an [`Executor`] needs to know about its folder.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// The folder root on local disk.
    pub root: PathBuf,
    /// Our signing identity.
    pub author: Author,
    /// Our participant name in the collective (skipped when polling).
    pub participant: String,
    /// The collective directory (read or write capability).
    pub collective: Capability,
    /// Our personal directory: its **write** capability.
    pub personal: Capability,
    /// Permission bits masked off files and directories we create
    /// ([`fsops::DEFAULT_UMASK`] = owner-only).
    pub umask: u32,
    /// The folder's ignore rules (remote entries they match are not offered
    /// to the engine, so ignored paths are neither uploaded nor downloaded).
    pub ignore: IgnoreRules,
    /// How long a file must have been left alone before an upload reads it
    /// (the folder's pending delay; see `Action::Upload`).
    pub quiet: Duration,
    /// How the folder's personal directories are laid out.
    pub layout: Layout,
    /// How the folder stores file contents.
    pub content: ContentFormat,
    /// How large files are chunked on this grid (in folders that chunk).
    pub chunking: Chunking,
    /// How the folder stores its snapshots.
    pub snapshots: Snapshots,
    /// Most transfers (a content's upload or download, a snapshot's
    /// listing) at once, whatever the number of effects running: packed
    /// folders run many effects at once, most of which cost the grid
    /// nothing (their snapshots share a pack, their contents are literal).
    pub transfers: usize,
}

/// Most literal contents written at once. A literal's bytes are in its
/// capability, so its write waits for no transfer; but a packed folder runs
/// hundreds of effects at once (`folder::MAX_IN_FLIGHT_PACKED`), and each
/// write holds its file's bytes while it waits for the blocking pool
/// (`memory::BLOCKING_THREADS`, which writes no faster with more waiting).
/// A reader's bursts of hundreds of small writes showed in its peak memory
/// on Tahoe (BENCHMARKS.md, 2026-12-07).
const LITERAL_WRITES_AT_ONCE: usize = 2 * crate::memory::BLOCKING_THREADS;

/// Carries out [`Action`]s for one folder. Cheap to share: wrap it in an
/// `Arc`; all methods take `&self`.
pub struct Executor<G: Grid> {
    grid: Arc<G>,
    root: PathBuf,
    author: Author,
    participant: String,
    collective: Capability,
    personal: Capability,
    /// Our personal directory's read capability, when derivable, to
    /// recognise ourselves in the collective under any name.
    own_read: Option<Capability>,
    umask: u32,
    quiet: Duration,
    ignore: RwLock<Arc<IgnoreRules>>,
    layout: Layout,
    content: ContentFormat,
    chunking: Chunking,
    snapshots: Snapshots,
    /// Where our uploads meet to share a pack (packed folders).
    packer: Packer,
    /// The packs we listed last, for fetching their members.
    packs: PackCache,
    /// One permit per transfer running (see [`ExecutorConfig::transfers`]).
    transfer_slots: Arc<tokio::sync::Semaphore>,
    /// One permit per literal content being written (see
    /// [`LITERAL_WRITES_AT_ONCE`]).
    literal_writes: tokio::sync::Semaphore,
    /// The folder as the headers of its shards name it.
    folder_tag: String,
    /// Per participant, what the engine was last given of its directory
    /// (see [`Executor::poll`]).
    last_polled: Mutex<HashMap<String, poll::Polled>>,
    /// Personal directories whose owners moved: the directory the
    /// collective links → the one it names (see [`personal::MOVED_ENTRY`]).
    moved: Mutex<HashMap<Capability, Capability>>,
    /// The format the collective records, as the last poll read it.
    format: Mutex<poll::FormatWatch>,
    /// Sharded: our directory as last written; `None` until read at the
    /// first publish of a run, and after a write whose outcome is unknown.
    own_shards: Mutex<Option<publish::OwnShards>>,
    /// Held while publishing: each publish builds on the last.
    publishing: tokio::sync::Mutex<()>,
    /// Our entries kept aside under `@metadata` (see [`Executor::publish`])
    /// as last written; `None` until read at the first publish of a run,
    /// and after a write whose outcome is unknown.
    aside: Mutex<Option<DirChildren>>,
    /// Uploads and downloads in progress.
    transfers: Transfers,
    /// Files the watcher saw their writer finish with: no quiet wait.
    settled: SettledFiles,
}

impl<G: Grid> std::fmt::Debug for Executor<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("root", &self.root)
            .field("participant", &self.participant)
            .finish_non_exhaustive()
    }
}

impl<G: Grid> Executor<G> {
    /// An executor for one folder. Fails if the personal capability is not a
    /// mutable directory's write capability, the collective is not a
    /// directory, or the participant name is not acceptable.
    pub fn new(grid: Arc<G>, config: ExecutorConfig) -> anyhow::Result<Executor<G>> {
        if config.personal.kind() != CapKind::MutableDirWrite {
            bail!(
                "the personal directory capability must be a mutable directory's write capability"
            );
        }
        if !config.collective.kind().is_dir() {
            bail!("the collective capability is not a directory capability");
        }
        check_participant_name(&config.participant).map_err(anyhow::Error::msg)?;
        let own_read = mf_grid::read_only(&config.personal).ok();
        let transfer_slots = Arc::new(tokio::sync::Semaphore::new(config.transfers.max(1)));
        let folder_tag = personal::folder_tag(&config.collective)?;
        Ok(Executor {
            grid,
            root: config.root,
            author: config.author,
            participant: config.participant,
            collective: config.collective,
            personal: config.personal,
            own_read,
            umask: config.umask,
            quiet: config.quiet,
            ignore: RwLock::new(Arc::new(config.ignore)),
            layout: config.layout,
            content: config.content,
            chunking: config.chunking,
            snapshots: config.snapshots,
            packer: Packer::default(),
            packs: PackCache::with_slots(transfer_slots.clone()),
            transfer_slots,
            literal_writes: tokio::sync::Semaphore::new(LITERAL_WRITES_AT_ONCE),
            folder_tag,
            last_polled: Mutex::new(HashMap::new()),
            moved: Mutex::new(HashMap::new()),
            format: Mutex::new(poll::FormatWatch::default()),
            own_shards: Mutex::new(None),
            publishing: tokio::sync::Mutex::new(()),
            aside: Mutex::new(None),
            transfers: Transfers::default(),
            settled: SettledFiles::default(),
        })
    }

    /// Where the folder's watcher enters the files it saw settled (closed
    /// after writing, or renamed into place): uploading those does not wait
    /// for the quiet time.
    pub fn settled(&self) -> SettledFiles {
        self.settled.clone()
    }

    /// Uploads and downloads in progress.
    pub fn transfers(&self) -> &Transfers {
        &self.transfers
    }

    /// The folder root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Drops what the executor keeps only to serve work in flight (the
    /// packs it listed last, the files the watcher saw settled): for when
    /// the folder runs out of work.
    pub fn release_caches(&self) {
        self.packs.forget();
        self.settled.forget();
    }

    /// Replaces the ignore rules (after `.magic-folder-ignore` changed).
    pub fn set_ignore(&self, rules: IgnoreRules) {
        *self.ignore.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
        // Listings are filtered by the rules: give the engine fresh ones.
        self.last_polled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn rules(&self) -> Arc<IgnoreRules> {
        self.ignore
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Carries out one action and returns its event. Never fails: errors
    /// are reported inside the event.
    pub async fn execute(&self, action: Action) -> Event {
        match action {
            Action::Scan => Event::Scanned(self.scan().await),
            Action::Poll => Event::Polled(self.poll().await),
            Action::Fetch { cap, listed_as } => {
                let result = self.fetch(&cap, &listed_as).await;
                Event::Fetched { cap, result }
            }
            Action::Upload {
                op,
                path,
                local,
                parents,
                generation,
            } => {
                let result = self.upload(&path, local, &parents, generation).await;
                Event::Uploaded { op, result }
            }
            Action::Publish { op, entries } => {
                let started = std::time::Instant::now();
                let result = self.publish(entries).await;
                let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                Event::Published { op, result, took }
            }
            Action::Write {
                op,
                target,
                content,
                mtime_s,
                expect,
            } => {
                let result = self.write(&target, &content, mtime_s, expect).await;
                Event::Written { op, result }
            }
        }
    }

    async fn scan(&self) -> Result<scan::ScanReport, String> {
        let root = self.root.clone();
        let rules = self.rules();
        tokio::task::spawn_blocking(move || scan::scan(&root, &rules))
            .await
            .unwrap_or_else(|e| Err(format!("scan failed: {e}")))
    }

    // ----- Fetch --------------------------------------------------------

    async fn fetch(&self, cap: &Cap, listed_as: &RelPath) -> Result<SnapshotInfo, EffectError> {
        let bad = |why: &str| EffectError::permanent(format!("snapshot for {listed_as}: {why}"));
        let snapshot = SnapshotRef::parse(cap).map_err(|e| bad(&e))?;
        let children = self
            .packs
            .parts(&*self.grid, &snapshot)
            .await
            .map_err(|e| grid_error(&format!("cannot list the snapshot for {listed_as}"), e))?;
        let metadata = children.get("metadata").ok_or_else(|| bad("no metadata"))?;
        if metadata.cap.kind() != CapKind::ImmutableFile {
            return Err(bad("metadata is not an immutable file"));
        }
        // No content, or a `content` child without a capability (24.3's
        // deletion, and ours): the metadata says whether it is a deletion or
        // a directory.
        // A file's content is one immutable file, or a chunk list
        // (`crate::chunked`): an immutable directory.
        let content = match children.get("content") {
            Some(c) if matches!(c.cap.kind(), CapKind::ImmutableFile | CapKind::ImmutableDir) => {
                Some(Cap::from(c.cap.shared_text()))
            }
            Some(c) if c.cap.kind() == CapKind::Empty => None,
            Some(_) => return Err(bad("content is neither a file nor a chunk list")),
            None => None,
        };
        let signature =
            signature_from_edge(&metadata.metadata).ok_or_else(|| bad("no author signature"))?;
        let what = || format!("cannot download the metadata of the snapshot for {listed_as}");
        let download = self
            .grid
            .download(&metadata.cap)
            .await
            .map_err(|e| grid_error(&what(), e))?;
        let json = read_small(download, METADATA_LIMIT)
            .await
            .map_err(|e| grid_error(&what(), e))?;
        verify_snapshot(
            cap.clone(),
            content,
            metadata.cap.as_str(),
            &json,
            signature,
            Some(listed_as),
        )
        .map_err(|e| bad(&e.to_string()))
    }

    // ----- Upload -------------------------------------------------------

    async fn upload(
        &self,
        path: &RelPath,
        local: LocalState,
        parents: &[Cap],
        generation: u64,
    ) -> UploadOutcome {
        match self.try_upload(path, local, parents, generation).await {
            Ok(o) => o,
            Err(e) => UploadOutcome::Failed(e),
        }
    }

    /// The path's state now, for an upload. A symlink or special file there
    /// is a permanent failure (a scan reports it as skipped).
    async fn upload_state(&self, path: &RelPath) -> Result<LocalState, EffectError> {
        self.stat(path)
            .await
            .map_err(|e| io_error(&format!("cannot upload {path}"), &e))
    }

    async fn try_upload(
        &self,
        path: &RelPath,
        local: LocalState,
        parents: &[Cap],
        generation: u64,
    ) -> Result<UploadOutcome, EffectError> {
        if path.is_internal() {
            return Err(EffectError::permanent(format!(
                "{path} is an internal path or a conflict copy; it is never uploaded"
            )));
        }
        let parent_caps = parents.to_vec();
        let now = self.upload_state(path).await?;
        if now != local {
            return Ok(UploadOutcome::Changed(now));
        }
        if let LocalState::File(state) = local {
            let wait = if self.settled.take(path, state.ctime_ns) {
                Duration::ZERO
            } else {
                quiet_wait(state.ctime_ns, SystemTime::now(), self.quiet)
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
                let now = self.upload_state(path).await?;
                if now != local {
                    return Ok(UploadOutcome::Changed(now));
                }
            }
        }
        let (content, content_cap, mtime_s) = match local {
            LocalState::File(state) => {
                let (progress, _listed) = self.transfers.start(path, true, state.size);
                let uploaded = self
                    .upload_content(path, state.size, &parent_caps, progress)
                    .await;
                // The bit and the state from one lstat: a chmod moves the
                // ctime, so the check proves the bit belongs to the content
                // read.
                let (root, rel) = (self.root.clone(), path.clone());
                let (after, executable) = blocking(move || fsops::stat_executable(&root, &rel))
                    .await
                    .map_err(|e| io_error(&format!("cannot upload {path}"), &e))?;
                if after != local {
                    return Ok(UploadOutcome::Changed(after));
                }
                let cap = uploaded?;
                let content = Content::File {
                    cap: Cap::from(cap.shared_text()),
                    size: state.size,
                    executable,
                };
                (content, Some(cap), state.mtime_ns.div_euclid(1_000_000_000))
            }
            LocalState::Dir => (Content::Dir, None, now_secs()),
            LocalState::Absent => (Content::Deleted, None, now_secs()),
        };
        let mut metadata = self
            .author
            .metadata(path, &content, &parent_caps, mtime_s, generation);
        metadata.nonce = Some(attempt_nonce()?);
        let metadata_cap = self
            .grid
            .upload(UploadSource::Bytes(Bytes::from(metadata.to_json())))
            .await
            .map_err(|e| grid_error(&format!("cannot upload the metadata of {path}"), e))?;
        let signature = self.author.sign(
            content_cap.as_ref().map(|c| c.as_str()),
            metadata_cap.as_str(),
            path,
        );
        let cap = match self.snapshots {
            Snapshots::Single => {
                self.single_snapshot(path, content_cap, metadata_cap, &signature)
                    .await?
            }
            Snapshots::Packed => {
                let parts = MemberParts {
                    content: content_cap,
                    metadata: metadata_cap,
                    signature,
                };
                self.packer.add(&*self.grid, parts).await?
            }
        };
        Ok(UploadOutcome::Done(SnapshotInfo {
            cap,
            relpath: path.clone(),
            author: self.author.name.clone(),
            author_key: self.author.verify_key(),
            parents: parent_caps,
            content,
            mtime_s,
            generation,
        }))
    }

    /// Writes a snapshot's own directory (24.3's format).
    async fn single_snapshot(
        &self,
        path: &RelPath,
        content_cap: Option<Capability>,
        metadata_cap: Capability,
        signature: &str,
    ) -> Result<Cap, EffectError> {
        // A deletion's or directory's `content` names nothing, as 24.3
        // writes a deletion (24.3 reads a snapshot without `content` as an
        // error, on every poll).
        let mut children = DirChildren::new();
        children.insert(
            "content".to_owned(),
            DirEntry::new(content_cap.clone().unwrap_or_else(Capability::empty)),
        );
        children.insert(
            "metadata".to_owned(),
            DirEntry {
                cap: metadata_cap,
                metadata: signature_edge_metadata(signature),
            },
        );
        let snapshot = self
            .grid
            .create_immutable_dir(children)
            .await
            .map_err(|e| grid_error(&format!("cannot create the snapshot of {path}"), e))?;
        Ok(SnapshotRef::Own(snapshot).cap())
    }

    // ----- Write --------------------------------------------------------

    async fn write(
        &self,
        target: &RelPath,
        content: &Content,
        mtime_s: i64,
        expect: LocalState,
    ) -> WriteOutcome {
        if target.is_internal() && target.as_conflict_copy().is_none() {
            return WriteOutcome::Failed(EffectError::permanent(format!(
                "refusing to write {target}: an internal path"
            )));
        }
        let root = self.root.clone();
        let rel = target.clone();
        let umask = self.umask;
        let result = match content {
            Content::Dir => blocking(move || fsops::make_dir(&root, &rel, expect, umask)).await,
            Content::Deleted => blocking(move || fsops::delete(&root, &rel, expect)).await,
            Content::File {
                cap,
                size,
                executable,
            } => {
                return match self
                    .write_file(target, (cap, *size), (mtime_s, *executable), expect)
                    .await
                {
                    Ok(o) => o,
                    Err(e) => WriteOutcome::Failed(e),
                }
            }
        };
        match result {
            Ok(o) => o.into(),
            Err(e) => WriteOutcome::Failed(io_error(&format!("cannot write {target}"), &e)),
        }
    }

    /// Waits for a literal write's turn (see [`LITERAL_WRITES_AT_ONCE`]).
    async fn literal_write_slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.literal_writes
            .acquire()
            .await
            .expect("the literal-write semaphore is never closed")
    }

    /// Waits for a transfer's turn (see [`ExecutorConfig::transfers`]).
    async fn transfer_slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.transfer_slots
            .acquire()
            .await
            .expect("the transfer semaphore is never closed")
    }

    async fn stat(&self, path: &RelPath) -> io::Result<LocalState> {
        let root = self.root.clone();
        let rel = path.clone();
        blocking(move || fsops::stat(&root, &rel)).await
    }
}

/// A fresh random nonce for one upload attempt's metadata (see
/// `SnapshotMetadata::nonce`).
fn attempt_nonce() -> Result<String, EffectError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| EffectError::transient(format!("no randomness for an upload: {e}")))?;
    Ok(data_encoding::HEXLOWER.encode(&bytes))
}

/// How much longer to wait before a file whose last change (its ctime) was
/// at `ctime_ns` has been left alone for `quiet`. The ctime, not the mtime:
/// every write and every `utime` moves it, and no program can set it, so a
/// tool that restores old mtimes cannot make a file look settled. A ctime
/// in the future (the clock was set back) waits the whole quiet time: the
/// check after the wait then proves the file stayed unchanged that long.
fn quiet_wait(ctime_ns: i64, now: SystemTime, quiet: Duration) -> Duration {
    let now_ns = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    match u64::try_from(now_ns.saturating_sub(ctime_ns)) {
        Ok(age) => quiet.saturating_sub(Duration::from_nanos(age)),
        Err(_) => quiet,
    }
}

/// Feeds a download's bytes to `take` (which answers false to stop early),
/// counting them into `progress`; an error unless exactly the announced
/// size arrived (or `take` stopped it).
async fn receive<F: std::future::Future<Output = bool>>(
    target: &RelPath,
    download: Download,
    progress: &Progress,
    mut take: impl FnMut(Bytes) -> F,
) -> Result<(), EffectError> {
    let mut stream = download.stream;
    let mut received: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let bytes = chunk.map_err(|e| grid_error(&format!("cannot download {target}"), e))?;
        received += bytes.len() as u64;
        progress.add(bytes.len() as u64);
        if received > download.size {
            return Err(EffectError::permanent(format!(
                "download of {target} is longer than announced"
            )));
        }
        if !take(bytes).await {
            return Ok(());
        }
    }
    if received != download.size {
        return Err(EffectError::transient(format!(
            "download of {target} ended after {received} of {} bytes",
            download.size
        )));
    }
    Ok(())
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("blocking task failed: {e}"))))
}

pub(crate) fn grid_error(context: &str, e: GridError) -> EffectError {
    let message = format!("{context}: {e}");
    match e {
        GridError::NotFound(_) => EffectError::missing(message),
        e if e.is_transient() => EffectError::transient(message),
        _ => EffectError::permanent(message),
    }
}

fn io_error(context: &str, e: &io::Error) -> EffectError {
    let message = format!("{context}: {e}");
    if fsops::is_transient(e) {
        EffectError::transient(message)
    } else {
        EffectError::permanent(message)
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_wait_counts_from_the_last_change() {
        let quiet = Duration::from_secs(1);
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let ns = |s: f64| (s * 1e9) as i64;
        assert_eq!(
            quiet_wait(ns(999.7), now, quiet),
            Duration::from_millis(700)
        );
        assert_eq!(quiet_wait(ns(990.0), now, quiet), Duration::ZERO);
        assert_eq!(
            quiet_wait(ns(1_005.0), now, quiet),
            quiet,
            "a change in the future (clock set back) waits the whole quiet time"
        );
        assert_eq!(quiet_wait(ns(999.5), now, Duration::ZERO), Duration::ZERO);
    }
}
