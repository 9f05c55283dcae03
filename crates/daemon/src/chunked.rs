//! Chunked content: a large file stored as fixed-size chunks, so that an
//! edit inside it costs one chunk on the grid instead of the whole file.
//!
//! A file large enough for its grid's [`Chunking`], in a folder whose
//! collective records [`ContentFormat::Chunked`], is stored as one immutable
//! file per chunk plus a *manifest* (the "chunk list" of status messages):
//! an immutable directory whose children are `000000`, `000001`, … (one per
//! chunk, in order), each edge carrying the chunk's size and the SHA-256 of
//! its plaintext. The snapshot's `content`
//! names the manifest, and the signed metadata gives the file's size, so a
//! manifest is read against what its author signed.
//!
//! The content of a chunked file is defined by its manifest's *digests*:
//! every chunk a reader downloads must hash to its digest, and a reader may
//! instead take a chunk from the file it already has when its bytes hash to
//! that digest. So an edit inside a large file downloads one chunk, and a
//! manifest whose capabilities and digests disagree is an integrity error,
//! never a file that differs between readers.
//!
//! Chunks are fixed-size (Syncthing's choice) rather than content-defined:
//! programs that edit large files in place (databases, disk images, media
//! tags) overwrite, which fixed chunks serve exactly; an insertion shifts
//! every later chunk and re-uploads the rest of the file.

use std::collections::BTreeMap;

use mf_grid::{CapKind, Capability, DirChildren, DirEntry};
use serde::{Deserialize, Serialize};

/// The smallest and largest chunk sizes a reader accepts (powers of two):
/// a chunk is held in memory whole while it is checked.
const MIN_CHUNK: u64 = 1 << 20;
const MAX_CHUNK: u64 = 16 << 20;

/// A writer picks the smallest chunk size that keeps a file within this
/// many chunks, so a manifest stays a small directory.
const TARGET_CHUNKS: u64 = 2048;

/// How a writer chunks on its grid: which files, in chunks of at least
/// what size. A reader takes any allowed size, so the choice is the
/// writer's alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunking {
    /// Files at least this large are chunked. Below it a whole-file
    /// re-upload is cheap, and one object beats a manifest and its chunks.
    pub from: u64,
    /// The smallest chunk a writer makes.
    pub min_chunk: u64,
}

impl Chunking {
    /// The embedded grid: an object is a file written and fsynced, cheap
    /// enough for small chunks, which keep up to 8 in flight per transfer
    /// within a few MiB. With 4 MiB chunks a 1 GiB file synced in 8.6 s
    /// instead of 6.4 s, and a daemon's RSS rose from ~37 to ~60 MiB
    /// (`mf-bench sync --only W2`, 2026-12-05).
    pub const EMBEDDED: Chunking = Chunking {
        from: 8 << 20,
        min_chunk: 1 << 20,
    };

    /// Tahoe-LAFS: each chunk is a request of its own, tens of milliseconds
    /// of the node's Python. With 1 MiB chunks a 64 MiB file took 4.3 s to
    /// sync on a local grid against 2.8 s whole; with 4 MiB chunks 3.2 s
    /// against 3.1 s, and a 1 KiB edit inside it still moved in 1.4 s
    /// (`mf-bench tahoe --only bigedit`, 2026-12-05).
    pub const TAHOE: Chunking = Chunking {
        from: 16 << 20,
        min_chunk: 4 << 20,
    };

    /// The chunk size for a file of `size` bytes.
    pub fn chunk_size(self, size: u64) -> u64 {
        size.div_ceil(TARGET_CHUNKS)
            .next_power_of_two()
            .clamp(self.min_chunk, MAX_CHUNK)
    }
}

/// How a folder stores file contents; recorded in the collective.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentFormat {
    /// One immutable file per version: magic-folder 24.3's.
    #[default]
    Whole,
    /// Large files as chunks under a manifest (this module).
    Chunked,
}

impl std::fmt::Display for ContentFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ContentFormat::Whole => "whole",
            ContentFormat::Chunked => "chunked",
        })
    }
}

impl std::str::FromStr for ContentFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<ContentFormat, String> {
        match s {
            "whole" => Ok(ContentFormat::Whole),
            "chunked" => Ok(ContentFormat::Chunked),
            other => Err(format!(
                "unknown content format {other:?} (whole or chunked)"
            )),
        }
    }
}

/// One chunk of a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Where it starts in the file.
    pub offset: u64,
    /// Its length in bytes (all but the last are the manifest's chunk size).
    pub size: u64,
    /// SHA-256 of its plaintext.
    pub digest: [u8; 32],
    /// The immutable file holding it.
    pub cap: Capability,
}

/// The SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

/// Up to `len` bytes of `file` from `offset`: fewer only where the file
/// ends.
pub fn read_at(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0; len];
    let mut n = 0;
    while n < len {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

fn chunk_name(index: usize) -> String {
    format!("{index:06}")
}

/// The manifest directory's children for `chunks`, in file order.
pub fn manifest_children(chunks: &[Chunk]) -> DirChildren {
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let metadata = serde_json::json!({
                "size": c.size,
                "sha256": data_encoding::HEXLOWER.encode(&c.digest),
            });
            (
                chunk_name(i),
                DirEntry {
                    cap: c.cap.clone(),
                    metadata,
                },
            )
        })
        .collect()
}

/// Reads a manifest of a file its author signed as `size` bytes long. Only
/// the one well-formed shape is accepted: chunks `000000`… in order, every
/// one an immutable file of the manifest's chunk size (a power of two
/// between 1 and 16 MiB) but the last, which holds the rest, each with a
/// digest.
pub fn parse_manifest(children: &DirChildren, size: u64) -> Result<Vec<Chunk>, String> {
    let first = children
        .get(&chunk_name(0))
        .ok_or("the manifest has no chunk 000000")?;
    let chunk = edge_size(&chunk_name(0), first)?;
    if !(chunk.is_power_of_two() && (MIN_CHUNK..=MAX_CHUNK).contains(&chunk)) {
        return Err(format!("the manifest's chunk size {chunk} is not allowed"));
    }
    if size == 0 {
        return Err("a chunked file of 0 bytes".into());
    }
    let count = size.div_ceil(chunk);
    if children.len() as u64 != count {
        return Err(format!(
            "the manifest has {} chunks where a file of {size} bytes in chunks of {chunk} has {count}",
            children.len()
        ));
    }
    let mut chunks = Vec::with_capacity(children.len());
    for (i, (name, entry)) in children.iter().enumerate() {
        let offset = i as u64 * chunk;
        if *name != chunk_name(i) {
            return Err(format!(
                "the manifest has an entry {name:?} where chunk {} belongs",
                chunk_name(i)
            ));
        }
        let expected = chunk.min(size - offset);
        let got = edge_size(name, entry)?;
        if got != expected {
            return Err(format!(
                "chunk {name} claims {got} bytes where {expected} belong"
            ));
        }
        if entry.cap.kind() != CapKind::ImmutableFile {
            return Err(format!("chunk {name} is not an immutable file"));
        }
        let digest = entry
            .metadata
            .get("sha256")
            .and_then(|d| d.as_str())
            .and_then(|d| data_encoding::HEXLOWER.decode(d.as_bytes()).ok())
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
            .ok_or_else(|| format!("chunk {name} has no SHA-256 digest"))?;
        chunks.push(Chunk {
            offset,
            size: expected,
            digest,
            cap: entry.cap.clone(),
        });
    }
    Ok(chunks)
}

fn edge_size(name: &str, entry: &DirEntry) -> Result<u64, String> {
    entry
        .metadata
        .get("size")
        .and_then(|s| s.as_u64())
        .filter(|&s| s > 0)
        .ok_or_else(|| format!("chunk {name} has no size"))
}

/// The capabilities of `chunks` by digest: what a writer may reuse instead
/// of uploading a chunk again.
pub fn by_digest(chunks: Vec<Chunk>) -> BTreeMap<[u8; 32], Capability> {
    chunks.into_iter().map(|c| (c.digest, c.cap)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(n: u8) -> Capability {
        Capability::parse(&format!(
            "URI:CHK:{}:{}:2:3:{}",
            "a".repeat(26),
            "b".repeat(52),
            1000 + u32::from(n)
        ))
        .unwrap()
    }

    fn manifest(sizes: &[u64]) -> DirChildren {
        let mut offset = 0;
        let chunks: Vec<Chunk> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let c = Chunk {
                    offset,
                    size,
                    digest: [i as u8; 32],
                    cap: cap(i as u8),
                };
                offset += size;
                c
            })
            .collect();
        manifest_children(&chunks)
    }

    #[test]
    fn chunk_sizes_keep_manifests_small() {
        for c in [Chunking::EMBEDDED, Chunking::TAHOE] {
            assert!(c.min_chunk.is_power_of_two() && c.min_chunk >= MIN_CHUNK);
            assert_eq!(c.chunk_size(c.from), c.min_chunk);
            assert_eq!(c.chunk_size(u64::MAX / 2), MAX_CHUNK);
        }
        assert_eq!(Chunking::EMBEDDED.chunk_size(1 << 30), 1 << 20);
        assert_eq!(Chunking::TAHOE.chunk_size(1 << 30), 4 << 20);
        assert_eq!(Chunking::EMBEDDED.chunk_size(32 << 30), 16 << 20);
    }

    #[test]
    fn a_manifest_round_trips() {
        let m = MIN_CHUNK;
        let children = manifest(&[m, m, 5]);
        let chunks = parse_manifest(&children, 2 * m + 5).unwrap();
        assert_eq!(chunks.len(), 3);
        assert_eq!((chunks[2].offset, chunks[2].size), (2 * m, 5));
        assert_eq!(chunks[1].digest, [1; 32]);
        assert_eq!(chunks[1].cap, cap(1));
    }

    #[test]
    fn malformed_manifests_are_refused() {
        let m = MIN_CHUNK;
        let refused = |children: &DirChildren, size: u64, why: &str| {
            let err = parse_manifest(children, size).unwrap_err();
            assert!(err.contains(why), "{err} (expected {why:?})");
        };
        // A signed size the chunks do not add up to, either way.
        refused(&manifest(&[m, m, 5]), 2 * m + 6, "claims 5 bytes");
        refused(&manifest(&[m, m, 5]), 3 * m + 5, "has 3 chunks");
        // Chunks that are not all of one allowed size.
        refused(&manifest(&[m, m / 2, 5]), m + m / 2 + 5, "has 3 chunks");
        refused(&manifest(&[3000, 3000, 5]), 6005, "not allowed");
        refused(&manifest(&[m, m - 1, m]), 3 * m - 1, "claims");
        // Gaps and strangers.
        let mut gap = manifest(&[m, m, 5]);
        let last = gap.remove("000002").unwrap();
        gap.insert("000003".into(), last);
        refused(&gap, 2 * m + 5, "where chunk 000002 belongs");
        let mut none = manifest(&[m]);
        none.clear();
        refused(&none, m, "no chunk 000000");
        // A chunk that is a directory, or has no digest.
        let mut dir = manifest(&[m, 5]);
        dir.get_mut("000001").unwrap().cap = Capability::parse(&format!(
            "URI:DIR2-CHK:{}:{}:2:3:100",
            "a".repeat(26),
            "b".repeat(52)
        ))
        .unwrap();
        refused(&dir, m + 5, "not an immutable file");
        let mut bare = manifest(&[m, 5]);
        bare.get_mut("000001").unwrap().metadata = serde_json::json!({ "size": 5 });
        refused(&bare, m + 5, "no SHA-256");
        refused(&manifest(&[m]), 0, "0 bytes");
    }
}
