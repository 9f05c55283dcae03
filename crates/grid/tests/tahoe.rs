//! The Tahoe-LAFS backend against a real local grid (tahoe-lafs 1.20.0:
//! one introducer, three storage nodes, k = 2, happy = 3, N = 3).
//!
//! The grid comes from `mf_grid::tahoe::testgrid`; it installs Tahoe into
//! `<repo>/.venv/tahoe` on first use (scripts/tahoe-venv.sh) and fails
//! loudly if it cannot. Most tests share one grid per process; the fault test
//! starts its own so that stopping servers disturbs no one.
//!
//! Run: `cargo test -p mf-grid --test tahoe`

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mf_grid::tahoe::testgrid::{GridSpec, TestGrid};
use mf_grid::tahoe::{self, MutableFormat, TahoeGrid, TahoeOptions};
use mf_grid::{
    read_only, read_small, CapKind, Capability, DirChildren, DirEntry, Grid, GridError, Replace,
    UploadSource,
};
use serde_json::json;

fn grid() -> TahoeGrid {
    TestGrid::shared()
        .client(0)
        .grid()
        .expect("client node is running")
}

/// Raw web-API access, to check the backend against what the node says.
async fn raw(
    method: reqwest::Method,
    g: &TahoeGrid,
    path_and_query: &str,
    body: &str,
) -> (u16, String) {
    let url = format!("{}{}", g.base_url(), path_and_query);
    let resp = reqwest::Client::new()
        .request(method, url)
        .header("Accept", "text/plain")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

fn children(entries: &[(&str, &Capability, serde_json::Value)]) -> DirChildren {
    entries
        .iter()
        .map(|(n, c, m)| {
            (
                n.to_string(),
                DirEntry {
                    cap: (*c).clone(),
                    metadata: m.clone(),
                },
            )
        })
        .collect()
}

async fn download_all(g: &TahoeGrid, cap: &Capability) -> Result<(u64, Vec<u8>, usize), GridError> {
    let d = g.download(cap).await?;
    let size = d.size;
    let mut stream = d.stream;
    let mut out = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
        chunks += 1;
    }
    Ok((size, out, chunks))
}

#[tokio::test]
async fn contract_suite() {
    mf_grid::contract::assert_all(&grid()).await;
}

#[tokio::test]
async fn health_reports_the_grid() {
    let g = grid();
    let h = g.health().await.unwrap();
    assert_eq!(h.connected_servers(), 3, "{h:?}");
    assert_eq!(h.known_servers(), 3);
    assert_eq!(h.happy(), 3);
    assert!(h.can_write() && h.can_read());
    assert_eq!((h.introducers_connected, h.introducers_total), (1, 1));
    // A grid built from the URL alone does not know the encoding.
    let by_url = TahoeGrid::from_url(g.base_url()).unwrap();
    assert_eq!(by_url.health().await.unwrap().encoding, None);
}

#[tokio::test]
async fn real_caps_classify_and_validate() {
    let g = grid();
    let lit = g.upload(UploadSource::Bytes("small".into())).await.unwrap();
    assert!(lit.as_str().starts_with("URI:LIT:"), "{lit}");
    // Up to 8 KiB in a literal cap made here (Tahoe's own stop at 55 bytes).
    let ours = g
        .upload(UploadSource::Bytes(
            vec![7u8; mf_grid::tahoe::LITERAL_MAX].into(),
        ))
        .await
        .unwrap();
    assert!(ours.as_str().starts_with("URI:LIT:"), "{ours}");
    let chk = g
        .upload(UploadSource::Bytes(vec![7u8; 8193].into()))
        .await
        .unwrap();
    assert!(
        chk.as_str().starts_with("URI:CHK:") && chk.as_str().ends_with(":2:3:8193"),
        "{chk}"
    );
    // 24.3's way (`literal_max` 0): the node makes every cap, literal only
    // up to its own 55 bytes.
    let by_node = TestGrid::shared()
        .client(0)
        .grid_with(TahoeOptions {
            literal_max: 0,
            ..Default::default()
        })
        .unwrap();
    for (len, prefix) in [(55, "URI:LIT:"), (56, "URI:CHK:")] {
        let cap = by_node
            .upload(UploadSource::Bytes(vec![3u8; len].into()))
            .await
            .unwrap();
        assert!(cap.as_str().starts_with(prefix), "{len} bytes: {cap}");
    }
    let sdmf = g.create_mutable_dir().await.unwrap();
    assert!(sdmf.as_str().starts_with("URI:DIR2:"), "{sdmf}");
    let mdmf_grid = TestGrid::shared()
        .client(0)
        .grid_with(TahoeOptions {
            mutable_format: MutableFormat::Mdmf,
            ..Default::default()
        })
        .unwrap();
    let mdmf = mdmf_grid.create_mutable_dir().await.unwrap();
    assert!(mdmf.as_str().starts_with("URI:DIR2-MDMF:"), "{mdmf}");
    let empty = g.create_immutable_dir(DirChildren::new()).await.unwrap();
    assert_eq!(empty.as_str(), "URI:DIR2-LIT:");
    let imm = g
        .create_immutable_dir(children(&[("f", &chk, json!({}))]))
        .await
        .unwrap();
    assert!(imm.as_str().starts_with("URI:DIR2-CHK:"), "{imm}");

    for (cap, kind) in [
        (&lit, CapKind::ImmutableFile),
        (&chk, CapKind::ImmutableFile),
        (&sdmf, CapKind::MutableDirWrite),
        (&mdmf, CapKind::MutableDirWrite),
        (&empty, CapKind::ImmutableDir),
        (&imm, CapKind::ImmutableDir),
    ] {
        assert_eq!(cap.kind(), kind, "{cap}");
        // Round-trips through the parser, and the backend accepts it.
        assert_eq!(&Capability::parse(cap.as_str()).unwrap(), cap);
        tahoe::read_only(cap).unwrap();
    }
    // Both mutable formats work end to end.
    for dir in [&sdmf, &mdmf] {
        g.set_children(dir, children(&[("f", &chk, json!({"n": 1}))]), Replace::No)
            .await
            .unwrap();
        let listed = g.list(dir).await.unwrap();
        assert_eq!(listed["f"].cap, chk);
        let ro_listed = g.list(&read_only(dir).unwrap()).await.unwrap();
        assert_eq!(ro_listed, listed);
    }
}

#[tokio::test]
async fn read_only_equals_the_nodes_rocap() {
    let g = grid();
    for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
        let fg = TestGrid::shared()
            .client(0)
            .grid_with(TahoeOptions {
                mutable_format: format,
                ..Default::default()
            })
            .unwrap();
        let dir = fg.create_mutable_dir().await.unwrap();
        let (status, node_ro) = raw(
            reqwest::Method::GET,
            &g,
            &format!("uri/{dir}?t=readonly-uri"),
            "",
        )
        .await;
        assert_eq!(status, 200);
        let ours = read_only(&dir).unwrap();
        assert_eq!(ours.as_str(), node_ro.trim(), "{format:?}");
        assert_eq!(ours.kind(), CapKind::MutableDirRead);
        // And the listing of a parent shows the same ro_uri.
        let parent = g.create_mutable_dir().await.unwrap();
        g.set_children(&parent, children(&[("d", &dir, json!({}))]), Replace::Yes)
            .await
            .unwrap();
        let via_ro = g.list(&read_only(&parent).unwrap()).await.unwrap();
        assert_eq!(via_ro["d"].cap, ours);
        let via_rw = g.list(&parent).await.unwrap();
        assert_eq!(
            via_rw["d"].cap, dir,
            "a write-cap listing returns the child's write cap"
        );
    }
}

#[tokio::test]
async fn streaming_file_upload_and_download() {
    let g = grid();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.bin");
    // 2.5 MiB: three 1 MiB segments on the node, many chunks on the wire.
    let data: Vec<u8> = (0..(5 << 19))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let progress = mf_grid::Progress::new();
    let cap = g
        .upload(UploadSource::TrackedFile(path.clone(), progress.clone()))
        .await
        .unwrap();
    assert_eq!(progress.fraction(), 1.0, "every byte sent is counted");
    // Convergent: the same bytes from memory give the same cap.
    let again = g
        .upload(UploadSource::Bytes(data.clone().into()))
        .await
        .unwrap();
    assert_eq!(cap, again);
    let (size, got, chunks) = download_all(&g, &cap).await.unwrap();
    assert_eq!(size, data.len() as u64);
    assert!(got == data, "content differs");
    assert!(
        chunks > 1,
        "expected a streamed body, got {chunks} chunk(s)"
    );
    // An empty file is a LIT cap and downloads without a request.
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let cap = g.upload(UploadSource::File(empty)).await.unwrap();
    assert_eq!(cap.as_str(), "URI:LIT:");
    assert_eq!(
        read_small(g.download(&cap).await.unwrap(), 10)
            .await
            .unwrap(),
        b""
    );
}

#[tokio::test]
async fn a_file_that_changes_during_upload_is_refused() {
    let g = grid();
    // /proc files claim size 0 but yield bytes: the size check trips
    // deterministically, exactly as for a file that grew mid-upload. (One
    // beyond the literal limit: a literal is read whole, at once.)
    let err = g
        .upload(UploadSource::File("/proc/self/smaps".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, GridError::SourceChanged(_)), "{err:?}");
    let err = g
        .upload(UploadSource::File("/nonexistent/file".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, GridError::Io { .. }), "{err:?}");
}

#[tokio::test]
async fn metadata_round_trips_and_replaces() {
    let g = grid();
    let dir = g.create_mutable_dir().await.unwrap();
    let a = g
        .upload(UploadSource::Bytes(vec![1u8; 100].into()))
        .await
        .unwrap();
    let b = g
        .upload(UploadSource::Bytes(vec![2u8; 100].into()))
        .await
        .unwrap();
    let md = json!({"version": 3, "deleted": false, "nested": {"list": [1, "two", null], "f": 1.5}, "ünï": "cödé"});
    g.set_children(
        &dir,
        children(&[("a", &a, md.clone()), ("b", &b, json!({}))]),
        Replace::No,
    )
    .await
    .unwrap();
    let listed = g.list(&dir).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed["a"].cap, a);
    assert_eq!(
        listed["a"].metadata, md,
        "the node's own 'tahoe' key is stripped"
    );
    assert_eq!(listed["b"].metadata, json!({}));

    // Metadata is replaced, not merged.
    g.set_children(
        &dir,
        children(&[("a", &b, json!({"deleted": true}))]),
        Replace::Yes,
    )
    .await
    .unwrap();
    let listed = g.list(&dir).await.unwrap();
    assert_eq!(
        listed["a"],
        DirEntry {
            cap: b.clone(),
            metadata: json!({"deleted": true})
        }
    );

    // The reserved key is refused rather than silently dropped.
    let err = g
        .set_children(
            &dir,
            children(&[("c", &a, json!({"tahoe": {}}))]),
            Replace::Yes,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GridError::Protocol(_)), "{err:?}");
    // Immutable dirs keep metadata too.
    let imm = g
        .create_immutable_dir(children(&[("x", &a, md.clone())]))
        .await
        .unwrap();
    assert_eq!(g.list(&imm).await.unwrap()["x"].metadata, md);
}

#[tokio::test]
async fn error_mapping_against_the_node() {
    let g = grid();
    let dir = g.create_mutable_dir().await.unwrap();
    let f = g
        .upload(UploadSource::Bytes(vec![3u8; 200].into()))
        .await
        .unwrap();
    g.set_children(&dir, children(&[("a", &f, json!({"v": 1}))]), Replace::No)
        .await
        .unwrap();

    // 404: missing child.
    let err = g.unlink(&dir, "missing").await.unwrap_err();
    assert!(
        matches!(&err, GridError::NoChild(n) if n == "missing"),
        "{err:?}"
    );
    let (status, _) = raw(
        reqwest::Method::DELETE,
        &g,
        &format!("uri/{dir}/missing"),
        "",
    )
    .await;
    assert_eq!(status, 404);

    // 409: replace=false on an existing name; nothing changes, the clash is named.
    let other = g
        .upload(UploadSource::Bytes(vec![4u8; 200].into()))
        .await
        .unwrap();
    let err = g
        .set_children(
            &dir,
            children(&[("new", &other, json!({})), ("a", &other, json!({}))]),
            Replace::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(&err, GridError::Exists(n) if n == "a"), "{err:?}");
    let listed = g.list(&dir).await.unwrap();
    assert_eq!(listed.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(listed["a"].cap, f);
    let body = format!(r#"{{"a": ["filenode", {{"ro_uri": "{other}"}}]}}"#);
    let (status, _) = raw(
        reqwest::Method::POST,
        &g,
        &format!("uri/{dir}?t=set_children&replace=false"),
        &body,
    )
    .await;
    assert_eq!(status, 409);

    // 400: a cap the node cannot parse (caught locally, and the node agrees).
    let bad = Capability::parse("URI:CHK:a:b:3:10:100").unwrap();
    let err = g.download(&bad).await.err().unwrap();
    assert!(matches!(err, GridError::BadCap(_)), "{err:?}");
    let (status, _) = raw(reqwest::Method::GET, &g, &format!("uri/{bad}"), "").await;
    assert_eq!(status, 400);

    // 410 with every server connected: the object does not exist.
    let missing_file = Capability::parse(
        "URI:CHK:anl4vlabxziju3xt3y5jvfdmna:fnrcw3y7gzmnc75holrscxoy5chi7to6yo5biymy34s6dapdblua:2:3:73",
    )
    .unwrap();
    let err = g.download(&missing_file).await.err().unwrap();
    assert!(matches!(err, GridError::NotFound(_)), "{err:?}");
    let missing_dir = Capability::parse(
        "URI:DIR2:c5y4fjuebcphldognm72q4vlba:tsebdb7n4g5cvhemd3ryncbeojwnf4jytvox7pyuxfpk7iq45emq",
    )
    .unwrap();
    let err = g.list(&missing_dir).await.unwrap_err();
    assert!(matches!(err, GridError::NotFound(_)), "{err:?}");
    assert!(!err.is_transient());

    // Writing through a read cap: refused before any request.
    let ro = read_only(&dir).unwrap();
    let err = g
        .set_children(&ro, children(&[("b", &f, json!({}))]), Replace::Yes)
        .await
        .unwrap_err();
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
    // (The node would have answered 500 with an AssertionError traceback.)
    let body = format!(r#"{{"b": ["filenode", {{"ro_uri": "{f}"}}]}}"#);
    let (status, text) = raw(
        reqwest::Method::POST,
        &g,
        &format!("uri/{ro}?t=set_children"),
        &body,
    )
    .await;
    assert_eq!(status, 500, "{text}");

    // Mutable children cannot go into an immutable directory.
    let err = g
        .create_immutable_dir(children(&[("d", &dir, json!({}))]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            GridError::WrongKind {
                got: CapKind::MutableDirWrite,
                ..
            }
        ),
        "{err:?}"
    );

    // Names the trait forbids never reach the node.
    for name in ["", "a/b"] {
        let err = g
            .set_children(&dir, children(&[(name, &f, json!({}))]), Replace::Yes)
            .await
            .unwrap_err();
        assert!(matches!(err, GridError::Protocol(_)), "{name:?}: {err:?}");
    }
    // Unlink removes exactly the named child and returns nothing else.
    g.unlink(&dir, "a").await.unwrap();
    assert!(g.list(&dir).await.unwrap().is_empty());
}

#[tokio::test]
async fn names_that_look_like_paths_stay_names() {
    let g = grid();
    let dir = g.create_mutable_dir().await.unwrap();
    let f = g.upload(UploadSource::Bytes("x".into())).await.unwrap();
    let names = [
        "..",
        ".",
        "sp ace",
        "q?x=1&t=json",
        "pct%2F",
        "ünïcödé",
        "#hash",
    ];
    let kids: DirChildren = names
        .iter()
        .map(|n| (n.to_string(), DirEntry::new(f.clone())))
        .collect();
    g.set_children(&dir, kids, Replace::No).await.unwrap();
    let listed = g.list(&dir).await.unwrap();
    assert_eq!(
        listed.len(),
        names.len(),
        "{:?}",
        listed.keys().collect::<Vec<_>>()
    );
    for name in names {
        g.unlink(&dir, name).await.unwrap();
    }
    assert!(g.list(&dir).await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_child_kinds_are_tolerated() {
    let g = grid();
    let dir = g.create_mutable_dir().await.unwrap();
    let f = g
        .upload(UploadSource::Bytes(vec![5u8; 100].into()))
        .await
        .unwrap();
    g.set_children(
        &dir,
        children(&[("known", &f, json!({"k": 1}))]),
        Replace::No,
    )
    .await
    .unwrap();
    // Another client links a future cap and a mutable file (which this
    // program does not model).
    let (status, ssk) = raw(reqwest::Method::PUT, &g, "uri?format=SDMF", "mutable file").await;
    assert_eq!(status, 200);
    let body = format!(
        r#"{{"future": ["unknown", {{"ro_uri": "ro.URI:FUTURE-CAP:abc"}}],
            "mutable": ["filenode", {{"rw_uri": "{}"}}]}}"#,
        ssk.trim()
    );
    let (status, text) = raw(
        reqwest::Method::POST,
        &g,
        &format!("uri/{dir}?t=set_children"),
        &body,
    )
    .await;
    assert_eq!(status, 200, "{text}");

    let listed = g.list(&dir).await.unwrap();
    assert_eq!(listed.keys().collect::<Vec<_>>(), ["known"]);
    assert_eq!(listed["known"].metadata, json!({"k": 1}));
    // Writes of other names leave them alone...
    g.set_children(&dir, children(&[("more", &f, json!({}))]), Replace::No)
        .await
        .unwrap();
    let (_, raw_listing) = raw(reqwest::Method::GET, &g, &format!("uri/{dir}?t=json"), "").await;
    assert!(raw_listing.contains("ro.URI:FUTURE-CAP:abc") && raw_listing.contains(ssk.trim()));
    // ...and their names still count as taken.
    let err = g
        .set_children(&dir, children(&[("future", &f, json!({}))]), Replace::No)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GridError::Exists(n) if n == "future"),
        "{err:?}"
    );
}

#[tokio::test]
async fn concurrent_writes_through_one_node_all_land() {
    let g = grid();
    let dir = g.create_mutable_dir().await.unwrap();
    let f = g
        .upload(UploadSource::Bytes(vec![6u8; 100].into()))
        .await
        .unwrap();
    let writes = (0..6).map(|i| {
        let (g, dir, f) = (g.clone(), dir.clone(), f.clone());
        tokio::spawn(async move {
            g.set_children(
                &dir,
                children(&[(&format!("n{i}"), &f, json!({"i": i}))]),
                Replace::No,
            )
            .await
        })
    });
    for w in futures_util::future::join_all(writes).await {
        w.unwrap().unwrap();
    }
    let listed = g.list(&dir).await.unwrap();
    assert_eq!(listed.len(), 6);
    assert_eq!(listed["n4"].metadata, json!({"i": 4}));
}

#[tokio::test]
async fn participants_on_their_own_nodes_see_each_others_data() {
    let shared = TestGrid::shared();
    let t = Instant::now();
    let alice = shared.add_client("alice").unwrap();
    eprintln!("extra client node ready in {:.1?}", t.elapsed());
    let (a, b) = (alice.grid().unwrap(), grid());
    assert_ne!(a.base_url(), b.base_url());
    let dir = a.create_mutable_dir().await.unwrap();
    let f = a
        .upload(UploadSource::Bytes(vec![8u8; 20_000].into()))
        .await
        .unwrap();
    a.set_children(
        &dir,
        children(&[("from-alice", &f, json!({"by": "alice"}))]),
        Replace::No,
    )
    .await
    .unwrap();
    let listed = b.list(&read_only(&dir).unwrap()).await.unwrap();
    assert_eq!(listed["from-alice"].metadata, json!({"by": "alice"}));
    assert_eq!(
        read_small(b.download(&f).await.unwrap(), 30_000)
            .await
            .unwrap(),
        vec![8u8; 20_000]
    );
}

/// Storage servers going away and coming back, on a private grid.
#[tokio::test]
async fn storage_nodes_down_and_up() {
    let t = Instant::now();
    let mut tg = TestGrid::start(GridSpec::default()).unwrap();
    eprintln!("private grid up in {:.1?}: {:?}", t.elapsed(), tg.timings());
    let g = tg.client(0).grid().unwrap();
    let data = vec![9u8; 300_000];
    let cap = g
        .upload(UploadSource::Bytes(data.clone().into()))
        .await
        .unwrap();
    let dir = g.create_mutable_dir().await.unwrap();
    g.set_children(&dir, children(&[("f", &cap, json!({}))]), Replace::No)
        .await
        .unwrap();

    // One of three down: reads still work (k = 2), immutable writes cannot
    // be happy (happy = 3), and health says so up front.
    let t = Instant::now();
    tg.stop_storage(0).unwrap();
    eprintln!("one storage node down, noticed in {:.1?}", t.elapsed());
    let h = g.health().await.unwrap();
    assert_eq!((h.connected_servers(), h.known_servers()), (2, 3));
    assert!(!h.can_write() && h.can_read());
    assert_eq!(download_all(&g, &cap).await.unwrap().1, data);
    assert!(g.list(&dir).await.unwrap().contains_key("f"));
    let c = g.check(&cap, false).await.unwrap();
    assert!(c.recoverable && !c.healthy, "{c:?}");
    assert_eq!((c.shares_good, c.shares_expected), (2, 3), "{c:?}");
    let err = g
        .upload(UploadSource::Bytes(vec![1u8; 20_000].into()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, GridError::Unavailable(_)) && err.is_transient(),
        "{err:?}"
    );

    // Two of three down: not enough shares, and the node knows servers are
    // away, so this is transient rather than "not found".
    tg.stop_storage(1).unwrap();
    let err = g.download(&cap).await.err().unwrap();
    assert!(matches!(err, GridError::Unavailable(_)), "{err:?}");
    let err = g.list(&dir).await.unwrap_err();
    assert!(matches!(err, GridError::Unavailable(_)), "{err:?}");

    // Back up: everything works again.
    let t = Instant::now();
    tg.start_storage(0).unwrap();
    tg.start_storage(1).unwrap();
    eprintln!(
        "two storage nodes restarted and reconnected in {:.1?}",
        t.elapsed()
    );
    assert!(g.health().await.unwrap().can_write());
    assert_eq!(download_all(&g, &cap).await.unwrap().1, data);
    let c = g.check(&cap, false).await.unwrap();
    assert!(c.healthy && !c.repair_attempted, "{c:?}");

    // A server that lost its shares (a disk replaced): the node's checker
    // sees two of three, and its repairer puts the third back.
    tg.stop_storage(2).unwrap();
    let shares = tg.storage(2).dir().join("storage").join("shares");
    std::fs::remove_dir_all(&shares).unwrap();
    std::fs::create_dir(&shares).unwrap();
    tg.start_storage(2).unwrap();
    let c = g.check(&cap, false).await.unwrap();
    assert!(!c.healthy && c.recoverable && c.shares_good == 2, "{c:?}");
    let r = g.check(&cap, true).await.unwrap();
    assert!(r.repair_attempted && r.repaired && r.healthy, "{r:?}");
    assert!(g.check(&cap, false).await.unwrap().healthy);
    g.upload(UploadSource::Bytes(vec![1u8; 20_000].into()))
        .await
        .unwrap();

    // The whole client node down: transport errors are transient.
    let url = g.base_url().to_owned();
    drop(tg);
    let opts = TahoeOptions {
        retry: tahoe::RetryPolicy {
            max_attempts: 2,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
        },
        ..Default::default()
    };
    let gone = TahoeGrid::from_url_with(&url, opts).unwrap();
    let err = gone.list(&dir).await.unwrap_err();
    assert!(matches!(err, GridError::Unavailable(_)), "{err:?}");
}
