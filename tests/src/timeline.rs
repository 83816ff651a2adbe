//! A failover timeline of two or more pods, for the local demo and the bench.
//!
//! Each pod's controller logs *active windows*: the periods during which it was allowed to do
//! work, tagged with the leadership term that allowed it. The whole point of the project is that
//! two such windows in different pods never intersect, so the picture must make an intersection
//! impossible to miss: [`Timeline::overlaps`] finds them, and both renderings show them.
//!
//! Two renderings: [`Timeline::to_text`], a short table for the terminal, and
//! [`Timeline::to_svg`], a self-contained SVG document (no external fonts, CSS or scripts) that
//! can be opened in a browser or embedded in a report as it is.
//!
//! Times are milliseconds relative to the start of the demo, as `f64`.

use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;

use crate::controller::ActiveWindow;

/// Everything one picture shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timeline {
    pub title: String,
    /// One lane per pod, top to bottom in this order.
    pub lanes: Vec<Lane>,
    /// Events worth pointing at (a kill, a partition), drawn as vertical lines.
    pub marks: Vec<Mark>,
    /// Measured intervals (failover time), drawn as brackets below the lanes.
    pub spans: Vec<Span>,
}

/// One pod: its name and the windows during which its controller was active.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lane {
    pub name: String,
    pub windows: Vec<Window>,
}

/// A period during which a controller was allowed to do work.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Window {
    pub start_ms: f64,
    /// `None`: still active when the timeline ends; it then extends to [`Timeline::end_ms`].
    pub end_ms: Option<f64>,
    /// The leadership term that allowed the work, when the controller knows it.
    pub term: Option<i32>,
}

/// A point in time worth labelling.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mark {
    pub at_ms: f64,
    pub label: String,
    /// Index into [`Timeline::lanes`]; `None` (or an index out of range) applies to all lanes.
    pub lane: Option<usize>,
}

/// A measured interval drawn as a bracket with its duration, e.g. "failover 14.71 s".
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Span {
    pub from_ms: f64,
    pub to_ms: f64,
    pub label: String,
}

/// Milliseconds from `t0` to `at` (negative if earlier), with sub-millisecond precision: the
/// time axis of a timeline built from log lines and audit records of this host's wall clock.
pub fn ms_since(t0: Timestamp, at: Timestamp) -> f64 {
    (at.as_nanosecond() - t0.as_nanosecond()) as f64 / 1e6
}

impl Lane {
    /// The lane of one controller's logged active windows
    /// ([`crate::controller::active_windows`]), times relative to `t0`. A term that does not fit
    /// an `i32` (the Lease API's type) is shown as unknown rather than wrapped.
    pub fn from_active_windows(name: &str, windows: &[ActiveWindow], t0: Timestamp) -> Self {
        Lane {
            name: name.to_owned(),
            windows: windows
                .iter()
                .map(|w| Window {
                    start_ms: ms_since(t0, w.start),
                    end_ms: w.end.map(|e| ms_since(t0, e)),
                    term: w.term.and_then(|t| i32::try_from(t).ok()),
                })
                .collect(),
        }
    }
}

impl Timeline {
    /// The latest time mentioned anywhere, at least 1.0: the right edge of the picture, and the
    /// end of the windows that are still open. Non-finite times are ignored so that one bad
    /// sample cannot make the whole picture empty.
    pub fn end_ms(&self) -> f64 {
        self.times().fold(1.0, f64::max)
    }

    /// The left edge of the picture: 0 (the demo start), or earlier if something happened
    /// before it, so that nothing is drawn outside the picture.
    fn start_ms(&self) -> f64 {
        self.times().fold(0.0, f64::min)
    }

    /// Every finite time mentioned anywhere.
    fn times(&self) -> impl Iterator<Item = f64> + '_ {
        let windows = self
            .lanes
            .iter()
            .flat_map(|lane| &lane.windows)
            .flat_map(|w| [Some(w.start_ms), w.end_ms])
            .flatten();
        let marks = self.marks.iter().map(|m| m.at_ms);
        let spans = self.spans.iter().flat_map(|s| [s.from_ms, s.to_ms]);
        windows.chain(marks).chain(spans).filter(|t| t.is_finite())
    }

    /// Every pair of windows in *different* lanes whose intervals intersect, as
    /// `(lane_a, lane_b, overlap_start, overlap_end)` with `lane_a < lane_b`. Open windows
    /// extend to [`Timeline::end_ms`]. Windows that only touch (one ends exactly when the next
    /// starts) do not overlap: that is a clean handover. Windows of the same lane are not
    /// compared, because one controller overlapping itself is not a split brain.
    pub fn overlaps(&self) -> Vec<(usize, usize, f64, f64)> {
        self.overlaps_detailed()
            .into_iter()
            .map(|(a, b, from, to, _)| (a, b, from, to))
            .collect()
    }

    /// [`Timeline::overlaps`], each also telling whether both windows are still open, in which
    /// case the overlap continues past the end and the picture draws it to its right edge.
    fn overlaps_detailed(&self) -> Vec<(usize, usize, f64, f64, bool)> {
        let end = self.end_ms();
        let mut found = Vec::new();
        for (a, lane_a) in self.lanes.iter().enumerate() {
            for (b, lane_b) in self.lanes.iter().enumerate().skip(a + 1) {
                for wa in &lane_a.windows {
                    for wb in &lane_b.windows {
                        let from = wa.start_ms.max(wb.start_ms);
                        let to = wa.end_ms.unwrap_or(end).min(wb.end_ms.unwrap_or(end));
                        // `<` is false for NaN too, so a window with a bad time is skipped.
                        if from < to {
                            let open = wa.end_ms.is_none() && wb.end_ms.is_none();
                            found.push((a, b, from, to, open));
                        }
                    }
                }
            }
        }
        found
    }

    /// A compact table for the terminal: one line per mark, window start and window end,
    /// sorted by time, then one line per span with its duration. At equal times a mark comes
    /// first (it is usually the cause), then window ends, then starts, so that a clean
    /// handover reads "stopped" before "active".
    pub fn to_text(&self) -> String {
        // (time, order at equal times, lane column, what happened)
        let mut events: Vec<(f64, u8, &str, String)> = Vec::new();
        for mark in &self.marks {
            let lane = mark
                .lane
                .and_then(|i| self.lanes.get(i))
                .map_or("", |l| l.name.as_str());
            events.push((mark.at_ms, 0, lane, mark.label.clone()));
        }
        for lane in &self.lanes {
            for w in &lane.windows {
                let what = match w.term {
                    Some(term) => format!("active (term {term})"),
                    None => "active".to_string(),
                };
                events.push((w.start_ms, 2, lane.name.as_str(), what));
                if let Some(end) = w.end_ms {
                    events.push((end, 1, lane.name.as_str(), "stopped".to_string()));
                }
            }
        }
        // Stable, so equal events keep the order in which they were logged.
        events.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));

        let width = events
            .iter()
            .map(|e| e.2.chars().count())
            .max()
            .unwrap_or(0)
            .min(24);
        let mut out = String::new();
        for (at, _, lane, what) in &events {
            let time = format!("{:+.3}", at / 1000.0);
            let line = if lane.is_empty() {
                format!("  {time:>7} s  {what}")
            } else {
                format!("  {time:>7} s  {:<width$}  {what}", clip(lane, width))
            };
            let _ = writeln!(out, "{}", clip(line.trim_end(), MAX_LINE));
        }
        for span in &self.spans {
            let secs = (span.to_ms - span.from_ms) / 1000.0;
            let line = format!("  {}: {secs:.2} s", span.label);
            let _ = writeln!(out, "{}", clip(&line, MAX_LINE));
        }
        out
    }

    /// A self-contained SVG 1.1 document: title, one lane per pod, windows coloured by term,
    /// marks as dashed lines with staggered labels, spans as brackets with their duration, a
    /// time axis in seconds, and any overlap as a hatched red band labelled "OVERLAP".
    ///
    /// Windows are `<rect class="window" data-window="LANE-INDEX">`, so that tests and scripts
    /// can find them without parsing the geometry.
    pub fn to_svg(&self) -> String {
        let t0 = self.start_ms();
        // Open windows are drawn a little past the end, so that a window that opened at the
        // very end (the new leader) is visible, and visibly still open.
        let any_open = self
            .lanes
            .iter()
            .flat_map(|lane| &lane.windows)
            .any(|w| w.end_ms.is_none());
        let end = self.end_ms();
        let t1 = if any_open {
            end + (end - t0) * 0.04
        } else {
            end
        };
        let x_of = |t: f64| {
            let t = if t.is_finite() { t.clamp(t0, t1) } else { t0 };
            PLOT_X0 + (t - t0) / (t1 - t0) * (PLOT_X1 - PLOT_X0)
        };

        // Mark labels go above the lanes, in as many rows as it takes for none to overlap.
        let mut order: Vec<usize> = (0..self.marks.len()).collect();
        order.sort_by(|&a, &b| self.marks[a].at_ms.total_cmp(&self.marks[b].at_ms));
        let mut row_ends: Vec<f64> = Vec::new();
        let mut placed = Vec::new(); // (mark index, row, label x)
        for i in order {
            let w = text_width(&self.marks[i].label, MARK_FONT);
            let lx = (x_of(self.marks[i].at_ms) + 3.0)
                .min(WIDTH - 4.0 - w)
                .max(4.0);
            let row = match row_ends.iter().position(|&end| end + 8.0 <= lx) {
                Some(row) => row,
                None => {
                    row_ends.push(f64::NEG_INFINITY);
                    row_ends.len() - 1
                }
            };
            row_ends[row] = lx + w;
            placed.push((i, row, lx));
        }

        let lanes_top = MARKS_TOP + row_ends.len() as f64 * MARK_ROW + 6.0;
        let lane_top = |i: usize| lanes_top + i as f64 * (LANE_H + LANE_GAP);
        let lanes_bottom = if self.lanes.is_empty() {
            lanes_top
        } else {
            lane_top(self.lanes.len() - 1) + LANE_H
        };
        let axis_y = lanes_bottom + 8.0;
        let spans_top = axis_y + 30.0;
        let height = spans_top + self.spans.len() as f64 * SPAN_ROW + 8.0;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#,
            w = num(WIDTH),
            h = num(height),
        );
        let _ = writeln!(s, "<title>{}</title>", esc(&self.title));
        let overlaps = self.overlaps_detailed();
        if !overlaps.is_empty() {
            s.push_str(concat!(
                r#"<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">"#,
                r##"<line x1="0" y1="0" x2="0" y2="6" stroke="#b00000" stroke-width="3"/></pattern></defs>"##,
                "\n"
            ));
        }
        let _ = writeln!(
            s,
            r#"<rect class="background" x="0" y="0" width="{}" height="{}" fill="white"/>"#,
            num(WIDTH),
            num(height)
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" font-size="16" font-weight="bold">{}</text>"#,
            num(PLOT_X0 / 4.0),
            esc(&self.title)
        );

        // Lanes and their windows.
        for (i, lane) in self.lanes.iter().enumerate() {
            let y = lane_top(i);
            let _ = writeln!(
                s,
                r##"<rect class="lane" x="{}" y="{}" width="{}" height="{}" fill="#f2f2f2"/>"##,
                num(PLOT_X0),
                num(y),
                num(PLOT_X1 - PLOT_X0),
                num(LANE_H)
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                num(PLOT_X0 - 8.0),
                num(y + LANE_H / 2.0 + 4.0),
                esc(&clip(&lane.name, 18))
            );
            for w in &lane.windows {
                let x0 = x_of(w.start_ms);
                let x1 = x_of(w.end_ms.unwrap_or(t1)).max(x0 + 1.0);
                let term = w.term.map_or(String::new(), |t| format!(" term {t}"));
                let until = w
                    .end_ms
                    .map_or("end".to_string(), |e| format!("{} s", num(e / 1000.0)));
                let _ = writeln!(
                    s,
                    r##"<rect class="window" data-window="{i}" x="{}" y="{}" width="{}" height="{}" fill="{}" stroke="#333" stroke-width="0.5"><title>{}{}: {} s to {}</title></rect>"##,
                    num(x0),
                    num(y + 4.0),
                    num(x1 - x0),
                    num(LANE_H - 8.0),
                    term_colour(w.term),
                    esc(&lane.name),
                    term,
                    num(w.start_ms / 1000.0),
                    until
                );
                if w.end_ms.is_none() {
                    // Still active at the end: an arrow says the window did not close.
                    let _ = writeln!(
                        s,
                        r##"<path d="M{} {} l6 {} l-6 {} z" fill="#333"/>"##,
                        num(x1),
                        num(y + 8.0),
                        num(LANE_H / 2.0 - 8.0),
                        num(LANE_H / 2.0 - 8.0)
                    );
                }
                if let Some(t) = w.term {
                    let label = format!("term {t}");
                    if x1 - x0 >= text_width(&label, 12.0) + 6.0 {
                        let _ = writeln!(
                            s,
                            r#"<text x="{}" y="{}" text-anchor="middle">{label}</text>"#,
                            num((x0 + x1) / 2.0),
                            num(y + LANE_H / 2.0 + 4.0)
                        );
                    }
                }
            }
        }

        // Overlaps, on top of the windows so that nothing hides them.
        for &(a, b, from, to, open) in &overlaps {
            let x0 = x_of(from);
            let x1 = x_of(if open { t1 } else { to }).max(x0 + 2.0);
            let y0 = lane_top(a);
            let y1 = lane_top(b) + LANE_H;
            for fill in [
                r##"fill="#e00000" fill-opacity="0.35""##,
                r#"fill="url(#hatch)""#,
            ] {
                let _ = writeln!(
                    s,
                    r##"<rect class="overlap" x="{}" y="{}" width="{}" height="{}" {fill} stroke="#e00000"/>"##,
                    num(x0),
                    num(y0),
                    num(x1 - x0),
                    num(y1 - y0)
                );
            }
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" text-anchor="middle" font-weight="bold" fill="#b00000" stroke="white" stroke-width="3" paint-order="stroke">OVERLAP</text>"##,
                num((x0 + x1) / 2.0),
                num((y0 + y1) / 2.0 + 4.0)
            );
        }

        // Marks: a dashed line from the label down through the lane(s) it applies to.
        for &(i, row, lx) in &placed {
            let mark = &self.marks[i];
            let x = x_of(mark.at_ms);
            let baseline = MARKS_TOP + row as f64 * MARK_ROW + MARK_FONT;
            let bottom = match mark.lane {
                Some(l) if l < self.lanes.len() => lane_top(l) + LANE_H,
                _ => lanes_bottom,
            };
            let _ = writeln!(
                s,
                r##"<line class="mark" x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#444" stroke-dasharray="4 3"/>"##,
                num(baseline + 3.0),
                num(bottom),
                x = num(x)
            );
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" font-size="{}" fill="#444">{}</text>"##,
                num(lx),
                num(baseline),
                num(MARK_FONT),
                esc(&mark.label)
            );
        }

        // Time axis, labelled in seconds.
        let _ = writeln!(
            s,
            r##"<line class="axis" x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#333"/>"##,
            num(PLOT_X0),
            num(PLOT_X1),
            y = num(axis_y)
        );
        let step = nice_step(t1 - t0);
        for t in ticks(t0, t1, step) {
            let x = num(x_of(t));
            let _ = writeln!(
                s,
                r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#333"/>"##,
                num(axis_y),
                num(axis_y + 5.0)
            );
            let _ = writeln!(
                s,
                r#"<text class="tick" x="{x}" y="{}" text-anchor="middle" font-size="11">{}</text>"#,
                num(axis_y + 18.0),
                tick_label(t, step)
            );
        }

        // Spans, one row each below the axis.
        for (r, span) in self.spans.iter().enumerate() {
            let (a, b) = (x_of(span.from_ms), x_of(span.to_ms));
            let (x0, x1) = (a.min(b), a.max(b));
            let y = spans_top + r as f64 * SPAN_ROW;
            let _ = writeln!(
                s,
                r##"<path class="span" d="M{} {} V{} H{} V{}" fill="none" stroke="#333" stroke-width="1.5"/>"##,
                num(x0),
                num(y),
                num(y + 6.0),
                num(x1),
                num(y)
            );
            let label = format!(
                "{} {} s",
                span.label,
                num2((span.to_ms - span.from_ms) / 1000.0)
            );
            let half = text_width(&label, 12.0) / 2.0;
            let cx = ((x0 + x1) / 2.0).clamp(half + 4.0, (WIDTH - half - 4.0).max(half + 4.0));
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                num(cx),
                num(y + 20.0),
                esc(&label)
            );
        }

        s.push_str("</svg>\n");
        s
    }
}

/// Longest line of [`Timeline::to_text`], in characters, so a table fits a terminal.
const MAX_LINE: usize = 99;

// SVG layout, in pixels. The plot area leaves room on the left for the lane names.
const WIDTH: f64 = 900.0;
const PLOT_X0: f64 = 120.0;
const PLOT_X1: f64 = 870.0;
const MARKS_TOP: f64 = 36.0;
const MARK_ROW: f64 = 14.0;
const MARK_FONT: f64 = 11.0;
const LANE_H: f64 = 32.0;
const LANE_GAP: f64 = 10.0;
const SPAN_ROW: f64 = 30.0;

/// Light fills with dark text readable on all of them; none is red, which means overlap.
const PALETTE: [&str; 6] = [
    "#8fb3de", "#9fd39b", "#c3b1e1", "#f2cf80", "#90d5e0", "#d4b59e",
];

/// Colour of a term: successive terms get different colours, so a new leader stands out.
fn term_colour(term: Option<i32>) -> &'static str {
    match term {
        Some(t) => PALETTE[t.rem_euclid(PALETTE.len() as i32) as usize],
        None => "#bdbdbd",
    }
}

/// Rough width of `text` at `font_size` in a sans-serif font; enough to decide whether a label
/// fits, without a font engine.
fn text_width(text: &str, font_size: f64) -> f64 {
    text.chars().count() as f64 * font_size * 0.6
}

/// At most `max` characters of `s`, ending in "..." when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

/// `s` as XML character data or attribute value. Control characters that XML 1.0 forbids are
/// replaced, so a stray byte in a pod name cannot make the whole document unreadable.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A number with at most `decimals` decimals and no trailing zeros; keeps the SVG small and
/// readable. Non-finite numbers become 0 so the document stays valid.
fn fixed(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return "0".to_string();
    }
    let s = format!("{x:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// A coordinate: one decimal is below what a screen can show.
fn num(x: f64) -> String {
    fixed(x, 1)
}

/// A duration in seconds, as the bench reports it.
fn num2(x: f64) -> String {
    format!("{:.2}", if x.is_finite() { x } else { 0.0 })
}

/// The tick step for a time range of `span_ms`: the smallest of 1, 2 or 5 × 10^k ms that gives
/// at most 12 ticks. The next smaller step gave 13 or more, so this one gives at least 5 when
/// the axis starts on a tick (it starts at 0 in practice).
fn nice_step(span_ms: f64) -> f64 {
    let span = if span_ms.is_finite() && span_ms > 0.0 {
        span_ms
    } else {
        1.0
    };
    let mut k = span.log10().floor() as i32 - 2;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let step = m * 10f64.powi(k);
            if (span / step).floor() + 1.0 <= 12.0 {
                return step;
            }
        }
        k += 1;
    }
}

/// The multiples of `step` in `[t0, t1]`, computed by multiplication so that they do not drift.
fn ticks(t0: f64, t1: f64, step: f64) -> Vec<f64> {
    let first = (t0 / step).ceil() as i64;
    let last = (t1 / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step + 0.0).collect()
}

/// A tick label in seconds with just the decimals the step needs (at most 2); for steps under
/// 10 ms that is not enough, so those are labelled in milliseconds.
fn tick_label(t_ms: f64, step_ms: f64) -> String {
    if step_ms >= 10.0 {
        let decimals = if step_ms >= 1000.0 {
            0
        } else if step_ms >= 100.0 {
            1
        } else {
            2
        };
        format!("{} s", fixed(t_ms / 1000.0, decimals))
    } else {
        format!("{} ms", fixed(t_ms, 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start_ms: f64, end_ms: Option<f64>, term: i32) -> Window {
        Window {
            start_ms,
            end_ms,
            term: Some(term),
        }
    }

    /// A clean failover: pod-a leads, is killed at 14 s, pod-b takes over at 28.71 s.
    fn failover() -> Timeline {
        Timeline {
            title: "failover demo".to_string(),
            lanes: vec![
                Lane {
                    name: "pod-a".to_string(),
                    windows: vec![window(1_000.0, Some(14_000.0), 1)],
                },
                Lane {
                    name: "pod-b".to_string(),
                    windows: vec![window(28_710.0, None, 2)],
                },
            ],
            marks: vec![
                Mark {
                    at_ms: 14_000.0,
                    label: "kill -9 pod-a sidecar".to_string(),
                    lane: Some(0),
                },
                Mark {
                    at_ms: 14_100.0,
                    label: "close by".to_string(),
                    lane: None,
                },
            ],
            spans: vec![Span {
                from_ms: 14_000.0,
                to_ms: 28_710.0,
                label: "failover".to_string(),
            }],
        }
    }

    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    #[test]
    fn end_ms_is_the_latest_time_anywhere() {
        let mut t = failover();
        assert_eq!(t.end_ms(), 28_710.0);
        t.marks.push(Mark {
            at_ms: 40_000.0,
            label: "end".to_string(),
            lane: None,
        });
        assert_eq!(t.end_ms(), 40_000.0);
        t.spans.push(Span {
            from_ms: 0.0,
            to_ms: 41_000.0,
            label: "all".to_string(),
        });
        assert_eq!(t.end_ms(), 41_000.0);
        t.lanes[0].windows.push(window(42_000.0, Some(43_000.0), 3));
        assert_eq!(t.end_ms(), 43_000.0);
        t.lanes[0]
            .windows
            .push(window(f64::NAN, Some(f64::INFINITY), 3));
        assert_eq!(t.end_ms(), 43_000.0, "non-finite times are ignored");
    }

    #[test]
    fn lanes_come_from_logged_windows() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let logged = [
            ActiveWindow {
                term: Some(1),
                start: at("2026-01-01T00:00:01.5Z"),
                end: Some(at("2026-01-01T00:00:04Z")),
            },
            ActiveWindow {
                term: Some(i64::from(i32::MAX) + 1),
                start: at("2026-01-01T00:00:09.0005Z"),
                end: None,
            },
        ];
        let lane = Lane::from_active_windows("pod-a", &logged, t0);
        assert_eq!(lane.name, "pod-a");
        assert_eq!(
            lane.windows,
            vec![
                window(1_500.0, Some(4_000.0), 1),
                Window {
                    start_ms: 9_000.5,
                    end_ms: None,
                    term: None,
                }
            ]
        );
        assert_eq!(ms_since(at("2026-01-01T00:00:02Z"), t0), -2_000.0);
    }

    #[test]
    fn end_ms_is_at_least_one() {
        let empty = Timeline {
            title: String::new(),
            lanes: vec![],
            marks: vec![],
            spans: vec![],
        };
        assert_eq!(empty.end_ms(), 1.0);
        assert!(empty.overlaps().is_empty());
    }

    #[test]
    fn overlaps_finds_intersections_across_lanes_only() {
        let mut t = failover();
        assert!(t.overlaps().is_empty(), "clean failover");

        // Same lane overlapping itself is not a split brain.
        t.lanes[0].windows.push(window(2_000.0, Some(3_000.0), 1));
        assert!(t.overlaps().is_empty());

        // Touching: pod-c starts exactly when pod-a stopped.
        t.lanes.push(Lane {
            name: "pod-c".to_string(),
            windows: vec![window(14_000.0, Some(20_000.0), 2)],
        });
        assert!(t.overlaps().is_empty(), "touching is a handover");

        // pod-c runs into pod-b's open window, which extends to end_ms.
        t.lanes[2].windows.push(window(28_000.0, Some(30_000.0), 2));
        assert_eq!(t.overlaps(), vec![(1, 2, 28_710.0, 30_000.0)]);

        // A window of pod-a intersecting pod-c's first window.
        t.lanes[0].windows.push(window(19_000.0, Some(21_000.0), 3));
        assert_eq!(
            t.overlaps(),
            vec![(0, 2, 19_000.0, 20_000.0), (1, 2, 28_710.0, 30_000.0)]
        );
    }

    #[test]
    fn overlaps_handles_two_open_windows() {
        let mut t = failover();
        t.lanes[0].windows.push(window(29_000.0, None, 3));
        t.marks.push(Mark {
            at_ms: 35_000.0,
            label: "end".to_string(),
            lane: None,
        });
        assert_eq!(t.overlaps(), vec![(0, 1, 29_000.0, 35_000.0)]);
    }

    #[test]
    fn text_is_sorted_by_time_with_spans_last() {
        let text = failover().to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "   +1.000 s  pod-a  active (term 1)",
                "  +14.000 s  pod-a  kill -9 pod-a sidecar",
                "  +14.000 s  pod-a  stopped",
                "  +14.100 s  close by",
                "  +28.710 s  pod-b  active (term 2)",
                "  failover: 14.71 s",
            ]
        );
    }

    #[test]
    fn text_lines_stay_short() {
        let mut t = failover();
        t.lanes[0].name = "p".repeat(200);
        t.marks[1].label = "m".repeat(200);
        t.spans[0].label = "s".repeat(200);
        for line in t.to_text().lines() {
            assert!(line.chars().count() < 100, "{line}");
        }
    }

    #[test]
    fn svg_is_one_document_with_one_rect_per_window() {
        let mut t = failover();
        t.lanes[0].windows.push(window(2_000.0, Some(3_000.0), 1));
        let svg = t.to_svg();
        let trimmed = svg.trim();
        assert!(trimmed.starts_with("<svg"), "{svg}");
        assert!(trimmed.ends_with("</svg>"), "{svg}");
        assert!(svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
        assert_eq!(count(&svg, "<svg"), 1);
        assert_eq!(count(&svg, r#"class="window""#), 3);
        assert_eq!(count(&svg, r#"data-window="0""#), 2);
        assert_eq!(count(&svg, r#"data-window="1""#), 1);
        assert_eq!(count(&svg, "<text"), count(&svg, "</text>"));
        assert!(svg.contains("failover demo"));
        assert!(svg.contains(">term 1</text>"), "wide window is labelled");
        assert!(svg.contains("failover 14.71 s"));
        assert!(svg.contains("kill -9 pod-a sidecar"));
        assert!(!svg.contains("OVERLAP"), "clean run shows no overlap");
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn window_opened_at_the_very_end_is_visible() {
        // pod-b's open window starts at end_ms(): it must still be drawn wide enough to see.
        let svg = failover().to_svg();
        let width: f64 = svg
            .lines()
            .find(|l| l.contains(r#"data-window="1""#))
            .and_then(|l| l.split(" width=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .and_then(|w| w.parse().ok())
            .expect("pod-b window with a width");
        assert!(width >= 20.0, "{width}");
    }

    #[test]
    fn svg_has_tick_labels_in_seconds() {
        let svg = failover().to_svg();
        // 0..28.71 s: step 5 s gives 0, 5, ..., 25.
        for label in ["0 s", "5 s", "10 s", "25 s"] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
        assert_eq!(count(&svg, r#"class="tick""#), 6);
    }

    #[test]
    fn nice_ticks_number_between_5_and_12() {
        for span in [
            1.0, 7.3, 99.0, 1_000.0, 4_999.0, 14_710.0, 28_710.0, 61_000.0, 1e6,
        ] {
            let step = nice_step(span);
            let mantissa = step / 10f64.powi(step.log10().floor() as i32);
            assert!(
                [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6),
                "{span}: {step}"
            );
            let n = ticks(0.0, span, step).len();
            assert!((5..=12).contains(&n), "{span}: step {step}, {n} ticks");
        }
    }

    #[test]
    fn svg_escapes_text() {
        let mut t = failover();
        t.title = "a \"quoted\" 'title'".to_string();
        t.lanes[0].name = "<pod&a>".to_string();
        let svg = t.to_svg();
        assert!(svg.contains("&lt;pod&amp;a&gt;"));
        assert!(!svg.contains("<pod"));
        assert!(svg.contains("a &quot;quoted&quot; &apos;title&apos;"));
    }

    #[test]
    fn svg_shows_overlap_only_when_there_is_one() {
        let mut t = failover();
        t.lanes[1].windows.push(window(13_000.0, Some(15_000.0), 2));
        assert_eq!(t.overlaps().len(), 1);
        let svg = t.to_svg();
        assert_eq!(count(&svg, ">OVERLAP</text>"), 1);
        assert!(svg.contains(r#"fill="url(#hatch)""#));
        assert!(svg.contains(r#"<pattern id="hatch""#));
        assert_eq!(count(&svg, "<text"), count(&svg, "</text>"));
    }

    #[test]
    fn mark_labels_that_would_collide_are_stacked() {
        let svg = failover().to_svg();
        // The two marks are 100 ms apart, far less than a label's width: two rows.
        let ys: Vec<&str> = svg
            .lines()
            .filter(|l| l.contains(r##"font-size="11" fill="#444""##))
            .filter_map(|l| l.split(" y=\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert_eq!(ys.len(), 2);
        assert_ne!(ys[0], ys[1]);
    }

    #[test]
    fn numbers_have_at_most_two_decimals() {
        assert_eq!(fixed(1.0, 2), "1");
        assert_eq!(fixed(1.5, 2), "1.5");
        assert_eq!(fixed(1.234, 2), "1.23");
        assert_eq!(fixed(-0.001, 2), "0");
        assert_eq!(fixed(f64::NAN, 2), "0");
        assert_eq!(fixed(120.0, 0), "120");
        assert_eq!(tick_label(2_500.0, 500.0), "2.5 s");
        assert_eq!(tick_label(4.0, 2.0), "4 ms");
    }
}
