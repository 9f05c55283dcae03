//! `verify [--repair]`: the folder audited against the grid.
//!
//! For every path's current version: the snapshot is read and verified as
//! any remote one is (signature, path), the content is downloaded whole
//! (every piece authenticated by the grid; every chunk of a chunk list also
//! checked against its digest) and its size checked, and the
//! file on disk — when it is still as it was when it last synced — is
//! hashed and compared with it. Every participant's directory is listed, so
//! a damaged or unreadable one shows too. On Tahoe-LAFS each object also
//! goes through the node's checker (all shares read and verified), which
//! finds lost redundancy before it becomes lost data.
//!
//! `--repair`: on the embedded grid a missing or damaged content object (or
//! chunk) is written anew from the file on disk when that file has the same content
//! (uploads are convergent, so the object comes back under the same name);
//! on Tahoe-LAFS the node's repairer restores missing shares. A damaged
//! snapshot or metadata object cannot be rebuilt (only its author could
//! sign it); it is named, with what still works.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::anyhow;
use futures_util::{stream, StreamExt};
use mf_core::engine::{Action, Event};
use mf_core::relpath::RelPath;
use mf_core::snapshot::Content;
use mf_core::store::{Current, LocalState};
use mf_grid::embedded::{EmbeddedGrid, Repair};
use mf_grid::{CapKind, Capability, Grid, GridError, UploadSource};
use mf_state::StateReader;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::grid::{AnyGrid, OpenMode};
use super::history::version_id;
use crate::chunked::{self, Chunk};
use crate::config::{ConfigDir, FolderConfig};
use crate::executor::Executor;
use crate::fsops;
use crate::pack::{PackCache, SnapshotRef};

/// Versions checked at once: enough to keep a Tahoe node and a disk busy.
const PARALLEL: usize = 8;

/// One thing found.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// The path it is about, relative to the folder (none for a directory
    /// of the folder itself, such as a participant's).
    pub path: Option<String>,
    /// The version it is about.
    pub version: Option<String>,
    /// What was found, or done.
    pub what: String,
}

/// What `verify` found in one folder.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// The folder.
    pub folder: String,
    /// Current versions checked (files, directories, deletions).
    pub versions: u64,
    /// Of those, files whose content was read back whole.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files on disk compared with their version, byte for byte (by hash).
    pub compared: u64,
    /// Files on disk that changed since they last synced (the daemon
    /// uploads them; not compared).
    pub changed_locally: u64,
    /// What `--repair` put right.
    pub repaired: Vec<Finding>,
    /// What is wrong (and was not put right).
    pub problems: Vec<Finding>,
}

impl VerifyReport {
    /// True if nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// `verify [FOLDER] [--repair]`: every folder, or the one named.
/// `progress(done, total)` is called as versions are checked.
pub async fn verify(
    config: &ConfigDir,
    folder: Option<&str>,
    repair: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<Vec<VerifyReport>> {
    config.require_initialised()?;
    let folders = match folder {
        Some(n) => vec![config.load_folder(n)?],
        None => config.load_folders()?,
    };
    let mut work = Vec::new();
    for cfg in folders {
        let db = config.state_db(&cfg.name);
        let entries = if db.exists() {
            StateReader::open(&db)?
                .current_entries()?
                .into_iter()
                .filter(|(p, _)| !p.is_internal())
                .collect()
        } else {
            Vec::new()
        };
        work.push((cfg, entries));
    }
    let total: u64 = work.iter().map(|(_, e)| e.len() as u64).sum();
    let done = AtomicU64::new(0);
    progress(0, total);
    let mut reports = Vec::new();
    for (cfg, entries) in work {
        reports.push(
            verify_folder(&cfg, entries, repair, &|| {
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, total)
            })
            .await?,
        );
    }
    Ok(reports)
}

/// What checking one version found.
#[derive(Default)]
struct Checked {
    file_bytes: Option<u64>,
    compared: bool,
    changed_locally: bool,
    repaired: Vec<String>,
    problems: Vec<String>,
}

async fn verify_folder(
    cfg: &FolderConfig,
    entries: Vec<(RelPath, Current)>,
    repair: bool,
    tick: &(dyn Fn() + Sync),
) -> anyhow::Result<VerifyReport> {
    let grid = Arc::new(AnyGrid::open(
        &cfg.grid,
        &cfg.convergence_secret,
        OpenMode::MustExist,
    )?);
    let executor = crate::folder::executor(cfg, grid.clone()).map_err(|e| anyhow!(e))?;
    let mut report = VerifyReport {
        folder: cfg.name.clone(),
        ..Default::default()
    };
    let folder_problem = |what: String| Finding {
        path: None,
        version: None,
        what,
    };
    match executor.execute(Action::Poll).await {
        Event::Polled(Ok(listings)) => {
            for l in listings {
                if let Err(e) = &l.entries {
                    report.problems.push(folder_problem(format!(
                        "{}'s directory cannot be listed: {}",
                        l.participant, e.message
                    )));
                }
                for r in l.rejected {
                    report.problems.push(folder_problem(format!(
                        "{}'s directory: {r}",
                        l.participant
                    )));
                }
            }
        }
        Event::Polled(Err(e)) => {
            report.problems.push(folder_problem(format!(
                "the participants cannot be listed: {e}"
            )));
        }
        other => anyhow::bail!("unexpected poll result {other:?}"),
    }

    let checker = Checker {
        grid,
        executor,
        root: cfg.local_path.clone(),
        repair,
        packs: PackCache::default(),
        checked: Default::default(),
    };
    let mut results = stream::iter(entries)
        .map(|(path, cur)| {
            let checker = &checker;
            async move {
                let checked = checker.check(&path, &cur).await;
                tick();
                (path, cur.snapshot, checked)
            }
        })
        .buffer_unordered(PARALLEL);
    while let Some((path, snapshot, checked)) = results.next().await {
        report.versions += 1;
        if let Some(bytes) = checked.file_bytes {
            report.files += 1;
            report.bytes += bytes;
        }
        report.compared += u64::from(checked.compared);
        report.changed_locally += u64::from(checked.changed_locally);
        let finding = |what: String| Finding {
            path: Some(path.to_string()),
            version: Some(version_id(&snapshot)),
            what,
        };
        report
            .repaired
            .extend(checked.repaired.into_iter().map(finding));
        report
            .problems
            .extend(checked.problems.into_iter().map(finding));
    }
    drop(results);
    let key = |f: &Finding| (f.path.clone(), f.what.clone());
    report.problems.sort_by_key(key);
    report.repaired.sort_by_key(key);
    Ok(report)
}

struct Checker {
    grid: Arc<AnyGrid>,
    executor: Executor<AnyGrid>,
    root: PathBuf,
    repair: bool,
    /// Packs listed (for their members' metadata objects), each once.
    packs: PackCache,
    /// Directories the node's checker has seen: a pack's once for all its
    /// members.
    checked: std::sync::Mutex<std::collections::HashSet<Capability>>,
}

impl Checker {
    async fn check(&self, path: &RelPath, cur: &Current) -> Checked {
        let mut out = Checked::default();
        let snapshot = match SnapshotRef::parse(&cur.snapshot) {
            Ok(s) => s,
            Err(e) => {
                out.problems
                    .push(format!("the recorded version is not a capability: {e}"));
                return out;
            }
        };
        if let AnyGrid::Tahoe(_) = &*self.grid {
            // The snapshot's own objects (its directory or its pack)
            // through the node's checker; the content's below, before it
            // is read.
            let dir = snapshot.dir().clone();
            let first = self
                .checked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(dir.clone());
            let mut objects = Vec::new();
            if first {
                objects.push(("snapshot", dir));
            }
            if let Ok(children) = self.packs.parts(&*self.grid, &snapshot).await {
                if let Some(m) = children.get("metadata") {
                    objects.push(("metadata", m.cap.clone()));
                }
            }
            for (what, cap) in objects {
                self.tahoe_check(what, &cap, &mut out).await;
            }
        }
        let info = match self
            .executor
            .execute(Action::Fetch {
                cap: cur.snapshot.clone(),
                listed_as: path.clone(),
            })
            .await
        {
            Event::Fetched { result: Ok(i), .. } => i,
            Event::Fetched { result: Err(e), .. } => {
                out.problems.push(format!(
                    "the snapshot cannot be read or verified: {} (only its author can make it anew: \
                     an edit of the file publishes a new version)",
                    e.message
                ));
                return out;
            }
            other => {
                out.problems
                    .push(format!("unexpected fetch result {other:?}"));
                return out;
            }
        };
        let Content::File { cap, size, .. } = &info.content else {
            return out;
        };
        out.file_bytes = Some(*size);
        // The file on disk, if it is still what last synced.
        let on_disk = match &cur.local {
            LocalState::File(_) => {
                let (root, p) = (self.root.clone(), path.clone());
                let now = tokio::task::spawn_blocking(move || fsops::stat(&root, &p))
                    .await
                    .ok()
                    .and_then(Result::ok);
                if now.as_ref() == Some(&cur.local) {
                    Some(self.root.join(path.as_str()))
                } else {
                    out.changed_locally = true;
                    None
                }
            }
            _ => None,
        };
        let content = match Capability::parse(cap.as_str()) {
            Ok(c) => c,
            Err(e) => {
                out.problems
                    .push(format!("the content is not a capability: {e}"));
                return out;
            }
        };
        if let AnyGrid::Tahoe(_) = &*self.grid {
            self.tahoe_check("content", &content, &mut out).await;
            if let Ok(chunks) = chunk_list(&self.grid, &content, *size).await {
                for (i, c) in chunks.iter().enumerate() {
                    self.tahoe_check(&format!("content chunk {i}"), &c.cap, &mut out)
                        .await;
                }
            }
        }
        let mut read = read_through(&self.grid, &content, *size).await;
        if let (Err(e), true, Some(file), AnyGrid::Embedded(g)) =
            (&read, self.repair, &on_disk, &*self.grid)
        {
            match repair(g, &content, *size, file).await {
                Ok(Repair::Rewritten) => {
                    out.repaired
                        .push(format!("content was {e}; written anew from the file on disk"));
                    read = read_through(&self.grid, &content, *size).await;
                }
                Ok(Repair::Intact) => read = read_through(&self.grid, &content, *size).await,
                Ok(Repair::OtherContent) => out.problems.push(
                    "the file on disk has other content: the damaged content cannot be rebuilt from it"
                        .into(),
                ),
                Err(e) => out.problems.push(format!("repair failed: {e}")),
            }
        }
        let digest = match read {
            Ok(d) => d,
            Err(e) => {
                let hint = match (&*self.grid, &on_disk, self.repair) {
                    (AnyGrid::Embedded(_), Some(_), false) => {
                        " (`verify --repair` can write it anew from the file on disk)"
                    }
                    (AnyGrid::Embedded(_), None, _) => {
                        " (no file on disk with this content to repair it from)"
                    }
                    _ => "",
                };
                out.problems
                    .push(format!("the content cannot be read: {e}{hint}"));
                return out;
            }
        };
        if let Some(file) = on_disk {
            match hash_file(file).await {
                Ok(local) if local == digest => out.compared = true,
                Ok(_) => {
                    out.compared = true;
                    out.problems.push(
                        "the file on disk differs from this version, though its size and times \
                         did not change (changed behind the file system's back, or disk damage)"
                            .into(),
                    );
                }
                Err(e) => out
                    .problems
                    .push(format!("the file on disk cannot be read: {e}")),
            }
        }
        out
    }

    /// Runs the Tahoe node's checker (and repairer) on one object.
    async fn tahoe_check(&self, what: &str, cap: &Capability, out: &mut Checked) {
        let AnyGrid::Tahoe(g) = &*self.grid else {
            return;
        };
        match g.check(cap, self.repair).await {
            Ok(c) => {
                if c.repair_attempted {
                    if c.repaired {
                        out.repaired
                            .push(format!("{what}: shares restored ({})", c.summary));
                    } else {
                        out.problems
                            .push(format!("{what}: the node's repair failed ({})", c.summary));
                    }
                }
                // A failed repair is reported above.
                let repair_failed = c.repair_attempted && !c.repaired;
                if !c.healthy && !repair_failed {
                    let hint = if self.repair {
                        ""
                    } else {
                        "; `verify --repair` asks the node to restore them"
                    };
                    out.problems.push(if c.recoverable {
                        format!(
                            "{what}: {} of {} shares ({}){hint}",
                            c.shares_good, c.shares_expected, c.summary
                        )
                    } else {
                        format!(
                            "{what}: not recoverable from the shares found ({})",
                            c.summary
                        )
                    });
                }
            }
            Err(e) => out
                .problems
                .push(format!("{what}: the node's check failed: {e}")),
        }
    }
}

/// The chunks of the content `cap`, if it is a chunk list
/// ([`crate::chunked`]); a malformed list is an integrity error.
async fn chunk_list(grid: &AnyGrid, cap: &Capability, size: u64) -> Result<Vec<Chunk>, GridError> {
    if cap.kind() != CapKind::ImmutableDir {
        return Ok(Vec::new());
    }
    chunked::parse_manifest(&grid.list(cap).await?, size).map_err(|detail| GridError::Integrity {
        cap: "content".into(),
        detail,
    })
}

/// Downloads the content `cap` whole (every chunk of a chunk list, each
/// checked against its digest), checks its size, returns its SHA-256.
async fn read_through(grid: &AnyGrid, cap: &Capability, size: u64) -> Result<[u8; 32], GridError> {
    let mut whole = Sha256::new();
    let got = if cap.kind() == CapKind::ImmutableDir {
        let mut got = 0;
        for (i, chunk) in chunk_list(grid, cap, size).await?.iter().enumerate() {
            let mut part = Sha256::new();
            let n = read_into(grid, &chunk.cap, |b| {
                whole.update(b);
                part.update(b);
            })
            .await?;
            if n != chunk.size || <[u8; 32]>::from(part.finalize()) != chunk.digest {
                return Err(GridError::Integrity {
                    cap: format!("content chunk {i}"),
                    detail: "its bytes are not those its chunk list names".into(),
                });
            }
            got += n;
        }
        got
    } else {
        read_into(grid, cap, |b| whole.update(b)).await?
    };
    if got != size {
        return Err(GridError::Integrity {
            cap: "content".into(),
            detail: format!("{got} bytes where the snapshot says {size}"),
        });
    }
    Ok(whole.finalize().into())
}

/// Downloads the immutable file `cap`, handing its bytes to `take`; how
/// many there were, which must be as many as announced.
async fn read_into(
    grid: &AnyGrid,
    cap: &Capability,
    mut take: impl FnMut(&[u8]),
) -> Result<u64, GridError> {
    let download = grid.download(cap).await?;
    let announced = download.size;
    let mut stream = download.stream;
    let mut got = 0u64;
    while let Some(bytes) = stream.next().await {
        let bytes = bytes?;
        got += bytes.len() as u64;
        take(&bytes);
    }
    if got != announced {
        return Err(GridError::Integrity {
            cap: "content".into(),
            detail: format!("{got} bytes where {announced} were announced"),
        });
    }
    Ok(got)
}

/// Writes the content `cap` anew from `file` on an embedded grid: the one
/// object, or each chunk whose bytes on disk match its digest.
async fn repair(
    grid: &EmbeddedGrid,
    cap: &Capability,
    size: u64,
    file: &Path,
) -> Result<Repair, GridError> {
    if cap.kind() != CapKind::ImmutableDir {
        return grid.repair(UploadSource::File(file.to_owned()), cap).await;
    }
    let any = AnyGrid::Embedded(grid.clone());
    let mut outcome = Repair::Intact;
    for chunk in chunk_list(&any, cap, size).await? {
        let (path, offset, len) = (file.to_owned(), chunk.offset, chunk.size as usize);
        let bytes = tokio::task::spawn_blocking(move || {
            chunked::read_at(&std::fs::File::open(path)?, offset, len)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| GridError::Io {
            context: "reading the file on disk".into(),
            source: e,
        })?;
        if chunked::digest(&bytes) != chunk.digest {
            return Ok(Repair::OtherContent);
        }
        if grid
            .repair(UploadSource::Bytes(bytes.into()), &chunk.cap)
            .await?
            == Repair::Rewritten
        {
            outcome = Repair::Rewritten;
        }
    }
    Ok(outcome)
}

/// The SHA-256 of a local file, read on a blocking thread.
async fn hash_file(path: PathBuf) -> std::io::Result<[u8; 32]> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)?;
        Ok(hasher.finalize().into())
    })
    .await
    .map_err(std::io::Error::other)?
}
