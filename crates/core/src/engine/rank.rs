//! What a snapshot's history proves about its rank.
//!
//! The winner of a conflict is chosen by generation first
//! ([`compare_for_win`]), so that building on the winner never flips the
//! file back. A generation written by the author is only a claim, and a
//! participant could take over any file by claiming a huge one. So the
//! engine never ranks by the claim: it ranks by the generation the DAG
//! *proves* — one more than the greatest proven generation among the
//! parents, 1 for a snapshot without parents — and rejects a snapshot whose
//! claim disagrees (a lie, shown in status). A snapshot with a parent that
//! cannot be read (rejected, or gone from the grid) proves nothing: it ranks
//! 0, below every snapshot whose history can be read. Snapshots of a 24.3
//! peer carry no claim; their proven generation ranks them all the same, so
//! the rule stays total and stable in a mixed folder.
//!
//! Proving walks the parents down to snapshots already proven (in steady
//! state the parent is our own current version, so one step); the results
//! are memoised for the run.

use super::*;

impl<S: Store> Engine<S> {
    /// The generation `cap`'s history proves, or `None` while part of that
    /// history must still be fetched (the fetch is asked for, with `path`
    /// waiting on it). A snapshot found to lie about its generation is
    /// rejected (and ranks 0).
    pub(super) fn proven_generation(&mut self, cap: &Cap, path: &RelPath) -> Option<u64> {
        // Bounded like the snapshot cache; cleared only between walks, so
        // a walk never loses the parents it has just proven.
        if self.proven.len() >= PROVEN_LIMIT {
            self.proven.clear();
        }
        let mut stack: Vec<Cap> = vec![cap.clone()];
        while let Some(top) = stack.last().cloned() {
            if self.bad.contains_key(&top) || self.proven.contains_key(&top) {
                stack.pop();
                continue;
            }
            let Some(info) = self.lookup(&top) else {
                self.need_fetch(top, path);
                return None;
            };
            let unproven: Vec<Cap> = info
                .parents
                .iter()
                .filter(|p| !self.bad.contains_key(*p) && !self.proven.contains_key(*p))
                .cloned()
                .collect();
            if unproven.iter().any(|p| stack.contains(p)) {
                // Immutable snapshots are named by their content, so an
                // honest DAG has no cycle; a hostile grid's is rejected.
                self.reject(&top, path, "its parents form a cycle".to_owned());
                stack.pop();
                continue;
            }
            if !unproven.is_empty() {
                stack.extend(unproven);
                continue;
            }
            stack.pop();
            let parents: Vec<u64> = info.parents.iter().map(|p| self.rank_of(p)).collect();
            let proven = if parents.contains(&0) {
                0
            } else {
                1 + parents.into_iter().max().unwrap_or(0)
            };
            // A claim can only be checked against a readable history; 0 is
            // "no claim" (a 24.3 peer's snapshot).
            if info.generation != 0 && proven != 0 && info.generation != proven {
                let msg = format!(
                    "{}'s version claims generation {}, but its parents prove {proven}",
                    info.author, info.generation
                );
                self.reject(&top, path, msg);
                continue;
            }
            self.proven.insert(top, proven);
        }
        Some(self.rank_of(cap))
    }

    /// The generation of a new snapshot of ours with these parents (each
    /// already proven), which is also what we claim in its metadata.
    pub(super) fn generation_for(&mut self, parents: &[Cap], path: &RelPath) -> Option<u64> {
        let mut ranks = Vec::with_capacity(parents.len());
        for p in parents {
            ranks.push(self.proven_generation(p, path)?);
        }
        Some(if ranks.contains(&0) {
            0
        } else {
            1 + ranks.into_iter().max().unwrap_or(0)
        })
    }

    /// Records the generation of a snapshot we made ourselves.
    pub(super) fn remember_proven(&mut self, cap: &Cap, generation: u64) {
        if self.proven.len() >= PROVEN_LIMIT {
            self.proven.clear();
        }
        self.proven.insert(cap.clone(), generation);
    }

    /// A proven (or rejected) snapshot's rank: 0 when rejected.
    fn rank_of(&self, cap: &Cap) -> u64 {
        if self.bad.contains_key(cap) {
            0
        } else {
            self.proven.get(cap).copied().unwrap_or(0)
        }
    }

    /// Rejects a snapshot for good (for this run) and says why in status.
    fn reject(&mut self, cap: &Cap, path: &RelPath, why: String) {
        self.error(
            Some(path.clone()),
            format!("rejected a version of {path}: {why}"),
        );
        self.bad.insert(cap.clone(), why);
    }
}
