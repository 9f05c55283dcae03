//! Gives memory the daemon freed back to the operating system.
//!
//! glibc's allocator keeps freed memory for reuse, in one heap ("arena")
//! per thread that allocated it, and returns little of it on its own. A
//! daemon that had just synced or rescanned 100,000 files had freed most of
//! what that took (directory listings, scan reports) yet stayed at almost
//! three times its live heap: 210 MiB resident for 76 MiB in use (105 MiB
//! after `malloc_trim`, which releases the free pages of every arena).
//! So each folder's service loop calls [`work_done`] whenever its work runs
//! out; the release runs at most every [`MIN_INTERVAL`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two releases (each costs a few milliseconds).
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Call when a burst of work has just finished: releases freed memory in the
/// background unless that was done less than [`MIN_INTERVAL`] ago.
pub fn work_done() {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_some_and(|t| t.elapsed() < MIN_INTERVAL) {
        return;
    }
    *last = Some(Instant::now());
    tokio::task::spawn_blocking(|| {
        let started = Instant::now();
        release_freed();
        tracing::debug!(took = ?started.elapsed(), "released freed memory");
    });
}

/// Returns freed memory to the operating system where the allocator allows
/// it (glibc); elsewhere does nothing.
#[allow(unsafe_code)]
fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and shrinks the allocator's own free
    // lists, under the allocator's locks; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
