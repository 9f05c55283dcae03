//! Configuration on disk: where it lives, what it holds, and who may read it.
//!
//! Everything Magic Folder remembers between runs sits in one *config
//! directory* (default `$XDG_CONFIG_HOME/magic-folder`, else
//! `~/.config/magic-folder`; `--config DIR` or `MAGIC_FOLDER_CONFIG`
//! override it):
//!
//! ```text
//! <config>/                     0700
//! ├─ config.json                global settings ({"version": 1})
//! ├─ api_token                  0600, bearer token for the HTTP API
//! ├─ api.url                    written by `run`: http://127.0.0.1:PORT
//! ├─ api_client_endpoint        24.3's discovery file: tcp:127.0.0.1:PORT, or "not running"
//! ├─ global.sqlite              24.3's global config database (its clients open it; see discovery.rs)
//! ├─ daemon.lock                held (flock) by the running daemon; holds its PID
//! ├─ grid/                      the default embedded grid (created on first use)
//! └─ folders/<name>/            0700, one per magic folder
//!    ├─ folder.json             0600, the folder's config, capabilities and keys
//!    └─ state.sqlite            the engine's durable state
//! ```
//!
//! Most of it is secret: the folder configs hold capabilities (whoever holds a
//! write capability can change the folder), the author's signing seed and the
//! convergence secret, and the API token lets any local process drive the
//! daemon. So the directory is created owner-only and every secret file is
//! written `0600` through a temporary file and an atomic rename: a crash never
//! leaves a half-written config behind, and no secret is ever world-readable,
//! not even for a moment.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use data_encoding::{BASE64URL, BASE64URL_NOPAD, HEXLOWER};
use mf_grid::{CapKind, Capability};
use serde::{Deserialize, Serialize};

/// Environment variable that overrides the default config directory.
pub const ENV_CONFIG: &str = "MAGIC_FOLDER_CONFIG";

/// Version of `config.json` and `folder.json` this program writes.
pub const CONFIG_VERSION: u32 = 1;

/// Default poll interval on the embedded grid: listing a few local
/// directories is cheap, so a few seconds keeps participants close.
pub const DEFAULT_POLL_EMBEDDED: Duration = Duration::from_secs(3);
/// Default poll interval on Tahoe-LAFS: every poll costs one web-API listing
/// per participant, each a round trip to several storage servers; the value
/// magic-folder 24.3 uses.
pub const DEFAULT_POLL_TAHOE: Duration = Duration::from_secs(60);
/// Default interval between full scans (the watcher catches changes in
/// between; the scan is the safety net for events it missed).
pub const DEFAULT_SCAN: Duration = Duration::from_secs(600);
/// Default quiet time after a change before the watcher reports it, so a file
/// being written is uploaded once, when it is finished.
pub const DEFAULT_PENDING_DELAY: Duration = Duration::from_secs(1);
/// Default umask for files and directories written on behalf of others.
pub const DEFAULT_UMASK: u32 = 0o077;

/// Something is wrong with the configuration, phrased for the user.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `--config`, `MAGIC_FOLDER_CONFIG`, `XDG_CONFIG_HOME` nor `HOME` is set.
    #[error("cannot find a config directory: set --config, MAGIC_FOLDER_CONFIG or HOME")]
    NoConfigDir,
    /// The config directory has not been initialised.
    #[error("no Magic Folder configuration in {0} (run `magic-folder init` or `create` first)")]
    NotInitialised(PathBuf),
    /// No folder of that name.
    #[error("no magic folder named {0:?} (see `magic-folder list`)")]
    NoSuchFolder(String),
    /// A folder of that name already exists.
    #[error("a magic folder named {0:?} already exists")]
    FolderExists(String),
    /// The folder name is unusable.
    #[error("bad folder name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'")]
    BadFolderName(String),
    /// A file exists but cannot be understood.
    #[error("{path} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Another daemon already runs on this config directory.
    #[error("a magic-folder daemon is already running on {path}{}", pid.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default())]
    AlreadyRunning {
        /// The config directory.
        path: PathBuf,
        /// The PID recorded by the running daemon, if readable.
        pid: Option<String>,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl ConfigError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> ConfigError {
        ConfigError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for configuration results.
pub type ConfigResult<T> = Result<T, ConfigError>;

/// A 32-byte secret (signing seed, convergence secret). Stored as hex;
/// never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret32(pub [u8; 32]);

impl Secret32 {
    /// A fresh secret from the operating system's random source.
    pub fn random() -> Secret32 {
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b).expect("the OS random source is available");
        Secret32(b)
    }

    /// Lowercase hex (for the config file and invite codes).
    pub fn to_hex(&self) -> String {
        HEXLOWER.encode(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Secret32, String> {
        let v = HEXLOWER
            .decode(s.to_ascii_lowercase().as_bytes())
            .map_err(|e| format!("not hex: {e}"))?;
        let arr: [u8; 32] = v.try_into().map_err(|_| "not 32 bytes".to_owned())?;
        Ok(Secret32(arr))
    }
}

impl fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

impl Serialize for Secret32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Secret32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Secret32::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Where a folder's grid is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum GridLocation {
    /// An embedded grid: a directory every participant can reach (local
    /// disk, a shared mount, …).
    Embedded {
        /// Absolute path of the grid directory.
        dir: PathBuf,
    },
    /// A Tahoe-LAFS client node.
    Tahoe {
        /// The node directory (absolute path) or its web-API URL.
        node: String,
    },
}

impl GridLocation {
    /// Short name of the backend: `embedded` or `tahoe`.
    pub fn kind(&self) -> &'static str {
        match self {
            GridLocation::Embedded { .. } => "embedded",
            GridLocation::Tahoe { .. } => "tahoe",
        }
    }

    /// The default poll interval for this backend.
    pub fn default_poll_interval(&self) -> Duration {
        match self {
            GridLocation::Embedded { .. } => DEFAULT_POLL_EMBEDDED,
            GridLocation::Tahoe { .. } => DEFAULT_POLL_TAHOE,
        }
    }

    /// A location given on the command line: a Tahoe URL is kept as is,
    /// paths are made absolute (relative to the current directory).
    pub fn tahoe(node: &str) -> ConfigResult<GridLocation> {
        if node.starts_with("http://") || node.starts_with("https://") {
            Ok(GridLocation::Tahoe {
                node: node.trim_end_matches('/').to_owned(),
            })
        } else {
            let p = absolute(Path::new(node))?;
            Ok(GridLocation::Tahoe {
                node: p.to_string_lossy().into_owned(),
            })
        }
    }
}

impl fmt::Display for GridLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GridLocation::Embedded { dir } => write!(f, "embedded grid {}", dir.display()),
            GridLocation::Tahoe { node } => write!(f, "Tahoe-LAFS node {node}"),
        }
    }
}

/// The global settings (`config.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GlobalConfig {
    /// Format version (1).
    pub version: u32,
    /// The Magic Wormhole mailbox server for invites (`init --mailbox`;
    /// default magic-folder 24.3's, the public one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// The Tahoe-LAFS node (directory or URL) for folders joined through
    /// the API without naming one (`init --tahoe`; 24.3's
    /// `--node-directory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tahoe_node: Option<String>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            version: CONFIG_VERSION,
            mailbox: None,
            tahoe_node: None,
        }
    }
}

/// One magic folder's configuration (`folders/<name>/folder.json`). Secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FolderConfig {
    /// Format version (1).
    pub version: u32,
    /// The folder's local name (unique in this config directory).
    pub name: String,
    /// The synchronised directory, absolute.
    pub local_path: PathBuf,
    /// Where the grid is.
    pub grid: GridLocation,
    /// The collective directory: its write capability if we are the admin,
    /// else its read capability.
    pub collective_cap: Capability,
    /// Our personal directory's write capability.
    pub personal_cap: Capability,
    /// Our name in the collective (conflict copies of our versions carry it).
    pub participant: String,
    /// The author name written into our snapshots (normally the participant name).
    pub author_name: String,
    /// Seed of our Ed25519 signing key.
    pub author_seed: Secret32,
    /// The folder's convergence secret (same for every participant, so equal
    /// content is stored once).
    pub convergence_secret: Secret32,
    /// Milliseconds between polls of the other participants.
    pub poll_interval_ms: u64,
    /// Milliseconds between full scans of the local folder.
    pub scan_interval_ms: u64,
    /// Milliseconds of quiet before a local change is reported.
    pub pending_delay_ms: u64,
    /// Permission bits cleared on files and directories we create.
    #[serde(with = "octal")]
    pub umask: u32,
    /// How long the versions area keeps replaced and deleted files, ms.
    #[serde(default = "default_versions_max_age_ms")]
    pub versions_max_age_ms: u64,
    /// How many versions of each file the versions area keeps.
    #[serde(default = "default_versions_per_file")]
    pub versions_per_file: usize,
    /// How the folder's personal directories are laid out (the collective
    /// records it; folders configured before layouts existed are flat).
    #[serde(default)]
    pub layout: crate::personal::Layout,
    /// How the folder stores file contents (the collective records it;
    /// folders configured before chunking existed store them whole).
    #[serde(default)]
    pub content: crate::chunked::ContentFormat,
    /// How the folder stores its snapshots (the collective records it;
    /// folders configured before packs existed store one per directory).
    #[serde(default)]
    pub snapshots: crate::pack::Snapshots,
    /// The write capability of the personal directory we moved away from
    /// (see [`crate::convert`]), until it names the one we write now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<Capability>,
}

/// Folders configured before retention was a setting keep the defaults.
fn default_versions_max_age_ms() -> u64 {
    crate::fsops::Retention::default().max_age.as_millis() as u64
}

fn default_versions_per_file() -> usize {
    crate::fsops::Retention::default().per_file
}

impl FolderConfig {
    /// The folder's format as this config records it.
    pub fn format(&self) -> crate::format::FolderFormat {
        crate::format::FolderFormat {
            layout: self.layout,
            content: self.content,
            snapshots: self.snapshots,
        }
    }

    /// What the versions area keeps.
    pub fn retention(&self) -> crate::fsops::Retention {
        crate::fsops::Retention {
            max_age: Duration::from_millis(self.versions_max_age_ms),
            per_file: self.versions_per_file,
        }
    }

    /// True if we hold the collective's write capability (we can invite, and
    /// leaving would destroy that capability).
    pub fn is_admin(&self) -> bool {
        self.collective_cap.kind() == CapKind::MutableDirWrite
    }

    /// Checks what serde cannot: names, absolute paths, capability kinds.
    pub fn validate(&self) -> Result<(), String> {
        check_folder_name(&self.name).map_err(|e| e.to_string())?;
        mf_core::relpath::check_participant_name(&self.participant)?;
        mf_core::relpath::check_participant_name(&self.author_name)?;
        if !self.local_path.is_absolute() {
            return Err(format!(
                "local_path {} is not absolute",
                self.local_path.display()
            ));
        }
        if !self.collective_cap.kind().is_dir() || self.collective_cap.kind().is_immutable() {
            return Err("collective_cap is not a mutable directory capability".into());
        }
        if self.personal_cap.kind() != CapKind::MutableDirWrite {
            return Err("personal_cap is not a directory write capability".into());
        }
        if let Some(old) = &self.moved_from {
            if old.kind() != CapKind::MutableDirWrite {
                return Err("moved_from is not a directory write capability".into());
            }
        }
        if self.poll_interval_ms == 0 || self.scan_interval_ms == 0 {
            return Err("poll and scan intervals must be positive".into());
        }
        if self.umask > 0o777 {
            return Err(format!("umask {:o} is not a permission mask", self.umask));
        }
        Ok(())
    }

    /// The poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    /// The scan interval.
    pub fn scan_interval(&self) -> Duration {
        Duration::from_millis(self.scan_interval_ms)
    }
    /// The pending delay.
    pub fn pending_delay(&self) -> Duration {
        Duration::from_millis(self.pending_delay_ms)
    }
}

/// Serde helper: the umask as an octal string ("077"), as people write it.
mod octal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:03o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_umask(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses an octal umask such as `077`, `0o022` or `0027`.
pub fn parse_umask(s: &str) -> Result<u32, String> {
    let t = s.trim().trim_start_matches("0o");
    let v = u32::from_str_radix(t, 8).map_err(|_| format!("{s:?} is not an octal umask"))?;
    if v > 0o777 {
        return Err(format!("umask {s:?} is larger than 777"));
    }
    Ok(v)
}

/// Parses a duration such as `300ms`, `3s`, `2.5s`, `10m`, `1h`, `30d`, or a
/// bare number of seconds. (Our own rather than `humantime`: that takes
/// neither fractions nor bare numbers, which existing folder settings use.)
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 500ms, 3s, 10m)"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("{s:?}: unknown unit (use ms, s, m, h or d)")),
    };
    let secs = n * scale;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("{s:?} is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Checks a folder name: it names a directory in the config directory and
/// appears in URLs, so it is kept to a safe file-name alphabet.
pub fn check_folder_name(name: &str) -> ConfigResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadFolderName(name.to_owned()))
    }
}

/// Makes a path absolute against the current directory, without requiring
/// it to exist and without resolving symlinks.
pub fn absolute(p: &Path) -> ConfigResult<PathBuf> {
    std::path::absolute(p).map_err(|e| ConfigError::io(format!("resolving {}", p.display()), e))
}

/// The config directory and everything in it.
#[derive(Clone, Debug)]
pub struct ConfigDir {
    root: PathBuf,
}

/// Holds the daemon lock while alive; the lock is released when the file
/// closes (on drop, or when the process dies however it dies).
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

impl ConfigDir {
    /// Chooses the config directory: `explicit` (from `--config`), else
    /// `MAGIC_FOLDER_CONFIG`, else the platform's user config directory
    /// (`directories`: `$XDG_CONFIG_HOME/magic-folder` or
    /// `~/.config/magic-folder` on Linux, `~/Library/Application
    /// Support/magic-folder` on macOS — where 24.3 and its clients look too).
    pub fn resolve(explicit: Option<&Path>) -> ConfigResult<ConfigDir> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = if let Some(p) = explicit {
            p.to_owned()
        } else if let Some(p) = env(ENV_CONFIG) {
            p
        } else if let Some(dirs) = directories::ProjectDirs::from("", "", "magic-folder") {
            dirs.config_dir().to_owned()
        } else {
            return Err(ConfigError::NoConfigDir);
        };
        Ok(ConfigDir {
            root: absolute(&root)?,
        })
    }

    /// A config directory at exactly this path.
    pub fn at(root: impl Into<PathBuf>) -> ConfigDir {
        ConfigDir { root: root.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }
    /// `config.json`.
    pub fn global_file(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// `api_token`.
    pub fn token_file(&self) -> PathBuf {
        self.root.join("api_token")
    }
    /// `api.url`.
    pub fn api_url_file(&self) -> PathBuf {
        self.root.join("api.url")
    }
    /// `daemon.lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }
    /// The default embedded grid directory.
    pub fn default_grid_dir(&self) -> PathBuf {
        self.root.join("grid")
    }
    /// `folders/`.
    pub fn folders_dir(&self) -> PathBuf {
        self.root.join("folders")
    }
    /// `folders/<name>/`.
    pub fn folder_dir(&self, name: &str) -> PathBuf {
        self.folders_dir().join(name)
    }
    /// `folders/<name>/folder.json`.
    pub fn folder_file(&self, name: &str) -> PathBuf {
        self.folder_dir(name).join("folder.json")
    }
    /// `folders/<name>/state.sqlite`.
    pub fn state_db(&self, name: &str) -> PathBuf {
        self.folder_dir(name).join("state.sqlite")
    }

    /// True once `init` has run here.
    pub fn is_initialised(&self) -> bool {
        self.global_file().is_file()
    }

    /// Creates the directory (0700), `config.json` and an API token, if they
    /// do not exist yet. Returns true if anything was created. Idempotent.
    pub fn init(&self) -> ConfigResult<bool> {
        let mut created = false;
        if !self.root.is_dir() {
            create_private_dir_all(&self.root)?;
            created = true;
        }
        create_private_dir_all(&self.folders_dir())?;
        if !self.global_file().exists() {
            let json = serde_json::to_vec_pretty(&GlobalConfig::default()).expect("serialises");
            write_private(&self.global_file(), &json)?;
            created = true;
        }
        if !self.token_file().exists() {
            self.rotate_token()?;
            created = true;
        } else {
            self.pad_token()?;
        }
        Ok(created)
    }

    /// Fails with a clear message unless `init` has run.
    pub fn require_initialised(&self) -> ConfigResult<()> {
        if self.is_initialised() {
            self.load_global().map(|_| ())
        } else {
            Err(ConfigError::NotInitialised(self.root.clone()))
        }
    }

    /// The Magic Wormhole mailbox server invites use here.
    pub fn mailbox_url(&self) -> String {
        self.load_global()
            .ok()
            .and_then(|g| g.mailbox)
            .unwrap_or_else(|| crate::commands::invite_v1::DEFAULT_MAILBOX.to_owned())
    }

    /// The Tahoe-LAFS node for a folder joined through the API without
    /// naming one (24.3's API has no such field: a 24.3 daemon has one
    /// node): the one `init --tahoe` set, else the one node this daemon's
    /// folders use.
    pub fn tahoe_node(&self) -> anyhow::Result<String> {
        if let Some(node) = self.load_global()?.tahoe_node {
            return Ok(node);
        }
        let mut nodes: Vec<String> = self
            .load_folders()?
            .into_iter()
            .filter_map(|f| match f.grid {
                GridLocation::Tahoe { node } => Some(node),
                GridLocation::Embedded { .. } => None,
            })
            .collect();
        nodes.sort();
        nodes.dedup();
        match nodes.as_slice() {
            [one] => Ok(one.clone()),
            [] => anyhow::bail!("this daemon knows no Tahoe-LAFS node: `magic-folder init --tahoe NODE`, or join with `magic-folder join CODE DIR --tahoe NODE`"),
            _ => anyhow::bail!("this daemon's folders use several Tahoe-LAFS nodes: join with `magic-folder join CODE DIR --tahoe NODE`"),
        }
    }

    /// Records the Magic Wormhole mailbox server invites use here, and the
    /// Tahoe-LAFS node folders joined through the API use (each if given).
    pub fn set_defaults(
        &self,
        mailbox: Option<&str>,
        tahoe_node: Option<&str>,
    ) -> ConfigResult<()> {
        let mut g = self.load_global()?;
        if let Some(url) = mailbox {
            g.mailbox = Some(url.to_owned());
        }
        if let Some(node) = tahoe_node {
            g.tahoe_node = Some(node.to_owned());
        }
        let json = serde_json::to_vec_pretty(&g).expect("serialises");
        write_private(&self.global_file(), &json)
    }

    /// Reads `config.json`.
    pub fn load_global(&self) -> ConfigResult<GlobalConfig> {
        let g: GlobalConfig = read_json(&self.global_file())?;
        if g.version != CONFIG_VERSION {
            return Err(ConfigError::Corrupt {
                path: self.global_file(),
                detail: format!(
                    "unsupported version {} (this program writes {CONFIG_VERSION})",
                    g.version
                ),
            });
        }
        Ok(g)
    }

    /// Writes a fresh random API token and returns it: 32 random bytes in
    /// padded base64url, no newline — exactly 24.3's form, which its clients
    /// (`magic-folder-api`, GridSync) check before they send it.
    pub fn rotate_token(&self) -> ConfigResult<String> {
        let token = BASE64URL.encode(&Secret32::random().0);
        write_private(&self.token_file(), token.as_bytes())?;
        Ok(token)
    }

    /// Rewrites a token of an earlier release (base64url without padding)
    /// in 24.3's form: the same secret, so clients that hold it go on.
    fn pad_token(&self) -> ConfigResult<()> {
        let Ok(t) = self.api_token() else {
            return Ok(());
        };
        if let Ok(bytes) = BASE64URL_NOPAD.decode(t.as_bytes()) {
            if bytes.len() == 32 {
                write_private(&self.token_file(), BASE64URL.encode(&bytes).as_bytes())?;
            }
        }
        Ok(())
    }

    /// Reads the API token.
    pub fn api_token(&self) -> ConfigResult<String> {
        let path = self.token_file();
        let s = fs::read_to_string(&path)
            .map_err(|e| ConfigError::io(format!("reading {}", path.display()), e))?;
        let t = s.trim().to_owned();
        if t.len() < 16 {
            return Err(ConfigError::Corrupt {
                path,
                detail: "token too short".into(),
            });
        }
        Ok(t)
    }

    /// Records where the running daemon's API listens.
    pub fn write_api_url(&self, url: &str) -> ConfigResult<()> {
        write_private(&self.api_url_file(), format!("{url}\n").as_bytes())
    }

    /// Where the daemon's API listens, if a daemon recorded it.
    pub fn read_api_url(&self) -> Option<String> {
        let s = fs::read_to_string(self.api_url_file()).ok()?;
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_owned())
    }

    /// Forgets the API URL (the daemon is stopping).
    pub fn remove_api_url(&self) {
        let _ = fs::remove_file(self.api_url_file());
    }

    /// Takes the daemon lock, or fails with [`ConfigError::AlreadyRunning`].
    /// The lock is an OS file lock, so a daemon killed with `kill -9` never
    /// leaves a stale lock behind.
    pub fn lock_daemon(&self) -> ConfigResult<DaemonLock> {
        let path = self.lock_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| ConfigError::io(format!("opening {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let pid = fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty());
                return Err(ConfigError::AlreadyRunning {
                    path: self.root.clone(),
                    pid,
                });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(ConfigError::io(format!("locking {}", path.display()), e));
            }
        }
        file.set_len(0)
            .map_err(|e| ConfigError::io("truncating the lock file", e))?;
        let _ = writeln!(file, "{}", std::process::id());
        Ok(DaemonLock { _file: file })
    }

    /// True if a daemon holds the lock on this config directory right now.
    pub fn daemon_running(&self) -> bool {
        let Ok(file) = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.lock_file())
        else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(fs::TryLockError::WouldBlock) => true,
            Err(fs::TryLockError::Error(_)) => false,
        }
    }

    /// Names of every configured folder, sorted.
    pub fn folder_names(&self) -> ConfigResult<Vec<String>> {
        let dir = self.folders_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ConfigError::io(format!("listing {}", dir.display()), e)),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry =
                entry.map_err(|e| ConfigError::io(format!("listing {}", dir.display()), e))?;
            if let Some(name) = entry.file_name().to_str() {
                if check_folder_name(name).is_ok() && entry.path().join("folder.json").is_file() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every folder's configuration; a corrupt one is an error, not skipped.
    pub fn load_folders(&self) -> ConfigResult<Vec<FolderConfig>> {
        self.folder_names()?
            .iter()
            .map(|n| self.load_folder(n))
            .collect()
    }

    /// One folder's configuration.
    pub fn load_folder(&self, name: &str) -> ConfigResult<FolderConfig> {
        check_folder_name(name)?;
        let path = self.folder_file(name);
        if !path.is_file() {
            return Err(ConfigError::NoSuchFolder(name.to_owned()));
        }
        let cfg: FolderConfig = read_json(&path)?;
        if cfg.version != CONFIG_VERSION {
            return Err(ConfigError::Corrupt {
                path,
                detail: format!("unsupported version {}", cfg.version),
            });
        }
        if cfg.name != name {
            return Err(ConfigError::Corrupt {
                path,
                detail: format!("it names folder {:?}", cfg.name),
            });
        }
        cfg.validate()
            .map_err(|detail| ConfigError::Corrupt { path, detail })?;
        Ok(cfg)
    }

    /// Saves a new folder's configuration; fails if the name is taken.
    pub fn add_folder(&self, cfg: &FolderConfig) -> ConfigResult<()> {
        cfg.validate().map_err(|detail| ConfigError::Corrupt {
            path: self.folder_file(&cfg.name),
            detail,
        })?;
        let dir = self.folder_dir(&cfg.name);
        create_private_dir_all(&self.folders_dir())?;
        match create_private_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if dir.join("folder.json").exists() {
                    return Err(ConfigError::FolderExists(cfg.name.clone()));
                }
                // A leftover from an interrupted create or leave: reuse it,
                // but never with someone else's state in it.
                let _ = fs::remove_file(dir.join("state.sqlite"));
                let _ = fs::remove_file(dir.join("state.sqlite-wal"));
                let _ = fs::remove_file(dir.join("state.sqlite-shm"));
            }
            Err(e) => return Err(ConfigError::io(format!("creating {}", dir.display()), e)),
        }
        let json = serde_json::to_vec_pretty(cfg).expect("serialises");
        write_private(&self.folder_file(&cfg.name), &json)
    }

    /// Saves a changed configuration of an existing folder (atomically).
    pub fn update_folder(&self, cfg: &FolderConfig) -> ConfigResult<()> {
        let path = self.folder_file(&cfg.name);
        cfg.validate().map_err(|detail| ConfigError::Corrupt {
            path: path.clone(),
            detail,
        })?;
        if !path.is_file() {
            return Err(ConfigError::NoSuchFolder(cfg.name.clone()));
        }
        let json = serde_json::to_vec_pretty(cfg).expect("serialises");
        write_private(&path, &json)
    }

    /// Deletes a folder's configuration and state (never its local files).
    pub fn remove_folder(&self, name: &str) -> ConfigResult<()> {
        check_folder_name(name)?;
        let dir = self.folder_dir(name);
        if !dir.join("folder.json").is_file() {
            return Err(ConfigError::NoSuchFolder(name.to_owned()));
        }
        // Remove the config first: from then on the folder is gone even if
        // removing the rest is interrupted.
        fs::remove_file(dir.join("folder.json"))
            .map_err(|e| ConfigError::io(format!("removing {}", dir.display()), e))?;
        fs::remove_dir_all(&dir)
            .map_err(|e| ConfigError::io(format!("removing {}", dir.display()), e))
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> ConfigResult<T> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ConfigError::Corrupt {
                path: path.to_owned(),
                detail: "missing".into(),
            })
        }
        Err(e) => return Err(ConfigError::io(format!("reading {}", path.display()), e)),
    };
    serde_json::from_slice(&bytes).map_err(|e| ConfigError::Corrupt {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// Creates a directory (and missing parents) readable by the owner only.
pub fn create_private_dir_all(dir: &Path) -> ConfigResult<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            fs::create_dir_all(parent)
                .map_err(|e| ConfigError::io(format!("creating {}", parent.display()), e))?;
        }
    }
    match create_private_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(ConfigError::io(format!("creating {}", dir.display()), e)),
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Writes a file readable by the owner only, atomically: a temporary file
/// created `0600`, fsynced, then renamed over the target, then the directory
/// fsynced. (Our own rather than `tempfile`'s `persist`, which renames
/// without either fsync: a crash could leave an empty config behind.)
pub fn write_private(path: &Path, bytes: &[u8]) -> ConfigResult<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), nonce()));
    let ctx = |what: &str| format!("{what} {}", path.display());
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| ConfigError::io(ctx("writing"), e))
}

fn nonce() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(root: &Path) -> FolderConfig {
        FolderConfig {
            version: 1,
            name: "docs".into(),
            local_path: root.join("docs"),
            grid: GridLocation::Embedded {
                dir: root.join("grid"),
            },
            collective_cap: Capability::parse("URI:MF-DIR:abc").unwrap(),
            personal_cap: Capability::parse("URI:MF-DIR:def").unwrap(),
            participant: "alice".into(),
            author_name: "alice".into(),
            author_seed: Secret32([1; 32]),
            convergence_secret: Secret32([2; 32]),
            poll_interval_ms: 3000,
            scan_interval_ms: 600_000,
            pending_delay_ms: 1000,
            umask: 0o077,
            versions_max_age_ms: 86_400_000,
            versions_per_file: 3,
            layout: crate::personal::Layout::Flat,
            content: crate::chunked::ContentFormat::Whole,
            snapshots: crate::pack::Snapshots::Single,
            moved_from: None,
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(
            parse_duration("2d").unwrap(),
            Duration::from_secs(2 * 86_400)
        );
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        for bad in ["", "x", "3 weeks", "0", "-1s", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn umask_parses_octal() {
        assert_eq!(parse_umask("077").unwrap(), 0o077);
        assert_eq!(parse_umask("0o022").unwrap(), 0o022);
        assert!(parse_umask("8").is_err());
        assert!(parse_umask("1777").is_err());
    }

    #[test]
    fn folder_names() {
        for ok in ["docs", "My-Folder_2", "a.b"] {
            assert!(check_folder_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_folder_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn init_add_load_remove_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let cd = ConfigDir::at(tmp.path().join("cfg"));
        assert!(matches!(
            cd.require_initialised(),
            Err(ConfigError::NotInitialised(_))
        ));
        assert!(cd.init().unwrap());
        assert!(!cd.init().unwrap());
        cd.require_initialised().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(cd.path()), 0o700);
            assert_eq!(mode(&cd.token_file()), 0o600);
        }
        let cfg = sample(tmp.path());
        cd.add_folder(&cfg).unwrap();
        assert!(matches!(
            cd.add_folder(&cfg),
            Err(ConfigError::FolderExists(_))
        ));
        let back = cd.load_folder("docs").unwrap();
        assert_eq!(back.author_seed, cfg.author_seed);
        assert_eq!(back.umask, 0o077);
        assert!(back.is_admin());
        assert_eq!(cd.folder_names().unwrap(), vec!["docs".to_owned()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(cd.folder_file("docs"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
        cd.remove_folder("docs").unwrap();
        assert!(matches!(
            cd.load_folder("docs"),
            Err(ConfigError::NoSuchFolder(_))
        ));
        assert!(matches!(
            cd.remove_folder("docs"),
            Err(ConfigError::NoSuchFolder(_))
        ));
    }

    #[test]
    fn corrupt_config_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let cd = ConfigDir::at(tmp.path());
        cd.init().unwrap();
        fs::create_dir_all(cd.folder_dir("x")).unwrap();
        fs::write(cd.folder_file("x"), b"{not json").unwrap();
        let err = cd.load_folder("x").unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn daemon_lock_is_exclusive() {
        let tmp = tempfile::tempdir().unwrap();
        let cd = ConfigDir::at(tmp.path());
        cd.init().unwrap();
        assert!(!cd.daemon_running());
        let lock = cd.lock_daemon().unwrap();
        assert!(cd.daemon_running());
        let err = cd.lock_daemon().unwrap_err();
        assert!(
            matches!(err, ConfigError::AlreadyRunning { pid: Some(_), .. }),
            "{err}"
        );
        drop(lock);
        assert!(!cd.daemon_running());
        cd.lock_daemon().unwrap();
    }
}
