//! Asking for effects: each `emit_*` records the in-flight operation (and any
//! write-ahead record) and queues the matching `Action`.

use super::decide::is_marker_label;
use super::*;

impl<S: Store> Engine<S> {
    pub(super) fn new_op(&mut self, op: Op) -> OpId {
        self.next_op += 1;
        let id = OpId(self.next_op);
        match &op {
            Op::Upload { path, .. } | Op::Write { path, .. } => {
                self.busy.insert(path.clone(), id);
            }
            Op::Publish { .. } => {}
        }
        self.uploads_in_flight += usize::from(matches!(op, Op::Upload { .. }));
        self.writes_in_flight += usize::from(matches!(op, Op::Write { .. }));
        self.ops.insert(id, op);
        id
    }

    /// Forgets a finished effect; `None` for an unknown (e.g. pre-crash) one.
    pub(super) fn finish(&mut self, id: OpId) -> Option<Op> {
        let op = self.ops.remove(&id)?;
        self.uploads_in_flight -= usize::from(matches!(op, Op::Upload { .. }));
        self.writes_in_flight -= usize::from(matches!(op, Op::Write { .. }));
        if let Op::Upload { path, .. } | Op::Write { path, .. } = &op {
            if self.busy.get(path) == Some(&id) {
                self.busy.remove(path);
            }
        }
        Some(op)
    }

    /// True while a write of ours that changes `target` on disk is in
    /// flight: `target` is `path` or one of its conflict copies.
    pub(super) fn writing(&self, path: &RelPath, target: &RelPath) -> bool {
        self.busy
            .get(path)
            .and_then(|id| self.ops.get(id))
            .is_some_and(
                |op| matches!(op, Op::Write { purpose, .. } if purpose.target(path) == *target),
            )
    }

    /// Uploads a new snapshot of `path` — once its parents' generations are
    /// proven (until then a fetch is asked for and the path waits on it).
    pub(super) fn emit_upload(
        &mut self,
        path: &RelPath,
        local: LocalState,
        parents: Vec<Cap>,
        resolving: Vec<Cap>,
    ) {
        let Some(generation) = self.generation_for(&parents, path) else {
            return;
        };
        let op = self.new_op(Op::Upload {
            path: path.clone(),
            local,
            resolving,
        });
        self.out.push_back(Action::Upload {
            op,
            path: path.clone(),
            local,
            parents,
            generation,
        });
    }

    pub(super) fn emit_adopt(&mut self, path: &RelPath, snap: SnapshotInfo, expect: LocalState) {
        if !self.has_whole_content(path, &snap) {
            return;
        }
        let unsettled = self.unsure.contains(path);
        if let (Content::File { .. }, Some(cur), false) =
            (&snap.content, self.current.get(path), unsettled)
        {
            // Write-ahead: remember what is about to overwrite the file.
            // (Not over an earlier run's unsettled record: that one still
            // says what the file may hold.)
            let marked = Current {
                adopting: Some(snap.cap.clone()),
                ..cur.clone()
            };
            self.changes
                .push(Change::PutCurrent(path.clone(), marked.clone()));
            self.current.insert(path.clone(), marked);
        }
        let mtime = snap.mtime_s;
        // The write carries the content; what waits for its result needs
        // only the rest (a literal is up to 13 KB, and up to
        // `max_pending_effects` writes wait).
        let kept = snap.kept();
        self.emit_write(
            path,
            path.clone(),
            snap.content,
            mtime,
            expect,
            Purpose::Adopt(kept),
        );
    }

    pub(super) fn emit_copy(&mut self, path: &RelPath, label: &str, loser: SnapshotInfo) {
        if !self.has_whole_content(path, &loser) {
            return;
        }
        let recorded = self
            .conflicts
            .get(path)
            .and_then(|m| m.get(label))
            .and_then(|c| c.copy);
        let expect = match self.found_copies.get(&(path.clone(), label.to_owned())) {
            Some(found) => *found,
            None => recorded.map_or(LocalState::Absent, LocalState::File),
        };
        let target = path.conflict_copy(label);
        // Write-ahead: the record exists before the copy does, so a crash in
        // between leaves a record to finish (or remove) the copy, never a
        // stray file nobody tracks.
        let pending = Conflict {
            path: path.clone(),
            author: label.to_owned(),
            snapshot: loser.cap.clone(),
            copy: None,
            resolved: false,
        };
        self.put_conflict(pending);
        let purpose = Purpose::Copy {
            author: label.to_owned(),
            snapshot: loser.cap.clone(),
        };
        self.emit_write(path, target, loser.content, loser.mtime_s, expect, purpose);
    }

    /// Removes a conflict copy (and then its record).
    pub(super) fn emit_remove_copy(&mut self, path: &RelPath, c: &Conflict) {
        let target = path.conflict_copy(&c.author);
        let key = (path.clone(), c.author.clone());
        let expect = match (c.copy, self.found_copies.get(&key).copied()) {
            (Some(state), _) => LocalState::File(state),
            // A copy whose write may or may not have happened (a crash):
            // probe, and remove what is found.
            (None, Some(found)) => found,
            (None, None) if self.is_pending_copy(c) => LocalState::Absent,
            (None, None) => {
                self.remove_conflict(path, &c.author);
                return;
            }
        };
        let purpose = Purpose::RemoveCopy {
            author: c.author.clone(),
        };
        self.emit_write(path, target, Content::Deleted, 0, expect, purpose);
    }

    /// A record of a losing *file* with no copy state: its copy is being
    /// written (or was, when the process died).
    pub(super) fn is_pending_copy(&self, c: &Conflict) -> bool {
        c.copy.is_none() && !is_marker_label(&c.author)
    }

    pub(super) fn emit_write(
        &mut self,
        path: &RelPath,
        target: RelPath,
        content: Content,
        mtime_s: i64,
        expect: LocalState,
        purpose: Purpose,
    ) {
        let op = self.new_op(Op::Write {
            path: path.clone(),
            purpose,
        });
        self.out.push_back(Action::Write {
            op,
            target,
            content,
            mtime_s,
            expect,
        });
    }

    pub(super) fn maybe_publish(&mut self) {
        if self.publishing.is_some()
            || (self.unpublished.is_empty() && self.unpublished_copies.is_empty())
        {
            return;
        }
        if self.publish_not_before().is_some_and(|due| due > self.now) {
            return;
        }
        // Everything unpublished goes now, but after its directory: an
        // entry whose directory's own upload is in flight waits for it, or
        // a reader would make the directory for the entry and could take
        // it for one of its own.
        let held: BTreeSet<RelPath> = self
            .unpublished
            .iter()
            .filter(|p| self.directory_uploading_above(p))
            .cloned()
            .collect();
        if held.len() == self.unpublished.len() && self.unpublished_copies.is_empty() {
            self.publish_held = true;
            return;
        }
        self.publish_urgent = !held.is_empty();
        self.adopted_unpublished = None;
        let due: Vec<RelPath> = self
            .unpublished
            .iter()
            .filter(|p| !held.contains(*p))
            .cloned()
            .collect();
        let mut paths = Vec::with_capacity(due.len());
        let mut entries = Vec::with_capacity(due.len());
        for p in due {
            let Some(c) = self.current.get(&p) else {
                continue;
            };
            let shape = match c.local {
                LocalState::File(_) => EntryShape::File,
                LocalState::Dir => EntryShape::Directory,
                LocalState::Absent => EntryShape::Deletion,
            };
            let current = c.snapshot.clone();
            entries.push(PublishEntry {
                name: entry_name(&p),
                snapshot: self.shown_at(&p, current),
                shape,
            });
            paths.push(p);
        }
        let copies: Vec<(RelPath, String, Cap)> = self
            .unpublished_copies
            .iter()
            .filter_map(|(p, a)| {
                let c = self.conflicts.get(p)?.get(a)?;
                Some((p.clone(), a.clone(), c.snapshot.clone()))
            })
            .collect();
        entries.extend(copies.iter().map(|(p, a, c)| PublishEntry {
            name: conflict_entry_name(p, a),
            snapshot: c.clone(),
            shape: EntryShape::ConflictCopy,
        }));
        let op = self.new_op(Op::Publish { paths, copies });
        self.publishing = Some(op);
        self.out.push_back(Action::Publish { op, entries });
    }

    /// True if a directory above `path` has an upload of ours in flight.
    fn directory_uploading_above(&self, path: &RelPath) -> bool {
        std::iter::successors(path.parent(), RelPath::parent).any(|dir| {
            self.busy
                .get(&dir)
                .is_some_and(|op| matches!(self.ops.get(op), Some(Op::Upload { .. })))
        })
    }

    /// What our personal directory shows under `path`'s own name: our
    /// current version — except when that is a magic-folder 24.3 peer's
    /// (it claims no generation) that won over a version of ours still kept
    /// as a conflict copy. A 24.3 peer reads only that name, so it would
    /// never learn of our version; shown there instead, it reaches the 24.3
    /// peer as a conflict (24.3 keeps its own and writes ours as a copy:
    /// both versions on both sides). Our other participants see both
    /// versions either way and pick the same winner.
    fn shown_at(&mut self, path: &RelPath, current: Cap) -> Cap {
        let ours = self.cfg.author.clone();
        let losers: Vec<Cap> = self
            .conflicts
            .get(path)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|c| !c.resolved && c.copy.is_some())
            .map(|c| c.snapshot.clone())
            .collect();
        if losers.is_empty() {
            return current;
        }
        let from_24_3 = self
            .lookup(&current)
            .is_some_and(|w| w.generation == 0 && w.author != ours.name);
        if !from_24_3 {
            return current;
        }
        losers
            .into_iter()
            .find(|l| {
                self.lookup(l)
                    .is_some_and(|i| i.author == ours.name && i.author_key == ours.verify_key)
            })
            .unwrap_or(current)
    }

    /// True if `snap` carries its content whole. If the store kept it by
    /// reference (`Content::kept`), asks for the snapshot again instead:
    /// the path is decided again when it arrives.
    fn has_whole_content(&mut self, path: &RelPath, snap: &SnapshotInfo) -> bool {
        if !snap.content.is_by_reference() {
            return true;
        }
        // A snapshot that can no longer be read is shown in status as
        // rejected; asking again would only fail again.
        if !self.bad.contains_key(&snap.cap) {
            self.need_fetch(snap.cap.clone(), path);
        }
        false
    }

    pub(super) fn need_fetch(&mut self, cap: Cap, path: &RelPath) {
        let f = self
            .fetching
            .entry(cap.clone())
            .or_insert_with(|| Fetching {
                listed_as: path.clone(),
                waiters: BTreeSet::new(),
                in_flight: false,
                backoff: None,
                missing_since: None,
            });
        f.waiters.insert(path.clone());
        if !f.in_flight && f.backoff.is_none() {
            self.send_fetch(cap);
        }
    }

    pub(super) fn send_fetch(&mut self, cap: Cap) {
        if let Some(f) = self.fetching.get_mut(&cap) {
            if !f.in_flight {
                self.fetches_in_flight += 1;
            }
            f.in_flight = true;
            let listed_as = f.listed_as.clone();
            self.out.push_back(Action::Fetch { cap, listed_as });
        }
    }
}
