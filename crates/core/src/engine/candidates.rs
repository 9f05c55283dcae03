//! The remote versions waiting to be considered, per path.
//!
//! A path almost always has one, so each path's are a small sorted vector,
//! and a path with none has no entry. A `BTreeSet` per path allocated a
//! node with room for eleven capabilities (~290 bytes) for each path of a
//! bulk: a reader catching up with 100,000 new files held ~29 MB of them.

use std::collections::BTreeMap;

use crate::relpath::RelPath;
use crate::snapshot::Cap;

/// Remote versions to consider, per path; a path's in capability order.
#[derive(Debug, Default)]
pub(super) struct Candidates(BTreeMap<RelPath, Vec<Cap>>);

impl Candidates {
    /// Adds `cap` to `path`'s versions (once). Takes them by value: a poll
    /// after a bulk adds one per new file, moved out of the listing.
    pub(super) fn add(&mut self, path: RelPath, cap: Cap) {
        match self.0.get_mut(&path) {
            None => {
                self.0.insert(path, vec![cap]);
            }
            Some(caps) => {
                if let Err(at) = caps.binary_search(&cap) {
                    caps.insert(at, cap);
                }
            }
        }
    }

    /// `path`'s versions, in capability order.
    pub(super) fn of(&self, path: &RelPath) -> &[Cap] {
        self.0.get(path).map_or(&[], Vec::as_slice)
    }

    /// True if `path` has a version to consider.
    pub(super) fn has(&self, path: &RelPath) -> bool {
        self.0.contains_key(path)
    }

    /// Drops `cap` from `path`'s versions.
    pub(super) fn remove(&mut self, path: &RelPath, cap: &Cap) {
        if let Some(caps) = self.0.get_mut(path) {
            caps.retain(|c| c != cap);
            if caps.is_empty() {
                self.0.remove(path);
            }
        }
    }

    /// The paths with a version to consider.
    pub(super) fn paths(&self) -> impl Iterator<Item = &RelPath> {
        self.0.keys()
    }

    /// How many paths have a version to consider.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// True if no path has one.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
