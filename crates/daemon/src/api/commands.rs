//! The CLI's commands over the API — history, restore, deleted, and
//! resolve-conflict (which 24.3 lacks; the shape of its proposal, issue
//! #725 / PR #752: a resolution is "ours" or a participant's version) —
//! with paths relative to the folder.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use mf_core::relpath::RelPath;
use serde::Deserialize;

use super::{json_body, no_folder, ApiError, ApiState};
use crate::commands::history::{self, Deleted, History, RestoreOutcome};
use crate::commands::resolve::{self, Resolution, ResolveOutcome};
use bytes::Bytes;

/// `path` (relative to folder `name`, which must be running) as an
/// absolute path, for the commands that take one.
pub(super) async fn in_folder(
    state: &ApiState,
    name: &str,
    path: &str,
) -> Result<PathBuf, ApiError> {
    let root = {
        let folders = state.folders.read().await;
        let h = folders.get(name).ok_or_else(|| no_folder(name))?;
        h.config().local_path.clone()
    };
    let rel = RelPath::new(path).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{path:?} is not a path inside the folder: {e}"),
        )
    })?;
    Ok(root.join(rel.as_str()))
}

/// A command's failure: the user's mistake or the grid's, as 400 with the
/// command's own message.
pub(super) fn command_error(e: anyhow::Error) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, format!("{e:#}"))
}

#[derive(Deserialize)]
pub(super) struct PathQuery {
    path: String,
}

pub(super) async fn folder_history(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<PathQuery>,
) -> Result<Json<History>, ApiError> {
    let abs = in_folder(&state, &name, &q.path).await?;
    history::history(&state.config, &abs)
        .await
        .map(Json)
        .map_err(command_error)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreBody {
    path: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

pub(super) async fn folder_restore(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<RestoreOutcome>, ApiError> {
    let body: RestoreBody = json_body(&body)?;
    let abs = in_folder(&state, &name, &body.path).await?;
    let to = match &body.to {
        Some(t) => Some(in_folder(&state, &name, t).await?),
        None => None,
    };
    history::restore(&state.config, &abs, body.version.as_deref(), to.as_deref())
        .await
        .map(Json)
        .map_err(command_error)
}

#[derive(Deserialize)]
pub(super) struct DeletedQuery {
    #[serde(default)]
    since_s: Option<u64>,
}

pub(super) async fn folder_deleted(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<DeletedQuery>,
) -> Result<Json<Vec<Deleted>>, ApiError> {
    if !state.folders.read().await.contains_key(&name) {
        return Err(no_folder(&name));
    }
    let config = state.config.clone();
    tokio::task::spawn_blocking(move || {
        history::deleted(&config, Some(&name), q.since_s.map(Duration::from_secs))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map(Json)
    .map_err(command_error)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResolveBody {
    relpath: String,
    /// `mine` (or 24.3's `ours`), or `theirs`.
    resolution: String,
    /// With `theirs`: whose version, when several conflict.
    #[serde(default)]
    participant: Option<String>,
}

pub(super) async fn resolve_conflict(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ResolveOutcome>, ApiError> {
    let body: ResolveBody = json_body(&body)?;
    let abs = in_folder(&state, &name, &body.relpath).await?;
    let how = match (body.resolution.as_str(), body.participant) {
        ("mine" | "ours", _) => Resolution::Mine,
        ("theirs", None) => Resolution::Theirs,
        ("theirs", Some(p)) => Resolution::Use(p),
        (other, _) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("resolution {other:?}: use \"mine\" or \"theirs\" (with \"participant\")"),
            ))
        }
    };
    resolve::resolve(&state.config, &abs, how)
        .await
        .map(Json)
        .map_err(command_error)
}
