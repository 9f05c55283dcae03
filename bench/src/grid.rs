//! `mf-bench grid`: the embedded grid's throughput for one large file and
//! many small ones, next to this machine's limits from the same run.
//!
//! Sources are written and flushed to disk before anything is timed, and
//! `sync` runs between phases, so one phase's writeback does not land in the
//! next one's timing. Each phase runs in its own process (see `phase`).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use mf_grid::embedded::EmbeddedGrid;
use mf_grid::{Capability, Grid, UploadSource};
use serde_json::{json, Value};

use crate::data::{content, settle, write_content};
use crate::limits::{make_small_dirs, small_path, write_durably};
use crate::phase::{self, timed, Measured, PhaseFn, Timed};
use crate::report::{print_table, write_json, Row, Unit};
use crate::Options;

/// Large-file throughput target, as a fraction of min(disk copy, AEAD).
const TARGET_RATIO: f64 = 0.65;
/// Peak RSS target for the large-file phases, MiB.
const TARGET_RSS_MIB: f64 = 64.0;
/// MiB pushed through the in-memory crypto limit measurements.
const CRYPTO_MIB: u64 = 512;

/// The phase bodies this module provides.
pub fn phase(name: &str) -> Option<PhaseFn> {
    Some(match name {
        "grid-upload-large" => upload_large,
        "grid-download-large" => download_large,
        "grid-download-large-discard" => download_large_discard,
        "grid-upload-small" => upload_small,
        "grid-download-small" => download_small,
        _ => return None,
    })
}

/// Runs the whole grid benchmark and prints (and optionally saves) it.
pub fn run(o: &Options) -> Result<()> {
    crate::world::in_work_dir(o.dir.as_deref(), "grid", |work| run_in(o, work))
}

fn run_in(o: &Options, work: &Path) -> Result<()> {
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let large = work.join("large.bin");
    let small = work.join("small-src");
    eprintln!(
        "preparing {} MiB file and {} × {} KiB files in {}",
        o.size_mib,
        o.files,
        o.file_kib,
        work.display()
    );
    write_content(&large, o.size_mib << 20, 1)?;
    make_small_dirs(&small)?;
    for i in 0..o.files {
        fs::write(
            small_path(&small, i),
            content(o.file_kib << 10, 1000 + i as u64),
        )?;
    }
    settle()?;

    let path = |p: &Path| p.to_string_lossy().into_owned();
    let step = |what: &str, name: &str, args: Value| -> Result<Measured> {
        eprintln!("  {what}…");
        let m = phase::run(name, args)?;
        settle()?;
        Ok(m)
    };

    // Machine limits.
    let aead = step("AES-256-GCM", "limit-aead", json!({ "mib": CRYPTO_MIB }))?;
    let sha = step("SHA-256", "limit-sha256", json!({ "mib": CRYPTO_MIB }))?;
    let copy_dst = work.join("copy.bin");
    let copy1 = step(
        "copy + fsync (large)",
        "limit-copy-large",
        json!({ "src": path(&large), "dst": path(&copy_dst) }),
    )?;
    fs::remove_file(&copy_dst)?;
    let copy_small_dst = work.join("copy-small");
    let copy_small = step(
        "copy + fsync (small files)",
        "limit-copy-tree",
        json!({ "src_dir": path(&small), "dst_dir": path(&copy_small_dst), "threads": o.concurrency }),
    )?;
    fs::remove_dir_all(&copy_small_dst)?;

    // The grid.
    let secret = EmbeddedGrid::generate_convergence_secret()?;
    let grid_dir = work.join("grid");
    EmbeddedGrid::create(&grid_dir, secret)?;
    let g = json!({ "grid": path(&grid_dir), "secret": hex(&secret) });
    let with = |extra: Value| {
        let mut v = g.clone();
        v.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        v
    };
    let cap_file = work.join("large.cap");
    let up_large = step(
        "grid upload (large)",
        "grid-upload-large",
        with(json!({ "src": path(&large), "cap_out": path(&cap_file) })),
    )?;
    let dst = work.join("download.bin");
    let down_large = step(
        "grid download to file (large)",
        "grid-download-large",
        with(json!({ "cap_file": path(&cap_file), "dst": path(&dst) })),
    )?;
    if fs::metadata(&dst)?.len() != o.size_mib << 20 {
        bail!("downloaded file has the wrong size");
    }
    fs::remove_file(&dst)?;
    let down_discard = step(
        "grid download, stream only (large)",
        "grid-download-large-discard",
        with(json!({ "cap_file": path(&cap_file) })),
    )?;
    let caps_file = work.join("small.caps");
    let up_small = step(
        "grid upload (small files)",
        "grid-upload-small",
        with(
            json!({ "src_dir": path(&small), "files": o.files, "concurrency": o.concurrency, "caps_out": path(&caps_file) }),
        ),
    )?;
    let small_dst = work.join("small-dst");
    let down_small = step(
        "grid download (small files)",
        "grid-download-small",
        with(
            json!({ "caps_file": path(&caps_file), "dst_dir": path(&small_dst), "concurrency": o.concurrency }),
        ),
    )?;
    // Copy speed again: the best of two runs is the limit (load varies).
    let copy2 = step(
        "copy + fsync (large), again",
        "limit-copy-large",
        json!({ "src": path(&large), "dst": path(&copy_dst) }),
    )?;
    fs::remove_file(&copy_dst)?;

    let disk = copy1.mib_per_s().max(copy2.mib_per_s());
    let crypto = aead.mib_per_s();
    let large_limit = disk.min(crypto);
    let large_limit_name = if disk <= crypto {
        "copy+fsync"
    } else {
        "AES-GCM"
    };
    let mib = o.size_mib;
    let n = o.files;
    let kib = o.file_kib;
    let row = |name: String, m: Measured, unit, limit_name: &str, limit, ratio, rss| Row {
        name,
        measured: m,
        unit,
        limit_name: limit_name.to_string(),
        limit,
        target_ratio: ratio,
        target_rss_mib: rss,
    };
    let rows = vec![
        row(
            format!("upload, 1 × {mib} MiB"),
            up_large,
            Unit::MibPerS,
            large_limit_name,
            large_limit,
            Some(TARGET_RATIO),
            Some(TARGET_RSS_MIB),
        ),
        row(
            format!("download to file + fsync, 1 × {mib} MiB"),
            down_large,
            Unit::MibPerS,
            large_limit_name,
            large_limit,
            Some(TARGET_RATIO),
            Some(TARGET_RSS_MIB),
        ),
        row(
            format!("download, stream only, 1 × {mib} MiB"),
            down_discard,
            Unit::MibPerS,
            "AES-GCM",
            crypto,
            None,
            Some(TARGET_RSS_MIB),
        ),
        row(
            format!("upload, {n} × {kib} KiB ({} in flight)", o.concurrency),
            up_small,
            Unit::FilesPerS,
            "copy+fsync",
            copy_small.files_per_s(),
            None,
            None,
        ),
        row(
            format!("download to file + fsync, {n} × {kib} KiB"),
            down_small,
            Unit::FilesPerS,
            "copy+fsync",
            copy_small.files_per_s(),
            None,
            None,
        ),
    ];
    println!();
    print_table("Embedded grid, this machine, same run:", &rows);
    println!(
        "\nMachine limits: copy+fsync {:.0} / {:.0} MiB/s (two runs), small-file copy+fsync {:.0} files/s \
         ({} threads), AES-256-GCM {:.0} MiB/s, SHA-256 {:.0} MiB/s (1 core, in memory)",
        copy1.mib_per_s(),
        copy2.mib_per_s(),
        copy_small.files_per_s(),
        o.concurrency,
        crypto,
        sha.mib_per_s()
    );
    if let Some(path) = &o.json {
        let limits = json!({
            "copy_fsync_mib_per_s": [copy1.mib_per_s(), copy2.mib_per_s()],
            "small_copy_fsync_files_per_s": copy_small.files_per_s(),
            "aes256gcm_mib_per_s": crypto,
            "sha256_mib_per_s": sha.mib_per_s(),
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        });
        let doc = json!({
            "benchmark": "grid",
            "params": { "size_mib": o.size_mib, "files": o.files, "file_kib": o.file_kib, "concurrency": o.concurrency },
            "limits": limits,
            "results": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        });
        write_json(path, &doc)?;
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<[u8; 32]> {
    if s.len() != 64 {
        bail!("secret must be 64 hex digits");
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

fn open_grid(p: &Value) -> Result<EmbeddedGrid> {
    let root = p["grid"].as_str().context("grid")?;
    Ok(EmbeddedGrid::open(
        root,
        unhex(p["secret"].as_str().context("secret")?)?,
    )?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn arg<'a>(p: &'a Value, k: &str) -> Result<&'a str> {
    p[k].as_str()
        .with_context(|| format!("missing argument {k}"))
}

fn upload_large(p: &Value) -> Result<Timed> {
    let g = open_grid(p)?;
    let src = PathBuf::from(arg(p, "src")?);
    let size = fs::metadata(&src)?.len();
    let rt = runtime()?;
    let (seconds, cap) = timed(|| Ok(rt.block_on(g.upload(UploadSource::File(src)))?))?;
    fs::write(arg(p, "cap_out")?, cap.as_str())?;
    Ok(Timed {
        seconds,
        bytes: size,
        files: 1,
        extra: json!({}),
    })
}

fn read_cap(path: &str) -> Result<Capability> {
    Ok(Capability::parse(fs::read_to_string(path)?.trim())?)
}

/// Streams a download into `dst` on a blocking thread, then fsyncs it.
async fn download_to(g: &EmbeddedGrid, cap: &Capability, dst: PathBuf) -> Result<u64> {
    let dl = g.download(cap).await?;
    let handle = tokio::runtime::Handle::current();
    let mut stream = dl.stream;
    tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut f = File::create(&dst)?;
        let mut total = 0u64;
        while let Some(chunk) = handle.block_on(stream.next()) {
            let chunk = chunk?;
            f.write_all(&chunk)?;
            total += chunk.len() as u64;
        }
        f.sync_all()?;
        Ok(total)
    })
    .await?
}

fn download_large(p: &Value) -> Result<Timed> {
    let g = open_grid(p)?;
    let cap = read_cap(arg(p, "cap_file")?)?;
    let dst = PathBuf::from(arg(p, "dst")?);
    let rt = runtime()?;
    let (seconds, bytes) = timed(|| rt.block_on(download_to(&g, &cap, dst)))?;
    Ok(Timed {
        seconds,
        bytes,
        files: 1,
        extra: json!({}),
    })
}

fn download_large_discard(p: &Value) -> Result<Timed> {
    let g = open_grid(p)?;
    let cap = read_cap(arg(p, "cap_file")?)?;
    let rt = runtime()?;
    let (seconds, bytes) = timed(|| {
        rt.block_on(async {
            let mut s = g.download(&cap).await?.stream;
            let mut total = 0u64;
            while let Some(chunk) = s.next().await {
                total += chunk?.len() as u64;
            }
            Ok(total)
        })
    })?;
    Ok(Timed {
        seconds,
        bytes,
        files: 1,
        extra: json!({}),
    })
}

fn upload_small(p: &Value) -> Result<Timed> {
    let g = open_grid(p)?;
    let src = PathBuf::from(arg(p, "src_dir")?);
    let files = p["files"].as_u64().context("files")? as usize;
    let conc = p["concurrency"].as_u64().context("concurrency")? as usize;
    let rt = runtime()?;
    let (seconds, caps) = timed(|| {
        rt.block_on(async {
            let uploads = futures_util::stream::iter(0..files)
                .map(|i| {
                    let g = g.clone();
                    let path = small_path(&src, i);
                    async move { g.upload(UploadSource::File(path)).await.map(|c| (i, c)) }
                })
                .buffer_unordered(conc);
            let mut caps: Vec<(usize, Capability)> = Vec::with_capacity(files);
            let mut uploads = std::pin::pin!(uploads);
            while let Some(r) = uploads.next().await {
                caps.push(r?);
            }
            caps.sort_by_key(|(i, _)| *i);
            Ok(caps)
        })
    })?;
    let bytes: u64 = (0..files)
        .map(|i| {
            fs::metadata(small_path(&src, i))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    let text: String = caps.iter().map(|(_, c)| format!("{c}\n")).collect();
    fs::write(arg(p, "caps_out")?, text)?;
    Ok(Timed {
        seconds,
        bytes,
        files: files as u64,
        extra: json!({ "in_flight": conc }),
    })
}

fn download_small(p: &Value) -> Result<Timed> {
    let g = open_grid(p)?;
    let caps: Vec<Capability> = fs::read_to_string(arg(p, "caps_file")?)?
        .lines()
        .map(Capability::parse)
        .collect::<Result<_, _>>()?;
    let dst = PathBuf::from(arg(p, "dst_dir")?);
    make_small_dirs(&dst)?;
    let conc = p["concurrency"].as_u64().context("concurrency")? as usize;
    let rt = runtime()?;
    let n = caps.len();
    let (seconds, bytes) = timed(|| {
        rt.block_on(async {
            let downloads = futures_util::stream::iter(caps.into_iter().enumerate())
                .map(|(i, cap)| {
                    let g = g.clone();
                    let path = small_path(&dst, i);
                    async move {
                        let data = mf_grid::read_small(g.download(&cap).await?, 1 << 30).await?;
                        let len = data.len() as u64;
                        tokio::task::spawn_blocking(move || write_durably(&path, &data)).await??;
                        Ok::<u64, anyhow::Error>(len)
                    }
                })
                .buffer_unordered(conc);
            let mut downloads = std::pin::pin!(downloads);
            let mut total = 0;
            while let Some(r) = downloads.next().await {
                total += r?;
            }
            Ok(total)
        })
    })?;
    Ok(Timed {
        seconds,
        bytes,
        files: n as u64,
        extra: json!({ "in_flight": conc }),
    })
}
