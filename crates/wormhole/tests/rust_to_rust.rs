//! Two of our clients through a real (Python) mailbox server, plus the
//! error cases: wrong code, malformed code, garbage from the peer, the
//! server going away, a refusing server, cancellation.

mod common;

use std::time::Duration;

use common::{magic_folder_versions, mailbox, within, APPID};
use futures_util::{SinkExt, StreamExt};
use mf_wormhole::{validate_code, Mailbox, Mood, WormholeError};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn inviter_and_joiner_exchange_messages_in_order() {
    let server = mailbox(&["--motd=hello from the test"]);
    let (inviter, welcome) = within("connect", Mailbox::connect(server.url(), APPID))
        .await
        .unwrap();
    assert_eq!(welcome.motd.as_deref(), Some("hello from the test"));
    // The inviter has its code before anyone joins.
    let (code, pending_inviter) = within("allocate", inviter.allocate_code(2)).await.unwrap();
    assert_eq!(pending_inviter.code(), code);
    let parts: Vec<&str> = code.split('-').collect();
    assert_eq!(parts.len(), 3, "{code}");
    assert!(parts[0].bytes().all(|b| b.is_ascii_digit()), "{code}");

    let (joiner, _) = within("connect", Mailbox::connect(server.url(), APPID))
        .await
        .unwrap();
    let pending_joiner = within("set_code", joiner.set_code(&code)).await.unwrap();

    let inviter_versions =
        json!({"magic-folder": {"supported-messages": ["invite-v1"]}, "side": "inviter"});
    let joiner_versions =
        json!({"magic-folder": {"supported-messages": ["invite-v1"]}, "side": "joiner"});
    let (a, b) = within("finish", async {
        tokio::join!(
            pending_inviter.finish(inviter_versions.clone()),
            pending_joiner.finish(joiner_versions.clone())
        )
    })
    .await;
    let (mut inviter, seen_by_inviter) = a.unwrap();
    let (mut joiner, seen_by_joiner) = b.unwrap();
    assert_eq!(seen_by_inviter, joiner_versions);
    assert_eq!(seen_by_joiner, inviter_versions);

    // Several messages each way, sent before the other side reads: they
    // arrive once each and in order.
    for n in 0..5 {
        inviter
            .send_json(&json!({"from": "inviter", "n": n}))
            .unwrap();
    }
    for n in 0..3 {
        joiner
            .send_json(&json!({"from": "joiner", "n": n}))
            .unwrap();
    }
    for n in 0..5 {
        let got = within("joiner receive", joiner.receive_json())
            .await
            .unwrap();
        assert_eq!(got, json!({"from": "inviter", "n": n}));
    }
    for n in 0..3 {
        let got = within("inviter receive", inviter.receive_json())
            .await
            .unwrap();
        assert_eq!(got, json!({"from": "joiner", "n": n}));
    }
    // Raw bytes work too, and interleave with JSON in order.
    joiner.send(b"\x00binary\xff").unwrap();
    assert_eq!(
        within("receive", inviter.receive()).await.unwrap(),
        b"\x00binary\xff"
    );

    within("close", inviter.close(Mood::Happy)).await.unwrap();
    within("close", joiner.close(Mood::Happy)).await.unwrap();
}

#[tokio::test]
async fn wrong_code_is_a_clear_error_on_both_sides() {
    let server = mailbox(&[]);
    let (inviter, _) = within("connect", Mailbox::connect(server.url(), APPID))
        .await
        .unwrap();
    let (code, pending_inviter) = within("allocate", inviter.allocate_code(2)).await.unwrap();
    let nameplate = code.split('-').next().unwrap();
    // Same nameplate (so the two meet), different words (so the keys differ).
    let wrong = format!("{nameplate}-not-{}", code.len());
    assert_ne!(wrong, code);
    let (joiner, _) = within("connect", Mailbox::connect(server.url(), APPID))
        .await
        .unwrap();
    let pending_joiner = within("set_code", joiner.set_code(&wrong)).await.unwrap();

    let (a, b) = within("finish", async {
        tokio::join!(
            pending_inviter.finish(magic_folder_versions()),
            pending_joiner.finish(magic_folder_versions())
        )
    })
    .await;
    for result in [a, b] {
        let err = result.err().expect("a wrong code must fail");
        assert!(matches!(err, WormholeError::WrongCode), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the code was wrong, or someone else used it"
        );
    }
}

#[test]
fn malformed_codes_are_rejected_without_network() {
    for code in [
        "", "hello", "12", "12-", "-a-b", "ab-cd-ef", "12 -a-b", "12-a b", "12-a\tb",
    ] {
        let err = validate_code(code).unwrap_err();
        assert!(
            matches!(err, WormholeError::MalformedCode { .. }),
            "{code:?}: {err:?}"
        );
        assert!(
            err.to_string().starts_with("malformed wormhole code"),
            "{err}"
        );
    }
    validate_code("7-guitarist-revenge").unwrap();
}

#[tokio::test]
async fn set_code_rejects_a_malformed_code_before_claiming() {
    let server = mailbox(&[]);
    let (joiner, _) = within("connect", Mailbox::connect(server.url(), APPID))
        .await
        .unwrap();
    let err = joiner
        .set_code("seven-guitarist-revenge")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, WormholeError::MalformedCode { .. }),
        "{err:?}"
    );
}

/// A hand-driven mailbox client that speaks the server protocol but sends
/// whatever the test wants as its "PAKE".
struct RawPeer {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl RawPeer {
    async fn connect(url: &str) -> RawPeer {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut peer = RawPeer { ws };
        peer.send(json!({"type": "bind", "appid": APPID, "side": "0badbad0"}))
            .await;
        peer
    }

    async fn send(&mut self, msg: Value) {
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
    }

    /// The next message of type `kind`.
    async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.ws.next().await.expect("open").expect("frame");
            if let Message::Text(text) = frame {
                let msg: Value = serde_json::from_str(text.as_str()).unwrap();
                if msg["type"] == kind {
                    return msg;
                }
            }
        }
    }

    /// The server's list of nameplates in use.
    async fn nameplates(&mut self) -> Vec<String> {
        self.send(json!({"type": "list"})).await;
        let listed = self.expect("nameplates").await;
        listed["nameplates"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["id"].as_str().map(str::to_owned))
            .collect()
    }

    async fn join(&mut self, nameplate: &str) {
        self.send(json!({"type": "claim", "nameplate": nameplate}))
            .await;
        let mailbox = self.expect("claimed").await["mailbox"].clone();
        self.send(json!({"type": "open", "mailbox": mailbox})).await;
    }
}

#[tokio::test]
async fn garbage_from_the_peer_is_a_clear_error() {
    let server = mailbox(&[]);
    let hex = |s: &str| data_encoding::HEXLOWER.encode(s.as_bytes());
    let cases = [
        ("body not hex", "this is not hex".to_owned()),
        ("body not JSON", hex("{{{")),
        ("no pake_v1", hex(r#"{"pake_v2": "00"}"#)),
        ("pake_v1 not hex", hex(r#"{"pake_v1": "xyz"}"#)),
        ("pake_v1 wrong length", hex(r#"{"pake_v1": "00ff"}"#)),
    ];
    for (what, body) in cases {
        let (inviter, _) = within("connect", Mailbox::connect(server.url(), APPID))
            .await
            .unwrap();
        let (code, pending) = within("allocate", inviter.allocate_code(2)).await.unwrap();
        let mut peer = within("raw connect", RawPeer::connect(server.url())).await;
        within("raw join", peer.join(code.split('-').next().unwrap())).await;
        peer.send(json!({"type": "add", "phase": "pake", "body": body}))
            .await;
        let err = within(what, pending.finish(magic_folder_versions()))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, WormholeError::PeerProtocol(_)),
            "{what}: {err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("the other side sent an invalid message"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn server_going_away_is_an_error_not_a_hang() {
    let mut server = mailbox(&[]);
    let (inviter, _) = within("connect", Mailbox::connect(server.url(), APPID))
        .await
        .unwrap();
    let (_code, pending) = within("allocate", inviter.allocate_code(2)).await.unwrap();
    server.kill();
    let err = within("finish", pending.finish(magic_folder_versions()))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            WormholeError::ConnectionClosed | WormholeError::Transport(_)
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn cannot_connect_is_a_connect_error() {
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/v1");
    let err = within("connect", Mailbox::connect(&url, APPID))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, WormholeError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn a_refusing_server_is_unwelcome() {
    let server = mailbox(&["--signal-error=closed for maintenance"]);
    let err = within("connect", Mailbox::connect(server.url(), APPID))
        .await
        .err()
        .unwrap();
    match err {
        WormholeError::Unwelcome(text) => assert_eq!(text, "closed for maintenance"),
        other => panic!("{other:?}"),
    }
}

/// Dropping a waiting wormhole (as a caller's timeout does) must not panic,
/// and must give the nameplate back to the server.
#[tokio::test]
async fn dropping_a_pending_wormhole_releases_its_nameplate() {
    let server = mailbox(&[]);
    let (inviter, _) = within("connect", Mailbox::connect(server.url(), APPID))
        .await
        .unwrap();
    let (code, pending) = within("allocate", inviter.allocate_code(2)).await.unwrap();
    let nameplate = code.split('-').next().unwrap().to_owned();
    let mut lister = within("raw connect", RawPeer::connect(server.url())).await;
    assert!(
        lister.nameplates().await.contains(&nameplate),
        "allocated yet not listed"
    );

    // Nobody joins, so this always times out, however fast the machine.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        pending.finish(magic_folder_versions()),
    )
    .await;
    assert!(cancelled.is_err(), "finished without a peer?");

    // The server's nameplate list eventually no longer has ours.
    within("nameplate released", async {
        while lister.nameplates().await.contains(&nameplate) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
