//! The engine's records: the in-memory mirror of the store, written through
//! as one batch per event; the snapshot cache and DAG lookups; retries and
//! the errors shown in status.

use super::*;

impl<S: Store> Engine<S> {
    /// Sets the current record of `path`; if unpublished, it is ours to
    /// publish at once.
    pub(super) fn set_current(&mut self, path: &RelPath, cur: Current) {
        if !cur.published {
            self.publish_urgent = true;
        }
        self.put_current(path, cur);
    }

    /// Sets the current record of `path` to a version we adopted (wrote
    /// from another participant's): its publish may wait (see
    /// [`ADOPTED_QUIET`]).
    pub(super) fn set_current_adopted(&mut self, path: &RelPath, cur: Current) {
        if !cur.published {
            let now = self.now;
            let first = self.adopted_unpublished.map_or(now, |(first, _)| first);
            self.adopted_unpublished = Some((first, now));
        }
        self.put_current(path, cur);
    }

    /// When a publish of nothing but adopted versions is due, if that is all
    /// that waits.
    pub(super) fn adoptions_wait_until(&self) -> Option<Millis> {
        if self.publish_urgent {
            return None;
        }
        let (first, last) = self.adopted_unpublished?;
        let patience = first + ADOPTED_PATIENCE;
        if self.fetches_in_flight > 0 || self.writes_in_flight > 0 {
            return Some(patience);
        }
        Some((last + ADOPTED_QUIET).min(patience))
    }

    /// When the next publish may go, if it must wait: a failed one's
    /// backoff; adoptions alone until they pause; and the last publish's
    /// share of the time (see [`PUBLISH_SPACING`]) while an upload of ours
    /// is in flight, or always for adoptions alone (nobody waits for
    /// those, and a reader catching up with each batch the writer publishes
    /// would otherwise rewrite its directory after each).
    pub(super) fn publish_not_before(&self) -> Option<Millis> {
        let backoff = self.publish_backoff.map(|b| b.due);
        let paced = self
            .last_publish
            .filter(|_| self.uploads_in_flight > 0 || !self.publish_urgent)
            .map(|(ended, took)| {
                ended
                    + took
                        .saturating_mul(PUBLISH_SPACING)
                        .min(PUBLISH_WAIT_AT_MOST)
            });
        [backoff, self.adoptions_wait_until(), paced]
            .into_iter()
            .flatten()
            .max()
    }

    fn put_current(&mut self, path: &RelPath, cur: Current) {
        let previous = self.current.get(path);
        if self.publishing.is_some() && previous.is_none_or(|c| c.snapshot != cur.snapshot) {
            self.moved_while_publishing.insert(path.clone());
        }
        let was = previous.map(|c| c.local);
        let was_present = was.is_some_and(|l| l != LocalState::Absent);
        self.present =
            self.present + usize::from(cur.local != LocalState::Absent) - usize::from(was_present);
        self.dirs = self.dirs + usize::from(cur.local == LocalState::Dir)
            - usize::from(was == Some(LocalState::Dir));
        if cur.adopting.is_none() {
            self.unsure.remove(path);
        }
        self.changes
            .push(Change::PutCurrent(path.clone(), cur.clone()));
        if cur.published {
            self.unpublished.remove(path);
        } else {
            self.unpublished.insert(path.clone());
        }
        self.current.insert(path.clone(), cur);
    }

    pub(super) fn put_conflict(&mut self, c: Conflict) {
        self.changes.push(Change::PutConflict(c.clone()));
        self.work.insert(c.path.clone());
        if c.resolved {
            self.unpublished_copies
                .remove(&(c.path.clone(), c.author.clone()));
        } else {
            self.publish_urgent = true;
            self.unpublished_copies
                .insert((c.path.clone(), c.author.clone()));
        }
        self.conflicts
            .entry(c.path.clone())
            .or_default()
            .insert(c.author.clone(), c);
    }

    pub(super) fn remove_conflict(&mut self, path: &RelPath, author: &str) {
        self.changes
            .push(Change::RemoveConflict(path.clone(), author.to_owned()));
        self.work.insert(path.clone());
        self.unpublished_copies
            .remove(&(path.clone(), author.to_owned()));
        if let Some(m) = self.conflicts.get_mut(path) {
            m.remove(author);
            if m.is_empty() {
                self.conflicts.remove(path);
            }
        }
    }

    /// Drops the resolved records of a version a new snapshot names as a
    /// parent (their copies are already gone; other copies of the same
    /// version are removed by the clean-up, file and all).
    pub(super) fn drop_conflict_with(&mut self, path: &RelPath, snapshot: &Cap) {
        let authors: Vec<String> = self
            .conflicts
            .get(path)
            .map(|m| {
                m.values()
                    .filter(|c| c.resolved && c.snapshot == *snapshot)
                    .map(|c| c.author.clone())
                    .collect()
            })
            .unwrap_or_default();
        for a in authors {
            self.remove_conflict(path, &a);
        }
    }

    pub(super) fn remember(&mut self, info: SnapshotInfo) {
        self.cache.insert(info);
    }

    pub(super) fn lookup(&mut self, cap: &Cap) -> Option<SnapshotInfo> {
        if let Some(i) = self.cache.get(cap) {
            return Some(i.clone());
        }
        match self.store.snapshot(cap) {
            Ok(Some(i)) => {
                self.remember(i.clone());
                Some(i)
            }
            Ok(None) => None,
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    /// Answers an ancestry question, asking for a fetch when the DAG has a gap.
    pub(super) fn ancestry(&mut self, a: &Cap, b: &Cap, path: &RelPath) -> Answer {
        let Engine {
            cache, store, bad, ..
        } = self;
        let mut lookup = |c: &Cap| -> Option<SnapshotInfo> {
            if let Some(i) = cache.get(c) {
                return Some(i.clone());
            }
            let i = store.snapshot(c).ok().flatten()?;
            cache.insert(i.clone());
            Some(i)
        };
        let is_bad = |c: &Cap| bad.contains_key(c);
        let answer = is_ancestor(a, b, &mut lookup, &is_bad);
        if let Answer::Need(cap) = &answer {
            self.need_fetch(cap.clone(), path);
        }
        answer
    }

    pub(super) fn commit(&mut self) {
        if self.changes.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.changes);
        if let Err(e) = self.store.commit(&changes) {
            self.fail(e);
        }
    }

    /// Local state cannot be written: stop, so nothing is done that would
    /// not be remembered.
    pub(super) fn fail(&mut self, e: StoreError) {
        self.fatal = Some(e.to_string());
        self.out.clear();
    }

    /// True if anything below directory `dir` is still queued, in flight or
    /// waiting for a remote version to be taken in.
    pub(super) fn work_below(&self, dir: &RelPath) -> bool {
        let below = |p: &RelPath| p != dir && p.starts_with(dir);
        self.busy.keys().any(below)
            || self.observed.keys().any(below)
            || self.backoff.keys().any(below)
            || self.work.iter().any(below)
            || self.candidates.paths().any(below)
    }

    /// Schedules another try of a path after a failure, later each time.
    pub(super) fn retry_later(&mut self, path: &RelPath) {
        let attempts = self.failures.entry(path.clone()).or_insert(0);
        *attempts += 1;
        let prev = Backoff {
            due: self.now,
            attempts: *attempts - 1,
        };
        self.backoff
            .insert(path.clone(), Backoff::after_failure(Some(prev), self.now));
    }

    /// Records a problem for status (and the log). One that is already
    /// listed — a retry failing the same way — only moves to the end with
    /// its new time: status shows it once, however often it happens.
    pub(super) fn error(&mut self, path: Option<RelPath>, message: String) {
        let known = self
            .errors
            .iter()
            .position(|e| e.path == path && e.message == message);
        match known {
            Some(i) => {
                self.errors.remove(i);
            }
            None => {
                if self.errors.len() >= MAX_ERRORS {
                    self.errors.pop_front();
                }
                self.notify(Notice::Error {
                    path: path.clone(),
                    message: message.clone(),
                });
            }
        }
        self.errors.push_back(StatusError {
            at: self.now,
            path,
            message,
        });
    }

    /// Forgets the problems that `over` says are over (the same thing has
    /// since succeeded), so status shows what is wrong now.
    pub(super) fn clear_errors(&mut self, over: impl Fn(&StatusError) -> bool) {
        self.errors.retain(|e| !over(e));
    }

    /// Queues a notice for the driver, dropping the oldest when nobody
    /// collects them.
    pub(super) fn notify(&mut self, notice: Notice) {
        if self.notices.len() >= MAX_NOTICES {
            self.notices.pop_front();
            self.dropped_notices += 1;
        }
        self.notices.push_back(notice);
    }
}
