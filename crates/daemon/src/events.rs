//! The daemon's event stream: what happens in every folder, as
//! magic-folder 24.3's `/v1/status` WebSocket reports it (its event kinds
//! and fields, `docs/magic-folder-24.3.md` §6), plus what 24.3 lacks:
//! conflicts (`conflict-detected`, `conflict-resolved`, as in its open
//! issue #755).
//!
//! Folders publish into one [`EventHub`]; each WebSocket client subscribes.
//! The hub is a bounded broadcast channel: a client that falls behind under
//! a flood loses the oldest events (it is told how many, and gets the
//! folders' state afresh) — memory never grows with the flood.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mf_core::engine::Notice;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// What the daemon tells the world besides its log: the event stream and
/// the metrics. Cheap to clone; every folder and the API share one.
#[derive(Clone, Debug, Default)]
pub struct Telemetry {
    /// The event stream.
    pub events: EventHub,
    /// The metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Telemetry {
    /// An engine notice: an event, and counted.
    pub fn notice(&self, folder: &str, notice: &Notice) {
        self.metrics.notice(folder, notice);
        if let Some(e) = notice_event(folder, notice) {
            self.events.publish(e);
        }
    }
}

/// Events a slow client may lag behind before it loses the oldest.
const CAPACITY: usize = 1024;

/// Where folders publish their events.
#[derive(Clone, Debug)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<Value>>,
}

impl Default for EventHub {
    fn default() -> EventHub {
        EventHub {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventHub {
    /// Publishes one event (dropped if nobody listens).
    pub fn publish(&self, event: Value) {
        let _ = self.tx.send(Arc::new(event));
    }

    /// A new listener, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Value>> {
        self.tx.subscribe()
    }
}

/// Seconds since the Unix epoch, as 24.3 stamps most events.
pub fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An event of `kind` about `folder`, stamped now.
pub fn folder_event(kind: &str, folder: &str) -> Value {
    json!({ "kind": kind, "folder": folder, "timestamp": now_s() })
}

/// 24.3's `error-occurred` (its timestamp is whole seconds).
pub fn error_event(folder: &str, summary: &str, at_s: u64) -> Value {
    json!({ "kind": "error-occurred", "folder": folder, "timestamp": at_s, "summary": summary })
}

/// The event an engine notice makes, if any.
pub fn notice_event(folder: &str, notice: &Notice) -> Option<Value> {
    let path_event = |kind: &str, path: &str| json!({ "kind": kind, "folder": folder, "relpath": path, "timestamp": now_s() });
    Some(match notice {
        Notice::Uploaded { path, .. } => path_event("upload-finished", path.as_str()),
        Notice::Downloaded { path, .. } => path_event("download-finished", path.as_str()),
        Notice::Conflict { path, label } => {
            let mut e = path_event("conflict-detected", path.as_str());
            e["conflict-label"] = json!(label);
            e
        }
        Notice::Resolved { path } => path_event("conflict-resolved", path.as_str()),
        Notice::Error { path, message } => {
            let summary = match path {
                Some(p) => format!("{p}: {message}"),
                None => message.clone(),
            };
            error_event(folder, &summary, now_s() as u64)
        }
        Notice::Dropped { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mf_core::relpath::RelPath;

    #[tokio::test]
    async fn a_slow_listener_loses_the_oldest_never_grows() {
        let hub = EventHub::default();
        let mut rx = hub.subscribe();
        for i in 0..(CAPACITY + 10) {
            hub.publish(json!({ "i": i }));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("{other:?}"),
        }
        assert_eq!(*rx.recv().await.unwrap(), json!({ "i": 10 }));
    }

    #[test]
    fn notices_become_24_3_events() {
        let p = RelPath::new("a/b.txt").unwrap();
        let e = notice_event(
            "docs",
            &Notice::Uploaded {
                path: p.clone(),
                content: mf_core::snapshot::Content::Dir,
            },
        )
        .unwrap();
        assert_eq!(e["kind"], "upload-finished");
        assert_eq!(
            (e["folder"].as_str(), e["relpath"].as_str()),
            (Some("docs"), Some("a/b.txt"))
        );
        assert!(e["timestamp"].is_f64());
        let e = notice_event(
            "docs",
            &Notice::Error {
                path: Some(p),
                message: "boom".into(),
            },
        )
        .unwrap();
        assert_eq!(e["kind"], "error-occurred");
        assert_eq!(e["summary"], "a/b.txt: boom");
        assert!(e["timestamp"].is_u64());
        assert!(notice_event("docs", &Notice::Dropped { count: 3 }).is_none());
    }
}
