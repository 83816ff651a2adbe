//! The checker: records when each controller acts, when each sidecar holds a tenure and every
//! new tenure's term, all in real (virtual) time, and judges the run against the invariants in
//! the module documentation of `sim`.

use std::fmt;

use super::clock::{Nanos, secs};

/// Intervals of real time during which something holds, maintained from samples: at each
/// sample the caller says until when it holds from now on (`None`: not now).
#[derive(Debug, Default)]
pub struct Track {
    closed: Vec<(Nanos, Nanos)>,
    /// Start and projected end of the interval in progress.
    open: Option<(Nanos, Nanos)>,
}

impl Track {
    /// Returns `Some(true)` when an interval opens and `Some(false)` when one closes at `t`.
    pub fn sample(&mut self, t: Nanos, until: Option<Nanos>) -> Option<bool> {
        let until = until.filter(|u| *u > t);
        if let Some((start, end)) = self.open {
            if end > t {
                match until {
                    Some(u) => self.open = Some((start, u)),
                    None => {
                        self.closed.push((start, t));
                        self.open = None;
                        return Some(false);
                    }
                }
                return None;
            }
            self.closed.push((start, end));
            self.open = None;
            if until.is_none() {
                // It lapsed on its own since the last sample.
                return Some(false);
            }
        }
        let u = until?;
        self.open = Some((t, u));
        Some(true)
    }

    pub fn holds_at(&self, t: Nanos) -> bool {
        self.open.is_some_and(|(s, e)| s <= t && t < e)
    }

    /// All intervals, the one in progress cut at `end`.
    pub fn intervals(&self, end: Nanos) -> Vec<(Nanos, Nanos)> {
        let mut v = self.closed.clone();
        if let Some((s, e)) = self.open {
            v.push((s, e.min(end)));
        }
        v.retain(|(s, e)| s < e);
        v
    }
}

/// Sorted, merged union of intervals.
fn union(mut v: Vec<(Nanos, Nanos)>) -> Vec<(Nanos, Nanos)> {
    v.sort_unstable();
    let mut out: Vec<(Nanos, Nanos)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// `a` minus `b` (both unions).
fn minus(a: &[(Nanos, Nanos)], b: &[(Nanos, Nanos)]) -> Vec<(Nanos, Nanos)> {
    let mut out = Vec::new();
    for &(s, e) in a {
        let mut cur = s;
        for &(bs, be) in b {
            if be <= cur || bs >= e {
                continue;
            }
            if bs > cur {
                out.push((cur, bs));
            }
            cur = cur.max(be);
        }
        if cur < e {
            out.push((cur, e));
        }
    }
    out
}

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Two controllers acted at overlapping real times (status writes count until they land).
    Overlap {
        a: usize,
        b: usize,
        from: Nanos,
        to: Nanos,
    },
    /// A new tenure's term did not exceed every earlier one.
    Term {
        node: usize,
        term: i32,
        at: Nanos,
        highest: i32,
    },
    /// After the faults stopped, no controller became active within the bound and stayed so.
    Liveness {
        faults_end: Nanos,
        by: Nanos,
        gap: (Nanos, Nanos),
    },
    /// After the faults stopped, a sidecar held a valid tenure while its controller was idle for
    /// longer than one grant and one poll interval.
    Stall { node: usize, from: Nanos, to: Nanos },
}

impl Violation {
    /// One word for the kind: `overlap`, `term`, `liveness`, `stall`.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::Overlap { .. } => "overlap",
            Violation::Term { .. } => "term",
            Violation::Liveness { .. } => "liveness",
            Violation::Stall { .. } => "stall",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Overlap { a, b, from, to } => write!(
                f,
                "overlap: controllers ct{a} and ct{b} both acting from {} s to {} s \
                 (active windows and status writes in flight)",
                secs(*from).trim(),
                secs(*to).trim()
            ),
            Violation::Term {
                node,
                term,
                at,
                highest,
            } => write!(
                f,
                "term: sc{node} started a tenure with term {term} at {} s, not above the \
                 highest earlier term {highest}",
                secs(*at).trim()
            ),
            Violation::Liveness {
                faults_end,
                by,
                gap,
            } => write!(
                f,
                "liveness: faults stopped at {} s, but no controller was active without a break \
                 from {} s to the end; no controller active from {} s to {} s",
                secs(*faults_end).trim(),
                secs(*by).trim(),
                secs(gap.0).trim(),
                secs(gap.1).trim()
            ),
            Violation::Stall { node, from, to } => write!(
                f,
                "stall: sc{node} held a valid tenure while ct{node} was not active from {} s to \
                 {} s ({:.3} s)",
                secs(*from).trim(),
                secs(*to).trim(),
                (to - from) as f64 / 1e9
            ),
        }
    }
}

/// What a passing run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub tenures: usize,
    /// From the end of faults to the start of the window that lasted to the end.
    pub recovery: Nanos,
}

/// The bounds the verdict applies.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Liveness is counted from here.
    pub faults_end: Nanos,
    pub end: Nanos,
    /// A controller must be active by `faults_end + liveness` and stay active.
    pub liveness: Nanos,
    /// Longest allowed tenure-without-active-controller after the faults.
    pub stall: Nanos,
}

#[derive(Debug, Default)]
pub struct Checker {
    /// Per controller: while its gate holds a grant valid on its own clock (alive).
    pub windows: Vec<Track>,
    /// Per controller: status writes, from send until they land.
    pub writes: Vec<Vec<(Nanos, Nanos)>>,
    /// Per sidecar: while its elector holds a valid tenure.
    pub tenures: Vec<Track>,
    /// Every new tenure: when, by whom, its term, and the resourceVersion of the write that
    /// started it.
    pub acquired: Vec<(Nanos, usize, i32, u64)>,
    /// The resourceVersions at which the operator deleted the Lease.
    pub deletions: Vec<u64>,
}

impl Checker {
    pub fn new(nodes: usize) -> Self {
        Self {
            windows: (0..nodes).map(|_| Track::default()).collect(),
            writes: vec![Vec::new(); nodes],
            tenures: (0..nodes).map(|_| Track::default()).collect(),
            acquired: Vec::new(),
            deletions: Vec::new(),
        }
    }

    pub fn verdict(&self, b: Bounds) -> Result<Stats, Violation> {
        let n = self.windows.len();
        // 1. Safety.
        let acting: Vec<Vec<(Nanos, Nanos)>> = (0..n)
            .map(|i| {
                let mut v = self.windows[i].intervals(b.end);
                v.extend(self.writes[i].iter().copied());
                union(v)
            })
            .collect();
        let mut first: Option<Violation> = None;
        for a in 0..n {
            for c in a + 1..n {
                if let Some((from, to)) = first_overlap(&acting[a], &acting[c]) {
                    let earlier = match &first {
                        Some(Violation::Overlap { from: f, .. }) => from < *f,
                        _ => true,
                    };
                    if earlier {
                        first = Some(Violation::Overlap { a, b: c, from, to });
                    }
                }
            }
        }
        if let Some(v) = first {
            return Err(v);
        }
        // 2. Terms grow. A deletion by the operator takes the record of the terms with it: the
        //    replacement continues from the highest term its creator saw (the fault suite's
        //    `lease-recreated` checks that), which a creator that missed the last tenures cannot
        //    know. So the count is judged between deletions.
        //    Tenures are taken in the order the server committed their writes.
        let mut by_commit = self.acquired.clone();
        by_commit.sort_by_key(|&(at, _, _, rv)| (rv, at));
        let mut highest: Option<i32> = None;
        let mut last_rv = 0;
        for (at, node, term, rv) in by_commit {
            if self.deletions.iter().any(|d| (last_rv..rv).contains(d)) {
                highest = None;
            }
            last_rv = rv;
            if let Some(h) = highest
                && term <= h
            {
                return Err(Violation::Term {
                    node,
                    term,
                    at,
                    highest: h,
                });
            }
            highest = Some(highest.map_or(term, |h| h.max(term)));
        }
        // 3a. No stall after the faults.
        for i in 0..n {
            let held: Vec<_> = union(self.tenures[i].intervals(b.end))
                .into_iter()
                .filter_map(|(s, e)| {
                    let (s, e) = (s.max(b.faults_end), e.min(b.end));
                    (s < e).then_some((s, e))
                })
                .collect();
            let idle = minus(&held, &union(self.windows[i].intervals(b.end)));
            if let Some(&(from, to)) = idle.iter().find(|(s, e)| e - s > b.stall) {
                return Err(Violation::Stall { node: i, from, to });
            }
        }
        // 3b. Active within the bound, and to the end.
        let by = b.faults_end + b.liveness;
        let any_active = union(
            (0..n)
                .flat_map(|i| self.windows[i].intervals(b.end))
                .collect(),
        );
        let covering = (0..n)
            .flat_map(|i| self.windows[i].intervals(b.end))
            .find(|&(s, e)| s <= by && e >= b.end);
        match covering {
            Some((start, _)) => Ok(Stats {
                tenures: self.acquired.len(),
                recovery: start.saturating_sub(b.faults_end),
            }),
            None => {
                let idle = minus(&[(b.faults_end, b.end)], &any_active);
                let gap = idle
                    .iter()
                    .copied()
                    .max_by_key(|(s, e)| e - s)
                    .unwrap_or((b.end, b.end));
                Err(Violation::Liveness {
                    faults_end: b.faults_end,
                    by,
                    gap,
                })
            }
        }
    }
}

/// The first overlap of two unions, if any.
fn first_overlap(a: &[(Nanos, Nanos)], b: &[(Nanos, Nanos)]) -> Option<(Nanos, Nanos)> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (s, e) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if s < e {
            return Some((s, e));
        }
        if a[i].1 <= b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_extend_close_and_reopen() {
        let mut t = Track::default();
        assert_eq!(t.sample(0, Some(10)), Some(true));
        assert_eq!(t.sample(5, Some(20)), None);
        assert_eq!(
            t.sample(25, Some(30)),
            Some(true),
            "lapsed at 20, new at 25"
        );
        assert_eq!(t.sample(26, None), Some(false));
        assert_eq!(t.intervals(100), vec![(0, 20), (25, 26)]);
    }

    #[test]
    fn overlaps_and_differences() {
        assert_eq!(
            first_overlap(&[(0, 5), (10, 12)], &[(5, 10), (11, 20)]),
            Some((11, 12))
        );
        assert_eq!(first_overlap(&[(0, 5)], &[(5, 10)]), None);
        assert_eq!(
            minus(&[(0, 10)], &[(2, 3), (5, 6)]),
            vec![(0, 2), (3, 5), (6, 10)]
        );
    }
}
