//! The demo's result: the timeline of both pods' active windows with the events that caused
//! them, the measured failover and handover, and the files written for it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use jiff::Timestamp;
use serde::Serialize;
use testkit::controller::ActiveWindow;
use testkit::timeline::{Lane, Timeline};

use crate::narrate::Narrator;

/// One pod's lane as its controller logged it.
pub struct PodWindows {
    pub pod: String,
    pub windows: Vec<ActiveWindow>,
}

/// A lane of the picture, times relative to the demo's start.
pub fn lane(narrator: &Narrator, pod: &PodWindows) -> Lane {
    Lane::from_active_windows(&pod.pod, &pod.windows, narrator.t0)
}

/// An intersection of two pods' windows, for the JSON.
#[derive(Debug, Serialize)]
pub struct Overlap {
    pub lanes: [String; 2],
    pub from_ms: f64,
    pub to_ms: f64,
}

pub fn overlaps(timeline: &Timeline) -> Vec<Overlap> {
    timeline
        .overlaps()
        .into_iter()
        .map(|(a, b, from_ms, to_ms)| Overlap {
            lanes: [
                timeline.lanes[a].name.clone(),
                timeline.lanes[b].name.clone(),
            ],
            from_ms,
            to_ms,
        })
        .collect()
}

/// `timeline.json`: the timeline and the figures the summary prints.
#[derive(Serialize)]
pub struct Figures<'a> {
    #[serde(flatten)]
    pub timeline: &'a Timeline,
    /// When the demo started (time 0 of every `_ms` field).
    pub started_at: Timestamp,
    pub lease_duration_ms: f64,
    /// `kill -9` of the leader's sidecar → the standby's controller logged "active window
    /// started".
    pub failover_ms: f64,
    /// SIGTERM of the leading pod → the standby's controller logged "active window started".
    pub handover_ms: f64,
    /// Intersections of active windows of different pods; empty is the only good answer.
    pub overlap: Vec<Overlap>,
    /// Exit codes of the SIGTERMed pod's processes (`null`: killed by a signal).
    pub exit_codes: ExitCodes,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ExitCodes {
    pub controller: Option<i32>,
    pub sidecar: Option<i32>,
}

/// Writes the SVG to `svg` and `timeline.json` next to it; returns the JSON's path.
pub fn write(svg: &Path, figures: &Figures<'_>) -> anyhow::Result<PathBuf> {
    let json = svg.with_file_name("timeline.json");
    anyhow::ensure!(
        json != svg,
        "--out {} would be overwritten by the JSON; choose another name",
        svg.display()
    );
    if let Some(dir) = svg.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    std::fs::write(svg, figures.timeline.to_svg())
        .with_context(|| format!("cannot write {}", svg.display()))?;
    let mut text = serde_json::to_string_pretty(figures).context("cannot encode the figures")?;
    text.push('\n');
    std::fs::write(&json, text).with_context(|| format!("cannot write {}", json.display()))?;
    Ok(json)
}
