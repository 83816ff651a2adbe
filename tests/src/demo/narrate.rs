//! The demo's voice: numbered steps and notes, each with the time since the demo started.
//!
//! One clock for everything: the wall clock, because the controllers' log lines (which give the
//! failover and handover times) carry wall-clock timestamps of this same host, and the timeline
//! puts both on one axis.

use std::fmt::Display;

use jiff::Timestamp;

pub struct Narrator {
    /// The demo's start: time 0 of the printed elapsed times and of the timeline.
    pub t0: Timestamp,
}

impl Narrator {
    pub fn new() -> Self {
        Self {
            t0: Timestamp::now(),
        }
    }

    /// Milliseconds from the demo's start to `at` (negative if earlier).
    pub fn ms(&self, at: Timestamp) -> f64 {
        testkit::timeline::ms_since(self.t0, at)
    }

    /// `[  12.3 s] 4. text`
    pub fn step(&self, number: u32, text: impl Display) {
        say!("{} {number}. {text}", self.clock());
    }

    /// `[  12.3 s]    text`, a detail of the current step.
    pub fn note(&self, text: impl Display) {
        say!("{}    {text}", self.clock());
    }

    fn clock(&self) -> String {
        format!("[{:>6.1} s]", self.ms(Timestamp::now()) / 1000.0)
    }
}

/// `15.03 s`
pub fn secs(ms: f64) -> String {
    format!("{:.2} s", ms / 1000.0)
}
