//! Mutable directories: signed, encrypted versions published lock-free.
//!
//! # Keys
//!
//! The write cap holds a random 32-byte seed. From it: the Ed25519 signing
//! key (the seed *is* the Ed25519 secret key), the read key
//! (`H(tag, seed)`) and the key hiding children's write caps. The read cap
//! holds the read key and the verifying key; the storage index is
//! `H(tag, verifying key)`. Every step is one-way, so a read cap never yields
//! a write cap, and the storage index (a directory name on disk) yields
//! neither.
//!
//! # Version format (`mutable/<si>/<seqnum, 20 digits>`)
//!
//! ```text
//! offset  size  field
//! 0       6     magic "MFGRID"
//! 6       1     format version (1)
//! 7       1     kind 'M'
//! 8       8     seqnum (big-endian); must equal the file name
//! 16      12    nonce (random per version)
//! 28      8     ciphertext length n (big-endian), tag included
//! 36      n     AES-256-GCM(read key, nonce, aad = si ‖ bytes 0..36) of the
//!               serialised children (see `dirnode`)
//! 36+n    64    Ed25519 signature over (tag ‖ si ‖ bytes 0..36+n)
//! ```
//!
//! A reader with only the read cap checks the signature (so only write-cap
//! holders can produce versions, and a version cannot be moved to another
//! directory or another seqnum) and then decrypts.
//!
//! # Publishing without locks
//!
//! Advisory locks are unreliable on shared and network file systems, so
//! writers never lock. A write reads the newest version `n`, applies its
//! change, writes version `n+1` to a temporary file, fsyncs it, and publishes
//! it with `link(temp, n+1)`. Creating a hard link is atomic and fails if the
//! name exists, so of several writers racing from the same `n` exactly one
//! wins; the others re-read and redo their whole read-modify-write after a
//! short randomised back-off. No update is lost, and none is applied twice.
//!
//! Readers take the highest seqnum. Old versions are pruned: beyond the
//! newest [`KEEP_FULL`] they are truncated to empty "stubs", and beyond
//! [`KEEP_NAMES`] their names are removed, oldest first. Stubs exist so that
//! a *name* outlives its content: exclusive linking only protects names that
//! exist. A writer that stalled for a long time (a suspended laptop) could
//! otherwise read version `n`, sleep while `n+1…` are published and pruned,
//! then link a stale `n+1` into the gap. So after linking, a writer re-reads
//! `n`: if it is still the version it read, or a stub, then `n+1` never
//! existed before (names are removed oldest-first, so a missing `n+1` would
//! imply a missing `n`), and the write stands. Otherwise it removes its stale
//! link and retries. The one residual false alarm needs [`KEEP_NAMES`] other
//! writes inside a few system calls, and costs a retry, never a lost update.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::caps::short_name;
use super::crypto::{
    open_in_place, random_bytes, seal_in_place, DirReadKeys, DirWriteKeys, Key32, NONCE_LEN,
    SIGNED_PREFIX_LEN, SIG_LEN, TAG_LEN,
};
use super::dirnode;
use super::immutable::{FORMAT_VERSION, MAGIC};
use super::store::{fsync_dir, io_err, Store};
use crate::{DirChildren, GridError, GridResult, Listed, Revision};
use sha2::{Digest, Sha256};

/// Versions newer than this many (counting the newest) keep their content.
pub(crate) const KEEP_FULL: u64 = 4;
/// Versions newer than this many keep at least their name (as a stub).
pub(crate) const KEEP_NAMES: u64 = 256;
/// Bytes before the ciphertext.
const HEADER_LEN: usize = 36;
/// Largest version a reader will load into memory.
const MAX_VERSION_LEN: u64 = 256 << 20;
/// How long a writer keeps retrying under contention before giving up.
const MAX_CONTENTION: Duration = Duration::from_secs(120);
/// How often a reader retries when the newest version is pruned under it.
const MAX_READ_ATTEMPTS: usize = 32;

fn version_name(seq: u64) -> String {
    format!("{seq:020}")
}

fn parse_version_name(name: &OsStr) -> Option<u64> {
    let s = name.to_str()?;
    if s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// The seqnums present in a mutable directory, ascending.
fn list_versions(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs: Vec<u64> = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(seq) = parse_version_name(&entry?.file_name()) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Seals directory contents as version `seq`, encrypting and signing them
/// in place (no second copy of a big directory).
fn encode_version(keys: &DirWriteKeys, seq: u64, plain: Vec<u8>) -> io::Result<Vec<u8>> {
    let nonce: [u8; NONCE_LEN] = random_bytes()?;
    let ct_len = (plain.len() + TAG_LEN) as u64;
    // Room for the signature's prefix, taken off once signed.
    let mut front = vec![0; SIGNED_PREFIX_LEN];
    front.extend_from_slice(MAGIC);
    front.push(FORMAT_VERSION);
    front.push(b'M');
    front.extend_from_slice(&seq.to_be_bytes());
    front.extend_from_slice(&nonce);
    front.extend_from_slice(&ct_len.to_be_bytes());
    let aad = aad(&keys.read.storage_index, &front[SIGNED_PREFIX_LEN..]);
    let mut out = plain;
    out.reserve_exact(SIGNED_PREFIX_LEN + HEADER_LEN + TAG_LEN + SIG_LEN);
    out.splice(0..0, front);
    let tag = seal_in_place(
        &keys.read.read_key,
        &nonce,
        &aad,
        &mut out[SIGNED_PREFIX_LEN + HEADER_LEN..],
    );
    out.extend_from_slice(&tag);
    let sig = keys.sign_in_place(&mut out);
    out.drain(..SIGNED_PREFIX_LEN);
    out.extend_from_slice(&sig);
    Ok(out)
}

fn aad(si: &Key32, header: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(si.len() + header.len());
    a.extend_from_slice(si);
    a.extend_from_slice(header);
    a
}

/// A version file's bytes, read with room in front of them for the
/// signature's prefix ([`SIGNED_PREFIX_LEN`]), so that verifying and
/// decrypting a big directory copies nothing.
struct RawVersion(Vec<u8>);

impl RawVersion {
    /// The file's bytes.
    fn bytes(&self) -> &[u8] {
        &self.0[SIGNED_PREFIX_LEN..]
    }
}

/// Verifies and decrypts version file `seq`; returns the serialised children.
fn decode_version(
    keys: &DirReadKeys,
    seq: u64,
    raw: RawVersion,
    name: &str,
) -> GridResult<Vec<u8>> {
    let integrity = |detail: String| GridError::Integrity {
        cap: name.to_string(),
        detail,
    };
    let bytes = raw.bytes();
    if bytes.len() < HEADER_LEN + TAG_LEN + SIG_LEN {
        return Err(integrity(format!(
            "version {seq} is truncated ({} bytes)",
            bytes.len()
        )));
    }
    if &bytes[..6] != MAGIC || bytes[6] != FORMAT_VERSION || bytes[7] != b'M' {
        return Err(integrity(format!(
            "version {seq} is not a directory version of a known format"
        )));
    }
    let stored_seq = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let nonce: [u8; NONCE_LEN] = bytes[16..28].try_into().expect("12 bytes");
    let ct_len = u64::from_be_bytes(bytes[28..36].try_into().expect("8 bytes"));
    let expected = (HEADER_LEN as u64 + SIG_LEN as u64).checked_add(ct_len);
    if expected != Some(bytes.len() as u64) {
        return Err(integrity(format!("version {seq} is truncated or extended")));
    }
    let aad = aad(&keys.storage_index, &bytes[..HEADER_LEN]);
    let mut buf = raw.0;
    let sig_at = buf.len() - SIG_LEN;
    let sig: [u8; SIG_LEN] = buf[sig_at..].try_into().expect("64 bytes");
    let forged = || {
        integrity(format!(
            "version {seq} has a bad signature: not written by a holder of the write capability"
        ))
    };
    keys.verify_in_place(&mut buf[..sig_at], &sig)
        .map_err(|_| forged())?;
    if stored_seq != seq {
        return Err(integrity(format!(
            "version file {seq} holds seqnum {stored_seq} (replayed)"
        )));
    }
    let tag_at = sig_at - TAG_LEN;
    let (sealed, tag) = buf[SIGNED_PREFIX_LEN + HEADER_LEN..sig_at]
        .split_at_mut(tag_at - SIGNED_PREFIX_LEN - HEADER_LEN);
    open_in_place(&keys.read_key, &nonce, &aad, sealed, tag)
        .map_err(|_| integrity(format!("version {seq} failed decryption")))?;
    buf.truncate(tag_at);
    buf.drain(..SIGNED_PREFIX_LEN + HEADER_LEN);
    Ok(buf)
}

/// The newest version of a directory, verified and decrypted.
pub(crate) struct Head {
    /// Its seqnum (a writer publishes `seq + 1`).
    pub seq: u64,
    /// The SHA-256 of the file's bytes, to confirm later that it was not
    /// replaced (a digest, not the bytes: a big directory's version is
    /// tens of MB, and an update already holds several copies of it).
    raw_digest: [u8; 32],
    /// The serialised children: of version `seq`, or — when that one is
    /// damaged — of the newest older version that is intact.
    pub plain: Vec<u8>,
    /// The version file these bytes were read from.
    id: VersionId,
    /// Set when version `seq` is damaged and `plain` comes from an older one.
    pub damaged: Option<String>,
}

/// The identity of a version file as it was read. A version file is
/// linked into place once, complete, and afterwards only truncated to a
/// stub or removed (pruning); a name taken again later is a new file. So
/// while a file still has this identity, it holds the bytes that were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VersionId {
    seq: u64,
    dev: u64,
    ino: u64,
    len: u64,
    ctime: (i64, i64),
}

impl VersionId {
    fn of(seq: u64, m: &fs::Metadata) -> VersionId {
        use std::os::unix::fs::MetadataExt;
        VersionId {
            seq,
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Reads the newest version of the directory with `keys`.
pub(crate) fn read_head(store: &Store, keys: &DirReadKeys) -> GridResult<Head> {
    let name = short_name("dir", &keys.storage_index);
    let dir = store.mutable_dir(&keys.storage_index);
    let ctx = || format!("reading directory {name}");
    let newest = |dir: &Path| -> GridResult<Option<u64>> {
        match list_versions(dir) {
            Ok(v) => Ok(v.last().copied()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(GridError::NotFound(name.clone())),
            Err(e) => Err(io_err(ctx())(e)),
        }
    };
    for _ in 0..MAX_READ_ATTEMPTS {
        let Some(seq) = newest(&dir)? else {
            return Err(GridError::NotFound(name));
        };
        let path = dir.join(version_name(seq));
        let (raw, meta) = match read_bounded(&path, MAX_VERSION_LEN) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // pruned meanwhile
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(GridError::Integrity {
                    cap: name,
                    detail: format!("version {seq} is implausibly large"),
                })
            }
            Err(e) => return Err(io_err(ctx())(e)),
        };
        let id = VersionId::of(seq, &meta);
        let raw_digest = Sha256::digest(raw.bytes()).into();
        match decode_version(keys, seq, raw, &name) {
            Ok(plain) => {
                return Ok(Head {
                    seq,
                    raw_digest,
                    plain,
                    id,
                    damaged: None,
                });
            }
            // A version can be pruned (truncated) while we read it; that is
            // only possible once newer ones exist. Otherwise it is damage.
            Err(e) => {
                if newest(&dir)?.is_some_and(|n| n > seq) {
                    continue;
                }
                // Damage (a flipped bit on a shared disk) must not cut this
                // directory off: read the newest older version that is
                // intact (the last few are kept whole, see `KEEP_FULL`), and
                // say so. A writer builds on it and publishes `seq + 1`.
                let Some((older, plain)) = newest_intact(&dir, keys, seq, &name) else {
                    return Err(e);
                };
                return Ok(Head {
                    seq,
                    raw_digest,
                    plain,
                    id,
                    damaged: Some(format!(
                        "the newest version ({seq}) of directory {name} is damaged ({e}); \
                         using version {older}: changes made in {seq} are missing until its writer publishes again"
                    )),
                });
            }
        }
    }
    Err(GridError::Unavailable(format!(
        "directory {name} kept changing while being read"
    )))
}

/// The newest version older than `below` that reads, verifies and decrypts.
fn newest_intact(dir: &Path, keys: &DirReadKeys, below: u64, name: &str) -> Option<(u64, Vec<u8>)> {
    let seqs = list_versions(dir).ok()?;
    seqs.into_iter()
        .rev()
        .filter(|s| *s < below)
        .find_map(|seq| {
            let (raw, _) = read_bounded(&dir.join(version_name(seq)), MAX_VERSION_LEN).ok()?;
            // Stubs (pruned versions) are empty and fail to decode: skipped.
            let plain = decode_version(keys, seq, raw, name).ok()?;
            Some((seq, plain))
        })
}

/// Reads a whole version file of at most `limit` bytes; also returns its
/// metadata from before the read.
fn read_bounded(path: &Path, limit: u64) -> io::Result<(RawVersion, fs::Metadata)> {
    let mut f = fs::File::open(path)?;
    let meta = f.metadata()?;
    let len = meta.len();
    if len > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
    }
    let mut buf = Vec::with_capacity(SIGNED_PREFIX_LEN + len as usize);
    buf.resize(SIGNED_PREFIX_LEN, 0);
    io::Read::read_to_end(&mut f, &mut buf)?;
    Ok((RawVersion(buf), meta))
}

/// The identity of a directory's newest version file now, if it can be
/// told cheaply (`None` on any error: the caller then reads it properly).
fn newest_id(store: &Store, si: &Key32) -> Option<VersionId> {
    let dir = store.mutable_dir(si);
    let seq = *list_versions(&dir).ok()?.last()?;
    let meta = fs::symlink_metadata(dir.join(version_name(seq))).ok()?;
    Some(VersionId::of(seq, &meta))
}

/// Lists a directory given its read keys (and write keys if held), unless
/// its newest version is still the file that gave the revision `known`:
/// that check costs a `readdir` and a `stat` instead of reading, verifying,
/// decrypting and parsing the whole version (O(entries), ~0.1 s per
/// 100,000 entries), and polling makes it every few seconds.
pub(crate) fn list_changed(
    store: &Store,
    read: &DirReadKeys,
    writecap_key: Option<&Key32>,
    known: Option<&Revision>,
) -> GridResult<Option<Listed>> {
    let si = &read.storage_index;
    // A listing with child write caps differs from one without.
    let revision = |id: &VersionId| {
        Revision::digest(&[
            b"mf-embedded-dir",
            si,
            &[u8::from(writecap_key.is_some())],
            &id.seq.to_le_bytes(),
            &id.dev.to_le_bytes(),
            &id.ino.to_le_bytes(),
            &id.len.to_le_bytes(),
            &id.ctime.0.to_le_bytes(),
            &id.ctime.1.to_le_bytes(),
        ])
    };
    if let (Some(known), Some(id)) = (known, newest_id(store, si)) {
        if revision(&id) == *known {
            return Ok(None);
        }
    }
    let head = read_head(store, read)?;
    let children = dirnode::decode(&head.plain, writecap_key, &short_name("dir", si))?;
    Ok(Some(Listed {
        revision: revision(&head.id),
        children,
        problems: head.damaged.into_iter().collect(),
    }))
}

/// Creates a new, empty mutable directory; returns its seed.
pub(crate) fn create(store: &Store) -> GridResult<Key32> {
    let seed: Key32 = random_bytes().map_err(io_err("creating directory: gathering randomness"))?;
    let keys = DirWriteKeys::from_seed(seed);
    let name = short_name("dir", &keys.read.storage_index);
    let ctx = || format!("creating directory {name}");
    let dir = store.mutable_dir(&keys.read.storage_index);
    fs::create_dir(&dir).map_err(io_err(ctx()))?;
    fsync_dir(store.mutable_root()).map_err(io_err(ctx()))?;
    let plain = dirnode::encode_mutable(&DirChildren::new(), &keys.child_writecap_key)?;
    let raw = encode_version(&keys, 1, plain).map_err(io_err(ctx()))?;
    let target = dir.join(version_name(1));
    let mut temp = store.temp_file().map_err(io_err(ctx()))?;
    temp.file().write_all(&raw).map_err(io_err(ctx()))?;
    temp.sync().map_err(io_err(ctx()))?;
    fs::hard_link(temp.path(), &target).map_err(io_err(ctx()))?;
    drop(temp);
    fsync_dir(&dir).map_err(io_err(ctx()))?;
    Ok(seed)
}

/// Applies `change` to the directory's children and publishes the result,
/// retrying from a fresh read whenever another writer got there first.
///
/// `change` returns whether it changed anything (nothing is written if not)
/// or an error that aborts the whole operation unchanged.
pub(crate) fn modify(
    store: &Store,
    keys: &DirWriteKeys,
    change: &mut dyn FnMut(&mut DirChildren) -> GridResult<bool>,
) -> GridResult<()> {
    let si = &keys.read.storage_index;
    let name = short_name("dir", si);
    let ctx = || format!("updating directory {name}");
    let dir = store.mutable_dir(si);
    let started = Instant::now();
    let mut attempt: u32 = 0;
    loop {
        // Each copy of a big directory is tens of MB: every one is dropped
        // as soon as the next exists.
        let mut head = read_head(store, &keys.read)?;
        let plain = std::mem::take(&mut head.plain);
        let mut children = dirnode::decode(&plain, Some(&keys.child_writecap_key), &name)?;
        drop(plain);
        if !change(&mut children)? {
            return Ok(());
        }
        let plain = dirnode::encode_mutable(&children, &keys.child_writecap_key)?;
        drop(children);
        let next = head.seq + 1;
        let raw = encode_version(keys, next, plain).map_err(io_err(ctx()))?;
        let mut temp = store.temp_file().map_err(io_err(ctx()))?;
        temp.file().write_all(&raw).map_err(io_err(ctx()))?;
        temp.sync().map_err(io_err(ctx()))?;
        let target = dir.join(version_name(next));
        match fs::hard_link(temp.path(), &target) {
            Ok(()) => {
                drop(temp);
                if built_on(&dir, &head).map_err(io_err(ctx()))? {
                    fsync_dir(&dir).map_err(io_err(ctx()))?;
                    prune(&dir, next);
                    return Ok(());
                }
                // We filled a gap left by pruning: our base was stale.
                tracing::debug!(dir = %name, seq = next, "stale write withdrawn; retrying");
                match fs::remove_file(&target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(ctx())(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(format!("{}: publishing version {next}", ctx()))(e)),
        }
        attempt += 1;
        if started.elapsed() > MAX_CONTENTION {
            return Err(GridError::Unavailable(format!(
                "directory {name}: gave up after {attempt} attempts under contention"
            )));
        }
        backoff(attempt);
    }
}

/// After linking `head.seq + 1`: is `head` still there, unchanged or as a
/// stub? Then the link extended the real newest version (see module docs).
fn built_on(dir: &Path, head: &Head) -> io::Result<bool> {
    match fs::read(dir.join(version_name(head.seq))) {
        Ok(bytes) => Ok(bytes.is_empty() || Sha256::digest(&bytes)[..] == head.raw_digest),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sleeps a random time that grows with the attempt number (up to ~50 ms),
/// so racing writers spread out instead of colliding again in lockstep.
fn backoff(attempt: u32) {
    let cap_us = (500u64 << attempt.min(7)).min(50_000);
    let r = u64::from_le_bytes(random_bytes().unwrap_or([7; 8]));
    std::thread::sleep(Duration::from_micros(100 + r % cap_us));
}

/// Best-effort pruning after publishing `newest`: stubs beyond
/// [`KEEP_FULL`], names beyond [`KEEP_NAMES`], oldest first. Failures only
/// leave more old versions around.
fn prune(dir: &Path, newest: u64) {
    let Ok(versions) = list_versions(dir) else {
        return;
    };
    // Recent stubs every time; a full stub sweep now and then catches
    // versions skipped by writers that crashed before pruning.
    let sweep_from = if newest & 31 == 0 {
        0
    } else {
        newest.saturating_sub(KEEP_FULL + 8)
    };
    for seq in versions {
        let path: PathBuf = dir.join(version_name(seq));
        if seq + KEEP_NAMES <= newest {
            let _ = fs::remove_file(&path);
        } else if seq + KEEP_FULL <= newest && seq >= sweep_from {
            // Never create: a removed name must stay removed.
            if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                if f.metadata().is_ok_and(|m| m.len() > 0) {
                    let _ = f.set_len(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::caps;
    use crate::DirEntry;

    fn setup() -> (tempfile::TempDir, Store, DirWriteKeys) {
        let d = tempfile::tempdir().unwrap();
        let store = Store::create(d.path()).unwrap();
        let seed = create(&store).unwrap();
        (d, store, DirWriteKeys::from_seed(seed))
    }

    fn add(store: &Store, keys: &DirWriteKeys, name: &str) {
        let cap = caps::immutable(false, &[1; 32], 1);
        modify(store, keys, &mut |c| {
            c.insert(name.to_string(), DirEntry::new(cap.clone()));
            Ok(true)
        })
        .unwrap();
    }

    #[test]
    fn pruning_keeps_recent_content_and_names() {
        let (_d, store, keys) = setup();
        for i in 0..40 {
            add(&store, &keys, &format!("n{i}"));
        }
        let dir = store.mutable_dir(&keys.read.storage_index);
        let versions = list_versions(&dir).unwrap();
        assert_eq!(versions.last(), Some(&41));
        for seq in versions {
            let len = fs::metadata(dir.join(version_name(seq))).unwrap().len();
            assert_eq!(len > 0, seq + KEEP_FULL > 41, "seq {seq} len {len}");
        }
        assert_eq!(
            list_changed(&store, &keys.read, None, None)
                .unwrap()
                .unwrap()
                .children
                .len(),
            40
        );
    }

    #[test]
    fn a_stale_writer_never_fills_a_pruned_gap() {
        let (_d, store, keys) = setup();
        add(&store, &keys, "a");
        let stale = read_head(&store, &keys.read).unwrap();
        // Many writes later, every name up to and including the stale head
        // and its successor has been removed.
        let dir = store.mutable_dir(&keys.read.storage_index);
        for i in 0..5 {
            add(&store, &keys, &format!("b{i}"));
        }
        for seq in 1..=stale.seq + 1 {
            fs::remove_file(dir.join(version_name(seq))).unwrap();
        }
        // Replay the stale writer's link of seq+1, then its check.
        let raw = encode_version(&keys, stale.seq + 1, stale.plain.clone()).unwrap();
        fs::write(dir.join(version_name(stale.seq + 1)), raw).unwrap();
        assert!(!built_on(&dir, &stale).unwrap());
        // Whereas an up-to-date head is confirmed, also once stubbed.
        let head = read_head(&store, &keys.read).unwrap();
        assert!(built_on(&dir, &head).unwrap());
        fs::File::options()
            .write(true)
            .open(dir.join(version_name(head.seq)))
            .unwrap()
            .set_len(0)
            .unwrap();
        assert!(built_on(&dir, &head).unwrap());
    }

    /// A forged or replayed newest version is never used: the directory
    /// reads as its newest genuine version, and the listing says why.
    #[test]
    fn forged_and_replayed_versions_are_rejected() {
        let (_d, store, keys) = setup();
        add(&store, &keys, "a");
        let head = read_head(&store, &keys.read).unwrap();
        let dir = store.mutable_dir(&keys.read.storage_index);
        // Signed by another key but otherwise perfect (same read key and si).
        let mut forger = DirWriteKeys::from_seed([42; 32]);
        forger.read.read_key = keys.read.read_key;
        forger.read.storage_index = keys.read.storage_index;
        let forged = encode_version(&forger, head.seq + 1, head.plain.clone()).unwrap();
        fs::write(dir.join(version_name(head.seq + 1)), &forged).unwrap();
        let read = read_head(&store, &keys.read).unwrap();
        assert_eq!(read.plain, head.plain, "the genuine version is read");
        let why = read.damaged.unwrap();
        assert!(
            why.contains("signature") && why.contains(&format!("using version {}", head.seq)),
            "{why}"
        );
        // A genuine old version replayed under a newer seqnum.
        let replay = encode_version(&keys, head.seq, head.plain.clone()).unwrap();
        fs::write(dir.join(version_name(head.seq + 1)), &replay).unwrap();
        let read = read_head(&store, &keys.read).unwrap();
        assert!(read.damaged.unwrap().contains("replayed"));
        // With no genuine version left to fall back on, it is an error.
        for seq in 1..=head.seq {
            fs::write(dir.join(version_name(seq)), b"garbage").unwrap();
        }
        let err = read_head(&store, &keys.read).err().unwrap();
        assert!(matches!(err, GridError::Integrity { .. }), "{err}");
    }

    #[test]
    fn an_unchanged_directory_is_not_read_again() {
        let (_d, store, keys) = setup();
        add(&store, &keys, "a");
        let Listed {
            revision: rev,
            children,
            ..
        } = list_changed(&store, &keys.read, None, None)
            .unwrap()
            .unwrap();
        assert_eq!(children.len(), 1);
        assert!(list_changed(&store, &keys.read, None, Some(&rev))
            .unwrap()
            .is_none());
        // Listed with the write key, the same version is another listing.
        let with_writecaps = list_changed(
            &store,
            &keys.read,
            Some(&keys.child_writecap_key),
            Some(&rev),
        )
        .unwrap();
        assert!(with_writecaps.is_some_and(|l| l.revision != rev));
        // Another writer publishes a new version: it is read.
        add(&store, &keys, "b");
        let Listed {
            revision: rev2,
            children,
            ..
        } = list_changed(&store, &keys.read, None, Some(&rev))
            .unwrap()
            .unwrap();
        assert_ne!(rev2, rev);
        assert_eq!(children.into_keys().collect::<Vec<_>>(), ["a", "b"]);
        // A newest version replaced by damaged bytes is read (and refused),
        // never taken for the one already listed: the newest intact version
        // is listed instead, and the listing says so.
        let dir = store.mutable_dir(&keys.read.storage_index);
        let head = read_head(&store, &keys.read).unwrap();
        let path = dir.join(version_name(head.seq));
        let mut raw = fs::read(&path).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        fs::remove_file(&path).unwrap();
        fs::write(&path, raw).unwrap();
        let listed = list_changed(&store, &keys.read, None, Some(&rev2))
            .unwrap()
            .unwrap();
        assert_eq!(listed.children.into_keys().collect::<Vec<_>>(), ["a"]);
        assert!(
            listed.problems[0].contains("is damaged"),
            "{:?}",
            listed.problems
        );
        // The writer is not blocked: it builds on the intact version.
        add(&store, &keys, "c");
        let listed = list_changed(&store, &keys.read, None, None)
            .unwrap()
            .unwrap();
        assert_eq!(listed.children.into_keys().collect::<Vec<_>>(), ["a", "c"]);
        assert!(listed.problems.is_empty());
    }

    #[test]
    fn missing_directory_is_not_found() {
        let (_d, store, _keys) = setup();
        let other = DirWriteKeys::from_seed([9; 32]);
        assert!(matches!(
            read_head(&store, &other.read),
            Err(GridError::NotFound(_))
        ));
    }
}
