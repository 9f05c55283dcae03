//! Printing results: an aligned table for people, JSON for tools.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::phase::Measured;

/// Units a row's throughput is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// MiB per second.
    MibPerS,
    /// Files per second.
    FilesPerS,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::MibPerS => "MiB/s",
            Unit::FilesPerS => "files/s",
        }
    }

    fn of(self, m: &Measured) -> f64 {
        match self {
            Unit::MibPerS => m.mib_per_s(),
            Unit::FilesPerS => m.files_per_s(),
        }
    }
}

/// One benchmark next to the limit it is judged against.
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Its figures.
    pub measured: Measured,
    /// Throughput unit.
    pub unit: Unit,
    /// Name of the limit.
    pub limit_name: String,
    /// The limit, in the same unit.
    pub limit: f64,
    /// Minimum acceptable ratio, if there is a target.
    pub target_ratio: Option<f64>,
    /// Maximum acceptable peak RSS in MiB, if there is a target.
    pub target_rss_mib: Option<f64>,
}

impl Row {
    fn value(&self) -> f64 {
        self.unit.of(&self.measured)
    }

    fn ratio(&self) -> f64 {
        self.value() / self.limit
    }

    fn rss_mib(&self) -> f64 {
        self.measured.peak_rss_kib as f64 / 1024.0
    }

    fn verdict(&self) -> &'static str {
        let ratio_ok = self.target_ratio.is_none_or(|t| self.ratio() >= t);
        let rss_ok = self.target_rss_mib.is_none_or(|t| self.rss_mib() <= t);
        match (
            self.target_ratio.is_some() || self.target_rss_mib.is_some(),
            ratio_ok && rss_ok,
        ) {
            (false, _) => "",
            (true, true) => "ok",
            (true, false) => "MISSED",
        }
    }

    /// The row as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "value": self.value(),
            "unit": self.unit.label(),
            "seconds": self.measured.seconds,
            "bytes": self.measured.bytes,
            "files": self.measured.files,
            "limit_name": self.limit_name,
            "limit": self.limit,
            "ratio": self.ratio(),
            "peak_rss_mib": self.rss_mib(),
            "target_ratio": self.target_ratio,
            "target_peak_rss_mib": self.target_rss_mib,
            "verdict": self.verdict(),
            "extra": self.measured.extra,
        })
    }
}

/// Prints rows as an aligned table.
pub fn print_table(title: &str, rows: &[Row]) {
    println!("{title}");
    let header = [
        "benchmark",
        "ours",
        "limit (same run)",
        "ratio",
        "peak RSS",
        "target",
    ];
    let lines: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let target = match (r.target_ratio, r.target_rss_mib) {
                (Some(t), Some(m)) => format!("≥{t:.2}, ≤{m:.0} MiB: {}", r.verdict()),
                (Some(t), None) => format!("≥{t:.2}: {}", r.verdict()),
                (None, Some(m)) => format!("≤{m:.0} MiB: {}", r.verdict()),
                (None, None) => String::new(),
            };
            [
                r.name.clone(),
                format!("{:.0} {}", r.value(), r.unit.label()),
                format!("{} {:.0} {}", r.limit_name, r.limit, r.unit.label()),
                format!("{:.2}", r.ratio()),
                format!("{:.1} MiB", r.rss_mib()),
                target,
            ]
        })
        .collect();
    print_columns(&header, &lines);
}

/// Prints `lines` under `header` as left-aligned columns two spaces apart.
pub fn print_columns<L: AsRef<[String]>>(header: &[&str], lines: &[L]) {
    let width = |i: usize| {
        lines
            .iter()
            .map(|l| l.as_ref()[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let fmt = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", fmt(header.to_vec()));
    for l in lines {
        println!("{}", fmt(l.as_ref().iter().map(String::as_str).collect()));
    }
}

/// Writes a benchmark's figures as pretty-printed JSON.
pub fn write_json(path: &Path, doc: &Value) -> Result<()> {
    fs::write(path, serde_json::to_string_pretty(doc)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("figures written to {}", path.display());
    Ok(())
}
