//! Relative paths inside a magic folder, and the rules that keep every write
//! inside it.
//!
//! A [`RelPath`] is the only way a path travels between the grid, the engine
//! and the filesystem. Constructing one checks everything that could escape
//! the folder or confuse another platform: it is non-empty, `/`-separated,
//! has no empty, `.` or `..` segment, no NUL, no leading `/`, no backslash
//! (a separator on Windows), and is no longer than the limits below.
//! A remote participant's entry that fails these checks is rejected before
//! anything is written.
//!
//! Names on the grid are *mangled* into one flat namespace exactly as
//! magic-folder 24.3 does, so Python peers can read them: `@` → `@@`, `/` → `@_`.

use std::fmt;
use std::sync::Arc;

/// Longest relative path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single path segment accepted, in bytes (Linux `NAME_MAX`).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// The suffix that marks a conflict copy: `<relpath>.conflict-<participant>`.
pub const CONFLICT_MARKER: &str = ".conflict-";

/// Hex digits of the hash that stands in for the cut-off end of a file name
/// in a shortened conflict-copy name (see [`RelPath::conflict_copy`]).
const SHORTENED_HASH_HEX: usize = 8;

/// Prefix of this program's temporary files, always ignored by the scanner.
pub const TEMP_PREFIX: &str = ".mf-tmp-";

/// Name of the per-folder directory that holds our own bookkeeping (the
/// folder marker and the versions area). Never synced.
pub const META_DIR: &str = ".magic-folder";

/// A validated relative path inside a magic folder.
///
/// Its text is shared, not copied, by its clones: a path sits in several
/// of the engine's tables at once (work to do, remote versions to
/// consider, current versions, versions to publish), and at 100,000 paths
/// each table's own copy of them was ~5 MB.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(Arc<str>);

/// Why a string is not an acceptable relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("empty path")]
    Empty,
    /// Starts with `/`: would name something outside the folder.
    #[error("absolute path {0:?}")]
    Absolute(String),
    /// Has an empty, `.` or `..` segment.
    #[error("path {0:?} has an empty, '.' or '..' segment")]
    BadSegment(String),
    /// Contains NUL or a backslash.
    #[error("path {0:?} contains a forbidden character")]
    BadChar(String),
    /// Too long for the filesystem.
    #[error("path of {0} bytes is too long")]
    TooLong(usize),
    /// A mangled grid name that does not decode (e.g. a lone `@`).
    #[error("malformed grid name {0:?}")]
    BadMangling(String),
}

impl RelPath {
    /// Checks and wraps a `/`-separated relative path.
    pub fn new(path: &str) -> Result<RelPath, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(path.len()));
        }
        if path.starts_with('/') {
            return Err(PathError::Absolute(path.to_owned()));
        }
        if path.contains('\0') || path.contains('\\') {
            return Err(PathError::BadChar(path.to_owned()));
        }
        for seg in path.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(PathError::BadSegment(path.to_owned()));
            }
            if seg.len() > MAX_SEGMENT_BYTES {
                return Err(PathError::TooLong(seg.len()));
            }
        }
        Ok(RelPath(Arc::from(path)))
    }

    /// A copy that shares no memory with this one, for a record that
    /// outlives a burst of work: the burst's short-lived allocations freed,
    /// it no longer pins the pages they shared (see `Engine::shrink_to_fit`).
    pub fn relocated(&self) -> RelPath {
        RelPath(Arc::from(&*self.0))
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The parent directory, or `None` at the top level.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rfind('/').map(|i| RelPath(Arc::from(&self.0[..i])))
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// True if `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&*other.0)
                && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The flat name used in a personal directory on the grid.
    pub fn mangle(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 4);
        for c in self.0.chars() {
            match c {
                '@' => out.push_str("@@"),
                '/' => out.push_str("@_"),
                c => out.push(c),
            }
        }
        out
    }

    /// Decodes a flat grid name back into a checked path.
    pub fn unmangle(name: &str) -> Result<RelPath, PathError> {
        let mut out = String::with_capacity(name.len());
        let mut chars = name.chars();
        while let Some(c) = chars.next() {
            if c == '@' {
                match chars.next() {
                    Some('@') => out.push('@'),
                    Some('_') => out.push('/'),
                    _ => return Err(PathError::BadMangling(name.to_owned())),
                }
            } else {
                out.push(c);
            }
        }
        RelPath::new(&out)
    }

    /// The conflict copy of this path for the version labelled `label` (its
    /// author, maybe with a version id): `<name>.conflict-<label>`, 24.3's
    /// form, beside the file. When that would exceed [`MAX_SEGMENT_BYTES`]
    /// (a file name over ~240 bytes) the name is shortened, the same way on
    /// every participant: a prefix of it (cut at a character boundary), `~`
    /// and a short hash of the whole name, then `.conflict-<label>`. So a
    /// copy name always fits the filesystem and never collides with another
    /// long name's copy.
    pub fn conflict_copy(&self, label: &str) -> RelPath {
        let name = self.file_name();
        let suffix = format!("{CONFLICT_MARKER}{label}");
        let file = if name.len() + suffix.len() <= MAX_SEGMENT_BYTES {
            format!("{name}{suffix}")
        } else {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(name.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            let tag = format!("~{}", &hex[..SHORTENED_HASH_HEX]);
            let mut cut = MAX_SEGMENT_BYTES.saturating_sub(tag.len() + suffix.len());
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}{tag}{suffix}", &name[..cut])
        };
        RelPath(Arc::from(match self.parent() {
            Some(dir) => format!("{dir}/{file}"),
            None => file,
        }))
    }

    /// If this path is the conflict copy of `orig`'s version labelled `L`,
    /// returns `L`. Exact for shortened names too (see [`RelPath::conflict_copy`]).
    pub fn conflict_label_for(&self, orig: &RelPath) -> Option<&str> {
        let (_, label) = self.as_conflict_copy()?;
        (orig.conflict_copy(label) == *self).then_some(label)
    }

    /// If this path is named like a conflict copy: the path its name was
    /// made from, and the label. For a shortened name (see
    /// [`RelPath::conflict_copy`]) that path is not the original one; use
    /// [`RelPath::conflict_label_for`] to match a copy to its file.
    pub fn as_conflict_copy(&self) -> Option<(RelPath, &str)> {
        let name = self.file_name();
        let idx = name.rfind(CONFLICT_MARKER)?;
        let participant = &name[idx + CONFLICT_MARKER.len()..];
        if idx == 0 || participant.is_empty() || participant.contains('.') {
            return None;
        }
        let cut = self.0.len() - name.len() + idx;
        Some((RelPath(Arc::from(&self.0[..cut])), participant))
    }

    /// True for paths the engine never syncs: our own temporary files, the
    /// bookkeeping directory, and conflict copies.
    pub fn is_internal(&self) -> bool {
        // Asked of every entry of every listing: no allocation here.
        self.0
            .strip_prefix(META_DIR)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            || self.segments().any(|s| s.starts_with(TEMP_PREFIX))
            || self.as_conflict_copy().is_some()
    }
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RelPath::new(&s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0.to_string()
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Checks a participant name: it appears in conflict-copy names and the
/// collective, so it must be a plain, short, dot-free file-name fragment.
pub fn check_participant_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("participant name {name:?} must be 1 to 64 bytes"));
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "participant name {name:?} may only hold letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relocated_path_is_equal_and_shares_nothing() {
        let path = RelPath::new("a/b.txt").unwrap();
        let moved = path.relocated();
        assert_eq!(moved, path);
        assert_ne!(moved.as_str().as_ptr(), path.as_str().as_ptr());
    }

    /// A conflict copy's name always fits NAME_MAX, is the same on every
    /// participant, matches its file exactly, and long names sharing a
    /// prefix get different copies.
    #[test]
    fn conflict_copies_of_long_names_fit_and_match() {
        let short = RelPath::new("d/a.txt").unwrap();
        assert_eq!(short.conflict_copy("bob").as_str(), "d/a.txt.conflict-bob");
        let label = format!("{}-t0a1b2c", "p".repeat(64));
        for len in [200, 240, 250, 255] {
            // Multibyte characters, so a cut can fall inside one.
            let name: String = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let a = RelPath::new(&format!("dir/{name}")).unwrap();
            let mut other = name.clone();
            other.pop();
            other.push('y');
            let b = RelPath::new(&format!("dir/{other}")).unwrap();
            for l in ["bob", label.as_str()] {
                let copy = a.conflict_copy(l);
                assert!(copy.file_name().len() <= MAX_SEGMENT_BYTES, "{len}: {copy}");
                assert!(RelPath::new(copy.as_str()).is_ok());
                assert_eq!(copy, a.conflict_copy(l), "deterministic");
                assert_eq!(copy.conflict_label_for(&a), Some(l));
                assert!(copy.is_internal(), "a copy is never uploaded");
                assert_eq!(copy.conflict_label_for(&b), None);
                assert_ne!(copy, b.conflict_copy(l));
                assert_eq!(copy.parent().unwrap().as_str(), "dir");
            }
        }
    }
    use proptest::prelude::*;

    #[test]
    fn rejects_everything_that_could_escape() {
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            "./a",
            "a\0b",
            "a\\b",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(RelPath::new(&"x".repeat(256)).is_err());
        assert!(RelPath::new(&"x/".repeat(2100)).is_err());
    }

    #[test]
    fn accepts_odd_but_valid_names() {
        for ok in [
            "a",
            "a b/c",
            "@metadata",
            "x@_y",
            "..a",
            "a..",
            "ünïcødé/日本",
            ".hidden",
        ] {
            assert!(RelPath::new(ok).is_ok(), "{ok:?} rejected");
        }
    }

    #[test]
    fn mangling_matches_magic_folder() {
        let p = RelPath::new("a/b@c/@metadata").unwrap();
        assert_eq!(p.mangle(), "a@_b@@c@_@@metadata");
        assert_eq!(RelPath::unmangle("a@_b@@c@_@@metadata").unwrap(), p);
        assert!(RelPath::unmangle("a@").is_err());
        assert!(RelPath::unmangle("a@x").is_err());
        assert!(
            RelPath::unmangle("@_etc@_passwd").is_err(),
            "absolute after unmangling"
        );
        assert!(RelPath::unmangle("a@_..@_b").is_err());
    }

    #[test]
    fn conflict_copies_round_trip() {
        let p = RelPath::new("dir/file.txt").unwrap();
        let c = p.conflict_copy("bob");
        assert_eq!(c.as_str(), "dir/file.txt.conflict-bob");
        let (orig, who) = c.as_conflict_copy().unwrap();
        assert_eq!((orig, who), (p.clone(), "bob"));
        assert!(c.is_internal());
        assert!(!p.is_internal());
        assert!(p.as_conflict_copy().is_none());
    }

    #[test]
    fn internal_paths() {
        for p in [".magic-folder", ".magic-folder/versions/x", "a/.mf-tmp-123"] {
            assert!(RelPath::new(p).unwrap().is_internal(), "{p}");
        }
        assert!(!RelPath::new(".magic-folderx").unwrap().is_internal());
    }

    #[test]
    fn starts_with_is_segment_aware() {
        let a = RelPath::new("a").unwrap();
        assert!(RelPath::new("a/b").unwrap().starts_with(&a));
        assert!(!RelPath::new("ab").unwrap().starts_with(&a));
    }

    proptest! {
        #[test]
        fn mangle_round_trips(segs in proptest::collection::vec("[a-z@_. -]{1,12}", 1..5)) {
            let joined = segs.join("/");
            if let Ok(p) = RelPath::new(&joined) {
                let m = p.mangle();
                prop_assert!(!m.contains('/'));
                prop_assert_eq!(RelPath::unmangle(&m).unwrap(), p);
            }
        }

        #[test]
        fn unmangle_never_escapes(name in "[a-z@_./\\\\]{0,20}") {
            if let Ok(p) = RelPath::unmangle(&name) {
                prop_assert!(!p.as_str().starts_with('/'));
                prop_assert!(p.segments().all(|s| s != ".." && s != "." && !s.is_empty()));
            }
        }
    }
}
