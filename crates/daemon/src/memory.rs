//! Gives memory the daemon freed back to the operating system.
//!
//! glibc's allocator keeps freed memory for reuse, in one heap ("arena")
//! per thread that allocated it, and returns little of it on its own. A
//! daemon that had just synced or rescanned 100,000 files had freed most of
//! what that took (directory listings, scan reports) yet stayed at almost
//! three times its live heap: 210 MiB resident for 76 MiB in use (105 MiB
//! after `malloc_trim`, which releases the free pages of every arena). So
//! a folder's service loop calls [`release_freed`] when it runs out of work
//! after handling a lot (not after every poll: on a big heap a release
//! costs a few milliseconds, and memory given back is faulted in again).

use std::time::Instant;

/// Returns freed memory to the operating system, in the background, where
/// the allocator allows it (glibc); elsewhere does nothing.
pub fn release_freed() {
    tokio::task::spawn_blocking(|| {
        let started = Instant::now();
        trim();
        tracing::debug!(took = ?started.elapsed(), "released freed memory");
    });
}

#[allow(unsafe_code)]
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and shrinks the allocator's own free
    // lists, under the allocator's locks; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
