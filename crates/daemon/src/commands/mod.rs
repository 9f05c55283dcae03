//! The operations behind each CLI command, as library calls.
//!
//! The `magic-folder` binary only parses arguments, calls one function here
//! and prints what it returns, so everything a command does can be tested
//! (and reused) without a terminal. Each function returns plain data
//! (`Serialize`, for `--json`) or an error whose message is meant for the
//! user.
//!
//! * [`setup`] — `init`, `create`, `invite`, `join`, `leave`, `list`: the
//!   folder's life cycle on the grid and in the config directory;
//! * [`mod@status`] — live status from the daemon's API, or the last known one
//!   from the state database;
//! * [`mod@resolve`] — settling a conflict on the filesystem;
//! * [`mod@history`] — `history`, `restore`, `deleted`: every version of a
//!   path, read from the grid; [`mod@verify`] — the folder audited against
//!   the grid, and repaired; [`mod@gc`] — space back from an embedded grid;
//! * [`mod@run`] — the daemon itself; [`service`] — installing it as a
//!   systemd user service;
//! * [`grid`] — opening a folder's grid, whichever the backend.

pub mod convert;
pub mod gc;
pub mod grid;
pub mod history;
pub mod invite_codes;
pub mod invite_v1;
pub mod participants;
pub mod resolve;
pub mod run;
pub mod service;
pub mod setup;
pub mod status;
pub mod verify;

pub use convert::{convert, ConvertReport};
pub use gc::{gc, GcOptions, GcReport};
pub use grid::{AnyGrid, OpenMode};
pub use history::{deleted, history, restore, Deleted, History, RestoreOutcome, Version};
pub use invite_codes::{admit, invite, Invite, InviteCode, INVITE_PREFIX};
pub use resolve::{resolve, Resolution, ResolveOutcome};
pub use run::run;
pub use setup::{
    create, init, join, leave, list, CreateOptions, FolderInfo, GridChoice, InitOutcome,
    JoinOptions, LeaveOutcome, Tuning,
};
pub use status::{nudge, status, Nudge};
pub use verify::{verify, Finding, VerifyReport};
