//! Capabilities: the strings that name, locate and grant access to grid objects.
//!
//! A capability is both an address and a key. Holding a write capability for a
//! mutable directory lets you change it; its read-only capability (derived
//! one-way from the write one) lets you list it. Immutable files and
//! directories have only read capabilities.
//!
//! Every backend's capabilities travel through the rest of the program as a
//! [`Capability`]: the exact string plus its [`CapKind`], so callers can check
//! "is this a directory I may write?" without knowing the backend. Parsing
//! classifies both the embedded grid's `URI:MF-…` strings and Tahoe-LAFS's
//! `URI:CHK:` / `URI:DIR2…` family; each backend validates the details of its
//! own formats when it is handed one.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// What a capability refers to and what it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CapKind {
    /// An immutable file (read-only by nature).
    ImmutableFile,
    /// An immutable directory (read-only by nature).
    ImmutableDir,
    /// A mutable directory, with the right to change it.
    MutableDirWrite,
    /// A mutable directory, read-only.
    MutableDirRead,
    /// An entry that names no object (see [`Capability::empty`]).
    Empty,
}

impl CapKind {
    /// True for both kinds of directory capability.
    pub fn is_dir(self) -> bool {
        matches!(
            self,
            CapKind::ImmutableDir | CapKind::MutableDirWrite | CapKind::MutableDirRead
        )
    }
    /// True for immutable files and directories.
    pub fn is_immutable(self) -> bool {
        matches!(self, CapKind::ImmutableFile | CapKind::ImmutableDir)
    }
    /// True only for a mutable directory's write capability.
    pub fn is_writable(self) -> bool {
        matches!(self, CapKind::MutableDirWrite)
    }
}

/// Which family of grid a capability belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// This program's embedded grid (`URI:MF-…`).
    Embedded,
    /// A Tahoe-LAFS grid (`URI:CHK:`, `URI:DIR2…`, …).
    Tahoe,
}

/// A parsed capability string. Cheap to clone: its text is shared by its
/// clones, as a directory entry's capability is held by the listing, the
/// reference taken from it and the tables that keep it (a pack's ~100
/// characters by each of its members). Compares by its exact text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Capability {
    text: Arc<str>,
}

/// A capability string that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed capability {shown:?}: {reason}")]
pub struct CapError {
    /// The offending string, truncated so secrets do not fill logs.
    pub shown: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl CapError {
    pub(crate) fn new(text: &str, reason: &'static str) -> CapError {
        let shown: String = text.chars().take(24).collect();
        CapError { shown, reason }
    }
}

/// The known prefixes, longest first so that `URI:DIR2-RO:` is not taken for `URI:DIR2:`.
const PREFIXES: &[(&str, Scheme, CapKind)] = &[
    ("URI:MF-DIR-CHK:", Scheme::Embedded, CapKind::ImmutableDir),
    ("URI:MF-DIR-RO:", Scheme::Embedded, CapKind::MutableDirRead),
    ("URI:MF-DIR:", Scheme::Embedded, CapKind::MutableDirWrite),
    ("URI:MF-CHK:", Scheme::Embedded, CapKind::ImmutableFile),
    ("URI:MF-LIT:", Scheme::Embedded, CapKind::ImmutableFile),
    ("URI:DIR2-MDMF-RO:", Scheme::Tahoe, CapKind::MutableDirRead),
    ("URI:DIR2-MDMF:", Scheme::Tahoe, CapKind::MutableDirWrite),
    ("URI:DIR2-CHK:", Scheme::Tahoe, CapKind::ImmutableDir),
    ("URI:DIR2-LIT:", Scheme::Tahoe, CapKind::ImmutableDir),
    ("URI:DIR2-RO:", Scheme::Tahoe, CapKind::MutableDirRead),
    ("URI:DIR2:", Scheme::Tahoe, CapKind::MutableDirWrite),
    ("URI:CHK:", Scheme::Tahoe, CapKind::ImmutableFile),
    ("URI:LIT:", Scheme::Tahoe, CapKind::ImmutableFile),
];

/// Capabilities that carry their (small) object in themselves, in base32:
/// such a body may be empty (an empty file).
const LITERAL_PREFIXES: [&str; 3] = ["URI:LIT:", "URI:DIR2-LIT:", "URI:MF-LIT:"];

/// The longest capability string accepted: a Tahoe literal one of
/// [`crate::tahoe::LITERAL_MAX`] bytes fits.
const MAX_CAP_LEN: usize = 16 * 1024;

impl Capability {
    /// Parses and classifies a capability string.
    pub fn parse(text: &str) -> Result<Capability, CapError> {
        check(text)?;
        Ok(Capability { text: text.into() })
    }

    /// [`Capability::parse`] for a string held elsewhere, which the
    /// capability then shares instead of copying: a literal one holds its
    /// object, up to 8 KiB on Tahoe.
    pub fn parse_shared(text: Arc<str>) -> Result<Capability, CapError> {
        check(&text)?;
        Ok(Capability { text })
    }

    /// The entry that names no object: Tahoe's child without capabilities,
    /// which magic-folder 24.3 writes as a deletion's `content`. Only
    /// immutable directories hold one; it has no text ([`Capability::parse`]
    /// never returns it) and belongs to no grid.
    pub fn empty() -> Capability {
        Capability { text: "".into() }
    }

    fn classify(&self) -> Option<(Scheme, CapKind)> {
        if self.text.is_empty() {
            return None;
        }
        let found = PREFIXES
            .iter()
            .find(|(p, _, _)| self.text.starts_with(p))
            .map(|(_, s, k)| (*s, *k));
        debug_assert!(
            found.is_some(),
            "a Capability is only built from a classified string"
        );
        found
    }

    /// What this capability refers to and allows.
    pub fn kind(&self) -> CapKind {
        self.classify().map_or(CapKind::Empty, |(_, k)| k)
    }

    /// Which grid family it belongs to (`None` for [`Capability::empty`]).
    pub fn scheme(&self) -> Option<Scheme> {
        self.classify().map(|(s, _)| s)
    }

    /// The size in bytes of the immutable object it names, which every
    /// immutable capability states (a literal one by its length); `None`
    /// for mutable directories and the empty entry.
    pub fn size(&self) -> Option<u64> {
        if !self.kind().is_immutable() {
            return None;
        }
        if let Some(lit) = LITERAL_PREFIXES
            .iter()
            .find_map(|p| self.text.strip_prefix(p))
        {
            // Unpadded base32: five bits a character.
            return Some(lit.len() as u64 * 5 / 8);
        }
        self.text.rsplit(':').next()?.parse().ok()
    }

    /// The exact capability string.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The capability string, shared rather than copied: a literal
    /// capability holds its object (up to 8 KiB on Tahoe), and a reader
    /// keeps hundreds of fetched snapshots' contents at once.
    pub fn shared_text(&self) -> Arc<str> {
        Arc::clone(&self.text)
    }

    /// Builds a capability from a string a backend just formatted itself.
    pub(crate) fn from_backend(text: String) -> Capability {
        let cap = Capability { text: text.into() };
        debug_assert!(
            Capability::parse(&cap.text).is_ok(),
            "backend formatted a bad cap"
        );
        cap
    }
}

/// Checks that `text` is a capability string of a known kind.
fn check(text: &str) -> Result<(), CapError> {
    if text.len() > MAX_CAP_LEN {
        return Err(CapError::new(text, "longer than any capability"));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CapError::new(text, "contains characters no capability has"));
    }
    let (prefix, _, _) = PREFIXES
        .iter()
        .find(|(p, _, _)| text.starts_with(p))
        .ok_or_else(|| CapError::new(text, "unknown capability type"))?;
    let body = &text[prefix.len()..];
    if body.is_empty() && !LITERAL_PREFIXES.contains(prefix) {
        return Err(CapError::new(text, "empty capability body"));
    }
    Ok(())
}

impl FromStr for Capability {
    type Err = CapError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::parse(s)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Capability {
    /// Debug output shows the kind and a short prefix only: capabilities are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short: String = self.text.chars().take(20).collect();
        write!(f, "Capability({:?}, {short}…)", self.kind())
    }
}

impl serde::Serialize for Capability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Capability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Capability::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_known_prefix() {
        let cases = [
            (
                "URI:MF-CHK:abc:12",
                CapKind::ImmutableFile,
                Scheme::Embedded,
            ),
            (
                "URI:MF-DIR-CHK:abc:12",
                CapKind::ImmutableDir,
                Scheme::Embedded,
            ),
            ("URI:MF-DIR:abc", CapKind::MutableDirWrite, Scheme::Embedded),
            (
                "URI:MF-DIR-RO:abc:def",
                CapKind::MutableDirRead,
                Scheme::Embedded,
            ),
            (
                "URI:CHK:a:b:3:10:100",
                CapKind::ImmutableFile,
                Scheme::Tahoe,
            ),
            ("URI:LIT:", CapKind::ImmutableFile, Scheme::Tahoe),
            ("URI:DIR2:a:b", CapKind::MutableDirWrite, Scheme::Tahoe),
            ("URI:DIR2-RO:a:b", CapKind::MutableDirRead, Scheme::Tahoe),
            (
                "URI:DIR2-CHK:a:b:1:1:1",
                CapKind::ImmutableDir,
                Scheme::Tahoe,
            ),
            ("URI:DIR2-LIT:", CapKind::ImmutableDir, Scheme::Tahoe),
            ("URI:DIR2-MDMF:a:b", CapKind::MutableDirWrite, Scheme::Tahoe),
            (
                "URI:DIR2-MDMF-RO:a:b",
                CapKind::MutableDirRead,
                Scheme::Tahoe,
            ),
        ];
        for (text, kind, scheme) in cases {
            let cap = Capability::parse(text).unwrap();
            assert_eq!(cap.kind(), kind, "{text}");
            assert_eq!(cap.scheme(), Some(scheme), "{text}");
            assert_eq!(cap.to_string(), text);
        }
    }

    #[test]
    fn malformed_strings_are_clear_errors() {
        for bad in [
            "",
            "hello",
            "URI:",
            "URI:MF-CHK:",
            "URI:CHK:a b",
            "URI:DIR2:\u{e9}",
        ] {
            let err = Capability::parse(bad).unwrap_err();
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn immutable_capabilities_state_their_size() {
        for (text, size) in [
            ("URI:CHK:a:b:2:3:73", Some(73)),
            ("URI:DIR2-CHK:a:b:1:1:512", Some(512)),
            ("URI:LIT:nbswy3dp", Some(5)),
            ("URI:DIR2-LIT:", Some(0)),
            ("URI:MF-CHK:abc:12", Some(12)),
            ("URI:MF-DIR-CHK:abc:40", Some(40)),
            ("URI:DIR2:a:b", None),
            ("URI:MF-DIR-RO:abc:def", None),
        ] {
            assert_eq!(Capability::parse(text).unwrap().size(), size, "{text}");
        }
        assert_eq!(Capability::empty().size(), None);
    }

    #[test]
    fn clones_share_the_text_instead_of_copying_it() {
        // A literal holds its object: a reader keeps hundreds at once.
        let cap = Capability::parse(&format!("URI:LIT:{}", "a".repeat(6_000))).unwrap();
        let shared = cap.clone().shared_text();
        assert!(Arc::ptr_eq(&shared, &cap.shared_text()));
        assert_eq!(&*shared, cap.as_str());
    }

    #[test]
    fn a_string_held_elsewhere_is_checked_and_shared() {
        let text: Arc<str> = format!("URI:LIT:{}", "a".repeat(6_000)).into();
        let cap = Capability::parse_shared(Arc::clone(&text)).unwrap();
        assert!(Arc::ptr_eq(&text, &cap.shared_text()));
        assert_eq!(cap.kind(), CapKind::ImmutableFile);
        // Refused as a copied one is.
        for bad in ["URI:NOPE:abc", "URI:CHK:", "URI:LIT:a b", ""] {
            assert!(Capability::parse(bad).is_err(), "{bad:?}");
            assert!(Capability::parse_shared(bad.into()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_empty_entry_is_no_grid_object() {
        let empty = Capability::empty();
        assert_eq!(empty.kind(), CapKind::Empty);
        assert_eq!(empty.scheme(), None);
        assert!(!empty.kind().is_dir() && !empty.kind().is_immutable());
        assert!(Capability::parse(empty.as_str()).is_err());
    }

    #[test]
    fn debug_does_not_print_the_whole_secret() {
        let cap =
            Capability::parse("URI:MF-DIR:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
        assert!(!format!("{cap:?}").contains("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    }

    proptest::proptest! {
        #[test]
        fn parse_format_round_trip(body in "[a-z2-7:]{1,80}", idx in 0usize..PREFIXES.len()) {
            let text = format!("{}{}", PREFIXES[idx].0, body);
            let cap = Capability::parse(&text).unwrap();
            proptest::prop_assert_eq!(cap.as_str(), text.as_str());
            proptest::prop_assert_eq!(cap.kind(), PREFIXES[idx].2);
            let again: Capability = cap.to_string().parse().unwrap();
            proptest::prop_assert_eq!(again, cap);
        }
    }
}
