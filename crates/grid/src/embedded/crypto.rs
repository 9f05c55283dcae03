//! Cryptographic building blocks of the embedded grid.
//!
//! Everything here is pure (no I/O) and small enough to audit in one sitting:
//!
//! * [`tagged_hash`] — SHA-256 over netstring-framed, purpose-tagged inputs, so
//!   that a value derived for one purpose can never be mistaken for another
//!   (the same discipline Tahoe-LAFS uses for its derivations);
//! * [`ConvergentHasher`] — the keyed hash (HMAC-SHA256 under the folder's
//!   convergence secret) that turns content into its encryption key;
//! * [`ChunkCipher`] — AES-256-GCM in a STREAM-like construction: each chunk's
//!   nonce is its index plus a "last chunk" flag, so chunks cannot be
//!   reordered, dropped or truncated without failing authentication;
//! * [`DirWriteKeys`] / [`DirReadKeys`] — the key hierarchy of a mutable
//!   directory (seed → Ed25519 signing key → read key, verifying key and
//!   storage index), derived one way only;
//! * [`BASE32`] — the lower-case, unpadded RFC 4648 alphabet used in caps and
//!   object names.

use std::sync::LazyLock;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};

/// Length of every symmetric key, hash and seed used here.
pub(crate) const KEY_LEN: usize = 32;
/// Length of an AES-GCM authentication tag.
pub(crate) const TAG_LEN: usize = 16;
/// Length of an AES-GCM nonce.
pub(crate) const NONCE_LEN: usize = 12;
/// Length of an Ed25519 signature.
pub(crate) const SIG_LEN: usize = 64;

/// A 32-byte key, hash or seed.
pub(crate) type Key32 = [u8; KEY_LEN];

/// Lower-case RFC 4648 base32 without padding, rejecting non-canonical
/// trailing bits so that every value has exactly one spelling.
pub(crate) static BASE32: LazyLock<data_encoding::Encoding> = LazyLock::new(|| {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.check_trailing_bits = true;
    spec.encoding()
        .expect("constant base32 specification is valid")
});

/// Purpose tags. Each derivation has its own, versioned, so that changing one
/// can never silently collide with another.
pub(crate) mod tags {
    /// Immutable object key → storage index.
    pub const CHK_STORAGE_INDEX: &str = "mf-grid:v1:chk-key-to-storage-index";
    /// Convergent key derivation (followed by the object kind and chunk size).
    pub const CONVERGENT_KEY: &str = "mf-grid:v1:convergent-content-key";
    /// Mutable directory seed → read key.
    pub const DIR_READ_KEY: &str = "mf-grid:v1:dir-seed-to-read-key";
    /// Mutable directory seed → key that hides write caps of children.
    pub const DIR_CHILD_WRITECAP_KEY: &str = "mf-grid:v1:dir-seed-to-child-writecap-key";
    /// Mutable directory verifying key → storage index.
    pub const DIR_STORAGE_INDEX: &str = "mf-grid:v1:dir-verifying-key-to-storage-index";
    /// Domain of the signature over a mutable directory version.
    pub const DIR_VERSION_SIGNATURE: &str = "mf-grid:v1:dir-version-signature";
    /// Synthetic nonce for an encrypted child write cap.
    pub const DIR_CHILD_WRITECAP_NONCE: &str = "mf-grid:v1:dir-child-writecap-nonce";
}

/// Appends `netstring(data)` (`<len>:<data>,`) to `out`.
pub(crate) fn netstring_into(out: &mut impl Digest, data: &[u8]) {
    out.update(data.len().to_string().as_bytes());
    out.update(b":");
    out.update(data);
    out.update(b",");
}

/// SHA-256 of `netstring(tag) ‖ netstring(part₁) ‖ …`.
///
/// Framing every part makes the encoding injective: `("ab", "c")` and
/// `("a", "bc")` hash differently.
pub(crate) fn tagged_hash(tag: &str, parts: &[&[u8]]) -> Key32 {
    let mut h = Sha256::new();
    netstring_into(&mut h, tag.as_bytes());
    for part in parts {
        netstring_into(&mut h, part);
    }
    h.finalize().into()
}

/// What an immutable object holds; part of the key derivation and the header,
/// so a file and a directory with identical bytes never share a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    /// Immutable file contents.
    File,
    /// A serialised immutable directory.
    Dir,
}

impl ObjectKind {
    /// The byte stored in object headers.
    pub(crate) fn header_byte(self) -> u8 {
        match self {
            ObjectKind::File => b'F',
            ObjectKind::Dir => b'D',
        }
    }

    /// A short human name, used in errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ObjectKind::File => "file",
            ObjectKind::Dir => "dir",
        }
    }
}

/// Derives the convergent encryption key of some content.
///
/// The key is `HMAC-SHA256(secret, netstring(tag) ‖ netstring(kind) ‖
/// netstring(chunk size) ‖ content)`. Keying with the folder's secret means
/// someone without it cannot confirm a guess of a file's contents from its
/// capability or storage index; including the chunk size means different
/// encodings never share a key (as Tahoe includes its encoding parameters).
pub(crate) struct ConvergentHasher {
    mac: Hmac<Sha256>,
}

impl ConvergentHasher {
    /// Starts hashing content of `kind`, to be encoded in `chunk_size` chunks.
    pub(crate) fn new(secret: &Key32, kind: ObjectKind, chunk_size: u32) -> ConvergentHasher {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        for part in [
            tags::CONVERGENT_KEY.as_bytes(),
            kind.name().as_bytes(),
            chunk_size.to_string().as_bytes(),
        ] {
            mac.update(part.len().to_string().as_bytes());
            mac.update(b":");
            mac.update(part);
            mac.update(b",");
        }
        ConvergentHasher { mac }
    }

    /// Feeds more content.
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.mac.update(data);
    }

    /// The content key.
    pub(crate) fn finalize(self) -> Key32 {
        self.mac.finalize().into_bytes().into()
    }
}

/// The storage index (on-disk name) of an immutable object with `key`.
pub(crate) fn chk_storage_index(key: &Key32) -> Key32 {
    tagged_hash(tags::CHK_STORAGE_INDEX, &[key])
}

/// Authentication failed: the bytes are not what the key holder wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuthFailed;

/// AES-256-GCM over a sequence of chunks, STREAM-style.
///
/// Chunk `i` is sealed with nonce `be64(i) ‖ 0₃ ‖ last`, where `last` is 1 for
/// the final chunk and 0 otherwise. A reader that knows how many chunks to
/// expect therefore detects reordered, repeated, dropped or truncated chunks,
/// and every chunk also authenticates the caller's associated data (the
/// object header). Each key encrypts exactly one plaintext (keys are derived
/// from the content), so deterministic nonces are safe.
pub(crate) struct ChunkCipher {
    aead: LessSafeKey,
}

impl ChunkCipher {
    /// A cipher under `key`.
    pub(crate) fn new(key: &Key32) -> ChunkCipher {
        ChunkCipher { aead: aead(key) }
    }

    fn nonce(index: u64, last: bool) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[..8].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(last);
        n
    }

    /// Encrypts `buf` in place and returns its tag.
    pub(crate) fn seal(&self, index: u64, last: bool, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        seal_with(&self.aead, Self::nonce(index, last), aad, buf)
    }

    /// Decrypts `buf` in place if `tag` authenticates it.
    pub(crate) fn open(
        &self,
        index: u64,
        last: bool,
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), AuthFailed> {
        open_with(&self.aead, &Self::nonce(index, last), aad, buf, tag)
    }
}

/// One-shot AES-256-GCM with an explicit nonce; returns `ciphertext ‖ tag`.
pub(crate) fn seal_message(
    key: &Key32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plain: &[u8],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(plain.len() + TAG_LEN);
    buf.extend_from_slice(plain);
    let tag = seal_in_place(key, nonce, aad, &mut buf);
    buf.extend_from_slice(&tag);
    buf
}

/// [`seal_message`] without a copy: encrypts `buf` where it is and returns
/// the tag, which the caller appends (the sealed form is `buf ‖ tag`).
pub(crate) fn seal_in_place(
    key: &Key32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> [u8; TAG_LEN] {
    seal_with(&aead(key), *nonce, aad, buf)
}

/// Inverse of [`seal_message`]: `sealed` is `ciphertext ‖ tag`.
pub(crate) fn open_message(
    key: &Key32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, AuthFailed> {
    if sealed.len() < TAG_LEN {
        return Err(AuthFailed);
    }
    let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    let mut buf = ct.to_vec();
    open_in_place(key, nonce, aad, &mut buf, tag)?;
    Ok(buf)
}

/// [`open_message`] without a copy: decrypts `buf` where it is, after
/// checking it against `tag`.
pub(crate) fn open_in_place(
    key: &Key32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), AuthFailed> {
    open_with(&aead(key), nonce, aad, buf, tag)
}

/// AES-256-GCM under `key`. `ring`'s, for its speed: ~8.6 GB/s on one core
/// of this machine against 1.4 GB/s for the RustCrypto crate, where every
/// byte synced is sealed once and opened once.
fn aead(key: &Key32) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("AES-256 takes a 32-byte key"))
}

/// Encrypts `buf` in place and returns its tag.
fn seal_with(
    aead: &LessSafeKey,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> [u8; TAG_LEN] {
    let tag = aead
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
        .expect("chunks and messages are far below AES-GCM's length limit");
    tag.as_ref().try_into().expect("AES-GCM tags are 16 bytes")
}

/// Decrypts `buf` in place if `tag` authenticates it.
fn open_with(
    aead: &LessSafeKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), AuthFailed> {
    let tag = Tag::try_from(tag).map_err(|_| AuthFailed)?;
    aead.open_in_place_separate_tag(
        Nonce::assume_unique_for_key(*nonce),
        Aad::from(aad),
        tag,
        buf,
        0..,
    )
    .map(|_| ())
    .map_err(|_| AuthFailed)
}

/// Room a directory version's bytes need in front of them to be signed or
/// verified in place: a signature covers the domain tag, a zero and the
/// directory's storage index before the version itself, so that it can
/// never be replayed onto another directory or another protocol. A
/// version is tens of MB for a big directory; a copy of it with the prefix
/// in front was the largest single allocation of a publish.
pub(crate) const SIGNED_PREFIX_LEN: usize = tags::DIR_VERSION_SIGNATURE.len() + 1 + 32;

/// What a reader of a mutable directory holds: enough to verify and decrypt,
/// not to sign.
#[derive(Clone)]
pub(crate) struct DirReadKeys {
    /// Symmetric key of the directory's contents.
    pub read_key: Key32,
    /// Ed25519 key every version must be signed with.
    pub verifying: VerifyingKey,
    /// Where the versions live (hash of the verifying key).
    pub storage_index: Key32,
}

impl DirReadKeys {
    /// Derives the storage index from the verifying key.
    pub(crate) fn new(read_key: Key32, verifying: VerifyingKey) -> DirReadKeys {
        let storage_index = tagged_hash(tags::DIR_STORAGE_INDEX, &[verifying.as_bytes()]);
        DirReadKeys {
            read_key,
            verifying,
            storage_index,
        }
    }

    /// Checks a signature made by [`DirWriteKeys::sign_in_place`] over
    /// `msg[SIGNED_PREFIX_LEN..]`; the bytes in front are room for the
    /// prefix, and are overwritten.
    pub(crate) fn verify_in_place(
        &self,
        msg: &mut [u8],
        signature: &[u8],
    ) -> Result<(), AuthFailed> {
        let sig = Signature::from_slice(signature).map_err(|_| AuthFailed)?;
        self.bind(msg).ok_or(AuthFailed)?;
        self.verifying
            .verify_strict(msg, &sig)
            .map_err(|_| AuthFailed)
    }

    /// Writes the prefix into the room at the front of `msg`; `None` if
    /// there is no such room.
    fn bind(&self, msg: &mut [u8]) -> Option<()> {
        let tag = tags::DIR_VERSION_SIGNATURE.as_bytes();
        let prefix = msg.get_mut(..SIGNED_PREFIX_LEN)?;
        prefix[..tag.len()].copy_from_slice(tag);
        prefix[tag.len()] = 0;
        prefix[tag.len() + 1..].copy_from_slice(&self.storage_index);
        Some(())
    }
}

/// Everything the holder of a mutable directory's write cap can derive.
pub(crate) struct DirWriteKeys {
    signing: SigningKey,
    /// Key that hides children's write caps from read-only holders.
    pub child_writecap_key: Key32,
    /// The read side.
    pub read: DirReadKeys,
}

impl DirWriteKeys {
    /// Derives all keys from the 32-byte seed.
    pub(crate) fn from_seed(seed: Key32) -> DirWriteKeys {
        let signing = SigningKey::from_bytes(&seed);
        let read_key = tagged_hash(tags::DIR_READ_KEY, &[&seed]);
        let child_writecap_key = tagged_hash(tags::DIR_CHILD_WRITECAP_KEY, &[&seed]);
        let read = DirReadKeys::new(read_key, signing.verifying_key());
        DirWriteKeys {
            signing,
            child_writecap_key,
            read,
        }
    }

    /// Signs `msg[SIGNED_PREFIX_LEN..]`, bound to this directory (see
    /// [`SIGNED_PREFIX_LEN`]); the bytes in front are room for the prefix,
    /// and are overwritten.
    ///
    /// # Panics
    ///
    /// If `msg` has no such room: a bug of the caller's.
    pub(crate) fn sign_in_place(&self, msg: &mut [u8]) -> [u8; SIG_LEN] {
        self.read
            .bind(msg)
            .expect("a version is signed with room for the prefix");
        self.signing.sign(msg).to_bytes()
    }
}

/// Fills a fresh array with operating-system randomness.
pub(crate) fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_hash_frames_its_parts() {
        assert_ne!(
            tagged_hash("t", &[b"ab", b"c"]),
            tagged_hash("t", &[b"a", b"bc"])
        );
        assert_ne!(tagged_hash("t1", &[b"x"]), tagged_hash("t2", &[b"x"]));
    }

    #[test]
    fn convergent_key_depends_on_secret_kind_and_chunking() {
        let k = |secret: u8, kind, cs| {
            let mut h = ConvergentHasher::new(&[secret; 32], kind, cs);
            h.update(b"hello");
            h.finalize()
        };
        let base = k(1, ObjectKind::File, 1024);
        assert_eq!(base, k(1, ObjectKind::File, 1024));
        assert_ne!(base, k(2, ObjectKind::File, 1024));
        assert_ne!(base, k(1, ObjectKind::Dir, 1024));
        assert_ne!(base, k(1, ObjectKind::File, 2048));
    }

    /// The object format is AES-256-GCM as specified: chunks sealed by any
    /// build, or by any other implementation, read the same. Expected values
    /// from Python's `cryptography` (OpenSSL), given the same key, nonces
    /// (`be64(index) ‖ 0₃ ‖ last`) and associated data.
    #[test]
    fn chunk_cipher_is_standard_aes_256_gcm() {
        let key: Key32 = std::array::from_fn(|i| i as u8);
        let c = ChunkCipher::new(&key);
        let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
        for (index, last, plain, sealed, tag) in [
            (
                1,
                false,
                &b"a chunk of a magic folder object"[..],
                "502b071544f3b7b28b35befa9e5a66ea82808e9d908fdea9d16f2d3654defcc2",
                "f0523aa15d52953418495962a9a87acb",
            ),
            (
                2,
                true,
                b"the last one",
                "5717dae9d6f6b06460e9d77e",
                "93d77fdfe652a74c5f7ad19db1c2318e",
            ),
        ] {
            let mut buf = plain.to_vec();
            let t = c.seal(index, last, b"MFGRID header", &mut buf);
            assert_eq!((hex(&buf), hex(&t)), (sealed.to_owned(), tag.to_owned()));
            c.open(index, last, b"MFGRID header", &mut buf, &t).unwrap();
            assert_eq!(buf, plain);
        }
    }

    #[test]
    fn chunk_cipher_binds_index_last_flag_and_aad() {
        let c = ChunkCipher::new(&[7; 32]);
        let mut buf = b"some chunk".to_vec();
        let tag = c.seal(3, false, b"hdr", &mut buf);
        let sealed = buf.clone();
        for (i, last, aad) in [
            (4, false, &b"hdr"[..]),
            (3, true, b"hdr"),
            (3, false, b"hdR"),
        ] {
            let mut b = sealed.clone();
            assert_eq!(c.open(i, last, aad, &mut b, &tag), Err(AuthFailed));
        }
        let mut b = sealed.clone();
        c.open(3, false, b"hdr", &mut b, &tag).unwrap();
        assert_eq!(b, b"some chunk");
    }

    /// `version` with room for the prefix in front.
    fn roomy(version: &[u8]) -> Vec<u8> {
        let mut msg = vec![0xAA; SIGNED_PREFIX_LEN];
        msg.extend_from_slice(version);
        msg
    }

    #[test]
    fn dir_signatures_are_bound_to_the_directory() {
        let a = DirWriteKeys::from_seed([1; 32]);
        let b = DirWriteKeys::from_seed([2; 32]);
        let sig = a.sign_in_place(&mut roomy(b"version"));
        a.read
            .verify_in_place(&mut roomy(b"version"), &sig)
            .unwrap();
        assert!(a
            .read
            .verify_in_place(&mut roomy(b"versioN"), &sig)
            .is_err());
        assert!(b
            .read
            .verify_in_place(&mut roomy(b"version"), &sig)
            .is_err());
        assert!(a
            .read
            .verify_in_place(&mut roomy(b"version"), &sig[..63])
            .is_err());
        assert!(a.read.verify_in_place(&mut [0; 10], &sig).is_err());
    }

    /// The bytes signed are fixed: a directory's versions on disk must
    /// verify whatever build wrote them.
    #[test]
    fn a_dir_signature_covers_tag_zero_storage_index_and_version() {
        let keys = DirWriteKeys::from_seed([3; 32]);
        let sig = keys.sign_in_place(&mut roomy(b"a version"));
        let mut msg = tags::DIR_VERSION_SIGNATURE.as_bytes().to_vec();
        msg.push(0);
        msg.extend_from_slice(&keys.read.storage_index);
        msg.extend_from_slice(b"a version");
        let sig = Signature::from_slice(&sig).unwrap();
        keys.read.verifying.verify_strict(&msg, &sig).unwrap();
    }

    #[test]
    fn base32_is_lowercase_and_canonical() {
        let s = BASE32.encode(&[0xff; 32]);
        assert_eq!(s.len(), 52);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_eq!(BASE32.decode(s.as_bytes()).unwrap(), vec![0xff; 32]);
        // A non-canonical last character (low bits set) is rejected.
        let mut bad = BASE32.encode(&[0; 32]).into_bytes();
        *bad.last_mut().unwrap() = b'b';
        assert!(BASE32.decode(&bad).is_err());
    }
}
