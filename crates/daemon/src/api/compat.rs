//! magic-folder 24.3's `/v1` routes, in its shapes and status codes
//! (`web.py`; the facts are in `docs/magic-folder-24.3.md` §6), so that
//! clients written for it — its own `magic-folder-api`, GridSync — drive
//! this daemon unchanged.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/magic-folder[?include_secret_information=1]` | `{name: `[`FolderListing`]`}` |
//! | `PUT /v1/magic-folder/{f}/scan-local` | `{}` once a scan is asked for |
//! | `PUT /v1/magic-folder/{f}/poll-remote` | `{}` once a poll is asked for |
//! | `POST /v1/magic-folder/{f}/snapshot?path=REL` | 201 `{}`: the file is looked at now |
//! | `GET /v1/magic-folder/{f}/file-status` | `[{relpath, mtime, last-updated, last-upload-duration, size}]` |
//! | `GET /v1/magic-folder/{f}/recent-changes[?number=N]` | `[{relpath, modified, last-updated, conflicted}]`, newest first |
//! | `GET /v1/magic-folder/{f}/conflicts` | `{relpath: [participant, …]}` |
//! | `GET /v1/magic-folder/{f}/participants` | `{name: {personal_dmd}}` |
//! | `GET /v1/snapshot` | `{folder: {relpath: [local snapshot]}}`: changes not uploaded yet |
//! | `GET /v1/magic-folder/{f}/tahoe-objects` | `[size, …]`: each current version's snapshot, metadata and content objects |
//! | `POST /v1/magic-folder/{f}/participants` | 201 `{}`: `{"author": {"name"}, "personal_dmd": read cap}` added to the collective |
//! | `DELETE /v1/magic-folder/{f}/participants/{name}` | ours: `{}`, the participant is out of the collective |
//!
//! Where 24.3 does something only it can (its `last-upload-duration`), the
//! field is there with `null`. Times are whole seconds, as 24.3's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use data_encoding::{BASE32, BASE64};
use futures_util::{StreamExt, TryStreamExt};
use mf_core::relpath::RelPath;
use mf_core::snapshot::{Author, Content};
use mf_core::store::LocalState;
use mf_grid::{CapKind, Capability, Grid, GridError};
use mf_state::StateReader;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{json_body, no_folder, ApiError, ApiState};
use crate::commands::participants::{self, MembershipError};
use crate::commands::{AnyGrid, OpenMode};
use crate::config::FolderConfig;
use crate::pack::{PackCache, SnapshotRef};

/// One folder as 24.3's `GET /v1/magic-folder` lists it, plus our fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderListing {
    /// The folder's name.
    pub name: String,
    /// Our author: name and Ed25519 verify key (base32, as 24.3 writes it).
    pub author: AuthorInfo,
    /// Where replaced and deleted files are kept (24.3: its stash).
    pub stash_path: PathBuf,
    /// The synchronised directory.
    pub magic_path: PathBuf,
    /// Seconds between polls.
    pub poll_interval: u64,
    /// Seconds between full scans.
    pub scan_interval: Option<u64>,
    /// True if we hold the collective's write capability.
    pub is_admin: bool,
    /// With `include_secret_information=1`: the collective's capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collective_dircap: Option<String>,
    /// With `include_secret_information=1`: our personal directory's write capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_dircap: Option<String>,
    /// Ours: our participant name in the collective.
    pub participant: String,
    /// Ours: `embedded` or `tahoe`.
    pub grid: String,
    /// Ours: false if the folder's service stopped with an error.
    pub running: bool,
}

/// An author as 24.3 lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorInfo {
    /// The author's name.
    pub name: String,
    /// Ed25519 verify key, base32.
    pub verify_key: String,
    /// With `include_secret_information=1`: the signing key, base32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct SecretsQuery {
    #[serde(default)]
    include_secret_information: Option<String>,
}

fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

fn listing(c: &FolderConfig, running: bool, secrets: bool) -> FolderListing {
    let author = Author::from_seed(&c.author_name, c.author_seed.0);
    let verify_key = BASE64
        .decode(author.verify_key().as_bytes())
        .map(|k| BASE32.encode(&k))
        .unwrap_or_default();
    FolderListing {
        name: c.name.clone(),
        author: AuthorInfo {
            name: c.author_name.clone(),
            verify_key,
            signing_key: secrets.then(|| BASE32.encode(&c.author_seed.0)),
        },
        stash_path: c.local_path.join(".magic-folder").join("versions"),
        magic_path: c.local_path.clone(),
        poll_interval: seconds(c.poll_interval_ms),
        scan_interval: Some(seconds(c.scan_interval_ms)),
        is_admin: c.is_admin(),
        collective_dircap: secrets.then(|| c.collective_cap.as_str().to_owned()),
        upload_dircap: secrets.then(|| c.personal_cap.as_str().to_owned()),
        participant: c.participant.clone(),
        grid: c.grid.kind().to_owned(),
        running,
    }
}

pub(super) async fn list_folders(
    State(state): State<ApiState>,
    Query(q): Query<SecretsQuery>,
) -> Json<BTreeMap<String, FolderListing>> {
    let secrets = q.include_secret_information.is_some_and(|v| v == "1");
    let folders = state.folders.read().await;
    Json(
        folders
            .iter()
            .map(|(name, h)| {
                (
                    name.clone(),
                    listing(&h.config(), h.failure().is_none(), secrets),
                )
            })
            .collect(),
    )
}

/// The folder's config, if it runs.
async fn running(state: &ApiState, name: &str) -> Result<FolderConfig, ApiError> {
    let folders = state.folders.read().await;
    Ok(folders
        .get(name)
        .ok_or_else(|| no_folder(name))?
        .config()
        .clone())
}

fn unavailable(e: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)
}

pub(super) async fn scan_local(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let folders = state.folders.read().await;
    let h = folders.get(&name).ok_or_else(|| no_folder(&name))?;
    h.request_scan().await.map_err(unavailable)?;
    Ok(Json(json!({})))
}

pub(super) async fn poll_remote(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let folders = state.folders.read().await;
    let h = folders.get(&name).ok_or_else(|| no_folder(&name))?;
    h.request_poll().await.map_err(unavailable)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(super) struct SnapshotQuery {
    path: Option<String>,
}

/// 24.3 stores a local snapshot of the file; here the folder is looked at
/// now, which uploads the file if it changed.
pub(super) async fn add_snapshot(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<SnapshotQuery>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let path = q
        .path
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "the 'path' argument is required"))?;
    RelPath::new(&path).map_err(|e| {
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!("{path:?} is not within the magic folder: {e}"),
        )
    })?;
    let folders = state.folders.read().await;
    let h = folders.get(&name).ok_or_else(|| no_folder(&name))?;
    h.request_scan().await.map_err(unavailable)?;
    Ok((StatusCode::CREATED, Json(json!({}))))
}

/// Every path's current record and snapshot, from the state database.
async fn current(
    state: &ApiState,
    name: &str,
) -> Result<Vec<(String, LocalState, mf_core::snapshot::SnapshotInfo)>, ApiError> {
    running(state, name).await?;
    let db = state.config.state_db(name);
    tokio::task::spawn_blocking(move || {
        let reader = StateReader::open(&db).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (path, cur) in reader.current_entries().map_err(|e| e.to_string())? {
            if path.is_internal() {
                continue;
            }
            if let Some(info) = reader.snapshot(&cur.snapshot).map_err(|e| e.to_string())? {
                out.push((path.to_string(), cur.local, info));
            }
        }
        Ok::<_, String>(out)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(unavailable)
}

pub(super) async fn file_status(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let files = current(&state, &name).await?;
    Ok(Json(
        files
            .into_iter()
            .filter_map(|(path, local, info)| match (local, &info.content) {
                (LocalState::File(s), Content::File { .. }) => Some(json!({
                    "relpath": path,
                    "mtime": s.mtime_ns.div_euclid(1_000_000_000),
                    "last-updated": info.mtime_s,
                    "last-upload-duration": null,
                    "size": s.size,
                })),
                _ => None,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub(super) struct NumberQuery {
    number: Option<usize>,
}

pub(super) async fn recent_changes(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<NumberQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let conflicted: Vec<String> = conflicts_of(&state, &name).await?.into_keys().collect();
    let mut files = current(&state, &name).await?;
    files.sort_by(|a, b| b.2.mtime_s.cmp(&a.2.mtime_s).then_with(|| a.0.cmp(&b.0)));
    Ok(Json(
        files
            .into_iter()
            .filter(|(_, _, info)| matches!(info.content, Content::File { .. }))
            .take(q.number.unwrap_or(30))
            .map(|(path, local, info)| {
                let modified = match local {
                    LocalState::File(s) => json!(s.mtime_ns.div_euclid(1_000_000_000)),
                    _ => Value::Null,
                };
                json!({
                    "relpath": path,
                    "modified": modified,
                    "last-updated": info.mtime_s,
                    "conflicted": conflicted.contains(&path),
                })
            })
            .collect(),
    ))
}

async fn conflicts_of(
    state: &ApiState,
    name: &str,
) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let status = {
        let folders = state.folders.read().await;
        let h = folders.get(name).ok_or_else(|| no_folder(name))?;
        h.status().await.map_err(unavailable)?
    };
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in status.conflicts {
        out.entry(c.path).or_default().push(c.participant);
    }
    Ok(out)
}

pub(super) async fn conflicts(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<BTreeMap<String, Vec<String>>>, ApiError> {
    conflicts_of(&state, &name).await.map(Json)
}

fn grid_failed(e: GridError) -> ApiError {
    if e.is_transient() {
        unavailable(e.to_string())
    } else {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// `GET /v1/snapshot`: in every folder, each path whose local change the
/// folder has noticed (by a scan, or by the watcher once the pending delay
/// has passed) and not uploaded yet, as 24.3 lists its local snapshots: `{folder: {relpath:
/// [{"type": "local", "parents": [], "content-path", "identifier",
/// "author"}]}}`. We make a snapshot only as we upload, so each path has
/// one entry: the change waiting (its `content-path` is null for a
/// deletion, where 24.3 fails); the identifier names the path's present
/// state (it changes when the file does).
pub(super) async fn local_snapshots(
    State(state): State<ApiState>,
) -> Result<Json<BTreeMap<String, BTreeMap<String, Vec<Value>>>>, ApiError> {
    let folders = state.folders.read().await;
    let mut out = BTreeMap::new();
    for (name, handle) in folders.iter() {
        let cfg = handle.config();
        let changes = handle.local_changes().await.map_err(unavailable)?;
        let mut paths = BTreeMap::new();
        for path in changes {
            let abs = cfg.local_path.join(path.as_str());
            let state = std::fs::symlink_metadata(&abs).ok();
            let identifier = {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                h.update(path.as_str().as_bytes());
                if let Some(m) = &state {
                    use std::os::unix::fs::MetadataExt;
                    h.update(m.size().to_le_bytes());
                    h.update(m.mtime_nsec().to_le_bytes());
                    h.update(m.mtime().to_le_bytes());
                    h.update(m.ctime().to_le_bytes());
                }
                uuid_shaped(&h.finalize()[..16])
            };
            let entry = json!({
                "type": "local",
                "parents": [],
                "content-path": state.filter(|m| m.is_file()).map(|_| abs),
                "identifier": identifier,
                "author": {"name": cfg.author_name, "verify_key": author_key_b64(&cfg)},
            });
            paths.insert(path.to_string(), vec![entry]);
        }
        out.insert(name.clone(), paths);
    }
    Ok(Json(out))
}

/// Our verify key in standard base64, as 24.3's snapshots carry it.
fn author_key_b64(cfg: &FolderConfig) -> String {
    Author::from_seed(&cfg.author_name, cfg.author_seed.0).verify_key()
}

/// Sixteen bytes written as a version-4-shaped UUID.
pub(super) fn uuid_shaped(b: &[u8]) -> String {
    let mut b: [u8; 16] = b.try_into().expect("sixteen bytes");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = data_encoding::HEXLOWER.encode(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `GET …/tahoe-objects`: for each path's current version, the sizes of
/// its snapshot (a pack once, whatever the number of its members listed),
/// metadata and content objects (none for a deletion's or a
/// directory's content; a chunk list and its chunks for chunked content),
/// as 24.3 lists them — what the folder occupies on
/// the grid now. The metadata object's size needs the snapshot's listing.
pub(super) async fn tahoe_objects(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<u64>>, ApiError> {
    let cfg = running(&state, &name).await?;
    let files = current(&state, &name).await?;
    let grid = AnyGrid::open(&cfg.grid, &cfg.convergence_secret, OpenMode::MustExist)
        .map_err(|e| unavailable(format!("{e:#}")))?;
    let grid = &grid;
    // A pack is listed once for all its members.
    let packs = &PackCache::default();
    let sizes: Vec<(Option<Capability>, Vec<u64>)> = futures_util::stream::iter(files)
        .map(|(_, _, info)| async move {
            let Ok(snapshot) = SnapshotRef::parse(&info.cap) else {
                return Ok((None, Vec::new()));
            };
            let children = packs.parts(grid, &snapshot).await?;
            let content = match &info.content {
                // The state database keeps a literal by reference
                // (`Content::kept`); the snapshot lists the literal itself.
                Content::File { cap, .. } if cap.is_literal_ref() => {
                    children.get("content").map(|c| c.cap.clone())
                }
                Content::File { cap, .. } => Capability::parse(cap.as_str()).ok(),
                _ => None,
            };
            // A chunk list's chunks are the file's content too.
            let chunks = match &content {
                Some(c) if c.kind() == CapKind::ImmutableDir => grid.list(c).await?,
                _ => Default::default(),
            };
            let parts = [children.get("metadata").map(|m| m.cap.clone()), content]
                .into_iter()
                .flatten()
                .chain(chunks.into_values().map(|c| c.cap))
                .filter_map(|c| c.size())
                .collect();
            Ok::<_, GridError>((Some(snapshot.dir().clone()), parts))
        })
        .buffered(8)
        .try_collect()
        .await
        .map_err(grid_failed)?;
    // A pack holds several versions: counted once.
    let mut dirs = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (dir, parts) in sizes {
        if let Some(dir) = dir.filter(|d| dirs.insert(d.clone())) {
            out.extend(dir.size());
        }
        out.extend(parts);
    }
    Ok(Json(out))
}

pub(super) async fn participants(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<BTreeMap<String, Value>>, ApiError> {
    let cfg = running(&state, &name).await?;
    let members = participants::list(&cfg).await.map_err(membership_failed)?;
    Ok(Json(
        members
            .into_iter()
            .map(|p| (p.name, json!({ "personal_dmd": p.personal_dmd })))
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewParticipant {
    author: NewAuthor,
    personal_dmd: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAuthor {
    name: String,
}

pub(super) async fn add_participant(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let cfg = running(&state, &name).await?;
    let body: NewParticipant = json_body(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Require input: author, personal_dmd ({})", e.reason),
        )
    })?;
    participants::add(&cfg, &body.author.name, &body.personal_dmd)
        .await
        .map_err(membership_failed)?;
    Ok((StatusCode::CREATED, Json(json!({}))))
}

/// Ours (24.3 has no way to remove a participant):
/// `DELETE /v1/magic-folder/{f}/participants/{name}`.
pub(super) async fn remove_participant(
    State(state): State<ApiState>,
    Path((name, participant)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let cfg = running(&state, &name).await?;
    participants::remove(&cfg, &participant)
        .await
        .map_err(membership_failed)?;
    Ok(Json(json!({})))
}

fn membership_failed(e: MembershipError) -> ApiError {
    match e {
        MembershipError::Refused(why) => ApiError::new(StatusCode::BAD_REQUEST, why),
        MembershipError::Grid(e) => grid_failed(e),
        MembershipError::Open(e) => unavailable(format!("{e:#}")),
    }
}
