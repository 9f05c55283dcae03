//! `service install`: runs the daemon as a systemd user service, so it
//! starts at login and restarts after a failure.
//!
//! The unit names this program by its absolute path and the config
//! directory explicitly: nothing depends on the service's environment
//! (PATH, `XDG_CONFIG_HOME`), and no secret is in it (the capabilities stay
//! in the owner-only config directory).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Context};
use serde::Serialize;

use crate::config::{write_private, ConfigDir};

/// The unit's file name.
pub const UNIT_NAME: &str = "magic-folder.service";

/// What `service install` did.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceOutcome {
    /// Where the unit file was written.
    pub unit_file: PathBuf,
    /// True if systemd was told to start it now and at every login.
    pub enabled: bool,
    /// Why it was not enabled, if it was not.
    pub note: Option<String>,
}

/// The unit file's text for running `exe` on the config directory `config`.
pub fn unit_file(exe: &Path, config: &Path) -> String {
    format!(
        "[Unit]\n\
         Description=Magic Folder: keeps folders in sync through an encrypted grid\n\
         Documentation=man:magic-folder(1)\n\
         \n\
         [Service]\n\
         ExecStart={} --config {} run\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         # SIGTERM stops it cleanly: running transfers get a few seconds.\n\
         TimeoutStopSec=30\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        systemd_quote(&exe.to_string_lossy()),
        systemd_quote(&config.to_string_lossy()),
    )
}

/// Quotes one word of an `ExecStart=` line: double quotes, with `\` and `"`
/// escaped, and `%` doubled (systemd expands `%` specifiers even in quotes).
fn systemd_quote(word: &str) -> String {
    let escaped = word
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("\"{escaped}\"")
}

/// Writes the unit into `unit_dir` (default: the user's systemd directory,
/// `$XDG_CONFIG_HOME/systemd/user`) and, unless `enable` is false or there
/// is no `systemctl`, enables and starts it.
pub fn install(
    config: &ConfigDir,
    unit_dir: Option<&Path>,
    enable: bool,
) -> anyhow::Result<ServiceOutcome> {
    config.require_initialised()?;
    let exe = std::env::current_exe().context("finding this program's path")?;
    let dir = match unit_dir {
        Some(d) => d.to_path_buf(),
        None => user_unit_dir()?,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let unit = dir.join(UNIT_NAME);
    write_private(&unit, unit_file(&exe, config.path()).as_bytes())?;
    if !enable {
        return Ok(ServiceOutcome {
            unit_file: unit,
            enabled: false,
            note: Some("not enabled (--no-enable)".into()),
        });
    }
    let systemctl = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("systemctl")
            .arg("--user")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run systemctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "systemctl --user {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let enabled =
        systemctl(&["daemon-reload"]).and_then(|()| systemctl(&["enable", "--now", UNIT_NAME]));
    Ok(match enabled {
        Ok(()) => ServiceOutcome {
            unit_file: unit,
            enabled: true,
            note: None,
        },
        Err(why) => ServiceOutcome {
            unit_file: unit,
            enabled: false,
            note: Some(format!(
                "{why}; start it with `systemctl --user enable --now {UNIT_NAME}`"
            )),
        },
    })
}

/// `$XDG_CONFIG_HOME/systemd/user`, or `~/.config/systemd/user`.
fn user_unit_dir() -> anyhow::Result<PathBuf> {
    let base = directories::BaseDirs::new()
        .ok_or_else(|| anyhow!("neither XDG_CONFIG_HOME nor HOME is set"))?;
    Ok(base.config_dir().join("systemd").join("user"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_quotes_paths_and_names_no_secret() {
        let unit = unit_file(
            Path::new("/opt/my apps/magic-folder"),
            Path::new("/home/a/100% \"cfg\""),
        );
        assert!(
            unit.contains(
                "ExecStart=\"/opt/my apps/magic-folder\" --config \"/home/a/100%% \\\"cfg\\\"\" run\n"
            ),
            "{unit}"
        );
        assert!(unit.contains("Restart=on-failure") && unit.contains("WantedBy=default.target"));
    }
}
