//! `run`: the daemon, in the foreground.
//!
//! It takes the config directory's lock (a second daemon on the same config
//! would fight over every folder's state), starts one service loop per
//! folder, serves the API on loopback and writes its URL to `api.url`, then
//! waits for `shutdown` (the CLI passes Ctrl-C / SIGTERM).
//!
//! It keeps the running folders matched to the configs: a folder created or
//! joined while the daemon runs starts syncing without a restart, one
//! removed by `leave` stops, and one whose config changed restarts. Changes
//! made through the API (where the CLI sends them while a daemon runs) are
//! applied at once; the configs are also re-read every [`RECONCILE_EVERY`],
//! for a config edited by hand. A folder that cannot start (missing
//! directory, grid unreachable) is reported and retried every
//! [`RETRY_FAILED_EVERY`]; it never stops the others.
//!
//! Invitees who answered are let in by the daemon. An invitation written by
//! the CLI is heard through inotify on the folders' `invites/` directories;
//! while any waits for its answer, the daemon looks on the grid every
//! [`WAITING_EVERY`]. So an idle daemon does not wake every couple of
//! seconds for nothing (where inotify cannot watch, it looks every
//! [`WAITING_EVERY`] all the same).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::grid::{AnyGrid, OpenMode};
use crate::api;
use crate::config::ConfigDir;
use crate::events::Telemetry;
use crate::folder::{FolderHandle, Folders};
use crate::health::WriteGate;

/// How often the daemon re-reads the folder configs on its own.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// How often the daemon looks again while an invitation waits for its
/// answer or a folder waits for its retry.
pub const WAITING_EVERY: Duration = Duration::from_secs(2);

/// How long a folder that failed waits before the daemon tries it again.
pub const RETRY_FAILED_EVERY: Duration = Duration::from_secs(30);

/// Runs the daemon until `shutdown` completes.
pub async fn run(
    config: &ConfigDir,
    metrics_listen: Option<std::net::SocketAddr>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if let Some(addr) = metrics_listen {
        if !addr.ip().is_loopback() {
            anyhow::bail!(
                "--metrics-listen {addr}: only a loopback address (127.0.0.1, ::1) is allowed: \
                 the metrics there need no token"
            );
        }
    }
    config.require_initialised()?;
    let _lock = config.lock_daemon()?;
    config.init()?; // restores a missing API token
    let token = config.api_token()?;
    let folders: Folders = Default::default();
    let telemetry = Telemetry::default();
    let mut failures = Failures::default();
    reconcile(config, &folders, &telemetry, &mut failures).await;

    // The API asks for an immediate reconcile after it changed a config.
    let (reconcile_tx, mut reconcile_rx) =
        tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>(8);
    let (listener, url) = api::bind_loopback().await?;
    let (stop_api, stop_api_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(
        listener,
        token,
        folders.clone(),
        config.clone(),
        telemetry.clone(),
        reconcile_tx,
        async move {
            let _ = stop_api_rx.await;
        },
    ));
    let (stop_metrics, stop_metrics_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))?;
        info!(%addr, "metrics without a token at /metrics");
        tokio::spawn(api::serve_metrics(
            listener,
            folders.clone(),
            telemetry.clone(),
            async move {
                let _ = stop_metrics_rx.await;
            },
        ));
    }
    config.write_api_url(&url)?;
    let port = url.rsplit(':').next().and_then(|p| p.parse().ok());
    if let Err(e) = crate::discovery::announce(config, port) {
        warn!("clients written for magic-folder 24.3 will not find the API: {e}");
    }
    info!(config = %config.path().display(), api = %url, "daemon running");

    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting_tick = tokio::time::interval(WAITING_EVERY);
    waiting_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (invited_tx, mut invited_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut invites = match InvitesWatch::new(invited_tx) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!("cannot watch for new invitations ({e}); looking every {WAITING_EVERY:?}");
            None
        }
    };
    // Invitees who answered are let in (`invite_codes::admit`), one round
    // at a time, beside the loop (it waits on the grid).
    let mut admitting: Option<tokio::task::JoinHandle<()>> = None;
    let admit_errors = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    // Set by an admission round that left invitations waiting; looked at
    // again after a new one is heard of, whatever a round running meanwhile
    // found.
    let invitations_wait = Arc::new(AtomicBool::new(true));
    let mut heard_at: Option<tokio::time::Instant> = None;
    loop {
        if let Some(w) = invites.as_mut() {
            w.follow(config, &admin_folders(&folders).await);
        }
        let waiting = invites.is_none()
            || invitations_wait.load(Ordering::Relaxed)
            || heard_at.is_some_and(|t| t.elapsed() < 2 * WAITING_EVERY)
            || !failures.map.is_empty();
        let mut admit = false;
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                reconcile(config, &folders, &telemetry, &mut failures).await;
                admit = true;
            }
            _ = waiting_tick.tick(), if waiting => {
                reconcile(config, &folders, &telemetry, &mut failures).await;
                admit = true;
            }
            Some(()) = invited_rx.recv() => {
                heard_at = Some(tokio::time::Instant::now());
                admit = true;
            }
            Some(done) = reconcile_rx.recv() => {
                reconcile(config, &folders, &telemetry, &mut failures).await;
                let _ = done.send(());
            }
        }
        if admit && admitting.as_ref().is_none_or(|t| t.is_finished()) {
            let (c, f, e) = (config.clone(), folders.clone(), admit_errors.clone());
            admitting = Some(tokio::spawn(admit_all(c, f, e, invitations_wait.clone())));
        }
    }

    info!("shutting down");
    config.remove_api_url();
    if let Err(e) = crate::discovery::announce(config, None) {
        warn!("cannot record that the API stopped for 24.3's clients: {e}");
    }
    let _ = stop_api.send(());
    let _ = stop_metrics.send(());
    let handles: Vec<FolderHandle> = std::mem::take(&mut *folders.write().await)
        .into_values()
        .collect();
    let mut stopping = JoinSet::new();
    for h in handles {
        stopping.spawn(h.stop());
    }
    while stopping.join_next().await.is_some() {}
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => warn!("API server: {e}"),
        Err(_) => warn!("API server did not stop in time"),
        _ => {}
    }
    info!("stopped");
    Ok(())
}

/// Lets in every invitee who has answered, in every folder this daemon
/// runs and administers, and has the folder poll at once so the newcomer's
/// files follow. A failure is logged once per folder until it changes.
async fn admit_all(
    config: ConfigDir,
    folders: Folders,
    errors: Arc<std::sync::Mutex<BTreeMap<String, String>>>,
    invitations_wait: Arc<AtomicBool>,
) {
    for name in admin_folders(&folders).await {
        let result = super::invite_codes::admit(&config, &name).await;
        {
            let mut last = errors.lock().unwrap_or_else(|e| e.into_inner());
            match &result {
                Err(e) => {
                    let text = format!("{e:#}");
                    if last.get(&name) != Some(&text) {
                        warn!(folder = %name, "cannot admit invited participants: {text}");
                        last.insert(name.clone(), text);
                    }
                }
                Ok(_) => {
                    last.remove(&name);
                }
            }
        }
        match result {
            Ok(admitted) if !admitted.is_empty() => {
                info!(folder = %name, participants = ?admitted, "admitted invited participants");
                if let Some(h) = folders.read().await.get(&name) {
                    let _ = h.request_poll().await;
                }
            }
            _ => {}
        }
    }
    let waiting = admin_folders(&folders)
        .await
        .iter()
        .any(|name| super::invite_codes::has_pending(&config, name));
    invitations_wait.store(waiting, Ordering::Relaxed);
}

/// The folders this daemon runs and administers.
async fn admin_folders(folders: &Folders) -> Vec<String> {
    folders
        .read()
        .await
        .iter()
        .filter(|(_, h)| h.config().is_admin())
        .map(|(n, _)| n.clone())
        .collect()
}

/// inotify on the `invites/` directory of every folder this daemon
/// administers: the CLI's `invite` writes there, and the daemon should start
/// looking for the invitee's answer at once.
struct InvitesWatch {
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl InvitesWatch {
    /// Sends `()` on `tx` (dropping it if one is already waiting) when a
    /// file in a watched directory is created, written, renamed or removed
    /// — not when one is read: admission reads them, and would wake itself.
    fn new(tx: tokio::sync::mpsc::Sender<()>) -> notify::Result<InvitesWatch> {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let changed = match event {
                Ok(e) => matches!(
                    e.kind,
                    EventKind::Create(_)
                        | EventKind::Remove(_)
                        | EventKind::Modify(
                            ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any
                        )
                ),
                Err(_) => true, // lost track: look
            };
            if changed {
                let _ = tx.try_send(());
            }
        })?;
        Ok(InvitesWatch {
            watcher,
            watched: BTreeSet::new(),
        })
    }

    /// Watches the `invites/` directories of `admin_folders` (creating
    /// them, owner-only), and no others.
    fn follow(&mut self, config: &ConfigDir, admin_folders: &[String]) {
        let want: BTreeSet<PathBuf> = admin_folders
            .iter()
            .map(|name| super::invite_codes::pending_dir(config, name))
            .collect();
        for gone in self.watched.difference(&want).cloned().collect::<Vec<_>>() {
            let _ = self.watcher.unwatch(&gone);
            self.watched.remove(&gone);
        }
        for dir in want.difference(&self.watched).cloned().collect::<Vec<_>>() {
            let watched = crate::config::create_private_dir_all(&dir)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    self.watcher
                        .watch(&dir, RecursiveMode::NonRecursive)
                        .map_err(|e| e.to_string())
                });
            match watched {
                Ok(()) => {
                    self.watched.insert(dir);
                }
                // Looked at again on the next round; meanwhile the 30 s
                // reconcile still runs admission rounds.
                Err(e) => warn!("cannot watch {} for invitations: {e}", dir.display()),
            }
        }
    }
}

/// Remembers folders that could not start, to retry them later and log each
/// distinct problem once.
#[derive(Default)]
struct Failures {
    /// Folder → (last error, earliest next attempt).
    map: BTreeMap<String, (String, tokio::time::Instant)>,
}

/// Starts folders that are configured but not running (and retries failed
/// ones every [`RETRY_FAILED_EVERY`]); stops those no longer configured.
async fn reconcile(
    config: &ConfigDir,
    folders: &Folders,
    telemetry: &Telemetry,
    failures: &mut Failures,
) {
    let names = match config.folder_names() {
        Ok(n) => n,
        Err(e) => {
            error!("cannot list folders: {e}");
            return;
        }
    };
    let now = tokio::time::Instant::now();
    let mut to_stop = Vec::new();
    {
        let map = folders.read().await;
        for (name, h) in map.iter() {
            if !names.contains(name) {
                to_stop.push(name.clone());
            } else if config_changed(config, name, h) {
                failures.map.remove(name); // a new config deserves a new try now
                to_stop.push(name.clone());
            } else if let Some(why) = h.failure() {
                let due = failures.map.get(name).map(|(_, at)| *at);
                match due {
                    Some(at) if at > now => {}
                    Some(_) => to_stop.push(name.clone()),
                    None => {
                        failures
                            .map
                            .insert(name.clone(), (why, now + RETRY_FAILED_EVERY));
                    }
                }
            }
        }
    }
    for name in to_stop {
        if let Some(h) = folders.write().await.remove(&name) {
            if !names.contains(&name) {
                info!(folder = %name, "folder removed from the config; stopping it");
            } else if h.failure().is_none() {
                info!(folder = %name, "folder config changed; restarting it");
            }
            h.stop().await;
        }
    }
    failures.map.retain(|k, _| names.contains(k));
    for name in names {
        if folders.read().await.contains_key(&name) {
            continue;
        }
        if failures.map.get(&name).is_some_and(|(_, at)| *at > now) {
            continue; // failed recently: wait for its retry time
        }
        match start(config, &name, telemetry) {
            Ok(h) => {
                failures.map.remove(&name);
                folders.write().await.insert(name, h);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if failures.map.get(&name).map(|(m, _)| m) != Some(&msg) {
                    error!(folder = %name, "cannot start: {msg}; will retry");
                }
                failures.map.insert(name, (msg, now + RETRY_FAILED_EVERY));
            }
        }
    }
}

/// True if the folder's config on disk differs from the one it runs with
/// (edited, or left and joined again under the same name): it is restarted.
fn config_changed(config: &ConfigDir, name: &str, h: &FolderHandle) -> bool {
    match config.load_folder(name) {
        Ok(on_disk) => serde_json::to_value(&on_disk).ok() != serde_json::to_value(h.config()).ok(),
        // Unreadable now (being rewritten, or corrupt): keep what runs.
        Err(_) => false,
    }
}

fn start(config: &ConfigDir, name: &str, telemetry: &Telemetry) -> anyhow::Result<FolderHandle> {
    let cfg = config.load_folder(name)?;
    let grid = AnyGrid::open(&cfg.grid, &cfg.convergence_secret, OpenMode::MustExist)?;
    // On Tahoe, writes wait while the node has too few storage servers.
    let gate = WriteGate::for_grid(&grid);
    Ok(FolderHandle::spawn(
        config.clone(),
        cfg,
        Arc::new(grid),
        gate,
        telemetry.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_invitation_is_heard_and_reading_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = ConfigDir::at(dir.path().join("config"));
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let mut watch = InvitesWatch::new(tx).unwrap();
        watch.follow(&config, &["docs".to_owned()]);
        let invites = super::super::invite_codes::pending_dir(&config, "docs");
        assert!(invites.is_dir(), "created to be watched");
        std::fs::write(invites.join("bob.json"), b"{}").unwrap();
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("heard within a minute")
            .expect("the watcher is alive");
        // Reading the invitations (as admission does) is no news. (A slow
        // machine could only make this pass without proving much.)
        while rx.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_millis(200)).await;
        while rx.try_recv().is_ok() {}
        std::fs::read(invites.join("bob.json")).unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
        assert!(quiet.is_err(), "reading an invitation woke admission");
        // A folder no longer administered is no longer watched.
        watch.follow(&config, &[]);
        assert!(watch.watched.is_empty());
    }
}
