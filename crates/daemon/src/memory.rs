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
//!
//! [`BLOCKING_THREADS`] bounds tokio's blocking pool: each thread costs
//! its stack and a share of an arena.
//!
//! And [`configure`] fixes glibc's mmap threshold at a little over 1 MiB,
//! once, at start.
//! glibc raises that threshold every time a large block is freed (up to
//! 32 MiB), after which multi-megabyte buffers (a big listing, a batch of
//! scan results) come from the arenas and leave holes there that no trim
//! closes. Fixed, they are mapped and unmapped whole. Measured with paired
//! runs (BENCHMARKS.md): the initial sync of 100,000 files peaked at
//! 169–174 MiB instead of 199–225, and the daemon idled at 70–89 MiB
//! instead of 91–116, for no time cost the runs could tell from noise.

use std::time::Instant;

/// Threads in tokio's blocking pool (tokio's default: 512). The filesystem
/// and embedded-grid work of up to 32 effects in flight ran on up to 141
/// threads; bounded, they queue instead. Paired runs of the initial sync
/// of 100,000 files (BENCHMARKS.md): idle at 50–61 MiB against 55–75 MiB,
/// in no more time than the runs could tell from noise. Blocking tasks
/// must never wait for one another (`mf_grid::blocking`).
pub const BLOCKING_THREADS: usize = 16;

/// Allocations from this size up are mapped whole (see the module docs):
/// just above a large file's 1 MiB chunk ([`crate::chunked`] on the
/// embedded grid). A file's chunk buffers are allocated and freed by the
/// thousand (a 1 GiB file: 1,024 on each side), and mapped, each was
/// faulted in page by page, zeroed by the kernel and unmapped again: an
/// eighth of either daemon's CPU time for a 1 GiB file. Below the
/// threshold they reuse the same heap memory instead.
const MMAP_THRESHOLD: usize = (1 << 20) + (64 << 10);

/// Sets the allocator up for a long-running daemon (glibc: the fixed mmap
/// threshold of the module docs); elsewhere does nothing. Call once, early.
#[allow(unsafe_code)]
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter under the allocator's
    // lock; any value is valid for M_MMAP_THRESHOLD up to 32 MiB.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

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
