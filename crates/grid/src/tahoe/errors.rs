//! Turning a Tahoe node's HTTP answers into [`GridError`]s that say what the
//! caller should do.
//!
//! Tahoe reports most failures through the status code, but a few meanings
//! only show in the body (every unmapped Python exception is a 500 with a
//! traceback), so the mapping looks at both. The rules, from `tahoe.md` §1.5
//! and checked against tahoe-lafs 1.20.0:
//!
//! | answer | meaning | error |
//! |---|---|---|
//! | 400 "unknown URI type" | the node could not parse the cap | `BadCap` |
//! | 400 otherwise | we sent something malformed | `Protocol` |
//! | 404 | missing child (only child lookups give 404) | `NoChild`, else `NotFound` |
//! | 409 | `replace=false` and the name exists | `Exists` |
//! | 410, or a 500 naming `NoSharesError` / `NotEnoughSharesError` / `UnrecoverableFileError` | not enough shares | `Unavailable` if the node is degraded (some known server not connected, none known, or fewer than `shares.happy` connected), else `NotFound` |
//! | 500 `UncoordinatedWriteError` | another node wrote the same directory | `Unavailable` |
//! | 500 `UploadUnhappinessError` with every known server connected | servers refuse the shares: an interrupted upload of the same bytes still holds its place (below), or a server is full | `Unavailable`, saying so |
//! | 500 `UploadUnhappinessError` otherwise | too few servers to place shares | `Unavailable` |
//! | 500 `NotWriteableError`, or the `AssertionError` a read-only dir gives | not a write cap | `WrongKind` |
//! | 500 otherwise (an unmapped Python exception) | the node failed inside, e.g. while it shuts down | `Unavailable` |
//! | 502 / 503 / 504 | a proxy or the node is overloaded | `Unavailable` |
//! | connection refused, reset, timed out | node away | `Unavailable` |
//! | anything else | | `Protocol` |
//!
//! Why an unmapped 500 is worth retrying: a node being stopped answers
//! reads in flight with whatever its half-torn state raises (seen:
//! `AttributeError: 'NoneType' object has no attribute 'segnum'` from a
//! segment fetch). Taken as final, that rejected a peer's good snapshot for
//! good; retried, it syncs once the node is back. A node that fails the
//! same way every time only costs retries, each shown in status.
//!
//! Why an unhappy upload with every server connected is told apart: an
//! upload cancelled half-way (say, by a `kill -9` of its client) leaves its
//! shares in the `incoming/` of each storage server it had reached, and
//! until they go such a server neither accepts nor reports shares of that
//! storage index (`StorageServer.allocate_buckets` skips a share number
//! with a partial share; `storage/server.py`). Immutable uploads are
//! convergent, so every retry of the same bytes is refused by those
//! servers — by all of them, or by just enough to miss `shares.happy`.
//! The partial shares go when their `BucketWriter` times out — 30 minutes
//! after its last write (`storage/immutable.py`, `callLater(30 * 60,
//! _abort_due_to_timeout)`; a Foolscap disconnect aborts at once, the HTTP
//! protocol has no disconnect) — or when the server restarts (`_clean_incomplete`). Nothing in the web API yields
//! another storage index for the same bytes, so the caller can only wait:
//! the error says so instead of looking like an outage.
//!
//! Why 410 is split: "not enough shares" is what Tahoe says both for an
//! object that never existed and for one whose servers are away. Only the
//! second is worth retrying, so the caller (see `TahoeGrid::classify`) asks
//! the node's welcome page whether every server it knows is connected (and
//! at least `shares.happy` of them, when the encoding is known; see
//! `Health::degraded`); if so, the shares really are missing and the error is
//! permanent.

use reqwest::StatusCode;

use crate::cap::CapError;
use crate::{Capability, GridError};

/// What a request was about, for error messages and for choosing between
/// `NoChild` and `NotFound`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx<'a> {
    /// A short name of the operation ("list", "upload", …).
    pub op: &'static str,
    /// The capability the request addressed, if any.
    pub cap: Option<&'a Capability>,
    /// The child name the request addressed, if any.
    pub child: Option<&'a str>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(op: &'static str, cap: Option<&'a Capability>) -> Ctx<'a> {
        Ctx {
            op,
            cap,
            child: None,
        }
    }

    pub(crate) fn child(mut self, name: &'a str) -> Ctx<'a> {
        self.child = Some(name);
        self
    }

    /// A non-secret name for the addressed object.
    pub(crate) fn object(&self) -> String {
        match self.cap {
            Some(cap) => short(cap),
            None => "(new object)".into(),
        }
    }
}

/// The first characters of a cap: enough to tell objects apart in a log,
/// too few to use it (the key field is cut).
pub(crate) fn short(cap: &Capability) -> String {
    let s: String = cap.as_str().chars().take(20).collect();
    format!("{s}…")
}

/// The most useful line of an error body: for a traceback, the last line
/// (the exception); for HTML, the text without tags; at most 300 chars.
pub(crate) fn summary(body: &str) -> String {
    let text = if body.trim_start().starts_with('<') {
        strip_tags(body)
    } else {
        body.to_string()
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = if text.contains("Traceback (most recent call last)") {
        lines.last().copied().unwrap_or("")
    } else {
        // Tahoe's own messages put the cause first ("NoSharesError: …").
        lines.first().copied().unwrap_or("")
    };
    line.chars().take(300).collect()
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push('\n');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// True for an upload too few servers took shares of (see the module docs).
fn is_refused_upload(body: &str) -> bool {
    body.contains("UploadUnhappinessError")
}

/// True for an answer whose meaning depends on whether the node's servers
/// are all connected: too few shares to read, or no server taking shares.
pub(crate) fn needs_health(status: StatusCode, body: &str) -> bool {
    is_share_shortage(status, body) || is_refused_upload(body)
}

/// True for "not enough shares" in any of its forms.
fn is_share_shortage(status: StatusCode, body: &str) -> bool {
    status == StatusCode::GONE
        || [
            "NoSharesError",
            "NotEnoughSharesError",
            "UnrecoverableFileError",
        ]
        .iter()
        .any(|e| body.contains(e))
}

/// What an upload refused with every server connected means (see the
/// module docs).
pub const INTERRUPTED_UPLOAD: &str = "waiting for the grid to release an interrupted upload \
     of the same content: the storage servers keep its partial shares until 30 minutes \
     after its last write, or until they restart (or a storage server is full)";

/// Maps a non-success answer. `servers_away` is only consulted for share
/// shortages: `Some(true)` if the node is degraded (`Health::degraded`:
/// it knows servers it is not connected to, or too few), `Some(false)` if
/// not, `None` if that could not be learned
/// (then the shortage is treated as transient, the safe side for a syncer:
/// it retries later rather than concluding data is gone).
pub(crate) fn map_status(
    status: StatusCode,
    body: &str,
    ctx: Ctx<'_>,
    servers_away: Option<bool>,
) -> GridError {
    let what = summary(body);
    let detail = format!(
        "{} {}: HTTP {} {}",
        ctx.op,
        ctx.object(),
        status.as_u16(),
        what
    );
    if is_refused_upload(body) {
        return match servers_away {
            Some(false) => GridError::Unavailable(format!("{INTERRUPTED_UPLOAD} ({detail})")),
            _ => GridError::Unavailable(format!("{detail} (some storage servers are away)")),
        };
    }
    if is_share_shortage(status, body) {
        return match servers_away {
            Some(false) => GridError::NotFound(format!("{detail} (all known servers connected)")),
            _ => GridError::Unavailable(format!("{detail} (some storage servers are away)")),
        };
    }
    match status.as_u16() {
        400 => {
            if let (true, Some(cap)) = (body.contains("unknown URI type"), ctx.cap) {
                GridError::BadCap(CapError::new(
                    cap.as_str(),
                    "the Tahoe node does not understand it",
                ))
            } else {
                GridError::Protocol(detail)
            }
        }
        404 => match ctx.child {
            Some(name) => GridError::NoChild(name.to_owned()),
            None => GridError::NotFound(detail),
        },
        409 => GridError::Exists(ctx.child.unwrap_or("?").to_owned()),
        500 => {
            if body.contains("UncoordinatedWriteError") || body.contains("UploadUnhappinessError") {
                GridError::Unavailable(detail)
            } else if body.contains("NotWriteableError")
                || (body.contains("AssertionError") && body.contains("is_readonly"))
            {
                match ctx.cap {
                    Some(cap) => GridError::WrongKind {
                        expected: "mutable directory write capability",
                        got: cap.kind(),
                    },
                    None => GridError::Protocol(detail),
                }
            } else {
                GridError::Unavailable(detail)
            }
        }
        502..=504 => GridError::Unavailable(detail),
        _ => GridError::Protocol(detail),
    }
}

/// Maps a transport-level failure (no HTTP answer, or a body cut short).
pub(crate) fn map_transport(err: &reqwest::Error, ctx: Ctx<'_>) -> GridError {
    let detail = format!("{} {}: {}", ctx.op, ctx.object(), chain(err));
    if err.is_builder() || err.is_decode() {
        GridError::Protocol(detail)
    } else {
        // Connect, timeout, request and body errors: the node is away, slow,
        // or dropped the connection. All worth another try later.
        GridError::Unavailable(detail)
    }
}

/// An error and its sources on one line ("error sending request: connection refused").
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        let t = e.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CapKind;

    fn dir() -> Capability {
        Capability::parse("URI:DIR2-RO:4ysmwexutwr5kzpnzsauecqdxa:tsebdb7n4g5cvhemd3ryncbeojwnf4jytvox7pyuxfpk7iq45emq")
            .unwrap()
    }

    fn st(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    #[test]
    fn status_table() {
        let d = dir();
        let ctx = Ctx::new("op", Some(&d));
        let child = ctx.child("a");
        assert!(
            matches!(map_status(st(404), "<html>No such child: a</html>", child, None), GridError::NoChild(n) if n == "a")
        );
        assert!(matches!(
            map_status(st(404), "", ctx, None),
            GridError::NotFound(_)
        ));
        assert!(
            matches!(map_status(st(409), "There was already a child", child, None), GridError::Exists(n) if n == "a")
        );
        assert!(matches!(
            map_status(
                st(400),
                "GET unknown URI type: can only do t=info",
                ctx,
                None
            ),
            GridError::BadCap(_)
        ));
        assert!(matches!(
            map_status(st(400), "bad t=", ctx, None),
            GridError::Protocol(_)
        ));
        let gone = "NoSharesError: no shares could be found.";
        assert!(matches!(
            map_status(st(410), gone, ctx, Some(false)),
            GridError::NotFound(_)
        ));
        assert!(matches!(
            map_status(st(410), gone, ctx, Some(true)),
            GridError::Unavailable(_)
        ));
        assert!(matches!(
            map_status(st(410), gone, ctx, None),
            GridError::Unavailable(_)
        ));
        let ucw = "Traceback (most recent call last):\n  File x\nallmydata.mutable.common.UncoordinatedWriteError: oops";
        assert!(matches!(
            map_status(st(500), ucw, ctx, None),
            GridError::Unavailable(_)
        ));
        let unhappy = "Traceback (most recent call last):\nallmydata.interfaces.UploadUnhappinessError: server selection failed";
        assert!(matches!(
            map_status(st(500), unhappy, ctx, None),
            GridError::Unavailable(_)
        ));
        // Every connected server refused: an interrupted upload holds the place.
        let refused =
            "Traceback (most recent call last):\nallmydata.interfaces.UploadUnhappinessError: \
            shares could be placed or found on only 0 server(s). We were asked to place shares \
            on at least 3 server(s)";
        assert!(needs_health(st(500), refused));
        let m = map_status(st(500), refused, ctx, Some(false));
        assert!(
            matches!(&m, GridError::Unavailable(d) if d.starts_with(INTERRUPTED_UPLOAD)),
            "{m:?}"
        );
        // Refused by only some of them: the same, as happiness is missed.
        let some =
            "Traceback (most recent call last):\nallmydata.interfaces.UploadUnhappinessError: \
            server selection failed: shares could be placed on only 2 server(s) such that any 2 \
            of them have enough shares to recover the file, but we were asked to place shares \
            on at least 3 such servers.";
        assert!(needs_health(st(500), some));
        let m = map_status(st(500), some, ctx, Some(false));
        assert!(
            matches!(&m, GridError::Unavailable(d) if d.starts_with(INTERRUPTED_UPLOAD)),
            "{m:?}"
        );
        // With servers away it is just an outage.
        let m = map_status(st(500), refused, ctx, Some(true));
        assert!(
            matches!(&m, GridError::Unavailable(d) if !d.contains("interrupted")),
            "{m:?}"
        );
        let ro = "Traceback (most recent call last):\n    assert not self.is_readonly()\nbuiltins.AssertionError: ";
        assert!(matches!(
            map_status(st(500), ro, ctx, None),
            GridError::WrongKind {
                got: CapKind::MutableDirRead,
                ..
            }
        ));
        // The node failing inside (seen while it shut down): retried.
        assert!(matches!(
            map_status(
                st(500),
                "Traceback\nbuiltins.AttributeError: 'NoneType' object has no attribute 'segnum'",
                ctx,
                None
            ),
            GridError::Unavailable(_)
        ));
        assert!(matches!(
            map_status(st(503), "", ctx, None),
            GridError::Unavailable(_)
        ));
        assert!(matches!(
            map_status(st(413), "", ctx, None),
            GridError::Protocol(_)
        ));
    }

    #[test]
    fn summaries_pick_the_cause() {
        let tb = "Traceback (most recent call last):\n  File \"a.py\"\n    x()\nfoo.BarError: the reason\n";
        assert_eq!(summary(tb), "foo.BarError: the reason");
        assert_eq!(
            summary("NoSharesError: none\n\nThe full error message is:\nno shares"),
            "NoSharesError: none"
        );
        assert_eq!(
            summary("\n<html>\n  <head><title>404 - Error</title></head>\n  <body>"),
            "404 - Error"
        );
    }

    #[test]
    fn errors_do_not_print_whole_caps() {
        let d = dir();
        let err = map_status(
            st(410),
            "NoSharesError",
            Ctx::new("list", Some(&d)),
            Some(false),
        );
        assert!(!err.to_string().contains(d.as_str()));
    }
}
