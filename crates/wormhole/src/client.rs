//! The client protocol: bind, allocate/claim/open, PAKE, versions, phases.
//! Follows the order of Python magic-wormhole's state machines (`_boss.py`,
//! `_nameplate.py`, `_mailbox.py`, `_key.py`, `_receive.py`), collapsed
//! into straight-line async code because we never reconnect.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use crate::code::{choose_words, nameplate_of, validate_code};
use crate::connection::{Connection, ServerMessage};
use crate::crypto::{random_hex, Pake, SharedKey};
use crate::{Mood, Welcome, WormholeError};

/// More words than anyone would type; the bound only keeps a silly
/// argument from allocating without limit.
const MAX_CODE_WORDS: usize = 32;

/// The phase name of the PAKE message.
const PHASE_PAKE: &str = "pake";
/// The phase name of the (encrypted) versions message.
const PHASE_VERSION: &str = "version";

/// A connection to the mailbox server, bound to an application id, before
/// a code is chosen. Next: [`Mailbox::allocate_code`] (the side that shows
/// the code) or [`Mailbox::set_code`] (the side that types it in).
pub struct Mailbox {
    conn: Connection,
    appid: String,
    side: String,
}

impl Mailbox {
    /// Connects to the mailbox server at `url` (`ws://host:port/v1`; no
    /// `wss://`), waits for its welcome and binds to `appid`.
    ///
    /// A welcome carrying an `error` (the server refusing service) is
    /// [`WormholeError::Unwelcome`].
    pub async fn connect(url: &str, appid: &str) -> Result<(Mailbox, Welcome), WormholeError> {
        let mut conn = Connection::connect(url).await?;
        let welcome = match conn.recv().await? {
            ServerMessage::Welcome { welcome } => welcome,
            other => {
                return Err(WormholeError::ServerProtocol(format!(
                    "expected a welcome, got {other:?}"
                )))
            }
        };
        if let Some(error) = welcome.get("error") {
            let text = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(WormholeError::Unwelcome(text));
        }
        let welcome = Welcome {
            motd: welcome
                .get("motd")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        // Like Python: 5 random bytes, hex. The side tells our messages
        // from the peer's (the server echoes ours back to us).
        let side = random_hex(5)?;
        conn.send(
            "bind",
            json!({
                "appid": appid,
                "side": side,
                "client_version": ["rust", env!("CARGO_PKG_VERSION")],
            }),
        )?;
        let mailbox = Mailbox {
            conn,
            appid: appid.to_owned(),
            side,
        };
        Ok((mailbox, welcome))
    }

    /// Asks the server for a fresh nameplate and makes a code of it and
    /// `words` random PGP words (1 to 32; Python uses 2). Returns the code, to show
    /// to the other person now, and the [`Pending`] wormhole that waits for
    /// them.
    pub async fn allocate_code(mut self, words: usize) -> Result<(String, Pending), WormholeError> {
        if !(1..=MAX_CODE_WORDS).contains(&words) {
            return Err(WormholeError::InvalidInput(format!(
                "a code has 1 to {MAX_CODE_WORDS} words, not {words}"
            )));
        }
        self.conn.send("allocate", json!({}))?;
        let nameplate = loop {
            if let ServerMessage::Allocated { nameplate } = self.conn.recv().await? {
                break nameplate;
            }
        };
        let code = format!("{nameplate}-{}", choose_words(words)?);
        // A server handing out a non-numeric nameplate would make a code
        // the other side refuses; say so here instead.
        validate_code(&code).map_err(|e| {
            WormholeError::ServerProtocol(format!("bad nameplate {nameplate:?}: {e}"))
        })?;
        let pending = self.start(code.clone()).await?;
        Ok((code, pending))
    }

    /// Uses a code from the other side. A malformed code is
    /// [`WormholeError::MalformedCode`] before anything is sent; see also
    /// [`validate_code`](crate::validate_code) to check it before connecting.
    pub async fn set_code(self, code: &str) -> Result<Pending, WormholeError> {
        validate_code(code)?;
        self.start(code.to_owned()).await
    }

    /// Claims the nameplate, opens its mailbox and posts our PAKE message.
    async fn start(mut self, code: String) -> Result<Pending, WormholeError> {
        let nameplate = nameplate_of(&code).to_owned();
        self.conn.send("claim", json!({ "nameplate": nameplate }))?;
        self.conn.claimed_nameplate = Some(nameplate);
        let mailbox = loop {
            if let ServerMessage::Claimed { mailbox } = self.conn.recv().await? {
                break mailbox;
            }
        };
        self.conn.send("open", json!({ "mailbox": mailbox }))?;
        self.conn.open_mailbox = Some(mailbox);
        // Post our half of the PAKE now, so the peer can proceed even if our
        // caller only calls `finish` later.
        let (pake, msg) = Pake::start(&code, &self.appid);
        let body = json!({ "pake_v1": hex(&msg) }).to_string();
        self.conn.send(
            "add",
            json!({ "phase": PHASE_PAKE, "body": hex(body.as_bytes()) }),
        )?;
        Ok(Pending {
            conn: self.conn,
            side: self.side,
            code,
            pake,
        })
    }
}

/// A wormhole with a code, waiting for the peer: [`Pending::finish`] runs
/// the key agreement and the versions exchange. Dropping it (say, on the
/// caller's timeout) releases the nameplate and closes the mailbox with
/// mood "lonely", best effort.
pub struct Pending {
    conn: Connection,
    side: String,
    code: String,
    pake: Pake,
}

impl Pending {
    /// The wormhole code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Waits for the peer, agrees on a key and exchanges versions: sends
    /// `{"app_versions": app_versions}` (a JSON object) and returns the
    /// connected [`Wormhole`] with the peer's `app_versions` (`{}` if it
    /// sent none).
    ///
    /// Waits as long as the peer takes: wrap it in a timeout. A wrong code
    /// (or a third party guessing it) is [`WormholeError::WrongCode`], after
    /// closing the mailbox with mood "scary".
    pub async fn finish(self, app_versions: Value) -> Result<(Wormhole, Value), WormholeError> {
        if !app_versions.is_object() {
            return Err(WormholeError::InvalidInput(
                "app_versions must be a JSON object".into(),
            ));
        }
        let Pending {
            mut conn,
            side,
            code: _,
            pake,
        } = self;
        let mut inbox = Inbox::default();

        // 1. Wait for the peer's PAKE message. Whatever the peer sent before
        //    it cannot be decrypted yet: keep it (as Python's `_order.py`).
        let mut early: Vec<PeerMessage> = Vec::new();
        let peer_pake = loop {
            let Some(msg) = inbox.next_from_peer(&mut conn, &side).await? else {
                continue;
            };
            if msg.phase == PHASE_PAKE {
                break parse_pake(&msg.body)?;
            }
            early.push(msg);
        };
        let key = pake.finish(&peer_pake)?;

        // 2. Send our versions, encrypted: the peer decrypting them proves
        //    we used the same code. Like Python, release the nameplate now
        //    that the peer has been heard from, so the server can reuse it.
        let versions = json!({ "app_versions": app_versions }).to_string();
        let sealed = key.encrypt(&side, PHASE_VERSION, versions.as_bytes())?;
        conn.send(
            "add",
            json!({ "phase": PHASE_VERSION, "body": hex(&sealed) }),
        )?;
        conn.release_nameplate()?;

        // 3. Wait for the peer's versions (early messages first, in order).
        let mut early = early.into_iter();
        let versions = loop {
            let msg = match early.next() {
                Some(msg) => msg,
                None => match inbox.next_from_peer(&mut conn, &side).await? {
                    Some(msg) => msg,
                    None => continue,
                },
            };
            if let Some(versions) = inbox.accept(&mut conn, &key, msg).await? {
                break versions;
            }
        };
        let app_versions = versions
            .get("app_versions")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let wormhole = Wormhole {
            conn,
            side,
            key,
            inbox,
            next_tx_phase: 0,
        };
        Ok((wormhole, app_versions))
    }
}

/// A new message from the peer, its body hex-decoded (still encrypted
/// unless it is the PAKE message).
struct PeerMessage {
    side: String,
    phase: String,
    body: Vec<u8>,
}

/// Bookkeeping for the peer's messages: who the peer is, which phases we
/// saw, and decrypted application messages waiting to be delivered in order.
#[derive(Default)]
struct Inbox {
    peer_side: Option<String>,
    seen_phases: HashSet<String>,
    /// Application messages by phase number, not yet delivered.
    ready: BTreeMap<u64, Vec<u8>>,
    /// The next phase number to deliver.
    next_rx_phase: u64,
}

impl Inbox {
    /// Waits for the next message and returns it if it is new and from the
    /// peer (`None`: it was our own echo or a duplicate; call again).
    async fn next_from_peer(
        &mut self,
        conn: &mut Connection,
        our_side: &str,
    ) -> Result<Option<PeerMessage>, WormholeError> {
        let (side, phase, body) = loop {
            if let ServerMessage::Message { side, phase, body } = conn.recv().await? {
                break (side, phase, body);
            }
        };
        // From here on nothing awaits, so a cancelled caller never loses a
        // message half-processed.
        if side == our_side {
            return Ok(None); // the server echoes our own messages
        }
        match &self.peer_side {
            None => {
                self.peer_side = Some(side.clone());
                conn.peer_seen = true;
            }
            Some(peer) if *peer == side => {}
            Some(_) => {
                return Err(WormholeError::PeerProtocol(
                    "messages from a third side in our mailbox".into(),
                ))
            }
        }
        // Python drops repeated phases too (the server replays the whole
        // mailbox on reconnection).
        if !self.seen_phases.insert(phase.clone()) {
            return Ok(None);
        }
        let body = data_encoding::HEXLOWER_PERMISSIVE
            .decode(body.as_bytes())
            .map_err(|_| {
                WormholeError::PeerProtocol(format!("phase {phase:?}: body is not hex"))
            })?;
        Ok(Some(PeerMessage { side, phase, body }))
    }

    /// Handles one decryptable message from the peer: the version message
    /// is returned (parsed), numbered phases are queued, anything else is
    /// ignored (forward compatibility, like Python). A message that does
    /// not decrypt before the versions were verified means a wrong code:
    /// the mailbox is closed "scary".
    async fn accept(
        &mut self,
        conn: &mut Connection,
        key: &SharedKey,
        msg: PeerMessage,
    ) -> Result<Option<Value>, WormholeError> {
        let PeerMessage { side, phase, body } = msg;
        if phase == PHASE_VERSION {
            let Some(plain) = key.decrypt(&side, &phase, &body) else {
                return Err(scared(conn).await);
            };
            let versions: Value = serde_json::from_slice(&plain).map_err(|e| {
                WormholeError::PeerProtocol(format!("version message is not JSON: {e}"))
            })?;
            if !versions.is_object() {
                return Err(WormholeError::PeerProtocol(
                    "version message is not a JSON object".into(),
                ));
            }
            return Ok(Some(versions));
        }
        let Some(number) = phase_number(&phase) else {
            tracing::debug!(phase, "wormhole: ignoring a message of unknown phase");
            return Ok(None);
        };
        let Some(plain) = key.decrypt(&side, &phase, &body) else {
            return Err(scared(conn).await);
        };
        if number >= self.next_rx_phase {
            self.ready.entry(number).or_insert(plain);
        }
        Ok(None)
    }
}

/// After a message failed to decrypt: close the mailbox "scary" (best
/// effort; the error we report is the wrong code either way).
async fn scared(conn: &mut Connection) -> WormholeError {
    if let Some(mailbox) = conn.open_mailbox.take() {
        let _ = conn.release_nameplate();
        let _ = conn.send(
            "close",
            json!({ "mailbox": mailbox, "mood": Mood::Scary.as_str() }),
        );
        // Wait for `closed` so the server has recorded the mood before we
        // hang up; any error here changes nothing.
        while let Ok(msg) = conn.recv().await {
            if let ServerMessage::Closed = msg {
                break;
            }
        }
    }
    WormholeError::WrongCode
}

/// The number of an application phase ("0", "1", …), `None` for other
/// phase names. Python accepts `^\d+$`.
fn phase_number(phase: &str) -> Option<u64> {
    if phase.is_empty() || !phase.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    phase.parse().ok()
}

/// The PAKE body: JSON `{"pake_v1": "<hex>"}`.
fn parse_pake(body: &[u8]) -> Result<Vec<u8>, WormholeError> {
    let bad = |why: &str| WormholeError::PeerProtocol(format!("bad PAKE message: {why}"));
    let value: Value = serde_json::from_slice(body).map_err(|_| bad("not JSON"))?;
    let hex_msg = value
        .get("pake_v1")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no \"pake_v1\""))?;
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex_msg.as_bytes())
        .map_err(|_| bad("\"pake_v1\" is not hex"))
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// A connected wormhole: keys agreed, versions exchanged. Messages go both
/// ways, each delivered once and in order. Finish with
/// [`Wormhole::close`]; dropping it closes the mailbox with mood "errory",
/// best effort.
///
/// After an error, close it: the stream of messages may have a gap.
pub struct Wormhole {
    conn: Connection,
    side: String,
    key: SharedKey,
    inbox: Inbox,
    next_tx_phase: u64,
}

impl Wormhole {
    /// Sends one message (phases "0", "1", … in call order).
    pub fn send(&mut self, plaintext: &[u8]) -> Result<(), WormholeError> {
        let phase = self.next_tx_phase.to_string();
        let sealed = self.key.encrypt(&self.side, &phase, plaintext)?;
        self.conn
            .send("add", json!({ "phase": phase, "body": hex(&sealed) }))?;
        self.next_tx_phase += 1;
        Ok(())
    }

    /// Sends `msg` as JSON text (as magic-folder's `json.dumps(...).encode()`).
    pub fn send_json(&mut self, msg: &Value) -> Result<(), WormholeError> {
        self.send(msg.to_string().as_bytes())
    }

    /// The peer's next message. Waits as long as it takes (the server does
    /// not tell us when the peer leaves): wrap it in a timeout.
    /// Cancellation-safe: a cancelled call loses no message.
    pub async fn receive(&mut self) -> Result<Vec<u8>, WormholeError> {
        loop {
            if let Some(plain) = self.inbox.ready.remove(&self.inbox.next_rx_phase) {
                self.inbox.next_rx_phase += 1;
                return Ok(plain);
            }
            let Some(PeerMessage { side, phase, body }) = self
                .inbox
                .next_from_peer(&mut self.conn, &self.side)
                .await?
            else {
                continue;
            };
            if phase == PHASE_VERSION || phase == PHASE_PAKE {
                continue; // already handled (a duplicate under another name cannot happen)
            }
            let Some(number) = phase_number(&phase) else {
                tracing::debug!(phase, "wormhole: ignoring a message of unknown phase");
                continue;
            };
            // The key is verified by now, so a failure is tampering, not a
            // wrong code.
            let plain = self.key.decrypt(&side, &phase, &body).ok_or_else(|| {
                WormholeError::PeerProtocol(format!("message {phase} does not decrypt"))
            })?;
            if number >= self.inbox.next_rx_phase {
                self.inbox.ready.entry(number).or_insert(plain);
            }
        }
    }

    /// The peer's next message, parsed as JSON.
    pub async fn receive_json(&mut self) -> Result<Value, WormholeError> {
        let plain = self.receive().await?;
        serde_json::from_slice(&plain)
            .map_err(|e| WormholeError::PeerProtocol(format!("message is not JSON: {e}")))
    }

    /// Closes the mailbox with `mood` (normally [`Mood::Happy`]), waits for
    /// the server to confirm, and hangs up.
    pub async fn close(self, mood: Mood) -> Result<(), WormholeError> {
        self.conn.close(mood).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_numbers() {
        assert_eq!(phase_number("0"), Some(0));
        assert_eq!(phase_number("17"), Some(17));
        for p in [
            "",
            "version",
            "pake",
            "dilate-0",
            "-1",
            "+1",
            "1a",
            "99999999999999999999999",
        ] {
            assert_eq!(phase_number(p), None, "{p}");
        }
    }

    #[test]
    fn pake_bodies() {
        assert_eq!(parse_pake(br#"{"pake_v1": "00ff"}"#).unwrap(), vec![0, 255]);
        for bad in [
            &b"nope"[..],
            br#"{"pake_v2": "00"}"#,
            br#"{"pake_v1": "zz"}"#,
            br#"{"pake_v1": 5}"#,
        ] {
            assert!(matches!(
                parse_pake(bad),
                Err(WormholeError::PeerProtocol(_))
            ));
        }
    }
}
