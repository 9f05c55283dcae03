//! Writes gated on the grid's health.
//!
//! A Tahoe-LAFS upload succeeds only when the node can place shares on at
//! least `shares.happy` distinct storage servers; with fewer it fails, after
//! doing all the work, with `UploadUnhappinessError` (which the Tahoe backend
//! maps to a transient error). Rather than send uploads that are doomed, and
//! let every failure push the engine's retries further apart, the folder loop
//! asks a [`WriteGate`] before it starts a grid *write* (`Upload`, `Publish`):
//! while the gate is closed those actions are parked — still in progress as
//! far as the engine knows, so nothing is dropped or re-decided — and they
//! start, oldest first, as soon as a check finds the grid healthy again
//! (within [`CHECK_EVERY_UNHEALTHY`]). Reads (polls, snapshot fetches,
//! downloads) are never held: they need only `shares.needed` servers.
//!
//! The gate is a background task that asks the node which servers it is
//! connected to (`GET /?t=json`, [`TahoeGrid::health`]) every
//! [`CHECK_EVERY_HEALTHY`] while the grid is healthy and every
//! [`CHECK_EVERY_UNHEALTHY`] while it is not; the folder loop reads the cached
//! answer, so a check never delays it. The gate is closed when
//!
//! * the node is connected to fewer storage servers than its `shares.happy`
//!   ("grid unhealthy: connected to 1 of 3 storage servers, need 3
//!   (shares.happy)"); when the node was given by URL its encoding is not
//!   known, and then only "no server connected" closes the gate;
//! * the node itself does not answer ("grid unreachable: …").
//!
//! A check can be up to a couple of seconds old, so a write may still meet
//! an unhealthy grid; it then fails transiently and is retried by the engine
//! (and parked, once the gate has noticed). The embedded grid has no gate.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mf_core::engine::Action;
use mf_grid::tahoe::{Health, TahoeGrid};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::commands::AnyGrid;

/// How often a healthy grid is checked.
pub const CHECK_EVERY_HEALTHY: Duration = Duration::from_secs(2);

/// How often an unhealthy (or unreachable) grid is checked: the longest
/// parked writes wait after the grid has recovered.
pub const CHECK_EVERY_UNHEALTHY: Duration = Duration::from_secs(1);

/// How long one check may take before the node counts as unreachable.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the last check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateState {
    /// Not checked yet: writes go ahead (a failure is retried anyway).
    Unknown,
    /// Writes can succeed.
    Open,
    /// Writes wait.
    Closed {
        /// Why, for people ("grid unhealthy: …").
        reason: String,
        /// Since when this reason holds (Unix ms).
        since_unix_ms: u64,
    },
}

/// Whether a node with this connectivity can take writes: `Err(reason)` if
/// not. Needs `shares.happy` connected servers when the encoding is known,
/// at least one otherwise.
pub fn assess(health: &Health) -> Result<(), String> {
    let connected = health.connected_servers();
    let known = health.known_servers();
    match health.encoding {
        Some(enc) if connected < enc.happy as usize => Err(format!(
            "grid unhealthy: connected to {connected} of {known} storage servers, need {} (shares.happy)",
            enc.happy
        )),
        None if connected == 0 => Err(format!(
            "grid unhealthy: connected to 0 of {known} storage servers"
        )),
        _ => Ok(()),
    }
}

/// True for the actions that write to the grid (and so wait while the gate
/// is closed).
pub fn writes_to_grid(action: &Action) -> bool {
    matches!(action, Action::Upload { .. } | Action::Publish { .. })
}

/// The cached health of one grid, kept fresh by a background task (which
/// stops when the gate is dropped). See the module docs.
#[derive(Debug)]
pub struct WriteGate {
    state: watch::Receiver<GateState>,
    task: AbortHandle,
}

impl WriteGate {
    /// The gate for a folder's grid: one for a Tahoe grid, none for the
    /// embedded grid (always writable while its directory is). Must be called
    /// within a tokio runtime.
    pub fn for_grid(grid: &AnyGrid) -> Option<WriteGate> {
        match grid {
            AnyGrid::Embedded(_) => None,
            AnyGrid::Tahoe(t) => Some(WriteGate::tahoe(t.clone())),
        }
    }

    /// A gate on a Tahoe node's connectivity.
    pub fn tahoe(grid: TahoeGrid) -> WriteGate {
        WriteGate::with_check(move || {
            let grid = grid.clone();
            async move {
                match tokio::time::timeout(CHECK_TIMEOUT, grid.health()).await {
                    Ok(Ok(h)) => assess(&h),
                    Ok(Err(e)) => Err(format!(
                        "grid unreachable: cannot ask the Tahoe-LAFS node at {} about its servers: {e}",
                        grid.base_url()
                    )),
                    Err(_) => Err(format!(
                        "grid unreachable: the Tahoe-LAFS node at {} did not answer within {CHECK_TIMEOUT:?}",
                        grid.base_url()
                    )),
                }
            }
        })
    }

    /// A gate driven by any check (`Err(reason)` closes it); for tests and
    /// other backends. Must be called within a tokio runtime.
    pub fn with_check<F, Fut>(check: F) -> WriteGate
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        WriteGate::with_check_every(check, CHECK_EVERY_HEALTHY, CHECK_EVERY_UNHEALTHY)
    }

    /// [`with_check`](Self::with_check) with explicit check intervals.
    fn with_check_every<F, Fut>(mut check: F, healthy: Duration, unhealthy: Duration) -> WriteGate
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let (tx, rx) = watch::channel(GateState::Unknown);
        let task = tokio::spawn(async move {
            loop {
                let next = match check().await {
                    Ok(()) => GateState::Open,
                    Err(reason) => {
                        let since_unix_ms = match &*tx.borrow() {
                            GateState::Closed {
                                reason: r,
                                since_unix_ms,
                            } if *r == reason => *since_unix_ms,
                            _ => unix_ms_now(),
                        };
                        GateState::Closed {
                            reason,
                            since_unix_ms,
                        }
                    }
                };
                let open = next == GateState::Open;
                tx.send_if_modified(|cur| {
                    let changed = *cur != next;
                    *cur = next;
                    changed
                });
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(if open { healthy } else { unhealthy }).await;
            }
        });
        WriteGate {
            state: rx,
            task: task.abort_handle(),
        }
    }

    /// The last check's result.
    pub fn state(&self) -> GateState {
        self.state.borrow().clone()
    }

    /// True while writes must wait.
    pub fn is_closed(&self) -> bool {
        matches!(*self.state.borrow(), GateState::Closed { .. })
    }

    /// Why writes wait and since when (Unix ms), if they do.
    pub fn closed(&self) -> Option<(String, u64)> {
        match &*self.state.borrow() {
            GateState::Closed {
                reason,
                since_unix_ms,
            } => Some((reason.clone(), *since_unix_ms)),
            _ => None,
        }
    }

    /// Waits until the state changes (never returns if the checker stopped).
    pub async fn changed(&mut self) {
        if self.state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for WriteGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mf_grid::tahoe::{Encoding, ServerStatus};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    fn health(connected: usize, known: usize, encoding: Option<Encoding>) -> Health {
        Health {
            servers: (0..known)
                .map(|i| ServerStatus {
                    node_id: format!("v0-{i}"),
                    nickname: format!("s{i}"),
                    connected: i < connected,
                })
                .collect(),
            introducers_connected: 1,
            introducers_total: 1,
            encoding,
        }
    }

    const K2H3N3: Encoding = Encoding {
        needed: 2,
        happy: 3,
        total: 3,
    };

    #[test]
    fn needs_happy_servers_when_the_encoding_is_known() {
        assert_eq!(assess(&health(3, 3, Some(K2H3N3))), Ok(()));
        assert_eq!(assess(&health(3, 4, Some(K2H3N3))), Ok(()));
        assert_eq!(
            assess(&health(1, 3, Some(K2H3N3))).unwrap_err(),
            "grid unhealthy: connected to 1 of 3 storage servers, need 3 (shares.happy)"
        );
        // Fewer servers than happy at all: never writable, and it says so.
        assert_eq!(
            assess(&health(2, 2, Some(K2H3N3))).unwrap_err(),
            "grid unhealthy: connected to 2 of 2 storage servers, need 3 (shares.happy)"
        );
    }

    #[test]
    fn needs_one_server_when_the_encoding_is_unknown() {
        assert_eq!(assess(&health(1, 5, None)), Ok(()));
        assert_eq!(
            assess(&health(0, 5, None)).unwrap_err(),
            "grid unhealthy: connected to 0 of 5 storage servers"
        );
    }

    #[tokio::test]
    async fn closes_and_reopens_with_the_check() {
        const EVERY: Duration = Duration::from_millis(20);
        let healthy = Arc::new(AtomicBool::new(true));
        let checks = Arc::new(AtomicUsize::new(0));
        let (h, c) = (healthy.clone(), checks.clone());
        let mut gate = WriteGate::with_check_every(
            move || {
                let ok = h.load(Ordering::SeqCst);
                c.fetch_add(1, Ordering::SeqCst);
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("grid unhealthy: test".to_owned())
                    }
                }
            },
            EVERY * 5,
            EVERY,
        );
        assert_eq!(gate.state(), GateState::Unknown);
        gate.changed().await;
        assert_eq!(gate.state(), GateState::Open);
        assert!(!gate.is_closed());

        healthy.store(false, Ordering::SeqCst);
        gate.changed().await;
        let (reason, since) = gate.closed().expect("closed");
        assert_eq!(reason, "grid unhealthy: test");
        // The same reason keeps its start time (no change is signalled).
        let before = checks.load(Ordering::SeqCst);
        tokio::time::sleep(EVERY * 5).await;
        assert!(checks.load(Ordering::SeqCst) >= before + 2, "checked often");
        assert_eq!(gate.closed().unwrap().1, since);

        healthy.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(10), gate.changed())
            .await
            .expect("reopens");
        assert_eq!(gate.state(), GateState::Open);
    }

    #[test]
    fn only_grid_writes_wait() {
        use mf_core::engine::OpId;
        assert!(writes_to_grid(&Action::Publish {
            op: OpId(1),
            entries: vec![]
        }));
        assert!(!writes_to_grid(&Action::Poll));
        assert!(!writes_to_grid(&Action::Scan));
    }
}
