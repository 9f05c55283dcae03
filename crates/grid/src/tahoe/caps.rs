//! Tahoe-LAFS capability details that `cap.rs` deliberately leaves to the
//! backend: strict field checks, the write → read derivation for directories,
//! and decoding of literal (`LIT`) caps.
//!
//! Why do this locally instead of asking the node: a malformed cap is caught
//! before any request (a clear [`GridError::BadCap`] instead of a 400 with an
//! HTML page), `read_only` must work offline (callers hand out read caps
//! without a node), and `LIT` files carry their bytes in the cap itself, so a
//! download of one needs no round trip.
//!
//! Formats and derivations follow `docs/specifications/uri.rst` and
//! `allmydata/uri.py` (see the project's `tahoe.md` §3).

use std::sync::LazyLock;

use data_encoding::{Encoding, Specification};
use sha2::{Digest, Sha256};

use crate::cap::CapError;
use crate::{CapKind, Capability, GridError, GridResult, Scheme};

/// The largest file we store inside a `URI:LIT:` cap (and accept in one).
/// Tahoe makes one of up to 55 bytes itself, and reads one of any length.
/// Up to this size a file costs no stored object (the node's erasure-coded
/// upload to every server, the bulk of a small file's cost) and no read
/// request: a small file's version is one upload (its snapshot directory,
/// which holds the literal) instead of two, and snapshot metadata never
/// needs one. Stored, a file of this size would take about as much space
/// on the servers as its literal inside the directory (1.6 times its size
/// in base32). The price is local: each participant's state database
/// caches the snapshot, literal included (see the embedded grid's limit).
///
/// The bound is a magic-folder 24.3 peer's read of one: it asks its node
/// for `GET /uri?uri=<cap>`, and Twisted refuses a request line plus
/// headers over 16,384 bytes (`HTTPChannel.totalHeadersSize`). A literal
/// cap of this size is 13,116 characters.
pub const LITERAL_MAX: usize = 8192;

/// Tahoe's base32: RFC 4648 alphabet in lower case, no padding, and
/// canonical trailing bits (as `allmydata/util/base32.py` enforces).
static BASE32: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.check_trailing_bits = true;
    spec.encoding().expect("a valid base32 specification")
});

fn b32_decode(text: &str) -> Option<Vec<u8>> {
    BASE32.decode(text.as_bytes()).ok()
}

fn b32_encode(bytes: &[u8]) -> String {
    BASE32.encode(bytes)
}

fn netstring(s: &[u8]) -> Vec<u8> {
    let mut out = format!("{}:", s.len()).into_bytes();
    out.extend_from_slice(s);
    out.push(b',');
    out
}

/// Tahoe's tagged hash: SHA-256d over `netstring(tag) ‖ value`.
fn tagged_hash(tag: &[u8], value: &[u8]) -> [u8; 32] {
    let mut inner = Sha256::new();
    inner.update(netstring(tag));
    inner.update(value);
    Sha256::digest(inner.finalize()).into()
}

const WRITEKEY_TO_READKEY: &[u8] = b"allmydata_mutable_writekey_to_readkey_v1";

/// A 16-byte key field (26 base32 chars).
fn key16(field: &str) -> Option<[u8; 16]> {
    if field.len() != 26 {
        return None;
    }
    b32_decode(field)?.try_into().ok()
}

/// A 32-byte hash field (52 base32 chars).
fn hash32(field: &str) -> Option<[u8; 32]> {
    if field.len() != 52 {
        return None;
    }
    b32_decode(field)?.try_into().ok()
}

fn decimal(field: &str) -> Option<u64> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse().ok()
}

/// The fields of a CHK-style body `key:ueb_hash:k:N:size`; returns the size.
fn chk_body(body: &str) -> Option<u64> {
    let f: Vec<&str> = body.split(':').collect();
    if f.len() != 5 {
        return None;
    }
    key16(f[0])?;
    hash32(f[1])?;
    let k = decimal(f[2])?;
    let n = decimal(f[3])?;
    if k == 0 || n < k || n > 256 {
        return None;
    }
    decimal(f[4])
}

/// The fields of an SSK-style body `key:fingerprint` (MDMF may append
/// extension fields, which Tahoe ignores and so do we).
fn ssk_body(body: &str, extensions_allowed: bool) -> Option<([u8; 16], [u8; 32])> {
    let f: Vec<&str> = body.split(':').collect();
    if f.len() < 2 || (f.len() > 2 && !extensions_allowed) {
        return None;
    }
    Some((key16(f[0])?, hash32(f[1])?))
}

/// Checks every field of a Tahoe capability that `cap.rs` only classified.
pub(crate) fn validate(cap: &Capability) -> GridResult<()> {
    let text = cap.as_str();
    let bad = |reason| Err(GridError::BadCap(CapError::new(text, reason)));
    if cap.scheme() != Some(Scheme::Tahoe) {
        return bad("not a Tahoe-LAFS capability");
    }
    let ok = if let Some(body) = text.strip_prefix("URI:LIT:") {
        b32_decode(body).is_some_and(|d| d.len() <= LITERAL_MAX)
    } else if let Some(body) = text.strip_prefix("URI:DIR2-LIT:") {
        b32_decode(body).is_some()
    } else if let Some(body) = text.strip_prefix("URI:CHK:") {
        chk_body(body).is_some()
    } else if let Some(body) = text.strip_prefix("URI:DIR2-CHK:") {
        chk_body(body).is_some()
    } else if let Some(body) = text.strip_prefix("URI:DIR2-MDMF-RO:") {
        ssk_body(body, true).is_some()
    } else if let Some(body) = text.strip_prefix("URI:DIR2-MDMF:") {
        ssk_body(body, true).is_some()
    } else if let Some(body) = text.strip_prefix("URI:DIR2-RO:") {
        ssk_body(body, false).is_some()
    } else if let Some(body) = text.strip_prefix("URI:DIR2:") {
        ssk_body(body, false).is_some()
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        bad("fields are not those of a Tahoe-LAFS capability of this kind")
    }
}

/// The plaintext size recorded in an immutable file cap (`LIT` or `CHK`).
pub(crate) fn file_size(cap: &Capability) -> Option<u64> {
    let text = cap.as_str();
    if let Some(body) = text.strip_prefix("URI:LIT:") {
        return b32_decode(body).map(|d| d.len() as u64);
    }
    chk_body(text.strip_prefix("URI:CHK:")?)
}

/// The `URI:LIT:` cap of `bytes` (the caller keeps to [`LITERAL_MAX`]).
pub(crate) fn literal(bytes: &[u8]) -> Capability {
    Capability::parse(&format!("URI:LIT:{}", b32_encode(bytes))).expect("a literal cap parses")
}

/// The bytes of a `URI:LIT:` cap, or `None` for any other cap.
pub(crate) fn literal_bytes(cap: &Capability) -> Option<Vec<u8>> {
    b32_decode(cap.as_str().strip_prefix("URI:LIT:")?)
}

/// Derives the read-only cap of a Tahoe mutable directory from its write cap,
/// with no I/O.
///
/// `URI:DIR2:<writekey>:<fp>` becomes `URI:DIR2-RO:<readkey>:<fp>` and
/// `URI:DIR2-MDMF:…` becomes `URI:DIR2-MDMF-RO:…`, where
/// `readkey = SHA256d(netstring("allmydata_mutable_writekey_to_readkey_v1") ‖ writekey)[:16]`
/// and the fingerprint is kept. MDMF extension fields are dropped, as Tahoe's
/// own `get_readonly()` does. Read-only and immutable Tahoe caps are returned
/// unchanged; caps of another grid are [`GridError::BadCap`].
pub fn read_only(cap: &Capability) -> GridResult<Capability> {
    validate(cap)?;
    if cap.kind() != CapKind::MutableDirWrite {
        return Ok(cap.clone());
    }
    let text = cap.as_str();
    let (ro_prefix, body, ext) = if let Some(b) = text.strip_prefix("URI:DIR2-MDMF:") {
        ("URI:DIR2-MDMF-RO:", b, true)
    } else if let Some(b) = text.strip_prefix("URI:DIR2:") {
        ("URI:DIR2-RO:", b, false)
    } else {
        unreachable!("validate() accepted an unknown write cap")
    };
    let (writekey, fingerprint) = ssk_body(body, ext).expect("validated above");
    let readkey = &tagged_hash(WRITEKEY_TO_READKEY, &writekey)[..16];
    Ok(Capability::from_backend(format!(
        "{ro_prefix}{}:{}",
        b32_encode(readkey),
        b32_encode(&fingerprint)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(s: &str) -> Capability {
        Capability::parse(s).unwrap()
    }

    /// Pairs returned by a real tahoe-lafs 1.20.0 node (`GET …?t=readonly-uri`).
    const NODE_PAIRS: &[(&str, &str)] = &[
        (
            "URI:DIR2:c5y4fjuebcphldognm72q4vlbi:tsebdb7n4g5cvhemd3ryncbeojwnf4jytvox7pyuxfpk7iq45emq",
            "URI:DIR2-RO:4ysmwexutwr5kzpnzsauecqdxa:tsebdb7n4g5cvhemd3ryncbeojwnf4jytvox7pyuxfpk7iq45emq",
        ),
        (
            "URI:DIR2:oqu4kn7d2hrkdmfn7e6ry6deaa:ezgfh7m4melbbt6kpnqr3urqpzkjqqx2j7ypubfzowirh23chz2a",
            "URI:DIR2-RO:b7j5sbd5xlto2ewvczm2p5ck5q:ezgfh7m4melbbt6kpnqr3urqpzkjqqx2j7ypubfzowirh23chz2a",
        ),
        (
            "URI:DIR2-MDMF:wezz3neke3hjpi2d73sdrgsnhi:6wly2dxzh2upxy4u7cmifpmaz7xfdsiatye5qwgdcg3t7pxpsvla",
            "URI:DIR2-MDMF-RO:yonswitfi2ez5whc235kpvpf7u:6wly2dxzh2upxy4u7cmifpmaz7xfdsiatye5qwgdcg3t7pxpsvla",
        ),
    ];

    #[test]
    fn read_only_matches_the_node() {
        for (rw, ro) in NODE_PAIRS {
            assert_eq!(read_only(&cap(rw)).unwrap().as_str(), *ro);
            // Through the crate-level entry point too.
            assert_eq!(crate::read_only(&cap(rw)).unwrap().as_str(), *ro);
            // Read caps are fixed points.
            assert_eq!(read_only(&cap(ro)).unwrap().as_str(), *ro);
        }
    }

    #[test]
    fn mdmf_extension_fields_are_dropped() {
        let (rw, ro) = NODE_PAIRS[2];
        let with_ext = format!("{rw}:3:131073");
        assert_eq!(read_only(&cap(&with_ext)).unwrap().as_str(), ro);
    }

    #[test]
    fn immutable_caps_are_returned_unchanged() {
        for c in [
            "URI:CHK:anl4vlabxziju3xt3y5jvfdmny:fnrcw3y7gzmnc75holrscxoy5chi7to6yo5biymy34s6dapdblua:2:3:73",
            "URI:LIT:nbswy3dp",
            "URI:LIT:",
            "URI:DIR2-LIT:",
        ] {
            assert_eq!(read_only(&cap(c)).unwrap().as_str(), c);
        }
    }

    #[test]
    fn malformed_fields_are_bad_caps() {
        for bad in [
            "URI:DIR2:short:tsebdb7n4g5cvhemd3ryncbeojwnf4jytvox7pyuxfpk7iq45emq",
            // non-canonical trailing bits in the 26-char key
            "URI:DIR2:c5y4fjuebcphldognm72q4vlbj:tsebdb7n4g5cvhemd3ryncbeojwnf4jytvox7pyuxfpk7iq45emq",
            // upper case is not Tahoe's base32
            "URI:DIR2:C5Y4FJUEBCPHLDOGNM72Q4VLBI:tsebdb7n4g5cvhemd3ryncbeojwnf4jytvox7pyuxfpk7iq45emq",
            // SDMF takes no extension fields
            "URI:DIR2:c5y4fjuebcphldognm72q4vlbi:tsebdb7n4g5cvhemd3ryncbeojwnf4jytvox7pyuxfpk7iq45emq:1",
            "URI:CHK:a:b:3:10:100",
            "URI:CHK:anl4vlabxziju3xt3y5jvfdmny:fnrcw3y7gzmnc75holrscxoy5chi7to6yo5biymy34s6dapdblua:0:3:73",
            "URI:CHK:anl4vlabxziju3xt3y5jvfdmny:fnrcw3y7gzmnc75holrscxoy5chi7to6yo5biymy34s6dapdblua:2:3:x",
            "URI:MF-CHK:abc:12",
        ] {
            let err = read_only(&cap(bad)).unwrap_err();
            assert!(matches!(err, GridError::BadCap(_)), "{bad}: {err:?}");
        }
    }

    #[test]
    fn sizes_and_literals() {
        let chk = cap("URI:CHK:anl4vlabxziju3xt3y5jvfdmny:fnrcw3y7gzmnc75holrscxoy5chi7to6yo5biymy34s6dapdblua:2:3:73");
        assert_eq!(file_size(&chk), Some(73));
        assert_eq!(literal_bytes(&chk), None);
        let lit = cap("URI:LIT:nbswy3dp");
        assert_eq!(file_size(&lit), Some(5));
        assert_eq!(literal_bytes(&lit).unwrap(), b"hello");
        assert_eq!(literal_bytes(&cap("URI:LIT:")).unwrap(), b"");
        // Ours, up to LITERAL_MAX bytes; one byte more is a bad cap.
        let full = vec![7u8; LITERAL_MAX];
        let ours = literal(&full);
        assert_eq!(file_size(&ours), Some(LITERAL_MAX as u64));
        assert_eq!(literal_bytes(&ours).unwrap(), full);
        let over = cap(&format!("URI:LIT:{}", b32_encode(&[7u8; LITERAL_MAX + 1])));
        assert!(matches!(validate(&over), Err(GridError::BadCap(_))));
    }

    #[test]
    fn tagged_hash_matches_python() {
        // hashlib.sha256(hashlib.sha256(b"3:abc," + b"x").digest()).hexdigest()
        let h = tagged_hash(b"abc", b"x");
        let mut expect = Sha256::new();
        expect.update(b"3:abc,x");
        let expect: [u8; 32] = Sha256::digest(expect.finalize()).into();
        assert_eq!(h, expect);
    }

    proptest::proptest! {
        #[test]
        fn derived_read_caps_are_valid(wk in proptest::array::uniform16(0u8..), fp in proptest::array::uniform32(0u8..), mdmf: bool) {
            let prefix = if mdmf { "URI:DIR2-MDMF:" } else { "URI:DIR2:" };
            let rw = cap(&format!("{prefix}{}:{}", b32_encode(&wk), b32_encode(&fp)));
            let ro = read_only(&rw).unwrap();
            proptest::prop_assert_eq!(ro.kind(), CapKind::MutableDirRead);
            validate(&ro).unwrap();
            proptest::prop_assert!(ro.as_str().ends_with(&b32_encode(&fp)));
        }
    }
}
