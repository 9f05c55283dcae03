//! This machine's limits, measured in the same run as the benchmarks they
//! are compared with (load from other processes changes from minute to
//! minute, so figures from another day would mislead).
//!
//! * `limit-copy-large` — plain copy of one file with a 1 MiB buffer, then
//!   fsync: what any tool that stores a file durably must pay;
//! * `limit-copy-tree` — `cp -r` made durable: every file of a tree is read,
//!   written to a temporary file, fsynced, renamed, and its directory fsynced
//!   (the crash-safe pattern), with the same number of threads as the
//!   benchmark it is compared with (1 for the sync benchmark: `cp -r`);
//! * `limit-read-tree` — a raw read of every file of a tree, 1 thread;
//! * `limit-walk` — a plain directory walk with one `lstat` per entry, 1
//!   thread (what any scan of a tree must do);
//! * `limit-aead` — AES-256-GCM (`ring`'s, as the grid's) over 256 KiB
//!   chunks in memory;
//! * `limit-sha256` — SHA-256 over 256 KiB chunks in memory.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::phase::{timed, PhaseFn, Timed};

/// The phase bodies this module provides.
pub fn phase(name: &str) -> Option<PhaseFn> {
    Some(match name {
        "limit-copy-large" => copy_large,
        "limit-copy-tree" => copy_tree_durably,
        "limit-read-tree" => read_tree,
        "limit-walk" => walk,
        "limit-aead" => aead,
        "limit-sha256" => sha256,
        _ => return None,
    })
}

fn str_arg<'a>(p: &'a Value, k: &str) -> Result<&'a str> {
    p[k].as_str()
        .with_context(|| format!("missing argument {k}"))
}

fn u64_arg(p: &Value, k: &str) -> Result<u64> {
    p[k].as_u64()
        .with_context(|| format!("missing argument {k}"))
}

/// Where small file `i` lives under `dir` (spread over 100 directories).
pub fn small_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{:02}", i % 100)).join(format!("{i}.bin"))
}

/// Creates the 100 subdirectories [`small_path`] uses.
pub fn make_small_dirs(dir: &Path) -> Result<()> {
    for d in 0..100 {
        fs::create_dir_all(dir.join(format!("{d:02}")))?;
    }
    Ok(())
}

/// Writes `data` to `path` crash-safely: temporary file, fsync, rename,
/// fsync of the directory.
pub fn write_durably(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(path.parent().context("no parent")?)?.sync_all()?;
    Ok(())
}

fn copy_large(p: &Value) -> Result<Timed> {
    let (src, dst) = (str_arg(p, "src")?, str_arg(p, "dst")?);
    let (seconds, bytes) = timed(|| {
        let mut r = File::open(src)?;
        let mut w = File::create(dst)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])?;
            total += n as u64;
        }
        w.sync_all()?;
        Ok(total)
    })?;
    Ok(Timed {
        seconds,
        bytes,
        files: 1,
        extra: json!({}),
    })
}

/// Every regular file below `root`, as paths relative to it, sorted.
/// A sync program's own entries are skipped: its bookkeeping (ours:
/// `.magic-folder`; Syncthing's: the `.stfolder` marker and `.stversions`)
/// and the temporary files it may be writing (`.mf-tmp-*`,
/// `.syncthing.*.tmp`).
pub fn tree_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            if is_sync_bookkeeping(&name.to_string_lossy()) {
                continue;
            }
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(rel.join(&name));
            } else if ft.is_file() {
                out.push(rel.join(&name));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a directory entry belongs to a sync program, not to the user
/// (see [`tree_files`]).
fn is_sync_bookkeeping(name: &str) -> bool {
    matches!(name, ".magic-folder" | ".stfolder" | ".stversions")
        || name.starts_with(".mf-tmp-")
        || (name.starts_with(".syncthing.") && name.ends_with(".tmp"))
}

/// Copies every file of `files` (relative paths) from `src` to `dst`, with
/// `threads` threads; `durable` makes each copy crash-safe
/// ([`write_durably`]), otherwise it is a plain write (what a user's `cp -r`
/// does). Returns the bytes copied.
pub fn copy_files(
    src: &Path,
    dst: &Path,
    files: &[PathBuf],
    threads: usize,
    durable: bool,
) -> Result<u64> {
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    dirs.dedup();
    for d in dirs {
        fs::create_dir_all(dst.join(d))?;
    }
    let threads = threads.max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<u64> {
                    let mut total = 0;
                    for f in files.iter().skip(t).step_by(threads) {
                        let data = fs::read(src.join(f))?;
                        if durable {
                            write_durably(&dst.join(f), &data)?;
                        } else {
                            fs::write(dst.join(f), &data)?;
                        }
                        total += data.len() as u64;
                    }
                    Ok(total)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .sum::<Result<u64>>()
    })
}

fn copy_tree_durably(p: &Value) -> Result<Timed> {
    let src = PathBuf::from(str_arg(p, "src_dir")?);
    let dst = PathBuf::from(str_arg(p, "dst_dir")?);
    let threads = u64_arg(p, "threads")? as usize;
    let (seconds, (files, bytes)) = timed(|| {
        let files = tree_files(&src)?;
        let bytes = copy_files(&src, &dst, &files, threads, true)?;
        Ok((files.len(), bytes))
    })?;
    Ok(Timed {
        seconds,
        bytes,
        files: files as u64,
        extra: json!({ "threads": threads }),
    })
}

fn read_tree(p: &Value) -> Result<Timed> {
    let dir = PathBuf::from(str_arg(p, "dir")?);
    let (seconds, (files, bytes)) = timed(|| {
        let files = tree_files(&dir)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        for f in &files {
            let mut r = File::open(dir.join(f))?;
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
        Ok((files.len(), total))
    })?;
    Ok(Timed {
        seconds,
        bytes,
        files: files as u64,
        extra: json!({}),
    })
}

fn walk(p: &Value) -> Result<Timed> {
    let dir = PathBuf::from(str_arg(p, "dir")?);
    let (seconds, entries) = timed(|| {
        let mut entries = 0u64;
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d)? {
                let entry = entry?;
                // `DirEntry::metadata` is an lstat relative to the directory,
                // as a scan does it.
                let m = entry.metadata()?;
                std::hint::black_box(m.modified()?);
                entries += 1;
                if m.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
        Ok(entries)
    })?;
    Ok(Timed {
        seconds,
        bytes: 0,
        files: entries,
        extra: json!({}),
    })
}

fn aead(p: &Value) -> Result<Timed> {
    let total = u64_arg(p, "mib")? << 20;
    let cipher = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &[7u8; 32]).map_err(|_| anyhow::anyhow!("bad key"))?,
    );
    let mut buf = vec![0x5au8; 256 << 10];
    let (seconds, bytes) = timed(|| {
        let mut done = 0u64;
        let mut i = 0u64;
        while done < total {
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&i.to_be_bytes());
            let tag = cipher
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    &mut buf,
                )
                .map_err(|_| anyhow::anyhow!("encryption failed"))?;
            std::hint::black_box(tag.as_ref()[0]);
            done += buf.len() as u64;
            i += 1;
        }
        Ok(done)
    })?;
    Ok(Timed {
        seconds,
        bytes,
        files: 0,
        extra: json!({}),
    })
}

fn sha256(p: &Value) -> Result<Timed> {
    let total = u64_arg(p, "mib")? << 20;
    let buf = vec![0xa5u8; 256 << 10];
    let (seconds, bytes) = timed(|| {
        let mut h = Sha256::new();
        let mut done = 0u64;
        while done < total {
            h.update(&buf);
            done += buf.len() as u64;
        }
        std::hint::black_box(h.finalize());
        Ok(done)
    })?;
    Ok(Timed {
        seconds,
        bytes,
        files: 0,
        extra: json!({}),
    })
}
