//! The program's memory allocator: jemalloc, returning what it frees.
//!
//! A daemon syncing 100,000 files allocates and frees a burst's worth of
//! listings, scan reports and uploads, then idles on a much smaller heap.
//! glibc's allocator kept most of the burst: one arena per thread, freed
//! chunks reused but rarely returned, holes pinned by the records that
//! outlive the burst. heaptrack put a reader's live heap at its peak at
//! 82 MB for a resident peak of 162–172 MiB, and it took a fixed mmap
//! threshold and a `malloc_trim` after each burst to keep an idle daemon
//! near its live heap.
//!
//! jemalloc packs allocations of one size class together and gives freed
//! pages back to the system on its own ([`malloc_conf`]): nothing for the
//! daemon to trim, and the resident set follows the live heap instead of
//! its high-water mark.
//! Measured in alternating runs of the initial sync of 100,000 files in
//! the sharded layout (BENCHMARKS.md, 2026-12-07): peaks of 122–134 MiB
//! (writer) and 134–151 MiB (reader) against 132–140 and 162–167 with
//! glibc, and idle at 54–56 and 61–69 MiB against 56–60 and 68–84, in
//! times the runs could not tell apart (the disk's speed swung threefold).
//! Without the background thread jemalloc kept the burst: idle at
//! 101/104 MiB. (Those runs had jemalloc's default arenas; with one per
//! CPU, see [`malloc_conf`], the flat layout peaked at 125/127 MiB and
//! idled at 55/61.)
//!
//! It is the C code's allocator too (on Linux, jemalloc's symbols are
//! unprefixed, so its `malloc` replaces libc's):
//! SQLite's page caches otherwise lived in glibc arenas of their own, which
//! kept what SQLite freed. An idle reader of 100,000 files held ~4.6 MiB
//! there (BENCHMARKS.md, 2026-12-07).

/// Every allocation of the program.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, which it reads once, at its start, from the symbol
/// `malloc_conf` (unprefixed, as all of its symbols are here):
/// * purge in a background thread, so pages are returned while the daemon
///   idles (without it, only an allocating thread purges; with freed pages
///   returned at once, below, little is left for it, but the figures below
///   were measured with it);
/// * one arena per CPU, each thread using the one of the CPU it runs on.
///   With jemalloc's default of four per CPU, a 1 GiB transfer's 1 MiB
///   chunk buffers, allocated and freed by the thousand on 16 blocking
///   threads, were kept free in every arena: alice at 63–65 MiB against
///   39–42 with glibc (W2's line is 64). Per CPU: 43–44 MiB, as fast.
///   Two arenas shared by all threads were as lean but took 13.3 s
///   instead of 7.9–8.6 s: the threads queued for them;
/// * return a freed page at once (default: after ten seconds), without
///   keeping it mapped but reclaimable ("muzzy") first. A daemon's peak is
///   a burst of work that allocates and frees within a second (a reader
///   writing hundreds of small files at once), and pages kept free for that
///   second counted in it: with a second's delay the initial sync of
///   100,000 files on Tahoe peaked at 109/109 MiB (alice/bob), at once at
///   88/101, in the same time (BENCHMARKS.md, 2026-12-07); a 1 GiB transfer
///   on the embedded grid at 37/34 MiB instead of 49/54, as fast.
///
/// The test `the_daemon_allocates_with_jemalloc_purging_in_the_background`
/// checks that jemalloc read them.
#[allow(unsafe_code, non_upper_case_globals)]
// SAFETY: jemalloc declares `const char *malloc_conf` (weak, so this
// definition replaces its own) and only reads it: a pointer to a static,
// NUL-terminated string of its option syntax is exactly what it expects.
#[export_name = "malloc_conf"]
static malloc_conf: &[u8; 77] =
    b"background_thread:true,percpu_arena:percpu,dirty_decay_ms:0,muzzy_decay_ms:0\0";
