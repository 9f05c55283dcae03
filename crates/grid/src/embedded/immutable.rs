//! Immutable objects: convergent, chunked, authenticated encryption.
//!
//! # Object format (`objects/<si[..2]>/<si>`)
//!
//! ```text
//! offset  size  field
//! 0       6     magic "MFGRID"
//! 6       1     format version (1)
//! 7       1     kind: 'F' file, 'D' directory
//! 8       4     chunk size in bytes (big-endian)
//! 12      4     reserved, zero
//! 16      8     plaintext size in bytes (big-endian)
//! 24      …     chunks: AES-256-GCM(key, nonce(i, last), aad = header) of each
//!               plaintext chunk, each followed by its 16-byte tag
//! ```
//!
//! There are `max(1, ⌈size / chunk size⌉)` chunks; all but the last are full.
//! An empty file still has one (empty) chunk so its header is authenticated.
//! The header is public (sizes are not hidden) but authenticated: it is the
//! associated data of every chunk. So the object's length is fully determined
//! by its header, and a reader checks it before decrypting anything —
//! truncation or extension is reported at once.
//!
//! # Upload
//!
//! Pass 1 streams the source through the convergent keyed hash to get the
//! key (and thus the storage index). If an object of the right length is
//! already stored, the upload is done (deduplication; the object's time is
//! refreshed so that `gc` spares it, see `upkeep`). Otherwise pass 2
//! encrypts into a temporary file. Bytes given in memory, and a file that
//! fit in pass 1's buffer, are encrypted from memory: they are the bytes
//! hashed. A larger file is read again and re-hashed while it is
//! encrypted; if the second hash differs, the source changed under us: the
//! temporary file is dropped and the caller gets
//! [`GridError::SourceChanged`]. Otherwise the file is fsynced and renamed
//! into place. For large objects, writing happens on a second thread, so
//! that when the kernel throttles writers (dirty-page limits, slow disks)
//! encryption goes on meanwhile. (Forcing early writeback with periodic
//! `fdatasync` was measured and made no difference on this machine, so the
//! single fsync at the end does it all.)

use std::fs::File;
use std::io::{self, Cursor, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;

use bytes::Bytes;

use super::caps::short_name;
use super::crypto::{chk_storage_index, ChunkCipher, ConvergentHasher, Key32, ObjectKind, TAG_LEN};
use super::store::{io_err, refresh_object, Store};
use crate::{GridError, GridResult, Progress, UploadSource};

/// Bytes in an object header.
pub(crate) const HEADER_LEN: usize = 24;
/// First bytes of every object and mutable-directory version.
pub(crate) const MAGIC: &[u8; 6] = b"MFGRID";
/// The object format version written and understood.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// Smallest chunk size accepted (tests use tiny chunks to cover boundaries).
pub(crate) const MIN_CHUNK_SIZE: u32 = 16;
/// Largest chunk size accepted; bounds a reader's buffer whatever a damaged
/// header says.
pub(crate) const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Objects larger than this many chunks are written from a second thread.
const THREADED_WRITE_CHUNKS: u64 = 8;

/// Number of chunks of an object of `size` bytes.
pub(crate) fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size)).max(1)
}

/// Total stored length of an object of `size` plaintext bytes.
pub(crate) fn stored_len(size: u64, chunk_size: u32) -> u64 {
    HEADER_LEN as u64 + size + chunk_count(size, chunk_size) * TAG_LEN as u64
}

fn header(kind: ObjectKind, chunk_size: u32, size: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..6].copy_from_slice(MAGIC);
    h[6] = FORMAT_VERSION;
    h[7] = kind.header_byte();
    h[8..12].copy_from_slice(&chunk_size.to_be_bytes());
    h[16..24].copy_from_slice(&size.to_be_bytes());
    h
}

/// A file source, opened once per pass.
fn open_source(source: &UploadSource) -> GridResult<Box<dyn Read + Send>> {
    let (path, progress) = source
        .file()
        .expect("bytes in memory are never opened: pass 1 hashes them where they are");
    let f = File::open(path).map_err(io_err(format!("upload: opening {}", path.display())))?;
    Ok(match progress {
        Some(p) => Box::new(Counted(f, p.clone())),
        None => Box::new(f),
    })
}

/// A reader that counts what it reads into a [`Progress`].
struct Counted<R>(R, Progress);

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.add(n as u64);
        Ok(n)
    }
}

/// The source's size now (a hint only: a file may still change), or
/// `u64::MAX` if unknown.
fn size_hint(source: &UploadSource) -> u64 {
    match (source, source.file()) {
        (UploadSource::Bytes(b), _) => b.len() as u64,
        (_, Some((p, _))) => std::fs::metadata(p).map_or(u64::MAX, |m| m.len()),
        _ => u64::MAX,
    }
}

fn source_ctx(source: &UploadSource) -> String {
    match source.file() {
        None => "upload: reading source bytes".to_string(),
        Some((p, _)) => format!("upload: reading {}", p.display()),
    }
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What an upload does when an object with its key is already stored.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Existing {
    /// Keeps it if it has the right length (deduplication: reading it back
    /// would cost as much as writing it), refreshing its time for `gc`.
    Keep,
    /// Keeps it only if every chunk authenticates, and writes it anew
    /// otherwise (repair) — provided the source's key is this one.
    Verify(Key32),
}

/// What an upload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// The object was already there (and intact, for [`Existing::Verify`]).
    Kept,
    /// The object was written.
    Written,
    /// [`Existing::Verify`] only: the source is other content; nothing was written.
    OtherContent,
}

/// Uploads `source` as an immutable object of `kind`; returns its key,
/// plaintext size and what was done. Blocking: call from a blocking thread.
pub(crate) fn upload(
    store: &Store,
    secret: &Key32,
    chunk_size: u32,
    kind: ObjectKind,
    source: &UploadSource,
    existing: Existing,
) -> GridResult<(Key32, u64, Stored)> {
    let ctx = source_ctx(source);
    let cs = chunk_size as usize;

    // Pass 1: the convergent key. Bytes in memory are hashed where they
    // are; a file is read through a buffer sized for it: zeroing 256 KiB
    // for every 4 KiB file was a measurable share of a small-file upload's
    // CPU time.
    let mut hasher = ConvergentHasher::new(secret, kind, chunk_size);
    if let Some((_, Some(progress))) = source.file() {
        // Both passes read the whole source.
        progress.set_total(size_hint(source).saturating_mul(2));
    }
    let (size, in_memory) = match source {
        UploadSource::Bytes(bytes) => {
            hasher.update(bytes);
            (bytes.len() as u64, Some(bytes.clone()))
        }
        _ => {
            let mut size = 0u64;
            let mut buf = vec![
                0u8;
                size_hint(source)
                    .saturating_add(1)
                    .clamp(4096, cs.max(64 << 10) as u64) as usize
            ];
            let mut src = open_source(source)?;
            loop {
                let n = read_full(&mut *src, &mut buf).map_err(io_err(&ctx))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            // A file that fit in the buffer is encrypted from it: reading
            // it again would cost a second open and read for every small
            // file, and the bytes encrypted are then exactly those hashed.
            let in_memory = (size < buf.len() as u64).then(|| {
                buf.truncate(size as usize);
                Bytes::from(buf)
            });
            (size, in_memory)
        }
    };
    let key = hasher.finalize();
    let si = chk_storage_index(&key);
    let path = store.object_path(&si);
    let total = stored_len(size, chunk_size);
    let store_ctx = || format!("upload: storing object {}", short_name(kind.name(), &si));
    let replace = match existing {
        Existing::Keep => {
            if refresh_object(&path, total).map_err(io_err(store_ctx()))? {
                return Ok((key, size, Stored::Kept));
            }
            false
        }
        Existing::Verify(expected) if expected != key => {
            return Ok((key, size, Stored::OtherContent))
        }
        Existing::Verify(_) => {
            if is_intact(store, &key, kind, size) {
                return Ok((key, size, Stored::Kept));
            }
            true
        }
    };

    // Pass 2: encrypt into a temporary file. A source read again from
    // disk is hashed again as it goes, to catch a change in between; bytes
    // in memory are the very bytes hashed.
    let mut temp = store.temp_file().map_err(io_err(store_ctx()))?;
    let rehash = in_memory.is_none();
    let src: Box<dyn Read + Send> = match in_memory {
        Some(bytes) => {
            if let Some((_, Some(progress))) = source.file() {
                progress.add(size); // the second pass, done at once
            }
            Box::new(Cursor::new(bytes))
        }
        None => open_source(source)?,
    };
    let header = header(kind, chunk_size, size);
    let job = EncryptJob {
        secret,
        kind,
        chunk_size,
        key: &key,
        header: &header,
        size,
        rehash,
        ctx: &ctx,
    };
    let written = if chunk_count(size, chunk_size) > THREADED_WRITE_CHUNKS {
        let file = temp.file();
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(2);
            let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
            let writer = s.spawn(move || write_chunks(file, rx, back_tx));
            let result = job.run(src, &mut |block: Vec<u8>| {
                tx.send(block)
                    .map_err(|_| io::Error::other("writer thread stopped"))?;
                Ok(back_rx.try_recv().unwrap_or_default())
            });
            drop(tx);
            let wrote = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("writer panicked")));
            match (result, wrote) {
                // A failed write (disk full…) also stops the encryptor; report the cause.
                (_, Err(e)) => Err(io_err(store_ctx())(e)),
                (r, Ok(())) => r,
            }
        })?
    } else {
        let file = temp.file();
        job.run(src, &mut |block: Vec<u8>| {
            file.write_all(&block)?;
            Ok(block)
        })?
    };
    match written {
        Pass2::Changed => {
            let path = source
                .file()
                .map_or_else(|| PathBuf::from("<bytes>"), |(p, _)| p.to_owned());
            Err(GridError::SourceChanged(path))
        }
        Pass2::Done => {
            store
                .publish_object(temp, &path, total, replace)
                .map_err(io_err(store_ctx()))?;
            Ok((key, size, Stored::Written))
        }
    }
}

/// True if the object for `key` is stored and every chunk of it authenticates.
pub(crate) fn is_intact(store: &Store, key: &Key32, kind: ObjectKind, size: u64) -> bool {
    let Ok(mut reader) = ObjectReader::open(store, key, kind, size) else {
        return false;
    };
    while let Some(chunk) = reader.next_chunk() {
        if chunk.is_err() {
            return false;
        }
    }
    true
}

/// The writer thread: writes blocks in order and hands emptied buffers back
/// for reuse.
fn write_chunks(
    file: &mut File,
    rx: mpsc::Receiver<Vec<u8>>,
    back: mpsc::Sender<Vec<u8>>,
) -> io::Result<()> {
    for block in rx {
        file.write_all(&block)?;
        let _ = back.send(block);
    }
    Ok(())
}

enum Pass2 {
    Done,
    Changed,
}

struct EncryptJob<'a> {
    secret: &'a Key32,
    kind: ObjectKind,
    chunk_size: u32,
    key: &'a Key32,
    header: &'a [u8; HEADER_LEN],
    size: u64,
    /// Hash the source again and report a change ([`Pass2::Changed`]).
    rehash: bool,
    ctx: &'a str,
}

impl EncryptJob<'_> {
    /// Streams the source through the cipher into `emit`, which consumes a
    /// block and returns a (possibly recycled) buffer for the next one.
    fn run(
        &self,
        mut src: Box<dyn Read + Send>,
        emit: &mut dyn FnMut(Vec<u8>) -> io::Result<Vec<u8>>,
    ) -> GridResult<Pass2> {
        let cs = self.chunk_size as usize;
        let cipher = ChunkCipher::new(self.key);
        let mut hasher = ConvergentHasher::new(self.secret, self.kind, self.chunk_size);
        let write_ctx = || format!("upload: writing object ({})", self.ctx);
        let mut next = emit(self.header.to_vec()).map_err(io_err(write_ctx()))?;
        let chunks = chunk_count(self.size, self.chunk_size);
        let mut remaining = self.size;
        for index in 0..chunks {
            let want = remaining.min(cs as u64) as usize;
            let mut block = std::mem::take(&mut next);
            block.clear();
            block.resize(want, 0);
            let got = read_full(&mut *src, &mut block).map_err(io_err(self.ctx))?;
            if got != want {
                return Ok(Pass2::Changed); // shrank
            }
            if self.rehash {
                hasher.update(&block);
            }
            let last = index + 1 == chunks;
            let tag = cipher.seal(index, last, self.header, &mut block);
            block.extend_from_slice(&tag);
            remaining -= want as u64;
            next = emit(block).map_err(io_err(write_ctx()))?;
        }
        let mut probe = [0u8; 1];
        if read_full(&mut *src, &mut probe).map_err(io_err(self.ctx))? != 0 {
            return Ok(Pass2::Changed); // grew
        }
        if self.rehash && hasher.finalize() != *self.key {
            return Ok(Pass2::Changed);
        }
        Ok(Pass2::Done)
    }
}

/// A verified, chunk-by-chunk reader of one stored object.
pub(crate) struct ObjectReader {
    file: File,
    cipher: ChunkCipher,
    header: [u8; HEADER_LEN],
    name: String,
    chunk_size: u32,
    size: u64,
    chunks: u64,
    next: u64,
    remaining: u64,
    first: Option<Vec<u8>>,
    failed: bool,
}

impl ObjectReader {
    /// Opens the object for `key`, checks its header against the capability
    /// (`kind`, `size`) and its length against the header, and authenticates
    /// the first chunk — so a damaged header is reported here, not mid-stream.
    pub(crate) fn open(
        store: &Store,
        key: &Key32,
        kind: ObjectKind,
        size: u64,
    ) -> GridResult<ObjectReader> {
        let si = chk_storage_index(key);
        let name = short_name(kind.name(), &si);
        let path = store.object_path(&si);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(GridError::NotFound(name)),
            Err(e) => return Err(io_err(format!("download: opening object {name}"))(e)),
        };
        let integrity = |detail: String| GridError::Integrity {
            cap: name.clone(),
            detail,
        };
        let len = file
            .metadata()
            .map_err(io_err(format!("download: reading object {name}")))?
            .len();
        let mut header = [0u8; HEADER_LEN];
        if len < HEADER_LEN as u64 {
            return Err(integrity(format!(
                "object is {len} bytes, shorter than its header"
            )));
        }
        file.read_exact(&mut header)
            .map_err(io_err(format!("download: reading object {name}")))?;
        if &header[..6] != MAGIC || header[6] != FORMAT_VERSION {
            return Err(integrity(
                "not an object of a known format and version".into(),
            ));
        }
        if header[7] != kind.header_byte() {
            return Err(integrity(format!(
                "object is not a {} (kind byte {:#04x})",
                kind.name(),
                header[7]
            )));
        }
        let chunk_size = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(integrity(format!("implausible chunk size {chunk_size}")));
        }
        let stored_size = u64::from_be_bytes(header[16..24].try_into().expect("8 bytes"));
        if stored_size != size {
            return Err(integrity(format!(
                "header says {stored_size} bytes, the capability says {size}"
            )));
        }
        let expected = stored_len(size, chunk_size);
        if len != expected {
            return Err(integrity(format!(
                "object is {len} bytes, expected {expected} (truncated or extended)"
            )));
        }
        let mut reader = ObjectReader {
            file,
            cipher: ChunkCipher::new(key),
            header,
            name,
            chunk_size,
            size,
            chunks: chunk_count(size, chunk_size),
            next: 0,
            remaining: size,
            first: None,
            failed: false,
        };
        reader.first = Some(reader.read_chunk()?);
        Ok(reader)
    }

    /// Plaintext size.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn integrity(&self, detail: impl Into<String>) -> GridError {
        GridError::Integrity {
            cap: self.name.clone(),
            detail: detail.into(),
        }
    }

    fn read_chunk(&mut self) -> GridResult<Vec<u8>> {
        let index = self.next;
        let want = self.remaining.min(u64::from(self.chunk_size)) as usize;
        let mut buf = vec![0u8; want + TAG_LEN];
        if let Err(e) = self.file.read_exact(&mut buf) {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                self.integrity(format!("chunk {index} is truncated"))
            } else {
                io_err(format!("download: reading object {}", self.name))(e)
            });
        }
        let last = index + 1 == self.chunks;
        let (body, tag) = buf.split_at_mut(want);
        if self
            .cipher
            .open(index, last, &self.header, body, tag)
            .is_err()
        {
            return Err(self.integrity(format!("chunk {index} failed authentication")));
        }
        buf.truncate(want);
        self.next += 1;
        self.remaining -= want as u64;
        if last {
            let mut probe = [0u8; 1];
            if self
                .file
                .read(&mut probe)
                .map_err(io_err(format!("download: reading object {}", self.name)))?
                != 0
            {
                return Err(self.integrity("object has bytes after its last chunk"));
            }
        }
        Ok(buf)
    }

    /// The next authenticated chunk of plaintext, or `None` at the end.
    /// After an error, always `None`.
    pub(crate) fn next_chunk(&mut self) -> Option<GridResult<Vec<u8>>> {
        if self.failed {
            return None;
        }
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        if self.next >= self.chunks {
            return None;
        }
        let r = self.read_chunk();
        self.failed = r.is_err();
        Some(r)
    }

    /// Reads the whole (small) object into memory.
    pub(crate) fn read_all(mut self) -> GridResult<Vec<u8>> {
        let mut out = Vec::with_capacity(self.size as usize);
        while let Some(chunk) = self.next_chunk() {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }
}

/// Test support: the stored path of the object behind `key`.
#[cfg(test)]
pub(crate) fn path_of(store: &Store, key: &Key32) -> std::path::PathBuf {
    store.object_path(&chk_storage_index(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        (dir, store)
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn round_trip(store: &Store, secret: &Key32, cs: u32, content: &[u8]) -> Key32 {
        let src = UploadSource::Bytes(content.to_vec().into());
        let (key, size, _) =
            upload(store, secret, cs, ObjectKind::File, &src, Existing::Keep).unwrap();
        assert_eq!(size, content.len() as u64);
        let path = path_of(store, &key);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            stored_len(size, cs)
        );
        let reader = ObjectReader::open(store, &key, ObjectKind::File, size).unwrap();
        assert_eq!(reader.read_all().unwrap(), content);
        key
    }

    #[test]
    fn chunk_boundaries_round_trip() {
        let (_d, store) = store();
        let cs = 64u32;
        for len in [0, 1, 63, 64, 65, 127, 128, 129, 64 * 9 + 1, 64 * 10] {
            round_trip(&store, &[1; 32], cs, &data(len, 3));
        }
    }

    #[test]
    fn finding_an_object_stored_refreshes_its_time() {
        let (_d, store) = store();
        let key = round_trip(&store, &[1; 32], 64, &data(100, 1));
        let path = path_of(&store, &key);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        round_trip(&store, &[1; 32], 64, &data(100, 1));
        let touched = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(touched > old + std::time::Duration::from_secs(3600));
    }

    #[test]
    fn verify_rewrites_only_a_damaged_object_of_the_same_content() {
        let (_d, store) = store();
        let secret = [1; 32];
        let content = data(300, 4);
        let key = round_trip(&store, &secret, 64, &content);
        let path = path_of(&store, &key);
        let src = UploadSource::Bytes(content.clone().into());
        let verify = |src: &UploadSource| {
            upload(
                &store,
                &secret,
                64,
                ObjectKind::File,
                src,
                Existing::Verify(key),
            )
            .unwrap()
            .2
        };
        assert_eq!(verify(&src), Stored::Kept);
        // A flipped byte keeps the length: `Keep` would not notice.
        let mut raw = std::fs::read(&path).unwrap();
        raw[HEADER_LEN + 70] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        assert!(!is_intact(&store, &key, ObjectKind::File, 300));
        let other = UploadSource::Bytes(data(300, 5).into());
        assert_eq!(verify(&other), Stored::OtherContent);
        assert!(!is_intact(&store, &key, ObjectKind::File, 300));
        assert_eq!(verify(&src), Stored::Written);
        let reader = ObjectReader::open(&store, &key, ObjectKind::File, 300).unwrap();
        assert_eq!(reader.read_all().unwrap(), content);
    }

    #[test]
    fn threaded_writer_round_trip() {
        let (_d, store) = store();
        let len = 64 * (THREADED_WRITE_CHUNKS as usize + 5) + 7;
        round_trip(&store, &[1; 32], 64, &data(len, 9));
    }

    #[test]
    fn a_file_that_changes_between_passes_is_refused() {
        // Simulate the change by uploading a file whose reads differ per pass:
        // hash pass 1 of one content, then encrypt another.
        let (dir, store) = store();
        let path = dir.path().join("src");
        std::fs::write(&path, data(1000, 1)).unwrap();
        let secret = [5; 32];
        let mut hasher = ConvergentHasher::new(&secret, ObjectKind::File, 64);
        hasher.update(&data(1000, 1));
        let key = hasher.finalize();
        std::fs::write(&path, data(1000, 2)).unwrap();
        let header = header(ObjectKind::File, 64, 1000);
        let job = EncryptJob {
            secret: &secret,
            kind: ObjectKind::File,
            chunk_size: 64,
            key: &key,
            header: &header,
            size: 1000,
            rehash: true,
            ctx: "test",
        };
        let src = open_source(&UploadSource::File(path.clone())).unwrap();
        let r = job.run(src, &mut |b| Ok(b)).unwrap();
        assert!(matches!(r, Pass2::Changed));
        // Grown and shrunk files too.
        for len in [999, 1001] {
            std::fs::write(&path, data(len, 1)).unwrap();
            let src = open_source(&UploadSource::File(path.clone())).unwrap();
            assert!(matches!(
                job.run(src, &mut |b| Ok(b)).unwrap(),
                Pass2::Changed
            ));
        }
        drop(store);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn encryption_round_trips(
            cs in prop_oneof![Just(16u32), Just(64u32), 17u32..300],
            chunks in 0usize..12,
            delta in -2i64..=2,
            seed in any::<u8>(),
        ) {
            let len = ((chunks as i64) * i64::from(cs) + delta).max(0) as usize;
            let (_d, store) = store();
            round_trip(&store, &[seed; 32], cs, &data(len, seed));
        }

        #[test]
        fn convergence_holds(len in 0usize..2000, seed in any::<u8>()) {
            let (_d, store) = store();
            let content = data(len, seed);
            let a = round_trip(&store, &[1; 32], 64, &content);
            let b = round_trip(&store, &[1; 32], 64, &content);
            prop_assert_eq!(a, b);
            let c = round_trip(&store, &[2; 32], 64, &content);
            prop_assert_ne!(a, c);
        }
    }
}
