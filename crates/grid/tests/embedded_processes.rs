//! The embedded grid across OS processes: several processes writing one
//! mutable directory at once, and writers killed with SIGKILL mid-write.
//!
//! Child processes are this test binary itself, re-executed to run only
//! [`child_process_entry`] with its orders in the `MF_GRID_CHILD`
//! environment variable. In a normal test run that entry finds no orders
//! and passes at once.
//!
//! Waits are on conditions, with deadlines; no test relies on a sleep.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mf_grid::contract::test_content;
use mf_grid::embedded::EmbeddedGrid;
use mf_grid::{Capability, DirChildren, DirEntry, Grid, Replace, UploadSource};
use serde_json::json;

const SECRET: [u8; 32] = [0x33; 32];
const ENV: &str = "MF_GRID_CHILD";

/// Runs the orders of a child process (see the module docs).
#[test]
fn child_process_entry() {
    let Ok(orders) = std::env::var(ENV) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&orders).expect("orders are a JSON list");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match args[0].as_str() {
            "hammer" => hammer(&args[1..]).await,
            "upload" => {
                let g = EmbeddedGrid::open(&args[1], SECRET).unwrap();
                g.upload(UploadSource::File(PathBuf::from(&args[2])))
                    .await
                    .unwrap();
            }
            "grow" => grow(&args[1..]).await,
            other => panic!("unknown orders {other}"),
        }
    });
}

/// `hammer <grid> <dircap> <file cap> <proc> <per task> <go file>`: two
/// tasks each add `per task` uniquely named children (and add and remove a
/// scratch child every third step), starting when `go file` appears.
async fn hammer(args: &[String]) {
    let g = EmbeddedGrid::open(&args[0], SECRET).unwrap();
    let dir = Capability::parse(&args[1]).unwrap();
    let file = Capability::parse(&args[2]).unwrap();
    let proc_id: usize = args[3].parse().unwrap();
    let per_task: usize = args[4].parse().unwrap();
    wait_for("the go signal", Duration::from_secs(60), || {
        Path::new(&args[5]).exists()
    });
    let tasks = (0..2).map(|t| {
        let (g, dir, file) = (g.clone(), dir.clone(), file.clone());
        tokio::spawn(async move {
            for i in 0..per_task {
                let mut c = DirChildren::new();
                let meta = json!({ "proc": proc_id, "task": t, "i": i });
                c.insert(
                    format!("p{proc_id}-t{t}-{i}"),
                    DirEntry {
                        cap: file.clone(),
                        metadata: meta,
                    },
                );
                g.set_children(&dir, c, Replace::No).await.unwrap();
                if i % 3 == 0 {
                    let scratch = format!("scratch-p{proc_id}-t{t}-{i}");
                    let mut c = DirChildren::new();
                    c.insert(scratch.clone(), DirEntry::new(file.clone()));
                    g.set_children(&dir, c, Replace::Yes).await.unwrap();
                    g.unlink(&dir, &scratch).await.unwrap();
                }
            }
        })
    });
    for t in tasks.collect::<Vec<_>>() {
        t.await.unwrap();
    }
}

/// `grow <grid> <dircap> <file cap>`: adds `k00000`, `k00001`, … one per
/// write, continuing after whatever is there, until killed.
async fn grow(args: &[String]) {
    let g = EmbeddedGrid::open(&args[0], SECRET).unwrap();
    let dir = Capability::parse(&args[1]).unwrap();
    let file = Capability::parse(&args[2]).unwrap();
    let mut i = g.list(&dir).await.unwrap().len();
    loop {
        let mut c = DirChildren::new();
        c.insert(format!("k{i:05}"), DirEntry::new(file.clone()));
        g.set_children(&dir, c, Replace::No).await.unwrap();
        i += 1;
    }
}

fn spawn_child(orders: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ENV, serde_json::to_string(orders).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .expect("re-executing the test binary")
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child process did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills a child with SIGKILL and reaps it.
fn kill_9(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_hammering_one_directory_lose_no_update() {
    const PROCS: usize = 4;
    const PER_TASK: usize = 8;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("grid");
    let g = EmbeddedGrid::create(&root, SECRET).unwrap();
    let file = g
        .upload(UploadSource::Bytes(b"shared".to_vec().into()))
        .await
        .unwrap();
    let dir = g.create_mutable_dir().await.unwrap();
    let go = d.path().join("go");
    let mut children: Vec<Child> = (0..PROCS)
        .map(|p| {
            spawn_child(&[
                "hammer",
                root.to_str().unwrap(),
                dir.as_str(),
                file.as_str(),
                &p.to_string(),
                &PER_TASK.to_string(),
                go.to_str().unwrap(),
            ])
        })
        .collect();
    std::fs::write(&go, b"").unwrap();
    for c in &mut children {
        assert!(
            wait_exit(c, Duration::from_secs(120)).success(),
            "a writer process failed"
        );
    }
    let listed = g.list(&dir).await.unwrap();
    for p in 0..PROCS {
        for t in 0..2 {
            for i in 0..PER_TASK {
                let e = listed
                    .get(&format!("p{p}-t{t}-{i}"))
                    .unwrap_or_else(|| panic!("lost p{p}-t{t}-{i}"));
                assert_eq!(e.metadata, json!({ "proc": p, "task": t, "i": i }));
            }
        }
    }
    assert_eq!(
        listed.len(),
        PROCS * 2 * PER_TASK,
        "scratch entries must all be gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_upload_leaves_no_partial_object() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("big.bin");
    let data = test_content(12 << 20, 77);
    std::fs::write(&src, &data).unwrap();
    let mut caught = false;
    for attempt in 0..3 {
        let root = d.path().join(format!("grid{attempt}"));
        EmbeddedGrid::create(&root, SECRET).unwrap();
        let tmp = root.join("tmp");
        let mut child = spawn_child(&["upload", root.to_str().unwrap(), src.to_str().unwrap()]);
        // Wait until the encrypted temporary file is well under way.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let writing = std::fs::read_dir(&tmp)
                .unwrap()
                .flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.len() > 1 << 20));
            if writing {
                kill_9(&mut child);
                caught = true;
                break;
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if !caught {
            continue; // finished before we caught it mid-write; try again
        }
        // No object is visible, only the orphaned temporary file.
        assert!(
            files_under(&root.join("objects")).is_empty(),
            "a partial object is visible"
        );
        assert!(!files_under(&tmp).is_empty());
        // The grid works: the same upload completes and reads back.
        let g = EmbeddedGrid::open(&root, SECRET).unwrap();
        let cap = g.upload(UploadSource::File(src.clone())).await.unwrap();
        let back = mf_grid::read_small(g.download(&cap).await.unwrap(), 16 << 20)
            .await
            .unwrap();
        assert!(back == data, "re-upload after the crash reads back wrong");
        assert_eq!(files_under(&root.join("objects")).len(), 1);
        break;
    }
    assert!(caught, "never caught the writer mid-upload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_killed_mid_directory_update_leave_it_consistent() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("grid");
    let g = EmbeddedGrid::create(&root, SECRET).unwrap();
    let file = g
        .upload(UploadSource::Bytes(b"f".to_vec().into()))
        .await
        .unwrap();
    let dir = g.create_mutable_dir().await.unwrap();
    let ro = mf_grid::read_only(&dir).unwrap();
    let mut seen = 0;
    for round in 0..4 {
        let mut child = spawn_child(&["grow", root.to_str().unwrap(), dir.as_str(), file.as_str()]);
        // Let it make a few writes, then kill it wherever it happens to be.
        let target = seen + 3 + round;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = g.list(&ro).await.unwrap().len();
            if n >= target {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "writer died on its own"
            );
            assert!(Instant::now() < deadline, "writer made no progress");
            tokio::task::yield_now().await;
        }
        kill_9(&mut child);
        // Readable, and exactly a prefix k00000..k(n-1): every write whole.
        let listed = g.list(&ro).await.unwrap();
        let names: Vec<&String> = listed.keys().collect();
        let expected: Vec<String> = (0..listed.len()).map(|i| format!("k{i:05}")).collect();
        assert_eq!(names, expected.iter().collect::<Vec<_>>(), "round {round}");
        assert!(listed.len() >= target);
        seen = listed.len();
    }
    // And writable by someone else afterwards.
    let mut c = DirChildren::new();
    c.insert("after".into(), DirEntry::new(file.clone()));
    g.set_children(&dir, c, Replace::No).await.unwrap();
    assert_eq!(g.list(&dir).await.unwrap().len(), seen + 1);
}
