//! How the engine takes in each event: scan and watcher reports, listings,
//! fetched snapshots, and the results of its own effects.

use super::*;

impl<S: Store> Engine<S> {
    pub(super) fn on_scanned(&mut self, result: Result<ScanReport, String>) {
        self.scan.in_flight = false;
        self.scan.due = self.now + self.cfg.scan_interval;
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                self.error(None, format!("{SCAN_FAILED}{e}"));
                return;
            }
        };
        self.last_scan = Some(self.now);
        // Status shows what is wrong now: a failed scan is over, and so is
        // a problem the last scan found that this one did not.
        self.clear_errors(|e| e.path.is_none() && e.message.starts_with(SCAN_FAILED));
        let problems: BTreeSet<String> = report.problems.into_iter().collect();
        let gone: Vec<String> = self.scan_problems.difference(&problems).cloned().collect();
        self.clear_errors(|e| e.path.is_none() && gone.contains(&e.message));
        for p in &problems {
            self.error(None, p.clone());
        }
        self.scan_problems = problems;
        let skipped: BTreeSet<RelPath> = report.skipped.into_iter().collect();
        // A walk takes time, and it may have passed a path we wrote (or are
        // writing) before or after the write: what it says of that path and
        // of its conflict copies is no news. Taken as news, a stale state
        // would be uploaded back (were it not for the last-moment check),
        // and a conflict copy written after the walk passed its directory
        // would count as removed by the user: the conflict resolved, and
        // the copy removed everywhere. The watcher tells what the user does
        // meanwhile, and the next scan sees these paths again.
        let written = std::mem::take(&mut self.written_while_scanning);
        let stale = |engine: &Self, path: &RelPath, target: &RelPath| {
            written.contains(target) || engine.writing(path, target)
        };
        let mut present: BTreeSet<RelPath> = BTreeSet::new();
        for (path, state) in report.entries {
            present.insert(path.clone());
            if !stale(self, &path, &path) {
                self.observe(path, state);
            }
        }
        let under_skipped = |p: &RelPath| {
            let mut cur = Some(p.clone());
            while let Some(c) = cur {
                if skipped.contains(&c) {
                    return true;
                }
                cur = c.parent();
            }
            false
        };
        let gone: Vec<RelPath> = self
            .current
            .iter()
            .filter(|(p, c)| {
                c.local != LocalState::Absent
                    && !present.contains(*p)
                    && !under_skipped(p)
                    && !stale(self, p, p)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            self.observe(p, LocalState::Absent);
        }
        let copies: Vec<RelPath> = self
            .conflicts
            .values()
            .flat_map(|m| m.values())
            .filter(|c| c.copy.is_some() && !c.resolved)
            .map(|c| (c.path.clone(), c.path.conflict_copy(&c.author)))
            .filter(|(path, copy)| {
                !present.contains(copy) && !under_skipped(copy) && !stale(self, path, copy)
            })
            .map(|(_, copy)| copy)
            .collect();
        for copy in copies {
            self.observe(copy, LocalState::Absent);
        }
    }

    pub(super) fn observe(&mut self, path: RelPath, state: LocalState) {
        if path.as_conflict_copy().is_some() {
            // A conflict copy is never uploaded; its disappearance is the
            // user's resolution of that conflict.
            if state == LocalState::Absent {
                let Some((orig, author)) = self.copy_owner(&path) else {
                    return;
                };
                if let Some(c) = self
                    .conflicts
                    .get_mut(&orig)
                    .and_then(|m| m.get_mut(&author))
                {
                    if c.copy.is_some() && !c.resolved {
                        c.resolved = true;
                        let c = c.clone();
                        self.put_conflict(c);
                        self.work.insert(orig);
                    }
                }
            }
            return;
        }
        if path.is_internal() {
            return;
        }
        let known = self
            .current
            .get(&path)
            .map_or(LocalState::Absent, |c| c.local);
        if known == state && !self.busy.contains_key(&path) {
            self.observed.remove(&path);
            self.confirm_unchanged(&path);
        } else {
            self.observed.insert(path.clone(), state);
            self.work.insert(path);
        }
    }

    /// The conflict (path, label) whose copy is `copy`. Parsed from the
    /// name when it is 24.3's plain form; a shortened name (a long file
    /// name, see `RelPath::conflict_copy`) is matched against the conflicts
    /// kept in the same directory.
    fn copy_owner(&self, copy: &RelPath) -> Option<(RelPath, String)> {
        let (stem, label) = copy.as_conflict_copy()?;
        if self
            .conflicts
            .get(&stem)
            .is_some_and(|m| m.contains_key(label))
        {
            return Some((stem, label.to_owned()));
        }
        let dir = copy.parent();
        self.conflicts
            .iter()
            .filter(|(p, _)| p.parent() == dir)
            .find_map(|(p, m)| {
                let label = copy.conflict_label_for(p)?;
                m.contains_key(label).then(|| (p.clone(), label.to_owned()))
            })
    }

    pub(super) fn on_polled(&mut self, result: Result<Vec<RemoteListing>, String>) {
        self.poll.in_flight = false;
        // Only a poll that found nothing new (or failed) sets the pace: one
        // that found changes spent its time reading them, which a later
        // poll would have had to do, and more may be on their way.
        // A listing that failed comes back at every poll: not a change.
        let found = matches!(&result, Ok(l) if l.iter().any(|l| l.entries.is_ok()));
        let took = self.now.saturating_sub(self.poll.fired);
        let spaced = if found {
            self.last_found = Some(self.now);
            0
        } else {
            took.saturating_mul(POLL_SPACING).min(POLL_WAIT_AT_MOST)
        };
        let interval = self.cfg.poll_interval;
        let pace = if self.last_found.is_some_and(|t| self.now < t + interval) {
            interval / POLLS_IN_A_BURST
        } else {
            interval
        };
        self.poll.due = self.now + pace.max(spaced);
        let listings = match result {
            Ok(l) => l,
            Err(e) => {
                self.error(None, format!("{POLL_FAILED}{e}"));
                return;
            }
        };
        self.last_poll = Some(self.now);
        self.clear_errors(|e| e.path.is_none() && e.message.starts_with(POLL_FAILED));
        for listing in listings {
            for r in &listing.rejected {
                self.error(
                    None,
                    format!("rejected entry from {}: {r}", listing.participant),
                );
            }
            let cannot_list = match listing.shard {
                None => format!("cannot list {}: ", listing.participant),
                Some(id) => format!("cannot list {}'s shard {id}: ", listing.participant),
            };
            let entries = match listing.entries {
                Ok(e) => {
                    self.clear_errors(|x| x.path.is_none() && x.message.starts_with(&cannot_list));
                    // The author is declared in the directory itself.
                    if listing.shard.is_none() {
                        self.declare(&listing.participant, listing.author);
                    }
                    e
                }
                Err(e) => {
                    self.error(None, format!("{cannot_list}{}", e.message));
                    if listing.shard.is_none() && !self.declared.contains_key(&listing.participant)
                    {
                        self.unread.entry(listing.participant).or_insert(self.now);
                    }
                    continue;
                }
            };
            let part = (listing.participant.clone(), listing.shard);
            let seen = self.seen.entry(part.clone()).or_default();
            let mut now = Vec::with_capacity(entries.len());
            // Consumed as it is read: after a bulk, the listing and the new
            // versions it names are the reader's largest tables, and its
            // entries move into the candidates instead of being copied.
            for (name, (path, cap)) in entries {
                let f = fingerprint(&name, &path, &cap);
                now.push(f);
                // Our own current version is nothing new (and after a
                // restart, when nothing is `seen` yet, that is almost every
                // entry: evaluating each would read its snapshot record).
                let ours = self.current.get(&path).is_some_and(|c| c.snapshot == cap);
                if !ours && seen.binary_search(&f).is_err() && !path.is_internal() {
                    self.work.insert(path.clone());
                    self.candidates.add(path, cap);
                }
            }
            now.sort_unstable();
            *seen = now;
            if seen.is_empty() {
                // A shard emptied, or split into smaller ones: nothing to keep.
                self.seen.remove(&part);
            }
        }
    }

    /// Records what `participant`'s directory declares of its author, in
    /// memory and in the store (see [`Change::PutDeclared`]).
    fn declare(&mut self, participant: &str, author: Option<DeclaredAuthor>) {
        self.unread.remove(participant);
        match author {
            Some(a) if self.declared.get(participant) != Some(&a) => {
                self.changes
                    .push(Change::PutDeclared(participant.to_owned(), a.clone()));
                self.declared.insert(participant.to_owned(), a);
            }
            None if self.declared.remove(participant).is_some() => {
                self.changes
                    .push(Change::RemoveDeclared(participant.to_owned()));
            }
            _ => {}
        }
    }

    pub(super) fn on_fetched(&mut self, cap: Cap, result: Result<SnapshotInfo, EffectError>) {
        let Some(mut f) = self.fetching.remove(&cap) else {
            return;
        };
        if f.in_flight {
            self.fetches_in_flight -= 1;
        }
        let result = result.and_then(|info| match self.impersonation(&info) {
            Some(why) => Err(EffectError::permanent(why)),
            None => match self.unread.get(&info.author) {
                Some(since) if self.now - since < UNREAD_PATIENCE => {
                    Err(EffectError::transient(format!(
                        "cannot check that the snapshot for {} is {}'s yet: {}'s directory, \
                         which declares its key, could not be read",
                        info.relpath, info.author, info.author
                    )))
                }
                _ => Ok(info),
            },
        });
        match result {
            Ok(info) => {
                self.changes.push(Change::PutSnapshot(info.kept()));
                self.remember(info);
                self.work.extend(f.waiters);
            }
            Err(e)
                if e.transient
                    || (e.missing
                        && self.now - *f.missing_since.get_or_insert(self.now)
                            < MISSING_PATIENCE) =>
            {
                self.error(
                    Some(f.listed_as.clone()),
                    format!("fetching a snapshot: {}", e.message),
                );
                f.in_flight = false;
                f.backoff = Some(Backoff::after_failure(f.backoff, self.now));
                self.fetching.insert(cap, f);
            }
            Err(e) => {
                self.error(
                    Some(f.listed_as.clone()),
                    format!("rejected a snapshot: {}", e.message),
                );
                self.bad.insert(cap, e.message);
                self.work.extend(f.waiters);
            }
        }
    }

    /// Why `info` is not what it claims to be: its author name is one a
    /// participant declares, with a key that is not the declared one.
    fn impersonation(&self, info: &SnapshotInfo) -> Option<String> {
        let mut declared = self
            .declared
            .values()
            .chain([&self.cfg.author])
            .filter(|a| a.name == info.author)
            .peekable();
        declared.peek()?;
        if declared.any(|a| a.verify_key == info.author_key) {
            return None;
        }
        Some(format!(
            "snapshot for {} claims the author {:?} but is not signed by the key {:?} declares",
            info.relpath, info.author, info.author
        ))
    }

    pub(super) fn on_uploaded(&mut self, op: OpId, result: UploadOutcome) {
        let Some(Op::Upload {
            path,
            local: sent,
            resolving,
        }) = self.finish(op)
        else {
            return;
        };
        match result {
            UploadOutcome::Done(info) => {
                self.failures.remove(&path);
                self.clear_errors(|e| {
                    e.path.as_ref() == Some(&path) && e.message.starts_with(UPLOAD_FAILED)
                });
                let local = match &info.content {
                    Content::Deleted => LocalState::Absent,
                    Content::Dir => LocalState::Dir,
                    Content::File { .. } => sent,
                };
                self.changes.push(Change::PutSnapshot(info.kept()));
                let cap = info.cap.clone();
                self.notify(Notice::Uploaded {
                    path: path.clone(),
                    content: info.content.kept(),
                });
                // Markers superseded by an edit are no resolution to tell of.
                let resolved_by_user = self.conflicts.get(&path).is_some_and(|m| {
                    m.values()
                        .any(|c| c.resolved && resolving.contains(&c.snapshot))
                });
                if resolved_by_user {
                    self.notify(Notice::Resolved { path: path.clone() });
                }
                self.remember_proven(&cap, info.generation);
                self.remember(info);
                self.set_current(
                    &path,
                    Current {
                        snapshot: cap,
                        local,
                        published: false,
                        adopting: None,
                    },
                );
                if self.observed.get(&path) == Some(&local) {
                    self.observed.remove(&path);
                }
                for parent in resolving {
                    self.drop_conflict_with(&path, &parent);
                }
            }
            UploadOutcome::Changed(actual) => {
                self.observed.insert(path.clone(), actual);
                self.backoff.insert(
                    path.clone(),
                    Backoff {
                        due: self.now + CHANGED_DELAY,
                        attempts: 0,
                    },
                );
            }
            UploadOutcome::Failed(e) => {
                self.error(Some(path.clone()), format!("{UPLOAD_FAILED}{}", e.message));
                self.retry_later(&path);
            }
        }
        self.work.insert(path);
    }

    pub(super) fn on_published(&mut self, op: OpId, result: Result<(), EffectError>, took: Millis) {
        let Some(Op::Publish { paths, copies }) = self.finish(op) else {
            return;
        };
        self.publishing = None;
        let moved = std::mem::take(&mut self.moved_while_publishing);
        match result {
            Ok(()) => {
                // A failed publish is retried at its backoff's pace.
                self.last_publish = Some((self.now, took));
                self.publish_backoff = None;
                for (path, author, cap) in copies {
                    let still = self
                        .conflicts
                        .get(&path)
                        .and_then(|m| m.get(&author))
                        .is_some_and(|c| c.snapshot == cap);
                    if still {
                        self.unpublished_copies.remove(&(path, author));
                    }
                }
                for path in paths {
                    if moved.contains(&path) {
                        continue;
                    }
                    if let Some(c) = self.current.get_mut(&path) {
                        self.changes
                            .push(Change::MarkPublished(path.clone(), c.snapshot.clone()));
                        c.published = true;
                        self.unpublished.remove(&path);
                    }
                }
            }
            Err(e) => {
                self.error(
                    None,
                    format!("publishing to our personal directory failed: {}", e.message),
                );
                self.publish_backoff = Some(Backoff::after_failure(self.publish_backoff, self.now));
                // Retried at the backoff's pace, adoptions or not.
                self.publish_urgent = true;
            }
        }
    }

    pub(super) fn on_written(&mut self, op: OpId, result: WriteOutcome) {
        let Some(Op::Write { path, purpose }) = self.finish(op) else {
            return;
        };
        if self.scan.in_flight {
            self.written_while_scanning.insert(purpose.target(&path));
        }
        self.work.insert(path.clone());
        if matches!(result, WriteOutcome::Done(_)) {
            self.failures.remove(&path);
            self.clear_errors(|e| {
                e.path.as_ref() == Some(&path) && e.message.starts_with(WRITE_FAILED)
            });
        }
        match (purpose, result) {
            (Purpose::Adopt(info), WriteOutcome::Done(state)) => {
                self.notify(Notice::Downloaded {
                    path: path.clone(),
                    author: info.author.clone(),
                    content: info.content,
                });
                self.not_empty.remove(&path);
                self.candidates.remove(&path, &info.cap);
                self.set_current_adopted(
                    &path,
                    Current {
                        snapshot: info.cap.clone(),
                        local: state,
                        published: false,
                        adopting: None,
                    },
                );
                if self.observed.get(&path) == Some(&state) {
                    self.observed.remove(&path);
                }
                // A kept copy that just won back its place is redundant now.
                let stale = self
                    .open_conflicts(&path)
                    .into_iter()
                    .find(|c| c.snapshot == info.cap);
                if let Some(c) = stale {
                    self.emit_remove_copy(&path, &c);
                }
            }
            (Purpose::Adopt(_), WriteOutcome::NotEmpty) if self.work_below(&path) => {
                // Its entries are still being dealt with (their deletions may
                // just be slower): look again shortly, without counting a try.
                self.backoff.insert(
                    path.clone(),
                    Backoff {
                        due: self.now + CHANGED_DELAY,
                        attempts: 0,
                    },
                );
            }
            (Purpose::Adopt(info), WriteOutcome::NotEmpty) => {
                let tries = self.not_empty.entry(path.clone()).or_insert(0);
                *tries += 1;
                if *tries >= NOT_EMPTY_TRIES {
                    // Something new lives in the directory: keep it. Re-publish
                    // it on top of the deletion so everyone keeps it too.
                    self.not_empty.remove(&path);
                    self.candidates.remove(&path, &info.cap);
                    self.set_current(
                        &path,
                        Current {
                            snapshot: info.cap.clone(),
                            local: LocalState::Absent,
                            published: false,
                            adopting: None,
                        },
                    );
                    self.observed.insert(path.clone(), LocalState::Dir);
                } else {
                    self.retry_later(&path);
                }
            }
            (Purpose::Copy { author, snapshot }, WriteOutcome::Done(state)) => {
                self.notify(Notice::Conflict {
                    path: path.clone(),
                    label: author.clone(),
                });
                self.found_copies.remove(&(path.clone(), author.clone()));
                let copy = match state {
                    LocalState::File(s) => Some(s),
                    _ => None,
                };
                let c = Conflict {
                    path: path.clone(),
                    author,
                    snapshot,
                    copy,
                    resolved: false,
                };
                self.put_conflict(c);
            }
            (Purpose::RemoveCopy { author }, WriteOutcome::Done(_)) => {
                self.found_copies.remove(&(path.clone(), author.clone()));
                self.remove_conflict(&path, &author);
            }
            (Purpose::RemoveCopy { author }, WriteOutcome::Changed(actual)) => {
                let key = (path.clone(), author.clone());
                let pending = self
                    .conflicts
                    .get(&path)
                    .and_then(|m| m.get(&author))
                    .is_some_and(|c| c.copy.is_none());
                if pending
                    && !matches!(actual, LocalState::Dir)
                    && self.found_copies.get(&key) != Some(&actual)
                {
                    // The half-remembered copy is there after all: remove it next.
                    self.found_copies.insert(key, actual);
                } else {
                    // A copy the user edited is left in place, no longer tracked.
                    self.found_copies.remove(&key);
                    self.remove_conflict(&path, &author);
                }
            }
            (Purpose::Copy { author, .. }, WriteOutcome::Changed(actual)) => {
                // Something else sits at the copy's name (a copy written just
                // before a crash, or a user's file): the next write moves it to
                // the versions area instead of failing again.
                if matches!(actual, LocalState::Dir) {
                    self.error(
                        Some(path.clone()),
                        format!("a directory is in the way of the conflict copy from {author}"),
                    );
                    self.retry_later(&path);
                } else {
                    self.found_copies.insert((path.clone(), author), actual);
                }
            }
            (Purpose::Adopt(info), WriteOutcome::Changed(actual))
                if self.was_adopting(&path, &info, actual) =>
            {
                // Written before a crash: the file already is that version.
                self.candidates.remove(&path, &info.cap);
                self.observed.remove(&path);
                self.set_current_adopted(
                    &path,
                    Current {
                        snapshot: info.cap.clone(),
                        local: actual,
                        published: false,
                        adopting: None,
                    },
                );
            }
            (Purpose::Adopt(_), WriteOutcome::Changed(actual)) => {
                // Changed under us: the local edit is uploaded first; the
                // remote version is then a conflict, never an overwrite.
                // (This write never happened; if an earlier run's may have,
                // the record stays until the edit is uploaded.)
                if !self.unsure.contains(&path) {
                    self.clear_adopting(&path);
                }
                self.observed.insert(path.clone(), actual);
            }
            (_, WriteOutcome::NotEmpty) => {}
            (_, WriteOutcome::Failed(e)) => {
                // This write did not happen; one an earlier run was making
                // may have, so that record stays until it is settled.
                if !self.unsure.contains(&path) {
                    self.clear_adopting(&path);
                }
                self.error(Some(path.clone()), format!("{WRITE_FAILED}{}", e.message));
                self.retry_later(&path);
            }
        }
    }
}

/// A 128-bit fingerprint of a listing entry, for noticing what changed
/// between two listings. Two halves from std's `DefaultHasher` (SipHash-1-3
/// today) with fixed keys and different salts: deterministic, as the engine
/// must be, and never stored, so another hash in a later release is
/// harmless. An accidental collision is out of reach, and a crafted one
/// could only hide a change its own author made, who could as well not
/// publish it.
pub(super) fn fingerprint(name: &str, path: &RelPath, cap: &Cap) -> u128 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        name.hash(&mut h);
        path.as_str().hash(&mut h);
        cap.as_str().hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}
