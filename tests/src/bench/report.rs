//! Statistics over runs, the machine description, and the report written as a table on
//! stdout, `REPORT.md` and `report.json`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde_json::{Value, json};

/// Summary of a sample (durations in milliseconds, or any other unit).
#[derive(Clone, Debug)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// `None` for an empty sample. Percentiles interpolate linearly between closest ranks.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Summary {
            n: v.len(),
            min: v[0],
            median: percentile(&v, 0.5),
            p90: percentile(&v, 0.9),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }

    pub fn json(&self) -> Value {
        json!({
            "n": self.n, "min": round1(self.min), "median": round1(self.median),
            "p90": round1(self.p90), "max": round1(self.max), "mean": round1(self.mean),
        })
    }

    /// `median / p90 / max` of milliseconds, shown in seconds or milliseconds.
    pub fn show_ms(&self) -> String {
        format!(
            "{} / {} / {}",
            show_ms(self.median),
            show_ms(self.p90),
            show_ms(self.max)
        )
    }
}

/// `x` to one decimal, for the JSON report.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The `p` quantile of a sorted, non-empty sample (linear interpolation).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// Milliseconds for humans: `15.03 s` from one second up, else `412.5 ms`.
pub fn show_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// One line of the summary table.
#[derive(Clone, Debug)]
pub struct Row {
    pub metric: String,
    pub measured: String,
    pub target: String,
    /// `None`: no target, or no verdict in this mode.
    pub met: Option<bool>,
}

impl Row {
    fn verdict(&self, judged: bool) -> &'static str {
        match (judged, self.met) {
            (false, _) => "n/a (smoke)",
            (true, None) => "—",
            (true, Some(true)) => "yes",
            (true, Some(false)) => "NO",
        }
    }
}

/// Where and when the bench ran.
pub struct RunInfo {
    pub date: String,
    pub cpu_model: String,
    pub nproc: usize,
    pub kernel: String,
    pub mem_total: String,
    pub git_commit: String,
    pub command: String,
    pub mode: String,
}

impl RunInfo {
    pub fn collect(mode: &str) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or_else(
                || "unknown".to_owned(),
                |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
            );
        let command = std::env::args()
            .map(|a| {
                if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                    format!("'{}'", a.replace('\'', r"'\''"))
                } else {
                    a
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        RunInfo {
            date: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string()),
            cpu_model,
            nproc,
            kernel,
            mem_total,
            git_commit: git_commit(),
            command,
            mode: mode.to_owned(),
        }
    }
}

/// `git rev-parse --short HEAD`, and the paths of the sidecar, the controller, the bench and
/// the Cargo files that differ from it.
fn git_commit() -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let commit = commit.trim().to_owned();
            let changed: Vec<String> = run(&[
                "status",
                "--porcelain",
                "--",
                "sidecar",
                "controller",
                "tests",
                "Cargo.toml",
                "Cargo.lock",
            ])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.get(3..).map(str::to_owned))
            .collect();
            if changed.is_empty() {
                commit
            } else {
                format!("{commit} plus uncommitted: {}", changed.join(", "))
            }
        }
        None => "unknown (not a git checkout)".to_owned(),
    }
}

/// The summary table as fixed-width text.
pub fn table_text(rows: &[Row], judged: bool) -> String {
    let headers = ["metric", "measured", "target", "met?"];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.metric.clone(),
                r.measured.clone(),
                r.target.clone(),
                r.verdict(judged).to_owned(),
            ]
        })
        .collect();
    let mut widths = headers.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 4]| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            let _ = write!(s, "{c}{}  ", " ".repeat(pad));
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers);
    out += &line(widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str));
    for row in &cells {
        out += &line(row.each_ref().map(String::as_str));
    }
    out
}

/// A section of `REPORT.md` after the results: a title and its Markdown (a figure).
pub struct Section {
    pub title: String,
    pub markdown: String,
}

/// Writes `REPORT.md` and `report.json` into `dir` (created if missing); `sections` follow
/// the results table.
pub fn write(
    dir: &Path,
    ctx: &RunInfo,
    rows: &[Row],
    judged: bool,
    details: &serde_json::Map<String, Value>,
    notes: &[String],
    sections: &[Section],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let mut md = String::new();
    md += "# leader-sidecar benchmark\n\n";
    md += "Generated by `tests/src/bin/bench.rs`; see its doc comment for the method.\n\n";
    let _ = writeln!(md, "- date: {}", ctx.date);
    let _ = writeln!(
        md,
        "- machine: {}, {} CPUs (nproc), {} RAM, Linux {}",
        ctx.cpu_model, ctx.nproc, ctx.mem_total, ctx.kernel
    );
    let _ = writeln!(md, "- git commit: {}", ctx.git_commit);
    let _ = writeln!(md, "- command: `{}`", ctx.command);
    let _ = writeln!(md, "- mode: {}", ctx.mode);
    md += "\n## Results\n\n| metric | measured | target | met? |\n|---|---|---|---|\n";
    for r in rows {
        let verdict = match r.verdict(judged) {
            "NO" => "**NO**",
            v => v,
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            r.metric, r.measured, r.target, verdict
        );
    }
    for section in sections {
        let _ = write!(
            md,
            "\n## {}\n\n{}\n",
            section.title,
            section.markdown.trim_end()
        );
    }
    if !notes.is_empty() {
        md += "\n## Notes\n\n";
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md += "\n## Details\n\nPer-run figures and settings, as in `report.json`.\n\n```json\n";
    md += &serde_json::to_string_pretty(details)?;
    md += "\n```\n";
    let md_path = dir.join("REPORT.md");
    std::fs::write(&md_path, md).with_context(|| format!("cannot write {}", md_path.display()))?;

    let report = json!({
        "date": ctx.date,
        "machine": {
            "cpu_model": ctx.cpu_model, "nproc": ctx.nproc, "kernel": ctx.kernel,
            "mem_total": ctx.mem_total,
        },
        "git_commit": ctx.git_commit,
        "command": ctx.command,
        "mode": ctx.mode,
        "results": rows.iter().map(|r| json!({
            "metric": r.metric, "measured": r.measured, "target": r.target,
            "met": if judged { json!(r.met) } else { Value::Null },
        })).collect::<Vec<_>>(),
        "notes": notes,
        "details": details,
    });
    let json_path = dir.join("report.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    Ok(())
}
