//! A folder's life cycle: `init`, `create`, `join`, `leave`, `list`.
//!
//! # On the grid
//!
//! `create` makes two mutable directories: the *collective* (name →
//! participant's personal read capability; only the admin, who created it,
//! holds its write capability) and the admin's own *personal* directory.
//! Both get an `@metadata` entry pointing at the immutable JSON
//! `{"version":1}`, as magic-folder 24.3 writes them. A participant makes
//! its own personal directory when it joins; the admin links its read
//! capability into the collective under the participant's name.
//!
//! Invites are [`super::invite_codes`] (ours) and [`super::invite_v1`]
//! (Magic Wormhole, as magic-folder 24.3's).

use crate::format::{FolderFormat, PERSONAL_METADATA};
use crate::personal::{Layout, METADATA_ENTRY};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use mf_core::relpath::check_participant_name;
use mf_grid::{read_only, Capability, DirChildren, DirEntry, Grid, Replace, UploadSource};
use serde::{Deserialize, Serialize};

use super::grid::{AnyGrid, OpenMode};
use crate::api::FolderSummary;
use crate::config::{
    absolute, check_folder_name, ConfigDir, ConfigError, FolderConfig, GridLocation, Secret32,
    CONFIG_VERSION, DEFAULT_PENDING_DELAY, DEFAULT_SCAN, DEFAULT_UMASK,
};

/// What `init` did.
#[derive(Clone, Debug, Serialize)]
pub struct InitOutcome {
    /// The config directory.
    pub config_dir: PathBuf,
    /// False if it was already initialised (nothing changed).
    pub created: bool,
}

/// Creates the config directory (idempotent).
pub fn init(
    config: &ConfigDir,
    mailbox: Option<&str>,
    tahoe: Option<GridChoice>,
) -> anyhow::Result<InitOutcome> {
    let created = config.init()?;
    if let Some(url) = mailbox {
        if !url.starts_with("ws://") {
            bail!("the mailbox server must be a ws:// URL, not {url:?}");
        }
    }
    let node = match tahoe {
        Some(GridChoice::Tahoe(node)) => {
            match grid_location(config, Some(GridChoice::Tahoe(node)))? {
                GridLocation::Tahoe { node } => Some(node),
                GridLocation::Embedded { .. } => None,
            }
        }
        _ => None,
    };
    config.set_defaults(mailbox, node.as_deref())?;
    Ok(InitOutcome {
        config_dir: config.path().to_owned(),
        created,
    })
}

/// Which grid a new folder lives on. (In the API: `{"embedded": DIR}` or
/// `{"tahoe": NODE}`.)
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GridChoice {
    /// An embedded grid in this directory.
    Embedded(PathBuf),
    /// A Tahoe-LAFS node directory or web-API URL.
    Tahoe(String),
}

/// Timing and permission settings for a new folder; `None` takes the
/// default. (In the API, durations are seconds, as in 24.3's.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    /// Between polls (default per backend).
    #[serde(default, with = "secs")]
    pub poll_interval: Option<Duration>,
    /// Between full scans.
    #[serde(default, with = "secs")]
    pub scan_interval: Option<Duration>,
    /// Quiet time before a change is reported.
    #[serde(default, with = "secs")]
    pub pending_delay: Option<Duration>,
    /// Mask for files written on behalf of others.
    #[serde(default)]
    pub umask: Option<u32>,
    /// How long the versions area keeps old versions.
    #[serde(default, with = "secs")]
    pub keep_versions_for: Option<Duration>,
    /// How many versions of each file the versions area keeps.
    #[serde(default)]
    pub keep_versions: Option<usize>,
}

/// Optional durations as (fractional) seconds; zero, negative or absurd
/// ones are refused.
mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(d)? {
            None => Ok(None),
            Some(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(Some(Duration::from_secs_f64(v))),
            Some(v) => Err(serde::de::Error::custom(format!(
                "{v} is not a positive number of seconds"
            ))),
        }
    }
}

impl Tuning {
    /// The versions area's settings: (max age in ms, versions per file).
    fn retention(&self) -> (u64, usize) {
        let default = crate::fsops::Retention::default();
        (
            ms(self.keep_versions_for.unwrap_or(default.max_age)),
            self.keep_versions.unwrap_or(default.per_file),
        )
    }
}

/// Arguments of `create`.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// The folder's local name.
    pub name: String,
    /// The directory to synchronise (created if missing).
    pub local_dir: PathBuf,
    /// Our participant (and author) name; default from `$USER`.
    pub author: Option<String>,
    /// The grid; default an embedded grid in `<config>/grid`.
    pub grid: Option<GridChoice>,
    /// Timing settings.
    pub tuning: Tuning,
    /// How personal directories are laid out (flat: 24.3's, the default).
    pub layout: Layout,
}

/// A folder as `list`, `create` and `join` describe it (no secrets).
pub type FolderInfo = FolderSummary;

fn summary(cfg: &FolderConfig, running: bool) -> FolderInfo {
    FolderSummary {
        name: cfg.name.clone(),
        local_path: cfg.local_path.clone(),
        participant: cfg.participant.clone(),
        author: cfg.author_name.clone(),
        is_admin: cfg.is_admin(),
        grid: cfg.grid.kind().to_owned(),
        layout: cfg.layout,
        content: cfg.content,
        snapshots: cfg.snapshots,
        poll_interval_ms: cfg.poll_interval_ms,
        scan_interval_ms: cfg.scan_interval_ms,
        running,
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

/// The participant name to use when none is given: the login name, reduced
/// to the characters a participant name may hold.
fn default_author() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    let clean: String = user
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    if clean.is_empty() {
        "me".to_owned()
    } else {
        clean
    }
}

/// Checks that the local directory does not overlap the config directory
/// or another folder, then makes it (if missing). Returns its canonical
/// path. Nothing is created when a check fails.
pub(crate) fn prepare_local_dir(config: &ConfigDir, local_dir: &Path) -> anyhow::Result<PathBuf> {
    let abs = absolute(local_dir)?;
    if abs.exists() && !abs.is_dir() {
        bail!("{} exists and is not a directory", abs.display());
    }
    let canon = canonical_prefix(&abs)?;
    let cfg_dir = canonical_prefix(config.path())?;
    if canon.starts_with(&cfg_dir) || cfg_dir.starts_with(&canon) {
        bail!(
            "{} overlaps the config directory {}; choose another directory",
            canon.display(),
            cfg_dir.display()
        );
    }
    for other in config.load_folders()? {
        let theirs = canonical_prefix(&other.local_path)?;
        if canon.starts_with(&theirs) || theirs.starts_with(&canon) {
            bail!(
                "{} overlaps the directory of folder {:?} ({}); folders may not nest",
                canon.display(),
                other.name,
                theirs.display()
            );
        }
    }
    std::fs::create_dir_all(&canon).with_context(|| format!("creating {}", canon.display()))?;
    Ok(canon)
}

/// Canonicalises the longest existing prefix of an absolute path and
/// appends the rest, so paths that do not exist yet compare correctly.
fn canonical_prefix(path: &Path) -> anyhow::Result<PathBuf> {
    let mut existing = path.to_owned();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent.to_owned();
            }
            _ => break,
        }
    }
    let mut out = existing
        .canonicalize()
        .with_context(|| format!("resolving {}", existing.display()))?;
    out.extend(rest.iter().rev());
    Ok(out)
}

pub(crate) fn grid_location(
    config: &ConfigDir,
    choice: Option<GridChoice>,
) -> anyhow::Result<GridLocation> {
    Ok(match choice {
        None => GridLocation::Embedded {
            dir: config.default_grid_dir(),
        },
        Some(GridChoice::Embedded(dir)) => GridLocation::Embedded {
            dir: absolute(&dir)?,
        },
        Some(GridChoice::Tahoe(node)) => GridLocation::tahoe(&node)?,
    })
}

/// Writes `@metadata` → `document` into a mutable directory: the
/// collective's records the folder's format; a personal directory's is
/// 24.3's `{"version":1}`.
async fn write_metadata(grid: &AnyGrid, dir: &Capability, document: Vec<u8>) -> anyhow::Result<()> {
    let md = grid
        .upload(UploadSource::Bytes(bytes::Bytes::from(document)))
        .await
        .context("uploading folder metadata")?;
    let mut children = DirChildren::new();
    children.insert(METADATA_ENTRY.to_owned(), DirEntry::new(md));
    grid.set_children(dir, children, Replace::Yes)
        .await
        .context("writing folder metadata")?;
    Ok(())
}

/// Creates a personal directory with its `@metadata`; returns the write cap.
async fn new_personal_dir(grid: &AnyGrid) -> anyhow::Result<Capability> {
    let cap = grid
        .create_mutable_dir()
        .await
        .context("creating a personal directory on the grid")?;
    write_metadata(grid, &cap, PERSONAL_METADATA.to_vec()).await?;
    Ok(cap)
}

fn ensure_marker(root: &Path) -> anyhow::Result<()> {
    crate::fsops::ensure_marker(root).with_context(|| format!("preparing {}", root.display()))
}

/// `create`: a new folder whose admin we are.
pub async fn create(config: &ConfigDir, opts: CreateOptions) -> anyhow::Result<FolderInfo> {
    config.init()?;
    check_folder_name(&opts.name)?;
    if config.folder_file(&opts.name).exists() {
        return Err(crate::config::ConfigError::FolderExists(opts.name).into());
    }
    let author = opts.author.unwrap_or_else(default_author);
    check_participant_name(&author).map_err(|e| anyhow!(e))?;
    let location = grid_location(config, opts.grid)?;
    let local_path = prepare_local_dir(config, &opts.local_dir)?;
    let convergence = Secret32::random();
    let grid = AnyGrid::open(&location, &convergence, OpenMode::CreateIfMissing)?;

    let collective = grid
        .create_mutable_dir()
        .await
        .context("creating the collective directory on the grid")?;
    let format = FolderFormat::new(opts.layout, matches!(location, GridLocation::Tahoe { .. }));
    write_metadata(&grid, &collective, format.to_metadata()).await?;
    let personal = new_personal_dir(&grid).await?;
    let mut link = DirChildren::new();
    link.insert(author.clone(), DirEntry::new(read_only(&personal)?));
    grid.set_children(&collective, link, Replace::No)
        .await
        .context("linking our personal directory")?;

    let cfg = folder_config(
        opts.name,
        local_path,
        &opts.tuning,
        (location, format),
        (collective, personal),
        (author.clone(), author),
        convergence,
    );
    ensure_marker(&cfg.local_path)?;
    config.add_folder(&cfg)?;
    Ok(summary(&cfg, config.daemon_running()))
}

/// The folder `participant` is to be invited to, and its grid: refused
/// unless we are the folder's admin, the name is acceptable and not taken.
pub(crate) async fn inviting(
    config: &ConfigDir,
    folder: &str,
    participant: &str,
) -> anyhow::Result<(FolderConfig, AnyGrid)> {
    config.require_initialised()?;
    let cfg = config.load_folder(folder)?;
    if !cfg.is_admin() {
        bail!("only the folder's admin (who created it) can invite; {folder:?} was joined, not created here");
    }
    check_participant_name(participant).map_err(|e| anyhow!(e))?;
    let grid = AnyGrid::open(&cfg.grid, &cfg.convergence_secret, OpenMode::MustExist)?;
    let members = grid
        .list(&cfg.collective_cap)
        .await
        .context("listing the collective")?;
    if members.contains_key(participant) {
        bail!("{participant:?} is already a participant of {folder:?}");
    }
    Ok((cfg, grid))
}

/// Checks a joined folder's local name (valid, not taken here) and our
/// author name.
pub(crate) fn check_new_names(config: &ConfigDir, name: &str, author: &str) -> anyhow::Result<()> {
    check_folder_name(name)?;
    if config.folder_file(name).exists() {
        bail!("a magic folder named {name:?} already exists here; choose another with --name");
    }
    check_participant_name(author).map_err(|e| anyhow!("author name: {e}"))?;
    Ok(())
}

/// Arguments of `join`.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// The invite code.
    pub code: String,
    /// The directory to synchronise (created if missing).
    pub local_dir: PathBuf,
    /// Local folder name (default: the inviter's).
    pub name: Option<String>,
    /// Author name for our snapshots (default: the invited participant name).
    pub author: Option<String>,
    /// Where the grid is on this machine, if not where the inviter has it.
    pub grid: Option<GridChoice>,
    /// Timing settings.
    pub tuning: Tuning,
    /// The Magic Wormhole mailbox server, for a wormhole code (default:
    /// the config directory's, else 24.3's default).
    pub mailbox: Option<String>,
    /// Join read-only (a wormhole invite only): our changes reach no one.
    pub read_only: bool,
    /// How long to wait for the inviter on a wormhole code (default
    /// [`super::invite_v1::DEFAULT_JOIN_WAIT`]).
    pub wait: Option<Duration>,
}

/// A folder joined by the collective's read capability (a wormhole invite):
/// everything but our personal directory, which [`join_by_capability`] makes.
#[derive(Clone, Debug)]
pub(crate) struct Joined {
    pub name: String,
    pub local_path: PathBuf,
    pub location: GridLocation,
    pub tuning: Tuning,
    pub collective: Capability,
    pub participant: String,
    pub author: String,
    /// The embedded grid's convergence secret (a Tahoe node keeps its own).
    pub convergence_secret: Secret32,
}

/// Configures a folder from its collective's read capability: makes our
/// personal directory and returns its read capability, for the admin to
/// link into the collective.
pub(crate) async fn join_by_capability(
    config: &ConfigDir,
    j: Joined,
) -> anyhow::Result<(FolderInfo, Capability)> {
    let convergence_secret = j.convergence_secret;
    let grid = AnyGrid::open(&j.location, &convergence_secret, OpenMode::MustExist)?;
    let collective = grid
        .list(&j.collective)
        .await
        .map_err(|e| anyhow!("cannot read the folder on the grid: {e}"))?;
    // Every participant writes the folder's format, which it must know.
    let format = FolderFormat::of_collective(&grid, &collective)
        .await
        .context("reading the folder's format")?;
    let personal = new_personal_dir(&grid).await?;
    let personal_read = read_only(&personal)?;
    let cfg = folder_config(
        j.name,
        j.local_path,
        &j.tuning,
        (j.location, format),
        (j.collective, personal),
        (j.participant, j.author),
        convergence_secret,
    );
    ensure_marker(&cfg.local_path)?;
    config.add_folder(&cfg)?;
    Ok((summary(&cfg, config.daemon_running()), personal_read))
}

/// A folder's configuration, with a new signing key.
fn folder_config(
    name: String,
    local_path: PathBuf,
    t: &Tuning,
    (location, format): (GridLocation, FolderFormat),
    (collective_cap, personal_cap): (Capability, Capability),
    (participant, author_name): (String, String),
    convergence_secret: Secret32,
) -> FolderConfig {
    let (versions_max_age_ms, versions_per_file) = t.retention();
    FolderConfig {
        version: CONFIG_VERSION,
        name,
        local_path,
        poll_interval_ms: ms(t.poll_interval.unwrap_or(location.default_poll_interval())),
        scan_interval_ms: ms(t.scan_interval.unwrap_or(DEFAULT_SCAN)),
        pending_delay_ms: ms(t.pending_delay.unwrap_or(DEFAULT_PENDING_DELAY)),
        umask: t.umask.unwrap_or(DEFAULT_UMASK),
        versions_max_age_ms,
        versions_per_file,
        grid: location,
        collective_cap,
        personal_cap,
        participant,
        author_name,
        author_seed: Secret32::random(),
        convergence_secret,
        layout: format.layout,
        content: format.content,
        snapshots: format.snapshots,
        moved_from: None,
    }
}

/// `join`: accepts an invite — one of our codes, or a Magic Wormhole code
/// (magic-folder 24.3's invite-v1, see [`super::invite_v1`]).
pub async fn join(config: &ConfigDir, opts: JoinOptions) -> anyhow::Result<FolderInfo> {
    if super::invite_v1::is_wormhole_code(&opts.code) {
        config.init()?;
        let mailbox = opts.mailbox.clone().unwrap_or_else(|| config.mailbox_url());
        return super::invite_v1::join(config, opts, &mailbox).await;
    }
    if opts.read_only {
        bail!("only a wormhole invite can be joined read-only");
    }
    super::invite_codes::join(config, opts).await
}

/// What `leave` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaveOutcome {
    /// The folder.
    pub name: String,
    /// Its directory, left untouched (unknown if the config was corrupt).
    pub local_path: Option<PathBuf>,
    /// True if we were (or may have been) the admin: the collective's write
    /// capability is gone.
    pub was_admin: bool,
}

/// `leave`: forgets a folder locally (config and state). The local files
/// stay; nothing on the grid changes. For the admin this destroys the only
/// copy of the collective's write capability, so it needs
/// `really_delete_write_capability`.
pub fn leave(
    config: &ConfigDir,
    name: &str,
    really_delete_write_capability: bool,
) -> anyhow::Result<LeaveOutcome> {
    config.require_initialised()?;
    let cfg = match config.load_folder(name) {
        Ok(cfg) => Some(cfg),
        // A corrupt config can still be removed; we cannot tell whether it
        // held an admin capability, so the flag is needed.
        Err(ConfigError::Corrupt { .. }) if really_delete_write_capability => None,
        Err(e @ ConfigError::Corrupt { .. }) => bail!(
            "{e}\nIts config cannot be read, so it may hold the collective's write capability; \
             add --really-delete-write-capability to remove it anyway"
        ),
        Err(e) => return Err(e.into()),
    };
    let was_admin = cfg.as_ref().is_none_or(FolderConfig::is_admin);
    if cfg.as_ref().is_some_and(FolderConfig::is_admin) && !really_delete_write_capability {
        bail!(
            "you are the admin of {name:?}: leaving deletes the only copy of the collective's write \
             capability, so nobody can invite anyone to it again. If that is what you want, add \
             --really-delete-write-capability"
        );
    }
    config.remove_folder(name)?;
    Ok(LeaveOutcome {
        name: name.to_owned(),
        local_path: cfg.map(|c| c.local_path),
        was_admin,
    })
}

/// `config NAME`: changes a folder's intervals and versions policy; a
/// running daemon restarts the folder with them at once.
pub fn tune(config: &ConfigDir, name: &str, t: &Tuning) -> anyhow::Result<FolderInfo> {
    config.require_initialised()?;
    let mut cfg = config.load_folder(name)?;
    if let Some(d) = t.poll_interval {
        cfg.poll_interval_ms = ms(d);
    }
    if let Some(d) = t.scan_interval {
        cfg.scan_interval_ms = ms(d);
    }
    if let Some(d) = t.pending_delay {
        cfg.pending_delay_ms = ms(d);
    }
    if let Some(m) = t.umask {
        cfg.umask = m;
    }
    if let Some(d) = t.keep_versions_for {
        cfg.versions_max_age_ms = ms(d);
    }
    if let Some(n) = t.keep_versions {
        cfg.versions_per_file = n;
    }
    config.update_folder(&cfg)?;
    Ok(summary(&cfg, config.daemon_running()))
}

/// `list`: every configured folder; `running` says whether a daemon runs
/// on this config directory.
pub fn list(config: &ConfigDir) -> anyhow::Result<Vec<FolderInfo>> {
    // Before `init` there are simply no folders: an answer, not an error.
    if !config.is_initialised() {
        return Ok(Vec::new());
    }
    config.require_initialised()?;
    let running = config.daemon_running();
    Ok(config
        .load_folders()?
        .iter()
        .map(|c| summary(c, running))
        .collect())
}
