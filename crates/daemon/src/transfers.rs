//! What a folder is transferring right now, and how far along: for status,
//! the web page and the event stream. A 2 GiB file is "40 % uploaded", not
//! "1 in flight" for half a minute.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mf_core::relpath::RelPath;
use mf_grid::Progress;

use crate::api::TransferInfo;

/// Transfers shown at most (the largest first): a bulk sync of thousands
/// of small files needs no list of them.
const SHOWN: usize = 20;

#[derive(Clone, Debug)]
struct Transfer {
    upload: bool,
    size: u64,
    progress: Progress,
}

/// The transfers of one folder. Cheap to clone; clones share the list.
#[derive(Clone, Debug, Default)]
pub struct Transfers(Arc<Mutex<BTreeMap<(String, bool), Transfer>>>);

/// Keeps a transfer listed until dropped.
pub struct Listed {
    transfers: Transfers,
    key: (String, bool),
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.transfers.lock().remove(&self.key);
    }
}

impl Transfers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, bool), Transfer>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists a transfer of `size` bytes of `path` until the guard drops;
    /// the grid (or the caller) counts into the progress.
    pub fn start(&self, path: &RelPath, upload: bool, size: u64) -> (Progress, Listed) {
        let progress = Progress::new();
        let key = (path.to_string(), upload);
        self.lock().insert(
            key.clone(),
            Transfer {
                upload,
                size,
                progress: progress.clone(),
            },
        );
        (
            progress,
            Listed {
                transfers: self.clone(),
                key,
            },
        )
    }

    /// The transfers now, the largest first.
    pub fn list(&self) -> Vec<TransferInfo> {
        let mut out: Vec<TransferInfo> = self
            .lock()
            .iter()
            .map(|((path, _), t)| TransferInfo {
                path: path.clone(),
                direction: if t.upload { "upload" } else { "download" }.to_owned(),
                bytes_total: t.size,
                bytes_done: (t.size as f64 * t.progress.fraction()) as u64,
            })
            .collect();
        out.sort_by(|a, b| {
            b.bytes_total
                .cmp(&a.bytes_total)
                .then_with(|| a.path.cmp(&b.path))
        });
        out.truncate(SHOWN);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_are_listed_while_they_run() {
        let t = Transfers::default();
        let (p, guard) = t.start(&RelPath::new("big.bin").unwrap(), false, 1000);
        p.set_total(1000);
        p.add(400);
        let l = t.list();
        assert_eq!((l[0].bytes_done, l[0].bytes_total), (400, 1000));
        assert_eq!(l[0].direction, "download");
        drop(guard);
        assert!(t.list().is_empty());
    }
}
