//! Magic Folder's deterministic heart.
//!
//! * [`relpath`] — checked relative paths, the grid's flat name mangling, and
//!   the names of conflict copies and our own temporary files;
//! * [`snapshot`] — the signed, parent-linked snapshot model (magic-folder
//!   24.3's on-grid format);
//! * [`store`] — the engine's durable state behind the [`store::Store`] trait;
//! * [`engine`] — the sans-IO sync engine: events and the time go in, actions
//!   and the next wake-up time come out. It never touches the grid, the disk,
//!   the clock or a database itself, so the daemon and the simulator drive the
//!   very same decisions.

#![warn(missing_docs)]

pub mod engine;
pub mod relpath;
pub mod snapshot;
pub mod store;
