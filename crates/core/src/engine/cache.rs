//! The in-memory cache of verified snapshots, bounded by its size in bytes.
//!
//! Paths in flight reuse their snapshots within moments, so the cache only
//! needs the recent ones; the store has every one. It is bounded by bytes,
//! not by count, because a snapshot's size varies a hundredfold: a small
//! file's content travels in its literal capability (on Tahoe up to 8 KiB
//! of data, 13 KB of text): the 16,384 snapshots a count-bounded cache kept
//! would be ~120 MB (syncing 10,000 such files took a daemon from 52 to
//! 115 MiB).

use std::collections::HashMap;

use crate::snapshot::{Cap, Content, SnapshotInfo};

/// The most the cache holds before it is dropped and refilled from the
/// store (a miss is one indexed read): ~5,000 snapshots of ordinary
/// capabilities, ~300 of the largest literal ones.
const CACHE_BYTES: usize = 4 << 20;

/// Verified snapshots by capability, at most [`CACHE_BYTES`] of them.
#[derive(Default)]
pub(super) struct SnapshotCache {
    map: HashMap<Cap, SnapshotInfo>,
    /// The [`footprint`] of every entry.
    bytes: usize,
}

impl SnapshotCache {
    pub(super) fn get(&self, cap: &Cap) -> Option<&SnapshotInfo> {
        self.map.get(cap)
    }

    /// Keeps `info`, first dropping everything if it would not fit.
    pub(super) fn insert(&mut self, info: SnapshotInfo) {
        if let Some(held) = self.map.get(&info.cap) {
            // Snapshots are immutable: the same capability, the same info,
            // unless the one held came from the store without its literal
            // content (`Content::kept`) and this one has it.
            if !held.content.is_by_reference() || info.content.is_by_reference() {
                return;
            }
            self.bytes -= footprint(held);
            self.map.remove(&info.cap);
        }
        let size = footprint(&info);
        if self.bytes + size > CACHE_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
        self.bytes += size;
        self.map.insert(info.cap.clone(), info);
    }

    /// Drops every entry and the room they took.
    pub(super) fn release(&mut self) {
        self.map = HashMap::new();
        self.bytes = 0;
    }
}

/// About what an entry takes on the heap: its strings (the capability
/// twice, as key and in the info), and a fixed part for the struct, its
/// hash-map slot and the allocations' headers.
fn footprint(info: &SnapshotInfo) -> usize {
    let content = match &info.content {
        Content::File { cap, .. } => cap.as_str().len(),
        Content::Dir | Content::Deleted => 0,
    };
    let strings = 2 * info.cap.as_str().len()
        + info.relpath.as_str().len()
        + info.author.len()
        + info.author_key.len()
        + info.parents.iter().map(|p| p.as_str().len()).sum::<usize>()
        + content;
    strings + std::mem::size_of::<(Cap, SnapshotInfo)>() + 8 * 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relpath::RelPath;

    fn info(i: usize, content_len: usize) -> SnapshotInfo {
        SnapshotInfo {
            cap: Cap::from(format!("URI:DIR2-CHK:{i:0>120}")),
            relpath: RelPath::new(&format!("dir/file-{i}")).unwrap(),
            author: "alice".into(),
            author_key: "k".repeat(44),
            parents: vec![Cap::from(format!("URI:DIR2-CHK:{:0>120}", i + 1))],
            content: Content::File {
                cap: Cap::from(format!("URI:LIT:{}", "a".repeat(content_len))),
                size: content_len as u64,
                executable: false,
            },
            mtime_s: 0,
            generation: 1,
        }
    }

    #[test]
    fn the_cache_stays_within_its_bytes_whatever_the_snapshots_size() {
        for content_len in [100, 13_116] {
            let mut cache = SnapshotCache::default();
            let mut heap = 0;
            for i in 0..20_000 {
                let info = info(i, content_len);
                cache.insert(info.clone());
                cache.insert(info.clone()); // Counted once.
                assert_eq!(cache.get(&info.cap), Some(&info));
                heap = heap.max(cache.bytes);
            }
            assert!(
                heap <= CACHE_BYTES,
                "{heap} bytes of {content_len}-byte caps"
            );
            let all: usize = cache.map.values().map(footprint).sum();
            assert_eq!(all, cache.bytes);
            cache.release();
            assert!(cache.map.is_empty() && cache.bytes == 0);
        }
    }

    /// One read from the store (a literal by reference) gives way to the
    /// whole snapshot, never the other way round.
    #[test]
    fn a_whole_snapshot_replaces_its_kept_form() {
        let whole = info(1, 8_000);
        let mut cache = SnapshotCache::default();
        cache.insert(whole.kept());
        cache.insert(whole.clone());
        assert_eq!(cache.get(&whole.cap), Some(&whole));
        cache.insert(whole.kept());
        assert_eq!(cache.get(&whole.cap), Some(&whole));
        assert_eq!(cache.bytes, footprint(&whole));
    }
}
