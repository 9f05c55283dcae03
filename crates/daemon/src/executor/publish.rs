//! Publishing: pointing our personal directory at new snapshots.

use super::aside::{author_entry, is_conflict_entry, AUTHOR_ENTRY, NONCE_KEY};
use futures_util::TryStreamExt;

use crate::personal::{
    read_shard, shard_header, shard_link, ShardError, ShardId, ShardLinks, RECENT_AT_MOST,
    SHARD_HEADER,
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
    pub(super) async fn publish(&self, entries: Vec<PublishEntry>) -> Result<(), EffectError> {
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
        // Our entries as snapshot references until they are written: a pack
        // member's directory entry carries its number as a JSON object,
        // several times the size of the reference, and a sharded publish
        // after a bulk carries tens of thousands of them (see
        // `write_shards`).
        let mut ours: BTreeMap<String, SnapshotRef> = BTreeMap::new();
        let mut last_pack: Option<Capability> = None;
        for e in entries {
            let mut snapshot = SnapshotRef::parse(&e.snapshot).map_err(|err| {
                EffectError::permanent(format!("cannot publish entry {:?}: {err}", e.name))
            })?;
            // A batch's members come pack by pack: they share their pack's
            // capability (~100 characters) instead of each holding a copy.
            if let SnapshotRef::Member { pack, .. } = &mut snapshot {
                match &last_pack {
                    Some(last) if last == pack => *pack = last.clone(),
                    _ => last_pack = Some(pack.clone()),
                }
            }
            let goes_aside = self.layout == Layout::Flat
                && match e.shape {
                    EntryShape::File => false,
                    EntryShape::Directory | EntryShape::ConflictCopy => true,
                    // Where the name's last version went: a directory's
                    // deletion must not reach a 24.3 peer either.
                    EntryShape::Deletion => aside.contains_key(&e.name),
                };
            if goes_aside {
                aside.insert(e.name, snapshot.entry());
            } else {
                aside.remove(&e.name);
                ours.insert(e.name, snapshot);
            }
        }
        let mut metadata = None;
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
            metadata = Some(DirEntry::new(dir));
        }
        match self.layout {
            Layout::Flat => {
                let children: DirChildren = ours
                    .into_iter()
                    .map(|(name, snapshot)| (name, snapshot.entry()))
                    .chain(metadata.map(|m| (METADATA_ENTRY.to_owned(), m)))
                    .collect();
                if !children.is_empty() {
                    self.grid
                        .set_children(&self.personal, children, Replace::Yes)
                        .await
                        .map_err(|e| grid_error("cannot update our personal directory", e))?;
                }
            }
            Layout::Sharded if ours.is_empty() && metadata.is_none() => {}
            Layout::Sharded => self.write_shards(ours, metadata).await?,
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

    /// Puts `ours` into our sharded personal directory: into the recent
    /// shard, made anew with them over its entries — or, when that would
    /// hold more than [`RECENT_AT_MOST`], into their hashed shards, each
    /// made anew (split in two-digit shards once it is big, see
    /// [`personal::maybe_split`]), with an empty recent shard. Then the
    /// directory's links to the new shards are swapped in one write, with
    /// `@metadata` if given. A failure before that write leaves only
    /// unlinked shards behind: nothing is published half-way. Links a
    /// split superseded are unlinked after it.
    async fn write_shards(
        &self,
        ours: BTreeMap<String, SnapshotRef>,
        metadata: Option<DirEntry>,
    ) -> Result<(), EffectError> {
        let failed = |e| grid_error("cannot update our personal directory", e);
        // Taken, not borrowed: after a write whose outcome is unknown the
        // next publish reads our directory again.
        let cached = self
            .own_shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let OwnShards {
            mut links,
            mut recent,
        } = match cached {
            Some(own) => own,
            None => {
                let links = ShardLinks::of(&self.grid.list(&self.personal).await.map_err(failed)?);
                let recent = match links.current().get(&ShardId::RECENT) {
                    Some(link) => self.read_own_shard(ShardId::RECENT, link).await?,
                    None => DirChildren::new(),
                };
                OwnShards { links, recent }
            }
        };
        let mut update = DirChildren::new();
        update.extend(metadata.map(|m| (METADATA_ENTRY.to_owned(), m)));
        let mut made = Vec::new();
        if !ours.is_empty() {
            let new_names = ours.keys().filter(|n| !recent.contains_key(*n)).count();
            if recent.len() + new_names > RECENT_AT_MOST {
                made = self
                    .file_in_shards(&links, std::mem::take(&mut recent), ours)
                    .await?;
            } else {
                recent.extend(ours.into_iter().map(|(name, s)| (name, s.entry())));
            }
            made.push((
                ShardId::RECENT,
                self.write_shard(ShardId::RECENT, recent.clone()).await?,
            ));
        }
        for (id, shard) in made {
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
        *self.own_shards.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(OwnShards { links, recent });
        Ok(())
    }

    /// Files the recent shard's entries and then `ours` (newer) in their
    /// hashed shards: each shard they fall in is read, and made anew with
    /// them over its entries (split once it is big). Returns the new
    /// shards.
    async fn file_in_shards(
        &self,
        links: &ShardLinks,
        recent: DirChildren,
        ours: BTreeMap<String, SnapshotRef>,
    ) -> Result<Vec<(ShardId, Capability)>, EffectError> {
        let mut recent = links.group(recent);
        let mut groups: Vec<_> = links
            .group(ours)
            .into_iter()
            .map(|(id, ours)| (id, recent.remove(&id).unwrap_or_default(), ours))
            .collect();
        groups.extend(
            recent
                .into_iter()
                .map(|(id, recent)| (id, recent, BTreeMap::new())),
        );
        let made: Vec<Vec<(ShardId, Capability)>> = stream::iter(groups)
            .map(|(id, recent, ours)| async move {
                let mut entries = match links.current().get(&id) {
                    None => DirChildren::new(),
                    Some(link) => self.read_own_shard(id, link).await?,
                };
                entries.extend(recent);
                entries.extend(ours.into_iter().map(|(name, s)| (name, s.entry())));
                let mut made = Vec::new();
                for (id, entries) in personal::maybe_split(id, entries) {
                    made.push((id, self.write_shard(id, entries).await?));
                }
                Ok::<_, EffectError>(made)
            })
            .buffer_unordered(POLL_PARALLELISM)
            .try_collect()
            .await?;
        Ok(made.into_iter().flatten().collect())
    }

    /// The entries of our shard `id`.
    async fn read_own_shard(
        &self,
        id: ShardId,
        link: &Capability,
    ) -> Result<DirChildren, EffectError> {
        match read_shard(&*self.grid, id, link, &self.folder_tag).await {
            Ok(shard) => Ok(shard.entries),
            Err(ShardError::Grid(e)) => Err(grid_error(&format!("cannot read our shard {id}"), e)),
            Err(e @ ShardError::Invalid(_)) => Err(EffectError::permanent(format!(
                "cannot read our shard {id}: {e}"
            ))),
        }
    }

    /// Makes shard `id` of `entries` (not yet linked).
    async fn write_shard(
        &self,
        id: ShardId,
        mut entries: DirChildren,
    ) -> Result<Capability, EffectError> {
        // A fresh nonce in every attempt, as in the aside record.
        let mut header = shard_header(id, &self.folder_tag);
        header.metadata[NONCE_KEY] = serde_json::Value::String(attempt_nonce()?);
        entries.insert(SHARD_HEADER.to_owned(), header);
        self.grid
            .create_immutable_dir(entries)
            .await
            .map_err(|e| grid_error(&format!("cannot write our shard {id}"), e))
    }
}

/// Our sharded personal directory as last written.
#[derive(Debug)]
pub(super) struct OwnShards {
    links: ShardLinks,
    /// The recent shard's entries.
    recent: DirChildren,
}
