//! Bounds on the daemon's memory that are not any one module's.
//!
//! The allocator itself is the program's choice (`magic-folder`'s
//! `allocator.rs`: jemalloc, which returns freed pages on its own). What a
//! folder keeps between bursts of work is shrunk by its service loop
//! ([`crate::folder`], `Engine::shrink_to_fit`).

/// Threads in tokio's blocking pool (tokio's default: 512). The filesystem
/// and embedded-grid work of up to 32 effects in flight ran on up to 141
/// threads, each with its stack and a share of the allocator's memory;
/// bounded, they queue instead. Paired runs of the initial sync of 100,000
/// files (BENCHMARKS.md): idle at 50–61 MiB against 55–75 MiB, in no more
/// time than the runs could tell from noise. Blocking tasks must never wait
/// for one another (`mf_grid::blocking`).
pub const BLOCKING_THREADS: usize = 16;
