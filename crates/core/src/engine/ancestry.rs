//! Ancestry questions over the snapshot DAG, and the deterministic winner
//! of a conflict. Pure functions over a snapshot lookup.

use std::cmp::Ordering;
use std::collections::{HashSet, VecDeque};

use crate::snapshot::{Cap, Content, SnapshotInfo};

/// The answer to "is `a` an ancestor of `b`?" when part of the DAG may not
/// have been fetched yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Yes (or `a == b`).
    Yes,
    /// No: every path from `b` back to a root was walked.
    No,
    /// This snapshot must be fetched before the question can be answered.
    Need(Cap),
}

/// Is `a` equal to or an ancestor of `b`? `lookup` returns a snapshot's info
/// if it is known, and `bad` tells which snapshots were rejected (treated as
/// having no parents, so a forged ancestor never decides anything).
pub fn is_ancestor(
    a: &Cap,
    b: &Cap,
    lookup: &mut dyn FnMut(&Cap) -> Option<SnapshotInfo>,
    bad: &dyn Fn(&Cap) -> bool,
) -> Answer {
    if a == b {
        return Answer::Yes;
    }
    let mut seen: HashSet<Cap> = HashSet::new();
    let mut queue: VecDeque<Cap> = VecDeque::from([b.clone()]);
    while let Some(cap) = queue.pop_front() {
        if !seen.insert(cap.clone()) || bad(&cap) {
            continue;
        }
        let Some(info) = lookup(&cap) else {
            return Answer::Need(cap);
        };
        for parent in info.parents {
            if parent == *a {
                return Answer::Yes;
            }
            queue.push_back(parent);
        }
    }
    Answer::No
}

/// How strongly a kind of content holds its path in a conflict: a directory
/// (which may hold other files) beats a file, and anything beats a deletion,
/// so a conflict never deletes data or replaces a directory.
fn rank(c: &Content) -> u8 {
    match c {
        Content::Dir => 2,
        Content::File { .. } => 1,
        Content::Deleted => 0,
    }
}

/// Orders two diverged versions so that every participant picks the same
/// winner: stronger kind, then higher generation (the longer history, as
/// proven by the DAG: see `rank.rs` — never the author's claim), then later
/// modification time, then author name, then capability. `Greater` means
/// `a` wins.
///
/// Generation before time makes the choice stable as history grows: a
/// snapshot built on the winner (an edit, or a resolution) outranks every
/// version the winner outranked, so the file never flips back to a loser.
pub fn compare_for_win(a: &SnapshotInfo, a_gen: u64, b: &SnapshotInfo, b_gen: u64) -> Ordering {
    (rank(&a.content), a_gen, a.mtime_s, &a.author, &a.cap).cmp(&(
        rank(&b.content),
        b_gen,
        b.mtime_s,
        &b.author,
        &b.cap,
    ))
}

/// True when two snapshots put the same thing at their path (then a
/// divergence is not a conflict worth a copy). A literal content compares
/// by its reference, as the store may keep only that.
pub fn same_content(a: &Content, b: &Content) -> bool {
    match (a, b) {
        (Content::File { cap: x, .. }, Content::File { cap: y, .. }) => x.kept() == y.kept(),
        (Content::Dir, Content::Dir) | (Content::Deleted, Content::Deleted) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relpath::RelPath;
    use std::collections::HashMap;

    fn snap(
        cap: &str,
        parents: &[&str],
        mtime: i64,
        author: &str,
        content: Content,
    ) -> SnapshotInfo {
        SnapshotInfo {
            cap: Cap::from(cap),
            relpath: RelPath::new("f").unwrap(),
            author: author.into(),
            author_key: String::new(),
            parents: parents.iter().map(|p| Cap::from(*p)).collect(),
            content,
            mtime_s: mtime,
            generation: parents.len() as u64,
        }
    }

    fn file(c: &str) -> Content {
        Content::File {
            cap: Cap::from(c),
            size: 1,
            executable: false,
        }
    }

    fn dag() -> HashMap<Cap, SnapshotInfo> {
        // r ← a ← b ← m(b, c) ;  r ← c
        [
            snap("r", &[], 1, "x", file("1")),
            snap("a", &["r"], 2, "x", file("2")),
            snap("b", &["a"], 3, "x", file("3")),
            snap("c", &["r"], 3, "y", file("4")),
            snap("m", &["b", "c"], 5, "x", file("5")),
        ]
        .into_iter()
        .map(|s| (s.cap.clone(), s))
        .collect()
    }

    fn ask(a: &str, b: &str, known: &HashMap<Cap, SnapshotInfo>) -> Answer {
        is_ancestor(
            &Cap::from(a),
            &Cap::from(b),
            &mut |c| known.get(c).cloned(),
            &|_| false,
        )
    }

    #[test]
    fn ancestry_table() {
        let d = dag();
        let table = [
            ("r", "m", Answer::Yes),
            ("a", "b", Answer::Yes),
            ("c", "m", Answer::Yes),
            ("b", "b", Answer::Yes),
            ("b", "a", Answer::No),
            ("c", "b", Answer::No),
            ("m", "r", Answer::No),
        ];
        for (a, b, want) in table {
            assert_eq!(ask(a, b, &d), want, "{a} ancestor of {b}?");
        }
    }

    #[test]
    fn a_literal_is_the_same_content_as_its_reference() {
        let literal = file("URI:LIT:nbswy3dp");
        assert!(same_content(&literal, &literal.kept()));
        assert!(same_content(&literal.kept(), &literal));
        assert!(!same_content(&literal.kept(), &file("URI:LIT:nbswy3dq")));
        assert!(!same_content(&literal.kept(), &Content::Deleted));
    }

    #[test]
    fn missing_snapshots_are_asked_for() {
        let mut d = dag();
        d.remove(&Cap::from("a"));
        assert_eq!(ask("r", "b", &d), Answer::Need(Cap::from("a")));
    }

    #[test]
    fn rejected_snapshots_lead_nowhere() {
        let d = dag();
        let bad = |c: &Cap| c.as_str() == "a";
        let r = is_ancestor(
            &Cap::from("r"),
            &Cap::from("b"),
            &mut |c| d.get(c).cloned(),
            &bad,
        );
        assert_eq!(r, Answer::No);
    }

    #[test]
    fn winner_is_symmetric_and_prefers_keeping_data() {
        let f_old = snap("p", &[], 1, "a", file("1"));
        let f_new = snap("q", &[], 2, "b", file("2"));
        let del = snap("d", &[], 9, "c", Content::Deleted);
        let dir = snap("e", &[], 0, "d", Content::Dir);
        assert_eq!(compare_for_win(&f_new, 1, &f_old, 1), Ordering::Greater);
        assert_eq!(compare_for_win(&f_old, 1, &f_new, 1), Ordering::Less);
        assert_eq!(
            compare_for_win(&f_old, 1, &del, 1),
            Ordering::Greater,
            "an edit beats a newer delete"
        );
        assert_eq!(
            compare_for_win(&dir, 1, &f_new, 1),
            Ordering::Greater,
            "a directory beats a file"
        );
        assert_eq!(
            compare_for_win(&f_old, 2, &f_new, 1),
            Ordering::Greater,
            "a longer (proven) history beats a later mtime"
        );
        let tie_a = snap("x", &[], 5, "alice", file("1"));
        let tie_b = snap("y", &[], 5, "bob", file("2"));
        assert_eq!(compare_for_win(&tie_b, 1, &tie_a, 1), Ordering::Greater);
    }
}
