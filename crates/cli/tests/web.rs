//! The web page in a real browser: Debian's headless Chromium driven over
//! W3C WebDriver (ChromeDriver), both installed by `scripts/browser.sh`.
//! A user logs in with the one-time URL `magic-folder web` prints, watches
//! a file from another participant appear live, resolves a conflict by
//! clicking, and the page is kept as a screenshot in
//! `target/test-artifacts/web-page.png`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// ChromeDriver, started on a free port; killed on drop.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

/// One browser session.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn chromedriver() -> PathBuf {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/browser.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/browser.sh");
    assert!(
        out.status.success(),
        "scripts/browser.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while try_http(&url, "GET", "/status", None).is_none_or(|(c, _)| c != 200) {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver {
            child,
            url,
            _profile: tempfile::tempdir().unwrap(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let (code, text) = try_http_body(&self.url, method, path, &body.to_string())
            .unwrap_or_else(|| panic!("chromedriver does not answer {method} {path}"));
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (code, v)
    }

    fn browser(&self) -> Browser<'_> {
        // Flags for a closed network and a root user (the machine's notes).
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!(
            "--user-data-dir={}",
            self._profile.path().display()
        )])
        .collect::<Vec<_>>();
        let (code, v) = self.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
            }}}),
        );
        assert_eq!(code, 200, "new session: {v}");
        Browser {
            driver: self,
            session: v["value"]["sessionId"].as_str().unwrap().to_owned(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser<'_> {
    fn call(&self, method: &str, what: &str, body: Value) -> (u16, Value) {
        self.driver
            .call(method, &format!("/session/{}{what}", self.session), body)
    }

    fn goto(&self, url: &str) {
        let (code, v) = self.call("POST", "/url", json!({ "url": url }));
        assert_eq!(code, 200, "{v}");
    }

    fn find(&self, css: &str) -> Option<String> {
        let (code, v) = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        (code == 200).then(|| v["value"][ELEMENT].as_str().unwrap().to_owned())
    }

    fn text(&self) -> String {
        let (_, v) = self.call("GET", "/source", json!({}));
        v["value"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits until `css` matches, up to `p`'s timeout; the element's id.
    fn wait_for(&self, css: &str, ps: &[&Participant]) -> String {
        let mut found = None;
        wait_until(&format!("the page shows {css}"), ps, || {
            found = self.find(css);
            found.is_some()
        });
        found.unwrap()
    }

    /// Clicks what `css` matches. The page redraws itself as events
    /// arrive, so an element found a moment ago may be gone: found again
    /// until a click lands.
    fn click(&self, css: &str, ps: &[&Participant]) {
        wait_until(&format!("a click on {css} lands"), ps, || {
            let Some(element) = self.find(css) else {
                return false;
            };
            let (code, v) = self.call("POST", &format!("/element/{element}/click"), json!({}));
            match code {
                200 => true,
                404 if v["value"]["error"] == "stale element reference" => false,
                _ => panic!("click on {css}: {code} {v}"),
            }
        });
    }

    /// Types `text` into the element `css` matches. As with a click, the
    /// element found may be redrawn, or not yet take input (seen on a
    /// loaded machine): found again until the typing lands.
    fn type_into(&self, css: &str, text: &str, ps: &[&Participant]) {
        wait_until(&format!("typing into {css} lands"), ps, || {
            let Some(element) = self.find(css) else {
                return false;
            };
            let (code, v) = self.call(
                "POST",
                &format!("/element/{element}/value"),
                json!({ "text": text }),
            );
            match (code, v["value"]["error"].as_str()) {
                (200, _) => true,
                (_, Some("stale element reference" | "element not interactable")) => false,
                _ => panic!("typing into {css}: {code} {v}"),
            }
        });
    }

    /// The text of the element `css` matches, once there is one.
    fn text_of(&self, css: &str, ps: &[&Participant]) -> String {
        let mut text = String::new();
        wait_until(&format!("the page shows {css}"), ps, || {
            let Some(element) = self.find(css) else {
                return false;
            };
            let (code, v) = self.call("GET", &format!("/element/{element}/text"), json!({}));
            text = v["value"].as_str().unwrap_or_default().to_owned();
            code == 200
        });
        text
    }

    fn screenshot(&self, name: &str) {
        let (code, v) = self.call("GET", "/screenshot", json!({}));
        assert_eq!(code, 200);
        let png = data_encoding::BASE64
            .decode(v["value"].as_str().unwrap().as_bytes())
            .unwrap();
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

/// A request with these headers and no body; its status code.
fn raw(url: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    use std::io::{Read, Write};
    let hostport = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(hostport).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_whitespace().nth(1).unwrap().parse().unwrap()
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .call("DELETE", &format!("/session/{}", self.session), json!({}));
    }
}

#[test]
fn the_web_page_shows_changes_live_and_resolves_a_conflict_by_click() {
    let w = World::new();
    let mut alice = w.admin("alice");
    let mut bob = w.joined(&alice, "bob");
    alice.start();
    bob.start();
    alice.write("notes.txt", b"base version");
    wait_converged("the base version everywhere", &[&alice, &bob]);

    // Without a login the page loads but the API refuses it.
    let (url, token) = alice.api();
    let (code, _) = http(&url, "GET", "/web/", None);
    assert_eq!(code, 200);
    let login = alice.ok(&["web"]).trim().to_owned();
    assert!(
        login.starts_with(&format!("{url}/web/login?code=")),
        "{login}"
    );

    let driver = Driver::start();
    let page = driver.browser();
    page.goto(&login);
    page.wait_for(&format!("#folder-{FOLDER}"), &[&alice]);
    page.wait_for(r#"[data-path="notes.txt"]"#, &[&alice]);
    // The code was spent: a second use is refused.
    let (code, _) = http(&url, "GET", &login[url.len()..], None);
    assert_eq!(code, 403);

    // A file from bob appears without a reload (the status WebSocket).
    bob.write("from-bob.txt", b"hello from bob");
    page.wait_for(r#"[data-path="from-bob.txt"]"#, &[&alice, &bob]);

    // A conflict, resolved by a click on alice's page.
    bob.stop();
    alice.write("notes.txt", b"alice's edit");
    alice.wait_settled();
    bob.write("notes.txt", b"bob's edit, made offline");
    bob.start();
    let button = r#"button[data-resolve="notes.txt"][data-take="mine"]"#;
    page.wait_for(button, &[&alice, &bob]);
    // Clicked once the conflict has settled on both sides (the same winner
    // at the path, one copy beside it). "Keep mine" keeps alice's own
    // version, whether it won (the file) or lost (her copy).
    wait_until("both sides show the same conflict", &[&alice, &bob], || {
        let (ta, tb) = (alice.tree(), bob.tree());
        ta == tb
            && ta
                .keys()
                .filter(|k| k.starts_with("notes.txt.conflict-"))
                .count()
                == 1
    });
    page.screenshot("web-page-conflict.png");
    let mine = b"alice's edit".to_vec();
    page.click(button, &[&alice, &bob]);
    wait_until(
        "the conflict is gone from the page",
        &[&alice, &bob],
        || page.find(r#"[data-conflict="notes.txt"]"#).is_none(),
    );
    let tree = wait_converged("the resolution everywhere", &[&alice, &bob]);
    assert!(
        !tree.keys().any(|k| k.contains(".conflict-")),
        "copies removed: {tree:?}"
    );
    assert_eq!(
        bob.read("notes.txt").unwrap(),
        mine,
        "alice's choice everywhere"
    );
    page.screenshot("web-page.png");
    assert!(page.text().contains("from-bob.txt"));

    // The session cookie alone changes nothing: another site's page could
    // send it only without our header, or with its own Origin.
    let (_, cookies) = page.call("GET", "/cookie", json!({}));
    let session = cookies["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "mf_session")
        .unwrap_or_else(|| panic!("{cookies}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    let cookie = format!("mf_session={}", session["value"].as_str().unwrap());
    let scan = format!("/v1/magic-folder/{FOLDER}/scan-local");
    assert_eq!(raw(&url, "PUT", &scan, &[("Cookie", &cookie)]), 403);
    assert_eq!(
        raw(
            &url,
            "PUT",
            &scan,
            &[("Cookie", &cookie), ("X-Requested-With", "magic-folder")]
        ),
        200
    );
    let status = format!("/v1/magic-folder/{FOLDER}/status");
    assert_eq!(raw(&url, "GET", &status, &[("Cookie", &cookie)]), 200);
    assert_eq!(
        raw(
            &url,
            "GET",
            &status,
            &[("Cookie", &cookie), ("Origin", "http://evil.example")]
        ),
        403
    );
    assert_eq!(
        raw(&url, "GET", &status, &[("Cookie", "mf_session=forged")]),
        401
    );
    assert_eq!(
        raw(
            &url,
            "GET",
            &status,
            &[("Authorization", &format!("Bearer {token}"))]
        ),
        200
    );
    alice.stop();
    bob.stop();
}

/// An invite from the page: type a name, click Invite, read the Magic
/// Wormhole code off the page; the invitee joins with it and the page says
/// so, and lists them among the participants.
#[test]
fn the_web_page_invites_over_magic_wormhole() {
    let w = World::tahoe();
    let mailbox = mf_grid::tahoe::testgrid::MailboxServer::start().expect("a mailbox server");
    let mut alice = w.admin("alice");
    alice.ok(&["init", "--mailbox", mailbox.url()]);
    alice.start();
    let login = alice.ok(&["web"]).trim().to_owned();
    let driver = Driver::start();
    let page = driver.browser();
    page.goto(&login);
    // Typed and submitted with Enter, as a person would.
    page.type_into(
        "form.invite input[name=participant]",
        "carol\u{E007}",
        &[&alice],
    );
    let code = page.text_of(r#"[data-invite-code="carol"]"#, &[&alice]);
    assert!(code.split('-').count() == 3, "a wormhole code: {code:?}");
    page.screenshot("web-page-invite.png");

    let carol = w.participant("carol");
    let dir = carol.dir.to_str().unwrap().to_owned();
    let mut args = vec![
        "join",
        &code,
        &dir,
        "--name",
        FOLDER,
        "--author",
        "carol",
        "--mailbox",
    ];
    args.push(mailbox.url());
    let grid = carol.grid_args(&w);
    args.extend(grid.iter().map(String::as_str));
    carol.ok(&args);
    page.wait_for(r#"[data-invite-done="carol"]"#, &[&alice]);
    page.wait_for(r#"[data-participant="carol"]"#, &[&alice]);
    alice.stop();
}
