//! Changing folders through the running daemon: create, join, leave and
//! retune, taking effect at once (the daemon starts, stops or restarts the
//! folder before answering). The CLI uses these routes whenever a daemon
//! runs, so the daemon is the one place that changes its folders.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /v1/magic-folder` | 24.3's `{"name", "author_name", "local_path", "poll_interval", "scan_interval"}`, plus ours: `"grid"` (`{"embedded": DIR}` or `{"tahoe": NODE}`) and the other [`Tuning`] fields | `FolderInfo` |
//! | `POST /v1/join` | `{"invite_code", "local_path", "name"?, "author"?, "grid"?}` + [`Tuning`] | `FolderInfo` |
//! | `DELETE /v1/magic-folder/{f}` | 24.3's `{"really-delete-write-capability": bool}` | `LeaveOutcome` |
//! | `POST /v1/magic-folder/{f}/config` | [`Tuning`] (seconds) | `FolderInfo` |

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{json_body, ApiError, ApiState};
use crate::commands::setup::{self, CreateOptions, GridChoice, JoinOptions, LeaveOutcome, Tuning};
use crate::commands::FolderInfo;

/// `POST /v1/magic-folder`'s body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateRequest {
    /// The folder's name.
    pub name: String,
    /// Our author name (24.3's key).
    #[serde(default)]
    pub author_name: Option<String>,
    /// The directory to synchronise.
    pub local_path: PathBuf,
    /// Where the folder lives (default: the embedded grid in the config
    /// directory).
    #[serde(default)]
    pub grid: Option<GridChoice>,
    /// How personal directories are laid out (default: 24.3's, flat).
    #[serde(default)]
    pub layout: crate::personal::Layout,
    /// Intervals and policies.
    #[serde(flatten)]
    pub tuning: Tuning,
}

/// `POST /v1/join`'s body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The invite code.
    pub invite_code: String,
    /// The directory to synchronise.
    pub local_path: PathBuf,
    /// Local folder name (default: the inviter's).
    #[serde(default)]
    pub name: Option<String>,
    /// Author name (default: the invited participant name).
    #[serde(default)]
    pub author: Option<String>,
    /// Where the grid is on this machine.
    #[serde(default)]
    pub grid: Option<GridChoice>,
    /// The Magic Wormhole mailbox server, for a wormhole code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// Join read-only (a wormhole invite only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Seconds to wait for the inviter on a wormhole code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_s: Option<u64>,
    /// Intervals and policies.
    #[serde(flatten)]
    pub tuning: Tuning,
}

/// `DELETE /v1/magic-folder/{f}`'s body (24.3's).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LeaveRequest {
    /// Leave even though this device holds the collective's write capability.
    #[serde(
        default,
        rename = "really-delete-write-capability",
        deserialize_with = "truthy"
    )]
    pub really_delete_write_capability: bool,
}

/// A flag as `true`/`false` or, as 24.3's own CLI sends it, `1`/`0`.
fn truthy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
    }
    Ok(match Flag::deserialize(d)? {
        Flag::Bool(b) => b,
        Flag::Int(i) => i != 0,
    })
}

impl From<CreateRequest> for CreateOptions {
    fn from(r: CreateRequest) -> CreateOptions {
        CreateOptions {
            name: r.name,
            local_dir: r.local_path,
            author: r.author_name,
            grid: r.grid,
            tuning: r.tuning,
            layout: r.layout,
        }
    }
}

impl From<JoinRequest> for JoinOptions {
    fn from(r: JoinRequest) -> JoinOptions {
        JoinOptions {
            code: r.invite_code,
            local_dir: r.local_path,
            name: r.name,
            author: r.author,
            grid: r.grid,
            tuning: r.tuning,
            mailbox: r.mailbox,
            read_only: r.read_only,
            wait: r.wait_s.map(std::time::Duration::from_secs),
        }
    }
}

/// A setup command's failure: 404 for a folder that does not exist, 409
/// for one that does (or whose write capability would go), else 400 —
/// with the command's own message.
fn setup_error(e: anyhow::Error) -> ApiError {
    use crate::config::ConfigError;
    let status = match e.downcast_ref::<ConfigError>() {
        Some(ConfigError::NoSuchFolder(_)) => StatusCode::NOT_FOUND,
        Some(ConfigError::FolderExists(_)) => StatusCode::CONFLICT,
        _ if e.to_string().contains("write capability") => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, format!("{e:#}"))
}

/// Has the daemon start, stop or restart folders to match the configs, and
/// waits until it has.
pub(super) async fn reconcile(state: &ApiState) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if state.reconcile.send(tx).await.is_ok() {
        let _ = rx.await;
    }
}

/// A setup command's outcome, once the daemon has applied it.
async fn applied<T>(state: &ApiState, outcome: anyhow::Result<T>) -> Result<Json<T>, ApiError> {
    let out = outcome.map_err(setup_error)?;
    reconcile(state).await;
    Ok(Json(out))
}

/// A folder the daemon now runs.
fn running(mut info: Json<FolderInfo>) -> Json<FolderInfo> {
    info.running = true;
    info
}

/// Runs a (blocking) config change off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<anyhow::Result<T>, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub(super) async fn create(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Json<FolderInfo>, ApiError> {
    let req: CreateRequest = json_body(&body)?;
    let outcome = setup::create(&state.config, req.into()).await;
    applied(&state, outcome).await.map(running)
}

pub(super) async fn join(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Json<FolderInfo>, ApiError> {
    let req: JoinRequest = json_body(&body)?;
    let outcome = setup::join(&state.config, req.into()).await;
    applied(&state, outcome).await.map(running)
}

pub(super) async fn leave(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<LeaveOutcome>, ApiError> {
    // 24.3 wants a JSON body; an empty one means "no flags".
    let req: LeaveRequest = if body.is_empty() {
        LeaveRequest::default()
    } else {
        json_body(&body)?
    };
    let config = state.config.clone();
    let outcome =
        blocking(move || setup::leave(&config, &name, req.really_delete_write_capability)).await?;
    applied(&state, outcome).await
}

pub(super) async fn tune(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<FolderInfo>, ApiError> {
    let t: Tuning = json_body(&body)?;
    let config = state.config.clone();
    let outcome = blocking(move || setup::tune(&config, &name, &t)).await?;
    applied(&state, outcome).await.map(running)
}
