//! `run`: the daemon, in the foreground.
//!
//! It takes the config directory's lock (a second daemon on the same config
//! would fight over every folder's state), starts one service loop per
//! folder, serves the API on loopback and writes its URL to `api.url`, then
//! waits for `shutdown` (the CLI passes Ctrl-C / SIGTERM).
//!
//! Every [`RECONCILE_EVERY`] it re-reads the folder configs, so a folder
//! created or joined while the daemon runs starts syncing without a restart,
//! one removed by `leave` stops, and one whose config changed restarts. A folder that cannot start (missing
//! directory, grid unreachable) is reported and retried at the next round;
//! it never stops the others.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::grid::{AnyGrid, OpenMode};
use crate::api;
use crate::config::ConfigDir;
use crate::events::Telemetry;
use crate::folder::{FolderHandle, Folders};
use crate::health::WriteGate;

/// How often the daemon looks for added and removed folders.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);

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
    // Invitees who answered are let in (`invite_codes::admit`), one round
    // at a time, beside the loop (it waits on the grid).
    let mut admitting: Option<tokio::task::JoinHandle<()>> = None;
    let admit_errors = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                reconcile(config, &folders, &telemetry, &mut failures).await;
                if admitting.as_ref().is_none_or(|t| t.is_finished()) {
                    let (c, f, e) = (config.clone(), folders.clone(), admit_errors.clone());
                    admitting = Some(tokio::spawn(admit_all(c, f, e)));
                }
            }
            Some(done) = reconcile_rx.recv() => {
                reconcile(config, &folders, &telemetry, &mut failures).await;
                let _ = done.send(());
            }
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
) {
    let names: Vec<String> = folders
        .read()
        .await
        .iter()
        .filter(|(_, h)| h.config().is_admin())
        .map(|(n, _)| n.clone())
        .collect();
    for name in names {
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
    Ok(FolderHandle::spawn_gated(
        cfg,
        Arc::new(grid),
        config.state_db(name),
        gate,
        telemetry.clone(),
    ))
}
