//! The Magic Folder daemon: everything that touches the real world.
//!
//! The sync decisions live in `mf_core::engine` and never do I/O. This crate
//! carries them out and feeds the results back:
//!
//! * [`executor`] — performs each `Action` against a real [`mf_grid::Grid`]
//!   and the real filesystem, and reports the matching `Event`; [`pack`] —
//!   several snapshots in one grid object;
//! * [`scan`], [`watch`], [`fsops`], [`ignore`] — the local side: full scans,
//!   the filesystem watcher, safe atomic file operations, ignore rules;
//! * [`config`], [`folder`], [`api`], [`commands`] — configuration on disk,
//!   the per-folder service loop, the loopback HTTP API, and the operations
//!   behind each CLI command;
//! * [`health`] — holds grid writes back while a Tahoe node has too few
//!   storage servers; [`memory`] — bounds on the daemon's memory;
//! * [`grid_watch`] — on an embedded grid, hears the other participants'
//!   publishes as they happen, so the folder polls at once;
//! * [`story`] — the log that says what happened (uploads, downloads,
//!   conflicts, problems), summarised under floods; [`brief`] — actions and
//!   events as the debug log shows them.

pub mod api;
pub mod brief;
pub mod chunked;
pub mod commands;
pub mod config;
pub mod convert;
pub mod discovery;
pub mod events;
pub mod executor;
pub mod folder;
pub mod format;
pub mod fsops;
pub mod grid_watch;
pub mod health;
pub mod ignore;
pub mod memory;
pub mod metrics;
pub mod pack;
pub mod personal;
pub mod scan;
pub mod story;
pub mod transfers;
pub mod watch;
