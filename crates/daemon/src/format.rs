//! A folder's format: how its personal directories are laid out
//! ([`Layout`]), how it stores file contents ([`ContentFormat`]) and its
//! snapshots ([`Snapshots`]).
//!
//! Chosen at `create` and recorded in the collective's `@metadata`, so every
//! participant reads and writes the folder one way. 24.3 writes
//! `{"version":1}` there and never reads it; we add a key only for a choice
//! that is not 24.3's, and a joiner refuses a folder whose format it does
//! not know (it would write what the others cannot read).

use anyhow::Context;
use mf_grid::{read_small, CapKind, DirChildren, Grid};

use crate::chunked::ContentFormat;
use crate::pack::Snapshots;
use crate::personal::{Layout, METADATA_ENTRY};

/// The keys of the collective's `@metadata` this release knows.
const KNOWN_KEYS: [&str; 4] = ["version", "layout", "content", "snapshots"];

/// Largest collective `@metadata` document read.
const FOLDER_METADATA_LIMIT: u64 = 4096;

/// The `@metadata` document of every personal directory (24.3's).
pub const PERSONAL_METADATA: &[u8] = br#"{"version":1}"#;

/// What a folder's collective records about its format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FolderFormat {
    /// How personal directories are laid out.
    pub layout: Layout,
    /// How file contents are stored.
    pub content: ContentFormat,
    /// How snapshots are stored.
    pub snapshots: Snapshots,
}

impl FolderFormat {
    /// The format of a new folder of `layout`. Contents are chunked unless
    /// the folder is one a 24.3 participant could share (flat, on Tahoe):
    /// 24.3 reads a snapshot's content as one file and each snapshot as a
    /// directory of its own. Snapshots are packed in a sharded folder only
    /// ([`Snapshots::for_layout`]).
    pub fn new(layout: Layout, on_tahoe: bool) -> FolderFormat {
        let content = if on_tahoe && layout == Layout::Flat {
            ContentFormat::Whole
        } else {
            ContentFormat::Chunked
        };
        FolderFormat {
            layout,
            content,
            snapshots: Snapshots::for_layout(layout),
        }
    }

    /// The collective's `@metadata` document.
    pub fn to_metadata(self) -> Vec<u8> {
        let mut doc = serde_json::json!({ "version": 1 });
        if self.layout != Layout::Flat {
            doc["layout"] = self.layout.to_string().into();
        }
        if self.content != ContentFormat::Whole {
            doc["content"] = self.content.to_string().into();
        }
        if self.snapshots != Snapshots::Single {
            doc["snapshots"] = self.snapshots.to_string().into();
        }
        doc.to_string().into_bytes()
    }

    /// The format a collective's `@metadata` document records; a choice or
    /// a key this release does not know is an error that says so (a
    /// participant that ignored one would misread what the others write).
    pub fn from_metadata(bytes: &[u8]) -> Result<FolderFormat, String> {
        let doc: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("the folder's metadata is not JSON: {e}"))?;
        if let Some(key) = doc
            .as_object()
            .and_then(|o| o.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())))
        {
            return Err(format!(
                "the folder's format names {key:?}, which this release of magic-folder \
                 cannot read; upgrade to join it"
            ));
        }
        Ok(FolderFormat {
            layout: choice(&doc, "layout")?.unwrap_or_default(),
            content: choice(&doc, "content")?.unwrap_or_default(),
            snapshots: choice(&doc, "snapshots")?.unwrap_or_default(),
        })
    }

    /// Reads the format a collective records (no `@metadata`: 24.3's).
    pub async fn of_collective<G: Grid>(
        grid: &G,
        collective: &DirChildren,
    ) -> anyhow::Result<FolderFormat> {
        let Some(meta) = collective.get(METADATA_ENTRY) else {
            return Ok(FolderFormat::default());
        };
        if meta.cap.kind() != CapKind::ImmutableFile {
            anyhow::bail!("the folder's metadata is not a file");
        }
        let download = grid.download(&meta.cap).await?;
        let bytes = read_small(download, FOLDER_METADATA_LIMIT)
            .await
            .context("reading the folder's metadata")?;
        FolderFormat::from_metadata(&bytes).map_err(anyhow::Error::msg)
    }
}

/// The value of `key`, if the document has it.
fn choice<T: std::str::FromStr>(doc: &serde_json::Value, key: &str) -> Result<Option<T>, String> {
    match doc.get(key) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => s.parse().map(Some).map_err(|_| {
            format!(
                "the folder uses the {key} {s:?}, which this release of magic-folder \
                 cannot read; upgrade to join it"
            )
        }),
        Some(other) => Err(format!("the folder's metadata names a {key} {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collective_records_the_format_and_unknown_ones_are_refused() {
        for layout in [Layout::Flat, Layout::Sharded] {
            for content in [ContentFormat::Whole, ContentFormat::Chunked] {
                for snapshots in [Snapshots::Single, Snapshots::Packed] {
                    let format = FolderFormat {
                        layout,
                        content,
                        snapshots,
                    };
                    assert_eq!(
                        FolderFormat::from_metadata(&format.to_metadata()),
                        Ok(format)
                    );
                }
            }
        }
        // 24.3's own, with a space, and what 24.3 can share.
        assert_eq!(
            FolderFormat::from_metadata(br#"{"version": 1}"#),
            Ok(FolderFormat::default())
        );
        assert_eq!(
            FolderFormat::new(Layout::Flat, true).to_metadata(),
            br#"{"version":1}"#
        );
        assert_eq!(
            FolderFormat::new(Layout::Flat, false).content,
            ContentFormat::Chunked
        );
        assert_eq!(
            FolderFormat::new(Layout::Sharded, true).content,
            ContentFormat::Chunked
        );
        for on_tahoe in [true, false] {
            assert_eq!(
                FolderFormat::new(Layout::Sharded, on_tahoe).snapshots,
                Snapshots::Packed
            );
        }
        assert_eq!(
            FolderFormat::new(Layout::Flat, false).snapshots,
            Snapshots::Single
        );
        for doc in [
            &br#"{"version":1,"layout":"hamt"}"#[..],
            br#"{"version":1,"content":"rabin"}"#,
            br#"{"version":1,"snapshots":"zip"}"#,
            br#"{"version":1,"zip":"yes"}"#,
        ] {
            let err = FolderFormat::from_metadata(doc).unwrap_err();
            assert!(
                ["\"hamt\"", "\"rabin\"", "\"zip\""]
                    .iter()
                    .any(|name| err.contains(name)),
                "{err}"
            );
            assert!(err.contains("upgrade"), "{err}");
        }
        assert!(FolderFormat::from_metadata(b"not json").is_err());
        assert!(FolderFormat::from_metadata(br#"{"layout":3}"#).is_err());
    }
}
