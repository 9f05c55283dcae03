//! The Tahoe-LAFS backend: [`TahoeGrid`] drives a running Tahoe node through
//! its web API (WAPI).
//!
//! Why the web API and not Tahoe's storage protocol: the node already does
//! the erasure coding, encryption, server selection and mutable-file
//! consensus, and its HTTP surface is small and stable (`tahoe.md` §1). The
//! price is one local HTTP hop per operation, which pooling makes cheap.
//!
//! # How each operation maps
//!
//! | [`Grid`] method | request |
//! |---|---|
//! | `upload` | up to 8 KiB ([`LITERAL_MAX`]): a `URI:LIT:` cap made here, no request; else `PUT /uri` (body streamed from disk, `Content-Length` set) → `URI:CHK:` |
//! | `download` | `GET /uri/$CAP`, streamed; `URI:LIT:` caps are decoded locally, no request |
//! | `create_immutable_dir` | `POST /uri?t=mkdir-immutable` with JSON children |
//! | `create_mutable_dir` | `POST /uri?t=mkdir&format=sdmf\|mdmf` ([`TahoeOptions::mutable_format`]) |
//! | `list` | `GET /uri/$DIRCAP?t=json` |
//! | `set_children` | `POST /uri/$DIRCAP?t=set_children&replace=true\|false` — the only way to set edge metadata, and one mutable publish for any number of children |
//! | `unlink` | `POST /uri/$DIRCAP?t=unlink&name=…` (the form twin of `DELETE /uri/$DIRCAP/NAME`; the name travels in the query, so names like `..` cannot be rewritten by URL path normalisation) |
//!
//! # Semantics worth knowing
//!
//! * **Metadata.** Tahoe keeps a `tahoe` key (link times) on every edge.
//!   Listings strip it; writes refuse user metadata that uses it. Each
//!   `set_children` entry *replaces* the edge's user metadata.
//! * **Children Tahoe has but this program cannot represent** (mutable files,
//!   caps from newer Tahoe versions, …) are left out of listings with a
//!   `warn!` log line naming the child and why. They are never touched.
//!   A `Replace::No` write to such a name still fails with `Exists`.
//! * **Immutable directories are deep-immutable** in Tahoe: a mutable child
//!   is refused with [`GridError::WrongKind`] before any request.
//! * **Names** must be non-empty and contain no `/`. Tahoe NFC-normalises
//!   names, so a name in another normal form lists differently than written.
//! * **Source changes.** A file that changes size or mtime while it is
//!   uploaded, or yields more or fewer bytes than its size said, gives
//!   [`GridError::SourceChanged`]; the cap (if any) is dropped.
//!   The check is by size and mtime, so a same-size rewrite within the file
//!   system's mtime granularity is not caught.
//!
//! # Errors and retries
//!
//! The full status → [`GridError`] table, with reasons, is in the private
//! `tahoe/errors.rs` module docs. In short:
//! 404 → `NoChild`/`NotFound`, 409 → `Exists`, 400 → `Protocol` (`BadCap`
//! for an unparseable cap), 410 → `Unavailable` when the node knows servers it
//! is not connected to or has fewer than `shares.happy` connected (or when
//! that cannot be learned), else `NotFound`;
//! uncoordinated writes, unhappy uploads and transport failures →
//! `Unavailable`. Only `Unavailable` is [`GridError::is_transient`].
//!
//! Every operation is retried on transient errors, with exponential backoff
//! and jitter ([`RetryPolicy`]). Reads, convergent uploads, `mkdir-immutable`
//! and `Replace::Yes` writes are idempotent. The two that are not are made
//! safe: a `Replace::No` write whose retry meets 409 checks whether the
//! directory already holds exactly what was asked (then the first attempt
//! landed and it succeeds), and an `unlink` whose retry meets 404 after an
//! ambiguous first failure succeeds (the child is gone either way). A
//! mutable `mkdir` retried after an ambiguous failure may leave an empty,
//! unreferenced directory behind.
//!
//! # Connections
//!
//! One `reqwest::Client` per [`TahoeGrid`] (clones share it), HTTP/1.1,
//! proxies ignored (the node is local). Idle pooled connections are closed
//! after [`TahoeOptions::pool_idle_timeout`] (20 s), well below the 60 s after
//! which Twisted's web server drops an idle connection (`twisted/web/http.py`
//! `_REQUEST_TIMEOUT`), so a request rarely meets a connection the server is
//! closing (hyper#2136); when it does, the retry covers it.
//!
//! # Tests
//!
//! With the cargo feature `test-grid`, `mf_grid::tahoe::testgrid` starts a
//! real local grid (introducer, storage nodes, client nodes) for tests.

mod caps;
mod check;
mod errors;
mod health;
mod retry;
#[cfg(any(test, feature = "test-grid"))]
pub mod testgrid;
mod wire;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{RequestBuilder, Response, Url};
use tracing::debug;

pub use caps::{read_only, LITERAL_MAX};
pub use check::ObjectCheck;
pub use errors::INTERRUPTED_UPLOAD;
pub use health::{Encoding, Health, ServerStatus};
pub use retry::RetryPolicy;

use crate::cap::CapError;
use crate::{
    CapKind, Capability, DirChildren, Download, Grid, GridError, GridResult, Listed, Replace,
    Revision, Scheme, UploadSource,
};
use errors::{map_status, map_transport, short, Ctx};

/// Which mutable format new directories use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MutableFormat {
    /// SDMF, Tahoe's default: one segment, rewritten whole on each change;
    /// faster to create (≈ 0.3 s, mostly RSA key generation).
    #[default]
    Sdmf,
    /// MDMF: segmented, meant for large mutable files; slower to create
    /// (≈ 0.6 s) and gives `URI:DIR2-MDMF:` caps.
    Mdmf,
}

impl MutableFormat {
    fn as_query(self) -> &'static str {
        match self {
            MutableFormat::Sdmf => "SDMF",
            MutableFormat::Mdmf => "MDMF",
        }
    }
}

/// Tunables of a [`TahoeGrid`]. `TahoeOptions::default()` suits a local node.
#[derive(Clone, Debug)]
pub struct TahoeOptions {
    /// Format of directories made by `create_mutable_dir` (default SDMF).
    pub mutable_format: MutableFormat,
    /// Retries of transient failures within one operation.
    pub retry: RetryPolicy,
    /// Giving up on connecting to the node (default 5 s).
    pub connect_timeout: Duration,
    /// Whole-request limit for everything except file transfers: listings,
    /// directory writes, mkdir, health (default 300 s; a 5,000-entry
    /// directory update takes ≈ 5 s on a small machine).
    pub request_timeout: Duration,
    /// Longest silence on a connection, file transfers included (default
    /// 300 s). The node answers an upload only after it has placed all shares,
    /// so this bounds that time too.
    pub read_timeout: Duration,
    /// Idle pooled connections are closed after this long (default 20 s; keep
    /// it below the node's 60 s idle timeout).
    pub pool_idle_timeout: Duration,
    /// The node's encoding, for [`Health`] when the grid was built from a URL
    /// (from a node directory it is read from `tahoe.cfg`, and this overrides
    /// it if set).
    pub encoding: Option<Encoding>,
    /// Files of up to this many bytes are uploaded as a literal cap made
    /// here (default [`LITERAL_MAX`], the most allowed). 0 leaves
    /// every upload to the node, as magic-folder 24.3 does (the node makes
    /// a literal cap only up to 55 bytes): how the benchmark measures
    /// 24.3's format.
    pub literal_max: usize,
}

impl Default for TahoeOptions {
    fn default() -> TahoeOptions {
        TahoeOptions {
            mutable_format: MutableFormat::Sdmf,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(300),
            read_timeout: Duration::from_secs(300),
            pool_idle_timeout: Duration::from_secs(20),
            encoding: None,
            literal_max: LITERAL_MAX,
        }
    }
}

/// A [`Grid`] backed by a Tahoe-LAFS node's web API. Cheap to clone; clones
/// share one connection pool.
#[derive(Clone)]
pub struct TahoeGrid {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    options: TahoeOptions,
    node_dir: Option<PathBuf>,
    encoding: Option<Encoding>,
}

impl std::fmt::Debug for TahoeGrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TahoeGrid")
            .field("base", &self.inner.base.as_str())
            .field("node_dir", &self.inner.node_dir)
            .finish()
    }
}

/// Reads a request's outcome from a file while its body streams, so a file
/// that changed or failed mid-upload is reported as such, not as a network
/// error.
#[derive(Default)]
struct FileWatch {
    changed: AtomicBool,
    /// The stream saw end-of-file right after the expected length. (The HTTP
    /// client stops polling once `Content-Length` bytes are sent, so growth
    /// past the stated size may go unseen by the stream; see `grew_beyond`.)
    saw_eof: AtomicBool,
    io_error: Mutex<Option<std::io::Error>>,
}

const FILE_CHUNK: usize = 256 * 1024;

impl TahoeGrid {
    /// Connects to the node whose directory is `node_dir`: its URL comes from
    /// `node_dir/node.url` (written by a running node) and its encoding from
    /// `node_dir/tahoe.cfg`. No request is made.
    pub fn from_node_dir(node_dir: impl AsRef<Path>) -> GridResult<TahoeGrid> {
        TahoeGrid::from_node_dir_with(node_dir, TahoeOptions::default())
    }

    /// [`from_node_dir`](Self::from_node_dir) with explicit options.
    pub fn from_node_dir_with(
        node_dir: impl AsRef<Path>,
        options: TahoeOptions,
    ) -> GridResult<TahoeGrid> {
        let dir = node_dir.as_ref();
        let url_file = dir.join("node.url");
        let url = match std::fs::read_to_string(&url_file) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(GridError::Unavailable(format!(
                    "{} does not exist: is the Tahoe node in {} running?",
                    url_file.display(),
                    dir.display()
                )))
            }
            Err(e) => return Err(GridError::io(format!("reading {}", url_file.display()), e)),
        };
        let encoding = match options.encoding {
            Some(e) => Some(e),
            None => Some(Encoding::from_node_dir(dir)?),
        };
        TahoeGrid::build(&url, options, Some(dir.to_path_buf()), encoding)
    }

    /// Connects to a node by its web API URL, e.g. `http://127.0.0.1:3456/`.
    /// No request is made. [`Health::can_write`] then needs
    /// [`TahoeOptions::encoding`] to know the node's `shares.happy`.
    pub fn from_url(url: &str) -> GridResult<TahoeGrid> {
        TahoeGrid::from_url_with(url, TahoeOptions::default())
    }

    /// [`from_url`](Self::from_url) with explicit options.
    pub fn from_url_with(url: &str, options: TahoeOptions) -> GridResult<TahoeGrid> {
        let encoding = options.encoding;
        TahoeGrid::build(url, options, None, encoding)
    }

    fn build(
        url: &str,
        options: TahoeOptions,
        node_dir: Option<PathBuf>,
        encoding: Option<Encoding>,
    ) -> GridResult<TahoeGrid> {
        let base = Url::parse(url)
            .map_err(|e| GridError::Protocol(format!("bad node URL {url:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(GridError::Protocol(format!(
                "node URL {url:?} is not an http(s) URL"
            )));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .pool_idle_timeout(options.pool_idle_timeout)
            .pool_max_idle_per_host(16)
            .user_agent(concat!("magic-folder-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GridError::Protocol(format!("building the HTTP client: {e}")))?;
        Ok(TahoeGrid {
            inner: Arc::new(Inner {
                http,
                base,
                options,
                node_dir,
                encoding,
            }),
        })
    }

    /// The node's web API base URL.
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }

    /// The node directory this grid was built from, if any.
    pub fn node_dir(&self) -> Option<&Path> {
        self.inner.node_dir.as_deref()
    }

    /// The node's encoding, when known.
    pub fn encoding(&self) -> Option<Encoding> {
        self.inner.encoding
    }

    /// The options in force.
    pub fn options(&self) -> &TahoeOptions {
        &self.inner.options
    }

    /// Asks the node which storage servers it is connected to
    /// (`GET /?t=json`). One attempt, no retries: this is a probe.
    /// Gate writes on [`Health::can_write`]. A node that does not answer is
    /// [`GridError::Unavailable`].
    pub async fn health(&self) -> GridResult<Health> {
        let ctx = Ctx::new("health", None);
        let url = self.url(&[], &[("t", "json")]);
        let resp = self
            .request(self.inner.http.get(url))
            .timeout(
                self.inner
                    .options
                    .request_timeout
                    .min(Duration::from_secs(30)),
            )
            .send()
            .await
            .map_err(|e| map_transport(&e, ctx))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| map_transport(&e, ctx))?;
        if !status.is_success() {
            return Err(map_status(
                status,
                &String::from_utf8_lossy(&body),
                ctx,
                None,
            ));
        }
        Health::parse(&body, self.inner.encoding)
    }

    /// Polls [`health`](Self::health) until `ready` holds or `timeout`
    /// passes; returns the last health seen, or the last error on timeout.
    pub async fn wait_for_health(
        &self,
        timeout: Duration,
        ready: impl Fn(&Health) -> bool,
    ) -> GridResult<Health> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let result = self.health().await;
            if let Ok(h) = &result {
                if ready(h) {
                    return result;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return match result {
                    Ok(h) => Err(GridError::Unavailable(format!(
                        "node not ready after {timeout:?}: {} of {} servers connected, happy = {}",
                        h.connected_servers(),
                        h.known_servers(),
                        h.happy()
                    ))),
                    Err(e) => Err(e),
                };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // ---- request plumbing -------------------------------------------------

    /// `base/seg1/seg2?k=v…`, each segment percent-encoded.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("checked in build(): base can be a base");
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn request(&self, builder: RequestBuilder) -> RequestBuilder {
        // text/plain makes unmapped exceptions come back as a traceback rather
        // than an HTML page, so their cause can be read (tahoe.md §1.1).
        builder.header(ACCEPT, "text/plain")
    }

    /// Sends a request, retrying transient failures per the policy.
    /// `make` builds each attempt (it may refuse with an error, which ends the
    /// loop). `ambiguous` is set when an earlier attempt failed in a way that
    /// may have taken effect on the node (anything but a refused connection).
    async fn send(
        &self,
        ctx: Ctx<'_>,
        ambiguous: &mut bool,
        make: impl Fn() -> GridResult<RequestBuilder>,
    ) -> GridResult<Response> {
        let policy = self.inner.options.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let builder = self.request(make()?);
            let (err, maybe_applied) = match builder.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => (self.classify(resp, ctx).await, true),
                Err(e) => (map_transport(&e, ctx), !e.is_connect()),
            };
            if !err.is_transient() || attempt >= policy.max_attempts.max(1) {
                return Err(err);
            }
            *ambiguous |= maybe_applied;
            let delay = policy.delay(attempt);
            debug!(op = ctx.op, attempt, ?delay, error = %err, "retrying Tahoe request");
            tokio::time::sleep(delay).await;
        }
    }

    /// Turns an error answer into a [`GridError`], asking the node about its
    /// servers when the answer is "not enough shares".
    async fn classify(&self, resp: Response, ctx: Ctx<'_>) -> GridError {
        let status = resp.status();
        let body = match resp.bytes().await {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => return map_transport(&e, ctx),
        };
        let servers_away = if errors::needs_health(status, &body) {
            match self.health().await {
                Ok(h) => Some(h.degraded()),
                Err(_) => None,
            }
        } else {
            None
        };
        map_status(status, &body, ctx, servers_away)
    }

    /// Reads a small text answer (a cap) and checks its kind.
    async fn cap_answer(
        &self,
        resp: Response,
        ctx: Ctx<'_>,
        want: CapKind,
    ) -> GridResult<Capability> {
        let body = resp.bytes().await.map_err(|e| map_transport(&e, ctx))?;
        let text = String::from_utf8_lossy(&body);
        let cap = Capability::parse(text.trim()).map_err(|e| {
            GridError::Protocol(format!(
                "{}: the node answered {:?} instead of a capability",
                ctx.op, e.shown
            ))
        })?;
        if cap.kind() != want {
            return Err(GridError::Protocol(format!(
                "{}: expected a {want:?} capability, the node returned a {:?}",
                ctx.op,
                cap.kind()
            )));
        }
        Ok(cap)
    }

    fn metadata_request(&self, builder: RequestBuilder) -> RequestBuilder {
        builder.timeout(self.inner.options.request_timeout)
    }

    fn require(cap: &Capability, want: &[CapKind], expected: &'static str) -> GridResult<()> {
        if cap.scheme() != Some(Scheme::Tahoe) {
            return Err(GridError::BadCap(CapError::new(
                cap.as_str(),
                "not a Tahoe-LAFS capability",
            )));
        }
        caps::validate(cap)?;
        if !want.contains(&cap.kind()) {
            return Err(GridError::WrongKind {
                expected,
                got: cap.kind(),
            });
        }
        Ok(())
    }

    // ---- the operations ---------------------------------------------------

    async fn upload_bytes(&self, data: Bytes) -> GridResult<Capability> {
        let ctx = Ctx::new("upload", None);
        let url = self.url(&["uri"], &[]);
        let resp = self
            .send(ctx, &mut false, || {
                Ok(self.inner.http.put(url.clone()).body(data.clone()))
            })
            .await?;
        let cap = self.cap_answer(resp, ctx, CapKind::ImmutableFile).await?;
        check_uploaded_size(&cap, data.len() as u64)?;
        Ok(cap)
    }

    async fn upload_file(
        &self,
        path: PathBuf,
        progress: Option<crate::Progress>,
    ) -> GridResult<Capability> {
        let ctx = Ctx::new("upload", None);
        let before = file_stamp(&path).await?;
        if let Some(p) = &progress {
            p.set_total(before.0);
        }
        let watch = Arc::new(FileWatch::default());
        let url = self.url(&["uri"], &[]);
        let result = self
            .send(ctx, &mut false, || {
                if watch.changed.load(Ordering::SeqCst) {
                    return Err(GridError::SourceChanged(path.clone()));
                }
                if let Some(e) = take_io_error(&watch) {
                    return Err(GridError::io(format!("reading {}", path.display()), e));
                }
                let file = std::fs::File::open(&path)
                    .map_err(|e| GridError::io(format!("opening {}", path.display()), e))?;
                Ok(self
                    .inner
                    .http
                    .put(url.clone())
                    .header(CONTENT_LENGTH, before.0)
                    .body(file_body(file, before.0, watch.clone(), progress.clone())))
            })
            .await;
        // A body that failed locally shows up as a transport error; report
        // the local cause instead.
        if watch.changed.load(Ordering::SeqCst) {
            return Err(GridError::SourceChanged(path));
        }
        if let Some(e) = take_io_error(&watch) {
            return Err(GridError::io(format!("reading {}", path.display()), e));
        }
        let resp = result?;
        let cap = self.cap_answer(resp, ctx, CapKind::ImmutableFile).await?;
        if file_stamp(&path).await? != before
            || (!watch.saw_eof.load(Ordering::SeqCst) && grew_beyond(&path, before.0).await?)
        {
            return Err(GridError::SourceChanged(path));
        }
        check_uploaded_size(&cap, before.0)?;
        Ok(cap)
    }

    async fn download_impl(&self, cap: &Capability) -> GridResult<Download> {
        Self::require(cap, &[CapKind::ImmutableFile], "immutable file capability")?;
        if let Some(bytes) = caps::literal_bytes(cap) {
            let size = bytes.len() as u64;
            let chunk: GridResult<Bytes> = Ok(Bytes::from(bytes));
            return Ok(Download {
                size,
                stream: Box::pin(futures_util::stream::iter([chunk])),
            });
        }
        let size = caps::file_size(cap).expect("validated CHK cap has a size");
        let ctx = Ctx::new("download", Some(cap));
        let url = self.url(&["uri", cap.as_str()], &[]);
        let resp = self
            .send(ctx, &mut false, || Ok(self.inner.http.get(url.clone())))
            .await?;
        if let Some(len) = resp.content_length() {
            if len != size {
                return Err(GridError::Protocol(format!(
                    "download {}: the node sent {len} bytes for a {size}-byte file",
                    short(cap)
                )));
            }
        }
        Ok(Download {
            size,
            stream: checked_stream(resp, size, short(cap)),
        })
    }

    async fn create_immutable_dir_impl(&self, children: DirChildren) -> GridResult<Capability> {
        let ctx = Ctx::new("mkdir-immutable", None);
        let body = Bytes::from(wire::children_body(&children, true)?);
        let url = self.url(&["uri"], &[("t", "mkdir-immutable")]);
        let resp = self
            .send(ctx, &mut false, || {
                Ok(self.metadata_request(
                    self.inner
                        .http
                        .post(url.clone())
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.clone()),
                ))
            })
            .await?;
        self.cap_answer(resp, ctx, CapKind::ImmutableDir).await
    }

    async fn create_mutable_dir_impl(&self) -> GridResult<Capability> {
        let ctx = Ctx::new("mkdir", None);
        let url = self.url(
            &["uri"],
            &[
                ("t", "mkdir"),
                ("format", self.inner.options.mutable_format.as_query()),
            ],
        );
        let resp = self
            .send(ctx, &mut false, || {
                Ok(self.metadata_request(self.inner.http.post(url.clone())))
            })
            .await?;
        self.cap_answer(resp, ctx, CapKind::MutableDirWrite).await
    }

    async fn list_changed_impl(
        &self,
        dir: &Capability,
        known: Option<&Revision>,
    ) -> GridResult<Option<Listed>> {
        Self::require(
            dir,
            &[
                CapKind::MutableDirWrite,
                CapKind::MutableDirRead,
                CapKind::ImmutableDir,
            ],
            "directory capability",
        )?;
        let ctx = Ctx::new("list", Some(dir));
        let url = self.url(&["uri", dir.as_str()], &[("t", "json")]);
        let resp = self
            .send(ctx, &mut false, || {
                Ok(self.metadata_request(self.inner.http.get(url.clone())))
            })
            .await?;
        let body = resp.bytes().await.map_err(|e| map_transport(&e, ctx))?;
        // The node has no cheap "changed since" question, but hashing the
        // body is much cheaper than parsing it.
        let revision = Revision::digest(&[dir.as_str().as_bytes(), &body]);
        if known == Some(&revision) {
            return Ok(None);
        }
        let (children, skipped) = wire::parse_listing(&body)?;
        let problems = skipped
            .into_iter()
            .map(|s| {
                format!(
                    "entry {:?} skipped: {} (left untouched on the grid)",
                    s.name, s.reason
                )
            })
            .collect();
        Ok(Some(Listed {
            revision,
            children,
            problems,
        }))
    }

    async fn set_children_impl(
        &self,
        dir: &Capability,
        children: DirChildren,
        replace: Replace,
    ) -> GridResult<()> {
        Self::require(
            dir,
            &[CapKind::MutableDirWrite],
            "mutable directory write capability",
        )?;
        let body = Bytes::from(wire::children_body(&children, false)?);
        if children.is_empty() {
            return Ok(());
        }
        let ctx = Ctx::new("set_children", Some(dir));
        let replace_arg = match replace {
            Replace::Yes => "true",
            Replace::No => "false",
        };
        let url = self.url(
            &["uri", dir.as_str()],
            &[("t", "set_children"), ("replace", replace_arg)],
        );
        let mut ambiguous = false;
        let result = self
            .send(ctx, &mut ambiguous, || {
                Ok(self.metadata_request(
                    self.inner
                        .http
                        .post(url.clone())
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.clone()),
                ))
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(GridError::Exists(_)) => {
                // Which names clash? Tahoe does not say. And if an earlier
                // attempt may have landed, the clash may be with ourselves.
                let listed = self.list(dir).await.unwrap_or_default();
                if ambiguous && children.iter().all(|(n, e)| listed.get(n) == Some(e)) {
                    return Ok(());
                }
                let name = children
                    .keys()
                    .find(|n| listed.contains_key(*n))
                    .or_else(|| children.keys().next());
                Err(GridError::Exists(name.cloned().unwrap_or_default()))
            }
            Err(e) => Err(e),
        }
    }

    async fn unlink_impl(&self, dir: &Capability, name: &str) -> GridResult<()> {
        Self::require(
            dir,
            &[CapKind::MutableDirWrite],
            "mutable directory write capability",
        )?;
        if wire::check_name(name).is_err() {
            return Err(GridError::NoChild(name.to_owned()));
        }
        let ctx = Ctx::new("unlink", Some(dir)).child(name);
        let url = self.url(&["uri", dir.as_str()], &[("t", "unlink"), ("name", name)]);
        let mut ambiguous = false;
        match self
            .send(ctx, &mut ambiguous, || {
                Ok(self.metadata_request(self.inner.http.post(url.clone())))
            })
            .await
        {
            Ok(_) => Ok(()),
            // An earlier attempt may have removed it: gone is what was asked.
            Err(GridError::NoChild(_)) if ambiguous => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Grid for TahoeGrid {
    /// Up to [`TahoeOptions::literal_max`] bytes come back as a literal cap
    /// made here, with no request (see [`LITERAL_MAX`]).
    async fn upload(&self, source: UploadSource) -> GridResult<Capability> {
        let literal_max = self.inner.options.literal_max.min(LITERAL_MAX);
        if let Some(content) = source.small_content(literal_max).await? {
            return Ok(caps::literal(&content));
        }
        match source {
            UploadSource::Bytes(b) => self.upload_bytes(b).await,
            UploadSource::File(p) => self.upload_file(p, None).await,
            UploadSource::TrackedFile(p, progress) => self.upload_file(p, Some(progress)).await,
        }
    }

    async fn download(&self, cap: &Capability) -> GridResult<Download> {
        self.download_impl(cap).await
    }

    async fn create_immutable_dir(&self, children: DirChildren) -> GridResult<Capability> {
        self.create_immutable_dir_impl(children).await
    }

    async fn create_mutable_dir(&self) -> GridResult<Capability> {
        self.create_mutable_dir_impl().await
    }

    async fn list_changed(
        &self,
        dir: &Capability,
        known: Option<&Revision>,
    ) -> GridResult<Option<Listed>> {
        self.list_changed_impl(dir, known).await
    }

    async fn set_children(
        &self,
        dir: &Capability,
        children: DirChildren,
        replace: Replace,
    ) -> GridResult<()> {
        self.set_children_impl(dir, children, replace).await
    }

    async fn unlink(&self, dir: &Capability, name: &str) -> GridResult<()> {
        self.unlink_impl(dir, name).await
    }
}

// ---- helpers ---------------------------------------------------------------

fn check_uploaded_size(cap: &Capability, sent: u64) -> GridResult<()> {
    match caps::file_size(cap) {
        Some(size) if size == sent => Ok(()),
        other => Err(GridError::Protocol(format!(
            "upload: sent {sent} bytes but the node's cap {} records {other:?}",
            short(cap)
        ))),
    }
}

/// (size, mtime): what "the file did not change" is judged by.
async fn file_stamp(path: &Path) -> GridResult<(u64, Option<std::time::SystemTime>)> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| GridError::io(format!("reading metadata of {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(GridError::io(
            format!("uploading {}", path.display()),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    Ok((meta.len(), meta.modified().ok()))
}

/// True if the file has bytes past `len` (for files whose size the file
/// system misreports, such as those in /proc, or that grew at the very end).
async fn grew_beyond(path: &Path, len: u64) -> GridResult<bool> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let ctx = || format!("re-reading {}", path.display());
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| GridError::io(ctx(), e))?;
    f.seek(std::io::SeekFrom::Start(len))
        .await
        .map_err(|e| GridError::io(ctx(), e))?;
    let mut one = [0u8; 1];
    Ok(f.read(&mut one)
        .await
        .map_err(|e| GridError::io(ctx(), e))?
        > 0)
}

fn take_io_error(watch: &FileWatch) -> Option<std::io::Error> {
    watch
        .io_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
}

/// Streams exactly `expected` bytes of `file`; ends with an error (and flags
/// `watch`) if the file turns out shorter or longer, or cannot be read.
fn file_body(
    file: std::fs::File,
    expected: u64,
    watch: Arc<FileWatch>,
    progress: Option<crate::Progress>,
) -> reqwest::Body {
    use tokio::io::AsyncReadExt;
    struct St {
        file: tokio::fs::File,
        sent: u64,
        done: bool,
    }
    let st = St {
        file: tokio::fs::File::from_std(file),
        sent: 0,
        done: false,
    };
    let stream = futures_util::stream::unfold(st, move |mut st| {
        let watch = watch.clone();
        let progress = progress.clone();
        async move {
            if st.done {
                return None;
            }
            let mut buf = vec![0u8; FILE_CHUNK];
            let fail = |st: St, msg: &str| {
                watch.changed.store(true, Ordering::SeqCst);
                let err = std::io::Error::other(msg.to_owned());
                Some((Err(err), St { done: true, ..st }))
            };
            match st.file.read(&mut buf).await {
                Ok(0) if st.sent == expected => {
                    watch.saw_eof.store(true, Ordering::SeqCst);
                    None
                }
                Ok(0) => fail(st, "file shrank during upload"),
                Ok(n) if st.sent + n as u64 > expected => fail(st, "file grew during upload"),
                Ok(n) => {
                    buf.truncate(n);
                    st.sent += n as u64;
                    if let Some(p) = &progress {
                        p.add(n as u64);
                    }
                    Some((Ok(Bytes::from(buf)), st))
                }
                Err(e) => {
                    let shown = std::io::Error::new(e.kind(), e.to_string());
                    *watch.io_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    Some((Err(shown), St { done: true, ..st }))
                }
            }
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// The response body as a [`crate::ByteStream`] that ends with an error if
/// it carries fewer or more bytes than the cap says.
fn checked_stream(resp: Response, size: u64, name: String) -> crate::ByteStream {
    struct St<S> {
        inner: S,
        got: u64,
        done: bool,
    }
    let st = St {
        inner: resp.bytes_stream(),
        got: 0,
        done: false,
    };
    let stream = futures_util::stream::unfold(st, move |mut st| {
        let name = name.clone();
        async move {
            if st.done {
                return None;
            }
            match st.inner.next().await {
                Some(Ok(chunk)) => {
                    st.got += chunk.len() as u64;
                    if st.got > size {
                        st.done = true;
                        let e = GridError::Integrity {
                            cap: name,
                            detail: format!("more than the {size} bytes recorded in the cap"),
                        };
                        return Some((Err(e), st));
                    }
                    Some((Ok(chunk), st))
                }
                Some(Err(e)) => {
                    st.done = true;
                    let ctx = Ctx {
                        op: "download",
                        cap: None,
                        child: None,
                    };
                    let err = match map_transport(&e, ctx) {
                        GridError::Unavailable(d) => GridError::Unavailable(format!(
                            "download {name} interrupted after {} of {size} bytes: {d}",
                            st.got
                        )),
                        other => other,
                    };
                    Some((Err(err), st))
                }
                None if st.got < size => {
                    st.done = true;
                    let e = GridError::Unavailable(format!(
                        "download {name} ended after {} of {size} bytes (the node gave up, usually because shares went away)",
                        st.got
                    ));
                    Some((Err(e), st))
                }
                None => None,
            }
        }
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_segment_by_segment() {
        let g = TahoeGrid::from_url("http://127.0.0.1:3456/").unwrap();
        let cap = "URI:DIR2:c5y4fjuebcphldognm72q4vlbi:tsebdb7n4g5cvhemd3ryncbeojwnf4jytvox7pyuxfpk7iq45emq";
        assert_eq!(
            g.url(&["uri", cap], &[("t", "unlink"), ("name", "../a b&c")])
                .as_str(),
            format!("http://127.0.0.1:3456/uri/{cap}?t=unlink&name=..%2Fa+b%26c")
        );
        let g = TahoeGrid::from_url("http://host:1/prefix").unwrap();
        assert_eq!(g.url(&["uri"], &[]).as_str(), "http://host:1/prefix/uri");
        assert!(TahoeGrid::from_url("ftp://x/").is_err());
        assert!(TahoeGrid::from_url("not a url").is_err());
    }

    #[test]
    fn node_dir_needs_node_url() {
        let dir = tempfile::tempdir().unwrap();
        let err = TahoeGrid::from_node_dir(dir.path()).unwrap_err();
        assert!(err.is_transient(), "{err}");
        std::fs::write(dir.path().join("node.url"), "http://127.0.0.1:9/\n").unwrap();
        std::fs::write(
            dir.path().join("tahoe.cfg"),
            "[client]\nshares.needed = 2\nshares.happy = 3\n",
        )
        .unwrap();
        let g = TahoeGrid::from_node_dir(dir.path()).unwrap();
        assert_eq!(g.base_url(), "http://127.0.0.1:9/");
        assert_eq!(
            g.encoding(),
            Some(Encoding {
                needed: 2,
                happy: 3,
                total: 10
            })
        );
    }

    #[tokio::test]
    async fn a_node_that_is_not_there_is_unavailable() {
        // Port 9 (discard) is closed on any sane test machine.
        let options = TahoeOptions {
            retry: RetryPolicy {
                max_attempts: 2,
                initial_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
            },
            ..Default::default()
        };
        let g = TahoeGrid::from_url_with("http://127.0.0.1:9/", options).unwrap();
        let err = g.create_mutable_dir().await.unwrap_err();
        assert!(matches!(err, GridError::Unavailable(_)), "{err:?}");
        let err = g.health().await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
    }

    #[tokio::test]
    async fn local_checks_need_no_node() {
        let g = TahoeGrid::from_url("http://127.0.0.1:9/").unwrap();
        let ro = Capability::parse("URI:DIR2-RO:4ysmwexutwr5kzpnzsauecqdxa:tsebdb7n4g5cvhemd3ryncbeojwnf4jytvox7pyuxfpk7iq45emq").unwrap();
        let err = g.unlink(&ro, "x").await.unwrap_err();
        assert!(
            matches!(
                err,
                GridError::WrongKind {
                    got: CapKind::MutableDirRead,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = g
            .download(&ro)
            .await
            .err()
            .expect("a dir cap is not a file");
        assert!(matches!(err, GridError::WrongKind { .. }), "{err:?}");
        let mf = Capability::parse("URI:MF-CHK:abc:12").unwrap();
        assert!(matches!(
            g.download(&mf).await.err(),
            Some(GridError::BadCap(_))
        ));
        // LIT caps are decoded locally.
        let lit = Capability::parse("URI:LIT:nbswy3dp").unwrap();
        let d = g.download(&lit).await.unwrap();
        assert_eq!(d.size, 5);
        assert_eq!(crate::read_small(d, 100).await.unwrap(), b"hello");
    }
}
