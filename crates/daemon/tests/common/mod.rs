//! What the executor tests on the real embedded grid share.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use mf_grid::embedded::EmbeddedGrid;
use mf_grid::{
    Capability, DirChildren, Download, Grid, GridError, GridResult, Listed, Replace, Revision,
    UploadSource,
};

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

#[allow(dead_code)] // each test binary uses its own share of it
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
