//! Our client against Python magic-wormhole 0.24 (the library magic-folder
//! 24.3 uses), both ways round, through a real mailbox server: each side
//! must see the other's versions and messages.

mod common;

use std::process::Stdio;

use common::{magic_folder_versions, mailbox, venv_program, within, APPID};
use mf_wormhole::{Mailbox, Mood, Wormhole};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The Python peer (tests/python_peer.py) with its stdout as JSON lines.
struct PythonPeer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl PythonPeer {
    fn spawn(url: &str, role: &str) -> PythonPeer {
        let python = venv_program("python");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_peer.py");
        let mut child = Command::new(&python)
            .args([script, APPID, url, role])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        PythonPeer { child, lines }
    }

    /// The next line, which must be an object with `key`; returns its value.
    async fn next(&mut self, key: &str) -> Value {
        let line = within(&format!("python: {key}"), self.lines.next_line())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("python exited before reporting {key:?} (see its stderr)"));
        let mut obj: Value = serde_json::from_str(&line).unwrap();
        obj.get_mut(key)
            .unwrap_or_else(|| panic!("expected {key:?} from python, got {line}"))
            .take()
    }

    async fn succeeds(mut self) {
        let status = within("python exit", self.child.wait()).await.unwrap();
        assert!(status.success(), "python peer failed: {status}");
    }
}

/// Our half of the conversation once connected: two messages each way,
/// then a happy close.
async fn converse(mut wormhole: Wormhole) {
    for n in 0..2 {
        wormhole
            .send_json(&json!({"from": "rust", "n": n}))
            .unwrap();
    }
    for n in 0..2 {
        let got = within("receive", wormhole.receive_json()).await.unwrap();
        assert_eq!(got, json!({"from": "python", "n": n}));
    }
    within("close", wormhole.close(Mood::Happy)).await.unwrap();
}

async fn python_saw_everything(mut python: PythonPeer) {
    assert_eq!(python.next("versions").await, magic_folder_versions());
    assert_eq!(
        python.next("received").await,
        json!([{"from": "rust", "n": 0}, {"from": "rust", "n": 1}])
    );
    assert_eq!(python.next("closed").await, json!(true));
    python.succeeds().await;
}

#[tokio::test]
async fn rust_invites_python_joins() {
    let server = mailbox(&[]);
    let (mailbox, _) = within("connect", Mailbox::connect(server.url(), APPID))
        .await
        .unwrap();
    let (code, pending) = within("allocate", mailbox.allocate_code(2)).await.unwrap();

    let mut python = PythonPeer::spawn(server.url(), "join");
    let mut stdin = python.child.stdin.take().unwrap();
    stdin
        .write_all(format!("{code}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);

    let (wormhole, peer_versions) = within("finish", pending.finish(magic_folder_versions()))
        .await
        .unwrap();
    assert_eq!(peer_versions, magic_folder_versions());
    assert_eq!(python.next("code").await, json!(code));
    converse(wormhole).await;
    python_saw_everything(python).await;
}

#[tokio::test]
async fn python_invites_rust_joins() {
    let server = mailbox(&[]);
    let mut python = PythonPeer::spawn(server.url(), "invite");
    let code = python.next("code").await;
    let code = code.as_str().expect("a string code");

    let (mailbox, _) = within("connect", Mailbox::connect(server.url(), APPID))
        .await
        .unwrap();
    let pending = within("set_code", mailbox.set_code(code)).await.unwrap();
    let (wormhole, peer_versions) = within("finish", pending.finish(magic_folder_versions()))
        .await
        .unwrap();
    assert_eq!(peer_versions, magic_folder_versions());
    converse(wormhole).await;
    python_saw_everything(python).await;
}

#[tokio::test]
async fn wrong_code_between_rust_and_python_fails_on_both_sides() {
    let server = mailbox(&[]);
    let (mailbox, _) = within("connect", Mailbox::connect(server.url(), APPID))
        .await
        .unwrap();
    let (code, pending) = within("allocate", mailbox.allocate_code(2)).await.unwrap();
    let nameplate = code.split('-').next().unwrap();

    let mut python = PythonPeer::spawn(server.url(), "join");
    let mut stdin = python.child.stdin.take().unwrap();
    stdin
        .write_all(format!("{nameplate}-wrong-words\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);

    let err = within("finish", pending.finish(magic_folder_versions()))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, mf_wormhole::WormholeError::WrongCode),
        "{err:?}"
    );
    assert_eq!(
        python.next("code").await,
        json!(format!("{nameplate}-wrong-words"))
    );
    assert_eq!(python.next("error").await, json!("wrong-password"));
    python.succeeds().await;
}
