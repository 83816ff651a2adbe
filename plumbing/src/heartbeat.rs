//! Liveness of a loop, for `/healthz`: the loop beats, the probe reads how long ago.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When a loop last went round, on the monotonic clock. Lock-free, so the probe never waits on
/// the loop it judges.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    pub fn beat(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.origin).as_millis();
        self.last_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Time since the loop last went round.
    pub fn age(&self, now: Instant) -> Duration {
        let last = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn age_counts_from_the_last_beat() {
        let heartbeat = Heartbeat::default();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(heartbeat.age(Instant::now()), Duration::from_secs(3));
        heartbeat.beat(Instant::now());
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(heartbeat.age(Instant::now()), Duration::from_millis(250));
    }
}
