//! A small [Magic Wormhole] client: the mailbox protocol only — no transit,
//! no dilation, no file transfer — interoperable with Python
//! `magic-wormhole` (0.24) and its mailbox server. magic-folder 24.3's
//! "invite-v1" protocol (appid `private.storage/magic-folder/invites`)
//! needs nothing more: two sides agree on a key from a short code and
//! exchange a few small JSON messages.
//!
//! Why not the `magic-wormhole` crate: with no default features, 0.8.1
//! still adds ~70 crates (a second async runtime from the async-std
//! family, derive_builder, zxcvbn, fancy-regex, …) for a protocol of which
//! we use a third. This crate is built on what the workspace already has
//! (tokio, tokio-tungstenite, curve25519-dalek via `spake2`, sha2, serde)
//! plus a few small RustCrypto crates (`spake2`, `crypto_secretbox`,
//! `hkdf`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), mf_wormhole::WormholeError> {
//! use mf_wormhole::{Mailbox, Mood};
//! use serde_json::json;
//! const APPID: &str = "private.storage/magic-folder/invites";
//! let url = "ws://relay.magic-wormhole.io:4000/v1";
//! // The inviter shows the code, then waits for the peer.
//! let (mailbox, _welcome) = Mailbox::connect(url, APPID).await?;
//! let (code, pending) = mailbox.allocate_code(2).await?;
//! println!("code: {code}");
//! let versions = json!({"magic-folder": {"supported-messages": ["invite-v1"]}});
//! let (mut wormhole, _peer_versions) = pending.finish(versions).await?;
//! wormhole.send_json(&json!({"kind": "join-folder"}))?;
//! let _reply = wormhole.receive_json().await?;
//! wormhole.close(Mood::Happy).await?;
//! # Ok(()) }
//! ```
//!
//! Nothing here has timeouts: waiting for a peer takes as long as the
//! people involved take. Callers wrap the futures in their own timeouts;
//! every future is safe to drop, and dropping a wormhole early tells the
//! server to free the nameplate and mailbox (best effort).
//!
//! [Magic Wormhole]: https://magic-wormhole.readthedocs.io/

mod client;
mod code;
mod connection;
mod crypto;

pub use client::{Mailbox, Pending, Wormhole};
pub use code::validate_code;

/// What went wrong. Every message is meant to be shown to a person.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WormholeError {
    /// Could not open the WebSocket to the mailbox server.
    #[error("cannot connect to the mailbox server {url}: {reason}")]
    Connect {
        /// The mailbox URL we tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The connection to the mailbox server failed after it was open.
    #[error("connection to the mailbox server failed: {0}")]
    Transport(String),
    /// The mailbox server closed the connection.
    #[error("the mailbox server closed the connection")]
    ConnectionClosed,
    /// The server's welcome refused service (its `error` text).
    #[error("the mailbox server refuses service: {0}")]
    Unwelcome(String),
    /// The server answered a request with an `error` message.
    #[error("the mailbox server reported an error: {0}")]
    Server(String),
    /// Two other clients already use this nameplate or mailbox.
    #[error("the code is already in use by two others (the mailbox server says \"crowded\")")]
    Crowded,
    /// The server sent something this client does not understand.
    #[error("the mailbox server sent something unexpected: {0}")]
    ServerProtocol(String),
    /// The peer's messages do not decrypt: the two sides used different
    /// codes, or a third party guessed the nameplate.
    #[error("the code was wrong, or someone else used it")]
    WrongCode,
    /// The code does not have the form `<number>-<word>-<word>`.
    #[error("malformed wormhole code {code:?}: {reason}")]
    MalformedCode {
        /// The code as given.
        code: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The peer sent something that breaks the protocol (bad hex, JSON, or
    /// PAKE message; a message that does not decrypt after the key was
    /// confirmed).
    #[error("the other side sent an invalid message: {0}")]
    PeerProtocol(String),
    /// The caller passed an unusable argument.
    #[error("invalid argument: {0}")]
    InvalidInput(String),
}

/// The server's welcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Welcome {
    /// The server's message of the day, to show to the user.
    pub motd: Option<String>,
}

/// How a wormhole ended, reported to the server when closing (it only
/// keeps statistics of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mood {
    /// The exchange succeeded.
    Happy,
    /// The peer never came.
    Lonely,
    /// The code was wrong or the peer misbehaved.
    Scary,
    /// Something else went wrong.
    Errory,
}

impl Mood {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mood::Happy => "happy",
            Mood::Lonely => "lonely",
            Mood::Scary => "scary",
            Mood::Errory => "errory",
        }
    }
}
