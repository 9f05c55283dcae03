//! Publishing: pointing our personal directory at new snapshots.

use super::aside::{author_entry, is_conflict_entry, AUTHOR_ENTRY, NONCE_KEY};
use futures_util::TryStreamExt;

use crate::personal::{
    read_shard, shard_header, shard_link, ShardError, ShardId, ShardLinks, SHARD_HEADER,
};

use super::*;

impl<G: Grid> Executor<G> {
    // ----- Publish ------------------------------------------------------

    /// Points our personal directory's entries at new snapshots, in one
    /// write. A magic-folder 24.3 peer reads every name in a personal
    /// directory but `@metadata` as a file: a directory's snapshot would
    /// read as a deletion (and 24.3 deletes recursively), a conflict entry
    /// as a name it cannot decode, which stops its whole poll. So files and
    /// their deletions go in the personal directory itself; directories,
    /// their deletions and conflict copies go *aside*, in an immutable
    /// directory that our `@metadata` entry names, made anew whenever it
    /// changes. An entry aside overrides one of the same name in the
    /// directory itself (a file that became a directory leaves its last
    /// file version there, which only a 24.3 peer still reads), and a file
    /// published over a name aside takes it out of the aside, in the same
    /// write. Conflict entries an earlier release published in the
    /// directory itself move aside too.
    ///
    /// In a sharded folder nothing goes aside but our author (no 24.3 peer
    /// reads it), and the entries go into their shards (see
    /// [`Executor::write_shards`]).
    pub(super) async fn publish(&self, entries: &[PublishEntry]) -> Result<(), EffectError> {
        if entries.is_empty() {
            return Ok(());
        }
        // One publish at a time: each builds on what the last one wrote.
        let _one_at_a_time = self.publishing.lock().await;
        // Taken, not borrowed: a write whose outcome is unknown leaves no
        // cache, and the next publish reads the aside again.
        let cached = self.aside.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (mut aside, legacy) = match cached {
            Some(aside) => (aside, Vec::new()),
            None => self.read_own_aside().await?,
        };
        let before = aside.clone();
        // Our author and key, declared where only we write (the engine
        // rejects versions that claim a declared name under another key).
        aside.insert(AUTHOR_ENTRY.to_owned(), author_entry(&self.author));
        let mut children = DirChildren::new();
        for e in entries {
            let cap = Capability::parse(e.snapshot.as_str()).map_err(|err| {
                EffectError::permanent(format!("cannot publish entry {:?}: {err}", e.name))
            })?;
            let goes_aside = self.layout == Layout::Flat
                && match e.shape {
                    EntryShape::File => false,
                    EntryShape::Directory | EntryShape::ConflictCopy => true,
                    // Where the name's last version went: a directory's
                    // deletion must not reach a 24.3 peer either.
                    EntryShape::Deletion => aside.contains_key(&e.name),
                };
            if goes_aside {
                aside.insert(e.name.clone(), DirEntry::new(cap));
            } else {
                aside.remove(&e.name);
                children.insert(e.name.clone(), DirEntry::new(cap));
            }
        }
        if aside != before || !legacy.is_empty() {
            // A fresh nonce in every attempt, as in a snapshot's metadata:
            // Tahoe storage servers hold an interrupted upload's shares for
            // 30 minutes and refuse the same storage index meanwhile, so an
            // attempt that repeated an interrupted one's bytes would wait
            // that long.
            let mut record = aside.clone();
            if let Some(entry) = record.get_mut(AUTHOR_ENTRY) {
                entry.metadata[NONCE_KEY] = serde_json::Value::String(attempt_nonce()?);
            }
            let dir =
                self.grid.create_immutable_dir(record).await.map_err(|e| {
                    grid_error("cannot record our directories and conflict copies", e)
                })?;
            children.insert(METADATA_ENTRY.to_owned(), DirEntry::new(dir));
        }
        if !children.is_empty() {
            match self.layout {
                Layout::Flat => self
                    .grid
                    .set_children(&self.personal, children, Replace::Yes)
                    .await
                    .map_err(|e| grid_error("cannot update our personal directory", e))?,
                Layout::Sharded => self.write_shards(children).await?,
            }
        }
        // Only once they are safe aside.
        for name in legacy {
            match self.grid.unlink(&self.personal, &name).await {
                Ok(()) | Err(GridError::NoChild(_)) => {}
                Err(e) => return Err(grid_error("cannot update our personal directory", e)),
            }
        }
        *self.aside.lock().unwrap_or_else(|e| e.into_inner()) = Some(aside);
        Ok(())
    }

    /// Our entries aside as the grid has them, with the conflict entries an
    /// earlier release left in the personal directory itself (moved aside
    /// by the caller).
    async fn read_own_aside(&self) -> Result<(DirChildren, Vec<String>), EffectError> {
        let ours = self
            .grid
            .list(&self.personal)
            .await
            .map_err(|e| grid_error("cannot list our personal directory", e))?;
        let mut aside = match ours.get(METADATA_ENTRY) {
            Some(m) if m.cap.kind() == CapKind::ImmutableDir => self
                .grid
                .list(&m.cap)
                .await
                .map_err(|e| grid_error("cannot list our directories and conflict copies", e))?,
            _ => DirChildren::new(),
        };
        // Compared without its nonce, so an unchanged record is not rewritten.
        if let Some(metadata) = aside
            .get_mut(AUTHOR_ENTRY)
            .and_then(|e| e.metadata.as_object_mut())
        {
            metadata.remove(NONCE_KEY);
        }
        let legacy: Vec<String> = ours
            .keys()
            .filter(|n| is_conflict_entry(n))
            .cloned()
            .collect();
        for name in &legacy {
            aside
                .entry(name.clone())
                .or_insert_with(|| ours[name].clone());
        }
        Ok((aside, legacy))
    }

    /// Puts `children` into our sharded personal directory: each shard they
    /// fall in is made anew (its entries as they were, with theirs over
    /// them; split in two-digit shards once it is big, see
    /// [`personal::maybe_split`]), then the directory's links to those
    /// shards are swapped in one write, with `@metadata` if it is among
    /// `children`. A failure before that write leaves only unlinked shards
    /// behind: nothing is published half-way. Links a split superseded are
    /// unlinked after it.
    async fn write_shards(&self, mut children: DirChildren) -> Result<(), EffectError> {
        let failed = |e| grid_error("cannot update our personal directory", e);
        // Taken, not borrowed: after a write whose outcome is unknown the
        // next publish reads our links again.
        let cached = self
            .own_links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut links = match cached {
            Some(links) => links,
            None => ShardLinks::of(&self.grid.list(&self.personal).await.map_err(failed)?),
        };
        let mut update = DirChildren::new();
        update.extend(children.remove_entry(METADATA_ENTRY));
        let grid = &*self.grid;
        let folder = &self.folder_tag;
        let links_now = &links;
        let made: Vec<Vec<(ShardId, Capability)>> = stream::iter(links.group(children))
            .map(|(id, changes)| async move {
                let mut entries = match links_now.current().get(&id) {
                    None => DirChildren::new(),
                    Some(link) => {
                        read_shard(grid, id, link, folder)
                            .await
                            .map_err(|e| match e {
                                ShardError::Grid(e) => {
                                    grid_error(&format!("cannot read our shard {id}"), e)
                                }
                                e @ ShardError::Invalid(_) => EffectError::permanent(format!(
                                    "cannot read our shard {id}: {e}"
                                )),
                            })?
                            .entries
                    }
                };
                entries.extend(changes);
                let mut made = Vec::new();
                for (id, mut entries) in personal::maybe_split(id, entries) {
                    // A fresh nonce in every attempt, as in the aside record.
                    let mut header = shard_header(id, folder);
                    header.metadata[NONCE_KEY] = serde_json::Value::String(attempt_nonce()?);
                    entries.insert(SHARD_HEADER.to_owned(), header);
                    let shard = grid
                        .create_immutable_dir(entries)
                        .await
                        .map_err(|e| grid_error(&format!("cannot write our shard {id}"), e))?;
                    made.push((id, shard));
                }
                Ok::<_, EffectError>(made)
            })
            .buffer_unordered(POLL_PARALLELISM)
            .try_collect()
            .await?;
        for (id, shard) in made.into_iter().flatten() {
            update.insert(shard_link(id), DirEntry::new(shard.clone()));
            links.insert(id, shard);
        }
        self.grid
            .set_children(&self.personal, update, Replace::Yes)
            .await
            .map_err(failed)?;
        // Published; what is left is tidying. A link not yet unlinked is
        // ignored by readers, and tried again at the next publish.
        for id in links.superseded().clone() {
            match self.grid.unlink(&self.personal, &shard_link(id)).await {
                Ok(()) | Err(GridError::NoChild(_)) => links.unlinked(id),
                Err(e) => warn!("cannot unlink our split shard {id}: {e}"),
            }
        }
        *self.own_links.lock().unwrap_or_else(|e| e.into_inner()) = Some(links);
        Ok(())
    }
}
