//! The embedded grid's capability strings, parsed strictly.
//!
//! | kind | format |
//! |---|---|
//! | immutable file | `URI:MF-CHK:<key>:<size>` |
//! | small immutable file, literally | `URI:MF-LIT:<content>` |
//! | immutable directory | `URI:MF-DIR-CHK:<key>:<size>` |
//! | mutable directory, write | `URI:MF-DIR:<seed>` |
//! | mutable directory, read | `URI:MF-DIR-RO:<read key>:<verifying key>` |
//!
//! Every field is 32 bytes in lower-case unpadded base32 (52 characters) and
//! sizes are canonical decimal, so each capability has exactly one spelling
//! and comparing strings compares objects. A literal capability carries a
//! file of at most [`LITERAL_MAX`] bytes in canonical base32, as Tahoe's
//! `URI:LIT:` does: no object is stored for it (see `Grid::upload` in the
//! module above). It is as secret as any read capability, and lives only
//! where capabilities do, inside encrypted directories.

use super::crypto::{DirReadKeys, DirWriteKeys, Key32, BASE32};
use crate::{CapError, CapKind, Capability, GridError, GridResult, Scheme};

/// A parsed embedded-grid capability.
pub(crate) enum EmbeddedCap {
    /// An immutable file or directory: its content key and plaintext size.
    Immutable { dir: bool, key: Key32, size: u64 },
    /// A small immutable file, carried in the capability.
    Literal(Vec<u8>),
    /// A mutable directory's write cap.
    DirWrite(Box<DirWriteKeys>),
    /// A mutable directory's read cap.
    DirRead(Box<DirReadKeys>),
}

fn bad(cap: &Capability, reason: &'static str) -> GridError {
    GridError::BadCap(CapError::new(cap.as_str(), reason))
}

fn key_field(cap: &Capability, field: &str) -> GridResult<Key32> {
    let bytes = BASE32
        .decode(field.as_bytes())
        .map_err(|_| bad(cap, "a key field is not canonical base32"))?;
    bytes
        .try_into()
        .map_err(|_| bad(cap, "a key field is not 32 bytes"))
}

fn size_field(cap: &Capability, field: &str) -> GridResult<u64> {
    let size: u64 = field
        .parse()
        .map_err(|_| bad(cap, "the size field is not a number"))?;
    if size.to_string() != field {
        return Err(bad(cap, "the size field is not in canonical form"));
    }
    Ok(size)
}

/// Parses an embedded capability, rejecting other grids' capabilities.
pub(crate) fn parse(cap: &Capability) -> GridResult<EmbeddedCap> {
    if cap.scheme() != Some(Scheme::Embedded) {
        return Err(bad(cap, "not a capability of the embedded grid"));
    }
    let text = cap.as_str();
    if let Some(content) = text.strip_prefix(LITERAL_PREFIX) {
        let content = BASE32
            .decode(content.as_bytes())
            .map_err(|_| bad(cap, "a literal capability is not canonical base32"))?;
        if content.len() > LITERAL_MAX {
            return Err(bad(cap, "a literal capability longer than any we write"));
        }
        return Ok(EmbeddedCap::Literal(content));
    }
    let body = match cap.kind() {
        CapKind::ImmutableFile => &text["URI:MF-CHK:".len()..],
        CapKind::ImmutableDir => &text["URI:MF-DIR-CHK:".len()..],
        CapKind::MutableDirWrite => &text["URI:MF-DIR:".len()..],
        CapKind::MutableDirRead => &text["URI:MF-DIR-RO:".len()..],
        CapKind::Empty => unreachable!("the empty entry has no scheme"),
    };
    let fields: Vec<&str> = body.split(':').collect();
    match (cap.kind(), fields.as_slice()) {
        (CapKind::ImmutableFile | CapKind::ImmutableDir, [key, size]) => {
            Ok(EmbeddedCap::Immutable {
                dir: cap.kind() == CapKind::ImmutableDir,
                key: key_field(cap, key)?,
                size: size_field(cap, size)?,
            })
        }
        (CapKind::MutableDirWrite, [seed]) => Ok(EmbeddedCap::DirWrite(Box::new(
            DirWriteKeys::from_seed(key_field(cap, seed)?),
        ))),
        (CapKind::MutableDirRead, [read_key, vk]) => {
            let read_key = key_field(cap, read_key)?;
            let vk = key_field(cap, vk)?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&vk)
                .map_err(|_| bad(cap, "the verifying key is not a valid Ed25519 point"))?;
            Ok(EmbeddedCap::DirRead(Box::new(DirReadKeys::new(
                read_key, vk,
            ))))
        }
        _ => Err(bad(cap, "wrong number of fields")),
    }
}

/// The prefix of a literal capability.
const LITERAL_PREFIX: &str = "URI:MF-LIT:";

/// Files of at most this many bytes are carried in their capability, as on
/// Tahoe: snapshot metadata and small files, which saves each upload a
/// stored object (a file created and fsynced twice) and each reader a read.
/// The state database keeps a literal content by reference only
/// (`mf_core::snapshot::Content::kept`): while it kept them whole, 8 KiB
/// literals made the initial sync of 100,000 files of 4 KiB take 112 s
/// instead of 85 s, with a state database of 844 MB per daemon.
pub const LITERAL_MAX: usize = 8192;

/// Formats a literal capability (the caller keeps to [`LITERAL_MAX`]).
pub(crate) fn literal(content: &[u8]) -> Capability {
    Capability::from_backend(format!("{LITERAL_PREFIX}{}", BASE32.encode(content)))
}

/// Formats an immutable file (or directory, if `dir`) capability.
pub(crate) fn immutable(dir: bool, key: &Key32, size: u64) -> Capability {
    let prefix = if dir {
        "URI:MF-DIR-CHK:"
    } else {
        "URI:MF-CHK:"
    };
    Capability::from_backend(format!("{prefix}{}:{size}", BASE32.encode(key)))
}

/// Formats a mutable directory's write capability.
pub(crate) fn dir_write(seed: &Key32) -> Capability {
    Capability::from_backend(format!("URI:MF-DIR:{}", BASE32.encode(seed)))
}

/// Formats a mutable directory's read capability.
pub(crate) fn dir_read(keys: &DirReadKeys) -> Capability {
    Capability::from_backend(format!(
        "URI:MF-DIR-RO:{}:{}",
        BASE32.encode(&keys.read_key),
        BASE32.encode(keys.verifying.as_bytes())
    ))
}

/// A short, non-secret name for an object: its kind and the start of its
/// storage index (which is public: it is the file name on disk).
pub(crate) fn short_name(kind: &str, storage_index: &Key32) -> String {
    let si = BASE32.encode(storage_index);
    format!("{kind}:{}", &si[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        let key = [9u8; 32];
        let f = immutable(false, &key, 123);
        assert_eq!(f.kind(), CapKind::ImmutableFile);
        assert!(matches!(
            parse(&f).unwrap(),
            EmbeddedCap::Immutable {
                dir: false,
                size: 123,
                ..
            }
        ));
        let d = immutable(true, &key, 0);
        assert!(matches!(
            parse(&d).unwrap(),
            EmbeddedCap::Immutable {
                dir: true,
                size: 0,
                ..
            }
        ));
        let w = dir_write(&key);
        let EmbeddedCap::DirWrite(keys) = parse(&w).unwrap() else {
            panic!()
        };
        let r = dir_read(&keys.read);
        let EmbeddedCap::DirRead(rk) = parse(&r).unwrap() else {
            panic!()
        };
        assert_eq!(rk.storage_index, keys.read.storage_index);
        for content in [&b""[..], b"small", &[7u8; LITERAL_MAX]] {
            let l = literal(content);
            assert_eq!(l.kind(), CapKind::ImmutableFile);
            assert_eq!(l.size(), Some(content.len() as u64));
            assert!(matches!(parse(&l).unwrap(), EmbeddedCap::Literal(c) if c == content));
        }
    }

    #[test]
    fn rejects_malformed_fields() {
        let key = BASE32.encode(&[1; 32]);
        for text in [
            format!("URI:MF-CHK:{key}"),
            format!("URI:MF-CHK:{key}:01"),
            format!("URI:MF-CHK:{key}:-1"),
            format!("URI:MF-CHK:{key}:1:2"),
            format!("URI:MF-CHK:{}:1", &key[..50]),
            format!("URI:MF-CHK:{}:1", key.to_uppercase()),
            format!("URI:MF-DIR:{key}:x"),
            format!("URI:MF-DIR-RO:{key}"),
            "URI:CHK:a:b:1:1:1".to_string(),
            // Not canonical: trailing bits set, upper case.
            "URI:MF-LIT:nb".to_string(),
            "URI:MF-LIT:NBSWY3DP".to_string(),
            format!("URI:MF-LIT:{}", BASE32.encode(&[0; LITERAL_MAX + 1])),
        ] {
            let cap = Capability::parse(&text).unwrap();
            assert!(matches!(parse(&cap), Err(GridError::BadCap(_))), "{text}");
        }
    }
}
