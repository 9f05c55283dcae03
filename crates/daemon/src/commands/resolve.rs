//! `resolve`: settling a conflict by editing the folder, as a user would.
//!
//! A conflict shows on disk as the file plus one `PATH.conflict-<participant>`
//! copy per diverged version. The engine treats *the copy disappearing* as
//! the user's decision: the next snapshot of `PATH` names the conflicting
//! versions as extra parents, and that resolution removes the copies at
//! every participant. So `resolve` needs no special channel to the daemon;
//! it changes the files and asks the daemon to scan now:
//!
//! Every participant shows the same winner as `PATH`, and each losing
//! version as a copy named after its author (`PATH.conflict-bob`, or
//! `PATH.conflict-bob-1a2b3c` when bob has several). So "mine" is wherever
//! my version is: the file itself if it won, my copy if it lost.
//!
//! * `--mine`: my version wins: my copy replaces `PATH` if I have one, else
//!   `PATH` stays as it is; every copy goes.
//! * `--theirs`: the other participant's version wins: their copy replaces
//!   `PATH` if the copy is theirs, else (`PATH` is theirs) `PATH` stays;
//!   refused when several others conflict (say which with `--use`).
//! * `--use LABEL`: `PATH` becomes the version in `PATH.conflict-LABEL`
//!   (written atomically with the copy's content and mtime), or stays as it
//!   is when LABEL is the participant whose version `PATH` holds; every copy
//!   goes.
//!
//! Deleting a copy by hand means "keep `PATH` as it is" for that version;
//! moving a copy over `PATH` means "take that version".
//!
//! Nothing is deleted: replaced files and removed copies are moved into the
//! folder's versions area (`.magic-folder/versions/`), like every overwrite
//! the daemon makes.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use mf_core::relpath::{RelPath, CONFLICT_MARKER};
use mf_core::store::LocalState;
use serde::Serialize;

use crate::config::{absolute, ConfigDir, FolderConfig};
use crate::fsops::{self, Outcome};

/// Which version wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Ours, as it is on disk.
    Mine,
    /// The other participant's (only one may conflict).
    Theirs,
    /// This participant's version.
    Use(String),
}

/// What `resolve` did.
#[derive(Clone, Debug, Serialize)]
pub struct ResolveOutcome {
    /// The folder.
    pub folder: String,
    /// The path, relative to the folder.
    pub path: String,
    /// Whose version `path` now holds (our own participant name for `--mine`).
    pub kept: String,
    /// Conflict copies moved into the versions area.
    pub removed_copies: Vec<String>,
    /// True if a running daemon was asked to scan (otherwise the change is
    /// picked up when it next starts).
    pub daemon_notified: bool,
}

/// Resolves the conflict on `path` (a path on disk, absolute or relative to
/// the current directory).
pub async fn resolve(
    config: &ConfigDir,
    path: &Path,
    how: Resolution,
) -> anyhow::Result<ResolveOutcome> {
    config.require_initialised()?;
    let (cfg, rel) = locate(config, path)?;
    let root = cfg.local_path.clone();
    let copies = conflict_copies(&root, &rel)?;
    if copies.is_empty() {
        bail!("{rel:?} has no conflict copies: nothing to resolve");
    }
    let names: Vec<&str> = copies.iter().map(|(p, _)| p.as_str()).collect();
    let me = cfg.participant.as_str();
    let mine: Vec<&str> = names
        .iter()
        .copied()
        .filter(|l| label_author(l) == me)
        .collect();
    let theirs: Vec<&str> = names
        .iter()
        .copied()
        .filter(|l| label_author(l) != me)
        .collect();
    let keeping_theirs = how == Resolution::Theirs;
    let winner = match how {
        Resolution::Mine => match mine.as_slice() {
            [] => None,
            [one] => Some((*one).to_owned()),
            several => bail!(
                "{rel} has several versions of yours ({}): choose one with --use LABEL",
                several.join(", ")
            ),
        },
        // Our own name with no copy of ours: the version on disk is ours.
        Resolution::Use(n) if n == cfg.participant && !names.contains(&n.as_str()) => None,
        Resolution::Use(n) => {
            if !names.contains(&n.as_str()) {
                bail!(
                    "there is no conflict copy of {rel} from {n:?}; there are: {}",
                    names.join(", ")
                );
            }
            Some(n)
        }
        Resolution::Theirs => match theirs.as_slice() {
            // Every copy is ours: the file itself is theirs.
            [] => None,
            [one] => Some((*one).to_owned()),
            several => bail!(
                "{rel} conflicts with {} other versions ({}): choose one with --use LABEL, or --mine",
                several.len(),
                several.join(", ")
            ),
        },
    };

    let mut removed = Vec::new();
    if let Some(w) = &winner {
        let copy = rel.conflict_copy(w);
        replace_with(&root, cfg.umask, &rel, &copy)
            .with_context(|| format!("replacing {rel} with {copy}"))?;
        move_to_versions(&root, &copy)
            .with_context(|| format!("removing the conflict copy {copy}"))?;
        removed.push(copy.to_string());
    }
    for (participant, copy) in &copies {
        if Some(participant) == winner.as_ref() {
            continue;
        }
        move_to_versions(&root, copy)
            .with_context(|| format!("removing the conflict copy {copy}"))?;
        removed.push(copy.to_string());
    }

    let notified = super::status::tell_daemon_of_local_change(config, &cfg.name).await;
    Ok(ResolveOutcome {
        folder: cfg.name.clone(),
        path: rel.to_string(),
        kept: winner.unwrap_or_else(|| {
            if keeping_theirs {
                format!("theirs (already at {rel})")
            } else {
                cfg.participant.clone()
            }
        }),
        removed_copies: removed,
        daemon_notified: notified,
    })
}

/// The participant a copy label names: the label itself, or the label
/// without its `-<6 hex digits>` version suffix.
fn label_author(label: &str) -> &str {
    match label.rsplit_once('-') {
        Some((author, id)) if id.len() == 6 && id.bytes().all(|b| b.is_ascii_hexdigit()) => author,
        _ => label,
    }
}

/// Finds the folder holding `path` and the path relative to it.
pub(crate) fn locate(config: &ConfigDir, path: &Path) -> anyhow::Result<(FolderConfig, RelPath)> {
    let abs = absolute(path)?;
    if abs.file_name().is_none() {
        bail!("{} does not name a file", abs.display());
    }
    // The nearest ancestor that exists, with symlinks resolved, plus the
    // rest as given: a deleted file (or one in a deleted directory) still
    // has a place in its folder.
    let mut base = abs.clone();
    let mut rest = Vec::new();
    let full = loop {
        match base.canonicalize() {
            Ok(real) if !rest.is_empty() => break rest.iter().rev().fold(real, |p, n| p.join(n)),
            Ok(_) => {
                // The path itself exists: resolve only its parent, so a
                // symlink at the end is named, not followed.
                let name = base.file_name().map(|n| n.to_owned());
                let parent = base.parent().map(Path::to_path_buf);
                match (name, parent) {
                    (Some(n), Some(p)) => break p.canonicalize()?.join(n),
                    _ => bail!("{} does not name a file", abs.display()),
                }
            }
            Err(_) => {
                let Some(name) = base.file_name().map(|n| n.to_owned()) else {
                    bail!("{} does not exist", abs.display());
                };
                rest.push(name);
                if !base.pop() {
                    bail!("{} does not exist", abs.display());
                }
            }
        }
    };
    for cfg in config.load_folders()? {
        let root = cfg
            .local_path
            .canonicalize()
            .unwrap_or_else(|_| cfg.local_path.clone());
        let Ok(inside) = full.strip_prefix(&root) else {
            continue;
        };
        let segs: Option<Vec<&str>> = inside
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect();
        let segs = segs.ok_or_else(|| anyhow!("{} is not a UTF-8 path", full.display()))?;
        if segs.is_empty() {
            bail!(
                "{} is the folder itself; give the path of a conflicted file",
                full.display()
            );
        }
        let rel = RelPath::new(&segs.join("/")).map_err(|e| anyhow!("{}: {e}", full.display()))?;
        if let Some((orig, _)) = rel.as_conflict_copy() {
            bail!("{rel} is a conflict copy; give the original path ({orig}) and choose with --mine, --theirs or --use");
        }
        if rel.is_internal() {
            bail!("{rel} is Magic Folder's own bookkeeping, not a synchronised file");
        }
        return Ok((cfg, rel));
    }
    bail!(
        "{} is not inside any magic folder (see `magic-folder list`)",
        full.display()
    )
}

/// The conflict copies of `rel` on disk: (participant, copy path), sorted.
fn conflict_copies(root: &Path, rel: &RelPath) -> anyhow::Result<Vec<(String, RelPath)>> {
    let dir = match rel.parent() {
        Some(p) => root.join(p.as_str()),
        None => root.to_owned(),
    };
    let mut out = Vec::new();
    let rd = std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in rd {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.contains(CONFLICT_MARKER) {
            continue;
        }
        let copy = match rel.parent() {
            Some(p) => RelPath::new(&format!("{p}/{name}")),
            None => RelPath::new(&name),
        };
        let Ok(copy) = copy else { continue };
        // Exact, also for a long name's shortened copy.
        if let Some(who) = copy.conflict_label_for(rel) {
            out.push((who.to_owned(), copy.clone()));
        }
    }
    out.sort();
    Ok(out)
}

/// Moves the conflict copy `rel` into the versions area (never deletes).
fn move_to_versions(root: &Path, rel: &RelPath) -> anyhow::Result<()> {
    for _ in 0..3 {
        let state = fsops::stat(root, rel)?;
        match fsops::delete(root, rel, state)? {
            Outcome::Done(_) => return Ok(()),
            Outcome::NotEmpty => {
                bail!("{rel} is a directory that is not empty; move it away yourself")
            }
            Outcome::Changed(_) => continue, // changed under us: look again
        }
    }
    bail!("{rel} keeps changing; try again when it is quiet")
}

/// Atomically makes `target` hold what `source` holds (content and mtime);
/// the old `target` goes to the versions area. `source` stays; the caller
/// removes it.
fn replace_with(root: &Path, umask: u32, target: &RelPath, source: &RelPath) -> anyhow::Result<()> {
    let LocalState::File(src_state) = fsops::stat(root, source)? else {
        bail!("{source} is not a regular file");
    };
    let mtime_s = src_state.mtime_ns.div_euclid(1_000_000_000);
    for _ in 0..3 {
        let expect = fsops::stat(root, target)?;
        if expect == LocalState::Dir {
            bail!("{target} is now a directory; move it away first");
        }
        let src_path = source.segments().fold(root.to_owned(), |p, s| p.join(s));
        let mut file =
            std::fs::File::open(&src_path).with_context(|| format!("opening {source}"))?;
        let executable = fsops::is_executable(&file.metadata()?);
        match fsops::write_file(
            root,
            target,
            &mut file,
            (mtime_s, executable),
            expect,
            umask,
        )? {
            Outcome::Done(_) => return Ok(()),
            Outcome::NotEmpty => bail!("{target} is now a directory; move it away first"),
            Outcome::Changed(_) => continue,
        }
    }
    bail!("{target} keeps changing; try again when it is quiet")
}
