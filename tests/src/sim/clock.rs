//! Virtual time: the simulation's real time is nanoseconds since the start of a run; every
//! process reads it through its own monotonic clock (a constant rate error) and, for the
//! sidecars, a wall clock (an offset that faults can step).

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

/// Real (virtual) time since the start of a run, in nanoseconds.
pub type Nanos = u64;

pub const MS: Nanos = 1_000_000;
pub const SEC: Nanos = 1_000_000_000;

/// Largest monotonic rate error of any process, in parts per million (±1 %). Real quartz
/// clocks are within ±500 ppm; a larger bound stresses the safety margin
/// `lease_duration − renew_deadline` (1 s here), which must absorb it: the leader's 2 s renew
/// deadline lasts at most 2 s / 0.99 ≈ 2.02 s of real time, a standby's 3 s wait at least
/// 3 s / 1.01 ≈ 2.97 s.
pub const MAX_DRIFT_PPM: i64 = 10_000;

/// The wall clock of run start: 2030-03-17T17:46:40Z (any fixed instant will do).
const EPOCH_NS: i128 = 1_900_000_000 * 1_000_000_000;

/// One process's monotonic clock: `local = real × (1 + ppm / 10⁶)`, starting at 0 with the run
/// and never stopping (a SIGSTOPped process's clock keeps running; a restarted process on the
/// same node keeps the node's clock).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub ppm: i64,
}

impl Clock {
    fn rate(self) -> i128 {
        1_000_000 + i128::from(self.ppm)
    }

    /// The clock's reading at real time `real`.
    pub fn local(self, real: Nanos) -> Nanos {
        u64::try_from(i128::from(real) * self.rate() / 1_000_000).unwrap_or(u64::MAX)
    }

    /// The first real time at which the clock reads at least `local`.
    pub fn real_at(self, local: Nanos) -> Nanos {
        let r = self.rate();
        u64::try_from((i128::from(local) * 1_000_000 + r - 1) / r).unwrap_or(u64::MAX)
    }

    /// The clock's reading as a tokio `Instant` (`base` is the run's one real `Instant`).
    pub fn instant(self, base: Instant, real: Nanos) -> Instant {
        base + Duration::from_nanos(self.local(real))
    }

    /// The real time at which the clock reaches `at`.
    pub fn real_of(self, base: Instant, at: Instant) -> Nanos {
        let local = at.saturating_duration_since(base).as_nanos();
        self.real_at(u64::try_from(local).unwrap_or(u64::MAX))
    }
}

/// Wall-clock reading at `real` for a process whose wall clock is off by `offset_ns`.
pub fn wall(real: Nanos, offset_ns: i64) -> Timestamp {
    Timestamp::from_nanosecond(EPOCH_NS + i128::from(real) + i128::from(offset_ns))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `12.345678` seconds, for traces.
pub fn secs(t: Nanos) -> String {
    format!("{:>7}.{:06}", t / SEC, (t % SEC) / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_at_inverts_local() {
        for ppm in [-MAX_DRIFT_PPM, -1, 0, 7, MAX_DRIFT_PPM] {
            let c = Clock { ppm };
            for local in [0, 1, 999, SEC, 3 * SEC + 17, 60 * SEC + 123_457] {
                let r = c.real_at(local);
                assert!(c.local(r) >= local, "ppm {ppm} local {local}");
                assert!(r == 0 || c.local(r - 1) < local, "ppm {ppm} local {local}");
            }
        }
    }
}
