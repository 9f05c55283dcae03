//! The decisions: what one path needs next — upload a local change, take in
//! a remote version, keep a loser as a conflict copy — and the labels of
//! what conflicts keep.

use super::*;

/// True if a local state is what writing `snap` leaves on disk: its size,
/// and its author's modification time to the second (as the driver sets it).
pub(super) fn shows(snap: &SnapshotInfo, state: LocalState) -> bool {
    match (&snap.content, state) {
        (Content::File { size, .. }, LocalState::File(st)) => {
            *size == st.size && st.mtime_ns == snap.mtime_s.saturating_mul(1_000_000_000)
        }
        _ => false,
    }
}

/// The head every participant shows as the file; `gens[i]` is the proven
/// generation of `heads[i]`.
pub(super) fn winner<'a>(heads: &'a [SnapshotInfo], gens: &[u64]) -> Option<&'a SnapshotInfo> {
    heads
        .iter()
        .zip(gens)
        .max_by(|(a, ag), (b, bg)| compare_for_win(a, **ag, b, **bg))
        .map(|(h, _)| h)
}

/// Names what is kept of each losing version. A losing file gets a copy
/// named after its author (plus a short id of the version when the author
/// has several). Everything else — a losing deletion or directory, or a file
/// whose bytes the winner already has — is kept only as a *marker*: a record
/// without a file, labelled `<author>-t<id>`, remembered and published so
/// that what it superseded stays superseded everywhere.
pub(super) fn copy_labels<'a>(
    losers: &[&'a SnapshotInfo],
    winner: &SnapshotInfo,
) -> Vec<(String, &'a SnapshotInfo)> {
    let needs_copy = |h: &SnapshotInfo| {
        matches!(h.content, Content::File { .. }) && !same_content(&h.content, &winner.content)
    };
    losers
        .iter()
        .map(|h| {
            let copies_by_author = losers
                .iter()
                .filter(|o| o.author == h.author && needs_copy(o))
                .count();
            let label = if !needs_copy(h) {
                marker_label(h)
            } else if copies_by_author == 1 {
                h.author.clone()
            } else {
                unique_label(h)
            };
            (label, *h)
        })
        .collect()
}

/// A label no other version can have: the author plus a short id of the
/// version (`t` in front for a marker, as in [`copy_labels`]).
pub(super) fn unique_label(h: &SnapshotInfo) -> String {
    match h.content {
        Content::File { .. } => format!("{}-{}", h.author, short_id(&h.cap)),
        _ => marker_label(h),
    }
}

/// The label of a marker: `<author>-t<id>`.
pub(super) fn marker_label(h: &SnapshotInfo) -> String {
    format!("{}-t{}", h.author, short_id(&h.cap))
}

/// Six hex digits that tell versions apart in labels.
pub(super) fn short_id(cap: &Cap) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(cap.as_str().as_bytes());
    d[..3].iter().map(|b| format!("{b:02x}")).collect()
}

/// True for the label of a marker (a record with no file; see [`copy_labels`]).
pub(super) fn is_marker_label(label: &str) -> bool {
    label.rsplit_once('-').is_some_and(|(_, id)| {
        id.len() == 7 && id.starts_with('t') && id[1..].bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// What evaluating one remote candidate led to.
pub(super) enum Eval {
    /// Nothing (more) to do for it.
    Drop,
    /// Waiting: an effect was asked for, or a snapshot must be fetched first.
    Wait,
}

impl<S: Store> Engine<S> {
    /// Decides the next thing to do for one path, if any.
    pub(super) fn step(&mut self, path: &RelPath) {
        if self.busy.contains_key(path) || self.backoff.contains_key(path) {
            return;
        }
        if self.clean_up_copies(path) {
            return;
        }
        // Local changes go first: they become history before anything remote
        // is compared with it.
        let mut ours_or_theirs = false;
        if let Some(&state) = self.observed.get(path) {
            if self.recognise_adopted(path, state) {
                return;
            }
            let known = self
                .current
                .get(path)
                .map_or(LocalState::Absent, |c| c.local);
            ours_or_theirs = state == LocalState::Dir
                && known == LocalState::Absent
                && self.peer_dir_on_its_way(path);
            if state != known && !ours_or_theirs {
                // After a crash mid-adopt, an edited file may hold our old
                // version or the one being adopted: claim neither as parent,
                // so both stay kept and the edit joins them as a conflict.
                let unsure = self.unsure.contains(path);
                let mut parents: Vec<Cap> = self
                    .current
                    .get(path)
                    .filter(|_| !unsure)
                    .map(|c| c.snapshot.clone())
                    .into_iter()
                    .collect();
                let resolving = self.superseded_caps(path);
                parents.extend(resolving.iter().cloned());
                self.emit_upload(path, state, parents, resolving);
                return;
            }
            // A new directory where a peer's is on its way is most likely
            // the one our own writes of its files made: it stays observed
            // while theirs is taken in below (writing a directory over one
            // is nothing), instead of becoming a rival with no history.
            if !ours_or_theirs {
                self.observed.remove(path);
                self.confirm_unchanged(path);
            }
        }
        let resolving = self.resolved_caps(path);
        if !resolving.is_empty() {
            let cur = self.current.get(path);
            let local = cur.map_or(LocalState::Absent, |c| c.local);
            let mut parents: Vec<Cap> = cur.map(|c| c.snapshot.clone()).into_iter().collect();
            parents.extend(resolving.iter().cloned());
            self.emit_upload(path, local, parents, resolving);
            return;
        }
        while let Some(t) = self.candidates.of(path).first().cloned() {
            match self.evaluate(path, &t) {
                Eval::Drop => self.candidates.remove(path, &t),
                Eval::Wait => return,
            }
        }
        // The peer's directory was nothing new after all: ours is a change.
        if ours_or_theirs {
            self.work.insert(path.clone());
            return;
        }
        // A change of the current version (a local edit, a fast-forward to a
        // deletion) can change which kept version wins, or their labels.
        if self.conflicts.contains_key(path) {
            if let Some(heads) = self.heads(path) {
                self.realize(path, &heads);
            }
        }
    }

    /// True if a peer's version of `path` is pending that is, or may be, a
    /// directory: each one not fetched yet, or a directory.
    fn peer_dir_on_its_way(&mut self, path: &RelPath) -> bool {
        let pending: Vec<Cap> = self
            .candidates
            .of(path)
            .iter()
            .filter(|t| !self.bad.contains_key(*t))
            .cloned()
            .collect();
        !pending.is_empty()
            && pending
                .iter()
                .all(|t| self.lookup(t).is_none_or(|i| i.content == Content::Dir))
    }

    /// The open (unresolved) conflict records of a path.
    pub(super) fn open_conflicts(&self, path: &RelPath) -> Vec<Conflict> {
        self.conflicts
            .get(path)
            .map(|m| m.values().filter(|c| !c.resolved).cloned().collect())
            .unwrap_or_default()
    }

    /// The versions of a path we keep that nothing else we keep supersedes:
    /// the maximal elements among the current version and every open
    /// conflict record. `None` if part of the DAG must be fetched first.
    pub(super) fn heads(&mut self, path: &RelPath) -> Option<Vec<SnapshotInfo>> {
        let caps: Vec<Cap> = self
            .current
            .get(path)
            .map(|c| c.snapshot.clone())
            .into_iter()
            .chain(self.open_conflicts(path).into_iter().map(|c| c.snapshot))
            .collect();
        let mut kept: Vec<SnapshotInfo> = Vec::new();
        for cap in caps {
            if kept.iter().any(|h| h.cap == cap) {
                continue;
            }
            match self.lookup(&cap) {
                Some(info) => kept.push(info),
                None => {
                    self.need_fetch(cap, path);
                    return None;
                }
            }
        }
        let mut heads = Vec::new();
        for h in &kept {
            let mut superseded = false;
            for other in &kept {
                if other.cap == h.cap {
                    continue;
                }
                match self.ancestry(&h.cap, &other.cap, path) {
                    Answer::Yes => superseded = true,
                    Answer::Need(_) => return None,
                    Answer::No => {}
                }
            }
            if !superseded {
                heads.push(h.clone());
            }
        }
        Some(heads)
    }

    /// Removes conflict records (and their copies) that a version we keep
    /// already includes: someone resolved them or built on them. True if it
    /// had to act or wait.
    pub(super) fn clean_up_copies(&mut self, path: &RelPath) -> bool {
        let open = self.open_conflicts(path);
        if open.is_empty() {
            return false;
        }
        let Some(heads) = self.heads(path) else {
            return true;
        };
        let cur = self.current.get(path).map(|c| c.snapshot.clone());
        for c in &open {
            if Some(&c.snapshot) == cur.as_ref() {
                // Our own version, kept aside while the winner is adopted.
                continue;
            }
            if !heads.iter().any(|h| h.cap == c.snapshot) {
                self.emit_remove_copy(path, c);
                return true;
            }
        }
        false
    }

    /// Decides what a remote snapshot `t` of `path` means for us.
    pub(super) fn evaluate(&mut self, path: &RelPath, t: &Cap) -> Eval {
        if self.bad.contains_key(t) {
            return Eval::Drop;
        }
        let Some(theirs) = self.lookup(t) else {
            self.need_fetch(t.clone(), path);
            return Eval::Wait;
        };
        // Nothing is taken in before its claims are proven by its parents,
        // so every participant rejects a liar alike, whether or not it ever
        // has to rank it against another version.
        if self.proven_generation(t, path).is_none() {
            return Eval::Wait;
        }
        if self.bad.contains_key(t) {
            return Eval::Drop;
        }
        let Some(heads) = self.heads(path) else {
            return Eval::Wait;
        };
        // Nothing new if we keep it, or something built on it, already.
        for h in &heads {
            match self.ancestry(t, &h.cap, path) {
                Answer::Yes => return Eval::Drop,
                Answer::Need(_) => return Eval::Wait,
                Answer::No => {}
            }
        }
        // The heads it supersedes drop out; it joins the rest.
        let mut next = vec![theirs];
        for h in heads {
            match self.ancestry(&h.cap, t, path) {
                Answer::Yes => {}
                Answer::Need(_) => return Eval::Wait,
                Answer::No => next.push(h),
            }
        }
        if self.realize(path, &next) {
            Eval::Wait
        } else {
            Eval::Drop
        }
    }

    /// Makes the folder show a set of heads: the winner as the file, every
    /// other file head as a conflict copy, losing deletions remembered.
    /// Emits at most one effect; true if it did (or must wait).
    pub(super) fn realize(&mut self, path: &RelPath, heads: &[SnapshotInfo]) -> bool {
        // Only a choice between heads needs their ranks.
        let mut gens = vec![0; heads.len()];
        if heads.len() > 1 {
            for (g, h) in gens.iter_mut().zip(heads) {
                match self.proven_generation(&h.cap, path) {
                    Some(proven) => *g = proven,
                    None => return true,
                }
            }
        }
        let Some(w) = winner(heads, &gens).cloned() else {
            return false;
        };
        let cur = self.current.get(path).cloned();
        let losers: Vec<&SnapshotInfo> = heads.iter().filter(|h| h.cap != w.cap).collect();
        // A label still held by another version we keep (e.g. the winner's
        // copy, until the winner is in the file) is never taken over: that
        // would forget the other version. Use the version's own id instead.
        let cur_cap = self.current.get(path).map(|c| c.snapshot.clone());
        let kept = |cap: &Cap| heads.iter().any(|h| h.cap == *cap) || cur_cap.as_ref() == Some(cap);
        let wanted: Vec<(String, &SnapshotInfo)> = copy_labels(&losers, &w)
            .into_iter()
            .map(|(label, h)| {
                let holder = self
                    .conflicts
                    .get(path)
                    .and_then(|m| m.get(&label))
                    .map(|r| r.snapshot.clone());
                match holder {
                    Some(other) if other != h.cap && kept(&other) => (unique_label(h), h),
                    _ => (label, h),
                }
            })
            .collect();
        for (label, h) in &wanted {
            let record = self.conflicts.get(path).and_then(|m| m.get(label)).cloned();
            let marker = is_marker_label(label);
            // A copy's record without a copy state is a copy still being written.
            if record
                .as_ref()
                .is_some_and(|r| r.snapshot == h.cap && (r.copy.is_some() || marker))
            {
                continue;
            }
            if !marker {
                self.emit_copy(path, label, (*h).clone());
                return true;
            }
            self.put_tombstone(path, label, h);
        }
        match cur {
            None => {
                self.emit_adopt(path, w, LocalState::Absent);
                return true;
            }
            Some(c) if c.snapshot != w.cap => {
                // Written even when our version has the winner's content:
                // only the write's last-moment check proves the file is
                // still what we recorded. Our record may be stale (a local
                // change not seen yet, or an earlier run's adoption that did
                // reach the disk); taking the winner's history on it would
                // let that change claim a version it never saw as parent, or
                // let the recognised adoption forget the winner.
                self.emit_adopt(path, w, c.local);
                return true;
            }
            Some(_) => {}
        }
        // Copies kept under a label that is no longer theirs (an author's
        // second copy appeared, or went) are removed once the new one exists.
        // A copy of our own current version is redundant only once no
        // replacement of the file is under way or pending: until then it may
        // be all that is left of that version.
        let cur = self.current.get(path);
        let settled = cur.is_some_and(|c| c.adopting.is_none()) && !self.candidates.has(path);
        let cur_cap = cur.map(|c| c.snapshot.clone()).filter(|_| !settled);
        let in_heads = |c: &Conflict| {
            Some(&c.snapshot) != cur_cap.as_ref() && heads.iter().any(|h| h.cap == c.snapshot)
        };
        let stale = self.open_conflicts(path).into_iter().find(|c| {
            in_heads(c)
                && !wanted
                    .iter()
                    .any(|(l, h)| *l == c.author && h.cap == c.snapshot)
        });
        if let Some(c) = stale {
            self.emit_remove_copy(path, &c);
            return true;
        }
        false
    }

    /// Records a losing deletion (or directory): no copy on disk, but it is
    /// remembered and published, so that what it deleted stays deleted.
    pub(super) fn put_tombstone(&mut self, path: &RelPath, label: &str, loser: &SnapshotInfo) {
        let c = Conflict {
            path: path.clone(),
            author: label.to_owned(),
            snapshot: loser.cap.clone(),
            copy: None,
            resolved: false,
        };
        self.put_conflict(c);
    }

    /// After a crash, a file that shows exactly the version we were writing
    /// over it is that version, not a local edit. True if so.
    pub(super) fn recognise_adopted(&mut self, path: &RelPath, state: LocalState) -> bool {
        let Some(cur) = self.current.get(path).cloned() else {
            return false;
        };
        let (Some(w), LocalState::File(st)) = (cur.adopting.clone(), state) else {
            return false;
        };
        if self.busy.contains_key(path) || cur.local == state || !self.unsure.contains(path) {
            return false;
        }
        let Some(info) = self.lookup(&w) else {
            return false;
        };
        let matches = shows(&info, LocalState::File(st));
        if matches {
            self.candidates.remove(path, &w);
            self.observed.remove(path);
            self.set_current_adopted(
                path,
                Current {
                    snapshot: w,
                    local: state,
                    published: false,
                    adopting: None,
                },
            );
            self.work.insert(path.clone());
        }
        matches
    }

    /// True if an earlier run was writing `info` over `path` when it died,
    /// and the file now shows that version: the write happened.
    pub(super) fn was_adopting(
        &self,
        path: &RelPath,
        info: &SnapshotInfo,
        actual: LocalState,
    ) -> bool {
        self.unsure.contains(path)
            && self
                .current
                .get(path)
                .is_some_and(|c| c.adopting.as_ref() == Some(&info.cap))
            && shows(info, actual)
    }

    /// The file was seen to be exactly our recorded version: an adoption
    /// that a crash cut short never reached the disk.
    pub(super) fn confirm_unchanged(&mut self, path: &RelPath) {
        if self.current.get(path).is_some_and(|c| c.adopting.is_some()) {
            self.clear_adopting(path);
            self.unsure.remove(path);
            self.work.insert(path.clone());
        }
    }

    pub(super) fn clear_adopting(&mut self, path: &RelPath) {
        if let Some(cur) = self
            .current
            .get(path)
            .filter(|c| c.adopting.is_some())
            .cloned()
        {
            let cleared = Current {
                adopting: None,
                ..cur
            };
            self.changes
                .push(Change::PutCurrent(path.clone(), cleared.clone()));
            self.current.insert(path.clone(), cleared);
        }
    }

    /// The kept losers of `path` that the user resolved: a version naming
    /// them as parents is uploaded even without a local change.
    pub(super) fn resolved_caps(&self, path: &RelPath) -> Vec<Cap> {
        self.conflicts
            .get(path)
            .map(|m| {
                m.iter()
                    .filter(|(_, c)| c.resolved)
                    .map(|(_, c)| c.snapshot.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The kept losers of `path` that a new local version of it supersedes:
    /// the resolved ones, and the markers of losing directories. Such a
    /// marker shows the user nothing of its own (a directory is a
    /// directory), so what they do next was done knowing all it holds; left
    /// out, it would stay a head and win again over a removal — a directory
    /// beats a deletion — and bring the directory back. (A marker alone
    /// triggers no upload: both sides would make a merge of the same
    /// versions at once, and again for each other's merges.)
    pub(super) fn superseded_caps(&mut self, path: &RelPath) -> Vec<Cap> {
        let candidates: Vec<(bool, Cap)> = self
            .conflicts
            .get(path)
            .map(|m| {
                m.iter()
                    .filter(|(label, c)| c.resolved || is_marker_label(label))
                    .map(|(_, c)| (c.resolved, c.snapshot.clone()))
                    .collect()
            })
            .unwrap_or_default();
        candidates
            .into_iter()
            .filter(|(resolved, cap)| {
                *resolved || self.lookup(cap).is_some_and(|i| i.content == Content::Dir)
            })
            .map(|(_, cap)| cap)
            .collect()
    }
}
