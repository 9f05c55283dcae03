//! The Grid contract: one suite of behavioural checks that every backend must
//! pass, so the rest of the program can rely on the [`Grid`] trait alone.
//!
//! Each check is a `pub async fn` generic over `G: Grid`, returning
//! [`CheckResult`]; [`run_all`] runs them all and collects every violation,
//! and [`assert_all`] panics with a readable report (for `#[tokio::test]`s):
//!
//! ```no_run
//! # async fn demo(grid: mf_grid::embedded::EmbeddedGrid) {
//! mf_grid::contract::assert_all(&grid).await;
//! # }
//! ```
//!
//! The suite is written for slow backends too (a Tahoe-LAFS node takes
//! 0.1–0.5 s per operation): it performs about seventy operations and moves
//! about 5 MiB. It checks only what every backend promises. It does not
//! check backend-specific behaviour (e.g. that another convergence secret
//! gives other capabilities, or tamper detection, which needs access to the
//! store); those belong in each backend's own tests.
//!
//! Comparisons ignore a top-level `"tahoe"` key in listed metadata, because
//! Tahoe-LAFS adds its own link timestamps there.

use std::fmt;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::{
    read_only, CapKind, Capability, DirChildren, DirEntry, Grid, GridError, Listed, Replace,
    Revision, Scheme, UploadSource,
};

/// One way in which a backend broke the contract.
#[derive(Debug)]
pub struct Violation {
    /// The check that failed (the function's name).
    pub check: &'static str,
    /// What went wrong.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.detail)
    }
}

impl std::error::Error for Violation {}

/// The outcome of one check.
pub type CheckResult = Result<(), Violation>;

/// Names a check so failures say where they come from.
#[derive(Clone, Copy)]
struct Check(&'static str);

impl Check {
    fn fail(self, detail: impl Into<String>) -> Violation {
        Violation {
            check: self.0,
            detail: detail.into(),
        }
    }

    /// Turns an unexpected grid error into a violation naming the operation.
    fn op<T>(self, what: &str, r: Result<T, GridError>) -> Result<T, Violation> {
        r.map_err(|e| self.fail(format!("{what} failed: {e}")))
    }

    fn ensure(self, cond: bool, detail: impl FnOnce() -> String) -> CheckResult {
        if cond {
            Ok(())
        } else {
            Err(self.fail(detail()))
        }
    }
}

/// Runs every check, in order, and returns all violations found.
pub async fn run_all<G: Grid>(grid: &G) -> Result<(), Vec<Violation>> {
    let results = [
        upload_download_round_trip(grid).await,
        convergence(grid).await,
        immutable_dir_round_trip(grid).await,
        mutable_dir_lifecycle(grid).await,
        read_only_view(grid).await,
        revisions_follow_changes(grid).await,
        concurrent_writers_lose_nothing(grid).await,
        wrong_kind_and_malformed_caps(grid).await,
    ];
    let violations: Vec<Violation> = results.into_iter().filter_map(Result::err).collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// Runs every check and panics with a report listing each violation.
pub async fn assert_all<G: Grid>(grid: &G) {
    if let Err(violations) = run_all(grid).await {
        let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
        panic!("grid contract violated:\n  {}", report.join("\n  "));
    }
}

/// Deterministic pseudo-random bytes (xorshift), so content does not
/// compress and every size gets distinct content.
pub fn test_content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn download_all<G: Grid>(c: Check, grid: &G, cap: &Capability) -> Result<Vec<u8>, Violation> {
    let dl = c.op("download", grid.download(cap).await)?;
    let mut out = Vec::new();
    let mut stream = dl.stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&c.op("reading the download stream", chunk)?);
    }
    c.ensure(out.len() as u64 == dl.size, || {
        format!(
            "download announced {} bytes but streamed {}",
            dl.size,
            out.len()
        )
    })?;
    Ok(out)
}

async fn upload_bytes<G: Grid>(c: Check, grid: &G, data: &[u8]) -> Result<Capability, Violation> {
    let cap = c.op(
        "upload",
        grid.upload(UploadSource::Bytes(data.to_vec().into())).await,
    )?;
    c.ensure(cap.kind() == CapKind::ImmutableFile, || {
        format!("upload returned a {:?} capability", cap.kind())
    })?;
    Ok(cap)
}

/// Metadata as the caller wrote it: listed metadata minus Tahoe's own key.
fn user_metadata(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| *k != "tahoe")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn same_children(c: Check, what: &str, expected: &DirChildren, got: &DirChildren) -> CheckResult {
    let names = |d: &DirChildren| d.keys().cloned().collect::<Vec<_>>();
    c.ensure(names(expected) == names(got), || {
        format!(
            "{what}: names {:?}, expected {:?}",
            names(got),
            names(expected)
        )
    })?;
    for (name, want) in expected {
        let have = &got[name];
        c.ensure(have.cap == want.cap, || {
            format!(
                "{what}: child {name:?} has cap {:?}, expected {:?}",
                have.cap, want.cap
            )
        })?;
        c.ensure(user_metadata(&have.metadata) == want.metadata, || {
            format!(
                "{what}: child {name:?} has metadata {}, expected {}",
                have.metadata, want.metadata
            )
        })?;
    }
    Ok(())
}

fn entry(cap: &Capability, metadata: Value) -> DirEntry {
    DirEntry {
        cap: cap.clone(),
        metadata,
    }
}

/// A temporary file holding `data`, removed on drop.
struct TempSource(std::path::PathBuf);

impl TempSource {
    fn new(data: &[u8]) -> std::io::Result<TempSource> {
        let mut r = [0u8; 8];
        getrandom::getrandom(&mut r).map_err(|e| std::io::Error::other(e.to_string()))?;
        let path = std::env::temp_dir().join(format!("mf-grid-contract-{}", u64::from_le_bytes(r)));
        std::fs::write(&path, data)?;
        Ok(TempSource(path))
    }
}

impl Drop for TempSource {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Uploads of several sizes (empty, tiny, around Tahoe's and our literal
/// limits, and spanning several chunks/segments) download byte for byte,
/// with the announced size, from a file source as from the same bytes in
/// memory (which give the same capability).
pub async fn upload_download_round_trip<G: Grid>(grid: &G) -> CheckResult {
    let c = Check("upload_download_round_trip");
    for (i, len) in [
        0usize,
        1,
        57,
        2049,
        8192,
        8193,
        262_145,
        2 * 1024 * 1024 + 17,
    ]
    .into_iter()
    .enumerate()
    {
        let data = test_content(len, 100 + i as u64);
        let cap = upload_bytes(c, grid, &data).await?;
        let back = download_all(c, grid, &cap).await?;
        c.ensure(back == data, || {
            format!("{len}-byte upload downloaded different bytes")
        })?;
        let file =
            TempSource::new(&data).map_err(|e| c.fail(format!("writing a temporary file: {e}")))?;
        let from_file = c.op(
            "upload from a file",
            grid.upload(UploadSource::File(file.0.clone())).await,
        )?;
        c.ensure(from_file == cap, || {
            format!("{len} bytes from a file and from memory gave different caps")
        })?;
    }
    Ok(())
}

/// The same bytes give the same capability; other bytes give another (a
/// stored object: too big to be a literal one on any grid).
pub async fn convergence<G: Grid>(grid: &G) -> CheckResult {
    let c = Check("convergence");
    let data = test_content(2 * crate::tahoe::LITERAL_MAX, 11);
    let a = upload_bytes(c, grid, &data).await?;
    let b = upload_bytes(c, grid, &data).await?;
    c.ensure(a == b, || {
        "uploading the same bytes twice gave two capabilities".into()
    })?;
    let mut other = data.clone();
    other[crate::tahoe::LITERAL_MAX] ^= 1;
    let d = upload_bytes(c, grid, &other).await?;
    c.ensure(a != d, || "different bytes gave the same capability".into())
}

/// Immutable directories list exactly their children (names including
/// non-ASCII, capabilities, nested metadata), nest, may be empty, refuse
/// mutable children, and cannot be changed.
pub async fn immutable_dir_round_trip<G: Grid>(grid: &G) -> CheckResult {
    let c = Check("immutable_dir_round_trip");
    let f1 = upload_bytes(c, grid, &test_content(1000, 21)).await?;
    let f2 = upload_bytes(c, grid, &test_content(2000, 22)).await?;
    let mut children = DirChildren::new();
    children.insert(
        "a.txt".into(),
        entry(
            &f1,
            json!({"mtime": 1_700_000_000.25, "size": 1000, "nested": {"list": [1, "two", null]}}),
        ),
    );
    children.insert("ünï cødé 🙂 name".into(), entry(&f2, json!({})));
    // The entry that names nothing (24.3's deletion content) keeps its metadata.
    children.insert(
        "content".into(),
        entry(&Capability::empty(), json!({"mtime": 1_700_000_000})),
    );
    let dir = c.op(
        "create_immutable_dir",
        grid.create_immutable_dir(children.clone()).await,
    )?;
    c.ensure(dir.kind() == CapKind::ImmutableDir, || {
        format!("got a {:?} capability", dir.kind())
    })?;
    let listed = c.op("list", grid.list(&dir).await)?;
    same_children(c, "immutable dir", &children, &listed)?;

    let mut outer = DirChildren::new();
    outer.insert("inner".into(), entry(&dir, json!({"parent": true})));
    let outer_cap = c.op(
        "create nested immutable dir",
        grid.create_immutable_dir(outer.clone()).await,
    )?;
    same_children(
        c,
        "nested immutable dir",
        &outer,
        &c.op("list", grid.list(&outer_cap).await)?,
    )?;

    let empty = c.op(
        "create empty immutable dir",
        grid.create_immutable_dir(DirChildren::new()).await,
    )?;
    let listed = c.op("list empty", grid.list(&empty).await)?;
    c.ensure(listed.is_empty(), || {
        format!("empty immutable dir lists {} children", listed.len())
    })?;

    let mutable = c.op("create_mutable_dir", grid.create_mutable_dir().await)?;
    let mut nothing = DirChildren::new();
    nothing.insert("content".into(), DirEntry::new(Capability::empty()));
    let r = grid.set_children(&mutable, nothing, Replace::Yes).await;
    c.ensure(matches!(r, Err(GridError::WrongKind { .. })), || {
        format!("a mutable dir took the empty entry: {r:?}, expected WrongKind")
    })?;
    let mut bad = DirChildren::new();
    bad.insert("rw".into(), DirEntry::new(mutable));
    c.ensure(grid.create_immutable_dir(bad).await.is_err(), || {
        "an immutable dir accepted a mutable directory's write cap as a child".into()
    })?;

    let r = grid
        .set_children(&dir, DirChildren::new(), Replace::Yes)
        .await;
    c.ensure(matches!(r, Err(GridError::WrongKind { .. })), || {
        format!("set_children on an immutable dir gave {r:?}, expected WrongKind")
    })?;
    let r = grid.unlink(&dir, "a.txt").await;
    c.ensure(matches!(r, Err(GridError::WrongKind { .. })), || {
        format!("unlink on an immutable dir gave {r:?}, expected WrongKind")
    })
}

/// A mutable directory starts empty; `set_children` adds and replaces in
/// batches; `Replace::No` refuses the whole batch if any name exists and
/// changes nothing; `unlink` removes, and reports `NoChild` for a missing
/// name.
pub async fn mutable_dir_lifecycle<G: Grid>(grid: &G) -> CheckResult {
    let c = Check("mutable_dir_lifecycle");
    let f1 = upload_bytes(c, grid, &test_content(3000, 31)).await?;
    let f2 = upload_bytes(c, grid, &test_content(3000, 32)).await?;
    let dir = c.op("create_mutable_dir", grid.create_mutable_dir().await)?;
    c.ensure(dir.kind() == CapKind::MutableDirWrite, || {
        format!("got a {:?} capability", dir.kind())
    })?;
    let listed = c.op("list new dir", grid.list(&dir).await)?;
    c.ensure(listed.is_empty(), || {
        format!("a new dir lists {} children", listed.len())
    })?;

    let mut expected = DirChildren::new();
    expected.insert("a".into(), entry(&f1, json!({"n": 1})));
    expected.insert(
        "b".into(),
        entry(&f2, json!({"n": 2, "deep": {"x": [true]}})),
    );
    expected.insert("c d".into(), entry(&f1, json!({})));
    c.op(
        "set_children batch",
        grid.set_children(&dir, expected.clone(), Replace::Yes)
            .await,
    )?;
    same_children(
        c,
        "after a batch",
        &expected,
        &c.op("list", grid.list(&dir).await)?,
    )?;

    let mut clash = DirChildren::new();
    clash.insert("c d".into(), entry(&f2, json!({"changed": true})));
    clash.insert("new".into(), entry(&f2, json!({})));
    let r = grid.set_children(&dir, clash.clone(), Replace::No).await;
    c.ensure(matches!(r, Err(GridError::Exists(_))), || {
        format!("Replace::No over an existing name gave {r:?}, expected Exists")
    })?;
    same_children(
        c,
        "after a refused batch",
        &expected,
        &c.op("list", grid.list(&dir).await)?,
    )?;

    c.op(
        "set_children replacing",
        grid.set_children(&dir, clash.clone(), Replace::Yes).await,
    )?;
    expected.extend(clash);
    same_children(
        c,
        "after replacing",
        &expected,
        &c.op("list", grid.list(&dir).await)?,
    )?;

    c.op("unlink", grid.unlink(&dir, "b").await)?;
    expected.remove("b");
    same_children(
        c,
        "after unlink",
        &expected,
        &c.op("list", grid.list(&dir).await)?,
    )?;
    let r = grid.unlink(&dir, "b").await;
    c.ensure(matches!(r, Err(GridError::NoChild(_))), || {
        format!("unlinking a missing child gave {r:?}, expected NoChild")
    })
}

/// `list_changed` lists what `list` lists, and never reports a changed
/// directory as unchanged — neither through the write capability nor
/// through the read-only one (as when polling another participant).
pub async fn revisions_follow_changes<G: Grid>(grid: &G) -> CheckResult {
    let c = Check("revisions_follow_changes");
    let f1 = upload_bytes(c, grid, &test_content(100, 41)).await?;
    let dir = c.op("create_mutable_dir", grid.create_mutable_dir().await)?;
    let ro = c.op("read_only", read_only(&dir))?;
    let mut expected = DirChildren::new();
    // The last revision seen through [write cap, read-only cap].
    let mut known: [Option<Revision>; 2] = [None, None];
    for step in 0..3 {
        if step == 1 {
            let mut add = DirChildren::new();
            add.insert("a".into(), entry(&f1, json!({"n": 1})));
            c.op(
                "set_children",
                grid.set_children(&dir, add.clone(), Replace::Yes).await,
            )?;
            expected.extend(add);
        } else if step == 2 {
            c.op("unlink", grid.unlink(&dir, "a").await)?;
            expected.remove("a");
        }
        for (cap, known) in [&dir, &ro].into_iter().zip(known.iter_mut()) {
            // Every step after the first changed the directory.
            if let Some(old) = known.as_ref() {
                let r = c.op("list_changed", grid.list_changed(cap, Some(old)).await)?;
                let Some(Listed { children, .. }) = r else {
                    return Err(c.fail(format!(
                        "step {step}: a changed directory was reported unchanged"
                    )));
                };
                same_children(c, "list_changed after a change", &expected, &children)?;
            }
            let first = c.op("list_changed", grid.list_changed(cap, None).await)?;
            let Some(Listed {
                revision: rev,
                children,
                ..
            }) = first
            else {
                return Err(c.fail("list_changed without a known revision gave nothing"));
            };
            same_children(c, "list_changed", &expected, &children)?;
            *known = Some(rev);
        }
    }
    let idir = c.op(
        "create_immutable_dir",
        grid.create_immutable_dir(expected.clone()).await,
    )?;
    let first = c.op("list_changed", grid.list_changed(&idir, None).await)?;
    c.ensure(first.is_some_and(|l| l.children.is_empty()), || {
        "an immutable directory's first list_changed".into()
    })
}

/// The read-only capability is derived without I/O, is stable, lists the
/// same children (a child's write cap shows as its read cap), and cannot
/// be used to write.
pub async fn read_only_view<G: Grid>(grid: &G) -> CheckResult {
    let c = Check("read_only_view");
    let f = upload_bytes(c, grid, &test_content(5000, 41)).await?;
    let parent = c.op("create_mutable_dir", grid.create_mutable_dir().await)?;
    let sub = c.op("create_mutable_dir", grid.create_mutable_dir().await)?;
    let mut children = DirChildren::new();
    children.insert("f".into(), entry(&f, json!({"k": "v"})));
    children.insert("sub".into(), entry(&sub, json!({})));
    c.op(
        "set_children",
        grid.set_children(&parent, children.clone(), Replace::Yes)
            .await,
    )?;

    let ro = c.op("read_only", read_only(&parent))?;
    c.ensure(ro.kind() == CapKind::MutableDirRead, || {
        format!("read_only gave a {:?} cap", ro.kind())
    })?;
    c.ensure(ro != parent, || "read_only returned the write cap".into())?;
    c.ensure(c.op("read_only again", read_only(&parent))? == ro, || {
        "read_only is not deterministic".into()
    })?;
    c.ensure(
        c.op("read_only of a read cap", read_only(&ro))? == ro,
        || "read_only of a read cap changed it".into(),
    )?;
    let sub_ro = c.op("read_only of the child", read_only(&sub))?;

    same_children(
        c,
        "listing via the write cap",
        &children,
        &c.op("list", grid.list(&parent).await)?,
    )?;
    let mut seen_ro = children.clone();
    seen_ro.insert("sub".into(), entry(&sub_ro, json!({})));
    same_children(
        c,
        "listing via the read cap",
        &seen_ro,
        &c.op("list via ro", grid.list(&ro).await)?,
    )?;

    let mut more = DirChildren::new();
    more.insert("g".into(), entry(&f, json!({})));
    c.ensure(
        grid.set_children(&ro, more, Replace::Yes).await.is_err(),
        || "set_children through a read cap succeeded".into(),
    )?;
    c.ensure(grid.unlink(&ro, "f").await.is_err(), || {
        "unlink through a read cap succeeded".into()
    })?;
    same_children(
        c,
        "after refused writes",
        &children,
        &c.op("list", grid.list(&parent).await)?,
    )
}

/// Many tasks writing one directory at once lose no update: eight
/// concurrent `set_children`, then a mix of concurrent adds and removes.
pub async fn concurrent_writers_lose_nothing<G: Grid>(grid: &G) -> CheckResult {
    let c = Check("concurrent_writers_lose_nothing");
    let f = upload_bytes(c, grid, &test_content(6000, 51)).await?;
    let dir = c.op("create_mutable_dir", grid.create_mutable_dir().await)?;
    let writes = (0..8).map(|i| {
        let mut one = DirChildren::new();
        one.insert(format!("w{i}"), entry(&f, json!({ "writer": i })));
        grid.set_children(&dir, one, Replace::No)
    });
    for (i, r) in futures_util::future::join_all(writes)
        .await
        .into_iter()
        .enumerate()
    {
        c.op(&format!("concurrent set_children #{i}"), r)?;
    }
    let mut expected: DirChildren = (0..8)
        .map(|i| (format!("w{i}"), entry(&f, json!({ "writer": i }))))
        .collect();
    same_children(
        c,
        "after concurrent adds",
        &expected,
        &c.op("list", grid.list(&dir).await)?,
    )?;

    let adds = (8..10).map(|i| {
        let mut one = DirChildren::new();
        one.insert(format!("w{i}"), entry(&f, json!({ "writer": i })));
        grid.set_children(&dir, one, Replace::No)
    });
    let removes = ["w0", "w5"].map(|name| grid.unlink(&dir, name));
    let (added, removed) = futures_util::future::join(
        futures_util::future::join_all(adds),
        futures_util::future::join_all(removes),
    )
    .await;
    for r in added.into_iter().chain(removed) {
        c.op("concurrent add or remove", r)?;
    }
    expected.remove("w0");
    expected.remove("w5");
    for i in 8..10 {
        expected.insert(format!("w{i}"), entry(&f, json!({ "writer": i })));
    }
    same_children(
        c,
        "after concurrent adds and removes",
        &expected,
        &c.op("list", grid.list(&dir).await)?,
    )
}

/// Operations given the wrong kind of capability fail with `WrongKind`;
/// malformed capabilities and other grids' capabilities fail cleanly.
pub async fn wrong_kind_and_malformed_caps<G: Grid>(grid: &G) -> CheckResult {
    let c = Check("wrong_kind_and_malformed_caps");
    let file = upload_bytes(c, grid, &test_content(100, 61)).await?;
    let dir = c.op("create_mutable_dir", grid.create_mutable_dir().await)?;
    let wrong = |what: &str, r: Result<(), GridError>| {
        c.ensure(matches!(r, Err(GridError::WrongKind { .. })), || {
            format!("{what} gave {r:?}, expected WrongKind")
        })
    };
    wrong("list of a file cap", grid.list(&file).await.map(drop))?;
    wrong("download of a dir cap", grid.download(&dir).await.map(drop))?;
    wrong(
        "set_children on a file cap",
        grid.set_children(&file, DirChildren::new(), Replace::Yes)
            .await,
    )?;
    wrong("unlink on a file cap", grid.unlink(&file, "x").await)?;

    // The same kind prefix with a body no backend would produce.
    let text = file.as_str();
    let prefix_len = text[4..].find(':').map(|i| i + 5).unwrap_or(text.len());
    let mangled = Capability::parse(&format!("{}not-a-real-capability", &text[..prefix_len]))
        .map_err(|e| c.fail(format!("building a malformed cap: {e}")))?;
    let r = grid.download(&mangled).await.map(drop);
    c.ensure(
        matches!(
            r,
            Err(GridError::BadCap(_) | GridError::NotFound(_) | GridError::Protocol(_))
        ),
        || format!("download of a malformed cap gave {r:?}, expected BadCap, NotFound or Protocol"),
    )?;

    let foreign = match file.scheme() {
        Some(Scheme::Embedded) => "URI:CHK:aaaaaaaaaaaaaaaaaaaaaaaaaa:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1:1:100",
        _ => "URI:MF-CHK:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:100",
    };
    let foreign =
        Capability::parse(foreign).map_err(|e| c.fail(format!("building a foreign cap: {e}")))?;
    let r = grid.download(&foreign).await.map(drop);
    c.ensure(r.is_err(), || {
        "download of another grid's capability succeeded".into()
    })
}
