//! Opening a folder's grid, whichever backend it is on.
//!
//! [`mf_grid::Grid`] has `async fn`s, so it cannot be a trait object; rather
//! than compile every generic user (the folder loop, the executor) once per
//! backend, [`AnyGrid`] is a small enum that implements the trait by
//! delegating to the backend it holds.

use std::path::Path;

use mf_grid::embedded::EmbeddedGrid;
use mf_grid::tahoe::TahoeGrid;
use mf_grid::{
    Capability, DirChildren, Download, Grid, GridResult, Listed, Replace, Revision, UploadSource,
};

use crate::config::{GridLocation, Secret32};

/// A grid of either backend.
#[derive(Clone, Debug)]
pub enum AnyGrid {
    /// The embedded grid (a local or shared directory).
    Embedded(EmbeddedGrid),
    /// A Tahoe-LAFS node.
    Tahoe(TahoeGrid),
}

/// Whether opening an embedded grid may create it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the grid directory if it does not exist (for `create`).
    CreateIfMissing,
    /// The grid must already exist (for `join` and `run`).
    MustExist,
}

impl AnyGrid {
    /// Opens the grid at `location`. The convergence secret is the folder's;
    /// Tahoe uses its node's own instead.
    pub fn open(
        location: &GridLocation,
        convergence: &Secret32,
        mode: OpenMode,
    ) -> anyhow::Result<AnyGrid> {
        match location {
            GridLocation::Embedded { dir } => {
                let g = match mode {
                    OpenMode::CreateIfMissing => EmbeddedGrid::create(dir, convergence.0),
                    OpenMode::MustExist => {
                        if !dir.is_dir() {
                            anyhow::bail!(
                                "the embedded grid directory {} does not exist here (is it mounted? \
                                 `join --grid DIR` says where it is on this machine)",
                                dir.display()
                            );
                        }
                        EmbeddedGrid::open(dir, convergence.0)
                    }
                };
                g.map(AnyGrid::Embedded).map_err(|e| {
                    anyhow::anyhow!("cannot open the embedded grid at {}: {e}", dir.display())
                })
            }
            GridLocation::Tahoe { node } => {
                let g = if node.starts_with("http://") || node.starts_with("https://") {
                    TahoeGrid::from_url(node)
                } else {
                    TahoeGrid::from_node_dir(Path::new(node))
                };
                g.map(AnyGrid::Tahoe)
                    .map_err(|e| anyhow::anyhow!("cannot reach the Tahoe-LAFS node {node}: {e}"))
            }
        }
    }
}

impl Grid for AnyGrid {
    async fn upload(&self, source: UploadSource) -> GridResult<Capability> {
        match self {
            AnyGrid::Embedded(g) => g.upload(source).await,
            AnyGrid::Tahoe(g) => g.upload(source).await,
        }
    }

    async fn download(&self, cap: &Capability) -> GridResult<Download> {
        match self {
            AnyGrid::Embedded(g) => g.download(cap).await,
            AnyGrid::Tahoe(g) => g.download(cap).await,
        }
    }

    async fn create_immutable_dir(&self, children: DirChildren) -> GridResult<Capability> {
        match self {
            AnyGrid::Embedded(g) => g.create_immutable_dir(children).await,
            AnyGrid::Tahoe(g) => g.create_immutable_dir(children).await,
        }
    }

    async fn create_mutable_dir(&self) -> GridResult<Capability> {
        match self {
            AnyGrid::Embedded(g) => g.create_mutable_dir().await,
            AnyGrid::Tahoe(g) => g.create_mutable_dir().await,
        }
    }

    async fn list_changed(
        &self,
        dir: &Capability,
        known: Option<&Revision>,
    ) -> GridResult<Option<Listed>> {
        match self {
            AnyGrid::Embedded(g) => g.list_changed(dir, known).await,
            AnyGrid::Tahoe(g) => g.list_changed(dir, known).await,
        }
    }

    async fn set_children(
        &self,
        dir: &Capability,
        children: DirChildren,
        replace: Replace,
    ) -> GridResult<()> {
        match self {
            AnyGrid::Embedded(g) => g.set_children(dir, children, replace).await,
            AnyGrid::Tahoe(g) => g.set_children(dir, children, replace).await,
        }
    }

    async fn unlink(&self, dir: &Capability, name: &str) -> GridResult<()> {
        match self {
            AnyGrid::Embedded(g) => g.unlink(dir, name).await,
            AnyGrid::Tahoe(g) => g.unlink(dir, name).await,
        }
    }
}
