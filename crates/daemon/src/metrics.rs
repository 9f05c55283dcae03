//! Prometheus metrics, served at `/metrics` behind the API token.
//!
//! Counters per folder, named after the seed's (`magic_folder.py`'s
//! `objects_queued`, `files_uploaded`, …): what each folder's engine did,
//! counted as its notices come out; bytes each way; the time every kind of
//! grid operation took (a histogram per kind: scan, poll, fetch, upload,
//! publish, write); and, taken from the folders' live status when scraped,
//! queue depths, conflicts, errors, and the age of the last scan and poll.

use std::sync::Mutex;
use std::time::Duration;

use mf_core::engine::{Action, Notice};
use mf_core::snapshot::Content;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::api::FolderStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Folder {
    folder: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    folder: String,
    op: String,
}

type Counters = Family<Folder, Counter>;
type Gauges = Family<Folder, Gauge>;

fn op_histogram() -> Histogram {
    // 1 ms to ~4.4 min, ×4 a bucket: a local rename to a Tahoe upload.
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// Every metric of the daemon.
pub struct Metrics {
    registry: Mutex<Registry>,
    files_uploaded: Counters,
    directories_uploaded: Counters,
    deletions_uploaded: Counters,
    objects_downloaded: Counters,
    directories_created: Counters,
    objects_disappeared: Counters,
    objects_conflicted: Counters,
    conflicts_resolved: Counters,
    objects_failed: Counters,
    bytes_uploaded: Counters,
    bytes_downloaded: Counters,
    op_seconds: Family<Op, Histogram, fn() -> Histogram>,
    queued: Gauges,
    in_flight: Gauges,
    unpublished: Gauges,
    files: Gauges,
    directories: Gauges,
    conflicts: Gauges,
    errors: Gauges,
    up_to_date: Gauges,
    last_scan_age: Gauges,
    last_poll_age: Gauges,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("magic_folder")),
            files_uploaded: Counters::default(),
            directories_uploaded: Counters::default(),
            deletions_uploaded: Counters::default(),
            objects_downloaded: Counters::default(),
            directories_created: Counters::default(),
            objects_disappeared: Counters::default(),
            objects_conflicted: Counters::default(),
            conflicts_resolved: Counters::default(),
            objects_failed: Counters::default(),
            bytes_uploaded: Counters::default(),
            bytes_downloaded: Counters::default(),
            op_seconds: Family::new_with_constructor(op_histogram),
            queued: Gauges::default(),
            in_flight: Gauges::default(),
            unpublished: Gauges::default(),
            files: Gauges::default(),
            directories: Gauges::default(),
            conflicts: Gauges::default(),
            errors: Gauges::default(),
            up_to_date: Gauges::default(),
            last_scan_age: Gauges::default(),
            last_poll_age: Gauges::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            let counters: [(&str, &str, &Counters); 11] = [
                (
                    "files_uploaded",
                    "Files uploaded (new versions of files)",
                    &m.files_uploaded,
                ),
                (
                    "directories_uploaded",
                    "Directories uploaded",
                    &m.directories_uploaded,
                ),
                (
                    "deletions_uploaded",
                    "Deletions uploaded",
                    &m.deletions_uploaded,
                ),
                (
                    "objects_downloaded",
                    "Remote versions taken into the folder",
                    &m.objects_downloaded,
                ),
                (
                    "directories_created",
                    "Directories created for remote versions",
                    &m.directories_created,
                ),
                (
                    "objects_disappeared",
                    "Files deleted because a remote version deleted them",
                    &m.objects_disappeared,
                ),
                (
                    "objects_conflicted",
                    "Conflicts (a losing version kept as a copy)",
                    &m.objects_conflicted,
                ),
                (
                    "conflicts_resolved",
                    "Conflicts resolved",
                    &m.conflicts_resolved,
                ),
                (
                    "objects_failed",
                    "Problems reported (also in status)",
                    &m.objects_failed,
                ),
                (
                    "bytes_uploaded",
                    "Bytes of file content uploaded",
                    &m.bytes_uploaded,
                ),
                (
                    "bytes_downloaded",
                    "Bytes of file content taken into the folder",
                    &m.bytes_downloaded,
                ),
            ];
            for (name, help, c) in counters {
                r.register(name, help, c.clone());
            }
            r.register(
                "operation_seconds",
                "Time each grid and folder operation took, by kind",
                m.op_seconds.clone(),
            );
            let gauges: [(&str, &str, &Gauges); 10] = [
                ("objects_queued", "Changes waiting to start", &m.queued),
                ("objects_in_flight", "Operations running", &m.in_flight),
                (
                    "objects_unpublished",
                    "Uploaded versions not yet published",
                    &m.unpublished,
                ),
                ("files", "Regular files", &m.files),
                ("directories", "Directories", &m.directories),
                ("conflicts", "Unresolved conflicts", &m.conflicts),
                ("errors", "Current problems", &m.errors),
                ("up_to_date", "1 if the folder is up to date", &m.up_to_date),
                (
                    "last_scan_age_seconds",
                    "Seconds since the last full scan (-1: none yet)",
                    &m.last_scan_age,
                ),
                (
                    "last_poll_age_seconds",
                    "Seconds since the last poll (-1: none yet)",
                    &m.last_poll_age,
                ),
            ];
            for (name, help, g) in gauges {
                r.register(name, help, g.clone());
            }
        }
        m
    }
}

/// The kind of an action, as the histogram labels it.
pub fn op_kind(action: &Action) -> &'static str {
    match action {
        Action::Scan => "scan",
        Action::Poll => "poll",
        Action::Fetch { .. } => "fetch",
        Action::Upload { .. } => "upload",
        Action::Publish { .. } => "publish",
        Action::Write { .. } => "write",
    }
}

impl Metrics {
    /// Counts what an engine notice says happened.
    pub fn notice(&self, folder: &str, notice: &Notice) {
        let l = Folder {
            folder: folder.to_owned(),
        };
        let inc = |c: &Counters| {
            c.get_or_create(&l).inc();
        };
        match notice {
            Notice::Uploaded { content, .. } => match content {
                Content::File { size, .. } => {
                    inc(&self.files_uploaded);
                    self.bytes_uploaded.get_or_create(&l).inc_by(*size);
                }
                Content::Dir => inc(&self.directories_uploaded),
                Content::Deleted => inc(&self.deletions_uploaded),
            },
            Notice::Downloaded { content, .. } => match content {
                Content::File { size, .. } => {
                    inc(&self.objects_downloaded);
                    self.bytes_downloaded.get_or_create(&l).inc_by(*size);
                }
                Content::Dir => inc(&self.directories_created),
                Content::Deleted => inc(&self.objects_disappeared),
            },
            Notice::Conflict { .. } => inc(&self.objects_conflicted),
            Notice::Resolved { .. } => inc(&self.conflicts_resolved),
            Notice::Error { .. } => inc(&self.objects_failed),
            Notice::Dropped { .. } => {}
        }
    }

    /// Records how long one operation took.
    pub fn op(&self, folder: &str, kind: &str, took: Duration) {
        self.op_seconds
            .get_or_create(&Op {
                folder: folder.to_owned(),
                op: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with the gauges taken from `statuses` (live,
    /// at `now_ms`).
    pub fn render(&self, statuses: &[FolderStatus], now_ms: u64) -> String {
        for s in statuses {
            let l = Folder {
                folder: s.name.clone(),
            };
            let set = |g: &Gauges, v: i64| {
                g.get_or_create(&l).set(v);
            };
            set(&self.queued, s.queued as i64);
            set(&self.in_flight, s.in_flight as i64);
            set(&self.unpublished, s.unpublished as i64);
            set(&self.files, s.files as i64);
            set(&self.directories, s.directories as i64);
            set(&self.conflicts, s.conflicts.len() as i64);
            set(&self.errors, s.errors.len() as i64);
            set(
                &self.up_to_date,
                i64::from(s.state == crate::api::FolderState::UpToDate),
            );
            let age = |at: Option<u64>| at.map_or(-1, |t| (now_ms.saturating_sub(t) / 1000) as i64);
            set(&self.last_scan_age, age(s.last_scan));
            set(&self.last_poll_age, age(s.last_poll));
        }
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &r);
        out
    }
}
