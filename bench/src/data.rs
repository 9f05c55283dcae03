//! Benchmark data: incompressible contents, flushing to disk, hashing.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Incompressible pseudo-random bytes (xorshift).
pub fn content(len: usize, seed: u64) -> Vec<u8> {
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

/// Writes `len` bytes of [`content`] to `path` in 1 MiB blocks, and fsyncs.
pub fn write_content(path: &Path, len: u64, seed: u64) -> Result<()> {
    let mut f = File::create(path)?;
    let mut left = len;
    let mut block = 0;
    while left > 0 {
        let n = left.min(1 << 20) as usize;
        f.write_all(&content(n, seed * 1_000_003 + block))?;
        left -= n as u64;
        block += 1;
    }
    f.sync_all()?;
    Ok(())
}

/// Flushes everything to disk so earlier writes do not slow the next phase.
pub fn settle() -> Result<()> {
    let status = Command::new("sync").status().context("running sync")?;
    if !status.success() {
        bail!("sync failed");
    }
    Ok(())
}

/// SHA-256 of a file's contents, streamed.
pub fn hash_file(path: &Path) -> Result<[u8; 32]> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// SHA-256 of bytes in memory.
pub fn hash_bytes(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The size of a small file in the benchmarks (W1, edits, deletions).
pub const SMALL: usize = 4096;

/// Expected files: relative path → (length, SHA-256).
pub type Expected = BTreeMap<PathBuf, (u64, [u8; 32])>;

/// Writes `n` files of [`SMALL`] bytes spread over `dirs` directories
/// (`dNNNN/fNNNNNN.bin`) under `root`; returns what was written.
pub fn write_small_tree(root: &Path, n: usize, dirs: usize, seed: u64) -> Result<Expected> {
    let mut expected = Expected::new();
    for d in 0..dirs {
        fs::create_dir_all(root.join(format!("d{d:04}")))?;
    }
    for i in 0..n {
        let rel = PathBuf::from(format!("d{:04}/f{i:06}.bin", i % dirs));
        let data = content(SMALL, seed * 10_000_000 + i as u64);
        fs::write(root.join(&rel), &data)?;
        expected.insert(rel, (data.len() as u64, hash_bytes(&data)));
    }
    Ok(expected)
}

/// Watches files arrive in a folder: cheap checks (directory listings, in
/// path order, stopping at the first directory still incomplete), then a
/// verification by hashing once everything is there.
pub struct Arrival {
    root: PathBuf,
    /// Directory → file name → (length, hash), for files not yet seen.
    pending: BTreeMap<PathBuf, BTreeMap<String, (u64, [u8; 32])>>,
    /// Everything, for the verification.
    all: Expected,
    /// When the last pending file was seen.
    complete_at: Option<Instant>,
}

impl Arrival {
    /// Expects `expected` under `root`.
    pub fn new(root: &Path, expected: &Expected) -> Arrival {
        let mut a = Arrival {
            root: root.to_path_buf(),
            pending: BTreeMap::new(),
            all: expected.clone(),
            complete_at: None,
        };
        for (rel, v) in expected {
            a.expect(rel, *v);
        }
        a
    }

    fn expect(&mut self, rel: &Path, v: (u64, [u8; 32])) {
        let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.pending.entry(dir).or_default().insert(name, v);
    }

    /// How many files were not seen yet (the check stops at the first
    /// directory still incomplete, so at most this many are missing).
    pub fn not_seen(&self) -> usize {
        self.pending.values().map(BTreeMap::len).sum()
    }

    /// `Some(when everything was there)` once every file is present with
    /// the expected contents.
    pub fn check(&mut self) -> Result<Option<Instant>> {
        while let Some(mut entry) = self.pending.first_entry() {
            let dir = self.root.join(entry.key());
            let Ok(rd) = fs::read_dir(&dir) else {
                return Ok(None);
            };
            let names = entry.get_mut();
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some((len, _)) = names.get(&name) {
                    if e.metadata().is_ok_and(|m| m.len() == *len) {
                        names.remove(&name);
                    }
                }
            }
            if !names.is_empty() {
                return Ok(None);
            }
            entry.remove();
        }
        let at = *self.complete_at.get_or_insert_with(Instant::now);
        // Everything is there: confirm the contents.
        let mut wrong = Vec::new();
        for (rel, (len, hash)) in &self.all {
            let ok = hash_file(&self.root.join(rel)).is_ok_and(|h| h == *hash);
            if !ok {
                wrong.push((rel.clone(), (*len, *hash)));
            }
        }
        if wrong.is_empty() {
            return Ok(Some(at));
        }
        self.complete_at = None;
        for (rel, v) in wrong {
            self.expect(&rel, v);
        }
        Ok(None)
    }
}
