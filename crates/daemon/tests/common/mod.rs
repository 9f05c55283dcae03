//! What the executor tests share.

// Each test binary uses its own share of this module.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use mf_core::snapshot::Author;
use mf_daemon::chunked::{Chunking, ContentFormat};
use mf_daemon::executor::ExecutorConfig;
use mf_daemon::fsops;
use mf_daemon::ignore::IgnoreRules;
use mf_daemon::pack::Snapshots;
use mf_daemon::personal::Layout;

use mf_grid::embedded::EmbeddedGrid;
use mf_grid::{
    Capability, DirChildren, Download, Grid, GridError, GridResult, Listed, Replace, Revision,
    UploadSource,
};

/// Participant `name`'s executor configuration (its key from its name) in
/// a folder of 24.3's format on an embedded grid, with no ignore rules and
/// no quiet time: change what a test needs with `..`.
pub fn config(
    name: &str,
    root: &Path,
    collective: &Capability,
    personal: Capability,
) -> ExecutorConfig {
    ExecutorConfig {
        root: root.to_path_buf(),
        author: Author::from_seed(name, [name.len() as u8; 32]),
        participant: name.to_owned(),
        collective: collective.clone(),
        personal,
        umask: fsops::DEFAULT_UMASK,
        ignore: IgnoreRules::empty(),
        quiet: Duration::ZERO,
        layout: Layout::Flat,
        content: ContentFormat::Whole,
        chunking: Chunking::EMBEDDED,
        snapshots: Snapshots::Single,
        transfers: 8,
    }
}

/// The embedded grid, counting its listings and the bytes it is given and
/// gives out, and able to fail its `n`th write from now on as a crash
/// would: that write and every one after it fail until [`Faulty::heal`].
pub struct Faulty {
    pub inner: EmbeddedGrid,
    writes: AtomicUsize,
    fail_from: AtomicUsize,
    lists: AtomicUsize,
    uploaded: AtomicU64,
    downloaded: AtomicU64,
}

impl Faulty {
    pub fn create(store: &Path) -> Faulty {
        Faulty {
            inner: EmbeddedGrid::create(store, [5; 32]).unwrap(),
            writes: AtomicUsize::new(0),
            fail_from: AtomicUsize::new(usize::MAX),
            lists: AtomicUsize::new(0),
            uploaded: AtomicU64::new(0),
            downloaded: AtomicU64::new(0),
        }
    }

    fn write(&self) -> GridResult<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_from.load(Ordering::SeqCst) {
            return Err(GridError::Unavailable("crashed (simulated)".into()));
        }
        Ok(())
    }

    pub fn crash_at_write(&self, n: usize) {
        self.writes.store(0, Ordering::SeqCst);
        self.fail_from.store(n, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.fail_from.store(usize::MAX, Ordering::SeqCst);
    }

    /// Writes since the last [`Faulty::crash_at_write`].
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    pub fn lists(&self) -> usize {
        self.lists.load(Ordering::SeqCst)
    }

    /// Bytes uploaded as immutable files since the last call.
    pub fn take_uploaded(&self) -> u64 {
        self.uploaded.swap(0, Ordering::SeqCst)
    }

    /// Bytes of immutable files downloaded since the last call.
    pub fn take_downloaded(&self) -> u64 {
        self.downloaded.swap(0, Ordering::SeqCst)
    }
}

impl Grid for Faulty {
    async fn upload(&self, source: UploadSource) -> GridResult<Capability> {
        self.write()?;
        let size = match &source {
            UploadSource::Bytes(b) => b.len() as u64,
            UploadSource::File(p) | UploadSource::TrackedFile(p, _) => {
                std::fs::metadata(p).map_or(0, |m| m.len())
            }
        };
        self.uploaded.fetch_add(size, Ordering::SeqCst);
        self.inner.upload(source).await
    }
    async fn download(&self, cap: &Capability) -> GridResult<Download> {
        let download = self.inner.download(cap).await?;
        self.downloaded.fetch_add(download.size, Ordering::SeqCst);
        Ok(download)
    }
    async fn create_immutable_dir(&self, children: DirChildren) -> GridResult<Capability> {
        self.write()?;
        self.inner.create_immutable_dir(children).await
    }
    async fn create_mutable_dir(&self) -> GridResult<Capability> {
        self.write()?;
        self.inner.create_mutable_dir().await
    }
    async fn list_changed(
        &self,
        dir: &Capability,
        known: Option<&Revision>,
    ) -> GridResult<Option<Listed>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_changed(dir, known).await
    }
    async fn set_children(
        &self,
        dir: &Capability,
        children: DirChildren,
        replace: Replace,
    ) -> GridResult<()> {
        self.write()?;
        self.inner.set_children(dir, children, replace).await
    }
    async fn unlink(&self, dir: &Capability, name: &str) -> GridResult<()> {
        self.write()?;
        self.inner.unlink(dir, name).await
    }
}

/// A distinct immutable directory on `grid` to stand for a snapshot
/// (listing does not read it).
pub async fn stand_in_snapshot(grid: &Faulty, label: &str) -> mf_core::snapshot::Cap {
    let mut c = DirChildren::new();
    c.insert(
        "label".into(),
        mf_grid::DirEntry {
            cap: Capability::empty(),
            metadata: serde_json::json!({ "label": label }),
        },
    );
    let cap = grid.inner.create_immutable_dir(c).await.unwrap();
    mf_core::snapshot::Cap::from(cap.as_str())
}
