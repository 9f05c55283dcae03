//! The daemon's HTTP API on the loopback interface, and the small client the
//! CLI uses to talk to it.
//!
//! Why an API at all: the CLI must be able to ask the *running* daemon for
//! live status (what is queued, in flight, conflicted) and to scan now (after
//! `resolve`), without sharing memory with it. The shape follows magic-folder
//! 24.3 (`/v1/magic-folder/...`, `Authorization: Bearer <token>`, JSON errors
//! `{"reason": ...}`).
//!
//! magic-folder 24.3's routes (listing, scan, poll, file status, recent
//! changes, conflicts, participants) are in [`compat`], in its shapes; ours:
//!
//! | route | result |
//! |---|---|
//! | `GET /v1/magic-folder/{name}/status` | [`FolderStatus`]: state, counts, conflicts, errors |
//! | `GET /v1/status` (WebSocket) | 24.3's event stream, see `status_ws` |
//! | `GET /metrics` | Prometheus text exposition, see [`crate::metrics`] |
//! | `POST /v1/magic-folder`, `POST /v1/join`, `DELETE /v1/magic-folder/{name}`, `POST …/{name}/config` | create, join, leave, retune (see `manage`) |
//! | `POST /v1/magic-folder/{name}/resolve-conflict` `{"relpath", "resolution": "mine"\|"theirs", "participant"?}` | `ResolveOutcome` |
//! | `POST /v1/web/login-url` | `{"url"}`: a one-time login to the web page (`web`) |
//! | `GET /web/` | the web page (no token: it holds no secrets; see `web`) |
//! | `GET /v1/magic-folder/{name}/history?path=REL` | `History`: every version of a file, from the grid |
//! | `POST /v1/magic-folder/{name}/restore` `{"path", "version"?, "to"?}` | `RestoreOutcome` |
//! | `GET /v1/magic-folder/{name}/deleted[?since_s=N]` | `[Deleted]`, newest first |
//!
//! Paths in requests are relative to the folder (`docs/a.txt`); one that
//! leaves it is a **400**. History, restore and deleted answer what the
//! commands of the same names print with `--json`.
//!
//! The server binds `127.0.0.1` on an ephemeral port and `run` writes its URL
//! to `<config>/api.url`. Every request must carry the token from
//! `<config>/api_token` (a 0600 file, so only the owner can read it); it is
//! compared in constant time. Anything else gets **401**. Binding loopback
//! only and requiring the token keeps other users of the machine (and web
//! pages doing DNS rebinding) out.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::config::ConfigDir;
use crate::events::Telemetry;
use crate::folder::Folders;

mod commands;
mod compat;
mod invites;
mod manage;
mod status_ws;
mod web;

pub use compat::{AuthorInfo, FolderListing};
pub use manage::{CreateRequest, JoinRequest, LeaveRequest};

/// Live status of one folder, as the API and `status --json` report it.
/// Times are milliseconds since the Unix epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderStatus {
    /// The folder's name.
    pub name: String,
    /// The synchronised directory.
    pub local_path: PathBuf,
    /// In one word: up to date, syncing, offline, error or stopped.
    #[serde(default)]
    pub state: FolderState,
    /// Why it is offline, in error or stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// True if this comes from a running daemon; false if read from the
    /// local database while no daemon runs.
    pub running: bool,
    /// A remark for the user (e.g. "the daemon is not running", or why the
    /// folder stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Regular files.
    pub files: usize,
    /// Directories.
    #[serde(default)]
    pub directories: usize,
    /// Paths waiting for work.
    pub queued: usize,
    /// Effects in flight.
    pub in_flight: usize,
    /// Snapshots made but not yet linked into our personal directory.
    pub unpublished: usize,
    /// Unresolved conflicts.
    pub conflicts: Vec<ConflictInfo>,
    /// When the last full scan finished.
    pub last_scan: Option<u64>,
    /// When the last poll finished.
    pub last_poll: Option<u64>,
    /// Recent problems, oldest first.
    pub errors: Vec<ErrorInfo>,
    /// The local versions area, as its last pruning left it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<VersionsArea>,
    /// Transfers in progress (the largest first, at most 20).
    #[serde(default)]
    pub transfers: Vec<TransferInfo>,
}

/// A folder's state in one word, for people and for programs (a client
/// need not guess from counters whether a folder is done).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FolderState {
    /// Nothing queued, in flight or unpublished, and the grid answers.
    UpToDate,
    /// Work is queued, in flight or not yet published.
    Syncing,
    /// The grid cannot be reached, or cannot take writes (see the reason).
    Offline,
    /// The folder stopped: its local state cannot be written (see the reason).
    Error,
    /// No daemon runs this folder.
    #[default]
    Stopped,
}

/// What the local versions area (`.magic-folder/versions/`) holds, and what
/// it keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionsArea {
    /// Old versions kept.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Versions are kept this many seconds after they were replaced.
    pub max_age_s: u64,
    /// At most this many versions of each file are kept.
    pub per_file: usize,
}

/// One unresolved conflict: `path` has a copy `path.conflict-<participant>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConflictInfo {
    /// The conflicted path, relative to the folder.
    pub path: String,
    /// Whose version is kept as the conflict copy.
    pub participant: String,
}

/// A transfer in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferInfo {
    /// The path, relative to the folder.
    pub path: String,
    /// `upload` or `download`.
    pub direction: String,
    /// Bytes done so far.
    pub bytes_done: u64,
    /// The file's size.
    pub bytes_total: u64,
}

/// One recent problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// When it happened (Unix ms).
    pub at: u64,
    /// The path concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// What `list --json` (and `create`/`join`) say about a folder (no secrets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderSummary {
    /// The folder's name.
    pub name: String,
    /// The synchronised directory.
    pub local_path: PathBuf,
    /// Our participant name.
    pub participant: String,
    /// Author name in our snapshots.
    pub author: String,
    /// True if we hold the collective's write capability.
    pub is_admin: bool,
    /// `embedded` or `tahoe`.
    pub grid: String,
    /// How its personal directories are laid out: `flat` (24.3's) or
    /// `sharded`.
    #[serde(default)]
    pub layout: crate::personal::Layout,
    /// How it stores file contents: `whole` (24.3's) or `chunked`.
    #[serde(default)]
    pub content: crate::chunked::ContentFormat,
    /// How it stores snapshots: `single` (24.3's) or `packed`.
    #[serde(default)]
    pub snapshots: crate::pack::Snapshots,
    /// Poll interval, ms.
    pub poll_interval_ms: u64,
    /// Scan interval, ms.
    pub scan_interval_ms: u64,
    /// False if the folder's service stopped with an error.
    pub running: bool,
}

/// An error answer: an HTTP status and `{"reason": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason: reason.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "reason": self.reason })),
        )
            .into_response()
    }
}

#[derive(Clone)]
pub(super) struct ApiState {
    token: Arc<str>,
    folders: Folders,
    config: ConfigDir,
    telemetry: Telemetry,
    web: Arc<web::WebSessions>,
    /// Invites over Magic Wormhole in progress or done (24.3's `/experimental`).
    invites: Arc<invites::Invites>,
    /// Asks the daemon to start, stop or restart folders to match their
    /// configs now; the sender it carries hears when that is done.
    reconcile: Reconcile,
}

/// See [`ApiState`]'s `reconcile`.
pub type Reconcile = tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>;

/// Builds the router (exposed for tests that drive it without a socket).
pub fn router(
    token: String,
    folders: Folders,
    config: ConfigDir,
    telemetry: Telemetry,
    reconcile: Reconcile,
) -> Router {
    let state = ApiState {
        token: token.into(),
        folders,
        config,
        telemetry,
        web: Arc::new(web::WebSessions::default()),
        invites: Arc::default(),
        reconcile,
    };
    let f = |route: &str| format!("/v1/magic-folder/{{name}}/{route}");
    let x = |route: &str| format!("/experimental/magic-folder/{{name}}/{route}");
    let protected = Router::new()
        .route("/v1/status", get(status_ws::connect))
        .route("/v1/snapshot", get(compat::local_snapshots))
        .route("/metrics", get(metrics))
        .route("/v1/web/login-url", post(web::login_url))
        .route(
            "/v1/magic-folder",
            get(compat::list_folders).post(manage::create),
        )
        .route("/v1/magic-folder/{name}", delete(manage::leave))
        .route("/v1/join", post(manage::join))
        .route(&f("config"), post(manage::tune))
        .route(&f("scan-local"), put(compat::scan_local))
        .route(&f("poll-remote"), put(compat::poll_remote))
        .route(&f("snapshot"), post(compat::add_snapshot))
        .route(&f("file-status"), get(compat::file_status))
        .route(&f("recent-changes"), get(compat::recent_changes))
        .route(&f("conflicts"), get(compat::conflicts))
        .route(&f("tahoe-objects"), get(compat::tahoe_objects))
        .route(
            &f("participants"),
            get(compat::participants).post(compat::add_participant),
        )
        .route(
            &f("participants/{participant}"),
            delete(compat::remove_participant),
        )
        .route(&f("status"), get(folder_status))
        .route(&f("history"), get(commands::folder_history))
        .route(&f("restore"), post(commands::folder_restore))
        .route(&f("deleted"), get(commands::folder_deleted))
        .route(&f("resolve-conflict"), post(commands::resolve_conflict))
        .route(&x("invite"), post(invites::create))
        .route(&x("invite-wait"), post(invites::wait))
        .route(&x("invite-cancel"), post(invites::cancel))
        .route(&x("invites"), get(invites::list))
        .route(&x("join"), post(invites::join))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such API route") })
        .layer(middleware::from_fn_with_state(state.clone(), authorise));
    // The page and its login need no token: they hold no secrets.
    let public = Router::new()
        .route("/web/", get(web::index))
        .route("/web/app.js", get(web::app_js))
        .route("/web/style.css", get(web::style_css))
        .route("/web/login", get(web::login));
    public.merge(protected).with_state(state)
}

/// Binds `127.0.0.1` on an ephemeral port; returns the listener and its URL.
pub async fn bind_loopback() -> std::io::Result<(TcpListener, String)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, format!("http://{addr}")))
}

/// Serves the API until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    token: String,
    folders: Folders,
    config: ConfigDir,
    telemetry: Telemetry,
    reconcile: Reconcile,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(token, folders, config, telemetry, reconcile),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Compares two byte strings in time that depends only on their lengths.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Lets a request in with the API token, or with a web session's cookie
/// (see `web`): then a request that changes something must carry
/// `X-Requested-With: magic-folder`, and one that names its origin must
/// come from this address. (Our own rather than `tower-http`'s bearer
/// check, which knows tokens only: the page's session and its CSRF rules
/// belong in the same decision.)
async fn authorise(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if given.is_some_and(|t| constant_time_eq(t.as_bytes(), state.token.as_bytes())) {
        return next.run(req).await;
    }
    if state.web.has_session(headers) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_ok = match headers.get(header::ORIGIN).map(|o| o.to_str()) {
            None => true,
            Some(Ok(o)) => host.is_some_and(|h| o == format!("http://{h}")),
            Some(Err(_)) => false,
        };
        let reads = matches!(*req.method(), Method::GET | Method::HEAD);
        let marked = headers
            .get("x-requested-with")
            .is_some_and(|v| v.as_bytes() == b"magic-folder");
        if origin_ok && (reads || marked) {
            return next.run(req).await;
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "a request from the web page must come from this address and, to change anything, \
             carry X-Requested-With: magic-folder",
        )
        .into_response();
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong API token (Authorization: Bearer <contents of api_token>)",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

async fn folder_status(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<FolderStatus>, ApiError> {
    let folders = state.folders.read().await;
    let h = folders.get(&name).ok_or_else(|| no_folder(&name))?;
    h.status()
        .await
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))
}

/// A request body as JSON, whatever its `Content-Type` says (24.3's clients
/// send none); 24.3's error for one that is not.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("Could not load JSON: {e}")))
}

async fn metrics(State(state): State<ApiState>) -> Response {
    render_metrics(&state.folders, &state.telemetry).await
}

async fn render_metrics(folders: &Folders, telemetry: &Telemetry) -> Response {
    let mut statuses = Vec::new();
    {
        let folders = folders.read().await;
        for h in folders.values() {
            if let Ok(s) = h.status().await {
                statuses.push(s);
            }
        }
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let body = telemetry.metrics.render(&statuses, now_ms);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Serves `/metrics` alone, without the token, until `shutdown`: for a
/// Prometheus scraper that cannot send one (`run --metrics-listen`). The
/// caller binds loopback only; nothing else of the API is reachable there.
pub async fn serve_metrics(
    listener: TcpListener,
    folders: Folders,
    telemetry: Telemetry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State((f, t)): State<(Folders, Telemetry)>| async move {
                render_metrics(&f, &t).await
            }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "only /metrics is here") })
        .with_state((folders, telemetry));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

pub(super) fn no_folder(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no running magic folder named {name:?}"),
    )
}

/// A client of a running daemon's API.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// Timeout for one API request that reads: the daemon answers from memory.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Timeout for one that changes a folder: it works on the grid (a Tahoe
/// directory made and linked, a wormhole's peer waited for).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(300);

impl ApiClient {
    /// A client for the daemon running on `config`, or `None` if no daemon
    /// holds the lock there (or it has not published its URL yet).
    pub fn for_running_daemon(config: &ConfigDir) -> Option<ApiClient> {
        if !config.daemon_running() {
            return None;
        }
        let base = config.read_api_url()?;
        let token = config.api_token().ok()?;
        Some(ApiClient::new(base, token))
    }

    /// A client for the API at `base` (e.g. `http://127.0.0.1:1234`).
    pub fn new(base: String, token: String) -> ApiClient {
        let http = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .no_proxy()
            .build()
            .expect("a plain HTTP client builds");
        ApiClient { base, token, http }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<T, String> {
        self.call_with(method, path, None).await
    }

    async fn call_with<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, String> {
        let url = format!("{}{path}", self.base);
        let reads = method == reqwest::Method::GET;
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if !reads {
            req = req.timeout(CHANGE_TIMEOUT);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the daemon at {}: {e}", self.base))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("reading the daemon's answer: {e}"))?;
        if !status.is_success() {
            let reason = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(format!("the daemon answered {status}: {reason}"));
        }
        serde_json::from_slice(&body)
            .map_err(|e| format!("the daemon's answer is not what was expected: {e}"))
    }

    /// `GET /v1/magic-folder`.
    pub async fn list(&self) -> Result<BTreeMap<String, FolderListing>, String> {
        self.call(reqwest::Method::GET, "/v1/magic-folder").await
    }

    /// `GET /v1/magic-folder/{name}/status`.
    pub async fn status(&self, name: &str) -> Result<FolderStatus, String> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/magic-folder/{name}/status"),
        )
        .await
    }

    /// `PUT /v1/magic-folder/{name}/scan-local`.
    pub async fn scan(&self, name: &str) -> Result<(), String> {
        self.call::<serde_json::Value>(
            reqwest::Method::PUT,
            &format!("/v1/magic-folder/{name}/scan-local"),
        )
        .await
        .map(drop)
    }

    /// `PUT /v1/magic-folder/{name}/poll-remote`.
    pub async fn poll(&self, name: &str) -> Result<(), String> {
        self.call::<serde_json::Value>(
            reqwest::Method::PUT,
            &format!("/v1/magic-folder/{name}/poll-remote"),
        )
        .await
        .map(drop)
    }

    async fn send<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> Result<T, String> {
        self.call_with(
            method,
            path,
            Some(serde_json::to_vec(body).map_err(|e| e.to_string())?),
        )
        .await
    }

    /// `POST /v1/magic-folder`: creates a folder.
    pub async fn create(&self, req: &CreateRequest) -> Result<crate::commands::FolderInfo, String> {
        self.send(reqwest::Method::POST, "/v1/magic-folder", req)
            .await
    }

    /// `POST /v1/join`: joins a folder.
    pub async fn join(&self, req: &JoinRequest) -> Result<crate::commands::FolderInfo, String> {
        self.send(reqwest::Method::POST, "/v1/join", req).await
    }

    /// `DELETE /v1/magic-folder/{name}`: leaves a folder.
    pub async fn leave(
        &self,
        name: &str,
        req: &LeaveRequest,
    ) -> Result<crate::commands::setup::LeaveOutcome, String> {
        self.send(
            reqwest::Method::DELETE,
            &format!("/v1/magic-folder/{name}"),
            req,
        )
        .await
    }

    /// `POST /v1/magic-folder/{name}/config`: retunes a folder.
    pub async fn tune(
        &self,
        name: &str,
        t: &crate::commands::Tuning,
    ) -> Result<crate::commands::FolderInfo, String> {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/magic-folder/{name}/config"),
            t,
        )
        .await
    }

    /// `POST /v1/magic-folder/{name}/participants`: adds a participant by
    /// their personal directory's read capability.
    pub async fn add_participant(
        &self,
        name: &str,
        who: &str,
        personal_dmd: &str,
    ) -> Result<(), String> {
        let body = serde_json::json!({"author": {"name": who}, "personal_dmd": personal_dmd});
        self.send::<_, serde_json::Value>(
            reqwest::Method::POST,
            &format!("/v1/magic-folder/{name}/participants"),
            &body,
        )
        .await
        .map(drop)
    }

    /// `DELETE /v1/magic-folder/{name}/participants/{who}`.
    pub async fn remove_participant(&self, name: &str, who: &str) -> Result<(), String> {
        self.call::<serde_json::Value>(
            reqwest::Method::DELETE,
            &format!("/v1/magic-folder/{name}/participants/{who}"),
        )
        .await
        .map(drop)
    }

    /// `POST /v1/web/login-url`: a one-time login URL for the web page.
    pub async fn web_login_url(&self) -> Result<String, String> {
        let v: serde_json::Value = self
            .call(reqwest::Method::POST, "/v1/web/login-url")
            .await?;
        v["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("the daemon answered {v} instead of a URL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[tokio::test]
    async fn requests_without_the_token_are_refused() {
        let folders: Folders = Default::default();
        let (listener, url) = bind_loopback().await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = ConfigDir::at(tempfile::tempdir().unwrap().keep());
        let server = tokio::spawn(serve(
            listener,
            "sekrit-token-0123456789".into(),
            folders,
            config,
            Telemetry::default(),
            tokio::sync::mpsc::channel(1).0,
            async {
                let _ = rx.await;
            },
        ));
        let good = ApiClient::new(url.clone(), "sekrit-token-0123456789".into());
        assert!(good.list().await.unwrap().is_empty());
        let err = good.status("nope").await.unwrap_err();
        assert!(err.contains("404") && err.contains("nope"), "{err}");
        let bad = ApiClient::new(url.clone(), "wrong-token-0123456789".into());
        let err = bad.list().await.unwrap_err();
        assert!(err.contains("401"), "{err}");
        let resp = reqwest::Client::new()
            .get(format!("{url}/v1/magic-folder"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
        let _ = tx.send(());
        server.await.unwrap().unwrap();
    }
}
