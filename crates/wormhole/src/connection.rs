//! The WebSocket to the mailbox server, owned by a background task.
//!
//! Why a task rather than reading the socket in the caller's futures:
//! * The server pings every minute and drops us if we never answer; the
//!   inviter may hold a code for many minutes before calling `finish`, and
//!   the task keeps reading (tungstenite answers pings as it reads).
//! * Cancellation safety: callers only await an mpsc receiver, which loses
//!   nothing when the awaiting future is dropped, and sending is a
//!   synchronous push onto an unbounded channel. No frame is ever half
//!   read or half written because a caller's future went away.
//! * Cleanup on drop: `Drop` can still queue `release`/`close` for the
//!   task to send (Drop cannot await).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{crypto, Mood, WormholeError};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the background task waits for the server to answer our
/// WebSocket close frame: hang protection only (the server answers at once).
const CLOSE_HANDSHAKE_LIMIT: Duration = Duration::from_secs(30);

/// A message from the mailbox server (`server_websocket.py`'s `send`).
/// Unknown fields (`server_tx`, `id`, …) are ignored.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum ServerMessage {
    Welcome {
        welcome: Map<String, Value>,
    },
    Ack,
    Allocated {
        nameplate: String,
    },
    Claimed {
        mailbox: String,
    },
    Released,
    Message {
        side: String,
        phase: String,
        body: String,
    },
    Closed,
    Error {
        error: String,
    },
    /// `pong`, `nameplates`, and anything newer: ignored (Python logs them).
    #[serde(other)]
    Other,
}

/// What the background task hands to the client: a parsed message, or why
/// there will be no more.
type Inbound = Result<ServerMessage, WormholeError>;

/// The client's end of the connection, plus what must be undone if the
/// client goes away early (claimed nameplate, open mailbox).
pub(crate) struct Connection {
    out: Option<mpsc::UnboundedSender<String>>,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    task: Option<JoinHandle<()>>,
    /// A nameplate we claimed and have not released yet.
    pub(crate) claimed_nameplate: Option<String>,
    /// A mailbox we opened and have not closed yet.
    pub(crate) open_mailbox: Option<String>,
    /// Whether the peer has shown up (decides the mood of a drop-close).
    pub(crate) peer_seen: bool,
}

impl Connection {
    /// Opens the WebSocket and starts the background task.
    pub(crate) async fn connect(url: &str) -> Result<Connection, WormholeError> {
        let (ws, _response) =
            tokio_tungstenite::connect_async(url)
                .await
                .map_err(|e| WormholeError::Connect {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(ws, out_rx, in_tx));
        Ok(Connection {
            out: Some(out_tx),
            inbound: in_rx,
            task: Some(task),
            claimed_nameplate: None,
            open_mailbox: None,
            peer_seen: false,
        })
    }

    /// Sends `{"type": kind, "id": <random>, ...fields}`. Synchronous: it
    /// only queues the frame for the task (so it cannot be cancelled
    /// half-way). Fails only if the connection is already gone.
    pub(crate) fn send(&self, kind: &str, fields: Value) -> Result<(), WormholeError> {
        let mut msg = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        msg.insert("type".into(), kind.into());
        // Like Python: a short random id, only for correlating logs and acks.
        msg.insert("id".into(), crypto::random_hex(2)?.into());
        let text = Value::Object(msg).to_string();
        tracing::trace!(%text, "wormhole: to server");
        self.out
            .as_ref()
            .and_then(|out| out.send(text).ok())
            .ok_or(WormholeError::ConnectionClosed)
    }

    /// The next meaningful message: acks and unknown types are skipped, a
    /// server `error` becomes `Err`. Cancellation-safe.
    pub(crate) async fn recv(&mut self) -> Result<ServerMessage, WormholeError> {
        loop {
            let msg = self
                .inbound
                .recv()
                .await
                .unwrap_or(Err(WormholeError::ConnectionClosed))?;
            match msg {
                ServerMessage::Ack | ServerMessage::Other => continue,
                ServerMessage::Error { error } if error == "crowded" => {
                    return Err(WormholeError::Crowded)
                }
                ServerMessage::Error { error } => return Err(WormholeError::Server(error)),
                other => return Ok(other),
            }
        }
    }

    /// Sends `close{mailbox, mood}` (and `release` first if still needed)
    /// and waits for the server's `closed`, skipping anything else (late
    /// messages from the peer). Then shuts the WebSocket down cleanly.
    pub(crate) async fn close(mut self, mood: Mood) -> Result<(), WormholeError> {
        self.release_nameplate()?;
        if let Some(mailbox) = self.open_mailbox.take() {
            self.send(
                "close",
                serde_json::json!({ "mailbox": mailbox, "mood": mood.as_str() }),
            )?;
            loop {
                if let ServerMessage::Closed = self.recv().await? {
                    break;
                }
            }
        }
        self.shutdown().await;
        Ok(())
    }

    /// Sends `release{nameplate}` if we still hold a claimed nameplate
    /// (we do not wait for `released`: nothing depends on it).
    pub(crate) fn release_nameplate(&mut self) -> Result<(), WormholeError> {
        if let Some(nameplate) = self.claimed_nameplate.take() {
            self.send("release", serde_json::json!({ "nameplate": nameplate }))?;
        }
        Ok(())
    }

    /// Closes the WebSocket and waits for the task to finish (bounded by
    /// [`CLOSE_HANDSHAKE_LIMIT`] inside the task).
    async fn shutdown(&mut self) {
        // Dropping the sender tells the task to send a close frame.
        self.out = None;
        if let Some(task) = self.task.take() {
            // A JoinError means the task panicked or was aborted (runtime
            // shutting down); either way there is nothing left to close.
            let _ = task.await;
        }
    }
}

impl Drop for Connection {
    /// Best effort, without awaiting: queue `release` and `close` so the
    /// server frees the nameplate and mailbox now rather than at expiry
    /// (when a caller's timeout dropped us while waiting for the peer, or
    /// after an error). The task sends queued frames before closing.
    fn drop(&mut self) {
        let _ = self.release_nameplate();
        if let Some(mailbox) = self.open_mailbox.take() {
            let mood = if self.peer_seen {
                Mood::Errory
            } else {
                Mood::Lonely
            };
            let _ = self.send(
                "close",
                serde_json::json!({ "mailbox": mailbox, "mood": mood.as_str() }),
            );
        }
        // Dropping `out` (with self) makes the task close the socket; the
        // task is detached, not aborted, so it can flush first.
    }
}

/// The background task: forwards server frames to `inbound` and queued
/// frames to the server, until either side ends.
async fn run(
    mut ws: Ws,
    mut out: mpsc::UnboundedReceiver<String>,
    inbound: mpsc::UnboundedSender<Inbound>,
) {
    loop {
        tokio::select! {
            frame = ws.next() => {
                let done = match frame {
                    Some(Ok(Message::Text(text))) => {
                        tracing::trace!(text = %text.as_str(), "wormhole: from server");
                        let parsed = serde_json::from_str::<ServerMessage>(text.as_str())
                            .map_err(|e| WormholeError::ServerProtocol(format!(
                                "unparseable message ({e}): {}", text.as_str()
                            )));
                        // The client may be gone already; then nobody cares.
                        let _ = inbound.send(parsed);
                        false
                    }
                    // tungstenite answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => false,
                    Some(Ok(Message::Binary(_))) => {
                        let _ = inbound.send(Err(WormholeError::ServerProtocol(
                            "unexpected binary frame".into(),
                        )));
                        false
                    }
                    Some(Ok(Message::Close(_))) | None => {
                        let _ = inbound.send(Err(WormholeError::ConnectionClosed));
                        true
                    }
                    Some(Err(e)) => {
                        let _ = inbound.send(Err(WormholeError::Transport(e.to_string())));
                        true
                    }
                };
                if done {
                    return;
                }
            }
            queued = out.recv() => match queued {
                Some(text) => {
                    if let Err(e) = ws.send(Message::text(text)).await {
                        let _ = inbound.send(Err(WormholeError::Transport(e.to_string())));
                        return;
                    }
                }
                None => break,
            },
        }
    }
    // The client dropped its sender (after queueing any last frames, which
    // were sent above): close politely and read until the server's close
    // reply, so it does not log an aborted connection.
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_LIMIT, async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}
