//! Chunked content (`mf_daemon::chunked`) through the executor and the real
//! embedded grid: an edit inside a large file moves one chunk each way, only
//! our own versions' chunks are reused, a crash at any grid write of an
//! upload leaves a retry that succeeds, and a hostile chunk list is refused
//! by name without a byte of it reaching the folder.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use mf_core::engine::{Action, Event, OpId, UploadOutcome, WriteOutcome};
use mf_core::relpath::RelPath;
use mf_core::snapshot::{Cap, Content, SnapshotInfo};
use mf_daemon::chunked::{self, Chunk, Chunking, ContentFormat};
use mf_daemon::executor::{Executor, ExecutorConfig};
use mf_daemon::fsops;
use mf_grid::{CapKind, Capability, DirEntry, Grid, UploadSource};

mod common;
use common::Faulty;

const MIB: u64 = 1 << 20;
const CHUNKING: Chunking = Chunking::EMBEDDED;

struct World {
    grid: Arc<Faulty>,
    alice: Executor<Faulty>,
    bob: Executor<Faulty>,
    alice_root: tempfile::TempDir,
    bob_root: tempfile::TempDir,
    _store: tempfile::TempDir,
}

impl World {
    async fn new(content: ContentFormat) -> World {
        let store = tempfile::tempdir().unwrap();
        let grid = Arc::new(Faulty::create(store.path()));
        let collective = grid.create_mutable_dir().await.unwrap();
        let (alice_root, bob_root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut execs = Vec::new();
        for (name, root) in [("alice", alice_root.path()), ("bob", bob_root.path())] {
            fsops::ensure_marker(root).unwrap();
            let personal = grid.create_mutable_dir().await.unwrap();
            let config = ExecutorConfig {
                content,
                chunking: CHUNKING,
                ..common::config(name, root, &collective, personal)
            };
            execs.push(Executor::new(grid.clone(), config).unwrap());
        }
        let bob = execs.pop().unwrap();
        let alice = execs.pop().unwrap();
        World {
            grid,
            alice,
            bob,
            alice_root,
            bob_root,
            _store: store,
        }
    }
}

fn path() -> RelPath {
    RelPath::new("big.bin").unwrap()
}

/// `len` bytes no two chunks of which are alike.
fn data(len: u64) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn upload(ex: &Executor<Faulty>, root: &Path, parents: &[Cap]) -> UploadOutcome {
    let local = fsops::stat(root, &path()).unwrap();
    match ex
        .execute(Action::Upload {
            op: OpId(1),
            path: path(),
            local,
            parents: parents.to_vec(),
            generation: 1,
        })
        .await
    {
        Event::Uploaded { result, .. } => result,
        other => panic!("{other:?}"),
    }
}

async fn uploaded(ex: &Executor<Faulty>, root: &Path, parents: &[Cap]) -> SnapshotInfo {
    match upload(ex, root, parents).await {
        UploadOutcome::Done(info) => info,
        other => panic!("{other:?}"),
    }
}

async fn write(ex: &Executor<Faulty>, root: &Path, content: Content) -> WriteOutcome {
    let expect = fsops::stat(root, &path()).unwrap();
    match ex
        .execute(Action::Write {
            op: OpId(2),
            target: path(),
            content,
            mtime_s: 1_700_000_000,
            expect,
        })
        .await
    {
        Event::Written { result, .. } => result,
        other => panic!("{other:?}"),
    }
}

fn content_cap(info: &SnapshotInfo) -> Capability {
    match &info.content {
        Content::File { cap, .. } => Capability::parse(cap.as_str()).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn read(root: &Path) -> Vec<u8> {
    std::fs::read(root.join("big.bin")).unwrap()
}

#[tokio::test]
async fn an_edit_inside_a_large_file_moves_one_chunk_each_way() {
    let w = World::new(ContentFormat::Chunked).await;
    let size = 20 * CHUNKING.min_chunk + 12_345;
    let chunk = CHUNKING.chunk_size(size);
    let mut bytes = data(size);
    std::fs::write(w.alice_root.path().join("big.bin"), &bytes).unwrap();
    let v1 = uploaded(&w.alice, w.alice_root.path(), &[]).await;
    assert_eq!(content_cap(&v1).kind(), CapKind::ImmutableDir);
    assert!(w.grid.take_uploaded() >= size);
    assert!(matches!(
        write(&w.bob, w.bob_root.path(), v1.content.clone()).await,
        WriteOutcome::Done(_)
    ));
    assert!(w.grid.take_downloaded() >= size);
    assert!(read(w.bob_root.path()) == bytes);

    // 1 KiB overwritten in the middle: one chunk up, one chunk down.
    let middle = (10 * chunk + 100) as usize;
    bytes[middle..middle + 1024].fill(7);
    std::fs::write(w.alice_root.path().join("big.bin"), &bytes).unwrap();
    let v2 = uploaded(&w.alice, w.alice_root.path(), std::slice::from_ref(&v1.cap)).await;
    let up = w.grid.take_uploaded();
    assert!((chunk..2 * chunk).contains(&up), "uploaded {up} bytes");
    assert!(matches!(
        write(&w.bob, w.bob_root.path(), v2.content.clone()).await,
        WriteOutcome::Done(_)
    ));
    let down = w.grid.take_downloaded();
    assert!(
        (chunk..2 * chunk).contains(&down),
        "downloaded {down} bytes"
    );
    assert!(read(w.bob_root.path()) == bytes);

    // Grown by a tail: the chunks before it are the same.
    bytes.extend_from_slice(&data(MIB)[..]);
    std::fs::write(w.alice_root.path().join("big.bin"), &bytes).unwrap();
    let v3 = uploaded(&w.alice, w.alice_root.path(), std::slice::from_ref(&v2.cap)).await;
    let up = w.grid.take_uploaded();
    assert!(up < 2 * chunk, "uploaded {up} bytes");
    assert!(matches!(
        write(&w.bob, w.bob_root.path(), v3.content.clone()).await,
        WriteOutcome::Done(_)
    ));
    assert!(w.grid.take_downloaded() < 2 * chunk);
    assert!(read(w.bob_root.path()) == bytes);

    // Bob's edit on alice's version: her chunk list's digests are not
    // his to vouch for, so he uploads every chunk.
    bytes[0] ^= 1;
    std::fs::write(w.bob_root.path().join("big.bin"), &bytes).unwrap();
    let v4 = uploaded(&w.bob, w.bob_root.path(), std::slice::from_ref(&v3.cap)).await;
    assert!(w.grid.take_uploaded() >= bytes.len() as u64);
    assert!(matches!(
        write(&w.alice, w.alice_root.path(), v4.content.clone()).await,
        WriteOutcome::Done(_)
    ));
    assert!(read(w.alice_root.path()) == bytes);
}

/// The daemon bounds tokio's blocking pool (`memory::BLOCKING_THREADS`),
/// which is safe only while no blocking task waits for another: a writer
/// thread parked until a reader thread hands it a chunk would hold the
/// place that reader needs. With one blocking thread, a large file still
/// moves both ways, chunked and whole.
#[test]
fn large_files_move_with_a_single_blocking_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for content in [ContentFormat::Chunked, ContentFormat::Whole] {
            let w = World::new(content).await;
            let bytes = data(12 * CHUNKING.min_chunk + 12_345);
            std::fs::write(w.alice_root.path().join("big.bin"), &bytes).unwrap();
            let v1 = bounded("upload", uploaded(&w.alice, w.alice_root.path(), &[])).await;
            let written = bounded("write", write(&w.bob, w.bob_root.path(), v1.content)).await;
            assert!(matches!(written, WriteOutcome::Done(_)), "{content:?}");
            assert!(read(w.bob_root.path()) == bytes, "{content:?}");
        }
    });
}

/// `step`, or a panic after a time only a deadlock takes.
async fn bounded<T>(what: &str, step: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(300), step)
        .await
        .unwrap_or_else(|_| panic!("{what}: stuck (a blocking task waits for another)"))
}

#[tokio::test]
async fn small_files_and_whole_folders_are_not_chunked() {
    let chunked = World::new(ContentFormat::Chunked).await;
    std::fs::write(
        chunked.alice_root.path().join("big.bin"),
        data(CHUNKING.from - 1),
    )
    .unwrap();
    let v = uploaded(&chunked.alice, chunked.alice_root.path(), &[]).await;
    assert_eq!(content_cap(&v).kind(), CapKind::ImmutableFile);

    let whole = World::new(ContentFormat::Whole).await;
    let bytes = data(CHUNKING.from + 1);
    std::fs::write(whole.alice_root.path().join("big.bin"), &bytes).unwrap();
    let v = uploaded(&whole.alice, whole.alice_root.path(), &[]).await;
    assert_eq!(content_cap(&v).kind(), CapKind::ImmutableFile);
    assert!(matches!(
        write(&whole.bob, whole.bob_root.path(), v.content).await,
        WriteOutcome::Done(_)
    ));
    assert!(read(whole.bob_root.path()) == bytes);
}

#[tokio::test]
async fn a_crash_at_any_write_of_a_chunked_upload_leaves_a_retry_that_succeeds() {
    let w = World::new(ContentFormat::Chunked).await;
    let bytes = data(CHUNKING.from + 3 * MIB);
    std::fs::write(w.alice_root.path().join("big.bin"), &bytes).unwrap();
    // The chunks, the chunk list, then the metadata and the snapshot.
    let n = (bytes.len() as u64).div_ceil(CHUNKING.chunk_size(bytes.len() as u64)) as usize;
    for crash_at in [0, n / 2, n - 1, n, n + 1, n + 2] {
        w.grid.crash_at_write(crash_at);
        match upload(&w.alice, w.alice_root.path(), &[]).await {
            UploadOutcome::Failed(e) => assert!(e.transient, "{e:?}"),
            other => panic!("crash at write {crash_at}: {other:?}"),
        }
        w.grid.heal();
        let v = uploaded(&w.alice, w.alice_root.path(), &[]).await;
        let _ = std::fs::remove_file(w.bob_root.path().join("big.bin"));
        assert!(matches!(
            write(&w.bob, w.bob_root.path(), v.content).await,
            WriteOutcome::Done(_)
        ));
        assert!(
            read(w.bob_root.path()) == bytes,
            "crash at write {crash_at}"
        );
    }
}

/// A chunk list made by hand: `chunks` are (bytes stored, digest claimed,
/// size claimed).
async fn hostile(grid: &Faulty, chunks: &[(&[u8], [u8; 32], u64)]) -> Capability {
    let mut list = Vec::new();
    let mut offset = 0;
    for (stored, digest, size) in chunks {
        let cap = grid
            .inner
            .upload(UploadSource::Bytes(Bytes::copy_from_slice(stored)))
            .await
            .unwrap();
        list.push(Chunk {
            offset,
            size: *size,
            digest: *digest,
            cap,
        });
        offset += size;
    }
    grid.inner
        .create_immutable_dir(chunked::manifest_children(&list))
        .await
        .unwrap()
}

#[tokio::test]
async fn hostile_chunk_lists_are_refused_and_nothing_reaches_the_folder() {
    let w = World::new(ContentFormat::Chunked).await;
    let m = CHUNKING.min_chunk;
    let first = data(m);
    let tail = b"tail!".to_vec();
    let (d_first, d_tail) = (chunked::digest(&first), chunked::digest(&tail));
    let file = |cap: &Capability, size: u64| Content::File {
        cap: Cap::from(cap.as_str()),
        size,
        executable: false,
    };
    let refused = |outcome: WriteOutcome, why: &str| match outcome {
        WriteOutcome::Failed(e) => {
            assert!(!e.transient, "{e:?}");
            assert!(e.message.contains(why), "{} (expected {why:?})", e.message);
        }
        other => panic!("{other:?}"),
    };
    let size = m + 5;

    // A chunk whose bytes are not those its digest names.
    let swapped = hostile(&w.grid, &[(&first, d_first, m), (b"evil!", d_tail, 5)]).await;
    refused(
        write(&w.bob, w.bob_root.path(), file(&swapped, size)).await,
        "does not match the digest",
    );
    // Sizes that do not add up to the signed size, either way.
    let honest = hostile(&w.grid, &[(&first, d_first, m), (&tail, d_tail, 5)]).await;
    refused(
        write(&w.bob, w.bob_root.path(), file(&honest, size + 1)).await,
        "chunk list",
    );
    refused(
        write(&w.bob, w.bob_root.path(), file(&honest, size + m)).await,
        "chunk list",
    );
    // A chunk that holds more than its list says.
    let long = hostile(&w.grid, &[(&first, d_first, m), (b"tail!!", d_tail, 5)]).await;
    refused(
        write(&w.bob, w.bob_root.path(), file(&long, size)).await,
        "holds 6 bytes",
    );
    // A chunk that is a directory.
    let mut children = chunked::manifest_children(&[]);
    let dir = w
        .grid
        .inner
        .create_immutable_dir(children.clone())
        .await
        .unwrap();
    children.insert(
        "000000".into(),
        DirEntry {
            cap: dir,
            metadata: serde_json::json!({ "size": m, "sha256": "00".repeat(32) }),
        },
    );
    let nested = w.grid.inner.create_immutable_dir(children).await.unwrap();
    refused(
        write(&w.bob, w.bob_root.path(), file(&nested, m)).await,
        "not an immutable file",
    );
    // Nothing was placed, and no temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(w.bob_root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".magic-folder")
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // The honest list writes the file.
    assert!(matches!(
        write(&w.bob, w.bob_root.path(), file(&honest, size)).await,
        WriteOutcome::Done(_)
    ));
    assert!(read(w.bob_root.path()) == [first, tail].concat());
}
