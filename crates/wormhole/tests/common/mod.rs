//! Test support: a local Magic Wormhole mailbox server and the venv's
//! programs (`mf_grid::tahoe::testgrid`, from the project venv that
//! `scripts/tahoe-venv.sh` installs).
//!
//! Missing tools make the tests fail with instructions, never skip.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::time::Duration;

use mf_grid::tahoe::testgrid::venv_executable;
pub use mf_grid::tahoe::testgrid::MailboxServer;

/// Hang protection only: generous, so slow machines still pass.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// magic-folder's invite application id and versions.
pub const APPID: &str = "private.storage/magic-folder/invites";

pub fn magic_folder_versions() -> serde_json::Value {
    serde_json::json!({"magic-folder": {"supported-messages": ["invite-v1"]}})
}

/// A local mailbox server (the project's test fixture; it fails with
/// instructions when the venv is missing, never skips).
pub fn mailbox(extra: &[&str]) -> MailboxServer {
    MailboxServer::start_with(extra).unwrap_or_else(|e| panic!("{e}"))
}

/// A program of the venv (`scripts/tahoe-venv.sh` installs it).
pub fn venv_program(name: &str) -> PathBuf {
    venv_executable(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Awaits `fut`, failing the test if it takes longer than [`DEADLINE`]
/// (hang protection, never a speed requirement).
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {DEADLINE:?}"))
}
