//! `GET /v1/status`: 24.3's WebSocket of status events (`status.py`).
//!
//! The first frame holds the state of every folder as events — for each,
//! `folder-added`, its current errors (`error-occurred`, newest first),
//! `scan-completed` and `poll-completed` if one has happened — and last
//! `tahoe-connection-changed`. After that each frame carries the events as
//! they happen (`crate::events`): `{"events": [ … ]}`. A client that falls
//! behind under a flood gets the state afresh instead of the events it
//! missed. Any message from the client closes the socket with code 4000,
//! "Unexpected incoming message", as 24.3 does.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::ApiState;
use crate::events::{error_event, folder_event};

/// Events sent in one frame at most when several are waiting.
const BATCH: usize = 100;

pub(super) async fn connect(State(state): State<ApiState>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| serve(state, socket))
}

/// The state of every folder, as 24.3's first message.
async fn snapshot(state: &ApiState) -> Vec<Value> {
    let mut events = Vec::new();
    let handles: Vec<(String, Result<crate::api::FolderStatus, String>)> = {
        let folders = state.folders.read().await;
        let mut out = Vec::new();
        for (name, h) in folders.iter() {
            out.push((name.clone(), h.status().await));
        }
        out
    };
    for (name, status) in handles {
        events.push(json!({ "kind": "folder-added", "folder": name }));
        let Ok(s) = status else { continue };
        let mut errors = s.errors.clone();
        errors.sort_by_key(|e| std::cmp::Reverse(e.at));
        for e in errors.iter().take(30) {
            let summary = match &e.path {
                Some(p) => format!("{p}: {}", e.message),
                None => e.message.clone(),
            };
            events.push(error_event(&name, &summary, e.at / 1000));
        }
        for (kind, at) in [
            ("scan-completed", s.last_scan),
            ("poll-completed", s.last_poll),
        ] {
            if let Some(ms) = at {
                let mut e = folder_event(kind, &name);
                e["timestamp"] = json!(ms as f64 / 1000.0);
                events.push(e);
            }
        }
    }
    // 24.3 reports its Tahoe node's storage connections; the embedded grid
    // has none to lose. Offline folders say why in their status.
    events.push(json!({
        "kind": "tahoe-connection-changed",
        "happy": true,
        "connected": 0,
        "desired": 0,
    }));
    events
}

async fn send(socket: &mut WebSocket, events: Vec<Value>) -> bool {
    let frame = json!({ "events": events }).to_string();
    socket.send(Message::Text(frame.into())).await.is_ok()
}

async fn serve(state: ApiState, mut socket: WebSocket) {
    // Subscribed before the snapshot is taken: nothing falls between.
    let mut rx = state.telemetry.events.subscribe();
    if !send(&mut socket, snapshot(&state).await).await {
        return;
    }
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: 4000,
                            reason: "Unexpected incoming message".into(),
                        })))
                        .await;
                    return;
                }
            },
            event = rx.recv() => {
                let batch = match event {
                    Ok(first) => {
                        let mut batch = vec![(*first).clone()];
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok(e) => batch.push((*e).clone()),
                                Err(_) => break,
                            }
                        }
                        batch
                    }
                    // Fell behind a flood: the state now instead of what was missed.
                    Err(RecvError::Lagged(_)) => snapshot(&state).await,
                    Err(RecvError::Closed) => return,
                };
                let sent = tokio::time::timeout(Duration::from_secs(30), send(&mut socket, batch)).await;
                if !matches!(sent, Ok(true)) {
                    return;
                }
            }
        }
    }
}
