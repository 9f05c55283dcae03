//! `magic-folder`: the command-line front end.
//!
//! Deliberately thin: it parses arguments, sets up logging, calls one
//! function of `mf_daemon::commands` and prints the result (for people, or
//! as JSON with `--json`). Errors become one clear message on stderr and a
//! non-zero exit status; user mistakes never produce a backtrace.

#![warn(missing_docs)]

mod allocator;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use mf_daemon::commands::{self, CreateOptions, GridChoice, JoinOptions, Resolution, Tuning};
use mf_daemon::config::{parse_duration, parse_umask, ConfigDir};

/// Keep a directory in sync among participants through an end-to-end
/// encrypted grid.
#[derive(Debug, Parser)]
#[command(
    name = "magic-folder",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Config directory [default: $MAGIC_FOLDER_CONFIG, else
    /// $XDG_CONFIG_HOME/magic-folder, else ~/.config/magic-folder]
    #[arg(long, global = true, value_name = "DIR")]
    config: Option<PathBuf>,

    /// More log output on stderr (-v: debug, -vv: trace). RUST_LOG overrides it.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,

    /// Log lines as text (for people) or JSON objects (for log collectors)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Append the log to FILE (created owner-only) instead of stderr
    #[arg(long, global = true, value_name = "FILE")]
    log_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum ParticipantsAction {
    /// Every participant, with their mode and personal directory
    List {
        /// The folder
        folder: String,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Add a participant by their personal directory's read capability (as
    /// magic-folder 24.3's add-participant does)
    Add {
        /// The folder
        folder: String,
        /// Their name in the folder
        name: String,
        /// Their personal directory's read capability (URI:DIR2-RO:...)
        personal_dmd: String,
    },
    /// Remove a participant: nothing they publish from now on reaches anyone
    Remove {
        /// The folder
        folder: String,
        /// The participant
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the config directory (create and join do it too)
    Init {
        /// The Magic Wormhole mailbox server for invites [default: the
        /// public one magic-folder 24.3 uses]
        #[arg(long, value_name = "URL")]
        mailbox: Option<String>,
        /// The Tahoe-LAFS node (directory or web-API URL) for folders
        /// joined through the API, which names none (as magic-folder 24.3's
        /// `init --node-directory`)
        #[arg(long, value_name = "NODE_DIR_OR_URL")]
        tahoe: Option<String>,
    },

    /// Create a new magic folder, with yourself as its admin
    Create {
        /// Local name of the folder
        name: String,
        /// Directory to keep in sync (created if missing)
        local_dir: PathBuf,
        /// Your participant name [default: your login name]
        #[arg(long, value_name = "NAME")]
        author: Option<String>,
        #[command(flatten)]
        grid: GridArgs,
        /// How personal directories are laid out on the grid: `flat` is
        /// magic-folder 24.3's (a change costs O(folder) on Tahoe); `sharded`
        /// makes a change cost O(change), but 24.3 participants cannot join
        #[arg(long, value_name = "LAYOUT", default_value = "flat")]
        layout: mf_daemon::personal::Layout,
        #[command(flatten)]
        tuning: TuningArgs,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },

    /// List, add or remove a folder's participants (adding and removing: the
    /// admin only)
    Participants {
        #[command(subcommand)]
        action: ParticipantsAction,
    },

    /// Invite a participant to a folder you created; prints a secret invite code
    ///
    /// The code (mf-invite-v3:...) is SECRET: whoever holds it can read the
    /// whole folder, and join as the new participant until it is used,
    /// expires or is cancelled. Send it over a private channel. The invitee
    /// is let in when your daemon sees their answer (or on `admit`).
    Invite {
        /// The folder
        folder: String,
        /// The new participant's name
        participant: String,
        /// How long the code works [default: 7d]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "wormhole")]
        expires: Option<Duration>,
        /// Cancel the waiting invite of PARTICIPANT instead
        #[arg(long, conflicts_with = "wormhole")]
        cancel: bool,
        /// Invite over Magic Wormhole, as magic-folder 24.3 does (a Tahoe
        /// folder only): prints a short code, waits for the invitee, and
        /// only read capabilities cross
        #[arg(long)]
        wormhole: bool,
        /// With --wormhole: the mailbox server [default: the one `init
        /// --mailbox` set, else the public one]
        #[arg(long, value_name = "URL", requires = "wormhole")]
        mailbox: Option<String>,
        /// With --wormhole: the participant may only read
        #[arg(long, requires = "wormhole")]
        read_only: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },

    /// Let in every invitee who has answered (the daemon does it every few
    /// seconds while it runs)
    Admit {
        /// The folder [default: every folder you administer]
        folder: Option<String>,
    },

    /// Join a folder with an invite code
    Join {
        /// The invite code: ours (mf-invite-v3:...) or a Magic Wormhole
        /// code from `invite --wormhole` or magic-folder 24.3 (7-word-word)
        code: String,
        /// Directory to keep in sync (created if missing)
        local_dir: PathBuf,
        /// Local name of the folder [default: the inviter's name for it]
        #[arg(long, short = 'n', value_name = "FOLDER")]
        name: Option<String>,
        /// Author name written into your snapshots [default: the invited participant name]
        #[arg(long, value_name = "NAME")]
        author: Option<String>,
        #[command(flatten)]
        grid: GridArgs,
        #[command(flatten)]
        tuning: TuningArgs,
        /// For a wormhole code: the mailbox server [default: the one `init
        /// --mailbox` set, else the public one]
        #[arg(long, value_name = "URL")]
        mailbox: Option<String>,
        /// For a wormhole code: join read-only (you receive everything; your
        /// changes reach no one)
        #[arg(long)]
        read_only: bool,
        /// For a wormhole code: how long to wait for the inviter [default: 60s]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        wait: Option<Duration>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },

    /// Stop syncing a folder and forget it here (its files stay)
    Leave {
        /// The folder
        name: String,
        /// Leave even if you are the admin (destroys the only copy of the
        /// collective's write capability: nobody can be invited again)
        #[arg(long)]
        really_delete_write_capability: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },

    /// List the configured folders
    List {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },

    /// Show what each folder is doing: files, queue, conflicts, errors
    Status {
        /// Only this folder
        name: Option<String>,
        /// Print as JSON
        #[arg(long)]
        json: bool,
        /// Show it anew every second until Ctrl-C (with --json: one JSON
        /// document a line)
        #[arg(long)]
        watch: bool,
    },

    /// Ask the running daemon to look for local changes now
    Scan {
        /// Only this folder
        name: Option<String>,
        /// Print the folders asked as JSON
        #[arg(long)]
        json: bool,
    },

    /// Ask the running daemon to look for the other participants' changes now
    Poll {
        /// Only this folder
        name: Option<String>,
        /// Print the folders asked as JSON
        #[arg(long)]
        json: bool,
    },

    /// Resolve a conflict: keep one version and remove the conflict copies
    Resolve {
        /// The conflicted file (not its .conflict-* copy)
        path: PathBuf,
        #[command(flatten)]
        choice: ResolveChoice,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },

    /// Every version of a file, from the grid: who, when, size, parents
    History {
        /// The file (it may have been deleted)
        path: PathBuf,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },

    /// Bring back an earlier version of a file (as a new version everyone gets)
    #[command(disable_version_flag = true)]
    Restore {
        /// The file (it may have been deleted)
        path: PathBuf,
        /// The version, as `history` shows it [default for a deleted file:
        /// its last version]
        #[arg(long, value_name = "ID")]
        version: Option<String>,
        /// Write it to this file in the same folder instead
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },

    /// List deleted files: who deleted them and when (`restore` brings one back)
    Deleted {
        /// Only this folder
        folder: Option<String>,
        /// Only files deleted within this time, e.g. 2d or 3h
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<Duration>,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },

    /// Audit folders against the grid: every current version read back and
    /// verified, files on disk compared with their versions
    Verify {
        /// Only this folder
        name: Option<String>,
        /// Put right what can be: rewrite damaged objects of the embedded grid
        /// from files on disk, have the Tahoe node restore missing shares
        #[arg(long)]
        repair: bool,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },

    /// Move a folder to chunked contents and, on Tahoe, the sharded layout
    /// (the admin only): an edit inside a large file then costs O(edit), and
    /// on Tahoe any change O(change). Every participant's daemon follows when
    /// it sees the new format; run it again to link the moved directories
    /// and see who has not moved yet
    Convert {
        /// The folder
        name: String,
        /// The layout to move to [default: sharded on Tahoe; on the embedded
        /// grid, the folder's own]
        #[arg(long, value_name = "LAYOUT")]
        layout: Option<mf_daemon::personal::Layout>,
        /// Convert a folder in magic-folder 24.3's format (flat, on Tahoe):
        /// 24.3 participants cannot read the new one
        #[arg(long)]
        force: bool,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },

    /// Take space back from an embedded grid: the content of versions outside
    /// the retention, and objects no version references
    Gc {
        /// Only the grid of this folder (with every folder of this device on it)
        name: Option<String>,
        /// Keep the content of older versions this young [default: each
        /// folder's --keep-versions-for]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        keep_versions_for: Option<Duration>,
        /// Keep the content of this many older versions of each file [default:
        /// each folder's --keep-versions]
        #[arg(long, value_name = "N")]
        keep_versions: Option<usize>,
        /// Never remove an object written or uploaded again within this time
        /// (writers on other machines publish what they upload well within it)
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1d")]
        grace: Duration,
        /// Only say what would be removed
        #[arg(long)]
        dry_run: bool,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },

    /// The running daemon's web page: print a one-time login URL (valid 5
    /// minutes), or open it in the browser
    Web {
        /// Open it with xdg-open instead of printing it
        #[arg(long)]
        open: bool,
        /// Print {"url": …} as JSON
        #[arg(long)]
        json: bool,
    },

    /// Change a folder's intervals, umask or versions policy (a running
    /// daemon applies them at once)
    Config {
        /// The folder
        name: String,
        #[command(flatten)]
        tuning: TuningArgs,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },

    /// Run the daemon in the foreground, syncing every folder (Ctrl-C stops it)
    Run {
        /// Also serve /metrics without the API token at this loopback
        /// address, for a Prometheus scraper (e.g. 127.0.0.1:9101)
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },

    /// Run the daemon as a systemd user service (starts at login)
    #[command(subcommand)]
    Service(ServiceCommand),

    /// Print a shell completion script (e.g. `magic-folder completions bash >
    /// ~/.local/share/bash-completion/completions/magic-folder`)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },

    /// Print the manual page (roff; e.g. `magic-folder man > magic-folder.1`)
    Man,
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Write the unit file and enable it (`systemctl --user enable --now`)
    Install {
        /// Only write the unit file
        #[arg(long)]
        no_enable: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
}

/// Which version `resolve` keeps.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ResolveChoice {
    /// Keep your version
    #[arg(long)]
    mine: bool,
    /// Keep the other participant's version (when only one conflicts)
    #[arg(long)]
    theirs: bool,
    /// Keep this participant's version
    #[arg(long = "use", value_name = "NAME")]
    use_: Option<String>,
}

impl ResolveChoice {
    fn resolution(self) -> Resolution {
        match (self.mine, self.theirs, self.use_) {
            (_, _, Some(n)) => Resolution::Use(n),
            (_, true, None) => Resolution::Theirs,
            _ => Resolution::Mine,
        }
    }
}

/// Where a folder's grid is.
#[derive(Debug, Args)]
#[group(multiple = false)]
struct GridArgs {
    /// Use the embedded grid in DIR [create default: CONFIG/grid; join
    /// default: where the invite says]
    #[arg(long, value_name = "DIR")]
    grid: Option<PathBuf>,
    /// Use a Tahoe-LAFS node (its node directory or web-API URL)
    #[arg(long, value_name = "NODE_DIR_OR_URL")]
    tahoe: Option<String>,
}

impl GridArgs {
    fn choice(self) -> Option<GridChoice> {
        match (self.grid, self.tahoe) {
            (Some(d), _) => Some(GridChoice::Embedded(d)),
            (None, Some(t)) => Some(GridChoice::Tahoe(t)),
            (None, None) => None,
        }
    }
}

/// Timing settings stored with the folder.
#[derive(Debug, Args)]
struct TuningArgs {
    /// Time between polls of the other participants, e.g. 3s [default: 3s
    /// on the embedded grid, 60s on Tahoe]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    poll_interval: Option<Duration>,
    /// Time between full scans of the local directory [default: 10m]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    scan_interval: Option<Duration>,
    /// Quiet time after a local change before it is uploaded [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pending_delay: Option<Duration>,
    /// Permission bits removed from files written for others, octal [default: 077]
    #[arg(long, value_name = "OCTAL", value_parser = parse_umask)]
    umask: Option<u32>,
    /// How long replaced and deleted files stay in the local versions area
    /// [default: 30d] (every version stays on the grid: see `history`)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_versions_for: Option<Duration>,
    /// How many versions of each file the local versions area keeps [default: 10]
    #[arg(long, value_name = "N")]
    keep_versions: Option<usize>,
}

impl From<TuningArgs> for Tuning {
    fn from(t: TuningArgs) -> Tuning {
        Tuning {
            poll_interval: t.poll_interval,
            scan_interval: t.scan_interval,
            pending_delay: t.pending_delay,
            umask: t.umask,
            keep_versions_for: t.keep_versions_for,
            keep_versions: t.keep_versions,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        eprintln!("magic-folder: cannot open the log file: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(mf_daemon::memory::BLOCKING_THREADS)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("magic-folder: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read our output stopped reading (`… | head`): not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("magic-folder: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// True if writing our output failed because its reader closed the pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(cli: &Cli) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use tracing_subscriber::EnvFilter;
    let daemon = matches!(cli.command, Command::Run { .. });
    let default = match (cli.verbose, daemon) {
        (0, false) => "warn",
        (0, true) => "info",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match (&cli.log_file, cli.log_format) {
        (Some(path), format) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?;
            let writer = std::sync::Mutex::new(file);
            match format {
                LogFormat::Json => builder.json().with_writer(writer).init(),
                LogFormat::Text => builder.with_ansi(false).with_writer(writer).init(),
            }
        }
        (None, LogFormat::Json) => builder.json().with_writer(std::io::stderr).init(),
        (None, LogFormat::Text) => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    Ok(())
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = ConfigDir::resolve(cli.config.as_deref())?;
    match cli.command {
        Command::Init { mailbox, tahoe } => {
            let tahoe = absolute_grid(tahoe.map(GridChoice::Tahoe))?;
            output::init(&commands::init(&config, mailbox.as_deref(), tahoe)?)
        }
        Command::Create {
            name,
            local_dir,
            author,
            grid,
            layout,
            tuning,
            json,
        } => {
            let opts = CreateOptions {
                name,
                local_dir: absolute(&local_dir)?,
                author,
                grid: absolute_grid(grid.choice())?,
                tuning: tuning.into(),
                layout,
            };
            // The running daemon is the one place that changes folders.
            let info = match daemon(&config) {
                Some(api) => {
                    let req = mf_daemon::api::CreateRequest {
                        name: opts.name,
                        author_name: opts.author,
                        local_path: opts.local_dir,
                        grid: opts.grid,
                        layout: opts.layout,
                        tuning: opts.tuning,
                    };
                    api.create(&req).await.map_err(anyhow::Error::msg)?
                }
                None => commands::create(&config, opts).await?,
            };
            output::folder_added(&info, "Created", json)
        }
        Command::Participants { action } => {
            use mf_daemon::commands::participants;
            match action {
                ParticipantsAction::List { folder, json } => {
                    let cfg = config.load_folder(&folder)?;
                    output::participants(&participants::list(&cfg).await?, json)
                }
                // Changes go through the daemon when one runs (it is the one
                // place that changes a folder); reads need no daemon.
                ParticipantsAction::Add {
                    folder,
                    name,
                    personal_dmd,
                } => {
                    match daemon(&config) {
                        Some(api) => api
                            .add_participant(&folder, &name, &personal_dmd)
                            .await
                            .map_err(anyhow::Error::msg)?,
                        None => {
                            participants::add(&config.load_folder(&folder)?, &name, &personal_dmd)
                                .await?
                        }
                    }
                    eprintln!("Added {name:?} to {folder:?}.");
                    Ok(())
                }
                ParticipantsAction::Remove { folder, name } => {
                    match daemon(&config) {
                        Some(api) => api
                            .remove_participant(&folder, &name)
                            .await
                            .map_err(anyhow::Error::msg)?,
                        None => participants::remove(&config.load_folder(&folder)?, &name).await?,
                    }
                    eprintln!("Removed {name:?} from {folder:?}.");
                    Ok(())
                }
            }
        }
        Command::Invite {
            folder,
            participant,
            cancel: true,
            ..
        } => {
            commands::invite_codes::cancel(&config, &folder, &participant).await?;
            eprintln!("Cancelled the invite of {participant:?} to {folder:?}.");
            Ok(())
        }
        Command::Invite {
            folder,
            participant,
            wormhole: false,
            expires,
            json,
            ..
        } => {
            let expires = expires.unwrap_or(commands::invite_codes::DEFAULT_EXPIRY);
            output::invite(
                &commands::invite(&config, &folder, &participant, expires).await?,
                json,
            )
        }
        Command::Admit { folder } => {
            let folders = match folder {
                Some(f) => vec![f],
                None => config
                    .load_folders()?
                    .into_iter()
                    .filter(|c| c.is_admin())
                    .map(|c| c.name)
                    .collect(),
            };
            for f in folders {
                for who in commands::admit(&config, &f).await? {
                    eprintln!("Let {who:?} into {f:?}.");
                }
            }
            Ok(())
        }
        Command::Invite {
            folder,
            participant,
            wormhole: true,
            mailbox,
            read_only,
            json,
            ..
        } => {
            use mf_daemon::commands::invite_v1::{self, Mode};
            let mode = if read_only {
                Mode::ReadOnly
            } else {
                Mode::ReadWrite
            };
            let mailbox = mailbox.unwrap_or_else(|| config.mailbox_url());
            let pending =
                invite_v1::start_invite(&config, &folder, &participant, mode, &mailbox).await?;
            output::wormhole_code(&pending.code, &participant, json)?;
            output::invite_done(&pending.complete().await?, json)
        }
        Command::Join {
            code,
            local_dir,
            name,
            author,
            grid,
            tuning,
            mailbox,
            read_only,
            wait,
            json,
        } => {
            let opts = JoinOptions {
                code,
                local_dir: absolute(&local_dir)?,
                name,
                author,
                grid: absolute_grid(grid.choice())?,
                tuning: tuning.into(),
                mailbox,
                read_only,
                wait,
            };
            let info = match daemon(&config) {
                Some(api) => {
                    let req = mf_daemon::api::JoinRequest {
                        invite_code: opts.code,
                        local_path: opts.local_dir,
                        name: opts.name,
                        author: opts.author,
                        grid: opts.grid,
                        tuning: opts.tuning,
                        mailbox: opts.mailbox,
                        read_only: opts.read_only,
                        wait_s: opts.wait.map(|d| d.as_secs().max(1)),
                    };
                    api.join(&req).await.map_err(anyhow::Error::msg)?
                }
                None => commands::join(&config, opts).await?,
            };
            output::folder_added(&info, "Joined", json)
        }
        Command::Leave {
            name,
            really_delete_write_capability,
            json,
        } => {
            let out = match daemon(&config) {
                Some(api) => {
                    let req = mf_daemon::api::LeaveRequest {
                        really_delete_write_capability,
                    };
                    api.leave(&name, &req).await.map_err(anyhow::Error::msg)?
                }
                None => commands::leave(&config, &name, really_delete_write_capability)?,
            };
            output::leave(&out, json)
        }
        Command::Config { name, tuning, json } => {
            let t: Tuning = tuning.into();
            let info = match daemon(&config) {
                Some(api) => api.tune(&name, &t).await.map_err(anyhow::Error::msg)?,
                None => commands::setup::tune(&config, &name, &t)?,
            };
            output::folder_added(&info, "Changed", json)
        }
        Command::List { json } => output::list(&commands::list(&config)?, json),
        Command::Status {
            name,
            json,
            watch: false,
        } => output::status(&commands::status(&config, name.as_deref()).await?, json),
        Command::Status {
            name,
            json,
            watch: true,
        } => {
            let stop = shutdown_signal()?;
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            // On a terminal: progress bars; otherwise a frame a second.
            let mut bars = (!json && std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .then(output::StatusBars::default);
            loop {
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tick.tick() => {}
                }
                let folders = commands::status(&config, name.as_deref()).await?;
                match &mut bars {
                    Some(bars) => bars.show(&folders),
                    None => output::status_frame(&folders, json)?,
                }
            }
        }
        Command::Resolve { path, choice, json } => output::resolve(
            &commands::resolve(&config, &path, choice.resolution()).await?,
            json,
        ),
        Command::Scan { name, json } => output::nudged(
            &commands::nudge(&config, name.as_deref(), commands::Nudge::Scan).await?,
            "scan",
            json,
        ),
        Command::Poll { name, json } => output::nudged(
            &commands::nudge(&config, name.as_deref(), commands::Nudge::Poll).await?,
            "poll",
            json,
        ),
        Command::History { path, json } => {
            output::history(&commands::history(&config, &path).await?, json)
        }
        Command::Restore {
            path,
            version,
            to,
            json,
        } => output::restore(
            &commands::restore(&config, &path, version.as_deref(), to.as_deref()).await?,
            json,
        ),
        Command::Deleted {
            folder,
            since,
            json,
        } => output::deleted(&commands::deleted(&config, folder.as_deref(), since)?, json),
        Command::Verify { name, repair, json } => {
            let bar = progress_bar("verifying");
            let reports = commands::verify(&config, name.as_deref(), repair, &|done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await;
            bar.finish_and_clear();
            output::verify(&reports?, json)
        }
        Command::Convert {
            name,
            layout,
            force,
            json,
        } => {
            let report = commands::convert(&config, &name, layout, force).await?;
            // A running daemon follows at once rather than at its next poll.
            let running = config.daemon_running()
                && commands::nudge(&config, Some(&name), commands::Nudge::Poll)
                    .await
                    .is_ok();
            output::convert(&report, running, json)
        }
        Command::Gc {
            name,
            keep_versions_for,
            keep_versions,
            grace,
            dry_run,
            json,
        } => {
            let options = commands::GcOptions {
                keep_for: keep_versions_for,
                keep_versions,
                grace,
                dry_run,
            };
            output::gc(
                &commands::gc(&config, name.as_deref(), &options).await?,
                json,
            )
        }
        Command::Web { open, json } => {
            config.require_initialised()?;
            let client =
                mf_daemon::api::ApiClient::for_running_daemon(&config).ok_or_else(|| {
                    anyhow::anyhow!("the daemon is not running: start it with `magic-folder run`")
                })?;
            let url = client.web_login_url().await.map_err(anyhow::Error::msg)?;
            if open {
                // The URL holds a one-time code: it goes to the opener, not to a log.
                std::process::Command::new("xdg-open")
                    .arg(&url)
                    .status()
                    .map_err(|e| {
                        anyhow::anyhow!("cannot run xdg-open ({e}); open this URL: {url}")
                    })?;
                Ok(())
            } else if json {
                output::raw(format!("{}\n", serde_json::json!({ "url": url })).as_bytes())
            } else {
                output::raw(format!("{url}\n").as_bytes())
            }
        }
        Command::Run { metrics_listen } => {
            commands::run(&config, metrics_listen, shutdown_signal()?).await
        }
        Command::Service(ServiceCommand::Install { no_enable, json }) => output::service(
            &commands::service::install(&config, None, !no_enable)?,
            json,
        ),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "magic-folder", &mut out);
            output::raw(&out)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut out)?;
            output::raw(&out)
        }
    }
}

/// The running daemon's API, if one runs on this config directory: then
/// folders change through it (it applies the change at once), else in the
/// config directly (a daemon started later reads it).
fn daemon(config: &ConfigDir) -> Option<mf_daemon::api::ApiClient> {
    mf_daemon::api::ApiClient::for_running_daemon(config)
}

/// `p` made absolute against our working directory: the daemon that may
/// receive it has another.
fn absolute(p: &std::path::Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(p)?)
}

fn absolute_grid(g: Option<GridChoice>) -> anyhow::Result<Option<GridChoice>> {
    Ok(match g {
        Some(GridChoice::Embedded(d)) => Some(GridChoice::Embedded(absolute(&d)?)),
        Some(GridChoice::Tahoe(t)) if !t.contains("://") => Some(GridChoice::Tahoe(
            absolute(std::path::Path::new(&t))?
                .to_string_lossy()
                .into_owned(),
        )),
        other => other,
    })
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
fn progress_bar(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} ({eta} left)")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

/// A future that completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are
/// installed *now*, before the daemon announces itself in `api.url`: a
/// signal that arrives at any point after that stops it cleanly.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received");
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn resolve_needs_exactly_one_choice() {
        assert!(Cli::try_parse_from(["magic-folder", "resolve", "x"]).is_err());
        assert!(
            Cli::try_parse_from(["magic-folder", "resolve", "x", "--mine", "--theirs"]).is_err()
        );
        assert!(Cli::try_parse_from(["magic-folder", "resolve", "x", "--use", "bob"]).is_ok());
    }

    #[test]
    fn grid_choices_exclude_each_other() {
        let r = Cli::try_parse_from([
            "magic-folder",
            "create",
            "f",
            "d",
            "--grid",
            "g",
            "--tahoe",
            "t",
        ]);
        assert!(r.is_err());
    }
}
