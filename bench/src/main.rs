//! `mf-bench`: Magic Folder's benchmarks, each reported next to this
//! machine's limits measured in the same run.
//!
//! ```text
//! cargo run --release -p mf-bench -- grid [--size-mib 1024] [--files 10000]
//!     [--file-kib 4] [--concurrency 8] [--dir PATH] [--json PATH]
//! cargo build --release -p magic-folder -p mf-bench
//! scripts/bench-setup.sh    # installs Syncthing, which `sync` measures too
//! target/release/mf-bench sync [--only W1,W2,W3,W4,W5,idle,rescan] [--quick]
//!     [--tuned] [--dir PATH] [--json PATH] [--bin PATH] [--poll-interval 1s]
//!     [--pending-delay 200ms] [--idle-seconds N]
//! target/release/mf-bench tahoe [--quick] [--only edit,big,bigedit,files,deletions] [--files N]
//!     [--dir PATH] [--json PATH] [--bin PATH]   (a local Tahoe-LAFS grid)
//! target/release/mf-bench tahoe-scale [--quick] [--only flat,sharded]
//!     [--dir PATH] [--json PATH] [--bin PATH]   (a large folder, per layout)
//! target/release/mf-bench upkeep [--quick] [--only history,verify]
//!     [--dir PATH] [--json PATH] [--bin PATH]   (history and verify)
//! ```
//!
//! Each subcommand lives in its own module (`grid`: the embedded grid alone;
//! `sync`: two real daemons syncing, with `world` starting them, next to
//! two Syncthing instances that `syncthing` starts) and shares
//! the helpers in `limits` (machine limits), `phase` (running a measured
//! phase in a child process, so each phase's peak RSS is its own), `data`
//! (test contents, flushing, hashing) and `report` (the table and the JSON
//! file).

mod data;
mod grid;
mod limits;
mod phase;
mod report;
mod sync;
mod syncthing;
mod tahoe;
mod upkeep;
mod world;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: mf-bench grid [--size-mib N] [--files N] [--file-kib N] \
[--concurrency N] [--dir PATH] [--json PATH]
       mf-bench sync [--only W1,W2,W3,W4,W5,idle,rescan] [--quick] [--tuned] [--dir PATH] \
[--json PATH] [--bin PATH] [--poll-interval 1s] [--pending-delay 200ms] [--idle-seconds N]
         (our daemons at their defaults, Syncthing tuned in the same run if installed: \
scripts/bench-setup.sh; --tuned adds a column of ours with --poll-interval 1s \
--pending-delay 200ms, or the values given)
       mf-bench tahoe [--quick] [--only edit,big,bigedit,files,deletions] [--files N] [--dir PATH] [--json PATH] \
[--bin PATH] [--poll-interval 1s] [--pending-delay 200ms]
       mf-bench tahoe-scale [--quick] [--only flat,sharded] [--dir PATH] [--json PATH] \
[--bin PATH] (one change in a 100,000-entry folder on Tahoe, per personal-directory layout)
       mf-bench upkeep [--only history,verify] [--quick] [--dir PATH] [--json PATH] [--bin PATH]";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    match args.first().map(String::as_str) {
        Some("grid") => grid::run(&Options::parse(&args[1..])?),
        Some("sync") => sync::run(&sync::SyncOptions::parse(&args[1..])?),
        Some("tahoe") => tahoe::run(&tahoe::options(&args[1..])?),
        Some("tahoe-scale") => tahoe::scale::run(&tahoe::scale::options(&args[1..])?),
        Some("upkeep") => upkeep::run(&args[1..]),
        // A measured phase, in a child process started by `phase::run`.
        Some(phase::CHILD_ARG) => phase::child_main(&args[1..]),
        _ => bail!("{USAGE}"),
    }
}

/// Command-line options of `grid`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Size of the large file, in MiB.
    pub size_mib: u64,
    /// Number of small files.
    pub files: usize,
    /// Size of each small file, in KiB.
    pub file_kib: usize,
    /// Small-file operations in flight at once.
    pub concurrency: usize,
    /// Working directory (created, and removed afterwards unless given).
    pub dir: Option<std::path::PathBuf>,
    /// Where to write the figures as JSON.
    pub json: Option<std::path::PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            size_mib: 1024,
            files: 10_000,
            file_kib: 4,
            concurrency: 8,
            dir: None,
            json: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .with_context(|| format!("{flag} needs a value\n{USAGE}"))
            };
            match flag.as_str() {
                "--size-mib" => o.size_mib = value()?.parse().context("--size-mib")?,
                "--files" => o.files = value()?.parse().context("--files")?,
                "--file-kib" => o.file_kib = value()?.parse().context("--file-kib")?,
                "--concurrency" => o.concurrency = value()?.parse().context("--concurrency")?,
                "--dir" => o.dir = Some(value()?.into()),
                "--json" => o.json = Some(value()?.into()),
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        if o.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        Ok(o)
    }
}
