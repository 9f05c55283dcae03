//! magic-folder 24.3's `/experimental` invite routes, in its shapes and
//! status codes (`web.py`; `docs/magic-folder-24.3.md` §6), carried out
//! by [`crate::commands::invite_v1`] inside the daemon — so 24.3's
//! `magic-folder-api create-invite / await-invite / cancel-invite /
//! list-invites / accept-invite` and GridSync's invite dialogs work here.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST …/magic-folder/{f}/invite` | `{"participant-name", "mode"}` | the invite (below) once its code exists |
//! | `POST …/magic-folder/{f}/invite-wait` | `{"id"}` | the invite once joined; 400 failed, 410 cancelled |
//! | `POST …/magic-folder/{f}/invite-cancel` | `{"id"}` | `{}` |
//! | `GET …/magic-folder/{f}/invites` | — | 201 (as 24.3) `[invite, …]` |
//! | `POST …/magic-folder/{f}/join` | `{"invite-code", "local-directory", "author", "poll-interval", "scan-interval", "read-only"?}` | 201 (as 24.3) the inviter's acknowledgement |
//!
//! An invite is `{"id", "participant-name", "consumed", "success",
//! "wormhole-code"}`. Invites live in the daemon's memory, as in 24.3: a
//! restart ends those still waiting.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{json_body, no_folder, ApiError, ApiState};
use crate::commands::invite_v1::{self, Mode};
use crate::commands::setup::{self, GridChoice, JoinOptions, Tuning};
use crate::events::now_s;

/// How an invite ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed(String),
    Cancelled,
}

/// One invite, waiting or done.
struct Invite {
    id: String,
    folder: String,
    participant: String,
    mode: Mode,
    code: String,
    done: watch::Receiver<Option<Outcome>>,
    task: tokio::task::AbortHandle,
    /// Sets the outcome when the invite is cancelled (the task is gone).
    cancel: watch::Sender<Option<Outcome>>,
}

impl Invite {
    fn outcome(&self) -> Option<Outcome> {
        self.done.borrow().clone()
    }

    /// 24.3's `Invite.marshal()`.
    fn marshal(&self) -> Value {
        let outcome = self.outcome();
        json!({
            "id": self.id,
            "participant-name": self.participant,
            "consumed": outcome.is_some(),
            "success": outcome == Some(Outcome::Succeeded),
            "wormhole-code": self.code,
        })
    }

    fn event(&self, kind: &str) -> Value {
        json!({
            "kind": kind,
            "id": self.id,
            "participant-name": self.participant,
            "mode": self.mode,
            "folder": self.folder,
            "timestamp": now_s(),
        })
    }
}

/// The daemon's invites, by id.
#[derive(Default)]
pub(super) struct Invites {
    by_id: Mutex<BTreeMap<String, Arc<Invite>>>,
}

impl Invites {
    fn get(&self, folder: &str, id: &str) -> Option<Arc<Invite>> {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .filter(|i| i.folder == folder)
            .cloned()
    }
}

fn bad(why: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, why)
}

/// 24.3 answers a failed wormhole with 502.
fn invite_failed(e: anyhow::Error) -> ApiError {
    if e.downcast_ref::<mf_wormhole::WormholeError>().is_some() {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("Failed to establish Magic Wormhole: {e:#}"),
        )
    } else {
        bad(format!("{e:#}"))
    }
}

/// A body that must have exactly these keys.
fn exactly(
    body: &Bytes,
    keys: &[&str],
    shape: &str,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let v: Value = json_body(body)?;
    match v {
        Value::Object(m) if m.len() == keys.len() && keys.iter().all(|k| m.contains_key(*k)) => {
            Ok(m)
        }
        _ => Err(bad(format!("Body must be {shape}"))),
    }
}

async fn known_folder(state: &ApiState, name: &str) -> Result<(), ApiError> {
    if state.folders.read().await.contains_key(name) {
        Ok(())
    } else {
        Err(no_folder(name))
    }
}

pub(super) async fn create(
    State(state): State<ApiState>,
    Path(folder): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let m = exactly(
        &body,
        &["participant-name", "mode"],
        r#"{"participant-name": "...", "mode": "read-write"}"#,
    )?;
    known_folder(&state, &folder).await?;
    let participant = m["participant-name"]
        .as_str()
        .ok_or_else(|| bad("participant-name must be a string"))?;
    let mode = match m["mode"].as_str() {
        Some("read-write") => Mode::ReadWrite,
        Some("read-only") => Mode::ReadOnly,
        _ => return Err(bad(r#"mode must be "read-write" or "read-only""#)),
    };
    let mailbox = state.config.mailbox_url();
    let pending = invite_v1::start_invite(&state.config, &folder, participant, mode, &mailbox)
        .await
        .map_err(invite_failed)?;
    let id = uuid_v4();
    let code = pending.code.clone();
    let (tx, rx) = watch::channel(None);
    let telemetry = state.telemetry.clone();
    let done_tx = tx.clone();
    let event_base =
        json!({"id": id, "participant-name": participant, "mode": mode, "folder": folder});
    let task = tokio::spawn(async move {
        let outcome = match pending.complete().await {
            Ok(_) => Outcome::Succeeded,
            Err(e) => Outcome::Failed(format!("{e:#}")),
        };
        let mut event = event_base;
        match &outcome {
            Outcome::Succeeded => event["kind"] = json!("invite-succeeded"),
            Outcome::Failed(reason) => {
                event["kind"] = json!("invite-failed");
                event["reason"] = json!(reason);
            }
            Outcome::Cancelled => {}
        }
        event["timestamp"] = json!(now_s());
        telemetry.events.publish(event);
        let _ = done_tx.send(Some(outcome));
    })
    .abort_handle();
    let invite = Arc::new(Invite {
        id: id.clone(),
        folder,
        participant: participant.to_owned(),
        mode,
        code,
        done: rx,
        task,
        cancel: tx,
    });
    state
        .telemetry
        .events
        .publish(invite.event("invite-created"));
    let mut code_event = invite.event("invite-code-created");
    code_event["code"] = json!(invite.code);
    state.telemetry.events.publish(code_event);
    state
        .invites
        .by_id
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, invite.clone());
    Ok(Json(invite.marshal()))
}

fn invite_of(state: &ApiState, folder: &str, body: &Bytes) -> Result<Arc<Invite>, ApiError> {
    let m = exactly(body, &["id"], r#"{"id": "..."}"#)?;
    let id = m["id"].as_str().unwrap_or_default();
    state
        .invites
        .get(folder, id)
        .ok_or_else(|| bad(format!("Invite '{id}' doesn't exist")))
}

pub(super) async fn wait(
    State(state): State<ApiState>,
    Path(folder): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let invite = invite_of(&state, &folder, &body)?;
    let mut done = invite.done.clone();
    let outcome = done
        .wait_for(Option::is_some)
        .await
        .map(|o| o.clone())
        .ok()
        .flatten()
        .unwrap_or(Outcome::Cancelled);
    match outcome {
        Outcome::Succeeded => Ok(Json(invite.marshal())),
        Outcome::Failed(reason) => Err(bad(format!(
            "Wormhole failed or other side declined: {reason}"
        ))),
        Outcome::Cancelled => Err(ApiError::new(StatusCode::GONE, "cancelled")),
    }
}

pub(super) async fn cancel(
    State(state): State<ApiState>,
    Path(folder): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let invite = invite_of(&state, &folder, &body)?;
    if invite.outcome().is_some() {
        return Err(bad(format!("Invite '{}' cannot be canceled", invite.id)));
    }
    // Dropping the wormhole in the aborted task closes its mailbox.
    invite.task.abort();
    let _ = invite.cancel.send(Some(Outcome::Cancelled));
    state
        .telemetry
        .events
        .publish(invite.event("invite-cancelled"));
    Ok(Json(json!({})))
}

pub(super) async fn list(
    State(state): State<ApiState>,
    Path(folder): Path<String>,
) -> Result<(StatusCode, Json<Vec<Value>>), ApiError> {
    known_folder(&state, &folder).await?;
    let all = state
        .invites
        .by_id
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|i| i.folder == folder)
        .map(|i| i.marshal())
        .collect();
    Ok((StatusCode::CREATED, Json(all)))
}

pub(super) async fn join(
    State(state): State<ApiState>,
    Path(folder): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let m: serde_json::Map<String, Value> = json_body(&body)?;
    let required = [
        "invite-code",
        "local-directory",
        "author",
        "poll-interval",
        "scan-interval",
    ];
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| !m.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!("Missing keys: {}", missing.join(" "))));
    }
    let extra: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| !required.contains(k) && *k != "read-only")
        .collect();
    if !extra.is_empty() {
        return Err(bad(format!("Extra keys: {}", extra.join(" "))));
    }
    let text = |k: &str| {
        m[k].as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("{k} must be a string")))
    };
    let seconds = |k: &str| {
        m[k].as_u64()
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| bad(format!("{k} must be a positive integer")))
    };
    let local = std::path::PathBuf::from(text("local-directory")?);
    if !local.is_dir() {
        return Err(bad(format!("No directory '{}'", local.display())));
    }
    let node = state
        .config
        .tahoe_node()
        .map_err(|e| bad(format!("{e:#}")))?;
    let opts = JoinOptions {
        code: text("invite-code")?,
        local_dir: local,
        name: Some(folder),
        author: Some(text("author")?),
        grid: Some(GridChoice::Tahoe(node)),
        tuning: Tuning {
            poll_interval: Some(seconds("poll-interval")?),
            scan_interval: Some(seconds("scan-interval")?),
            ..Tuning::default()
        },
        mailbox: None,
        read_only: m.get("read-only").and_then(Value::as_bool) == Some(true),
        wait: None,
    };
    let info = setup::join(&state.config, opts)
        .await
        .map_err(invite_failed)?;
    super::manage::reconcile(&state).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "kind": "join-folder-ack",
            "protocol": "invite-v1",
            "participant-name": info.participant,
            "success": true,
        })),
    ))
}

/// A random (version 4) UUID, as 24.3 names invites.
fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    // Ids name invites within their own daemon only: without randomness
    // (never seen), the clock still keeps them apart.
    if getrandom::getrandom(&mut b).is_err() {
        b[..8].copy_from_slice(&now_s().to_bits().to_le_bytes());
    }
    super::compat::uuid_shaped(&b)
}
