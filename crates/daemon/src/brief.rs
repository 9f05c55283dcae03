//! Actions and events as the debug log shows them: in full, except the
//! collections a bulk makes — a publish's entries, a scan's report, a
//! poll's listings, a burst of watcher changes — which are counted. In full,
//! the publish that followed a bulk of 100,000 files was one log line of
//! ~10 MB, formatted in memory before it was written, and the poll that read
//! it another.

use std::fmt;

use mf_core::engine::{Action, Event};

/// Debug-formats an [`Action`] or [`Event`] briefly (see the module).
pub struct Brief<'a, T>(pub &'a T);

/// Watcher changes shown one by one up to this many.
const CHANGES_SHOWN: usize = 8;

impl fmt::Debug for Brief<'_, Action> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Action::Publish { op, entries } => f
                .debug_struct("Publish")
                .field("op", op)
                .field("entries", &entries.len())
                .finish(),
            other => other.fmt(f),
        }
    }
}

impl fmt::Debug for Brief<'_, Event> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Event::Scanned(Ok(report)) => f
                .debug_struct("Scanned(Ok)")
                .field("entries", &report.entries.len())
                .field("skipped", &report.skipped.len())
                .field("problems", &report.problems.len())
                .finish(),
            Event::Polled(Ok(listings)) => {
                let (mut entries, mut failed, mut rejected) = (0, 0, 0);
                for listing in listings {
                    match &listing.entries {
                        Ok(listed) => entries += listed.len(),
                        Err(_) => failed += 1,
                    }
                    rejected += listing.rejected.len();
                }
                f.debug_struct("Polled(Ok)")
                    .field("listings", &listings.len())
                    .field("entries", &entries)
                    .field("failed", &failed)
                    .field("rejected", &rejected)
                    .finish()
            }
            Event::LocalChanged(changes) if changes.len() > CHANGES_SHOWN => f
                .debug_struct("LocalChanged")
                .field("paths", &changes.len())
                .field("first", &&changes[..CHANGES_SHOWN])
                .finish_non_exhaustive(),
            other => other.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mf_core::engine::{EntryShape, OpId, PublishEntry, RemoteListing, ScanReport};
    use mf_core::relpath::RelPath;
    use mf_core::snapshot::Cap;
    use mf_core::store::LocalState;

    #[test]
    fn bulk_collections_are_counted_and_the_rest_shown_whole() {
        let entry = PublishEntry {
            name: "a".into(),
            snapshot: Cap::from("URI:CHK:x:y:2:3:376"),
            shape: EntryShape::File,
        };
        let publish = Action::Publish {
            op: OpId(4),
            entries: vec![entry; 3],
        };
        assert_eq!(
            format!("{:?}", Brief(&publish)),
            "Publish { op: OpId(4), entries: 3 }"
        );
        assert_eq!(format!("{:?}", Brief(&Action::Poll)), "Poll");

        let path = RelPath::new("a/b").unwrap();
        let scanned = Event::Scanned(Ok(ScanReport {
            entries: vec![(path.clone(), LocalState::Dir); 5],
            ..ScanReport::default()
        }));
        assert_eq!(
            format!("{:?}", Brief(&scanned)),
            "Scanned(Ok) { entries: 5, skipped: 0, problems: 0 }"
        );
        let polled = Event::Polled(Ok(vec![RemoteListing {
            participant: "bob".into(),
            shard: None,
            entries: Ok(Default::default()),
            rejected: vec!["bob: entry \"x\": bad".into()],
            author: None,
        }]));
        assert_eq!(
            format!("{:?}", Brief(&polled)),
            "Polled(Ok) { listings: 1, entries: 0, failed: 0, rejected: 1 }"
        );
        let failed = Event::Polled(Err("cannot list the collective".into()));
        assert_eq!(format!("{:?}", Brief(&failed)), format!("{failed:?}"));

        let few = Event::LocalChanged(vec![(path.clone(), LocalState::Absent)]);
        assert_eq!(format!("{:?}", Brief(&few)), format!("{few:?}"));
        let many = Event::LocalChanged(vec![(path, LocalState::Absent); 100]);
        let shown = format!("{:?}", Brief(&many));
        assert!(
            shown.starts_with("LocalChanged { paths: 100, first: ["),
            "{shown}"
        );
        assert_eq!(shown.matches("Absent").count(), CHANGES_SHOWN, "{shown}");
    }
}
