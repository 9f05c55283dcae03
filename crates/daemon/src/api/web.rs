//! The web page, at `/web/` on the API's address.
//!
//! Its three files are compiled into the binary (`crates/daemon/web/`): no
//! CDN, no build step. The page itself holds nothing secret; what it shows
//! comes from the API, which it may call once logged in:
//!
//! 1. `magic-folder web` asks the daemon (with the API token) for a login
//!    URL: `POST /v1/web/login-url` makes a one-time code, good for
//!    [`LOGIN_TTL`].
//! 2. Opening `/web/login?code=…` spends the code and sets a session
//!    cookie — `HttpOnly` (no script reads it), `SameSite=Strict` (no other
//!    site's page sends it) — then redirects to the page.
//! 3. The API takes that cookie as it takes the token, with two more
//!    checks against other sites' pages (see `mod.rs`, `authorise`): a
//!    request that changes something must carry `X-Requested-With:
//!    magic-folder` (which a foreign page cannot send without a CORS
//!    preflight this daemon never grants), and one that says where it
//!    comes from (`Origin`) must come from here.
//!
//! Codes and sessions live in memory, a bounded number of each: a daemon
//! restart logs every browser out.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use data_encoding::BASE64URL_NOPAD;
use serde::Deserialize;
use serde_json::json;

use super::{constant_time_eq, ApiError, ApiState};

/// How long a login code may wait to be used.
pub const LOGIN_TTL: Duration = Duration::from_secs(300);
/// Login codes waiting at most; the oldest goes first.
const MAX_CODES: usize = 16;
/// Sessions at most; the oldest is logged out first.
const MAX_SESSIONS: usize = 32;
/// The session cookie's name.
pub(super) const COOKIE: &str = "mf_session";

const INDEX: &str = include_str!("../../web/index.html");
const APP: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/style.css");

/// Login codes and sessions.
#[derive(Debug, Default)]
pub(super) struct WebSessions {
    codes: Mutex<VecDeque<(String, Instant)>>,
    sessions: Mutex<VecDeque<String>>,
}

fn random_secret() -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no randomness: {e}"),
        )
    })?;
    Ok(BASE64URL_NOPAD.encode(&b))
}

impl WebSessions {
    fn new_code(&self) -> Result<String, ApiError> {
        let code = random_secret()?;
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|(_, at)| at.elapsed() < LOGIN_TTL);
        if codes.len() >= MAX_CODES {
            codes.pop_front();
        }
        codes.push_back((code.clone(), Instant::now()));
        Ok(code)
    }

    /// Spends `code`; a new session id if it was good.
    fn redeem(&self, code: &str) -> Result<Option<String>, ApiError> {
        let found = {
            let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
            codes.retain(|(_, at)| at.elapsed() < LOGIN_TTL);
            let i = codes
                .iter()
                .position(|(c, _)| constant_time_eq(c.as_bytes(), code.as_bytes()));
            i.map(|i| codes.remove(i))
        };
        if found.is_none() {
            return Ok(None);
        }
        let id = random_secret()?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(id.clone());
        Ok(Some(id))
    }

    /// True if the request's cookies hold a live session.
    pub(super) fn has_session(&self, headers: &HeaderMap) -> bool {
        let Some(id) = session_cookie(headers) else {
            return false;
        };
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .iter()
            .any(|s| constant_time_eq(s.as_bytes(), id.as_bytes()))
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// `POST /v1/web/login-url` (with the API token): a one-time login URL on
/// the address the request came to.
pub(super) async fn login_url(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "no Host header"))?;
    let code = state.web.new_code()?;
    Ok(Json(json!({
        "url": format!("http://{host}/web/login?code={code}"),
        "expires_in_s": LOGIN_TTL.as_secs(),
    })))
}

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    code: Option<String>,
}

/// `GET /web/login?code=…`: spends the code, sets the session cookie.
pub(super) async fn login(
    State(state): State<ApiState>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let session = match q.code {
        Some(code) => state.web.redeem(&code)?,
        None => None,
    };
    let Some(id) = session else {
        return Ok((
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This login link is not valid (used already, or older than 5 minutes). \
             Run `magic-folder web` for a new one.\n",
        )
            .into_response());
    };
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/web/".to_owned()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/"),
            ),
        ],
    )
        .into_response())
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            // Only our own files and our own API (also over WebSocket).
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src 'self' ws: ; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub(super) async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP)
}

pub(super) async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
