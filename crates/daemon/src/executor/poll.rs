//! Polling: what changed in the other participants' directories.
//!
//! A directory unchanged since its last listing is left out: the engine
//! keeps the last listing of each participant (of each shard) and only
//! looks at what differs from it, so it would change nothing — but
//! listing, decoding and comparing it costs O(entries) on every poll, which
//! was most of an idle daemon's CPU time. Of a sharded directory only the
//! shards whose link changed are read (see [`crate::personal`]).

use mf_grid::Listed;

use crate::format::FolderFormat;
use crate::personal::{self, parse_shard_link, read_shard, ShardId, ShardLinks};

use super::*;

/// The format the collective records, as last read.
#[derive(Debug, Default)]
pub(super) struct FormatWatch {
    /// The collective's `@metadata` link it was read from (`Some(None)`:
    /// there was none).
    seen: Option<Option<Capability>>,
    /// It is not the executor's (or it cannot be read).
    changed: bool,
}

/// What the engine was last given of one participant's directory.
#[derive(Clone, Debug, Default)]
pub(super) struct Polled {
    /// The directory listed.
    dir: Option<Capability>,
    /// Its revision then; `None` after a part of it could not be read, so
    /// that the next poll reads it again.
    revision: Option<Revision>,
    /// Sharded: the link of each part given — `None` for the directory's
    /// own `@metadata`, `Some(id)` for a shard.
    links: HashMap<Option<ShardId>, Capability>,
}

impl<G: Grid> Executor<G> {
    pub(super) async fn poll(&self) -> Result<Vec<RemoteListing>, String> {
        let children = self
            .grid
            .list(&self.collective)
            .await
            .map_err(|e| format!("cannot list the collective: {e}"))?;
        self.notice_format(&children).await;
        let rules = self.rules();
        // Every directory the collective links: no participant may move
        // into another's (or into ours).
        let linked: HashSet<Capability> = children
            .values()
            .map(|e| e.cap.clone())
            .chain(self.own_read.clone())
            .collect();
        let mut out = Vec::new();
        let mut to_list = Vec::new();
        for (name, entry) in children {
            if name == METADATA_ENTRY || name == self.participant {
                continue;
            }
            if self.own_read.as_ref() == Some(&entry.cap) || entry.cap == self.personal {
                continue;
            }
            let problem = if let Err(why) = check_participant_name(&name) {
                Some(format!("collective entry {name:?} rejected: {why}"))
            } else if !entry.cap.kind().is_dir() {
                Some(format!(
                    "collective entry {name:?} rejected: not a directory capability ({:?})",
                    entry.cap.kind()
                ))
            } else {
                None
            };
            match problem {
                Some(why) => out.push(RemoteListing {
                    participant: name,
                    shard: None,
                    entries: Err(EffectError::permanent(why.clone())),
                    rejected: vec![why],
                    author: None,
                }),
                None => to_list.push((name, entry.cap)),
            }
        }
        let listed: Vec<Vec<RemoteListing>> = stream::iter(to_list)
            .map(|(name, cap)| self.list_participant(name, cap, &rules, &linked))
            .buffer_unordered(POLL_PARALLELISM)
            .collect()
            .await;
        out.extend(listed.into_iter().flatten());
        out.sort_by(|a, b| (&a.participant, a.shard).cmp(&(&b.participant, b.shard)));
        Ok(out)
    }

    /// Notices the collective recording a format other than ours (an
    /// admin's `convert`), or one this release cannot read: the folder then
    /// stops, to follow it or to say why it cannot (see [`crate::convert`]).
    /// The format is read when `@metadata` changes.
    async fn notice_format(&self, collective: &DirChildren) {
        let meta = collective.get(METADATA_ENTRY).map(|e| e.cap.clone());
        if self.lock_format().seen.as_ref() == Some(&meta) {
            return;
        }
        let ours = FolderFormat {
            layout: self.layout,
            content: self.content,
            snapshots: self.snapshots,
        };
        let changed = match FolderFormat::of_collective(&*self.grid, collective).await {
            Ok(format) => format != ours,
            // The grid failed: read it again at the next poll.
            Err(e) if e.downcast_ref::<GridError>().is_some() => {
                warn!("cannot read the folder's format: {e:#}");
                return;
            }
            Err(_) => true,
        };
        let mut watch = self.lock_format();
        watch.seen = Some(meta);
        watch.changed = changed;
    }

    /// True when the collective records a format this executor does not
    /// write.
    pub fn format_changed(&self) -> bool {
        self.lock_format().changed
    }

    fn lock_format(&self) -> std::sync::MutexGuard<'_, FormatWatch> {
        self.format.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists one participant's personal directory (where its owner moved
    /// it, if it did) and decodes what changed in it since the listing last
    /// given to the engine (nothing if nothing did).
    async fn list_participant(
        &self,
        participant: String,
        linked_as: Capability,
        rules: &IgnoreRules,
        linked: &HashSet<Capability>,
    ) -> Vec<RemoteListing> {
        let known_move = self
            .moved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&linked_as)
            .cloned();
        let mut cap = known_move.unwrap_or_else(|| linked_as.clone());
        let mut hopped = false;
        let (mut listed, before) = loop {
            let before = {
                let last = self.last_polled.lock().unwrap_or_else(|e| e.into_inner());
                last.get(&participant)
                    .filter(|p| p.dir.as_ref() == Some(&cap))
                    .cloned()
                    .unwrap_or_default()
            };
            let listed = match self.grid.list_changed(&cap, before.revision.as_ref()).await {
                Ok(None) => return Vec::new(),
                Ok(Some(listed)) => listed,
                Err(e) => {
                    let what = format!("cannot list {participant}'s directory");
                    return vec![self.listing_failed(participant, &what, e)];
                }
            };
            // One hop, into a directory of its own: never a cycle, never
            // another participant's entries under this one's name.
            match personal::moved_to(&listed.children) {
                None => break (listed, before),
                Some(Err(why)) => return self.rejected_dir(&participant, &why),
                Some(Ok(_)) if cap != linked_as => {
                    return self.rejected_dir(
                        &participant,
                        "the directory it moved to says it moved again",
                    )
                }
                Some(Ok(to)) if linked.contains(&to) => {
                    return self.rejected_dir(
                        &participant,
                        "it moved into a directory the collective links already",
                    )
                }
                Some(Ok(to)) => {
                    hopped = true;
                    cap = to;
                }
            }
        };
        if hopped {
            // Only the owner of both directories can make the new one name
            // the old one.
            if personal::moved_from(&listed.children) != Some(&linked_as) {
                return self.rejected_dir(&participant, personal::NOT_ITS_OWN);
            }
            self.moved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(linked_as.clone(), cap.clone());
            self.link_moved(&participant, &cap).await;
        }
        // Where a moved directory came from is no entry.
        listed.children.remove(personal::MOVED_FROM_ENTRY);
        // What the grid had to leave out (an entry of an unknown kind, a
        // damaged newest version) is shown in status like any rejection.
        let rejected: Vec<String> = listed
            .problems
            .iter()
            .map(|p| format!("{participant}: {p}"))
            .collect();
        // Each directory is read by what it holds: while a folder moves to
        // the sharded layout some participants have moved and some not.
        let (out, polled) = if personal::is_sharded(&listed.children) {
            self.list_sharded(participant.clone(), cap, listed, rejected, before, rules)
                .await
        } else {
            self.list_flat(participant.clone(), cap, listed, rejected, rules)
                .await
        };
        let mut last = self.last_polled.lock().unwrap_or_else(|e| e.into_inner());
        match polled {
            Some(p) => last.insert(participant, p),
            None => last.remove(&participant),
        };
        out
    }

    async fn list_flat(
        &self,
        participant: String,
        cap: Capability,
        listed: Listed,
        mut rejected: Vec<String>,
        rules: &IgnoreRules,
    ) -> (Vec<RemoteListing>, Option<Polled>) {
        let aside = match with_aside(&*self.grid, listed.children).await {
            Ok(aside) => aside,
            Err(e) => {
                let what = format!("cannot list {participant}'s directories and conflict copies");
                return (vec![self.listing_failed(participant, &what, e)], None);
            }
        };
        let listing = decode(&participant, aside.children, rules, &mut rejected);
        let polled = Polled {
            dir: Some(cap),
            revision: Some(listed.revision),
            links: HashMap::new(),
        };
        let out = RemoteListing {
            participant,
            shard: None,
            entries: Ok(listing),
            rejected,
            author: aside.author,
        };
        (vec![out], Some(polled))
    }

    /// A sharded directory: its own `@metadata` (the author declared) if
    /// that changed, and each shard whose link changed, each a listing of
    /// its own that fails on its own.
    async fn list_sharded(
        &self,
        participant: String,
        cap: Capability,
        listed: Listed,
        mut rejected: Vec<String>,
        before: Polled,
        rules: &IgnoreRules,
    ) -> (Vec<RemoteListing>, Option<Polled>) {
        // A shard its owner split is ignored until its owner unlinks it.
        let links = ShardLinks::of(&listed.children).current().clone();
        let mut own = DirChildren::new();
        for (name, entry) in listed.children {
            if name == METADATA_ENTRY {
                own.insert(name, entry);
            } else if parse_shard_link(&name).is_none() {
                rejected.push(format!(
                    "{participant}: entry {name:?}: not a shard link (the directory is sharded)"
                ));
            }
        }
        let mut out = Vec::new();
        let mut now = Polled {
            dir: Some(cap),
            revision: Some(listed.revision),
            links: HashMap::new(),
        };
        let meta = own
            .get(METADATA_ENTRY)
            .map_or_else(Capability::empty, |e| e.cap.clone());
        if before.links.get(&None) != Some(&meta) || !rejected.is_empty() {
            match with_aside(&*self.grid, own).await {
                Ok(aside) => {
                    let listing = decode(&participant, aside.children, rules, &mut rejected);
                    out.push(RemoteListing {
                        participant: participant.clone(),
                        shard: None,
                        entries: Ok(listing),
                        rejected,
                        author: aside.author,
                    });
                    now.links.insert(None, meta);
                }
                Err(e) => {
                    let what = format!("cannot list {participant}'s metadata");
                    out.push(self.part_failed(&participant, None, grid_error(&what, e)));
                    now.revision = None;
                }
            }
        } else {
            now.links.insert(None, meta);
        }
        // Shards no longer linked (or split) hold nothing now.
        for id in before.links.keys().flatten() {
            if !links.contains_key(id) {
                out.push(RemoteListing {
                    participant: participant.clone(),
                    shard: Some(*id),
                    entries: Ok(Listing::new()),
                    rejected: Vec::new(),
                    author: None,
                });
            }
        }
        let mut changed = Vec::new();
        for (id, link) in links {
            if before.links.get(&Some(id)) == Some(&link) {
                now.links.insert(Some(id), link);
            } else {
                changed.push((id, link));
            }
        }
        // An entry in the recent shard is newer than in its hashed shard:
        // the older version, when both are read in one poll (after a
        // restart, or as the recent shard's entries are filed), is left
        // out rather than fetched for nothing. So the recent shard is read
        // first (a round trip more when both changed, which is after a
        // publish that filed its batch); then the others, each decoded as it
        // arrives: a shard's
        // listing as the grid gives it (its edges' metadata as JSON) is
        // several times the size of its decoded entries, and after a
        // publish that filed a batch in every hashed shard, holding them
        // all (100,000 entries) took a reader to 200 MiB.
        let (recent_link, hashed): (Vec<_>, Vec<_>) = changed
            .into_iter()
            .partition(|(id, _)| *id == ShardId::RECENT);
        let mut newer = HashSet::new();
        let mut read = Vec::new();
        for (id, link) in recent_link {
            let shard = read_shard(&*self.grid, id, &link, &self.folder_tag).await;
            if let Ok(shard) = &shard {
                newer = shard.entries.keys().cloned().collect();
            }
            read.push((
                id,
                link,
                shard.map(|s| decode_shard(&participant, s, rules)),
            ));
        }
        let grid = &*self.grid;
        let folder = &self.folder_tag;
        let (newer, participant_ref) = (&newer, &participant);
        read.extend(
            stream::iter(hashed)
                .map(|(id, link)| async move {
                    let shard = read_shard(grid, id, &link, folder).await.map(|mut shard| {
                        shard.entries.retain(|name, _| !newer.contains(name));
                        decode_shard(participant_ref, shard, rules)
                    });
                    (id, link, shard)
                })
                .buffer_unordered(POLL_PARALLELISM)
                .collect::<Vec<_>>()
                .await,
        );
        for (id, link, shard) in read {
            match shard {
                Ok((listing, rejected)) => {
                    out.push(RemoteListing {
                        participant: participant.clone(),
                        shard: Some(id),
                        entries: Ok(listing),
                        rejected,
                        author: None,
                    });
                    now.links.insert(Some(id), link);
                }
                Err(e) => {
                    // A shard the grid could not give is read again at the
                    // next poll; one that is not a shard of this folder, when
                    // its link changes.
                    if e.is_retryable() {
                        now.revision = None;
                    } else {
                        now.links.insert(Some(id), link);
                    }
                    let error = EffectError {
                        transient: e.is_retryable(),
                        ..EffectError::permanent(e.to_string())
                    };
                    out.push(self.part_failed(&participant, Some(id), error));
                }
            }
        }
        (out, Some(now))
    }

    /// As the admin, links a participant's new directory in the collective,
    /// so that nobody (after a restart, or joining) lists its old one again.
    /// Best effort: until it succeeds readers follow the move themselves.
    async fn link_moved(&self, participant: &str, to: &Capability) {
        if self.collective.kind() != CapKind::MutableDirWrite {
            return;
        }
        let mut member = DirChildren::new();
        member.insert(participant.to_owned(), DirEntry::new(to.clone()));
        match self
            .grid
            .set_children(&self.collective, member, Replace::Yes)
            .await
        {
            Ok(()) => tracing::info!("linked {participant}'s new directory in the collective"),
            Err(e) => warn!("cannot link {participant}'s new directory in the collective: {e}"),
        }
    }

    /// A participant's directory that cannot be read as one: reported, and
    /// read whole again at the next poll.
    fn rejected_dir(&self, participant: &str, why: &str) -> Vec<RemoteListing> {
        self.last_polled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(participant);
        let why = format!("{participant}'s directory is rejected: {why}");
        vec![self.part_failed(participant, None, EffectError::permanent(why))]
    }

    /// A participant's listing that failed whole: reported, and read whole
    /// again at the next poll.
    fn listing_failed(&self, participant: String, what: &str, e: GridError) -> RemoteListing {
        self.last_polled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&participant);
        self.part_failed(&participant, None, grid_error(what, e))
    }

    fn part_failed(
        &self,
        participant: &str,
        shard: Option<ShardId>,
        e: EffectError,
    ) -> RemoteListing {
        RemoteListing {
            participant: participant.to_owned(),
            shard,
            entries: Err(e),
            rejected: Vec::new(),
            author: None,
        }
    }
}

/// A shard's entries as the engine takes them, and those rejected.
fn decode_shard(
    participant: &str,
    shard: personal::Shard,
    rules: &IgnoreRules,
) -> (Listing, Vec<String>) {
    let mut rejected: Vec<String> = shard
        .problems
        .into_iter()
        .map(|p| format!("{participant}: {p}"))
        .collect();
    let listing = decode(participant, shard.entries, rules, &mut rejected);
    (listing, rejected)
}

/// A personal directory's entries as the engine takes them: names decoded
/// with the checked mangling (unsafe and internal paths rejected, with the
/// reason in `rejected`), snapshot links only, ignored paths left out.
fn decode(
    participant: &str,
    children: DirChildren,
    rules: &IgnoreRules,
    rejected: &mut Vec<String>,
) -> Listing {
    let mut listing = Listing::new();
    for (name, entry) in children {
        let path = match parse_entry_name(&name) {
            None => continue,
            Some(Err(e)) => {
                rejected.push(format!("{participant}: entry {name:?}: {e}"));
                continue;
            }
            Some(Ok((path, _conflict_author))) => path,
        };
        if path.is_internal() {
            rejected.push(format!(
                "{participant}: entry {name:?}: {path} is an internal path (never synced)"
            ));
            continue;
        }
        let snapshot = match SnapshotRef::of_entry(&entry) {
            Ok(s) => s,
            Err(why) => {
                rejected.push(format!("{participant}: entry {name:?}: {why}"));
                continue;
            }
        };
        // Ignored paths are neither uploaded nor downloaded. (Whether it is
        // a directory is not known before fetching: a rule for directories
        // only does not filter remote entries.)
        if rules.is_ignored(&path, false) {
            continue;
        }
        listing.insert(name, (path, snapshot.cap()));
    }
    listing
}
