//! Upkeep of an embedded grid beyond the [`Grid`](crate::Grid) trait: what
//! `verify --repair` and `gc` need.
//!
//! * **Repair.** Uploads are convergent and deduplicated by length, so
//!   uploading a file again never replaces a stored object whose bytes were
//!   flipped. [`EmbeddedGrid::repair`] reads the stored object through and
//!   writes it anew from a local file only if it is damaged and the file
//!   has the same content (same convergent key).
//! * **Collection.** Nothing here decides what is garbage: that needs the
//!   folders' snapshot graphs, which only their participants can read.
//!   [`EmbeddedGrid::stored_objects`] and [`EmbeddedGrid::mutable_names`]
//!   say what is stored, [`EmbeddedGrid::object_name`] /
//!   [`EmbeddedGrid::mutable_name`] which stored name a capability keeps,
//!   and [`EmbeddedGrid::collect`] removes named objects — only those not
//!   written or refreshed since a cutoff. Every upload that finds its object
//!   already stored refreshes it, so content a writer is about to reference
//!   again is spared however old it was (`store::refresh_object`,
//!   `Store::collect_object`).

use std::fs;
use std::io;
use std::time::SystemTime;

use super::caps::{self, EmbeddedCap};
use super::crypto::{self, ObjectKind, BASE32};
use super::immutable::{self, Existing, Stored};
use super::store::io_err;
use super::{blocking, wrong_kind, EmbeddedGrid};
use crate::{Capability, GridError, GridResult, UploadSource};

/// One stored immutable object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// Its stored name (the storage index in base32).
    pub name: String,
    /// Bytes on disk.
    pub len: u64,
    /// When it was last written or refreshed.
    pub modified: SystemTime,
}

/// What [`EmbeddedGrid::repair`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    /// The stored object is intact; nothing was written.
    Intact,
    /// The stored object was missing or damaged and was written anew.
    Rewritten,
    /// The local file has other content; nothing was written.
    OtherContent,
}

/// What [`EmbeddedGrid::collect`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Objects removed.
    pub removed: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Named objects kept because they were written or refreshed after the
    /// cutoff (or were already gone).
    pub spared: u64,
}

/// True for a name this grid could have given an object or directory (no
/// path separators, nothing but base32 of 32 bytes).
fn valid_name(name: &str) -> bool {
    name.len() == 52 && BASE32.decode(name.as_bytes()).is_ok_and(|b| b.len() == 32)
}

impl EmbeddedGrid {
    /// The stored name of the object behind an immutable file or directory
    /// capability (`None` for mutable directories and malformed caps).
    pub fn object_name(cap: &Capability) -> Option<String> {
        match caps::parse(cap).ok()? {
            EmbeddedCap::Immutable { key, .. } => {
                Some(BASE32.encode(&crypto::chk_storage_index(&key)))
            }
            _ => None,
        }
    }

    /// The stored name of the mutable directory a write or read capability
    /// names (`None` for immutable objects and malformed caps).
    pub fn mutable_name(cap: &Capability) -> Option<String> {
        match caps::parse(cap).ok()? {
            EmbeddedCap::DirWrite(keys) => Some(BASE32.encode(&keys.read.storage_index)),
            EmbeddedCap::DirRead(keys) => Some(BASE32.encode(&keys.storage_index)),
            EmbeddedCap::Immutable { .. } | EmbeddedCap::Literal(_) => None,
        }
    }

    /// Every immutable object stored in this grid, of every folder using it.
    pub async fn stored_objects(&self) -> GridResult<Vec<StoredObject>> {
        let root = self.inner.store.objects_root().to_path_buf();
        blocking("listing stored objects", move || {
            let ctx = || format!("listing {}", root.display());
            let mut out = Vec::new();
            for prefix in fs::read_dir(&root).map_err(io_err(ctx()))? {
                let prefix = prefix.map_err(io_err(ctx()))?;
                if !prefix.file_type().map_err(io_err(ctx()))?.is_dir() {
                    continue;
                }
                for entry in fs::read_dir(prefix.path()).map_err(io_err(ctx()))? {
                    let entry = entry.map_err(io_err(ctx()))?;
                    let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                        continue;
                    };
                    let meta = match entry.metadata() {
                        Ok(m) => m,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_err(ctx())(e)),
                    };
                    if valid_name(&name) && meta.is_file() {
                        out.push(StoredObject {
                            name,
                            len: meta.len(),
                            modified: meta.modified().map_err(io_err(ctx()))?,
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// The stored names of every mutable directory in this grid, of every
    /// folder using it.
    pub async fn mutable_names(&self) -> GridResult<Vec<String>> {
        let root = self.inner.store.mutable_root().to_path_buf();
        blocking("listing mutable directories", move || {
            let ctx = || format!("listing {}", root.display());
            let mut out = Vec::new();
            for entry in fs::read_dir(&root).map_err(io_err(ctx()))? {
                let entry = entry.map_err(io_err(ctx()))?;
                if let Some(name) = entry.file_name().to_str() {
                    if valid_name(name) {
                        out.push(name.to_owned());
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Checks the object behind the immutable file capability `cap` chunk
    /// by chunk and, if it is missing or damaged and `source` has its
    /// content, writes it anew from `source`.
    pub async fn repair(&self, source: UploadSource, cap: &Capability) -> GridResult<Repair> {
        let key = match caps::parse(cap)? {
            EmbeddedCap::Immutable {
                dir: false, key, ..
            } => key,
            // Nothing stored: the capability is the content.
            EmbeddedCap::Literal(_) => return Ok(Repair::Intact),
            _ => return Err(wrong_kind("an immutable file capability", cap)),
        };
        let (_, _, stored) = self
            .upload_kind(ObjectKind::File, source, Existing::Verify(key))
            .await?;
        Ok(match stored {
            Stored::Kept => Repair::Intact,
            Stored::Written => Repair::Rewritten,
            Stored::OtherContent => Repair::OtherContent,
        })
    }

    /// True if the object behind the immutable capability `cap` is stored
    /// and every chunk of it authenticates.
    pub async fn is_intact(&self, cap: &Capability) -> GridResult<bool> {
        let (dir, key, size) = match caps::parse(cap)? {
            EmbeddedCap::Immutable { dir, key, size } => (dir, key, size),
            EmbeddedCap::Literal(_) => return Ok(true),
            _ => return Err(wrong_kind("an immutable capability", cap)),
        };
        let kind = if dir {
            ObjectKind::Dir
        } else {
            ObjectKind::File
        };
        let inner = self.inner.clone();
        blocking("checking an object", move || {
            Ok(immutable::is_intact(&inner.store, &key, kind, size))
        })
        .await
    }

    /// Removes the named immutable objects that were neither written nor
    /// refreshed since `cutoff` (see the [module docs](self)).
    pub async fn collect(&self, names: Vec<String>, cutoff: SystemTime) -> GridResult<Collected> {
        if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
            return Err(GridError::Protocol(format!(
                "{bad:?} is not the name of a stored object"
            )));
        }
        let store = self.inner.store.clone();
        blocking("collecting objects", move || {
            let mut done = Collected::default();
            for name in names {
                let si: [u8; 32] = BASE32
                    .decode(name.as_bytes())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .expect("checked above");
                let path = store.object_path(&si);
                match store
                    .collect_object(&path, cutoff)
                    .map_err(io_err(format!("removing object {name}")))?
                {
                    Some(len) => {
                        done.removed += 1;
                        done.bytes += len;
                    }
                    None => done.spared += 1,
                }
            }
            Ok(done)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Grid;
    use std::time::Duration;

    fn age(path: &std::path::Path, by: Duration) {
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - by)
            .unwrap();
    }

    #[tokio::test]
    async fn collect_spares_what_was_written_or_found_again_since_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let grid = EmbeddedGrid::create(dir.path(), [7; 32]).unwrap();
        // Too large for a literal capability: each is a stored object.
        let up = |b: u8| {
            let content = vec![b; caps::LITERAL_MAX + 1];
            grid.upload(UploadSource::Bytes(content.into()))
        };
        let (old, found_again, fresh) = (
            up(b'o').await.unwrap(),
            up(b'a').await.unwrap(),
            up(b'n').await.unwrap(),
        );
        let day = Duration::from_secs(86_400);
        for cap in [&old, &found_again] {
            age(&grid.object_path(cap).unwrap(), 2 * day);
        }
        // A writer uploads the same content again: the object is refreshed.
        assert_eq!(up(b'a').await.unwrap(), found_again);
        let names = [&old, &found_again, &fresh]
            .map(|c| EmbeddedGrid::object_name(c).unwrap())
            .to_vec();
        let stored: Vec<String> = grid
            .stored_objects()
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        for n in &names {
            assert!(stored.contains(n));
        }
        let done = grid.collect(names, SystemTime::now() - day).await.unwrap();
        assert_eq!((done.removed, done.spared), (1, 2));
        assert!(matches!(
            grid.download(&old).await,
            Err(GridError::NotFound(_))
        ));
        for cap in [&found_again, &fresh] {
            assert!(grid.is_intact(cap).await.unwrap());
        }
        // An object collected is written anew by the next upload of its content.
        assert_eq!(up(b'o').await.unwrap(), old);
        assert!(grid.is_intact(&old).await.unwrap());
        assert!(grid
            .collect(vec!["../../etc".into()], SystemTime::now())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_tracked_upload_counts_both_passes_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let grid = EmbeddedGrid::create(dir.path().join("g"), [7; 32]).unwrap();
        let file = dir.path().join("f");
        fs::write(&file, vec![3u8; 700_000]).unwrap();
        let progress = crate::Progress::new();
        assert_eq!(progress.fraction(), 0.0);
        grid.upload(UploadSource::TrackedFile(file.clone(), progress.clone()))
            .await
            .unwrap();
        assert_eq!(progress.fraction(), 1.0);
        // Found already stored: only the first pass ran.
        let again = crate::Progress::new();
        grid.upload(UploadSource::TrackedFile(file, again.clone()))
            .await
            .unwrap();
        assert_eq!(again.fraction(), 0.5);
    }

    #[tokio::test]
    async fn repair_rewrites_a_damaged_object_from_a_file_with_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let grid = EmbeddedGrid::create(dir.path().join("g"), [7; 32]).unwrap();
        let file = dir.path().join("f");
        fs::write(&file, vec![9u8; 20_000]).unwrap();
        let cap = grid.upload(UploadSource::File(file.clone())).await.unwrap();
        assert_eq!(
            grid.repair(UploadSource::File(file.clone()), &cap)
                .await
                .unwrap(),
            Repair::Intact
        );
        let obj = grid.object_path(&cap).unwrap();
        let mut raw = fs::read(&obj).unwrap();
        let last = raw.len() - 20;
        raw[last] ^= 0x40;
        fs::write(&obj, &raw).unwrap();
        assert!(!grid.is_intact(&cap).await.unwrap());
        // Uploading again does not notice (same length): that is why repair exists.
        grid.upload(UploadSource::File(file.clone())).await.unwrap();
        assert!(!grid.is_intact(&cap).await.unwrap());
        let other = dir.path().join("other");
        fs::write(&other, vec![8u8; 20_000]).unwrap();
        assert_eq!(
            grid.repair(UploadSource::File(other), &cap).await.unwrap(),
            Repair::OtherContent
        );
        assert_eq!(
            grid.repair(UploadSource::File(file.clone()), &cap)
                .await
                .unwrap(),
            Repair::Rewritten
        );
        assert!(grid.is_intact(&cap).await.unwrap());
        fs::remove_file(&obj).unwrap();
        assert_eq!(
            grid.repair(UploadSource::File(file), &cap).await.unwrap(),
            Repair::Rewritten
        );
        assert!(grid.is_intact(&cap).await.unwrap());
    }
}
