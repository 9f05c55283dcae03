//! The snapshot model: one immutable, signed version of one path.
//!
//! On the grid a snapshot is an immutable directory with two children, the
//! format of magic-folder 24.3 (so Python peers can read ours):
//!
//! * `content` → the file's immutable capability; for a deletion or a
//!   directory, an entry without a capability (24.3's deletion; snapshots
//!   of earlier releases have no `content`, which reads the same);
//! * `metadata` → an immutable JSON document ([`SnapshotMetadata`]); the edge
//!   to it carries `{"magic_folder": {"author_signature": <base64>}}`.
//!
//! The signature is Ed25519 over the UTF-8 string
//! `"magic-folder-snapshot-v1\n" + content_cap + "\n" + metadata_cap + "\n" + relpath + "\n"`
//! (content cap empty for deletions and directories).
//!
//! Our additions, which a 24.3 peer ignores: `"directory": true` marks a
//! directory snapshot (so empty directories sync), and `"size"` records the
//! content size. A 24.3 peer would read a directory's snapshot as a
//! deletion, so directories are published where it does not look (the
//! daemon's `Executor::publish`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use data_encoding::BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::relpath::{PathError, RelPath};

/// A grid capability as the engine sees it: an opaque string that names an
/// object. (The grid crate parses and classifies them; the engine only
/// compares and stores them.)
///
/// Its text is shared, not copied, by its clones: a snapshot's capability
/// sits in several tables at once (the remote versions to consider, the
/// fetches under way, the snapshot cache, the current versions), and at
/// ~110 characters it is larger than anything else a path holds.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Cap(Arc<str>);

/// How literal capabilities begin: Tahoe's and the embedded grid's. A
/// literal's content is the capability itself, so no object is stored for it.
const LITERAL_PREFIXES: [&str; 2] = ["URI:LIT:", "URI:MF-LIT:"];

/// How a literal content kept by reference begins (see [`Content::kept`]):
/// not a capability, so a grid refuses to read one.
const LITERAL_REF_PREFIX: &str = "literal-sha256:";

impl Cap {
    /// The capability string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A copy that shares no memory with this one (see
    /// [`RelPath::relocated`]).
    pub fn relocated(&self) -> Cap {
        Cap(Arc::from(&*self.0))
    }

    /// The capability string, shared rather than copied (a literal one
    /// holds its object: up to 8 KiB on Tahoe).
    pub fn shared_text(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }

    /// True for a literal capability: the object's bytes are in the string.
    pub fn is_literal(&self) -> bool {
        LITERAL_PREFIXES.iter().any(|p| self.0.starts_with(p))
    }

    /// True for a literal kept by reference (see [`Content::kept`]), whose
    /// bytes must be read from its snapshot again.
    pub fn is_literal_ref(&self) -> bool {
        self.0.starts_with(LITERAL_REF_PREFIX)
    }

    /// What a store keeps of this capability: a literal as its reference
    /// (the SHA-256 of the capability, so equal literals have equal
    /// references), anything else as it is.
    pub fn kept(&self) -> Cap {
        if !self.is_literal() {
            return self.clone();
        }
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.0.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Cap::from(format!("{LITERAL_REF_PREFIX}{hex}"))
    }
}

impl fmt::Debug for Cap {
    /// Shows only a short tail: enough to tell caps apart in a trace, not enough to use one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail: String = self
            .0
            .chars()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        write!(f, "…{tail}")
    }
}

impl From<&str> for Cap {
    fn from(s: &str) -> Cap {
        Cap(s.into())
    }
}

/// A capability string shared with its other holders (the grid crate's
/// `Capability::shared_text`).
impl From<Arc<str>> for Cap {
    fn from(s: Arc<str>) -> Cap {
        Cap(s)
    }
}

impl From<String> for Cap {
    fn from(s: String) -> Cap {
        Cap(s.into())
    }
}

impl From<Cap> for String {
    fn from(cap: Cap) -> String {
        cap.0.to_string()
    }
}

/// What a snapshot says is at its path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// A regular file with this content capability and size.
    File {
        /// The immutable file capability of the content.
        cap: Cap,
        /// Size in bytes.
        size: u64,
        /// The owner's execute bit was set (scripts stay runnable).
        executable: bool,
    },
    /// A directory (possibly empty).
    Dir,
    /// The path was deleted.
    Deleted,
}

impl Content {
    /// True for a deletion.
    pub fn is_deleted(&self) -> bool {
        matches!(self, Content::Deleted)
    }

    /// What a store keeps of this content: a file whose content is a
    /// literal capability keeps only its reference ([`Cap::kept`]). On
    /// Tahoe a literal holds up to 8 KiB of a small file's bytes as 13 KB
    /// of text, and the state database would otherwise hold every version
    /// of every small file whole. The engine reads the snapshot again in
    /// the rare case it must write such a version that its cache forgot.
    pub fn kept(&self) -> Content {
        match self {
            Content::File {
                cap,
                size,
                executable,
            } => Content::File {
                cap: cap.kept(),
                size: *size,
                executable: *executable,
            },
            other => other.clone(),
        }
    }

    /// True if this content was kept by reference: to write it, its
    /// snapshot must be read again.
    pub fn is_by_reference(&self) -> bool {
        matches!(self, Content::File { cap, .. } if cap.is_literal_ref())
    }
}

/// Everything the engine needs to know about a snapshot, verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The snapshot's own capability (its immutable directory).
    pub cap: Cap,
    /// The path it is a version of.
    pub relpath: RelPath,
    /// The author's participant name.
    pub author: String,
    /// The author's Ed25519 verifying key, base64.
    pub author_key: String,
    /// Parent snapshots: none for a new path, one for an edit, several for a merge.
    pub parents: Vec<Cap>,
    /// What the snapshot holds.
    pub content: Content,
    /// The author's modification time, seconds since the Unix epoch.
    pub mtime_s: i64,
    /// The generation its author *claims*: one more than the greatest among
    /// the parents, 1 without parents (0: no claim, e.g. a 24.3 peer's
    /// snapshot). The engine ranks by the generation the parents prove and
    /// rejects a snapshot whose claim disagrees (`engine/rank.rs`).
    pub generation: u64,
}

impl SnapshotInfo {
    /// What a store keeps of this snapshot: all of it but a literal
    /// content, kept by reference ([`Content::kept`]).
    pub fn kept(&self) -> SnapshotInfo {
        SnapshotInfo {
            content: self.content.kept(),
            ..self.clone()
        }
    }
}

/// The metadata JSON document, field for field as magic-folder 24.3 writes it,
/// plus our optional additions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMetadata {
    /// Always 1.
    pub snapshot_version: u32,
    /// The path, `/`-separated.
    pub relpath: String,
    /// Who wrote it.
    pub author: AuthorJson,
    /// Modification time, integer seconds.
    pub modification_time: i64,
    /// Parent snapshot capabilities.
    pub parents: Vec<String>,
    /// Our addition: this snapshot is a directory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub directory: bool,
    /// Our addition: content size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Our addition: the file is executable (omitted when not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
    /// Our addition: the snapshot's generation (see [`SnapshotInfo::generation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Our addition: random for each upload attempt, so that a retry never
    /// uploads the bytes of an interrupted attempt (a Tahoe storage server
    /// holds those for up to 30 minutes and refuses them meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// The `author` object of the metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorJson {
    /// Participant name.
    pub name: String,
    /// Ed25519 verifying key, base64.
    pub verify_key: String,
}

/// Why a remote snapshot was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The metadata is not the JSON we expect.
    #[error("malformed snapshot metadata: {0}")]
    Malformed(String),
    /// A `snapshot_version` we do not understand.
    #[error("unsupported snapshot version {0}")]
    Version(u32),
    /// The relpath inside is unsafe.
    #[error("unsafe path in snapshot: {0}")]
    Path(#[from] PathError),
    /// The signature does not verify against the author's key.
    #[error("bad signature on snapshot of {0:?}")]
    BadSignature(String),
    /// The snapshot claims a different path than the entry that named it.
    #[error("snapshot is for {found:?} but was listed as {listed:?}")]
    WrongPath {
        /// Path of the personal-directory entry.
        listed: String,
        /// Path inside the snapshot.
        found: String,
    },
}

/// The exact message an author signs.
pub fn signing_message(content_cap: Option<&str>, metadata_cap: &str, relpath: &str) -> String {
    format!(
        "magic-folder-snapshot-v1\n{}\n{metadata_cap}\n{relpath}\n",
        content_cap.unwrap_or("")
    )
}

/// A participant's signing identity.
#[derive(Clone)]
pub struct Author {
    /// Participant name.
    pub name: String,
    key: SigningKey,
}

impl fmt::Debug for Author {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Author({})", self.name)
    }
}

impl Author {
    /// An author from a name and a 32-byte secret seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Author {
        Author {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The secret seed (to store in the owner-only config).
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The verifying key, base64.
    pub fn verify_key(&self) -> String {
        BASE64.encode(self.key.verifying_key().as_bytes())
    }

    /// Builds the metadata document for a new snapshot.
    pub fn metadata(
        &self,
        relpath: &RelPath,
        content: &Content,
        parents: &[Cap],
        mtime_s: i64,
        generation: u64,
    ) -> SnapshotMetadata {
        SnapshotMetadata {
            snapshot_version: 1,
            relpath: relpath.as_str().to_owned(),
            author: AuthorJson {
                name: self.name.clone(),
                verify_key: self.verify_key(),
            },
            modification_time: mtime_s,
            parents: parents.iter().map(|c| c.as_str().to_owned()).collect(),
            directory: matches!(content, Content::Dir),
            size: match content {
                Content::File { size, .. } => Some(*size),
                _ => None,
            },
            executable: matches!(
                content,
                Content::File {
                    executable: true,
                    ..
                }
            ),
            // 0 is "nothing proven" (a parent could not be read): no claim.
            generation: (generation > 0).then_some(generation),
            nonce: None,
        }
    }

    /// Signs a snapshot; returns the base64 signature for the metadata edge.
    pub fn sign(&self, content_cap: Option<&str>, metadata_cap: &str, relpath: &RelPath) -> String {
        let msg = signing_message(content_cap, metadata_cap, relpath.as_str());
        BASE64.encode(&self.key.sign(msg.as_bytes()).to_bytes())
    }
}

impl SnapshotMetadata {
    /// Serialises to the JSON stored on the grid.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("metadata always serialises")
    }
}

/// The JSON metadata on the edge to a snapshot's `metadata` child.
pub fn signature_edge_metadata(signature: &str) -> serde_json::Value {
    serde_json::json!({ "magic_folder": { "author_signature": signature } })
}

/// Extracts the signature from a `metadata` edge's metadata.
pub fn signature_from_edge(edge: &serde_json::Value) -> Option<&str> {
    edge.get("magic_folder")?.get("author_signature")?.as_str()
}

/// Parses and verifies a downloaded snapshot. `listed_as` is the path of the
/// personal-directory entry that led here, when known: a snapshot filed under
/// another path is rejected, so a participant cannot redirect a write.
pub fn verify_snapshot(
    cap: Cap,
    content_cap: Option<Cap>,
    metadata_cap: &str,
    metadata_json: &[u8],
    signature_b64: &str,
    listed_as: Option<&RelPath>,
) -> Result<SnapshotInfo, SnapshotError> {
    let md: SnapshotMetadata = serde_json::from_slice(metadata_json)
        .map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    if md.snapshot_version != 1 {
        return Err(SnapshotError::Version(md.snapshot_version));
    }
    let relpath = RelPath::new(&md.relpath)?;
    // The author's name becomes part of file names (a conflict copy is
    // `<path>.conflict-<author>`): held to the participant-name rules, so it
    // can never hold `/`, `..` or a `.` that would hide a copy's nature.
    crate::relpath::check_participant_name(&md.author.name)
        .map_err(|why| SnapshotError::Malformed(format!("author: {why}")))?;
    if let Some(listed) = listed_as {
        if *listed != relpath {
            return Err(SnapshotError::WrongPath {
                listed: listed.to_string(),
                found: relpath.to_string(),
            });
        }
    }
    let bad_sig = || SnapshotError::BadSignature(md.relpath.clone());
    let key_bytes: [u8; 32] = BASE64
        .decode(md.author.verify_key.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad_sig)?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| bad_sig())?;
    let sig_bytes: [u8; 64] = BASE64
        .decode(signature_b64.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad_sig)?;
    let msg = signing_message(
        content_cap.as_ref().map(|c| c.as_str()),
        metadata_cap,
        &md.relpath,
    );
    key.verify(msg.as_bytes(), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| bad_sig())?;
    let content = match (content_cap, md.directory) {
        (Some(cap), false) => Content::File {
            cap,
            size: md.size.unwrap_or(0),
            executable: md.executable,
        },
        (None, true) => Content::Dir,
        (None, false) => Content::Deleted,
        (Some(_), true) => {
            return Err(SnapshotError::Malformed(
                "directory snapshot with content".into(),
            ))
        }
    };
    Ok(SnapshotInfo {
        cap,
        relpath,
        author: md.author.name,
        author_key: md.author.verify_key,
        parents: md.parents.into_iter().map(Cap::from).collect(),
        content,
        mtime_s: md.modification_time,
        generation: md.generation.unwrap_or(0),
    })
}

/// The name of a path's entry in a personal directory: the mangled path,
/// whatever the snapshot holds (a directory is told apart by its metadata, so
/// a path that turns from directory into file keeps one entry).
pub fn entry_name(relpath: &RelPath) -> String {
    relpath.mangle()
}

/// The name under which a participant publishes a version of `relpath` that
/// lost a conflict and is kept as a conflict copy: `<mangled path>@c<author>`.
/// Publishing losers is what lets every participant keep the same copies,
/// even one that never saw the losing version while it was current.
/// (`@c` cannot occur in a mangled path, where `@` is always followed by `@`
/// or `_`.)
pub fn conflict_entry_name(relpath: &RelPath, author: &str) -> String {
    format!("{}@c{author}", relpath.mangle())
}

/// Decodes a personal-directory entry name into a checked path, plus the
/// author for a conflict entry. `@metadata` (the directory's own metadata
/// entry) yields `None`.
pub fn parse_entry_name(name: &str) -> Option<Result<(RelPath, Option<String>), PathError>> {
    if name == "@metadata" {
        return None;
    }
    // Find an unescaped "@c": scan pairs so "@@c" stays a literal "@c".
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'@' {
            match bytes.get(i + 1) {
                Some(b'c') => {
                    let author = &name[i + 2..];
                    return Some(RelPath::unmangle(&name[..i]).and_then(|p| {
                        crate::relpath::check_participant_name(author)
                            .map_err(|_| PathError::BadMangling(name.to_owned()))?;
                        Ok((p, Some(author.to_owned())))
                    }));
                }
                _ => i += 2,
            }
        } else {
            i += 1;
        }
    }
    Some(RelPath::unmangle(name).map(|p| (p, None)))
}

/// A participant's personal directory as the engine receives it:
/// entry name → (path, snapshot).
pub type Listing = BTreeMap<String, (RelPath, Cap)>;

/// The most hashed shards a sharded personal directory has: filing a
/// change rewrites one of them and the root's ≤ 257 links, so its cost
/// stays flat up to a few hundred thousand files (a 100,000-file folder has
/// shards of ~400 entries, ~100 KB).
pub const SHARDS: usize = 256;

/// A shard of a sharded personal directory: the entries whose name's
/// SHA-256 begins with one hex digit (16 shards, while that part of the
/// folder is small) or two (256) — or, with no digit, [`ShardId::RECENT`].
/// Hashing spreads entries evenly whatever the folder's shape, and lets
/// every reader check that a shard holds only its own entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId {
    /// 1 or 2 hex digits.
    digits: u8,
    prefix: u8,
}

impl ShardId {
    /// The shard of recent changes, which holds entries of any name: a
    /// publish files its entries there, so a burst of changes rewrites one
    /// shard per publish, and moves them into their hashed shards once
    /// there are many. An entry there is newer than the same entry in its
    /// hashed shard.
    pub const RECENT: ShardId = ShardId {
        digits: 0,
        prefix: 0,
    };

    /// The shard of `digits` (0, 1 or 2) hex digits that holds `name`.
    pub fn of(name: &str, digits: u8) -> ShardId {
        use sha2::{Digest, Sha256};
        if digits == 0 {
            return ShardId::RECENT;
        }
        let byte = Sha256::digest(name.as_bytes())[0];
        match digits {
            1 => ShardId {
                digits,
                prefix: byte >> 4,
            },
            _ => ShardId {
                digits: 2,
                prefix: byte,
            },
        }
    }

    /// How many hex digits name this shard (0 for [`ShardId::RECENT`], 1 or 2).
    pub fn digits(self) -> u8 {
        self.digits
    }

    /// True if `name` belongs in this shard.
    pub fn holds(self, name: &str) -> bool {
        ShardId::of(name, self.digits) == self
    }

    /// The one-digit shard this two-digit shard was split from.
    pub fn parent(self) -> Option<ShardId> {
        (self.digits == 2).then_some(ShardId {
            digits: 1,
            prefix: self.prefix >> 4,
        })
    }

    /// The shard named by 1 or 2 lowercase hex digits, or `recent`.
    pub fn parse(hex: &str) -> Option<ShardId> {
        if hex == "recent" {
            return Some(ShardId::RECENT);
        }
        let digits = u8::try_from(hex.len())
            .ok()
            .filter(|d| (1..=2).contains(d))?;
        if hex.bytes().any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let prefix = u8::from_str_radix(hex, 16).ok()?;
        Some(ShardId { digits, prefix })
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.digits {
            0 => f.write_str("recent"),
            1 => write!(f, "{:x}", self.prefix),
            _ => write!(f, "{:02x}", self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author() -> Author {
        Author::from_seed("alice", [7; 32])
    }

    #[test]
    fn a_cap_is_its_plain_string_on_the_wire_and_its_clones_share_it() {
        let cap = Cap::from("URI:CHK:a:b:2:3:9");
        assert_eq!(
            serde_json::to_string(&cap).unwrap(),
            r#""URI:CHK:a:b:2:3:9""#
        );
        assert_eq!(
            serde_json::from_str::<Cap>(r#""URI:CHK:a:b:2:3:9""#).unwrap(),
            cap
        );
        assert_eq!(cap.clone().as_str().as_ptr(), cap.as_str().as_ptr());
        assert!(Arc::ptr_eq(&cap.clone().shared_text(), &cap.shared_text()));
        let moved = cap.relocated();
        assert_eq!(moved, cap);
        assert!(!Arc::ptr_eq(&moved.shared_text(), &cap.shared_text()));
    }

    #[test]
    fn a_literal_is_kept_by_a_reference_that_tells_literals_apart() {
        let file = |cap: &str| Content::File {
            cap: Cap::from(cap),
            size: 5,
            executable: true,
        };
        for literal in ["URI:LIT:nbswy3dp", "URI:MF-LIT:nbswy3dp"] {
            let kept = file(literal).kept();
            assert!(kept.is_by_reference(), "{kept:?}");
            assert!(!file(literal).is_by_reference());
            assert_eq!(
                kept,
                file(literal).kept(),
                "the same literal, the same reference"
            );
            assert_ne!(kept, file(&format!("{literal}aa")).kept());
            let Content::File { cap, .. } = &kept else {
                unreachable!()
            };
            assert!(!cap.is_literal() && cap.kept() == *cap, "kept once is kept");
        }
        assert_ne!(
            file("URI:LIT:nbswy3dp").kept(),
            file("URI:MF-LIT:nbswy3dp").kept()
        );
        // Other capabilities and contents are kept as they are.
        let chk = file("URI:CHK:aaaa:bbbb:2:3:5");
        assert_eq!(chk.kept(), chk);
        assert_eq!(Content::Deleted.kept(), Content::Deleted);
        assert_eq!(Content::Dir.kept(), Content::Dir);
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // Fixed forever: every participant must agree where an entry lives.
        assert_eq!(ShardId::of("a", 2).to_string(), "ca");
        assert_eq!(ShardId::of("a", 1).to_string(), "c");
        assert_eq!(ShardId::of("a", 2).parent(), Some(ShardId::of("a", 1)));
        assert_eq!(ShardId::of("a", 1).parent(), None);
        let mut used = std::collections::BTreeSet::new();
        for i in 0..4096 {
            let name = format!("dir@_file-{i}");
            let id = ShardId::of(&name, 2);
            assert!(id.holds(&name) && id.parent().unwrap().holds(&name));
            used.insert(id);
        }
        assert_eq!(used.len(), SHARDS);
    }

    #[test]
    fn shard_ids_round_trip_and_nothing_else_parses() {
        for name in ["x", "dir@_file-3"] {
            for digits in [0, 1, 2] {
                let id = ShardId::of(name, digits);
                assert_eq!(ShardId::parse(&id.to_string()), Some(id));
                assert!(id.holds(name));
            }
        }
        assert_eq!(ShardId::of("x", 0), ShardId::RECENT);
        for hex in ["", "3F", "3f0", "zz", "+f", "-1", " 1", "Recent"] {
            assert_eq!(ShardId::parse(hex), None, "{hex:?}");
        }
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let a = author();
        let p = RelPath::new("docs/a.txt").unwrap();
        let content = Content::File {
            cap: Cap::from("URI:MF-CHK:x"),
            size: 5,
            executable: true,
        };
        let md = a.metadata(
            &p,
            &content,
            &[Cap::from("URI:MF-DIR-CHK:p")],
            1_700_000_000,
            4,
        );
        let json = md.to_json();
        let sig = a.sign(Some("URI:MF-CHK:x"), "URI:MF-CHK:m", &p);
        let info = verify_snapshot(
            Cap::from("URI:MF-DIR-CHK:s"),
            Some(Cap::from("URI:MF-CHK:x")),
            "URI:MF-CHK:m",
            &json,
            &sig,
            Some(&p),
        )
        .unwrap();
        assert_eq!(info.author, "alice");
        assert_eq!(info.content, content);
        assert_eq!(info.parents, vec![Cap::from("URI:MF-DIR-CHK:p")]);
        assert_eq!(info.generation, 4);
    }

    #[test]
    fn tampering_is_rejected() {
        let a = author();
        let p = RelPath::new("a").unwrap();
        let md = a.metadata(&p, &Content::Deleted, &[], 1, 1).to_json();
        let sig = a.sign(None, "URI:MF-CHK:m", &p);
        let verify = |content: Option<&str>, mcap: &str, json: &[u8], sig: &str| {
            verify_snapshot(
                Cap::from("s"),
                content.map(Cap::from),
                mcap,
                json,
                sig,
                Some(&p),
            )
        };
        assert!(verify(None, "URI:MF-CHK:m", &md, &sig).is_ok());
        assert!(matches!(
            verify(Some("URI:MF-CHK:evil"), "URI:MF-CHK:m", &md, &sig),
            Err(SnapshotError::BadSignature(_))
        ));
        assert!(matches!(
            verify(None, "URI:MF-CHK:other", &md, &sig),
            Err(SnapshotError::BadSignature(_))
        ));
        assert!(matches!(
            verify(None, "URI:MF-CHK:m", &md, "AAAA"),
            Err(SnapshotError::BadSignature(_))
        ));
        assert!(matches!(
            verify(None, "URI:MF-CHK:m", b"{nope", &sig),
            Err(SnapshotError::Malformed(_))
        ));
        // A snapshot listed under another path is refused.
        let other = RelPath::new("b").unwrap();
        let r = verify_snapshot(
            Cap::from("s"),
            None,
            "URI:MF-CHK:m",
            &md,
            &sig,
            Some(&other),
        );
        assert!(matches!(r, Err(SnapshotError::WrongPath { .. })));
    }

    #[test]
    fn unsafe_relpath_in_metadata_is_rejected() {
        let a = author();
        let mut md = a.metadata(&RelPath::new("a").unwrap(), &Content::Deleted, &[], 1, 1);
        md.relpath = "../../etc/passwd".into();
        let json = md.to_json();
        let msg = signing_message(None, "m", "../../etc/passwd");
        let sig = BASE64.encode(&a.key.sign(msg.as_bytes()).to_bytes());
        let r = verify_snapshot(Cap::from("s"), None, "m", &json, &sig, None);
        assert!(matches!(r, Err(SnapshotError::Path(_))));
    }

    /// A signed snapshot whose author name could escape the folder, or hide
    /// a conflict copy's nature, once it names a copy is refused.
    #[test]
    fn unsafe_author_names_are_rejected() {
        let a = author();
        for name in ["../../x", "a/b", "a.b", "", "x".repeat(65).as_str()] {
            let mut md = a.metadata(&RelPath::new("a").unwrap(), &Content::Deleted, &[], 1, 1);
            md.author.name = name.to_owned();
            let msg = signing_message(None, "m", "a");
            let sig = BASE64.encode(&a.key.sign(msg.as_bytes()).to_bytes());
            let r = verify_snapshot(Cap::from("s"), None, "m", &md.to_json(), &sig, None);
            assert!(
                matches!(r, Err(SnapshotError::Malformed(_))),
                "{name:?}: {r:?}"
            );
        }
    }

    #[test]
    fn metadata_is_compatible_with_magic_folder_24_3() {
        let a = author();
        let md = a.metadata(&RelPath::new("x").unwrap(), &Content::Deleted, &[], 3, 1);
        let v: serde_json::Value = serde_json::from_slice(&md.to_json()).unwrap();
        assert_eq!(v["snapshot_version"], 1);
        assert_eq!(v["relpath"], "x");
        assert_eq!(v["author"]["name"], "alice");
        assert_eq!(v["modification_time"], 3);
        assert!(
            v.get("directory").is_none(),
            "24.3 fields only when not a directory"
        );
        // And a 24.3 document (no extensions) parses.
        let py = br#"{"snapshot_version":1,"relpath":"x","author":{"name":"bob","verify_key":"AA=="},"modification_time":1,"parents":[]}"#;
        assert!(serde_json::from_slice::<SnapshotMetadata>(py).is_ok());
    }

    #[test]
    fn entry_names() {
        let p = RelPath::new("a@b/c").unwrap();
        assert_eq!(
            parse_entry_name(&entry_name(&p)).unwrap().unwrap(),
            (p.clone(), None)
        );
        let c = conflict_entry_name(&p, "bob");
        assert_eq!(
            parse_entry_name(&c).unwrap().unwrap(),
            (p, Some("bob".into()))
        );
        let tricky = RelPath::new("x@cy").unwrap();
        assert_eq!(
            parse_entry_name(&entry_name(&tricky)).unwrap().unwrap(),
            (tricky.clone(), None)
        );
        let tc = conflict_entry_name(&tricky, "z");
        assert_eq!(
            parse_entry_name(&tc).unwrap().unwrap(),
            (tricky, Some("z".into()))
        );
        assert!(parse_entry_name("@metadata").is_none());
        assert!(parse_entry_name("@_etc").unwrap().is_err());
        assert!(parse_entry_name("a@c").unwrap().is_err(), "empty author");
        assert!(parse_entry_name("a@c../x").unwrap().is_err());
    }
}
