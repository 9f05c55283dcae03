//! `mf-bench tahoe-scale`: what one change costs in a large folder on a real
//! Tahoe-LAFS grid, in each personal-directory layout (`flat`, 24.3's, and
//! `sharded`; see `mf_daemon::personal`).
//!
//! For each layout and size (1,000 entries, then 100,000 [10,000 with
//! `--quick`]) alice creates a folder, bob joins it, and before their
//! daemons start alice's personal directory is filled with that many
//! entries under `bulk/`, written in the layout's shape through alice's
//! node and all naming one real snapshot. Bob's `.magic-folder-ignore`
//! leaves `bulk/` out, so bob lists and decodes every entry as a real
//! reader does — the grid's cost of a large folder — but never downloads
//! them. Then, at the grid's default settings of `mf-bench tahoe` (poll 1 s,
//! pending delay 200 ms):
//!
//! * **idle**: the Tahoe nodes' CPU (all of them) per poll of bob's over
//!   [`IDLE`] of nothing happening, and per second;
//! * **edit**: a 1 KiB edit of a 4 KiB file at alice until byte-identical at
//!   bob (median and max of 5 [3]), as `mf-bench tahoe`'s edit;
//! * **raw**, once the daemons stop: the Tahoe requests of one change in the
//!   layout, issued directly (median of 3): the writer's (flat: `set_children`
//!   of one entry; sharded: the recent shard's new `mkdir-immutable` — the
//!   writer keeps its entries — and the root's `set_children` of its link)
//!   and the reader's (flat: the listing; sharded: the root's listing and the
//!   recent shard's);
//! * bob's peak RSS.
//!
//! The third row kind, `converted`, is a flat folder of that size that alice
//! converts (`magic-folder convert`) once both daemons run: **convert** is the
//! time from the command until both daemons have followed the folder to the
//! sharded layout (alice moving her N entries into shards); once bob has
//! read her new directory (whole, once, as after any restart), idle, edit
//! and raw are measured as for the others, in the folder as converted.
//!
//! The targets (issue "Tahoe at scale"): at 100,000 entries an edit shows at
//! the other participant in ≤ 2 s median, and an idle poll costs the nodes
//! within 2× of a 1,000-entry folder's.

use mf_daemon::config::{ConfigDir, FolderConfig};
use mf_daemon::personal::{
    folder_tag, lay_out, read_shard, shard_header, shard_link, Layout, ShardId, SHARD_HEADER,
};

use super::*;

const USAGE: &str =
    "usage: mf-bench tahoe-scale [--quick] [--only flat,sharded,converted] [--dir PATH] \
[--json PATH] [--bin PATH] [--poll-interval 1s] [--pending-delay 200ms]";

const LAYOUTS: [&str; 3] = ["flat", "sharded", "converted"];

/// How long the daemons are left idle while the nodes' CPU is measured.
const IDLE: Duration = Duration::from_secs(20);

/// Entries written per `set_children` when filling a flat directory (one
/// body of 100,000 entries is ~20 MB of JSON).
const FLAT_FILL_CHUNK: usize = 25_000;

/// Parses the arguments after `tahoe-scale`.
pub fn options(args: &[String]) -> Result<RunOptions> {
    RunOptions::parse(args, &LAYOUTS, USAGE, |_, _| Ok(false))
}

/// One layout at one size.
#[derive(Default)]
struct Row {
    layout: &'static str,
    entries: usize,
    fill_s: f64,
    convert_s: Option<f64>,
    idle_polls: usize,
    idle_node_cpu_s: f64,
    edit: Option<(f64, f64)>,
    raw_write_s: f64,
    raw_read_s: f64,
    bob_peak_rss_mib: f64,
    failure: Option<String>,
}

impl Row {
    fn cpu_per_poll_ms(&self) -> f64 {
        self.idle_node_cpu_s / self.idle_polls.max(1) as f64 * 1000.0
    }

    fn to_json(&self) -> Value {
        json!({
            "layout": self.layout,
            "entries": self.entries,
            "fill_s": self.fill_s,
            "convert_s": self.convert_s,
            "idle_s": IDLE.as_secs_f64(),
            "idle_polls": self.idle_polls,
            "idle_node_cpu_s": self.idle_node_cpu_s,
            "idle_node_cpu_per_poll_ms": self.cpu_per_poll_ms(),
            "edit_median_s": self.edit.map(|e| e.0),
            "edit_max_s": self.edit.map(|e| e.1),
            "raw_change_write_s": self.raw_write_s,
            "raw_change_read_s": self.raw_read_s,
            "bob_peak_rss_mib": self.bob_peak_rss_mib,
            "failure": self.failure,
        })
    }
}

/// Runs the benchmark and prints (and optionally saves) the figures.
pub fn run(o: &RunOptions) -> Result<()> {
    crate::world::in_work_dir(o.dir.as_deref(), "tahoe-scale", |work| run_in(o, work))
}

fn run_in(o: &RunOptions, work: &Path) -> Result<()> {
    let large = if o.quick { 10_000 } else { 100_000 };
    let edits = if o.quick { 3 } else { 5 };
    let (grid, node_a, node_b) = start_grid()?;
    let raw = Raw {
        a: node_a.grid()?,
        b: node_b.grid()?,
        personal: Mutex::new(None),
    };
    let cpu = TahoeCpu::new(grid.root());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The one snapshot every bulk entry names (a deletion: no content).
    let snapshot = rt.block_on(raw.snapshot(&Ops::default(), "bulk/f", None, 1))?;

    let mut rows = Vec::new();
    for layout in LAYOUTS.into_iter().filter(|l| o.wants(l)) {
        for entries in [1_000, large] {
            eprintln!("{layout}, {} entries:", thousands(entries));
            let mut row = Row {
                layout,
                entries,
                ..Row::default()
            };
            let root = work.join(format!("{layout}-{entries}"));
            let scale = Scale {
                o,
                rt: &rt,
                raw: &raw,
                cpu: &cpu,
                snapshot: &snapshot,
            };
            if let Err(e) = scale.measure(&mut row, &root, (node_a.dir(), node_b.dir()), edits) {
                eprintln!("  failed: {e:#}");
                row.failure = Some(format!("{e:#}"));
            }
            rows.push(row);
        }
    }
    drop(node_a);
    drop(node_b);
    drop(grid);
    report(o, &rows)
}

/// What every measurement needs.
struct Scale<'a> {
    o: &'a RunOptions,
    rt: &'a tokio::runtime::Runtime,
    raw: &'a Raw,
    cpu: &'a TahoeCpu,
    snapshot: &'a Capability,
}

impl Scale<'_> {
    fn measure(
        &self,
        row: &mut Row,
        root: &Path,
        (node_a, node_b): (&Path, &Path),
        edits: usize,
    ) -> Result<()> {
        let converted = row.layout == "converted";
        let layout = if converted { "flat" } else { row.layout };
        let mut pair = Pair::create(self.o, root, node_a, node_b, &["--layout", layout])?;
        fs::write(pair.bob.dir.join(".magic-folder-ignore"), "bulk/**\n")?;
        let alice_config = ConfigDir::at(pair.alice.config_dir());
        let mut cfg = alice_config.load_folder(FOLDER)?;
        let names: Vec<String> = (0..row.entries).map(|i| format!("bulk@_f{i:06}")).collect();
        let t = Instant::now();
        self.rt.block_on(self.fill(layout, &cfg, &names))?;
        row.fill_s = t.elapsed().as_secs_f64();
        eprintln!("  filled in {:.1} s; starting the daemons", row.fill_s);
        pair.start()?;
        if converted {
            eprintln!("  converting");
            let t = Instant::now();
            pair.alice.cli(&["convert", FOLDER, "--force"])?;
            let both = [alice_config.clone(), ConfigDir::at(pair.bob.config_dir())];
            let deadline = Instant::now() + Duration::from_secs(1800);
            while !both.iter().all(|c| {
                c.load_folder(FOLDER)
                    .is_ok_and(|f| f.layout == Layout::Sharded && f.moved_from.is_none())
            }) {
                if Instant::now() > deadline {
                    bail!("the daemons did not follow the conversion within 30 minutes");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            row.convert_s = Some(t.elapsed().as_secs_f64());
            eprintln!(
                "  both daemons followed in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            // Bob reads alice's new directory whole once (as after any
            // restart), at a poll that starts after her move: the second
            // poll he completes from now.
            let last_poll = || pair.bob.status().and_then(|s| s["last_poll"].as_u64());
            let mut seen = last_poll();
            for _ in 0..2 {
                while last_poll() == seen {
                    if Instant::now() > deadline {
                        bail!("bob did not poll after the conversion within 30 minutes");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                seen = last_poll();
            }
            pair.settle(Duration::from_secs(600))?;
            cfg = alice_config.load_folder(FOLDER)?;
        }

        eprintln!("  idle for {IDLE:?}");
        let wall = SystemTime::now();
        let cpu0 = self.cpu.now();
        std::thread::sleep(IDLE);
        row.idle_node_cpu_s = self.cpu.now() - cpu0;
        let t0 = epoch_s(wall);
        let polls = summarise(&parse_log(pair.bob.log())?, t0, t0 + IDLE.as_secs_f64());
        row.idle_polls = polls["Poll"]["count"].as_u64().unwrap_or(0) as usize;

        eprintln!("  {edits} edits");
        let f = pair.edits(
            "edit",
            "1 KiB edit of a 4 KiB file",
            &EditSpec::small(edits),
            self.cpu,
        )?;
        if let Some(failure) = f.failure {
            bail!("{failure}");
        }
        let times: Vec<f64> = serde_json::from_value(f.extra["samples_s"].clone())?;
        row.edit = Some(median_max(&times));
        row.bob_peak_rss_mib = peak_rss_mib(&pair.bob);
        pair.finish(self.o.dir.is_some());

        eprintln!("  raw requests of one change");
        let (w, r) = self
            .rt
            .block_on(self.raw_change(if converted { "sharded" } else { layout }, &cfg))?;
        (row.raw_write_s, row.raw_read_s) = (w, r);
        Ok(())
    }

    /// Writes `names` into alice's personal directory in `layout`'s shape.
    async fn fill(&self, layout: &str, cfg: &FolderConfig, names: &[String]) -> Result<()> {
        let entry = DirEntry::new(self.snapshot.clone());
        if layout == "flat" {
            for chunk in names.chunks(FLAT_FILL_CHUNK) {
                let children = chunk.iter().map(|n| (n.clone(), entry.clone())).collect();
                self.raw
                    .a
                    .set_children(&cfg.personal_cap, children, Replace::Yes)
                    .await?;
            }
            return Ok(());
        }
        let tag = folder_tag(&cfg.collective_cap)?;
        let all: DirChildren = names.iter().map(|n| (n.clone(), entry.clone())).collect();
        let grid = &self.raw.a;
        let links: DirChildren = stream::iter(lay_out(all))
            .map(|(n, mut entries)| {
                let tag = tag.clone();
                async move {
                    entries.insert(SHARD_HEADER.to_owned(), shard_header(n, &tag));
                    let cap = grid.create_immutable_dir(entries).await?;
                    Ok::<_, anyhow::Error>((shard_link(n), DirEntry::new(cap)))
                }
            })
            .buffer_unordered(RAW_CONCURRENCY)
            .try_collect()
            .await?;
        grid.set_children(&cfg.personal_cap, links, Replace::Yes)
            .await?;
        Ok(())
    }

    /// The Tahoe requests of one new entry in `layout`, writer's and
    /// reader's seconds (medians of 3).
    async fn raw_change(&self, layout: &str, cfg: &FolderConfig) -> Result<(f64, f64)> {
        let (a, b) = (&self.raw.a, &self.raw.b);
        let read_cap = mf_grid::read_only(&cfg.personal_cap)?;
        let tag = folder_tag(&cfg.collective_cap)?;
        let (mut writes, mut reads) = (Vec::new(), Vec::new());
        let mut recent = DirChildren::new();
        for i in 0..3 {
            let name = format!("raw{i}");
            let mut one = DirChildren::new();
            one.insert(name.clone(), DirEntry::new(self.snapshot.clone()));
            let t = Instant::now();
            if layout == "flat" {
                a.set_children(&cfg.personal_cap, one, Replace::Yes).await?;
                writes.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                b.list_changed(&read_cap, None).await?;
                reads.push(t.elapsed().as_secs_f64());
                continue;
            }
            // The writer knows its recent shard's entries (the daemon
            // keeps them): it writes the shard anew and swaps its link.
            recent.extend(one);
            let mut entries = recent.clone();
            entries.insert(SHARD_HEADER.to_owned(), shard_header(ShardId::RECENT, &tag));
            let shard = a.create_immutable_dir(entries).await?;
            let mut swap = DirChildren::new();
            swap.insert(shard_link(ShardId::RECENT), DirEntry::new(shard.clone()));
            a.set_children(&cfg.personal_cap, swap, Replace::Yes)
                .await?;
            writes.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            b.list_changed(&read_cap, None).await?;
            read_shard(b, ShardId::RECENT, &shard, &tag).await?;
            reads.push(t.elapsed().as_secs_f64());
        }
        Ok((median_max(&writes).0, median_max(&reads).0))
    }
}

fn report(o: &RunOptions, rows: &[Row]) -> Result<()> {
    println!();
    println!(
        "One change in a large folder on a local Tahoe-LAFS 1.20 grid (3 storage nodes, k=2 \
         happy=3 N=3), per layout, this machine, same run (poll interval {}, pending delay {}):",
        o.poll_interval(),
        o.pending_delay()
    );
    let header = [
        "layout",
        "entries",
        "edit at bob (median / max)",
        "idle: nodes' CPU per poll",
        "raw change: write + read",
        "convert (both followed)",
        "bob peak RSS",
        "target",
    ];
    let small = |layout: &str| {
        rows.iter()
            .find(|r| r.layout == layout && r.entries == 1_000 && r.failure.is_none())
    };
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            if let Some(f) = &r.failure {
                return vec![
                    r.layout.into(),
                    thousands(r.entries),
                    format!("FAILED: {f}"),
                ];
            }
            let target = if r.entries > 1_000 {
                let edit_ok = r.edit.is_some_and(|e| e.0 <= 2.0);
                let idle_ratio = small(r.layout).map(|s| r.cpu_per_poll_ms() / s.cpu_per_poll_ms());
                format!(
                    "edit ≤ 2 s: {}; idle ≤ 2× 1,000's: {}",
                    if edit_ok { "met" } else { "MISSED" },
                    match idle_ratio {
                        Some(x) if x <= 2.0 => format!("met ({x:.1}×)"),
                        Some(x) => format!("MISSED ({x:.1}×)"),
                        None => "-".into(),
                    }
                )
            } else {
                String::new()
            };
            vec![
                r.layout.into(),
                thousands(r.entries),
                r.edit
                    .map_or("-".into(), |(m, x)| format!("{m:.2} s / {x:.2} s")),
                format!("{:.0} ms ({} polls)", r.cpu_per_poll_ms(), r.idle_polls),
                format!("{:.2} s + {:.2} s", r.raw_write_s, r.raw_read_s),
                r.convert_s.map_or("-".into(), |c| format!("{c:.1} s")),
                format!("{:.0} MiB", r.bob_peak_rss_mib),
                target,
            ]
        })
        .collect();
    print_columns(&header, &lines);
    if let Some(path) = &o.json {
        write_json(
            path,
            &json!({
                "benchmark": "tahoe-scale",
                "params": {
                    "quick": o.quick,
                    "poll_interval": o.poll_interval(),
                    "pending_delay": o.pending_delay(),
                    "grid": { "storage_nodes": 3, "shares_needed": 2, "shares_happy": 3, "shares_total": 3 },
                    "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                },
                "results": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            }),
        )?;
    }
    Ok(())
}
