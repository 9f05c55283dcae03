//! Printing command results: short sentences for people, JSON for programs.
//!
//! Data goes to stdout; advice and warnings go to stderr, so that
//! `code=$(magic-folder invite ...)` captures just the code.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use mf_daemon::api::{FolderState, FolderStatus};
use mf_daemon::commands::{
    ConvertReport, Deleted, Finding, FolderInfo, GcReport, History, InitOutcome, Invite,
    LeaveOutcome, ResolveOutcome, RestoreOutcome, VerifyReport,
};
use mf_daemon::convert::MoveState;
use serde::Serialize;

/// `println!` that hands a failed write back as an error instead of
/// panicking: a reader that goes away (`magic-folder list | head`) is a
/// closed pipe, which `main` ends quietly.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

fn json<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `init`.
pub fn init(o: &InitOutcome) -> anyhow::Result<()> {
    if o.created {
        outln!(
            "Initialised the config directory {}",
            o.config_dir.display()
        );
    } else {
        outln!(
            "The config directory {} is already initialised",
            o.config_dir.display()
        );
    }
    Ok(())
}

/// `create` and `join`.
pub fn folder_added(f: &FolderInfo, verb: &str, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(f);
    }
    outln!(
        "{verb} magic folder {:?} in {} as participant {:?} ({} grid).",
        f.name,
        f.local_path.display(),
        f.participant,
        f.grid
    );
    if f.running {
        eprintln!("The running daemon will start syncing it within a few seconds.");
    } else {
        eprintln!("Start syncing with: magic-folder run");
    }
    Ok(())
}

/// `invite`.
pub fn invite(i: &Invite, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(i);
    }
    let days = i.expires.saturating_sub(now_ms() / 1000) / 86_400;
    eprintln!(
        "Invite code for {:?} to join {:?}, good for {} (until it is used or cancelled). It is \
         SECRET: whoever holds it can read the whole folder and join as {:?}. Send it privately; \
         they run:\n  magic-folder join CODE LOCAL_DIR\nThey are let in when your daemon sees their \
         answer (or on `magic-folder admit`).",
        i.participant,
        i.folder,
        if days >= 1 { plural(days, "day") } else { "less than a day".to_owned() },
        i.participant
    );
    outln!("{}", i.code);
    Ok(())
}

/// `participants list`.
pub fn participants(
    list: &[mf_daemon::commands::participants::Participant],
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        return json(list);
    }
    // Capabilities only with --json: they are secrets.
    for p in list {
        outln!(
            "{}{}\t{}",
            p.name,
            if p.is_self { " (you)" } else { "" },
            p.mode
        );
    }
    Ok(())
}

/// `invite --wormhole`, first half: the code, as soon as it exists (one
/// JSON line with `--json`, so a program can read it before the end).
pub fn wormhole_code(code: &str, participant: &str, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        outln!("{}", serde_json::json!({"wormhole-code": code}));
        return Ok(());
    }
    eprintln!(
        "Wormhole code for {participant:?}. Give it to them privately; it works once, while this \
         command waits. They run:\n  magic-folder join CODE LOCAL_DIR --tahoe-node NODE --name FOLDER --author NAME\n\
         (or `magic-folder join` of magic-folder 24.3)"
    );
    outln!("{code}");
    Ok(())
}

/// `invite --wormhole`, second half: the invitee joined.
pub fn invite_done(
    done: &mf_daemon::commands::invite_v1::InviteDone,
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        return json(done);
    }
    eprintln!(
        "{:?} joined {:?} ({}).",
        done.participant,
        done.folder,
        match done.mode {
            mf_daemon::commands::invite_v1::Mode::ReadWrite => "read-write",
            mf_daemon::commands::invite_v1::Mode::ReadOnly => "read-only",
        }
    );
    Ok(())
}

/// `leave`.
pub fn leave(o: &LeaveOutcome, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(o);
    }
    match &o.local_path {
        Some(p) => outln!(
            "Left magic folder {:?}. Its files in {} were not touched.",
            o.name,
            p.display()
        ),
        None => outln!(
            "Left magic folder {:?}. Its files were not touched.",
            o.name
        ),
    }
    Ok(())
}

/// `list`.
pub fn list(folders: &[FolderInfo], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let map: BTreeMap<&str, &FolderInfo> =
            folders.iter().map(|f| (f.name.as_str(), f)).collect();
        return json(&map);
    }
    if folders.is_empty() {
        outln!("No magic folders. Create one with `magic-folder create NAME DIR`.");
        return Ok(());
    }
    for f in folders {
        outln!(
            "{}: {} (participant {}{}, {} grid, {} layout, {} content, {} snapshots, poll every {})",
            f.name,
            f.local_path.display(),
            f.participant,
            if f.is_admin { ", admin" } else { "" },
            f.grid,
            f.layout,
            f.content,
            f.snapshots,
            human_ms(f.poll_interval_ms)
        );
    }
    Ok(())
}

/// `status`.
/// One frame of `status --watch`: the screen cleared first on a terminal;
/// JSON as one document a line.
pub fn status_frame(folders: &[FolderStatus], as_json: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if as_json {
        let map: BTreeMap<&str, &FolderStatus> =
            folders.iter().map(|f| (f.name.as_str(), f)).collect();
        outln!("{}", serde_json::to_string(&map)?);
        return Ok(());
    }
    if std::io::stdout().is_terminal() {
        // Home the cursor and clear the screen (ANSI).
        write!(std::io::stdout(), "\x1b[H\x1b[2J")?;
    }
    status(folders, false)?;
    outln!();
    Ok(())
}

/// `status --watch` on a terminal: per folder a bar of the files in sync
/// out of those known (so an initial sync shows how far it is), and a bar
/// per transfer in bytes.
#[derive(Default)]
pub struct StatusBars {
    all: indicatif::MultiProgress,
    folders: BTreeMap<String, indicatif::ProgressBar>,
    transfers: BTreeMap<(String, String), indicatif::ProgressBar>,
}

impl StatusBars {
    /// Redraws the bars for this status.
    pub fn show(&mut self, folders: &[FolderStatus]) {
        let style = |template: &str| {
            indicatif::ProgressStyle::with_template(template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        };
        let mut live = std::collections::BTreeSet::new();
        for s in folders {
            let bar = self.folders.entry(s.name.clone()).or_insert_with(|| {
                let b = self.all.add(indicatif::ProgressBar::new(0));
                b.set_style(style("{prefix:12} {wide_bar} {pos}/{len} {msg}"));
                b.set_prefix(s.name.clone());
                b
            });
            let present = (s.files + s.directories) as u64;
            let waiting = (s.queued + s.in_flight + s.unpublished) as u64;
            bar.set_length(present + waiting);
            bar.set_position(present);
            bar.set_message(match s.state {
                FolderState::UpToDate => "up to date".to_owned(),
                FolderState::Syncing => format!("syncing, {waiting} to go"),
                FolderState::Offline => "offline".to_owned(),
                FolderState::Error => "error".to_owned(),
                FolderState::Stopped => "stopped".to_owned(),
            });
            for t in &s.transfers {
                let key = (s.name.clone(), t.path.clone());
                live.insert(key.clone());
                let tb = self.transfers.entry(key).or_insert_with(|| {
                    let b = self.all.add(indicatif::ProgressBar::new(t.bytes_total));
                    b.set_style(style(
                        "  {msg:30!} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}",
                    ));
                    let arrow = if t.direction == "upload" {
                        "↑"
                    } else {
                        "↓"
                    };
                    b.set_message(format!("{arrow} {}", t.path));
                    b
                });
                tb.set_length(t.bytes_total);
                tb.set_position(t.bytes_done);
            }
        }
        // Finished transfers leave.
        self.transfers.retain(|key, bar| {
            let keep = live.contains(key);
            if !keep {
                bar.finish_and_clear();
                self.all.remove(bar);
            }
            keep
        });
    }
}

pub fn status(folders: &[FolderStatus], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let map: BTreeMap<&str, &FolderStatus> =
            folders.iter().map(|f| (f.name.as_str(), f)).collect();
        return json(&map);
    }
    if folders.is_empty() {
        outln!("No magic folders.");
        return Ok(());
    }
    let now = now_ms();
    for (i, s) in folders.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        let state = match s.state {
            FolderState::UpToDate => "up to date",
            FolderState::Syncing => "syncing",
            FolderState::Offline => "offline",
            FolderState::Error => "error",
            FolderState::Stopped => "stopped",
        };
        match &s.state_reason {
            Some(why) if s.state != FolderState::Stopped => {
                outln!("{} ({}): {state} ({why})", s.name, s.local_path.display())
            }
            _ => outln!("{} ({}): {state}", s.name, s.local_path.display()),
        }
        if let Some(note) = &s.note {
            outln!("  note: {note}");
        }
        outln!(
            "  {}, {}, {} queued, {} in flight, {} not yet published",
            plural(s.files as u64, "file"),
            count(s.directories as u64, "directory", "directories"),
            s.queued,
            s.in_flight,
            s.unpublished
        );
        for t in &s.transfers {
            let pct = (t.bytes_done * 100)
                .checked_div(t.bytes_total)
                .unwrap_or(100);
            outln!(
                "  {} {}: {pct}% ({} of {})",
                if t.direction == "upload" {
                    "uploading"
                } else {
                    "downloading"
                },
                t.path,
                human_bytes(t.bytes_done),
                human_bytes(t.bytes_total)
            );
        }
        outln!(
            "  last scan: {}, last poll: {}",
            ago(now, s.last_scan),
            ago(now, s.last_poll)
        );
        if s.conflicts.is_empty() {
            outln!("  no conflicts");
        } else {
            outln!("  conflicts ({}):", s.conflicts.len());
            for c in &s.conflicts {
                // The copy's own name (shortened for a long file name).
                let copy = mf_core::relpath::RelPath::new(&c.path)
                    .map(|p| p.conflict_copy(&c.participant).to_string())
                    .unwrap_or_else(|_| format!("{}.conflict-{}", c.path, c.participant));
                outln!("    {} (copy: {copy})", c.path);
            }
        }
        if let Some(v) = &s.versions {
            outln!(
                "  versions area: {} old version{}, {} (kept {} days, at most {} per file)",
                v.files,
                if v.files == 1 { "" } else { "s" },
                human_bytes(v.bytes),
                v.max_age_s / 86_400,
                v.per_file
            );
        }
        let recent: Vec<_> = s.errors.iter().rev().take(5).collect();
        if !recent.is_empty() {
            outln!("  recent errors ({} in all):", s.errors.len());
            for e in recent {
                let path = e
                    .path
                    .as_deref()
                    .map(|p| format!("{p}: "))
                    .unwrap_or_default();
                outln!("    {} {path}{}", ago(now, Some(e.at)), e.message);
            }
        }
    }
    Ok(())
}

/// `resolve`.
pub fn resolve(o: &ResolveOutcome, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(o);
    }
    outln!(
        "Resolved {} in {:?}: kept {}'s version; moved {} conflict cop{} to the versions area.",
        o.path,
        o.folder,
        o.kept,
        o.removed_copies.len(),
        if o.removed_copies.len() == 1 {
            "y"
        } else {
            "ies"
        }
    );
    if !o.daemon_notified {
        eprintln!("The daemon is not running: the resolution is shared when it next starts.");
    }
    Ok(())
}

/// Bytes made for another program (a completion script, a manual page).
pub fn raw(bytes: &[u8]) -> anyhow::Result<()> {
    std::io::stdout().write_all(bytes)?;
    Ok(())
}

/// `service install`.
pub fn service(
    o: &mf_daemon::commands::service::ServiceOutcome,
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        return json(o);
    }
    outln!("Wrote {}.", o.unit_file.display());
    match (&o.enabled, &o.note) {
        (true, _) => outln!("The daemon now runs as a systemd user service (and starts at login)."),
        (false, Some(note)) => eprintln!("Not started: {note}"),
        (false, None) => {}
    }
    Ok(())
}

/// `scan` / `poll`.
pub fn nudged(folders: &[String], what: &str, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&serde_json::json!({ "asked": what, "folders": folders }));
    }
    match folders {
        [] => outln!("No magic folders."),
        [one] => outln!("Asked the daemon to {what} {one} now."),
        many => outln!("Asked the daemon to {what} {} folders now.", many.len()),
    }
    Ok(())
}

/// `history`. Versions that could not be read are listed, and make the
/// command fail: the history behind them is unknown.
pub fn history(h: &History, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        json(h)?;
    } else {
        let now = now_ms();
        outln!(
            "{} (folder {}): {} version{}, newest first",
            h.path,
            h.folder,
            h.versions.len(),
            if h.versions.len() == 1 { "" } else { "s" }
        );
        for v in &h.versions {
            let size = v.size.map(|s| format!("{s} B")).unwrap_or_default();
            let mut notes = Vec::new();
            if let Some(shown) = v.shown_as {
                notes.push(shown.to_owned());
            }
            match v.parents.len() {
                0 => notes.push("new".to_owned()),
                1 => notes.push(format!("from {}", v.parents[0])),
                _ => notes.push(format!("resolves {}", v.parents.join(", "))),
            }
            if v.diverged {
                notes.push("conflict arose here".to_owned());
            }
            outln!(
                "  {}  {:<9} {:>12}  {:<12} {:>9}  {}",
                v.id,
                v.kind,
                size,
                v.author,
                ago(now, Some((v.time.max(0) as u64) * 1000)),
                notes.join("; ")
            );
        }
    }
    if !h.problems.is_empty() {
        for p in &h.problems {
            eprintln!("problem: {p}");
        }
        anyhow::bail!(
            "{} version(s) of {} could not be read",
            h.problems.len(),
            h.path
        );
    }
    Ok(())
}

/// `restore`.
pub fn restore(o: &RestoreOutcome, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(o);
    }
    outln!(
        "Restored version {} of {} ({}) as {}.",
        o.version.id,
        o.folder,
        o.version.author,
        o.target
    );
    if !o.daemon_notified {
        eprintln!("The daemon is not running: the restored file is shared when it next starts.");
    }
    Ok(())
}

/// `deleted`.
pub fn deleted(list: &[Deleted], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(list);
    }
    if list.is_empty() {
        outln!("No deleted files.");
        return Ok(());
    }
    let now = now_ms();
    for d in list {
        outln!(
            "{:>9}  {}: {}  (deleted by {})",
            ago(now, Some((d.time.max(0) as u64) * 1000)),
            d.folder,
            d.path,
            d.by
        );
    }
    Ok(())
}

/// `verify`: a line per folder, then what was repaired and what is wrong;
/// fails if anything is.
pub fn verify(reports: &[VerifyReport], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        json(reports)?;
    } else if reports.is_empty() {
        outln!("No magic folders.");
    }
    let mut problems = 0;
    for r in reports {
        if !as_json {
            outln!(
                "{}: {} checked, {} read back ({}), {} compared with the files on disk{}: {}",
                r.folder,
                plural(r.versions, "version"),
                plural(r.files, "file"),
                human_bytes(r.bytes),
                r.compared,
                if r.changed_locally > 0 {
                    format!(" ({} changed since they last synced)", r.changed_locally)
                } else {
                    String::new()
                },
                if r.ok() {
                    "OK".to_owned()
                } else {
                    plural(r.problems.len() as u64, "problem")
                }
            );
            for f in &r.repaired {
                outln!("  repaired: {}", finding(f));
            }
            for f in &r.problems {
                outln!("  problem: {}", finding(f));
            }
        }
        problems += r.problems.len();
    }
    if problems > 0 {
        anyhow::bail!("{} found", plural(problems as u64, "problem"));
    }
    Ok(())
}

/// `gc`: a paragraph per grid; fails if a problem stopped it.
pub fn convert(r: &ConvertReport, daemon_running: bool, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(r);
    }
    if r.recorded_now {
        outln!(
            "{}: converted from the {} to the {}.",
            r.folder,
            r.from,
            r.to
        );
    } else {
        outln!("{}: already in the {}.", r.folder, r.to);
    }
    let mut waiting = 0;
    for (name, progress) in &r.participants {
        let said = match progress {
            MoveState::Moved => "moved".to_owned(),
            MoveState::LinkedNow => "moved (its new directory is linked now)".to_owned(),
            MoveState::Empty => "nothing published yet".to_owned(),
            MoveState::Waiting => {
                waiting += 1;
                "not moved yet: its daemon moves it when it next polls".to_owned()
            }
            MoveState::Problem(why) => format!("problem: {why}"),
        };
        outln!("  {name}: {said}");
    }
    if !daemon_running {
        outln!("Your own directory moves when your daemon next runs (`magic-folder run`).");
    }
    if waiting > 0 {
        outln!(
            "Run `magic-folder convert {}` again later to link the directories that moved.",
            r.folder
        );
    }
    outln!("({:.1} s)", r.seconds);
    Ok(())
}

pub fn gc(reports: &[GcReport], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        json(reports)?;
    } else if reports.is_empty() {
        outln!("No folders on an embedded grid.");
    }
    let mut problems = 0;
    for r in reports {
        if !as_json {
            outln!(
                "{} (folder{} {}): {} walked, {} outside the retention",
                r.grid.display(),
                if r.folders.len() == 1 { "" } else { "s" },
                r.folders.join(", "),
                plural(r.versions, "version"),
                r.versions_pruned
            );
            outln!(
                "  {} {} of {} ({}){}{}",
                if r.dry_run { "would remove" } else { "removed" },
                plural(r.removed, "object"),
                r.objects,
                human_bytes(r.bytes),
                if r.spared > 0 {
                    format!(
                        "; {} spared (written or uploaded again within the grace)",
                        r.spared
                    )
                } else {
                    String::new()
                },
                if r.orphans_collected {
                    "; unreferenced objects included"
                } else {
                    ""
                }
            );
            for n in &r.notes {
                outln!("  note: {n}");
            }
            for p in &r.problems {
                outln!("  problem: {p}");
            }
        }
        problems += r.problems.len();
    }
    if problems > 0 {
        anyhow::bail!("{} found", plural(problems as u64, "problem"));
    }
    Ok(())
}

fn finding(f: &Finding) -> String {
    match (&f.path, &f.version) {
        (Some(p), Some(v)) => format!("{p} (version {v}): {}", f.what),
        (Some(p), None) => format!("{p}: {}", f.what),
        _ => f.what.clone(),
    }
}

fn plural(n: u64, what: &str) -> String {
    count(n, what, &format!("{what}s"))
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn human_ms(ms: u64) -> String {
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

fn ago(now: u64, t: Option<u64>) -> String {
    match t {
        None => "never".to_owned(),
        Some(t) => {
            let s = now.saturating_sub(t) / 1000;
            match s {
                0..=59 => format!("{s}s ago"),
                60..=3599 => format!("{}m ago", s / 60),
                3600..=86_399 => format!("{}h ago", s / 3600),
                _ => format!("{}d ago", s / 86_400),
            }
        }
    }
}
