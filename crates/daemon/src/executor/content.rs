//! File contents between the folder and the grid: a version's content is
//! either one immutable file or, for large files in folders that chunk,
//! a manifest of chunks ([`crate::chunked`]).
//!
//! Chunked, an upload reads the file once, hashing and encrypting chunk by
//! chunk, and reuses the chunks of the version it replaces where the bytes
//! are the same, so an edit inside a large file uploads one chunk. Only
//! the manifests of our own versions are reused: their digests are ours,
//! where a peer's could name a capability that holds other bytes. A
//! download takes a chunk from the file already on disk when its bytes
//! hash to the chunk's digest, and downloads (and checks) the rest.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::Arc;

use futures_util::TryStreamExt as _;

use super::*;
use crate::chunked::{self, Chunk, ContentFormat};

/// Chunks in flight (read ahead or being transferred) per file: bounded
/// in bytes, so memory stays flat whatever the chunk size.
fn chunks_in_flight(chunk_size: u64) -> usize {
    ((16 << 20) / chunk_size).clamp(1, 8) as usize
}

impl<G: Grid> Executor<G> {
    /// Uploads the content of the file at `path`, `size` bytes long, and
    /// returns its capability. `parents` are the versions it replaces.
    pub(super) async fn upload_content(
        &self,
        path: &RelPath,
        size: u64,
        parents: &[Cap],
        progress: Progress,
    ) -> Result<Capability, EffectError> {
        let abs = self.root.join(path.as_str());
        if self.content == ContentFormat::Whole || size < self.chunking.from {
            let _slot = self.transfer_slot().await;
            return match self
                .grid
                .upload(UploadSource::TrackedFile(abs, progress))
                .await
            {
                Ok(cap) => Ok(cap),
                // Changed and changed back within one timestamp tick:
                // nothing to report but a retry.
                Err(GridError::SourceChanged(_)) => Err(EffectError::transient(format!(
                    "{path} changed while it was being read"
                ))),
                Err(e) => Err(grid_error(&format!("cannot upload {path}"), e)),
            };
        }
        // After `own_chunks`, which fetches: a fetch waits for a slot too.
        let reusable = self.own_chunks(path, parents).await;
        let _slot = self.transfer_slot().await;
        let chunk_size = self.chunking.chunk_size(size);
        let depth = chunks_in_flight(chunk_size);
        progress.set_total(size);

        // The file is read and hashed chunk by chunk on the blocking pool,
        // and the chunks not in the version replaced are uploaded, `depth`
        // at once.
        let file = blocking(move || {
            // Never through a symlink swapped in since the state was taken.
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&abs)
        })
        .await
        .map_err(|e| io_error(&format!("cannot upload {path}"), &e))?;
        // The offset to read next; `None` once reading failed.
        let read = mf_grid::blocking::stream((file, Some(0)), depth, move |(file, next)| {
            let offset = (*next)?;
            match chunked::read_at(file, offset, chunk_size as usize) {
                Ok(buf) if buf.is_empty() => None,
                Ok(buf) => {
                    *next = Some(offset + buf.len() as u64);
                    let digest = chunked::digest(&buf);
                    Some(Ok((offset, Bytes::from(buf), digest)))
                }
                Err(e) => {
                    *next = None;
                    Some(Err(e))
                }
            }
        });
        let chunks = read
            .map(|chunk| {
                let (reusable, progress) = (&reusable, &progress);
                async move {
                    let (offset, bytes, digest) =
                        chunk.map_err(|e| io_error(&format!("cannot upload {path}"), &e))?;
                    let size = bytes.len() as u64;
                    let cap = match reusable.get(&digest) {
                        Some(cap) => cap.clone(),
                        None => self
                            .grid
                            .upload(UploadSource::Bytes(bytes))
                            .await
                            .map_err(|e| grid_error(&format!("cannot upload {path}"), e))?,
                    };
                    progress.add(size);
                    Ok::<_, EffectError>(Chunk {
                        offset,
                        size,
                        digest,
                        cap,
                    })
                }
            })
            .buffered(depth)
            .try_collect::<Vec<_>>()
            .await?;
        let read: u64 = chunks.iter().map(|c| c.size).sum();
        if read != size {
            // The caller's check of the file's state reports the change.
            return Err(EffectError::transient(format!(
                "{path} changed while it was being read"
            )));
        }
        self.grid
            .create_immutable_dir(chunked::manifest_children(&chunks))
            .await
            .map_err(|e| grid_error(&format!("cannot upload the chunk list of {path}"), e))
    }

    /// The chunks of our own versions among `parents`, by digest. Anything
    /// that cannot be read is simply not reused.
    async fn own_chunks(&self, path: &RelPath, parents: &[Cap]) -> BTreeMap<[u8; 32], Capability> {
        let mut reusable = BTreeMap::new();
        let own_key = self.author.verify_key();
        for parent in parents {
            let Ok(info) = self.fetch(parent, path).await else {
                continue;
            };
            let Content::File { cap, size, .. } = info.content else {
                continue;
            };
            if info.author_key != own_key {
                continue;
            }
            let Ok(manifest) = Capability::parse(cap.as_str()) else {
                continue;
            };
            if manifest.kind() != CapKind::ImmutableDir {
                continue;
            }
            if let Ok(chunks) = self
                .grid
                .list(&manifest)
                .await
                .map_err(|e| e.to_string())
                .and_then(|children| chunked::parse_manifest(&children, size))
            {
                reusable.extend(chunked::by_digest(chunks));
            }
        }
        reusable
    }

    /// Writes the content `cap` (`size` bytes, as signed) at `target` if
    /// `target` is still in state `expect`.
    pub(super) async fn write_file(
        &self,
        target: &RelPath,
        (cap, size): (&Cap, u64),
        (mtime_s, executable): (i64, bool),
        expect: LocalState,
    ) -> Result<WriteOutcome, EffectError> {
        // A literal's bytes are in its capability: it waits for no
        // transfer, only for its turn among the literal writes.
        let _slot = if cap.is_literal() {
            self.literal_write_slot().await
        } else {
            self.transfer_slot().await
        };
        let cap = Capability::parse_shared(cap.shared_text())
            .map_err(|e| EffectError::permanent(format!("cannot write {target}: {e}")))?;
        match cap.kind() {
            CapKind::ImmutableFile => {
                self.write_whole(target, &cap, (mtime_s, executable), expect)
                    .await
            }
            CapKind::ImmutableDir => {
                self.write_chunked(target, &cap, size, (mtime_s, executable), expect)
                    .await
            }
            _ => Err(EffectError::permanent(format!(
                "cannot write {target}: its content is neither a file nor a chunk list"
            ))),
        }
    }

    async fn write_whole(
        &self,
        target: &RelPath,
        cap: &Capability,
        (mtime_s, executable): (i64, bool),
        expect: LocalState,
    ) -> Result<WriteOutcome, EffectError> {
        let fail = |e: io::Error| io_error(&format!("cannot write {target}"), &e);
        let download = self
            .grid
            .download(cap)
            .await
            .map_err(|e| grid_error(&format!("cannot download {target}"), e))?;
        let (root, rel, umask) = (self.root.clone(), target.clone(), self.umask);
        let (progress, _listed) = self.transfers.start(target, false, download.size);
        progress.set_total(download.size);

        // A small file is received whole, then checked, written and placed
        // in one step on the blocking pool (each step there costs thread
        // switches: a measurable share of a many-small-files sync).
        if download.size <= WHOLE_WRITE_LIMIT {
            let mut data = Vec::with_capacity(download.size as usize);
            receive(target, download, &progress, |bytes| {
                data.extend_from_slice(&bytes);
                std::future::ready(true)
            })
            .await?;
            let outcome = blocking(move || {
                // Checked before anything is created: a parent directory the
                // user deleted meanwhile must not come back.
                let now = fsops::stat(&root, &rel)?;
                if now != expect {
                    return Ok(fsops::Outcome::Changed(now));
                }
                let mut temp = TempFile::create(&root, &rel, umask)?;
                temp.set_executable(executable);
                temp.write_all(&data)?;
                temp.commit(mtime_s, expect)
            })
            .await
            .map_err(fail)?;
            return Ok(outcome.into());
        }
        self.write_streamed(target, (mtime_s, executable), expect, |tx| async move {
            // A failed send means the writer failed: its error is reported.
            receive(target, download, &progress, |bytes| {
                let tx = tx.clone();
                async move { tx.send(bytes).await.is_ok() }
            })
            .await
        })
        .await
    }

    async fn write_chunked(
        &self,
        target: &RelPath,
        manifest: &Capability,
        size: u64,
        (mtime_s, executable): (i64, bool),
        expect: LocalState,
    ) -> Result<WriteOutcome, EffectError> {
        let children = self
            .grid
            .list(manifest)
            .await
            .map_err(|e| grid_error(&format!("cannot read the chunk list of {target}"), e))?;
        let chunks = chunked::parse_manifest(&children, size).map_err(|why| {
            EffectError::permanent(format!("cannot write {target}: its chunk list: {why}"))
        })?;
        drop(children);
        let depth = chunks_in_flight(chunks[0].size);
        // The file there now, whose chunks need not be downloaded again.
        let local = match expect {
            LocalState::File(_) => {
                let abs = self.root.join(target.as_str());
                blocking(move || {
                    std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(abs)
                })
                .await
                .ok()
                .map(Arc::new)
            }
            _ => None,
        };
        let (progress, _listed) = self.transfers.start(target, false, size);
        progress.set_total(size);
        self.write_streamed(target, (mtime_s, executable), expect, |tx| async move {
            let mut pieces = stream::iter(chunks.into_iter().enumerate())
                .map(|(index, chunk)| {
                    let local = local.clone();
                    let progress = progress.clone();
                    async move {
                        let bytes = match local_chunk(local, &chunk).await {
                            Some(bytes) => bytes,
                            None => self.download_chunk(target, index, &chunk).await?,
                        };
                        progress.add(chunk.size);
                        Ok::<_, EffectError>(bytes)
                    }
                })
                .buffered(depth);
            while let Some(piece) = pieces.next().await {
                if tx.send(piece?).await.is_err() {
                    break;
                }
            }
            Ok(())
        })
        .await
    }

    /// One chunk from the grid, of exactly its size and its digest.
    async fn download_chunk(
        &self,
        target: &RelPath,
        index: usize,
        chunk: &Chunk,
    ) -> Result<Bytes, EffectError> {
        let what = || format!("cannot download chunk {index} of {target}");
        let download = self
            .grid
            .download(&chunk.cap)
            .await
            .map_err(|e| grid_error(&what(), e))?;
        if download.size != chunk.size {
            return Err(EffectError::permanent(format!(
                "{}: it holds {} bytes where its chunk list says {}",
                what(),
                download.size,
                chunk.size
            )));
        }
        let bytes = read_small(download, chunk.size)
            .await
            .map_err(|e| grid_error(&what(), e))?;
        // Hashed here, chunks in parallel, rather than on the one thread
        // that writes the file.
        let digest = chunk.digest;
        let matches = tokio::task::spawn_blocking(move || {
            let ok = chunked::digest(&bytes) == digest;
            (ok, bytes)
        })
        .await
        .map_err(|e| EffectError::transient(format!("hashing task failed: {e}")))?;
        match matches {
            (true, bytes) => Ok(Bytes::from(bytes)),
            (false, _) => Err(EffectError::permanent(format!(
                "cannot write {target}: chunk {index} does not match the digest in its chunk list"
            ))),
        }
    }

    /// Writes the pieces `fill` sends into a temporary file for `target` on
    /// a blocking thread, and places it if `target` is still in state
    /// `expect`.
    async fn write_streamed<'a, F>(
        &'a self,
        target: &'a RelPath,
        (mtime_s, executable): (i64, bool),
        expect: LocalState,
        fill: impl FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> F,
    ) -> Result<WriteOutcome, EffectError>
    where
        F: std::future::Future<Output = Result<(), EffectError>> + 'a,
    {
        let fail = |e: io::Error| io_error(&format!("cannot write {target}"), &e);
        // A cheap early check, so that no large download is wasted.
        let now = self.stat(target).await.map_err(fail)?;
        if now != expect {
            return Ok(WriteOutcome::Changed(now));
        }
        let (root, rel, umask) = (self.root.clone(), target.clone(), self.umask);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_PIPELINE_DEPTH);
        // Each write is its own blocking task (taking what pieces have
        // arrived, up to a batch), so no blocking thread waits for the
        // pieces: with a bounded pool, that thread could be the one a piece
        // needs.
        let writer = async move {
            let mut temp = blocking(move || {
                let mut temp = TempFile::create(&root, &rel, umask)?;
                temp.set_executable(executable);
                Ok(temp)
            })
            .await?;
            while let Some(first) = rx.recv().await {
                let mut batch = first.len();
                let mut pieces = vec![first];
                while batch < WRITE_BATCH_BYTES {
                    let Ok(more) = rx.try_recv() else { break };
                    batch += more.len();
                    pieces.push(more);
                }
                temp = blocking(move || {
                    for piece in &pieces {
                        temp.write_all(piece)?;
                    }
                    Ok(temp)
                })
                .await?;
            }
            Ok(temp)
        };
        let (written, filled) = tokio::join!(writer, fill(tx));
        let temp = written.map_err(fail)?;
        if let Err(e) = filled {
            // Removing the temporary file is blocking I/O too.
            tokio::task::spawn_blocking(move || drop(temp));
            return Err(e);
        }
        let outcome = blocking(move || temp.commit(mtime_s, expect))
            .await
            .map_err(fail)?;
        Ok(outcome.into())
    }
}

/// The bytes of `chunk` from the file on disk, if they are its bytes.
async fn local_chunk(local: Option<Arc<File>>, chunk: &Chunk) -> Option<Bytes> {
    let file = local?;
    let (offset, size, digest) = (chunk.offset, chunk.size as usize, chunk.digest);
    tokio::task::spawn_blocking(move || {
        let buf = chunked::read_at(&file, offset, size).ok()?;
        (buf.len() == size && chunked::digest(&buf) == digest).then(|| Bytes::from(buf))
    })
    .await
    .ok()
    .flatten()
}
